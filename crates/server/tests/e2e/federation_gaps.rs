//! Gaps in a room's history between two real Myelins: A (the room's server, Alice) and B
//! (Bob, joined through A). The tests give B events A never received (signed with A's key as
//! Alice and fed to B directly, which relays no other server's events), then B sends A an event
//! after them: A must fetch the state at the gap from B instead of dropping it.

use myelin_test_support::federation::{
    federating_server, federation_request, server_name, write_certificates,
};
use myelin_test_support::{TestServer, TestUser};
use ruma::{EventId, OwnedEventId, RoomId};
use serde_json::{Value, json};

use crate::federation_resident::{enc, sign_event};

/// How many events A misses. B never had the event after them (the test built it), so B
/// answers A's `/get_missing_events` with nothing: A must get the state at the gap.
const GAP_LENGTH: usize = 4;

struct Room {
    _certs: tempfile::TempDir,
    a: TestServer,
    b: TestServer,
    alice: TestUser,
    bob: TestUser,
    room_id: String,
    version: String,
}

async fn joined_room() -> Room {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let created = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    bob.client
        .post(&format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(&a.server_name)), &json!({}))
        .await
        .expect(200);
    let (version, _) =
        a.services().room_rules(<&RoomId>::try_from(room_id.as_str()).unwrap()).await.unwrap().unwrap();
    Room { _certs: certs, a, b, alice, bob, room_id, version: version.to_string() }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

impl Room {
    fn room(&self) -> &RoomId {
        <&RoomId>::try_from(self.room_id.as_str()).unwrap()
    }

    /// An event of `sender` built on `prev`, with the auth events `auth_from`'s current state
    /// gives it, signed by `signer`.
    #[allow(clippy::too_many_arguments)]
    async fn event(
        &self,
        signer: &TestServer,
        auth_from: &TestServer,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &OwnedEventId,
    ) -> (OwnedEventId, Value) {
        let head = auth_from.services().room_head_snapshot(self.room()).await.unwrap().unwrap();
        let auth: Vec<String> =
            [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender)]
                .into_iter()
                .filter_map(|(kind, key)| head.state_event_id(kind, key).map(|id| id.to_string()))
                .collect();
        let prev_event = self.b.services().get_room_event(prev).await.unwrap().expect("prev on B");
        let mut event = json!({
            "room_id": self.room_id,
            "sender": sender,
            "type": kind,
            "content": content,
            "prev_events": [prev],
            "auth_events": auth,
            "depth": prev_event.pdu.depth + 1,
            "origin_server_ts": now_ms(),
            "origin": signer.server_name,
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        let (event_id, event) = sign_event(signer, &self.version, event);
        (EventId::parse(event_id).unwrap(), event)
    }

    /// Events of Alice's A never sees: `first` (a state event), then messages; B stores them
    /// (as received from A) and does not pass them on. Returns their IDs, oldest first.
    async fn gap_on_b(&self, first: (&str, Value)) -> Vec<OwnedEventId> {
        let head = self.b.services().room_head_snapshot(self.room()).await.unwrap().unwrap();
        let mut prev = head.extremities[0].clone();
        let mut ids = Vec::new();
        for n in 0..GAP_LENGTH {
            let (kind, state_key, content) = match n {
                0 => (first.0, Some(""), first.1.clone()),
                _ => ("m.room.message", None, json!({"msgtype": "m.text", "body": format!("gap {n}")})),
            };
            let alice = self.alice.user_id.as_str();
            let (event_id, event) =
                self.event(&self.a, &self.b, alice, kind, state_key, content, &prev).await;
            let outcome = self
                .b
                .services()
                .receive_remote_pdu(&server_name(&self.a), self.room(), &event)
                .await
                .unwrap();
            assert_eq!(outcome, myelin_service::federation::pdu::PduOutcome::Accepted(event_id.clone()));
            ids.push(event_id.clone());
            prev = event_id;
        }
        ids
    }

    /// B sends A one PDU in a transaction; returns A's answer for it.
    async fn send_to_a(&self, txn_id: &str, pdu: &Value, event_id: &EventId) -> Value {
        let body = json!({"origin": self.b.server_name, "origin_server_ts": now_ms(), "pdus": [pdu]});
        let path = format!("/_matrix/federation/v1/send/{txn_id}");
        let (status, answer) = federation_request(&self.b, &self.a, "PUT", &path, Some(&body)).await;
        assert_eq!(status, 200, "{answer}");
        answer["pdus"][event_id.as_str()].clone()
    }

    /// The event IDs of Alice's `/messages`, backwards from now.
    async fn alice_messages(&self) -> Vec<String> {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&self.room_id));
        let messages = self.alice.client.get(&path).await;
        messages.expect(200)["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn stored_as_outlier(&self, event_id: &EventId) -> bool {
        let stored = self.a.services().store().get_event(event_id.as_str()).await.unwrap();
        stored.is_some_and(|event| event.outlier)
    }
}

#[tokio::test]
async fn a_pdu_after_a_gap_gets_its_state_from_state_ids_and_is_accepted() {
    let room = joined_room().await;
    let gap = room.gap_on_b(("m.room.topic", json!({"topic": "set in the gap"}))).await;
    let bob = room.bob.user_id.as_str();
    let (event_id, pdu) = room
        .event(
            &room.b,
            &room.b,
            bob,
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": "after"}),
            &gap[GAP_LENGTH - 1],
        )
        .await;

    assert_eq!(room.send_to_a("gap1", &pdu, &event_id).await, json!({}));

    // The state at the gap came with it: the topic set in the gap is A's current topic.
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room.room_id));
    let topic = room.alice.client.get(&path).await;
    assert_eq!(topic.expect(200)["topic"], "set in the gap");
    // The event is in the room; the events of the gap A fetched (the topic, and the event's
    // prev event) are outliers, in no /sync.
    let filter = json!({"room": {"timeline": {"limit": 100}}}).to_string();
    let sync = room.alice.client.get(&format!("/_matrix/client/v3/sync?filter={}", enc(&filter))).await;
    let timeline = sync.expect(200)["rooms"]["join"][&room.room_id]["timeline"]["events"].clone();
    let synced: Vec<&str> =
        timeline.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(synced.last(), Some(&event_id.as_str()), "{synced:?}");
    for id in &gap {
        assert!(!synced.contains(&id.as_str()), "{id} in /sync: {synced:?}");
    }
    assert!(room.stored_as_outlier(&gap[0]).await && room.stored_as_outlier(&gap[GAP_LENGTH - 1]).await);

    // Paginating back into the gap backfills it from B: the whole gap is then history, newest
    // first (after the events A had before the gap: pagination is in stream order).
    let seen = room.alice_messages().await;
    assert_eq!(seen.first(), Some(&event_id.to_string()));
    let gap_seen: Vec<String> =
        seen.iter().filter(|id| gap.iter().any(|g| g.as_str() == *id)).cloned().collect();
    let expected: Vec<String> = gap.iter().rev().map(|id| id.to_string()).collect();
    assert_eq!(gap_seen, expected, "{seen:?}");
}

#[tokio::test]
async fn a_pdu_whose_gap_state_forbids_it_is_rejected() {
    let room = joined_room().await;
    // In the gap Alice raises the level needed to send messages above Bob's.
    let pl_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room.room_id));
    let mut power_levels = room.alice.client.get(&pl_path).await.expect(200).clone();
    power_levels["events_default"] = json!(50);
    let gap = room.gap_on_b(("m.room.power_levels", power_levels)).await;
    // Bob's message names the power levels A knows as its auth event (so it passes its auth
    // events), but the state at the gap forbids it.
    let bob = room.bob.user_id.as_str();
    let (event_id, pdu) = room
        .event(
            &room.b,
            &room.a,
            bob,
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": "too low"}),
            &gap[GAP_LENGTH - 1],
        )
        .await;

    let answer = room.send_to_a("gap2", &pdu, &event_id).await;
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("Rejected: not allowed by the state before it"), "{answer}");
    let stored = room.a.services().get_room_event(&event_id).await.unwrap();
    assert!(stored.is_some(), "a rejected event is stored");
    // Nothing else changed on A: the gap's events are outliers, its current state is as before.
    assert!(room.stored_as_outlier(&gap[0]).await && room.stored_as_outlier(&gap[GAP_LENGTH - 1]).await);
    let power_levels = room.alice.client.get(&pl_path).await;
    assert_eq!(power_levels.expect(200)["events_default"], 0);
    assert!(!room.alice_messages().await.contains(&event_id.to_string()));
}

/// The bodies of the messages in one `/messages` page, backwards from now.
async fn message_bodies(user: &TestUser, room_id: &str) -> (Vec<String>, Vec<String>) {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(room_id));
    let page = user.client.get(&path).await;
    let chunk = page.expect(200)["chunk"].as_array().unwrap().clone();
    let bodies = chunk.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect();
    let types = chunk.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    (bodies, types)
}

#[tokio::test]
async fn paginating_past_the_join_backfills_history_from_the_resident_server() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let created = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    for n in 1..=5 {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/before{n}", enc(&room_id));
        alice
            .client
            .put(&path, &json!({"msgtype": "m.text", "body": format!("before {n}")}))
            .await
            .expect(200);
    }
    bob.client
        .post(&format!("/_matrix/client/v3/join/{}?via={}", enc(&room_id), enc(&a.server_name)), &json!({}))
        .await
        .expect(200);
    let sync = bob.client.get("/_matrix/client/v3/sync").await;
    let since = sync.expect(200)["next_batch"].as_str().unwrap().to_owned();

    // Bob's server had nothing before his join: the page is fetched from A, newest first, down
    // to the room's creation.
    let (bodies, types) = message_bodies(&bob, &room_id).await;
    assert_eq!(bodies, ["before 5", "before 4", "before 3", "before 2", "before 1"], "{types:?}");
    assert_eq!(types.first().map(String::as_str), Some("m.room.member"), "Bob's join first: {types:?}");
    assert_eq!(types.last().map(String::as_str), Some("m.room.create"), "{types:?}");
    // Asked again, the same page comes from B's own store.
    assert_eq!(message_bodies(&bob, &room_id).await.1, types);

    // Backfilled history is not news: an incremental /sync does not bring it.
    let sync = bob.client.get(&format!("/_matrix/client/v3/sync?since={since}&timeout=0")).await;
    let timeline = sync.expect(200)["rooms"]["join"][&room_id]["timeline"]["events"].clone();
    let news = timeline.as_array().cloned().unwrap_or_default();
    assert!(
        news.iter().all(|e| e["content"]["body"].as_str().is_none_or(|b| !b.starts_with("before"))),
        "{news:?}"
    );
}

/// A room of `user`'s (version 10) whose join rule lets in members of `allowed`.
async fn restricted_room(user: &TestUser, allowed: &str, extra: Value) -> String {
    let mut body = json!({
        "preset": "public_chat",
        "room_version": "10",
        "initial_state": [{
            "type": "m.room.join_rules",
            "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": allowed}]},
        }],
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let created = user.client.post("/_matrix/client/v3/createRoom", &body).await;
    created.expect(200)["room_id"].as_str().unwrap().to_owned()
}

async fn join_via(user: &TestUser, room_id: &str, via: &[&str]) -> (u16, Value) {
    let query: Vec<String> = via.iter().map(|server| format!("via={}", enc(server))).collect();
    let path = format!("/_matrix/client/v3/join/{}?{}", enc(room_id), query.join("&"));
    let response = user.client.post(&path, &json!({})).await;
    (response.status, response.json.clone())
}

async fn make_join_errcode(from: &TestServer, to: &TestServer, room_id: &str, user_id: &str) -> (u16, Value) {
    let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=10", enc(room_id), enc(user_id));
    let (status, body) = federation_request(from, to, "GET", &path, None).await;
    (status, body["errcode"].clone())
}

#[tokio::test]
async fn a_restricted_join_tries_the_via_servers_until_one_authorises_it() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let c = federating_server("c.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;
    let space = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let space = space.expect(200)["room_id"].as_str().unwrap().to_owned();
    let room_id =
        restricted_room(&alice, &space, json!({"power_level_content_override": {"invite": 50}})).await;

    // Bob is in no allowed room: refused.
    let (status, body) = join_via(&bob, &room_id, &[&a.server_name]).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // Bob, then Carol, join the space; Carol joins the room (A vouches for her). C is then in
    // the room and knows Bob is in the space, but no user of C's may invite: C cannot
    // authorise Bob's join, A can, and the join goes through A.
    assert_eq!(join_via(&bob, &space, &[&a.server_name]).await.0, 200);
    assert_eq!(join_via(&carol, &space, &[&a.server_name]).await.0, 200);
    assert_eq!(join_via(&carol, &room_id, &[&a.server_name]).await.0, 200);
    let (status, errcode) = make_join_errcode(&b, &c, &room_id, &bob.user_id).await;
    assert_eq!((status, errcode), (400, json!("M_UNABLE_TO_GRANT_JOIN")));
    let (status, body) = join_via(&bob, &room_id, &[&c.server_name, &a.server_name]).await;
    assert_eq!(status, 200, "{body}");
    let path =
        format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&bob.user_id));
    let member = alice.client.get(&path).await;
    let member = member.expect(200);
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str());
}

#[tokio::test]
async fn a_restricted_join_nobody_here_may_authorise_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let dave = a.register("dave").await;
    let bob = b.register("bob").await;
    let space = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let space = space.expect(200)["room_id"].as_str().unwrap().to_owned();
    assert_eq!(join_via(&bob, &space, &[&a.server_name]).await.0, 200);

    // Allowed: a room A is not in. A cannot tell whether Bob may join.
    let elsewhere = restricted_room(&alice, "!elsewhere:c.test", json!({})).await;
    let (status, errcode) = make_join_errcode(&b, &a, &elsewhere, &bob.user_id).await;
    assert_eq!((status, errcode), (400, json!("M_UNABLE_TO_AUTHORISE_JOIN")));
    let (status, body) = join_via(&bob, &elsewhere, &[&a.server_name]).await;
    assert_eq!(status, 502, "{body}");

    // Allowed: the space Bob is in, but A's only member left may not invite.
    let room_id =
        restricted_room(&alice, &space, json!({"power_level_content_override": {"invite": 100}})).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id));
    alice.client.post(&invite, &json!({"user_id": dave.user_id})).await.expect(200);
    assert_eq!(join_via(&dave, &room_id, &[]).await.0, 200);
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), &json!({}))
        .await
        .expect(200);
    let (status, errcode) = make_join_errcode(&b, &a, &room_id, &bob.user_id).await;
    assert_eq!((status, errcode), (400, json!("M_UNABLE_TO_GRANT_JOIN")));
    let member =
        format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room_id), enc(&bob.user_id));
    assert_eq!(dave.client.get(&member).await.status, 404);
}

#[tokio::test]
async fn federation_hierarchy_shows_a_space_and_the_children_the_server_may_see() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let create = |body: Value| {
        let client = alice.client.clone();
        async move {
            let created = client.post("/_matrix/client/v3/createRoom", &body).await;
            created.expect(200)["room_id"].as_str().unwrap().to_owned()
        }
    };
    let space =
        create(json!({"preset": "public_chat", "name": "Space", "creation_content": {"type": "m.space"}}))
            .await;
    let public = create(json!({"preset": "public_chat", "name": "Public"})).await;
    let private = create(json!({"preset": "private_chat", "name": "Private"})).await;
    let ghost = format!("!ghost:{}", a.server_name);
    for (child, suggested) in [(&public, true), (&private, false), (&ghost, false)] {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(&space), enc(child));
        let content = json!({"via": [a.server_name], "suggested": suggested});
        alice.client.put(&path, &content).await.expect(200);
    }

    let path = format!("/_matrix/federation/v1/hierarchy/{}", enc(&space));
    let (status, body) = federation_request(&b, &a, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["room_id"], space.as_str());
    assert_eq!(body["room"]["room_type"], "m.space");
    assert_eq!(body["room"]["name"], "Space");
    let children_state = body["room"]["children_state"].as_array().unwrap();
    assert_eq!(children_state.len(), 3, "{body}");
    assert!(children_state.iter().all(|e| e["type"] == "m.space.child" && e["origin_server_ts"].is_u64()));
    // The public child is shown, the private one is inaccessible, the unknown one left out.
    let children = body["children"].as_array().unwrap();
    assert_eq!(children.len(), 1, "{body}");
    assert_eq!(children[0]["room_id"], public.as_str());
    assert_eq!(children[0]["name"], "Public");
    assert_eq!(children[0]["join_rule"], "public");
    assert_eq!(body["inaccessible_children"], json!([private]));

    let (status, body) =
        federation_request(&b, &a, "GET", &format!("{path}?suggested_only=true"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["children_state"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["inaccessible_children"], json!([]));

    // A private room B has no member in, and a room A does not know: not found.
    for room in [&private, &ghost] {
        let path = format!("/_matrix/federation/v1/hierarchy/{}", enc(room));
        let (status, body) = federation_request(&b, &a, "GET", &path, None).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    }
}

#[tokio::test]
async fn client_hierarchy_asks_the_via_servers_for_rooms_this_server_does_not_have() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let create = |user: &TestUser, body: Value| {
        let client = user.client.clone();
        async move {
            let created = client.post("/_matrix/client/v3/createRoom", &body).await;
            created.expect(200)["room_id"].as_str().unwrap().to_owned()
        }
    };
    let link = |user: &TestUser, space: &str, child: &str, via: &str| {
        let client = user.client.clone();
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(space), enc(child));
        let content = json!({"via": [via]});
        async move { client.put(&path, &content).await.expect(200).clone() }
    };
    // On A: a space with a public and a private room. On B: Bob's space holding A's space.
    let space_a = create(
        &alice,
        json!({"preset": "public_chat", "name": "A's space", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let public = create(&alice, json!({"preset": "public_chat", "name": "Public on A"})).await;
    let private = create(&alice, json!({"preset": "private_chat", "name": "Private on A"})).await;
    link(&alice, &space_a, &public, &a.server_name).await;
    link(&alice, &space_a, &private, &a.server_name).await;
    let space_b = create(
        &bob,
        json!({"preset": "public_chat", "name": "B's space", "creation_content": {"type": "m.space"}}),
    )
    .await;
    link(&bob, &space_b, &space_a, &a.server_name).await;

    let page = bob.client.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space_b))).await;
    let rooms = page.expect(200)["rooms"].as_array().unwrap().clone();
    let names: Vec<&str> = rooms.iter().map(|room| room["name"].as_str().unwrap_or_default()).collect();
    // A's space and its public room come from A; the private room, which A will not show B, is
    // left out.
    assert_eq!(names, ["B's space", "A's space", "Public on A"], "{rooms:?}");
    assert_eq!(rooms[1]["room_id"], space_a.as_str());
    assert_eq!(rooms[1]["room_type"], "m.space");
    assert_eq!(rooms[1]["children_state"].as_array().unwrap().len(), 2, "{rooms:?}");
    assert_eq!(rooms[2]["room_id"], public.as_str());
    assert_eq!(rooms[2]["join_rule"], "public");
}
