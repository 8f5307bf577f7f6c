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

#endif
