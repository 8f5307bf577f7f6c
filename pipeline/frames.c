/* frameq frame extraction (fq_frames.h): libavformat over a custom AVIOContext, libavcodec
 * decoding with frame selection by mode, libswscale, mjpeg encoding.
 *
 * fps mode follows what `ffmpeg -vf fps=F` shows: the filter rounds each frame's timestamp
 * to the nearest output tick (n = round(t * F)) and shows, at tick n, the last frame whose
 * rounded tick is <= n. We compute the same tick ("bucket") per frame. Speed comes only from
 * decoding less: a non-reference frame whose presentation successor falls into the same
 * bucket can never be shown, so its packet is sent with skip_frame = AVDISCARD_NONREF; and
 * when the keyframe that precedes the next target lies ahead of what has been read, we seek
 * to it instead of decoding the rest of the current GOP.
 */

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libswscale/swscale.h>

#include "fq_buf.h"
#include "fq_log.h"
#include "frames_internal.h"

/* ---------------------------------------------------------------------------------------- */
/* Public helpers                                                                           */

void fq_frames_opts_from_config(fq_frames_opts_t *opts, const fq_config_t *cfg)
{
    memset(opts, 0, sizeof(*opts));
    opts->mode = cfg->frame_mode;
    opts->fps = cfg->frame_fps;
    opts->max_dim = cfg->frame_max_dim;
    opts->jpeg_quality = cfg->jpeg_quality;
    opts->scene_threshold = cfg->scene_threshold;
    opts->max_frames = cfg->max_frames;
    opts->max_seconds = cfg->max_video_seconds;
    opts->threads = 0;
    opts->allowed_containers = cfg->allowed_containers;
    opts->allowed_codecs = cfg->allowed_codecs;
    opts->max_pixels = cfg->max_frame_pixels;
    opts->max_decode_ms = cfg->max_decode_seconds * 1000;
    opts->max_packets_without_frame = cfg->max_packets_without_frame;
}

/* Target k is at k*1000/fps ms. A tiny tolerance keeps exact multiples exact despite the
 * division in floating point (29.97 fps, k = 2997 is 100000 ms, not 99999.99...). */
#define TARGET_EPS 1e-6

static double target_ms(double fps, int64_t k)
{
    return (double)k * 1000.0 / fps;
}

size_t fq_frames_fps_targets(double fps, int64_t duration_ms, int64_t *out, size_t cap)
{
    if (!(fps > 0) || duration_ms <= 0) {
        return 0;
    }
    double limit = (double)duration_ms - TARGET_EPS;
    double approx = ceil(limit * fps / 1000.0);
    if (approx > (double)SIZE_MAX / 2) {
        approx = (double)SIZE_MAX / 2;
    }
    int64_t count = (int64_t)approx;
    while (count > 0 && target_ms(fps, count - 1) >= limit) {
        count--;
    }
    while (target_ms(fps, count) < limit) {
        count++;
    }
    for (int64_t k = 0; k < count && (size_t)k < cap; k++) {
        out[k] = (int64_t)floor(target_ms(fps, k) + TARGET_EPS);
    }
    return (size_t)count;
}

void fq_frames_fit(int src_w, int src_h, int max_dim, int *out_w, int *out_h)
{
    if (src_w <= 0 || src_h <= 0) {
        *out_w = *out_h = 2;
        return;
    }
    int lng = src_w >= src_h ? src_w : src_h;
    int shrt = src_w >= src_h ? src_h : src_w;
    int lng_out = lng < max_dim ? lng : max_dim;
    lng_out &= ~1;
    if (lng_out < 2) {
        lng_out = 2;
    }
    /* nearest even value of the short side scaled like the long side */
    int shrt_out = (int)(2.0 * floor((double)shrt * lng_out / lng / 2.0 + 0.5));
    if (shrt_out < 2) {
        shrt_out = 2;
    }
    if (shrt_out > lng_out) {
        shrt_out = lng_out;
    }
    *out_w = src_w >= src_h ? lng_out : shrt_out;
    *out_h = src_w >= src_h ? shrt_out : lng_out;
}

/* ---------------------------------------------------------------------------------------- */
/* The extractor                                                                            */

/* FFmpeg's own messages would break the JSON-lines log on stderr: route its warnings and
 * errors through fq_log at debug level (they describe damaged input, which the returned
 * error already reports). The callback is process-wide, installed once. */
static void av_log_to_fq(void *avcl, int level, const char *fmt, va_list vl)
{
    if (level > AV_LOG_WARNING || !fq_log_enabled(FQ_LOG_DEBUG)) {
        return;
    }
    char line[512];
    int print_prefix = 1;
    av_log_format_line2(avcl, level, fmt, vl, line, sizeof(line), &print_prefix);
    line[strcspn(line, "\n")] = '\0';
    fq_log_ctx_t ctx = {.stage = "decode"};
    FQ_DEBUG(&ctx, "ffmpeg: %s", line);
}

static void install_av_log(void)
{
    av_log_set_callback(av_log_to_fq);
}

/* The names of all decoders of the allowed codecs ("h264,libdav1d,av1,..."): the codec
 * whitelist libavformat and libavcodec match decoder names against, while ALLOWED_CODECS
 * names codecs. malloc'd; NULL on OOM. */
static char *allowed_decoders(const char *codecs)
{
    fq_buf_t out = {0};
    void *it = NULL;
    const AVCodec *c;
    while ((c = av_codec_iterate(&it))) {
        if (!av_codec_is_decoder(c) || av_match_list(avcodec_get_name(c->id), codecs, ',') <= 0) {
            continue;
        }
        if (out.len)
            fq_buf_put(&out, ",", 1);
        fq_buf_puts(&out, c->name);
    }
    return fq_buf_take(&out, NULL);
}

fq_frames_t *fq_frames_new(const fq_frames_opts_t *opts)
{
    static pthread_once_t av_log_once = PTHREAD_ONCE_INIT;
    pthread_once(&av_log_once, install_av_log);

    fq_frames_t *fx = calloc(1, sizeof(*fx));
    if (!fx) {
        return NULL;
    }
    fx->opts = *opts;
    if (!(fx->opts.fps > 0)) {
        fx->opts.fps = 1;
    }
    if (fx->opts.max_dim < 2) {
        fx->opts.max_dim = 512;
    }
    if (fx->opts.jpeg_quality < 2 || fx->opts.jpeg_quality > 31) {
        fx->opts.jpeg_quality = 3;
    }
    if (fx->opts.max_pixels <= 0) {
        fx->opts.max_pixels = FQ_FRAMES_DEFAULT_MAX_PIXELS;
    }
    fx->containers = strdup(opts->allowed_containers && *opts->allowed_containers
                                ? opts->allowed_containers
                                : FQ_FRAMES_DEFAULT_CONTAINERS);
    fx->codecs = strdup(opts->allowed_codecs && *opts->allowed_codecs ? opts->allowed_codecs
                                                                      : FQ_FRAMES_DEFAULT_CODECS);
    fx->decoders = fx->codecs ? allowed_decoders(fx->codecs) : NULL;
    fx->opts.allowed_containers = fx->containers;
    fx->opts.allowed_codecs = fx->codecs;
    fx->pkt = av_packet_alloc();
    fx->frame = av_frame_alloc();
    fx->held = av_frame_alloc();
    fx->scaled = av_frame_alloc();
    fx->rotated = av_frame_alloc();
    fx->jpeg = av_packet_alloc();
    bool ok = fx->pkt && fx->frame && fx->held && fx->scaled && fx->rotated && fx->jpeg &&
              fx->containers && fx->codecs && fx->decoders;
    for (int i = 0; i < LOOKAHEAD; i++) {
        fx->queue[i] = av_packet_alloc();
        ok = ok && fx->queue[i];
    }
    if (!ok) {
        fq_frames_destroy(fx);
        return NULL;
    }
    return fx;
}

void fq_frames_destroy(fq_frames_t *fx)
{
    if (!fx) {
        return;
    }
    av_packet_free(&fx->pkt);
    for (int i = 0; i < LOOKAHEAD; i++) {
        av_packet_free(&fx->queue[i]);
    }
    av_frame_free(&fx->frame);
    av_frame_free(&fx->held);
    av_frame_free(&fx->scaled);
    av_frame_free(&fx->rotated);
    av_packet_free(&fx->jpeg);
    frames_split_free(fx);
    sws_freeContext(fx->sws);
    sws_freeContext(fx->thumb_sws);
    avcodec_free_context(&fx->enc);
    free(fx->containers);
    free(fx->codecs);
    free(fx->decoders);
    free(fx);
}

void fq_frames_set_cores(fq_frames_t *fx, fq_cores_t *cores)
{
    fx->cores = cores;
}

void fq_frames_set_cancel(fq_frames_t *fx, const atomic_int *cancel)
{
    fx->cancel = cancel;
}

static fq_error_t *check_limits_up_front(run_t *r)
{
    const fq_frames_opts_t *o = &r->fx->opts;
    int64_t dur_ms = r->info->duration_ms;
    if (o->max_seconds > 0 && dur_ms > o->max_seconds * 1000) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                            "video is %lld s long, limit is %lld s",
                            (long long)((dur_ms + 500) / 1000), (long long)o->max_seconds);
    }
    if (o->mode == FQ_FRAME_MODE_FPS && o->max_frames > 0 && r->container_ms > 0) {
        size_t n = fq_frames_fps_targets(o->fps, r->container_ms, NULL, 0);
        if (n > (size_t)o->max_frames) {
            return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                                "%zu frames would be extracted at %g fps, limit is %d", n, o->fps,
                                o->max_frames);
        }
    }
    return NULL;
}

run_t *frames_run_new(fq_frames_t *fx, int fd, fq_frame_cb_t cb, void *opaque,
                      fq_media_info_t *info)
{
    run_t *r = calloc(1, sizeof(*r));
    if (!r) {
        return NULL;
    }
    r->fx = fx;
    r->cb = cb;
    r->opaque = opaque;
    r->info = info;
    r->fd = fd;
    r->vidx = -1;
    r->last_sent_dts = AV_NOPTS_VALUE;
    r->max_sent_dts = AV_NOPTS_VALUE;
    r->pkt_pts_known = true;
    r->seek_ok = true;
    r->verify_bucket = -1;
    r->end_dts = INT64_MAX;
    r->end_target = INT64_MAX;
    r->jpeg_serial = -1;
    r->held_serial = -1;
    av_frame_unref(fx->held);
    av_packet_unref(fx->jpeg);
    if (fx->opts.max_decode_ms > 0) {
        r->deadline_ms = fq_time_mono_ms() + fx->opts.max_decode_ms;
    }
    return r;
}

/* After decoding without an error: the deadline, a read error, no frame at all; damage that
 * still left frames is only logged. NULL or the error. */
static fq_error_t *run_verdict(run_t *r)
{
    if (r->timed_out) {
        return frames_timeout_error(r); /* reading stopped by the deadline */
    }
    if (r->io_errno) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "reading input: %s",
                            strerror(r->io_errno));
    }
    if (r->decoded == 0) {
        int code = r->last_decode_error ? r->last_decode_error
                   : r->read_error      ? r->read_error
                                        : AVERROR_INVALIDDATA;
        return frames_decode_error(code, "no frame could be decoded");
    }
    if (r->read_error || r->decode_errors) {
        FQ_DEBUG(NULL, "input damaged: kept %d frames of %lld decoded (%d decode errors)",
                 r->emitted, (long long)r->decoded, r->decode_errors);
    }
    if (r->info->duration_ms <= 0) {
        r->info->duration_ms = r->last_end_ms;
    }
    return NULL;
}

void frames_run_free(run_t *r)
{
    fq_frames_t *fx = r->fx;
    avcodec_free_context(&r->dec); /* joins its threads before their cores go back */
    fq_cores_release(fx->cores, r->extra_cores);
    r->extra_cores = 0;
    if (r->fmt) {
        avformat_close_input(&r->fmt);
    }
    if (r->avio) {
        av_freep(&r->avio->buffer);
        avio_context_free(&r->avio);
    }
    frames_queue_clear(r);
    av_frame_unref(fx->frame);
    av_frame_unref(fx->held);
    av_packet_unref(fx->pkt);
    free(r);
}

fq_error_t *fq_frames_extract(fq_frames_t *fx, int fd, fq_frame_cb_t cb, void *opaque,
                              fq_media_info_t *info)
{
    fq_error_t *err = NULL;
    fq_media_info_t local_info;
    if (!info) {
        info = &local_info;
    }
    memset(info, 0, sizeof(*info));
    info->chunks = 1;
    run_t *r = frames_run_new(fx, fd, cb, opaque, info);
    if (!r) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    if ((err = frames_open_input(r))) {
        if (r->timed_out) { /* an abort by the deadline reads as a generic failure */
            fq_error_destroy(err);
            err = frames_timeout_error(r);
        }
    } else if (!(err = check_limits_up_front(r))) {
        if (fx->opts.mode != FQ_FRAME_MODE_FPS) {
            err = frames_decode_all(r);
        } else if (!frames_decode_split(r, &err)) {
            err = frames_decode_fps(r);
        }
        if (!err) {
            err = run_verdict(r);
        }
    }
    info->frame_count = r->emitted;
    info->frames_decoded = r->decoded;
    frames_run_free(r);
    return err;
}
