#include "fq_buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void fq_buf_reserve(fq_buf_t *buf, size_t extra)
{
    if (buf->oom || buf->len + extra + 1 <= buf->cap)
        return;
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap < buf->len + extra + 1)
        cap *= 2;
    char *data = realloc(buf->data, cap);
    if (!data) {
        buf->oom = true;
        return;
    }
    data[buf->len] = '\0'; /* NUL-terminated from the first allocation on */
    buf->data = data;
    buf->cap = cap;
}

void fq_buf_put(fq_buf_t *buf, const char *s, size_t n)
{
    fq_buf_reserve(buf, n);
    if (buf->oom)
        return;
    memcpy(buf->data + buf->len, s, n);
    buf->len += n;
    buf->data[buf->len] = '\0';
}

void fq_buf_puts(fq_buf_t *buf, const char *s)
{
    fq_buf_put(buf, s, strlen(s));
}

char *fq_buf_take(fq_buf_t *buf, size_t *len)
{
    fq_buf_reserve(buf, 0); /* "" for an empty buffer */
    char *data = buf->oom ? NULL : buf->data;
    if (buf->oom)
        free(buf->data);
    if (len)
        *len = data ? buf->len : 0;
    memset(buf, 0, sizeof(*buf));
    return data;
}

void *fq_grow(void *v, size_t *cap, size_t n, size_t elem, size_t first)
{
    if (n < *cap)
        return v;
    size_t want = *cap ? *cap : (first ? first : 1);
    if (*cap && want > SIZE_MAX / 2)
        return NULL;
    if (*cap)
        want *= 2;
    if (want > SIZE_MAX / elem)
        return NULL;
    void *grown = realloc(v, want * elem);
    if (!grown)
        return NULL;
    *cap = want;
    return grown;
}
