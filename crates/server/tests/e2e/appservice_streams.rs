//! Application services' ephemeral data read from the durable streams: receipts and presence
//! made while the appservice is down or while the homeserver restarts arrive exactly once;
//! MSC2409 to-device messages of its users' devices (left in their inboxes); MSC3202 device
//! lists of users sharing a room with its users.

use serde_json::{Value, json};

use crate::appservice::{Mode, Setup, TestAppservice, bridge, register_ghost, setup, wait_until};
use crate::rooms::{create_room, send_text, urlencode};

const ERIN: &str = "@slack_erin:test.local";

/// `(txn ID, body)` of each accepted transaction, each transaction ID once.
fn accepted(appservice: &TestAppservice) -> Vec<(String, Value)> {
    let mut seen = std::collections::HashSet::new();
    appservice
        .attempts()
        .into_iter()
        .filter(|(txn, _, ok)| *ok && seen.insert(txn.clone()))
        .map(|(txn, body, _)| (txn, body))
        .collect()
}

/// Every element of `key` across the accepted transactions.
fn delivered(appservice: &TestAppservice, key: &str) -> Vec<Value> {
    accepted(appservice)
        .iter()
        .flat_map(|(_, body)| body[key].as_array().cloned().unwrap_or_default())
        .collect()
}

/// A room of alice's that the ghost erin joined.
async fn room_with_erin(
    server: &myelin_test_support::TestServer,
    alice: &myelin_test_support::TestUser,
) -> String {
    let room = create_room(alice, json!({"invite": [ERIN]})).await;
    bridge(server)
        .post(&format!("/_matrix/client/v3/join/{room}?user_id={}", urlencode(ERIN)), &json!({}))
        .await
        .expect(200);
    room
}

#[tokio::test]
async fn appservice_receipts_and_presence_survive_failures_and_restarts_exactly_once() {
    let Setup { mut server, appservice, _dir } = setup(json!({}), "receive_ephemeral: true\n").await;
    let mut alice = server.register("alice").await;
    register_ghost(&server, "slack_erin").await;
    let room = room_with_erin(&server, &alice).await;
    let first = send_text(&alice, &room, "e1", "first").await;
    wait_until(20, "the first message", || {
        appservice.delivered_events().iter().any(|e| e["event_id"] == first.as_str())
    })
    .await;
    // Down: a transaction is stored and retried; receipts and presence made meanwhile wait in
    // their streams, not in memory.
    appservice.set_mode(Mode::Fail);
    let before = appservice.attempts().len();
    let second = send_text(&alice, &room, "e2", "second").await;
    wait_until(20, "a failed attempt", || appservice.attempts().len() > before).await;
    let receipt = |alice: &myelin_test_support::TestUser, event_id: &str| {
        let client = alice.client.clone();
        let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}");
        async move { client.post(&path, &json!({})).await.expect(200).clone() }
    };
    receipt(&alice, &second).await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", urlencode(&alice.user_id)),
            &json!({"presence": "unavailable", "status_msg": "down the pub"}),
        )
        .await
        .expect(200);
    // A private receipt of alice (not the appservice's user) is never handed over.
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{second}"), &json!({}))
        .await
        .expect(200);
    // The homeserver restarts before the appservice comes back.
    server.halt().await;
    appservice.set_mode(Mode::Ok);
    server.resume().await;
    alice.client = server.client().with_token(&alice.access_token);
    let receipts_of = |event_id: &str| -> Vec<Value> {
        delivered(&appservice, "ephemeral")
            .into_iter()
            .filter(|e| e["type"] == "m.receipt" && e["content"].get(event_id).is_some())
            .collect()
    };
    let away = || -> Vec<Value> {
        delivered(&appservice, "ephemeral")
            .into_iter()
            .filter(|e| e["type"] == "m.presence" && e["content"]["status_msg"] == "down the pub")
            .collect()
    };
    wait_until(40, "the receipt and presence after the restart", || {
        !receipts_of(&second).is_empty() && !away().is_empty()
    })
    .await;
    let receipt_event = &receipts_of(&second)[0];
    assert_eq!(receipt_event["room_id"], room.as_str());
    let read = &receipt_event["content"][&second];
    assert!(read["m.read"][&alice.user_id]["ts"].is_u64(), "{receipt_event}");
    assert!(read.get("m.read.private").is_none(), "no private receipt of another user: {receipt_event}");
    let presence = &away()[0];
    assert_eq!(presence["sender"], alice.user_id.as_str());
    assert_eq!(presence["content"]["presence"], "unavailable");
    assert!(presence["content"]["last_active_ago"].is_u64(), "{presence}");
    assert!(presence.get("room_id").is_none());
    // Later transactions do not carry them again.
    let third = send_text(&alice, &room, "e3", "third").await;
    receipt(&alice, &third).await;
    wait_until(20, "the third receipt", || !receipts_of(&third).is_empty()).await;
    assert_eq!(receipts_of(&second).len(), 1, "the receipt arrived exactly once");
    assert_eq!(away().len(), 1, "the presence arrived exactly once");
    assert_eq!(receipts_of(&third).len(), 1);
    let bodies: Vec<String> = appservice
        .delivered_events()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies, ["first", "second", "third"], "events in order, once each");
    // An appservice's own user's private receipt is handed over, in its own field.
    let erin_private =
        format!("/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{third}?user_id={}", urlencode(ERIN));
    bridge(&server).post(&erin_private, &json!({})).await.expect(200);
    wait_until(20, "erin's private receipt", || {
        receipts_of(&third).iter().any(|e| e["content"][&third]["m.read.private"][ERIN]["ts"].is_u64())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn appservice_to_device_messages_of_its_users_arrive_msc2409() {
    let Setup { server, appservice, _dir } =
        setup(json!({}), "de.sorunome.msc2409.push_ephemeral: true\n").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let erin = register_ghost(&server, "slack_erin").await;
    let erin_device = erin["device_id"].as_str().unwrap().to_owned();
    let send = |txn: &str, messages: Value| {
        let client = alice.client.clone();
        let path = format!("/_matrix/client/v3/sendToDevice/m.room_key_request/{txn}");
        async move { client.put(&path, &json!({"messages": messages})).await.expect(200).clone() }
    };
    send("t1", json!({ERIN: {&erin_device: {"action": "request", "n": 1}}, &bob.user_id: {&bob.device_id: {"n": 2}}}))
        .await;
    send("t2", json!({ERIN: {"*": {"action": "cancel", "n": 3}}})).await;
    wait_until(20, "two to-device messages", || {
        delivered(&appservice, "de.sorunome.msc2409.to_device").len() >= 2
    })
    .await;
    let messages = delivered(&appservice, "de.sorunome.msc2409.to_device");
    assert_eq!(
        messages,
        [
            json!({"to_user_id": ERIN, "to_device_id": erin_device, "type": "m.room_key_request",
                   "sender": alice.user_id, "content": {"action": "request", "n": 1}}),
            json!({"to_user_id": ERIN, "to_device_id": erin_device, "type": "m.room_key_request",
                   "sender": alice.user_id, "content": {"action": "cancel", "n": 3}}),
        ],
        "only its users' messages, in order, each once"
    );
    // Every transaction of an appservice receiving ephemeral data has the field; without
    // `receive_ephemeral`, no `ephemeral` field.
    for (_, body) in accepted(&appservice) {
        assert!(body["de.sorunome.msc2409.to_device"].is_array(), "{body}");
        assert!(body.get("ephemeral").is_none(), "{body}");
        assert!(body["de.sorunome.msc2409.ephemeral"].is_array(), "{body}");
    }
    // The messages stay in the device's inbox (Synapse does not remove them either).
    let synced = bridge(&server)
        .get(&format!(
            "/_matrix/client/v3/sync?timeout=0&user_id={}&device_id={erin_device}",
            urlencode(ERIN)
        ))
        .await
        .expect(200)
        .clone();
    let inbox = synced["to_device"]["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(inbox.len(), 2, "{synced}");
    assert_eq!(inbox[0]["content"]["n"], 1);
    // Bob got his own message; the appservice never saw it.
    let bob_sync = bob.client.get("/_matrix/client/v3/sync?timeout=0").await.expect(200).clone();
    assert_eq!(bob_sync["to_device"]["events"][0]["content"]["n"], 2, "{bob_sync}");
    server.stop().await;
}

#[tokio::test]
async fn appservice_device_list_changes_of_users_sharing_its_rooms_arrive_msc3202() {
    let Setup { server, appservice, _dir } = setup(json!({}), "org.matrix.msc3202: true\n").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    register_ghost(&server, "slack_erin").await;
    let room = room_with_erin(&server, &alice).await;
    let hello = send_text(&alice, &room, "e1", "hello").await;
    wait_until(20, "the first message", || {
        appservice.delivered_events().iter().any(|e| e["event_id"] == hello.as_str())
    })
    .await;
    let seen = accepted(&appservice).len();
    // Alice (sharing a room with erin) and bob (sharing none) each log in a new device.
    for user in [&alice, &bob] {
        let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
                           "password": user.password});
        server.client().post("/_matrix/client/v3/login", &login).await.expect(200);
    }
    let device_lists = || -> Vec<Value> {
        accepted(&appservice)
            .into_iter()
            .skip(seen)
            .filter_map(|(_, body)| body.get("org.matrix.msc3202.device_lists").cloned())
            .collect()
    };
    wait_until(20, "alice's device-list change", || {
        device_lists().iter().any(|d| d["changed"].as_array().unwrap().contains(&json!(alice.user_id)))
    })
    .await;
    // A later message: the round that hands it over has read the device lists past bob's.
    let later = send_text(&alice, &room, "e2", "later").await;
    wait_until(20, "the later message", || {
        appservice.delivered_events().iter().any(|e| e["event_id"] == later.as_str())
    })
    .await;
    let all = device_lists();
    for summary in &all {
        assert_eq!(summary["left"], json!([]), "{summary}");
        let changed = summary["changed"].as_array().unwrap();
        assert!(!changed.contains(&json!(bob.user_id)), "bob shares no room with its users: {summary}");
    }
    let alice_count =
        all.iter().filter(|d| d["changed"].as_array().unwrap().contains(&json!(alice.user_id))).count();
    assert_eq!(alice_count, 1, "alice's change handed over once: {all:?}");
    // No ephemeral fields for an appservice that did not ask for them.
    for (_, body) in accepted(&appservice) {
        assert!(
            body.get("ephemeral").is_none() && body.get("de.sorunome.msc2409.to_device").is_none(),
            "{body}"
        );
    }
    server.stop().await;
}
