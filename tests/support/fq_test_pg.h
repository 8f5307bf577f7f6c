/**
 * @file fq_test_pg.h
 * @brief PostgreSQL helpers for integration tests that work in throwaway databases.
 */
#ifndef FQ_TEST_PG_H
#define FQ_TEST_PG_H

#include <libpq-fe.h>

/**
 * @brief url (a libpq URI or key=value conninfo) rewritten as key=value with dbname replaced, and
 *        application_name replaced by app when app is not NULL. malloc'd; fails the current cmocka
 *        test when url cannot be parsed.
 */
char *fq_test_conninfo_for(const char *url, const char *dbname, const char *app);

/** @brief Runs sql with text parameters; fails the current cmocka test (quoting sql and the
 *         server's message) unless it succeeds. The caller clears the result. */
PGresult *fq_test_pg_query(PGconn *pg, const char *sql, int n, const char *const *params);

#endif /* FQ_TEST_PG_H */
