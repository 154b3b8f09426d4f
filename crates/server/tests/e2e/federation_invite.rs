//! Invites over federation between two (or three) real Myelins: a local user invites a user of
//! the other server, who sees the invite with its stripped state in `/sync`, accepts (a remote
//! join through the inviter's server) or rejects it (a remote leave); invites refused by the
//! invitee's server store nothing on either side.

use myelin_test_support::federation::{federating_server, federation_request, write_certificates};
use myelin_test_support::{TestServer, TestUser};
use ruma::{CanonicalJsonObject, EventId, RoomId};
use serde_json::{Value, json};

use crate::federation_resident::enc;

async fn servers(names: &[&str]) -> (tempfile::TempDir, Vec<TestServer>) {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let mut out = Vec::new();
    for name in names {
        out.push(federating_server(name, certs.path(), json!({})).await);
    }
    (certs, out)
}

async fn members(user: &TestUser, room_id: &str) -> Vec<(String, String)> {
    let members = user.client.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(room_id))).await;
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

fn membership_of(members: &[(String, String)], user: &TestUser) -> Option<String> {
    members.iter().find(|(id, _)| id == user.user_id.as_str()).map(|(_, m)| m.clone())
}

/// Long-polls `user`'s sync until `found` says yes about its body (20 rounds of 3 s at most).
async fn sync_until(user: &TestUser, what: &str, found: impl Fn(&Value) -> bool) -> Value {
    let mut since = String::new();
    for _ in 0..20 {
        let path = if since.is_empty() {
            "/_matrix/client/v3/sync?timeout=3000".to_owned()
        } else {
            format!("/_matrix/client/v3/sync?timeout=3000&since={since}")
        };
        let body = user.client.get(&path).await.expect(200).clone();
        if found(&body) {
            return body;
        }
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
    panic!("{} never saw {what}", user.user_id);
}

/// `inviter` (of its server) creates a named private room and invites `invitee` (of the other
/// server); the invitee sees it in `/sync` with its stripped state. Returns the room.
async fn invite_across(inviter: &TestUser, invitee: &TestUser) -> String {
    let created = inviter
        .client
        .post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat", "name": "Secret garden"}))
        .await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    let invited = inviter
        .client
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)),
            &json!({"user_id": invitee.user_id}),
        )
        .await;
    assert_eq!(invited.expect(200).clone(), json!({}));
    assert_eq!(membership_of(&members(inviter, &room_id).await, invitee).as_deref(), Some("invite"));

    // The invitee's server stored the invite before answering: the first sync has it.
    let sync = invitee.client.get("/_matrix/client/v3/sync").await;
    let body = sync.expect(200).clone();
    let state = body["rooms"]["invite"][&room_id]["invite_state"]["events"].as_array().cloned();
    let state = state.unwrap_or_else(|| panic!("no invite in {body}"));
    let has = |kind: &str, key: &str| {
        state.iter().find(|e| e["type"] == kind && e["state_key"] == key).cloned().unwrap_or(Value::Null)
    };
    assert_eq!(has("m.room.name", "")["content"]["name"], "Secret garden", "{state:?}");
    assert_eq!(has("m.room.create", "")["sender"], inviter.user_id.as_str(), "{state:?}");
    assert_eq!(has("m.room.join_rules", "")["content"]["join_rule"], "invite", "{state:?}");
    assert_eq!(has("m.room.member", inviter.user_id.as_str())["content"]["membership"], "join");
    let own = has("m.room.member", invitee.user_id.as_str());
    assert_eq!(own["content"]["membership"], "invite", "{state:?}");
    assert_eq!(own["sender"], inviter.user_id.as_str());
    // Stripped: type, state key, content and sender only.
    for event in &state {
        let mut keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["content", "sender", "state_key", "type"], "{event}");
    }
    // Not a joined room of the invitee, and not in the other lists.
    assert!(body["rooms"]["join"].get(&room_id).is_none(), "{body}");
    room_id
}

async fn accept_and_talk(inviter: &TestUser, invitee: &TestUser, room_id: &str) {
    let joined =
        invitee.client.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room_id)), &json!({})).await;
    assert_eq!(joined.expect(200)["room_id"], room_id);
    assert_eq!(membership_of(&members(inviter, room_id).await, invitee).as_deref(), Some("join"));
    assert_eq!(membership_of(&members(invitee, room_id).await, inviter).as_deref(), Some("join"));

    let send = |user: &TestUser, body: &str| {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{body}", enc(room_id));
        let client = user.client.clone();
        let body = json!({"msgtype": "m.text", "body": body});
        async move { client.put(&path, &body).await.expect(200)["event_id"].as_str().unwrap().to_owned() }
    };
    let from_inviter = send(inviter, "welcome").await;
    let from_invitee = send(invitee, "thanks").await;
    for (user, wanted) in [(invitee, &from_inviter), (inviter, &from_invitee)] {
        sync_until(user, wanted, |body| {
            body["rooms"]["join"][room_id]["timeline"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["event_id"] == wanted.as_str()))
        })
        .await;
    }
}

#[tokio::test]
async fn a_remote_user_is_invited_sees_the_invite_state_accepts_and_talks() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let alice = servers[0].register("alice").await;
    let bob = servers[1].register("bob").await;
    let room_id = invite_across(&alice, &bob).await;
    accept_and_talk(&alice, &bob, &room_id).await;
}

#[tokio::test]
async fn invites_work_the_other_way_too() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let alice = servers[0].register("alice").await;
    let bob = servers[1].register("bob").await;
    let room_id = invite_across(&bob, &alice).await;
    accept_and_talk(&bob, &alice, &room_id).await;
}

#[tokio::test]
async fn a_rejected_remote_invite_reaches_the_inviters_server() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let alice = servers[0].register("alice").await;
    let bob = servers[1].register("bob").await;
    let room_id = invite_across(&alice, &bob).await;
    let since = bob.client.get("/_matrix/client/v3/sync").await.expect(200)["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let left =
        bob.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), &json!({})).await;
    assert_eq!(left.expect(200).clone(), json!({}));
    // The leave went through A (make_leave / send_leave): A has it now.
    assert_eq!(membership_of(&members(&alice, &room_id).await, &bob).as_deref(), Some("leave"));
    // B's user sees the room move from invite to leave.
    let sync = bob.client.get(&format!("/_matrix/client/v3/sync?since={since}")).await;
    let body = sync.expect(200).clone();
    assert!(body["rooms"]["leave"].get(&room_id).is_some(), "{body}");
    assert!(body["rooms"]["invite"].get(&room_id).is_none(), "{body}");
    let initial = bob.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
    assert!(initial["rooms"]["invite"].get(&room_id).is_none(), "{initial}");
}

#[tokio::test]
async fn an_invite_the_remote_server_refuses_is_not_persisted() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let alice = servers[0].register("alice").await;
    let created =
        alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    let before = members(&alice, &room_id).await;

    // B has no such user: B answers 404, so does A to its client, and A stores nothing.
    let nobody = format!("@nobody:{}", servers[1].server_name);
    let invited = alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)), &json!({"user_id": nobody}))
        .await;
    assert_eq!(invited.status, 404, "{}", invited.json);
    assert_eq!(invited.json["errcode"], "M_NOT_FOUND");
    assert_eq!(members(&alice, &room_id).await, before);
    let room = RoomId::parse(&room_id).unwrap();
    assert!(servers[1].services().room_rules(&room).await.unwrap().is_none());

    // An unreachable server: the same.
    let elsewhere = "@carol:unreachable.invalid";
    let invited = alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)), &json!({"user_id": elsewhere}))
        .await;
    assert_eq!(invited.status, 502, "{}", invited.json);
    assert_eq!(invited.json["errcode"], "M_UNKNOWN");
    assert_eq!(members(&alice, &room_id).await, before);
}

/// An invite event built and signed by `from` for a room of version 10 that `to` does not know.
fn signed_invite(
    from: &TestServer,
    room_id: &str,
    sender: &str,
    invitee: &str,
) -> (String, CanonicalJsonObject) {
    let rules = ruma::RoomVersionId::V10.rules().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let fake = |c: char| format!("${}", std::iter::repeat_n(c, 43).collect::<String>());
    let mut event: CanonicalJsonObject = serde_json::from_value(json!({
        "type": "m.room.member",
        "state_key": invitee,
        "sender": sender,
        "room_id": room_id,
        "content": {"membership": "invite"},
        "origin": from.server_name,
        "origin_server_ts": now,
        "depth": 7,
        "prev_events": [fake('p')],
        "auth_events": [fake('a'), fake('b'), fake('c')],
    }))
    .unwrap();
    ruma::signatures::hash_and_sign_event(
        &from.server_name,
        from.services().keys.key_pair(),
        &mut event,
        &rules.redaction,
    )
    .unwrap();
    let event_id = format!("${}", ruma::signatures::reference_hash(&event, &rules).unwrap());
    (event_id, event)
}

fn invite_path(version: &str, room_id: &str, event_id: &str) -> String {
    format!("/_matrix/federation/{version}/invite/{}/{}", enc(room_id), enc(event_id))
}

/// Nothing of the invite is stored on `server`, and `user` has no invite.
async fn nothing_stored(server: &TestServer, user: &TestUser, room_id: &str, event_id: &str) {
    let room = RoomId::parse(room_id).unwrap();
    assert!(server.services().room_rules(&room).await.unwrap().is_none(), "room {room_id} stored");
    let event = EventId::parse(event_id).unwrap();
    assert!(server.services().get_room_event(&event).await.unwrap().is_none(), "{event_id} stored");
    let sync = user.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
    assert!(sync["rooms"]["invite"].as_object().is_none_or(|rooms| rooms.is_empty()), "{sync}");
}

#[tokio::test]
async fn inbound_invites_are_checked_and_bad_ones_store_nothing() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let bob = b.register("bob").await;
    let room_id = format!("!garden:{}", a.server_name);
    let mallory = format!("@mallory:{}", a.server_name);
    let stripped =
        json!([{"type": "m.room.name", "state_key": "", "sender": mallory, "content": {"name": "x"}}]);

    // A good one first: signed by B, stored, in bob's sync.
    let (event_id, event) = signed_invite(a, &room_id, &mallory, bob.user_id.as_str());
    let body = json!({"room_version": "10", "event": event, "invite_room_state": stripped});
    let (status, answer) =
        federation_request(a, b, "PUT", &invite_path("v2", &room_id, &event_id), Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["event"]["signatures"][&b.server_name].is_object(), "{answer}");
    assert!(answer["event"]["signatures"][&a.server_name].is_object(), "{answer}");
    let sync = bob.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
    let state = &sync["rooms"]["invite"][&room_id]["invite_state"]["events"];
    assert!(state.as_array().unwrap().iter().any(|e| e["content"]["name"] == "x"), "{sync}");

    let other_room = format!("!other:{}", a.server_name);
    // A bad signature: 403 M_FORBIDDEN.
    let (event_id, mut event) = signed_invite(a, &other_room, &mallory, bob.user_id.as_str());
    event.insert("origin_server_ts".to_owned(), ruma::CanonicalJsonValue::Integer(1_u32.into()));
    let body = json!({"room_version": "10", "event": event, "invite_room_state": []});
    let path = invite_path("v2", &other_room, &event_id);
    let (status, answer) = federation_request(a, b, "PUT", &path, Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{answer}");

    // The event ID in the path is not the event's: 400.
    let (_, event) = signed_invite(a, &other_room, &mallory, bob.user_id.as_str());
    let body = json!({"room_version": "10", "event": event, "invite_room_state": []});
    let (status, answer) = federation_request(a, b, "PUT", &path, Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{answer}");

    // An unknown local user: 404 M_NOT_FOUND.
    let nobody = format!("@nobody:{}", b.server_name);
    let (event_id, event) = signed_invite(a, &other_room, &mallory, &nobody);
    let body = json!({"room_version": "10", "event": event, "invite_room_state": []});
    let path = invite_path("v2", &other_room, &event_id);
    let (status, answer) = federation_request(a, b, "PUT", &path, Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{answer}");

    // A user of another server: 400.
    let carol = format!("@carol:{}", a.server_name);
    let (event_id, event) = signed_invite(a, &other_room, &mallory, &carol);
    let body = json!({"room_version": "10", "event": event, "invite_room_state": []});
    let path = invite_path("v2", &other_room, &event_id);
    let (status, answer) = federation_request(a, b, "PUT", &path, Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{answer}");

    // A sender of another server than the origin: 400.
    let (event_id, event) = signed_invite(a, &other_room, "@eve:elsewhere.test", bob.user_id.as_str());
    let body = json!({"room_version": "10", "event": event, "invite_room_state": []});
    let path = invite_path("v2", &other_room, &event_id);
    let (status, answer) = federation_request(a, b, "PUT", &path, Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{answer}");

    // An unsupported room version: 400 M_INCOMPATIBLE_ROOM_VERSION naming it.
    let (event_id, event) = signed_invite(a, &other_room, &mallory, bob.user_id.as_str());
    let body = json!({"room_version": "999", "event": event, "invite_room_state": []});
    let path = invite_path("v2", &other_room, &event_id);
    let (status, answer) = federation_request(a, b, "PUT", &path, Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")), "{answer}");
    assert_eq!(answer["room_version"], "999");

    // Stripped state that is not stripped events: 400 M_INVALID_PARAM.
    let body = json!({"room_version": "10", "event": event, "invite_room_state": [{"type": 1}]});
    let (status, answer) = federation_request(a, b, "PUT", &path, Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{answer}");

    // None of these stored anything; bob has the one good invite only.
    let room = RoomId::parse(&other_room).unwrap();
    assert!(b.services().room_rules(&room).await.unwrap().is_none());
    let sync = bob.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
    let invites: Vec<&String> = sync["rooms"]["invite"].as_object().unwrap().keys().collect();
    assert_eq!(invites, [&room_id]);
    let (status, _) = federation_request(a, b, "PUT", &path, Some(&json!({"event": event}))).await;
    assert_eq!(status, 400);
    nothing_stored(b, &b.register("carol").await, &other_room, &event_id).await;
}

#[tokio::test]
async fn v1_invites_are_served_for_old_room_versions() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let bob = b.register("bob").await;
    let room_id = format!("!old:{}", a.server_name);
    let mallory = format!("@mallory:{}", a.server_name);
    let rules = ruma::RoomVersionId::V1.rules().unwrap();
    let event_id = format!("$invite1:{}", a.server_name);
    let mut event: CanonicalJsonObject = serde_json::from_value(json!({
        "event_id": event_id,
        "type": "m.room.member",
        "state_key": bob.user_id,
        "sender": mallory,
        "room_id": room_id,
        "content": {"membership": "invite"},
        "origin": a.server_name,
        "origin_server_ts": 1_700_000_000_000_u64,
        "depth": 3,
        "prev_events": [[format!("$prev:{}", a.server_name), {"sha256": "abc"}]],
        "auth_events": [[format!("$create:{}", a.server_name), {"sha256": "abc"}]],
        "unsigned": {"invite_room_state": [
            {"type": "m.room.name", "state_key": "", "sender": mallory, "content": {"name": "Old"}}
        ]},
    }))
    .unwrap();
    ruma::signatures::hash_and_sign_event(
        &a.server_name,
        a.services().keys.key_pair(),
        &mut event,
        &rules.redaction,
    )
    .unwrap();
    let (status, answer) =
        federation_request(a, b, "PUT", &invite_path("v1", &room_id, &event_id), Some(&json!(event))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0], 200);
    assert!(answer[1]["event"]["signatures"][&b.server_name].is_object(), "{answer}");
    let sync = bob.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
    let state = &sync["rooms"]["invite"][&room_id]["invite_state"]["events"];
    assert!(state.as_array().unwrap().iter().any(|e| e["content"]["name"] == "Old"), "{sync}");
}

#[tokio::test]
async fn invites_from_a_server_the_acl_denies_are_refused() {
    let (_certs, servers) = servers(&["a.test", "b.test", "c.test"]).await;
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let created = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    bob.client
        .post(&format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(&a.server_name)), &json!({}))
        .await
        .expect(200);
    let acl = json!({"allow": ["*"], "deny": ["c.test"], "allow_ip_literals": true});
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl/", enc(&room_id));
    alice.client.put(&path, &acl).await.expect(200);
    // Wait until B has the ACL.
    let acl_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl/", enc(&room_id));
    sync_until(&bob, "the server ACL", |body| {
        body["rooms"]["join"][&room_id]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == "m.room.server_acl"))
    })
    .await;
    bob.client.get(&acl_path).await.expect(200);

    let carol = b.register("carol").await;
    let mallory = format!("@mallory:{}", c.server_name);
    let (event_id, event) = signed_invite(c, &room_id, &mallory, carol.user_id.as_str());
    let body = json!({"room_version": "10", "event": event, "invite_room_state": []});
    let (status, answer) =
        federation_request(c, b, "PUT", &invite_path("v2", &room_id, &event_id), Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{answer}");
    let event = EventId::parse(&event_id).unwrap();
    assert!(b.services().get_room_event(&event).await.unwrap().is_none());
    let sync = carol.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
    assert!(sync["rooms"]["invite"].as_object().is_none_or(|rooms| rooms.is_empty()), "{sync}");
}

#[tokio::test]
async fn invites_from_a_server_off_the_whitelist_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b =
        federating_server("b.test", certs.path(), json!({"federation_domain_whitelist": ["c.test"]})).await;
    let bob = b.register("bob").await;
    let room_id = format!("!garden:{}", a.server_name);
    let mallory = format!("@mallory:{}", a.server_name);
    let (event_id, event) = signed_invite(&a, &room_id, &mallory, bob.user_id.as_str());
    let body = json!({"room_version": "10", "event": event, "invite_room_state": []});
    let (status, answer) =
        federation_request(&a, &b, "PUT", &invite_path("v2", &room_id, &event_id), Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{answer}");
    nothing_stored(&b, &bob, &room_id, &event_id).await;
}

/// `owner` (of its server) creates a room with the `knock` join rule; `knocker` (of the other
/// server) knocks through the owner's server and sees the knock in `/sync` with its stripped
/// state; the owner's server has the knock. Returns the room.
async fn knock_across(owner: &TestUser, owner_server: &TestServer, knocker: &TestUser) -> String {
    let created = owner
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({
                "preset": "private_chat",
                "name": "Knock knock",
                "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
            }),
        )
        .await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    let knocked = knocker
        .client
        .post(
            &format!("/_matrix/client/v3/knock/{}?via={}", enc(&room_id), enc(&owner_server.server_name)),
            &json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(knocked.expect(200)["room_id"], room_id.as_str());
    assert_eq!(membership_of(&members(owner, &room_id).await, knocker).as_deref(), Some("knock"));

    let sync = knocker.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
    let state = sync["rooms"]["knock"][&room_id]["knock_state"]["events"].as_array().cloned();
    let state = state.unwrap_or_else(|| panic!("no knock in {sync}"));
    let has = |kind: &str, key: &str| {
        state.iter().find(|e| e["type"] == kind && e["state_key"] == key).cloned().unwrap_or(Value::Null)
    };
    assert_eq!(has("m.room.name", "")["content"]["name"], "Knock knock", "{state:?}");
    assert_eq!(has("m.room.join_rules", "")["content"]["join_rule"], "knock", "{state:?}");
    let own = has("m.room.member", knocker.user_id.as_str());
    assert_eq!(own["content"]["membership"], "knock", "{state:?}");
    assert_eq!(own["content"]["reason"], "let me in", "{state:?}");
    assert!(sync["rooms"]["join"].get(&room_id).is_none(), "{sync}");
    room_id
}

/// The owner accepts the knock (an invite over federation); the knocker joins.
async fn accept_knock(owner: &TestUser, knocker: &TestUser, room_id: &str) {
    let invited = owner
        .client
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(room_id)),
            &json!({"user_id": knocker.user_id}),
        )
        .await;
    invited.expect(200);
    let sync = knocker.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
    assert!(sync["rooms"]["invite"].get(room_id).is_some(), "{sync}");
    assert!(sync["rooms"]["knock"].get(room_id).is_none(), "{sync}");
    let joined =
        knocker.client.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room_id)), &json!({})).await;
    assert_eq!(joined.expect(200)["room_id"], room_id);
    assert_eq!(membership_of(&members(owner, room_id).await, knocker).as_deref(), Some("join"));
}

/// The owner denies the knock (or rescinds an invite) with a leave; the other server's user
/// sees it once the owner's server has sent it.
async fn deny_and_see_it(owner: &TestUser, other: &TestUser, room_id: &str) {
    let since = other.client.get("/_matrix/client/v3/sync").await.expect(200)["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let kicked = owner
        .client
        .post(&format!("/_matrix/client/v3/rooms/{}/kick", enc(room_id)), &json!({"user_id": other.user_id}))
        .await;
    kicked.expect(200);
    assert_eq!(membership_of(&members(owner, room_id).await, other).as_deref(), Some("leave"));
    let mut since = since;
    for _ in 0..20 {
        let sync = other.client.get(&format!("/_matrix/client/v3/sync?timeout=3000&since={since}")).await;
        let body = sync.expect(200).clone();
        if body["rooms"]["leave"].get(room_id).is_some() {
            let initial = other.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
            assert!(initial["rooms"]["knock"].get(room_id).is_none(), "{initial}");
            assert!(initial["rooms"]["invite"].get(room_id).is_none(), "{initial}");
            return;
        }
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
    panic!("{} never saw the leave", other.user_id);
}

#[tokio::test]
async fn a_remote_knock_is_accepted_both_ways() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let alice = servers[0].register("alice").await;
    let bob = servers[1].register("bob").await;
    let room_id = knock_across(&alice, &servers[0], &bob).await;
    accept_knock(&alice, &bob, &room_id).await;
    let room_id = knock_across(&bob, &servers[1], &alice).await;
    accept_knock(&bob, &alice, &room_id).await;
}

#[tokio::test]
async fn a_denied_knock_and_a_rescinded_invite_reach_the_other_server() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room_id = knock_across(&alice, a, &bob).await;
    deny_and_see_it(&alice, &bob, &room_id).await;
    let room_id = knock_across(&bob, b, &alice).await;
    deny_and_see_it(&bob, &alice, &room_id).await;
    let room_id = invite_across(&alice, &bob).await;
    deny_and_see_it(&alice, &bob, &room_id).await;
}

#[tokio::test]
async fn knocks_the_room_does_not_allow_are_refused_and_store_nothing() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    // An invite-only room: A refuses, so does B, and B stores nothing.
    let created =
        alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/knock/{}?via={}", enc(&room_id), enc(&a.server_name));
    bob.client.post(&path, &json!({})).await.expect_error(403, "M_FORBIDDEN");
    let room = RoomId::parse(&room_id).unwrap();
    assert!(b.services().room_rules(&room).await.unwrap().is_none());
    assert_eq!(membership_of(&members(&alice, &room_id).await, &bob), None);

    // A room version without knocking: 403 from make_knock.
    let created = alice
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"room_version": "6", "initial_state": [
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "public"}}
            ]}),
        )
        .await;
    let old_room = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    let template =
        format!("/_matrix/federation/v1/make_knock/{}/{}?ver=6", enc(&old_room), enc(bob.user_id.as_str()));
    let (status, answer) = federation_request(b, a, "GET", &template, None).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{answer}");
    // A version the knocking server did not offer: 400 M_INCOMPATIBLE_ROOM_VERSION.
    let template =
        format!("/_matrix/federation/v1/make_knock/{}/{}?ver=10", enc(&old_room), enc(bob.user_id.as_str()));
    let (status, answer) = federation_request(b, a, "GET", &template, None).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")), "{answer}");
    // A user of another server than the origin: 403.
    let template = format!(
        "/_matrix/federation/v1/make_knock/{}/{}?ver=10&ver=11",
        enc(&room_id),
        enc(alice.user_id.as_str())
    );
    let (status, answer) = federation_request(b, a, "GET", &template, None).await;
    assert_eq!(status, 403, "{answer}");
}

#[tokio::test]
async fn limit_remote_rooms_refuses_rooms_too_complex_and_the_complexity_is_served() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let limit = json!({"limit_remote_rooms": {
        "enabled": true, "complexity": 0.005, "complexity_error": "Too big for us", "admins_can_join": true
    }});
    let b = federating_server("b.test", certs.path(), limit).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let created = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();

    // A serves the complexity of its public room: its state events / 500.
    let path = format!("/_matrix/federation/unstable/rooms/{}/complexity", enc(&room_id));
    let (status, answer) = federation_request(&b, &a, "GET", &path, None).await;
    assert_eq!(status, 200, "{answer}");
    let state = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room_id))).await;
    let n_state = state.expect(200).as_array().unwrap().len() as f64;
    assert_eq!(answer["v1"].as_f64().unwrap(), (n_state / 500.0 * 100.0).round() / 100.0);
    assert!(answer["v1"].as_f64().unwrap() > 0.005, "{answer}");
    // Not for a private room, nor an unknown one.
    let private =
        alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat"})).await;
    let private_id = private.expect(200)["room_id"].as_str().unwrap().to_owned();
    for room in [private_id.as_str(), "!unknown:a.test"] {
        let path = format!("/_matrix/federation/unstable/rooms/{}/complexity", enc(room));
        let (status, answer) = federation_request(&b, &a, "GET", &path, None).await;
        assert_eq!((status, answer["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{answer}");
    }

    // B refuses to join it, with its configured error, and stores nothing.
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(&a.server_name));
    let refused = bob.client.post(&join, &json!({})).await;
    refused.expect_error(400, "M_RESOURCE_LIMIT_EXCEEDED");
    assert_eq!(refused.json["error"], "Too big for us");
    assert!(b.services().room_rules(&RoomId::parse(&room_id).unwrap()).await.unwrap().is_none());
    assert_eq!(membership_of(&members(&alice, &room_id).await, &bob), None);

    // admins_can_join: a server admin joins anyway.
    let admin = b.register_admin("root").await;
    let joined = admin.client.post(&join, &json!({})).await;
    assert_eq!(joined.expect(200)["room_id"], room_id.as_str());
}

/// The rooms of `user`'s sliding sync list (a fresh connection), with their membership as
/// sent (`invite` when the room comes with `invite_state`).
async fn sliding_rooms(user: &TestUser) -> Vec<(String, &'static str)> {
    let body = json!({"lists": {"all": {"ranges": [[0, 20]], "timeline_limit": 1, "required_state": []}}});
    let response = user
        .client
        .post("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0", &body)
        .await
        .expect(200)
        .clone();
    let rooms = response["rooms"].as_object().cloned().unwrap_or_default();
    rooms
        .into_iter()
        .map(|(id, room)| (id, if room.get("invite_state").is_some() { "invite" } else { "join" }))
        .collect()
}

#[tokio::test]
async fn sliding_sync_lists_a_remote_invite_then_the_remote_join() {
    let (_certs, servers) = servers(&["a.test", "b.test"]).await;
    let alice = servers[0].register("alice").await;
    let bob = servers[1].register("bob").await;
    // Bob's rooms are read (and cached by his server) before the invite arrives.
    assert_eq!(sliding_rooms(&bob).await, vec![]);
    let room_id = invite_across(&alice, &bob).await;
    assert_eq!(sliding_rooms(&bob).await, vec![(room_id.clone(), "invite")]);
    accept_and_talk(&alice, &bob, &room_id).await;
    assert_eq!(sliding_rooms(&bob).await, vec![(room_id.clone(), "join")]);
}
