#!/usr/bin/env bash
# Retries never block other partitions: while a retry waits (paused partition, 6 s backoff)
# items of another partition complete; the retry starts no earlier than frameq-not-before;
# SIGTERM then stops the worker cleanly (exit 0, nothing left uncommitted).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

export MAX_RETRIES=1 RETRY_BACKOFF_MS=6000 RETRY_BACKOFF_MAX_MS=10000
cq_setup backoff
mport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export METRICS_ADDR="127.0.0.1:$mport"

cq_consumer_bg worker
worker=$CQ_LAST_PID
cq_produce 0 "$(cq_batch "$(cq_item b slow "$CQ_HTTP/500/tiny.mp4")")"

for i in $(seq 150); do
    [[ $(cq_count "$KAFKA_RETRY_TOPIC") -ge 1 ]] && break
    sleep 0.2
done
line=$(cq_read "$KAFKA_RETRY_TOPIC" | head -n 1)
[[ -n $line ]] || cq_fail "no retry message after 30 s"
not_before=$(cq_header "$line" frameq-not-before)
retry_part=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["partition"])' "$line")
cq_say "retry waits on partition $retry_part until $not_before"

# Other work arrives while the retry waits.
cp "$CQ_TMP/videos/tiny.mp4" "$CQ_TMP/videos/fast1.mp4"
cp "$CQ_TMP/videos/tiny.mp4" "$CQ_TMP/videos/fast2.mp4"
cq_produce 1 "$(cq_batch "$(cq_item b fast1)" "$(cq_item b fast2)")"
cq_wait_sql "SELECT count(*) FROM extraction_items WHERE status='done'" 2 20
done_ms=$(cq_sql "SELECT (extract(epoch FROM max(done_at)) * 1000)::bigint FROM extraction_items WHERE status='done'")
now_ms=$(($(date +%s%N) / 1000000))
((done_ms < not_before)) || cq_fail "other partition's items done at $done_ms, not before the retry's not-before $not_before"
cq_say "ok: other partition's items done $((not_before - done_ms)) ms before the retry was due"

for i in $(seq 150); do
    [[ $(cq_count "$KAFKA_DLQ_TOPIC") -ge 1 ]] && break
    sleep 0.2
done
cq_expect_eq "DLQ messages after MAX_RETRIES=1" "$(cq_count "$KAFKA_DLQ_TOPIC")" 1
start=$(python3 -c '
import datetime, json, sys
for l in open(sys.argv[1]):
    try: e = json.loads(l)
    except ValueError: continue
    if e.get("msg", "").startswith("retry attempt started") and e.get("attempt") == 2:
        ts = datetime.datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        print(int(ts.timestamp() * 1000)); break
' "$CQ_TMP/worker.log")
[[ -n $start ]] || cq_fail "no 'retry attempt started' line for attempt 2"
((start >= not_before)) || cq_fail "retry started at $start, before its not-before $not_before"
cq_say "ok: retry started $((start - not_before)) ms after its not-before"

# The metrics endpoint tells the same story.
curl -fsS "http://$METRICS_ADDR/metrics" >"$CQ_TMP/metrics.txt" || cq_fail "GET /metrics failed"
for want in 'frameq_items_total{outcome="done"} 2' 'frameq_items_total{outcome="retry"} 1' \
    'frameq_items_total{outcome="dlq"} 1' 'frameq_retries_total{attempt="1"} 1' \
    'frameq_dlq_total{reason="max-retries",stage="fetch"} 1' 'frameq_ready 1' \
    'frameq_circuit_open 0'; do
    grep -qF "$want" "$CQ_TMP/metrics.txt" || cq_fail "/metrics lacks '$want'"
done
grep -q '^frameq_stage_seconds_count{stage="fetch"} 2' "$CQ_TMP/metrics.txt" ||
    cq_fail "/metrics lacks the fetch stage histogram"
# librdkafka statistics come every 5 s; the run above lasts longer than that.
grep -q "^frameq_consumer_lag{.*topic=\"$KAFKA_TOPIC\"" "$CQ_TMP/metrics.txt" ||
    cq_fail "/metrics lacks frameq_consumer_lag for $KAFKA_TOPIC"
cq_expect_eq "GET /readyz" "$(curl -s -o /dev/null -w '%{http_code}' "http://$METRICS_ADDR/readyz")" 200
cq_say "ok: /metrics and /readyz"

kill -TERM "$worker"
rc=0
wait "$worker" || rc=$?
cq_expect_eq "exit code after SIGTERM" "$rc" 0
grep -q '"msg":"stopping' "$CQ_TMP/worker.log" || cq_fail "no 'stopping' line"
cq_expect_eq "uncommitted messages left for the group" "$(cq_uncommitted "$KAFKA_TOPIC" "$KAFKA_RETRY_TOPIC")" 0
cq_expect_eq "item states" "$(cq_sql "SELECT string_agg(code || ':' || status, ',' ORDER BY code) FROM extraction_items")" "fast1:done,fast2:done,slow:dead"
cq_say "PASS"
