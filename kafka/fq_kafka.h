/* frameq's Kafka clients: one way to build a librdkafka configuration (the user's settings
 * first, then each client's own properties, which yield to a property the user set unless
 * forced), one log and one error callback, and one policy for failed transactional calls.
 *
 * A client built here reaches its caller's state through fq_kafka_events_t, the conf's
 * opaque: callbacks of the caller (rebalance, stats, delivery reports) get the events as their
 * opaque and find their own state in events->user. Callers never set the opaque themselves. */
#ifndef FQ_KAFKA_H
#define FQ_KAFKA_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "fq_base.h"
#include "fq_config.h"
#include "fq_log.h"

/** What the error callback reports to the client's owner. Zero-initialise. */
typedef struct fq_kafka_events {
    atomic_bool fatal;    /**< set once librdkafka reports a fatal error: renew or exit */
    char last_error[512]; /**< the latest error's reason ("" none); written on the polling
                           *   thread, read it there */
    void *user;           /**< the owner's state, for its own callbacks */
} fq_kafka_events_t;

/** @brief The configuration's librdkafka settings (bootstrap servers, every KAFKA_CONFIG_* /
 *  -X property) with the one log and error callback (fq_kafka_set_callbacks, no events). NULL with
 * errstr set (it names the setting) on an invalid property. */
rd_kafka_conf_t *fq_kafka_conf(const fq_config_t *cfg, char *errstr,
                               size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Sets one of frameq's defaults: it yields to the same property set by the user
 *  (KAFKA_CONFIG_* or -X). 0, or -1 with errstr "name=value: why". */
int fq_kafka_default(rd_kafka_conf_t *conf, const fq_config_t *cfg, const char *name,
                     const char *value, char *errstr, size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Sets a property frameq's contract needs whatever the user set (transactional.id,
 *  isolation.level, ...). 0, or -1 with errstr "name=value: why". */
int fq_kafka_force(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                   size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Sets the one log callback (librdkafka lines to fq_log, fq_kafka_log_level) and the
 *  one error callback (a fatal error logged as an error and marked in events, others logged
 *  as warnings and kept in events->last_error), and makes events (may be NULL) the conf's
 *  opaque: the caller's own callbacks get events and find their state in events->user.
 *  events outlives the client. fq_kafka_conf has set them with NULL events already. */
void fq_kafka_set_callbacks(rd_kafka_conf_t *conf, fq_kafka_events_t *events);

/** @brief The events of a client given to fq_kafka_set_callbacks; NULL without. */
fq_kafka_events_t *fq_kafka_events(rd_kafka_t *rk);

/** @brief rd_kafka_new of type with conf, which it takes in every case (destroyed on
 *  failure). NULL with errstr set. */
rd_kafka_t *fq_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errstr,
                         size_t errstr_size) FQ_WARN_UNUSED;

/** @brief The fq_log level of a librdkafka (syslog) log level: 0..3 error, 4 warning,
 *  5..6 info, 7 and above debug. */
fq_log_level_t fq_kafka_log_level(int syslog_level);

/** The error callback's memory of the errors it logged, by client and code: the same
 *  error again within a window is counted, not logged. A client whose queue was not served
 *  for a while (start-up waiting for Kafka) hands its errors over in a burst, and librdkafka
 *  alternates codes and reasons ("1/1 brokers are down", "0/1 ...") while a broker is away. */
#define FQ_KAFKA_REPEAT_KEYS 8
typedef struct fq_kafka_repeat {
    struct {
        char key[160];    /**< "client/code"; "" unused */
        int64_t since_ms; /**< when it was last logged */
        unsigned count;   /**< the same error since then, counted, not logged */
    } e[FQ_KAFKA_REPEAT_KEYS];
} fq_kafka_repeat_t;

/** @brief Whether the error with key (client and code) at now_ms is logged: false (counted)
 *  when the same key was logged within window_ms. When true, *repeated is how many of that
 *  key were counted since it was last logged (0: none), for the line to say so. A key beyond
 *  the table's room takes the slot of the one logged longest ago. */
bool fq_kafka_repeat_log(fq_kafka_repeat_t *r, const char *key, int64_t now_ms, int64_t window_ms,
                         unsigned *repeated);

/** What a failed transactional call means, and what its caller does. */
typedef enum fq_kafka_txn {
    FQ_KAFKA_TXN_OK = 0, /**< no error */
    FQ_KAFKA_TXN_RETRY,  /**< retriable: call the same function again (bounded) */
    FQ_KAFKA_TXN_ABORT,  /**< the transaction must be aborted (once); its work is replayed */
    FQ_KAFKA_TXN_OUTAGE, /**< anything else (timeouts, transport): the transaction's state is
                          *   unknown, an abort is owed once the cluster answers */
    FQ_KAFKA_TXN_FATAL,  /**< the producer is unusable: renew it or exit */
} fq_kafka_txn_t;

/** @brief Classifies error (NULL: OK): fatal first, then txn_requires_abort, then
 *  retriable, else outage. */
fq_kafka_txn_t fq_kafka_txn_class(const rd_kafka_error_t *error);

/** @brief "ok", "retry", "abort", "outage", "fatal". */
const char *fq_kafka_txn_name(fq_kafka_txn_t klass);

/** @brief Aborts rk's open transaction once. OK; OUTAGE when the abort itself failed (still
 *  owed); FATAL. */
fq_kafka_txn_t fq_kafka_txn_abort(rd_kafka_t *rk, int timeout_ms);

/** @brief The one policy for a failed transactional call named what: logs it, destroys error
 *  and returns what the caller does next. ABORT: the transaction was aborted here (once) and
 *  its work is gone, replay it; the abort's own failure returns OUTAGE or FATAL instead.
 *  RETRY: call again; OUTAGE: an abort is owed (fq_kafka_txn_abort); FATAL: renew or exit.
 *  error NULL returns OK. */
fq_kafka_txn_t fq_kafka_txn_failed(rd_kafka_t *rk, const char *what, rd_kafka_error_t *error,
                                   int timeout_ms);

/** fq_kafka_topic_metadata: the cluster does not know the topic. */
#define FQ_KAFKA_NO_TOPIC (-2)

/** @brief The cluster's metadata of one topic (a request for it alone; a broker that
 *  auto-creates topics may create it now, as a produce would). 0 with *md set (free it with
 *  rd_kafka_metadata_destroy; (*md)->topics[0] is the topic); FQ_KAFKA_NO_TOPIC when the
 *  cluster does not know it; -1 otherwise (no answer in time, ...). errstr says why. */
int fq_kafka_topic_metadata(rd_kafka_t *rk, const char *topic, int timeout_ms,
                            const struct rd_kafka_metadata **md, char *errstr,
                            size_t errstr_size) FQ_WARN_UNUSED;

/** @brief For a program about to produce to topic: FQ_KAFKA_NO_TOPIC when the cluster does
 *  not know it, asked again for up to grace_ms (a topic created a moment ago), with errstr; 0
 *  otherwise (also when the cluster does not answer: the produce reports that itself). */
int fq_kafka_topic_known(rd_kafka_t *rk, const char *topic, int grace_ms, char *errstr,
                         size_t errstr_size) FQ_WARN_UNUSED;

/** A client's watch over its cluster, kept by fq_kafka_probe. Zero-initialise; one thread. */
typedef struct fq_kafka_watch {
    int64_t silent_since_ms; /**< since when no broker has answered (fq_time_mono_ms; 0: one did) */
    int64_t readd_at_ms;     /**< when the bootstrap brokers are added again, while silent */
    unsigned readds;         /**< how often they were added in this silence */
} fq_kafka_watch_t;

/** How long a cluster stays silent before the bootstrap brokers are added again, how often
 *  after that for the first FQ_KAFKA_READD_FAST re-adds, and how often then. The broker's
 *  return is when librdkafka drops them, so the first minutes of a silence are re-added often. */
#define FQ_KAFKA_READD_AFTER_MS 10000
#define FQ_KAFKA_READD_FAST     30
#define FQ_KAFKA_READD_EVERY_MS 60000

/** @brief Records a probe's answer at now_ms; true when the bootstrap brokers are due to be
 *  added again: every FQ_KAFKA_READD_AFTER_MS of a silence, after FQ_KAFKA_READD_FAST re-adds
 *  every FQ_KAFKA_READD_EVERY_MS.
 *  An answer ends the silence. The policy of fq_kafka_probe, apart for its tests. */
bool fq_kafka_watch_note(fq_kafka_watch_t *watch, bool answered, int64_t now_ms) FQ_WARN_UNUSED;

/** @brief Records whether rk's cluster answered a call (failure NULL) or not (failure says
 *  why), and adds the bootstrap brokers to rk again when fq_kafka_watch_note says they are due
 *  (see fq_kafka_probe). For a client that is not probed but whose own calls tell. */
void fq_kafka_watch(rd_kafka_t *rk, const char *bootstrap, fq_kafka_watch_t *watch,
                    const char *failure);

/** @brief Asks rk's cluster for its brokers (a metadata request for no topic) within
 *  timeout_ms: NO_ERROR when a broker answered, else librdkafka's error.
 *
 *  librdkafka 2.14.2 can leave a client without any broker handle: a metadata answer from a
 *  broker that has just restarted and does not list itself yet decommissions the learned
 *  brokers and the bootstrap ones alike, its group coordinator with them, and its re-bootstrap
 *  starts only from a metadata request, which needs a broker. So once the cluster has been
 *  silent for FQ_KAFKA_READD_AFTER_MS, the bootstrap brokers (bootstrap, KAFKA_BROKERS) are
 *  added to rk again, and again on fq_kafka_watch_note's schedule while the silence lasts:
 *  rd_kafka_brokers_add adds only those rk no longer has, so in an ordinary outage it adds
 *  nothing. Logged once per silence, and when the cluster answers after it. */
rd_kafka_resp_err_t fq_kafka_probe(rd_kafka_t *rk, const char *bootstrap, fq_kafka_watch_t *watch,
                                   int timeout_ms);

#endif
