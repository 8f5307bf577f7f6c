#!/usr/bin/env bash
# The container image, built and run (label image). Builds deploy/docker/Dockerfile with podman
# (deploy/docker/podman-local: runc, local debian:12 base images, storage in the cache, so a
# rerun only rebuilds what changed), then:
#   - prints the image size and fails above FQ_IMAGE_MAX_MB (default 150);
#   - the image's user is 10001:10001;
#   - `consumer --migrate` from the image makes the schema in a throwaway database;
#   - the image's producer publishes a batch of two items (a video and a file that is no video)
#     and a worker from the image, with a read-only root and /tmp on a tmpfs (as in Kubernetes),
#     --network host against the local stack, takes them to done (frames in S3) and to the DLQ
#     (reason permanent); while it runs its process has uid 10001, the root file system refuses
#     writes even from root, /readyz answers 200; SIGTERM stops it with exit code 0;
#   - `consumer --process` from the image extracts frames from a clip of each supported codec
#     (h264, hevc, mpeg4 in mp4; vp8, vp9 in webm; AV1 in matroska), and refuses formats that the
#     image's FFmpeg leaves out (mpeg2video in matroska, an AVI file) as permanent errors.
# Env: the local stack's (. .stack/env); FQ_IMAGE_MAX_MB; FQ_IMAGE_TAG (default frameq:test).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

podman=$CQ_SRC/deploy/docker/podman-local
tag=${FQ_IMAGE_TAG:-frameq:test}
max_mb=${FQ_IMAGE_MAX_MB:-150}
started=$SECONDS

for v in KAFKA_BROKERS DATABASE_URL S3_ENDPOINT S3_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
    [[ -n ${!v:-} ]] || cq_fail "$v is not set (deploy/local/up, then . .stack/env)"
done
for t in podman kcat psql ffmpeg curl python3; do
    command -v "$t" >/dev/null || cq_fail "$t not found (deploy/local/install-packages)"
done

CQ_ID="image-$$-$RANDOM"
FQ_TEST_KAFKA_UNDER+=("fqt.$CQ_ID" "fqt-$CQ_ID") # its topics and group, deleted by cq_cleanup
CQ_TMP=$(mktemp -d "${TMPDIR:-/tmp}/fq-image.XXXXXX")
worker="fqt-$CQ_ID"
cleanup() {
    "$podman" rm -f -t 0 "$worker" >/dev/null 2>&1 || true
    cq_cleanup
}
trap cleanup EXIT
# A failure shows the worker container's log too.
eval "$(declare -f cq_fail | sed '1s/^cq_fail/cq_fail_base/')"
cq_fail() {
    "$podman" logs "$worker" >"$CQ_TMP/worker.log" 2>&1 || true
    cq_fail_base "$@"
}
step() { cq_say "[$((SECONDS - started))s] $*"; }

# ---- build ----------------------------------------------------------------------------------
step "building $tag (podman, deploy/docker/Dockerfile; log: build.log)"
"$podman" build --pull=never --ignorefile "$CQ_SRC/deploy/docker/Dockerfile.dockerignore" \
    -f "$CQ_SRC/deploy/docker/Dockerfile" -t "$tag" "$CQ_SRC" >"$CQ_TMP/build.log" 2>&1 ||
    cq_fail "podman build failed"
step "built"

bytes=$("$podman" image inspect --format '{{.Size}}' "$tag")
mb=$(((bytes + 500000) / 1000000))
echo "image size: $mb MB ($bytes bytes), limit $max_mb MB"
((mb <= max_mb)) || cq_fail "the image is $mb MB, over the $max_mb MB limit"
cq_expect_eq "image user" "$("$podman" image inspect --format '{{.Config.User}}' "$tag")" "10001:10001"

# run_image ARGS...: the image on the host's network with the stack's environment.
run_image() {
    "$podman" run --rm --network host -e KAFKA_BROKERS -e DATABASE_URL -e S3_ENDPOINT \
        -e S3_REGION -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e LOG_FORMAT=json \
        -e METRICS_ADDR=off "$@"
}

# ---- migrate --------------------------------------------------------------------------------
CQ_ADMIN_URL=$DATABASE_URL
CQ_DB="fqt_image_$$_$RANDOM"
psql "$CQ_ADMIN_URL" -qAtc "CREATE DATABASE $CQ_DB" >/dev/null || cq_fail "cannot create $CQ_DB"
export DATABASE_URL="${CQ_ADMIN_URL%/*}/$CQ_DB"
run_image "$tag" --migrate >"$CQ_TMP/migrate.log" 2>&1 || cq_fail "consumer --migrate (image)"
cq_expect_eq "tables after --migrate" \
    "$(cq_sql "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('extraction_items','extraction_frames','extraction_errors')")" 3

# ---- videos in S3 ---------------------------------------------------------------------------
prefix="fqt/$CQ_ID"
s3_put() { # KEY FILE
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -X PUT --data-binary "@$2" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 "aws:amz:$S3_REGION:s3" \
        --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$S3_ENDPOINT/frameq-videos/$prefix/$1")
    [[ $code == 200 ]] || cq_fail "PUT frameq-videos/$prefix/$1: HTTP $code"
}
s3_status() { # BUCKET/KEY -> HTTP status of a signed GET
    curl -s -o /dev/null -w '%{http_code}' --max-time 30 --aws-sigv4 "aws:amz:$S3_REGION:s3" \
        -u "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$S3_ENDPOINT/$1" \
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
}
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
src="-f lavfi -i testsrc2=size=160x120:rate=10:duration=1"
mkdir -p "$CQ_TMP/v"
# shellcheck disable=SC2086
{
    ff $src -c:v libx264 -preset ultrafast -pix_fmt yuv420p "$CQ_TMP/v/h264.mp4"
    ff $src -c:v libx265 -preset ultrafast -x265-params log-level=error -pix_fmt yuv420p \
        -tag:v hvc1 "$CQ_TMP/v/hevc.mp4"
    ff $src -c:v mpeg4 "$CQ_TMP/v/mpeg4.mp4"
    ff $src -c:v libvpx -deadline realtime -b:v 200k "$CQ_TMP/v/vp8.webm"
    ff $src -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 200k "$CQ_TMP/v/vp9.webm"
    ff $src -c:v libaom-av1 -cpu-used 8 -usage realtime -b:v 200k "$CQ_TMP/v/av1.mkv"
    ff $src -c:v mpeg2video "$CQ_TMP/v/mpeg2.mkv"
    ff $src -c:v mpeg4 "$CQ_TMP/v/mpeg4.avi"
} || cq_fail "ffmpeg could not make the test clips"
echo "this is not a video" >"$CQ_TMP/v/text.txt"
s3_put img/good.mp4 "$CQ_TMP/v/h264.mp4"
s3_put img/bad.mp4 "$CQ_TMP/v/text.txt"
clips=(h264.mp4 hevc.mp4 mpeg4.mp4 vp8.webm vp9.webm av1.mkv mpeg2.mkv mpeg4.avi)
for f in "${clips[@]}"; do
    s3_put "codec/${f/./_}" "$CQ_TMP/v/$f"
done

# ---- end to end: the image's producer and worker --------------------------------------------
export KAFKA_TOPIC="fqt.$CQ_ID" KAFKA_GROUP_ID="fqt-$CQ_ID"
export KAFKA_RETRY_TOPIC="$KAFKA_TOPIC.retry" KAFKA_DLQ_TOPIC="$KAFKA_TOPIC.dlq"
export SOURCE_URL_TEMPLATE="s3://frameq-videos/$prefix/{platform}/{code}.mp4"
export FRAMES_URL_TEMPLATE="s3://frameq-frames/$prefix/{platform}/{code}/{index}.jpg"
cq_create_topics "$KAFKA_TOPIC" "$KAFKA_RETRY_TOPIC" "$KAFKA_DLQ_TOPIC"
kenv=(-e KAFKA_TOPIC -e KAFKA_GROUP_ID -e KAFKA_RETRY_TOPIC -e KAFKA_DLQ_TOPIC
    -e SOURCE_URL_TEMPLATE -e FRAMES_URL_TEMPLATE)

step "producer (image) publishes 2 items"
printf '[%s,%s]' "$(cq_item img good)" "$(cq_item img bad)" |
    run_image -i "${kenv[@]}" --entrypoint producer "$tag" --no-progress - \
        >"$CQ_TMP/producer.out" 2>"$CQ_TMP/producer.log" || cq_fail "producer (image) failed"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "worker (image): read-only root, /tmp on tmpfs, metrics on 127.0.0.1:$port"
"$podman" run -d --name "$worker" --network host --read-only --read-only-tmpfs=false \
    --tmpfs /tmp:rw,size=256m,mode=1777 "${kenv[@]}" -e KAFKA_BROKERS -e DATABASE_URL \
    -e S3_ENDPOINT -e S3_REGION -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
    -e METRICS_ADDR="127.0.0.1:$port" -e WORKER_ID="$worker" -e SHUTDOWN_GRACE_MS=5000 \
    "$tag" >/dev/null || cq_fail "podman run of the worker failed"

ready=""
for _ in $(seq 150); do
    ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/readyz" || true)
    [[ $ready == 200 ]] && break
    sleep 0.2
done
cq_expect_eq "worker /readyz" "$ready" 200
cq_wait_sql "SELECT string_agg(code || ':' || status, ' ' ORDER BY code) FROM extraction_items" \
    "bad:dead good:done" 120
step "items done/dead"

pid=$("$podman" inspect --format '{{.State.Pid}}' "$worker")
cq_expect_eq "uid of the worker process" "$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")" 10001
"$podman" exec --user 0 "$worker" /bin/sh -c 'echo x >/usr/local/bin/probe' 2>"$CQ_TMP/rofs.err" &&
    cq_fail "root could write to /usr/local/bin: the root file system is not read-only"
grep -q 'Read-only file system' "$CQ_TMP/rofs.err" || cq_fail "write refused, but not as read-only: $(cat "$CQ_TMP/rofs.err")"
cq_say "ok: the root file system is read-only (even for root); /tmp is writable"
"$podman" exec "$worker" /bin/sh -c 'echo x >/tmp/probe' || cq_fail "/tmp not writable for uid 10001"

n=0
while read -r url; do
    [[ $(s3_status "${url#s3://}") == 200 ]] || cq_fail "frame $url is not in S3"
    n=$((n + 1))
done < <(cq_sql "SELECT url FROM extraction_frames")
((n >= 1)) || cq_fail "no frame rows"
cq_say "ok: $n frames of 'good' readable in S3"
cq_expect_eq "error of 'bad'" "$(cq_sql "SELECT e.stage || ' ' || e.error_class FROM extraction_errors e JOIN extraction_items i ON i.id = e.item_id WHERE i.code = 'bad'")" "decode permanent"
cq_expect_eq "DLQ messages" "$(cq_count "$KAFKA_DLQ_TOPIC")" 1
cq_expect_eq "DLQ reason" "$(cq_header "$(cq_read "$KAFKA_DLQ_TOPIC" | grep '^{')" frameq-dlq-reason)" permanent

"$podman" stop -t 30 "$worker" >/dev/null
cq_expect_eq "worker exit code after SIGTERM" "$("$podman" inspect --format '{{.State.ExitCode}}' "$worker")" 0
"$podman" logs "$worker" >"$CQ_TMP/worker.log" 2>&1 || true
cq_expect_eq "'item done' log lines" "$(grep -c '"outcome":"done"' "$CQ_TMP/worker.log")" 1

# ---- codecs: consumer --process from the image ----------------------------------------------
step "consumer --process (image) on one clip per codec"
# field JSON NAME: one top-level field of a --process outcome.
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"; }
export SOURCE_URL_TEMPLATE="s3://frameq-videos/$prefix/{platform}/{code}"
for f in "${clips[@]}"; do
    code=${f/./_}
    rc=0
    out=$(run_image "${kenv[@]}" "$tag" --no-db --process "$(cq_item codec "$code")" \
        2>"$CQ_TMP/process.log") || rc=$?
    [[ $out == '{'* ]] || cq_fail "$f: no outcome JSON (exit $rc): $(tail -n 3 "$CQ_TMP/process.log")"
    case $f in
    mpeg2.mkv | mpeg4.avi) # left out of the image's FFmpeg: refused, never decoded
        [[ $rc == 1 && $(field "$out" class) == permanent ]] ||
            cq_fail "$f: want a permanent failure (exit 1), got exit $rc: $out"
        cq_say "ok: $f refused: $(field "$out" error)" ;;
    *)
        [[ $rc == 0 && $(field "$out" status) == done && $(field "$out" frames) -ge 1 ]] ||
            cq_fail "$f: want frames (exit 0), got exit $rc: $out"
        cq_say "ok: $f decoded: codec $(field "$out" codec), $(field "$out" frames) frames" ;;
    esac
done
step "PASS"
