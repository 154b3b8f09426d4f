//! Local media records on SQLite and PostgreSQL: uploads, reserved IDs filled once, the limit
//! on reserved IDs, content found by hash, expiry, and thumbnails.

use myelin_store::{DeletedMedia, NewLocalMedia, OldMediaQuery, ThumbnailRecord};
use myelin_test_support::store_test;

use crate::{ALICE, create_alice};

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

fn upload_at(media_id: &str, sha256: &str, file_id: &str, created_ts: i64, size: u64) -> NewLocalMedia {
    NewLocalMedia { created_ts, size, ..upload(media_id, sha256, file_id) }
}

fn ids(records: &[myelin_store::LocalMediaRecord]) -> Vec<&str> {
    records.iter().map(|m| m.media_id.as_str()).collect()
}

store_test!(quarantine_protection_and_paged_listing, |store| async move {
    create_alice(&store).await;
    store.insert_local_media(&upload_at("ONE", "aaaa", "ONE", 1000, 5)).await.unwrap();
    // Same bytes as ONE: quarantined with it.
    store.insert_local_media(&upload_at("TWO", "aaaa", "ONE", 2000, 5)).await.unwrap();
    store.insert_local_media(&upload_at("THREE", "bbbb", "THREE", 3000, 5)).await.unwrap();

    assert_eq!(store.set_local_media_quarantine("ONE", Some("@admin:test.local")).await.unwrap(), 2);
    for id in ["ONE", "TWO"] {
        let record = store.local_media(id).await.unwrap().unwrap();
        assert_eq!(record.quarantined_by.as_deref(), Some("@admin:test.local"), "{id}");
    }
    assert_eq!(store.local_media("THREE").await.unwrap().unwrap().quarantined_by, None);
    // Released one by one.
    assert_eq!(store.set_local_media_quarantine("ONE", None).await.unwrap(), 1);
    assert_eq!(store.set_local_media_quarantine("ONE", None).await.unwrap(), 0);
    assert_eq!(store.local_media("ONE").await.unwrap().unwrap().quarantined_by, None);
    assert!(store.local_media("TWO").await.unwrap().unwrap().quarantined_by.is_some());
    assert_eq!(store.set_local_media_quarantine("NOPE", Some("@a:test.local")).await.unwrap(), 0);

    // Protected media is never quarantined, alone or with the user's media.
    assert!(store.set_local_media_protected("THREE", true).await.unwrap());
    assert!(!store.set_local_media_protected("NOPE", true).await.unwrap());
    assert!(store.local_media("THREE").await.unwrap().unwrap().safe_from_quarantine);
    assert_eq!(store.set_local_media_quarantine("THREE", Some("@a:test.local")).await.unwrap(), 0);
    assert_eq!(store.quarantine_local_media_of_user(ALICE, "@a:test.local").await.unwrap(), 1);
    assert!(store.local_media("ONE").await.unwrap().unwrap().quarantined_by.is_some());
    assert_eq!(store.local_media("THREE").await.unwrap().unwrap().quarantined_by, None);
    assert!(store.set_local_media_protected("THREE", false).await.unwrap());
    assert_eq!(store.quarantine_local_media_of_user(ALICE, "@a:test.local").await.unwrap(), 1);

    // Pages, oldest first, with the total.
    let (page, total) = store.local_media_of_user_page(ALICE, 0, 2).await.unwrap();
    assert_eq!((ids(&page), total), (vec!["ONE", "TWO"], 3));
    let (page, total) = store.local_media_of_user_page(ALICE, 2, 2).await.unwrap();
    assert_eq!((ids(&page), total), (vec!["THREE"], 3));
    let (page, total) = store.local_media_of_user_page(ALICE, 5, 2).await.unwrap();
    assert_eq!((page.len(), total), (0, 3));
    let (page, total) = store.local_media_of_user_page("@bob:test.local", 0, 10).await.unwrap();
    assert_eq!((page.len(), total), (0, 0));
});

store_test!(old_media_is_listed_and_files_go_with_their_last_record, |store| async move {
    create_alice(&store).await;
    store.insert_local_media(&upload_at("OLD", "aaaa", "OLD", 1000, 10)).await.unwrap();
    store.insert_local_media(&upload_at("COPY", "aaaa", "OLD", 1500, 10)).await.unwrap();
    store.insert_local_media(&upload_at("READ", "bbbb", "READ", 1000, 10)).await.unwrap();
    store.insert_local_media(&upload_at("BIG", "cccc", "BIG", 1000, 1000)).await.unwrap();
    store.insert_local_media(&upload_at("NEW", "dddd", "NEW", 9000, 10)).await.unwrap();
    store.insert_local_media(&upload_at("QUAR", "eeee", "QUAR", 1000, 10)).await.unwrap();
    store.insert_local_media(&upload_at("SAFE", "ffff", "SAFE", 1000, 10)).await.unwrap();
    store.insert_local_media(&upload_at("AVATAR", "gggg", "AVATAR", 1000, 10)).await.unwrap();
    store.create_pending_media("PENDING", ALICE, 1000, 2000, true, 5).await.unwrap();
    store.set_local_media_quarantine("QUAR", Some("@a:test.local")).await.unwrap();
    store.set_local_media_protected("SAFE", true).await.unwrap();
    // Read recently (batched accesses never move a time backwards).
    store.touch_local_media_batch(&["READ".to_owned(), "NOPE".to_owned()], 8000).await.unwrap();
    store.touch_local_media_batch(&["READ".to_owned()], 7000).await.unwrap();
    assert_eq!(store.local_media("READ").await.unwrap().unwrap().last_access_ts, Some(8000));
    store.touch_local_media_batch(&[], 7000).await.unwrap();
    store
        .set_profile_field(ALICE, "avatar_url", Some(&serde_json::json!("mxc://test.local/AVATAR")))
        .await
        .unwrap();

    let query = |size_gt, include_quarantined, include_protected, keep: bool| OldMediaQuery {
        before_ts: 5000,
        size_gt,
        include_quarantined,
        include_protected,
        keep_avatars_with_prefix: keep.then(|| "mxc://test.local/".to_owned()),
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(store.old_local_media(&query(0, false, false, false), 100).await.unwrap()),
        ["AVATAR", "BIG", "COPY", "OLD"]
    );
    assert_eq!(
        sorted(store.old_local_media(&query(0, true, true, true), 100).await.unwrap()),
        ["BIG", "COPY", "OLD", "QUAR", "SAFE"]
    );
    assert_eq!(store.old_local_media(&query(100, false, false, false), 100).await.unwrap(), ["BIG"]);
    assert_eq!(store.old_local_media(&query(0, false, false, false), 1).await.unwrap().len(), 1);

    // Deleting OLD keeps its file (COPY names it); deleting COPY then lets the file go.
    store
        .insert_local_thumbnail(
            "OLD",
            &ThumbnailRecord {
                width: 32,
                height: 32,
                method: "crop".to_owned(),
                content_type: "image/png".to_owned(),
                size: 3,
            },
        )
        .await
        .unwrap();
    let deleted = store.delete_local_media(&["OLD".to_owned(), "NOPE".to_owned()]).await.unwrap();
    assert_eq!(deleted, [DeletedMedia { media_id: "OLD".to_owned(), file_id: None }]);
    assert_eq!(store.local_media("OLD").await.unwrap(), None);
    assert!(store.local_thumbnails("OLD").await.unwrap().is_empty());
    let deleted = store.delete_local_media(&["COPY".to_owned(), "PENDING".to_owned()]).await.unwrap();
    assert_eq!(
        deleted,
        [
            DeletedMedia { media_id: "COPY".to_owned(), file_id: Some("OLD".to_owned()) },
            DeletedMedia { media_id: "PENDING".to_owned(), file_id: None },
        ]
    );
    // Both records of one file deleted together: the file goes once.
    store.insert_local_media(&upload_at("A1", "hhhh", "A1", 1000, 10)).await.unwrap();
    store.insert_local_media(&upload_at("A2", "hhhh", "A1", 1000, 10)).await.unwrap();
    let deleted = store.delete_local_media(&["A1".to_owned(), "A2".to_owned()]).await.unwrap();
    let files: Vec<_> = deleted.iter().filter_map(|m| m.file_id.as_deref()).collect();
    assert_eq!(files, ["A1"]);
});

fn remote(origin: &str, media_id: &str, last_access_ts: i64) -> myelin_store::RemoteMediaRecord {
    myelin_store::RemoteMediaRecord {
        media_origin: origin.to_owned(),
        media_id: media_id.to_owned(),
        content_type: Some("image/png".to_owned()),
        upload_name: None,
        size: 7,
        sha256: "abcd".to_owned(),
        file_id: format!("file{media_id}"),
        created_ts: last_access_ts,
        last_access_ts,
        quarantined_by: None,
        authenticated: true,
    }
}

store_test!(remote_media_is_cached_once_quarantined_touched_and_purged, |store| async move {
    assert_eq!(store.remote_media("a.test", "M1").await.unwrap(), None);
    assert!(store.insert_remote_media(&remote("a.test", "M1", 1000)).await.unwrap());
    // A second download of the same media loses: the first record stays.
    let mut late = remote("a.test", "M1", 1500);
    late.file_id = "other".to_owned();
    assert!(!store.insert_remote_media(&late).await.unwrap());
    assert_eq!(store.remote_media("a.test", "M1").await.unwrap(), Some(remote("a.test", "M1", 1000)));
    // The same ID on another server is another media.
    assert!(store.insert_remote_media(&remote("b.test", "M1", 1000)).await.unwrap());
    assert!(store.insert_remote_media(&remote("a.test", "M2", 1000)).await.unwrap());
    let thumbnail = ThumbnailRecord {
        width: 32,
        height: 32,
        method: "crop".to_owned(),
        content_type: "image/png".to_owned(),
        size: 3,
    };
    store.insert_remote_thumbnail("a.test", "M1", &thumbnail).await.unwrap();
    assert_eq!(store.remote_thumbnails("a.test", "M1").await.unwrap(), vec![thumbnail.clone()]);
    assert!(store.remote_thumbnails("b.test", "M1").await.unwrap().is_empty());

    // Reads move the last-access time forwards only.
    store.touch_remote_media_batch(&[("a.test".to_owned(), "M2".to_owned())], 5000).await.unwrap();
    store.touch_remote_media_batch(&[("a.test".to_owned(), "M2".to_owned())], 4000).await.unwrap();
    assert_eq!(store.remote_media("a.test", "M2").await.unwrap().unwrap().last_access_ts, 5000);
    assert_eq!(store.set_remote_media_quarantine("b.test", "M1", Some("@admin:x")).await.unwrap(), 1);
    assert_eq!(store.set_remote_media_quarantine("b.test", "nope", Some("@admin:x")).await.unwrap(), 0);

    // The purge: not read since 2000 and not quarantined.
    let deleted = store.delete_old_remote_media(2000).await.unwrap();
    assert_eq!(
        deleted,
        vec![myelin_store::DeletedRemoteMedia {
            media_origin: "a.test".to_owned(),
            media_id: "M1".to_owned(),
            file_id: "fileM1".to_owned(),
        }]
    );
    assert_eq!(store.remote_media("a.test", "M1").await.unwrap(), None);
    assert!(store.remote_thumbnails("a.test", "M1").await.unwrap().is_empty());
    assert!(store.remote_media("b.test", "M1").await.unwrap().is_some(), "quarantined media stays");
    assert!(store.remote_media("a.test", "M2").await.unwrap().is_some(), "read recently");
    // Released from quarantine, it goes with the next purge.
    store.set_remote_media_quarantine("b.test", "M1", None).await.unwrap();
    assert_eq!(store.delete_old_remote_media(2000).await.unwrap().len(), 1);
});
