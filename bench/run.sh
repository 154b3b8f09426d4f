#!/usr/bin/env bash
# Side-by-side benchmark of Myelin and Synapse with ../shared/bench/mxbench.py.
#
#   bench/run.sh [--db sqlite|postgres|both] [--quick] [--e2ee-only] [--media-only] [--federation-only] [--sliding-sync-only]
#                [--appservice-only] [--admin-only] [--out DIR]
#
# Builds Myelin in release mode, installs Synapse from PyPI into the tools venv
# (scripts/pytools.sh), starts each server in turn on loopback with equivalent settings
# (open registration, rate limits off, presence on, bcrypt cost 12, logs at warning level),
# runs mxbench against it with the same parameters, then runs bench/loadgen (a Rust client
# that can outpace the server, for the throughput phases) against Myelin, and writes
# BENCHMARKS.md from the results. bench/loadgen's myelin-e2ee then measures the end-to-end
# encryption rows (key claims, key queries, to-device delivery) against both servers alike.
# --e2ee-only runs those rows alone (and prints their table instead of writing BENCHMARKS.md). --quick runs small sizes (a smoke test, not a figure).
# bench/media.py then measures the media rows (upload and download throughput beside a plain file
# copy, 12-megapixel thumbnails, RSS during a 1 GB upload) against both servers alike, each run
# with `dynamic_thumbnails` on and `max_upload_size` 2G. --media-only runs those rows alone: they
# replace the media section of BENCHMARKS.md (with --quick the table is only printed).
# --federation-only runs bench/federation.py alone: a pair of Synapses, then a pair of Myelins, one
# sending to the other on loopback over TLS (inbound PDUs/s in a busy room, delivery latency to a
# remote /sync, joining a remote room with 10,000 state events); its section replaces the
# federation section of BENCHMARKS.md (with --quick the table is only printed). SQLite only.
# --sliding-sync-only runs bench/sliding_sync.py alone against Synapse, then Myelin, each started as
# above (rate limits off): a user in 1,000 rooms, MSC4186 sliding sync's first response, incremental
# response and wake-up latency of a waiting request, beside /sync v2 for the same user; its section
# replaces the sliding sync section of BENCHMARKS.md (with --quick: 100 rooms, the table only printed).
# --appservice-only runs bench/appservice.py alone against Synapse, then Myelin, each started as above
# (rate limits off) with the same appservice registration (users `@bench_.*`, rate_limited false, its
# URL a receiver in the bench that answers each transaction at once): 10 rooms of 100 ghosts, the
# events per second the appservice receives while the ghosts send, and the lag from a client's send to
# the appservice's receipt (p50/p99); its section replaces the appservices section of BENCHMARKS.md
# (with --quick: 20 ghosts a room, 1,000 messages, the table only printed).
# --admin-only runs bench/admin.py alone against Synapse, then Myelin (SQLite), each started as above:
# the admin API's user list (100,000 users) and room list (10,000 rooms) pages with search and
# ordering, and DELETE /_synapse/admin/v2/rooms of a room of 100,000 messages with purge; Synapse's
# bulk of users and rooms is inserted into its SQLite tables (its HTTP rate is measured on a sample),
# Myelin's goes through the API. Its section replaces the admin API section of BENCHMARKS.md (with
# --quick: 2,000 users / 200 rooms / 2,000 messages, the table only printed).
# MYELIN_BIN=path uses that Myelin binary instead of building one in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared="${MYELIN_SHARED_DIR:-$root/../shared}"
dbs="sqlite"
quick=0
e2ee_only=0
media_only=0
federation_only=0
sliding_sync_only=0
appservice_only=0
admin_only=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --db) dbs="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --e2ee-only) e2ee_only=1; shift ;;
        --media-only) media_only=1; shift ;;
        --federation-only) federation_only=1; shift ;;
        --sliding-sync-only) sliding_sync_only=1; shift ;;
        --appservice-only) appservice_only=1; shift ;;
        --admin-only) admin_only=1; shift ;;
        --out) out="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$dbs" = both ] && dbs="sqlite postgres"
out="${out:-$root/bench/out/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
# MYELIN_COMMIT=sha names the commit a MYELIN_BIN was built from (the report shows it).
echo "${MYELIN_COMMIT:-$(git rev-parse --short HEAD)}" >"$out/commit"
# A given binary may be of another commit than this tree: without MYELIN_COMMIT the report names
# the binary instead.
[ -n "${MYELIN_BIN:-}" ] && [ -z "${MYELIN_COMMIT:-}" ] && echo "the binary $MYELIN_BIN of $(date -u -r "$MYELIN_BIN" '+%Y-%m-%d %H:%M UTC') (this tree at $(git rev-parse --short HEAD))" >"$out/commit"
bin=$(scripts/pytools.sh)
case " $dbs " in
    *" postgres "*)  # Synapse's PostgreSQL driver is an optional extra.
        "$bin/python" -c 'import psycopg2' 2>/dev/null \
            || "$bin/pip" install --quiet --disable-pip-version-check psycopg2-binary >&2 ;;
esac
myelin_bin="${MYELIN_BIN:-}"
if [ -z "$myelin_bin" ]; then
    echo "== building Myelin (release)"
    cargo build --release --quiet --bin myelin
    myelin_bin=target/release/myelin
fi
if [ "$federation_only" = 1 ]; then
    fed_args=()
    [ "$quick" = 1 ] && fed_args=(--quick)
    for kind in synapse myelin; do
        echo "== federation rows: $kind -> $kind (sqlite)"
        "$bin/python" bench/federation.py run --kind "$kind" --myelin-bin "$myelin_bin" --workdir "$out" \
            --out "$out/federation-$kind-sqlite.json" "${fed_args[@]}" 2>"$out/federation-$kind-sqlite.log" || true
    done
    "$bin/python" bench/report.py --federation-only "$out" | tee "$out/FEDERATION.md"
    if [ "$quick" = 0 ]; then
        "$bin/python" bench/report.py --splice-federation "$out/FEDERATION.md" BENCHMARKS.md
        echo "== replaced the federation section of BENCHMARKS.md (raw results in $out)"
    fi
    exit 0
fi
if [ "$admin_only" = 1 ] && [ "$dbs" != sqlite ]; then
    echo "--admin-only runs on SQLite only (Synapse's bulk seeding writes its SQLite file)" >&2; exit 2
fi
if [ "$media_only" = 0 ] && [ "$sliding_sync_only" = 0 ] && [ "$appservice_only" = 0 ] && [ "$admin_only" = 0 ]; then
    echo "== building the load generator (release)"
    cargo build --release --quiet --manifest-path bench/loadgen/Cargo.toml --target-dir target/loadgen
fi
# The phases this run measures.
run_mx=1; run_e2ee=1; run_media=1; run_ss=0; run_as=0; run_admin=0
[ "$e2ee_only" = 1 ] && { run_mx=0; run_media=0; }
[ "$media_only" = 1 ] && { run_mx=0; run_e2ee=0; }
[ "$sliding_sync_only" = 1 ] && { run_mx=0; run_e2ee=0; run_media=0; run_ss=1; }
[ "$appservice_only" = 1 ] && { run_mx=0; run_e2ee=0; run_media=0; run_as=1; }
[ "$admin_only" = 1 ] && { run_mx=0; run_e2ee=0; run_media=0; run_admin=1; }
media_args=()
[ "$quick" = 1 ] && media_args=(--quick)

if [ "$quick" = 1 ]; then
    sizes=(-n 40 --logins 20 --rooms 20 -m 300 --sync-rooms 5 --sync-messages 10 --sync-reps 2
           --incremental 10 --delivery 20 --join-users 39 --join-room-events 100 --newcomers 1)
    loadgen_sizes=(--messages 2000 --joiners 39)
    e2ee_sizes=(--otks-per-device 20 --query-users 50 --queries 20 --to-device-devices 20 --to-device-messages 200)
else
    sizes=()
    loadgen_sizes=(--messages 20000 --joiners 199)
    e2ee_sizes=()
fi

free_port() { "$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() {
    for _ in $(seq 1 600); do
        curl -fsS "http://127.0.0.1:$1/_matrix/client/versions" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2; return 1
}

source scripts/services.sh
cleanup() { stop_services; }
trap cleanup EXIT
_svc_dir=$(mktemp -d /tmp/myelin-bench-svc.XXXXXX); chmod 755 "$_svc_dir"

pg_args=()
pg_pid_args=()
for db in $dbs; do
    if [ "$db" = postgres ]; then
        if [ -z "${TEST_POSTGRES_URL:-}" ]; then start_postgres; fi
        pg_host=$(echo "$TEST_POSTGRES_URL" | sed -E 's/.*host=([^ ]+).*/\1/')
        pg_port=$(echo "$TEST_POSTGRES_URL" | sed -E 's/.*port=([^ ]+).*/\1/')
        for name in synapse myelin; do
            _as_pg_user "$_svc_pg_started/createdb" -h "$pg_host" -p "$pg_port" -U postgres \
                --encoding=UTF8 --locale=C --template=template0 "bench_$name" 2>/dev/null || true
        done
        pg_pid=$(head -1 "$_svc_dir/pg/postmaster.pid")
        pg_pid_args=(--pid "$pg_pid")
    fi

    # --- Synapse -------------------------------------------------------------
    sdir="$out/synapse-$db"; mkdir -p "$sdir"
    port=$(free_port)
    (cd "$sdir" && "$bin/python" -m synapse.app.homeserver --server-name bench.local \
        --config-path homeserver.yaml --generate-config --report-stats=no >/dev/null)
    mk_args=("$sdir" --port "$port")
    if [ "$db" = postgres ]; then
        mk_args+=(--db postgres --pg-host "$pg_host" --pg-port "$pg_port" --pg-db bench_synapse --pg-user postgres)
    fi
    "$bin/python" "$shared/bench/mkconfig.py" "${mk_args[@]}" >/dev/null
    [ "$run_media" = 1 ] && "$bin/python" bench/media.py configure "$sdir/homeserver.yaml"
    [ "$run_as" = 1 ] && "$bin/python" bench/appservice.py configure "$sdir/homeserver.yaml" \
        --registration "$sdir/appservice.yaml" --as-port "$(free_port)"
    (cd "$sdir" && exec "$bin/python" -m synapse.app.homeserver -c homeserver.yaml >synapse.out 2>&1) &
    spid=$!
    wait_up "$port"
    version=$("$bin/python" -c 'import synapse; print(synapse.__version__)')
    [ "$run_mx" = 1 ] && echo "== mxbench against Synapse $version ($db)"
    [ "$run_mx" = 1 ] && { "$bin/python" "$shared/bench/mxbench.py" --url "http://127.0.0.1:$port" --pid "$spid" "${pg_pid_args[@]}" \
        --label "synapse-$db" --out "$out/synapse-$db.json" "${sizes[@]}" >/dev/null 2>"$out/synapse-$db.log" || true; }
    [ "$run_e2ee" = 1 ] && echo "== end-to-end encryption rows against Synapse ($db)"
    [ "$run_e2ee" = 1 ] && { target/loadgen/release/myelin-e2ee --url "http://127.0.0.1:$port" --pid "$spid" "${e2ee_sizes[@]}" \
        --out "$out/e2ee-synapse-$db.json" >/dev/null 2>"$out/e2ee-synapse-$db.log" || true; }
    [ "$run_media" = 1 ] && echo "== media rows against Synapse ($db)"
    [ "$run_media" = 1 ] && { "$bin/python" bench/media.py run --url "http://127.0.0.1:$port" --pid "$spid" --label "synapse-$db" \
        --workdir "$out" --out "$out/media-synapse-$db.json" "${media_args[@]}" 2>"$out/media-synapse-$db.log" || true; }
    [ "$run_ss" = 1 ] && echo "== sliding sync rows against Synapse ($db)"
    [ "$run_ss" = 1 ] && { "$bin/python" bench/sliding_sync.py run --url "http://127.0.0.1:$port" --pid "$spid" \
        --label "synapse-$db" --out "$out/sliding-sync-synapse-$db.json" "${media_args[@]}" 2>"$out/sliding-sync-synapse-$db.log" || true; }
    [ "$run_as" = 1 ] && echo "== appservice rows against Synapse ($db)"
    [ "$run_as" = 1 ] && { "$bin/python" bench/appservice.py run --url "http://127.0.0.1:$port" --pid "$spid" \
        --label "synapse-$db" --registration "$sdir/appservice.yaml" --out "$out/appservice-synapse-$db.json" \
        "${media_args[@]}" 2>"$out/appservice-synapse-$db.log" || true; }
    [ "$run_admin" = 1 ] && echo "== admin API rows against Synapse ($db)"
    [ "$run_admin" = 1 ] && { "$bin/python" bench/admin.py run --url "http://127.0.0.1:$port" --pid "$spid" --kind synapse \
        --config "$sdir/homeserver.yaml" --label "synapse-$db" --out "$out/admin-synapse-$db.json" "${media_args[@]}" \
        2>"$out/admin-synapse-$db.log" || true; }
    kill -TERM "$spid"; wait "$spid" 2>/dev/null || true

    # --- Myelin --------------------------------------------------------------
    mdir="$out/myelin-$db"; mkdir -p "$mdir"
    port=$(free_port)
    "$myelin_bin" generate-config --server-name bench.local --config-path "$mdir/homeserver.yaml" --port "$port" >/dev/null
    conf_args=("$mdir/homeserver.yaml")
    if [ "$db" = postgres ]; then
        conf_args+=(--db postgres --pg-host "$pg_host" --pg-port "$pg_port" --pg-db bench_myelin --pg-user postgres)
    fi
    "$bin/python" bench/myelin_config.py "${conf_args[@]}"
    [ "$run_media" = 1 ] && "$bin/python" bench/media.py configure "$mdir/homeserver.yaml"
    [ "$run_as" = 1 ] && "$bin/python" bench/appservice.py configure "$mdir/homeserver.yaml" \
        --registration "$mdir/appservice.yaml" --as-port "$(free_port)"
    RUST_LOG=warn "$myelin_bin" -c "$mdir/homeserver.yaml" >"$mdir/myelin.out" 2>&1 &
    mpid=$!
    wait_up "$port"
    [ "$run_mx" = 1 ] && echo "== mxbench against Myelin ($db)"
    [ "$run_mx" = 1 ] && { "$bin/python" "$shared/bench/mxbench.py" --url "http://127.0.0.1:$port" --pid "$mpid" "${pg_pid_args[@]}" \
        --label "myelin-$db" --out "$out/myelin-$db.json" "${sizes[@]}" >/dev/null 2>"$out/myelin-$db.log" || true; }
    [ "$run_mx" = 1 ] && echo "== loadgen against Myelin ($db)"
    [ "$run_mx" = 1 ] && { target/loadgen/release/myelin-loadgen --url "http://127.0.0.1:$port" --pid "$mpid" "${loadgen_sizes[@]}" \
        --out "$out/loadgen-myelin-$db.json" 2>"$out/loadgen-myelin-$db.log" || true; }
    [ "$run_e2ee" = 1 ] && echo "== end-to-end encryption rows against Myelin ($db)"
    [ "$run_e2ee" = 1 ] && { target/loadgen/release/myelin-e2ee --url "http://127.0.0.1:$port" --pid "$mpid" "${e2ee_sizes[@]}" \
        --out "$out/e2ee-myelin-$db.json" >/dev/null 2>"$out/e2ee-myelin-$db.log" || true; }
    [ "$run_media" = 1 ] && echo "== media rows against Myelin ($db)"
    [ "$run_media" = 1 ] && { "$bin/python" bench/media.py run --url "http://127.0.0.1:$port" --pid "$mpid" --label "myelin-$db" \
        --workdir "$out" --out "$out/media-myelin-$db.json" "${media_args[@]}" 2>"$out/media-myelin-$db.log" || true; }
    [ "$run_ss" = 1 ] && echo "== sliding sync rows against Myelin ($db)"
    [ "$run_ss" = 1 ] && { "$bin/python" bench/sliding_sync.py run --url "http://127.0.0.1:$port" --pid "$mpid" \
        --label "myelin-$db" --out "$out/sliding-sync-myelin-$db.json" "${media_args[@]}" 2>"$out/sliding-sync-myelin-$db.log" || true; }
    [ "$run_as" = 1 ] && echo "== appservice rows against Myelin ($db)"
    [ "$run_as" = 1 ] && { "$bin/python" bench/appservice.py run --url "http://127.0.0.1:$port" --pid "$mpid" \
        --label "myelin-$db" --registration "$mdir/appservice.yaml" --out "$out/appservice-myelin-$db.json" \
        "${media_args[@]}" 2>"$out/appservice-myelin-$db.log" || true; }
    [ "$run_admin" = 1 ] && echo "== admin API rows against Myelin ($db)"
    # Myelin's message room gets no more messages than Synapse reached within the time limit.
    [ "$run_admin" = 1 ] && { "$bin/python" bench/admin.py run --url "http://127.0.0.1:$port" --pid "$mpid" --kind myelin \
        --config "$mdir/homeserver.yaml" --label "myelin-$db" --out "$out/admin-myelin-$db.json" "${media_args[@]}" \
        --match "$out/admin-synapse-$db.json" 2>"$out/admin-myelin-$db.log" || true; }
    kill -TERM "$mpid"; wait "$mpid" 2>/dev/null || true
done

if [ "$e2ee_only" = 1 ]; then
    "$bin/python" bench/report.py --e2ee-only "$out" | tee "$out/E2EE.md"
    exit 0
fi
if [ "$media_only" = 1 ]; then
    "$bin/python" bench/report.py --media-only "$out" | tee "$out/MEDIA.md"
    if [ "$quick" = 0 ]; then
        "$bin/python" bench/report.py --splice-media "$out/MEDIA.md" BENCHMARKS.md
        echo "== replaced the media section of BENCHMARKS.md (raw results in $out)"
    fi
    exit 0
fi
if [ "$appservice_only" = 1 ]; then
    "$bin/python" bench/report.py --appservice-only "$out" | tee "$out/APPSERVICE.md"
    if [ "$quick" = 0 ]; then
        "$bin/python" bench/report.py --splice-appservice "$out/APPSERVICE.md" BENCHMARKS.md
        echo "== replaced the appservices section of BENCHMARKS.md (raw results in $out)"
    fi
    exit 0
fi
if [ "$admin_only" = 1 ]; then
    "$bin/python" bench/report.py --admin-only "$out" | tee "$out/ADMIN.md"
    if [ "$quick" = 0 ]; then
        "$bin/python" bench/report.py --splice-admin "$out/ADMIN.md" BENCHMARKS.md
        echo "== replaced the admin API section of BENCHMARKS.md (raw results in $out)"
    fi
    exit 0
fi
if [ "$sliding_sync_only" = 1 ]; then
    "$bin/python" bench/report.py --sliding-sync-only "$out" | tee "$out/SLIDING_SYNC.md"
    if [ "$quick" = 0 ]; then
        "$bin/python" bench/report.py --splice-sliding-sync "$out/SLIDING_SYNC.md" BENCHMARKS.md
        echo "== replaced the sliding sync section of BENCHMARKS.md (raw results in $out)"
    fi
    exit 0
fi
"$bin/python" bench/report.py "$out" > "$out/BENCHMARKS.md"
cp "$out/BENCHMARKS.md" BENCHMARKS.md
echo "== wrote BENCHMARKS.md (raw results in $out)"
