/* frameq store: PostgreSQL through libpq (fq_store.h, DESIGN §3/§4).
 *
 * One connection per store, opened lazily. Every public call goes through store_run(), which
 * connects (statements are prepared once per connection, on first use), runs the call's body and,
 * when the connection turned out to be broken, resets it and runs the body once more. Bodies are
 * idempotent (upserts, ON CONFLICT DO NOTHING) and transactional, so running one twice, or
 * after a COMMIT whose acknowledgement was lost, leaves the same rows.
 */
#include "fq_store.h"
#include "fq_store_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "fq_log.h"
#include "fq_migrations.h"

#define STORE_MSG_MAX 768

/* libpq settings a conninfo may override. */
static const char *const store_connect_defaults[][2] = {
    /* without it a black-holed server blocks a worker for the kernel's TCP timeout */
    {"connect_timeout", "5"},
    {"application_name", "frameq"},
    /* our text is UTF-8 (JSON in, JSON out) whatever the database's encoding */
    {"client_encoding", "UTF8"},
    /* notice a server that vanished without closing the connection (host down, network
     * partition) within about a minute instead of the kernel's two hours */
    {"keepalives", "1"},
    {"keepalives_idle", "30"},
    {"keepalives_interval", "10"},
    {"keepalives_count", "3"},
};

/* pg_advisory_xact_lock key serialising migrators: the bytes of "frameq". */
#define STORE_MIGRATE_LOCK "112641446864241"

/* Prepared statements, prepared once per connection. Parameters carry every value. */
enum {
    ST_PING = 0,
    ST_BEGIN,
    ST_SELECT_ITEM,
    ST_DONE_ITEM,
    ST_DONE_FRAMES,
    ST_ERROR_ITEM,
    ST_ERROR_ROW,
    ST_SET_STATUS,
    ST__COUNT
};

struct fq_store {
    char *conninfo;
    char *password;     /**< decoded password from conninfo, to scrub from messages */
    char *password_raw; /**< as written in a URI (may be percent-encoded) */
    bool conninfo_bad;  /**< libpq cannot parse conninfo: never echo its parse error */
    PGconn *conn;
    bool prepared[ST__COUNT]; /**< statements prepared on this connection */
    bool need_reset;          /**< the connection failed: reset before the next use */
    char sqlstate[6];
    char msg[STORE_MSG_MAX];
};

static const struct {
    const char *name;
    const char *sql;
} statements[ST__COUNT] = {
    [ST_PING] = {"fq_ping", "SELECT 1"},
    /* $1 platform, $2 code, $3 attempt. No row back means the item is done. */
    [ST_BEGIN] = {"fq_begin", "INSERT INTO extraction_items (platform, code, status, attempts)"
                              " VALUES ($1, $2, 'processing', $3::int)"
                              " ON CONFLICT (platform, code) DO UPDATE SET status = 'processing',"
                              " attempts = GREATEST(extraction_items.attempts, EXCLUDED.attempts),"
                              " updated_at = now()"
                              " WHERE extraction_items.status <> 'done'"
                              " RETURNING id"},
    [ST_SELECT_ITEM] = {"fq_select_item", "SELECT id, status FROM extraction_items"
                                          " WHERE platform = $1 AND code = $2"},
    /* $1 id, $2 frame_count, $3 duration_ms, $4 width, $5 height. Runs first in mark_done so
     * the item row lock serialises two workers finishing the same item. */
    [ST_DONE_ITEM] = {"fq_done_item",
                      "UPDATE extraction_items SET status = 'done', frame_count = $2::int,"
                      " duration_ms = $3::bigint, width = $4::int, height = $5::int,"
                      " done_at = now(), last_error = NULL, updated_at = now()"
                      " WHERE id = $1::bigint"},
    /* $1 id, $2 the frames as one JSON array of objects (fq_store_frames_json): one round trip
     * and one parse of the JSON for any number of frames, no value quoted by hand. Upserts
     * the frames and deletes the rows of an earlier run with more frames; the two touch
     * disjoint rows, so the DELETE need not see the INSERT's effects (it does not). */
    [ST_DONE_FRAMES] = {"fq_done_frames",
                        "WITH f AS MATERIALIZED (SELECT * FROM json_to_recordset($2::json)"
                        " AS f(idx int, pts_ms bigint, url text, width int, height int,"
                        " bytes int)),"
                        " ins AS (INSERT INTO extraction_frames"
                        " (item_id, idx, pts_ms, url, width, height, bytes)"
                        " SELECT $1::bigint, idx, pts_ms, url, width, height, bytes FROM f"
                        " ON CONFLICT (item_id, idx) DO UPDATE SET pts_ms = EXCLUDED.pts_ms,"
                        " url = EXCLUDED.url, width = EXCLUDED.width,"
                        " height = EXCLUDED.height, bytes = EXCLUDED.bytes)"
                        " DELETE FROM extraction_frames WHERE item_id = $1::bigint"
                        " AND idx <> ALL (ARRAY(SELECT idx FROM f))"},
    /* $1 platform, $2 code, $3 status, $4 attempt, $5 last_error. A done item keeps its
     * status and last_error; the attempt count still never goes down. */
    [ST_ERROR_ITEM] = {"fq_error_item",
                       "INSERT INTO extraction_items (platform, code, status, attempts, last_error)"
                       " VALUES ($1, $2, $3, $4::int, $5)"
                       " ON CONFLICT (platform, code) DO UPDATE SET"
                       " status = CASE WHEN extraction_items.status = 'done' THEN 'done'"
                       " ELSE EXCLUDED.status END,"
                       " attempts = GREATEST(extraction_items.attempts, EXCLUDED.attempts),"
                       " last_error = CASE WHEN extraction_items.status = 'done'"
                       " THEN extraction_items.last_error ELSE EXCLUDED.last_error END,"
                       " updated_at = now()"
                       " RETURNING id"},
    /* $1 item_id, $2 attempt, $3 stage, $4 class, $5 message, $6 worker, $7 topic,
     * $8 partition, $9 offset. */
    [ST_ERROR_ROW] = {"fq_error_row",
                      "INSERT INTO extraction_errors (item_id, attempt, stage, error_class,"
                      " message, worker, kafka_topic, kafka_partition, kafka_offset)"
                      " VALUES ($1::bigint, $2::int, $3, $4, $5, $6, $7, $8::int, $9::bigint)"
                      " ON CONFLICT (item_id, attempt) DO NOTHING"},
    /* $1 platform, $2 code, $3 status. A done item stays done: a redrive replayed after the
     * item succeeded must not send it back to work. */
    [ST_SET_STATUS] = {"fq_set_status",
                       "INSERT INTO extraction_items (platform, code, status)"
                       " VALUES ($1, $2, $3)"
                       " ON CONFLICT (platform, code) DO UPDATE SET status = EXCLUDED.status,"
                       " updated_at = now()"
                       " WHERE extraction_items.status <> 'done'"},
};

/* ---- pure helpers (fq_store_internal.h; unit-tested in tests/unit/test_store_logic.c) ---- */

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
    const char *p = NULL;
    if (strncmp(conninfo, "postgresql://", 13) == 0)
        p = conninfo + 13;
    else if (strncmp(conninfo, "postgres://", 11) == 0)
        p = conninfo + 11;
    if (!p)
        return NULL;
    size_t auth = strcspn(p, "/?");
    const char *at = memrchr(p, '@', auth);
    if (!at)
        return NULL;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon || colon + 1 == at)
        return NULL;
    return strndup(colon + 1, (size_t)(at - colon - 1));
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

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF), or 0 when the bytes there are not one. */
static size_t store_utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
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
        size_t n = store_utf8_len(p);
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

/* ---- connection handling ---- */

static void store_notice(void *arg, const char *message)
{
    (void)arg;
    /* libpq would print notices on stderr, breaking the JSON log lines. */
    char buf[STORE_MSG_MAX];
    snprintf(buf, sizeof(buf), "%s", message);
    fq_store_clean_message(buf, NULL, NULL);
    FQ_DEBUG(NULL, "postgresql notice: %s", buf);
}

/* Records the failure of the last command (res may be NULL) and classifies it. */
static fq_store_kind_t store_fail(fq_store_t *store, const PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *text = primary;
    if (!text || !*text)
        text = res ? PQresultErrorMessage(res) : NULL;
    if (!text || !*text)
        text = store->conn ? PQerrorMessage(store->conn) : "no connection";
    snprintf(store->sqlstate, sizeof(store->sqlstate), "%s", state ? state : "");
    snprintf(store->msg, sizeof(store->msg), "%s: %s", what, text);
    fq_store_clean_message(store->msg, store->password, store->password_raw);
    bool ok = store->conn && PQstatus(store->conn) == CONNECTION_OK;
    fq_store_kind_t kind = fq_store_kind_for(store->sqlstate, ok);
    if (kind == FQ_STORE_BROKEN)
        store->need_reset = true;
    return kind;
}

static fq_store_kind_t store_connect(fq_store_t *store)
{
    if (store->conninfo_bad) {
        /* libpq's parse errors quote pieces of the string, which may be the password. */
        snprintf(store->msg, sizeof(store->msg),
                 "connect: DATABASE_URL is not a valid libpq "
                 "connection string or URI");
        store->sqlstate[0] = '\0';
        return FQ_STORE_BROKEN;
    }
    if (store->conn && !store->need_reset && PQstatus(store->conn) == CONNECTION_OK)
        goto idle;
    memset(store->prepared, 0, sizeof(store->prepared));
    store->need_reset = false;
    if (store->conn) {
        PQreset(store->conn);
    } else {
        /* Later keywords win and the expanded dbname comes last, so anything the conninfo
         * sets overrides store_connect_defaults. */
        enum { N = sizeof(store_connect_defaults) / sizeof(store_connect_defaults[0]) };
        const char *keys[N + 2], *values[N + 2];
        for (size_t i = 0; i < N; i++) {
            keys[i] = store_connect_defaults[i][0];
            values[i] = store_connect_defaults[i][1];
        }
        keys[N] = "dbname";
        values[N] = store->conninfo;
        keys[N + 1] = values[N + 1] = NULL;
        store->conn = PQconnectdbParams(keys, values, 1);
        if (!store->conn) {
            snprintf(store->msg, sizeof(store->msg), "connect: out of memory");
            store->sqlstate[0] = '\0';
            return FQ_STORE_BROKEN;
        }
        PQsetNoticeProcessor(store->conn, store_notice, NULL);
    }
    if (PQstatus(store->conn) != CONNECTION_OK) {
        store_fail(store, NULL, "connect");
        store->need_reset = true;
        return FQ_STORE_BROKEN;
    }
idle:
    if (PQtransactionStatus(store->conn) != PQTRANS_IDLE) {
        /* A previous call died between BEGIN and COMMIT/ROLLBACK. */
        PGresult *res = PQexec(store->conn, "ROLLBACK");
        fq_store_kind_t kind = PQresultStatus(res) == PGRES_COMMAND_OK
                                   ? FQ_STORE_OK
                                   : store_fail(store, res, "rollback");
        PQclear(res);
        if (kind != FQ_STORE_OK)
            return kind;
    }
    return FQ_STORE_OK;
}

typedef fq_store_kind_t (*store_body_t)(fq_store_t *store, void *ctx);

/* Runs body on a live connection; a broken connection is reset and the body run once more
 * (it is idempotent). Returns NULL or the classified error. */
static fq_error_t *store_run(fq_store_t *store, store_body_t body, void *ctx)
{
    fq_store_kind_t kind = FQ_STORE_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        store->sqlstate[0] = '\0';
        store->msg[0] = '\0';
        bool was_up = store->conn && !store->need_reset && PQstatus(store->conn) == CONNECTION_OK;
        kind = store_connect(store);
        if (kind == FQ_STORE_OK)
            kind = body(store, ctx);
        if (kind == FQ_STORE_OK)
            return NULL;
        if ((kind != FQ_STORE_BROKEN && kind != FQ_STORE_TRANSIENT) || store->conninfo_bad)
            break;
        /* A connection that was fine and broke is worth a warning; failing to connect while
         * the database is down is the caller's outage to report, once, not ours per probe. */
        if (attempt == 0)
            fq_log(was_up ? FQ_LOG_WARN : FQ_LOG_DEBUG, NULL, "postgresql: %s; %s", store->msg,
                   kind == FQ_STORE_BROKEN ? "reconnecting" : "retrying");
    }
    fq_error_t *err;
    switch (kind) {
    case FQ_STORE_BROKEN:
        err =
            fq_error_new(FQ_STAGE_STORE, FQ_CLASS_OUTAGE, "PostgreSQL unreachable: %s", store->msg);
        break;
    case FQ_STORE_OUTAGE:
        err = fq_error_new(
            FQ_STAGE_STORE, FQ_CLASS_OUTAGE, "PostgreSQL unavailable: %s (SQLSTATE %s)%s",
            store->msg, store->sqlstate,
            strcmp(store->sqlstate, "42P01") == 0 ? "; is the schema migrated (consumer --migrate)?"
                                                  : "");
        break;
    default:
        if (store->sqlstate[0])
            err = fq_error_new(FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, "%s (SQLSTATE %s)", store->msg,
                               store->sqlstate);
        else
            err = fq_error_new(FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, "%s", store->msg);
        break;
    }
    fq_error_set_code(err, FQ_ERROR_DOMAIN_SQLSTATE, fq_store_sqlstate_code(store->sqlstate));
    return err;
}

/* Executes a prepared statement; *res receives the result on success (caller clears). */
static fq_store_kind_t store_exec(fq_store_t *store, int st, int n, const char *const *params,
                                  PGresult **out)
{
    if (!store->prepared[st]) {
        /* Prepared on first use, not at connect: --migrate runs before the tables exist. */
        PGresult *prep = PQprepare(store->conn, statements[st].name, statements[st].sql, 0, NULL);
        fq_store_kind_t kind = PQresultStatus(prep) == PGRES_COMMAND_OK
                                   ? FQ_STORE_OK
                                   : store_fail(store, prep, statements[st].name);
        PQclear(prep);
        if (kind != FQ_STORE_OK)
            return kind;
        store->prepared[st] = true;
    }
    PGresult *res = PQexecPrepared(store->conn, statements[st].name, n, params, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(res);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
        if (out)
            *out = res;
        else
            PQclear(res);
        return FQ_STORE_OK;
    }
    fq_store_kind_t kind = store_fail(store, res, statements[st].name);
    PQclear(res);
    return kind;
}

/* Runs a plain command (BEGIN/COMMIT/ROLLBACK, migrations: no values in them). */
static fq_store_kind_t store_command(fq_store_t *store, const char *sql, const char *what)
{
    PGresult *res = PQexec(store->conn, sql);
    ExecStatusType status = PQresultStatus(res);
    fq_store_kind_t kind = (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
                               ? FQ_STORE_OK
                               : store_fail(store, res, what);
    PQclear(res);
    return kind;
}

/* Ends a transaction whose body failed with kind; keeps the body's error. */
static fq_store_kind_t store_abort(fq_store_t *store, fq_store_kind_t kind)
{
    if (store->conn && PQstatus(store->conn) == CONNECTION_OK &&
        PQtransactionStatus(store->conn) != PQTRANS_IDLE) {
        PGresult *res = PQexec(store->conn, "ROLLBACK");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            store->need_reset = true; /* store_connect cleans up next time */
        PQclear(res);
    }
    return kind;
}

/* ---- public API ---- */

fq_store_t *fq_store_new(const char *conninfo)
{
    fq_store_t *store = calloc(1, sizeof(*store));
    if (!store)
        return NULL;
    store->conninfo = strdup(conninfo ? conninfo : "");
    if (!store->conninfo) {
        free(store);
        return NULL;
    }
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(store->conninfo, &errmsg);
    if (!opts) {
        store->conninfo_bad = errmsg != NULL; /* NULL errmsg: out of memory, try anyway */
    } else {
        for (PQconninfoOption *o = opts; o->keyword; o++)
            if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
                store->password = strdup(o->val);
        PQconninfoFree(opts);
    }
    PQfreemem(errmsg);
    store->password_raw = fq_store_uri_password(store->conninfo);
    return store;
}

void fq_store_destroy(fq_store_t *store)
{
    if (!store)
        return;
    if (store->conn)
        PQfinish(store->conn);
    if (store->password)
        explicit_bzero(store->password, strlen(store->password));
    if (store->password_raw)
        explicit_bzero(store->password_raw, strlen(store->password_raw));
    explicit_bzero(store->conninfo, strlen(store->conninfo));
    free(store->password);
    free(store->password_raw);
    free(store->conninfo);
    free(store);
}

static fq_store_kind_t ping_body(fq_store_t *store, void *ctx)
{
    (void)ctx;
    return store_exec(store, ST_PING, 0, NULL, NULL);
}

fq_error_t *fq_store_ping(fq_store_t *store)
{
    return store_run(store, ping_body, NULL);
}

typedef struct begin_ctx {
    const fq_item_t *item;
    int attempt;
    int64_t item_id;
    bool already_done;
} begin_ctx_t;

static fq_store_kind_t begin_body(fq_store_t *store, void *ctx)
{
    begin_ctx_t *c = ctx;
    char attempt[16];
    snprintf(attempt, sizeof(attempt), "%d", c->attempt);
    const char *params[] = {c->item->platform, c->item->code, attempt};
    PGresult *res = NULL;
    fq_store_kind_t kind = store_exec(store, ST_BEGIN, 3, params, &res);
    if (kind != FQ_STORE_OK)
        return kind;
    if (PQntuples(res) == 1) {
        c->item_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        c->already_done = false;
        PQclear(res);
        return FQ_STORE_OK;
    }
    PQclear(res);
    /* The upsert's WHERE skipped the row: it exists and is done. */
    kind = store_exec(store, ST_SELECT_ITEM, 2, params, &res);
    if (kind != FQ_STORE_OK)
        return kind;
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 1), "done") != 0) {
        snprintf(store->msg, sizeof(store->msg), "begin_item: item %s:%s changed concurrently",
                 c->item->platform, c->item->code);
        PQclear(res);
        return FQ_STORE_TRANSIENT;
    }
    c->item_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    c->already_done = true;
    PQclear(res);
    return FQ_STORE_OK;
}

fq_error_t *fq_store_begin_item(fq_store_t *store, const fq_item_t *item, int attempt,
                                int64_t *item_id, bool *already_done)
{
    begin_ctx_t c = {.item = item, .attempt = attempt};
    fq_error_t *err = store_run(store, begin_body, &c);
    if (!err) {
        if (item_id)
            *item_id = c.item_id;
        if (already_done)
            *already_done = c.already_done;
    }
    return err;
}

typedef struct done_ctx {
    int64_t item_id;
    const fq_media_info_t *info;
    size_t count;
    const char *frames_json;
} done_ctx_t;

static fq_store_kind_t done_body(fq_store_t *store, void *ctx)
{
    done_ctx_t *c = ctx;
    char id[24], count[24], duration[24], width[16], height[16];
    snprintf(id, sizeof(id), "%" PRId64, c->item_id);
    snprintf(count, sizeof(count), "%zu", c->count);
    const char *item_params[] = {id, count, NULL, NULL, NULL};
    if (c->info) {
        snprintf(duration, sizeof(duration), "%" PRId64, c->info->duration_ms);
        snprintf(width, sizeof(width), "%d", c->info->width);
        snprintf(height, sizeof(height), "%d", c->info->height);
        item_params[2] = duration;
        item_params[3] = width;
        item_params[4] = height;
    }
    fq_store_kind_t kind = store_command(store, "BEGIN", "mark_done");
    if (kind != FQ_STORE_OK)
        return kind;
    PGresult *res = NULL;
    kind = store_exec(store, ST_DONE_ITEM, 5, item_params, &res);
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    bool found = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    if (!found) {
        snprintf(store->msg, sizeof(store->msg), "mark_done: item %s does not exist", id);
        return store_abort(store, FQ_STORE_FAILED);
    }
    const char *frame_params[] = {id, c->frames_json};
    kind = store_exec(store, ST_DONE_FRAMES, 2, frame_params, NULL);
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    kind = store_command(store, "COMMIT", "mark_done commit");
    return kind == FQ_STORE_OK ? FQ_STORE_OK : store_abort(store, kind);
}

fq_error_t *fq_store_mark_done(fq_store_t *store, int64_t item_id, const fq_media_info_t *info,
                               const fq_stored_frame_t *frames, size_t count)
{
    /* Built once, outside the (possibly repeated) transaction. */
    char why[128];
    char *json = fq_store_frames_json(frames, count, why, sizeof(why));
    if (!json)
        return fq_error_new(FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, "mark_done: %s", why);
    done_ctx_t c = {.item_id = item_id, .info = info, .count = count, .frames_json = json};
    fq_error_t *err = store_run(store, done_body, &c);
    free(json);
    return err;
}

typedef struct error_ctx {
    const char *item[5]; /* platform, code, status, attempt, last_error */
    const char *row[9];  /* item_id (filled in), attempt, stage, class, message, worker, topic,
                            partition, offset */
} error_ctx_t;

static fq_store_kind_t error_body(fq_store_t *store, void *ctx)
{
    error_ctx_t *c = ctx;
    fq_store_kind_t kind = store_command(store, "BEGIN", "record_error");
    if (kind != FQ_STORE_OK)
        return kind;
    PGresult *res = NULL;
    kind = store_exec(store, ST_ERROR_ITEM, 5, c->item, &res);
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    char id[24];
    snprintf(id, sizeof(id), "%s", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    c->row[0] = id;
    kind = store_exec(store, ST_ERROR_ROW, 9, c->row, NULL);
    c->row[0] = NULL;
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    kind = store_command(store, "COMMIT", "record_error commit");
    return kind == FQ_STORE_OK ? FQ_STORE_OK : store_abort(store, kind);
}

fq_error_t *fq_store_record_error(fq_store_t *store, const fq_item_t *item, int attempt,
                                  const fq_error_t *err, const char *status,
                                  const fq_store_origin_t *origin)
{
    if (!status || (strcmp(status, "retrying") != 0 && strcmp(status, "dead") != 0))
        return fq_error_new(FQ_STAGE_STORE, FQ_CLASS_PERMANENT,
                            "record_error: status must be 'retrying' or 'dead', not '%s'",
                            status ? status : "(null)");
    fq_error_t *result = NULL;
    char attempt_s[16], partition[16], offset[24];
    snprintf(attempt_s, sizeof(attempt_s), "%d", attempt);
    const char *topic_raw = origin ? origin->topic : NULL;
    char *message = fq_store_utf8_clean(err ? fq_error_message(err) : NULL);
    char *worker = fq_store_utf8_clean(origin ? origin->worker : NULL);
    char *topic = fq_store_utf8_clean(topic_raw);
    if ((err && !message) || (origin && origin->worker && !worker) || (topic_raw && !topic)) {
        result = fq_error_new(FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, "record_error: out of memory");
        goto done;
    }
    if (topic) {
        snprintf(partition, sizeof(partition), "%" PRId32, origin->partition);
        snprintf(offset, sizeof(offset), "%" PRId64, origin->offset);
    }
    error_ctx_t c = {
        .item = {item->platform, item->code, status, attempt_s, message},
        .row = {NULL, attempt_s, err ? fq_stage_name(fq_error_stage(err)) : "store",
                err ? fq_class_name(fq_error_class(err)) : "retriable", message, worker, topic,
                topic ? partition : NULL, topic ? offset : NULL},
    };
    result = store_run(store, error_body, &c);
done:
    free(message);
    free(worker);
    free(topic);
    return result;
}

typedef struct status_ctx {
    const char *params[3];
} status_ctx_t;

static fq_store_kind_t status_body(fq_store_t *store, void *ctx)
{
    status_ctx_t *c = ctx;
    return store_exec(store, ST_SET_STATUS, 3, c->params, NULL);
}

fq_error_t *fq_store_set_status(fq_store_t *store, const char *platform, const char *code,
                                const char *status)
{
    static const char *const valid[] = {"queued", "processing", "done", "retrying", "dead"};
    bool ok = false;
    for (size_t i = 0; status && i < sizeof(valid) / sizeof(valid[0]); i++)
        ok = ok || strcmp(status, valid[i]) == 0;
    if (!ok)
        return fq_error_new(FQ_STAGE_STORE, FQ_CLASS_PERMANENT, "set_status: unknown status '%s'",
                            status ? status : "(null)");
    status_ctx_t c = {{platform, code, status}};
    return store_run(store, status_body, &c);
}

/* ---- migrations ---- */

typedef struct migrate_ctx {
    const fq_migration_t *migration;
    bool ran;
} migrate_ctx_t;

/* Creates the bookkeeping table under the lock: two concurrent CREATE TABLE IF NOT EXISTS
 * can still collide on the catalog's unique index. */
static fq_store_kind_t migrate_bootstrap_body(fq_store_t *store, void *ctx)
{
    (void)ctx;
    fq_store_kind_t kind = store_command(store, "BEGIN", "migrate");
    if (kind == FQ_STORE_OK)
        kind = store_command(store, "SELECT pg_advisory_xact_lock(" STORE_MIGRATE_LOCK ")",
                             "migrate lock");
    if (kind == FQ_STORE_OK)
        kind = store_command(store,
                             "CREATE TABLE IF NOT EXISTS frameq_schema_migrations ("
                             " version int PRIMARY KEY, name text NOT NULL,"
                             " applied_at timestamptz NOT NULL DEFAULT now())",
                             "migrate bootstrap");
    if (kind == FQ_STORE_OK)
        kind = store_command(store, "COMMIT", "migrate commit");
    return kind == FQ_STORE_OK ? FQ_STORE_OK : store_abort(store, kind);
}

static fq_store_kind_t migrate_one_body(fq_store_t *store, void *ctx)
{
    migrate_ctx_t *c = ctx;
    char version[16];
    snprintf(version, sizeof(version), "%d", c->migration->version);
    const char *params[] = {version, c->migration->name};
    c->ran = false;
    fq_store_kind_t kind = store_command(store, "BEGIN", "migrate");
    if (kind == FQ_STORE_OK)
        kind = store_command(store, "SELECT pg_advisory_xact_lock(" STORE_MIGRATE_LOCK ")",
                             "migrate lock");
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    /* Re-check under the lock: a concurrent migrator may have applied it while we waited. */
    PGresult *res =
        PQexecParams(store->conn, "SELECT 1 FROM frameq_schema_migrations WHERE version = $1::int",
                     1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        kind = store_fail(store, res, "migrate check");
        PQclear(res);
        return store_abort(store, kind);
    }
    bool applied = PQntuples(res) > 0;
    PQclear(res);
    if (applied)
        return store_abort(store, FQ_STORE_OK);
    char what[96];
    snprintf(what, sizeof(what), "migration %s", c->migration->name);
    kind = store_command(store, c->migration->sql, what);
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    res = PQexecParams(store->conn,
                       "INSERT INTO frameq_schema_migrations (version, name) VALUES ($1::int, $2)",
                       2, NULL, params, NULL, NULL, 0);
    kind = PQresultStatus(res) == PGRES_COMMAND_OK ? FQ_STORE_OK
                                                   : store_fail(store, res, "migrate record");
    PQclear(res);
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    kind = store_command(store, "COMMIT", "migrate commit");
    if (kind != FQ_STORE_OK)
        return store_abort(store, kind);
    c->ran = true;
    return FQ_STORE_OK;
}

fq_error_t *fq_store_migrate(fq_store_t *store, int *applied)
{
    int n = 0;
    fq_error_t *err = store_run(store, migrate_bootstrap_body, NULL);
    for (size_t i = 0; !err && i < fq_migrations_count; i++) {
        migrate_ctx_t c = {.migration = &fq_migrations[i]};
        err = store_run(store, migrate_one_body, &c);
        if (!err && c.ran) {
            n++;
            FQ_INFO(NULL, "applied migration %s", fq_migrations[i].name);
        }
    }
    if (applied)
        *applied = n;
    return err;
}

const char *fq_store_libpq_version(void)
{
    static _Thread_local char buf[32];
    fq_store_format_version(PQlibVersion(), buf, sizeof(buf));
    return buf;
}

bool fq_store_connected(const fq_store_t *store)
{
    return store && store->conn;
}

bool fq_store_conninfo_bad(const fq_store_t *store)
{
    return store && store->conninfo_bad;
}

const char *fq_store_password(const fq_store_t *store)
{
    return store ? store->password : NULL;
}
