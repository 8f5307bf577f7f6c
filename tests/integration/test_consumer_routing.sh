#!/usr/bin/env bash
# Retry/DLQ routing against the real stack: an item that fails twice then works ends done at
# attempt 3 with two error rows and two retry messages; an always-failing item gets MAX_RETRIES
# retries then exactly one DLQ message with every header; a 404 goes straight to the DLQ; a
# malformed message reaches the DLQ byte for byte; each retry starts no earlier than its
# frameq-not-before.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

export MAX_RETRIES=3 RETRY_BACKOFF_MS=200 RETRY_BACKOFF_MAX_MS=2000
cq_setup routing

flaky=$(cq_item t flaky "$CQ_HTTP/flaky/2/flaky-$CQ_ID/tiny.mp4")
always=$(cq_item t always "$CQ_HTTP/500/tiny.mp4")
gone=$(cq_item t gone "$CQ_HTTP/404/tiny.mp4")
cq_produce 0 "$(cq_batch "$flaky" "$always" "$gone")"
head -c 512 /dev/urandom >"$CQ_TMP/malformed.bin"
kcat -b "$KAFKA_BROKERS" -P -t "$KAFKA_TOPIC" -p 1 -k "raw-key" "$CQ_TMP/malformed.bin" ||
    cq_fail "kcat could not produce the malformed message"

rc=0
cq_consumer worker --once || rc=$?
cq_expect_eq "consumer --once exit code (DLQ used)" "$rc" 1

# --- fails twice, then works
cq_expect_eq "flaky item status/attempts" "$(cq_sql "SELECT status, attempts FROM extraction_items WHERE code='flaky'")" "done|3"
cq_expect_eq "flaky error rows (FK joined)" "$(cq_sql "SELECT string_agg(e.attempt::text || ':' || e.stage || ':' || e.error_class, ',' ORDER BY e.attempt) FROM extraction_errors e JOIN extraction_items i ON i.id = e.item_id WHERE i.code='flaky'")" "1:fetch:retriable,2:fetch:retriable"
cq_expect_eq "flaky frames" "$(cq_sql "SELECT count(*) FROM extraction_frames f JOIN extraction_items i ON i.id=f.item_id WHERE i.code='flaky'")" 1
cq_read "$KAFKA_RETRY_TOPIC" >"$CQ_TMP/retry.jsonl"
cq_read "$KAFKA_DLQ_TOPIC" >"$CQ_TMP/dlq.jsonl"
attempts=$(grep '"key":"t:flaky"' "$CQ_TMP/retry.jsonl" | while read -r l; do cq_header "$l" frameq-attempt; done | sort | paste -sd,)
cq_expect_eq "flaky retry messages' frameq-attempt" "$attempts" "1,2"

# --- always failing (retriable): MAX_RETRIES retries, then one DLQ message
attempts=$(grep '"key":"t:always"' "$CQ_TMP/retry.jsonl" | while read -r l; do cq_header "$l" frameq-attempt; done | sort | paste -sd,)
cq_expect_eq "always-failing retry messages' frameq-attempt" "$attempts" "1,2,3"
cq_expect_eq "always-failing DLQ messages" "$(grep -c '"key":"t:always"' "$CQ_TMP/dlq.jsonl")" 1
line=$(grep '"key":"t:always"' "$CQ_TMP/dlq.jsonl")
cq_expect_eq "DLQ value is the item as received" "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["payload"])' "$line")" "$always"
declare -A want=(
    [frameq-attempt]=4 [frameq-dlq-reason]=max-retries [frameq-error-stage]=fetch
    [frameq-error-class]=retriable [frameq-origin-topic]=$KAFKA_TOPIC
    [frameq-origin-partition]=0 [frameq-origin-offset]=0 [frameq-worker]=$WORKER_ID
)
for h in "${!want[@]}"; do
    cq_expect_eq "DLQ header $h" "$(cq_header "$line" "$h")" "${want[$h]}"
done
err=$(cq_header "$line" frameq-error)
[[ -n $err && ${#err} -le 1024 ]] || cq_fail "frameq-error empty or longer than 1 KiB: '$err'"
for h in frameq-first-failed-at frameq-failed-at; do
    v=$(cq_header "$line" "$h")
    [[ $v =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$ ]] ||
        cq_fail "$h is not RFC 3339 UTC: '$v'"
done
first=$(cq_header "$line" frameq-first-failed-at)
last=$(cq_header "$line" frameq-failed-at)
[[ $first < $last ]] || cq_fail "first-failed-at ($first) not before failed-at ($last)"
[[ -z $(cq_header "$line" frameq-not-before) ]] || cq_fail "DLQ message carries frameq-not-before"
python3 -c '
import json, sys
h = json.loads(sys.argv[1])["headers"]
names = h[0::2]
dups = {n for n in names if names.count(n) > 1}
if dups: sys.exit("headers appended, not replaced: %s" % sorted(dups))
' "$line" || cq_fail "duplicate headers on the DLQ message"
cq_expect_eq "always-failing item" "$(cq_sql "SELECT status, attempts FROM extraction_items WHERE code='always'")" "dead|4"
cq_expect_eq "always-failing error rows" "$(cq_sql "SELECT count(*) FROM extraction_errors e JOIN extraction_items i ON i.id=e.item_id WHERE i.code='always'")" 4

# --- permanent (404): straight to the DLQ
cq_expect_eq "404 retry messages" "$(awk '/"key":"t:gone"/ { n++ } END { print n + 0 }' "$CQ_TMP/retry.jsonl")" 0
line=$(grep '"key":"t:gone"' "$CQ_TMP/dlq.jsonl")
cq_expect_eq "404 DLQ reason" "$(cq_header "$line" frameq-dlq-reason)" permanent
cq_expect_eq "404 DLQ attempt" "$(cq_header "$line" frameq-attempt)" 1
cq_expect_eq "404 item" "$(cq_sql "SELECT status, attempts FROM extraction_items WHERE code='gone'")" "dead|1"

# --- malformed: identical raw bytes and key
line=$(python3 -c '
import json, sys
for l in open(sys.argv[1]):
    m = json.loads(l); h = m.get("headers") or []
    if "malformed" in h[1::2]: print(l.strip()); break
' "$CQ_TMP/dlq.jsonl")
[[ -n $line ]] || cq_fail "no malformed message in the DLQ"
cq_expect_eq "malformed DLQ error-stage" "$(cq_header "$line" frameq-error-stage)" message
cq_expect_eq "malformed DLQ error-class" "$(cq_header "$line" frameq-error-class)" malformed
cq_expect_eq "malformed DLQ origin partition" "$(cq_header "$line" frameq-origin-partition)" 1
p=$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); print(m["partition"], m["offset"], m["key"])' "$line")
read -r part off key <<<"$p"
cq_expect_eq "malformed DLQ key" "$key" raw-key
kcat -b "$KAFKA_BROKERS" -X isolation.level=read_committed -C -t "$KAFKA_DLQ_TOPIC" -p "$part" -o "$off" -c 1 -q -f '%s' \
    -X isolation.level=read_committed >"$CQ_TMP/dlq.bin"
cmp "$CQ_TMP/malformed.bin" "$CQ_TMP/dlq.bin" || cq_fail "malformed DLQ value differs from the raw bytes"
cq_say "ok: malformed value identical ($(wc -c <"$CQ_TMP/dlq.bin") bytes)"

cq_expect_eq "DLQ messages in total" "$(grep -c . "$CQ_TMP/dlq.jsonl")" 3
cq_expect_eq "uncommitted messages left for the group" "$(cq_uncommitted "$KAFKA_TOPIC" "$KAFKA_RETRY_TOPIC")" 0

# --- backoff honoured: every retry attempt started at or after its frameq-not-before
python3 - "$CQ_TMP/retry.jsonl" "$CQ_TMP/worker.log" <<'PY' || cq_fail "backoff not honoured"
import datetime, json, sys
nb = {}
for l in open(sys.argv[1]):
    m = json.loads(l); h = m["headers"]; d = dict(zip(h[0::2], h[1::2]))
    nb[(m["key"], int(d["frameq-attempt"]) + 1)] = (int(d["frameq-not-before"]), d["frameq-failed-at"])
starts = {}
for l in open(sys.argv[2]):
    try: e = json.loads(l)
    except ValueError: continue
    if e.get("msg", "").startswith("retry attempt started"):
        ts = datetime.datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        starts[(e["item"], e["attempt"])] = int(ts.timestamp() * 1000)
bad = 0
for k, (not_before, failed_at) in sorted(nb.items()):
    if k not in starts:
        print("no start logged for", k); bad += 1; continue
    late = starts[k] - not_before
    print("# %s attempt %d: started %d ms after not-before" % (k[0], k[1], late), file=sys.stderr)
    if late < 0: bad += 1
if len(nb) != 5: print("want 5 retry messages, got", len(nb)); bad += 1
sys.exit(1 if bad else 0)
PY
cq_say "PASS"
