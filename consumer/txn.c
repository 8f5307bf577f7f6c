/* The transactional producer: its construction, init_transactions, the warm-up of the retry
 * and DLQ topics' metadata, one transaction that publishes the routed entries of settled
 * messages with the offsets that cover them, and the renewal of a producer that failed fatally. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fq_headers.h"
#include "fq_kafka.h"
#include "fq_http.h" /* fq_sha256_hex */
#include "fq_log.h"
#include "worker_int.h"

rd_kafka_t *fq_w_new_producer(fq_worker_t *w, char *errstr, size_t errstr_size)
{
    const fq_config_t *cfg = w->cfg;
    rd_kafka_conf_t *conf = fq_kafka_conf(cfg, errstr, errstr_size);
    if (!conf)
        return NULL;
    if (fq_kafka_force(conf, "transactional.id", w->txn_id, errstr, errstr_size) ||
        fq_kafka_force(conf, "enable.idempotence", "true", errstr, errstr_size) ||
        fq_kafka_default(conf, cfg, "linger.ms", "2", errstr, errstr_size) ||
        fq_kafka_default(conf, cfg, "transaction.timeout.ms", "60000", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    char ms[32];
    size_t ms_size = sizeof(ms);
    w->txn_timeout_ms = 60000;
    if (rd_kafka_conf_get(conf, "transaction.timeout.ms", ms, &ms_size) == RD_KAFKA_CONF_OK)
        w->txn_timeout_ms = (int)strtol(ms, NULL, 10);
    atomic_store(&w->pevents.fatal, false);
    w->pevents.user = w;
    fq_kafka_set_callbacks(conf, &w->pevents);
    return fq_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
}

/* What the worker does after a transactional call failed (fq_kafka_txn_failed has logged it,
 * and aborted an abortable transaction once). A retriable failure other than a commit on its way
 * (fq_w_txn_resume) is handled as an outage: the abort stays owed until the cluster answers. */
static fin_rc_t txn_rc(fq_worker_t *w, fq_kafka_txn_t klass)
{
    /* A call that timed out or found no broker counts toward the producer's silence (the
     * consumer's is probed): librdkafka may have dropped its brokers too (fq_kafka_probe). */
    fq_kafka_watch(w->rkp, w->cfg->kafka_brokers, &w->producer_watch,
                   klass == FQ_KAFKA_TXN_OUTAGE ? "a transactional call failed" : NULL);
    switch (klass) {
    case FQ_KAFKA_TXN_OK:
        w->txn_dirty = false;
        return FIN_OK;
    case FQ_KAFKA_TXN_ABORT:
        w->txn_dirty = false;
        return FIN_REPLAY;
    case FQ_KAFKA_TXN_FATAL:
        w->fatal = true;
        return FIN_FATAL;
    case FQ_KAFKA_TXN_RETRY:
    case FQ_KAFKA_TXN_OUTAGE:
    default:
        w->txn_dirty = true;
        return FIN_OUTAGE;
    }
}

/* Aborts the open transaction; a failed abort is owed until it succeeds (a timed-out one is
 * resumed by the next call). */
static fin_rc_t txn_abort(fq_worker_t *w, int timeout_ms)
{
    return txn_rc(w, fq_kafka_txn_abort(w->rkp, timeout_ms));
}

static fin_rc_t txn_failed(fq_worker_t *w, const char *what, rd_kafka_error_t *error)
{
    return txn_rc(w, fq_kafka_txn_failed(w->rkp, what, error, COMMIT_WAIT_MS));
}

/* Publishes one routed entry of m (inside the open transaction). */
static int produce_entry(fq_worker_t *w, const msg_t *m, const entry_t *e,
                         const rd_kafka_headers_t *incoming)
{
    const fq_config_t *cfg = w->cfg;
    fq_route_info_t info = {
        .attempt = e->attempt,
        .err = e->err,
        .dlq_reason = e->route.kind == FQ_ROUTE_DLQ ? e->route.dlq_reason : NULL,
        .now_ms = fq_time_now_ms(),
        .topic = m->topic,
        .partition = m->partition,
        .offset = m->offset,
        .worker = cfg->worker_id,
    };
    if (e->route.kind == FQ_ROUTE_RETRY) {
        int64_t ra = e->err ? fq_error_retry_after_ms(e->err) : 0;
        info.not_before_ms =
            info.now_ms + fq_backoff_ms(cfg->retry_backoff_ms, cfg->retry_backoff_max_ms,
                                        e->attempt, ra, fq_backoff_random(&w->rng));
    }
    rd_kafka_headers_t *hdrs = fq_route_headers(incoming, &info);
    if (!hdrs)
        return -1;
    const char *topic =
        e->route.kind == FQ_ROUTE_RETRY ? cfg->kafka_retry_topic : cfg->kafka_dlq_topic;
    char key[FQ_ITEM_KEY_MAX] = "";
    const void *value, *kptr = NULL;
    size_t len, klen = 0;
    if (e->item) {
        value = e->item->json;
        len = e->item->json ? strlen(e->item->json) : 0;
        if (e->keyed) {
            fq_item_key(e->item, key, sizeof(key));
            kptr = key;
            klen = strlen(key);
        }
    } else {
        /* Malformed: the raw bytes, key and headers exactly as received. */
        value = m->rkm->payload;
        len = m->rkm->len;
        kptr = m->rkm->key;
        klen = m->rkm->key_len;
        if (len > FQ_DLQ_VALUE_MAX) {
            /* It arrived compressed, but would not fit the DLQ as it is: an outage would replay
             * it forever and stall the partition. Keep the first bytes, its size and its hash;
             * the whole message stays at its origin offset until the main topic's retention
             * ends. */
            char sha[65];
            fq_sha256_hex(value, len, sha);
            int herr = fq_headers_set_int(hdrs, FQ_HDR_ORIGINAL_SIZE, (int64_t)len);
            herr |= fq_headers_set(hdrs, FQ_HDR_ORIGINAL_SHA256, sha);
            char why[FQ_ERROR_MESSAGE_MAX];
            snprintf(why, sizeof(why),
                     "message of %zu bytes is larger than the DLQ takes (%d): value cut to its "
                     "first %d bytes; the original is at %s [%d] @%" PRId64,
                     len, FQ_DLQ_VALUE_MAX, FQ_DLQ_VALUE_MAX, m->topic, (int)m->partition,
                     m->offset);
            herr |= fq_headers_set(hdrs, FQ_HDR_ERROR, why);
            if (herr) {
                rd_kafka_headers_destroy(hdrs);
                return -1;
            }
            FQ_WARN(NULL, "%s", why);
            len = FQ_DLQ_VALUE_MAX;
        }
    }
    rd_kafka_resp_err_t perr;
    for (;;) {
        perr = rd_kafka_producev(w->rkp, RD_KAFKA_V_TOPIC(topic),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_KEY(kptr, klen), RD_KAFKA_V_VALUE((void *)value, len),
                                 RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (perr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(w->rkp, 100);
    }
    if (perr) {
        rd_kafka_headers_destroy(hdrs); /* not taken on failure */
        FQ_WARN(NULL, "produce to %s: %s", topic, rd_kafka_err2str(perr));
        return -1;
    }
    return 0; /* hdrs now owned by the message */
}

static int produce_routed(fq_worker_t *w, const msg_t *m)
{
    const rd_kafka_headers_t *incoming = NULL;
    if (rd_kafka_message_headers(m->rkm, (rd_kafka_headers_t **)&incoming) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        incoming = NULL;
    for (size_t i = 0; i < m->nentries; i++) {
        const entry_t *e = &m->entries[i];
        if (e->route.kind != FQ_ROUTE_RETRY && e->route.kind != FQ_ROUTE_DLQ)
            continue;
        if (produce_entry(w, m, e, incoming) < 0)
            return -1;
    }
    return 0;
}

/* An abort owed since a transactional call failed (txn_dirty) is paid as soon as Kafka answers,
 * not at the next transaction: until then the open transaction holds back the last stable offset
 * of every partition it wrote to, so read_committed readers (the retry role, operators reading
 * the DLQ) see nothing past it until the coordinator times it out. A worker that routes nothing
 * more (its partitions lost in the outage, or stopping) would otherwise never send it. */
void fq_w_txn_pay_abort(fq_worker_t *w, int timeout_ms)
{
    if (!w->txn_dirty || w->ntxn || w->fatal || !w->txn_ready)
        return;
    fin_rc_t rc = txn_abort(w, timeout_ms);
    if (rc == FIN_OK)
        FQ_INFO(NULL, "the transaction left open by a failed call is aborted");
    else if (rc == FIN_OUTAGE && !w->stopping) /* tried again once the probes pass */
        fq_w_enter_outage(w, OUTAGE_PROBED, "kafka: aborting the open transaction failed");
}

fin_rc_t fq_w_txn_commit(fq_worker_t *w, msg_t **msgs, size_t n,
                         const rd_kafka_topic_partition_list_t *offsets)
{
    rd_kafka_error_t *error;
    if (w->txn_dirty) {
        fin_rc_t rc = txn_abort(w, COMMIT_WAIT_MS);
        if (rc != FIN_OK)
            return rc;
    }
    error = rd_kafka_begin_transaction(w->rkp);
    if (error)
        return txn_failed(w, "begin transaction", error);
    for (size_t i = 0; i < n; i++) {
        if (produce_routed(w, msgs[i]) < 0) {
            txn_abort(w, COMMIT_WAIT_MS);
            return FIN_OUTAGE;
        }
    }
    error = fq_w_txn_offsets_start(w, offsets);
    if (error)
        return txn_failed(w, "send offsets to transaction", error);
    return fq_w_txn_resume(w);
}

/* One slice of the commit (after the offsets, txn_offsets.c): librdkafka's commit is resumable, so
 * a commit that takes longer (the cluster away, a coordinator moving) goes on in the background
 * while the loop serves the group; the next turn calls again. Messages not delivered time out after
 * transaction.timeout.ms, which makes the transaction abortable (FIN_REPLAY); a commit whose
 * messages were delivered can wait for an answer for good, which the caller bounds (commit.c). */
fin_rc_t fq_w_txn_resume(fq_worker_t *w)
{
    rd_kafka_error_t *error = NULL;
    if (!fq_w_txn_offsets_wait(w, TXN_SLICE_MS, &error))
        return FIN_PENDING; /* the offsets are still on their way */
    if (error)
        return txn_failed(w, "send offsets to transaction", error);
    error = rd_kafka_commit_transaction(w->rkp, TXN_SLICE_MS);
    if (!error)
        return FIN_OK;
    if (fq_kafka_txn_class(error) == FQ_KAFKA_TXN_RETRY) {
        rd_kafka_error_destroy(error);
        return FIN_PENDING;
    }
    return txn_failed(w, "commit transaction", error);
}

/* Starts the producer's init_transactions from scratch (fq_w_txn_init_step goes on with it). */
static void txn_init_reset(fq_worker_t *w)
{
    w->txn_ready = false;
    w->txn_init_since = fq_time_mono_ms();
    w->txn_init_next = 0;
    w->txn_init_backoff = OUTAGE_MIN_MS;
    w->txn_init_logged = false;
}

/* Start-up: how often the wait for Kafka is said while it lasts. */
#define INIT_SAY_MS 10000

int fq_w_init_transactions(fq_worker_t *w)
{
    /* At start-up nothing else runs yet: the same steps, waited for here (a stop is seen within
     * one slice or 100 ms of a back-off). The producer's errors are served as they come (not
     * in a burst once the loop runs), and the wait is said every INIT_SAY_MS. */
    txn_init_reset(w);
    int64_t said = w->txn_init_since;
    while (!w->txn_ready && !w->fatal && !*w->opts.stop) {
        fq_w_txn_init_step(w);
        rd_kafka_poll(w->rkp, 0);
        int64_t now = fq_time_mono_ms();
        if (!w->txn_ready && now - said >= INIT_SAY_MS) {
            said = now;
            FQ_WARN(NULL,
                    "waiting %" PRId64 " s for Kafka at KAFKA_BROKERS=%s to start the "
                    "transactional producer (not ready): %s",
                    (now - w->txn_init_since) / 1000, w->cfg->kafka_brokers,
                    w->pevents.last_error[0] ? w->pevents.last_error : "no answer yet");
        }
        int64_t wait = w->txn_init_next - fq_time_mono_ms();
        if (!w->txn_ready && wait > 0)
            usleep((useconds_t)(wait < 100 ? wait : 100) * 1000);
    }
    return w->fatal ? -1 : w->txn_ready ? 0 : 1;
}

/* The producer learns the retry and DLQ topics' leaders now rather than inside the first
 * transaction that routes something (measured: ~0.9 s added to that first commit). The topic
 * handles stay alive so their metadata stays cached. */
void fq_w_warm_up_producer(fq_worker_t *w)
{
    const char *names[2] = {w->cfg->kafka_retry_topic, w->cfg->kafka_dlq_topic};
    for (int i = 0; i < 2; i++) {
        w->rkt[i] = rd_kafka_topic_new(w->rkp, names[i], NULL);
        if (!w->rkt[i])
            continue;
        const struct rd_kafka_metadata *md;
        char why[512];
        int rc = fq_kafka_topic_metadata(w->rkp, names[i], 5000, &md, why, sizeof(why));
        if (rc == FQ_KAFKA_NO_TOPIC)
            FQ_WARN(NULL,
                    "%s topic %s: until it exists, an item routed there pauses the worker as an "
                    "outage (nothing is lost; create the topics: producer topics create)",
                    i ? "DLQ" : "retry", why);
        else if (rc)
            FQ_WARN(NULL, "metadata for %s", why);
        if (md)
            rd_kafka_metadata_destroy(md);
    }
}

/* A transactional producer fenced after a Kafka outage is not the end of the worker: when a
 * transaction outlives transaction.timeout.ms while the cluster is away, the coordinator aborts
 * it and bumps the producer epoch, and the next EndTxn is refused as fenced (other fatal producer
 * errors after a broker restart are handled the same way). A new producer under
 * the same transactional.id takes over (init_transactions), and the message whose commit failed
 * is replayed. At most RENEW_MAX times per RENEW_WINDOW_MS: a live process with the same
 * WORKER_ID fences us for real, and that still ends in exit 3. */
#define RENEW_MAX       3
#define RENEW_WINDOW_MS 600000

bool fq_w_renew_producer(fq_worker_t *w)
{
    char why[512] = "";
    if (rd_kafka_fatal_error(w->rk, why, sizeof(why)))
        return false; /* the consumer itself: nothing to renew */
    /* Any fatal error of the producer (fenced, or an idempotence sequence lost across the
     * broker's restart): its state is all in the open transaction, which a new producer under
     * the same transactional.id aborts. */
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(w->rkp, why, sizeof(why));
    if (!e) {
        snprintf(why, sizeof(why), "%s",
                 w->renew_why ? w->renew_why : "a transactional call failed fatally");
        e = RD_KAFKA_RESP_ERR__FATAL;
    }
    w->renew_why = NULL;
    int64_t now = fq_time_mono_ms();
    if (!w->renew_since || now - w->renew_since > RENEW_WINDOW_MS) {
        w->renew_since = now;
        w->renewals = 0;
    }
    if (w->renewals >= RENEW_MAX) {
        FQ_ERROR(NULL,
                 "producer fenced %d times within %d s: another process may use WORKER_ID "
                 "%s",
                 w->renewals + 1, RENEW_WINDOW_MS / 1000, w->cfg->worker_id);
        return false;
    }
    w->renewals++;
    FQ_WARN(NULL, "transactional producer failed fatally (%s: %s): starting a new one",
            rd_kafka_err2name(e), why);
    if (w->ntxn)
        fq_w_txn_end(w, FIN_FATAL); /* it goes with its producer: the prefixes are read again */
    for (int i = 0; i < 2; i++) {
        if (w->rkt[i])
            rd_kafka_topic_destroy(w->rkt[i]);
        w->rkt[i] = NULL;
    }
    rd_kafka_destroy(w->rkp);
    char errstr[512];
    w->rkp = fq_w_new_producer(w, errstr, sizeof(errstr));
    if (!w->rkp) {
        FQ_ERROR(NULL, "new producer: %s", errstr);
        return false;
    }
    w->fatal = false;
    w->txn_dirty = false;
    w->producer_watch = (fq_kafka_watch_t){0};
    /* Its init_transactions runs a slice per turn of the loop (fq_w_txn_init_step), which goes
     * on serving the group meanwhile: the coordinator may take a while to finish the old
     * producer's transaction, and a loop held here stalls every rebalance of the group. Until
     * it is ready the worker is paused and commits no transaction. */
    txn_init_reset(w);
    fq_w_enter_outage(w, OUTAGE_PROBED, "kafka: the new transactional producer is not ready");
    fq_w_txn_init_step(w);
    return true;
}

void fq_w_txn_init_step(fq_worker_t *w)
{
    int64_t now = fq_time_mono_ms();
    if (w->txn_ready || w->fatal || now < w->txn_init_next)
        return;
    rd_kafka_error_t *error = rd_kafka_init_transactions(w->rkp, TXN_SLICE_MS); /* resumable */
    if (!error) {
        w->txn_ready = true;
        fq_w_warm_up_producer(w);
        FQ_INFO(NULL, "%stransactional producer ready after %" PRId64 " ms",
                w->renewals ? "new " : "", fq_time_mono_ms() - w->txn_init_since);
        return;
    }
    fq_kafka_txn_t klass = fq_kafka_txn_class(error);
    if (klass == FQ_KAFKA_TXN_FATAL) {
        FQ_ERROR(NULL, "init transactions: fatal: %s", rd_kafka_error_string(error));
        w->renew_why = "its init_transactions failed fatally";
        w->fatal = true; /* renewed again, within RENEW_MAX (at start-up: exit 3) */
    } else if (rd_kafka_error_code(error) != RD_KAFKA_RESP_ERR__TIMED_OUT) {
        if (!w->txn_init_logged)
            FQ_WARN(NULL, "init transactions: %s: retrying", rd_kafka_error_string(error));
        w->txn_init_logged = true;
        w->txn_init_next = now + w->txn_init_backoff;
        w->txn_init_backoff =
            w->txn_init_backoff * 2 > OUTAGE_MAX_MS ? OUTAGE_MAX_MS : w->txn_init_backoff * 2;
    } /* else still on its way: resumed on the next turn */
    rd_kafka_error_destroy(error);
}
