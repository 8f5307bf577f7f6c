#!/usr/bin/env bash
# Integration test of the producer CLI against the real broker of the local stack
# (deploy/local/up; `. .stack/env`): enqueue format and batch sizes, exit codes, topics
# create, redrive (round trip, loop guard, malformed, resumability, dry run, --to retry) and
# the progress lines of enqueue, redrive and dlq list.
# Every run uses its own topics, so runs never see each other's messages.
set -euo pipefail

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

[ -n "${KAFKA_BROKERS:-}" ] ||
    fail "KAFKA_BROKERS is not set: start the stack (deploy/local/up) and source .stack/env"
command -v kcat >/dev/null || fail "kcat is required"
command -v jq >/dev/null || fail "jq is required"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${FQ_BUILD_DIR:-$here/../../build}
producer=$build/producer
[ -x "$producer" ] || fail "$producer not built"

# shellcheck source=tests/support/consumer_lib.sh
. "$here/../support/consumer_lib.sh" # fq_test_drop_kafka
work=$(mktemp -d)
run_id="fqp-it-$$-$RANDOM"
FQ_TEST_KAFKA_UNDER=("$run_id") # every topic and group of the run
# The redrive group (<KAFKA_GROUP_ID>.redrive) and its transactional id are the run's own too.
export KAFKA_GROUP_ID=$run_id
db=
cleanup() {
    if [[ -n $db ]] && ! psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1; then
        echo "# teardown: could not drop database $db" >&2
    fi
    fq_test_drop_kafka
    rm -rf "$work"
}
trap cleanup EXIT
B=$KAFKA_BROKERS
[ -n "${DATABASE_URL:-}" ] ||
    fail "DATABASE_URL is not set: start the stack (deploy/local/up) and source .stack/env"
command -v psql >/dev/null || fail "psql is required"
consumer=$build/consumer
[ -x "$consumer" ] || fail "$consumer not built (needed for --migrate of the throwaway database)"
# Redrive runs without a database unless a step sets one (the last step uses its own).
admin_url=$DATABASE_URL
unset DATABASE_URL
export LOG_LEVEL=warn

# Reads a whole topic as one JSON object per message (kcat -J), to the end, and exits.
read_topic() {
    kcat -b "$B" -C -t "$1" -e -q -J -X isolation.level=read_committed
}

# Messages in a topic. A failed read fails the test: "0" from a broken read would pass checks.
count_topic() {
    local n
    n=$(read_topic "$1" | awk 'END { print NR }') || fail "reading topic $1 failed"
    echo "$n"
}

# until_midway PID TOPIC: waits until the redrive PID has committed a first chunk to TOPIC;
# fails unless it is still running with fewer than 100 committed, i.e. mid-way.
until_midway() {
    local n got=0
    for ((n = 0; n < 200; n++)); do
        got=$(count_topic "$2")
        ((got > 0)) && break
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    ((got > 0 && got < 100)) && kill -0 "$1" 2>/dev/null ||
        fail "not mid-way: the redrive had committed $got of 100 to $2 and is$(kill -0 "$1" 2>/dev/null || printf ' not') running"
    echo "mid-way: $got of 100 committed"
}

step() {
    echo "--- $*"
}

# ---------------------------------------------------------------------------------------------
step "topics create, twice"
export KAFKA_TOPIC=$run_id.jobs
out=$("$producer" topics create --partitions 3 --retry-partitions 2 --dlq-partitions 1)
echo "$out"
[ "$(grep -c ': created' <<<"$out")" = 3 ] || fail "first topics create did not create 3 topics"
out=$("$producer" topics create --partitions 3)
echo "$out"
[ "$(grep -c ': exists' <<<"$out")" = 3 ] || fail "second topics create did not report 3 exists"
parts=$(kcat -b "$B" -L -t "$KAFKA_TOPIC" -J | jq '.topics[0].partitions | length')
[ "$parts" = 3 ] || fail "$KAFKA_TOPIC has $parts partitions, expected 3"
parts=$(kcat -b "$B" -L -t "$KAFKA_TOPIC.retry" -J | jq '.topics[0].partitions | length')
[ "$parts" = 2 ] || fail "$KAFKA_TOPIC.retry has $parts partitions, expected 2"

# ---------------------------------------------------------------------------------------------
step "enqueue 25 items at BATCH_SIZE=10 -> 3 batch messages of 10, 10, 5"
for i in $(seq 0 24); do
    printf '{"platform":"ig","code":"C%02d"}\n' "$i"
done >"$work/25.ndjson"
out=$(BATCH_SIZE=10 "$producer" "$work/25.ndjson")
echo "$out"
[ "$out" = "25 items in 3 batches delivered to $KAFKA_TOPIC" ] || fail "summary: $out"
read_topic "$KAFKA_TOPIC" >"$work/main.json"
[ "$(wc -l <"$work/main.json")" = 3 ] || fail "expected 3 messages, got $(wc -l <"$work/main.json")"
sizes=$(jq -r '.payload | fromjson | .items | length' "$work/main.json" | sort -n | tr '\n' ' ')
[ "$sizes" = "5 10 10 " ] || fail "batch sizes are '$sizes', expected 5 10 10"
jq -e -s 'all(.[]; (.payload | fromjson) as $b | $b.schema == "frameq.batch.v1"
          and $b.batch_id == .key and ($b.batch_id | test("^[0-9a-f-]{36}$"))
          and ($b.enqueued_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$")))' \
    "$work/main.json" >/dev/null || fail "a message does not follow DESIGN §2 (schema/batch_id/key/enqueued_at)"
codes=$(jq -r '.payload | fromjson | .items[] | .platform + ":" + .code' "$work/main.json" | sort | uniq)
[ "$(wc -l <<<"$codes")" = 25 ] || fail "expected 25 distinct items on the topic"
[ "$(head -1 <<<"$codes")" = "ig:C00" ] && [ "$(tail -1 <<<"$codes")" = "ig:C24" ] ||
    fail "items on the topic are not C00..C24"

step "JSON array input and duplicates are sent once"
printf '[{"platform":"ig","code":"D1"},{"platform":"ig","code":"D1"},{"platform":"ig","code":"D2"}]' \
    >"$work/dup.json"
out=$("$producer" "$work/dup.json" 2>"$work/err")
[ "$out" = "2 items in 1 batches delivered to $KAFKA_TOPIC" ] || fail "array/dedupe summary: $out"
grep -q "1 duplicate item dropped" "$work/err" || fail "duplicate not reported: $(cat "$work/err")"

step "stdin ('-') and JOB_INPUT"
out=$(printf '{"platform":"ig","code":"S1"}\n' | "$producer" -)
[ "$out" = "1 items in 1 batches delivered to $KAFKA_TOPIC" ] || fail "stdin: $out"
out=$(JOB_INPUT='[{"platform":"ig","code":"J1"},{"platform":"ig","code":"J2"}]' "$producer" </dev/null)
[ "$out" = "2 items in 1 batches delivered to $KAFKA_TOPIC" ] || fail "JOB_INPUT: $out"
read_topic "$KAFKA_TOPIC" | jq -r '.payload | fromjson | .items[] | .code' | grep -qx J2 ||
    fail "JOB_INPUT items not on the topic"

# ---------------------------------------------------------------------------------------------
step "invalid input: exit 2, nothing sent"
export KAFKA_TOPIC=$run_id.invalid
"$producer" topics create --partitions 1 >/dev/null
{
    echo '{"platform":"ig","code":"OK1"}'
    echo '{"platform":"ig","code":"../x"}'
    echo '{"platform":"ig","code":'
} >"$work/bad.ndjson"
set +e
"$producer" "$work/bad.ndjson" >"$work/out" 2>"$work/err"
rc=$?
set -e
cat "$work/err"
[ "$rc" = 2 ] || fail "invalid input exited $rc, expected 2"
grep -q "line 2: code: character '.' at offset 0" "$work/err" || fail "line 2 not reported"
grep -q "line 3, column" "$work/err" || fail "broken JSON on line 3 not reported with a column"
[ "$(count_topic "$KAFKA_TOPIC")" = 0 ] || fail "something was sent despite invalid input"

step "--skip-invalid sends the valid ones"
out=$("$producer" --skip-invalid "$work/bad.ndjson" 2>/dev/null)
[ "$out" = "1 items in 1 batches delivered to $KAFKA_TOPIC" ] || fail "skip-invalid summary: $out"

step "video_url refused by the workers' allow-list: each named, exit 2, end offsets unchanged"
# The workers' settings: an S3 source on a local endpoint. Its host is trusted on its own
# port only; the metadata address, another port of the same host, file:// and gopher:// not.
end_offsets() { # TOPIC -> "partition:end ..." (timestamp -1 = the end offset)
    kcat -b "$B" -Q -t "$1:0:-1" | awk '{print $4 ":" $NF}' | tr '\n' ' '
}
"$producer" --skip-invalid "$work/bad.ndjson" >/dev/null 2>&1 # one more message before
before=$(end_offsets "$KAFKA_TOPIC")
{
    echo '{"platform":"ig","code":"U0","video_url":"s3://frameq-videos/ig/U0.mp4"}'
    echo '{"platform":"ig","code":"U1","video_url":"http://169.254.169.254/latest/meta-data/"}'
    echo '{"platform":"ig","code":"U2","video_url":"http://127.0.0.1:22/"}'
    echo '{"platform":"ig","code":"U3","video_url":"file:///etc/passwd"}'
    echo '{"platform":"ig","code":"U4","video_url":"gopher://127.0.0.1:70/_x"}'
    echo '{"platform":"ig","code":"U5","video_url":"http://0x7f.1:22/"}'
    echo '{"platform":"ig","code":"U6","video_url":"http://127.0.0.1:17070/frameq-videos/ig/U6.mp4"}'
} >"$work/urls.ndjson"
workers_env=(SOURCE_URL_TEMPLATE='s3://frameq-videos/{platform}/{code}.mp4'
    S3_ENDPOINT=http://127.0.0.1:17070)
set +e
env "${workers_env[@]}" "$producer" "$work/urls.ndjson" >"$work/out" 2>"$work/err"
rc=$?
set -e
cat "$work/err"
[ "$rc" = 2 ] || fail "refused video_urls exited $rc, expected 2"
grep -q "line 2: video_url host 169.254.169.254:80 is not in ALLOWED_SOURCE_HOSTS" "$work/err" ||
    fail "metadata address not refused by line"
grep -q "line 3: video_url host 127.0.0.1:22 is not in ALLOWED_SOURCE_HOSTS" "$work/err" ||
    fail "another port of the S3 endpoint's host not refused"
grep -q "line 4: video_url scheme file is not in ALLOWED_SOURCE_SCHEMES" "$work/err" ||
    fail "file:// not refused"
grep -q "line 5: video_url scheme gopher is not in ALLOWED_SOURCE_SCHEMES" "$work/err" ||
    fail "gopher:// not refused"
grep -q "line 6: video_url host 127.0.0.1:22 is not in ALLOWED_SOURCE_HOSTS" "$work/err" ||
    fail "0x7f.1 (127.0.0.1 to libcurl) not refused as 127.0.0.1"
[ "$(grep -c "invalid item at" "$work/err")" = 5 ] || fail "expected exactly 5 refusals"
grep -q "ALLOWED_SOURCE_HOSTS=frameq-videos,127.0.0.1:17070" "$work/err" ||
    fail "the refusal does not say which allow-list was used"
after=$(end_offsets "$KAFKA_TOPIC")
echo "end offsets before: $before after: $after"
[ -n "$before" ] && [ "$before" = "$after" ] || fail "end offsets moved: $before -> $after"
env "${workers_env[@]}" "$producer" --print-config >"$work/config"
grep -Eq '^ALLOWED_SOURCE_HOSTS=frameq-videos,127.0.0.1:17070 +# derived from SOURCE_URL_TEMPLATE and S3_ENDPOINT$' \
    "$work/config" || fail "--print-config does not show the derived allow-list: $(grep ALLOWED "$work/config")"
out=$(env "${workers_env[@]}" "$producer" --skip-invalid "$work/urls.ndjson" 2>/dev/null)
[ "$out" = "2 items in 1 batches delivered to $KAFKA_TOPIC" ] || fail "skip-invalid with URLs: $out"
read_topic "$KAFKA_TOPIC" | jq -r '.payload | fromjson | .items[] | .code' | sort | tr '\n' ' ' |
    grep -q 'U0 U6 ' || fail "the allowed video_urls (U0, U6) are not on the topic"

step "--dry-run prints the batches without connecting"
out=$(KAFKA_BROKERS=127.0.0.1:1 BATCH_SIZE=10 "$producer" --dry-run "$work/25.ndjson" 2>/dev/null)
[ "$(wc -l <<<"$out")" = 3 ] || fail "dry run printed $(wc -l <<<"$out") lines, expected 3"
jq -e -s 'map(.items | length) == [10, 10, 5]' <<<"$out" >/dev/null || fail "dry run batch sizes"

# ---------------------------------------------------------------------------------------------
step "unreachable broker: exit 1 within the --timeout bound"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
set +e
start=$(date +%s)
KAFKA_BROKERS=127.0.0.1:$port "$producer" --timeout 3000 "$work/25.ndjson" >"$work/out" 2>"$work/err"
rc=$?
elapsed=$(($(date +%s) - start))
set -e
[ "$rc" = 1 ] || fail "closed port exited $rc, expected 1"
grep -q "could not deliver to KAFKA_BROKERS=127.0.0.1:$port" "$work/err" ||
    fail "no 'could not deliver' message: $(tail -3 "$work/err")"
echo "closed port: exit $rc after ${elapsed}s"

step "a topic the cluster does not know (no auto-creation): named at once, nothing sent"
# Before, every batch waited for the topic (up to 30 s, or --timeout when shorter: "Message
# timed out") and failed on its own line.
gone=$run_id.gone
export KAFKA_CONFIG_ALLOW_AUTO_CREATE_TOPICS=false # the local broker would create it
rc=0
KAFKA_TOPIC=$gone "$producer" --timeout 60000 "$work/25.ndjson" >"$work/out" 2>"$work/err" || rc=$?
[ "$rc" = 1 ] || fail "enqueue to a missing topic exited $rc, expected 1: $(cat "$work/err")"
grep -q "^producer: $gone: Broker: Unknown topic or partition; nothing sent (create the topics" \
    "$work/err" || fail "enqueue to a missing topic: $(cat "$work/err")"
# redrive: its DLQ exists, the topic it would send to does not
printf 'ig:G1\t{"platform":"ig","code":"G1"}\n' |
    kcat -b "$B" -P -t "$gone.dlq" -K $'\t' -X allow.auto.create.topics=true
rc=0
KAFKA_TOPIC=$gone "$producer" redrive >"$work/out" 2>"$work/err" || rc=$?
[ "$rc" = 1 ] || fail "redrive to a missing topic exited $rc, expected 1: $(cat "$work/err")"
grep -q "^producer: $gone: Broker: Unknown topic or partition; nothing sent" "$work/err" ||
    fail "redrive to a missing topic: $(cat "$work/err")"
unset KAFKA_CONFIG_ALLOW_AUTO_CREATE_TOPICS

# ---------------------------------------------------------------------------------------------
step "redrive: DLQ -> main, resumable, loop guard, malformed, dry run"
export KAFKA_TOPIC=$run_id.rd
"$producer" topics create --partitions 2 --dlq-partitions 2 >/dev/null
D=$KAFKA_TOPIC.dlq
# dlq_of_100 NAME LETTER: KAFKA_TOPIC=$run_id.NAME with one partition, and 100 permanent
# failures ig:LETTER1..ig:LETTER100 in its DLQ.
dlq_of_100() {
    export KAFKA_TOPIC=$run_id.$1
    "$producer" topics create --partitions 1 >/dev/null
    local i
    for i in $(seq 1 100); do
        printf 'ig:%s%d\t{"platform":"ig","code":"%s%d"}\n' "$2" "$i" "$2" "$i"
    done | kcat -b "$B" -P -t "$KAFKA_TOPIC.dlq" -K $'\t' -H frameq-dlq-reason=permanent
}

# code_counts: how many codes of the main topic's batches were published how many times, as
# " COUNT TIMES" lines (" 100 1": 100 codes, each once).
code_counts() {
    read_topic "$KAFKA_TOPIC" | jq -r '.payload | fromjson | .items[0].code' | sort |
        uniq -c | awk '{ print $1 }' | sort | uniq -c | tr -s ' '
}

put_dlq() { # key value headers...
    local key=$1 value=$2
    shift 2
    local args=()
    for h in "$@"; do args+=(-H "$h"); done
    printf '%s\t%s\n' "$key" "$value" | kcat -b "$B" -P -t "$D" -K $'\t' "${args[@]}"
}
for i in 1 2 3 4; do
    put_dlq "ig:R$i" "{\"platform\":\"ig\",\"code\":\"R$i\"}" frameq-dlq-reason=permanent \
        frameq-error-stage=fetch frameq-error-class=permanent frameq-attempt=1 \
        frameq-failed-at=2026-11-28T10:00:00Z "frameq-error=HTTP 404"
done
put_dlq "ig:L1" '{"platform":"ig","code":"L1"}' frameq-dlq-reason=max-retries \
    frameq-error-stage=upload frameq-redrive-count=3
put_dlq "junk" 'not json {' frameq-dlq-reason=malformed frameq-error-stage=message

out=$("$producer" dlq list)
echo "$out"
grep -q "^6 dead messages in $D" <<<"$out" || fail "dlq list did not count 6"
grep -q "by reason: .*permanent=4" <<<"$out" || fail "dlq list counts by reason"

out=$("$producer" redrive --dry-run 2>/dev/null)
grep -q "^4 redriven (dry run" <<<"$out" || fail "dry run: $out"
[ "$(count_topic "$KAFKA_TOPIC")" = 0 ] || fail "dry run produced messages"

out=$("$producer" redrive --limit 2 2>"$work/err1")
echo "$out"
grep -q "^2 redriven to $KAFKA_TOPIC" <<<"$out" || fail "first --limit 2 run: $out"
out=$("$producer" redrive --limit 2 2>"$work/err2")
echo "$out"
grep -q "^2 redriven to $KAFKA_TOPIC" <<<"$out" || fail "second --limit 2 run: $out (dry run committed?)"
out=$("$producer" redrive --limit 2 2>"$work/err3")
echo "$out"
grep -q "^0 redriven" <<<"$out" || fail "third run redrove again: $out"
cat "$work/err1" "$work/err2" "$work/err3"
grep -q "skipped ig:L1 .*redriven 3 times already" "$work/err1" "$work/err2" "$work/err3" ||
    fail "loop guard not reported"
grep -q "skipped malformed entry" "$work/err1" "$work/err2" "$work/err3" ||
    fail "malformed entry not reported"

read_topic "$KAFKA_TOPIC" >"$work/rd.json"
[ "$(wc -l <"$work/rd.json")" = 4 ] || fail "main topic got $(wc -l <"$work/rd.json") messages, expected 4"
got=$(jq -r '.payload | fromjson | .items[] | .code' "$work/rd.json" | sort | tr '\n' ' ')
[ "$got" = "R1 R2 R3 R4 " ] || fail "redriven items are '$got', expected R1..R4 once each"
jq -e -s 'all(.[]; (.headers | index("frameq-redrive-count")) as $i | $i != null
          and .headers[$i + 1] == "1" and (.payload | fromjson | .items | length) == 1
          and (.payload | fromjson | .batch_id) == .key)' "$work/rd.json" >/dev/null ||
    fail "redriven messages lack frameq-redrive-count=1 or are not one-item batches"
out=$("$producer" redrive 2>/dev/null)
grep -q "^0 redriven" <<<"$out" || fail "a fourth run found work: $out"

step "another group starts over; --include-malformed redrives raw bytes as they are"
out=$("$producer" redrive --group "$run_id.other" --include-malformed --max-redrives 5 \
    --stage message 2>/dev/null)
echo "$out"
grep -q "^1 redriven to $KAFKA_TOPIC (6 read; skipped: 5 not matching" <<<"$out" ||
    fail "--include-malformed with --stage message: $out"
read_topic "$KAFKA_TOPIC" >"$work/rd2.json"
jq -e -s 'map(select(.payload == "not json {")) | length == 1 and
          (.[0].headers | index("frameq-redrive-count") as $i | .[$i + 1] == "1")' \
    "$work/rd2.json" >/dev/null || fail "malformed entry not redriven as is"

step "redrive --to retry with filters"
export KAFKA_TOPIC=$run_id.rt
"$producer" topics create --partitions 1 >/dev/null
D=$KAFKA_TOPIC.dlq
put_dlq "ig:T1" '{"platform":"ig","code":"T1"}' frameq-dlq-reason=max-retries \
    frameq-error-stage=upload frameq-error-class=retriable frameq-attempt=4 \
    frameq-origin-topic=orig frameq-failed-at=2026-11-28T10:00:00Z frameq-redrive-count=1
put_dlq "tt:T2" '{"platform":"tt","code":"T2"}' frameq-dlq-reason=max-retries \
    frameq-error-stage=upload frameq-failed-at=2026-11-28T10:00:00Z
put_dlq "ig:T3" '{"platform":"ig","code":"T3"}' frameq-dlq-reason=permanent \
    frameq-error-stage=fetch frameq-failed-at=2026-11-28T10:00:00Z
out=$("$producer" redrive --to retry --platform ig --reason max-retries \
    --failed-before 2026-11-28T11:00:00+00:00 --failed-after 2026-11-28T09:00:00Z)
echo "$out"
grep -q "^1 redriven to $KAFKA_TOPIC.retry .*2 not matching" <<<"$out" || fail "filters: $out"
read_topic "$KAFKA_TOPIC.retry" >"$work/rt.json"
[ "$(wc -l <"$work/rt.json")" = 1 ] || fail "retry topic got $(wc -l <"$work/rt.json") messages"
jq -e '.key == "ig:T1" and .payload == "{\"platform\":\"ig\",\"code\":\"T1\"}"
       and (.headers | . as $h | index("frameq-attempt") as $a | $h[$a + 1] == "0")
       and (.headers | . as $h | index("frameq-redrive-count") as $a | $h[$a + 1] == "2")
       and (.headers | . as $h | index("frameq-origin-topic") as $a | $h[$a + 1] == "orig")
       and (.headers | index("frameq-dlq-reason") == null)
       and (.headers | index("frameq-not-before") != null)' "$work/rt.json" >/dev/null ||
    fail "retry message wrong: $(cat "$work/rt.json")"

step "two concurrent redrives of one group: the newer fences the older, each message once"
dlq_of_100 fence F
"$producer" redrive --rate 20 >"$work/f1.out" 2>"$work/f1.err" &
slow=$!
# The second starts while the slow one is mid-way (a chunk committed, more to go), so they overlap.
until_midway "$slow" "$KAFKA_TOPIC"
"$producer" redrive >"$work/f2.out" 2>"$work/f2.err" || fail "second redrive: $(cat "$work/f2.err")"
rc=0
wait "$slow" || rc=$?
cat "$work/f1.out" "$work/f2.out"
# Fenced by the newer one: the older exits 1 and says why.
[ "$rc" = 1 ] || fail "the older redrive was not fenced: exit $rc: $(cat "$work/f1.out" "$work/f1.err")"
grep -qi "fenc" "$work/f1.err" || fail "the older redrive exited 1 without a fencing error: $(cat "$work/f1.err")"
counts=$(code_counts)
[ "$counts" = " 100 1" ] || fail "after concurrent redrives: '$counts' (count of codes x times)"

step "redrive killed with SIGKILL mid-way, then run again: each message once"
dlq_of_100 kill K
"$producer" redrive --rate 20 >/dev/null 2>&1 &
victim=$!
until_midway "$victim" "$KAFKA_TOPIC"
kill -KILL "$victim"
rc=0
wait "$victim" || rc=$?
[ "$rc" = 137 ] || fail "the SIGKILL did not land: the redrive exited $rc"
out=$("$producer" redrive 2>/dev/null) || fail "redrive after the kill failed"
echo "$out"
counts=$(code_counts)
[ "$counts" = " 100 1" ] || fail "after SIGKILL and a rerun: '$counts' (count of codes x times)"

step "progress lines: redrive, dlq list and enqueue; messages on a line of their own"
# --progress forces the line (stderr is not a terminal here); under script(1) stdout and
# stderr are a terminal, which turns it on by itself, except where rows go to that terminal.
dlq_of_100 progress P
D=$KAFKA_TOPIC.dlq
put_dlq "ig:PL" '{"platform":"ig","code":"PL"}' frameq-dlq-reason=max-retries \
    frameq-redrive-count=3 # the last message: skipped while the line shows
t0=$(date +%s%N)
"$producer" redrive --progress --rate 100 >"$work/p.out" 2>"$work/p.err" ||
    fail "redrive --progress: $(cat "$work/p.err")"
ms=$((($(date +%s%N) - t0) / 1000000))
el=$'\r\e[K'
# Each line of FILE (a drawn progress line: without its erasing prefix) that starts with REGEX.
lines() { tr '\r' '\n' <"$1" | sed 's/^\x1b\[K//' | grep -a "^$2"; }
n=$(lines "$work/p.err" "redrive: " | wc -l)
((n >= 3)) || fail "redrive drew $n progress lines over about 1 s, want several: $(cat -v "$work/p.err")"
# At most one every 200 ms, besides the first, the final one and the one after the skip message.
((n <= ms / 200 + 3)) || fail "redrive drew $n progress lines in $ms ms: not one per 200 ms"
pcts=$(lines "$work/p.err" "redrive: " | sed -E 's/^redrive: ([0-9]+)% of the DLQ read.*/\1/')
sort -n -c <<<"$pcts" || fail "the percentage went back: $(tr '\n' ' ' <<<"$pcts")"
last=$(lines "$work/p.err" "redrive: " | tail -n 1)
[[ $last == "redrive: 100% of the DLQ read, 101 messages, "*", ETA 0s, 100 redriven, 1 skipped" ]] ||
    fail "redrive's last progress line: '$last'"
tail -c 1 "$work/p.err" | od -c | grep -q '\\n' || fail "the last progress line does not end the output"
grep -aqF "${el}producer: skipped ig:PL " "$work/p.err" ||
    fail "the skip message did not erase the progress line first: $(cat -v "$work/p.err")"
if lines "$work/p.err" ".*producer: " | grep -av "^producer: "; then
    fail "a message was printed after the progress text: $(cat -v "$work/p.err")"
fi
grep -q "^100 redriven to $KAFKA_TOPIC (101 read" "$work/p.out" || fail "redrive: $(cat "$work/p.out")"

"$producer" dlq list --progress >"$work/l.out" 2>"$work/l.err" || fail "dlq list --progress"
last=$(lines "$work/l.err" "dlq list: " | tail -n 1)
[[ $last == "dlq list: 100% of the DLQ read, 101 messages, "*" messages/s, ETA 0s" ]] ||
    fail "dlq list's last progress line: '$last'"
# A transactional topic (the redrive's output: 100 messages and commit markers) is 100 % read
# at its end offset, past the last marker.
txn_topic=$KAFKA_TOPIC
KAFKA_TOPIC=$run_id.listing KAFKA_DLQ_TOPIC=$txn_topic \
    "$producer" dlq list --progress >/dev/null 2>"$work/m.err" ||
    fail "dlq list of a transactional topic: $(cat "$work/m.err")"
last=$(lines "$work/m.err" "dlq list: " | tail -n 1)
[[ $last == "dlq list: 100% of the DLQ read, 100 messages, "* ]] ||
    fail "a transactional topic's last progress line: '$last'"

seq 1 50 | sed 's/.*/{"platform":"ig","code":"E&"}/' >"$work/e.ndjson"
"$producer" --progress "$work/e.ndjson" >/dev/null 2>"$work/e.err" || fail "enqueue --progress"
last=$(lines "$work/e.err" "[0-9]*/50 items sent, " | tail -n 1)
[[ $last == "50/50 items sent, 50 delivered in 5 batches, "*" items/s, ETA 0s" ]] ||
    fail "enqueue's last progress line: '$(cat -v "$work/e.err")'"

# Not a terminal, no --progress: no line at all; --no-progress wins on a terminal.
"$producer" dlq list >/dev/null 2>"$work/q.err" || fail "dlq list"
"$producer" redrive --group "$run_id.quiet" --dry-run >/dev/null 2>>"$work/q.err" || fail "dry run"
if grep -aq $'\r' "$work/q.err"; then fail "a progress line without a terminal: $(cat -v "$work/q.err")"; fi
command -v script >/dev/null || fail "script(1) is required (bsdutils)"
script -qec "'$producer' redrive --group '$run_id.tty'" /dev/null >"$work/t1" </dev/null
grep -aqF "${el}redrive: 100% of the DLQ read, 101 messages" "$work/t1" ||
    fail "no progress line on a terminal: $(cat -v "$work/t1")"
script -qec "'$producer' dlq list" /dev/null >"$work/t2" </dev/null
if grep -aqF "${el}dlq list: " "$work/t2"; then
    fail "dlq list drew its line among its rows on the terminal: $(cat -v "$work/t2" | tail -n 3)"
fi
script -qec "'$producer' dlq list >'$work/t3.rows'" /dev/null >"$work/t3" </dev/null
grep -aqF "${el}dlq list: 100% of the DLQ read" "$work/t3" ||
    fail "dlq list to a file: no progress line on the terminal: $(cat -v "$work/t3")"
script -qec "'$producer' redrive --no-progress --group '$run_id.tty2'" /dev/null >"$work/t4" </dev/null
if grep -aqF "$el" "$work/t4"; then fail "--no-progress drew a line: $(cat -v "$work/t4")"; fi

# ---------------------------------------------------------------------------------------------
step "redrive sets redriven items 'queued' in the database (throwaway database)"
db="fqp_it_$$_$RANDOM"
psql "$admin_url" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $db" >/dev/null
db_url=$(sed -E "s#/[^/?]+(\?|$)#/$db\1#" <<<"$admin_url")
DATABASE_URL=$db_url "$consumer" --migrate >/dev/null 2>&1 || fail "consumer --migrate failed"
psql "$db_url" -v ON_ERROR_STOP=1 -qc "INSERT INTO extraction_items (platform, code, status, attempts)
    VALUES ('ig', 'DB1', 'dead', 4)" >/dev/null
export KAFKA_TOPIC=$run_id.db
"$producer" topics create --partitions 1 >/dev/null
D=$KAFKA_TOPIC.dlq
put_dlq "ig:DB1" '{"platform":"ig","code":"DB1"}' frameq-dlq-reason=max-retries frameq-attempt=4
put_dlq "ig:DB2" '{"platform":"ig","code":"DB2"}' frameq-dlq-reason=permanent frameq-attempt=1
out=$(DATABASE_URL=$db_url "$producer" redrive)
echo "$out"
grep -q "^2 redriven" <<<"$out" || fail "db redrive: $out"
st=$(psql "$db_url" -Atc "SELECT code || '=' || status FROM extraction_items ORDER BY code" | tr '\n' ' ')
[ "$st" = "DB1=queued DB2=queued " ] || fail "statuses after redrive: '$st'"

echo "PASS: producer integration"
