#!/usr/bin/env bash
# bench_consumer.sh — the consumer's overhead over the pipeline, and the retry path latency.
# Not part of CI. Needs the local stack (deploy/local/up; . .stack/env) and a build
# (FQ_BUILD_DIR, default ./build).
#
#   1. pipeline alone: `consumer --process-file` runs BENCH_ITEMS one-frame clips on the same
#      pool of WORKER_CONCURRENCY threads the worker uses, with the database, without Kafka;
#   2. end to end: `producer` publishes the same items (BATCH_SIZE per message), one
#      `consumer --once` processes them;
#   both measured the same way, from the database: first item started (created_at) to last
#   item done (done_at). Overhead = rate(pipeline) / rate(end to end) - 1 (target <= 15 %).
#   3. retry path: BENCH_RETRY_ITEMS always-failing items, MAX_RETRIES=3; for every retry,
#      the time from frameq-not-before to the attempt's start, and from the failure to the start
#      against the backoff (target: start <= not-before + 100 ms).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export FQ_SOURCE_DIR=${FQ_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
export FQ_BUILD_DIR=${FQ_BUILD_DIR:-$FQ_SOURCE_DIR/build}
. "$FQ_SOURCE_DIR/tests/support/consumer_lib.sh"

N=${BENCH_ITEMS:-2000}
R=${BENCH_RETRY_ITEMS:-4} # < the circuit breaker's K (5), or the run becomes an outage
export BATCH_SIZE=${BATCH_SIZE:-10} WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-2}
export LOG_LEVEL=warn
cq_setup bench

# One tiny clip, one frame; every item reads it (file source: no HTTP in the measurement).
export ALLOWED_SOURCE_SCHEMES=file
export SOURCE_URL_TEMPLATE="file://$CQ_TMP/videos/tiny.mp4"
python3 -c '
import sys
n = int(sys.argv[1])
with open(sys.argv[2], "w") as f:
    for i in range(n): f.write("{\"platform\":\"bench\",\"code\":\"c%05d\"}\n" % i)
with open(sys.argv[3], "w") as f:
    f.write("[" + ",".join("{\"platform\":\"bench\",\"code\":\"c%05d\"}" % i for i in range(n)) + "]")
' "$N" "$CQ_TMP/items.ndjson" "$CQ_TMP/items.json"

span_rate() { # DATABASE_URL -> "items seconds rate"
    psql "$1" -qAtc "SELECT count(*), round(extract(epoch FROM max(done_at) - min(created_at))::numeric, 3),
        round((count(*) / nullif(extract(epoch FROM max(done_at) - min(created_at)), 0))::numeric, 1)
        FROM extraction_items WHERE status='done'" | tr '|' ' '
}

# 1. pipeline alone, in its own database
e2e_url=$DATABASE_URL
alone_db="${CQ_DB}_alone"
psql "$CQ_ADMIN_URL" -qAtc "CREATE DATABASE $alone_db" >/dev/null
alone_url="${CQ_ADMIN_URL%/*}/$alone_db"
DATABASE_URL=$alone_url "$CQ_BUILD/consumer" --migrate >/dev/null 2>&1
t0=$(date +%s%N)
DATABASE_URL=$alone_url "$CQ_BUILD/consumer" --process-file "$CQ_TMP/items.ndjson" \
    >"$CQ_TMP/alone.json" 2>"$CQ_TMP/alone.log" || cq_fail "pipeline alone: $(cat "$CQ_TMP/alone.json")"
wall_alone=$((($(date +%s%N) - t0) / 1000000))
read -r n_alone s_alone r_alone <<<"$(span_rate "$alone_url")"

# 2. end to end, on fresh topics, group and database per run
dbs=("$alone_db")
trap 'for d in "${dbs[@]}"; do psql "$CQ_ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1; done; cq_cleanup' EXIT
e2e() { # LABEL -> "items seconds rate wall_ms"
    local label=$1 db="${CQ_DB}_$1" rc=0 t0 wall
    dbs+=("$db")
    psql "$CQ_ADMIN_URL" -qAtc "CREATE DATABASE $db" >/dev/null
    local url="${CQ_ADMIN_URL%/*}/$db"
    (
        export KAFKA_TOPIC="fqt.$CQ_ID.$label" KAFKA_GROUP_ID="fqt-$CQ_ID-$label" DATABASE_URL=$url
        export KAFKA_RETRY_TOPIC="$KAFKA_TOPIC.retry" KAFKA_DLQ_TOPIC="$KAFKA_TOPIC.dlq"
        "$CQ_BUILD/consumer" --migrate >/dev/null 2>&1
        cq_create_topics "$KAFKA_TOPIC" "$KAFKA_RETRY_TOPIC" "$KAFKA_DLQ_TOPIC"
        cq_enqueue "$(cat "$CQ_TMP/items.json")" 2>/dev/null
        t0=$(date +%s%N)
        CQ_TIMEOUT=1800 cq_consumer "e2e-$label" --once || rc=$?
        wall=$((($(date +%s%N) - t0) / 1000000))
        ((rc == 0)) || cq_fail "consumer --once ($label) exit $rc"
        echo "$(span_rate "$url") $wall"
    )
}
read -r n_e2e s_e2e r_e2e wall_e2e <<<"$(e2e plain)"
[[ $n_alone == "$N" && $n_e2e == "$N" ]] ||
    cq_fail "done items: alone $n_alone, end to end $n_e2e, want $N"
overhead=$(python3 -c "print('%.1f' % ((float('$r_alone') / float('$r_e2e') - 1) * 100))")

# 3. retry path latency
export MAX_RETRIES=3 RETRY_BACKOFF_MS=${BENCH_BACKOFF_MS:-500} RETRY_BACKOFF_MAX_MS=10000 LOG_LEVEL=info
export SOURCE_URL_TEMPLATE="$CQ_HTTP/ok/{code}.mp4" ALLOWED_SOURCE_SCHEMES=http
items=()
for i in $(seq "$R"); do items+=("$(cq_item retry "r$i" "$CQ_HTTP/500/tiny.mp4")"); done
for ((i = 0; i < R; i++)); do
    cq_produce $((i % 3)) "$(cq_batch "${items[i]}")"
done
rc=0
cq_consumer retry --once || rc=$?
cq_read "$KAFKA_RETRY_TOPIC" >"$CQ_TMP/retry.jsonl"
latency=$(python3 - "$CQ_TMP/retry.jsonl" "$CQ_TMP/retry.log" <<'PY'
import datetime, json, statistics, sys
def ms(ts): return int(datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
due = {}
for l in open(sys.argv[1]):
    m = json.loads(l); d = dict(zip(m["headers"][0::2], m["headers"][1::2]))
    due[(m["key"], int(d["frameq-attempt"]) + 1)] = (int(d["frameq-not-before"]), ms(d["frameq-failed-at"]))
late, ratio = [], []
for l in open(sys.argv[2]):
    try: e = json.loads(l)
    except ValueError: continue
    k = (e.get("item"), e.get("attempt"))
    if e.get("msg", "").startswith("retry attempt started") and k in due:
        nb, failed = due[k]; start = ms(e["ts"])
        late.append(start - nb); ratio.append((start - failed, nb - failed))
late.sort()
p = lambda q: late[min(len(late) - 1, int(q * len(late)))]
print("retries=%d late_ms p50=%d p95=%d max=%d | failure->start mean=%.0f ms vs backoff mean=%.0f ms"
      % (len(late), p(0.5), p(0.95), late[-1], statistics.mean(r[0] for r in ratio),
         statistics.mean(r[1] for r in ratio)))
PY
)

cat <<OUT
bench_consumer: $N one-frame clips, WORKER_CONCURRENCY=$WORKER_CONCURRENCY, BATCH_SIZE=$BATCH_SIZE
  pipeline alone : $r_alone items/s ($n_alone items in $s_alone s; wall $wall_alone ms)
  end to end     : $r_e2e items/s ($n_e2e items in $s_e2e s; wall incl. start-up and drain $wall_e2e ms)
  overhead       : $overhead % (target <= 15 %)   [clean messages committed with rd_kafka_commit]
  retry path     : $latency (backoff base ${RETRY_BACKOFF_MS} ms; target late <= 100 ms)
OUT
