/* Frame extraction input (frames_internal.h): an AVIOContext over pread, so the fd's own
 * offset is never touched; demuxers only from ALLOWED_CONTAINERS, tried in turn, never
 * opening other files or URLs; the video stream's decoder only from ALLOWED_CODECS; caps and
 * the deadline through the interrupt callback. */
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
#include "frames_internal.h"

/* Clips shorter than this decode on one thread from the start (see frames_open_input). */
#define LEND_AT_OPEN_MIN_MS 3000

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
int frames_interrupt_cb(void *opaque)
{
    run_t *r = opaque;
    if (r->deadline_ms && fq_time_mono_ms() > r->deadline_ms) {
        r->timed_out = true;
    }
    if (r->fx->cancel && atomic_load(r->fx->cancel)) {
        r->timed_out = r->cancelled = true;
    }
    return r->timed_out;
}

fq_error_t *frames_timeout_error(const run_t *r)
{
    if (r->cancelled) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_OUTAGE, "cancelled while decoding");
    }
    return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                        "decoding took longer than MAX_DECODE_SECONDS (%lld s): %lld frames "
                        "decoded",
                        (long long)((r->fx->opts.max_decode_ms + 999) / 1000),
                        (long long)r->decoded);
}

void frames_av_err_text(int code, char *buf, size_t size)
{
    if (av_strerror(code, buf, size) < 0) {
        snprintf(buf, size, "error %d", code);
    }
    if (buf[0]) {
        buf[0] = (char)tolower((unsigned char)buf[0]);
    }
}

fq_error_t *frames_decode_error(int code, const char *what)
{
    char text[128];
    frames_av_err_text(code, text, sizeof(text));
    fq_error_t *err = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT, "%s: %s", what, text);
    fq_error_set_code(err, FQ_ERROR_DOMAIN_AV, code);
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
    return frames_decode_error(last, "not a readable video");
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
        r->fmt->interrupt_callback = (AVIOInterruptCB){frames_interrupt_cb, r};
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
        err = frames_timeout_error(r);
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

/* fstat and the AVIOContext over pread. */
static fq_error_t *open_avio(run_t *r)
{
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
    return NULL;
}

/* Refuses a declared size over the cap before any frame is decoded, then probes the streams
 * (which opens decoders: only allowed ones, through codec_whitelist, each capped). */
static fq_error_t *probe_streams(run_t *r)
{
    fq_error_t *err = NULL;
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
    int ret = avformat_find_stream_info(r->fmt, sopts);
    for (unsigned i = 0; i < nsopts; i++) {
        av_dict_free(&sopts[i]);
    }
    av_freep(&sopts);
    if (ret < 0) {
        return frames_decode_error(ret, "cannot read stream information");
    }
    return NULL;
}

/* The best video stream and its decoder, which must be allowed; sets r->vidx and r->st. */
static fq_error_t *choose_video_stream(run_t *r, const AVCodec **codec_out)
{
    fq_error_t *err = NULL;
    const AVCodec *codec = NULL;
    int ret = av_find_best_stream(r->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
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
    *codec_out = codec;
    return NULL;
}

/* Discards the other streams; the time base, start, frame duration, rotation, container
 * duration and the NAL length size the fps planner needs. */
static void stream_timing(run_t *r)
{
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
}

/* The video decoder, capped (max_pixels, codec_whitelist) and threaded. */
fq_error_t *frames_open_decoder(run_t *r, const AVCodec *codec, int extra_cores)
{
    avcodec_free_context(&r->dec);
    r->dec = avcodec_alloc_context3(codec);
    if (!r->dec) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    int ret = avcodec_parameters_to_context(r->dec, r->st->codecpar);
    if (ret < 0) {
        return frames_decode_error(ret, "decoder parameters");
    }
    r->dec->pkt_timebase = r->st->time_base;
    r->dec->max_pixels = r->fx->opts.max_pixels;
    r->dec->codec_whitelist = av_strdup(r->fx->decoders);
    if (!r->dec->codec_whitelist) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    /* With a budget, the caller holds one core and extra_cores borrowed ones; else the
     * configured count (0 = FFmpeg's automatic choice). thread_count is read by open only. */
    r->dec->thread_count = r->fx->cores              ? 1 + extra_cores
                           : r->fx->opts.threads > 0 ? r->fx->opts.threads
                                                     : 0;
    r->dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    ret = avcodec_open2(r->dec, codec, NULL);
    if (ret < 0) {
        return frames_decode_error(ret, "cannot open the video decoder");
    }

    return NULL;
}

/* What fq_frames_extract reports about the input (fq_media_info_t), from the open stream. */
static void fill_info(run_t *r, const AVCodec *codec)
{
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
}

fq_error_t *frames_open_input(run_t *r)
{
    fq_error_t *err = NULL;
    const AVCodec *codec = NULL;
    if ((err = open_avio(r)) || (err = open_allowed_demuxer(r)) || (err = probe_streams(r)) ||
        (err = choose_video_stream(r, &codec))) {
        return err;
    }
    stream_timing(r);
    /* Idle cores of the budget go to this item's decoder from the start — unless the clip is
     * short: frame threads cost more to start than they save on a clip that decodes in a few
     * milliseconds (measured on one-frame clips: the pipeline alone fell from 475 to 323
     * items/s with lending at every open). A short clip may still borrow at a keyframe. */
    int max_extra = fq_cores_total(r->fx->cores) - 1;
    if (r->container_ms < LEND_AT_OPEN_MIN_MS)
        max_extra = 0;
    r->extra_cores =
        fq_cores_borrow(r->fx->cores, max_extra < MAX_THREADS - 1 ? max_extra : MAX_THREADS - 1);
    if ((err = frames_open_decoder(r, codec, r->extra_cores))) {
        return err;
    }
    fill_info(r, codec);
    return NULL;
}
