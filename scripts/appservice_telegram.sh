#!/usr/bin/env bash
# A third-party bridge starts against the homeserver and answers in its admin room:
# mautrix-telegram (PyPI, pinned in scripts/appservice_tools.sh), configured without any Telegram
# account (dummy api_id/api_hash, relay bot disabled: it never connects to Telegram, since no user
# has a Telegram session). The bridge generates its own registration, the homeserver loads it
# through `app_service_config_files`, the bridge starts (registers its bot, checks /versions and
# whoami as the bot with its as_token), and clients/appservice-bridge/admin_room.py, as a real user,
# opens a direct room with the bot (its management room), waits for it to join and sends `help`:
# the bot must answer with its command list.
#
#   scripts/appservice_telegram.sh synapse   # the reference
#   scripts/appservice_telegram.sh myelin    # target/debug/myelin
#
# Why not matrix-appservice-slack (the bridge first asked for): it is not published on npm
# (`npm view matrix-appservice-slack` answers 404; it ships as a Docker image or a git checkout),
# and its dependencies include a git-only package (Slackdown) and, through matrix-bot-sdk, a
# crypto binary downloaded from GitHub at install time; only the package registries are reachable.
#
# Status: passes against Synapse 1.163.2 and, since the application-service work (issue 17,
# branch h-as), against Myelin: 5 passed, 0 failed (1 Dec 2026), the bot answering `help`.
#
# MYELIN_BIN=path runs that Myelin binary instead of building target/debug/myelin;
# MYELIN_KEEP_WORK=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:?usage: appservice_telegram.sh synapse|myelin}"
case "$mode" in synapse|myelin) ;; *) echo "usage: appservice_telegram.sh synapse|myelin" >&2; exit 2 ;; esac

bridge_bin=$(scripts/appservice_tools.sh telegram)
client_bin=$(scripts/appservice_tools.sh bridge)
if [ "$mode" = myelin ] && [ -z "${MYELIN_BIN:-}" ]; then cargo build --quiet --bin myelin; fi
# shellcheck source=scripts/appservice_hs.sh
source scripts/appservice_hs.sh

work=$(mktemp -d /tmp/myelin-astelegram.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hs_port=$(free_port)
as_port=$(free_port)
hs_url="http://127.0.0.1:$hs_port"

# The bridge's config: what is not given here comes from its example config (mautrix fills
# missing keys from it when it loads the file).
cat >"$work/config.yaml" <<YAML
homeserver:
    address: "$hs_url"
    domain: localhost
    verify_ssl: false
appservice:
    address: "http://127.0.0.1:$as_port"
    hostname: 127.0.0.1
    port: $as_port
    database: "sqlite:$work/telegram.db"
    id: telegram
    bot_username: telegrambot
bridge:
    permissions:
        "localhost": "full"
telegram:
    api_id: 1
    # Dummy credentials: the example's own are refused, and nothing here ever logs in.
    api_hash: 00000000000000000000000000000000
    bot_token: disabled
logging:
    version: 1
    formatters: {normal: {format: "[%(asctime)s] [%(levelname)s@%(name)s] %(message)s"}}
    handlers: {file: {class: logging.FileHandler, formatter: normal, filename: "$work/bridge.log"}}
    loggers: {mau: {level: DEBUG}, aiohttp: {level: INFO}}
    root: {level: DEBUG, handlers: [file]}
YAML
(cd "$work" && timeout 120 "$bridge_bin/python" -m mautrix_telegram -g -c config.yaml -r registration.yaml >/dev/null)

appservice_homeserver "$mode" "$work" "$hs_port" "$work/registration.yaml"
bridge_pid=
cleanup() {
    if [ -n "$bridge_pid" ]; then kill -TERM "$bridge_pid" 2>/dev/null || true; wait "$bridge_pid" 2>/dev/null || true; fi
    "$work/hs.sh" kill || true
    if [ "${MYELIN_KEEP_WORK:-0}" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
started=$(date +%s)
if ! "$work/hs.sh" start; then
    echo "appservice_telegram.sh: the homeserver did not start; its output:" >&2
    tail -n 50 "$work/stdout.log" "$work/homeserver.log" 2>/dev/null >&2 || true
    exit 1
fi
echo "== $mode up in $(( $(date +%s) - started )) s; starting mautrix-telegram"
(cd "$work" && exec "$bridge_bin/python" -m mautrix_telegram -c config.yaml -r registration.yaml --no-update >"$work/bridge.stdout" 2>&1) &
bridge_pid=$!
# Ready: its appservice listener answers and the start-up actions (bot registration) are done.
ready=0
for _ in $(seq 1 600); do
    if grep -q "Startup actions complete" "$work/bridge.log" 2>/dev/null; then ready=1; break; fi
    kill -0 "$bridge_pid" 2>/dev/null || break
    sleep 0.1
done
status=0
if [ "$ready" = 1 ]; then
    echo "bridge start PASS: mautrix-telegram started in $(( $(date +%s) - started )) s"
    timeout 300 "$client_bin/python" clients/appservice-bridge/admin_room.py --homeserver "$hs_url" \
        --bot "@telegrambot:localhost" --command help --expect "This is a management room" || status=$?
elif kill -0 "$bridge_pid" 2>/dev/null; then
    echo "bridge start FAIL: mautrix-telegram did not complete its start-up in 60 s"
    status=1
else
    code=0; wait "$bridge_pid" || code=$?; bridge_pid=
    echo "bridge start FAIL: mautrix-telegram exited with status $code during its start-up:" \
        "$(grep -m1 CRITICAL "$work/bridge.log" || echo 'no CRITICAL line in its log')"
    status=1
fi
if [ "$status" != 0 ]; then
    echo "== the bridge's output and log (last 60 lines):"
    tail -n 20 "$work/bridge.stdout" || true
    tail -n 60 "$work/bridge.log" || true
    echo "== the homeserver's log (last 60 lines):"
    tail -n 60 "$work/homeserver.log" 2>/dev/null || tail -n 60 "$work/stdout.log"
fi
exit "$status"
