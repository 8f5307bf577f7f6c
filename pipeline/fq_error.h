/* frameq errors: every failure carries its stage and class, and routing reads those,
 * never the message text (DESIGN §3). NULL means success everywhere an fq_error_t * is
 * returned. */
#ifndef FQ_ERROR_H
#define FQ_ERROR_H

#include <stdbool.h>
#include <stdint.h>

#include "fq_base.h"

/** Where an item failed; names are the `frameq-error-stage` header values. */
typedef enum fq_stage {
    FQ_STAGE_VALIDATE = 0,
    FQ_STAGE_FETCH,
    FQ_STAGE_DECODE,
    FQ_STAGE_ENCODE,
    FQ_STAGE_UPLOAD,
    FQ_STAGE_STORE,
    FQ_STAGE_MESSAGE,
    FQ_STAGE__COUNT
} fq_stage_t;

/** What to do about it; names are the `frameq-error-class` header values ("outage" is never
 *  written to a header: an outage is not the item's fault and is never routed). */
typedef enum fq_class {
    FQ_CLASS_RETRIABLE = 0, /**< try again later through the retry topic */
    FQ_CLASS_PERMANENT,     /**< straight to the DLQ */
    FQ_CLASS_MALFORMED,     /**< a message that is not a valid batch: DLQ with its raw bytes */
    FQ_CLASS_OUTAGE,        /**< a dependency every item needs is down: pause, burn nothing */
    FQ_CLASS__COUNT
} fq_class_t;

/** What kind of number fq_error_code holds; set with the code, so a reader never guesses it
 *  from the number's range. */
typedef enum fq_error_domain {
    FQ_ERROR_DOMAIN_NONE = 0, /**< no code (fq_error_code is 0) */
    FQ_ERROR_DOMAIN_ERRNO,    /**< an errno value (EACCES, ENOSPC, ...) */
    FQ_ERROR_DOMAIN_CURL,     /**< a CURLcode */
    FQ_ERROR_DOMAIN_HTTP,     /**< an HTTP status */
    FQ_ERROR_DOMAIN_AV,       /**< an AVERROR (negative) */
    FQ_ERROR_DOMAIN_SQLSTATE, /**< a SQLSTATE packed as PostgreSQL does (6 bits a character) */
    FQ_ERROR_DOMAIN__COUNT
} fq_error_domain_t;

typedef struct fq_error fq_error_t;

#define FQ_ERROR_MESSAGE_MAX 1024 /**< messages are truncated to this (the header limit) */

/** @brief A new error; message is printf-formatted and truncated to 1 KiB. Never NULL
 *  (falls back to a static out-of-memory error that destroy ignores). */
fq_error_t *fq_error_new(fq_stage_t stage, fq_class_t klass, const char *fmt, ...)
    FQ_PRINTF(3, 4) FQ_WARN_UNUSED;

/** @brief Frees; NULL-safe. */
void fq_error_destroy(fq_error_t *err);

fq_stage_t fq_error_stage(const fq_error_t *err);
fq_class_t fq_error_class(const fq_error_t *err);
const char *fq_error_message(const fq_error_t *err);

/** @brief The domain of fq_error_code: FQ_ERROR_DOMAIN_NONE when the error carries no code. */
fq_error_domain_t fq_error_domain(const fq_error_t *err);
/** @brief The code in its domain (an errno, CURLcode, HTTP status, AVERROR or packed
 *  SQLSTATE); 0 when the domain is FQ_ERROR_DOMAIN_NONE. */
int fq_error_code(const fq_error_t *err);
/** @brief Sets the code and its domain together (FQ_ERROR_DOMAIN_NONE clears the code). */
void fq_error_set_code(fq_error_t *err, fq_error_domain_t domain, int code);
/** @brief "errno", "curl", "http", "av", "sqlstate"; "" for FQ_ERROR_DOMAIN_NONE. */
const char *fq_error_domain_name(fq_error_domain_t domain);

/** @brief Retry-After hint in milliseconds from the source; 0 when none. */
int64_t fq_error_retry_after_ms(const fq_error_t *err);
void fq_error_set_retry_after_ms(fq_error_t *err, int64_t ms);

/** @brief "validate", "fetch", ... ; "unknown" out of range. */
const char *fq_stage_name(fq_stage_t stage);
/** @brief "retriable", "permanent", "malformed", "outage". */
const char *fq_class_name(fq_class_t klass);
/** @brief Parses a stage / class name; 0 on success, -1 when unknown. */
int fq_stage_parse(const char *name, fq_stage_t *stage) FQ_WARN_UNUSED;
int fq_class_parse(const char *name, fq_class_t *klass) FQ_WARN_UNUSED;

/** @brief Classification of an HTTP status: 400/401/403/404/410 and other 4xx are permanent,
 *  408/425/429/5xx retriable. (Upload maps an unreachable frame store to outage itself.) */
fq_class_t fq_error_class_for_http_status(long status);

#endif
