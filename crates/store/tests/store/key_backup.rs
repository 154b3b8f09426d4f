//! Key backup on SQLite and PostgreSQL: versions numbered per user and never reused, the
//! current version, keys written only to it with the caller's replacement rule, the etag bumped
//! by writes that change something, and deletion of keys and versions.

use myelin_store::{BackupKeysState, BackupKeysWrite, RoomKeyRecord, RoomKeysSelection, Store};
use myelin_test_support::store_test;

const ALICE: &str = "@alice:test.local";
const BOB: &str = "@bob:test.local";

fn key(room_id: &str, session_id: &str, first_message_index: i64, data: &str) -> RoomKeyRecord {
    RoomKeyRecord {
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
        first_message_index,
        forwarded_count: 0,
        is_verified: false,
        session_data: format!("{{\"d\":\"{data}\"}}"),
    }
}

/// The test's replacement rule: a lower `first_message_index` wins.
fn lower_index(stored: &RoomKeyRecord, new: &RoomKeyRecord) -> bool {
    new.first_message_index < stored.first_message_index
}

async fn put(store: &Store, user_id: &str, version: i64, keys: &[RoomKeyRecord]) -> BackupKeysWrite {
    store.put_room_keys(user_id, version, keys, &lower_index).await.expect("put room keys")
}

fn done(etag: i64, count: i64) -> BackupKeysWrite {
    BackupKeysWrite::Done(BackupKeysState { etag, count })
}

async fn sessions(
    store: &Store,
    version: i64,
    selection: RoomKeysSelection<'_>,
) -> Option<Vec<(String, String, String)>> {
    store
        .room_keys(ALICE, version, selection)
        .await
        .expect("read room keys")
        .map(|keys| keys.into_iter().map(|key| (key.room_id, key.session_id, key.session_data)).collect())
}

store_test!(backup_versions_are_numbered_per_user_and_never_reused, |store| async move {
    assert_eq!(store.backup_version(ALICE, None).await.unwrap(), None);
    assert_eq!(store.create_backup_version(ALICE, "alg", "{\"a\":1}").await.unwrap(), 1);
    assert_eq!(store.create_backup_version(ALICE, "alg", "{\"a\":2}").await.unwrap(), 2);
    assert_eq!(store.create_backup_version(BOB, "alg", "{}").await.unwrap(), 1);

    let current = store.backup_version(ALICE, None).await.unwrap().expect("a current version");
    assert_eq!(
        (current.version, current.auth_data.as_str(), current.etag, current.count),
        (2, "{\"a\":2}", 0, 0)
    );
    let first = store.backup_version(ALICE, Some(1)).await.unwrap().expect("version 1");
    assert_eq!((first.algorithm.as_str(), first.auth_data.as_str()), ("alg", "{\"a\":1}"));
    assert_eq!(store.backup_version(ALICE, Some(3)).await.unwrap(), None);

    assert!(store.update_backup_auth_data(ALICE, 1, "{\"a\":3}").await.unwrap());
    assert_eq!(store.backup_version(ALICE, Some(1)).await.unwrap().unwrap().auth_data, "{\"a\":3}");
    assert!(!store.update_backup_auth_data(ALICE, 7, "{}").await.unwrap());

    // Deleting the current version makes the previous one current again; its number is not
    // handed out again, deleting it twice succeeds, one never created does not.
    assert!(store.delete_backup_version(ALICE, 2).await.unwrap());
    assert!(store.delete_backup_version(ALICE, 2).await.unwrap());
    assert!(!store.delete_backup_version(ALICE, 9).await.unwrap());
    assert_eq!(store.backup_version(ALICE, Some(2)).await.unwrap(), None);
    assert!(!store.update_backup_auth_data(ALICE, 2, "{}").await.unwrap());
    assert_eq!(store.backup_version(ALICE, None).await.unwrap().unwrap().version, 1);
    assert_eq!(store.create_backup_version(ALICE, "alg", "{}").await.unwrap(), 3);
    // Bob's backup is his own.
    assert_eq!(store.backup_version(BOB, None).await.unwrap().unwrap().version, 1);
});

store_test!(room_keys_go_to_the_current_version_only, |store| async move {
    assert_eq!(put(&store, ALICE, 1, &[key("!r:x", "s", 0, "a")]).await, BackupKeysWrite::UnknownVersion);
    store.create_backup_version(ALICE, "alg", "{}").await.unwrap();
    store.create_backup_version(ALICE, "alg", "{}").await.unwrap();

    assert_eq!(
        put(&store, ALICE, 1, &[key("!r:x", "s", 0, "a")]).await,
        BackupKeysWrite::NotCurrent { current: 2 }
    );
    assert_eq!(put(&store, ALICE, 5, &[key("!r:x", "s", 0, "a")]).await, BackupKeysWrite::UnknownVersion);
    assert_eq!(sessions(&store, 1, RoomKeysSelection::All).await, Some(vec![]));

    // New sessions are inserted; the etag moves once per write that changes something.
    let first = [key("!r:x", "s1", 5, "a"), key("!r:x", "s2", 5, "b"), key("!q:x", "s1", 5, "c")];
    assert_eq!(put(&store, ALICE, 2, &first).await, done(1, 3));
    // A worse key for a stored session changes nothing: same etag.
    assert_eq!(put(&store, ALICE, 2, &[key("!r:x", "s1", 6, "worse")]).await, done(1, 3));
    // A better one replaces it.
    assert_eq!(put(&store, ALICE, 2, &[key("!r:x", "s1", 4, "better")]).await, done(2, 3));
    assert_eq!(put(&store, ALICE, 2, &[]).await, done(2, 3));

    assert_eq!(
        sessions(&store, 2, RoomKeysSelection::All).await,
        Some(vec![
            ("!q:x".to_owned(), "s1".to_owned(), "{\"d\":\"c\"}".to_owned()),
            ("!r:x".to_owned(), "s1".to_owned(), "{\"d\":\"better\"}".to_owned()),
            ("!r:x".to_owned(), "s2".to_owned(), "{\"d\":\"b\"}".to_owned()),
        ])
    );
    assert_eq!(sessions(&store, 2, RoomKeysSelection::Room("!q:x")).await.unwrap().len(), 1);
    assert_eq!(sessions(&store, 2, RoomKeysSelection::Room("!none:x")).await, Some(vec![]));
    assert_eq!(sessions(&store, 2, RoomKeysSelection::Session("!r:x", "s2")).await.unwrap().len(), 1);
    assert_eq!(sessions(&store, 9, RoomKeysSelection::All).await, None);
    let record = store.room_keys(ALICE, 2, RoomKeysSelection::Session("!r:x", "s1")).await.unwrap().unwrap();
    assert_eq!(
        (record[0].first_message_index, record[0].forwarded_count, record[0].is_verified),
        (4, 0, false)
    );

    let version = store.backup_version(ALICE, None).await.unwrap().unwrap();
    assert_eq!((version.etag, version.count), (2, 3));
    // Bob sees none of it.
    assert_eq!(store.room_keys(BOB, 2, RoomKeysSelection::All).await.unwrap(), None);
});

store_test!(deleting_room_keys_and_versions, |store| async move {
    store.create_backup_version(ALICE, "alg", "{}").await.unwrap();
    let keys = [key("!r:x", "s1", 0, "a"), key("!r:x", "s2", 0, "b"), key("!q:x", "s1", 0, "c")];
    assert_eq!(put(&store, ALICE, 1, &keys).await, done(1, 3));

    let delete = |selection| {
        let store = store.clone();
        async move { store.delete_room_keys(ALICE, 1, selection).await.expect("delete room keys") }
    };
    assert_eq!(delete(RoomKeysSelection::Session("!r:x", "s2")).await, done(2, 2));
    // Nothing deleted: the etag stays.
    assert_eq!(delete(RoomKeysSelection::Session("!r:x", "s2")).await, done(2, 2));
    assert_eq!(delete(RoomKeysSelection::Room("!q:x")).await, done(3, 1));
    assert_eq!(delete(RoomKeysSelection::All).await, done(4, 0));
    assert_eq!(
        store.delete_room_keys(ALICE, 2, RoomKeysSelection::All).await.unwrap(),
        BackupKeysWrite::UnknownVersion
    );

    // Deleting a version deletes its keys.
    assert_eq!(put(&store, ALICE, 1, &keys).await, done(5, 3));
    store.create_backup_version(ALICE, "alg", "{}").await.unwrap();
    assert_eq!(put(&store, ALICE, 2, &keys[..1]).await, done(1, 1));
    assert!(store.delete_backup_version(ALICE, 1).await.unwrap());
    assert_eq!(sessions(&store, 1, RoomKeysSelection::All).await, None);
    assert_eq!(
        store.delete_room_keys(ALICE, 1, RoomKeysSelection::All).await.unwrap(),
        BackupKeysWrite::UnknownVersion
    );
    assert_eq!(sessions(&store, 2, RoomKeysSelection::All).await.unwrap().len(), 1);
    // Deleting the current version leaves no version to write to when none is left.
    assert!(store.delete_backup_version(ALICE, 2).await.unwrap());
    assert_eq!(put(&store, ALICE, 2, &keys).await, BackupKeysWrite::UnknownVersion);
    assert_eq!(store.backup_version(ALICE, None).await.unwrap(), None);
});

store_test!(concurrent_writes_of_one_user_are_applied_one_after_the_other, |store| async move {
    // Versions created at the same time get distinct numbers.
    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store: Store = store.clone();
        creates.spawn(async move { store.create_backup_version(ALICE, "alg", "{}").await.unwrap() });
    }
    let mut versions = Vec::new();
    while let Some(version) = creates.join_next().await {
        versions.push(version.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());

    // Uploads at the same time: each one inserts a session of its own, and all of them the
    // same shared session with a decreasing index, so every upload changes something and
    // bumps the etag once. They end at etag 10 and 11 sessions whatever their order, and
    // the shared session holds the best key.
    let mut uploads = tokio::task::JoinSet::new();
    for n in 0..10 {
        let store: Store = store.clone();
        uploads.spawn(async move {
            let keys =
                [key("!r:x", &format!("s{n}"), 0, "own"), key("!r:x", "shared", 100 - n, &n.to_string())];
            put(&store, ALICE, 8, &keys).await
        });
    }
    let mut etags = Vec::new();
    while let Some(write) = uploads.join_next().await {
        match write.unwrap() {
            BackupKeysWrite::Done(state) => etags.push(state.etag),
            other => panic!("upload failed: {other:?}"),
        }
    }
    etags.sort();
    assert_eq!(etags, (1..=10).collect::<Vec<_>>());
    let version = store.backup_version(ALICE, None).await.unwrap().unwrap();
    assert_eq!((version.etag, version.count), (10, 11));
    let shared =
        store.room_keys(ALICE, 8, RoomKeysSelection::Session("!r:x", "shared")).await.unwrap().unwrap();
    assert_eq!(shared[0].first_message_index, 91);
});

store_test!(deactivating_a_user_deletes_their_backups, |store| async move {
    for user_id in [ALICE, BOB] {
        store.create_backup_version(user_id, "alg", "{}").await.unwrap();
        assert_eq!(put(&store, user_id, 1, &[key("!r:x", "s", 0, "k")]).await, done(1, 1));
    }
    store.deactivate_user(ALICE, false).await.unwrap();
    assert_eq!(store.backup_version(ALICE, None).await.unwrap(), None);
    assert_eq!(store.room_keys(ALICE, 1, RoomKeysSelection::All).await.unwrap(), None);
    let bob = store.backup_version(BOB, None).await.unwrap().expect("Bob keeps his backup");
    assert_eq!(bob.count, 1);
});
