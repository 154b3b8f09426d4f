"""Points a generated homeserver.yaml at PostgreSQL (used by scripts/conformance.sh).

    python3 scripts/postgres_yaml.py CONFIG CONNECTION SCHEMA

CONNECTION is a libpq connection string, as a URL (postgres://user:pw@host:port/db) or in
key=value form (host=/tmp/sock port=5432 user=postgres dbname=myelin_test). The config's
`database` section is replaced by a psycopg2 one using SCHEMA as the search path.
"""
import json
import shlex
import sys
from urllib.parse import unquote, urlsplit


def parse(connection):
    if connection.startswith(("postgres://", "postgresql://")):
        url = urlsplit(connection)
        args = {
            "host": unquote(url.hostname or "") or None,
            "port": url.port,
            "user": unquote(url.username) if url.username else None,
            "password": unquote(url.password) if url.password else None,
            "dbname": unquote(url.path.lstrip("/")) or None,
        }
    else:
        pairs = dict(item.split("=", 1) for item in shlex.split(connection))
        args = {key: pairs.get(key) for key in ("host", "user", "password", "dbname")}
        args["port"] = int(pairs["port"]) if "port" in pairs else None
    return {key: value for key, value in args.items() if value is not None}


def main():
    config, connection, schema = sys.argv[1:4]
    with open(config) as f:
        lines = f.read().splitlines()
    kept, skipping = [], False
    for line in lines:
        if line.startswith("database:"):
            skipping = True
            continue
        if skipping and line and not line[0].isspace():
            skipping = False
        if not skipping:
            kept.append(line)
    args = parse(connection)
    args.update({"options": f"-c search_path={schema}", "cp_min": 1, "cp_max": 10})
    # JSON is YAML: the values are quoted safely.
    kept.append("database: " + json.dumps({"name": "psycopg2", "args": args}))
    with open(config, "w") as f:
        f.write("\n".join(kept) + "\n")


if __name__ == "__main__":
    main()
