#!/usr/bin/env bash
# The Grafana dashboard (deploy/k8s/base/grafana/frameq-dashboard.json) against a live worker: a
# consumer processes a good item (done, stage histograms), a 404 (DLQ) and a 500 (retry); a real
# Prometheus scrapes it with the relabelling of the usual prometheus.io pod job (namespace, pod,
# pod labels), and tests/tools/check_dashboard.py requires every metric name and label of every
# query to be on the worker's /metrics (or a target label), every expression to parse
# (promtool) and to return series from that Prometheus. Broken copies must be rejected.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

DASH="$CQ_SRC/deploy/k8s/base/grafana/frameq-dashboard.json"
CHECK="$CQ_SRC/tests/tools/check_dashboard.py"
for t in prometheus promtool curl; do
    command -v "$t" >/dev/null || cq_fail "$t not found (Debian packages prometheus, curl)"
done
export MAX_RETRIES=3
cq_setup dash
cp "$CQ_TMP/videos/tiny.mp4" "$CQ_TMP/videos/good.mp4"
cq_enqueue "[$(cq_item dash good)]"
cq_enqueue "[$(cq_item dash gone "$CQ_HTTP/404/tiny.mp4"),$(cq_item dash flaky "$CQ_HTTP/500/tiny.mp4")]"

# --role main, as the pods the target labels below describe (consumer-main).
METRICS_ADDR=127.0.0.1:0 cq_consumer_bg worker --role main
cq_metrics_port worker "$CQ_LAST_PID"
port=$CQ_METRICS_PORT
worker_pid=$CQ_LAST_PID

# Every series the dashboard reads must exist before the scrape is taken: the three outcomes,
# retries, dead letters, stage histograms and the lag gauge (librdkafka statistics, every 5 s).
want=('frameq_items_total{outcome="done"}' 'frameq_items_total{outcome="dlq"}'
    'frameq_items_total{outcome="retry"}' 'frameq_retries_total{' 'frameq_dlq_total{'
    'frameq_stage_seconds_bucket{' 'frameq_consumer_lag{' 'frameq_circuit_open ' 'frameq_ready '
    'frameq_inflight_items ')
missing=("${want[@]}")
for _ in $(seq 300); do
    curl -sS -o "$CQ_TMP/metrics.txt" "http://127.0.0.1:$port/metrics" || cq_fail "scraping /metrics failed"
    missing=()
    for w in "${want[@]}"; do
        grep -qF "$w" "$CQ_TMP/metrics.txt" || missing+=("$w")
    done
    ((${#missing[@]} == 0)) && break
    sleep 0.2
done
((${#missing[@]} == 0)) || cq_fail "after 60 s /metrics still lacks: ${missing[*]}"
cq_say "ok: the worker exports $(grep -vc '^#' "$CQ_TMP/metrics.txt") samples with every outcome"

# A real Prometheus scrapes the worker every second. The target carries the meta labels
# Kubernetes service discovery gives a pod of consumer-main, and the relabelling is the usual
# prometheus.io pod job's: pod labels mapped, namespace and pod copied.
prom_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ns="frameq-dash-$$"
cat >"$CQ_TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: kubernetes-pods
    static_configs:
      - targets: ["127.0.0.1:$port"]
        labels:
          __meta_kubernetes_namespace: "$ns"
          __meta_kubernetes_pod_name: "$WORKER_ID"
          __meta_kubernetes_pod_label_app_kubernetes_io_name: frameq
          __meta_kubernetes_pod_label_app_kubernetes_io_component: consumer-main
    relabel_configs:
      - action: labelmap
        regex: __meta_kubernetes_pod_label_(.+)
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
EOF
promtool check config "$CQ_TMP/prometheus.yml" >"$CQ_TMP/promconf.log" 2>&1 ||
    cq_fail "promtool rejects the test's Prometheus config: $(cat "$CQ_TMP/promconf.log")"
prometheus --config.file="$CQ_TMP/prometheus.yml" --storage.tsdb.path="$CQ_TMP/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn 2>"$CQ_TMP/prometheus.log" &
CQ_PIDS+=($!)
prom="http://127.0.0.1:$prom_port"
targets=
for _ in $(seq 300); do
    targets=$(curl -sf "$prom/api/v1/targets?state=active" 2>/dev/null) &&
        jq -e '.data.activeTargets[0].health == "up"' <<<"$targets" >/dev/null && break
    targets=
    sleep 0.2
done
[[ -n $targets ]] || cq_fail "Prometheus did not scrape the worker (target up) within 60 s"
jq '.data.activeTargets[0].labels' <<<"$targets" >"$CQ_TMP/target_labels.json"
cq_say "ok: Prometheus scrapes the worker; target labels $(jq -c 'keys' "$CQ_TMP/target_labels.json")"

check() { # OUT DASHBOARD [ARGS...]: runs the checker; its exit code
    local out=$1 dash=$2 rc=0
    shift 2
    python3 "$CHECK" "$dash" --scrape "$CQ_TMP/metrics.txt" \
        --target-labels "$CQ_TMP/target_labels.json" \
        --var namespace="$ns" --var role=consumer-main --var worker="$WORKER_ID" \
        --var __rate_interval=30s --var __range=5m "$@" >"$out" 2>&1 || rc=$?
    return $rc
}
rc=0
check "$CQ_TMP/check.out" "$DASH" --prometheus "$prom" --timeout 60 || rc=$?
cat "$CQ_TMP/check.out" >&2
[[ $rc == 0 ]] || cq_fail "the dashboard does not match the live worker (exit $rc)"
# Role and worker set to All (each variable's allValue): the regex matchers still select.
all() { jq -er --arg v "$1" '.templating.list[] | select(.name == $v) | .allValue' "$DASH"; }
check "$CQ_TMP/check.out" "$DASH" --prometheus "$prom" --timeout 10 \
    --var role="$(all role)" --var worker="$(all worker)" || cq_fail "with role and worker All: $(grep ERROR "$CQ_TMP/check.out")"
cq_say "ok: every query returns series with role and worker set to All too"

# Broken copies must be rejected, each for its own reason.
n_neg=0
negative() { # NAME SED_EXPR WANT [ARGS...]: the copy changed by SED_EXPR fails with WANT
    local name=$1 expr=$2 want=$3 rc=0
    shift 3
    sed "$expr" "$DASH" >"$CQ_TMP/broken.json"
    cmp -s "$DASH" "$CQ_TMP/broken.json" && cq_fail "negative '$name': sed changed nothing (stale)"
    check "$CQ_TMP/neg.out" "$CQ_TMP/broken.json" "$@" || rc=$?
    [[ $rc == 1 ]] || cq_fail "negative '$name': checker exit $rc, want 1: $(tail -3 "$CQ_TMP/neg.out")"
    grep -q -- "$want" "$CQ_TMP/neg.out" ||
        cq_fail "negative '$name': no '$want' in: $(grep ERROR "$CQ_TMP/neg.out" | head -3)"
    cq_say "ok: negative '$name' rejected: $(grep -m1 ERROR "$CQ_TMP/neg.out" | cut -c1-160)"
    n_neg=$((n_neg + 1))
}
negative "misspelt metric" 's/frameq_dlq_total{/frameq_dlq_totl{/' \
    'metric frameq_dlq_totl is not exported'
negative "wrong label in by()" 's/sum by (reason, stage)/sum by (reason, phase)/' \
    'label phase is not on every metric'
negative "wrong label in a matcher" 's/outcome=\\"retry\\"/result=\\"retry\\"/' \
    'label result is not on frameq_items_total'
negative "histogram name without _bucket" \
    '/histogram_quantile(0.5,/s/frameq_stage_seconds_bucket/frameq_stage_seconds/' \
    'frameq_stage_seconds is a histogram'
negative "quantile over _count" \
    '/histogram_quantile(0.99,/s/frameq_stage_seconds_bucket/frameq_stage_seconds_count/' \
    'histogram_quantile over frameq_stage_seconds_count'
negative "legend label typo" 's/attempt {{attempt}}/attempt {{attempts}}/' \
    'legend {{attempts}} is not a label'
negative "PromQL syntax" '/histogram_quantile(0.95,/s/\[\$__rate_interval\])))/[$__rate_interval]))/' \
    'Stage latency p95.*promtool check rules rejects.*unclosed left parenthesis'
negative "duplicate panel id" 's/"id": 45,/"id": 44,/' 'id 44 also used'
negative "fixed datasource" '0,/"uid": "${datasource}" }/s//"uid": "prom-1" }/' \
    'is not {.type.: .prometheus., .uid.: .${datasource}.}'
negative "undefined variable" '0,/pod=~\\"\$worker\\"/s//pod=~\\"$workers\\"/' \
    'variable $workers is not defined'
negative "overlapping panels" 's/"gridPos": { "h": 8, "w": 12, "x": 12, "y": 57 }/"gridPos": { "h": 8, "w": 12, "x": 6, "y": 57 }/' \
    'overlaps panel 44'
negative "series that do not exist (live)" 's/outcome=\\"retry\\"/outcome=\\"retried\\"/' \
    'no series from Prometheus' --prometheus "$prom" --timeout 3

kill -TERM "$worker_pid"
rc=0
wait "$worker_pid" || rc=$?
cq_expect_eq "consumer exit after SIGTERM" "$rc" 0
cq_say "PASS ($n_neg broken copies rejected)"
