/* frameq logging: level-gated, one JSON object per line on stderr (LOG_FORMAT=json), or a
 * readable line (LOG_FORMAT=text). Thread-safe: each line is written with one write(2).
 *
 * Every line carries ts, level, program, worker, msg; item lines also carry item (the
 * "platform:code" key), attempt and stage, plus whatever else the context holds.
 *
 *   {"ts":"2026-11-28T15:04:05.123Z","level":"info","program":"consumer","worker":"w-1",
 *    "item":"instagram:ABC123","attempt":1,"stage":"fetch","msg":"fetched","duration_ms":12.5}
 */
#ifndef FQ_LOG_H
#define FQ_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>

#include "fq_base.h"

typedef enum fq_log_level {
    FQ_LOG_DEBUG = 0,
    FQ_LOG_INFO,
    FQ_LOG_WARN,
    FQ_LOG_ERROR,
} fq_log_level_t;

/** Optional fields of one line. Zero-initialise, fill what applies; NULL/unset are omitted. */
typedef struct fq_log_ctx {
    const char *item;    /**< "platform:code" */
    int attempt;         /**< 0 = omitted */
    const char *stage;   /**< validate, fetch, decode, ... */
    const char *outcome; /**< done, retry, dlq, skipped, ... */
    const char *error_class;
    double duration_ms; /**< < 0 or 0 = omitted */
    const char *topic;
    int32_t partition; /**< only when topic is set */
    int64_t offset;    /**< only when topic is set */
} fq_log_ctx_t;

/** @brief Sets program name, worker id, format ("json"/"text") and level ("debug".."error").
 *  Returns -1 for an unknown level or format. Call once before threads start. */
int fq_log_init(const char *program, const char *worker, const char *format, const char *level);

/** @brief fn (NULL: none) is called before each line is written, on the logging thread: the
 *  producer's progress line erases itself there, so a log line starts at the margin. May be
 *  set at any time. */
void fq_log_set_before_line(void (*fn)(void));

/** @brief True when a line of this level would be written. */
bool fq_log_enabled(fq_log_level_t level);

/** @brief Writes one line. ctx may be NULL. The message is JSON-escaped. */
void fq_log(fq_log_level_t level, const fq_log_ctx_t *ctx, const char *fmt, ...) FQ_PRINTF(3, 4);

/** @brief Writes the current UTC time as RFC 3339 with milliseconds ("...T..:..:..123Z"). */
void fq_time_rfc3339(int64_t epoch_ms, char *buf, size_t buf_size);

/** @brief Wall-clock epoch milliseconds. */
int64_t fq_time_now_ms(void);

/** @brief Monotonic milliseconds (for durations and deadlines). */
int64_t fq_time_mono_ms(void);

/** @brief The CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait on a condition
 *  variable set to that clock. */
struct timespec fq_time_mono_deadline(int ms);

/** @brief Initialises cond to wait on CLOCK_MONOTONIC (deadlines from fq_time_mono_deadline),
 *  so a step of the wall clock never stretches a wait. 0, or pthread's error. */
int fq_cond_init_mono(pthread_cond_t *cond) FQ_WARN_UNUSED;

#define FQ_DEBUG(ctx, ...) fq_log(FQ_LOG_DEBUG, ctx, __VA_ARGS__)
#define FQ_INFO(ctx, ...)  fq_log(FQ_LOG_INFO, ctx, __VA_ARGS__)
#define FQ_WARN(ctx, ...)  fq_log(FQ_LOG_WARN, ctx, __VA_ARGS__)
#define FQ_ERROR(ctx, ...) fq_log(FQ_LOG_ERROR, ctx, __VA_ARGS__)

#endif
