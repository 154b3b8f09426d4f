//! The durable outbound federation queue, against recording peers
//! ([`myelin_test_support::federation_peer`]) that check each transaction's `X-Matrix`
//! signature with the sending server's real key: local events of a room with remote members
//! delivered once each, in order, in batches of at most 50; a destination down for a while
//! retried with the same transaction and then caught up; rows queued before a restart sent
//! after it; `federation_domain_whitelist`; two processes sharing one database sending each
//! transaction once.

use std::time::Duration;

use myelin_service::rooms::EventDraft;
use myelin_test_support::federation::{TestCertificates, federating_server};
use myelin_test_support::federation_peer::{FederationPeer, PeerAnswer, RecordedTransaction};
use myelin_test_support::server::database_yaml;
use myelin_test_support::{TestServer, TestUser};
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Fast retries for the tests (Synapse's are minutes).
fn fast_retry() -> Value {
    json!({"min_interval_ms": 200, "max_interval_ms": 400})
}

/// A public room of `alice` on `server` with `@bob:<peer>` joined for each peer.
pub(crate) async fn room_with_remote_members(
    server: &TestServer,
    peers: &[&FederationPeer],
) -> (TestUser, String) {
    let alice = server.register("alice").await;
    let created = alice.client.post("/_matrix/client/v3/createRoom", &json!({"preset": "public_chat"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    for peer in peers {
        peer.trust(server);
        let bob = UserId::parse(format!("@bob:{}", peer.server_name)).unwrap();
        server.services().test_join_remote_user(&RoomId::parse(&room_id).unwrap(), &bob).await.unwrap();
    }
    (alice, room_id)
}

async fn send_text(user: &TestUser, room_id: &str, body: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{body}");
    let sent = user.client.put(&path, &json!({"msgtype": "m.text", "body": body})).await;
    sent.expect(200)["event_id"].as_str().unwrap().to_owned()
}

/// The `body` of every message PDU of the accepted transactions, in the order received.
fn delivered_bodies(transactions: &[RecordedTransaction]) -> Vec<String> {
    transactions
        .iter()
        .filter(|t| t.accepted)
        .flat_map(|t| t.pdus())
        .filter(|pdu| pdu["type"] == "m.room.message")
        .map(|pdu| pdu["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (up to 30 s) until nothing is queued for `destination` on `server`: its rows go once
/// the destination's 200 has arrived, a moment after the peer recorded the transaction.
pub(crate) async fn queue_empties(server: &TestServer, destination: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let queued = server.services().store().federation_queue_len(destination).await.unwrap();
        if queued == (0, 0) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "still queued for {destination}: {queued:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn bodies(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[tokio::test]
async fn local_events_reach_remote_members_once_in_order_and_batched() {
    let certs = TestCertificates::new();
    let peer = FederationPeer::start("b.test", certs.path()).await;
    let a = federating_server("a.test", certs.path(), json!({})).await;
    let (alice, room_id) = room_with_remote_members(&a, &[&peer]).await;

    // 60 messages committed at once: one transaction of 50 PDUs, then one of 10.
    let drafts: Vec<EventDraft> = (1..=60)
        .map(|i| EventDraft::message("m.room.message", json!({"msgtype": "m.text", "body": format!("m{i}")})))
        .collect();
    let room = RoomId::parse(&room_id).unwrap();
    let alice_id = UserId::parse(&alice.user_id).unwrap();
    a.services().send_events_in_one_commit(&room, &alice_id, drafts).await.unwrap();
    peer.wait_until(WAIT, |t| delivered_bodies(t).len() >= 60).await;
    let transactions = peer.transactions();
    let sizes: Vec<usize> = transactions.iter().map(|t| t.pdus().len()).collect();
    assert_eq!(sizes, [50, 10]);
    for transaction in &transactions {
        assert_eq!(transaction.origin, a.server_name);
        assert_eq!(transaction.body["origin"], a.server_name.as_str());
        assert!(transaction.body["origin_server_ts"].is_u64());
        assert_eq!(transaction.edus(), Vec::<Value>::new());
        for pdu in transaction.pdus() {
            assert_eq!(pdu["sender"], alice.user_id.as_str());
            assert_eq!(pdu["room_id"], room_id.as_str());
            assert!(pdu["signatures"][a.server_name.as_str()].is_object(), "{pdu}");
        }
    }
    assert_ne!(transactions[0].txn_id, transactions[1].txn_id);

    // Sends one by one follow, in order; an EDU queued for the peer goes too.
    for i in 61..=65 {
        send_text(&alice, &room_id, &format!("m{i}")).await;
    }
    let typing = json!({"room_id": room_id, "user_id": alice.user_id, "typing": true});
    a.services().queue_edu(&peer.server_name, "m.typing", &typing, Some("typing")).await.unwrap();
    peer.wait_until(WAIT, |t| delivered_bodies(t).len() >= 65 && t.iter().any(|t| !t.edus().is_empty()))
        .await;
    let transactions = peer.transactions();
    assert_eq!(delivered_bodies(&transactions), bodies(1..=65), "each event once, in order");
    let edus: Vec<Value> = transactions.iter().flat_map(|t| t.edus()).collect();
    assert_eq!(edus, [json!({"edu_type": "m.typing", "content": typing})]);
    let txn_ids: std::collections::HashSet<&str> = transactions.iter().map(|t| t.txn_id.as_str()).collect();
    assert_eq!(txn_ids.len(), transactions.len(), "transaction IDs are unique");
    assert_eq!(peer.bad_signatures(), 0);
    queue_empties(&a, &peer.server_name).await;
}

#[tokio::test]
async fn a_destination_down_for_a_while_gets_the_same_transaction_then_everything_once() {
    let certs = TestCertificates::new();
    let peer = FederationPeer::start("b.test", certs.path()).await;
    peer.answer(PeerAnswer::Fail);
    let a = federating_server("a.test", certs.path(), json!({"myelin_federation_retry": fast_retry()})).await;
    let (alice, room_id) = room_with_remote_members(&a, &[&peer]).await;

    for i in 1..=3 {
        send_text(&alice, &room_id, &format!("m{i}")).await;
    }
    // Refused twice or more: retried after the backoff, each time the same transaction.
    peer.wait_until(WAIT, |t| t.len() >= 2).await;
    let failed = peer.transactions();
    assert!(failed.iter().all(|t| !t.accepted));
    assert!(failed.iter().all(|t| t.txn_id == failed[0].txn_id && t.body["pdus"] == failed[0].body["pdus"]));
    let record = a.services().store().federation_destination(&peer.server_name).await.unwrap().unwrap();
    assert!(record.failure_ts.is_some() && record.retry_interval >= 200, "{record:?}");

    // Sent while it is down: queued behind the transaction in flight.
    for i in 4..=5 {
        send_text(&alice, &room_id, &format!("m{i}")).await;
    }
    peer.answer(PeerAnswer::Accept);
    peer.wait_until(WAIT, |t| delivered_bodies(t).len() >= 5).await;
    let transactions = peer.transactions();
    let accepted: Vec<&RecordedTransaction> = transactions.iter().filter(|t| t.accepted).collect();
    assert_eq!(accepted[0].txn_id, failed[0].txn_id, "the retried transaction keeps its ID");
    assert_eq!(delivered_bodies(&transactions), bodies(1..=5), "everything once, in order");
    queue_empties(&a, &peer.server_name).await;
    let record = a.services().store().federation_destination(&peer.server_name).await.unwrap().unwrap();
    assert_eq!((record.failure_ts, record.retry_interval), (None, 0), "the destination is up again");
    assert!(record.last_success_ts.is_some());
}

#[tokio::test]
async fn a_transaction_refused_with_4xx_is_dropped_and_sending_goes_on() {
    let certs = TestCertificates::new();
    let peer = FederationPeer::start("b.test", certs.path()).await;
    peer.answer(PeerAnswer::Refuse);
    let a = federating_server("a.test", certs.path(), json!({"myelin_federation_retry": fast_retry()})).await;
    let (alice, room_id) = room_with_remote_members(&a, &[&peer]).await;
    send_text(&alice, &room_id, "m1").await;
    peer.wait_until(WAIT, |t| !t.is_empty()).await;
    peer.answer(PeerAnswer::Accept);
    send_text(&alice, &room_id, "m2").await;
    peer.wait_until(WAIT, |t| delivered_bodies(t) == ["m2"]).await;
    let transactions = peer.transactions();
    assert_eq!(transactions.len(), 2, "the refused transaction is not retried: {transactions:#?}");
    queue_empties(&a, &peer.server_name).await;
    let record = a.services().store().federation_destination(&peer.server_name).await.unwrap().unwrap();
    assert_eq!(record.failure_ts, None, "a refusal is not a failure of the destination");
}

#[tokio::test]
async fn rows_queued_before_a_restart_are_sent_after_it() {
    let certs = TestCertificates::new();
    let peer = FederationPeer::start("b.test", certs.path()).await;
    // The first run does not send (`send_federation: false`): its rows wait in the queue.
    let mut a = federating_server("a.test", certs.path(), json!({"send_federation": false})).await;
    let (alice, room_id) = room_with_remote_members(&a, &[&peer]).await;
    for i in 1..=3 {
        send_text(&alice, &room_id, &format!("m{i}")).await;
    }
    let queued = a.services().store().federation_queue_len(&peer.server_name).await.unwrap();
    assert_eq!(queued, (3, 0), "queued in the transaction that persisted each event");

    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&a.config_path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("send_federation");
    std::fs::write(&a.config_path, config.to_string()).unwrap();
    a.restart().await;
    peer.wait_until(WAIT, |t| delivered_bodies(t).len() >= 3).await;
    assert_eq!(delivered_bodies(&peer.transactions()), bodies(1..=3));
    queue_empties(&a, &peer.server_name).await;
    assert_eq!(peer.transactions().len(), 1);
}

#[tokio::test]
async fn the_domain_whitelist_leaves_other_servers_out() {
    let certs = TestCertificates::new();
    let allowed = FederationPeer::start("b.test", certs.path()).await;
    let other = FederationPeer::start("c.test", certs.path()).await;
    let a = federating_server(
        "a.test",
        certs.path(),
        json!({"federation_domain_whitelist": [allowed.server_name.clone()]}),
    )
    .await;
    let (alice, room_id) = room_with_remote_members(&a, &[&allowed, &other]).await;
    for i in 1..=2 {
        send_text(&alice, &room_id, &format!("m{i}")).await;
    }
    let typing = json!({"room_id": room_id, "user_id": alice.user_id, "typing": true});
    a.services().queue_edu(&other.server_name, "m.typing", &typing, None).await.unwrap();
    allowed.wait_until(WAIT, |t| delivered_bodies(t).len() >= 2).await;
    assert_eq!(delivered_bodies(&allowed.transactions()), bodies(1..=2));
    // Nothing was ever queued for the other server, so nothing can reach it.
    queue_empties(&a, &other.server_name).await;
    assert!(other.transactions().is_empty());
}

#[tokio::test]
async fn a_membership_event_reaches_its_targets_server() {
    let certs = TestCertificates::new();
    let member = FederationPeer::start("b.test", certs.path()).await;
    let invited = FederationPeer::start("c.test", certs.path()).await;
    let a = federating_server("a.test", certs.path(), json!({})).await;
    invited.trust(&a);
    let (alice, room_id) = room_with_remote_members(&a, &[&member]).await;
    let carol = format!("@carol:{}", invited.server_name);
    let draft = EventDraft::state("m.room.member", &carol, json!({"membership": "invite"}));
    let room = RoomId::parse(&room_id).unwrap();
    let alice_id = UserId::parse(&alice.user_id).unwrap();
    a.services().send_event(&room, &alice_id, draft, None).await.unwrap();
    send_text(&alice, &room_id, "m1").await;
    member.wait_until(WAIT, |t| !delivered_bodies(t).is_empty()).await;
    invited.wait_until(WAIT, |t| t.iter().any(|t| t.accepted)).await;
    // The invited server gets the invite, not the room's messages: nobody there is joined.
    let to_invited: Vec<Value> = invited.accepted_pdus();
    assert_eq!(to_invited.len(), 1, "{to_invited:#?}");
    assert_eq!(to_invited[0]["state_key"], carol.as_str());
    let to_member: Vec<Value> = member.accepted_pdus();
    assert_eq!(to_member.len(), 2, "the invite and the message: {to_member:#?}");
    queue_empties(&a, &invited.server_name).await;
}

#[tokio::test]
async fn two_processes_sharing_a_database_send_each_transaction_once() {
    let certs = TestCertificates::new();
    let peer = FederationPeer::start("b.test", certs.path()).await;
    let first =
        federating_server("a.test", certs.path(), json!({"myelin_federation_retry": fast_retry()})).await;
    // The second process: the same server (name, key, database), its own plain listener.
    let config = &first.services().config;
    let second = TestServer::start_with(json!({
        "server_name": first.server_name,
        "signing_key_path": config.keys.signing_key_path,
        "database": database_yaml(&config.database),
        "federation_custom_ca_list": [certs.ca()],
        "myelin_dns_overrides": {"b.test": ["127.0.0.1"]},
        "ip_range_whitelist": ["127.0.0.1"],
        "trusted_key_servers": [],
        "myelin_federation_retry": fast_retry(),
    }))
    .await;
    assert_eq!(second.services().keys.key_id(), first.services().keys.key_id());
    let (alice, room_id) = room_with_remote_members(&first, &[&peer]).await;
    // Down at first: both processes see the destination due after each backoff and compete
    // for it; every attempt is the one transaction in flight.
    peer.answer(PeerAnswer::Fail);
    for i in 1..=10 {
        send_text(&alice, &room_id, &format!("m{i}")).await;
    }
    peer.wait_until(WAIT, |t| t.len() >= 4).await;
    peer.answer(PeerAnswer::Accept);
    for i in 11..=30 {
        send_text(&alice, &room_id, &format!("m{i}")).await;
    }
    peer.wait_until(WAIT, |t| delivered_bodies(t).len() >= 30).await;
    let all = peer.transactions();
    let failed: Vec<&RecordedTransaction> = all.iter().filter(|t| !t.accepted).collect();
    assert!(failed.iter().all(|t| t.txn_id == failed[0].txn_id), "one transaction in flight: {failed:#?}");
    let transactions: Vec<RecordedTransaction> = all.iter().filter(|t| t.accepted).cloned().collect();
    assert_eq!(delivered_bodies(&transactions), bodies(1..=30), "each event once, in order");
    let txn_ids: std::collections::HashSet<&str> = transactions.iter().map(|t| t.txn_id.as_str()).collect();
    assert_eq!(txn_ids.len(), transactions.len(), "each transaction sent once");
    second.stop().await;
}
