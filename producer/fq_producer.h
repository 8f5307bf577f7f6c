/* producer helpers that need no broker: time parsing, DLQ entry filters, batch arithmetic and
 * progress/ETA, kept out of main.c so unit tests link them (fq_producer). */
#ifndef FQ_PRODUCER_H
#define FQ_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "fq_config.h"
#include "fq_item.h"

/** @brief Parses RFC 3339 ("2026-11-28T15:04:05Z", fractional seconds, "+02:00" offsets) into
 *  epoch milliseconds. 0, or -1 when it is not a valid timestamp. */
int fq_time_parse_rfc3339(const char *s, int64_t *epoch_ms) FQ_WARN_UNUSED;

/** @brief Parses a relative age "90s", "30m", "2h", "7d" (also "1w") into milliseconds.
 *  0, or -1. */
int fq_age_parse(const char *s, int64_t *ms) FQ_WARN_UNUSED;

/** @brief --failed-after/--failed-before value: RFC 3339, or an age meaning now - age.
 *  0, or -1. */
int fq_time_arg_parse(const char *s, int64_t now_ms, int64_t *epoch_ms) FQ_WARN_UNUSED;

/** What redrive and dlq list know about one DLQ message, from its headers and value. */
typedef struct fq_dlq_entry {
    char key[FQ_ITEM_KEY_MAX + 32]; /**< message key, "platform:code" (may be empty) */
    char platform[40];              /**< from the key (before ':'), "" when unknown */
    char reason[32];                /**< frameq-dlq-reason */
    char stage[32];                 /**< frameq-error-stage */
    char klass[32];                 /**< frameq-error-class */
    char failed_at[48];             /**< frameq-failed-at (RFC 3339) */
    char error[1100];               /**< frameq-error */
    int64_t failed_at_ms;           /**< parsed failed_at; -1 when absent or invalid */
    int64_t attempt;                /**< frameq-attempt, -1 when absent */
    int64_t redrive_count;          /**< frameq-redrive-count, 0 when absent */
} fq_dlq_entry_t;

/** @brief Fills entry from a DLQ message's key and headers (hdrs may be NULL). */
void fq_dlq_entry_from(fq_dlq_entry_t *entry, const void *key, size_t key_len,
                       const rd_kafka_headers_t *hdrs);

/** Redrive filters; NULL / -1 fields do not filter. */
typedef struct fq_dlq_filter {
    const char *reason, *stage, *klass, *platform;
    int64_t failed_after_ms;  /**< -1: none; entries failed at or after this pass */
    int64_t failed_before_ms; /**< -1: none; entries failed strictly before this pass */
} fq_dlq_filter_t;

/** @brief True when the entry passes every filter set. An entry without a parsable failed-at
 *  never passes a time filter. */
bool fq_dlq_filter_match(const fq_dlq_filter_t *filter, const fq_dlq_entry_t *entry);

/** What redrive does with one DLQ message. */
typedef enum fq_redrive_action {
    FQ_REDRIVE_TAKE = 0,     /**< redrive it */
    FQ_REDRIVE_NOT_MATCHING, /**< a filter excludes it (silently passed over) */
    FQ_REDRIVE_LOOP_GUARD,   /**< redriven --max-redrives times already: skipped, reported */
    FQ_REDRIVE_MALFORMED,    /**< undecodable or reason malformed, without --include-malformed */
} fq_redrive_action_t;

/** @brief The redrive decision for one entry, in this order: filters, loop guard, malformed.
 *  decoded: the value is a valid item. */
fq_redrive_action_t fq_redrive_decide(const fq_dlq_filter_t *filter, const fq_dlq_entry_t *entry,
                                      bool decoded, int64_t max_redrives, bool include_malformed);

/** @brief Number of batch messages for n items at batch_size (ceil). */
size_t fq_batch_count(size_t n, size_t batch_size);

/** @brief Size of batch i (0-based) of n items at batch_size; 0 past the end. */
size_t fq_batch_len(size_t n, size_t batch_size, size_t i);

/** @brief Items per second over elapsed_ms (0 when no time has passed). */
double fq_progress_rate(uint64_t done, int64_t elapsed_ms);

/** @brief Estimated milliseconds left: -1 when unknown (no total, no progress yet). */
int64_t fq_progress_eta_ms(uint64_t done, uint64_t total, int64_t elapsed_ms);

/** @brief Formats milliseconds as "1h02m", "3m05s", "12s" into buf; "?" when ms < 0. */
const char *fq_progress_fmt_duration(int64_t ms, char *buf, size_t buf_size);

#endif
