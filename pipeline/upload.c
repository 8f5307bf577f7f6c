/* frameq upload: frames and manifest.json to s3:// (SigV4 PUT), http(s):// (PUT) or file://.
 * Remote frames go through one curl multi handle with a small window of transfers in
 * flight; fq_upload_frame blocks while the window is full. See fq_upload.h. */
#include "fq_upload.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "fq_fetch.h"
#include "fq_http.h"
#include "fq_log.h"

#define UPLOAD_WINDOW   6 /* transfers in flight per uploader */
#define UPLOAD_ATTEMPTS 3 /* tries per object inside one call, before giving up */
#define REPLY_MAX       2048
#define URL_MAX         (FQ_VIDEO_URL_MAX + 1)

typedef enum dest_kind { DEST_FILE, DEST_S3, DEST_HTTP } dest_kind_t;

typedef struct slot {
    CURL *curl;
    bool busy;
    int attempts;
    uint8_t *data;
    size_t size, cap;
    const char *content_type;
    struct curl_slist *headers;
    char url[URL_MAX]; /* as stored (s3://..., http://..., no credentials) */
    char request_url[URL_MAX * 3 + 256];
    char sha256[65];
    char errbuf[CURL_ERROR_SIZE];
    char reply[REPLY_MAX];
    size_t reply_len;
} slot_t;

struct fq_upload {
    const fq_config_t *cfg;
    dest_kind_t kind;
    CURLM *multi;
    slot_t slots[UPLOAD_WINDOW];
    bool begun;
    bool failed;     /* an error was already handed to the caller for this item */
    fq_error_t *err; /* first failure of the current item, not yet handed out */
    char platform[FQ_PLATFORM_MAX + 1];
    char code[FQ_CODE_MAX + 1];
    fq_stored_frame_t *frames;
    size_t count, cap;
    char *manifest_url;
    unsigned tmp_counter;
};

/* ---- file:// ------------------------------------------------------------------------- */

static int file_path(const char *url, char *path, size_t path_size)
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
static fq_error_t *file_write(fq_upload_t *up, const char *url, const void *data, size_t size)
{
    char path[URL_MAX + 64];
    char tmp[URL_MAX + 128];
    if (file_path(url, path, sizeof(path)) != 0)
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
    size_t room = sizeof(slot->reply) - 1 - slot->reply_len;
    size_t take = n < room ? n : room;
    memcpy(slot->reply + slot->reply_len, buf, take);
    slot->reply_len += take;
    slot->reply[slot->reply_len] = '\0';
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
static void drive(fq_upload_t *up, int max_busy)
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

static void abort_all(fq_upload_t *up)
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
static fq_error_t *queue_put(fq_upload_t *up, const char *url, const void *data, size_t size,
                             const char *content_type)
{
    drive(up, UPLOAD_WINDOW - 1);
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

/* ---- public API ---------------------------------------------------------------------- */

fq_upload_t *fq_upload_new(const fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    fq_upload_t *up = calloc(1, sizeof(*up));
    char sample[URL_MAX], why[512];
    if (!up) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    up->cfg = cfg;
    const char *tmpl = cfg->frames_url_template;
    if (!tmpl || !*tmpl) {
        snprintf(errstr, errstr_size, "FRAMES_URL_TEMPLATE: must not be empty");
        goto fail;
    }
    if (fq_url_template_check(tmpl, true, why, sizeof(why)) != 0) {
        snprintf(errstr, errstr_size, "FRAMES_URL_TEMPLATE: %s", why);
        goto fail;
    }
    if (fq_url_expand(tmpl, "p", "c", 0, sample, sizeof(sample), why, sizeof(why)) != 0) {
        snprintf(errstr, errstr_size, "FRAMES_URL_TEMPLATE: %s", why);
        goto fail;
    }
    fq_url_parts_t parts;
    if (fq_url_parse(sample, &parts, why, sizeof(why)) != 0) {
        snprintf(errstr, errstr_size, "FRAMES_URL_TEMPLATE: %s", why);
        goto fail;
    }
    if (parts.has_userinfo) {
        snprintf(errstr, errstr_size, "FRAMES_URL_TEMPLATE: must not carry credentials");
        goto fail;
    }
    char bucket[64], key[URL_MAX], path[URL_MAX];
    if (strcmp(parts.scheme, "s3") == 0) {
        up->kind = DEST_S3;
        if (fq_s3_split(sample, bucket, sizeof(bucket), key, sizeof(key)) != 0) {
            snprintf(errstr, errstr_size, "FRAMES_URL_TEMPLATE: not an s3://bucket/key URL");
            goto fail;
        }
    } else if (strcmp(parts.scheme, "http") == 0 || strcmp(parts.scheme, "https") == 0) {
        up->kind = DEST_HTTP;
    } else if (strcmp(parts.scheme, "file") == 0) {
        up->kind = DEST_FILE;
        if (file_path(sample, path, sizeof(path)) != 0) {
            snprintf(errstr, errstr_size,
                     "FRAMES_URL_TEMPLATE: file URLs are file:///abs/path or file://./rel/path");
            goto fail;
        }
    } else {
        snprintf(errstr, errstr_size,
                 "FRAMES_URL_TEMPLATE: scheme %s is not supported (s3, http, https, file)",
                 parts.scheme);
        goto fail;
    }
    if (up->kind != DEST_FILE) {
        up->multi = curl_multi_init();
        if (!up->multi)
            goto oom;
        curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)UPLOAD_WINDOW);
        for (int i = 0; i < UPLOAD_WINDOW; i++) {
            up->slots[i].curl = curl_easy_init();
            if (!up->slots[i].curl)
                goto oom;
        }
    }
    return up;
oom:
    snprintf(errstr, errstr_size, "out of memory");
fail:
    fq_upload_destroy(up);
    return NULL;
}

static void forget_frames(fq_upload_t *up)
{
    for (size_t i = 0; i < up->count; i++)
        free(up->frames[i].url);
    up->count = 0;
}

void fq_upload_destroy(fq_upload_t *up)
{
    if (!up)
        return;
    if (up->multi)
        abort_all(up);
    for (int i = 0; i < UPLOAD_WINDOW; i++) {
        if (up->slots[i].curl)
            curl_easy_cleanup(up->slots[i].curl);
        curl_slist_free_all(up->slots[i].headers);
        free(up->slots[i].data);
    }
    if (up->multi)
        curl_multi_cleanup(up->multi);
    forget_frames(up);
    free(up->frames);
    free(up->manifest_url);
    fq_error_destroy(up->err);
    free(up);
}

fq_error_t *fq_upload_begin(fq_upload_t *up, const fq_item_t *item)
{
    if (up->multi)
        abort_all(up); /* leftovers of an abandoned item */
    forget_frames(up);
    free(up->manifest_url);
    up->manifest_url = NULL;
    fq_error_destroy(up->err);
    up->err = NULL;
    up->failed = false;
    snprintf(up->platform, sizeof(up->platform), "%s", item->platform);
    snprintf(up->code, sizeof(up->code), "%s", item->code);
    up->begun = true;
    return NULL;
}

static fq_error_t *take_error(fq_upload_t *up)
{
    fq_error_t *err = up->err;
    up->err = NULL;
    up->failed = true;
    abort_all(up);
    return err;
}

fq_error_t *fq_upload_frame(void *opaque, const fq_frame_t *frame)
{
    fq_upload_t *up = opaque;
    char url[URL_MAX], why[160];
    if (!up->begun || up->failed)
        return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE,
                            "upload: frame without a started item");
    if (up->err)
        return take_error(up);
    if (fq_url_expand(up->cfg->frames_url_template, up->platform, up->code, frame->index, url,
                      sizeof(url), why, sizeof(why)) != 0)
        return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_PERMANENT, "FRAMES_URL_TEMPLATE: %s", why);
    if (up->count == up->cap) {
        size_t cap = up->cap ? up->cap * 2 : 64;
        fq_stored_frame_t *grown = realloc(up->frames, cap * sizeof(*grown));
        if (!grown)
            return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "out of memory");
        up->frames = grown;
        up->cap = cap;
    }
    char safe[URL_MAX];
    fq_url_redact(url, safe, sizeof(safe));
    char *stored_url = strdup(safe);
    if (!stored_url)
        return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "out of memory");
    up->frames[up->count++] = (fq_stored_frame_t){.index = frame->index,
                                                  .pts_ms = frame->pts_ms,
                                                  .width = frame->width,
                                                  .height = frame->height,
                                                  .bytes = (int)frame->size,
                                                  .url = stored_url};
    fq_error_t *err;
    if (up->kind == DEST_FILE)
        err = file_write(up, url, frame->jpeg, frame->size);
    else
        err = queue_put(up, url, frame->jpeg, frame->size, "image/jpeg");
    if (err) {
        up->failed = true;
        if (up->multi)
            abort_all(up);
        return err;
    }
    if (up->err)
        return take_error(up);
    return NULL;
}

static int cmp_frames(const void *a, const void *b)
{
    const fq_stored_frame_t *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}

static char *manifest_json(fq_upload_t *up, const fq_media_info_t *info)
{
    json_t *root = json_object();
    json_t *frames = json_array();
    char created[40];
    fq_time_rfc3339(fq_time_now_ms(), created, sizeof(created));
    json_object_set_new(root, "platform", json_string(up->platform));
    json_object_set_new(root, "code", json_string(up->code));
    for (size_t i = 0; i < up->count; i++) {
        const fq_stored_frame_t *f = &up->frames[i];
        json_array_append_new(frames,
                              json_pack("{s:i, s:I, s:i, s:i, s:i, s:s}", "index", f->index,
                                        "pts_ms", (json_int_t)f->pts_ms, "width", f->width,
                                        "height", f->height, "bytes", f->bytes, "url", f->url));
    }
    json_object_set_new(root, "frames", frames);
    if (info)
        json_object_set_new(root, "source",
                            json_pack("{s:I, s:i, s:i, s:s, s:i}", "duration_ms",
                                      (json_int_t)info->duration_ms, "width", info->width, "height",
                                      info->height, "codec", info->codec, "rotation",
                                      info->rotation));
    else
        json_object_set_new(root, "source", json_null());
    json_object_set_new(root, "created_at", json_string(created));
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return text;
}

/* The template's frame-0 URL with its last path segment replaced by manifest.json. */
static int manifest_url(fq_upload_t *up, char *out, size_t out_size)
{
    char why[160];
    if (fq_url_expand(up->cfg->frames_url_template, up->platform, up->code, 0, out, out_size, why,
                      sizeof(why)) != 0)
        return -1;
    char *slash = strrchr(out, '/');
    if (!slash || (size_t)(slash - out) + sizeof("/manifest.json") > out_size)
        return -1;
    strcpy(slash + 1, "manifest.json");
    return 0;
}

fq_error_t *fq_upload_finish(fq_upload_t *up, const fq_media_info_t *info)
{
    char url[URL_MAX];
    char *json = NULL;
    fq_error_t *err = NULL;
    if (!up->begun || up->failed)
        return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE,
                            "upload: finish without a started item (or after a failure)");
    if (up->multi)
        drive(up, 0);
    if (up->err) {
        err = take_error(up);
        goto done;
    }
    qsort(up->frames, up->count, sizeof(*up->frames), cmp_frames);
    if (manifest_url(up, url, sizeof(url)) != 0) {
        err = fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_PERMANENT,
                           "FRAMES_URL_TEMPLATE: no place for manifest.json");
        goto done;
    }
    json = manifest_json(up, info);
    if (!json) {
        err = fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "out of memory");
        goto done;
    }
    /* The manifest goes last, alone: its presence means every frame is stored. */
    if (up->kind == DEST_FILE) {
        err = file_write(up, url, json, strlen(json));
    } else {
        err = queue_put(up, url, json, strlen(json), "application/json");
        if (!err)
            drive(up, 0);
        if (!err && up->err)
            err = take_error(up);
    }
    if (err)
        goto done;
    char safe[URL_MAX];
    fq_url_redact(url, safe, sizeof(safe));
    up->manifest_url = strdup(safe);
    if (!up->manifest_url)
        err = fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "out of memory");
done:
    if (err)
        up->failed = true;
    up->begun = !err && up->begun;
    free(json);
    return err;
}

const fq_stored_frame_t *fq_upload_frames(const fq_upload_t *up, size_t *count)
{
    /* Only a finished item's frames: after a failure nothing counts as stored. */
    *count = up->manifest_url ? up->count : 0;
    return up->frames;
}

const char *fq_upload_manifest_url(const fq_upload_t *up)
{
    return up->manifest_url;
}
