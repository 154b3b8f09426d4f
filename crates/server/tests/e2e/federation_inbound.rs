//! Inbound transactions (`PUT /send/{txnId}`): server A has a room Bob of server B joined
//! (through make_join / send_join); the test plays B by hand, building and signing PDUs with
//! B's real key, and checks what A keeps, refuses, rejects and soft-fails.

use myelin_test_support::federation::federation_request;
use myelin_test_support::{TestServer, TestUser};
use ruma::{EventId, OwnedEventId, RoomId};
use serde_json::{Value, json};

use super::federation_resident::{create_public_room, join_from_b, sign_event, two_servers};

/// A room on A that B's Bob joined.
struct Setup {
    _certs: tempfile::TempDir,
    a: TestServer,
    b: TestServer,
    alice: TestUser,
    bob: String,
    room_id: String,
    version: String,
}

async fn setup() -> Setup {
    let (certs, a, b) = two_servers().await;
    let alice = a.register("alice").await;
    let room_id = create_public_room(&alice).await;
    let bob = format!("@bob:{}", b.server_name);
    let (_, version) = join_from_b(&a, &b, &room_id, &bob).await;
    Setup { _certs: certs, a, b, alice, bob, room_id, version }
}

impl Setup {
    fn room(&self) -> &RoomId {
        <&RoomId>::try_from(self.room_id.as_str()).unwrap()
    }

    /// A's head: forward extremities, depth and current state IDs.
    async fn head(&self) -> myelin_service::rooms::RoomHead {
        self.a.services().room_head_snapshot(self.room()).await.unwrap().unwrap()
    }

    /// An event of `sender` built on `prev` with the usual auth events from A's current state
    /// (create, power levels, the sender's membership, and join rules for a member event).
    async fn event(
        &self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[OwnedEventId],
    ) -> Value {
        let head = self.head().await;
        let mut auth: Vec<String> = Vec::new();
        let mut auth_types =
            vec![("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender)];
        if kind == "m.room.member" {
            auth_types.push(("m.room.join_rules", ""));
        }
        for (auth_kind, key) in auth_types {
            if let Some(id) = head.state_event_id(auth_kind, key) {
                auth.push(id.to_string());
            }
        }
        let mut depth = 0;
        for id in prev {
            if let Some(event) = self.a.services().get_room_event(id).await.unwrap() {
                depth = depth.max(event.pdu.depth);
            }
        }
        let depth = depth + 1;
        let mut event = json!({
            "room_id": self.room_id,
            "sender": sender,
            "type": kind,
            "content": content,
            "prev_events": prev.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
            "auth_events": auth,
            "depth": depth,
            "origin_server_ts": now_ms(),
            "origin": self.b.server_name,
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        event
    }

    fn sign(&self, event: Value) -> (String, Value) {
        sign_event(&self.b, &self.version, event)
    }

    async fn message(&self, body: &str, prev: &[OwnedEventId]) -> (String, Value) {
        let event = self
            .event(&self.bob, "m.room.message", None, json!({"msgtype": "m.text", "body": body}), prev)
            .await;
        self.sign(event)
    }

    async fn send(&self, txn_id: &str, pdus: &[Value]) -> (u16, Value) {
        let body = json!({"origin": self.b.server_name, "origin_server_ts": now_ms(), "pdus": pdus});
        let path = format!("/_matrix/federation/v1/send/{txn_id}");
        federation_request(&self.b, &self.a, "PUT", &path, Some(&body)).await
    }

    async fn stored(&self, event_id: &str) -> Option<myelin_service::rooms::RoomEvent> {
        self.a.services().get_room_event(&EventId::parse(event_id).unwrap()).await.unwrap()
    }

    /// The events of Alice's initial sync timeline of the room.
    async fn timeline(&self) -> Vec<Value> {
        let filter = json!({"room": {"timeline": {"limit": 50}}}).to_string();
        let path = format!("/_matrix/client/v3/sync?filter={}", super::federation_resident::enc(&filter));
        let sync = self.alice.client.get(&path).await;
        sync.expect(200)["rooms"]["join"][&self.room_id]["timeline"]["events"].as_array().unwrap().clone()
    }

    async fn messages(&self) -> Vec<Value> {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", self.room_id);
        self.alice.client.get(&path).await.expect(200)["chunk"].as_array().unwrap().clone()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn ids(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["event_id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_remote_message_reaches_local_users_and_a_resent_transaction_is_not_processed_again() {
    let s = setup().await;
    let head = s.head().await;
    let (message_id, message) = s.message("hello from B", &head.extremities).await;
    let (status, answer) = s.send("txn1", std::slice::from_ref(&message)).await;
    assert_eq!((status, answer.clone()), (200, json!({"pdus": {message_id.clone(): {}}})));
    let timeline = s.timeline().await;
    let received = timeline.iter().find(|e| e["event_id"] == message_id.as_str()).expect("in /sync");
    assert_eq!(received["content"]["body"], "hello from B");
    assert_eq!(received["sender"], s.bob.as_str());
    assert_eq!(s.head().await.extremities, vec![EventId::parse(&message_id).unwrap()]);

    // The same transaction ID again, even with other PDUs, is answered as the first time and
    // not processed.
    let (other_id, other) = s.message("never processed", &[EventId::parse(&message_id).unwrap()]).await;
    let (status, again) = s.send("txn1", &[other]).await;
    assert_eq!((status, again), (200, answer));
    assert!(s.stored(&other_id).await.is_none());
}

#[tokio::test]
async fn bad_pdus_are_refused_and_a_bad_content_hash_is_kept_redacted() {
    let s = setup().await;
    let head = s.head().await;

    // A bad signature: B's signature of another event.
    let (_, donor) = s.message("donor", &head.extremities).await;
    let (forged_id, mut forged) = s.message("forged", &head.extremities).await;
    forged["signatures"] = donor["signatures"].clone();
    // A sender whose server neither signed the event nor is the origin.
    let carol =
        s.event("@carol:c.test", "m.room.message", None, json!({"body": "hi"}), &head.extremities).await;
    let (carol_id, carol) = s.sign(carol);
    // A PDU for a room A does not know.
    let (unknown_room_id, mut unknown_room) = s.message("elsewhere", &head.extremities).await;
    unknown_room["room_id"] = json!(format!("!nowhere:{}", s.a.server_name));
    unknown_room["event_id"] = json!(unknown_room_id);
    // A prev event nobody has (B cannot serve get_missing_events for it).
    let nowhere = EventId::parse(format!("${}", "B".repeat(43))).unwrap();
    let (orphan_id, orphan) = s.message("orphan", &[nowhere]).await;
    let (status, answer) = s.send("bad1", &[forged, carol, unknown_room, orphan]).await;
    assert_eq!(status, 200, "{answer}");
    for id in [&forged_id, &carol_id, &unknown_room_id, &orphan_id] {
        assert!(answer["pdus"][id]["error"].is_string(), "{id}: {answer}");
        assert!(s.stored(id).await.is_none(), "{id} is not stored");
    }

    // A depth of 2^63 is not canonical JSON (integers end at 2^53): no transaction carrying it
    // can even be signed, and the write path refuses the PDU itself.
    let (deep_id, mut deep) = s.message("deep", &head.extremities).await;
    deep["depth"] = serde_json::from_str("9223372036854775808").unwrap();
    let origin = myelin_test_support::federation::server_name(&s.b);
    let refused = s.a.services().receive_remote_pdu(&origin, s.room(), &deep).await.unwrap_err();
    assert!(refused.to_string().contains("M_BAD_JSON"), "{refused}");
    assert!(s.stored(&deep_id).await.is_none());

    // 1,000 PDUs in one transaction.
    let many: Vec<Value> = (0..1000).map(|_| json!({})).collect();
    let (status, body) = s.send("bad3", &many).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");

    // A content hash that does not match: kept, redacted (the body goes).
    let (tampered_id, mut tampered) = s.message("secret body", &head.extremities).await;
    tampered["content"]["body"] = json!("changed after signing");
    let (status, answer) = s.send("hash", &[tampered]).await;
    assert_eq!((status, answer), (200, json!({"pdus": {tampered_id.clone(): {}}})));
    let timeline = s.timeline().await;
    let received = timeline.iter().find(|e| e["event_id"] == tampered_id.as_str()).expect("in /sync");
    assert_eq!(received["content"], json!({}), "{received}");
    assert_eq!(received["type"], "m.room.message");
}

#[tokio::test]
async fn a_state_event_that_fails_auth_is_rejected_and_stays_out_of_state_and_timeline() {
    let s = setup().await;
    let head = s.head().await;
    let levels_id = head.state_event_id("m.room.power_levels", "").unwrap().clone();
    let mut content = s.a.services().get_room_event(&levels_id).await.unwrap().unwrap().pdu.content_value();
    content["users"][&s.bob] = json!(100);
    let event = s.event(&s.bob, "m.room.power_levels", Some(""), content, &head.extremities).await;
    let (event_id, event) = s.sign(event);
    let (status, answer) = s.send("pl", &[event]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["pdus"][&event_id]["error"].as_str().unwrap().starts_with("Rejected"), "{answer}");
    let stored = s.stored(&event_id).await.expect("stored as rejected");
    assert!(!stored.visible);
    let after = s.head().await;
    assert_eq!(after.state_event_id("m.room.power_levels", ""), Some(&levels_id));
    assert_eq!(after.extremities, head.extremities);
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", s.room_id);
    let levels = s.alice.client.get(&path).await;
    assert!(levels.expect(200)["users"].get(&s.bob).is_none());
    assert!(!ids(&s.timeline().await).contains(&event_id.as_str()));
    assert!(!ids(&s.messages().await).contains(&event_id.as_str()));
    let path = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        s.room_id,
        super::federation_resident::enc(&event_id)
    );
    s.alice.client.get(&path).await.expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn concurrent_remote_forks_are_both_kept_and_the_next_local_event_merges_them() {
    let s = setup().await;
    let head = s.head().await;
    let (first_id, first) = s.message("fork one", &head.extremities).await;
    let (second_id, second) = s.message("fork two", &head.extremities).await;
    let (status, answer) = s.send("forks", &[first, second]).await;
    assert_eq!((status, answer), (200, json!({"pdus": {first_id.clone(): {}, second_id.clone(): {}}})));
    let mut extremities: Vec<String> = s.head().await.extremities.iter().map(|id| id.to_string()).collect();
    extremities.sort();
    let mut expected = vec![first_id.clone(), second_id.clone()];
    expected.sort();
    assert_eq!(extremities, expected);

    let sent = s
        .alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/m1", s.room_id),
            &json!({"msgtype": "m.text", "body": "merge"}),
        )
        .await;
    let merge_id = sent.expect(200)["event_id"].as_str().unwrap().to_owned();
    let merge = s.stored(&merge_id).await.unwrap();
    let mut prevs: Vec<String> = merge.pdu.prev_events.iter().map(|id| id.to_string()).collect();
    prevs.sort();
    assert_eq!(prevs, expected);
    assert_eq!(s.head().await.extremities, vec![EventId::parse(&merge_id).unwrap()]);
}

#[tokio::test]
async fn a_remote_state_fork_is_resolved_into_the_current_state() {
    let s = setup().await;
    let head = s.head().await;
    // Bob changes his display name on one fork; a message forks off the same point.
    let name = s
        .event(
            &s.bob,
            "m.room.member",
            Some(&s.bob),
            json!({"membership": "join", "displayname": "Robert"}),
            &head.extremities,
        )
        .await;
    let (name_id, name) = s.sign(name);
    let (message_id, message) = s.message("side", &head.extremities).await;
    let (status, answer) = s.send("state-fork", &[name, message]).await;
    assert_eq!((status, answer), (200, json!({"pdus": {name_id.clone(): {}, message_id.clone(): {}}})));
    // The current state is the resolution of both forks: the new display name stays.
    let after = s.head().await;
    assert_eq!(after.extremities.len(), 2);
    assert_eq!(after.state_event_id("m.room.member", &s.bob).map(|id| id.to_string()), Some(name_id.clone()));
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", s.room_id, s.bob);
    assert_eq!(s.alice.client.get(&path).await.expect(200)["displayname"], "Robert");
    // And so is the state a restarted server loads.
    let group = after.state_group;
    assert_eq!(s.a.services().store().current_state_group(&s.room_id).await.unwrap(), group);
}

/// A local and a remote power-level change built on the same state: the room's current state
/// is their resolution, in which the received event takes part although it is not stored yet.
/// Both senders have power 100 and the remote change is the later one, so it wins (it used to be
/// left out, and each server kept its own change).
#[tokio::test]
async fn a_remote_power_level_change_concurrent_with_a_local_one_is_resolved_with_it() {
    let s = setup().await;
    let levels = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", s.room_id);
    let mut content = s.alice.client.get(&levels).await.expect(200).clone();
    content["users"][s.bob.as_str()] = json!(100);
    s.alice.client.put(&levels, &content).await.expect(200);

    // Bob's change, built on the state Alice's will be built on, a minute later than hers.
    let head = s.head().await;
    let mut theirs = content.clone();
    theirs["events_default"] = json!(20);
    let mut remote =
        s.event(&s.bob, "m.room.power_levels", Some(""), theirs.clone(), &head.extremities).await;
    remote["origin_server_ts"] = json!(now_ms() + 60_000);
    let (remote_id, remote) = s.sign(remote);
    let mut mine = content.clone();
    mine["events_default"] = json!(10);
    let local = s.alice.client.put(&levels, &mine).await;
    let local_id = local.expect(200)["event_id"].as_str().unwrap().to_owned();

    let (status, answer) = s.send("levels-fork", &[remote]).await;
    assert_eq!((status, answer), (200, json!({"pdus": {remote_id.clone(): {}}})));
    let after = s.head().await;
    let mut extremities: Vec<String> = after.extremities.iter().map(|id| id.to_string()).collect();
    extremities.sort();
    let mut expected = vec![local_id, remote_id.clone()];
    expected.sort();
    assert_eq!(extremities, expected);
    assert_eq!(after.state_event_id("m.room.power_levels", "").map(|id| id.to_string()), Some(remote_id));
    assert_eq!(s.alice.client.get(&levels).await.expect(200), &theirs);
}

#[tokio::test]
async fn a_message_built_on_the_state_before_a_ban_is_soft_failed() {
    let s = setup().await;
    // Another user of B stays in the room, so that B may still send to it.
    join_from_b(&s.a, &s.b, &s.room_id, &format!("@carl:{}", s.b.server_name)).await;
    let before_ban = s.head().await;
    s.alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{}/ban", s.room_id), &json!({"user_id": s.bob}))
        .await
        .expect(200);
    let banned = s.head().await;
    // Built on the state before the ban, with Bob's join as auth event.
    let event = s
        .event(
            &s.bob,
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": "sneaky"}),
            &before_ban.extremities,
        )
        .await;
    let mut event = event;
    event["auth_events"] = json!([
        before_ban.state_event_id("m.room.create", "").unwrap(),
        before_ban.state_event_id("m.room.power_levels", "").unwrap(),
        before_ban.state_event_id("m.room.member", &s.bob).unwrap(),
    ]);
    let (event_id, event) = s.sign(event);
    let (status, answer) = s.send("soft", &[event]).await;
    assert_eq!((status, answer), (200, json!({"pdus": {event_id.clone(): {}}})));
    let stored = s.stored(&event_id).await.expect("stored");
    assert!(!stored.visible, "soft-failed");
    assert_eq!(s.head().await.extremities, banned.extremities, "not a forward extremity");
    assert!(!ids(&s.timeline().await).contains(&event_id.as_str()));
    assert!(!ids(&s.messages().await).contains(&event_id.as_str()));
}
