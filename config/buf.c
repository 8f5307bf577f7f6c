/* Growable byte buffer (fq_buf.h). */
#include "fq_buf.h"

#include <stdlib.h>
#include <string.h>

void fq_buf_reserve(fq_buf_t *b, size_t extra)
{
    if (b->oom || b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->data = p;
    b->cap = cap;
}

void fq_buf_put(fq_buf_t *b, const char *s, size_t n)
{
    fq_buf_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void fq_buf_puts(fq_buf_t *b, const char *s)
{
    fq_buf_put(b, s, strlen(s));
}

char *fq_buf_take(fq_buf_t *b, size_t *len)
{
    if (!b->data)
        fq_buf_put(b, "", 0);
    if (b->oom) {
        free(b->data);
        *b = (fq_buf_t){0};
        return NULL;
    }
    char *out = b->data;
    if (len)
        *len = b->len;
    *b = (fq_buf_t){0};
    return out;
}
