/* Unit tests of the frame-selection arithmetic: fq_frames_fps_targets and fq_frames_fit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>

#include <cmocka.h>

#include "fq_frames.h"

#define MAX_TARGETS 16

typedef struct targets_case {
    double fps;
    int64_t duration_ms;
    size_t count;
    int64_t first[MAX_TARGETS]; /* the first min(count, MAX_TARGETS) values */
} targets_case_t;

static const targets_case_t targets_cases[] = {
    /* duration 0 or negative: nothing */
    {1, 0, 0, {0}},
    {1, -5, 0, {0}},
    {0, 5000, 0, {0}},
    /* 1 fps: exact multiple stops before the end, fractional includes the last second */
    {1, 1, 1, {0}},
    {1, 1000, 1, {0}},
    {1, 1001, 2, {0, 1000}},
    {1, 3000, 3, {0, 1000, 2000}},
    {1, 3500, 4, {0, 1000, 2000, 3000}},
    /* 0.5 fps: one every 2 s */
    {0.5, 4000, 2, {0, 2000}},
    {0.5, 4001, 3, {0, 2000, 4000}},
    {0.5, 1999, 1, {0}},
    /* 2 fps */
    {2, 1000, 2, {0, 500}},
    {2, 2250, 5, {0, 500, 1000, 1500, 2000}},
    /* 29.97 fps (30000/1001): values floored to the millisecond */
    {29.97, 100, 3, {0, 33, 66}},
    {29.97, 1000, 30, {0, 33, 66, 100, 133, 166, 200, 233, 266, 300, 333, 367, 400, 433, 467, 500}},
    /* 2997 frames at 29.97 fps end exactly at 100 s: the target at 100000 ms is excluded */
    {29.97, 100000, 2997, {0, 33, 66, 100}},
};

static void test_fps_targets(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(targets_cases) / sizeof(targets_cases[0]); i++) {
        const targets_case_t *c = &targets_cases[i];
        int64_t out[MAX_TARGETS];
        for (size_t k = 0; k < MAX_TARGETS; k++) {
            out[k] = -1;
        }
        size_t n = fq_frames_fps_targets(c->fps, c->duration_ms, out, MAX_TARGETS);
        if (n != c->count) {
            fail_msg("case %zu (fps %g, %lld ms): %zu targets, want %zu", i, c->fps,
                     (long long)c->duration_ms, n, c->count);
        }
        size_t check = c->count < MAX_TARGETS ? c->count : MAX_TARGETS;
        if (c->fps == 29.97 && c->duration_ms == 100000) {
            check = 4;
        }
        for (size_t k = 0; k < check; k++) {
            if (out[k] != c->first[k]) {
                fail_msg("case %zu (fps %g, %lld ms): target %zu is %lld, want %lld", i, c->fps,
                         (long long)c->duration_ms, k, (long long)out[k], (long long)c->first[k]);
            }
        }
        /* nothing written past the cap or past the count */
        for (size_t k = c->count; k < MAX_TARGETS; k++) {
            assert_int_equal(out[k], -1);
        }
    }
}

static void test_fps_targets_cap(void **state)
{
    (void)state;
    int64_t out[3] = {-1, -1, -1};
    /* 10 targets, room for 2: returns 10, writes 2 */
    assert_int_equal(fq_frames_fps_targets(1, 10000, out, 2), 10);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 1000);
    assert_int_equal(out[2], -1);
    /* counting only */
    assert_int_equal(fq_frames_fps_targets(1, 10000, NULL, 0), 10);
    /* the last target is the last k with k*1000/fps < duration, for many durations */
    for (int64_t d = 1; d < 5000; d += 37) {
        size_t n = fq_frames_fps_targets(3, d, NULL, 0);
        assert_true(n >= 1);
        assert_true((double)(n - 1) * 1000.0 / 3 < (double)d);
        assert_true((double)n * 1000.0 / 3 >= (double)d);
    }
}

typedef struct fit_case {
    const char *name;
    int src_w, src_h, max_dim;
    int want_w, want_h;
} fit_case_t;

static const fit_case_t fit_cases[] = {
    {"landscape 720p", 1280, 720, 512, 512, 288},
    {"landscape 1080p", 1920, 1080, 512, 512, 288},
    {"landscape 4k", 3840, 2160, 512, 512, 288},
    {"portrait", 720, 1280, 512, 288, 512},
    {"portrait 9:16 1080", 1080, 1920, 640, 360, 640},
    {"square", 1000, 1000, 512, 512, 512},
    {"square small", 100, 100, 512, 100, 100},
    {"smaller than max_dim", 320, 240, 512, 320, 240},
    {"equal to max_dim", 512, 288, 512, 512, 288},
    {"odd source kept below max_dim", 641, 361, 1000, 640, 360},
    {"odd source scaled", 1001, 563, 500, 500, 282},
    {"odd max_dim", 1280, 720, 513, 512, 288},
    {"4:3 scaled", 640, 480, 512, 512, 384},
    {"extreme wide", 10000, 2, 512, 512, 2},
    {"extreme tall", 3, 9000, 512, 2, 512},
    {"tiny odd", 3, 3, 512, 2, 2},
    {"1x1", 1, 1, 512, 2, 2},
    {"invalid", 0, 720, 512, 2, 2},
};

static void test_fit(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(fit_cases) / sizeof(fit_cases[0]); i++) {
        const fit_case_t *c = &fit_cases[i];
        int w = -1, h = -1;
        fq_frames_fit(c->src_w, c->src_h, c->max_dim, &w, &h);
        if (w != c->want_w || h != c->want_h) {
            fail_msg("%s: %dx%d max %d -> %dx%d, want %dx%d", c->name, c->src_w, c->src_h,
                     c->max_dim, w, h, c->want_w, c->want_h);
        }
    }
}

/* Properties over a grid: even, >= 2, within max_dim, never upscaled, aspect kept to within
 * the rounding of one even step. */
static void test_fit_properties(void **state)
{
    (void)state;
    for (int sw = 2; sw < 4000; sw += 97) {
        for (int sh = 2; sh < 4000; sh += 89) {
            int w, h;
            fq_frames_fit(sw, sh, 512, &w, &h);
            assert_true(w % 2 == 0 && h % 2 == 0);
            assert_true(w >= 2 && h >= 2);
            assert_true(w <= 512 && h <= 512);
            assert_true(w <= sw + 1 && h <= sh + 1);
            if (w > 2 && h > 2) {
                double src_aspect = (double)sw / sh, out_aspect = (double)w / h;
                /* one unit of rounding on the short side (2 px) bounds the aspect error */
                double short_side = w < h ? w : h;
                assert_true(fabs(out_aspect / src_aspect - 1.0) <= 2.5 / short_side);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fps_targets),
        cmocka_unit_test(test_fps_targets_cap),
        cmocka_unit_test(test_fit),
        cmocka_unit_test(test_fit_properties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
