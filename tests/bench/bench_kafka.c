/* bench_kafka — the Kafka chores of tests/bench/bench_window.sh that kcat cannot do.
 *
 *   bench_kafka publish-retry TOPIC   reads lines "PARTITION NOT_BEFORE_MS ATTEMPT ITEM_JSON" on
 *                                     stdin; publishes each ITEM_JSON to TOPIC's PARTITION as a
 *                                     retry message (key platform:code, text headers
 *                                     frameq-attempt and frameq-not-before, the other routing
 *                                     headers as the worker writes them); acks=all, idempotent.
 *                                     Prints "published N" after every message is acknowledged.
 *
 * Brokers from KAFKA_BROKERS. Exit 0 on success, 1 on a Kafka error (named on stderr), 2 usage.
 * One message per item with its own headers, in one process: kcat takes one header set per run.
 */
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fq_headers.h"

static int delivery_failures;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (delivery_failures++ < 5)
            fprintf(stderr, "bench_kafka: delivery to partition %d failed: %s\n", (int)m->partition,
                    rd_kafka_err2str(m->err));
    }
}

static rd_kafka_t *new_client(rd_kafka_type_t type)
{
    const char *brokers = getenv("KAFKA_BROKERS");
    char errstr[512];
    if (!brokers || !*brokers) {
        fprintf(stderr, "bench_kafka: KAFKA_BROKERS is not set\n");
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        (type == RD_KAFKA_PRODUCER &&
         (rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr)) ||
          rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr))))) {
        fprintf(stderr, "bench_kafka: configuration: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench_kafka: cannot create a Kafka client: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* The item's "platform" and "code" values, found textually (the script writes the JSON). */
static int item_key(const char *json, char *key, size_t size)
{
    char platform[64], code[160];
    const char *p = strstr(json, "\"platform\":\""), *c = strstr(json, "\"code\":\"");
    if (!p || !c || sscanf(p + 12, "%63[^\"]", platform) != 1 ||
        sscanf(c + 8, "%159[^\"]", code) != 1)
        return -1;
    snprintf(key, size, "%s:%s", platform, code);
    return 0;
}

static void now_rfc3339(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char sec[24];
    strftime(sec, sizeof(sec), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%.19s.%03dZ", sec, (int)(ts.tv_nsec / 1000000) % 1000);
}

static int publish_retry(const char *topic)
{
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER);
    if (!rk)
        return 1;
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    long sent = 0;
    int rc = 0;
    ssize_t len;
    char when[40];
    now_rfc3339(when, sizeof(when));
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        int partition, used = 0;
        int64_t not_before;
        int attempt;
        char key[256];
        if (sscanf(line, "%d %" SCNd64 " %d %n", &partition, &not_before, &attempt, &used) != 3 ||
            used == 0 || item_key(line + used, key, sizeof(key)) != 0) {
            fprintf(stderr,
                    "bench_kafka: stdin line %zu: want \"PARTITION NOT_BEFORE_MS ATTEMPT "
                    "ITEM_JSON\"\n",
                    lineno);
            rc = 2;
            break;
        }
        const char *value = line + used;
        char attempt_s[16], not_before_s[24];
        snprintf(attempt_s, sizeof(attempt_s), "%d", attempt);
        snprintf(not_before_s, sizeof(not_before_s), "%" PRId64, not_before);
        rd_kafka_resp_err_t err;
        do {
            err = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, strlen(key)),
                RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                RD_KAFKA_V_HEADER(FQ_HDR_ATTEMPT, attempt_s, -1),
                RD_KAFKA_V_HEADER(FQ_HDR_NOT_BEFORE, not_before_s, -1),
                RD_KAFKA_V_HEADER(FQ_HDR_ERROR_STAGE, "fetch", -1),
                RD_KAFKA_V_HEADER(FQ_HDR_ERROR_CLASS, "retriable", -1),
                RD_KAFKA_V_HEADER(FQ_HDR_ERROR, "bench: synthetic retry", -1),
                RD_KAFKA_V_HEADER(FQ_HDR_FIRST_FAILED_AT, when, -1),
                RD_KAFKA_V_HEADER(FQ_HDR_FAILED_AT, when, -1),
                RD_KAFKA_V_HEADER(FQ_HDR_WORKER, "bench_kafka", -1), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(rk, 100);
        } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
        if (err) {
            fprintf(stderr, "bench_kafka: producing to %s [%d]: %s\n", topic, partition,
                    rd_kafka_err2str(err));
            rc = 1;
            break;
        }
        sent++;
        rd_kafka_poll(rk, 0);
    }
    free(line);
    rd_kafka_resp_err_t ferr = rd_kafka_flush(rk, 30000);
    if (ferr) {
        fprintf(stderr, "bench_kafka: flush of %s: %s\n", topic, rd_kafka_err2str(ferr));
        rc = 1;
    }
    if (delivery_failures) {
        fprintf(stderr, "bench_kafka: %d message(s) to %s not delivered\n", delivery_failures,
                topic);
        rc = 1;
    }
    if (rc == 0)
        printf("published %ld\n", sent);
    rd_kafka_destroy(rk);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "publish-retry") == 0)
        return publish_retry(argv[2]);
    fprintf(stderr, "usage: bench_kafka publish-retry TOPIC < LINES\n");
    return 2;
}
