#!/usr/bin/env bash
# Runs the README's "run it" command exactly as written on a fresh checkout, checks that
# /_matrix/client/versions answers JSON on 127.0.0.1:8008, and stops the server with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf myelin-data
cargo build --release --quiet
cargo run --release --quiet -- run --server-name localhost >target/readme-smoke.log 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; rm -rf myelin-data' EXIT
for _ in $(seq 1 300); do
    if curl -fsS http://127.0.0.1:8008/_matrix/client/versions >target/readme-smoke.json 2>/dev/null; then
        python3 -c 'import json,sys; d=json.load(open("target/readme-smoke.json")); assert isinstance(d["versions"], list), d'
        echo "README run command: /_matrix/client/versions answered $(cat target/readme-smoke.json)"
        kill -TERM "$pid"
        wait "$pid"
        echo "README run command: stopped cleanly on SIGTERM"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        cat target/readme-smoke.log
        exit 1
    fi
    sleep 0.2
done
echo "the README run command did not serve within 60 s"; cat target/readme-smoke.log; exit 1
