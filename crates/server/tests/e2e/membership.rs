//! Membership: join rules, invites, kicks, bans, knocks, restricted joins, forgetting, and
//! history visibility on every read path.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::{assert_reads_text, create_room, send_text, urlencode};

fn path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room_id}/{rest}")
}

async fn join(user: &TestUser, room: &str) -> myelin_test_support::TestResponse {
    user.client.post(&format!("/_matrix/client/v3/join/{}", urlencode(room)), &json!({})).await
}

async fn membership_of(user: &TestUser, room_id: &str, target: &str) -> Value {
    let event = user.client.get(&path(room_id, &format!("state/m.room.member/{target}"))).await;
    event.json["membership"].clone()
}

#[tokio::test]
async fn invite_only_rooms_need_an_invite() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "private_chat"})).await;
    join(&bob, &room_id).await.expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .post(&path(&room_id, "invite"), &json!({"user_id": bob.user_id, "reason": "welcome"}))
        .await
        .expect(200);
    assert_eq!(membership_of(&alice, &room_id, &bob.user_id).await, "invite");
    // Inviting again (already invited) is fine with the auth rules; inviting a member is not.
    join(&bob, &room_id).await.expect(200);
    alice
        .client
        .post(&path(&room_id, "invite"), &json!({"user_id": bob.user_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Joining again is a no-op.
    join(&bob, &room_id).await.expect(200);
    let joined = bob.client.get("/_matrix/client/v3/joined_rooms").await.expect(200).clone();
    assert_eq!(joined["joined_rooms"], json!([room_id]));
    // Unknown users, and remote users whose server cannot be reached (federation_invite.rs
    // has the invites that reach it).
    alice
        .client
        .post(&path(&room_id, "invite"), &json!({"user_id": "@ghost:test.local"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice
        .client
        .post(&path(&room_id, "invite"), &json!({"user_id": "@someone:elsewhere.example"}))
        .await
        .expect_error(502, "M_UNKNOWN");
    alice
        .client
        .post(&path(&room_id, "invite"), &json!({"user_id": "nonsense"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    alice.client.post(&path(&room_id, "invite"), &json!({})).await.expect_error(400, "M_BAD_JSON");
    server.stop().await;
}

#[tokio::test]
async fn kick_ban_unban_and_leave() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await.expect(200);
    // Bob (power 0) cannot kick Alice.
    bob.client
        .post(&path(&room_id, "kick"), &json!({"user_id": alice.user_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .post(&path(&room_id, "kick"), &json!({"user_id": bob.user_id, "reason": "cool off"}))
        .await
        .expect(200);
    let kicked = alice
        .client
        .get(&path(&room_id, &format!("state/m.room.member/{}?format=event", bob.user_id)))
        .await
        .expect(200)
        .clone();
    assert_eq!(kicked["content"]["membership"], "leave");
    assert_eq!(kicked["content"]["reason"], "cool off");
    assert_eq!(kicked["sender"], alice.user_id.as_str());
    assert_eq!(kicked["unsigned"]["prev_content"]["membership"], "join");
    join(&bob, &room_id).await.expect(200);
    alice.client.post(&path(&room_id, "ban"), &json!({"user_id": bob.user_id})).await.expect(200);
    join(&bob, &room_id).await.expect_error(403, "M_FORBIDDEN");
    bob.client.post(&path(&room_id, "leave"), &json!({})).await.expect_error(403, "M_FORBIDDEN");
    alice.client.post(&path(&room_id, "unban"), &json!({"user_id": bob.user_id})).await.expect(200);
    alice
        .client
        .post(&path(&room_id, "unban"), &json!({"user_id": bob.user_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    join(&bob, &room_id).await.expect(200);
    bob.client.post(&path(&room_id, "leave"), &json!({"reason": "bye"})).await.expect(200);
    bob.client.post(&path(&room_id, "leave"), &json!({})).await.expect_error(403, "M_FORBIDDEN");
    // Forgetting needs having left; then the room is forgotten.
    alice.client.post(&path(&room_id, "forget"), &json!({})).await.expect_error(400, "M_UNKNOWN");
    bob.client.post(&path(&room_id, "forget"), &json!({})).await.expect(200);
    assert!(server.services().store().is_forgotten(&bob.user_id, &room_id).await.unwrap());
    // Kicking someone not in the room.
    let carol = server.register("carol").await;
    alice
        .client
        .post(&path(&room_id, "kick"), &json!({"user_id": carol.user_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn join_by_alias_and_unknown_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "lobby"})).await;
    let joined = join(&bob, "#lobby:test.local").await.expect(200).clone();
    assert_eq!(joined["room_id"], room_id.as_str());
    bob.client.post(&path(&room_id, "join"), &json!({})).await.expect(200);
    join(&bob, "#missing:test.local").await.expect_error(404, "M_NOT_FOUND");
    join(&bob, "!unknown:test.local").await.expect_error(404, "M_NOT_FOUND");
    // Another server's alias is asked of that server: unreachable, 502 as Synapse answers.
    join(&bob, "#elsewhere:remote.example").await.expect_error(502, "M_UNKNOWN");
    join(&bob, "not a room").await.expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn knocking() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(
        &alice,
        json!({"preset": "private_chat", "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    let knocked = bob
        .client
        .post(&format!("/_matrix/client/v3/knock/{room_id}"), &json!({"reason": "let me in"}))
        .await;
    assert_eq!(knocked.expect(200)["room_id"], room_id.as_str());
    assert_eq!(membership_of(&alice, &room_id, &bob.user_id).await, "knock");
    bob.client.post(&format!("/_matrix/client/v3/knock/{room_id}"), &json!({})).await.expect(200);
    alice.client.post(&path(&room_id, "invite"), &json!({"user_id": bob.user_id})).await.expect(200);
    join(&bob, &room_id).await.expect(200);
    // Knocking on a public room is refused.
    let public = create_room(&alice, json!({"preset": "public_chat"})).await;
    let carol = server.register("carol").await;
    carol
        .client
        .post(&format!("/_matrix/client/v3/knock/{public}"), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_the_allowed_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let outsider = server.register("outsider").await;
    let space =
        create_room(&alice, json!({"preset": "public_chat", "creation_content": {"type": "m.space"}})).await;
    let room = create_room(
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {
                "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]
            }}],
        }),
    )
    .await;
    join(&outsider, &room).await.expect_error(403, "M_FORBIDDEN");
    join(&bob, &space).await.expect(200);
    join(&bob, &room).await.expect(200);
    let member = bob
        .client
        .get(&path(&room, &format!("state/m.room.member/{}", bob.user_id)))
        .await
        .expect(200)
        .clone();
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str());
    server.stop().await;
}

#[tokio::test]
async fn history_visibility_applies_to_every_read_path() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    let before = send_text(&alice, &room_id, "b1", "before bob").await;
    join(&bob, &room_id).await.expect(200);
    let during = send_text(&alice, &room_id, "d1", "while bob is here").await;
    // messages
    let messages = bob.client.get(&path(&room_id, "messages?dir=b&limit=50")).await.expect(200).clone();
    let ids: Vec<&str> =
        messages["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&during.as_str()));
    assert!(!ids.contains(&before.as_str()), "joined visibility hides what came before the join");
    // single event and context
    bob.client.get(&path(&room_id, &format!("event/{before}"))).await.expect_error(404, "M_NOT_FOUND");
    assert_reads_text(&bob, &room_id, &during, &alice.user_id, "while bob is here").await;
    bob.client.get(&path(&room_id, &format!("context/{before}"))).await.expect_error(404, "M_NOT_FOUND");
    let context = bob.client.get(&path(&room_id, &format!("context/{during}"))).await.expect(200).clone();
    assert!(context["events_before"].as_array().unwrap().iter().all(|e| e["event_id"] != before.as_str()));
    // After leaving, later events are invisible but earlier ones remain.
    bob.client.post(&path(&room_id, "leave"), &json!({})).await.expect(200);
    let after = send_text(&alice, &room_id, "a1", "after bob left").await;
    assert_reads_text(&bob, &room_id, &during, &alice.user_id, "while bob is here").await;
    bob.client.get(&path(&room_id, &format!("event/{after}"))).await.expect_error(404, "M_NOT_FOUND");
    let messages = bob.client.get(&path(&room_id, "messages?dir=b&limit=50")).await.expect(200).clone();
    let ids: Vec<&str> =
        messages["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&during.as_str()) && !ids.contains(&after.as_str()), "{ids:?}");
    // A stranger sees nothing; state of a left room is the state when leaving.
    let stranger = server.register("stranger").await;
    stranger.client.get(&path(&room_id, "messages?dir=b")).await.expect_error(403, "M_FORBIDDEN");
    stranger.client.get(&path(&room_id, "state")).await.expect_error(403, "M_FORBIDDEN");
    stranger.client.get(&path(&room_id, "members")).await.expect_error(403, "M_FORBIDDEN");
    alice.client.put(&path(&room_id, "state/m.room.topic"), &json!({"topic": "new"})).await.expect(200);
    bob.client.get(&path(&room_id, "state/m.room.topic")).await.expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn shared_invited_and_world_readable_visibility() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // shared: a newcomer sees history from before joining.
    let shared = create_room(&alice, json!({"preset": "public_chat"})).await;
    let early = send_text(&alice, &shared, "s1", "early").await;
    join(&bob, &shared).await.expect(200);
    assert_reads_text(&bob, &shared, &early, &alice.user_id, "early").await;
    // invited: visible from the invite on.
    let invited = create_room(
        &alice,
        json!({"preset": "private_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "invited"}}]}),
    )
    .await;
    let hidden = send_text(&alice, &invited, "i1", "before invite").await;
    alice.client.post(&path(&invited, "invite"), &json!({"user_id": bob.user_id})).await.expect(200);
    let seen = send_text(&alice, &invited, "i2", "after invite").await;
    join(&bob, &invited).await.expect(200);
    bob.client.get(&path(&invited, &format!("event/{hidden}"))).await.expect_error(404, "M_NOT_FOUND");
    assert_reads_text(&bob, &invited, &seen, &alice.user_id, "after invite").await;
    // world_readable: anyone may read without joining.
    let open = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let public_event = send_text(&alice, &open, "w1", "for everyone").await;
    let carol = server.register("carol").await;
    assert_reads_text(&carol, &open, &public_event, &alice.user_id, "for everyone").await;
    let messages = carol.client.get(&path(&open, "messages?dir=b")).await.expect(200).clone();
    assert!(messages["chunk"].as_array().unwrap().iter().any(|e| e["event_id"] == public_event.as_str()));
    carol.client.get(&path(&open, "state")).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn members_lists_with_filters_and_at() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await.expect(200);
    let checkpoint = alice.client.get(&path(&room_id, "messages?dir=b&limit=1")).await.expect(200)["start"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.client.post(&path(&room_id, "invite"), &json!({"user_id": carol.user_id})).await.expect(200);
    bob.client.post(&path(&room_id, "leave"), &json!({})).await.expect(200);
    let all = alice.client.get(&path(&room_id, "members")).await.expect(200).clone();
    assert_eq!(all["chunk"].as_array().unwrap().len(), 3);
    let joined = alice.client.get(&path(&room_id, "members?membership=join")).await.expect(200).clone();
    assert_eq!(joined["chunk"].as_array().unwrap().len(), 1);
    let not_leave =
        alice.client.get(&path(&room_id, "members?not_membership=leave")).await.expect(200).clone();
    let keys: Vec<&str> =
        not_leave["chunk"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&carol.user_id.as_str()));
    // At the checkpoint, Bob was joined and Carol not yet invited.
    let at = alice.client.get(&path(&room_id, &format!("members?at={checkpoint}"))).await.expect(200).clone();
    let at: Vec<(&str, &str)> = at["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["state_key"].as_str().unwrap(), e["content"]["membership"].as_str().unwrap()))
        .collect();
    assert!(at.contains(&(bob.user_id.as_str(), "join")), "{at:?}");
    assert!(!at.iter().any(|(user, _)| *user == carol.user_id), "{at:?}");
    let joined_members = alice.client.get(&path(&room_id, "joined_members")).await.expect(200).clone();
    assert_eq!(joined_members["joined"][&alice.user_id]["display_name"], "alice");
    alice
        .client
        .get(&path(&room_id, "members?membership=dancing"))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}
