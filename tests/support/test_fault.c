/* Shared by the integration tests that drive tests/tools/fault_server.py. */
#include "fq_test_fault.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int fq_test_fault_start(const char *www, const char *port_file, pid_t *pid)
{
    *pid = 0;
    const char *src = getenv("FQ_SOURCE_DIR");
    if (!src || !*src) {
        fprintf(stderr, "FQ_SOURCE_DIR is not set (run through ctest)\n");
        return -1;
    }
    char script[512];
    snprintf(script, sizeof(script), "%s/tests/tools/fault_server.py", src);
    pid_t child = fork();
    if (child < 0)
        return -1;
    if (child == 0) {
        execlp("python3", "python3", script, "--port", "0", "--dir", www, "--port-file", port_file,
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            int port = 0;
            int ok = fscanf(f, "%d", &port);
            fclose(f);
            if (ok == 1 && port > 0) {
                *pid = child;
                return port;
            }
        }
        int status;
        if (waitpid(child, &status, WNOHANG) == child) {
            fprintf(stderr, "fault_server.py exited early (status %d)\n", status);
            return -1;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "fault_server.py wrote no port to %s within 20 s\n", port_file);
    fq_test_fault_stop(child);
    return -1;
}

void fq_test_fault_stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

static size_t collect_body(char *buf, size_t size, size_t nmemb, void *opaque)
{
    char **out = opaque;
    size_t old = *out ? strlen(*out) : 0, n = size * nmemb;
    char *grown = realloc(*out, old + n + 1);
    if (!grown)
        return 0;
    memcpy(grown + old, buf, n);
    grown[old + n] = '\0';
    *out = grown;
    return n;
}

static int fault_count(int port, const char *path)
{
    char url[256];
    char *body = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/counts", port);
    CURL *curl = curl_easy_init();
    if (!curl)
        return -1;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK || !body) {
        fprintf(stderr, "GET %s failed: %s\n", url, curl_easy_strerror(rc));
        free(body);
        return -1;
    }
    json_t *root = json_loads(body, 0, NULL);
    free(body);
    if (!root) {
        fprintf(stderr, "%s is not JSON\n", url);
        return -1;
    }
    json_t *v = json_object_get(root, path);
    int n = v ? (int)json_integer_value(v) : 0;
    json_decref(root);
    return n;
}

int fq_test_fault_count(int port, const char *path)
{
    int n = fault_count(port, path);
    if (n < 0)
        fail_msg("cannot read the fault server's request counts on port %d", port);
    return n;
}

static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int port = -1;
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &alen) == 0)
        port = ntohs(a.sin_port);
    close(s);
    return port;
}

int fq_test_closed_port(void)
{
    int port = closed_port();
    if (port <= 0)
        fail_msg("cannot find a free loopback port");
    return port;
}

int fq_test_site_start(fq_test_site_t *site, const char *tag)
{
    memset(site, 0, sizeof(*site));
    snprintf(site->dir, sizeof(site->dir), "/tmp/fq-itest-%s-XXXXXX", tag);
    if (!mkdtemp(site->dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", site->dir, strerror(errno));
        site->dir[0] = '\0';
        return -1;
    }
    snprintf(site->www, sizeof(site->www), "%s/www", site->dir);
    if (mkdir(site->www, 0700) != 0) {
        fprintf(stderr, "mkdir %s: %s\n", site->www, strerror(errno));
        return -1;
    }
    char port_file[256];
    snprintf(port_file, sizeof(port_file), "%s/port", site->dir);
    site->port = fq_test_fault_start(site->www, port_file, &site->server);
    if (site->port <= 0) {
        fprintf(stderr, "cannot start tests/tools/fault_server.py\n");
        return -1;
    }
    return 0;
}

void fq_test_site_stop(fq_test_site_t *site)
{
    fq_test_fault_stop(site->server);
    site->server = 0;
    if (site->dir[0])
        fq_test_remove_tree(site->dir);
    site->dir[0] = '\0';
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "cannot remove %s: %s\n", path, strerror(errno));
    return 0; /* go on: remove as much as possible */
}

int fq_test_remove_tree(const char *path)
{
    /* Depth first (children before their directory), not following symlinks. */
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
        fprintf(stderr, "cannot remove %s: %s\n", path, strerror(errno));
        return -1;
    }
    return access(path, F_OK) == 0 ? -1 : 0;
}
