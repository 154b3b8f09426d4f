//! Bad bytes and numbers: NUL characters anywhere a client can put them, stream tokens at the
//! edge of `i64`, identifiers over 255 bytes, and empty bodies. Run on both engines: NUL
//! failures are PostgreSQL-only when they reach the store.

use myelin_test_support::{TestResponse, TestServer, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

const CLIENT: &str = "/_matrix/client/v3";

/// `i64::MAX`: a position whose successor does not fit.
const MAX: &str = "9223372036854775807";

async fn create_room(user: &TestUser) -> String {
    let created = user.client.post(&format!("{CLIENT}/createRoom"), &json!({})).await;
    created.expect(200)["room_id"].as_str().unwrap().to_owned()
}

/// Percent-encodes everything but the unreserved characters.
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn nul_characters_in_bodies_are_bad_json() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = enc(&create_room(&alice).await);
    let user = enc(&alice.user_id);
    let device = enc(&alice.device_id);
    let cases: Vec<(Method, String, Value)> = vec![
        (Method::PUT, format!("{CLIENT}/devices/{device}"), json!({"display_name": "pho\u{0}ne"})),
        (
            Method::PUT,
            format!("{CLIENT}/rooms/{room}/send/m.room.message/t1"),
            json!({"msgtype": "m.text", "body": "a\u{0}b"}),
        ),
        (
            Method::PUT,
            format!("{CLIENT}/rooms/{room}/send/m.room.message/t2"),
            json!({"msgtype": "m.text", "body": "x", "k\u{0}ey": 1}),
        ),
        (Method::PUT, format!("{CLIENT}/rooms/{room}/state/m.room.topic"), json!({"topic": ["\u{0}"]})),
        (Method::PUT, format!("{CLIENT}/user/{user}/account_data/org.example"), json!({"a": {"b": "\u{0}"}})),
        (
            Method::PUT,
            format!("{CLIENT}/user/{user}/rooms/{room}/tags/u.work"),
            json!({"order": 0.5, "n": "\u{0}"}),
        ),
        (
            Method::POST,
            format!("{CLIENT}/user/{user}/filter"),
            json!({"room": {"timeline": {"types": ["m.\u{0}"]}}}),
        ),
        (Method::PUT, format!("{CLIENT}/profile/{user}/displayname"), json!({"displayname": "Al\u{0}ice"})),
        (
            Method::POST,
            format!("{CLIENT}/search"),
            json!({"search_categories": {"room_events": {"search_term": "he\u{0}llo"}}}),
        ),
        (Method::POST, format!("{CLIENT}/user_directory/search"), json!({"search_term": "al\u{0}"})),
        (
            Method::POST,
            format!("{CLIENT}/pushers/set"),
            json!({
                "kind": "http", "app_id": "org.example", "pushkey": "key\u{0}", "app_display_name": "x",
                "device_display_name": "y", "lang": "en", "data": {"url": "http://127.0.0.1/_matrix/push/v1/notify"},
            }),
        ),
        (
            Method::POST,
            format!("{CLIENT}/login"),
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "ali\u{0}ce"}, "password": "x"}),
        ),
        (Method::POST, format!("{CLIENT}/rooms/{room}/leave"), json!({"reason": "\u{0}"})),
    ];
    for (method, path, body) in cases {
        let response = alice.client.request(method.clone(), &path, Some(&body)).await;
        assert_eq!(
            (response.status, response.errcode()),
            (400, Some("M_BAD_JSON")),
            "{method} {path}: {}",
            response.json
        );
    }
    // Nothing was written.
    let profile = alice.client.get(&format!("{CLIENT}/profile/{user}/displayname")).await;
    assert_eq!(profile.expect(200)["displayname"], "alice");
    let devices = alice.client.get(&format!("{CLIENT}/devices/{device}")).await;
    assert!(devices.expect(200).get("display_name").is_none_or(Value::is_null));
    alice
        .client
        .get(&format!("{CLIENT}/user/{user}/account_data/org.example"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice.client.get(&format!("{CLIENT}/rooms/{room}/joined_members")).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn nul_characters_in_paths_and_queries_are_invalid_params() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = enc(&create_room(&alice).await);
    let user = enc(&alice.user_id);
    let cases: Vec<(Method, String)> = vec![
        (Method::PUT, format!("{CLIENT}/rooms/{room}/send/m.room.mes%00sage/t1")),
        (Method::PUT, format!("{CLIENT}/rooms/{room}/send/m.room.message/t%00x")),
        (Method::PUT, format!("{CLIENT}/rooms/{room}/state/org.example.state/key%00")),
        (Method::PUT, format!("{CLIENT}/rooms/{room}/state/org.exa%00mple")),
        (Method::PUT, format!("{CLIENT}/user/{user}/account_data/org.%00example")),
        (Method::PUT, format!("{CLIENT}/user/{user}/rooms/{room}/tags/u.%00work")),
        (Method::PUT, format!("{CLIENT}/devices/dev%00ice")),
        (Method::GET, format!("{CLIENT}/rooms/{room}/messages?dir=b&from=s1%00")),
        (Method::GET, format!("{CLIENT}/sync?filter=%00&timeout=0")),
        (Method::GET, format!("{CLIENT}/notifications?only=high%00light")),
        (Method::GET, format!("{CLIENT}/publicRooms?since=%00")),
    ];
    for (method, path) in cases {
        let body = (method == Method::PUT).then(|| json!({"body": "x", "msgtype": "m.text"}));
        let response = alice.client.request(method.clone(), &path, body.as_ref()).await;
        assert_eq!(
            (response.status, response.errcode()),
            (400, Some("M_INVALID_PARAM")),
            "{method} {path}: {}",
            response.json
        );
    }
    // A filter given inline in the query holds JSON: a NUL escaped in it is bad JSON.
    let filter = enc(&json!({"types": ["m.\u{0}"]}).to_string());
    let messages = alice.client.get(&format!("{CLIENT}/rooms/{room}/messages?dir=b&filter={filter}")).await;
    messages.expect_error(400, "M_BAD_JSON");
    let filter = enc(&json!({"room": {"timeline": {"not_senders": ["@\u{0}:x"]}}}).to_string());
    alice
        .client
        .get(&format!("{CLIENT}/sync?timeout=0&filter={filter}"))
        .await
        .expect_error(400, "M_BAD_JSON");

    let state = alice.client.get(&format!("{CLIENT}/rooms/{room}/state")).await;
    let state = state.expect(200).as_array().unwrap().clone();
    assert!(state.iter().all(|event| !event["type"].as_str().unwrap().contains('\0')));
    server.stop().await;
}

/// The registration token `token`'s `(completed, pending)` uses.
async fn token_uses(admin: &TestUser, token: &str) -> (i64, i64) {
    let record = admin.client.get(&format!("/_synapse/admin/v1/registration_tokens/{token}")).await;
    let record = record.expect(200);
    (record["completed"].as_i64().unwrap(), record["pending"].as_i64().unwrap())
}

/// A server whose registrations need a token, with an admin and the single-use token `once`.
async fn token_gated_server() -> (TestServer, TestUser) {
    let server = TestServer::start_with(json!({"registration_requires_token": true})).await;
    let admin = server.register_admin("admin").await;
    admin
        .client
        .post("/_synapse/admin/v1/registration_tokens/new", &json!({"token": "once", "uses_allowed": 1}))
        .await
        .expect(200);
    (server, admin)
}

/// Registers `username` with the token `once`.
async fn register_with_token(server: &TestServer, username: &str, device_id: Option<&str>) -> TestResponse {
    let mut body = json!({
        "username": username, "password": "pw-123456",
        "auth": {"type": "m.login.registration_token", "token": "once"},
    });
    if let Some(device_id) = device_id {
        body["device_id"] = json!(device_id);
    }
    server.client().post(&format!("{CLIENT}/register"), &body).await
}

#[tokio::test]
async fn a_nul_in_a_registration_is_refused_before_the_token_is_used() {
    let (server, admin) = token_gated_server().await;
    register_with_token(&server, "car\u{0}ol", None).await.expect_error(400, "M_BAD_JSON");
    let mut body = json!({"username": "carol", "password": "pw-123456", "auth": {"type": "m.login.registration_token", "token": "once"}});
    body["initial_device_display_name"] = json!("pho\u{0}ne");
    server.client().post(&format!("{CLIENT}/register"), &body).await.expect_error(400, "M_BAD_JSON");
    assert_eq!(token_uses(&admin, "once").await, (0, 0));
    let available = server.client().get(&format!("{CLIENT}/register/available?username=carol")).await;
    assert_eq!(available.expect(200)["available"], true);
    server.stop().await;
}

#[tokio::test]
async fn a_failed_registration_leaves_no_user_and_keeps_the_token() {
    let (server, admin) = token_gated_server().await;
    let client = server.client();
    // A device ID refused after the token stage: no account, and the token's use is given back.
    let too_long = "d".repeat(600);
    register_with_token(&server, "carol", Some(&too_long)).await.expect_error(400, "M_INVALID_PARAM");
    assert_eq!(token_uses(&admin, "once").await, (0, 0));
    let available = client.get(&format!("{CLIENT}/register/available?username=carol")).await;
    assert_eq!(available.expect(200)["available"], true);
    client
        .post(
            &format!("{CLIENT}/login"),
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "carol"}, "password": "pw-123456"}),
        )
        .await
        .expect_error(403, "M_FORBIDDEN");

    // The single use still registers the account, with its device.
    let done = register_with_token(&server, "carol", Some("PHONE")).await;
    let body = done.expect(200).clone();
    assert_eq!(body["user_id"], "@carol:test.local");
    assert_eq!(body["device_id"], "PHONE");
    assert_eq!(token_uses(&admin, "once").await, (1, 0));
    let whoami = client
        .with_token(body["access_token"].as_str().unwrap())
        .get(&format!("{CLIENT}/account/whoami"))
        .await;
    assert_eq!(whoami.expect(200)["device_id"], "PHONE");
    server.stop().await;
}

#[tokio::test]
async fn stream_tokens_at_the_edge_of_i64_are_invalid_params() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice).await;
    let room_path = enc(&room);
    let sent = alice
        .client
        .put(
            &format!("{CLIENT}/rooms/{room_path}/send/m.room.message/t1"),
            &json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    let event_id = enc(sent.expect(200)["event_id"].as_str().unwrap());
    let paths = [
        format!("{CLIENT}/sync?timeout=0&since=s{MAX}_0_0_0_0_0_0"),
        format!("{CLIENT}/sync?timeout=0&since=s1_{MAX}"),
        format!("{CLIENT}/sync?timeout=0&since=s-1_0"),
        format!("{CLIENT}/rooms/{room_path}/messages?dir=f&from=s{MAX}"),
        format!("{CLIENT}/rooms/{room_path}/messages?dir=b&from=s{MAX}"),
        format!("{CLIENT}/rooms/{room_path}/messages?dir=b&to=s{MAX}"),
        format!("{CLIENT}/rooms/{room_path}/messages?dir=b&from=s99999999999999999999"),
        format!("/_matrix/client/v1/rooms/{room_path}/relations/{event_id}?from=s{MAX}"),
        format!("/_matrix/client/v1/rooms/{room_path}/relations/{event_id}?dir=f&to=s{MAX}"),
        format!("/_matrix/client/v1/rooms/{room_path}/threads?from=t{MAX}"),
        format!("{CLIENT}/notifications?from={MAX}"),
        format!("{CLIENT}/notifications?from=-1"),
        format!("/_matrix/client/v1/rooms/{room_path}/timestamp_to_event?dir=f&ts={}", u64::MAX),
    ];
    for path in paths {
        let response = alice.client.get(&path).await;
        assert_eq!(
            (response.status, response.errcode()),
            (400, Some("M_INVALID_PARAM")),
            "{path}: {}",
            response.json
        );
    }
    // The largest usable position still works.
    let near = i64::MAX - 1;
    alice.client.get(&format!("{CLIENT}/rooms/{room_path}/messages?dir=b&from=s{near}")).await.expect(200);

    // A timeline limit beyond `i64` means "as many as allowed", not none.
    let filter = json!({"room": {"timeline": {"limit": u64::MAX}}}).to_string();
    let sync = alice.client.get(&format!("{CLIENT}/sync?timeout=0&filter={}", enc(&filter))).await;
    let timeline = &sync.expect(200)["rooms"]["join"][&room]["timeline"];
    let events = timeline["events"].as_array().expect("timeline events");
    assert!(events.iter().any(|e| e["content"]["body"] == "hi"), "{timeline}");
    server.stop().await;
}

#[tokio::test]
async fn identifiers_over_255_bytes_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = enc(&create_room(&alice).await);
    let user = enc(&alice.user_id);
    let long = format!("org.example.{}", "x".repeat(256 - 12));
    assert_eq!(long.len(), 256);
    let just_fits = &long[..255];
    let message = json!({"msgtype": "m.text", "body": "x"});

    let send = |kind: &str, txn: &str| format!("{CLIENT}/rooms/{room}/send/{kind}/{txn}");
    alice.client.put(&send(&long, "t1"), &message).await.expect_error(413, "M_TOO_LARGE");
    alice.client.put(&send(just_fits, "t2"), &message).await.expect(200);
    // Multi-byte characters count in bytes: 128 × "é" is 256 bytes.
    alice.client.put(&send(&enc(&"é".repeat(128)), "t3"), &message).await.expect_error(413, "M_TOO_LARGE");

    let state = |kind: &str, key: &str| format!("{CLIENT}/rooms/{room}/state/{kind}/{key}");
    alice.client.put(&state("org.example.s", &long), &json!({})).await.expect_error(413, "M_TOO_LARGE");
    alice.client.put(&state(&long, "k"), &json!({})).await.expect_error(413, "M_TOO_LARGE");
    alice.client.put(&state("org.example.s", just_fits), &json!({})).await.expect(200);

    let account_data = format!("{CLIENT}/user/{user}/account_data/{long}");
    alice.client.put(&account_data, &json!({})).await.expect_error(400, "M_INVALID_PARAM");
    let tag = format!("{CLIENT}/user/{user}/rooms/{room}/tags/{long}");
    alice.client.put(&tag, &json!({})).await.expect_error(400, "M_INVALID_PARAM");

    let long_event_id = format!("${}", "e".repeat(300));
    alice
        .client
        .get(&format!("{CLIENT}/rooms/{room}/event/{}", enc(&long_event_id)))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let long_room_id = format!("!{}:test.local", "r".repeat(300));
    alice
        .client
        .get(&format!("{CLIENT}/rooms/{}/state", enc(&long_room_id)))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn empty_bodies_are_not_json_except_where_synapse_allows_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice).await;
    let room = enc(&room_id);
    let user = enc(&alice.user_id);

    let strict = [
        (Method::PUT, format!("{CLIENT}/rooms/{room}/send/m.room.message/t1")),
        (Method::POST, format!("{CLIENT}/createRoom")),
        (Method::PUT, format!("{CLIENT}/rooms/{room}/state/m.room.topic")),
        (Method::PUT, format!("{CLIENT}/user/{user}/account_data/org.example")),
        (Method::PUT, format!("{CLIENT}/profile/{user}/displayname")),
        (Method::POST, format!("{CLIENT}/user/{user}/filter")),
        (Method::POST, format!("{CLIENT}/login")),
        (Method::POST, format!("{CLIENT}/knock/{room}")),
    ];
    for (method, path) in strict {
        for body in [None, Some(Vec::new()), Some(b" \n".to_vec())] {
            let response = alice.client.request_raw(method.clone(), &path, body.clone(), &[]).await;
            assert_eq!(
                (response.status, response.errcode()),
                (400, Some("M_NOT_JSON")),
                "{method} {path} with body {body:?}: {}",
                response.json
            );
        }
    }
    // Nothing was created or sent.
    let rooms = alice.client.get(&format!("{CLIENT}/joined_rooms")).await;
    assert_eq!(rooms.expect(200)["joined_rooms"], json!([room_id]));

    // Synapse reads an empty body as `{}` on the membership endpoints and device deletion.
    let invite = json!({"user_id": bob.user_id});
    alice.client.post(&format!("{CLIENT}/rooms/{room}/invite"), &invite).await.expect(200);
    let join = bob.client.request_raw(Method::POST, &format!("{CLIENT}/join/{room}"), None, &[]).await;
    assert_eq!(join.expect(200)["room_id"], room_id);
    let leave =
        bob.client.request_raw(Method::POST, &format!("{CLIENT}/rooms/{room}/leave"), None, &[]).await;
    leave.expect(200);
    let delete = alice
        .client
        .request_raw(Method::DELETE, &format!("{CLIENT}/devices/{}", enc(&alice.device_id)), None, &[])
        .await;
    // Deleting a device needs user-interactive auth: the challenge, not a JSON error.
    assert_eq!(delete.status, 401, "{}", delete.json);
    assert!(delete.json["flows"].is_array(), "{}", delete.json);
    server.stop().await;
}
