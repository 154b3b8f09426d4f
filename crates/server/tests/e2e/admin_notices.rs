//! Server notices (`/_synapse/admin/v1/send_server_notice`): the system user and its tagged
//! room per user, idempotent sends by transaction ID, a new room after the user left, the
//! user unable to send there or to reject the invite, `auto_join`, and the route without
//! `server_notices` configured.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::relations::join;

pub(crate) fn notices_config(auto_join: bool) -> Value {
    json!({"server_notices": {
        "system_mxid_localpart": "notices",
        "system_mxid_display_name": "Server Notices",
        "room_name": "Server Notices",
        "room_topic": "Messages from the admins",
        "auto_join": auto_join,
    }})
}

async fn memberships(admin: &TestUser, user: &TestUser) -> serde_json::Map<String, Value> {
    let answer = admin.client.get(&format!("/_synapse/admin/v1/users/{}/memberships", user.user_id)).await;
    answer.expect(200)["memberships"].as_object().unwrap().clone()
}

async fn notice(admin: &TestUser, user: &TestUser, body: &str) -> String {
    let sent = admin
        .client
        .post(
            "/_synapse/admin/v1/send_server_notice",
            &json!({"user_id": user.user_id, "content": {"msgtype": "m.text", "body": body}}),
        )
        .await;
    let answer = sent.expect(200);
    assert_eq!(answer.as_object().unwrap().len(), 1, "only the event ID: {answer}");
    answer["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_server_notice_arrives_in_a_tagged_room_the_user_cannot_send_in() {
    let server = TestServer::start_with(notices_config(false)).await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let system = format!("@notices:{}", server.server_name);

    let first = notice(&admin, &alice, "Maintenance tonight").await;
    // The system user exists now, with its display name.
    let profile = server.client().get(&format!("/_matrix/client/v3/profile/{system}/displayname")).await;
    assert_eq!(profile.expect(200)["displayname"], "Server Notices");
    // Alice is invited to one room, tagged `m.server_notice`; she cannot reject the invite.
    let rooms = memberships(&admin, &alice).await;
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    let (room_id, membership) = rooms.iter().next().unwrap();
    assert_eq!(membership, "invite");
    let tags =
        alice.client.get(&format!("/_matrix/client/v3/user/{}/rooms/{room_id}/tags", alice.user_id)).await;
    assert_eq!(tags.expect(200), &json!({"tags": {"m.server_notice": {}}}));
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room_id}/leave"), &json!({}))
        .await
        .expect_error(403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM");
    join(&alice, room_id).await;

    // The notice is there, from the system user, in a room with the configured name.
    let event = alice.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{first}")).await;
    let event = event.expect(200);
    assert_eq!(event["sender"], system.as_str());
    assert_eq!(event["content"]["body"], "Maintenance tonight");
    let name = alice.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/")).await;
    assert_eq!(name.expect(200)["name"], "Server Notices");
    let topic = alice.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/")).await;
    assert_eq!(topic.expect(200)["topic"], "Messages from the admins");
    // She cannot send there.
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"),
            &json!({"msgtype": "m.text", "body": "reply"}),
        )
        .await
        .expect_error(403, "M_FORBIDDEN");

    // The next notice goes to the same room.
    let second = notice(&admin, &alice, "Done").await;
    let event = alice.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{second}")).await;
    assert_eq!(event.expect(200)["content"]["body"], "Done");
    assert_eq!(memberships(&admin, &alice).await.len(), 1);

    // A transaction ID makes the send idempotent.
    let put = |txn: &str| {
        let client = admin.client.clone();
        let path = format!("/_synapse/admin/v1/send_server_notice/{txn}");
        let body = json!({"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "once"}});
        async move { client.put(&path, &body).await }
    };
    let once = put("txn-1").await.expect(200)["event_id"].clone();
    assert_eq!(put("txn-1").await.expect(200)["event_id"], once);
    assert_ne!(put("txn-2").await.expect(200)["event_id"], once);

    // After she leaves, the next notice comes in a new room she is invited to.
    alice.client.post(&format!("/_matrix/client/v3/rooms/{room_id}/leave"), &json!({})).await.expect(200);
    notice(&admin, &alice, "Again").await;
    let rooms = memberships(&admin, &alice).await;
    let invited: Vec<&String> = rooms.iter().filter(|(_, m)| *m == "invite").map(|(r, _)| r).collect();
    assert_eq!(invited.len(), 1, "{rooms:?}");
    assert_ne!(invited[0], room_id);
    let tags = alice
        .client
        .get(&format!("/_matrix/client/v3/user/{}/rooms/{}/tags", alice.user_id, invited[0]))
        .await;
    assert_eq!(tags.expect(200)["tags"]["m.server_notice"], json!({}));
    server.stop().await;
}

#[tokio::test]
async fn with_auto_join_the_user_is_joined_to_the_notices_room() {
    let server = TestServer::start_with(notices_config(true)).await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let event_id = notice(&admin, &alice, "Welcome").await;
    let rooms = memberships(&admin, &alice).await;
    let (room_id, membership) = rooms.iter().next().unwrap();
    assert_eq!(membership, "join");
    let event = alice.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{event_id}")).await;
    assert_eq!(event.expect(200)["content"]["body"], "Welcome");
    server.stop().await;
}

#[tokio::test]
async fn server_notice_requests_are_checked() {
    let server = TestServer::start_with(notices_config(false)).await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let send = |body: Value| {
        let client = admin.client.clone();
        async move { client.post("/_synapse/admin/v1/send_server_notice", &body).await }
    };
    let content = json!({"msgtype": "m.text", "body": "hi"});
    alice
        .client
        .post("/_synapse/admin/v1/send_server_notice", &json!({"user_id": alice.user_id, "content": content}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .put(
            "/_synapse/admin/v1/send_server_notice/t1",
            &json!({"user_id": alice.user_id, "content": content}),
        )
        .await
        .expect_error(403, "M_FORBIDDEN");
    let unknown = format!("@nobody:{}", server.server_name);
    send(json!({"user_id": unknown, "content": content})).await.expect_error(404, "M_NOT_FOUND");
    send(json!({"user_id": "not-a-user", "content": content})).await.expect_error(400, "M_INVALID_PARAM");
    send(json!({"user_id": "@bob:elsewhere.example", "content": content}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    send(json!({"content": content})).await.expect_error(400, "M_MISSING_PARAM");
    send(json!({"user_id": alice.user_id})).await.expect_error(400, "M_MISSING_PARAM");
    send(json!({"user_id": alice.user_id, "content": "hi"})).await.expect_error(400, "M_BAD_JSON");
    send(json!({"user_id": 7, "content": content})).await.expect_error(400, "M_BAD_JSON");
    // Nothing was sent.
    assert!(memberships(&admin, &alice).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn without_server_notices_configured_the_route_answers_400() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let sent = admin
        .client
        .post(
            "/_synapse/admin/v1/send_server_notice",
            &json!({"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "hi"}}),
        )
        .await;
    sent.expect_error(400, "M_UNKNOWN");
    assert!(memberships(&admin, &alice).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn concurrent_notices_to_a_new_user_share_one_room() {
    let server = TestServer::start_with(notices_config(false)).await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..4 {
        let client = admin.client.clone();
        let body = json!({"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": format!("notice {i}")}});
        sends.spawn(async move { client.post("/_synapse/admin/v1/send_server_notice", &body).await.status });
    }
    while let Some(status) = sends.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let rooms = memberships(&admin, &alice).await;
    assert_eq!(rooms.len(), 1, "one notices room: {rooms:?}");
    server.stop().await;
}
