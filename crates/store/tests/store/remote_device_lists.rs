//! Tracked remote device lists on SQLite and PostgreSQL: a resync replaces the list, updates
//! add and delete devices and move the stream ID forward only, signing keys are kept for
//! tracked users, each change is on the device-list stream, and forgetting drops everything.

use myelin_store::RemoteDeviceList;
use myelin_test_support::store_test;

const BOB: &str = "@bob:remote.test";
const ORIGIN: &str = "remote.test";

store_test!(remote_device_lists_are_replaced_updated_and_forgotten, |store| async move {
    assert_eq!(store.remote_device_list(BOB).await.unwrap(), None);
    let list = RemoteDeviceList {
        stream_id: 5,
        devices: vec![("PHONE".to_owned(), Some(r#"{"k":1}"#.to_owned())), ("TV".to_owned(), None)],
        master_key: Some(r#"{"m":1}"#.to_owned()),
        self_signing_key: None,
    };
    store.replace_remote_device_list(BOB, ORIGIN, &list, 10).await.unwrap();
    assert_eq!(store.remote_device_list(BOB).await.unwrap(), Some(list.clone()));

    // A new device at stream 6; an old update (stream 4) does not move the stream ID back.
    store.apply_remote_device_update(BOB, ORIGIN, "LAPTOP", Some(r#"{"k":2}"#), false, 6, 11).await.unwrap();
    store.apply_remote_device_update(BOB, ORIGIN, "TV", None, true, 4, 12).await.unwrap();
    let updated = store.remote_device_list(BOB).await.unwrap().unwrap();
    assert_eq!(updated.stream_id, 6);
    let ids: Vec<&str> = updated.devices.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["LAPTOP", "PHONE"]);

    // New signing keys: the master key replaced, a missing one left as it was.
    store.set_remote_signing_keys(BOB, ORIGIN, None, Some(r#"{"s":1}"#), 13).await.unwrap();
    let keys = store.remote_device_list(BOB).await.unwrap().unwrap();
    assert_eq!(keys.master_key.as_deref(), Some(r#"{"m":1}"#));
    assert_eq!(keys.self_signing_key.as_deref(), Some(r#"{"s":1}"#));

    // Every change is on the stream, and none is taken for a local user's.
    assert!(store.max_device_list_position().await.unwrap() >= 13);
    assert_eq!(store.local_device_list_change_at(BOB, 11).await.unwrap(), (Vec::new(), None));

    store.forget_remote_device_list(BOB).await.unwrap();
    assert_eq!(store.remote_device_list(BOB).await.unwrap(), None);
});

store_test!(local_device_list_changes_name_their_devices_and_the_previous_position, |store| async move {
    let alice = "@alice:test.local";
    store.add_device_list_change(3, alice, "PHONE").await.unwrap();
    store.add_device_list_change(7, alice, "").await.unwrap();
    store.add_device_list_change(7, alice, "TV").await.unwrap();
    assert_eq!(
        store.local_device_list_change_at(alice, 7).await.unwrap(),
        (vec!["".to_owned(), "TV".to_owned()], Some(3))
    );
    assert_eq!(store.local_device_list_change_at(alice, 3).await.unwrap(), (vec!["PHONE".to_owned()], None));
});
