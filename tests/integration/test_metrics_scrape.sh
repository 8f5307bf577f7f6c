#!/usr/bin/env bash
# The consumer's metrics endpoint read by real clients: a running consumer (METRICS_ADDR on an
# ephemeral port) processes one item; curl reads /metrics, /healthz, /readyz and the errors,
# and Prometheus' own parser and linter (`promtool check metrics`) accept the scraped text.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

command -v promtool >/dev/null || cq_fail "promtool not found (Debian package prometheus)"
cq_setup metrics
cp "$CQ_TMP/videos/tiny.mp4" "$CQ_TMP/videos/m1.mp4"
cq_enqueue "[$(cq_item metrics m1)]"

METRICS_ADDR=127.0.0.1:0 cq_consumer_bg worker
cq_metrics_port worker "$CQ_LAST_PID"
port=$CQ_METRICS_PORT
base="http://127.0.0.1:$port"
cq_wait_sql "SELECT count(*) FROM extraction_items WHERE status='done'" 1 60

# code URL [CURL_ARGS...]: the HTTP status; the body in $CQ_TMP/body, headers in $CQ_TMP/head.
code() {
    curl -sS -o "$CQ_TMP/body" -D "$CQ_TMP/head" -w '%{http_code}' "${@:2}" "$1" ||
        cq_fail "curl $1 failed"
}
wait_code() { # URL WANT: polls until the endpoint answers WANT (30 s)
    local got
    for _ in $(seq 150); do
        got=$(code "$1")
        [[ $got == "$2" ]] && return 0
        sleep 0.2
    done
    cq_fail "$1: HTTP $got after 30 s, want $2 ($(cat "$CQ_TMP/body"))"
}
wait_code "$base/readyz" 200
cq_expect_eq "/readyz body" "$(cat "$CQ_TMP/body")" ready
wait_code "$base/healthz" 200
cq_expect_eq "/healthz body" "$(cat "$CQ_TMP/body")" ok

cq_expect_eq "/metrics status" "$(code "$base/metrics")" 200
grep -qi '^content-type: text/plain; version=0.0.4' "$CQ_TMP/head" ||
    cq_fail "/metrics content type: $(grep -i '^content-type' "$CQ_TMP/head")"
cp "$CQ_TMP/body" "$CQ_TMP/metrics.txt"
grep -q '^frameq_items_total{outcome="done"} 1$' "$CQ_TMP/metrics.txt" ||
    cq_fail "no done item counted in /metrics: $(grep frameq_items_total "$CQ_TMP/metrics.txt")"
grep -q '^frameq_stage_seconds_bucket{.*le="+Inf"} ' "$CQ_TMP/metrics.txt" ||
    cq_fail "no stage histogram in /metrics"
rc=0
promtool check metrics <"$CQ_TMP/metrics.txt" >"$CQ_TMP/promtool.out" 2>&1 || rc=$?
[[ $rc == 0 ]] || cq_fail "promtool check metrics exit $rc: $(cat "$CQ_TMP/promtool.out")"
cq_say "ok: promtool check metrics accepts $(grep -vc '^#' "$CQ_TMP/metrics.txt") samples"

cq_expect_eq "HEAD /metrics status" "$(code "$base/metrics" -I)" 200
grep -qi '^content-length: [1-9]' "$CQ_TMP/head" || cq_fail "HEAD /metrics without the GET length"
cq_expect_eq "POST /metrics status" "$(code "$base/metrics" -X POST -d x)" 405
grep -qi '^allow: GET, HEAD' "$CQ_TMP/head" || cq_fail "405 without 'Allow: GET, HEAD'"
cq_expect_eq "/nope status" "$(code "$base/nope")" 404
# A scraper keeps its connection: the second request reuses the first one's.
cq_expect_eq "connections for two scrapes" \
    "$(curl -sS -o /dev/null -o /dev/null -w '%{num_connects} ' "$base/metrics" "$base/healthz")" "1 0 "

kill -TERM "$CQ_LAST_PID"
rc=0
wait "$CQ_LAST_PID" || rc=$?
cq_expect_eq "consumer exit after SIGTERM" "$rc" 0
cq_say "PASS"
