/* The tests' Kafka admin chores; see fq_test_kafka.h. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "fq_test_kafka.h"

#define ADMIN_TIMEOUT_MS 30000
#define ADMIN_WAIT_MS    60000

/* One Admin API call: its client, options and result queue; what names it in messages. */
typedef struct admin {
    const char *what;
    const char *brokers;
    rd_kafka_t *rk;
    rd_kafka_AdminOptions_t *options;
    rd_kafka_queue_t *queue;
} admin_t;

static void admin_close(admin_t *a)
{
    if (a->queue)
        rd_kafka_queue_destroy(a->queue);
    if (a->options)
        rd_kafka_AdminOptions_destroy(a->options);
    if (a->rk)
        rd_kafka_destroy(a->rk);
}

static int admin_open(admin_t *a, const char *brokers, rd_kafka_admin_op_t op, const char *what)
{
    char errstr[512];
    *a = (admin_t){.what = what, .brokers = brokers};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        !(a->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr)))) {
        fprintf(stderr, "%s: %s\n", what, errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    a->options = rd_kafka_AdminOptions_new(a->rk, op);
    a->queue = rd_kafka_queue_new(a->rk);
    if (!a->options || !a->queue ||
        rd_kafka_AdminOptions_set_request_timeout(a->options, ADMIN_TIMEOUT_MS, errstr,
                                                  sizeof(errstr)) ||
        ((op == RD_KAFKA_ADMIN_OP_CREATETOPICS || op == RD_KAFKA_ADMIN_OP_DELETETOPICS) &&
         rd_kafka_AdminOptions_set_operation_timeout(a->options, ADMIN_TIMEOUT_MS, errstr,
                                                     sizeof(errstr)))) {
        fprintf(stderr, "%s: cannot set up the admin call\n", what);
        admin_close(a);
        return -1;
    }
    return 0;
}

/* The call's result (the caller destroys it), or NULL when no answer came or the call as a whole
 * failed (said on stderr). */
static rd_kafka_event_t *admin_wait(const admin_t *a)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(a->queue, ADMIN_WAIT_MS);
    if (!ev) {
        fprintf(stderr, "%s: no answer from %s within %d s\n", a->what, a->brokers,
                ADMIN_WAIT_MS / 1000);
        return NULL;
    }
    if (rd_kafka_event_error(ev)) {
        fprintf(stderr, "%s: %s\n", a->what, rd_kafka_event_error_string(ev));
        rd_kafka_event_destroy(ev);
        return NULL;
    }
    return ev;
}

/* rc after one name's result: err is fine as NO_ERROR or `fine`, a missing name as `missing`. */
static int admin_fold(const admin_t *a, int rc, const char *name, rd_kafka_resp_err_t err,
                      const char *msg, rd_kafka_resp_err_t fine, rd_kafka_resp_err_t missing)
{
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == fine)
        return rc;
    fprintf(stderr, "%s: %s: %s\n", a->what, name, msg ? msg : rd_kafka_err2str(err));
    if (err == missing && rc != FQ_TEST_KAFKA_FAILED)
        return FQ_TEST_KAFKA_MISSING;
    return FQ_TEST_KAFKA_FAILED;
}

/* The error of a topic call's one result, its text in *msg. */
static rd_kafka_resp_err_t topic_result(const rd_kafka_topic_result_t **res, size_t n,
                                        const char **msg)
{
    if (n != 1) {
        *msg = "the answer holds no result for it";
        return RD_KAFKA_RESP_ERR__BAD_MSG;
    }
    *msg = rd_kafka_topic_result_error_string(res[0]);
    return rd_kafka_topic_result_error(res[0]);
}

int fq_test_kafka_create_topic(const char *brokers, const char *topic, int partitions)
{
    char errstr[512];
    admin_t a;
    if (admin_open(&a, brokers, RD_KAFKA_ADMIN_OP_CREATETOPICS, "create topic") < 0)
        return -1;
    rd_kafka_NewTopic_t *newt = rd_kafka_NewTopic_new(topic, partitions, 1, errstr, sizeof(errstr));
    int rc = FQ_TEST_KAFKA_FAILED;
    if (!newt) {
        fprintf(stderr, "create topic: %s: %s\n", topic, errstr);
    } else {
        rd_kafka_CreateTopics(a.rk, &newt, 1, a.options, a.queue);
        rd_kafka_NewTopic_destroy(newt); /* the call keeps a copy */
        rd_kafka_event_t *ev = admin_wait(&a);
        if (ev) {
            size_t n = 0;
            const char *msg = NULL;
            const rd_kafka_topic_result_t **res =
                rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
            rd_kafka_resp_err_t err = topic_result(res, n, &msg);
            rc = admin_fold(&a, FQ_TEST_KAFKA_OK, topic, err, msg,
                            RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS, RD_KAFKA_RESP_ERR_NO_ERROR);
            rd_kafka_event_destroy(ev);
        }
    }
    admin_close(&a);
    return rc == FQ_TEST_KAFKA_OK ? 0 : -1;
}

/* What deleting one name of a kind takes: the request (false when it could not be made) and
 * the error of its answer's one result, its text in *msg. */
typedef struct delete_kind {
    const char *what;
    rd_kafka_admin_op_t op;
    rd_kafka_resp_err_t missing;
    bool (*send)(const admin_t *a, const char *name);
    rd_kafka_resp_err_t (*result)(rd_kafka_event_t *ev, const char **msg);
} delete_kind_t;

static bool send_delete_topic(const admin_t *a, const char *name)
{
    rd_kafka_DeleteTopic_t *del = rd_kafka_DeleteTopic_new(name);
    if (del)
        rd_kafka_DeleteTopics(a->rk, &del, 1, a->options, a->queue);
    rd_kafka_DeleteTopic_destroy(del); /* the call keeps a copy */
    return del != NULL;
}

static rd_kafka_resp_err_t delete_topic_result(rd_kafka_event_t *ev, const char **msg)
{
    size_t n = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
    return topic_result(res, n, msg);
}

static bool send_delete_group(const admin_t *a, const char *name)
{
    rd_kafka_DeleteGroup_t *del = rd_kafka_DeleteGroup_new(name);
    if (del)
        rd_kafka_DeleteGroups(a->rk, &del, 1, a->options, a->queue);
    rd_kafka_DeleteGroup_destroy(del);
    return del != NULL;
}

static rd_kafka_resp_err_t delete_group_result(rd_kafka_event_t *ev, const char **msg)
{
    size_t n = 0;
    const rd_kafka_group_result_t **res =
        rd_kafka_DeleteGroups_result_groups(rd_kafka_event_DeleteGroups_result(ev), &n);
    if (n != 1) {
        *msg = "the answer holds no result for it";
        return RD_KAFKA_RESP_ERR__BAD_MSG;
    }
    const rd_kafka_error_t *error = rd_kafka_group_result_error(res[0]);
    *msg = error ? rd_kafka_error_string(error) : NULL;
    return error ? rd_kafka_error_code(error) : RD_KAFKA_RESP_ERR_NO_ERROR;
}

static const delete_kind_t topics_kind = {"delete topic", RD_KAFKA_ADMIN_OP_DELETETOPICS,
                                          RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
                                          send_delete_topic, delete_topic_result};
static const delete_kind_t groups_kind = {"delete group", RD_KAFKA_ADMIN_OP_DELETEGROUPS,
                                          RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND, send_delete_group,
                                          delete_group_result};

/* Deletes the names one request each, so that each answer speaks of one name; an answer of
 * `fine` counts as done. */
static int delete_each(const char *brokers, const delete_kind_t *kind, const char *const *names,
                       size_t n, rd_kafka_resp_err_t fine)
{
    admin_t a;
    if (admin_open(&a, brokers, kind->op, kind->what) < 0)
        return FQ_TEST_KAFKA_FAILED;
    int rc = FQ_TEST_KAFKA_OK;
    for (size_t i = 0; i < n; i++) {
        rd_kafka_event_t *ev = kind->send(&a, names[i]) ? admin_wait(&a) : NULL;
        if (!ev) {
            rc = FQ_TEST_KAFKA_FAILED;
            continue;
        }
        const char *msg = NULL;
        rd_kafka_resp_err_t err = kind->result(ev, &msg);
        rc = admin_fold(&a, rc, names[i], err, msg, fine, kind->missing);
        rd_kafka_event_destroy(ev);
    }
    admin_close(&a);
    return rc;
}

int fq_test_kafka_delete_topics(const char *brokers, const char *const *names, size_t n)
{
    return delete_each(brokers, &topics_kind, names, n, RD_KAFKA_RESP_ERR_NO_ERROR);
}

int fq_test_kafka_delete_groups(const char *brokers, const char *const *names, size_t n)
{
    return delete_each(brokers, &groups_kind, names, n, RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Whether name is prefix itself or lies under it (prefix then '.' or '-'). */
static bool under(const char *name, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(name, prefix, n) == 0 && (name[n] == '\0' || name[n] == '.' || name[n] == '-');
}

/* Names to delete (pointers into the listing they came from). */
typedef struct names {
    const char **v;
    size_t n;
} names_t;

/* Adds name to out when it lies under one of the prefixes; -1 when out of memory. */
static int names_add_under(names_t *out, const char *name, const char *const *prefixes,
                           size_t nprefixes)
{
    for (size_t i = 0; i < nprefixes; i++) {
        if (!under(name, prefixes[i]))
            continue;
        const char **v = realloc(out->v, (out->n + 1) * sizeof(*v));
        if (!v)
            return -1;
        out->v = v;
        out->v[out->n++] = name;
        return 0;
    }
    return 0;
}

int fq_test_kafka_delete_under(const char *brokers, const char *const *prefixes, size_t n)
{
    admin_t a;
    if (admin_open(&a, brokers, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS, "delete under") < 0)
        return FQ_TEST_KAFKA_FAILED;
    int rc = FQ_TEST_KAFKA_FAILED;
    names_t topic_names = {0}, group_names = {0};
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(a.rk, 1, NULL, &md, ADMIN_TIMEOUT_MS);
    if (err) {
        fprintf(stderr, "delete under: listing topics: %s\n", rd_kafka_err2str(err));
        goto done;
    }
    rd_kafka_ListConsumerGroups(a.rk, a.options, a.queue);
    if (!(ev = admin_wait(&a)))
        goto done;
    size_t ngroups = 0;
    const rd_kafka_ConsumerGroupListing_t **groups = rd_kafka_ListConsumerGroups_result_valid(
        rd_kafka_event_ListConsumerGroups_result(ev), &ngroups);
    int oom = 0;
    for (int i = 0; i < md->topic_cnt; i++)
        oom |= names_add_under(&topic_names, md->topics[i].topic, prefixes, n);
    for (size_t i = 0; i < ngroups; i++)
        oom |= names_add_under(&group_names, rd_kafka_ConsumerGroupListing_group_id(groups[i]),
                               prefixes, n);
    if (oom) {
        fprintf(stderr, "delete under: out of memory\n");
        goto done;
    }
    /* Groups first. A group that still has members is left to the broker: a static member
     * stays until its session times out, and the group's offsets of deleted topics go with
     * them, so the empty group then expires. */
    int grc = group_names.n ? delete_each(brokers, &groups_kind, group_names.v, group_names.n,
                                          RD_KAFKA_RESP_ERR_NON_EMPTY_GROUP)
                            : FQ_TEST_KAFKA_OK;
    int trc = topic_names.n ? delete_each(brokers, &topics_kind, topic_names.v, topic_names.n,
                                          RD_KAFKA_RESP_ERR_NO_ERROR)
                            : FQ_TEST_KAFKA_OK;
    /* A name gone between the listing and its deletion is gone all the same. */
    rc = grc == FQ_TEST_KAFKA_FAILED || trc == FQ_TEST_KAFKA_FAILED ? FQ_TEST_KAFKA_FAILED
                                                                    : FQ_TEST_KAFKA_OK;
done:
    free(topic_names.v);
    free(group_names.v);
    if (ev)
        rd_kafka_event_destroy(ev);
    if (md)
        rd_kafka_metadata_destroy(md);
    admin_close(&a);
    return rc;
}
