/* kafka/ (fq_kafka.h): a default yields to the user's KAFKA_CONFIG_* / -X, a forced property
 * does not, the one log level mapping, and the transaction policy's classes of real librdkafka
 * errors, produced by a transactional producer against librdkafka's mock cluster with faults
 * injected (rd_kafka_mock_push_request_errors and request round-trip times). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "fq_config.h"
#include "fq_kafka.h"

/* Kafka protocol API keys (rdkafka_mock.h takes them as numbers). */
#define API_ADD_PARTITIONS_TO_TXN 24
#define API_END_TXN               26

#define TXN_ID "fq-test-kafka-conf"
#define TOPIC  "fq-test-kafka-conf"

/* ---- configuration ---- */

/* A loaded configuration given argv (NULL-terminated, without the program name). */
static fq_config_t *load(const char *const *args)
{
    char *argv[8] = {"test"};
    int argc = 1;
    for (; args && args[argc - 1]; argc++)
        argv[argc] = (char *)args[argc - 1];
    argv[argc] = NULL;
    fq_config_t *cfg = fq_config_new();
    assert_non_null(cfg);
    char err[512];
    if (fq_config_load(cfg, &argc, argv, err, sizeof(err)) != 0)
        fail_msg("fq_config_load: %s", err);
    return cfg;
}

/* fq_kafka_conf of cfg; fails the test on an error. */
static rd_kafka_conf_t *conf_of(const fq_config_t *cfg)
{
    char err[512];
    rd_kafka_conf_t *conf = fq_kafka_conf(cfg, err, sizeof(err));
    if (!conf)
        fail_msg("fq_kafka_conf: %s", err);
    return conf;
}

/* The conf's value of name (static buffer). */
static const char *conf_get(rd_kafka_conf_t *conf, const char *name)
{
    static char value[256];
    size_t size = sizeof(value);
    assert_int_equal(rd_kafka_conf_get(conf, name, value, &size), RD_KAFKA_CONF_OK);
    return value;
}

static void test_default_yields_to_env(void **state)
{
    (void)state;
    setenv("KAFKA_CONFIG_LINGER_MS", "123", 1);
    fq_config_t *cfg = load(NULL);
    char err[512];
    rd_kafka_conf_t *conf = conf_of(cfg);
    assert_int_equal(fq_kafka_default(conf, cfg, "linger.ms", "20", err, sizeof(err)), 0);
    assert_string_equal(conf_get(conf, "linger.ms"), "123");
    /* a default the user did not set applies */
    assert_int_equal(fq_kafka_default(conf, cfg, "compression.type", "lz4", err, sizeof(err)), 0);
    assert_string_equal(conf_get(conf, "compression.type"), "lz4");
    rd_kafka_conf_destroy(conf);
    fq_config_destroy(cfg);
    unsetenv("KAFKA_CONFIG_LINGER_MS");
}

static void test_default_yields_to_flag(void **state)
{
    (void)state;
    const char *args[] = {"-X", "linger.ms=77", NULL};
    fq_config_t *cfg = load(args);
    char err[512];
    rd_kafka_conf_t *conf = conf_of(cfg);
    assert_int_equal(fq_kafka_default(conf, cfg, "linger.ms", "20", err, sizeof(err)), 0);
    assert_string_equal(conf_get(conf, "linger.ms"), "77");
    rd_kafka_conf_destroy(conf);
    fq_config_destroy(cfg);
}

static void test_force_overrides_user(void **state)
{
    (void)state;
    setenv("KAFKA_CONFIG_ISOLATION_LEVEL", "read_uncommitted", 1);
    fq_config_t *cfg = load(NULL);
    char err[512];
    rd_kafka_conf_t *conf = conf_of(cfg);
    assert_string_equal(conf_get(conf, "isolation.level"), "read_uncommitted");
    assert_int_equal(fq_kafka_force(conf, "isolation.level", "read_committed", err, sizeof(err)),
                     0);
    assert_string_equal(conf_get(conf, "isolation.level"), "read_committed");
    rd_kafka_conf_destroy(conf);
    fq_config_destroy(cfg);
    unsetenv("KAFKA_CONFIG_ISOLATION_LEVEL");
}

static void test_invalid_value_names_property(void **state)
{
    (void)state;
    fq_config_t *cfg = load(NULL);
    char err[512] = "";
    rd_kafka_conf_t *conf = conf_of(cfg);
    assert_int_equal(fq_kafka_default(conf, cfg, "linger.ms", "soon", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "linger.ms=soon: "));
    assert_int_equal(fq_kafka_force(conf, "no.such.property", "1", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no.such.property=1: "));
    rd_kafka_conf_destroy(conf);
    fq_config_destroy(cfg);
}

/* The error callback's memory: an error of one client and code is logged once per window,
 * the rest counted and said on its next line; other keys are not held back; a full table
 * gives the slot logged longest ago to a new key. */
static void test_error_repeats_are_counted(void **state)
{
    (void)state;
    fq_kafka_repeat_t r;
    memset(&r, 0, sizeof(r));
    unsigned n = 99;
    static const struct {
        const char *key;
        int64_t at;
        bool logged;
        unsigned repeated;
    } steps[] = {
        {"consumer/-187", 0, true, 0},    /* first: logged */
        {"consumer/-187", 10, false, 0},  /* again within the window: counted */
        {"producer/-187", 20, true, 0},   /* another client: its own key */
        {"consumer/-195", 30, true, 0},   /* another code: its own key */
        {"consumer/-187", 999, false, 0}, /* counted (2 so far) */
        {"consumer/-187", 1000, true, 2}, /* the window is over: logged, says 2 */
        {"consumer/-187", 1500, false, 0}, {"consumer/-187", 2100, true, 1},
        {"consumer/-187", 5000, true, 0}, /* nothing counted since: plain */
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        bool logged = fq_kafka_repeat_log(&r, steps[i].key, steps[i].at, 1000, &n);
        if (logged != steps[i].logged || n != steps[i].repeated)
            fail_msg("step %zu (%s at %lld): logged %d repeated %u, want %d %u", i, steps[i].key,
                     (long long)steps[i].at, logged, n, steps[i].logged, steps[i].repeated);
    }
    /* Ten keys in a table of eight: the ninth and tenth take the two slots logged longest ago;
     * the keys still held are counted within the window. */
    memset(&r, 0, sizeof(r));
    char key[16];
    for (int k = 0; k < 10; k++) {
        snprintf(key, sizeof(key), "c/%d", k);
        assert_true(fq_kafka_repeat_log(&r, key, 100 + k, 1000, &n));
    }
    for (int k = 2; k < 10; k++) {
        snprintf(key, sizeof(key), "c/%d", k);
        if (fq_kafka_repeat_log(&r, key, 200, 1000, &n))
            fail_msg("key %s was evicted: the two oldest (c/0, c/1) should have been", key);
    }
    assert_true(fq_kafka_repeat_log(&r, "c/0", 300, 1000, &n)); /* evicted: new again */
}

static void test_log_level_mapping(void **state)
{
    (void)state;
    static const fq_log_level_t want[] = {
        FQ_LOG_ERROR, FQ_LOG_ERROR, FQ_LOG_ERROR, FQ_LOG_ERROR, /* emerg, alert, crit, err */
        FQ_LOG_WARN,                                            /* warning */
        FQ_LOG_INFO,  FQ_LOG_INFO,                              /* notice, info */
        FQ_LOG_DEBUG,                                           /* debug */
    };
    for (int level = 0; level < (int)(sizeof(want) / sizeof(want[0])); level++)
        if (fq_kafka_log_level(level) != want[level])
            fail_msg("syslog level %d: got %d, want %d", level, fq_kafka_log_level(level),
                     want[level]);
}

/* ---- the transaction policy, against the mock cluster ---- */

typedef struct txn_fixture {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    fq_kafka_events_t events;
} txn_fixture_t;

/* A transactional producer on a 3-broker mock cluster (broker 1 coordinates the transaction),
 * transactions initialised, one transaction begun. */
static int txn_setup(void **state)
{
    txn_fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(fq_kafka_force(conf, "test.mock.num.brokers", "3", err, sizeof(err)), 0);
    assert_int_equal(fq_kafka_force(conf, "transactional.id", TXN_ID, err, sizeof(err)), 0);
    fq_kafka_set_callbacks(conf, &f->events);
    f->rk = fq_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!f->rk)
        fail_msg("%s", err);
    assert_ptr_equal(fq_kafka_events(f->rk), &f->events);
    f->mc = rd_kafka_handle_mock_cluster(f->rk);
    assert_non_null(f->mc);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, TOPIC, 1, 1), 0);
    assert_int_equal(rd_kafka_mock_coordinator_set(f->mc, "transaction", TXN_ID, 1), 0);
    assert_null(rd_kafka_init_transactions(f->rk, 30000));
    assert_null(rd_kafka_begin_transaction(f->rk));
    *state = f;
    return 0;
}

static int txn_teardown(void **state)
{
    txn_fixture_t *f = *state;
    rd_kafka_destroy(f->rk);
    free(f);
    return 0;
}

static void produce_one(rd_kafka_t *rk)
{
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_VALUE("v", 1),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void test_txn_ok(void **state)
{
    txn_fixture_t *f = *state;
    assert_int_equal(fq_kafka_txn_class(NULL), FQ_KAFKA_TXN_OK);
    produce_one(f->rk);
    assert_int_equal(
        fq_kafka_txn_failed(f->rk, "commit", rd_kafka_commit_transaction(f->rk, 30000), 30000),
        FQ_KAFKA_TXN_OK);
}

/* Adding the partition to the transaction is refused: the message fails and the commit
 * requires an abort, which the policy does once; the producer goes on with a new
 * transaction. */
static void test_txn_abort(void **state)
{
    txn_fixture_t *f = *state;
    rd_kafka_mock_push_request_errors(f->mc, API_ADD_PARTITIONS_TO_TXN, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    produce_one(f->rk);
    rd_kafka_error_t *error = rd_kafka_commit_transaction(f->rk, 30000);
    assert_non_null(error);
    assert_int_equal(fq_kafka_txn_class(error), FQ_KAFKA_TXN_ABORT);
    assert_int_equal(fq_kafka_txn_failed(f->rk, "commit", error, 30000), FQ_KAFKA_TXN_ABORT);
    /* aborted: a new transaction begins and commits */
    assert_null(rd_kafka_begin_transaction(f->rk));
    produce_one(f->rk);
    assert_null(rd_kafka_commit_transaction(f->rk, 30000));
    assert_false(atomic_load(&f->events.fatal));
}

/* The coordinator answers EndTxn after 5 s, the commit waits 100 ms: a timeout, retriable;
 * the same call again completes the commit. */
static void test_txn_retry(void **state)
{
    txn_fixture_t *f = *state;
    produce_one(f->rk);
    assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(f->mc, 1, API_END_TXN, 1,
                                                                  RD_KAFKA_RESP_ERR_NO_ERROR, 5000),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_error_t *error = rd_kafka_commit_transaction(f->rk, 100);
    assert_non_null(error);
    assert_int_equal(fq_kafka_txn_class(error), FQ_KAFKA_TXN_RETRY);
    assert_int_equal(fq_kafka_txn_failed(f->rk, "commit", error, 30000), FQ_KAFKA_TXN_RETRY);
    assert_null(rd_kafka_commit_transaction(f->rk, 30000));
}

/* The producer is fenced at commit: fatal. The error callback marks the events (delivered by
 * rd_kafka_poll; polled until it is, bounded). */
static void test_txn_fatal(void **state)
{
    txn_fixture_t *f = *state;
    produce_one(f->rk);
    rd_kafka_mock_push_request_errors(f->mc, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    rd_kafka_error_t *error = rd_kafka_commit_transaction(f->rk, 30000);
    assert_non_null(error);
    assert_int_equal(fq_kafka_txn_class(error), FQ_KAFKA_TXN_FATAL);
    assert_int_equal(fq_kafka_txn_failed(f->rk, "commit", error, 30000), FQ_KAFKA_TXN_FATAL);
    for (int i = 0; i < 300 && !atomic_load(&f->events.fatal); i++)
        rd_kafka_poll(f->rk, 100);
    assert_true(atomic_load(&f->events.fatal));
    assert_true(f->events.last_error[0] != '\0');
    /* and an abort of a fatal producer is fatal too */
    assert_int_equal(fq_kafka_txn_abort(f->rk, 1000), FQ_KAFKA_TXN_FATAL);
}

/* A call made in the wrong state: neither fatal, abortable nor retriable. */
static void test_txn_outage(void **state)
{
    txn_fixture_t *f = *state;
    rd_kafka_error_t *error = rd_kafka_begin_transaction(f->rk); /* one is open already */
    assert_non_null(error);
    assert_int_equal(fq_kafka_txn_class(error), FQ_KAFKA_TXN_OUTAGE);
    assert_int_equal(fq_kafka_txn_failed(f->rk, "begin", error, 30000), FQ_KAFKA_TXN_OUTAGE);
    error = rd_kafka_error_new(RD_KAFKA_RESP_ERR__TRANSPORT, "%s", "broker down");
    assert_int_equal(fq_kafka_txn_class(error), FQ_KAFKA_TXN_OUTAGE);
    rd_kafka_error_destroy(error);
    assert_string_equal(fq_kafka_txn_name(FQ_KAFKA_TXN_OUTAGE), "outage");
}

/* ---- the watch over a cluster (fq_kafka_probe) ---- */

/* The bootstrap brokers are added again every 10 s of a silence, every minute after the first
 * FQ_KAFKA_READD_FAST re-adds, and an answer ends the silence: the next one counts afresh. */
static void test_watch_readds_after_a_silence(void **state)
{
    (void)state;
    fq_kafka_watch_t w = {0};
    int64_t t = 1000;
    assert_false(fq_kafka_watch_note(&w, true, t));
    assert_false(fq_kafka_watch_note(&w, false, t));
    int64_t due = t + FQ_KAFKA_READD_AFTER_MS;
    for (unsigned n = 1; n <= FQ_KAFKA_READD_FAST + 2; n++) {
        assert_false(fq_kafka_watch_note(&w, false, due - 1));
        assert_true(fq_kafka_watch_note(&w, false, due));
        assert_int_equal(w.readds, n);
        assert_false(fq_kafka_watch_note(&w, false, due + 1));
        due += n < FQ_KAFKA_READD_FAST ? FQ_KAFKA_READD_AFTER_MS : FQ_KAFKA_READD_EVERY_MS;
    }

    assert_false(fq_kafka_watch_note(&w, true, due));
    assert_int_equal(w.silent_since_ms, 0);
    assert_int_equal(w.readds, 0);
    assert_false(fq_kafka_watch_note(&w, false, due + 1)); /* a new silence counts afresh */
    assert_false(fq_kafka_watch_note(&w, false, due + FQ_KAFKA_READD_AFTER_MS));
    assert_true(fq_kafka_watch_note(&w, false, due + 1 + FQ_KAFKA_READD_AFTER_MS));
}

/* fq_kafka_watch on a client whose calls tell: a failure 10 s into a silence adds the
 * bootstrap brokers (counted), an answer ends the silence. */
static void test_watch_of_a_client(void **state)
{
    (void)state;
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:9", err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = fq_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(rk);
    fq_kafka_watch_t w = {0};
    fq_kafka_watch(rk, "127.0.0.1:9", &w, "timed out");
    assert_int_not_equal(w.silent_since_ms, 0);
    assert_int_equal(w.readds, 0);
    w.readd_at_ms -= FQ_KAFKA_READD_AFTER_MS; /* as if 10 s had gone by */
    fq_kafka_watch(rk, "127.0.0.1:9", &w, "timed out");
    assert_int_equal(w.readds, 1);
    fq_kafka_watch(rk, "127.0.0.1:9", &w, NULL);
    assert_int_equal(w.silent_since_ms, 0);
    rd_kafka_destroy(rk);
}

/* A consumer's probe against the mock cluster: an answer while the broker is up, the broker's
 * error while it is down (the watch records the silence), an answer again once it is back. */
static void test_probe_follows_the_cluster(void **state)
{
    (void)state;
    char err[512];
    rd_kafka_conf_t *mconf = rd_kafka_conf_new();
    rd_kafka_t *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, mconf, err, sizeof(err));
    assert_non_null(mrk);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mrk, 1);
    assert_non_null(mc);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", TOPIC, err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = fq_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    assert_non_null(rk);
    fq_kafka_watch_t w = {0};

    assert_int_equal(fq_kafka_probe(rk, bootstrap, &w, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(w.silent_since_ms, 0);

    assert_int_equal(rd_kafka_mock_broker_set_down(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_not_equal(fq_kafka_probe(rk, bootstrap, &w, 500), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_not_equal(w.silent_since_ms, 0);

    assert_int_equal(rd_kafka_mock_broker_set_up(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_resp_err_t back = RD_KAFKA_RESP_ERR__TRANSPORT;
    for (int i = 0; i < 30 && back; i++) /* reconnects after its back-off */
        back = fq_kafka_probe(rk, bootstrap, &w, 1000);
    assert_int_equal(back, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(w.silent_since_ms, 0);

    rd_kafka_destroy(rk);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
}

int main(void)
{
    unsetenv("KAFKA_CONFIG_LINGER_MS");
    unsetenv("KAFKA_CONFIG_ISOLATION_LEVEL");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_yields_to_env),
        cmocka_unit_test(test_default_yields_to_flag),
        cmocka_unit_test(test_force_overrides_user),
        cmocka_unit_test(test_invalid_value_names_property),
        cmocka_unit_test(test_log_level_mapping),
        cmocka_unit_test(test_error_repeats_are_counted),
        cmocka_unit_test(test_watch_readds_after_a_silence),
        cmocka_unit_test(test_watch_of_a_client),
        cmocka_unit_test(test_probe_follows_the_cluster),
        cmocka_unit_test_setup_teardown(test_txn_ok, txn_setup, txn_teardown),
        cmocka_unit_test_setup_teardown(test_txn_abort, txn_setup, txn_teardown),
        cmocka_unit_test_setup_teardown(test_txn_retry, txn_setup, txn_teardown),
        cmocka_unit_test_setup_teardown(test_txn_fatal, txn_setup, txn_teardown),
        cmocka_unit_test_setup_teardown(test_txn_outage, txn_setup, txn_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
