/* Shared by the integration tests that create their own databases (test_store, test_migrate). */
#include "fq_test_pg.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* libpq key=value quoting: 'value' with \ and ' escaped. */
static void append_kv(char **out, size_t *len, const char *key, const char *val)
{
    size_t need = strlen(key) + 2 * strlen(val) + 6;
    *out = realloc(*out, *len + need);
    assert_non_null(*out);
    char *p = *out + *len;
    p += sprintf(p, "%s%s='", *len ? " " : "", key);
    for (const char *v = val; *v; v++) {
        if (*v == '\\' || *v == '\'')
            *p++ = '\\';
        *p++ = *v;
    }
    *p++ = '\'';
    *p = '\0';
    *len = (size_t)(p - *out);
}

char *fq_test_conninfo_for(const char *url, const char *dbname, const char *app)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &errmsg);
    if (!opts)
        fail_msg("DATABASE_URL cannot be parsed: %s", errmsg ? errmsg : "out of memory");
    char *out = NULL;
    size_t len = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || strcmp(o->keyword, "dbname") == 0 ||
            (app && strcmp(o->keyword, "application_name") == 0))
            continue;
        append_kv(&out, &len, o->keyword, o->val);
    }
    append_kv(&out, &len, "dbname", dbname);
    if (app)
        append_kv(&out, &len, "application_name", app);
    PQconninfoFree(opts);
    return out;
}

PGresult *fq_test_pg_query(PGconn *pg, const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    return res;
}

PGconn *fq_test_pg_admin(const char **url)
{
    const char *u = getenv("DATABASE_URL");
    if (!u || !*u) {
        fprintf(stderr, "DATABASE_URL is not set: start the stack (deploy/local/up) and source "
                        ".stack/env before running integration tests\n");
        return NULL;
    }
    PGconn *admin = PQconnectdb(u);
    if (PQstatus(admin) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect to DATABASE_URL: %s\n", PQerrorMessage(admin));
        PQfinish(admin);
        return NULL;
    }
    if (url)
        *url = u;
    return admin;
}

/* One statement on admin; -1 with the message on stderr when it fails. */
static int admin_command(PGconn *admin, const char *sql)
{
    PGresult *res = PQexec(admin, sql);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc)
        fprintf(stderr, "%s: %s\n", sql, PQresultErrorMessage(res));
    PQclear(res);
    return rc;
}

int fq_test_pg_create_db(PGconn *admin, const char *tag, char *dbname, size_t size)
{
    snprintf(dbname, size, "fq_test_%s_%d_%08lx", tag, (int)getpid(), (unsigned long)random());
    char sql[160];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
    if (admin_command(admin, sql) == 0)
        return 0;
    dbname[0] = '\0'; /* nothing to drop */
    return -1;
}

int fq_test_pg_drop_db(PGconn *admin, const char *dbname)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
    return admin_command(admin, sql);
}
