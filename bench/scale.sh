#!/usr/bin/env bash
# Scale benchmark of Myelin alone (SQLite): a room of 1,000,000 events, a user in 1,000
# rooms, a 10,000-member room, database size per 100,000 events and per 1,000 state changes,
# RSS idle and after each phase. Writes the "Scale" section of BENCHMARKS.md.
#
#   bench/scale.sh [--quick] [--events N] [--rooms N] [--members N] [--out DIR]
#
# The big room is filled by the `seed_room` example (the service layer's bulk write path,
# with the server stopped): a million sends over HTTP would take most of an hour. Everything
# measured is measured over HTTP against the release binary. Registration uses bcrypt cost 4
# here: hashing cost is not what this benchmark is about. --quick is a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
events=1000000; rooms=1000; members=10000; changes=1000; reps=50
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) events=20000; rooms=100; members=500; changes=100; reps=10; shift ;;
        --events) events="$2"; shift 2 ;;
        --rooms) rooms="$2"; shift 2 ;;
        --members) members="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
out="${out:-$root/bench/out/scale-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
git rev-parse --short HEAD >"$out/commit"
bin=$(scripts/pytools.sh)
echo "== building Myelin, the seeder and the load generator (release)"
cargo build --release --quiet --bin myelin --example seed_room
cargo build --release --quiet --manifest-path bench/loadgen/Cargo.toml --target-dir target/loadgen
scale=target/loadgen/release/myelin-scale

port=$("$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir="$out/server"; mkdir -p "$dir"
target/release/myelin generate-config --server-name bench.local --config-path "$dir/homeserver.yaml" --port "$port" >/dev/null
"$bin/python" bench/myelin_config.py "$dir/homeserver.yaml" --bcrypt-rounds 4
db="$dir/homeserver.db"
url="http://127.0.0.1:$port"

pid=""
start() {
    RUST_LOG=warn target/release/myelin -c "$dir/homeserver.yaml" >>"$dir/myelin.out" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        curl -fsS "$url/_matrix/client/versions" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "Myelin did not come up" >&2; exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true' EXIT
# Bytes the database holds (pages in use, the write-ahead log's committed pages included).
db_bytes() {
    "$bin/python" - "$db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
page = c.execute("pragma page_size").fetchone()[0]
used = c.execute("pragma page_count").fetchone()[0] - c.execute("pragma freelist_count").fetchone()[0]
print(used * page)
PY
}

echo "== big room: $events events"
start
"$scale" --url "$url" --pid "$pid" --out "$out/setup.json" setup >/dev/null
stop
state="$out/setup.json"
room=$("$bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["room_id"])' "$state")
owner=$("$bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["user_id"])' "$state")
before=$(db_bytes)
RUST_LOG=warn target/release/examples/seed_room "$dir/homeserver.yaml" "$room" "$owner" "$events" >"$out/seed.json"
after=$(db_bytes)
echo "{\"events\": $events, \"before\": $before, \"after\": $after}" >"$out/db-events.json"
middle=$("$bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["middle_event"])' "$out/seed.json")
start
"$scale" --url "$url" --pid "$pid" --reps "$reps" --out "$out/big-room.json" big-room --state "$state" --middle "$middle" >/dev/null
echo "== one user in $rooms rooms"
"$scale" --url "$url" --pid "$pid" --reps "$reps" --out "$out/many-rooms.json" many-rooms --rooms "$rooms" >/dev/null
echo "== a room of $members members"
"$scale" --url "$url" --pid "$pid" --reps "$reps" --out "$out/big-members.json" \
    big-members --members "$members" --state-out "$out/big-members-state.json" >/dev/null
echo "== $changes state changes in it"
before=$(db_bytes)
"$scale" --url "$url" --pid "$pid" --out "$out/state-changes.json" \
    state-changes --state "$out/big-members-state.json" --changes "$changes" >/dev/null
after=$(db_bytes)
echo "{\"changes\": $changes, \"before\": $before, \"after\": $after}" >"$out/db-state.json"
stop

"$bin/python" bench/scale_report.py "$out" BENCHMARKS.md
echo "== wrote the Scale section of BENCHMARKS.md (raw results in $out)"
