/* Helpers for integration tests; see fq_test_env.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "fq_test_env.h"

const char *fq_test_env_require(const char *name)
{
    const char *value = getenv(name);
    if (value != NULL && value[0] != '\0')
        return value;
    /* fail_msg() ends the running test; outside a test it ends the process with an error. */
    fail_msg("environment variable %s is not set: integration tests need the local stack "
             "(run deploy/local/up, then `. .stack/env`, or use tests/run.sh)",
             name);
    return NULL;
}

char *fq_test_unique_name(const char *prefix, char *buf, size_t size)
{
    static atomic_uint counter;
    uint32_t rnd = 0;
    struct timespec now;

    /* getrandom avoids two processes started in the same nanosecond colliding. */
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)rand();
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(buf, size, "%s-%d-%lld%03ld-%u-%08x", prefix, (int)getpid(), (long long)now.tv_sec,
             now.tv_nsec / 1000000L, atomic_fetch_add(&counter, 1u) + 1u, rnd);
    return buf;
}

int fq_test_kafka_create_topic(const char *brokers, const char *topic, int partitions)
{
    char errstr[512];
    int rc = -1;
    rd_kafka_t *rk = NULL;
    rd_kafka_NewTopic_t *newt = NULL;
    rd_kafka_AdminOptions_t *options = NULL;
    rd_kafka_queue_t *queue = NULL;
    rd_kafka_event_t *event = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "create topic %s: %s\n", topic, errstr);
        rd_kafka_conf_destroy(conf);
        goto done;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "create topic %s: %s\n", topic, errstr);
        rd_kafka_conf_destroy(conf);
        goto done;
    }
    conf = NULL; /* now owned by rk */

    newt = rd_kafka_NewTopic_new(topic, partitions, 1, errstr, sizeof(errstr));
    if (newt == NULL) {
        fprintf(stderr, "create topic %s: %s\n", topic, errstr);
        goto done;
    }
    options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(options, 30000, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_request_timeout(options, 30000, errstr, sizeof(errstr));
    queue = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &newt, 1, options, queue);

    event = rd_kafka_queue_poll(queue, 60000);
    if (event == NULL) {
        fprintf(stderr, "create topic %s: no answer from %s within 60 s\n", topic, brokers);
        goto done;
    }
    if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "create topic %s: %s\n", topic, rd_kafka_event_error_string(event));
        goto done;
    }
    {
        const rd_kafka_CreateTopics_result_t *result = rd_kafka_event_CreateTopics_result(event);
        size_t n = 0;
        const rd_kafka_topic_result_t **topics = rd_kafka_CreateTopics_result_topics(result, &n);
        for (size_t i = 0; i < n; i++) {
            rd_kafka_resp_err_t err = rd_kafka_topic_result_error(topics[i]);
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR &&
                err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                fprintf(stderr, "create topic %s: %s\n", rd_kafka_topic_result_name(topics[i]),
                        rd_kafka_topic_result_error_string(topics[i]));
                goto done;
            }
        }
    }
    rc = 0;
done:
    if (event != NULL)
        rd_kafka_event_destroy(event);
    if (queue != NULL)
        rd_kafka_queue_destroy(queue);
    if (options != NULL)
        rd_kafka_AdminOptions_destroy(options);
    if (newt != NULL)
        rd_kafka_NewTopic_destroy(newt);
    if (rk != NULL)
        rd_kafka_destroy(rk);
    return rc;
}

int fq_test_count_dir_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    }
    closedir(d);
    return n;
}

void fq_test_s3_require(void)
{
    fq_test_env_require("S3_ENDPOINT");
    fq_test_env_require("AWS_ACCESS_KEY_ID");
    fq_test_env_require("AWS_SECRET_ACCESS_KEY");
}

void fq_test_s3_settings(fq_config_t *cfg)
{
    cfg->s3_endpoint = getenv("S3_ENDPOINT");
    cfg->s3_region = getenv("S3_REGION") ? getenv("S3_REGION") : "us-east-1";
    cfg->aws_access_key_id = getenv("AWS_ACCESS_KEY_ID");
    cfg->aws_secret_access_key = getenv("AWS_SECRET_ACCESS_KEY");
}
