#!/usr/bin/env bash
# TLS on the real stack (deploy/local/tls.sh): PostgreSQL with sslmode=verify-full against the
# local CA, Kafka over the SSL listener, and the failures that prove both check something:
#   1. `consumer --migrate` over FRAMEQ_DATABASE_URL_TLS works and the session is SSL;
#   2. another CA fails certificate verification; a wrong host name fails under verify-full;
#   3. producer `topics create` + enqueue over SSL, then `consumer --once` over SSL (Kafka) and
#      verify-full (PostgreSQL) marks every item done;
#   4. the producer with another CA exits 1 within its --timeout and says why; so does one given
#      a name of 127.0.0.1 the certificate lacks (when the host has one); the SSL port refuses a
#      plaintext client.
# Needs the stack's environment (deploy/local/up, then `. .stack/env`); fails without it.
set -euo pipefail

BUILD=${FQ_BUILD_DIR:-}
# shellcheck source=tests/support/check.sh
. "$(dirname "${BASH_SOURCE[0]}")/../support/check.sh"
# shellcheck source=tests/support/consumer_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh" # fq_test_drop_kafka
die() {
    printf 'FAIL %s\n' "$*"
    exit 1
}

missing=()
for v in KAFKA_BROKERS DATABASE_URL FRAMEQ_TLS_CA FRAMEQ_KAFKA_SSL_BROKERS FRAMEQ_DATABASE_URL_TLS; do
    [[ -n ${!v:-} ]] || missing+=("$v")
done
((${#missing[@]} == 0)) ||
    die "environment of the local stack missing: ${missing[*]} (run deploy/local/up, then . .stack/env)"
[[ -f $FRAMEQ_TLS_CA ]] || die "FRAMEQ_TLS_CA=$FRAMEQ_TLS_CA is not a file"
[[ -n $BUILD && -x $BUILD/consumer && -x $BUILD/producer ]] ||
    die "FQ_BUILD_DIR must point at a build with the consumer and producer programs (got '$BUILD')"
for t in psql openssl ffmpeg kcat timeout; do
    command -v "$t" >/dev/null || die "$t not found"
done

id=tls-$$-$RANDOM
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fq-tls.XXXXXX")
db=fqt_tls_$$_$RANDOM
FQ_TEST_KAFKA_UNDER=("fqt.$id" "fqt-$id")
cleanup() {
    psql "$DATABASE_URL" -XqAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    fq_test_drop_kafka
    rm -rf "$tmp"
}
trap cleanup EXIT

# A throwaway database, made over the plain URL; the TLS URL is pointed at it.
psql "$DATABASE_URL" -XqAtc "CREATE DATABASE $db" >/dev/null || die "cannot create database $db"
tls_base=${FRAMEQ_DATABASE_URL_TLS%%\?*}
tls_query=${FRAMEQ_DATABASE_URL_TLS#*\?}
[[ $tls_query == *sslmode=verify-full* && $tls_query == *sslrootcert=* ]] ||
    die "FRAMEQ_DATABASE_URL_TLS does not ask for verify-full with a root certificate: $FRAMEQ_DATABASE_URL_TLS"
tls_url="${tls_base%/*}/$db?$tls_query"

# A second CA that signed nothing of ours.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/other-ca.key" \
    -out "$tmp/other-ca.crt" -days 2 -subj "/CN=some other CA" >/dev/null 2>&1 ||
    die "openssl could not make the throwaway CA"
other_url="${tls_base%/*}/$db?sslmode=verify-full&sslrootcert=$tmp/other-ca.crt"

ssl_of_session() { # URL -> t/f as PostgreSQL sees the session
    psql "$1" -XqAtc 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' 2>&1
}

# ---- 1. verify-full to PostgreSQL -----------------------------------------------------------
rc=0
DATABASE_URL=$tls_url timeout 120 "$BUILD/consumer" --migrate >"$tmp/migrate.log" 2>&1 || rc=$?
LOG="$tmp/migrate.log" check "consumer --migrate over verify-full exits 0 (got $rc)" test "$rc" -eq 0
check "the migration made extraction_items" \
    test "$(psql "$tls_url" -XqAtc "SELECT to_regclass('extraction_items') IS NOT NULL" 2>&1)" = t
check "PostgreSQL reports the verify-full session as SSL" test "$(ssl_of_session "$tls_url")" = t

# ---- 2. what verify-full refuses --------------------------------------------------------------
rc=0
DATABASE_URL=$other_url timeout 120 "$BUILD/consumer" --migrate >"$tmp/migrate-other-ca.log" 2>&1 || rc=$?
check "consumer --migrate with another CA fails (got $rc)" test "$rc" -ne 0
LOG="$tmp/migrate-other-ca.log" check "  ... with a certificate verification error" \
    grep -qi 'certificate verify failed' "$tmp/migrate-other-ca.log"
check "psql with another CA fails with a verification error" \
    bash -c 'psql "$1" -XqAtc "SELECT 1" 2>&1 | grep -qi "certificate verify failed"' _ "$other_url"

# The same address, the right CA: only the name differs between these two.
# postgresql://USER:PASSWORD@HOST:PORT/DB -> keywords with hostaddr and no host.
userinfo=${tls_base#*://}
userinfo=${userinfo%%@*}
hostport=${tls_base#*@}
hostport=${hostport%%/*}
kw="hostaddr=127.0.0.1 port=${hostport##*:} dbname=$db user=${userinfo%%:*} password=${userinfo#*:}"
kw="$kw sslmode=verify-full sslrootcert=$FRAMEQ_TLS_CA"
check "host=localhost hostaddr=127.0.0.1 verifies (control)" \
    test "$(ssl_of_session "host=localhost $kw")" = t
rc=0
ssl_of_session "host=wrong.example $kw" >"$tmp/psql-wrong-host.log" || rc=$?
LOG="$tmp/psql-wrong-host.log" check "psql to host=wrong.example fails (got $rc)" test "$rc" -ne 0
LOG="$tmp/psql-wrong-host.log" check "host=wrong.example hostaddr=127.0.0.1 fails: the name is checked" \
    grep -qi 'does not match host name "wrong.example"' "$tmp/psql-wrong-host.log"
rc=0
DATABASE_URL="host=wrong.example $kw" timeout 120 "$BUILD/consumer" --migrate \
    >"$tmp/migrate-wrong-host.log" 2>&1 || rc=$?
check "consumer --migrate with host=wrong.example fails (got $rc)" test "$rc" -ne 0
LOG="$tmp/migrate-wrong-host.log" check "  ... because the certificate does not name wrong.example" \
    grep -qi 'does not match host name "wrong.example"' "$tmp/migrate-wrong-host.log"

# ---- 3. Kafka over SSL end to end -------------------------------------------------------------
export KAFKA_TOPIC="fqt.$id" KAFKA_RETRY_TOPIC="fqt.$id.retry" KAFKA_DLQ_TOPIC="fqt.$id.dlq"
export KAFKA_GROUP_ID="fqt-$id" WORKER_ID="w-$id"
export METRICS_ADDR=off LOG_FORMAT=json LOG_LEVEL=info WORKER_CONCURRENCY=2 BATCH_SIZE=10
export MAX_RETRIES=1 RETRY_BACKOFF_MS=200 RETRY_BACKOFF_MAX_MS=1000 HTTP_TIMEOUT_MS=5000
ssl_env=(KAFKA_BROKERS="$FRAMEQ_KAFKA_SSL_BROKERS" KAFKA_CONFIG_SECURITY_PROTOCOL=SSL
    KAFKA_CONFIG_SSL_CA_LOCATION="$FRAMEQ_TLS_CA")

rc=0
env "${ssl_env[@]}" timeout 120 "$BUILD/producer" --timeout 30000 topics create --partitions 3 \
    >"$tmp/topics.log" 2>&1 || rc=$?
LOG="$tmp/topics.log" check "producer topics create over SSL exits 0 (got $rc)" test "$rc" -eq 0

mkdir -p "$tmp/videos" "$tmp/frames"
ffmpeg -nostdin -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=64x64:rate=1:duration=1 \
    -frames:v 1 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f mp4 "$tmp/videos/tiny.mp4" ||
    die "ffmpeg could not make tiny.mp4"
n_items=3
items=()
for i in $(seq 1 $n_items); do
    cp "$tmp/videos/tiny.mp4" "$tmp/videos/clip$i.mp4"
    items+=("{\"platform\":\"tls\",\"code\":\"clip$i\"}")
done
printf '[%s]\n' "$(
    IFS=,
    echo "${items[*]}"
)" >"$tmp/items.json"

rc=0
env "${ssl_env[@]}" timeout 120 "$BUILD/producer" --timeout 30000 --no-progress "$tmp/items.json" \
    >"$tmp/enqueue.log" 2>&1 || rc=$?
LOG="$tmp/enqueue.log" check "producer enqueue over SSL exits 0 (got $rc)" test "$rc" -eq 0
LOG="$tmp/enqueue.log" check "  ... and reports $n_items items delivered" \
    grep -q "$n_items items in 1 batch" "$tmp/enqueue.log"

batches() { # messages in the main topic, read over SSL
    kcat -b "$FRAMEQ_KAFKA_SSL_BROKERS" -X security.protocol=SSL -X ssl.ca.location="$FRAMEQ_TLS_CA" \
        -C -t "$KAFKA_TOPIC" -e -q -f '%o\n' 2>/dev/null | grep -c . || true
}
check "the main topic holds 1 batch (read with kcat over SSL)" test "$(batches)" -eq 1

rc=0
env "${ssl_env[@]}" DATABASE_URL="$tls_url" ALLOWED_SOURCE_SCHEMES=file \
    SOURCE_URL_TEMPLATE="file://$tmp/videos/{code}.mp4" \
    FRAMES_URL_TEMPLATE="file://$tmp/frames/{platform}/{code}/{index}.jpg" \
    timeout 180 "$BUILD/consumer" --once >"$tmp/worker.log" 2>&1 || rc=$?
LOG="$tmp/worker.log" check "consumer --once over SSL + verify-full exits 0 (got $rc)" test "$rc" -eq 0
check "$n_items items done in PostgreSQL" \
    test "$(psql "$tls_url" -XqAtc "SELECT count(*) FROM extraction_items WHERE status = 'done'" 2>&1)" = "$n_items"
check "no item in another state" \
    test "$(psql "$tls_url" -XqAtc "SELECT count(*) FROM extraction_items WHERE status <> 'done'" 2>&1)" = 0
check "$n_items frame files written" test "$(find "$tmp/frames" -name '*.jpg' | wc -l)" -eq "$n_items"

# ---- 4. what the SSL listener refuses -------------------------------------------------------
echo '[{"platform":"tls","code":"clip1"}]' >"$tmp/one.json"
rc=0
env "${ssl_env[@]}" KAFKA_CONFIG_SSL_CA_LOCATION="$tmp/other-ca.crt" timeout 60 "$BUILD/producer" \
    --timeout 5000 --no-progress --allow-duplicates "$tmp/one.json" >"$tmp/enqueue-other-ca.log" 2>&1 || rc=$?
check "producer with another CA exits 1 (got $rc)" test "$rc" -eq 1
LOG="$tmp/enqueue-other-ca.log" check "  ... and says the certificate did not verify" \
    grep -qi 'certificate verify failed' "$tmp/enqueue-other-ca.log"

# The broker's name is checked too (librdkafka >= 2.0 defaults ssl.endpoint.identification.algorithm
# to https). It needs a second name of 127.0.0.1, not in the certificate: the host name when
# /etc/hosts maps it there; otherwise this pair is not run (said so below).
alt=$(hostname 2>/dev/null || true)
if [[ -n $alt && $alt != localhost &&
    $(getent ahosts "$alt" 2>/dev/null | awk 'NR == 1 { print $1 }') == 127.0.0.1 ]]; then
    alt_env=(KAFKA_BROKERS="$alt:${FRAMEQ_KAFKA_SSL_BROKERS##*:}")
    rc=0
    env "${ssl_env[@]}" "${alt_env[@]}" timeout 60 "$BUILD/producer" --timeout 5000 topics create \
        >"$tmp/topics-alt-name.log" 2>&1 || rc=$?
    check "producer via $alt (the right CA, a name not in the certificate) exits 1 (got $rc)" \
        test "$rc" -eq 1
    LOG="$tmp/topics-alt-name.log" check "  ... and says the certificate did not verify" \
        grep -qi 'certificate verify failed' "$tmp/topics-alt-name.log"
    rc=0
    env "${ssl_env[@]}" "${alt_env[@]}" timeout 60 "$BUILD/producer" --timeout 5000 \
        -X ssl.endpoint.identification.algorithm=none topics create >"$tmp/topics-alt-noname.log" 2>&1 || rc=$?
    LOG="$tmp/topics-alt-noname.log" check "  ... while the name check off passes there (control, got $rc)" \
        test "$rc" -eq 0
else
    printf 'note: no second name for 127.0.0.1 here; the broker name check was not exercised\n'
fi

rc=0
KAFKA_BROKERS=$FRAMEQ_KAFKA_SSL_BROKERS timeout 60 "$BUILD/producer" --timeout 5000 --no-progress \
    --allow-duplicates "$tmp/one.json" >"$tmp/enqueue-plaintext.log" 2>&1 || rc=$?
check "a plaintext producer on the SSL port exits 1 (got $rc)" test "$rc" -eq 1
check "neither refused run published anything" test "$(batches)" -eq 1

check_summary
