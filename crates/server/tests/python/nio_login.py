"""Logs in and out with matrix-nio (a real client library) and reports what it saw.

Usage: python nio_login.py URL USER PASSWORD
Prints a JSON object; exits non-zero on any unexpected response.
"""
import asyncio
import json
import sys

from nio import AsyncClient, LoginResponse, LogoutResponse, WhoamiResponse


async def main(url: str, user: str, password: str) -> None:
    client = AsyncClient(url, user)
    login = await client.login(password, device_name="matrix-nio test")
    if not isinstance(login, LoginResponse):
        raise SystemExit(f"login failed: {login}")
    whoami = await client.whoami()
    if not isinstance(whoami, WhoamiResponse):
        raise SystemExit(f"whoami failed: {whoami}")
    token = client.access_token
    logout = await client.logout()
    if not isinstance(logout, LogoutResponse):
        raise SystemExit(f"logout failed: {logout}")
    await client.close()
    print(json.dumps({
        "user_id": login.user_id,
        "device_id": login.device_id,
        "whoami": whoami.user_id,
        "access_token": token,
    }))


asyncio.run(main(*sys.argv[1:4]))
