/* frameq metrics registry and health state (see fq_metrics.h); metrics_http.c serves them.
 *
 * The registry is a sorted array of families, each a sorted array of series keyed by their
 * rendered label string, so lookups are binary searches and the exposition order does not
 * depend on which thread touched a series first. One mutex guards the registry and the
 * health state; the HTTP server thread only takes it while rendering or answering a probe.
 */
#include "fq_metrics.h"
#include "fq_metrics_http.h"

#include "fq_buf.h"
#include "fq_log.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS     8
#define MAX_LABELS_LEN 2048
#define MAX_SERIES     10000 /* per family: a cap on label cardinality mistakes */

static const double hist_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                     2.5,   5,    10,    30,   60,  120,  300};
#define N_BOUNDS (sizeof(hist_bounds) / sizeof(hist_bounds[0]))

typedef struct series {
    char *labels;               /* rendered `k="v",k2="v2"`, "" for none */
    double value;               /* counter / gauge value; histogram sum */
    uint64_t count;             /* histogram observations */
    uint64_t buckets[N_BOUNDS]; /* histogram, per bucket (made cumulative when rendered) */
} series_t;

typedef struct family {
    char *name;
    char *help;
    fq_metric_type_t type;
    series_t **series; /* sorted by labels */
    size_t n_series;
    size_t cap_series;
    bool warned; /* one warning per family for misuse, not one per call */
} family_t;

struct fq_metrics {
    pthread_mutex_t lock;
    family_t **families; /* sorted by name */
    size_t n_families;
    size_t cap_families;
    bool warned_unknown;

    bool beat_seen;
    int64_t last_beat_ms; /* monotonic */
    int64_t stale_ms;
    bool ready;
    char reason[256];

    fq_metrics_http_t *http; /* NULL until fq_metrics_serve */
};

/* ---- small helpers ------------------------------------------------------------------- */

/* Shortest text that reads back as the same double; integers without exponent, so the
 * exposition stays readable ("3", "0.25", "300") and exact for counters. */
static void fmt_double(char *buf, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(buf, size, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, size, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, size, "%.0f", v == 0 ? 0.0 : v); /* no "-0" */
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static bool valid_metric_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool valid_label_name(const char *s)
{
    if (!s || !*s || strncmp(s, "__", 2) == 0)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* Escapes v as the exposition format 0.0.4 wants it: backslash and newline always, the double
 * quote only in label values (quote true), not in HELP text. */
static void escape_text(fq_buf_t *sb, const char *v, bool quote)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            fq_buf_put(sb, "\\\\", 2);
        else if (*p == '"' && quote)
            fq_buf_put(sb, "\\\"", 2);
        else if (*p == '\n')
            fq_buf_put(sb, "\\n", 2);
        else
            fq_buf_put(sb, p, 1);
    }
}

/* Label values: backslash, double quote and newline are escaped. */
static void escape_label_value(fq_buf_t *sb, const char *v)
{
    escape_text(sb, v, true);
}

/* HELP text: only backslash and newline are escaped. */
static void escape_help(fq_buf_t *sb, const char *v)
{
    escape_text(sb, v, false);
}

/* Renders the NULL-terminated "k","v",... pairs as the series key, keys sorted so the same
 * labels given in another order reach the same series. Returns NULL (and nothing to free) on
 * a bad label set: odd count, bad or duplicate name, too many, too long, reserved "le". */
static char *labels_from_va(va_list ap, bool histogram)
{
    const char *keys[MAX_LABELS];
    const char *vals[MAX_LABELS];
    size_t n = 0;
    fq_buf_t sb = {0};

    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        if (!v || n == MAX_LABELS || !valid_label_name(k))
            return NULL;
        if (histogram && strcmp(k, "le") == 0)
            return NULL;
        /* insertion sort by key; duplicates are an error */
        size_t i = n;
        while (i > 0 && strcmp(keys[i - 1], k) > 0) {
            keys[i] = keys[i - 1];
            vals[i] = vals[i - 1];
            i--;
        }
        if (i > 0 && strcmp(keys[i - 1], k) == 0)
            return NULL;
        keys[i] = k;
        vals[i] = v;
        n++;
    }
    fq_buf_puts(&sb, ""); /* "" for the unlabelled series, never NULL */
    for (size_t i = 0; i < n; i++) {
        if (i)
            fq_buf_put(&sb, ",", 1);
        fq_buf_puts(&sb, keys[i]);
        fq_buf_put(&sb, "=\"", 2);
        escape_label_value(&sb, vals[i]);
        fq_buf_put(&sb, "\"", 1);
    }
    if (sb.len > MAX_LABELS_LEN) {
        free(sb.data);
        return NULL;
    }
    return fq_buf_take(&sb, NULL);
}

/* Binary search over n entries sorted by the string key_at(arr, i): the index of key, or of
 * where it would be inserted (then *found is false). */
static size_t sorted_search(const void *arr, size_t n, const char *(*key_at)(const void *, size_t),
                            const char *key, bool *found)
{
    size_t lo = 0, hi = n;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key_at(arr, mid), key);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const char *family_name_at(const void *arr, size_t i)
{
    return ((family_t *const *)arr)[i]->name;
}

static const char *series_labels_at(const void *arr, size_t i)
{
    return ((series_t *const *)arr)[i]->labels;
}

/* *pos receives the insertion point when not found. */
static family_t *find_family(const fq_metrics_t *metrics, const char *name, size_t *pos)
{
    bool found;
    size_t i = sorted_search(metrics->families, metrics->n_families, family_name_at, name, &found);
    if (pos)
        *pos = i;
    return found ? metrics->families[i] : NULL;
}

static series_t *find_series(const family_t *f, const char *labels, size_t *pos)
{
    bool found;
    size_t i = sorted_search(f->series, f->n_series, series_labels_at, labels, &found);
    if (pos)
        *pos = i;
    return found ? f->series[i] : NULL;
}

/* Finds or creates the series; takes ownership of labels either way. Lock held. */
static series_t *get_series(family_t *f, char *labels)
{
    size_t pos = 0;
    series_t *s = find_series(f, labels, &pos);
    if (s) {
        free(labels);
        return s;
    }
    if (f->n_series >= MAX_SERIES) {
        if (!f->warned)
            FQ_WARN(NULL, "metric %s: more than %d label sets, dropping new ones", f->name,
                    MAX_SERIES);
        f->warned = true;
        free(labels);
        return NULL;
    }
    series_t **arr = fq_grow(f->series, &f->cap_series, f->n_series, sizeof(*arr), 4);
    if (!arr) {
        free(labels);
        return NULL;
    }
    f->series = arr;
    s = calloc(1, sizeof(*s));
    if (!s) {
        free(labels);
        return NULL;
    }
    s->labels = labels;
    memmove(&f->series[pos + 1], &f->series[pos], (f->n_series - pos) * sizeof(*f->series));
    f->series[pos] = s;
    f->n_series++;
    return s;
}

typedef enum op { OP_ADD, OP_SET, OP_OBSERVE, OP_REMOVE } op_t;

static void update(fq_metrics_t *metrics, const char *name, op_t op, double v, va_list ap)
{
    if (!metrics || !name)
        return;
    pthread_mutex_lock(&metrics->lock);
    family_t *f = find_family(metrics, name, NULL);
    if (!f) {
        if (!metrics->warned_unknown)
            FQ_WARN(NULL, "metric %s used before fq_metrics_declare; ignored", name);
        metrics->warned_unknown = true;
        goto done;
    }
    bool ok = (op == OP_OBSERVE) == (f->type == FQ_METRIC_HISTOGRAM);
    if ((op == OP_SET || op == OP_REMOVE) && f->type != FQ_METRIC_GAUGE)
        ok = false;
    /* Counters only go up; a NaN would poison a series for good. */
    if (f->type == FQ_METRIC_COUNTER && !(v >= 0))
        ok = false;
    if (isnan(v))
        ok = false;
    char *labels = ok ? labels_from_va(ap, f->type == FQ_METRIC_HISTOGRAM) : NULL;
    if (!labels) {
        if (!f->warned)
            FQ_WARN(NULL, "metric %s: wrong operation, value or labels; ignored", name);
        f->warned = true;
        goto done;
    }
    if (op == OP_REMOVE) {
        size_t pos;
        series_t *gone = find_series(f, labels, &pos);
        free(labels);
        if (gone) {
            free(gone->labels);
            free(gone);
            memmove(&f->series[pos], &f->series[pos + 1],
                    (f->n_series - pos - 1) * sizeof(*f->series));
            f->n_series--;
        }
        goto done;
    }
    series_t *s = get_series(f, labels);
    if (!s)
        goto done;
    switch (op) {
    case OP_ADD:
        s->value += v;
        break;
    case OP_SET:
        s->value = v;
        break;
    case OP_REMOVE:
        break;
    case OP_OBSERVE:
        s->value += v;
        s->count++;
        for (size_t i = 0; i < N_BOUNDS; i++) {
            if (v <= hist_bounds[i]) {
                s->buckets[i]++;
                break;
            }
        }
        break;
    }
done:
    pthread_mutex_unlock(&metrics->lock);
}

/* ---- registry API -------------------------------------------------------------------- */

fq_metrics_t *fq_metrics_new(void)
{
    fq_metrics_t *metrics = calloc(1, sizeof(*metrics));
    if (!metrics)
        return NULL;
    if (pthread_mutex_init(&metrics->lock, NULL) != 0) {
        free(metrics);
        return NULL;
    }
    snprintf(metrics->reason, sizeof(metrics->reason), "starting");
    return metrics;
}

static void free_family(family_t *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_series; i++) {
        free(f->series[i]->labels);
        free(f->series[i]);
    }
    free(f->series);
    free(f->name);
    free(f->help);
    free(f);
}

int fq_metrics_declare(fq_metrics_t *metrics, const char *name, fq_metric_type_t type,
                       const char *help)
{
    if (!metrics || !valid_metric_name(name) || type < FQ_METRIC_COUNTER ||
        type > FQ_METRIC_HISTOGRAM)
        return -1;
    int rc = -1;
    family_t *f = NULL;
    pthread_mutex_lock(&metrics->lock);
    size_t pos = 0;
    family_t *old = find_family(metrics, name, &pos);
    if (old) {
        if (old->type != type)
            FQ_WARN(NULL, "metric %s declared again with another type; kept the first", name);
        rc = 0;
        goto done;
    }
    family_t **arr =
        fq_grow(metrics->families, &metrics->cap_families, metrics->n_families, sizeof(*arr), 16);
    if (!arr)
        goto done;
    metrics->families = arr;
    f = calloc(1, sizeof(*f));
    if (!f)
        goto done;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->type = type;
    if (!f->name || !f->help)
        goto done;
    memmove(&metrics->families[pos + 1], &metrics->families[pos],
            (metrics->n_families - pos) * sizeof(*metrics->families));
    metrics->families[pos] = f;
    metrics->n_families++;
    f = NULL; /* now owned by the registry */
    rc = 0;
done:
    pthread_mutex_unlock(&metrics->lock);
    free_family(f);
    return rc;
}

void fq_metrics_add(fq_metrics_t *metrics, const char *name, double v, ...)
{
    va_list ap;
    va_start(ap, v);
    update(metrics, name, OP_ADD, v, ap);
    va_end(ap);
}

void fq_metrics_set(fq_metrics_t *metrics, const char *name, double v, ...)
{
    va_list ap;
    va_start(ap, v);
    update(metrics, name, OP_SET, v, ap);
    va_end(ap);
}

void fq_metrics_observe(fq_metrics_t *metrics, const char *name, double seconds, ...)
{
    va_list ap;
    va_start(ap, seconds);
    update(metrics, name, OP_OBSERVE, seconds, ap);
    va_end(ap);
}

void fq_metrics_remove(fq_metrics_t *metrics, const char *name, ...)
{
    va_list ap;
    va_start(ap, name);
    update(metrics, name, OP_REMOVE, 0.0, ap);
    va_end(ap);
}

void fq_metrics_heartbeat(fq_metrics_t *metrics, int64_t stale_ms)
{
    if (!metrics)
        return;
    pthread_mutex_lock(&metrics->lock);
    metrics->beat_seen = true;
    metrics->last_beat_ms = fq_time_mono_ms();
    metrics->stale_ms = stale_ms;
    pthread_mutex_unlock(&metrics->lock);
}

void fq_metrics_set_ready(fq_metrics_t *metrics, bool ready, const char *reason)
{
    if (!metrics)
        return;
    pthread_mutex_lock(&metrics->lock);
    metrics->ready = ready;
    snprintf(metrics->reason, sizeof(metrics->reason), "%s",
             ready ? "" : (reason && *reason ? reason : "not ready"));
    pthread_mutex_unlock(&metrics->lock);
}

static void render_sample(fq_buf_t *sb, const char *name, const char *suffix, const char *labels,
                          const char *le, double v)
{
    char num[40];
    fq_buf_puts(sb, name);
    fq_buf_puts(sb, suffix);
    if (*labels || le) {
        fq_buf_put(sb, "{", 1);
        fq_buf_puts(sb, labels);
        if (le) {
            if (*labels)
                fq_buf_put(sb, ",", 1);
            fq_buf_put(sb, "le=\"", 4);
            fq_buf_puts(sb, le);
            fq_buf_put(sb, "\"", 1);
        }
        fq_buf_put(sb, "}", 1);
    }
    fmt_double(num, sizeof(num), v);
    fq_buf_put(sb, " ", 1);
    fq_buf_puts(sb, num);
    fq_buf_put(sb, "\n", 1);
}

char *fq_metrics_render(fq_metrics_t *metrics)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    if (!metrics)
        return NULL;
    fq_buf_t sb = {0};
    fq_buf_puts(&sb, "");
    pthread_mutex_lock(&metrics->lock);
    for (size_t i = 0; i < metrics->n_families; i++) {
        const family_t *f = metrics->families[i];
        if (*f->help) {
            fq_buf_puts(&sb, "# HELP ");
            fq_buf_puts(&sb, f->name);
            fq_buf_put(&sb, " ", 1);
            escape_help(&sb, f->help);
            fq_buf_put(&sb, "\n", 1);
        }
        fq_buf_puts(&sb, "# TYPE ");
        fq_buf_puts(&sb, f->name);
        fq_buf_put(&sb, " ", 1);
        fq_buf_puts(&sb, type_names[f->type]);
        fq_buf_put(&sb, "\n", 1);
        for (size_t j = 0; j < f->n_series; j++) {
            const series_t *s = f->series[j];
            if (f->type != FQ_METRIC_HISTOGRAM) {
                render_sample(&sb, f->name, "", s->labels, NULL, s->value);
                continue;
            }
            uint64_t cum = 0;
            for (size_t b = 0; b < N_BOUNDS; b++) {
                char le[40];
                cum += s->buckets[b];
                fmt_double(le, sizeof(le), hist_bounds[b]);
                render_sample(&sb, f->name, "_bucket", s->labels, le, (double)cum);
            }
            render_sample(&sb, f->name, "_bucket", s->labels, "+Inf", (double)s->count);
            render_sample(&sb, f->name, "_sum", s->labels, NULL, s->value);
            render_sample(&sb, f->name, "_count", s->labels, NULL, (double)s->count);
        }
    }
    pthread_mutex_unlock(&metrics->lock);
    return fq_buf_take(&sb, NULL);
}

bool fq_metrics_healthz(fq_metrics_t *metrics, char *body, size_t size)
{
    pthread_mutex_lock(&metrics->lock);
    bool fresh =
        metrics->beat_seen && fq_time_mono_ms() - metrics->last_beat_ms < metrics->stale_ms;
    pthread_mutex_unlock(&metrics->lock);
    snprintf(body, size, "%s\n", fresh ? "ok" : "stale");
    return fresh;
}

bool fq_metrics_readyz(fq_metrics_t *metrics, char *body, size_t size)
{
    pthread_mutex_lock(&metrics->lock);
    bool ready = metrics->ready;
    snprintf(body, size, "%s\n", ready ? "ready" : metrics->reason);
    pthread_mutex_unlock(&metrics->lock);
    return ready;
}

int fq_metrics_serve(fq_metrics_t *metrics, const char *addr, char *errstr, size_t errstr_size)
{
    if (!metrics) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: no registry");
        return -1;
    }
    if (!addr || !*addr || strcmp(addr, "off") == 0)
        return 0;
    if (metrics->http) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: already serving on port %d",
                 fq_metrics_http_port(metrics->http));
        return -1;
    }
    metrics->http = fq_metrics_http_start(metrics, addr, errstr, errstr_size);
    return metrics->http ? 0 : -1;
}

int fq_metrics_port(const fq_metrics_t *metrics)
{
    return metrics ? fq_metrics_http_port(metrics->http) : 0;
}

void fq_metrics_destroy(fq_metrics_t *metrics)
{
    if (!metrics)
        return;
    fq_metrics_http_stop(metrics->http); /* first: the server thread reads the registry */
    for (size_t i = 0; i < metrics->n_families; i++)
        free_family(metrics->families[i]);
    free(metrics->families);
    pthread_mutex_destroy(&metrics->lock);
    free(metrics);
}
