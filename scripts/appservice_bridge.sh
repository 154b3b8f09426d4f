#!/usr/bin/env bash
# Application services with a real bridge library: runs clients/appservice-bridge (mautrix-python)
# against a fresh homeserver that loads its registration through `app_service_config_files`.
#
#   scripts/appservice_bridge.sh synapse   # the reference: Synapse from the pytools venv
#   scripts/appservice_bridge.sh myelin    # target/debug/myelin (built here, debug)
#
# It writes the registration YAML (random as/hs tokens, users @ghost_.* and aliases #bridge_.*
# exclusive, receive_ephemeral), generates the homeserver's config (server name `localhost`, SQLite,
# open registration, rate limits off), starts it, runs the program and cleans up. The program's
# stage i kills the homeserver (SIGKILL) and starts it again through `$work/hs.sh restart`,
# written here. Stages a..i are described in clients/appservice-bridge/README.md.
#
# MYELIN_AS_BRIDGE_REQUIRE lists the stages whose failure fails this script (default: all).
#
# Status: all stages pass against Synapse 1.163.2 (the pytools venv) and, since the
# application-service work (issue 17, branch h-as), against Myelin too: stages a..i all PASS
# (1 Dec 2026), the restart stage included.
#
# MYELIN_BIN=path runs that Myelin binary instead of building target/debug/myelin;
# MYELIN_KEEP_WORK=1 keeps the work directory (configs, logs, databases).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:?usage: appservice_bridge.sh synapse|myelin}"
required="${MYELIN_AS_BRIDGE_REQUIRE:-all}"
case "$mode" in synapse|myelin) ;; *) echo "usage: appservice_bridge.sh synapse|myelin" >&2; exit 2 ;; esac

venv_bin=$(scripts/appservice_tools.sh bridge)
if [ "$mode" = myelin ] && [ -z "${MYELIN_BIN:-}" ]; then cargo build --quiet --bin myelin; fi
# shellcheck source=scripts/appservice_hs.sh
source scripts/appservice_hs.sh

work=$(mktemp -d /tmp/myelin-asbridge.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hs_port=$(free_port)
as_port=$(free_port)
hs_url="http://127.0.0.1:$hs_port"
random() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }

cat >"$work/registration.yaml" <<YAML
id: asproof
url: "http://127.0.0.1:$as_port"
as_token: "as_$(random)"
hs_token: "hs_$(random)"
sender_localpart: asproofbot
rate_limited: false
receive_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: "@ghost_.*:localhost"
  aliases:
    - exclusive: true
      regex: "#bridge_.*:localhost"
  rooms: []
YAML

appservice_homeserver "$mode" "$work" "$hs_port" "$work/registration.yaml"

cleanup() {
    "$work/hs.sh" kill || true
    if [ "${MYELIN_KEEP_WORK:-0}" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
# Stage i's restart; MYELIN_AS_BRIDGE_RESTART replaces it (given the work directory), for
# scripts/appservice_bridge_selfcheck.sh's homeserver that loses or repeats deliveries.
restart_cmd="\"$work/hs.sh\" restart"
if [ -n "${MYELIN_AS_BRIDGE_RESTART:-}" ]; then restart_cmd="$MYELIN_AS_BRIDGE_RESTART \"$work\""; fi
started=$(date +%s)
if ! "$work/hs.sh" start; then
    echo "appservice_bridge.sh: the homeserver did not start; its output:" >&2
    tail -n 50 "$work/stdout.log" "$work/homeserver.log" 2>/dev/null >&2 || true
    exit 1
fi
echo "== $mode up in $(( $(date +%s) - started )) s; mautrix bridge stages (required: $required)"
status=0
timeout 900 "$venv_bin/python" clients/appservice-bridge/bridge.py --homeserver "$hs_url" \
    --registration "$work/registration.yaml" --restart-cmd "$restart_cmd" \
    --require "$required" 2>"$work/bridge.log" || status=$?
if [ "$status" != 0 ]; then
    echo "== the bridge's log (last 50 lines):"
    tail -n 50 "$work/bridge.log"
    echo "== the homeserver's log (last 100 lines):"
    tail -n 100 "$work/homeserver.log" 2>/dev/null || tail -n 100 "$work/stdout.log"
fi
exit "$status"
