/* frameq Kafka headers on retry and DLQ messages (DESIGN §2): UTF-8 text values, replaced
 * never appended, so `kcat -f '%h'` shows them as they are and they do not grow. */
#ifndef FQ_HEADERS_H
#define FQ_HEADERS_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "fq_base.h"

#define FQ_HDR_ATTEMPT          "frameq-attempt"
#define FQ_HDR_NOT_BEFORE       "frameq-not-before"
#define FQ_HDR_ERROR_STAGE      "frameq-error-stage"
#define FQ_HDR_ERROR_CLASS      "frameq-error-class"
#define FQ_HDR_ERROR            "frameq-error"
#define FQ_HDR_ORIGIN_TOPIC     "frameq-origin-topic"
#define FQ_HDR_ORIGIN_PARTITION "frameq-origin-partition"
#define FQ_HDR_ORIGIN_OFFSET    "frameq-origin-offset"
#define FQ_HDR_FIRST_FAILED_AT  "frameq-first-failed-at"
#define FQ_HDR_FAILED_AT        "frameq-failed-at"
#define FQ_HDR_WORKER           "frameq-worker"
#define FQ_HDR_DLQ_REASON       "frameq-dlq-reason"
#define FQ_HDR_REDRIVE_COUNT    "frameq-redrive-count"
/* Only on a malformed message too large for the DLQ: its value there is cut to
 * FQ_DLQ_VALUE_MAX bytes; these say how large it was and what its bytes hash to. */
#define FQ_HDR_ORIGINAL_SIZE   "frameq-original-size"
#define FQ_HDR_ORIGINAL_SHA256 "frameq-original-sha256"
/** Largest value frameq writes to the DLQ: below the default message limits of both
 *  librdkafka (message.max.bytes 1000000) and the broker (1 MiB), headers included. */
#define FQ_DLQ_VALUE_MAX (900 * 1000)

/** @brief Replaces every header called name with one text value (value NULL: just removes).
 *  Returns an rd_kafka error code. */
rd_kafka_resp_err_t fq_headers_set(rd_kafka_headers_t *hdrs, const char *name,
                                   const char *value) FQ_WARN_UNUSED;

/** @brief fq_headers_set with a decimal integer value. */
rd_kafka_resp_err_t fq_headers_set_int(rd_kafka_headers_t *hdrs, const char *name,
                                       int64_t value) FQ_WARN_UNUSED;

/** @brief Copies the last value of header name, NUL-terminated, into buf. Returns false when
 *  absent (buf set to ""); a value longer than buf is truncated. hdrs may be NULL. */
bool fq_headers_get(const rd_kafka_headers_t *hdrs, const char *name, char *buf, size_t buf_size);

/** @brief The header as a non-negative decimal integer; def when absent or not a number. */
int64_t fq_headers_get_int(const rd_kafka_headers_t *hdrs, const char *name, int64_t def);

#endif
