/* The producer program's internals, shared by its command files: the parsed options, the
 * commands (enqueue.c, topics.c, dlq.c, redrive.c; their Kafka clients come from kafka/
 * fq_kafka.h) and the DLQ reader that dlq list and redrive share (dlq.c). main.c parses the
 * arguments and dispatches. Exit codes: 0 success, FQ_EXIT_DELIVERY (1) something was not
 * delivered / a Kafka operation failed, FQ_EXIT_USAGE (2) usage or input error. */
#ifndef FQ_CLI_H
#define FQ_CLI_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "fq_args.h"
#include "fq_config.h"
#include "fq_producer.h"

/** Exit codes: fq_args.h; "not delivered" is its FQ_EXIT_FAILED. */
#define FQ_EXIT_DELIVERY FQ_EXIT_FAILED

/** Set by SIGINT/SIGTERM (main.c); every command's loop polls it. */
extern volatile sig_atomic_t fq_cli_stop;

typedef enum fq_cli_command {
    FQ_CMD_ENQUEUE = 0,
    FQ_CMD_REDRIVE,
    FQ_CMD_DLQ_LIST,
    FQ_CMD_TOPICS_CREATE,
} fq_cli_command_t;

/** Every flag of every subcommand; parsing checks which ones apply. */
typedef struct fq_cli_opts {
    fq_cli_command_t cmd;
    const char *input;
    bool help, version, print_config;
    bool skip_invalid, allow_duplicates, dry_run, progress_forced, no_progress;
    int64_t timeout_ms;
    /* redrive */
    const char *group, *to;
    fq_dlq_filter_t filter;
    int64_t limit; /* -1 none */
    double rate;   /* 0 none */
    int64_t max_redrives;
    bool include_malformed, no_db;
    /* topics create */
    int partitions, retry_partitions, dlq_partitions, replication_factor;
    int64_t retention_ms, dlq_retention_ms;
} fq_cli_opts_t;

/** A progress line on stderr, redrawn in place ("\r\033[K") at most every 200 ms (progress.c).
 *  Messages printed with fq_cli_say() while it shows start on a line of their own. */
typedef struct fq_progress {
    bool on;
    atomic_bool shown; /**< a line without its newline is on stderr (erased from log threads) */
    int64_t t0;        /**< fq_time_mono_ms() at the start: rates and ETAs */
    int64_t last;      /**< when it was last drawn */
} fq_progress_t;

/** @brief Whether a command draws its progress line: --progress / --no-progress, else when
 *  stderr is a terminal and, for a command whose rows go to stdout (rows_on_stdout), stdout is
 *  not one (the rows are its progress there). */
bool fq_progress_wanted(const fq_cli_opts_t *o, bool rows_on_stdout);

/** @brief Starts a line (off: every call is a no-op); the clock of its rates starts now. */
void fq_progress_start(fq_progress_t *p, bool on);

/** @brief Draws the line, unless it shows and was drawn less than 200 ms ago; final: always,
 *  ending it with a newline. */
void fq_progress_draw(fq_progress_t *p, bool final, const char *fmt, ...) FQ_PRINTF(3, 4);

/** @brief Erases the line if it shows (what follows starts at the margin); the next draw
 *  shows it again. Log lines (fq_log) call it for the line in progress. */
void fq_progress_erase(fq_progress_t *p);

/** @brief Erases the line and ends it. */
void fq_progress_end(fq_progress_t *p);

/** @brief "producer: MESSAGE\n" on stderr, on a line of its own: a progress line that shows is
 *  erased first (and drawn again at its next turn). */
void fq_cli_say(const char *fmt, ...) FQ_PRINTF(1, 2);

/** @brief enqueue: validate all input, then publish batch messages. Returns the exit code. */
int fq_cli_enqueue(const fq_config_t *cfg, const fq_cli_opts_t *o) FQ_WARN_UNUSED;

/** @brief topics create: the three topics through the admin API. Returns the exit code. */
int fq_cli_topics_create(const fq_config_t *cfg, const fq_cli_opts_t *o) FQ_WARN_UNUSED;

/** @brief True, after saying so, when the cluster does not know topic (asked again for a
 *  moment: a topic just created): messages to it would wait until message.timeout.ms and
 *  fail as "timed out" (topics.c). */
bool fq_cli_topic_missing(rd_kafka_t *rk, const char *topic, const fq_cli_opts_t *o);

/** @brief dlq list: the whole DLQ as a table, then counts. Returns the exit code. */
int fq_cli_dlq_list(const fq_config_t *cfg, const fq_cli_opts_t *o) FQ_WARN_UNUSED;

/** @brief redrive: DLQ -> main or retry topic, transactional and resumable (contract in
 *  redrive.c). Returns the exit code. */
int fq_cli_redrive(const fq_config_t *cfg, const fq_cli_opts_t *o) FQ_WARN_UNUSED;

/** Reads every partition of the DLQ until EOF on all of them (dlq.c). */
typedef struct fq_dlq_reader {
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *parts;
    int nparts;
    bool *eof;
    int64_t *next; /**< next offset to commit per partition; -1 = untouched */
    /* How far it is (fq_dlq_measure, fq_dlq_progress), per partition: the offsets it started
     * at, has reached, and the ends (an end grows when the DLQ does while it reads). */
    int64_t *from, *pos, *end;
    bool measured;
    uint64_t nread; /**< messages returned by fq_dlq_next */
} fq_dlq_reader_t;

/** @brief Opens a reader for group: from the group's committed offsets (from_committed) or
 *  from the beginning. 0, or an exit code after printing why. */
int fq_dlq_open(const fq_config_t *cfg, const char *group, bool from_committed, int64_t timeout_ms,
                fq_dlq_reader_t *r) FQ_WARN_UNUSED;

/** @brief Closes the reader (without committing); safe on a zeroed or closed reader. */
void fq_dlq_close(fq_dlq_reader_t *r);

/** @brief Next DLQ message, or NULL at the end of every partition (*failed set on error,
 *  timeout or a stop request). */
rd_kafka_message_t *fq_dlq_next(fq_dlq_reader_t *r, int64_t timeout_ms,
                                bool *failed) FQ_WARN_UNUSED;

/** @brief Reads where each partition starts and ends (one request per partition) so that
 *  fq_dlq_progress can say how far the reader is; without it the line counts messages only.
 *  0, or -1 (not measured). */
int fq_dlq_measure(fq_dlq_reader_t *r, int64_t timeout_ms);

/** @brief Draws "WHAT: N% of the DLQ read, M messages, R messages/s, ETA T[, EXTRA]" on p
 *  (without the percentage and ETA when the reader was not measured). */
void fq_dlq_progress(const fq_dlq_reader_t *r, fq_progress_t *p, bool final, const char *what,
                     const char *extra);

/** @brief Index of partition in r->parts, or -1. */
int fq_dlq_part_index(const fq_dlq_reader_t *r, int32_t partition);

/** @brief The DLQ table's header line and one row (dlq list, redrive --dry-run). */
void fq_dlq_table_header(void);
void fq_dlq_table_row(const fq_dlq_entry_t *e);

#endif
