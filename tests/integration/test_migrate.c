/* Integration tests of fq_store_migrate against the stack's PostgreSQL (DATABASE_URL): the
 * embedded migrations produce the DESIGN §4 schema, run once, and two migrators at once
 * apply each version exactly once. Every test works in its own throwaway database. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "fq_migrations.h"
#include "fq_store.h"
#include "fq_test_error.h"
#include "fq_test_pg.h"

typedef struct fixture {
    PGconn *admin; /**< to the stack's database: creates and drops ours */
    const char *url;
    char dbname[64]; /**< the database migrated by the first test */
    char *conninfo;  /**< to it */
    PGconn *pg;      /**< to it, for checks */
} fixture_t;

static void create_db(fixture_t *fx, const char *tag, char *dbname, size_t size)
{
    if (fq_test_pg_create_db(fx->admin, tag, dbname, size) != 0)
        fail_msg("cannot create a database for the test (see above)");
}

/* Runs a statement expected to fail; returns its SQLSTATE ("" when it succeeded). */
static void expect_sqlstate(PGconn *pg, const char *sql, int n, const char *const *params,
                            const char *want)
{
    PGresult *res = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state || strcmp(state, want) != 0)
        fail_msg("%s: want SQLSTATE %s, got %s (%s)", sql, want, state ? state : "success",
                 PQresultErrorMessage(res));
    PQclear(res);
}

static int group_setup(void **state)
{
    if (fq_migrations_count == 0) {
        fprintf(stderr, "no migrations are embedded (deploy/migrations/*.sql)\n");
        return -1;
    }
    fixture_t *fx = calloc(1, sizeof(*fx));
    *state = fx;
    fx->admin = fq_test_pg_admin(&fx->url);
    return fx->admin ? 0 : -1;
}

static int group_teardown(void **state)
{
    fixture_t *fx = *state;
    if (!fx)
        return 0;
    int rc = 0;
    PQfinish(fx->pg);
    if (fx->dbname[0])
        rc = fq_test_pg_drop_db(fx->admin, fx->dbname);
    PQfinish(fx->admin);
    free(fx->conninfo);
    free(fx);
    return rc;
}

/* Must run first: the later tests check the database it migrated. */
static void test_migrate_once(void **state)
{
    fixture_t *fx = *state;
    create_db(fx, "migrate", fx->dbname, sizeof(fx->dbname));
    fx->conninfo = fq_test_conninfo_for(fx->url, fx->dbname, NULL);
    fq_store_t *store = fq_store_new(fx->conninfo);
    /* before the schema exists: not the item's fault, so an outage that names the fix */
    fq_item_t item = {.platform = "test", .code = "before-migrate"};
    int64_t id = 0;
    bool done = true;
    fq_error_t *err = fq_store_begin_item(store, &item, 1, &id, &done);
    fq_test_assert_error(err, FQ_STAGE_STORE, FQ_CLASS_OUTAGE, FQ_TEST_ANY, FQ_TEST_ANY);
    if (!strstr(fq_error_message(err), "42P01") || !strstr(fq_error_message(err), "--migrate"))
        fail_msg("unexpected message: %s", fq_error_message(err));
    fq_error_destroy(err);

    int applied = -1;
    fq_test_assert_ok(fq_store_migrate(store, &applied));
    assert_int_equal(applied, fq_migrations_count);
    /* the same store now works: the failed statement was not remembered as prepared */
    fq_test_assert_ok(fq_store_begin_item(store, &item, 1, &id, &done));
    assert_true(id > 0);
    assert_false(done);
    applied = -1;
    fq_test_assert_ok(fq_store_migrate(store, &applied));
    assert_int_equal(applied, 0);
    fq_store_destroy(store);

    /* a new store (another worker starting) finds nothing to do either */
    store = fq_store_new(fx->conninfo);
    applied = -1;
    fq_test_assert_ok(fq_store_migrate(store, &applied));
    assert_int_equal(applied, 0);
    fq_store_destroy(store);

    fx->pg = PQconnectdb(fx->conninfo);
    assert_int_equal(PQstatus(fx->pg), CONNECTION_OK);
    PGresult *res = fq_test_pg_query(fx->pg,
                                     "SELECT version, name, applied_at IS NOT NULL"
                                     " FROM frameq_schema_migrations ORDER BY version",
                                     0, NULL);
    assert_int_equal(PQntuples(res), fq_migrations_count);
    for (size_t i = 0; i < fq_migrations_count; i++) {
        assert_int_equal(atoi(PQgetvalue(res, (int)i, 0)), fq_migrations[i].version);
        assert_string_equal(PQgetvalue(res, (int)i, 1), fq_migrations[i].name);
        assert_string_equal(PQgetvalue(res, (int)i, 2), "t");
    }
    PQclear(res);
}

static void need_db(fixture_t *fx)
{
    if (!fx->pg || PQstatus(fx->pg) != CONNECTION_OK)
        fail_msg("test_migrate_once did not leave a migrated database");
}

/* DESIGN §4, column by column. */
static void test_schema_columns(void **state)
{
    fixture_t *fx = *state;
    need_db(fx);
    static const struct {
        const char *table, *column, *type, *nullable;
    } want[] = {
        {"extraction_errors", "attempt", "integer", "NO"},
        {"extraction_errors", "created_at", "timestamp with time zone", "NO"},
        {"extraction_errors", "error_class", "text", "NO"},
        {"extraction_errors", "id", "bigint", "NO"},
        {"extraction_errors", "item_id", "bigint", "NO"},
        {"extraction_errors", "kafka_offset", "bigint", "YES"},
        {"extraction_errors", "kafka_partition", "integer", "YES"},
        {"extraction_errors", "kafka_topic", "text", "YES"},
        {"extraction_errors", "message", "text", "YES"},
        {"extraction_errors", "stage", "text", "NO"},
        {"extraction_errors", "worker", "text", "YES"},
        {"extraction_frames", "bytes", "integer", "YES"},
        {"extraction_frames", "height", "integer", "YES"},
        {"extraction_frames", "idx", "integer", "NO"},
        {"extraction_frames", "item_id", "bigint", "NO"},
        {"extraction_frames", "pts_ms", "bigint", "NO"},
        {"extraction_frames", "url", "text", "NO"},
        {"extraction_frames", "width", "integer", "YES"},
        {"extraction_items", "attempts", "integer", "NO"},
        {"extraction_items", "code", "text", "NO"},
        {"extraction_items", "created_at", "timestamp with time zone", "NO"},
        {"extraction_items", "done_at", "timestamp with time zone", "YES"},
        {"extraction_items", "duration_ms", "bigint", "YES"},
        {"extraction_items", "frame_count", "integer", "YES"},
        {"extraction_items", "height", "integer", "YES"},
        {"extraction_items", "id", "bigint", "NO"},
        {"extraction_items", "last_error", "text", "YES"},
        {"extraction_items", "platform", "text", "NO"},
        {"extraction_items", "status", "text", "NO"},
        {"extraction_items", "updated_at", "timestamp with time zone", "NO"},
        {"extraction_items", "width", "integer", "YES"},
    };
    size_t n = sizeof(want) / sizeof(want[0]);
    PGresult *res =
        fq_test_pg_query(fx->pg,
                         "SELECT table_name, column_name, data_type, is_nullable"
                         " FROM information_schema.columns WHERE table_schema = 'public'"
                         " AND table_name IN ('extraction_items', 'extraction_errors',"
                         " 'extraction_frames') ORDER BY table_name, column_name",
                         0, NULL);
    for (int r = 0; r < PQntuples(res) && (size_t)r < n; r++) {
        const char *got[] = {PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
                             PQgetvalue(res, r, 3)};
        const char *exp[] = {want[r].table, want[r].column, want[r].type, want[r].nullable};
        for (int c = 0; c < 4; c++)
            if (strcmp(got[c], exp[c]) != 0)
                fail_msg("column %d: got %s.%s %s nullable=%s, want %s.%s %s nullable=%s", r,
                         got[0], got[1], got[2], got[3], exp[0], exp[1], exp[2], exp[3]);
    }
    assert_int_equal(PQntuples(res), n);
    PQclear(res);

    /* ids come from sequences (bigserial) */
    res = fq_test_pg_query(
        fx->pg,
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
        " AND column_name = 'id' AND column_default LIKE 'nextval(%'"
        " AND table_name IN ('extraction_items', 'extraction_errors')",
        0, NULL);
    assert_string_equal(PQgetvalue(res, 0, 0), "2");
    PQclear(res);
}

/* Primary keys, unique constraints and foreign keys, with their columns in order. */
static void test_schema_constraints(void **state)
{
    fixture_t *fx = *state;
    need_db(fx);
    static const char *const want[] = {
        "extraction_errors f item_id -> extraction_items(id)",
        "extraction_errors p id",
        "extraction_errors u item_id,attempt",
        "extraction_frames f item_id -> extraction_items(id)",
        "extraction_frames p item_id,idx",
        "extraction_items p id",
        "extraction_items u platform,code",
    };
    size_t n = sizeof(want) / sizeof(want[0]);
    PGresult *res = fq_test_pg_query(
        fx->pg,
        "SELECT c.conrelid::regclass::text || ' ' || c.contype::text || ' ' ||"
        " (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.conkey)"
        "  WITH ORDINALITY AS k(attnum, ord) JOIN pg_attribute a"
        "  ON a.attrelid = c.conrelid AND a.attnum = k.attnum) ||"
        " CASE WHEN c.contype = 'f' THEN ' -> ' || c.confrelid::regclass::text || '(' ||"
        " (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.confkey)"
        "  WITH ORDINALITY AS k(attnum, ord) JOIN pg_attribute a"
        "  ON a.attrelid = c.confrelid AND a.attnum = k.attnum) || ')' ELSE '' END AS d"
        " FROM pg_constraint c WHERE c.contype IN ('p', 'u', 'f')"
        " AND c.conrelid::regclass::text IN ('extraction_items', 'extraction_errors',"
        " 'extraction_frames') ORDER BY d",
        0, NULL);
    for (int r = 0; r < PQntuples(res) && (size_t)r < n; r++)
        assert_string_equal(PQgetvalue(res, r, 0), want[r]);
    assert_int_equal(PQntuples(res), n);
    PQclear(res);
}

static void test_status_check(void **state)
{
    fixture_t *fx = *state;
    need_db(fx);
    static const char *const valid[] = {"queued", "processing", "done", "retrying", "dead"};
    const char *sql =
        "INSERT INTO extraction_items (platform, code, status) VALUES ('test', $1, $2)";
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        char code[32];
        snprintf(code, sizeof(code), "check-%zu", i);
        const char *params[] = {code, valid[i]};
        PQclear(fq_test_pg_query(fx->pg, sql, 2, params));
    }
    static const char *const invalid[] = {"bogus", "DONE", ""};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        const char *params[] = {"check-bad", invalid[i]};
        expect_sqlstate(fx->pg, sql, 2, params, "23514"); /* check_violation */
    }
    /* (platform, code) is unique */
    const char *dup[] = {"check-0", "queued"};
    expect_sqlstate(fx->pg, sql, 2, dup, "23505");
}

static void test_foreign_keys(void **state)
{
    fixture_t *fx = *state;
    need_db(fx);
    expect_sqlstate(fx->pg,
                    "INSERT INTO extraction_errors (item_id, attempt, stage, error_class)"
                    " VALUES (-1, 1, 'fetch', 'retriable')",
                    0, NULL, "23503");
    expect_sqlstate(fx->pg,
                    "INSERT INTO extraction_frames (item_id, idx, pts_ms, url)"
                    " VALUES (-1, 0, 0, 'file://x')",
                    0, NULL, "23503");
    /* and with an existing item both succeed; a second error row for the attempt does not */
    PGresult *res =
        fq_test_pg_query(fx->pg,
                         "INSERT INTO extraction_items (platform, code) VALUES ('test', 'fk')"
                         " RETURNING id",
                         0, NULL);
    char id[24];
    snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    const char *params[] = {id};
    const char *err_sql = "INSERT INTO extraction_errors (item_id, attempt, stage, error_class)"
                          " VALUES ($1::bigint, 1, 'fetch', 'retriable')";
    PQclear(fq_test_pg_query(fx->pg, err_sql, 1, params));
    expect_sqlstate(fx->pg, err_sql, 1, params, "23505");
    PQclear(fq_test_pg_query(fx->pg,
                             "INSERT INTO extraction_frames (item_id, idx, pts_ms, url)"
                             " VALUES ($1::bigint, 0, 0, 'file://x')",
                             1, params));
}

typedef struct racer {
    const char *conninfo;
    pthread_barrier_t *barrier;
    int applied;
    char error[256];
} racer_t;

static void *race_migrate(void *arg)
{
    racer_t *r = arg;
    fq_store_t *store = fq_store_new(r->conninfo);
    /* connect first, so both reach the lock at about the same moment */
    fq_error_t *err = fq_store_ping(store);
    pthread_barrier_wait(r->barrier);
    if (!err)
        err = fq_store_migrate(store, &r->applied);
    if (err) {
        snprintf(r->error, sizeof(r->error), "%s", fq_error_message(err));
        fq_error_destroy(err);
    }
    fq_store_destroy(store);
    return NULL;
}

static void test_concurrent_migrators(void **state)
{
    fixture_t *fx = *state;
    for (int round = 0; round < 3; round++) {
        char dbname[64];
        create_db(fx, "race", dbname, sizeof(dbname));
        char *conninfo = fq_test_conninfo_for(fx->url, dbname, NULL);
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, 2);
        racer_t racers[2] = {{.conninfo = conninfo, .barrier = &barrier, .applied = -1},
                             {.conninfo = conninfo, .barrier = &barrier, .applied = -1}};
        pthread_t threads[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&threads[i], NULL, race_migrate, &racers[i]), 0);
        for (int i = 0; i < 2; i++)
            pthread_join(threads[i], NULL);
        pthread_barrier_destroy(&barrier);

        PGconn *pg = PQconnectdb(conninfo);
        PGresult *res = NULL;
        if (PQstatus(pg) == CONNECTION_OK)
            res = PQexec(pg, "SELECT version, count(*) FROM frameq_schema_migrations"
                             " GROUP BY version ORDER BY version");
        bool ok = racers[0].error[0] == '\0' && racers[1].error[0] == '\0' &&
                  racers[0].applied + racers[1].applied == (int)fq_migrations_count &&
                  PQresultStatus(res) == PGRES_TUPLES_OK &&
                  PQntuples(res) == (int)fq_migrations_count;
        for (int r = 0; ok && r < PQntuples(res); r++)
            ok = atoi(PQgetvalue(res, r, 0)) == fq_migrations[r].version &&
                 strcmp(PQgetvalue(res, r, 1), "1") == 0;
        PQclear(res);
        PQfinish(pg);
        free(conninfo);
        fq_test_pg_drop_db(fx->admin, dbname);
        if (!ok)
            fail_msg("round %d: migrator 1 applied %d (%s), migrator 2 applied %d (%s); want "
                     "%zu in all, each version once",
                     round, racers[0].applied, racers[0].error, racers[1].applied, racers[1].error,
                     fq_migrations_count);
    }
}

int main(void)
{
    srandom((unsigned)getpid() ^ (unsigned)time(NULL));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_once),       cmocka_unit_test(test_schema_columns),
        cmocka_unit_test(test_schema_constraints), cmocka_unit_test(test_status_check),
        cmocka_unit_test(test_foreign_keys),       cmocka_unit_test(test_concurrent_migrators),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
