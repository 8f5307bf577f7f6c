#!/usr/bin/env bash
# check_invariants.sh — after a run, prove DESIGN §3: every enqueued item ends in exactly one
# terminal state (done in PostgreSQL, or exactly one DLQ message and 'dead' in PostgreSQL), and a
# done item's frames are all recorded (one row per frame, indexes 0..frame_count-1; no frame rows
# for an item that is not done).
#
# usage: check_invariants.sh ITEMS_FILE
#   ITEMS_FILE  the enqueued items: NDJSON or a JSON array of {"platform":..,"code":..}
# environment: DATABASE_URL, KAFKA_BROKERS, KAFKA_DLQ_TOPIC (default extraction.jobs.dlq),
#              MAX_RETRIES (default 3), CHECK_QUIET=1 prints only the summary line.
# Prints one line per violation class with examples, then a summary line:
#   items=N done=N dead=N lost=N dead_twice=N done_and_dead=N stuck=N orphan_errors=N
#   over_attempts=N dlq_without_dead=N dead_without_dlq=N frames_mismatch=N
# Exit 0 when there is no violation, 1 when there is, 2 on usage or tool errors.
set -euo pipefail
export LC_ALL=C # sort, comm and join must agree on one order

items_file=${1:-}
if [[ -z "$items_file" || ! -r "$items_file" ]]; then
    echo "usage: $0 ITEMS_FILE (NDJSON or JSON array of items)" >&2
    exit 2
fi
: "${DATABASE_URL:?DATABASE_URL must be set}"
: "${KAFKA_BROKERS:?KAFKA_BROKERS must be set}"
dlq_topic=${KAFKA_DLQ_TOPIC:-${KAFKA_TOPIC:-extraction.jobs}.dlq}
max_retries=${MAX_RETRIES:-3}
for tool in jq psql kcat; do
    command -v "$tool" >/dev/null || { echo "check_invariants: $tool is required" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Enqueued keys, one per line, sorted and unique.
jq -r 'if type == "array" then .[] else . end | "\(.platform):\(.code)"' "$items_file" |
    sort -u >"$work/enqueued"

q() { psql "$DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
q "SELECT platform || ':' || code FROM extraction_items WHERE status = 'done'" | sort -u >"$work/done"
q "SELECT platform || ':' || code FROM extraction_items WHERE status = 'dead'" | sort -u >"$work/dead"
q "SELECT platform || ':' || code || ' ' || status FROM extraction_items
   WHERE status NOT IN ('done', 'dead')" | sort >"$work/stuck_all"
q "SELECT platform || ':' || code || ' attempts=' || attempts FROM extraction_items
   WHERE attempts > $((max_retries + 1))" | sort >"$work/over_items"
q "SELECT i.platform || ':' || i.code || ' error attempt=' || e.attempt
   FROM extraction_errors e JOIN extraction_items i ON i.id = e.item_id
   WHERE e.attempt > $((max_retries + 1))" | sort >>"$work/over_items"
q "SELECT i.platform || ':' || i.code || ' status=' || i.status || ' frame_count='
          || coalesce(i.frame_count::text, 'null') || ' rows=' || count(f.idx) || ' max_idx='
          || coalesce(max(f.idx)::text, 'none')
   FROM extraction_items i LEFT JOIN extraction_frames f ON f.item_id = i.id
   GROUP BY i.id
   HAVING (i.status = 'done' AND (i.frame_count IS NULL OR count(f.idx) <> i.frame_count
                                  OR coalesce(max(f.idx), -1) <> i.frame_count - 1))
       OR (i.status <> 'done' AND count(f.idx) > 0)" | sort >"$work/frames_all"
orphans=$(q "SELECT count(*) FROM extraction_errors e
             LEFT JOIN extraction_items i ON i.id = e.item_id WHERE i.id IS NULL")

# DLQ keys with their counts. -e stops at the end of every partition; a missing topic is empty.
if ! kcat -b "$KAFKA_BROKERS" -X isolation.level=read_committed -C -t "$dlq_topic" -o beginning -e -q -f '%k\n' \
    >"$work/dlq_raw" 2>"$work/kcat_err"; then
    if grep -qi "unknown topic\|UNKNOWN_TOPIC" "$work/kcat_err"; then
        : >"$work/dlq_raw"
    else
        echo "check_invariants: reading $dlq_topic failed: $(head -c 300 "$work/kcat_err")" >&2
        exit 2
    fi
fi
sort "$work/dlq_raw" | uniq -c | awk '{print $2, $1}' >"$work/dlq_counts"
awk '{print $1}' "$work/dlq_counts" | sort -u >"$work/dlq_keys"

# Restrict everything to the enqueued items of this run.
only() { comm -12 "$work/enqueued" "$1"; }
only "$work/done" >"$work/e_done"
only "$work/dead" >"$work/e_dead"
only "$work/dlq_keys" >"$work/e_dlq"
cat "$work/e_done" "$work/e_dlq" | sort -u >"$work/terminal"
comm -23 "$work/enqueued" "$work/terminal" >"$work/lost"
# Both inputs are sorted in one locale (LC_ALL=C); --check-order turns an unsorted input into a
# tool error instead of silently missing pairs.
if ! awk '$2 > 1 {print $1 " dlq_messages=" $2}' "$work/dlq_counts" | sort |
    join --check-order - "$work/enqueued" >"$work/dead_twice" 2>"$work/join_err"; then
    echo "check_invariants: joining DLQ counts with the enqueued items failed:" \
        "$(head -c 300 "$work/join_err")" >&2
    exit 2
fi
comm -12 "$work/e_done" "$work/e_dlq" >"$work/done_and_dead"
comm -23 "$work/e_dlq" "$work/e_dead" | comm -23 - "$work/e_done" >"$work/dlq_without_dead"
comm -23 "$work/e_dead" "$work/e_dlq" >"$work/dead_without_dlq"
awk '{print $1}' "$work/stuck_all" | sort -u | comm -12 "$work/enqueued" - >"$work/stuck"
awk '{print $1}' "$work/over_items" | sort -u | comm -12 "$work/enqueued" - >"$work/over"
join --check-order "$work/enqueued" "$work/frames_all" >"$work/frames_mismatch"

count() { wc -l <"$work/$1" | tr -d ' '; }
if [[ "${CHECK_QUIET:-0}" != 1 ]]; then
    for f in lost dead_twice done_and_dead stuck over dlq_without_dead dead_without_dlq \
        frames_mismatch; do
        n=$(count "$f")
        if [[ "$n" -gt 0 ]]; then
            echo "VIOLATION $f: $n (e.g. $(head -3 "$work/$f" | tr '\n' ' '))"
        fi
    done
    if [[ "$orphans" -gt 0 ]]; then
        echo "VIOLATION orphan_errors: $orphans error rows without their item"
    fi
fi
n_lost=$(count lost) n_twice=$(count dead_twice) n_dd=$(count done_and_dead)
n_stuck=$(count stuck) n_over=$(count over) n_dwd=$(count dlq_without_dead)
n_dwl=$(count dead_without_dlq) n_frames=$(count frames_mismatch)

total=$((n_lost + n_twice + n_dd + n_stuck + n_over + n_dwd + n_dwl + n_frames + orphans))
echo "items=$(count enqueued) done=$(count e_done) dead=$(count e_dead)" \
    "lost=$n_lost dead_twice=$n_twice done_and_dead=$n_dd stuck=$n_stuck" \
    "orphan_errors=$orphans over_attempts=$n_over dlq_without_dead=$n_dwd" \
    "dead_without_dlq=$n_dwl frames_mismatch=$n_frames"
[[ "$total" -eq 0 ]]
