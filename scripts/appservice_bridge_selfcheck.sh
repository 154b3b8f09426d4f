#!/usr/bin/env bash
# The check of the check: stage i of scripts/appservice_bridge.sh must fail when the homeserver
# loses the events it could not deliver, and when it delivers them twice. Runs the driver against
# Synapse with stage i's restart replaced by clients/appservice-bridge/sabotage_synapse.py
# (lose, then repeat) and expects each run to fail stage i with the matching reason.
#
#   scripts/appservice_bridge_selfcheck.sh
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for mode in lose repeat; do
    case "$mode" in
        lose) reason="not delivered within 90 s of the restart" ;;
        repeat) reason="delivered more than once" ;;
    esac
    out=$(MYELIN_AS_BRIDGE_REQUIRE=i \
        MYELIN_AS_BRIDGE_RESTART="python3 $PWD/clients/appservice-bridge/sabotage_synapse.py $mode" \
        scripts/appservice_bridge.sh synapse 2>&1) && rc=0 || rc=$?
    line=$(grep '^stage i ' <<<"$out" || true)
    if [ "$rc" = 1 ] && grep -q "^stage i FAIL: .*$reason" <<<"$out"; then
        echo "sabotage $mode PASS: stage i failed as it must: ${line:0:200}"
    else
        echo "sabotage $mode FAIL: expected stage i to fail with '$reason'; exit $rc, got: ${line:-no stage i line}"
        status=1
    fi
done
exit "$status"
