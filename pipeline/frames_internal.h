/* Internals of frame extraction (fq_frames.h), shared by its files:
 *   frames.c         the public API: options, fps targets, fit, the extractor's lifecycle and
 *                    fq_frames_extract, which runs the others in turn
 *   frames_input.c   input: an AVIOContext over pread, the demuxer/decoder whitelists,
 *                    opening the stream and the decoder
 *   frames_fps.c     decoding: the fps planner (packet lookahead, non-reference skipping,
 *                    seeking to the keyframe before the next target) and plain decoding
 *   frames_split.c   fps mode with lent cores: the file cut at clean keyframes into chunks
 *                    that single-threaded decoders on helper threads take in turn
 *   frames_select.c  selection: which decoded frames are shown (fps buckets, scene scoring)
 *   frames_image.c   output: scale, rotate, JPEG-encode, hand to the callback
 * One fq_frames_extract call keeps its state in a run_t.
 */
#ifndef FRAMES_INTERNAL_H
#define FRAMES_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswscale/swscale.h>

#include "fq_error.h"
#include "fq_frames.h"

#define IO_BUFFER_SIZE  (64 * 1024)
#define LOOKAHEAD       24 /* packets read ahead to find each frame's presentation successor */
#define HISTORY         32 /* timestamps of packets already sent, for the same purpose */
#define THUMB_W         64 /* scene mode thumbnail */
#define THUMB_H         36
#define SEEK_MIN_FRAMES 6 /* seek only when it skips at least this many frames */
#define SEEK_RETRIES    4
#define MAX_THREADS     16 /* decoder threads at most (FFmpeg's own cap for automatic counts) */
#define MAX_HELPERS     (MAX_THREADS - 1)
/* Seeks allowed per extraction: a valid file needs about one per target; a hostile index
 * must not turn seeking into unbounded work. Past it, decoding simply goes on linearly. */
#define SEEK_MAX(max_frames) (2 * (max_frames) + 16)

/* What the scaler context was made for (frames_image.c). */
typedef struct sws_key {
    int src_w, src_h, src_format, src_range, src_colorspace;
    int dst_w, dst_h;
} sws_key_t;

struct fq_frames {
    fq_frames_opts_t opts;
    fq_cores_t *cores;        /* NULL = no budget: the decoder uses opts.threads */
    const atomic_int *cancel; /* fq_frames_set_cancel */
    char *containers;         /* ALLOWED_CONTAINERS */
    char *codecs;             /* ALLOWED_CODECS */
    char *decoders;           /* the names of every decoder of an allowed codec (codec_whitelist) */
    AVPacket *pkt;            /* for reading */
    AVPacket *queue[LOOKAHEAD];
    AVFrame *frame;   /* decoder output */
    AVFrame *held;    /* fps mode: the last decoded frame, shown at pending targets */
    AVFrame *scaled;  /* YUVJ420P, before rotation */
    AVFrame *rotated; /* YUVJ420P, upright */
    struct SwsContext *sws;
    sws_key_t sws_key;
    struct SwsContext *thumb_sws;
    AVCodecContext *enc; /* mjpeg, reopened only when the output size changes */
    AVPacket *jpeg;      /* the last JPEG, reused when the same frame is shown again */
    struct fq_frames *helpers[MAX_HELPERS]; /* frames_split.c: one per helper thread, lazily */
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
    int extra_cores; /* borrowed from fx->cores for the decoder's threads beyond the first */
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

    /* one chunk of a split run (frames_split.c); a whole-file run keeps INT64_MAX, false */
    int64_t end_dts;    /* the chunk ends before the packet with this dts */
    int64_t end_target; /* targets from this one on belong to the next chunk */
    bool no_retune;     /* the decoder keeps its thread count (split runs: one thread each) */

    /* caps on hostile input */
    int64_t deadline_ms; /* monotonic; 0 = none */
    bool timed_out;      /* stopped by the interrupt callback: the deadline, or */
    bool cancelled;      /* by fq_frames_set_cancel's flag */
    int packets_since_frame;

    /* counters */
    int emitted;
    int64_t decoded;
    int decode_errors;
    int last_decode_error;
} run_t;

/* ---- timestamps (shared by selection and the fps planner) ---- */

static inline double rel_seconds(const run_t *r, int64_t pts)
{
    return (double)(pts - r->start_pts) * r->tb;
}

/* The fps filter's output tick for a timestamp: round to nearest, halves away from zero. */
static inline int64_t bucket_of(const run_t *r, double seconds)
{
    return (int64_t)floor(seconds * r->fx->opts.fps + 0.5);
}

static inline int64_t frame_pts(run_t *r, const AVFrame *frame)
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

static inline double frame_duration_s(const run_t *r, const AVFrame *frame)
{
    double d = (double)frame->pkt_duration * r->tb;
    return d > 0 ? d : r->frame_dur;
}

/* ---- across files ---- */

/* frames.c */
/** @brief A run's state for one extraction, the extractor's reused buffers reset. NULL on OOM. */
run_t *frames_run_new(fq_frames_t *fx, int fd, fq_frame_cb_t cb, void *opaque,
                      fq_media_info_t *info);
/** @brief Closes the input and decoder (giving back borrowed cores) and frees the run. */
void frames_run_free(run_t *r);

/* frames_input.c */
/** @brief Opens the input (allowed demuxers only), finds the video stream, opens its decoder
 *  (allowed decoders only) and fills r->info. NULL or the error. */
fq_error_t *frames_open_input(run_t *r) FQ_WARN_UNUSED;
/** @brief (Re)opens r->dec for r->st with 1 + extra_cores threads when the extractor has a
 *  core budget (extra_cores already borrowed), else with opts.threads. Frees a previous
 *  decoder first: call it only where the old one holds nothing still needed. */
fq_error_t *frames_open_decoder(run_t *r, const AVCodec *codec, int extra_cores) FQ_WARN_UNUSED;
/** @brief AVIOInterruptCB: nonzero past the MAX_DECODE_SECONDS deadline or once cancelled
 *  (sets r->timed_out, and r->cancelled). */
int frames_interrupt_cb(void *opaque);
/** @brief The error of a run stopped by its deadline (or cancelled). */
fq_error_t *frames_timeout_error(const run_t *r) FQ_WARN_UNUSED;
/** @brief A permanent decode-stage error "what: reason" carrying the AVERROR code. */
fq_error_t *frames_decode_error(int code, const char *what) FQ_WARN_UNUSED;
/** @brief av_strerror into buf. */
void frames_av_err_text(int code, char *buf, size_t size);

/* frames_fps.c */
/** @brief fps mode: decodes only what can be shown, seeking where it saves work. */
fq_error_t *frames_decode_fps(run_t *r) FQ_WARN_UNUSED;
/** @brief keyframes and scene modes: decodes every packet (keyframes: only keyframes). */
fq_error_t *frames_decode_all(run_t *r) FQ_WARN_UNUSED;
/** @brief At a keyframe where decoding starts afresh (drained: the decoder was already
 *  emptied; else it is drained here first): gives borrowed cores back when another item waits
 *  for one, or borrows idle ones; reopens the decoder only when its thread count changes. */
fq_error_t *frames_retune_threads(run_t *r, bool drained) FQ_WARN_UNUSED;
/** @brief Frees the packets read ahead. */
void frames_queue_clear(run_t *r);
/** @brief Seeks to ts (AVSEEK_FLAG_BACKWARD; INT64_MIN = the start of the stream), flushes
 *  the decoder and reads the first video packet there into the lookahead. That packet, or
 *  NULL at the end of input or on an error. Not counted against SEEK_MAX. */
const AVPacket *frames_reposition(run_t *r, int64_t ts);
/** @brief An H.264/HEVC IDR picture: nothing after it refers to anything before it. */
bool frames_packet_is_idr(const run_t *r, const AVPacket *pkt);
/** @brief Packet i of the lookahead (0 = the next to decode), read if need be; NULL past the
 *  end of input or beyond LOOKAHEAD. */
const AVPacket *frames_lookahead(run_t *r, int i);

/* frames_split.c */
/** @brief fps mode with borrowed cores: cuts the input into chunks at clean keyframes and
 *  decodes them on this thread and on helper threads (one per borrowed core, one decoder
 *  thread each), handing the frames to r->cb in order. false when the input cannot be cut
 *  (r untouched but its position: decode it whole); true with *err set otherwise. */
bool frames_decode_split(run_t *r, fq_error_t **err) FQ_WARN_UNUSED;
/** @brief Frees the helpers' extractors (fq_frames_destroy). */
void frames_split_free(fq_frames_t *fx);

/* frames_select.c */
/** @brief One decoded frame: checks the caps, then shows it or not by mode. */
fq_error_t *frames_handle_frame(run_t *r, AVFrame *frame) FQ_WARN_UNUSED;
/** @brief fps mode at the end of input: shows the held frame at the targets still pending. */
fq_error_t *frames_fps_finish(run_t *r) FQ_WARN_UNUSED;
/** @brief The length cap checked on a packet before it is decoded. */
fq_error_t *frames_check_packet_length(run_t *r, const AVPacket *pkt) FQ_WARN_UNUSED;

/* frames_image.c */
/** @brief Hands one frame to r->cb with the next index, unless the run is cancelled or out of
 *  time, or MAX_FRAMES are out already (the error then). */
fq_error_t *frames_deliver(run_t *r, fq_frame_t *out) FQ_WARN_UNUSED;
/** @brief Scales, rotates, encodes and hands one chosen frame to the callback. serial
 *  identifies the decoded frame, so a frame shown at several fps targets is encoded once. */
fq_error_t *frames_emit(run_t *r, const AVFrame *frame, int64_t serial,
                        int64_t pts_ms) FQ_WARN_UNUSED;

#endif
