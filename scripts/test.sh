#!/usr/bin/env bash
# Runs the whole test suite on SQLite and on PostgreSQL.
#
#   scripts/test.sh [extra cargo-nextest arguments]
#
# Starts a throwaway PostgreSQL cluster (unless TEST_POSTGRES_URL is set) and removes it
# afterwards. (No test uses Redis yet, so none is started; services.sh keeps start_redis for
# the first test that does.)
#   Pass 1: every test; end-to-end tests on SQLite, store tests on both engines.
#   Pass 2: the end-to-end tests again, on PostgreSQL.
#   Pass 3: spec conformance on SQLite, then on PostgreSQL (the same cluster) with 3 examples
#           per operation instead of 10 (every file and operation still runs on both engines;
#           the engines differ in storage, which the end-to-end tests of pass 2 cover in depth).
#   Pass 4: end-to-end encryption with a real client library (matrix-sdk, scripts/sdk_e2ee.sh)
#           against a Myelin on SQLite (with matrix-sdk-ui's room list over sliding sync), then
#           across servers (scripts/sdk_federation.sh: Myelin with Synapse, Myelin with Myelin,
#           on SQLite).
#   Pass 5: application services with real bridges against a Myelin on SQLite: a mautrix-python
#           bridge (scripts/appservice_bridge.sh) and mautrix-telegram's start-up
#           (scripts/appservice_telegram.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each pass prints how long it took.
pass_started=$SECONDS
pass_done() { echo "== $1 took $((SECONDS - pass_started)) s"; pass_started=$SECONDS; }

source scripts/services.sh
trap stop_services EXIT
start_services

export MYELIN_REQUIRE_POSTGRES=1
# The S3 storage provider's tests run against moto (installed by scripts/pytools.sh below).
export MYELIN_REQUIRE_S3=1
export RUST_BACKTRACE=1
# Third-party tools the compatibility tests run (Synapse's scripts, matrix-nio, schemathesis).
MYELIN_PYTOOLS=$(scripts/pytools.sh)
export MYELIN_PYTOOLS MYELIN_REQUIRE_PYTOOLS=1

pass_done "services and python tools"

echo "== pass 1: all tests (end-to-end on SQLite; store tests on SQLite and PostgreSQL)"
cargo nextest run --workspace --no-fail-fast "$@"
pass_done "pass 1"

echo "== pass 2: end-to-end tests on PostgreSQL"
MYELIN_TEST_DB=postgres cargo nextest run --workspace --no-fail-fast -E 'binary(e2e)' "$@"
pass_done "pass 2"

# The matrix-sdk client of pass 4 (its own workspace, about 9 minutes on 2 cores) builds at low
# priority while the conformance runs (mostly one Python process and one server);
# pass 4 then finds it built (a failed build here is built again, and reported, by pass 4).
mkdir -p target
nice -n 10 cargo build --quiet --locked --manifest-path clients/sdk-e2ee/Cargo.toml \
    --target-dir clients/sdk-e2ee/target >target/sdk-e2ee-build.log 2>&1 &
sdk_build=$!
# The application-service proofs' venvs (pass 5) install meanwhile too (flock'd: pass 5 waits).
(scripts/appservice_tools.sh bridge && scripts/appservice_tools.sh telegram) >target/appservice-tools.log 2>&1 &

echo "== pass 3: spec conformance (schemathesis against a running Myelin), SQLite then PostgreSQL"
status=0
MYELIN_CONFORMANCE_DB=sqlite scripts/conformance.sh || status=1
MYELIN_CONFORMANCE_DB=postgres scripts/conformance.sh --max-examples 3 || status=1
pass_done "pass 3"

wait "$sdk_build" || echo "the background build of clients/sdk-e2ee failed (pass 4 builds it again): $(tail -5 target/sdk-e2ee-build.log)"
pass_done "waiting for the matrix-sdk client's build"

echo "== pass 4: end-to-end encryption with matrix-sdk clients (scripts/sdk_e2ee.sh)"
scripts/sdk_e2ee.sh || status=1
pass_done "pass 4, one server (sdk_e2ee.sh)"
echo "== pass 4: encrypted messages across servers with matrix-sdk clients (scripts/sdk_federation.sh)"
scripts/sdk_federation.sh || status=1
pass_done "pass 4, across servers (sdk_federation.sh)"

echo "== pass 5: application services with real bridges (mautrix-python, mautrix-telegram)"
scripts/appservice_bridge.sh myelin || status=1
pass_done "pass 5, mautrix-python bridge (appservice_bridge.sh)"
scripts/appservice_telegram.sh myelin || status=1
pass_done "pass 5, mautrix-telegram start-up (appservice_telegram.sh)"
exit $status
