#!/usr/bin/env bash
# Producer throughput and memory benchmark (not part of CI): enqueue N NDJSON items with
# `producer` and compare with `kcat -P` sending the same pre-batched messages (made by
# `producer --dry-run`), then peak RSS of the producer at 100k and N items.
#
#   FQ_BUILD_DIR=<release build> KAFKA_BROKERS=... tests/bench/bench_producer.sh [N]
#
# Use a build without sanitizers (ASan multiplies time and RSS). kcat gets the same delivery
# settings as the producer (idempotent, acks=all, linger, batch size, lz4) so the ratio
# measures our overhead, not different tuning.
set -euo pipefail

die() {
    echo "bench_producer: $*" >&2
    exit 1
}

[ -n "${KAFKA_BROKERS:-}" ] || die "KAFKA_BROKERS is not set (deploy/local/up; . .stack/env)"
command -v kcat >/dev/null || die "kcat is required"
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is required for peak RSS"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${FQ_BUILD_DIR:-$here/../../build}
producer=$build/producer
[ -x "$producer" ] || die "$producer not built"

N=${1:-1000000}
SMALL=100000
B=$KAFKA_BROKERS
# shellcheck source=tests/support/consumer_lib.sh
. "$here/../support/consumer_lib.sh" # fq_test_drop_kafka
work=$(mktemp -d)
run="fqp-bench-$$-$RANDOM"
FQ_TEST_KAFKA_UNDER=("$run") # the run's topics, deleted at its end
trap 'fq_test_drop_kafka; rm -rf "$work"' EXIT
export LOG_LEVEL=warn BATCH_SIZE=${BATCH_SIZE:-10}

gen() { # count file
    awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++)
        printf "{\"platform\":\"bench\",\"code\":\"c%09d\"}\n", i }' >"$2"
}

now() { date +%s.%N; }

echo "generating $N and $SMALL items..."
gen "$N" "$work/items.ndjson"
gen "$SMALL" "$work/small.ndjson"
echo "pre-batching with producer --dry-run..."
"$producer" --dry-run "$work/items.ndjson" >"$work/batches.ndjson" 2>/dev/null
msgs=$(wc -l <"$work/batches.ndjson")

for t in p k s; do
    KAFKA_TOPIC=$run.$t "$producer" topics create --partitions 6 >/dev/null
done

kcat_opts=(-X enable.idempotence=true -X acks=all -X linger.ms=20 -X batch.size=1000000
    -X queue.buffering.max.kbytes=32768 -X compression.type=lz4)

# The machine is shared: alternate the two ROUNDS times and compare medians.
ROUNDS=${ROUNDS:-3}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
: >"$work/kcat_times"
: >"$work/prod_times"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r: kcat -P, $msgs messages ($N items)..."
    t0=$(now)
    kcat -b "$B" -P -t "$run.k" "${kcat_opts[@]}" -l "$work/batches.ndjson"
    t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$work/kcat_times"

    echo "round $r: producer, $N items..."
    t0=$(now)
    KAFKA_TOPIC=$run.p /usr/bin/time -f '%M' -o "$work/rss_big" "$producer" \
        "$work/items.ndjson" >"$work/out_big"
    t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$work/prod_times"
    cat "$work/out_big"
    grep -q "^$N items in" "$work/out_big" || die "producer did not deliver everything"
done
kcat_s=$(median <"$work/kcat_times")
prod_s=$(median <"$work/prod_times")

echo "producer: $SMALL items..."
KAFKA_TOPIC=$run.s /usr/bin/time -f '%M' -o "$work/rss_small" "$producer" "$work/small.ndjson" \
    >"$work/out_small"
cat "$work/out_small"

kcat_rate=$(echo "$N / $kcat_s" | bc -l)
prod_rate=$(echo "$N / $prod_s" | bc -l)
printf 'kcat -P         : %8.0f items/s (median %.2f s of %s rounds, %s messages)\n' \
    "$kcat_rate" "$kcat_s" "$ROUNDS" "$msgs"
printf 'producer        : %8.0f items/s (median %.2f s; validation + dedupe + delivery)\n' \
    "$prod_rate" "$prod_s"
printf 'ratio           : %.2f (target >= 0.8)\n' "$(echo "$prod_rate / $kcat_rate" | bc -l)"
printf 'peak RSS %7s : %s KiB\n' "$SMALL" "$(cat "$work/rss_small")"
printf 'peak RSS %7s : %s KiB\n' "$N" "$(cat "$work/rss_big")"
