//! The device-list stream on SQLite and PostgreSQL: changes recorded in the transaction of the
//! device write that makes them (and only when something changed), the high-water mark raised
//! by every write handed a position, changes read among users sharing a joined room, and
//! membership transitions between two event positions.

use myelin_store::{MembershipTransition, NewEvent, Store};
use myelin_test_support::store_test;
use serde_json::{Value, json};

const ALICE: &str = "@alice:test.local";
const BOB: &str = "@bob:test.local";
const CAROL: &str = "@carol:test.local";
const ROOM: &str = "!r:test.local";

/// A state event of `ROOM` at stream position `position` (also its depth), built on `prev`.
fn state_event(
    position: i64,
    sender: &str,
    kind: &str,
    state_key: &str,
    content: Value,
    prev: Option<&str>,
) -> NewEvent {
    let event_id = format!("$e{position}");
    let json = json!({
        "event_id": event_id, "room_id": ROOM, "sender": sender, "type": kind, "state_key": state_key,
        "origin_server_ts": 1_000 + position, "content": content,
    });
    NewEvent {
        event_id,
        room_id: ROOM.to_owned(),
        stream_ordering: position,
        depth: position,
        sender: sender.to_owned(),
        kind: kind.to_owned(),
        state_key: Some(state_key.to_owned()),
        origin_server_ts: 1_000 + position,
        json: json.to_string(),
        prev_events: prev.map(|p| vec![p.to_owned()]).unwrap_or_default(),
        state_before: None,
        replaces_state: None,
        membership: (kind == "m.room.member").then(|| content["membership"].as_str().unwrap().to_owned()),
        relation: None,
        contains_url: false,
        txn: None,
        redaction: None,
        new_room: (kind == "m.room.create").then(|| ("10".to_owned(), sender.to_owned())),
        remote: None,
        federation_destinations: Vec::new(),
    }
}

fn member(position: i64, user: &str, membership: &str) -> NewEvent {
    let prev = format!("$e{}", position - 1);
    state_event(position, user, "m.room.member", user, json!({"membership": membership}), Some(&prev))
}

/// The transitions, read both ways (along the range and room by room), which must agree.
async fn transitions(store: &Store, user: &str, since: i64, upto: i64) -> Vec<MembershipTransition> {
    let along = store.membership_transitions(user, since, upto, usize::MAX).await.unwrap();
    let by_room = store.membership_transitions(user, since, upto, 0).await.unwrap();
    assert_eq!(along, by_room, "read along the range and room by room");
    along
}

async fn changed(store: &Store, user: &str, since: i64, upto: i64) -> Vec<String> {
    store.device_list_changes_for(user, since, upto).await.unwrap()
}

store_test!(device_list_changes_are_recorded_with_their_write, |store| async move {
    assert_eq!(store.max_device_list_position().await.unwrap(), 0);
    store.upsert_device(BOB, "PHONE", None).await.unwrap();

    // Deleting an existing device is a change; an unknown one is not, but the position is kept.
    store.delete_devices(BOB, &["PHONE".to_owned(), "NOPE".to_owned()], 5).await.unwrap();
    assert_eq!(changed(&store, BOB, 0, 5).await, [BOB]);
    assert_eq!(changed(&store, BOB, 5, 100).await, Vec::<String>::new());
    store.delete_devices(BOB, &["NOPE".to_owned()], 7).await.unwrap();
    assert_eq!(store.max_device_list_position().await.unwrap(), 7);
    assert_eq!(changed(&store, BOB, 5, 100).await, Vec::<String>::new());

    // A new display name is a change; the same name, or an unknown device, is not.
    store.upsert_device(BOB, "LAPTOP", Some("Laptop")).await.unwrap();
    assert!(store.set_device_display_name(BOB, "LAPTOP", Some("Laptop"), 8).await.unwrap());
    assert_eq!(changed(&store, BOB, 7, 100).await, Vec::<String>::new());
    assert!(!store.set_device_display_name(BOB, "NOPE", Some("x"), 9).await.unwrap());
    assert_eq!(changed(&store, BOB, 7, 100).await, Vec::<String>::new());
    assert_eq!(store.max_device_list_position().await.unwrap(), 9);
    assert!(store.set_device_display_name(BOB, "LAPTOP", None, 10).await.unwrap());
    assert_eq!(changed(&store, BOB, 9, 100).await, [BOB]);
    assert_eq!(store.get_device(BOB, "LAPTOP").await.unwrap().unwrap().display_name, None);

    // Identity keys, and a change of the user as a whole (cross-signing keys).
    let upload = myelin_store::KeysUploadRecord {
        device_keys: Some((r#"{"device_id":"LAPTOP"}"#, 11)),
        ..myelin_store::KeysUploadRecord::default()
    };
    store.upload_keys(BOB, "LAPTOP", upload).await.unwrap();
    assert_eq!(changed(&store, BOB, 10, 11).await, [BOB]);
    store.add_device_list_change(12, BOB, "").await.unwrap();
    assert_eq!(changed(&store, BOB, 11, 12).await, [BOB]);
    assert_eq!(store.max_device_list_position().await.unwrap(), 12);
    // Several changes of one user in a range: the user once.
    assert_eq!(changed(&store, BOB, 0, 100).await, [BOB]);
});

store_test!(changes_are_read_among_users_sharing_a_joined_room, |store| async move {
    let create = state_event(1, ALICE, "m.room.create", "", json!({}), None);
    store.persist_events(&[create, member(2, ALICE, "join"), member(3, BOB, "join")]).await.unwrap();
    store.add_device_list_change(1, BOB, "PHONE").await.unwrap();
    store.add_device_list_change(2, CAROL, "PHONE").await.unwrap();
    store.add_device_list_change(3, ALICE, "PHONE").await.unwrap();
    assert_eq!(changed(&store, ALICE, 0, 10).await, [ALICE, BOB], "Carol shares no room with Alice");
    assert_eq!(changed(&store, ALICE, 1, 10).await, [ALICE]);
    assert_eq!(changed(&store, ALICE, 0, 2).await, [BOB]);
    assert_eq!(changed(&store, CAROL, 0, 10).await, [CAROL], "a user in no room sees their own changes");

    let transition = |user: &str, before: Option<&str>, after: Option<&str>| MembershipTransition {
        room_id: ROOM.to_owned(),
        user_id: user.to_owned(),
        before: before.map(str::to_owned),
        after: after.map(str::to_owned),
    };
    assert_eq!(
        transitions(&store, ALICE, 0, 3).await,
        [transition(ALICE, None, Some("join")), transition(BOB, None, Some("join"))]
    );
    assert_eq!(transitions(&store, ALICE, 2, 3).await, [transition(BOB, None, Some("join"))]);
    assert_eq!(transitions(&store, ALICE, 3, 3).await, []);

    // Carol is invited and Bob leaves: Bob's changes are no longer Alice's business.
    store.persist_events(&[member(4, CAROL, "invite"), member(5, BOB, "leave")]).await.unwrap();
    assert_eq!(
        transitions(&store, ALICE, 3, 5).await,
        [transition(BOB, Some("join"), Some("leave")), transition(CAROL, None, Some("invite"))]
    );
    assert_eq!(
        transitions(&store, ALICE, 3, 4).await,
        [transition(CAROL, None, Some("invite"))],
        "the range ends at its upper position"
    );
    assert_eq!(changed(&store, ALICE, 0, 10).await, [ALICE]);
    // Bob's own transitions are his, in any room; the rooms he is not in are not his.
    assert_eq!(transitions(&store, BOB, 3, 5).await, [transition(BOB, Some("join"), Some("leave"))]);

    // The rooms with events in a range, among those the user is joined to now, read both ways.
    for joined_rooms in [0, usize::MAX] {
        let rooms = |user, after, upto| store.rooms_with_events_since(user, after, upto, joined_rooms);
        assert_eq!(rooms(ALICE, 0, 5).await.unwrap(), [ROOM]);
        assert_eq!(rooms(ALICE, 3, 5).await.unwrap(), [ROOM]);
        assert_eq!(rooms(ALICE, 5, 5).await.unwrap(), Vec::<String>::new(), "nothing after the last");
        assert_eq!(rooms(BOB, 0, 5).await.unwrap(), Vec::<String>::new(), "Bob has left");
        assert_eq!(rooms(CAROL, 0, 5).await.unwrap(), Vec::<String>::new(), "Carol is only invited");
    }
});
