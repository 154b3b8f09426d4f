"""Two matrix-nio clients with end-to-end encryption (its e2e extra: vodozemac) exchange encrypted messages.

Usage: python nio_e2ee.py URL ALICE_ID ALICE_PASSWORD BOB_ID BOB_PASSWORD

Each logs in with its own crypto store and uploads its device and one-time keys. Alice creates an
encrypted room and invites bob, bob joins, then alice sends a message (nio queries bob's devices,
claims a one-time key, shares the Megolm session by an Olm-encrypted to-device message and
encrypts the event) and bob syncs until he has decrypted it; then the same from bob to alice.
Prints a JSON report: the room, and for each message the event id, the plaintext sent and the
plaintext the other client decrypted (null if it never could, within 30 seconds).
"""
import asyncio
import json
import sys
import tempfile
import time

from nio import (AsyncClient, AsyncClientConfig, JoinResponse, KeysClaimResponse,
                 KeysQueryResponse, KeysUploadResponse, LoginResponse, MegolmEvent,
                 RoomCreateResponse, RoomMessageText, RoomSendResponse, SyncResponse)

ENCRYPTION = {"type": "m.room.encryption", "state_key": "",
              "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


def expect(response, kind, what):
    if not isinstance(response, kind):
        raise SystemExit(f"{what} failed: {response}")
    return response


async def login(url, user_id, password, store):
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
    client = AsyncClient(url, user_id, store_path=store, config=config)
    expect(await client.login(password, device_name="matrix-nio e2ee test"), LoginResponse, f"{user_id} login")
    if not client.olm:
        raise SystemExit("nio has no Olm machine: is matrix-nio[e2e] installed?")
    await keys(client)
    return client


async def keys(client):
    """What nio's sync_forever does between syncs: upload, query and claim keys as needed."""
    if client.should_upload_keys:
        expect(await client.keys_upload(), KeysUploadResponse, "keys/upload")
    if client.should_query_keys:
        expect(await client.keys_query(), KeysQueryResponse, "keys/query")
    if client.should_claim_keys:
        expect(await client.keys_claim(client.get_users_for_key_claiming()), KeysClaimResponse, "keys/claim")


async def sync(client, timeout=0):
    response = expect(await client.sync(timeout=timeout, full_state=client.next_batch is None),
                      SyncResponse, "sync")
    await keys(client)
    return response


async def send(client, room_id, body):
    response = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                      ignore_unverified_devices=True)
    return expect(response, RoomSendResponse, "room_send").event_id


async def receive(client, room_id, event_id):
    """Syncs until the event arrives and decrypts; returns its plaintext (or None)."""
    pending = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = await sync(client, timeout=1000)
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if event.event_id != event_id:
                continue
            if isinstance(event, RoomMessageText):
                return {"sender": event.sender, "body": event.body, "decrypted": event.decrypted}
            if isinstance(event, MegolmEvent):
                pending = event
        if pending is not None:
            # The Megolm key may arrive in a later sync than the event it decrypts.
            try:
                event = client.decrypt_event(pending)
            except Exception:  # nio raises EncryptionError while the key is missing
                continue
            if isinstance(event, RoomMessageText):
                return {"sender": event.sender, "body": event.body, "decrypted": event.decrypted}
    return None


async def main(url, alice_id, alice_password, bob_id, bob_password):
    with tempfile.TemporaryDirectory() as alice_store, tempfile.TemporaryDirectory() as bob_store:
        alice = await login(url, alice_id, alice_password, alice_store)
        bob = await login(url, bob_id, bob_password, bob_store)
        await sync(alice)
        await sync(bob)
        created = expect(await alice.room_create(name="nio e2ee", invite=[bob_id], initial_state=[ENCRYPTION]),
                         RoomCreateResponse, "room_create")
        room_id = created.room_id
        await sync(bob)
        expect(await bob.join(room_id), JoinResponse, "join")
        await sync(bob)
        await sync(alice)
        if not alice.rooms[room_id].encrypted or not bob.rooms[room_id].encrypted:
            raise SystemExit("nio does not see the room as encrypted")

        report = {"room_id": room_id, "messages": []}
        for sender, receiver, body in ((alice, bob, "hello bob, from nio (encrypted)"),
                                       (bob, alice, "hello alice, from nio (encrypted)")):
            event_id = await send(sender, room_id, body)
            received = await receive(receiver, room_id, event_id)
            report["messages"].append({"sender": sender.user_id, "event_id": event_id, "sent": body,
                                       "received": received})
        await alice.close()
        await bob.close()
    print(json.dumps(report), flush=True)


asyncio.run(main(*sys.argv[1:6]))
