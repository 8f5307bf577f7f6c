/* producer topics create: KAFKA_TOPIC, KAFKA_RETRY_TOPIC and KAFKA_DLQ_TOPIC through the
 * admin API; a topic that exists already is reported as "exists". And the check of the topic
 * enqueue and redrive produce to. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "fq_cli.h"
#include "fq_config.h"
#include "fq_kafka.h"

/* One line per topic of the CreateTopics result: created, exists or failed. 0, or
 * FQ_EXIT_DELIVERY when one failed. */
static int print_results(rd_kafka_event_t *ev, const char *const names[3], const int parts[3],
                         int replication_factor)
{
    int rc = 0;
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    for (size_t i = 0; i < cnt; i++) {
        const char *tname = rd_kafka_topic_result_name(res[i]);
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
        int p = 0;
        for (int j = 0; j < 3; j++)
            if (!strcmp(names[j], tname))
                p = parts[j];
        if (!err) {
            char rf[32];
            if (replication_factor < 0)
                snprintf(rf, sizeof(rf), "the broker's default");
            else
                snprintf(rf, sizeof(rf), "%d", replication_factor);
            printf("%s: created (%d partitions, replication factor %s)\n", tname, p, rf);
        } else if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            printf("%s: exists\n", tname);
        } else {
            printf("%s: failed: %s\n", tname,
                   rd_kafka_topic_result_error_string(res[i])
                       ? rd_kafka_topic_result_error_string(res[i])
                       : rd_kafka_err2str(err));
            rc = FQ_EXIT_DELIVERY;
        }
    }
    return rc;
}

int fq_cli_topics_create(const fq_config_t *cfg, const fq_cli_opts_t *o)
{
    int rc = FQ_EXIT_DELIVERY;
    char errstr[512];
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *aopts = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_NewTopic_t *nt[3] = {NULL, NULL, NULL};
    const char *names[3] = {cfg->kafka_topic, cfg->kafka_retry_topic, cfg->kafka_dlq_topic};
    int parts[3] = {o->partitions, o->retry_partitions, o->dlq_partitions};
    int64_t retention[3] = {o->retention_ms, o->retention_ms, o->dlq_retention_ms};

    rd_kafka_conf_t *conf = fq_kafka_conf(cfg, errstr, sizeof(errstr));
    if (conf)
        rk = fq_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fq_cli_say("%s", errstr);
        return FQ_EXIT_USAGE;
    }
    for (int i = 0; i < 3; i++) {
        nt[i] = rd_kafka_NewTopic_new(names[i], parts[i], o->replication_factor, errstr,
                                      sizeof(errstr));
        if (!nt[i]) {
            fq_cli_say("%s: %s", names[i], errstr);
            rc = FQ_EXIT_USAGE;
            goto done;
        }
        char ret[32];
        snprintf(ret, sizeof(ret), "%" PRId64, retention[i]);
        if (rd_kafka_NewTopic_set_config(nt[i], "retention.ms", ret)) {
            fq_cli_say("%s: cannot set retention.ms", names[i]);
            goto done;
        }
    }
    q = rd_kafka_queue_new(rk);
    aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(aopts, (int)o->timeout_ms, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_operation_timeout(aopts, (int)o->timeout_ms, errstr, sizeof(errstr));
    /* fq_config_load already refused equal topic names, which would fail the call. */
    rd_kafka_CreateTopics(rk, nt, 3, aopts, q);
    ev = rd_kafka_queue_poll(q, (int)o->timeout_ms + 5000);
    if (!ev) {
        fq_cli_say("could not create topics at KAFKA_BROKERS=%s: no answer in %" PRId64 " ms",
                   cfg->kafka_brokers, o->timeout_ms);
        goto done;
    }
    if (rd_kafka_event_error(ev)) {
        fq_cli_say("could not create topics at KAFKA_BROKERS=%s: %s", cfg->kafka_brokers,
                   rd_kafka_event_error_string(ev));
        goto done;
    }
    rc = print_results(ev, names, parts, o->replication_factor);
done:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (aopts)
        rd_kafka_AdminOptions_destroy(aopts);
    for (int i = 0; i < 3; i++)
        if (nt[i])
            rd_kafka_NewTopic_destroy(nt[i]);
    if (q)
        rd_kafka_queue_destroy(q);
    if (rk)
        rd_kafka_destroy(rk);
    return rc;
}

/* A topic created a moment ago may not be known to every broker yet. */
#define TOPIC_GRACE_MS 3000

bool fq_cli_topic_missing(rd_kafka_t *rk, const char *topic, const fq_cli_opts_t *o)
{
    char why[512];
    int grace = o->timeout_ms < TOPIC_GRACE_MS ? (int)o->timeout_ms : TOPIC_GRACE_MS;
    if (fq_kafka_topic_known(rk, topic, grace, why, sizeof(why)) == 0)
        return false;
    fq_cli_say("%s; nothing sent (create the topics: producer topics create)", why);
    return true;
}
