#!/usr/bin/env bash
# SIGTERM while an item decodes on lent cores: one item at a time on 2 cores, so its H.264
# clip (40 s, an IDR every 2 s) is cut into chunks decoded by the item's thread and a helper.
# After SHUTDOWN_GRACE_MS the worker's cancel flag stops the item on every thread: it is
# abandoned where it was (a log line says so), nothing is committed or routed, the worker exits
# 0, and the next worker gets the message again and takes the item to done.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

export SHUTDOWN_GRACE_MS=200 WORKER_CONCURRENCY=1 WORKER_CORES=2 FRAME_FPS=20 LOG_LEVEL=debug
cq_setup cancel_decode
cq_long_decode worker long40 40
worker=$CQ_LAST_PID
kill -TERM "$worker"
rc=0
wait "$worker" || rc=$?
cq_expect_eq "exit code after SIGTERM" "$rc" 0
grep -q 'abandoned without commit' "$CQ_TMP/worker.log" || cq_fail "the message was not abandoned"
line=$(grep '"msg":"item abandoned at shutdown' "$CQ_TMP/worker.log") || cq_fail "no 'item abandoned' line"
[[ $line == *'"item":"c:long40"'* && $line == *'"stage":"decode"'* ]] || cq_fail "abandoned line: $line"
[[ $line == *'"msg":"item abandoned at shutdown: cancelled while decoding"'* ]] ||
    cq_fail "not cancelled by the extractor: $line"
cq_expect_split_stopped worker c:long40
cq_expect_eq "status of the item" "$(cq_sql "SELECT status FROM extraction_items WHERE code='long40'")" processing
cq_expect_eq "retry messages" "$(cq_count "$KAFKA_RETRY_TOPIC")" 0
cq_expect_eq "DLQ messages" "$(cq_count "$KAFKA_DLQ_TOPIC")" 0
cq_expect_eq "error rows" "$(cq_sql "SELECT count(*) FROM extraction_errors")" 0
cq_expect_eq "messages the group will see again" "$(cq_uncommitted "$KAFKA_TOPIC")" 1

# the next worker replays the message and finishes the item (40 s at 20 fps: 800 frames)
cq_consumer worker2 --once || cq_fail "the second worker failed (exit $?)"
cq_expect_eq "status after the replay" "$(cq_sql "SELECT status || ' ' || frame_count FROM extraction_items WHERE code='long40'")" "done 800"
cq_expect_eq "messages left for the group" "$(cq_uncommitted "$KAFKA_TOPIC")" 0
cq_say "PASS"
