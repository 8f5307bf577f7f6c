/* Schema migrations embedded at build time from deploy/migrations/NNN_name.sql. */
#ifndef FQ_MIGRATIONS_H
#define FQ_MIGRATIONS_H
#include <stddef.h>

typedef struct fq_migration {
    int version;      /**< schema version this migration brings the database to */
    const char *name; /**< file name without .sql */
    const char *sql;  /**< the whole file; run in one transaction */
} fq_migration_t;

extern const fq_migration_t fq_migrations[]; /**< sorted by version */
extern const size_t fq_migrations_count;

#endif
