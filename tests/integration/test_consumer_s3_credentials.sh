#!/usr/bin/env bash
# A wrong S3 secret is an outage of the configured endpoint, not the items' fault (DESIGN §3):
# with AWS_SECRET_ACCESS_KEY wrong, the worker's dependency probe finds it before any message
# runs: the worker reports not-ready (/readyz 503), takes no message, routes nothing
# (no retry, no DLQ message), writes no extraction_errors row and burns no attempt; restarted
# with the right secret it does every item, each in one attempt.
#
# Two paths meet the wrong secret: the s3:// source (signed GET, SOURCE_URL_TEMPLATE) and the
# s3:// frame store (signed PUT, FRAMES_URL_TEMPLATE) for items whose video_url is on the
# fault server.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

cq_setup s3creds S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
command -v curl >/dev/null || cq_fail "curl not found"
prefix="creds/$CQ_ID"
export SOURCE_URL_TEMPLATE="s3://frameq-videos/$prefix/{platform}/{code}.mp4"
export FRAMES_URL_TEMPLATE="s3://frameq-frames/$prefix/{platform}/{code}/{index}.jpg"
export ALLOWED_SOURCE_HOSTS="127.0.0.1:$CQ_PORT"
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export METRICS_ADDR="127.0.0.1:$metrics_port"

# The source videos, PUT with the right secret (curl signs them itself).
s3_put() { # BUCKET/KEY FILE
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 -X PUT --data-binary "@$2" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 "aws:amz:${S3_REGION:-us-east-1}:s3" \
        --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$S3_ENDPOINT/$1")
    [[ $code == 200 ]] || cq_fail "PUT $1: HTTP $code"
}
for c in s1 s2 s3; do
    s3_put "frameq-videos/$prefix/k/$c.mp4" "$CQ_TMP/videos/tiny.mp4"
done

readyz() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$METRICS_ADDR/readyz" || true; }
# wait_readyz WANT TIMEOUT_S
wait_readyz() {
    local i got=
    for ((i = 0; i < $2 * 5; i++)); do
        got=$(readyz)
        [[ $got == "$1" ]] && return 0
        sleep 0.2
    done
    cq_fail "/readyz did not answer $1 within $2 s (last: '$got')"
}

right_secret=$AWS_SECRET_ACCESS_KEY
# expect_nothing_burned LOG: the outage left no trace on the items.
expect_nothing_burned() {
    cq_expect_eq "/readyz while the secret is wrong" "$(readyz)" 503
    cq_expect_eq "DLQ messages with the wrong secret" "$(cq_count "$KAFKA_DLQ_TOPIC")" 0
    cq_expect_eq "retry messages with the wrong secret" "$(cq_count "$KAFKA_RETRY_TOPIC")" 0
    cq_expect_eq "extraction_errors rows with the wrong secret" \
        "$(cq_sql "SELECT count(*) FROM extraction_errors")" 0
    cq_expect_eq "items retrying, dead or done with the wrong secret" \
        "$(cq_sql "SELECT count(*) FROM extraction_items WHERE status IN ('retrying','dead','done')")" 0
    cq_expect_eq "the wrong secret in the log" "$(grep -c -- "not-$right_secret" "$CQ_TMP/$1.log" || true)" 0
}
# wait_log LOG PATTERN TIMEOUT_S
wait_log() {
    local t0=$SECONDS
    while ((SECONDS - t0 < $3)); do
        grep -q -- "$2" "$CQ_TMP/$1.log" && return 0
        sleep 0.2
    done
    cq_fail "$1.log: no line matching '$2' within $3 s"
}
stop_worker() { # PID
    kill -TERM "$1"
    local rc=0
    wait "$1" || rc=$?
    cq_expect_eq "exit code of the worker after SIGTERM" "$rc" 0
}
fetches() { # fault-server requests of /ok/tiny.mp4
    curl -s --max-time 5 "$CQ_HTTP/counts" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("/ok/tiny.mp4", 0))'
}

# --- upload path: video_urls on the fault server, frames to s3:// with the wrong secret -------
topic_a=$KAFKA_TOPIC
AWS_SECRET_ACCESS_KEY="not-$right_secret" cq_consumer_bg wrong_upload
worker=$CQ_LAST_PID
cq_produce 0 "$(cq_batch "$(cq_item k h1 "$CQ_HTTP/ok/tiny.mp4")" "$(cq_item k h2 "$CQ_HTTP/ok/tiny.mp4")")"
wait_readyz 503 60
wait_log wrong_upload '"msg":"outage: pausing.*S3 authentication failed (HTTP 403 SignatureDoesNotMatch) for s3://frameq-frames/' 30
cq_say "ok: /readyz 503, outage logged for the s3:// frame store"
# The dependency prober found the refusal before any message ran: the worker holds its
# partitions paused and fetches nothing until the endpoint accepts it.
cq_expect_eq "source fetches while the frame store refuses the worker" "$(fetches)" 0
expect_nothing_burned wrong_upload
stop_worker "$worker"

# --- fetch path: s3:// source with the wrong secret (its own topics, so it is the only work) --
export KAFKA_TOPIC="$topic_a.b" KAFKA_RETRY_TOPIC="$topic_a.b.retry" KAFKA_DLQ_TOPIC="$topic_a.b.dlq"
cq_create_topics "$KAFKA_TOPIC" "$KAFKA_RETRY_TOPIC" "$KAFKA_DLQ_TOPIC"
# Frames to files here, so the s3:// source is the only bucket the worker needs.
AWS_SECRET_ACCESS_KEY="not-$right_secret" FRAMES_URL_TEMPLATE="file://$CQ_TMP/frames/{platform}/{code}/{index}.jpg" \
    cq_consumer_bg wrong_fetch
worker=$CQ_LAST_PID
cq_produce 1 "$(cq_batch "$(cq_item k s1)" "$(cq_item k s2)" "$(cq_item k s3)")"
wait_readyz 503 60
wait_log wrong_fetch '"msg":"outage: pausing.*S3 authentication failed (HTTP 403 SignatureDoesNotMatch) for s3://frameq-videos/' 30
cq_say "ok: /readyz 503, outage logged for the s3:// source"
expect_nothing_burned wrong_fetch
stop_worker "$worker"

# --- the right secret again: every item done, each in one attempt -----------------------------
cq_say "restarting with the right secret"
for topic in "$topic_a" "$topic_a.b"; do
    export KAFKA_TOPIC=$topic KAFKA_RETRY_TOPIC=$topic.retry KAFKA_DLQ_TOPIC=$topic.dlq
    AWS_SECRET_ACCESS_KEY=$right_secret cq_consumer_bg "right_${topic##*.}"
    worker=$CQ_LAST_PID
    wait_readyz 200 30
    want=$([[ $topic == "$topic_a" ]] && echo 2 || echo 5)
    cq_wait_sql "SELECT count(*) FROM extraction_items WHERE status='done'" "$want" 90
    cq_expect_eq "DLQ messages of $topic" "$(cq_count "$KAFKA_DLQ_TOPIC")" 0
    cq_expect_eq "retry messages of $topic" "$(cq_count "$KAFKA_RETRY_TOPIC")" 0
    stop_worker "$worker"
    cq_expect_eq "uncommitted messages left for the group on $topic" "$(cq_uncommitted "$KAFKA_TOPIC")" 0
done
cq_expect_eq "attempts burned" "$(cq_sql "SELECT count(*) FROM extraction_items WHERE attempts <> 1")" 0
cq_expect_eq "extraction_errors rows" "$(cq_sql "SELECT count(*) FROM extraction_errors")" 0
cq_expect_eq "frames stored in S3" \
    "$(cq_sql "SELECT count(*) FROM extraction_frames WHERE url LIKE 's3://frameq-frames/$prefix/%'")" 5
cq_say "PASS"
