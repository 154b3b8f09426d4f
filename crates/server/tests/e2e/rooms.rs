//! Rooms: creation, state, sending, reading, redaction.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

pub async fn create_room(user: &TestUser, body: Value) -> String {
    let response = user.client.post("/_matrix/client/v3/createRoom", &body).await;
    response.expect(200)["room_id"].as_str().expect("room_id").to_owned()
}

pub async fn send_text(user: &TestUser, room_id: &str, txn: &str, body: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
    let response = user.client.put(&path, &json!({"msgtype": "m.text", "body": body})).await;
    response.expect(200)["event_id"].as_str().expect("event_id").to_owned()
}

#[tokio::test]
async fn create_send_and_read_back() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({"name": "Test room", "topic": "Testing"})).await;
    assert!(room_id.starts_with('!'));
    let event_id = send_text(&alice, &room_id, "t1", "hello").await;
    // Idempotent per transaction ID.
    assert_eq!(send_text(&alice, &room_id, "t1", "hello again").await, event_id);

    let state =
        alice.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state")).await.expect(200).clone();
    let types: Vec<&str> = state.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.name",
        "m.room.topic",
    ] {
        assert!(types.contains(&expected), "{expected} missing from {types:?}");
    }
    let name = alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name"))
        .await
        .expect(200)
        .clone();
    assert_eq!(name, json!({"name": "Test room"}));

    let messages = alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=5"))
        .await
        .expect(200)
        .clone();
    let chunk = messages["chunk"].as_array().unwrap();
    assert_eq!(chunk[0]["event_id"], event_id.as_str());
    assert_eq!(chunk[0]["content"]["body"], "hello");
    assert_eq!(chunk[0]["unsigned"]["transaction_id"], "t1");
    assert!(chunk[0]["unsigned"]["age"].is_u64());

    let event = alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{event_id}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(event["sender"], alice.user_id.as_str());
    server.stop().await;
}
