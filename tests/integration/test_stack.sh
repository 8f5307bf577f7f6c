#!/usr/bin/env bash
# The local stack's scripts: `up` is idempotent (a second run finds every service running),
# `status` reports all three healthy, and the env file names every variable the tests use, with
# values that really reach the services (S3 must also reject a wrong signature).
# Never stops the stack (`down` only to see refusals): the other tests share it.
set -euo pipefail

ROOT=${FQ_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# shellcheck source=tests/support/check.sh
. "$(dirname "${BASH_SOURCE[0]}")/../support/check.sh"

VARS=(KAFKA_BROKERS DATABASE_URL S3_ENDPOINT S3_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    FRAMEQ_STATE_DIR)
for v in "${VARS[@]}"; do
    if [[ -z ${!v:-} ]]; then
        printf 'FAIL %s is not set: run deploy/local/up and `. .stack/env` (or tests/run.sh)\n' "$v"
        exit 1
    fi
done
state=$FRAMEQ_STATE_DIR
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

up1_rc=0
"$ROOT/deploy/local/up" >"$tmp/up1" 2>&1 || up1_rc=$?
check "first up exits 0" test "$up1_rc" -eq 0
up2_rc=0
"$ROOT/deploy/local/up" >"$tmp/up2" 2>&1 || up2_rc=$?
check "second up exits 0" test "$up2_rc" -eq 0
for svc in kafka postgresql s3; do
    check "second up: $svc already running" grep -q "^$svc: already running" "$tmp/up2"
done
check "second up prints the env file" grep -q '^export KAFKA_BROKERS=' "$tmp/up2"

status_rc=0
"$ROOT/deploy/local/status" >"$tmp/status" 2>&1 || status_rc=$?
check "status exits 0" test "$status_rc" -eq 0
check "status lists 3 healthy services" test "$(grep -c ' healthy$' "$tmp/status")" -eq 3

# `down --crash` (the chaos runs' broker crash) names what it refuses before it stops anything.
for args in "--crash postgres" "--crash" "--crash --wipe"; do
    crash_rc=0
    # shellcheck disable=SC2086 # the words are split on purpose
    "$ROOT/deploy/local/down" $args >"$tmp/crash" 2>&1 || crash_rc=$?
    check "down $args refused" test "$crash_rc" -ne 0
    check "down $args says why" grep -q -- "--crash kills kafka or s3" "$tmp/crash"
done
check "still healthy after the refusals" test "$("$ROOT/deploy/local/status" 2>&1 | grep -c ' healthy$')" -eq 3

check "env file exists" test -f "$state/env"
for v in "${VARS[@]}"; do
    check "env file exports $v" grep -q "^export $v=." "$state/env"
done
# The env file and the environment the tests got must agree.
(
    for v in "${VARS[@]}"; do unset "$v"; done
    # shellcheck source=/dev/null
    . "$state/env"
    for v in "${VARS[@]}"; do printf '%s=%s\n' "$v" "${!v:-}"; done
) >"$tmp/file-env"
for v in "${VARS[@]}"; do printf '%s=%s\n' "$v" "${!v}"; done >"$tmp/test-env"
check "env file matches the test environment" cmp -s "$tmp/file-env" "$tmp/test-env"

# The values reach the real services.
check "kafka answers metadata at $KAFKA_BROKERS" \
    bash -c "kcat -b '$KAFKA_BROKERS' -L -m 10 2>/dev/null | grep -q 'broker'"
check "postgresql accepts DATABASE_URL" \
    bash -c "psql -X -At '$DATABASE_URL' -c 'SELECT 42' 2>/dev/null | grep -qx 42"
s3_status() { # s3_status SECRET PATH
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
        -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
        --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$1" "$S3_ENDPOINT$2"
}
check "s3 lists buckets with the right secret" test "$(s3_status "$AWS_SECRET_ACCESS_KEY" /)" = 200
check "s3 rejects a wrong secret with 403" test "$(s3_status "not-$AWS_SECRET_ACCESS_KEY" /)" = 403
for bucket in frameq-videos frameq-frames; do
    check "s3 bucket $bucket exists" test "$(s3_status "$AWS_SECRET_ACCESS_KEY" "/$bucket")" = 200
done

if ((fails > 0)); then
    printf -- '--- second up:\n%s\n--- status:\n%s\n' "$(cat "$tmp/up2")" "$(cat "$tmp/status")"
fi
check_summary
