/* producer redrive: moves dead items from the DLQ back to the main or retry topic.
 *
 * Redrive contract (what the consumer relies on):
 *  - --to main: the item becomes a fresh one-item batch message (new batch_id as key) with a
 *    header frameq-redrive-count = previous + 1. Items stay simple: the count lives only in the
 *    header, and the consumer copies the source message's headers onto retry/DLQ messages, so
 *    it survives the trip through the main topic.
 *  - --to retry: the DLQ value (the item as received) with the DLQ headers carried over,
 *    frameq-dlq-reason removed, frameq-attempt=0 (no failure since the redrive: the consumer
 *    runs it as attempt 1), frameq-not-before=now, frameq-redrive-count = previous + 1.
 *  - Loop guard: entries with frameq-redrive-count >= --max-redrives are skipped and reported.
 *  - The produced messages and the group's DLQ offsets commit in one transaction
 *    (transactional.id "frameq-redrive-<group>"), in chunks of <= 500 messages / 1 s; a crash
 *    loses at most the open chunk, which the next run redrives, never twice. The partitions
 *    are assign()ed from the group's committed offsets (no rebalance wait; the end of the DLQ
 *    is known exactly) and the group's position advances over every message read, matching
 *    the filters or not: a different filter set later needs another --group.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "fq_buf.h"
#include "fq_cli.h"
#include "fq_config.h"
#include "fq_headers.h"
#include "fq_item.h"
#include "fq_kafka.h"
#include "fq_log.h"
#include "fq_producer.h"
#include "fq_store.h"

typedef struct redrive_stats {
    uint64_t read, redriven, not_matching, loop_guard, malformed, db_errors;
} redrive_stats_t;

/* A malloc'd copy of the message's value (a 1-byte buffer for an empty one); NULL on OOM. */
static char *value_copy(const rd_kafka_message_t *rkm)
{
    char *value = malloc(rkm->len ? rkm->len : 1);
    if (value && rkm->len)
        memcpy(value, rkm->payload, rkm->len);
    return value;
}

/* Builds and produces the redrive message for one DLQ message. 0, or -1. */
static int redrive_one(rd_kafka_t *rk, const fq_config_t *cfg, const fq_cli_opts_t *o,
                       const rd_kafka_message_t *rkm, const fq_item_t *item,
                       const fq_dlq_entry_t *e)
{
    bool to_retry = !strcmp(o->to, "retry");
    rd_kafka_headers_t *hdrs = NULL;
    const rd_kafka_headers_t *src = NULL;
    char *value = NULL;
    size_t len = 0;
    char batch_id[37];
    const void *key = rkm->key;
    size_t key_len = rkm->key_len;
    int herr = 0; /* the rd_kafka errors of the header edits, or'ed */

    if (to_retry) {
        /* The DLQ value is the item as received: the retry topic takes it unchanged, with the
         * history headers carried over and a fresh attempt counter. */
        if (rd_kafka_message_headers(rkm, (rd_kafka_headers_t **)&src) == 0 && src)
            hdrs = rd_kafka_headers_copy(src);
        else
            hdrs = rd_kafka_headers_new(8);
        herr |= fq_headers_set(hdrs, FQ_HDR_DLQ_REASON, NULL);
        herr |= fq_headers_set_int(hdrs, FQ_HDR_ATTEMPT, 0);
        herr |= fq_headers_set_int(hdrs, FQ_HDR_NOT_BEFORE, fq_time_now_ms());
        value = value_copy(rkm);
        if (!value)
            goto fail;
        len = rkm->len;
    } else {
        hdrs = rd_kafka_headers_new(2);
        fq_uuid4(batch_id);
        key = batch_id;
        key_len = 36;
        if (item) {
            char at[40];
            fq_time_rfc3339(fq_time_now_ms(), at, sizeof(at));
            value = fq_batch_encode(batch_id, at, item, 1, &len);
        } else {
            /* --include-malformed: the raw bytes as they were */
            value = value_copy(rkm);
            len = rkm->len;
        }
        if (!value)
            goto fail;
    }
    herr |= fq_headers_set_int(hdrs, FQ_HDR_REDRIVE_COUNT, e->redrive_count + 1);
    if (herr) {
        fq_cli_say("redrive %s: cannot set its headers", e->key);
        goto fail;
    }
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(to_retry ? cfg->kafka_retry_topic : cfg->kafka_topic),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(value, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (!err)
            return 0; /* value and hdrs now owned by librdkafka */
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            char fatal[256] = "";
            if (err == RD_KAFKA_RESP_ERR__FATAL)
                rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
            /* Fenced: a newer redrive of the same group took over; its offsets exclude our
             * open transaction, which the broker aborts, so nothing is lost or doubled. */
            fq_cli_say("redrive %s: %s%s%s", e->key, rd_kafka_err2str(err), fatal[0] ? ": " : "",
                       fatal);
            goto fail;
        }
        rd_kafka_poll(rk, 50);
    }
fail:
    free(value);
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    return -1;
}

/* The database URL is used only when set explicitly (env, file or flag), not by default. */
static bool db_configured(const fq_config_t *cfg)
{
    return fq_config_origin(cfg, "DATABASE_URL") != FQ_ORIGIN_DEFAULT;
}

/* One run's state: the transactional producer, the DLQ reader whose offsets it commits, and
 * the items of the open transaction, set 'queued' in the database once it commits. */
typedef struct redrive {
    const fq_config_t *cfg;
    const fq_cli_opts_t *o;
    rd_kafka_t *rk;    /* the transactional producer; NULL on --dry-run */
    fq_store_t *store; /* NULL without a configured database or with --no-db */
    fq_dlq_reader_t r;
    bool in_txn;
    int64_t txn_started;
    fq_progress_t line; /* its t0: the start of the reading, for --rate too */
    fq_item_t *pending;
    size_t pending_n, pending_cap;
    redrive_stats_t rs;
} redrive_t;

/* The transactional producer of group's redrive, transactions initialised; NULL after printing
 * why. Initialised BEFORE the group's offsets are read: init_transactions fences (and aborts)
 * an older redrive of the same group, so the offsets read afterwards include everything that
 * one committed. */
static rd_kafka_t *transactional_producer(const fq_config_t *cfg, const fq_cli_opts_t *o,
                                          const char *group)
{
    char errstr[512], txid[300], tmo[32];
    /* One transactional id per group: a second redrive of the same group fences the first
     * instead of both redriving the same messages. */
    snprintf(txid, sizeof(txid), "frameq-redrive-%s", group);
    snprintf(tmo, sizeof(tmo), "%" PRId64, o->timeout_ms);
    rd_kafka_conf_t *conf = fq_kafka_conf(cfg, errstr, sizeof(errstr));
    if (!conf || fq_kafka_force(conf, "transactional.id", txid, errstr, sizeof(errstr)) ||
        fq_kafka_force(conf, "enable.idempotence", "true", errstr, sizeof(errstr)) ||
        fq_kafka_force(conf, "acks", "all", errstr, sizeof(errstr)) ||
        fq_kafka_default(conf, cfg, "message.timeout.ms", tmo, errstr, sizeof(errstr))) {
        fq_cli_say("%s", errstr);
        if (conf)
            rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = fq_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fq_cli_say("%s", errstr);
        return NULL;
    }
    /* Set-up, bounded by --timeout like every other call of the run: not retried. */
    rd_kafka_error_t *error = rd_kafka_init_transactions(rk, (int)o->timeout_ms);
    if (error) {
        fq_cli_say("could not init transactions at KAFKA_BROKERS=%s: %s", cfg->kafka_brokers,
                   rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

/* A transactional call (send offsets, commit) that fails retriably under the one policy
 * (fq_kafka_txn_failed) is made again: TXN_TRIES calls in all. */
#define TXN_TRIES 3

/* Commits the open transaction with the DLQ offsets reached so far. 0, or -1: not committed.
 * An abortable failure was aborted (once) by the policy and a fatal one leaves nothing to
 * abort: both close the transaction. Retries used up or an outage: its state is unknown and
 * fq_cli_redrive's exit aborts it once. Either way a rerun of the group redrives exactly what
 * the transaction held. */
static int txn_commit(redrive_t *rd)
{
    int tmo = (int)rd->o->timeout_ms;
    fq_dlq_reader_t *r = &rd->r;
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(r->nparts);
    for (int i = 0; i < r->nparts; i++)
        if (r->next[i] >= 0)
            rd_kafka_topic_partition_list_add(offsets, r->parts->elems[i].topic,
                                              r->parts->elems[i].partition)
                ->offset = r->next[i];
    rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(r->rk);
    fq_kafka_txn_t klass = FQ_KAFKA_TXN_OK;
    for (int tries = 0; offsets->cnt && tries < TXN_TRIES; tries++) {
        rd_kafka_error_t *error = rd_kafka_send_offsets_to_transaction(rd->rk, offsets, cgmd, tmo);
        klass = fq_kafka_txn_failed(rd->rk, "redrive: send offsets to transaction", error, tmo);
        if (klass != FQ_KAFKA_TXN_RETRY)
            break;
    }
    rd_kafka_consumer_group_metadata_destroy(cgmd);
    rd_kafka_topic_partition_list_destroy(offsets);
    for (int tries = 0; klass == FQ_KAFKA_TXN_OK && tries < TXN_TRIES; tries++) {
        rd_kafka_error_t *error = rd_kafka_commit_transaction(rd->rk, tmo);
        klass = fq_kafka_txn_failed(rd->rk, "redrive: commit transaction", error, tmo);
        if (klass != FQ_KAFKA_TXN_RETRY)
            break;
        if (tries + 1 < TXN_TRIES)
            klass = FQ_KAFKA_TXN_OK; /* call it again */
    }
    if (klass == FQ_KAFKA_TXN_OK) {
        rd->in_txn = false;
        return 0;
    }
    if (klass == FQ_KAFKA_TXN_ABORT || klass == FQ_KAFKA_TXN_FATAL)
        rd->in_txn = false;
    fq_cli_say("redrive transaction not committed (%s); a rerun of the same group "
               "redrives what it held, nothing twice",
               fq_kafka_txn_name(klass));
    return -1;
}

/* Opens a transaction unless one is open. 0, or -1 after printing why. */
static int txn_begin(redrive_t *rd)
{
    if (rd->in_txn)
        return 0;
    rd_kafka_error_t *error = rd_kafka_begin_transaction(rd->rk);
    if (error) {
        (void)fq_kafka_txn_failed(rd->rk, "redrive: begin transaction", error,
                                  (int)rd->o->timeout_ms);
        return -1;
    }
    rd->in_txn = true;
    rd->txn_started = fq_time_mono_ms();
    return 0;
}

#define DB_ERRORS_LOGGED 5

/* Commits the open transaction, then sets its items 'queued' (a database error is counted and
 * logged: the items are redriven either way). 0, or -1 (aborted). */
static int txn_commit_and_mark(redrive_t *rd)
{
    if (txn_commit(rd) != 0)
        return -1;
    for (size_t i = 0; i < rd->pending_n; i++) {
        fq_item_t *item = &rd->pending[i];
        fq_error_t *err = fq_store_set_status(rd->store, item->platform, item->code, "queued");
        if (err) {
            /* A database without the schema fails every item alike: the first few say why,
             * the summary counts them all. */
            if (++rd->rs.db_errors <= DB_ERRORS_LOGGED)
                FQ_WARN(NULL, "redrive: could not set %s:%s queued: %s%s", item->platform,
                        item->code, fq_error_message(err),
                        rd->rs.db_errors == DB_ERRORS_LOGGED ? " (further ones are counted only)"
                                                             : "");
            fq_error_destroy(err);
        }
        fq_item_clear(item);
    }
    rd->pending_n = 0;
    return 0;
}

/* What fq_redrive_decide says of one entry, counted and, for a skip worth knowing, reported.
 * True when the entry is to be redriven. */
static bool redrive_wanted(redrive_t *rd, const rd_kafka_message_t *rkm, const fq_dlq_entry_t *e,
                           bool decoded)
{
    const fq_cli_opts_t *o = rd->o;
    switch (fq_redrive_decide(&o->filter, e, decoded, o->max_redrives, o->include_malformed)) {
    case FQ_REDRIVE_NOT_MATCHING:
        rd->rs.not_matching++;
        return false;
    case FQ_REDRIVE_LOOP_GUARD:
        rd->rs.loop_guard++;
        fq_cli_say("skipped %s (partition %" PRId32 ", offset %" PRId64 "): redriven %" PRId64
                   " times already (--max-redrives %" PRId64 ")",
                   e->key[0] ? e->key : "-", rkm->partition, rkm->offset, e->redrive_count,
                   o->max_redrives);
        return false;
    case FQ_REDRIVE_MALFORMED:
        rd->rs.malformed++;
        fq_cli_say("skipped malformed entry (partition %" PRId32 ", offset %" PRId64
                   ", %zu bytes; --include-malformed redrives it as is)",
                   rkm->partition, rkm->offset, rkm->len);
        return false;
    case FQ_REDRIVE_TAKE:
        break;
    }
    return true;
}

/* Produces one wanted entry inside the open transaction (opening one if needed), at most
 * --rate a second, and remembers its item for the database. 0, or -1. */
static int redrive_take(redrive_t *rd, const rd_kafka_message_t *rkm, const fq_item_t *item,
                        const fq_dlq_entry_t *e)
{
    if (txn_begin(rd) != 0)
        return -1;
    if (rd->o->rate > 0) {
        int64_t due = rd->line.t0 + (int64_t)((double)rd->rs.redriven * 1000.0 / rd->o->rate);
        while (fq_time_mono_ms() < due && !fq_cli_stop)
            rd_kafka_poll(rd->rk, 10);
    }
    if (redrive_one(rd->rk, rd->cfg, rd->o, rkm, item, e) != 0)
        return -1;
    rd->rs.redriven++;
    if (item && rd->store) {
        size_t had = rd->pending_cap;
        fq_item_t *p = fq_grow(rd->pending, &rd->pending_cap, rd->pending_n, sizeof(*p), 128);
        if (p) { /* the cleanup clears every slot up to pending_cap */
            memset(p + had, 0, (rd->pending_cap - had) * sizeof(*p));
            rd->pending = p;
        }
        if (rd->pending_n < rd->pending_cap && fq_item_copy(&rd->pending[rd->pending_n], item) == 0)
            rd->pending_n++;
    }
    return 0;
}

/* Handles one DLQ message (consumed: it is destroyed here): decide, redrive or print it
 * (--dry-run), advance the partition's position, commit a full chunk. 0, or -1. */
static int redrive_message(redrive_t *rd, rd_kafka_message_t *rkm)
{
    int rc = 0;
    rd->rs.read++;
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_message_headers(rkm, &hdrs);
    fq_dlq_entry_t e;
    fq_dlq_entry_from(&e, rkm->key, rkm->key_len, hdrs);
    fq_item_t item;
    fq_error_t *derr = fq_item_decode(rkm->payload, rkm->len, &item);
    bool decoded = !derr;
    fq_error_destroy(derr);
    if (decoded && !e.platform[0])
        snprintf(e.platform, sizeof(e.platform), "%s", item.platform);
    if (decoded && !e.key[0])
        fq_item_key(&item, e.key, sizeof(e.key));

    if (redrive_wanted(rd, rkm, &e, decoded)) {
        if (rd->o->dry_run) {
            fq_dlq_table_row(&e);
            rd->rs.redriven++;
        } else if (redrive_take(rd, rkm, decoded ? &item : NULL, &e) != 0) {
            rc = -1;
        }
    }
    int pi = fq_dlq_part_index(&rd->r, rkm->partition);
    if (rc == 0 && pi >= 0)
        rd->r.next[pi] = rkm->offset + 1;
    if (decoded)
        fq_item_clear(&item);
    rd_kafka_message_destroy(rkm);
    if (rc != 0)
        return -1;

    /* Short transactions: a crash loses at most one chunk of work, never duplicates. */
    if (!rd->o->dry_run && rd->in_txn &&
        (fq_time_mono_ms() - rd->txn_started > 1000 || rd->pending_n >= 500 ||
         (rd->rs.redriven % 500) == 0))
        return txn_commit_and_mark(rd);
    return 0;
}

/* The progress line: how far into the DLQ, what was redriven and skipped so far. */
static void redrive_progress(redrive_t *rd, bool final)
{
    char extra[96];
    snprintf(extra, sizeof(extra), "%" PRIu64 " redriven, %" PRIu64 " skipped", rd->rs.redriven,
             rd->rs.not_matching + rd->rs.loop_guard + rd->rs.malformed);
    fq_dlq_progress(&rd->r, &rd->line, final, "redrive", extra);
}

/* The last commit; also commits the position over skipped messages when nothing was
 * redriven. 0, or -1. */
static int redrive_finish(redrive_t *rd)
{
    bool any = false;
    for (int i = 0; i < rd->r.nparts; i++)
        any |= rd->r.next[i] >= 0;
    if (any && txn_begin(rd) != 0)
        return -1;
    if (rd->in_txn)
        return txn_commit_and_mark(rd);
    return 0;
}

int fq_cli_redrive(const fq_config_t *cfg, const fq_cli_opts_t *o)
{
    int rc = FQ_EXIT_DELIVERY;
    char group[256];
    const char *to_topic = !strcmp(o->to, "retry") ? cfg->kafka_retry_topic : cfg->kafka_topic;
    redrive_t rd = {.cfg = cfg, .o = o, .pending_cap = 128};
    rd.pending = calloc(rd.pending_cap, sizeof(*rd.pending));
    if (!rd.pending)
        return FQ_EXIT_DELIVERY;

    if (o->group)
        snprintf(group, sizeof(group), "%s", o->group);
    else
        snprintf(group, sizeof(group), "%s.redrive", cfg->kafka_group_id);
    if (!o->dry_run) {
        rd.rk = transactional_producer(cfg, o, group);
        if (!rd.rk || fq_cli_topic_missing(rd.rk, to_topic, o))
            goto done;
        if (!o->no_db && db_configured(cfg))
            rd.store = fq_store_new(cfg->database_url);
        FQ_INFO(NULL, "redrive: %s -> %s, group %s, database %s (librdkafka %s)",
                cfg->kafka_dlq_topic, to_topic, group, rd.store ? "on" : "off",
                rd_kafka_version_str());
    }
    int orc = fq_dlq_open(cfg, group, true, o->timeout_ms, &rd.r);
    if (orc) {
        rc = orc;
        goto done;
    }
    if (o->dry_run)
        fq_dlq_table_header();

    fq_progress_start(&rd.line, fq_progress_wanted(o, o->dry_run)); /* a dry run prints rows */
    if (rd.line.on)
        (void)fq_dlq_measure(&rd.r, o->timeout_ms); /* without it: counts, no percentage */
    bool failed = false;
    rd_kafka_message_t *rkm = NULL;
    while ((o->limit < 0 || (int64_t)rd.rs.redriven < o->limit) &&
           (rkm = fq_dlq_next(&rd.r, o->timeout_ms, &failed))) {
        if (redrive_message(&rd, rkm) != 0)
            goto done;
        redrive_progress(&rd, false);
    }
    if (failed && !fq_cli_stop)
        goto done;
    if (!o->dry_run && redrive_finish(&rd) != 0)
        goto done;
    redrive_progress(&rd, true);

    rc = fq_cli_stop ? FQ_EXIT_DELIVERY : 0;
    printf("%" PRIu64 " redriven%s to %s (%" PRIu64 " read; skipped: %" PRIu64
           " not matching, %" PRIu64 " loop guard, %" PRIu64 " malformed)\n",
           rd.rs.redriven, o->dry_run ? " (dry run: nothing sent or committed)" : "", to_topic,
           rd.rs.read, rd.rs.not_matching, rd.rs.loop_guard, rd.rs.malformed);
    if (rd.rs.db_errors)
        fq_cli_say("%" PRIu64 " items could not be set 'queued' in the database", rd.rs.db_errors);

done:
    fq_progress_end(&rd.line);
    /* An open transaction that did not fail (stopped, or a message not produced), or whose
     * state is unknown: aborted once. After a fatal error there is nothing left to abort. */
    if (rd.rk && rd.in_txn && !rd_kafka_fatal_error(rd.rk, NULL, 0))
        (void)fq_kafka_txn_abort(rd.rk, (int)o->timeout_ms);
    for (size_t i = 0; i < rd.pending_cap; i++)
        fq_item_clear(&rd.pending[i]);
    free(rd.pending);
    fq_store_destroy(rd.store);
    if (rd.rk) {
        rd_kafka_flush(rd.rk, (int)o->timeout_ms);
        rd_kafka_destroy(rd.rk);
    }
    fq_dlq_close(&rd.r);
    return rc;
}
