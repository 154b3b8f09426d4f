//! The rooms service's internals seen from outside: reads never wait for a room's send lock,
//! corrupt stored events fail closed, and a deactivation that cannot leave a room says so.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use myelin_test_support::TestServer;
use serde_json::{Value, json};

use crate::rooms::{create_room, send_text};

/// How long an HTTP read may take while the send lock is held before the test calls it stuck
/// (it never completes if reads wait for the lock).
const STUCK: Duration = Duration::from_secs(30);

#[tokio::test]
async fn reads_of_the_room_head_do_not_wait_for_the_send_lock() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({"preset": "private_chat"})).await;
    let first = send_text(&alice, &room_id, "t1", "before").await;
    let services = server.services().clone();
    let room = ruma::RoomId::parse(&room_id).unwrap();

    let guard = services.hold_room_send_lock(&room).await.unwrap();
    assert!(guard.is_some(), "the room's head is loaded under the lock");
    // The snapshot is taken without waiting: it completes on its first poll.
    let mut read = pin!(services.room_head_snapshot(&room));
    let Poll::Ready(head) = poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await else {
        panic!("the snapshot waited for the send lock");
    };
    let head = head.unwrap().expect("the room is known");
    assert_eq!(head.room_id, room);
    assert_eq!(head.extremities.iter().map(|id| id.as_str()).collect::<Vec<_>>(), [first.as_str()]);
    // So do the client's reads over HTTP.
    let path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=5");
    let messages = tokio::time::timeout(STUCK, alice.client.get(&path))
        .await
        .expect("/messages waited for the send lock");
    assert_eq!(messages.expect(200)["chunk"][0]["event_id"], first.as_str());
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.create");
    tokio::time::timeout(STUCK, alice.client.get(&path))
        .await
        .expect("/state waited for the send lock")
        .expect(200);
    drop(guard);

    // A send publishes the head it leaves when it releases the lock.
    let second = send_text(&alice, &room_id, "t2", "after").await;
    let head = services.room_head_snapshot(&room).await.unwrap().unwrap();
    assert_eq!(head.extremities.iter().map(|id| id.as_str()).collect::<Vec<_>>(), [second.as_str()]);
    // Unknown rooms are unknown.
    let unknown = ruma::RoomId::parse("!unknown:test.local").unwrap();
    assert!(services.room_head_snapshot(&unknown).await.unwrap().is_none());
    server.stop().await;
}

/// The event ID of a room's current state event of a type.
async fn state_event_id(user: &myelin_test_support::TestUser, room_id: &str, kind: &str) -> String {
    let state = user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state")).await;
    let state = state.expect(200).as_array().unwrap().clone();
    let event = state.iter().find(|e| e["type"] == kind).expect("state event");
    event["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_unreadable_history_visibility_event_hides_history_instead_of_sharing_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let initial_state = json!([{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]);
    let room_id = create_room(&alice, json!({"preset": "public_chat", "initial_state": initial_state})).await;
    let secret = send_text(&alice, &room_id, "t1", "before bob").await;
    let visibility = state_event_id(&alice, &room_id, "m.room.history_visibility").await;
    corrupt_event(&server, &visibility).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);

    // Bob was not in the room when the event was sent: read as "joined", he does not see it
    // (read as the spec's default, "shared", he would).
    bob.client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{secret}"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    let messages =
        bob.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50")).await;
    let ids: Vec<Value> =
        messages.expect(200)["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].clone()).collect();
    assert!(!ids.contains(&json!(secret)), "{ids:?}");
    // Alice, joined when it was sent, still sees it.
    let event = alice.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{secret}")).await;
    assert_eq!(event.expect(200)["content"]["body"], "before bob");
    server.stop().await;
}

#[tokio::test]
async fn deactivation_fails_when_a_room_cannot_be_left_after_leaving_the_others() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let fine = create_room(&alice, json!({"preset": "private_chat"})).await;
    let broken = create_room(&alice, json!({"preset": "private_chat"})).await;
    // A room whose version this server cannot read (loaded after the restart).
    let db = server.services().store().db().clone();
    db.execute("UPDATE rooms SET room_version = 'bogus' WHERE room_id = $1", vec![broken.as_str().into()])
        .await
        .unwrap();
    server.restart().await;
    let client = server.client().with_token(&alice.access_token);

    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id}, "password": alice.password});
    client
        .post("/_matrix/client/v3/account/deactivate", &json!({"auth": auth}))
        .await
        .expect_error(500, "M_UNKNOWN");
    let store = server.services().store();
    assert_eq!(store.membership(&fine, &alice.user_id).await.unwrap().as_deref(), Some("leave"));
    assert_eq!(store.membership(&broken, &alice.user_id).await.unwrap().as_deref(), Some("join"));
    // Not deactivated: the account still works.
    client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    server.stop().await;
}

/// Overwrites an event's stored JSON with text that does not parse (a damaged row).
async fn corrupt_event(server: &TestServer, event_id: &str) {
    let db = server.services().store().db().clone();
    let changed = db
        .execute("UPDATE events SET json = $1 WHERE event_id = $2", vec!["{not json".into(), event_id.into()])
        .await
        .unwrap();
    assert_eq!(changed, 1);
}

#[tokio::test]
async fn an_unreadable_replaced_state_event_leaves_prev_content_out() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({"preset": "private_chat"})).await;
    let topic = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.topic");
    let first = alice.client.put(&topic, &json!({"topic": "one"})).await.expect(200)["event_id"].clone();
    let second = alice.client.put(&topic, &json!({"topic": "two"})).await.expect(200)["event_id"].clone();
    corrupt_event(&server, first.as_str().unwrap()).await;
    // The replaced event is read from the store once the server no longer holds it parsed.
    server.restart().await;
    let event = server
        .client()
        .with_token(&alice.access_token)
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{}", second.as_str().unwrap()))
        .await;
    let unsigned = &event.expect(200)["unsigned"];
    assert_eq!(unsigned["replaces_state"], first);
    assert!(unsigned.get("prev_content").is_none() && unsigned.get("prev_sender").is_none(), "{unsigned}");
    server.stop().await;
}

#[tokio::test]
async fn a_thread_on_an_unreadable_event_is_refused_not_guessed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({"preset": "private_chat"})).await;
    let root = send_text(&alice, &room_id, "t1", "root").await;
    corrupt_event(&server, &root).await;
    let reply = json!({"msgtype": "m.text", "body": "reply", "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t2");
    alice.client.put(&path, &reply).await.expect_error(500, "M_UNKNOWN");
    server.stop().await;
}
