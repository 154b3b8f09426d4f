"""The provisioning flow of an organisation's provisioning service, in plain HTTP (aiohttp),
against Synapse's admin API and the client-server API. Every answer is asserted.

Usage: python provision.py URL SERVER_NAME SHARED_SECRET STATE_FILE EMPLOYEE_LOCALPART

1. The bot: its access token is read from STATE_FILE and checked with /whoami; without a
   usable one the bot registers with the shared secret (HMAC-SHA1 over a nonce, as
   register_new_matrix_user does), or logs in when it exists already. The token is written
   back to STATE_FILE, so a re-run (even after the server restarts) reuses it.
2. The bot's rate limit is removed (override_ratelimit 0/0).
3. A Space, a public room and an admin room (the bot at 200, so it can demote a user at 100),
   found by their aliases or created (a re-run finds them).
4. A new user (PUT /v2/users), force-joined (/v1/join) to the Space and the public room;
   promoted to 100 in the admin room and force-joined there; demoted to 0 and kicked;
   deactivated with erase.

Prints a JSON report; exits non-zero (with the failed assertion) on any unexpected answer.
"""
import asyncio
import hashlib
import hmac
import json
import os
import sys
from urllib.parse import quote

import aiohttp

BOT = "provisioner"
BOT_PASSWORD = "provisioner-password-1A!"


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str):
        self.session = session
        self.base = base.rstrip("/")
        self.token = None

    async def call(self, method: str, path: str, body=None, expect=200, token=True):
        headers = {}
        if token and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with self.session.request(method, self.base + path, json=body, headers=headers) as response:
            text = await response.text()
            data = json.loads(text) if text else {}
            statuses = expect if isinstance(expect, tuple) else (expect,)
            assert response.status in statuses, f"{method} {path}: {response.status} {text}"
            return response.status, data


def enc(value: str) -> str:
    return quote(value, safe="")


async def bot_token(api: Api, secret: str, state_file: str, server_name: str) -> str:
    """The bot's token: cached, else registered with the shared secret, else a login."""
    if os.path.exists(state_file):
        with open(state_file) as f:
            api.token = json.load(f)["access_token"]
        status, whoami = await api.call("GET", "/_matrix/client/v3/account/whoami", expect=(200, 401))
        if status == 200:
            assert whoami["user_id"] == f"@{BOT}:{server_name}", whoami
            return "cache"
        api.token = None
    _, nonce = await api.call("GET", "/_synapse/admin/v1/register", token=False)
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce["nonce"].encode(), BOT.encode(), BOT_PASSWORD.encode(), b"admin"]))
    body = {"nonce": nonce["nonce"], "username": BOT, "password": BOT_PASSWORD, "admin": True,
            "mac": mac.hexdigest()}
    status, registered = await api.call("POST", "/_synapse/admin/v1/register", body, expect=(200, 400),
                                        token=False)
    if status == 200:
        assert registered["user_id"] == f"@{BOT}:{server_name}", registered
        source = "register"
        token = registered["access_token"]
    else:
        assert registered["errcode"] == "M_USER_IN_USE", registered
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": BOT},
                 "password": BOT_PASSWORD}
        _, logged_in = await api.call("POST", "/_matrix/client/v3/login", login, token=False)
        source = "login"
        token = logged_in["access_token"]
    api.token = token
    with open(state_file, "w") as f:
        json.dump({"access_token": token}, f)
    return source


async def room_by_alias(api: Api, alias: str, create_body: dict) -> tuple[str, bool]:
    """The room an alias names, created with `create_body` when the alias is unknown."""
    status, found = await api.call("GET", f"/_matrix/client/v3/directory/room/{enc(alias)}", expect=(200, 404))
    if status == 200:
        return found["room_id"], False
    assert found["errcode"] == "M_NOT_FOUND", found
    _, created = await api.call("POST", "/_matrix/client/v3/createRoom", create_body)
    return created["room_id"], True


async def power_levels(api: Api, room: str) -> dict:
    _, levels = await api.call("GET", f"/_matrix/client/v3/rooms/{enc(room)}/state/m.room.power_levels/")
    return levels


async def set_level(api: Api, room: str, user: str, level: int) -> None:
    levels = await power_levels(api, room)
    levels.setdefault("users", {})[user] = level
    _, sent = await api.call("PUT", f"/_matrix/client/v3/rooms/{enc(room)}/state/m.room.power_levels/", levels)
    assert sent["event_id"].startswith("$"), sent
    assert (await power_levels(api, room))["users"][user] == level


async def membership(api: Api, room: str, user: str):
    status, member = await api.call(
        "GET", f"/_matrix/client/v3/rooms/{enc(room)}/state/m.room.member/{enc(user)}", expect=(200, 404))
    return member.get("membership") if status == 200 else None


async def main(url: str, server_name: str, secret: str, state_file: str, employee: str) -> None:
    async with aiohttp.ClientSession() as session:
        api = Api(session, url)
        _, versions = await api.call("GET", "/_matrix/client/versions", token=False)
        assert versions["versions"], versions
        _, server_version = await api.call("GET", "/_synapse/admin/v1/server_version", token=False)
        assert "server_version" in server_version, server_version
        source = await bot_token(api, secret, state_file, server_name)
        _, whoami = await api.call("GET", "/_matrix/client/v3/account/whoami")
        bot = whoami["user_id"]
        assert bot == f"@{BOT}:{server_name}", whoami

        # 2. No rate limit for the bot.
        limit = f"/_synapse/admin/v1/users/{enc(bot)}/override_ratelimit"
        _, set_limit = await api.call("POST", limit, {"messages_per_second": 0, "burst_count": 0})
        assert set_limit == {"messages_per_second": 0, "burst_count": 0}, set_limit
        _, read_limit = await api.call("GET", limit)
        assert read_limit == {"messages_per_second": 0, "burst_count": 0}, read_limit

        # 3. The Space and its rooms, by alias.
        space, space_new = await room_by_alias(api, f"#acme:{server_name}", {
            "name": "Acme", "preset": "private_chat", "room_alias_name": "acme",
            "creation_content": {"type": "m.space"},
            "power_level_content_override": {"users": {bot: 200}},
        })
        rooms = {}
        created = []
        if space_new:
            created.append("acme")
        for name, preset in [("lobby", "public_chat"), ("admins", "private_chat")]:
            room, new = await room_by_alias(api, f"#{name}:{server_name}", {
                "name": name, "preset": preset, "room_alias_name": name,
                "power_level_content_override": {"users": {bot: 200}},
            })
            rooms[name] = room
            if new:
                created.append(name)
            _, child = await api.call(
                "PUT", f"/_matrix/client/v3/rooms/{enc(space)}/state/m.space.child/{enc(room)}",
                {"via": [server_name], "suggested": True})
            assert child["event_id"].startswith("$"), child
        _, create = await api.call("GET", f"/_matrix/client/v3/rooms/{enc(space)}/state/m.room.create/")
        assert create["type"] == "m.space", create

        # 4. A new user, joined to the Space and the public room.
        user = f"@{employee}:{server_name}"
        status, made = await api.call("PUT", f"/_synapse/admin/v2/users/{enc(user)}",
                                      {"password": f"{employee}-password-1A!", "displayname": employee},
                                      expect=201)
        assert made["name"] == user and made["admin"] is False and made["deactivated"] is False, made
        for room in (space, rooms["lobby"]):
            _, joined = await api.call("POST", f"/_synapse/admin/v1/join/{enc(room)}", {"user_id": user})
            assert joined == {"room_id": room}, joined
            assert await membership(api, room, user) == "join"
        _, joined_rooms = await api.call("GET", f"/_synapse/admin/v1/users/{enc(user)}/joined_rooms")
        assert sorted(joined_rooms["joined_rooms"]) == sorted([space, rooms["lobby"]]), joined_rooms

        # Promoted to 100 in the admin room, then force-joined there (the bot invites).
        admins = rooms["admins"]
        await set_level(api, admins, user, 100)
        _, joined = await api.call("POST", f"/_synapse/admin/v1/join/{enc(admins)}", {"user_id": user})
        assert joined == {"room_id": admins}, joined
        assert await membership(api, admins, user) == "join"

        # Demoted and kicked.
        await set_level(api, admins, user, 0)
        _, kicked = await api.call("POST", f"/_matrix/client/v3/rooms/{enc(admins)}/kick",
                                   {"user_id": user, "reason": "left the admin team"})
        assert kicked == {}, kicked
        assert await membership(api, admins, user) == "leave"

        # Deactivated with erase: out of every room, unable to log in.
        _, deactivated = await api.call("POST", f"/_synapse/admin/v1/deactivate/{enc(user)}", {"erase": True})
        assert deactivated == {"id_server_unbind_result": "success"}, deactivated
        _, details = await api.call("GET", f"/_synapse/admin/v2/users/{enc(user)}")
        assert details["deactivated"] is True and details["erased"] is True, details
        for room in (space, rooms["lobby"]):
            assert await membership(api, room, user) == "leave"
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": employee},
                 "password": f"{employee}-password-1A!"}
        _, refused = await api.call("POST", "/_matrix/client/v3/login", login, expect=403, token=False)
        # Deactivation removed the password (as Synapse does), so the login is simply refused.
        assert refused["errcode"] == "M_FORBIDDEN", refused

        print(json.dumps({"token_source": source, "bot": bot, "space": space, "rooms": rooms,
                          "created": created}))


asyncio.run(main(*sys.argv[1:6]))
