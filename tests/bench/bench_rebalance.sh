#!/usr/bin/env bash
# bench_rebalance.sh — what a rebalance costs a running group, classic (cooperative-sticky)
# against KIP-848 (GROUP_PROTOCOL=consumer), side by side in one run. Not part of CI; prints
# figures only. Needs the local stack (deploy/local/up; . .stack/env) and a build
# (FQ_BUILD_DIR, default ./build).
#
# Per protocol: fresh topics (BENCH_PARTITIONS, default 6) and group, a steady stream of
# one-item messages (BENCH_RATE items/s of a one-frame clip read through file://), 2 workers
# (--role main: the main topic's partitions only, so every worker holds a share of the stream);
# then BENCH_REPS times (default 3):
#   join : a third worker starts. The longest gap between consecutive item completions
#          ("outcome":"done" log lines) of the existing workers in the window from 2 s before
#          its start to BENCH_WINDOW_S after (merged: the group's pause; per worker: the longest
#          of either), and the time from its start to its own first completed item;
#   leave: that worker gets SIGTERM; the same gaps of the two remaining workers.
# Baseline: the same gaps over a quiet window of the same length before the first event (the
# stream's own spacing). Session and heartbeat: librdkafka's defaults under classic (45 s / 3 s),
# the broker's group.consumer.* settings under KIP-848 (deploy/local: 10 s / 3 s).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export FQ_SOURCE_DIR=${FQ_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
export FQ_BUILD_DIR=${FQ_BUILD_DIR:-$FQ_SOURCE_DIR/build}
. "$FQ_SOURCE_DIR/tests/support/consumer_lib.sh"

PARTS=${BENCH_PARTITIONS:-6}
RATE=${BENCH_RATE:-10}
REPS=${BENCH_REPS:-3}
WINDOW_S=${BENCH_WINDOW_S:-10}
PROTOCOLS=(classic consumer)
export BATCH_SIZE=1 WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-2} LOG_LEVEL=info
export SHUTDOWN_GRACE_MS=5000
cq_setup rebalance
export ALLOWED_SOURCE_SCHEMES=file
export SOURCE_URL_TEMPLATE="file://$CQ_TMP/videos/tiny.mp4"

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# feed RATE: one-item batch messages to $KAFKA_TOPIC at RATE/s until killed (kcat from a pipe).
feed() {
    python3 -u -c '
import json, sys, time, uuid
rate, tag = float(sys.argv[1]), sys.argv[2]
t, i = time.monotonic(), 0
while True:
    item = {"platform": "bench", "code": "%s%06d" % (tag, i)}
    print(json.dumps({"schema": "frameq.batch.v1", "batch_id": str(uuid.uuid4()),
                      "enqueued_at": "2026-01-01T00:00:00Z", "items": [item]}), flush=True)
    i += 1
    t += 1 / rate
    time.sleep(max(0.0, t - time.monotonic()))
' "$RATE" "$1" | kcat -b "$KAFKA_BROKERS" -P -t "$KAFKA_TOPIC" -X linger.ms=5 2>>"$CQ_TMP/feed.log"
}

# first_done LOG: ms epoch of the worker's first completed item, or nothing.
first_done() {
    grep -m1 '"outcome":"done"' "$1" 2>/dev/null |
        python3 -c '
import datetime, json, sys
for l in sys.stdin:
    ts = json.loads(l)["ts"]
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    print(int(d.timestamp() * 1000))
'
}

# wait_first_done LOG TIMEOUT_S: until the worker has completed an item; prints its ms epoch.
wait_first_done() {
    local deadline=$((SECONDS + $2)) t
    while ((SECONDS < deadline)); do
        t=$(first_done "$1" || :) # no completion yet (grep finds none): keep waiting
        [[ -n $t ]] && {
            echo "$t"
            return 0
        }
        sleep 0.1
    done
    cq_fail "$(basename "$1" .log) completed no item within $2 s"
}

# One protocol's run; appends "proto event metric value_ms" lines to $CQ_TMP/results.
run_protocol() {
    local proto=$1 dir=$CQ_TMP/$1
    mkdir -p "$dir"
    export GROUP_PROTOCOL=$proto
    export KAFKA_TOPIC="fqt.$CQ_ID.$proto" KAFKA_GROUP_ID="fqt-$CQ_ID-$proto"
    export KAFKA_RETRY_TOPIC="$KAFKA_TOPIC.retry" KAFKA_DLQ_TOPIC="$KAFKA_TOPIC.dlq"
    "$CQ_BUILD/producer" topics create --partitions "$PARTS" >"$dir/topics.log" 2>&1 ||
        cq_fail "producer topics create: $(tail -3 "$dir/topics.log")"
    feed "$proto" &
    local feeder=$!
    CQ_PIDS+=("$feeder")
    local -A pid=()
    start() { # NAME
        WORKER_ID="$1-$CQ_ID-$proto" "$CQ_BUILD/consumer" --role main 2>>"$dir/$1.log" &
        pid[$1]=$!
        CQ_PIDS+=("$!")
    }
    start a
    start b
    wait_first_done "$dir/a.log" 60 >/dev/null
    wait_first_done "$dir/b.log" 60 >/dev/null
    # Settled: both hold partitions and complete items. The quiet window is the baseline.
    local t0 ev=()
    t0=$(now_ms)
    sleep $((WINDOW_S + 2)) # the window's length is the measurement's input
    ev+=("baseline $((t0 + 2000)) a,b")
    local r name t_start t_first n
    for ((r = 1; r <= REPS; r++)); do
        name=n$r
        t_start=$(now_ms)
        start "$name"
        t_first=$(wait_first_done "$dir/$name.log" 60)
        echo "$proto join first_item $((t_first - t_start))" >>"$CQ_TMP/results"
        ev+=("join $t_start a,b")
        # The join's window must be over before the leave (the gaps are measured in it).
        while (($(now_ms) < t_start + WINDOW_S * 1000)); do sleep 0.2; done
        t_start=$(now_ms)
        kill -TERM "${pid[$name]}"
        for ((n = 0; n < 300; n++)); do
            kill -0 "${pid[$name]}" 2>/dev/null || break
            sleep 0.1
        done
        local rc=0
        wait "${pid[$name]}" || rc=$?
        ((rc == 0)) || cq_fail "$proto: $name exited $rc on SIGTERM"
        ev+=("leave $t_start a,b")
        while (($(now_ms) < t_start + WINDOW_S * 1000)); do sleep 0.2; done
    done
    kill "$feeder" 2>/dev/null || :
    kill -TERM "${pid[a]}" "${pid[b]}"
    local w
    for w in a b; do
        wait "${pid[$w]}" || cq_fail "$proto: $w did not exit 0 on SIGTERM"
    done
    printf '%s\n' "${ev[@]}" >"$dir/events"
    python3 - "$proto" "$dir" "$WINDOW_S" >>"$CQ_TMP/results" <<'PY'
import datetime, json, sys
proto, d, window = sys.argv[1], sys.argv[2], int(sys.argv[3]) * 1000
def ms(ts):
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
done = {}
for w in "ab":
    done[w] = sorted(ms(json.loads(l)["ts"]) for l in open("%s/%s.log" % (d, w))
                     if '"outcome":"done"' in l)
def gap(ts, lo, hi):
    ts = [t for t in ts if lo <= t <= hi]
    return max((b - a for a, b in zip(ts, ts[1:])), default=hi - lo)
for line in open(d + "/events"):
    kind, t, ws = line.split()
    t = int(t); lo, hi = t - 2000, t + window
    ws = ws.split(",")
    print(proto, kind, "gap_merged", gap(sorted(x for w in ws for x in done[w]), lo, hi))
    print(proto, kind, "gap_worker", max(gap(done[w], lo, hi) for w in ws))
PY
}

for p in "${PROTOCOLS[@]}"; do
    cq_say "protocol $p"
    run_protocol "$p"
done

python3 - "$CQ_TMP/results" "$PARTS" "$RATE" "$REPS" "$WINDOW_S" <<'PY'
import statistics, sys
from collections import defaultdict
v = defaultdict(list)
for l in open(sys.argv[1]):
    proto, kind, metric, val = l.split()
    v[(kind, metric, proto)].append(int(val) / 1000)
print("bench_rebalance: %s partitions, %s items/s, 2 workers (+1 joining, then leaving by SIGTERM), "
      "%s repetitions, window %s s" % tuple(sys.argv[2:6]))
print("%-34s %15s %15s %9s" % ("seconds (median / max)", "classic", "consumer", "ratio"))
rows = [("baseline", "gap_merged", "quiet: longest gap, merged"),
        ("baseline", "gap_worker", "quiet: longest gap, per worker"),
        ("join", "gap_merged", "join: longest gap, merged"),
        ("join", "gap_worker", "join: longest gap, per worker"),
        ("join", "first_item", "join: new worker's first item"),
        ("leave", "gap_merged", "leave: longest gap, merged"),
        ("leave", "gap_worker", "leave: longest gap, per worker")]
for kind, metric, label in rows:
    cells, med = [], []
    for p in ("classic", "consumer"):
        x = v[(kind, metric, p)]
        med.append(statistics.median(x))
        cells.append("%6.2f / %6.2f" % (med[-1], max(x)))
    ratio = "%9.2f" % (med[1] / med[0]) if med[0] else "%9s" % "-"
    print("%-34s %15s %15s %s" % (label, cells[0], cells[1], ratio))
print("ratio: consumer median / classic median. merged: completions of the existing workers "
      "together; per worker: the longest of either.")
PY
