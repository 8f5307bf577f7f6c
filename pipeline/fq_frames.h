/* frameq frame extraction with libavformat / libavcodec / libswscale.
 *
 * Reads a video from a file descriptor (seekable; a custom AVIOContext over pread), picks
 * frames by FRAME_MODE, scales them to fit max_dim keeping the aspect ratio (display aspect
 * and rotation applied, so portrait video comes out upright), encodes each as JPEG with
 * libavcodec's mjpeg and hands it to a callback. Nothing is written to disk here.
 */
#ifndef FQ_FRAMES_H
#define FQ_FRAMES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fq_config.h"
#include "fq_cores.h"
#include "fq_error.h"

typedef struct fq_frames_opts {
    fq_frame_mode_t mode;
    double fps;             /**< FRAME_FPS: fps mode picks the frame shown at k/fps seconds */
    int max_dim;            /**< FRAME_MAX_DIM */
    int jpeg_quality;       /**< JPEG_QUALITY (mjpeg qscale, 2..31) */
    double scene_threshold; /**< SCENE_THRESHOLD (0..1] */
    int max_frames;         /**< MAX_FRAMES: more -> permanent error (stage decode) */
    int64_t max_seconds;    /**< MAX_VIDEO_SECONDS: longer -> permanent error (stage decode) */
    int threads;            /**< decoder threads; 0 = FFmpeg's automatic choice */
    /* The decoder surface (FFmpeg's advice for untrusted media: open only what is needed).
     * Each refusal or cap is a permanent decode error naming what was refused. */
    const char *allowed_containers; /**< ALLOWED_CONTAINERS, demuxer names; NULL = default */
    const char *allowed_codecs;     /**< ALLOWED_CODECS, codec names; NULL = default */
    int64_t max_pixels;             /**< MAX_FRAME_PIXELS, width*height; 0 = 8192*8192 */
    int64_t max_decode_ms;          /**< MAX_DECODE_SECONDS in ms, wall time; 0 = no cap */
    int max_packets_without_frame;  /**< MAX_PACKETS_WITHOUT_FRAME; 0 = no cap */
} fq_frames_opts_t;

#define FQ_FRAMES_DEFAULT_CONTAINERS "mov,mp4,matroska,webm"
#define FQ_FRAMES_DEFAULT_CODECS     "h264,hevc,vp8,vp9,av1,mpeg4"
#define FQ_FRAMES_DEFAULT_MAX_PIXELS (8192LL * 8192)

/** @brief Options from a configuration. */
void fq_frames_opts_from_config(fq_frames_opts_t *opts, const fq_config_t *cfg);

/** One extracted frame. The jpeg buffer is valid only during the callback. */
typedef struct fq_frame {
    int index;         /**< 0, 1, 2, ... in output order */
    int64_t pts_ms;    /**< presentation time from the start of the stream */
    int width, height; /**< of the JPEG */
    const uint8_t *jpeg;
    size_t size;
} fq_frame_t;

/** What was learned about the source. */
typedef struct fq_media_info {
    int64_t duration_ms;
    int width, height;      /**< coded size of the video stream (before rotation) */
    int rotation;           /**< degrees clockwise applied to display it upright: 0/90/180/270 */
    char codec[32];         /**< decoder name, e.g. "h264" */
    char container[32];     /**< e.g. "mov,mp4,m4a,3gp,3g2,mj2" shortened to the first name */
    double avg_fps;         /**< 0 when unknown */
    int frame_count;        /**< frames handed to the callback */
    int64_t frames_decoded; /**< frames the decoder produced (for benchmarks) */
    int chunks;             /**< pieces decoded side by side (lent cores, fps mode); 1 = whole */
    int chunks_helped;      /**< of those, the ones helper threads decoded */
    int chunk_helpers;      /**< helper threads started for them (at the start or later) */
} fq_media_info_t;

/** Called once per chosen frame, in order; a non-NULL return stops extraction and is returned. */
typedef fq_error_t *(*fq_frame_cb_t)(void *opaque, const fq_frame_t *frame);

typedef struct fq_frames fq_frames_t;

/** @brief An extractor whose buffers (packets, frames, scaler, encoder) are reused across
 *  calls, so a worker thread allocates nothing per frame. Not thread-safe: one per thread. */
fq_frames_t *fq_frames_new(const fq_frames_opts_t *opts);
void fq_frames_destroy(fq_frames_t *fx);

/** @brief Lets the decoder use idle cores of a budget shared with other extractors. In fps
 *  mode an H.264/HEVC input with clean keyframes is cut into chunks there, and each borrowed
 *  core runs a helper thread that decodes chunks on one thread (no frame-threading overhead);
 *  a helper takes no new chunk once another item waits for a core. Otherwise the decoder
 *  opens with 1 + fq_cores_borrow() threads (instead of opts.threads) and, at keyframes where
 *  it restarts anyway, gives the extra ones back when another item waits for a core or
 *  borrows more when some are free. The frames are the same either way. The calling thread is
 *  expected to hold one core of the budget itself. NULL = no budget (opts.threads). Not
 *  owned; must outlive the extractor's calls. */
void fq_frames_set_cores(fq_frames_t *fx, fq_cores_t *cores);

/** @brief Extraction stops at the next packet or frame once *cancel is non-zero (on every
 *  thread of a split run): stage decode, class outage, "cancelled while decoding". NULL =
 *  never. Not owned. */
void fq_frames_set_cancel(fq_frames_t *fx, const atomic_int *cancel);

/**
 * @brief Extracts frames from the seekable file fd (not closed). info may be NULL.
 * Errors: stage decode + permanent for input that is not a video (no video stream,
 * undecodable, truncated before any frame, too long, too many frames), a container or codec
 * outside ALLOWED_CONTAINERS / ALLOWED_CODECS (probing considers the allowed demuxers only,
 * demuxers open no other file), a frame over MAX_FRAME_PIXELS, decoding longer than
 * MAX_DECODE_SECONDS, more than MAX_PACKETS_WITHOUT_FRAME packets without a decoded frame;
 * stage encode for a JPEG encoder failure; whatever the callback returns.
 */
fq_error_t *fq_frames_extract(fq_frames_t *fx, int fd, fq_frame_cb_t cb, void *opaque,
                              fq_media_info_t *info) FQ_WARN_UNUSED;

/** @brief The timestamps (ms) fps mode selects for a stream of duration_ms: k*1000/fps for
 *  k = 0,1,... while < duration_ms. Writes at most cap values; returns how many there are. */
size_t fq_frames_fps_targets(double fps, int64_t duration_ms, int64_t *out, size_t cap);

/** @brief Output size fitting max_dim with the aspect ratio kept, even dimensions, >= 2. */
void fq_frames_fit(int src_w, int src_h, int max_dim, int *out_w, int *out_h);

#endif
