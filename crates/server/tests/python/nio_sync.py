"""Syncs with matrix-nio and reports the messages, typing and receipts it saw in real time.

Usage: python nio_sync.py URL USER PASSWORD ROOM_ID
Prints "READY" once the initial sync is done, then a JSON report when it has seen a message,
a typing notification and a read receipt from someone else (or after 30 seconds).
"""
import asyncio
import json
import sys
import time

from nio import (AsyncClient, LoginResponse, ReceiptEvent, RoomMessageText, SyncResponse,
                 TypingNoticeEvent)


async def main(url: str, user: str, password: str, room_id: str) -> None:
    client = AsyncClient(url, user)
    login = await client.login(password, device_name="matrix-nio sync test")
    if not isinstance(login, LoginResponse):
        raise SystemExit(f"login failed: {login}")
    first = await client.sync(timeout=0, full_state=True)
    if not isinstance(first, SyncResponse):
        raise SystemExit(f"initial sync failed: {first}")
    print("READY", flush=True)
    seen = {"messages": [], "typing": [], "receipts": []}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = await client.sync(timeout=10000, since=client.next_batch)
        if not isinstance(response, SyncResponse):
            raise SystemExit(f"sync failed: {response}")
        room = response.rooms.join.get(room_id)
        if room is None:
            continue
        for event in room.timeline.events:
            if isinstance(event, RoomMessageText) and event.sender != user:
                seen["messages"].append({"sender": event.sender, "body": event.body, "event_id": event.event_id})
        for event in room.ephemeral:
            if isinstance(event, TypingNoticeEvent) and event.users:
                seen["typing"].append(event.users)
            if isinstance(event, ReceiptEvent):
                for receipt in event.receipts:
                    if receipt.user_id != user:
                        seen["receipts"].append({"user_id": receipt.user_id, "event_id": receipt.event_id,
                                                 "type": receipt.receipt_type})
        if all(seen.values()):
            break
    await client.close()
    print(json.dumps(seen), flush=True)


asyncio.run(main(*sys.argv[1:5]))
