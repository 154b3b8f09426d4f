#!/usr/bin/env bash
# Creates (once) the virtualenvs of the application-service proofs, apart from scripts/pytools.sh's
# (mautrix pins its own aiohttp range, and a bridge's dependencies must not move Synapse's):
#   bridge    target/appservice-venv: mautrix-python, pinned, for clients/appservice-bridge
#   telegram  target/mautrix-telegram-venv: the mautrix-telegram bridge, pinned, for
#             scripts/appservice_telegram.sh
# Prints the venv's bin directory. Both come from PyPI as prebuilt wheels (measured on the 2-core
# machine: about 8 s and 12 s).
#
#   scripts/appservice_tools.sh bridge|telegram
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:?usage: appservice_tools.sh bridge|telegram}"
case "$which" in
    bridge)
        venv="$PWD/target/appservice-venv"
        stamp="$venv/.installed-v1"
        packages=(-r clients/appservice-bridge/requirements.txt)
        ;;
    telegram)
        venv="$PWD/target/mautrix-telegram-venv"
        stamp="$venv/.installed-v2"
        # [sqlite]: aiosqlite, for its database on SQLite; mautrix pinned to what 0.15.3 resolved to.
        packages=('mautrix-telegram[sqlite]==0.15.3' 'mautrix==0.20.8')
        ;;
    *) echo "usage: appservice_tools.sh bridge|telegram" >&2; exit 2 ;;
esac
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -f "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    timeout 600 "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2
    touch "$stamp"
fi
echo "$venv/bin"
