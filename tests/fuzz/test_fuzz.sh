#!/usr/bin/env bash
# test_fuzz.sh — builds the libFuzzer targets with clang (ASan + UBSan + coverage) and runs each
# for a bounded time: first every kept regression input (tests/fuzz/regressions/<target>/),
# then new inputs from the committed seeds (tests/fuzz/corpus/<target>/; video seeds are made
# here with the ffmpeg CLI). A crash fails the test and its input is copied into
# tests/fuzz/regressions/<target>/ so it becomes a permanent regression case once committed.
#
# environment: FUZZ_SECONDS (per target, default 20), FQ_SOURCE_DIR, FQ_FUZZ_BUILD_DIR
set -euo pipefail

src=${FQ_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${FQ_FUZZ_BUILD_DIR:-$src/build-fuzz}
seconds=${FUZZ_SECONDS:-20}
targets=(fuzz_batch fuzz_headers fuzz_config fuzz_url fuzz_frames)

command -v clang >/dev/null || { echo "test_fuzz: clang is required" >&2; exit 1; }

echo "== building fuzz targets in $build"
if [[ ! -f "$build/build.ninja" ]]; then
    CC=clang cmake -S "$src" -B "$build" -G Ninja -DFQ_FUZZ=ON -DSANITIZE=ON \
        -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build.configure.log" 2>&1 ||
        { cat "$build.configure.log"; exit 1; }
fi
ninja -C "$build" -j2 "${targets[@]}" >"$build.build.log" 2>&1 || { tail -50 "$build.build.log"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Video seeds: tiny clips of several containers and codecs, made now, never committed.
mkdir -p "$work/seeds/frames"
gen() { ffmpeg -loglevel error -nostdin -y "$@"; }
gen -f lavfi -i testsrc2=s=64x48:r=10:d=1 -c:v libx264 -g 5 -pix_fmt yuv420p "$work/seeds/frames/h264.mp4"
# 4 s with an IDR picture every second: long enough to be cut into chunks (at most 8 frames)
gen -f lavfi -i testsrc2=s=64x48:r=10:d=4 -c:v libx264 -g 10 -pix_fmt yuv420p "$work/seeds/frames/h264_chunks.mp4"
gen -f lavfi -i testsrc2=s=64x48:r=10:d=1 -c:v mpeg4 "$work/seeds/frames/mpeg4.mp4"
gen -f lavfi -i testsrc2=s=64x48:r=10:d=1 -c:v libvpx-vp9 -deadline realtime "$work/seeds/frames/vp9.webm"
gen -f lavfi -i testsrc2=s=48x64:r=10:d=1 -c:v mjpeg -pix_fmt yuvj420p "$work/seeds/frames/mjpeg.mkv"

failed=0
for t in "${targets[@]}"; do
    name=${t#fuzz_}
    corpus="$work/corpus/$name"
    mkdir -p "$corpus" "$work/artifacts/$name"
    cp -r "$src/tests/fuzz/corpus/$name/." "$corpus/" 2>/dev/null || true
    [[ -d "$work/seeds/$name" ]] && cp "$work/seeds/$name/"* "$corpus/"
    regress="$src/tests/fuzz/regressions/$name"
    if [[ -d "$regress" ]] && compgen -G "$regress/*" >/dev/null; then
        echo "== $t: replaying $(ls "$regress" | wc -l) regression inputs"
        if ! "$build/$t" -runs=0 "$regress"/* >"$work/$name.regress.log" 2>&1; then
            echo "FAIL $t: a regression input crashes again"; tail -40 "$work/$name.regress.log"
            failed=1
            continue
        fi
    fi
    echo "== $t: fuzzing for ${seconds}s"
    if "$build/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$work/artifacts/$name/" -print_final_stats=1 "$corpus" \
        >"$work/$name.log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$' || echo "?")
        echo "ok   $t: $runs executions, no crash"
    else
        echo "FAIL $t:"; grep -E 'ERROR|SUMMARY|abort|Test unit written' "$work/$name.log" | head -20
        mkdir -p "$regress"
        for a in "$work/artifacts/$name/"*; do
            [[ -f "$a" ]] || continue
            cp "$a" "$regress/"
            echo "     kept $(basename "$a") as tests/fuzz/regressions/$name/$(basename "$a")"
        done
        failed=1
    fi
done
if [[ $failed -ne 0 ]]; then
    echo "fuzz: at least one target crashed"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
