#!/usr/bin/env bash
# Creates (once) a Python virtualenv with the third-party tools the checks use:
# schemathesis (spec conformance), matrix-synapse (its register_new_matrix_user, hash_password
# and --generate-config, to prove compatibility), matrix-nio (a real client library).
# Prints the venv's bin directory.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MYELIN_PYTOOLS:-$PWD/target/pytools}"
# The tests take MYELIN_PYTOOLS as the venv's bin directory (scripts/test.sh exports it so):
# the venv is its parent, not a new venv inside it.
case "$venv" in */bin) venv="${venv%/bin}" ;; esac
stamp="$venv/.installed-v1"
if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        'schemathesis>=4,<5' 'matrix-synapse' 'matrix-nio' 'aiohttp' 'pyyaml' >&2
    touch "$stamp"
fi
echo "$venv/bin"
