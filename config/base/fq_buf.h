/* A growable text buffer: appends never fail loudly; the first allocation failure marks the
 * buffer out of memory, later appends do nothing, and fq_buf_take reports it once. */
#ifndef FQ_BUF_H
#define FQ_BUF_H

#include <stdbool.h>
#include <stddef.h>

#include "fq_base.h"

/** Zero-initialise ({0}). data is NUL-terminated whenever it is not NULL. */
typedef struct fq_buf {
    char *data;
    size_t len, cap;
    bool oom; /**< an allocation failed: the content is incomplete */
} fq_buf_t;

/** @brief Makes room for extra more bytes (and the NUL) at once. */
void fq_buf_reserve(fq_buf_t *buf, size_t extra);

/** @brief Appends n bytes of s. */
void fq_buf_put(fq_buf_t *buf, const char *s, size_t n);

/** @brief Appends the string s. */
void fq_buf_puts(fq_buf_t *buf, const char *s);

/** @brief The content as a malloc'd NUL-terminated string ("" when nothing was appended),
 *  its length in *len (may be NULL); NULL when an allocation failed. The buffer is empty
 *  afterwards either way. */
char *fq_buf_take(fq_buf_t *buf, size_t *len) FQ_WARN_UNUSED;

/** @brief Room for one more element in a growable array v of *cap elements of elem bytes, n of
 *  them used: v itself while n < *cap, else v reallocated to twice *cap (first when *cap is 0)
 *  with *cap updated. NULL when that fails or would overflow; v and *cap are then untouched
 *  (still the caller's). New elements are not initialised. */
void *fq_grow(void *v, size_t *cap, size_t n, size_t elem, size_t first) FQ_WARN_UNUSED;

#endif
