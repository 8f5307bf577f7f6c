/*
 * Kafka integration tests against the real broker of the local stack (KAFKA_BROKERS).
 *
 * They prove, for the broker version pinned in deploy/local/pom.xml and the system librdkafka,
 * the features frameq's delivery contract rests on: text headers survive the broker unchanged,
 * transactions (with consumer offsets sent to the transaction) commit and abort atomically for
 * read_committed readers, and a consumer group's committed offsets survive a reopen.
 * Every test uses its own topics and group, so runs never see each other's data.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fq_test_env.h"
#include "fq_test_kafka.h"

#define PARTITIONS 3
/* How long a test waits for the broker before it gives up (a hang guard, not an assertion). */
#define WAIT_MS    60000
#define MAX_VALUES 64

typedef struct kafka_fixture {
    const char *brokers;
    char run[128]; /* every topic and group of this run lies under it: deleted at the end */
} kafka_fixture_t;

/* Values (and partition/offset) read from a topic, in arrival order. */
typedef struct seen {
    size_t count;
    char *values[MAX_VALUES];
} seen_t;

static void seen_clear(seen_t *seen)
{
    for (size_t i = 0; i < seen->count; i++)
        free(seen->values[i]);
    seen->count = 0;
}

static int seen_has(const seen_t *seen, const char *value)
{
    for (size_t i = 0; i < seen->count; i++)
        if (strcmp(seen->values[i], value) == 0)
            return 1;
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        fail_msg("rd_kafka_conf_set(%s=%s): %s", name, value, errstr);
}

static rd_kafka_t *client_new(rd_kafka_type_t type, rd_kafka_conf_t *conf)
{
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fail_msg("rd_kafka_new: %s", errstr);
    }
    return rk;
}

static rd_kafka_t *producer_new(const char *brokers, const char *transactional_id)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    conf_set(conf, "bootstrap.servers", brokers);
    conf_set(conf, "enable.idempotence", "true");
    conf_set(conf, "acks", "all");
    conf_set(conf, "linger.ms", "5");
    if (transactional_id != NULL) {
        conf_set(conf, "transactional.id", transactional_id);
        conf_set(conf, "transaction.timeout.ms", "60000");
    }
    return client_new(RD_KAFKA_PRODUCER, conf);
}

/* group == NULL: a group-less consumer that the test assigns partitions to by hand. */
static rd_kafka_t *consumer_new(const char *brokers, const char *group, const char *isolation)
{
    char anon[128];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    conf_set(conf, "bootstrap.servers", brokers);
    /* librdkafka wants a group.id even for assign(); a fresh one never commits anything. */
    conf_set(conf, "group.id",
             group != NULL ? group : fq_test_unique_name("fq-anon", anon, sizeof(anon)));
    conf_set(conf, "enable.auto.commit", "false");
    conf_set(conf, "auto.offset.reset", "earliest");
    conf_set(conf, "enable.partition.eof", "true");
    conf_set(conf, "isolation.level", isolation);
    conf_set(conf, "session.timeout.ms", "10000");
    rd_kafka_t *rk = client_new(RD_KAFKA_CONSUMER, conf);
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

static void produce_one(rd_kafka_t *rk, const char *topic, int32_t partition, const char *key,
                        const char *value)
{
    /* Computed outside: RD_KAFKA_V_KEY's type check chokes on a conditional expression. */
    size_t key_len = key != NULL ? strlen(key) : 0;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE((void *)value, strlen(value)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail_msg("produce to %s: %s", topic, rd_kafka_err2str(err));
}

static void flush_all(rd_kafka_t *rk)
{
    rd_kafka_resp_err_t err = rd_kafka_flush(rk, WAIT_MS);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR || rd_kafka_outq_len(rk) != 0)
        fail_msg("flush: %s (%d still queued)", rd_kafka_err2str(err), rd_kafka_outq_len(rk));
}

/* Plain (non-transactional) messages "<prefix>-<i>" spread over all partitions. */
static void produce_plain(const char *brokers, const char *topic, const char *prefix, int n)
{
    rd_kafka_t *rk = producer_new(brokers, NULL);
    char value[128];
    for (int i = 0; i < n; i++) {
        snprintf(value, sizeof(value), "%s-%d", prefix, i);
        produce_one(rk, topic, i % PARTITIONS, NULL, value);
    }
    flush_all(rk);
    rd_kafka_destroy(rk);
}

static void assign_all_from_start(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int32_t p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail_msg("assign %s: %s", topic, rd_kafka_err2str(err));
}

static void subscribe_one(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail_msg("subscribe %s: %s", topic, rd_kafka_err2str(err));
}

/*
 * Reads until every partition reported EOF (the end, or for read_committed the last stable
 * offset) after at least @p min_values values, collecting values into @p seen. With @p offsets
 * non-NULL, records next-offset-to-read per partition (for send_offsets_to_transaction).
 */
static void consume_to_end(rd_kafka_t *rk, size_t min_values, seen_t *seen, int64_t *offsets)
{
    int eof[PARTITIONS] = {0};
    int eofs = 0;
    int64_t deadline = now_ms() + WAIT_MS;

    while (eofs < PARTITIONS || seen->count < min_values) {
        if (now_ms() > deadline)
            fail_msg("consume: %zu values and %d/%d partition ends after %d ms", seen->count, eofs,
                     PARTITIONS, WAIT_MS);
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
        if (msg == NULL)
            continue;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (msg->partition >= 0 && msg->partition < PARTITIONS && !eof[msg->partition]) {
                eof[msg->partition] = 1;
                eofs++;
            }
        } else if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            char text[512];
            snprintf(text, sizeof(text), "%s", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            fail_msg("consume: %s", text);
        } else {
            if (seen->count >= MAX_VALUES)
                fail_msg("consume: more than %d messages", MAX_VALUES);
            char *value = strndup(msg->payload != NULL ? msg->payload : "", msg->len);
            assert_non_null(value);
            seen->values[seen->count++] = value;
            if (msg->partition >= 0 && msg->partition < PARTITIONS) {
                /* A message after an EOF means the partition got more data; wait again. */
                if (eof[msg->partition]) {
                    eof[msg->partition] = 0;
                    eofs--;
                }
                if (offsets != NULL)
                    offsets[msg->partition] = msg->offset + 1;
            }
        }
        rd_kafka_message_destroy(msg);
    }
}

/* A read_committed consumer of group that subscribes to topic and reads its n values into seen
 * (next-offsets into next, when non-NULL); the caller closes it. */
static rd_kafka_t *group_reads(const char *brokers, const char *group, const char *topic, int n,
                               seen_t *seen, int64_t *next)
{
    rd_kafka_t *consumer = consumer_new(brokers, group, "read_committed");
    subscribe_one(consumer, topic);
    consume_to_end(consumer, (size_t)n, seen, next);
    assert_int_equal(seen->count, n);
    return consumer;
}

/* Sum over partitions of the group's committed offsets for @p topic (-1 if none committed). */
static int64_t committed_total(rd_kafka_t *rk, const char *topic, int64_t *per_partition)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int32_t p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p);
    rd_kafka_resp_err_t err = rd_kafka_committed(rk, parts, WAIT_MS);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(parts);
        fail_msg("committed offsets of %s: %s", topic, rd_kafka_err2str(err));
    }
    int64_t total = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int64_t off = parts->elems[i].offset;
        if (per_partition != NULL)
            per_partition[parts->elems[i].partition] = off;
        if (off < 0) {
            total = -1;
            break;
        }
        total += off;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return total;
}

static void check_txn_error(rd_kafka_error_t *error, const char *what)
{
    if (error == NULL)
        return;
    char text[512];
    snprintf(text, sizeof(text), "%s: %s (%s)", what, rd_kafka_error_string(error),
             rd_kafka_error_name(error));
    rd_kafka_error_destroy(error);
    fail_msg("%s", text);
}

/* Topic "<run>.<what>" of PARTITIONS partitions, created. */
static void new_topic(const kafka_fixture_t *fx, const char *what, char *topic, size_t size)
{
    snprintf(topic, size, "%s.%s", fx->run, what);
    if (fq_test_kafka_create_topic(fx->brokers, topic, PARTITIONS) != 0)
        fail_msg("could not create topic %s on %s", topic, fx->brokers);
}

/* Group (or transactional id) "<run>-<what>". */
static void new_group(const kafka_fixture_t *fx, const char *what, char *group, size_t size)
{
    snprintf(group, size, "%s-%s", fx->run, what);
}

static int setup(void **state)
{
    static kafka_fixture_t fx;
    fx.brokers = fq_test_env_require("KAFKA_BROKERS");
    fq_test_unique_name("fq-test-kafka", fx.run, sizeof(fx.run));
    *state = &fx;
    return 0;
}

/* The run's topics and groups go, so that runs do not pile up partitions on the broker. */
static int teardown(void **state)
{
    const kafka_fixture_t *fx = *state;
    const char *const under[] = {fx->run};
    return fq_test_kafka_delete_under(fx->brokers, under, 1) == FQ_TEST_KAFKA_OK ? 0 : -1;
}

/* ---- headers ------------------------------------------------------------------------------ */

typedef struct header_case {
    const char *name;
    const char *value;
} header_case_t;

static const header_case_t header_cases[] = {
    {"frameq-attempt", "2"},
    {"frameq-error", "fetch: HTTP 503 from cdn (Retry-After: 5) \xc3\xa9t\xc3\xa9"},
    {"frameq-error-stage", "fetch"},
    {"frameq-origin-offset", "0"},
};

static void test_text_headers_roundtrip(void **state)
{
    const kafka_fixture_t *fx = *state;
    char topic[160];
    const char *key = "instagram:ABC123";
    const char *value = "{\"platform\":\"instagram\",\"code\":\"ABC123\"}";
    size_t ncases = sizeof(header_cases) / sizeof(header_cases[0]);

    new_topic(fx, "headers", topic, sizeof(topic));

    rd_kafka_t *producer = producer_new(fx->brokers, NULL);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(ncases);
    for (size_t i = 0; i < ncases; i++)
        rd_kafka_header_add(hdrs, header_cases[i].name, -1, header_cases[i].value, -1);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(1),
        RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)value, strlen(value)),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(hdrs);
        fail_msg("produce: %s", rd_kafka_err2str(err));
    }
    /* hdrs now owned by the message */
    flush_all(producer);
    rd_kafka_destroy(producer);

    rd_kafka_t *consumer = consumer_new(fx->brokers, NULL, "read_committed");
    assign_all_from_start(consumer, topic);
    rd_kafka_message_t *msg = NULL;
    int64_t deadline = now_ms() + WAIT_MS;
    while (msg == NULL || msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (msg != NULL)
            rd_kafka_message_destroy(msg);
        if (now_ms() > deadline)
            fail_msg("no message came back from %s within %d ms", topic, WAIT_MS);
        msg = rd_kafka_consumer_poll(consumer, 200);
    }

    assert_int_equal(msg->partition, 1);
    assert_int_equal(msg->key_len, strlen(key));
    assert_memory_equal(msg->key, key, strlen(key));
    assert_int_equal(msg->len, strlen(value));
    assert_memory_equal(msg->payload, value, strlen(value));

    rd_kafka_headers_t *got = NULL;
    assert_int_equal(rd_kafka_message_headers(msg, &got), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_header_cnt(got), ncases);
    for (size_t i = 0; i < ncases; i++) {
        const void *hv = NULL;
        size_t hsize = 0;
        if (rd_kafka_header_get_last(got, header_cases[i].name, &hv, &hsize) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            fail_msg("header %s missing", header_cases[i].name);
        assert_int_equal(hsize, strlen(header_cases[i].value));
        assert_memory_equal(hv, header_cases[i].value, hsize);
    }
    rd_kafka_message_destroy(msg);
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
}

/* ---- transactions ------------------------------------------------------------------------- */

/*
 * Consume-transform-produce as the consumer does it: read the source in a group, publish the
 * results and the source offsets in one transaction, commit.
 */
static void test_transaction_commits_output_and_offsets(void **state)
{
    const kafka_fixture_t *fx = *state;
    char source[160], sink[160], group[160], txn_id[160];
    const int n = 6;
    int64_t next[PARTITIONS] = {0, 0, 0};
    seen_t in = {0}, out = {0};

    new_topic(fx, "txn-src", source, sizeof(source));
    new_topic(fx, "txn-dst", sink, sizeof(sink));
    new_group(fx, "txn-group", group, sizeof(group));
    new_group(fx, "txn", txn_id, sizeof(txn_id));
    produce_plain(fx->brokers, source, "in", n);

    rd_kafka_t *consumer = group_reads(fx->brokers, group, source, n, &in, next);

    rd_kafka_t *producer = producer_new(fx->brokers, txn_id);
    check_txn_error(rd_kafka_init_transactions(producer, WAIT_MS), "init_transactions");
    check_txn_error(rd_kafka_begin_transaction(producer), "begin_transaction");
    char value[160];
    for (size_t i = 0; i < in.count; i++) {
        snprintf(value, sizeof(value), "out-%s", in.values[i]);
        produce_one(producer, sink, RD_KAFKA_PARTITION_UA, in.values[i], value);
    }
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int32_t p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(offsets, source, p)->offset = next[p];
    rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(consumer);
    rd_kafka_error_t *error =
        rd_kafka_send_offsets_to_transaction(producer, offsets, cgmd, WAIT_MS);
    rd_kafka_consumer_group_metadata_destroy(cgmd);
    rd_kafka_topic_partition_list_destroy(offsets);
    check_txn_error(error, "send_offsets_to_transaction");
    check_txn_error(rd_kafka_commit_transaction(producer, WAIT_MS), "commit_transaction");
    rd_kafka_destroy(producer);

    /* The group's committed offsets moved to exactly what the transaction carried. */
    int64_t committed[PARTITIONS] = {-1, -1, -1};
    assert_int_equal(committed_total(consumer, source, committed), n);
    for (int32_t p = 0; p < PARTITIONS; p++)
        assert_int_equal(committed[p], next[p]);
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);

    /* A read_committed reader of the sink sees every transformed message. */
    rd_kafka_t *reader = consumer_new(fx->brokers, NULL, "read_committed");
    assign_all_from_start(reader, sink);
    consume_to_end(reader, (size_t)n, &out, NULL);
    assert_int_equal(out.count, n);
    for (size_t i = 0; i < in.count; i++) {
        snprintf(value, sizeof(value), "out-%s", in.values[i]);
        if (!seen_has(&out, value))
            fail_msg("%s missing from %s", value, sink);
    }
    rd_kafka_consumer_close(reader);
    rd_kafka_destroy(reader);
    seen_clear(&in);
    seen_clear(&out);
}

static void read_all(const char *brokers, const char *topic, const char *isolation,
                     size_t min_values, seen_t *seen)
{
    rd_kafka_t *reader = consumer_new(brokers, NULL, isolation);
    assign_all_from_start(reader, topic);
    consume_to_end(reader, min_values, seen, NULL);
    rd_kafka_consumer_close(reader);
    rd_kafka_destroy(reader);
}

/* An aborted transaction's messages reach the log but never a read_committed reader. */
static void test_aborted_transaction_is_invisible(void **state)
{
    const kafka_fixture_t *fx = *state;
    char topic[160], txn_id[160], value[64];
    const int aborted = 4;
    seen_t committed_view = {0}, uncommitted_view = {0};

    new_topic(fx, "abort", topic, sizeof(topic));
    new_group(fx, "abort-txn", txn_id, sizeof(txn_id));

    rd_kafka_t *producer = producer_new(fx->brokers, txn_id);
    check_txn_error(rd_kafka_init_transactions(producer, WAIT_MS), "init_transactions");
    check_txn_error(rd_kafka_begin_transaction(producer), "begin_transaction");
    for (int i = 0; i < aborted; i++) {
        snprintf(value, sizeof(value), "aborted-%d", i);
        produce_one(producer, topic, i % PARTITIONS, NULL, value);
    }
    /* Flushed first so the aborted messages are really written to the partitions. */
    flush_all(producer);
    check_txn_error(rd_kafka_abort_transaction(producer, WAIT_MS), "abort_transaction");

    /* A later committed transaction on every partition: its messages must be visible. */
    check_txn_error(rd_kafka_begin_transaction(producer), "begin_transaction (2)");
    for (int p = 0; p < PARTITIONS; p++) {
        snprintf(value, sizeof(value), "committed-%d", p);
        produce_one(producer, topic, p, NULL, value);
    }
    check_txn_error(rd_kafka_commit_transaction(producer, WAIT_MS), "commit_transaction");
    rd_kafka_destroy(producer);

    read_all(fx->brokers, topic, "read_committed", PARTITIONS, &committed_view);
    assert_int_equal(committed_view.count, PARTITIONS);
    for (size_t i = 0; i < committed_view.count; i++)
        assert_true(strncmp(committed_view.values[i], "committed-", 10) == 0);

    /* The control case: the aborted messages are in the log, read_uncommitted shows them. */
    read_all(fx->brokers, topic, "read_uncommitted", (size_t)(aborted + PARTITIONS),
             &uncommitted_view);
    assert_int_equal(uncommitted_view.count, aborted + PARTITIONS);
    for (int i = 0; i < aborted; i++) {
        snprintf(value, sizeof(value), "aborted-%d", i);
        assert_true(seen_has(&uncommitted_view, value));
    }
    seen_clear(&committed_view);
    seen_clear(&uncommitted_view);
}

/* ---- consumer group ----------------------------------------------------------------------- */

static void test_group_offsets_survive_reopen(void **state)
{
    const kafka_fixture_t *fx = *state;
    char topic[160], group[160], value[64];
    const int first = 5, second = 4;
    seen_t before = {0}, after = {0};

    new_topic(fx, "group", topic, sizeof(topic));
    new_group(fx, "group", group, sizeof(group));
    produce_plain(fx->brokers, topic, "first", first);

    rd_kafka_t *consumer = group_reads(fx->brokers, group, topic, first, &before, NULL);
    /* Synchronous commit of the current positions, then a clean leave. */
    rd_kafka_resp_err_t err = rd_kafka_commit(consumer, NULL, 0);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail_msg("commit: %s", rd_kafka_err2str(err));
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);

    produce_plain(fx->brokers, topic, "second", second);

    consumer = consumer_new(fx->brokers, group, "read_committed");
    assert_int_equal(committed_total(consumer, topic, NULL), first);
    subscribe_one(consumer, topic);
    consume_to_end(consumer, (size_t)second, &after, NULL);
    /* Only what came after the commit: nothing of the first round is read again. */
    assert_int_equal(after.count, second);
    for (int i = 0; i < second; i++) {
        snprintf(value, sizeof(value), "second-%d", i);
        assert_true(seen_has(&after, value));
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    seen_clear(&before);
    seen_clear(&after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_headers_roundtrip),
        cmocka_unit_test(test_transaction_commits_output_and_offsets),
        cmocka_unit_test(test_aborted_transaction_is_invisible),
        cmocka_unit_test(test_group_offsets_survive_reopen),
    };
    return cmocka_run_group_tests_name("kafka", tests, setup, teardown);
}
