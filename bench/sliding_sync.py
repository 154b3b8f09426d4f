"""The sliding sync rows of the benchmark (issue 15 "Performance"), run by
bench/run.sh --sliding-sync-only against each server in turn (Synapse, then Myelin), started
by run.sh with the same settings as the other rows (rate limits off on both). MSC4186
simplified sliding sync: `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.

Setup: a user U in --rooms rooms (1,000; 100 with --quick). U creates each room (public, a
name, an avatar, every other room encrypted: about nine state events), two other users join
it and one of them sends a message, so every room holds three members and a dozen events;
the rooms are made by a thread pool of --workers (rate limits are off in both
configurations). The other member, S, sends every measured message below. One last message goes into a known room (the
"marker"), which then leads U's list. Then --settle seconds (5; none with --quick) pass before
anything is measured, for both servers alike: what the setup's writes leave a server to do in
the background (checkpoints, caches, queues) is not counted against the rows.

Every sliding sync request asks for one list, range 0-19, timeline_limit 1, required_state
name / avatar / encryption / members lazy-loaded. Rows, each checked while measured (a
server answering wrongly gets an error row, not a number):

1. first response: a fresh conn_id each time, no pos (p50/p99 over --first reps, 100); the list's
   count must be N, 20 rooms must come back, the marker room first; the user's very first
   request (the server's caches cold for it) is timed apart (`cold_ms`);
2. incremental: on one connection, another user sends one message into a room outside the
   window, then U asks with the last pos and timeout 0 (p50/p99); that room must be in the
   response with the message and lead the list;
3. wake-up: U waits with pos and timeout 30 s, then another user sends a message; the time
   from the send's answer to the waiting request's answer (p50/p99 over --wakeups rounds, 200);
   the response must hold the message;
4. /sync v2 for reference, the same user with a filter of timeline limit 1 and lazy-loaded
   members: initial (every joined room must come back; each rep's inline filter differs by
   an account-data type nobody uses, so no server serves a cached response) and incremental
   after one new message (the room must be in it).

Usage: python sliding_sync.py run --url URL --pid PID --label L --out FILE [--quick]
"""
import argparse
import concurrent.futures
import gc
import http.client
import json
import os
import select
import statistics
import sys
import threading
import time
import urllib.parse
import uuid

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from media import status_kib  # noqa: E402

SS_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
WINDOW = 20
REQUIRED_STATE = [["m.room.name", ""], ["m.room.avatar", ""], ["m.room.encryption", ""],
                  ["m.room.member", "$LAZY"]]
AVATAR = "mxc://bench.local/avatar"


class Error(Exception):
    """A server answered wrongly: the row gets this message instead of a figure."""


# What a request made with Client.call can fail with besides Error (the connection's errors).
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class Client:
    """Requests as one user. Measured requests go through `call`: Python's http.client over one
    keep-alive connection per thread, which adds little of its own to what is timed (requests,
    used before, added about 1 ms to each 28 KB sliding sync answer here, counted to both
    servers alike). `session` (requests) is kept for the few untimed calls that use it."""

    # The statuses of a good answer.
    OK = (200,)

    def __init__(self, url, token, user_id):
        self.url, self.token, self.user_id = url, token, user_id
        self.local = threading.local()
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port

    @property
    def session(self):
        # One keep-alive session per thread (requests' Session is not thread-safe).
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = requests.Session()
            s.headers["Authorization"] = f"Bearer {self.token}"
        return s

    def connection(self, timeout):
        conn = getattr(self.local, "conn", None)
        # A kept connection the server has closed meanwhile reads as ready: open a new one
        # (before sending, so that no request is ever sent twice).
        if conn is not None and conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
            conn.close()
            conn = None
        if conn is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = self.local.conn = kind(self.host, self.port, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def call(self, method, path, body=None, params=None, timeout=600):
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = {"Authorization": f"Bearer {self.token}"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self.connection(timeout)
        try:
            conn.request(method, target, body=payload, headers=headers)
            r = conn.getresponse()
            raw = r.read()
        except TRANSPORT_ERRORS:
            conn.close()
            self.local.conn = None
            raise
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw[:200].decode(errors="replace")
        if r.status not in self.OK:
            raise Error(f"{method} {path.split('?')[0]}: {r.status} {str(data)[:200]}")
        return data

    def send(self, room_id, body):
        txn = uuid.uuid4().hex
        return self.call("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
                         {"msgtype": "m.text", "body": body})["event_id"]


def register(url, localpart):
    body = {"username": localpart, "password": "Bench-password-1!", "initial_device_display_name": "bench"}
    r = requests.post(f"{url}/_matrix/client/v3/register", json=body, timeout=120)
    if r.status_code == 401:
        body["auth"] = {"type": "m.login.dummy", "session": r.json().get("session")}
        r = requests.post(f"{url}/_matrix/client/v3/register", json=body, timeout=120)
    if r.status_code != 200:
        raise Error(f"register {localpart}: {r.status_code} {r.text[:200]}")
    data = r.json()
    return Client(url, data["access_token"], data["user_id"])


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(ms):
    return {"reps": len(ms), "p50_ms": round(percentile(ms, 50), 1), "p99_ms": round(percentile(ms, 99), 1),
            "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1),
            # Every sample, in the order taken (runs move a lot on a shared machine).
            "samples_ms": [round(v, 1) for v in ms]}


# --- setup -----------------------------------------------------------------------------------

def setup(url, n, workers):
    tag = uuid.uuid4().hex[:6]
    user = register(url, f"ssuser{tag}")
    other = register(url, f"sssender{tag}")  # S: the sender of the measured messages
    member = register(url, f"ssmember{tag}")

    def make(i):
        initial_state = [{"type": "m.room.avatar", "state_key": "", "content": {"url": AVATAR}}]
        if i % 2 == 0:
            initial_state.append({"type": "m.room.encryption", "state_key": "",
                                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}})
        room_id = user.call("POST", "/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "name": f"bench room {i}", "initial_state": initial_state})["room_id"]
        for m in (other, member):
            m.call("POST", f"/_matrix/client/v3/join/{room_id}", {})
        member.send(room_id, f"setup {i}")
        return room_id

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        rooms = list(pool.map(make, range(n)))
    seconds = time.perf_counter() - start
    marker = rooms[n // 2]
    other.send(marker, f"marker {tag}")
    return user, other, rooms, marker, {
        "rooms": n, "members_per_room": 3, "workers": workers,
        "seconds": round(seconds, 1), "rooms_per_s": round(n / seconds, 1),
    }


# --- sliding sync ----------------------------------------------------------------------------

def ss_body(conn_id):
    return {"conn_id": conn_id, "lists": {"all": {
        "ranges": [[0, WINDOW - 1]], "timeline_limit": 1, "required_state": REQUIRED_STATE}}}


def ss(user, conn_id, pos=None, timeout_ms=None, http_timeout=600):
    params = {}
    if pos is not None:
        params["pos"] = pos
    if timeout_ms is not None:
        params["timeout"] = str(timeout_ms)
    start = time.perf_counter()
    data = user.call("POST", SS_PATH, ss_body(conn_id), params=params, timeout=http_timeout)
    end = time.perf_counter()
    if not isinstance(data, dict) or not isinstance(data.get("pos"), str):
        raise Error(f"no pos in the response: {str(data)[:200]}")
    return start, end, data


def list_order(data):
    """The list's room ids in order: the SYNC op's room_ids if the server sends ops (Synapse
    does), else the returned rooms by descending bump_stamp (MSC4186's order)."""
    lst = (data.get("lists") or {}).get("all") or {}
    for op in lst.get("ops") or []:
        if op.get("op") == "SYNC" and isinstance(op.get("room_ids"), list):
            return op["room_ids"]
    rooms = data.get("rooms") or {}
    return sorted(rooms, key=lambda r: -(rooms[r].get("bump_stamp") or 0))


def timeline_has(data, room_id, event_id):
    room = (data.get("rooms") or {}).get(room_id) or {}
    return any(e.get("event_id") == event_id for e in room.get("timeline") or [])


def check_first(data, n, marker):
    count = ((data.get("lists") or {}).get("all") or {}).get("count")
    if count != n:
        raise Error(f"list count {count}, expected {n}")
    rooms = data.get("rooms") or {}
    if len(rooms) != WINDOW:
        raise Error(f"{len(rooms)} rooms returned, expected {WINDOW}")
    order = list_order(data)
    if not order or order[0] != marker:
        raise Error(f"the room with the newest message is not first ({order[:1]} != {marker})")
    room = rooms[marker]
    if room.get("name") != f"bench room {n // 2}":
        raise Error(f"the marker room's name is {room.get('name')!r}")
    if len(room.get("timeline") or []) != 1:
        raise Error(f"the marker room's timeline holds {len(room.get('timeline') or [])} events, expected 1")
    types = {e.get("type") for e in room.get("required_state") or []}
    if not {"m.room.name", "m.room.avatar", "m.room.member"} <= types:
        raise Error(f"the marker room's required_state lacks some of name/avatar/member: {sorted(types)}")


def first_response(user, n, marker, reps):
    times = []
    for _ in range(reps):
        start, end, data = ss(user, f"first-{uuid.uuid4().hex[:8]}")
        check_first(data, n, marker)
        times.append((end - start) * 1000)
    return summary(times)


def incremental(user, other, rooms, n, reps):
    conn = f"incr-{uuid.uuid4().hex[:8]}"
    _, _, data = ss(user, conn)
    pos = data["pos"]
    window = set(data.get("rooms") or {})
    outside = [r for r in rooms if r not in window]
    times = []
    for i in range(reps):
        room_id = outside[(i * 37) % len(outside)]
        event_id = other.send(room_id, f"incremental {i}")
        start, end, data = ss(user, conn, pos=pos, timeout_ms=0)
        if not timeline_has(data, room_id, event_id):
            raise Error(f"round {i}: the new message is not in the incremental response "
                        f"(rooms {list((data.get('rooms') or {}))[:5]})")
        order = list_order(data)
        if not order or order[0] != room_id:
            raise Error(f"round {i}: the room with the new message is not first in the list")
        count = ((data.get("lists") or {}).get("all") or {}).get("count")
        if count is not None and count != n:
            raise Error(f"round {i}: list count {count}, expected {n}")
        times.append((end - start) * 1000)
        pos = data["pos"]
    return summary(times)


def wakeup(user, other, rooms, rounds, park_s):
    conn = f"wake-{uuid.uuid4().hex[:8]}"
    _, _, data = ss(user, conn)
    pos = data["pos"]
    from_answer, from_request = [], []
    early = 0
    for i in range(rounds):
        room_id = rooms[(i * 53) % len(rooms)]
        outcome = {}

        def poll():
            try:
                outcome["result"] = ss(user, conn, pos=pos, timeout_ms=30_000, http_timeout=120)
            except Exception as e:  # reported below
                outcome["error"] = e

        # A stray early answer (before anything was sent) re-parks the request, up to 3 times.
        for _ in range(4):
            thread = threading.Thread(target=poll)
            thread.start()
            thread.join(park_s)
            if not thread.is_alive():
                if "error" in outcome:
                    raise Error(f"round {i}: {outcome['error']}")
                early += 1
                pos = outcome.pop("result")[2]["pos"]
                continue
            break
        else:
            raise Error(f"round {i}: the waiting request kept answering before anything was sent")
        t0 = time.perf_counter()
        event_id = other.send(room_id, f"wake {i}")
        t1 = time.perf_counter()
        thread.join(60)
        if thread.is_alive():
            raise Error(f"round {i}: the waiting request did not answer within 60 s of the send")
        if "error" in outcome:
            raise Error(f"round {i}: {outcome['error']}")
        _, end, data = outcome["result"]
        if not timeline_has(data, room_id, event_id):
            raise Error(f"round {i}: the waiting request answered without the new message")
        from_answer.append(max(0.0, end - t1) * 1000)
        from_request.append((end - t0) * 1000)
        pos = data["pos"]
    out = summary(from_answer)
    out["from_send_request_ms"] = {"p50": round(percentile(from_request, 50), 1),
                                   "p99": round(percentile(from_request, 99), 1)}
    out["early_answers"] = early
    return out


# --- /sync v2 --------------------------------------------------------------------------------

def v2_filter(rep):
    return json.dumps({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}},
                       "account_data": {"not_types": [f"org.myelin.bench.unused.{rep}"]}})


def v2_sync(user, params):
    start = time.perf_counter()
    data = user.call("GET", "/_matrix/client/v3/sync", params=params, timeout=600)
    return (time.perf_counter() - start) * 1000, data


def v2_initial(user, n, reps):
    times = []
    for i in range(reps):
        ms, data = v2_sync(user, {"filter": v2_filter(f"{uuid.uuid4().hex[:8]}.{i}"), "timeout": "0"})
        joined = len((data.get("rooms") or {}).get("join") or {})
        if joined != n:
            raise Error(f"initial /sync v2 returned {joined} joined rooms, expected {n}")
        times.append(ms)
    return summary(times)


def v2_incremental(user, other, rooms, reps):
    filt = v2_filter("incremental")
    _, data = v2_sync(user, {"filter": filt, "timeout": "0"})
    since = data["next_batch"]
    times = []
    for i in range(reps):
        room_id = rooms[(i * 41 + 7) % len(rooms)]
        event_id = other.send(room_id, f"v2 incremental {i}")
        ms, data = v2_sync(user, {"filter": filt, "timeout": "0", "since": since})
        room = ((data.get("rooms") or {}).get("join") or {}).get(room_id) or {}
        if not any(e.get("event_id") == event_id for e in (room.get("timeline") or {}).get("events") or []):
            raise Error(f"round {i}: the new message is not in the incremental /sync v2")
        times.append(ms)
        since = data["next_batch"]
    return summary(times)


# --- the run ---------------------------------------------------------------------------------

def run(a):
    n = a.rooms or (100 if a.quick else 1000)
    first_reps = a.first or (5 if a.quick else 100)
    incr_reps = 10 if a.quick else 30
    wake_rounds = a.wakeups or (10 if a.quick else 200)
    v2_reps = 2 if a.quick else 3
    result = {"label": a.label, "quick": a.quick, "rooms": n}

    def save():
        # After each row: a run stopped midway keeps the rows it measured.
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)

    r = requests.get(f"{a.url}/_matrix/client/versions", timeout=30)
    result["server"] = r.headers.get("Server")
    print(f"  {a.label}: setup, a user in {n} rooms", file=sys.stderr)
    try:
        user, other, rooms, marker, result["setup"] = setup(a.url, n, a.workers)
    except Error as e:
        result["setup"] = {"error": str(e)}
        save()
        raise
    print(f"  {a.label}: {result['setup']}", file=sys.stderr)
    save()
    settle = a.settle if a.settle is not None else (0 if a.quick else 5)
    result["settle_s"] = settle
    time.sleep(settle)
    # A server without the endpoint (404) gets "unsupported" rows; any other wrong answer is an
    # error in the first-response row. This first request of the user
    # (the server's caches cold for it) is timed on its own.
    start = time.perf_counter()
    probe = user.session.post(a.url + SS_PATH, json=ss_body("probe"), timeout=600)
    cold_ms = round((time.perf_counter() - start) * 1000, 1)
    if probe.status_code == 404:
        result["unsupported"] = f"{probe.status_code} {probe.text[:200]}"
        print(f"  {a.label}: sliding sync answered {result['unsupported']}", file=sys.stderr)
    rows = [("v2_initial", lambda: v2_initial(user, n, v2_reps)),
            ("v2_incremental", lambda: v2_incremental(user, other, rooms, incr_reps))]
    if "unsupported" not in result:
        rows = [("first", lambda: first_response(user, n, marker, first_reps)),
                ("incremental", lambda: incremental(user, other, rooms, n, incr_reps)),
                ("wakeup", lambda: wakeup(user, other, rooms, wake_rounds, a.park))] + rows
    for key, fn in rows:
        print(f"  {a.label}: {key}", file=sys.stderr)
        try:
            if key == "first":
                if probe.status_code != 200:
                    raise Error(f"the user's first request answered {probe.status_code} {probe.text[:200]}")
                check_first(probe.json(), n, marker)
            # The collector is off during each row (as in bench/appservice.py): a full collection
            # walks every object the client holds (the set-up's rooms and answers) and stalls it
            # for milliseconds now and then, which a p99 of sub-millisecond rounds reads as the
            # server's (the same client for both servers).
            gc.collect()
            gc.disable()
            try:
                result[key] = fn()
            finally:
                gc.enable()
            if key == "first":
                result[key]["cold_ms"] = cold_ms
        except (Error, requests.RequestException, *TRANSPORT_ERRORS, ValueError) as e:
            result[key] = {"error": str(e)[:300]}
        print(f"  {a.label}: {key} {result[key]}", file=sys.stderr)
        save()
    if a.pid:
        result["server_rss_mib_after"] = round((status_kib(a.pid, "VmRSS") or 0) / 1024, 1)
        save()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--pid", type=int, help="the server's pid (its RSS after the run)")
    r.add_argument("--label", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--rooms", type=int, help="rooms the user is in (1,000; 100 with --quick)")
    r.add_argument("--first", type=int, help="first-response reps (100; 5 with --quick)")
    r.add_argument("--wakeups", type=int, help="wake-up rounds (200; 10 with --quick)")
    r.add_argument("--settle", type=float,
                   help="seconds between the setup and the first measure (5; 0 with --quick)")
    r.add_argument("--workers", type=int, default=8, help="concurrent room makers in the setup")
    r.add_argument("--park", type=float, default=0.3,
                   help="seconds the waiting request is given to park before the send")
    a = ap.parse_args()
    run(a)


if __name__ == "__main__":
    main()
