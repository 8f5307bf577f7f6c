/* frameq worker: the Kafka consume loop (DESIGN §3). Reads batches from KAFKA_TOPIC and single
 * items from KAFKA_RETRY_TOPIC, runs their items on a thread pool, routes failures to the retry
 * topic or the DLQ and commits the source offset in the same Kafka transaction. Dependency
 * outages pause consumption instead of burning attempts. */
#ifndef FQ_WORKER_H
#define FQ_WORKER_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "fq_args.h"
#include "fq_config.h"
#include "fq_metrics.h"
#include "fq_pipeline.h"

typedef enum fq_role {
    FQ_ROLE_ALL = 0, /**< main and retry topics */
    FQ_ROLE_MAIN,
    FQ_ROLE_RETRY,
} fq_role_t;

/** fq_worker_run returns the program's exit codes (fq_args.h): FQ_EXIT_OK a clean stop
 *  (--once: nothing went to the DLQ), FQ_EXIT_DLQ (--once: something went to the DLQ; or a
 *  start-up failure), FQ_EXIT_USAGE a configuration error, FQ_EXIT_FATAL a fatal Kafka error
 *  (fenced producer, ...): restart the process. */
#define FQ_EXIT_DLQ FQ_EXIT_FAILED

/**
 * Stand-ins for the item work, for tests of the worker core without services (e.g. against
 * librdkafka's mock cluster). All NULL in production: the pipeline and PostgreSQL are used.
 * With process set, record_error and probe must be set too.
 */
typedef struct fq_worker_hooks {
    void *ctx;
    /** Runs one item on a pool thread (thread-safe): NULL = done, or the failure. */
    fq_error_t *(*process)(void *ctx, const fq_item_t *item, int attempt, const atomic_int *cancel,
                           fq_outcome_t *out);
    /** Records a routed failure (the loop's thread). */
    fq_error_t *(*record_error)(void *ctx, const fq_item_t *item, int attempt,
                                const fq_error_t *err, const char *status,
                                const fq_store_origin_t *origin);
    /** Probes the dependencies other than Kafka (the prober's thread): NULL = all answer. */
    fq_error_t *(*probe)(void *ctx);
} fq_worker_hooks_t;

typedef struct fq_worker_opts {
    fq_role_t role;
    bool once;                         /**< drain and exit */
    const volatile sig_atomic_t *stop; /**< set by the signal handler */
    fq_metrics_t *metrics;             /**< may be NULL */
    const fq_worker_hooks_t *hooks;    /**< NULL in production */
} fq_worker_opts_t;

typedef struct fq_worker fq_worker_t;

/** @brief "all" / "main" / "retry" -> role. 0, or -1 when unknown. */
int fq_role_parse(const char *name, fq_role_t *role) FQ_WARN_UNUSED;
/** @brief The role's name. */
const char *fq_role_name(fq_role_t role);

/** @brief Declares every consumer metric family in m (NULL-safe). */
void fq_worker_declare_metrics(fq_metrics_t *m);

/** @brief A worker: Kafka clients, store, pool. NULL with errstr on a configuration error. */
fq_worker_t *fq_worker_new(const fq_config_t *cfg, const fq_worker_opts_t *opts, char *errstr,
                           size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Runs until *opts->stop (or, with once, until drained). Returns an FQ_EXIT_* code. */
int fq_worker_run(fq_worker_t *w) FQ_WARN_UNUSED;

/** @brief Closes the consumer, flushes the producer, frees everything; NULL-safe. */
void fq_worker_destroy(fq_worker_t *w);

#endif
