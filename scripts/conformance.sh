#!/usr/bin/env bash
# Spec conformance: runs schemathesis with the checks not_a_server_error and
# response_schema_conformance, for every OpenAPI file in scripts/conformance.list, against a
# freshly generated Myelin.
#
#   scripts/conformance.sh [--max-examples N]   (MYELIN_CONFORMANCE_LIST=FILE checks another list)
#
# The database is SQLite by default; with MYELIN_CONFORMANCE_DB=postgres it is a fresh schema in
# the PostgreSQL server named by TEST_POSTGRES_URL (URL or key=value form, as exported by
# scripts/services.sh), which must be set.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
spec="${MYELIN_SPEC_DIR:-$root/../shared/spec}/api"
max_examples="${2:-10}"
bin=$(scripts/pytools.sh)

cargo build --quiet --bin myelin
work=$(mktemp -d /tmp/myelin-conformance.XXXXXX)
schema=""
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/myelin generate-config --server-name localhost --config-path "$work/homeserver.yaml" --port "$port" >/dev/null
cat >>"$work/homeserver.yaml" <<YAML
public_baseurl: "http://127.0.0.1:$port/"
serve_server_wellknown: true
bcrypt_rounds: 4
enable_registration: true
enable_registration_without_verification: true
allow_guest_access: true
login_via_existing_session:
  enabled: true
# Never contact other servers (generated requests name matrix.org and others).
federation_domain_whitelist: []
rc_message: {per_second: 100000, burst_count: 100000}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_registration_token_validity: {per_second: 100000, burst_count: 100000}
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
YAML
if [ "${MYELIN_CONFORMANCE_DB:-sqlite}" = "postgres" ]; then
    if [ -z "${TEST_POSTGRES_URL:-}" ]; then
        echo "conformance.sh: MYELIN_CONFORMANCE_DB=postgres needs TEST_POSTGRES_URL (source scripts/services.sh && start_services)" >&2
        exit 1
    fi
    schema="conformance_$$"
    psql "$TEST_POSTGRES_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE SCHEMA $schema" >/dev/null
    python3 scripts/postgres_yaml.py "$work/homeserver.yaml" "$TEST_POSTGRES_URL" "$schema"
fi
echo "== conformance on ${MYELIN_CONFORMANCE_DB:-sqlite}"
target/debug/myelin -c "$work/homeserver.yaml" >"$work/myelin.log" 2>&1 &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
    if [ -n "$schema" ]; then
        psql "$TEST_POSTGRES_URL" -qX -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done

# Every file gets a fresh user: some files log out or deactivate theirs.
new_token() {
    "$bin/python" scripts/conformance_user.py "http://127.0.0.1:$port"
}

failed=0
while read -r file base auth; do
    case "$file" in ''|'#'*) continue ;; esac
    auth_args=()
    if [ "${auth:-}" = "token" ]; then
        auth_args=(-H "Authorization: Bearer $(new_token)")
    fi
    echo "== $file"
    # Two passes: every generated request (valid or not) must not cause a server error, and
    # the responses to valid requests must match the spec's schemas. (Invalid requests can
    # legitimately get errors the spec does not list for that status, e.g. M_MISSING_TOKEN as
    # a 401 where the spec only documents the user-interactive-auth 401.)
    for pass in "all not_a_server_error" "positive not_a_server_error,response_schema_conformance"; do
        set -- $pass
        if ! "$bin/schemathesis" --config-file scripts/conformance.toml run "$spec/$file" --url "http://127.0.0.1:$port$base" \
            --mode "$1" --checks "$2" --max-examples "$max_examples" --seed 1 --no-color \
            "${auth_args[@]}" >"$work/out.txt" 2>&1; then
            cat "$work/out.txt"
            failed=1
        else
            echo "   $1: $(grep -E "^ +[0-9]+ generated" "$work/out.txt" | tr -s ' ')"
        fi
    done
done <"${MYELIN_CONFORMANCE_LIST:-scripts/conformance.list}"
if grep -q "panicked" "$work/myelin.log"; then
    echo "myelin logged a panic during the conformance run:"; grep -B2 -A5 panicked "$work/myelin.log"; failed=1
fi
exit $failed
