/* Integration tests of frame extraction over the generated test corpus
 * (tests/support/make_videos.sh) and against the ffmpeg CLI. Needs only ffmpeg.
 *
 * FQ_SOURCE_DIR (set by CTest) locates the generator; the corpus goes to a temporary
 * directory removed at the end (FQ_VIDEO_DIR, when set, names a directory to reuse).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <libavcodec/avcodec.h>

#include "fq_config.h"
#include "fq_cores.h"
#include "fq_frames.h"

static char g_videos[1024];
static char g_tmp[1000]; /* removed at the end; empty when FQ_VIDEO_DIR was given */

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */

typedef struct got_frame {
    int index;
    int64_t pts_ms;
    int width, height;
    uint8_t *jpeg;
    size_t size;
} got_frame_t;

typedef struct collect {
    got_frame_t *frames;
    int count, cap;
    int fail_at;           /* the callback fails at this index (-1: never) */
    fq_error_t *fail_with; /* the error it returns */
} collect_t;

static fq_error_t *collect_cb(void *opaque, const fq_frame_t *frame)
{
    collect_t *c = opaque;
    if (c->fail_at >= 0 && frame->index == c->fail_at) {
        return c->fail_with;
    }
    if (c->count == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->frames = realloc(c->frames, (size_t)c->cap * sizeof(*c->frames));
        assert_non_null(c->frames);
    }
    got_frame_t *g = &c->frames[c->count++];
    g->index = frame->index;
    g->pts_ms = frame->pts_ms;
    g->width = frame->width;
    g->height = frame->height;
    g->size = frame->size;
    g->jpeg = malloc(frame->size);
    assert_non_null(g->jpeg);
    memcpy(g->jpeg, frame->jpeg, frame->size);
    return NULL;
}

static void collect_free(collect_t *c)
{
    for (int i = 0; i < c->count; i++) {
        free(c->frames[i].jpeg);
    }
    free(c->frames);
    memset(c, 0, sizeof(*c));
}

static void video_path(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", g_videos, name);
}

static bool video_exists(const char *name)
{
    char path[PATH_MAX];
    video_path(name, path, sizeof(path));
    return access(path, R_OK) == 0;
}

/* The production defaults (config/config_table.c): fps 1, 512 px, JPEG quality 3, at most
 * 1000 frames and 900 s, the default decoder surface and caps. The options point into
 * g_defaults, which lives as long as the test. */
static fq_config_t *g_defaults;

static fq_frames_opts_t default_opts(void)
{
    fq_frames_opts_t o;
    fq_frames_opts_from_config(&o, g_defaults);
    return o;
}

/* Runs one extraction with a fresh extractor; frames go to *c. */
static fq_error_t *run_extract(const char *name, const fq_frames_opts_t *opts, collect_t *c,
                               fq_media_info_t *info)
{
    char path[PATH_MAX];
    video_path(name, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail_msg("%s: %s", path, strerror(errno));
    }
    fq_frames_t *fx = fq_frames_new(opts);
    assert_non_null(fx);
    fq_error_t *err = fq_frames_extract(fx, fd, collect_cb, c, info);
    fq_frames_destroy(fx);
    close(fd);
    return err;
}

/* Decodes a JPEG to its luma plane (malloc'd, w*h bytes). */
static uint8_t *jpeg_luma(const uint8_t *data, size_t size, int *w, int *h)
{
    const AVCodec *codec = avcodec_find_decoder(AV_CODEC_ID_MJPEG);
    assert_non_null(codec);
    AVCodecContext *dec = avcodec_alloc_context3(codec);
    assert_non_null(dec);
    assert_true(avcodec_open2(dec, codec, NULL) >= 0);
    AVPacket *pkt = av_packet_alloc();
    AVFrame *frame = av_frame_alloc();
    assert_true(pkt && frame);
    assert_true(av_new_packet(pkt, (int)size) >= 0);
    memcpy(pkt->data, data, size);
    assert_true(avcodec_send_packet(dec, pkt) >= 0);
    assert_true(avcodec_send_packet(dec, NULL) >= 0);
    assert_true(avcodec_receive_frame(dec, frame) >= 0);
    *w = frame->width;
    *h = frame->height;
    uint8_t *luma = malloc((size_t)frame->width * frame->height);
    assert_non_null(luma);
    for (int y = 0; y < frame->height; y++) {
        memcpy(luma + (size_t)y * frame->width, frame->data[0] + (size_t)y * frame->linesize[0],
               (size_t)frame->width);
    }
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    return luma;
}

static double luma_mad(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += (uint64_t)abs((int)a[i] - (int)b[i]);
    }
    return (double)sum / (double)n;
}

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    assert_non_null(buf);
    *size = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* Table of outcomes over the corpus                                                        */

typedef struct outcome_case {
    const char *file;
    fq_frame_mode_t mode;
    double fps;
    int max_frames;      /* 0 = default */
    int64_t max_seconds; /* 0 = default */
    bool want_error;
    const char *want_message; /* substring of the error message */
    int min_frames, max_frames_out;
    int want_w, want_h; /* 0 = do not check */
} outcome_case_t;

static const outcome_case_t outcome_cases[] = {
    {"h264.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 6, 6, 512, 288},
    {"h264_faststart.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 6, 6, 512, 288},
    {"h264.mp4", FQ_FRAME_MODE_FPS, 2, 0, 0, false, NULL, 12, 12, 512, 288},
    {"h264.mp4", FQ_FRAME_MODE_FPS, 0.5, 0, 0, false, NULL, 3, 3, 512, 288},
    {"h264.mp4", FQ_FRAME_MODE_KEYFRAMES, 1, 0, 0, false, NULL, 3, 3, 512, 288},
    {"h264.mp4", FQ_FRAME_MODE_SCENE, 1, 0, 0, false, NULL, 1, 6, 512, 288},
    {"hevc.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 3, 3, 512, 288},
    {"vp9.webm", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 3, 3, 320, 240},
    {"mpeg4.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 2, 2, 320, 240},
    {"av1.mkv", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 2, 2, 320, 240},
    {"rotated90.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 3, 3, 288, 512},
    {"rotated90.mp4", FQ_FRAME_MODE_KEYFRAMES, 1, 0, 0, false, NULL, 2, 2, 288, 512},
    {"rotated180.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 3, 3, 512, 288},
    {"rotated270.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 3, 3, 288, 512},
    /* 640x360 with square pixels would be 512x288; 4:3 pixels make it 853x360 */
    {"anamorphic.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 2, 2, 512, 216},
    {"vfr.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 8, 8, 512, 288},
    {"uhd.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 1, 1, 512, 288},
    {"tiny.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 1, 1, 64, 64},
    {"tiny.mp4", FQ_FRAME_MODE_KEYFRAMES, 1, 0, 0, false, NULL, 1, 1, 64, 64},
    {"scenes.mp4", FQ_FRAME_MODE_SCENE, 1, 0, 0, false, NULL, 3, 3, 320, 180},
    {"long.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 20, 20, 160, 90},
    /* truncated: what decodes is kept (the first 40% holds about 2 of 6 seconds) */
    {"truncated.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 1, 5, 512, 288},
    /* limits */
    {"long.mp4", FQ_FRAME_MODE_FPS, 1, 0, 10, true, "limit is 10 s", 0, 0, 0, 0},
    {"long.mp4", FQ_FRAME_MODE_KEYFRAMES, 1, 0, 10, true, "limit is 10 s", 0, 0, 0, 0},
    /* no duration in the container: the limit is enforced from timestamps while decoding */
    {"long_noduration.mkv", FQ_FRAME_MODE_FPS, 1, 0, 0, false, NULL, 20, 20, 160, 90},
    {"long_noduration.mkv", FQ_FRAME_MODE_FPS, 1, 0, 10, true, "limit is 10 s", 0, 0, 0, 0},
    {"long_noduration.mkv", FQ_FRAME_MODE_KEYFRAMES, 1, 0, 10, true, "limit is 10 s", 0, 0, 0, 0},
    {"h264.mp4", FQ_FRAME_MODE_FPS, 1, 3, 0, true, "limit is 3", 0, 0, 0, 0},
    {"h264.mp4", FQ_FRAME_MODE_SCENE, 1, 0, 0, false, NULL, 1, 6, 512, 288},
    {"scenes.mp4", FQ_FRAME_MODE_SCENE, 1, 2, 0, true, "limit is 2", 0, 0, 0, 0},
    /* not videos */
    {"truncated_header.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, true, "no frame could be decoded", 0, 0, 0,
     0},
    {"audio_only.m4a", FQ_FRAME_MODE_FPS, 1, 0, 0, true, "no video stream", 0, 0, 0, 0},
    {"empty.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, true, "empty", 0, 0, 0, 0},
    {"random.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, true, "invalid data", 0, 0, 0, 0},
    {"text.mp4", FQ_FRAME_MODE_FPS, 1, 0, 0, true, "invalid data", 0, 0, 0, 0},
    {"text.mp4", FQ_FRAME_MODE_KEYFRAMES, 1, 0, 0, true, "invalid data", 0, 0, 0, 0},
};

static void test_outcomes(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof(outcome_cases) / sizeof(outcome_cases[0]); i++) {
        const outcome_case_t *t = &outcome_cases[i];
        if (strcmp(t->file, "av1.mkv") == 0 && !video_exists(t->file)) {
            print_message("skip %s: no AV1 encoder made it\n", t->file);
            continue;
        }
        fq_frames_opts_t opts = default_opts();
        opts.mode = t->mode;
        opts.fps = t->fps;
        if (t->max_frames) {
            opts.max_frames = t->max_frames;
        }
        if (t->max_seconds) {
            opts.max_seconds = t->max_seconds;
        }
        collect_t c = {.fail_at = -1};
        fq_media_info_t info;
        fq_error_t *err = run_extract(t->file, &opts, &c, &info);
        const char *mode = fq_frame_mode_name(t->mode);
        if (t->want_error) {
            if (!err) {
                print_error("%s %s: no error, %d frames\n", t->file, mode, c.count);
                failures++;
            } else if (fq_error_stage(err) != FQ_STAGE_DECODE ||
                       fq_error_class(err) != FQ_CLASS_PERMANENT ||
                       !strcasestr(fq_error_message(err), t->want_message)) {
                print_error("%s %s: got %s/%s \"%s\", want decode/permanent \"%s\"\n", t->file,
                            mode, fq_stage_name(fq_error_stage(err)),
                            fq_class_name(fq_error_class(err)), fq_error_message(err),
                            t->want_message);
                failures++;
            } else {
                print_message("ok %s %s: %s\n", t->file, mode, fq_error_message(err));
            }
        } else if (err) {
            print_error("%s %s: unexpected error %s\n", t->file, mode, fq_error_message(err));
            failures++;
        } else {
            bool ok = c.count >= t->min_frames && c.count <= t->max_frames_out &&
                      info.frame_count == c.count && info.frames_decoded >= c.count;
            for (int k = 0; ok && k < c.count; k++) {
                const got_frame_t *g = &c.frames[k];
                ok = g->index == k && (!t->want_w || g->width == t->want_w) &&
                     (!t->want_h || g->height == t->want_h) && g->size > 100 &&
                     g->jpeg[0] == 0xFF && g->jpeg[1] == 0xD8 &&
                     (k == 0 || g->pts_ms >= c.frames[k - 1].pts_ms);
            }
            if (!ok) {
                print_error("%s %s: %d frames (want %d..%d), first %dx%d, decoded %lld\n", t->file,
                            mode, c.count, t->min_frames, t->max_frames_out,
                            c.count ? c.frames[0].width : 0, c.count ? c.frames[0].height : 0,
                            (long long)info.frames_decoded);
                failures++;
            } else {
                print_message("ok %s %s: %d frames %dx%d, %lld decoded, %s/%s %lld ms\n", t->file,
                              mode, c.count, c.frames[0].width, c.frames[0].height,
                              (long long)info.frames_decoded, info.codec, info.container,
                              (long long)info.duration_ms);
            }
        }
        fq_error_destroy(err);
        collect_free(&c);
    }
    assert_int_equal(failures, 0);
}

/* The decoder surface: only allowed containers and codecs, capped resources. Each hostile
 * file is generated by make_videos.sh; each refusal is permanent and names what it refused. */
typedef struct surface_case {
    const char *file;
    const char *containers, *codecs; /* NULL = the defaults */
    int64_t max_pixels, max_decode_ms;
    int max_packets;  /* 0 = the default (1000) */
    const char *want; /* substring of the error; NULL = frames expected */
} surface_case_t;

static const surface_case_t surface_cases[] = {
    {"playlist.m3u8", NULL, NULL, 0, 0, 0, "container hls is not in ALLOWED_CONTAINERS"},
    {"list.ffconcat", NULL, NULL, 0, 0, 0, "container concat is not in ALLOWED_CONTAINERS"},
    {"image.jpg", NULL, NULL, 0, 0, 0, "is not in ALLOWED_CONTAINERS"},
    {"raw.y4m", NULL, NULL, 0, 0, 0, "container yuv4mpegpipe is not in ALLOWED_CONTAINERS"},
    {"mpeg4.avi", NULL, NULL, 0, 0, 0, "container avi is not in ALLOWED_CONTAINERS"},
    {"mjpeg.mkv", NULL, NULL, 0, 0, 0, "video codec mjpeg is not in ALLOWED_CODECS"},
    {"huge.mp4", NULL, NULL, 0, 0, 0,
     "video is 8208x8208 (67371264 pixels), more than MAX_FRAME_PIXELS (67108864)"},
    {"uhd.mp4", NULL, NULL, 1920 * 1080, 0, 0, "video is 3840x2160"},
    {"noise.mkv", NULL, NULL, 0, 0, 100,
     "101 video packets in a row without a decoded frame, more than MAX_PACKETS_WITHOUT_FRAME "
     "(100)"},
    {"noise.mkv", NULL, NULL, 0, 0, 0, "no frame could be decoded"},
    {"h264.mp4", NULL, NULL, 0, 1, 0, "decoding took longer than MAX_DECODE_SECONDS"},
    /* The same files are fine when the operator allows them ... */
    {"mpeg4.avi", FQ_FRAMES_DEFAULT_CONTAINERS ",avi", NULL, 0, 0, 0, NULL},
    {"mjpeg.mkv", NULL, FQ_FRAMES_DEFAULT_CODECS ",mjpeg", 0, 0, 0, NULL},
    {"uhd.mp4", NULL, NULL, 3840 * 2160, 0, 0, NULL},
    /* ... and an allowed playlist demuxer still opens nothing (io_open refused). */
    {"playlist.m3u8", "hls", NULL, 0, 0, 0, "not a readable video"},
};

static void test_decoder_surface(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof(surface_cases) / sizeof(surface_cases[0]); i++) {
        const surface_case_t *t = &surface_cases[i];
        fq_frames_opts_t opts = default_opts();
        if (t->containers) {
            opts.allowed_containers = t->containers;
        }
        if (t->codecs) {
            opts.allowed_codecs = t->codecs;
        }
        if (t->max_pixels) {
            opts.max_pixels = t->max_pixels;
        }
        if (t->max_decode_ms) {
            opts.max_decode_ms = t->max_decode_ms;
        }
        if (t->max_packets) {
            opts.max_packets_without_frame = t->max_packets;
        }
        collect_t c = {.fail_at = -1};
        fq_media_info_t info;
        fq_error_t *err = run_extract(t->file, &opts, &c, &info);
        if (!t->want && err) {
            print_error("%s: unexpected error %s\n", t->file, fq_error_message(err));
            failures++;
        } else if (!t->want && c.count < 1) {
            print_error("%s: no frame\n", t->file);
            failures++;
        } else if (t->want && (!err || fq_error_stage(err) != FQ_STAGE_DECODE ||
                               fq_error_class(err) != FQ_CLASS_PERMANENT ||
                               !strstr(fq_error_message(err), t->want))) {
            print_error("%s: got %s, want decode/permanent \"%s\"\n", t->file,
                        err ? fq_error_message(err) : "no error", t->want);
            failures++;
        } else {
            print_message("ok %s: %s\n", t->file, err ? fq_error_message(err) : "frames");
        }
        fq_error_destroy(err);
        collect_free(&c);
    }
    assert_int_equal(failures, 0);
}

/* What the extractor reports of a clip, and fps mode's frames: one a second, rounded as the fps
 * filter rounds; a rotated clip gives upright frames. */
static void test_media_info(void **state)
{
    (void)state;
    fq_frames_opts_t opts = default_opts();
    collect_t c = {.fail_at = -1};
    fq_media_info_t info;
    fq_error_t *err = run_extract("h264.mp4", &opts, &c, &info);
    assert_null(err);
    assert_string_equal(info.codec, "h264");
    assert_string_equal(info.container, "mov");
    assert_int_equal(info.width, 1280);
    assert_int_equal(info.height, 720);
    assert_int_equal(info.rotation, 0);
    assert_true(info.duration_ms >= 5900 && info.duration_ms <= 6100);
    assert_true(info.avg_fps > 29.9 && info.avg_fps < 30.1);
    assert_int_equal(info.frame_count, 6);
    /* fps mode decodes less than the whole stream (180 frames): seeks and skipped frames */
    assert_true(info.frames_decoded < 180);
    /* the frame shown at k s is the one the fps filter rounds to k: within half a second */
    for (int k = 0; k < c.count; k++) {
        assert_true(c.frames[k].pts_ms >= k * 1000 - 500 && c.frames[k].pts_ms < k * 1000 + 500);
    }
    collect_free(&c);

    c = (collect_t){.fail_at = -1};
    err = run_extract("rotated90.mp4", &opts, &c, &info);
    assert_null(err);
    assert_true(info.rotation == 90 || info.rotation == 270);
    assert_int_equal(info.width, 640); /* coded size, before rotation */
    assert_int_equal(info.height, 360);
    assert_true(c.frames[0].height > c.frames[0].width);
    collect_free(&c);

    /* info may be NULL */
    c = (collect_t){.fail_at = -1};
    err = run_extract("tiny.mp4", &opts, &c, NULL);
    assert_null(err);
    assert_int_equal(c.count, 1);
    collect_free(&c);
}

/* The other modes pick their frames where the clips put them: keyframes mode the key frames of
 * h264.mp4 (one every 2 s), decoding only those; scene mode the start and the cuts of
 * scenes.mp4 (at 1 s and 3 s). */
static void test_modes_pick_their_frames(void **state)
{
    (void)state;
    static const struct {
        fq_frame_mode_t mode;
        const char *file;
        int decoded; /* frames decoded; -1: not checked */
        int64_t pts_ms[3];
    } cases[] = {
        {FQ_FRAME_MODE_KEYFRAMES, "h264.mp4", 3, {0, 2000, 4000}},
        {FQ_FRAME_MODE_SCENE, "scenes.mp4", -1, {0, 1000, 3000}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_frames_opts_t opts = default_opts();
        opts.mode = cases[i].mode;
        collect_t c = {.fail_at = -1};
        fq_media_info_t info;
        fq_error_t *err = run_extract(cases[i].file, &opts, &c, &info);
        if (err)
            fail_msg("%s: %s", cases[i].file, fq_error_message(err));
        if (cases[i].decoded >= 0)
            assert_int_equal(info.frames_decoded, cases[i].decoded);
        assert_int_equal(c.count, 3);
        for (int k = 0; k < 3; k++)
            if (c.frames[k].pts_ms != cases[i].pts_ms[k])
                fail_msg("%s: frame %d at %lld ms, want %lld", cases[i].file, k,
                         (long long)c.frames[k].pts_ms, (long long)cases[i].pts_ms[k]);
        collect_free(&c);
    }
}

/* The callback's error stops the extraction and comes back as is. */
static void test_callback_error(void **state)
{
    (void)state;
    fq_frames_opts_t opts = default_opts();
    fq_error_t *mine = fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "upload failed");
    collect_t c = {.fail_at = 2, .fail_with = mine};
    fq_media_info_t info;
    fq_error_t *err = run_extract("h264.mp4", &opts, &c, &info);
    assert_ptr_equal(err, mine);
    assert_int_equal(c.count, 2);
    fq_error_destroy(err);
    collect_free(&c);
}

/* One extractor reused over inputs of different sizes, modes and failures. */
static void test_reuse(void **state)
{
    (void)state;
    static const char *files[] = {"uhd.mp4",        "tiny.mp4",  "random.mp4", "rotated90.mp4",
                                  "h264.mp4",       "empty.mp4", "vp9.webm",   "truncated.mp4",
                                  "audio_only.m4a", "tiny.mp4"};
    static const int want[] = {1, 1, -1, 3, 6, -1, 3, 0, -1, 1};
    fq_frames_opts_t opts = default_opts();
    fq_frames_t *fx = fq_frames_new(&opts);
    assert_non_null(fx);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[PATH_MAX];
        video_path(files[i], path, sizeof(path));
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        collect_t c = {.fail_at = -1};
        fq_error_t *err = fq_frames_extract(fx, fd, collect_cb, &c, NULL);
        if (want[i] < 0) {
            assert_non_null(err);
            assert_int_equal(fq_error_class(err), FQ_CLASS_PERMANENT);
        } else {
            assert_null(err);
            if (want[i] > 0) {
                assert_int_equal(c.count, want[i]);
            } else {
                assert_true(c.count > 0);
            }
        }
        /* the fd's own offset is untouched (reads use pread) */
        assert_int_equal(lseek(fd, 0, SEEK_CUR), 0);
        fq_error_destroy(err);
        collect_free(&c);
        close(fd);
    }
    fq_frames_destroy(fx);
    fq_frames_destroy(NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* fps mode against `ffmpeg -vf fps=1`                                                      */

static void compare_with_cli(const char *name, double fps)
{
    fq_frames_opts_t opts = default_opts();
    opts.fps = fps;
    collect_t c = {.fail_at = -1};
    fq_media_info_t info;
    fq_error_t *err = run_extract(name, &opts, &c, &info);
    if (err) {
        fail_msg("%s: %s", name, fq_error_message(err));
    }
    assert_true(c.count > 1);
    int w = c.frames[0].width, h = c.frames[0].height;

    char dir[PATH_MAX], path[PATH_MAX], cmd[3 * PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/cli-%s-%g", g_tmp[0] ? g_tmp : g_videos, name, fps);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    video_path(name, path, sizeof(path));
    snprintf(cmd, sizeof(cmd),
             "ffmpeg -nostdin -hide_banner -loglevel error -i '%s' -vf fps=%g,scale=%d:%d "
             "-q:v 3 '%s/%%03d.jpg'",
             path, fps, w, h, dir);
    if (system(cmd) != 0) {
        fail_msg("ffmpeg CLI failed: %s", cmd);
    }
    int cli_count = 0;
    uint8_t *cli[256] = {0};
    for (;;) {
        char jpg[PATH_MAX + 16];
        snprintf(jpg, sizeof(jpg), "%s/%03d.jpg", dir, cli_count + 1);
        size_t size = 0;
        uint8_t *data = read_file(jpg, &size);
        if (!data || cli_count == 256) {
            free(data);
            break;
        }
        int cw, ch;
        cli[cli_count] = jpeg_luma(data, size, &cw, &ch);
        free(data);
        assert_int_equal(cw, w);
        assert_int_equal(ch, h);
        cli_count++;
    }
    print_message("%s at %g fps: ours %d frames, CLI %d frames, %lld of %s decoded\n", name, fps,
                  c.count, cli_count, (long long)info.frames_decoded, info.codec);
    assert_true(abs(c.count - cli_count) <= 1);

    int n = c.count < cli_count ? c.count : cli_count;
    size_t px = (size_t)w * h;
    for (int k = 0; k < n; k++) {
        int ow, oh;
        uint8_t *ours = jpeg_luma(c.frames[k].jpeg, c.frames[k].size, &ow, &oh);
        double same = luma_mad(ours, cli[k], px);
        /* a neighbour that is the same picture (the CLI repeats frames) proves nothing */
        double prev =
            k > 0 && luma_mad(cli[k], cli[k - 1], px) > 0 ? luma_mad(ours, cli[k - 1], px) : 1e9;
        double next = k + 1 < cli_count && luma_mad(cli[k], cli[k + 1], px) > 0
                          ? luma_mad(ours, cli[k + 1], px)
                          : 1e9;
        print_message("  frame %d pts %lld ms: diff same %.2f, previous %.2f, next %.2f\n", k,
                      (long long)c.frames[k].pts_ms, same, prev < 1e9 ? prev : -1,
                      next < 1e9 ? next : -1);
        /* the same picture through the same scaler and encoder: nearly identical (a wrong
         * rotation or a wrong frame is tens of levels away) */
        if (same > 1.5) {
            fail_msg("%s frame %d: mean difference %.2f from the CLI's frame", name, k, same);
        }
        if (!(same < prev && same < next)) {
            fail_msg("%s frame %d: closer to a neighbour of the CLI's frame (%.2f vs %.2f/%.2f)",
                     name, k, same, prev, next);
        }
        free(ours);
    }
    for (int k = 0; k < cli_count; k++) {
        free(cli[k]);
    }
    collect_free(&c);
}

static void test_fps_vs_cli_h264(void **state)
{
    (void)state;
    compare_with_cli("h264.mp4", 1);
}

static void test_fps_vs_cli_vfr(void **state)
{
    (void)state;
    compare_with_cli("vfr.mp4", 1);
}

static void test_fps_vs_cli_rotated(void **state)
{
    (void)state;
    compare_with_cli("rotated90.mp4", 1);
}

/* the CLI's autorotation and ours agree for every right angle, and on anamorphic pixels */
static void test_fps_vs_cli_geometry(void **state)
{
    (void)state;
    compare_with_cli("rotated180.mp4", 1);
    compare_with_cli("rotated270.mp4", 1);
    compare_with_cli("anamorphic.mp4", 1);
}

static void test_fps_vs_cli_hevc(void **state)
{
    (void)state;
    compare_with_cli("hevc.mp4", 1);
}

/* other rates: more targets than GOPs, fewer (seeks over whole GOPs), a fractional rate
 * on variable frame intervals */
static void test_fps_vs_cli_rates(void **state)
{
    (void)state;
    compare_with_cli("h264.mp4", 2);
    compare_with_cli("long.mp4", 0.25);
    compare_with_cli("vfr.mp4", 2.5);
}

/* ---------------------------------------------------------------------------------------- */
/* Decoder threads lent by a core budget                                                    */

typedef struct budget_run {
    collect_t c;
    fq_cores_t *cores;
    /* what the callback does at the first frame */
    int release_at_first; /* cores "other items" give back */
    bool waiter_at_first; /* another item starts waiting for a core */
    bool hold_for_waiter; /* ... and the callback returns only once it has its core */
    pthread_t waiter;
    bool waiter_started;
    atomic_int waiter_done;
    int waiter_done_at;   /* frames handed over before the waiter had its core; -1: never */
    int max_in_use_after; /* the most cores held or lent after the first frame */
    fq_media_info_t info;
} budget_run_t;

static void *budget_waiter(void *opaque)
{
    budget_run_t *b = opaque;
    assert_int_equal(fq_cores_acquire(b->cores, NULL), 0);
    atomic_store(&b->waiter_done, 1);
    return NULL;
}

static fq_error_t *budget_cb(void *opaque, const fq_frame_t *frame)
{
    budget_run_t *b = opaque;
    if (frame->index == 0) {
        fq_cores_release(b->cores, b->release_at_first);
        if (b->waiter_at_first) {
            assert_int_equal(pthread_create(&b->waiter, NULL, budget_waiter, b), 0);
            b->waiter_started = true;
            /* the decoder is asked once the waiter waits, and may give the core back before
             * this poll sees it (bounded, ~10 s): wanted, or the waiter already has it */
            for (int i = 0;
                 i < 10000 && !fq_cores_wanted(b->cores) && !atomic_load(&b->waiter_done); i++) {
                nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
            }
            assert_true(fq_cores_wanted(b->cores) || atomic_load(&b->waiter_done));
            for (int i = 0; i < 10000 && b->hold_for_waiter && !atomic_load(&b->waiter_done); i++) {
                nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
            }
            assert_true(!b->hold_for_waiter || atomic_load(&b->waiter_done));
        }
    } else {
        int n = fq_cores_in_use(b->cores);
        if (n > b->max_in_use_after) {
            b->max_in_use_after = n;
        }
        if (b->waiter_done_at < 0 && atomic_load(&b->waiter_done)) {
            b->waiter_done_at = frame->index;
        }
    }
    return collect_cb(&b->c, frame);
}

/* Extracts name as an item of a worker does: holding one core of a budget of total, with
 * held cores taken by other items; the decoder borrows the rest. */
static void budget_extract(const char *name, const fq_frames_opts_t *opts, int total, int held,
                           budget_run_t *b)
{
    char path[PATH_MAX];
    video_path(name, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    b->cores = fq_cores_new(total);
    assert_non_null(b->cores);
    for (int i = 0; i < 1 + held; i++) {
        assert_int_equal(fq_cores_acquire(b->cores, NULL), 0);
    }
    b->c.fail_at = -1;
    b->waiter_done_at = -1;
    fq_frames_t *fx = fq_frames_new(opts);
    assert_non_null(fx);
    fq_frames_set_cores(fx, b->cores);
    fq_error_t *err = fq_frames_extract(fx, fd, budget_cb, b, &b->info);
    if (err) {
        fail_msg("%s: %s", name, fq_error_message(err));
    }
    fq_frames_destroy(fx);
    close(fd);
}

static void assert_same_frames(const char *what, const collect_t *want, const collect_t *got)
{
    if (want->count != got->count) {
        fail_msg("%s: %d frames with one thread, %d with lent cores", what, want->count,
                 got->count);
    }
    for (int k = 0; k < want->count; k++) {
        const got_frame_t *a = &want->frames[k], *b = &got->frames[k];
        if (a->pts_ms != b->pts_ms || a->size != b->size || memcmp(a->jpeg, b->jpeg, a->size)) {
            fail_msg("%s frame %d: %lld ms (%zu bytes) with one thread, %lld ms (%zu bytes) "
                     "with lent cores",
                     what, k, (long long)a->pts_ms, a->size, (long long)b->pts_ms, b->size);
        }
    }
}

/* Extracts name on one thread without a budget, then as budget_extract does: the same frames,
 * byte for byte. b keeps the budget run (free with budget_run_free). */
static void lent_vs_one(const char *name, const fq_frames_opts_t *opts, int total, int held,
                        budget_run_t *b)
{
    fq_frames_opts_t one_opts = *opts;
    one_opts.threads = 1;
    collect_t one = {.fail_at = -1};
    fq_error_t *err = run_extract(name, &one_opts, &one, NULL);
    if (err) {
        fail_msg("%s: %s", name, fq_error_message(err));
    }
    assert_true(one.count > 0);
    budget_extract(name, opts, total, held, b);
    if (b->waiter_started) {
        assert_int_equal(pthread_join(b->waiter, NULL), 0);
    }
    char what[64];
    snprintf(what, sizeof(what), "%s mode %d at %g fps", name, (int)opts->mode, opts->fps);
    assert_same_frames(what, &one, &b->c);
    collect_free(&one);
}

static void budget_run_free(budget_run_t *b)
{
    collect_free(&b->c);
    fq_cores_destroy(b->cores);
}

/* One thread vs a budget of 4 cores of which the item holds one and borrows three: the same
 * frames in every mode (fps with seeks and GOP cuts, open GOPs, keyframes, scene). fps mode
 * on an input with IDR pictures is cut into chunks decoded side by side (split: 1), one with
 * open GOPs (or too short) is decoded whole by a frame-threaded decoder (split: 0). */
static void test_lent_cores_same_frames(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        fq_frame_mode_t mode;
        double fps;
        int split; /* 1: cut into chunks, 0: whole, -1: either */
    } cases[] = {
        {"h264.mp4", FQ_FRAME_MODE_FPS, 1, 1},
        {"h264.mp4", FQ_FRAME_MODE_FPS, 2, 1},
        {"h264_opengop.mp4", FQ_FRAME_MODE_FPS, 1, 0},
        {"vfr.mp4", FQ_FRAME_MODE_FPS, 1, -1},
        {"hevc.mp4", FQ_FRAME_MODE_FPS, 1, 0},
        {"hevc_closed.mp4", FQ_FRAME_MODE_FPS, 1, 1},
        /* cuts at 2 s, 4 s, ...: between two targets, nearer the earlier (2 s x 0.6 = 1.2) */
        {"hevc_closed.mp4", FQ_FRAME_MODE_FPS, 0.6, 1},
        {"long.mp4", FQ_FRAME_MODE_FPS, 0.25, 1},
        /* its index lists keyframes past the end of its data: those cuts are not made */
        {"truncated.mp4", FQ_FRAME_MODE_FPS, 1, 1},
        {"rotated90.mp4", FQ_FRAME_MODE_FPS, 1, -1},
        {"h264.mp4", FQ_FRAME_MODE_KEYFRAMES, 1, 0},
        {"scenes.mp4", FQ_FRAME_MODE_SCENE, 1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fq_frames_opts_t opts = default_opts();
        opts.mode = cases[i].mode;
        opts.fps = cases[i].fps;
        budget_run_t b = {0};
        lent_vs_one(cases[i].file, &opts, 4, 0, &b);
        print_message("%s at %g fps: %d chunks, %d by helpers\n", cases[i].file, cases[i].fps,
                      b.info.chunks, b.info.chunks_helped);
        if (cases[i].split >= 0 && (b.info.chunks > 1) != cases[i].split) {
            fail_msg("%s at %g fps: %d chunks", cases[i].file, cases[i].fps, b.info.chunks);
        }
        assert_int_equal(fq_cores_in_use(b.cores), 1); /* the lent cores came back */
        budget_run_free(&b);
    }
}

/* Another item asks for a core while ours decodes with a lent one: the frame-threaded
 * decoder gives it back at the next keyframe (h264_opengop.mp4: not cut into chunks, GOPs of
 * 2 s, 6 targets), and the frames stay the same. */
static void test_lent_core_given_back(void **state)
{
    (void)state;
    fq_frames_opts_t opts = default_opts();
    budget_run_t b = {.waiter_at_first = true};
    lent_vs_one("h264_opengop.mp4", &opts, 2, 0, &b);
    print_message("the waiter had its core before frame %d of %d\n", b.waiter_done_at, b.c.count);
    assert_int_equal(b.info.chunks, 1);
    assert_true(b.waiter_done_at > 0 && b.waiter_done_at < b.c.count - 1);
    assert_int_equal(b.max_in_use_after, 2);       /* never more than the budget */
    assert_int_equal(fq_cores_in_use(b.cores), 2); /* ours and the waiter's */
    budget_run_free(&b);
}

/* The same with chunks: hevc_closed.mp4 is cut into 8 chunks; the first frame goes out when
 * the item's thread has decoded the first chunk, and the callback then holds that thread
 * until the waiter has its core. The helper must give it back after the chunk it is on: if
 * it went on taking chunks, it would decode all 7 others while the item's thread waits. */
static void test_split_helper_gives_back(void **state)
{
    (void)state;
    fq_frames_opts_t opts = default_opts();
    budget_run_t b = {.waiter_at_first = true, .hold_for_waiter = true};
    lent_vs_one("hevc_closed.mp4", &opts, 2, 0, &b);
    print_message("%d chunks, %d by the helper\n", b.info.chunks, b.info.chunks_helped);
    assert_int_equal(b.info.chunks, 8);
    assert_int_equal(b.info.chunk_helpers, 1); /* none borrowed while the waiter waits */
    assert_true(b.info.chunks_helped >= 1 && b.info.chunks_helped <= 3);
    assert_true(b.max_in_use_after <= 2);          /* never more than the budget */
    assert_int_equal(fq_cores_in_use(b.cores), 2); /* ours and the waiter's */
    budget_run_free(&b);
}

/* The same with chunks: another item holds one core of 3, so hevc_closed.mp4 starts with one
 * helper; that item gives its core back at the first frame, and the item's thread starts a
 * second helper before it takes its next chunk (6 of the 8 chunks are left then). */
static void test_split_borrows_freed_cores(void **state)
{
    (void)state;
    fq_frames_opts_t opts = default_opts();
    budget_run_t b = {.release_at_first = 1};
    lent_vs_one("hevc_closed.mp4", &opts, 3, 1, &b);
    print_message("%d chunks, %d helpers\n", b.info.chunks, b.info.chunk_helpers);
    assert_int_equal(b.info.chunks, 8);
    assert_int_equal(b.info.chunk_helpers, 2);
    assert_true(b.max_in_use_after <= 3);
    assert_int_equal(fq_cores_in_use(b.cores), 1);
    budget_run_free(&b);
}

/* fq_frames_set_cancel: a flag raised at the first frame stops a split run at its next
 * packet on every thread and hands over no further frame, not even the rest of a chunk
 * already decoded (an outage, so nothing is burned); every lent core comes back. */
static fq_error_t *cancel_at_first(void *opaque, const fq_frame_t *frame)
{
    (void)frame;
    atomic_store((atomic_int *)opaque, 1);
    return NULL;
}

static void test_cancel_split_run(void **state)
{
    (void)state;
    char path[PATH_MAX];
    video_path("hevc_closed.mp4", path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    fq_cores_t *cores = fq_cores_new(2);
    assert_non_null(cores);
    assert_int_equal(fq_cores_acquire(cores, NULL), 0);
    fq_frames_opts_t opts = default_opts();
    fq_frames_t *fx = fq_frames_new(&opts);
    assert_non_null(fx);
    fq_frames_set_cores(fx, cores);
    atomic_int cancel = 0;
    fq_frames_set_cancel(fx, &cancel);
    fq_media_info_t info;
    fq_error_t *err = fq_frames_extract(fx, fd, cancel_at_first, &cancel, &info);
    assert_non_null(err);
    print_message("%s after %d frames of 16, %d chunks\n", fq_error_message(err), info.frame_count,
                  info.chunks);
    assert_int_equal(fq_error_class(err), FQ_CLASS_OUTAGE);
    assert_non_null(strstr(fq_error_message(err), "cancelled"));
    assert_int_equal(info.chunks, 8);
    assert_int_equal(info.frame_count, 1); /* the next frame is not handed over */
    assert_int_equal(fq_cores_in_use(cores), 1);
    fq_error_destroy(err);
    fq_frames_destroy(fx);
    fq_cores_release(cores, 1);
    fq_cores_destroy(cores);
    close(fd);
}

/* Cores freed while ours decodes on one thread: the decoder takes them at the next keyframe. */
static void test_freed_cores_borrowed(void **state)
{
    (void)state;
    fq_frames_opts_t opts = default_opts();
    budget_run_t b = {.release_at_first = 2};
    lent_vs_one("h264.mp4", &opts, 3, 2, &b); /* other items hold 2 of 3: no lending */
    assert_int_equal(b.max_in_use_after, 3);  /* ours and the two it borrowed later */
    assert_int_equal(fq_cores_in_use(b.cores), 1);
    budget_run_free(&b);
}

/* ---------------------------------------------------------------------------------------- */

static int make_corpus(void)
{
    const char *src = getenv("FQ_SOURCE_DIR");
    if (!src || !*src) {
        fprintf(stderr, "test_frames: FQ_SOURCE_DIR is not set (run through ctest, or export "
                        "FQ_SOURCE_DIR=<repository>)\n");
        return -1;
    }
    if (system("ffmpeg -hide_banner -version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_frames: the ffmpeg CLI is needed and was not found\n");
        return -1;
    }
    const char *keep = getenv("FQ_VIDEO_DIR");
    if (keep && *keep) {
        snprintf(g_videos, sizeof(g_videos), "%s", keep);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_tmp, sizeof(g_tmp), "%s/fq-test-frames-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(g_tmp)) {
            fprintf(stderr, "test_frames: mkdtemp: %s\n", strerror(errno));
            return -1;
        }
        snprintf(g_videos, sizeof(g_videos), "%s/videos", g_tmp);
    }
    char cmd[2 * PATH_MAX];
    snprintf(cmd, sizeof(cmd), "bash '%s/tests/support/make_videos.sh' '%s' >/dev/null", src,
             g_videos);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_frames: %s failed\n", cmd);
        return -1;
    }
    return 0;
}

static void remove_corpus(void)
{
    if (g_tmp[0]) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
        if (system(cmd) != 0) {
            fprintf(stderr, "test_frames: could not remove %s\n", g_tmp);
        }
    }
}

int main(void)
{
    g_defaults = fq_config_new();
    if (!g_defaults || make_corpus() < 0) {
        remove_corpus();
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcomes),
        cmocka_unit_test(test_decoder_surface),
        cmocka_unit_test(test_media_info),
        cmocka_unit_test(test_modes_pick_their_frames),
        cmocka_unit_test(test_callback_error),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_lent_cores_same_frames),
        cmocka_unit_test(test_lent_core_given_back),
        cmocka_unit_test(test_split_helper_gives_back),
        cmocka_unit_test(test_split_borrows_freed_cores),
        cmocka_unit_test(test_cancel_split_run),
        cmocka_unit_test(test_freed_cores_borrowed),
        cmocka_unit_test(test_fps_vs_cli_h264),
        cmocka_unit_test(test_fps_vs_cli_vfr),
        cmocka_unit_test(test_fps_vs_cli_rotated),
        cmocka_unit_test(test_fps_vs_cli_hevc),
        cmocka_unit_test(test_fps_vs_cli_rates),
        cmocka_unit_test(test_fps_vs_cli_geometry),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    remove_corpus();
    fq_config_destroy(g_defaults);
    return rc;
}
