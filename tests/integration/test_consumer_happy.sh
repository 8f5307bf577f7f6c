#!/usr/bin/env bash
# Happy path on the real stack: the real producer publishes 10 items (one batch); one
# `consumer --once` makes 10 done rows with their frames in S3, commits the group's offsets,
# routes nothing, exits 0.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

export BATCH_SIZE=10
cq_setup happy S3_ENDPOINT S3_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
prefix="fqt/$CQ_ID"
if [[ ${CQ_FRAMES:-s3} == s3 ]]; then
    export FRAMES_URL_TEMPLATE="s3://frameq-frames/$prefix/{platform}/{code}/{index}.jpg"
fi

items=()
for i in $(seq -w 0 9); do
    cp "$CQ_TMP/videos/tiny.mp4" "$CQ_TMP/videos/clip$i.mp4"
    items+=("$(cq_item happy "clip$i")")
done
cq_enqueue "[$(IFS=,; echo "${items[*]}")]"

rc=0
cq_consumer worker --once || rc=$?
cq_expect_eq "consumer --once exit code" "$rc" 0
cq_expect_eq "done items" "$(cq_sql "SELECT count(*) FROM extraction_items WHERE status='done' AND attempts=1 AND frame_count=1")" 10
cq_expect_eq "items in any other state" "$(cq_sql "SELECT count(*) FROM extraction_items WHERE status<>'done'")" 0
cq_expect_eq "frame rows" "$(cq_sql "SELECT count(*) FROM extraction_frames")" 10
cq_expect_eq "error rows" "$(cq_sql "SELECT count(*) FROM extraction_errors")" 0
cq_expect_eq "retry messages" "$(cq_count "$KAFKA_RETRY_TOPIC")" 0
cq_expect_eq "DLQ messages" "$(cq_count "$KAFKA_DLQ_TOPIC")" 0
cq_expect_eq "'item done' log lines" "$(grep -c '"outcome":"done"' "$CQ_TMP/worker.log")" 10
cq_expect_eq "uncommitted messages left for the group" "$(cq_uncommitted "$KAFKA_TOPIC")" 0

if [[ ${CQ_FRAMES:-s3} == s3 ]]; then
    # Every recorded frame URL is an object the S3 server serves (signed request; the server
    # wants the payload hash header, here the hash of an empty body).
    n=0
    while read -r url; do
        key=${url#s3://}
        code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:$S3_REGION:s3" \
            -u "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$S3_ENDPOINT/$key" \
            -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        [[ $code == 200 ]] || cq_fail "frame $url: HTTP $code"
        n=$((n + 1))
    done < <(cq_sql "SELECT url FROM extraction_frames")
    cq_expect_eq "frames readable in S3" "$n" 10
fi
cq_say "PASS"
