#!/usr/bin/env bash
# SIGTERM before the first assignment: every worker exits 0, without a crash, an abort or an
# assertion (librdkafka before 2.3.0 could abort closing a cooperative-sticky consumer there:
# "rd_kafka_sticky_assignor_state_destroy: Assertion `assignor_state' failed").
#
# 1. Ten moments from right after start-up to well into a join the broker holds. "Before the
#    first assignment" is made certain, not left to timing: a first member of the group takes
#    every partition and is then stopped (SIGSTOP). A newcomer's join is held until that member
#    rejoins or its session expires (classic protocol), or it gets no partition until that
#    member gives them up (GROUP_PROTOCOL=consumer); no newcomer may have been assigned one.
# 2. Ten moments in the first milliseconds after subscribing to a fresh group (readiness flips
#    right after the subscribe), while the join runs unhindered: the worker notices the signal
#    when its current poll returns, so it closes mid-join or just after the first assignment
#    (the log says which it was).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

cq_setup sigterm_early
holder=
resume_holder() { [[ -n $holder ]] && kill -CONT "$holder" 2>/dev/null || true; }
trap 'resume_holder; cq_cleanup' EXIT

# wait_log LOG PATTERN SECONDS: until the log has a line matching PATTERN.
wait_log() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -Eq "$2" "$CQ_TMP/$1.log" 2>/dev/null && return 0
        sleep 0.1
    done
    cq_fail "$1: no line matching '$2' after $3 s"
}

# wait_exit PID LOG SECONDS: the worker's exit code in RC (not a subshell: wait needs the
# child); fails if it is still running by then.
wait_exit() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$1" 2>/dev/null && cq_fail "$2: still running $3 s after SIGTERM"
    RC=0
    wait "$1" || RC=$?
}

# no_crash LOG: exit 0 and no abort, assertion or sanitizer report in the log.
no_crash() {
    [[ $RC == 0 ]] || cq_fail "$1: exit $RC after SIGTERM (want 0)"
    if grep -Eiq 'assert|abort|segmentation|AddressSanitizer|runtime error' "$CQ_TMP/$1.log"; then
        cq_fail "$1: $(grep -Eim3 'assert|abort|segmentation|AddressSanitizer|runtime error' "$CQ_TMP/$1.log")"
    fi
}

# A closing newcomer waits for its held JoinGroup to time out (about 5 s, classic protocol), so
# the ten take about a minute: the stopped holder's session must outlast that (classic default
# 45 s; with GROUP_PROTOCOL=consumer the broker sets it and a newcomer is not held).
if [[ ${GROUP_PROTOCOL:-classic} == classic ]]; then
    export KAFKA_CONFIG_SESSION_TIMEOUT_MS=180000
fi
WORKER_ID="holder-$CQ_ID" cq_consumer_bg holder
unset KAFKA_CONFIG_SESSION_TIMEOUT_MS
holder=$CQ_LAST_PID
wait_log holder '"assigned [1-9][0-9]* partition' 60
kill -STOP "$holder"
cq_say "holder owns every partition and is stopped; group protocol ${GROUP_PROTOCOL:-classic}"

# Classic: no assignment at all (the join never completes). KIP-848: the broker may hand the
# newcomer an empty assignment at once; it must never get a partition.
assigned='"msg":"assigned '
[[ ${GROUP_PROTOCOL:-classic} == classic ]] || assigned='"msg":"assigned [1-9]'
delays=(0 0.02 0.05 0.1 0.2 0.3 0.5 0.8 1.2 2)
for i in "${!delays[@]}"; do
    log=early$i
    WORKER_ID="early$i-$CQ_ID" cq_consumer_bg "$log"
    pid=$CQ_LAST_PID
    # The signal handler is in place once "started" is logged; the delay then picks the moment.
    wait_log "$log" '"msg":"started' 30
    sleep "${delays[$i]}"
    kill -TERM "$pid"
    wait_exit "$pid" "$log" 30
    no_crash "$log"
    if grep -Eq "$assigned" "$CQ_TMP/$log.log"; then
        cq_fail "$log: was assigned before it stopped, so it did not test the early window"
    fi
    cq_say "ok: SIGTERM at +${delays[$i]} s after start-up: exit 0, never assigned"
done

kill -CONT "$holder"
kill -TERM "$holder"
wait_exit "$holder" holder 60
cq_expect_eq "holder exit after SIGCONT and SIGTERM" "$RC" 0
holder=

export METRICS_ADDR=127.0.0.1:0
for ms in 0 1 2 3 5 8 13 20 35 60; do
    log=fresh$ms
    KAFKA_GROUP_ID="fqt-$CQ_ID-fresh$ms" WORKER_ID="fresh$ms-$CQ_ID" cq_consumer_bg "$log"
    pid=$CQ_LAST_PID
    wait_log "$log" '"msg":"metrics: serving' 30
    port=$(sed -nE 's/.*"msg":"metrics: serving .* \(port ([0-9]+)\)".*/\1/p' "$CQ_TMP/$log.log" | head -n 1)
    # Polls /readyz every millisecond, then signals ms milliseconds after it turned 200.
    python3 - "$port" "$pid" "$ms" <<'PY' || cq_fail "$log: /readyz never turned 200"
import os, signal, sys, time, urllib.request
port, pid, ms = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        if urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=1).status == 200:
            time.sleep(ms / 1000)
            os.kill(pid, signal.SIGTERM)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.001)
sys.exit(1)
PY
    wait_exit "$pid" "$log" 30
    no_crash "$log"
    before=$(sed '/"msg":"stopping/q' "$CQ_TMP/$log.log" | grep -c '"msg":"assigned' || true)
    cq_say "ok: SIGTERM $ms ms after the subscribe: exit 0 (assignments before it stopped: $before)"
done
cq_say "PASS"
