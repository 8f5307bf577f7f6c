/* The window: the messages a worker has taken and not yet freed. Several run at once — their
 * items share the pool's threads in the order taken — and finish in any order; the partition
 * table (parts.c) keeps the offsets in flight so that the committed offset never passes a
 * message without a durable outcome. A retry whose frameq-not-before is ahead waits here without
 * holding up the due ones behind it.
 *
 * Room: a message starts while the pool has fewer queued jobs than threads (so a thread that
 * frees up always finds work), fewer than MAX_INFLIGHT_ITEMS items are unfinished and the
 * window's payloads stay under MAX_INFLIGHT_BYTES. Messages taken without room are held (up to
 * HELD_MAX, then every partition pauses) and start in the order taken as room comes. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "fq_buf.h"
#include "fq_headers.h"
#include "fq_log.h"
#include "worker_int.h"

static void msg_destroy(msg_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->njobs; i++)
        fq_error_destroy(m->jobs[i].err);
    free(m->jobs);
    free(m->entries);
    fq_batch_destroy(m->batch);
    if (m->have_item)
        fq_item_clear(&m->item);
    fq_error_destroy(m->own_err);
    if (m->rkm)
        rd_kafka_message_destroy(m->rkm);
    free(m);
}

/* A job for each entry that runs; entries with an error of their own are decided already. */
static entry_t *add_entry(msg_t *m, const fq_item_t *item, int attempt, const fq_error_t *err)
{
    entry_t *e = &m->entries[m->nentries++];
    e->item = item;
    e->attempt = attempt;
    e->keyed = item && fq_item_platform_valid(item->platform) && fq_item_code_valid(item->code);
    e->err = err;
    if (item && !err) {
        e->job = &m->jobs[m->njobs++];
        e->job->item = item;
        e->job->attempt = attempt;
    }
    return e;
}

static int alloc_entries(msg_t *m, size_t n)
{
    m->entries = calloc(n ? n : 1, sizeof(*m->entries));
    m->jobs = calloc(n ? n : 1, sizeof(*m->jobs));
    return m->entries && m->jobs ? 0 : -1;
}

/* A retry message: one item, its attempt from the header; its due time. */
static int build_retry(msg_t *m, const void *payload)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m->rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    m->not_before = fq_headers_get_int(hdrs, FQ_HDR_NOT_BEFORE, 0);
    int attempt = (int)fq_headers_get_int(hdrs, FQ_HDR_ATTEMPT, 0) + 1;
    if (alloc_entries(m, 1))
        return -1;
    m->own_err = fq_item_decode(payload, m->rkm->len, &m->item);
    m->have_item = true;
    if (m->own_err && fq_error_class(m->own_err) == FQ_CLASS_MALFORMED)
        add_entry(m, NULL, attempt, m->own_err); /* raw bytes to the DLQ */
    else
        add_entry(m, &m->item, attempt, m->own_err);
    return 0;
}

/* A batch: one entry per item (invalid items decided at once), or the raw message when the
 * batch itself is malformed. */
static int build_batch(msg_t *m, const void *payload)
{
    fq_error_t *err = fq_batch_decode(payload, m->rkm->len, &m->batch);
    if (err) {
        m->own_err = err;
        if (alloc_entries(m, 1))
            return -1;
        add_entry(m, NULL, 1, err);
        return 0;
    }
    size_t n = m->batch->count;
    if (alloc_entries(m, n))
        return -1;
    for (size_t i = 0; i < n; i++)
        add_entry(m, &m->batch->entries[i].item, 1, m->batch->entries[i].err);
    return 0;
}

static msg_t *msg_new(fq_worker_t *w, rd_kafka_message_t *rkm)
{
    msg_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->rkm = rkm;
    m->topic = rd_kafka_topic_name(rkm->rkt);
    m->partition = rkm->partition;
    m->offset = rkm->offset;
    m->from_retry = strcmp(m->topic, w->cfg->kafka_retry_topic) == 0;
    m->t0 = fq_time_mono_ms();
    atomic_init(&m->cancel, 0);
    const void *payload = rkm->payload ? rkm->payload : "";
    if ((m->from_retry ? build_retry(m, payload) : build_batch(m, payload)) < 0) {
        m->rkm = NULL; /* the caller still owns it */
        msg_destroy(m);
        return NULL;
    }
    return m;
}

static int win_push(fq_worker_t *w, msg_t *m)
{
    msg_t **v = fq_grow(w->win, &w->capwin, w->nwin, sizeof(*v), 16);
    if (!v)
        return -1;
    w->win = v;
    w->win[w->nwin++] = m;
    w->win_bytes += m->rkm->len;
    return 0;
}

static void set_gauges(fq_worker_t *w)
{
    M_SET(w, "frameq_inflight_items", (double)w->items_unfinished, NULL);
    M_SET(w, "frameq_inflight_messages", (double)w->nwin, NULL);
}

static void submit(fq_worker_t *w, msg_t *m)
{
    m->state = MSG_RUNNING;
    for (size_t i = 0; i < m->njobs; i++)
        m->jobs[i].owner = m;
    FQ_DEBUG(NULL, "message %s [%d] @%" PRId64 " started: %zu item(s), %zu in the window", m->topic,
             (int)m->partition, m->offset, m->njobs, w->nwin);
    w->items_unfinished += m->njobs;
    fq_pool_submit(w->pool, m->jobs, m->njobs, &m->cancel);
    set_gauges(w);
}

/* The pool's start hook (a pool thread): when a retry really starts, how long after it was due
 * (the message's fields read here do not change while its job runs). */
void fq_w_job_started(void *ctx, const fq_pool_job_t *job)
{
    (void)ctx;
    const msg_t *m = job->owner;
    if (!m || !m->from_retry || job->attempt <= 1)
        return;
    char key[FQ_ITEM_KEY_MAX];
    fq_log_ctx_t lctx;
    fq_w_log_ctx(m, &m->entries[0], &lctx, key, sizeof(key));
    FQ_INFO(&lctx, "retry attempt started (not-before %" PRId64 ", %" PRId64 " ms after)",
            m->not_before, fq_time_now_ms() - m->not_before);
}

bool fq_w_has_room(fq_worker_t *w)
{
    return fq_pool_queued(w->pool) < (size_t)fq_pool_threads(w->pool) &&
           w->items_unfinished < (size_t)w->cfg->max_inflight_items &&
           (int64_t)w->win_bytes < w->cfg->max_inflight_bytes;
}

/* Retries waiting in the partition: at the cap it pauses until the earliest is due. */
static void limit_waiting(fq_worker_t *w, const char *topic, int32_t partition)
{
    size_t n = 0;
    int64_t earliest = 0;
    for (size_t i = 0; i < w->nwin; i++) {
        const msg_t *m = w->win[i];
        if (m->state != MSG_WAITING || m->abandoned || m->partition != partition ||
            strcmp(m->topic, topic) != 0)
            continue;
        n++;
        if (!earliest || m->not_before < earliest)
            earliest = m->not_before;
    }
    fq_part_t *p = fq_w_part(w, topic, partition);
    if (p && n >= WAITING_MAX_PER_PARTITION) {
        p->due_ms = earliest;
        FQ_DEBUG(NULL, "%s [%d]: %zu retries wait: paused until the earliest is due", topic,
                 (int)partition, n);
        fq_w_apply_pause(w);
    }
}

/* Starts a message the partition table took: runs it, or lets it wait for its due time. */
static void start(fq_worker_t *w, rd_kafka_message_t *rkm)
{
    msg_t *m = msg_new(w, rkm);
    if (!m || win_push(w, m) < 0) {
        FQ_ERROR(NULL, "out of memory: message %s [%d] @%" PRId64 " will be read again",
                 rd_kafka_topic_name(rkm->rkt), (int)rkm->partition, rkm->offset);
        fq_w_rewind(w, rd_kafka_topic_name(rkm->rkt), rkm->partition, rkm->offset);
        if (m)
            msg_destroy(m); /* destroys rkm */
        else
            rd_kafka_message_destroy(rkm);
        return;
    }
    if (m->from_retry && m->njobs && m->not_before > fq_time_now_ms()) {
        m->state = MSG_WAITING;
        FQ_DEBUG(NULL, "retry %s [%d] @%" PRId64 " due in %" PRId64 " ms: waiting", m->topic,
                 (int)m->partition, m->offset, m->not_before - fq_time_now_ms());
        set_gauges(w);
        limit_waiting(w, m->topic, m->partition);
        return;
    }
    submit(w, m);
}

void fq_w_take(fq_worker_t *w, rd_kafka_message_t *rkm)
{
    if (w->nheld >= HELD_MAX || w->stopping || w->outage || w->fatal) {
        /* Fetched before the pause took effect: give it back, it is not ours to run yet. */
        fq_w_rewind(w, rd_kafka_topic_name(rkm->rkt), rkm->partition, rkm->offset);
        rd_kafka_message_destroy(rkm);
        return;
    }
    if (w->nheld || !fq_w_has_room(w)) {
        /* Held, not started: its fetch is hidden behind the current work. */
        w->held[w->nheld++] = rkm;
        if (w->nheld == HELD_MAX)
            fq_w_apply_pause(w);
        return;
    }
    start(w, rkm);
}

void fq_w_start_held(fq_worker_t *w)
{
    bool was_full = w->nheld >= HELD_MAX;
    bool started = false;
    while (w->nheld && !w->outage && !w->stopping && !w->fatal && fq_w_has_room(w)) {
        rd_kafka_message_t *rkm = w->held[0]; /* off the list first: start may rewind */
        memmove(w->held, w->held + 1, (w->nheld - 1) * sizeof(*w->held));
        w->nheld--;
        start(w, rkm);
        started = true;
    }
    if (started && was_full)
        fq_w_apply_pause(w);
}

bool fq_w_held_in(const fq_worker_t *w, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < w->nheld; i++)
        if (w->held[i]->partition == partition &&
            strcmp(rd_kafka_topic_name(w->held[i]->rkt), topic) == 0)
            return true;
    return false;
}

/* Drops the held messages of the partition from offset from on (they will be read again). */
void fq_w_drop_held_of(fq_worker_t *w, const char *topic, int32_t partition, int64_t from)
{
    size_t k = 0;
    for (size_t i = 0; i < w->nheld; i++) {
        rd_kafka_message_t *rkm = w->held[i];
        if (rkm->partition == partition && rkm->offset >= from &&
            strcmp(rd_kafka_topic_name(rkm->rkt), topic) == 0)
            rd_kafka_message_destroy(rkm);
        else
            w->held[k++] = rkm;
    }
    w->nheld = k;
}

void fq_w_start_due(fq_worker_t *w)
{
    if (w->outage || w->stopping || w->fatal)
        return;
    int64_t now = fq_time_now_ms();
    for (size_t i = 0; i < w->nwin; i++) {
        msg_t *m = w->win[i];
        if (m->state == MSG_WAITING && !m->abandoned && m->not_before <= now)
            submit(w, m);
    }
}

int64_t fq_w_next_due(const fq_worker_t *w)
{
    int64_t due = 0;
    for (size_t i = 0; i < w->nwin; i++) {
        const msg_t *m = w->win[i];
        if (m->state == MSG_WAITING && !m->abandoned && (!due || m->not_before < due))
            due = m->not_before;
    }
    return due;
}

size_t fq_w_running(const fq_worker_t *w)
{
    size_t n = 0;
    for (size_t i = 0; i < w->nwin; i++)
        n += w->win[i]->state == MSG_RUNNING;
    return n;
}

msg_t *fq_w_find(const fq_worker_t *w, const char *topic, int32_t partition, int64_t offset)
{
    for (size_t i = 0; i < w->nwin; i++) {
        msg_t *m = w->win[i];
        if (!m->abandoned && m->offset == offset && m->partition == partition &&
            strcmp(m->topic, topic) == 0)
            return m;
    }
    return NULL;
}

/* Messages whose every job finished are decided, in the order they were taken; an outage or a
 * failed record rewinds the partition to the message. Counts the unfinished items on the way. */
void fq_w_reap(fq_worker_t *w)
{
    size_t unfinished = 0;
    for (size_t i = 0; i < w->nwin; i++) {
        msg_t *m = w->win[i];
        if (m->state != MSG_RUNNING)
            continue;
        size_t done = 0; /* jobs of one message finish in any order */
        for (size_t j = 0; j < m->njobs; j++)
            done += atomic_load(&m->jobs[j].finished);
        if (done < m->njobs) {
            unfinished += m->njobs - done;
            continue;
        }
        m->state = MSG_DECIDED;
        if (m->abandoned) {
            if (atomic_load(&m->cancel))
                fq_w_log_cancelled(m);
            continue; /* swept */
        }
        if (fq_w_decide(w, m) != FIN_OK) {
            /* an outage (decide entered it) or a cancel: the message is read again */
            fq_w_rewind(w, m->topic, m->partition, m->offset);
        }
    }
    w->items_unfinished = unfinished;
    set_gauges(w);
}

/* Frees messages that are settled, and abandoned ones whose jobs are over. */
void fq_w_sweep(fq_worker_t *w)
{
    size_t k = 0;
    for (size_t i = 0; i < w->nwin; i++) {
        msg_t *m = w->win[i];
        bool gone = !m->in_txn && (m->settled || (m->abandoned && m->state != MSG_RUNNING));
        if (!gone) {
            w->win[k++] = m;
            continue;
        }
        w->win_bytes -= m->rkm->len;
        msg_destroy(m);
    }
    w->nwin = k;
    set_gauges(w);
}

/* The first reason stays: it is what stopped the items. */
static void cancel(msg_t *m, const char *why)
{
    if (!m->cancel_why)
        m->cancel_why = why;
    atomic_store(&m->cancel, 1);
}

void fq_w_abandon(fq_worker_t *w, const char *topic, int32_t partition, int64_t from,
                  const char *cancel_why)
{
    for (size_t i = 0; i < w->nwin; i++) {
        msg_t *m = w->win[i];
        if (m->offset < from || m->partition != partition || strcmp(m->topic, topic) != 0)
            continue;
        m->abandoned = true;
        if (cancel_why)
            cancel(m, cancel_why);
    }
    fq_w_drop_held_of(w, topic, partition, from);
}

/* Shutdown: retries not due are left for whoever reads the partition next (their offsets stay
 * in flight, so nothing is committed past them). */
void fq_w_drop_waiting(fq_worker_t *w)
{
    for (size_t i = 0; i < w->nwin; i++)
        if (w->win[i]->state == MSG_WAITING)
            w->win[i]->abandoned = true;
}

void fq_w_drop_held(fq_worker_t *w, bool rewind)
{
    /* In the order taken: the first rewind of a partition is its lowest offset. */
    for (size_t i = 0; i < w->nheld; i++) {
        rd_kafka_message_t *rkm = w->held[i];
        if (rewind)
            fq_w_rewind(w, rd_kafka_topic_name(rkm->rkt), rkm->partition, rkm->offset);
        rd_kafka_message_destroy(rkm);
    }
    w->nheld = 0;
}

void fq_w_cancel_running(fq_worker_t *w, const char *why)
{
    for (size_t i = 0; i < w->nwin; i++)
        if (w->win[i]->state == MSG_RUNNING)
            cancel(w->win[i], why);
}

void fq_w_window_clear(fq_worker_t *w)
{
    for (size_t i = 0; i < w->nwin; i++)
        msg_destroy(w->win[i]);
    free(w->win);
    w->win = NULL;
    w->nwin = w->capwin = 0;
    w->win_bytes = 0;
    fq_w_drop_held(w, false);
}
