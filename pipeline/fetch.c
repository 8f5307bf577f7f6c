/* frameq fetch: item -> URL -> allow-list -> anonymous temp file (or file:// in place).
 * See fq_fetch.h for the contract and fq_http.h for the shared checks. */
#include "fq_fetch.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "fq_http.h"
#include "fq_log.h"

#define FETCH_MAX_REDIRECTS 3
#define ERROR_BODY_MAX      4096 /* enough for an S3 XML error */

struct fq_fetch {
    const fq_config_t *cfg;
    CURL *curl;
    fq_allow_t *allow;
    char errbuf[CURL_ERROR_SIZE];
};

/* State of one transfer, shared by the write and header callbacks. */
typedef struct transfer {
    CURL *curl;
    int fd;
    int64_t bytes;
    int64_t max_bytes;
    bool too_big;
    int write_errno;
    int status_known; /* 0 = not yet looked at, 1 = body goes to fd, 2 = body is an error */
    char body[ERROR_BODY_MAX];
    size_t body_len;
    char retry_after[128];
} transfer_t;

/* ---- fetcher ------------------------------------------------------------------------- */

fq_allow_t *fq_allow_from_config(const fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    fq_allow_t *allow =
        fq_allow_new(cfg->allowed_source_schemes, cfg->allowed_source_hosts, errstr, errstr_size);
    if (!allow || !cfg->source_url_template || !*cfg->source_url_template)
        return allow;
    /* The template is the operator's own: its host is always allowed. Expanding it with
     * sample values proves its placeholders now rather than on the first item. */
    char sample[FQ_VIDEO_URL_MAX + 1];
    char why[160];
    fq_url_parts_t parts;
    if (fq_url_expand(cfg->source_url_template, "p", "c", 0, sample, sizeof(sample), why,
                      sizeof(why)) != 0 ||
        fq_url_parse(sample, &parts, why, sizeof(why)) != 0) {
        snprintf(errstr, errstr_size, "SOURCE_URL_TEMPLATE: %s", why);
        goto fail;
    }
    if (!fq_allow_scheme(allow, parts.scheme)) {
        snprintf(errstr, errstr_size,
                 "SOURCE_URL_TEMPLATE: scheme %s is not in ALLOWED_SOURCE_SCHEMES", parts.scheme);
        goto fail;
    }
    if (strcmp(parts.scheme, "file") != 0) {
        /* Its bucket (s3) or its host on its port (http, https): host:port as libcurl reads it. */
        char entry[FQ_URL_HOST_MAX + 16];
        bool v6 = strchr(parts.host, ':') != NULL;
        int port = parts.port != -1 ? parts.port : fq_url_default_port(parts.scheme);
        if (strcmp(parts.scheme, "s3") == 0 || port == -1)
            snprintf(entry, sizeof(entry), "%s", parts.host);
        else
            snprintf(entry, sizeof(entry), "%s%s%s:%d", v6 ? "[" : "", parts.host, v6 ? "]" : "",
                     port);
        if (fq_allow_add_host(allow, entry) != 0) {
            snprintf(errstr, errstr_size, "SOURCE_URL_TEMPLATE: host %s cannot be allowed", entry);
            goto fail;
        }
    }
    return allow;
fail:
    fq_allow_destroy(allow);
    return NULL;
}

fq_fetch_t *fq_fetch_new(const fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    fq_fetch_t *fetch = calloc(1, sizeof(*fetch));
    if (!fetch) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    fetch->cfg = cfg;
    fetch->allow = fq_allow_from_config(cfg, errstr, errstr_size);
    if (!fetch->allow)
        goto fail;
    fetch->curl = curl_easy_init();
    if (!fetch->curl) {
        snprintf(errstr, errstr_size, "curl_easy_init failed");
        goto fail;
    }
    return fetch;
fail:
    fq_fetch_destroy(fetch);
    return NULL;
}

void fq_fetch_destroy(fq_fetch_t *fetch)
{
    if (!fetch)
        return;
    if (fetch->curl)
        curl_easy_cleanup(fetch->curl);
    fq_allow_destroy(fetch->allow);
    free(fetch);
}

void fq_fetch_source_close(fq_source_t *src)
{
    if (src && src->fd >= 0) {
        close(src->fd);
        src->fd = -1;
    }
}

/* An unnamed file in $TMPDIR: nothing to clean up on any exit path. */
static int open_temp(void)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char path[4096];
    snprintf(path, sizeof(path), "%s/frameq-fetch-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

static int percent_decode(const char *in, char *out, size_t out_size)
{
    size_t pos = 0;
    for (const char *p = in; *p; p++) {
        char c = *p;
        if (c == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], 0};
            c = (char)strtol(hex, NULL, 16);
            p += 2;
            if (c == '\0')
                return -1;
        }
        if (pos + 1 >= out_size)
            return -1;
        out[pos++] = c;
    }
    out[pos] = '\0';
    return 0;
}

static fq_error_t *open_file_source(fq_fetch_t *fetch, const char *url, const fq_url_parts_t *parts,
                                    fq_source_t *src)
{
    char path[FQ_VIDEO_URL_MAX + 2];
    const char *rest = parts->url + parts->path_offset;
    size_t off = 0;
    if (strcmp(parts->host, ".") == 0)
        path[off++] = '.'; /* file://./x is relative to the working directory */
    if (strpbrk(rest, "?#") || percent_decode(rest, path + off, sizeof(path) - off) != 0 ||
        path[0] == '\0')
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, "file URL %s has no usable path",
                            src->url);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        fq_class_t klass = (e == EIO || e == EMFILE || e == ENFILE || e == ENOMEM)
                               ? FQ_CLASS_RETRIABLE
                               : FQ_CLASS_PERMANENT;
        fq_error_t *err = fq_error_new(FQ_STAGE_FETCH, klass, "cannot open %s: %s", src->url,
                                       e == ELOOP ? "is a symbolic link" : strerror(e));
        fq_error_set_code(err, FQ_ERROR_DOMAIN_ERRNO, e);
        return err;
    }
    struct stat st;
    fq_error_t *err = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        err =
            fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, "%s is not a regular file", src->url);
        goto done;
    }
    if (st.st_size > fetch->cfg->max_video_bytes) {
        err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT,
                           "video is larger than MAX_VIDEO_BYTES (%lld bytes)",
                           (long long)fetch->cfg->max_video_bytes);
        goto done;
    }
    /* Back to blocking reads: O_NONBLOCK only kept open() from hanging on a FIFO. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    src->fd = fd;
    src->size = (int64_t)st.st_size;
    src->http_status = 0;
    fd = -1;
done:
    if (fd >= 0)
        close(fd);
    return err;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *opaque)
{
    transfer_t *t = opaque;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        t->retry_after[0] = '\0'; /* a new response (after 1xx) starts clean */
        return n;
    }
    static const char name[] = "retry-after:";
    if (n > sizeof(name) - 1 && strncasecmp(buf, name, sizeof(name) - 1) == 0) {
        const char *v = buf + sizeof(name) - 1;
        size_t vlen = n - (sizeof(name) - 1);
        while (vlen > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        while (vlen > 0 && isspace((unsigned char)v[vlen - 1]))
            vlen--;
        if (vlen >= sizeof(t->retry_after))
            vlen = sizeof(t->retry_after) - 1;
        memcpy(t->retry_after, v, vlen);
        t->retry_after[vlen] = '\0';
    }
    return n;
}

static size_t on_body(char *buf, size_t size, size_t nmemb, void *opaque)
{
    transfer_t *t = opaque;
    size_t n = size * nmemb;
    if (t->status_known == 0) {
        long status = 0;
        curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
        t->status_known = (status >= 200 && status < 300) ? 1 : 2;
    }
    if (t->status_known == 2) {
        /* An error or redirect body: keep the start (S3 XML error code), drop the rest. */
        fq_http_keep_start(t->body, sizeof(t->body), &t->body_len, buf, n);
        return n;
    }
    if (t->bytes + (int64_t)n > t->max_bytes) {
        t->too_big = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(t->fd, buf + done, n - done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            t->write_errno = errno;
            return 0;
        }
        done += (size_t)w;
    }
    t->bytes += (int64_t)n;
    return n;
}

static void setup_request(fq_fetch_t *fetch, transfer_t *t, const char *url)
{
    CURL *curl = fetch->curl;
    int64_t timeout = fetch->cfg->http_timeout_ms > 0 ? fetch->cfg->http_timeout_ms : 30000;
    /* Reset keeps the connection and DNS caches, so connections are still reused. */
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, fetch->errbuf);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    /* Redirects are followed by hand so every hop is checked before it is contacted. */
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, (long)FETCH_MAX_REDIRECTS);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout < 10000 ? timeout : 10000));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout);
    /* A stalled body ends well before the full timeout: under 1 KiB/s for a third of it
     * (at most 10 s, at least 1 s). */
    long low_time = (long)(timeout / 3000);
    low_time = low_time < 1 ? 1 : (low_time > 10 ? 10 : low_time);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, low_time);
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)fetch->cfg->max_video_bytes);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "frameq/" FQ_VERSION);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, t);
}

/* Empties the temp file and the transfer state for the next hop. */
static int transfer_restart(transfer_t *t)
{
    t->bytes = 0;
    t->too_big = false;
    t->write_errno = 0;
    t->status_known = 0;
    t->body_len = 0;
    t->body[0] = '\0';
    t->retry_after[0] = '\0';
    if (ftruncate(t->fd, 0) != 0 || lseek(t->fd, 0, SEEK_SET) != 0)
        return -1;
    return 0;
}

static fq_error_t *curl_failure(fq_fetch_t *fetch, transfer_t *t, CURLcode rc, const char *safe_url)
{
    fq_error_t *err;
    if (t->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT,
                           "video is larger than MAX_VIDEO_BYTES (%lld bytes)",
                           (long long)fetch->cfg->max_video_bytes);
    } else if (t->write_errno) {
        err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE,
                           "writing the download of %s to a temp file failed: %s", safe_url,
                           strerror(t->write_errno));
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "fetching %s timed out: %s",
                           safe_url, fetch->errbuf[0] ? fetch->errbuf : curl_easy_strerror(rc));
    } else {
        err = fq_error_new(FQ_STAGE_FETCH, fq_http_class_for_curl(rc),
                           "fetching %s failed: %s (curl %d)", safe_url,
                           fetch->errbuf[0] ? fetch->errbuf : curl_easy_strerror(rc), (int)rc);
    }
    fq_error_set_code(err, FQ_ERROR_DOMAIN_CURL, (int)rc);
    return err;
}

/* Points the handle at one hop's URL: an s3:// URL as its signed endpoint request (headers
 * receives the list the handle then uses), any other as is. */
static fq_error_t *setup_hop(fq_fetch_t *fetch, transfer_t *t, const char *current, bool is_s3,
                             const char *safe_url, struct curl_slist **headers)
{
    const fq_config_t *cfg = fetch->cfg;
    if (!is_s3) {
        setup_request(fetch, t, current);
        return NULL;
    }
    char bucket[64], key[FQ_VIDEO_URL_MAX + 1];
    char request_url[FQ_VIDEO_URL_MAX * 3 + 256];
    if (fq_s3_split(current, bucket, sizeof(bucket), key, sizeof(key)) != 0 ||
        fq_s3_object_url(cfg->s3_endpoint, cfg->s3_region, bucket, key, request_url,
                         sizeof(request_url)) != 0)
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                            "%s is not a usable s3://bucket/key URL", safe_url);
    setup_request(fetch, t, request_url);
    *headers = fq_s3_prepare(fetch->curl, cfg, NULL, NULL);
    if (!*headers)
        return fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "out of memory");
    curl_easy_setopt(fetch->curl, CURLOPT_HTTPHEADER, *headers);
    return NULL;
}

/* Judges a redirect's Location like any source URL (allow-list, http or https only, the hop
 * limit) and writes the URL to fetch next into current. */
static fq_error_t *next_hop(fq_fetch_t *fetch, int hop, long status, const char *location,
                            const char *safe_url, char *current, size_t current_size)
{
    fq_error_t *err;
    if (hop >= FETCH_MAX_REDIRECTS) {
        err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT,
                           "too many redirects (more than %d) from %s", FETCH_MAX_REDIRECTS,
                           safe_url);
        fq_error_set_code(err, FQ_ERROR_DOMAIN_HTTP, (int)status);
        return err;
    }
    char next[FQ_VIDEO_URL_MAX + 1];
    if (strlen(location) >= sizeof(next)) {
        err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, "redirect from %s is too long",
                           safe_url);
        return err;
    }
    snprintf(next, sizeof(next), "%s", location);
    fq_url_parts_t next_parts;
    err = fq_allow_check(fetch->allow, next, "redirect", &next_parts);
    if (!err && strcmp(next_parts.scheme, "http") != 0 && strcmp(next_parts.scheme, "https") != 0)
        err = fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                           "redirect scheme %s is not allowed (http and https only)",
                           next_parts.scheme);
    if (err)
        return err;
    if (strlen(next_parts.url) >= current_size) {
        err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, "redirect from %s is too long",
                           safe_url);
        return err;
    }
    snprintf(current, current_size, "%s", next_parts.url); /* the URL judged */
    return NULL;
}

/* A 2xx answer: the temp file, rewound, becomes the source. */
static fq_error_t *keep_body(transfer_t *t, long status, const char *safe_url, fq_source_t *src)
{
    if (lseek(t->fd, 0, SEEK_SET) != 0)
        return fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "temp file: %s", strerror(errno));
    src->fd = t->fd;
    src->size = t->bytes;
    src->http_status = status;
    snprintf(src->url, sizeof(src->url), "%s", safe_url);
    t->fd = -1; /* now owned by src */
    return NULL;
}

/* Any other answer: classified, with the server's Retry-After. */
static fq_error_t *status_failure(const transfer_t *t, bool is_s3, long status,
                                  const char *safe_url)
{
    /* Signed requests to the configured endpoint (s3://) report credential and clock
     * refusals as an outage; a video_url's own 401/403 stays permanent. */
    fq_error_t *err =
        is_s3 ? fq_s3_status_error(FQ_STAGE_FETCH, status, safe_url, t->body, t->body_len)
              : fq_http_status_error(FQ_STAGE_FETCH, fq_error_class_for_http_status(status), status,
                                     safe_url, t->body, t->body_len);
    if (t->retry_after[0]) {
        int64_t ms = fq_fetch_parse_retry_after(t->retry_after, fq_time_now_ms());
        if (ms > 0)
            fq_error_set_retry_after_ms(err, ms);
    }
    return err;
}

static fq_error_t *fetch_remote(fq_fetch_t *fetch, const char *url, const fq_url_parts_t *parts,
                                fq_source_t *src)
{
    const fq_config_t *cfg = fetch->cfg;
    fq_error_t *err = NULL;
    struct curl_slist *headers = NULL;
    char current[FQ_VIDEO_URL_MAX + 1];
    char safe_url[FQ_VIDEO_URL_MAX + 1];
    transfer_t *t = calloc(1, sizeof(*t));
    if (!t)
        return fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "out of memory");
    t->curl = fetch->curl;
    t->max_bytes = cfg->max_video_bytes > 0 ? cfg->max_video_bytes : INT64_MAX;
    t->fd = open_temp();
    if (t->fd < 0) {
        err = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "cannot create a temp file: %s",
                           strerror(errno));
        goto done;
    }
    if (strlen(parts->url) >= sizeof(current)) {
        err = fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                           "source URL is longer than %d bytes as libcurl reads it",
                           FQ_VIDEO_URL_MAX);
        goto done;
    }
    snprintf(current, sizeof(current), "%s", parts->url); /* as libcurl reads it */
    bool is_s3 = strcmp(parts->scheme, "s3") == 0;

    for (int hop = 0;; hop++) {
        fq_url_redact(current, safe_url, sizeof(safe_url));
        if (transfer_restart(t) != 0) {
            err =
                fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "temp file: %s", strerror(errno));
            goto done;
        }
        fetch->errbuf[0] = '\0';
        curl_slist_free_all(headers);
        headers = NULL;
        err = setup_hop(fetch, t, current, is_s3, safe_url, &headers);
        if (err)
            goto done;

        CURLcode rc = curl_easy_perform(fetch->curl);
        long status = 0;
        curl_easy_getinfo(fetch->curl, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK) {
            err = curl_failure(fetch, t, rc, safe_url);
            goto done;
        }
        if (status >= 200 && status < 300) {
            err = keep_body(t, status, safe_url, src);
            goto done;
        }
        char *location = NULL;
        curl_easy_getinfo(fetch->curl, CURLINFO_REDIRECT_URL, &location);
        if (status >= 300 && status < 400 && location && !is_s3) {
            err = next_hop(fetch, hop, status, location, safe_url, current, sizeof(current));
            if (err)
                goto done;
            continue;
        }
        err = status_failure(t, is_s3, status, safe_url);
        goto done;
    }
done:
    /* The handle keeps pointers to the header list and to t: drop them before freeing. */
    curl_easy_setopt(fetch->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(fetch->curl, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(fetch->curl, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(fetch->curl, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(headers);
    if (t->fd >= 0)
        close(t->fd);
    free(t);
    return err;
}

fq_error_t *fq_fetch_open(fq_fetch_t *fetch, const fq_item_t *item, fq_source_t *src)
{
    char url[FQ_VIDEO_URL_MAX + 1];
    const char *what;
    memset(src, 0, sizeof(*src));
    src->fd = -1;
    if (item->video_url) {
        if (strlen(item->video_url) > FQ_VIDEO_URL_MAX)
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                                "video_url is longer than %d bytes", FQ_VIDEO_URL_MAX);
        snprintf(url, sizeof(url), "%s", item->video_url);
        what = "video_url";
    } else if (fetch->cfg->source_url_template && *fetch->cfg->source_url_template) {
        char why[160];
        if (fq_url_expand(fetch->cfg->source_url_template, item->platform, item->code, 0, url,
                          sizeof(url), why, sizeof(why)) != 0)
            return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, "SOURCE_URL_TEMPLATE: %s",
                                why);
        what = "source URL";
    } else {
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT,
                            "item has no video_url and SOURCE_URL_TEMPLATE is not set");
    }
    fq_url_parts_t parts;
    fq_error_t *err = fq_allow_check(fetch->allow, url, what, &parts);
    if (err)
        return err;
    fq_url_redact(url, src->url, sizeof(src->url));
    if (strcmp(parts.scheme, "file") == 0)
        return open_file_source(fetch, url, &parts, src);
    err = fetch_remote(fetch, url, &parts, src);
    if (err && !item->video_url && fq_error_class(err) == FQ_CLASS_RETRIABLE &&
        fq_error_domain(err) == FQ_ERROR_DOMAIN_CURL &&
        fq_http_curl_unreachable((CURLcode)fq_error_code(err))) {
        /* The configured source serves every item: not reaching its host at all is an outage
         * of a dependency, not this item's failure (no attempt burned, nothing to the DLQ).
         * A video_url host is the item's own business and stays retriable. */
        fq_error_t *outage = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_OUTAGE,
                                          "video source unreachable: %s", fq_error_message(err));
        fq_error_set_code(outage, fq_error_domain(err), fq_error_code(err));
        fq_error_destroy(err);
        err = outage;
    }
    return err;
}
