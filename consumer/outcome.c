/* Outcomes: what a finished message's entries become (done, retry, DLQ, or an outage that
 * pauses the worker), the error rows recorded before anything is published, and the log lines
 * and metrics once an outcome is durable. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fq_log.h"
#include "worker_int.h"

void fq_worker_declare_metrics(fq_metrics_t *m)
{
    if (!m)
        return;
    fq_metrics_declare(m, "frameq_items_total", FQ_METRIC_COUNTER,
                       "Items by durable outcome (done, skipped, retry, dlq).");
    fq_metrics_declare(m, "frameq_retries_total", FQ_METRIC_COUNTER,
                       "Items sent to the retry topic, by failed attempt.");
    fq_metrics_declare(m, "frameq_dlq_total", FQ_METRIC_COUNTER,
                       "Messages sent to the dead-letter topic, by reason and stage.");
    fq_metrics_declare(m, "frameq_stage_seconds", FQ_METRIC_HISTOGRAM,
                       "Time spent per pipeline stage of successful items.");
    fq_metrics_declare(m, "frameq_inflight_items", FQ_METRIC_GAUGE,
                       "Items submitted to the pool and not finished.");
    fq_metrics_declare(m, "frameq_inflight_messages", FQ_METRIC_GAUGE,
                       "Messages in the window: running, waiting for their retry time, or "
                       "decided and not committed yet.");
    fq_metrics_declare(m, "frameq_circuit_open", FQ_METRIC_GAUGE,
                       "1 while a dependency outage pauses consumption.");
    fq_metrics_declare(m, "frameq_consumer_lag", FQ_METRIC_GAUGE,
                       "Messages behind the end of each assigned partition.");
    fq_metrics_declare(m, "frameq_ready", FQ_METRIC_GAUGE, "1 when the worker is ready.");
}

void fq_w_log_ctx(const msg_t *m, const entry_t *e, fq_log_ctx_t *ctx, char *key, size_t key_size)
{
    memset(ctx, 0, sizeof(*ctx));
    key[0] = '\0';
    if (e && e->item && e->keyed) {
        fq_item_key(e->item, key, key_size);
        ctx->item = key;
    }
    ctx->attempt = e ? e->attempt : 0;
    ctx->topic = m->topic;
    ctx->partition = m->partition;
    ctx->offset = m->offset;
}

/* Item outcome lines and metrics, once the outcome is durable. */
static void report_entry(fq_worker_t *w, const msg_t *m, const entry_t *e)
{
    fq_log_ctx_t ctx;
    char key[FQ_ITEM_KEY_MAX];
    fq_w_log_ctx(m, e, &ctx, key, sizeof(key));
    ctx.duration_ms = e->job ? e->job->ms : 0;
    if (!e->err) {
        const fq_outcome_t *out = &e->job->out;
        ctx.outcome = out->skipped ? "skipped" : "done";
        ctx.stage = "store";
        M_ADD(w, "frameq_items_total", 1.0, "outcome", ctx.outcome, NULL);
        if (!out->skipped) {
            M_OBS(w, "frameq_stage_seconds", out->ms_fetch / 1000.0, "stage", "fetch", NULL);
            M_OBS(w, "frameq_stage_seconds", out->ms_frames / 1000.0, "stage", "frames", NULL);
            M_OBS(w, "frameq_stage_seconds", out->ms_upload / 1000.0, "stage", "upload", NULL);
            M_OBS(w, "frameq_stage_seconds", out->ms_store / 1000.0, "stage", "store", NULL);
        }
        if (out->info.chunks > 1) /* lent cores: worth seeing in the log */
            FQ_INFO(&ctx, "item %s: %d frame(s), decoded in %d chunks (%d by %d helper thread(s))",
                    ctx.outcome, out->info.frame_count, out->info.chunks, out->info.chunks_helped,
                    out->info.chunk_helpers);
        else
            FQ_INFO(&ctx, "item %s: %d frame(s)", ctx.outcome, out->info.frame_count);
        return;
    }
    ctx.stage = fq_stage_name(fq_error_stage(e->err));
    ctx.error_class = fq_class_name(fq_error_class(e->err));
    if (e->route.kind == FQ_ROUTE_RETRY) {
        char num[16];
        snprintf(num, sizeof(num), "%d", e->attempt);
        ctx.outcome = "retry";
        M_ADD(w, "frameq_items_total", 1.0, "outcome", "retry", NULL);
        M_ADD(w, "frameq_retries_total", 1.0, "attempt", num, NULL);
    } else {
        ctx.outcome = "dlq";
        M_ADD(w, "frameq_items_total", 1.0, "outcome", "dlq", NULL);
        M_ADD(w, "frameq_dlq_total", 1.0, "reason", e->route.dlq_reason, "stage", ctx.stage, NULL);
    }
    FQ_WARN(&ctx, "item failed -> %s: %s", ctx.outcome, fq_error_message(e->err));
}

void fq_w_report(fq_worker_t *w, const msg_t *m)
{
    for (size_t i = 0; i < m->nentries; i++) {
        report_entry(w, m, &m->entries[i]);
        if (m->entries[i].route.kind == FQ_ROUTE_DLQ)
            w->dlq_sent++;
    }
    FQ_DEBUG(NULL, "message %s [%d] @%" PRId64 " committed (%zu routed, %" PRId64 " ms)", m->topic,
             (int)m->partition, m->offset, m->nrouted, fq_time_mono_ms() - m->t0);
}

/* Routes every entry; feeds the breaker with main-topic items. Returns the outage reason in
 * reason (empty when none) and its kind. */
static outage_kind_t route_entries(fq_worker_t *w, msg_t *m, char *reason, size_t reason_size)
{
    const bool from_main = strcmp(m->topic, w->cfg->kafka_topic) == 0;
    char breaker_reason[700] = "";
    reason[0] = '\0';
    m->nrouted = 0;
    for (size_t i = 0; i < m->nentries; i++) {
        entry_t *e = &m->entries[i];
        if (e->job)
            e->err = e->job->err;
        e->route = fq_route_decide(e->err, e->attempt, w->cfg->max_retries);
        if (e->route.kind == FQ_ROUTE_OUTAGE && !reason[0])
            snprintf(reason, reason_size, "%s: %s", fq_stage_name(fq_error_stage(e->err)),
                     fq_error_message(e->err));
        char key[FQ_ITEM_KEY_MAX] = "";
        if (e->item)
            fq_item_key(e->item, key, sizeof(key));
        /* Only the main topic feeds the breaker: retry messages are items that failed before,
         * so a streak of failures there says little about a dependency. */
        if (e->job && from_main && fq_breaker_feed(&w->breaker, key, e->err, fq_time_mono_ms()) &&
            !breaker_reason[0] && e->err)
            snprintf(breaker_reason, sizeof(breaker_reason),
                     "circuit open: stage %s failed for %d different items in a row: %s",
                     fq_stage_name(fq_error_stage(e->err)), BREAKER_K, fq_error_message(e->err));
        if (e->route.kind == FQ_ROUTE_RETRY || e->route.kind == FQ_ROUTE_DLQ)
            m->nrouted++;
    }
    /* The breaker makes this message an outage only if it is still open after all of its
     * items: one item getting through in the same message proves the dependency works. */
    if (!reason[0] && breaker_reason[0] && w->breaker.open) {
        snprintf(reason, reason_size, "%s", breaker_reason);
        return OUTAGE_BREAKER;
    }
    return OUTAGE_PROBED;
}

/* Records the extraction_errors row of every routed entry: a routed item always has its row
 * before its retry/DLQ message exists. */
static int record_errors(fq_worker_t *w, const msg_t *m, char *reason, size_t reason_size)
{
    for (size_t i = 0; i < m->nentries; i++) {
        const entry_t *e = &m->entries[i];
        if (!e->route.status || !e->item || !e->keyed)
            continue;
        fq_store_origin_t origin = {w->cfg->worker_id, m->topic, m->partition, m->offset};
        fq_error_t *serr = w->hooks.record_error
                               ? w->hooks.record_error(w->hooks.ctx, e->item, e->attempt, e->err,
                                                       e->route.status, &origin)
                               : fq_store_record_error(w->store, e->item, e->attempt, e->err,
                                                       e->route.status, &origin);
        if (serr) {
            snprintf(reason, reason_size, "database: %s", fq_error_message(serr));
            fq_error_destroy(serr);
            return -1;
        }
    }
    return 0;
}

void fq_w_log_cancelled(const msg_t *m)
{
    /* Where each unfinished item stopped is worth a line: nothing else records it. */
    const char *why = m->cancel_why ? m->cancel_why : "(cancelled)";
    for (size_t i = 0; i < m->nentries; i++) {
        const entry_t *e = &m->entries[i];
        const fq_error_t *err = e->job ? e->job->err : e->err;
        if (!err)
            continue;
        fq_log_ctx_t ctx;
        char key[FQ_ITEM_KEY_MAX];
        fq_w_log_ctx(m, e, &ctx, key, sizeof(key));
        ctx.stage = fq_stage_name(fq_error_stage(err));
        ctx.outcome = "abandoned";
        FQ_INFO(&ctx, "item abandoned %s: %s", why, fq_error_message(err));
    }
    FQ_INFO(NULL, "message %s [%d] @%" PRId64 " abandoned without commit (cancelled %s)", m->topic,
            (int)m->partition, m->offset, why);
}

fin_rc_t fq_w_decide(fq_worker_t *w, msg_t *m)
{
    char reason[700];
    if (atomic_load(&m->cancel)) {
        fq_w_log_cancelled(m); /* whoever reads the partition next replays it */
        return FIN_REPLAY;
    }
    outage_kind_t kind = route_entries(w, m, reason, sizeof(reason));
    if (!reason[0] && record_errors(w, m, reason, sizeof(reason)) < 0)
        kind = OUTAGE_PROBED;
    if (reason[0]) {
        fq_w_enter_outage(w, kind, reason);
        return FIN_OUTAGE;
    }
    return FIN_OK;
}
