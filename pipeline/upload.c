/* frameq upload: frames and manifest.json to s3:// (SigV4 PUT), http(s):// (PUT) or file://.
 * Remote frames go through one curl multi handle with a small window of transfers in
 * flight; fq_upload_frame blocks while the window is full. See fq_upload.h. */
#include "upload_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fq_buf.h"
#include "fq_http.h"
#include "fq_log.h"

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
        if (upload_file_path(sample, path, sizeof(path)) != 0) {
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
        upload_abort_all(up);
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
        upload_abort_all(up); /* leftovers of an abandoned item */
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
    upload_abort_all(up);
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
    fq_stored_frame_t *grown = fq_grow(up->frames, &up->cap, up->count, sizeof(*grown), 64);
    if (!grown)
        return fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "out of memory");
    up->frames = grown;
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
        err = upload_file_write(up, url, frame->jpeg, frame->size);
    else
        err = upload_queue_put(up, url, frame->jpeg, frame->size, "image/jpeg");
    if (err) {
        up->failed = true;
        if (up->multi)
            upload_abort_all(up);
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
        upload_drive(up, 0);
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
        err = upload_file_write(up, url, json, strlen(json));
    } else {
        err = upload_queue_put(up, url, json, strlen(json), "application/json");
        if (!err)
            upload_drive(up, 0);
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
