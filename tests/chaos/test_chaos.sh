#!/usr/bin/env bash
# CTest entry (label chaos): the short version of every chaos scenario (run.sh --short), each
# with ~60 items and its fault (3 workers; fleet: an autoscaled group, an outage with a
# rebalance, a --once fleet); fails when a scenario breaks an invariant, burns an item during an
# outage, does not drain, leaves lag, or a worker is not ready in time or does not exit. Needs the
# local stack and FQ_BUILD_DIR (set by CTest). It stops and starts the stack's services.
# All six run under GROUP_PROTOCOL (default classic); fleet runs again under the other group
# protocol (about a minute more), so both protocols meet scaling, a rebalance in an outage and a
# --once fleet.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
case ${GROUP_PROTOCOL:=classic} in
classic) other=consumer ;;
*) other=classic ;;
esac
rc=0
bash "$here/run.sh" --short sigkill kafka-restart pg-stop s3-stop rolling-sigterm fleet || rc=1
GROUP_PROTOCOL=$other bash "$here/run.sh" --short fleet || rc=1
exit $rc
