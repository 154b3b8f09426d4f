"""The admin API rows of the benchmark (issue 16 "Performance"), run by bench/run.sh
--admin-only against each server in turn (Synapse, then Myelin), started by run.sh with the
same settings as the other rows (rate limits off on both).

Setup, on each server:

- an admin user, registered through shared-secret registration (`/_synapse/admin/v1/register`,
  the secret read from the server's homeserver.yaml);
- --users users (100,000; 2,000 with --quick), each with a display name. The first
  --http-users of them (500; 200 with --quick) are made through the admin API, `PUT
  /_synapse/admin/v2/users/@u:bench.local` with a display name and no password, by a pool of
  --workers threads: that is the measured HTTP seeding rate. The rest: on Myelin the same way
  (it is fast enough); on Synapse, whose HTTP rate would take the better part of an hour at
  this size, rows inserted straight into its SQLite file (`users` and `profiles`, the two
  tables its admin user list reads), with creation times one second apart;
- --rooms rooms (10,000; 200 with --quick), each named: the first --http-rooms (100; 50 with
  --quick) made with `POST /_matrix/client/v3/createRoom` by the admin, the rest the same way
  on Myelin and, on Synapse, inserted into the three tables its admin room list reads
  (`rooms`, `room_stats_state`, `room_stats_current`, one joined member each, as a room made
  by createRoom has);
- a room of --events messages (100,000; 2,000 with --quick) sent by the admin through
  `PUT /rooms/{id}/send`, by a pool of --senders threads, within --event-seconds (540 s: a
  server that cannot send them all in that time stops there, and the count it reached is the
  size the other server is given with --events).

Rows, each checked while measured (a wrong answer gets an error row, not a number), p50/p99
over --reps requests each (20; 5 with --quick):

- `GET /_synapse/admin/v2/users`: from=0 limit=100; a deep page (from=users/2); name=<a
  user's localpart number> (exactly that user must come back); order_by=name (sorted by
  name); order_by=creation_ts dir=b (newest first). The total must be the users seeded
  plus the admin;
- `GET /_synapse/admin/v1/rooms`: order_by=joined_members; order_by=name (sorted by name);
  search_term=<a room's name> (exactly that room must come back). The total must be the rooms
  made (plus the message room);
- `DELETE /_synapse/admin/v2/rooms/{room}` of the message room with `{"purge": true}`: the
  time from the request to the first `GET /_synapse/admin/v2/rooms/delete_status/{delete_id}`
  (polled every 50 ms) answering `complete`.

Usage: python admin.py run --url URL --config HOMESERVER_YAML --kind synapse|myelin --label L
                           --out FILE [--pid PID] [--quick] [--match SYNAPSE_JSON]
"""
import argparse
import concurrent.futures
import hashlib
import hmac
import json
import os
import sqlite3
import sys
import threading
import time
import uuid

import requests
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from media import status_kib  # noqa: E402
from sliding_sync import TRANSPORT_ERRORS, Client, Error, summary  # noqa: E402

SERVER = "bench.local"
PAGE = 100


class Admin(Client):
    """The admin's keep-alive sessions, one per thread."""

    OK = (200, 201)  # 201: PUT /_synapse/admin/v2/users made the user

    def timed(self, method, path, params=None, body=None):
        start = time.perf_counter()
        data = self.call(method, path, body=body, params=params)
        return (time.perf_counter() - start) * 1000, data


def register_admin(url, secret, localpart):
    """Shared-secret registration of an admin (`/_synapse/admin/v1/register`)."""
    nonce = requests.get(f"{url}/_synapse/admin/v1/register", timeout=60).json()["nonce"]
    password = "Bench-password-1!"
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    for part in (nonce, localpart, password, "admin"):
        mac.update(part.encode())
        if part != "admin":
            mac.update(b"\x00")
    r = requests.post(f"{url}/_synapse/admin/v1/register", json={
        "nonce": nonce, "username": localpart, "password": password, "admin": True,
        "mac": mac.hexdigest()}, timeout=120)
    if r.status_code != 200:
        raise Error(f"shared-secret registration: {r.status_code} {r.text[:200]}")
    data = r.json()
    return Admin(url, data["access_token"], data["user_id"])


def pool_map(fn, items, workers):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


# --- seeding ---------------------------------------------------------------------------------

def localpart(tag, i):
    return f"ab{tag}u{i:06d}"


def displayname(i):
    return f"Bench User {i:06d}"


def room_name(tag, i):
    return f"bench room {tag} {i:05d}"


def http_users(admin, tag, indices, workers):
    def put(i):
        admin.call("PUT", f"/_synapse/admin/v2/users/@{localpart(tag, i)}:{SERVER}",
                   {"displayname": displayname(i)})
    start = time.perf_counter()
    pool_map(put, indices, workers)
    return time.perf_counter() - start


def http_rooms(admin, tag, indices, workers):
    def make(i):
        return admin.call("POST", "/_matrix/client/v3/createRoom",
                          {"preset": "private_chat", "name": room_name(tag, i)})["room_id"]
    start = time.perf_counter()
    ids = pool_map(make, indices, workers)
    return time.perf_counter() - start, ids


def columns(db, table):
    """(name, type, not null, default) of each column of a table."""
    return [(r[1], (r[2] or "").upper(), r[3], r[4]) for r in db.execute(f"PRAGMA table_info({table})")]


def insert_rows(db, table, rows):
    """Inserts rows (dicts) into a Synapse table, any other NOT NULL column without a default
    given 0 (numbers) or '' (text), so that the rows fit the schema of the Synapse installed."""
    cols = columns(db, table)
    names = [c[0] for c in cols]
    fill = {c[0]: (0 if any(t in c[1] for t in ("INT", "BOOL", "REAL", "NUM")) else "")
            for c in cols if c[2] and c[3] is None}
    keys = [n for n in names if n in rows[0] or n in fill]
    sql = f"INSERT INTO {table} ({', '.join(keys)}) VALUES ({', '.join('?' for _ in keys)})"
    db.executemany(sql, [tuple(row.get(k, fill.get(k)) for k in keys) for row in rows])


def synapse_db_users(db_path, tag, indices):
    """Rows for the users Synapse's admin list reads: `users` and `profiles`."""
    base = int(time.time()) - len(indices) - 10
    start = time.perf_counter()
    db = sqlite3.connect(db_path, timeout=120)
    with db:
        users, profiles = [], []
        for n, i in enumerate(indices):
            lp = localpart(tag, i)
            users.append({"name": f"@{lp}:{SERVER}", "password_hash": None, "creation_ts": base + n,
                          "admin": 0, "is_guest": 0, "deactivated": 0, "shadow_banned": 0,
                          "approved": 1, "locked": 0, "suspended": 0})
            profiles.append({"user_id": lp, "full_user_id": f"@{lp}:{SERVER}", "displayname": displayname(i)})
        insert_rows(db, "users", users)
        insert_rows(db, "profiles", profiles)
    db.close()
    return time.perf_counter() - start


def synapse_db_rooms(db_path, tag, indices, creator, room_version):
    """Rows for the rooms Synapse's admin list reads: `rooms`, `room_stats_state` and
    `room_stats_current`, like a private room made by createRoom (one joined member)."""
    start = time.perf_counter()
    db = sqlite3.connect(db_path, timeout=120)
    ids = []
    with db:
        rooms, state, current = [], [], []
        for i in indices:
            room_id = f"!ab{tag}{i:05d}{uuid.uuid4().hex[:8]}:{SERVER}"
            ids.append(room_id)
            rooms.append({"room_id": room_id, "is_public": 0, "creator": creator,
                          "room_version": room_version, "has_auth_chain_index": 1})
            state.append({"room_id": room_id, "name": room_name(tag, i), "join_rules": "invite",
                          "history_visibility": "shared", "guest_access": "can_join",
                          "is_federatable": 1, "encryption": None})
            current.append({"room_id": room_id, "current_state_events": 7, "joined_members": 1,
                            "invited_members": 0, "left_members": 0, "banned_members": 0,
                            "knocked_members": 0, "local_users_in_room": 1,
                            "completed_delta_stream_id": 1})
        insert_rows(db, "rooms", rooms)
        insert_rows(db, "room_stats_state", state)
        insert_rows(db, "room_stats_current", current)
    db.close()
    return time.perf_counter() - start, ids


def seed(a, admin, kind, db_path, n_users, n_rooms, tag):
    out = {"users": n_users, "rooms": n_rooms, "workers": a.workers}
    http_u = list(range(min(a.http_users, n_users)))
    rest_u = list(range(len(http_u), n_users))
    seconds = http_users(admin, tag, http_u, a.workers)
    out["http_users"] = len(http_u)
    out["http_users_per_s"] = round(len(http_u) / seconds, 1)
    print(f"  {a.label}: {len(http_u)} users through the admin API, {out['http_users_per_s']}/s", file=sys.stderr)
    if rest_u:
        if kind == "synapse":
            seconds = synapse_db_users(db_path, tag, rest_u)
            out["bulk_users_method"] = "sqlite insert"
        else:
            seconds = http_users(admin, tag, rest_u, a.workers)
            out["bulk_users_method"] = "admin API"
        out["bulk_users_per_s"] = round(len(rest_u) / seconds, 1)
        out["bulk_users_s"] = round(seconds, 1)
        print(f"  {a.label}: {len(rest_u)} more users ({out['bulk_users_method']}), {out['bulk_users_per_s']}/s",
              file=sys.stderr)
    http_r = list(range(min(a.http_rooms, n_rooms)))
    rest_r = list(range(len(http_r), n_rooms))
    seconds, room_ids = http_rooms(admin, tag, http_r, a.workers)
    out["http_rooms"] = len(http_r)
    out["http_rooms_per_s"] = round(len(http_r) / seconds, 1)
    print(f"  {a.label}: {len(http_r)} rooms through createRoom, {out['http_rooms_per_s']}/s", file=sys.stderr)
    if rest_r:
        if kind == "synapse":
            version = admin.call("GET", f"/_synapse/admin/v1/rooms/{room_ids[0]}")["version"]
            seconds, more = synapse_db_rooms(db_path, tag, rest_r, admin.user_id, version)
            out["bulk_rooms_method"] = "sqlite insert"
        else:
            seconds, more = http_rooms(admin, tag, rest_r, a.workers)
            out["bulk_rooms_method"] = "createRoom"
        room_ids += more
        out["bulk_rooms_per_s"] = round(len(rest_r) / seconds, 1)
        out["bulk_rooms_s"] = round(seconds, 1)
        print(f"  {a.label}: {len(rest_r)} more rooms ({out['bulk_rooms_method']}), {out['bulk_rooms_per_s']}/s",
              file=sys.stderr)
    return out, room_ids


def fill_room(admin, n_events, senders, limit_s):
    """A room of up to n_events messages sent by `senders` threads, stopping at limit_s."""
    room_id = admin.call("POST", "/_matrix/client/v3/createRoom",
                         {"preset": "private_chat", "name": "bench message room"})["room_id"]
    lock = threading.Lock()
    state = {"next": 0}
    deadline = time.perf_counter() + limit_s

    def sender():
        sent = 0
        while time.perf_counter() < deadline:
            with lock:
                if state["next"] >= n_events:
                    return sent
                i = state["next"]
                state["next"] += 1
            admin.call("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
                       {"msgtype": "m.text", "body": f"message {i}"})
            sent += 1
        return sent

    start = time.perf_counter()
    sent = sum(pool_map(lambda _: sender(), range(senders), senders))
    seconds = time.perf_counter() - start
    return room_id, {"asked": n_events, "sent": sent, "senders": senders, "seconds": round(seconds, 1),
                     "events_per_s": round(sent / seconds, 1), "time_limited": sent < n_events}


# --- measured rows ---------------------------------------------------------------------------

def repeat(admin, path, params, reps, check):
    times = []
    for _ in range(reps):
        ms, data = admin.timed("GET", path, params=params)
        check(data)
        times.append(ms)
    return summary(times)


def expect(cond, message):
    if not cond:
        raise Error(message)


def users_rows(admin, tag, n_users, total, reps):
    path = "/_synapse/admin/v2/users"
    target = n_users // 2 + 7 if n_users > 20 else 0
    target_id = f"@{localpart(tag, target)}:{SERVER}"

    def page(data, where):
        users = data.get("users")
        expect(isinstance(users, list), f"{where}: no users list")
        expect(data.get("total") == total, f"{where}: total {data.get('total')}, expected {total}")
        expect(len(users) == min(PAGE, total), f"{where}: {len(users)} users on the page")
        return users

    def first(data):
        page(data, "from=0")
        expect(str(data.get("next_token")) == str(PAGE), f"from=0: next_token {data.get('next_token')!r}")

    def deep(data):
        page(data, f"from={n_users // 2}")

    def search(data):
        users = data.get("users") or []
        expect(data.get("total") == 1 and len(users) == 1 and users[0].get("name") == target_id,
               f"name search: total {data.get('total')}, {[u.get('name') for u in users][:3]}, expected {target_id}")

    def by_name(data):
        names = [u.get("name") for u in page(data, "order_by=name")]
        expect(names == sorted(names), "order_by=name: the page is not sorted by name")

    def by_creation(data):
        ts = [u.get("creation_ts") for u in page(data, "order_by=creation_ts dir=b")]
        expect(all(isinstance(t, int) for t in ts) and ts == sorted(ts, reverse=True),
               "order_by=creation_ts dir=b: the page is not newest first")

    base = {"limit": str(PAGE), "guests": "true", "deactivated": "false"}
    rows = [
        ("users_first", dict(base, **{"from": "0"}), first),
        ("users_deep", dict(base, **{"from": str(n_users // 2)}), deep),
        ("users_search", dict(base, **{"from": "0", "name": f"u{target:06d}"}), search),
        ("users_by_name", dict(base, **{"from": "0", "order_by": "name"}), by_name),
        ("users_by_creation", dict(base, **{"from": "0", "order_by": "creation_ts", "dir": "b"}), by_creation),
    ]
    return [(key, lambda p=params, c=check: repeat(admin, path, p, reps, c)) for key, params, check in rows]


def rooms_rows(admin, tag, room_ids, total, reps):
    path = "/_synapse/admin/v1/rooms"
    target = len(room_ids) // 2 + 3 if len(room_ids) > 10 else 0

    def page(data, where):
        rooms = data.get("rooms")
        expect(isinstance(rooms, list), f"{where}: no rooms list")
        expect(data.get("total_rooms") == total, f"{where}: total_rooms {data.get('total_rooms')}, expected {total}")
        expect(len(rooms) == min(PAGE, total), f"{where}: {len(rooms)} rooms on the page")
        return rooms

    def by_members(data):
        counts = [r.get("joined_members") for r in page(data, "order_by=joined_members")]
        expect(counts == sorted(counts, reverse=True), "order_by=joined_members: not largest first")

    def by_name(data):
        names = [r.get("name") for r in page(data, "order_by=name")]
        expect(all(isinstance(x, str) for x in names) and names == sorted(names),
               "order_by=name: the page is not sorted by name")

    def search(data):
        rooms = data.get("rooms") or []
        expect(data.get("total_rooms") == 1 and len(rooms) == 1 and rooms[0].get("room_id") == room_ids[target],
               f"search_term: total_rooms {data.get('total_rooms')}, {[r.get('room_id') for r in rooms][:3]}, "
               f"expected {room_ids[target]}")

    base = {"limit": str(PAGE), "from": "0"}
    rows = [
        ("rooms_by_members", dict(base, order_by="joined_members"), by_members),
        ("rooms_by_name", dict(base, order_by="name"), by_name),
        ("rooms_search", dict(base, search_term=room_name(tag, target)), search),
    ]
    return [(key, lambda p=params, c=check: repeat(admin, path, p, reps, c)) for key, params, check in rows]


def delete_room(admin, room_id, poll_s=0.05, limit_s=1800):
    start = time.perf_counter()
    data = admin.call("DELETE", f"/_synapse/admin/v2/rooms/{room_id}", {"purge": True})
    delete_id = data.get("delete_id")
    expect(isinstance(delete_id, str), f"no delete_id in {str(data)[:200]}")
    accepted_ms = (time.perf_counter() - start) * 1000
    polls, status = 0, None
    while time.perf_counter() - start < limit_s:
        data = admin.call("GET", f"/_synapse/admin/v2/rooms/delete_status/{delete_id}")
        polls += 1
        status = data.get("status")
        if status == "complete":
            break
        expect(status in ("scheduled", "active", "shutting_down", "purging"),
               f"delete status {status!r}: {str(data)[:200]}")
        time.sleep(poll_s)
    total_s = time.perf_counter() - start
    expect(status == "complete", f"not complete after {limit_s} s (status {status!r})")
    after = admin.session.get(f"{admin.url}/_synapse/admin/v1/rooms/{room_id}", timeout=60)
    return {"seconds": round(total_s, 2), "accepted_ms": round(accepted_ms, 1), "polls": polls,
            "room_details_after": after.status_code}


# --- the run ---------------------------------------------------------------------------------

def run(a):
    n_users = a.users or (2000 if a.quick else 100_000)
    n_rooms = a.rooms or (200 if a.quick else 10_000)
    n_events = a.events or (2000 if a.quick else 100_000)
    reps = a.reps or (5 if a.quick else 20)
    if a.match:
        # The other server's reached size, when its sends were cut by the time limit.
        other = json.load(open(a.match))
        sent = ((other.get("events") or {}).get("sent"))
        if isinstance(sent, int) and sent > 0:
            n_events = min(n_events, sent)
    with open(a.config) as f:
        cfg = yaml.safe_load(f)
    secret = cfg.get("registration_shared_secret")
    db_path = ((cfg.get("database") or {}).get("args") or {}).get("database")
    result = {"label": a.label, "kind": a.kind, "quick": a.quick, "reps": reps}

    def save():
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)

    r = requests.get(f"{a.url}/_matrix/client/versions", timeout=30)
    result["server"] = r.headers.get("Server")
    tag = uuid.uuid4().hex[:4]
    try:
        admin = register_admin(a.url, secret, f"abadmin{tag}")
        print(f"  {a.label}: seeding {n_users} users, {n_rooms} rooms", file=sys.stderr)
        result["seed"], room_ids = seed(a, admin, a.kind, db_path, n_users, n_rooms, tag)
        save()
        print(f"  {a.label}: a room of {n_events} messages", file=sys.stderr)
        big_room, result["events"] = fill_room(admin, n_events, a.senders, a.event_seconds)
        print(f"  {a.label}: {result['events']}", file=sys.stderr)
        save()
    except (Error, requests.RequestException, *TRANSPORT_ERRORS, sqlite3.Error, ValueError, KeyError) as e:
        result["setup_error"] = str(e)[:300]
        save()
        raise
    user_total = n_users + 1  # the seeded users and the admin
    room_total = n_rooms + 1  # the named rooms and the message room
    rows = users_rows(admin, tag, n_users, user_total, reps) + rooms_rows(admin, tag, room_ids, room_total, reps)
    rows.append(("delete", lambda: delete_room(admin, big_room)))
    for key, fn in rows:
        print(f"  {a.label}: {key}", file=sys.stderr)
        try:
            result[key] = fn()
        except (Error, requests.RequestException, *TRANSPORT_ERRORS, ValueError) as e:
            result[key] = {"error": str(e)[:300]}
        shown = {k: v for k, v in result[key].items() if k != "samples_ms"}
        print(f"  {a.label}: {key} {shown}", file=sys.stderr)
        save()
    if a.pid:
        result["server_rss_mib_after"] = round((status_kib(a.pid, "VmRSS") or 0) / 1024, 1)
        save()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--config", required=True, help="the server's homeserver.yaml (shared secret, SQLite path)")
    r.add_argument("--kind", choices=["synapse", "myelin"], required=True)
    r.add_argument("--pid", type=int, help="the server's pid (its RSS after the run)")
    r.add_argument("--label", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--users", type=int, help="users seeded (100,000; 2,000 with --quick)")
    r.add_argument("--rooms", type=int, help="named rooms made (10,000; 200 with --quick)")
    r.add_argument("--events", type=int, help="messages in the deleted room (100,000; 2,000 with --quick)")
    r.add_argument("--match", help="another server's result: send no more messages than it reached")
    r.add_argument("--reps", type=int, help="requests per list row (20; 5 with --quick)")
    r.add_argument("--http-users", type=int, default=None)
    r.add_argument("--http-rooms", type=int, default=None)
    r.add_argument("--workers", type=int, default=8, help="concurrent seeding requests")
    r.add_argument("--senders", type=int, default=16, help="concurrent message senders")
    r.add_argument("--event-seconds", type=float, default=540, help="time limit of the message sends")
    a = ap.parse_args()
    if a.http_users is None:
        a.http_users = 200 if a.quick else 500
    if a.http_rooms is None:
        a.http_rooms = 50 if a.quick else 100
    run(a)


if __name__ == "__main__":
    main()
