/* producer input: streaming split of a JSON array or NDJSON into item records, validation
 * through the item codec, deduplication and spooling (see fq_input.h for the memory budget). */
#include "fq_input.h"
#include "spool_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

/* A reader over the input with line/column tracking (both 1-based, column in bytes). */
typedef struct reader {
    FILE *in;
    int line, col;
    uint64_t bytes;
} reader_t;

static int rd_get(reader_t *r)
{
    int c = getc_unlocked(r->in);
    if (c == EOF)
        return EOF;
    r->bytes++;
    if (c == '\n') {
        r->line++;
        r->col = 0;
    } else {
        r->col++;
    }
    return c;
}

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* One record: the bytes of an item, where it started, and whether it was too long. */
typedef struct record {
    char *buf;
    size_t len;
    int line, col;
    bool overflow;
} record_t;

static void rec_start(record_t *rec, const reader_t *r)
{
    rec->len = 0;
    rec->overflow = false;
    rec->line = r->line;
    rec->col = r->col;
}

static void rec_put(record_t *rec, int c)
{
    if (rec->len < FQ_INPUT_RECORD_MAX)
        rec->buf[rec->len++] = (char)c;
    else
        rec->overflow = true;
}

static void rec_trim(record_t *rec)
{
    while (rec->len && is_space((unsigned char)rec->buf[rec->len - 1]))
        rec->len--;
}

/* A JSON string without escapes at *p (after its opening quote): sets start/len and moves
 * past the closing quote. -1 on a backslash, a control byte or the end of the buffer; the
 * caller then leaves the record to the codec. */
static int plain_string(const char **p, const char *end, const char **start, size_t *len)
{
    const char *s = *p;
    while (s < end && *s != '"') {
        if (*s == '\\' || (unsigned char)*s < 0x20)
            return -1;
        s++;
    }
    if (s >= end)
        return -1;
    *start = *p;
    *len = (size_t)(s - *p);
    *p = s + 1;
    return 0;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* The shape almost every input line has, {"platform":"..","code":"..",["video_url":".."]} with
 * plain strings, read without building a JSON tree. Any other shape (escapes, other fields or
 * types, repeats) returns -1 and goes through fq_item_decode. The spool needs no copy of
 * the item JSON, which the codec would make. */
static int plain_item(const char *buf, size_t len, fq_item_t *item)
{
    const char *p = skip_ws(buf, buf + len), *end = buf + len;
    const char *val[3] = {NULL, NULL, NULL};
    size_t vlen[3] = {0, 0, 0};
    static const char *const keys[3] = {"platform", "code", "video_url"};
    if (p >= end || *p++ != '{')
        return -1;
    for (;;) {
        const char *k, *v;
        size_t klen, n;
        p = skip_ws(p, end);
        if (p >= end || *p++ != '"' || plain_string(&p, end, &k, &klen) != 0)
            return -1;
        p = skip_ws(p, end);
        if (p >= end || *p++ != ':')
            return -1;
        p = skip_ws(p, end);
        if (p >= end || *p++ != '"' || plain_string(&p, end, &v, &n) != 0)
            return -1;
        int i = 0;
        while (i < 3 && !(strlen(keys[i]) == klen && memcmp(keys[i], k, klen) == 0))
            i++;
        if (i == 3 || val[i])
            return -1;
        val[i] = v;
        vlen[i] = n;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p >= end || *p++ != '}')
            return -1;
        break;
    }
    if (skip_ws(p, end) != end || !val[0] || !val[1] || vlen[0] > FQ_PLATFORM_MAX ||
        vlen[1] > FQ_CODE_MAX || vlen[2] > FQ_VIDEO_URL_MAX)
        return -1;
    memset(item, 0, sizeof(*item));
    memcpy(item->platform, val[0], vlen[0]);
    memcpy(item->code, val[1], vlen[1]);
    if (val[2] && !(item->video_url = strndup(val[2], vlen[2])))
        return -1;
    fq_error_t *err = fq_item_validate(item);
    if (err) {
        fq_error_destroy(err);
        fq_item_clear(item);
        return -1;
    }
    return 0;
}

typedef struct scan {
    const fq_input_opts_t *opts;
    fq_input_stats_t *stats;
    fq_spool_t *spool;
    record_t rec;
    char *errstr;
    size_t errstr_size;
    const reader_t *reader; /* for the byte count in progress reports */
    fq_item_t pending;      /* valid item not yet checked for duplicates and spooled */
    uint64_t pending_hash;
    bool has_pending;
} scan_t;

static void report(scan_t *s, const char *where, const char *why)
{
    s->stats->invalid++;
    if (s->opts->report)
        s->opts->report(s->opts->opaque, where, why);
}

/* Checks and spools the item held back by handle_record. 0, or -1 on a spool error. */
static int flush_pending(scan_t *s)
{
    if (!s->has_pending)
        return 0;
    int rc = spool_add(s->spool, &s->pending, s->pending_hash, !s->opts->allow_duplicates);
    fq_item_clear(&s->pending);
    s->has_pending = false;
    if (rc < 0) {
        snprintf(s->errstr, s->errstr_size, "temporary spool file: %s", strerror(errno));
        return -1;
    }
    if (rc == 1)
        s->stats->duplicates++;
    else
        s->stats->valid++;
    return 0;
}

/* Reports a record the codec refused; a JSON syntax error gets its position in the input. */
static void report_rejected(scan_t *s, size_t index, char *where, size_t where_size,
                            const fq_error_t *err)
{
    const record_t *rec = &s->rec;
    bool array = s->stats->format == FQ_INPUT_ARRAY;
    if (fq_error_class(err) == FQ_CLASS_MALFORMED &&
        strncmp(fq_error_message(err), "not valid JSON", 14) == 0) {
        /* Parse again only on this error path, to give the position in the input. */
        json_error_t jerr;
        json_t *v = json_loadb(rec->buf, rec->len,
                               JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
        if (v) {
            char why[64];
            snprintf(why, sizeof(why), "expected an object, got %s", fq_json_type_name(v));
            json_decref(v);
            report(s, where, why);
        } else {
            int line = rec->line + jerr.line - 1;
            int col = jerr.line <= 1 ? rec->col + jerr.column - 1 : jerr.column;
            if (array)
                snprintf(where, where_size, "items[%zu] (line %d, column %d)", index, line, col);
            else
                snprintf(where, where_size, "line %d, column %d", line, col);
            report(s, where, jerr.text);
        }
    } else {
        report(s, where, fq_error_message(err));
    }
}

/* Validates one record and spools it. index is the array index (format array) or unused.
 * Returns 0, or -1 on a fatal (I/O) error. */
static int handle_record(scan_t *s, size_t index)
{
    record_t *rec = &s->rec;
    bool array = s->stats->format == FQ_INPUT_ARRAY;
    char where[96];
    s->stats->records++;
    if (s->opts->progress && (s->stats->records & 4095) == 0) {
        s->stats->bytes = s->reader->bytes;
        s->opts->progress(s->opts->opaque, s->stats);
    }

    fq_item_t item;
    if (array)
        snprintf(where, sizeof(where), "items[%zu] (line %d, column %d)", index, rec->line,
                 rec->col);
    else
        snprintf(where, sizeof(where), "line %d", rec->line);
    if (!rec->overflow && plain_item(rec->buf, rec->len, &item) == 0)
        goto valid;

    /* Anything else goes through the codec, whose verdict and message are the reference (and
     * whose decoding is bounded before jansson sees the bytes). */
    if (rec->overflow) {
        char why[96];
        snprintf(why, sizeof(why), "item longer than %d bytes", FQ_INPUT_RECORD_MAX);
        report(s, where, why);
        return 0;
    }
    fq_error_t *err = fq_item_decode(rec->buf, rec->len, &item);
    if (err) {
        report_rejected(s, index, where, sizeof(where), err);
        fq_error_destroy(err);
        return 0;
    }
valid:
    if (s->opts->allow && item.video_url) {
        /* The workers' own check (fetch runs the same one again before connecting). */
        fq_error_t *refused = fq_allow_check(s->opts->allow, item.video_url, "video_url", NULL);
        if (refused) {
            s->stats->refused_urls++;
            report(s, where, fq_error_message(refused));
            fq_error_destroy(refused);
            fq_item_clear(&item);
            return 0;
        }
    }
    /* Software pipelining: the set lookup of this item is a likely cache miss, so its slot is
     * prefetched now and the item is checked and spooled on the next call, while the
     * previous one is processed here. Order and verdicts are unchanged. */
    uint64_t hash = spool_key_hash(item.platform, item.code);
    if (!s->opts->allow_duplicates)
        spool_prefetch(s->spool, hash);
    int rc = flush_pending(s);
    s->pending = item;
    s->pending_hash = hash;
    s->has_pending = true;
    return rc;
}

static int scan_ndjson(scan_t *s, reader_t *r, int c)
{
    /* c is the first non-space byte; lines before it were blank. */
    for (;;) {
        rec_start(&s->rec, r);
        while (c != EOF && c != '\n') {
            rec_put(&s->rec, c);
            c = rd_get(r);
        }
        rec_trim(&s->rec);
        if (s->rec.len || s->rec.overflow) {
            if (handle_record(s, 0) != 0)
                return -1;
        }
        if (c == EOF)
            break;
        /* skip leading blanks of the next line (kept out of the record's column) */
        do
            c = rd_get(r);
        while (c == ' ' || c == '\t' || c == '\r');
    }
    return 0;
}

static int fatal(scan_t *s, const reader_t *r, const char *why)
{
    char where[64];
    snprintf(where, sizeof(where), "line %d, column %d", r->line, r->col);
    snprintf(s->errstr, s->errstr_size, "%s: %s", where, why);
    return -1;
}

static int scan_array(scan_t *s, reader_t *r)
{
    size_t index = 0;
    int c;
    for (;;) {
        do
            c = rd_get(r);
        while (is_space(c));
        if (c == EOF)
            return fatal(s, r, "unexpected end of input: the array is not closed");
        if (c == ']' && index == 0)
            break;
        if (c == ',' || c == ']')
            return fatal(s, r, index ? "expected an item after ','" : "unexpected character");
        /* One element: up to the ',' or ']' at depth 0, outside strings. */
        rec_start(&s->rec, r);
        int depth = 0, in_string = 0, end = 0;
        for (;;) {
            if (in_string) {
                if (c == '\\') {
                    rec_put(&s->rec, c);
                    c = rd_get(r);
                    if (c == EOF)
                        break;
                } else if (c == '"') {
                    in_string = 0;
                }
            } else if (c == '"') {
                in_string = 1;
            } else if (c == '[' || c == '{') {
                depth++;
            } else if (c == ']' || c == '}') {
                if (--depth < 0) {
                    end = ']';
                    break;
                }
            } else if (c == ',' && depth == 0) {
                end = ',';
                break;
            }
            rec_put(&s->rec, c);
            c = rd_get(r);
            if (c == EOF)
                break;
        }
        if (!end)
            return fatal(s, r, "unexpected end of input: the array is not closed");
        rec_trim(&s->rec);
        if (handle_record(s, index++) != 0)
            return -1;
        if (end == ']')
            break;
    }
    while ((c = rd_get(r)) != EOF)
        if (!is_space(c))
            return fatal(s, r, "unexpected data after the closing ']'");
    return 0;
}

fq_spool_t *fq_input_read(FILE *in, const fq_input_opts_t *opts, fq_input_stats_t *stats,
                          char *errstr, size_t errstr_size)
{
    fq_input_opts_t no_opts = {0};
    if (!opts)
        opts = &no_opts;
    memset(stats, 0, sizeof(*stats));
    scan_t s = {.opts = opts, .stats = stats, .errstr = errstr, .errstr_size = errstr_size};
    reader_t r = {.in = in, .line = 1, .col = 0};
    s.reader = &r;
    int ok = 0;

    s.rec.buf = malloc(FQ_INPUT_RECORD_MAX);
    if (!s.rec.buf) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    s.spool = spool_new();
    if (!s.spool) {
        snprintf(errstr, errstr_size, "temporary spool file: %s", strerror(errno));
        goto done;
    }

    int c = rd_get(&r);
    /* A UTF-8 byte order mark (some editors write one) is not part of the JSON. */
    if (c == 0xEF) {
        int c2 = rd_get(&r), c3 = c2 == 0xBB ? rd_get(&r) : EOF;
        if (c2 != 0xBB || c3 != 0xBF) {
            snprintf(errstr, errstr_size, "line 1, column 1: not JSON (byte 0xef)");
            goto done;
        }
        r.col = 0;
        c = rd_get(&r);
    }
    while (is_space(c))
        c = rd_get(&r);
    if (c == EOF) {
        if (ferror(in))
            snprintf(errstr, errstr_size, "read error: %s", strerror(errno));
        else
            snprintf(errstr, errstr_size, "empty input: no items");
        goto done;
    }
    if (c == '[') {
        stats->format = FQ_INPUT_ARRAY;
        if (scan_array(&s, &r) != 0)
            goto done;
    } else {
        stats->format = FQ_INPUT_NDJSON;
        if (scan_ndjson(&s, &r, c) != 0)
            goto done;
    }
    if (flush_pending(&s) != 0)
        goto done;
    if (ferror(in)) {
        snprintf(errstr, errstr_size, "read error: %s", strerror(errno));
        goto done;
    }
    if (fq_spool_rewind(s.spool) != 0) {
        snprintf(errstr, errstr_size, "temporary spool file: %s", strerror(errno));
        goto done;
    }
    ok = 1;
done:
    stats->bytes = r.bytes;
    fq_item_clear(&s.pending);
    free(s.rec.buf);
    if (!ok) {
        fq_spool_destroy(s.spool);
        return NULL;
    }
    spool_drop_set(s.spool); /* only needed while reading */
    return s.spool;
}
