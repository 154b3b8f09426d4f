"""Turns a freshly generated Myelin homeserver.yaml into the benchmark configuration that
matches ../shared/bench/mkconfig.py's Synapse configuration: loopback listener with the client
API only, SQLite or PostgreSQL, open registration, rate limits off, presence on, no outgoing
federation, bcrypt cost 12 (Synapse's default).

Usage: python myelin_config.py HOMESERVER_YAML [--db postgres --pg-host H --pg-port P --pg-db D --pg-user U]
                               [--bcrypt-rounds N]
"""
import argparse

import yaml

BIG = {"per_second": 1_000_000, "burst_count": 10_000_000}
RATE_LIMITS = {
    "rc_message": BIG,
    "rc_registration": BIG,
    "rc_registration_token_validity": BIG,
    "rc_login": {"address": BIG, "account": BIG, "failed_attempts": BIG},
    "rc_admin_redaction": BIG,
    "rc_joins": {"local": BIG, "remote": BIG},
    "rc_joins_per_room": BIG,
    "rc_3pid_validation": BIG,
    "rc_invites": {"per_room": BIG, "per_user": BIG, "per_issuer": BIG},
    "rc_third_party_invite": BIG,
    "rc_media_create": BIG,
    "rc_presence": {"per_user": BIG},
    "rc_delayed_event_mgmt": BIG,
    "rc_room_creation": BIG,
    "rc_reports": BIG,
    "rc_user_directory": BIG,
    "rc_key_requests": BIG,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-host")
    ap.add_argument("--pg-port", type=int)
    ap.add_argument("--pg-db")
    ap.add_argument("--pg-user")
    ap.add_argument("--bcrypt-rounds", type=int, default=12)
    a = ap.parse_args()
    with open(a.path) as f:
        cfg = yaml.safe_load(f)
    port = cfg["listeners"][0]["port"]
    cfg["listeners"] = [{
        "port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
        "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}],
    }]
    if a.db == "postgres":
        cfg["database"] = {"name": "psycopg2", "args": {
            "user": a.pg_user, "database": a.pg_db, "host": a.pg_host, "port": a.pg_port,
            "cp_min": 5, "cp_max": 10}}
    cfg["enable_registration"] = True
    cfg["enable_registration_without_verification"] = True
    cfg["bcrypt_rounds"] = a.bcrypt_rounds
    cfg["presence"] = {"enabled": True}
    cfg["trusted_key_servers"] = []
    cfg["suppress_key_server_warning"] = True
    cfg["report_stats"] = False
    cfg["enable_metrics"] = False
    cfg.update(RATE_LIMITS)
    with open(a.path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


if __name__ == "__main__":
    main()
