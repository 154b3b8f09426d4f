//! Server-side key backup over HTTP: `/room_keys/version[/{version}]` (create, current, by
//! version, update, delete) and `/room_keys/keys[/{roomId}[/{sessionId}]]` (PUT / GET / DELETE
//! with `etag` and `count`), the spec's rule for replacing a stored session, stale and deleted
//! versions, and bad input that leaves nothing written.

use myelin_service::auth::ClientInfo;
use myelin_service::key_backup::{KeyBackupData, RoomKeys};
use myelin_test_support::cancel::poll_at_most;
use myelin_test_support::{TestClient, TestServer};
use serde_json::{Value, json};

use crate::rooms::urlencode;

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const VERSION: &str = "/_matrix/client/v3/room_keys/version";
const ROOM: &str = "!room:test.local";
const OTHER_ROOM: &str = "!other:test.local";

fn auth_data(public_key: &str) -> Value {
    json!({"public_key": public_key, "signatures": {"@alice:test.local": {"ed25519:DEV": "sig"}}})
}

async fn create_version(client: &TestClient, public_key: &str) -> String {
    let body = json!({"algorithm": ALGORITHM, "auth_data": auth_data(public_key)});
    let response = client.post(VERSION, &body).await.expect(200).clone();
    let object = response.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{response}");
    response["version"].as_str().expect("version is a string").to_owned()
}

/// The key data of a session, with `data` as its (opaque) encrypted payload.
fn session(first_message_index: u64, forwarded_count: u64, is_verified: bool, data: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {"ephemeral": "eph", "ciphertext": data, "mac": "mac"},
    })
}

/// `/room_keys/keys[/{roomId}[/{sessionId}]]?version=...` (room and session percent-encoded).
fn keys_path(room_id: Option<&str>, session_id: Option<&str>, version: &str) -> String {
    let mut path = "/_matrix/client/v3/room_keys/keys".to_owned();
    for segment in [room_id, session_id].into_iter().flatten() {
        path.push('/');
        path.push_str(&urlencode(segment));
    }
    format!("{path}?version={}", urlencode(version))
}

/// The `{etag, count}` answer of a write to the keys.
fn etag_and_count(response: &Value) -> (String, i64) {
    let object = response.as_object().expect("an object");
    assert_eq!(object.len(), 2, "{response}");
    (
        response["etag"].as_str().expect("etag is a string").to_owned(),
        response["count"].as_i64().expect("count is an integer"),
    )
}

async fn put_session(client: &TestClient, version: &str, session_id: &str, key: &Value) -> (String, i64) {
    etag_and_count(client.put(&keys_path(Some(ROOM), Some(session_id), version), key).await.expect(200))
}

async fn get_session(client: &TestClient, version: &str, session_id: &str) -> Value {
    client.get(&keys_path(Some(ROOM), Some(session_id), version)).await.expect(200).clone()
}

async fn version_info(client: &TestClient, version: &str) -> Value {
    client.get(&format!("{VERSION}/{version}")).await.expect(200).clone()
}

#[tokio::test]
async fn backup_versions_are_created_read_updated_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = &alice.client;

    client.get(VERSION).await.expect_error(404, "M_NOT_FOUND");
    client.get(&format!("{VERSION}/1")).await.expect_error(404, "M_NOT_FOUND");

    let first = create_version(client, "key1").await;
    let current = client.get(VERSION).await.expect(200).clone();
    assert_eq!(
        current,
        json!({
            "version": first,
            "algorithm": ALGORITHM,
            "auth_data": auth_data("key1"),
            "count": 0,
            "etag": current["etag"].as_str().expect("etag is a string"),
        })
    );
    assert_eq!(version_info(client, &first).await, current);

    let second = create_version(client, "key2").await;
    assert_ne!(second, first);
    assert_eq!(client.get(VERSION).await.expect(200)["version"], second.as_str());

    // Only auth_data changes; a `version` in the body must match the path.
    let update = json!({"algorithm": ALGORITHM, "auth_data": auth_data("key1b"), "version": first});
    assert_eq!(client.put(&format!("{VERSION}/{first}"), &update).await.expect(200), &json!({}));
    let update = json!({"algorithm": ALGORITHM, "auth_data": auth_data("key1c")});
    assert_eq!(client.put(&format!("{VERSION}/{first}"), &update).await.expect(200), &json!({}));
    let info = version_info(client, &first).await;
    assert_eq!((&info["auth_data"], &info["algorithm"]), (&auth_data("key1c"), &json!(ALGORITHM)));
    assert_eq!(version_info(client, &second).await["auth_data"], auth_data("key2"));

    // Deleting the current version: it is gone, the one before is current again, and deleting
    // it again succeeds as the spec asks.
    assert_eq!(client.delete(&format!("{VERSION}/{second}")).await.expect(200), &json!({}));
    client.get(&format!("{VERSION}/{second}")).await.expect_error(404, "M_NOT_FOUND");
    assert_eq!(client.get(VERSION).await.expect(200)["version"], first.as_str());
    assert_eq!(client.delete(&format!("{VERSION}/{second}")).await.expect(200), &json!({}));
    let update = json!({"algorithm": ALGORITHM, "auth_data": auth_data("again")});
    client.put(&format!("{VERSION}/{second}"), &update).await.expect_error(404, "M_NOT_FOUND");
    // A version number is never handed out twice.
    let third = create_version(client, "key3").await;
    assert!(third != first && third != second, "{third}");

    // Versions that never existed.
    for unknown in ["99", "abc", "0", "-1"] {
        client.get(&format!("{VERSION}/{unknown}")).await.expect_error(404, "M_NOT_FOUND");
        client.delete(&format!("{VERSION}/{unknown}")).await.expect_error(404, "M_NOT_FOUND");
        client.put(&format!("{VERSION}/{unknown}"), &update).await.expect_error(404, "M_NOT_FOUND");
    }

    // Bob sees none of Alice's backups.
    let bob = server.register("bob").await;
    bob.client.get(VERSION).await.expect_error(404, "M_NOT_FOUND");
    bob.client.get(&format!("{VERSION}/{first}")).await.expect_error(404, "M_NOT_FOUND");
    bob.client.delete(&format!("{VERSION}/{first}")).await.expect_error(404, "M_NOT_FOUND");
    bob.client.get(&keys_path(None, None, &first)).await.expect_error(404, "M_NOT_FOUND");
    assert_eq!(version_info(client, &first).await["auth_data"], auth_data("key1c"));

    // Without an access token.
    server.client().get(VERSION).await.expect_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn updating_a_version_checks_its_algorithm_and_version() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = &alice.client;
    let version = create_version(client, "key").await;
    let path = format!("{VERSION}/{version}");

    let other_algorithm = json!({"algorithm": "org.example.other", "auth_data": auth_data("new")});
    client.put(&path, &other_algorithm).await.expect_error(400, "M_INVALID_PARAM");
    let other_version = json!({"algorithm": ALGORITHM, "auth_data": auth_data("new"), "version": "77"});
    client.put(&path, &other_version).await.expect_error(400, "M_INVALID_PARAM");
    for bad_auth_data in [json!("a string"), json!(["array"]), json!(1), Value::Null] {
        let body = json!({"algorithm": ALGORITHM, "auth_data": bad_auth_data});
        client.put(&path, &body).await.expect_error(400, "M_BAD_JSON");
    }
    client.put(&path, &json!({"auth_data": auth_data("new")})).await.expect_error(400, "M_BAD_JSON");
    assert_eq!(version_info(client, &version).await["auth_data"], auth_data("key"));
}

#[tokio::test]
async fn creating_a_version_refuses_bad_bodies() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = &alice.client;
    for bad_auth_data in [json!("dGhpcyBzaG91bGQ="), json!(["array"]), json!(true), Value::Null] {
        let body = json!({"algorithm": ALGORITHM, "auth_data": bad_auth_data});
        client.post(VERSION, &body).await.expect_error(400, "M_BAD_JSON");
    }
    client.post(VERSION, &json!({"auth_data": {}})).await.expect_error(400, "M_BAD_JSON");
    client.post(VERSION, &json!({"algorithm": ALGORITHM})).await.expect_error(400, "M_BAD_JSON");
    client.post(VERSION, &json!({"algorithm": 5, "auth_data": {}})).await.expect_error(400, "M_BAD_JSON");
    client
        .post(VERSION, &json!({"algorithm": "", "auth_data": {}}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let response = client.request_raw(reqwest::Method::POST, VERSION, Some("not json".into()), &[]).await;
    response.expect_error(400, "M_NOT_JSON");
    // None of them created anything.
    client.get(VERSION).await.expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn keys_are_stored_read_and_deleted_on_every_route() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = &alice.client;
    let version = create_version(client, "key").await;

    // One session.
    let (etag1, count) = put_session(client, &version, "s1", &session(0, 0, false, "one")).await;
    assert_eq!(count, 1);
    assert_eq!(get_session(client, &version, "s1").await, session(0, 0, false, "one"));

    // A room's sessions.
    let room_body =
        json!({"sessions": {"s2": session(1, 0, true, "two"), "s3": session(2, 1, false, "three")}});
    let response = client.put(&keys_path(Some(ROOM), None, &version), &room_body).await;
    let (etag2, count) = etag_and_count(response.expect(200));
    assert_eq!(count, 3);
    assert_ne!(etag2, etag1);

    // Several rooms.
    let all_body = json!({"rooms": {OTHER_ROOM: {"sessions": {"s1": session(5, 0, false, "four")}}}});
    let (etag3, count) =
        etag_and_count(client.put(&keys_path(None, None, &version), &all_body).await.expect(200));
    assert_eq!(count, 4);
    assert!(![&etag1, &etag2].contains(&&etag3));

    let info = version_info(client, &version).await;
    assert_eq!((info["count"].as_i64(), info["etag"].as_str()), (Some(4), Some(etag3.as_str())));

    let everything = client.get(&keys_path(None, None, &version)).await.expect(200).clone();
    assert_eq!(
        everything,
        json!({"rooms": {
            ROOM: {"sessions": {
                "s1": session(0, 0, false, "one"),
                "s2": session(1, 0, true, "two"),
                "s3": session(2, 1, false, "three"),
            }},
            OTHER_ROOM: {"sessions": {"s1": session(5, 0, false, "four")}},
        }})
    );
    let room = client.get(&keys_path(Some(OTHER_ROOM), None, &version)).await.expect(200).clone();
    assert_eq!(room, json!({"sessions": {"s1": session(5, 0, false, "four")}}));
    // A room without keys is an empty `sessions` (the spec), a missing session M_NOT_FOUND.
    let empty = client.get(&keys_path(Some("!empty:test.local"), None, &version)).await.expect(200).clone();
    assert_eq!(empty, json!({"sessions": {}}));
    client.get(&keys_path(Some(ROOM), Some("nope"), &version)).await.expect_error(404, "M_NOT_FOUND");
    client
        .get(&keys_path(Some("!empty:test.local"), Some("s1"), &version))
        .await
        .expect_error(404, "M_NOT_FOUND");

    // Deleting: one session, then a room, then everything; each changes etag and count.
    let response = client.delete(&keys_path(Some(ROOM), Some("s1"), &version)).await;
    let (etag4, count) = etag_and_count(response.expect(200));
    assert_eq!(count, 3);
    assert_ne!(etag4, etag3);
    client.get(&keys_path(Some(ROOM), Some("s1"), &version)).await.expect_error(404, "M_NOT_FOUND");
    let (etag5, count) =
        etag_and_count(client.delete(&keys_path(Some(ROOM), None, &version)).await.expect(200));
    assert_eq!(count, 1);
    assert_ne!(etag5, etag4);
    assert_eq!(
        client.get(&keys_path(Some(ROOM), None, &version)).await.expect(200),
        &json!({"sessions": {}})
    );
    let (etag6, count) = etag_and_count(client.delete(&keys_path(None, None, &version)).await.expect(200));
    assert_eq!(count, 0);
    assert_ne!(etag6, etag5);
    assert_eq!(client.get(&keys_path(None, None, &version)).await.expect(200), &json!({"rooms": {}}));
    let info = version_info(client, &version).await;
    assert_eq!((info["count"].as_i64(), info["etag"].as_str()), (Some(0), Some(etag6.as_str())));

    // The r0 prefix serves the same routes.
    let response = client.get(&format!("/_matrix/client/r0/room_keys/version/{version}")).await;
    assert_eq!(response.expect(200)["version"], version.as_str());
}

#[tokio::test]
async fn a_stored_session_is_replaced_only_by_a_better_key() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = &alice.client;
    let version = create_version(client, "key").await;

    // Each step: (upload, replaced?). The stored key after each step is the last one replaced.
    let steps = [
        (session(10, 5, false, "first"), true),
        // Everything equal, other data: the stored key stays.
        (session(10, 5, false, "equal"), false),
        // Unverified: a higher forwarded_count loses, a lower one wins.
        (session(10, 6, false, "more forwarded"), false),
        (session(10, 4, false, "less forwarded"), true),
        // A higher first_message_index loses even with a lower forwarded_count.
        (session(11, 0, false, "later index"), false),
        // A lower first_message_index wins even with a higher forwarded_count.
        (session(9, 9, false, "earlier index"), true),
        // Verified beats unverified whatever the index and the count.
        (session(50, 50, true, "verified"), true),
        // Unverified never beats verified, even with a lower index and count.
        (session(0, 0, false, "unverified but earlier"), false),
        // Between verified keys the same order applies.
        (session(50, 49, true, "verified, less forwarded"), true),
        (session(51, 0, true, "verified, later index"), false),
        (session(49, 99, true, "verified, earlier index"), true),
        (session(49, 99, true, "verified, equal"), false),
    ];
    let mut stored = Value::Null;
    let mut etag = String::new();
    for (n, (key, replaced)) in steps.into_iter().enumerate() {
        let (new_etag, count) = put_session(client, &version, "s", &key).await;
        assert_eq!(count, 1, "step {n}");
        if replaced {
            stored = key;
            assert_ne!(new_etag, etag, "step {n}: a replacement changes the etag");
        } else {
            assert_eq!(new_etag, etag, "step {n}: a kept key leaves the etag");
        }
        etag = new_etag;
        assert_eq!(get_session(client, &version, "s").await, stored, "step {n}");
    }

    // The same rule for keys uploaded by room and for all rooms at once.
    let body = json!({"sessions": {"s": session(49, 98, true, "by room")}});
    client.put(&keys_path(Some(ROOM), None, &version), &body).await.expect(200);
    assert_eq!(get_session(client, &version, "s").await["session_data"]["ciphertext"], "by room");
    let body = json!({"rooms": {ROOM: {"sessions": {"s": session(49, 99, true, "all rooms, worse")}}}});
    client.put(&keys_path(None, None, &version), &body).await.expect(200);
    assert_eq!(get_session(client, &version, "s").await["session_data"]["ciphertext"], "by room");
}

#[tokio::test]
async fn keys_go_to_the_current_version_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = &alice.client;
    let key = session(0, 0, false, "k");

    // No backup at all.
    client.put(&keys_path(Some(ROOM), Some("s"), "1"), &key).await.expect_error(404, "M_NOT_FOUND");
    client.get(&keys_path(None, None, "1")).await.expect_error(404, "M_NOT_FOUND");
    client.delete(&keys_path(None, None, "1")).await.expect_error(404, "M_NOT_FOUND");

    let old = create_version(client, "old").await;
    put_session(client, &old, "s", &key).await;
    let current = create_version(client, "new").await;

    // A stale version: 403 with the current one, on every PUT route, and nothing written.
    let response = client.put(&keys_path(Some(ROOM), Some("t"), &old), &key).await;
    response.expect_error(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(response.json["current_version"], current.as_str());
    let room_body = json!({"sessions": {"t": key}});
    let response = client.put(&keys_path(Some(ROOM), None, &old), &room_body).await;
    response.expect_error(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(response.json["current_version"], current.as_str());
    let all_body = json!({"rooms": {ROOM: room_body}});
    let response = client.put(&keys_path(None, None, &old), &all_body).await;
    response.expect_error(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(response.json["current_version"], current.as_str());
    assert_eq!(version_info(client, &old).await["count"], 1);

    // The old version can still be read and cleared.
    assert_eq!(get_session(client, &old, "s").await, key);
    let (_, count) = etag_and_count(client.delete(&keys_path(Some(ROOM), Some("s"), &old)).await.expect(200));
    assert_eq!(count, 0);

    // Unknown versions are M_NOT_FOUND on every route.
    for unknown in ["99", "abc"] {
        client.put(&keys_path(Some(ROOM), Some("s"), unknown), &key).await.expect_error(404, "M_NOT_FOUND");
        client.put(&keys_path(Some(ROOM), None, unknown), &room_body).await.expect_error(404, "M_NOT_FOUND");
        client.put(&keys_path(None, None, unknown), &all_body).await.expect_error(404, "M_NOT_FOUND");
        client.get(&keys_path(Some(ROOM), Some("s"), unknown)).await.expect_error(404, "M_NOT_FOUND");
        client.get(&keys_path(Some(ROOM), None, unknown)).await.expect_error(404, "M_NOT_FOUND");
        client.get(&keys_path(None, None, unknown)).await.expect_error(404, "M_NOT_FOUND");
        client.delete(&keys_path(Some(ROOM), Some("s"), unknown)).await.expect_error(404, "M_NOT_FOUND");
        client.delete(&keys_path(Some(ROOM), None, unknown)).await.expect_error(404, "M_NOT_FOUND");
        client.delete(&keys_path(None, None, unknown)).await.expect_error(404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn a_deleted_version_takes_its_keys_with_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = &alice.client;
    let first = create_version(client, "first").await;
    let second = create_version(client, "second").await;
    put_session(client, &second, "s", &session(0, 0, false, "k")).await;

    client.delete(&format!("{VERSION}/{second}")).await.expect(200);
    client.get(&format!("{VERSION}/{second}")).await.expect_error(404, "M_NOT_FOUND");
    client.get(&keys_path(None, None, &second)).await.expect_error(404, "M_NOT_FOUND");
    client.get(&keys_path(Some(ROOM), Some("s"), &second)).await.expect_error(404, "M_NOT_FOUND");
    client.delete(&keys_path(None, None, &second)).await.expect_error(404, "M_NOT_FOUND");
    // Uploads to it are refused as unknown; the version before it is current again.
    let response = client.put(&keys_path(Some(ROOM), Some("s"), &second), &session(0, 0, false, "k")).await;
    response.expect_error(404, "M_NOT_FOUND");
    let (_, count) = put_session(client, &first, "s", &session(0, 0, false, "k")).await;
    assert_eq!(count, 1);

    // Deleting the last version leaves no backup.
    client.delete(&format!("{VERSION}/{first}")).await.expect(200);
    client.get(VERSION).await.expect_error(404, "M_NOT_FOUND");
    client
        .put(&keys_path(Some(ROOM), Some("s"), &first), &session(0, 0, false, "k"))
        .await
        .expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn bad_key_uploads_are_refused_and_write_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = &alice.client;
    let version = create_version(client, "key").await;
    let good = session(0, 0, false, "good");
    put_session(client, &version, "kept", &good).await;
    let before = version_info(client, &version).await;

    // The version query parameter is required.
    let path = format!("/_matrix/client/v3/room_keys/keys/{}/s", urlencode(ROOM));
    client.put(&path, &good).await.expect_error(400, "M_MISSING_PARAM");
    client.get(&path).await.expect_error(400, "M_MISSING_PARAM");
    client.delete(&path).await.expect_error(400, "M_MISSING_PARAM");
    client.get("/_matrix/client/v3/room_keys/keys").await.expect_error(400, "M_MISSING_PARAM");

    // Malformed session data.
    let mut malformed = Vec::new();
    for field in ["first_message_index", "forwarded_count", "is_verified", "session_data"] {
        let mut key = good.clone();
        key.as_object_mut().unwrap().remove(field);
        malformed.push(key);
    }
    for (field, value) in [
        ("first_message_index", json!(-1)),
        ("first_message_index", json!(1.5)),
        ("first_message_index", json!("1")),
        ("first_message_index", json!(u64::MAX)),
        ("forwarded_count", json!(-3)),
        ("is_verified", json!("true")),
        ("is_verified", json!(1)),
        ("session_data", json!("SSBBTSBBIEZJU0gK")),
        ("session_data", json!(["a"])),
    ] {
        let mut key = good.clone();
        key[field] = value;
        malformed.push(key);
    }
    for key in &malformed {
        let response = client.put(&keys_path(Some(ROOM), Some("bad"), &version), key).await;
        response.expect_error(400, "M_BAD_JSON");
        // In a batch with good keys, none of them is written.
        let body = json!({"sessions": {"a": good, "bad": key}});
        client.put(&keys_path(Some(ROOM), None, &version), &body).await.expect_error(400, "M_BAD_JSON");
        let body =
            json!({"rooms": {OTHER_ROOM: {"sessions": {"a": good}}, ROOM: {"sessions": {"bad": key}}}});
        client.put(&keys_path(None, None, &version), &body).await.expect_error(400, "M_BAD_JSON");
    }
    client.put(&keys_path(Some(ROOM), None, &version), &json!({})).await.expect_error(400, "M_BAD_JSON");
    client
        .put(&keys_path(Some(ROOM), None, &version), &json!({"sessions": []}))
        .await
        .expect_error(400, "M_BAD_JSON");
    client
        .put(&keys_path(None, None, &version), &json!({"sessions": {}}))
        .await
        .expect_error(400, "M_BAD_JSON");
    client
        .put(&keys_path(None, None, &version), &json!({"rooms": {ROOM: []}}))
        .await
        .expect_error(400, "M_BAD_JSON");

    // Room IDs that are not room IDs, in the path and in the body.
    for bad_room in ["not-a-room", "@user:test.local", "#alias:test.local"] {
        let response = client.put(&keys_path(Some(bad_room), Some("s"), &version), &good).await;
        response.expect_error(400, "M_INVALID_PARAM");
        client.get(&keys_path(Some(bad_room), None, &version)).await.expect_error(400, "M_INVALID_PARAM");
        client.delete(&keys_path(Some(bad_room), None, &version)).await.expect_error(400, "M_INVALID_PARAM");
        let body =
            json!({"rooms": {OTHER_ROOM: {"sessions": {"a": good}}, bad_room: {"sessions": {"s": good}}}});
        client.put(&keys_path(None, None, &version), &body).await.expect_error(400, "M_INVALID_PARAM");
    }
    // An empty session ID in a body.
    let body = json!({"sessions": {"a": good, "": good}});
    client.put(&keys_path(Some(ROOM), None, &version), &body).await.expect_error(400, "M_INVALID_PARAM");

    // Nothing was written: same count, same etag, same keys.
    assert_eq!(version_info(client, &version).await, before);
    let everything = client.get(&keys_path(None, None, &version)).await.expect(200).clone();
    assert_eq!(everything, json!({"rooms": {ROOM: {"sessions": {"kept": good}}}}));
}

#[tokio::test]
async fn backups_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let version = create_version(&alice.client, "key").await;
    let (etag, _) = put_session(&alice.client, &version, "s", &session(3, 1, true, "kept")).await;
    server.restart().await;
    let client = server.client().with_token(&alice.access_token);
    let info = version_info(&client, &version).await;
    assert_eq!((info["count"].as_i64(), info["etag"].as_str()), (Some(1), Some(etag.as_str())));
    assert_eq!(get_session(&client, &version, "s").await, session(3, 1, true, "kept"));
    // Numbering goes on after the restart.
    let next = create_version(&client, "next").await;
    assert_ne!(next, version);
}

/// An upload whose future is dropped after each of its suspension points in turn (as hyper
/// drops a request's future when its client goes away) writes all of its sessions or none, and
/// never leaves the etag out of step with them.
#[tokio::test]
async fn an_upload_dropped_at_any_await_writes_all_or_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let services = server.services().clone();
    let client_info = ClientInfo { ip: None, user_agent: None };
    let requester = services.authenticate(&alice.access_token, &client_info).await.unwrap();
    let room_id = ruma::RoomId::parse(ROOM).unwrap();
    let key = |n: i64| KeyBackupData {
        first_message_index: n,
        forwarded_count: 0,
        is_verified: false,
        session_data: serde_json::Map::new(),
    };
    let keys: RoomKeys = RoomKeys::from([(room_id, (0..3).map(|n| (format!("s{n}"), key(n))).collect())]);

    for polls in 1.. {
        assert!(polls < 500, "the upload never completed");
        // A fresh (current) version for each attempt.
        let version = create_version(&alice.client, "key").await;
        let before = version_info(&alice.client, &version).await["etag"].clone();
        let outcome = poll_at_most(services.put_room_keys(&requester, &version, &keys), polls).await;
        let info = version_info(&alice.client, &version).await;
        let count = info["count"].as_i64().unwrap();
        if let Some(update) = outcome {
            let update = update.unwrap();
            assert_eq!((update.count, update.etag.as_str()), (3, info["etag"].as_str().unwrap()));
            assert_eq!(count, 3);
            break;
        }
        assert!(count == 0 || count == 3, "dropped after {polls} polls: {count} sessions written");
        // The etag moved exactly when the keys did.
        assert_eq!(count == 0, info["etag"] == before, "dropped after {polls} polls: {info}");
    }
}

/// Guests have no key backup, as in Synapse (`allow_guest=False`).
#[tokio::test]
async fn guests_cannot_use_key_backup() {
    let server = TestServer::start_with(json!({"allow_guest_access": true})).await;
    let guest =
        server.client().post("/_matrix/client/v3/register?kind=guest", &json!({})).await.expect(200).clone();
    let client = server.client().with_token(guest["access_token"].as_str().unwrap());
    let body = json!({"algorithm": ALGORITHM, "auth_data": auth_data("key")});
    client.post(VERSION, &body).await.expect_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    client.get(VERSION).await.expect_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    client.get(&keys_path(None, None, "1")).await.expect_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    let key = session(0, 0, false, "k");
    client
        .put(&keys_path(Some(ROOM), Some("s"), "1"), &key)
        .await
        .expect_error(403, "M_GUEST_ACCESS_FORBIDDEN");
}
