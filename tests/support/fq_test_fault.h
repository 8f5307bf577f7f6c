/**
 * @file fq_test_fault.h
 * @brief The HTTP fault server (tests/tools/fault_server.py) seen from a C test: start it on an
 *        ephemeral port, read its request counts, stop it; and a loopback port nothing listens on.
 */
#ifndef FQ_TEST_FAULT_H
#define FQ_TEST_FAULT_H

#include <sys/types.h>

/**
 * @brief Starts fault_server.py serving www on 127.0.0.1, port chosen by the kernel; waits (up to
 *        ~20 s on a busy machine) for the port it writes to port_file.
 * @return the port, with *pid set; -1 with a message on stderr (and *pid 0) otherwise.
 */
int fq_test_fault_start(const char *www, const char *port_file, pid_t *pid);

/** @brief Stops the server started by fq_test_fault_start (SIGTERM, then waits); 0 is a no-op. */
void fq_test_fault_stop(pid_t pid);

/** @brief How many requests the server on port saw for path (from its /counts); fails the
 *         current cmocka test when the server cannot tell. */
int fq_test_fault_count(int port, const char *path);

/** @brief A loopback port that was free a moment ago (bound, read, closed): connecting to it is
 *         refused. Fails the current cmocka test when none can be found. */
int fq_test_closed_port(void);

/** A private temporary directory whose www/ the fault server serves. */
typedef struct fq_test_site {
    char dir[128]; /**< /tmp/fq-itest-<tag>-XXXXXX; removed by fq_test_site_stop */
    char www[192]; /**< dir/www: what the server serves (uploads land in www/uploads) */
    pid_t server;
    int port;
} fq_test_site_t;

/** @brief Makes site->dir and site->www and starts the fault server on www (for group setups).
 * @return 0, or -1 with a message on stderr. */
int fq_test_site_start(fq_test_site_t *site, const char *tag);

/** @brief Stops the server and removes site->dir with everything below it; a zeroed site is a
 *         no-op. */
void fq_test_site_stop(fq_test_site_t *site);

/** @brief Removes path and everything below it (nftw, no shell); 0, or -1 with a message on
 *         stderr. */
int fq_test_remove_tree(const char *path);

#endif /* FQ_TEST_FAULT_H */
