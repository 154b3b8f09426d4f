//! End-to-end encryption keys on SQLite and PostgreSQL: one-time keys handed out once (also
//! under concurrent claims), fallback keys replaced and marked used, keys gone with their device.

use std::collections::BTreeSet;

use myelin_store::{KeysUploadRecord, OneTimeKeyRecord, Store};
use myelin_test_support::store_test;

const ALICE: &str = "@alice:test.local";
const BOB: &str = "@bob:test.local";

fn key(algorithm: &str, key_id: &str, json: &str) -> OneTimeKeyRecord {
    OneTimeKeyRecord { algorithm: algorithm.to_owned(), key_id: key_id.to_owned(), key_json: json.to_owned() }
}

async fn add_one_time_keys(store: &Store, device_id: &str, keys: &[OneTimeKeyRecord]) {
    let upload = KeysUploadRecord { one_time_keys: keys, ..KeysUploadRecord::default() };
    store.upload_keys(ALICE, device_id, upload).await.unwrap();
}

async fn set_fallback_key(store: &Store, device_id: &str, key: &OneTimeKeyRecord) {
    let upload = KeysUploadRecord { fallback_keys: std::slice::from_ref(key), ..KeysUploadRecord::default() };
    store.upload_keys(ALICE, device_id, upload).await.unwrap();
}

async fn set_device_keys(store: &Store, device_id: &str, key_json: &str, position: i64) {
    let upload = KeysUploadRecord { device_keys: Some((key_json, position)), ..KeysUploadRecord::default() };
    store.upload_keys(ALICE, device_id, upload).await.unwrap();
}

store_test!(one_time_keys_are_claimed_once_oldest_first, |store| async move {
    store.upsert_device(ALICE, "DEV", None).await.unwrap();
    add_one_time_keys(&store, "DEV", &[key("signed_curve25519", "B", r#"{"key":"b"}"#)]).await;
    add_one_time_keys(
        &store,
        "DEV",
        &[key("signed_curve25519", "A", r#"{"key":"a"}"#), key("curve25519", "C", r#""c""#)],
    )
    .await;
    // An ID already present fails the whole upload (the caller checks IDs first; this is a
    // concurrent upload's key): nothing of it is written.
    let conflicting = [
        key("signed_curve25519", "D", r#"{"key":"d"}"#),
        key("signed_curve25519", "B", r#"{"key":"other"}"#),
    ];
    let fallback = [key("signed_curve25519", "FX", r#"{"key":"fx"}"#)];
    let upload = KeysUploadRecord {
        device_keys: Some((r#"{"device_id":"DEV"}"#, 1)),
        one_time_keys: &conflicting,
        fallback_keys: &fallback,
    };
    let error = store.upload_keys(ALICE, "DEV", upload).await.unwrap_err();
    assert!(error.is_unique_violation(), "{error}");
    assert_eq!(store.device_keys(ALICE, "DEV").await.unwrap(), None);
    assert!(store.unused_fallback_key_algorithms(ALICE, "DEV").await.unwrap().is_empty());
    let counts = store.count_one_time_keys(ALICE, "DEV").await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("curve25519".to_owned(), 1), ("signed_curve25519".to_owned(), 2)]
    );
    let by_id = store.one_time_keys_by_id(ALICE, "DEV", &["B".to_owned(), "Z".to_owned()]).await.unwrap();
    assert_eq!(by_id, [key("signed_curve25519", "B", r#"{"key":"b"}"#)]);

    // B was uploaded first (in an earlier millisecond or, within one, before A by ID order).
    let first = store.claim_one_time_key(ALICE, "DEV", "signed_curve25519").await.unwrap().unwrap();
    let second = store.claim_one_time_key(ALICE, "DEV", "signed_curve25519").await.unwrap().unwrap();
    assert_ne!(first.key_id, second.key_id);
    assert_eq!(store.claim_one_time_key(ALICE, "DEV", "signed_curve25519").await.unwrap(), None);
    assert_eq!(store.claim_one_time_key(ALICE, "OTHER", "curve25519").await.unwrap(), None);

    // Fallback keys: replaced per algorithm, used once handed out, reset by a new key only.
    assert_eq!(store.claim_fallback_key(ALICE, "DEV", "signed_curve25519").await.unwrap(), None);
    let fallback = key("signed_curve25519", "F1", r#"{"key":"f1"}"#);
    set_fallback_key(&store, "DEV", &fallback).await;
    assert_eq!(store.unused_fallback_key_algorithms(ALICE, "DEV").await.unwrap(), ["signed_curve25519"]);
    assert_eq!(
        store.claim_fallback_key(ALICE, "DEV", "signed_curve25519").await.unwrap(),
        Some(fallback.clone())
    );
    assert!(store.unused_fallback_key_algorithms(ALICE, "DEV").await.unwrap().is_empty());
    set_fallback_key(&store, "DEV", &fallback).await;
    assert!(
        store.unused_fallback_key_algorithms(ALICE, "DEV").await.unwrap().is_empty(),
        "same key: still used"
    );
    let replacement = key("signed_curve25519", "F2", r#"{"key":"f2"}"#);
    set_fallback_key(&store, "DEV", &replacement).await;
    assert_eq!(store.unused_fallback_key_algorithms(ALICE, "DEV").await.unwrap(), ["signed_curve25519"]);
    assert_eq!(store.claim_fallback_key(ALICE, "DEV", "signed_curve25519").await.unwrap(), Some(replacement));
});

store_test!(concurrent_claims_never_share_a_one_time_key, |store| async move {
    store.upsert_device(ALICE, "DEV", None).await.unwrap();
    let keys: Vec<_> = (0..20)
        .map(|i| key("signed_curve25519", &format!("K{i:02}"), &format!(r#"{{"key":"{i}"}}"#)))
        .collect();
    add_one_time_keys(&store, "DEV", &keys).await;
    let mut claims = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store: Store = store.clone();
        claims
            .spawn(async move { store.claim_one_time_key(ALICE, "DEV", "signed_curve25519").await.unwrap() });
    }
    let mut claimed = BTreeSet::new();
    while let Some(result) = claims.join_next().await {
        if let Some(key) = result.unwrap() {
            assert!(claimed.insert(key.key_id.clone()), "{} handed out twice", key.key_id);
        }
    }
    let left =
        store.count_one_time_keys(ALICE, "DEV").await.unwrap().get("signed_curve25519").copied().unwrap_or(0);
    assert_eq!(claimed.len() as i64 + left, 20, "every key is handed out or left");
    // Whatever a claim skipped is still there for the next one.
    while store.claim_one_time_key(ALICE, "DEV", "signed_curve25519").await.unwrap().is_some() {}
    assert!(store.count_one_time_keys(ALICE, "DEV").await.unwrap().is_empty());
});

store_test!(device_keys_go_with_their_device, |store| async move {
    store.upsert_device(ALICE, "DEV", Some("Laptop")).await.unwrap();
    store.upsert_device(ALICE, "KEEP", None).await.unwrap();
    for device in ["DEV", "KEEP"] {
        set_device_keys(&store, device, &format!(r#"{{"device_id":"{device}"}}"#), 1).await;
        add_one_time_keys(&store, device, &[key("signed_curve25519", "A", "{}")]).await;
        set_fallback_key(&store, device, &key("signed_curve25519", "F", "{}")).await;
    }
    set_device_keys(&store, "DEV", r#"{"device_id":"DEV","v":2}"#, 2).await;
    store.upsert_device(BOB, "BOBDEV", None).await.unwrap();
    let upload = KeysUploadRecord {
        device_keys: Some((r#"{"device_id":"BOBDEV"}"#, 4)),
        ..KeysUploadRecord::default()
    };
    store.upload_keys(BOB, "BOBDEV", upload).await.unwrap();
    let all = store.device_keys_of_users(&[ALICE, "@nobody:example.org", BOB]).await.unwrap();
    let listed: Vec<(&str, &str)> = all.iter().map(|(u, d)| (u.as_str(), d.device_id.as_str())).collect();
    assert_eq!(listed, [(ALICE, "DEV"), (ALICE, "KEEP"), (BOB, "BOBDEV")]);
    assert_eq!(
        (all[0].1.key_json.as_str(), all[0].1.display_name.as_deref()),
        (r#"{"device_id":"DEV","v":2}"#, Some("Laptop"))
    );
    assert!(store.device_keys_of_users(&[]).await.unwrap().is_empty());

    store.delete_devices(ALICE, &["DEV".to_owned()], 3).await.unwrap();
    assert_eq!(store.device_keys(ALICE, "DEV").await.unwrap(), None);
    assert!(store.count_one_time_keys(ALICE, "DEV").await.unwrap().is_empty());
    assert_eq!(store.claim_fallback_key(ALICE, "DEV", "signed_curve25519").await.unwrap(), None);
    assert!(store.device_keys(ALICE, "KEEP").await.unwrap().is_some(), "other devices keep theirs");
    assert_eq!(store.count_one_time_keys(ALICE, "KEEP").await.unwrap().len(), 1);
    // A device added again under the same ID starts without keys.
    store.upsert_device(ALICE, "DEV", None).await.unwrap();
    assert_eq!(store.device_keys_of_users(&[ALICE]).await.unwrap().len(), 1);
});
