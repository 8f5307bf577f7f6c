#!/usr/bin/env bash
# Proves tests/chaos/check_invariants.sh can fail: in a throwaway database and DLQ topic, each
# violation of DESIGN §3 is built by hand (rows written with psql, DLQ messages with kcat) and
# must be reported with its VIOLATION line, its count in the summary and exit 1; a clean set of
# items must exit 0. Each case uses its own item codes, so the cases share one database and topic.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../chaos/lib.sh"

ch_require_env
ch_init invariants
ch_db invariants
export KAFKA_DLQ_TOPIC="chaos.invariants.$CH_RUN.dlq"
FQ_TEST_KAFKA_UNDER+=("chaos.invariants.$CH_RUN") # deleted by the teardown
export MAX_RETRIES=3

# row PLATFORM CODE STATUS ATTEMPTS: one extraction_items row; a done one has one frame, recorded
# as the worker records it (frame_count and its extraction_frames row).
row() {
    ch_sql "INSERT INTO extraction_items (platform, code, status, attempts, frame_count)
            VALUES ('$1', '$2', '$3', $4, CASE WHEN '$3' = 'done' THEN 1 END)" >/dev/null
    [[ $3 != done ]] || frame_row "$2" 0
}
# frame_row CODE INDEX: one extraction_frames row of item t:CODE.
frame_row() {
    ch_sql "INSERT INTO extraction_frames (item_id, idx, pts_ms, url)
            SELECT id, $2, $2 * 1000, 'file:///f/$2.jpg' FROM extraction_items
            WHERE platform = 't' AND code = '$1'" >/dev/null
}
# error_row CODE ATTEMPT: one extraction_errors row of item t:CODE.
error_row() {
    ch_sql "INSERT INTO extraction_errors (item_id, attempt, stage, error_class, message)
            SELECT id, $2, 'fetch', 'retriable', 'test' FROM extraction_items
            WHERE platform = 't' AND code = '$1'" >/dev/null
}
# dlq CODE: one DLQ message keyed t:CODE, as the worker writes it.
dlq() {
    printf '{"platform":"t","code":"%s"}' "$1" >"$CH_TMP/dlq.msg"
    ch_produce_raw "$KAFKA_DLQ_TOPIC" "$CH_TMP/dlq.msg" "t:$1"
}
# items CASE CODE...: the items file of a case.
items() {
    local c=$1 code
    shift
    : >"$CH_TMP/$c.items"
    for code in "$@"; do
        printf '{"platform":"t","code":"%s"}\n' "$code" >>"$CH_TMP/$c.items"
    done
}

# --- the states, one case per violation -----------------------------------------------------
# clean: one done item, one dead item with exactly one DLQ message, attempts at the maximum.
row t clean_done done 1
row t clean_dead dead 4
error_row clean_dead 4
dlq clean_dead
items clean clean_done clean_dead

# lost: enqueued, but neither a row nor a DLQ message.
items lost lost_1

# dead twice: dead with two DLQ messages.
row t twice_1 dead 1
dlq twice_1
dlq twice_1
items dead_twice twice_1

# done and dead: done in PostgreSQL and also in the DLQ.
row t dd_1 done 1
dlq dd_1
items done_and_dead dd_1

# stuck processing: a row that never reached a terminal state (and no DLQ message).
row t stuck_1 processing 1
items stuck stuck_1

# attempts too high: done, but with more attempts than MAX_RETRIES + 1 allows (item row), and
# another whose error rows go past the maximum.
row t over_1 done 6
row t over_2 done 1
error_row over_2 5
items over over_1 over_2

# dead without DLQ message.
row t dwd_1 dead 1
items dead_without_dlq dwd_1

# a DLQ message whose item is not dead in PostgreSQL (retrying).
row t dlqnd_1 retrying 2
dlq dlqnd_1
items dlq_without_dead dlqnd_1

# frames: a done item that counts 2 frames with one recorded, and a dead item (rightly in the
# DLQ once) with a frame row.
row t frames_1 done 1
ch_sql "UPDATE extraction_items SET frame_count = 2 WHERE code = 'frames_1'" >/dev/null
row t frames_2 dead 1
dlq frames_2
frame_row frames_2 0
items frames_mismatch frames_1
items frames_on_dead frames_2

# --- the table: case, expected exit, summary field that must be non-zero ---------------------
cases=(
    "clean 0 -"
    "lost 1 lost"
    "dead_twice 1 dead_twice"
    "done_and_dead 1 done_and_dead"
    "stuck 1 stuck"
    "over 1 over_attempts"
    "dead_without_dlq 1 dead_without_dlq"
    "dlq_without_dead 1 dlq_without_dead"
    "frames_mismatch 1 frames_mismatch"
    "frames_on_dead 1 frames_mismatch"
)
fails=0
for c in "${cases[@]}"; do
    read -r name want_rc field <<<"$c"
    rc=0
    ch_run_checker "$CH_TMP/$name.items" >"$CH_TMP/$name.out" 2>&1 || rc=$?
    summary=$(sed -n '/^items=/p' "$CH_TMP/$name.out")
    ok=1
    [[ $rc == "$want_rc" ]] || ok=0
    [[ -n $summary ]] || ok=0
    if [[ $field != - ]]; then
        # The violation line of this class (the checker names `over` for attempts) and its count.
        vname=$field
        [[ $field == over_attempts ]] && vname=over
        grep -q "^VIOLATION $vname: [1-9]" "$CH_TMP/$name.out" || ok=0
        [[ " $summary " =~ \ $field=[1-9] ]] || ok=0
    else
        ! grep -q '^VIOLATION' "$CH_TMP/$name.out" || ok=0
        [[ " $summary " == *" done=1 dead=1 lost=0 "* ]] || ok=0
    fi
    if ((ok)); then
        echo "ok   $name: exit $rc; $summary"
    else
        echo "FAIL $name: exit $rc (want $want_rc); output:"
        sed 's/^/     /' "$CH_TMP/$name.out"
        fails=$((fails + 1))
    fi
done

# The checker also fails on a usage error rather than passing silently.
rc=0
ch_run_checker "$CH_TMP/no-such-file" >/dev/null 2>&1 || rc=$?
if [[ $rc == 2 ]]; then
    echo "ok   usage: exit 2 for a missing items file"
else
    echo "FAIL usage: exit $rc for a missing items file (want 2)"
    fails=$((fails + 1))
fi

((fails == 0)) || ch_fail "$fails case(s) of the invariant checker wrong"
echo "PASS: ${#cases[@]} checker cases + usage"
