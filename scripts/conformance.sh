#!/usr/bin/env bash
# Spec conformance: runs schemathesis with the checks not_a_server_error and
# response_schema_conformance, for every OpenAPI file in scripts/conformance.list, against a
# freshly generated Myelin on SQLite.
#
#   scripts/conformance.sh [--max-examples N]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
spec="${MYELIN_SPEC_DIR:-$root/../shared/spec}/api"
max_examples="${2:-10}"
bin=$(scripts/pytools.sh)

cargo build --quiet --bin myelin
work=$(mktemp -d /tmp/myelin-conformance.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/myelin generate-config --server-name localhost --config-path "$work/homeserver.yaml" --port "$port" >/dev/null
cat >>"$work/homeserver.yaml" <<YAML
public_baseurl: "http://127.0.0.1:$port/"
serve_server_wellknown: true
bcrypt_rounds: 4
YAML
target/debug/myelin -c "$work/homeserver.yaml" >"$work/myelin.log" 2>&1 &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done

token=""
get_token() {
    if [ -z "$token" ]; then
        token=$("$bin/python" scripts/conformance_user.py "http://127.0.0.1:$port" "$work/homeserver.yaml")
    fi
    echo "$token"
}

failed=0
while read -r file base auth; do
    case "$file" in ''|'#'*) continue ;; esac
    args=(run "$spec/$file" --url "http://127.0.0.1:$port$base"
          --checks not_a_server_error,response_schema_conformance
          --max-examples "$max_examples" --seed 1 --no-color)
    if [ "${auth:-}" = "token" ]; then
        args+=(-H "Authorization: Bearer $(get_token)")
    fi
    echo "== $file"
    if ! "$bin/schemathesis" "${args[@]}" >"$work/out.txt" 2>&1; then
        cat "$work/out.txt"
        failed=1
    else
        grep -E "generated|No issues" "$work/out.txt" || true
    fi
done <scripts/conformance.list
if grep -q "panicked" "$work/myelin.log"; then
    echo "myelin logged a panic during the conformance run:"; grep -B2 -A5 panicked "$work/myelin.log"; failed=1
fi
exit $failed
