#!/usr/bin/env bash
# valgrind soak: `consumer --once` of a non-sanitized Debug build processes 20 items (tiny clips
# from S3, frames to file://, a throwaway database) under
#   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99
# Pass: every item done (the whole path ran under valgrind), valgrind reports no definite or indirect leak and
# no memory error (exit != 99). Prints valgrind's summary.
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

rc=0
timeout 600 valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --error-exitcode=99 --num-callers=30 --log-file="$CH_TMP/valgrind.txt" \
    "$vg_build/consumer" --once 2>"$CH_TMP/consumer.log" || rc=$?
echo "valgrind summary (consumer --once exited $rc):"
sed -n '/HEAP SUMMARY/,$p' "$CH_TMP/valgrind.txt" | sed 's/^==[0-9]*== \{0,1\}/    /' |
    grep -v '^ *$' | head -40

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
[[ $rc != 99 ]] || {
    echo "FAIL: valgrind found errors (exit 99); first ones:"
    grep -m 20 -A 12 'definitely lost in\|indirectly lost in\|Invalid \|uninitialised\|Mismatched' \
        "$CH_TMP/valgrind.txt" | sed 's/^==[0-9]*== \{0,1\}/    /' | head -80
    fails=1
}
[[ $rc == 0 || $rc == 1 ]] || {
    echo "FAIL: consumer --once exited $rc under valgrind"
    tail -5 "$CH_TMP/consumer.log"
    fails=1
}
for kind in definitely indirectly; do
    if ! grep -Eq "$kind lost: 0 bytes|All heap blocks were freed|no leaks are possible" \
        "$CH_TMP/valgrind.txt"; then
        echo "FAIL: $kind lost is not 0: $(grep "$kind lost" "$CH_TMP/valgrind.txt" | head -1)"
        fails=1
    fi
done
((fails == 0)) || ch_fail "valgrind soak failed"
echo "PASS: valgrind soak, $n items, no definite/indirect leak, no memory error"
