#include "fq_worker.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "fq_backoff.h"
#include "fq_headers.h"
#include "fq_http.h" /* fq_sha256_hex, fq_s3_probe */
#include "fq_item.h"
#include "fq_lag.h"
#include "fq_log.h"
#include "fq_parts.h"
#include "fq_pipeline.h"
#include "fq_pool.h"
#include "fq_prober.h"
#include "fq_route.h"
#include "fq_store.h"

/* Circuit breaker: the same stage failing retriably for this many consecutive different items
 * within the window is a dependency outage, not bad luck of each item. */
#define BREAKER_K         5
#define BREAKER_WINDOW_MS 30000

/* An outage that the probes can see (database, frame store, Kafka) ends with the first probe
 * that passes; one they cannot see (a tripped breaker) waits OUTAGE_MIN_MS first. An outage that
 * comes back within OUTAGE_RECUR_MS of the last one doubles that wait, up to OUTAGE_MAX_MS. */
#define OUTAGE_MIN_MS   1000
#define OUTAGE_MAX_MS   30000
#define OUTAGE_RECUR_MS 60000
#define PROBE_IDLE_MS   5000
#define PROBE_FAST_MS   1000
#define POLL_MS         100
#define TXN_TIMEOUT_MS  30000
#define COMMIT_WAIT_MS  10000 /* a commit not answered by then is a Kafka outage */
#define RESEEK_MS       1000  /* a rewind that has not landed by then is issued again */
#define DRAIN_CHECK_MS  1000  /* --once: how often the group's lag is read while idle */
#define LAG_TIMEOUT_MS  5000

/* One decision unit of a message: a batch entry, a retry item or the raw message. */
typedef struct entry {
    const fq_item_t *item; /* NULL: the raw message bytes (malformed) */
    bool keyed;            /* platform and code are valid: key, DB row */
    int attempt;
    const fq_error_t *err; /* the failure decided for it; NULL = success */
    fq_pool_job_t *job;    /* NULL when it did not run */
    fq_route_t route;
} entry_t;

/* The message in flight. */
typedef struct msg {
    rd_kafka_message_t *rkm;
    const char *topic;
    bool from_retry;
    fq_batch_t *batch;
    fq_item_t item;
    bool have_item;
    fq_error_t *own_err; /* decode error of the message / retry item */
    entry_t *entries;
    size_t nentries;
    fq_pool_job_t *jobs;
    size_t njobs;
    /* set by the poll thread, read by the pool threads */
    atomic_int cancel;
    bool abandoned; /* partition revoked: never commit */
    int64_t t0;
} msg_t;

typedef enum fin_rc {
    FIN_OK = 0,
    FIN_REPLAY, /* rewound: the message will be consumed again */
    FIN_OUTAGE,
    FIN_FATAL,
} fin_rc_t;

typedef enum outage_kind {
    OUTAGE_PROBED = 0, /* a dependency the prober checks: over when a probe passes */
    OUTAGE_BREAKER,    /* items failing at one stage: over after a wait, if probes pass */
} outage_kind_t;

struct fq_worker {
    const fq_config_t *cfg;
    fq_worker_opts_t opts;
    fq_worker_hooks_t hooks;
    rd_kafka_t *rk;            /* consumer */
    rd_kafka_t *rkp;           /* transactional producer */
    rd_kafka_queue_t *commitq; /* answers of asynchronous offset commits */
    rd_kafka_topic_t *rkt[2];  /* retry and DLQ topics on rkp (metadata kept warm) */
    fq_store_t *store;         /* the loop's connection (error rows) */
    fq_store_t *probe_store;   /* the prober thread's connection */
    fq_prober_t *prober;
    fq_pool_t *pool;
    fq_metrics_t *metrics;
    char txn_id[300];
    bool txn_ready;
    bool txn_dirty; /* an abort is still owed */

    fq_parts_t parts;
    msg_t *cur;
    rd_kafka_message_t *next; /* fetched while cur runs; started the moment cur is done */

    bool outage;
    outage_kind_t outage_kind;
    uint64_t outage_probe_seq; /* the prober's result count when the outage began */
    int64_t outage_wait_ms;
    int64_t outage_until; /* mono ms: not over before this */
    int64_t outage_ended; /* mono ms of the last outage's end; 0 = none */
    char outage_reason[512];
    uint64_t probe_seen; /* the prober's last result acted on */

    fq_breaker_t breaker;

    bool stopping;
    int64_t stop_deadline; /* mono ms */
    int64_t drain_checked; /* mono ms of the last group lag read (--once) */
    long dlq_sent;
    bool fatal;
    int renewals;        /* producers replaced after fencing, since renew_since */
    int64_t renew_since; /* mono ms */
    uint64_t rng;
};

/* ---- metrics helpers (the registry is optional) ---- */

#define M_ADD(w, ...)                                                                              \
    do {                                                                                           \
        if ((w)->metrics)                                                                          \
            fq_metrics_add((w)->metrics, __VA_ARGS__);                                             \
    } while (0)
#define M_SET(w, ...)                                                                              \
    do {                                                                                           \
        if ((w)->metrics)                                                                          \
            fq_metrics_set((w)->metrics, __VA_ARGS__);                                             \
    } while (0)
#define M_OBS(w, ...)                                                                              \
    do {                                                                                           \
        if ((w)->metrics)                                                                          \
            fq_metrics_observe((w)->metrics, __VA_ARGS__);                                         \
    } while (0)

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
    fq_metrics_declare(m, "frameq_inflight_items", FQ_METRIC_GAUGE, "Items being processed.");
    fq_metrics_declare(m, "frameq_circuit_open", FQ_METRIC_GAUGE,
                       "1 while a dependency outage pauses consumption.");
    fq_metrics_declare(m, "frameq_consumer_lag", FQ_METRIC_GAUGE,
                       "Messages behind the end of each assigned partition.");
    fq_metrics_declare(m, "frameq_ready", FQ_METRIC_GAUGE, "1 when the worker is ready.");
}

static void set_ready(fq_worker_t *w, bool ready, const char *reason)
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

/* ---- partitions: pause, seek, commit ---- */

static fq_part_t *part_of(fq_worker_t *w, const char *topic, int32_t partition)
{
    return fq_parts_find(&w->parts, topic, partition);
}

static bool same_partition(const rd_kafka_message_t *rkm, const char *topic, int32_t partition)
{
    return rkm->partition == partition && strcmp(rd_kafka_topic_name(rkm->rkt), topic) == 0;
}

/* A message of the partition is running (abandoned or not) or held: its end offset must not be
 * committed. */
static bool part_busy(const fq_worker_t *w, const fq_part_t *p)
{
    return (w->cur && same_partition(w->cur->rkm, p->topic, p->partition)) ||
           (w->next && same_partition(w->next, p->topic, p->partition));
}

/* Issues a seek without waiting for it: the partition table drops whatever the consumer still
 * delivers from before it (fq_part_take), so a seek that lands late cannot rewind or skip, and
 * a rebalance cannot block the loop in a seek. */
static void seek_async(fq_worker_t *w, const char *topic, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = offset;
    rd_kafka_error_t *error = rd_kafka_seek_partitions(w->rk, list, 0);
    if (error) {
        FQ_WARN(NULL, "seek %s [%d] to %" PRId64 ": %s", topic, (int)partition, offset,
                rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    rd_kafka_topic_partition_list_destroy(list);
}

/* librdkafka does not wake the broker thread on resume (2.0.2 and 2.14.2 measured): a resumed
 * partition waits for the thread's next timed wake-up (up to 1 s) before it is fetched again, which
 * would add up to a second per message and to every retry's start. A seek to the offset the loop
 * wants next wakes it; anything delivered twice because of it is dropped as a repeat. */
static void wake_fetcher(fq_worker_t *w, const rd_kafka_topic_partition_list_t *resumed)
{
    for (int i = 0; i < resumed->cnt; i++) {
        const fq_part_t *p = part_of(w, resumed->elems[i].topic, resumed->elems[i].partition);
        if (p && p->next >= 0)
            seek_async(w, p->topic, p->partition, p->expect >= 0 ? p->expect : p->next);
    }
}

/* Pauses or resumes every assigned partition to match what the loop needs now: all paused while
 * a message is in flight and the next one is already fetched (so nothing more is buffered and
 * the next fetch overlaps the current work), during an outage and at shutdown; otherwise only
 * retry partitions whose head item is not due yet. */
static void apply_pause(fq_worker_t *w)
{
    int64_t now = fq_time_now_ms();
    bool all = (w->cur && w->next) || w->outage || w->stopping;
    rd_kafka_topic_partition_list_t *pause = NULL, *resume = NULL;
    for (size_t i = 0; i < w->parts.n; i++) {
        fq_part_t *p = &w->parts.v[i];
        if (p->due_ms && p->due_ms <= now) {
            FQ_DEBUG(NULL, "retry partition %s [%d] due", p->topic, (int)p->partition);
            p->due_ms = 0;
        }
        bool want = all || p->due_ms != 0;
        if (want == p->paused)
            continue;
        rd_kafka_topic_partition_list_t **list = want ? &pause : &resume;
        if (!*list)
            *list = rd_kafka_topic_partition_list_new((int)w->parts.n);
        rd_kafka_topic_partition_list_add(*list, p->topic, p->partition);
        p->paused = want;
    }
    if (pause) {
        rd_kafka_pause_partitions(w->rk, pause);
        rd_kafka_topic_partition_list_destroy(pause);
    }
    if (resume) {
        rd_kafka_resume_partitions(w->rk, resume);
        wake_fetcher(w, resume);
        rd_kafka_topic_partition_list_destroy(resume);
    }
}

/* Makes the partition deliver offset next (replay of an abandoned message, or a retry that is
 * not due). Nothing happens for a partition that is no longer ours: its new owner starts at the
 * committed offset, which is at or before this one. */
static void seek_back(fq_worker_t *w, const char *topic, int32_t partition, int64_t offset)
{
    fq_part_t *p = part_of(w, topic, partition);
    if (!p)
        return;
    fq_part_rewind(p, offset, fq_time_mono_ms());
    seek_async(w, topic, partition, offset);
}

/* Answers of offset commits (asynchronous ones on commitq, and the synchronous commit of
 * revoked partitions). */
static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    fq_worker_t *w = opaque;
    int64_t now = fq_time_mono_ms();
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        rd_kafka_resp_err_t e = err ? err : tp->err;
        fq_part_t *p = part_of(w, tp->topic, tp->partition);
        if (e)
            FQ_WARN(NULL, "commit %s [%d] @%" PRId64 ": %s%s", tp->topic, (int)tp->partition,
                    tp->offset, rd_kafka_err2str(e), p ? ": will commit again" : "");
        if (p)
            fq_part_committed(p, tp->offset, !e, now);
    }
}

/* Collects the offsets owed to the group for the partitions in only (NULL: every one); NULL
 * when none. final: the partitions are being handed over (fq_part_final_target). */
static rd_kafka_topic_partition_list_t *
owed_offsets(fq_worker_t *w, const rd_kafka_topic_partition_list_t *only, bool final)
{
    int64_t now = fq_time_mono_ms();
    rd_kafka_topic_partition_list_t *list = NULL;
    for (size_t i = 0; i < w->parts.n; i++) {
        fq_part_t *p = &w->parts.v[i];
        if (only && !rd_kafka_topic_partition_list_find(only, p->topic, p->partition))
            continue;
        bool idle = !part_busy(w, p);
        int64_t target =
            final ? fq_part_final_target(p, idle) : fq_part_commit_target(p, idle, now);
        if (target < 0)
            continue;
        if (!list)
            list = rd_kafka_topic_partition_list_new(4);
        rd_kafka_topic_partition_list_add(list, p->topic, p->partition)->offset = target;
        p->pending++;
    }
    return list;
}

/* Sends what is owed without waiting: durable messages' offsets, and end offsets past
 * transaction markers for partitions read to their end. */
static void commit_owed(fq_worker_t *w)
{
    rd_kafka_queue_poll_callback(w->commitq, 0);
    rd_kafka_topic_partition_list_t *list = owed_offsets(w, NULL, false);
    if (!list)
        return;
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(w->rk, list, w->commitq, commit_cb, w);
    if (err) /* not sent: answer it ourselves so the partitions try again */
        commit_cb(w->rk, err, list, w);
    rd_kafka_topic_partition_list_destroy(list);
}

/* Issues again a rewind that has not landed after RESEEK_MS: an asynchronous seek can be lost
 * (a broker restart, a rebalance), and a partition at its end would then deliver nothing that
 * could show it (the stale-message check in handle_event covers the other case). */
static void reseek_lost(fq_worker_t *w)
{
    int64_t now = fq_time_mono_ms();
    for (size_t i = 0; i < w->parts.n; i++) {
        fq_part_t *p = &w->parts.v[i];
        if (p->expect < 0 || p->paused || now - p->seek_mono < RESEEK_MS)
            continue;
        FQ_DEBUG(NULL, "%s [%d]: rewind to %" PRId64 " not landed yet: seeking again", p->topic,
                 (int)p->partition, p->expect);
        p->seek_mono = now;
        seek_async(w, p->topic, p->partition, p->expect);
    }
}

/* Waits until the partition's asynchronous commits are answered, so a transactional offset
 * commit that follows is appended after them (the coordinator keeps the later one). */
static bool commits_settled(fq_worker_t *w, const char *topic, int32_t partition)
{
    int64_t until = fq_time_mono_ms() + COMMIT_WAIT_MS;
    for (;;) {
        const fq_part_t *p = part_of(w, topic, partition);
        if (!p || !p->pending)
            return true;
        if (fq_time_mono_ms() >= until)
            return false;
        rd_kafka_queue_poll_callback(w->commitq, 50);
    }
}

/* ---- librdkafka callbacks ---- */

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    fq_worker_t *w = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++)
            if (!fq_parts_add(&w->parts, parts->elems[i].topic, parts->elems[i].partition))
                FQ_ERROR(NULL, "out of memory tracking partition %s [%d]", parts->elems[i].topic,
                         (int)parts->elems[i].partition);
        if (cooperative) {
            rd_kafka_error_t *error = rd_kafka_incremental_assign(rk, parts);
            if (error) {
                FQ_ERROR(NULL, "incremental assign: %s", rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
            }
        } else {
            rd_kafka_assign(rk, parts);
        }
        /* A partition we paused, lost and got back may still carry librdkafka's pause flag:
         * start every new one from "not paused", then pause what needs it. */
        rd_kafka_resume_partitions(rk, parts);
        FQ_INFO(NULL, "assigned %d partition(s), %zu in total", parts->cnt, w->parts.n);
        /* New partitions must not start fetching while a message is in flight. */
        apply_pause(w);
        return;
    }

    /* Revoked or lost: an in-flight message of such a partition is abandoned without a commit;
     * the new owner replays it (idempotent, done items are skipped). What is durable is
     * committed first, so the new owner starts after it (not when lost: the generation is
     * gone and the commit would be refused). */
    bool lost = rd_kafka_assignment_lost(rk);
    for (int i = 0; i < parts->cnt; i++) {
        const char *topic = parts->elems[i].topic;
        int32_t partition = parts->elems[i].partition;
        if (w->cur && !w->cur->abandoned && same_partition(w->cur->rkm, topic, partition)) {
            w->cur->abandoned = true;
            atomic_store(&w->cur->cancel, 1);
            FQ_WARN(NULL, "partition %s [%d] revoked with a message in flight: abandoned", topic,
                    (int)partition);
        }
        if (w->next && same_partition(w->next, topic, partition)) {
            rd_kafka_message_destroy(w->next); /* never started: the new owner reads it */
            w->next = NULL;
        }
    }
    if (!lost) {
        rd_kafka_queue_poll_callback(w->commitq, 0);
        rd_kafka_topic_partition_list_t *owed = owed_offsets(w, parts, true);
        if (owed) {
            rd_kafka_resp_err_t cerr = rd_kafka_commit_queue(rk, owed, NULL, commit_cb, w);
            if (cerr)
                FQ_WARN(NULL, "commit of revoked partitions: %s", rd_kafka_err2str(cerr));
            rd_kafka_topic_partition_list_destroy(owed);
        }
    }
    for (int i = 0; i < parts->cnt; i++)
        fq_parts_remove(&w->parts, parts->elems[i].topic, parts->elems[i].partition);
    if (cooperative) {
        rd_kafka_error_t *error = rd_kafka_incremental_unassign(rk, parts);
        if (error) {
            FQ_ERROR(NULL, "incremental unassign: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
    } else {
        rd_kafka_assign(rk, NULL);
    }
    FQ_INFO(NULL, "revoked %d partition(s)%s, %zu left", parts->cnt, lost ? " (lost)" : "",
            w->parts.n);
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    fq_worker_t *w = opaque;
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
            /* -1 is librdkafka's internal UA partition, and lag -1 means unknown. */
            if (atoi(pname) < 0 || !json_is_integer(lag) || json_integer_value(lag) < 0)
                continue;
            fq_metrics_set(w->metrics, "frameq_consumer_lag", (double)json_integer_value(lag),
                           "topic", tname, "partition", pname, NULL);
        }
    }
    json_decref(root);
    return 0; /* librdkafka frees json */
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* syslog levels: 0..3 errors, 4 warning, 5..6 notice/info, 7 debug */
    fq_log_level_t l = level <= 3 ? FQ_LOG_ERROR : level == 4 ? FQ_LOG_WARN : FQ_LOG_DEBUG;
    fq_log(l, NULL, "librdkafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    fq_worker_t *w = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof(why));
        FQ_ERROR(NULL, "fatal Kafka error (%s): %s", rd_kafka_err2name(orig), why);
        w->fatal = true;
        return;
    }
    FQ_WARN(NULL, "Kafka %s: %s: %s", rd_kafka_name(rk),
            rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* ---- set-up ---- */

static bool user_set(const fq_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->kafka_props_count; i++)
        if (strcmp(cfg->kafka_props[i].name, name) == 0)
            return true;
    return false;
}

/* Sets a property; a default (force false) yields to the operator's KAFKA_CONFIG_* / -X. */
static int conf_set(rd_kafka_conf_t *conf, const fq_config_t *cfg, const char *name,
                    const char *value, bool force, char *errstr, size_t errstr_size)
{
    if (!force && user_set(cfg, name))
        return 0;
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errstr_size, "%s: %s", name, why);
        return -1;
    }
    return 0;
}

static rd_kafka_t *new_producer(fq_worker_t *w, char *errstr, size_t errstr_size)
{
    const fq_config_t *cfg = w->cfg;
    rd_kafka_conf_t *conf = fq_config_kafka_conf(cfg, errstr, errstr_size);
    if (!conf)
        return NULL;
    if (conf_set(conf, cfg, "transactional.id", w->txn_id, true, errstr, errstr_size) ||
        conf_set(conf, cfg, "enable.idempotence", "true", true, errstr, errstr_size) ||
        conf_set(conf, cfg, "linger.ms", "2", false, errstr, errstr_size) ||
        conf_set(conf, cfg, "transaction.timeout.ms", "60000", false, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, w);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    char why[512];
    rd_kafka_t *rkp = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!rkp) {
        snprintf(errstr, errstr_size, "producer: %s", why);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return rkp; /* conf now owned by rkp */
}

static rd_kafka_t *new_consumer(fq_worker_t *w, char *errstr, size_t errstr_size)
{
    const fq_config_t *cfg = w->cfg;
    rd_kafka_conf_t *conf = fq_config_kafka_conf(cfg, errstr, errstr_size);
    if (!conf)
        return NULL;
    /* KIP-848 (consumer): the broker assigns, incrementally (rebalance_cb sees COOPERATIVE);
     * librdkafka refuses partition.assignment.strategy with it. */
    bool kip848 = strcmp(cfg->group_protocol, "consumer") == 0;
    if (conf_set(conf, cfg, "group.id", cfg->kafka_group_id, true, errstr, errstr_size) ||
        conf_set(conf, cfg, "group.protocol", cfg->group_protocol, true, errstr, errstr_size) ||
        (!kip848 && conf_set(conf, cfg, "partition.assignment.strategy", "cooperative-sticky",
                             false, errstr, errstr_size)) ||
        conf_set(conf, cfg, "enable.auto.commit", "false", true, errstr, errstr_size) ||
        conf_set(conf, cfg, "enable.auto.offset.store", "false", true, errstr, errstr_size) ||
        conf_set(conf, cfg, "isolation.level", "read_committed", true, errstr, errstr_size) ||
        conf_set(conf, cfg, "auto.offset.reset", "earliest", false, errstr, errstr_size) ||
        conf_set(conf, cfg, "enable.partition.eof", "true", true, errstr, errstr_size) ||
        conf_set(conf, cfg, "statistics.interval.ms", "5000", false, errstr, errstr_size) ||
        /* A resumed retry partition joins the next fetch request: a short long-poll keeps
         * "due" close to "started" (the default 500 ms would add up to that much). */
        conf_set(conf, cfg, "fetch.wait.max.ms", "50", false, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, w);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!rk) {
        snprintf(errstr, errstr_size, "consumer: %s", why);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
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
        const struct rd_kafka_metadata *md = NULL;
        /* The consumer handle: the producer may be replaced (renew_producer) meanwhile. */
        rd_kafka_resp_err_t kerr = rd_kafka_metadata(w->rk, 0, NULL, &md, PROBE_FAST_MS * 2);
        if (kerr)
            err = fq_error_new(FQ_STAGE_MESSAGE, FQ_CLASS_OUTAGE, "kafka: no broker answers: %s",
                               rd_kafka_err2str(kerr));
        else
            rd_kafka_metadata_destroy(md);
    }
    /* Not ready at once, even while the loop waits in a Kafka call that the same outage
     * holds up (up to TXN_TIMEOUT_MS); the loop pauses on its next turn and says when the
     * outage is over. */
    if (err)
        set_ready(w, false, fq_error_message(err));
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
    w->rkp = new_producer(w, errstr, errstr_size);
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
    fq_prober_stop(w->prober); /* it uses rkp and probe_store */
    if (w->next) {
        rd_kafka_message_destroy(w->next);
        w->next = NULL; /* closing runs the rebalance callback, which looks at it */
    }
    if (w->rk) {
        rd_kafka_consumer_close(w->rk);
        if (w->commitq) {
            rd_kafka_queue_poll_callback(w->commitq, 0);
            rd_kafka_queue_destroy(w->commitq);
        }
        rd_kafka_destroy(w->rk);
    }
    if (w->rkp) {
        for (int i = 0; i < 2; i++)
            if (w->rkt[i])
                rd_kafka_topic_destroy(w->rkt[i]);
        rd_kafka_flush(w->rkp, 5000);
        rd_kafka_destroy(w->rkp);
    }
    fq_pool_destroy(w->pool);
    fq_store_destroy(w->store);
    fq_store_destroy(w->probe_store);
    fq_parts_clear(&w->parts);
    free(w);
}

/* ---- outage and circuit breaker ---- */

/* Pauses everything and turns not-ready. A probed outage ends with the first passing probe
 * after it began; a breaker outage waits as well. An outage soon after the last one waits
 * longer each time, so a cause the probes cannot see does not make the worker flap. */
static void enter_outage(fq_worker_t *w, outage_kind_t kind, const char *reason)
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
        set_ready(w, false, reason);
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
    apply_pause(w);
}

static void leave_outage(fq_worker_t *w)
{
    if (!w->outage)
        return;
    FQ_INFO(NULL, "outage over: consuming again (was: %s)", w->outage_reason);
    w->outage = false;
    w->outage_ended = fq_time_mono_ms();
    fq_breaker_close(&w->breaker);
    set_ready(w, true, NULL);
    M_SET(w, "frameq_circuit_open", 0.0, NULL);
    apply_pause(w);
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
            enter_outage(w, OUTAGE_PROBED, reason);
            w->outage_probe_seq = r.seq;
        }
        return;
    }
    if (w->outage && r.seq > w->outage_probe_seq && fq_time_mono_ms() >= w->outage_until)
        leave_outage(w);
}

/* ---- messages ---- */

static void msg_destroy(msg_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->njobs; i++)
        fq_error_destroy(m->jobs[i].err);
    free(m->jobs);
    free(m->entries);
    fq_batch_destroy(m->batch);
    if (m->have_item)
        fq_item_clear(&m->item);
    fq_error_destroy(m->own_err);
    if (m->rkm)
        rd_kafka_message_destroy(m->rkm);
    free(m);
}

static void log_ctx(const msg_t *m, const entry_t *e, fq_log_ctx_t *ctx, char *key, size_t key_size)
{
    memset(ctx, 0, sizeof(*ctx));
    key[0] = '\0';
    if (e && e->item && e->keyed) {
        fq_item_key(e->item, key, key_size);
        ctx->item = key;
    }
    ctx->attempt = e ? e->attempt : 0;
    ctx->topic = m->topic;
    ctx->partition = m->rkm->partition;
    ctx->offset = m->rkm->offset;
}

/* Item outcome lines and metrics, once the outcome is durable. */
static void report_entry(fq_worker_t *w, const msg_t *m, const entry_t *e)
{
    fq_log_ctx_t ctx;
    char key[FQ_ITEM_KEY_MAX];
    log_ctx(m, e, &ctx, key, sizeof(key));
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

/* Aborts the open transaction; a failed abort is owed until it succeeds. */
static fin_rc_t txn_abort(fq_worker_t *w)
{
    rd_kafka_error_t *error = rd_kafka_abort_transaction(w->rkp, TXN_TIMEOUT_MS);
    if (!error) {
        w->txn_dirty = false;
        return FIN_OK;
    }
    fin_rc_t rc = FIN_OUTAGE;
    if (rd_kafka_error_is_fatal(error)) {
        w->fatal = true;
        rc = FIN_FATAL;
    }
    FQ_WARN(NULL, "abort transaction: %s", rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    w->txn_dirty = true;
    return rc;
}

/* Classifies a failed transactional call and cleans up after it. */
static fin_rc_t txn_failed(fq_worker_t *w, const char *what, rd_kafka_error_t *error)
{
    fin_rc_t rc;
    if (rd_kafka_error_is_fatal(error)) {
        FQ_ERROR(NULL, "%s: fatal: %s", what, rd_kafka_error_string(error));
        w->fatal = true;
        rc = FIN_FATAL;
    } else if (rd_kafka_error_txn_requires_abort(error)) {
        FQ_WARN(NULL, "%s: %s: aborting, the message will be replayed", what,
                rd_kafka_error_string(error));
        rc = txn_abort(w);
        if (rc == FIN_OK)
            rc = FIN_REPLAY;
    } else {
        /* Timeouts and transport errors: Kafka itself is the outage. */
        FQ_WARN(NULL, "%s: %s", what, rd_kafka_error_string(error));
        w->txn_dirty = true;
        rc = FIN_OUTAGE;
    }
    rd_kafka_error_destroy(error);
    return rc;
}

/* Publishes the routed entries and commits the message's offset in one transaction. */
static fin_rc_t commit_txn(fq_worker_t *w, msg_t *m, size_t nrouted)
{
    const fq_config_t *cfg = w->cfg;
    rd_kafka_error_t *error;
    if (!commits_settled(w, m->topic, m->rkm->partition)) {
        FQ_WARN(NULL, "commit %s [%d]: no answer from the group coordinator within %d ms", m->topic,
                (int)m->rkm->partition, COMMIT_WAIT_MS);
        return FIN_OUTAGE;
    }
    if (w->txn_dirty) {
        fin_rc_t rc = txn_abort(w);
        if (rc != FIN_OK)
            return rc;
    }
    error = rd_kafka_begin_transaction(w->rkp);
    if (error)
        return txn_failed(w, "begin transaction", error);

    const rd_kafka_headers_t *incoming = NULL;
    if (rd_kafka_message_headers(m->rkm, (rd_kafka_headers_t **)&incoming) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        incoming = NULL;

    for (size_t i = 0; i < m->nentries && nrouted; i++) {
        entry_t *e = &m->entries[i];
        if (e->route.kind != FQ_ROUTE_RETRY && e->route.kind != FQ_ROUTE_DLQ)
            continue;
        fq_route_info_t info = {
            .attempt = e->attempt,
            .err = e->err,
            .dlq_reason = e->route.kind == FQ_ROUTE_DLQ ? e->route.dlq_reason : NULL,
            .now_ms = fq_time_now_ms(),
            .topic = m->topic,
            .partition = m->rkm->partition,
            .offset = m->rkm->offset,
            .worker = cfg->worker_id,
        };
        if (e->route.kind == FQ_ROUTE_RETRY) {
            int64_t ra = e->err ? fq_error_retry_after_ms(e->err) : 0;
            info.not_before_ms =
                info.now_ms + fq_backoff_ms(cfg->retry_backoff_ms, cfg->retry_backoff_max_ms,
                                            e->attempt, ra, fq_backoff_random(&w->rng));
        }
        rd_kafka_headers_t *hdrs = fq_route_headers(incoming, &info);
        if (!hdrs) {
            txn_abort(w);
            return FIN_OUTAGE;
        }
        const char *topic =
            e->route.kind == FQ_ROUTE_RETRY ? cfg->kafka_retry_topic : cfg->kafka_dlq_topic;
        char key[FQ_ITEM_KEY_MAX] = "";
        const void *value;
        size_t len;
        const void *kptr = NULL, *kp0 = NULL;
        size_t klen = 0;
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
            kp0 = m->rkm->key;
            kptr = kp0;
            klen = m->rkm->key_len;
            if (len > FQ_DLQ_VALUE_MAX) {
                /* It arrived compressed, but would not fit the DLQ as it is: an outage
                 * would replay it forever and stall the partition. Keep the first bytes,
                 * its size and its hash; the whole message stays at its origin offset
                 * until the main topic's retention ends. */
                char sha[65];
                fq_sha256_hex(value, len, sha);
                int herr = fq_headers_set_int(hdrs, FQ_HDR_ORIGINAL_SIZE, (int64_t)len);
                herr |= fq_headers_set(hdrs, FQ_HDR_ORIGINAL_SHA256, sha);
                char why[FQ_ERROR_MESSAGE_MAX];
                snprintf(why, sizeof(why),
                         "message of %zu bytes is larger than the DLQ takes (%d): value cut "
                         "to its first %d bytes; the original is at %s [%d] @%" PRId64,
                         len, FQ_DLQ_VALUE_MAX, FQ_DLQ_VALUE_MAX, m->topic, (int)m->rkm->partition,
                         m->rkm->offset);
                herr |= fq_headers_set(hdrs, FQ_HDR_ERROR, why);
                if (herr) {
                    rd_kafka_headers_destroy(hdrs);
                    txn_abort(w);
                    return FIN_OUTAGE;
                }
                FQ_WARN(NULL, "%s", why);
                len = FQ_DLQ_VALUE_MAX;
            }
        }
        rd_kafka_resp_err_t perr;
        for (;;) {
            perr = rd_kafka_producev(
                w->rkp, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_KEY(kptr, klen), RD_KAFKA_V_VALUE((void *)value, len),
                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
            if (perr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                break;
            rd_kafka_poll(w->rkp, 100);
        }
        if (perr) {
            rd_kafka_headers_destroy(hdrs); /* not taken on failure */
            FQ_WARN(NULL, "produce to %s: %s", topic, rd_kafka_err2str(perr));
            txn_abort(w);
            return FIN_OUTAGE;
        }
        /* hdrs now owned by the message */
    }

    /* The offset after the message, or the partition's end when the consumer already read
     * to it: that skips the markers of transactions, so lag reads 0 when drained. */
    int64_t target = m->rkm->offset + 1;
    const fq_part_t *p = part_of(w, m->topic, m->rkm->partition);
    if (p && p->next == target && p->expect < 0 && p->eof_at > target &&
        !(w->next && same_partition(w->next, m->topic, m->rkm->partition)))
        target = p->eof_at;
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offsets, m->topic, m->rkm->partition)->offset = target;
    rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(w->rk);
    error = rd_kafka_send_offsets_to_transaction(w->rkp, offsets, cgmd, TXN_TIMEOUT_MS);
    rd_kafka_consumer_group_metadata_destroy(cgmd);
    rd_kafka_topic_partition_list_destroy(offsets);
    if (error)
        return txn_failed(w, "send offsets to transaction", error);

    for (int tries = 0;; tries++) {
        error = rd_kafka_commit_transaction(w->rkp, TXN_TIMEOUT_MS);
        if (!error) {
            fq_part_t *q = part_of(w, m->topic, m->rkm->partition);
            if (q) {
                fq_part_durable(q, target);
                fq_part_committed(q, target, true, fq_time_mono_ms());
            }
            return FIN_OK;
        }
        if (rd_kafka_error_is_retriable(error) && tries < 3 && !rd_kafka_error_is_fatal(error)) {
            FQ_WARN(NULL, "commit transaction: %s: retrying", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            continue;
        }
        return txn_failed(w, "commit transaction", error);
    }
}

/* A message with nothing to route: its offset is committed asynchronously with the consumer;
 * a refused commit is sent again (commit_owed), and a replay after a crash is harmless (every
 * item of it is done, and done items are skipped). */
static fin_rc_t commit_plain(fq_worker_t *w, msg_t *m)
{
    fq_part_t *p = part_of(w, m->topic, m->rkm->partition);
    if (!p)
        return FIN_REPLAY; /* revoked meanwhile: its new owner replays it */
    fq_part_durable(p, m->rkm->offset + 1);
    commit_owed(w);
    return FIN_OK;
}

/* Everything of the message has an outcome: decide, record, publish, commit. */
static fin_rc_t finish_message(fq_worker_t *w, msg_t *m)
{
    const fq_config_t *cfg = w->cfg;
    char reason[700] = "";
    char breaker_reason[700] = "";
    const bool from_main = strcmp(m->topic, w->cfg->kafka_topic) == 0;
    fin_rc_t rc = FIN_OK;
    size_t nrouted = 0;

    M_SET(w, "frameq_inflight_items", 0.0, NULL);
    if (m->abandoned || atomic_load(&m->cancel)) {
        /* Revoked, or cancelled at shutdown: nothing is committed; whoever owns the partition
         * next replays it. */
        FQ_INFO(NULL, "message %s [%d] @%" PRId64 " abandoned without commit", m->topic,
                (int)m->rkm->partition, m->rkm->offset);
        if (!m->abandoned)
            seek_back(w, m->topic, m->rkm->partition, m->rkm->offset);
        return FIN_REPLAY;
    }

    for (size_t i = 0; i < m->nentries; i++) {
        entry_t *e = &m->entries[i];
        if (e->job)
            e->err = e->job->err;
        e->route = fq_route_decide(e->err, e->attempt, cfg->max_retries);
        if (e->route.kind == FQ_ROUTE_OUTAGE && !reason[0])
            snprintf(reason, sizeof(reason), "%s: %s", fq_stage_name(fq_error_stage(e->err)),
                     fq_error_message(e->err));
        char key[FQ_ITEM_KEY_MAX] = "";
        if (e->item)
            fq_item_key(e->item, key, sizeof(key));
        /* Only the main topic feeds the breaker: retry messages are items that failed before,
         * so a streak of failures there says little about a dependency. */
        if (e->job && from_main && fq_breaker_feed(&w->breaker, key, e->err, fq_time_mono_ms()) &&
            !breaker_reason[0] && e->err)
            snprintf(breaker_reason, sizeof(breaker_reason),
                     "circuit open: stage %s failed for %d different "
                     "items in a row: %s",
                     fq_stage_name(fq_error_stage(e->err)), BREAKER_K, fq_error_message(e->err));
        if (e->route.kind == FQ_ROUTE_RETRY || e->route.kind == FQ_ROUTE_DLQ)
            nrouted++;
    }
    /* The breaker makes this message an outage only if it is still open after all of its
     * items: one item getting through in the same message proves the dependency works. */
    outage_kind_t kind = OUTAGE_PROBED;
    if (!reason[0] && breaker_reason[0] && w->breaker.open) {
        snprintf(reason, sizeof(reason), "%s", breaker_reason);
        kind = OUTAGE_BREAKER;
    }
    if (reason[0]) {
        rc = FIN_OUTAGE;
        goto done;
    }

    /* Record first: a routed message always has its extraction_errors row. */
    for (size_t i = 0; i < m->nentries; i++) {
        entry_t *e = &m->entries[i];
        if (!e->route.status || !e->item || !e->keyed)
            continue;
        fq_store_origin_t origin = {cfg->worker_id, m->topic, m->rkm->partition, m->rkm->offset};
        fq_error_t *serr = w->hooks.record_error
                               ? w->hooks.record_error(w->hooks.ctx, e->item, e->attempt, e->err,
                                                       e->route.status, &origin)
                               : fq_store_record_error(w->store, e->item, e->attempt, e->err,
                                                       e->route.status, &origin);
        if (serr) {
            snprintf(reason, sizeof(reason), "database: %s", fq_error_message(serr));
            fq_error_destroy(serr);
            rc = FIN_OUTAGE;
            goto done;
        }
    }

    int64_t tc = fq_time_mono_ms();
    if (nrouted)
        rc = commit_txn(w, m, nrouted);
    else
        rc = commit_plain(w, m);
    FQ_DEBUG(NULL, "%s commit took %" PRId64 " ms", nrouted ? "transactional" : "consumer",
             fq_time_mono_ms() - tc);
    if (rc == FIN_OUTAGE)
        snprintf(reason, sizeof(reason), "kafka: publishing or committing failed");

done:
    switch (rc) {
    case FIN_OK:
        for (size_t i = 0; i < m->nentries; i++) {
            report_entry(w, m, &m->entries[i]);
            if (m->entries[i].route.kind == FQ_ROUTE_DLQ)
                w->dlq_sent++;
        }
        FQ_DEBUG(NULL, "message %s [%d] @%" PRId64 " committed (%zu routed, %" PRId64 " ms)",
                 m->topic, (int)m->rkm->partition, m->rkm->offset, nrouted,
                 fq_time_mono_ms() - m->t0);
        break;
    case FIN_REPLAY:
        seek_back(w, m->topic, m->rkm->partition, m->rkm->offset);
        break;
    case FIN_OUTAGE:
        seek_back(w, m->topic, m->rkm->partition, m->rkm->offset);
        enter_outage(w, kind, reason);
        break;
    case FIN_FATAL:
        /* Not committed: replayed if the producer is renewed, else by the next owner. */
        seek_back(w, m->topic, m->rkm->partition, m->rkm->offset);
        break;
    }
    return rc;
}

/* Gives the prefetched next message back after its predecessor was not committed. When both
 * share a partition, the predecessor's rewind already covers it. */
static void drop_next(fq_worker_t *w, const msg_t *done)
{
    rd_kafka_message_t *rkm = w->next;
    if (!rkm)
        return;
    w->next = NULL;
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    if (!done || done->rkm->partition != rkm->partition || strcmp(done->topic, topic) != 0)
        seek_back(w, topic, rkm->partition, rkm->offset);
    rd_kafka_message_destroy(rkm);
}

/* Builds the message's entries and starts its items on the pool. */
static void start_message(fq_worker_t *w, rd_kafka_message_t *rkm)
{
    const fq_config_t *cfg = w->cfg;
    msg_t *m = calloc(1, sizeof(*m));
    if (!m) {
        FQ_ERROR(NULL, "out of memory: message will be replayed");
        seek_back(w, rd_kafka_topic_name(rkm->rkt), rkm->partition, rkm->offset);
        rd_kafka_message_destroy(rkm);
        return;
    }
    m->rkm = rkm;
    m->topic = rd_kafka_topic_name(rkm->rkt);
    m->from_retry = strcmp(m->topic, cfg->kafka_retry_topic) == 0;
    m->t0 = fq_time_mono_ms();
    const void *payload = rkm->payload ? rkm->payload : "";

    if (m->from_retry) {
        rd_kafka_headers_t *hdrs = NULL;
        if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
            hdrs = NULL;
        int64_t not_before = fq_headers_get_int(hdrs, FQ_HDR_NOT_BEFORE, 0);
        int64_t now = fq_time_now_ms();
        if (not_before > now) {
            /* Not due: rewind to it and pause only this partition until it is. */
            fq_part_t *p = part_of(w, m->topic, rkm->partition);
            seek_back(w, m->topic, rkm->partition, rkm->offset);
            if (p)
                p->due_ms = not_before;
            FQ_DEBUG(NULL, "retry %s [%d] @%" PRId64 " due in %" PRId64 " ms: partition paused",
                     m->topic, (int)rkm->partition, rkm->offset, not_before - now);
            msg_destroy(m);
            apply_pause(w);
            return;
        }
        int attempt = (int)fq_headers_get_int(hdrs, FQ_HDR_ATTEMPT, 0) + 1;
        m->entries = calloc(1, sizeof(*m->entries));
        m->jobs = calloc(1, sizeof(*m->jobs));
        if (!m->entries || !m->jobs)
            goto oom;
        m->nentries = 1;
        entry_t *e = &m->entries[0];
        e->attempt = attempt;
        m->own_err = fq_item_decode(payload, rkm->len, &m->item);
        m->have_item = true;
        if (m->own_err && fq_error_class(m->own_err) == FQ_CLASS_MALFORMED) {
            e->item = NULL; /* raw bytes to the DLQ */
            e->err = m->own_err;
        } else {
            e->item = &m->item;
            e->keyed = fq_item_platform_valid(m->item.platform) && fq_item_code_valid(m->item.code);
            if (m->own_err) {
                e->err = m->own_err;
            } else {
                e->job = &m->jobs[0];
                e->job->item = e->item;
                e->job->attempt = attempt;
                m->njobs = 1;
            }
        }
        if (attempt > 1 && m->njobs) {
            char key[FQ_ITEM_KEY_MAX];
            fq_log_ctx_t ctx;
            log_ctx(m, e, &ctx, key, sizeof(key));
            FQ_INFO(&ctx, "retry attempt started (not-before %" PRId64 ", %" PRId64 " ms after)",
                    not_before, now - not_before);
        }
    } else {
        fq_error_t *err = fq_batch_decode(payload, rkm->len, &m->batch);
        if (err) {
            m->own_err = err;
            m->entries = calloc(1, sizeof(*m->entries));
            if (!m->entries)
                goto oom;
            m->nentries = 1;
            m->entries[0].attempt = 1;
            m->entries[0].err = err;
        } else {
            size_t n = m->batch->count;
            m->entries = calloc(n ? n : 1, sizeof(*m->entries));
            m->jobs = calloc(n ? n : 1, sizeof(*m->jobs));
            if (!m->entries || !m->jobs)
                goto oom;
            m->nentries = n;
            for (size_t i = 0; i < n; i++) {
                fq_batch_entry_t *be = &m->batch->entries[i];
                entry_t *e = &m->entries[i];
                e->item = &be->item;
                e->attempt = 1;
                e->keyed =
                    fq_item_platform_valid(be->item.platform) && fq_item_code_valid(be->item.code);
                if (be->err) {
                    e->err = be->err;
                    continue;
                }
                e->job = &m->jobs[m->njobs++];
                e->job->item = e->item;
                e->job->attempt = 1;
            }
        }
    }

    FQ_DEBUG(NULL, "message %s [%d] @%" PRId64 " started: %zu item(s)", m->topic,
             (int)rkm->partition, rkm->offset, m->njobs);
    w->cur = m;
    apply_pause(w);
    M_SET(w, "frameq_inflight_items", (double)m->njobs, NULL);
    fq_pool_submit(w->pool, m->jobs, m->njobs, &m->cancel);
    return;

oom:
    FQ_ERROR(NULL, "out of memory: message will be replayed");
    seek_back(w, m->topic, rkm->partition, rkm->offset);
    msg_destroy(m);
}

static void handle_event(fq_worker_t *w, rd_kafka_message_t *rkm)
{
    const char *topic = rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "";
    fq_part_t *p = rkm->rkt ? part_of(w, topic, rkm->partition) : NULL;
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
        break;
    case FQ_TAKE_STALE:
        /* Fetched before our rewind landed. If the rewind seems lost (a seek can time out in a
         * rebalance), issue it again. */
        FQ_DEBUG(NULL, "%s [%d] @%" PRId64 ": dropped, waiting for the rewind to %" PRId64, topic,
                 (int)rkm->partition, rkm->offset, p->expect);
        if (fq_time_mono_ms() - p->seek_mono >= RESEEK_MS) {
            p->seek_mono = fq_time_mono_ms();
            seek_async(w, topic, rkm->partition, p->expect);
        }
        rd_kafka_message_destroy(rkm);
        return;
    case FQ_TAKE_REPEAT:
        rd_kafka_message_destroy(rkm);
        return;
    }
    if ((w->cur && w->next) || w->stopping || w->outage) {
        /* Fetched before the pause took effect: give it back, it is not ours to run yet. */
        seek_back(w, topic, rkm->partition, rkm->offset);
        rd_kafka_message_destroy(rkm);
        return;
    }
    if (w->cur) {
        /* Held, not started: fetching it now hides the fetch behind the current work. */
        w->next = rkm;
        apply_pause(w);
        return;
    }
    start_message(w, rkm);
}

/* Nothing of this worker is running, held, waiting or owed to the group. */
static bool idle(const fq_worker_t *w)
{
    if (w->cur || w->next || w->outage)
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
 * from the group coordinator, not from what this worker happens to hold (DESIGN §6). */
static bool group_drained(fq_worker_t *w)
{
    const char *topics[2];
    size_t n = 0;
    if (w->opts.role != FQ_ROLE_RETRY)
        topics[n++] = w->cfg->kafka_topic;
    if (w->opts.role != FQ_ROLE_MAIN)
        topics[n++] = w->cfg->kafka_retry_topic;
    fq_lag_t lag;
    char why[512];
    if (fq_lag_read(w->rk, topics, n, LAG_TIMEOUT_MS, &lag, why, sizeof(why))) {
        FQ_DEBUG(NULL, "--once: group lag not read: %s", why);
        return false;
    }
    bool done = lag.total == 0;
    if (!done)
        FQ_DEBUG(NULL, "--once: group lag %" PRId64 " over %zu partition(s)", lag.total, lag.count);
    fq_lag_clear(&lag);
    return done;
}

static int init_transactions(fq_worker_t *w)
{
    int64_t backoff = OUTAGE_MIN_MS;
    bool logged = false;
    while (!*w->opts.stop) {
        rd_kafka_error_t *error = rd_kafka_init_transactions(w->rkp, TXN_TIMEOUT_MS);
        if (!error) {
            w->txn_ready = true;
            if (logged)
                FQ_INFO(NULL, "Kafka transactions ready");
            return 0;
        }
        if (rd_kafka_error_is_fatal(error)) {
            FQ_ERROR(NULL, "init transactions: fatal: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            return -1;
        }
        if (!logged)
            FQ_WARN(NULL, "init transactions: %s: retrying", rd_kafka_error_string(error));
        logged = true;
        set_ready(w, false, "kafka: transactions not initialised");
        rd_kafka_error_destroy(error);
        for (int64_t t = 0; t < backoff && !*w->opts.stop; t += 100)
            usleep(100 * 1000);
        backoff = backoff * 2 > OUTAGE_MAX_MS ? OUTAGE_MAX_MS : backoff * 2;
    }
    return 1;
}

/* The producer learns the retry and DLQ topics' leaders now rather than inside the first
 * transaction that routes something (measured: ~0.9 s added to that first commit). The topic
 * handles stay alive so their metadata stays cached. */
static void warm_up_producer(fq_worker_t *w)
{
    const char *names[2] = {w->cfg->kafka_retry_topic, w->cfg->kafka_dlq_topic};
    for (int i = 0; i < 2; i++) {
        w->rkt[i] = rd_kafka_topic_new(w->rkp, names[i], NULL);
        if (!w->rkt[i])
            continue;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(w->rkp, 0, w->rkt[i], &md, 5000);
        if (err)
            FQ_WARN(NULL, "metadata for %s: %s", names[i], rd_kafka_err2str(err));
        else
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

static bool renew_producer(fq_worker_t *w)
{
    char why[512] = "";
    if (rd_kafka_fatal_error(w->rk, why, sizeof(why)))
        return false; /* the consumer itself: nothing to renew */
    /* Any fatal error of the producer (fenced, or an idempotence sequence lost across the
     * broker's restart): its state is all in the open transaction, which a new producer under
     * the same transactional.id aborts. */
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(w->rkp, why, sizeof(why));
    if (!e) {
        snprintf(why, sizeof(why), "a transactional call failed fatally");
        e = RD_KAFKA_RESP_ERR__FATAL;
    }
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
    for (int i = 0; i < 2; i++) {
        if (w->rkt[i])
            rd_kafka_topic_destroy(w->rkt[i]);
        w->rkt[i] = NULL;
    }
    rd_kafka_destroy(w->rkp);
    char errstr[512];
    w->rkp = new_producer(w, errstr, sizeof(errstr));
    if (!w->rkp) {
        FQ_ERROR(NULL, "new producer: %s", errstr);
        return false;
    }
    w->fatal = false;
    w->txn_dirty = false;
    w->txn_ready = false;
    int irc = init_transactions(w);
    if (irc != 0) {
        w->fatal = irc < 0; /* else stopped while Kafka was away: a clean exit */
        return false;
    }
    warm_up_producer(w);
    return true;
}

int fq_worker_run(fq_worker_t *w)
{
    const fq_config_t *cfg = w->cfg;
    set_ready(w, false, "starting");
    M_SET(w, "frameq_circuit_open", 0.0, NULL);
    M_SET(w, "frameq_inflight_items", 0.0, NULL);
    int irc = init_transactions(w);
    if (irc < 0)
        return FQ_EXIT_FATAL;
    if (irc > 0)
        return FQ_EXIT_OK; /* stopped while waiting for Kafka */

    warm_up_producer(w);

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
    set_ready(w, true, NULL);
    follow_probes(w);

    for (;;) {
        /* A fatal error with a message in flight: let it finish (its commit fails and rewinds
         * it), then renew the producer or stop. */
        if (w->fatal && !w->cur && !renew_producer(w))
            break;
        int64_t mono = fq_time_mono_ms();
        if (w->metrics)
            fq_metrics_heartbeat(w->metrics, 30000);
        rd_kafka_poll(w->rkp, 0);
        commit_owed(w);
        reseek_lost(w);
        follow_probes(w);

        if (*w->opts.stop && !w->stopping) {
            w->stopping = true;
            w->stop_deadline = mono + cfg->shutdown_grace_ms;
            FQ_INFO(NULL, "stopping: %s", w->cur ? "waiting for the items in flight" : "idle");
            set_ready(w, false, "stopping");
            apply_pause(w);
        }
        if (w->stopping && !w->cur)
            break;

        if (w->cur) {
            if (w->stopping && !atomic_load(&w->cur->cancel) && mono >= w->stop_deadline) {
                FQ_WARN(NULL, "shutdown grace over: cancelling %zu item(s)",
                        fq_pool_pending(w->pool));
                atomic_store(&w->cur->cancel, 1);
            }
            /* Serve the group (heartbeats, rebalances) while the pool works. */
            rd_kafka_message_t *rkm = rd_kafka_consumer_poll(w->rk, 0);
            if (rkm)
                handle_event(w, rkm);
            if (fq_pool_wait(w->pool, POLL_MS)) {
                msg_t *m = w->cur;
                fin_rc_t rc = finish_message(w, m);
                w->cur = NULL;
                if (rc != FIN_OK || w->stopping || w->outage)
                    drop_next(w, m);
                msg_destroy(m);
                if (w->next) {
                    rd_kafka_message_t *next = w->next;
                    w->next = NULL;
                    start_message(w, next);
                }
                apply_pause(w);
            }
            continue;
        }

        apply_pause(w); /* resumes retry partitions that became due */

        int timeout = POLL_MS;
        int64_t now = fq_time_now_ms();
        for (size_t i = 0; i < w->parts.n; i++)
            if (w->parts.v[i].due_ms && w->parts.v[i].due_ms - now < timeout)
                timeout = (int)(w->parts.v[i].due_ms - now);
        if (timeout < 1)
            timeout = 1;
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(w->rk, timeout);
        if (rkm) {
            handle_event(w, rkm);
            continue;
        }
        mono = fq_time_mono_ms();
        if (w->opts.once && idle(w) && mono - w->drain_checked >= DRAIN_CHECK_MS) {
            w->drain_checked = mono;
            if (group_drained(w)) {
                FQ_INFO(NULL,
                        "drained: the group's committed offsets are at the end of every "
                        "partition (%ld message(s) to the DLQ from this worker)",
                        w->dlq_sent);
                break;
            }
        }
    }

    /* Durable offsets not answered yet: give them a moment (closing commits the rest). */
    int64_t until = fq_time_mono_ms() + 5000;
    commit_owed(w);
    for (size_t i = 0; i < w->parts.n && fq_time_mono_ms() < until; i++)
        while (w->parts.v[i].pending && fq_time_mono_ms() < until)
            rd_kafka_queue_poll_callback(w->commitq, 50);
    set_ready(w, false, "stopped");
    if (w->fatal)
        return FQ_EXIT_FATAL;
    if (w->opts.once && w->dlq_sent > 0)
        return FQ_EXIT_DLQ;
    return FQ_EXIT_OK;
}
