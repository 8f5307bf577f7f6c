#!/usr/bin/env bash
# bench_long_item.sh — one long item on an idle worker (issue 12): a 30 s 1080x1920 H.264 clip
# with 8 s GOPs, fps=1, scaled, JPEG; our extractor inside a core budget of every online core
# (as the pool runs it: one core held, the idle ones lent to its decoder) against the ffmpeg
# CLI doing the same selection, side by side in each round. Then the same with a budget of one
# core (no lending) for reference. Goal: wall <= 0.6 of the CLI's, CPU <= 0.6 of the CLI's.
#
# Environment as tests/bench/bench_frames.sh (BUILD_DIR, CACHE_DIR, ROUNDS default 3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CLIPS=long MODES=fps ROUNDS=${ROUNDS:-3}
echo "== budget: all $(getconf _NPROCESSORS_ONLN) cores" >&2
CORES=$(getconf _NPROCESSORS_ONLN) "$here/bench_frames.sh"
echo "== budget: 1 core (the decoder on one thread, as before lending)" >&2
CORES=1 "$here/bench_frames.sh"
