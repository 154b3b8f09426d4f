//! The admin API's history purge (`/_synapse/admin/v1/purge_history`): the events before a
//! point leave the room's history (`/messages`, `/event`, `/search`); local ones stay stored
//! (out of the timeline) unless `delete_local_events`; the room's state stays, so the room
//! goes on working; the task's status is a row that outlives a restart; bad input, unknown
//! rooms and events, and non-admins are refused.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::relations::join;
use crate::rooms::{create_room, send_text, urlencode};

/// The event IDs `/messages` (backwards, up to 100) gives `user`.
async fn timeline(user: &TestUser, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
    let response = user.client.get(&path).await;
    response.expect(200)["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The estimated size (bytes of event JSON) of a room in the database statistics.
async fn stored_bytes(admin: &TestUser, room: &str) -> i64 {
    let response = admin.client.get("/_synapse/admin/v1/statistics/database/rooms").await;
    response.expect(200)["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["room_id"] == room)
        .map_or(0, |entry| entry["estimated_size"].as_i64().unwrap())
}

/// Waits for a purge to end; returns its status body.
async fn wait_for_purge(admin: &TestUser, purge_id: &str) -> Value {
    for _ in 0..500 {
        let response = admin.client.get(&format!("/_synapse/admin/v1/purge_history_status/{purge_id}")).await;
        let status = response.expect(200).clone();
        if status["status"] != "active" {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("purge {purge_id} never finished");
}

/// Starts a purge and waits for it to complete.
async fn purge(admin: &TestUser, path: &str, body: Value) {
    let response = admin.client.post(path, &body).await;
    let purge_id = response.expect(200)["purge_id"].as_str().expect("purge_id").to_owned();
    let status = wait_for_purge(admin, &purge_id).await;
    assert_eq!(status, json!({"status": "complete"}), "{path} {body}");
}

async fn search_hits(user: &TestUser, term: &str) -> usize {
    let body = json!({"search_categories": {"room_events": {"search_term": term}}});
    let response = user.client.post("/_matrix/client/v3/search", &body).await;
    response.expect(200)["search_categories"]["room_events"]["results"].as_array().unwrap().len()
}

#[tokio::test]
async fn purging_history_removes_events_before_the_point_and_keeps_the_room_working() {
    let mut server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "History"})).await;
    let old: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(send_text(&alice, &room, &format!("old{i}"), &format!("aardvark number {i}")).await);
        }
        ids
    };
    let cut = send_text(&alice, &room, "cut", "the cut").await;
    let after = send_text(&alice, &room, "after", "after the cut").await;
    assert_eq!(search_hits(&alice, "aardvark").await, 3);
    let bytes = stored_bytes(&admin, &room).await;

    // Up to the event in the path, keeping local events: they leave the timeline, `/event` and
    // search, but stay stored (the room's bytes do not change).
    purge(&admin, &format!("/_synapse/admin/v1/purge_history/{room}/{}", urlencode(&cut)), json!({})).await;
    let events = timeline(&alice, &room).await;
    assert!(events.contains(&cut) && events.contains(&after), "{events:?}");
    for id in &old {
        assert!(!events.contains(id), "{id} was purged: {events:?}");
        let path = format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(id));
        alice.client.get(&path).await.expect_error(404, "M_NOT_FOUND");
    }
    assert_eq!(events.len(), 2, "the state events before the cut left the timeline too: {events:?}");
    assert_eq!(search_hits(&alice, "aardvark").await, 0);
    assert_eq!(stored_bytes(&admin, &room).await, bytes, "local events are kept");

    // An initial sync shows the room's state (the name's event included) and none of the
    // purged events.
    let sync = alice.client.get("/_matrix/client/v3/sync").await;
    let joined = sync.expect(200)["rooms"]["join"][room.as_str()].clone();
    let ids = |section: &str| -> Vec<String> {
        joined[section]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (state, synced) = (ids("state"), ids("timeline"));
    assert!(old.iter().all(|id| !synced.contains(id) && !state.contains(id)), "{joined}");
    assert!(synced.contains(&after), "{joined}");
    let kinds: Vec<&str> =
        joined["state"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"m.room.name") && kinds.contains(&"m.room.create"), "{joined}");

    // The state stays: the room's name reads, bob joins, alice sends.
    let name = alice.client.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/")).await;
    assert_eq!(name.expect(200)["name"], "History");
    join(&bob, &room).await;
    let late = send_text(&alice, &room, "late", "later").await;
    assert!(timeline(&bob, &room).await.contains(&late));

    // With `delete_local_events`, by `purge_up_to_event_id`: the events go from the database.
    purge(
        &admin,
        &format!("/_synapse/admin/v1/purge_history/{room}"),
        json!({"purge_up_to_event_id": after, "delete_local_events": true}),
    )
    .await;
    assert!(stored_bytes(&admin, &room).await < bytes, "local events were deleted");
    let events = timeline(&alice, &room).await;
    assert!(!events.contains(&cut) && events.contains(&after) && events.contains(&late), "{events:?}");

    // By timestamp: the room's events before the first sent at `ts` go.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let newest = send_text(&alice, &room, "newest", "the newest").await;
    let path = format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(&newest));
    let ts = alice.client.get(&path).await.expect(200)["origin_server_ts"].as_i64().unwrap();
    purge(
        &admin,
        &format!("/_synapse/admin/v1/purge_history/{room}"),
        json!({"purge_up_to_ts": ts, "delete_local_events": true}),
    )
    .await;
    assert_eq!(timeline(&alice, &room).await, vec![newest.clone()]);
    let newer = send_text(&bob, &room, "newer", "still working").await;
    assert_eq!(timeline(&alice, &room).await, vec![newer, newest]);

    // The task is a row: its status outlives a restart.
    let response = admin
        .client
        .post(&format!("/_synapse/admin/v1/purge_history/{room}"), &json!({"purge_up_to_ts": ts}))
        .await;
    let purge_id = response.expect(200)["purge_id"].as_str().unwrap().to_owned();
    wait_for_purge(&admin, &purge_id).await;
    server.restart().await;
    let admin_client = server.client().with_token(&admin.access_token);
    let status = admin_client.get(&format!("/_synapse/admin/v1/purge_history_status/{purge_id}")).await;
    assert_eq!(status.expect(200), &json!({"status": "complete"}));
    server.stop().await;
}

#[tokio::test]
async fn purge_history_refuses_bad_input_unknown_rooms_and_non_admins() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let first = create_room(&alice, json!({})).await;
    let room = create_room(&alice, json!({})).await;
    let event = send_text(&alice, &room, "t", "text").await;
    let other = send_text(&alice, &first, "o", "elsewhere").await;
    let purge = |room: &str| format!("/_synapse/admin/v1/purge_history/{room}");

    alice
        .client
        .post(&purge(&room), &json!({"purge_up_to_event_id": event}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    alice.client.get("/_synapse/admin/v1/purge_history_status/x").await.expect_error(403, "M_FORBIDDEN");
    server.client().post(&purge(&room), &json!({})).await.expect_error(401, "M_MISSING_TOKEN");

    let unknown = format!("!unknown:{}", server.server_name);
    admin.client.post(&purge(&unknown), &json!({"purge_up_to_ts": 1})).await.expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .post(&purge("not-a-room"), &json!({"purge_up_to_ts": 1}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let path = format!("{}/not-an-event", purge(&room));
    admin.client.post(&path, &json!({})).await.expect_error(400, "M_INVALID_PARAM");
    let missing = format!("$missing:{}", server.server_name);
    let path = format!("{}/{}", purge(&room), urlencode(&missing));
    admin.client.post(&path, &json!({})).await.expect_error(404, "M_NOT_FOUND");
    let wrong_room = admin.client.post(&purge(&room), &json!({"purge_up_to_event_id": other})).await;
    wrong_room.expect_error(400, "M_UNKNOWN");
    assert_eq!(wrong_room.json["error"], "Event is for wrong room.");
    for body in [
        json!({}),
        json!({"purge_up_to_ts": "yesterday"}),
        json!({"purge_up_to_ts": 1.5}),
        json!({"purge_up_to_event_id": 5}),
        json!({"purge_up_to_ts": 1, "delete_local_events": "yes"}),
    ] {
        admin.client.post(&purge(&room), &body).await.expect_error(400, "M_BAD_JSON");
    }
    // Before the room's first event (another room's came first): nothing to purge.
    let nothing = admin.client.post(&purge(&room), &json!({"purge_up_to_ts": 0})).await;
    nothing.expect_error(404, "M_NOT_FOUND");
    assert_eq!(nothing.json["error"], "there is no event to be purged");

    admin.client.get("/_synapse/admin/v1/purge_history_status/nope").await.expect_error(404, "M_NOT_FOUND");
    // A room deletion's ID is not a purge's.
    let deletion = admin
        .client
        .request(reqwest::Method::DELETE, &format!("/_synapse/admin/v2/rooms/{first}"), Some(&json!({})))
        .await;
    let delete_id = deletion.expect(200)["delete_id"].as_str().unwrap().to_owned();
    let path = format!("/_synapse/admin/v1/purge_history_status/{delete_id}");
    admin.client.get(&path).await.expect_error(404, "M_NOT_FOUND");
    // Nothing was purged.
    assert!(timeline(&alice, &room).await.contains(&event));
    server.stop().await;
}

/// `GET /_synapse/admin/v1/scheduled_tasks`: the purges, deletions and user redactions started
/// through the admin API, in Synapse's task shape, filtered by action, resource, status and time.
#[tokio::test]
async fn scheduled_tasks_list_purges_deletions_and_redactions() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let kept = create_room(&alice, json!({})).await;
    let event = send_text(&alice, &kept, "t1", "one").await;
    send_text(&alice, &kept, "t2", "two").await;
    let doomed = create_room(&alice, json!({})).await;

    purge(&admin, &format!("/_synapse/admin/v1/purge_history/{kept}/{event}"), json!({})).await;
    let deletion = admin
        .client
        .request(reqwest::Method::DELETE, &format!("/_synapse/admin/v2/rooms/{doomed}"), Some(&json!({})))
        .await;
    let delete_id = deletion.expect(200)["delete_id"].as_str().unwrap().to_owned();
    // The redaction starts once the deletion has kicked alice (it would race it otherwise).
    for _ in 0..500 {
        let path = format!("/_synapse/admin/v2/rooms/delete_status/{delete_id}");
        if admin.client.get(&path).await.expect(200)["status"] == "complete" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let redaction = admin
        .client
        .post(&format!("/_synapse/admin/v1/user/{}/redact", alice.user_id), &json!({"rooms": []}))
        .await;
    let redact_id = redaction.expect(200)["redact_id"].as_str().unwrap().to_owned();
    // Every task ends (the deletion and the redaction run on their own tasks).
    let mut tasks = Value::Null;
    for _ in 0..500 {
        tasks = admin.client.get("/_synapse/admin/v1/scheduled_tasks").await.expect(200).clone();
        let list = tasks["scheduled_tasks"].as_array().unwrap();
        if list.len() == 3 && list.iter().all(|t| t["status"] == "complete") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let list = tasks["scheduled_tasks"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{tasks}");
    let by_action =
        |action: &str| list.iter().find(|t| t["action"] == action).unwrap_or_else(|| panic!("{tasks}"));
    let purge_task = by_action("purge_history");
    assert_eq!(purge_task["resource_id"], kept.as_str());
    assert_eq!(purge_task["status"], "complete");
    assert!(purge_task["timestamp_ms"].as_i64().unwrap() > 0);
    for key in ["id", "action", "status", "timestamp_ms", "resource_id", "result", "error"] {
        assert!(purge_task.get(key).is_some(), "{key} missing: {purge_task}");
    }
    let delete_task = by_action("shutdown_and_purge_room");
    assert_eq!(delete_task["id"], delete_id.as_str());
    assert_eq!(delete_task["resource_id"], doomed.as_str());
    let redact_task = by_action("redact_all_events");
    assert_eq!(redact_task["id"], redact_id.as_str());
    assert_eq!(redact_task["resource_id"], alice.user_id.as_str());
    assert_eq!(redact_task["result"], json!({"failed_redactions": {}}));

    let filtered = |query: &str| {
        let admin = &admin;
        let path = format!("/_synapse/admin/v1/scheduled_tasks?{query}");
        async move {
            let body = admin.client.get(&path).await.expect(200).clone();
            body["scheduled_tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["action"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(filtered("action_name=purge_history").await, ["purge_history"]);
    let two = filtered("action_name=purge_history&action_name=redact_all_events").await;
    assert_eq!(two.len(), 2, "{two:?}");
    assert_eq!(filtered(&format!("resource_id={}", urlencode(&doomed))).await, ["shutdown_and_purge_room"]);
    assert_eq!(filtered("status=complete").await.len(), 3);
    assert_eq!(filtered("job_status=failed").await.len(), 0);
    assert_eq!(filtered("max_timestamp=0").await.len(), 0);

    admin
        .client
        .get("/_synapse/admin/v1/scheduled_tasks?status=done")
        .await
        .expect_error(400, "M_INVALID_PARAM");
    admin
        .client
        .get("/_synapse/admin/v1/scheduled_tasks?max_timestamp=x")
        .await
        .expect_error(400, "M_INVALID_PARAM");
    alice.client.get("/_synapse/admin/v1/scheduled_tasks").await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

/// Room deletions and history purges a previous run left active run again at start-up with
/// what they were asked for; one whose parameters were never recorded is marked failed.
#[tokio::test]
async fn interrupted_purges_and_deletions_resume_after_a_restart() {
    let mut server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let kept = create_room(&alice, json!({})).await;
    let old = send_text(&alice, &kept, "t1", "old").await;
    let point = send_text(&alice, &kept, "t2", "point").await;
    let doomed = create_room(&alice, json!({})).await;
    // What a run that died mid-task leaves: active rows (tasks are only ever started through
    // the admin API, so the rows are written directly, as the store writes them).
    let store = server.services().store().clone();
    let depth = store.event_room_and_depth(&point).await.unwrap().unwrap().1;
    let purge_params = json!({"depth": depth, "delete_local_events": true}).to_string();
    assert!(
        store
            .start_admin_room_task("p1", "purge_history", &kept, false, &purge_params, "master")
            .await
            .unwrap()
    );
    let delete_params = json!({"requester": admin.user_id, "block": true, "purge": true}).to_string();
    assert!(
        store.start_admin_room_task("d1", "delete", &doomed, true, &delete_params, "master").await.unwrap()
    );
    assert!(store.start_admin_room_task("p0", "purge_history", &kept, false, "", "master").await.unwrap());
    server.restart().await;
    let mut admin = admin;
    let mut alice = alice;
    admin.client = server.client().with_token(&admin.access_token);
    alice.client = server.client().with_token(&alice.access_token);

    let status = wait_for_purge(&admin, "p1").await;
    assert_eq!(status, json!({"status": "complete"}));
    let events = timeline(&alice, &kept).await;
    assert!(!events.contains(&old), "the resumed purge removed what was before its point");
    let failed = wait_for_purge(&admin, "p0").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let path = "/_synapse/admin/v2/rooms/delete_status/d1";
    let mut deletion = Value::Null;
    for _ in 0..500 {
        deletion = admin.client.get(path).await.expect(200).clone();
        if deletion["status"] != "active" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(deletion["status"], "complete", "{deletion}");
    assert_eq!(deletion["shutdown_room"]["kicked_users"], json!([alice.user_id]), "{deletion}");
    let join = format!("/_matrix/client/v3/join/{}", urlencode(&doomed));
    alice.client.post(&join, &json!({})).await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}
