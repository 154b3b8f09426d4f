//! The admin API's rooms: the room list (orders, search, pages), one room's details, members,
//! state and forward extremities, blocking, force-joins, `make_room_admin`, deleting a room (v1 at once, v2 with
//! its status) and the server statistics; every route refused to non-admins.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::relations::join;
use crate::rooms::{create_room, send_text};

fn room_ids(body: &Value) -> Vec<&str> {
    body["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect()
}

/// Checks that `value[field]` has Synapse's JSON type for every field; a kind ending in `?` may
/// also be null or absent, and `flag` is a boolean or 0/1 (Synapse answers either, the UIs take both).
pub(crate) fn assert_types(value: &Value, fields: &[(&str, &str)]) {
    for (field, kind) in fields {
        let v = &value[*field];
        let ok = match *kind {
            "string" => v.is_string(),
            "string?" => v.is_string() || v.is_null(),
            "bool" => v.is_boolean(),
            "int" => v.is_i64() || v.is_u64(),
            "int?" => v.is_i64() || v.is_u64() || v.is_null(),
            "flag" => v.is_boolean() || v == 0 || v == 1,
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        };
        assert!(
            ok && (kind.ends_with('?') || value.get(*field).is_some()),
            "{field} should be {kind}: {value}"
        );
    }
}

pub(crate) const ROOM_FIELDS: &[(&str, &str)] = &[
    ("room_id", "string"),
    ("name", "string?"),
    ("canonical_alias", "string?"),
    ("joined_members", "int"),
    ("joined_local_members", "int"),
    ("version", "string"),
    ("creator", "string"),
    ("encryption", "string?"),
    ("federatable", "bool"),
    ("public", "bool"),
    ("join_rules", "string?"),
    ("guest_access", "string?"),
    ("history_visibility", "string?"),
    ("state_events", "int"),
    ("room_type", "string?"),
];

async fn joined_rooms(user: &TestUser) -> Vec<String> {
    let response = user.client.get("/_matrix/client/v3/joined_rooms").await;
    response.expect(200)["joined_rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn admins_list_rooms_with_orders_search_and_pages() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let apples =
        create_room(&alice, json!({"name": "Apples", "preset": "public_chat", "room_alias_name": "fruit"}))
            .await;
    let bananas = create_room(&alice, json!({"name": "Bananas", "visibility": "public"})).await;
    join(&bob, &bananas).await;
    let nameless = create_room(&bob, json!({})).await;
    let list = |query: &str| {
        let client = admin.client.clone();
        let path = format!("/_synapse/admin/v1/rooms{query}");
        async move { client.get(&path).await }
    };

    let all = list("").await;
    let body = all.expect(200);
    assert_eq!(body["total_rooms"], 3, "{body}");
    assert_eq!(body["offset"], 0);
    assert!(body.get("next_batch").is_none() && body.get("prev_batch").is_none(), "{body}");
    // By name, rooms without a name last.
    assert_eq!(room_ids(body), vec![apples.as_str(), &bananas, &nameless]);
    for room in body["rooms"].as_array().unwrap() {
        assert_types(room, ROOM_FIELDS);
    }
    let first = &body["rooms"][0];
    assert_eq!(first["name"], "Apples");
    assert_eq!(first["canonical_alias"], format!("#fruit:{}", server.server_name));
    assert_eq!(first["joined_members"], 1);
    assert_eq!(first["joined_local_members"], 1);
    assert_eq!(first["creator"], alice.user_id.as_str());
    assert_eq!(first["join_rules"], "public");
    assert_eq!(first["federatable"], true);
    assert!(first["state_events"].as_i64().unwrap() >= 5, "{first}");
    assert_eq!(body["rooms"][1]["public"], true);
    assert_eq!(body["rooms"][1]["joined_members"], 2);

    // Orders and directions.
    // An order read from the counts alone still returns every field of the page's rooms.
    let by_members = list("?order_by=joined_members").await;
    let by_members = by_members.expect(200);
    assert_eq!(room_ids(by_members)[0], bananas);
    assert_eq!(by_members["rooms"][0]["name"], "Bananas", "{by_members}");
    assert_eq!(by_members["rooms"][0]["joined_members"], 2);
    assert_eq!(by_members["rooms"][0]["creator"], alice.user_id.as_str());
    let second = list("?from=1&limit=1").await;
    let second = second.expect(200);
    assert_eq!(room_ids(second), vec![bananas.as_str()]);
    assert_eq!(second["total_rooms"], 3);
    assert_eq!(second["rooms"][0]["name"], "Bananas");
    assert!(second["rooms"][0]["canonical_alias"].is_null(), "{second}");
    let found = list("?search_term=FRUI").await;
    assert_eq!(found.expect(200)["rooms"][0]["joined_members"], 1, "the counts of a searched page are read");
    assert_eq!(room_ids(list("?dir=b").await.expect(200)), vec![nameless.as_str(), &bananas, &apples]);
    let public_first = list("?order_by=public&dir=b").await;
    assert_eq!(room_ids(public_first.expect(200))[0], bananas);
    for order in [
        "name",
        "canonical_alias",
        "joined_members",
        "joined_local_members",
        "version",
        "creator",
        "encryption",
        "federatable",
        "public",
        "join_rules",
        "guest_access",
        "history_visibility",
        "state_events",
        "size",
        "alphabetical",
    ] {
        assert_eq!(list(&format!("?order_by={order}")).await.expect(200)["total_rooms"], 3, "{order}");
    }

    // Search: name, alias localpart, exact room ID.
    assert_eq!(room_ids(list("?search_term=banan").await.expect(200)), vec![bananas.as_str()]);
    assert_eq!(room_ids(list("?search_term=FRUI").await.expect(200)), vec![apples.as_str()]);
    assert_eq!(
        room_ids(list(&format!("?search_term={nameless}")).await.expect(200)),
        vec![nameless.as_str()]
    );
    assert_eq!(list("?search_term=nothing").await.expect(200)["total_rooms"], 0);
    assert_eq!(list("?public_rooms=true").await.expect(200)["total_rooms"], 1);

    // Pages.
    let page = list("?limit=1").await;
    let page = page.expect(200);
    assert_eq!(room_ids(page), vec![apples.as_str()]);
    assert_eq!(page["next_batch"], 1);
    assert_eq!(page["total_rooms"], 3);
    let last = list("?from=2&limit=1").await;
    let last = last.expect(200);
    assert_eq!(room_ids(last), vec![nameless.as_str()]);
    assert_eq!(last["prev_batch"], 1);
    assert!(last.get("next_batch").is_none());

    // Empty rooms: once its only member left, the nameless room is empty.
    assert_eq!(list("?empty_rooms=true").await.expect(200)["total_rooms"], 0);
    bob.client.post(&format!("/_matrix/client/v3/rooms/{nameless}/leave"), &json!({})).await.expect(200);
    let empty = list("?empty_rooms=true").await;
    let empty = empty.expect(200);
    assert_eq!(room_ids(empty), vec![nameless.as_str()]);
    assert_eq!(empty["rooms"][0]["joined_members"], 0);
    let non_empty = list("?empty_rooms=false&order_by=joined_members").await;
    assert_eq!(room_ids(non_empty.expect(200)), vec![bananas.as_str(), &apples]);

    // Bad parameters.
    for query in [
        "?from=-1",
        "?limit=-5",
        "?limit=99999999999999999999999",
        "?from=lots",
        "?order_by=password",
        "?dir=up",
        "?search_term=",
        "?public_rooms=maybe",
    ] {
        list(query).await.expect_error(400, "M_INVALID_PARAM");
    }
    bob.client.get("/_synapse/admin/v1/rooms").await.expect_error(403, "M_FORBIDDEN");
    server.client().get("/_synapse/admin/v1/rooms").await.expect_error(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn admins_read_one_room_its_members_state_and_extremities() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"name": "Den", "topic": "Talk", "preset": "public_chat"})).await;
    join(&bob, &room).await;
    send_text(&alice, &room, "t1", "hello").await;

    let details = admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}")).await;
    let body = details.expect(200);
    assert_types(body, ROOM_FIELDS);
    assert_types(
        body,
        &[
            ("avatar", "string?"),
            ("topic", "string"),
            ("joined_local_devices", "int"),
            ("forgotten", "bool"),
            ("tombstoned", "bool"),
            ("replacement_room", "string?"),
        ],
    );
    assert_eq!(body["name"], "Den");
    assert_eq!(body["topic"], "Talk");
    assert_eq!(body["joined_members"], 2);
    assert_eq!(body["joined_local_devices"], 2, "one device each: {body}");
    assert_eq!(body["forgotten"], false);

    let members = admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/members")).await;
    let members = members.expect(200);
    assert_eq!(members["total"], 2);
    let mut listed: Vec<&str> =
        members["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    listed.sort();
    let mut expected = vec![alice.user_id.as_str(), bob.user_id.as_str()];
    expected.sort();
    assert_eq!(listed, expected);

    let state = admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/state")).await;
    let state = state.expect(200)["state"].as_array().unwrap().clone();
    assert!(state.iter().any(|e| e["type"] == "m.room.create" && e["state_key"] == ""), "{state:?}");
    assert!(
        state
            .iter()
            .all(|e| e["event_id"].is_string() && e["content"].is_object() && e["sender"].is_string())
    );
    assert_eq!(state.iter().filter(|e| e["type"] == "m.room.member").count(), 2);
    let names = admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/state?type=m.room.name")).await;
    let names = names.expect(200)["state"].as_array().unwrap().clone();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0]["content"]["name"], "Den");

    let extremities = admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/forward_extremities")).await;
    let extremities = extremities.expect(200);
    assert_eq!(extremities["count"], 1, "{extremities}");
    assert_types(
        &extremities["results"][0],
        &[("event_id", "string"), ("depth", "int"), ("received_ts", "int"), ("state_group", "int")],
    );

    let unknown = format!("!unknown:{}", server.server_name);
    for suffix in ["", "/members", "/state", "/forward_extremities"] {
        let path = format!("/_synapse/admin/v1/rooms/{unknown}{suffix}");
        admin.client.get(&path).await.expect_error(404, "M_NOT_FOUND");
        let path = format!("/_synapse/admin/v1/rooms/not-a-room{suffix}");
        admin.client.get(&path).await.expect_error(400, "M_INVALID_PARAM");
        let path = format!("/_synapse/admin/v1/rooms/{room}{suffix}");
        bob.client.get(&path).await.expect_error(403, "M_FORBIDDEN");
    }

    let stats = admin.client.get("/_synapse/admin/v1/statistics/database/rooms").await;
    let stats = stats.expect(200);
    assert_eq!(stats["rooms"][0]["room_id"], room.as_str());
    assert!(stats["rooms"][0]["estimated_size"].as_i64().unwrap() > 0, "{stats}");
    bob.client.get("/_synapse/admin/v1/statistics/database/rooms").await.expect_error(403, "M_FORBIDDEN");
    let updates = admin.client.get("/_synapse/admin/v1/background_updates/status").await;
    assert_eq!(updates.expect(200), &json!({"enabled": true, "current_updates": {}}));
    bob.client.get("/_synapse/admin/v1/background_updates/status").await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn a_blocked_room_refuses_joins_and_invites() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let block = format!("/_synapse/admin/v1/rooms/{room}/block");

    assert_eq!(admin.client.get(&block).await.expect(200), &json!({"block": false}));
    assert_eq!(admin.client.put(&block, &json!({"block": true})).await.expect(200), &json!({"block": true}));
    assert_eq!(admin.client.get(&block).await.expect(200), &json!({"block": true, "user_id": admin.user_id}));
    bob.client
        .post(&format!("/_matrix/client/v3/rooms/{room}/join"), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room}/invite"), &json!({"user_id": bob.user_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Unblocked, the room can be joined again.
    admin.client.put(&block, &json!({"block": false})).await.expect(200);
    join(&bob, &room).await;

    // An unknown room can be blocked (before it is known), as in Synapse.
    let unknown = format!("/_synapse/admin/v1/rooms/!later:{}/block", server.server_name);
    admin.client.put(&unknown, &json!({"block": true})).await.expect(200);
    assert_eq!(admin.client.get(&unknown).await.expect(200)["block"], true);

    admin.client.put(&block, &json!({"block": "yes"})).await.expect_error(400, "M_BAD_JSON");
    admin.client.get("/_synapse/admin/v1/rooms/nope/block").await.expect_error(400, "M_INVALID_PARAM");
    bob.client.get(&block).await.expect_error(403, "M_FORBIDDEN");
    bob.client.put(&block, &json!({"block": true})).await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn force_join_puts_a_local_user_in_the_room() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let force = |target: &str| format!("/_synapse/admin/v1/join/{target}");

    // A private room the admin is in: the admin invites, then the user joins.
    let private = create_room(&admin, json!({"preset": "private_chat"})).await;
    let joined = admin.client.post(&force(&private), &json!({"user_id": alice.user_id})).await;
    assert_eq!(joined.expect(200), &json!({"room_id": private}));
    assert!(joined_rooms(&alice).await.contains(&private));
    // Again: nothing changes.
    admin.client.post(&force(&private), &json!({"user_id": alice.user_id})).await.expect(200);

    // A public room, by alias, the admin is not in.
    let public = create_room(&bob, json!({"preset": "public_chat", "room_alias_name": "lobby"})).await;
    let alias = format!("%23lobby:{}", server.server_name);
    let joined = admin.client.post(&force(&alias), &json!({"user_id": alice.user_id})).await;
    assert_eq!(joined.expect(200)["room_id"], public.as_str());
    assert!(joined_rooms(&alice).await.contains(&public));

    // A private room the admin is not in: refused.
    let closed = create_room(&bob, json!({"preset": "private_chat"})).await;
    admin
        .client
        .post(&force(&closed), &json!({"user_id": alice.user_id}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    assert!(!joined_rooms(&alice).await.contains(&closed));

    // Bad input.
    let nobody = format!("@nobody:{}", server.server_name);
    admin.client.post(&force(&private), &json!({"user_id": nobody})).await.expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .post(&force(&private), &json!({"user_id": "not-a-user"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    admin.client.post(&force(&private), &json!({})).await.expect_error(400, "M_MISSING_PARAM");
    admin
        .client
        .post(&force("not-a-room"), &json!({"user_id": alice.user_id}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let unknown = format!("!unknown:{}", server.server_name);
    admin
        .client
        .post(&force(&unknown), &json!({"user_id": alice.user_id}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    bob.client.post(&force(&public), &json!({"user_id": bob.user_id})).await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_room_kicks_everyone_moves_them_and_blocks_rejoin() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room =
        create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "doomed", "name": "Doomed"}))
            .await;
    join(&bob, &room).await;
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room}/invite"), &json!({"user_id": carol.user_id}))
        .await
        .expect(200);
    send_text(&alice, &room, "t1", "bad content").await;

    let path = format!("/_synapse/admin/v1/rooms/{room}");
    bob.client
        .request(reqwest::Method::DELETE, &path, Some(&json!({})))
        .await
        .expect_error(403, "M_FORBIDDEN");
    admin
        .client
        .request(reqwest::Method::DELETE, &path, Some(&json!({"block": "yes"})))
        .await
        .expect_error(400, "M_BAD_JSON");
    let deleted = admin
        .client
        .request(
            reqwest::Method::DELETE,
            &path,
            Some(&json!({
                "new_room_user_id": admin.user_id,
                "room_name": "Moved",
                "message": "This room was removed",
                "block": true,
                "purge": true,
            })),
        )
        .await;
    let body = deleted.expect(200).clone();
    let mut kicked: Vec<&str> =
        body["kicked_users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    kicked.sort();
    let mut expected = vec![alice.user_id.as_str(), bob.user_id.as_str(), carol.user_id.as_str()];
    expected.sort();
    assert_eq!(kicked, expected, "{body}");
    assert_eq!(body["failed_to_kick_users"], json!([]));
    assert_eq!(body["local_aliases"], json!([format!("#doomed:{}", server.server_name)]));
    let new_room = body["new_room_id"].as_str().expect("a replacement room").to_owned();

    // Everyone joined is out, and in the replacement room (the invited user only out).
    for user in [&alice, &bob] {
        let rooms = joined_rooms(user).await;
        assert!(!rooms.contains(&room) && rooms.contains(&new_room), "{rooms:?}");
    }
    assert!(!joined_rooms(&carol).await.contains(&new_room));
    // The alias points to the replacement room.
    let alias = admin
        .client
        .get(&format!("/_matrix/client/v3/directory/room/%23doomed:{}", server.server_name))
        .await;
    assert_eq!(alias.expect(200)["room_id"], new_room.as_str());
    // The room is gone from the database and blocked.
    admin.client.get(&path).await.expect_error(404, "M_NOT_FOUND");
    let listed = admin.client.get("/_synapse/admin/v1/rooms").await;
    assert_eq!(room_ids(listed.expect(200)), vec![new_room.as_str()]);
    bob.client
        .post(&format!("/_matrix/client/v3/rooms/{room}/join"), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    let block = admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/block")).await;
    assert_eq!(block.expect(200)["block"], true);
    // The replacement room holds the message.
    let state = admin.client.get(&format!("/_synapse/admin/v1/rooms/{new_room}")).await;
    assert_eq!(state.expect(200)["name"], "Moved");

    // Deleting it again: the room is unknown now (404); blocking it again is fine.
    admin
        .client
        .request(reqwest::Method::DELETE, &path, Some(&json!({})))
        .await
        .expect_error(404, "M_NOT_FOUND");
    let again = admin.client.request(reqwest::Method::DELETE, &path, Some(&json!({"block": true}))).await;
    assert_eq!(again.expect(200)["kicked_users"], json!([]));
    admin
        .client
        .request(reqwest::Method::DELETE, "/_synapse/admin/v1/rooms/bad", Some(&json!({})))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

/// Polls a v2 deletion until it is no longer active.
async fn wait_for_delete(admin: &TestUser, delete_id: &str) -> Value {
    for _ in 0..500 {
        let status = admin.client.get(&format!("/_synapse/admin/v2/rooms/delete_status/{delete_id}")).await;
        let status = status.expect(200).clone();
        if status["status"] != "active" {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("deletion {delete_id} never finished");
}

#[tokio::test]
async fn v2_deletion_runs_in_the_background_with_its_status_and_once_at_a_time() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    for i in 0..5 {
        send_text(&alice, &room, &format!("t{i}"), "text").await;
    }
    let path = format!("/_synapse/admin/v2/rooms/{room}");
    alice
        .client
        .request(reqwest::Method::DELETE, &path, Some(&json!({})))
        .await
        .expect_error(403, "M_FORBIDDEN");

    // Two deletions at once: at most one runs; the other is refused or finds nothing to do.
    let block = json!({"block": true});
    let (first, second) = tokio::join!(
        admin.client.request(reqwest::Method::DELETE, &path, Some(&block)),
        admin.client.request(reqwest::Method::DELETE, &path, Some(&block)),
    );
    let mut ids = Vec::new();
    for response in [&first, &second] {
        match response.status {
            200 => ids.push(response.expect(200)["delete_id"].as_str().unwrap().to_owned()),
            _ => response.expect_error(400, "M_BAD_JSON"),
        }
    }
    assert!(!ids.is_empty());
    let status = wait_for_delete(&admin, &ids[0]).await;
    assert_eq!(status["status"], "complete", "{status}");
    assert_types(
        &status["shutdown_room"],
        &[
            ("kicked_users", "array"),
            ("failed_to_kick_users", "array"),
            ("local_aliases", "array"),
            ("new_room_id", "string?"),
        ],
    );
    for id in &ids[1..] {
        assert_eq!(wait_for_delete(&admin, id).await["status"], "complete");
    }
    let kicked: usize = {
        let mut total = 0;
        for id in &ids {
            let status = wait_for_delete(&admin, id).await;
            total += status["shutdown_room"]["kicked_users"].as_array().unwrap().len();
        }
        total
    };
    assert_eq!(kicked, 1, "alice was kicked exactly once");
    assert!(!joined_rooms(&alice).await.contains(&room));
    admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}")).await.expect_error(404, "M_NOT_FOUND");

    let by_room = admin.client.get(&format!("/_synapse/admin/v2/rooms/{room}/delete_status")).await;
    let results = by_room.expect(200)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), ids.len());
    assert_types(&results[0], &[("delete_id", "string"), ("status", "string"), ("shutdown_room", "object")]);

    let unknown = format!("!unknown:{}", server.server_name);
    admin
        .client
        .get(&format!("/_synapse/admin/v2/rooms/{unknown}/delete_status"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    admin.client.get("/_synapse/admin/v2/rooms/delete_status/nope").await.expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .request(reqwest::Method::DELETE, &format!("/_synapse/admin/v2/rooms/{unknown}"), Some(&json!({})))
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice.client.get("/_synapse/admin/v2/rooms/delete_status/nope").await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn federation_destinations_refuse_non_admins_and_unknown_servers() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let list = admin.client.get("/_synapse/admin/v1/federation/destinations").await;
    assert_eq!(list.expect(200), &json!({"destinations": [], "total": 0}));
    for query in ["?from=-1", "?limit=no", "?order_by=bogus", "?dir=sideways"] {
        let path = format!("/_synapse/admin/v1/federation/destinations{query}");
        admin.client.get(&path).await.expect_error(400, "M_INVALID_PARAM");
    }
    for path in [
        "/_synapse/admin/v1/federation/destinations/unknown.example",
        "/_synapse/admin/v1/federation/destinations/unknown.example/rooms",
    ] {
        admin.client.get(path).await.expect_error(404, "M_NOT_FOUND");
        alice.client.get(path).await.expect_error(403, "M_FORBIDDEN");
    }
    let reset = "/_synapse/admin/v1/federation/destinations/unknown.example/reset_connection";
    admin.client.post(reset, &json!({})).await.expect_error(404, "M_NOT_FOUND");
    alice.client.post(reset, &json!({})).await.expect_error(403, "M_FORBIDDEN");
    alice.client.get("/_synapse/admin/v1/federation/destinations").await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn admins_read_messages_context_and_timestamps_of_rooms_they_are_not_in() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({"preset": "private_chat"})).await;
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(send_text(&alice, &room, &format!("t{i}"), &format!("message {i}")).await);
    }
    // The admin is not in the room: the client route refuses, the admin route answers.
    admin
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"))
        .await
        .expect_error(403, "M_FORBIDDEN");
    let page = admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/messages?dir=b&limit=2")).await;
    let page = page.expect(200).clone();
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 2);
    assert_eq!(chunk[0]["event_id"], sent[3].as_str());
    assert_eq!(chunk[0]["content"]["body"], "message 3");
    assert!(page["start"].is_string() && page["end"].is_string(), "{page}");
    let forwards = admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/messages")).await;
    let forwards = forwards.expect(200);
    assert_eq!(forwards["chunk"][0]["type"], "m.room.create", "dir defaults to f: {forwards}");

    let context =
        admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/context/{}?limit=2", sent[1])).await;
    let context = context.expect(200);
    assert_eq!(context["event"]["event_id"], sent[1].as_str());
    assert_eq!(context["events_after"][0]["event_id"], sent[2].as_str());
    assert!(context["events_before"].is_array() && context["state"].is_array(), "{context}");

    let now = myelin_service::util::now_ms() + 1000;
    let found =
        admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}/timestamp_to_event?ts={now}&dir=b")).await;
    let found = found.expect(200);
    assert_eq!(found["event_id"], sent[3].as_str());
    assert!(found["origin_server_ts"].is_i64());

    let unknown = format!("!unknown:{}", server.server_name);
    for path in [
        format!("/_synapse/admin/v1/rooms/{unknown}/messages"),
        format!("/_synapse/admin/v1/rooms/{unknown}/timestamp_to_event?ts=1"),
        format!("/_synapse/admin/v1/rooms/{room}/context/$unknown"),
    ] {
        admin.client.get(&path).await.expect_error(404, "M_NOT_FOUND");
    }
    for path in [
        format!("/_synapse/admin/v1/rooms/{room}/messages?dir=up"),
        format!("/_synapse/admin/v1/rooms/{room}/messages?limit=-1"),
        format!("/_synapse/admin/v1/rooms/{room}/timestamp_to_event?ts=-5"),
        "/_synapse/admin/v1/rooms/bad/messages".to_owned(),
    ] {
        admin.client.get(&path).await.expect_error(400, "M_INVALID_PARAM");
    }
    admin
        .client
        .get(&format!("/_synapse/admin/v1/rooms/{room}/timestamp_to_event"))
        .await
        .expect_error(400, "M_MISSING_PARAM");
    for suffix in ["messages", "timestamp_to_event?ts=1"] {
        alice
            .client
            .get(&format!("/_synapse/admin/v1/rooms/{room}/{suffix}"))
            .await
            .expect_error(403, "M_FORBIDDEN");
    }
    alice
        .client
        .get(&format!("/_synapse/admin/v1/rooms/{room}/context/{}", sent[0]))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

/// The content of a room's current `m.room.power_levels`, read through the admin API.
async fn power_levels(admin: &TestUser, room: &str) -> Value {
    let path = format!("/_synapse/admin/v1/rooms/{room}/state?type=m.room.power_levels");
    let response = admin.client.get(&path).await;
    response.expect(200)["state"][0]["content"].clone()
}

/// A user's membership in a room's current state, read through the admin API.
async fn membership_of(admin: &TestUser, room: &str, user: &str) -> Option<String> {
    let path = format!("/_synapse/admin/v1/rooms/{room}/state?type=m.room.member");
    let response = admin.client.get(&path).await;
    response.expect(200)["state"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["state_key"] == user)
        .map(|event| event["content"]["membership"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn make_room_admin_grants_the_highest_local_power_and_invites_into_private_rooms() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let make = |target: &str| format!("/_synapse/admin/v1/rooms/{target}/make_room_admin");

    // A private v10 room (the creator listed at 100) the admin is not in, no body: the admin is
    // raised to 100 by bob, then invited.
    let private = create_room(&bob, json!({"preset": "private_chat", "room_version": "10"})).await;
    assert_eq!(admin.client.post(&make(&private), &json!({})).await.expect(200), &json!({}));
    let levels = power_levels(&admin, &private).await;
    assert_eq!(levels["users"][admin.user_id.as_str()], 100, "{levels}");
    assert_eq!(levels["users"][bob.user_id.as_str()], 100, "bob keeps his level: {levels}");
    assert_eq!(membership_of(&admin, &private, admin.user_id.as_str()).await.as_deref(), Some("invite"));
    // The admin joins and uses the power (a state event needing 50).
    join(&admin, &private).await;
    admin
        .client
        .put(&format!("/_matrix/client/v3/rooms/{private}/state/m.room.name/"), &json!({"name": "Taken"}))
        .await
        .expect(200);

    // A public room of the default version (creators have infinite power, unlisted), by alias,
    // for alice: she gets 100 and no invite (she may join herself), then renames it.
    let public = create_room(&bob, json!({"preset": "public_chat", "room_alias_name": "hall"})).await;
    let alias = format!("%23hall:{}", server.server_name);
    let made = admin.client.post(&make(&alias), &json!({"user_id": alice.user_id})).await;
    assert_eq!(made.expect(200), &json!({}));
    assert_eq!(power_levels(&admin, &public).await["users"][alice.user_id.as_str()], 100);
    assert_eq!(membership_of(&admin, &public, alice.user_id.as_str()).await, None);
    join(&alice, &public).await;
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{public}/state/m.room.name/"), &json!({"name": "Mine"}))
        .await
        .expect(200);

    // A joined local user listed at 50 (power levels need 100) is the best there is: refused.
    let weak = create_room(
        &bob,
        json!({"preset": "private_chat", "room_version": "10", "invite": [alice.user_id],
               "power_level_content_override": {"users": {alice.user_id.as_str(): 50, bob.user_id.as_str(): 100}}}),
    )
    .await;
    join(&alice, &weak).await;
    bob.client.post(&format!("/_matrix/client/v3/rooms/{weak}/leave"), &json!({})).await.expect(200);
    let refused = admin.client.post(&make(&weak), &json!({})).await;
    refused.expect_error(400, "M_UNKNOWN");
    assert_eq!(
        refused.json["error"], "No local admin user in room with power to update power levels.",
        "{}",
        refused.json
    );
    assert!(power_levels(&admin, &weak).await["users"].get(admin.user_id.as_str()).is_none());
    // No joined local user with power at all: refused too.
    alice.client.post(&format!("/_matrix/client/v3/rooms/{weak}/leave"), &json!({})).await.expect(200);
    let refused = admin.client.post(&make(&weak), &json!({})).await;
    refused.expect_error(400, "M_UNKNOWN");
    assert_eq!(refused.json["error"], "No local admin user in room", "{}", refused.json);

    // Bad input, unknown rooms and users, non-admins.
    let unknown = format!("!unknown:{}", server.server_name);
    admin.client.post(&make(&unknown), &json!({})).await.expect_error(404, "M_NOT_FOUND");
    let no_alias = format!("%23nowhere:{}", server.server_name);
    admin.client.post(&make(&no_alias), &json!({})).await.expect_error(404, "M_NOT_FOUND");
    admin.client.post(&make("not-a-room"), &json!({})).await.expect_error(400, "M_INVALID_PARAM");
    let nobody = format!("@nobody:{}", server.server_name);
    admin.client.post(&make(&public), &json!({"user_id": nobody})).await.expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .post(&make(&public), &json!({"user_id": "not-a-user"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    admin.client.post(&make(&public), &json!({"user_id": 5})).await.expect_error(400, "M_BAD_JSON");
    bob.client.post(&make(&public), &json!({})).await.expect_error(403, "M_FORBIDDEN");
    server.client().post(&make(&public), &json!({})).await.expect_error(401, "M_MISSING_TOKEN");
    server.stop().await;
}

/// One room's details as the admin API answers them.
async fn details(admin: &TestUser, room: &str) -> Value {
    admin.client.get(&format!("/_synapse/admin/v1/rooms/{room}")).await.expect(200).clone()
}

#[tokio::test]
async fn the_room_list_follows_renames_aliases_memberships_and_redactions() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let first = create_room(&alice, json!({"name": "Alpha", "preset": "public_chat"})).await;
    let second = create_room(&alice, json!({"name": "Beta", "preset": "public_chat"})).await;
    let list = |query: &str| {
        let client = admin.client.clone();
        let path = format!("/_synapse/admin/v1/rooms{query}");
        async move { client.get(&path).await.expect(200).clone() }
    };
    assert_eq!(room_ids(&list("?order_by=name").await), vec![first.as_str(), &second]);

    // A rename moves the room in the name order and in the search.
    let renamed = alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{first}/state/m.room.name/"), &json!({"name": "Zulu"}))
        .await;
    let name_event = renamed.expect(200)["event_id"].as_str().unwrap().to_owned();
    assert_eq!(room_ids(&list("?order_by=name").await), vec![second.as_str(), &first]);
    assert_eq!(room_ids(&list("?order_by=name&dir=b").await), vec![first.as_str(), &second]);
    assert_eq!(room_ids(&list("?search_term=zul").await), vec![first.as_str()]);
    assert_eq!(list("?search_term=alpha").await["total_rooms"], 0);
    assert_eq!(details(&admin, &first).await["name"], "Zulu");

    // A new canonical alias is searched by its localpart (not its server) and shown.
    let alias = format!("#kitchen:{}", server.server_name);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/directory/room/{}", alias.replace('#', "%23")),
            &json!({"room_id": second}),
        )
        .await
        .expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{second}/state/m.room.canonical_alias/"),
            &json!({"alias": alias}),
        )
        .await
        .expect(200);
    let found = list("?search_term=KITCH").await;
    assert_eq!(room_ids(&found), vec![second.as_str()]);
    assert_eq!(found["rooms"][0]["canonical_alias"], alias.as_str());
    assert_eq!(list(&format!("?search_term={}", server.server_name)).await["total_rooms"], 0);
    assert_eq!(room_ids(&list("?order_by=canonical_alias").await), vec![second.as_str(), &first]);

    // A topic and a join rule change reach the details.
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{first}/state/m.room.topic/"), &json!({"topic": "greens"}))
        .await
        .expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{first}/state/m.room.join_rules/"),
            &json!({"join_rule": "invite"}),
        )
        .await
        .expect(200);
    let first_details = details(&admin, &first).await;
    assert_eq!(first_details["topic"], "greens");
    assert_eq!(first_details["join_rules"], "invite");

    // Joins and leaves change the counts and the member order.
    join(&bob, &second).await;
    join(&carol, &second).await;
    let by_members = list("?order_by=joined_members").await;
    assert_eq!(room_ids(&by_members), vec![second.as_str(), &first]);
    assert_eq!(by_members["rooms"][0]["joined_members"], 3);
    assert_eq!(by_members["rooms"][0]["joined_local_members"], 3);
    assert_eq!(by_members["rooms"][1]["joined_members"], 1);
    let state_before = by_members["rooms"][0]["state_events"].as_i64().unwrap();
    bob.client.post(&format!("/_matrix/client/v3/rooms/{second}/leave"), &json!({})).await.expect(200);
    carol.client.post(&format!("/_matrix/client/v3/rooms/{second}/leave"), &json!({})).await.expect(200);
    alice.client.post(&format!("/_matrix/client/v3/rooms/{second}/leave"), &json!({})).await.expect(200);
    let after = details(&admin, &second).await;
    assert_eq!(after["joined_members"], 0, "{after}");
    assert_eq!(after["joined_local_members"], 0);
    assert_eq!(after["state_events"].as_i64().unwrap(), state_before, "leaves replace member state");
    assert_eq!(room_ids(&list("?order_by=joined_members").await), vec![first.as_str(), &second]);
    assert_eq!(room_ids(&list("?empty_rooms=true").await), vec![second.as_str()]);

    // A redacted name is no name: the room goes last by name.
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{first}/redact/{name_event}/r1"), &json!({}))
        .await
        .expect(200);
    assert!(details(&admin, &first).await["name"].is_null());
    assert_eq!(room_ids(&list("?order_by=name").await), vec![second.as_str(), &first]);
    assert_eq!(list("?search_term=zul").await["total_rooms"], 0);

    // A deleted room leaves the list and its details.
    admin
        .client
        .request(
            reqwest::Method::DELETE,
            &format!("/_synapse/admin/v1/rooms/{second}"),
            Some(&json!({"purge": true})),
        )
        .await
        .expect(200);
    let rest = list("").await;
    assert_eq!(rest["total_rooms"], 1);
    assert_eq!(room_ids(&rest), vec![first.as_str()]);
    admin.client.get(&format!("/_synapse/admin/v1/rooms/{second}")).await.expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}
