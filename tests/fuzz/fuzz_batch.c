/* libFuzzer target: batch and item decoding must never crash, leak or accept an invalid item. */
#include <stdint.h>
#include <stdlib.h>

#include "fq_item.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fq_batch_t *batch = NULL;
    fq_error_t *err = fq_batch_decode(data, size, &batch);
    if (!err) {
        for (size_t i = 0; i < batch->count; i++) {
            const fq_batch_entry_t *e = &batch->entries[i];
            /* An entry without an error must be a fully valid item: anything else could
             * reach a URL, a key or SQL. */
            if (!e->err && (!fq_item_platform_valid(e->item.platform) ||
                            !fq_item_code_valid(e->item.code) || !e->item.json))
                abort();
        }
    }
    fq_error_destroy(err);
    fq_batch_destroy(batch);

    fq_item_t item = {0};
    err = fq_item_decode(data, size, &item);
    if (!err && (!fq_item_platform_valid(item.platform) || !fq_item_code_valid(item.code)))
        abort();
    fq_error_destroy(err);
    fq_item_clear(&item);
    return 0;
}
