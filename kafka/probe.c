/* A client's probe of its cluster, and the re-adding of its bootstrap brokers when librdkafka
 * has dropped them (fq_kafka.h). */
#include "fq_kafka.h"

bool fq_kafka_watch_note(fq_kafka_watch_t *watch, bool answered, int64_t now_ms)
{
    if (answered) {
        watch->silent_since_ms = 0;
        watch->readds = 0;
        return false;
    }
    if (watch->silent_since_ms == 0) {
        watch->silent_since_ms = now_ms;
        watch->readd_at_ms = now_ms + FQ_KAFKA_READD_AFTER_MS;
    }
    if (now_ms < watch->readd_at_ms)
        return false;
    watch->readds++;
    watch->readd_at_ms = now_ms + (watch->readds < FQ_KAFKA_READD_FAST ? FQ_KAFKA_READD_AFTER_MS
                                                                       : FQ_KAFKA_READD_EVERY_MS);
    return true;
}

void fq_kafka_watch(rd_kafka_t *rk, const char *bootstrap, fq_kafka_watch_t *watch,
                    const char *failure)
{
    int64_t now = fq_time_mono_ms();
    int64_t silent_ms = watch->silent_since_ms ? now - watch->silent_since_ms : 0;
    unsigned readds = watch->readds;
    if (fq_kafka_watch_note(watch, failure == NULL, now)) {
        /* Each call also appends the list to rk's re-bootstrap lists: after the first
         * minutes, once a minute at most. */
        rd_kafka_brokers_add(rk, bootstrap);
        if (watch->readds == 1)
            FQ_INFO(NULL,
                    "kafka: no broker has answered %s for %lld ms (%s); adding the bootstrap "
                    "brokers %s again until one does (librdkafka adds those it has dropped)",
                    rd_kafka_name(rk), (long long)(now - watch->silent_since_ms), failure,
                    bootstrap);
    } else if (!failure && readds > 0) {
        FQ_INFO(NULL,
                "kafka: a broker answers %s again, %lld ms into the silence, after %u re-add(s) of "
                "the bootstrap brokers",
                rd_kafka_name(rk), (long long)silent_ms, readds);
    }
}

rd_kafka_resp_err_t fq_kafka_probe(rd_kafka_t *rk, const char *bootstrap, fq_kafka_watch_t *watch,
                                   int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (!err)
        rd_kafka_metadata_destroy(md);
    fq_kafka_watch(rk, bootstrap, watch, err ? rd_kafka_err2str(err) : NULL);
    return err;
}
