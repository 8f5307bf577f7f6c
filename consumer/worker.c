/* frameq worker: set-up, the librdkafka callbacks, outages and the consume loop (DESIGN §3).
 * The loop takes messages into the window (window.c), reaps finished ones (outcome.c), commits
 * settled prefixes (commit.c, txn.c) and keeps the assignment in shape (partitions.c); see
 * worker_int.h for the map. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "fq_http.h" /* fq_s3_probe */
#include "fq_kafka.h"
#include "fq_lag.h"
#include "fq_log.h"
#include "fq_pipeline.h"
#include "worker_int.h"

/* An outage that comes back within OUTAGE_RECUR_MS of the last one doubles the wait
 * (OUTAGE_MIN_MS .. OUTAGE_MAX_MS, worker_int.h). */
#define OUTAGE_RECUR_MS 60000
#define PROBE_IDLE_MS   5000
#define PROBE_FAST_MS   1000
#define DRAIN_CHECK_MS  1000 /* --once: how often the group's lag is read while idle */
#define LAG_TIMEOUT_MS  5000
/* --once: how long a topic of the role may stay unknown to the cluster (just created, its
 * metadata not out yet) before that is a configuration error rather than work to wait for. */
#define ONCE_TOPIC_WAIT_MS 10000

void fq_w_set_ready(fq_worker_t *w, bool ready, const char *reason)
{
    if (!w->metrics)
        return;
    fq_metrics_set_ready(w->metrics, ready, reason);
    fq_metrics_set(w->metrics, "frameq_ready", ready ? 1.0 : 0.0, NULL);
}

int fq_role_parse(const char *name, fq_role_t *role)
{
    static const char *const names[] = {"all", "main", "retry"};
    for (int i = 0; i < 3; i++) {
        if (name && strcmp(name, names[i]) == 0) {
            *role = (fq_role_t)i;
            return 0;
        }
    }
    return -1;
}

const char *fq_role_name(fq_role_t role)
{
    switch (role) {
    case FQ_ROLE_MAIN:
        return "main";
    case FQ_ROLE_RETRY:
        return "retry";
    case FQ_ROLE_ALL:
    default:
        return "all";
    }
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    fq_worker_t *w = ((fq_kafka_events_t *)opaque)->user;
    if (!w->metrics)
        return 0;
    json_t *root = json_loadb(json, json_len, 0, NULL);
    json_t *topics = json_object_get(root, "topics");
    const char *tname;
    json_t *topic;
    json_object_foreach(topics, tname, topic)
    {
        const char *pname;
        json_t *p;
        json_object_foreach(json_object_get(topic, "partitions"), pname, p)
        {
            json_t *lag = json_object_get(p, "consumer_lag");
            /* -1 is librdkafka's internal UA partition, and lag -1 means unknown; a partition
             * no longer assigned may linger in the statistics: not ours to report. */
            if (atoi(pname) < 0 || !json_is_integer(lag) || json_integer_value(lag) < 0 ||
                !fq_w_part(w, tname, atoi(pname)))
                continue;
            fq_metrics_set(w->metrics, "frameq_consumer_lag", (double)json_integer_value(lag),
                           "topic", tname, "partition", pname, NULL);
        }
    }
    json_decref(root);
    return 0; /* librdkafka frees json */
}

static rd_kafka_t *new_consumer(fq_worker_t *w, char *errstr, size_t errstr_size)
{
    const fq_config_t *cfg = w->cfg;
    rd_kafka_conf_t *conf = fq_kafka_conf(cfg, errstr, errstr_size);
    if (!conf)
        return NULL;
    /* KIP-848 (consumer): the broker assigns, incrementally (rebalance_cb sees COOPERATIVE);
     * librdkafka refuses partition.assignment.strategy with it. */
    bool kip848 = strcmp(cfg->group_protocol, "consumer") == 0;
    if (fq_kafka_force(conf, "group.id", cfg->kafka_group_id, errstr, errstr_size) ||
        fq_kafka_force(conf, "group.protocol", cfg->group_protocol, errstr, errstr_size) ||
        (!kip848 && fq_kafka_default(conf, cfg, "partition.assignment.strategy",
                                     "cooperative-sticky", errstr, errstr_size)) ||
        fq_kafka_force(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
        fq_kafka_force(conf, "enable.auto.offset.store", "false", errstr, errstr_size) ||
        fq_kafka_force(conf, "isolation.level", "read_committed", errstr, errstr_size) ||
        fq_kafka_default(conf, cfg, "auto.offset.reset", "earliest", errstr, errstr_size) ||
        fq_kafka_force(conf, "enable.partition.eof", "true", errstr, errstr_size) ||
        fq_kafka_default(conf, cfg, "statistics.interval.ms", "5000", errstr, errstr_size) ||
        /* A resumed retry partition joins the next fetch request: a short long-poll keeps
         * "due" close to "started" (the default 500 ms would add up to that much). */
        fq_kafka_default(conf, cfg, "fetch.wait.max.ms", "50", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    w->cevents.user = w;
    fq_kafka_set_callbacks(conf, &w->cevents);
    rd_kafka_conf_set_rebalance_cb(conf, fq_w_rebalance_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_t *rk = fq_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (rk)
        rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* The dependencies every item needs, checked by the prober thread: the database and the S3
 * endpoint (or the hooks' stand-in), and the Kafka cluster. Runs off the loop's thread with its own
 * connection. */
static fq_error_t *probe_dependencies(void *opaque)
{
    fq_worker_t *w = opaque;
    fq_error_t *err = NULL;
    if (w->hooks.probe) {
        err = w->hooks.probe(w->hooks.ctx);
    } else {
        err = fq_store_ping(w->probe_store);
        if (!err)
            err = fq_s3_probe(w->cfg); /* frame store and source, when on s3:// */
    }
    if (!err) {
        /* The consumer handle: the producer may be replaced (renew_producer) meanwhile. */
        rd_kafka_resp_err_t kerr =
            fq_kafka_probe(w->rk, w->cfg->kafka_brokers, &w->kafka_watch, PROBE_FAST_MS * 2);
        if (kerr)
            err = fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_OUTAGE, "kafka: no broker answers: %s",
                               rd_kafka_err2str(kerr));
    }
    /* Not ready at once, even while the loop waits in a Kafka call that the same outage
     * holds up (up to COMMIT_WAIT_MS); the loop pauses on its next turn and says when the
     * outage is over. */
    if (err)
        fq_w_set_ready(w, false, fq_error_message(err));
    return err;
}

static fq_error_t *hooks_process(void *opaque, const fq_item_t *item, int attempt,
                                 const atomic_int *cancel, fq_outcome_t *out)
{
    const fq_worker_hooks_t *h = opaque;
    return h->process(h->ctx, item, attempt, cancel, out);
}

fq_worker_t *fq_worker_new(const fq_config_t *cfg, const fq_worker_opts_t *opts, char *errstr,
                           size_t errstr_size)
{
    fq_worker_t *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    w->cfg = cfg;
    w->opts = *opts;
    if (opts->hooks)
        w->hooks = *opts->hooks;
    w->metrics = opts->metrics;
    fq_breaker_init(&w->breaker, BREAKER_K, BREAKER_WINDOW_MS);
    w->rng = (uint64_t)fq_time_now_ms() ^ ((uint64_t)getpid() << 32) ^ 0x5DEECE66DULL;
    snprintf(w->txn_id, sizeof(w->txn_id), "frameq-%s-%s", cfg->worker_id,
             fq_role_name(opts->role));

    if (!w->hooks.process) {
        w->store = fq_store_new(cfg->database_url);
        w->probe_store = fq_store_new(cfg->database_url);
        if (!w->store || !w->probe_store) {
            snprintf(errstr, errstr_size, "DATABASE_URL: cannot create a store");
            goto fail;
        }
        w->pool = fq_pool_new(cfg, cfg->worker_concurrency, true, errstr, errstr_size);
    } else {
        w->pool = fq_pool_new_with(cfg->worker_concurrency, hooks_process, &w->hooks, errstr,
                                   errstr_size);
    }
    if (!w->pool)
        goto fail;
    fq_pool_on_start(w->pool, fq_w_job_started, w);
    w->rkp = fq_w_new_producer(w, errstr, errstr_size);
    if (!w->rkp)
        goto fail;
    w->rk = new_consumer(w, errstr, errstr_size);
    if (!w->rk)
        goto fail;
    w->commitq = rd_kafka_queue_new(w->rk);
    if (!w->commitq) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    return w;

fail:
    fq_worker_destroy(w);
    return NULL;
}

void fq_worker_destroy(fq_worker_t *w)
{
    if (!w)
        return;
    fq_prober_stop(w->prober); /* it uses rk and probe_store */
    /* Jobs first: they point into the window's messages. */
    fq_w_cancel_running(w, "at shutdown");
    fq_pool_destroy(w->pool); /* drains the queue (cancelled jobs end at once), joins */
    w->pool = NULL;
    fq_w_txn_forget(w); /* a commit still on its way is the coordinator's to finish */
    fq_w_drop_held(w, false);
    /* Closing runs the rebalance callback, which settles and commits from the window; then
     * every message goes before the consumer: librdkafka's destroy waits for every message the
     * application still holds (measured: a worker hung in rd_kafka_destroy with messages of its
     * window alive). */
    if (w->rk)
        rd_kafka_consumer_close(w->rk);
    fq_w_window_clear(w);
    if (w->rk) {
        if (w->commitq) {
            rd_kafka_queue_poll_callback(w->commitq, 0);
            rd_kafka_queue_destroy(w->commitq);
        }
        rd_kafka_destroy(w->rk);
    }
    if (w->rkp && !fq_w_txn_offsets_abandon(w, 5000)) { /* offsets on their way: 5 s more */
        for (int i = 0; i < 2; i++)
            if (w->rkt[i])
                rd_kafka_topic_destroy(w->rkt[i]);
        rd_kafka_flush(w->rkp, 5000);
        rd_kafka_destroy(w->rkp);
    }
    fq_store_destroy(w->store);
    fq_store_destroy(w->probe_store);
    fq_parts_clear(&w->parts);
    free(w);
}

/* ---- outage and circuit breaker ---- */

/* Pauses everything and turns not-ready. A probed outage ends with the first passing probe
 * after it began; a breaker outage waits as well. An outage soon after the last one waits
 * longer each time, so a cause the probes cannot see does not make the worker flap. */
void fq_w_enter_outage(fq_worker_t *w, outage_kind_t kind, const char *reason)
{
    int64_t now = fq_time_mono_ms();
    if (!w->outage) {
        bool recurs = w->outage_ended && now - w->outage_ended < OUTAGE_RECUR_MS;
        if (!recurs)
            w->outage_wait_ms = kind == OUTAGE_BREAKER ? OUTAGE_MIN_MS : 0;
        else if (w->outage_wait_ms < OUTAGE_MIN_MS)
            w->outage_wait_ms = OUTAGE_MIN_MS;
        else
            w->outage_wait_ms =
                w->outage_wait_ms * 2 > OUTAGE_MAX_MS ? OUTAGE_MAX_MS : w->outage_wait_ms * 2;
        snprintf(w->outage_reason, sizeof(w->outage_reason), "%s", reason);
        FQ_WARN(NULL, "outage: pausing consumption until the dependencies answer%s: %s",
                w->outage_wait_ms ? " and a wait is over" : "", reason);
        fq_w_set_ready(w, false, reason);
        M_SET(w, "frameq_circuit_open", 1.0, NULL);
    }
    w->outage = true;
    w->outage_kind = kind;
    w->outage_until = now + w->outage_wait_ms;
    if (w->prober) {
        fq_probe_result_t r;
        fq_prober_result(w->prober, &r);
        w->outage_probe_seq = r.seq;
        fq_prober_hurry(w->prober);
    }
    fq_w_apply_pause(w);
}

static void leave_outage(fq_worker_t *w)
{
    if (!w->outage)
        return;
    FQ_INFO(NULL, "outage over: consuming again (was: %s)", w->outage_reason);
    w->outage = false;
    w->outage_ended = fq_time_mono_ms();
    fq_breaker_close(&w->breaker);
    fq_w_set_ready(w, true, NULL);
    M_SET(w, "frameq_circuit_open", 0.0, NULL);
    fq_w_apply_pause(w);
}

/* Acts on the prober's latest answer: a failed probe pauses a worker that is not paused yet
 * (an idle worker turns not-ready without needing a message); a passing probe newer than the
 * outage ends it once its wait is over. */
static void follow_probes(fq_worker_t *w)
{
    if (!w->prober)
        return;
    fq_probe_result_t r;
    fq_prober_result(w->prober, &r);
    if (r.seq == 0)
        return;
    bool fresh = r.seq != w->probe_seen;
    w->probe_seen = r.seq;
    if (!r.ok) {
        if (fresh && (!w->outage || w->outage_kind != OUTAGE_PROBED)) {
            char reason[600];
            snprintf(reason, sizeof(reason), "probe: %s", r.reason);
            w->outage = false; /* a breaker outage becomes a probed one */
            fq_w_enter_outage(w, OUTAGE_PROBED, reason);
            w->outage_probe_seq = r.seq;
        }
        return;
    }
    if (w->outage && w->txn_ready && r.seq > w->outage_probe_seq &&
        fq_time_mono_ms() >= w->outage_until)
        leave_outage(w);
}

/* ---- the loop ---- */

static void handle_event(fq_worker_t *w, rd_kafka_message_t *rkm)
{
    const char *topic = rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "";
    fq_part_t *p = rkm->rkt ? fq_w_part(w, topic, rkm->partition) : NULL;
    if (rkm->err) {
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (p)
                fq_part_eof(p, rkm->offset);
        } else {
            FQ_WARN(NULL, "consumer: %s", rd_kafka_message_errstr(rkm));
        }
        rd_kafka_message_destroy(rkm);
        return;
    }
    if (!p) {
        /* Delivered after its partition was revoked: the new owner reads it. */
        rd_kafka_message_destroy(rkm);
        return;
    }
    switch (fq_part_take(p, rkm->offset)) {
    case FQ_TAKE:
        fq_w_take(w, rkm);
        return;
    case FQ_TAKE_STALE:
        /* Fetched before our rewind landed. If the rewind seems lost (a seek can time out in a
         * rebalance), issue it again. */
        FQ_DEBUG(NULL, "%s [%d] @%" PRId64 ": dropped, waiting for the rewind to %" PRId64, topic,
                 (int)rkm->partition, rkm->offset, p->expect);
        if (fq_time_mono_ms() - p->seek_mono >= RESEEK_MS) {
            p->seek_mono = fq_time_mono_ms();
            fq_w_seek(w, topic, rkm->partition, p->expect);
        }
        break;
    case FQ_TAKE_NOMEM:
        FQ_ERROR(NULL, "out of memory: %s [%d] @%" PRId64 " will be read again", topic,
                 (int)rkm->partition, rkm->offset);
        fq_w_rewind(w, topic, rkm->partition, rkm->offset);
        break;
    case FQ_TAKE_REPEAT:
        break;
    }
    rd_kafka_message_destroy(rkm);
}

/* Nothing of this worker is running, held, waiting or owed to the group. */
static bool idle(const fq_worker_t *w)
{
    if (w->nwin || w->nheld || w->outage)
        return false;
    for (size_t i = 0; i < w->parts.n; i++) {
        const fq_part_t *p = &w->parts.v[i];
        if (p->due_ms || p->pending || p->expect >= 0 || p->want > p->committed)
            return false;
    }
    return true;
}

/* --once: the whole group is done with this role's topics — every partition's committed
 * offset at its end (a retry waiting for its time is uncommitted, so it counts as work), read
 * from the group coordinator, not from what this worker happens to hold (DESIGN §6). 1 drained,
 * 0 not (or not read), FQ_LAG_NO_TOPIC with why when a topic of the role does not exist. */
static int group_drained(fq_worker_t *w, char *why, size_t why_size)
{
    const char *topics[2];
    size_t n = 0;
    if (w->opts.role != FQ_ROLE_RETRY)
        topics[n++] = w->cfg->kafka_topic;
    if (w->opts.role != FQ_ROLE_MAIN)
        topics[n++] = w->cfg->kafka_retry_topic;
    fq_lag_t lag;
    int rc = fq_lag_read(w->rk, topics, n, LAG_TIMEOUT_MS, &lag, why, why_size);
    if (rc) {
        FQ_DEBUG(NULL, "--once: group lag not read: %s", why);
        return rc == FQ_LAG_NO_TOPIC ? rc : 0;
    }
    bool done = lag.total == 0;
    if (!done)
        FQ_DEBUG(NULL, "--once: group lag %" PRId64 " over %zu partition(s)", lag.total, lag.count);
    fq_lag_clear(&lag);
    return done ? 1 : 0;
}

static int start_up(fq_worker_t *w)
{
    const fq_config_t *cfg = w->cfg;
    fq_w_set_ready(w, false, "starting");
    M_SET(w, "frameq_circuit_open", 0.0, NULL);
    M_SET(w, "frameq_inflight_items", 0.0, NULL);
    M_SET(w, "frameq_inflight_messages", 0.0, NULL);
    int irc = fq_w_init_transactions(w);
    if (irc < 0)
        return FQ_EXIT_FATAL;
    if (irc > 0)
        return FQ_EXIT_OK; /* stopped while waiting for Kafka */
    /* (ready, the producer was warmed up by fq_w_txn_init_step) */

    /* Dependencies first: a worker whose database is down must not take a message. */
    w->prober = fq_prober_start(probe_dependencies, w, PROBE_IDLE_MS, PROBE_FAST_MS);
    if (!w->prober) {
        FQ_ERROR(NULL, "cannot start the dependency prober thread");
        return FQ_EXIT_FATAL;
    }
    for (int64_t until = fq_time_mono_ms() + 3 * PROBE_FAST_MS;
         fq_time_mono_ms() < until && !*w->opts.stop;) {
        fq_probe_result_t r;
        fq_prober_result(w->prober, &r);
        if (r.seq)
            break;
        usleep(10 * 1000);
    }

    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(2);
    if (w->opts.role != FQ_ROLE_RETRY)
        rd_kafka_topic_partition_list_add(topics, cfg->kafka_topic, RD_KAFKA_PARTITION_UA);
    if (w->opts.role != FQ_ROLE_MAIN)
        rd_kafka_topic_partition_list_add(topics, cfg->kafka_retry_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(w->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (serr) {
        FQ_ERROR(NULL, "subscribe: %s", rd_kafka_err2str(serr));
        return FQ_EXIT_FATAL;
    }
    fq_w_set_ready(w, true, NULL);
    follow_probes(w);
    return -1; /* running */
}

/* SIGTERM: take nothing more, leave retries that are not due and the held message to the next
 * reader, let the items in flight finish within SHUTDOWN_GRACE_MS. */
static void begin_stop(fq_worker_t *w, int64_t mono)
{
    w->stopping = true;
    w->stop_deadline = mono + w->cfg->shutdown_grace_ms;
    size_t running = fq_w_running(w);
    FQ_INFO(NULL, "stopping: %s", running ? "waiting for the messages in flight" : "idle");
    fq_w_set_ready(w, false, "stopping");
    fq_w_drop_held(w, false);
    fq_w_drop_waiting(w);
    fq_w_apply_pause(w);
}

/* How long this turn may wait: while items run the loop waits on the pool, so with room in the
 * window it looks at Kafka again soon (a message that arrives starts within POLL_ROOM_MS); never
 * past a waiting retry's due time. */
static int turn_timeout(fq_worker_t *w, bool room, bool running)
{
    if (w->ntxn)
        return 1; /* the commit on its way is resumed each turn (it waits up to TXN_SLICE_MS) */
    int timeout = room && running ? POLL_ROOM_MS : POLL_MS;
    int64_t now = fq_time_now_ms();
    int64_t due = fq_w_next_due(w);
    if (due && due - now < timeout)
        timeout = (int)(due - now);
    for (size_t i = 0; i < w->parts.n; i++)
        if (w->parts.v[i].due_ms && w->parts.v[i].due_ms - now < timeout)
            timeout = (int)(w->parts.v[i].due_ms - now);
    return timeout < 1 ? 1 : timeout;
}

/* --once: drained when idle and the whole group is done with this role's topics. */
static bool once_done(fq_worker_t *w)
{
    int64_t mono = fq_time_mono_ms();
    if (!w->opts.once || !idle(w) || mono - w->drain_checked < DRAIN_CHECK_MS)
        return false;
    w->drain_checked = mono;
    char why[512];
    int drained = group_drained(w, why, sizeof(why));
    if (drained == FQ_LAG_NO_TOPIC) {
        if (!w->topic_missing_since) {
            w->topic_missing_since = mono;
            FQ_WARN(NULL, "--once: %s; waiting up to %d s for it", why, ONCE_TOPIC_WAIT_MS / 1000);
        }
        if (mono - w->topic_missing_since < ONCE_TOPIC_WAIT_MS)
            return false;
        FQ_ERROR(NULL,
                 "--once: %s after %d s: nothing to drain there; create the topics (producer "
                 "topics create) or correct the topic names",
                 why, ONCE_TOPIC_WAIT_MS / 1000);
        w->topic_missing = true;
        return true;
    }
    w->topic_missing_since = 0;
    if (!drained)
        return false;
    FQ_INFO(NULL,
            "drained: the group's committed offsets are at the end of every partition (%ld "
            "message(s) to the DLQ from this worker)",
            w->dlq_sent);
    return true;
}

int fq_worker_run(fq_worker_t *w)
{
    int rc = start_up(w);
    if (rc >= 0)
        return rc;
    for (;;) {
        /* A fatal error: let the messages in flight finish (their commits fail and rewind
         * them), then renew the producer or stop. */
        if (atomic_load(&w->pevents.fatal) || atomic_load(&w->cevents.fatal))
            w->fatal = true; /* reported by librdkafka's error callback */
        if (w->fatal && !fq_w_running(w) && !fq_w_txn_offsets_busy(w) && !fq_w_renew_producer(w))
            break; /* (a renewal waits for offsets on their way: they use the producer) */
        int64_t mono = fq_time_mono_ms();
        if (w->metrics)
            fq_metrics_heartbeat(w->metrics, 30000);
        rd_kafka_poll(w->rkp, 0);
        fq_w_commit_owed(w);
        fq_w_reseek_lost(w);
        fq_w_txn_init_step(w); /* a renewed producer, until it is ready */
        follow_probes(w);
        if (!w->outage)
            fq_w_txn_pay_abort(w, COMMIT_WAIT_MS); /* as the next commit would */

        if (*w->opts.stop && !w->stopping)
            begin_stop(w, mono);
        /* A commit on its way is waited for within the grace; after it, it is left to the
         * coordinator (it commits or aborts it; the next reader sees which). */
        if (w->stopping && !fq_w_running(w) && (!w->ntxn || !w->stop_deadline)) {
            if (w->ntxn)
                FQ_WARN(NULL, "shutdown grace over: a transaction's commit is still on its way");
            break;
        }
        if (w->stopping && mono >= w->stop_deadline && w->stop_deadline) {
            FQ_WARN(NULL, "shutdown grace over: cancelling %zu item(s)", fq_pool_pending(w->pool));
            fq_w_cancel_running(w, "at shutdown");
            w->stop_deadline = 0;
        }

        fq_w_start_due(w);
        fq_w_start_held(w);
        fq_w_apply_pause(w); /* resumes partitions whose waiting retries became due */

        bool running = fq_w_running(w) > 0;
        int timeout = turn_timeout(w, fq_w_has_room(w) && !w->nheld, running);
        /* Serve the group (heartbeats, rebalances, new messages) while the pool works. */
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(w->rk, running ? 0 : timeout);
        if (rkm)
            handle_event(w, rkm);
        if (running) {
            bool finished = fq_pool_wait(w->pool, rkm ? 0 : timeout);
            (void)finished; /* reaped below either way: a message without jobs (every item
                               invalid, or malformed) finishes without the pool */
        }
        fq_w_reap(w);
        fq_w_commit_settled(w, w->txn_ready);
        fq_w_sweep(w);
        if (!rkm && once_done(w))
            break;
    }

    /* What is settled and not committed yet: give it a moment (closing commits the rest). */
    fq_w_commit_settled(w, w->txn_ready);
    fq_w_sweep(w);
    fq_w_commit_last(w, 5000);
    fq_w_txn_pay_abort(w, 5000); /* also after an outage that has not ended: it may answer */
    fq_w_set_ready(w, false, "stopped");
    if (w->fatal)
        return FQ_EXIT_FATAL;
    if (w->topic_missing)
        return FQ_EXIT_USAGE; /* a configuration error: a topic of the role does not exist */
    if (w->opts.once && w->dlq_sent > 0)
        return FQ_EXIT_DLQ;
    return FQ_EXIT_OK;
}
