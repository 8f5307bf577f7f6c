/* frameq pipeline: the whole work on one item — skip if done, fetch, extract frames,
 * upload, mark done. One call, one outcome (DESIGN §1, §3). */
#ifndef FQ_PIPELINE_H
#define FQ_PIPELINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "fq_config.h"
#include "fq_cores.h"
#include "fq_error.h"
#include "fq_frames.h"
#include "fq_item.h"
#include "fq_store.h"

typedef struct fq_pipeline fq_pipeline_t;

typedef struct fq_outcome {
    bool skipped;         /**< the item was already done: nothing ran */
    int64_t item_id;      /**< extraction_items.id; 0 without a database */
    fq_media_info_t info; /**< duration, size, codec, frame_count */
    char manifest_url[FQ_VIDEO_URL_MAX + 1];
    int64_t source_bytes;
    double ms_fetch, ms_frames, ms_upload, ms_store, ms_total; /**< stage durations */
} fq_outcome_t;

/** @brief A pipeline for one thread: its own fetcher, extractor, uploader and (when
 *  with_db) its own database connection. NULL with errstr on a configuration error. */
fq_pipeline_t *fq_pipeline_new(const fq_config_t *cfg, bool with_db, char *errstr,
                               size_t errstr_size);
void fq_pipeline_destroy(fq_pipeline_t *pl);

/** @brief Shares a core budget with the process's other pipelines: each item holds one core
 *  while it extracts frames, and its decoder borrows the idle ones (fq_frames_set_cores).
 *  NULL = no budget (the decoder uses WORKER_CORES / WORKER_CONCURRENCY threads, as a tool
 *  without a pool expects). Not owned; must outlive the pipeline's calls. */
void fq_pipeline_set_cores(fq_pipeline_t *pl, fq_cores_t *cores);

/** @brief The pipeline's store (NULL without a database), for recording errors. */
fq_store_t *fq_pipeline_store(fq_pipeline_t *pl);

/**
 * @brief Processes one validated item at the given attempt (1 = first try). NULL and *out
 * filled on success (out->skipped when already done), or the error that stopped it: its
 * stage and class decide routing. Does not record the error (the caller routes, then records).
 * Cancellation: when *cancel becomes non-zero the item is abandoned at the next frame (or
 * while it waits for a core of the budget).
 */
fq_error_t *fq_pipeline_process(fq_pipeline_t *pl, const fq_item_t *item, int attempt,
                                const atomic_int *cancel, fq_outcome_t *out) FQ_WARN_UNUSED;

/** @brief The outcome (or error) as one JSON object, for `consumer --process`. malloc'd. */
char *fq_outcome_to_json(const fq_item_t *item, const fq_outcome_t *out, const fq_error_t *err);

#endif
