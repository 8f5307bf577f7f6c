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
#include "fq_frames.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>

#include "fq_log.h"

#include <pthread.h>

#define IO_BUFFER_SIZE  (64 * 1024)
#define LOOKAHEAD       24 /* packets read ahead to find each frame's presentation successor */
#define HISTORY         32 /* timestamps of packets already sent, for the same purpose */
#define THUMB_W         64 /* scene mode thumbnail */
#define THUMB_H         36
#define SEEK_MIN_FRAMES 6 /* seek only when it skips at least this many frames */
#define SEEK_RETRIES    4
/* Seeks allowed per extraction: a valid file needs about one per target; a hostile index
 * must not turn seeking into unbounded work. Past it, decoding simply goes on linearly. */
#define SEEK_MAX(max_frames) (2 * (max_frames) + 16)

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

struct fq_frames {
    fq_frames_opts_t opts;
    char *containers; /* ALLOWED_CONTAINERS */
    char *codecs;     /* ALLOWED_CODECS */
    char *decoders;   /* the names of every decoder of an allowed codec (codec_whitelist) */
    AVPacket *pkt;    /* for reading */
    AVPacket *queue[LOOKAHEAD];
    AVFrame *frame;   /* decoder output */
    AVFrame *held;    /* fps mode: the last decoded frame, shown at pending targets */
    AVFrame *scaled;  /* YUVJ420P, before rotation */
    AVFrame *rotated; /* YUVJ420P, upright */
    struct SwsContext *sws;
    struct SwsContext *thumb_sws;
    AVCodecContext *enc; /* mjpeg, reopened only when the output size changes */
    AVPacket *jpeg;      /* the last JPEG, reused when the same frame is shown again */
    uint8_t thumb_cur[THUMB_W * THUMB_H];
    uint8_t thumb_kept[THUMB_W * THUMB_H];
};

/* State of one fq_frames_extract call. */
typedef struct run {
    fq_frames_t *fx;
    fq_frame_cb_t cb;
    void *opaque;
    fq_media_info_t *info;

    /* input */
    int fd;
    int64_t pos, size;
    int io_errno;
    AVIOContext *avio;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVStream *st;
    int vidx;
    int rotation;
    int64_t start_pts;    /* subtracted from every timestamp, in stream time base */
    double tb;            /* seconds per stream tick */
    double frame_dur;     /* seconds, estimated */
    int64_t container_ms; /* -1 when unknown */

    /* packet lookahead (fps mode) */
    int q_head, q_len;
    int64_t hist[HISTORY];
    int hist_len, hist_pos;
    bool eof;
    int read_error;
    int64_t last_sent_dts;
    int64_t max_sent_dts; /* furthest dts ever sent: seeks only ever go beyond it */
    int seeks;            /* seeks done so far (bounded by SEEK_MAX) */
    int64_t max_reorder;  /* max pts - dts seen, stream ticks */
    bool pkt_pts_known;
    int nal_len_size; /* H.264/HEVC: NAL length prefix size (avcC/hvcC); 0 = Annex B */
    bool saw_key;

    /* seeking (fps mode) */
    bool seek_ok;
    int64_t verify_bucket; /* after a seek: the first packet must be in a bucket <= this */
    int64_t seek_ts;       /* the timestamp of that seek, to step back from */
    int seek_retries;

    /* selection */
    int64_t next_target;
    bool have_held;
    int64_t held_serial, frame_serial, jpeg_serial;
    int64_t held_pts_ms;
    int64_t last_end_ms; /* end of the last decoded frame */
    bool have_kept_thumb;

    /* caps on hostile input */
    int64_t deadline_ms; /* monotonic; 0 = none */
    bool timed_out;
    int packets_since_frame;

    /* counters */
    int emitted;
    int64_t decoded;
    int decode_errors;
    int last_decode_error;
} run_t;

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
    size_t len = 0, cap = 256;
    char *out = malloc(cap);
    if (!out) {
        return NULL;
    }
    out[0] = '\0';
    void *it = NULL;
    const AVCodec *c;
    while ((c = av_codec_iterate(&it))) {
        if (!av_codec_is_decoder(c) || av_match_list(avcodec_get_name(c->id), codecs, ',') <= 0) {
            continue;
        }
        size_t n = strlen(c->name);
        if (len + n + 2 > cap) {
            cap = 2 * (len + n + 2);
            char *grown = realloc(out, cap);
            if (!grown) {
                free(out);
                return NULL;
            }
            out = grown;
        }
        len += (size_t)sprintf(out + len, "%s%s", len ? "," : "", c->name);
    }
    return out;
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
    sws_freeContext(fx->sws);
    sws_freeContext(fx->thumb_sws);
    avcodec_free_context(&fx->enc);
    free(fx->containers);
    free(fx->codecs);
    free(fx->decoders);
    free(fx);
}

/* ---------------------------------------------------------------------------------------- */
/* Input: AVIOContext over pread, so the fd's own offset is never touched                   */

static int io_read(void *opaque, uint8_t *buf, int buf_size)
{
    run_t *r = opaque;
    for (;;) {
        ssize_t n = pread(r->fd, buf, (size_t)buf_size, r->pos);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            r->io_errno = errno;
            return AVERROR(errno);
        }
        if (n == 0) {
            return AVERROR_EOF;
        }
        r->pos += n;
        return (int)n;
    }
}

static int64_t io_seek(void *opaque, int64_t offset, int whence)
{
    run_t *r = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE:
        return r->size;
    case SEEK_SET:
        base = 0;
        break;
    case SEEK_CUR:
        base = r->pos;
        break;
    case SEEK_END:
        base = r->size;
        break;
    default:
        return AVERROR(EINVAL);
    }
    if (base + offset < 0) {
        return AVERROR(EINVAL);
    }
    r->pos = base + offset;
    return r->pos;
}

/* Demuxers must never open other files or URLs (HLS playlists, mov data references). */
static int io_open_refused(struct AVFormatContext *s, AVIOContext **pb, const char *url, int flags,
                           AVDictionary **options)
{
    return AVERROR(EPERM);
}

/* libavformat polls this during blocking work (opening, probing streams, reading): past the
 * MAX_DECODE_SECONDS deadline it aborts with AVERROR_EXIT. */
static int interrupt_cb(void *opaque)
{
    run_t *r = opaque;
    if (r->deadline_ms && fq_time_mono_ms() > r->deadline_ms) {
        r->timed_out = true;
    }
    return r->timed_out;
}

static fq_error_t *timeout_error(const run_t *r)
{
    return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                        "decoding took longer than MAX_DECODE_SECONDS (%lld s): %lld frames "
                        "decoded",
                        (long long)((r->fx->opts.max_decode_ms + 999) / 1000),
                        (long long)r->decoded);
}

static void av_err_text(int code, char *buf, size_t size)
{
    if (av_strerror(code, buf, size) < 0) {
        snprintf(buf, size, "error %d", code);
    }
    if (buf[0]) {
        buf[0] = (char)tolower((unsigned char)buf[0]);
    }
}

static fq_error_t *decode_error(int code, const char *what)
{
    char text[128];
    av_err_text(code, text, sizeof(text));
    fq_error_t *err = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT, "%s: %s", what, text);
    fq_error_set_code(err, code);
    return err;
}

/* ---------------------------------------------------------------------------------------- */
/* Timestamps                                                                               */

static double rel_seconds(const run_t *r, int64_t pts)
{
    return (double)(pts - r->start_pts) * r->tb;
}

/* The fps filter's output tick for a timestamp: round to nearest, halves away from zero. */
static int64_t bucket_of(const run_t *r, double seconds)
{
    return (int64_t)floor(seconds * r->fx->opts.fps + 0.5);
}

static int64_t frame_pts(run_t *r, const AVFrame *frame)
{
    int64_t pts = frame->best_effort_timestamp;
    if (pts == AV_NOPTS_VALUE) {
        pts = frame->pts;
    }
    if (pts == AV_NOPTS_VALUE) {
        /* no timestamps at all: continue from the previous frame */
        pts = r->start_pts + (int64_t)llround((double)r->last_end_ms / 1000.0 / r->tb);
    }
    return pts;
}

static double frame_duration_s(const run_t *r, const AVFrame *frame)
{
    double d = (double)frame->pkt_duration * r->tb;
    return d > 0 ? d : r->frame_dur;
}

/* ---------------------------------------------------------------------------------------- */
/* Output: scale, rotate, encode, callback                                                  */

static fq_error_t *ensure_frame(AVFrame *f, int w, int h)
{
    if (f->data[0] && f->width == w && f->height == h) {
        return NULL;
    }
    av_frame_unref(f);
    f->format = AV_PIX_FMT_YUVJ420P;
    f->width = w;
    f->height = h;
    int ret = av_frame_get_buffer(f, 0);
    if (ret < 0) {
        return fq_error_new(FQ_STAGE_ENCODE, FQ_CLASS_RETRIABLE,
                            "frame buffer %dx%d: out of memory", w, h);
    }
    return NULL;
}

static fq_error_t *ensure_encoder(fq_frames_t *fx, int w, int h)
{
    if (fx->enc && fx->enc->width == w && fx->enc->height == h) {
        return NULL;
    }
    avcodec_free_context(&fx->enc);
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
    if (!codec) {
        return fq_error_new(FQ_STAGE_ENCODE, FQ_CLASS_PERMANENT, "no mjpeg encoder in libavcodec");
    }
    fx->enc = avcodec_alloc_context3(codec);
    if (!fx->enc) {
        return fq_error_new(FQ_STAGE_ENCODE, FQ_CLASS_RETRIABLE, "mjpeg encoder: out of memory");
    }
    fx->enc->width = w;
    fx->enc->height = h;
    fx->enc->pix_fmt = AV_PIX_FMT_YUVJ420P;
    fx->enc->color_range = AVCOL_RANGE_JPEG;
    fx->enc->time_base = (AVRational){1, 25};
    fx->enc->thread_count = 1;
    /* fixed quantiser, like `-q:v N` */
    fx->enc->flags |= AV_CODEC_FLAG_QSCALE;
    fx->enc->global_quality = FF_QP2LAMBDA * fx->opts.jpeg_quality;
    int ret = avcodec_open2(fx->enc, codec, NULL);
    if (ret < 0) {
        avcodec_free_context(&fx->enc);
        char text[128];
        av_err_text(ret, text, sizeof(text));
        fq_error_t *err =
            fq_error_new(FQ_STAGE_ENCODE, FQ_CLASS_PERMANENT, "opening mjpeg encoder: %s", text);
        fq_error_set_code(err, ret);
        return err;
    }
    return NULL;
}

/* Copies src (sw x sh) into dst rotated clockwise by rotation degrees, plane by plane. */
static void rotate_planes(const AVFrame *src, AVFrame *dst, int rotation)
{
    for (int p = 0; p < 3; p++) {
        int sw = p ? src->width / 2 : src->width;
        int sh = p ? src->height / 2 : src->height;
        const uint8_t *s = src->data[p];
        int sls = src->linesize[p];
        uint8_t *d = dst->data[p];
        int dls = dst->linesize[p];
        if (rotation == 90) {
            /* dst(x, y) = src(y, sh - 1 - x); dst is sh wide, sw high */
            for (int y = 0; y < sw; y++) {
                uint8_t *row = d + (ptrdiff_t)y * dls;
                for (int x = 0; x < sh; x++) {
                    row[x] = s[(ptrdiff_t)(sh - 1 - x) * sls + y];
                }
            }
        } else if (rotation == 270) {
            /* dst(x, y) = src(sw - 1 - y, x) */
            for (int y = 0; y < sw; y++) {
                uint8_t *row = d + (ptrdiff_t)y * dls;
                for (int x = 0; x < sh; x++) {
                    row[x] = s[(ptrdiff_t)x * sls + (sw - 1 - y)];
                }
            }
        } else { /* 180 */
            for (int y = 0; y < sh; y++) {
                uint8_t *row = d + (ptrdiff_t)y * dls;
                const uint8_t *srow = s + (ptrdiff_t)(sh - 1 - y) * sls;
                for (int x = 0; x < sw; x++) {
                    row[x] = srow[sw - 1 - x];
                }
            }
        }
    }
}

static fq_error_t *encode_frame(run_t *r, const AVFrame *src)
{
    fq_frames_t *fx = r->fx;
    fq_error_t *err = NULL;

    /* display size: sample aspect ratio applied, then rotation */
    AVRational sar = av_guess_sample_aspect_ratio(r->fmt, r->st, (AVFrame *)src);
    double disp_w = src->width;
    if (sar.num > 0 && sar.den > 0) {
        disp_w = disp_w * sar.num / sar.den;
    }
    int dw = (int)lrint(disp_w), dh = src->height;
    bool quarter = r->rotation == 90 || r->rotation == 270;
    int out_w, out_h;
    if (quarter) {
        fq_frames_fit(dh, dw, fx->opts.max_dim, &out_w, &out_h);
    } else {
        fq_frames_fit(dw, dh, fx->opts.max_dim, &out_w, &out_h);
    }
    int sw = quarter ? out_h : out_w, sh = quarter ? out_w : out_h;

    if ((err = ensure_frame(fx->scaled, sw, sh))) {
        goto done;
    }
    fx->sws = sws_getCachedContext(fx->sws, src->width, src->height, src->format, sw, sh,
                                   AV_PIX_FMT_YUVJ420P, SWS_BICUBIC, NULL, NULL, NULL);
    if (!fx->sws) {
        err = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                           "cannot convert pixel format %s (%dx%d)",
                           av_get_pix_fmt_name(src->format), src->width, src->height);
        goto done;
    }
    {
        /* limited-range sources must be expanded to JPEG's full range */
        int *inv, *tbl, src_range, dst_range, bright, contrast, sat;
        if (sws_getColorspaceDetails(fx->sws, &inv, &src_range, &tbl, &dst_range, &bright,
                                     &contrast, &sat) >= 0) {
            const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(src->format);
            bool is_j = desc && strncmp(desc->name, "yuvj", 4) == 0;
            int full = src->color_range == AVCOL_RANGE_JPEG || is_j;
            const int *coefs = sws_getCoefficients(
                src->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709 : SWS_CS_DEFAULT);
            sws_setColorspaceDetails(fx->sws, coefs, full, tbl, 1, bright, contrast, sat);
        }
    }
    if (av_frame_make_writable(fx->scaled) < 0) {
        err = fq_error_new(FQ_STAGE_ENCODE, FQ_CLASS_RETRIABLE, "frame buffer: out of memory");
        goto done;
    }
    sws_scale(fx->sws, (const uint8_t *const *)src->data, src->linesize, 0, src->height,
              fx->scaled->data, fx->scaled->linesize);

    AVFrame *out = fx->scaled;
    if (r->rotation) {
        if ((err = ensure_frame(fx->rotated, out_w, out_h))) {
            goto done;
        }
        if (av_frame_make_writable(fx->rotated) < 0) {
            err = fq_error_new(FQ_STAGE_ENCODE, FQ_CLASS_RETRIABLE, "frame buffer: out of memory");
            goto done;
        }
        rotate_planes(fx->scaled, fx->rotated, r->rotation);
        out = fx->rotated;
    }

    if ((err = ensure_encoder(fx, out_w, out_h))) {
        goto done;
    }
    out->quality = fx->enc->global_quality;
    /* The encoder outlives a run: a pts restarting at 0 would be refused ("Invalid pts (0) <=
     * last"), so let it number the pictures itself. */
    out->pts = AV_NOPTS_VALUE;
    av_packet_unref(fx->jpeg);
    int ret = avcodec_send_frame(fx->enc, out);
    if (ret >= 0) {
        ret = avcodec_receive_packet(fx->enc, fx->jpeg);
    }
    if (ret < 0) {
        char text[128];
        av_err_text(ret, text, sizeof(text));
        err = fq_error_new(FQ_STAGE_ENCODE,
                           ret == AVERROR(ENOMEM) ? FQ_CLASS_RETRIABLE : FQ_CLASS_PERMANENT,
                           "mjpeg encoding failed: %s", text);
        fq_error_set_code(err, ret);
        goto done;
    }
done:
    return err;
}

/* Hands one chosen frame to the callback. serial identifies the decoded frame, so a frame
 * shown at several fps targets is encoded once. */
static fq_error_t *emit(run_t *r, const AVFrame *frame, int64_t serial, int64_t pts_ms)
{
    fq_frames_t *fx = r->fx;
    fq_error_t *err = NULL;
    if (fx->opts.max_frames > 0 && r->emitted >= fx->opts.max_frames) {
        err = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                           "more than %d frames would be extracted, limit is %d",
                           fx->opts.max_frames, fx->opts.max_frames);
        goto done;
    }
    if (serial != r->jpeg_serial || !fx->jpeg->data) {
        if ((err = encode_frame(r, frame))) {
            goto done;
        }
        r->jpeg_serial = serial;
    }
    fq_frame_t out = {
        .index = r->emitted,
        .pts_ms = pts_ms,
        .width = fx->enc->width,
        .height = fx->enc->height,
        .jpeg = fx->jpeg->data,
        .size = (size_t)fx->jpeg->size,
    };
    r->emitted++;
    err = r->cb(r->opaque, &out);
done:
    return err;
}

/* ---------------------------------------------------------------------------------------- */
/* Selection                                                                                */

/* Scene metric: the mean absolute difference of two 64x36 luma thumbnails, normalised to
 * 0..1 by the luma range (0 = identical, 1 = black against white everywhere). Each thumbnail
 * pixel is the mean of about 4x4 samples spread over its cell of the picture, so the metric
 * ignores noise and compression artefacts and measures changes of content and layout; it is
 * compared with the last KEPT frame, so a slow pan is cut once it has drifted far enough. */
static double thumb_diff(const uint8_t *a, const uint8_t *b, int range)
{
    uint64_t sum = 0;
    for (int i = 0; i < THUMB_W * THUMB_H; i++) {
        sum += (uint64_t)abs((int)a[i] - (int)b[i]);
    }
    double d = (double)sum / ((double)range * THUMB_W * THUMB_H);
    return d > 1.0 ? 1.0 : d;
}

/* Thumbnail straight from an 8-bit luma plane (yuv*, nv12, gray: the common case); false
 * for other layouts, which go through swscale. */
static bool thumb_from_luma(const AVFrame *frame, uint8_t *thumb)
{
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(frame->format);
    if (!desc ||
        (desc->flags & (AV_PIX_FMT_FLAG_RGB | AV_PIX_FMT_FLAG_PAL | AV_PIX_FMT_FLAG_BITSTREAM |
                        AV_PIX_FMT_FLAG_HWACCEL)) ||
        desc->comp[0].plane != 0 || desc->comp[0].depth != 8 || desc->comp[0].step != 1 ||
        desc->comp[0].shift != 0 || frame->width < THUMB_W || frame->height < THUMB_H) {
        return false;
    }
    int w = frame->width, h = frame->height;
    const uint8_t *y0 = frame->data[0] + desc->comp[0].offset;
    int ls = frame->linesize[0];
    for (int cy = 0; cy < THUMB_H; cy++) {
        int ya = cy * h / THUMB_H, yb = (cy + 1) * h / THUMB_H;
        int sy = (yb - ya) / 4 > 1 ? (yb - ya) / 4 : 1;
        for (int cx = 0; cx < THUMB_W; cx++) {
            int xa = cx * w / THUMB_W, xb = (cx + 1) * w / THUMB_W;
            int sx = (xb - xa) / 4 > 1 ? (xb - xa) / 4 : 1;
            unsigned sum = 0, n = 0;
            for (int y = ya + sy / 2; y < yb; y += sy) {
                const uint8_t *row = y0 + (ptrdiff_t)y * ls;
                for (int x = xa + sx / 2; x < xb; x += sx) {
                    sum += row[x];
                    n++;
                }
            }
            thumb[cy * THUMB_W + cx] = (uint8_t)(n ? (sum + n / 2) / n : 0);
        }
    }
    return true;
}

static fq_error_t *scene_frame(run_t *r, const AVFrame *frame, int64_t pts_ms)
{
    fq_frames_t *fx = r->fx;
    int range = 255;
    if (thumb_from_luma(frame, fx->thumb_cur)) {
        const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(frame->format);
        bool full = frame->color_range == AVCOL_RANGE_JPEG ||
                    (desc && strncmp(desc->name, "yuvj", 4) == 0) ||
                    (desc && strncmp(desc->name, "gray", 4) == 0);
        range = full ? 255 : 219; /* limited range: luma 16..235 */
    } else {
        fx->thumb_sws =
            sws_getCachedContext(fx->thumb_sws, frame->width, frame->height, frame->format, THUMB_W,
                                 THUMB_H, AV_PIX_FMT_GRAY8, SWS_AREA, NULL, NULL, NULL);
        if (!fx->thumb_sws) {
            return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                                "cannot convert pixel format %s",
                                av_get_pix_fmt_name(frame->format));
        }
        uint8_t *dst[4] = {fx->thumb_cur, NULL, NULL, NULL};
        int dst_ls[4] = {THUMB_W, 0, 0, 0};
        sws_scale(fx->thumb_sws, (const uint8_t *const *)frame->data, frame->linesize, 0,
                  frame->height, dst, dst_ls);
    }
    if (r->have_kept_thumb &&
        thumb_diff(fx->thumb_cur, fx->thumb_kept, range) <= fx->opts.scene_threshold) {
        return NULL;
    }
    memcpy(fx->thumb_kept, fx->thumb_cur, sizeof(fx->thumb_kept));
    r->have_kept_thumb = true;
    return emit(r, frame, r->frame_serial, pts_ms);
}

/* fps mode, one decoded frame in bucket n: every pending target before n is shown by the
 * held (previous) frame; then this frame becomes the held one. */
static fq_error_t *fps_frame(run_t *r, AVFrame *frame, double rel_s, int64_t pts_ms)
{
    fq_frames_t *fx = r->fx;
    fq_error_t *err = NULL;
    int64_t n = bucket_of(r, rel_s);
    while (r->next_target < n) {
        if (r->have_held) {
            err = emit(r, fx->held, r->held_serial, r->held_pts_ms);
        } else {
            /* the stream starts late: its first frame is the nearest there is */
            err = emit(r, frame, r->frame_serial, pts_ms);
        }
        if (err) {
            return err;
        }
        r->next_target++;
    }
    av_frame_unref(fx->held);
    av_frame_move_ref(fx->held, frame);
    r->have_held = true;
    r->held_serial = r->frame_serial;
    r->held_pts_ms = pts_ms;
    return NULL;
}

static fq_error_t *fps_finish(run_t *r)
{
    fq_error_t *err = NULL;
    if (!r->have_held) {
        return NULL;
    }
    int64_t end_ms = r->last_end_ms;
    int64_t count = (int64_t)fq_frames_fps_targets(r->fx->opts.fps, end_ms, NULL, 0);
    while (r->next_target < count) {
        if ((err = emit(r, r->fx->held, r->held_serial, r->held_pts_ms))) {
            return err;
        }
        r->next_target++;
    }
    return NULL;
}

static fq_error_t *check_length(run_t *r, double rel_s)
{
    int64_t max_s = r->fx->opts.max_seconds;
    if (max_s > 0 && rel_s > (double)max_s) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                            "video is at least %.0f s long, limit is %lld s", floor(rel_s),
                            (long long)max_s);
    }
    return NULL;
}

/* The same check on a packet before it is decoded: catches a container that understates
 * its duration even where frames are skipped (keyframes mode, seeks). */
static fq_error_t *check_packet_length(run_t *r, const AVPacket *pkt)
{
    int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
    if (ts == AV_NOPTS_VALUE) {
        return NULL;
    }
    return check_length(r, rel_seconds(r, ts));
}

static fq_error_t *handle_frame(run_t *r, AVFrame *frame)
{
    fq_error_t *err = NULL;
    r->decoded++;
    r->frame_serial++;
    int64_t pts = frame_pts(r, frame);
    double rel_s = rel_seconds(r, pts);
    int64_t pts_ms = (int64_t)llround(rel_s * 1000.0);
    double end_s = rel_s + frame_duration_s(r, frame);
    int64_t end_ms = (int64_t)llround(end_s * 1000.0);
    if (end_ms > r->last_end_ms) {
        r->last_end_ms = end_ms;
    }
    if ((err = check_length(r, rel_s))) {
        goto done;
    }
    switch (r->fx->opts.mode) {
    case FQ_FRAME_MODE_FPS:
        err = fps_frame(r, frame, rel_s, pts_ms);
        break;
    case FQ_FRAME_MODE_KEYFRAMES:
        err = emit(r, frame, r->frame_serial, pts_ms);
        break;
    case FQ_FRAME_MODE_SCENE:
        err = scene_frame(r, frame, pts_ms);
        break;
    }
done:
    av_frame_unref(frame);
    return err;
}

/* ---------------------------------------------------------------------------------------- */
/* Packets                                                                                  */

/* Next packet of the video stream into pkt: 0, or AVERROR_EOF / an error at the end. */
static int read_video_packet(run_t *r, AVPacket *pkt)
{
    for (;;) {
        int ret = av_read_frame(r->fmt, pkt);
        if (ret < 0) {
            return ret;
        }
        if (pkt->stream_index == r->vidx) {
            if (pkt->pts != AV_NOPTS_VALUE && pkt->dts != AV_NOPTS_VALUE &&
                pkt->pts - pkt->dts > r->max_reorder) {
                r->max_reorder = pkt->pts - pkt->dts;
            }
            if (pkt->pts == AV_NOPTS_VALUE) {
                r->pkt_pts_known = false;
            }
            if (pkt->flags & AV_PKT_FLAG_KEY) {
                r->saw_key = true;
            }
            return 0;
        }
        av_packet_unref(pkt);
    }
}

static void queue_clear(run_t *r)
{
    while (r->q_len > 0) {
        av_packet_unref(r->fx->queue[r->q_head]);
        r->q_head = (r->q_head + 1) % LOOKAHEAD;
        r->q_len--;
    }
    r->q_head = 0;
    r->hist_len = 0;
    r->hist_pos = 0;
}

static void queue_fill(run_t *r)
{
    while (!r->eof && r->q_len < LOOKAHEAD) {
        AVPacket *slot = r->fx->queue[(r->q_head + r->q_len) % LOOKAHEAD];
        int ret = read_video_packet(r, slot);
        if (ret < 0) {
            r->eof = true;
            if (ret != AVERROR_EOF) {
                r->read_error = ret;
            }
            break;
        }
        r->q_len++;
    }
}

static void history_add(run_t *r, int64_t pts)
{
    r->hist[r->hist_pos] = pts;
    r->hist_pos = (r->hist_pos + 1) % HISTORY;
    if (r->hist_len < HISTORY) {
        r->hist_len++;
    }
}

/* fps mode: can the frame of this packet be shown at a pending target? It can unless its
 * presentation successor (the smallest later pts among packets around it) falls into the
 * same output tick, or no pending target lies at or after its tick. Unknown -> yes. */
static bool fps_packet_needed(const run_t *r, const AVPacket *pkt)
{
    if (pkt->pts == AV_NOPTS_VALUE || !r->pkt_pts_known) {
        return true;
    }
    int64_t succ = INT64_MAX;
    for (int i = 0; i < r->q_len; i++) {
        const AVPacket *q = r->fx->queue[(r->q_head + i) % LOOKAHEAD];
        if (q->pts != AV_NOPTS_VALUE && q->pts > pkt->pts && q->pts < succ) {
            succ = q->pts;
        }
    }
    for (int i = 0; i < r->hist_len; i++) {
        if (r->hist[i] > pkt->pts && r->hist[i] < succ) {
            succ = r->hist[i];
        }
    }
    if (succ == INT64_MAX) {
        return true;
    }
    int64_t n = bucket_of(r, rel_seconds(r, pkt->pts));
    int64_t n_succ = bucket_of(r, rel_seconds(r, succ));
    int64_t first = n > r->next_target ? n : r->next_target;
    return n_succ > first;
}

/* What the NAL units of an H.264/HEVC packet say about its picture. */
typedef struct nal_info {
    bool idr;        /* an IDR picture (H.264 type 5, HEVC IDR_W_RADL/IDR_N_LP) */
    bool disposable; /* no picture refers to it (H.264 nal_ref_idc 0, HEVC sub-layer non-ref) */
} nal_info_t;

static bool packet_nal_info(const run_t *r, const AVPacket *pkt, nal_info_t *ni)
{
    enum AVCodecID id = r->st->codecpar->codec_id;
    if (id != AV_CODEC_ID_H264 && id != AV_CODEC_ID_HEVC) {
        return false;
    }
    bool vcl = false, idr = false, ref = false;
    const uint8_t *p = pkt->data, *end = pkt->data + pkt->size;
    while (p < end) {
        const uint8_t *nal;
        size_t len;
        if (r->nal_len_size > 0) {
            if (end - p < r->nal_len_size) {
                return false;
            }
            len = 0;
            for (int i = 0; i < r->nal_len_size; i++) {
                len = (len << 8) | p[i];
            }
            nal = p + r->nal_len_size;
            if (len < 2 || len > (size_t)(end - nal)) {
                return false;
            }
            p = nal + len;
        } else {
            /* Annex B: the NAL starts after the next 00 00 01 */
            while (end - p >= 3 && !(p[0] == 0 && p[1] == 0 && p[2] == 1)) {
                p++;
            }
            if (end - p < 5) {
                break;
            }
            nal = p + 3;
            p = nal;
        }
        if (id == AV_CODEC_ID_H264) {
            int type = nal[0] & 0x1f;
            if (type >= 1 && type <= 5) {
                vcl = true;
                idr |= type == 5;
                ref |= (nal[0] >> 5) != 0;
            }
        } else {
            int type = (nal[0] >> 1) & 0x3f;
            if (type < 32) {
                vcl = true;
                idr |= type == 19 || type == 20;
                /* even types below 16 are sub-layer non-reference pictures */
                ref |= type >= 16 || (type & 1);
            }
        }
    }
    if (!vcl) {
        return false;
    }
    ni->idr = idr;
    ni->disposable = !ref;
    return true;
}

/* True when nothing after this keyframe refers to anything before it, so packets before it
 * may be left out without restarting the decoder. */
static bool packet_is_idr(const run_t *r, const AVPacket *pkt)
{
    nal_info_t ni;
    return packet_nal_info(r, pkt, &ni) && ni.idr;
}

/* fps mode: the rest of the current GOP is useless when no packet from the head of the
 * queue up to the next keyframe can be shown (nor any leading picture after that keyframe
 * that shows before it, in open GOPs). Returns the keyframe's position in the queue, or 0.
 * Frames need earlier packets only (in decode order), so cutting the tail is exact. */
static int fps_tail_cut(const run_t *r)
{
    if (!r->pkt_pts_known) {
        return 0;
    }
    int k = 0;
    for (int i = 1; i < r->q_len; i++) {
        if (r->fx->queue[(r->q_head + i) % LOOKAHEAD]->flags & AV_PKT_FLAG_KEY) {
            k = i;
            break;
        }
    }
    /* the leading pictures come right after the keyframe: have them in view */
    if (k == 0 || (r->q_len - k < 8 && !r->eof)) {
        return 0;
    }
    const AVPacket *key = r->fx->queue[(r->q_head + k) % LOOKAHEAD];
    if (key->pts == AV_NOPTS_VALUE) {
        return 0;
    }
    for (int i = 0; i < r->q_len; i++) {
        const AVPacket *q = r->fx->queue[(r->q_head + i) % LOOKAHEAD];
        bool before_key = i < k || (i > k && q->pts != AV_NOPTS_VALUE && q->pts < key->pts);
        if (before_key && fps_packet_needed(r, q)) {
            return 0;
        }
    }
    return k;
}

/* fps mode: after the targets before next_target are out, jump to the keyframe that
 * precedes the next target when it lies well ahead of what was sent to the decoder. */
static bool fps_want_seek(run_t *r, int64_t *seek_ts)
{
    if (!r->seek_ok || !r->pkt_pts_known || r->last_sent_dts == AV_NOPTS_VALUE) {
        return false;
    }
    if (r->seeks >= SEEK_MAX(r->fx->opts.max_frames)) {
        r->seek_ok = false;
        return false;
    }
    /* the target's frame is the last one whose tick is <= next_target: pts < (n + 0.5)/F */
    double limit_s = ((double)r->next_target + 0.5) / r->fx->opts.fps;
    int64_t limit = r->start_pts + (int64_t)ceil(limit_s / r->tb) - 1;
    /* Index entries hold dts; a keyframe whose dts is reorder-delay below the limit has its
     * pts below the limit too, so it is a valid place to start from. */
    const AVIndexEntry *e = avformat_index_get_entry_from_timestamp(r->st, limit - r->max_reorder,
                                                                    AVSEEK_FLAG_BACKWARD);
    if (!e || !(e->flags & AVINDEX_KEYFRAME)) {
        return false;
    }
    /* Forward only, measured from the furthest point ever sent: a corrupt index whose
     * keyframes lie behind it would otherwise send the reader back and forth forever. */
    if (e->timestamp <= r->max_sent_dts) {
        return false;
    }
    double ahead_s = (double)(e->timestamp - r->last_sent_dts) * r->tb;
    if (!(r->frame_dur > 0) || ahead_s < SEEK_MIN_FRAMES * r->frame_dur) {
        return false;
    }
    /* demuxers seek by pts (mov) or dts (others); verify_seek() catches a landing past it */
    *seek_ts = limit;
    return true;
}

static int do_seek(run_t *r, int64_t ts)
{
    int ret = av_seek_frame(r->fmt, r->vidx, ts, AVSEEK_FLAG_BACKWARD);
    r->seeks++;
    if (ret < 0) {
        return ret;
    }
    avcodec_flush_buffers(r->dec);
    queue_clear(r);
    r->eof = false;
    r->read_error = 0;
    r->seek_ts = ts;
    r->verify_bucket = r->next_target;
    return 0;
}

/* After a seek the first packet must be a keyframe whose frame is not past the target
 * (demuxer indexes hold dts, reordering shifts pts). If it is, step back further; after a
 * few failures go back to the start and decode without seeking. */
static void verify_seek(run_t *r)
{
    if (r->verify_bucket < 0 || r->q_len == 0) {
        return;
    }
    const AVPacket *first = r->fx->queue[r->q_head];
    bool bad = !(first->flags & AV_PKT_FLAG_KEY) || first->pts == AV_NOPTS_VALUE ||
               bucket_of(r, rel_seconds(r, first->pts)) > r->verify_bucket;
    int64_t bucket = r->verify_bucket;
    r->verify_bucket = -1;
    if (!bad) {
        r->seek_retries = 0;
        return;
    }
    int64_t back = (first->dts != AV_NOPTS_VALUE ? first->dts : r->seek_ts) - 1;
    if (++r->seek_retries > SEEK_RETRIES || do_seek(r, back) < 0) {
        /* decode from the start without seeking: slower, still right */
        r->seek_ok = false;
        avformat_seek_file(r->fmt, r->vidx, INT64_MIN, r->start_pts, r->start_pts, 0);
        avcodec_flush_buffers(r->dec);
        queue_clear(r);
        r->eof = false;
        r->read_error = 0;
        r->verify_bucket = -1;
        queue_fill(r);
        return;
    }
    r->verify_bucket = bucket;
    queue_fill(r);
    verify_seek(r);
}

/* Receives every frame the decoder has ready. */
static fq_error_t *drain(run_t *r)
{
    fq_error_t *err = NULL;
    for (;;) {
        int ret = avcodec_receive_frame(r->dec, r->fx->frame);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) {
            return NULL;
        }
        if (ret < 0) {
            /* a broken frame: keep going like the ffmpeg CLI does */
            r->decode_errors++;
            r->last_decode_error = ret;
            continue;
        }
        r->packets_since_frame = 0;
        const AVFrame *f = r->fx->frame;
        if ((int64_t)f->width * f->height > r->fx->opts.max_pixels) {
            /* the decoder's max_pixels refuses these; a frame is checked here all the same */
            av_frame_unref(r->fx->frame);
            return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                                "a frame is %dx%d, more than MAX_FRAME_PIXELS (%lld pixels)",
                                f->width, f->height, (long long)r->fx->opts.max_pixels);
        }
        if ((err = handle_frame(r, r->fx->frame))) {
            return err;
        }
    }
}

static fq_error_t *send_packet(run_t *r, AVPacket *pkt, enum AVDiscard discard)
{
    fq_error_t *err = NULL;
    const fq_frames_opts_t *o = &r->fx->opts;
    if (interrupt_cb(r)) {
        return timeout_error(r);
    }
    if (pkt && o->max_packets_without_frame > 0 &&
        ++r->packets_since_frame > o->max_packets_without_frame) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                            "%d video packets in a row without a decoded frame, more than "
                            "MAX_PACKETS_WITHOUT_FRAME (%d)",
                            r->packets_since_frame, o->max_packets_without_frame);
    }
    r->dec->skip_frame = discard;
    int ret = avcodec_send_packet(r->dec, pkt);
    if (ret == AVERROR(EAGAIN)) {
        if ((err = drain(r))) {
            return err;
        }
        ret = avcodec_send_packet(r->dec, pkt);
    }
    if (ret < 0 && ret != AVERROR(EAGAIN) && ret != AVERROR_EOF) {
        r->decode_errors++;
        r->last_decode_error = ret;
    }
    if (pkt) {
        if (pkt->dts != AV_NOPTS_VALUE) {
            r->last_sent_dts = pkt->dts;
            if (r->max_sent_dts == AV_NOPTS_VALUE || pkt->dts > r->max_sent_dts) {
                r->max_sent_dts = pkt->dts;
            }
        }
        if (pkt->pts != AV_NOPTS_VALUE) {
            history_add(r, pkt->pts);
        }
    }
    return drain(r);
}

static fq_error_t *decode_fps(run_t *r)
{
    fq_error_t *err = NULL;
    for (;;) {
        queue_fill(r);
        verify_seek(r);
        if (r->q_len == 0) {
            break;
        }
        int cut = fps_tail_cut(r);
        if (cut > 0) {
            /* Before an IDR the tail is simply left out and the decoder's pipeline keeps
             * running. Before another keyframe the decoder finishes what it holds (targets
             * come out) and restarts there. */
            if (!packet_is_idr(r, r->fx->queue[(r->q_head + cut) % LOOKAHEAD])) {
                if ((err = send_packet(r, NULL, AVDISCARD_DEFAULT))) {
                    goto done;
                }
                avcodec_flush_buffers(r->dec);
            }
            for (int i = 0; i < cut; i++) {
                av_packet_unref(r->fx->queue[r->q_head]);
                r->q_head = (r->q_head + 1) % LOOKAHEAD;
                r->q_len--;
            }
            r->hist_len = r->hist_pos = 0;
            int64_t ts;
            if (fps_want_seek(r, &ts) && do_seek(r, ts) < 0) {
                r->seek_ok = false;
            }
            continue;
        }
        AVPacket *pkt = r->fx->queue[r->q_head];
        r->q_head = (r->q_head + 1) % LOOKAHEAD;
        r->q_len--;
        if ((err = check_packet_length(r, pkt))) {
            av_packet_unref(pkt);
            goto done;
        }
        int64_t target_before = r->next_target;
        bool needed = fps_packet_needed(r, pkt);
        nal_info_t ni;
        if (!needed && packet_nal_info(r, pkt, &ni) && ni.disposable) {
            /* never shown, never referred to: the decoder need not see it at all (the same
             * as AVDISCARD_NONREF, without occupying a decoder thread) */
            if (pkt->pts != AV_NOPTS_VALUE) {
                history_add(r, pkt->pts);
            }
            av_packet_unref(pkt);
            continue;
        }
        err = send_packet(r, pkt, needed ? AVDISCARD_DEFAULT : AVDISCARD_NONREF);
        av_packet_unref(pkt);
        if (err) {
            goto done;
        }
        int64_t ts;
        if (r->next_target != target_before && fps_want_seek(r, &ts)) {
            if (do_seek(r, ts) < 0) {
                r->seek_ok = false;
            }
        }
    }
    r->dec->skip_frame = AVDISCARD_DEFAULT;
    if ((err = send_packet(r, NULL, AVDISCARD_DEFAULT))) {
        goto done;
    }
    if (r->decoded > 0) {
        err = fps_finish(r);
    }
done:
    return err;
}

static fq_error_t *decode_all(run_t *r)
{
    fq_error_t *err = NULL;
    bool key_only = r->fx->opts.mode == FQ_FRAME_MODE_KEYFRAMES;
    for (;;) {
        int ret = read_video_packet(r, r->fx->pkt);
        if (ret < 0) {
            if (ret != AVERROR_EOF) {
                r->read_error = ret;
            }
            break;
        }
        if ((err = check_packet_length(r, r->fx->pkt))) {
            av_packet_unref(r->fx->pkt);
            goto done;
        }
        /* keyframes mode: the decoder would drop the other packets anyway (NONKEY) */
        if (key_only && r->saw_key && !(r->fx->pkt->flags & AV_PKT_FLAG_KEY)) {
            av_packet_unref(r->fx->pkt);
            continue;
        }
        err = send_packet(r, r->fx->pkt, key_only ? AVDISCARD_NONKEY : AVDISCARD_DEFAULT);
        av_packet_unref(r->fx->pkt);
        if (err) {
            goto done;
        }
    }
    err = send_packet(r, NULL, key_only ? AVDISCARD_NONKEY : AVDISCARD_DEFAULT);
done:
    return err;
}

/* ---------------------------------------------------------------------------------------- */
/* Opening                                                                                  */

static int stream_rotation(const AVStream *st)
{
    size_t size = 0;
    const uint8_t *matrix = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (!matrix || size < 9 * sizeof(int32_t)) {
        return 0;
    }
    double theta = av_display_rotation_get((const int32_t *)matrix);
    if (isnan(theta)) {
        return 0;
    }
    /* av_display_rotation_get is counter-clockwise; we want the clockwise correction, and
     * only right angles (like the ffmpeg CLI's autorotate) */
    int cw = (int)lrint(-theta);
    cw = ((cw % 360) + 360) % 360;
    cw = ((cw + 45) / 90 * 90) % 360;
    return cw;
}

static fq_error_t *check_declared_size(const run_t *r, const AVCodecParameters *p)
{
    if ((int64_t)p->width * p->height > r->fx->opts.max_pixels) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                            "video is %dx%d (%lld pixels), more than MAX_FRAME_PIXELS (%lld)",
                            p->width, p->height, (long long)p->width * p->height,
                            (long long)r->fx->opts.max_pixels);
    }
    return NULL;
}

/* After every allowed demuxer refused the input: what it is, for the message. Only the
 * demuxers' scoring functions run, over the first bytes in memory; none opens the input. */
static fq_error_t *refused_container(run_t *r, int last)
{
    uint8_t buf[4096 + AVPROBE_PADDING_SIZE] = {0};
    ssize_t n = pread(r->fd, buf, 4096, 0);
    AVProbeData pd = {.filename = "", .buf = buf, .buf_size = n > 0 ? (int)n : 0};
    int score = 0;
    const AVInputFormat *what = n > 0 ? av_probe_input_format3(&pd, 1, &score) : NULL;
    if (what && score > AVPROBE_SCORE_RETRY &&
        av_match_list(what->name, r->fx->containers, ',') <= 0) {
        char name[32];
        snprintf(name, sizeof(name), "%s", what->name);
        name[strcspn(name, ",")] = '\0';
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                            "container %s is not in ALLOWED_CONTAINERS (%s)", name,
                            r->fx->containers);
    }
    return decode_error(last, "not a readable video");
}

/* Opens the input with the allowed demuxers only, tried in turn (no probing of others):
 * the first that reads a header wins. Demuxers open no other file (io_open refused). */
static fq_error_t *open_allowed_demuxer(run_t *r)
{
    const AVInputFormat *tried[16];
    int ntried = 0, last = AVERROR_INVALIDDATA;
    char *list = strdup(r->fx->containers), *save = NULL;
    if (!list) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    fq_error_t *err = NULL;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        const AVInputFormat *ifmt = av_find_input_format(name);
        bool seen = false;
        for (int i = 0; i < ntried; i++) {
            seen = seen || tried[i] == ifmt; /* "mov" and "mp4" are one demuxer */
        }
        if (!ifmt || seen || ntried == (int)(sizeof(tried) / sizeof(tried[0]))) {
            continue;
        }
        tried[ntried++] = ifmt;
        if (avio_seek(r->avio, 0, SEEK_SET) < 0) {
            break;
        }
        r->fmt = avformat_alloc_context();
        if (!r->fmt) {
            err = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
            goto done;
        }
        r->fmt->pb = r->avio;
        r->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
        r->fmt->io_open = io_open_refused;
        r->fmt->interrupt_callback = (AVIOInterruptCB){interrupt_cb, r};
        r->fmt->format_whitelist = av_strdup(r->fx->containers);
        r->fmt->codec_whitelist = av_strdup(r->fx->decoders);
        int ret = avformat_open_input(&r->fmt, NULL, ifmt, NULL);
        if (ret >= 0) {
            goto done;
        }
        /* avformat_open_input frees the context on failure (not our AVIOContext) */
        last = ret;
        if (r->io_errno || r->timed_out) {
            break;
        }
    }
    if (r->timed_out) {
        err = timeout_error(r);
    } else if (r->io_errno) {
        err = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "reading input: %s",
                           strerror(r->io_errno));
    } else {
        err = refused_container(r, last);
    }
done:
    free(list);
    return err;
}

static fq_error_t *open_input(run_t *r)
{
    fq_error_t *err = NULL;
    int ret;
    struct stat sb;
    if (fstat(r->fd, &sb) < 0) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "input fd: %s", strerror(errno));
    }
    r->size = sb.st_size;
    if (r->size == 0) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT, "input is empty (0 bytes)");
    }
    uint8_t *buf = av_malloc(IO_BUFFER_SIZE);
    if (!buf) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    r->avio = avio_alloc_context(buf, IO_BUFFER_SIZE, 0, r, io_read, NULL, io_seek);
    if (!r->avio) {
        av_free(buf);
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    if ((err = open_allowed_demuxer(r))) {
        return err;
    }
    /* A declared size over the cap is refused before any frame is decoded (stream probing
     * below decodes frames). */
    for (unsigned i = 0; i < r->fmt->nb_streams; i++) {
        const AVCodecParameters *p = r->fmt->streams[i]->codecpar;
        if (p->codec_type == AVMEDIA_TYPE_VIDEO &&
            !(r->fmt->streams[i]->disposition & AV_DISPOSITION_ATTACHED_PIC) &&
            (err = check_declared_size(r, p))) {
            return err;
        }
    }
    /* Stream probing opens decoders: only allowed ones (codec_whitelist), each capped. */
    unsigned nsopts = r->fmt->nb_streams; /* stream probing may add streams */
    AVDictionary **sopts = av_calloc(nsopts ? nsopts : 1, sizeof(*sopts));
    if (!sopts) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    for (unsigned i = 0; i < nsopts; i++) {
        av_dict_set_int(&sopts[i], "max_pixels", r->fx->opts.max_pixels, 0);
    }
    ret = avformat_find_stream_info(r->fmt, sopts);
    for (unsigned i = 0; i < nsopts; i++) {
        av_dict_free(&sopts[i]);
    }
    av_freep(&sopts);
    if (ret < 0) {
        return decode_error(ret, "cannot read stream information");
    }
    const AVCodec *codec = NULL;
    ret = av_find_best_stream(r->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (ret == AVERROR_STREAM_NOT_FOUND) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT, "no video stream in input");
    }
    if (ret < 0 || !codec) {
        const AVCodecDescriptor *d = NULL;
        for (unsigned i = 0; i < r->fmt->nb_streams; i++) {
            if (r->fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) {
                d = avcodec_descriptor_get(r->fmt->streams[i]->codecpar->codec_id);
            }
        }
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT, "no decoder for video codec %s",
                            d ? d->name : "unknown");
    }
    r->vidx = ret;
    r->st = r->fmt->streams[r->vidx];
    if (r->st->disposition & AV_DISPOSITION_ATTACHED_PIC) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                            "no video stream in input (only a cover picture)");
    }
    const char *codec_name = avcodec_get_name(r->st->codecpar->codec_id);
    if (av_match_list(codec_name, r->fx->codecs, ',') <= 0 ||
        av_match_list(codec->name, r->fx->decoders, ',') <= 0) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                            "video codec %s is not in ALLOWED_CODECS (%s)", codec_name,
                            r->fx->codecs);
    }
    if ((err = check_declared_size(r, r->st->codecpar))) {
        return err;
    }
    for (unsigned i = 0; i < r->fmt->nb_streams; i++) {
        if ((int)i != r->vidx) {
            r->fmt->streams[i]->discard = AVDISCARD_ALL;
        }
    }
    r->tb = av_q2d(r->st->time_base);
    r->start_pts = r->st->start_time != AV_NOPTS_VALUE ? r->st->start_time : 0;
    double fr = av_q2d(r->st->avg_frame_rate);
    if (!(fr > 0)) {
        fr = av_q2d(r->st->r_frame_rate);
    }
    r->frame_dur = fr > 0 && fr < 1000 ? 1.0 / fr : 1.0 / 30;
    r->rotation = stream_rotation(r->st);

    if (r->st->duration != AV_NOPTS_VALUE && r->st->duration > 0) {
        r->container_ms = (int64_t)llround((double)r->st->duration * r->tb * 1000.0);
    } else if (r->fmt->duration != AV_NOPTS_VALUE && r->fmt->duration > 0) {
        r->container_ms = r->fmt->duration / (AV_TIME_BASE / 1000);
    } else {
        r->container_ms = -1;
    }

    const AVCodecParameters *par = r->st->codecpar;
    if (par->codec_id == AV_CODEC_ID_H264 && par->extradata_size >= 7 && par->extradata[0] == 1) {
        r->nal_len_size = (par->extradata[4] & 3) + 1; /* avcC */
    } else if (par->codec_id == AV_CODEC_ID_HEVC && par->extradata_size >= 23 &&
               par->extradata[0] == 1) {
        r->nal_len_size = (par->extradata[21] & 3) + 1; /* hvcC */
    }

    r->dec = avcodec_alloc_context3(codec);
    if (!r->dec) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    ret = avcodec_parameters_to_context(r->dec, r->st->codecpar);
    if (ret < 0) {
        return decode_error(ret, "decoder parameters");
    }
    r->dec->pkt_timebase = r->st->time_base;
    r->dec->max_pixels = r->fx->opts.max_pixels;
    r->dec->codec_whitelist = av_strdup(r->fx->decoders);
    if (!r->dec->codec_whitelist) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    r->dec->thread_count = r->fx->opts.threads > 0 ? r->fx->opts.threads : 0;
    r->dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    ret = avcodec_open2(r->dec, codec, NULL);
    if (ret < 0) {
        return decode_error(ret, "cannot open the video decoder");
    }

    fq_media_info_t *info = r->info;
    info->width = r->st->codecpar->width;
    info->height = r->st->codecpar->height;
    info->rotation = r->rotation;
    snprintf(info->codec, sizeof(info->codec), "%s", codec->name);
    snprintf(info->container, sizeof(info->container), "%s", r->fmt->iformat->name);
    info->container[strcspn(info->container, ",")] = '\0';
    info->avg_fps = av_q2d(r->st->avg_frame_rate) > 0 ? av_q2d(r->st->avg_frame_rate) : 0;
    if (r->fmt->duration != AV_NOPTS_VALUE && r->fmt->duration > 0) {
        info->duration_ms = r->fmt->duration / (AV_TIME_BASE / 1000);
    } else if (r->container_ms > 0) {
        info->duration_ms = r->container_ms;
    }
    return err;
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

fq_error_t *fq_frames_extract(fq_frames_t *fx, int fd, fq_frame_cb_t cb, void *opaque,
                              fq_media_info_t *info)
{
    fq_error_t *err = NULL;
    fq_media_info_t local_info;
    if (!info) {
        info = &local_info;
    }
    memset(info, 0, sizeof(*info));
    run_t *r = calloc(1, sizeof(*r));
    if (!r) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
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
    r->jpeg_serial = -1;
    r->held_serial = -1;
    av_frame_unref(fx->held);
    av_packet_unref(fx->jpeg);
    if (fx->opts.max_decode_ms > 0) {
        r->deadline_ms = fq_time_mono_ms() + fx->opts.max_decode_ms;
    }

    if ((err = open_input(r))) {
        if (r->timed_out) { /* an abort by the deadline reads as a generic failure */
            fq_error_destroy(err);
            err = timeout_error(r);
        }
        goto done;
    }
    if ((err = check_limits_up_front(r))) {
        goto done;
    }
    if (fx->opts.mode == FQ_FRAME_MODE_FPS) {
        err = decode_fps(r);
    } else {
        err = decode_all(r);
    }
    if (!err && r->timed_out) {
        err = timeout_error(r); /* reading stopped by the deadline */
    }
    if (err) {
        goto done;
    }
    if (r->io_errno) {
        err = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "reading input: %s",
                           strerror(r->io_errno));
        goto done;
    }
    if (r->decoded == 0) {
        int code = r->last_decode_error ? r->last_decode_error
                   : r->read_error      ? r->read_error
                                        : AVERROR_INVALIDDATA;
        err = decode_error(code, "no frame could be decoded");
        goto done;
    }
    if (r->read_error || r->decode_errors) {
        FQ_DEBUG(NULL, "input damaged: kept %d frames of %lld decoded (%d decode errors)",
                 r->emitted, (long long)r->decoded, r->decode_errors);
    }
    if (info->duration_ms <= 0) {
        info->duration_ms = r->last_end_ms;
    }

done:
    info->frame_count = r->emitted;
    info->frames_decoded = r->decoded;
    avcodec_free_context(&r->dec);
    if (r->fmt) {
        avformat_close_input(&r->fmt);
    }
    if (r->avio) {
        av_freep(&r->avio->buffer);
        avio_context_free(&r->avio);
    }
    queue_clear(r);
    av_frame_unref(fx->frame);
    av_frame_unref(fx->held);
    av_packet_unref(fx->pkt);
    free(r);
    return err;
}
