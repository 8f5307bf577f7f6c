#!/usr/bin/env bash
# A rebalance takes a partition away from a worker while its item decodes on lent cores: one
# item at a time on 2 cores, so the clip (60 s, an IDR every 2 s) is cut into chunks decoded by
# the item's thread and a helper. A second worker joins the group; the assignment is eager
# (range), so the first worker gives up every partition, the running item's one included,
# whoever gets it back. The revoke cancels the item on every thread: the first worker logs
# where it stopped, commits nothing for it and goes on; the partition's new owner (either
# worker) replays the message and takes the item to done. Nothing reaches the retry topic, the
# DLQ or extraction_errors, and the group's lag ends at 0.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

export WORKER_CONCURRENCY=1 WORKER_CORES=2 FRAME_FPS=15 LOG_LEVEL=debug
export KAFKA_CONFIG_PARTITION_ASSIGNMENT_STRATEGY=range
# The first worker learns of the rebalance at its next heartbeat: soon, while the item runs.
export KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS=300
cq_setup revoke_decode
cq_long_decode first long60 60
first=$CQ_LAST_PID

WORKER_ID="w2-$CQ_ID" cq_consumer_bg second
second=$CQ_LAST_PID
cq_wait_log first '"msg":"item abandoned with its revoked partition' 60
line=$(grep '"msg":"item abandoned with its revoked partition' "$CQ_TMP/first.log")
[[ $line == *'"item":"c:long60"'* && $line == *'"stage":"decode"'* && $line == *'"outcome":"abandoned"'* ]] ||
    cq_fail "abandoned line: $line"
[[ $line == *': cancelled while decoding"'* ]] || cq_fail "not cancelled by the extractor: $line"
grep -q 'abandoned without commit (cancelled with its revoked partition)' "$CQ_TMP/first.log" ||
    cq_fail "no 'abandoned without commit' line for the message"
cq_expect_split_stopped first c:long60

# 60 s at 15 fps: 900 frames, by whichever worker owns partition 0 now
cq_wait_sql "SELECT status || ' ' || frame_count FROM extraction_items WHERE code='long60'" "done 900" 180
cq_expect_eq "frames in storage" "$(find "$CQ_TMP/frames/c/long60" -name '*.jpg' | wc -l)" 900
cq_expect_eq "workers that finished the item" \
    "$(cat "$CQ_TMP/first.log" "$CQ_TMP/second.log" | grep -c '"item":"c:long60".*"outcome":"done"')" 1
cq_expect_eq "retry messages" "$(cq_count "$KAFKA_RETRY_TOPIC")" 0
cq_expect_eq "DLQ messages" "$(cq_count "$KAFKA_DLQ_TOPIC")" 0
cq_expect_eq "error rows" "$(cq_sql "SELECT count(*) FROM extraction_errors")" 0

for pid in "$first" "$second"; do
    kill -TERM "$pid"
done
for pid in "$first" "$second"; do
    rc=0
    wait "$pid" || rc=$?
    cq_expect_eq "exit code of worker $pid after SIGTERM" "$rc" 0
done
cq_expect_eq "messages the group will see again" "$(cq_uncommitted "$KAFKA_TOPIC")" 0
cq_say "PASS"
