//! Remote server keys on SQLite and PostgreSQL: the latest document replaces the previous one,
//! every key is kept, a key keeps its latest validity and a retired key its expiry.

use myelin_store::{ServerKeyDocument, ServerVerifyKeyRecord};
use myelin_test_support::store_test;

fn document(text: &str, valid_until_ts: i64) -> ServerKeyDocument {
    ServerKeyDocument {
        server_name: "remote.test".to_owned(),
        document: text.to_owned(),
        valid_until_ts,
        fetched_ts: 1,
    }
}

fn key(key_id: &str, valid_until_ts: i64, expired_ts: Option<i64>) -> ServerVerifyKeyRecord {
    ServerVerifyKeyRecord {
        key_id: key_id.to_owned(),
        public_key: format!("pk-{key_id}"),
        valid_until_ts,
        expired_ts,
    }
}

store_test!(server_keys_are_kept_across_documents, |store| async move {
    assert_eq!(store.server_key_document("remote.test").await.unwrap(), None);
    store.store_server_keys(&document("{\"a\":1}", 100), &[key("ed25519:a", 100, None)]).await.unwrap();
    // The next document retires `a` and brings `b`; a late copy of `a` with a shorter validity
    // does not shorten it.
    store
        .store_server_keys(
            &document("{\"b\":1}", 200),
            &[key("ed25519:a", 50, Some(150)), key("ed25519:b", 200, None)],
        )
        .await
        .unwrap();
    let stored = store.server_key_document("remote.test").await.unwrap().unwrap();
    assert_eq!((stored.document.as_str(), stored.valid_until_ts), ("{\"b\":1}", 200));
    assert_eq!(
        store.server_verify_keys("remote.test").await.unwrap(),
        vec![key("ed25519:a", 100, Some(150)), key("ed25519:b", 200, None)]
    );
    assert!(store.server_verify_keys("other.test").await.unwrap().is_empty());
});
