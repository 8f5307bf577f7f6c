/* The producer program's internals, shared by its command files: the parsed options, the
 * commands (enqueue.c, topics.c, dlq.c, redrive.c; their Kafka clients come from kafka/
 * fq_kafka.h) and the DLQ reader that dlq list and redrive share (dlq.c). main.c parses the
 * arguments and dispatches. Exit codes: 0 success, FQ_EXIT_DELIVERY (1) something was not
 * delivered / a Kafka operation failed, FQ_EXIT_USAGE (2) usage or input error. */
#ifndef FQ_CLI_H
#define FQ_CLI_H

#include <signal.h>
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

/** @brief enqueue: validate all input, then publish batch messages. Returns the exit code. */
int fq_cli_enqueue(const fq_config_t *cfg, const fq_cli_opts_t *o) FQ_WARN_UNUSED;

/** @brief topics create: the three topics through the admin API. Returns the exit code. */
int fq_cli_topics_create(const fq_config_t *cfg, const fq_cli_opts_t *o) FQ_WARN_UNUSED;

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

/** @brief Index of partition in r->parts, or -1. */
int fq_dlq_part_index(const fq_dlq_reader_t *r, int32_t partition);

/** @brief The DLQ table's header line and one row (dlq list, redrive --dry-run). */
void fq_dlq_table_header(void);
void fq_dlq_table_row(const fq_dlq_entry_t *e);

#endif
