//! Spaces: `/hierarchy` over `m.space.child` links, and `/room_summary`.

use std::time::Duration;

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::create_room;

fn hierarchy_path(room_id: &str, query: &str) -> String {
    format!("/_matrix/client/v1/rooms/{room_id}/hierarchy{query}")
}

fn summary_path(room: &str) -> String {
    format!("/_matrix/client/v1/room_summary/{}", room.replace('#', "%23"))
}

async fn join(user: &TestUser, room_id: &str) {
    user.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
}

async fn put_state(user: &TestUser, room_id: &str, kind: &str, state_key: &str, content: Value) {
    user.client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/state/{kind}/{state_key}"), &content)
        .await
        .expect(200);
}

fn room_ids(body: &Value) -> Vec<String> {
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

fn child_keys(room: &Value) -> Vec<String> {
    room["children_state"]
        .as_array()
        .expect("children_state")
        .iter()
        .map(|c| c["state_key"].as_str().unwrap().to_owned())
        .collect()
}

/// A space tree:
///
/// ```text
/// space (public, m.space, children by createRoom's initial_state)
/// ├── b      order "a", suggested
/// ├── a      order "b"
/// ├── sub    order "c", suggested (a space; links back with m.space.parent in initial_state)
/// │   └── d  (linked later by PUT; d names sub as parent in its initial_state)
/// ├── secret order "d" (invite-only)
/// ├── e2, e1 no order: by the time their links were sent
/// ├── !unknown:test.local (skipped: this server does not know it)
/// └── bad    (no via: not a child)
/// ```
struct Tree {
    space: String,
    a: String,
    b: String,
    sub: String,
    d: String,
    secret: String,
    e1: String,
    e2: String,
    bad: String,
}

async fn build_tree(alice: &TestUser) -> Tree {
    let public = |name: &str| json!({"preset": "public_chat", "name": name});
    let a = create_room(alice, public("Room A")).await;
    let b = create_room(alice, public("Room B")).await;
    let secret = create_room(alice, json!({"preset": "private_chat", "name": "Secret"})).await;
    let e1 = create_room(alice, public("E1")).await;
    let e2 = create_room(alice, public("E2")).await;
    let bad = create_room(alice, public("Bad link")).await;
    let sub = create_room(
        alice,
        json!({"preset": "public_chat", "name": "Sub-space", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let d = create_room(
        alice,
        json!({
            "preset": "public_chat",
            "name": "Room D",
            "initial_state": [
                {"type": "m.space.parent", "state_key": sub, "content": {"via": ["test.local"], "canonical": true}},
            ],
        }),
    )
    .await;
    put_state(alice, &sub, "m.space.child", &d, json!({"via": ["test.local"]})).await;
    let child =
        |room: &str, content: Value| json!({"type": "m.space.child", "state_key": room, "content": content});
    let space = create_room(
        alice,
        json!({
            "preset": "public_chat",
            "name": "The Space",
            "topic": "Everything",
            "creation_content": {"type": "m.space"},
            "initial_state": [
                child(&a, json!({"via": ["test.local"], "order": "b"})),
                child(&b, json!({"via": ["test.local"], "order": "a", "suggested": true})),
                child(&sub, json!({"via": ["test.local"], "order": "c", "suggested": true})),
                child(&secret, json!({"via": ["test.local"], "order": "d"})),
                child("!unknown:test.local", json!({"via": ["test.local"], "order": "e"})),
                child(&bad, json!({"order": "f"})),
            ],
        }),
    )
    .await;
    // Children without `order` go by the time of their link: e2 first.
    put_state(alice, &space, "m.space.child", &e2, json!({"via": ["test.local"]})).await;
    // Not synchronisation: the clock must move so that the two links get different
    // origin_server_ts, the order under test.
    tokio::time::sleep(Duration::from_millis(5)).await;
    put_state(alice, &space, "m.space.child", &e1, json!({"via": ["test.local"]})).await;
    put_state(alice, &sub, "m.space.parent", &space, json!({"via": ["test.local"]})).await;
    Tree { space, a, b, sub, d, secret, e1, e2, bad }
}

#[tokio::test]
async fn spaces_hierarchy_walks_children_depth_first_in_the_spec_order() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let tree = build_tree(&alice).await;

    let body = alice.client.get(&hierarchy_path(&tree.space, "")).await.expect(200).clone();
    assert_eq!(
        room_ids(&body),
        [&tree.space, &tree.b, &tree.a, &tree.sub, &tree.d, &tree.secret, &tree.e2, &tree.e1]
            .map(|s| s.clone())
    );
    assert!(body.get("next_batch").is_none(), "{body}");
    let root = &body["rooms"][0];
    // The root's children: valid links only, in order; the unknown room is listed but skipped.
    assert_eq!(
        child_keys(root),
        [&tree.b, &tree.a, &tree.sub, &tree.secret, &"!unknown:test.local".to_owned(), &tree.e2, &tree.e1]
            .map(|s| s.clone())
    );
    assert!(!child_keys(root).contains(&tree.bad));
    let first_child = &root["children_state"][0];
    assert_eq!(first_child["type"], "m.space.child");
    assert_eq!(first_child["sender"], alice.user_id.as_str());
    assert_eq!(first_child["content"], json!({"via": ["test.local"], "order": "a", "suggested": true}));
    assert!(first_child["origin_server_ts"].as_u64().is_some_and(|ts| ts > 0));
    assert_eq!(
        first_child.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["content", "origin_server_ts", "sender", "state_key", "type"]
    );
    let mut root_fields = root.clone();
    root_fields.as_object_mut().unwrap().remove("children_state");
    assert_eq!(
        root_fields,
        json!({
            "room_id": tree.space,
            "room_version": "11",
            "name": "The Space",
            "topic": "Everything",
            "num_joined_members": 1,
            "world_readable": false,
            "guest_can_join": false,
            "join_rule": "public",
            "room_type": "m.space",
        })
    );
    // Rooms that are not spaces have no children, even with m.space.child events.
    let room_b = &body["rooms"][1];
    assert_eq!(room_b["children_state"], json!([]));
    assert!(room_b.get("room_type").is_none());
    assert_eq!(room_b["name"], "Room B");
    let sub = &body["rooms"][3];
    assert_eq!(sub["room_type"], "m.space");
    assert_eq!(child_keys(sub), vec![tree.d.clone()]);

    // Bob may not see the invite-only room; everything else is public.
    let bobs = bob.client.get(&hierarchy_path(&tree.space, "")).await.expect(200).clone();
    assert_eq!(
        room_ids(&bobs),
        [&tree.space, &tree.b, &tree.a, &tree.sub, &tree.d, &tree.e2, &tree.e1].map(|s| s.clone())
    );
    // Once invited, he may.
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{}/invite", tree.secret), &json!({"user_id": bob.user_id}))
        .await
        .expect(200);
    let bobs = bob.client.get(&hierarchy_path(&tree.space, "")).await.expect(200).clone();
    assert!(room_ids(&bobs).contains(&tree.secret));
    // A room that is not a space is its own whole hierarchy.
    let single = bob.client.get(&hierarchy_path(&tree.a, "")).await.expect(200).clone();
    assert_eq!(room_ids(&single), vec![tree.a.clone()]);
    server.stop().await;
}

#[tokio::test]
async fn spaces_hierarchy_depth_suggestions_and_pages() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let tree = build_tree(&alice).await;
    let get = |query: String| {
        let client = alice.client.clone();
        let path = hierarchy_path(&tree.space, &query);
        async move { client.get(&path).await }
    };

    let top = get("?max_depth=1".to_owned()).await.expect(200).clone();
    assert_eq!(
        room_ids(&top),
        [&tree.space, &tree.b, &tree.a, &tree.sub, &tree.secret, &tree.e2, &tree.e1].map(|s| s.clone())
    );
    // Children beyond the depth are still listed in children_state.
    assert_eq!(child_keys(&top["rooms"][3]), vec![tree.d.clone()]);
    let root_only = get("?max_depth=0".to_owned()).await.expect(200).clone();
    assert_eq!(room_ids(&root_only), vec![tree.space.clone()]);
    let suggested = get("?suggested_only=true".to_owned()).await.expect(200).clone();
    assert_eq!(room_ids(&suggested), [&tree.space, &tree.b, &tree.sub].map(|s| s.clone()));
    assert_eq!(child_keys(&suggested["rooms"][0]), [tree.b.clone(), tree.sub.clone()]);
    assert_eq!(child_keys(&suggested["rooms"][2]), Vec::<String>::new());

    // Pages of three, continued with next_batch.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &from {
            Some(token) => format!("?limit=3&from={token}"),
            None => "?limit=3".to_owned(),
        };
        let page = get(query).await.expect(200).clone();
        pages += 1;
        assert!(room_ids(&page).len() <= 3);
        seen.extend(room_ids(&page));
        match page.get("next_batch").and_then(Value::as_str) {
            Some(token) => from = Some(token.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        [&tree.space, &tree.b, &tree.a, &tree.sub, &tree.d, &tree.secret, &tree.e2, &tree.e1]
            .map(|s| s.clone())
    );

    let first = get("?limit=2&max_depth=3".to_owned()).await.expect(200).clone();
    let token = first["next_batch"].as_str().expect("next_batch").to_owned();
    get(format!("?limit=2&max_depth=3&from={token}")).await.expect(200);
    // The filters cannot change during pagination.
    get(format!("?limit=2&max_depth=2&from={token}")).await.expect_error(400, "M_INVALID_PARAM");
    get(format!("?limit=2&max_depth=3&suggested_only=true&from={token}"))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    alice
        .client
        .get(&hierarchy_path(&tree.sub, &format!("?max_depth=3&from={token}")))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    get("?from=garbage".to_owned()).await.expect_error(400, "M_INVALID_PARAM");
    get("?limit=0".to_owned()).await.expect_error(400, "M_INVALID_PARAM");
    get("?max_depth=-1".to_owned()).await.expect_error(400, "M_INVALID_PARAM");
    get("?suggested_only=maybe".to_owned()).await.expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn spaces_hierarchy_shows_only_rooms_the_requester_may_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let space =
        create_room(&alice, json!({"preset": "public_chat", "creation_content": {"type": "m.space"}})).await;
    join(&bob, &space).await;
    let restricted = create_room(
        &alice,
        json!({
            "preset": "private_chat",
            "name": "Members of the space",
            "initial_state": [{"type": "m.room.join_rules", "content": {
                "join_rule": "restricted",
                "allow": [{"type": "m.room_membership", "room_id": space}],
            }}],
        }),
    )
    .await;
    let readable = create_room(
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}],
        }),
    )
    .await;
    let knockable = create_room(
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
        }),
    )
    .await;
    let invite_only = create_room(&alice, json!({"preset": "private_chat"})).await;
    for (order, child) in [&restricted, &readable, &knockable, &invite_only].into_iter().enumerate() {
        put_state(
            &alice,
            &space,
            "m.space.child",
            child,
            json!({"via": ["test.local"], "order": order.to_string()}),
        )
        .await;
    }

    // Bob is in the space, so the restricted room is open to him; Carol is not.
    let bobs = bob.client.get(&hierarchy_path(&space, "")).await.expect(200).clone();
    assert_eq!(room_ids(&bobs), [&space, &restricted, &readable, &knockable].map(|s| s.clone()));
    let restricted_entry = &bobs["rooms"][1];
    assert_eq!(restricted_entry["join_rule"], "restricted");
    assert_eq!(restricted_entry["allowed_room_ids"], json!([space]));
    assert_eq!(bobs["rooms"][2]["world_readable"], true);
    let carols = carol.client.get(&hierarchy_path(&space, "")).await.expect(200).clone();
    assert_eq!(room_ids(&carols), [&space, &readable, &knockable].map(|s| s.clone()));
    let alices = alice.client.get(&hierarchy_path(&space, "")).await.expect(200).clone();
    assert_eq!(
        room_ids(&alices),
        [&space, &restricted, &readable, &knockable, &invite_only].map(|s| s.clone())
    );

    // The root itself must be visible, and known.
    carol.client.get(&hierarchy_path(&invite_only, "")).await.expect_error(403, "M_FORBIDDEN");
    carol.client.get(&hierarchy_path(&restricted, "")).await.expect_error(403, "M_FORBIDDEN");
    bob.client.get(&hierarchy_path(&restricted, "")).await.expect(200);
    carol.client.get(&hierarchy_path("!unknown:test.local", "")).await.expect_error(403, "M_FORBIDDEN");
    carol.client.get(&hierarchy_path("not-a-room", "")).await.expect_error(400, "M_INVALID_PARAM");
    server.client().get(&hierarchy_path(&space, "")).await.expect_error(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn spaces_room_summary_previews_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let space = create_room(
        &alice,
        json!({
            "preset": "public_chat",
            "name": "Summer Space",
            "topic": "Sun",
            "room_alias_name": "summer",
            "creation_content": {"type": "m.space"},
            "initial_state": [{"type": "m.room.avatar", "content": {"url": "mxc://test.local/sun"}}],
        }),
    )
    .await;
    let private = create_room(
        &alice,
        json!({
            "preset": "private_chat",
            "name": "Private",
            "room_alias_name": "private",
            "initial_state": [
                {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                {"type": "m.space.parent", "state_key": space, "content": {"via": ["test.local"]}},
            ],
        }),
    )
    .await;
    put_state(&alice, &space, "m.space.child", &private, json!({"via": ["test.local"]})).await;
    join(&bob, &space).await;

    // Anonymous, by alias: no membership.
    let anonymous = server.client().get(&summary_path("#summer:test.local")).await.expect(200).clone();
    assert_eq!(
        anonymous,
        json!({
            "room_id": space,
            "room_version": "11",
            "name": "Summer Space",
            "topic": "Sun",
            "canonical_alias": "#summer:test.local",
            "avatar_url": "mxc://test.local/sun",
            "num_joined_members": 2,
            "world_readable": false,
            "guest_can_join": false,
            "join_rule": "public",
            "room_type": "m.space",
        })
    );
    // Authenticated, by room ID (`via` is accepted): the requester's membership.
    let bobs = bob.client.get(&format!("{}?via=test.local", summary_path(&space))).await.expect(200).clone();
    assert_eq!(bobs["membership"], "join");
    assert_eq!(bobs["room_id"], space.as_str());
    let carols = carol.client.get(&summary_path(&space)).await.expect(200).clone();
    assert_eq!(carols["membership"], "leave");

    // The private room: members and invitees only; everyone else gets 404.
    let alices = alice.client.get(&summary_path("#private:test.local")).await.expect(200).clone();
    assert_eq!(alices["membership"], "join");
    assert_eq!(alices["encryption"], "m.megolm.v1.aes-sha2");
    assert_eq!(alices["join_rule"], "invite");
    assert_eq!(alices["name"], "Private");
    assert!(alices.get("room_type").is_none());
    bob.client.get(&summary_path(&private)).await.expect_error(404, "M_NOT_FOUND");
    server.client().get(&summary_path(&private)).await.expect_error(404, "M_NOT_FOUND");
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{private}/invite"), &json!({"user_id": bob.user_id}))
        .await
        .expect(200);
    let invited = bob.client.get(&summary_path(&private)).await.expect(200).clone();
    assert_eq!(invited["membership"], "invite");
    assert_eq!(invited["num_joined_members"], 1);

    // The child is found through the space's hierarchy too, once Bob may see it.
    let hierarchy = bob.client.get(&hierarchy_path(&space, "")).await.expect(200).clone();
    assert_eq!(room_ids(&hierarchy), [space.clone(), private.clone()]);

    // Unknown rooms and aliases; malformed identifiers; a bad token is still an error.
    bob.client.get(&summary_path("!unknown:test.local")).await.expect_error(404, "M_NOT_FOUND");
    bob.client.get(&summary_path("#nothing:test.local")).await.expect_error(404, "M_NOT_FOUND");
    bob.client.get(&summary_path("#elsewhere:other.example")).await.expect_error(404, "M_NOT_FOUND");
    bob.client.get(&summary_path("nonsense")).await.expect_error(400, "M_INVALID_PARAM");
    server
        .client()
        .with_token("not-a-token")
        .get(&summary_path(&space))
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    server.stop().await;
}
