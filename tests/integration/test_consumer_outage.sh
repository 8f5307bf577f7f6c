#!/usr/bin/env bash
# PostgreSQL unreachable for 20 s in the middle of a run: the worker pauses, reports the outage
# once, routes nothing (no retry, no DLQ message, no error row, no attempt burned) and finishes
# every item by itself once the database is back.
#
# The outage is made by cutting a TCP forwarder between the worker and the stack's PostgreSQL,
# so the shared server keeps serving everyone else; to the worker it looks the same (existing
# connections die, new ones are refused).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

cq_setup outage
direct_url=$DATABASE_URL
hostport=${direct_url#*@}
hostport=${hostport%%/*}
pg_host=${hostport%:*}
pg_port=${hostport##*:}
cq_proxy_start "$CQ_TMP/proxy.port" "$pg_host" "$pg_port"
proxy_port=$(cat "$CQ_TMP/proxy.port")
worker_url="${direct_url/@$hostport/@127.0.0.1:$proxy_port}"

for i in $(seq -w 1 10); do cp "$CQ_TMP/videos/tiny.mp4" "$CQ_TMP/videos/o$i.mp4"; done

DATABASE_URL=$worker_url cq_consumer_bg worker
worker=$CQ_LAST_PID
cq_produce 0 "$(cq_batch "$(cq_item o o01)" "$(cq_item o o02)")"
cq_wait_sql "SELECT count(*) FROM extraction_items WHERE status='done'" 2 30

kill "$CQ_PROXY_PID"
wait "$CQ_PROXY_PID" 2>/dev/null || true
cut_at=$(date +%s)
cq_say "database cut off"
cq_produce 1 "$(cq_batch "$(cq_item o o03)" "$(cq_item o o04)" "$(cq_item o o05)")"
cq_produce 2 "$(cq_batch "$(cq_item o o06)" "$(cq_item o o07)")"
# The worker must notice (its items need the database); then the database stays away for the
# rest of the 20 s, the outage's length being the input here.
for ((i = 0; i < 200; i++)); do
    grep -q '"msg":"outage: pausing' "$CQ_TMP/worker.log" && break
    sleep 0.1
done
grep -q '"msg":"outage: pausing' "$CQ_TMP/worker.log" ||
    cq_fail "no outage logged within 20 s of cutting the database off"
cq_say "outage noticed after $(($(date +%s) - cut_at)) s"
while (($(date +%s) - cut_at < 20)); do
    sleep 0.5
done
cq_expect_eq "retry messages during the outage" "$(cq_count "$KAFKA_RETRY_TOPIC")" 0
cq_expect_eq "DLQ messages during the outage" "$(cq_count "$KAFKA_DLQ_TOPIC")" 0

cq_proxy_start "$CQ_TMP/proxy2.port" "$pg_host" "$pg_port" "$proxy_port"
cq_say "database back after $(($(date +%s) - cut_at)) s"
cq_produce 0 "$(cq_batch "$(cq_item o o08)" "$(cq_item o o09)" "$(cq_item o o10)")"
cq_wait_sql "SELECT count(*) FROM extraction_items WHERE status='done'" 10 90

cq_expect_eq "outage lines (logged once)" "$(grep -c '"msg":"outage: pausing' "$CQ_TMP/worker.log")" 1
grep -q '"msg":"outage over' "$CQ_TMP/worker.log" || cq_fail "no 'outage over' line"
cq_expect_eq "attempts burned" "$(cq_sql "SELECT count(*) FROM extraction_items WHERE attempts <> 1")" 0
cq_expect_eq "error rows" "$(cq_sql "SELECT count(*) FROM extraction_errors")" 0
cq_expect_eq "retry messages" "$(cq_count "$KAFKA_RETRY_TOPIC")" 0
cq_expect_eq "DLQ messages" "$(cq_count "$KAFKA_DLQ_TOPIC")" 0
kill -TERM "$worker"
rc=0
wait "$worker" || rc=$?
cq_expect_eq "exit code after SIGTERM" "$rc" 0
cq_expect_eq "uncommitted messages left for the group" "$(cq_uncommitted "$KAFKA_TOPIC")" 0
cq_say "PASS"
