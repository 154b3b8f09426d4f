//! Simplified sliding sync (MSC4186): lists, ranges and filters, room subscriptions, each
//! room's data and `required_state` wildcards, incremental answers per connection, the
//! long-poll, every extension, `M_UNKNOWN_POS` and bad input.

use std::time::{Duration, Instant};

use myelin_test_support::{TestClient, TestServer, TestUser};
use serde_json::{Value, json};

use crate::e2e_keys::DeviceKey;
use crate::rooms::{create_room, send_text};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

fn url(pos: Option<&str>, timeout: u64) -> String {
    match pos {
        Some(pos) => format!("{PATH}?pos={pos}&timeout={timeout}"),
        None => format!("{PATH}?timeout={timeout}"),
    }
}

async fn ss(client: &TestClient, pos: Option<&str>, body: &Value) -> Value {
    client.post(&url(pos, 0), body).await.expect(200).clone()
}

fn pos(response: &Value) -> String {
    response["pos"].as_str().expect("pos is a string").to_owned()
}

fn list(ranges: Value, timeline_limit: u64, required_state: Value) -> Value {
    json!({"ranges": ranges, "timeline_limit": timeline_limit, "required_state": required_state})
}

fn room_ids(response: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        response["rooms"].as_object().map(|rooms| rooms.keys().cloned().collect()).unwrap_or_default();
    ids.sort();
    ids
}

fn timeline_bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(|events| {
            events.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default()
}

fn state_pairs(room: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = room["required_state"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    pairs
}

fn pair(kind: &str, key: &str) -> (String, String) {
    (kind.to_owned(), key.to_owned())
}

async fn join(user: &TestUser, room: &str) {
    user.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
}

#[tokio::test]
async fn versions_advertise_simplified_sliding_sync() {
    let server = TestServer::start().await;
    let versions = server.client().get("/_matrix/client/versions").await.expect(200).clone();
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true);
    server.stop().await;
}

#[tokio::test]
async fn a_list_counts_sorts_by_bump_stamp_and_sends_rooms_in_range() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut rooms = Vec::new();
    for i in 0..4 {
        let room = create_room(&alice, json!({"name": format!("room {i}")})).await;
        rooms.push(room);
    }
    // Oldest-created room bumped last: it sorts first.
    send_text(&alice, &rooms[0], "t0", "bump").await;
    let body = json!({"lists": {"all": list(json!([[0, 1]]), 3, json!([["m.room.name", ""]]))}});
    let response = ss(&alice.client, None, &body).await;
    assert_eq!(response["lists"], json!({"all": {"count": 4}}), "{response}");
    assert!(response["lists"]["all"].get("ops").is_none(), "MSC4186 has no ops");
    let mut expected = vec![rooms[0].clone(), rooms[3].clone()];
    expected.sort();
    assert_eq!(room_ids(&response), expected, "the two newest by bump_stamp: {response}");
    let first = &response["rooms"][&rooms[0]];
    let second = &response["rooms"][&rooms[3]];
    assert!(first["bump_stamp"].as_i64().unwrap() > second["bump_stamp"].as_i64().unwrap());
    assert_eq!(first["initial"], true);
    assert_eq!(first["name"], "room 0");
    assert_eq!(first["joined_count"], 1);
    assert_eq!(first["invited_count"], 0);
    assert_eq!(first["notification_count"], 0);
    assert_eq!(first["highlight_count"], 0);
    assert_eq!(first["num_live"], 0);
    assert_eq!(first["limited"], true, "a room's creation is more than 3 events");
    assert_eq!(timeline_bodies(first), vec!["bump"]);
    assert_eq!(first["timeline"].as_array().unwrap().len(), 3);
    assert!(first["timeline"][0].get("room_id").is_none(), "timeline events omit room_id");
    assert_eq!(state_pairs(first), vec![pair("m.room.name", "")]);
    assert!(first.get("is_dm").is_none() && first.get("invite_state").is_none());
    // prev_batch is a token /messages accepts, and pages back from before the timeline.
    let prev_batch = first["prev_batch"].as_str().unwrap();
    let page = alice
        .client
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&from={prev_batch}&limit=50", rooms[0]))
        .await
        .expect(200)
        .clone();
    let paged: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let in_timeline: Vec<&str> =
        first["timeline"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert!(!paged.is_empty() && paged.iter().all(|id| !in_timeline.contains(id)), "{page}");
    // Ranges are clamped to the count; a range past the end is empty; no ranges: every room.
    let body = json!({"lists": {
        "tail": list(json!([[3, 1000]]), 1, json!([])),
        "past": list(json!([[10, 20]]), 1, json!([])),
    }});
    let response = ss(&alice.client, None, &body).await;
    assert_eq!(response["lists"]["tail"]["count"], 4);
    assert_eq!(response["lists"]["past"]["count"], 4);
    assert_eq!(room_ids(&response), vec![rooms[1].clone()], "the oldest room only: {response}");
    let body = json!({"lists": {"every": {"timeline_limit": 0, "required_state": []}}});
    let response = ss(&alice.client, None, &body).await;
    assert_eq!(room_ids(&response).len(), 4);
    assert!(response["rooms"][&rooms[2]].get("timeline").is_none(), "timeline_limit 0");
    server.stop().await;
}

/// Each room's `bump_stamp` from a fresh connection's list of every room.
async fn bump_stamps(client: &TestClient) -> std::collections::BTreeMap<String, i64> {
    let body = json!({"lists": {"all": list(json!([[0, 99]]), 0, json!([]))}});
    let response = ss(client, None, &body).await;
    let rooms = response["rooms"].as_object().expect("rooms");
    rooms.iter().map(|(id, room)| (id.clone(), room["bump_stamp"].as_i64().expect("bump_stamp"))).collect()
}

#[tokio::test]
async fn only_bump_event_types_move_a_room_up() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let older = create_room(&alice, json!({"name": "older"})).await;
    let newer = create_room(&alice, json!({"name": "newer"})).await;
    let start = bump_stamps(&alice.client).await;
    assert!(start[&newer] > start[&older], "created later, sorts first: {start:?}");
    send_text(&alice, &older, "m1", "hello").await;
    let after_message = bump_stamps(&alice.client).await;
    assert!(after_message[&older] > after_message[&newer], "{after_message:?}");
    assert_eq!(after_message[&newer], start[&newer]);
    // A state event and a reaction are not bump types: the room stays where it was.
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{newer}/state/m.room.topic/"), &json!({"topic": "t"}))
        .await
        .expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{newer}/send/m.reaction/r1"),
            &json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "+1"}}),
        )
        .await
        .expect(200);
    assert_eq!(bump_stamps(&alice.client).await, after_message);
    // A sticker is one: the room moves to the top.
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{newer}/send/m.sticker/s1"),
            &json!({"body": "s", "url": "mxc://localhost/s", "info": {}}),
        )
        .await
        .expect(200);
    let after_sticker = bump_stamps(&alice.client).await;
    assert!(after_sticker[&newer] > after_sticker[&older], "{after_sticker:?}");
    // A restarted server (nothing noted in memory) finds the same stamps in the store.
    server.restart().await;
    let alice_client = server.client().with_token(&alice.access_token);
    assert_eq!(bump_stamps(&alice_client).await, after_sticker);
    server.stop().await;
}

#[tokio::test]
async fn incremental_answers_carry_only_what_changed_and_long_polls_wake() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let quiet = create_room(&alice, json!({"preset": "public_chat", "name": "quiet"})).await;
    let busy = create_room(&alice, json!({"preset": "public_chat", "name": "busy"})).await;
    join(&bob, &quiet).await;
    join(&bob, &busy).await;
    let body = json!({"lists": {"all": list(json!([[0, 10]]), 5, json!([["m.room.name", ""]]))}});
    let first = ss(&bob.client, None, &body).await;
    assert_eq!(room_ids(&first).len(), 2);
    let one = pos(&first);
    let event = send_text(&alice, &busy, "1", "news").await;
    let second = ss(&bob.client, Some(&one), &body).await;
    assert_eq!(room_ids(&second), vec![busy.clone()], "only the room with news: {second}");
    let room = &second["rooms"][&busy];
    assert!(room.get("initial").is_none(), "{room}");
    assert_eq!(timeline_bodies(room), vec!["news"]);
    assert_eq!(room["timeline"][0]["event_id"], event);
    assert_eq!(room["num_live"], 1);
    assert_eq!(room["limited"], false);
    assert!(room.get("required_state").is_none(), "the name did not change: {room}");
    assert!(room.get("name").is_none(), "the name is sent again only when it changes: {room}");
    // The bumped room now sorts first.
    assert!(room["bump_stamp"].as_i64().unwrap() > 0);
    // Nothing new: an empty answer, whose pos is usable.
    let two = pos(&second);
    let third = ss(&bob.client, Some(&two), &body).await;
    assert_eq!(room_ids(&third), Vec::<String>::new(), "{third}");
    assert_eq!(third["lists"]["all"]["count"], 2);
    let three = pos(&third);
    // A state change matching required_state is sent with the room.
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{quiet}/state/m.room.name/"), &json!({"name": "renamed"}))
        .await
        .expect(200);
    let fourth = ss(&bob.client, Some(&three), &body).await;
    assert_eq!(room_ids(&fourth), vec![quiet.clone()]);
    assert_eq!(fourth["rooms"][&quiet]["name"], "renamed");
    assert_eq!(state_pairs(&fourth["rooms"][&quiet]), vec![pair("m.room.name", "")]);
    // The previous position still answers (a retried request), the same.
    let retried = ss(&bob.client, Some(&three), &body).await;
    assert_eq!(room_ids(&retried), vec![quiet.clone()]);
    let four = pos(&retried);

    // A long poll waits, and wakes on a new message.
    let client = bob.client.clone();
    let started = Instant::now();
    let poll_body = body.clone();
    let waiting = four.clone();
    let poll = tokio::spawn(async move { client.post(&url(Some(&waiting), 30_000), &poll_body).await });
    server.wait_for_sync_of(&bob.user_id).await;
    assert!(!poll.is_finished(), "the long poll waits for news");
    send_text(&alice, &quiet, "2", "wake up").await;
    let woken = poll.await.unwrap().expect(200).clone();
    assert!(started.elapsed() < Duration::from_secs(29), "woken by the event, not the timeout");
    assert_eq!(timeline_bodies(&woken["rooms"][&quiet]), vec!["wake up"]);
    // With nothing to report it returns at its timeout, empty, with a usable pos.
    let started = Instant::now();
    let idle = bob.client.post(&url(Some(&pos(&woken)), 300), &body).await.expect(200).clone();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(room_ids(&idle), Vec::<String>::new());
    ss(&bob.client, Some(&pos(&idle)), &body).await;
    server.stop().await;
}

#[tokio::test]
async fn rooms_without_news_are_left_out_and_news_is_found_after_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut rooms = Vec::new();
    for name in ["one", "two", "three"] {
        let room = create_room(&alice, json!({"preset": "public_chat", "name": name})).await;
        join(&bob, &room).await;
        rooms.push(room);
    }
    let body = json!({"lists": {"all": list(json!([[0, 10]]), 3, json!([["m.room.topic", ""]]))}});
    let first = ss(&bob.client, None, &body).await;
    assert_eq!(room_ids(&first).len(), 3);
    let one = pos(&first);

    // Restarted: nothing is known in memory of the rooms' newest events. A topic (state, not
    // a bump type) in one room and a message in another are found; the third room is quiet.
    server.restart().await;
    let alice = TestUser { client: server.client().with_token(&alice.access_token), ..alice.clone() };
    let bob = TestUser { client: server.client().with_token(&bob.access_token), ..bob.clone() };
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", rooms[0]), &json!({"topic": "new"}))
        .await
        .expect(200);
    send_text(&alice, &rooms[1], "1", "news").await;
    let second = ss(&bob.client, Some(&one), &body).await;
    let mut expected = vec![rooms[0].clone(), rooms[1].clone()];
    expected.sort();
    assert_eq!(room_ids(&second), expected, "{second}");
    assert_eq!(state_pairs(&second["rooms"][&rooms[0]]), vec![pair("m.room.topic", "")]);
    assert_eq!(timeline_bodies(&second["rooms"][&rooms[1]]), vec!["news"]);

    // Nothing new anywhere: nothing sent. Then asking for more state of every room sends each
    // room again with it, and a longer timeline sends each room's older events too.
    let third = ss(&bob.client, Some(&pos(&second)), &body).await;
    assert_eq!(room_ids(&third), Vec::<String>::new(), "{third}");
    let grown = json!({"lists": {"all": list(json!([[0, 10]]), 3, json!([["m.room.topic", ""], ["m.room.name", ""]]))}});
    let fourth = ss(&bob.client, Some(&pos(&third)), &grown).await;
    assert_eq!(room_ids(&fourth).len(), 3, "{fourth}");
    assert!(state_pairs(&fourth["rooms"][&rooms[2]]).contains(&pair("m.room.name", "")), "{fourth}");
    let longer = json!({"lists": {"all": list(json!([[0, 10]]), 5, json!([["m.room.topic", ""], ["m.room.name", ""]]))}});
    let fifth = ss(&bob.client, Some(&pos(&fourth)), &longer).await;
    assert_eq!(room_ids(&fifth).len(), 3, "{fifth}");
    assert_eq!(fifth["rooms"][&rooms[2]]["expanded_timeline"], true, "{fifth}");
    let sixth = ss(&bob.client, Some(&pos(&fifth)), &longer).await;
    assert_eq!(room_ids(&sixth), Vec::<String>::new(), "{sixth}");
    server.stop().await;
}

#[tokio::test]
async fn required_state_wildcards_lazy_members_me_and_growth() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "r", "topic": "t"})).await;
    join(&bob, &room).await;
    join(&carol, &room).await;
    send_text(&bob, &room, "1", "from bob").await;
    let sub = |required_state: Value| json!({"room_subscriptions": {&room: {"timeline_limit": 1, "required_state": required_state}}});
    let state_of = |response: &Value| state_pairs(&response["rooms"][&room]);

    let all = state_of(&ss(&alice.client, None, &sub(json!([["*", "*"]]))).await);
    for expected in [
        pair("m.room.create", ""),
        pair("m.room.name", ""),
        pair("m.room.topic", ""),
        pair("m.room.member", &alice.user_id),
        pair("m.room.member", &bob.user_id),
        pair("m.room.member", &carol.user_id),
    ] {
        assert!(all.contains(&expected), "{expected:?} in {all:?}");
    }
    let members = state_of(&ss(&alice.client, None, &sub(json!([["m.room.member", "*"]]))).await);
    assert_eq!(
        members,
        vec![
            pair("m.room.member", &alice.user_id),
            pair("m.room.member", &bob.user_id),
            pair("m.room.member", &carol.user_id)
        ]
    );
    let by_key = state_of(&ss(&alice.client, None, &sub(json!([["*", ""]]))).await);
    assert!(
        by_key.contains(&pair("m.room.name", "")) && by_key.iter().all(|(_, k)| k.is_empty()),
        "{by_key:?}"
    );
    let me = state_of(&ss(&alice.client, None, &sub(json!([["m.room.member", "$ME"]]))).await);
    assert_eq!(me, vec![pair("m.room.member", &alice.user_id)]);
    // $LAZY: the members of the timeline (its one event, bob's message) only.
    let lazy = state_of(
        &ss(&alice.client, None, &sub(json!([["m.room.member", "$LAZY"], ["m.room.topic", ""]]))).await,
    );
    assert_eq!(lazy, vec![pair("m.room.member", &bob.user_id), pair("m.room.topic", "")]);
    let exact =
        state_of(&ss(&alice.client, None, &sub(json!([["m.room.topic", ""], ["m.room.nothing", ""]]))).await);
    assert_eq!(exact, vec![pair("m.room.topic", "")]);

    // A room whose required_state grows gets the new entries on the next answer.
    let first = ss(&alice.client, None, &sub(json!([["m.room.name", ""]]))).await;
    let grown =
        ss(&alice.client, Some(&pos(&first)), &sub(json!([["m.room.name", ""], ["m.room.topic", ""]]))).await;
    assert_eq!(state_of(&grown), vec![pair("m.room.topic", "")], "only the new entry: {grown}");
    assert!(grown["rooms"][&room].get("initial").is_none());
    // A larger timeline_limit expands the timeline.
    let expanded = ss(&alice.client, Some(&pos(&grown)), &json!({"room_subscriptions": {&room: {"timeline_limit": 3, "required_state": [["m.room.name", ""], ["m.room.topic", ""]]}}})).await;
    assert_eq!(expanded["rooms"][&room]["expanded_timeline"], true, "{expanded}");
    assert_eq!(expanded["rooms"][&room]["timeline"].as_array().unwrap().len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn lazy_members_are_sent_once_per_connection_and_again_when_they_change() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "lazy"})).await;
    join(&bob, &room).await;
    join(&carol, &room).await;
    send_text(&bob, &room, "1", "bob one").await;
    let body = json!({"room_subscriptions": {&room: {"timeline_limit": 1, "required_state": [["m.room.member", "$LAZY"]]}}});
    let state_of = |response: &Value| state_pairs(&response["rooms"][&room]);
    let bob_member = vec![pair("m.room.member", &bob.user_id)];

    let first = ss(&alice.client, None, &body).await;
    assert_eq!(state_of(&first), bob_member, "{first}");
    // Bob's next message: the client holds his member event already.
    send_text(&bob, &room, "2", "bob two").await;
    let second = ss(&alice.client, Some(&pos(&first)), &body).await;
    assert_eq!(timeline_bodies(&second["rooms"][&room]), vec!["bob two"]);
    assert_eq!(state_of(&second), Vec::<(String, String)>::new(), "{second}");
    // Carol's first message brings hers.
    send_text(&carol, &room, "3", "carol one").await;
    let third = ss(&alice.client, Some(&pos(&second)), &body).await;
    assert_eq!(state_of(&third), vec![pair("m.room.member", &carol.user_id)], "{third}");
    // Bob changes his name and the timeline (limit 1) shows only carol's later message: the
    // change of a member sent before is sent all the same.
    bob.client
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}", bob.user_id),
            &json!({"membership": "join", "displayname": "Robert"}),
        )
        .await
        .expect(200);
    send_text(&carol, &room, "4", "carol two").await;
    let fourth = ss(&alice.client, Some(&pos(&third)), &body).await;
    assert_eq!(timeline_bodies(&fourth["rooms"][&room]), vec!["carol two"]);
    let events = fourth["rooms"][&room]["required_state"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{fourth}");
    assert_eq!(events[0]["state_key"], bob.user_id.as_str());
    assert_eq!(events[0]["content"]["displayname"], "Robert");
    // A fresh connection starts again: its first answer carries the members of its timeline.
    let fresh = ss(&alice.client, None, &body).await;
    assert_eq!(state_of(&fresh), vec![pair("m.room.member", &carol.user_id)], "{fresh}");
    // The state survives a restart with the connection.
    let mut server = server;
    server.restart().await;
    let alice = TestUser { client: server.client().with_token(&alice.access_token), ..alice.clone() };
    let carol = TestUser { client: server.client().with_token(&carol.access_token), ..carol.clone() };
    send_text(&carol, &room, "5", "carol three").await;
    let after = ss(&alice.client, Some(&pos(&fresh)), &body).await;
    assert_eq!(timeline_bodies(&after["rooms"][&room]), vec!["carol three"]);
    assert_eq!(state_of(&after), Vec::<(String, String)>::new(), "{after}");
    server.stop().await;
}

#[tokio::test]
async fn filters_select_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let plain = create_room(&alice, json!({"name": "plain"})).await;
    let encrypted = create_room(
        &alice,
        json!({"initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    let space = create_room(&alice, json!({"creation_content": {"type": "m.space"}})).await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{plain}"),
            &json!({"via": ["localhost"]}),
        )
        .await
        .expect(200);
    let dm = create_room(&bob, json!({"is_direct": true, "invite": [&alice.user_id]})).await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/m.direct", alice.user_id),
            &json!({&bob.user_id: [&dm]}),
        )
        .await
        .expect(200);
    let filtered = |filters: Value| json!({"lists": {"l": {"ranges": [[0, 20]], "timeline_limit": 0, "required_state": [], "filters": filters}}});
    let rooms_for = async |filters: Value| {
        let response = ss(&alice.client, None, &filtered(filters)).await;
        assert_eq!(response["lists"]["l"]["count"].as_u64().unwrap() as usize, room_ids(&response).len());
        room_ids(&response)
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        rooms_for(json!({})).await,
        sorted(vec![plain.clone(), encrypted.clone(), space.clone(), dm.clone()])
    );
    assert_eq!(rooms_for(json!({"is_dm": true})).await, vec![dm.clone()]);
    assert_eq!(
        rooms_for(json!({"is_dm": false})).await,
        sorted(vec![plain.clone(), encrypted.clone(), space.clone()])
    );
    assert_eq!(rooms_for(json!({"is_encrypted": true})).await, vec![encrypted.clone()]);
    assert_eq!(rooms_for(json!({"is_invite": true})).await, vec![dm.clone()]);
    assert_eq!(
        rooms_for(json!({"is_invite": false})).await,
        sorted(vec![plain.clone(), encrypted.clone(), space.clone()])
    );
    assert_eq!(rooms_for(json!({"room_types": ["m.space"]})).await, vec![space.clone()]);
    assert_eq!(rooms_for(json!({"not_room_types": ["m.space", null]})).await, Vec::<String>::new());
    assert_eq!(
        rooms_for(json!({"room_types": [null], "is_invite": false})).await,
        sorted(vec![plain.clone(), encrypted.clone()])
    );
    assert_eq!(rooms_for(json!({"spaces": [&space]})).await, vec![plain.clone()]);
    assert_eq!(rooms_for(json!({"spaces": ["!unknown:localhost"]})).await, Vec::<String>::new());
    // The invite carries its stripped state and is_dm.
    let response = ss(&alice.client, None, &filtered(json!({"is_invite": true}))).await;
    let invite = &response["rooms"][&dm];
    assert_eq!(invite["is_dm"], true);
    assert_eq!(invite["initial"], true);
    let stripped = invite["invite_state"].as_array().unwrap();
    assert!(stripped.iter().any(|e| e["type"] == "m.room.create"), "{invite}");
    assert!(
        stripped.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str())
    );
    assert!(invite.get("timeline").is_none());
    // A room encrypted after it was listed is listed as encrypted from then on.
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{plain}/state/m.room.encryption/"),
            &json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        )
        .await
        .expect(200);
    assert_eq!(
        rooms_for(json!({"is_encrypted": true})).await,
        sorted(vec![plain.clone(), encrypted.clone()])
    );
    assert_eq!(rooms_for(json!({"is_encrypted": false})).await, sorted(vec![space.clone(), dm.clone()]));
    // `m.direct` changed after the list was worked out (and kept): the DM filter follows it.
    alice
        .client
        .put(&format!("/_matrix/client/v3/user/{}/account_data/m.direct", alice.user_id), &json!({}))
        .await
        .expect(200);
    assert_eq!(rooms_for(json!({"is_dm": true})).await, Vec::<String>::new());
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/m.direct", alice.user_id),
            &json!({&bob.user_id: [&plain]}),
        )
        .await
        .expect(200);
    assert_eq!(rooms_for(json!({"is_dm": true})).await, vec![plain.clone()]);
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_left_rooms_and_forgotten_ones() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "sub"})).await;
    let other = create_room(&alice, json!({"name": "other"})).await;
    let foreign = create_room(&bob, json!({"name": "bob's"})).await;
    // A subscription sends the room even outside every list; one to a room the user has no
    // part in is left out.
    let body = json!({
        "lists": {"l": list(json!([[0, 0]]), 1, json!([]))},
        "room_subscriptions": {
            &room: {"timeline_limit": 1, "required_state": [["m.room.name", ""]]},
            &foreign: {"timeline_limit": 1, "required_state": []},
        },
    });
    let response = ss(&alice.client, None, &body).await;
    let mut expected = vec![room.clone(), other.clone()];
    expected.sort();
    assert_eq!(room_ids(&response), expected, "{response}");
    assert_eq!(response["rooms"][&room]["name"], "sub");

    // A room the user leaves is sent once more (up to the leave), then no longer listed.
    let lists = json!({"lists": {"l": list(json!([[0, 10]]), 2, json!([]))}});
    let before = ss(&alice.client, None, &lists).await;
    assert_eq!(before["lists"]["l"]["count"], 2);
    alice.client.post(&format!("/_matrix/client/v3/rooms/{other}/leave"), &json!({})).await.expect(200);
    send_text(&alice, &room, "x", "after").await;
    let after = ss(&alice.client, Some(&pos(&before)), &lists).await;
    assert_eq!(after["lists"]["l"]["count"], 2, "newly left is still listed: {after}");
    let left = &after["rooms"][&other];
    let last = left["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["content"]["membership"], "leave");
    let later = ss(&alice.client, Some(&pos(&after)), &lists).await;
    assert_eq!(later["lists"]["l"]["count"], 1, "{later}");
    let fresh = ss(&alice.client, None, &lists).await;
    assert_eq!(fresh["lists"]["l"]["count"], 1);
    assert!(fresh["rooms"].get(&other).is_none());
    // A room the user left can still be subscribed to (as it was up to the leave) until
    // forgotten.
    let subscribe = json!({"room_subscriptions": {&other: {"timeline_limit": 1, "required_state": [["m.room.name", ""]]}}});
    let subscribed = ss(&alice.client, None, &subscribe).await;
    let left = &subscribed["rooms"][&other];
    assert_eq!(left["timeline"][0]["content"]["membership"], "leave", "{subscribed}");
    assert_eq!(left["name"], "other");
    alice.client.post(&format!("/_matrix/client/v3/rooms/{other}/forget"), &json!({})).await.expect(200);
    let forgotten = ss(&alice.client, None, &subscribe).await;
    assert_eq!(forgotten["rooms"], json!({}), "{forgotten}");

    // A kicked user keeps the room listed.
    join(&bob, &room).await;
    let bob_lists = ss(&bob.client, None, &lists).await;
    let mut both = vec![foreign.clone(), room.clone()];
    both.sort();
    assert_eq!(room_ids(&bob_lists), both);
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room}/kick"), &json!({"user_id": &bob.user_id}))
        .await
        .expect(200);
    let kicked = ss(&bob.client, Some(&pos(&bob_lists)), &lists).await;
    assert_eq!(
        kicked["rooms"][&room]["timeline"].as_array().unwrap().last().unwrap()["content"]["membership"],
        "leave"
    );
    let still = ss(&bob.client, Some(&pos(&kicked)), &lists).await;
    assert_eq!(still["lists"]["l"]["count"], 2, "a kick stays listed: {still}");
    let fresh = ss(&bob.client, None, &lists).await;
    assert_eq!(fresh["lists"]["l"]["count"], 2);
    server.stop().await;
}

#[tokio::test]
async fn a_room_forgotten_and_joined_again_is_sent_afresh_on_the_same_connection() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&bob, json!({"preset": "public_chat", "name": "again"})).await;
    join(&alice, &room).await;
    let body = json!({"lists": {"l": list(json!([[0, 10]]), 1, json!([["m.room.name", ""]]))}});
    let first = ss(&alice.client, None, &body).await;
    assert_eq!(first["rooms"][&room]["name"], "again", "{first}");
    // Nothing new: the room is not sent again.
    let quiet = ss(&alice.client, Some(&pos(&first)), &body).await;
    assert!(quiet["rooms"].get(&room).is_none(), "{quiet}");

    alice.client.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), &json!({})).await.expect(200);
    alice.client.post(&format!("/_matrix/client/v3/rooms/{room}/forget"), &json!({})).await.expect(200);
    let gone = ss(&alice.client, Some(&pos(&quiet)), &body).await;
    assert_eq!(gone["lists"]["l"]["count"], 0, "{gone}");
    // The connection forgot the room with it: joined again, it is sent whole (with the state
    // asked for), not as a change to what was sent before.
    join(&alice, &room).await;
    let back = ss(&alice.client, Some(&pos(&gone)), &body).await;
    assert_eq!(back["lists"]["l"]["count"], 1, "{back}");
    assert_eq!(back["rooms"][&room]["initial"], true, "{back}");
    assert_eq!(back["rooms"][&room]["name"], "again", "{back}");
    assert_eq!(state_pairs(&back["rooms"][&room]), vec![pair("m.room.name", "")], "{back}");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_stored_as_changes_reads_back_after_restarts() {
    use myelin_service::sliding_sync::connection::MAX_BUILT_ON;
    let mut server = TestServer::start().await;
    let mut alice = server.register("alice").await;
    let mut bob = server.register("bob").await;
    let mut rooms = Vec::new();
    for name in ["a", "b", "c"] {
        let room = create_room(&alice, json!({"preset": "public_chat", "name": name})).await;
        join(&bob, &room).await;
        rooms.push(room);
    }
    let body =
        json!({"conn_id": "phone", "lists": {"l": list(json!([[0, 10]]), 1, json!([["m.room.name", ""]]))}});
    let first = ss(&bob.client, None, &body).await;
    assert_eq!(room_ids(&first).len(), 3, "{first}");
    // The third room is forgotten by the connection (what its next position stores), then,
    // read back after a restart, joined again: it is sent afresh.
    bob.client.post(&format!("/_matrix/client/v3/rooms/{}/leave", rooms[2]), &json!({})).await.expect(200);
    bob.client.post(&format!("/_matrix/client/v3/rooms/{}/forget", rooms[2]), &json!({})).await.expect(200);
    let gone = ss(&bob.client, Some(&pos(&first)), &body).await;
    assert_eq!(gone["lists"]["l"]["count"], 2, "{gone}");
    server.restart().await;
    alice = TestUser { client: server.client().with_token(&alice.access_token), ..alice.clone() };
    bob = TestUser { client: server.client().with_token(&bob.access_token), ..bob.clone() };
    join(&bob, &rooms[2]).await;
    let back = ss(&bob.client, Some(&pos(&gone)), &body).await;
    assert_eq!(room_ids(&back), vec![rooms[2].clone()], "{back}");
    assert_eq!(back["rooms"][&rooms[2]]["initial"], true, "{back}");
    let mut at = pos(&back);

    // More answers than positions stored as changes in a row, with restarts among them (the
    // connection then read back from the store): each carries only the room with news.
    let rounds = 2 * MAX_BUILT_ON + 3;
    for i in 0..rounds {
        if i == 5 || i == MAX_BUILT_ON + 4 {
            server.restart().await;
            alice = TestUser { client: server.client().with_token(&alice.access_token), ..alice.clone() };
            bob = TestUser { client: server.client().with_token(&bob.access_token), ..bob.clone() };
        }
        let room = &rooms[i % 2];
        send_text(&alice, room, &format!("t{i}"), &format!("news {i}")).await;
        let answer = ss(&bob.client, Some(&at), &body).await;
        assert_eq!(room_ids(&answer), vec![room.clone()], "answer {i}: {answer}");
        assert_ne!(answer["rooms"][room]["initial"], true, "answer {i}: {answer}");
        assert_eq!(timeline_bodies(&answer["rooms"][room]), vec![format!("news {i}")], "answer {i}");
        at = pos(&answer);
    }
    if let myelin_config::DatabaseConfig::Sqlite { path } = server.services().config.database.clone() {
        let mut file = path.into_os_string();
        file.push("-sliding-sync");
        let positions = rusqlite::Connection::open(&file).expect("the positions' file opens");
        let held: i64 = positions
            .query_row("SELECT COUNT(*) FROM sliding_sync_positions", [], |row| row.get(0))
            .expect("the positions are counted");
        assert!(held <= MAX_BUILT_ON as i64 + 2, "{held} positions held for one connection");
    }

    // Read back once more: nothing new.
    server.restart().await;
    let bob = TestUser { client: server.client().with_token(&bob.access_token), ..bob.clone() };
    let quiet = ss(&bob.client, Some(&at), &body).await;
    assert_eq!(room_ids(&quiet), Vec::<String>::new(), "{quiet}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_positions_are_refused() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let body = json!({"conn_id": "main", "lists": {"l": list(json!([[0, 1]]), 1, json!([]))}});
    let first = ss(&alice.client, None, &body).await;
    let one = pos(&first);
    for bad in ["nonsense", "-1", "0", "12345"] {
        alice.client.post(&url(Some(bad), 0), &body).await.expect_error(400, "M_UNKNOWN_POS");
    }
    // Another conn_id does not know this connection's position.
    alice
        .client
        .post(&url(Some(&one), 0), &json!({"conn_id": "other"}))
        .await
        .expect_error(400, "M_UNKNOWN_POS");
    // Nor does another device of the same user.
    let login = server
        .client()
        .post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": alice.password}),
        )
        .await
        .expect(200)
        .clone();
    let phone = server.client().with_token(login["access_token"].as_str().unwrap());
    phone.post(&url(Some(&one), 0), &body).await.expect_error(400, "M_UNKNOWN_POS");
    // Nor another user.
    let bob = server.register("bob").await;
    bob.client.post(&url(Some(&one), 0), &body).await.expect_error(400, "M_UNKNOWN_POS");

    // Positions are pruned: answering from `two` forgets `one`.
    let second = ss(&alice.client, Some(&one), &body).await;
    let two = pos(&second);
    let third = ss(&alice.client, Some(&two), &body).await;
    alice.client.post(&url(Some(&one), 0), &body).await.expect_error(400, "M_UNKNOWN_POS");
    let three = pos(&third);

    // The connection is stored: it survives a restart.
    server.restart().await;
    let alice_again = server.client().with_token(&alice.access_token);
    let room = create_room(
        &TestUser { client: alice_again.clone(), ..alice.clone() },
        json!({"name": "after restart"}),
    )
    .await;
    let resumed = alice_again.post(&url(Some(&three), 0), &body).await.expect(200).clone();
    assert_eq!(room_ids(&resumed), vec![room.clone()], "incremental after the restart: {resumed}");
    assert_eq!(resumed["rooms"][&room]["initial"], true);
    // A connection started afresh (no pos) forgets its earlier positions.
    let fresh = ss(&alice_again, None, &body).await;
    alice_again.post(&url(Some(&pos(&resumed)), 0), &body).await.expect_error(400, "M_UNKNOWN_POS");
    // The device's connections go with it.
    let fresh_pos = pos(&fresh);
    alice_again.post("/_matrix/client/v3/logout", &json!({})).await.expect(200);
    let relogin = server
        .client()
        .post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": alice.password, "device_id": alice.device_id}),
        )
        .await
        .expect(200)
        .clone();
    let same_device = server.client().with_token(relogin["access_token"].as_str().unwrap());
    same_device.post(&url(Some(&fresh_pos), 0), &body).await.expect_error(400, "M_UNKNOWN_POS");
    server.stop().await;
}

#[tokio::test]
async fn a_lost_connection_state_is_an_unknown_position() {
    // A server on a fresh database (all state lost) knows no position.
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let first = ss(&alice.client, None, &json!({})).await;
    let other = TestServer::start().await;
    let alice_there = other.register("alice").await;
    alice_there.client.post(&url(Some(&pos(&first)), 0), &json!({})).await.expect_error(400, "M_UNKNOWN_POS");
    other.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn on_sqlite_positions_live_in_a_file_of_their_own_that_may_be_lost() {
    let mut server = TestServer::start().await;
    let myelin_config::DatabaseConfig::Sqlite { path } = server.services().config.database.clone() else {
        // PostgreSQL keeps them in the main database (the other tests).
        server.stop().await;
        return;
    };
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({"name": "kept"})).await;
    let body = json!({"conn_id": "main", "lists": {"l": list(json!([[0, 9]]), 1, json!([]))}});
    let first = ss(&alice.client, None, &body).await;
    let mut file = path.clone().into_os_string();
    file.push("-sliding-sync");
    assert!(std::path::Path::new(&file).exists(), "the positions' file {file:?} is made beside the database");

    // Lost while the server is down (emptied here: removing the file under the halted server,
    // whose SQLite connections may still be closing in this process, would race with them):
    // the position is unknown, the rest of the account is not.
    server.halt().await;
    let positions = rusqlite::Connection::open(&file).expect("the positions' file opens");
    let held: i64 = positions
        .query_row("SELECT COUNT(*) FROM sliding_sync_positions", [], |row| row.get(0))
        .expect("the file holds the positions' table");
    assert!(held >= 1, "the position handed out is in the file");
    positions.execute("DELETE FROM sliding_sync_positions", []).expect("the positions go");
    drop(positions);
    server.resume().await;
    let alice = TestUser { client: server.client().with_token(&alice.access_token), ..alice.clone() };
    alice.client.post(&url(Some(&pos(&first)), 0), &body).await.expect_error(400, "M_UNKNOWN_POS");
    let again = ss(&alice.client, None, &body).await;
    assert_eq!(room_ids(&again), vec![room.clone()], "{again}");
    let next = ss(&alice.client, Some(&pos(&again)), &body).await;
    assert!(room_ids(&next).is_empty(), "nothing new since: {next}");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let check = async |body: Value, errcode: &str| {
        alice.client.post(&url(None, 0), &body).await.expect_error(400, errcode);
    };
    check(json!({"lists": {"l": list(json!([[5, 1]]), 1, json!([]))}}), "M_INVALID_PARAM").await;
    check(json!({"lists": {"l": list(json!([[-1, 1]]), 1, json!([]))}}), "M_BAD_JSON").await;
    check(json!({"lists": {"l": list(json!([[0]]), 1, json!([]))}}), "M_BAD_JSON").await;
    check(json!({"lists": {"l": list(json!([[0, 1]]), 1001, json!([]))}}), "M_INVALID_PARAM").await;
    check(
        json!({"lists": {"l": {"ranges": [[0, 1]], "timeline_limit": -1, "required_state": []}}}),
        "M_INVALID_PARAM",
    )
    .await;
    check(json!({"lists": {"l": {"ranges": [[0, 1]], "required_state": []}}}), "M_BAD_JSON").await;
    check(json!({"lists": {"l": list(json!([[0, 1]]), 1, json!([["only-type"]]))}}), "M_BAD_JSON").await;
    let many_state: Vec<Value> = (0..1001).map(|i| json!(["t", i.to_string()])).collect();
    check(json!({"lists": {"l": list(json!([[0, 1]]), 1, json!(many_state))}}), "M_INVALID_PARAM").await;
    let many_lists: serde_json::Map<String, Value> =
        (0..101).map(|i| (i.to_string(), list(json!([[0, 1]]), 1, json!([])))).collect();
    check(json!({"lists": many_lists}), "M_INVALID_PARAM").await;
    let many_ranges: Vec<Value> = (0..101).map(|i| json!([i, i])).collect();
    check(json!({"lists": {"l": list(json!(many_ranges), 1, json!([]))}}), "M_INVALID_PARAM").await;
    check(json!({"lists": {"x".repeat(65): list(json!([[0, 1]]), 1, json!([]))}}), "M_INVALID_PARAM").await;
    check(
        json!({"room_subscriptions": {"not-a-room": {"timeline_limit": 1, "required_state": []}}}),
        "M_INVALID_PARAM",
    )
    .await;
    check(json!({"conn_id": "c".repeat(256)}), "M_INVALID_PARAM").await;
    check(json!({"lists": "nope"}), "M_BAD_JSON").await;
    check(json!({"extensions": {"to_device": {"enabled": true, "since": "abc"}}}), "M_INVALID_PARAM").await;
    check(json!({"extensions": {"to_device": {"enabled": true, "limit": 0}}}), "M_INVALID_PARAM").await;
    alice.client.post(&format!("{PATH}?timeout=soon"), &json!({})).await.expect_error(400, "M_INVALID_PARAM");
    server.client().post(&url(None, 0), &json!({})).await.expect_error(401, "M_MISSING_TOKEN");
    // Unknown extensions and fields are ignored.
    ss(&alice.client, None, &json!({"extensions": {"org.example.nope": {"enabled": true}}, "unknown": 1}))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn extensions_to_device_e2ee_account_data_receipts_typing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let unlisted = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    join(&bob, &unlisted).await;
    let event = send_text(&bob, &room, "1", "read me").await;
    send_text(&bob, &unlisted, "1", "newer").await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/org.example.global", alice.user_id),
            &json!({"a": 1}),
        )
        .await
        .expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/user/{}/rooms/{room}/account_data/org.example.room", alice.user_id),
            &json!({"b": 2}),
        )
        .await
        .expect(200);
    bob.client
        .post(&format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"), &json!({}))
        .await
        .expect(200);
    bob.client
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", bob.user_id),
            &json!({"typing": true, "timeout": 30000}),
        )
        .await
        .expect(200);
    bob.client
        .put(
            "/_matrix/client/v3/sendToDevice/org.example.ping/t1",
            &json!({"messages": {&alice.user_id: {&alice.device_id: {"n": 1}}}}),
        )
        .await
        .expect(200);
    let key = DeviceKey::new(&alice.user_id, &alice.device_id);
    let keys = json!({
        "device_keys": key.device_keys(),
        "one_time_keys": {"signed_curve25519:AAAA": key.one_time_key("k")},
    });
    alice.client.post("/_matrix/client/v3/keys/upload", &keys).await.expect(200);
    // The list's range covers `room` only (the newest room is `unlisted`, range [1, 1]);
    // receipts and typing are scoped to it, account data to every list.
    let body = |since: Option<&str>| {
        let mut to_device = json!({"enabled": true, "limit": 10});
        if let Some(since) = since {
            to_device["since"] = json!(since);
        }
        json!({
            "lists": {"l": list(json!([[1, 1]]), 1, json!([]))},
            "extensions": {
                "to_device": to_device,
                "e2ee": {"enabled": true},
                "account_data": {"enabled": true},
                "receipts": {"enabled": true, "lists": ["l", "unknown-list"]},
                "typing": {"enabled": true, "lists": ["l"]},
            },
        })
    };
    let first = ss(&alice.client, None, &body(None)).await;
    assert_eq!(room_ids(&first), vec![room.clone()], "{first}");
    let ext = &first["extensions"];
    let to_device = ext["to_device"]["events"].as_array().unwrap();
    assert_eq!(to_device.len(), 1, "{ext}");
    assert_eq!(to_device[0]["type"], "org.example.ping");
    assert_eq!(to_device[0]["sender"], bob.user_id.as_str());
    assert_eq!(to_device[0]["content"], json!({"n": 1}));
    let next_batch = ext["to_device"]["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 1, "{ext}");
    assert_eq!(ext["e2ee"]["device_unused_fallback_key_types"], json!([]));
    assert!(ext["e2ee"].get("device_lists").is_none(), "not on a fresh connection: {ext}");
    let global: Vec<&Value> = ext["account_data"]["global"].as_array().unwrap().iter().collect();
    assert!(
        global.iter().any(|e| e["type"] == "org.example.global" && e["content"] == json!({"a": 1})),
        "{ext}"
    );
    assert_eq!(
        ext["account_data"]["rooms"][&room],
        json!([{"type": "org.example.room", "content": {"b": 2}}])
    );
    let receipt = &ext["receipts"]["rooms"][&room];
    assert_eq!(receipt["type"], "m.receipt");
    assert!(receipt["content"][&event]["m.read"][&bob.user_id]["ts"].is_u64(), "{receipt}");
    assert!(ext["receipts"]["rooms"].get(&unlisted).is_none(), "out of scope");
    assert_eq!(
        ext["typing"]["rooms"][&room],
        json!({"type": "m.typing", "content": {"user_ids": [&bob.user_id]}})
    );
    assert!(ext["typing"]["rooms"].get(&unlisted).is_none());

    // Incrementally: the acknowledged to-device message is gone, new things come once.
    bob.client
        .put(
            "/_matrix/client/v3/sendToDevice/org.example.ping/t2",
            &json!({"messages": {&alice.user_id: {&alice.device_id: {"n": 2}}}}),
        )
        .await
        .expect(200);
    bob.client
        .put(&format!("/_matrix/client/v3/rooms/{room}/typing/{}", bob.user_id), &json!({"typing": false}))
        .await
        .expect(200);
    // Bob's new device changes his device list, which alice shares a room with.
    server
        .client()
        .post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": bob.password}),
        )
        .await
        .expect(200);
    let second = ss(&alice.client, Some(&pos(&first)), &body(Some(&next_batch))).await;
    let ext = &second["extensions"];
    let to_device = ext["to_device"]["events"].as_array().unwrap();
    assert_eq!(to_device.len(), 1, "{ext}");
    assert_eq!(to_device[0]["content"], json!({"n": 2}));
    assert_eq!(ext["account_data"]["global"], json!([]), "{ext}");
    assert_eq!(ext["receipts"]["rooms"], json!({}), "{ext}");
    assert_eq!(ext["typing"]["rooms"][&room]["content"]["user_ids"], json!([]));
    assert_eq!(ext["e2ee"]["device_lists"], json!({"changed": [&bob.user_id], "left": []}), "{ext}");
    server.stop().await;
}

#[tokio::test]
async fn unnamed_rooms_get_heroes_and_member_changes_resend_counts() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    bob.client
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            &json!({"displayname": "Bob B"}),
        )
        .await
        .expect(200);
    // No name, but an alias: heroes all the same.
    let room = create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "heroes"})).await;
    join(&bob, &room).await;
    let body = json!({"lists": {"l": list(json!([[0, 0]]), 1, json!([]))}});
    let first = ss(&alice.client, None, &body).await;
    let synced = &first["rooms"][&room];
    assert!(synced.get("name").is_none(), "{synced}");
    assert_eq!(synced["heroes"], json!([{"user_id": &bob.user_id, "displayname": "Bob B"}]), "{synced}");
    assert_eq!(synced["joined_count"], 2);
    // A message alone does not resend counts; a member change does.
    send_text(&alice, &room, "1", "hi").await;
    let second = ss(&alice.client, Some(&pos(&first)), &body).await;
    assert!(second["rooms"][&room].get("joined_count").is_none(), "{second}");
    bob.client.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), &json!({})).await.expect(200);
    let third = ss(&alice.client, Some(&pos(&second)), &body).await;
    assert_eq!(third["rooms"][&room]["joined_count"], 1, "{third}");
    // Named rooms get no heroes.
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"), &json!({"name": "now named"}))
        .await
        .expect(200);
    let named = ss(&alice.client, None, &body).await;
    assert_eq!(named["rooms"][&room]["name"], "now named");
    assert!(named["rooms"][&room].get("heroes").is_none(), "{named}");
    server.stop().await;
}

#[tokio::test]
async fn unread_notification_and_highlight_counts_follow_receipts() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let quiet = create_room(&alice, json!({"preset": "public_chat", "name": "quiet"})).await;
    let busy = create_room(&alice, json!({"preset": "public_chat", "name": "busy"})).await;
    let third = create_room(&alice, json!({"preset": "public_chat", "name": "third"})).await;
    for room in [&quiet, &busy, &third] {
        join(&bob, room).await;
    }
    send_text(&bob, &busy, "b1", "hello there").await;
    let mention =
        json!({"msgtype": "m.text", "body": "alice: around?", "m.mentions": {"user_ids": [alice.user_id]}});
    let sent =
        bob.client.put(&format!("/_matrix/client/v3/rooms/{busy}/send/m.room.message/b2"), &mention).await;
    let last = sent.expect(200)["event_id"].as_str().unwrap().to_owned();
    send_text(&bob, &third, "t1", "before alice leaves").await;
    let body = json!({"lists": {"all": list(json!([[0, 10]]), 1, json!([]))}});
    let counts = |response: &Value, room: &str| {
        let room = &response["rooms"][room];
        (room["notification_count"].as_u64().unwrap(), room["highlight_count"].as_u64().unwrap())
    };
    // Several rooms at once (read together) ...
    let response = ss(&alice.client, None, &body).await;
    assert_eq!(counts(&response, &busy), (2, 1), "two messages, one mentioning alice: {response}");
    assert_eq!(counts(&response, &quiet), (0, 0), "{response}");
    assert_eq!(counts(&response, &third), (1, 0), "{response}");
    // ... where nothing before the user's latest join is unread ...
    alice.client.post(&format!("/_matrix/client/v3/rooms/{third}/leave"), &json!({})).await.expect(200);
    join(&alice, &third).await;
    let response = ss(&alice.client, None, &body).await;
    assert_eq!(counts(&response, &third), (0, 0), "joined again: {response}");
    // ... nor in a room read by itself, news woken for.
    send_text(&bob, &third, "t2", "after alice is back").await;
    let news = ss(&alice.client, Some(&pos(&response)), &body).await;
    assert_eq!(room_ids(&news), vec![third.clone()], "{news}");
    assert_eq!(counts(&news, &third), (1, 0), "only the message since the join: {news}");
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{busy}/receipt/m.read/{last}"), &json!({}))
        .await
        .expect(200);
    let response = ss(&alice.client, None, &body).await;
    assert_eq!(counts(&response, &busy), (0, 0), "read up to the last message: {response}");
    send_text(&bob, &busy, "b3", "one more").await;
    let news = ss(&alice.client, Some(&pos(&response)), &body).await;
    assert_eq!(counts(&news, &busy), (1, 0), "one since the receipt: {news}");
    server.stop().await;
}
