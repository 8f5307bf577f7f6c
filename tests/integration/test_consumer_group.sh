#!/usr/bin/env bash
# Two workers in one consumer group split the main topic's partitions and together process
# every item exactly once: done rows = items, one frame row per item, one 'done' outcome per
# item across both workers' logs, both workers did some; SIGTERM stops both cleanly.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

export WORKER_CONCURRENCY=1
cq_setup group

# Partitions a worker holds now, from its last assignment line ("N in total" / "N left").
held() {
    grep -E '"msg":"(assigned|revoked)' "$CQ_TMP/$1.log" 2>/dev/null | tail -n 1 |
        sed -nE 's/.* ([0-9]+) (in total|left)".*/\1/p' || true
}

# --role main: only the main topic's 3 partitions, so the split is visible.
WORKER_ID="w1-$CQ_ID" cq_consumer_bg w1 --role main
p1=$CQ_LAST_PID
WORKER_ID="w2-$CQ_ID" cq_consumer_bg w2 --role main
p2=$CQ_LAST_PID
for i in $(seq 300); do
    h1=$(held w1) h2=$(held w2)
    [[ -n $h1 && -n $h2 ]] && ((h1 > 0 && h2 > 0 && h1 + h2 == 3)) && break
    sleep 0.1
done
((${h1:-0} > 0 && ${h2:-0} > 0)) || cq_fail "the group did not split the partitions (w1 ${h1:-?}, w2 ${h2:-?})"
cq_say "ok: partitions split $h1 + $h2"

n=0
for b in 0 1 2 3 4 5; do
    items=()
    for i in 1 2 3 4 5; do
        n=$((n + 1))
        cp "$CQ_TMP/videos/tiny.mp4" "$CQ_TMP/videos/g$n.mp4"
        items+=("$(cq_item g "g$n")")
    done
    cq_produce $((b % 3)) "$(cq_batch "${items[@]}")"
done
cq_wait_sql "SELECT count(*) FROM extraction_items WHERE status='done'" "$n" 60

kill -TERM "$p1" "$p2"
rc1=0 rc2=0
wait "$p1" || rc1=$?
wait "$p2" || rc2=$?
cq_expect_eq "exit codes after SIGTERM" "$rc1,$rc2" "0,0"

cq_expect_eq "done items" "$(cq_sql "SELECT count(*) FROM extraction_items WHERE status='done'")" "$n"
cq_expect_eq "frame rows (one per item)" "$(cq_sql "SELECT count(*) || '/' || count(DISTINCT item_id) FROM extraction_frames")" "$n/$n"
d1=$(awk '/"outcome":"done"/ { n++ } END { print n + 0 }' "$CQ_TMP/w1.log")
d2=$(awk '/"outcome":"done"/ { n++ } END { print n + 0 }' "$CQ_TMP/w2.log")
cq_say "worker 1 did $d1 item(s), worker 2 did $d2"
((d1 > 0 && d2 > 0)) || cq_fail "one worker did nothing ($d1, $d2)"
cq_expect_eq "'done' outcomes across both workers" "$((d1 + d2))" "$n"
cq_expect_eq "distinct items done in the logs" "$(cat "$CQ_TMP/w1.log" "$CQ_TMP/w2.log" | grep '"outcome":"done"' | grep -o '"item":"[^"]*"' | sort -u | wc -l)" "$n"
cq_expect_eq "uncommitted messages left for the group" "$(cq_uncommitted "$KAFKA_TOPIC")" 0
cq_say "PASS"
