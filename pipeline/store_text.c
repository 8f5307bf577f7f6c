/* The store's pure helpers (fq_store_internal.h; unit-tested in tests/unit/test_store_logic.c):
 * classifying a SQLSTATE, cleaning libpq's messages of passwords, the frames as JSON, UTF-8
 * cleaning of text bound for the database, the server version. */
#include "fq_store.h"
#include "fq_store_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fq_utf8.h"

/* Classifies a failed command from its SQLSTATE (NULL or "" when libpq had none) and
 * whether the connection is still usable. */
fq_store_kind_t fq_store_kind_for(const char *sqlstate, bool conn_ok)
{
    if (!conn_ok)
        return FQ_STORE_BROKEN;
    if (!sqlstate || strlen(sqlstate) != 5)
        return FQ_STORE_FAILED; /* a client-side failure on a healthy connection */
    if (strncmp(sqlstate, "08", 2) == 0)
        return FQ_STORE_BROKEN; /* connection exception */
    static const char *const broken[] = {
        "57P01", /* admin_shutdown: pg_terminate_backend, smart/fast shutdown */
        "57P02", /* crash_shutdown */
        "57P03", /* cannot_connect_now: starting up or in recovery */
        "25006", /* read_only_sql_transaction: we reached a standby after a failover */
        "26000", /* invalid_sql_statement_name: a pooler dropped our prepared statements */
    };
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++)
        if (strcmp(sqlstate, broken[i]) == 0)
            return FQ_STORE_BROKEN;
    if (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0)
        return FQ_STORE_TRANSIENT;
    /* No item can succeed on this database: insufficient resources (disk full, out of
     * memory, too many connections), system errors (I/O), operator intervention other than
     * the above, authorization, a missing database or schema, and class 42 (undefined table
     * or column, permission denied): no value is ever spliced into our SQL, so a class 42
     * error is about the schema or the grants, never about the item. Pausing the worker is
     * right; routing every item to the DLQ would not be. */
    static const char *const outage_classes[] = {"53", "58", "28", "3D", "3F", "42"};
    for (size_t i = 0; i < sizeof(outage_classes) / sizeof(outage_classes[0]); i++)
        if (strncmp(sqlstate, outage_classes[i], 2) == 0)
            return FQ_STORE_OUTAGE;
    if (strncmp(sqlstate, "57P", 3) == 0)
        return FQ_STORE_OUTAGE;
    return FQ_STORE_FAILED;
}

/* PostgreSQL's own packing of a SQLSTATE into an int (6 bits per character), so
 * fq_error_code carries it and a caller can compare without parsing the message. */
int fq_store_sqlstate_code(const char *sqlstate)
{
    if (!sqlstate || strlen(sqlstate) != 5)
        return 0;
    int code = 0;
    for (int i = 0; i < 5; i++)
        code |= ((sqlstate[i] - '0') & 0x3F) << (6 * i);
    return code;
}

/* Replaces every occurrence of secret in buf (size bytes, NUL-terminated) with "***". */
static void store_scrub_one(char *buf, const char *secret)
{
    if (!secret || !*secret)
        return;
    size_t slen = strlen(secret);
    char *p = buf;
    while ((p = strstr(p, secret)) != NULL) {
        size_t tail = strlen(p + slen);
        if (slen >= 3) {
            memcpy(p, "***", 3);
            memmove(p + 3, p + slen, tail + 1);
        } else {
            /* Growing the string could overflow buf: mask in place instead. */
            memset(p, '*', slen);
        }
        p += slen >= 3 ? 3 : slen;
    }
}

/* Makes a libpq message one line (its messages end in "\n" and may hold "\n\t" hints) and
 * removes the password, in case some message ever echoes it. */
void fq_store_clean_message(char *buf, const char *password, const char *password_raw)
{
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\t' || *p == '\r')
            *p = ' ';
    /* collapse runs of spaces left by "\n\t" */
    char *w = buf;
    for (char *r = buf; *r; r++)
        if (!(*r == ' ' && w > buf && w[-1] == ' '))
            *w++ = *r;
    *w = '\0';
    while (w > buf && w[-1] == ' ')
        *--w = '\0';
    store_scrub_one(buf, password);
    store_scrub_one(buf, password_raw);
}

/* The password as written in a postgres:// URI (user:PASSWORD@host), or NULL. */
char *fq_store_uri_password(const char *conninfo)
{
    const char *pw;
    size_t len;
    if ((strncmp(conninfo, "postgresql://", 13) != 0 &&
         strncmp(conninfo, "postgres://", 11) != 0) ||
        !fq_config_url_password(conninfo, &pw, &len) || len == 0)
        return NULL;
    return strndup(pw, len);
}

/* The frames as the JSON text fq_done_frames reads: [{"idx":0,"pts_ms":0,"url":"...",
 * "width":320,"height":180,"bytes":1000},...]. NULL with why on a URL that is not UTF-8 (JSON
 * cannot carry it) or out of memory. */
char *fq_store_frames_json(const fq_stored_frame_t *frames, size_t count, char *why,
                           size_t why_size)
{
    char *text = NULL;
    json_t *arr = json_array();
    if (!arr)
        goto oom;
    for (size_t i = 0; i < count; i++) {
        const fq_stored_frame_t *f = &frames[i];
        json_t *url = f->url ? json_string(f->url) : json_null();
        if (!url) {
            snprintf(why, why_size, "frame %d: url is not valid UTF-8", f->index);
            goto done;
        }
        json_t *o = json_pack("{s:i, s:I, s:o, s:i, s:i, s:i}", "idx", f->index, "pts_ms",
                              (json_int_t)f->pts_ms, "url", url, "width", f->width, "height",
                              f->height, "bytes", f->bytes);
        if (!o || json_array_append_new(arr, o) != 0)
            goto oom;
    }
    text = json_dumps(arr, JSON_COMPACT);
    if (text)
        goto done;
oom:
    snprintf(why, why_size, "out of memory building %zu frame rows", count);
done:
    json_decref(arr);
    return text;
}

/* A copy of s (NULL stays NULL) with every byte that is not part of valid UTF-8 replaced by
 * '?'. Error messages quote servers, files and FFmpeg, and are cut at 1 KiB, possibly inside
 * a character: PostgreSQL would reject such text and the failure could never be recorded. */
char *fq_store_utf8_clean(const char *s)
{
    if (!s)
        return NULL;
    char *out = strdup(s);
    if (!out)
        return NULL;
    unsigned char *p = (unsigned char *)out;
    while (*p) {
        size_t n = fq_utf8_len(p);
        if (n == 0) {
            *p++ = '?';
        } else {
            p += n;
        }
    }
    return out;
}

/* "15.4" from 150004; "9.6.5" from 90605 (the pre-10 numbering). */
void fq_store_format_version(int v, char *buf, size_t size)
{
    if (v >= 100000)
        snprintf(buf, size, "%d.%d", v / 10000, v % 10000);
    else
        snprintf(buf, size, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
}
