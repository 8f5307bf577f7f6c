/* Internal to the producer's input: the spool of accepted items (a temporary file, one
 * "platform\tcode\turl" line each) and its dedupe set, used by input.c while it reads. */
#ifndef FQ_SPOOL_INT_H
#define FQ_SPOOL_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "fq_input.h"

/** An empty spool on a new temporary file; NULL with errno set. */
fq_spool_t *spool_new(void);
/** The dedupe key's 64-bit hash of an item. */
uint64_t spool_key_hash(const char *platform, const char *code);
/** Prefetches the dedupe set's slot for hash (its lookup is a likely cache miss). */
void spool_prefetch(const fq_spool_t *spool, uint64_t hash);
/** Appends item (hash from spool_key_hash); with dedupe, 1 when its key was already spooled
 *  (nothing written). 0, 1, or -1 on a write error or out of memory. */
int spool_add(fq_spool_t *spool, const fq_item_t *item, uint64_t hash, bool dedupe) FQ_WARN_UNUSED;
/** Frees the dedupe set: only needed while reading. */
void spool_drop_set(fq_spool_t *spool);

#endif /* FQ_SPOOL_INT_H */
