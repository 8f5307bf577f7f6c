#!/usr/bin/env bash
# The librdkafka the programs run with: `consumer --version` and `producer --version` name the
# version pinned in deploy/local/librdkafka (not Debian 12's 2.0.2), and it is linked in
# statically (no librdkafka.so among the libraries they load). No services needed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../support/consumer_lib.sh"

[[ -n $CQ_BUILD && -x $CQ_BUILD/consumer && -x $CQ_BUILD/producer ]] ||
    cq_fail "FQ_BUILD_DIR must point at a build with the consumer and producer programs"
pinned=$(sed -n 's/^RDKAFKA_DEBIAN_VERSION=\([^-]*\)-.*/\1/p' "$CQ_SRC/deploy/local/librdkafka")
[[ $pinned =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    cq_fail "no RDKAFKA_DEBIAN_VERSION=<version>-<revision> line in deploy/local/librdkafka"

for prog in consumer producer; do
    out=$("$CQ_BUILD/$prog" --version)
    grep -q "^$prog (frameq) " <<<"$out" || cq_fail "$prog --version lacks '$prog (frameq)': $out"
    cq_expect_eq "$prog --version librdkafka line" "$(grep '^librdkafka ' <<<"$out")" \
        "librdkafka $pinned"
    if ldd "$CQ_BUILD/$prog" | grep -q 'librdkafka'; then
        cq_fail "$prog loads a shared librdkafka: $(ldd "$CQ_BUILD/$prog" | grep librdkafka)"
    fi
    cq_say "ok: $prog links librdkafka statically"
done
cq_say "PASS"
