#!/usr/bin/env bash
# The project's test command (README; .ci/run calls exactly this):
#   bash tests/run.sh
# On a fresh Debian 12 (as root) it installs what is missing, starts the container image's build
# in the background, checks formatting, builds with -DSANITIZE=ON -DWERROR=ON in build-ci/, starts
# the local stack (deploy/local/up), runs `ctest -L 'unit|integration|chaos|fuzz'`, then (once the
# background build is over) `ctest -L image`, and stops the stack again. Prints which phase
# runs and stays quiet otherwise; the output of a failing phase is shown. Exit status: ctest's, or 1
# if an earlier phase (or only the format check) failed.
#
# Knobs: FQ_TEST_TIMEOUT (s per test, default 600), FQ_CTEST_ARGS (extra ctest arguments, e.g.
# "-R kafka"), FQ_KEEP_STACK=1 (never stop the stack), FQ_SKIP_INSTALL=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=$ROOT/build-ci
LOGS=$BUILD/logs
mkdir -p "$LOGS"
export DEBIAN_FRONTEND=noninteractive

started=$SECONDS
phase() {
    printf '== [%4ds] %s\n' "$((SECONDS - started))" "$*"
}

# run_quiet LOGNAME CMD...: runs CMD with its output in $LOGS/LOGNAME; on failure shows the end.
run_quiet() {
    local log=$LOGS/$1
    shift
    if ! "$@" >"$log" 2>&1; then
        printf -- '--- %s failed; last lines of %s:\n' "$*" "$log" >&2
        tail -n 60 "$log" >&2
        return 1
    fi
}

# ---- 1. packages ----------------------------------------------------------------------------
# One list for the tests, the demo and the stack: deploy/local/install-packages (only what is
# missing, quietly; Go, a JDK or Node.js already on PATH are used as they are).
if [[ ${FQ_SKIP_INSTALL:-0} != 1 ]]; then
    phase "packages: deploy/local/install-packages"
    FQ_INSTALL_LOG_DIR=$LOGS bash deploy/local/install-packages
fi

# ---- 1b. the container image, in the background --------------------------------------------
# Its first build (base images, FFmpeg and librdkafka from source inside it) takes minutes of
# CPU: it starts now at the lowest priority, so it overlaps the build and the service-bound
# tests, and tests/image/test_image.sh (run last) finds its layers cached. A failure here is not
# judged here: the image test builds again and reports it.
image_log=$LOGS/image-prebuild.log
nice -n 19 deploy/docker/podman-local build --pull=never \
    --ignorefile deploy/docker/Dockerfile.dockerignore -f deploy/docker/Dockerfile \
    -t frameq:prebuild . >"$image_log" 2>&1 &
image_pid=$!

# ---- 2. formatting --------------------------------------------------------------------------
# Checked first but does not stop the run: the tests still tell whether the code works.
phase "format: clang-format --dry-run --Werror"
format_rc=0
mapfile -d '' sources < <(find . \( -name .git -o -name '.stack' -o -name 'build*' \
    -o -name node_modules \) -prune -o -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
if ((${#sources[@]} > 0)); then
    if ! clang-format --dry-run --Werror "${sources[@]}" >"$LOGS/format.log" 2>&1; then
        format_rc=1
        printf 'format: these files need clang-format -i:\n' >&2
        grep -o '^[^:]*\.[ch]:' "$LOGS/format.log" | sort -u | sed 's/:$//; s/^/  /' >&2 || true
    fi
fi

# ---- 3. build -------------------------------------------------------------------------------
# librdkafka from Debian unstable's source, built once into the cache (minutes the first time,
# instant afterwards); it shows its own phases and keeps its own log.
phase "librdkafka: deploy/local/librdkafka"
rdkafka=$(deploy/local/librdkafka)
phase "build: cmake + ninja -j2 in build-ci/ (SANITIZE=ON WERROR=ON)"
run_quiet cmake.log cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSANITIZE=ON -DWERROR=ON -DFQ_RDKAFKA_PREFIX="$rdkafka"
run_quiet ninja.log ninja -C "$BUILD" -j2

# ---- 4. stack -------------------------------------------------------------------------------
# The stack is stopped at exit only if this run started it: on a developer machine the shared
# stack that colleagues use keeps running; in CI nothing runs before, so it is always stopped.
stack_was_up=0
if deploy/local/status >/dev/null 2>&1; then
    stack_was_up=1
fi
stop_stack() {
    if [[ ${FQ_KEEP_STACK:-0} == 1 || $stack_was_up == 1 ]]; then
        return 0
    fi
    phase "stack: deploy/local/down"
    deploy/local/down >"$LOGS/down.log" 2>&1 || tail -n 20 "$LOGS/down.log" >&2
}
trap stop_stack EXIT
phase "stack: deploy/local/up"
if ! deploy/local/up >"$LOGS/up.log" 2>&1; then
    cat "$LOGS/up.log" >&2
    exit 1
fi
state=${FRAMEQ_STATE_DIR:-$ROOT/.stack}
# shellcheck source=/dev/null
. "$state/env"

# ---- 5. tests -------------------------------------------------------------------------------
phase "tests: ctest -L 'unit|integration|chaos|fuzz'"
# LeakSanitizer stays on (default on x86_64 Linux, stated here so nobody turns it off).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
ctest_rc=0
# shellcheck disable=SC2086
ctest --test-dir "$BUILD" --output-on-failure --no-tests=error -L 'unit|integration|chaos|fuzz' \
    --timeout "${FQ_TEST_TIMEOUT:-600}" ${FQ_CTEST_ARGS:-} || ctest_rc=$?
phase "tests: waiting for the background image build (log: $image_log)"
image_rc=0
wait "$image_pid" || image_rc=$?
phase "tests: ctest -L image (background build exit $image_rc; the test builds again from its cache)"
# shellcheck disable=SC2086
ctest --test-dir "$BUILD" --output-on-failure --no-tests=ignore -L image \
    --timeout "${FQ_TEST_TIMEOUT:-2700}" ${FQ_CTEST_ARGS:-} || ctest_rc=$?

phase "done: ctest exit $ctest_rc, format $([[ $format_rc == 0 ]] && echo ok || echo FAILED)"
if ((ctest_rc != 0)); then
    exit "$ctest_rc"
fi
exit "$format_rc"
