/* frameq store: PostgreSQL through libpq (DESIGN §4).
 *
 * Prepared statements only; no value is ever spliced into SQL. Every write is idempotent
 * (upserts; one extraction_errors row per (item_id, attempt)), so a replay after a crash
 * changes nothing that was already durable. A lost connection is re-established on the next
 * call; a database that cannot be reached gives an error of class outage, never an item
 * failure.
 */
#ifndef FQ_STORE_H
#define FQ_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fq_error.h"
#include "fq_frames.h"
#include "fq_item.h"
#include "fq_upload.h"

typedef struct fq_store fq_store_t;

/** Where a failed item was read from, for extraction_errors. */
typedef struct fq_store_origin {
    const char *worker;
    const char *topic; /**< NULL when not from Kafka (consumer --process) */
    int32_t partition;
    int64_t offset;
} fq_store_origin_t;

/** @brief A store for conninfo (libpq conninfo or URI). Does not connect yet. Not
 *  thread-safe: one per thread. */
fq_store_t *fq_store_new(const char *conninfo);
void fq_store_destroy(fq_store_t *store);

/** @brief Connects if needed and runs a trivial query. NULL, or an outage error. */
fq_error_t *fq_store_ping(fq_store_t *store) FQ_WARN_UNUSED;

/**
 * @brief Upserts the item as 'processing' with attempts = attempt (never lowering it), unless it
 * is already 'done': then *already_done is set and nothing changes. *item_id receives its id.
 */
fq_error_t *fq_store_begin_item(fq_store_t *store, const fq_item_t *item, int attempt,
                                int64_t *item_id, bool *already_done) FQ_WARN_UNUSED;

/** @brief In one transaction: the frames rows (upserted), the item's metadata, status 'done',
 *  done_at. */
fq_error_t *fq_store_mark_done(fq_store_t *store, int64_t item_id, const fq_media_info_t *info,
                               const fq_stored_frame_t *frames, size_t count) FQ_WARN_UNUSED;

/**
 * @brief Records a failure: upserts the item if it does not exist yet (a decode failure can
 * come before begin_item), inserts the extraction_errors row for (item, attempt) unless it
 * exists, sets status (retrying or dead), attempts and last_error. Idempotent.
 * An item already 'done' is left 'done'.
 */
fq_error_t *fq_store_record_error(fq_store_t *store, const fq_item_t *item, int attempt,
                                  const fq_error_t *err, const char *status,
                                  const fq_store_origin_t *origin) FQ_WARN_UNUSED;

/** @brief Sets an item's status (e.g. 'queued' on redrive), creating it if absent. */
fq_error_t *fq_store_set_status(fq_store_t *store, const char *platform, const char *code,
                                const char *status) FQ_WARN_UNUSED;

/**
 * @brief Applies the embedded migrations (fq_migrations.h) not yet applied, each in its own
 * transaction, recording versions in frameq_schema_migrations. A concurrent migrator waits on
 * an advisory lock. *applied receives how many ran (0 when already current).
 */
fq_error_t *fq_store_migrate(fq_store_t *store, int *applied) FQ_WARN_UNUSED;

/** @brief libpq's version as "15.4" (for the start-up log line). */
const char *fq_store_libpq_version(void);

#endif
