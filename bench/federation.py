"""The federation rows of the benchmark (issue 14), run by bench/run.sh --federation-only: a pair
of servers of the same kind on loopback (Synapse -> Synapse, then Myelin -> Myelin), server A
sending to server B, with the same settings for both kinds:

- each server is named by an IP literal with its port (`127.0.0.1:<port>`, no name resolution)
  and serves federation over TLS on that port with a certificate from one throwaway test CA that
  both trust (`federation_custom_ca_list`); `ip_range_whitelist: ["127.0.0.1"]` and an empty
  `federation_ip_range_blacklist` let loopback through, as the interoperability tests have it
  (crates/test-support/src/synapse.rs and federation.rs);
- open registration, rate limits off (federation's too), presence off, logs at warning level,
  SQLite, bcrypt cost 4 (no row measures registration).

Rows:
1. inbound throughput: --senders users on A send --messages messages into a room a user on B
   has joined, as fast as they can (one request in flight per sender), then one last message;
   the time from the first send to that last message in B's /sync long-poll, and the count of
   those messages B then holds (/messages), give the messages per second B received (federation
   delivers a destination's PDUs in order; a Synapse B prunes its inbound queue under load);
2. delivery latency: --delivery messages one at a time, each from its send's answer on A to its
   arrival in B's /sync long-poll (running all along): p50 and p99;
3. remote join of a big room: a room on A with --state-events state events (a custom type,
   distinct state keys), then a user on B joins it via A: the join's wall time, and B's peak
   RSS during it (VmRSS sampled every 20 ms from /proc/<pid>/status; VmHWM after it).

Usage: python federation.py run --kind synapse|myelin [--myelin-bin PATH] --workdir DIR --out FILE [--quick]
"""
import argparse
import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

import aiohttp
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from myelin_config import RATE_LIMITS  # noqa: E402
from media import status_kib  # noqa: E402

SHARED_SECRET = "bench-shared-secret"
STATE_TYPE = "org.myelin.bench.state"


# --- the test CA -----------------------------------------------------------------------------

def write_certificates(directory):
    """A throwaway CA and a server certificate it signs for 127.0.0.1 (an IP SAN) and
    localhost. The CA and the server have distinct names: OpenSSL (Synapse's TLS) takes a
    certificate whose issuer is its own subject for self-signed."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Myelin bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Myelin bench server")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(os.path.join(directory, "cert.pem"), "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(os.path.join(directory, "key.pem"), "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


# --- the servers -----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_signing_key(path):
    """An ed25519 signing key in Synapse's format (`ed25519 <version> <unpadded base64 seed>`),
    which both kinds read."""
    import base64
    seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    with open(path, "w") as f:
        f.write(f"ed25519 a_bench {seed}\n")


BIG = {"per_second": 1_000_000, "burst_count": 10_000_000}


class Server:
    def __init__(self, kind, name, directory, certs, myelin_bin, python):
        self.kind, self.label, self.dir = kind, name, directory
        os.makedirs(directory, exist_ok=True)
        self.fed_port, self.client_port = free_port(), free_port()
        self.server_name = f"127.0.0.1:{self.fed_port}"
        self.url = f"http://127.0.0.1:{self.client_port}"
        cfg = {
            "server_name": self.server_name,
            "pid_file": os.path.join(directory, "homeserver.pid"),
            "listeners": [
                {"port": self.fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
                 "x_forwarded": False, "resources": [{"names": ["federation"], "compress": False}]},
                {"port": self.client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                 "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]},
            ],
            "tls_certificate_path": os.path.join(certs, "cert.pem"),
            "tls_private_key_path": os.path.join(certs, "key.pem"),
            "federation_custom_ca_list": [os.path.join(certs, "ca.pem")],
            "federation_verify_certificates": True,
            "ip_range_whitelist": ["127.0.0.1"],
            # Synapse blocks IP-literal server names in its blocklist whatever the allowlist says.
            "federation_ip_range_blacklist": [],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "database": {"name": "sqlite3", "args": {"database": os.path.join(directory, "homeserver.db")}},
            "media_store_path": os.path.join(directory, "media"),
            "signing_key_path": os.path.join(directory, "signing.key"),
            "registration_shared_secret": SHARED_SECRET,
            "macaroon_secret_key": "bench-macaroon-secret",
            "form_secret": "bench-form-secret",
            "report_stats": False,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "bcrypt_rounds": 4,
            "presence": {"enabled": False},
            "enable_metrics": False,
            "rc_federation": {"window_size": 1000, "sleep_limit": 1_000_000, "sleep_delay": 1,
                              "reject_limit": 1_000_000, "concurrent": 1000},
            **RATE_LIMITS,
        }
        if kind == "synapse":
            log_config = os.path.join(directory, "log.config")
            with open(log_config, "w") as f:
                yaml.safe_dump({
                    "version": 1,
                    "formatters": {"precise": {"format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s"}},
                    "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise",
                                          "filename": os.path.join(directory, "homeserver.log")}},
                    "root": {"level": "WARNING", "handlers": ["file"]},
                    "disable_existing_loggers": False,
                }, f)
            cfg["log_config"] = log_config
            # A destination that failed is retried within a second or two (both kinds alike).
            cfg["federation"] = {"destination_min_retry_interval": "1s", "destination_retry_multiplier": 1,
                                 "destination_max_retry_interval": "2s"}
            command = [python, "-m", "synapse.app.homeserver", "-c", os.path.join(directory, "homeserver.yaml")]
        else:
            cfg["myelin_federation_retry"] = {"min_interval_ms": 1000, "max_interval_ms": 2000}
            command = [os.path.abspath(myelin_bin), "-c", os.path.join(directory, "homeserver.yaml")]
        write_signing_key(cfg["signing_key_path"])
        with open(os.path.join(directory, "homeserver.yaml"), "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        env = dict(os.environ, RUST_LOG="warn")
        self.log = open(os.path.join(directory, "server.out"), "w")
        self.proc = subprocess.Popen(command, cwd=directory, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid

    async def wait_up(self, http):
        for _ in range(1200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode} (see {self.dir}/server.out)")
            try:
                async with http.get(f"{self.url}/_matrix/client/versions") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.label} did not come up")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- a client --------------------------------------------------------------------------------

class Client:
    def __init__(self, http, server, token, user_id):
        self.http, self.server, self.token, self.user_id = http, server, token, user_id

    async def call(self, method, path, body=None, params=None, timeout=600):
        async with self.http.request(method, self.server.url + path, json=body, params=params,
                                     headers={"Authorization": f"Bearer {self.token}"},
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"{method} {path} on {self.server.label}: {r.status} {data}")
            return data

    async def send(self, room_id, body):
        txn = uuid.uuid4().hex
        return await self.call("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
                               {"msgtype": "m.text", "body": body})

    async def join(self, room_id, via):
        return await self.call("POST", f"/_matrix/client/v3/join/{room_id}",
                               {}, params={"server_name": via, "via": via})


async def register(http, server, localpart):
    body = {"username": localpart, "password": "Bench-password-1!", "initial_device_display_name": "bench"}
    url = f"{server.url}/_matrix/client/v3/register"
    async with http.post(url, json=body) as r:
        data = await r.json(content_type=None)
        status = r.status
    if status == 401:
        body["auth"] = {"type": "m.login.dummy", "session": data.get("session")}
        async with http.post(url, json=body) as r:
            data = await r.json(content_type=None)
            status = r.status
    if status != 200:
        raise RuntimeError(f"register {localpart} on {server.label}: {status} {data}")
    return Client(http, server, data["access_token"], data["user_id"])


class Watcher:
    """A /sync long-poll loop of a user on B: the arrival time of each message body it sees."""

    def __init__(self, client):
        self.client = client
        self.seen = {}
        self.waiting = {}
        self.task = None

    async def start(self):
        filt = {"room": {"timeline": {"limit": 50}, "state": {"lazy_load_members": True},
                         "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
                "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}}
        data = await self.client.call("POST", f"/_matrix/client/v3/user/{self.client.user_id}/filter", filt)
        self.filter_id = data["filter_id"]
        first = await self.client.call("GET", "/_matrix/client/v3/sync", params={"filter": self.filter_id, "timeout": "0"})
        self.since = first["next_batch"]
        self.task = asyncio.create_task(self.loop())

    async def loop(self):
        while True:
            data = await self.client.call("GET", "/_matrix/client/v3/sync", params={
                "filter": self.filter_id, "timeout": "30000", "since": self.since}, timeout=120)
            now = time.perf_counter()
            self.since = data["next_batch"]
            for room in ((data.get("rooms") or {}).get("join") or {}).values():
                for event in (room.get("timeline") or {}).get("events") or []:
                    if event.get("type") != "m.room.message":
                        continue
                    body = (event.get("content") or {}).get("body")
                    if body is not None and body not in self.seen:
                        self.seen[body] = now
                        future = self.waiting.pop(body, None)
                        if future is not None and not future.done():
                            future.set_result(now)

    async def wait_for(self, body, timeout):
        if body in self.seen:
            return self.seen[body]
        future = self.waiting.setdefault(body, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(asyncio.shield(future), timeout)

    async def stop(self):
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
            self.task = None


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --- the rows --------------------------------------------------------------------------------

async def count_messages(client, room_id, prefix):
    """How many messages whose body starts with `prefix` B holds in the room (/messages back)."""
    count, token = 0, None
    filt = json.dumps({"types": ["m.room.message"], "lazy_load_members": True})
    while True:
        params = {"dir": "b", "limit": "1000", "filter": filt}
        if token:
            params["from"] = token
        data = await client.call("GET", f"/_matrix/client/v3/rooms/{room_id}/messages", params=params)
        chunk = data.get("chunk") or []
        count += sum(1 for e in chunk if str((e.get("content") or {}).get("body", "")).startswith(prefix))
        token = data.get("end")
        if not chunk or not token:
            return count


async def inbound(alice, senders, bob, watcher, room_id, a, n):
    run = uuid.uuid4().hex[:8]
    per = [n // len(senders) + (1 if i < n % len(senders) else 0) for i in range(len(senders))]
    latencies = []

    async def sender(i, client):
        for j in range(per[i]):
            t = time.perf_counter()
            await client.send(room_id, f"in-{run}-{i}-{j}")
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(sender(i, c) for i, c in enumerate(senders)))
    sent = time.perf_counter()
    last = f"in-{run}-last"
    await alice.send(room_id, last)
    seen = await watcher.wait_for(last, timeout=1800)
    received = await count_messages(bob, room_id, f"in-{run}-")
    seconds = seen - start
    return {
        "messages": n + 1,
        "senders": len(senders),
        "received_on_b": received,
        "seconds": round(seconds, 2),
        "messages_per_s": round((n + 1) / seconds, 1),
        # A Synapse B prunes its inbound queue under load: what it holds is what it received.
        "received_per_s": round(received / seconds, 1),
        "send_on_a_per_s": round(n / (sent - start), 1),
        "send_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "last_send_to_last_seen_ms": round((seen - sent) * 1000, 1),
    }


async def delivery(alice, watcher, room_id, n):
    run = uuid.uuid4().hex[:8]
    from_answer, from_request = [], []
    for i in range(n):
        body = f"dl-{run}-{i}"
        t0 = time.perf_counter()
        await alice.send(room_id, body)
        t1 = time.perf_counter()
        seen = await watcher.wait_for(body, timeout=120)
        from_answer.append(max(0.0, seen - t1) * 1000)
        from_request.append((seen - t0) * 1000)
    return {
        "messages": n,
        "latency_ms": {"p50": round(percentile(from_answer, 50), 1), "p99": round(percentile(from_answer, 99), 1),
                       "max": round(max(from_answer), 1)},
        "from_request_ms": {"p50": round(percentile(from_request, 50), 1),
                            "p99": round(percentile(from_request, 99), 1)},
    }


async def big_join(alice, bob, server_b, a, n, concurrency):
    room = await alice.call("POST", "/_matrix/client/v3/createRoom",
                            {"preset": "public_chat", "name": "state bench"})
    room_id = room["room_id"]
    counter = iter(range(n))

    async def writer():
        for i in counter:
            await alice.call("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/{STATE_TYPE}/k{i}",
                             {"i": i, "pad": "x" * 32})

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    create_seconds = time.perf_counter() - start

    before = status_kib(server_b.pid, "VmRSS") or 0
    hwm_before = status_kib(server_b.pid, "VmHWM") or 0
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = status_kib(server_b.pid, "VmRSS")
            if rss is not None:
                peak[0] = max(peak[0], rss)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        await bob.join(room_id, alice.server.server_name)
        join_seconds = time.perf_counter() - start
    finally:
        done.set()
        sampler.join()
    hwm_after = status_kib(server_b.pid, "VmHWM") or 0
    # B holds the room's state: counted once the join has answered (not timed).
    state_on_b = None
    try:
        state = await bob.call("GET", f"/_matrix/client/v3/rooms/{room_id}/state", timeout=600)
        state_on_b = sum(1 for e in state if e.get("type") == STATE_TYPE)
    except (RuntimeError, asyncio.TimeoutError) as e:
        print(f"  state on B not read: {e}", file=sys.stderr)
    return {
        "state_events": n,
        "create_on_a_s": round(create_seconds, 1),
        "create_on_a_per_s": round(n / create_seconds, 1),
        "join_s": round(join_seconds, 2),
        "state_events_on_b": state_on_b,
        "b_rss_before_mib": round(before / 1024, 1),
        "b_rss_peak_mib": round(peak[0] / 1024, 1),
        "b_hwm_before_mib": round(hwm_before / 1024, 1),
        "b_hwm_after_mib": round(hwm_after / 1024, 1),
    }


async def run(a):
    n_messages = 100 if a.quick else 2000
    n_delivery = 20 if a.quick else 200
    n_state = 500 if a.quick else 10_000
    workdir = os.path.abspath(a.workdir)
    base = os.path.join(workdir, f"federation-{a.kind}")
    shutil.rmtree(base, ignore_errors=True)
    certs = os.path.join(base, "certs")
    os.makedirs(certs)
    write_certificates(certs)
    servers = []
    result = {"kind": a.kind, "quick": a.quick}

    def save():
        # After each row: a run stopped midway keeps the rows it measured.
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)

    try:
        servers = [Server(a.kind, f"{a.kind}-{x}", os.path.join(base, x), certs, a.myelin_bin, sys.executable)
                   for x in ("a", "b")]
        server_a, server_b = servers
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
            for s in servers:
                await s.wait_up(http)
            async with http.get(f"{server_a.url}/_matrix/client/versions") as r:
                result["server"] = r.headers.get("Server")
            tag = uuid.uuid4().hex[:6]
            alice = await register(http, server_a, f"alice{tag}")
            senders = [await register(http, server_a, f"sender{i}{tag}") for i in range(a.senders)]
            bob = await register(http, server_b, f"bob{tag}")
            room = await alice.call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "name": "busy"})
            room_id = room["room_id"]
            for s in senders:
                await s.join(room_id, server_a.server_name)
            print(f"  {a.kind}: B joins A's room", file=sys.stderr)
            await bob.join(room_id, server_a.server_name)
            watcher = Watcher(bob)
            await watcher.start()
            # Warm-up: the keys fetched and the connections opened before anything is timed.
            await alice.send(room_id, f"warm-{tag}")
            await watcher.wait_for(f"warm-{tag}", timeout=120)
            print(f"  {a.kind}: inbound throughput, {n_messages} messages", file=sys.stderr)
            result["inbound"] = await inbound(alice, senders, bob, watcher, room_id, a, n_messages)
            print(f"  {a.kind}: {result['inbound']}", file=sys.stderr)
            save()
            print(f"  {a.kind}: delivery latency, {n_delivery} messages", file=sys.stderr)
            result["delivery"] = await delivery(alice, watcher, room_id, n_delivery)
            print(f"  {a.kind}: {result['delivery']}", file=sys.stderr)
            save()
            # The /sync loop stops before the big room: its state would land in B's /sync.
            await watcher.stop()
            print(f"  {a.kind}: joining a room with {n_state} state events", file=sys.stderr)
            result["big_join"] = await big_join(alice, bob, server_b, a, n_state, a.state_writers)
            print(f"  {a.kind}: {result['big_join']}", file=sys.stderr)
            save()
    finally:
        for s in servers:
            s.stop()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--kind", choices=["synapse", "myelin"], required=True)
    r.add_argument("--myelin-bin", help="the Myelin binary (with --kind myelin)")
    r.add_argument("--workdir", required=True, help="where the servers' directories go")
    r.add_argument("--out", required=True)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--senders", type=int, default=4, help="concurrent senders on A for the throughput row")
    r.add_argument("--state-writers", type=int, default=4, help="concurrent state senders on A")
    a = ap.parse_args()
    if a.kind == "myelin" and not a.myelin_bin:
        ap.error("--kind myelin needs --myelin-bin")
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
