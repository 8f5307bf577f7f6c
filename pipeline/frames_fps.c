/* Frame extraction decoding (frames_internal.h). fps mode decodes less: packets are read
 * ahead so each frame's presentation successor is known; a non-reference frame whose
 * successor falls into the same output bucket can never be shown and is skipped
 * (AVDISCARD_NONREF); when the keyframe before the next target lies ahead, we seek to it
 * (bounded by SEEK_MAX, verified, stepped back on a bad index). keyframes and scene modes
 * decode every packet. */
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

void frames_queue_clear(run_t *r)
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
    if (n >= r->end_target) {
        return false; /* the next chunk shows it, or a later frame of it */
    }
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

bool frames_packet_is_idr(const run_t *r, const AVPacket *pkt)
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
    if (e->timestamp <= r->max_sent_dts || e->timestamp >= r->end_dts) {
        return false; /* behind us, or the next chunk's */
    }
    double ahead_s = (double)(e->timestamp - r->last_sent_dts) * r->tb;
    if (!(r->frame_dur > 0) || ahead_s < SEEK_MIN_FRAMES * r->frame_dur) {
        return false;
    }
    /* demuxers seek by pts (mov) or dts (others); verify_seek() catches a landing past it */
    *seek_ts = limit;
    return true;
}

const AVPacket *frames_lookahead(run_t *r, int i)
{
    queue_fill(r);
    return i < r->q_len ? r->fx->queue[(r->q_head + i) % LOOKAHEAD] : NULL;
}

const AVPacket *frames_reposition(run_t *r, int64_t ts)
{
    int ret = ts == INT64_MIN
                  ? avformat_seek_file(r->fmt, r->vidx, INT64_MIN, r->start_pts, r->start_pts, 0)
                  : av_seek_frame(r->fmt, r->vidx, ts, AVSEEK_FLAG_BACKWARD);
    avcodec_flush_buffers(r->dec);
    frames_queue_clear(r);
    r->eof = false;
    r->read_error = 0;
    r->verify_bucket = -1;
    if (ret < 0 || read_video_packet(r, r->fx->queue[0]) < 0) {
        r->eof = true; /* read_error stays 0: a chunk's failed start is not damage */
        return NULL;
    }
    r->q_len = 1;
    return r->fx->queue[0];
}

static int do_seek(run_t *r, int64_t ts)
{
    int ret = av_seek_frame(r->fmt, r->vidx, ts, AVSEEK_FLAG_BACKWARD);
    r->seeks++;
    if (ret < 0) {
        return ret;
    }
    avcodec_flush_buffers(r->dec);
    frames_queue_clear(r);
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
        frames_queue_clear(r);
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
        if ((err = frames_handle_frame(r, r->fx->frame))) {
            return err;
        }
    }
}

static fq_error_t *send_packet(run_t *r, AVPacket *pkt, enum AVDiscard discard)
{
    fq_error_t *err = NULL;
    const fq_frames_opts_t *o = &r->fx->opts;
    if (frames_interrupt_cb(r)) {
        return frames_timeout_error(r);
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

/* ---------------------------------------------------------------------------------------- */
/* Decoder threads from the core budget                                                     */

fq_error_t *frames_retune_threads(run_t *r, bool drained)
{
    fq_cores_t *cores = r->fx->cores;
    if (!cores || r->no_retune) {
        return NULL;
    }
    int extra = r->extra_cores;
    if (extra > 0 && fq_cores_wanted(cores)) {
        extra = 0; /* another item waits for a core: give ours back */
    } else {
        int max_extra = fq_cores_total(cores) - 1;
        if (max_extra > MAX_THREADS - 1) {
            max_extra = MAX_THREADS - 1;
        }
        extra += fq_cores_borrow(cores, max_extra - extra);
    }
    if (extra == r->extra_cores) {
        return NULL;
    }
    fq_error_t *err = NULL;
    /* Frames still inside the decoder come out first, as at the end of input: a reopened
     * decoder starts at the keyframe that follows, so nothing is lost or decoded twice. */
    if (!drained && (err = send_packet(r, NULL, AVDISCARD_DEFAULT))) {
        fq_cores_release(cores, extra - r->extra_cores);
        return err;
    }
    const AVCodec *codec = r->dec->codec;
    err = frames_open_decoder(r, codec, extra); /* the old decoder's threads are joined */
    if (extra < r->extra_cores) {
        fq_cores_release(cores, r->extra_cores - extra);
    }
    r->extra_cores = extra;
    return err;
}

/* Leaves out the cut packets before the keyframe at position cut of the lookahead (the rest
 * of a GOP that shows nothing more), then seeks on if the next target is far. Before an IDR
 * the decoder's pipeline keeps running; before another keyframe the decoder finishes what it
 * holds (targets come out) and restarts there. */
static fq_error_t *skip_tail(run_t *r, int cut)
{
    fq_error_t *err = NULL;
    bool drained = false;
    if (!frames_packet_is_idr(r, r->fx->queue[(r->q_head + cut) % LOOKAHEAD])) {
        if ((err = send_packet(r, NULL, AVDISCARD_DEFAULT))) {
            return err;
        }
        avcodec_flush_buffers(r->dec);
        drained = true;
    }
    /* the decoder (re)starts at that keyframe: the place to change its threads */
    if ((err = frames_retune_threads(r, drained))) {
        return err;
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
    return NULL;
}

fq_error_t *frames_decode_fps(run_t *r)
{
    fq_error_t *err = NULL;
    for (;;) {
        queue_fill(r);
        verify_seek(r);
        if (r->q_len == 0) {
            break;
        }
        const AVPacket *head = r->fx->queue[r->q_head];
        if (head->dts != AV_NOPTS_VALUE && head->dts >= r->end_dts) {
            break; /* the next chunk starts here */
        }
        int cut = fps_tail_cut(r);
        if (cut > 0) {
            if ((err = skip_tail(r, cut))) {
                goto done;
            }
            continue;
        }
        AVPacket *pkt = r->fx->queue[r->q_head];
        r->q_head = (r->q_head + 1) % LOOKAHEAD;
        r->q_len--;
        if ((err = frames_check_packet_length(r, pkt))) {
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
            } else if ((err = frames_retune_threads(r, true))) { /* flushed, at a keyframe */
                goto done;
            }
        }
    }
    r->dec->skip_frame = AVDISCARD_DEFAULT;
    if ((err = send_packet(r, NULL, AVDISCARD_DEFAULT))) {
        goto done;
    }
    err = frames_fps_finish(r); /* nothing without a decoded frame */
done:
    return err;
}

fq_error_t *frames_decode_all(run_t *r)
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
        if ((err = frames_check_packet_length(r, r->fx->pkt))) {
            av_packet_unref(r->fx->pkt);
            goto done;
        }
        /* keyframes mode: the decoder would drop the other packets anyway (NONKEY) */
        if (key_only && r->saw_key && !(r->fx->pkt->flags & AV_PKT_FLAG_KEY)) {
            av_packet_unref(r->fx->pkt);
            continue;
        }
        /* Nothing after an IDR picture refers to anything before it: a decoder reopened there
         * (after giving out what it holds) decodes the same frames. */
        if (r->fx->cores && (r->fx->pkt->flags & AV_PKT_FLAG_KEY) && r->decoded > 0 &&
            frames_packet_is_idr(r, r->fx->pkt) && (err = frames_retune_threads(r, false))) {
            av_packet_unref(r->fx->pkt);
            goto done;
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
