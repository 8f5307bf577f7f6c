#include "fq_log.h"

#include <stdarg.h>
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

void fq_time_rfc3339(int64_t epoch_ms, char *buf, size_t buf_size)
{
    time_t secs = (time_t)(epoch_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, buf_size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(epoch_ms % 1000));
}

/* A bounded line buffer: appends never overflow, the line is cut instead. */
typedef struct line {
    char buf[4096];
    size_t len;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    if (n > sizeof(l->buf) - 2 - l->len)
        n = sizeof(l->buf) - 2 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}

FQ_PRINTF(2, 3) static void putf(line_t *l, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* JSON string body: quotes, backslashes and control bytes escaped; other bytes as they are. */
static void put_escaped(line_t *l, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            puts_(l, "\\\"");
            break;
        case '\\':
            puts_(l, "\\\\");
            break;
        case '\n':
            puts_(l, "\\n");
            break;
        case '\r':
            puts_(l, "\\r");
            break;
        case '\t':
            puts_(l, "\\t");
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                putf(l, "\\u%04x", *p);
            else
                put(l, (const char *)p, 1);
        }
    }
}

static void put_str_field(line_t *l, const char *key, const char *value)
{
    if (!value)
        return;
    putf(l, ",\"%s\":\"", key);
    put_escaped(l, value);
    puts_(l, "\"");
}

static void put_text_field(line_t *l, const char *key, const char *value)
{
    if (value)
        putf(l, " %s=%s", key, value);
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
    line_t l = {.len = 0};
    if (g_log.json) {
        putf(&l, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, lvl);
        put_str_field(&l, "program", g_log.program);
        put_str_field(&l, "worker", g_log.worker);
        if (ctx) {
            put_str_field(&l, "item", ctx->item);
            if (ctx->attempt > 0)
                putf(&l, ",\"attempt\":%d", ctx->attempt);
            put_str_field(&l, "stage", ctx->stage);
            put_str_field(&l, "outcome", ctx->outcome);
            put_str_field(&l, "error_class", ctx->error_class);
            if (ctx->duration_ms > 0)
                putf(&l, ",\"duration_ms\":%.1f", ctx->duration_ms);
            if (ctx->topic) {
                put_str_field(&l, "topic", ctx->topic);
                putf(&l, ",\"partition\":%d,\"offset\":%lld", (int)ctx->partition,
                     (long long)ctx->offset);
            }
        }
        put_str_field(&l, "msg", msg);
        puts_(&l, "}");
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
        puts_(&l, msg);
    }
    l.buf[l.len++] = '\n';
    /* One write per line keeps lines whole when threads log at once. */
    ssize_t rc = write(STDERR_FILENO, l.buf, l.len);
    (void)rc;
}
