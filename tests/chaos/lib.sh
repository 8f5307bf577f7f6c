# shellcheck shell=bash
# Shared helpers of the chaos scenarios (tests/chaos/) and of the hostile-input, valgrind and
# invariant-checker integration tests. Sourced, not run.
#
# Every run gets its own topics, consumer group, throwaway database and temp dir, so it can run
# next to colleagues' tests on the one shared local stack. Needs the stack's environment
# (deploy/local/up, then `. .stack/env`); a test fails (never skips) without it.

CH_SRC=${FQ_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# The helpers shared with the consumer tests (fq_test_*).
# shellcheck source=tests/support/consumer_lib.sh
. "$CH_SRC/tests/support/consumer_lib.sh"
CH_BUILD=${FQ_BUILD_DIR:-$CH_SRC/build}
CH_PIDS=()
CH_TOPICS=()
CH_DB=
CH_TMP=
CH_ADMIN_URL=

ch_say() { echo "# $*" >&2; }

ch_fail() {
    echo "FAIL: $*" >&2
    [[ ${CH_QUIET_FAIL:-0} == 1 ]] || fq_test_log_tails "$CH_TMP" 8 300
    exit 1
}

# ch_require_env [VAR...]: the stack's variables, the programs and the tools.
ch_require_env() {
    local msg
    msg=$(fq_test_check_env "" "$@") || ch_fail "$msg"
    [[ -x $CH_BUILD/consumer && -x $CH_BUILD/producer ]] ||
        ch_fail "FQ_BUILD_DIR must point at a build with the consumer and producer programs" \
            "(got '$CH_BUILD')"
    msg=$(fq_test_check_env "kcat psql jq ffmpeg python3 curl timeout") || ch_fail "$msg"
}

ch_cleanup() {
    fq_test_teardown "$CH_ADMIN_URL" "$CH_DB" "$CH_TMP" "${CH_KEEP:-0}" "${CH_PIDS[@]}"
    if [[ -n $CH_TMP && ${CH_KEEP:-0} == 1 ]]; then
        ch_say "kept $CH_TMP, and the topics and groups under ${FQ_TEST_KAFKA_UNDER[*]:-(none)}"
    fi
}

# ch_init NAME: temp dir and cleanup trap; CH_RUN is a short unique id of this run.
ch_init() {
    CH_RUN="$(date +%H%M%S)$$$RANDOM"
    CH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/fq-$1.XXXXXX")
    trap ch_cleanup EXIT
}

# ch_db NAME: a throwaway database migrated by `consumer --migrate`; exports DATABASE_URL.
ch_db() {
    CH_ADMIN_URL=${CH_ADMIN_URL:-$DATABASE_URL}
    CH_DB="fqc_${1//[^a-z0-9]/_}_$CH_RUN"
    DATABASE_URL=$(fq_test_db "$CH_ADMIN_URL" "$CH_DB" "$CH_BUILD/consumer" "$CH_TMP/migrate.log") ||
        ch_fail "cannot create and migrate database $CH_DB: $(tail -n 2 "$CH_TMP/migrate.log")"
    export DATABASE_URL
}

ch_sql() { psql "$DATABASE_URL" -XqAt -v ON_ERROR_STOP=1 -c "$1"; }

# ch_topics PREFIX PARTITIONS: exports KAFKA_TOPIC/_RETRY_/_DLQ_ and the group, creates the
# three topics with `producer topics create`.
ch_topics() {
    export KAFKA_TOPIC="$1.jobs"
    export KAFKA_RETRY_TOPIC="$KAFKA_TOPIC.retry"
    export KAFKA_DLQ_TOPIC="$KAFKA_TOPIC.dlq"
    export KAFKA_GROUP_ID="$1.workers"
    FQ_TEST_KAFKA_UNDER+=("$1")
    local i
    for i in 1 2 3; do
        if "$CH_BUILD/producer" topics create --partitions "$2" >"$CH_TMP/topics.log" 2>&1; then
            return 0
        fi
        sleep 2
    done
    ch_fail "producer topics create: $(tail -3 "$CH_TMP/topics.log")"
}

# ch_tiny DIR: the one-frame test clip, made at test time.
ch_tiny() {
    fq_test_tiny "$1" || ch_fail "ffmpeg could not make tiny.mp4"
}

# ch_s3_put BUCKET/KEY FILE: one SigV4-signed PUT (the S3 server checks signatures).
ch_s3_put() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 -X PUT --data-binary "@$2" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
        --aws-sigv4 "aws:amz:${S3_REGION:-us-east-1}:s3" \
        --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$S3_ENDPOINT/$1")
    [[ $code == 200 ]] || {
        echo "PUT $1: HTTP $code" >&2
        return 1
    }
}

# ch_s3_put_many FILE BUCKET/PREFIX < codes: PUTs FILE as PREFIX/<code>.mp4, 4 at a time.
ch_s3_put_many() {
    local file=$1 prefix=$2
    export -f ch_s3_put
    xargs -r -P 4 -I{} bash -c 'ch_s3_put "$0/{}.mp4" "$1"' "$prefix" "$file" ||
        ch_fail "uploading test videos to $prefix"
}

# ch_fault_server DIR: starts tests/tools/fault_server.py serving DIR; sets CH_HTTP.
ch_fault_server() {
    fq_test_fault_server "$1" "$CH_TMP" || ch_fail "fault server did not start"
    CH_PIDS+=("$FQ_FAULT_PID")
    CH_HTTP=$FQ_FAULT_HTTP
}

# ch_enqueue FILE: publishes the items of FILE with the real producer.
ch_enqueue() {
    "$CH_BUILD/producer" --no-progress "$1" >"$CH_TMP/producer.out" 2>>"$CH_TMP/producer.log" ||
        ch_fail "producer failed: $(cat "$CH_TMP/producer.out")"
    ch_say "producer: $(cat "$CH_TMP/producer.out")"
}

# ch_produce_raw TOPIC FILE [KEY]: one message with the exact bytes of FILE (kcat -P).
ch_produce_raw() {
    local args=(-b "$KAFKA_BROKERS" -P -t "$1" -X message.max.bytes=20000000)
    [[ -n ${3:-} ]] && args+=(-k "$3")
    kcat "${args[@]}" "$2" || ch_fail "kcat could not produce $2 to $1"
}

# ch_dlq_json: every committed DLQ message as one kcat JSON line (valid UTF-8). A DLQ that
# cannot be read fails the test: an empty answer would pass every check on it.
ch_dlq_json() {
    fq_test_read_json "$KAFKA_DLQ_TOPIC" "$CH_TMP/dlq_read.err" ||
        ch_fail "reading the DLQ $KAFKA_DLQ_TOPIC failed: $(head -c 300 "$CH_TMP/dlq_read.err")"
}

# ch_open_transactions TOPIC...: one line per partition whose last stable offset (the end a
# read_committed reader sees) is behind its end: a transaction is open there.
ch_open_transactions() {
    local t p n lso hwm
    for t in "$@"; do
        n=$(kcat -b "$KAFKA_BROKERS" -L -t "$t" 2>/dev/null | grep -c '^    partition ') || n=0
        for ((p = 0; p < n; p++)); do
            lso=$(kcat -b "$KAFKA_BROKERS" -X isolation.level=read_committed -Q -t "$t:$p:-1" \
                2>/dev/null | sed -n 's/.* offset \([0-9]*\)$/\1/p')
            hwm=$(kcat -b "$KAFKA_BROKERS" -X isolation.level=read_uncommitted -Q -t "$t:$p:-1" \
                2>/dev/null | sed -n 's/.* offset \([0-9]*\)$/\1/p')
            if [[ -n $lso && -n $hwm && $lso -lt $hwm ]]; then
                echo "$t [$p]: readable to offset $lso of $hwm (a transaction is open there)"
            fi
        done
    done
}

# ch_run_checker ITEMS_FILE: tests/chaos/check_invariants.sh with this run's topics and DB.
ch_run_checker() {
    bash "$CH_SRC/tests/chaos/check_invariants.sh" "$1"
}
