/* A growable byte buffer, always NUL-terminated once written to: the one used wherever frameq
 * builds text or collects a reply of unknown length. */
#ifndef FQ_BUF_H
#define FQ_BUF_H

#include <stdbool.h>
#include <stddef.h>

#include "fq_config.h" /* FQ_WARN_UNUSED */

typedef struct fq_buf {
    char *data; /**< NULL until the first write */
    size_t len, cap;
    bool oom; /**< a write failed for memory; later writes do nothing */
} fq_buf_t;

/** @brief Makes room for extra more bytes (and the NUL) ahead of the writes. */
void fq_buf_reserve(fq_buf_t *b, size_t extra);
/** @brief Appends s[0..n); on out-of-memory sets b->oom and keeps what was there. */
void fq_buf_put(fq_buf_t *b, const char *s, size_t n);
/** @brief Appends the string s. */
void fq_buf_puts(fq_buf_t *b, const char *s);
/** @brief Hands the text over (malloc'd, NUL-terminated; "" when nothing was written) and
 *  empties b; NULL (and b freed) after an out-of-memory. *len (when given) receives its
 *  length. */
char *fq_buf_take(fq_buf_t *b, size_t *len) FQ_WARN_UNUSED;

#endif /* FQ_BUF_H */
