"""The appservice rows of the benchmark (issue 17 "Performance"), run by
bench/run.sh --appservice-only against each server in turn (Synapse, then Myelin), both started
by run.sh with the same settings as the other rows (rate limits off) and the same appservice
registration, written by `configure` before the server starts:

- users namespace `@bench_.*` (exclusive), `rate_limited: false`, url: a receiver in this
  process on 127.0.0.1 (`--as-port`) that answers `PUT /_matrix/app/v1/transactions/{txnId}`
  with 200 {} at once and records the arrival time of each event (and answers user queries
  200 {}, room alias queries 404).

Setup: a normal user creates --rooms public rooms (10); --ghosts ghosts per room (100; 20 with
--quick) are registered with `m.login.application_service` and join their room, masquerading
with the as_token and `?user_id=` (--workers requests in flight). Then a marker message, and
the bench waits until the receiver has it, so nothing of the setup is left in flight.

Rows, each checked while measured (a server answering wrongly gets an error row, not a number):

1. throughput: the ghosts send --messages messages (10,000; 1,000 with --quick) as fast as they
   can, --workers requests in flight, each ghost's own messages one after another, spread
   evenly over the rooms; events per second = events the appservice received / time from the
   first send to the last receipt. Every event id answered to a send must arrive exactly once,
   nothing else (no unknown message), and each room's events must arrive in the room's order
   (its `/messages` order, read afterwards);
2. lag: the normal user sends one message at a time into one of the rooms (an idle system),
   --lag rounds (200; 50 with --quick): the time from the send's request to the appservice's
   receipt of that event id, p50 / p99 (and from the send's answer).

Usage: python appservice.py configure HOMESERVER_YAML --registration FILE --as-port PORT
       python appservice.py run --url URL --pid PID --label L --registration FILE --out FILE [--quick]
"""
import argparse
import asyncio
import collections
import gc
import json
import os
import secrets
import sys
import threading
import time
import uuid

import aiohttp
import yaml
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from media import status_kib  # noqa: E402
from sliding_sync import Client, percentile, summary  # noqa: E402

PREFIX = "bench_"
MSG = "m.room.message"


class Error(Exception):
    """A server answered wrongly: the row gets this message instead of a figure."""


# --- the registration ------------------------------------------------------------------------

def configure(a):
    """Writes the registration file and names it in the server's homeserver.yaml."""
    registration = {
        "id": "bench",
        "url": f"http://127.0.0.1:{a.as_port}",
        "as_token": secrets.token_hex(16),
        "hs_token": secrets.token_hex(16),
        "sender_localpart": "asbench_bot",
        "rate_limited": False,
        "namespaces": {"users": [{"exclusive": True, "regex": f"@{PREFIX}.*"}], "aliases": [], "rooms": []},
    }
    with open(a.registration, "w") as f:
        yaml.safe_dump(registration, f, sort_keys=False)
    with open(a.path) as f:
        cfg = yaml.safe_load(f)
    cfg["app_service_config_files"] = [os.path.abspath(a.registration)]
    with open(a.path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


# --- the receiver ----------------------------------------------------------------------------

class Receiver:
    """The appservice's HTTP side, on its own thread and event loop: answers at once, records
    each event with its arrival time (time.monotonic, the same clock the senders use)."""

    def __init__(self, port, hs_token):
        self.port = port
        self.hs_token = hs_token
        self.lock = threading.Lock()
        self.arrivals = []  # (monotonic, event) in arrival order
        self.txns = set()
        self.repeated_txns = 0
        self.bad_auth = 0
        self.transactions = 0
        self.waiters = {}  # event_id -> threading.Event
        self.ready = threading.Event()

    def authorized(self, request):
        header = request.headers.get("Authorization", "")
        return header == f"Bearer {self.hs_token}" or request.query.get("access_token") == self.hs_token

    async def transaction(self, request):
        now = time.monotonic()
        if not self.authorized(request):
            self.bad_auth += 1
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        body = await request.json()
        txn = request.match_info["txn"]
        with self.lock:
            self.transactions += 1
            if txn in self.txns:
                # A retried transaction: the appservice must not handle it twice.
                self.repeated_txns += 1
                return web.json_response({})
            self.txns.add(txn)
            for event in body.get("events") or []:
                self.arrivals.append((now, event))
                waiter = self.waiters.get(event.get("event_id"))
                if waiter is not None:
                    waiter.set()
        return web.json_response({})

    async def user(self, request):
        return web.json_response({})

    async def not_found(self, request):
        return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)

    def run(self):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for prefix in ("/_matrix/app/v1", ""):  # Synapse's legacy paths too
            app.router.add_put(prefix + "/transactions/{txn}", self.transaction)
            app.router.add_get(prefix + "/users/{user}", self.user)
            app.router.add_get(prefix + "/rooms/{alias}", self.not_found)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        loop.run_forever()

    def start(self):
        threading.Thread(target=self.run, daemon=True).start()
        if not self.ready.wait(30):
            raise RuntimeError("the receiver did not start")

    def watch(self, event_id, since):
        """An event the caller will wait for, known once its send is answered: set at once if
        it already arrived (at or after the arrival index `since`, taken before the send)."""
        waiter = threading.Event()
        with self.lock:
            self.waiters[event_id] = waiter
            if any(e.get("event_id") == event_id for _, e in self.arrivals[since:]):
                waiter.set()
        return waiter

    def count(self):
        with self.lock:
            return len(self.arrivals)

    def since(self, index):
        with self.lock:
            return list(self.arrivals[index:])


# --- the client side -------------------------------------------------------------------------

class Http:
    def __init__(self, url, session):
        self.url = url
        self.session = session

    async def call(self, method, path, token, body=None, params=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.url + path, json=body, params=params,
                                        headers=headers) as r:
            try:
                data = await r.json(content_type=None)
            except ValueError:
                data = (await r.text())[:200]
            if r.status != 200:
                raise Error(f"{method} {path.split('?')[0]}: {r.status} {str(data)[:200]}")
            return data


async def register_user(http, localpart):
    body = {"username": localpart, "password": "Bench-password-1!", "initial_device_display_name": "bench"}
    async with http.session.post(http.url + "/_matrix/client/v3/register", json=body) as r:
        data = await r.json(content_type=None)
        status = r.status
    if status == 401:
        body["auth"] = {"type": "m.login.dummy", "session": data.get("session")}
        async with http.session.post(http.url + "/_matrix/client/v3/register", json=body) as r:
            data = await r.json(content_type=None)
            status = r.status
    if status != 200:
        raise Error(f"register {localpart}: {status} {str(data)[:200]}")
    return data["access_token"], data["user_id"]


async def bounded(items, workers, fn):
    """fn(item) for each item, `workers` at a time; the first error stops the rest."""
    queue = collections.deque(items)

    async def worker():
        while queue:
            await fn(queue.popleft())

    await asyncio.gather(*(worker() for _ in range(workers)))


async def wait_for(receiver, event_id, waiter, timeout):
    """Waits for the receiver to have the event (on a worker thread: no polling, which would
    take CPU from the server on a small machine; the arrival time is the receiver's own)."""
    if not await asyncio.get_running_loop().run_in_executor(None, waiter.wait, timeout):
        raise Error(f"the appservice did not receive {event_id} within {timeout} s")


class Bench:
    def __init__(self, a, http, receiver, as_token):
        self.a = a
        self.http = http
        self.receiver = receiver
        self.as_token = as_token
        self.tag = uuid.uuid4().hex[:6]

    async def send(self, room_id, token, body, user_id=None):
        params = {"user_id": user_id} if user_id else None
        path = f"/_matrix/client/v3/rooms/{room_id}/send/{MSG}/{uuid.uuid4().hex}"
        data = await self.http.call("PUT", path, token, {"msgtype": "m.text", "body": body}, params)
        return data["event_id"]

    async def setup(self, rooms, ghosts_per_room, workers):
        token, user_id = await register_user(self.http, f"asuser{self.tag}")
        self.user = (token, user_id)
        start = time.monotonic()
        self.rooms = []
        for i in range(rooms):
            data = await self.http.call("POST", "/_matrix/client/v3/createRoom", token,
                                        {"preset": "public_chat", "name": f"appservice bench room {i}"})
            self.rooms.append(data["room_id"])
        self.ghosts = []  # (user_id, room_id)

        async def make(index):
            room_id = self.rooms[index // ghosts_per_room]
            localpart = f"{PREFIX}{self.tag}_{index}"
            data = await self.http.call("POST", "/_matrix/client/v3/register", self.as_token,
                                        {"type": "m.login.application_service", "username": localpart})
            ghost = data["user_id"]
            await self.http.call("POST", f"/_matrix/client/v3/join/{room_id}", self.as_token, {},
                                 {"user_id": ghost})
            self.ghosts.append((index, ghost, room_id))

        await bounded(range(rooms * ghosts_per_room), workers, make)
        self.ghosts.sort()
        self.ghosts = [(ghost, room_id) for _, ghost, room_id in self.ghosts]
        seconds = time.monotonic() - start
        # Everything the setup made reaches the appservice before a row starts.
        await self.settle()
        return {"rooms": rooms, "ghosts_per_room": ghosts_per_room, "ghosts": len(self.ghosts),
                "workers": workers, "seconds": round(seconds, 1),
                "ghosts_per_s": round(len(self.ghosts) / seconds, 1),
                "settled_s": round(time.monotonic() - start - seconds, 1),
                "events_received": self.receiver.count()}

    async def settle(self, timeout=600):
        token, _ = self.user
        marker = f"marker {uuid.uuid4().hex}"
        index = self.receiver.count()
        event_id = await self.send(self.rooms[0], token, marker)
        waiter = self.receiver.watch(event_id, index)
        await wait_for(self.receiver, event_id, waiter, timeout)

    async def room_order(self, room_id, wanted):
        """The room's message events of `wanted` in the room's order (`/messages`, oldest first)."""
        token, _ = self.user
        order, frm = [], None
        while True:
            params = {"dir": "b", "limit": "1000"}
            if frm:
                params["from"] = frm
            data = await self.http.call("GET", f"/_matrix/client/v3/rooms/{room_id}/messages", token,
                                        None, params)
            chunk = data.get("chunk") or []
            order.extend(e["event_id"] for e in chunk if e.get("event_id") in wanted)
            frm = data.get("end")
            if not chunk or not frm or len(order) >= len(wanted):
                break
        order.reverse()
        return order

    async def throughput(self, messages, workers):
        first = self.receiver.count()
        txns_before = len(self.receiver.txns)
        ghosts = self.ghosts
        # Message j is sent by ghost j % len(ghosts); worker w owns the ghosts w, w + workers, ...
        # and sends each one's messages in order.
        plan = [[] for _ in range(workers)]
        for j in range(messages):
            g = j % len(ghosts)
            plan[g % workers].append((j, g))
        sent = {}  # event_id -> (room_id, ghost index, j)
        latencies = []

        async def worker(items):
            for j, g in items:
                ghost, room_id = ghosts[g]
                t0 = time.monotonic()
                event_id = await self.send(room_id, self.as_token, f"bench {self.tag} {j}", ghost)
                latencies.append((time.monotonic() - t0) * 1000)
                sent[event_id] = (room_id, g, j)

        start = time.monotonic()
        await asyncio.gather(*(worker(items) for items in plan))
        sent_s = time.monotonic() - start
        # Wait for every sent event, then a little longer for any stray duplicate.
        deadline = time.monotonic() + max(60.0, 4 * sent_s)
        while True:
            got = {e.get("event_id") for _, e in self.receiver.since(first)}
            if all(e in got for e in sent):
                break
            if time.monotonic() > deadline:
                missing = [e for e in sent if e not in got]
                raise Error(f"{len(missing)} of {len(sent)} events never reached the appservice "
                            f"(e.g. {missing[:3]})")
            await asyncio.sleep(0.005)
        arrivals = self.receiver.since(first)
        last = max(t for t, e in arrivals if e.get("event_id") in sent)
        seconds = last - start
        await asyncio.sleep(1.0)
        arrivals = self.receiver.since(first)
        # Correctness: each sent event exactly once, nothing unknown, per-room order kept.
        counts = collections.Counter(e.get("event_id") for _, e in arrivals)
        dups = sum(1 for e in sent if counts[e] > 1)
        unknown = [e for e in counts if e not in sent]
        if dups:
            raise Error(f"{dups} events reached the appservice more than once")
        if unknown:
            raise Error(f"{len(unknown)} events the bench did not send reached the appservice (e.g. {unknown[:3]})")
        by_room = collections.defaultdict(list)
        for _, e in arrivals:
            if e.get("room_id") != sent[e["event_id"]][0]:
                raise Error(f"event {e['event_id']} arrived with room {e.get('room_id')}")
            if e.get("sender") != ghosts[sent[e["event_id"]][1]][0]:
                raise Error(f"event {e['event_id']} arrived with sender {e.get('sender')}")
            by_room[e["room_id"]].append(e["event_id"])
        # Each ghost's messages were sent one after another (each after the previous one's
        # answer): they must arrive in that order.
        last_j = {}
        for _, e in arrivals:
            _, g, j = sent[e["event_id"]]
            if last_j.get(g, -1) > j:
                raise Error(f"{ghosts[g][0]}'s messages reached the appservice out of their send order")
            last_j[g] = j
        # Each room's events in the room's order as `/messages` gives it (topological): the
        # rooms whose arrival order differs, and by how many events.
        order_differs = {}
        for room_id, ids in by_room.items():
            expected = await self.room_order(room_id, set(ids))
            if sorted(expected) != sorted(ids):
                raise Error(f"room {room_id}: /messages holds {len(expected)} of the {len(ids)} events received")
            if expected != ids:
                position = {e: i for i, e in enumerate(expected)}
                order_differs[room_id] = sum(1 for x, y in zip(ids, ids[1:]) if position[x] > position[y])
        txns = len(self.receiver.txns) - txns_before
        return {"messages": messages, "workers": workers, "received": len(sent),
                "seconds": round(seconds, 2), "events_per_s": round(len(sent) / seconds, 1),
                "sent_s": round(sent_s, 2), "sends_per_s": round(messages / sent_s, 1),
                "last_send_to_last_receipt_ms": round((seconds - sent_s) * 1000, 1),
                "send_latency_ms": {"p50": round(percentile(latencies, 50), 1),
                                    "p99": round(percentile(latencies, 99), 1)},
                "transactions": txns, "events_per_transaction": round(len(sent) / max(1, txns), 1), "repeated_transactions": self.receiver.repeated_txns,
                "rooms_out_of_messages_order": len(order_differs),
                "inversions_against_messages_order": sum(order_differs.values())}

    async def lag(self, rounds):
        token, user_id = self.user
        room_id = self.rooms[len(self.rooms) // 2]
        from_request, from_answer = [], []
        # The timed send goes through Python's http.client over one keep-alive connection
        # (sliding_sync.Client), called straight from this thread: nothing else runs on its
        # loop meanwhile, and aiohttp's client added about 0.3 ms of its own to every round
        # (counted to both servers alike).
        client = Client(self.a.url, token, user_id)
        # The collector is off during the rounds: a full collection walks every event received
        # so far (tens of thousands after the throughput row) and stalled the client now and
        # then for 10 ms or more within a round, which the p99 of 200 rounds read as the lag.
        gc.collect()
        gc.disable()
        try:
            for i in range(rounds):
                await asyncio.sleep(0.02)  # an idle system between rounds
                body = f"lag {self.tag} {i}"
                path = f"/_matrix/client/v3/rooms/{room_id}/send/{MSG}/{uuid.uuid4().hex}"
                # The event id is only known from the answer; the receiver may have it before that,
                # so the arrival is looked up by body among those after the send started.
                index = self.receiver.count()
                t0 = time.monotonic()
                data = client.call("PUT", path, {"msgtype": "m.text", "body": body}, timeout=60)
                t1 = time.monotonic()
                event_id = data["event_id"]
                waiter = self.receiver.watch(event_id, index)
                await wait_for(self.receiver, event_id, waiter, 60)
                arrived = next(t for t, e in self.receiver.since(index) if e.get("event_id") == event_id)
                seen = [e for _, e in self.receiver.since(index) if e.get("event_id") == event_id]
                if len(seen) != 1:
                    raise Error(f"round {i}: the event reached the appservice {len(seen)} times")
                if (seen[0].get("content") or {}).get("body") != body or seen[0].get("room_id") != room_id:
                    raise Error(f"round {i}: the event arrived with other content or room: {str(seen[0])[:200]}")
                from_request.append((arrived - t0) * 1000)
                from_answer.append(max(0.0, arrived - t1) * 1000)
        finally:
            gc.enable()
        out = summary(from_request)
        out["from_send_answer_ms"] = {"p50": round(percentile(from_answer, 50), 1),
                                      "p99": round(percentile(from_answer, 99), 1),
                                      "samples_ms": [round(v, 1) for v in from_answer]}
        return out


async def run_rows(a, result, save, receiver, as_token):
    rooms = a.rooms
    ghosts = a.ghosts or (20 if a.quick else 100)
    messages = a.messages or (1000 if a.quick else 10000)
    lag_rounds = a.lag or (50 if a.quick else 200)
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=a.workers + 8)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        http = Http(a.url, session)
        async with session.get(a.url + "/_matrix/client/versions") as r:
            result["server"] = r.headers.get("Server")
        bench = Bench(a, http, receiver, as_token)
        print(f"  {a.label}: setup, {rooms} rooms x {ghosts} ghosts", file=sys.stderr)
        try:
            result["setup"] = await bench.setup(rooms, ghosts, a.workers)
        except (Error, aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError) as e:
            result["setup"] = {"error": str(e)[:300] or type(e).__name__}
            save()
            raise
        print(f"  {a.label}: setup {result['setup']}", file=sys.stderr)
        save()
        for key, fn in (("throughput", lambda: bench.throughput(messages, a.workers)),
                        ("lag", lambda: bench.lag(lag_rounds))):
            print(f"  {a.label}: {key}", file=sys.stderr)
            try:
                await bench.settle()
                result[key] = await fn()
            except (Error, aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError) as e:
                result[key] = {"error": str(e)[:300] or type(e).__name__}
            print(f"  {a.label}: {key} {result[key]}", file=sys.stderr)
            save()
    result["bad_auth_requests"] = receiver.bad_auth


def run(a):
    with open(a.registration) as f:
        registration = yaml.safe_load(f)
    port = int(registration["url"].rsplit(":", 1)[1])
    receiver = Receiver(port, registration["hs_token"])
    receiver.start()
    result = {"label": a.label, "quick": a.quick}

    def save():
        # After each row: a run stopped midway keeps the rows it measured.
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)

    try:
        asyncio.run(run_rows(a, result, save, receiver, registration["as_token"]))
    finally:
        if a.pid:
            result["server_rss_mib_after"] = round((status_kib(a.pid, "VmRSS") or 0) / 1024, 1)
        save()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("configure")
    c.add_argument("path")
    c.add_argument("--registration", required=True)
    c.add_argument("--as-port", type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--pid", type=int, help="the server's pid (its RSS after the run)")
    r.add_argument("--label", required=True)
    r.add_argument("--registration", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--rooms", type=int, default=10)
    r.add_argument("--ghosts", type=int, help="ghosts per room (100; 20 with --quick)")
    r.add_argument("--messages", type=int, help="messages of the throughput row (10,000; 1,000 with --quick)")
    r.add_argument("--lag", type=int, help="lag rounds (200; 50 with --quick)")
    r.add_argument("--workers", type=int, default=32, help="requests in flight")
    a = ap.parse_args()
    if a.command == "configure":
        configure(a)
    else:
        run(a)


if __name__ == "__main__":
    main()
