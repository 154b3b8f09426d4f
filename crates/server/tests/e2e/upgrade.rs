//! Room upgrades: the new room's create event and copied state, the tombstone and restricted
//! power levels in the old room, aliases and the directory listing moving over, v12 creators.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::relations::join;
use crate::rooms::create_room;

async fn upgrade(user: &TestUser, room_id: &str, body: Value) -> String {
    let response = user.client.post(&format!("/_matrix/client/v3/rooms/{room_id}/upgrade"), &body).await;
    response.expect(200)["replacement_room"].as_str().expect("replacement_room").to_owned()
}

/// The room's state as events, by `(type, state_key)`.
async fn state(user: &TestUser, room_id: &str) -> std::collections::HashMap<(String, String), Value> {
    let events =
        user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state")).await.expect(200).clone();
    events
        .as_array()
        .expect("state is a list")
        .iter()
        .map(|e| {
            let key = (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned());
            (key, e.clone())
        })
        .collect()
}

fn content<'a>(
    state: &'a std::collections::HashMap<(String, String), Value>,
    kind: &str,
    key: &str,
) -> &'a Value {
    &state.get(&(kind.to_owned(), key.to_owned())).unwrap_or_else(|| panic!("{kind}/{key} missing"))["content"]
}

#[tokio::test]
async fn upgrade_from_v10_to_v11_copies_state_and_retires_the_old_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let space = "!space:test.local";
    let room_id = create_room(
        &alice,
        json!({
            "room_version": "10",
            "preset": "public_chat",
            "visibility": "public",
            "room_alias_name": "upgrademe",
            "name": "Old name",
            "topic": "Old topic",
            "power_level_content_override": {
                "users": {alice.user_id.as_str(): 100, "@dave:test.local": 50},
                "events": {"org.example.custom": 60},
            },
            "initial_state": [
                {"type": "m.room.avatar", "content": {"url": "mxc://test.local/avatar"}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
                {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
                {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                {"type": "m.room.server_acl", "content": {"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": false}},
                {"type": "m.space.parent", "state_key": space, "content": {"via": ["test.local"], "canonical": true}},
                {"type": "m.space.child", "state_key": "!child:test.local", "content": {"via": ["test.local"]}},
                {"type": "m.space.child", "state_key": "!removed:test.local", "content": {}},
            ],
        }),
    )
    .await;
    join(&bob, &room_id).await;
    let mallory = "@mallory:test.local";
    alice
        .client
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/ban"),
            &json!({"user_id": mallory, "reason": "spam"}),
        )
        .await
        .expect(200);
    let old_state = state(&alice, &room_id).await;

    let new_room = upgrade(&alice, &room_id, json!({"new_version": "11"})).await;
    assert_ne!(new_room, room_id);
    assert!(new_room.ends_with(":test.local"), "v11 room IDs name the server: {new_room}");

    // The old room: a tombstone pointing at the new room, ordinary members silenced.
    let old = state(&alice, &room_id).await;
    let tombstone = &old[&("m.room.tombstone".to_owned(), String::new())];
    assert_eq!(tombstone["sender"], alice.user_id.as_str());
    assert_eq!(tombstone["content"]["replacement_room"], new_room.as_str());
    assert!(tombstone["content"]["body"].is_string());
    let old_levels = content(&old, "m.room.power_levels", "");
    assert_eq!(old_levels["events_default"], 50);
    assert_eq!(old_levels["invite"], 50);
    assert_eq!(old_levels["users"], json!({alice.user_id.as_str(): 100, "@dave:test.local": 50}));
    assert_eq!(old_levels["events"]["org.example.custom"], 60, "the rest is kept");
    assert_eq!(content(&old, "m.room.canonical_alias", ""), &json!({}), "the local alias moved");
    bob.client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/late"), &json!({"body": "hi"}))
        .await
        .expect_error(403, "M_FORBIDDEN");

    // The new room.
    let new = state(&alice, &new_room).await;
    let create = &new[&("m.room.create".to_owned(), String::new())];
    assert_eq!(create["sender"], alice.user_id.as_str());
    assert_eq!(create["content"]["room_version"], "11");
    assert!(create["content"].get("creator").is_none(), "v11 drops `creator`");
    assert_eq!(
        create["content"]["predecessor"],
        json!({"room_id": room_id, "event_id": tombstone["event_id"]}),
        "the predecessor names the old room and its tombstone"
    );
    for (kind, key) in [
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.avatar", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.encryption", ""),
        ("m.room.server_acl", ""),
        ("m.space.parent", space),
        ("m.space.child", "!child:test.local"),
    ] {
        assert_eq!(content(&new, kind, key), content(&old_state, kind, key), "{kind} copied");
    }
    assert!(!new.contains_key(&("m.space.child".to_owned(), "!removed:test.local".to_owned())));
    assert_eq!(content(&new, "m.room.member", mallory)["membership"], "ban", "bans carry over");
    assert_eq!(content(&new, "m.room.member", mallory)["reason"], "spam");
    assert_eq!(content(&new, "m.room.member", alice.user_id.as_str())["membership"], "join");
    assert!(
        !new.contains_key(&("m.room.member".to_owned(), bob.user_id.clone())),
        "others follow by themselves"
    );
    assert_eq!(
        content(&new, "m.room.power_levels", ""),
        content(&old_state, "m.room.power_levels", ""),
        "the old power levels, as they were before the upgrade"
    );
    assert_eq!(content(&new, "m.room.canonical_alias", ""), &json!({"alias": "#upgrademe:test.local"}));

    // The alias and the directory listing moved.
    let joined = carol.client.post("/_matrix/client/v3/join/%23upgrademe:test.local", &json!({})).await;
    assert_eq!(joined.expect(200)["room_id"], new_room.as_str());
    let store = server.services().store();
    assert!(store.get_room(&new_room).await.unwrap().unwrap().is_public);
    assert!(!store.get_room(&room_id).await.unwrap().unwrap().is_public);

    // Asking again (a double submit) answers with the same replacement.
    assert_eq!(upgrade(&alice, &room_id, json!({"new_version": "11"})).await, new_room);
    server.stop().await;
}

#[tokio::test]
async fn upgrade_from_v11_to_v12_applies_the_creator_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = create_room(
        &alice,
        json!({
            "room_version": "11",
            "preset": "public_chat",
            "power_level_content_override": {
                "users": {alice.user_id.as_str(): 100, bob.user_id.as_str(): 100, carol.user_id.as_str(): 50},
            },
        }),
    )
    .await;
    join(&bob, &room_id).await;
    join(&carol, &room_id).await;
    let join_rules = json!({
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": "!space:test.local"}],
    });
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.join_rules"), &join_rules)
        .await
        .expect(200);

    let new_room =
        upgrade(&alice, &room_id, json!({"new_version": "12", "additional_creators": [bob.user_id]})).await;
    assert!(!new_room.contains(':'), "v12 room IDs are the create event's hash: {new_room}");

    let new = state(&alice, &new_room).await;
    let create = &new[&("m.room.create".to_owned(), String::new())];
    assert_eq!(create["content"]["room_version"], "12");
    assert_eq!(
        create["content"]["predecessor"],
        json!({"room_id": room_id}),
        "no tombstone ID: the tombstone names the new room, whose ID derives from this event"
    );
    assert_eq!(create["content"]["additional_creators"], json!([bob.user_id]));
    assert_eq!(format!("!{}", &create["event_id"].as_str().unwrap()[1..]), new_room);
    let levels = content(&new, "m.room.power_levels", "");
    assert_eq!(levels["users"], json!({carol.user_id.as_str(): 50}), "creators are never listed in v12");
    assert_eq!(content(&new, "m.room.join_rules", ""), &join_rules, "with the allow list");

    let old = state(&alice, &room_id).await;
    assert_eq!(content(&old, "m.room.tombstone", "")["replacement_room"], new_room.as_str());
    assert_eq!(content(&old, "m.room.power_levels", "")["events_default"], 50);

    // Both creators have unlimited power in the new room (bob may join: invited by alice).
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{new_room}/invite"), &json!({"user_id": bob.user_id}))
        .await
        .expect(200);
    join(&bob, &new_room).await;
    bob.client
        .put(&format!("/_matrix/client/v3/rooms/{new_room}/state/m.room.name"), &json!({"name": "By bob"}))
        .await
        .expect(200);
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{new_room}/state/m.room.power_levels"), levels)
        .await
        .expect(200);
    server.stop().await;
}

#[tokio::test]
async fn upgrade_refusals() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;
    let path = format!("/_matrix/client/v3/rooms/{room_id}/upgrade");

    alice
        .client
        .post(&path, &json!({"new_version": "99"}))
        .await
        .expect_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    alice.client.post(&path, &json!({})).await.expect_error(400, "M_MISSING_PARAM");
    alice.client.post(&path, &json!({"new_version": 11})).await.expect_error(400, "M_BAD_JSON");
    let bad_creators = json!({"new_version": "12", "additional_creators": ["not-a-user"]});
    alice.client.post(&path, &bad_creators).await.expect_error(400, "M_BAD_JSON");
    // Joined but without the power to send m.room.tombstone; not joined at all.
    bob.client.post(&path, &json!({"new_version": "11"})).await.expect_error(403, "M_FORBIDDEN");
    carol.client.post(&path, &json!({"new_version": "11"})).await.expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .post("/_matrix/client/v3/rooms/!unknown:test.local/upgrade", &json!({"new_version": "11"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    // Nothing happened to the room.
    alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.tombstone"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    server.client().post(&path, &json!({"new_version": "11"})).await.expect_error(401, "M_MISSING_TOKEN");

    // While one upgrade is fresh, another user's is refused.
    let levels = alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels"))
        .await
        .expect(200)
        .clone();
    let mut raised = levels.clone();
    raised["users"][bob.user_id.as_str()] = json!(100);
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels"), &raised)
        .await
        .expect(200);
    upgrade(&alice, &room_id, json!({"new_version": "11"})).await;
    let second = bob.client.post(&path, &json!({"new_version": "11"})).await;
    second.expect_error(400, "M_UNKNOWN");
    server.stop().await;
}

#[tokio::test]
async fn upgrade_by_a_moderator_raises_then_restores_their_level() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(
        &alice,
        json!({
            "preset": "public_chat",
            "power_level_content_override": {
                "users": {alice.user_id.as_str(): 100, bob.user_id.as_str(): 75},
                "events": {"m.room.tombstone": 75, "m.room.power_levels": 100, "m.room.history_visibility": 100},
            },
            "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}],
        }),
    )
    .await;
    join(&bob, &room_id).await;
    let old_state = state(&alice, &room_id).await;

    let new_room = upgrade(&bob, &room_id, json!({"new_version": "11"})).await;
    let new = state(&bob, &new_room).await;
    // Copying history visibility needed 100: bob had that level while the room was built...
    assert_eq!(content(&new, "m.room.history_visibility", ""), &json!({"history_visibility": "joined"}));
    // ...and is back to 75 now.
    assert_eq!(content(&new, "m.room.power_levels", ""), content(&old_state, "m.room.power_levels", ""));
    assert_eq!(content(&new, "m.room.power_levels", "")["users"][bob.user_id.as_str()], 75);
    // In the old room bob may send the tombstone but not power levels (Synapse skips them too).
    let old = state(&alice, &room_id).await;
    assert_eq!(content(&old, "m.room.tombstone", "")["replacement_room"], new_room.as_str());
    assert_eq!(content(&old, "m.room.power_levels", ""), content(&old_state, "m.room.power_levels", ""));
    server.stop().await;
}
