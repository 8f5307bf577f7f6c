/* frameq worker internals, shared by the files of the consume loop (not a public header):
 *
 *   worker.c      set-up, librdkafka callbacks, outages and probes, the loop itself
 *   partitions.c  the assignment: rebalances, pause/resume, seeks, asynchronous offset commits
 *   window.c      the messages in flight: taking, starting, waiting retries, reaping, abandoning
 *   outcome.c     deciding a finished message (routes, breaker, error rows) and reporting it
 *   commit.c      committing settled prefixes: clean ones asynchronously, routed ones in a
 *                 transaction with their retry/DLQ messages
 *   txn.c         the transactional producer: init, warm-up, the transaction, renewal
 *   txn_offsets.c the transaction's offsets, sent on a thread of their own
 *
 * One thread (the loop's) touches everything here; pool threads only run jobs, the prober
 * thread only reads the configuration and its own connections, and the offsets thread only
 * makes its one librdkafka call. */
#ifndef FQ_WORKER_INT_H
#define FQ_WORKER_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "fq_log.h"
#include "fq_backoff.h"
#include "fq_item.h"
#include "fq_kafka.h"
#include "fq_parts.h"
#include "fq_pool.h"
#include "fq_prober.h"
#include "fq_route.h"
#include "fq_store.h"
#include "fq_worker.h"

/* Circuit breaker: the same stage failing retriably for this many consecutive different items
 * within the window is a dependency outage, not bad luck of each item. */
#define BREAKER_K         5
#define BREAKER_WINDOW_MS 30000

/* An outage that the probes can see (database, frame store, Kafka) ends with the first probe
 * that passes; one they cannot see (a tripped breaker) waits OUTAGE_MIN_MS first; Kafka not
 * answering at start-up is retried from OUTAGE_MIN_MS up to OUTAGE_MAX_MS. */
#define OUTAGE_MIN_MS 1000
#define OUTAGE_MAX_MS 30000

#define POLL_MS      100 /* longest wait of one loop turn */
#define POLL_ROOM_MS 10  /* ... while the window has room for another message */

/* The transaction's commit and init_transactions are resumable: called a slice at a time (the
 * commit once per turn of the loop), so the loop never waits on Kafka for long. Sending the
 * offsets and aborting wait up to COMMIT_WAIT_MS. */
#define TXN_SLICE_MS   100
#define COMMIT_WAIT_MS 10000 /* a commit not answered by then is a Kafka outage */
#define RESEEK_MS      1000  /* a rewind that has not landed by then is issued again */
/* Retry messages not due yet are held in the window; a partition holding this many pauses until
 * the earliest of them is due (so a long backoff cannot fill memory). */
#define WAITING_MAX_PER_PARTITION 64
#define HELD_MAX                  8

/* One decision unit of a message: a batch entry, a retry item or the raw message. */
typedef struct entry {
    const fq_item_t *item; /* NULL: the raw message bytes (malformed) */
    bool keyed;            /* platform and code are valid: key, DB row */
    int attempt;
    const fq_error_t *err; /* the failure decided for it; NULL = success */
    fq_pool_job_t *job;    /* NULL when it did not run */
    fq_route_t route;
} entry_t;

typedef enum msg_state {
    MSG_WAITING = 0, /* a retry whose frameq-not-before is ahead: no job submitted yet */
    MSG_RUNNING,     /* items on the pool */
    MSG_DECIDED,     /* every item has an outcome, error rows recorded; committed with its prefix */
} msg_state_t;

/* A message in the window. */
typedef struct msg {
    rd_kafka_message_t *rkm;
    const char *topic;
    int32_t partition;
    int64_t offset;
    bool from_retry;
    msg_state_t state;
    bool abandoned; /* it will be read again (revoked or rewound): never committed or reported */
    bool settled;   /* durable and committed (or owed to the group): may be freed */
    bool in_txn;    /* in the transaction being committed: kept until its commit ends */
    int64_t not_before; /* retry: epoch ms */
    fq_batch_t *batch;
    fq_item_t item;
    bool have_item;
    fq_error_t *own_err; /* decode error of the message / retry item */
    entry_t *entries;
    size_t nentries;
    fq_pool_job_t *jobs;
    size_t njobs;
    size_t nrouted;         /* entries going to the retry topic or the DLQ */
    atomic_int cancel;      /* set by the loop, read by the pool threads */
    const char *cancel_why; /* for the log: "at shutdown", "with its revoked partition"... */
    int64_t t0;
} msg_t;

typedef enum fin_rc {
    FIN_OK = 0,
    FIN_REPLAY, /* rewound: the message will be consumed again */
    FIN_OUTAGE,
    FIN_FATAL,
    FIN_PENDING, /* the transaction's commit is on its way: resumed on the next turn */
} fin_rc_t;

typedef enum outage_kind {
    OUTAGE_PROBED = 0, /* a dependency the prober checks: over when a probe passes */
    OUTAGE_BREAKER,    /* items failing at one stage: over after a wait, if probes pass */
} outage_kind_t;

struct fq_worker {
    const fq_config_t *cfg;
    fq_worker_opts_t opts;
    fq_worker_hooks_t hooks;
    rd_kafka_t *rk;            /* consumer */
    rd_kafka_t *rkp;           /* transactional producer */
    fq_kafka_events_t cevents; /* the consumer's and the producer's error callbacks: */
    fq_kafka_events_t pevents; /* fatal errors, and w itself as .user */
    rd_kafka_queue_t *commitq; /* answers of asynchronous offset commits */
    rd_kafka_topic_t *rkt[2];  /* retry and DLQ topics on rkp (metadata kept warm) */
    fq_store_t *store;         /* the loop's connection (error rows) */
    fq_store_t *probe_store;   /* the prober thread's connection */
    fq_prober_t *prober;
    fq_kafka_watch_t kafka_watch;    /* the prober thread's, of rk's cluster */
    fq_kafka_watch_t producer_watch; /* the loop's, of rkp's (its transactional calls) */
    fq_pool_t *pool;
    fq_metrics_t *metrics;
    char txn_id[300];
    bool txn_ready;
    bool txn_dirty;                          /* an abort is still owed */
    struct fq_txn_offsets *txn_offsets_call; /* the open transaction's offsets on their way */
    /* The transaction whose commit is on its way (ntxn > 0): the loop resumes it each turn
     * rather than block on it, so heartbeats, rebalances and SIGTERM are served meanwhile. */
    msg_t **txn_msgs;
    size_t ntxn;
    rd_kafka_topic_partition_list_t *txn_offsets;
    int64_t txn_since;     /* monotonic ms of its first commit call */
    bool txn_slow;         /* it outlived COMMIT_WAIT_MS: logged, outage entered */
    int txn_timeout_ms;    /* the producer's transaction.timeout.ms */
    const char *renew_why; /* why the producer is replaced when librdkafka reports no fatal error */

    fq_parts_t parts;
    bool cooperative; /* the group's rebalance protocol, as last reported */
    /* The window: messages taken and not yet freed, in the order they were taken. */
    msg_t **win;
    size_t nwin, capwin;
    size_t items_unfinished; /* jobs submitted and not finished (abandoned ones too) */
    size_t win_bytes;        /* payload bytes of the window's messages */
    /* Taken while the window had no room, in the order taken; started as room comes. Every
     * partition pauses only when HELD_MAX wait: pausing and resuming for each message would
     * make librdkafka fetch again each time (a per-message stall on short items). */
    rd_kafka_message_t *held[HELD_MAX];
    size_t nheld;

    bool outage;
    outage_kind_t outage_kind;
    uint64_t outage_probe_seq; /* the prober's result count when the outage began */
    int64_t outage_wait_ms;
    int64_t outage_until; /* mono ms: not over before this */
    int64_t outage_ended; /* mono ms of the last outage's end; 0 = none */
    char outage_reason[512];
    uint64_t probe_seen; /* the prober's last result acted on */

    fq_breaker_t breaker;

    bool stopping;
    int64_t stop_deadline;       /* mono ms */
    int64_t drain_checked;       /* mono ms of the last group lag read (--once) */
    int64_t topic_missing_since; /* --once: mono ms since a topic of the role is unknown; 0 */
    bool topic_missing;          /* --once: it stayed unknown: exit FQ_EXIT_USAGE */
    long dlq_sent;
    bool fatal;
    int64_t txn_init_since, txn_init_next, txn_init_backoff; /* a renewed producer's init */
    bool txn_init_logged;
    int renewals;        /* producers replaced after fencing, since renew_since */
    int64_t renew_since; /* mono ms */
    uint64_t rng;
};

/* Metrics helpers (the registry is optional). */
#define M_ADD(w, ...)                                                                              \
    do {                                                                                           \
        if ((w)->metrics)                                                                          \
            fq_metrics_add((w)->metrics, __VA_ARGS__);                                             \
    } while (0)
#define M_SET(w, ...)                                                                              \
    do {                                                                                           \
        if ((w)->metrics)                                                                          \
            fq_metrics_set((w)->metrics, __VA_ARGS__);                                             \
    } while (0)
#define M_OBS(w, ...)                                                                              \
    do {                                                                                           \
        if ((w)->metrics)                                                                          \
            fq_metrics_observe((w)->metrics, __VA_ARGS__);                                         \
    } while (0)

/* worker.c */
void fq_w_set_ready(fq_worker_t *w, bool ready, const char *reason);
void fq_w_enter_outage(fq_worker_t *w, outage_kind_t kind, const char *reason);

/* partitions.c */
fq_part_t *fq_w_part(fq_worker_t *w, const char *topic, int32_t partition);
void fq_w_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                       rd_kafka_topic_partition_list_t *parts, void *opaque);
void fq_w_apply_pause(fq_worker_t *w);
void fq_w_seek(fq_worker_t *w, const char *topic, int32_t partition, int64_t offset);
void fq_w_rewind(fq_worker_t *w, const char *topic, int32_t partition, int64_t offset);
void fq_w_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                    rd_kafka_topic_partition_list_t *offsets, void *opaque);
void fq_w_commit_owed(fq_worker_t *w);
/* The loop is over: waits for the commits on their way, sends what is still owed without the
 * pace, and waits for its answer; wait_ms in all. */
void fq_w_commit_last(fq_worker_t *w, int wait_ms);
void fq_w_reseek_lost(fq_worker_t *w);
/** The partition has a message in the window (abandoned ones too) or held. */
bool fq_w_part_busy(const fq_worker_t *w, const char *topic, int32_t partition);

/* window.c */
void fq_w_take(fq_worker_t *w, rd_kafka_message_t *rkm);
bool fq_w_has_room(fq_worker_t *w);
void fq_w_job_started(void *ctx, const fq_pool_job_t *job);
void fq_w_start_held(fq_worker_t *w);
bool fq_w_held_in(const fq_worker_t *w, const char *topic, int32_t partition);
void fq_w_drop_held_of(fq_worker_t *w, const char *topic, int32_t partition, int64_t from);
void fq_w_start_due(fq_worker_t *w);
int64_t fq_w_next_due(const fq_worker_t *w); /* epoch ms of the earliest waiting retry; 0 none */
void fq_w_reap(fq_worker_t *w);
void fq_w_sweep(fq_worker_t *w);
/* Every message of the partition from offset `from` is read again; cancel_why non-NULL also
 * cancels their items (why, for the log), NULL lets them finish. */
void fq_w_abandon(fq_worker_t *w, const char *topic, int32_t partition, int64_t from,
                  const char *cancel_why);
void fq_w_drop_waiting(fq_worker_t *w);
void fq_w_drop_held(fq_worker_t *w, bool rewind);
void fq_w_cancel_running(fq_worker_t *w, const char *why);
size_t fq_w_running(const fq_worker_t *w); /* messages with jobs on the pool */
msg_t *fq_w_find(const fq_worker_t *w, const char *topic, int32_t partition, int64_t offset);
void fq_w_window_clear(fq_worker_t *w);

/* outcome.c */
fin_rc_t fq_w_decide(fq_worker_t *w, msg_t *m);
/* A cancelled message: where each unfinished item stopped, and that it is read again. */
void fq_w_log_cancelled(const msg_t *m);
void fq_w_report(fq_worker_t *w, const msg_t *m);
void fq_w_log_ctx(const msg_t *m, const entry_t *e, fq_log_ctx_t *ctx, char *key, size_t key_size);

/* commit.c */
/** Settles clean prefixes; with transactions, resumes the commit on its way or begins one for
 * the routed prefixes (the rebalance callback passes false: no transaction inside it). */
void fq_w_commit_settled(fq_worker_t *w, bool transactions);
/** The transaction on its way ended with rc: settle its prefixes or read them again. */
void fq_w_txn_end(fq_worker_t *w, fin_rc_t rc);
/** Forgets the transaction on its way without an outcome (shutdown). */
void fq_w_txn_forget(fq_worker_t *w);

/* txn.c */
rd_kafka_t *fq_w_new_producer(fq_worker_t *w, char *errstr, size_t errstr_size);
int fq_w_init_transactions(fq_worker_t *w) FQ_WARN_UNUSED;
void fq_w_warm_up_producer(fq_worker_t *w);
bool fq_w_renew_producer(fq_worker_t *w) FQ_WARN_UNUSED;
/** Begins, publishes and starts committing; FIN_PENDING: resume with fq_w_txn_resume. */
fin_rc_t fq_w_txn_commit(fq_worker_t *w, msg_t **msgs, size_t n,
                         const rd_kafka_topic_partition_list_t *offsets);
fin_rc_t fq_w_txn_resume(fq_worker_t *w);
/** A renewed producer's init_transactions, one slice per turn of the loop (none once ready). */
void fq_w_txn_init_step(fq_worker_t *w);
/** Sends the abort owed since a transactional call failed, if any (waits up to timeout_ms). */
void fq_w_txn_pay_abort(fq_worker_t *w, int timeout_ms);

/* txn_offsets.c: the open transaction's offsets, sent on a thread of their own (librdkafka
 * does not bound that call by its timeout while the group coordinator is away). */
typedef struct fq_txn_offsets fq_txn_offsets_t;
/** Starts sending offsets with the open transaction: NULL, or the error of a call that could
 *  not be started (or ran on this thread when no thread could be made). */
rd_kafka_error_t *
fq_w_txn_offsets_start(fq_worker_t *w,
                       const rd_kafka_topic_partition_list_t *offsets) FQ_WARN_UNUSED;
/** Waits up to timeout_ms for the call: true when it is over (or none runs), with its error in
 *  *error (the caller's); false while it goes on. */
bool fq_w_txn_offsets_wait(fq_worker_t *w, int timeout_ms, rd_kafka_error_t **error) FQ_WARN_UNUSED;
/** The call is still running: the producer must not be destroyed. */
bool fq_w_txn_offsets_busy(fq_worker_t *w);
/** Cleans up a call that is over (its error dropped with its transaction); a running one stays. */
void fq_w_txn_offsets_end(fq_worker_t *w);
/** At exit: waits up to wait_ms more for the call; one still running then keeps the producer
 *  (true: do not destroy it), one that is over is cleaned up (false). */
bool fq_w_txn_offsets_abandon(fq_worker_t *w, int wait_ms) FQ_WARN_UNUSED;

#endif
