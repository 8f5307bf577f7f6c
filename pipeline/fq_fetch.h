/* frameq fetch: turns an item into a seekable local file descriptor holding its video.
 *
 * The source URL is the item's video_url, or SOURCE_URL_TEMPLATE expanded with the item's
 * validated fields. Schemes: http(s) (libcurl), s3 (libcurl SigV4, path-style against
 * S3_ENDPOINT), file (only when ALLOWED_SOURCE_SCHEMES lists it; opened in place, no copy).
 * Downloads go to an anonymous temporary file (O_TMPFILE, or mkstemp + unlink at once), so no
 * file is ever left behind, crash included.
 */
#ifndef FQ_FETCH_H
#define FQ_FETCH_H

#include <stdint.h>

#include "fq_config.h"
#include "fq_error.h"
#include "fq_http.h"
#include "fq_item.h"

typedef struct fq_fetch fq_fetch_t;

/** A fetched source. Close with fq_fetch_source_close. */
typedef struct fq_source {
    int fd;                         /**< readable, seekable; -1 when closed */
    int64_t size;                   /**< bytes */
    char url[FQ_VIDEO_URL_MAX + 1]; /**< the URL fetched (no credentials in it) */
    long http_status;               /**< 0 for file:// */
} fq_source_t;

/** @brief A fetcher (a curl easy handle reused across items). Not thread-safe: one per thread.
 *  NULL with errstr on a configuration problem (bad template, bad allow-list). */
fq_fetch_t *fq_fetch_new(const fq_config_t *cfg, char *errstr, size_t errstr_size);
void fq_fetch_destroy(fq_fetch_t *fetch);

/**
 * @brief Fetches the item's video. Errors have stage validate (URL not allowed: scheme, host,
 * template), or fetch: 400/401/403/404/410 and other 4xx permanent, 408/429/5xx, timeouts,
 * resets, short bodies retriable (Retry-After -> fq_error_retry_after_ms), larger than
 * MAX_VIDEO_BYTES permanent. Redirects at most 3, each target re-checked against the allow-list.
 */
fq_error_t *fq_fetch_open(fq_fetch_t *fetch, const fq_item_t *item,
                          fq_source_t *src) FQ_WARN_UNUSED;

/**
 * @brief The allow-list of a configuration: ALLOWED_SOURCE_SCHEMES and ALLOWED_SOURCE_HOSTS,
 * plus SOURCE_URL_TEMPLATE's own host (the operator's source is always allowed: its bucket
 * for s3://, its host:port for http(s)://). The worker's fetch and the producer use this one
 * function, so both refuse the same video_urls. NULL with errstr on a bad setting.
 */
fq_allow_t *fq_allow_from_config(const fq_config_t *cfg, char *errstr, size_t errstr_size);

/** @brief Closes the source's fd; NULL-safe, idempotent. */
void fq_fetch_source_close(fq_source_t *src);

/** @brief Parses a Retry-After value (delta seconds or HTTP-date) relative to now_ms.
 *  Returns milliseconds >= 0, or -1 when unparseable. */
int64_t fq_fetch_parse_retry_after(const char *value, int64_t now_ms);

/**
 * @brief Expands {platform}, {code}, {index} (and {index:0N}, zero-padded to N digits) in a URL
 * template. Values are inserted as they are: callers pass only validated fields. Unknown
 * placeholders or a result longer than out_size fail with -1 and errstr.
 */
int fq_url_expand(const char *tmpl, const char *platform, const char *code, int index, char *out,
                  size_t out_size, char *errstr, size_t errstr_size) FQ_WARN_UNUSED;

#endif
