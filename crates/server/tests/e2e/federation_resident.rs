//! The resident side of joins and leaves: server A has a room, the test plays server B by hand
//! (requests signed with B's real key, events hashed and signed with it): `make_join` /
//! `send_join` and `make_leave` / `send_leave`, and what they refuse.

use myelin_test_support::TestServer;
use myelin_test_support::federation::{federating_server, federation_request, write_certificates};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId};
use serde_json::{Value, json};

/// A path segment, percent-encoded.
pub(crate) fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Two federating servers sharing a test CA (kept alive with them).
pub(crate) async fn two_servers() -> (tempfile::TempDir, TestServer, TestServer) {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    (certs, a, b)
}

/// Hashes and signs `event` as `server` in the room version's format; returns its event ID.
pub(crate) fn sign_event(server: &TestServer, version: &str, event: Value) -> (String, Value) {
    let rules = RoomVersionId::try_from(version).unwrap().rules().unwrap();
    let mut object: CanonicalJsonObject = serde_json::from_value(event).unwrap();
    let legacy_ids = rules.event_id_format == ruma::room_version_rules::EventIdFormatVersion::V1;
    if legacy_ids {
        let local: String = (0..18).map(|_| char::from(b'a' + rand::random::<u8>() % 26)).collect();
        object.insert(
            "event_id".to_owned(),
            CanonicalJsonValue::String(format!("${local}:{}", server.server_name)),
        );
    }
    ruma::signatures::hash_and_sign_event(
        &server.server_name,
        server.services().keys.key_pair(),
        &mut object,
        &rules.redaction,
    )
    .unwrap();
    let event_id = match object.get("event_id") {
        Some(CanonicalJsonValue::String(id)) if legacy_ids => id.clone(),
        _ => format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap()),
    };
    (event_id, serde_json::to_value(object).unwrap())
}

pub(crate) async fn make_membership(
    b: &TestServer,
    a: &TestServer,
    kind: &str,
    room_id: &str,
    user_id: &str,
    query: &str,
) -> (u16, Value) {
    let path = format!("/_matrix/federation/v1/make_{kind}/{}/{}{query}", enc(room_id), enc(user_id));
    federation_request(b, a, "GET", &path, None).await
}

pub(crate) async fn send_membership(
    b: &TestServer,
    a: &TestServer,
    kind: &str,
    api: &str,
    room_id: &str,
    event_id: &str,
    event: &Value,
) -> (u16, Value) {
    let path = format!("/_matrix/federation/{api}/send_{kind}/{}/{}", enc(room_id), enc(event_id));
    federation_request(b, a, "PUT", &path, Some(event)).await
}

/// B's user `user_id` joins A's room through make_join and send_join v2; returns the
/// send_join answer and the room version.
pub(crate) async fn join_from_b(
    a: &TestServer,
    b: &TestServer,
    room_id: &str,
    user_id: &str,
) -> (Value, String) {
    let (status, template) = make_membership(b, a, "join", room_id, user_id, "?ver=10&ver=11&ver=12").await;
    assert_eq!(status, 200, "{template}");
    let version = template["room_version"].as_str().unwrap().to_owned();
    let (event_id, event) = sign_event(b, &version, template["event"].clone());
    let (status, answer) = send_membership(b, a, "join", "v2", room_id, &event_id, &event).await;
    assert_eq!(status, 200, "{answer}");
    (answer, version)
}

pub(crate) async fn create_public_room(user: &myelin_test_support::TestUser) -> String {
    let created = user.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    created.expect(200)["room_id"].as_str().unwrap().to_owned()
}

async fn membership_of(user: &myelin_test_support::TestUser, room_id: &str, member: &str) -> Option<String> {
    let members = user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/members")).await;
    members.expect(200)["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["state_key"] == member)
        .map(|event| event["content"]["membership"].as_str().unwrap().to_owned())
}

fn types_of(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_remote_user_joins_and_leaves_through_the_resident_server() {
    let (_certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let room_id = create_public_room(&alice).await;
    let bob = format!("@bob:{}", b.server_name);

    // make_join: a template on the room's head, for B to sign.
    let (status, template) = make_membership(&b, &a, "join", &room_id, &bob, "?ver=10&ver=11").await;
    assert_eq!(status, 200, "{template}");
    let version = template["room_version"].as_str().unwrap().to_owned();
    let event = &template["event"];
    assert_eq!(event["type"], "m.room.member");
    assert_eq!(event["state_key"], bob.as_str());
    assert_eq!(event["sender"], bob.as_str());
    assert_eq!(event["room_id"], room_id.as_str());
    assert_eq!(event["content"]["membership"], "join");
    assert_eq!(event["origin"], a.server_name.as_str());
    assert!(event["origin_server_ts"].is_u64() && event["depth"].is_u64());
    assert_eq!(event["prev_events"].as_array().unwrap().len(), 1);
    assert_eq!(event["auth_events"].as_array().unwrap().len(), 3, "create, power levels, join rules");
    assert!(event.get("signatures").is_none() && event.get("hashes").is_none());

    // send_join v2: the join goes in; the answer carries the state before it and its auth chain.
    let (event_id, signed) = sign_event(&b, &version, template["event"].clone());
    let (status, answer) = send_membership(&b, &a, "join", "v2", &room_id, &event_id, &signed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["origin"], a.server_name.as_str());
    assert_eq!(answer["members_omitted"], false);
    assert_eq!(answer["event"]["state_key"], bob.as_str());
    let state_types = types_of(&answer["state"]);
    for kind in ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules"] {
        assert!(state_types.iter().any(|t| t == kind), "{kind} in {state_types:?}");
    }
    assert!(
        !answer["state"].as_array().unwrap().iter().any(|e| e["state_key"] == bob.as_str()),
        "the state is the state before the join"
    );
    assert!(types_of(&answer["auth_chain"]).iter().any(|t| t == "m.room.create"));
    let mut servers: Vec<&str> =
        answer["servers_in_room"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    servers.sort_unstable();
    let mut expected = vec![a.server_name.as_str(), b.server_name.as_str()];
    expected.sort_unstable();
    assert_eq!(servers, expected);

    // Alice sees Bob joined, in /members and in /sync.
    assert_eq!(membership_of(&alice, &room_id, &bob).await.as_deref(), Some("join"));
    let sync = alice.client.get("/_matrix/client/v3/sync").await;
    let timeline = &sync.expect(200)["rooms"]["join"][&room_id]["timeline"]["events"];
    assert!(timeline.as_array().unwrap().iter().any(|e| e["event_id"] == event_id.as_str()), "{timeline}");
    // Sending the same join again is answered the same way.
    let (status, again) = send_membership(&b, &a, "join", "v2", &room_id, &event_id, &signed).await;
    assert_eq!(status, 200, "{again}");

    // Alice's next event builds on Bob's join.
    let sent = alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"),
            &json!({"msgtype": "m.text", "body": "welcome"}),
        )
        .await;
    let message_id = sent.expect(200)["event_id"].as_str().unwrap().to_owned();
    let message = a.services().get_room_event(&ruma::EventId::parse(&message_id).unwrap()).await.unwrap();
    assert_eq!(message.unwrap().pdu.prev_events, vec![ruma::EventId::parse(&event_id).unwrap()]);

    // make_leave + send_leave v2.
    let (status, template) = make_membership(&b, &a, "leave", &room_id, &bob, "").await;
    assert_eq!(status, 200, "{template}");
    assert_eq!(template["event"]["content"]["membership"], "leave");
    let (leave_id, leave) = sign_event(&b, &version, template["event"].clone());
    let (status, answer) = send_membership(&b, &a, "leave", "v2", &room_id, &leave_id, &leave).await;
    assert_eq!((status, answer), (200, json!({})));
    assert_eq!(membership_of(&alice, &room_id, &bob).await.as_deref(), Some("leave"));
}

#[tokio::test]
async fn send_join_and_send_leave_v1_answer_in_the_v1_shape() {
    let (_certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let room_id = create_public_room(&alice).await;
    let bob = format!("@bob:{}", b.server_name);
    let (status, template) = make_membership(&b, &a, "join", &room_id, &bob, "?ver=10&ver=11").await;
    assert_eq!(status, 200, "{template}");
    let version = template["room_version"].as_str().unwrap().to_owned();
    let (event_id, signed) = sign_event(&b, &version, template["event"].clone());
    let (status, answer) = send_membership(&b, &a, "join", "v1", &room_id, &event_id, &signed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0], 200);
    assert!(answer[1]["state"].is_array() && answer[1]["auth_chain"].is_array(), "{answer}");
    assert_eq!(answer[1]["origin"], a.server_name.as_str());

    let (_, template) = make_membership(&b, &a, "leave", &room_id, &bob, "").await;
    let (leave_id, leave) = sign_event(&b, &version, template["event"].clone());
    let (status, answer) = send_membership(&b, &a, "leave", "v1", &room_id, &leave_id, &leave).await;
    assert_eq!((status, answer), (200, json!([200, {}])));
    assert_eq!(membership_of(&alice, &room_id, &bob).await.as_deref(), Some("leave"));
}

#[tokio::test]
async fn the_resident_server_refuses_joins_it_must_not_accept() {
    let (_certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let room_id = create_public_room(&alice).await;
    let bob = format!("@bob:{}", b.server_name);

    // A room version the joining server does not support.
    let (status, body) = make_membership(&b, &a, "join", &room_id, &bob, "?ver=1&ver=2").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errcode"], "M_INCOMPATIBLE_ROOM_VERSION");
    assert!(body["room_version"].is_string(), "{body}");
    // Without `ver`, only version 1 is supported.
    let (status, body) = make_membership(&b, &a, "join", &room_id, &bob, "").await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")));

    // A user of another server than the origin.
    let carol = "@carol:c.test";
    let (status, body) = make_membership(&b, &a, "join", &room_id, carol, "?ver=10&ver=11").await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // An unknown room.
    let unknown = format!("!nowhere:{}", a.server_name);
    let (status, body) = make_membership(&b, &a, "join", &unknown, &bob, "?ver=10&ver=11").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");

    // send_join of an event whose sender is not on the origin (signed by B for C's user).
    let (_, template) = make_membership(&b, &a, "join", &room_id, &bob, "?ver=10&ver=11").await;
    let version = template["room_version"].as_str().unwrap().to_owned();
    let mut other = template["event"].clone();
    other["sender"] = json!(carol);
    other["state_key"] = json!(carol);
    let (other_id, other) = sign_event(&b, &version, other);
    let (status, body) = send_membership(&b, &a, "join", "v2", &room_id, &other_id, &other).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // An event ID that is not the event's.
    let (event_id, signed) = sign_event(&b, &version, template["event"].clone());
    let wrong = format!("${}", "A".repeat(43));
    let (status, body) = send_membership(&b, &a, "join", "v2", &room_id, &wrong, &signed).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    // A leave sent to send_join.
    let mut leave = template["event"].clone();
    leave["content"]["membership"] = json!("leave");
    let (leave_id, leave) = sign_event(&b, &version, leave);
    let (status, body) = send_membership(&b, &a, "join", "v2", &room_id, &leave_id, &leave).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    // A join whose signature does not verify (B's signature of another event).
    let mut tampered = signed.clone();
    tampered["signatures"] = other["signatures"].clone();
    let (status, body) = send_membership(&b, &a, "join", "v2", &room_id, &event_id, &tampered).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    assert_eq!(membership_of(&alice, &room_id, &bob).await, None, "nothing was stored");

    // An invite-only room: make_join is refused, unless the user is invited.
    let private =
        alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat"})).await;
    let private = private.expect(200)["room_id"].as_str().unwrap().to_owned();
    let (status, body) = make_membership(&b, &a, "join", &private, &bob, "?ver=10&ver=11").await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // A banned user cannot join a public room.
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room_id}/ban"), &json!({"user_id": bob}))
        .await
        .expect(200);
    let (status, body) = make_membership(&b, &a, "join", &room_id, &bob, "?ver=10&ver=11").await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
}
