/* Unit tests for consumer/metrics.c and metrics_http.c: the exposition text (exact), label
 * handling, concurrency, and the HTTP endpoint on 127.0.0.1:0 (real sockets, no other
 * services). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fq_metrics.h"
#include "fq_metrics_http.h"

/* A client that never hangs the test: every receive gives up after this long and the
 * test fails with a message instead of blocking ctest. */
#define CLIENT_TIMEOUT_S 30

static char *render(fq_metrics_t *metrics)
{
    char *text = fq_metrics_render(metrics);
    assert_non_null(text);
    return text;
}

static void assert_render(fq_metrics_t *metrics, const char *expected)
{
    char *text = render(metrics);
    assert_string_equal(text, expected);
    free(text);
}

/* ---- exposition ---------------------------------------------------------------------- */

static void test_counter_text(void **state)
{
    fq_metrics_t *metrics = fq_metrics_new();
    assert_non_null(metrics);
    assert_int_equal(fq_metrics_declare(metrics, "frameq_items_total", FQ_METRIC_COUNTER,
                                        "Items that reached an outcome."),
                     0);
    assert_render(metrics, "# HELP frameq_items_total Items that reached an outcome.\n"
                           "# TYPE frameq_items_total counter\n");
    fq_metrics_add(metrics, "frameq_items_total", 1, "outcome", "done", NULL);
    fq_metrics_add(metrics, "frameq_items_total", 2, "outcome", "done", NULL);
    fq_metrics_add(metrics, "frameq_items_total", 1, "outcome", "dlq", NULL);
    fq_metrics_add(metrics, "frameq_items_total", 0.5, NULL);
    /* counters never go down: a negative add is ignored */
    fq_metrics_add(metrics, "frameq_items_total", -5, "outcome", "done", NULL);
    assert_render(metrics, "# HELP frameq_items_total Items that reached an outcome.\n"
                           "# TYPE frameq_items_total counter\n"
                           "frameq_items_total 0.5\n"
                           "frameq_items_total{outcome=\"dlq\"} 1\n"
                           "frameq_items_total{outcome=\"done\"} 3\n");
    fq_metrics_destroy(metrics);
}

static void test_gauge_text(void **state)
{
    fq_metrics_t *metrics = fq_metrics_new();
    assert_int_equal(fq_metrics_declare(metrics, "frameq_lag", FQ_METRIC_GAUGE, "Lag."), 0);
    fq_metrics_set(metrics, "frameq_lag", 42, "partition", "0", NULL);
    fq_metrics_set(metrics, "frameq_lag", 0.25, "partition", "1", NULL);
    fq_metrics_set(metrics, "frameq_lag", -3, "partition", "2", NULL);
    fq_metrics_add(metrics, "frameq_lag", 1.5, "partition", "2", NULL);
    fq_metrics_add(metrics, "frameq_lag", -2, "partition", "0", NULL);
    fq_metrics_set(metrics, "frameq_lag", 1e300, "partition", "3", NULL);
    assert_render(metrics, "# HELP frameq_lag Lag.\n"
                           "# TYPE frameq_lag gauge\n"
                           "frameq_lag{partition=\"0\"} 40\n"
                           "frameq_lag{partition=\"1\"} 0.25\n"
                           "frameq_lag{partition=\"2\"} -1.5\n"
                           "frameq_lag{partition=\"3\"} 1e+300\n");
    /* A partition handed over: its series goes (a counter's never does). */
    fq_metrics_remove(metrics, "frameq_lag", "partition", "1", NULL);
    fq_metrics_remove(metrics, "frameq_lag", "partition", "9", NULL); /* unknown: nothing */
    assert_render(metrics, "# HELP frameq_lag Lag.\n"
                           "# TYPE frameq_lag gauge\n"
                           "frameq_lag{partition=\"0\"} 40\n"
                           "frameq_lag{partition=\"2\"} -1.5\n"
                           "frameq_lag{partition=\"3\"} 1e+300\n");
    fq_metrics_destroy(metrics);
}

static void test_histogram_text(void **state)
{
    fq_metrics_t *metrics = fq_metrics_new();
    assert_int_equal(
        fq_metrics_declare(metrics, "frameq_stage_seconds", FQ_METRIC_HISTOGRAM, "Stage time."), 0);
    /* binary fractions so the sum is exact; 0.5 sits exactly on a bound (le is <=) */
    static const double obs[] = {0.00390625, 0.125, 0.5, 7, 1000};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        fq_metrics_observe(metrics, "frameq_stage_seconds", obs[i], "stage", "fetch", NULL);
    fq_metrics_observe(metrics, "frameq_stage_seconds", 0.01, NULL);
    assert_render(metrics, "# HELP frameq_stage_seconds Stage time.\n"
                           "# TYPE frameq_stage_seconds histogram\n"
                           "frameq_stage_seconds_bucket{le=\"0.005\"} 0\n"
                           "frameq_stage_seconds_bucket{le=\"0.01\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"0.025\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"0.05\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"0.1\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"0.25\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"0.5\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"1\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"2.5\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"5\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"10\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"30\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"60\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"120\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"300\"} 1\n"
                           "frameq_stage_seconds_bucket{le=\"+Inf\"} 1\n"
                           "frameq_stage_seconds_sum 0.01\n"
                           "frameq_stage_seconds_count 1\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"0.005\"} 1\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"0.01\"} 1\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"0.025\"} 1\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"0.05\"} 1\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"0.1\"} 1\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"0.25\"} 2\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"0.5\"} 3\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"1\"} 3\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"2.5\"} 3\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"5\"} 3\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"10\"} 4\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"30\"} 4\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"60\"} 4\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"120\"} 4\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"300\"} 4\n"
                           "frameq_stage_seconds_bucket{stage=\"fetch\",le=\"+Inf\"} 5\n"
                           "frameq_stage_seconds_sum{stage=\"fetch\"} 1007.62890625\n"
                           "frameq_stage_seconds_count{stage=\"fetch\"} 5\n");
    fq_metrics_destroy(metrics);
}

/* Parses the rendered histogram back and checks the bucket counts never decrease, the +Inf
 * bucket equals _count, for a spread of observations across every bound. */
static void test_histogram_cumulative(void **state)
{
    fq_metrics_t *metrics = fq_metrics_new();
    assert_int_equal(fq_metrics_declare(metrics, "h", FQ_METRIC_HISTOGRAM, "h"), 0);
    int n = 0;
    for (double v = 0.001; v < 1000; v *= 1.37, n++)
        fq_metrics_observe(metrics, "h", v, NULL);
    char *text = render(metrics);
    long prev = -1, inf = -1, count = -1;
    int buckets = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        long v;
        if (strncmp(line, "h_bucket{", 9) == 0) {
            const char *sp = strrchr(line, ' ');
            assert_non_null(sp);
            v = strtol(sp + 1, NULL, 10);
            assert_true(v >= prev);
            prev = v;
            buckets++;
            if (strstr(line, "le=\"+Inf\""))
                inf = v;
        } else if (sscanf(line, "h_count %ld", &v) == 1) {
            count = v;
        }
    }
    assert_int_equal(buckets, 16); /* 15 bounds 0.005 .. 300 plus +Inf */
    assert_int_equal(inf, n);
    assert_int_equal(count, n);
    assert_true(prev > 0);
    free(text);
    fq_metrics_destroy(metrics);
}

static void test_escaping(void **state)
{
    fq_metrics_t *metrics = fq_metrics_new();
    assert_int_equal(
        fq_metrics_declare(metrics, "esc_total", FQ_METRIC_COUNTER, "Line one\nback\\slash \"q\""),
        0);
    fq_metrics_add(metrics, "esc_total", 1, "error", "a\\b\"c\nd", NULL);
    assert_render(metrics, "# HELP esc_total Line one\\nback\\\\slash \"q\"\n"
                           "# TYPE esc_total counter\n"
                           "esc_total{error=\"a\\\\b\\\"c\\nd\"} 1\n");
    fq_metrics_destroy(metrics);
}

static void test_label_sets(void **state)
{
    fq_metrics_t *metrics = fq_metrics_new();
    assert_int_equal(fq_metrics_declare(metrics, "zeta_total", FQ_METRIC_COUNTER, "z"), 0);
    assert_int_equal(fq_metrics_declare(metrics, "alpha", FQ_METRIC_GAUGE, "a"), 0);
    /* same labels in another order are the same series */
    fq_metrics_add(metrics, "zeta_total", 1, "b", "2", "a", "1", NULL);
    fq_metrics_add(metrics, "zeta_total", 1, "a", "1", "b", "2", NULL);
    fq_metrics_set(metrics, "alpha", 7, NULL);
    const char *expected = "# HELP alpha a\n"
                           "# TYPE alpha gauge\n"
                           "alpha 7\n"
                           "# HELP zeta_total z\n"
                           "# TYPE zeta_total counter\n"
                           "zeta_total{a=\"1\",b=\"2\"} 2\n";
    assert_render(metrics, expected);

    /* Misuse changes nothing. */
    fq_metrics_add(metrics, "undeclared_total", 1, NULL);
    fq_metrics_add(metrics, "zeta_total", 1, "bad-name", "x", NULL);
    fq_metrics_add(metrics, "zeta_total", 1, "__reserved", "x", NULL);
    fq_metrics_add(metrics, "zeta_total", 1, "a", "1", "a", "2", NULL);
    fq_metrics_add(metrics, "zeta_total", 1, "odd", NULL);
    fq_metrics_set(metrics, "zeta_total", 100, NULL);
    fq_metrics_observe(metrics, "zeta_total", 1, NULL);
    fq_metrics_observe(metrics, "alpha", 1, NULL);
    fq_metrics_set(metrics, "alpha", NAN, NULL);
    fq_metrics_add(NULL, "alpha", 1, NULL);
    assert_render(metrics, expected);

    /* declare: bad names fail, a second declaration is a no-op */
    static const char *const bad[] = {"", "1abc", "a-b", "a b", "é"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(fq_metrics_declare(metrics, bad[i], FQ_METRIC_GAUGE, "x"), -1);
    assert_int_equal(fq_metrics_declare(metrics, NULL, FQ_METRIC_GAUGE, "x"), -1);
    assert_int_equal(fq_metrics_declare(metrics, "alpha", FQ_METRIC_GAUGE, "other help"), 0);
    assert_int_equal(fq_metrics_declare(metrics, "ns:sub_total", FQ_METRIC_COUNTER, NULL), 0);
    char *text = render(metrics);
    assert_non_null(strstr(text, "# HELP alpha a\n"));
    assert_null(strstr(text, "other help"));
    assert_non_null(strstr(text, "# TYPE ns:sub_total counter\n"));
    free(text);
    fq_metrics_destroy(metrics);
    fq_metrics_destroy(NULL);
}

/* ---- concurrency --------------------------------------------------------------------- */

#define THREADS   8
#define ADDS_EACH 20000

static void *adder(void *arg)
{
    fq_metrics_t *metrics = arg;
    for (int i = 0; i < ADDS_EACH; i++) {
        fq_metrics_add(metrics, "c_total", 1, "kind", (i & 1) ? "odd" : "even", NULL);
        fq_metrics_observe(metrics, "h_seconds", 0.5, NULL);
        if (i % 1000 == 0) {
            char *text = fq_metrics_render(metrics); /* readers race with writers */
            free(text);
        }
    }
    return NULL;
}

static void test_concurrent_adds(void **state)
{
    fq_metrics_t *metrics = fq_metrics_new();
    assert_int_equal(fq_metrics_declare(metrics, "c_total", FQ_METRIC_COUNTER, "c"), 0);
    assert_int_equal(fq_metrics_declare(metrics, "h_seconds", FQ_METRIC_HISTOGRAM, "h"), 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, adder, metrics), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *text = render(metrics);
    char want[128];
    snprintf(want, sizeof(want), "c_total{kind=\"even\"} %d\n", THREADS * ADDS_EACH / 2);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof(want), "c_total{kind=\"odd\"} %d\n", THREADS * ADDS_EACH / 2);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof(want), "h_seconds_count %d\n", THREADS * ADDS_EACH);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof(want), "h_seconds_sum %d\n", THREADS * ADDS_EACH / 2);
    assert_non_null(strstr(text, want));
    free(text);
    fq_metrics_destroy(metrics);
}

/* ---- HTTP ---------------------------------------------------------------------------- */

static int client_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = CLIENT_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, data, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        data += w;
        len -= (size_t)w;
    }
}

/* Reads until EOF; fails the test on a receive timeout. Returns the malloc'd response. */
static char *recv_all(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            fail_msg("recv: %s (server did not answer within %d s)", strerror(errno),
                     CLIENT_TIMEOUT_S);
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return buf;
}

typedef struct response {
    int status;
    char *raw;        /* whole response */
    const char *body; /* points into raw */
} response_t;

static response_t request_raw(int port, const char *req, size_t len)
{
    int fd = client_connect(port);
    send_all(fd, req, len);
    response_t r = {0};
    r.raw = recv_all(fd);
    close(fd);
    assert_int_equal(sscanf(r.raw, "HTTP/1.%*d %d", &r.status), 1);
    const char *sep = strstr(r.raw, "\r\n\r\n");
    assert_non_null(sep);
    r.body = sep + 4;
    /* Content-Length matches the body actually sent; a HEAD answer has the length of the
     * body a GET would get, and no body. */
    const char *cl = strstr(r.raw, "Content-Length: ");
    assert_non_null(cl);
    if (strncmp(req, "HEAD ", 5) == 0)
        assert_string_equal(r.body, "");
    else
        assert_int_equal(strtoul(cl + 16, NULL, 10), strlen(r.body));
    return r;
}

static response_t get(int port, const char *path)
{
    char req[256];
    int n =
        snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nConnection: close\r\n\r\n", path);
    return request_raw(port, req, (size_t)n);
}

static void expect(int port, const char *path, int status, const char *body)
{
    response_t r = get(port, path);
    if (r.status != status || strcmp(r.body, body) != 0)
        fail_msg("GET %s: want %d \"%s\", got:\n%s", path, status, body, r.raw);
    free(r.raw);
}

static fq_metrics_t *serving(void)
{
    fq_metrics_t *metrics = fq_metrics_new();
    char err[256] = "";
    if (fq_metrics_serve(metrics, "127.0.0.1:0", err, sizeof(err)) != 0)
        fail_msg("serve: %s", err);
    assert_true(fq_metrics_port(metrics) > 0);
    return metrics;
}

static void test_http_metrics(void **state)
{
    fq_metrics_t *metrics = serving();
    int port = fq_metrics_port(metrics);
    assert_int_equal(fq_metrics_declare(metrics, "x_total", FQ_METRIC_COUNTER, "x"), 0);
    fq_metrics_add(metrics, "x_total", 3, "k", "v", NULL);

    response_t r = get(port, "/metrics");
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.raw, "\r\nContent-Type: text/plain; version=0.0.4"));
    char *text = render(metrics);
    assert_string_equal(r.body, text);
    assert_non_null(strstr(r.body, "x_total{k=\"v\"} 3\n"));
    free(text);
    free(r.raw);

    r = get(port, "/metrics?name[]=x_total");
    assert_int_equal(r.status, 200);
    free(r.raw);

    /* A body far larger than the socket buffers goes out in several writes. */
    assert_int_equal(fq_metrics_declare(metrics, "big", FQ_METRIC_GAUGE, "big"), 0);
    char val[128];
    memset(val, 'v', sizeof(val) - 1);
    val[sizeof(val) - 1] = '\0';
    for (int i = 0; i < 5000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "%05d", i);
        memcpy(val, k, 5);
        fq_metrics_set(metrics, "big", i, "id", val, NULL);
    }
    r = get(port, "/metrics");
    text = render(metrics);
    assert_true(strlen(text) > 600000);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, text);
    free(text);
    free(r.raw);
    fq_metrics_destroy(metrics);
}

static void test_http_health(void **state)
{
    fq_metrics_t *metrics = serving();
    int port = fq_metrics_port(metrics);

    expect(port, "/healthz", 503, "stale\n"); /* no heartbeat yet */
    fq_metrics_heartbeat(metrics, 60000);
    expect(port, "/healthz", 200, "ok\n");
    fq_metrics_heartbeat(metrics, 0); /* nothing is fresh within 0 ms */
    expect(port, "/healthz", 503, "stale\n");
    fq_metrics_heartbeat(metrics, 60000);
    expect(port, "/healthz", 200, "ok\n");
    /* fresh, then no heartbeat for longer than stale_ms */
    fq_metrics_heartbeat(metrics, 50);
    struct timespec ts = {.tv_nsec = 120 * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    expect(port, "/healthz", 503, "stale\n");

    expect(port, "/readyz", 503, "starting\n");
    fq_metrics_set_ready(metrics, true, NULL);
    expect(port, "/readyz", 200, "ready\n");
    fq_metrics_set_ready(metrics, false, "kafka: no partitions assigned");
    expect(port, "/readyz", 503, "kafka: no partitions assigned\n");
    fq_metrics_set_ready(metrics, false, NULL);
    expect(port, "/readyz", 503, "not ready\n");
    fq_metrics_set_ready(metrics, true, "ignored");
    expect(port, "/readyz", 200, "ready\n");
    fq_metrics_destroy(metrics);
}

static void test_http_errors(void **state)
{
    fq_metrics_t *metrics = serving();
    int port = fq_metrics_port(metrics);
    expect(port, "/", 404, "not found\n");
    expect(port, "/metricsx", 404, "not found\n");
    expect(port, "/healthz/", 404, "not found\n");

    static const char post[] = "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
    response_t r = request_raw(port, post, strlen(post));
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.raw, "\r\nAllow: GET, HEAD\r\n"));
    free(r.raw);

    static const char head[] = "HEAD /healthz HTTP/1.0\r\n\r\n";
    r = request_raw(port, head, strlen(head));
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.raw, "\r\nContent-Length: 6\r\n")); /* "stale\n" */
    free(r.raw);

    /* Not HTTP: closed with nothing served (or a 400). */
    int fd = client_connect(port);
    send_all(fd, "hello\r\n\r\n", 9);
    char *raw = recv_all(fd);
    close(fd);
    if (raw[0] && strncmp(raw, "HTTP/1.1 400 ", 13) != 0)
        fail_msg("garbage request answered:\n%s", raw);
    free(raw);

    /* HTTP/1.0 with bare newlines, as `printf ... | nc` sends */
    static const char bare[] = "GET /healthz HTTP/1.0\n\n";
    r = request_raw(port, bare, strlen(bare));
    assert_int_equal(r.status, 503);
    free(r.raw);

    /* Oversized request: refused, the server stays usable. */
    size_t big_len = 64 * 1024;
    char *big = malloc(big_len);
    assert_non_null(big);
    memcpy(big, "GET /metrics HTTP/1.0\r\nX: ", 26);
    memset(big + 26, 'a', big_len - 26);
    fd = client_connect(port);
    /* The server may close before reading everything; a failed send is fine here. */
    size_t off = 0;
    while (off < big_len) {
        ssize_t w = send(fd, big + off, big_len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    char buf[64] = "";
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    /* Either the 431 arrives, or the kernel reset the connection because unread bytes
     * were pending when the server closed: both mean refused, not served. */
    if (n > 0) {
        buf[n] = '\0';
        assert_non_null(strstr(buf, " 431 "));
    } else {
        assert_true(n < 0 && errno == ECONNRESET);
    }
    close(fd);
    free(big);
    expect(port, "/readyz", 503, "starting\n");
    fq_metrics_destroy(metrics);
}

/* A client that connects and sends nothing (or half a request line) must not delay others. */
static void test_http_slow_client(void **state)
{
    fq_metrics_t *metrics = serving();
    int port = fq_metrics_port(metrics);
    fq_metrics_set_ready(metrics, true, NULL);

    int idle = client_connect(port);
    int partial = client_connect(port);
    send_all(partial, "GET /met", 8);
    for (int i = 0; i < 5; i++)
        expect(port, "/readyz", 200, "ready\n");
    /* A server that handled connections one by one would have had to time the idle ones
     * out before answering the requests above, so they would show EOF by now. */
    struct pollfd p[2] = {{.fd = idle, .events = POLLIN}, {.fd = partial, .events = POLLIN}};
    assert_int_equal(poll(p, 2, 0), 0);

    /* The idle clients are eventually closed (idle timeout), not kept forever. */
    char *raw = recv_all(idle);
    assert_string_equal(raw, "");
    free(raw);
    raw = recv_all(partial);
    assert_string_equal(raw, "");
    free(raw);
    close(idle);
    close(partial);

    /* destroy with a connection still open must not hang or leak */
    int open_fd = client_connect(port);
    expect(port, "/readyz", 200, "ready\n");
    fq_metrics_destroy(metrics);
    close(open_fd);
}

/* Past the connection limit a client waits in the backlog until a slot frees. */
static void test_http_connection_limit(void **state)
{
    fq_metrics_t *metrics = serving();
    int port = fq_metrics_port(metrics);
    fq_metrics_set_ready(metrics, true, NULL);

    int held[FQ_METRICS_HTTP_MAX_CONNS];
    for (int i = 0; i < FQ_METRICS_HTTP_MAX_CONNS; i++)
        held[i] = client_connect(port);
    /* The server has taken every held connection once one request on each is answered;
     * send on all, read each answer, keep the connections open (HTTP/1.1 keep-alive). */
    static const char req[] = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < FQ_METRICS_HTTP_MAX_CONNS; i++) {
        send_all(held[i], req, strlen(req));
        char buf[512];
        ssize_t n = recv(held[i], buf, sizeof(buf) - 1, 0);
        assert_true(n > 0);
        buf[n] = '\0';
        assert_non_null(strstr(buf, " 200 "));
    }
    int extra = client_connect(port); /* the kernel completes the handshake: backlog */
    static const char req10[] = "GET /readyz HTTP/1.0\r\n\r\n";
    send_all(extra, req10, strlen(req10));
    struct pollfd p = {.fd = extra, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 300), 0); /* not served while every slot is held */
    for (int i = 0; i < FQ_METRICS_HTTP_MAX_CONNS; i++)
        close(held[i]);
    char *raw = recv_all(extra);
    assert_non_null(strstr(raw, " 200 "));
    free(raw);
    close(extra);
    fq_metrics_destroy(metrics);
}

static void test_serve_addresses(void **state)
{
    char err[256];
    fq_metrics_t *metrics = fq_metrics_new();
    assert_int_equal(fq_metrics_serve(metrics, "off", err, sizeof(err)), 0);
    assert_int_equal(fq_metrics_serve(metrics, "", err, sizeof(err)), 0);
    assert_int_equal(fq_metrics_serve(metrics, NULL, err, sizeof(err)), 0);
    assert_int_equal(fq_metrics_port(metrics), 0);

    static const char *const bad[] = {"nonsense", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:12x",
                                      "[::1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(fq_metrics_serve(metrics, bad[i], err, sizeof(err)), -1);
        assert_non_null(strstr(err, "METRICS_ADDR"));
    }
    assert_int_equal(fq_metrics_port(metrics), 0);

    assert_int_equal(fq_metrics_serve(metrics, "127.0.0.1:0", err, sizeof(err)), 0);
    int port = fq_metrics_port(metrics);
    assert_true(port > 0);
    assert_int_equal(fq_metrics_serve(metrics, "127.0.0.1:0", err, sizeof(err)), -1);

    /* the port is taken: a second registry cannot bind it */
    fq_metrics_t *other = fq_metrics_new();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    err[0] = '\0';
    assert_int_equal(fq_metrics_serve(other, addr, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "METRICS_ADDR"));
    fq_metrics_destroy(other);
    fq_metrics_destroy(metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_text),     cmocka_unit_test(test_gauge_text),
        cmocka_unit_test(test_histogram_text),   cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_escaping),         cmocka_unit_test(test_label_sets),
        cmocka_unit_test(test_concurrent_adds),  cmocka_unit_test(test_http_metrics),
        cmocka_unit_test(test_http_health),      cmocka_unit_test(test_http_errors),
        cmocka_unit_test(test_http_slow_client), cmocka_unit_test(test_http_connection_limit),
        cmocka_unit_test(test_serve_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
