#!/usr/bin/env bash
# Shared helpers for the consumer integration tests (tests/integration/test_consumer_*.sh).
# Each test gets its own topics, consumer group, throwaway database and temp dir, so tests can
# run next to each other on the shared local stack. Source it; then call cq_setup NAME.
# The fq_test_* helpers are shared with tests/chaos/lib.sh (which sources this file).
#
# Needs the stack's environment (deploy/local/up, then `. .stack/env`): KAFKA_BROKERS and
# DATABASE_URL; a test fails (never skips) without them.
set -euo pipefail

CQ_SRC=${FQ_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CQ_BUILD=${FQ_BUILD_DIR:-}
CQ_PIDS=()

cq_fail() {
    echo "FAIL: $*" >&2
    fq_test_log_tails "${CQ_TMP:-}" 15 400
    exit 1
}

cq_say() { echo "# $*" >&2; }

# fq_test_log_tails DIR LINES WIDTH: the last LINES lines (cut at WIDTH characters) of every
# DIR/*.log on stderr, to explain a failure. Nothing when DIR is empty or gone.
fq_test_log_tails() {
    [[ -n $1 && -d $1 ]] || return 0
    local f
    for f in "$1"/*.log; do
        [[ -f $f ]] || continue
        echo "--- last lines of $(basename "$f")" >&2
        tail -n "$2" "$f" | cut -c1-"$3" >&2
    done
}

# fq_test_check_env TOOLS VAR...: prints what is missing (the stack's KAFKA_BROKERS and
# DATABASE_URL, each VAR, each program of the space-separated TOOLS) and returns 1; silent
# and 0 when nothing is.
fq_test_check_env() {
    local tools=$1 v t missing=()
    shift
    for v in KAFKA_BROKERS DATABASE_URL "$@"; do
        [[ -n ${!v:-} ]] || missing+=("$v")
    done
    if ((${#missing[@]})); then
        echo "environment of the local stack missing: ${missing[*]} (run deploy/local/up, then . .stack/env)"
        return 1
    fi
    for t in $tools; do
        command -v "$t" >/dev/null || {
            echo "$t not found"
            return 1
        }
    done
}

# The names under which a test's Kafka topics and consumer groups lie (its run id: topics
# "fqt.ID", "fqt.ID.retry", group "fqt-ID"); fq_test_teardown deletes them all, so that test
# runs do not pile partitions up on the local broker (a broker with thousands restarts slowly).
FQ_TEST_KAFKA_UNDER=()

# fq_test_drop_kafka: deletes every topic and group under FQ_TEST_KAFKA_UNDER with
# `fq_admin delete-under` (from FQ_BUILD_DIR). For teardowns: a failure is said on stderr and
# leaves the test's own outcome alone (returns 0); test_teardown.sh checks the deletion itself.
fq_test_drop_kafka() {
    ((${#FQ_TEST_KAFKA_UNDER[@]})) || return 0
    local admin=${FQ_BUILD_DIR:-$CQ_SRC/build}/fq_admin out
    if ! out=$("$admin" delete-under "${FQ_TEST_KAFKA_UNDER[@]}" 2>&1); then
        echo "# teardown: topics and groups under ${FQ_TEST_KAFKA_UNDER[*]} may be left:" \
            "$admin: ${out:0:300}" >&2
    fi
}

# fq_test_teardown ADMIN_URL DB TMP KEEP PID...: kills and reaps every PID, drops database DB
# (when both ADMIN_URL and DB are set); unless KEEP is 1, deletes the test's topics and groups
# (fq_test_drop_kafka) and removes TMP.
fq_test_teardown() {
    local admin=$1 db=$2 tmp=$3 keep=$4 pid
    shift 4
    for pid in "$@"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $db && -n $admin ]]; then
        psql "$admin" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [[ $keep != 1 ]]; then
        fq_test_drop_kafka
        [[ -z $tmp ]] || rm -rf "$tmp"
    fi
}

# fq_test_read_json TOPIC ERRFILE: every committed message of TOPIC as one kcat JSON line
# (headers included), made valid UTF-8 (raw payloads need not be: compare raw bytes with
# kcat -f '%s' instead). Returns non-zero (kcat's stderr in ERRFILE) when TOPIC cannot be read.
fq_test_read_json() {
    kcat -b "$KAFKA_BROKERS" -C -t "$1" -o beginning -e -q -J -X isolation.level=read_committed \
        2>"$2" |
        python3 -c 'import sys; sys.stdout.write(sys.stdin.buffer.read().decode("utf-8", "replace"))'
}

# fq_test_tiny DIR: the one-frame test clip DIR/tiny.mp4, made at test time.
fq_test_tiny() {
    mkdir -p "$1"
    ffmpeg -nostdin -hide_banner -loglevel error -y -f lavfi \
        -i testsrc2=size=64x64:rate=1:duration=1 -frames:v 1 -c:v libx264 -preset ultrafast \
        -pix_fmt yuv420p -f mp4 "$1/tiny.mp4"
}

# fq_test_long_clip FILE WxH SECONDS GOP: an H.264 clip of SECONDS at 30 fps with an IDR every
# GOP frames and no B-frames, so every IDR is a clean cut: an item alone on 2 cores decodes it in
# chunks on both.
fq_test_long_clip() {
    ffmpeg -nostdin -hide_banner -loglevel error -y -f lavfi \
        -i "testsrc2=size=$2:rate=30:duration=$3" -c:v libx264 -preset ultrafast -g "$4" \
        -pix_fmt yuv420p -f mp4 "$1"
}

# fq_test_split_counts LINE: "CHUNKS HELPERS" from a worker's "stage":"decode" debug line
# ("decoded N frame(s), M handed on[ before it stopped]; C chunk(s), H by T helper thread(s)"):
# the chunks and the helper threads started; nothing when LINE is not such a line.
fq_test_split_counts() {
    sed -nE 's/.* handed on( before it stopped)?; ([0-9]+) chunk\(s\), [0-9]+ by ([0-9]+) helper thread.*/\2 \3/p' <<<"$1"
}

# fq_test_fault_server DIR TMPDIR: starts tests/tools/fault_server.py serving DIR (its log and
# port file in TMPDIR); sets FQ_FAULT_PID and FQ_FAULT_HTTP. Returns 1 if it did not start.
fq_test_fault_server() {
    python3 "$CQ_SRC/tests/tools/fault_server.py" --port 0 --dir "$1" \
        --port-file "$2/fault.port" >"$2/fault_server.log" 2>&1 &
    FQ_FAULT_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $2/fault.port ]] && break
        sleep 0.1
    done
    [[ -s $2/fault.port ]] || return 1
    FQ_FAULT_HTTP="http://127.0.0.1:$(cat "$2/fault.port")"
}

# fq_test_db ADMIN_URL DB CONSUMER LOG: creates database DB next to ADMIN_URL's and migrates it
# with CONSUMER --migrate; prints its URL. Returns 1 (the reason in LOG) on failure.
fq_test_db() {
    local url="${1%/*}/$2"
    psql "$1" -qAtc "CREATE DATABASE $2" >"$4" 2>&1 || return 1
    DATABASE_URL=$url "$3" --migrate >>"$4" 2>&1 || return 1
    echo "$url"
}

cq_require_env() {
    local msg
    msg=$(fq_test_check_env "" "$@") || cq_fail "$msg"
    [[ -n $CQ_BUILD && -x $CQ_BUILD/consumer ]] ||
        cq_fail "FQ_BUILD_DIR must point at a build with the consumer program (got '${CQ_BUILD}')"
    msg=$(fq_test_check_env "kcat psql ffmpeg python3") || cq_fail "$msg"
}

cq_cleanup() {
    fq_test_teardown "${CQ_ADMIN_URL:-}" "${CQ_DB:-}" "${CQ_TMP:-}" "${CQ_KEEP:-0}" "${CQ_PIDS[@]}"
}

# cq_setup NAME: topics, group, database, temp dir, videos, fault server; exports the
# consumer's environment.
cq_setup() {
    local name=$1
    cq_require_env "${@:2}"
    CQ_ID="$name-$$-$RANDOM"
    CQ_TMP=$(mktemp -d "${TMPDIR:-/tmp}/fq-$name.XXXXXX")
    trap cq_cleanup EXIT

    export KAFKA_TOPIC="fqt.$CQ_ID"
    export KAFKA_RETRY_TOPIC="$KAFKA_TOPIC.retry"
    export KAFKA_DLQ_TOPIC="$KAFKA_TOPIC.dlq"
    export KAFKA_GROUP_ID="fqt-$CQ_ID"
    FQ_TEST_KAFKA_UNDER+=("$KAFKA_TOPIC" "$KAFKA_GROUP_ID")
    export WORKER_ID="w1-$CQ_ID"
    export RETRY_BACKOFF_MS=${RETRY_BACKOFF_MS:-200}
    export RETRY_BACKOFF_MAX_MS=${RETRY_BACKOFF_MAX_MS:-2000}
    export MAX_RETRIES=${MAX_RETRIES:-3}
    export WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-2}
    export METRICS_ADDR=off
    export LOG_FORMAT=json LOG_LEVEL=${LOG_LEVEL:-info}
    export HTTP_TIMEOUT_MS=5000

    # A throwaway database next to the stack's (role frameq has CREATEDB).
    CQ_ADMIN_URL=$DATABASE_URL
    CQ_DB="fqt_${name//[^a-z0-9]/_}_$$_$RANDOM"
    DATABASE_URL=$(fq_test_db "$CQ_ADMIN_URL" "$CQ_DB" "$CQ_BUILD/consumer" "$CQ_TMP/migrate.log") ||
        cq_fail "cannot create and migrate database $CQ_DB through DATABASE_URL"
    export DATABASE_URL

    # Videos, made at test time.
    mkdir -p "$CQ_TMP/videos" "$CQ_TMP/frames"
    fq_test_tiny "$CQ_TMP/videos" || cq_fail "ffmpeg could not make tiny.mp4"

    # The fault server serves the videos (and their failures).
    fq_test_fault_server "$CQ_TMP/videos" "$CQ_TMP" || cq_fail "fault server did not start"
    CQ_PIDS+=("$FQ_FAULT_PID")
    CQ_HTTP=$FQ_FAULT_HTTP
    CQ_PORT=${CQ_HTTP##*:}
    export SOURCE_URL_TEMPLATE="$CQ_HTTP/ok/{code}.mp4"
    export FRAMES_URL_TEMPLATE="file://$CQ_TMP/frames/{platform}/{code}/{index}.jpg"

    cq_create_topics "$KAFKA_TOPIC" "$KAFKA_RETRY_TOPIC" "$KAFKA_DLQ_TOPIC"
}

# Topics are created through a metadata request (the broker auto-creates them with its
# default of 3 partitions); waits until each shows its partitions.
cq_create_topics() {
    local t i
    for t in "$@"; do
        for i in $(seq 50); do
            if kcat -b "$KAFKA_BROKERS" -L -t "$t" 2>/dev/null | grep -q "partition 2,"; then
                continue 2
            fi
            sleep 0.2
        done
        cq_fail "topic $t was not created"
    done
}

# The SQL result of a query on the test database, one row per line, fields '|'-separated.
cq_sql() {
    psql "$DATABASE_URL" -qAtc "$1"
}

# cq_batch ITEM_JSON... -> batch message JSON
cq_batch() {
    local IFS=,
    printf '{"schema":"frameq.batch.v1","batch_id":"%s","enqueued_at":"2026-01-01T00:00:00Z","items":[%s]}' \
        "$(cat /proc/sys/kernel/random/uuid)" "$*"
}

# cq_produce PARTITION MESSAGE: one message to the main topic (-1: any partition).
cq_produce() {
    local part=$1 msg=$2
    local args=(-b "$KAFKA_BROKERS" -P -t "$KAFKA_TOPIC")
    [[ $part -ge 0 ]] && args+=(-p "$part")
    printf '%s' "$msg" >"$CQ_TMP/msg.$$"
    kcat "${args[@]}" "$CQ_TMP/msg.$$" || cq_fail "kcat could not produce"
}

# cq_item PLATFORM CODE [VIDEO_URL]
cq_item() {
    if [[ -n ${3:-} ]]; then
        printf '{"platform":"%s","code":"%s","video_url":"%s"}' "$1" "$2" "$3"
    else
        printf '{"platform":"%s","code":"%s"}' "$1" "$2"
    fi
}

# cq_consumer LOGNAME ARGS...: runs the consumer in the foreground, log to $CQ_TMP/LOGNAME.log;
# returns its exit code.
cq_consumer() {
    local log=$1
    shift
    local rc=0
    timeout "${CQ_TIMEOUT:-120}" "$CQ_BUILD/consumer" "$@" 2>>"$CQ_TMP/$log.log" || rc=$?
    return $rc
}

# cq_consumer_bg LOGNAME ARGS...: in the background; its pid in CQ_LAST_PID.
cq_consumer_bg() {
    local log=$1
    shift
    "$CQ_BUILD/consumer" "$@" 2>>"$CQ_TMP/$log.log" &
    CQ_LAST_PID=$!
    CQ_PIDS+=("$CQ_LAST_PID")
}

# cq_metrics_port LOGNAME PID: waits (30 s) for the "metrics: serving" line of the consumer PID
# (logging to $CQ_TMP/LOGNAME.log, METRICS_ADDR port 0) and sets CQ_METRICS_PORT to its port.
cq_metrics_port() {
    CQ_METRICS_PORT=
    local i
    for i in $(seq 300); do
        CQ_METRICS_PORT=$(sed -n 's/.*metrics: serving .*(port \([0-9]*\)).*/\1/p' "$CQ_TMP/$1.log")
        [[ -n $CQ_METRICS_PORT ]] && return 0
        kill -0 "$2" 2>/dev/null || cq_fail "consumer exited before serving metrics"
        sleep 0.1
    done
    cq_fail "no 'metrics: serving' line with the port in 30 s"
}

# cq_read TOPIC: every committed message as one kcat JSON line (headers included). A topic that
# cannot be read fails the test: an empty answer would pass every "nothing there" check.
cq_read() {
    fq_test_read_json "$1" "$CQ_TMP/read.err" ||
        cq_fail "reading topic $1 failed: $(head -c 300 "$CQ_TMP/read.err")"
}

# cq_count TOPIC: committed messages in the topic.
cq_count() {
    local n
    n=$(cq_read "$1" | awk '/^\{/ { n++ } END { print n + 0 }') || cq_fail "counting topic $1"
    echo "$n"
}

# cq_uncommitted TOPIC...: messages a fresh member of the group would still get (0 when the
# group's committed offsets are at the end of every partition). Reads without committing: kcat
# commits the offsets it stored when it leaves the group even with enable.auto.commit=false,
# so no offset is stored (a worker started after this still gets those messages).
cq_uncommitted() {
    local t n=0 c
    for t in "$@"; do
        c=$(timeout 60 kcat -b "$KAFKA_BROKERS" -G "$KAFKA_GROUP_ID" -X enable.auto.commit=false \
            -X enable.auto.offset.store=false \
            -X auto.offset.reset=earliest -X isolation.level=read_committed -e -q -f '%o\n' "$t" \
            2>"$CQ_TMP/uncommitted.err" | awk 'END { print NR }') ||
            cq_fail "reading $t as group $KAFKA_GROUP_ID failed (or took 60 s): $(head -c 300 "$CQ_TMP/uncommitted.err")"
        n=$((n + c))
    done
    echo "$n"
}

# cq_header JSONLINE NAME: a header's value from a cq_read line.
cq_header() {
    python3 -c '
import json, sys
m = json.loads(sys.argv[1]); h = m.get("headers") or []
vals = [h[i + 1] for i in range(0, len(h) - 1, 2) if h[i] == sys.argv[2]]
print(vals[-1] if vals else "")
' "$1" "$2"
}

cq_expect_eq() { # WHAT GOT WANT
    [[ "$2" == "$3" ]] || cq_fail "$1: got '$2', want '$3'"
    cq_say "ok: $1 = $2"
}

# cq_enqueue JSON_ARRAY: publishes items through the real producer (BATCH_SIZE per message).
cq_enqueue() {
    [[ -x $CQ_BUILD/producer ]] || cq_fail "producer program not built in $CQ_BUILD"
    printf '%s' "$1" | "$CQ_BUILD/producer" --no-progress - >"$CQ_TMP/producer.out" \
        2>>"$CQ_TMP/producer.log" || cq_fail "producer failed: $(cat "$CQ_TMP/producer.out")"
    cq_say "producer: $(cat "$CQ_TMP/producer.out")"
}

# cq_wait_sql SQL WANT TIMEOUT_S: waits until the query returns WANT.
cq_wait_sql() {
    local got i
    for ((i = 0; i < $3 * 5; i++)); do
        got=$(cq_sql "$1" 2>/dev/null || true)
        [[ $got == "$2" ]] && return 0
        sleep 0.2
    done
    cq_fail "timed out after $3 s waiting for [$1] = '$2' (last: '$got')"
}

# cq_wait_file GLOB TIMEOUT_S: waits until a file matches GLOB.
cq_wait_file() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        compgen -G "$1" >/dev/null && return 0
        sleep 0.05
    done
    cq_fail "timed out after $2 s waiting for a file $1"
}

# cq_wait_log LOGNAME TEXT TIMEOUT_S: waits until $CQ_TMP/LOGNAME.log holds TEXT (fixed string).
cq_wait_log() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -qF -- "$2" "$CQ_TMP/$1.log" 2>/dev/null && return 0
        sleep 0.1
    done
    cq_fail "timed out after $3 s waiting for '$2' in $1.log"
}

# cq_expect_split_stopped LOGNAME ITEM_KEY: the worker's debug line says the item's decode was
# stopped while cut into chunks with at least one helper thread (LOG_LEVEL=debug).
cq_expect_split_stopped() {
    local line chunks helpers
    line=$(grep -F '"item":"'"$2"'"' "$CQ_TMP/$1.log" | grep -F '"stage":"decode"' |
        grep -F 'handed on before it stopped;' | tail -n 1) ||
        cq_fail "$1.log: no decode line for $2 that stopped"
    read -r chunks helpers <<<"$(fq_test_split_counts "$line")"
    ((${chunks:-0} >= 2 && ${helpers:-0} >= 1)) ||
        cq_fail "$2 was not decoded in chunks with a helper: $line"
    cq_say "ok: $2 stopped in a split decode ($chunks chunks, $helpers helper)"
}

# cq_long_decode LOGNAME CODE SECONDS: a 1280x720 H.264 clip of SECONDS with an IDR every 2 s
# (an item alone on 2 cores decodes it in chunks on both) as item c:CODE on partition 0, and a
# worker in the background (its pid in CQ_LAST_PID) that has begun to write its frames.
cq_long_decode() {
    local log=$1 code=$2
    fq_test_long_clip "$CQ_TMP/videos/$code.mp4" 1280x720 "$3" 60 ||
        cq_fail "ffmpeg could not make $code.mp4"
    cq_produce 0 "$(cq_batch "$(cq_item c "$code")")"
    cq_consumer_bg "$log"
    cq_wait_sql "SELECT count(*) FROM extraction_items WHERE code='$code' AND status='processing'" 1 60
    cq_wait_file "$CQ_TMP/frames/c/$code/*.jpg" 30
}

# cq_proxy_start PORT_FILE TARGET_HOST TARGET_PORT [LISTEN_PORT]: a TCP forwarder (to cut a
# dependency off without stopping the shared service); pid in CQ_PROXY_PID. Killing it closes
# every forwarded connection, exactly what clients see when the server goes away.
cq_proxy_start() {
    python3 -c '
import os, socket, sys, threading
pf, host, port, listen = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen)); srv.listen(64)
tmp = pf + ".tmp"; open(tmp, "w").write(str(srv.getsockname()[1])); os.rename(tmp, pf)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
while True:
    c, _ = srv.accept()
    try: u = socket.create_connection((host, port))
    except OSError: c.close(); continue
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
' "$1" "$2" "$3" "${4:-0}" &
    CQ_PROXY_PID=$!
    CQ_PIDS+=("$CQ_PROXY_PID")
    local i
    for i in $(seq 50); do
        [[ -s $1 ]] && return 0
        sleep 0.1
    done
    cq_fail "TCP proxy did not start"
}
