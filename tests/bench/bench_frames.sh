#!/usr/bin/env bash
# bench_frames.sh — our frame extractor against the ffmpeg CLI doing the same selection,
# scaling and JPEG encoding. Not part of CI.
#
#   tests/bench/bench_frames.sh            # builds an optimised, unsanitised tree first
#   BUILD_DIR=/path/to/build tests/bench/bench_frames.sh
#
# Environment: BUILD_DIR (a build with bench_frames and runstat; default: one is configured
# under the cache dir with -DCMAKE_BUILD_TYPE=Release and no sanitizers), CACHE_DIR (clips,
# default ${XDG_CACHE_HOME:-~/.cache}/frameq-bench), ROUNDS (default 5), MODES (default
# "fps keyframes scene"), CLIPS (default "landscape portrait"; also "long": 30 s of
# 1080x1920 with 8 s GOPs, otherwise libx264's defaults: preset medium, 3 B-frames), MAX_DIM (512), SCENE_THRESHOLD (0.3), CORES (unset: our decoder
# uses FFmpeg's automatic thread count; N: ours runs inside a core budget of N cores as a
# worker's pool does, holding one and lending the idle ones to its decoder).
#
# Each round runs ours, then the CLI, alternating, each under runstat (wall, CPU, peak RSS).
# The CLI writes JPEG-encoded frames to the null muxer, so it encodes but stores nothing;
# ours hands JPEGs to a callback that only counts bytes. Every round is printed on stderr;
# the table holds medians, and the CPU utilisation of each (user+sys / wall / cores online).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cache=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/frameq-bench}
rounds=${ROUNDS:-5}
modes=${MODES:-fps keyframes scene}
clips=${CLIPS:-landscape portrait}
max_dim=${MAX_DIM:-512}
scene_t=${SCENE_THRESHOLD:-0.3}
cores=${CORES:-}
online=$(getconf _NPROCESSORS_ONLN)
mkdir -p "$cache"

if [ -z "${BUILD_DIR:-}" ]; then
    BUILD_DIR=$cache/build
    if [ ! -f "$BUILD_DIR/build.ninja" ] && [ ! -f "$BUILD_DIR/Makefile" ]; then
        gen=()
        command -v ninja >/dev/null && gen=(-G Ninja)
        rdkafka=$("$src/deploy/local/librdkafka")
        cmake -S "$src" -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DSANITIZE=OFF \
            -DBUILD_TESTING=OFF -DFQ_RDKAFKA_PREFIX="$rdkafka" >/dev/null
    fi
    cmake --build "$BUILD_DIR" --target bench_frames runstat -j 2 >/dev/null
fi
bench=$BUILD_DIR/bench_frames
runstat=$BUILD_DIR/runstat
for b in "$bench" "$runstat"; do
    [ -x "$b" ] || { echo "bench_frames.sh: $b not built" >&2; exit 1; }
done

ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
x264=(-c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -bf 2 -pix_fmt yuv420p)

clip_file() {
    case $1 in
    landscape) echo "$cache/landscape_1080p30_60s.mp4" ;;
    portrait) echo "$cache/portrait_720x1280_30s.mp4" ;;
    long) echo "$cache/portrait_1080x1920_30s_gop240_medium.mp4" ;;
    esac
}
make_clip() {
    local name=$1 out
    out=$(clip_file "$name")
    [ -s "$out" ] && return 0
    echo "generating $out ..." >&2
    case $name in
    landscape)
        ff -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=60 "${x264[@]}" "$out.tmp.mp4" ;;
    portrait)
        ff -f lavfi -i testsrc2=size=720x1280:rate=30:duration=30 "${x264[@]}" "$out.tmp.mp4" ;;
    long)
        ff -f lavfi -i testsrc2=size=1080x1920:rate=30:duration=30 -c:v libx264 -g 240 \
            -keyint_min 240 -sc_threshold 0 -pix_fmt yuv420p "$out.tmp.mp4" ;;
    esac
    mv "$out.tmp.mp4" "$out"
}

# Output size of our extractor (fq_frames_fit): the long side max_dim, even dimensions.
out_size() {
    local w h
    IFS=, read -r w h < <(ffprobe -v error -select_streams v:0 -show_entries stream=width,height \
        -of csv=p=0 "$1")
    awk -v w="$w" -v h="$h" -v m="$max_dim" 'BEGIN {
        l = (w >= h) ? w : h; s = (w >= h) ? h : w;
        lo = (l < m) ? l : m; lo -= lo % 2;
        so = 2 * int(s * lo / l / 2 + 0.5); if (so < 2) so = 2;
        if (w >= h) print lo ":" so; else print so ":" lo }'
}

ours_cmd() { # mode file
    "$runstat" "$bench" --mode "$1" --fps 1 --max-dim "$max_dim" --scene-threshold "$scene_t" \
        ${cores:+--cores "$cores"} "$2"
}
cli_cmd() { # mode file W:H
    case $1 in
    fps)
        "$runstat" ffmpeg -nostdin -loglevel error -i "$2" -vf "fps=1,scale=$3" \
            -c:v mjpeg -q:v 3 -f null - ;;
    keyframes)
        "$runstat" ffmpeg -nostdin -loglevel error -skip_frame nokey -i "$2" -vf "scale=$3" \
            -fps_mode vfr -c:v mjpeg -q:v 3 -f null - ;;
    scene)
        "$runstat" ffmpeg -nostdin -loglevel error -i "$2" \
            -vf "select='gt(scene,$scene_t)',scale=$3" -fps_mode vfr -c:v mjpeg -q:v 3 -f null - ;;
    esac
}

# field NAME JSON -> number
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {
    if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2] + v[NR/2+1]) / 2 }'; }
maxof() { tr ' ' '\n' | grep . | sort -n | tail -1; }

results=()
for clip in $clips; do
    make_clip "$clip"
    file=$(clip_file "$clip")
    size=$(out_size "$file")
    for mode in $modes; do
        ow="" oc="" orss="" cw="" cc="" crss="" frames="" decoded=""
        for ((i = 1; i <= rounds; i++)); do
            out=$(ours_cmd "$mode" "$file")
            stat=$(tail -n1 <<<"$out")
            line=$(head -n1 <<<"$out")
            [ "$(field exit "$stat")" = 0 ] || { echo "ours failed: $out" >&2; exit 1; }
            frames=$(field frames "$line")
            decoded=$(field decoded "$line")
            ow+=" $(field wall_ms "$stat")" oc+=" $(field cpu_ms "$stat")"
            orss+=" $(field maxrss_kb "$stat")"
            stat=$(cli_cmd "$mode" "$file" "$size" | tail -n1)
            [ "$(field exit "$stat")" = 0 ] || { echo "CLI failed: $stat" >&2; exit 1; }
            cw+=" $(field wall_ms "$stat")" cc+=" $(field cpu_ms "$stat")"
            crss+=" $(field maxrss_kb "$stat")"
            read -r -a w <<<"$ow" && read -r -a c <<<"$oc" && read -r -a x <<<"$cw"
            read -r -a y <<<"$cc"
            awk -v i="$i" -v ow="${w[-1]}" -v oc="${c[-1]}" -v cw="${x[-1]}" -v cc="${y[-1]}" \
                -v n="$online" -v what="$clip $mode" 'BEGIN {
                printf "round %d %s: ours wall %.0f cpu %.0f util %.2f | cli wall %.0f cpu %.0f " \
                    "util %.2f | wall x %.2f cpu x %.2f\n", i, what, ow, oc, oc / ow / n, cw, cc,
                    cc / cw / n, ow / cw, oc / cc }' >&2
        done
        results+=("$clip $mode $(median <<<"$ow") $(median <<<"$oc") $(median <<<"$cw") \
$(median <<<"$cc") $(maxof <<<"$orss") $(maxof <<<"$crss") $frames $decoded")
        echo "done: $clip $mode" >&2
    done
done

echo
echo "rounds=$rounds max_dim=$max_dim cores online=$online budget=${cores:-none}" \
    "(medians; peak RSS is the maximum over the rounds; util = cpu / wall / cores online)"
printf '%-10s %-9s | %9s %9s %5s | %9s %9s %5s | %6s %6s | %8s %8s | %6s %8s\n' clip mode \
    "ours wall" "ours cpu" util "cli wall" "cli cpu" util "wall x" "cpu x" "ours MB" "cli MB" \
    frames decoded
printf -- '-%.0s' {1..132}
echo
for r in "${results[@]}"; do
    read -r clip mode ow oc cw cc orss crss frames decoded <<<"$r"
    awk -v clip="$clip" -v mode="$mode" -v ow="$ow" -v oc="$oc" -v cw="$cw" -v cc="$cc" \
        -v orss="$orss" -v crss="$crss" -v fr="$frames" -v dec="$decoded" -v n="$online" 'BEGIN {
        printf "%-10s %-9s | %9.0f %9.0f %5.2f | %9.0f %9.0f %5.2f | %6.2f %6.2f | %8.1f %8.1f" \
            " | %6d %8d\n", clip, mode, ow, oc, oc / ow / n, cw, cc, cc / cw / n, ow / cw,
            oc / cc, orss / 1024, crss / 1024, fr, dec }'
done
