//! The outbound federation queue on SQLite and PostgreSQL: batches in stream order within the
//! transaction limits, a batch in flight kept (same ID, same rows) until it is finished, EDUs
//! with a key replaced while waiting, backoff rows, and sending leases that expire.

use myelin_store::federation_queue::QueuedPdu;
use myelin_test_support::store_test;

const B: &str = "b.test:8448";
const C: &str = "c.test";

fn pdu(destination: &str, n: i64) -> QueuedPdu {
    QueuedPdu { destination: destination.to_owned(), event_id: format!("$e{n}"), stream_ordering: n }
}

store_test!(federation_batches_keep_stream_order_and_stay_in_flight_until_finished, |store| async move {
    assert_eq!(store.next_federation_batch(B, 50, 100, 1).await.unwrap(), None);
    // Queued out of order and twice: sent in stream order, once.
    let mut pdus: Vec<QueuedPdu> = (1..=7).rev().map(|n| pdu(B, n)).collect();
    pdus.push(pdu(B, 3));
    pdus.push(pdu(C, 1));
    store.queue_pdus(&pdus).await.unwrap();
    assert_eq!(store.federation_queue_len(B).await.unwrap(), (7, 0));

    let first = store.next_federation_batch(B, 5, 100, 1000).await.unwrap().unwrap();
    assert_eq!(first.pdus, ["$e1", "$e2", "$e3", "$e4", "$e5"]);
    assert!(first.edus.is_empty());
    // Not finished: the same transaction again, even with more queued meanwhile.
    store.queue_pdus(&[pdu(B, 8)]).await.unwrap();
    let again = store.next_federation_batch(B, 5, 100, 2000).await.unwrap().unwrap();
    assert_eq!(again, first);

    store.finish_federation_batch(B, &first.txn_id, 3000).await.unwrap();
    let second = store.next_federation_batch(B, 5, 100, 4000).await.unwrap().unwrap();
    assert_eq!(second.pdus, ["$e6", "$e7", "$e8"]);
    assert_ne!(second.txn_id, first.txn_id);
    store.finish_federation_batch(B, &second.txn_id, 5000).await.unwrap();
    assert_eq!(store.next_federation_batch(B, 5, 100, 6000).await.unwrap(), None);
    // The other destination's row is untouched.
    assert_eq!(store.federation_queue_len(C).await.unwrap(), (1, 0));
});

store_test!(federation_edus_with_a_key_replace_the_waiting_one, |store| async move {
    store.queue_edu(B, "m.typing", r#"{"typing":true}"#, Some("!r|@u:a")).await.unwrap();
    store.queue_edu(B, "m.receipt", r#"{"n":1}"#, None).await.unwrap();
    store.queue_edu(B, "m.typing", r#"{"typing":false}"#, Some("!r|@u:a")).await.unwrap();
    store.queue_edu(B, "m.receipt", r#"{"n":2}"#, None).await.unwrap();
    let batch = store.next_federation_batch(B, 50, 100, 1).await.unwrap().unwrap();
    assert_eq!(
        batch.edus,
        [
            ("m.receipt".to_owned(), r#"{"n":1}"#.to_owned()),
            ("m.typing".to_owned(), r#"{"typing":false}"#.to_owned()),
            ("m.receipt".to_owned(), r#"{"n":2}"#.to_owned()),
        ]
    );
    // An EDU in flight is not replaced: the retried transaction stays what it was.
    store.queue_edu(B, "m.typing", r#"{"typing":true}"#, Some("!r|@u:a")).await.unwrap();
    assert_eq!(store.next_federation_batch(B, 50, 100, 2).await.unwrap().unwrap(), batch);
    store.finish_federation_batch(B, &batch.txn_id, 3).await.unwrap();
    let next = store.next_federation_batch(B, 50, 100, 4).await.unwrap().unwrap();
    assert_eq!(next.edus, [("m.typing".to_owned(), r#"{"typing":true}"#.to_owned())]);
});

store_test!(federation_destinations_back_off_and_recover, |store| async move {
    store.queue_pdus(&[pdu(B, 1)]).await.unwrap();
    assert_eq!(store.federation_destinations_with_work().await.unwrap(), [(B.to_owned(), 0)]);
    store.record_destination_failure(B, 1000, 600).await.unwrap();
    store.record_destination_failure(B, 2000, 1200).await.unwrap();
    let record = store.federation_destination(B).await.unwrap().unwrap();
    assert_eq!((record.retry_last_ts, record.retry_interval, record.failure_ts), (2000, 1200, Some(1000)));
    assert_eq!(store.federation_destinations_with_work().await.unwrap(), [(B.to_owned(), 3200)]);
    let batch = store.next_federation_batch(B, 50, 100, 3300).await.unwrap().unwrap();
    store.finish_federation_batch(B, &batch.txn_id, 3400).await.unwrap();
    let record = store.federation_destination(B).await.unwrap().unwrap();
    assert_eq!(
        (record.retry_last_ts, record.retry_interval, record.failure_ts, record.last_success_ts),
        (0, 0, None, Some(3400))
    );
    assert!(store.federation_destinations_with_work().await.unwrap().is_empty());
    assert_eq!(store.federation_destinations().await.unwrap(), [record]);
});

store_test!(federation_sender_leases_are_exclusive_until_they_expire, |store| async move {
    assert!(store.acquire_sender_lease(B, "one", 1000, 2000).await.unwrap());
    assert!(!store.acquire_sender_lease(B, "two", 1500, 2500).await.unwrap());
    // The holder renews; another destination is free.
    assert!(store.acquire_sender_lease(B, "one", 1800, 2800).await.unwrap());
    assert!(store.acquire_sender_lease(C, "two", 1800, 2800).await.unwrap());
    // A holder that stops renewing (it crashed) loses the lease once it expires.
    assert!(!store.acquire_sender_lease(B, "two", 2700, 3700).await.unwrap());
    assert!(store.acquire_sender_lease(B, "two", 2900, 3900).await.unwrap());
    // Released by its holder only.
    store.release_sender_lease(B, "one").await.unwrap();
    assert!(!store.acquire_sender_lease(B, "one", 3000, 4000).await.unwrap());
    store.release_sender_lease(B, "two").await.unwrap();
    assert!(store.acquire_sender_lease(B, "one", 3000, 4000).await.unwrap());
});

store_test!(answered_inbound_transactions_are_kept_until_pruned, |store| async move {
    store.record_inbound_transaction("a.test", "t1", "{}").await.unwrap();
    assert_eq!(store.inbound_transaction_response("a.test", "t1").await.unwrap().as_deref(), Some("{}"));
    // Received after the cut-off: kept.
    assert_eq!(store.prune_inbound_transactions(0).await.unwrap(), 0);
    assert!(store.inbound_transaction_response("a.test", "t1").await.unwrap().is_some());
    let later = i64::MAX;
    assert_eq!(store.prune_inbound_transactions(later).await.unwrap(), 1);
    assert_eq!(store.inbound_transaction_response("a.test", "t1").await.unwrap(), None);
});
