/* frameq upload: writes an item's frames and its manifest.json to FRAMES_URL_TEMPLATE.
 *
 * s3:// (SigV4 PUT with x-amz-content-sha256), http(s):// (PUT), file:// (directories created,
 * write to a temporary name then rename). Frames are queued as they are produced and sent
 * with bounded concurrency (curl multi); fq_upload_finish waits for all and writes the
 * manifest last, so a manifest means every frame is there. Keys come only from validated
 * fields; re-running an item overwrites the same keys.
 */
#ifndef FQ_UPLOAD_H
#define FQ_UPLOAD_H

#include <stddef.h>

#include "fq_config.h"
#include "fq_error.h"
#include "fq_frames.h"
#include "fq_item.h"

typedef struct fq_upload fq_upload_t;

/** One stored frame, as recorded in extraction_frames. */
typedef struct fq_stored_frame {
    int index;
    int64_t pts_ms;
    int width, height;
    int bytes;
    char *url; /**< where it was written (owned by the upload) */
} fq_stored_frame_t;

/** @brief An uploader (curl multi handle reused across items). One per thread.
 *  NULL with errstr on a configuration problem. */
fq_upload_t *fq_upload_new(const fq_config_t *cfg, char *errstr, size_t errstr_size);
void fq_upload_destroy(fq_upload_t *up);

/** @brief Starts a new item: forgets the previous item's frames. */
fq_error_t *fq_upload_begin(fq_upload_t *up, const fq_item_t *item) FQ_WARN_UNUSED;

/** @brief Copies the frame and queues it for upload (may block while the queue is full).
 *  Has the fq_frame_cb_t shape, so it can be passed straight to fq_frames_extract. */
fq_error_t *fq_upload_frame(void *up, const fq_frame_t *frame) FQ_WARN_UNUSED;

/**
 * @brief Waits for every queued frame, then writes manifest.json next to frame 0 (the
 * template's directory for frames). Errors are stage upload: retriable for network and 5xx,
 * outage when the frame store cannot be reached at all, permanent for 4xx other than
 * 408/429 (a misconfiguration, reported loudly).
 */
fq_error_t *fq_upload_finish(fq_upload_t *up, const fq_media_info_t *info) FQ_WARN_UNUSED;

/** @brief The frames stored by the last successful finish, in index order. */
const fq_stored_frame_t *fq_upload_frames(const fq_upload_t *up, size_t *count);

/** @brief The URL of the last manifest written. */
const char *fq_upload_manifest_url(const fq_upload_t *up);

#endif
