#!/usr/bin/env bash
# SIGTERM with an item that cannot finish: the worker stops fetching, waits SHUTDOWN_GRACE_MS,
# cancels, commits nothing for that message, routes nothing, leaves the group and exits 0. The
# next worker gets the message again.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

export SHUTDOWN_GRACE_MS=500 HTTP_TIMEOUT_MS=3000
cq_setup shutdown
cq_produce 0 "$(cq_batch "$(cq_item s stuck "$CQ_HTTP/stall/tiny.mp4")")"

cq_consumer_bg worker
worker=$CQ_LAST_PID
for i in $(seq 100); do
    [[ $(cq_sql "SELECT count(*) FROM extraction_items WHERE status='processing'") == 1 ]] && break
    sleep 0.1
done
cq_expect_eq "item in flight" "$(cq_sql "SELECT status FROM extraction_items WHERE code='stuck'")" processing
kill -TERM "$worker"
rc=0
wait "$worker" || rc=$?
cq_expect_eq "exit code after SIGTERM" "$rc" 0
grep -q '"msg":"shutdown grace over' "$CQ_TMP/worker.log" || cq_fail "no 'shutdown grace over' line"
grep -q 'abandoned without commit' "$CQ_TMP/worker.log" || cq_fail "the message was not abandoned"
cq_expect_eq "retry messages" "$(cq_count "$KAFKA_RETRY_TOPIC")" 0
cq_expect_eq "DLQ messages" "$(cq_count "$KAFKA_DLQ_TOPIC")" 0
cq_expect_eq "error rows" "$(cq_sql "SELECT count(*) FROM extraction_errors")" 0
cq_expect_eq "messages the group will see again" "$(cq_uncommitted "$KAFKA_TOPIC")" 1
cq_say "PASS"
