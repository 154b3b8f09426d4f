//! OpenID tokens on SQLite and PostgreSQL: a token answers for its user until it expires, and
//! housekeeping deletes exactly the expired ones.

use myelin_test_support::store_test;

use crate::ALICE;

store_test!(open_id_tokens_answer_until_they_expire_and_then_are_deleted, |store| async move {
    store.insert_open_id_token("hash-one", ALICE, 2_000).await.unwrap();
    store.insert_open_id_token("hash-two", "@bob:test.local", 5_000).await.unwrap();
    assert_eq!(store.open_id_token_user("hash-one", 1_999).await.unwrap().as_deref(), Some(ALICE));
    // Valid until, not through, its expiry.
    assert_eq!(store.open_id_token_user("hash-one", 2_000).await.unwrap(), None);
    assert_eq!(store.open_id_token_user("unknown", 0).await.unwrap(), None);
    // A token (hash) is never handed out twice.
    assert!(store.insert_open_id_token("hash-one", "@eve:test.local", 9_000).await.is_err());

    assert_eq!(store.delete_expired_open_id_tokens(2_000).await.unwrap(), 1);
    assert_eq!(store.delete_expired_open_id_tokens(2_000).await.unwrap(), 0);
    assert_eq!(
        store.open_id_token_user("hash-two", 4_999).await.unwrap().as_deref(),
        Some("@bob:test.local")
    );
});
