//! Server rules enforced on the one write path, whatever endpoint an event comes from:
//! canonical alias targets and relation checks for createRoom's `initial_state` and state
//! events, and `rc_message` for membership changes.

use myelin_test_support::TestServer;
use serde_json::json;

use crate::rooms::{create_room, send_text};

fn path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room_id}/{rest}")
}

async fn joined_rooms(user: &myelin_test_support::TestUser) -> serde_json::Value {
    user.client.get("/_matrix/client/v3/joined_rooms").await.expect(200)["joined_rooms"].clone()
}

#[tokio::test]
async fn create_room_initial_state_cannot_claim_another_rooms_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let alices_room = create_room(&alice, json!({"room_alias_name": "mine"})).await;
    let refused = bob
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"initial_state": [
                {"type": "m.room.canonical_alias", "state_key": "", "content": {"alias": "#mine:test.local"}}
            ]}),
        )
        .await;
    refused.expect_error(400, "M_BAD_ALIAS");
    let refused = bob
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"initial_state": [
                {"type": "m.room.canonical_alias", "state_key": "", "content": {"alt_aliases": ["#nowhere:test.local"]}}
            ]}),
        )
        .await;
    refused.expect_error(400, "M_BAD_ALIAS");
    assert_eq!(joined_rooms(&bob).await, json!([]), "a refused createRoom leaves no room behind");
    // The room's own alias, set by room_alias_name, may be named in initial_state.
    let own = bob
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"room_alias_name": "bobs", "initial_state": [
                {"type": "m.room.canonical_alias", "state_key": "", "content": {"alias": "#bobs:test.local", "alt_aliases": ["#bobs:test.local"]}}
            ]}),
        )
        .await;
    let bobs_room = own.expect(200)["room_id"].as_str().unwrap().to_owned();
    let state = bob.client.get(&path(&bobs_room, "state/m.room.canonical_alias")).await.expect(200).clone();
    assert_eq!(state["alias"], "#bobs:test.local");
    let resolved = bob.client.get("/_matrix/client/v3/directory/room/%23mine:test.local").await;
    assert_eq!(resolved.expect(200)["room_id"], alices_room.as_str());
    server.stop().await;
}

#[tokio::test]
async fn create_room_alias_is_released_when_the_room_is_refused_and_has_one_owner() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    // Refused after the alias is claimed (an initial_state event the rules refuse).
    let refused = alice
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"room_alias_name": "spot", "initial_state": [
                {"type": "m.room.canonical_alias", "state_key": "", "content": {"alias": "#elsewhere:test.local"}}
            ]}),
        )
        .await;
    refused.expect_error(400, "M_BAD_ALIAS");
    alice
        .client
        .get("/_matrix/client/v3/directory/room/%23spot:test.local")
        .await
        .expect_error(404, "M_NOT_FOUND");
    // Two concurrent requests for one alias: exactly one room gets it.
    let body = json!({"room_alias_name": "spot"});
    let (first, second) = tokio::join!(
        alice.client.post("/_matrix/client/v3/createRoom", &body),
        alice.client.post("/_matrix/client/v3/createRoom", &body),
    );
    let mut statuses = vec![first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, vec![200, 400]);
    let (winner, loser) = if first.status == 200 { (first, second) } else { (second, first) };
    loser.expect_error(400, "M_ROOM_IN_USE");
    let room_id = winner.json["room_id"].as_str().unwrap().to_owned();
    let resolved = alice.client.get("/_matrix/client/v3/directory/room/%23spot:test.local").await;
    assert_eq!(resolved.expect(200)["room_id"], room_id.as_str());
    let state = alice.client.get(&path(&room_id, "state/m.room.canonical_alias")).await.expect(200).clone();
    assert_eq!(state["alias"], "#spot:test.local");
    assert_eq!(joined_rooms(&alice).await, json!([room_id]));
    server.stop().await;
}

#[tokio::test]
async fn state_events_and_initial_state_pass_the_relation_checks() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let first = create_room(&alice, json!({})).await;
    let second = create_room(&alice, json!({})).await;
    let target = send_text(&alice, &first, "t1", "hello").await;
    let relation = json!({"m.relates_to": {"rel_type": "m.reference", "event_id": target}});
    // A state event relating to an event of another room.
    let refused = alice.client.put(&path(&second, "state/org.example.pointer/here"), &relation).await;
    refused.expect_error(400, "M_UNKNOWN");
    assert_eq!(refused.json["error"], "Relations must be in the same room");
    // The same in createRoom's initial_state.
    let refused = alice
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"initial_state": [{"type": "org.example.pointer", "state_key": "", "content": relation}]}),
        )
        .await;
    refused.expect_error(400, "M_UNKNOWN");
    // A thread cannot start from an event that itself relates to another, as a state event either.
    let reply = alice
        .client
        .put(
            &path(&first, "send/m.room.message/t2"),
            &json!({"msgtype": "m.text", "body": "ref", "m.relates_to": {"rel_type": "m.reference", "event_id": target}}),
        )
        .await;
    let reply_id = reply.expect(200)["event_id"].as_str().unwrap().to_owned();
    let refused = alice
        .client
        .put(
            &path(&first, "state/org.example.thread/x"),
            &json!({"m.relates_to": {"rel_type": "m.thread", "event_id": reply_id}}),
        )
        .await;
    refused.expect_error(400, "M_UNKNOWN");
    // A relation inside the room is accepted.
    alice.client.put(&path(&first, "state/org.example.pointer/here"), &relation).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn membership_changes_count_against_rc_message() {
    let server = TestServer::start_with(json!({"rc_message": {"per_second": 0.001, "burst_count": 3}})).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    send_text(&alice, &room_id, "m1", "one").await;
    // A member state PUT counts once (not once as a state PUT and once as a membership change).
    alice
        .client
        .put(
            &path(&room_id, &format!("state/m.room.member/{}", bob.user_id)),
            &json!({"membership": "invite"}),
        )
        .await
        .expect(200);
    send_text(&alice, &room_id, "m2", "two").await;
    // The fourth event: an invite through the membership endpoint is refused like a message.
    let limited = alice.client.post(&path(&room_id, "invite"), &json!({"user_id": carol.user_id})).await;
    limited.expect_error(429, "M_LIMIT_EXCEEDED");
    assert!(limited.json["retry_after_ms"].as_u64().unwrap() > 0);
    server.stop().await;
}
