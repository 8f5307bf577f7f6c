/* The worker core (consumer/worker.c) as a fleet, against librdkafka's mock cluster: several
 * workers of one group in threads of this process, the item work replaced by hooks (no
 * services), faults injected with rd_kafka_mock_push_request_errors and broker/coordinator
 * changes. Each test asserts the offsets and messages that result.
 *
 * What the mock cannot show: it keeps no transactional offset commits and writes no transaction
 * markers (its TxnOffsetCommit and EndTxn handlers only answer), so aborted records stay visible
 * and routed messages never move the group's offsets. Exactly-once routing and lag past markers
 * are proven against the real broker (tests/chaos fleet scenario, test_kafka); here the tests
 * assert what the worker does: which offsets it commits, what it runs again, that it goes on. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "fq_config.h"
#include "fq_lag.h"
#include "fq_log.h"
#include "fq_test_capture.h"
#include "fq_test_env.h"
#include "fq_worker.h"

/* Kafka protocol API keys (rdkafka_mock.h takes them as numbers). */
#define API_ADD_OFFSETS_TO_TXN 25
#define API_END_TXN            26
#define API_TXN_OFFSET_COMMIT  28
#define API_INIT_PRODUCER_ID   22

#define WAIT_MS     20000
#define MAX_ITEMS   512
#define MAX_WORKERS 4

/* ---- item work stand-in: the code names what happens ---- */

typedef struct item_stat {
    char code[64];
    int runs, ok, cancelled, recorded;
} item_stat_t;

typedef struct harness {
    rd_kafka_t *mrk; /* owns the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    char brokers[256];
    char topic[96], retry[128], dlq[128], group[128];
    pthread_mutex_t lock;
    item_stat_t items[MAX_ITEMS];
    int nitems;
    atomic_int release;      /* "slow" items (and "stuck" ones after their first run) run until this
                                is set (or they are cancelled) */
    atomic_int slow_running; /* "slow" items running now */
    atomic_int probe_fail;   /* the non-Kafka probe fails while set */
    bool stuck_fails_probe;  /* a "stuck" item's first run sets probe_fail */
    const char *txn_timeout_ms; /* the workers' transaction.timeout.ms when set */
} harness_t;

static harness_t H;

static item_stat_t *stat_of(const char *code)
{
    for (int i = 0; i < H.nitems; i++)
        if (strcmp(H.items[i].code, code) == 0)
            return &H.items[i];
    assert_true(H.nitems < MAX_ITEMS);
    item_stat_t *s = &H.items[H.nitems++];
    memset(s, 0, sizeof(*s));
    snprintf(s->code, sizeof(s->code), "%s", code);
    return s;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int stat_get(const char *code, int which);

static fq_error_t *hook_process(void *ctx, const fq_item_t *item, int attempt,
                                const atomic_int *cancel, fq_outcome_t *out)
{
    pthread_mutex_lock(&H.lock);
    stat_of(item->code)->runs++;
    pthread_mutex_unlock(&H.lock);
    bool cancelled = false;
    bool stuck_later = strncmp(item->code, "stuck", 5) == 0 && stat_get(item->code, 0) > 1;
    if (strncmp(item->code, "stuck", 5) == 0 && !stuck_later && H.stuck_fails_probe)
        atomic_store(&H.probe_fail, 1);              /* the outage that follows does not end */
    bool held = strncmp(item->code, "held", 4) == 0; /* slow, then a permanent failure */
    if (strncmp(item->code, "slow", 4) == 0 || held || stuck_later) {
        atomic_fetch_add(&H.slow_running, 1);
        while (!atomic_load(&H.release) && !(cancel && atomic_load(cancel)))
            sleep_ms(5);
        /* Cancelled counts even when the release came meanwhile: the worker abandoned it. */
        cancelled = cancel && atomic_load(cancel);
        atomic_fetch_sub(&H.slow_running, 1);
    } else if (strncmp(item->code, "ok", 2) == 0) {
        sleep_ms(10); /* long enough for rebalances to land mid-message */
    }
    pthread_mutex_lock(&H.lock);
    item_stat_t *s = stat_of(item->code);
    if (cancelled)
        s->cancelled++;
    else if (strncmp(item->code, "perm", 4) != 0 && strncmp(item->code, "stuck", 5) != 0 && !held)
        s->ok++;
    pthread_mutex_unlock(&H.lock);
    if (cancelled)
        return fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "cancelled");
    if (strncmp(item->code, "perm", 4) == 0 || strncmp(item->code, "stuck", 5) == 0 || held)
        return fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, "HTTP 404 (test)");
    memset(out, 0, sizeof(*out));
    out->info.frame_count = 1;
    return NULL;
}

static fq_error_t *hook_record(void *ctx, const fq_item_t *item, int attempt, const fq_error_t *err,
                               const char *status, const fq_store_origin_t *origin)
{
    pthread_mutex_lock(&H.lock);
    stat_of(item->code)->recorded++;
    pthread_mutex_unlock(&H.lock);
    return NULL;
}

static fq_error_t *hook_probe(void *ctx)
{
    if (atomic_load(&H.probe_fail))
        return fq_error_new(FQ_STAGE_STORE, FQ_CLASS_OUTAGE, "database: down (test)");
    return NULL;
}

static const fq_worker_hooks_t hooks = {
    .process = hook_process,
    .record_error = hook_record,
    .probe = hook_probe,
};

static int stat_get(const char *code, int which)
{
    pthread_mutex_lock(&H.lock);
    item_stat_t *s = stat_of(code);
    int v = which == 0 ? s->runs : which == 1 ? s->ok : which == 2 ? s->cancelled : s->recorded;
    pthread_mutex_unlock(&H.lock);
    return v;
}

/* ---- cluster, topics, messages ---- */

static void cluster_up(int partitions)
{
    memset(&H, 0, sizeof(H));
    pthread_mutex_init(&H.lock, NULL);
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)), 0);
    H.mrk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(H.mrk);
    H.mc = rd_kafka_mock_cluster_new(H.mrk, 3);
    assert_non_null(H.mc);
    snprintf(H.brokers, sizeof(H.brokers), "%s", rd_kafka_mock_cluster_bootstraps(H.mc));
    fq_test_unique_name("mock", H.topic, sizeof(H.topic));
    snprintf(H.retry, sizeof(H.retry), "%s.retry", H.topic);
    snprintf(H.dlq, sizeof(H.dlq), "%s.dlq", H.topic);
    snprintf(H.group, sizeof(H.group), "%s-group", H.topic);
    assert_int_equal(rd_kafka_mock_topic_create(H.mc, H.topic, partitions, 1), 0);
    assert_int_equal(rd_kafka_mock_topic_create(H.mc, H.retry, partitions, 1), 0);
    assert_int_equal(rd_kafka_mock_topic_create(H.mc, H.dlq, 1, 1), 0);
}

static void cluster_down(void)
{
    rd_kafka_mock_cluster_destroy(H.mc);
    rd_kafka_destroy(H.mrk);
    pthread_mutex_destroy(&H.lock);
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *group)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(
        rd_kafka_conf_set(conf, "bootstrap.servers", H.brokers, errstr, sizeof(errstr)), 0);
    assert_int_equal(rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)), 0);
    if (group) {
        assert_int_equal(rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)), 0);
        assert_int_equal(
            rd_kafka_conf_set(conf, "isolation.level", "read_committed", errstr, sizeof(errstr)),
            0);
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    assert_non_null(rk);
    return rk;
}

/* Produces one batch of the given codes to partition. */
static void produce_batch(int32_t partition, const char *const *codes, size_t n)
{
    char value[4096];
    size_t len =
        (size_t)snprintf(value, sizeof(value), "{\"schema\":\"frameq.batch.v1\",\"items\":[");
    for (size_t i = 0; i < n; i++)
        len +=
            (size_t)snprintf(value + len, sizeof(value) - len,
                             "%s{\"platform\":\"mock\",\"code\":\"%s\"}", i ? "," : "", codes[i]);
    len += (size_t)snprintf(value + len, sizeof(value) - len, "]}");
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, NULL);
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(H.topic),
                                       RD_KAFKA_V_PARTITION(partition),
                                       RD_KAFKA_V_VALUE(value, len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    assert_int_equal(rd_kafka_flush(rk, 10000), 0);
    rd_kafka_destroy(rk);
}

/* Produces one retry message (the item alone, as the worker routes it) to partition. */
static void produce_retry(int32_t partition, const char *code, int attempt, int64_t not_before_ms)
{
    char value[256], att[16], nb[32];
    int len = snprintf(value, sizeof(value), "{\"platform\":\"mock\",\"code\":\"%s\"}", code);
    snprintf(att, sizeof(att), "%d", attempt);
    snprintf(nb, sizeof(nb), "%lld", (long long)not_before_ms);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(2);
    rd_kafka_header_add(hdrs, "frameq-attempt", -1, att, -1);
    rd_kafka_header_add(hdrs, "frameq-not-before", -1, nb, -1);
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, NULL);
    assert_int_equal(
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(H.retry), RD_KAFKA_V_PARTITION(partition),
                          RD_KAFKA_V_VALUE(value, (size_t)len), RD_KAFKA_V_HEADERS(hdrs),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
        0);
    assert_int_equal(rd_kafka_flush(rk, 10000), 0);
    rd_kafka_destroy(rk);
}

/* The group's lag over the main and retry topics (what KEDA reads); -1 when not readable. */
static int64_t group_lag(void)
{
    rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, H.group);
    const char *topics[] = {H.topic, H.retry};
    fq_lag_t lag;
    char why[512];
    int64_t total = -1;
    if (fq_lag_read(rk, topics, 2, 5000, &lag, why, sizeof(why)) == 0) {
        total = lag.total;
        fq_lag_clear(&lag);
    }
    rd_kafka_destroy(rk);
    return total;
}

/* Messages in topic, read from the start. */
static int count_messages(const char *topic, int partitions)
{
    rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, "counter");
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(partitions);
    int64_t total = 0;
    for (int p = 0; p < partitions; p++) {
        int64_t lo = 0, hi = 0;
        assert_int_equal(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000), 0);
        total += hi - lo;
    }
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_destroy(rk);
    return (int)total;
}

/* ---- workers in threads ---- */

typedef struct wthread {
    pthread_t thread;
    fq_config_t *cfg;
    fq_worker_t *w;
    volatile sig_atomic_t stop;
    atomic_int finished;
    int rc;
} wthread_t;

static void *run_worker(void *opaque)
{
    wthread_t *t = opaque;
    t->rc = fq_worker_run(t->w);
    atomic_store(&t->finished, 1);
    return NULL;
}

static void cfg_set(fq_config_t *cfg, const char *name, const char *value)
{
    char err[512];
    if (fq_config_set(cfg, name, value, FQ_ORIGIN_FLAG, err, sizeof(err)) != 0)
        fail_msg("%s=%s: %s", name, value, err);
}

static void worker_start(wthread_t *t, const char *id, bool once)
{
    memset(t, 0, sizeof(*t));
    t->cfg = fq_config_new();
    assert_non_null(t->cfg);
    char err[512];
    int argc = 1;
    char *argv[] = {(char *)"test_worker_mock", NULL};
    assert_int_equal(fq_config_load(t->cfg, &argc, argv, err, sizeof(err)), 0);
    cfg_set(t->cfg, "KAFKA_BROKERS", H.brokers);
    cfg_set(t->cfg, "KAFKA_TOPIC", H.topic);
    cfg_set(t->cfg, "KAFKA_RETRY_TOPIC", H.retry);
    cfg_set(t->cfg, "KAFKA_DLQ_TOPIC", H.dlq);
    cfg_set(t->cfg, "KAFKA_GROUP_ID", H.group);
    cfg_set(t->cfg, "WORKER_ID", id);
    cfg_set(t->cfg, "WORKER_CONCURRENCY", "2");
    cfg_set(t->cfg, "RETRY_BACKOFF_MS", "10");
    cfg_set(t->cfg, "RETRY_BACKOFF_MAX_MS", "20");
    cfg_set(t->cfg, "SHUTDOWN_GRACE_MS", "2000");
    cfg_set(t->cfg, "KAFKA_CONFIG_SESSION_TIMEOUT_MS", "6000");
    cfg_set(t->cfg, "KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS", "300");
    if (H.txn_timeout_ms)
        cfg_set(t->cfg, "KAFKA_CONFIG_TRANSACTION_TIMEOUT_MS", H.txn_timeout_ms);
    fq_worker_opts_t opts = {.role = FQ_ROLE_ALL, .once = once, .stop = &t->stop, .hooks = &hooks};
    t->w = fq_worker_new(t->cfg, &opts, err, sizeof(err));
    if (!t->w)
        fail_msg("worker %s: %s", id, err);
    assert_int_equal(pthread_create(&t->thread, NULL, run_worker, t), 0);
}

/* Waits until the worker's run returns (--once) within WAIT_MS; fails the test otherwise. */
static int worker_join(wthread_t *t, bool stop)
{
    if (stop)
        t->stop = 1;
    for (int waited = 0; !atomic_load(&t->finished); waited += 20) {
        if (waited >= WAIT_MS) {
            t->stop = 1; /* let the thread end so the process can */
            pthread_join(t->thread, NULL);
            fail_msg("a worker did not exit within %d ms", WAIT_MS);
        }
        sleep_ms(20);
    }
    pthread_join(t->thread, NULL);
    fq_worker_destroy(t->w);
    fq_config_destroy(t->cfg);
    return t->rc;
}

/* Polls cond() every 20 ms for up to WAIT_MS. */
static bool wait_for(bool (*cond)(void))
{
    for (int waited = 0; waited < WAIT_MS; waited += 20) {
        if (cond())
            return true;
        sleep_ms(20);
    }
    return cond();
}

static bool lag_is_zero(void)
{
    return group_lag() == 0;
}

static int want_runs;
static bool total_ok_reached(void)
{
    pthread_mutex_lock(&H.lock);
    int ok = 0;
    for (int i = 0; i < H.nitems; i++)
        ok += H.items[i].ok > 0;
    pthread_mutex_unlock(&H.lock);
    return ok >= want_runs;
}

static bool slow_running(void)
{
    return atomic_load(&H.slow_running) > 0;
}

/* ---- tests ---- */

/* N `--once` workers started together and one started late all exit, and only when the
 * group's committed offsets are at the end of every partition: none exits because it holds no
 * partition while another worker's join or leave moves them. */
static void test_once_fleet_drains_for_the_group(void **state)
{
    cluster_up(4);
    char codes[120][16];
    for (int i = 0; i < 120; i++)
        snprintf(codes[i], sizeof(codes[i]), "ok%03d", i);
    for (int b = 0; b < 40; b++) {
        const char *batch[3] = {codes[b * 3], codes[b * 3 + 1], codes[b * 3 + 2]};
        produce_batch(b % 4, batch, 3);
    }
    wthread_t w[3];
    worker_start(&w[0], "once-a", true);
    worker_start(&w[1], "once-b", true);
    want_runs = 30;
    assert_true(wait_for(total_ok_reached));
    worker_start(&w[2], "once-late", true); /* joins while work flows: a rebalance */
    for (int i = 0; i < 3; i++)
        assert_int_equal(worker_join(&w[i], false), 0);
    for (int i = 0; i < 120; i++)
        if (stat_get(codes[i], 1) < 1)
            fail_msg("item %s never completed, yet every --once worker exited", codes[i]);
    assert_int_equal(group_lag(), 0);
    cluster_down();
}

/* A partition revoked while its message runs: the message is abandoned without a commit and
 * replayed by the new owner; everything ends committed at the end. */
static void test_rebalance_in_the_middle_of_a_message(void **state)
{
    cluster_up(2);
    const char *b0[] = {"slow-a", "ok-a"};
    const char *b1[] = {"slow-b", "ok-b"};
    produce_batch(0, b0, 2);
    produce_batch(1, b1, 2);
    wthread_t a, b;
    worker_start(&a, "reb-a", false);
    assert_true(wait_for(slow_running));
    worker_start(&b, "reb-b", false); /* takes one partition from a, mid-message */
    want_runs = 0;
    /* Let the group settle with the message still running, then let it finish. */
    for (int waited = 0; waited < WAIT_MS && stat_get("slow-a", 2) + stat_get("slow-b", 2) == 0 &&
                         atomic_load(&H.slow_running) < 2;
         waited += 20)
        sleep_ms(20);
    atomic_store(&H.release, 1);
    want_runs = 4;
    assert_true(wait_for(total_ok_reached));
    assert_true(wait_for(lag_is_zero));
    assert_int_equal(worker_join(&a, true), 0);
    assert_int_equal(worker_join(&b, true), 0);
    /* Nothing lost; a message abandoned by a ran again at b. */
    const char *all[] = {"slow-a", "ok-a", "slow-b", "ok-b"};
    for (int i = 0; i < 4; i++)
        assert_true(stat_get(all[i], 1) >= 1);
    /* Either the running message's partition moved (it was cancelled and ran again at b) or
     * the held one's did (dropped unstarted, run once at b): no message ran twice otherwise,
     * and a message runs as a whole (both of its items). */
    assert_int_equal(stat_get("slow-a", 0), 1 + stat_get("slow-a", 2));
    assert_int_equal(stat_get("slow-b", 0), 1 + stat_get("slow-b", 2));
    assert_int_equal(stat_get("ok-a", 0), stat_get("slow-a", 0));
    assert_int_equal(stat_get("ok-b", 0), stat_get("slow-b", 0));
    assert_int_equal(count_messages(H.dlq, 1), 0);
    assert_int_equal(count_messages(H.retry, 2), 0);
    cluster_down();
}

/* The window: messages of one partition run at once and finish out of order, and nothing is
 * committed or published past a message still running. A slow message at offset 0, a message
 * with a permanent failure at 1 and a clean one at 2: 1 and 2 run and finish while 0 runs, yet
 * the DLQ message of 1 is not published and the group's offset does not move until 0 is done;
 * then it is published exactly once. */
static bool window_decided(void)
{
    return stat_get("perm-w", 3) == 1 && stat_get("ok-w", 1) == 1 && slow_running();
}

static void test_window_commits_only_the_prefix(void **state)
{
    cluster_up(1);
    const char *b0[] = {"slow-w"}, *b1[] = {"perm-w"}, *b2[] = {"ok-w"};
    produce_batch(0, b0, 1);
    produce_batch(0, b1, 1);
    produce_batch(0, b2, 1);
    wthread_t a;
    worker_start(&a, "window", false);
    assert_true(wait_for(window_decided)); /* 1 and 2 finished while 0 runs */
    for (int i = 0; i < 10; i++) {         /* and it stays so: nothing passes message 0 */
        assert_int_equal(count_messages(H.dlq, 1), 0);
        assert_int_equal(group_lag(), 3);
        sleep_ms(50);
    }
    atomic_store(&H.release, 1);
    want_runs = 2; /* slow-w, ok-w */
    assert_true(wait_for(total_ok_reached));
    for (int waited = 0; count_messages(H.dlq, 1) < 1 && waited < WAIT_MS; waited += 20)
        sleep_ms(20);
    assert_int_equal(count_messages(H.dlq, 1), 1);
    /* A clean message committed alone moves the group to the end (see txn_error_replays). */
    const char *b3[] = {"ok-w2"};
    produce_batch(0, b3, 1);
    want_runs = 3;
    assert_true(wait_for(total_ok_reached));
    assert_true(wait_for(lag_is_zero));
    assert_int_equal(worker_join(&a, true), 0);
    assert_int_equal(count_messages(H.dlq, 1), 1);
    assert_int_equal(stat_get("perm-w", 0), 1);
    assert_int_equal(stat_get("slow-w", 0), 1);
    cluster_down();
}

/* A retry that is not due yet waits in the window; the due one behind it in the same partition
 * runs at once and is not committed past the waiting one. Stopped then, the worker leaves the
 * waiting retry unstarted and uncommitted, and exits and is destroyed with a decided message
 * still in its window (librdkafka's destroy waits for every message the application holds:
 * this hung a worker in the chaos suite). */
static bool due_retry_ran(void)
{
    return stat_get("ok-due", 1) == 1;
}

static void test_due_retry_not_held_behind_a_waiting_one(void **state)
{
    cluster_up(1);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    produce_retry(0, "ok-later", 2, now_ms + 3600 * 1000); /* due in an hour */
    produce_retry(0, "ok-due", 2, now_ms - 1000);
    wthread_t a;
    worker_start(&a, "due", false);
    assert_true(wait_for(due_retry_ran));
    for (int i = 0; i < 5; i++) { /* nothing passes the waiting retry */
        assert_int_equal(group_lag(), 2);
        sleep_ms(50);
    }
    assert_int_equal(worker_join(&a, true), 0);
    assert_int_equal(stat_get("ok-later", 0), 0);
    assert_int_equal(group_lag(), 2);
    cluster_down();
}

/* A transaction that fails at EndTxn or TxnOffsetCommit is aborted and its message replayed:
 * the failed item is recorded again under the same attempt (idempotent) and routed again; the
 * worker goes on and commits the clean message after it. */
static void txn_error_replays(int16_t apikey, rd_kafka_resp_err_t err, int min_dlq)
{
    cluster_up(1);
    rd_kafka_mock_push_request_errors(H.mc, apikey, 1, err);
    const char *b0[] = {"perm-1", "ok-1"};
    const char *b1[] = {"ok-2"};
    produce_batch(0, b0, 2);
    produce_batch(0, b1, 1);
    wthread_t a;
    worker_start(&a, "txn", false);
    want_runs = 2;
    assert_true(wait_for(total_ok_reached));
    /* The mock cluster keeps no transactional offsets: a clean message produced now is
     * committed alone and asynchronously, and that moves the group to the end. */
    const char *b2[] = {"ok-3"};
    produce_batch(0, b2, 1);
    want_runs = 3;
    assert_true(wait_for(total_ok_reached));
    assert_true(wait_for(lag_is_zero));
    assert_int_equal(worker_join(&a, true), 0);
    assert_int_equal(stat_get("perm-1", 0), 2);
    assert_int_equal(stat_get("perm-1", 3), 2);
    /* The replay's DLQ record, and the aborted one when it was sent before the abort: the
     * mock keeps it visible (no markers). EndTxn comes after every record is sent; an offsets
     * failure may abort before the record left the producer. */
    int dlq = count_messages(H.dlq, 1);
    assert_in_range(dlq, min_dlq, 2);
    cluster_down();
}

static void test_end_txn_error_replays(void **state)
{
    txn_error_replays(API_END_TXN, RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID, 2);
}

static void test_txn_offset_commit_error_replays(void **state)
{
    txn_error_replays(API_TXN_OFFSET_COMMIT, RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION, 1);
}

/* A transaction whose commit the coordinator holds up (EndTxn answered after END_TXN_DELAY_MS,
 * longer than WAIT_MS) does not hold the worker: a message of another partition runs and is
 * committed meanwhile, and SIGTERM ends the worker within its grace, the commit left to the
 * coordinator (a worker blocked in the commit once outlived the chaos suite's 40 s SIGTERM
 * wait and stalled its group's rebalance). */
#define END_TXN_DELAY_MS (2 * WAIT_MS)

static bool perm_recorded(void)
{
    return stat_get("perm-s", 3) == 1;
}

static bool other_partition_ok(void)
{
    return stat_get("ok-s2", 1) == 1;
}

static void test_slow_commit_does_not_hold_the_loop(void **state)
{
    cluster_up(2);
    for (int32_t b = 1; b <= 3; b++) /* whichever broker coordinates the transaction */
        rd_kafka_mock_broker_push_request_error_rtts(H.mc, b, API_END_TXN, 1,
                                                     RD_KAFKA_RESP_ERR_NO_ERROR, END_TXN_DELAY_MS);
    const char *b0[] = {"perm-s"};
    produce_batch(0, b0, 1);
    wthread_t a;
    worker_start(&a, "slowtxn", false);
    assert_true(wait_for(perm_recorded)); /* decided: its transaction is on its way */
    const char *b1[] = {"ok-s2"};
    produce_batch(1, b1, 1);
    assert_true(wait_for(other_partition_ok));
    assert_int_equal(worker_join(&a, true), 0);
    assert_int_equal(stat_get("perm-s", 0), 1);
    cluster_down();
}

/* Answers the next 1000 requests of apikey with err (more than a worker's wait lets through;
 * rd_kafka_mock_clear_request_errors ends them sooner). */
static void push_errors(int16_t apikey, rd_kafka_resp_err_t err)
{
    rd_kafka_resp_err_t errs[1000];
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        errs[i] = err;
    rd_kafka_mock_push_request_errors_array(H.mc, apikey, sizeof(errs) / sizeof(errs[0]), errs);
}

/* A commit whose EndTxn is never answered (seen after a broker restart: the coordinator never
 * finished the transaction, and the worker sat idle on its partitions for ten minutes while the
 * transaction held the last stable offset of the partitions it wrote to) is settled once the
 * coordinator must have ended it (transaction.timeout.ms, here 1 s, and COMMIT_WAIT_MS more): a
 * new producer takes over, the message is read again and routed again, and the worker goes on. */
static bool unanswered_replayed(void)
{
    return stat_get("perm-u", 0) >= 2;
}

static bool after_unanswered_ok(void)
{
    return stat_get("ok-u2", 1) >= 1;
}

static void test_unanswered_commit_is_settled(void **state)
{
    cluster_up(1);
    H.txn_timeout_ms = "1000";
    /* The coordinator keeps answering "try again" (librdkafka retries in the background). */
    push_errors(API_END_TXN, RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS);
    const char *b0[] = {"perm-u"};
    produce_batch(0, b0, 1);
    wthread_t a;
    worker_start(&a, "unanswered", false);
    bool replayed = wait_for(unanswered_replayed);
    rd_kafka_mock_clear_request_errors(H.mc, API_END_TXN); /* the replay's commit is answered */
    assert_true(replayed);
    const char *b1[] = {"ok-u2"};
    produce_batch(0, b1, 1);
    assert_true(wait_for(after_unanswered_ok));
    assert_false(atomic_load(&a.finished)); /* still running: not exit 3 */
    assert_int_equal(worker_join(&a, true), 0);
    assert_int_equal(stat_get("perm-u", 0), 2);
    cluster_down();
}

/* A transactional call that fails retriably (the coordinator away) leaves the transaction open,
 * an abort owed. Until the abort reaches the coordinator, the open transaction holds back the last
 * stable offset of every partition it wrote to: no read_committed reader (the retry role,
 * operators reading the DLQ) sees past it until the coordinator times it out. The long chaos run
 * found a worker that routed nothing more (its partitions lost in a Kafka restart) and so never
 * sent it: the DLQ read 27 of 200 messages for two minutes. The owed abort goes out as soon as
 * the cluster answers: here while the message's replay still runs, before any later transaction
 * (without it, the only EndTxn would come with the replay's commit). */
static fq_test_capture_t capture;

/* The log level of the tests: FQ_TEST_LOG=1 shows the workers' debug lines. */
static const char *log_level(void)
{
    return getenv("FQ_TEST_LOG") ? "debug" : "error";
}

static bool capture_has(const char *needle)
{
    char *text = fq_test_capture_text(&capture);
    bool found = strstr(text, needle) != NULL;
    free(text);
    return found;
}

static bool offsets_failed(void)
{
    return capture_has("\"msg\":\"send offsets to transaction on ");
}

/* The mock cluster received a request of apikey since tracking started. */
static bool request_seen(int16_t apikey)
{
    size_t n = 0, seen = 0;
    rd_kafka_mock_request_t **reqs = rd_kafka_mock_get_requests(H.mc, &n);
    for (size_t i = 0; i < n; i++)
        seen += rd_kafka_mock_request_api_key(reqs[i]) == apikey;
    rd_kafka_mock_request_destroy_array(reqs, n);
    return seen > 0;
}

static bool end_txn_sent(void)
{
    return request_seen(API_END_TXN);
}

static bool replay_running(void)
{
    return stat_get("stuck-1", 0) >= 2;
}

/* The worker of test_owed_abort_*: its "stuck-1" message's routing fails retriably (the
 * coordinator loading until the worker gives up), so an abort is owed; with outage_goes_on the
 * item also makes the database probe fail from then on. */
static void owed_abort_start(wthread_t *a, const char *id, bool outage_goes_on)
{
    cluster_up(1);
    H.stuck_fails_probe = outage_goes_on;
    const char *b0[] = {"stuck-1"};
    produce_batch(0, b0, 1);
    rd_kafka_mock_start_request_tracking(H.mc);
    push_errors(API_ADD_OFFSETS_TO_TXN, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
    /* the failed transactional call is a warning */
    assert_int_equal(fq_log_init("test_worker_mock", "mock", "json", "info"), 0);
    fq_test_capture_start(&capture);
    worker_start(a, id, false);
}

/* Joins the worker, ends the capture and fails the test (the log printed) unless ok. */
static void owed_abort_end(wthread_t *a, bool ok, const char *what)
{
    atomic_store(&H.release, 1);
    int rc = worker_join(a, true);
    bool aborted = end_txn_sent();
    char *log = fq_test_capture_end(&capture);
    assert_int_equal(fq_log_init("test_worker_mock", "mock", "json", log_level()), 0);
    if (!ok || !aborted || getenv("FQ_TEST_LOG"))
        printf("the worker's log:\n%s", log);
    free(log);
    if (!ok || !aborted)
        fail_msg("%s; EndTxn sent by the end: %d", what, aborted);
    assert_int_equal(rc, 0);
    rd_kafka_mock_stop_request_tracking(H.mc);
    cluster_down();
}

static void test_owed_abort_sent_when_kafka_returns(void **state)
{
    wthread_t a;
    owed_abort_start(&a, "owed", false);
    bool failed = wait_for(offsets_failed);
    rd_kafka_mock_clear_request_errors(H.mc, API_ADD_OFFSETS_TO_TXN);
    bool replaying = failed && wait_for(replay_running);
    bool aborted = replaying && wait_for(end_txn_sent);
    char what[128];
    snprintf(what, sizeof(what),
             "offsets failed: %d; replay running: %d; EndTxn sent meanwhile: %d", failed, replaying,
             aborted);
    owed_abort_end(&a, failed && replaying && aborted, what);
}

/* The same abort is sent by a worker that stops while its outage goes on (the database probe
 * keeps failing): Kafka answers, and nothing else would end the transaction before the
 * coordinator's timeout. */
static bool outage_logged(void)
{
    return capture_has("\"msg\":\"outage: pausing consumption");
}

static void test_owed_abort_sent_at_exit(void **state)
{
    wthread_t a;
    owed_abort_start(&a, "owedexit", true);
    bool failed = wait_for(offsets_failed) && wait_for(outage_logged);
    rd_kafka_mock_clear_request_errors(H.mc, API_ADD_OFFSETS_TO_TXN);
    bool before = end_txn_sent(); /* the outage goes on: nothing sent it yet */
    char what[128];
    snprintf(what, sizeof(what), "offsets failed: %d; EndTxn before the stop: %d", failed, before);
    owed_abort_end(&a, failed && !before, what);
}

/* A producer fenced at EndTxn (what a Kafka 4 coordinator does after aborting a transaction
 * that outlived transaction.timeout.ms during an outage) is replaced by a new one under the same
 * transactional.id: the worker does not exit, replays the message and goes on. */
static void test_fenced_producer_is_renewed(void **state)
{
    cluster_up(1);
    rd_kafka_mock_push_request_errors(H.mc, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    const char *b0[] = {"perm-f", "ok-f"};
    const char *b1[] = {"ok-g"};
    produce_batch(0, b0, 2);
    produce_batch(0, b1, 1);
    wthread_t a;
    worker_start(&a, "fenced", false);
    want_runs = 2;
    assert_true(wait_for(total_ok_reached));
    const char *b2[] = {"ok-h"}; /* committed alone: see txn_error_replays */
    produce_batch(0, b2, 1);
    want_runs = 3;
    assert_true(wait_for(total_ok_reached));
    assert_true(wait_for(lag_is_zero));
    assert_false(atomic_load(&a.finished)); /* still running: not exit 3 */
    assert_int_equal(worker_join(&a, true), 0);
    assert_int_equal(stat_get("perm-f", 0), 2);
    cluster_down();
}

/* The group coordinator moves to another broker, then its broker goes down for a while, as
 * work flows: nothing is lost, the worker never exits, and the group ends at the end. */
static void test_coordinator_goes_away(void **state)
{
    cluster_up(2);
    rd_kafka_mock_coordinator_set(H.mc, "group", H.group, 1);
    char codes[40][16];
    for (int i = 0; i < 40; i++)
        snprintf(codes[i], sizeof(codes[i]), "ok-c%02d", i);
    for (int b = 0; b < 20; b++) {
        const char *batch[2] = {codes[b * 2], codes[b * 2 + 1]};
        produce_batch(b % 2, batch, 2);
    }
    wthread_t a;
    worker_start(&a, "coord", false);
    want_runs = 6;
    assert_true(wait_for(total_ok_reached));
    rd_kafka_mock_coordinator_set(H.mc, "group", H.group, 2);
    want_runs = 14;
    assert_true(wait_for(total_ok_reached));
    rd_kafka_mock_broker_set_down(H.mc, 2);
    sleep_ms(3000); /* the fault's duration, not a wait for a condition */
    rd_kafka_mock_broker_set_up(H.mc, 2);
    want_runs = 40;
    assert_true(wait_for(total_ok_reached));
    assert_true(wait_for(lag_is_zero));
    assert_false(atomic_load(&a.finished));
    assert_int_equal(worker_join(&a, true), 0);
    cluster_down();
}

/* The group coordinator goes away while a transaction sends its offsets: librdkafka 2.14.2 does
 * not bound rd_kafka_send_offsets_to_transaction() by its timeout then (upstream issue 5456), and
 * the kafka-restart chaos scenario saw a worker's loop held 48 s in it, serving neither its group
 * nor SIGTERM. The loop must go on: here a stop ends the worker while the coordinator is still
 * down. */
static bool add_offsets_sent(void)
{
    return request_seen(API_ADD_OFFSETS_TO_TXN);
}

static void test_offsets_on_their_way_do_not_hold_the_loop(void **state)
{
    cluster_up(1);
    /* the partitions and the transaction on broker 1, the group on broker 2 */
    rd_kafka_mock_partition_set_leader(H.mc, H.topic, 0, 1);
    rd_kafka_mock_partition_set_leader(H.mc, H.retry, 0, 1);
    rd_kafka_mock_partition_set_leader(H.mc, H.dlq, 0, 1);
    rd_kafka_mock_coordinator_set(H.mc, "transaction", "frameq-offsets-all", 1);
    rd_kafka_mock_coordinator_set(H.mc, "group", H.group, 2);
    const char *b0[] = {"held-o"};
    produce_batch(0, b0, 1);
    wthread_t a;
    worker_start(&a, "offsets", false);
    assert_true(wait_for(slow_running)); /* joined, assigned, the item running */
    rd_kafka_mock_start_request_tracking(H.mc);
    rd_kafka_mock_broker_set_down(H.mc, 2);
    atomic_store(&H.release, 1); /* it fails: its DLQ message and offsets go in a transaction */
    bool sent = wait_for(add_offsets_sent);
    a.stop = 1;
    bool stopped = false;
    for (int waited = 0; !stopped && waited < WAIT_MS; waited += 20) {
        stopped = atomic_load(&a.finished);
        sleep_ms(20);
    }
    rd_kafka_mock_broker_set_up(H.mc, 2); /* before joining: without the fix the call ends now */
    int rc = worker_join(&a, false);
    rd_kafka_mock_stop_request_tracking(H.mc);
    cluster_down();
    if (!sent || !stopped)
        fail_msg("offsets sent: %d; stopped while the group coordinator was down: %d", sent,
                 stopped);
    assert_int_equal(rc, 0);
}

/* A renewed producer's init_transactions can take long (the coordinator finishing the old
 * producer's transaction): the loop must serve the group meanwhile, or every rebalance of the
 * group waits for it. Worker A's producer is fenced and renewed, and the new one's InitProducerId
 * is answered only after INIT_DELAY_MS; worker B joins meanwhile and runs items (A is paused
 * until its producer is ready, so every item that runs before then is B's). */
#define INIT_DELAY_MS 15000

static bool any_ok_ran(void)
{
    pthread_mutex_lock(&H.lock);
    int ok = 0;
    for (int i = 0; i < H.nitems; i++)
        ok += strncmp(H.items[i].code, "ok", 2) == 0 && H.items[i].ok > 0;
    pthread_mutex_unlock(&H.lock);
    return ok > 0;
}

static bool renewal_started(void)
{
    return capture_has("\"msg\":\"transactional producer failed fatally");
}

static bool renewal_ready(void)
{
    return capture_has("\"msg\":\"new transactional producer ready");
}

static void test_renewal_does_not_hold_the_group(void **state)
{
    cluster_up(4);
    rd_kafka_mock_coordinator_set(H.mc, "transaction", "frameq-renewa-all", 2);
    rd_kafka_mock_coordinator_set(H.mc, "transaction", "frameq-renewb-all", 3);
    rd_kafka_mock_broker_push_request_error_rtts(H.mc, 2, API_END_TXN, 1,
                                                 RD_KAFKA_RESP_ERR_PRODUCER_FENCED, 0);
    const char *b0[] = {"held-r"};
    produce_batch(0, b0, 1);
    assert_int_equal(fq_log_init("test_worker_mock", "mock", "json", "info"), 0);
    fq_test_capture_start(&capture);
    wthread_t a, b;
    worker_start(&a, "renewa", false);
    bool held = wait_for(slow_running); /* A's first producer is ready: delay the next one's */
    rd_kafka_mock_broker_push_request_error_rtts(H.mc, 2, API_INIT_PRODUCER_ID, 1,
                                                 RD_KAFKA_RESP_ERR_NO_ERROR, INIT_DELAY_MS);
    atomic_store(&H.release, 1); /* fails: its transaction is fenced, the producer renewed */
    bool renewing = held && wait_for(renewal_started);
    worker_start(&b, "renewb", false);
    for (int p = 0; p < 4; p++) {
        char code[16];
        snprintf(code, sizeof(code), "ok-r%d", p);
        const char *bp[] = {code};
        produce_batch(p, bp, 1);
    }
    bool b_ran = renewing && wait_for(any_ok_ran);
    bool a_ready_first = renewal_ready();
    bool a_ready = wait_for(renewal_ready);
    want_runs = 4;
    bool all_ok = wait_for(total_ok_reached) && wait_for(lag_is_zero);
    int rca = worker_join(&a, true), rcb = worker_join(&b, true);
    char *log = fq_test_capture_end(&capture);
    assert_int_equal(fq_log_init("test_worker_mock", "mock", "json", log_level()), 0);
    bool ok = b_ran && !a_ready_first && a_ready && all_ok && rca == 0 && rcb == 0;
    if (!ok)
        printf("the workers' log:\n%s", log);
    free(log);
    cluster_down();
    if (!ok)
        fail_msg("renewal began: %d; an item ran: %d; A's producer ready before it: %d; ready "
                 "later: %d; all done: %d; exit %d/%d",
                 renewing, b_ran, a_ready_first, a_ready, all_ok, rca, rcb);
}

/* An idle worker whose database probe fails pauses (nothing runs), and consumes again as soon
 * as the probe passes, with no message needed to notice either. */
static void test_probe_pauses_and_resumes_an_idle_worker(void **state)
{
    cluster_up(1);
    wthread_t a;
    atomic_store(&H.probe_fail, 1);
    worker_start(&a, "probe", false);
    const char *b0[] = {"ok-p"};
    produce_batch(0, b0, 1);
    sleep_ms(3000); /* the outage's duration: the item must not run during it */
    assert_int_equal(stat_get("ok-p", 0), 0);
    atomic_store(&H.probe_fail, 0);
    want_runs = 1;
    assert_true(wait_for(total_ok_reached));
    assert_true(wait_for(lag_is_zero));
    assert_int_equal(worker_join(&a, true), 0);
    cluster_down();
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]); /* e.g. "test_rebalance*" */
    if (fq_log_init("test_worker_mock", "mock", "json", log_level()) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_once_fleet_drains_for_the_group),
        cmocka_unit_test(test_rebalance_in_the_middle_of_a_message),
        cmocka_unit_test(test_window_commits_only_the_prefix),
        cmocka_unit_test(test_due_retry_not_held_behind_a_waiting_one),
        cmocka_unit_test(test_end_txn_error_replays),
        cmocka_unit_test(test_txn_offset_commit_error_replays),
        cmocka_unit_test(test_slow_commit_does_not_hold_the_loop),
        cmocka_unit_test(test_fenced_producer_is_renewed),
        cmocka_unit_test(test_owed_abort_sent_when_kafka_returns),
        cmocka_unit_test(test_owed_abort_sent_at_exit),
        cmocka_unit_test(test_unanswered_commit_is_settled),
        cmocka_unit_test(test_coordinator_goes_away),
        cmocka_unit_test(test_offsets_on_their_way_do_not_hold_the_loop),
        cmocka_unit_test(test_renewal_does_not_hold_the_group),
        cmocka_unit_test(test_probe_pauses_and_resumes_an_idle_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
