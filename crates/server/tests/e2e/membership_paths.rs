//! Every membership change obeys the same rules whichever endpoint it comes from: a state
//! `PUT` of `m.room.member`, `createRoom`'s invite list, and the membership endpoints
//! (restricted join rules, `block_non_admin_invites`, invite rate limits, bans, unknown
//! invitees).

use myelin_test_support::{TestResponse, TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::{create_room, urlencode};

fn member_path(room_id: &str, user_id: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{user_id}")
}

async fn put_member(user: &TestUser, room_id: &str, target: &str, content: Value) -> TestResponse {
    user.client.put(&member_path(room_id, target), &content).await
}

async fn invite(user: &TestUser, room_id: &str, target: &str) -> TestResponse {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/invite");
    user.client.post(&path, &json!({"user_id": target})).await
}

async fn joined_rooms(user: &TestUser) -> Value {
    user.client.get("/_matrix/client/v3/joined_rooms").await.expect(200)["joined_rooms"].clone()
}

/// A space (public) and a room restricted to its members.
async fn restricted_room(alice: &TestUser) -> (String, String) {
    let space =
        create_room(alice, json!({"preset": "public_chat", "creation_content": {"type": "m.space"}})).await;
    let room = create_room(
        alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {
                "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]
            }}],
        }),
    )
    .await;
    (space, room)
}

#[tokio::test]
async fn state_put_join_cannot_forge_a_restricted_authoriser() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let outsider = server.register("outsider").await;
    let (space, room) = restricted_room(&alice).await;

    // /join refuses the outsider; naming a moderator as authoriser in a state PUT is no way round.
    let join =
        outsider.client.post(&format!("/_matrix/client/v3/join/{}", urlencode(&room)), &json!({})).await;
    join.expect_error(403, "M_FORBIDDEN");
    for authoriser in [alice.user_id.as_str(), "@nobody:test.local", "not a user"] {
        put_member(
            &outsider,
            &room,
            &outsider.user_id,
            json!({"membership": "join", "join_authorised_via_users_server": authoriser}),
        )
        .await
        .expect_error(403, "M_FORBIDDEN");
    }
    put_member(&outsider, &room, &outsider.user_id, json!({"membership": "join"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    alice.client.get(&member_path(&room, &outsider.user_id)).await.expect_error(404, "M_NOT_FOUND");

    // A member of the space qualifies, but still cannot name an authoriser who may not invite.
    bob.client.post(&format!("/_matrix/client/v3/join/{}", urlencode(&space)), &json!({})).await.expect(200);
    put_member(
        &bob,
        &room,
        &bob.user_id,
        json!({"membership": "join", "join_authorised_via_users_server": outsider.user_id}),
    )
    .await
    .expect_error(403, "M_FORBIDDEN");
    // Without one, the server chooses a local member who may invite.
    let event_id =
        put_member(&bob, &room, &bob.user_id, json!({"membership": "join", "displayname": "Bobby"}))
            .await
            .expect(200)["event_id"]
            .clone();
    assert!(event_id.is_string());
    let member = alice.client.get(&member_path(&room, &bob.user_id)).await.expect(200).clone();
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str());
    assert_eq!(member["displayname"], "Bobby", "a per-room display name is kept");
    // Once joined, the same content again changes nothing; a client's authoriser is dropped.
    let again = put_member(&bob, &room, &bob.user_id, member.clone()).await.expect(200).clone();
    assert_eq!(again["event_id"], event_id);
    put_member(
        &bob,
        &room,
        &bob.user_id,
        json!({"membership": "join", "displayname": "Bob", "join_authorised_via_users_server": outsider.user_id}),
    )
    .await
    .expect(200);
    let member = alice.client.get(&member_path(&room, &bob.user_id)).await.expect(200).clone();
    assert_eq!(member, json!({"membership": "join", "displayname": "Bob"}));
    server.stop().await;
}

#[tokio::test]
async fn block_non_admin_invites_applies_to_create_room_and_state_puts() {
    let server = TestServer::start_with(json!({"block_non_admin_invites": true})).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let admin = server.register_admin("admin").await;

    let refused = alice.client.post("/_matrix/client/v3/createRoom", &json!({"invite": [bob.user_id]})).await;
    refused.expect_error(403, "M_FORBIDDEN");
    assert_eq!(joined_rooms(&alice).await, json!([]), "a refused createRoom leaves no room behind");
    // Nor is an invite among `initial_state` a way round.
    let initial_invite = json!({"initial_state": [
        {"type": "m.room.member", "state_key": bob.user_id, "content": {"membership": "invite"}},
    ]});
    let refused = alice.client.post("/_matrix/client/v3/createRoom", &initial_invite).await;
    refused.expect_error(403, "M_FORBIDDEN");
    assert_eq!(joined_rooms(&alice).await, json!([]));

    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    put_member(&alice, &room, &bob.user_id, json!({"membership": "invite"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    invite(&alice, &room, &bob.user_id).await.expect_error(403, "M_FORBIDDEN");
    alice.client.get(&member_path(&room, &bob.user_id)).await.expect_error(404, "M_NOT_FOUND");

    // Server admins may still invite, on every path.
    let own = create_room(&admin, json!({"invite": [bob.user_id]})).await;
    put_member(&admin, &own, &alice.user_id, json!({"membership": "invite"})).await.expect(200);
    let member = admin.client.get(&member_path(&own, &bob.user_id)).await.expect(200).clone();
    assert_eq!(member["membership"], "invite");
    server.stop().await;
}

#[tokio::test]
async fn invite_rate_limits_apply_to_state_puts_and_create_room() {
    let server = TestServer::start_with(json!({
        "rc_invites": {
            "per_room": {"per_second": 1000, "burst_count": 1000},
            "per_user": {"per_second": 1000, "burst_count": 1000},
            "per_issuer": {"per_second": 0.001, "burst_count": 1},
        },
    }))
    .await;
    let alice = server.register("alice").await;
    let mallory = server.register("mallory").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;

    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    put_member(&alice, &room, &bob.user_id, json!({"membership": "invite"})).await.expect(200);
    put_member(&alice, &room, &carol.user_id, json!({"membership": "invite"}))
        .await
        .expect_error(429, "M_LIMIT_EXCEEDED");
    invite(&alice, &room, &carol.user_id).await.expect_error(429, "M_LIMIT_EXCEEDED");

    // Two invites at once are over Mallory's burst of one: refused whole, nothing created.
    let refused = mallory
        .client
        .post("/_matrix/client/v3/createRoom", &json!({"invite": [bob.user_id, carol.user_id]}))
        .await;
    refused.expect_error(429, "M_LIMIT_EXCEEDED");
    assert!(refused.json["retry_after_ms"].is_u64());
    assert_eq!(joined_rooms(&mallory).await, json!([]));
    // Nothing was counted for the refused batch: one invite still fits.
    let own = create_room(&mallory, json!({"invite": [carol.user_id]})).await;
    let member = mallory.client.get(&member_path(&own, &carol.user_id)).await.expect(200).clone();
    assert_eq!(member["membership"], "invite");
    mallory
        .client
        .post("/_matrix/client/v3/createRoom", &json!({"invite": [bob.user_id]}))
        .await
        .expect_error(429, "M_LIMIT_EXCEEDED");
    server.stop().await;
}

#[tokio::test]
async fn banned_users_get_the_same_answer_from_a_state_put_as_from_join() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let join_path = format!("/_matrix/client/v3/rooms/{room}/join");
    bob.client.post(&join_path, &json!({})).await.expect(200);
    // A state PUT of `ban` is a ban.
    put_member(&alice, &room, &bob.user_id, json!({"membership": "ban", "reason": "spam"})).await.expect(200);

    let by_join = bob.client.post(&join_path, &json!({})).await;
    by_join.expect_error(403, "M_FORBIDDEN");
    let by_state = put_member(&bob, &room, &bob.user_id, json!({"membership": "join"})).await;
    by_state.expect_error(403, "M_FORBIDDEN");
    assert_eq!(by_state.json, by_join.json, "one rule, one answer");
    let knock = put_member(&bob, &room, &bob.user_id, json!({"membership": "knock"})).await;
    knock.expect_error(403, "M_FORBIDDEN");
    assert_eq!(knock.json, by_join.json);
    // Leaving on a banned user's behalf is an unban (ban power needed).
    put_member(&alice, &room, &bob.user_id, json!({"membership": "leave"})).await.expect(200);
    bob.client.post(&join_path, &json!({})).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn inviting_an_unknown_local_user_fails_alike_on_every_path() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({"preset": "private_chat"})).await;
    let ghost = "@ghost:test.local";

    let by_invite = invite(&alice, &room, ghost).await;
    by_invite.expect_error(404, "M_NOT_FOUND");
    let by_state = put_member(&alice, &room, ghost, json!({"membership": "invite"})).await;
    by_state.expect_error(404, "M_NOT_FOUND");
    assert_eq!(by_state.json, by_invite.json);
    let by_create = alice.client.post("/_matrix/client/v3/createRoom", &json!({"invite": [ghost]})).await;
    by_create.expect_error(404, "M_NOT_FOUND");
    assert_eq!(by_create.json, by_invite.json);
    let initial_invite = json!({"initial_state": [
        {"type": "m.room.member", "state_key": ghost, "content": {"membership": "invite"}},
    ]});
    let by_initial_state = alice.client.post("/_matrix/client/v3/createRoom", &initial_invite).await;
    by_initial_state.expect_error(404, "M_NOT_FOUND");
    assert_eq!(by_initial_state.json, by_invite.json);
    assert_eq!(joined_rooms(&alice).await, json!([room]), "the refused createRooms made no room");

    // A remote invitee whose server cannot be reached: the same answer everywhere too.
    let remote = "@someone:elsewhere.example";
    let by_invite = invite(&alice, &room, remote).await;
    by_invite.expect_error(502, "M_UNKNOWN");
    let by_state = put_member(&alice, &room, remote, json!({"membership": "invite"})).await;
    assert_eq!(by_state.json, by_invite.json);
    let by_create = alice.client.post("/_matrix/client/v3/createRoom", &json!({"invite": [remote]})).await;
    // As Synapse: the room is made first, then the failed remote invite fails the request.
    assert_eq!((by_create.status, by_create.json), (502, by_invite.json));
    server.stop().await;
}

#[tokio::test]
async fn state_puts_of_member_events_are_checked_like_the_endpoints() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;

    // Joining someone else, unknown memberships, state keys that are no user ID.
    put_member(&alice, &room, &bob.user_id, json!({"membership": "join"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    put_member(&bob, &room, &bob.user_id, json!({"membership": "party"}))
        .await
        .expect_error(400, "M_BAD_JSON");
    put_member(&bob, &room, &bob.user_id, json!({"membership": 1})).await.expect_error(400, "M_BAD_JSON");
    put_member(&bob, &room, "not-a-user", json!({"membership": "join"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    put_member(&bob, &room, &bob.user_id, json!({"membership": "join", "displayname": 7}))
        .await
        .expect_error(400, "M_BAD_JSON");
    // Leaving a room one is not in, and kicking someone who is not in it.
    put_member(&bob, &room, &bob.user_id, json!({"membership": "leave"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    put_member(&alice, &room, &bob.user_id, json!({"membership": "leave"}))
        .await
        .expect_error(403, "M_FORBIDDEN");

    // A join fills the profile the client left out; leaving someone else out is a kick.
    let displayname = format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id);
    bob.client.put(&displayname, &json!({"displayname": "Bob B"})).await.expect(200);
    put_member(&bob, &room, &bob.user_id, json!({"membership": "join"})).await.expect(200);
    let member = alice.client.get(&member_path(&room, &bob.user_id)).await.expect(200).clone();
    assert_eq!(member, json!({"membership": "join", "displayname": "Bob B"}));
    put_member(&alice, &room, &bob.user_id, json!({"membership": "leave", "reason": "bye"}))
        .await
        .expect(200);
    let member = alice.client.get(&member_path(&room, &bob.user_id)).await.expect(200).clone();
    assert_eq!(member, json!({"membership": "leave", "reason": "bye"}));
    server.stop().await;
}
