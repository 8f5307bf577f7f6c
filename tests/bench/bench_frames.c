/* bench_frames: runs the frame extractor once over a file and prints what it did.
 *
 *   bench_frames [--mode fps|keyframes|scene] [--fps F] [--max-dim N] [--quality Q]
 *                [--scene-threshold T] [--threads N] [--cores N] [--max-frames N]
 *                [--max-seconds N] [--out DIR] FILE
 *
 * --cores N runs the extraction as a worker's pool does: inside a core budget of N cores
 * (fq_cores.h), holding one and lending the idle ones to the decoder (--threads is ignored).
 *
 * Prints one JSON line: frames, decoded, jpeg_bytes, width, height, duration_ms, codec,
 * rotation; or the error. Writes nothing unless --out is given (DIR/%03d.jpg, for tests
 * and for looking at the frames). Exit 0 on success, 1 on an extraction error, 2 on usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fq_config.h"
#include "fq_frames.h"

typedef struct sink {
    const char *out_dir;
    int64_t bytes;
    int width, height;
} sink_t;

static fq_error_t *on_frame(void *opaque, const fq_frame_t *frame)
{
    sink_t *sink = opaque;
    sink->bytes += (int64_t)frame->size;
    sink->width = frame->width;
    sink->height = frame->height;
    if (sink->out_dir) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%03d.jpg", sink->out_dir, frame->index + 1);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(frame->jpeg, 1, frame->size, f) != frame->size) {
            if (f) {
                fclose(f);
            }
            return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "%s: %s", path,
                                strerror(errno));
        }
        fclose(f);
    }
    return NULL;
}

/* Prints s as a JSON string body (quotes, backslashes and control characters escaped). */
static void print_json_text(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_frames [--mode fps|keyframes|scene] [--fps F] [--max-dim N] "
            "[--quality Q] [--scene-threshold T] [--threads N] [--cores N] [--max-frames N] "
            "[--max-seconds N] [--out DIR] FILE\n");
}

/* The production defaults (config/config_table.c); the options point into them. */
static fq_config_t *g_defaults;

static void free_defaults(void)
{
    fq_config_destroy(g_defaults);
}

int main(int argc, char **argv)
{
    g_defaults = fq_config_new();
    if (!g_defaults) {
        fprintf(stderr, "bench_frames: out of memory\n");
        return 2;
    }
    atexit(free_defaults);
    fq_frames_opts_t opts;
    fq_frames_opts_from_config(&opts, g_defaults);
    opts.max_frames = 100000; /* no caps on what is measured */
    opts.max_seconds = 86400;
    opts.max_decode_ms = 0;
    sink_t sink = {0};
    const char *file = NULL;
    int budget = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--mode") == 0 && v) {
            if (strcmp(v, "fps") == 0) {
                opts.mode = FQ_FRAME_MODE_FPS;
            } else if (strcmp(v, "keyframes") == 0) {
                opts.mode = FQ_FRAME_MODE_KEYFRAMES;
            } else if (strcmp(v, "scene") == 0) {
                opts.mode = FQ_FRAME_MODE_SCENE;
            } else {
                usage();
                return 2;
            }
        } else if (strcmp(a, "--fps") == 0 && v) {
            opts.fps = atof(v);
        } else if (strcmp(a, "--max-dim") == 0 && v) {
            opts.max_dim = atoi(v);
        } else if (strcmp(a, "--quality") == 0 && v) {
            opts.jpeg_quality = atoi(v);
        } else if (strcmp(a, "--scene-threshold") == 0 && v) {
            opts.scene_threshold = atof(v);
        } else if (strcmp(a, "--threads") == 0 && v) {
            opts.threads = atoi(v);
        } else if (strcmp(a, "--cores") == 0 && v) {
            budget = atoi(v);
        } else if (strcmp(a, "--max-frames") == 0 && v) {
            opts.max_frames = atoi(v);
        } else if (strcmp(a, "--max-seconds") == 0 && v) {
            opts.max_seconds = atoll(v);
        } else if (strcmp(a, "--out") == 0 && v) {
            sink.out_dir = v;
        } else if (a[0] != '-' && !file) {
            file = a;
            continue;
        } else {
            usage();
            return 2;
        }
        i++;
    }
    if (!file) {
        usage();
        return 2;
    }
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "bench_frames: %s: %s\n", file, strerror(errno));
        return 2;
    }
    fq_frames_t *fx = fq_frames_new(&opts);
    fq_cores_t *cores = budget > 0 ? fq_cores_new(budget) : NULL;
    if (!fx || (budget > 0 && !cores)) {
        fprintf(stderr, "bench_frames: out of memory\n");
        fq_frames_destroy(fx);
        close(fd);
        return 2;
    }
    fq_frames_set_cores(fx, cores);
    fq_media_info_t info;
    fq_error_t *err = NULL;
    if (fq_cores_acquire(cores, NULL) == 0) { /* as fq_pipeline_process does */
        err = fq_frames_extract(fx, fd, on_frame, &sink, &info);
        fq_cores_release(cores, 1);
    }
    int rc = 0;
    if (err) {
        printf("{\"error\":\"");
        print_json_text(fq_error_message(err));
        printf("\",\"stage\":\"%s\",\"class\":\"%s\",\"frames\":%d,\"decoded\":%lld}\n",
               fq_stage_name(fq_error_stage(err)), fq_class_name(fq_error_class(err)),
               info.frame_count, (long long)info.frames_decoded);
        rc = 1;
    } else {
        printf("{\"frames\":%d,\"decoded\":%lld,\"jpeg_bytes\":%lld,\"width\":%d,\"height\":%d,"
               "\"duration_ms\":%lld,\"codec\":\"%s\",\"container\":\"%s\",\"rotation\":%d,"
               "\"src_width\":%d,\"src_height\":%d,\"avg_fps\":%.3f,\"chunks\":%d,"
               "\"chunks_helped\":%d,\"chunk_helpers\":%d}\n",
               info.frame_count, (long long)info.frames_decoded, (long long)sink.bytes, sink.width,
               sink.height, (long long)info.duration_ms, info.codec, info.container, info.rotation,
               info.width, info.height, info.avg_fps, info.chunks, info.chunks_helped,
               info.chunk_helpers);
    }
    fq_error_destroy(err);
    fq_frames_destroy(fx);
    fq_cores_destroy(cores);
    close(fd);
    return rc;
}
