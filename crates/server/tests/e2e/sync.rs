//! `/sync`: initial and incremental, long-polling, timelines and gaps, membership sections,
//! ephemeral events, account data, presence, filters.

use std::time::{Duration, Instant};

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::{create_room, send_text, urlencode};

fn path(room_id: &str, rest: &str) -> String {
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

fn timeline_ids(sync: &Value, room_id: &str) -> Vec<String> {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .map(|events| events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn initial_sync_covers_every_joined_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut rooms = Vec::new();
    for i in 0..3 {
        let room = create_room(&alice, json!({"name": format!("room {i}")})).await;
        send_text(&alice, &room, "t", &format!("hello {i}")).await;
        rooms.push(room);
    }
    let response = sync(&alice, None, "").await;
    assert!(response["next_batch"].as_str().unwrap().starts_with('s'));
    for (i, room) in rooms.iter().enumerate() {
        let joined = &response["rooms"]["join"][room];
        let timeline = joined["timeline"]["events"].as_array().unwrap();
        assert_eq!(timeline.last().unwrap()["content"]["body"], format!("hello {i}"));
        assert!(timeline.iter().all(|e| e.get("room_id").is_none()), "sync events omit room_id");
        assert!(joined["timeline"]["prev_batch"].is_string());
        assert_eq!(joined["summary"]["m.joined_member_count"], 1);
        assert_eq!(joined["unread_notifications"]["notification_count"], 0);
        // Every state event is either in the timeline or in the state block.
        let mut types: Vec<String> = joined["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        types.extend(timeline.iter().map(|e| e["type"].as_str().unwrap().to_owned()));
        assert!(
            types.contains(&"m.room.create".to_owned()) && types.contains(&"m.room.name".to_owned()),
            "{types:?}"
        );
    }
    server.stop().await;
}

/// The room summary is worked out of the room's cached members: an invite, a join and a
/// leave each show in the next incremental sync.
#[tokio::test]
async fn the_room_summary_follows_invites_joins_and_leaves() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({})).await;
    let summary = |sync: &Value| sync["rooms"]["join"][&room]["summary"].clone();
    let first = sync(&alice, None, "").await;
    assert_eq!(summary(&first)["m.joined_member_count"], 1, "{first}");
    assert_eq!(summary(&first)["m.invited_member_count"], 0, "{first}");
    let mut token = first["next_batch"].as_str().unwrap().to_owned();
    alice.client.post(&path(&room, "invite"), &json!({"user_id": &bob.user_id})).await.expect(200);
    let invited = sync(&alice, Some(&token), "").await;
    assert_eq!(summary(&invited)["m.invited_member_count"], 1, "{invited}");
    assert_eq!(summary(&invited)["m.joined_member_count"], 1, "{invited}");
    assert_eq!(summary(&invited)["m.heroes"], json!([&bob.user_id]), "{invited}");
    token = invited["next_batch"].as_str().unwrap().to_owned();
    bob.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
    let joined = sync(&alice, Some(&token), "").await;
    assert_eq!(summary(&joined)["m.joined_member_count"], 2, "{joined}");
    assert_eq!(summary(&joined)["m.invited_member_count"], 0, "{joined}");
    token = joined["next_batch"].as_str().unwrap().to_owned();
    // A message alone leaves the summary out.
    send_text(&alice, &room, "1", "hi").await;
    let message = sync(&alice, Some(&token), "").await;
    assert!(message["rooms"]["join"][&room].get("summary").is_none(), "{message}");
    token = message["next_batch"].as_str().unwrap().to_owned();
    bob.client.post(&path(&room, "leave"), &json!({})).await.expect(200);
    let left = sync(&alice, Some(&token), "").await;
    assert_eq!(summary(&left)["m.joined_member_count"], 1, "{left}");
    server.stop().await;
}

#[tokio::test]
async fn incremental_sync_returns_new_events_exactly_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
    let first = sync(&bob, None, "").await;
    let token = first["next_batch"].as_str().unwrap().to_owned();
    let a = send_text(&alice, &room, "1", "one").await;
    let b = send_text(&alice, &room, "2", "two").await;
    let second = sync(&bob, Some(&token), "").await;
    assert_eq!(timeline_ids(&second, &room), vec![a.clone(), b.clone()]);
    assert_eq!(second["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert_eq!(second["rooms"]["join"][&room]["state"]["events"], json!([]));
    let token2 = second["next_batch"].as_str().unwrap().to_owned();
    let third = sync(&bob, Some(&token2), "").await;
    assert!(third["rooms"]["join"].get(&room).is_none(), "nothing new: {third}");
    // The same token again gives the same answer (tokens are positions, not cursors).
    let again = sync(&bob, Some(&token), "").await;
    assert_eq!(timeline_ids(&again, &room), vec![a, b]);
    server.stop().await;
}

#[tokio::test]
async fn long_polling_sync_wakes_on_a_new_message() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
    let token = sync(&bob, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let client = bob.client.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        client.get(&format!("/_matrix/client/v3/sync?timeout=30000&since={token}")).await
    });
    // The long-poll is parked on the server, with nothing to report yet.
    server.wait_for_sync_of(&bob.user_id).await;
    assert!(!poll.is_finished(), "the sync waits for something to report");
    let event = send_text(&alice, &room, "live", "ping").await;
    let response = poll.await.unwrap();
    let elapsed = started.elapsed();
    let body = response.expect(200).clone();
    assert_eq!(timeline_ids(&body, &room), vec![event]);
    assert!(
        elapsed < Duration::from_secs(29),
        "the sync returned with the event, not at its timeout ({elapsed:?})"
    );
    // A long poll with nothing to report returns at its timeout, empty.
    let token = body["next_batch"].as_str().unwrap();
    let started = Instant::now();
    let idle = bob
        .client
        .get(&format!("/_matrix/client/v3/sync?timeout=300&since={token}"))
        .await
        .expect(200)
        .clone();
    // This one waits out its timeout: the elapsed time is the thing tested.
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert!(idle["rooms"]["join"].as_object().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn limited_timelines_page_back_to_the_gap() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let token = sync(&alice, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let mut sent = Vec::new();
    for i in 0..15 {
        sent.push(send_text(&alice, &room, &format!("m{i}"), &format!("{i}")).await);
    }
    alice
        .client
        .put(&path(&room, "state/m.room.topic"), &json!({"topic": "changed in the gap"}))
        .await
        .expect(200);
    for i in 15..20 {
        sent.push(send_text(&alice, &room, &format!("m{i}"), &format!("{i}")).await);
    }
    let filter = urlencode(r#"{"room":{"timeline":{"limit":5}}}"#);
    let response = sync(&alice, Some(&token), &format!("&filter={filter}")).await;
    let joined = &response["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    assert_eq!(timeline_ids(&response, &room), sent[15..].to_vec());
    // The state block carries the state change from the gap.
    let state = joined["state"]["events"].as_array().unwrap();
    assert!(
        state.iter().any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "changed in the gap"),
        "{state:?}"
    );
    // Paging back from prev_batch reaches the events cut off.
    let prev_batch = joined["timeline"]["prev_batch"].as_str().unwrap();
    let page = alice
        .client
        .get(&path(&room, &format!("messages?dir=b&limit=30&from={prev_batch}")))
        .await
        .expect(200)
        .clone();
    let paged: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = sent[..15].iter().rev().cloned().collect();
    assert_eq!(paged, expected);
    server.stop().await;
}

#[tokio::test]
async fn leaving_kicks_and_bans_show_rooms_under_leave() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut rooms = Vec::new();
    for _ in 0..3 {
        let room = create_room(&alice, json!({"preset": "public_chat"})).await;
        bob.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
        rooms.push(room);
    }
    let token = sync(&bob, None, "").await["next_batch"].as_str().unwrap().to_owned();
    bob.client.post(&path(&rooms[0], "leave"), &json!({})).await.expect(200);
    alice.client.post(&path(&rooms[1], "kick"), &json!({"user_id": bob.user_id})).await.expect(200);
    alice.client.post(&path(&rooms[2], "ban"), &json!({"user_id": bob.user_id})).await.expect(200);
    send_text(&alice, &rooms[0], "after", "said after bob left").await;
    let response = sync(&bob, Some(&token), "").await;
    for (room, membership) in rooms.iter().zip(["leave", "leave", "ban"]) {
        assert!(response["rooms"]["join"].get(room).is_none());
        let left = &response["rooms"]["leave"][room];
        let events = left["timeline"]["events"].as_array().unwrap();
        let last = events.last().expect("the leave event");
        assert_eq!(last["type"], "m.room.member");
        assert_eq!(last["state_key"], bob.user_id.as_str());
        assert_eq!(last["content"]["membership"], membership);
        assert!(events.iter().all(|e| e["content"]["body"] != "said after bob left"));
    }
    // Initial syncs show left rooms only with include_leave.
    assert!(sync(&bob, None, "").await["rooms"]["leave"].as_object().unwrap().is_empty());
    let include = urlencode(r#"{"room":{"include_leave":true}}"#);
    assert_eq!(
        sync(&bob, None, &format!("&filter={include}")).await["rooms"]["leave"].as_object().unwrap().len(),
        3
    );
    server.stop().await;
}

#[tokio::test]
async fn invites_carry_stripped_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let token = sync(&bob, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let room = create_room(&alice, json!({"name": "Secret", "invite": [bob.user_id]})).await;
    let response = sync(&bob, Some(&token), "").await;
    let state = response["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Secret"));
    let own = state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap();
    assert_eq!(own["content"]["membership"], "invite");
    assert_eq!(own["sender"], alice.user_id.as_str());
    assert!(state.iter().all(|e| e.get("event_id").is_none()), "stripped state has no event IDs");
    // After joining, the room moves to join with its full state.
    bob.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
    let token = response["next_batch"].as_str().unwrap();
    let joined = sync(&bob, Some(token), "").await;
    assert!(joined["rooms"]["join"].get(&room).is_some());
    assert!(joined["rooms"]["invite"].get(&room).is_none());
    server.stop().await;
}

#[tokio::test]
async fn receipts_typing_and_private_receipts() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
    let event = send_text(&alice, &room, "r", "read me").await;
    let token = sync(&alice, None, "").await["next_batch"].as_str().unwrap().to_owned();
    bob.client.post(&path(&room, &format!("receipt/m.read.private/{event}")), &json!({})).await.expect(200);
    let response = sync(&alice, Some(&token), "").await;
    let leaked = response["rooms"]["join"][&room]["ephemeral"]["events"].as_array().is_some_and(|events| {
        events.iter().any(|e| e["type"] == "m.receipt" && e["content"][&event]["m.read.private"].is_object())
    });
    assert!(!leaked, "private receipts are not shown to others: {response}");
    // Bob sees his own private receipt.
    let own = sync(&bob, None, "").await;
    let receipts = own["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap();
    let receipt = receipts.iter().find(|e| e["type"] == "m.receipt").unwrap();
    assert!(receipt["content"][&event]["m.read.private"][&bob.user_id]["ts"].is_u64());
    // A public receipt reaches Alice.
    bob.client
        .post(&path(&room, &format!("receipt/m.read/{event}")), &json!({"thread_id": "main"}))
        .await
        .expect(200);
    let response = sync(&alice, Some(&token), "").await;
    let receipts = response["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap();
    let receipt = receipts.iter().find(|e| e["type"] == "m.receipt").unwrap();
    assert_eq!(receipt["content"][&event]["m.read"][&bob.user_id]["thread_id"], "main");
    // Errors.
    bob.client
        .post(&path(&room, &format!("receipt/m.read/{event}")), &json!({"thread_id": ""}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    bob.client
        .post(&path(&room, &format!("receipt/m.fully_read/{event}")), &json!({"thread_id": "main"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    bob.client
        .post(&path(&room, &format!("receipt/m.bogus/{event}")), &json!({}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    bob.client
        .post(&path(&room, "receipt/m.read/$missing"), &json!({}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    // Read markers: m.fully_read becomes room account data.
    bob.client
        .post(&path(&room, "read_markers"), &json!({"m.fully_read": event, "m.read": event}))
        .await
        .expect(200);
    let marker = bob
        .client
        .get(&format!("/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.fully_read", bob.user_id))
        .await
        .expect(200)
        .clone();
    assert_eq!(marker["event_id"], event.as_str());

    // Typing, and its expiry.
    let token = sync(&alice, None, "").await["next_batch"].as_str().unwrap().to_owned();
    bob.client
        .put(&path(&room, &format!("typing/{}", bob.user_id)), &json!({"typing": true, "timeout": 500}))
        .await
        .expect(200);
    let response = sync(&alice, Some(&token), "").await;
    let typing = response["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap();
    let typing = typing.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(typing["content"]["user_ids"], json!([bob.user_id]));
    let token = response["next_batch"].as_str().unwrap().to_owned();
    // The expiry wakes a long-polling sync with an empty typing list.
    let expired = alice
        .client
        .get(&format!("/_matrix/client/v3/sync?timeout=10000&since={token}"))
        .await
        .expect(200)
        .clone();
    let typing = expired["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap();
    let typing = typing.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(typing["content"]["user_ids"], json!([]));
    alice
        .client
        .put(&path(&room, &format!("typing/{}", bob.user_id)), &json!({"typing": true}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn lazy_loaded_members_are_exactly_the_timeline_senders() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let mut users = Vec::new();
    for name in ["u1", "u2", "u3", "u4"] {
        let user = server.register(name).await;
        user.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
        users.push(user);
    }
    send_text(&users[0], &room, "a", "first").await;
    send_text(&users[1], &room, "b", "second").await;
    let observer = server.register("observer").await;
    observer.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
    send_text(&users[2], &room, "c", "third").await;
    let filter = urlencode(r#"{"room":{"timeline":{"limit":2},"state":{"lazy_load_members":true}}}"#);
    let response = sync(&observer, None, &format!("&filter={filter}")).await;
    let joined = &response["rooms"]["join"][&room];
    let senders: std::collections::BTreeSet<String> = joined["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sender"].as_str().unwrap().to_owned())
        .collect();
    let mut members: Vec<String> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    members.sort();
    // The timeline is [observer joins, u3 speaks]: the observer's own member event is in the
    // timeline, so the state holds u3's only.
    assert_eq!(senders, [observer.user_id.clone(), users[2].user_id.clone()].into_iter().collect());
    assert_eq!(members, vec![users[2].user_id.clone()]);
    server.stop().await;
}

#[tokio::test]
async fn account_data_and_tags_arrive_as_deltas() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let token = sync(&alice, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let user = &alice.user_id;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/user/{user}/account_data/org.example.prefs"),
            &json!({"dark": true}),
        )
        .await
        .expect(200);
    alice
        .client
        .put(&format!("/_matrix/client/v3/user/{user}/rooms/{room}/tags/m.favourite"), &json!({"order": 0.5}))
        .await
        .expect(200);
    let response = sync(&alice, Some(&token), "").await;
    let global = response["account_data"]["events"].as_array().unwrap();
    assert!(global.iter().any(|e| e["type"] == "org.example.prefs" && e["content"]["dark"] == true));
    let room_data = response["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    let tags = room_data.iter().find(|e| e["type"] == "m.tag").unwrap();
    assert_eq!(tags["content"]["tags"]["m.favourite"]["order"], 0.5);
    let token = response["next_batch"].as_str().unwrap();
    assert!(sync(&alice, Some(token), "").await["account_data"]["events"].as_array().unwrap().is_empty());
    // The APIs themselves.
    assert_eq!(
        alice
            .client
            .get(&format!("/_matrix/client/v3/user/{user}/account_data/org.example.prefs"))
            .await
            .expect(200)["dark"],
        true
    );
    alice
        .client
        .get(&format!("/_matrix/client/v3/user/{user}/account_data/org.example.none"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    let put_fully_read = alice
        .client
        .put(&format!("/_matrix/client/v3/user/{user}/account_data/m.fully_read"), &json!({}))
        .await;
    put_fully_read.expect_error(405, "M_BAD_JSON");
    let tags = alice
        .client
        .get(&format!("/_matrix/client/v3/user/{user}/rooms/{room}/tags"))
        .await
        .expect(200)
        .clone();
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5);
    alice
        .client
        .delete(&format!("/_matrix/client/v3/user/{user}/rooms/{room}/tags/m.favourite"))
        .await
        .expect(200);
    let tags = alice
        .client
        .get(&format!("/_matrix/client/v3/user/{user}/rooms/{room}/tags"))
        .await
        .expect(200)
        .clone();
    assert_eq!(tags, json!({"tags": {}}));
    let bob = server.register("bob").await;
    bob.client
        .get(&format!("/_matrix/client/v3/user/{user}/account_data/org.example.prefs"))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn presence_is_shared_with_room_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let stranger = server.register("stranger").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
    let token = sync(&bob, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let stranger_token = sync(&stranger, None, "").await["next_batch"].as_str().unwrap().to_owned();
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", alice.user_id),
            &json!({"presence": "unavailable", "status_msg": "lunch"}),
        )
        .await
        .expect(200);
    let response = sync(&bob, Some(&token), "&set_presence=offline").await;
    let presence = response["presence"]["events"].as_array().unwrap();
    let alices = presence.iter().find(|e| e["sender"] == alice.user_id.as_str()).expect("alice's presence");
    assert_eq!(alices["content"]["presence"], "unavailable");
    assert_eq!(alices["content"]["status_msg"], "lunch");
    // Someone sharing no room with Alice is not told.
    let response = sync(&stranger, Some(&stranger_token), "&set_presence=offline").await;
    let presence = response["presence"]["events"].as_array().unwrap();
    assert!(
        presence.iter().all(|e| e["sender"] != alice.user_id.as_str()),
        "a stranger got alice's presence: {presence:?}"
    );
    let status = bob
        .client
        .get(&format!("/_matrix/client/v3/presence/{}/status", alice.user_id))
        .await
        .expect(200)
        .clone();
    assert_eq!(status["presence"], "unavailable");
    stranger
        .client
        .get(&format!("/_matrix/client/v3/presence/{}/status", alice.user_id))
        .await
        .expect_error(403, "M_FORBIDDEN");
    bob.client
        .put(&format!("/_matrix/client/v3/presence/{}/status", alice.user_id), &json!({"presence": "online"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", alice.user_id),
            &json!({"presence": "dancing"}),
        )
        .await
        .expect_error(400, "M_INVALID_PARAM");

    // Many users with news at once (read all together rather than one by one): still only
    // those sharing a room.
    let token =
        sync(&bob, Some(&token), "&set_presence=offline").await["next_batch"].as_str().unwrap().to_owned();
    let mut members = Vec::new();
    for i in 0..20 {
        let user = server.register(&format!("many{i}")).await;
        if i % 2 == 0 {
            user.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
            members.push(user.user_id.clone());
        }
        user.client
            .put(
                &format!("/_matrix/client/v3/presence/{}/status", user.user_id),
                &json!({"presence": "online"}),
            )
            .await
            .expect(200);
    }
    let response = sync(&bob, Some(&token), "&set_presence=offline").await;
    let mut senders: Vec<String> = response["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sender"].as_str().unwrap().to_owned())
        .filter(|sender| sender.starts_with("@many"))
        .collect();
    senders.sort();
    members.sort();
    assert_eq!(senders, members);
    server.stop().await;
}

#[tokio::test]
async fn filters_can_be_stored_and_used() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_text(&alice, &room, "t", "filtered").await;
    let filter = json!({"room": {"timeline": {"limit": 1, "types": ["m.room.message"]}}, "event_fields": ["type", "content.body"]});
    let created = alice
        .client
        .post(&format!("/_matrix/client/v3/user/{}/filter", alice.user_id), &filter)
        .await
        .expect(200)
        .clone();
    let filter_id = created["filter_id"].as_str().unwrap().to_owned();
    let stored = alice
        .client
        .get(&format!("/_matrix/client/v3/user/{}/filter/{filter_id}", alice.user_id))
        .await
        .expect(200)
        .clone();
    assert_eq!(stored, filter);
    let response = sync(&alice, None, &format!("&filter={filter_id}")).await;
    let events = response["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap();
    assert_eq!(events.as_slice(), [json!({"type": "m.room.message", "content": {"body": "filtered"}})]);
    alice
        .client
        .get(&format!("/_matrix/client/v3/user/{}/filter/999", alice.user_id))
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice
        .client
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", alice.user_id),
            &json!({"room": {"timeline": {"limit": "x"}}}),
        )
        .await
        .expect_error(400, "M_BAD_JSON");
    let bob = server.register("bob").await;
    bob.client
        .get(&format!("/_matrix/client/v3/user/{}/filter/{filter_id}", alice.user_id))
        .await
        .expect_error(403, "M_FORBIDDEN");
    alice.client.get("/_matrix/client/v3/sync?since=bogus").await.expect_error(400, "M_INVALID_PARAM");
    alice.client.get("/_matrix/client/v3/sync?filter=12345").await.expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn sync_tokens_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let token = sync(&alice, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let before = send_text(&alice, &room, "x", "before restart").await;
    server.restart().await;
    let client = server.client().with_token(&alice.access_token);
    let after_path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/y");
    let after =
        client.put(&after_path, &json!({"msgtype": "m.text", "body": "after"})).await.expect(200)["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let response =
        client.get(&format!("/_matrix/client/v3/sync?timeout=0&since={token}")).await.expect(200).clone();
    assert_eq!(timeline_ids(&response, &room), vec![before, after]);
    server.stop().await;
}

#[tokio::test]
async fn huge_timeline_limits_neither_overflow_nor_fail_without_a_cap() {
    // No `filter_timeline_limit`: the client's `u64` limit reaches the timeline query as it is.
    let server = TestServer::start_with(json!({"filter_timeline_limit": -1})).await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_text(&alice, &room, "t1", "hi").await;
    for limit in [json!(u64::MAX), json!(i64::MAX), json!(i64::MAX as u64 + 1)] {
        let filter = json!({"room": {"timeline": {"limit": limit}}}).to_string();
        let body = sync(&alice, None, &format!("&filter={}", urlencode(&filter))).await;
        let timeline = &body["rooms"]["join"][&room]["timeline"];
        assert_eq!(timeline["limited"], false, "{limit}: {timeline}");
        let events = timeline["events"].as_array().expect("timeline events");
        assert!(events.iter().any(|e| e["content"]["body"] == "hi"), "{limit}: {timeline}");
    }
    server.stop().await;
}

/// Stored account data that no longer parses is left out of sync (and logged), never sent as
/// `null` content, and the user's other account data still arrives.
#[tokio::test]
async fn unreadable_account_data_is_left_out_of_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let user = &alice.user_id;
    for (kind, content) in [("org.example.broken", json!({"a": 1})), ("org.example.fine", json!({"b": 2}))] {
        alice
            .client
            .put(&format!("/_matrix/client/v3/user/{user}/account_data/{kind}"), &content)
            .await
            .expect(200);
    }
    let changed = server
        .services()
        .store()
        .db()
        .execute(
            "UPDATE account_data SET content = $1 WHERE user_id = $2 AND type = $3",
            vec!["{not json".into(), user.as_str().into(), "org.example.broken".into()],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    let response = sync(&alice, None, "").await;
    let global = response["account_data"]["events"].as_array().unwrap();
    let types: Vec<&str> = global.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(types.contains(&"org.example.fine"), "{global:?}");
    assert!(!types.contains(&"org.example.broken"), "{global:?}");
    assert!(global.iter().all(|e| e["content"].is_object()), "{global:?}");
}
