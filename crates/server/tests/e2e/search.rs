//! `POST /search`: ranking and recency, pagination, context, groups, state, filters; and what
//! a user must never find: rooms they never joined, history hidden from them, redacted events.

use std::collections::BTreeSet;

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::{create_room, send_text, urlencode};

fn path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room_id}/{rest}")
}

/// One page of a room events search (with `next_batch`), as `search_categories.room_events`.
async fn search_page(user: &TestUser, criteria: Value, next_batch: Option<&str>) -> Value {
    let url = match next_batch {
        Some(token) => format!("/_matrix/client/v3/search?next_batch={}", urlencode(token)),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    let response = user.client.post(&url, &json!({"search_categories": {"room_events": criteria}})).await;
    response.expect(200)["search_categories"]["room_events"].clone()
}

async fn search(user: &TestUser, criteria: Value) -> Value {
    search_page(user, criteria, None).await
}

fn result_ids(room_events: &Value) -> Vec<String> {
    room_events["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["result"]["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

async fn join(user: &TestUser, room_id: &str) {
    user.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
}

async fn redact(user: &TestUser, room_id: &str, event_id: &str, txn: &str) {
    user.client
        .put(&path(room_id, &format!("redact/{}/{txn}", urlencode(event_id))), &json!({}))
        .await
        .expect(200);
}

#[tokio::test]
async fn search_orders_by_rank_or_recency_over_bodies_names_and_topics() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({"name": "Lunar base", "topic": "Talk about the moon"})).await;
    let coming = send_text(&alice, &room, "1", "Martians are coming").await;
    send_text(&alice, &room, "2", "nothing to see here").await;
    let many = send_text(&alice, &room, "3", "martians Martians MARTIANS").await;
    let long =
        send_text(&alice, &room, "4", "a long message about one single martian among many many other words")
            .await;

    let ranked = search(&alice, json!({"search_term": "martians"})).await;
    let ids = result_ids(&ranked);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>(), [&coming, &many, &long].into_iter().collect());
    assert_eq!(ids[0], many, "three occurrences rank first: {ranked}");
    let ranks: Vec<f64> =
        ranked["results"].as_array().unwrap().iter().map(|r| r["rank"].as_f64().expect("rank")).collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "best rank first: {ranks:?}");
    assert_eq!(ranked["count"], 3);
    let highlights: BTreeSet<&str> =
        ranked["highlights"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert!(highlights.contains("martians") && highlights.contains("martian"), "{highlights:?}");
    assert!(ranked.get("next_batch").is_none());
    let first = &ranked["results"][0];
    assert_eq!(first["result"]["room_id"], room.as_str());
    assert_eq!(first["result"]["content"]["body"], "martians Martians MARTIANS");
    assert_eq!(first["context"], json!({}), "no context unless asked for");

    let recent = search(&alice, json!({"search_term": "martians", "order_by": "recent"})).await;
    assert_eq!(result_ids(&recent), vec![long.clone(), many.clone(), coming.clone()]);

    // Words must all be present; `or` and `-word` work on both engines.
    assert_eq!(
        result_ids(&search(&alice, json!({"search_term": "martians coming"})).await),
        vec![coming.clone()]
    );
    let either = search(&alice, json!({"search_term": "coming or nothing", "order_by": "recent"})).await;
    assert_eq!(either["count"], 2);
    let without = search(&alice, json!({"search_term": "martians -coming", "order_by": "recent"})).await;
    assert_eq!(result_ids(&without), vec![long.clone(), many.clone()]);
    let phrase = search(&alice, json!({"search_term": "\"many other words\""})).await;
    assert_eq!(result_ids(&phrase), vec![long.clone()]);

    // Names and topics, selected by `keys`.
    let name = search(&alice, json!({"search_term": "lunar"})).await;
    assert_eq!(name["results"][0]["result"]["type"], "m.room.name");
    assert_eq!(name["count"], 1);
    let name_only_bodies = search(&alice, json!({"search_term": "lunar", "keys": ["content.body"]})).await;
    assert_eq!(name_only_bodies["count"], 0);
    let topic = search(&alice, json!({"search_term": "moon", "keys": ["content.topic"]})).await;
    assert_eq!(topic["results"][0]["result"]["type"], "m.room.topic");
    assert_eq!(search(&alice, json!({"search_term": "moon", "keys": ["content.name"]})).await["count"], 0);
    // A topic with a plain-text `m.topic` representation is searched by it (spec v1.15).
    alice
        .client
        .put(
            &path(&room, "state/m.room.topic"),
            &json!({"topic": "fallback words", "m.topic": {"m.text": [
                {"mimetype": "text/html", "body": "<b>markup</b>"},
                {"body": "zebra crossing"},
            ]}}),
        )
        .await
        .expect(200);
    assert_eq!(search(&alice, json!({"search_term": "zebra"})).await["count"], 1);
    assert_eq!(search(&alice, json!({"search_term": "fallback"})).await["count"], 0);
    assert_eq!(search(&alice, json!({"search_term": "markup"})).await["count"], 0);
    // A term with nothing to search for finds nothing (and is no error).
    assert_eq!(search(&alice, json!({"search_term": "the"})).await["results"], json!([]));
    server.stop().await;
}

/// Follows `next_batch` to the end; returns the pages' event IDs and counts.
async fn all_pages(user: &TestUser, criteria: Value) -> Vec<(Vec<String>, u64)> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = search_page(user, criteria.clone(), token.as_deref()).await;
        pages.push((result_ids(&page), page["count"].as_u64().expect("count")));
        match page.get("next_batch").and_then(Value::as_str) {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    pages
}

#[tokio::test]
async fn search_paginates_with_next_batch_in_both_orders() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..23 {
        sent.push(send_text(&alice, &room, &format!("p{i}"), &format!("page item {i}")).await);
        if i % 5 == 0 {
            send_text(&alice, &room, &format!("n{i}"), "unrelated chatter").await;
        }
    }
    for order in ["recent", "rank"] {
        let pages = all_pages(&alice, json!({"search_term": "item", "order_by": order})).await;
        let sizes: Vec<usize> = pages.iter().map(|(ids, _)| ids.len()).collect();
        assert_eq!(sizes, vec![10, 10, 3], "{order}");
        assert!(pages.iter().all(|(_, count)| *count == 23), "{order}: {pages:?}");
        let all: Vec<String> = pages.into_iter().flat_map(|(ids, _)| ids).collect();
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 23, "{order}: no result twice");
        assert_eq!(all.iter().collect::<BTreeSet<_>>(), sent.iter().collect(), "{order}: every result once");
        if order == "recent" {
            assert_eq!(all, sent.iter().rev().cloned().collect::<Vec<_>>());
        }
    }
    // The filter's limit sets the page size.
    let pages =
        all_pages(&alice, json!({"search_term": "item", "order_by": "recent", "filter": {"limit": 7}})).await;
    assert_eq!(pages.iter().map(|(ids, _)| ids.len()).collect::<Vec<_>>(), vec![7, 7, 7, 2]);
    // Tokens are checked.
    let first = search(&alice, json!({"search_term": "item"})).await;
    let rank_token = first["next_batch"].as_str().unwrap();
    let response = alice
        .client
        .post(
            &format!("/_matrix/client/v3/search?next_batch={}", urlencode(rank_token)),
            &json!({"search_categories": {"room_events": {"search_term": "item", "order_by": "recent"}}}),
        )
        .await;
    response.expect_error(400, "M_INVALID_PARAM");
    alice
        .client
        .post(
            "/_matrix/client/v3/search?next_batch=garbage",
            &json!({"search_categories": {"room_events": {"search_term": "item"}}}),
        )
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn search_returns_context_profiles_groups_and_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            &json!({"displayname": "Alice L."}),
        )
        .await
        .expect(200);
    let first = create_room(&alice, json!({"preset": "public_chat", "name": "First"})).await;
    join(&bob, &first).await;
    send_text(&alice, &first, "b1", "before one").await;
    let before = send_text(&bob, &first, "b2", "before two").await;
    let hit = send_text(&alice, &first, "h", "the treasure is here").await;
    let after1 = send_text(&bob, &first, "a1", "after one").await;
    let after2 = send_text(&alice, &first, "a2", "after two").await;
    send_text(&alice, &first, "a3", "after three").await;
    let second = create_room(&alice, json!({"name": "Second"})).await;
    let map = send_text(&alice, &second, "m", "a treasure map").await;

    let found = search(
        &alice,
        json!({
            "search_term": "treasure",
            "order_by": "recent",
            "event_context": {"before_limit": 1, "after_limit": 2, "include_profile": true},
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
            "include_state": true,
        }),
    )
    .await;
    assert_eq!(result_ids(&found), vec![map.clone(), hit.clone()]);
    let context = &found["results"][1]["context"];
    let ids = |events: &Value| -> Vec<String> {
        events.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&context["events_before"]), vec![before.clone()]);
    assert_eq!(ids(&context["events_after"]), vec![after1.clone(), after2.clone()]);
    assert!(context["start"].is_string() && context["end"].is_string());
    assert_eq!(context["profile_info"][&alice.user_id]["displayname"], "Alice L.");
    assert_eq!(context["profile_info"][&bob.user_id]["displayname"], "bob");
    // The context token continues the timeline: /messages from `end` gives what follows.
    let end = context["end"].as_str().unwrap();
    let next = alice
        .client
        .get(&path(&first, &format!("messages?dir=f&limit=1&from={end}")))
        .await
        .expect(200)
        .clone();
    assert_eq!(next["chunk"][0]["content"]["body"], "after three");

    let by_room = &found["groups"]["room_id"];
    assert_eq!(by_room[&second]["results"], json!([map]));
    assert_eq!(by_room[&first]["results"], json!([hit]));
    assert!(
        by_room[&second]["order"].as_i64().unwrap() > by_room[&first]["order"].as_i64().unwrap(),
        "the group of the first result comes first: {by_room}"
    );
    assert_eq!(found["groups"]["sender"][&alice.user_id]["results"], json!([map, hit]));
    let state = &found["state"];
    for room in [&first, &second] {
        let types: Vec<&str> =
            state[room].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert!(types.contains(&"m.room.create") && types.contains(&"m.room.name"), "{room}: {types:?}");
    }
    // Defaults: five events either side, no profiles, no groups, no state.
    let plain =
        search(&alice, json!({"search_term": "treasure", "order_by": "recent", "event_context": {}})).await;
    let context = &plain["results"][1]["context"];
    assert_eq!(context["events_before"].as_array().unwrap().len(), 5);
    assert_eq!(context["events_after"].as_array().unwrap().len(), 3);
    assert!(context.get("profile_info").is_none());
    assert!(plain.get("groups").is_none() && plain.get("state").is_none());

    // Group tokens continue within their group.
    for i in 0..12 {
        send_text(&alice, &second, &format!("x{i}"), &format!("more treasure {i}")).await;
    }
    send_text(&alice, &first, "y", "treasure again").await;
    let grouped = search(
        &alice,
        json!({"search_term": "treasure", "order_by": "recent", "groupings": {"group_by": [{"key": "room_id"}]}}),
    )
    .await;
    assert_eq!(grouped["results"].as_array().unwrap().len(), 10);
    let token = grouped["groups"]["room_id"][&second]["next_batch"].as_str().expect("group next_batch");
    let rest =
        search_page(&alice, json!({"search_term": "treasure", "order_by": "recent"}), Some(token)).await;
    assert!(
        rest["results"].as_array().unwrap().iter().all(|r| r["result"]["room_id"] == second.as_str()),
        "{rest}"
    );
    assert_eq!(rest["results"].as_array().unwrap().len(), 4, "13 in the room, 9 on the first page: {rest}");
    server.stop().await;
}

#[tokio::test]
async fn search_filters_rooms_senders_and_types() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let tank = create_room(&alice, json!({"preset": "public_chat", "name": "Fish tank"})).await;
    join(&bob, &tank).await;
    let alices = send_text(&alice, &tank, "1", "fish food").await;
    let bobs = send_text(&bob, &tank, "2", "fish tales").await;
    let pond = create_room(&alice, json!({})).await;
    let ponds = send_text(&alice, &pond, "3", "fish pond").await;
    let ids = |v: &Value| result_ids(v).into_iter().collect::<BTreeSet<_>>();
    let set = |items: &[&String]| items.iter().map(|s| (*s).clone()).collect::<BTreeSet<_>>();

    let only_messages = json!({"types": ["m.room.message"]});
    let all = search(&alice, json!({"search_term": "fish", "filter": only_messages})).await;
    assert_eq!(ids(&all), set(&[&alices, &bobs, &ponds]));
    let in_tank = search(
        &alice,
        json!({"search_term": "fish", "filter": {"rooms": [tank], "types": ["m.room.message"]}}),
    )
    .await;
    assert_eq!(ids(&in_tank), set(&[&alices, &bobs]));
    let not_tank = search(&alice, json!({"search_term": "fish", "filter": {"not_rooms": [tank]}})).await;
    assert_eq!(ids(&not_tank), set(&[&ponds]));
    let by_bob = search(&alice, json!({"search_term": "fish", "filter": {"senders": [bob.user_id]}})).await;
    assert_eq!(ids(&by_bob), set(&[&bobs]));
    let not_bob = search(
        &alice,
        json!({"search_term": "fish", "filter": {"not_senders": [bob.user_id], "types": ["m.room.message"]}}),
    )
    .await;
    assert_eq!(ids(&not_bob), set(&[&alices, &ponds]));
    let names = search(&alice, json!({"search_term": "fish", "filter": {"types": ["m.room.n*"]}})).await;
    assert_eq!(names["results"].as_array().unwrap().len(), 1);
    assert_eq!(names["results"][0]["result"]["type"], "m.room.name");
    let not_names =
        search(&alice, json!({"search_term": "fish", "filter": {"not_types": ["m.room.name"]}})).await;
    assert_eq!(ids(&not_names), set(&[&alices, &bobs, &ponds]));
    let one =
        search(&alice, json!({"search_term": "fish", "order_by": "recent", "filter": {"limit": 1}})).await;
    assert_eq!(result_ids(&one), vec![ponds.clone()]);
    assert!(one["next_batch"].is_string());
    // A room filter cannot reach a room the user is not in.
    let carol = server.register("carol").await;
    let elsewhere = search(&carol, json!({"search_term": "fish", "filter": {"rooms": [tank, pond]}})).await;
    assert_eq!(elsewhere["results"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn search_never_reaches_rooms_the_user_never_joined() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mallory = server.register("mallory").await;
    let private = create_room(&alice, json!({"preset": "private_chat"})).await;
    let readable = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    send_text(&alice, &private, "1", "classified launch codes").await;
    send_text(&alice, &readable, "2", "classified but readable").await;
    let invited = create_room(&alice, json!({"preset": "private_chat", "invite": [mallory.user_id]})).await;
    send_text(&alice, &invited, "3", "classified invitation").await;
    // Mallory's own room: her search works.
    let own = create_room(&mallory, json!({})).await;
    let hers = send_text(&mallory, &own, "4", "classified gossip").await;
    for order in ["rank", "recent"] {
        for filter in [json!({}), json!({"rooms": [private, readable, invited]})] {
            let found =
                search(&mallory, json!({"search_term": "classified", "order_by": order, "filter": filter}))
                    .await;
            let expected = if filter.get("rooms").is_some() { vec![] } else { vec![hers.clone()] };
            assert_eq!(result_ids(&found), expected, "{order} {filter}");
            assert_eq!(found["count"], expected.len(), "counts leak nothing either");
            assert!(found["highlights"].as_array().unwrap().len() <= 1);
            assert!(found.get("next_batch").is_none());
        }
    }
    // A token of alice's, restricted to her private room, finds mallory nothing there.
    send_text(&alice, &private, "5", "classified again").await;
    let criteria = json!({"search_term": "classified", "order_by": "recent", "filter": {"limit": 1},
                          "groupings": {"group_by": [{"key": "room_id"}]}});
    let alices = search(&alice, criteria.clone()).await;
    let leaked =
        alices["groups"]["room_id"][&private]["next_batch"].as_str().expect("a group token").to_owned();
    let found = search_page(&mallory, criteria.clone(), Some(&leaked)).await;
    assert_eq!(found["results"], json!([]));
    assert_eq!(found["count"], 0);
    assert_eq!(search_page(&alice, criteria, Some(&leaked)).await["results"].as_array().unwrap().len(), 1);
    // Alice finds all of hers.
    assert_eq!(search(&alice, json!({"search_term": "classified"})).await["count"], 4);
    server.stop().await;
}

#[tokio::test]
async fn search_applies_history_visibility_and_former_membership() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    let hidden = send_text(&alice, &room, "1", "secret plans before").await;
    join(&bob, &room).await;
    let during = send_text(&alice, &room, "2", "secret plans during").await;
    let seen = search(&bob, json!({"search_term": "secret", "event_context": {"before_limit": 20}})).await;
    assert_eq!(result_ids(&seen), vec![during.clone()]);
    assert_eq!(seen["count"], 1);
    let before: Vec<&str> = seen["results"][0]["context"]["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert!(!before.is_empty() && !before.contains(&hidden.as_str()), "context is filtered too: {before:?}");
    assert!(
        before.iter().all(|id| *id != hidden && !id.is_empty()),
        "nothing from before bob joined: {before:?}"
    );

    // Once bob leaves, he keeps what he saw and nothing more.
    bob.client.post(&path(&room, "leave"), &json!({})).await.expect(200);
    let after = send_text(&alice, &room, "3", "secret plans after").await;
    for order in ["rank", "recent"] {
        let found =
            search(&bob, json!({"search_term": "secret", "order_by": order, "event_context": {}})).await;
        assert_eq!(result_ids(&found), vec![during.clone()], "{order}");
        let after_ids: Vec<&str> = found["results"][0]["context"]["events_after"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert!(!after_ids.contains(&after.as_str()), "{after_ids:?}");
    }
    assert_eq!(search(&alice, json!({"search_term": "secret"})).await["count"], 3);
    // A former member's window ends when they left, even where history is world-readable.
    let open = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    join(&bob, &open).await;
    let open_during = send_text(&alice, &open, "o1", "public notice during").await;
    bob.client.post(&path(&open, "leave"), &json!({})).await.expect(200);
    send_text(&alice, &open, "o2", "public notice after").await;
    let found = search(&bob, json!({"search_term": "notice", "order_by": "recent"})).await;
    assert_eq!(result_ids(&found), vec![open_during]);
    // Forgotten rooms are not searched.
    bob.client.post(&path(&room, "forget"), &json!({})).await.expect(200);
    assert_eq!(search(&bob, json!({"search_term": "secret"})).await["results"], json!([]));

    // With `invited` visibility, what was sent while invited is visible; before, not.
    let carol = server.register("carol").await;
    let room = create_room(
        &alice,
        json!({"preset": "private_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "invited"}}]}),
    )
    .await;
    send_text(&alice, &room, "4", "mystery one").await;
    alice.client.post(&path(&room, "invite"), &json!({"user_id": carol.user_id})).await.expect(200);
    let while_invited = send_text(&alice, &room, "5", "mystery two").await;
    join(&carol, &room).await;
    let joined = send_text(&alice, &room, "6", "mystery three").await;
    let found = search(&carol, json!({"search_term": "mystery", "order_by": "recent"})).await;
    assert_eq!(result_ids(&found), vec![joined, while_invited]);
    // With the default `shared` visibility, a new member sees the history.
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let old = send_text(&alice, &room, "7", "archive material").await;
    join(&carol, &room).await;
    assert_eq!(result_ids(&search(&carol, json!({"search_term": "archive"})).await), vec![old]);
    server.stop().await;
}

#[tokio::test]
async fn redacted_events_are_removed_from_the_index() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat", "name": "Launch control"})).await;
    join(&bob, &room).await;
    let codes = send_text(&bob, &room, "1", "launch codes 1234").await;
    let party = send_text(&alice, &room, "2", "launch party tonight").await;
    let own = send_text(&alice, &room, "3", "my launch diary").await;
    assert_eq!(search(&alice, json!({"search_term": "launch"})).await["count"], 4);
    // A moderator's redaction of someone else's message, and one of one's own.
    redact(&alice, &room, &codes, "r1").await;
    redact(&alice, &room, &own, "r2").await;
    for user in [&alice, &bob] {
        for order in ["rank", "recent"] {
            let found =
                search(user, json!({"search_term": "launch", "order_by": order, "keys": ["content.body"]}))
                    .await;
            assert_eq!(result_ids(&found), vec![party.clone()], "{order}");
            assert_eq!(found["count"], 1);
            assert_eq!(search(user, json!({"search_term": "1234", "order_by": order})).await["count"], 0);
        }
    }
    // The index is stored: it holds after a restart.
    server.restart().await;
    let client = server.client().with_token(&alice.access_token);
    let response = client
        .post(
            "/_matrix/client/v3/search",
            &json!({"search_categories": {"room_events": {"search_term": "diary codes party"}}}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(response["search_categories"]["room_events"]["count"], 0);
    let response = client
        .post(
            "/_matrix/client/v3/search",
            &json!({"search_categories": {"room_events": {"search_term": "party"}}}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(result_ids(&response["search_categories"]["room_events"]), vec![party]);
    server.stop().await;
}

#[tokio::test]
async fn search_rejects_bad_input() {
    let server = TestServer::start_with(json!({"allow_guest_access": true})).await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_text(&alice, &room, "1", "needle in a haystack").await;
    let post = |body: Value| {
        let client = alice.client.clone();
        async move { client.post("/_matrix/client/v3/search", &body).await }
    };
    post(json!({})).await.expect_error(400, "M_BAD_JSON");
    post(json!({"search_categories": {}})).await.expect_error(400, "M_BAD_JSON");
    post(json!({"search_categories": {"rooms": {"search_term": "x"}}})).await.expect_error(400, "M_BAD_JSON");
    post(json!({"search_categories": {"room_events": {}}})).await.expect_error(400, "M_BAD_JSON");
    post(json!({"search_categories": {"room_events": {"search_term": 5}}}))
        .await
        .expect_error(400, "M_BAD_JSON");
    let criteria = |extra: Value| {
        let mut criteria = json!({"search_term": "needle"});
        criteria.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"search_categories": {"room_events": criteria}})
    };
    post(criteria(json!({"keys": ["content.secret"]}))).await.expect_error(400, "M_INVALID_PARAM");
    post(criteria(json!({"keys": "content.body"}))).await.expect_error(400, "M_BAD_JSON");
    post(criteria(json!({"order_by": "random"}))).await.expect_error(400, "M_INVALID_PARAM");
    post(criteria(json!({"groupings": {"group_by": [{"key": "type"}]}})))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    post(criteria(json!({"event_context": {"before_limit": -1}}))).await.expect_error(400, "M_BAD_JSON");
    post(criteria(json!({"filter": {"senders": "nope"}}))).await.expect_error(400, "M_BAD_JSON");
    let response = alice
        .client
        .request_raw(reqwest::Method::POST, "/_matrix/client/v3/search", Some(b"{not json".to_vec()), &[])
        .await;
    response.expect_error(400, "M_NOT_JSON");
    // Other categories beside room_events are ignored; an empty key list searches nothing.
    let ok = post(criteria(json!({}))).await.expect(200).clone();
    assert_eq!(ok["search_categories"]["room_events"]["count"], 1);
    let mut with_other = criteria(json!({}));
    with_other["search_categories"]["other"] = json!({"x": 1});
    post(with_other).await.expect(200);
    let none = post(criteria(json!({"keys": []}))).await.expect(200).clone();
    assert_eq!(none["search_categories"]["room_events"]["results"], json!([]));
    // Query syntax never breaks the search.
    for term in
        ["\"unclosed", "-", "or", "(( AND *", "NEAR(a b)", "needle^ \"\" -\"", "needle OR", "ünïcödé 日本語"]
    {
        let mut body = criteria(json!({}));
        body["search_categories"]["room_events"]["search_term"] = json!(term);
        let response = post(body).await;
        assert_eq!(response.status, 200, "{term}: {}", response.json);
    }
    // Only users may search: not anonymous clients, not guests.
    server
        .client()
        .post("/_matrix/client/v3/search", &criteria(json!({})))
        .await
        .expect_error(401, "M_MISSING_TOKEN");
    let guest =
        server.client().post("/_matrix/client/v3/register?kind=guest", &json!({})).await.expect(200).clone();
    server
        .client()
        .with_token(guest["access_token"].as_str().unwrap())
        .post("/_matrix/client/v3/search", &criteria(json!({})))
        .await
        .expect_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn pages_of_hidden_matches_do_not_end_the_search() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    join(&bob, &room).await;
    let first = send_text(&alice, &room, "v1", "weather report one").await;
    let second = send_text(&alice, &room, "v2", "weather report two").await;
    bob.client.post(&path(&room, "leave"), &json!({})).await.expect(200);
    // Newer matches bob may never see: more than one batch of them.
    for i in 0..30 {
        send_text(&alice, &room, &format!("h{i}"), &format!("weather report hidden {i}")).await;
    }
    join(&bob, &room).await;
    for order in ["recent", "rank"] {
        let criteria = json!({"search_term": "weather report", "order_by": order, "filter": {"limit": 2}});
        let pages = all_pages(&bob, criteria).await;
        let ids: BTreeSet<String> = pages.iter().flat_map(|(ids, _)| ids.clone()).collect();
        assert_eq!(ids, [first.clone(), second.clone()].into_iter().collect(), "{order}: {pages:?}");
        assert_eq!(pages.last().unwrap().1, 2, "{order}: the last page's count is exact");
    }
    server.stop().await;
}

#[tokio::test]
async fn events_from_before_the_search_migration_are_indexed() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let carol = server.register("carol").await;
    let room = create_room(&alice, json!({"name": "Archive room", "topic": "dusty shelves"})).await;
    let kept = send_text(&alice, &room, "1", "ancient scroll").await;
    let gone = send_text(&alice, &room, "2", "ancient secret").await;
    redact(&alice, &room, &gone, "r").await;
    create_room(&carol, json!({"preset": "public_chat"})).await;
    // Back to before migration 6, as a database created by an older Myelin.
    let db = server.services().store().db().clone();
    for sql in [
        "DROP TABLE event_search",
        "DROP TABLE user_directory_rooms",
        "DELETE FROM schema_migrations WHERE version = 6",
    ] {
        db.execute(sql, vec![]).await.unwrap();
    }
    server.restart().await;
    let alice = TestUser { client: server.client().with_token(&alice.access_token), ..alice };
    assert_eq!(result_ids(&search(&alice, json!({"search_term": "ancient"})).await), vec![kept]);
    let name = search(&alice, json!({"search_term": "archive", "keys": ["content.name"]})).await;
    assert_eq!(name["results"][0]["result"]["type"], "m.room.name");
    let topic = search(&alice, json!({"search_term": "shelves", "keys": ["content.topic"]})).await;
    assert_eq!(topic["results"][0]["result"]["type"], "m.room.topic");
    // The user directory knows which rooms are public.
    let found =
        alice.client.post("/_matrix/client/v3/user_directory/search", &json!({"search_term": "carol"})).await;
    assert_eq!(found.expect(200)["results"][0]["user_id"], carol.user_id.as_str());
    // And new events are indexed as before.
    let fresh = send_text(&alice, &room, "3", "ancient history").await;
    let found = search(&alice, json!({"search_term": "ancient", "order_by": "recent"})).await;
    assert_eq!(result_ids(&found)[0], fresh);
    server.stop().await;
}

#[tokio::test]
async fn enable_search_false_refuses_search_but_keeps_the_user_directory() {
    let server =
        TestServer::start_with(json!({"enable_search": false, "user_directory": {"search_all_users": true}}))
            .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"name": "Lunar base"})).await;
    send_text(&alice, &room, "1", "Martians are coming").await;
    let response = alice
        .client
        .post(
            "/_matrix/client/v3/search",
            &json!({"search_categories": {"room_events": {"search_term": "martians"}}}),
        )
        .await;
    response.expect_error(400, "M_UNKNOWN");
    assert_eq!(response.expect(400)["error"], "Search is disabled on this homeserver");
    let found =
        alice.client.post("/_matrix/client/v3/user_directory/search", &json!({"search_term": "bob"})).await;
    assert_eq!(found.expect(200)["results"][0]["user_id"], bob.user_id.as_str());
}
