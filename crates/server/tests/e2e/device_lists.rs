//! Device-list tracking over HTTP: `/sync`'s `device_lists` (`changed` when a user sharing a
//! room adds, re-keys, renames or deletes a device, or starts sharing a room; `left` when the
//! last shared room goes), `GET /keys/changes` between two tokens, long-poll wake-up and the
//! stream's position across restarts.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use myelin_service::device_lists::RESTART_MARGIN;
use myelin_test_support::cancel::{assert_streams_settle, cancel_at_every_await};
use myelin_test_support::{TestClient, TestServer, TestUser};
use reqwest::Method;
use ruma::CanonicalJsonValue;
use ruma::serde::{Base64, base64::Standard};
use ruma::signatures::{Ed25519KeyPair, sign_json};
use serde_json::{Value, json};

use crate::rooms::create_room;

const CHANGES: &str = "/_matrix/client/v3/keys/changes";

async fn sync(client: &TestClient, since: Option<&str>, timeout_ms: u64) -> Value {
    let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    client.get(&path).await.expect(200).clone()
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

/// The token's device-list position (its seventh part).
fn device_list_position(token: &str) -> i64 {
    token.trim_start_matches('s').split('_').nth(6).expect("a device-list position").parse().unwrap()
}

fn set(users: &[&str]) -> BTreeSet<String> {
    users.iter().map(|u| u.to_string()).collect()
}

/// `(changed, left)` of a `device_lists` object (of a sync or of `/keys/changes`), checking its
/// shape: two arrays of user IDs, each listed once.
fn lists(device_lists: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let object = device_lists.as_object().expect("device_lists is an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["changed", "left"], "{device_lists}");
    let read = |name: &str| {
        let users: Vec<String> = device_lists[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an array: {device_lists}"))
            .iter()
            .map(|u| u.as_str().expect("a user ID").to_owned())
            .collect();
        let unique: BTreeSet<String> = users.iter().cloned().collect();
        assert_eq!(unique.len(), users.len(), "no duplicates: {device_lists}");
        unique
    };
    (read("changed"), read("left"))
}

/// An incremental sync from `since` (without waiting): its `(changed, left)` and next token.
async fn changes_since(client: &TestClient, since: &str) -> (BTreeSet<String>, BTreeSet<String>, String) {
    let response = sync(client, Some(since), 0).await;
    let (changed, left) = lists(&response["device_lists"]);
    (changed, left, next_batch(&response))
}

/// Logs `user` in on a new device: its access token and device ID.
async fn login_token(server: &TestServer, user: &TestUser) -> (String, String) {
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": user.password,
    });
    let response = server.client().post("/_matrix/client/v3/login", &body).await.expect(200).clone();
    let token = response["access_token"].as_str().expect("access_token").to_owned();
    (token, response["device_id"].as_str().expect("device_id").to_owned())
}

/// Logs `user` in on a new device: its client and device ID.
pub(crate) async fn login(server: &TestServer, user: &TestUser) -> (TestClient, String) {
    let (token, device_id) = login_token(server, user).await;
    (server.client().with_token(&token), device_id)
}

/// Signed identity keys of a fresh device key pair.
pub(crate) fn device_keys(user_id: &str, device_id: &str) -> Value {
    let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), device_id.to_owned()).unwrap();
    let keys = json!({
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device_id}"): "curve+key+of+the+device",
            format!("ed25519:{device_id}"): Base64::<Standard>::new(pair.public_key().to_vec()).encode(),
        },
    });
    let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(keys).unwrap() else {
        panic!("not an object")
    };
    sign_json(user_id, &pair, &mut object).unwrap();
    serde_json::to_value(object).unwrap()
}

async fn join(user: &TestUser, room_id: &str) {
    user.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
}

async fn leave(user: &TestUser, room_id: &str) {
    user.client.post(&format!("/_matrix/client/v3/rooms/{room_id}/leave"), &json!({})).await.expect(200);
}

/// Alice and Bob share a public room; Carol is in a room of her own.
async fn alice_bob_and_carol(server: &TestServer) -> (TestUser, TestUser, TestUser, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;
    create_room(&carol, json!({})).await;
    (alice, bob, carol, room_id)
}

#[tokio::test]
async fn device_changes_of_users_sharing_a_room_show_in_changed() {
    let server = TestServer::start().await;
    let (alice, bob, carol, _) = alice_bob_and_carol(&server).await;
    let token = next_batch(&sync(&alice.client, None, 0).await);
    // An initial sync reports no device lists.
    assert_eq!(lists(&sync(&alice.client, None, 0).await["device_lists"]), (set(&[]), set(&[])));

    // A new device (login) of Bob, who shares a room; not Carol's, who does not.
    let (bob_phone, bob_phone_id) = login(&server, &bob).await;
    login(&server, &carol).await;
    let (changed, left, token) = changes_since(&alice.client, &token).await;
    assert_eq!((changed, left), (set(&[&bob.user_id]), set(&[])));

    // Nothing new: nothing reported.
    let (changed, left, token) = changes_since(&alice.client, &token).await;
    assert_eq!((changed, left), (set(&[]), set(&[])));

    // New identity keys; the same keys again change nothing.
    let keys = json!({ "device_keys": device_keys(&bob.user_id, &bob_phone_id) });
    bob_phone.post("/_matrix/client/v3/keys/upload", &keys).await.expect(200);
    let (changed, _, token) = changes_since(&alice.client, &token).await;
    assert_eq!(changed, set(&[&bob.user_id]));
    bob_phone.post("/_matrix/client/v3/keys/upload", &keys).await.expect(200);
    let one_time_keys = json!({ "one_time_keys": { "curve25519:AAAA": "one+time+key" } });
    bob_phone.post("/_matrix/client/v3/keys/upload", &one_time_keys).await.expect(200);
    let (changed, _, token) = changes_since(&alice.client, &token).await;
    assert_eq!(changed, set(&[]), "re-uploading the same keys or one-time keys is no device change");

    // A new display name (Synapse reports it); the same name again is no change.
    let path = format!("/_matrix/client/v3/devices/{bob_phone_id}");
    bob.client.put(&path, &json!({"display_name": "Phone"})).await.expect(200);
    let (changed, _, token) = changes_since(&alice.client, &token).await;
    assert_eq!(changed, set(&[&bob.user_id]));
    bob.client.put(&path, &json!({"display_name": "Phone"})).await.expect(200);
    let (changed, _, token) = changes_since(&alice.client, &token).await;
    assert_eq!(changed, set(&[]));

    // A deleted device (logout); Carol's device changes stay unreported.
    bob_phone.post("/_matrix/client/v3/logout", &json!({})).await.expect(200);
    carol.client.post("/_matrix/client/v3/logout", &json!({})).await.expect(200);
    let (changed, left, token) = changes_since(&alice.client, &token).await;
    assert_eq!((changed, left), (set(&[&bob.user_id]), set(&[])));

    // The user's own new devices are reported to them too.
    let bob_token = next_batch(&sync(&bob.client, None, 0).await);
    login(&server, &alice).await;
    let (changed, _, _) = changes_since(&alice.client, &token).await;
    assert_eq!(changed, set(&[&alice.user_id]));
    let (changed, _, _) = changes_since(&bob.client, &bob_token).await;
    assert_eq!(changed, set(&[&alice.user_id]));
}

#[tokio::test]
async fn deleting_devices_through_the_devices_api_and_deactivation_are_changes() {
    let server = TestServer::start().await;
    let (alice, bob, _, room_id) = alice_bob_and_carol(&server).await;
    let dave = server.register("dave").await;
    join(&dave, &room_id).await;
    let token = next_batch(&sync(&alice.client, None, 0).await);
    let (_, phone_id) = login(&server, &bob).await;
    let (changed, _, token) = changes_since(&alice.client, &token).await;
    assert_eq!(changed, set(&[&bob.user_id]));

    // `POST /delete_devices` (after the password check).
    let path = "/_matrix/client/v3/delete_devices";
    let body = json!({"devices": [phone_id]});
    let challenge = bob.client.post(path, &body).await.expect(401).clone();
    let auth = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": bob.user_id},
        "password": bob.password,
        "session": challenge["session"],
    });
    bob.client.post(path, &json!({"devices": [phone_id], "auth": auth})).await.expect(200);
    let (changed, _, token) = changes_since(&alice.client, &token).await;
    assert_eq!(changed, set(&[&bob.user_id]));

    // Deactivation: Dave leaves the shared room (so he is in `left`) and his devices go.
    let challenge =
        dave.client.post("/_matrix/client/v3/account/deactivate", &json!({})).await.expect(401).clone();
    let auth = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": dave.user_id},
        "password": dave.password,
        "session": challenge["session"],
    });
    dave.client.post("/_matrix/client/v3/account/deactivate", &json!({"auth": auth})).await.expect(200);
    let (_, left, _) = changes_since(&alice.client, &token).await;
    assert_eq!(left, set(&[&dave.user_id]));
    assert!(
        server
            .services()
            .list_devices(&ruma::UserId::parse(&dave.user_id).unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn starting_and_stopping_sharing_rooms_shows_in_changed_and_left() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = create_room(&alice, json!({"preset": "public_chat"})).await;
    let second = create_room(&alice, json!({"preset": "public_chat"})).await;
    let alice_token = next_batch(&sync(&alice.client, None, 0).await);
    let bob_token = next_batch(&sync(&bob.client, None, 0).await);

    // Bob joins: Alice learns of him; Bob learns of everyone in the room he joined.
    join(&bob, &first).await;
    let (changed, left, alice_token) = changes_since(&alice.client, &alice_token).await;
    assert_eq!((changed, left), (set(&[&bob.user_id]), set(&[])));
    let (changed, left, bob_token) = changes_since(&bob.client, &bob_token).await;
    assert_eq!((changed, left), (set(&[&alice.user_id, &bob.user_id]), set(&[])));
    join(&bob, &second).await;
    let (_, _, alice_token) = changes_since(&alice.client, &alice_token).await;
    let (_, _, bob_token) = changes_since(&bob.client, &bob_token).await;

    // Leaving one of two shared rooms: still sharing, nobody left.
    leave(&bob, &first).await;
    let (changed, left, alice_token) = changes_since(&alice.client, &alice_token).await;
    assert_eq!((changed, left), (set(&[]), set(&[])));
    let (changed, left, bob_token) = changes_since(&bob.client, &bob_token).await;
    assert_eq!((changed, left), (set(&[]), set(&[])));

    // Leaving the last shared room: each is in the other's `left`.
    leave(&bob, &second).await;
    let (changed, left, alice_token) = changes_since(&alice.client, &alice_token).await;
    assert_eq!((changed, left), (set(&[]), set(&[&bob.user_id])));
    let (changed, left, _) = changes_since(&bob.client, &bob_token).await;
    assert_eq!((changed, left), (set(&[]), set(&[&alice.user_id])));

    // No longer sharing: Bob's new devices are not Alice's business.
    login(&server, &bob).await;
    let (changed, left, alice_token) = changes_since(&alice.client, &alice_token).await;
    assert_eq!((changed, left), (set(&[]), set(&[])));

    // A kick (or ban) of the last shared room is a leave too.
    join(&bob, &first).await;
    let (changed, _, alice_token) = changes_since(&alice.client, &alice_token).await;
    assert_eq!(changed, set(&[&bob.user_id]));
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{first}/ban"), &json!({"user_id": bob.user_id}))
        .await
        .expect(200);
    let (changed, left, _) = changes_since(&alice.client, &alice_token).await;
    assert_eq!((changed, left), (set(&[]), set(&[&bob.user_id])));
}

#[tokio::test]
async fn key_changes_between_two_tokens() {
    let server = TestServer::start().await;
    let (alice, bob, carol, _) = alice_bob_and_carol(&server).await;
    let dave = server.register("dave").await;
    let later_room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let from = next_batch(&sync(&alice.client, None, 0).await);
    login(&server, &bob).await;
    login(&server, &carol).await;
    let to = next_batch(&sync(&alice.client, None, 0).await);
    join(&dave, &later_room).await;

    let between = alice.client.get(&format!("{CHANGES}?from={from}&to={to}")).await.expect(200).clone();
    assert_eq!(lists(&between), (set(&[&bob.user_id]), set(&[])));
    // Without `to` (Synapse accepts it), up to now: Dave joined since.
    let until_now = alice.client.get(&format!("{CHANGES}?from={from}")).await.expect(200).clone();
    assert_eq!(lists(&until_now), (set(&[&bob.user_id, &dave.user_id]), set(&[])));
    let empty = alice.client.get(&format!("{CHANGES}?from={to}&to={to}")).await.expect(200).clone();
    assert_eq!(lists(&empty), (set(&[]), set(&[])));

    // Bad tokens.
    alice.client.get(&format!("{CHANGES}?to={to}")).await.expect_error(400, "M_MISSING_PARAM");
    for bad in ["nonsense", "s1_x", "s-1", "s1_2_3_4_5_6_7_8"] {
        alice.client.get(&format!("{CHANGES}?from={bad}&to={to}")).await.expect_error(400, "M_INVALID_PARAM");
        alice
            .client
            .get(&format!("{CHANGES}?from={from}&to={bad}"))
            .await
            .expect_error(400, "M_INVALID_PARAM");
    }
    server.client().get(&format!("{CHANGES}?from={from}")).await.expect_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn a_device_change_wakes_a_long_poll() {
    let server = TestServer::start().await;
    let (alice, bob, _, _) = alice_bob_and_carol(&server).await;
    let since = next_batch(&sync(&alice.client, None, 0).await);
    let client = alice.client.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move { sync(&client, Some(&since), 30_000).await });
    server.wait_for_sync_of(&alice.user_id).await;
    assert!(!poll.is_finished(), "the sync waits for something to report");
    login(&server, &bob).await;
    let woken = poll.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(25), "the device change woke the sync");
    assert_eq!(lists(&woken["device_lists"]), (set(&[&bob.user_id]), set(&[])));
}

#[tokio::test]
async fn the_device_list_position_survives_restarts() {
    let mut server = TestServer::start().await;
    let (alice, bob, _, _) = alice_bob_and_carol(&server).await;
    let (phone_token, _) = login_token(&server, &bob).await;
    let before = next_batch(&sync(&alice.client, None, 0).await);
    assert!(device_list_position(&before) > 0, "{before}");

    server.restart().await;
    let alice_client = server.client().with_token(&alice.access_token);
    let after_restart = next_batch(&sync(&alice_client, None, 0).await);
    // Every position handed out before was recorded: the stream resumes from the recorded
    // high-water mark, past the margin kept for positions released unrecorded.
    assert_eq!(
        device_list_position(&after_restart),
        device_list_position(&before) + RESTART_MARGIN,
        "{before} {after_restart}"
    );
    // A change after the restart is after every token handed out before it.
    login(&server, &bob).await;
    let (changed, _, token) = changes_since(&alice_client, &before).await;
    assert_eq!(changed, set(&[&bob.user_id]));
    assert!(device_list_position(&token) > device_list_position(&after_restart));

    server.restart().await;
    let alice_client = server.client().with_token(&alice.access_token);
    let (changed, _, _) = changes_since(&alice_client, &token).await;
    assert_eq!(changed, set(&[]), "nothing changed since, restart or not");
    // The device logged in before the restarts is still there; deleting it is a change.
    let phone = server.client().with_token(&phone_token);
    phone.request(Method::POST, "/_matrix/client/v3/logout", Some(&json!({}))).await.expect(200);
    let (changed, _, _) = changes_since(&alice_client, &token).await;
    assert_eq!(changed, set(&[&bob.user_id]));
}

#[tokio::test]
async fn a_device_change_dropped_at_any_await_is_still_published() {
    let server = TestServer::start().await;
    let (alice, bob, _, _) = alice_bob_and_carol(&server).await;
    let (_, phone_id) = login(&server, &bob).await;
    let token = next_batch(&sync(&alice.client, None, 0).await);
    let services = server.services().clone();
    let bob_id = ruma::UserId::parse(&bob.user_id).unwrap();

    // Renaming, then deleting, dropped after each of their awaits in turn until one completes.
    let name = Some("Dropped");
    let (_, renamed) = cancel_at_every_await(|| services.rename_device(&bob_id, &phone_id, name), 200).await;
    renamed.unwrap();
    assert_streams_settle(&services).await;
    let (changed, _, token) = changes_since(&alice.client, &token).await;
    assert_eq!(changed, set(&[&bob.user_id]));

    let devices = [phone_id.clone()];
    // (On SQLite a deletion can complete at its first poll when its commit needs no wait, so
    // how many runs were dropped is not asserted: what matters is that none left a position.)
    let (_, deleted) = cancel_at_every_await(|| services.delete_devices(&bob_id, &devices), 200).await;
    deleted.unwrap();
    assert_streams_settle(&services).await;
    let (changed, _, _) = changes_since(&alice.client, &token).await;
    assert_eq!(changed, set(&[&bob.user_id]), "the deletion reached Alice's sync");
    assert!(services.list_devices(&bob_id).await.unwrap().iter().all(|d| d.device_id != phone_id));
}
