//! Push notifications: push rules, unread counts in `/sync`, `/notifications`, pushers and
//! delivery to a push gateway (a small HTTP server started by the test).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::{create_room, send_text, urlencode};

const RULES: &str = "/_matrix/client/v3/pushrules";

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room_id}/{rest}")
}

async fn sync(user: &TestUser, since: Option<&str>, extra: &str) -> Value {
    let mut url = "/_matrix/client/v3/sync?timeout=0".to_owned();
    if let Some(since) = since {
        url.push_str(&format!("&since={since}"));
    }
    url.push_str(extra);
    user.client.get(&url).await.expect(200).clone()
}

/// `(notification_count, highlight_count)` of a joined room in an initial sync.
async fn counts(user: &TestUser, room_id: &str) -> (u64, u64) {
    let response = sync(user, None, "").await;
    let unread = &response["rooms"]["join"][room_id]["unread_notifications"];
    (
        unread["notification_count"].as_u64().expect("notification_count"),
        unread["highlight_count"].as_u64().expect("highlight_count"),
    )
}

async fn send(user: &TestUser, room_id: &str, kind: &str, txn: &str, content: Value) -> String {
    let path = room_path(room_id, &format!("send/{kind}/{txn}"));
    user.client.put(&path, &content).await.expect(200)["event_id"].as_str().unwrap().to_owned()
}

async fn join(user: &TestUser, room_id: &str) {
    user.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
}

async fn set_displayname(user: &TestUser, name: &str) {
    let path = format!("/_matrix/client/v3/profile/{}/displayname", user.user_id);
    user.client.put(&path, &json!({ "displayname": name })).await.expect(200);
}

fn rule_ids(rules: &Value) -> Vec<String> {
    rules.as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn push_rules_start_from_the_defaults_and_are_editable() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let all = alice.client.get(&format!("{RULES}/")).await.expect(200).clone();
    let global = &all["global"];
    for kind in ["override", "content", "room", "sender", "underride"] {
        assert!(global[kind].is_array(), "{kind} in {global}");
    }
    let overrides = rule_ids(&global["override"]);
    assert_eq!(overrides[0], ".m.rule.master");
    for id in [
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
    ] {
        assert!(overrides.contains(&id.to_owned()), "{id} in {overrides:?}");
    }
    let underrides = rule_ids(&global["underride"]);
    for id in [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ] {
        assert!(underrides.contains(&id.to_owned()), "{id} in {underrides:?}");
    }
    let master = &global["override"][0];
    assert_eq!((master["enabled"].clone(), master["default"].clone()), (json!(false), json!(true)));
    let mention = alice.client.get(&format!("{RULES}/global/override/.m.rule.is_user_mention")).await;
    let mention = mention.expect(200);
    assert_eq!(mention["conditions"][0]["kind"], "event_property_contains");
    assert_eq!(mention["conditions"][0]["key"], r"content.m\.mentions.user_ids");
    assert_eq!(mention["conditions"][0]["value"], alice.user_id.as_str());
    let one_to_one = alice.client.get(&format!("{RULES}/global/underride/.m.rule.room_one_to_one")).await;
    assert!(
        one_to_one.expect(200)["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "room_member_count" && c["is"] == "2")
    );
    assert_eq!(alice.client.get(&format!("{RULES}/global/")).await.expect(200), global);

    // A keyword rule.
    let cake = json!({"pattern": "cake*", "actions": ["notify", {"set_tweak": "highlight"}]});
    alice.client.put(&format!("{RULES}/global/content/cake"), &cake).await.expect(200);
    let rule = alice.client.get(&format!("{RULES}/global/content/cake")).await.expect(200).clone();
    assert_eq!(rule["pattern"], "cake*");
    assert_eq!((rule["enabled"].clone(), rule["default"].clone()), (json!(true), json!(false)));
    assert_eq!(rule["actions"][0], "notify");
    assert_eq!(rule["actions"][1]["set_tweak"], "highlight");

    // Enabling and disabling the master rule.
    let enabled = format!("{RULES}/global/override/.m.rule.master/enabled");
    alice.client.put(&enabled, &json!({"enabled": true})).await.expect(200);
    assert_eq!(alice.client.get(&enabled).await.expect(200)["enabled"], true);
    alice.client.put(&enabled, &json!({"enabled": false})).await.expect(200);
    assert_eq!(alice.client.get(&enabled).await.expect(200)["enabled"], false);

    // Actions of a server-default rule.
    let actions = format!("{RULES}/global/underride/.m.rule.message/actions");
    alice.client.put(&actions, &json!({"actions": []})).await.expect(200);
    assert_eq!(alice.client.get(&actions).await.expect(200)["actions"], json!([]));

    // Ordering with before / after: new rules go first among user rules, after the master.
    let rule = |id: &str| json!({"conditions": [{"kind": "event_match", "key": "type", "pattern": id}], "actions": ["notify"]});
    for id in ["a", "b"] {
        alice.client.put(&format!("{RULES}/global/override/{id}"), &rule(id)).await.expect(200);
    }
    alice.client.put(&format!("{RULES}/global/override/c?after=b"), &rule("c")).await.expect(200);
    alice.client.put(&format!("{RULES}/global/override/d?before=b"), &rule("d")).await.expect(200);
    let order = rule_ids(alice.client.get(&format!("{RULES}/global/override/")).await.expect(200));
    assert_eq!(order[..5], [".m.rule.master", "d", "b", "c", "a"], "{order:?}");
    assert_eq!(order[5], ".m.rule.suppress_notices", "server-default rules follow user rules");
    // Updating a rule keeps its place (and its enabled flag).
    alice
        .client
        .put(&format!("{RULES}/global/override/b/enabled"), &json!({"enabled": false}))
        .await
        .expect(200);
    alice.client.put(&format!("{RULES}/global/override/b"), &rule("b2")).await.expect(200);
    let order = rule_ids(alice.client.get(&format!("{RULES}/global/override/")).await.expect(200));
    assert_eq!(order[..5], [".m.rule.master", "d", "b", "c", "a"]);
    let b = alice.client.get(&format!("{RULES}/global/override/b")).await.expect(200).clone();
    assert_eq!((b["enabled"].clone(), b["conditions"][0]["pattern"].clone()), (json!(false), json!("b2")));

    // Errors.
    let missing = alice.client.get(&format!("{RULES}/global/override/nope")).await;
    missing.expect_error(404, "M_NOT_FOUND");
    alice.client.delete(&format!("{RULES}/global/content/nope")).await.expect_error(404, "M_NOT_FOUND");
    alice
        .client
        .put(&format!("{RULES}/global/content/nope/enabled"), &json!({"enabled": true}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice
        .client
        .put(&format!("{RULES}/global/content/nope/actions"), &json!({"actions": ["notify"]}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    let editing_default =
        alice.client.put(&format!("{RULES}/global/override/.m.rule.master"), &rule("x")).await;
    assert_eq!(editing_default.status, 400, "server-default rules' conditions cannot be edited");
    let unknown_anchor =
        alice.client.put(&format!("{RULES}/global/override/e?before=nope"), &rule("e")).await;
    assert_eq!(unknown_anchor.status, 400, "{:?}", unknown_anchor.json);
    let default_anchor =
        alice.client.put(&format!("{RULES}/global/override/e?after=.m.rule.master"), &rule("e")).await;
    assert_eq!(default_anchor.status, 400);
    let inverted = alice.client.put(&format!("{RULES}/global/override/e?before=d&after=a"), &rule("e")).await;
    assert_eq!(inverted.status, 400, "before ranks above after");
    let not_json = alice
        .client
        .request_raw(reqwest::Method::PUT, &format!("{RULES}/global/content/x"), Some(b"{nope".to_vec()), &[])
        .await;
    not_json.expect_error(400, "M_NOT_JSON");
    let no_actions = alice.client.put(&format!("{RULES}/global/content/x"), &json!({"pattern": "x"})).await;
    no_actions.expect_error(400, "M_BAD_JSON");
    let bad_action = alice
        .client
        .put(&format!("{RULES}/global/content/x"), &json!({"pattern": "x", "actions": ["explode"]}))
        .await;
    bad_action.expect_error(400, "M_BAD_JSON");
    let no_pattern = alice.client.put(&format!("{RULES}/global/content/x"), &json!({"actions": []})).await;
    assert_eq!(no_pattern.status, 400);
    let bad_kind = alice.client.put(&format!("{RULES}/global/sideways/x"), &json!({"actions": []})).await;
    assert_eq!(bad_kind.status, 400);
    let slash = alice
        .client
        .put(&format!("{RULES}/global/content/a%2Fb"), &json!({"pattern": "x", "actions": []}))
        .await;
    assert_eq!(slash.status, 400);
    let bad_room =
        alice.client.put(&format!("{RULES}/global/room/not-a-room"), &json!({"actions": []})).await;
    bad_room.expect_error(400, "M_INVALID_PARAM");
    let bad_enabled = alice.client.put(&enabled, &json!({"enabled": "yes"})).await;
    bad_enabled.expect_error(400, "M_BAD_JSON");
    // A server-default rule cannot be deleted (and is still there).
    alice
        .client
        .delete(&format!("{RULES}/global/override/.m.rule.master"))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let rules = alice.client.get(&format!("{RULES}/")).await.expect(200).clone();
    assert_eq!(rule_ids(&rules["global"]["override"])[0], ".m.rule.master");

    // Deleting a user rule.
    alice.client.delete(&format!("{RULES}/global/override/a")).await.expect(200);
    alice.client.get(&format!("{RULES}/global/override/a")).await.expect_error(404, "M_NOT_FOUND");

    // Rules are per user, survive a restart, and reach the client as m.push_rules account data.
    let bob = server.register("bob").await;
    bob.client.get(&format!("{RULES}/global/content/cake")).await.expect_error(404, "M_NOT_FOUND");
    let mut server = server;
    server.restart().await;
    let alice = TestUser { client: server.client().with_token(&alice.access_token), ..alice };
    assert_eq!(
        alice.client.get(&format!("{RULES}/global/content/cake")).await.expect(200)["pattern"],
        "cake*"
    );
    let response = sync(&alice, None, "").await;
    let push_rules = response["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("m.push_rules account data")
        .clone();
    assert!(rule_ids(&push_rules["content"]["global"]["content"]).contains(&"cake".to_owned()));
    // A user who never changed a rule still gets the defaults in the same shape.
    let bob = TestUser { client: server.client().with_token(&bob.access_token), ..bob };
    let response = sync(&bob, None, "").await;
    let push_rules = response["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("default m.push_rules account data")
        .clone();
    assert_eq!(rule_ids(&push_rules["content"]["global"]["override"])[0], ".m.rule.master");
    server.stop().await;
}

/// Alice, Bob and Carol in a public room (three members: no one-to-one rules).
async fn three_in_a_room(server: &TestServer) -> (TestUser, TestUser, TestUser, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    set_displayname(&alice, "Alice Liddell").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    join(&carol, &room).await;
    (alice, bob, carol, room)
}

#[tokio::test]
async fn mentions_highlight_and_read_receipts_clear_the_counts() {
    let server = TestServer::start().await;
    let (alice, bob, carol, room) = three_in_a_room(&server).await;
    assert_eq!(counts(&alice, &room).await, (0, 0));
    let mention = send(
        &bob,
        &room,
        "m.room.message",
        "m1",
        json!({"msgtype": "m.text", "body": "Alice Liddell: look at this", "m.mentions": {"user_ids": [alice.user_id]}}),
    )
    .await;
    assert_eq!(counts(&alice, &room).await, (1, 1), "a mention highlights");
    assert_eq!(counts(&carol, &room).await, (1, 0), "others are notified without a highlight");
    assert_eq!(counts(&bob, &room).await, (0, 0), "the sender is not notified");
    let plain = send_text(&bob, &room, "m2", "hi all").await;
    send(&bob, &room, "m.room.message", "m3", json!({"msgtype": "m.notice", "body": "a bot speaks"})).await;
    assert_eq!(counts(&alice, &room).await, (2, 1), "notices do not notify");

    // /notifications lists them newest first.
    let page = alice.client.get("/_matrix/client/v3/notifications").await.expect(200).clone();
    let notifications = page["notifications"].as_array().unwrap();
    let ids: Vec<&str> = notifications.iter().map(|n| n["event"]["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [plain.as_str(), mention.as_str()]);
    let first = &notifications[1];
    assert_eq!(first["room_id"], room.as_str());
    assert_eq!(first["read"], false);
    assert!(first["ts"].is_u64());
    assert!(first["actions"].as_array().unwrap().iter().any(|a| a["set_tweak"] == "highlight"), "{first}");
    assert_eq!(first["event"]["content"]["body"], "Alice Liddell: look at this");
    assert_eq!(notifications[0]["actions"], json!(["notify"]));
    let highlights =
        alice.client.get("/_matrix/client/v3/notifications?only=highlight").await.expect(200).clone();
    let ids: Vec<&str> = highlights["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mention.as_str()]);
    let page = alice.client.get("/_matrix/client/v3/notifications?limit=1").await.expect(200).clone();
    assert_eq!(page["notifications"][0]["event"]["event_id"], plain.as_str());
    let next = page["next_token"].as_str().expect("next_token").to_owned();
    let page = alice
        .client
        .get(&format!("/_matrix/client/v3/notifications?limit=1&from={next}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(page["notifications"][0]["event"]["event_id"], mention.as_str());
    alice
        .client
        .get("/_matrix/client/v3/notifications?from=bogus")
        .await
        .expect_error(400, "M_INVALID_PARAM");

    // A read receipt wakes Alice's long-polling sync, which reports the counts cleared.
    let token = sync(&alice, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let client = alice.client.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        client.get(&format!("/_matrix/client/v3/sync?timeout=20000&since={token}")).await
    });
    server.wait_for_sync_of(&alice.user_id).await;
    assert!(!poll.is_finished(), "the sync waits for something to report");
    alice.client.post(&room_path(&room, &format!("receipt/m.read/{plain}")), &json!({})).await.expect(200);
    let woken = poll.await.unwrap().expect(200).clone();
    assert!(started.elapsed() < Duration::from_secs(15), "the receipt woke the sync");
    let unread = &woken["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(
        (unread["notification_count"].clone(), unread["highlight_count"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(counts(&alice, &room).await, (0, 0));
    let page = alice.client.get("/_matrix/client/v3/notifications").await.expect(200).clone();
    assert!(page["notifications"].as_array().unwrap().iter().all(|n| n["read"] == true), "{page}");
    assert_eq!(counts(&carol, &room).await, (2, 0), "Alice's receipt is hers only");

    // A keyword rule highlights, and the master rule silences everything.
    let cake = json!({"pattern": "cake", "actions": ["notify", {"set_tweak": "highlight"}]});
    alice.client.put(&format!("{RULES}/global/content/cake"), &cake).await.expect(200);
    send_text(&bob, &room, "m4", "there is cake in the kitchen").await;
    assert_eq!(counts(&alice, &room).await, (1, 1));
    alice
        .client
        .put(&format!("{RULES}/global/override/.m.rule.master/enabled"), &json!({"enabled": true}))
        .await
        .expect(200);
    send_text(&bob, &room, "m5", "more cake").await;
    assert_eq!(counts(&alice, &room).await, (1, 1), "the master rule stops notifications");
    alice
        .client
        .put(&format!("{RULES}/global/override/.m.rule.master/enabled"), &json!({"enabled": false}))
        .await
        .expect(200);
    send_text(&bob, &room, "m6", "last cake").await;
    assert_eq!(counts(&alice, &room).await, (2, 2));
    server.stop().await;
}

#[tokio::test]
async fn room_mentions_need_the_notification_power_level() {
    let server = TestServer::start().await;
    let (alice, bob, carol, room) = three_in_a_room(&server).await;
    let everyone = json!({"msgtype": "m.text", "body": "@room listen", "m.mentions": {"room": true}});
    send(&bob, &room, "m.room.message", "r1", everyone.clone()).await;
    assert_eq!(counts(&alice, &room).await, (1, 0), "Bob (power level 0) cannot notify the room");
    send(&alice, &room, "m.room.message", "r2", everyone).await;
    assert_eq!(counts(&bob, &room).await, (1, 1), "Alice (power level 100) can");
    assert_eq!(counts(&carol, &room).await, (2, 1));
    server.stop().await;
}

#[tokio::test]
async fn direct_chats_notify_with_a_sound() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &alice,
        json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id]}),
    )
    .await;
    // The invite itself notifies Bob.
    let page = bob.client.get("/_matrix/client/v3/notifications").await.expect(200).clone();
    let invite = &page["notifications"][0];
    assert_eq!(invite["event"]["type"], "m.room.member");
    assert_eq!(invite["event"]["content"]["membership"], "invite");
    join(&bob, &room).await;
    let hello = send_text(&alice, &room, "d1", "hello").await;
    assert_eq!(counts(&bob, &room).await, (1, 0));
    let page = bob.client.get("/_matrix/client/v3/notifications").await.expect(200).clone();
    let latest = &page["notifications"][0];
    assert_eq!(latest["event"]["event_id"], hello.as_str());
    assert!(
        latest["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["set_tweak"] == "sound" && a["value"] == "default"),
        "one-to-one messages ring: {latest}"
    );
    send(
        &alice,
        &room,
        "m.room.encrypted",
        "d2",
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}),
    )
    .await;
    assert_eq!(counts(&bob, &room).await, (2, 0), "encrypted one-to-one events count");
    // In a room of three, messages notify without a sound.
    let carol = server.register("carol").await;
    alice.client.post(&room_path(&room, "invite"), &json!({"user_id": carol.user_id})).await.expect(200);
    join(&carol, &room).await;
    send_text(&alice, &room, "d3", "hello both").await;
    let page = bob.client.get("/_matrix/client/v3/notifications").await.expect(200).clone();
    assert_eq!(page["notifications"][0]["actions"], json!(["notify"]));
    assert_eq!(counts(&bob, &room).await, (3, 0));
    server.stop().await;
}

#[tokio::test]
async fn thread_notifications_are_counted_per_thread() {
    let server = TestServer::start().await;
    let (alice, bob, _carol, room) = three_in_a_room(&server).await;
    let root = send_text(&alice, &room, "t0", "thread root").await;
    let reply = send(
        &bob,
        &room,
        "m.room.message",
        "t1",
        json!({
            "msgtype": "m.text",
            "body": "in the thread",
            "m.mentions": {"user_ids": [alice.user_id]},
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        }),
    )
    .await;
    let main = send_text(&bob, &room, "t2", "in the main timeline").await;
    let threads =
        format!("&filter={}", urlencode(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#));
    let response = sync(&alice, None, &threads).await;
    let joined = &response["rooms"]["join"][&room];
    assert_eq!(joined["unread_notifications"], json!({"notification_count": 1, "highlight_count": 0}));
    assert_eq!(
        joined["unread_thread_notifications"],
        json!({ root.clone(): {"notification_count": 1, "highlight_count": 1} })
    );
    // Without the filter, thread notifications count in the room's totals.
    assert_eq!(counts(&alice, &room).await, (2, 1));
    // A threaded receipt clears its thread only.
    alice
        .client
        .post(&room_path(&room, &format!("receipt/m.read/{reply}")), &json!({"thread_id": root}))
        .await
        .expect(200);
    let response = sync(&alice, None, &threads).await;
    let joined = &response["rooms"]["join"][&room];
    assert_eq!(joined["unread_notifications"]["notification_count"], 1);
    assert_eq!(joined["unread_thread_notifications"], json!({}));
    // A receipt on the main timeline clears the rest.
    alice
        .client
        .post(&room_path(&room, &format!("receipt/m.read/{main}")), &json!({"thread_id": "main"}))
        .await
        .expect(200);
    assert_eq!(counts(&alice, &room).await, (0, 0));
    // A later reply in the thread counts in the thread again; an unthreaded receipt clears all.
    let reply2 = send(
        &bob,
        &room,
        "m.room.message",
        "t3",
        json!({"msgtype": "m.text", "body": "more", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
    .await;
    let response = sync(&alice, None, &threads).await;
    assert_eq!(
        response["rooms"]["join"][&room]["unread_thread_notifications"][&root],
        json!({"notification_count": 1, "highlight_count": 0})
    );
    alice.client.post(&room_path(&room, &format!("receipt/m.read/{reply2}")), &json!({})).await.expect(200);
    assert_eq!(counts(&alice, &room).await, (0, 0));
    server.stop().await;
}

/// A push gateway on loopback that records every `/notify` body and rejects chosen pushkeys.
/// While `failing` is set it answers 500 (and records the attempt as failed).
#[derive(Clone, Default)]
struct Gateway {
    received: Arc<Mutex<Vec<Value>>>,
    reject: Arc<Mutex<Vec<String>>>,
    failing: Arc<AtomicBool>,
    /// Every attempt in order: the event ID and whether the gateway accepted it.
    attempts: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Gateway {
    /// Serves on `addr` (port 0 for any) until the test ends; returns the bound address.
    async fn serve(&self, addr: SocketAddr) -> SocketAddr {
        async fn notify(
            State(gateway): State<Gateway>,
            Json(body): Json<Value>,
        ) -> Result<Json<Value>, axum::http::StatusCode> {
            let event_id = body["notification"]["event_id"].as_str().unwrap_or_default().to_owned();
            if gateway.failing.load(Ordering::SeqCst) {
                gateway.attempts.lock().unwrap().push((event_id, false));
                return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
            }
            gateway.attempts.lock().unwrap().push((event_id, true));
            gateway.received.lock().unwrap().push(body);
            let rejected = gateway.reject.lock().unwrap().clone();
            Ok(Json(json!({ "rejected": rejected })))
        }
        let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("gateway binds");
        let bound = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        bound
    }

    /// The attempts made for an event so far, waiting up to 30 s until there are `n`.
    async fn wait_for_attempts(&self, event_id: &str, n: usize) -> Vec<bool> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempts: Vec<bool> = self
                .attempts
                .lock()
                .unwrap()
                .iter()
                .filter(|(e, _)| e == event_id)
                .map(|(_, ok)| *ok)
                .collect();
            if attempts.len() >= n {
                return attempts;
            }
            assert!(Instant::now() < deadline, "{n} attempts for {event_id} within 30 s; got {attempts:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(addr: SocketAddr) -> String {
        format!("http://{addr}/_matrix/push/v1/notify")
    }

    /// The notifications received for an event (waits up to `timeout` for at least `n`).
    async fn wait_for(&self, event_id: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Value> = self
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|b| b["notification"]["event_id"] == event_id)
                .cloned()
                .collect();
            if found.len() >= n || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn pusher(url: &str, app_id: &str, pushkey: &str, data: Value) -> Value {
    let mut data = data;
    data["url"] = json!(url);
    json!({
        "kind": "http",
        "app_id": app_id,
        "pushkey": pushkey,
        "app_display_name": "Test app",
        "device_display_name": "Test device",
        "lang": "en",
        "data": data,
    })
}

/// A server allowed to push to gateways on 127.0.0.1.
async fn server_pushing_to_loopback() -> TestServer {
    TestServer::start_with(json!({"ip_range_whitelist": ["127.0.0.1"]})).await
}

async fn direct_chat(alice: &TestUser, bob: &TestUser) -> String {
    let room = create_room(
        alice,
        json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id]}),
    )
    .await;
    join(bob, &room).await;
    room
}

#[tokio::test]
async fn pushers_receive_notifications_at_their_gateway() {
    let server = server_pushing_to_loopback().await;
    let gateway = Gateway::default();
    let addr = gateway.serve("127.0.0.1:0".parse().unwrap()).await;
    let url = Gateway::url(addr);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    set_displayname(&alice, "Alice").await;
    let full = pusher(&url, "org.example.app", "key-full", json!({"custom": "kept"}));
    bob.client.post("/_matrix/client/v3/pushers/set", &full).await.expect(200);
    let lite = pusher(&url, "org.example.lite", "key-lite", json!({"format": "event_id_only"}));
    bob.client.post("/_matrix/client/v3/pushers/set", &lite).await.expect(200);
    let listed = bob.client.get("/_matrix/client/v3/pushers").await.expect(200).clone();
    let listed = listed["pushers"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let app = listed.iter().find(|p| p["app_id"] == "org.example.app").unwrap();
    assert_eq!(app["pushkey"], "key-full");
    assert_eq!(app["kind"], "http");
    assert_eq!(app["data"], json!({"url": url, "custom": "kept"}));
    assert_eq!((app["app_display_name"].clone(), app["lang"].clone()), (json!("Test app"), json!("en")));

    let room = direct_chat(&alice, &bob).await;
    let started_s = myelin_service::util::now_ms() / 1000;
    let ping = send_text(&alice, &room, "p1", "ping").await;
    let bodies = gateway.wait_for(&ping, 2, Duration::from_secs(10)).await;
    assert_eq!(bodies.len(), 2, "one push per pusher: {bodies:?}");
    let full_body = bodies.iter().find(|b| b["notification"]["devices"][0]["pushkey"] == "key-full").unwrap();
    let n = &full_body["notification"];
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], alice.user_id.as_str());
    assert_eq!(n["sender_display_name"], "Alice");
    assert_eq!(n["content"], json!({"msgtype": "m.text", "body": "ping"}));
    assert_eq!(n["prio"], "high");
    assert!(n["counts"]["unread"].as_u64().unwrap() >= 1, "{n}");
    let device = &n["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["data"], json!({"custom": "kept"}), "data is forwarded without the url");
    assert_eq!(device["tweaks"], json!({"sound": "default"}));
    let pushkey_ts = device["pushkey_ts"].as_u64().expect("pushkey_ts in seconds");
    assert!(pushkey_ts <= started_s + 1 && pushkey_ts + 60 > started_s, "{pushkey_ts} vs {started_s}");
    let lite_body = bodies.iter().find(|b| b["notification"]["devices"][0]["pushkey"] == "key-lite").unwrap();
    let n = lite_body["notification"].as_object().unwrap();
    let mut keys: Vec<&str> = n.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["counts", "devices", "event_id", "prio", "room_id"], "event_id_only: {n:?}");
    assert_eq!(n["devices"][0]["data"], json!({"format": "event_id_only"}));
    assert!(n["devices"][0].get("tweaks").is_none());

    // A pushkey the gateway rejects loses its pusher.
    gateway.reject.lock().unwrap().push("key-full".to_owned());
    let second = send_text(&alice, &room, "p2", "again").await;
    gateway.wait_for(&second, 2, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = bob.client.get("/_matrix/client/v3/pushers").await.expect(200).clone();
        let keys: Vec<Value> =
            listed["pushers"].as_array().unwrap().iter().map(|p| p["pushkey"].clone()).collect();
        if keys == [json!("key-lite")] {
            break;
        }
        assert!(Instant::now() < deadline, "the rejected pusher is still there: {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `kind: null` deletes a pusher.
    let delete = json!({"kind": null, "app_id": "org.example.lite", "pushkey": "key-lite"});
    bob.client.post("/_matrix/client/v3/pushers/set", &delete).await.expect(200);
    assert_eq!(bob.client.get("/_matrix/client/v3/pushers").await.expect(200)["pushers"], json!([]));

    // A pushkey moves between users unless `append` is set.
    let carol = server.register("carol").await;
    let shared = pusher(&url, "org.example.shared", "shared-key", json!({}));
    bob.client.post("/_matrix/client/v3/pushers/set", &shared).await.expect(200);
    carol.client.post("/_matrix/client/v3/pushers/set", &shared).await.expect(200);
    assert_eq!(bob.client.get("/_matrix/client/v3/pushers").await.expect(200)["pushers"], json!([]));
    let mut appended = shared.clone();
    appended["append"] = json!(true);
    bob.client.post("/_matrix/client/v3/pushers/set", &appended).await.expect(200);
    for user in [&bob, &carol] {
        let listed = user.client.get("/_matrix/client/v3/pushers").await.expect(200).clone();
        assert_eq!(listed["pushers"][0]["pushkey"], "shared-key", "{}", user.user_id);
    }

    // Invalid pushers.
    let set = |body: Value| {
        let client = bob.client.clone();
        async move { client.post("/_matrix/client/v3/pushers/set", &body).await }
    };
    let mut email = pusher(&url, "m.email", "bob@example.org", json!({}));
    email["kind"] = json!("email");
    set(email).await.expect_error(400, "M_INVALID_PARAM");
    let mut no_url = pusher(&url, "a", "k", json!({}));
    no_url["data"] = json!({});
    set(no_url).await.expect_error(400, "M_INVALID_PARAM");
    let wrong_path = pusher(&format!("http://{addr}/notify"), "a", "k", json!({}));
    set(wrong_path).await.expect_error(400, "M_INVALID_PARAM");
    let mut no_lang = pusher(&url, "a", "k", json!({}));
    no_lang.as_object_mut().unwrap().remove("lang");
    set(no_lang).await.expect_error(400, "M_MISSING_PARAM");
    let bad_format = pusher(&url, "a", "k", json!({"format": "everything"}));
    set(bad_format).await.expect_error(400, "M_INVALID_PARAM");
    set(json!({"app_id": "a", "pushkey": "k"})).await.expect_error(400, "M_MISSING_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn pending_pushes_survive_a_restart_and_reach_a_gateway_that_comes_up() {
    let mut server = server_pushing_to_loopback().await;
    // The gateway fails every request until told otherwise.
    let gateway = Gateway::default();
    gateway.failing.store(true, Ordering::SeqCst);
    let addr = gateway.serve("127.0.0.1:0".parse().unwrap()).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = direct_chat(&alice, &bob).await;
    let body = pusher(&Gateway::url(addr), "org.example.app", "key-1", json!({}));
    bob.client.post("/_matrix/client/v3/pushers/set", &body).await.expect(200);
    let event = send_text(&alice, &room, "r1", "sent while the gateway is down").await;
    // Delivery failed once (the gateway answered 500), so the push is pending.
    let first = gateway.wait_for_attempts(&event, 1).await;
    assert!(!first[0], "the first attempt failed: {first:?}");
    server.restart().await;
    gateway.failing.store(false, Ordering::SeqCst);
    let bodies = gateway.wait_for(&event, 1, Duration::from_secs(30)).await;
    assert!(!bodies.is_empty(), "the pending push was delivered after the restart");
    assert_eq!(bodies[0]["notification"]["room_id"], room.as_str());
    assert_eq!(bodies[0]["notification"]["devices"][0]["pushkey"], "key-1");
    // Delivered once: the queue is empty (nothing is left to retry) and the gateway accepted
    // the push exactly once, after at least one failure.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.services().store().next_push_due().await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the delivered push is still queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts = gateway.wait_for_attempts(&event, 1).await;
    assert_eq!(attempts.iter().filter(|ok| **ok).count(), 1, "{attempts:?}");
    assert_eq!(attempts.last(), Some(&true), "{attempts:?}");
    assert!(attempts.len() >= 2 && !attempts[0], "a failure came first: {attempts:?}");
    server.stop().await;
}

#[tokio::test]
async fn gateways_on_blocked_ranges_are_refused() {
    let server = TestServer::start().await;
    let bob = server.register("bob").await;
    for url in [
        "http://127.0.0.1:9/_matrix/push/v1/notify",
        "http://localhost:9/_matrix/push/v1/notify",
        "http://10.1.2.3/_matrix/push/v1/notify",
        "http://169.254.169.254/_matrix/push/v1/notify",
        "http://[::1]:9/_matrix/push/v1/notify",
        "http://[::ffff:127.0.0.1]:9/_matrix/push/v1/notify",
    ] {
        let response =
            bob.client.post("/_matrix/client/v3/pushers/set", &pusher(url, "a", "k", json!({}))).await;
        response.expect_error(400, "M_INVALID_PARAM");
    }
    assert_eq!(bob.client.get("/_matrix/client/v3/pushers").await.expect(200)["pushers"], json!([]));
    server.stop().await;

    // Allowed by the whitelist; refused at delivery once the whitelist is gone.
    let mut server = server_pushing_to_loopback().await;
    let gateway = Gateway::default();
    let addr = gateway.serve("127.0.0.1:0".parse().unwrap()).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let other_loopback = format!("http://127.0.0.2:{}/_matrix/push/v1/notify", addr.port());
    let response = bob
        .client
        .post("/_matrix/client/v3/pushers/set", &pusher(&other_loopback, "a", "k", json!({})))
        .await;
    response.expect_error(400, "M_INVALID_PARAM");
    let body = pusher(&Gateway::url(addr), "org.example.app", "key-1", json!({}));
    bob.client.post("/_matrix/client/v3/pushers/set", &body).await.expect(200);
    let room = direct_chat(&alice, &bob).await;
    let allowed = send_text(&alice, &room, "b1", "allowed").await;
    assert_eq!(gateway.wait_for(&allowed, 1, Duration::from_secs(10)).await.len(), 1);
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&server.config_path).unwrap()).unwrap();
    let mut config = config.as_object().unwrap().clone();
    config.remove("ip_range_whitelist");
    std::fs::write(&server.config_path, serde_json::to_string(&config).unwrap()).unwrap();
    server.restart().await;
    let alice = TestUser { client: server.client().with_token(&alice.access_token), ..alice };
    let blocked = send_text(&alice, &room, "b2", "blocked").await;
    let bodies = gateway.wait_for(&blocked, 1, Duration::from_secs(3)).await;
    assert!(bodies.is_empty(), "no push to a blocked address: {bodies:?}");
    server.stop().await;
}

#[tokio::test]
async fn pushers_go_with_their_device() {
    let server =
        myelin_test_support::TestServer::start_with(serde_json::json!({"ip_range_whitelist": ["127.0.0.1"]}))
            .await;
    let alice = server.register("alice").await;
    let pusher = serde_json::json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": "key1", "app_display_name": "App",
        "device_display_name": "Phone", "lang": "en", "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify"},
    });
    alice.client.post("/_matrix/client/v3/pushers/set", &pusher).await.expect(200);
    assert_eq!(
        alice.client.get("/_matrix/client/v3/pushers").await.expect(200)["pushers"].as_array().unwrap().len(),
        1
    );
    alice.client.post("/_matrix/client/v3/logout", &serde_json::json!({})).await.expect(200);
    assert!(
        server.services().store().pushers_of(&alice.user_id).await.unwrap().is_empty(),
        "logging out removes the device's pushers"
    );
    server.stop().await;
}
