#include "fq_prober.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fq_log.h"

struct fq_prober {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    fq_probe_fn probe;
    void *ctx;
    int idle_ms, fast_ms;
    bool stop, hurry;
    fq_probe_result_t last;
};

static void *prober_thread(void *opaque)
{
    fq_prober_t *p = opaque;
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        p->hurry = false;
        pthread_mutex_unlock(&p->lock);

        int64_t t0 = fq_time_mono_ms();
        fq_error_t *err = p->probe(p->ctx);

        pthread_mutex_lock(&p->lock);
        bool was_ok = p->last.seq == 0 || p->last.ok;
        char was[sizeof(p->last.reason)];
        memcpy(was, p->last.reason, sizeof(was));
        p->last.seq++;
        p->last.at_mono = t0;
        p->last.ok = err == NULL;
        p->last.reason[0] = '\0';
        if (err)
            snprintf(p->last.reason, sizeof(p->last.reason), "%s", fq_error_message(err));
        if (err && was_ok)
            FQ_WARN(NULL, "dependency probe failed: %s", p->last.reason);
        else if (err && strcmp(was, p->last.reason) != 0) /* a new reason: say it once */
            FQ_WARN(NULL, "dependency probe still failing, now: %s", p->last.reason);
        else if (!err && !was_ok)
            FQ_INFO(NULL, "dependency probe passed again");
        fq_error_destroy(err);

        /* Fast while something is wrong, so readiness returns within fast_ms of recovery. */
        int wait_ms = p->last.ok ? p->idle_ms : p->fast_ms;
        struct timespec until = fq_time_mono_deadline(wait_ms);
        while (!p->stop && !p->hurry)
            if (pthread_cond_timedwait(&p->wake, &p->lock, &until) != 0)
                break;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

fq_prober_t *fq_prober_start(fq_probe_fn probe, void *ctx, int idle_ms, int fast_ms)
{
    fq_prober_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->probe = probe;
    p->ctx = ctx;
    p->idle_ms = idle_ms;
    p->fast_ms = fast_ms;
    if (fq_cond_init_mono(&p->wake) != 0) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    if (pthread_create(&p->thread, NULL, prober_thread, p) != 0) {
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    return p;
}

void fq_prober_hurry(fq_prober_t *p)
{
    pthread_mutex_lock(&p->lock);
    p->hurry = true;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

void fq_prober_result(fq_prober_t *p, fq_probe_result_t *out)
{
    pthread_mutex_lock(&p->lock);
    *out = p->last;
    pthread_mutex_unlock(&p->lock);
}

void fq_prober_stop(fq_prober_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
