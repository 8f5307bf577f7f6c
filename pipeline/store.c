/* frameq store: PostgreSQL through libpq (fq_store.h, DESIGN §3/§4): connection and statements.
 *
 * One connection per store, opened lazily. Every public call goes through store_run(), which
 * connects (statements are prepared once per connection, on first use), runs the call's body and,
 * when the connection turned out to be broken, resets it and runs the body once more. Bodies are
 * idempotent (upserts, ON CONFLICT DO NOTHING) and transactional, so running one twice, or
 * after a COMMIT whose acknowledgement was lost, leaves the same rows.
 */
#include "fq_store.h"
#include "fq_store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fq_log.h"

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

fq_store_kind_t store_fail(fq_store_t *store, const PGresult *res, const char *what)
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

fq_error_t *store_run(fq_store_t *store, store_body_t body, void *ctx)
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

fq_store_kind_t store_exec(fq_store_t *store, int st, int n, const char *const *params,
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

fq_store_kind_t store_command(fq_store_t *store, const char *sql, const char *what)
{
    PGresult *res = PQexec(store->conn, sql);
    ExecStatusType status = PQresultStatus(res);
    fq_store_kind_t kind = (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
                               ? FQ_STORE_OK
                               : store_fail(store, res, what);
    PQclear(res);
    return kind;
}

fq_store_kind_t store_abort(fq_store_t *store, fq_store_kind_t kind)
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
