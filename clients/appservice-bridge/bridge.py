#!/usr/bin/env python3
"""A small application-service bridge built on mautrix-python, run against a homeserver to prove
its application-service support stage by stage (see README.md beside this file).

    bridge.py --homeserver http://127.0.0.1:8008 --registration registration.yaml \
              --restart-cmd "path/to/hs.sh restart" [--require all|a,b,...]

The registration file (written by scripts/appservice_bridge.sh) gives the tokens, the
sender_localpart, the id and the URL this program listens on. The real user is registered with
normal registration (m.login.dummy), so the homeserver must allow it. `--restart-cmd` is a shell
command that kills the homeserver (SIGKILL) and starts it again on the same database, returning
once it answers /health; stage i uses it.

Every stage prints PASS or FAIL with the reason; the exit code is nonzero if a required stage
failed (or was skipped because an earlier stage it builds on failed).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
import time
import urllib.parse
from typing import Any, Awaitable, Callable

import aiohttp
import yaml
from aiohttp import web
from mautrix.appservice import AppService
from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store.memory import MemoryStateStore
from mautrix.errors import MatrixRequestError
from mautrix.util import background_task
from mautrix.types import RoomAlias, RoomCreatePreset, UserID

STAGES = {
    "a": "ping: POST /_matrix/client/v1/appservice/{id}/ping reaches the bridge",
    "b": "registration: bot and 3 ghosts by m.login.application_service, whoami as each (user_id)",
    "c": "room: the bot creates a room, invites the real user, the user joins (seen by transaction)",
    "d": "messages in: the user's messages reach the bridge by transaction",
    "e": "ephemeral: the user's typing and read receipt reach the bridge by transaction",
    "f": "ghosts send: 3 ghosts join and send by user_id masquerading, the user reads them",
    "g": "user query: the user invites an unknown @ghost_ in the namespace, the homeserver asks the bridge, the ghost joins",
    "h": "alias query: the user joins an unknown #bridge_ alias, the homeserver asks the bridge, the join succeeds",
    "i": "restart: messages sent while the bridge refused transactions, and after a kill -9 and restart, arrive exactly once",
}
TIMEOUT = 30.0


class MemoryASStateStore(ASStateStore, MemoryStateStore):
    """mautrix's in-memory state store for appservices (nothing written to disk)."""

    def __init__(self) -> None:
        ASStateStore.__init__(self)
        MemoryStateStore.__init__(self)


class StageFailed(Exception):
    pass


def check(condition: bool, reason: str) -> None:
    if not condition:
        raise StageFailed(reason)


class Recorder:
    """What arrived from the homeserver: every HTTP attempt at a transaction, the events and
    ephemeral events of each transaction handed to the bridge, and the queries."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []  # (txn id, status we answered)
        self.events: list[tuple[str, dict]] = []  # (txn id, event)
        self.ephemeral: list[tuple[str, dict]] = []
        self.user_queries: list[str] = []
        self.alias_queries: list[str] = []
        self.pings: list[Any] = []
        self.refuse = False  # answer 503 to transactions (the bridge "down")
        self.changed = asyncio.Event()

    def notify(self) -> None:
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    def event_count(self, event_id: str) -> int:
        return sum(1 for _, e in self.events if e.get("event_id") == event_id)

    def event_txns(self, event_id: str) -> list[str]:
        return [t for t, e in self.events if e.get("event_id") == event_id]


class Bridge(AppService):
    """mautrix's AppService, recording what each accepted transaction carried."""

    recorder: Recorder

    async def handle_transaction(self, txn_id: str, *, events: list, extra_data: dict, ephemeral=None, **kwargs):
        for event in events:
            self.recorder.events.append((txn_id, dict(event)))
            # Ghosts accept invitations (stage g: the queried ghost is invited by the user).
            if (event.get("type") == "m.room.member" and str(event.get("state_key", "")).startswith("@ghost_")
                    and event.get("content", {}).get("membership") == "invite"):
                ghost = self.intent.user(UserID(event["state_key"]))
                background_task.create(ghost.join_room_by_id(event["room_id"]))
        for edu in ephemeral or []:
            self.recorder.ephemeral.append((txn_id, dict(edu)))
        self.recorder.notify()
        return await super().handle_transaction(
            txn_id, events=events, extra_data=extra_data, ephemeral=ephemeral, **kwargs
        )

    async def _http_ping(self, request: web.Request) -> web.Response:
        response = await super()._http_ping(request)
        self.recorder.pings.append(request.headers.get("Authorization", ""))
        self.recorder.notify()
        return response


class Client:
    """A real user speaking plain HTTP, so statuses and bodies are checked as they are."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.token: str | None = None
        self.user_id: str | None = None
        self.txn = 0

    async def call(self, method: str, path: str, body: Any = None, params: dict | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, self.base + path, json=body, params=params, headers=headers,
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        ) as response:
            try:
                data = await response.json(content_type=None)
            except Exception:
                data = await response.text()
            return response.status, data

    async def ok(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        status, data = await self.call(method, path, body, params)
        check(status == 200, f"{method} {path} answered {status}: {data}")
        return data

    async def send_text(self, room_id: str, text: str) -> str:
        self.txn += 1
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t{self.txn}-{secrets.token_hex(4)}"
        data = await self.ok("PUT", path, {"msgtype": "m.text", "body": text})
        return data["event_id"]


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        with open(args.registration) as f:
            self.reg = yaml.safe_load(f)
        self.recorder = Recorder()
        self.results: dict[str, str | None] = {}
        self.room_id: str | None = None
        self.server_name: str = ""
        self.ghosts: list[str] = []
        self.user: Client | None = None

    # -- the bridge's side ------------------------------------------------------------------

    async def query_user(self, user_id: UserID) -> dict | None:
        self.recorder.user_queries.append(user_id)
        self.recorder.notify()
        if not user_id.startswith("@ghost_"):
            return None
        intent = self.az.intent.user(user_id)
        await intent.ensure_registered()
        await intent.set_displayname(f"Ghost {user_id.split(':')[0][7:]}")
        # The spec's answer is an empty object, but mautrix answers 404 to a falsy one: the
        # homeserver ignores the content.
        return {"bridged": True}

    async def query_alias(self, alias: RoomAlias) -> dict | None:
        self.recorder.alias_queries.append(alias)
        self.recorder.notify()
        localpart = alias[1:].split(":")[0]
        if not localpart.startswith("bridge_") or localpart.startswith("bridge_unknown"):
            return None
        await self.az.intent.create_room(
            alias_localpart=localpart, preset=RoomCreatePreset.PUBLIC, name=f"Bridged {localpart}"
        )
        return {"bridged": True}

    @web.middleware
    async def refuse_middleware(self, request: web.Request, handler):
        if "/transactions/" in request.path:
            txn_id = request.path.rsplit("/", 1)[-1]
            if self.recorder.refuse:
                self.recorder.attempts.append((txn_id, 503))
                self.recorder.notify()
                return web.json_response({"errcode": "M_UNKNOWN", "error": "bridge down (test)"}, status=503)
            response = await handler(request)
            self.recorder.attempts.append((txn_id, response.status))
            return response
        return await handler(request)

    # -- stages -----------------------------------------------------------------------------

    async def stage(self, key: str, needs: list[str], body: Callable[[], Awaitable[str | None]]) -> None:
        missing = [n for n in needs if self.results.get(n) is not None]
        if missing:
            self.results[key] = f"skipped: stage(s) {','.join(missing)} failed"
        else:
            try:
                note = await asyncio.wait_for(body(), 240)
                self.results[key] = None
                print(f"stage {key} PASS: {STAGES[key]}" + (f" ({note})" if note else ""), flush=True)
                return
            except StageFailed as e:
                self.results[key] = str(e)
            except MatrixRequestError as e:
                self.results[key] = f"{type(e).__name__}: {e.http_status} {e.errcode} {e.message}"
            except asyncio.TimeoutError:
                self.results[key] = "timed out after 240 s"
            except Exception as e:  # noqa: BLE001 - any failure is reported, not raised
                self.results[key] = f"{type(e).__name__}: {e}"
        print(f"stage {key} FAIL: {STAGES[key]}: {self.results[key]}", flush=True)

    async def stage_a_ping(self) -> str:
        txn = f"ping-{secrets.token_hex(4)}"
        status, data = await self.as_client.call(
            "POST", f"/_matrix/client/v1/appservice/{q(self.reg['id'])}/ping", {"transaction_id": txn}
        )
        check(status == 200, f"ping answered {status}: {data}")
        check(isinstance(data, dict) and isinstance(data.get("duration_ms"), int),
              f"no integer duration_ms in {data}")
        check(self.recorder.pings == [f"Bearer {self.reg['hs_token']}"],
              f"the bridge saw pings with {self.recorder.pings} (expected one with the hs_token as Bearer)")
        duration = data["duration_ms"]
        # Another service's id is refused.
        status, data = await self.as_client.call("POST", "/_matrix/client/v1/appservice/not-ours/ping", {})
        check(status == 403 and data.get("errcode") == "M_FORBIDDEN",
              f"ping of another appservice id answered {status} {data}, expected 403 M_FORBIDDEN")
        return f"duration_ms={duration}"

    async def register(self, localpart: str) -> tuple[int, Any]:
        return await self.as_client.call(
            "POST", "/_matrix/client/v3/register",
            {"type": "m.login.application_service", "username": localpart, "inhibit_login": True},
        )

    async def stage_b_register(self) -> str:
        # The bot: the homeserver may have created the sender already (Synapse does): M_USER_IN_USE.
        status, data = await self.register(self.reg["sender_localpart"])
        check(status == 200 or (status == 400 and data.get("errcode") == "M_USER_IN_USE"),
              f"registering the bot answered {status} {data}")
        bot_note = "created" if status == 200 else "existed (M_USER_IN_USE)"
        for name in ("ghost_alpha", "ghost_beta", "ghost_gamma"):
            status, data = await self.register(name)
            user_id = f"@{name}:{self.server_name}"
            check(status == 200 and data.get("user_id") == user_id,
                  f"registering {name} answered {status} {data}")
            await self.az.state_store.registered(UserID(user_id))
            self.ghosts.append(user_id)
        # A name outside the namespace is refused (M_EXCLUSIVE) ...
        status, data = await self.register("outsider")
        check(status == 400 and data.get("errcode") == "M_EXCLUSIVE",
              f"registering outsider (outside the namespace) answered {status} {data}, expected 400 M_EXCLUSIVE")
        # ... and so is a namespace name without the as_token.
        status, data = await self.anon.call(
            "POST", "/_matrix/client/v3/register",
            {"username": "ghost_stolen", "password": "x-Password-1", "auth": {"type": "m.login.dummy"}},
        )
        check(status == 400 and data.get("errcode") == "M_EXCLUSIVE",
              f"a normal registration of ghost_stolen answered {status} {data}, expected 400 M_EXCLUSIVE")
        for user_id in [str(self.az.bot_mxid)] + self.ghosts:
            status, data = await self.as_client.call(
                "GET", "/_matrix/client/v3/account/whoami", params={"user_id": user_id}
            )
            check(status == 200 and data.get("user_id") == user_id, f"whoami as {user_id} answered {status} {data}")
        status, data = await self.as_client.call(
            "GET", "/_matrix/client/v3/account/whoami", params={"user_id": f"@nobody:{self.server_name}"}
        )
        check(status == 403, f"whoami as @nobody (outside the namespace) answered {status} {data}, expected 403")
        return f"bot {bot_note}"

    async def stage_c_room(self) -> str:
        user = self.user
        self.room_id = await self.az.intent.create_room(name="asproof", invitees=[user.user_id])
        data = await user.ok("POST", f"/_matrix/client/v3/join/{q(self.room_id)}", {})
        check(data.get("room_id") == self.room_id, f"join answered {data}")

        def joined():
            return [e for _, e in self.recorder.events if e.get("type") == "m.room.member"
                    and e.get("state_key") == user.user_id and e.get("room_id") == self.room_id
                    and e.get("content", {}).get("membership") == "join"]
        check(await self.recorder.wait_for(joined), "the user's join never reached the bridge")
        return None

    async def stage_d_messages(self) -> str:
        ids = [await self.user.send_text(self.room_id, f"hello bridge {n}") for n in range(3)]
        arrived = await self.recorder.wait_for(lambda: all(self.recorder.event_count(i) for i in ids))
        check(arrived, f"not all of {ids} reached the bridge: counts {[self.recorder.event_count(i) for i in ids]}")
        for n, event_id in enumerate(ids):
            event = next(e for _, e in self.recorder.events if e.get("event_id") == event_id)
            check(event.get("sender") == self.user.user_id and event.get("content", {}).get("body") == f"hello bridge {n}"
                  and event.get("room_id") == self.room_id, f"event {event_id} arrived as {event}")
        await asyncio.sleep(1)
        counts = [self.recorder.event_count(i) for i in ids]
        check(counts == [1, 1, 1], f"delivery counts {counts}, expected exactly once each")
        return None

    async def stage_e_ephemeral(self) -> str:
        user = self.user
        await user.ok("PUT", f"/_matrix/client/v3/rooms/{q(self.room_id)}/typing/{q(user.user_id)}",
                      {"typing": True, "timeout": 20000})

        def typing():
            return [e for _, e in self.recorder.ephemeral if e.get("type") == "m.typing"
                    and e.get("room_id") == self.room_id and user.user_id in e.get("content", {}).get("user_ids", [])]
        check(await self.recorder.wait_for(typing), "no m.typing with the user reached the bridge")
        # The user reads a message of the bot's.
        event_id = await self.az.intent.send_text(self.room_id, "read me")
        await user.ok("POST", f"/_matrix/client/v3/rooms/{q(self.room_id)}/receipt/m.read/{q(event_id)}", {})

        def receipt():
            return [e for _, e in self.recorder.ephemeral if e.get("type") == "m.receipt"
                    and e.get("room_id") == self.room_id
                    and user.user_id in e.get("content", {}).get(event_id, {}).get("m.read", {})]
        check(await self.recorder.wait_for(receipt), f"no m.receipt of {event_id} by the user reached the bridge")
        await user.ok("PUT", f"/_matrix/client/v3/rooms/{q(self.room_id)}/typing/{q(user.user_id)}", {"typing": False})
        return None

    async def stage_f_ghosts(self) -> str:
        sent = {}
        for ghost in self.ghosts:
            intent = self.az.intent.user(UserID(ghost))
            await self.az.intent.invite_user(self.room_id, UserID(ghost))
            await intent.join_room_by_id(self.room_id)
            sent[await intent.send_text(self.room_id, f"hi from {ghost}")] = ghost
        data = await self.user.ok("GET", f"/_matrix/client/v3/rooms/{q(self.room_id)}/messages",
                                  params={"dir": "b", "limit": "30"})
        seen = {e["event_id"]: e for e in data.get("chunk", [])}
        for event_id, ghost in sent.items():
            event = seen.get(event_id)
            check(event is not None, f"{ghost}'s message {event_id} is not in the user's /messages")
            check(event["sender"] == ghost and event["content"].get("body") == f"hi from {ghost}",
                  f"{event_id} reads as sent by {event['sender']}: {event['content']}")
        # The ghosts' own events are in the namespace too: each reaches the bridge once.
        arrived = await self.recorder.wait_for(lambda: all(self.recorder.event_count(i) == 1 for i in sent))
        check(arrived, f"ghost messages delivered {[self.recorder.event_count(i) for i in sent]} times, expected once each")
        return None

    async def stage_g_user_query(self) -> str:
        ghost = f"@ghost_queried:{self.server_name}"
        # The profile of an unknown namespace user: Synapse answers 404 without asking the
        # appservice (noted, not required).
        status, _ = await self.user.call("GET", f"/_matrix/client/v3/profile/{q(ghost)}")
        queried_by_profile = ghost in self.recorder.user_queries
        status_invite, data = await self.user.call(
            "POST", f"/_matrix/client/v3/rooms/{q(self.room_id)}/invite", {"user_id": ghost}
        )
        check(status_invite == 200, f"inviting {ghost} answered {status_invite} {data}")
        check(await self.recorder.wait_for(lambda: ghost in self.recorder.user_queries),
              f"the homeserver never queried the bridge for {ghost}")

        async def member_state() -> str | None:
            s, d = await self.user.call(
                "GET", f"/_matrix/client/v3/rooms/{q(self.room_id)}/state/m.room.member/{q(ghost)}")
            return d.get("membership") if s == 200 and isinstance(d, dict) else None
        deadline = time.monotonic() + TIMEOUT
        membership = None
        while time.monotonic() < deadline:
            membership = await member_state()
            if membership == "join":
                break
            await asyncio.sleep(0.3)
        check(membership == "join", f"{ghost} is '{membership}' in the room, expected join after the invite")
        status_after, data = await self.user.call("GET", f"/_matrix/client/v3/profile/{q(ghost)}")
        check(status_after == 200 and data.get("displayname") == "Ghost queried",
              f"profile of {ghost} after the query answered {status_after} {data}")
        return f"profile before the query answered {status}, {'with' if queried_by_profile else 'without'} a query"

    async def stage_h_alias_query(self) -> str:
        alias = f"#bridge_lobby:{self.server_name}"
        status, data = await self.user.call("POST", f"/_matrix/client/v3/join/{q(alias)}", {})
        check(alias in self.recorder.alias_queries, f"the homeserver never queried the bridge for {alias}")
        check(status == 200 and str(data.get("room_id", "")).startswith("!"), f"joining {alias} answered {status} {data}")
        status, directory = await self.user.call("GET", f"/_matrix/client/v3/directory/room/{q(alias)}")
        check(status == 200 and directory.get("room_id") == data["room_id"],
              f"the directory gives {status} {directory} for {alias}, the join gave {data['room_id']}")
        # An alias the bridge declines: queried, 404 from the bridge, M_NOT_FOUND to the client.
        unknown = f"#bridge_unknown_{secrets.token_hex(2)}:{self.server_name}"
        status, data = await self.user.call("GET", f"/_matrix/client/v3/directory/room/{q(unknown)}")
        check(status == 404 and data.get("errcode") == "M_NOT_FOUND", f"unknown alias {unknown} answered {status} {data}")
        check(unknown in self.recorder.alias_queries, f"the homeserver never queried the bridge for {unknown}")
        return None

    async def stage_i_restart(self) -> str:
        user = self.user
        # The bridge goes down: the homeserver must keep what it could not deliver.
        self.recorder.refuse = True
        refused_before = sum(1 for _, s in self.recorder.attempts if s == 503)
        before = [await user.send_text(self.room_id, f"while the bridge is down {n}") for n in range(2)]
        refused = await self.recorder.wait_for(
            lambda: sum(1 for _, s in self.recorder.attempts if s == 503) > refused_before, timeout=15)
        note = "a delivery was refused before the kill" if refused else "no delivery was attempted before the kill"
        proc = await asyncio.create_subprocess_shell(self.args.restart_cmd)
        try:
            rc = await asyncio.wait_for(proc.wait(), 180)
        except asyncio.TimeoutError:
            proc.kill()
            raise StageFailed("the restart command took more than 180 s")
        self.recorder.refuse = False
        check(rc == 0, f"the restart command exited {rc}")
        after = [await user.send_text(self.room_id, f"after the restart {n}") for n in range(2)]
        ids = before + after
        arrived = await self.recorder.wait_for(lambda: all(self.recorder.event_count(i) for i in ids), timeout=90)
        check(arrived, "not delivered within 90 s of the restart: "
              + ", ".join(f"{i}: {self.recorder.event_count(i)}" for i in ids))
        await asyncio.sleep(3)  # any duplicate would come now
        counts = {i: self.recorder.event_txns(i) for i in ids}
        dup = {i: t for i, t in counts.items() if len(t) != 1}
        check(not dup, f"delivered more than once (event: transactions): {dup}")
        return note

    # -- main -------------------------------------------------------------------------------

    async def main(self) -> int:
        reg = self.reg
        url = urllib.parse.urlparse(reg["url"])
        session = aiohttp.ClientSession()
        self.anon = Client(session, self.args.homeserver)
        status, data = await self.anon.call("GET", "/_matrix/client/versions")
        if status != 200:
            print(f"the homeserver at {self.args.homeserver} answered {status} to /versions", flush=True)
            return 2
        self.as_client = Client(session, self.args.homeserver)
        self.as_client.token = reg["as_token"]
        self.server_name = reg["namespaces"]["users"][0]["regex"].split(":", 1)[1].replace("\\", "")
        self.az = Bridge(
            server=self.args.homeserver, domain=self.server_name, as_token=reg["as_token"],
            hs_token=reg["hs_token"], bot_localpart=reg["sender_localpart"], id=reg["id"],
            state_store=MemoryASStateStore(), ephemeral_events=True,
            query_user=self.query_user, query_alias=self.query_alias,
            aiohttp_params={"middlewares": [self.refuse_middleware]},
        )
        self.az.recorder = self.recorder
        await self.az.start(host=url.hostname, port=url.port)
        try:
            # The real user, by normal registration.
            self.user = Client(session, self.args.homeserver)
            username = f"realuser{secrets.token_hex(3)}"
            status, data = await self.user.call("POST", "/_matrix/client/v3/register", {
                "username": username, "password": "real-Password-1", "auth": {"type": "m.login.dummy"}})
            if status == 401 and isinstance(data, dict) and "session" in data:
                status, data = await self.user.call("POST", "/_matrix/client/v3/register", {
                    "username": username, "password": "real-Password-1",
                    "auth": {"type": "m.login.dummy", "session": data["session"]}})
            if status != 200:
                print(f"registering the real user answered {status} {data}", flush=True)
                return 2
            self.user.token, self.user.user_id = data["access_token"], data["user_id"]

            await self.stage("a", [], self.stage_a_ping)
            await self.stage("b", [], self.stage_b_register)
            await self.stage("c", [], self.stage_c_room)
            await self.stage("d", ["c"], self.stage_d_messages)
            await self.stage("e", ["c"], self.stage_e_ephemeral)
            await self.stage("f", ["b", "c"], self.stage_f_ghosts)
            await self.stage("g", ["c"], self.stage_g_user_query)
            await self.stage("h", [], self.stage_h_alias_query)
            await self.stage("i", ["c"], self.stage_i_restart)
        finally:
            await self.az.stop()
            await session.close()
        required = list(STAGES) if self.args.require == "all" else [s for s in self.args.require.split(",") if s]
        failed = [s for s in required if self.results.get(s, "not run") is not None]
        passed = sum(1 for r in self.results.values() if r is None)
        print(f"{passed} passed, {len(self.results) - passed} failed", flush=True)
        if failed:
            print(f"required stages failed: {','.join(failed)}", flush=True)
            return 1
        return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--homeserver", required=True, help="client-server base URL")
    parser.add_argument("--registration", required=True, help="the appservice registration YAML")
    parser.add_argument("--restart-cmd", required=True, help="kills and restarts the homeserver (stage i)")
    parser.add_argument("--require", default="all", help="stages whose failure fails the run: all or e.g. a,b,c")
    parser.add_argument("--verbose", action="store_true", help="mautrix's debug log on stderr")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=logging.DEBUG if arguments.verbose else logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(Run(arguments).main()))
