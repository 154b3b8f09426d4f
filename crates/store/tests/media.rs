//! Local media records on SQLite and PostgreSQL: uploads, reserved IDs filled once, the limit
//! on reserved IDs, content found by hash, expiry, and thumbnails.

use myelin_store::{NewLocalMedia, NewUser, Store, ThumbnailRecord};
use myelin_test_support::store_test;

const ALICE: &str = "@alice:test.local";

async fn create_alice(store: &Store) {
    let user = NewUser {
        user_id: ALICE.to_owned(),
        password_hash: None,
        is_guest: false,
        admin: false,
        user_type: None,
        appservice_id: None,
        displayname: None,
    };
    assert!(store.create_user(&user).await.unwrap());
}

fn upload(media_id: &str, sha256: &str, file_id: &str) -> NewLocalMedia {
    NewLocalMedia {
        media_id: media_id.to_owned(),
        user_id: ALICE.to_owned(),
        content_type: Some("text/plain".to_owned()),
        upload_name: Some("a b.txt".to_owned()),
        size: 5,
        sha256: sha256.to_owned(),
        file_id: file_id.to_owned(),
        created_ts: 1000,
        authenticated: true,
    }
}

store_test!(uploads_are_recorded_and_found_by_hash, |store| async move {
    create_alice(&store).await;
    assert_eq!(store.local_media("ONE").await.unwrap(), None);
    store.insert_local_media(&upload("ONE", "aaaa", "ONE")).await.unwrap();
    let record = store.local_media("ONE").await.unwrap().unwrap();
    assert!(record.is_uploaded());
    assert_eq!(record.user_id, ALICE);
    assert_eq!(record.content_type.as_deref(), Some("text/plain"));
    assert_eq!(record.upload_name.as_deref(), Some("a b.txt"));
    assert_eq!(
        (record.size, record.sha256.as_deref(), record.file_id.as_deref()),
        (Some(5), Some("aaaa"), Some("ONE"))
    );
    assert_eq!((record.created_ts, record.last_access_ts), (1000, None));
    assert!(record.authenticated && !record.safe_from_quarantine && record.quarantined_by.is_none());
    assert_eq!(record.unused_expires_at, None);

    // The same bytes again point at the first file.
    assert_eq!(store.local_media_file_by_sha256("aaaa").await.unwrap().as_deref(), Some("ONE"));
    assert_eq!(store.local_media_file_by_sha256("bbbb").await.unwrap(), None);
    store.insert_local_media(&upload("TWO", "aaaa", "ONE")).await.unwrap();
    assert_eq!(store.local_media("TWO").await.unwrap().unwrap().file_id.as_deref(), Some("ONE"));

    let listed: Vec<String> =
        store.local_media_of_user(ALICE).await.unwrap().into_iter().map(|m| m.media_id).collect();
    assert_eq!(listed, vec!["ONE".to_owned(), "TWO".to_owned()]);
    assert!(store.local_media_of_user("@bob:test.local").await.unwrap().is_empty());

    store.touch_local_media("ONE", 5000).await.unwrap();
    assert_eq!(store.local_media("ONE").await.unwrap().unwrap().last_access_ts, Some(5000));
    // A duplicate ID is refused.
    assert!(store.insert_local_media(&upload("ONE", "cccc", "ONE")).await.is_err());
});

store_test!(reserved_ids_are_limited_filled_once_and_expire, |store| async move {
    create_alice(&store).await;
    // Two may wait at once (expiring at 2000).
    assert!(store.create_pending_media("P1", ALICE, 1000, 2000, false, 2).await.unwrap());
    assert!(store.create_pending_media("P2", ALICE, 1000, 2000, false, 2).await.unwrap());
    assert!(!store.create_pending_media("P3", ALICE, 1500, 2500, false, 2).await.unwrap());
    assert_eq!(store.local_media("P3").await.unwrap(), None);
    let pending = store.local_media("P1").await.unwrap().unwrap();
    assert!(!pending.is_uploaded() && !pending.authenticated);
    assert_eq!((pending.size, pending.file_id, pending.unused_expires_at), (None, None, Some(2000)));

    // The first upload fills it; a second one changes nothing.
    let mut content = upload("P1", "dddd", "P1");
    content.authenticated = false;
    assert!(store.complete_pending_media(&content).await.unwrap());
    let filled = store.local_media("P1").await.unwrap().unwrap();
    assert!(filled.is_uploaded());
    assert_eq!(
        (filled.sha256.as_deref(), filled.unused_expires_at, filled.created_ts),
        (Some("dddd"), None, 1000)
    );
    assert!(!store.complete_pending_media(&upload("P1", "eeee", "P1")).await.unwrap());
    assert_eq!(store.local_media("P1").await.unwrap().unwrap().sha256.as_deref(), Some("dddd"));
    assert!(!store.complete_pending_media(&upload("UNKNOWN", "eeee", "UNKNOWN")).await.unwrap());

    // A filled one no longer counts; an expired one neither.
    assert!(store.create_pending_media("P3", ALICE, 1500, 2500, false, 2).await.unwrap());
    assert!(!store.create_pending_media("P4", ALICE, 1600, 2600, false, 2).await.unwrap());
    assert!(store.create_pending_media("P4", ALICE, 2100, 3100, false, 2).await.unwrap());

    // Expired reservations are forgotten; uploads stay.
    assert_eq!(store.delete_expired_pending_media(2100).await.unwrap(), 1);
    assert_eq!(store.local_media("P2").await.unwrap(), None);
    assert!(store.local_media("P1").await.unwrap().is_some());
    assert!(store.local_media("P3").await.unwrap().is_some());
});

store_test!(thumbnails_are_recorded_per_media, |store| async move {
    create_alice(&store).await;
    store.insert_local_media(&upload("IMG", "ffff", "IMG")).await.unwrap();
    assert!(store.local_thumbnails("IMG").await.unwrap().is_empty());
    let thumbnail = |width, height, method: &str, size| ThumbnailRecord {
        width,
        height,
        method: method.to_owned(),
        content_type: "image/png".to_owned(),
        size,
    };
    store.insert_local_thumbnail("IMG", &thumbnail(96, 96, "crop", 10)).await.unwrap();
    store.insert_local_thumbnail("IMG", &thumbnail(32, 32, "crop", 5)).await.unwrap();
    // The same thumbnail again replaces its record.
    store.insert_local_thumbnail("IMG", &thumbnail(96, 96, "crop", 12)).await.unwrap();
    assert_eq!(
        store.local_thumbnails("IMG").await.unwrap(),
        vec![thumbnail(32, 32, "crop", 5), thumbnail(96, 96, "crop", 12)]
    );
    assert!(store.local_thumbnails("OTHER").await.unwrap().is_empty());
});
