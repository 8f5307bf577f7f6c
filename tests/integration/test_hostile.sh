#!/usr/bin/env bash
# Hostile input through the real worker. Raw messages are produced with kcat (the producer
# rightly refuses them):
#   message level: a 10 MB batch, a batch of 100,000 items, deeply nested JSON, bytes that are
#     not JSON, and JSON that is not a batch (DESIGN §2: no items, 10,001 items, no schema, a
#     batch_id not a UUID, an enqueued_at not an RFC 3339 time) -> each one DLQ message, reason
#     malformed, with the identical raw bytes (cmp;
#     over 900000 bytes: the first 900000, with the original size and SHA-256 in headers);
#   item level: video_url at 127.0.0.1 (not allow-listed in this run), 169.254.169.254,
#     file:///etc/passwd, a redirect from the allowed host (localhost) to a disallowed one
#     (127.0.0.1), codes with ../, /, %2e, NUL, SQL, 10 KB -> each one DLQ message of class
#     permanent, no request reaches a disallowed target, no SQL runs;
# then a good batch enqueued with the producer must be done by the same, still running worker,
# and check_invariants.sh must find nothing lost.
set -euo pipefail
export LC_ALL=C
. "$(dirname "${BASH_SOURCE[0]}")/../chaos/lib.sh"

ch_require_env S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
ch_init hostile
ch_db hostile
ch_topics "hostile.$CH_RUN" 3
ch_tiny "$CH_TMP/videos"
cp "$CH_TMP/videos/tiny.mp4" "$CH_TMP/videos/secret.mp4"
ch_fault_server "$CH_TMP/videos"
port=${CH_HTTP##*:}

prefix="hostile/$CH_RUN"
export SOURCE_URL_TEMPLATE="s3://frameq-videos/$prefix/{platform}/{code}.mp4"
export FRAMES_URL_TEMPLATE="file://$CH_TMP/frames/{platform}/{code}/{index}.jpg"
# localhost is the allowed host; 127.0.0.1 (the same server) is not.
export ALLOWED_SOURCE_HOSTS=localhost
export MAX_RETRIES=3 RETRY_BACKOFF_MS=200 RETRY_BACKOFF_MAX_MS=2000
export WORKER_CONCURRENCY=2 METRICS_ADDR=off HTTP_TIMEOUT_MS=3000 SHUTDOWN_GRACE_MS=5000
export WORKER_ID="hostile-$CH_RUN"

"$CH_BUILD/consumer" 2>>"$CH_TMP/worker.log" &
worker=$!
CH_PIDS+=("$worker")

uuid() { cat /proc/sys/kernel/random/uuid; }
head_json() { printf '{"schema":"frameq.batch.v1","batch_id":"%s","enqueued_at":"2026-01-01T00:00:00Z","items":' "$(uuid)"; }

# --- message-level cases: raw files ---------------------------------------------------------
M="$CH_TMP/msg"
mkdir -p "$M"
{ # 10 MB: a well-formed batch padded past every size limit
    head_json
    printf '[{"platform":"h","code":"big1","pad":"'
    head -c $((10 * 1024 * 1024)) /dev/zero | tr '\0' 'A'
    printf '"}]}'
} >"$M/big10mb"
{ # 100,000 valid items in one batch
    head_json
    python3 -c '
import sys
sys.stdout.write(",".join("{\"platform\":\"h\",\"code\":\"m%06d\"}" % i for i in range(100000)))' |
        sed 's/^/[/'
    printf ']}'
} >"$M/items100k"
{ # 100,000 levels of nesting inside an item
    head_json
    printf '[{"platform":"h","code":"nest1","x":'
    python3 -c 'import sys; sys.stdout.write("[" * 100000 + "]" * 100000)'
    printf '}]}'
} >"$M/nested"
{ # not JSON: binary bytes with NULs, then a truncated object
    head -c 4096 /dev/urandom
    printf '\0\0\0{"schema":"frameq.batch.v1","items":[{'
} >"$M/notjson"
# Not a batch by DESIGN §2, though JSON: no items, too many items, no schema, a batch_id or an
# enqueued_at that is present but not a UUID / an RFC 3339 time.
printf '{"schema":"frameq.batch.v1","batch_id":"x","items":[]}' >"$M/empty_x"
{
    head_json
    printf '[]}'
} >"$M/empty"
{
    head_json
    python3 -c '
import sys
sys.stdout.write("[" + ",".join("{\"platform\":\"h\",\"code\":\"n%05d\"}" % i for i in range(10001)) + "]}")'
} >"$M/items10001"
printf '{"batch_id":"%s","items":[{"platform":"h","code":"noschema1"}]}' "$(uuid)" >"$M/noschema"
printf '{"schema":"frameq.batch.v1","batch_id":"not-a-uuid","enqueued_at":"2026-01-01T00:00:00Z","items":[{"platform":"h","code":"badid1"}]}' >"$M/badid"
printf '{"schema":"frameq.batch.v1","batch_id":"%s","enqueued_at":"yesterday","items":[{"platform":"h","code":"badtime1"}]}' "$(uuid)" >"$M/badtime"
malformed=(big10mb items100k nested notjson empty_x empty items10001 noschema badid badtime)

# --- item-level cases -----------------------------------------------------------------------
# URL cases have valid keys: they must end 'dead' in PostgreSQL with one DLQ message each.
redir_target=$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=""))' \
    "http://127.0.0.1:$port/ok/secret.mp4")
url_items=(
    "{\"platform\":\"h\",\"code\":\"url-loopback\",\"video_url\":\"http://127.0.0.1:$port/ok/secret.mp4\"}"
    '{"platform":"h","code":"url-metadata","video_url":"http://169.254.169.254/latest/meta-data/iam/"}'
    '{"platform":"h","code":"url-file","video_url":"file:///etc/passwd"}'
    "{\"platform\":\"h\",\"code\":\"url-redirect\",\"video_url\":\"http://localhost:$port/redirect-to/$redir_target\"}"
)
long_code=$(head -c 10240 /dev/zero | tr '\0' 'A')
sql="x'); DROP TABLE extraction_items; --"
code_items=(
    '{"platform":"h","code":"../../etc/passwd"}'
    '{"platform":"h","code":"a/b"}'
    '{"platform":"h","code":"%2e%2e%2fx"}'
    "{\"platform\":\"h\",\"code\":\"$sql\"}"
    "{\"platform\":\"h\",\"code\":\"$long_code\"}"
    "{\"platform\":\"h'; DROP TABLE extraction_frames; --\",\"code\":\"ok1\"}"
)
n_code=${#code_items[@]}
join_items() {
    local IFS=,
    echo "$*"
}
{
    head_json
    printf '[%s]}' "$(join_items "${url_items[@]}")"
} >"$M/urls"
{
    head_json
    printf '[%s]}' "$(join_items "${code_items[@]}")"
} >"$M/codes"
# NUL inside a code, alone in its batch: either the item (permanent/validate) or the whole
# message (malformed) may be refused, never a partial read of "a".
{
    head_json
    printf '[{"platform":"h","code":"a\\u0000b"}]}'
} >"$M/nul"

for f in "${malformed[@]}" urls codes nul; do
    kcat -b "$KAFKA_BROKERS" -P -t "$KAFKA_TOPIC" -z gzip -X message.max.bytes=20000000 \
        "$M/$f" || ch_fail "kcat could not produce $f"
done
ch_say "produced ${#malformed[@]} malformed messages and item batches ($(stat -c %s "$M/big10mb") + $(stat -c %s "$M/items100k") bytes)"

# The good batch, through the producer, after the hostile ones.
: >"$CH_TMP/good.ndjson"
for i in 1 2 3 4 5; do
    printf '{"platform":"h","code":"good%d"}\n' "$i" >>"$CH_TMP/good.ndjson"
    echo "good$i"
done >"$CH_TMP/good.codes"
ch_s3_put_many "$CH_TMP/videos/tiny.mp4" "frameq-videos/$prefix/h" <"$CH_TMP/good.codes"
ch_enqueue "$CH_TMP/good.ndjson"

# --- wait: good items done, URL items dead, DLQ complete --------------------------------------
want_dlq=$((${#malformed[@]} + ${#url_items[@]} + n_code + 1))
dlq_count() {
    kcat -b "$KAFKA_BROKERS" -X isolation.level=read_committed -C -t "$KAFKA_DLQ_TOPIC" -p 0 -o beginning -e -q \
        -X isolation.level=read_committed -f '%o\n' 2>/dev/null | grep -c . || true
}
t0=$SECONDS
while ((SECONDS - t0 < ${HOSTILE_WAIT_S:-150})); do
    kill -0 "$worker" 2>/dev/null || ch_fail "the worker died (see worker.log)"
    n_good=$(ch_sql "SELECT count(*) FROM extraction_items WHERE code LIKE 'good%' AND status IN ('done','dead')" 2>/dev/null || echo 0)
    n_dlq=$(dlq_count)
    [[ $n_good == 5 && $n_dlq -ge $want_dlq ]] && break
    sleep 0.5
done
ch_say "after $((SECONDS - t0)) s: good items terminal $n_good/5, DLQ messages $n_dlq (want $want_dlq)"
fails=()
check() { # WHAT CONDITION...
    local what=$1
    shift
    if "$@"; then
        echo "ok   $what"
    else
        echo "FAIL $what"
        fails+=("$what")
    fi
}

check "worker still running after the hostile input" kill -0 "$worker"
ch_sql "SELECT code, status, left(last_error, 120) FROM extraction_items WHERE code LIKE 'good%' AND status <> 'done'" |
    sed 's/^/     not done: /'
check "5 good items done after the hostile ones" \
    test "$(ch_sql "SELECT count(*) FROM extraction_items WHERE code LIKE 'good%' AND status = 'done'")" = 5
check "exactly $want_dlq DLQ messages (got $n_dlq)" test "$n_dlq" = "$want_dlq"
check "tables intact after the SQL codes" \
    test "$(ch_sql "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'extraction_%'")" = 3
check "no row for an invalid code" \
    test "$(ch_sql "SELECT count(*) FROM extraction_items WHERE code NOT LIKE 'good%' AND code NOT LIKE 'url-%'")" = 0

# Raw bytes of every DLQ message (one partition), with their headers.
kcat -b "$KAFKA_BROKERS" -X isolation.level=read_committed -C -t "$KAFKA_DLQ_TOPIC" -p 0 -o beginning -e -q \
    -f '%o %S\n' >"$CH_TMP/dlq.index" 2>"$CH_TMP/kcat.err" ||
    ch_fail "reading the DLQ's offsets failed: $(head -c 300 "$CH_TMP/kcat.err")"
ch_dlq_json >"$CH_TMP/dlq.json"
mkdir -p "$CH_TMP/dlq"
while read -r off size; do
    kcat -b "$KAFKA_BROKERS" -X isolation.level=read_committed -C -t "$KAFKA_DLQ_TOPIC" -p 0 -o "$off" -c 1 -e -q \
        -f '%s' >"$CH_TMP/dlq/$off" 2>"$CH_TMP/kcat.err" ||
        ch_fail "reading DLQ message $off failed: $(head -c 300 "$CH_TMP/kcat.err")"
done <"$CH_TMP/dlq.index"

# header OFFSET NAME
header() {
    python3 - "$CH_TMP/dlq.json" "$1" "$2" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if str(m.get("offset")) != sys.argv[2]:
        continue
    h = m.get("headers") or []
    vals = [h[i + 1] for i in range(0, len(h) - 1, 2) if h[i] == sys.argv[3]]
    print(vals[-1] if vals else "")
EOF
}
# find_raw FILE: the DLQ offset holding exactly FILE's bytes.
find_raw() {
    local f
    for f in "$CH_TMP"/dlq/*; do
        if cmp -s "$f" "$1"; then
            basename "$f"
            return 0
        fi
    done
    return 1
}
# A message over FQ_DLQ_VALUE_MAX (900000 bytes, kafka/fq_headers.h) cannot be stored in a
# DLQ with default limits: its DLQ value is its first 900000 bytes, with its size and SHA-256
# in frameq-original-size / frameq-original-sha256 (the whole message stays at its origin).
dlq_value_max=900000
for f in "${malformed[@]}"; do
    size=$(stat -c %s "$M/$f")
    if ((size > dlq_value_max)); then
        head -c "$dlq_value_max" "$M/$f" >"$CH_TMP/$f.prefix"
        off=$(find_raw "$CH_TMP/$f.prefix" || true)
        if [[ -z $off ]]; then
            check "$f: in the DLQ as its first $dlq_value_max bytes ($size bytes)" false
            continue
        fi
        check "$f: in the DLQ as its first $dlq_value_max bytes (offset $off)" true
        osize=$(header "$off" frameq-original-size) osha=$(header "$off" frameq-original-sha256)
        sha=$(sha256sum "$M/$f" | cut -d' ' -f1)
        check "$f: original size and SHA-256 in headers ($osize)" \
            test "$osize/$osha" = "$size/$sha"
        r=$(header "$off" frameq-dlq-reason) c=$(header "$off" frameq-error-class)
        check "$f: reason malformed, class malformed (got $r, $c)" test "$r/$c" = malformed/malformed
        continue
    fi
    off=$(find_raw "$M/$f" || true)
    if [[ -z $off ]]; then
        check "$f: in the DLQ with identical raw bytes ($(stat -c %s "$M/$f") bytes)" false
        continue
    fi
    check "$f: in the DLQ with identical raw bytes ($(stat -c %s "$M/$f") bytes, offset $off)" true
    r=$(header "$off" frameq-dlq-reason) c=$(header "$off" frameq-error-class)
    check "$f: reason malformed, class malformed (got $r, $c)" test "$r/$c" = malformed/malformed
done

# Item-level: find each item's DLQ message by its code in the value (the item as received).
python3 - "$CH_TMP/dlq" "$CH_TMP/dlq.json" >"$CH_TMP/items.out" <<'EOF'
import json, os, sys
heads = {}
for line in open(sys.argv[2]):
    if line.startswith("{"):
        m = json.loads(line)
        h = m.get("headers") or []
        heads[str(m["offset"])] = {h[i]: h[i + 1] for i in range(0, len(h) - 1, 2)}
for off in sorted(os.listdir(sys.argv[1]), key=int):
    raw = open(os.path.join(sys.argv[1], off), "rb").read()
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError):
        continue
    if not isinstance(item, dict) or "code" not in item:
        continue
    h = heads.get(off, {})
    code = item["code"] if isinstance(item["code"], str) else repr(item["code"])
    code = code.replace("\0", "<NUL>")
    if len(code) > 64:
        code = "%s...(%d chars)" % (code[:8], len(code))
    print("%s\t%s\t%s\t%s\t%s" % (code, item.get("platform"), h.get("frameq-error-class"),
                                  h.get("frameq-error-stage"), h.get("frameq-dlq-reason")))
EOF
sed 's/^/     dlq item: /' "$CH_TMP/items.out"
# item_seen CODE_PREFIX CLASS STAGE_REGEX: exactly one DLQ item with that code and outcome.
item_seen() {
    local n
    n=$(awk -F'\t' -v c="$1" -v k="$2" -v s="$3" \
        'index($1, c) == 1 && $3 == k && $4 ~ ("^(" s ")$") && $5 == "permanent"' \
        "$CH_TMP/items.out" | wc -l)
    [[ $n == 1 ]]
}
for c in url-loopback url-metadata url-file url-redirect; do
    check "$c: one DLQ message, permanent (validate or fetch refusal)" item_seen "$c" permanent 'validate|fetch'
done
for c in ../../etc/passwd a/b %2e%2e%2fx "x');" "AAAAAAAA...(10240"; do
    check "code '$c': one DLQ message, permanent/validate" item_seen "$c" permanent validate
done
check "platform with SQL: one DLQ message, permanent/validate" item_seen ok1 permanent validate
# The NUL case: refused as an item or as a whole message, once.
nul_off=$(find_raw "$M/nul" || true)
if [[ -n $nul_off ]]; then
    check "NUL code: whole message malformed (raw bytes kept)" \
        test "$(header "$nul_off" frameq-dlq-reason)" = malformed
else
    check "NUL code: one DLQ message, permanent/validate" item_seen "a<NUL>b" permanent validate
fi

# No request reached a disallowed target; the allowed host was contacted for the redirect.
counts=$(curl -s "$CH_HTTP/counts")
echo "     fault server requests: $counts"
check "nothing fetched from 127.0.0.1 directly or through the redirect" \
    python3 -c 'import json,sys; c=json.loads(sys.argv[1]); sys.exit(any("secret" in k and not k.startswith("/redirect-to/") for k in c))' "$counts"
check "the redirect was followed as far as the allowed host" \
    python3 -c 'import json,sys; c=json.loads(sys.argv[1]); sys.exit(not any(k.startswith("/redirect-to/") for k in c))' "$counts"

# Nothing lost: the good items and the URL items (valid keys) pass the checker.
{
    cat "$CH_TMP/good.ndjson"
    printf '%s\n' "${url_items[@]}"
} >"$CH_TMP/checked.ndjson"
check "invariants: $(ch_run_checker "$CH_TMP/checked.ndjson" 2>&1 | tail -1)" \
    ch_run_checker "$CH_TMP/checked.ndjson"

# The worker stops cleanly on SIGTERM.
kill -TERM "$worker"
rc=0
if timeout 30 tail --pid="$worker" -f /dev/null; then
    wait "$worker" || rc=$?
    check "worker exits 0 on SIGTERM (got $rc)" test "$rc" = 0
else
    check "worker exits within 30 s of SIGTERM" false
    kill -KILL "$worker"
fi

if ((${#fails[@]})); then
    ch_fail "${#fails[@]} hostile-input check(s) failed"
fi
echo "PASS: hostile input ($want_dlq DLQ messages, worker alive, good batch done)"
