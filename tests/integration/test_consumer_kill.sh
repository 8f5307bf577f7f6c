#!/usr/bin/env bash
# SIGKILL a worker in the middle of a batch, restart it with --once: every item ends in exactly
# one terminal state (done, or dead with exactly one DLQ message), no 'processing' row is left,
# no DLQ message is duplicated.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

export WORKER_CONCURRENCY=1 FRAME_FPS=5 MAX_RETRIES=2 RETRY_BACKOFF_MS=200
# The killed member holds its partitions until the broker times its session out: keep that
# short (the broker's minimum) so the restarted worker is assigned quickly. With
# GROUP_PROTOCOL=consumer (KIP-848) the session timeout is the broker's alone
# (group.consumer.session.timeout.ms, 45 s by default); librdkafka refuses the property.
if [[ ${GROUP_PROTOCOL:-classic} == classic ]]; then
    export KAFKA_CONFIG_SESSION_TIMEOUT_MS=6000
fi
cq_setup kill
# A clip long enough (25 frames at FRAME_FPS=5) that the kill lands inside a batch.
ffmpeg -nostdin -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=160x120:rate=25:duration=5 \
    -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f mp4 "$CQ_TMP/videos/medium.mp4" ||
    cq_fail "ffmpeg could not make medium.mp4"

n=0
for p in 0 1 2; do
    items=()
    for i in 1 2 3 4 5 6 7; do
        n=$((n + 1))
        cp "$CQ_TMP/videos/medium.mp4" "$CQ_TMP/videos/k$n.mp4"
        items+=("$(cq_item k "k$n")")
    done
    case $p in
    0) items+=("$(cq_item k gone "$CQ_HTTP/404/medium.mp4")") ;;
    1) items+=("$(cq_item k flaky "$CQ_HTTP/flaky/1/kill-$CQ_ID/medium.mp4")") ;;
    2) items+=("$(cq_item k always "$CQ_HTTP/500/medium.mp4")") ;;
    esac
    cq_produce "$p" "$(cq_batch "${items[@]}")"
done
total=24

done_count() { awk '/"outcome":"done"/ { n++ } END { print n + 0 }' "$CQ_TMP/first.log"; }
: >"$CQ_TMP/first.log" # the background worker opens it a moment later
cq_consumer_bg first
first=$CQ_LAST_PID
done_n=0
for ((i = 0; i < 300; i++)); do
    done_n=$(done_count)
    ((done_n >= 3)) && break
    kill -0 "$first" 2>/dev/null || break
    sleep 0.1
done
((done_n >= 3)) || cq_fail "the first worker finished $done_n item(s) in 30 s: no kill mid-run"
kill -KILL "$first"
rc=0
wait "$first" 2>/dev/null || rc=$?
cq_expect_eq "first worker's end (killed by the SIGKILL)" "$rc" 137
left=$(cq_sql "SELECT $total - count(*) FILTER (WHERE status IN ('done', 'dead')) FROM extraction_items")
cq_say "killed after $(done_count) item(s) done; states: $(cq_sql "SELECT string_agg(status || '=' || n, ' ') FROM (SELECT status, count(*) n FROM extraction_items GROUP BY status) s")"
# Mid-run: work was left for the restarted worker.
((left > 0)) || cq_fail "the kill landed after the run: all $total items were already terminal"

rc=0
cq_consumer second --once || rc=$?
cq_expect_eq "restarted consumer --once exit code (DLQ used)" "$rc" 1

cq_expect_eq "items known to the database" "$(cq_sql "SELECT count(*) FROM extraction_items")" "$total"
cq_expect_eq "items not in a terminal state" "$(cq_sql "SELECT count(*) FROM extraction_items WHERE status NOT IN ('done','dead')")" 0
cq_expect_eq "dead items" "$(cq_sql "SELECT string_agg(code, ',' ORDER BY code) FROM extraction_items WHERE status='dead'")" "always,gone"
cq_expect_eq "done items" "$(cq_sql "SELECT count(*) FROM extraction_items WHERE status='done'")" $((total - 2))
cq_read "$KAFKA_DLQ_TOPIC" >"$CQ_TMP/dlq.jsonl"
cq_expect_eq "DLQ messages per key" "$(python3 -c '
import collections, json, sys
c = collections.Counter(json.loads(l)["key"] for l in open(sys.argv[1]))
print(",".join("%s=%d" % kv for kv in sorted(c.items())))
' "$CQ_TMP/dlq.jsonl")" "k:always=1,k:gone=1"
cq_expect_eq "uncommitted messages left for the group" "$(cq_uncommitted "$KAFKA_TOPIC" "$KAFKA_RETRY_TOPIC")" 0
cq_say "PASS"
