#!/usr/bin/env bash
# test_secrets.sh — secrets never appear in anything the programs print: --print-config, --help,
# logs and error messages, on success and on failure paths (wrong S3 secret, unreachable
# database, unreachable broker, SASL settings). Every byte of stdout and stderr is grepped.
set -euo pipefail

build=${FQ_BUILD_DIR:?FQ_BUILD_DIR must be set (run through ctest)}
src=${FQ_SOURCE_DIR:?FQ_SOURCE_DIR must be set (run through ctest)}
: "${S3_ENDPOINT:?the local stack env is missing: run deploy/local/up and . .stack/env}"
: "${DATABASE_URL:?the local stack env is missing}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$work/all-output.txt
: >"$out"

# Distinctive secret values: any appearance in output is a leak.
s3_secret='S3cr3t-S3-f1e2d3c4b5a6'
db_password='Pg-Pa55word-9f8e7d'
sasl_password='Sasl-Pa55-0a1b2c3d'

# run NAME WANT PATTERN CMD... — appends the command's output to $out; WANT is "ok" (exit 0)
# or "fails" (exit non-zero: a failure path), PATTERN an extended regex its own output must
# match ("" for none), so every path the leak check reads is proven reached.
bad=0
run() {
    local name=$1 want=$2 pattern=$3 rc=0
    shift 3
    "$@" >"$work/run.out" 2>&1 </dev/null || rc=$?
    { echo "### $name (exit $rc)"; cat "$work/run.out"; } >>"$out"
    if [[ $want == ok && $rc != 0 || $want == fails && $rc == 0 ]]; then
        echo "FAIL: $name: exit $rc, expected $want: $(tail -n 3 "$work/run.out")"
        bad=1
    elif [[ -n $pattern ]] && ! grep -Eq -- "$pattern" "$work/run.out"; then
        echo "FAIL: $name: did not reach its path (no /$pattern/ in its output): $(tail -n 3 "$work/run.out")"
        bad=1
    fi
}

export AWS_ACCESS_KEY_ID=frameq-local
export AWS_SECRET_ACCESS_KEY=$s3_secret
export KAFKA_CONFIG_SASL_PASSWORD=$sasl_password
export KAFKA_CONFIG_SASL_USERNAME=frameq
export LOG_LEVEL=debug
bad_db="postgresql://frameq:$db_password@127.0.0.1:1/frameq?connect_timeout=2"

for prog in consumer producer; do
    run "$prog --print-config" ok 'AWS_SECRET_ACCESS_KEY' \
        env DATABASE_URL="$bad_db" "$build/$prog" --print-config
    run "$prog --print-config conninfo" ok 'DATABASE_URL' \
        env DATABASE_URL="host=127.0.0.1 password=$db_password dbname=x" "$build/$prog" --print-config
    run "$prog --help" ok 'usage|Usage' "$build/$prog" --help
    run "$prog -X" ok 'sasl' "$build/$prog" -X "sasl.password=$sasl_password" --print-config
done

# Failure paths that print error messages: wrong S3 secret on fetch, unreachable database.
mkdir -p "$work/frames"
run "process with a wrong S3 secret" fails 'SignatureDoesNotMatch|InvalidAccessKeyId' \
    env SOURCE_URL_TEMPLATE='s3://frameq-videos/{platform}/{code}.mp4' \
    FRAMES_URL_TEMPLATE="file://$work/frames/{platform}/{code}/{index}.jpg" \
    "$build/consumer" --process '{"platform":"instagram","code":"NoSuchVideo"}' --no-db
run "migrate with an unreachable database" fails 'PostgreSQL unreachable.*port 1 failed' \
    env DATABASE_URL="$bad_db" "$build/consumer" --migrate
run "redrive with an unreachable broker" fails '127\.0\.0\.1:1.*(refused|failed)' \
    env KAFKA_BROKERS=127.0.0.1:1 DATABASE_URL="$bad_db" \
    KAFKA_CONFIG_SASL_PASSWORD= KAFKA_CONFIG_SASL_USERNAME= \
    timeout 60 "$build/producer" redrive --dry-run --timeout 3000
((bad == 0)) || exit 1

# None of the output may contain a secret.
leaks=0
for s in "$s3_secret" "$db_password" "$sasl_password"; do
    if grep -n -- "$s" "$out"; then
        echo "FAIL: secret '$s' appears in program output (lines above)"
        leaks=1
    fi
done
[[ $leaks -eq 0 ]] || exit 1
echo "ok: $(grep -c '^###' "$out") runs, $(wc -l <"$out") lines of output, no secret printed"
