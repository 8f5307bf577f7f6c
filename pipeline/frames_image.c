/* Frame extraction output (frames_internal.h): scale to fit max_dim (display aspect kept),
 * rotate upright, encode as JPEG with libavcodec's mjpeg, hand to the callback. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>

#include "fq_log.h"
#include "frames_internal.h"

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
        frames_av_err_text(ret, text, sizeof(text));
        fq_error_t *err =
            fq_error_new(FQ_STAGE_ENCODE, FQ_CLASS_PERMANENT, "opening mjpeg encoder: %s", text);
        fq_error_set_code(err, FQ_ERROR_DOMAIN_AV, ret);
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

/* Limited-range sources must be expanded to JPEG's full range. */
static void set_full_range(struct SwsContext *sws, const AVFrame *src)
{
    int *inv, *tbl, src_range, dst_range, bright, contrast, sat;
    if (sws_getColorspaceDetails(sws, &inv, &src_range, &tbl, &dst_range, &bright, &contrast,
                                 &sat) < 0) {
        return;
    }
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(src->format);
    bool is_j = desc && strncmp(desc->name, "yuvj", 4) == 0;
    int full = src->color_range == AVCOL_RANGE_JPEG || is_j;
    const int *coefs =
        sws_getCoefficients(src->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709 : SWS_CS_DEFAULT);
    sws_setColorspaceDetails(sws, coefs, full, tbl, 1, bright, contrast, sat);
}

/* Encodes out into fx->jpeg with the open encoder. NULL or the error. */
static fq_error_t *encode_jpeg(fq_frames_t *fx, AVFrame *out)
{
    fq_error_t *err = NULL;
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
        frames_av_err_text(ret, text, sizeof(text));
        err = fq_error_new(FQ_STAGE_ENCODE,
                           ret == AVERROR(ENOMEM) ? FQ_CLASS_RETRIABLE : FQ_CLASS_PERMANENT,
                           "mjpeg encoding failed: %s", text);
        fq_error_set_code(err, FQ_ERROR_DOMAIN_AV, ret);
    }
    return err;
}

/* Scales src to fit max_dim at its display aspect, rotates it upright and encodes it into
 * fx->jpeg. */
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
    /* One context while the input and output stay the same. Not sws_getCachedContext: it
     * compares the format asked for (YUVJ420P) with the one the context keeps (YUV420P with
     * the full range), so it would build a new context for every frame. */
    sws_key_t key = {src->width,      src->height, src->format, src->color_range,
                     src->colorspace, sw,          sh};
    if (!fx->sws || memcmp(&key, &fx->sws_key, sizeof(key)) != 0) {
        sws_freeContext(fx->sws);
        fx->sws = sws_getContext(src->width, src->height, src->format, sw, sh, AV_PIX_FMT_YUVJ420P,
                                 SWS_BICUBIC, NULL, NULL, NULL);
        if (!fx->sws) {
            err = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                               "cannot convert pixel format %s (%dx%d)",
                               av_get_pix_fmt_name(src->format), src->width, src->height);
            goto done;
        }
        fx->sws_key = key;
        set_full_range(fx->sws, src);
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
    err = encode_jpeg(fx, out);
done:
    return err;
}

/* Hands one chosen frame to the callback. serial identifies the decoded frame, so a frame
 * shown at several fps targets is encoded once. */
fq_error_t *frames_deliver(run_t *r, fq_frame_t *out)
{
    const fq_frames_opts_t *o = &r->fx->opts;
    if (frames_interrupt_cb(r)) {
        return frames_timeout_error(r); /* cancelled (or out of time): hand over nothing more */
    }
    if (o->max_frames > 0 && r->emitted >= o->max_frames) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT,
                            "more than %d frames would be extracted, limit is %d", o->max_frames,
                            o->max_frames);
    }
    out->index = r->emitted++;
    return r->cb(r->opaque, out);
}

fq_error_t *frames_emit(run_t *r, const AVFrame *frame, int64_t serial, int64_t pts_ms)
{
    fq_frames_t *fx = r->fx;
    fq_error_t *err = NULL;
    if (serial != r->jpeg_serial || !fx->jpeg->data) {
        if ((err = encode_frame(r, frame))) {
            return err;
        }
        r->jpeg_serial = serial;
    }
    fq_frame_t out = {
        .pts_ms = pts_ms,
        .width = fx->enc->width,
        .height = fx->enc->height,
        .jpeg = fx->jpeg->data,
        .size = (size_t)fx->jpeg->size,
    };
    return frames_deliver(r, &out);
}
