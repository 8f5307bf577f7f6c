#!/usr/bin/env bash
# SIGTERM before the first assignment, ten times at different moments (from right after start-up
# to well into the group join): every worker exits 0, without a crash, an abort or an assertion
# (librdkafka before 2.3.0 could crash closing a cooperative-sticky consumer in that window).
#
# "Before the first assignment" is made certain, not left to timing: a first member of the
# group takes every partition and is then stopped (SIGSTOP). A newcomer's join is held by the
# broker until that member rejoins or its session expires (classic protocol), or it gets no
# partition until that member gives them up (GROUP_PROTOCOL=consumer); the test checks that no
# newcomer was ever assigned a partition.
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
    [[ $RC == 0 ]] || cq_fail "$log: exit $RC after SIGTERM at +${delays[$i]} s (want 0)"
    if grep -Eiq 'assert|abort|segmentation|AddressSanitizer|runtime error' "$CQ_TMP/$log.log"; then
        cq_fail "$log: $(grep -Eim3 'assert|abort|segmentation|AddressSanitizer|runtime error' "$CQ_TMP/$log.log")"
    fi
    if grep -Eq '"assigned [1-9]' "$CQ_TMP/$log.log"; then
        cq_fail "$log: got partitions before the SIGTERM, so it did not test the early window"
    fi
    cq_say "ok: SIGTERM at +${delays[$i]} s after start-up: exit 0, no partition assigned"
done

kill -CONT "$holder"
kill -TERM "$holder"
wait_exit "$holder" holder 60
cq_expect_eq "holder exit after SIGCONT and SIGTERM" "$RC" 0
holder=
cq_say "PASS"
