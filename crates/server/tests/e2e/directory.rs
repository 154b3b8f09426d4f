//! The room directory: aliases, publication, `/publicRooms`.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::create_room;

/// The path of an alias's directory entry (`#` escaped).
fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", alias.replace('#', "%23"))
}

fn visibility_path(room_id: &str) -> String {
    format!("/_matrix/client/v3/directory/list/room/{room_id}")
}

async fn join(user: &TestUser, room_id: &str) {
    user.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
}

async fn canonical_alias(user: &TestUser, room_id: &str) -> Value {
    user.client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.canonical_alias"))
        .await
        .expect(200)
        .clone()
}

async fn local_aliases(user: &TestUser, room_id: &str) -> Value {
    user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/aliases")).await.expect(200)["aliases"]
        .clone()
}

#[tokio::test]
async fn directory_aliases_are_created_resolved_listed_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"room_alias_name": "first"})).await;

    alice.client.put(&alias_path("#second:test.local"), &json!({"room_id": room_id})).await.expect(200);
    assert_eq!(
        alice.client.put(&alias_path("#third:test.local"), &json!({"room_id": room_id})).await.expect(200),
        &json!({})
    );
    // Anyone may resolve an alias, without authentication.
    let resolved = server.client().get(&alias_path("#second:test.local")).await.expect(200).clone();
    assert_eq!(resolved, json!({"room_id": room_id, "servers": ["test.local"]}));

    // Taken aliases are refused with 409 M_UNKNOWN, whatever room they point to.
    let other_room = create_room(&alice, json!({})).await;
    alice
        .client
        .put(&alias_path("#second:test.local"), &json!({"room_id": other_room}))
        .await
        .expect_error(409, "M_UNKNOWN");
    assert_eq!(
        server.client().get(&alias_path("#second:test.local")).await.expect(200)["room_id"],
        room_id.as_str()
    );

    // The room's local aliases, sorted, including the one createRoom made.
    assert_eq!(
        local_aliases(&alice, &room_id).await,
        json!(["#first:test.local", "#second:test.local", "#third:test.local"])
    );
    assert_eq!(local_aliases(&alice, &other_room).await, json!([]));
    // Only those who can read the room may list them.
    bob.client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/aliases"))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server
        .client()
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/aliases"))
        .await
        .expect_error(401, "M_MISSING_TOKEN");

    assert_eq!(alice.client.delete(&alias_path("#second:test.local")).await.expect(200), &json!({}));
    server.client().get(&alias_path("#second:test.local")).await.expect_error(404, "M_NOT_FOUND");
    alice.client.delete(&alias_path("#second:test.local")).await.expect_error(404, "M_NOT_FOUND");
    assert_eq!(local_aliases(&alice, &room_id).await, json!(["#first:test.local", "#third:test.local"]));
    // A deleted alias can be taken again.
    alice.client.put(&alias_path("#second:test.local"), &json!({"room_id": other_room})).await.expect(200);
    assert_eq!(
        server.client().get(&alias_path("#second:test.local")).await.expect(200)["room_id"],
        other_room.as_str()
    );
    server.stop().await;
}

#[tokio::test]
async fn directory_alias_requests_are_checked() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({})).await;
    let put = |alias: &'static str, body: Value| {
        let client = alice.client.clone();
        async move { client.put(&alias_path(alias), &body).await }
    };

    put("no-server-part", json!({"room_id": room_id})).await.expect_error(400, "M_INVALID_PARAM");
    put("#white space:test.local", json!({"room_id": room_id})).await.expect_error(400, "M_INVALID_PARAM");
    // Aliases of other servers cannot be made here.
    put("#elsewhere:other.example", json!({"room_id": room_id})).await.expect_error(400, "M_INVALID_PARAM");
    put("#ok:test.local", json!({"room_id": "!unknown:test.local"})).await.expect_error(404, "M_NOT_FOUND");
    put("#ok:test.local", json!({"room_id": "not a room id"})).await.expect_error(400, "M_INVALID_PARAM");
    put("#ok:test.local", json!({})).await.expect_error(400, "M_BAD_JSON");
    server
        .client()
        .put(&alias_path("#ok:test.local"), &json!({"room_id": room_id}))
        .await
        .expect_error(401, "M_MISSING_TOKEN");
    // require_membership_for_aliases is on by default: outsiders cannot name the room.
    bob.client
        .put(&alias_path("#bobs:test.local"), &json!({"room_id": room_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.client().get(&alias_path("#bobs:test.local")).await.expect_error(404, "M_NOT_FOUND");
    // Server admins are spared the membership requirement.
    let admin = server.register_admin("admin").await;
    admin.client.put(&alias_path("#admins:test.local"), &json!({"room_id": room_id})).await.expect(200);

    server.client().get(&alias_path("not-an-alias")).await.expect_error(400, "M_INVALID_PARAM");
    // Another server's alias is asked of that server; one that cannot be reached is 502 (as
    // Synapse answers).
    server.client().get(&alias_path("#room:other.example")).await.expect_error(502, "M_UNKNOWN");
    alice.client.delete(&alias_path("no-server-part")).await.expect_error(400, "M_INVALID_PARAM");
    server.client().delete(&alias_path("#admins:test.local")).await.expect_error(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn directory_alias_creation_follows_the_configured_rules() {
    let server = TestServer::start_with(json!({
        "require_membership_for_aliases": false,
        "alias_creation_rules": [
            {"user_id": "@alice:*", "alias": "#allowed-*", "action": "allow"},
            {"action": "deny"},
        ],
    }))
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({})).await;

    alice.client.put(&alias_path("#allowed-1:test.local"), &json!({"room_id": room_id})).await.expect(200);
    alice
        .client
        .put(&alias_path("#other:test.local"), &json!({"room_id": room_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Bob is not in the room but membership is not required here; the rules still deny him.
    bob.client
        .put(&alias_path("#allowed-2:test.local"), &json!({"room_id": room_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    assert_eq!(local_aliases(&alice, &room_id).await, json!(["#allowed-1:test.local"]));
    server.stop().await;

    // Without rules, a non-member may alias a room when membership is not required.
    let server = TestServer::start_with(json!({"require_membership_for_aliases": false})).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({})).await;
    bob.client.put(&alias_path("#bobs:test.local"), &json!({"room_id": room_id})).await.expect(200);
    assert_eq!(
        server.client().get(&alias_path("#bobs:test.local")).await.expect(200)["room_id"],
        room_id.as_str()
    );
    server.stop().await;
}

#[tokio::test]
async fn directory_alias_deletion_needs_creator_admin_or_power() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let admin = server.register_admin("admin").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;
    join(&carol, &room_id).await;

    for alias in ["#bob1:test.local", "#bob2:test.local"] {
        bob.client.put(&alias_path(alias), &json!({"room_id": room_id})).await.expect(200);
    }
    alice.client.put(&alias_path("#alice1:test.local"), &json!({"room_id": room_id})).await.expect(200);
    alice.client.put(&alias_path("#alice2:test.local"), &json!({"room_id": room_id})).await.expect(200);

    // Bob (power 0) may delete his own alias but not Alice's; Carol neither.
    bob.client.delete(&alias_path("#bob1:test.local")).await.expect(200);
    bob.client.delete(&alias_path("#alice1:test.local")).await.expect_error(403, "M_FORBIDDEN");
    carol.client.delete(&alias_path("#bob2:test.local")).await.expect_error(403, "M_FORBIDDEN");
    // Alice may send m.room.canonical_alias, so she may delete Bob's.
    alice.client.delete(&alias_path("#bob2:test.local")).await.expect(200);
    // A server admin may delete any alias, without being in the room.
    admin.client.delete(&alias_path("#alice1:test.local")).await.expect(200);
    // Carol gets the power to send m.room.canonical_alias.
    let mut levels = alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels"))
        .await
        .expect(200)
        .clone();
    levels["users"][carol.user_id.as_str()] = json!(50);
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels"), &levels)
        .await
        .expect(200);
    carol.client.delete(&alias_path("#alice2:test.local")).await.expect(200);
    assert_eq!(local_aliases(&alice, &room_id).await, json!([]));
    server.stop().await;
}

#[tokio::test]
async fn directory_alias_deletion_updates_the_canonical_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "main"})).await;
    join(&bob, &room_id).await;
    alice.client.put(&alias_path("#alt:test.local"), &json!({"room_id": room_id})).await.expect(200);
    bob.client.put(&alias_path("#bobs:test.local"), &json!({"room_id": room_id})).await.expect(200);
    let content = json!({
        "alias": "#main:test.local",
        "alt_aliases": ["#alt:test.local", "#bobs:test.local"],
    });
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.canonical_alias"), &content)
        .await
        .expect(200);

    alice.client.delete(&alias_path("#main:test.local")).await.expect(200);
    assert_eq!(
        canonical_alias(&alice, &room_id).await,
        json!({"alt_aliases": ["#alt:test.local", "#bobs:test.local"]})
    );
    // Bob created #bobs, so he may delete it, but he may not send m.room.canonical_alias: the
    // deletion stands and the event is left as it is.
    bob.client.delete(&alias_path("#bobs:test.local")).await.expect(200);
    server.client().get(&alias_path("#bobs:test.local")).await.expect_error(404, "M_NOT_FOUND");
    assert_eq!(
        canonical_alias(&alice, &room_id).await,
        json!({"alt_aliases": ["#alt:test.local", "#bobs:test.local"]})
    );
    // The last alt alias goes with the key.
    alice.client.put(&alias_path("#bobs:test.local"), &json!({"room_id": room_id})).await.expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.canonical_alias"),
            &json!({"alt_aliases": ["#alt:test.local"]}),
        )
        .await
        .expect(200);
    alice.client.delete(&alias_path("#alt:test.local")).await.expect(200);
    assert_eq!(canonical_alias(&alice, &room_id).await, json!({}));
    // An alias not named in the event leaves it alone.
    let state_before = alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.canonical_alias?format=event"))
        .await
        .expect(200)["event_id"]
        .clone();
    alice.client.delete(&alias_path("#bobs:test.local")).await.expect(200);
    let state_after = alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.canonical_alias?format=event"))
        .await
        .expect(200)["event_id"]
        .clone();
    assert_eq!(state_before, state_after);
    server.stop().await;
}

#[tokio::test]
async fn directory_visibility_is_read_by_anyone_and_set_by_moderators() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let admin = server.register_admin("admin").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;

    let anonymous = server.client();
    assert_eq!(
        anonymous.get(&visibility_path(&room_id)).await.expect(200),
        &json!({"visibility": "private"})
    );
    assert_eq!(
        alice.client.put(&visibility_path(&room_id), &json!({"visibility": "public"})).await.expect(200),
        &json!({})
    );
    assert_eq!(anonymous.get(&visibility_path(&room_id)).await.expect(200), &json!({"visibility": "public"}));
    // Bob is in the room without power; Carol is not in it.
    bob.client
        .put(&visibility_path(&room_id), &json!({"visibility": "private"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    carol
        .client
        .put(&visibility_path(&room_id), &json!({"visibility": "private"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    assert_eq!(anonymous.get(&visibility_path(&room_id)).await.expect(200)["visibility"], "public");
    // Admins may, from outside the room.
    admin.client.put(&visibility_path(&room_id), &json!({"visibility": "private"})).await.expect(200);
    assert_eq!(anonymous.get(&visibility_path(&room_id)).await.expect(200)["visibility"], "private");
    // `visibility` defaults to public.
    alice.client.put(&visibility_path(&room_id), &json!({})).await.expect(200);
    assert_eq!(anonymous.get(&visibility_path(&room_id)).await.expect(200)["visibility"], "public");

    alice
        .client
        .put(&visibility_path(&room_id), &json!({"visibility": "secret"}))
        .await
        .expect_error(400, "M_BAD_JSON");
    anonymous.get(&visibility_path("!unknown:test.local")).await.expect_error(404, "M_NOT_FOUND");
    alice
        .client
        .put(&visibility_path("!unknown:test.local"), &json!({"visibility": "public"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    anonymous.get(&visibility_path("not-a-room")).await.expect_error(400, "M_INVALID_PARAM");
    anonymous
        .put(&visibility_path(&room_id), &json!({"visibility": "private"}))
        .await
        .expect_error(401, "M_MISSING_TOKEN");
    // createRoom's `visibility: public` publishes the room.
    let published = create_room(&alice, json!({"visibility": "public"})).await;
    assert_eq!(anonymous.get(&visibility_path(&published)).await.expect(200)["visibility"], "public");
    server.stop().await;
}

#[tokio::test]
async fn directory_publication_follows_the_configured_rules() {
    let server = TestServer::start_with(json!({
        "room_list_publication_rules": [
            {"alias": "#public-*", "action": "allow"},
            {"action": "deny"},
        ],
    }))
    .await;
    let alice = server.register("alice").await;
    let unnamed = create_room(&alice, json!({"preset": "public_chat"})).await;
    alice
        .client
        .put(&visibility_path(&unnamed), &json!({"visibility": "public"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Unpublishing is never refused by the rules.
    alice.client.put(&visibility_path(&unnamed), &json!({"visibility": "private"})).await.expect(200);
    let named = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "public-1"})).await;
    alice.client.put(&visibility_path(&named), &json!({"visibility": "public"})).await.expect(200);
    assert_eq!(server.client().get(&visibility_path(&named)).await.expect(200)["visibility"], "public");
    assert_eq!(server.client().get(&visibility_path(&unnamed)).await.expect(200)["visibility"], "private");
    server.stop().await;

    let server = TestServer::start_with(json!({"enable_room_list_search": false})).await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    alice
        .client
        .put(&visibility_path(&room_id), &json!({"visibility": "public"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    let listed = alice.client.get("/_matrix/client/v3/publicRooms").await.expect(200).clone();
    assert_eq!(listed, json!({"chunk": [], "total_room_count_estimate": 0}));
    server.stop().await;
}

fn chunk_ids(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn public_rooms_lists_published_open_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let big = create_room(
        &alice,
        json!({
            "visibility": "public",
            "preset": "public_chat",
            "name": "Big Room",
            "topic": "Everything about Cheese",
            "room_alias_name": "big",
            "initial_state": [
                {"type": "m.room.avatar", "content": {"url": "mxc://test.local/avatar"}},
                {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
            ],
        }),
    )
    .await;
    join(&bob, &big).await;
    join(&carol, &big).await;
    let space = create_room(
        &bob,
        json!({
            "visibility": "public",
            "preset": "public_chat",
            "name": "A Space",
            "creation_content": {"type": "m.space"},
        }),
    )
    .await;
    join(&carol, &space).await;
    let plain = create_room(&carol, json!({"visibility": "public", "preset": "public_chat"})).await;
    // Published but invite-only and not world-readable: not listed.
    let _private = create_room(&alice, json!({"visibility": "public", "preset": "private_chat"})).await;
    // Public but not published: not listed.
    let _unpublished = create_room(&alice, json!({"preset": "public_chat", "name": "Big hidden"})).await;
    // Published and knockable: listed.
    let knock = create_room(
        &alice,
        json!({
            "visibility": "public",
            "preset": "private_chat",
            "name": "Knock knock",
            "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
        }),
    )
    .await;
    // Published but empty (everyone left): not listed.
    let empty = create_room(&bob, json!({"visibility": "public", "preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/rooms/{empty}/leave"), &json!({})).await.expect(200);

    let listed = alice.client.get("/_matrix/client/v3/publicRooms").await.expect(200).clone();
    // Most members first; ties by room ID, descending (as Synapse).
    let mut singles = vec![plain.clone(), knock.clone()];
    singles.sort();
    singles.reverse();
    let mut expected = vec![big.clone(), space.clone()];
    expected.extend(singles);
    assert_eq!(chunk_ids(&listed), expected);
    assert_eq!(listed["total_room_count_estimate"], 4);
    assert!(listed.get("next_batch").is_none() && listed.get("prev_batch").is_none(), "{listed}");
    assert_eq!(
        listed["chunk"][0],
        json!({
            "room_id": big,
            "num_joined_members": 3,
            "world_readable": true,
            "guest_can_join": true,
            "name": "Big Room",
            "topic": "Everything about Cheese",
            "canonical_alias": "#big:test.local",
            "avatar_url": "mxc://test.local/avatar",
            "join_rule": "public",
        })
    );
    assert_eq!(
        listed["chunk"][1],
        json!({
            "room_id": space,
            "num_joined_members": 2,
            "world_readable": false,
            "guest_can_join": false,
            "name": "A Space",
            "join_rule": "public",
            "room_type": "m.space",
        })
    );
    let knock_entry =
        listed["chunk"].as_array().unwrap().iter().find(|r| r["room_id"] == knock.as_str()).unwrap();
    assert_eq!(knock_entry["join_rule"], "knock");

    // POST: filters.
    let search = |body: Value| {
        let client = bob.client.clone();
        async move { client.post("/_matrix/client/v3/publicRooms", &body).await.expect(200).clone() }
    };
    assert_eq!(
        chunk_ids(&search(json!({"filter": {"generic_search_term": "big room"}})).await),
        vec![big.clone()]
    );
    assert_eq!(
        chunk_ids(&search(json!({"filter": {"generic_search_term": "CHEESE"}})).await),
        vec![big.clone()]
    );
    assert_eq!(
        chunk_ids(&search(json!({"filter": {"generic_search_term": "#BIG:"}})).await),
        vec![big.clone()]
    );
    let by_id = search(json!({"filter": {"generic_search_term": plain.to_uppercase()}})).await;
    assert_eq!(chunk_ids(&by_id), vec![plain.clone()]);
    assert_eq!(
        chunk_ids(&search(json!({"filter": {"generic_search_term": "no such thing"}})).await).len(),
        0
    );
    let spaces = search(json!({"filter": {"room_types": ["m.space"]}})).await;
    assert_eq!(chunk_ids(&spaces), vec![space.clone()]);
    assert_eq!(spaces["total_room_count_estimate"], 1);
    let untyped = search(json!({"filter": {"room_types": [null]}})).await;
    assert_eq!(chunk_ids(&untyped), [&expected[0], &expected[2], &expected[3]].map(|s| s.clone()));
    let both = search(json!({"filter": {"room_types": [null, "m.space"]}})).await;
    assert_eq!(chunk_ids(&both), expected);
    let all = search(json!({"filter": {}, "include_all_networks": true})).await;
    assert_eq!(chunk_ids(&all), expected);
    // No application service publishes third-party lists yet.
    let network = search(json!({"third_party_instance_id": "irc"})).await;
    assert_eq!(chunk_ids(&network).len(), 0);
    bob.client
        .post(
            "/_matrix/client/v3/publicRooms",
            &json!({"include_all_networks": true, "third_party_instance_id": "irc"}),
        )
        .await
        .expect_error(400, "M_UNKNOWN");
    bob.client
        .post("/_matrix/client/v3/publicRooms", &json!({"filter": {"room_types": "m.space"}}))
        .await
        .expect_error(400, "M_BAD_JSON");

    // Unpublishing removes a room.
    alice.client.put(&visibility_path(&big), &json!({"visibility": "private"})).await.expect(200);
    let listed = alice.client.get("/_matrix/client/v3/publicRooms").await.expect(200).clone();
    assert!(!chunk_ids(&listed).contains(&big));
    assert_eq!(listed["total_room_count_estimate"], 3);

    // Authentication is required by default, for GET and POST.
    server.client().get("/_matrix/client/v3/publicRooms").await.expect_error(401, "M_MISSING_TOKEN");
    server
        .client()
        .post("/_matrix/client/v3/publicRooms", &json!({}))
        .await
        .expect_error(401, "M_MISSING_TOKEN");
    alice.client.get("/_matrix/client/v3/publicRooms?limit=-1").await.expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn public_rooms_paginate_forwards_and_backwards() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut rooms = Vec::new();
    for index in 0..5 {
        rooms.push(
            create_room(&alice, json!({"visibility": "public", "name": format!("Room {index}")})).await,
        );
    }
    // One bigger room goes first.
    join(&bob, &rooms[2]).await;
    let mut expected = vec![rooms[2].clone()];
    let mut rest: Vec<String> = rooms.iter().filter(|r| **r != rooms[2]).cloned().collect();
    rest.sort();
    rest.reverse();
    expected.extend(rest);

    let first = alice.client.get("/_matrix/client/v3/publicRooms?limit=2").await.expect(200).clone();
    assert_eq!(chunk_ids(&first), expected[0..2]);
    assert!(first.get("prev_batch").is_none());
    assert_eq!(first["total_room_count_estimate"], 5);
    let next = first["next_batch"].as_str().expect("next_batch");
    let second = alice
        .client
        .post("/_matrix/client/v3/publicRooms", &json!({"limit": 2, "since": next}))
        .await
        .expect(200)
        .clone();
    assert_eq!(chunk_ids(&second), expected[2..4]);
    let third = alice
        .client
        .get(&format!(
            "/_matrix/client/v3/publicRooms?limit=2&since={}",
            second["next_batch"].as_str().unwrap()
        ))
        .await
        .expect(200)
        .clone();
    assert_eq!(chunk_ids(&third), expected[4..5]);
    assert!(third.get("next_batch").is_none(), "{third}");
    // Back from the last page.
    let back = alice
        .client
        .get(&format!(
            "/_matrix/client/v3/publicRooms?limit=2&since={}",
            third["prev_batch"].as_str().unwrap()
        ))
        .await
        .expect(200)
        .clone();
    assert_eq!(chunk_ids(&back), expected[2..4]);
    let start = alice
        .client
        .get(&format!(
            "/_matrix/client/v3/publicRooms?limit=2&since={}",
            back["prev_batch"].as_str().unwrap()
        ))
        .await
        .expect(200)
        .clone();
    assert_eq!(chunk_ids(&start), expected[0..2]);
    assert!(start.get("prev_batch").is_none(), "{start}");
    assert!(start.get("next_batch").is_some());
    // Without a limit (or with 0), everything fits in one page.
    let whole = alice.client.get("/_matrix/client/v3/publicRooms?limit=0").await.expect(200).clone();
    assert_eq!(chunk_ids(&whole), expected);
    alice
        .client
        .get("/_matrix/client/v3/publicRooms?since=garbage!")
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn public_rooms_of_other_servers_and_without_auth() {
    let server = TestServer::start_with(json!({"allow_public_rooms_without_auth": true})).await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({"visibility": "public"})).await;
    let anonymous = server.client();
    let listed = anonymous.get("/_matrix/client/v3/publicRooms").await.expect(200).clone();
    assert_eq!(chunk_ids(&listed), vec![room_id.clone()]);
    // This server by name is the local list.
    let named = alice.client.get("/_matrix/client/v3/publicRooms?server=test.local").await;
    let named = named.expect(200).clone();
    assert_eq!(chunk_ids(&named), vec![room_id.clone()]);
    // As in Synapse, naming any server needs a token, and POST always does.
    for server_name in ["other.example", "test.local"] {
        anonymous
            .get(&format!("/_matrix/client/v3/publicRooms?server={server_name}"))
            .await
            .expect_error(401, "M_MISSING_TOKEN");
    }
    anonymous.post("/_matrix/client/v3/publicRooms", &json!({})).await.expect_error(401, "M_MISSING_TOKEN");
    // Federation is not available: another server's list is not found.
    alice
        .client
        .get("/_matrix/client/v3/publicRooms?server=other.example")
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice
        .client
        .post("/_matrix/client/v3/publicRooms?server=other.example", &json!({"filter": {}}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice
        .client
        .get("/_matrix/client/v3/publicRooms?server=bad%20server")
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}
