/* The store's schema migrations (fq_store_migrate): the embedded SQL (fq_migrations.h) not yet
 * applied, each in its own transaction, serialised between migrators by an advisory lock. */
#include "fq_store.h"
#include "fq_store_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fq_log.h"
#include "fq_migrations.h"

/* pg_advisory_xact_lock key serialising migrators: the bytes of "frameq". */
#define STORE_MIGRATE_LOCK "112641446864241"

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
