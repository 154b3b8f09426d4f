//! Application services' transaction queue on SQLite and PostgreSQL: stream positions
//! started once and moved (never backwards) with the transaction that carries what was read;
//! and the batched reads of the receipt, to-device and key streams the transactions follow.

use std::collections::BTreeMap;

use myelin_store::appservice::{AppserviceStreams, NewAppserviceTxn};
use myelin_store::{KeysUploadRecord, NewToDeviceMessages, OneTimeKeyRecord, ReceiptRecord};
use myelin_test_support::store_test;

const ALICE: &str = "@alice:test.local";
const BOB: &str = "@bob:test.local";

fn streams(n: i64) -> AppserviceStreams {
    AppserviceStreams { events: n, receipts: n + 1, presence: n + 2, to_device: n + 3, device_lists: n + 4 }
}

store_test!(appservice_positions_start_once_and_move_with_their_transaction, |store| async move {
    // First seen: every stream starts at the given positions; later starts change nothing.
    assert_eq!(store.appservice_positions("bridge", streams(10)).await.unwrap(), streams(10));
    assert_eq!(store.appservice_positions("bridge", streams(50)).await.unwrap(), streams(10));
    assert_eq!(store.oldest_appservice_txn("bridge").await.unwrap(), None);
    // A transaction and its positions, in one write.
    let txn = NewAppserviceTxn {
        event_ids: r#"["$a"]"#,
        ephemeral: r#"[{"type":"m.presence"}]"#,
        to_device: r#"[{"type":"m.test"}]"#,
        device_lists: Some(r#"{"changed":["@a:x"],"left":[]}"#),
    };
    assert_eq!(store.create_appservice_txn("bridge", streams(20), Some(txn)).await.unwrap(), Some(1));
    assert_eq!(store.appservice_positions("bridge", streams(0)).await.unwrap(), streams(20));
    let stored = store.oldest_appservice_txn("bridge").await.unwrap().unwrap();
    assert_eq!(stored.txn_id, 1);
    assert_eq!(stored.event_ids, r#"["$a"]"#);
    assert_eq!(stored.ephemeral, r#"[{"type":"m.presence"}]"#);
    assert_eq!(stored.to_device, r#"[{"type":"m.test"}]"#);
    assert_eq!(stored.device_lists.as_deref(), Some(r#"{"changed":["@a:x"],"left":[]}"#));
    // Positions alone (nothing to send), never backwards; per stream.
    let mixed = AppserviceStreams { events: 30, receipts: 5, presence: 40, to_device: 1, device_lists: 99 };
    assert_eq!(store.create_appservice_txn("bridge", mixed, None).await.unwrap(), None);
    let now = store.appservice_positions("bridge", streams(0)).await.unwrap();
    assert_eq!(
        now,
        AppserviceStreams { events: 30, receipts: 21, presence: 40, to_device: 23, device_lists: 99 }
    );
    // The next transaction takes the next ID; an empty to-device list and no device lists.
    let txn = NewAppserviceTxn { event_ids: "[]", ephemeral: "[]", to_device: "[]", device_lists: None };
    assert_eq!(store.create_appservice_txn("bridge", now, Some(txn)).await.unwrap(), Some(2));
    store.delete_appservice_txn("bridge", 1).await.unwrap();
    let next = store.oldest_appservice_txn("bridge").await.unwrap().unwrap();
    assert_eq!((next.txn_id, next.to_device.as_str(), next.device_lists), (2, "[]", None));
    // Another appservice has its own row.
    assert_eq!(store.appservice_positions("other", streams(7)).await.unwrap(), streams(7));
});

store_test!(appservice_stream_reads_cover_every_room_and_device_in_pages, |store| async move {
    // Receipts: read ones of every room in stream order, private ones too, others not.
    for (i, (room, kind)) in
        [("!a:x", "m.read"), ("!b:x", "m.read.private"), ("!a:x", "m.fully_read"), ("!c:x", "m.read")]
            .into_iter()
            .enumerate()
    {
        let receipt = ReceiptRecord {
            room_id: room.to_owned(),
            receipt_type: kind.to_owned(),
            user_id: ALICE.to_owned(),
            thread_id: String::new(),
            event_id: format!("$e{i}"),
            event_stream: 1,
            ts: 1000,
            stream_id: i as i64 + 1,
        };
        store.upsert_receipt(&receipt).await.unwrap();
    }
    let read = store.read_receipts_in_range(0, 4, 10).await.unwrap();
    let seen: Vec<(&str, &str, i64)> =
        read.iter().map(|r| (r.room_id.as_str(), r.receipt_type.as_str(), r.stream_id)).collect();
    assert_eq!(seen, [("!a:x", "m.read", 1), ("!b:x", "m.read.private", 2), ("!c:x", "m.read", 4)]);
    assert_eq!(store.read_receipts_in_range(1, 3, 10).await.unwrap().len(), 1, "(since, upto]");
    assert_eq!(store.read_receipts_in_range(0, 4, 1).await.unwrap().len(), 1, "limited");

    // To-device: a page ends on a whole position, whatever its number of recipients.
    for device in ["PHONE", "LAPTOP"] {
        store.upsert_device(BOB, device, None).await.unwrap();
    }
    store.upsert_device(ALICE, "ADEV", None).await.unwrap();
    for (n, txn) in ["t1", "t2", "t3"].iter().enumerate() {
        let mut messages: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        messages.entry(BOB.to_owned()).or_default().insert("*".to_owned(), format!("{{\"n\":{n}}}"));
        let batch = NewToDeviceMessages {
            sender: ALICE,
            sender_device: "ADEV",
            txn_id: txn,
            kind: "m.test",
            messages: &messages,
            stream_id: n as i64 + 1,
        };
        store.add_to_device_messages(&batch).await.unwrap();
    }
    let (page, reached) = store.to_device_messages_in_range(0, 3, 2).await.unwrap();
    assert_eq!(reached, 2, "two positions");
    let rows: Vec<(String, String, i64)> = page.into_iter().map(|(u, d, m)| (u, d, m.stream_id)).collect();
    assert_eq!(
        rows,
        [
            (BOB.to_owned(), "LAPTOP".to_owned(), 1),
            (BOB.to_owned(), "PHONE".to_owned(), 1),
            (BOB.to_owned(), "LAPTOP".to_owned(), 2),
            (BOB.to_owned(), "PHONE".to_owned(), 2)
        ]
    );
    let (rest, reached) = store.to_device_messages_in_range(2, 3, 2).await.unwrap();
    assert_eq!((rest.len(), reached), (2, 3), "the last page reaches `upto`");
    let (none, reached) = store.to_device_messages_in_range(3, 10, 2).await.unwrap();
    assert_eq!((none.len(), reached), (0, 10));
    // Reading leaves them in the inboxes.
    assert_eq!(store.to_device_messages(BOB, "PHONE", 0, 10, 10).await.unwrap().len(), 3);

    // Key counts of several users' devices at once, devices without keys included.
    let otk = |id: &str| OneTimeKeyRecord {
        algorithm: "signed_curve25519".to_owned(),
        key_id: id.to_owned(),
        key_json: "{}".to_owned(),
    };
    let keys = [otk("A"), otk("B")];
    let fallback = [OneTimeKeyRecord {
        algorithm: "curve25519".to_owned(),
        key_id: "F".to_owned(),
        key_json: "{}".to_owned(),
    }];
    let upload =
        KeysUploadRecord { one_time_keys: &keys, fallback_keys: &fallback, ..KeysUploadRecord::default() };
    store.upload_keys(BOB, "PHONE", upload).await.unwrap();
    let counts = store.key_counts_of_users(&[ALICE, BOB, "@nobody:x"]).await.unwrap();
    type Summary<'a> = (&'a str, &'a str, Vec<(&'a str, i64)>, Vec<&'a str>);
    let summary: Vec<Summary> = counts
        .iter()
        .map(|d| {
            (
                d.user_id.as_str(),
                d.device_id.as_str(),
                d.one_time_keys.iter().map(|(a, n)| (a.as_str(), *n)).collect(),
                d.unused_fallback_keys.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (ALICE, "ADEV", vec![], vec![]),
            (BOB, "LAPTOP", vec![], vec![]),
            (BOB, "PHONE", vec![("signed_curve25519", 2)], vec!["curve25519"]),
        ]
    );
});
