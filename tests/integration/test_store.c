/* Integration tests of the store against the stack's PostgreSQL (DATABASE_URL).
 *
 * Everything runs in a throwaway database created here and dropped at the end, so runs do not
 * see each other's rows; item codes are unique per test anyway. The store connects with its
 * own application_name so a test can find and kill its backend. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "fq_migrations.h"
#include "fq_store.h"
#include "fq_test_env.h"
#include "fq_test_error.h"
#include "fq_test_pg.h"

typedef struct fixture {
    PGconn *admin; /**< to the stack's database: creates and drops ours */
    PGconn *pg;    /**< to our database: checks what the store wrote */
    char dbname[64];
    char app[64];
    char *conninfo; /**< for the store: our database, our application_name */
    fq_store_t *store;
} fixture_t;

static int group_setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof(*fx));
    *state = fx; /* from here the teardown cleans up, also after a failed setup */
    snprintf(fx->app, sizeof(fx->app), "fq-test-store-%d", (int)getpid());
    const char *url = NULL;
    fx->admin = fq_test_pg_admin(&url);
    if (!fx->admin || fq_test_pg_create_db(fx->admin, "store", fx->dbname, sizeof(fx->dbname)) != 0)
        return -1;
    char *checker = fq_test_conninfo_for(url, fx->dbname, "fq-test-checker");
    fx->pg = PQconnectdb(checker);
    free(checker);
    fx->conninfo = fq_test_conninfo_for(url, fx->dbname, fx->app);
    fx->store = fq_store_new(fx->conninfo);
    int applied = -1;
    fq_error_t *err = fq_store_migrate(fx->store, &applied);
    if (err) {
        fprintf(stderr, "migrate: %s\n", fq_error_message(err));
        fq_error_destroy(err);
        return -1;
    }
    return PQstatus(fx->pg) == CONNECTION_OK && applied == (int)fq_migrations_count ? 0 : -1;
}

static int group_teardown(void **state)
{
    fixture_t *fx = *state;
    if (!fx)
        return 0;
    fq_store_destroy(fx->store);
    PQfinish(fx->pg);
    int rc = 0;
    if (fx->dbname[0] && fx->admin)
        rc = fq_test_pg_drop_db(fx->admin, fx->dbname);
    PQfinish(fx->admin);
    free(fx->conninfo);
    free(fx);
    return rc;
}

/* A unique item per call. */
static fq_item_t new_item(const char *tag)
{
    static int counter;
    fq_item_t item = {.platform = "test"};
    snprintf(item.code, sizeof(item.code), "%s-%d-%d", tag, (int)getpid(), ++counter);
    return item;
}

/* A new item (new_item(tag)) begun at attempt 1: its id (the item was not done before). */
static int64_t begun_item(fixture_t *fx, fq_item_t *item, const char *tag)
{
    *item = new_item(tag);
    int64_t id = 0;
    bool done = true;
    fq_test_assert_ok(fq_store_begin_item(fx->store, item, 1, &id, &done));
    assert_true(id > 0);
    assert_false(done);
    return id;
}

/* One row of extraction_items as text: status, attempts, last_error ("" when NULL). */
typedef struct item_row {
    char id[24], status[16], attempts[16], frame_count[16], duration_ms[24], width[16], height[16],
        last_error[256];
    bool done_at, last_error_null;
} item_row_t;

static bool get_item(fixture_t *fx, const fq_item_t *item, item_row_t *row)
{
    const char *params[] = {item->platform, item->code};
    PGresult *res = fq_test_pg_query(fx->pg,
                                     "SELECT id, status, attempts, coalesce(frame_count::text, ''),"
                                     " coalesce(duration_ms::text, ''), coalesce(width::text, ''),"
                                     " coalesce(height::text, ''), coalesce(last_error, ''),"
                                     " done_at IS NOT NULL, last_error IS NULL"
                                     " FROM extraction_items WHERE platform = $1 AND code = $2",
                                     2, params);
    bool found = PQntuples(res) == 1;
    if (found) {
        memset(row, 0, sizeof(*row));
        snprintf(row->id, sizeof(row->id), "%s", PQgetvalue(res, 0, 0));
        snprintf(row->status, sizeof(row->status), "%s", PQgetvalue(res, 0, 1));
        snprintf(row->attempts, sizeof(row->attempts), "%s", PQgetvalue(res, 0, 2));
        snprintf(row->frame_count, sizeof(row->frame_count), "%s", PQgetvalue(res, 0, 3));
        snprintf(row->duration_ms, sizeof(row->duration_ms), "%s", PQgetvalue(res, 0, 4));
        snprintf(row->width, sizeof(row->width), "%s", PQgetvalue(res, 0, 5));
        snprintf(row->height, sizeof(row->height), "%s", PQgetvalue(res, 0, 6));
        snprintf(row->last_error, sizeof(row->last_error), "%s", PQgetvalue(res, 0, 7));
        row->done_at = strcmp(PQgetvalue(res, 0, 8), "t") == 0;
        row->last_error_null = strcmp(PQgetvalue(res, 0, 9), "t") == 0;
    }
    PQclear(res);
    return found;
}

static int count_rows(fixture_t *fx, const char *sql, int64_t item_id)
{
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)item_id);
    const char *params[] = {id};
    PGresult *res = fq_test_pg_query(fx->pg, sql, 1, params);
    int n = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

static void test_env_present(void **state)
{
    (void)state;
    assert_non_null(fq_test_env_require("DATABASE_URL"));
}

static void test_begin_item_attempts(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item = new_item("begin");
    int64_t id = 0, id2 = 0;
    bool done = true;
    fq_test_assert_ok(fq_store_begin_item(fx->store, &item, 1, &id, &done));
    assert_true(id > 0);
    assert_false(done);
    item_row_t row;
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "processing");
    assert_string_equal(row.attempts, "1");
    assert_int_equal(strtoll(row.id, NULL, 10), id);

    /* attempt 2 raises attempts; a stale attempt 1 never lowers it */
    static const struct {
        int attempt;
        const char *want;
    } steps[] = {{2, "2"}, {1, "2"}, {3, "3"}};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        done = true;
        fq_test_assert_ok(fq_store_begin_item(fx->store, &item, steps[i].attempt, &id2, &done));
        assert_int_equal(id2, id);
        assert_false(done);
        assert_true(get_item(fx, &item, &row));
        assert_string_equal(row.status, "processing");
        assert_string_equal(row.attempts, steps[i].want);
    }
}

/* Frame i of a run: the URL has characters that hand-made SQL or JSON quoting gets wrong. */
static void make_frames(fq_stored_frame_t *frames, char (*urls)[128], size_t n, int run)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(urls[i], sizeof(urls[i]), "file://./frames/r%d/a,b\"c\\d{e} f/%zu.jpg", run, i);
        frames[i] = (fq_stored_frame_t){.index = (int)i,
                                        .pts_ms = (int64_t)i * 1000 + run,
                                        .width = 320 + run,
                                        .height = 180,
                                        .bytes = 1000 + (int)i,
                                        .url = urls[i]};
    }
}

static void check_frames(fixture_t *fx, int64_t id, const fq_stored_frame_t *frames, size_t n)
{
    char sid[24];
    snprintf(sid, sizeof(sid), "%lld", (long long)id);
    const char *params[] = {sid};
    PGresult *res =
        fq_test_pg_query(fx->pg,
                         "SELECT idx, pts_ms, url, width, height, bytes FROM extraction_frames"
                         " WHERE item_id = $1::bigint ORDER BY idx",
                         1, params);
    assert_int_equal(PQntuples(res), n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(atoi(PQgetvalue(res, (int)i, 0)), frames[i].index);
        assert_int_equal(strtoll(PQgetvalue(res, (int)i, 1), NULL, 10), frames[i].pts_ms);
        assert_string_equal(PQgetvalue(res, (int)i, 2), frames[i].url);
        assert_int_equal(atoi(PQgetvalue(res, (int)i, 3)), frames[i].width);
        assert_int_equal(atoi(PQgetvalue(res, (int)i, 4)), frames[i].height);
        assert_int_equal(atoi(PQgetvalue(res, (int)i, 5)), frames[i].bytes);
    }
    PQclear(res);
}

static void test_mark_done(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item;
    int64_t id = begun_item(fx, &item, "done");

    fq_stored_frame_t frames[3];
    char urls[3][128];
    make_frames(frames, urls, 3, 1);
    fq_media_info_t info = {.duration_ms = 2500, .width = 640, .height = 360};
    fq_test_assert_ok(fq_store_mark_done(fx->store, id, &info, frames, 3));
    item_row_t row;
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "done");
    assert_string_equal(row.frame_count, "3");
    assert_string_equal(row.duration_ms, "2500");
    assert_string_equal(row.width, "640");
    assert_string_equal(row.height, "360");
    assert_true(row.done_at);
    assert_true(row.last_error_null);
    check_frames(fx, id, frames, 3);

    /* a re-run with fewer, different frames replaces the rows */
    make_frames(frames, urls, 2, 2);
    info.duration_ms = 2000;
    fq_test_assert_ok(fq_store_mark_done(fx->store, id, &info, frames, 2));
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.frame_count, "2");
    assert_string_equal(row.duration_ms, "2000");
    check_frames(fx, id, frames, 2);

    /* a done item is not begun again */
    int64_t id2 = 0;
    bool done = false;
    fq_test_assert_ok(fq_store_begin_item(fx->store, &item, 2, &id2, &done));
    assert_true(done);
    assert_int_equal(id2, id);
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "done");
    assert_string_equal(row.attempts, "1");
}

static void test_mark_done_many_frames(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item;
    int64_t id = begun_item(fx, &item, "many");
    enum { N = 1000 }; /* MAX_FRAMES default */
    fq_stored_frame_t *frames = calloc(N, sizeof(*frames));
    char(*urls)[128] = calloc(N, sizeof(*urls));
    make_frames(frames, urls, N, 3);
    fq_test_assert_ok(fq_store_mark_done(fx->store, id, NULL, frames, N));
    check_frames(fx, id, frames, N);
    item_row_t row;
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.frame_count, "1000");
    assert_string_equal(row.duration_ms, ""); /* no media info given */
    free(frames);
    free(urls);
}

static void test_mark_done_missing_item(void **state)
{
    fixture_t *fx = *state;
    fq_error_t *err = fq_store_mark_done(fx->store, -42, NULL, NULL, 0);
    fq_test_assert_error(err, FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, FQ_TEST_ANY, FQ_TEST_ANY);
    fq_error_destroy(err);
    /* the store is still usable afterwards (the transaction was rolled back) */
    fq_test_assert_ok(fq_store_ping(fx->store));
}

static void test_record_error_idempotent(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item;
    int64_t id = begun_item(fx, &item, "err");
    fq_error_t *cause = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "HTTP 503 from source");
    fq_store_origin_t origin = {
        .worker = "w-1", .topic = "extraction.jobs", .partition = 2, .offset = 12345};
    for (int i = 0; i < 2; i++)
        fq_test_assert_ok(fq_store_record_error(fx->store, &item, 1, cause, "retrying", &origin));
    fq_error_destroy(cause);
    assert_int_equal(
        count_rows(fx, "SELECT count(*) FROM extraction_errors WHERE item_id = $1::bigint", id), 1);
    char sid[24];
    snprintf(sid, sizeof(sid), "%lld", (long long)id);
    const char *params[] = {sid};
    PGresult *res =
        fq_test_pg_query(fx->pg,
                         "SELECT attempt, stage, error_class, message, worker, kafka_topic,"
                         " kafka_partition, kafka_offset FROM extraction_errors"
                         " WHERE item_id = $1::bigint",
                         1, params);
    static const char *const want[] = {
        "1", "fetch", "retriable", "HTTP 503 from source", "w-1", "extraction.jobs", "2", "12345"};
    for (int c = 0; c < 8; c++)
        assert_string_equal(PQgetvalue(res, 0, c), want[c]);
    PQclear(res);
    item_row_t row;
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "retrying");
    assert_string_equal(row.attempts, "1");
    assert_string_equal(row.last_error, "HTTP 503 from source");

    /* the next attempt adds a row and moves attempts up */
    cause = fq_error_new(FQ_STAGE_DECODE, FQ_CLASS_PERMANENT, "no video stream");
    fq_test_assert_ok(fq_store_record_error(fx->store, &item, 2, cause, "dead", NULL));
    fq_error_destroy(cause);
    assert_int_equal(
        count_rows(fx, "SELECT count(*) FROM extraction_errors WHERE item_id = $1::bigint", id), 2);
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "dead");
    assert_string_equal(row.attempts, "2");
    assert_string_equal(row.last_error, "no video stream");
}

/* Error text quoting a server or a file can be any bytes, and is cut at 1 KiB, possibly
 * inside a character: it must still be recorded. */
static void test_record_error_invalid_utf8(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item = new_item("utf8");
    char big[FQ_ERROR_MESSAGE_MAX + 16];
    size_t n = 0;
    n += (size_t)snprintf(big, sizeof(big), "bad \xff\xfe bytes: "); /* 14: 1024 - 14 = 3k + 2 */
    while (n + 3 < sizeof(big) - 1) { /* euro signs until the 1 KiB cut lands in one */
        memcpy(big + n, "\xe2\x82\xac", 3);
        n += 3;
    }
    big[n] = '\0';
    fq_error_t *cause = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_RETRIABLE, "%s", big);
    assert_int_equal(strlen(fq_error_message(cause)), FQ_ERROR_MESSAGE_MAX);
    fq_store_origin_t origin = {.worker = "w-\xc3", .topic = "t", .partition = 0, .offset = 1};
    fq_test_assert_ok(fq_store_record_error(fx->store, &item, 1, cause, "retrying", &origin));
    fq_error_destroy(cause);
    item_row_t row;
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "retrying");
    assert_memory_equal(row.last_error, "bad ?? bytes: \xe2\x82\xac", 17);
    int64_t id = strtoll(row.id, NULL, 10);
    assert_int_equal(count_rows(fx,
                                "SELECT count(*) FROM extraction_errors WHERE item_id = $1::bigint"
                                " AND worker = 'w-?' AND octet_length(message) = 1024"
                                " AND message LIKE 'bad ?? bytes: %'"
                                " AND right(message, 2) = repeat('?', 2)",
                                id),
                     1);
}

static void test_record_error_leaves_done(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item;
    int64_t id = begun_item(fx, &item, "donedead");
    fq_test_assert_ok(fq_store_mark_done(fx->store, id, NULL, NULL, 0));
    fq_error_t *cause = fq_error_new(FQ_STAGE_UPLOAD, FQ_CLASS_RETRIABLE, "late failure");
    fq_test_assert_ok(fq_store_record_error(fx->store, &item, 2, cause, "dead", NULL));
    fq_error_destroy(cause);
    item_row_t row;
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "done");
    assert_true(row.last_error_null);
    /* and set_status (redrive) does not send it back to work */
    fq_test_assert_ok(fq_store_set_status(fx->store, item.platform, item.code, "queued"));
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "done");
}

static void test_record_error_creates_item(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item = new_item("fresh");
    fq_error_t *cause = fq_error_new(FQ_STAGE_VALIDATE, FQ_CLASS_PERMANENT, "video_url: bad");
    fq_store_origin_t origin = {.worker = "w-2", .topic = NULL};
    fq_test_assert_ok(fq_store_record_error(fx->store, &item, 1, cause, "dead", &origin));
    fq_error_destroy(cause);
    item_row_t row;
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "dead");
    assert_string_equal(row.attempts, "1");
    int64_t id = strtoll(row.id, NULL, 10);
    assert_int_equal(count_rows(fx,
                                "SELECT count(*) FROM extraction_errors WHERE item_id = $1::bigint"
                                " AND kafka_topic IS NULL AND kafka_partition IS NULL"
                                " AND worker = 'w-2' AND stage = 'validate'",
                                id),
                     1);
}

/* A statement the database refuses for this item's values: retriable, SQLSTATE in the
 * message and in the code, and the store stays usable. (The pipeline validates items first;
 * the table's CHECK is the last line.) */
static void test_constraint_violation_is_retriable(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item = {.platform = "Not Valid!", .code = "x"};
    int64_t id = 0;
    bool done = false;
    fq_error_t *err = fq_store_begin_item(fx->store, &item, 1, &id, &done);
    /* PostgreSQL's MAKE_SQLSTATE('2','3','5','1','4') */
    fq_test_assert_error(err, FQ_STAGE_STORE, FQ_CLASS_RETRIABLE, FQ_ERROR_DOMAIN_SQLSTATE,
                         2 + (3 << 6) + (5 << 12) + (1 << 18) + (4 << 24));
    if (!strstr(fq_error_message(err), "SQLSTATE 23514"))
        fail_msg("no SQLSTATE in: %s", fq_error_message(err));
    fq_error_destroy(err);
    fq_test_assert_ok(fq_store_ping(fx->store));
}

static void test_set_status(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item = new_item("status");
    item_row_t row;
    assert_false(get_item(fx, &item, &row));
    fq_test_assert_ok(fq_store_set_status(fx->store, item.platform, item.code, "queued"));
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "queued");
    fq_error_t *cause = fq_error_new(FQ_STAGE_FETCH, FQ_CLASS_PERMANENT, "HTTP 404");
    fq_test_assert_ok(fq_store_record_error(fx->store, &item, 1, cause, "dead", NULL));
    fq_error_destroy(cause);
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "dead");
    fq_test_assert_ok(fq_store_set_status(fx->store, item.platform, item.code, "queued"));
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "queued");
    assert_string_equal(row.attempts, "1");
}

/* A TCP port on 127.0.0.1 with a bound socket; listening or not as asked. The caller closes
 * the fd (for "nothing listening", the bound socket keeps anyone else from taking it). */
static int local_port(bool listening, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    if (listening)
        assert_int_equal(listen(fd, 4), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_unreachable_is_outage(void **state)
{
    (void)state;
    int port = 0;
    int fd = local_port(false, &port);
    char uri[160], kv[160];
    snprintf(uri, sizeof(uri), "postgresql://frameq:TopSecret-9f3@127.0.0.1:%d/frameq", port);
    snprintf(kv, sizeof(kv), "host=127.0.0.1 port=%d user=frameq password=TopSecret-9f3", port);
    const char *const conninfos[] = {uri, kv};
    for (size_t i = 0; i < 2; i++) {
        fq_store_t *store = fq_store_new(conninfos[i]);
        fq_item_t item = new_item("down");
        int64_t id = 0;
        bool done = false;
        fq_error_t *errs[2] = {fq_store_ping(store),
                               fq_store_begin_item(store, &item, 1, &id, &done)};
        for (int e = 0; e < 2; e++) {
            assert_non_null(errs[e]);
            const char *msg = fq_error_message(errs[e]);
            assert_int_equal(fq_error_class(errs[e]), FQ_CLASS_OUTAGE);
            assert_int_equal(fq_error_stage(errs[e]), FQ_STAGE_STORE);
            if (strncmp(msg, "PostgreSQL unreachable: ", 24) != 0 || strstr(msg, "TopSecret"))
                fail_msg("bad outage message: %s", msg);
            assert_non_null(strstr(msg, "refused"));
            fq_error_destroy(errs[e]);
        }
        fq_store_destroy(store);
    }
    close(fd);
}

/* A server that accepts TCP but never answers: only connect_timeout (5 s unless the conninfo
 * says otherwise) ends the wait. The alarm turns a hang into a failure. */
static void test_connect_timeout_default(void **state)
{
    (void)state;
    int port = 0;
    int fd = local_port(true, &port);
    char kv[160];
    snprintf(kv, sizeof(kv), "host=127.0.0.1 port=%d user=frameq password=TopSecret-9f3", port);
    fq_store_t *store = fq_store_new(kv);
    alarm(120);
    fq_error_t *err = fq_store_ping(store);
    alarm(0);
    assert_non_null(err);
    assert_int_equal(fq_error_class(err), FQ_CLASS_OUTAGE);
    const char *msg = fq_error_message(err);
    if (!strstr(msg, "timeout") || strstr(msg, "TopSecret"))
        fail_msg("want a timeout without the password: %s", msg);
    fq_error_destroy(err);
    fq_store_destroy(store);
    close(fd);
}

static int backend_pid(fixture_t *fx)
{
    const char *params[] = {fx->app};
    PGresult *res = fq_test_pg_query(fx->pg,
                                     "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
                                     " AND datname = current_database()",
                                     1, params);
    int pid = PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : -PQntuples(res);
    PQclear(res);
    return pid;
}

static void test_reconnects_after_terminate(void **state)
{
    fixture_t *fx = *state;
    fq_test_assert_ok(fq_store_ping(fx->store));
    int pid = backend_pid(fx);
    assert_true(pid > 0);
    char spid[16];
    snprintf(spid, sizeof(spid), "%d", pid);
    const char *params[] = {spid};
    /* PostgreSQL 14+: waits up to 5 s until the backend is gone, so the store's next call
     * really meets a dead connection. */
    PGresult *res =
        fq_test_pg_query(fx->pg, "SELECT pg_terminate_backend($1::int, 5000)", 1, params);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);

    fq_item_t item;
    int64_t id = begun_item(fx, &item, "reconnect");
    int pid2 = backend_pid(fx);
    assert_true(pid2 > 0);
    assert_int_not_equal(pid2, pid);

    /* and again in the middle of work: the transactional mark_done survives it too */
    snprintf(spid, sizeof(spid), "%d", pid2);
    res = fq_test_pg_query(fx->pg, "SELECT pg_terminate_backend($1::int, 5000)", 1, params);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    fq_stored_frame_t frames[2];
    char urls[2][128];
    make_frames(frames, urls, 2, 4);
    fq_test_assert_ok(fq_store_mark_done(fx->store, id, NULL, frames, 2));
    check_frames(fx, id, frames, 2);
}

typedef struct done_call {
    fq_store_t *store;
    int64_t id;
    fq_stored_frame_t *frames;
    size_t count;
    fq_error_t *err;
} done_call_t;

static void *call_mark_done(void *arg)
{
    done_call_t *c = arg;
    c->err = fq_store_mark_done(c->store, c->id, NULL, c->frames, c->count);
    return NULL;
}

/* Waits until our store's backend (other than not_pid) waits on a lock; its pid. */
static int wait_for_blocked_backend(fixture_t *fx, int not_pid)
{
    char snot[16];
    snprintf(snot, sizeof(snot), "%d", not_pid);
    const char *params[] = {fx->app, snot};
    for (int i = 0; i < 1000; i++) {
        PGresult *res =
            fq_test_pg_query(fx->pg,
                             "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
                             " AND datname = current_database() AND wait_event_type = 'Lock'"
                             " AND pid <> $2::int",
                             2, params);
        int pid = PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;
        PQclear(res);
        if (pid > 0)
            return pid;
        usleep(10 * 1000);
    }
    fail_msg("the store's backend never blocked on the item row lock");
    return 0;
}

/* The connection dies inside mark_done's transaction (while it waits for a row lock): the
 * store reconnects and runs the whole transaction again, and the result is whole. */
static void test_reconnects_mid_transaction(void **state)
{
    fixture_t *fx = *state;
    fq_item_t item;
    int64_t id = begun_item(fx, &item, "midtx");
    char sid[24];
    snprintf(sid, sizeof(sid), "%lld", (long long)id);

    /* a second connection of the test holds the item's row lock */
    char *locker_ci =
        fq_test_conninfo_for(fq_test_env_require("DATABASE_URL"), fx->dbname, "fq-test-locker");
    PGconn *locker = PQconnectdb(locker_ci);
    free(locker_ci);
    assert_int_equal(PQstatus(locker), CONNECTION_OK);
    PQclear(fq_test_pg_query(locker, "BEGIN", 0, NULL));
    const char *params[] = {sid};
    PQclear(fq_test_pg_query(
        locker, "SELECT 1 FROM extraction_items WHERE id = $1::bigint FOR UPDATE", 1, params));

    fq_stored_frame_t frames[5];
    char urls[5][128];
    make_frames(frames, urls, 5, 5);
    done_call_t call = {.store = fx->store, .id = id, .frames = frames, .count = 5};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, call_mark_done, &call), 0);

    int pid = wait_for_blocked_backend(fx, 0);
    char spid[16];
    snprintf(spid, sizeof(spid), "%d", pid);
    const char *kill_params[] = {spid};
    PGresult *res =
        fq_test_pg_query(fx->pg, "SELECT pg_terminate_backend($1::int, 5000)", 1, kill_params);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    /* the retry, on a new connection, blocks on the same lock until we let go */
    int pid2 = wait_for_blocked_backend(fx, pid);
    assert_int_not_equal(pid2, pid);
    PQclear(fq_test_pg_query(locker, "ROLLBACK", 0, NULL));
    pthread_join(thread, NULL);
    PQfinish(locker);
    fq_test_assert_ok(call.err);

    item_row_t row;
    assert_true(get_item(fx, &item, &row));
    assert_string_equal(row.status, "done");
    assert_string_equal(row.frame_count, "5");
    check_frames(fx, id, frames, 5);
}

int main(void)
{
    srandom((unsigned)getpid() ^ (unsigned)time(NULL));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_present),
        cmocka_unit_test(test_begin_item_attempts),
        cmocka_unit_test(test_mark_done),
        cmocka_unit_test(test_mark_done_many_frames),
        cmocka_unit_test(test_mark_done_missing_item),
        cmocka_unit_test(test_record_error_idempotent),
        cmocka_unit_test(test_record_error_invalid_utf8),
        cmocka_unit_test(test_record_error_leaves_done),
        cmocka_unit_test(test_record_error_creates_item),
        cmocka_unit_test(test_constraint_violation_is_retriable),
        cmocka_unit_test(test_set_status),
        cmocka_unit_test(test_unreachable_is_outage),
        cmocka_unit_test(test_connect_timeout_default),
        cmocka_unit_test(test_reconnects_after_terminate),
        cmocka_unit_test(test_reconnects_mid_transaction),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
