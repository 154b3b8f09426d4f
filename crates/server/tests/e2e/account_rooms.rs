//! Where accounts meet rooms: auto-joined rooms, profile changes as member events,
//! deactivation leaving rooms, profile lookups limited to shared rooms, message rate limits
//! and their per-user overrides.

use myelin_test_support::TestServer;
use serde_json::json;

use crate::rooms::{create_room, send_text};

fn path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room_id}/{rest}")
}

#[tokio::test]
async fn auto_join_rooms_are_created_and_joined_on_registration() {
    let server = TestServer::start_with(json!({
        "auto_join_rooms": ["#welcome:test.local"],
        "autocreate_auto_join_rooms": true,
    }))
    .await;
    let first = server.register("first").await;
    let joined = first.client.get("/_matrix/client/v3/joined_rooms").await.expect(200).clone();
    let rooms = joined["joined_rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1, "the room was created for the first user");
    let room_id = rooms[0].as_str().unwrap().to_owned();
    let second = server.register("second").await;
    let joined = second.client.get("/_matrix/client/v3/joined_rooms").await.expect(200).clone();
    assert_eq!(joined["joined_rooms"], json!([room_id]));
    let alias = first.client.get(&path(&room_id, "state/m.room.canonical_alias")).await.expect(200).clone();
    assert_eq!(alias["alias"], "#welcome:test.local");
    server.stop().await;
}

#[tokio::test]
async fn profile_changes_update_member_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({})).await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            &json!({"displayname": "Alice A."}),
        )
        .await
        .expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id),
            &json!({"avatar_url": "mxc://test.local/face"}),
        )
        .await
        .expect(200);
    let member = alice
        .client
        .get(&path(&room_id, &format!("state/m.room.member/{}", alice.user_id)))
        .await
        .expect(200)
        .clone();
    assert_eq!(member["displayname"], "Alice A.");
    assert_eq!(member["avatar_url"], "mxc://test.local/face");
    assert_eq!(member["membership"], "join");
    server.stop().await;
}

#[tokio::test]
async fn deactivated_users_leave_their_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    let other = create_room(&alice, json!({"preset": "private_chat", "invite": [bob.user_id]})).await;
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob.user_id}, "password": bob.password});
    bob.client.post("/_matrix/client/v3/account/deactivate", &json!({"auth": auth})).await.expect(200);
    for room in [&room_id, &other] {
        let member = alice
            .client
            .get(&path(room, &format!("state/m.room.member/{}", bob.user_id)))
            .await
            .expect(200)
            .clone();
        assert_eq!(member["membership"], "leave", "{room}");
    }
    server.stop().await;
}

#[tokio::test]
async fn profile_lookups_can_be_limited_to_shared_rooms() {
    let server =
        TestServer::start_with(json!({"limit_profile_requests_to_users_who_share_rooms": true})).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let profile = format!("/_matrix/client/v3/profile/{}", alice.user_id);
    bob.client.get(&profile).await.expect_error(403, "M_FORBIDDEN");
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    bob.client.get(&profile).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn messages_are_rate_limited_unless_overridden() {
    let server = TestServer::start_with(json!({"rc_message": {"per_second": 0.001, "burst_count": 3}})).await;
    let admin = server.register_admin("root").await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({})).await;
    for i in 0..3 {
        send_text(&alice, &room_id, &format!("a{i}"), "hi").await;
    }
    let limited = alice
        .client
        .put(&path(&room_id, "send/m.room.message/a3"), &json!({"msgtype": "m.text", "body": "too many"}))
        .await;
    limited.expect_error(429, "M_LIMIT_EXCEEDED");
    assert!(limited.json["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(limited.headers.get("retry-after").is_some());
    // 0/0: unlimited.
    admin
        .client
        .post(
            &format!("/_synapse/admin/v1/users/{}/override_ratelimit", alice.user_id),
            &json!({"messages_per_second": 0, "burst_count": 0}),
        )
        .await
        .expect(200);
    for i in 4..20 {
        send_text(&alice, &room_id, &format!("a{i}"), "unlimited").await;
    }
    server.stop().await;
}
