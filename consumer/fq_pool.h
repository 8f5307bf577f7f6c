/* frameq item pool: WORKER_CONCURRENCY threads, each with its own fq_pipeline_t, taking jobs
 * from one queue in the order they were submitted (the items of several messages). The consume
 * loop submits jobs, waits for any of them to finish and reads which did, so it keeps serving
 * Kafka (heartbeats, rebalances) while video work runs. */
#ifndef FQ_POOL_H
#define FQ_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "fq_config.h"
#include "fq_item.h"
#include "fq_pipeline.h"

typedef struct fq_pool fq_pool_t;

/** One item to run. Filled by the caller (item, attempt); the pool fills the rest. A submitted
 *  job belongs to the pool until finished reads true. */
typedef struct fq_pool_job {
    const fq_item_t *item; /**< not owned; must outlive the job */
    int attempt;
    fq_error_t *err; /**< result: NULL when out is valid */
    fq_outcome_t out;
    double ms;                 /**< wall time of fq_pipeline_process */
    int64_t started_mono;      /**< when a thread took it (ms, monotonic) */
    atomic_bool finished;      /**< results above are valid once true */
    void *owner;               /**< the caller's, untouched (e.g. the job's message) */
    const atomic_int *cancel;  /**< the pool's private copy of the submit argument */
    struct fq_pool_job *qnext; /**< the pool's queue */
} fq_pool_job_t;

/** Runs one item in place of fq_pipeline_process (tests of the worker core); thread-safe. */
typedef fq_error_t *(*fq_pool_process_fn)(void *ctx, const fq_item_t *item, int attempt,
                                          const atomic_int *cancel, fq_outcome_t *out);

/** Called on the pool thread as a job starts (before any of its work); thread-safe. */
typedef void (*fq_pool_start_fn)(void *ctx, const fq_pool_job_t *job);

/** @brief Starts threads, each with fq_pipeline_new(cfg, with_db). NULL with errstr. */
fq_pool_t *fq_pool_new(const fq_config_t *cfg, int threads, bool with_db, char *errstr,
                       size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Starts threads that run process(ctx, ...) for each item instead of a pipeline. */
fq_pool_t *fq_pool_new_with(int threads, fq_pool_process_fn process, void *ctx, char *errstr,
                            size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Sets the start hook (before the first submit). */
void fq_pool_on_start(fq_pool_t *pool, fq_pool_start_fn fn, void *ctx);

/** @brief Joins the threads (after the current jobs finish) and frees; NULL-safe. */
void fq_pool_destroy(fq_pool_t *pool);

/** @brief Queues jobs[0..n) behind those already queued. cancel is the pipeline's cancel flag
 *  for these jobs (may be NULL); a job whose flag is set before a thread takes it finishes at
 *  once with a "cancelled" error. */
void fq_pool_submit(fq_pool_t *pool, fq_pool_job_t *jobs, size_t n, const atomic_int *cancel);

/** @brief Waits up to timeout_ms until a job finishes that no earlier call has seen finish;
 *  true when at least one did (read each job's finished flag to know which). */
bool fq_pool_wait(fq_pool_t *pool, int timeout_ms) FQ_WARN_UNUSED;

/** @brief Jobs queued or running. */
size_t fq_pool_pending(fq_pool_t *pool);

/** @brief Jobs queued and not taken by a thread yet. */
size_t fq_pool_queued(fq_pool_t *pool);

/** @brief The number of threads. */
int fq_pool_threads(const fq_pool_t *pool);

#endif
