/* Unit tests for the retry backoff arithmetic (consumer/backoff.c): doubling, jitter bounds,
 * the cap and Retry-After, table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "fq_backoff.h"

typedef struct backoff_case {
    const char *name;
    int64_t base, max;
    int attempt;
    int64_t retry_after;
    double unit;
    int64_t want;
} backoff_case_t;

static const backoff_case_t cases[] = {
    {"attempt 1 exact", 1000, 60000, 1, 0, 0.5, 1000},
    {"attempt 2 doubles", 1000, 60000, 2, 0, 0.5, 2000},
    {"attempt 3", 1000, 60000, 3, 0, 0.5, 4000},
    {"attempt 6", 1000, 60000, 6, 0, 0.5, 32000},
    {"attempt 7 capped", 1000, 60000, 7, 0, 0.5, 60000},
    {"huge attempt capped", 1000, 60000, 1000000, 0, 0.5, 60000},
    {"jitter low -20%", 1000, 60000, 1, 0, 0.0, 800},
    {"jitter high ~+20%", 1000, 60000, 1, 0, 0.999999, 1200},
    {"jitter on attempt 3 low", 200, 60000, 3, 0, 0.0, 640},
    {"jitter cannot pass cap", 1000, 1100, 1, 0, 0.999999, 1100},
    {"attempt 0 counts as 1", 1000, 60000, 0, 0, 0.5, 1000},
    {"negative attempt counts as 1", 1000, 60000, -5, 0, 0.5, 1000},
    {"retry-after raises", 1000, 60000, 1, 5000, 0.5, 5000},
    {"retry-after smaller ignored", 1000, 60000, 3, 1000, 0.5, 4000},
    {"retry-after above cap wins", 1000, 60000, 1, 120000, 0.5, 120000},
    {"retry-after bounded to 1 h", 1000, 60000, 1, 10LL * 3600 * 1000, 0.5,
     FQ_BACKOFF_RETRY_AFTER_MAX},
    {"zero base", 0, 60000, 4, 0, 0.9, 0},
    {"negative base is zero", -10, 60000, 2, 0, 0.5, 0},
    {"unit out of range low", 1000, 60000, 1, 0, -3.0, 800},
    {"unit out of range high", 1000, 60000, 1, 0, 7.0, 1200},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const backoff_case_t *c = &cases[i];
        int64_t got = fq_backoff_ms(c->base, c->max, c->attempt, c->retry_after, c->unit);
        if (got != c->want)
            fail_msg("%s: got %lld, want %lld", c->name, (long long)got, (long long)c->want);
    }
}

/* Every attempt, every random draw: within +-20 % of the doubled base, never above the cap. */
static void test_bounds_random(void **state)
{
    (void)state;
    uint64_t rng = 42;
    int64_t lo_seen = INT64_MAX, hi_seen = 0;
    for (int attempt = 1; attempt <= 12; attempt++) {
        double nominal = 250.0 * (double)(1LL << (attempt - 1));
        for (int k = 0; k < 2000; k++) {
            double u = fq_backoff_random(&rng);
            assert_true(u >= 0.0 && u < 1.0);
            int64_t ms = fq_backoff_ms(250, 30000, attempt, 0, u);
            assert_true(ms <= 30000);
            double lo = nominal * 0.8, hi = nominal * 1.2;
            if (lo > 30000)
                lo = 30000;
            assert_true((double)ms >= lo - 1.0);
            assert_true((double)ms <= hi + 1.0);
            if (attempt == 1) {
                lo_seen = ms < lo_seen ? ms : lo_seen;
                hi_seen = ms > hi_seen ? ms : hi_seen;
            }
        }
    }
    /* The jitter really spreads: 2000 draws cover most of 200..300. */
    assert_true(lo_seen < 210);
    assert_true(hi_seen > 290);
}

static void test_random_distinct(void **state)
{
    (void)state;
    uint64_t a = 1, b = 2;
    double x = fq_backoff_random(&a), y = fq_backoff_random(&b);
    assert_true(x != y);
    uint64_t z = 0; /* a zero seed must not stick at zero */
    double first = fq_backoff_random(&z);
    double second = fq_backoff_random(&z);
    assert_true(first != second);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_bounds_random),
        cmocka_unit_test(test_random_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
