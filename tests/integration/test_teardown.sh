#!/usr/bin/env bash
# A test leaves nothing behind on the shared local stack: after a test that ran `consumer
# --once` ends, its three topics, its consumer group (which held committed offsets) and its
# database are gone; a test run with CQ_KEEP=1 keeps its topics, group and files for a
# post-mortem. Without the clean-up every run of the suite added about 340 partitions to the
# local broker, and a broker holding thousands restarts slowly (deploy/local/up, the
# kafka-restart chaos scenario).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"
# shellcheck source=tests/support/check.sh
. "$CQ_SRC/tests/support/check.sh"

cq_require_env
for b in fq_admin fq_lag; do
    [[ -x $CQ_BUILD/$b ]] || cq_fail "$CQ_BUILD/$b not built"
done
work=$(mktemp -d "${TMPDIR:-/tmp}/fq-teardown.XXXXXX")
trap 'rm -rf "$work"' EXIT

# child NAME: a test of its own (cq_setup, one item through `consumer --once`) that writes
# its topic, group, database and temp dir to $work/NAME.names and ends. Its group's committed
# offset is read before it ends, so the group is known to have existed.
child() {
    CQ_KEEP=${CQ_KEEP:-0} bash -c '
        . "$1/tests/support/consumer_lib.sh"
        cq_setup "teardown_$2"
        cq_enqueue "[$(cq_item t tiny)]"
        cq_consumer worker --once || cq_fail "consumer --once failed"
        "$CQ_BUILD/fq_lag" "$KAFKA_TOPIC" >"$CQ_TMP/lag" ||
            cq_fail "the group has lag or cannot be read: $(cat "$CQ_TMP/lag")"
        awk "\$4 != \"-\"" "$CQ_TMP/lag" | grep -q . || cq_fail "the group committed nothing"
        echo "$KAFKA_TOPIC $KAFKA_GROUP_ID $CQ_DB $CQ_TMP" >"$3"
    ' _ "$CQ_SRC" "$1" "$work/$1.names"
}

topic_listed() { kcat -b "$KAFKA_BROKERS" -L 2>/dev/null | grep -qF "topic \"$1\" "; }
# topic_gone TOPIC: not listed within 30 s (brokers learn of a deletion a moment after it).
topic_gone() {
    local i
    for i in $(seq 60); do
        topic_listed "$1" || return 0
        sleep 0.5
    done
    return 1
}
db_gone() {
    [[ $(psql "$DATABASE_URL" -XqAtc "SELECT count(*) FROM pg_database WHERE datname = '$1'") == 0 ]]
}
# group_gone GROUP: deleting it again finds no such group (fq_admin exit 3).
group_gone() {
    local rc=0
    "$CQ_BUILD/fq_admin" delete-groups "$1" 2>/dev/null || rc=$?
    ((rc == 3))
}
# nothing_under PREFIX: no topic named PREFIX or PREFIX.* is listed within 30 s.
nothing_under() {
    topic_gone "$1" && topic_gone "$1.retry" && topic_gone "$1.dlq"
}

child plain || cq_fail "the child test failed"
read -r topic group db tmp <"$work/plain.names"
for t in "$topic" "$topic.retry" "$topic.dlq"; do
    check "topic $t deleted at the end of the test" topic_gone "$t"
done
check "group $group deleted (with its committed offsets)" group_gone "$group"
check "database $db dropped" db_gone "$db"
check "temp dir removed" test ! -e "$tmp"

CQ_KEEP=1 child kept || cq_fail "the kept child test failed"
read -r topic group db tmp <"$work/kept.names"
for t in "$topic" "$topic.retry" "$topic.dlq"; do
    check "CQ_KEEP=1: topic $t kept" topic_listed "$t"
done
check "CQ_KEEP=1: temp dir kept" test -d "$tmp"
check "CQ_KEEP=1: group kept, and fq_admin deletes it" "$CQ_BUILD/fq_admin" delete-groups "$group"
check "fq_admin delete-under deletes the kept topics" "$CQ_BUILD/fq_admin" delete-under "$topic"
check "after it no topic under $topic is left" nothing_under "$topic"
rm -rf "$tmp"
check_summary
