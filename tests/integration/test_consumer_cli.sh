#!/usr/bin/env bash
# The consumer program's command line (and both programs' --help and --version): --help, --version, configuration errors (exit 2),
# --print-config, and --process without Kafka or a database (--no-db): exit 0 done, 1 failed,
# 2 bad item, the outcome as JSON on stdout; --once on a topic the broker does not know (exit 2);
# Kafka unreachable at start-up (the wait said, its errors not repeated, SIGTERM exits 0).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

[[ -n $CQ_BUILD && -x $CQ_BUILD/consumer ]] || cq_fail "FQ_BUILD_DIR must point at a build with the consumer program"
CQ_TMP=$(mktemp -d "${TMPDIR:-/tmp}/fq-cli.XXXXXX")
trap cq_cleanup EXIT
c=$CQ_BUILD/consumer
export METRICS_ADDR=off

out=$("$c" --help)
for want in --role --once --migrate --process --no-db --print-config --version KAFKA_BROKERS \
    RETRY_BACKOFF_MS WORKER_CONCURRENCY SHUTDOWN_GRACE_MS; do
    grep -q -- "$want" <<<"$out" || cq_fail "--help does not mention $want"
done
cq_say "ok: --help"
out=$("$c" --version)
for want in "consumer (frameq)" librdkafka libpq libavformat libavcodec; do
    grep -q "$want" <<<"$out" || cq_fail "--version lacks '$want'"
done
cq_say "ok: --version"
# Both programs answer --help and --version whatever the environment holds, and refuse a
# flag they do not know with exit 2, naming it.
for prog in consumer producer; do
    for flag in --help --version -h; do
        FRAME_MODE=bogus "$CQ_BUILD/$prog" "$flag" >"$CQ_TMP/out" 2>"$CQ_TMP/err" ||
            cq_fail "$prog $flag with a bad setting in the environment: $(cat "$CQ_TMP/err")"
        [[ -s $CQ_TMP/out ]] || cq_fail "$prog $flag printed nothing"
    done
    r=0
    "$CQ_BUILD/$prog" --dry-run=1 --once=1 >/dev/null 2>"$CQ_TMP/err" || r=$?
    cq_expect_eq "$prog: a switch given a value, exit" "$r" 2
    grep -Eq -- "^$prog: --(dry-run|once): (takes no value|unknown option)" "$CQ_TMP/err" ||
        cq_fail "$prog: the refused flag is not named: $(cat "$CQ_TMP/err")"
done
cq_say "ok: --help and --version with a bad setting; refused flags named"

rc() { local r=0; "$@" >"$CQ_TMP/out" 2>"$CQ_TMP/err" || r=$?; echo "$r"; }
cq_expect_eq "--role bogus exit" "$(rc "$c" --role bogus --print-config)" 2
grep -q "role" "$CQ_TMP/err" || cq_fail "--role error does not say why"
cq_expect_eq "unknown flag exit" "$(rc "$c" --frobnicate)" 2
grep -q -- "--frobnicate: unknown option" "$CQ_TMP/err" || cq_fail "unknown flag not named: $(cat "$CQ_TMP/err")"
cq_expect_eq "--role without value exit" "$(rc "$c" --print-config --role)" 2
grep -q -- "--role: needs a value" "$CQ_TMP/err" || cq_fail "missing value not named: $(cat "$CQ_TMP/err")"
cq_expect_eq "stray argument exit" "$(rc "$c" --print-config stray)" 2
grep -q "stray: unexpected argument" "$CQ_TMP/err" || cq_fail "stray argument not named: $(cat "$CQ_TMP/err")"
cq_expect_eq "--role=retry exit" "$(rc "$c" --role=retry --print-config)" 0
# The producer's command words: a two-word command names the word it expected, a word left
# over is named.
p=$CQ_BUILD/producer
for cmd in "dlq|dlq: expected 'dlq list'" "dlq lisst|dlq: expected 'dlq list'" \
    "topics create now|now: unexpected argument" "topics|topics: expected 'topics create'" \
    "redrive extra|extra: unexpected argument" "enqueue a b|b: unexpected argument"; do
    # shellcheck disable=SC2086 # the words are split on purpose
    cq_expect_eq "producer ${cmd%%|*} exit" "$(rc "$p" ${cmd%%|*})" 2
    grep -qF "producer: ${cmd#*|}" "$CQ_TMP/err" || cq_fail "producer ${cmd%%|*}: $(cat "$CQ_TMP/err")"
done
cq_expect_eq "MAX_RETRIES=abc exit" "$(MAX_RETRIES=abc rc "$c" --print-config)" 2
grep -q "MAX_RETRIES" "$CQ_TMP/err" || cq_fail "config error does not name MAX_RETRIES: $(cat "$CQ_TMP/err")"
cq_expect_eq "--print-config exit" "$(DATABASE_URL=postgresql://u:hunter2@db/x rc "$c" --print-config)" 0
grep -q "hunter2" "$CQ_TMP/out" && cq_fail "--print-config shows the database password"
grep -q "^KAFKA_TOPIC=" "$CQ_TMP/out" || cq_fail "--print-config lacks KAFKA_TOPIC"
cq_say "ok: configuration errors and --print-config"

mkdir -p "$CQ_TMP/v"
ffmpeg -nostdin -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=64x64:rate=1:duration=1 \
    -frames:v 1 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f mp4 "$CQ_TMP/v/one.mp4"
export SOURCE_URL_TEMPLATE="file://$CQ_TMP/v/{code}.mp4" ALLOWED_SOURCE_SCHEMES=file
export FRAMES_URL_TEMPLATE="file://$CQ_TMP/frames/{platform}/{code}/{index}.jpg"
cq_expect_eq "--process done exit" "$(rc "$c" --no-db --process '{"platform":"cli","code":"one"}')" 0
cq_expect_eq "--process done status" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["status"], d["frames"])' "$CQ_TMP/out")" "done 1"
[[ -f $CQ_TMP/frames/cli/one/0.jpg ]] || cq_fail "--process wrote no frame"
cq_expect_eq "--process missing source exit" "$(rc "$c" --no-db --process '{"platform":"cli","code":"none"}')" 1
cq_expect_eq "--process failure JSON" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["status"], d["stage"], d["class"])' "$CQ_TMP/out")" "failed fetch permanent"
cq_expect_eq "--process=ITEM exit" "$(rc "$c" --no-db '--process={"platform":"cli","code":"one"}')" 0
printf '%s\n' '{"platform":"cli","code":"one"}' '{"platform":"cli","code":"none"}' >"$CQ_TMP/items"
for form in "--process-file=$CQ_TMP/items" "--process-file $CQ_TMP/items"; do
    # shellcheck disable=SC2086 # the second form is two words on purpose
    cq_expect_eq "$form exit" "$(rc "$c" --no-db $form)" 1
    cq_expect_eq "$form summary" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["items"], d["done"], d["failed"])' "$CQ_TMP/out")" "2 1 1"
done
cq_expect_eq "--process bad item exit" "$(rc "$c" --no-db --process '{"platform":"cli","code":"a/b"}')" 2
cq_expect_eq "--process not JSON exit" "$(rc "$c" --no-db --process 'nope')" 2
cq_say "ok: --process"

# --once on a topic the cluster does not know (a typo, topics not created): a configuration
# error naming it once the grace for a just-created topic (10 s) is over, not a drain that
# never ends. The real broker of the local stack.
[[ -n ${KAFKA_BROKERS:-} ]] || cq_fail "KAFKA_BROKERS is not set: start the stack, source .stack/env"
# Its retry and DLQ topics are missing too (the local broker would create them on demand):
# each is named at start-up.
missing="fqt.cli-$$-$RANDOM"
FQ_TEST_KAFKA_UNDER+=("$missing")
r=0
KAFKA_TOPIC=$missing KAFKA_GROUP_ID=$missing KAFKA_CONFIG_ALLOW_AUTO_CREATE_TOPICS=false \
    timeout 60 "$c" --once --role main >/dev/null 2>"$CQ_TMP/err" || r=$?
cq_expect_eq "--once on a missing topic, exit" "$r" 2
grep -qF "\"--once: metadata of $missing: Broker: Unknown topic or partition after 10 s" \
    "$CQ_TMP/err" || cq_fail "--once on a missing topic does not name it: $(tail -n 3 "$CQ_TMP/err")"
for t in "retry topic $missing.retry" "DLQ topic $missing.dlq"; do
    grep -qF "\"msg\":\"$t: Broker: Unknown topic or partition: until it exists" "$CQ_TMP/err" ||
        cq_fail "the missing $t is not named at start-up: $(head -n 5 "$CQ_TMP/err")"
done
cq_say "ok: --once on a missing topic; missing retry and DLQ topics named at start-up"

# Kafka unreachable at start-up: the wait is said every 10 s, and librdkafka's errors come at
# most once per client and code per 10 s (before, the queued ones came in a burst of hundreds
# when the worker stopped); SIGTERM ends the wait with exit 0.
t0=$(date +%s%N)
KAFKA_BROKERS=127.0.0.1:1 LOG_LEVEL=info cq_consumer_bg nokafka
nokafka=$CQ_LAST_PID
cq_wait_log nokafka "s for Kafka at KAFKA_BROKERS=127.0.0.1:1 to start the transactional producer (not ready)" 30
kill -TERM "$nokafka"
r=0
wait "$nokafka" || r=$?
cq_expect_eq "SIGTERM while waiting for Kafka, exit" "$r" 0
s=$((($(date +%s%N) - t0) / 1000000000 + 1))
lines=$(grep -o '"msg":"Kafka rdkafka#[a-z]*-[0-9]*: _[A-Z_]*' "$CQ_TMP/nokafka.log" | sort | uniq -c |
    sort -rn | head -n 1)
[[ -n $lines ]] || cq_fail "no Kafka error was logged: $(tail -n 5 "$CQ_TMP/nokafka.log")"
((${lines%% \"*} <= s / 10 + 1)) ||
    cq_fail "a Kafka error was logged more than once per 10 s over $s s: $lines"
cq_say "ok: waiting for Kafka said; its errors at most once per 10 s ($lines in $s s)"
cq_say "PASS"
