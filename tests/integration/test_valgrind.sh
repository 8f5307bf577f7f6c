#!/usr/bin/env bash
# valgrind soak: `consumer --once` of a non-sanitized Debug build processes 20 items (tiny clips
# from S3, frames to file://, a throwaway database) under
#   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99
# Pass: every item done (the whole path ran under valgrind), valgrind reports no definite or indirect leak and
# no memory error (exit != 99). Then one 6 s clip through `consumer --process-file` alone on 2
# cores, so its decode is cut into chunks and a helper thread decodes some: the same checks.
# Prints valgrind's summaries.
#
# The Debug build lives in $FQ_VALGRIND_BUILD_DIR (default <FQ_BUILD_DIR>/valgrind-build) and is
# configured and built here on the first run (incrementally afterwards).
set -euo pipefail
export LC_ALL=C
. "$(dirname "${BASH_SOURCE[0]}")/../chaos/lib.sh"

ch_require_env S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
command -v valgrind >/dev/null || ch_fail "valgrind not found"
ch_init valgrind

vg_build=${FQ_VALGRIND_BUILD_DIR:-$CH_BUILD/valgrind-build}
ch_say "building a Debug consumer without sanitizers in $vg_build"
{
    cmake -S "$CH_SRC" -B "$vg_build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=OFF \
        -DBUILD_TESTING=OFF &&
        ninja -C "$vg_build" -j2 consumer
} >"$CH_TMP/build.log" 2>&1 || ch_fail "Debug build failed: $(tail -5 "$CH_TMP/build.log")"
if ldd "$vg_build/consumer" | grep -q libasan; then
    ch_fail "$vg_build/consumer is sanitized: valgrind cannot run it"
fi

ch_db valgrind
ch_topics "valgrind.$CH_RUN" 3
ch_tiny "$CH_TMP/videos"
prefix="valgrind/$CH_RUN"
export SOURCE_URL_TEMPLATE="s3://frameq-videos/$prefix/{platform}/{code}.mp4"
export FRAMES_URL_TEMPLATE="file://$CH_TMP/frames/{platform}/{code}/{index}.jpg"
export MAX_RETRIES=3 RETRY_BACKOFF_MS=200 RETRY_BACKOFF_MAX_MS=2000
export WORKER_CONCURRENCY=2 METRICS_ADDR=off WORKER_ID="valgrind-$CH_RUN"
# valgrind runs the program ~20-50 times slower: give Kafka and HTTP room.
export HTTP_TIMEOUT_MS=60000 SHUTDOWN_GRACE_MS=60000
export KAFKA_CONFIG_SESSION_TIMEOUT_MS=60000 KAFKA_CONFIG_MAX_POLL_INTERVAL_MS=300000

n=20
for ((i = 1; i <= n; i++)); do
    printf '{"platform":"vg","code":"v%02d"}\n' "$i" >>"$CH_TMP/items.ndjson"
    printf 'v%02d\n' "$i"
done >"$CH_TMP/codes"
ch_s3_put_many "$CH_TMP/videos/tiny.mp4" "frameq-videos/$prefix/vg" <"$CH_TMP/codes"
ch_enqueue "$CH_TMP/items.ndjson"

# vg LOG RESULT CMD...: CMD under valgrind (leaks and memory errors), its stderr to LOG and its
# exit code to RESULT; prints valgrind's summary.
vg() {
    local vg_log=$1 vg_result=$2 vg_rc=0
    shift 2
    timeout 600 valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --error-exitcode=99 --num-callers=30 --log-file="$vg_log.valgrind" "$@" 2>"$vg_log" ||
        vg_rc=$?
    printf -v "$vg_result" '%s' "$vg_rc"
    echo "valgrind summary ($* exited $vg_rc):"
    sed -n '/HEAP SUMMARY/,$p' "$vg_log.valgrind" | sed 's/^==[0-9]*== \{0,1\}/    /' |
        grep -v '^ *$' | head -40
}

# vg_clean LOG RC: valgrind found no memory error and no definite or indirect leak; 0 or 1.
vg_clean() {
    local fails=0 kind
    [[ $2 != 99 ]] || {
        echo "FAIL: valgrind found errors (exit 99); first ones:"
        grep -m 20 -A 12 'definitely lost in\|indirectly lost in\|Invalid \|uninitialised\|Mismatched' \
            "$1.valgrind" | sed 's/^==[0-9]*== \{0,1\}/    /' | head -80
        fails=1
    }
    for kind in definitely indirectly; do
        if ! grep -Eq "$kind lost: 0 bytes|All heap blocks were freed|no leaks are possible" \
            "$1.valgrind"; then
            echo "FAIL: $kind lost is not 0: $(grep "$kind lost" "$1.valgrind" | head -1)"
            fails=1
        fi
    done
    return $fails
}

vg "$CH_TMP/consumer.log" rc "$vg_build/consumer" --once

fails=0
terminal=$(ch_sql "SELECT count(*) FROM extraction_items WHERE status IN ('done', 'dead')")
done_n=$(ch_sql "SELECT count(*) FROM extraction_items WHERE status = 'done'")
echo "items: $n enqueued, $terminal terminal, $done_n done"
# Every item must take the whole path (fetch, frames, upload, store) for the soak to cover it.
[[ $done_n == "$n" ]] || {
    echo "FAIL: $done_n of $n items done after consumer --once ($terminal terminal):"
    ch_sql "SELECT code, status, left(last_error, 100) FROM extraction_items
            WHERE status <> 'done' LIMIT 3" | sed 's/^/    /'
    fails=1
}
[[ $rc == 0 || $rc == 1 ]] || {
    echo "FAIL: consumer --once exited $rc under valgrind"
    tail -5 "$CH_TMP/consumer.log"
    fails=1
}
vg_clean "$CH_TMP/consumer.log" "$rc" || fails=1

# The chunked decode too (the item's thread and a helper thread on a lent core, each with its
# own demuxer and decoder): one 6 s clip with an IDR every second, alone on 2 cores, through
# the pipeline and the worker's pool without Kafka.
fq_test_long_clip "$CH_TMP/videos/long.mp4" 320x240 6 30 || ch_fail "ffmpeg could not make long.mp4"
ch_s3_put "frameq-videos/$prefix/vg/long1.mp4" "$CH_TMP/videos/long.mp4" || ch_fail "uploading long.mp4"
echo '{"platform":"vg","code":"long1"}' >"$CH_TMP/long.ndjson"
WORKER_CONCURRENCY=1 WORKER_CORES=2 LOG_LEVEL=debug \
    vg "$CH_TMP/split.log" rc "$vg_build/consumer" --no-db --process-file "$CH_TMP/long.ndjson"
line=$(grep '"item":"vg:long1".*"stage":"decode"' "$CH_TMP/split.log" | tail -n 1)
echo "split decode: $(sed -n 's/.*"msg":"\([^"]*\)".*/\1/p' <<<"$line")"
[[ $rc == 0 ]] || {
    echo "FAIL: consumer --process-file exited $rc under valgrind"
    tail -5 "$CH_TMP/split.log"
    fails=1
}
read -r chunks helpers <<<"$(fq_test_split_counts "$line")"
[[ $line == *', 6 handed on; '* ]] && ((${chunks:-0} >= 2 && ${helpers:-0} >= 1)) || {
    echo "FAIL: the long item was not decoded in chunks with a helper (6 frames): ${line:-no decode line}"
    fails=1
}
vg_clean "$CH_TMP/split.log" "$rc" || fails=1
((fails == 0)) || ch_fail "valgrind soak failed"
echo "PASS: valgrind soak, $n items and a chunked decode, no definite/indirect leak, no memory error"
