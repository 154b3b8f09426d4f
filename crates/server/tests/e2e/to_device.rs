//! To-device messages over HTTP: `PUT /sendToDevice/{eventType}/{txnId}` and their delivery in
//! `/sync` (`to_device.events`): order, acknowledgement, the 100-per-sync limit, `*` fan-out,
//! idempotent transactions, long-poll wake-up, device deletion and restarts.

use std::time::{Duration, Instant};

use myelin_test_support::{TestClient, TestServer, TestUser};
use serde_json::{Value, json};

const TYPE: &str = "org.example.test";

fn send_path(kind: &str, txn_id: &str) -> String {
    format!("/_matrix/client/v3/sendToDevice/{kind}/{txn_id}")
}

async fn send(from: &TestClient, txn_id: &str, messages: Value) {
    let body = from.put(&send_path(TYPE, txn_id), &json!({ "messages": messages })).await.expect(200).clone();
    assert_eq!(body, json!({}));
}

async fn sync(client: &TestClient, since: Option<&str>, timeout_ms: u64) -> Value {
    let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    client.get(&path).await.expect(200).clone()
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

/// The `n` field of each to-device event's content, checking every event's shape.
fn numbers(sync: &Value) -> Vec<i64> {
    let events = sync["to_device"]["events"].as_array().expect("to_device.events is an array");
    events
        .iter()
        .map(|event| {
            let object = event.as_object().expect("an event is an object");
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, ["content", "sender", "type"], "{event}");
            assert_eq!(event["type"], TYPE);
            event["content"]["n"].as_i64().expect("content.n")
        })
        .collect()
}

/// Logs `user` in on another device (or on `device_id`), returning its client and device ID.
async fn login(server: &TestServer, user: &TestUser, device_id: Option<&str>) -> (TestClient, String) {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": user.password,
    });
    if let Some(device_id) = device_id {
        body["device_id"] = json!(device_id);
    }
    let response = server.client().post("/_matrix/client/v3/login", &body).await.expect(200).clone();
    let token = response["access_token"].as_str().expect("access_token");
    (server.client().with_token(token), response["device_id"].as_str().expect("device_id").to_owned())
}

#[tokio::test]
async fn messages_arrive_in_order_until_the_device_acknowledges_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let before = next_batch(&sync(&bob.client, None, 0).await);
    for n in 1..=3 {
        send(
            &alice.client,
            &format!("t{n}"),
            json!({ bob.user_id.clone(): { bob.device_id.clone(): {"n": n} } }),
        )
        .await;
    }

    let first = sync(&bob.client, Some(&before), 0).await;
    assert_eq!(numbers(&first), vec![1, 2, 3]);
    assert_eq!(first["to_device"]["events"][0]["sender"], alice.user_id.as_str());
    // Not acknowledged yet: a sync from the older token gets them again.
    let again = sync(&bob.client, Some(&before), 0).await;
    assert_eq!(numbers(&again), vec![1, 2, 3]);
    assert_eq!(next_batch(&again), next_batch(&first));

    // Syncing from the token that carried them acknowledges (and deletes) them.
    let acked = sync(&bob.client, Some(&next_batch(&first)), 0).await;
    assert_eq!(numbers(&acked), Vec::<i64>::new());
    let from_old_token = sync(&bob.client, Some(&before), 0).await;
    assert_eq!(numbers(&from_old_token), Vec::<i64>::new(), "acknowledged messages are gone");
    let initial = sync(&bob.client, None, 0).await;
    assert_eq!(numbers(&initial), Vec::<i64>::new());

    // The sender's own device got nothing; every sync carries the key counts.
    let alice_sync = sync(&alice.client, None, 0).await;
    assert_eq!(numbers(&alice_sync), Vec::<i64>::new());
    assert_eq!(alice_sync["device_one_time_keys_count"], json!({"signed_curve25519": 0}));
    assert_eq!(alice_sync["device_unused_fallback_key_types"], json!([]));
}

#[tokio::test]
async fn a_sync_carries_at_most_a_hundred_and_the_next_one_the_rest_at_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for n in 1..=150 {
        send(
            &alice.client,
            &format!("t{n}"),
            json!({ bob.user_id.clone(): { bob.device_id.clone(): {"n": n} } }),
        )
        .await;
    }
    let first = sync(&bob.client, None, 0).await;
    assert_eq!(numbers(&first), (1..=100).collect::<Vec<_>>());
    // The rest come at once, even from a long-polling sync.
    let started = Instant::now();
    let second = sync(&bob.client, Some(&next_batch(&first)), 30_000).await;
    assert!(started.elapsed() < Duration::from_secs(25), "the sync did not wait with messages pending");
    assert_eq!(numbers(&second), (101..=150).collect::<Vec<_>>());
    let third = sync(&bob.client, Some(&next_batch(&second)), 0).await;
    assert_eq!(numbers(&third), Vec::<i64>::new());
}

#[tokio::test]
async fn a_star_reaches_every_device_and_unknown_recipients_are_ignored() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (bob_phone, phone_id) = login(&server, &bob, None).await;
    send(&alice.client, "star", json!({ bob.user_id.clone(): { "*": {"n": 1} } })).await;
    // A device named next to `*` gets its own content; unknown devices, unknown local users,
    // remote users and invalid user IDs are skipped.
    send(
        &alice.client,
        "mixed",
        json!({
            bob.user_id.clone(): { "*": {"n": 2}, phone_id.clone(): {"n": 3}, "NOSUCHDEVICE": {"n": 4} },
            bob.user_id.replace("@bob:", "@nobody:"): { "*": {"n": 5} },
            "@someone:remote.example": { "*": {"n": 6} },
            "not a user id": { "*": {"n": 7} },
        }),
    )
    .await;
    assert_eq!(numbers(&sync(&bob.client, None, 0).await), vec![1, 2]);
    assert_eq!(numbers(&sync(&bob_phone, None, 0).await), vec![1, 3]);
}

#[tokio::test]
async fn a_repeated_transaction_sends_nothing_new() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let messages = json!({ bob.user_id.clone(): { bob.device_id.clone(): {"n": 1} } });
    send(&alice.client, "same", messages.clone()).await;
    send(&alice.client, "same", json!({ bob.user_id.clone(): { bob.device_id.clone(): {"n": 2} } })).await;
    // The transaction ID is scoped to the sending device: another device may reuse it.
    let (alice_phone, _) = login(&server, &alice, None).await;
    send(&alice_phone, "same", json!({ bob.user_id.clone(): { bob.device_id.clone(): {"n": 3} } })).await;
    assert_eq!(numbers(&sync(&bob.client, None, 0).await), vec![1, 3]);
}

#[tokio::test]
async fn a_message_wakes_the_long_poll_of_its_device() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let since = next_batch(&sync(&bob.client, None, 0).await);
    let client = bob.client.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move { sync(&client, Some(&since), 30_000).await });
    server.wait_for_sync_of(&bob.user_id).await;
    assert!(!poll.is_finished(), "the sync waits for something to report");
    send(&alice.client, "wake", json!({ bob.user_id.clone(): { bob.device_id.clone(): {"n": 1} } })).await;
    let woken = poll.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(25), "the message woke the sync");
    assert_eq!(numbers(&woken), vec![1]);
}

#[tokio::test]
async fn a_logged_out_device_loses_its_queue() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (phone, phone_id) = login(&server, &bob, Some("PHONE")).await;
    send(&alice.client, "t1", json!({ bob.user_id.clone(): { phone_id.clone(): {"n": 1} } })).await;
    phone.post("/_matrix/client/v3/logout", &json!({})).await.expect(200);
    // The same device ID logged in again starts with an empty inbox.
    let (phone_again, _) = login(&server, &bob, Some("PHONE")).await;
    assert_eq!(numbers(&sync(&phone_again, None, 0).await), Vec::<i64>::new());
    send(&alice.client, "t2", json!({ bob.user_id.clone(): { phone_id.clone(): {"n": 2} } })).await;
    assert_eq!(numbers(&sync(&phone_again, None, 0).await), vec![2]);
}

#[tokio::test]
async fn messages_and_positions_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let to_bob = |n: i64| json!({ bob.user_id.clone(): { bob.device_id.clone(): {"n": n} } });
    send(&alice.client, "t1", to_bob(1)).await;
    server.restart().await;
    let bob_client = server.client().with_token(&bob.access_token);
    let first = sync(&bob_client, None, 0).await;
    assert_eq!(numbers(&first), vec![1]);
    // Acknowledged: the inbox is empty now. After another restart, new messages still get
    // positions after the token's, so the token does not hide them.
    let token = next_batch(&sync(&bob_client, Some(&next_batch(&first)), 0).await);
    server.restart().await;
    let alice_client = server.client().with_token(&alice.access_token);
    let bob_client = server.client().with_token(&bob.access_token);
    send(&alice_client, "t2", to_bob(2)).await;
    assert_eq!(numbers(&sync(&bob_client, Some(&token), 0).await), vec![2]);
}

#[tokio::test]
async fn bad_messages_are_refused_with_matrix_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = send_path(TYPE, "bad");
    let put = |body: Value| {
        let client = alice.client.clone();
        let path = path.clone();
        async move { client.put(&path, &body).await }
    };
    put(json!({})).await.expect_error(400, "M_MISSING_PARAM");
    put(json!({"messages": "no"})).await.expect_error(400, "M_BAD_JSON");
    put(json!({"messages": { bob.user_id.clone(): "no" }})).await.expect_error(400, "M_BAD_JSON");
    put(json!({"messages": { bob.user_id.clone(): { bob.device_id.clone(): "no" } }}))
        .await
        .expect_error(400, "M_BAD_JSON");
    put(json!({"messages": { bob.user_id.clone(): { bob.device_id.clone(): [1] } }}))
        .await
        .expect_error(400, "M_BAD_JSON");
    // Over 64 KiB for one recipient: refused, and nothing is sent to anyone.
    put(json!({"messages": {
        alice.user_id.clone(): { "*": {"n": 1} },
        bob.user_id.clone(): { bob.device_id.clone(): {"n": 2, "padding": "x".repeat(70_000)} },
    }}))
    .await
    .expect_error(413, "M_TOO_LARGE");
    assert_eq!(numbers(&sync(&bob.client, None, 0).await), Vec::<i64>::new());
    assert_eq!(numbers(&sync(&alice.client, None, 0).await), Vec::<i64>::new());
    // The transaction ID of a refused request is still free.
    send(&alice.client, "bad", json!({ bob.user_id.clone(): { bob.device_id.clone(): {"n": 3} } })).await;
    assert_eq!(numbers(&sync(&bob.client, None, 0).await), vec![3]);
}
