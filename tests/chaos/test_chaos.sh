#!/usr/bin/env bash
# CTest entry (label chaos): the short version of every chaos scenario (run.sh --short), each
# with ~60 items, 3 workers and its fault; fails when a scenario breaks an invariant, burns an
# item during an outage or does not drain. Needs the local stack and FQ_BUILD_DIR (set by CTest).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" --short \
    sigkill kafka-restart pg-stop s3-stop rolling-sigterm
