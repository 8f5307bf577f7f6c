/* frameq routing of a failed item (DESIGN §2, §3): which topic it goes to and the headers it
 * carries there. Pure functions over an error, an attempt number and the incoming headers, so
 * the whole decision is unit-testable without a broker. */
#ifndef FQ_ROUTE_H
#define FQ_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "fq_error.h"
#include "fq_item.h"

typedef enum fq_route_kind {
    FQ_ROUTE_NONE = 0, /**< no error: nothing to publish */
    FQ_ROUTE_RETRY,    /**< KAFKA_RETRY_TOPIC */
    FQ_ROUTE_DLQ,      /**< KAFKA_DLQ_TOPIC */
    FQ_ROUTE_OUTAGE,   /**< not the item's fault: publish nothing, burn nothing, pause */
} fq_route_kind_t;

typedef struct fq_route {
    fq_route_kind_t kind;
    const char *dlq_reason; /**< "permanent", "max-retries", "malformed"; NULL unless DLQ */
    const char *status;     /**< extraction_items status to record: "retrying"/"dead"; or NULL */
} fq_route_t;

/** @brief Where an item that failed with err at attempt (1 = first try) goes. */
fq_route_t fq_route_decide(const fq_error_t *err, int attempt, int max_retries);

/** What a routed message says about its failure. */
typedef struct fq_route_info {
    int attempt;            /**< frameq-attempt */
    const fq_error_t *err;  /**< stage, class, message */
    const char *dlq_reason; /**< set for the DLQ, NULL for the retry topic */
    int64_t not_before_ms;  /**< retry topic only */
    int64_t now_ms;         /**< frameq-failed-at (and first-failed-at when unset) */
    const char *topic;      /**< where this worker read it: origin when not already set */
    int32_t partition;
    int64_t offset;
    const char *worker; /**< WORKER_ID */
} fq_route_info_t;

/**
 * @brief The headers of a retry or DLQ message: a copy of incoming (may be NULL) with every
 * frameq header replaced (never appended). Origin and first-failed-at are kept when present
 * so they name where the item FIRST arrived; redrive-count carries over untouched.
 * Returns NULL on OOM. Caller owns the result (rd_kafka_headers_destroy, or hand to producev).
 */
rd_kafka_headers_t *fq_route_headers(const rd_kafka_headers_t *incoming,
                                     const fq_route_info_t *info);

/* ---- circuit breaker ---- */

#define FQ_BREAKER_MAX_K 16
/** How long a tripped breaker may hold the worker before failures are routed again. */
#define FQ_BREAKER_MAX_OPEN_MS (5 * 60 * 1000)

/** The same stage failing retriably for k consecutive DIFFERENT items within window_ms means a
 *  dependency is down, not that each item is unlucky. Plain data; one per worker. */
typedef struct fq_breaker {
    int k;
    int64_t window_ms;
    bool open;
    fq_stage_t open_stage; /**< the stage that tripped it */
    fq_stage_t stage;      /**< of the current streak */
    int count;             /**< different items in the current streak */
    int64_t first_ms;      /**< when the streak began */
    int64_t opened_ms;     /**< when it tripped */
    int64_t max_open_ms;   /**< FQ_BREAKER_MAX_OPEN_MS unless changed after init */
    char keys[FQ_BREAKER_MAX_K][FQ_ITEM_KEY_MAX];
} fq_breaker_t;

/** @brief A closed breaker tripping after k (1..FQ_BREAKER_MAX_K) failures within window_ms. */
void fq_breaker_init(fq_breaker_t *b, int k, int64_t window_ms);

/**
 * @brief Feeds one item's result (err NULL = success) at now_ms. A success ends the streak; a
 * retriable failure extends it (the same key again does not count); other classes are ignored.
 * While open, any retriable failure of the open stage keeps it open — for at most max_open_ms:
 * after that, failures are routed as usual (the items then look more at fault than the
 * dependency, and a worker must never stall forever). Returns true when this result is to be
 * handled as an outage (the breaker tripped, or is open for this stage within max_open_ms).
 */
bool fq_breaker_feed(fq_breaker_t *b, const char *key, const fq_error_t *err, int64_t now_ms);

/** @brief Closes the breaker and forgets the streak (the dependency is back). */
void fq_breaker_close(fq_breaker_t *b);

#endif
