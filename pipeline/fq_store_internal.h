/* The store's pure helpers (store_text.c) and a look at its state, for the store's files and
 * its unit test (tests/unit/test_store_logic.c); then the connection layer the store's files
 * share. Not for other callers: they use fq_store.h. */
#ifndef FQ_STORE_INTERNAL_H
#define FQ_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "fq_store.h"

/** What a failed command means for the store's retry loop. */
typedef enum fq_store_kind {
    FQ_STORE_OK = 0,
    FQ_STORE_BROKEN,    /**< connection lost or unusable: reset and run again once, then outage */
    FQ_STORE_TRANSIENT, /**< serialization failure / deadlock: run again once, then retriable */
    FQ_STORE_OUTAGE,    /**< the server works but cannot serve anyone (disk full ...): outage */
    FQ_STORE_FAILED,    /**< this statement failed (constraint ...): retriable, no retry here */
} fq_store_kind_t;

/** @brief Classifies a failed command from its SQLSTATE (NULL or "" when libpq had none) and
 *  whether the connection is still usable. */
fq_store_kind_t fq_store_kind_for(const char *sqlstate, bool conn_ok);

/** @brief PostgreSQL's packing of a SQLSTATE into an int (6 bits a character); 0 for none. */
int fq_store_sqlstate_code(const char *sqlstate);

/** @brief Makes a libpq message one line and masks the password (decoded and as written). */
void fq_store_clean_message(char *buf, const char *password, const char *password_raw);

/** @brief The password as written in a postgres:// URI (user:PASSWORD@host), malloc'd, or NULL. */
char *fq_store_uri_password(const char *conninfo);

/** @brief The frames as the JSON array of objects fq_done_frames reads, malloc'd; NULL with why
 *  on a URL that is not UTF-8 or out of memory. */
char *fq_store_frames_json(const fq_stored_frame_t *frames, size_t count, char *why,
                           size_t why_size);

/** @brief A malloc'd copy of s (NULL stays NULL) with every byte that is not valid UTF-8
 *  replaced by '?'. */
char *fq_store_utf8_clean(const char *s);

/** @brief "15.4" from 150004; "9.6.5" from 90605 (the pre-10 numbering). */
void fq_store_format_version(int v, char *buf, size_t size);

/** @brief The store holds a connection (none before the first call: they are lazy). */
bool fq_store_connected(const fq_store_t *store);

/** @brief libpq could not parse the store's conninfo. */
bool fq_store_conninfo_bad(const fq_store_t *store);

/** @brief The decoded password read from the conninfo, or NULL. */
const char *fq_store_password(const fq_store_t *store);

/* ---- the connection layer, shared by store.c (connection, statements, public set-up),
 * store_items.c (the item calls) and store_migrate.c (migrations) ---- */

#include <libpq-fe.h>

#define STORE_MSG_MAX 768

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

typedef fq_store_kind_t (*store_body_t)(fq_store_t *store, void *ctx);

/** Runs body on a live connection; a broken connection is reset and the body run once more
 *  (it is idempotent). Returns NULL or the classified error. */
fq_error_t *store_run(fq_store_t *store, store_body_t body, void *ctx) FQ_WARN_UNUSED;
/** Executes a prepared statement; *out receives the result on success (caller clears). */
fq_store_kind_t store_exec(fq_store_t *store, int st, int n, const char *const *params,
                           PGresult **out) FQ_WARN_UNUSED;
/** Runs a plain command (BEGIN/COMMIT/ROLLBACK, migrations: no values in them). */
fq_store_kind_t store_command(fq_store_t *store, const char *sql, const char *what) FQ_WARN_UNUSED;
/** Ends a transaction whose body failed with kind; returns kind (the body's error stays). */
fq_store_kind_t store_abort(fq_store_t *store, fq_store_kind_t kind);
/** Records the failure of the last command (res may be NULL) and classifies it. */
fq_store_kind_t store_fail(fq_store_t *store, const PGresult *res, const char *what);

#endif /* FQ_STORE_INTERNAL_H */
