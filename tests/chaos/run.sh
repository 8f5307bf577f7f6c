#!/usr/bin/env bash
# run.sh [--short|--long] [--keep] [--protocols] [scenario...] — chaos scenarios against the
# real workers.
#
# Group protocol: GROUP_PROTOCOL (classic or consumer, default classic); --protocols runs the
# scenarios under classic, then under consumer (KIP-848), and fails if either fails. Under
# classic the workers get a short session (8 s, heartbeat 1 s); under consumer the broker's
# group.consumer.session.timeout.ms applies (deploy/local sets 10 s).
#
# Scenarios: sigkill kafka-restart pg-stop s3-stop rolling-sigterm fleet (default: all, in that
# order). Each of the first five: 3 workers (`consumer`, one WORKER_ID each, one group) on fresh
# topics (chaos.<scenario>.<run>.jobs, 6 partitions) and a throwaway database; items mix good
# clips in S3 (one frame, or 12 s of video decoded in chunks when a core is free), retriable ones
# on the fault server (/flaky/1, /flaky/2: succeed within MAX_RETRIES; /500: exhaust their
# retries), and permanent failures (missing object -> 404, corrupt bytes). The fault is injected
# while work flows; the run waits until every item is done/dead in PostgreSQL (or a timeout),
# stops the workers, drains with `consumer --once`, then waits for every transaction on the
# topics to settle (up to TXN_SETTLE_S; one still open then is a failure: it stalls its
# partition), runs check_invariants.sh (which also checks every done item's frame rows) and
# compares the dead items with the set designed to die and each done item's frame count with its
# clip's: an outage of Kafka, PostgreSQL or S3 must burn no item. kafka-restart kills the broker
# (CHAOS_KAFKA_STOP=term: shuts it down instead; see stop_service); pg-stop and s3-stop shut
# their service down.
#
# fleet (DESIGN §3, §6: a fleet, not one worker), same items and checks, in three phases:
# (1) autoscale: 4 workers of one group while items flow; every SCALE_EVERY_S an autoscaler
# SIGTERMs them down to one and starts them back up to 4 (each SIGTERM: exit 0). (2) outage:
# 3 workers, PostgreSQL stopped for FLEET_OUTAGE_S with work in flight, a rebalance inside the
# outage (one worker SIGTERMed, a new one joins); every live worker's /readyz must answer 200
# within READY_LIMIT_S of PostgreSQL's return, and again once no work is left. (3) a --once
# fleet: 3 `consumer --once` started together, one more ONCE_LATE_S later, on fresh work with
# retries; each must exit by itself within ONCE_TIMEOUT_S, every item terminal. At the end every
# worker process has exited and fq_lag (end offset - committed offset, as KEDA reads it) is 0 on
# every partition of the main and retry topics. Each failed check prints one line with numbers.
#
# Prints one row per scenario: scenario items done dead lost dup drain_s verdict, and exits 1 if
# any scenario failed. Needs the local stack (deploy/local/up; . .stack/env) and FQ_BUILD_DIR
# (a build with consumer, producer and fq_lag; default <repo>/build). Stops and restarts the
# stack's services (deploy/local/down|up with this environment): run it on a private stack
# (FRAMEQ_STATE_DIR and the FRAMEQ_*_PORT overrides exported) beside colleagues.
set -euo pipefail
export LC_ALL=C # sort and join must agree on one order
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=short
scenarios=()
for arg in "$@"; do
    case $arg in
    --protocols)
        # Every scenario under both group protocols: this script once per protocol.
        rest=()
        for a in "$@"; do
            [[ $a == --protocols ]] || rest+=("$a")
        done
        rc=0
        for p in classic consumer; do
            GROUP_PROTOCOL=$p bash "${BASH_SOURCE[0]}" "${rest[@]}" || rc=1
        done
        exit $rc
        ;;
    --short) mode=short ;;
    --long) mode=long ;;
    --keep) export CH_KEEP=1 ;;
    sigkill | kafka-restart | pg-stop | s3-stop | rolling-sigterm | fleet) scenarios+=("$arg") ;;
    -h | --help)
        sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [--short|--long] [--keep] [--protocols] [sigkill|kafka-restart|pg-stop|s3-stop|rolling-sigterm|fleet ...]" >&2
        exit 2
        ;;
    esac
done
((${#scenarios[@]})) || scenarios=(sigkill kafka-restart pg-stop s3-stop rolling-sigterm fleet)

if [[ $mode == short ]]; then
    N_ITEMS=${CHAOS_ITEMS:-60}
    OUTAGE_S=10
    KILL_EVERY_S=3
    MAX_KILLS=5
    ROLLS=3
    DRAIN_TIMEOUT_S=${CHAOS_DRAIN_TIMEOUT_S:-150}
    SCALE_STEPS=(3 2 1 2 3 4) # fleet: the autoscaler's targets, one per SCALE_EVERY_S
    ONCE_TIMEOUT_S=120
else
    N_ITEMS=${CHAOS_ITEMS:-1000}
    OUTAGE_S=20
    KILL_EVERY_S=4
    MAX_KILLS=15
    ROLLS=6
    DRAIN_TIMEOUT_S=${CHAOS_DRAIN_TIMEOUT_S:-600}
    SCALE_STEPS=(3 2 1 2 3 4 3 2 1 2 3 4)
    ONCE_TIMEOUT_S=300
fi
N_WORKERS=3
SCALE_EVERY_S=3
FLEET_MAX=4       # fleet: workers at most
FLEET_OUTAGE_S=20 # fleet: PostgreSQL's outage; longer than a probe backoff of 1+2+4+8 s
READY_LIMIT_S=10  # DESIGN §3: /readyz 200 within seconds after an outage ends
READY_WAIT_S=40   # how long the time-to-200 is measured before it counts as never
ONCE_LATE_S=5     # the late --once worker starts this long after the first three

ch_require_env S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
if [[ " ${scenarios[*]} " == *" fleet "* ]]; then
    [[ -x $CH_BUILD/fq_lag ]] || ch_fail "fleet needs fq_lag (a test tool target) in $CH_BUILD"
fi
ch_init chaos
CH_ADMIN_URL=$DATABASE_URL
ADMIN_URL=$DATABASE_URL

# --- the stack's services ---------------------------------------------------------------------
# The broker is killed (a crash) unless CHAOS_KAFKA_STOP=term: on this single-replica broker a
# shutdown of its own first leaves every partition without a leader, and Kafka's transaction
# coordinator completes a transaction committed in that window without writing its markers (it
# skips partitions with no leader as deleted), so a later marker of the same producer decides
# the transaction's records: an abort loses them while its offsets stand. A replicated cluster
# keeps a leader through one broker's shutdown (README, Delivery guarantees).
stop_service() { # kafka|postgres|s3
    local how=()
    [[ $1 == kafka && ${CHAOS_KAFKA_STOP:-crash} == crash ]] && how=(--crash)
    "$CH_SRC/deploy/local/down" "${how[@]}" "$1" >>"$CH_TMP/stack.log" 2>&1 ||
        ch_fail "deploy/local/down $1 failed: $(tail -3 "$CH_TMP/stack.log")"
}
start_service() {
    local i
    for i in 1 2 3; do
        if "$CH_SRC/deploy/local/up" "$1" >>"$CH_TMP/stack.log" 2>&1; then
            return 0
        fi
        sleep 2
    done
    ch_fail "deploy/local/up $1 failed three times"
}
# Whatever happens, leave the shared stack running.
restore_stack() {
    if [[ -n ${STOPPED:-} ]]; then
        start_service "$STOPPED" || true
        STOPPED=
    fi
}

# --- items ------------------------------------------------------------------------------------
# make_items DIR: writes DIR/items.ndjson and DIR/expect (key class) and uploads the S3 objects.
# Classes: good (S3 clip, 1 frame), long (S3 clip of LONG_S seconds with an IDR every 2 s: one
# frame a second, decoded in chunks when the worker has a core to lend), flaky (fault server,
# fails 1 or 2 times), missing (no object, 404), corrupt (random bytes in S3), exhaust (fault
# server /500: dies after MAX_RETRIES).
make_items() {
    local dir=$1 n=$N_ITEMS i code class url
    : >"$dir/items.ndjson"
    : >"$dir/expect"
    : >"$dir/good.codes"
    : >"$dir/corrupt.codes"
    : >"$dir/long.codes"
    for ((i = 0; i < N_WAVES; i++)); do
        : >"$dir/wave$i"
    done
    for ((i = 0; i < n; i++)); do
        code=$(printf 'c%05d' "$i")
        url=
        # Per 20 items: 11 good, 2 long, 3 flaky, 2 missing, 1 corrupt, 1 exhaust, interleaved.
        case $((i % 20)) in
        0 | 5 | 13) class=flaky url="$CH_HTTP/flaky/$((i % 2 + 1))/$SCN-$CH_RUN-$code/tiny.mp4" ;;
        3 | 16) class=missing ;;
        8) class=corrupt ;;
        10) class=exhaust url="$CH_HTTP/500/$code.mp4" ;;
        6 | 18) class=long ;;
        *) class=good ;;
        esac
        if [[ -n $url ]]; then
            printf '{"platform":"chaos","code":"%s","video_url":"%s"}\n' "$code" "$url"
        else
            printf '{"platform":"chaos","code":"%s"}\n' "$code"
        fi | tee -a "$dir/wave$((i * N_WAVES / n))" >>"$dir/items.ndjson"
        echo "chaos:$code $class" >>"$dir/expect"
        case $class in
        good) echo "$code" >>"$dir/good.codes" ;;
        corrupt) echo "$code" >>"$dir/corrupt.codes" ;;
        long) echo "$code" >>"$dir/long.codes" ;;
        esac
    done
    ch_s3_put_many "$CH_TMP/videos/tiny.mp4" "frameq-videos/$S3_PREFIX/chaos" <"$dir/good.codes"
    ch_s3_put_many "$CH_TMP/videos/corrupt.mp4" "frameq-videos/$S3_PREFIX/chaos" \
        <"$dir/corrupt.codes"
    ch_s3_put_many "$CH_TMP/videos/long.mp4" "frameq-videos/$S3_PREFIX/chaos" <"$dir/long.codes"
}

# --- workers ----------------------------------------------------------------------------------
W_PID=()
W_LOGPOS=()
W_PORT=() # fleet: each live worker's METRICS_ADDR port (/readyz)
ALL_PIDS=() # every worker process of the scenario, to prove at the end that each one exited
start_worker() {
    local i=$1
    local metrics=off
    if ((W_METRICS)); then
        W_PORT[i]=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        metrics=127.0.0.1:${W_PORT[i]}
    fi
    touch "$SDIR/w$i.log"
    W_LOGPOS[i]=$(wc -l <"$SDIR/w$i.log")
    WORKER_ID="chaos-$SCN-$CH_RUN-w$i" METRICS_ADDR=$metrics "$CH_BUILD/consumer" \
        2>>"$SDIR/w$i.log" &
    W_PID[i]=$!
    ALL_PIDS+=("$!")
}
# hung_worker SLOT: a worker that outlived its SIGTERM by 40 s. Its threads' stacks go to
# $SDIR/wSLOT.stacks (gdb, when installed) before the SIGKILL; prints where its main thread was,
# innermost frame first, for the failure line.
hung_worker() {
    local i=$1 where="" dir=${SDIR:-$CH_TMP}
    if command -v gdb >/dev/null; then
        gdb -p "${W_PID[i]}" -batch -ex 'thread apply all bt' >"$dir/w$i.stacks" 2>&1 || :
        # Thread 1 is the loop: its frames, our and librdkafka's functions only.
        where=$(awk '/^Thread 1 /{on=1; next} /^Thread /{on=0} on && / in [a-z_]+ \(/ {
            for (f = 1; f <= NF; f++) if ($f == "in") { print $(f + 1); break } }' \
            "$dir/w$i.stacks" | grep -E '^(fq_|rd_kafka_|main$|run_)' | head -6 | paste -sd '<' -)
    fi
    kill -KILL "${W_PID[i]}" 2>/dev/null || :
    echo "main thread in ${where:-?} (stacks: w$i.stacks; last log line: $(tail -n 1 "$dir/w$i.log" | cut -c1-200))"
}

stop_workers() { # SIGTERM all, wait for each (SIGKILL after 40 s); non-zero exits to bad_exits
    local i n rc hung
    for i in "${!W_PID[@]}"; do
        # A worker already gone is no error here: wait below reports how it ended.
        [[ -z ${W_PID[i]:-} ]] || kill -TERM "${W_PID[i]}" 2>/dev/null || :
    done
    for i in "${!W_PID[@]}"; do
        [[ -n ${W_PID[i]:-} ]] || continue
        for ((n = 0; n < 400; n++)); do
            kill -0 "${W_PID[i]}" 2>/dev/null || break
            sleep 0.1
        done
        hung=""
        ((n < 400)) || hung=$(hung_worker "$i")
        rc=0
        wait "${W_PID[i]}" 2>/dev/null || rc=$?
        ((rc == 0)) || echo "w$i exited $rc on the final SIGTERM${hung:+: $hung}" >>"${SDIR:-$CH_TMP}/bad_exits"
        W_PID[i]=
    done
}

terminal_count() {
    ch_sql "SELECT count(*) FROM extraction_items WHERE status IN ('done', 'dead')" 2>/dev/null ||
        echo -1
}

# --- faults: one tick every ~0.5 s with the elapsed time and progress -------------------------
# Each sets FAULT_DONE=1 when it has nothing more to inject.
FAULT_STATE=0
NEXT_FAULT_T=0
fault_sigkill() { # $1 elapsed s, $2 terminal items
    if ((FAULT_STATE >= MAX_KILLS || $2 >= N_ITEMS)); then
        FAULT_DONE=1
        return
    fi
    # The next kill is due KILL_EVERY_S after the previous one finished (no catch-up bursts).
    if (($1 >= NEXT_FAULT_T)); then
        local i=$((RANDOM % N_WORKERS)) rc=0
        kill -KILL "${W_PID[i]}" 2>/dev/null || : # gone already: wait says how it ended
        wait "${W_PID[i]}" 2>/dev/null || rc=$?
        # 137: our SIGKILL landed on a running worker; anything else means it had died before.
        ((rc == 137)) || echo "w$i had already exited $rc before its SIGKILL at t=${1}s" >>"$SDIR/bad_exits"
        echo "t=${1}s SIGKILL w$i at $2/$N_ITEMS" >>"$SDIR/faults.log"
        start_worker "$i"
        FAULT_STATE=$((FAULT_STATE + 1))
        NEXT_FAULT_T=$((SECONDS - T0 + KILL_EVERY_S))
    fi
}
fault_rolling_sigterm() {
    if ((FAULT_STATE >= ROLLS || $2 >= N_ITEMS)); then
        FAULT_DONE=1
        return
    fi
    # The next kill is due KILL_EVERY_S after the previous one finished (no catch-up bursts).
    if (($1 >= NEXT_FAULT_T)); then
        local i=$((FAULT_STATE % N_WORKERS)) n
        kill -TERM "${W_PID[i]}" 2>/dev/null || true
        for ((n = 0; n < 400; n++)); do
            kill -0 "${W_PID[i]}" 2>/dev/null || break
            sleep 0.1
        done
        local rc=0
        wait "${W_PID[i]}" 2>/dev/null || rc=$?
        echo "t=${1}s SIGTERM w$i at $2/$N_ITEMS: exited $rc after $((n / 10)).$((n % 10)) s" \
            >>"$SDIR/faults.log"
        # DESIGN §3: SIGTERM leaves the group cleanly, exit 0.
        ((rc == 0)) || echo "w$i exited $rc on SIGTERM at t=${1}s" >>"$SDIR/bad_exits"
        start_worker "$i"
        FAULT_STATE=$((FAULT_STATE + 1))
        NEXT_FAULT_T=$((SECONDS - T0 + KILL_EVERY_S))
    fi
}
# outage SERVICE: stops it once work flows (15 % terminal or 6 s), starts it OUTAGE_S later.
fault_outage() {
    local svc=$1 t=$2 done_n=$3
    case $FAULT_STATE in
    0)
        if ((done_n * 100 >= N_ITEMS * 15 || t >= 6)); then
            echo "t=${t}s stopping $svc at $done_n/$N_ITEMS" >>"$SDIR/faults.log"
            STOPPED=$svc
            stop_service "$svc"
            FAULT_T0=$SECONDS
            echo "t=$((SECONDS - T0))s $svc stopped" >>"$SDIR/faults.log"
            FAULT_STATE=1
        fi
        ;;
    1)
        if ((SECONDS - FAULT_T0 >= OUTAGE_S)); then
            start_service "$svc"
            STOPPED=
            echo "t=$((SECONDS - T0))s $svc started again" >>"$SDIR/faults.log"
            FAULT_STATE=2
            FAULT_DONE=1
        fi
        ;;
    esac
}
fault_kafka_restart() { fault_outage kafka "$@"; }
fault_pg_stop() { fault_outage postgres "$@"; }
fault_s3_stop() { fault_outage s3 "$@"; }

# wave_at N: the fault state at which wave N (1, 2) is enqueued. Kafka must be back first.
wave_at() {
    case $SCN in
    sigkill) echo $(($1 * 2 - 1)) ;;         # after kill 1, after kill 3
    kafka-restart) echo 2 ;;                 # both once the broker is back
    pg-stop | s3-stop) echo "$1" ;;          # during the outage, after it
    rolling-sigterm) echo "$1" ;;            # after each of the first two restarts
    esac
}

# --- fleet ------------------------------------------------------------------------------------
# fleet_note TEXT: one line of the scenario's story (printed under its row).
fleet_note() { echo "t=$((SECONDS - T0))s $*" >>"$SDIR/faults.log"; }

# stop_worker SLOT WHEN: SIGTERM, wait up to 40 s (then SIGKILL); DESIGN §3: exit 0.
stop_worker() {
    local i=$1 n rc=0
    # A process SIGTERMed while the loader still maps its libraries (~0.1 s) dies by the
    # default action (143) before main() can install its handler: an autoscaler's SIGTERM is
    # judged once the worker has started (its first log line), within 20 s.
    for ((n = 0; n < 200; n++)); do
        [[ $(tail -n +"$((${W_LOGPOS[i]:-0} + 1))" "$SDIR/w$i.log" | grep -c '"msg":"started: ') -gt 0 ]] && break
        kill -0 "${W_PID[i]}" 2>/dev/null || break
        sleep 0.1
    done
    kill -TERM "${W_PID[i]}" 2>/dev/null || : # already gone: wait reports how it ended
    for ((n = 0; n < 400; n++)); do
        kill -0 "${W_PID[i]}" 2>/dev/null || break
        sleep 0.1
    done
    if ((n == 400)); then
        echo "w$i still running 40 s after SIGTERM ($2): $(hung_worker "$i")" >>"$SDIR/bad_exits"
    fi
    wait "${W_PID[i]}" 2>/dev/null || rc=$?
    ((rc == 0)) || echo "w$i exited $rc on SIGTERM ($2)" >>"$SDIR/bad_exits"
    W_PID[i]=
    STOP_TOOK="$((n / 10)).$((n % 10)) s, exit $rc"
}

fleet_live() { # the live slots, ascending, on one line
    local i out=()
    for i in "${!W_PID[@]}"; do
        [[ -n ${W_PID[i]} ]] && out+=("$i")
    done
    echo "${out[*]}"
}

# fleet_scale_to N WHY: SIGTERMs the highest slots or starts the lowest free ones.
fleet_scale_to() {
    local want=$1 live i
    read -ra live <<<"$(fleet_live)"
    while ((${#live[@]} > want)); do
        i=${live[-1]}
        stop_worker "$i" "$2"
        fleet_note "scale to $want: SIGTERM w$i, gone after $STOP_TOOK"
        read -ra live <<<"$(fleet_live)"
    done
    for ((i = 0; ${#live[@]} < want && i < FLEET_MAX; i++)); do
        if [[ -z ${W_PID[i]:-} ]]; then
            start_worker "$i"
            fleet_note "scale to $want: started w$i"
            read -ra live <<<"$(fleet_live)"
        fi
    done
}

readyz() { # PORT -> HTTP status of /readyz (000: no answer)
    curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/readyz" || :
}

# wait_terminal WANT TIMEOUT_S: until WANT items are done or dead; TERMINAL holds the last count.
wait_terminal() {
    local deadline=$((SECONDS + $2))
    while TERMINAL=$(terminal_count) && ((TERMINAL < $1 && SECONDS < deadline)); do
        sleep 0.5
    done
    ((TERMINAL >= $1))
}

# Phase 1: an autoscaled group while items flow, some of them retried.
fleet_autoscale() {
    local step enq=0
    fleet_scale_to "$FLEET_MAX" "start"
    ch_enqueue "$SDIR/wave0"
    enq=$(wc -l <"$SDIR/wave0")
    local wave=1
    for ((step = 0; step < ${#SCALE_STEPS[@]}; step++)); do
        # The autoscaler's period: time is the input here, not a stand-in for a condition.
        sleep "$SCALE_EVERY_S"
        fleet_scale_to "${SCALE_STEPS[step]}" "autoscaler step $step"
        if ((wave < 4 && step % 2 == 0)); then
            ch_enqueue "$SDIR/wave$wave"
            enq=$((enq + $(wc -l <"$SDIR/wave$wave")))
            fleet_note "wave $wave enqueued ($enq items so far) with $(fleet_live | wc -w) worker(s)"
            wave=$((wave + 1))
        fi
    done
    while ((wave < 4)); do
        ch_enqueue "$SDIR/wave$wave"
        enq=$((enq + $(wc -l <"$SDIR/wave$wave")))
        wave=$((wave + 1))
    done
    if wait_terminal "$enq" "$DRAIN_TIMEOUT_S"; then
        fleet_note "autoscale phase drained: $TERMINAL/$enq terminal"
    else
        why+=("autoscale phase: only $TERMINAL of $enq items terminal after ${DRAIN_TIMEOUT_S}s")
    fi
    ENQ=$enq
}

# Phase 2: PostgreSQL stops under 3 workers with work in flight; a rebalance inside the outage;
# then every live worker's /readyz must be 200 within READY_LIMIT_S of PostgreSQL's return.
fleet_outage() {
    fleet_scale_to 3 "before the outage"
    local i live code
    STOPPED=postgres
    stop_service postgres
    local t_stop=$SECONDS
    fleet_note "postgres stopped under w$(fleet_live | sed 's/ /, w/g')"
    ch_enqueue "$SDIR/wave4"
    ENQ=$((ENQ + $(wc -l <"$SDIR/wave4")))
    # The rebalance must hit workers that know about the outage: wait until one says so.
    local noticed=
    while [[ -z $noticed ]] && ((SECONDS - t_stop < FLEET_OUTAGE_S)); do
        for i in $(fleet_live); do
            code=$(readyz "${W_PORT[i]}")
            [[ $code == 503 ]] && noticed="w$i"
        done
        [[ -n $noticed ]] || sleep 0.2
    done
    if [[ -z $noticed ]]; then
        why+=("outage: no worker reported not-ready within ${FLEET_OUTAGE_S}s of the PostgreSQL stop (no work in flight?)")
    else
        fleet_note "$noticed not ready: the outage is seen"
    fi
    stop_worker 2 "during the PostgreSQL outage"
    fleet_note "SIGTERM w2 during the outage, gone after $STOP_TOOK"
    start_worker 3
    fleet_note "w3 joins during the outage: w0 and w1 give up partitions to it"
    while ((SECONDS - t_stop < FLEET_OUTAGE_S)); do
        sleep 0.2 # the outage's length is the input
    done
    start_service postgres
    STOPPED=
    local t_up
    t_up=$(date +%s%N)
    fleet_note "postgres started again after $((SECONDS - t_stop)) s"
    # Time to /readyz 200 per live worker, measured from PostgreSQL's return.
    read -ra live <<<"$(fleet_live)"
    local -A ready_ms=()
    local ports=() pending=${#live[@]} elapsed
    for i in "${live[@]}"; do
        ports[i]=${W_PORT[i]}
    done
    while ((pending > 0)); do
        elapsed=$((($(date +%s%N) - t_up) / 1000000))
        ((elapsed <= READY_WAIT_S * 1000)) || break
        pending=0
        for i in "${live[@]}"; do
            [[ -n ${ready_ms[$i]:-} ]] && continue
            if [[ $(readyz "${ports[i]}") == 200 ]]; then
                ready_ms[$i]=$elapsed
            else
                pending=$((pending + 1))
            fi
        done
        ((pending == 0)) || sleep 0.2
    done
    local report=()
    for i in "${live[@]}"; do
        if [[ -z ${ready_ms[$i]:-} ]]; then
            report+=("w$i never (>${READY_WAIT_S}s, /readyz $(readyz "${ports[i]}"))")
            why+=("readyz: w$i not ready ${READY_WAIT_S}s after PostgreSQL returned (limit ${READY_LIMIT_S}s); last answer: $(curl -s --max-time 1 "http://127.0.0.1:${ports[i]}/readyz" | head -c 200)")
        else
            local took
            took="$((ready_ms[$i] / 1000)).$(printf '%03d' $((ready_ms[$i] % 1000)))"
            report+=("w$i ${took}s")
            ((ready_ms[$i] <= READY_LIMIT_S * 1000)) ||
                why+=("readyz: w$i took $took s to be ready after PostgreSQL returned (limit ${READY_LIMIT_S} s)")
        fi
    done
    fleet_note "readyz 200 after PostgreSQL returned: ${report[*]}"
    if wait_terminal "$ENQ" "$DRAIN_TIMEOUT_S"; then
        fleet_note "outage phase drained: $TERMINAL/$ENQ terminal"
    else
        why+=("outage phase: only $TERMINAL of $ENQ items terminal after ${DRAIN_TIMEOUT_S}s")
    fi
    # Nothing flows now: a worker that lost the message it was holding when the outage began
    # has none left to prove the database back; it must be ready anyway (DESIGN §3).
    for i in $(fleet_live); do
        code=$(readyz "${ports[i]}")
        [[ $code == 200 ]] ||
            why+=("readyz: w$i answers $code with no work left, $((SECONDS - t_stop - FLEET_OUTAGE_S)) s after the outage: $(curl -s --max-time 1 "http://127.0.0.1:${ports[i]}/readyz" | head -c 200)")
    done
}

# Phase 3: the long-running workers leave; a --once fleet (3 together, 1 late) drains fresh
# work with retries waiting. Each must exit by itself, leaving nothing.
fleet_once() {
    stop_workers
    fleet_note "all long-running workers stopped"
    ch_enqueue "$SDIR/wave5"
    ENQ=$((ENQ + $(wc -l <"$SDIR/wave5")))
    local k pids=() started=() exited=() rcs=() left=() t_once=$SECONDS
    for k in 0 1 2 3; do
        if ((k == 3)); then
            sleep "$ONCE_LATE_S" # "started late" is the input
        fi
        WORKER_ID="chaos-$SCN-$CH_RUN-once$k" METRICS_ADDR=off "$CH_BUILD/consumer" --once \
            2>>"$SDIR/once$k.log" &
        pids[k]=$!
        started[k]=$((SECONDS - t_once))
        ALL_PIDS+=("$!")
    done
    fleet_note "--once fleet: once0-2 started together, once3 ${ONCE_LATE_S}s later"
    local pending=4
    while ((pending > 0 && SECONDS - t_once < ONCE_TIMEOUT_S)); do
        pending=0
        for k in 0 1 2 3; do
            [[ -n ${exited[k]:-} ]] && continue
            if kill -0 "${pids[k]}" 2>/dev/null; then
                pending=$((pending + 1))
            else
                rcs[k]=0
                wait "${pids[k]}" || rcs[k]=$?
                exited[k]=$((SECONDS - t_once))
                # DESIGN §6: --once exits when the whole group is drained, not when this worker
                # holds nothing: at its exit no item may be waiting (retries included).
                left[k]=$((ENQ - $(terminal_count)))
            fi
        done
        ((pending == 0)) || sleep 0.2
    done
    local report=()
    for k in 0 1 2 3; do
        if [[ -z ${exited[k]:-} ]]; then
            report+=("once$k still running")
            why+=("--once: once$k (started at ${started[k]}s) still running after ${ONCE_TIMEOUT_S}s: $(tail -n 1 "$SDIR/once$k.log" | cut -c1-200)")
            kill -KILL "${pids[k]}" 2>/dev/null || :
            wait "${pids[k]}" 2>/dev/null || :
        else
            report+=("once$k exit ${rcs[k]} at ${exited[k]}s (${left[k]} left)")
            # Exit 1: something went to the DLQ during its run (this wave has items designed to die).
            [[ ${rcs[k]} == 0 || ${rcs[k]} == 1 ]] || why+=("--once: once$k exited ${rcs[k]}")
            ((left[k] == 0)) ||
                why+=("--once: once$k (started at ${started[k]}s) exited at ${exited[k]}s while ${left[k]} item(s) of the group were not terminal")
        fi
    done
    fleet_note "--once fleet: ${report[*]}"
    TERMINAL=$(terminal_count)
    ((TERMINAL == ENQ)) ||
        why+=("--once fleet left work: $TERMINAL of $ENQ items terminal when the last worker had exited")
}

# After the scenario: every worker process gone, and the group's lag 0 everywhere.
fleet_final_checks() {
    local pid alive=0
    for pid in "${ALL_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && alive=$((alive + 1))
    done
    ((alive == 0)) || why+=("$alive worker process(es) still running at the end")
    local rc=0
    "$CH_BUILD/fq_lag" "$KAFKA_TOPIC" "$KAFKA_RETRY_TOPIC" >"$SDIR/lag" 2>"$SDIR/lag.err" || rc=$?
    case $rc in
    0) fleet_note "lag 0 on all $(wc -l <"$SDIR/lag") partitions of the main and retry topics" ;;
    1) why+=("lag (end - committed) not 0 on $(awk '$5 != 0' "$SDIR/lag" | wc -l) partition(s): $(awk '$5 != 0 {printf "%s[%s] end=%s committed=%s lag=%s; ", $1, $2, $3, $4, $5}' "$SDIR/lag")") ;;
    *) why+=("fq_lag failed ($rc): $(head -c 300 "$SDIR/lag.err")") ;;
    esac
}

run_fleet() {
    fleet_autoscale
    fleet_outage
    fleet_once
    fleet_final_checks
}

# The five single-fault scenarios: 3 workers, the fault injected while the waves flow, then
# a drain by one `consumer --once`.
run_faults() {
    start_worker 0
    start_worker 1
    start_worker 2
    # Work arrives in three waves, the later ones once the fault is under way (wave_at), so
    # the fault meets work in flight however fast the workers are.
    ch_enqueue "$SDIR/wave0"
    local wave=1

    local t n=0 drained=0 fn="fault_${SCN//-/_}"
    while ((SECONDS - T0 < DRAIN_TIMEOUT_S)); do
        t=$((SECONDS - T0))
        n=$(terminal_count)
        if ((!FAULT_DONE)); then
            "$fn" "$t" "$n"
        fi
        if ((wave <= 2 && FAULT_STATE >= $(wave_at "$wave"))); then
            ch_enqueue "$SDIR/wave$wave"
            echo "t=$((SECONDS - T0))s wave $wave enqueued" >>"$SDIR/faults.log"
            wave=$((wave + 1))
        fi
        if ((FAULT_DONE && n == N_ITEMS)); then
            drained=1
            break
        fi
        sleep 0.5
    done
    restore_stack
    ((drained)) || why+=("not drained after ${DRAIN_TIMEOUT_S}s ($n/$N_ITEMS terminal)")

    stop_workers
    local rc=0
    WORKER_ID="chaos-$SCN-$CH_RUN-once" timeout 180 "$CH_BUILD/consumer" --once \
        2>>"$SDIR/once.log" || rc=$?
    # --once exits 1 when something went to the DLQ during its run: only a leftover would.
    [[ $rc == 0 || $rc == 1 ]] || why+=("consumer --once exited $rc")
}

# --- one scenario -----------------------------------------------------------------------------
ROWS=()
FAILED=0
run_scenario() {
    SCN=$1
    SDIR="$CH_TMP/$SCN"
    mkdir -p "$SDIR"
    S3_PREFIX="chaos/$CH_RUN/$SCN"
    FAULT_STATE=0
    FAULT_DONE=0
    NEXT_FAULT_T=$((2 + KILL_EVERY_S))
    W_PID=()
    W_PORT=()
    ALL_PIDS=()
    local why=() verdict=PASS
    if [[ $SCN == fleet ]]; then
        N_WAVES=6 W_METRICS=1 # waves 0-3 autoscale, 4 outage, 5 --once fleet
    else
        N_WAVES=3 W_METRICS=0
    fi

    export DATABASE_URL=$ADMIN_URL
    CH_DB=
    ch_db "${SCN//-/_}"
    ch_topics "chaos.$SCN.$CH_RUN" 6
    export SOURCE_URL_TEMPLATE="s3://frameq-videos/$S3_PREFIX/{platform}/{code}.mp4"
    export FRAMES_URL_TEMPLATE="s3://frameq-frames/$S3_PREFIX/{platform}/{code}/{index}.jpg"
    make_items "$SDIR"
    : >"$SDIR/faults.log"

    T0=$SECONDS
    if [[ $SCN == fleet ]]; then
        run_fleet
    else
        run_faults
    fi
    local drain_s=$((SECONDS - T0))

    # Every transaction settled before the topics are read with read_committed: one a stopped
    # worker left open is aborted by the coordinator after transaction.timeout.ms (60 s). One
    # still open after that is hanging, and stalls its partition for every reader (README, "A
    # partition whose lag does not move").
    local open waited=0
    while open=$(ch_open_transactions "$KAFKA_TOPIC" "$KAFKA_RETRY_TOPIC" "$KAFKA_DLQ_TOPIC") &&
        [[ -n $open ]] && ((waited < TXN_SETTLE_S)); do
        sleep 1
        waited=$((waited + 1))
    done
    ((waited)) && echo "t=$((SECONDS - T0))s transactions settled after ${waited}s" >>"$SDIR/faults.log"
    [[ -n $open ]] && why+=("transactions still open after ${TXN_SETTLE_S}s: $(tr '\n' ';' <<<"$open")")

    local check crc=0
    check=$(CHECK_QUIET=0 ch_run_checker "$SDIR/items.ndjson" 2>&1) || crc=$?
    echo "$check" >"$SDIR/check.out"
    case $crc in
    0) ;;
    1) why+=("invariants violated") ;;
    *) why+=("check_invariants.sh could not check (exit $crc): $(tail -n 2 <<<"$check" | tr '\n' ' ')") ;;
    esac
    local summary done_n dead_n lost dup
    summary=$(sed -n '/^items=/p' <<<"$check")
    done_n=$(sed -n 's/.* done=\([0-9]*\).*/\1/p' <<<"$summary")
    dead_n=$(sed -n 's/.* dead=\([0-9]*\).*/\1/p' <<<"$summary")
    lost=$(sed -n 's/.* lost=\([0-9]*\).*/\1/p' <<<"$summary")
    dup=$(sed -n 's/.* dead_twice=\([0-9]*\) done_and_dead=\([0-9]*\).*/\1 + \2/p' <<<"$summary")
    [[ -n $dup ]] && dup=$((dup))

    # Outcomes against the design: good and flaky items done, the rest dead.
    ch_sql "SELECT platform || ':' || code || ' ' || status FROM extraction_items" |
        sort >"$SDIR/status"
    # Every designed item, with its status or "missing" (-a 1): a lost item counts as not done.
    sort "$SDIR/expect" | join -a 1 -e missing -o 0,1.2,2.2 --check-order - "$SDIR/status" \
        >"$SDIR/joined"
    awk '$2 ~ /^(good|long|flaky)$/ && $3 != "done" {print $1 " (" $2 ") " $3}' \
        "$SDIR/joined" >"$SDIR/burned"
    awk '$2 !~ /^(good|long|flaky)$/ && $3 != "dead" {print $1 " (" $2 ") " $3}' \
        "$SDIR/joined" >"$SDIR/undead"
    [[ -s $SDIR/burned ]] && why+=("$(wc -l <"$SDIR/burned") item(s) designed to succeed not done: $(head -3 "$SDIR/burned" | tr '\n' ';')")
    [[ -s $SDIR/undead ]] && why+=("$(wc -l <"$SDIR/undead") item(s) designed to die not dead: $(head -3 "$SDIR/undead" | tr '\n' ';')")
    # Frames against the design: one a second of the clip (tiny: 1; long: LONG_S).
    ch_sql "SELECT platform || ':' || code || ' ' || frame_count FROM extraction_items
            WHERE status = 'done'" | sort >"$SDIR/frames"
    sort "$SDIR/expect" | join --check-order - "$SDIR/frames" |
        awk -v long="$LONG_S" '{ want = $2 == "long" ? long : 1 }
             $3 != want { print $1 " (" $2 ") " $3 " frames, want " want }' >"$SDIR/bad_frames"
    [[ -s $SDIR/bad_frames ]] && why+=("$(wc -l <"$SDIR/bad_frames") done item(s) with the wrong frame count: $(head -3 "$SDIR/bad_frames" | tr '\n' ';')")
    # How often the long clips met lent cores and a fault (a story line, not a check: it
    # depends on timing).
    awk 'FILENAME ~ /faults.log$/ { next }
         /"item":"chaos:/ && /decoded in [0-9]+ chunks/ { split_done++ }
         /cancelled while decoding/ { cancelled++ }
         END { printf "long items: %d decoded in chunks to done, %d decodes cancelled\n",
               split_done, cancelled }' "$SDIR"/*.log >>"$SDIR/faults.log"

    # No DLQ message may blame an outage; each must carry the reason of its class.
    ch_dlq_json >"$SDIR/dlq.json"
    local ports
    ports=$(printf '%s\n' "$KAFKA_BROKERS" "$ADMIN_URL" "$S3_ENDPOINT" |
        sed -n 's/.*:\([0-9][0-9]*\)\(\/.*\)\{0,1\}$/\1/p' | paste -sd'|')
    python3 - "$SDIR/dlq.json" "$SDIR/expect" "$ports" >"$SDIR/dlq_bad" <<'EOF' ||
import json, re, sys
expect = dict(l.split() for l in open(sys.argv[2]))
want = {"missing": "permanent", "corrupt": "permanent", "exhaust": "max-retries"}
# The stack's ports (Kafka, PostgreSQL, S3) in an error name a dependency, not the item.
ports = [re.escape(p) for p in sys.argv[3].split("|") if p]
if len(ports) != 3:
    sys.exit("expected the ports of Kafka, PostgreSQL and S3, got %r" % sys.argv[3])
outage = re.compile(r"refused|could not connect|connection|closed|terminat|shut ?down|"
                    r"database|postgres|libpq|kafka|broker|transaction|" + "|".join(ports) + "|"
                    r"timed? ?out|unavailable|resolve", re.I)
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    h = m.get("headers") or []
    hd = {h[i]: h[i + 1] for i in range(0, len(h) - 1, 2)}
    # URLs name buckets and paths (the scenario's own name among them): not evidence.
    err = re.sub(r"\b(s3|https?|file)://\S+", "<url>", hd.get("frameq-error", ""))
    key = m.get("key") or ""
    cls = expect.get(key, "?")
    reason = hd.get("frameq-dlq-reason", "")
    if outage.search(err) or want.get(cls) != reason:
        print("%s (%s) reason=%s error=%s" % (key, cls, reason, err[:200]))
EOF
        why+=("the DLQ reason check could not run (python exit $?)")
    [[ -s $SDIR/bad_exits ]] && why+=("$(head -3 "$SDIR/bad_exits" | tr '\n' ';')")
    [[ -s $SDIR/dlq_bad ]] && why+=("$(wc -l <"$SDIR/dlq_bad") DLQ message(s) blaming an outage or with the wrong reason: $(head -2 "$SDIR/dlq_bad" | tr '\n' ';')")

    ((${#why[@]})) && verdict=FAIL
    local row
    row=$(printf '%-16s %6s %6s %6s %6s %5s %8s  %s' "$SCN" "$N_ITEMS" "${done_n:-?}" \
        "${dead_n:-?}" "${lost:-?}" "${dup:-?}" "$drain_s" "$verdict")
    ROWS+=("$row")
    echo "$row"
    if [[ $verdict == FAIL ]]; then
        FAILED=1
        local w
        for w in "${why[@]}"; do
            echo "    - $w"
        done
        sed -n 's/^VIOLATION/    VIOLATION/p' <<<"$check"
    fi
    sed 's/^/    fault: /' "$SDIR/faults.log"
    # The database goes now; the topics stay (small, and useful after a failure).
    psql "$ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $CH_DB WITH (FORCE)" >/dev/null 2>&1 || true
    CH_DB=
}

# An interrupted fleet may leave --once workers too: none survives the script.
kill_leftovers() {
    local pid
    for pid in "${ALL_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || : # most have exited already
    done
}
trap 'stop_workers; kill_leftovers; restore_stack; ch_cleanup' EXIT
mkdir -p "$CH_TMP/videos"
ch_tiny "$CH_TMP/videos"
LONG_S=12
fq_test_long_clip "$CH_TMP/videos/long.mp4" 960x540 "$LONG_S" 60 ||
    ch_fail "ffmpeg could not make long.mp4"
head -c 50000 /dev/urandom >"$CH_TMP/videos/corrupt.mp4"
ch_fault_server "$CH_TMP/videos"

TXN_SETTLE_S=90 # transaction.timeout.ms (60 s) and the coordinator's 10 s abort sweep, with room
export MAX_RETRIES=3 RETRY_BACKOFF_MS=200 RETRY_BACKOFF_MAX_MS=2000
export ALLOWED_SOURCE_HOSTS="127.0.0.1,frameq-videos"
export WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-2} BATCH_SIZE=${BATCH_SIZE:-5}
export METRICS_ADDR=off LOG_FORMAT=json LOG_LEVEL=${LOG_LEVEL:-info}
export HTTP_TIMEOUT_MS=5000 SHUTDOWN_GRACE_MS=5000
# A SIGKILLed member keeps its partitions until its session times out: keep that short. With
# GROUP_PROTOCOL=consumer (KIP-848) session and heartbeat are the broker's alone
# (group.consumer.session.timeout.ms, set short by deploy/local); librdkafka refuses them.
export GROUP_PROTOCOL=${GROUP_PROTOCOL:-classic}
if [[ $GROUP_PROTOCOL == classic ]]; then
    export KAFKA_CONFIG_SESSION_TIMEOUT_MS=${KAFKA_CONFIG_SESSION_TIMEOUT_MS:-8000}
    export KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS=${KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS:-1000}
fi

echo "chaos $mode: ${scenarios[*]} (items $N_ITEMS, workers $N_WORKERS, group protocol $GROUP_PROTOCOL, run $CH_RUN)"
printf '%-16s %6s %6s %6s %6s %5s %8s  %s\n' scenario items done dead lost dup drain_s verdict
for s in "${scenarios[@]}"; do
    run_scenario "$s"
done
echo
printf '%-16s %6s %6s %6s %6s %5s %8s  %s\n' scenario items done dead lost dup drain_s verdict
printf '%s\n' "${ROWS[@]}"
exit $FAILED
