/**
 * @file fq_test_pg.h
 * @brief PostgreSQL helpers for integration tests that work in throwaway databases.
 */
#ifndef FQ_TEST_PG_H
#define FQ_TEST_PG_H

#include <stddef.h>

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

/** @brief A connection to the stack's DATABASE_URL (to create and drop throwaway databases), or
 *         NULL with the reason on stderr. For group setups, which cannot fail a test. */
PGconn *fq_test_pg_admin(const char **url);

/** @brief Creates database "fq_test_<tag>_<pid>_<random>" through admin, its name in dbname.
 * @return 0, or -1 with the server's message on stderr (and dbname ""). */
int fq_test_pg_create_db(PGconn *admin, const char *tag, char *dbname, size_t size);

/** @brief Drops dbname (WITH (FORCE)) through admin. @return 0, or -1 with the message on stderr.
 */
int fq_test_pg_drop_db(PGconn *admin, const char *dbname);

#endif /* FQ_TEST_PG_H */
