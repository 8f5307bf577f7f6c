#!/usr/bin/env bash
# check WHAT CMD...: runs CMD, prints "ok   WHAT" or "FAIL WHAT" and counts passes and fails;
# `LOG=FILE check ...` also prints the end of FILE on a failure (the log that explains it).
# check_summary prints the counts and returns non-zero when any check failed. Source it.
fails=0
passes=0
check() {
    local what=$1
    shift
    if "$@"; then
        passes=$((passes + 1))
        printf 'ok   %s\n' "$what"
    else
        fails=$((fails + 1))
        printf 'FAIL %s\n' "$what"
        if [[ -n ${LOG:-} && -f ${LOG:-} ]]; then
            printf -- '--- last lines of %s:\n' "$(basename "$LOG")"
            tail -n 12 "$LOG" | cut -c1-400
        fi
    fi
}

check_summary() {
    printf '%d passed, %d failed\n' "$passes" "$fails"
    ((fails == 0))
}
