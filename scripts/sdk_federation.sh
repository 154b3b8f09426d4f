#!/usr/bin/env bash
# Encrypted messages across servers with a real client library (stage d of clients/sdk-e2ee):
# a matrix-sdk client on one homeserver and one on another, federating on loopback over TLS
# with a test CA, exactly as the interoperability tests set them up (the myelin-federation-pair
# binary of crates/test-support starts them). Two combinations, each run both ways (the room
# created on one server, then on the other): Myelin with Synapse (from the Python tools venv,
# scripts/pytools.sh), then Myelin with Myelin.
#
#   scripts/sdk_federation.sh [synapse] [myelin]      # both by default
#
# The database is SQLite (PostgreSQL for Myelin and Synapse with MYELIN_TEST_DB=postgres and
# TEST_POSTGRES_URL, as in the tests). Fails when a combination fails; prints each one's time.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
peers=("$@")
[ "${#peers[@]}" != 0 ] || peers=(synapse myelin)

cargo build --quiet --locked --manifest-path clients/sdk-e2ee/Cargo.toml --target-dir clients/sdk-e2ee/target
cargo build --quiet -p myelin-test-support --bin myelin-federation-pair

status=0
for peer in "${peers[@]}"; do
    started=$SECONDS
    echo "== matrix-sdk encrypted messages between Myelin and $peer (federation over TLS on loopback)"
    MYELIN_REQUIRE_PYTOOLS=1 "$target/debug/myelin-federation-pair" "$peer" -- \
        clients/sdk-e2ee/target/debug/myelin-sdk-e2ee '{myelin}' --peer '{peer}' || status=1
    echo "== Myelin and $peer took $((SECONDS - started)) s"
done
exit "$status"
