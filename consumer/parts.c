#include "fq_parts.h"

#include "fq_buf.h"

#include <stdlib.h>
#include <string.h>

/* A failed commit is sent again after this long (it is usually a rebalance in progress). */
#define COMMIT_RETRY_MS 1000

fq_part_t *fq_parts_find(fq_parts_t *t, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].partition == partition && strcmp(t->v[i].topic, topic) == 0)
            return &t->v[i];
    return NULL;
}

fq_part_t *fq_parts_add(fq_parts_t *t, const char *topic, int32_t partition)
{
    fq_part_t *p = fq_parts_find(t, topic, partition);
    if (p)
        return p;
    fq_part_t *v = fq_grow(t->v, &t->cap, t->n, sizeof(*v), 16);
    if (!v)
        return NULL;
    t->v = v;
    char *name = strdup(topic);
    if (!name)
        return NULL;
    p = &t->v[t->n++];
    *p = (fq_part_t){
        .topic = name,
        .partition = partition,
        .next = -1,
        .expect = -1,
        .eof_at = -1,
        .want = -1,
        .committed = -1,
    };
    return p;
}

void fq_parts_remove(fq_parts_t *t, const char *topic, int32_t partition)
{
    fq_part_t *p = fq_parts_find(t, topic, partition);
    if (!p)
        return;
    free(p->topic);
    free(p->inflight);
    *p = t->v[--t->n];
}

void fq_parts_clear(fq_parts_t *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].topic);
        free(t->v[i].inflight);
    }
    free(t->v);
    memset(t, 0, sizeof(*t));
}

fq_take_t fq_part_take(fq_part_t *p, int64_t offset)
{
    if (p->expect >= 0) {
        if (offset != p->expect)
            return FQ_TAKE_STALE;
    } else if (p->next >= 0 && offset < p->next) {
        return FQ_TAKE_REPEAT;
    }
    int64_t *v = fq_grow(p->inflight, &p->capinflight, p->ninflight, sizeof(*v), 8);
    if (!v)
        return FQ_TAKE_NOMEM;
    p->inflight = v;
    /* Offsets are taken in ascending order (a rewind forgets everything above it), so an append
     * keeps the set sorted. */
    p->inflight[p->ninflight++] = offset;
    p->expect = -1;
    p->next = offset + 1;
    p->eof_at = -1;
    return FQ_TAKE;
}

void fq_part_rewind(fq_part_t *p, int64_t offset, int64_t now_mono)
{
    if (p->expect >= 0 && offset >= p->expect)
        return;
    while (p->ninflight > 0 && p->inflight[p->ninflight - 1] >= offset)
        p->ninflight--;
    p->expect = offset;
    p->next = offset;
    p->eof_at = -1;
    p->seek_mono = now_mono;
}

/* Where "want" may go: the lowest offset in flight, else past everything taken. */
static int64_t settled_prefix(const fq_part_t *p)
{
    return p->ninflight ? p->inflight[0] : p->next;
}

void fq_part_settle(fq_part_t *p, int64_t offset)
{
    size_t i = 0;
    while (i < p->ninflight && p->inflight[i] != offset)
        i++;
    if (i == p->ninflight)
        return;
    memmove(&p->inflight[i], &p->inflight[i + 1], (p->ninflight - i - 1) * sizeof(*p->inflight));
    p->ninflight--;
    int64_t prefix = settled_prefix(p);
    if (prefix > p->want)
        p->want = prefix;
}

int64_t fq_part_target_after(const fq_part_t *p, int64_t upto, bool idle)
{
    for (size_t i = 0; i < p->ninflight; i++)
        if (p->inflight[i] > upto)
            return p->inflight[i];
    int64_t target = p->next;
    if (idle && p->expect < 0 && p->eof_at > target)
        target = p->eof_at;
    return target;
}

void fq_part_eof(fq_part_t *p, int64_t offset)
{
    if (p->expect >= 0 || (p->next >= 0 && offset < p->next))
        return;
    p->eof_at = offset;
}

int64_t fq_part_final_target(const fq_part_t *p, bool idle)
{
    if (p->in_txn)
        return -1; /* the transaction commits its offset, or aborts and it is read again */
    int64_t target = p->want;
    /* The end offset only when every message taken is durable: one taken and not durable (in
     * flight, or abandoned when its partition was revoked) must be read again by someone. */
    if (idle && p->ninflight == 0 && p->expect < 0 && p->want >= p->next && p->eof_at > target)
        target = p->eof_at;
    return target > p->committed ? target : -1;
}

int64_t fq_part_commit_target(const fq_part_t *p, bool idle, int64_t now_mono)
{
    if (p->pending || now_mono < p->retry_mono || now_mono < p->pace_mono)
        return -1;
    return fq_part_final_target(p, idle);
}

void fq_part_committed(fq_part_t *p, int64_t offset, bool ok, int64_t now_mono)
{
    if (p->pending > 0)
        p->pending--;
    if (!ok) {
        p->retry_mono = now_mono + COMMIT_RETRY_MS;
        return;
    }
    if (offset > p->committed)
        p->committed = offset;
    p->pace_mono = now_mono + FQ_COMMIT_PACE_MS;
}
