#!/usr/bin/env bash
# bench_window.sh [main|retry|all] — how busy a worker keeps its cores (issue "several messages
# in flight per worker"). Not part of CI. Needs the local stack (deploy/local/up; . .stack/env)
# and a build with consumer, producer, runstat and bench_kafka (FQ_BUILD_DIR, default ./build;
# a Release build gives the figures the README quotes).
#
# main — mixed durations, the main role against the pipeline alone:
#   clips of 2 s, 10 s and 40 s (WINDOW_SIZE, default 640x360, 30 fps, 2 s GOP, made once with
#   the ffmpeg CLI in CACHE_DIR), WINDOW_ITEMS items (default 120, a third of each length) in a
#   random order fixed by SEED; the file:// source (no network in the measurement). The
#   defaults keep a part near 3 minutes on 2 cores with some other load (more when loaded).
#   (i)  `consumer --process-file`: every item submitted at once to the same pool of
#        WORKER_CONCURRENCY threads the worker uses, with the database, without Kafka;
#   (ii) `producer` publishes the same items (BATCH_SIZE per message, PARTITIONS partitions),
#        one `consumer --role main --once` runs them.
#   Throughput of both from the database (first created_at to last done_at), so start-up and the
#   group join do not count; target (ii) / (i) >= 0.95.
#
# retry — the retry role fed only one-item retry messages (RETRY_ITEMS, default 200, 1 s clips):
#   reference: the single-item rate, `consumer --process-file` with WORKER_CONCURRENCY=1 and
#     WORKER_CORES=1 (one item at a time; a decoder may still use several threads: the pipeline
#     gives each item online cores / WORKER_CONCURRENCY); the pipeline alone at RETRY_CONCURRENCY
#     for comparison;
#   throughput: every message already due (frameq-not-before 1 s in the past), one
#     `consumer --role retry --once` with WORKER_CONCURRENCY=RETRY_CONCURRENCY (default 2);
#     target items/s >= 0.9 x RETRY_CONCURRENCY x the single-item rate;
#   start delay: the same items with frameq-not-before staggered, RETRY_GAP_MS apart (default
#     two item times at the slower of the single-item rate and the retry role's measured rate,
#     so whatever its design the worker is busy at most half of the time and a message need not
#     wait behind another: the delay is the worker's reaction to a due retry — pause, resume,
#     fetch — not a queue), the first RETRY_LEAD_MS (4000) after the
#     publish so the worker has joined its group; messages round-robin over the partitions, so
#     frameq-not-before grows with the offset in each partition as in a real retry topic.
#     D per item from the worker's log line "retry attempt started (not-before T, D ms after)";
#     target p99 <= 50 ms.
#   RETRY_FETCH_DELAY_MS (default 0: the file:// source, every item CPU-bound): when set, the
#     retry part fetches its clips over HTTP from tests/tools/fault_server.py, each answer
#     delayed by that many ms (a distant CDN's first byte; a retry is most often an item whose
#     download failed). The single-item rate is then bound by the wait, not by the cores, and
#     the ratio shows whether the retry role really overlaps its items; with the default the
#     ratio is bound by the 2 cores the worker shares with PostgreSQL, S3 and Kafka here.
# Retry messages are written by bench_kafka publish-retry: the item JSON as value, key
# platform:code, text headers frameq-attempt (1) and frameq-not-before as the worker writes
# them. MAX_RETRIES is 100 so nothing dead-letters.
#
# Each part runs ROUNDS rounds (default 2), the reference and the measured runs in the other
# order every other round, and prints every round and the median of the ratios: the machine's
# load changes from minute to minute and would otherwise favour whichever side ran second.
# For every run the worker process's CPU utilisation: user+sys / wall / cores, sampled from
# /proc over the same span as the throughput ("span"), and over the whole process ("process").
# Every run has its own topics (PARTITIONS partitions), consumer group and database, dropped at
# the end. Exit 1 only on a broken run (items lost, a worker failing); a missed target prints
# "below target". The machine's other load shows in the figures: run it more than once.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export FQ_SOURCE_DIR=${FQ_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
export FQ_BUILD_DIR=${FQ_BUILD_DIR:-$FQ_SOURCE_DIR/build}
. "$FQ_SOURCE_DIR/tests/support/consumer_lib.sh"

parts=${1:-all}
case $parts in main | retry | all) ;; *)
    echo "usage: $0 [main|retry|all]" >&2
    exit 2
    ;;
esac
WINDOW_ITEMS=${WINDOW_ITEMS:-120}
ROUNDS=${ROUNDS:-2}
WINDOW_SIZE=${WINDOW_SIZE:-640x360}
WINDOW_DURATIONS=${WINDOW_DURATIONS:-2 10 40}
RETRY_ITEMS=${RETRY_ITEMS:-200}
RETRY_CONCURRENCY=${RETRY_CONCURRENCY:-2}
RETRY_LEAD_MS=${RETRY_LEAD_MS:-4000}
RETRY_FETCH_DELAY_MS=${RETRY_FETCH_DELAY_MS:-0}
PARTITIONS=${PARTITIONS:-4}
SEED=${SEED:-12}
RUN_TIMEOUT=${RUN_TIMEOUT:-1200}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/frameq-bench}
export WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-2} BATCH_SIZE=${BATCH_SIZE:-10}
export LOG_FORMAT=json LOG_LEVEL=info METRICS_ADDR=off MAX_RETRIES=100
export ALLOWED_SOURCE_SCHEMES=file HTTP_TIMEOUT_MS=30000

cq_require_env
for b in runstat bench_kafka producer fq_admin; do
    [[ -x $CQ_BUILD/$b ]] || cq_fail "$CQ_BUILD/$b not built (ninja -C $CQ_BUILD $b)"
done
CORES=$(nproc)
TCK=$(getconf CLK_TCK)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
CQ_ADMIN_URL=$DATABASE_URL
CQ_ID="bw-$$-$RANDOM"
CQ_TMP=$(mktemp -d "${TMPDIR:-/tmp}/fq-bench-window.XXXXXX")
DBS=() BG=()
FQ_TEST_KAFKA_UNDER=("fqt.$CQ_ID" "fqt-$CQ_ID") # every topic and group of the run
cleanup() {
    local p d
    for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${BG[@]}"; do wait "$p" 2>/dev/null || true; done
    for d in "${DBS[@]}"; do
        psql "$CQ_ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 ||
            echo "bench_window: could not drop database $d" >&2
    done
    fq_test_drop_kafka
    [[ ${CQ_KEEP:-0} == 1 ]] || rm -rf "$CQ_TMP"
}
trap cleanup EXIT
tty=0
[[ -t 2 ]] && tty=1
say() { echo "# $*" >&2; }

# --- clips -------------------------------------------------------------------------------------
clips="$CACHE_DIR/window-$WINDOW_SIZE"
mkdir -p "$clips"
make_clip() { # SECONDS -> $clips/dSECONDS.mp4 (made once)
    local out="$clips/d$1.mp4"
    [[ -s $out ]] && return 0
    say "making $out with the ffmpeg CLI"
    ffmpeg -nostdin -hide_banner -loglevel error -y -f lavfi \
        -i "testsrc2=size=$WINDOW_SIZE:rate=30:duration=$1" -c:v libx264 -preset veryfast \
        -g 60 -keyint_min 60 -sc_threshold 0 -bf 2 -pix_fmt yuv420p -f mp4 "$out.tmp.$$" ||
        cq_fail "ffmpeg could not make $out"
    mv -f "$out.tmp.$$" "$out"
}
export SOURCE_URL_TEMPLATE="file://$clips/{platform}.mp4" # platform dN = the N-second clip

# --- one measured run --------------------------------------------------------------------------
# new_db LABEL: URL = a fresh, migrated database (dropped at exit)
new_db() {
    local db="fqt_bw_$$_${1//[^a-z0-9]/_}"
    DBS+=("$db")
    URL=$(fq_test_db "$CQ_ADMIN_URL" "$db" "$CQ_BUILD/consumer" "$CQ_TMP/migrate.log") ||
        cq_fail "cannot create database $db: $(tail -n 3 "$CQ_TMP/migrate.log")"
}

# new_topics LABEL: exports KAFKA_TOPIC/RETRY/DLQ and KAFKA_GROUP_ID of a fresh set
new_topics() {
    export KAFKA_TOPIC="fqt.$CQ_ID.$1" KAFKA_GROUP_ID="fqt-$CQ_ID-$1" WORKER_ID="bw-$1"
    export KAFKA_RETRY_TOPIC="$KAFKA_TOPIC.retry" KAFKA_DLQ_TOPIC="$KAFKA_TOPIC.dlq"
    "$CQ_BUILD/producer" topics create --partitions "$PARTITIONS" --dlq-partitions 1 \
        >"$CQ_TMP/topics.out" 2>&1 || cq_fail "topics create: $(cat "$CQ_TMP/topics.out")"
}

# measure LABEL DB_URL WANT CMD...: runs CMD under runstat with DATABASE_URL=DB_URL, samples its
# CPU time from /proc every 0.2 s (LABEL.cpu: "epoch_s ticks"), shows progress on a terminal;
# stdout to LABEL.out, stderr to LABEL.log. Sets RC (the command's exit status).
measure() {
    local label=$1 url=$2 want=$3
    shift 3
    local out="$CQ_TMP/$label.out" cpu="$CQ_TMP/$label.cpu" child="" st f n shown=-1
    : >"$cpu"
    DATABASE_URL=$url "$CQ_BUILD/runstat" "$@" >"$out" 2>"$CQ_TMP/$label.log" &
    local rpid=$! deadline=$((SECONDS + RUN_TIMEOUT)) tick=$SECONDS
    BG+=("$rpid")
    while kill -0 "$rpid" 2>/dev/null; do
        if [[ -z $child ]]; then
            child=$(cut -d' ' -f1 "/proc/$rpid/task/$rpid/children" 2>/dev/null || true)
        fi
        if [[ -n $child ]] && read -r st 2>/dev/null <"/proc/$child/stat"; then
            read -ra f <<<"${st##*) }"
            echo "$EPOCHREALTIME $((f[11] + f[12]))" >>"$cpu"
        fi
        if ((SECONDS >= deadline)); then
            [[ -n $child ]] && kill "$child" 2>/dev/null
            wait "$rpid" 2>/dev/null || true
            cq_fail "$label: still running after $RUN_TIMEOUT s"
        fi
        if ((tty && SECONDS != tick)); then
            tick=$SECONDS
            n=$(psql "$url" -qAtc "SELECT count(*) FROM extraction_items WHERE status='done'" \
                2>/dev/null || echo "?")
            [[ $n != "$shown" ]] && printf '\r  %s: done %s/%s ' "$label" "$n" "$want" >&2
            shown=$n
        fi
        sleep 0.2
    done
    RC=0
    wait "$rpid" || RC=$?
    ((tty)) && printf '\r  %s: finished (exit %d)          \n' "$label" "$RC" >&2
    return 0
}

# span LABEL DB_URL -> "done seconds items_per_s span_util process_util" (from the database
# and the CPU samples; the process figures from runstat's last line)
span() {
    local row
    row=$(psql "$2" -qAtc "SELECT count(*), extract(epoch FROM min(created_at)),
        extract(epoch FROM max(done_at)) FROM extraction_items WHERE status='done'") ||
        cq_fail "$1: cannot read the database"
    python3 - "$row" "$CQ_TMP/$1.cpu" "$CQ_TMP/$1.out" "$CORES" "$TCK" <<'PY'
import json, sys
n, t0, t1 = sys.argv[1].split("|")
cores, tck = int(sys.argv[4]), float(sys.argv[5])
samples = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
def ticks_at(t):  # CPU ticks at time t, linear between samples
    if not samples: return 0.0
    if t <= samples[0][0]: return samples[0][1]
    for (ta, ca), (tb, cb) in zip(samples, samples[1:]):
        if t <= tb: return ca + (cb - ca) * (t - ta) / (tb - ta) if tb > ta else cb
    return samples[-1][1]
lines = [l for l in open(sys.argv[3]) if l.startswith("{\"wall_ms\"")]
rs = json.loads(lines[-1]) if lines else {"wall_ms": 0, "cpu_ms": 0}
proc = rs["cpu_ms"] / rs["wall_ms"] / cores if rs["wall_ms"] else 0.0
if int(n) == 0 or not t0:
    print("0 0 0 0 %.2f" % proc); sys.exit()
secs = float(t1) - float(t0)
util = (ticks_at(float(t1)) - ticks_at(float(t0))) / tck / secs / cores if secs > 0 else 0.0
print("%s %.2f %.2f %.2f %.2f" % (n, secs, int(n) / secs if secs > 0 else 0, util, proc))
PY
}

# run_case LABEL WANT CMD...: CMD measured (measure) on a fresh database; a non-zero exit or fewer
# than WANT items done fails the run. FIG=(done seconds items/s span_cpu process_cpu).
run_case() {
    local label=$1 want=$2
    shift 2
    new_db "$label"
    measure "$label" "$URL" "$want" "$@"
    ((RC == 0)) || cq_fail "$label: ${*##*/} exit $RC (1: an item failed or went to the DLQ): $(head -c 300 "$CQ_TMP/$label.out")"
    read -ra FIG <<<"$(span "$label" "$URL")"
    expect_done "$label" "${FIG[0]}" "$want"
    rm -rf "$CQ_TMP/frames"
}
fig_line() {
    printf '%7.2f items/s  (%s in %s s)  CPU span %s, process %s' "${FIG[2]}" "${FIG[0]}" \
        "${FIG[1]}" "${FIG[3]}" "${FIG[4]}"
}

ratio() { python3 -c "import sys; a, b = map(float, sys.argv[1:]); print('%.2f' % (a / b if b else 0))" "$@"; }
verdict() { # VALUE OP TARGET
    if python3 -c "import sys; v, t = float(sys.argv[1]), float(sys.argv[3]); sys.exit(0 if (v >= t if sys.argv[2] == 'ge' else v <= t) else 1)" "$@"; then
        echo "target met"
    else
        echo "below target"
    fi
}
expect_done() { # LABEL GOT WANT
    [[ $2 == "$3" ]] || cq_fail "$1: $2 items done, want $3 (items lost)"
}

summary=() STAG_GAP=""
median() { python3 -c "import statistics, sys; print('%.2f' % statistics.median(map(float, sys.argv[1:])))" "$@"; }

# --- part a: mixed durations through the main role ---------------------------------------------
# main_alone R / main_e2e R: one measured run of round R; the rate in R_ALONE / R_E2E, the
# summary line in L_ALONE / L_E2E.
main_alone() {
    run_case "main-alone-r$1" "$WINDOW_ITEMS" "$CQ_BUILD/consumer" --process-file "$CQ_TMP/main.ndjson"
    R_ALONE=${FIG[2]} L_ALONE=$(fig_line)
}
main_e2e() {
    new_topics "main-r$1"
    cq_enqueue "$(cat "$CQ_TMP/main.json")" 2>/dev/null
    run_case "main-e2e-r$1" "$WINDOW_ITEMS" "$CQ_BUILD/consumer" --role main --once
    R_E2E=${FIG[2]} L_E2E=$(fig_line)
}

part_main() {
    local d r q qs=()
    for d in $WINDOW_DURATIONS; do make_clip "$d"; done
    python3 - "$WINDOW_ITEMS" "$SEED" "$WINDOW_DURATIONS" "$CQ_TMP/main.ndjson" "$CQ_TMP/main.json" <<'PY'
import json, random, sys
n, seed, durs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split()
items = [{"platform": "d" + durs[i % len(durs)], "code": "w%05d" % i} for i in range(n)]
random.Random(seed).shuffle(items)
with open(sys.argv[4], "w") as f:
    for it in items: f.write(json.dumps(it, separators=(",", ":")) + "\n")
with open(sys.argv[5], "w") as f: json.dump(items, f, separators=(",", ":"))
PY
    say "main: $WINDOW_ITEMS items (durations $WINDOW_DURATIONS s, $WINDOW_SIZE), WORKER_CONCURRENCY=$WORKER_CONCURRENCY, $ROUNDS round(s)"
    export FRAMES_URL_TEMPLATE="file://$CQ_TMP/frames/{platform}/{code}/{index}.jpg"
    summary+=("main role, mixed durations: $WINDOW_ITEMS items ($WINDOW_DURATIONS s clips, $WINDOW_SIZE, seed $SEED), WORKER_CONCURRENCY=$WORKER_CONCURRENCY, BATCH_SIZE=$BATCH_SIZE, $PARTITIONS partitions")
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then
            main_alone "$r"
            main_e2e "$r"
        else # the other order, so a load that changes during a round favours neither side
            main_e2e "$r"
            main_alone "$r"
        fi
        q=$(ratio "$R_E2E" "$R_ALONE")
        qs+=("$q")
        summary+=(
            "  round $r pipeline alone (--process-file) : $L_ALONE"
            "  round $r end to end (--role main --once) : $L_E2E"
            "  round $r end to end / pipeline alone     : $q"
        )
    done
    q=$(median "${qs[@]}")
    summary+=("  end to end / pipeline alone, median of $ROUNDS: $q  (target >= 0.95: $(verdict "$q" ge 0.95))")
}

# --- part b: the retry role --------------------------------------------------------------------
# publish LABEL MODE: RETRY_ITEMS retry messages to KAFKA_RETRY_TOPIC; MODE due (all due 1 s
# ago) or staggered (first due RETRY_LEAD_MS from now, then one every STAG_GAP ms).
publish() {
    python3 - "$RETRY_ITEMS" "$PARTITIONS" "$2" "$RETRY_LEAD_MS" "${STAG_GAP:-0}" >"$CQ_TMP/$1.pub" <<'PY'
import json, sys, time
n, parts, mode, lead, gap = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
now = int(time.time() * 1000)
for i in range(n):
    nb = now - 1000 if mode == "due" else now + lead + int(i * gap)
    item = json.dumps({"platform": "d1", "code": "r%05d" % i}, separators=(",", ":"))
    print(i % parts, nb, 1, item)
PY
    "$CQ_BUILD/bench_kafka" publish-retry "$KAFKA_RETRY_TOPIC" <"$CQ_TMP/$1.pub" \
        >"$CQ_TMP/$1.pubout" 2>&1 || cq_fail "publishing retry messages: $(cat "$CQ_TMP/$1.pubout")"
}

# retry_one R / retry_alone R / retry_due R: the runs of round R (rates in R_ONE, R_DUE; lines in
# L_ONE, L_ALONE, L_DUE)
retry_one() {
    WORKER_CONCURRENCY=1 WORKER_CORES=1 run_case "retry-one-r$1" "$RETRY_ITEMS" \
        "$CQ_BUILD/consumer" --process-file "$CQ_TMP/retry.ndjson"
    R_ONE=${FIG[2]} L_ONE=$(fig_line)
}
retry_alone() {
    WORKER_CONCURRENCY=$RETRY_CONCURRENCY run_case "retry-alone-r$1" "$RETRY_ITEMS" \
        "$CQ_BUILD/consumer" --process-file "$CQ_TMP/retry.ndjson"
    L_ALONE=$(fig_line)
}
retry_due() {
    new_topics "retrydue-r$1"
    publish "retry-due-r$1" due
    WORKER_CONCURRENCY=$RETRY_CONCURRENCY run_case "retry-due-r$1" "$RETRY_ITEMS" \
        "$CQ_BUILD/consumer" --role retry --once
    R_DUE=${FIG[2]} L_DUE=$(fig_line)
}

# retry_stag R: the staggered run; its delays line in L_STAG, its p99 in P99
retry_stag() {
    local label="retry-stag-r$1" out
    new_topics "retrystag-r$1"
    publish "$label" staggered
    WORKER_CONCURRENCY=$RETRY_CONCURRENCY run_case "$label" "$RETRY_ITEMS" \
        "$CQ_BUILD/consumer" --role retry --once
    out=$(python3 - "$CQ_TMP/$label.log" "$RETRY_ITEMS" "$CQ_TMP/$label.pub" <<'PY'
import datetime, json, math, re, sys
n = int(sys.argv[2])
first_due = min(int(l.split()[1]) for l in open(sys.argv[3]) if l.strip())
d, assigned = {}, None
for l in open(sys.argv[1]):
    try: e = json.loads(l)
    except ValueError: continue
    msg = e.get("msg", "")
    if assigned is None and msg.startswith("assigned "):
        assigned = datetime.datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp() * 1000
    m = re.match(r"retry attempt started \(not-before \d+, (-?\d+) ms after\)", msg)
    if m: d[e.get("item")] = int(m.group(1))  # a replayed attempt counts once, its last start
if len(d) != n:
    print("ERROR %d of %d items logged \"retry attempt started\"" % (len(d), n)); sys.exit()
v = sorted(d.values())
p = lambda q: v[max(0, math.ceil(q * len(v)) - 1)]
early = "" if assigned is None or assigned < first_due else \
    " (worker joined %d ms after the first due time: raise RETRY_LEAD_MS)" % (assigned - first_due)
print("%d p50 %d, p90 %d, p99 %d, max %d ms%s" % (p(.99), p(.5), p(.9), p(.99), v[-1], early))
PY
)
    [[ $out != ERROR* ]] || cq_fail "$label: ${out#ERROR }"
    P99=${out%% *} L_STAG="${out#* }  CPU span ${FIG[3]}, process ${FIG[4]}"
}

part_retry() {
    local n=$RETRY_ITEMS c=$RETRY_CONCURRENCY r q qs=() p99s=()
    make_clip 1
    python3 -c '
import sys
for i in range(int(sys.argv[1])): print("{\"platform\":\"d1\",\"code\":\"r%05d\"}" % i)
' "$n" >"$CQ_TMP/retry.ndjson"
    export FRAMES_URL_TEMPLATE="file://$CQ_TMP/frames/{platform}/{code}/{index}.jpg"
    local src="file source"
    if ((RETRY_FETCH_DELAY_MS > 0)); then
        fq_test_fault_server "$clips" "$CQ_TMP" || cq_fail "fault server did not start"
        BG+=("$FQ_FAULT_PID")
        export SOURCE_URL_TEMPLATE="$FQ_FAULT_HTTP/slow/$RETRY_FETCH_DELAY_MS/{platform}.mp4"
        export ALLOWED_SOURCE_SCHEMES=http
        src="HTTP source answering after $RETRY_FETCH_DELAY_MS ms"
    fi
    say "retry: $n one-item messages (1 s clips, $WINDOW_SIZE, $src), WORKER_CONCURRENCY=$c, $ROUNDS round(s)"
    summary+=("retry role: $n one-item retry messages (1 s clips, $WINDOW_SIZE, $src), WORKER_CONCURRENCY=$c, $PARTITIONS partitions")
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then
            retry_one "$r"
            retry_alone "$r"
            retry_due "$r"
        else
            retry_due "$r"
            retry_alone "$r"
            retry_one "$r"
        fi
        # the schedule of the staggered runs, fixed by round 1: two item times at the slower of
        # the single-item and the retry role's rates
        STAG_GAP=${STAG_GAP:-${RETRY_GAP_MS:-$(python3 -c "import sys; print(max(20, round(2000 / min(map(float, sys.argv[1:])))))" "$R_ONE" "$R_DUE")}}
        retry_stag "$r"
        q=$(python3 -c "import sys; a, c, r = map(float, sys.argv[1:]); print('%.2f' % (a / (c * r) if r else 0))" "$R_DUE" "$c" "$R_ONE")
        qs+=("$q")
        p99s+=("$P99")
        summary+=(
            "  round $r single item (--process-file, concurrency 1)    : $L_ONE"
            "  round $r pipeline alone (--process-file, concurrency $c) : $L_ALONE"
            "  round $r retry role, all due (--role retry --once)      : $L_DUE"
            "  round $r retry items/s / ($c x single-item rate)          : $q"
            "  round $r start delay after frameq-not-before (one due every $STAG_GAP ms): $L_STAG"
        )
    done
    q=$(median "${qs[@]}")
    summary+=("  retry items/s / ($c x single-item rate), median of $ROUNDS: $q  (target >= 0.9: $(verdict "$q" ge 0.9))")
    q=$(median "${p99s[@]}")
    summary+=("  start delay p99, median of $ROUNDS: $q ms  (target <= 50 ms: $(verdict "$q" le 50))")
}

[[ $parts == main || $parts == all ]] && part_main
[[ $parts == retry || $parts == all ]] && part_retry

echo
echo "=== bench_window ($(date -u +%Y-%m-%dT%H:%M:%SZ), $CORES cores, CPU = user+sys / wall / cores) ==="
echo "load average (1, 5, 15 min) at the start: $LOAD_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${summary[@]}"
