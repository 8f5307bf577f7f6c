/* frameq job items and batches (DESIGN §2): the model and its JSON codec.
 *
 * Item:  {"platform":"instagram","code":"ABC123"} plus optional "video_url".
 * Batch: {"schema":"frameq.batch.v1","batch_id":"<uuid>","enqueued_at":"<RFC 3339>",
 *         "items":[ITEM,...]}
 *
 * Validation is strict and happens here, before a field can reach a URL, a key or SQL:
 * platform matches [a-z0-9_-]{1,32}, code matches [A-Za-z0-9_-]{1,128}, video_url (when
 * present) is a string of at most 2048 printable ASCII bytes (its scheme and host are checked
 * against the allow-list by fetch). Unknown item fields are ignored (forward compatibility).
 */
#ifndef FQ_ITEM_H
#define FQ_ITEM_H

#include <stdbool.h>
#include <stddef.h>

#include "fq_error.h"

#define FQ_PLATFORM_MAX    32
#define FQ_CODE_MAX        128
#define FQ_VIDEO_URL_MAX   2048
#define FQ_ITEM_KEY_MAX    (FQ_PLATFORM_MAX + 1 + FQ_CODE_MAX + 1) /**< "platform:code" + NUL */
#define FQ_BATCH_SCHEMA    "frameq.batch.v1"
#define FQ_BATCH_MAX_BYTES (8 * 1024 * 1024) /**< larger batch messages are malformed */
#define FQ_BATCH_MAX_ITEMS 10000             /**< a batch holds 1 to this many items */

typedef struct fq_item {
    char platform[FQ_PLATFORM_MAX + 1];
    char code[FQ_CODE_MAX + 1];
    char *video_url; /**< NULL when absent; owned */
    char *json;      /**< the item as received, compact JSON: the retry/DLQ value; owned */
} fq_item_t;

/** One entry of a decoded batch: a valid item, or the reason it is not. */
typedef struct fq_batch_entry {
    fq_item_t item;  /**< filled as far as it could be; item.json always set */
    fq_error_t *err; /**< NULL when valid; else stage validate, class permanent */
} fq_batch_entry_t;

typedef struct fq_batch {
    char batch_id[64];
    char enqueued_at[40];
    size_t count;
    fq_batch_entry_t *entries;
} fq_batch_t;

/** @brief Whether platform matches [a-z0-9_-]{1,32}. */
bool fq_item_platform_valid(const char *platform);
/** @brief Whether code matches [A-Za-z0-9_-]{1,128}. */
bool fq_item_code_valid(const char *code);

/**
 * @brief Decodes and validates one item (the value of a retry/DLQ message).
 * @return NULL and *item filled (caller frees with fq_item_clear), or an error of stage
 * validate: class malformed when the bytes are not a JSON object, permanent when a field is
 * wrong. The message names the field and why ("code: contains '/' at offset 3").
 */
fq_error_t *fq_item_decode(const void *buf, size_t len, fq_item_t *item) FQ_WARN_UNUSED;

/** @brief Validates an item built in memory (platform, code, video_url). NULL when valid. */
fq_error_t *fq_item_validate(const fq_item_t *item) FQ_WARN_UNUSED;

/** @brief Sets item->json to the compact JSON of the item's fields. 0, or -1 on OOM. */
int fq_item_encode(fq_item_t *item) FQ_WARN_UNUSED;

/** @brief Writes "platform:code" into key (FQ_ITEM_KEY_MAX bytes). */
void fq_item_key(const fq_item_t *item, char *key, size_t key_size);

/** @brief Deep copy of src into dst. 0, or -1 on OOM. */
int fq_item_copy(fq_item_t *dst, const fq_item_t *src) FQ_WARN_UNUSED;

/** @brief Frees what the item owns and zeroes it; NULL-safe. */
void fq_item_clear(fq_item_t *item);

/**
 * @brief Decodes a batch message. NULL with *batch set (entries may individually be invalid),
 * or an error of stage message, class malformed, when the message is not a batch at all
 * (DESIGN §2: not JSON, too large, too deep, missing or unknown schema, no items array, 0 or
 * more than FQ_BATCH_MAX_ITEMS items, a batch_id present but not a UUID, an enqueued_at present
 * but not an RFC 3339 time). Never aborts on hostile input.
 */
fq_error_t *fq_batch_decode(const void *buf, size_t len, fq_batch_t **batch) FQ_WARN_UNUSED;

/** @brief Frees a batch and its entries; NULL-safe. */
void fq_batch_destroy(fq_batch_t *batch);

/**
 * @brief Encodes a batch message of items[0..count) with the given id and time.
 * Items are written from their fields (platform, code, video_url). Returns malloc'd compact
 * JSON (caller frees) and its length in *len, or NULL on OOM.
 */
char *fq_batch_encode(const char *batch_id, const char *enqueued_at, const fq_item_t *items,
                      size_t count, size_t *len);

struct json_t;
/** @brief "object", "array", "string", "number", "boolean" or "null", for error messages. */
const char *fq_json_type_name(const struct json_t *v);

/** @brief True when s is an RFC 3339 date-time ("2026-01-01T00:00:00.123Z", "...+02:00"). */
bool fq_rfc3339_valid(const char *s);

/** @brief A random RFC 4122 version-4 UUID, 36 lowercase chars + NUL (libuuid). */
void fq_uuid4(char out[37]);

#endif
