#include "fq_log.h"
#include "fq_utf8.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set once by fq_log_init before threads start; read-only afterwards. */
static struct {
    char program[32];
    char worker[128];
    bool json;
    fq_log_level_t level;
} g_log = {"frameq", "", true, FQ_LOG_INFO};

/* Set at any time (the producer's progress line comes and goes while librdkafka's threads log). */
typedef void (*before_line_fn)(void);
static _Atomic(before_line_fn) g_before_line;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int fq_log_init(const char *program, const char *worker, const char *format, const char *level)
{
    snprintf(g_log.program, sizeof(g_log.program), "%s", program ? program : "frameq");
    snprintf(g_log.worker, sizeof(g_log.worker), "%s", worker ? worker : "");
    if (format) {
        if (strcmp(format, "json") == 0)
            g_log.json = true;
        else if (strcmp(format, "text") == 0)
            g_log.json = false;
        else
            return -1;
    }
    if (level) {
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(level, level_names[i]) == 0)
                found = i;
        if (strcmp(level, "warning") == 0)
            found = FQ_LOG_WARN;
        if (found < 0)
            return -1;
        g_log.level = (fq_log_level_t)found;
    }
    return 0;
}

void fq_log_set_before_line(void (*fn)(void))
{
    atomic_store(&g_before_line, fn);
}

bool fq_log_enabled(fq_log_level_t level)
{
    return level >= g_log.level;
}

int64_t fq_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fq_time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timespec fq_time_mono_deadline(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int fq_cond_init_mono(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc != 0)
        return rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

void fq_time_rfc3339(int64_t epoch_ms, char *buf, size_t buf_size)
{
    /* Floor division so times before 1970 still print a valid millisecond field. */
    int64_t secs = epoch_ms / 1000, ms = epoch_ms % 1000;
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    /* The year is clamped so the compiler can prove the text fits 24 bytes + NUL. */
    int year = tm.tm_year + 1900;
    year = year < 0 ? 0 : year > 9999 ? 9999 : year;
    snprintf(buf, buf_size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year, (tm.tm_mon + 1) % 100,
             tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100, (int)ms);
}

/* A bounded line buffer. Every append is all-or-nothing, and the last RESERVE bytes are kept
 * for the closing of the line ("..." + "\"}" + "\n"), so a cut line is still one valid JSON
 * object: a partial escape or a missing brace would make a log shipper drop the whole line. */
#define LINE_CAP     16384
#define LINE_RESERVE 8
#define FIELD_MAX    1024 /* escaped bytes of one context field; the message gets the rest */

typedef struct line {
    char buf[LINE_CAP];
    size_t len;
} line_t;

static size_t room(const line_t *l)
{
    return LINE_CAP - LINE_RESERVE - l->len;
}

static bool put(line_t *l, const char *s, size_t n)
{
    if (n > room(l))
        return false;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

static bool puts_(line_t *l, const char *s)
{
    return put(l, s, strlen(s));
}

FQ_PRINTF(2, 3) static bool putf(line_t *l, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return false;
    return put(l, tmp, (size_t)n);
}

/* Escapes s as a JSON string body (or, for text lines, just keeps it on one line), writing at
 * most max bytes; each escape or UTF-8 sequence goes in whole. Invalid UTF-8 becomes U+FFFD.
 * Returns false when s was cut. */
static bool put_escaped(line_t *l, const char *s, size_t max)
{
    size_t limit = l->len + (max < room(l) ? max : room(l));
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        char esc[8];
        const char *out = esc;
        size_t n = 0, adv = 1;
        switch (*p) {
        case '"':
            out = "\\\"";
            n = 2;
            break;
        case '\\':
            out = "\\\\";
            n = 2;
            break;
        case '\n':
            out = "\\n";
            n = 2;
            break;
        case '\r':
            out = "\\r";
            n = 2;
            break;
        case '\t':
            out = "\\t";
            n = 2;
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
            } else if ((adv = fq_utf8_len(p)) > 0) {
                out = (const char *)p;
                n = adv;
            } else {
                out = "\\ufffd";
                n = 6;
                adv = 1;
            }
        }
        if (l->len + n > limit)
            return false;
        memcpy(l->buf + l->len, out, n);
        l->len += n;
        p += adv;
    }
    return true;
}

/* ,"key":"value" — written whole or not at all (a cut value ends in "..."). */
static void put_str_field(line_t *l, const char *key, const char *value, size_t max)
{
    if (!value)
        return;
    size_t mark = l->len;
    if (!putf(l, ",\"%s\":\"", key) || room(l) < 4) {
        l->len = mark;
        return;
    }
    /* Keep 4 bytes for "..." and the closing quote. */
    size_t budget = room(l) - 4 < max ? room(l) - 4 : max;
    bool whole = put_escaped(l, value, budget);
    if (!whole)
        puts_(l, "...");
    puts_(l, "\"");
}

static void put_text_field(line_t *l, const char *key, const char *value)
{
    if (!value)
        return;
    size_t mark = l->len;
    if (!putf(l, " %s=", key) || !put_escaped(l, value, FIELD_MAX))
        l->len = mark;
}

void fq_log(fq_log_level_t level, const fq_log_ctx_t *ctx, const char *fmt, ...)
{
    if (!fq_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    char ts[40];
    fq_time_rfc3339(fq_time_now_ms(), ts, sizeof(ts));
    const char *lvl = level_names[level];
    static _Thread_local line_t l; /* 16 KiB is too much for small thread stacks */
    l.len = 0;
    if (g_log.json) {
        putf(&l, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, lvl);
        put_str_field(&l, "program", g_log.program, FIELD_MAX);
        put_str_field(&l, "worker", g_log.worker, FIELD_MAX);
        if (ctx) {
            put_str_field(&l, "item", ctx->item, FIELD_MAX);
            if (ctx->attempt > 0)
                putf(&l, ",\"attempt\":%d", ctx->attempt);
            put_str_field(&l, "stage", ctx->stage, FIELD_MAX);
            put_str_field(&l, "outcome", ctx->outcome, FIELD_MAX);
            put_str_field(&l, "error_class", ctx->error_class, FIELD_MAX);
            if (ctx->duration_ms > 0)
                putf(&l, ",\"duration_ms\":%.1f", ctx->duration_ms);
            if (ctx->topic) {
                put_str_field(&l, "topic", ctx->topic, FIELD_MAX);
                putf(&l, ",\"partition\":%d,\"offset\":%lld", (int)ctx->partition,
                     (long long)ctx->offset);
            }
        }
        put_str_field(&l, "msg", msg, LINE_CAP);
        /* The reserve guarantees room for the closing brace and the newline. */
        l.buf[l.len++] = '}';
    } else {
        putf(&l, "%s %-5s %s", ts, lvl, g_log.program);
        if (ctx) {
            put_text_field(&l, "item", ctx->item);
            if (ctx->attempt > 0)
                putf(&l, " attempt=%d", ctx->attempt);
            put_text_field(&l, "stage", ctx->stage);
            put_text_field(&l, "outcome", ctx->outcome);
            put_text_field(&l, "class", ctx->error_class);
            if (ctx->duration_ms > 0)
                putf(&l, " duration_ms=%.1f", ctx->duration_ms);
            if (ctx->topic)
                putf(&l, " at=%s/%d@%lld", ctx->topic, (int)ctx->partition, (long long)ctx->offset);
        }
        puts_(&l, ": ");
        /* Escaped here too, so a message with a newline stays on one line. */
        if (!put_escaped(&l, msg, LINE_CAP)) {
            memcpy(l.buf + l.len, "...", 3); /* within the reserve */
            l.len += 3;
        }
    }
    l.buf[l.len++] = '\n';
    before_line_fn before = atomic_load(&g_before_line);
    if (before)
        before();
    /* One write per line keeps lines whole when threads log at once. */
    ssize_t rc = write(STDERR_FILENO, l.buf, l.len);
    (void)rc;
}
