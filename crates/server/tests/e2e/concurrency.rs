//! Concurrent sends into one room: every event lands once, in one linear DAG.

use std::collections::HashSet;

use myelin_test_support::TestServer;
use serde_json::json;

use crate::rooms::create_room;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_senders_two_hundred_messages_each_make_one_linear_dag() {
    let server = TestServer::start().await;
    let owner = server.register("owner").await;
    let room_id = create_room(&owner, json!({"preset": "public_chat"})).await;
    let mut senders = Vec::new();
    for i in 0..10 {
        let user = server.register(&format!("sender{i}")).await;
        user.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
        senders.push(user);
    }
    let mut tasks = Vec::new();
    for (i, user) in senders.into_iter().enumerate() {
        let room_id = room_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..200 {
                let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t{n}");
                let response =
                    user.client.put(&path, &json!({"msgtype": "m.text", "body": format!("{i}-{n}")})).await;
                ids.push(response.expect(200)["event_id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut sent = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(sent.insert(id), "every send got its own event");
        }
    }
    assert_eq!(sent.len(), 2000);

    // Read the room back from the store: each message once, and each event's only prev event
    // is the event before it (a single chain, no forks).
    let store = server.services().store();
    let rows = store
        .db()
        .query(
            "SELECT e.event_id, e.type, e.stream_ordering, x.prev_event_id FROM events e
             LEFT JOIN event_edges x ON x.event_id = e.event_id WHERE e.room_id = $1 ORDER BY e.stream_ordering",
            vec![room_id.as_str().into()],
        )
        .await
        .unwrap();
    let mut previous: Option<String> = None;
    let mut messages = HashSet::new();
    let mut seen_events = HashSet::new();
    for row in &rows {
        let event_id = row.string(0).unwrap();
        assert!(seen_events.insert(event_id.clone()), "{event_id} has more than one prev event");
        assert_eq!(row.opt_string(3).unwrap(), previous, "{event_id} follows the event before it");
        if row.string(1).unwrap() == "m.room.message" {
            messages.insert(event_id.clone());
        }
        previous = Some(event_id);
    }
    assert_eq!(messages, sent);
    let extremities = store.forward_extremities(&room_id).await.unwrap();
    assert_eq!(extremities, vec![previous.unwrap()]);
    server.stop().await;
}
