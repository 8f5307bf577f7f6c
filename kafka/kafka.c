/* Kafka client construction, callbacks and the transaction policy (fq_kafka.h). */
#include "fq_kafka.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* True when the user set this librdkafka property (KAFKA_CONFIG_* or -X): defaults yield. */
static bool user_set(const fq_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->kafka_props_count; i++)
        if (strcmp(cfg->kafka_props[i].name, name) == 0)
            return true;
    return false;
}

int fq_kafka_force(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                   size_t errstr_size)
{
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errstr_size, "%s=%s: %s", name, value, why);
        return -1;
    }
    return 0;
}

int fq_kafka_default(rd_kafka_conf_t *conf, const fq_config_t *cfg, const char *name,
                     const char *value, char *errstr, size_t errstr_size)
{
    if (user_set(cfg, name))
        return 0;
    return fq_kafka_force(conf, name, value, errstr, errstr_size);
}

fq_log_level_t fq_kafka_log_level(int syslog_level)
{
    if (syslog_level <= 3)
        return FQ_LOG_ERROR;
    if (syslog_level == 4)
        return FQ_LOG_WARN;
    if (syslog_level <= 6)
        return FQ_LOG_INFO;
    return FQ_LOG_DEBUG;
}

/* librdkafka's own log lines become JSON log lines like every other diagnostic. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    fq_log_level_t lvl = fq_kafka_log_level(level);
    /* KAFKA_CONFIG_* reaches every client of a program by design (one setting for the
     * consumer and the producer beside it): a property of the other kind is no warning. */
    if (strcmp(fac, "CONFWARN") == 0 && (strstr(buf, "will be ignored by this producer") ||
                                         strstr(buf, "will be ignored by this consumer")))
        lvl = FQ_LOG_DEBUG;
    fq_log(lvl, NULL, "librdkafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

bool fq_kafka_repeat_log(fq_kafka_repeat_t *r, const char *key, int64_t now_ms, int64_t window_ms,
                         unsigned *repeated)
{
    *repeated = 0;
    size_t slot = 0; /* for a new key: the first free slot, else the one logged longest ago */
    for (size_t i = 0; i < FQ_KAFKA_REPEAT_KEYS; i++) {
        if (r->e[i].key[0] && strcmp(r->e[i].key, key) == 0) {
            if (now_ms - r->e[i].since_ms < window_ms) {
                r->e[i].count++;
                return false;
            }
            *repeated = r->e[i].count;
            slot = i;
            break;
        }
        if (r->e[slot].key[0] && (!r->e[i].key[0] || r->e[i].since_ms < r->e[slot].since_ms))
            slot = i;
    }
    snprintf(r->e[slot].key, sizeof(r->e[slot].key), "%s", key);
    r->e[slot].since_ms = now_ms;
    r->e[slot].count = 0;
    return true;
}

/* The error callback runs on whichever thread polls a client: one memory for all of them. */
#define ERROR_REPEAT_MS 10000
static pthread_mutex_t g_repeat_lock = PTHREAD_MUTEX_INITIALIZER;
static fq_kafka_repeat_t g_repeat;

/* A fatal error marks the client's events (renew or exit); others are logged (the same code of
 * the same client again within ERROR_REPEAT_MS is counted instead) and kept as the latest
 * reason (librdkafka recovers from them by itself). */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    fq_kafka_events_t *events = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof(why));
        FQ_ERROR(NULL, "fatal Kafka error on %s (%s): %s", rd_kafka_name(rk),
                 rd_kafka_err2name(orig), why);
        if (events) {
            snprintf(events->last_error, sizeof(events->last_error), "%s", why);
            atomic_store(&events->fatal, true);
        }
        return;
    }
    char key[160];
    snprintf(key, sizeof(key), "%s/%d", rd_kafka_name(rk), err);
    unsigned repeated;
    pthread_mutex_lock(&g_repeat_lock);
    bool log = fq_kafka_repeat_log(&g_repeat, key, fq_time_mono_ms(), ERROR_REPEAT_MS, &repeated);
    pthread_mutex_unlock(&g_repeat_lock);
    if (log && repeated)
        FQ_WARN(NULL, "Kafka %s: %s: %s (and %u more of %s since its last line)", rd_kafka_name(rk),
                rd_kafka_err2name((rd_kafka_resp_err_t)err), reason, repeated,
                rd_kafka_err2name((rd_kafka_resp_err_t)err));
    else if (log)
        FQ_WARN(NULL, "Kafka %s: %s: %s", rd_kafka_name(rk),
                rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    if (events)
        snprintf(events->last_error, sizeof(events->last_error), "%s", reason);
}

rd_kafka_conf_t *fq_kafka_conf(const fq_config_t *cfg, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = fq_config_kafka_conf(cfg, errstr, errstr_size);
    if (!conf)
        return NULL;
    fq_kafka_set_callbacks(conf, NULL);
    return conf;
}

void fq_kafka_set_callbacks(rd_kafka_conf_t *conf, fq_kafka_events_t *events)
{
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, events);
}

fq_kafka_events_t *fq_kafka_events(rd_kafka_t *rk)
{
    return rd_kafka_opaque(rk);
}

rd_kafka_t *fq_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errstr,
                         size_t errstr_size)
{
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errstr_size, "%s: %s",
                 type == RD_KAFKA_PRODUCER ? "Kafka producer" : "Kafka consumer", why);
    }
    return rk; /* conf now owned by rk */
}

fq_kafka_txn_t fq_kafka_txn_class(const rd_kafka_error_t *error)
{
    if (!error)
        return FQ_KAFKA_TXN_OK;
    if (rd_kafka_error_is_fatal(error))
        return FQ_KAFKA_TXN_FATAL;
    if (rd_kafka_error_txn_requires_abort(error))
        return FQ_KAFKA_TXN_ABORT;
    if (rd_kafka_error_is_retriable(error))
        return FQ_KAFKA_TXN_RETRY;
    return FQ_KAFKA_TXN_OUTAGE;
}

const char *fq_kafka_txn_name(fq_kafka_txn_t klass)
{
    switch (klass) {
    case FQ_KAFKA_TXN_OK:
        return "ok";
    case FQ_KAFKA_TXN_RETRY:
        return "retry";
    case FQ_KAFKA_TXN_ABORT:
        return "abort";
    case FQ_KAFKA_TXN_OUTAGE:
        return "outage";
    case FQ_KAFKA_TXN_FATAL:
        return "fatal";
    }
    return "unknown";
}

fq_kafka_txn_t fq_kafka_txn_abort(rd_kafka_t *rk, int timeout_ms)
{
    rd_kafka_error_t *error = rd_kafka_abort_transaction(rk, timeout_ms);
    if (!error)
        return FQ_KAFKA_TXN_OK;
    fq_kafka_txn_t klass =
        fq_kafka_txn_class(error) == FQ_KAFKA_TXN_FATAL ? FQ_KAFKA_TXN_FATAL : FQ_KAFKA_TXN_OUTAGE;
    fq_log(klass == FQ_KAFKA_TXN_FATAL ? FQ_LOG_ERROR : FQ_LOG_WARN, NULL,
           "abort transaction on %s: %s: %s", rd_kafka_name(rk), fq_kafka_txn_name(klass),
           rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    return klass;
}

fq_kafka_txn_t fq_kafka_txn_failed(rd_kafka_t *rk, const char *what, rd_kafka_error_t *error,
                                   int timeout_ms)
{
    fq_kafka_txn_t klass = fq_kafka_txn_class(error);
    if (klass == FQ_KAFKA_TXN_OK)
        return klass;
    fq_log(klass == FQ_KAFKA_TXN_FATAL ? FQ_LOG_ERROR : FQ_LOG_WARN, NULL, "%s on %s: %s: %s", what,
           rd_kafka_name(rk), fq_kafka_txn_name(klass), rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    if (klass == FQ_KAFKA_TXN_ABORT) {
        fq_kafka_txn_t aborted = fq_kafka_txn_abort(rk, timeout_ms);
        if (aborted != FQ_KAFKA_TXN_OK)
            return aborted;
    }
    return klass;
}

int fq_kafka_topic_metadata(rd_kafka_t *rk, const char *topic, int timeout_ms,
                            const struct rd_kafka_metadata **md, char *errstr, size_t errstr_size)
{
    *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt) {
        snprintf(errstr, errstr_size, "%s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (err) {
        snprintf(errstr, errstr_size, "%s: %s", topic, rd_kafka_err2str(err));
        *md = NULL;
        return -1;
    }
    if ((*md)->topic_cnt == 1 && !(*md)->topics[0].err)
        return 0;
    err = (*md)->topic_cnt ? (*md)->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    snprintf(errstr, errstr_size, "%s: %s", topic, rd_kafka_err2str(err));
    rd_kafka_metadata_destroy(*md);
    *md = NULL;
    return err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ? FQ_KAFKA_NO_TOPIC : -1;
}

int fq_kafka_topic_known(rd_kafka_t *rk, const char *topic, int grace_ms, char *errstr,
                         size_t errstr_size)
{
    int64_t until = fq_time_mono_ms() + grace_ms;
    for (;;) {
        const struct rd_kafka_metadata *md;
        int rc = fq_kafka_topic_metadata(rk, topic, grace_ms, &md, errstr, errstr_size);
        if (md)
            rd_kafka_metadata_destroy(md);
        if (rc != FQ_KAFKA_NO_TOPIC)
            return 0;
        if (fq_time_mono_ms() >= until)
            return FQ_KAFKA_NO_TOPIC;
        usleep(200 * 1000); /* the next metadata request: the grace is for propagation */
    }
}
