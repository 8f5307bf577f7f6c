/* Frame extraction selection (frames_internal.h): which decoded frames are shown. fps: the
 * frame shown at each output tick, as `ffmpeg -vf fps=F` does; scene: a frame whose 64x36
 * luma thumbnail differs enough from the last kept one; keyframes: every keyframe. Also the
 * length caps checked on every frame and packet. */
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
    return frames_emit(r, frame, r->frame_serial, pts_ms);
}

/* fps mode, one decoded frame in bucket n: every pending target before n is shown by the
 * held (previous) frame; then this frame becomes the held one. */
static fq_error_t *fps_frame(run_t *r, AVFrame *frame, double rel_s, int64_t pts_ms)
{
    fq_frames_t *fx = r->fx;
    fq_error_t *err = NULL;
    int64_t n = bucket_of(r, rel_s);
    while (r->next_target < n && r->next_target < r->end_target) {
        if (r->have_held) {
            err = frames_emit(r, fx->held, r->held_serial, r->held_pts_ms);
        } else {
            /* the stream starts late: its first frame is the nearest there is */
            err = frames_emit(r, frame, r->frame_serial, pts_ms);
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

fq_error_t *frames_fps_finish(run_t *r)
{
    fq_error_t *err = NULL;
    if (!r->have_held) {
        return NULL;
    }
    /* a chunk shows its held frame up to the next chunk's first target, as that chunk's
     * first frame would have had it shown; the last one up to the end of the stream */
    int64_t count = r->end_target != INT64_MAX
                        ? r->end_target
                        : (int64_t)fq_frames_fps_targets(r->fx->opts.fps, r->last_end_ms, NULL, 0);
    while (r->next_target < count) {
        if ((err = frames_emit(r, r->fx->held, r->held_serial, r->held_pts_ms))) {
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
fq_error_t *frames_check_packet_length(run_t *r, const AVPacket *pkt)
{
    int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
    if (ts == AV_NOPTS_VALUE) {
        return NULL;
    }
    return check_length(r, rel_seconds(r, ts));
}

fq_error_t *frames_handle_frame(run_t *r, AVFrame *frame)
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
        err = frames_emit(r, frame, r->frame_serial, pts_ms);
        break;
    case FQ_FRAME_MODE_SCENE:
        err = scene_frame(r, frame, pts_ms);
        break;
    }
done:
    av_frame_unref(frame);
    return err;
}
