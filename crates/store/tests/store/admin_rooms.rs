//! The admin API's room and destination rows on SQLite and PostgreSQL: blocking, one active
//! deletion task per room, a destination's backoff reset, purging a room that is gone or
//! half gone (idempotent), and purging a room's history before a point.

use myelin_test_support::store_test;

const ROOM: &str = "!room:test.local";

store_test!(blocked_rooms_keep_their_first_blocker_and_unblock, |store| async move {
    assert_eq!(store.room_blocked_by(ROOM).await.unwrap(), None);
    store.set_room_blocked(ROOM, "@admin:test.local", true).await.unwrap();
    store.set_room_blocked(ROOM, "@other:test.local", true).await.unwrap();
    assert_eq!(store.room_blocked_by(ROOM).await.unwrap().as_deref(), Some("@admin:test.local"));
    store.set_room_blocked(ROOM, "@admin:test.local", false).await.unwrap();
    assert_eq!(store.room_blocked_by(ROOM).await.unwrap(), None);
});

store_test!(one_active_deletion_per_room_and_its_outcome_is_kept, |store| async move {
    let start = |id: &'static str, kind: &'static str, exclusive: bool, instance: &'static str| {
        let store = store.clone();
        async move { store.start_admin_room_task(id, kind, ROOM, exclusive, "{\"p\":1}", instance).await.unwrap() }
    };
    assert!(start("d1", "delete", true, "master").await);
    assert!(!start("d2", "delete", true, "master").await, "one at a time");
    assert!(start("p1", "purge_history", true, "master").await, "another kind");
    assert!(start("p2", "purge_history", false, "worker1").await, "not exclusive");
    store.finish_admin_room_task("d1", Ok(Some(r#"{"kicked_users":[]}"#))).await.unwrap();
    assert!(start("d2", "delete", true, "master").await, "after the first ended");
    store.finish_admin_room_task("d2", Err("boom")).await.unwrap();
    let tasks = store.admin_room_tasks(ROOM, "delete").await.unwrap();
    let states: Vec<(&str, &str, Option<&str>)> =
        tasks.iter().map(|t| (t.task_id.as_str(), t.status.as_str(), t.error.as_deref())).collect();
    assert_eq!(states, [("d1", "complete", None), ("d2", "failed", Some("boom"))]);
    assert_eq!(
        store.admin_room_task("d1").await.unwrap().unwrap().result.as_deref(),
        Some(r#"{"kicked_users":[]}"#)
    );
    // A restarted instance finds what it left active, with its parameters; not another's.
    let interrupted = store.interrupted_admin_room_tasks("master").await.unwrap();
    let found: Vec<(&str, Option<&str>)> =
        interrupted.iter().map(|(task, params)| (task.task_id.as_str(), params.as_deref())).collect();
    assert_eq!(found, [("p1", Some("{\"p\":1}"))]);
    let other = store.interrupted_admin_room_tasks("worker1").await.unwrap();
    assert_eq!(other.iter().map(|(task, _)| task.task_id.as_str()).collect::<Vec<_>>(), ["p2"]);
});

store_test!(resetting_a_destination_forgets_its_backoff, |store| async move {
    assert!(!store.reset_federation_destination("b.test").await.unwrap(), "unknown");
    store.record_destination_failure("b.test", 1000, 600).await.unwrap();
    assert!(store.federation_destination("b.test").await.unwrap().unwrap().failure_ts.is_some());
    assert!(store.reset_federation_destination("b.test").await.unwrap());
    let destination = store.federation_destination("b.test").await.unwrap().unwrap();
    assert_eq!((destination.retry_last_ts, destination.retry_interval, destination.failure_ts), (0, 0, None));
});

store_test!(purging_an_unknown_room_twice_does_nothing, |store| async move {
    assert_eq!(store.purge_room(ROOM).await.unwrap(), 0);
    assert_eq!(store.purge_room(ROOM).await.unwrap(), 0);
    assert!(store.room_stats(ROOM).await.unwrap().is_none());
});

store_test!(purging_history_deletes_remote_messages_and_keeps_state_and_local_ones, |store| async move {
    use myelin_store::PurgeHistoryOutcome;

    use crate::data::{new_room, text};

    const LOCAL: &str = "@alice:test.local";
    const REMOTE: &str = "@rem:remote.test";
    let room = "!history:test.local";
    // 1 create, 2 and 3 joins (state), then 4 local, 5 remote, 6 local (the point), 7 remote.
    let (last_join, group) = new_room(&store, room, &[LOCAL, REMOTE], 1).await;
    let mut prev = last_join;
    for (position, sender) in [(4, LOCAL), (5, REMOTE), (6, LOCAL), (7, REMOTE)] {
        let mut message = text(room, position, sender, &format!("message {position}"), &prev);
        message.state_before = Some(group);
        prev = message.event_id.clone();
        store.persist_events(&[message]).await.unwrap();
    }
    let id = |position: i64| format!("$e{position}-history_test.local");
    let stored = async |position: i64| store.get_event(&id(position)).await.unwrap();

    // Keeping local events: the remote message before the point goes; the state and the local
    // message stay, out of the timeline.
    let outcome = store.purge_history(room, 6, Some("test.local")).await.unwrap();
    assert_eq!(outcome, PurgeHistoryOutcome::Purged { deleted: 1, kept: 4 });
    assert!(stored(5).await.is_none());
    for position in 1..=4 {
        let event = stored(position).await.expect("kept");
        assert!(event.outlier && !event.visible(), "{position} left the timeline");
    }
    for position in [6, 7] {
        assert!(stored(position).await.unwrap().visible(), "{position} is after the point");
    }
    assert_eq!(store.forward_extremities(room).await.unwrap(), vec![id(7)]);

    // Local events too: the kept local message and the point's predecessors go; state stays.
    let outcome = store.purge_history(room, 7, None).await.unwrap();
    assert_eq!(outcome, PurgeHistoryOutcome::Purged { deleted: 2, kept: 0 });
    assert!(stored(4).await.is_none() && stored(6).await.is_none());
    assert!(stored(1).await.is_some() && stored(3).await.is_some(), "state events are never deleted");
    assert!(stored(7).await.unwrap().visible());

    // Beyond every forward extremity: refused, nothing done.
    let outcome = store.purge_history(room, 8, None).await.unwrap();
    assert_eq!(outcome, PurgeHistoryOutcome::BeyondExtremities);
    assert!(stored(7).await.unwrap().visible());
});

store_test!(room_stats_rows_follow_the_current_state_and_are_refilled_at_open, |store| async move {
    use myelin_store::users::NewUser;
    use myelin_store::{RoomListOrder, RoomListQuery};
    use serde_json::json;

    use crate::data::event;

    const LOCAL: &str = "@alice:test.local";
    const REMOTE: &str = "@rem:remote.test";
    store
        .create_user(&NewUser {
            user_id: LOCAL.to_owned(),
            password_hash: None,
            is_guest: false,
            admin: false,
            user_type: None,
            appservice_id: None,
            displayname: None,
        })
        .await
        .unwrap();
    let room = "!stats:test.local";
    let mut events = vec![event(
        room,
        1,
        LOCAL,
        "m.room.create",
        Some(""),
        json!({"m.federate": false, "type": "m.space"}),
        None,
    )];
    let next = |position: i64, kind: &str, key: &str, content: serde_json::Value, events: &mut Vec<_>| {
        let prev = events.last().map(|e: &myelin_store::NewEvent| e.event_id.clone());
        events.push(event(room, position, LOCAL, kind, Some(key), content, prev.as_deref()));
    };
    next(2, "m.room.member", LOCAL, json!({"membership": "join"}), &mut events);
    next(3, "m.room.member", REMOTE, json!({"membership": "join"}), &mut events);
    next(4, "m.room.member", "@inv:remote.test", json!({"membership": "invite"}), &mut events);
    // A NUL in a remote name is dropped (PostgreSQL's text refuses it); a topic that is not a
    // string is no topic.
    next(5, "m.room.name", "", json!({"name": "Lob\u{0}by"}), &mut events);
    next(6, "m.room.topic", "", json!({"topic": 7}), &mut events);
    next(7, "m.room.tombstone", "", json!({"replacement_room": "!next:test.local"}), &mut events);
    let groups = store.persist_events(&events).await.unwrap();

    let stats = store.room_stats(room).await.unwrap().unwrap();
    assert_eq!(stats.name.as_deref(), Some("Lobby"));
    assert_eq!(stats.topic, None);
    assert_eq!(stats.room_type.as_deref(), Some("m.space"));
    assert!(!stats.federatable);
    assert_eq!(stats.tombstone, Some(Some("!next:test.local".to_owned())));
    assert_eq!(stats.creator.as_deref(), Some(LOCAL));
    assert_eq!(
        (stats.joined_members, stats.joined_local_members, stats.invited_members, stats.state_events),
        (2, 1, 1, 7)
    );

    let query = |search: Option<&str>, order: RoomListOrder| RoomListQuery {
        from: 0,
        limit: 10,
        order,
        forwards: true,
        search_term: search.map(str::to_owned),
        public_rooms: None,
        empty_rooms: None,
    };
    let (found, total) = store.list_rooms(&query(Some("OBB"), RoomListOrder::Name)).await.unwrap();
    assert_eq!((found.len(), total), (1, 1));
    // The total of a page past the matches is counted, not taken from the empty page.
    let mut past = query(None, RoomListOrder::JoinedMembers);
    past.from = 10;
    let (none, total) = store.list_rooms(&past).await.unwrap();
    assert_eq!((none.len(), total), (0, 1));
    let mut full = query(None, RoomListOrder::Name);
    full.limit = 1;
    assert_eq!(store.list_rooms(&full).await.unwrap().1, 1);
    // `%` and `_` in a search are literal.
    assert_eq!(store.list_rooms(&query(Some("L%y"), RoomListOrder::Name)).await.unwrap().1, 0);
    assert_eq!(store.list_rooms(&query(Some("_"), RoomListOrder::Name)).await.unwrap().1, 0);

    // Member and other state changes move the counts by deltas: a leave, an invite turned
    // ban, a knock, a new local join, a power levels event; a topic (a summary event)
    // recomputes the row.
    let mut more = Vec::new();
    let mut prev = events.last().unwrap().event_id.clone();
    for (position, kind, key, content) in [
        (8, "m.room.member", REMOTE, json!({"membership": "leave"})),
        (9, "m.room.member", "@inv:remote.test", json!({"membership": "ban"})),
        (10, "m.room.member", "@knock:remote.test", json!({"membership": "knock"})),
        (11, "m.room.member", "@bob:test.local", json!({"membership": "join"})),
        (12, "m.room.power_levels", "", json!({"users": {}})),
    ] {
        let mut next = event(room, position, LOCAL, kind, Some(key), content, Some(&prev));
        next.state_before = groups.last().copied().flatten();
        prev = next.event_id.clone();
        more.push(next);
    }
    store
        .create_user(&NewUser {
            user_id: "@bob:test.local".to_owned(),
            password_hash: None,
            is_guest: false,
            admin: false,
            user_type: None,
            appservice_id: None,
            displayname: None,
        })
        .await
        .unwrap();
    let groups = store.persist_events(&more).await.unwrap();
    let stats = store.room_stats(room).await.unwrap().unwrap();
    assert_eq!(
        (
            stats.joined_members,
            stats.joined_local_members,
            stats.invited_members,
            stats.banned_members,
            stats.knocked_members,
            stats.state_events
        ),
        (2, 2, 0, 1, 1, 10)
    );
    let mut topic = event(room, 13, LOCAL, "m.room.topic", Some(""), json!({"topic": "now"}), Some(&prev));
    topic.state_before = groups.last().copied().flatten();
    store.persist_events(&[topic]).await.unwrap();
    let stats = store.room_stats(room).await.unwrap().unwrap();
    assert_eq!(stats.topic.as_deref(), Some("now"));

    // A database from before the table: its rows are filled again, the same.
    store.db().execute("DELETE FROM room_stats", vec![]).await.unwrap();
    assert!(store.room_stats(room).await.unwrap().is_none());
    store.backfill_room_stats().await.unwrap();
    assert_eq!(store.room_stats(room).await.unwrap().unwrap(), stats);
});

/// Rooms written straight into `rooms` and `room_stats` (the list reads nothing else).
async fn summary_rows(store: &myelin_store::Store, rows: &[(String, Option<String>, Option<String>)]) {
    use myelin_store::Value;
    for chunk in rows.chunks(200) {
        let mut rooms = Vec::new();
        let mut stats = Vec::new();
        let mut room_params = Vec::new();
        let mut stats_params = Vec::new();
        for (room_id, name, alias) in chunk {
            let n = room_params.len();
            rooms.push(format!("(${}, '10', 0)", n + 1));
            room_params.push(Value::from(room_id.as_str()));
            let n = stats_params.len();
            stats.push(format!("(${}, ${}, ${})", n + 1, n + 2, n + 3));
            stats_params.push(Value::from(room_id.as_str()));
            stats_params.push(name.as_deref().map_or(Value::Null, Value::from));
            stats_params.push(alias.as_deref().map_or(Value::Null, Value::from));
        }
        let db = store.db();
        db.execute(
            &format!("INSERT INTO rooms (room_id, room_version, created_ts) VALUES {}", rooms.join(", ")),
            room_params,
        )
        .await
        .unwrap();
        db.execute(
            &format!("INSERT INTO room_stats (room_id, name, canonical_alias) VALUES {}", stats.join(", ")),
            stats_params,
        )
        .await
        .unwrap();
    }
}

/// The room IDs and total of an admin room search, ordered by name.
async fn search(store: &myelin_store::Store, term: &str, limit: u64) -> (Vec<String>, u64) {
    use myelin_store::{RoomListOrder, RoomListQuery};
    let query = RoomListQuery {
        from: 0,
        limit,
        order: RoomListOrder::Name,
        forwards: true,
        search_term: Some(term.to_owned()),
        public_rooms: None,
        empty_rooms: None,
    };
    let (rooms, total) = store.list_rooms(&query).await.unwrap();
    (rooms.into_iter().map(|room| room.room_id).collect(), total)
}

// The admin room search finds a name or an alias's local part containing the term, whatever
// its case, or the room's exact ID; the same on both engines, whether few rooms match (SQLite
// narrows them by its trigram index first) or most do (a scan), and after names and aliases
// change or a row is written again.
store_test!(admin_room_search_follows_names_and_aliases, |store| async move {
    let mut rows: Vec<(String, Option<String>, Option<String>)> =
        (0..1200).map(|i| (format!("!t{i:04}:test.local"), Some(format!("Team {i:04}")), None)).collect();
    rows.push(("!cafe:test.local".to_owned(), Some("Marketing Café".to_owned()), None));
    rows.push(("!design:test.local".to_owned(), None, Some("#design-review:test.local".to_owned())));
    rows.push(("!quote:test.local".to_owned(), Some("say \"hi\" NOW".to_owned()), None));
    rows.push(("!none:test.local".to_owned(), None, None));
    summary_rows(&store, &rows).await;

    let one = |id: &str| (vec![id.to_owned()], 1);
    assert_eq!(search(&store, "TEAM 0042", 10).await, one("!t0042:test.local"));
    assert_eq!(search(&store, "team 004", 10).await.1, 10);
    let (page, total) = search(&store, "team 01", 10).await;
    assert_eq!((page.len(), total, page[0].as_str()), (10, 100, "!t0100:test.local"));
    // Most rooms match: a page and the total.
    let (page, total) = search(&store, "team", 100).await;
    assert_eq!((page.len(), total), (100, 1200));
    assert_eq!(page[0], "!t0000:test.local");
    assert_eq!(search(&store, "eting caf", 10).await, one("!cafe:test.local"));
    assert_eq!(search(&store, "\"hi\" now", 10).await, one("!quote:test.local"));
    // An alias matches by its local part only.
    assert_eq!(search(&store, "ign-rev", 10).await, one("!design:test.local"));
    assert_eq!(search(&store, "test.local", 10).await.1, 0);
    assert_eq!(search(&store, "!none:test.local", 10).await, one("!none:test.local"));
    assert_eq!(search(&store, "!none:test.loca", 10).await.1, 0, "an ID matches whole");
    assert_eq!(search(&store, "zzz", 10).await.1, 0);

    // A new name, a new alias, a row written again: the old ones are gone.
    let db = store.db();
    db.execute("UPDATE room_stats SET name = 'Renamed' WHERE room_id = '!t0042:test.local'", vec![])
        .await
        .unwrap();
    db.execute(
        "UPDATE room_stats SET canonical_alias = '#ops:test.local' WHERE room_id = '!design:test.local'",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(search(&store, "team 0042", 10).await.1, 0);
    assert_eq!(search(&store, "renamed", 10).await, one("!t0042:test.local"));
    assert_eq!(search(&store, "design", 10).await.1, 0);
    assert_eq!(search(&store, "ops", 10).await, one("!design:test.local"));
    db.execute("DELETE FROM room_stats WHERE room_id = '!cafe:test.local'", vec![]).await.unwrap();
    assert_eq!(search(&store, "café", 10).await.1, 0);
    db.execute("INSERT INTO room_stats (room_id, name) VALUES ('!cafe:test.local', 'Sales')", vec![])
        .await
        .unwrap();
    assert_eq!(search(&store, "café", 10).await.1, 0);
    assert_eq!(search(&store, "sales", 10).await, one("!cafe:test.local"));
});

// A SQLite database from before the trigram index (migration 0034) gets it filled from its
// rooms when it is opened.
#[tokio::test]
async fn the_room_search_index_is_filled_from_existing_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let config = myelin_config::DatabaseConfig::Sqlite { path: dir.path().join("db.sqlite") };
    let store = myelin_store::Store::open(&config).await.unwrap();
    summary_rows(&store, &[("!old:test.local".to_owned(), Some("Old Lobby".to_owned()), None)]).await;
    for statement in [
        "DROP TRIGGER room_stats_search_insert",
        "DROP TRIGGER room_stats_search_update",
        "DROP TRIGGER room_stats_search_delete",
        "DROP TABLE room_stats_search",
        "DROP TABLE room_stats_search_ids",
        "DELETE FROM schema_migrations WHERE version = 34",
    ] {
        store.db().execute(statement, vec![]).await.unwrap();
    }
    drop(store);
    let store = myelin_store::Store::open(&config).await.unwrap();
    assert_eq!(search(&store, "old lob", 10).await, (vec!["!old:test.local".to_owned()], 1));
    // Written again afterwards: found under its new name only.
    store.db().execute("UPDATE room_stats SET name = 'New Lobby'", vec![]).await.unwrap();
    assert_eq!(search(&store, "old lob", 10).await.1, 0);
    assert_eq!(search(&store, "new lob", 10).await.1, 1);
}
