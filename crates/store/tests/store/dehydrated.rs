//! Dehydrated devices on SQLite and PostgreSQL: one record per user, replaced with the previous
//! device's ID handed to exactly one replacer (also when replacements race), and removed with
//! its device; stale-device housekeeping never selects it.

use std::collections::BTreeSet;

use myelin_store::{DehydratedDeviceRecord, Store};
use myelin_test_support::store_test;

use crate::{ALICE, create_alice};

fn record(device_id: &str, device_data: &str) -> Option<DehydratedDeviceRecord> {
    Some(DehydratedDeviceRecord { device_id: device_id.to_owned(), device_data: device_data.to_owned() })
}

store_test!(a_dehydrated_device_is_replaced_and_goes_with_its_device, |store| async move {
    create_alice(&store).await;
    assert_eq!(store.dehydrated_device(ALICE).await.unwrap(), None);

    // A tokenless device is created once; an existing ID is left as it is.
    assert!(store.create_tokenless_device(ALICE, "ONE", Some("Dehydrated")).await.unwrap());
    assert!(!store.create_tokenless_device(ALICE, "ONE", Some("Other")).await.unwrap());
    assert_eq!(
        store.get_device(ALICE, "ONE").await.unwrap().unwrap().display_name.as_deref(),
        Some("Dehydrated")
    );

    assert_eq!(store.set_dehydrated_device(ALICE, "ONE", r#"{"n":1}"#).await.unwrap(), None);
    assert_eq!(store.dehydrated_device(ALICE).await.unwrap(), record("ONE", r#"{"n":1}"#));
    // The same device again: new data, no previous device to delete.
    assert_eq!(store.set_dehydrated_device(ALICE, "ONE", r#"{"n":2}"#).await.unwrap(), None);
    assert_eq!(store.dehydrated_device(ALICE).await.unwrap(), record("ONE", r#"{"n":2}"#));
    // Another device: the previous one is returned for deletion.
    store.create_tokenless_device(ALICE, "TWO", None).await.unwrap();
    assert_eq!(store.set_dehydrated_device(ALICE, "TWO", "{}").await.unwrap(), Some("ONE".to_owned()));

    // Housekeeping never picks the dehydrated device, even when every device is stale.
    let stale: Vec<String> = store
        .stale_devices(i64::MAX, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, device_id)| device_id)
        .collect();
    assert_eq!(stale, vec!["ONE".to_owned()]);

    // Deleting the device deletes the record.
    store.delete_devices(ALICE, &["TWO".to_owned()], 1).await.unwrap();
    assert_eq!(store.dehydrated_device(ALICE).await.unwrap(), None);
});

store_test!(racing_replacements_hand_each_previous_device_to_one_replacer, |store| async move {
    create_alice(&store).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..12 {
        let store: Store = store.clone();
        tasks.spawn(async move {
            let device_id = format!("D{n:02}");
            store.create_tokenless_device(ALICE, &device_id, None).await.unwrap();
            store.set_dehydrated_device(ALICE, &device_id, "{}").await.unwrap()
        });
    }
    let mut previous = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        if let Some(device_id) = result.unwrap() {
            assert!(previous.insert(device_id.clone()), "{device_id} was handed to two replacers");
        }
    }
    // Every device but the last one was replaced, and handed to exactly one replacer.
    let current = store.dehydrated_device(ALICE).await.unwrap().unwrap().device_id;
    assert!(!previous.contains(&current));
    previous.insert(current);
    assert_eq!(previous, (0..12).map(|n| format!("D{n:02}")).collect::<BTreeSet<_>>());
});
