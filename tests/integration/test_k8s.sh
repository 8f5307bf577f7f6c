#!/usr/bin/env bash
# Renders deploy/k8s (base and overlays/local) with kustomize and validates every object
# offline (tests/tools/validate_k8s.py): core kinds with kubernetes-validate --strict, KEDA
# ScaledObjects against KEDA's API schema (@kubernetes-models/keda, plus an unknown-field
# check), and the cross-checks the schemas cannot make. Then it breaks copies of the render
# with sed (a typo in a field name, a wrong type, inconsistent values) and requires each
# broken copy to fail, for the reason injected.
#
# Tools are pinned and installed on first use into ${FRAMEQ_CACHE_DIR:-$HOME/.cache/frameq}
# (kustomize with `go install`, a Python venv, an npm directory); later runs are offline.
#
# Env: FQ_SOURCE_DIR, FQ_BUILD_DIR (set by ctest; the built consumer checks the ConfigMap).
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1
K8S_VERSION=1.33.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${FQ_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
cache=${FRAMEQ_CACHE_DIR:-$HOME/.cache/frameq}
tools=$src/tests/tools

fail() {
    echo "test_k8s: FAIL: $*" >&2
    exit 1
}

[ -n "${FQ_BUILD_DIR:-}" ] || fail "FQ_BUILD_DIR is not set (run through ctest, or export it)"
consumer=$FQ_BUILD_DIR/consumer
[ -x "$consumer" ] || fail "missing $consumer: build it first (ninja -C \$FQ_BUILD_DIR)"
need() {
    command -v "$1" >/dev/null || fail "$1 not found: $2"
}
need python3 "runs the validator"
need node "runs the KEDA schema check"

# ---- tools ---------------------------------------------------------------------------------
mkdir -p "$cache/bin"
kustomize=$cache/bin/kustomize
if ! [ -x "$kustomize" ] || ! "$kustomize" version 2>/dev/null | grep -q "$KUSTOMIZE_VERSION"; then
    echo "== installing kustomize $KUSTOMIZE_VERSION into $cache/bin"
    need go "installs kustomize (go install)"
    GOBIN=$cache/bin GOTOOLCHAIN=local GOFLAGS=-mod=mod \
        go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" ||
        fail "go install kustomize $KUSTOMIZE_VERSION failed (Go module proxy reachable?)"
fi

venv=$cache/venv-k8s
if ! cmp -s "$tools/requirements-k8s.txt" "$venv/requirements-k8s.txt"; then
    echo "== installing $(grep -v '^#' "$tools/requirements-k8s.txt" | tr '\n' ' ')into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || fail "python3 -m venv failed"
    "$venv/bin/pip" install -q -r "$tools/requirements-k8s.txt" ||
        fail "pip install -r tests/tools/requirements-k8s.txt failed (PyPI reachable?)"
    cp "$tools/requirements-k8s.txt" "$venv/requirements-k8s.txt"
fi

npmdir=$cache/npm-k8s
if ! cmp -s "$tools/package.json" "$npmdir/package.json" || ! [ -d "$npmdir/node_modules" ]; then
    echo "== installing tests/tools/package.json into $npmdir"
    need npm "installs the KEDA schema package"
    rm -rf "$npmdir"
    mkdir -p "$npmdir"
    cp "$tools/package.json" "$npmdir/"
    (cd "$npmdir" && npm install --no-package-lock --no-audit --no-fund --loglevel=error) ||
        fail "npm install of tests/tools/package.json failed (npm registry reachable?)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

validate() { # RENDERED [--expect-secret]
    "$venv/bin/python" "$tools/validate_k8s.py" "$@" \
        --kubernetes-version "$K8S_VERSION" \
        --kubernetes-validate "$venv/bin/kubernetes-validate" \
        --keda-dir "$npmdir" --source-dir "$src" --consumer "$consumer"
}

# ---- render and validate -------------------------------------------------------------------
echo "== kustomize $("$kustomize" version) build deploy/k8s/base"
"$kustomize" build "$src/deploy/k8s/base" >"$tmp/base.yaml" || fail "kustomize build base failed"
validate "$tmp/base.yaml" || fail "deploy/k8s/base does not validate (ERROR lines above)"

echo "== kustomize build deploy/k8s/overlays/local"
"$kustomize" build "$src/deploy/k8s/overlays/local" >"$tmp/local.yaml" ||
    fail "kustomize build overlays/local failed"
validate "$tmp/local.yaml" --expect-secret ||
    fail "deploy/k8s/overlays/local does not validate (ERROR lines above)"

# The example Secret (not in the kustomization) must validate as well.
"$venv/bin/kubernetes-validate" -k "$K8S_VERSION" --strict \
    "$src/deploy/k8s/base/secret.example.yaml" >"$tmp/secret.out" 2>&1 ||
    { cat "$tmp/secret.out"; fail "secret.example.yaml does not validate"; }
grep -q "passed for resource secret/frameq-secrets" "$tmp/secret.out" ||
    { cat "$tmp/secret.out"; fail "secret.example.yaml was not validated"; }

# ---- negative cases: each broken copy must fail, naming what was broken ----------------------
n_neg=0
negative() { # NAME SED-EXPRESSION EXPECTED-PATTERN
    local name=$1 expr=$2 want=$3
    sed "$expr" "$tmp/base.yaml" >"$tmp/broken.yaml"
    if cmp -s "$tmp/base.yaml" "$tmp/broken.yaml"; then
        fail "negative case '$name': the sed expression changed nothing (test is stale)"
    fi
    if validate "$tmp/broken.yaml" >"$tmp/neg.out" 2>&1; then
        cat "$tmp/neg.out"
        fail "negative case '$name' validated although it is broken"
    fi
    if ! grep -q -- "$want" "$tmp/neg.out"; then
        cat "$tmp/neg.out"
        fail "negative case '$name' failed, but not with an error matching '$want'"
    fi
    echo "== negative '$name': rejected ($(grep -c '^ERROR' "$tmp/neg.out") error(s), e.g." \
        "$(grep -m1 -- "$want" "$tmp/neg.out" | cut -c1-220))"
    n_neg=$((n_neg + 1))
}

negative "Deployment field typo replicasX" \
    '0,/^  revisionHistoryLimit: 5/s//  replicasX: 2\n  revisionHistoryLimit: 5/' 'replicasX'
negative "pod field typo" \
    '0,/terminationGracePeriodSeconds: 40/s//terminationGracePeriodSecondsX: 40/' \
    'terminationGracePeriodSecondsX'
negative "PodDisruptionBudget field typo" \
    '0,/^  maxUnavailable: 1/s//  maxUnavailabel: 1/' 'maxUnavailabel'
negative "ScaledObject field typo" \
    '0,/^  maxReplicaCount: 12/s//  maxReplicaCountX: 12/' 'maxReplicaCountX'
negative "ScaledObject wrong type" \
    '0,/^  maxReplicaCount: 12/s//  maxReplicaCount: "12"/' 'maxReplicaCount must be integer'
negative "kafka trigger metadata typo" \
    '0,/lagThreshold: "5"/s//lagTreshold: "5"/' 'lagTreshold'
negative "trigger topic differs from the ConfigMap" \
    's/topic: extraction.jobs.retry$/topic: extraction.jobs.retries/' 'trigger topic'
negative "maxReplicaCount above the partitions" \
    '0,/^  maxReplicaCount: 12/s//  maxReplicaCount: 24/' 'partitions'
negative "grace period below SHUTDOWN_GRACE_MS" \
    '0,/terminationGracePeriodSeconds: 40/s//terminationGracePeriodSeconds: 20/' \
    'SHUTDOWN_GRACE_MS'
negative "privilege escalation allowed" \
    '0,/allowPrivilegeEscalation: false/s//allowPrivilegeEscalation: true/' '(restricted)'
negative "ConfigMap value the program rejects" \
    's/^  FRAME_MODE: fps$/  FRAME_MODE: fpx/' 'rejects the ConfigMap'
negative "alert on an undeclared metric" \
    's/(frameq_circuit_open)/(frameq_circuit_opened)/' 'frameq_circuit_opened'

echo "test_k8s: OK (base and overlays/local valid; $n_neg broken copies rejected)"
