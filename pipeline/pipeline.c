#include "fq_pipeline.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fq_fetch.h"
#include "fq_log.h"
#include "fq_upload.h"

struct fq_pipeline {
    const fq_config_t *cfg;
    fq_fetch_t *fetch;
    fq_frames_t *frames;
    fq_upload_t *upload;
    fq_store_t *store; /* NULL without a database */
    fq_cores_t *cores; /* NULL = no budget */
};

/* Frames go from the decoder straight into the upload queue. A shutdown's cancel flag stops
 * the extractor at its next packet or frame (fq_frames_set_cancel), so a long video is
 * abandoned quickly. */
static fq_error_t *frame_to_upload(void *opaque, const fq_frame_t *frame)
{
    return fq_upload_frame(opaque, frame);
}

fq_pipeline_t *fq_pipeline_new(const fq_config_t *cfg, bool with_db, char *errstr,
                               size_t errstr_size)
{
    fq_pipeline_t *pl = calloc(1, sizeof(*pl));
    if (!pl) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    pl->cfg = cfg;
    pl->fetch = fq_fetch_new(cfg, errstr, errstr_size);
    if (!pl->fetch)
        goto fail;
    pl->upload = fq_upload_new(cfg, errstr, errstr_size);
    if (!pl->upload)
        goto fail;

    fq_frames_opts_t opts;
    fq_frames_opts_from_config(&opts, cfg);
    /* Items of a batch already run on WORKER_CONCURRENCY threads: share the cores between
     * them rather than letting every decoder start one thread per core. A core budget
     * (fq_pipeline_set_cores) replaces this fixed share with cores lent while idle. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int per_item =
        (int)(cores > 0 ? cores : 1) / (cfg->worker_concurrency > 0 ? cfg->worker_concurrency : 1);
    opts.threads = per_item > 1 ? per_item : 1;
    pl->frames = fq_frames_new(&opts);
    if (!pl->frames) {
        snprintf(errstr, errstr_size, "frame extractor: out of memory");
        goto fail;
    }
    if (with_db) {
        pl->store = fq_store_new(cfg->database_url);
        if (!pl->store) {
            snprintf(errstr, errstr_size, "store: out of memory");
            goto fail;
        }
    }
    return pl;

fail:
    fq_pipeline_destroy(pl);
    return NULL;
}

void fq_pipeline_destroy(fq_pipeline_t *pl)
{
    if (!pl)
        return;
    fq_fetch_destroy(pl->fetch);
    fq_upload_destroy(pl->upload);
    fq_frames_destroy(pl->frames);
    fq_store_destroy(pl->store);
    free(pl);
}

void fq_pipeline_set_cores(fq_pipeline_t *pl, fq_cores_t *cores)
{
    pl->cores = cores;
    fq_frames_set_cores(pl->frames, cores);
}

fq_store_t *fq_pipeline_store(fq_pipeline_t *pl)
{
    return pl->store;
}

static double ms_since(int64_t start_ms)
{
    return (double)(fq_time_mono_ms() - start_ms);
}

fq_error_t *fq_pipeline_process(fq_pipeline_t *pl, const fq_item_t *item, int attempt,
                                const atomic_int *cancel, fq_outcome_t *out)
{
    memset(out, 0, sizeof(*out));
    fq_source_t src = {.fd = -1};
    fq_error_t *err = NULL;
    const int64_t t_start = fq_time_mono_ms();
    char key[FQ_ITEM_KEY_MAX];
    fq_item_key(item, key, sizeof(key));

    /* Validation is repeated here on purpose: nothing unvalidated may reach a URL, a path or
     * SQL, whoever the caller is. */
    err = fq_item_validate(item);
    if (err)
        goto done;

    int64_t t = fq_time_mono_ms();
    if (pl->store) {
        bool already_done = false;
        err = fq_store_begin_item(pl->store, item, attempt, &out->item_id, &already_done);
        if (err)
            goto done;
        if (already_done) {
            out->skipped = true;
            goto done;
        }
    }
    out->ms_store = ms_since(t);

    t = fq_time_mono_ms();
    err = fq_fetch_open(pl->fetch, item, &src);
    out->ms_fetch = ms_since(t);
    if (err)
        goto done;
    out->source_bytes = src.size;
    fq_log_ctx_t ctx = {
        .item = key, .attempt = attempt, .stage = "fetch", .duration_ms = out->ms_fetch};
    FQ_DEBUG(&ctx, "fetched %lld bytes", (long long)src.size);

    t = fq_time_mono_ms();
    err = fq_upload_begin(pl->upload, item);
    if (err)
        goto done;
    /* One core of the budget for the CPU-bound stage: decoding, scaling and JPEG encoding.
     * Frames stream into the upload window inside this span, so the core is also held while
     * a full window (UPLOAD_WINDOW transfers) blocks the next frame; fetch before it and the
     * wait for the last transfers after it are I/O and hold none. */
    if (fq_cores_acquire(pl->cores, cancel) != 0) {
        err = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_OUTAGE,
                           "cancelled while waiting for a core: the worker is shutting down");
        goto done;
    }
    fq_frames_set_cancel(pl->frames, cancel);
    err = fq_frames_extract(pl->frames, src.fd, frame_to_upload, pl->upload, &out->info);
    fq_cores_release(pl->cores, 1);
    fq_fetch_source_close(&src);
    out->ms_frames = ms_since(t);
    ctx.stage = "decode";
    ctx.duration_ms = out->ms_frames;
    FQ_DEBUG(&ctx, "decoded %lld frame(s), %d handed on%s; %d chunk(s), %d by %d helper thread(s)",
             (long long)out->info.frames_decoded, out->info.frame_count,
             err ? " before it stopped" : "", out->info.chunks, out->info.chunks_helped,
             out->info.chunk_helpers);
    if (err)
        goto done;

    t = fq_time_mono_ms();
    err = fq_upload_finish(pl->upload, &out->info);
    out->ms_upload = ms_since(t);
    if (err)
        goto done;
    snprintf(out->manifest_url, sizeof(out->manifest_url), "%s",
             fq_upload_manifest_url(pl->upload) ? fq_upload_manifest_url(pl->upload) : "");

    if (pl->store) {
        t = fq_time_mono_ms();
        size_t count = 0;
        const fq_stored_frame_t *frames = fq_upload_frames(pl->upload, &count);
        err = fq_store_mark_done(pl->store, out->item_id, &out->info, frames, count);
        out->ms_store += ms_since(t);
    }

done:
    fq_fetch_source_close(&src);
    out->ms_total = ms_since(t_start);
    return err;
}

char *fq_outcome_to_json(const fq_item_t *item, const fq_outcome_t *out, const fq_error_t *err)
{
    char key[FQ_ITEM_KEY_MAX];
    fq_item_key(item, key, sizeof(key));
    json_t *o = json_object();
    json_object_set_new(o, "item", json_string(key));
    json_object_set_new(o, "platform", json_string(item->platform));
    json_object_set_new(o, "code", json_string(item->code));
    if (err) {
        json_object_set_new(o, "status", json_string("failed"));
        json_object_set_new(o, "stage", json_string(fq_stage_name(fq_error_stage(err))));
        json_object_set_new(o, "class", json_string(fq_class_name(fq_error_class(err))));
        json_object_set_new(o, "error", json_string(fq_error_message(err)));
        if (fq_error_domain(err) != FQ_ERROR_DOMAIN_NONE) {
            json_object_set_new(o, "code_number", json_integer(fq_error_code(err)));
            json_object_set_new(o, "code_domain",
                                json_string(fq_error_domain_name(fq_error_domain(err))));
        }
        if (fq_error_retry_after_ms(err))
            json_object_set_new(o, "retry_after_ms", json_integer(fq_error_retry_after_ms(err)));
    } else if (out && out->skipped) {
        json_object_set_new(o, "status", json_string("skipped"));
        json_object_set_new(o, "reason", json_string("already done"));
    } else if (out) {
        json_object_set_new(o, "status", json_string("done"));
        json_object_set_new(o, "frames", json_integer(out->info.frame_count));
        json_object_set_new(o, "duration_ms", json_integer(out->info.duration_ms));
        json_object_set_new(o, "width", json_integer(out->info.width));
        json_object_set_new(o, "height", json_integer(out->info.height));
        json_object_set_new(o, "rotation", json_integer(out->info.rotation));
        json_object_set_new(o, "codec", json_string(out->info.codec));
        json_object_set_new(o, "source_bytes", json_integer(out->source_bytes));
        json_object_set_new(o, "manifest_url", json_string(out->manifest_url));
    }
    if (out && out->item_id)
        json_object_set_new(o, "item_id", json_integer(out->item_id));
    if (out) {
        json_t *t = json_object();
        json_object_set_new(t, "fetch", json_real(out->ms_fetch));
        json_object_set_new(t, "frames", json_real(out->ms_frames));
        json_object_set_new(t, "upload", json_real(out->ms_upload));
        json_object_set_new(t, "store", json_real(out->ms_store));
        json_object_set_new(t, "total", json_real(out->ms_total));
        json_object_set_new(o, "timings_ms", t);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    return s;
}
