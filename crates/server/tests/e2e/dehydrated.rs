//! Dehydrated devices (MSC3814) over HTTP: `PUT` / `GET` / `DELETE
//! /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device` and its
//! `/{deviceId}/events` (POST with `next_batch`, GET with `from`), as Element X uses them.

use myelin_test_support::{TestClient, TestServer, TestUser};
use serde_json::{Value, json};

pub(crate) const DEHYDRATED: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";
const QUERY: &str = "/_matrix/client/v3/keys/query";
const CLAIM: &str = "/_matrix/client/v3/keys/claim";
const TYPE: &str = "org.example.test";

fn events_path(device_id: &str) -> String {
    format!("{DEHYDRATED}/{device_id}/events")
}

pub(crate) use crate::e2e_keys::DeviceKey;

/// The body of a `PUT /dehydrated_device` for `device_id`, with its keys signed by `key`.
fn put_body(key: &DeviceKey, pickle: &str) -> Value {
    json!({
        "device_id": key.device_id,
        "device_data": { "algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": pickle },
        "initial_device_display_name": "Dehydrated device",
        "device_keys": key.device_keys_with(json!({ "dehydrated": true })),
        "one_time_keys": {
            "signed_curve25519:OTK1": key.one_time_key("otk-1"),
            "signed_curve25519:OTK2": key.one_time_key("otk-2"),
        },
        "fallback_keys": { "signed_curve25519:FB1": key.fallback_key("fallback-1") },
    })
}

async fn put(user: &TestUser, body: &Value) -> Value {
    user.client.put(DEHYDRATED, body).await.expect(200).clone()
}

/// The device IDs `user`'s `/devices` lists.
async fn device_ids(user: &TestUser) -> Vec<String> {
    let devices = user.client.get("/_matrix/client/v3/devices").await.expect(200).clone();
    let mut ids: Vec<String> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|device| device["device_id"].as_str().expect("device_id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted<const N: usize>(ids: [&str; N]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    ids.sort();
    ids
}

/// The devices of `user_id` whose keys `/keys/query` returns, by ID, with their keys.
async fn queried(client: &TestClient, user_id: &str) -> serde_json::Map<String, Value> {
    let response = client.post(QUERY, &json!({ "device_keys": { user_id: [] } })).await.expect(200).clone();
    response["device_keys"][user_id].as_object().expect("the user is in device_keys").clone()
}

async fn claim(client: &TestClient, user_id: &str, device_id: &str) -> Value {
    let body = json!({ "one_time_keys": { user_id: { device_id: "signed_curve25519" } } });
    let response = client.post(CLAIM, &body).await.expect(200).clone();
    response["one_time_keys"][user_id][device_id].clone()
}

#[tokio::test]
async fn put_get_replace_and_delete_a_dehydrated_device() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let versions = server.client().get("/_matrix/client/versions").await.expect(200).clone();
    assert_eq!(versions["unstable_features"]["org.matrix.msc3814"], true);

    // None yet: GET and DELETE are 404 M_NOT_FOUND.
    alice.client.get(DEHYDRATED).await.expect_error(404, "M_NOT_FOUND");
    alice.client.delete(DEHYDRATED).await.expect_error(404, "M_NOT_FOUND");

    let first = DeviceKey::new(&alice.user_id, "DEHYDRATED1");
    assert_eq!(put(&alice, &put_body(&first, "pickle-1")).await, json!({"device_id": "DEHYDRATED1"}));
    let got = alice.client.get(DEHYDRATED).await.expect(200).clone();
    assert_eq!(
        got,
        json!({
            "device_id": "DEHYDRATED1",
            "device_data": { "algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "pickle-1" },
        })
    );

    // It is one of alice's devices (without a token), with the keys it was uploaded with:
    // others query its identity keys and claim its one-time keys, then its fallback key.
    assert_eq!(device_ids(&alice).await, sorted([&alice.device_id, "DEHYDRATED1"]));
    let keys = queried(&bob.client, &alice.user_id).await;
    let dehydrated = &keys["DEHYDRATED1"];
    assert_eq!(dehydrated["dehydrated"], true);
    assert_eq!(dehydrated["keys"]["ed25519:DEHYDRATED1"], first.public_key());
    assert_eq!(dehydrated["unsigned"]["device_display_name"], "Dehydrated device");
    let claimed = claim(&bob.client, &alice.user_id, "DEHYDRATED1").await;
    assert_eq!(claimed["signed_curve25519:OTK1"]["key"], "otk-1", "{claimed}");
    assert_eq!(
        claim(&bob.client, &alice.user_id, "DEHYDRATED1").await["signed_curve25519:OTK2"]["key"],
        "otk-2"
    );
    let fallback = claim(&bob.client, &alice.user_id, "DEHYDRATED1").await;
    assert_eq!(fallback["signed_curve25519:FB1"]["key"], "fallback-1", "{fallback}");

    // A new dehydrated device replaces it: the old device goes, with its keys.
    let second = DeviceKey::new(&alice.user_id, "DEHYDRATED2");
    assert_eq!(put(&alice, &put_body(&second, "pickle-2")).await, json!({"device_id": "DEHYDRATED2"}));
    assert_eq!(alice.client.get(DEHYDRATED).await.expect(200)["device_id"], "DEHYDRATED2");
    assert_eq!(device_ids(&alice).await, sorted([&alice.device_id, "DEHYDRATED2"]));
    let keys = queried(&bob.client, &alice.user_id).await;
    assert!(!keys.contains_key("DEHYDRATED1"), "{keys:?}");
    assert!(keys.contains_key("DEHYDRATED2"), "{keys:?}");
    assert_eq!(claim(&bob.client, &alice.user_id, "DEHYDRATED1").await, Value::Null);

    // Uploading again under the same device ID replaces it too, keys and all.
    let again = DeviceKey::new(&alice.user_id, "DEHYDRATED2");
    assert_eq!(put(&alice, &put_body(&again, "pickle-3")).await, json!({"device_id": "DEHYDRATED2"}));
    assert_eq!(alice.client.get(DEHYDRATED).await.expect(200)["device_data"]["device_pickle"], "pickle-3");
    let keys = queried(&bob.client, &alice.user_id).await;
    assert_eq!(keys["DEHYDRATED2"]["keys"]["ed25519:DEHYDRATED2"], again.public_key());
    assert_eq!(
        claim(&bob.client, &alice.user_id, "DEHYDRATED2").await["signed_curve25519:OTK1"]["key"],
        "otk-1"
    );

    // DELETE removes it and says which it was; then there is none again.
    let deleted = alice.client.delete(DEHYDRATED).await.expect(200).clone();
    assert_eq!(deleted, json!({"device_id": "DEHYDRATED2"}));
    alice.client.get(DEHYDRATED).await.expect_error(404, "M_NOT_FOUND");
    assert_eq!(device_ids(&alice).await, vec![alice.device_id.clone()]);
    assert!(!queried(&bob.client, &alice.user_id).await.contains_key("DEHYDRATED2"));
    alice.client.delete(DEHYDRATED).await.expect_error(404, "M_NOT_FOUND");

    // Each user has their own: bob's is not alice's.
    let bobs = DeviceKey::new(&bob.user_id, "BOBDEHYDRATED");
    put(&bob, &put_body(&bobs, "bob-pickle")).await;
    alice.client.get(DEHYDRATED).await.expect_error(404, "M_NOT_FOUND");
    assert_eq!(bob.client.get(DEHYDRATED).await.expect(200)["device_id"], "BOBDEHYDRATED");
}

/// Sends `TYPE` message `n` from `from` to `user_id`'s `device_id` (`*`: all of them).
async fn send(from: &TestUser, user_id: &str, device_id: &str, n: i64) {
    let path = format!("/_matrix/client/v3/sendToDevice/{TYPE}/txn-{n}");
    let body = json!({ "messages": { user_id: { device_id: { "n": n } } } });
    from.client.put(&path, &body).await.expect(200);
}

/// The `n` of each event of an events page, checking every event's shape.
fn numbers(page: &Value, sender: &str) -> Vec<i64> {
    page["events"]
        .as_array()
        .expect("events is an array")
        .iter()
        .map(|event| {
            let mut keys: Vec<&str> =
                event.as_object().expect("an object").keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, ["content", "sender", "type"], "{event}");
            assert_eq!(event["type"], TYPE);
            assert_eq!(event["sender"], sender);
            event["content"]["n"].as_i64().expect("content.n")
        })
        .collect()
}

fn next_batch(page: &Value) -> String {
    let token = page["next_batch"].as_str().expect("next_batch").to_owned();
    assert!(token.starts_with('d'), "{token}");
    token
}

#[tokio::test]
async fn the_dehydrated_device_gets_to_device_messages_a_page_at_a_time_deleted_after_next_batch() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let key = DeviceKey::new(&alice.user_id, "DEHYDRATED");
    put(&alice, &put_body(&key, "pickle")).await;
    let events = events_path("DEHYDRATED");

    // Nothing yet.
    let empty = alice.client.post(&events, &json!({})).await.expect(200).clone();
    assert_eq!(numbers(&empty, &bob.user_id), Vec::<i64>::new());
    next_batch(&empty);

    // 101 messages to it (the last one to all of alice's devices): 100 in the first page.
    for n in 1..=100 {
        send(&bob, &alice.user_id, "DEHYDRATED", n).await;
    }
    send(&bob, &alice.user_id, "*", 101).await;
    let first = alice.client.post(&events, &json!({})).await.expect(200).clone();
    assert_eq!(numbers(&first, &bob.user_id), (1..=100).collect::<Vec<_>>());
    let first_token = next_batch(&first);

    // GET reads the same inbox, and gives `next_batch` only while more messages wait.
    let limited = alice.client.get(&events).await.expect(200).clone();
    assert_eq!(numbers(&limited, &bob.user_id), (1..=100).collect::<Vec<_>>());
    assert_eq!(next_batch(&limited), first_token);

    // Sending the token back acknowledges the first page: it is deleted, never given again.
    let second = alice.client.post(&events, &json!({ "next_batch": first_token })).await.expect(200).clone();
    assert_eq!(numbers(&second, &bob.user_id), vec![101]);
    let second_token = next_batch(&second);
    let from_start = alice.client.post(&events, &json!({})).await.expect(200).clone();
    assert_eq!(numbers(&from_start, &bob.user_id), vec![101], "the first page was deleted");

    // GET's `from` acknowledges as well; the last page has no `next_batch`.
    let done = alice.client.get(&format!("{events}?from={second_token}")).await.expect(200).clone();
    assert_eq!(numbers(&done, &bob.user_id), Vec::<i64>::new());
    assert!(done.get("next_batch").is_none(), "{done}");
    let from_start = alice.client.post(&events, &json!({})).await.expect(200).clone();
    assert_eq!(numbers(&from_start, &bob.user_id), Vec::<i64>::new(), "every message was deleted");

    // New messages come after the last token.
    send(&bob, &alice.user_id, "DEHYDRATED", 102).await;
    let later = alice.client.post(&events, &json!({ "next_batch": second_token })).await.expect(200).clone();
    assert_eq!(numbers(&later, &bob.user_id), vec![102]);

    // A replaced dehydrated device's messages go with it.
    let replacement = DeviceKey::new(&alice.user_id, "DEHYDRATED3");
    put(&alice, &put_body(&replacement, "pickle-3")).await;
    alice.client.post(&events, &json!({})).await.expect_error(403, "M_FORBIDDEN");
    let fresh = alice.client.post(&events_path("DEHYDRATED3"), &json!({})).await.expect(200).clone();
    assert_eq!(numbers(&fresh, &bob.user_id), Vec::<i64>::new());
}

#[tokio::test]
async fn bad_dehydrated_device_requests_get_matrix_errors_and_change_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    // Without a token.
    server.client().get(DEHYDRATED).await.expect_error(401, "M_MISSING_TOKEN");
    server.client().post(&events_path("X"), &json!({})).await.expect_error(401, "M_MISSING_TOKEN");

    // Events without a dehydrated device, or of another device: 403 M_FORBIDDEN, as Synapse.
    alice.client.post(&events_path("DEHYDRATED"), &json!({})).await.expect_error(403, "M_FORBIDDEN");
    let key = DeviceKey::new(&alice.user_id, "DEHYDRATED");
    put(&alice, &put_body(&key, "pickle")).await;
    alice.client.post(&events_path("OTHER"), &json!({})).await.expect_error(403, "M_FORBIDDEN");
    alice.client.post(&events_path(&alice.device_id), &json!({})).await.expect_error(403, "M_FORBIDDEN");
    bob.client.post(&events_path("DEHYDRATED"), &json!({})).await.expect_error(403, "M_FORBIDDEN");
    for token in ["5", "dx", "d-1", "x5"] {
        alice
            .client
            .post(&events_path("DEHYDRATED"), &json!({ "next_batch": token }))
            .await
            .expect_error(400, "M_INVALID_PARAM");
    }
    alice
        .client
        .post(&events_path("DEHYDRATED"), &json!({ "next_batch": 5 }))
        .await
        .expect_error(400, "M_BAD_JSON");

    // Malformed bodies: nothing is created and the current dehydrated device stays.
    let new_key = DeviceKey::new(&alice.user_id, "NEWDEVICE");
    let good = put_body(&new_key, "new-pickle");
    let mut without_keys = good.clone();
    without_keys.as_object_mut().unwrap().remove("device_keys");
    let mut without_algorithm = good.clone();
    without_algorithm["device_data"] = json!({ "device_pickle": "p" });
    let mut data_not_object = good.clone();
    data_not_object["device_data"] = json!("pickle");
    let mut without_id = good.clone();
    without_id.as_object_mut().unwrap().remove("device_id");
    for body in [&without_keys, &without_algorithm, &data_not_object, &without_id] {
        alice.client.put(DEHYDRATED, body).await.expect_error(400, "M_BAD_JSON");
    }
    let mut empty_id = good.clone();
    empty_id["device_id"] = json!("");
    alice.client.put(DEHYDRATED, &empty_id).await.expect_error(400, "M_INVALID_PARAM");
    let mut long_name = good.clone();
    long_name["initial_device_display_name"] = json!("n".repeat(101));
    alice.client.put(DEHYDRATED, &long_name).await.expect_error(413, "M_TOO_LARGE");

    // Keys that the keys upload path refuses: a bad signature, keys of another device, a
    // one-time key with a malformed ID. The new device does not stay behind.
    let mut bad_signature = good.clone();
    bad_signature["device_keys"] = DeviceKey::new(&alice.user_id, "NEWDEVICE").device_keys();
    bad_signature["device_keys"]["keys"]["ed25519:NEWDEVICE"] = json!(new_key.public_key());
    let mut other_device = good.clone();
    other_device["device_keys"] = DeviceKey::new(&alice.user_id, "SOMEONEELSE").device_keys();
    let mut bad_otk = good.clone();
    bad_otk["one_time_keys"] = json!({ "no_colon": new_key.one_time_key("k") });
    for body in [&bad_signature, &other_device, &bad_otk] {
        alice.client.put(DEHYDRATED, body).await.expect_error(400, "M_INVALID_PARAM");
    }

    // A logged-in device never becomes a dehydrated device.
    let mine = DeviceKey::new(&alice.user_id, &alice.device_id);
    alice.client.put(DEHYDRATED, &put_body(&mine, "p")).await.expect_error(400, "M_INVALID_PARAM");
    alice.client.get("/_matrix/client/v3/account/whoami").await.expect(200);

    assert_eq!(alice.client.get(DEHYDRATED).await.expect(200)["device_id"], "DEHYDRATED");
    assert_eq!(device_ids(&alice).await, sorted([&alice.device_id, "DEHYDRATED"]));
    let keys = queried(&bob.client, &alice.user_id).await;
    assert_eq!(keys.keys().cloned().collect::<Vec<_>>(), vec!["DEHYDRATED".to_owned()]);
    assert_eq!(keys["DEHYDRATED"]["keys"]["ed25519:DEHYDRATED"], key.public_key());

    // After all of that, a good upload still works.
    assert_eq!(put(&alice, &good).await, json!({"device_id": "NEWDEVICE"}));
}

/// Concurrent uploads, some of whose clients hang up: once they are all done, the user has one
/// dehydrated device and no other tokenless device: each replaced device was deleted, keys and
/// all, by the upload that replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_abandoned_uploads_leave_one_dehydrated_device() {
    use std::time::Duration;

    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let addr = server.tcp_addr(0).unwrap();

    let mut tasks = Vec::new();
    for n in 0..16 {
        let key = DeviceKey::new(&alice.user_id, &format!("RACE{n}"));
        let body = put_body(&key, &format!("pickle-{n}"));
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            if n % 2 == 0 {
                put(&alice, &body).await;
            } else {
                let bytes = serde_json::to_vec(&body).unwrap();
                let after = Duration::from_millis(n % 5);
                myelin_test_support::cancel::hang_up_after(
                    addr,
                    "PUT",
                    DEHYDRATED,
                    Some(&alice.access_token),
                    &bytes,
                    after,
                )
                .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    // The abandoned requests run to completion on their own, so their effects may come after
    // the acknowledged ones: poll (bounded; not a sleep standing in for an event) until the
    // state holds still with the login and the current dehydrated device as the only devices,
    // and the current one's keys as the only keys.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let current =
            alice.client.get(DEHYDRATED).await.expect(200)["device_id"].as_str().unwrap().to_owned();
        assert!(current.starts_with("RACE"), "{current}");
        let devices = device_ids(&alice).await;
        let keys: Vec<String> = queried(&bob.client, &alice.user_id).await.keys().cloned().collect();
        let still = alice.client.get(DEHYDRATED).await.expect(200)["device_id"] == current.as_str();
        if still && devices == sorted([&alice.device_id, &current]) && keys == [current.clone()] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: devices {devices:?}, keys {keys:?} (current {current})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stale-device housekeeping (`delete_stale_devices_after`) leaves the dehydrated device alone:
/// no client ever uses it until one rehydrates it, so it is never "seen".
#[tokio::test]
async fn stale_device_housekeeping_keeps_the_dehydrated_device() {
    let server = TestServer::start_with(json!({ "delete_stale_devices_after": "1d" })).await;
    let alice = server.register("alice").await;
    let key = DeviceKey::new(&alice.user_id, "DEHYDRATED");
    put(&alice, &put_body(&key, "pickle")).await;
    let login = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": alice.user_id },
        "password": alice.password,
        "device_id": "OLDLOGIN",
    });
    server.client().post("/_matrix/client/v3/login", &login).await.expect(200);
    // Both created (and the login last seen) long ago.
    for device_id in ["DEHYDRATED", "OLDLOGIN"] {
        server
            .services()
            .store()
            .db()
            .execute(
                "UPDATE devices SET created_ts = 0, last_seen_ts = CASE WHEN last_seen_ts IS NULL THEN NULL ELSE 0 END WHERE device_id = $1",
                vec![device_id.into()],
            )
            .await
            .unwrap();
    }
    // (The start-up housekeeping may have run already; either way the login is gone now.)
    server.services().delete_stale_devices().await.unwrap();
    assert_eq!(device_ids(&alice).await, sorted([&alice.device_id, "DEHYDRATED"]));
    assert_eq!(alice.client.get(DEHYDRATED).await.expect(200)["device_id"], "DEHYDRATED");
}

/// A deactivated account's devices go with everything a device has: nobody can claim the
/// one-time or fallback keys of its (dehydrated) devices or query their keys any more.
#[tokio::test]
async fn deactivation_takes_the_dehydrated_device_and_its_keys() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let key = DeviceKey::new(&alice.user_id, "DEHYDRATED");
    put(&alice, &put_body(&key, "pickle")).await;
    send(&bob, &alice.user_id, "DEHYDRATED", 1).await;
    let auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": alice.user_id },
        "password": alice.password,
    });
    alice.client.post("/_matrix/client/v3/account/deactivate", &json!({ "auth": auth })).await.expect(200);

    assert_eq!(queried(&bob.client, &alice.user_id).await, serde_json::Map::new());
    assert_eq!(claim(&bob.client, &alice.user_id, "DEHYDRATED").await, Value::Null);
    // (The fallback key is what a claim hands out once no one-time key is left.)
    assert_eq!(claim(&bob.client, &alice.user_id, "DEHYDRATED").await, Value::Null);
    assert_eq!(claim(&bob.client, &alice.user_id, "DEHYDRATED").await, Value::Null);
    let services = server.services();
    assert_eq!(services.store().dehydrated_device(&alice.user_id).await.unwrap(), None);
    let inbox =
        services.store().to_device_messages(&alice.user_id, "DEHYDRATED", 0, i64::MAX, 10).await.unwrap();
    assert_eq!(inbox, Vec::new());
}
