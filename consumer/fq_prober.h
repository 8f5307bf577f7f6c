/* frameq dependency prober: a thread that checks, on a timer, the dependencies every item needs
 * (PostgreSQL, the frame store and source on S3, the Kafka cluster) and publishes the verdict to
 * the consume loop. Readiness comes from these answers, not from message flow (DESIGN §3): an
 * idle worker whose database went away turns not-ready, and a worker paused by an outage turns
 * ready again within one probe interval of the dependency's return, whether or not a message
 * arrives. The probes run off the loop's thread, so a hanging dependency never stalls it. */
#ifndef FQ_PROBER_H
#define FQ_PROBER_H

#include <stdbool.h>
#include <stdint.h>

#include "fq_error.h"
#include "fq_config.h"

typedef struct fq_prober fq_prober_t;

/** One probe of all dependencies: NULL when every one answered, else the first failure
 *  (an outage-classed error naming the dependency). Runs on the prober's thread. */
typedef fq_error_t *(*fq_probe_fn)(void *ctx);

/** What the prober last saw. */
typedef struct fq_probe_result {
    uint64_t seq;    /**< increases with every completed probe; 0 = none yet */
    int64_t at_mono; /**< when that probe started (fq_time_mono_ms) */
    bool ok;
    char reason[512]; /**< the failure, when !ok */
} fq_probe_result_t;

/** @brief Starts the thread: probes every idle_ms while healthy, every fast_ms after a
 *  failure or an fq_prober_hurry(). NULL when the thread cannot start. */
fq_prober_t *fq_prober_start(fq_probe_fn probe, void *ctx, int idle_ms, int fast_ms) FQ_WARN_UNUSED;

/** @brief Asks for a probe now (an outage began); later ones follow the usual intervals. */
void fq_prober_hurry(fq_prober_t *p);

/** @brief Copies the latest result. */
void fq_prober_result(fq_prober_t *p, fq_probe_result_t *out);

/** @brief Stops and joins the thread (waits for a probe under way); NULL-safe. */
void fq_prober_stop(fq_prober_t *p);

#endif
