#!/usr/bin/env bash
# run.sh [--short|--long] [--keep] [scenario...] — chaos scenarios against the real workers.
#
# Scenarios: sigkill kafka-restart pg-stop s3-stop rolling-sigterm (default: all, in that order).
# Each: 3 workers (`consumer`, one WORKER_ID each, one group) on fresh topics
# (chaos.<scenario>.<run>.jobs, 6 partitions) and a throwaway database; items mix good clips in
# S3, retriable ones on the fault server (/flaky/1, /flaky/2: succeed within MAX_RETRIES;
# /500: exhaust their retries), and permanent failures (missing object -> 404, corrupt bytes).
# The fault is injected while work flows; the run waits until every item is done/dead in
# PostgreSQL (or a timeout), stops the workers, drains with `consumer --once`, then runs
# check_invariants.sh and compares the dead items with the set designed to die: an outage of
# Kafka, PostgreSQL or S3 must burn no item.
#
# Prints one row per scenario: scenario items done dead lost dup drain_s verdict, and exits 1 if
# any scenario failed. Needs the local stack (deploy/local/up; . .stack/env) and FQ_BUILD_DIR
# (a build with consumer and producer; default <repo>/build). Stops and restarts the shared
# stack's services: colleagues' tests see the outages too.
set -euo pipefail
export LC_ALL=C # sort and join must agree on one order
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=short
scenarios=()
for arg in "$@"; do
    case $arg in
    --short) mode=short ;;
    --long) mode=long ;;
    --keep) export CH_KEEP=1 ;;
    sigkill | kafka-restart | pg-stop | s3-stop | rolling-sigterm) scenarios+=("$arg") ;;
    -h | --help)
        sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [--short|--long] [--keep] [sigkill|kafka-restart|pg-stop|s3-stop|rolling-sigterm ...]" >&2
        exit 2
        ;;
    esac
done
((${#scenarios[@]})) || scenarios=(sigkill kafka-restart pg-stop s3-stop rolling-sigterm)

if [[ $mode == short ]]; then
    N_ITEMS=${CHAOS_ITEMS:-60}
    OUTAGE_S=10
    KILL_EVERY_S=3
    MAX_KILLS=5
    ROLLS=3
    DRAIN_TIMEOUT_S=${CHAOS_DRAIN_TIMEOUT_S:-150}
else
    N_ITEMS=${CHAOS_ITEMS:-300}
    OUTAGE_S=20
    KILL_EVERY_S=4
    MAX_KILLS=15
    ROLLS=6
    DRAIN_TIMEOUT_S=${CHAOS_DRAIN_TIMEOUT_S:-300}
fi
N_WORKERS=3

ch_require_env S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
ch_init chaos
CH_ADMIN_URL=$DATABASE_URL
ADMIN_URL=$DATABASE_URL

# --- the stack's services ---------------------------------------------------------------------
stop_service() { # kafka|postgres|s3
    "$CH_SRC/deploy/local/down" "$1" >>"$CH_TMP/stack.log" 2>&1 ||
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
# Classes: good (S3 clip), flaky (fault server, fails 1 or 2 times), missing (no object, 404),
# corrupt (random bytes in S3), exhaust (fault server /500: dies after MAX_RETRIES).
make_items() {
    local dir=$1 n=$N_ITEMS i code class url
    : >"$dir/items.ndjson"
    : >"$dir/expect"
    : >"$dir/good.codes"
    : >"$dir/corrupt.codes"
    : >"$dir/wave0" && : >"$dir/wave1" && : >"$dir/wave2"
    for ((i = 0; i < n; i++)); do
        code=$(printf 'c%05d' "$i")
        url=
        # Per 20 items: 13 good, 3 flaky, 2 missing, 1 corrupt, 1 exhaust, interleaved.
        case $((i % 20)) in
        0 | 5 | 13) class=flaky url="$CH_HTTP/flaky/$((i % 2 + 1))/$SCN-$CH_RUN-$code/tiny.mp4" ;;
        3 | 16) class=missing ;;
        8) class=corrupt ;;
        10) class=exhaust url="$CH_HTTP/500/$code.mp4" ;;
        *) class=good ;;
        esac
        if [[ -n $url ]]; then
            printf '{"platform":"chaos","code":"%s","video_url":"%s"}\n' "$code" "$url"
        else
            printf '{"platform":"chaos","code":"%s"}\n' "$code"
        fi | tee -a "$dir/wave$((i * 3 / n))" >>"$dir/items.ndjson"
        echo "chaos:$code $class" >>"$dir/expect"
        case $class in
        good) echo "$code" >>"$dir/good.codes" ;;
        corrupt) echo "$code" >>"$dir/corrupt.codes" ;;
        esac
    done
    ch_s3_put_many "$CH_TMP/videos/tiny.mp4" "frameq-videos/$S3_PREFIX/chaos" <"$dir/good.codes"
    ch_s3_put_many "$CH_TMP/videos/corrupt.mp4" "frameq-videos/$S3_PREFIX/chaos" \
        <"$dir/corrupt.codes"
}

# --- workers ----------------------------------------------------------------------------------
W_PID=()
start_worker() {
    local i=$1
    WORKER_ID="chaos-$SCN-$CH_RUN-w$i" "$CH_BUILD/consumer" 2>>"$SDIR/w$i.log" &
    W_PID[i]=$!
}
stop_workers() { # SIGTERM all, wait for each (SIGKILL after 40 s); non-zero exits to bad_exits
    local i n rc
    for ((i = 0; i < N_WORKERS; i++)); do
        [[ -n ${W_PID[i]:-} ]] && kill -TERM "${W_PID[i]}" 2>/dev/null || true
    done
    for ((i = 0; i < N_WORKERS; i++)); do
        [[ -n ${W_PID[i]:-} ]] || continue
        for ((n = 0; n < 400; n++)); do
            kill -0 "${W_PID[i]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${W_PID[i]}" 2>/dev/null || true
        rc=0
        wait "${W_PID[i]}" 2>/dev/null || rc=$?
        ((rc == 0)) || echo "w$i exited $rc on the final SIGTERM" >>"${SDIR:-$CH_TMP}/bad_exits"
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
        local i=$((RANDOM % N_WORKERS))
        kill -KILL "${W_PID[i]}" 2>/dev/null || true
        wait "${W_PID[i]}" 2>/dev/null || true
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
    local why=() verdict=PASS

    export DATABASE_URL=$ADMIN_URL
    CH_DB=
    ch_db "${SCN//-/_}"
    ch_topics "chaos.$SCN.$CH_RUN" 6
    export SOURCE_URL_TEMPLATE="s3://frameq-videos/$S3_PREFIX/{platform}/{code}.mp4"
    export FRAMES_URL_TEMPLATE="s3://frameq-frames/$S3_PREFIX/{platform}/{code}/{index}.jpg"
    make_items "$SDIR"

    start_worker 0
    start_worker 1
    start_worker 2
    T0=$SECONDS
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
    local drain_s=$((SECONDS - T0))
    restore_stack
    ((drained)) || why+=("not drained after ${DRAIN_TIMEOUT_S}s ($n/$N_ITEMS terminal)")

    stop_workers
    local rc=0
    WORKER_ID="chaos-$SCN-$CH_RUN-once" timeout 180 "$CH_BUILD/consumer" --once \
        2>>"$SDIR/once.log" || rc=$?
    # --once exits 1 when something went to the DLQ during its run: only a leftover would.
    [[ $rc == 0 || $rc == 1 ]] || why+=("consumer --once exited $rc")

    local check
    check=$(CHECK_QUIET=0 ch_run_checker "$SDIR/items.ndjson" 2>&1) || why+=("invariants violated")
    echo "$check" >"$SDIR/check.out"
    local summary done_n dead_n lost dup
    summary=$(grep '^items=' <<<"$check" || true)
    done_n=$(sed -n 's/.* done=\([0-9]*\).*/\1/p' <<<"$summary")
    dead_n=$(sed -n 's/.* dead=\([0-9]*\).*/\1/p' <<<"$summary")
    lost=$(sed -n 's/.* lost=\([0-9]*\).*/\1/p' <<<"$summary")
    dup=$(($(sed -n 's/.* dead_twice=\([0-9]*\).*/\1/p' <<<"$summary") + \
        $(sed -n 's/.* done_and_dead=\([0-9]*\).*/\1/p' <<<"$summary")))

    # Outcomes against the design: good and flaky items done, the rest dead.
    ch_sql "SELECT platform || ':' || code || ' ' || status FROM extraction_items" |
        sort >"$SDIR/status"
    sort "$SDIR/expect" | join - "$SDIR/status" >"$SDIR/joined" || true
    awk '($2 == "good" || $2 == "flaky") && $3 != "done" {print $1 " (" $2 ") " $3}' \
        "$SDIR/joined" >"$SDIR/burned"
    awk '($2 != "good" && $2 != "flaky") && $3 != "dead" {print $1 " (" $2 ") " $3}' \
        "$SDIR/joined" >"$SDIR/undead"
    [[ -s $SDIR/burned ]] && why+=("$(wc -l <"$SDIR/burned") item(s) designed to succeed not done: $(head -3 "$SDIR/burned" | tr '\n' ';')")
    [[ -s $SDIR/undead ]] && why+=("$(wc -l <"$SDIR/undead") item(s) designed to die not dead: $(head -3 "$SDIR/undead" | tr '\n' ';')")

    # No DLQ message may blame an outage; each must carry the reason of its class.
    ch_dlq_json >"$SDIR/dlq.json"
    python3 - "$SDIR/dlq.json" "$SDIR/expect" >"$SDIR/dlq_bad" <<'EOF' || true
import json, re, sys
expect = dict(l.split() for l in open(sys.argv[2]))
want = {"missing": "permanent", "corrupt": "permanent", "exhaust": "max-retries"}
outage = re.compile(r"refused|could not connect|connection|closed|terminat|shut ?down|"
                    r"database|postgres|libpq|kafka|broker|transaction|55432|19092|17070|"
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
        grep '^VIOLATION' <<<"$check" | sed 's/^/    /' || true
    fi
    sed 's/^/    fault: /' "$SDIR/faults.log" 2>/dev/null || true
    # The database goes now; the topics stay (small, and useful after a failure).
    psql "$ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $CH_DB WITH (FORCE)" >/dev/null 2>&1 || true
    CH_DB=
}

trap 'stop_workers; restore_stack; ch_cleanup' EXIT
mkdir -p "$CH_TMP/videos"
ch_tiny "$CH_TMP/videos"
head -c 50000 /dev/urandom >"$CH_TMP/videos/corrupt.mp4"
ch_fault_server "$CH_TMP/videos"

export MAX_RETRIES=3 RETRY_BACKOFF_MS=200 RETRY_BACKOFF_MAX_MS=2000
export ALLOWED_SOURCE_HOSTS="127.0.0.1,frameq-videos"
export WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-2} BATCH_SIZE=${BATCH_SIZE:-5}
export METRICS_ADDR=off LOG_FORMAT=json LOG_LEVEL=${LOG_LEVEL:-info}
export HTTP_TIMEOUT_MS=5000 SHUTDOWN_GRACE_MS=5000
# A SIGKILLed member keeps its partitions until its session times out: keep that short.
export KAFKA_CONFIG_SESSION_TIMEOUT_MS=${KAFKA_CONFIG_SESSION_TIMEOUT_MS:-8000}
export KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS=${KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS:-1000}

echo "chaos $mode: ${scenarios[*]} (items $N_ITEMS, workers $N_WORKERS, run $CH_RUN)"
printf '%-16s %6s %6s %6s %6s %5s %8s  %s\n' scenario items done dead lost dup drain_s verdict
for s in "${scenarios[@]}"; do
    run_scenario "$s"
done
echo
printf '%-16s %6s %6s %6s %6s %5s %8s  %s\n' scenario items done dead lost dup drain_s verdict
printf '%s\n' "${ROWS[@]}"
exit $FAILED
