#include "fq_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "fq_log.h"

struct fq_pool {
    pthread_mutex_t lock;
    pthread_cond_t work;        /* a job was queued, or stop */
    pthread_cond_t done;        /* a job finished */
    fq_pool_job_t *head, *tail; /* queued, not taken yet */
    size_t queued, running;
    uint64_t finished, seen; /* jobs finished in all; the count the last wait returned at */
    bool stop;
    int nthreads, npipelines;
    pthread_t *threads;
    fq_pipeline_t **pipelines; /* one per thread, unless process is set */
    fq_cores_t *cores;         /* WORKER_CORES shared by the pipelines; NULL without cfg */
    fq_pool_process_fn process;
    void *process_ctx;
    fq_pool_start_fn on_start;
    void *on_start_ctx;
};

typedef struct thread_arg {
    fq_pool_t *pool;
    fq_pipeline_t *pl;
} thread_arg_t;

static fq_error_t *run_job(fq_pool_t *pool, fq_pipeline_t *pl, fq_pool_job_t *job,
                           fq_outcome_t *out)
{
    if (job->cancel && atomic_load(job->cancel))
        return fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_RETRIABLE,
                            "cancelled before it started: the message will be read again");
    if (pool->on_start)
        pool->on_start(pool->on_start_ctx, job);
    if (pool->process)
        return pool->process(pool->process_ctx, job->item, job->attempt, job->cancel, out);
    return fq_pipeline_process(pl, job->item, job->attempt, job->cancel, out);
}

static void *pool_thread(void *opaque)
{
    thread_arg_t *arg = opaque;
    fq_pool_t *pool = arg->pool;
    fq_pipeline_t *pl = arg->pl;
    free(arg);

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->stop && !pool->head)
            pthread_cond_wait(&pool->work, &pool->lock);
        if (!pool->head) /* stop, and nothing queued */
            break;
        fq_pool_job_t *job = pool->head;
        pool->head = job->qnext;
        if (!pool->head)
            pool->tail = NULL;
        pool->queued--;
        pool->running++;
        pthread_mutex_unlock(&pool->lock);

        int64_t t0 = fq_time_mono_ms();
        job->started_mono = t0;
        fq_outcome_t out = {0};
        fq_error_t *err = run_job(pool, pl, job, &out);
        job->err = err;
        job->out = out;
        job->ms = (double)(fq_time_mono_ms() - t0);

        pthread_mutex_lock(&pool->lock);
        pool->running--;
        pool->finished++;
        atomic_store(&job->finished, true); /* after the results: the reader acquires it */
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
    if (fq_cond_init_mono(&pool->done) != 0) /* a clock step must not stall the loop */
        pthread_cond_init(&pool->done, NULL);
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

void fq_pool_on_start(fq_pool_t *pool, fq_pool_start_fn fn, void *ctx)
{
    pool->on_start = fn;
    pool->on_start_ctx = ctx;
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
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        atomic_init(&jobs[i].finished, false);
        jobs[i].cancel = cancel;
        jobs[i].qnext = i + 1 < n ? &jobs[i + 1] : NULL;
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->tail)
        pool->tail->qnext = &jobs[0];
    else
        pool->head = &jobs[0];
    pool->tail = &jobs[n - 1];
    pool->queued += n;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
}

bool fq_pool_wait(fq_pool_t *pool, int timeout_ms)
{
    struct timespec ts = fq_time_mono_deadline(timeout_ms); /* the condition variable's clock */
    pthread_mutex_lock(&pool->lock);
    while (pool->finished == pool->seen && timeout_ms > 0) {
        if (pthread_cond_timedwait(&pool->done, &pool->lock, &ts) == ETIMEDOUT)
            break;
    }
    bool any = pool->finished != pool->seen;
    pool->seen = pool->finished;
    pthread_mutex_unlock(&pool->lock);
    return any;
}

size_t fq_pool_pending(fq_pool_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    size_t n = pool->queued + pool->running;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

size_t fq_pool_queued(fq_pool_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    size_t n = pool->queued;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

int fq_pool_threads(const fq_pool_t *pool)
{
    return pool->nthreads;
}
