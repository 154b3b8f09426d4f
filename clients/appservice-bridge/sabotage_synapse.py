#!/usr/bin/env python3
"""Stage i's restart with a sabotaged Synapse, to show that stage i can fail:

    sabotage_synapse.py lose|repeat WORK

Kills the homeserver (WORK/hs.sh kill), edits Synapse's SQLite database, starts it again
(WORK/hs.sh start). `lose`: forgets the transactions not yet delivered and the appservice's state,
so the messages sent while the bridge was down never arrive. `repeat`: copies each pending
transaction under another id, so its events are delivered twice. Synapse-only (its tables).
"""

import sqlite3
import subprocess
import sys


def main() -> int:
    mode, work = sys.argv[1], sys.argv[2]
    subprocess.run([f"{work}/hs.sh", "kill"], check=True, timeout=60)
    db = sqlite3.connect(f"{work}/homeserver.db")
    pending = db.execute("SELECT as_id, txn_id, event_ids FROM application_services_txns").fetchall()
    print(f"sabotage {mode}: pending transactions {pending}", file=sys.stderr)
    if mode == "lose":
        db.execute("DELETE FROM application_services_txns")
        db.execute("DELETE FROM application_services_state")
    elif mode == "repeat":
        for as_id, txn_id, event_ids in pending:
            db.execute("INSERT INTO application_services_txns VALUES (?, ?, ?)", (as_id, txn_id + 1000, event_ids))
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    db.commit()
    db.close()
    return subprocess.run([f"{work}/hs.sh", "start"], timeout=180).returncode


if __name__ == "__main__":
    sys.exit(main())
