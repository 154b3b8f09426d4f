//! The store's data modules through its public API, on SQLite and PostgreSQL: events persisted
//! and read back, state groups, full-text search (FTS5 / `websearch_to_tsquery`), push actions,
//! unread counts and the push queue.

use std::collections::BTreeMap;

use myelin_store::push::{NewPushAction, PusherRecord};
use myelin_store::search::{SearchKey, SearchOrder, SearchQuery, SearchRoom};
use myelin_store::state::create_state_group;
use myelin_store::{EventFilterSql, NewEvent, ReceiptRecord, StateDelta, Store, TxnRecord};
use myelin_test_support::store_test;
use serde_json::{Value, json};

const ALICE: &str = "@alice:test.local";
const BOB: &str = "@bob:test.local";

/// An event at stream position `position` (also its depth), built on `prev`.
pub(crate) fn event(
    room: &str,
    position: i64,
    sender: &str,
    kind: &str,
    state_key: Option<&str>,
    content: Value,
    prev: Option<&str>,
) -> NewEvent {
    let event_id = format!("$e{position}-{}", room.trim_start_matches('!').replace(':', "_"));
    let mut json = json!({
        "event_id": event_id, "room_id": room, "sender": sender, "type": kind,
        "origin_server_ts": 1_000 + position, "content": content,
    });
    if let Some(state_key) = state_key {
        json["state_key"] = json!(state_key);
    }
    NewEvent {
        event_id,
        room_id: room.to_owned(),
        stream_ordering: position,
        depth: position,
        sender: sender.to_owned(),
        kind: kind.to_owned(),
        state_key: state_key.map(str::to_owned),
        origin_server_ts: 1_000 + position,
        json: json.to_string(),
        prev_events: prev.map(|p| vec![p.to_owned()]).unwrap_or_default(),
        state_before: None,
        replaces_state: None,
        membership: (kind == "m.room.member").then(|| content_membership(&json)),
        relation: None,
        contains_url: false,
        txn: None,
        redaction: None,
        new_room: (kind == "m.room.create").then(|| ("10".to_owned(), sender.to_owned())),
        remote: None,
        federation_destinations: Vec::new(),
    }
}

fn content_membership(json: &Value) -> String {
    json["content"]["membership"].as_str().unwrap_or("leave").to_owned()
}

pub(crate) fn text(room: &str, position: i64, sender: &str, body: &str, prev: &str) -> NewEvent {
    event(
        room,
        position,
        sender,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": body}),
        Some(prev),
    )
}

/// Creates a room with `members` joined (positions 1..), returns the last event and the state
/// group after it.
pub(crate) async fn new_room(store: &Store, room: &str, members: &[&str], first: i64) -> (String, i64) {
    let mut events = vec![event(room, first, members[0], "m.room.create", Some(""), json!({}), None)];
    for (i, member) in members.iter().enumerate() {
        let prev = events.last().unwrap().event_id.clone();
        events.push(event(
            room,
            first + 1 + i as i64,
            member,
            "m.room.member",
            Some(member),
            json!({"membership": "join"}),
            Some(&prev),
        ));
    }
    let afters = store.persist_events(&events).await.unwrap();
    (events.last().unwrap().event_id.clone(), afters.last().copied().flatten().unwrap())
}

store_test!(events_are_persisted_and_read_back, |store| async move {
    let room = "!r:test.local";
    let create = event(room, 1, ALICE, "m.room.create", Some(""), json!({"creator": ALICE}), None);
    let join = event(
        room,
        2,
        ALICE,
        "m.room.member",
        Some(ALICE),
        json!({"membership": "join"}),
        Some(&create.event_id),
    );
    let afters = store.persist_events(&[create.clone(), join.clone()]).await.unwrap();
    let (g1, g2) = (afters[0].unwrap(), afters[1].unwrap());
    assert_ne!(g1, g2, "each state event makes a state group");

    let mut hello = text(room, 3, ALICE, "hello", &join.event_id);
    hello.state_before = Some(g2);
    let txn = TxnRecord {
        user_id: ALICE.to_owned(),
        device_id: "DEV".to_owned(),
        scope: format!("{room}/send/m.room.message"),
        txn_id: "t1".to_owned(),
    };
    hello.txn = Some(txn.clone());
    assert_eq!(store.persist_events(std::slice::from_ref(&hello)).await.unwrap(), vec![Some(g2)]);

    let stored = store.get_event(&hello.event_id).await.unwrap().expect("stored");
    assert_eq!(stored.event_id, hello.event_id);
    assert_eq!(stored.room_id, room);
    assert_eq!(stored.stream_ordering, 3);
    assert_eq!(
        serde_json::from_str::<Value>(&stored.json).unwrap(),
        serde_json::from_str::<Value>(&hello.json).unwrap()
    );
    assert_eq!((stored.state_before, stored.state_after), (Some(g2), Some(g2)));
    assert_eq!((stored.redacted_by.as_deref(), stored.outlier), (None, false));
    let joined = store.get_event(&join.event_id).await.unwrap().unwrap();
    assert_eq!((joined.state_before, joined.state_after), (Some(g1), Some(g2)), "a chained batch");
    assert!(store.get_event("$missing").await.unwrap().is_none());
    let both = store
        .get_events(&[create.event_id.clone(), hello.event_id.clone(), "$missing".to_owned()])
        .await
        .unwrap();
    let mut ids: Vec<&str> = both.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![create.event_id.as_str(), hello.event_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    assert_eq!(store.max_stream_ordering().await.unwrap(), 3);
    assert_eq!(store.forward_extremities(room).await.unwrap(), vec![hello.event_id.clone()]);
    assert_eq!(store.latest_event(room).await.unwrap().unwrap().event_id, hello.event_id);
    assert_eq!(store.event_for_txn(&txn).await.unwrap(), Some(hello.event_id.clone()));
    assert_eq!(store.txn_for_event(&hello.event_id).await.unwrap(), Some(txn));

    let filter = EventFilterSql::default();
    let forward = store.room_events(room, 0, None, true, 10, &filter).await.unwrap();
    let ids: Vec<&str> = forward.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, [create.event_id.as_str(), join.event_id.as_str(), hello.event_id.as_str()]);
    let backward = store.room_events(room, 3, Some(1), false, 10, &filter).await.unwrap();
    let ids: Vec<&str> = backward.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, [join.event_id.as_str(), create.event_id.as_str()]);
    let only_messages =
        EventFilterSql { types: Some(vec!["m.room.message".to_owned()]), ..EventFilterSql::default() };
    let messages = store.room_events(room, 0, None, true, 10, &only_messages).await.unwrap();
    assert_eq!(messages.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), [hello.event_id.as_str()]);

    // An event on a previous event that is not stored is refused, and leaves nothing behind.
    let orphan = text(room, 4, ALICE, "orphan", "$never-stored");
    assert!(store.persist_events(std::slice::from_ref(&orphan)).await.is_err());
    assert!(store.get_event(&orphan.event_id).await.unwrap().is_none());
    assert_eq!(store.max_stream_ordering().await.unwrap(), 3);

    // A redaction replaces the redacted event's JSON with the pruned one.
    let mut redaction = event(
        room,
        5,
        ALICE,
        "m.room.redaction",
        None,
        json!({"redacts": hello.event_id}),
        Some(&hello.event_id),
    );
    redaction.state_before = Some(g2);
    let pruned = json!({"event_id": hello.event_id, "room_id": room, "sender": ALICE, "type": "m.room.message", "content": {}});
    redaction.redaction = Some((hello.event_id.clone(), pruned.to_string()));
    store.persist_events(std::slice::from_ref(&redaction)).await.unwrap();
    let redacted = store.get_event(&hello.event_id).await.unwrap().unwrap();
    assert_eq!(redacted.redacted_by.as_deref(), Some(redaction.event_id.as_str()));
    assert_eq!(serde_json::from_str::<Value>(&redacted.json).unwrap()["content"], json!({}));
    assert_eq!(store.forward_extremities(room).await.unwrap(), vec![redaction.event_id.clone()]);
});

/// A whole state: `(type, state_key)` to event ID.
type State = BTreeMap<(String, String), String>;

store_test!(state_groups_store_deltas_and_load_whole_states, |store| async move {
    let room = "!state:test.local";
    // 40 groups in a chain: keys set, overwritten and removed; the expected state of each
    // group is tracked beside it.
    let mut model: State = BTreeMap::new();
    let mut groups: Vec<(i64, State)> = Vec::new();
    let mut parent = None;
    for i in 0..40i64 {
        let mut changes = StateDelta::new();
        let member = format!("@u{}:test.local", i % 7);
        changes.insert(("m.room.member".to_owned(), member.clone()), Some(format!("$m{i}")));
        if i % 5 == 0 {
            changes.insert(("m.room.topic".to_owned(), String::new()), Some(format!("$topic{i}")));
        }
        if i % 11 == 10 {
            // An explicit removal (a tombstone in the delta).
            changes.insert(("m.room.topic".to_owned(), String::new()), None);
        }
        for (key, value) in &changes {
            match value {
                Some(event_id) => model.insert(key.clone(), event_id.clone()),
                None => model.remove(key),
            };
        }
        let group = store
            .db()
            .transaction(async |tx| create_state_group(tx, room, parent, &changes).await)
            .await
            .unwrap();
        groups.push((group, model.clone()));
        parent = Some(group);
    }
    for (group, expected) in &groups {
        assert_eq!(&store.state_of_group(*group).await.unwrap(), expected, "group {group}");
        let members: BTreeMap<String, String> = expected
            .iter()
            .filter(|((kind, _), _)| kind == "m.room.member")
            .map(|((_, key), id)| (key.clone(), id.clone()))
            .collect();
        assert_eq!(store.state_of_group_for_type(*group, "m.room.member", None).await.unwrap(), members);
        let one =
            store.state_of_group_for_type(*group, "m.room.member", Some("@u3:test.local")).await.unwrap();
        assert_eq!(one.get("@u3:test.local"), members.get("@u3:test.local"));
        assert!(one.len() <= 1);
        let topic = store.state_of_group_for_type(*group, "m.room.topic", Some("")).await.unwrap();
        assert_eq!(topic.get(""), expected.get(&("m.room.topic".to_owned(), String::new())), "group {group}");
    }
    // Deltas, not snapshots: far fewer rows than the states they describe.
    let snapshot_rows: usize = groups.iter().map(|(_, state)| state.len()).sum();
    let stored = store.count_state_rows(room).await.unwrap();
    assert!((stored as usize) < snapshot_rows / 2, "{stored} rows for {snapshot_rows} state entries");
    // A branch from an old group does not see the later changes.
    let (old, old_state) = &groups[3];
    let mut changes = StateDelta::new();
    changes.insert(("m.room.name".to_owned(), String::new()), Some("$name".to_owned()));
    let branch = store
        .db()
        .transaction(async |tx| create_state_group(tx, room, Some(*old), &changes).await)
        .await
        .unwrap();
    let mut expected = old_state.clone();
    expected.insert(("m.room.name".to_owned(), String::new()), "$name".to_owned());
    assert_eq!(store.state_of_group(branch).await.unwrap(), expected);
});

store_test!(search_finds_words_phrases_and_exclusions, |store| async move {
    let room = "!search:test.local";
    let other = "!other:test.local";
    let (mut prev, group) = new_room(&store, room, &[ALICE], 1).await;
    let bodies = [
        "the quick brown fox",   // 3
        "a quick red fox jumps", // 4
        "lazy brown dog",        // 5
        "brown foxes are quick", // 6
        "nothing to see here",   // 7
    ];
    let mut ids = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let mut message = text(room, 3 + i as i64, ALICE, body, &prev);
        message.state_before = Some(group);
        store.persist_events(std::slice::from_ref(&message)).await.unwrap();
        prev = message.event_id.clone();
        ids.push(message.event_id);
    }
    let mut named =
        event(room, 8, ALICE, "m.room.name", Some(""), json!({"name": "Quick thinkers"}), Some(&prev));
    named.state_before = Some(group);
    store.persist_events(std::slice::from_ref(&named)).await.unwrap();
    let (other_prev, other_group) = new_room(&store, other, &[BOB], 20).await;
    let mut elsewhere = text(other, 30, BOB, "quick quick quick fox", &other_prev);
    elsewhere.state_before = Some(other_group);
    store.persist_events(std::slice::from_ref(&elsewhere)).await.unwrap();

    let rooms = [SearchRoom { room_id: room.to_owned(), until: None }];
    let filter = EventFilterSql::default();
    let search = async |term: &str, keys: &[SearchKey], order: SearchOrder| {
        let query = SearchQuery { term, keys, rooms: &rooms, filter: &filter, order };
        let matches = store.search_events(&query, None, 50).await.unwrap();
        assert_eq!(store.count_search_matches(&query).await.unwrap(), matches.len() as i64, "{term}");
        matches
    };
    let body = [SearchKey::Body];
    let found = |matches: &[myelin_store::search::SearchMatch]| {
        let mut found: Vec<String> = matches.iter().map(|m| m.event.event_id.clone()).collect();
        found.sort();
        found
    };
    let expect = |positions: &[usize]| {
        let mut expected: Vec<String> = positions.iter().map(|p| ids[*p].clone()).collect();
        expected.sort();
        expected
    };
    // A word, in the given room only (the other room's message is not found).
    let quick = search("quick", &body, SearchOrder::Recent).await;
    assert_eq!(found(&quick), expect(&[0, 1, 3]));
    let positions: Vec<i64> = quick.iter().map(|m| m.event.stream_ordering).collect();
    assert_eq!(positions, [6, 4, 3], "newest first");
    assert!(quick.iter().all(|m| m.highlights.iter().any(|h| h == "quick")), "{:?}", quick[0].highlights);
    // Words are all required; stems match ("foxes").
    assert_eq!(found(&search("brown fox", &body, SearchOrder::Rank).await), expect(&[0, 3]));
    // A quoted phrase matches the words in that order only.
    assert_eq!(found(&search("\"quick brown\"", &body, SearchOrder::Rank).await), expect(&[0]));
    // `-word` excludes.
    assert_eq!(found(&search("fox -red", &body, SearchOrder::Rank).await), expect(&[0, 3]));
    // An excluded phrase ("brown foxes" stems to it).
    assert_eq!(found(&search("quick -\"brown fox\"", &body, SearchOrder::Rank).await), expect(&[1]));
    // `or`.
    assert_eq!(found(&search("dog or jumps", &body, SearchOrder::Rank).await), expect(&[1, 2]));
    // Nothing matches, and punctuation alone is no query.
    assert!(search("elephant", &body, SearchOrder::Rank).await.is_empty());
    assert!(search("-- \" ' ()", &body, SearchOrder::Rank).await.is_empty());
    // Keys: the room name is found under content.name only.
    let by_name = search("thinkers", &[SearchKey::Name], SearchOrder::Rank).await;
    assert_eq!(
        by_name.iter().map(|m| m.event.event_id.as_str()).collect::<Vec<_>>(),
        [named.event_id.as_str()]
    );
    assert!(search("thinkers", &body, SearchOrder::Rank).await.is_empty());
    // A former member sees matches up to the position they left at.
    let until = [SearchRoom { room_id: room.to_owned(), until: Some(4) }];
    let query = SearchQuery {
        term: "quick",
        keys: &body,
        rooms: &until,
        filter: &filter,
        order: SearchOrder::Recent,
    };
    let early = store.search_events(&query, None, 50).await.unwrap();
    assert_eq!(early.iter().map(|m| m.event.stream_ordering).collect::<Vec<_>>(), [4, 3]);
    // A redacted event leaves the index.
    let mut redaction =
        event(room, 9, ALICE, "m.room.redaction", None, json!({"redacts": ids[3]}), Some(&named.event_id));
    redaction.state_before = store.get_event(&named.event_id).await.unwrap().unwrap().state_after;
    redaction.redaction = Some((ids[3].clone(), json!({"content": {}}).to_string()));
    store.persist_events(std::slice::from_ref(&redaction)).await.unwrap();
    assert_eq!(found(&search("quick", &body, SearchOrder::Rank).await), expect(&[0, 1]));
});

fn pusher(user_id: &str, pushkey: &str) -> PusherRecord {
    PusherRecord {
        user_id: user_id.to_owned(),
        app_id: "org.example.app".to_owned(),
        pushkey: pushkey.to_owned(),
        kind: "http".to_owned(),
        app_display_name: "App".to_owned(),
        device_display_name: "Phone".to_owned(),
        profile_tag: None,
        lang: "en".to_owned(),
        data: json!({"url": "http://127.0.0.1:9/_matrix/push/v1/notify"}).to_string(),
        device_id: None,
        pushkey_ts: 1,
    }
}

fn action(user_id: &str, event: &NewEvent, thread_id: &str, highlight: bool) -> NewPushAction {
    NewPushAction {
        user_id: user_id.to_owned(),
        event_id: event.event_id.clone(),
        room_id: event.room_id.clone(),
        stream_ordering: event.stream_ordering,
        thread_id: thread_id.to_owned(),
        actions: json!(["notify"]).to_string(),
        highlight,
    }
}

store_test!(push_actions_count_unread_and_queue_deliveries, |store| async move {
    let room = "!push:test.local";
    let (mut prev, group) = new_room(&store, room, &[ALICE, BOB], 1).await;
    store.upsert_pusher(&pusher(BOB, "bob-key"), false).await.unwrap();
    // Alice sends three messages; Bob is notified of each (one highlight, one in a thread).
    let mut messages = Vec::new();
    for i in 0..3 {
        let mut message = text(room, 10 + i, ALICE, &format!("m{i}"), &prev);
        message.state_before = Some(group);
        prev = message.event_id.clone();
        messages.push(message);
    }
    let actions = vec![
        action(BOB, &messages[0], "main", false),
        action(BOB, &messages[1], "main", true),
        action(BOB, &messages[2], &messages[0].event_id, false),
        // Alice has no pusher: her action is recorded but queues nothing.
        action(ALICE, &messages[2], "main", false),
    ];
    let (_, queued) = store.persist_events_with_push(&messages, &actions).await.unwrap();
    assert_eq!(queued, 3, "one delivery per action of a user with a pusher");

    let unread = |user: &'static str| {
        let store = store.clone();
        async move {
            let floor = store.unread_floor(room, user).await.unwrap();
            let mut threads: Vec<(String, u64, u64)> = store
                .unread_push_actions(user, room, floor)
                .await
                .unwrap()
                .into_iter()
                .map(|t| (t.thread_id, t.notifications, t.highlights))
                .collect();
            threads.sort();
            threads
        }
    };
    let mut expected = vec![("main".to_owned(), 2, 1), (messages[0].event_id.clone(), 1, 0)];
    expected.sort();
    assert_eq!(unread(BOB).await, expected);
    assert_eq!(store.total_unread_notifications(BOB).await.unwrap(), 3);
    assert_eq!(store.total_unread_notifications(ALICE).await.unwrap(), 1);
    let listed = store.push_actions_for_user(BOB, None, 10, false).await.unwrap();
    assert_eq!(listed.iter().map(|a| a.stream_ordering).collect::<Vec<_>>(), [12, 11, 10], "newest first");
    assert!(listed.iter().all(|a| !a.read));
    let highlights = store.push_actions_for_user(BOB, None, 10, true).await.unwrap();
    assert_eq!(
        highlights.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(),
        [messages[1].event_id.as_str()]
    );
    assert_eq!(store.push_actions_for_user(BOB, Some(11), 10, false).await.unwrap().len(), 1, "before 11");

    // Bob's unthreaded read receipt on the second message covers the main timeline and the
    // thread up to it.
    let receipt = ReceiptRecord {
        room_id: room.to_owned(),
        receipt_type: "m.read".to_owned(),
        user_id: BOB.to_owned(),
        thread_id: String::new(),
        event_id: messages[1].event_id.clone(),
        event_stream: messages[1].stream_ordering,
        ts: 2_000,
        stream_id: 1,
    };
    store.upsert_receipt(&receipt).await.unwrap();
    assert_eq!(unread(BOB).await, vec![(messages[0].event_id.clone(), 1, 0)]);
    assert_eq!(store.total_unread_notifications(BOB).await.unwrap(), 1);
    let listed = store.push_actions_for_user(BOB, None, 10, false).await.unwrap();
    assert_eq!(listed.iter().map(|a| a.read).collect::<Vec<_>>(), [false, true, true]);
    // A threaded receipt clears its thread.
    let threaded = ReceiptRecord {
        thread_id: messages[0].event_id.clone(),
        event_id: messages[2].event_id.clone(),
        event_stream: messages[2].stream_ordering,
        stream_id: 2,
        ..receipt
    };
    store.upsert_receipt(&threaded).await.unwrap();
    assert!(unread(BOB).await.is_empty());
    assert_eq!(store.total_unread_notifications(BOB).await.unwrap(), 0);

    // The queue: Bob's three deliveries, due now, in stream order; postponed, then delivered.
    let due = store.due_pushes(i64::MAX, 10).await.unwrap();
    assert_eq!(due.iter().map(|p| p.stream_ordering).collect::<Vec<_>>(), [10, 11, 12]);
    assert!(due.iter().all(|p| p.user_id == BOB && p.pushkey == "bob-key" && p.attempts == 0));
    let now = myelin_store_now();
    store.postpone_pushes(BOB, "org.example.app", "bob-key", now + 60_000).await.unwrap();
    assert!(store.due_pushes(now, 10).await.unwrap().is_empty(), "postponed");
    assert_eq!(store.next_push_due().await.unwrap(), Some(now + 60_000));
    let later = store.due_pushes(now + 60_000, 10).await.unwrap();
    assert!(later.len() == 3 && later.iter().all(|p| p.attempts == 1), "the postponement counted an attempt");
    assert_eq!(store.make_queued_pushes_due().await.unwrap(), 3, "a restart retries them at once");
    let due = store.due_pushes(myelin_store_now(), 10).await.unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|p| p.attempts == 0), "with the backoff started over");
    for push in &due {
        store.delete_queued_push(push).await.unwrap();
    }
    assert_eq!(store.next_push_due().await.unwrap(), None);
    // Old push actions are pruned.
    assert_eq!(store.prune_push_actions(i64::MAX).await.unwrap(), 4);
    assert!(store.push_actions_for_user(BOB, None, 10, false).await.unwrap().is_empty());
});

/// Milliseconds since the epoch, as the store stamps rows.
fn myelin_store_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
