/* frameq HTTP helpers shared by fetch and upload: URL parsing, the source allow-list,
 * s3:// -> path-style endpoint URLs, SigV4 request options, curl/HTTP error mapping, and a
 * small SHA-256 for S3 payload hashes. Nothing here connects anywhere. */
#ifndef FQ_HTTP_H
#define FQ_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "fq_config.h"
#include "fq_error.h"

#define FQ_URL_HOST_MAX 255
#define FQ_URL_MAX      4096 /**< longest URL after libcurl's normalisation */

/** The parts of a URL that checks need, as libcurl's own parser (curl_url) reads it. */
typedef struct fq_url_parts {
    char scheme[16];                /**< "http", "https", "s3", "file", ... (lowercase) */
    char host[FQ_URL_HOST_MAX + 1]; /**< lowercase, without brackets for IPv6; "" for
                                         file:///, "." for file://./ (relative) */
    int port;                       /**< -1 when absent */
    bool has_userinfo;              /**< user, password or login options present */
    bool host_is_ip;                /**< IPv4 (any numeric form) or IPv6 literal */
    char url[FQ_URL_MAX + 1];       /**< the URL as libcurl reads it: what must be fetched */
    size_t path_offset;             /**< where the path ("/...") starts in url */
} fq_url_parts_t;

/**
 * @brief Parses a URL with curl_url() (CURLU_NON_SUPPORT_SCHEME, so s3:// too): the one URL
 * parser for the allow-list, fetching and redirects, so no parser differential can carry a
 * host past the check. Also rejects control characters, spaces, non-ASCII bytes,
 * backslashes and port 0. file://./rel (relative) is accepted as ours. 0, or -1 with errstr.
 */
int fq_url_parse(const char *url, fq_url_parts_t *parts, char *errstr,
                 size_t errstr_size) FQ_WARN_UNUSED;

/** @brief 80 for http, 443 for https, -1 otherwise. */
int fq_url_default_port(const char *scheme);

/** @brief Copies url without userinfo and with any query string replaced by "?...", so it
 *  can be logged or put in an error message. Truncates to out_size. */
void fq_url_redact(const char *url, char *out, size_t out_size);

/** The source allow-list: ALLOWED_SOURCE_SCHEMES and ALLOWED_SOURCE_HOSTS. */
typedef struct fq_allow fq_allow_t;

/** @brief Builds an allow-list from comma lists (NULL schemes = "https,http,s3", NULL hosts =
 *  none). Host entries are read by curl_url() like the URLs: "host" matches that host on any
 *  port, "host:port" / "[v6]:port" only that port (a URL without a port has its scheme's
 *  default), "*.example.com" any subdomain; matching is case-insensitive. Unknown schemes
 *  or entries fail with errstr. */
fq_allow_t *fq_allow_new(const char *schemes, const char *hosts, char *errstr, size_t errstr_size);
void fq_allow_destroy(fq_allow_t *allow);

/** @brief Adds one more entry ("host", "host:port", "*.domain"). 0, -1 on OOM, -2 when the
 *  entry is not one. */
int fq_allow_add_host(fq_allow_t *allow, const char *host) FQ_WARN_UNUSED;

/** @brief True when the scheme ("file", "s3", ...) is listed. */
bool fq_allow_scheme(const fq_allow_t *allow, const char *scheme);

/**
 * @brief Checks a URL before anything connects to it. `what` names it in messages
 * ("video_url", "source URL", "redirect"). Refusals are stage validate, class permanent:
 * "video_url host 169.254.169.254:80 is not in ALLOWED_SOURCE_HOSTS". For s3:// the bucket is
 * the host; file:// has no host to check. parts may be NULL; when the URL is allowed,
 * parts->url is what must be fetched.
 */
fq_error_t *fq_allow_check(const fq_allow_t *allow, const char *url, const char *what,
                           fq_url_parts_t *parts) FQ_WARN_UNUSED;

/**
 * @brief The path-style URL of an object: <endpoint>/<bucket>/<key> with each key segment
 * percent-encoded; endpoint NULL or "" = https://s3.<region>.amazonaws.com. 0, or -1 when
 * it does not fit.
 */
int fq_s3_object_url(const char *endpoint, const char *region, const char *bucket, const char *key,
                     char *out, size_t out_size) FQ_WARN_UNUSED;

/** @brief An S3 bucket name as frameq accepts it: 3..63 of [a-z0-9.-]. */
bool fq_s3_bucket_valid(const char *bucket);

/** @brief Splits "s3://bucket/key" into bucket and key (the key without its leading '/').
 *  0, or -1 when it is not an s3 URL with a valid bucket name and a non-empty key. */
int fq_s3_split(const char *url, char *bucket, size_t bucket_size, char *key,
                size_t key_size) FQ_WARN_UNUSED;

/**
 * @brief Prepares curl for a SigV4-signed S3 request: CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3",
 * the key pair, and an x-amz-content-sha256 header (curl/curl#8810) appended to headers.
 * payload_sha256 is the hex hash of the body (NULL = hash of the empty body).
 * @return the header list (the caller sets CURLOPT_HTTPHEADER and frees it), NULL on OOM.
 */
struct curl_slist *fq_s3_prepare(CURL *curl, const fq_config_t *cfg, const char *payload_sha256,
                                 struct curl_slist *headers);

/**
 * @brief One blocking SigV4-signed request on an object ("PUT", "GET", "HEAD", "DELETE"):
 * <S3_ENDPOINT>/<bucket>/<key>. body/len is sent with PUT. NULL when the status is 2xx, else
 * an error of the given stage (code = HTTP status or curl code; 403 says "S3 authentication
 * failed (...)" when it is one). status (0 when no response) and the reply body (malloc'd,
 * NUL-terminated, at most max_reply bytes kept; caller frees) are optional outputs.
 */
fq_error_t *fq_s3_request(const fq_config_t *cfg, fq_stage_t stage, const char *method,
                          const char *bucket, const char *key, const void *body, size_t len,
                          long *status, char **reply, size_t *reply_len,
                          size_t max_reply) FQ_WARN_UNUSED;

/** @brief Appends what still fits of src[0..n) to dst (size bytes, *len of them used, kept
 *  NUL-terminated): the start of a reply is kept (an S3 error code), the rest dropped. */
void fq_http_keep_start(char *dst, size_t size, size_t *len, const char *src, size_t n);

/** @brief Reads <Code>...</Code> from an S3 XML error body. 0, or -1 when there is none. */
int fq_s3_error_code(const char *body, size_t len, char *out, size_t out_size) FQ_WARN_UNUSED;

/** @brief True for curl results that mean the server could not be reached at all
 *  (refused, DNS failure, connect timeout). */
bool fq_http_curl_unreachable(CURLcode rc);

/** @brief The class of a failed transfer: permanent for bad URLs, unsupported protocols,
 *  too many redirects, size limits; retriable for network trouble (timeouts, resets, short
 *  bodies, refused connections). */
fq_class_t fq_http_class_for_curl(CURLcode rc);

/**
 * @brief An error for an HTTP error status. S3 403 (SignatureDoesNotMatch,
 * InvalidAccessKeyId, ...) reads "S3 authentication failed (HTTP 403 SignatureDoesNotMatch)".
 * body/len is the (captured part of the) response body, for the S3 error code. The code of
 * the error is the status.
 */
fq_error_t *fq_http_status_error(fq_stage_t stage, fq_class_t klass, long status,
                                 const char *safe_url, const char *body, size_t len) FQ_WARN_UNUSED;

/**
 * @brief True when a signed S3 request was refused for our credentials or our clock, not for
 * the object: 4xx with <Code> InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken,
 * InvalidToken, TokenRefreshRequired, RequestTimeTooSkewed, RequestExpired,
 * AuthorizationHeaderMalformed, InvalidSignatureException, MissingSecurityHeader or
 * XAdminUserNotFound. body/len is the (captured start of the) response body.
 */
bool fq_s3_credential_error(long status, const char *body, size_t len);

/**
 * @brief The error for a failed request signed for the configured S3 endpoint (fetch of an
 * s3:// source, upload of an s3:// frame, fq_s3_request): class outage for credential and
 * clock errors (DESIGN §3: a rotated key must not dead-letter every item), else by status as
 * fq_error_class_for_http_status. Only for signed requests: a 401/403 from an item's own
 * http(s) video_url stays permanent (fq_http_status_error).
 */
fq_error_t *fq_s3_status_error(fq_stage_t stage, long status, const char *safe_url,
                               const char *body, size_t len) FQ_WARN_UNUSED;

/**
 * @brief Probes the configured S3 endpoint cheaply, for readiness: one signed GET of the key
 * ".frameq-probe" in each s3:// bucket of FRAMES_URL_TEMPLATE and SOURCE_URL_TEMPLATE (the
 * same bucket once). Blocks at most HTTP_TIMEOUT_MS (connect at most 10 s) per bucket.
 * @return NULL when no template uses s3:// or the endpoint answered every probe with 2xx/404
 * or another 4xx that is not about credentials (the credentials and clock were accepted);
 * else an error of class FQ_CLASS_OUTAGE, stage upload, classified like the items' own
 * requests: endpoint unreachable, 5xx/408/429, or a credential/clock refusal
 * (fq_s3_credential_error; code = HTTP status or curl code). Caller destroys it.
 */
fq_error_t *fq_s3_probe(const fq_config_t *cfg) FQ_WARN_UNUSED;

/** @brief Hex SHA-256 (64 chars + NUL) of data (libcrypto); "" (logged) if libcrypto fails. */
void fq_sha256_hex(const void *data, size_t len, char out[65]);

#endif
