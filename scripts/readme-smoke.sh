#!/usr/bin/env bash
# Runs the README's "run it" command on a fresh checkout, checks that
# /_matrix/client/versions answers JSON on 127.0.0.1:8008, and stops the server with SIGTERM.
#
# The command is taken from README.md. In CI (MYELIN_SMOKE_PROFILE=dev, set by .ci/run) it runs
# with the debug profile the tests already built: the same code and arguments, without a second,
# optimised build of every dependency (about 15 minutes on 2 cores). Without that variable it
# runs exactly as written.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=$(grep -m1 -E '^    cargo run --release -- run ' README.md | sed -E 's/^ +//')
if [ -z "$cmd" ]; then
    echo "README.md has no '    cargo run --release -- run ...' line"; exit 1
fi
build=(cargo build --quiet --release)
if [ "${MYELIN_SMOKE_PROFILE:-release}" = dev ]; then
    cmd=${cmd/ --release/}
    build=(cargo build --quiet)
fi
echo "README run command: $cmd"
rm -rf myelin-data
# Built first, so that the 60 s wait below times the start, not the build.
"${build[@]}"
${cmd/cargo run/cargo run --quiet} >target/readme-smoke.log 2>&1 &
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
