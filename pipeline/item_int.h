/* Internal to the item codec: what item.c shares with batch.c. */
#ifndef FQ_ITEM_INT_H
#define FQ_ITEM_INT_H

#include <stddef.h>

#include <jansson.h>

#include "fq_item.h"

/** Parses buf after the bounding pre-scan (size, depth, number of values); an error of stage
 *  is malformed. *out receives the value (caller decrefs). */
fq_error_t *item_parse_bounded(const void *buf, size_t len, fq_stage_t stage,
                               json_t **out) FQ_WARN_UNUSED;
/** Fills item from a JSON value, validating every field; prefix ("" or "items[3].") starts
 *  each message. */
fq_error_t *item_from_json(const json_t *obj, const char *prefix, fq_item_t *item) FQ_WARN_UNUSED;

#endif /* FQ_ITEM_INT_H */
