/* The uploader's transfers: file:// writes, and remote PUTs (s3:// signed, http(s)://)
 * through one curl multi handle with a small window in flight, retried inside the call. */
#include "upload_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fq_http.h"
#include "fq_log.h"

/* ---- file:// ------------------------------------------------------------------------- */

int upload_file_path(const char *url, char *path, size_t path_size)
{
    fq_url_parts_t parts;
    if (fq_url_parse(url, &parts, NULL, 0) != 0 || strcmp(parts.scheme, "file") != 0)
        return -1;
    const char *rest = parts.url + parts.path_offset;
    int n;
    if (strcmp(parts.host, ".") == 0)
        n = snprintf(path, path_size, ".%s", rest);
    else if (parts.host[0] == '\0' || strcmp(parts.host, "localhost") == 0)
        n = snprintf(path, path_size, "%s", rest);
    else
        return -1;
    return (n > 1 && (size_t)n < path_size) ? 0 : -1;
}

static int mkdir_parents(char *path)
{
    /* Creates every directory above the last '/' of path. */
    char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0;
    *slash = '\0';
    int rc = 0;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            rc = -1;
        *p = '/';
        if (rc)
            break;
    }
    if (rc == 0 && mkdir(path, 0755) != 0 && errno != EEXIST)
        rc = -1;
    *slash = '/';
    return rc;
}

static fq_error_t *file_error(const char *what, const char *url, int e)
{
    /* Out of space or I/O trouble may pass; a path we may not write is a misconfiguration. */
    fq_class_t klass = (e == ENOSPC || e == EIO || e == EDQUOT || e == EMFILE || e == ENFILE ||
                        e == ENOMEM || e == EINTR)
                           ? FQ_CLASS_RETRIABLE
                           : FQ_CLASS_PERMANENT;
    fq_error_t *err =
        fq_error_new(FQ_STAGE_UPLOAD, klass, "%s %s: %s%s", what, url, strerror(e),
                     klass == FQ_CLASS_PERMANENT ? " (check FRAMES_URL_TEMPLATE)" : "");
    fq_error_set_code(err, FQ_ERROR_DOMAIN_ERRNO, e);
    return err;
}

/* Writes to a temporary name in the same directory and renames it, so readers never see a
 * half-written frame or manifest. */
fq_error_t *upload_file_write(fq_upload_t *up, const char *url, const void *data, size_t size)
{
    char path[URL_MAX + 64];
    char tmp[URL_MAX + 128];
    if (upload_file_path(url, path, sizeof(path)) != 0)
        return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_PERMANENT,
                            "FRAMES_URL_TEMPLATE gives an unusable file URL %s", url);
    if (mkdir_parents(path) != 0)
        return file_error("cannot create the directory of", url, errno);
    snprintf(tmp, sizeof(tmp), "%s.tmp-%ld-%u", path, (long)getpid(), up->tmp_counter++);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return file_error("cannot create", url, errno);
    const uint8_t *p = data;
    size_t left = size;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return file_error("cannot write", url, e);
        }
        p += w;
        left -= (size_t)w;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return file_error("cannot store", url, e);
    }
    return NULL;
}

/* ---- remote transfers ---------------------------------------------------------------- */

static size_t on_reply(char *buf, size_t size, size_t nmemb, void *opaque)
{
    slot_t *slot = opaque;
    size_t n = size * nmemb;
    fq_http_keep_start(slot->reply, sizeof(slot->reply), &slot->reply_len, buf, n);
    return n;
}

static fq_error_t *slot_start(fq_upload_t *up, slot_t *slot)
{
    const fq_config_t *cfg = up->cfg;
    CURL *curl = slot->curl;
    int64_t timeout = cfg->http_timeout_ms > 0 ? cfg->http_timeout_ms : 30000;
    slot->reply_len = 0;
    slot->reply[0] = '\0';
    slot->errbuf[0] = '\0';
    curl_slist_free_all(slot->headers);
    slot->headers = NULL;

    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, slot->request_url);
    curl_easy_setopt(curl, CURLOPT_PRIVATE, slot);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, slot->errbuf);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout < 10000 ? timeout : 10000));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "frameq/" FQ_VERSION);
    /* PUT with the body in memory: POSTFIELDS makes libcurl's SigV4 hash the real payload,
     * the same value as the x-amz-content-sha256 header we send. */
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
    /* Never NULL: with NULL libcurl would read the body through a read callback (stdin). */
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, slot->data ? (const void *)slot->data : "");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)slot->size);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_reply);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, slot);

    char ctype[64];
    snprintf(ctype, sizeof(ctype), "Content-Type: %s", slot->content_type);
    struct curl_slist *headers = curl_slist_append(NULL, ctype);
    if (headers)
        headers = curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
    if (headers && up->kind == DEST_S3)
        headers = fq_s3_prepare(curl, cfg, slot->sha256, headers);
    if (!headers)
        return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "out of memory");
    slot->headers = headers;
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    slot->attempts++;
    CURLMcode mc = curl_multi_add_handle(up->multi, curl);
    if (mc != CURLM_OK)
        return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "curl_multi_add_handle: %s",
                            curl_multi_strerror(mc));
    slot->busy = true;
    return NULL;
}

/* The outcome of a finished transfer: NULL when stored, else the error to report. */
static fq_error_t *slot_result(const fq_upload_t *up, slot_t *slot, CURLcode rc)
{
    char safe[URL_MAX];
    fq_url_redact(slot->url, safe, sizeof(safe));
    long status = 0;
    curl_easy_getinfo(slot->curl, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && status >= 200 && status < 300)
        return NULL;
    fq_error_t *err;
    if (rc != CURLE_OK) {
        curl_off_t connect_us = 0;
        curl_easy_getinfo(slot->curl, CURLINFO_CONNECT_TIME_T, &connect_us);
        bool unreachable =
            fq_http_curl_unreachable(rc) || (rc == CURLE_OPERATION_TIMEDOUT && connect_us == 0);
        err = fq_error_new(FQ_STAGE_UPLOAD, unreachable ? FQ_CLASS_OUTAGE : FQ_CLASS_RETRIABLE,
                           "%s %s: %s (curl %d)",
                           unreachable ? "frame store unreachable for" : "upload failed for", safe,
                           slot->errbuf[0] ? slot->errbuf : curl_easy_strerror(rc), (int)rc);
        fq_error_set_code(err, FQ_ERROR_DOMAIN_CURL, (int)rc);
        return err;
    }
    if (up->kind == DEST_S3 && fq_s3_credential_error(status, slot->reply, slot->reply_len))
        return fq_s3_status_error(FQ_STAGE_UPLOAD, status, safe, slot->reply, slot->reply_len);
    fq_class_t klass = fq_error_class_for_http_status(status);
    char s3code[64];
    if (fq_s3_error_code(slot->reply, slot->reply_len, s3code, sizeof(s3code)) != 0)
        s3code[0] = '\0';
    if (klass == FQ_CLASS_PERMANENT && (status == 401 || status == 403) && s3code[0])
        return fq_http_status_error(FQ_STAGE_UPLOAD, klass, status, safe, slot->reply,
                                    slot->reply_len);
    if (klass == FQ_CLASS_PERMANENT)
        err = fq_error_new(FQ_STAGE_UPLOAD, klass,
                           "FRAME STORE REFUSED the upload of %s: HTTP %ld%s%s; check "
                           "FRAMES_URL_TEMPLATE, the bucket and its permissions",
                           safe, status, s3code[0] ? " " : "", s3code);
    else
        err = fq_error_new(FQ_STAGE_UPLOAD, klass, "upload of %s failed: HTTP %ld%s%s", safe,
                           status, s3code[0] ? " " : "", s3code);
    fq_error_set_code(err, FQ_ERROR_DOMAIN_HTTP, (int)status);
    return err;
}

static void record_error(fq_upload_t *up, fq_error_t *err)
{
    if (!up->err)
        up->err = err;
    else
        fq_error_destroy(err);
}

/* Handles every finished transfer: success frees the slot, a retriable failure is tried
 * again a moment later, a final failure is recorded. */
static void collect(fq_upload_t *up)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(up->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *curl = msg->easy_handle;
        CURLcode rc = msg->data.result;
        slot_t *slot = NULL;
        curl_easy_getinfo(curl, CURLINFO_PRIVATE, (char **)&slot);
        curl_multi_remove_handle(up->multi, curl);
        slot->busy = false;
        fq_error_t *err = slot_result(up, slot, rc);
        if (!err)
            continue;
        if (fq_error_class(err) != FQ_CLASS_PERMANENT && slot->attempts < UPLOAD_ATTEMPTS &&
            !up->err) {
            fq_log_ctx_t ctx = {.stage = "upload"};
            FQ_DEBUG(&ctx, "retrying: %s", fq_error_message(err));
            fq_error_destroy(err);
            /* A short pause so a store that dropped one request has a moment. */
            struct timespec ts = {0, 100L * 1000 * 1000 * slot->attempts};
            nanosleep(&ts, NULL);
            err = slot_start(up, slot);
            if (!err)
                continue;
        }
        record_error(up, err);
    }
}

static int busy_count(const fq_upload_t *up)
{
    int n = 0;
    for (int i = 0; i < UPLOAD_WINDOW; i++)
        n += up->slots[i].busy;
    return n;
}

/* Drives transfers until at most max_busy are in flight. */
void upload_drive(fq_upload_t *up, int max_busy)
{
    for (;;) {
        int running = 0;
        curl_multi_perform(up->multi, &running);
        collect(up);
        if (busy_count(up) <= max_busy)
            return;
        curl_multi_poll(up->multi, NULL, 0, 200, NULL);
    }
}

void upload_abort_all(fq_upload_t *up)
{
    for (int i = 0; i < UPLOAD_WINDOW; i++) {
        slot_t *slot = &up->slots[i];
        if (slot->busy) {
            curl_multi_remove_handle(up->multi, slot->curl);
            slot->busy = false;
        }
    }
}

/* Queues one object for a remote store, blocking while the window is full. */
fq_error_t *upload_queue_put(fq_upload_t *up, const char *url, const void *data, size_t size,
                             const char *content_type)
{
    upload_drive(up, UPLOAD_WINDOW - 1);
    if (up->err)
        return NULL; /* reported by the caller */
    slot_t *slot = NULL;
    for (int i = 0; i < UPLOAD_WINDOW && !slot; i++) {
        if (!up->slots[i].busy)
            slot = &up->slots[i];
    }
    if (size > slot->cap) {
        uint8_t *grown = realloc(slot->data, size);
        if (!grown)
            return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "out of memory");
        slot->data = grown;
        slot->cap = size;
    }
    if (size)
        memcpy(slot->data, data, size);
    slot->size = size;
    slot->content_type = content_type;
    slot->attempts = 0;
    snprintf(slot->url, sizeof(slot->url), "%s", url);
    if (up->kind == DEST_S3) {
        char bucket[64], key[URL_MAX];
        if (fq_s3_split(url, bucket, sizeof(bucket), key, sizeof(key)) != 0 ||
            fq_s3_object_url(up->cfg->s3_endpoint, up->cfg->s3_region, bucket, key,
                             slot->request_url, sizeof(slot->request_url)) != 0)
            return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_PERMANENT,
                                "FRAMES_URL_TEMPLATE gives an unusable S3 URL %s", url);
        fq_sha256_hex(data, size, slot->sha256);
    } else {
        snprintf(slot->request_url, sizeof(slot->request_url), "%s", url);
    }
    fq_error_t *err = slot_start(up, slot);
    if (err)
        return err;
    int running = 0;
    curl_multi_perform(up->multi, &running);
    return NULL;
}
