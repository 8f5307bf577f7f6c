/* frameq metrics registry and health endpoint (see fq_metrics.h).
 *
 * The registry is a sorted array of families, each a sorted array of series keyed by their
 * rendered label string, so lookups are binary searches and the exposition order does not
 * depend on which thread touched a series first. One mutex guards the registry and the
 * health state; the HTTP server thread only takes it while rendering or answering a probe.
 *
 * The server is deliberately small: non-blocking sockets driven by one poll(2) loop, one
 * request per connection (HTTP/1.0 style, the answer closes the connection), a per-connection
 * deadline so a client that connects and sends nothing only holds its own slot.
 */
#include "fq_metrics.h"

#include "fq_log.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LABELS        8
#define MAX_LABELS_LEN    2048
#define MAX_SERIES        10000 /* per family: a cap on label cardinality mistakes */
#define MAX_CONNS         32
#define REQ_MAX           4096 /* request line + headers; probes and scrapers send < 1 KiB */
#define READ_TIMEOUT_MS   3000
#define WRITE_TIMEOUT_MS  10000
#define POLL_MAX_MS       1000
#define ACCEPT_BACKOFF_MS 100

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

typedef struct conn {
    int fd; /* -1 = free slot */
    int64_t deadline_ms;
    char req[REQ_MAX];
    size_t req_len;
    char *resp; /* non-NULL once the answer is ready: the connection is writing */
    size_t resp_len;
    size_t resp_off;
} conn_t;

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

    /* Server: set up by fq_metrics_serve before the thread starts, then owned by it. */
    bool serving;
    int port;
    int listen_fd;
    int wake_rd;
    int wake_wr;
    pthread_t thread;
    conn_t *conns;
};

/* ---- small helpers ------------------------------------------------------------------- */

typedef struct sbuf {
    char *buf;
    size_t len;
    size_t cap;
    bool oom;
} sbuf_t;

static void sb_put(sbuf_t *sb, const char *s, size_t n)
{
    if (sb->oom)
        return;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 1024;
        while (sb->len + n + 1 > cap)
            cap *= 2;
        char *buf = realloc(sb->buf, cap);
        if (!buf) {
            sb->oom = true;
            return;
        }
        sb->buf = buf;
        sb->cap = cap;
    }
    memcpy(sb->buf + sb->len, s, n);
    sb->len += n;
    sb->buf[sb->len] = '\0';
}

static void sb_puts(sbuf_t *sb, const char *s)
{
    sb_put(sb, s, strlen(s));
}

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

/* Label values: backslash, double quote and newline are escaped (exposition format 0.0.4). */
static void escape_label_value(sbuf_t *sb, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            sb_put(sb, "\\\\", 2);
        else if (*p == '"')
            sb_put(sb, "\\\"", 2);
        else if (*p == '\n')
            sb_put(sb, "\\n", 2);
        else
            sb_put(sb, p, 1);
    }
}

/* HELP text: only backslash and newline are escaped. */
static void escape_help(sbuf_t *sb, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            sb_put(sb, "\\\\", 2);
        else if (*p == '\n')
            sb_put(sb, "\\n", 2);
        else
            sb_put(sb, p, 1);
    }
}

/* Renders the NULL-terminated "k","v",... pairs as the series key, keys sorted so the same
 * labels given in another order reach the same series. Returns NULL (and nothing to free) on
 * a bad label set: odd count, bad or duplicate name, too many, too long, reserved "le". */
static char *labels_from_va(va_list ap, bool histogram)
{
    const char *keys[MAX_LABELS];
    const char *vals[MAX_LABELS];
    size_t n = 0;
    sbuf_t sb = {0};

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
    sb_puts(&sb, ""); /* "" for the unlabelled series, never NULL */
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_put(&sb, ",", 1);
        sb_puts(&sb, keys[i]);
        sb_put(&sb, "=\"", 2);
        escape_label_value(&sb, vals[i]);
        sb_put(&sb, "\"", 1);
    }
    if (sb.oom || sb.len > MAX_LABELS_LEN) {
        free(sb.buf);
        return NULL;
    }
    return sb.buf;
}

/* Binary search; *pos receives the insertion point when not found. */
static family_t *find_family(const fq_metrics_t *m, const char *name, size_t *pos)
{
    size_t lo = 0, hi = m->n_families;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->families[mid]->name, name);
        if (c == 0)
            return m->families[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos)
        *pos = lo;
    return NULL;
}

static series_t *find_series(const family_t *f, const char *labels, size_t *pos)
{
    size_t lo = 0, hi = f->n_series;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->series[mid]->labels, labels);
        if (c == 0)
            return f->series[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos)
        *pos = lo;
    return NULL;
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
    if (f->n_series == f->cap_series) {
        size_t cap = f->cap_series ? f->cap_series * 2 : 4;
        series_t **arr = realloc(f->series, cap * sizeof(*arr));
        if (!arr) {
            free(labels);
            return NULL;
        }
        f->series = arr;
        f->cap_series = cap;
    }
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

typedef enum op { OP_ADD, OP_SET, OP_OBSERVE } op_t;

static void update(fq_metrics_t *m, const char *name, op_t op, double v, va_list ap)
{
    if (!m || !name)
        return;
    pthread_mutex_lock(&m->lock);
    family_t *f = find_family(m, name, NULL);
    if (!f) {
        if (!m->warned_unknown)
            FQ_WARN(NULL, "metric %s used before fq_metrics_declare; ignored", name);
        m->warned_unknown = true;
        goto done;
    }
    bool ok = (op == OP_OBSERVE) == (f->type == FQ_METRIC_HISTOGRAM);
    if (op == OP_SET && f->type != FQ_METRIC_GAUGE)
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
    pthread_mutex_unlock(&m->lock);
}

/* ---- registry API -------------------------------------------------------------------- */

fq_metrics_t *fq_metrics_new(void)
{
    fq_metrics_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    m->listen_fd = m->wake_rd = m->wake_wr = -1;
    snprintf(m->reason, sizeof(m->reason), "starting");
    return m;
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

int fq_metrics_declare(fq_metrics_t *m, const char *name, fq_metric_type_t type, const char *help)
{
    if (!m || !valid_metric_name(name) || type < FQ_METRIC_COUNTER || type > FQ_METRIC_HISTOGRAM)
        return -1;
    int rc = -1;
    family_t *f = NULL;
    pthread_mutex_lock(&m->lock);
    size_t pos = 0;
    family_t *old = find_family(m, name, &pos);
    if (old) {
        if (old->type != type)
            FQ_WARN(NULL, "metric %s declared again with another type; kept the first", name);
        rc = 0;
        goto done;
    }
    if (m->n_families == m->cap_families) {
        size_t cap = m->cap_families ? m->cap_families * 2 : 16;
        family_t **arr = realloc(m->families, cap * sizeof(*arr));
        if (!arr)
            goto done;
        m->families = arr;
        m->cap_families = cap;
    }
    f = calloc(1, sizeof(*f));
    if (!f)
        goto done;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->type = type;
    if (!f->name || !f->help)
        goto done;
    memmove(&m->families[pos + 1], &m->families[pos], (m->n_families - pos) * sizeof(*m->families));
    m->families[pos] = f;
    m->n_families++;
    f = NULL; /* now owned by the registry */
    rc = 0;
done:
    pthread_mutex_unlock(&m->lock);
    free_family(f);
    return rc;
}

void fq_metrics_add(fq_metrics_t *m, const char *name, double v, ...)
{
    va_list ap;
    va_start(ap, v);
    update(m, name, OP_ADD, v, ap);
    va_end(ap);
}

void fq_metrics_set(fq_metrics_t *m, const char *name, double v, ...)
{
    va_list ap;
    va_start(ap, v);
    update(m, name, OP_SET, v, ap);
    va_end(ap);
}

void fq_metrics_observe(fq_metrics_t *m, const char *name, double seconds, ...)
{
    va_list ap;
    va_start(ap, seconds);
    update(m, name, OP_OBSERVE, seconds, ap);
    va_end(ap);
}

void fq_metrics_heartbeat(fq_metrics_t *m, int64_t stale_ms)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->beat_seen = true;
    m->last_beat_ms = fq_time_mono_ms();
    m->stale_ms = stale_ms;
    pthread_mutex_unlock(&m->lock);
}

void fq_metrics_set_ready(fq_metrics_t *m, bool ready, const char *reason)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->ready = ready;
    snprintf(m->reason, sizeof(m->reason), "%s",
             ready ? "" : (reason && *reason ? reason : "not ready"));
    pthread_mutex_unlock(&m->lock);
}

static void render_sample(sbuf_t *sb, const char *name, const char *suffix, const char *labels,
                          const char *le, double v)
{
    char num[40];
    sb_puts(sb, name);
    sb_puts(sb, suffix);
    if (*labels || le) {
        sb_put(sb, "{", 1);
        sb_puts(sb, labels);
        if (le) {
            if (*labels)
                sb_put(sb, ",", 1);
            sb_put(sb, "le=\"", 4);
            sb_puts(sb, le);
            sb_put(sb, "\"", 1);
        }
        sb_put(sb, "}", 1);
    }
    fmt_double(num, sizeof(num), v);
    sb_put(sb, " ", 1);
    sb_puts(sb, num);
    sb_put(sb, "\n", 1);
}

char *fq_metrics_render(fq_metrics_t *m)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    if (!m)
        return NULL;
    sbuf_t sb = {0};
    sb_puts(&sb, "");
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_families; i++) {
        const family_t *f = m->families[i];
        if (*f->help) {
            sb_puts(&sb, "# HELP ");
            sb_puts(&sb, f->name);
            sb_put(&sb, " ", 1);
            escape_help(&sb, f->help);
            sb_put(&sb, "\n", 1);
        }
        sb_puts(&sb, "# TYPE ");
        sb_puts(&sb, f->name);
        sb_put(&sb, " ", 1);
        sb_puts(&sb, type_names[f->type]);
        sb_put(&sb, "\n", 1);
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
    pthread_mutex_unlock(&m->lock);
    if (sb.oom) {
        free(sb.buf);
        return NULL;
    }
    return sb.buf;
}

/* ---- HTTP server --------------------------------------------------------------------- */

static void conn_close(conn_t *c)
{
    if (c->fd >= 0) {
        /* Signal EOF, then drop whatever the client sent beyond the request: closing with
         * unread bytes makes the kernel send a reset, which can destroy the answer in
         * flight. The socket is non-blocking, so this never waits. */
        shutdown(c->fd, SHUT_WR);
        char sink[512];
        for (int i = 0; i < 8 && recv(c->fd, sink, sizeof(sink), 0) > 0; i++)
            ;
        close(c->fd);
    }
    free(c->resp);
    c->fd = -1;
    c->resp = NULL;
    c->req_len = c->resp_len = c->resp_off = 0;
}

static void conn_respond(conn_t *c, int status, const char *content_type, const char *body,
                         const char *extra_headers)
{
    const char *text = "OK";
    switch (status) {
    case 400:
        text = "Bad Request";
        break;
    case 404:
        text = "Not Found";
        break;
    case 405:
        text = "Method Not Allowed";
        break;
    case 408:
        text = "Request Timeout";
        break;
    case 431:
        text = "Request Header Fields Too Large";
        break;
    case 500:
        text = "Internal Server Error";
        break;
    case 503:
        text = "Service Unavailable";
        break;
    }
    sbuf_t sb = {0};
    char head[512];
    size_t body_len = strlen(body);
    snprintf(head, sizeof(head),
             "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
             "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
             status, text, content_type, body_len, extra_headers ? extra_headers : "");
    sb_puts(&sb, head);
    sb_put(&sb, body, body_len);
    if (sb.oom) {
        free(sb.buf);
        conn_close(c);
        return;
    }
    c->resp = sb.buf;
    c->resp_len = sb.len;
    c->resp_off = 0;
    c->deadline_ms = fq_time_mono_ms() + WRITE_TIMEOUT_MS;
}

static void conn_respond_text(conn_t *c, int status, const char *body)
{
    conn_respond(c, status, "text/plain; charset=utf-8", body, NULL);
}

/* Answers the request line in c->req (request complete or the client stopped sending). */
static void conn_handle(fq_metrics_t *m, conn_t *c)
{
    char line[512];
    size_t n = strcspn(c->req, "\r\n");
    if (n >= sizeof(line)) {
        conn_respond_text(c, 400, "bad request\n");
        return;
    }
    memcpy(line, c->req, n);
    line[n] = '\0';
    char *save = NULL;
    char *method = strtok_r(line, " ", &save);
    char *target = strtok_r(NULL, " ", &save);
    if (!method || !target || target[0] != '/') {
        conn_respond_text(c, 400, "bad request\n");
        return;
    }
    if (strcmp(method, "GET") != 0) {
        conn_respond(c, 405, "text/plain; charset=utf-8", "method not allowed\n", "Allow: GET\r\n");
        return;
    }
    target[strcspn(target, "?#")] = '\0';

    if (strcmp(target, "/metrics") == 0) {
        char *text = fq_metrics_render(m);
        if (!text) {
            conn_respond_text(c, 500, "out of memory\n");
            return;
        }
        conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, NULL);
        free(text);
    } else if (strcmp(target, "/healthz") == 0) {
        pthread_mutex_lock(&m->lock);
        bool fresh = m->beat_seen && fq_time_mono_ms() - m->last_beat_ms < m->stale_ms;
        pthread_mutex_unlock(&m->lock);
        conn_respond_text(c, fresh ? 200 : 503, fresh ? "ok\n" : "stale\n");
    } else if (strcmp(target, "/readyz") == 0) {
        char body[sizeof(m->reason) + 2];
        pthread_mutex_lock(&m->lock);
        bool ready = m->ready;
        snprintf(body, sizeof(body), "%s\n", ready ? "ready" : m->reason);
        pthread_mutex_unlock(&m->lock);
        conn_respond_text(c, ready ? 200 : 503, body);
    } else {
        conn_respond_text(c, 404, "not found\n");
    }
}

static bool request_complete(const conn_t *c)
{
    return memmem(c->req, c->req_len, "\r\n\r\n", 4) || memmem(c->req, c->req_len, "\n\n", 2);
}

static void conn_read(fq_metrics_t *m, conn_t *c)
{
    for (;;) {
        size_t room = sizeof(c->req) - 1 - c->req_len;
        if (room == 0) {
            conn_respond_text(c, 431, "request too large\n");
            return;
        }
        ssize_t r = recv(c->fd, c->req + c->req_len, room, 0);
        if (r > 0) {
            c->req_len += (size_t)r;
            c->req[c->req_len] = '\0';
            if (request_complete(c)) {
                conn_handle(m, c);
                return;
            }
            continue;
        }
        if (r == 0) {
            /* Half-closed: answer what we have if a request line arrived, else drop. */
            if (memchr(c->req, '\n', c->req_len))
                conn_handle(m, c);
            else
                conn_close(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_close(c);
        return;
    }
}

static void conn_write(conn_t *c)
{
    while (c->resp_off < c->resp_len) {
        ssize_t w = send(c->fd, c->resp + c->resp_off, c->resp_len - c->resp_off, MSG_NOSIGNAL);
        if (w > 0) {
            c->resp_off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break; /* peer gone */
    }
    conn_close(c);
}

static void accept_all(fq_metrics_t *m, int64_t now, int64_t *accept_pause_until)
{
    for (;;) {
        conn_t *c = NULL;
        for (int i = 0; i < MAX_CONNS && !c; i++)
            if (m->conns[i].fd < 0)
                c = &m->conns[i];
        if (!c)
            return; /* full: the rest waits in the backlog */
        int fd = accept4(m->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                FQ_WARN(NULL, "metrics: accept: %s", strerror(errno));
                *accept_pause_until = now + ACCEPT_BACKOFF_MS; /* do not spin */
            }
            return;
        }
        c->fd = fd;
        c->req_len = 0;
        c->req[0] = '\0';
        c->deadline_ms = now + READ_TIMEOUT_MS;
    }
}

static void *server_main(void *arg)
{
    fq_metrics_t *m = arg;
    struct pollfd pfds[MAX_CONNS + 2];
    int owner[MAX_CONNS + 2]; /* pfds index -> conns index, -1 for our own fds */
    int64_t accept_pause_until = 0;

    for (;;) {
        int64_t now = fq_time_mono_ms();
        int64_t next = now + POLL_MAX_MS;
        nfds_t n = 0;
        int active = 0;

        pfds[n] = (struct pollfd){.fd = m->wake_rd, .events = POLLIN};
        owner[n++] = -1;
        for (int i = 0; i < MAX_CONNS; i++) {
            conn_t *c = &m->conns[i];
            if (c->fd < 0)
                continue;
            if (now >= c->deadline_ms) {
                if (c->resp) {
                    conn_close(c); /* the client stopped reading */
                    continue;
                }
                conn_respond_text(c, 408, "request timeout\n");
                if (c->fd < 0)
                    continue;
            }
            active++;
            if (c->deadline_ms < next)
                next = c->deadline_ms;
            pfds[n] = (struct pollfd){.fd = c->fd, .events = c->resp ? POLLOUT : POLLIN};
            owner[n++] = i;
        }
        if (active < MAX_CONNS && now >= accept_pause_until) {
            pfds[n] = (struct pollfd){.fd = m->listen_fd, .events = POLLIN};
            owner[n++] = -1;
        } else if (now < accept_pause_until && accept_pause_until < next) {
            next = accept_pause_until;
        }

        int rc = poll(pfds, n, (int)(next > now ? next - now : 0));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            FQ_ERROR(NULL, "metrics: poll: %s; server stopped", strerror(errno));
            break;
        }
        if (pfds[0].revents)
            break; /* fq_metrics_destroy */
        now = fq_time_mono_ms();
        for (nfds_t i = 1; i < n; i++) {
            if (!pfds[i].revents)
                continue;
            if (owner[i] < 0) {
                accept_all(m, now, &accept_pause_until);
                continue;
            }
            conn_t *c = &m->conns[owner[i]];
            if (!c->resp)
                conn_read(m, c);
            else if (pfds[i].revents & (POLLERR | POLLHUP | POLLNVAL))
                conn_close(c);
            /* The answer is usually small enough to go out at once, no extra poll round. */
            if (c->fd >= 0 && c->resp)
                conn_write(c);
        }
    }
    for (int i = 0; i < MAX_CONNS; i++)
        conn_close(&m->conns[i]);
    return NULL;
}

/* Splits "host:port" / "[v6]:port"; an empty host or "*" means every interface. */
static int parse_addr(const char *addr, char *host, size_t host_size, char *port, size_t port_size)
{
    const char *colon;
    const char *h = addr;
    size_t hlen;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return -1;
        h = addr + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - addr);
    }
    if (hlen >= host_size)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        snprintf(host, host_size, "0.0.0.0");
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end || errno || p < 0 || p > 65535)
        return -1;
    snprintf(port, port_size, "%ld", p);
    return 0;
}

int fq_metrics_serve(fq_metrics_t *m, const char *addr, char *errstr, size_t errstr_size)
{
    char host[256], port[16];
    struct addrinfo hints = {0}, *res = NULL;
    int fd = -1;
    int pipefd[2] = {-1, -1};
    int rc = -1;

    if (!m) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: no registry");
        return -1;
    }
    if (!addr || !*addr || strcmp(addr, "off") == 0)
        return 0;
    if (m->serving) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: already serving on port %d", m->port);
        return -1;
    }
    if (parse_addr(addr, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: \"%s\" is not host:port (port 0..65535)",
                 addr);
        return -1;
    }
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: %s: %s", addr, gai_strerror(gai));
        goto done;
    }
    int last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        /* A restarted pod must be able to bind again while old connections sit in TIME_WAIT. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
            break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: %s: %s", addr, strerror(last_errno));
        goto done;
    }
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: getsockname: %s", strerror(errno));
        goto done;
    }
    int bound = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (pipe2(pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: pipe: %s", strerror(errno));
        goto done;
    }
    if (!m->conns) {
        m->conns = calloc(MAX_CONNS, sizeof(*m->conns));
        if (!m->conns) {
            snprintf(errstr, errstr_size, "METRICS_ADDR: out of memory");
            goto done;
        }
        for (int i = 0; i < MAX_CONNS; i++)
            m->conns[i].fd = -1;
    }
    m->listen_fd = fd;
    m->wake_rd = pipefd[0];
    m->wake_wr = pipefd[1];
    m->port = bound;

    /* Signals belong to the main thread (it sets the shutdown flag); the server thread
     * inherits a fully blocked mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&m->thread, NULL, server_main, m);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: pthread_create: %s", strerror(err));
        m->listen_fd = m->wake_rd = m->wake_wr = -1;
        m->port = 0;
        goto done;
    }
    m->serving = true;
    fd = pipefd[0] = pipefd[1] = -1; /* now owned by the server */
    FQ_INFO(NULL, "metrics: serving /metrics /healthz /readyz on %s (port %d)", addr, bound);
    rc = 0;
done:
    if (res)
        freeaddrinfo(res);
    if (fd >= 0)
        close(fd);
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    return rc;
}

int fq_metrics_port(const fq_metrics_t *m)
{
    return m && m->serving ? m->port : 0;
}

void fq_metrics_destroy(fq_metrics_t *m)
{
    if (!m)
        return;
    if (m->serving) {
        ssize_t w;
        do {
            w = write(m->wake_wr, "x", 1);
        } while (w < 0 && errno == EINTR);
        pthread_join(m->thread, NULL);
        close(m->listen_fd);
        close(m->wake_rd);
        close(m->wake_wr);
        m->serving = false;
    }
    free(m->conns);
    for (size_t i = 0; i < m->n_families; i++)
        free_family(m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
