/* Frame extraction, fps mode with lent cores (frames_internal.h): the input is cut into chunks
 * at clean keyframes (IDR pictures of H.264 and HEVC not followed by leading pictures), where
 * decoding restarts with nothing carried over, and the chunks are decoded side by side.
 *
 * Frame threading spends about 8 % more CPU than one thread and still leaves cores idle while
 * a frame waits for its references; chunks decoded by single-threaded decoders cost what one
 * thread costs and keep every lent core busy. The item's own thread and one helper thread per
 * borrowed core take the next chunk in turn; each helper has its own extractor (demuxer over
 * the same fd, decoder, scaler, encoder). A chunk's frames are kept until every chunk before
 * it is out, and the item's thread hands them to the callback in order: the callback sees
 * the same frames, byte for byte, as from one decoder.
 *
 * A chunk starts at its keyframe K and ends before the next chunk's keyframe (by dts); its
 * targets run from bucket(K) up to the next chunk's first target: a target before K's bucket
 * shows a frame before K (the filter shows the last frame whose tick is <= the target), and
 * one from it on shows K or a later frame. Each chunk runs the ordinary fps planner.
 *
 * A helper takes no new chunk once another item waits for a core, and gives its core back:
 * the item's thread finishes what is left. Cores freed meanwhile (another item finished) start
 * more helpers, as the item's thread takes its next chunk.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fq_buf.h"
#include "fq_log.h"
#include "frames_internal.h"

#define SPLIT_MIN_MS       4000 /* shorter inputs decode whole */
#define SPLIT_MIN_CHUNK_MS 1000 /* keyframes nearer the last cut (by dts): passed over */
#define SPLIT_MAX_CHUNKS   64   /* a long input's chunks grow instead */

typedef struct kept_frame {
    int64_t pts_ms;
    int width, height;
    size_t off, size; /* in the chunk's jpeg buffer */
} kept_frame_t;

typedef struct chunk {
    /* where it is */
    int64_t seek_ts;             /* INT64_MIN: the start of the stream */
    int64_t start_dts;           /* of the keyframe that av_seek_frame(seek_ts) lands on */
    int64_t first_target;        /* bucket of that keyframe */
    int64_t end_dts, end_target; /* the next chunk's, INT64_MAX for the last */
    /* what came out */
    fq_buf_t jpeg;
    kept_frame_t *frames;
    size_t nframes, cap;
    fq_error_t *err;
    bool done, helped;
} chunk_t;

typedef struct split {
    run_t *r; /* the item's run: its thread hands the frames to its callback */
    chunk_t *chunks;
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int next;        /* the next chunk to take: those before it are taken */
    bool stop;       /* an error: take no more */
    int emitted;     /* chunks handed to the callback */
    fq_error_t *err; /* the first error in chunk order (the item's thread only) */
    /* helper threads, started by the item's thread only */
    struct helper *h; /* [max_helpers] */
    int max_helpers, started;
} split_t;

typedef struct helper {
    split_t *s;
    fq_frames_t *fx;
    pthread_t thread;
    run_t *w; /* its run: what it learned is added to the item's run after the join */
    fq_media_info_t info;
} helper_t;

static void borrow_helpers(split_t *s);

static void chunk_free(chunk_t *c)
{
    free(c->jpeg.data);
    free(c->frames);
    fq_error_destroy(c->err);
}

/* The callback a chunk's run hands its frames to: kept until the chunk's turn to go out. */
static fq_error_t *chunk_keep(void *opaque, const fq_frame_t *f)
{
    chunk_t *c = opaque;
    kept_frame_t *frames = fq_grow(c->frames, &c->cap, c->nframes, sizeof(*frames), 8);
    if (frames) {
        c->frames = frames;
        fq_buf_put(&c->jpeg, (const char *)f->jpeg, f->size);
    }
    if (!frames || c->jpeg.oom) {
        return fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_RETRIABLE, "out of memory");
    }
    c->frames[c->nframes++] = (kept_frame_t){
        .pts_ms = f->pts_ms,
        .width = f->width,
        .height = f->height,
        .off = c->jpeg.len - f->size,
        .size = f->size,
    };
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Where to cut                                                                             */

static bool can_split(const run_t *r)
{
    enum AVCodecID id = r->st->codecpar->codec_id;
    return r->extra_cores > 0 && (id == AV_CODEC_ID_H264 || id == AV_CODEC_ID_HEVC) &&
           r->container_ms >= SPLIT_MIN_MS && r->seek_ok &&
           avformat_index_get_entries_count(r->st) > 1;
}

/* k, just read by frames_reposition, is a keyframe from which decoding yields exactly the
 * frames shown at and after it: an IDR picture (nothing after it refers to anything before)
 * not followed by leading pictures (HEVC IDR_W_RADL may be: they come right after it in
 * decode order and show before it). */
static bool starts_clean(run_t *r, const AVPacket *k)
{
    if (!(k->flags & AV_PKT_FLAG_KEY) || !frames_packet_is_idr(r, k)) {
        return false;
    }
    const AVPacket *next = frames_lookahead(r, 1);
    return !next || (next->pts != AV_NOPTS_VALUE && next->pts > k->pts);
}

/* The chunks of r's input: one from the start, then one at every clean keyframe of the index
 * at least min_ms after the last cut whose first target lies after the last chunk's. Each
 * cut is tried (seek, read one packet) so that a chunk lands exactly where it was planned.
 * Leaves r at the start of the stream. The number of chunks (1: do not split), -1 on OOM. */
static int plan_chunks(run_t *r, chunk_t **out)
{
    int entries = avformat_index_get_entries_count(r->st);
    int64_t min_ms = r->container_ms / SPLIT_MAX_CHUNKS;
    if (min_ms < SPLIT_MIN_CHUNK_MS)
        min_ms = SPLIT_MIN_CHUNK_MS;
    size_t cap = 0;
    chunk_t *chunks = fq_grow(NULL, &cap, 0, sizeof(*chunks), 8);
    if (!chunks)
        return -1;
    chunks[0] = (chunk_t){.seek_ts = INT64_MIN, .start_dts = INT64_MIN};
    int n = 1;
    double last_cut_s = 0;
    /* a hostile index may list keyframes that are not there: the probes are bounded */
    int probes = 2 * SPLIT_MAX_CHUNKS;
    for (int i = 1; i < entries && n < SPLIT_MAX_CHUNKS && probes > 0; i++) {
        const AVIndexEntry *e = avformat_index_get_entry(r->st, i);
        if (!e || !(e->flags & AVINDEX_KEYFRAME) || e->timestamp == AV_NOPTS_VALUE ||
            (rel_seconds(r, e->timestamp) - last_cut_s) * 1000.0 < (double)min_ms) {
            continue;
        }
        /* copied: reading packets may add index entries, which moves them */
        int64_t ts = e->timestamp, entry_dts = e->timestamp;
        probes--;
        /* index entries hold dts; mov seeks by pts: a keyframe's pts lies its reorder delay
         * above its dts, so a seek to the dts lands one keyframe early. Try once more with
         * the delay of the keyframe landed on (a plausible one: under a second). */
        const AVPacket *k = frames_reposition(r, ts);
        double delay_s = k && k->pts != AV_NOPTS_VALUE && k->dts != AV_NOPTS_VALUE
                             ? ((double)k->pts - (double)k->dts) * r->tb
                             : 0;
        if (k && k->dts < entry_dts && delay_s > 0 && delay_s < 1.0 &&
            entry_dts < INT64_MAX - (k->pts - k->dts)) {
            ts = entry_dts + (k->pts - k->dts);
            k = frames_reposition(r, ts);
        }
        if (!k || k->pts == AV_NOPTS_VALUE || k->dts == AV_NOPTS_VALUE ||
            k->dts <= chunks[n - 1].start_dts || !starts_clean(r, k)) {
            continue;
        }
        int64_t first = bucket_of(r, rel_seconds(r, k->pts));
        if (first <= chunks[n - 1].first_target) {
            continue; /* no target of its own */
        }
        chunk_t *grown = fq_grow(chunks, &cap, (size_t)n, sizeof(*chunks), 8);
        if (!grown) {
            free(chunks);
            return -1;
        }
        chunks = grown;
        chunks[n - 1].end_dts = k->dts;
        chunks[n - 1].end_target = first;
        chunks[n++] = (chunk_t){.seek_ts = ts, .start_dts = k->dts, .first_target = first};
        last_cut_s = rel_seconds(r, k->pts);
    }
    chunks[n - 1].end_dts = INT64_MAX;
    chunks[n - 1].end_target = INT64_MAX;
    frames_reposition(r, INT64_MIN);
    *out = chunks;
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* Decoding chunks                                                                          */

/* Runs the fps planner over chunk c on w, its frames kept in c. */
static fq_error_t *run_chunk(run_t *w, chunk_t *c)
{
    /* the item's run hands the kept frames to its own callback later, counting them */
    fq_frame_cb_t cb = w->cb;
    void *opaque = w->opaque;
    int emitted = w->emitted;
    w->cb = chunk_keep;
    w->opaque = c;
    w->emitted = 0;
    w->next_target = c->first_target;
    w->end_target = c->end_target;
    w->end_dts = c->end_dts;
    w->have_held = false;
    av_frame_unref(w->fx->held);
    av_packet_unref(w->fx->jpeg);
    w->held_serial = w->jpeg_serial = -1;
    w->last_sent_dts = w->max_sent_dts = AV_NOPTS_VALUE;
    w->seek_retries = 0;
    w->packets_since_frame = 0;
    const AVPacket *k = frames_reposition(w, c->seek_ts);
    if (c->seek_ts != INT64_MIN && (!k || k->dts != c->start_dts)) {
        /* landed elsewhere than when planned: from the start, nothing before shown */
        FQ_DEBUG(NULL, "chunk at dts %lld: the seek landed elsewhere, decoding from the start",
                 (long long)c->start_dts);
        frames_reposition(w, INT64_MIN);
    }
    fq_error_t *err = frames_decode_fps(w);
    w->cb = cb;
    w->opaque = opaque;
    w->emitted = emitted;
    return err;
}

static fq_error_t *emit_chunk(split_t *s, chunk_t *c)
{
    for (size_t i = 0; i < c->nframes; i++) {
        const kept_frame_t *k = &c->frames[i];
        fq_frame_t out = {
            .pts_ms = k->pts_ms,
            .width = k->width,
            .height = k->height,
            .jpeg = (const uint8_t *)c->jpeg.data + k->off,
            .size = k->size,
        };
        fq_error_t *err = frames_deliver(s->r, &out);
        if (err) {
            return err;
        }
    }
    return NULL;
}

/* On the item's thread: hands over every chunk whose predecessors are out, waiting for the
 * ones taken and not done when wait is set. Stops at the first error in chunk order (kept in
 * s->err, the other threads told to stop): false then. */
static bool emit_ready(split_t *s, bool wait)
{
    while (!s->err) {
        pthread_mutex_lock(&s->mu);
        chunk_t *c = s->emitted < s->n ? &s->chunks[s->emitted] : NULL;
        while (wait && c && s->emitted < s->next && !c->done) {
            pthread_cond_wait(&s->cv, &s->mu);
        }
        bool ready = c && c->done;
        pthread_mutex_unlock(&s->mu);
        if (!ready) {
            return true;
        }
        s->err = c->err ? c->err : emit_chunk(s, c);
        c->err = NULL;
        free(c->jpeg.data);
        c->jpeg = (fq_buf_t){0};
        s->emitted++;
    }
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_mutex_unlock(&s->mu);
    return false;
}

/* Takes chunks until none is left (or, on a helper, until another item wants a core). */
static void take_chunks(split_t *s, run_t *w, bool helper)
{
    for (;;) {
        if (!helper) {
            borrow_helpers(s);
        }
        pthread_mutex_lock(&s->mu);
        bool quit = s->stop || s->next >= s->n || (helper && fq_cores_wanted(s->r->fx->cores));
        chunk_t *c = quit ? NULL : &s->chunks[s->next++];
        if (c) {
            c->helped = helper;
        }
        pthread_mutex_unlock(&s->mu);
        if (!c) {
            return;
        }
        fq_error_t *err = run_chunk(w, c);
        pthread_mutex_lock(&s->mu);
        c->err = err;
        c->done = true;
        s->stop = s->stop || err;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        if (!helper && !emit_ready(s, false)) {
            return;
        }
    }
}

static void *helper_main(void *opaque)
{
    helper_t *h = opaque;
    split_t *s = h->s;
    run_t *w = h->w = frames_run_new(h->fx, s->r->fd, chunk_keep, NULL, &h->info);
    if (w) {
        w->deadline_ms = s->r->deadline_ms;
        w->no_retune = true;
        fq_error_t *err = frames_open_input(w);
        if (err) {
            /* the item's thread opened the same input: only resources fail here, and it
             * takes the chunks this helper does not */
            FQ_DEBUG(NULL, "frame helper: %s", fq_error_message(err));
            fq_error_destroy(err);
        } else {
            take_chunks(s, w, true);
        }
    }
    fq_cores_release(s->r->fx->cores, 1);
    return NULL;
}

/* The extractor of helper i, made on first use: one decoder thread, no budget of its own. */
static fq_frames_t *helper_fx(fq_frames_t *fx, int i)
{
    if (!fx->helpers[i]) {
        fq_frames_opts_t o = fx->opts;
        o.threads = 1;
        fx->helpers[i] = fq_frames_new(&o);
    }
    if (fx->helpers[i]) {
        fx->helpers[i]->cancel = fx->cancel;
    }
    return fx->helpers[i];
}

/* Starts a helper thread for each of k cores borrowed; gives back those it cannot use. */
static void start_helpers(split_t *s, int k)
{
    for (int i = 0; i < k; i++) {
        helper_t *h = &s->h[s->started];
        *h = (helper_t){.s = s, .fx = helper_fx(s->r->fx, s->started)};
        if (!h->fx || pthread_create(&h->thread, NULL, helper_main, h)) {
            fq_cores_release(s->r->fx->cores, k - i); /* this thread does their share */
            return;
        }
        s->started++;
    }
}

/* On the item's thread, before it takes a chunk: cores freed since (another item finished)
 * start more helpers, while at least two chunks are left (one is this thread's). */
static void borrow_helpers(split_t *s)
{
    if (s->started >= s->max_helpers) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    int left = s->stop ? 0 : s->n - s->next;
    pthread_mutex_unlock(&s->mu);
    int want = s->max_helpers - s->started < left - 1 ? s->max_helpers - s->started : left - 1;
    if (want > 0) {
        start_helpers(s, fq_cores_borrow(s->r->fx->cores, want));
    }
}

/* What a helper's run learned, added to the item's run (for run_verdict); frees it. */
static void add_helper_run(run_t *r, run_t *w)
{
    if (!w) {
        return;
    }
    r->decoded += w->decoded;
    r->decode_errors += w->decode_errors;
    if (w->last_decode_error)
        r->last_decode_error = w->last_decode_error;
    if (w->read_error)
        r->read_error = w->read_error;
    if (w->io_errno)
        r->io_errno = w->io_errno;
    r->timed_out = r->timed_out || w->timed_out;
    r->cancelled = r->cancelled || w->cancelled;
    if (w->last_end_ms > r->last_end_ms)
        r->last_end_ms = w->last_end_ms;
    frames_run_free(w);
}

bool frames_decode_split(run_t *r, fq_error_t **err)
{
    *err = NULL;
    if (!can_split(r)) {
        return false;
    }
    chunk_t *chunks = NULL;
    int n = plan_chunks(r, &chunks);
    if (n <= 1) {
        free(chunks);
        return false;
    }
    /* one decoder thread here; the borrowed cores go to the helpers */
    int max_helpers = fq_cores_total(r->fx->cores) - 1;
    max_helpers = max_helpers < n - 1 ? max_helpers : n - 1;
    max_helpers = max_helpers < MAX_HELPERS ? max_helpers : MAX_HELPERS;
    int lent = r->extra_cores < max_helpers ? r->extra_cores : max_helpers;
    if ((*err = frames_open_decoder(r, r->dec->codec, 0))) {
        free(chunks);
        return true;
    }
    fq_cores_release(r->fx->cores, r->extra_cores - lent);
    r->extra_cores = 0;
    r->no_retune = true;

    helper_t h[MAX_HELPERS];
    split_t s = {.r = r, .chunks = chunks, .n = n, .h = h, .max_helpers = max_helpers};
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    start_helpers(&s, lent);
    take_chunks(&s, r, false);
    emit_ready(&s, true);
    *err = s.err;
    for (int i = 0; i < s.started; i++) {
        pthread_join(h[i].thread, NULL);
        add_helper_run(r, h[i].w);
    }
    r->info->chunks = n;
    r->info->chunk_helpers = s.started;
    for (int i = 0; i < n; i++) {
        r->info->chunks_helped += chunks[i].helped && chunks[i].done;
        chunk_free(&chunks[i]);
    }
    free(chunks);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    return true;
}

void frames_split_free(fq_frames_t *fx)
{
    for (int i = 0; i < MAX_HELPERS; i++) {
        fq_frames_destroy(fx->helpers[i]);
        fx->helpers[i] = NULL;
    }
}
