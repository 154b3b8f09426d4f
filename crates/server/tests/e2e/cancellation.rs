//! Cancellation: clients that hang up at any point never freeze the streams, and nothing a
//! client was told succeeded is lost.

use std::collections::HashSet;
use std::time::Duration;

use myelin_service::auth::ClientInfo;
use myelin_service::rooms::create::CreateRoomRequest;
use myelin_test_support::cancel::{assert_streams_settle, cancel_at_every_await, hang_up_after};
use myelin_test_support::{TestServer, TestUser};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

use crate::rooms::{create_room, send_text};

async fn sync(user: &TestUser, since: Option<&str>, timeout_ms: u64) -> Value {
    let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    user.client.get(&path).await.expect(200).clone()
}

fn timeline_bodies(sync: &Value, room_id: &str) -> Vec<String> {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// After whatever was abandoned: a new room's message reaches another member's waiting sync
/// and `/messages`, and the other member's own account data reaches their sync.
async fn assert_delivery_works(server: &TestServer, sender: &TestUser, name: &str) {
    assert_streams_settle(server.services()).await;
    let reader = server.register(&format!("{name}-reader")).await;
    let room_id = create_room(sender, json!({"preset": "public_chat"})).await;
    reader.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    let since = sync(&reader, None, 0).await["next_batch"].as_str().unwrap().to_owned();

    // A long-polling sync is woken by the message.
    let waiting = {
        let reader = reader.clone();
        let since = since.clone();
        tokio::spawn(async move { sync(&reader, Some(&since), 20_000).await })
    };
    send_text(sender, &room_id, &format!("{name}-t"), "after the hang-ups").await;
    let mut woken =
        tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("sync returned").unwrap();
    // The sync may have been woken by something else first (the sender's presence): then the
    // message comes in the next one, from its `next_batch` (nothing skipped).
    if timeline_bodies(&woken, &room_id).is_empty() {
        let next = woken["next_batch"].as_str().unwrap().to_owned();
        woken = sync(&reader, Some(&next), 20_000).await;
    }
    assert_eq!(timeline_bodies(&woken, &room_id), vec!["after the hang-ups"], "{woken}");

    let messages = reader
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=5"))
        .await
        .expect(200)
        .clone();
    let bodies: Vec<&str> =
        messages["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, vec!["after the hang-ups"]);

    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.after", reader.user_id);
    reader.client.put(&path, &json!({"n": 1})).await.expect(200);
    let later = sync(&reader, Some(&since), 0).await;
    let kinds: Vec<&str> = later["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(kinds.contains(&"org.example.after"), "own account data reaches sync: {later}");
}

/// The reproduction from the field: createRoom and account-data writes whose connections close
/// 0-10 ms after the body, a hundred times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_up_writes_do_not_freeze_delivery() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let addr = server.tcp_addr(0).unwrap();
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let token = alice.access_token.clone();
        let user_id = alice.user_id.clone();
        tasks.push(tokio::spawn(async move {
            let after = Duration::from_millis(i % 11);
            if i.is_multiple_of(2) {
                hang_up_after(addr, "POST", "/_matrix/client/v3/createRoom", Some(&token), b"{}", after)
                    .await;
            } else {
                let path = format!("/_matrix/client/v3/user/{user_id}/account_data/x.t{i}");
                hang_up_after(addr, "PUT", &path, Some(&token), b"{\"a\":1}", after).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_delivery_works(&server, &alice, "field").await;
    server.stop().await;
}

/// One write request of the random-abort test.
struct Write {
    method: &'static str,
    path: String,
    body: Value,
}

fn write(method: &'static str, path: impl Into<String>, body: Value) -> Write {
    Write { method, path: path.into(), body }
}

/// Every write endpoint, abandoned at random points (0-10 ms after its body, several times
/// each, in parallel with acknowledged writes): afterwards every stream advances, and every
/// write that was answered 200 is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_aborts_on_every_write_endpoint() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let addr = server.tcp_addr(0).unwrap();
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    let first = send_text(&alice, &room_id, "first", "first").await;
    let (a, r) = (alice.user_id.clone(), room_id.clone());
    let (b, bd) = (bob.user_id.clone(), bob.device_id.clone());
    let client = "/_matrix/client/v3";

    let writes = |n: usize| -> Vec<Write> {
        vec![
            write("POST", format!("{client}/createRoom"), json!({"name": format!("r{n}")})),
            write(
                "PUT",
                format!("{client}/rooms/{r}/send/m.room.message/h{n}"),
                json!({"msgtype": "m.text", "body": format!("h{n}")}),
            ),
            write(
                "PUT",
                format!("{client}/rooms/{r}/state/m.room.topic/"),
                json!({"topic": format!("topic {n}")}),
            ),
            write("PUT", format!("{client}/rooms/{r}/state/org.example.state/k{n}"), json!({"n": n})),
            write("PUT", format!("{client}/rooms/{r}/redact/{first}/red{n}"), json!({})),
            write("PUT", format!("{client}/user/{a}/account_data/org.example.h{n}"), json!({"n": n})),
            write(
                "PUT",
                format!("{client}/user/{a}/rooms/{r}/account_data/org.example.h{n}"),
                json!({"n": n}),
            ),
            write("PUT", format!("{client}/user/{a}/rooms/{r}/tags/u.h{n}"), json!({"order": 0.5})),
            write("DELETE", format!("{client}/user/{a}/rooms/{r}/tags/u.h{n}"), json!({})),
            write("POST", format!("{client}/rooms/{r}/receipt/m.read/{first}"), json!({})),
            write(
                "POST",
                format!("{client}/rooms/{r}/read_markers"),
                json!({"m.fully_read": first, "m.read": first}),
            ),
            write("PUT", format!("{client}/rooms/{r}/typing/{a}"), json!({"typing": true, "timeout": 1000})),
            write(
                "PUT",
                format!("{client}/presence/{a}/status"),
                json!({"presence": if n.is_multiple_of(2) { "online" } else { "unavailable" }}),
            ),
            write(
                "PUT",
                format!("{client}/profile/{a}/displayname"),
                json!({"displayname": format!("Alice {n}")}),
            ),
            write("POST", format!("{client}/user/{a}/filter"), json!({"room": {"timeline": {"limit": n}}})),
            write(
                "PUT",
                format!("{client}/pushrules/global/override/h{n}"),
                json!({"actions": ["notify"], "conditions": []}),
            ),
            write("DELETE", format!("{client}/pushrules/global/override/h{n}"), json!({})),
            write("PUT", format!("{client}/directory/room/%23h{n}:test.local"), json!({"room_id": r})),
            write(
                "PUT",
                format!("{client}/directory/list/room/{r}"),
                json!({"visibility": if n.is_multiple_of(2) { "public" } else { "private" }}),
            ),
            write(
                "POST",
                format!("{client}/rooms/{r}/invite"),
                json!({"user_id": format!("@nobody{n}:test.local")}),
            ),
            write("POST", format!("{client}/rooms/{r}/leave"), json!({})),
            write("POST", format!("{client}/join/{r}"), json!({})),
            write("POST", format!("{client}/rooms/{r}/report/{first}"), json!({"reason": "test"})),
            write(
                "PUT",
                format!("{client}/sendToDevice/org.example.hang/h{n}"),
                json!({"messages": {b.clone(): {bd.clone(): {"n": n}}}}),
            ),
            write(
                "POST",
                format!("{client}/keys/upload"),
                json!({"one_time_keys": {format!("curve25519:h{n}"): "a2V5", format!("curve25519:i{n}"): "a2V5"}}),
            ),
            write(
                "POST",
                format!("{client}/keys/claim"),
                json!({"one_time_keys": {a.clone(): {"*": "curve25519"}}}),
            ),
            write(
                "POST",
                format!("{client}/register"),
                json!({"username": format!("hang{n}"), "password": "hang-password-1A!", "auth": {"type": "m.login.dummy"}}),
            ),
            write("POST", format!("{client}/keys/device_signing/upload"), {
                // A valid public key (32 bytes): the first upload sets it up, the others need UIA.
                let key = format!("{}{}", ["B", "C", "D", "E", "F"][n % 5], "A".repeat(42));
                json!({"master_key": {"user_id": a, "usage": ["master"], "keys": {format!("ed25519:{key}"): key}}})
            }),
            write(
                "POST",
                format!("{client}/keys/signatures/upload"),
                json!({ &a: { format!("DEV{n}"): {} } }),
            ),
            write(
                "POST",
                format!("{client}/login"),
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": bob.password}),
            ),
        ]
    };

    let seed: u64 = rand::rng().random();
    eprintln!("random-abort seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut abandoned = Vec::new();
    for n in 0..4 {
        for w in writes(n) {
            let token = alice.access_token.clone();
            let after = Duration::from_millis(rng.random_range(0..=10));
            let body = serde_json::to_vec(&w.body).unwrap();
            abandoned.push(tokio::spawn(async move {
                hang_up_after(addr, w.method, &w.path, Some(&token), &body, after).await;
            }));
        }
    }
    // Meanwhile, writes whose answers are read: each must be there afterwards.
    let mut acknowledged_events = Vec::new();
    let mut acknowledged_data = HashSet::new();
    for n in 0..20 {
        acknowledged_events.push(send_text(&bob, &room_id, &format!("ack{n}"), &format!("ack{n}")).await);
        let path = format!("{client}/user/{}/account_data/org.example.ack{n}", bob.user_id);
        bob.client.put(&path, &json!({"n": n})).await.expect(200);
        acknowledged_data.insert(format!("org.example.ack{n}"));
        let path = format!("{client}/sendToDevice/org.example.ack/ack{n}");
        let messages = json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"n": n}}}});
        bob.client.put(&path, &messages).await.expect(200);
    }
    for task in abandoned {
        task.await.unwrap();
    }

    assert_streams_settle(server.services()).await;
    let everything = sync(&bob, None, 0).await;
    let kinds: HashSet<String> = everything["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect();
    assert!(acknowledged_data.is_subset(&kinds), "acknowledged account data is kept: {kinds:?}");
    let mut to_device = Vec::new();
    let mut since = None;
    loop {
        let response = sync(&alice, since.as_deref(), 0).await;
        let events = response["to_device"]["events"].as_array().cloned().unwrap_or_default();
        since = response["next_batch"].as_str().map(str::to_owned);
        if events.is_empty() {
            break;
        }
        to_device.extend(
            events.into_iter().filter(|e| e["type"] == "org.example.ack").map(|e| e["content"]["n"].clone()),
        );
    }
    assert_eq!(
        to_device,
        (0..20).map(|n| json!(n)).collect::<Vec<_>>(),
        "acknowledged to-device messages arrive once, in order"
    );
    for event_id in &acknowledged_events {
        let event =
            bob.client.get(&format!("{client}/rooms/{room_id}/event/{event_id}")).await.expect(200).clone();
        assert_eq!(event["event_id"], event_id.as_str(), "{event}");
    }
    assert_delivery_works(&server, &bob, "random").await;
    server.stop().await;
}

/// The guards themselves: service writes dropped after each of their suspension points in turn
/// (not only where HTTP would drop them) leave no stream position behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_writes_dropped_at_every_await_release_their_positions() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let services = server.services().clone();
    let client_info = ClientInfo { ip: None, user_agent: None };
    let requester = services.authenticate(&alice.access_token, &client_info).await.unwrap();
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    let room_id = ruma::RoomId::parse(&room_id).unwrap();
    let first = send_text(&alice, room_id.as_str(), "first", "first").await;
    let first = ruma::EventId::parse(&first).unwrap();
    let user_id = requester.user_id.clone();

    let mut dropped = 0;
    let (n, result) = cancel_at_every_await(
        || {
            services.create_room(
                &requester,
                CreateRoomRequest { name: Some("dropped".to_owned()), ..CreateRoomRequest::default() },
            )
        },
        500,
    )
    .await;
    result.unwrap();
    dropped += n;
    assert_streams_settle(&services).await;

    let kind = "org.example.dropped".to_owned();
    let content = json!({"dropped": true});
    let (n, result) =
        cancel_at_every_await(|| services.put_account_data(&user_id, None, &kind, &content), 500).await;
    result.unwrap();
    dropped += n;
    assert_streams_settle(&services).await;

    let (n, result) =
        cancel_at_every_await(|| services.set_receipt(&requester, &room_id, "m.read", &first, None), 500)
            .await;
    result.unwrap();
    dropped += n;
    assert_streams_settle(&services).await;

    let (n, result) =
        cancel_at_every_await(|| services.set_presence(&requester, &user_id, "unavailable", None), 500).await;
    result.unwrap();
    dropped += n;
    assert_streams_settle(&services).await;

    let (n, result) = cancel_at_every_await(
        || services.set_profile_field(&requester, &user_id, "displayname", json!("Dropped Alice")),
        500,
    )
    .await;
    result.unwrap();
    dropped += n;
    assert_streams_settle(&services).await;

    let messages: myelin_service::to_device::ToDeviceMessages =
        serde_json::from_value(json!({bob.user_id.clone(): {bob.device_id.clone(): {"dropped": true}}}))
            .unwrap();
    let (n, result) = cancel_at_every_await(
        || services.send_to_device(&requester, "org.example.dropped", "dropped", messages.clone()),
        500,
    )
    .await;
    result.unwrap();
    dropped += n;
    assert_streams_settle(&services).await;

    let bob_requester = services.authenticate(&bob.access_token, &client_info).await.unwrap();
    let (n, result) =
        cancel_at_every_await(|| services.join_room(&bob_requester, room_id.as_str(), None), 500).await;
    result.unwrap();
    dropped += n;
    assert_streams_settle(&services).await;

    assert!(dropped > 5, "the writes were really cut short ({dropped} times)");
    assert_delivery_works(&server, &alice, "service").await;
    server.stop().await;
}

/// A long-polling sync whose client hangs up stops counting as syncing (the user can go
/// offline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_up_sync_ends_its_presence_bookkeeping() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let since = sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let user_id = ruma::UserId::parse(&alice.user_id).unwrap();
    let services = server.services().clone();
    let addr = server.tcp_addr(0).unwrap();
    let token = alice.access_token.clone();
    let path = format!("/_matrix/client/v3/sync?timeout=60000&since={since}");
    let hang_up = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
        stream
    });
    let stream = hang_up.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !services.active_syncs.is_syncing(&user_id) {
        assert!(tokio::time::Instant::now() < deadline, "the sync started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stream);
    while services.active_syncs.is_syncing(&user_id) {
        assert!(tokio::time::Instant::now() < deadline, "the abandoned sync still counts as syncing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await;
}
