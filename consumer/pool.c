#include "fq_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "fq_log.h"

struct fq_pool {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a job was submitted, or stop */
    pthread_cond_t done; /* a job finished */
    fq_pool_job_t *jobs;
    size_t count, next, finished;
    const atomic_int *cancel;
    bool stop;
    int nthreads, npipelines;
    pthread_t *threads;
    fq_pipeline_t **pipelines; /* one per thread, unless process is set */
    fq_cores_t *cores;         /* WORKER_CORES shared by the pipelines; NULL without cfg */
    fq_pool_process_fn process;
    void *process_ctx;
};

typedef struct thread_arg {
    fq_pool_t *pool;
    fq_pipeline_t *pl;
} thread_arg_t;

static void *pool_thread(void *opaque)
{
    thread_arg_t *arg = opaque;
    fq_pool_t *pool = arg->pool;
    fq_pipeline_t *pl = arg->pl;
    free(arg);

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->stop && pool->next >= pool->count)
            pthread_cond_wait(&pool->work, &pool->lock);
        if (pool->next >= pool->count) /* stop, and nothing queued */
            break;
        fq_pool_job_t *job = &pool->jobs[pool->next++];
        const atomic_int *cancel = pool->cancel;
        pthread_mutex_unlock(&pool->lock);

        int64_t t0 = fq_time_mono_ms();
        fq_outcome_t out = {0};
        fq_error_t *err =
            pool->process ? pool->process(pool->process_ctx, job->item, job->attempt, cancel, &out)
                          : fq_pipeline_process(pl, job->item, job->attempt, cancel, &out);
        double ms = (double)(fq_time_mono_ms() - t0);

        pthread_mutex_lock(&pool->lock);
        job->err = err;
        job->out = out;
        job->ms = ms;
        job->finished = true;
        pool->finished++;
        pthread_cond_broadcast(&pool->done);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

static fq_pool_t *pool_new(const fq_config_t *cfg, int threads, bool with_db,
                           fq_pool_process_fn process, void *process_ctx, char *errstr,
                           size_t errstr_size)
{
    if (threads < 1)
        threads = 1;
    fq_pool_t *pool = calloc(1, sizeof(*pool));
    if (!pool) {
        snprintf(errstr, errstr_size, "pool: out of memory");
        return NULL;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* a clock step must not stall the loop */
    pthread_cond_init(&pool->done, &attr);
    pthread_condattr_destroy(&attr);
    pool->process = process;
    pool->process_ctx = process_ctx;
    pool->threads = calloc((size_t)threads, sizeof(*pool->threads));
    pool->pipelines = calloc((size_t)threads, sizeof(*pool->pipelines));
    pool->npipelines = pool->pipelines ? threads : 0;
    if (!pool->threads || !pool->pipelines) {
        snprintf(errstr, errstr_size, "pool: out of memory");
        goto fail;
    }
    if (cfg && !(pool->cores = fq_cores_new(cfg->worker_cores))) {
        snprintf(errstr, errstr_size, "pool: out of memory");
        goto fail;
    }
    /* Build every pipeline first so a configuration error leaves no thread running. */
    for (int i = 0; i < threads && !process; i++) {
        pool->pipelines[i] = fq_pipeline_new(cfg, with_db, errstr, errstr_size);
        if (!pool->pipelines[i])
            goto fail;
        fq_pipeline_set_cores(pool->pipelines[i], pool->cores);
    }
    for (int i = 0; i < threads; i++) {
        thread_arg_t *arg = malloc(sizeof(*arg));
        if (!arg) {
            snprintf(errstr, errstr_size, "pool: out of memory");
            goto fail;
        }
        arg->pool = pool;
        arg->pl = pool->pipelines[i];
        int rc = pthread_create(&pool->threads[i], NULL, pool_thread, arg);
        if (rc) {
            free(arg);
            snprintf(errstr, errstr_size, "pool: pthread_create: %d", rc);
            goto fail;
        }
        pool->nthreads++;
    }
    return pool;

fail:
    fq_pool_destroy(pool);
    return NULL;
}

fq_pool_t *fq_pool_new(const fq_config_t *cfg, int threads, bool with_db, char *errstr,
                       size_t errstr_size)
{
    return pool_new(cfg, threads, with_db, NULL, NULL, errstr, errstr_size);
}

fq_pool_t *fq_pool_new_with(int threads, fq_pool_process_fn process, void *ctx, char *errstr,
                            size_t errstr_size)
{
    return pool_new(NULL, threads, false, process, ctx, errstr, errstr_size);
}

void fq_pool_destroy(fq_pool_t *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stop = true;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    for (int i = 0; pool->pipelines && i < pool->npipelines; i++)
        fq_pipeline_destroy(pool->pipelines[i]);
    fq_cores_destroy(pool->cores);
    free(pool->pipelines);
    free(pool->threads);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->work);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

void fq_pool_submit(fq_pool_t *pool, fq_pool_job_t *jobs, size_t n, const atomic_int *cancel)
{
    pthread_mutex_lock(&pool->lock);
    pool->jobs = jobs;
    pool->count = n;
    pool->next = 0;
    pool->finished = 0;
    pool->cancel = cancel;
    for (size_t i = 0; i < n; i++)
        jobs[i].finished = false;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
}

bool fq_pool_wait(fq_pool_t *pool, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the condition variable waits on this clock */
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&pool->lock);
    while (pool->finished < pool->count) {
        if (pthread_cond_timedwait(&pool->done, &pool->lock, &ts) == ETIMEDOUT)
            break;
    }
    bool all = pool->finished >= pool->count;
    pthread_mutex_unlock(&pool->lock);
    return all;
}

size_t fq_pool_pending(fq_pool_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    size_t n = pool->count - pool->finished;
    pthread_mutex_unlock(&pool->lock);
    return n;
}
