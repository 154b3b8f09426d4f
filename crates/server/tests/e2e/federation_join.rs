//! The joining side of room federation: two real Myelins, A (the room's server) and B (whose
//! user joins through A): joins by room ID with `via`, leaves through A, remote aliases, and
//! what a failed join leaves behind on B (nothing).

use myelin_test_support::TestServer;
use myelin_test_support::federation::{federating_server, free_port, write_certificates};
use ruma::{EventId, RoomId};
use serde_json::{Value, json};

use crate::federation_resident::enc;

async fn two_servers() -> (tempfile::TempDir, TestServer, TestServer) {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    (certs, a, b)
}

async fn members(user: &myelin_test_support::TestUser, room_id: &str) -> Vec<(String, String)> {
    let members = user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/members")).await;
    let mut out: Vec<(String, String)> = members.expect(200)["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["state_key"].as_str().unwrap().to_owned(),
                event["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Whether B holds anything of a room: its row or its create event.
async fn b_knows_room(b: &TestServer, room_id: &str, create_id: Option<&str>) -> bool {
    let room_id = RoomId::parse(room_id).unwrap();
    let known = b.services().room_rules(&room_id).await.unwrap().is_some();
    let create = match create_id {
        Some(id) => b.services().get_room_event(&EventId::parse(id).unwrap()).await.unwrap().is_some(),
        None => false,
    };
    known || create
}

async fn create_id_of(user: &myelin_test_support::TestUser, room_id: &str) -> String {
    let state = user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state")).await;
    state.expect(200).as_array().unwrap().iter().find(|e| e["type"] == "m.room.create").unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_user_joins_a_remote_room_by_id_sees_it_and_leaves_through_it() {
    let (_certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let created = alice
        .client
        .post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat", "name": "Lobby"}))
        .await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();

    let joined = bob
        .client
        .post(&format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(&a.server_name)), &json!({}))
        .await;
    assert_eq!(joined.expect(200)["room_id"], room_id.as_str());

    // B's user sees the room: its name and A's user in the state, the join in the timeline.
    let sync = bob.client.get("/_matrix/client/v3/sync").await;
    let room = &sync.expect(200)["rooms"]["join"][&room_id];
    let state: Vec<&Value> = room["state"]["events"].as_array().unwrap().iter().collect();
    let timeline: Vec<&Value> = room["timeline"]["events"].as_array().unwrap().iter().collect();
    let everything: Vec<&&Value> = state.iter().chain(timeline.iter()).collect();
    assert!(
        everything.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Lobby"),
        "{room}"
    );
    assert!(
        everything.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == alice.user_id.as_str()
            && e["content"]["membership"] == "join"),
        "{room}"
    );
    let last = timeline.last().unwrap();
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["state_key"], bob.user_id.as_str());
    assert_eq!(last["content"]["membership"], "join");
    // The state and auth chain are outliers: never in the timeline. /messages past the join
    // backfills the room's history from A (federation_gaps.rs), down to its creation.
    assert!(timeline.iter().all(|e| e["sender"] == bob.user_id.as_str()), "{room}");
    let messages =
        bob.client.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room_id))).await;
    let chunk = messages.expect(200)["chunk"].as_array().unwrap().clone();
    assert_eq!(chunk[0]["state_key"], bob.user_id.as_str());
    assert_eq!(chunk.last().unwrap()["type"], "m.room.create", "{chunk:?}");

    let expected =
        vec![(alice.user_id.to_string(), "join".to_owned()), (bob.user_id.to_string(), "join".to_owned())];
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(members(&bob, &room_id).await, expected_sorted);
    assert_eq!(members(&alice, &room_id).await, expected_sorted);
    let name =
        bob.client.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room_id))).await;
    assert_eq!(name.expect(200)["name"], "Lobby");

    // Joining again changes nothing (made here now that B is in the room).
    let again =
        bob.client.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room_id)), &json!({})).await;
    assert_eq!(again.expect(200)["room_id"], room_id.as_str());

    let before_leave = bob.client.get("/_matrix/client/v3/sync").await.expect(200)["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    // B's user leaves: through A (make_leave / send_leave), and B records it too.
    let left =
        bob.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), &json!({})).await;
    left.expect(200);
    let mut after =
        vec![(alice.user_id.to_string(), "join".to_owned()), (bob.user_id.to_string(), "leave".to_owned())];
    after.sort();
    assert_eq!(members(&alice, &room_id).await, after);
    let sync = bob.client.get(&format!("/_matrix/client/v3/sync?since={before_leave}")).await;
    assert!(sync.expect(200)["rooms"]["leave"].get(&room_id).is_some(), "{}", sync.json);
}

#[tokio::test]
async fn a_failed_remote_join_answers_as_synapse_and_stores_nothing() {
    let (_certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;

    // An invite-only room: A refuses the join, B answers 403 as A did.
    let created =
        alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat"})).await;
    let private_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    let create_id = create_id_of(&alice, &private_id).await;
    let refused = bob
        .client
        .post(
            &format!("/_matrix/client/v3/join/{}?via={}", enc(&private_id), enc(&a.server_name)),
            &json!({}),
        )
        .await;
    refused.expect_error(403, "M_FORBIDDEN");
    assert!(!b_knows_room(&b, &private_id, Some(&create_id)).await);

    // A server that is down: every candidate failed, 502 M_UNKNOWN.
    let down = format!("c.test:{}", free_port());
    let unreachable = bob
        .client
        .post(
            &format!("/_matrix/client/v3/join/{}?via={}", enc(&format!("!nowhere:{down}")), enc(&down)),
            &json!({}),
        )
        .await;
    unreachable.expect_error(502, "M_UNKNOWN");
    assert!(!b_knows_room(&b, &format!("!nowhere:{down}"), None).await);

    // A room A does not know (A answers 404): also every candidate failed.
    let unknown = format!("!unknown:{}", a.server_name);
    let missing = bob
        .client
        .post(&format!("/_matrix/client/v3/join/{}?via={}", enc(&unknown), enc(&a.server_name)), &json!({}))
        .await;
    missing.expect_error(502, "M_UNKNOWN");
    assert!(!b_knows_room(&b, &unknown, None).await);

    // No server to ask at all (a v12 room ID names none): 404 as Synapse answers.
    let nowhere = bob
        .client
        .post("/_matrix/client/v3/join/!abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ", &json!({}))
        .await;
    nowhere.expect_error(404, "M_NOT_FOUND");

    // A `via` that is not a server name is the client's error.
    let bad = bob
        .client
        .post(&format!("/_matrix/client/v3/join/{}?via=bad%20name", enc(&private_id)), &json!({}))
        .await;
    bad.expect_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn an_alias_of_another_server_is_resolved_there() {
    let (_certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let created = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    let alias = format!("#lobby:{}", a.server_name);
    alice
        .client
        .put(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), &json!({"room_id": room_id}))
        .await
        .expect(200);

    // An alias A does not have: 404 as A says.
    let missing = bob
        .client
        .get(&format!("/_matrix/client/v3/directory/room/{}", enc(&format!("#nope:{}", a.server_name))))
        .await;
    missing.expect_error(404, "M_NOT_FOUND");
    // A server that is down: 502.
    let down = format!("#x:c.test:{}", free_port());
    let unreachable = bob.client.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&down))).await;
    unreachable.expect_error(502, "M_UNKNOWN");

    // The alias A has resolves on B to the room and A as a server to join through, and joining
    // by the alias alone works.
    let resolved = bob.client.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias))).await;
    let body = resolved.expect(200);
    assert_eq!(body["room_id"], room_id.as_str(), "{body}");
    assert_eq!(body["servers"], json!([a.server_name.clone()]), "{body}");
    let joined = bob.client.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), &json!({})).await;
    assert_eq!(joined.expect(200)["room_id"], room_id.as_str());
    let expected = vec![(alice.user_id.clone(), "join".to_owned()), (bob.user_id.clone(), "join".to_owned())];
    assert_eq!(members(&alice, &room_id).await, expected);
    assert_eq!(members(&bob, &room_id).await, expected);
}

/// The integration test the lead finishes after the merge: needs the outbound queue (fed-out)
/// to carry each side's messages and `/send` (fed-in) to take them in.
#[tokio::test]
async fn messages_flow_both_ways_after_a_remote_join() {
    let (_certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let created = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    bob.client
        .post(&format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(&a.server_name)), &json!({}))
        .await
        .expect(200);
    let send = |user: &myelin_test_support::TestUser, body: &str, txn: &str| {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(&room_id));
        let client = user.client.clone();
        let body = json!({"msgtype": "m.text", "body": body});
        async move { client.put(&path, &body).await.expect(200)["event_id"].as_str().unwrap().to_owned() }
    };
    let from_alice = send(&alice, "hello from A", "1").await;
    let from_bob = send(&bob, "hello from B", "1").await;
    // Each side long-polls its sync until the other's message is there.
    for (user, wanted) in [(&bob, &from_alice), (&alice, &from_bob)] {
        let mut since = String::new();
        let mut seen = false;
        for _ in 0..20 {
            let path = if since.is_empty() {
                "/_matrix/client/v3/sync?timeout=3000".to_owned()
            } else {
                format!("/_matrix/client/v3/sync?timeout=3000&since={since}")
            };
            let sync = user.client.get(&path).await;
            let body = sync.expect(200).clone();
            since = body["next_batch"].as_str().unwrap().to_owned();
            let events =
                body["rooms"]["join"][&room_id]["timeline"]["events"].as_array().cloned().unwrap_or_default();
            if events.iter().any(|e| e["event_id"] == wanted.as_str()) {
                seen = true;
                break;
            }
        }
        assert!(seen, "{} never saw {wanted}", user.user_id);
    }
}

/// B's admin room list entry of a room, once `done` holds of it (events from A arrive in the
/// background), or the last entry seen.
async fn b_list_entry(
    admin: &myelin_test_support::TestUser,
    room_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut entry = Value::Null;
    for _ in 0..100 {
        let list = admin.client.get("/_synapse/admin/v1/rooms?order_by=name").await;
        let body = list.expect(200);
        entry = body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|room| room["room_id"] == room_id)
            .cloned()
            .unwrap_or(Value::Null);
        if done(&entry) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    entry
}

#[tokio::test]
async fn a_remote_joined_room_is_in_the_admin_room_list_with_its_name_and_counts() {
    let (_certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let b_admin = b.register_admin("admin").await;
    let created = alice
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"preset": "public_chat", "name": "Lobby", "topic": "hi"}),
        )
        .await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    bob.client
        .post(&format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(&a.server_name)), &json!({}))
        .await
        .expect(200);

    // The state B received with the join makes the row.
    let entry = b_list_entry(&b_admin, &room_id, |entry| !entry.is_null()).await;
    assert_eq!(entry["name"], "Lobby", "{entry}");
    assert_eq!(entry["joined_members"], 2, "{entry}");
    assert_eq!(entry["joined_local_members"], 1, "{entry}");
    assert_eq!(entry["join_rules"], "public", "{entry}");
    assert_eq!(entry["creator"], alice.user_id.as_str(), "{entry}");
    let search = b_admin.client.get("/_synapse/admin/v1/rooms?search_term=lobb").await;
    assert_eq!(search.expect(200)["rooms"][0]["room_id"], room_id.as_str());
    let details = b_admin.client.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&room_id))).await;
    assert_eq!(details.expect(200)["topic"], "hi");

    // A rename on A reaches B's list through federation.
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room_id)),
            &json!({"name": "Hall"}),
        )
        .await
        .expect(200);
    let entry = b_list_entry(&b_admin, &room_id, |entry| entry["name"] == "Hall").await;
    assert_eq!(entry["name"], "Hall", "{entry}");

    // B's user leaves: no local member is left.
    bob.client
        .post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), &json!({}))
        .await
        .expect(200);
    let entry = b_list_entry(&b_admin, &room_id, |entry| entry["joined_local_members"] == 0).await;
    assert_eq!(entry["joined_local_members"], 0, "{entry}");
    assert_eq!(entry["joined_members"], 1, "{entry}");
}

// A join or a knock through another server is the user's write as any other: refused to a
// user who has not consented to the privacy policy, or is suspended, before any server is
// asked.
#[tokio::test]
async fn remote_joins_and_knocks_need_consent_and_an_unsuspended_account() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let templates = crate::consent::templates();
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), crate::consent::consent_config(&templates, json!({})))
        .await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let admin = b.register_admin("admin").await;
    let public = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let public = public.expect(200)["room_id"].as_str().unwrap().to_owned();
    let knockable = alice
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
        )
        .await;
    let knockable = knockable.expect(200)["room_id"].as_str().unwrap().to_owned();
    let via = enc(&a.server_name);
    let join_path = format!("/_matrix/client/v3/join/{}?via={via}", enc(&public));
    let knock_path = format!("/_matrix/client/v3/knock/{}?via={via}", enc(&knockable));
    let only_alice = vec![(alice.user_id.clone(), "join".to_owned())];

    bob.client.post(&join_path, &json!({})).await.expect_error(403, "M_CONSENT_NOT_GIVEN");
    bob.client.post(&knock_path, &json!({})).await.expect_error(403, "M_CONSENT_NOT_GIVEN");
    assert_eq!(members(&alice, &public).await, only_alice);
    assert_eq!(members(&alice, &knockable).await, only_alice);
    let consented = crate::consent::post_form(
        &b,
        "/_matrix/consent",
        &format!("u=bob&h={}&v=1.0", crate::consent::BOB_MAC),
    )
    .await;
    assert_eq!(consented.status, 200);

    let suspend = format!("/_synapse/admin/v1/suspend/{}", bob.user_id);
    admin.client.put(&suspend, &json!({"suspend": true})).await.expect(200);
    bob.client.post(&join_path, &json!({})).await.expect_error(403, "M_USER_SUSPENDED");
    bob.client.post(&knock_path, &json!({})).await.expect_error(403, "M_USER_SUSPENDED");
    assert_eq!(members(&alice, &public).await, only_alice);

    admin.client.put(&suspend, &json!({"suspend": false})).await.expect(200);
    bob.client.post(&join_path, &json!({})).await.expect(200);
    bob.client.post(&knock_path, &json!({})).await.expect(200);
    assert!(members(&alice, &public).await.contains(&(bob.user_id.clone(), "join".to_owned())));
    a.stop().await;
    b.stop().await;
}
