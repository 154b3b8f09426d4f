#!/usr/bin/env python3
"""A real user talks to a third-party bridge's bot in its admin (management) room and expects an
answer to `help`:

    admin_room.py --homeserver URL --bot @telegrambot:localhost --expect "Help" [--command help]

Registers a user with normal registration (m.login.dummy), creates a direct room inviting the bot,
waits until the bot has joined (the homeserver delivered the invite to the bridge by transaction
and the bridge joined as its sender), sends the command, and syncs until the bot answers with a
message containing --expect. Prints PASS or FAIL per step; exit code 0 only if all pass.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
import urllib.parse

import aiohttp

TIMEOUT = 60.0


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def main(args: argparse.Namespace) -> int:
    base = args.homeserver.rstrip("/")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        token = None

        async def call(method: str, path: str, body=None, params=None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with session.request(method, base + path, json=body, params=params, headers=headers) as r:
                return r.status, await r.json(content_type=None)

        def step(name: str, ok: bool, detail: str) -> bool:
            print(f"{name} {'PASS' if ok else 'FAIL'}: {detail}", flush=True)
            return ok

        username = f"admin{secrets.token_hex(3)}"
        body = {"username": username, "password": "admin-Password-1", "auth": {"type": "m.login.dummy"}}
        status, data = await call("POST", "/_matrix/client/v3/register", body)
        if status == 401 and "session" in data:
            body["auth"]["session"] = data["session"]
            status, data = await call("POST", "/_matrix/client/v3/register", body)
        if not step("register", status == 200, f"{status} {data.get('user_id', data)}"):
            return 1
        token = data["access_token"]

        status, data = await call("POST", "/_matrix/client/v3/createRoom",
                                  {"is_direct": True, "invite": [args.bot], "preset": "trusted_private_chat"})
        if not step("admin room", status == 200, f"{status} {data}"):
            return 1
        room_id = data["room_id"]

        deadline = time.monotonic() + TIMEOUT
        membership = None
        while time.monotonic() < deadline:
            status, data = await call("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(args.bot)}")
            membership = data.get("membership") if status == 200 else None
            if membership == "join":
                break
            await asyncio.sleep(0.5)
        if not step("bot joins", membership == "join", f"{args.bot} is {membership!r} in {room_id}"):
            return 1

        status, data = await call("GET", "/_matrix/client/v3/sync", params={"timeout": "0"})
        since = data.get("next_batch")
        status, data = await call("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/c{secrets.token_hex(4)}",
                                  {"msgtype": "m.text", "body": args.command})
        if not step("command sent", status == 200, f"{args.command!r}: {status} {data}"):
            return 1

        deadline = time.monotonic() + TIMEOUT
        answer = None
        while time.monotonic() < deadline and answer is None:
            status, data = await call("GET", "/_matrix/client/v3/sync", params={"timeout": "5000", "since": since})
            if status != 200:
                await asyncio.sleep(0.5)
                continue
            since = data.get("next_batch", since)
            room = data.get("rooms", {}).get("join", {}).get(room_id, {})
            for event in room.get("timeline", {}).get("events", []):
                if event.get("sender") == args.bot and event.get("type") == "m.room.message":
                    text = event.get("content", {}).get("body", "")
                    if args.expect in text:
                        answer = text
        first = (answer or "").strip().splitlines()[:3]
        if not step("bot answers", answer is not None,
                    f"{args.bot} answered {args.command!r} with {len(answer or '')} characters: {' / '.join(first)}"
                    if answer else f"no answer containing {args.expect!r} from {args.bot} in {TIMEOUT:.0f} s"):
            return 1
        print("5 passed, 0 failed", flush=True)
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--homeserver", required=True)
    parser.add_argument("--bot", required=True)
    parser.add_argument("--command", default="help")
    parser.add_argument("--expect", required=True, help="text the answer must contain")
    sys.exit(asyncio.run(main(parser.parse_args())))
