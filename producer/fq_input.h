/* producer input: a JSON array or NDJSON of items, validated in one streaming pass and
 * spooled, deduplicated, to an anonymous temporary file so nothing is published before all
 * input was checked and memory stays flat (DESIGN §6).
 *
 * Memory: one record (at most FQ_INPUT_RECORD_MAX bytes) at a time, plus the dedupe set: a
 * 16-byte slot (64-bit key hash, spool offset) per distinct item at a load of 3/8..3/4, i.e.
 * 21-43 bytes an item (32 MiB for 1M distinct items); equal hashes are verified against the
 * spool, so a collision never drops an item. --allow-duplicates needs no set. Spool: one line
 * "platform\tcode\tvideo_url\n" per valid item in an unlinked temporary file (~30 bytes an
 * item), read back for publishing.
 */
#ifndef FQ_INPUT_H
#define FQ_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fq_http.h"
#include "fq_item.h"

#define FQ_INPUT_RECORD_MAX (1024 * 1024) /**< one item / NDJSON line, bytes */

typedef enum fq_input_format {
    FQ_INPUT_UNKNOWN = 0,
    FQ_INPUT_ARRAY,
    FQ_INPUT_NDJSON,
} fq_input_format_t;

typedef struct fq_input_stats {
    fq_input_format_t format;
    size_t records;      /**< items seen (valid + invalid + duplicates) */
    size_t valid;        /**< spooled */
    size_t invalid;      /**< reported through the callback */
    size_t duplicates;   /**< dropped (0 with allow_duplicates) */
    size_t refused_urls; /**< of the invalid: video_url refused by the allow-list */
    uint64_t bytes;      /**< input bytes read */
} fq_input_stats_t;

/** Called for each invalid item (and once for a fatal structural error, with index 0).
 *  where is "item 3 (line 4, column 2)" / "line 7" / "line 7, column 12"; why the reason. */
typedef void (*fq_input_report_fn)(void *opaque, const char *where, const char *why);

typedef struct fq_input_opts {
    bool allow_duplicates;
    fq_input_report_fn report; /**< may be NULL */
    void *opaque;
    /** optional: the source allow-list (fq_allow_from_config); a video_url it refuses makes
     *  the item invalid, reported with the reason like any other (DESIGN §2, §6) */
    const fq_allow_t *allow;
    /** optional: called every ~4096 records with the stats so far (progress line) */
    void (*progress)(void *opaque, const fq_input_stats_t *stats);
} fq_input_opts_t;

typedef struct fq_spool fq_spool_t;

/**
 * @brief Reads and validates all of in. Returns the spool of valid, distinct items (rewound,
 * ready for fq_spool_next) or NULL on a fatal error: I/O, empty input, or broken structure of
 * an array (which cannot be resynchronised); errstr then says where and why. Invalid items are
 * not fatal: they are reported and counted, and the caller decides (--skip-invalid).
 */
fq_spool_t *fq_input_read(FILE *in, const fq_input_opts_t *opts, fq_input_stats_t *stats,
                          char *errstr, size_t errstr_size) FQ_WARN_UNUSED;

/** @brief Next spooled item into *item (caller clears). 1, 0 at the end, -1 on I/O error. */
int fq_spool_next(fq_spool_t *spool, fq_item_t *item) FQ_WARN_UNUSED;

/** @brief Rewinds to the first item. 0 or -1. */
int fq_spool_rewind(fq_spool_t *spool) FQ_WARN_UNUSED;

/** @brief Items in the spool. */
size_t fq_spool_count(const fq_spool_t *spool);

/** @brief Closes and frees; the temporary file disappears. NULL-safe. */
void fq_spool_destroy(fq_spool_t *spool);

#endif
