#!/usr/bin/env bash
# Static group membership (KAFKA_CONFIG_GROUP_INSTANCE_ID, as the Kubernetes manifests set it
# from the pod name): a worker killed with SIGKILL and started again under the same instance id
# gets its partitions back without a rebalance — the other worker's assignment never changes —
# and long before the session timeout. Then every item is done.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

export WORKER_CONCURRENCY=1
export KAFKA_CONFIG_SESSION_TIMEOUT_MS=30000
cq_setup static

# Partitions a worker holds now, from its last assignment line ("N in total" / "N left").
held() {
    [[ -f $CQ_TMP/$1.log ]] || return 0
    sed -nE '/"msg":"(assigned|revoked)/ s/.* ([0-9]+) (in total|left)".*/\1/p' "$CQ_TMP/$1.log" |
        tail -n 1
}
# Assignment changes a worker logged so far.
changes() {
    awk '/"msg":"(assigned|revoked)/ { n++ } END { print n + 0 }' "$CQ_TMP/$1.log"
}

start() { # NAME
    WORKER_ID="$1-$CQ_ID" KAFKA_CONFIG_GROUP_INSTANCE_ID="$1-$CQ_ID" cq_consumer_bg "$1" --role main
}

start w1
p1=$CQ_LAST_PID
start w2
p2=$CQ_LAST_PID
h1= h2=
for i in $(seq 300); do
    h1=$(held w1) h2=$(held w2)
    [[ -n $h1 && -n $h2 ]] && ((h1 > 0 && h2 > 0 && h1 + h2 == 3)) && break
    sleep 0.1
done
((${h1:-0} > 0 && ${h2:-0} > 0 && h1 + h2 == 3)) ||
    cq_fail "the group did not split the partitions (w1 ${h1:-?}, w2 ${h2:-?})"
cq_say "ok: partitions split $h1 + $h2"
before_w2=$(changes w2)

kill -KILL "$p1"
rc=0
wait "$p1" || rc=$?
cq_expect_eq "w1 killed" "$rc" 137
mv "$CQ_TMP/w1.log" "$CQ_TMP/w1-killed.log"
t0=$SECONDS
start w1
p1=$CQ_LAST_PID
back=
for i in $(seq 300); do
    back=$(held w1)
    [[ -n $back ]] && ((back > 0)) && break
    sleep 0.1
done
waited=$((SECONDS - t0))
cq_expect_eq "partitions of the restarted w1" "${back:-none}" "$h1"
((waited < 20)) || cq_fail "w1 got its partitions back after ${waited} s, not before the 30 s session timeout"
cq_say "ok: w1 back with its $back partition(s) after ${waited} s"
cq_expect_eq "assignment changes at w2 (none: no rebalance)" "$(changes w2)" "$before_w2"

n=0
for b in 0 1 2; do
    items=()
    for i in 1 2 3; do
        n=$((n + 1))
        cp "$CQ_TMP/videos/tiny.mp4" "$CQ_TMP/videos/s$n.mp4"
        items+=("$(cq_item s "s$n")")
    done
    cq_produce "$b" "$(cq_batch "${items[@]}")"
done
cq_wait_sql "SELECT count(*) FROM extraction_items WHERE status='done'" "$n" 60
cq_expect_eq "assignment changes at w2 after the work" "$(changes w2)" "$before_w2"

kill -TERM "$p1" "$p2"
rc1=0 rc2=0
wait "$p1" || rc1=$?
wait "$p2" || rc2=$?
cq_expect_eq "exit codes after SIGTERM" "$rc1,$rc2" "0,0"
cq_say "PASS"
