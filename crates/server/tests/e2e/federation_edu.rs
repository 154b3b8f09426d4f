//! EDUs between two real Myelins (A hosts a room, B's user joined it through A): typing,
//! receipts, presence, to-device messages and device lists both ways with what clients see;
//! EDUs forged for another server's users or for rooms the user is not in are dropped.

use myelin_test_support::federation::{federating_server, federation_request, write_certificates};
use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::federation_resident::enc;

/// How many long-polls a wait may take before the test fails.
const POLLS: usize = 20;
/// Polls of what a server applies in the background, `SETTLE_INTERVAL` apart (20 s in all).
const SETTLE_POLLS: usize = 200;
const SETTLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

struct Pair {
    _certs: tempfile::TempDir,
    a: TestServer,
    b: TestServer,
    alice: TestUser,
    bob: TestUser,
    room_id: String,
}

/// A with alice, B with bob, and a public room of alice's that bob joined through A.
async fn joined_pair(config: Value) -> Pair {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), config.clone()).await;
    let b = federating_server("b.test", certs.path(), config).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let created = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    bob.client
        .post(&format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(&a.server_name)), &json!({}))
        .await
        .expect(200);
    Pair { _certs: certs, a, b, alice, bob, room_id }
}

/// Long-polls `user`'s sync from `since` (none: an initial sync) until `done` holds for a
/// response; returns that response. Fails the test after [`POLLS`] polls.
async fn sync_until(user: &TestUser, since: Option<&str>, done: impl Fn(&Value) -> bool) -> Value {
    let mut since = since.map(str::to_owned);
    for _ in 0..POLLS {
        let path = match &since {
            Some(since) => format!("/_matrix/client/v3/sync?timeout=3000&since={since}"),
            None => "/_matrix/client/v3/sync".to_owned(),
        };
        let body = user.client.get(&path).await.expect(200).clone();
        if done(&body) {
            return body;
        }
        since = Some(body["next_batch"].as_str().unwrap().to_owned());
    }
    panic!("{}'s sync never showed what was awaited", user.user_id);
}

async fn next_batch(user: &TestUser) -> String {
    user.client.get("/_matrix/client/v3/sync").await.expect(200)["next_batch"].as_str().unwrap().to_owned()
}

/// The users typing in a room in a sync response, if it carried `m.typing`.
fn typing_in(body: &Value, room_id: &str) -> Option<Vec<String>> {
    let ephemeral = body["rooms"]["join"][room_id]["ephemeral"]["events"].as_array()?;
    let typing = ephemeral.iter().find(|e| e["type"] == "m.typing")?;
    Some(typing["content"]["user_ids"].as_array()?.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
}

/// Sends a transaction of EDUs to `to`, signed as `from`; asserts it was taken.
async fn send_edus(from: &TestServer, to: &TestServer, txn_id: &str, edus: Value) {
    let body = json!({
        "origin": from.server_name,
        "origin_server_ts": 0,
        "pdus": [],
        "edus": edus,
    });
    let (status, answer) =
        federation_request(from, to, "PUT", &format!("/_matrix/federation/v1/send/{txn_id}"), Some(&body))
            .await;
    assert_eq!(status, 200, "{answer}");
}

async fn send_message(user: &TestUser, room_id: &str, txn: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room_id));
    let sent = user.client.put(&path, &json!({"msgtype": "m.text", "body": txn})).await;
    sent.expect(200)["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn typing_crosses_both_ways_and_forged_typing_is_dropped() {
    let Pair { a, b, alice, bob, room_id, .. } = joined_pair(json!({})).await;

    // alice types on A: bob sees it on B.
    let since = next_batch(&bob).await;
    let path =
        |user: &TestUser| format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room_id), enc(&user.user_id));
    alice.client.put(&path(&alice), &json!({"typing": true, "timeout": 30000})).await.expect(200);
    sync_until(&bob, Some(&since), |body| {
        typing_in(body, &room_id).is_some_and(|users| users == [alice.user_id.clone()])
    })
    .await;
    alice.client.put(&path(&alice), &json!({"typing": false})).await.expect(200);

    // bob types on B: alice sees it on A; then he stops, and she sees that too.
    let since = next_batch(&alice).await;
    bob.client.put(&path(&bob), &json!({"typing": true, "timeout": 30000})).await.expect(200);
    let body = sync_until(&alice, Some(&since), |body| {
        typing_in(body, &room_id).is_some_and(|users| users.contains(&bob.user_id))
    })
    .await;
    let since = body["next_batch"].as_str().unwrap().to_owned();
    bob.client.put(&path(&bob), &json!({"typing": false})).await.expect(200);
    sync_until(&alice, Some(&since), |body| {
        typing_in(body, &room_id).is_some_and(|users| !users.contains(&bob.user_id))
    })
    .await;

    // B speaking for A's user, or for a user of B who is not in the room: dropped. A room
    // nobody of B is in: dropped too. Only the last, genuine EDU shows.
    let carol = b.register("carol").await;
    let other_room = alice.client.post("/_matrix/client/v3/createRoom", &json!({})).await;
    let other_room = other_room.expect(200)["room_id"].as_str().unwrap().to_owned();
    let since = next_batch(&alice).await;
    send_edus(
        &b,
        &a,
        "forged-typing",
        json!([
            {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": alice.user_id, "typing": true}},
            {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": carol.user_id, "typing": true}},
            {"edu_type": "m.typing", "content": {"room_id": other_room, "user_id": bob.user_id, "typing": true}},
            {"edu_type": "m.typing", "content": {"room_id": "not a room", "user_id": 3}},
            {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob.user_id, "typing": true}},
        ]),
    )
    .await;
    let body = sync_until(&alice, Some(&since), |body| typing_in(body, &room_id).is_some()).await;
    assert_eq!(typing_in(&body, &room_id).unwrap(), vec![bob.user_id.clone()]);
    assert!(typing_in(&body, &other_room).is_none(), "{body}");
}

/// The `m.read` receipts of a room in a sync response: user to event ID (and thread).
fn receipts_in(body: &Value, room_id: &str) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    let Some(ephemeral) = body["rooms"]["join"][room_id]["ephemeral"]["events"].as_array() else {
        return out;
    };
    for event in ephemeral.iter().filter(|e| e["type"] == "m.receipt") {
        for (event_id, by_type) in event["content"].as_object().unwrap() {
            let Some(users) = by_type["m.read"].as_object() else { continue };
            for (user_id, data) in users {
                out.push((user_id.clone(), event_id.clone(), data["thread_id"].as_str().map(str::to_owned)));
            }
        }
    }
    out
}

#[tokio::test]
async fn receipts_cross_both_ways_with_threads_and_forged_receipts_are_dropped() {
    let Pair { a, b, alice, bob, room_id, .. } = joined_pair(json!({})).await;
    let first = send_message(&alice, &room_id, "first").await;
    // bob waits for the message, then reads it on B: alice sees his receipt on A.
    sync_until(&bob, None, |body| {
        body["rooms"]["join"][&room_id]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["event_id"] == first.as_str()))
    })
    .await;
    let since = next_batch(&alice).await;
    let receipt = |event_id: &str| {
        format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(event_id))
    };
    bob.client.post(&receipt(&first), &json!({})).await.expect(200);
    sync_until(&alice, Some(&since), |body| {
        receipts_in(body, &room_id).contains(&(bob.user_id.clone(), first.clone(), None))
    })
    .await;

    // A threaded receipt of alice's reaches B with its thread.
    let since = next_batch(&bob).await;
    alice.client.post(&receipt(&first), &json!({"thread_id": "main"})).await.expect(200);
    sync_until(&bob, Some(&since), |body| {
        receipts_in(body, &room_id).contains(&(alice.user_id.clone(), first.clone(), Some("main".to_owned())))
    })
    .await;

    // Forged: B speaking for alice, for a user of B not in the room; then a genuine one.
    let second = send_message(&alice, &room_id, "second").await;
    let carol = b.register("carol").await;
    let since = next_batch(&alice).await;
    let read = |user: &str, event_id: &str| json!({"edu_type": "m.receipt", "content": {room_id.as_str(): {"m.read": {user: {"event_ids": [event_id], "data": {"ts": 1}}}}}});
    send_edus(
        &b,
        &a,
        "forged-receipts",
        json!([read(&alice.user_id, &second), read(&carol.user_id, &second), read(&bob.user_id, &second)]),
    )
    .await;
    let body = sync_until(&alice, Some(&since), |body| !receipts_in(body, &room_id).is_empty()).await;
    assert_eq!(receipts_in(&body, &room_id), vec![(bob.user_id.clone(), second.clone(), None)]);
}

/// A user's presence in a sync response, if it carried it.
fn presence_of(body: &Value, user_id: &str) -> Option<Value> {
    let events = body["presence"]["events"].as_array()?;
    events.iter().find(|e| e["sender"] == user_id).map(|e| e["content"].clone())
}

#[tokio::test]
async fn presence_crosses_both_ways_and_forged_presence_is_dropped() {
    let Pair { a, b, alice, bob, .. } = joined_pair(json!({})).await;
    let status = |user: &TestUser| format!("/_matrix/client/v3/presence/{}/status", enc(&user.user_id));

    // alice goes to lunch on A: bob sees it on B, in /sync and by asking.
    let since = next_batch(&bob).await;
    alice
        .client
        .put(&status(&alice), &json!({"presence": "unavailable", "status_msg": "lunch"}))
        .await
        .expect(200);
    let mut since_token = since.clone();
    let mut seen = false;
    for _ in 0..POLLS {
        let path = format!("/_matrix/client/v3/sync?timeout=3000&set_presence=offline&since={since_token}");
        let body = bob.client.get(&path).await.expect(200).clone();
        if presence_of(&body, &alice.user_id).is_some_and(|p| p["status_msg"] == "lunch") {
            seen = true;
            break;
        }
        since_token = body["next_batch"].as_str().unwrap().to_owned();
    }
    assert!(seen, "bob never saw alice's presence");
    let asked = bob.client.get(&status(&alice)).await;
    assert_eq!(asked.expect(200)["presence"], "unavailable");
    assert_eq!(asked.expect(200)["status_msg"], "lunch");

    // bob on B: alice sees him.
    bob.client.put(&status(&bob), &json!({"presence": "online", "status_msg": "here"})).await.expect(200);
    let mut since_token = next_batch(&alice).await;
    let mut seen = false;
    for _ in 0..POLLS {
        let asked = alice.client.get(&status(&bob)).await;
        if asked.expect(200)["status_msg"] == "here" {
            seen = true;
            break;
        }
        let path = format!("/_matrix/client/v3/sync?timeout=3000&set_presence=offline&since={since_token}");
        let body = alice.client.get(&path).await.expect(200).clone();
        since_token = body["next_batch"].as_str().unwrap().to_owned();
    }
    assert!(seen, "alice never saw bob's presence");
    assert_eq!(alice.client.get(&status(&bob)).await.expect(200)["presence"], "online");

    // B speaking for alice: dropped; her presence on A stays hers.
    send_edus(
        &b,
        &a,
        "forged-presence",
        json!([{"edu_type": "m.presence", "content": {"push": [
            {"user_id": alice.user_id, "presence": "online", "status_msg": "forged", "last_active_ago": 0},
        ]}}]),
    )
    .await;
    let own = alice.client.get(&status(&alice)).await;
    assert_eq!(own.expect(200)["status_msg"], "lunch");
}

/// The to-device events in a sync response.
fn to_device_events(body: &Value) -> Vec<Value> {
    body["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn to_device_messages_cross_both_ways_exactly_once() {
    let Pair { a, b, alice, bob, .. } = joined_pair(json!({})).await;
    let alice_since = next_batch(&alice).await;
    let bob_since = next_batch(&bob).await;

    // alice → bob's device on B.
    let body = json!({"messages": {bob.user_id.as_str(): {bob.device_id.as_str(): {"hello": "bob"}}}});
    alice.client.put("/_matrix/client/v3/sendToDevice/m.test/t1", &body).await.expect(200);
    // Sent again with the same transaction ID: nothing new goes out.
    alice.client.put("/_matrix/client/v3/sendToDevice/m.test/t1", &body).await.expect(200);
    let got = sync_until(&bob, Some(&bob_since), |body| !to_device_events(body).is_empty()).await;
    let events = to_device_events(&got);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["sender"], alice.user_id.as_str());
    assert_eq!(events[0]["type"], "m.test");
    assert_eq!(events[0]["content"], json!({"hello": "bob"}));

    // bob → all of alice's devices on A.
    let body = json!({"messages": {alice.user_id.as_str(): {"*": {"hello": "alice"}}}});
    bob.client.put("/_matrix/client/v3/sendToDevice/m.test/t1", &body).await.expect(200);
    let got = sync_until(&alice, Some(&alice_since), |body| !to_device_events(body).is_empty()).await;
    let events = to_device_events(&got);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["sender"], bob.user_id.as_str());
    assert_eq!(events[0]["content"], json!({"hello": "alice"}));
    let alice_since = got["next_batch"].as_str().unwrap().to_owned();

    // B's message retried in another transaction (same message_id), and the same transaction
    // sent twice: alice's device gets it once. A message in another server's name, or for a
    // user not on A, is dropped.
    let message = |sender: &str, message_id: &str, to: &str| {
        json!({"edu_type": "m.direct_to_device", "content": {
            "sender": sender, "type": "m.test", "message_id": message_id,
            "messages": {to: {alice.device_id.as_str(): {"n": message_id}}},
        }})
    };
    let once = json!([message(&bob.user_id, "m1", &alice.user_id)]);
    send_edus(&b, &a, "retry-1", once.clone()).await;
    send_edus(&b, &a, "retry-2", once.clone()).await;
    send_edus(&b, &a, "retry-2", once).await;
    send_edus(
        &b,
        &a,
        "forged-to-device",
        json!([
            message(&alice.user_id, "m2", &alice.user_id),
            message(&bob.user_id, "m3", &bob.user_id),
            message(&bob.user_id, "m4", &alice.user_id),
        ]),
    )
    .await;
    let got = sync_until(&alice, Some(&alice_since), |body| !to_device_events(body).is_empty()).await;
    let numbers: Vec<Value> = to_device_events(&got).iter().map(|e| e["content"]["n"].clone()).collect();
    assert_eq!(numbers, vec![json!("m1"), json!("m4")]);
}

/// The devices `user` sees of `target` through `/keys/query`, and its `failures`.
async fn queried_devices(user: &TestUser, target: &str) -> (Vec<String>, Value) {
    let body = json!({"device_keys": {target: []}, "timeout": 5000});
    let answer = user.client.post("/_matrix/client/v3/keys/query", &body).await.expect(200).clone();
    let devices =
        answer["device_keys"][target].as_object().map(|d| d.keys().cloned().collect()).unwrap_or_default();
    (devices, answer["failures"].clone())
}

fn changed_in(body: &Value) -> Vec<String> {
    body["device_lists"]["changed"]
        .as_array()
        .map(|users| users.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn device_list_updates_reach_the_other_server_and_gaps_resync() {
    let Pair { a, b, alice, bob, .. } = joined_pair(json!({})).await;

    // bob logs in on a phone and uploads its keys: alice's sync on A says bob's devices
    // changed, and A tracks bob's list (from the updates, not by asking B each time).
    let since = next_batch(&alice).await;
    let (phone, phone_id) = crate::device_lists::login(&b, &bob).await;
    let keys = json!({"device_keys": crate::device_lists::device_keys(&bob.user_id, &phone_id)});
    phone.post("/_matrix/client/v3/keys/upload", &keys).await.expect(200);
    sync_until(&alice, Some(&since), |body| changed_in(body).contains(&bob.user_id)).await;
    let mut tracked = None;
    for _ in 0..SETTLE_POLLS {
        let list = a.services().store().remote_device_list(&bob.user_id).await.unwrap();
        if list.as_ref().is_some_and(|l| l.devices.iter().any(|(id, keys)| id == &phone_id && keys.is_some()))
        {
            tracked = list;
            break;
        }
        // Applied in the background, maybe after the sync that told of it: poll.
        tokio::time::sleep(SETTLE_INTERVAL).await;
    }
    let tracked = tracked.expect("A tracks bob's phone with its keys");
    let (devices, failures) = queried_devices(&alice, &bob.user_id).await;
    assert!(devices.contains(&phone_id), "{devices:?}");
    assert_eq!(failures, json!({}));

    // An update that follows the tracked one is applied as it is.
    let ghost_keys = |device_id: &str| json!({"user_id": bob.user_id, "device_id": device_id, "algorithms": [], "keys": {}});
    let update = |device_id: &str, stream_id: i64, prev_id: i64| {
        json!({"edu_type": "m.device_list_update", "content": {
            "user_id": bob.user_id, "device_id": device_id, "stream_id": stream_id,
            "prev_id": [prev_id], "deleted": false, "keys": ghost_keys(device_id),
        }})
    };
    let since = next_batch(&alice).await;
    send_edus(&b, &a, "in-order", json!([update("INORDER", tracked.stream_id + 1, tracked.stream_id)])).await;
    let (devices, _) = queried_devices(&alice, &bob.user_id).await;
    assert!(devices.contains(&"INORDER".to_owned()), "{devices:?}");
    sync_until(&alice, Some(&since), |body| changed_in(body).contains(&bob.user_id)).await;

    // A gap (an unknown prev_id): A fetches bob's whole list from B instead, which has no such
    // devices.
    send_edus(
        &b,
        &a,
        "gap",
        json!([update("GAP", tracked.stream_id + 1_000_000, tracked.stream_id + 999_999)]),
    )
    .await;
    let (devices, _) = queried_devices(&alice, &bob.user_id).await;
    assert!(!devices.contains(&"GAP".to_owned()) && !devices.contains(&"INORDER".to_owned()), "{devices:?}");
    // (Devices without keys are tracked but not listed by /keys/query.)
    assert_eq!(devices, vec![phone_id.clone()]);
    let resynced = a.services().store().remote_device_list(&bob.user_id).await.unwrap().unwrap();
    let mut tracked_ids: Vec<&str> = resynced.devices.iter().map(|(id, _)| id.as_str()).collect();
    tracked_ids.sort_unstable();
    let mut expected = vec![bob.device_id.as_str(), phone_id.as_str()];
    expected.sort_unstable();
    assert_eq!(tracked_ids, expected);

    // B speaking for alice: dropped, A tracks nothing of its own user.
    let forged = json!({"edu_type": "m.device_list_update", "content": {
        "user_id": alice.user_id, "device_id": "FORGED", "stream_id": 1, "prev_id": [], "deleted": false,
    }});
    send_edus(&b, &a, "forged-device", json!([forged])).await;
    assert!(a.services().store().remote_device_list(&alice.user_id).await.unwrap().is_none());
    let (devices, _) = queried_devices(&alice, &alice.user_id).await;
    assert!(!devices.contains(&"FORGED".to_owned()), "{devices:?}");

    // bob sets up cross-signing on B: an m.signing_key_update brings his master key to A's
    // tracked list, and alice's sync says his keys changed.
    let since = next_batch(&alice).await;
    let cross_signing = crate::cross_signing::CrossSigning::new(&bob.user_id);
    bob.client.post(crate::cross_signing::DEVICE_SIGNING, &cross_signing.upload_body()).await.expect(200);
    sync_until(&alice, Some(&since), |body| changed_in(body).contains(&bob.user_id)).await;
    let mut master = None;
    for _ in 0..SETTLE_POLLS {
        let list = a.services().store().remote_device_list(&bob.user_id).await.unwrap().unwrap();
        if list.master_key.is_some() {
            master = list.master_key;
            break;
        }
        // Applied in the background, maybe after the sync that told of it: poll.
        tokio::time::sleep(SETTLE_INTERVAL).await;
    }
    let master: Value = serde_json::from_str(&master.expect("A tracks bob's master key")).unwrap();
    let body = json!({"device_keys": {bob.user_id.as_str(): []}});
    let answer = alice.client.post("/_matrix/client/v3/keys/query", &body).await.expect(200).clone();
    assert_eq!(answer["master_keys"][&bob.user_id], master, "{answer}");
    assert_eq!(answer["master_keys"][&bob.user_id]["usage"], json!(["master"]), "{answer}");

    // The other way: alice's new device reaches bob's sync on B.
    let since = next_batch(&bob).await;
    let (alice_client, alice_phone) = crate::device_lists::login(&a, &alice).await;
    let keys = json!({"device_keys": crate::device_lists::device_keys(&alice.user_id, &alice_phone)});
    alice_client.post("/_matrix/client/v3/keys/upload", &keys).await.expect(200);
    sync_until(&bob, Some(&since), |body| changed_in(body).contains(&alice.user_id)).await;
    for _ in 0..SETTLE_POLLS {
        let (devices, _) = queried_devices(&bob, &alice.user_id).await;
        if devices.contains(&alice_phone) {
            return;
        }
        // Applied in the background, maybe after the sync that told of it: poll.
        tokio::time::sleep(SETTLE_INTERVAL).await;
    }
    panic!("bob never saw the keys of alice's phone");
}

/// Polls until server `a` tracks `target`'s device list with `device_id`'s keys in it (so that
/// `/keys/query` answers from what the other server sent, not by asking it).
async fn tracked_with_keys(a: &TestServer, target: &str, device_id: &str) {
    for _ in 0..SETTLE_POLLS {
        let list = a.services().store().remote_device_list(target).await.unwrap();
        if list.is_some_and(|list| list.devices.iter().any(|(id, keys)| id == device_id && keys.is_some())) {
            return;
        }
        tokio::time::sleep(SETTLE_INTERVAL).await;
    }
    panic!("{target}'s device list with {device_id} was never tracked");
}

#[tokio::test]
async fn a_device_list_change_reaches_other_servers_while_an_earlier_one_is_unfinished() {
    use crate::cross_signing::{CrossSigning, DEVICE_SIGNING, SIGNATURES, upload_device_keys};
    let Pair { a, b, alice, bob, .. } = joined_pair(json!({})).await;
    let (_, bob_device_keys) = upload_device_keys(&bob).await;
    tracked_with_keys(&a, &bob.user_id, &bob.device_id).await;

    // Another write on B's device-list stream, still in progress: the stream's published
    // position stays behind it while bob's changes are made after it. Each change still sends
    // its own updates (an update sent for the stream's position instead finds no change of
    // bob's there and sends nothing).
    let unfinished = b.services().streams.device_lists.allocate();
    let bob_keys = CrossSigning::new(&bob.user_id);
    bob.client.post(DEVICE_SIGNING, &bob_keys.upload_body()).await.expect(200);
    query_until(&alice, &bob.user_id, "bob's master key", |answer| {
        answer["master_keys"][&bob.user_id] == bob_keys.master_json()
    })
    .await;
    let signed_device = bob_keys.self_signing.sign(bob_device_keys);
    let body = json!({&bob.user_id: {&bob.device_id: signed_device}});
    assert_eq!(bob.client.post(SIGNATURES, &body).await.expect(200).clone(), json!({"failures": {}}));
    query_until(&alice, &bob.user_id, "bob's signed device", |answer| {
        answer["device_keys"][&bob.user_id][&bob.device_id]["signatures"] == signed_device["signatures"]
    })
    .await;
    drop(unfinished);
}

/// What `user` sees of `target`'s keys through `/keys/query`.
async fn queried_keys(user: &TestUser, target: &str) -> Value {
    let body = json!({"device_keys": {target: []}, "timeout": 5000});
    user.client.post("/_matrix/client/v3/keys/query", &body).await.expect(200).clone()
}

/// Polls `user`'s `/keys/query` of `target` until `done` holds of the answer (what another
/// server sends is applied in the background); returns it. Fails the test after 20 s.
async fn query_until(user: &TestUser, target: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut answer = Value::Null;
    for _ in 0..SETTLE_POLLS {
        answer = queried_keys(user, target).await;
        if done(&answer) {
            return answer;
        }
        tokio::time::sleep(SETTLE_INTERVAL).await;
    }
    panic!("{} never saw {what}: {answer}", user.user_id);
}

#[tokio::test]
async fn cross_signing_signatures_cross_servers_as_synapse_sends_them() {
    use crate::cross_signing::{CrossSigning, DEVICE_SIGNING, SIGNATURES, upload_device_keys};
    // Five updates cross in a row: a send that times out on a loaded machine is retried within
    // the test's patience, not after Synapse's minutes of destination backoff.
    let retry = json!({"myelin_federation_retry": {"min_interval_ms": 200, "max_interval_ms": 500}});
    let Pair { a, b, alice, bob, .. } = joined_pair(retry).await;
    let carol = a.register("carol").await;
    let (_, _) = upload_device_keys(&alice).await;
    let (bob_device, bob_device_keys) = upload_device_keys(&bob).await;
    // One change at a time: A has bob's device keys before his cross-signing keys follow.
    query_until(&alice, &bob.user_id, "bob's device keys", |answer| {
        answer["device_keys"][&bob.user_id][&bob.device_id]["keys"] == bob_device_keys["keys"]
    })
    .await;
    let alice_keys = CrossSigning::new(&alice.user_id);
    alice.client.post(DEVICE_SIGNING, &alice_keys.upload_body()).await.expect(200);
    let bob_keys = CrossSigning::new(&bob.user_id);
    bob.client.post(DEVICE_SIGNING, &bob_keys.upload_body()).await.expect(200);
    let bob_master_id = bob_keys.master.public_key();
    query_until(&alice, &bob.user_id, "bob's master key", |answer| {
        answer["master_keys"][&bob.user_id] == bob_keys.master_json()
    })
    .await;

    // bob signs his device with his self-signing key and his master key with his device, on B:
    // A gets the signed device (an m.device_list_update with its keys) and the signed master
    // key (an m.signing_key_update), so alice sees both, and so does carol.
    let signed_device = bob_keys.self_signing.sign(bob_device_keys.clone());
    let signed_master = bob_device.sign(bob_keys.master_json());
    let body = json!({&bob.user_id: {&bob.device_id: signed_device, &bob_master_id: signed_master}});
    assert_eq!(bob.client.post(SIGNATURES, &body).await.expect(200).clone(), json!({"failures": {}}));
    for user in [&alice, &carol] {
        query_until(user, &bob.user_id, "bob's signatures of his own keys", |answer| {
            answer["device_keys"][&bob.user_id][&bob.device_id]["signatures"] == signed_device["signatures"]
                && answer["master_keys"][&bob.user_id] == signed_master
        })
        .await;
    }

    // alice, on A, signs bob's master key (a remote user's) with her user-signing key: A checks
    // it against bob's master key and keeps it; alice sees it beside bob's own signatures, as
    // her client needs in order to call bob verified. Neither carol nor bob sees it (Synapse
    // sends no other server a signature of another user's key).
    let alice_user_signing_id = format!("ed25519:{}", alice_keys.user_signing.public_key());
    let signed_bob = alice_keys.user_signing.sign(bob_keys.master_json());
    let signature = signed_bob["signatures"][&alice.user_id][&alice_user_signing_id].clone();
    assert!(signature.is_string(), "{signed_bob}");
    let body = json!({&bob.user_id: {&bob_master_id: signed_bob}});
    assert_eq!(alice.client.post(SIGNATURES, &body).await.expect(200).clone(), json!({"failures": {}}));
    let answer = queried_keys(&alice, &bob.user_id).await;
    let mut expected = signed_master.clone();
    expected["signatures"][&alice.user_id] = json!({&alice_user_signing_id: signature});
    assert_eq!(answer["master_keys"][&bob.user_id], expected, "{answer}");
    assert_eq!(answer["failures"], json!({}), "{answer}");
    assert_eq!(queried_keys(&carol, &bob.user_id).await["master_keys"][&bob.user_id], signed_master);
    assert_eq!(queried_keys(&bob, &bob.user_id).await["master_keys"][&bob.user_id], signed_master);

    // Refused: a signature of bob's self-signing key (only master keys of other users are
    // signed), one by another key than alice's user-signing key, and one of a user of B who
    // has no cross-signing keys.
    let dave = b.register("dave").await;
    let forger = CrossSigning::new(&alice.user_id);
    let mut forged = forger.user_signing.sign(bob_keys.master_json());
    let forged_signature =
        forged["signatures"][&alice.user_id][format!("ed25519:{}", forger.user_signing.public_key())].clone();
    forged["signatures"] = json!({&alice.user_id: {&alice_user_signing_id: forged_signature}});
    let bob_self_signing_id = bob_keys.self_signing.public_key();
    let body = json!({
        &bob.user_id: {
            &bob_master_id: forged,
            &bob_self_signing_id: alice_keys.user_signing.sign(bob_keys.master_json()),
        },
        &dave.user_id: {"DAVEKEY": alice_keys.user_signing.sign(json!({"user_id": dave.user_id}))},
    });
    let failures = alice.client.post(SIGNATURES, &body).await.expect(200)["failures"].clone();
    assert_eq!(failures[&bob.user_id][&bob_master_id]["errcode"], json!("M_INVALID_SIGNATURE"), "{failures}");
    assert_eq!(failures[&bob.user_id][&bob_self_signing_id]["errcode"], json!("M_NOT_FOUND"), "{failures}");
    assert_eq!(failures[&dave.user_id]["DAVEKEY"]["errcode"], json!("M_NOT_FOUND"), "{failures}");
    let answer = queried_keys(&alice, &bob.user_id).await;
    assert_eq!(answer["master_keys"][&bob.user_id], expected, "{answer}");
}

#[tokio::test]
async fn keys_of_remote_users_are_queried_and_claimed_from_their_server() {
    let Pair { alice, bob, .. } = joined_pair(json!({})).await;
    // bob's device has identity keys and a one-time key on B.
    let upload = json!({
        "device_keys": crate::device_lists::device_keys(&bob.user_id, &bob.device_id),
        "one_time_keys": {"curve25519:AAAAAQ": "one+time+key"},
    });
    bob.client.post("/_matrix/client/v3/keys/upload", &upload).await.expect(200);
    let down = format!("c.test:{}", myelin_test_support::federation::free_port());
    let stranger = format!("@nobody:{down}");

    let body = json!({"device_keys": {bob.user_id.as_str(): [], stranger.as_str(): []}, "timeout": 5000});
    let answer = alice.client.post("/_matrix/client/v3/keys/query", &body).await.expect(200).clone();
    let keys = &answer["device_keys"][&bob.user_id][&bob.device_id];
    assert_eq!(keys["user_id"], bob.user_id.as_str(), "{answer}");
    assert_eq!(keys["device_id"], bob.device_id.as_str(), "{answer}");
    assert!(keys["keys"][format!("ed25519:{}", bob.device_id)].is_string(), "{answer}");
    assert_eq!(answer["failures"][&down]["status"], 503, "{answer}");
    assert!(answer["failures"].get(&bob.user_id).is_none());

    let claim = json!({"one_time_keys": {
        bob.user_id.as_str(): {bob.device_id.as_str(): "curve25519"},
        stranger.as_str(): {"DEVICE": "curve25519"},
    }, "timeout": 5000});
    let answer = alice.client.post("/_matrix/client/v3/keys/claim", &claim).await.expect(200).clone();
    assert_eq!(
        answer["one_time_keys"][&bob.user_id][&bob.device_id],
        json!({"curve25519:AAAAAQ": "one+time+key"}),
        "{answer}"
    );
    assert_eq!(answer["failures"][&down]["status"], 503, "{answer}");
    // The key was handed out once: B has none left.
    let again = alice.client.post("/_matrix/client/v3/keys/claim", &claim).await.expect(200).clone();
    assert!(again["one_time_keys"].get(&bob.user_id).is_none(), "{again}");
}

#[tokio::test]
async fn remote_profiles_are_asked_of_their_server_and_remote_members_are_in_the_directory() {
    let Pair { a, b, alice, bob, .. } = joined_pair(json!({})).await;
    bob.client
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id)),
            &json!({"displayname": "Bobby Tables"}),
        )
        .await
        .expect(200);

    // alice on A asks for bob's profile: A asks B.
    let profile = alice.client.get(&format!("/_matrix/client/v3/profile/{}", enc(&bob.user_id))).await;
    assert_eq!(profile.expect(200)["displayname"], "Bobby Tables", "{}", profile.json);
    let name =
        alice.client.get(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id))).await;
    assert_eq!(name.expect(200), &json!({"displayname": "Bobby Tables"}));
    // No avatar: the field is not there.
    let avatar =
        alice.client.get(&format!("/_matrix/client/v3/profile/{}/avatar_url", enc(&bob.user_id))).await;
    avatar.expect_error(404, "M_NOT_FOUND");
    // A user B does not have: 404 as B answered; a server that is down: 502.
    let nobody = format!("@nobody:{}", b.server_name);
    alice
        .client
        .get(&format!("/_matrix/client/v3/profile/{}", enc(&nobody)))
        .await
        .expect_error(404, "M_NOT_FOUND");
    let down = format!("@nobody:c.test:{}", myelin_test_support::federation::free_port());
    alice
        .client
        .get(&format!("/_matrix/client/v3/profile/{}", enc(&down)))
        .await
        .expect_error(502, "M_UNKNOWN");

    // The federation endpoint itself, as B asks A.
    let path =
        format!("/_matrix/federation/v1/query/profile?user_id={}&field=displayname", enc(&alice.user_id));
    let (status, answer) = federation_request(&b, &a, "GET", &path, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["displayname"]);

    // bob (a remote member of alice's room) is found in A's user directory by alice, once B's
    // member event with his new name reached A.
    for _ in 0..SETTLE_POLLS {
        let found = alice
            .client
            .post("/_matrix/client/v3/user_directory/search", &json!({"search_term": "bobby"}))
            .await;
        let results = found.expect(200)["results"].as_array().unwrap().clone();
        if results.iter().any(|r| r["user_id"] == bob.user_id.as_str()) {
            return;
        }
        // Applied in the background, maybe after the sync that told of it: poll.
        tokio::time::sleep(SETTLE_INTERVAL).await;
    }
    panic!("bob never appeared in A's user directory");
}

#[tokio::test]
async fn a_server_with_presence_off_neither_sends_nor_takes_presence() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({"presence": {"enabled": false}})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let created = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    bob.client
        .post(&format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(&a.server_name)), &json!({}))
        .await
        .expect(200);
    let status = |user: &TestUser| format!("/_matrix/client/v3/presence/{}/status", enc(&user.user_id));

    // bob sets his presence on B (accepted, but B keeps and sends none); a message of his
    // sent after it reaches A, and A still knows no presence of his.
    bob.client.put(&status(&bob), &json!({"presence": "online", "status_msg": "here"})).await.expect(200);
    let message = send_message(&bob, &room_id, "after presence").await;
    sync_until(&alice, None, |body| {
        body["rooms"]["join"][&room_id]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["event_id"] == message.as_str()))
    })
    .await;
    let seen = alice.client.get(&status(&bob)).await;
    assert_eq!(seen.expect(200)["presence"], "offline", "{}", seen.json);

    // A sends alice's presence to B; B does not store it.
    send_edus(
        &a,
        &b,
        "presence-off",
        json!([{"edu_type": "m.presence", "content": {"push": [
            {"user_id": alice.user_id, "presence": "online", "status_msg": "hi", "last_active_ago": 0},
        ]}}]),
    )
    .await;
    let record = b.services().store().get_presence(&alice.user_id).await.unwrap();
    assert!(record.is_none(), "{record:?}");
}
