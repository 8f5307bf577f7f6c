/* S3 and HTTP helpers shared by fetch and upload (fq_http.h): S3 object URLs and SigV4
 * signing through libcurl, classification of curl codes and HTTP answers, one-shot S3
 * requests and the frame store probe, Retry-After. URL templates, parsing and the allow-list
 * are in url.c. */
#include "fq_fetch.h" /* fq_fetch_parse_retry_after */
#include "fq_http.h"

#include "fq_buf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* ---- S3 ------------------------------------------------------------------------------ */

int fq_s3_split(const char *url, char *bucket, size_t bucket_size, char *key, size_t key_size)
{
    fq_url_parts_t parts;
    if (fq_url_parse(url, &parts, NULL, 0) != 0 || strcmp(parts.scheme, "s3") != 0 ||
        parts.has_userinfo || parts.port != -1 || !fq_s3_bucket_valid(parts.host))
        return -1;
    const char *path = parts.url + parts.path_offset;
    if (path[0] != '/' || path[1] == '\0' || strpbrk(path, "?#"))
        return -1;
    if (strlen(parts.host) >= bucket_size || strlen(path + 1) >= key_size)
        return -1;
    strcpy(bucket, parts.host);
    strcpy(key, path + 1);
    return 0;
}

int fq_s3_object_url(const char *endpoint, const char *region, const char *bucket, const char *key,
                     char *out, size_t out_size)
{
    static const char hex[] = "0123456789ABCDEF";
    int n;
    if (endpoint && *endpoint) {
        size_t elen = strlen(endpoint);
        while (elen > 0 && endpoint[elen - 1] == '/')
            elen--;
        n = snprintf(out, out_size, "%.*s/%s/", (int)elen, endpoint, bucket);
    } else {
        n = snprintf(out, out_size, "https://s3.%s.amazonaws.com/%s/",
                     region && *region ? region : "us-east-1", bucket);
    }
    if (n < 0 || (size_t)n >= out_size)
        return -1;
    size_t pos = (size_t)n;
    /* SigV4 canonical URIs encode everything but unreserved characters, per segment. */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        bool keep = isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~' || *p == '/';
        size_t need = keep ? 1 : 3;
        if (pos + need >= out_size)
            return -1;
        if (keep) {
            out[pos++] = (char)*p;
        } else {
            out[pos++] = '%';
            out[pos++] = hex[*p >> 4];
            out[pos++] = hex[*p & 15];
        }
    }
    out[pos] = '\0';
    return 0;
}

struct curl_slist *fq_s3_prepare(CURL *curl, const fq_config_t *cfg, const char *payload_sha256,
                                 struct curl_slist *headers)
{
    char sigv4[96];
    char hdr[128];
    snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:s3",
             cfg->s3_region && *cfg->s3_region ? cfg->s3_region : "us-east-1");
    curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, sigv4);
    /* Username and password set apart, so a ':' in the secret cannot split them wrongly. */
    curl_easy_setopt(curl, CURLOPT_USERNAME, cfg->aws_access_key_id ? cfg->aws_access_key_id : "");
    curl_easy_setopt(curl, CURLOPT_PASSWORD,
                     cfg->aws_secret_access_key ? cfg->aws_secret_access_key : "");
    snprintf(hdr, sizeof(hdr), "x-amz-content-sha256: %s",
             payload_sha256 ? payload_sha256 : EMPTY_SHA256);
    struct curl_slist *list = curl_slist_append(headers, hdr);
    if (!list) {
        curl_slist_free_all(headers);
        return NULL;
    }
    return list;
}

void fq_http_keep_start(char *dst, size_t size, size_t *len, const char *src, size_t n)
{
    size_t room = size - 1 - *len;
    size_t take = n < room ? n : room;
    memcpy(dst + *len, src, take);
    *len += take;
    dst[*len] = '\0';
}

int fq_s3_error_code(const char *body, size_t len, char *out, size_t out_size)
{
    if (!body || len == 0 || out_size == 0)
        return -1;
    const char *open = memmem(body, len, "<Code>", 6);
    if (!open)
        return -1;
    open += 6;
    const char *end = body + len;
    const char *close = memmem(open, (size_t)(end - open), "</Code>", 7);
    if (!close || close == open)
        return -1;
    size_t n = (size_t)(close - open);
    if (n >= out_size)
        n = out_size - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)open[i];
        out[i] = (isalnum(c) || c == '.' || c == '-' || c == '_') ? (char)c : '?';
    }
    out[n] = '\0';
    return 0;
}

/* ---- error mapping ------------------------------------------------------------------- */

bool fq_http_curl_unreachable(CURLcode rc)
{
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
           rc == CURLE_COULDNT_RESOLVE_PROXY;
}

fq_class_t fq_http_class_for_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_LOGIN_DENIED:
    case CURLE_REMOTE_ACCESS_DENIED:
    case CURLE_REMOTE_FILE_NOT_FOUND:
        return FQ_CLASS_PERMANENT;
    default:
        return FQ_CLASS_RETRIABLE;
    }
}

static bool s3_auth_code(const char *code)
{
    static const char *const codes[] = {
        "SignatureDoesNotMatch",     "InvalidAccessKeyId",   "AuthorizationHeaderMalformed",
        "InvalidSignatureException", "RequestTimeTooSkewed", "XAmzContentSHA256Mismatch",
        "MissingSecurityHeader",     "ExpiredToken",         "InvalidToken",
        "XAdminUserNotFound" /* versitygw's answer (404) to an unknown key id */
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (strcmp(code, codes[i]) == 0)
            return true;
    }
    return false;
}

bool fq_s3_credential_error(long status, const char *body, size_t len)
{
    /* The answers to our key, our signature or our clock, not to the object: with them every
     * signed request fails alike (a rotated key, a skewed clock, a wrong S3_REGION). */
    static const char *const codes[] = {"InvalidAccessKeyId",
                                        "SignatureDoesNotMatch",
                                        "ExpiredToken",
                                        "InvalidToken",
                                        "TokenRefreshRequired",
                                        "RequestTimeTooSkewed",
                                        "RequestExpired",
                                        "AuthorizationHeaderMalformed",
                                        "InvalidSignatureException",
                                        "MissingSecurityHeader",
                                        "XAdminUserNotFound"};
    char code[64];
    if (status < 400 || status >= 500 || fq_s3_error_code(body, len, code, sizeof(code)) != 0)
        return false;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (strcmp(code, codes[i]) == 0)
            return true;
    }
    return false;
}

fq_error_t *fq_s3_status_error(fq_stage_t stage, long status, const char *safe_url,
                               const char *body, size_t len)
{
    bool credentials = fq_s3_credential_error(status, body, len);
    return fq_http_status_error(
        stage, credentials ? FQ_CLASS_OUTAGE : fq_error_class_for_http_status(status), status,
        safe_url, body, len);
}

fq_error_t *fq_http_status_error(fq_stage_t stage, fq_class_t klass, long status,
                                 const char *safe_url, const char *body, size_t len)
{
    char code[64];
    bool has_code = fq_s3_error_code(body, len, code, sizeof(code)) == 0;
    fq_error_t *err;
    if (has_code && status >= 400 && status < 500 && s3_auth_code(code))
        err = fq_error_new(stage, klass,
                           "S3 authentication failed (HTTP %ld %s) for %s: check "
                           "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and S3_REGION",
                           status, code, safe_url);
    else if (has_code)
        err = fq_error_new(stage, klass, "HTTP %ld %s from %s", status, code, safe_url);
    else
        err = fq_error_new(stage, klass, "HTTP %ld from %s", status, safe_url);
    fq_error_set_code(err, FQ_ERROR_DOMAIN_HTTP, (int)status);
    return err;
}

/* ---- one-shot S3 requests ------------------------------------------------------------ */

typedef struct reply_buf {
    fq_buf_t buf;
    size_t max;
} reply_buf_t;

static size_t on_reply_data(char *buf, size_t size, size_t nmemb, void *opaque)
{
    reply_buf_t *r = opaque;
    size_t n = size * nmemb;
    size_t take = r->buf.len + n > r->max ? r->max - r->buf.len : n;
    fq_buf_put(&r->buf, buf, take);
    return r->buf.oom ? 0 : n;
}

fq_error_t *fq_s3_request(const fq_config_t *cfg, fq_stage_t stage, const char *method,
                          const char *bucket, const char *key, const void *body, size_t len,
                          long *status, char **reply, size_t *reply_len, size_t max_reply)
{
    char url[4096 + 256], safe[512], hash[65], errbuf[CURL_ERROR_SIZE] = "";
    fq_error_t *err = NULL;
    struct curl_slist *headers = NULL;
    reply_buf_t r = {.max = max_reply ? max_reply : 64 * 1024};
    long code = 0;
    bool is_put = strcmp(method, "PUT") == 0;
    snprintf(safe, sizeof(safe), "s3://%s/%s", bucket, key);
    if (fq_s3_object_url(cfg->s3_endpoint, cfg->s3_region, bucket, key, url, sizeof(url)) != 0)
        return fq_error_new(stage, FQ_CLASS_PERMANENT, "S3 URL for %s is too long", safe);
    CURL *curl = curl_easy_init();
    if (!curl)
        return fq_error_new(stage, FQ_CLASS_RETRIABLE, "curl_easy_init failed");
    int64_t timeout = cfg->http_timeout_ms > 0 ? cfg->http_timeout_ms : 30000;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout < 10000 ? timeout : 10000));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_reply_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (is_put) {
        /* The body as POSTFIELDS: libcurl's SigV4 hashes exactly what is sent. */
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, len ? body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        headers = curl_slist_append(NULL, "Content-Type: application/octet-stream");
        if (headers)
            headers = curl_slist_append(headers, "Expect:");
        if (!headers) {
            err = fq_error_new(stage, FQ_CLASS_RETRIABLE, "out of memory");
            goto done;
        }
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    fq_sha256_hex(is_put ? body : NULL, is_put ? len : 0, hash);
    headers = fq_s3_prepare(curl, cfg, hash, headers);
    if (!headers) {
        err = fq_error_new(stage, FQ_CLASS_RETRIABLE, "out of memory");
        goto done;
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    if (rc != CURLE_OK) {
        err = fq_error_new(
            stage, fq_http_curl_unreachable(rc) ? FQ_CLASS_OUTAGE : fq_http_class_for_curl(rc),
            "S3 %s %s failed: %s (curl %d)", method, safe,
            errbuf[0] ? errbuf : curl_easy_strerror(rc), (int)rc);
        fq_error_set_code(err, FQ_ERROR_DOMAIN_CURL, (int)rc);
    } else if (code < 200 || code >= 300) {
        err = fq_s3_status_error(stage, code, safe, r.buf.data, r.buf.len);
    }
done:
    if (status)
        *status = code;
    if (reply) {
        *reply = r.buf.data; /* NULL when the reply was empty */
        r.buf.data = NULL;
    }
    if (reply_len)
        *reply_len = r.buf.len;
    free(r.buf.data);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return err;
}

fq_error_t *fq_s3_probe(const fq_config_t *cfg)
{
    /* One signed GET per s3:// bucket the configuration uses, of a key nobody writes: 404
     * NoSuchKey (or 2xx) proves the endpoint answers and accepts key, signature and clock. */
    const char *templates[2] = {cfg->frames_url_template, cfg->source_url_template};
    char probed[64] = "";
    for (int i = 0; i < 2; i++) {
        char bucket[64], key[8], sample[128];
        if (!templates[i] || strncmp(templates[i], "s3://", 5) != 0)
            continue;
        /* The bucket never holds a placeholder (config checks it): any key will do. */
        snprintf(sample, sizeof(sample), "s3://%.*s/x", (int)strcspn(templates[i] + 5, "/"),
                 templates[i] + 5);
        if (fq_s3_split(sample, bucket, sizeof(bucket), key, sizeof(key)) != 0 ||
            strcmp(bucket, probed) == 0)
            continue;
        snprintf(probed, sizeof(probed), "%s", bucket);
        long status = 0;
        fq_error_t *err = fq_s3_request(cfg, FQ_STAGE_UPLOAD, "GET", bucket, ".frameq-probe", NULL,
                                        0, &status, NULL, NULL, 4096);
        if (!err || status == 404 || fq_error_class(err) == FQ_CLASS_PERMANENT) {
            /* Answered, signature accepted. A 4xx not about credentials (AccessDenied on the
             * probe key) is for the items to report: the endpoint knows us. */
            fq_error_destroy(err);
            continue;
        }
        if (fq_error_class(err) == FQ_CLASS_OUTAGE)
            return err; /* unreachable, or refused our credentials or clock */
        /* 5xx, 408, 429, a reset or a timeout: not serving. */
        fq_error_t *outage = fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_OUTAGE,
                                          "S3 endpoint not serving: %s", fq_error_message(err));
        fq_error_set_code(outage, fq_error_domain(err), fq_error_code(err));
        fq_error_destroy(err);
        return outage;
    }
    return NULL;
}

/* ---- Retry-After --------------------------------------------------------------------- */

int64_t fq_fetch_parse_retry_after(const char *value, int64_t now_ms)
{
    if (!value)
        return -1;
    while (isspace((unsigned char)*value))
        value++;
    if (*value == '\0')
        return -1;
    if (isdigit((unsigned char)*value)) {
        const char *p = value;
        int64_t secs = 0;
        while (isdigit((unsigned char)*p)) {
            if (secs > INT64_MAX / 10000)
                return -1; /* absurd: would overflow milliseconds */
            secs = secs * 10 + (*p - '0');
            p++;
        }
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            return secs * 1000;
        /* Fall through: "1994 ..." is not delta-seconds; maybe a date, probably garbage. */
    }
    time_t when = curl_getdate(value, NULL);
    if (when == (time_t)-1)
        return -1;
    int64_t ms = (int64_t)when * 1000 - now_ms;
    return ms < 0 ? 0 : ms;
}
