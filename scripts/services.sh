#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis for tests, sourced by scripts/test.sh (and usable by hand:
# `source scripts/services.sh && start_services`, then `stop_services`).
#
# start_services exports TEST_POSTGRES_URL (unless already set). No test uses Redis yet, so
# start_services does not start one; a test suite that needs it calls start_redis after
# start_services (it exports TEST_REDIS_URL when redis-server is installed). Everything lives in
# one temporary directory that stop_services removes.

_svc_dir=""
_svc_pg_started=""
_svc_redis_pid=""

_as_pg_user() {
    if [ "$(id -u)" = "0" ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_postgres() {
    local pgbin
    pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$pgbin" ] && command -v pg_ctl >/dev/null; then
        pgbin=$(dirname "$(command -v pg_ctl)")
    fi
    if [ -z "$pgbin" ]; then
        echo "services.sh: no PostgreSQL server binaries found (apt-get install postgresql)" >&2
        return 1
    fi
    mkdir -p "$_svc_dir/pg" "$_svc_dir/sock"
    if [ "$(id -u)" = "0" ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown -R postgres "$_svc_dir/pg" "$_svc_dir/sock"
    fi
    local port=$((20000 + RANDOM % 20000))
    _as_pg_user "$pgbin/initdb" -D "$_svc_dir/pg" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$_svc_dir/initdb.log" 2>&1 \
        || { cat "$_svc_dir/initdb.log" >&2; return 1; }
    _as_pg_user "$pgbin/pg_ctl" -D "$_svc_dir/pg" -l "$_svc_dir/pg/server.log" -w -t 30 start \
        -o "-k $_svc_dir/sock -h '' -p $port -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null \
        || { cat "$_svc_dir/pg/server.log" >&2; return 1; }
    _svc_pg_started="$pgbin"
    _as_pg_user "$pgbin/createdb" -h "$_svc_dir/sock" -p "$port" -U postgres myelin_test
    export TEST_POSTGRES_URL="host=$_svc_dir/sock port=$port user=postgres dbname=myelin_test"
    echo "services.sh: PostgreSQL at $TEST_POSTGRES_URL" >&2
}

start_redis() {
    if [ -n "${TEST_REDIS_URL:-}" ]; then
        return 0
    fi
    if ! command -v redis-server >/dev/null; then
        echo "services.sh: redis-server not installed; Redis tests will be skipped" >&2
        return 0
    fi
    redis-server --bind 127.0.0.1 --port 0 --unixsocket "$_svc_dir/redis.sock" --unixsocketperm 777 \
        --save '' --appendonly no --daemonize no >"$_svc_dir/redis.log" 2>&1 &
    _svc_redis_pid=$!
    for _ in $(seq 1 50); do
        [ -S "$_svc_dir/redis.sock" ] && break
        sleep 0.1
    done
    export TEST_REDIS_URL="unix://$_svc_dir/redis.sock"
    echo "services.sh: Redis at $TEST_REDIS_URL" >&2
}

start_services() {
    _svc_dir=$(mktemp -d /tmp/myelin-svc.XXXXXX)
    chmod 755 "$_svc_dir"
    if [ -z "${TEST_POSTGRES_URL:-}" ]; then
        start_postgres || return 1
    fi
}

stop_services() {
    if [ -n "$_svc_pg_started" ]; then
        _as_pg_user "$_svc_pg_started/pg_ctl" -D "$_svc_dir/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [ -n "$_svc_redis_pid" ]; then
        kill "$_svc_redis_pid" 2>/dev/null || true
        wait "$_svc_redis_pid" 2>/dev/null || true
    fi
    if [ -n "$_svc_dir" ]; then
        rm -rf "$_svc_dir"
    fi
}
