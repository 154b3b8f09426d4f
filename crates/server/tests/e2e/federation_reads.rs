//! What other servers read (server-server API): `/event`, `/state`, `/state_ids`,
//! `/event_auth`, `/backfill`, `/get_missing_events`, `/timestamp_to_event`,
//! `/query/directory`, `/publicRooms`, `/user/devices`, `/user/keys/query|claim`,
//! `/openid/userinfo`, and the gate in front of the room reads (`m.room.server_acl`, the
//! origin's membership, history visibility).
//!
//! Requests are signed with B's real key by `federation_request`; B's user joins A's room
//! through the resident side of joins (`federation_resident`'s helpers).

use std::collections::BTreeSet;

use myelin_test_support::TestServer;
use myelin_test_support::federation::{TestCertificates, federating_server, federation_request};
use serde_json::{Value, json};

use crate::e2e_keys::DeviceKey;
use crate::federation_resident::{join_from_b, two_servers};
use crate::rooms::{create_room, send_text};

fn enc(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn get(from: &TestServer, to: &TestServer, path: &str) -> (u16, Value) {
    federation_request(from, to, "GET", path, None).await
}

async fn post(from: &TestServer, to: &TestServer, path: &str, body: Value) -> (u16, Value) {
    federation_request(from, to, "POST", path, Some(&body)).await
}

fn assert_error(answer: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["errcode"], errcode, "{}", answer.1);
}

fn state_ids_path(room_id: &str, event_id: &str) -> String {
    format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(room_id), enc(event_id))
}

fn state_path(room_id: &str, event_id: &str) -> String {
    format!("/_matrix/federation/v1/state/{}?event_id={}", enc(room_id), enc(event_id))
}

fn event_path(event_id: &str) -> String {
    format!("/_matrix/federation/v1/event/{}", enc(event_id))
}

fn event_auth_path(room_id: &str, event_id: &str) -> String {
    format!("/_matrix/federation/v1/event_auth/{}/{}", enc(room_id), enc(event_id))
}

fn backfill_path(room_id: &str, from: &[&str], limit: u64) -> String {
    let from: String = from.iter().map(|id| format!("v={}&", enc(id))).collect();
    format!("/_matrix/federation/v1/backfill/{}?{from}limit={limit}", enc(room_id))
}

fn missing_path(room_id: &str) -> String {
    format!("/_matrix/federation/v1/get_missing_events/{}", enc(room_id))
}

fn timestamp_path(room_id: &str, ts: u64, dir: &str) -> String {
    format!("/_matrix/federation/v1/timestamp_to_event/{}?ts={ts}&dir={dir}", enc(room_id))
}

fn bodies(pdus: &Value) -> Vec<String> {
    pdus.as_array()
        .unwrap()
        .iter()
        .map(|pdu| pdu["content"]["body"].as_str().unwrap_or("<state>").to_owned())
        .collect()
}

fn depths(pdus: &Value) -> Vec<u64> {
    pdus.as_array().unwrap().iter().map(|pdu| pdu["depth"].as_u64().unwrap()).collect()
}

/// The room's current state event IDs, as its members read them.
async fn state_event_ids(user: &myelin_test_support::TestUser, room_id: &str) -> BTreeSet<String> {
    let state =
        user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state")).await.expect(200).clone();
    state.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

async fn create_event_id(user: &myelin_test_support::TestUser, room_id: &str) -> String {
    let state =
        user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state")).await.expect(200).clone();
    state.as_array().unwrap().iter().find(|e| e["type"] == "m.room.create").unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn servers_without_a_member_are_refused_except_for_world_readable_events() {
    let certs = TestCertificates::new();
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    let message = send_text(&alice, &room_id, "t1", "hello").await;

    for answer in [
        get(&b, &a, &state_ids_path(&room_id, &message)).await,
        get(&b, &a, &state_path(&room_id, &message)).await,
        get(&b, &a, &event_path(&message)).await,
        get(&b, &a, &event_auth_path(&room_id, &message)).await,
        get(&b, &a, &backfill_path(&room_id, &[&message], 10)).await,
        get(&b, &a, &timestamp_path(&room_id, 0, "f")).await,
        post(&b, &a, &missing_path(&room_id), json!({"earliest_events": [], "latest_events": [message]}))
            .await,
    ] {
        assert_error(&answer, 403, "M_FORBIDDEN");
    }

    // Unknown rooms and events are not found.
    let unknown_room = format!("!nope:{}", a.server_name);
    assert_error(&get(&b, &a, &state_ids_path(&unknown_room, &message)).await, 404, "M_NOT_FOUND");
    assert_error(&get(&b, &a, &backfill_path(&unknown_room, &[&message], 10)).await, 404, "M_NOT_FOUND");
    assert_error(&get(&b, &a, &event_path("$unknown-event")).await, 404, "M_NOT_FOUND");

    // The events of world-readable history may be read by anyone.
    let open_room = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}
        ]}),
    )
    .await;
    let open_message = send_text(&alice, &open_room, "t2", "for everyone").await;
    let (status, body) = get(&b, &a, &event_path(&open_message)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["origin"], a.server_name);
    assert!(body["origin_server_ts"].is_u64());
    assert_eq!(bodies(&body["pdus"]), ["for everyone"]);
    assert_eq!(body["pdus"][0]["room_id"], open_room);
    assert!(body["pdus"][0]["signatures"][&a.server_name].is_object(), "{body}");
    // ... but not its state, which needs a member.
    assert_error(&get(&b, &a, &state_ids_path(&open_room, &open_message)).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn members_read_state_auth_chains_backfill_and_missing_events_until_the_acl_denies_them() {
    let (_certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    // History only members see: what was said before B's user joined reaches B redacted.
    let room_id = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}
        ]}),
    )
    .await;
    let before_join = send_text(&alice, &room_id, "t0", "before bob").await;
    assert_error(&get(&b, &a, &state_ids_path(&room_id, &before_join)).await, 403, "M_FORBIDDEN");
    join_from_b(&a, &b, &room_id, &format!("@bob:{}", b.server_name)).await;
    let mut messages = Vec::new();
    for n in 1..=5 {
        messages.push(send_text(&alice, &room_id, &format!("t{n}"), &format!("m{n}")).await);
    }
    let create_id = create_event_id(&alice, &room_id).await;
    let current_state = state_event_ids(&alice, &room_id).await;

    // The state before a message is the room's state (nothing changed since), with its auth
    // chain, which reaches the create event.
    let (status, body) = get(&b, &a, &state_ids_path(&room_id, &messages[2])).await;
    assert_eq!(status, 200, "{body}");
    let pdu_ids: BTreeSet<String> =
        body["pdu_ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
    assert_eq!(pdu_ids, current_state);
    let auth_chain_ids: Vec<&str> =
        body["auth_chain_ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap()).collect();
    assert!(auth_chain_ids.contains(&create_id.as_str()), "{body}");

    let (status, body) = get(&b, &a, &state_path(&room_id, &messages[2])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pdus"].as_array().unwrap().len(), current_state.len());
    assert!(body["auth_chain"].as_array().unwrap().iter().any(|pdu| pdu["type"] == "m.room.create"));

    // The state before the create event is empty.
    let (status, body) = get(&b, &a, &state_ids_path(&room_id, &create_id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pdu_ids"], json!([]));

    // The auth chain of a message: create, power levels, join rules' peers, the sender's join.
    let (status, body) = get(&b, &a, &event_auth_path(&room_id, &messages[0])).await;
    assert_eq!(status, 200, "{body}");
    let types: BTreeSet<&str> =
        body["auth_chain"].as_array().unwrap().iter().map(|pdu| pdu["type"].as_str().unwrap()).collect();
    for kind in ["m.room.create", "m.room.member", "m.room.power_levels"] {
        assert!(types.contains(kind), "{kind} missing from {body}");
    }

    // Backfill from the latest message: it and the earlier ones, deepest first, `limit` of them.
    let (status, body) = get(&b, &a, &backfill_path(&room_id, &[&messages[4]], 3)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["origin"], a.server_name);
    assert_eq!(bodies(&body["pdus"]), ["m5", "m4", "m3"]);
    let found = depths(&body["pdus"]);
    assert!(found.windows(2).all(|pair| pair[0] > pair[1]), "{found:?}");
    // Walking on reaches the room's creation.
    let (_, body) = get(&b, &a, &backfill_path(&room_id, &[&messages[4]], 1000)).await;
    let pdus = body["pdus"].as_array().unwrap();
    assert_eq!(pdus.last().unwrap()["type"], "m.room.create");
    assert!(pdus.len() > 5 && pdus.len() <= 100);
    // An unknown starting point gives nothing; a missing limit is refused.
    let (status, body) = get(&b, &a, &backfill_path(&room_id, &["$unknown"], 10)).await;
    assert_eq!((status, body["pdus"].clone()), (200, json!([])));
    let no_limit = format!("/_matrix/federation/v1/backfill/{}?v={}", enc(&room_id), enc(&messages[0]));
    assert_error(&get(&b, &a, &no_limit).await, 400, "M_MISSING_PARAM");

    // Missing events: the gap between earliest and latest, oldest first.
    let (status, body) = post(
        &b,
        &a,
        &missing_path(&room_id),
        json!({"earliest_events": [messages[0]], "latest_events": [messages[4]], "limit": 10, "min_depth": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bodies(&body["events"]), ["m2", "m3", "m4"]);
    // `limit` (default 10) counts from the latest end.
    let (_, body) = post(
        &b,
        &a,
        &missing_path(&room_id),
        json!({"earliest_events": [messages[0]], "latest_events": [messages[4]], "limit": 2}),
    )
    .await;
    assert_eq!(bodies(&body["events"]), ["m3", "m4"]);
    let bad = post(&b, &a, &missing_path(&room_id), json!({"earliest_events": "nope"})).await;
    assert_error(&bad, 400, "M_BAD_JSON");

    // The event nearest a timestamp.
    let (status, body) = get(&b, &a, &timestamp_path(&room_id, u64::MAX >> 12, "b")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_id"], messages[4]);
    assert!(body["origin_server_ts"].is_u64());
    assert_error(&get(&b, &a, &timestamp_path(&room_id, 0, "x")).await, 400, "M_INVALID_PARAM");

    // /event hands out what B may see whole, and the rest redacted.
    let (status, body) = get(&b, &a, &event_path(&messages[1])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bodies(&body["pdus"]), ["m2"]);
    let (status, body) = get(&b, &a, &event_path(&before_join)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pdus"][0]["type"], "m.room.message");
    assert_eq!(body["pdus"][0]["content"], json!({}), "{body}");
    assert!(body["pdus"][0]["hashes"]["sha256"].is_string(), "{body}");
    let (_, body) = get(&b, &a, &backfill_path(&room_id, &[&messages[0]], 3)).await;
    let pdus = body["pdus"].as_array().unwrap();
    assert_eq!(pdus[0]["content"]["body"], "m1");
    assert_eq!(pdus[1]["type"], "m.room.member", "B's join");
    assert_eq!((&pdus[2]["type"], &pdus[2]["content"]), (&json!("m.room.message"), &json!({})), "{body}");

    // An ACL denying the server's name (port ignored) refuses every read of the room.
    let host = b.server_name.split(':').next().unwrap().to_owned();
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.server_acl/"),
            &json!({"allow": ["*"], "deny": [host], "allow_ip_literals": true}),
        )
        .await
        .expect(200);
    for answer in [
        get(&b, &a, &state_ids_path(&room_id, &messages[2])).await,
        get(&b, &a, &state_path(&room_id, &messages[2])).await,
        get(&b, &a, &event_path(&messages[1])).await,
        get(&b, &a, &event_auth_path(&room_id, &messages[1])).await,
        get(&b, &a, &backfill_path(&room_id, &[&messages[4]], 3)).await,
        get(&b, &a, &timestamp_path(&room_id, 0, "f")).await,
        post(&b, &a, &missing_path(&room_id), json!({"earliest_events": [], "latest_events": [messages[4]]}))
            .await,
    ] {
        assert_error(&answer, 403, "M_FORBIDDEN");
    }
    // Joins and leaves go through the same gate.
    let newcomer = format!("@newcomer:{}", b.server_name);
    let make_join =
        format!("/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12", enc(&room_id), enc(&newcomer));
    assert_error(&get(&b, &a, &make_join).await, 403, "M_FORBIDDEN");
    let make_leave = format!("/_matrix/federation/v1/make_leave/{}/{}", enc(&room_id), enc(&newcomer));
    assert_error(&get(&b, &a, &make_leave).await, 403, "M_FORBIDDEN");
    // The gate others call says the same.
    let origin = ruma::ServerName::parse(&b.server_name).unwrap();
    let room = ruma::RoomId::parse(&room_id).unwrap();
    assert!(a.services().check_server_acl(&origin, &room).await.is_err());
    assert!(a.services().server_in_room(&origin, &room).await.unwrap());
}

#[tokio::test]
async fn aliases_and_the_room_directory() {
    let certs = TestCertificates::new();
    let a =
        federating_server("a.test", certs.path(), json!({"allow_public_rooms_over_federation": true})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let room_id =
        create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby"}))
            .await;
    alice
        .client
        .put(&format!("/_matrix/client/v3/directory/list/room/{room_id}"), &json!({"visibility": "public"}))
        .await
        .expect(200);

    let alias = format!("#lobby:{}", a.server_name);
    let (status, body) =
        get(&b, &a, &format!("/_matrix/federation/v1/query/directory?room_alias={}", enc(&alias))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"room_id": room_id, "servers": [a.server_name]}));
    let unknown = format!("#nothing:{}", a.server_name);
    let answer =
        get(&b, &a, &format!("/_matrix/federation/v1/query/directory?room_alias={}", enc(&unknown))).await;
    assert_error(&answer, 404, "M_NOT_FOUND");
    let elsewhere = format!("#lobby:{}", b.server_name);
    let answer =
        get(&b, &a, &format!("/_matrix/federation/v1/query/directory?room_alias={}", enc(&elsewhere))).await;
    assert_error(&answer, 400, "M_INVALID_PARAM");
    assert_error(&get(&b, &a, "/_matrix/federation/v1/query/directory").await, 400, "M_MISSING_PARAM");

    // The directory, when allowed.
    let (status, body) = get(&b, &a, "/_matrix/federation/v1/publicRooms?limit=5").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunk"][0]["room_id"], room_id);
    assert_eq!(body["chunk"][0]["name"], "Lobby");
    assert_eq!(body["total_room_count_estimate"], 1);
    let (status, body) = post(
        &b,
        &a,
        "/_matrix/federation/v1/publicRooms",
        json!({"limit": 5, "filter": {"generic_search_term": "nothing like it"}, "include_all_networks": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunk"], json!([]));
    let (status, body) =
        post(&b, &a, "/_matrix/federation/v1/publicRooms", json!({"filter": {"generic_search_term": "lob"}}))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunk"][0]["room_id"], room_id);

    // Off (Synapse's default): refused.
    let answer = get(&a, &b, "/_matrix/federation/v1/publicRooms").await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    let answer = post(&a, &b, "/_matrix/federation/v1/publicRooms", json!({})).await;
    assert_error(&answer, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn devices_keys_and_one_time_keys_of_local_users() {
    let certs = TestCertificates::new();
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let device = DeviceKey::new(&alice.user_id, &alice.device_id);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            &json!({"display_name": "Alice's phone"}),
        )
        .await
        .expect(200);
    alice
        .client
        .post(
            "/_matrix/client/v3/keys/upload",
            &json!({
                "device_keys": device.device_keys(),
                "one_time_keys": {"signed_curve25519:AAAA": device.one_time_key("otk")},
            }),
        )
        .await
        .expect(200);

    let (status, body) =
        get(&b, &a, &format!("/_matrix/federation/v1/user/devices/{}", enc(&alice.user_id))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], alice.user_id);
    assert!(body["stream_id"].is_i64(), "{body}");
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{body}");
    assert_eq!(devices[0]["device_id"], alice.device_id);
    assert_eq!(devices[0]["keys"]["keys"], device.device_keys()["keys"]);
    // Device names stay private (Synapse's `allow_device_name_lookup_over_federation`).
    assert!(!body.to_string().contains("Alice's phone"), "{body}");
    let bob_on_b = format!("@bob:{}", b.server_name);
    let answer = get(&b, &a, &format!("/_matrix/federation/v1/user/devices/{}", enc(&bob_on_b))).await;
    assert_error(&answer, 400, "M_INVALID_PARAM");

    let (status, body) =
        post(&b, &a, "/_matrix/federation/v1/user/keys/query", json!({"device_keys": {&alice.user_id: []}}))
            .await;
    assert_eq!(status, 200, "{body}");
    let keys = &body["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(keys["keys"], device.device_keys()["keys"]);
    assert_eq!(keys["device_id"], alice.device_id);
    assert!(body["master_keys"].is_object() && body["self_signing_keys"].is_object(), "{body}");
    assert!(body.get("user_signing_keys").is_none(), "{body}");
    let answer =
        post(&b, &a, "/_matrix/federation/v1/user/keys/query", json!({"device_keys": {&bob_on_b: []}})).await;
    assert_error(&answer, 400, "M_INVALID_PARAM");
    let answer = post(&b, &a, "/_matrix/federation/v1/user/keys/query", json!({"device_keys": []})).await;
    assert_error(&answer, 400, "M_BAD_JSON");

    // A one-time key is handed out once.
    let claim = json!({"one_time_keys": {&alice.user_id: {&alice.device_id: "signed_curve25519"}}});
    let (status, body) = post(&b, &a, "/_matrix/federation/v1/user/keys/claim", claim.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:AAAA"],
        device.one_time_key("otk")
    );
    let (status, body) = post(&b, &a, "/_matrix/federation/v1/user/keys/claim", claim).await;
    assert_eq!((status, body), (200, json!({"one_time_keys": {}})));
    let answer = post(
        &b,
        &a,
        "/_matrix/federation/v1/user/keys/claim",
        json!({"one_time_keys": {&bob_on_b: {"DEV": "signed_curve25519"}}}),
    )
    .await;
    assert_error(&answer, 400, "M_INVALID_PARAM");

    // Unsigned requests are refused.
    let response =
        a.client().get(&format!("/_matrix/federation/v1/user/devices/{}", enc(&alice.user_id))).await;
    response.expect_error(401, "M_UNAUTHORIZED");
}

#[tokio::test]
async fn openid_tokens_identify_their_user_to_third_parties() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("/_matrix/client/v3/user/{}/openid/request_token", enc(&alice.user_id));
    let token = alice.client.post(&path, &json!({})).await.expect(200).clone();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["matrix_server_name"], server.server_name);
    assert_eq!(token["expires_in"], 3600);
    let access_token = token["access_token"].as_str().unwrap();

    // Asked without a server signature: the token is the credential.
    let userinfo =
        |token: &str| format!("/_matrix/federation/v1/openid/userinfo?access_token={}", enc(token));
    let body = server.client().get(&userinfo(access_token)).await.expect(200).clone();
    assert_eq!(body, json!({"sub": alice.user_id}));
    server.client().get(&userinfo("not-a-token")).await.expect_error(401, "M_UNKNOWN_TOKEN");
    server.client().get("/_matrix/federation/v1/openid/userinfo").await.expect_error(401, "M_MISSING_TOKEN");

    // Only for oneself.
    bob.client.post(&path, &json!({})).await.expect_error(403, "M_FORBIDDEN");

    // A token outlives a restart (it is stored, by its hash, not kept in memory).
    let mut server = server;
    server.restart().await;
    let body = server.client().get(&userinfo(access_token)).await.expect(200).clone();
    assert_eq!(body, json!({"sub": alice.user_id}));
    server.client().get(&userinfo("not-a-token")).await.expect_error(401, "M_UNKNOWN_TOKEN");
}
