# Sourced by scripts/appservice_bridge.sh and scripts/appservice_telegram.sh: a fresh homeserver
# (server name `localhost`, SQLite, open registration without verification, rate limits off)
# that loads one appservice registration through `app_service_config_files`.
#
#   appservice_homeserver MODE WORK PORT REGISTRATION
#
# MODE is synapse (the pytools venv's Synapse, scripts/pytools.sh) or myelin (target/debug/myelin,
# configured by its `generate-config` as scripts/sdk_e2ee.sh does; the caller builds it, or
# MYELIN_BIN names a prebuilt binary, e.g. another worktree's). Writes
# WORK/homeserver.yaml and WORK/hs.sh: `hs.sh start|kill|restart` runs the homeserver as a child
# with its pid in WORK/hs.pid; start waits (bounded) for /health, kill is SIGKILL, restart is
# kill then start on the same database. Logs: WORK/homeserver.log (Synapse), WORK/stdout.log.
appservice_homeserver() {
    local mode="$1" work="$2" hs_port="$3" registration="$4"
    local hs_url="http://127.0.0.1:$hs_port" myelin="${MYELIN_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/myelin}"
    local start_cmd boot_wait
    if [ "$mode" = synapse ]; then
        local pytools_bin seed
        pytools_bin=$(scripts/pytools.sh)
        seed=$(python3 -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode().rstrip("="))')
        echo "ed25519 a_asproof $seed" >"$work/signing.key"
        cat >"$work/log.yaml" <<YAML
version: 1
formatters: {precise: {format: "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s"}}
handlers: {file: {class: logging.FileHandler, formatter: precise, filename: "$work/homeserver.log"}}
loggers: {synapse.storage.SQL: {level: WARNING}}
root: {level: INFO, handlers: [file]}
disable_existing_loggers: false
YAML
        unlimited='{per_second: 1000000, burst_count: 10000000}'
        cat >"$work/homeserver.yaml" <<YAML
server_name: localhost
pid_file: "$work/homeserver.pid"
listeners:
  - {port: $hs_port, bind_addresses: [127.0.0.1], type: http, tls: false, x_forwarded: false,
     resources: [{names: [client], compress: false}]}
database: {name: sqlite3, args: {database: "$work/homeserver.db"}}
log_config: "$work/log.yaml"
media_store_path: "$work/media"
signing_key_path: "$work/signing.key"
trusted_key_servers: []
suppress_key_server_warning: true
macaroon_secret_key: asproof-macaroon
form_secret: asproof-form
report_stats: false
enable_metrics: false
use_presence: false
bcrypt_rounds: 4
enable_registration: true
enable_registration_without_verification: true
app_service_config_files: ["$registration"]
rc_message: $unlimited
rc_registration: $unlimited
rc_login: {address: $unlimited, account: $unlimited, failed_attempts: $unlimited}
rc_joins: {local: $unlimited, remote: $unlimited}
rc_invites: {per_room: $unlimited, per_user: $unlimited, per_issuer: $unlimited}
YAML
        start_cmd="\"$pytools_bin/python\" -m synapse.app.homeserver -c \"$work/homeserver.yaml\""
        boot_wait=120
    else
        "$myelin" generate-config --server-name localhost --config-path "$work/homeserver.yaml" --port "$hs_port" >/dev/null
        cat >>"$work/homeserver.yaml" <<YAML
public_baseurl: "$hs_url/"
bcrypt_rounds: 4
enable_registration: true
enable_registration_without_verification: true
app_service_config_files: ["$registration"]
rc_message: {per_second: 100000, burst_count: 100000}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
YAML
        start_cmd="\"$myelin\" -c \"$work/homeserver.yaml\""
        boot_wait=30
    fi

    # hs.sh start|kill|restart: the homeserver as a child with its pid in $work/hs.pid; the
    # program's stage i calls `hs.sh restart` (SIGKILL, then start on the same database).
    cat >"$work/hs.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
cd "$work"
kill_hs() {
    if [ -f "$work/hs.pid" ]; then
        pid=\$(cat "$work/hs.pid")
        kill -KILL "\$pid" 2>/dev/null || true
        for _ in \$(seq 1 100); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$work/hs.pid"
    fi
}
start_hs() {
    $start_cmd >>"$work/stdout.log" 2>&1 </dev/null &
    echo \$! >"$work/hs.pid"
    for _ in \$(seq 1 $((boot_wait * 10))); do
        if curl -fsS -m 2 "$hs_url/health" >/dev/null 2>&1; then return 0; fi
        kill -0 "\$(cat "$work/hs.pid")" 2>/dev/null || { echo "hs.sh: the homeserver exited while starting" >&2; return 1; }
        sleep 0.1
    done
    echo "hs.sh: the homeserver did not answer /health in $boot_wait s" >&2
    return 1
}
case "\$1" in
    start) start_hs ;;
    kill) kill_hs ;;
    restart) kill_hs; start_hs ;;
esac
SH
    chmod +x "$work/hs.sh"
}
