#!/usr/bin/env bash
# Creates (once) a Python virtualenv with the third-party tools the checks use:
# schemathesis (spec conformance), matrix-synapse (its register_new_matrix_user, hash_password
# and --generate-config, to prove compatibility, and the Synapse the interoperability tests
# federate with; psycopg2-binary, a prebuilt wheel, lets it run on PostgreSQL too), matrix-nio with its end-to-end encryption extra
# (a real client library; since 0.26 the extra brings the vodozemac Python bindings, a prebuilt
# wheel on PyPI, instead of python-olm, so no libolm is built or installed), moto's S3 server mode
# (`moto_server`, the S3-speaking server the storage provider's tests run against).
# Prints the venv's bin directory.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MYELIN_PYTOOLS:-$PWD/target/pytools}"
# The tests take MYELIN_PYTOOLS as the venv's bin directory (scripts/test.sh exports it so):
# the venv is its parent, not a new venv inside it.
case "$venv" in */bin) venv="${venv%/bin}" ;; esac
stamp="$venv/.installed-v4"
mkdir -p "$(dirname "$venv")"
# One installer at a time: .ci/run starts one in the background while Rust compiles, and
# scripts/test.sh asks again later (it waits here until the first is done).
exec 9>"$venv.lock"
flock 9
if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        'schemathesis>=4,<5' 'matrix-synapse' 'matrix-nio[e2e]' 'aiohttp' 'pyyaml' 'moto[server]' 'psycopg2-binary' >&2
    touch "$stamp"
fi
echo "$venv/bin"
