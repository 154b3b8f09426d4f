//! To-device inboxes on SQLite and PostgreSQL: queued per existing device (`*` fans out),
//! read in order with a limit, acknowledged, idempotent per transaction ID, dropped with the
//! device, and the stream's high-water mark kept after every inbox empties.

use std::collections::{BTreeMap, BTreeSet};

use myelin_store::{NewToDeviceMessages, Store};
use myelin_test_support::store_test;

const ALICE: &str = "@alice:test.local";
const BOB: &str = "@bob:test.local";

fn messages(entries: &[(&str, &str, &str)]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (user, device, content) in entries {
        out.entry(user.to_string()).or_default().insert(device.to_string(), content.to_string());
    }
    out
}

async fn add(
    store: &Store,
    txn_id: &str,
    stream_id: i64,
    entries: &[(&str, &str, &str)],
) -> Option<BTreeSet<String>> {
    let messages = messages(entries);
    let batch = NewToDeviceMessages {
        sender: ALICE,
        sender_device: "ADEV",
        txn_id,
        kind: "m.test",
        messages: &messages,
        stream_id,
    };
    store.add_to_device_messages(&batch).await.expect("add to-device messages")
}

async fn contents(store: &Store, device: &str, since: i64, limit: i64) -> Vec<(i64, String)> {
    store
        .to_device_messages(BOB, device, since, i64::MAX, limit)
        .await
        .expect("read inbox")
        .into_iter()
        .map(|m| {
            assert_eq!((m.sender.as_str(), m.kind.as_str()), (ALICE, "m.test"));
            (m.stream_id, m.content)
        })
        .collect()
}

store_test!(to_device_inboxes_queue_ack_and_drop, |store| async move {
    for device in ["PHONE", "LAPTOP"] {
        store.upsert_device(BOB, device, None).await.unwrap();
    }
    assert_eq!(store.max_to_device_position().await.unwrap(), 0);

    // `*` reaches both devices; a named device gets its own content; unknown ones nothing.
    let reached =
        add(&store, "t1", 1, &[(BOB, "*", "{\"n\":1}"), (BOB, "PHONE", "{\"n\":2}"), (BOB, "NOPE", "{}")])
            .await;
    assert_eq!(reached, Some(BTreeSet::from([BOB.to_owned()])));
    let reached = add(&store, "t2", 2, &[("@nobody:test.local", "*", "{}")]).await;
    assert_eq!(reached, Some(BTreeSet::new()), "an unknown user is ignored");
    assert_eq!(add(&store, "t1", 3, &[(BOB, "*", "{\"n\":9}")]).await, None, "a used transaction ID");
    add(&store, "t4", 4, &[(BOB, "PHONE", "{\"n\":4}")]).await.unwrap();

    assert_eq!(
        contents(&store, "PHONE", 0, 100).await,
        vec![(1, "{\"n\":2}".into()), (4, "{\"n\":4}".into())]
    );
    assert_eq!(contents(&store, "LAPTOP", 0, 100).await, vec![(1, "{\"n\":1}".into())]);
    assert_eq!(contents(&store, "PHONE", 0, 1).await, vec![(1, "{\"n\":2}".into())], "the limit");
    assert_eq!(contents(&store, "PHONE", 1, 100).await, vec![(4, "{\"n\":4}".into())]);
    assert_eq!(
        store.to_device_messages(BOB, "PHONE", 0, 3, 100).await.unwrap().len(),
        1,
        "nothing after `upto`"
    );

    // Acknowledging deletes up to the position, on that device only.
    assert_eq!(store.ack_to_device_messages(BOB, "PHONE", 1).await.unwrap(), 1);
    assert_eq!(contents(&store, "PHONE", 0, 100).await, vec![(4, "{\"n\":4}".into())]);
    assert_eq!(contents(&store, "LAPTOP", 0, 100).await.len(), 1);

    // Deleting a device drops its inbox; the position stays at its high-water mark.
    store.delete_devices(BOB, &["PHONE".to_owned(), "LAPTOP".to_owned()], 1).await.unwrap();
    assert!(contents(&store, "PHONE", 0, 100).await.is_empty());
    assert!(contents(&store, "LAPTOP", 0, 100).await.is_empty());
    assert_eq!(store.max_to_device_position().await.unwrap(), 4);
});
