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

/// Reads `event_id` through `GET /rooms/{roomId}/event/{eventId}` as `user` and checks that it
/// is that text message from `sender`, unpruned: its ID, room, type, sender and whole content.
pub async fn assert_reads_text(user: &TestUser, room_id: &str, event_id: &str, sender: &str, body: &str) {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/event/{}", urlencode(event_id));
    let event = user.client.get(&path).await.expect(200).clone();
    assert_eq!(event["event_id"], event_id, "{event}");
    assert_eq!(event["room_id"], room_id, "{event}");
    assert_eq!(event["type"], "m.room.message", "{event}");
    assert_eq!(event["sender"], sender, "{event}");
    assert_eq!(event["content"], json!({"msgtype": "m.text", "body": body}), "unpruned: {event}");
    assert!(event["unsigned"].get("redacted_because").is_none(), "not redacted: {event}");
    assert!(event["origin_server_ts"].is_u64(), "{event}");
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

    // The first send's content, not the retried one's.
    assert_reads_text(&alice, &room_id, &event_id, &alice.user_id, "hello").await;
    server.stop().await;
}

fn path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room_id}/{rest}")
}

#[tokio::test]
async fn create_room_follows_the_spec_event_order_and_presets() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(
        &alice,
        json!({
            "preset": "trusted_private_chat",
            "name": "N",
            "topic": "T",
            "room_alias_name": "ordered",
            "invite": [bob.user_id],
            "is_direct": true,
            "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            "room_version": "10",
        }),
    )
    .await;
    let messages = alice.client.get(&path(&room_id, "messages?dir=f&limit=50")).await.expect(200).clone();
    let order: Vec<String> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}|{}", e["type"].as_str().unwrap(), e["state_key"].as_str().unwrap_or("")))
        .collect();
    let alice_key = format!("m.room.member|{}", alice.user_id);
    let bob_key = format!("m.room.member|{}", bob.user_id);
    let expected = vec![
        "m.room.create|",
        alice_key.as_str(),
        "m.room.power_levels|",
        "m.room.canonical_alias|",
        "m.room.join_rules|",
        "m.room.history_visibility|",
        "m.room.guest_access|",
        "m.room.encryption|",
        "m.room.name|",
        "m.room.topic|",
        bob_key.as_str(),
    ];
    assert_eq!(order, expected);
    let chunk = messages["chunk"].as_array().unwrap();
    assert_eq!(chunk[0]["content"]["room_version"], "10");
    assert_eq!(chunk[0]["content"]["creator"], alice.user_id.as_str());
    assert_eq!(chunk[2]["content"]["users"][&alice.user_id], 100);
    assert_eq!(
        chunk[2]["content"]["users"][&bob.user_id], 100,
        "trusted_private_chat gives invitees the creator's level"
    );
    assert_eq!(chunk[2]["content"]["invite"], 0);
    assert_eq!(chunk[3]["content"]["alias"], "#ordered:test.local");
    assert_eq!(chunk[4]["content"]["join_rule"], "invite");
    assert_eq!(chunk[5]["content"]["history_visibility"], "shared");
    assert_eq!(chunk[6]["content"]["guest_access"], "can_join");
    assert_eq!(chunk[10]["content"]["membership"], "invite");
    assert_eq!(chunk[10]["content"]["is_direct"], true);
    // The alias was taken.
    alice
        .client
        .post("/_matrix/client/v3/createRoom", &json!({"room_alias_name": "ordered"}))
        .await
        .expect_error(400, "M_ROOM_IN_USE");
    server.stop().await;
}

#[tokio::test]
async fn create_room_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = &alice.client;
    client
        .post("/_matrix/client/v3/createRoom", &json!({"room_version": "99"}))
        .await
        .expect_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    client
        .post("/_matrix/client/v3/createRoom", &json!({"preset": "party"}))
        .await
        .expect_error(400, "M_BAD_JSON");
    client
        .post("/_matrix/client/v3/createRoom", &json!({"visibility": "everyone"}))
        .await
        .expect_error(400, "M_BAD_JSON");
    client
        .post("/_matrix/client/v3/createRoom", &json!({"invite": ["not-a-user"]}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"invite_3pid": [{"id_server": "x", "medium": "email", "address": "a@b.c"}]}),
        )
        .await
        .expect_error(400, "M_INVALID_PARAM");
    client
        .post("/_matrix/client/v3/createRoom", &json!({"room_alias_name": "bad alias"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    client
        .post("/_matrix/client/v3/createRoom", &json!({"initial_state": [{"type": "x"}]}))
        .await
        .expect_error(400, "M_BAD_JSON");
    // A power level override that locks the creator out of naming the room.
    client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"name": "x", "power_level_content_override": {"users": {alice.user_id.clone(): 10}, "events": {"m.room.name": 50}}}),
        )
        .await
        .expect_error(400, "M_INVALID_ROOM_STATE");
    // Nothing was left behind by the refused request.
    let joined = client.get("/_matrix/client/v3/joined_rooms").await.expect(200).clone();
    assert_eq!(joined["joined_rooms"], json!([]));
    server
        .client()
        .post("/_matrix/client/v3/createRoom", &json!({}))
        .await
        .expect_error(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn every_room_version_can_be_created_and_used() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for version in 1..=12 {
        let room_id = create_room(
            &alice,
            json!({"room_version": version.to_string(), "preset": "public_chat", "name": "v"}),
        )
        .await;
        if version == 12 {
            assert!(!room_id.contains(':'), "v12 room IDs are hashes: {room_id}");
        }
        bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
        let event_id = send_text(&bob, &room_id, "x", "hi").await;
        let redaction = alice
            .client
            .put(&path(&room_id, &format!("redact/{}/r", urlencode(&event_id))), &json!({"reason": "mod"}))
            .await;
        redaction.expect(200);
        let event = bob.client.get(&path(&room_id, &format!("event/{}", urlencode(&event_id)))).await;
        assert_eq!(event.status, 200, "version {version}: {}", event.json);
        let event = event.json.clone();
        assert_eq!(event["content"], json!({}), "version {version}: redacted content is pruned");
        assert_eq!(event["unsigned"]["redacted_because"]["type"], "m.room.redaction");
    }
    let caps = alice.client.get("/_matrix/client/v3/capabilities").await.expect(200).clone();
    let versions = &caps["capabilities"]["m.room_versions"];
    assert_eq!(versions["default"], "11");
    assert_eq!(versions["available"].as_object().unwrap().len(), 12);
    server.stop().await;
}

#[tokio::test]
async fn v12_creators_have_unlimited_power_and_cannot_be_listed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    alice
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"room_version": "12", "power_level_content_override": {"users": {alice.user_id.clone(): 100}}}),
        )
        .await
        .expect_error(400, "M_INVALID_ROOM_STATE");
    let room_id = create_room(&alice, json!({"room_version": "12", "preset": "public_chat"})).await;
    let levels = alice.client.get(&path(&room_id, "state/m.room.power_levels")).await.expect(200).clone();
    assert!(levels["users"].get(&alice.user_id).is_none());
    assert_eq!(levels["events"]["m.room.tombstone"], 150);
    // The creator can still do anything, e.g. raise someone to 100.
    let bob = server.register("bob").await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    let mut content = levels.clone();
    content["users"] = json!({bob.user_id.clone(): 100});
    alice.client.put(&path(&room_id, "state/m.room.power_levels"), &content).await.expect(200);
    // Listing the creator is refused by the auth rules.
    content["users"][&alice.user_id] = json!(100);
    alice
        .client
        .put(&path(&room_id, "state/m.room.power_levels"), &content)
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn state_keys_may_be_empty_or_contain_slashes() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({})).await;
    alice.client.put(&path(&room_id, "state/org.example.thing/a/b/c"), &json!({"v": 1})).await.expect(200);
    alice.client.put(&path(&room_id, "state/org.example.thing/"), &json!({"v": 2})).await.expect(200);
    alice
        .client
        .put(&path(&room_id, "state/org.example.thing/%2Fslashed"), &json!({"v": 3}))
        .await
        .expect(200);
    assert_eq!(alice.client.get(&path(&room_id, "state/org.example.thing/a/b/c")).await.expect(200)["v"], 1);
    assert_eq!(alice.client.get(&path(&room_id, "state/org.example.thing")).await.expect(200)["v"], 2);
    assert_eq!(
        alice.client.get(&path(&room_id, "state/org.example.thing/%2Fslashed")).await.expect(200)["v"],
        3
    );
    let full = alice
        .client
        .get(&path(&room_id, "state/org.example.thing/a/b/c?format=event"))
        .await
        .expect(200)
        .clone();
    assert_eq!(full["state_key"], "a/b/c");
    alice.client.get(&path(&room_id, "state/org.example.thing/nope")).await.expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn sending_needs_membership_and_power() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mallory = server.register("mallory").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    // Not joined.
    mallory
        .client
        .put(&path(&room_id, "send/m.room.message/1"), &json!({"msgtype": "m.text", "body": "x"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    mallory.client.get(&path(&room_id, "messages?dir=b")).await.expect_error(403, "M_FORBIDDEN");
    // Joined but without power for state.
    mallory.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    mallory
        .client
        .put(&path(&room_id, "state/m.room.name"), &json!({"name": "pwned"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Raising oneself is refused; raising someone above one's own level too.
    let mut levels = alice.client.get(&path(&room_id, "state/m.room.power_levels")).await.expect(200).clone();
    levels["users"][&mallory.user_id] = json!(100);
    mallory
        .client
        .put(&path(&room_id, "state/m.room.power_levels"), &levels)
        .await
        .expect_error(403, "M_FORBIDDEN");
    // A moderator (50) cannot give someone 60.
    levels["users"][&mallory.user_id] = json!(50);
    alice.client.put(&path(&room_id, "state/m.room.power_levels"), &levels).await.expect(200);
    let carol = server.register("carol").await;
    carol.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    levels["users"][&carol.user_id] = json!(60);
    mallory
        .client
        .put(&path(&room_id, "state/m.room.power_levels"), &levels)
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Banning a higher-powered user is refused; banning a lower one works.
    mallory
        .client
        .post(&path(&room_id, "ban"), &json!({"user_id": alice.user_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    mallory
        .client
        .post(&path(&room_id, "ban"), &json!({"user_id": carol.user_id, "reason": "spam"}))
        .await
        .expect(200);
    carol
        .client
        .put(&path(&room_id, "send/m.room.message/2"), &json!({"msgtype": "m.text", "body": "x"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    carol
        .client
        .post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Unknown rooms.
    alice
        .client
        .put(&path("!nowhere:test.local", "send/m.room.message/3"), &json!({"body": "x"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice.client.get(&path("!nowhere:test.local", "messages?dir=b")).await.expect_error(403, "M_FORBIDDEN");
    alice.client.get(&path("not-a-room", "state")).await.expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn redaction_needs_power_for_others_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    let alices = send_text(&alice, &room_id, "a", "alice's").await;
    let bobs = send_text(&bob, &room_id, "b", "bob's").await;
    bob.client
        .put(&path(&room_id, &format!("redact/{alices}/r1")), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Own events, and others' with power.
    bob.client.put(&path(&room_id, &format!("redact/{bobs}/r2")), &json!({})).await.expect(200);
    alice
        .client
        .put(&path(&room_id, &format!("redact/{alices}/r3")), &json!({"reason": "oops"}))
        .await
        .expect(200);
    let event = alice.client.get(&path(&room_id, &format!("event/{alices}"))).await.expect(200).clone();
    assert_eq!(event["content"], json!({}));
    assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], "oops");
    // The stored event was pruned: it stays pruned after a restart.
    let mut server = server;
    server.restart().await;
    let client = server.client().with_token(&alice.access_token);
    let event = client.get(&path(&room_id, &format!("event/{bobs}"))).await.expect(200).clone();
    assert_eq!(event["content"], json!({}));
    server.stop().await;
}

#[tokio::test]
async fn messages_paginate_both_ways_with_filters() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    let mut sent = Vec::new();
    for i in 0..12 {
        let who = if i % 3 == 0 { &bob } else { &alice };
        sent.push(send_text(who, &room_id, &format!("t{i}"), &format!("m{i}")).await);
    }
    let text_filter = urlencode(r#"{"types":["m.room.message"]}"#);
    let page1 = alice
        .client
        .get(&path(&room_id, &format!("messages?dir=b&limit=5&filter={text_filter}")))
        .await
        .expect(200)
        .clone();
    let ids1: Vec<&str> =
        page1["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids1, sent[7..].iter().rev().map(String::as_str).collect::<Vec<_>>());
    let end = page1["end"].as_str().unwrap();
    let page2 = alice
        .client
        .get(&path(&room_id, &format!("messages?dir=b&limit=5&from={end}&filter={text_filter}")))
        .await
        .expect(200)
        .clone();
    let ids2: Vec<&str> =
        page2["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids2, sent[2..7].iter().rev().map(String::as_str).collect::<Vec<_>>());
    // Forward from page 2's end returns what page 2 skipped over... and back.
    let forward = alice
        .client
        .get(&path(
            &room_id,
            &format!("messages?dir=f&limit=3&from={}&filter={text_filter}", page2["end"].as_str().unwrap()),
        ))
        .await
        .expect(200)
        .clone();
    let ids3: Vec<&str> =
        forward["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids3, sent[2..5].iter().map(String::as_str).collect::<Vec<_>>());
    // Sender filter and lazy-loaded members.
    let bob_filter = urlencode(&format!(r#"{{"senders":["{}"],"lazy_load_members":true}}"#, bob.user_id));
    let bobs = alice
        .client
        .get(&path(&room_id, &format!("messages?dir=b&limit=20&filter={bob_filter}")))
        .await
        .expect(200)
        .clone();
    let chunk = bobs["chunk"].as_array().unwrap();
    assert!(chunk.iter().all(|e| e["sender"] == bob.user_id.as_str()));
    let members: Vec<&str> =
        bobs["state"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(members, vec![bob.user_id.as_str()]);
    // The end of history has no `end`.
    let all = alice.client.get(&path(&room_id, "messages?dir=b&limit=100")).await.expect(200).clone();
    assert!(all.get("end").is_none(), "{all}");
    alice.client.get(&path(&room_id, "messages?dir=sideways")).await.expect_error(400, "M_INVALID_PARAM");
    alice
        .client
        .get(&path(&room_id, "messages?dir=b&from=garbage"))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    alice.client.get(&path(&room_id, "messages?dir=b&filter=notjson")).await.expect_error(400, "M_NOT_JSON");
    server.stop().await;
}

pub fn urlencode(value: &str) -> String {
    url_escape(value)
}

fn url_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn context_and_timestamp_lookup() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(send_text(&alice, &room_id, &format!("c{i}"), &format!("m{i}")).await);
        // Not synchronisation: the clock must move so that each event gets its own
        // origin_server_ts, which the timestamp lookup below tells apart.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let context =
        alice.client.get(&path(&room_id, &format!("context/{}?limit=4", sent[3]))).await.expect(200).clone();
    assert_eq!(context["event"]["event_id"], sent[3].as_str());
    let before: Vec<&str> = context["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let after: Vec<&str> =
        context["events_after"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(before, vec![sent[2].as_str(), sent[1].as_str()]);
    assert_eq!(after, vec![sent[4].as_str(), sent[5].as_str()]);
    assert!(context["start"].is_string() && context["end"].is_string());
    assert!(context["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    alice.client.get(&path(&room_id, "context/$nope")).await.expect_error(404, "M_NOT_FOUND");

    let event = alice.client.get(&path(&room_id, &format!("event/{}", sent[2]))).await.expect(200).clone();
    let ts = event["origin_server_ts"].as_u64().unwrap();
    let found = alice
        .client
        .get(&format!("/_matrix/client/v1/rooms/{room_id}/timestamp_to_event?ts={ts}&dir=f"))
        .await
        .expect(200)
        .clone();
    assert_eq!(found["event_id"], sent[2].as_str());
    assert_eq!(found["origin_server_ts"], ts);
    alice
        .client
        .get(&format!("/_matrix/client/v1/rooms/{room_id}/timestamp_to_event?ts={}&dir=f", ts + 10_000_000))
        .await
        .expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}
