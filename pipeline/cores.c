/* frameq core budget (fq_cores.h): counters under a mutex; acquirers wait on a condition
 * variable (CLOCK_MONOTONIC, so a clock step cannot stretch the cancel poll), borrowers
 * never wait. A core released while someone waits is reserved for the waiters: neither a
 * borrower nor a newcomer to acquire can take it first, so a waiting item is never starved by
 * the decoders it asked to give back. */
#include "fq_cores.h"
#include "fq_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct fq_cores {
    pthread_mutex_t lock;
    pthread_cond_t freed; /* a core was released */
    int total;
    int used;          /* held by acquire plus lent by borrow */
    int reserved;      /* released while someone waited, for the waiters only; used + reserved
                        * never exceeds total, reserved never exceeds waiting */
    int waiting;       /* threads waiting inside acquire */
    atomic_int wanted; /* waiting > 0, readable without the lock on the decoder's hot path */
};

fq_cores_t *fq_cores_new(int total)
{
    fq_cores_t *c = calloc(1, sizeof(*c));
    if (!c) {
        return NULL;
    }
    c->total = total > 0 ? total : 1;
    if (fq_cond_init_mono(&c->freed) != 0) {
        free(c);
        return NULL;
    }
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        pthread_cond_destroy(&c->freed);
        free(c);
        return NULL;
    }
    atomic_init(&c->wanted, 0);
    return c;
}

void fq_cores_destroy(fq_cores_t *c)
{
    if (!c) {
        return;
    }
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->freed);
    free(c);
}

int fq_cores_acquire(fq_cores_t *c, const atomic_int *cancel)
{
    if (!c) {
        return 0;
    }
    int rc = 0;
    pthread_mutex_lock(&c->lock);
    if (c->used + c->reserved < c->total) { /* the common case: a free core, nobody to ask */
        c->used++;
        pthread_mutex_unlock(&c->lock);
        return 0;
    }
    c->waiting++;
    atomic_store(&c->wanted, 1);
    while (c->reserved == 0) {
        if (cancel && atomic_load(cancel)) {
            rc = -1;
            break;
        }
        struct timespec until = fq_time_mono_deadline(FQ_CORES_POLL_MS);
        pthread_cond_timedwait(&c->freed, &c->lock, &until);
    }
    c->waiting--;
    if (rc == 0) {
        c->reserved--;
        c->used++;
    } else if (c->reserved > c->waiting) { /* one reserved for us: free again */
        c->reserved = c->waiting;
    }
    atomic_store(&c->wanted, c->waiting > 0);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void fq_cores_release(fq_cores_t *c, int n)
{
    if (!c || n <= 0) {
        return;
    }
    pthread_mutex_lock(&c->lock);
    if (n > c->used) { /* a caller's bookkeeping bug must not mint cores */
        n = c->used;
    }
    c->used -= n;
    int for_waiters = c->waiting - c->reserved;
    if (for_waiters > 0) {
        c->reserved += n < for_waiters ? n : for_waiters;
        pthread_cond_broadcast(&c->freed);
    }
    pthread_mutex_unlock(&c->lock);
}

int fq_cores_borrow(fq_cores_t *c, int max)
{
    if (!c || max <= 0) {
        return 0;
    }
    pthread_mutex_lock(&c->lock);
    /* Someone waits only when no core is free (freed ones are reserved for the waiters), so
     * what is free here is taken from nobody. */
    int n = c->total - c->used - c->reserved;
    if (n > max) {
        n = max;
    }
    if (n < 0) {
        n = 0;
    }
    c->used += n;
    pthread_mutex_unlock(&c->lock);
    return n;
}

bool fq_cores_wanted(fq_cores_t *c)
{
    return c && atomic_load(&c->wanted) != 0;
}

int fq_cores_total(const fq_cores_t *c)
{
    return c ? c->total : 1;
}

int fq_cores_in_use(fq_cores_t *c)
{
    if (!c) {
        return 0;
    }
    pthread_mutex_lock(&c->lock);
    int n = c->used + c->reserved;
    pthread_mutex_unlock(&c->lock);
    return n;
}
