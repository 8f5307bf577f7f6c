/* The store's item calls (fq_store.h): begin, done with its frames, a recorded failure, a
 * status. Each is a body run by store_run on a live connection: idempotent and transactional. */
#include "fq_store.h"
#include "fq_store_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct begin_ctx {
    const fq_item_t *item;
    int attempt;
    int64_t item_id;
    bool already_done;
} begin_ctx_t;

static fq_store_kind_t begin_body(fq_store_t *store, void *ctx)
{
    begin_ctx_t *c = ctx;
    char attempt[16];
    snprintf(attempt, sizeof(attempt), "%d", c->attempt);
    const char *params[] = {c->item->platform, c->item->code, attempt};
    PGresult *res = NULL;
    fq_store_kind_t kind = store_exec(store, ST_BEGIN, 3, params, &res);
    if (kind != FQ_STORE_OK)
        return kind;
    if (PQntuples(res) == 1) {
        c->item_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        c->already_done = false;
        PQclear(res);
        return FQ_STORE_OK;
    }
    PQclear(res);
    /* The upsert's WHERE skipped the row: it exists and is done. */
    kind = store_exec(store, ST_SELECT_ITEM, 2, params, &res);
    if (kind != FQ_STORE_OK)
        return kind;
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 1), "done") != 0) {
        snprintf(store->msg, sizeof(store->msg), "begin_item: item %s:%s changed concurrently",
                 c->item->platform, c->item->code);
        PQclear(res);
        return FQ_STORE_TRANSIENT;
    }
    c->item_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    c->already_done = true;
    PQclear(res);
    return FQ_STORE_OK;
}

fq_error_t *fq_store_begin_item(fq_store_t *store, const fq_item_t *item, int attempt,
                                int64_t *item_id, bool *already_done)
{
    begin_ctx_t c = {.item = item, .attempt = attempt};
    fq_error_t *err = store_run(store, begin_body, &c);
    if (!err) {
        if (item_id)
            *item_id = c.item_id;
        if (already_done)
            *already_done = c.already_done;
    }
    return err;
}

typedef struct done_ctx {
    int64_t item_id;
    const fq_media_info_t *info;
    size_t count;
    const char *frames_json;
} done_ctx_t;

static fq_store_kind_t done_body(fq_store_t *store, void *ctx)
{
    done_ctx_t *c = ctx;
    char id[24], count[24], duration[24], width[16], height[16];
    snprintf(id, sizeof(id), "%" PRId64, c->item_id);
    snprintf(count, sizeof(count), "%zu", c->count);
    const char *item_params[] = {id, count, NULL, NULL, NULL};
    if (c->info) {
        snprintf(duration, sizeof(duration), "%" PRId64, c->info->duration_ms);
        snprintf(width, sizeof(width), "%d", c->info->width);
        snprintf(height, sizeof(height), "%d", c->info->height);
        item_params[2] = duration;
        item_params[3] = width;
        item_params[4] = height;
    }
    fq_store_kind_t kind = store_command(store, "BEGIN", "mark_done");
    if (kind != FQ_STORE_OK)
        return kind;
    PGresult *res = NULL;
    kind = store_exec(store, ST_DONE_ITEM, 5, item_params, &res);
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    bool found = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    if (!found) {
        snprintf(store->msg, sizeof(store->msg), "mark_done: item %s does not exist", id);
        return store_abort(store, FQ_STORE_FAILED);
    }
    const char *frame_params[] = {id, c->frames_json};
    kind = store_exec(store, ST_DONE_FRAMES, 2, frame_params, NULL);
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    kind = store_command(store, "COMMIT", "mark_done commit");
    return kind == FQ_STORE_OK ? FQ_STORE_OK : store_abort(store, kind);
}

fq_error_t *fq_store_mark_done(fq_store_t *store, int64_t item_id, const fq_media_info_t *info,
                               const fq_stored_frame_t *frames, size_t count)
{
    /* Built once, outside the (possibly repeated) transaction. */
    char why[128];
    char *json = fq_store_frames_json(frames, count, why, sizeof(why));
    if (!json)
        return fq_error_new(FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, "mark_done: %s", why);
    done_ctx_t c = {.item_id = item_id, .info = info, .count = count, .frames_json = json};
    fq_error_t *err = store_run(store, done_body, &c);
    free(json);
    return err;
}

typedef struct error_ctx {
    const char *item[5]; /* platform, code, status, attempt, last_error */
    const char *row[9];  /* item_id (filled in), attempt, stage, class, message, worker, topic,
                            partition, offset */
} error_ctx_t;

static fq_store_kind_t error_body(fq_store_t *store, void *ctx)
{
    error_ctx_t *c = ctx;
    fq_store_kind_t kind = store_command(store, "BEGIN", "record_error");
    if (kind != FQ_STORE_OK)
        return kind;
    PGresult *res = NULL;
    kind = store_exec(store, ST_ERROR_ITEM, 5, c->item, &res);
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    char id[24];
    snprintf(id, sizeof(id), "%s", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    c->row[0] = id;
    kind = store_exec(store, ST_ERROR_ROW, 9, c->row, NULL);
    c->row[0] = NULL;
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    kind = store_command(store, "COMMIT", "record_error commit");
    return kind == FQ_STORE_OK ? FQ_STORE_OK : store_abort(store, kind);
}

fq_error_t *fq_store_record_error(fq_store_t *store, const fq_item_t *item, int attempt,
                                  const fq_error_t *err, const char *status,
                                  const fq_store_origin_t *origin)
{
    if (!status || (strcmp(status, "retrying") != 0 && strcmp(status, "dead") != 0))
        return fq_error_new(FQ_STAGE_STORE, FQ_CLASS_PERMANENT,
                            "record_error: status must be 'retrying' or 'dead', not '%s'",
                            status ? status : "(null)");
    fq_error_t *result = NULL;
    char attempt_s[16], partition[16], offset[24];
    snprintf(attempt_s, sizeof(attempt_s), "%d", attempt);
    const char *topic_raw = origin ? origin->topic : NULL;
    char *message = fq_store_utf8_clean(err ? fq_error_message(err) : NULL);
    char *worker = fq_store_utf8_clean(origin ? origin->worker : NULL);
    char *topic = fq_store_utf8_clean(topic_raw);
    if ((err && !message) || (origin && origin->worker && !worker) || (topic_raw && !topic)) {
        result = fq_error_new(FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, "record_error: out of memory");
        goto done;
    }
    if (topic) {
        snprintf(partition, sizeof(partition), "%" PRId32, origin->partition);
        snprintf(offset, sizeof(offset), "%" PRId64, origin->offset);
    }
    error_ctx_t c = {
        .item = {item->platform, item->code, status, attempt_s, message},
        .row = {NULL, attempt_s, err ? fq_stage_name(fq_error_stage(err)) : "store",
                err ? fq_class_name(fq_error_class(err)) : "retriable", message, worker, topic,
                topic ? partition : NULL, topic ? offset : NULL},
    };
    result = store_run(store, error_body, &c);
done:
    free(message);
    free(worker);
    free(topic);
    return result;
}

typedef struct status_ctx {
    const char *params[3];
} status_ctx_t;

static fq_store_kind_t status_body(fq_store_t *store, void *ctx)
{
    status_ctx_t *c = ctx;
    return store_exec(store, ST_SET_STATUS, 3, c->params, NULL);
}

fq_error_t *fq_store_set_status(fq_store_t *store, const char *platform, const char *code,
                                const char *status)
{
    static const char *const valid[] = {"queued", "processing", "done", "retrying", "dead"};
    bool ok = false;
    for (size_t i = 0; status && i < sizeof(valid) / sizeof(valid[0]); i++)
        ok = ok || strcmp(status, valid[i]) == 0;
    if (!ok)
        return fq_error_new(FQ_STAGE_STORE, FQ_CLASS_PERMANENT, "set_status: unknown status '%s'",
                            status ? status : "(null)");
    status_ctx_t c = {{platform, code, status}};
    return store_run(store, status_body, &c);
}
