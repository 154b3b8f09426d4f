//! Cross-signing keys and signatures on SQLite and PostgreSQL: keys set only on the expected
//! master key, signatures read by target and signer, and what a replaced key or a deleted
//! device had signed (or was signed by) gone with it.

use myelin_store::{CrossSigningKeyRecord, CrossSigningSignatureRecord, Store};
use myelin_test_support::store_test;

const ALICE: &str = "@alice:test.local";
const BOB: &str = "@bob:test.local";

fn key(key_type: &str, public_key: &str) -> CrossSigningKeyRecord {
    CrossSigningKeyRecord {
        key_type: key_type.to_owned(),
        public_key: public_key.to_owned(),
        key_json: format!(r#"{{"usage":["{key_type}"],"keys":{{"ed25519:{public_key}":"{public_key}"}}}}"#),
    }
}

fn signature(target: (&str, &str), signer: (&str, &str), value: &str) -> CrossSigningSignatureRecord {
    CrossSigningSignatureRecord {
        target_user_id: target.0.to_owned(),
        target_key_id: target.1.to_owned(),
        signer_user_id: signer.0.to_owned(),
        signer_key_id: signer.1.to_owned(),
        signature: value.to_owned(),
    }
}

async fn signatures_of(store: &Store, user_id: &str, key_ids: &[&str]) -> Vec<CrossSigningSignatureRecord> {
    let mut found = store.signatures_of_users_keys(&[user_id], ALICE).await.unwrap();
    found.extend(store.signatures_of_users_keys(&[user_id], BOB).await.unwrap());
    found.retain(|s| key_ids.contains(&s.target_key_id.as_str()));
    found.sort();
    found.dedup();
    found
}

store_test!(cross_signing_keys_are_set_only_on_the_expected_master_key, |store| async move {
    assert!(store.cross_signing_keys(ALICE).await.unwrap().is_empty());
    let first = [key("master", "M1"), key("self_signing", "S1"), key("user_signing", "U1")];
    // The caller believed a master key was set up: nothing is written.
    assert!(!store.set_cross_signing_keys(ALICE, Some("M0"), &first, 1).await.unwrap());
    assert!(store.cross_signing_keys(ALICE).await.unwrap().is_empty());
    assert!(store.set_cross_signing_keys(ALICE, None, &first, 2).await.unwrap());
    assert_eq!(store.cross_signing_keys(ALICE).await.unwrap(), first);
    // A second "first upload" raced by the first one is refused.
    assert!(!store.set_cross_signing_keys(ALICE, None, &[key("master", "M9")], 3).await.unwrap());
    // Replacing one key leaves the others; other users are untouched.
    assert!(store.set_cross_signing_keys(ALICE, Some("M1"), &[key("self_signing", "S2")], 4).await.unwrap());
    assert_eq!(
        store.cross_signing_keys(ALICE).await.unwrap(),
        [key("master", "M1"), key("self_signing", "S2"), key("user_signing", "U1")]
    );
    assert!(store.cross_signing_keys(BOB).await.unwrap().is_empty());
});

store_test!(replaced_keys_and_deleted_devices_take_their_signatures, |store| async move {
    store.upsert_device(ALICE, "DEV", None).await.unwrap();
    store.upsert_device(ALICE, "OTHER", None).await.unwrap();
    let alice = [key("master", "AM1"), key("self_signing", "AS1"), key("user_signing", "AU1")];
    assert!(store.set_cross_signing_keys(ALICE, None, &alice, 5).await.unwrap());
    assert!(store.set_cross_signing_keys(BOB, None, &[key("master", "BM1")], 6).await.unwrap());
    let by_self_signing = signature((ALICE, "DEV"), (ALICE, "ed25519:AS1"), "sig-dev");
    let other_by_self_signing = signature((ALICE, "OTHER"), (ALICE, "ed25519:AS1"), "sig-other");
    let master_by_device = signature((ALICE, "AM1"), (ALICE, "ed25519:DEV"), "sig-master");
    let bob_by_alice = signature((BOB, "BM1"), (ALICE, "ed25519:AU1"), "sig-bob");
    store
        .add_cross_signing_signatures(
            &[
                by_self_signing.clone(),
                other_by_self_signing.clone(),
                master_by_device.clone(),
                bob_by_alice.clone(),
            ],
            &[(ALICE, "DEV"), (ALICE, "OTHER"), (ALICE, ""), (BOB, "")],
            20,
        )
        .await
        .unwrap();
    // The changes given are recorded at the position, in the same transaction.
    let (alice_changes, _) = store.local_device_list_change_at(ALICE, 20).await.unwrap();
    assert_eq!(alice_changes, ["", "DEV", "OTHER"]);
    let (bob_changes, _) = store.local_device_list_change_at(BOB, 20).await.unwrap();
    assert_eq!(bob_changes, [""]);
    // Storing one again replaces it.
    let replaced = signature((ALICE, "DEV"), (ALICE, "ed25519:AS1"), "sig-dev-2");
    store.add_cross_signing_signatures(std::slice::from_ref(&replaced), &[(ALICE, "DEV")], 11).await.unwrap();
    assert_eq!(
        signatures_of(&store, ALICE, &["AM1", "DEV", "OTHER"]).await,
        [master_by_device.clone(), replaced.clone(), other_by_self_signing.clone()]
    );
    // Only the signers asked for are read.
    let only_bob = store.signatures_of_users_keys(&[BOB], BOB).await.unwrap();
    assert!(only_bob.is_empty());
    assert_eq!(signatures_of(&store, BOB, &["BM1"]).await, std::slice::from_ref(&bob_by_alice));

    // A deleted device takes the signatures of it and by it.
    store.delete_devices(ALICE, &["DEV".to_owned()], 21).await.unwrap();
    assert_eq!(
        signatures_of(&store, ALICE, &["AM1", "DEV", "OTHER"]).await,
        std::slice::from_ref(&other_by_self_signing)
    );

    // A new self-signing key takes what the old one signed; the same key again keeps it.
    assert!(
        store.set_cross_signing_keys(ALICE, Some("AM1"), &[key("self_signing", "AS1")], 7).await.unwrap()
    );
    assert_eq!(signatures_of(&store, ALICE, &["OTHER"]).await, [other_by_self_signing]);
    assert!(
        store.set_cross_signing_keys(ALICE, Some("AM1"), &[key("self_signing", "AS2")], 8).await.unwrap()
    );
    assert!(signatures_of(&store, ALICE, &["OTHER"]).await.is_empty());

    // Bob's new master key loses Alice's signature of the old one; a new user-signing key of
    // Alice's takes her signatures of others.
    let bob_again = signature((BOB, "BM1"), (ALICE, "ed25519:AU1"), "sig-bob");
    store.add_cross_signing_signatures(std::slice::from_ref(&bob_again), &[(BOB, "")], 12).await.unwrap();
    assert!(
        store.set_cross_signing_keys(ALICE, Some("AM1"), &[key("user_signing", "AU2")], 9).await.unwrap()
    );
    assert!(signatures_of(&store, BOB, &["BM1"]).await.is_empty());
    store.add_cross_signing_signatures(&[bob_by_alice], &[(BOB, "")], 13).await.unwrap();
    assert!(store.set_cross_signing_keys(BOB, Some("BM1"), &[key("master", "BM2")], 10).await.unwrap());
    assert!(signatures_of(&store, BOB, &["BM1", "BM2"]).await.is_empty());
});
