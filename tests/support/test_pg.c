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
