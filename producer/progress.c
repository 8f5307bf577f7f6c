/* The progress line of the producer's long commands (enqueue, redrive, dlq list): one line on
 * stderr, redrawn in place, and the messages and log lines printed while it shows.
 *
 * Log lines may come from librdkafka's threads: they erase the line through the logger's
 * before-line hook, so `shown` is atomic and each draw or erase is one write(2), as each log
 * line is. A log line that lands between a draw's write and its `shown` store is not
 * preceded by an erase: a cosmetic race, accepted. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fq_cli.h"
#include "fq_log.h"

#define REDRAW_MS 200
#define ERASE     "\r\033[K"

/* The line that messages and log lines erase; one command runs per process. */
static _Atomic(fq_progress_t *) g_active;

static void put(const char *s, size_t n)
{
    ssize_t rc = write(STDERR_FILENO, s, n);
    (void)rc; /* a progress line that cannot be written is not worth an error */
}

/* Appends fmt to buf[0..at) and a newline when newline; leaves the room for it, so a long
 * text is cut rather than its line left open. The length, or 0 when fmt fails. */
static size_t compose(char *buf, size_t size, size_t at, bool newline, const char *fmt, va_list ap)
{
    int len = vsnprintf(buf + at, size - at - 1, fmt, ap);
    if (len < 0)
        return 0;
    size_t n = at + (size_t)len;
    if (n > size - 2)
        n = size - 2; /* vsnprintf kept size - at - 2 characters and the NUL */
    if (newline)
        buf[n++] = '\n';
    return n;
}

/* The logger's hook, and fq_cli_say's: erases the active line if it shows. */
static void erase_active(void)
{
    fq_progress_t *p = atomic_load(&g_active);
    if (p)
        fq_progress_erase(p);
}

bool fq_progress_wanted(const fq_cli_opts_t *o, bool rows_on_stdout)
{
    if (o->no_progress)
        return false;
    if (o->progress_forced)
        return true;
    return isatty(STDERR_FILENO) && !(rows_on_stdout && isatty(STDOUT_FILENO));
}

void fq_progress_start(fq_progress_t *p, bool on)
{
    p->on = on;
    atomic_store(&p->shown, false);
    p->t0 = p->last = fq_time_mono_ms();
    if (on) {
        atomic_store(&g_active, p);
        fq_log_set_before_line(erase_active);
    }
}

void fq_progress_draw(fq_progress_t *p, bool final, const char *fmt, ...)
{
    if (!p->on)
        return;
    int64_t now = fq_time_mono_ms();
    if (!final && now - p->last < REDRAW_MS && atomic_load(&p->shown))
        return;
    p->last = now;
    char line[512] = ERASE;
    va_list ap;
    va_start(ap, fmt);
    size_t n = compose(line, sizeof(line), strlen(ERASE), final, fmt, ap);
    va_end(ap);
    if (!n)
        return;
    put(line, n);
    atomic_store(&p->shown, !final);
}

void fq_progress_erase(fq_progress_t *p)
{
    if (atomic_exchange(&p->shown, false))
        put(ERASE, strlen(ERASE));
}

void fq_progress_end(fq_progress_t *p)
{
    fq_progress_erase(p);
    fq_progress_t *self = p;
    if (atomic_compare_exchange_strong(&g_active, &self, NULL))
        fq_log_set_before_line(NULL);
}

void fq_cli_say(const char *fmt, ...)
{
    erase_active();
    char line[4096] = "producer: ";
    va_list ap;
    va_start(ap, fmt);
    size_t n = compose(line, sizeof(line), strlen(line), true, fmt, ap);
    va_end(ap);
    if (n)
        put(line, n);
}
