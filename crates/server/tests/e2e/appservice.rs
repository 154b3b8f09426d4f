//! Application services: registration and namespaces, `as_token` masquerading, the durable
//! transaction queue (order, retries with the same transaction ID, restarts), ephemeral
//! events, alias queries, third-party lookups and `/appservice/{id}/ping`, against a tiny
//! appservice started by the test.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use myelin_test_support::{TestClient, TestServer};
use serde_json::{Value, json};

use crate::rooms::{create_room, send_text, urlencode};

pub(crate) const AS_TOKEN: &str = "as_token_bridge";
const HS_TOKEN: &str = "hs_token_bridge";

/// How the test appservice answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Mode {
    Ok,
    Fail,
    Hang,
}

#[derive(Default)]
pub(crate) struct Recorded {
    /// Every transaction attempt: (txn ID, body, accepted).
    pub(crate) attempts: Vec<(String, Value, bool)>,
    pings: Vec<Value>,
    queries: Vec<String>,
    bad_auth: usize,
}

pub(crate) struct AppState {
    mode: Mutex<Mode>,
    /// Fail this many transaction attempts first.
    pub(crate) fail_next: Mutex<usize>,
    pub(crate) recorded: Mutex<Recorded>,
    /// The homeserver's address, for the alias query to create its alias.
    homeserver: Mutex<Option<String>>,
}

pub(crate) type Shared = Arc<AppState>;

fn authorized(headers: &axum::http::HeaderMap, state: &Shared) -> bool {
    let ok =
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {HS_TOKEN}"));
    if !ok {
        state.recorded.lock().unwrap().bad_auth += 1;
    }
    ok
}

async fn answer(mode: Mode) -> (StatusCode, Json<Value>) {
    match mode {
        Mode::Ok => (StatusCode::OK, Json(json!({}))),
        Mode::Fail => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"errcode": "M_UNKNOWN", "error": "down"})))
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (StatusCode::OK, Json(json!({})))
        }
    }
}

async fn transaction(
    State(state): State<Shared>,
    Path(txn): Path<String>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &state) {
        return (StatusCode::FORBIDDEN, Json(json!({"errcode": "M_FORBIDDEN"})));
    }
    let mode = {
        let mut fail_next = state.fail_next.lock().unwrap();
        if *fail_next > 0 {
            *fail_next -= 1;
            Mode::Fail
        } else {
            *state.mode.lock().unwrap()
        }
    };
    state.recorded.lock().unwrap().attempts.push((txn, body, mode == Mode::Ok));
    answer(mode).await
}

async fn ping(
    State(state): State<Shared>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &state) {
        return (StatusCode::FORBIDDEN, Json(json!({})));
    }
    state.recorded.lock().unwrap().pings.push(body);
    let mode = *state.mode.lock().unwrap();
    answer(mode).await
}

async fn query_alias(
    State(state): State<Shared>,
    Path(alias): Path<String>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &state) {
        return (StatusCode::FORBIDDEN, Json(json!({})));
    }
    state.recorded.lock().unwrap().queries.push(alias.clone());
    if !alias.starts_with("#slack_known") {
        return (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"})));
    }
    // Create the room and its alias as the bridge bot before answering, as bridges do.
    let homeserver = state.homeserver.lock().unwrap().clone().expect("homeserver set");
    let bot = TestClient::new(&homeserver).with_token(AS_TOKEN);
    let localpart = alias.trim_start_matches('#').split(':').next().unwrap_or_default().to_owned();
    let response = bot
        .post(
            "/_matrix/client/v3/createRoom",
            &json!({"room_alias_name": localpart, "preset": "public_chat"}),
        )
        .await;
    if response.status != 200 {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    (StatusCode::OK, Json(json!({})))
}

async fn query_user(
    State(state): State<Shared>,
    Path(user_id): Path<String>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &state) {
        return (StatusCode::FORBIDDEN, Json(json!({})));
    }
    state.recorded.lock().unwrap().queries.push(user_id.clone());
    if !user_id.starts_with("@slack_new") {
        return (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"})));
    }
    // Register the ghost before answering, as bridges do.
    let homeserver = state.homeserver.lock().unwrap().clone().expect("homeserver set");
    let localpart = user_id.trim_start_matches('@').split(':').next().unwrap_or_default().to_owned();
    let body = json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true});
    let response =
        TestClient::new(&homeserver).with_token(AS_TOKEN).post("/_matrix/client/v3/register", &body).await;
    if response.status != 200 {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    (StatusCode::OK, Json(json!({})))
}

async fn protocol(Path(protocol): Path<String>) -> (StatusCode, Json<Value>) {
    if protocol != "slack" {
        return (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"})));
    }
    (
        StatusCode::OK,
        Json(json!({
            "user_fields": ["team", "user"],
            "location_fields": ["team", "channel"],
            "icon": "mxc://example.org/slack",
            "field_types": {},
            "instances": [{"desc": "Team", "network_id": "T1", "fields": {"team": "T1"}}],
        })),
    )
}

async fn location(Path(protocol): Path<String>) -> Json<Value> {
    Json(
        json!([{"alias": "#slack_general:test.local", "protocol": protocol, "fields": {"channel": "general"}}]),
    )
}

pub(crate) struct TestAppservice {
    addr: SocketAddr,
    pub(crate) state: Shared,
}

impl TestAppservice {
    async fn start() -> TestAppservice {
        let state: Shared = Arc::new(AppState {
            mode: Mutex::new(Mode::Ok),
            fail_next: Mutex::new(0),
            recorded: Mutex::default(),
            homeserver: Mutex::new(None),
        });
        let app = Router::new()
            .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
            .route("/_matrix/app/v1/ping", post(ping))
            .route("/_matrix/app/v1/rooms/{alias}", get(query_alias))
            .route("/_matrix/app/v1/users/{user_id}", get(query_user))
            .route("/_matrix/app/v1/thirdparty/protocol/{protocol}", get(protocol))
            .route("/_matrix/app/v1/thirdparty/location/{protocol}", get(location))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestAppservice { addr, state }
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Events of accepted transactions, each transaction counted once.
    pub(crate) fn delivered_events(&self) -> Vec<Value> {
        let recorded = self.state.recorded.lock().unwrap();
        let mut seen = HashSet::new();
        let mut events = Vec::new();
        for (txn, body, accepted) in &recorded.attempts {
            if *accepted && seen.insert(txn.clone()) {
                events.extend(body["events"].as_array().cloned().unwrap_or_default());
            }
        }
        events
    }

    pub(crate) fn attempts(&self) -> Vec<(String, Value, bool)> {
        self.state.recorded.lock().unwrap().attempts.clone()
    }
}

/// A registration file for the test appservice (URL given, or `None` for `url: null`).
fn registration(
    dir: &std::path::Path,
    id: &str,
    url: Option<String>,
    extra: &str,
    tokens: (&str, &str),
) -> PathBuf {
    let path = dir.join(format!("{id}.yaml"));
    let url = url.map_or("null".to_owned(), |u| format!("'{u}'"));
    let text = format!(
        "id: {id}\nurl: {url}\nas_token: {}\nhs_token: {}\nsender_localpart: {id}bot\n\
         rate_limited: false\n{extra}namespaces:\n  users:\n    - regex: '@{id}_.*:test\\.local'\n      exclusive: true\n  \
         aliases:\n    - regex: '#{id}_.*:test\\.local'\n      exclusive: true\n  rooms: []\n",
        tokens.0, tokens.1
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) struct Setup {
    pub(crate) server: TestServer,
    pub(crate) appservice: TestAppservice,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) async fn setup(extra_config: Value, extra_registration: &str) -> Setup {
    let appservice = TestAppservice::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = registration(
        dir.path(),
        "slack",
        Some(format!("http://{}", appservice.addr)),
        extra_registration,
        (AS_TOKEN, HS_TOKEN),
    );
    let silent = registration(dir.path(), "irc", None, "", ("as_token_irc", "hs_token_irc"));
    let mut config = json!({
        "app_service_config_files": [bridge, silent],
        "myelin_appservice_http_timeout_ms": 1500,
    });
    if let (Value::Object(config), Value::Object(extra)) = (&mut config, extra_config) {
        config.extend(extra);
    }
    let server = TestServer::start_with(config).await;
    *appservice.state.homeserver.lock().unwrap() = Some(server.base_url.clone());
    Setup { server, appservice, _dir: dir }
}

pub(crate) fn bridge(server: &TestServer) -> TestClient {
    server.client().with_token(AS_TOKEN)
}

pub(crate) async fn register_ghost(server: &TestServer, localpart: &str) -> Value {
    bridge(server)
        .post(
            "/_matrix/client/v3/register",
            &json!({"type": "m.login.application_service", "username": localpart}),
        )
        .await
        .expect(200)
        .clone()
}

/// Waits (up to `secs`) until `check` holds.
pub(crate) async fn wait_until(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn appservice_registration_and_login_follow_the_namespaces() {
    let Setup { server, .. } = setup(json!({"auto_join_rooms": ["#lobby:test.local"]}), "").await;
    let ghost = register_ghost(&server, "slack_alice").await;
    assert_eq!(ghost["user_id"], "@slack_alice:test.local");
    assert!(ghost["access_token"].is_string() && ghost["device_id"].is_string(), "{ghost}");
    let quiet = bridge(&server)
        .post(
            "/_matrix/client/v3/register",
            &json!({"type": "m.login.application_service", "username": "slack_quiet", "inhibit_login": true}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(quiet, json!({"user_id": "@slack_quiet:test.local", "home_server": "test.local"}));
    // Twice: taken.
    bridge(&server)
        .post(
            "/_matrix/client/v3/register",
            &json!({"type": "m.login.application_service", "username": "slack_alice"}),
        )
        .await
        .expect_error(400, "M_USER_IN_USE");
    // Outside its namespace, or in another appservice's exclusive one.
    for username in ["bob", "irc_bob"] {
        bridge(&server)
            .post(
                "/_matrix/client/v3/register",
                &json!({"type": "m.login.application_service", "username": username}),
            )
            .await
            .expect_error(400, "M_EXCLUSIVE");
    }
    // Without the token, or with a token that is no appservice's.
    server
        .client()
        .post(
            "/_matrix/client/v3/register",
            &json!({"type": "m.login.application_service", "username": "slack_x"}),
        )
        .await
        .expect_error(400, "M_UNKNOWN");
    server
        .client()
        .with_token("nobody's")
        .post(
            "/_matrix/client/v3/register",
            &json!({"type": "m.login.application_service", "username": "slack_x"}),
        )
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    // Ordinary users cannot take names an appservice claims exclusively.
    let response = server
        .client()
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "slack_mallory", "password": "pw-1234567A!", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    response.expect_error(400, "M_EXCLUSIVE");
    server
        .client()
        .get("/_matrix/client/v3/register/available?username=slack_x")
        .await
        .expect_error(400, "M_EXCLUSIVE");
    // The sender exists from start-up.
    bridge(&server).get("/_matrix/client/v3/account/whoami").await.expect(200);
    // MSC2778 login.
    let flows = server.client().get("/_matrix/client/v3/login").await.expect(200).clone();
    assert!(flows["flows"].as_array().unwrap().iter().any(|f| f["type"] == "m.login.application_service"));
    let login = |user: &str| json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": user}});
    let session =
        bridge(&server).post("/_matrix/client/v3/login", &login("slack_alice")).await.expect(200).clone();
    assert_eq!(session["user_id"], "@slack_alice:test.local");
    let token = session["access_token"].as_str().unwrap();
    let whoami =
        server.client().with_token(token).get("/_matrix/client/v3/account/whoami").await.expect(200).clone();
    assert_eq!(whoami["user_id"], "@slack_alice:test.local");
    let alice = server.register("alice").await;
    bridge(&server)
        .post("/_matrix/client/v3/login", &login("@alice:test.local"))
        .await
        .expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .post("/_matrix/client/v3/login", &login("slack_alice"))
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    server
        .client()
        .post("/_matrix/client/v3/login", &login("slack_alice"))
        .await
        .expect_error(401, "M_MISSING_TOKEN");
    let bad = json!({"type": "m.login.application_service", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b"}});
    bridge(&server).post("/_matrix/client/v3/login", &bad).await.expect_error(400, "M_INVALID_PARAM");
    // `auto_join_rooms` is for people, not for an appservice's users.
    let joined = |client: TestClient| async move {
        client.get("/_matrix/client/v3/joined_rooms").await.expect(200)["joined_rooms"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(joined(alice.client.clone()).await, 1, "alice is in the lobby");
    register_ghost(&server, "slack_late").await;
    let late = server.client().with_token(AS_TOKEN);
    let late_rooms = late.get("/_matrix/client/v3/joined_rooms?user_id=%40slack_late%3Atest.local").await;
    assert_eq!(late_rooms.expect(200)["joined_rooms"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn appservice_masquerades_only_as_its_registered_users() {
    let rc_message = json!({"rc_message": {"per_second": 0.001, "burst_count": 1}});
    let Setup { server, .. } = setup(rc_message, "").await;
    let ghost = register_ghost(&server, "slack_carol").await;
    let device = ghost["device_id"].as_str().unwrap().to_owned();
    let whoami = |query: &str| {
        let client = bridge(&server);
        let path = format!("/_matrix/client/v3/account/whoami{query}");
        async move { client.get(&path).await }
    };
    let me = whoami("").await.expect(200).clone();
    assert_eq!(me["user_id"], "@slackbot:test.local");
    let carol = whoami("?user_id=%40slack_carol%3Atest.local").await.expect(200).clone();
    assert_eq!(carol["user_id"], "@slack_carol:test.local");
    // Query-string token and masquerading together.
    let by_query = server
        .client()
        .get(&format!(
            "/_matrix/client/v3/account/whoami?access_token={AS_TOKEN}&user_id=%40slack_carol%3Atest.local"
        ))
        .await
        .expect(200)
        .clone();
    assert_eq!(by_query["user_id"], "@slack_carol:test.local");
    let with_device =
        whoami(&format!("?user_id=%40slack_carol%3Atest.local&device_id={device}")).await.expect(200).clone();
    assert_eq!(with_device["device_id"], device.as_str());
    let msc3202 =
        whoami(&format!("?user_id=%40slack_carol%3Atest.local&org.matrix.msc3202.device_id={device}"))
            .await
            .expect(200)
            .clone();
    assert_eq!(msc3202["device_id"], device.as_str());
    whoami("?user_id=%40slack_carol%3Atest.local&device_id=NOPE").await.expect_error(400, "M_UNKNOWN_DEVICE");
    // MSC4190: the appservice creates and deletes its users' devices.
    let carol_device = "/_matrix/client/v3/devices/BRIDGEDEV?user_id=%40slack_carol%3Atest.local";
    let created = bridge(&server).put(carol_device, &json!({"display_name": "Bridge"})).await;
    assert_eq!(created.status, 201, "{}", created.json);
    bridge(&server).put(carol_device, &json!({"display_name": "Bridge 2"})).await.expect(200);
    let named = bridge(&server).get(carol_device).await.expect(200).clone();
    assert_eq!(named["display_name"], "Bridge 2");
    let as_device =
        whoami("?user_id=%40slack_carol%3Atest.local&device_id=BRIDGEDEV").await.expect(200).clone();
    assert_eq!(as_device["device_id"], "BRIDGEDEV");
    bridge(&server).delete(carol_device).await.expect(200);
    bridge(&server).get(carol_device).await.expect_error(404, "M_NOT_FOUND");
    let alice = server.register("alice").await;
    alice.client.put("/_matrix/client/v3/devices/NOTMINE", &json!({})).await.expect_error(404, "M_NOT_FOUND");
    let uia = alice.client.delete(&format!("/_matrix/client/v3/devices/{}", alice.device_id)).await;
    assert_eq!(uia.status, 401, "users still need user-interactive auth: {}", uia.json);
    let refused = whoami("?user_id=%40alice%3Atest.local").await;
    refused.expect_error(403, "M_FORBIDDEN");
    assert!(refused.json["error"].as_str().unwrap().contains("cannot masquerade"), "{}", refused.json);
    let unregistered = whoami("?user_id=%40slack_nobody%3Atest.local").await;
    unregistered.expect_error(403, "M_FORBIDDEN");
    assert!(
        unregistered.json["error"].as_str().unwrap().contains("has not registered"),
        "{}",
        unregistered.json
    );
    // A user token's `user_id` is ignored.
    let own = alice.client.get("/_matrix/client/v3/account/whoami?user_id=%40slack_carol%3Atest.local").await;
    assert_eq!(own.expect(200)["user_id"], "@alice:test.local");
    // Aliases: the appservice's exclusive namespace is its own.
    let room = create_room(&alice, json!({})).await;
    let alias_path = |alias: &str| format!("/_matrix/client/v3/directory/room/{}", urlencode(alias));
    alice
        .client
        .put(&alias_path("#slack_general:test.local"), &json!({"room_id": room}))
        .await
        .expect_error(400, "M_EXCLUSIVE");
    let bot_room =
        bridge(&server).post("/_matrix/client/v3/createRoom", &json!({})).await.expect(200)["room_id"]
            .as_str()
            .unwrap()
            .to_owned();
    bridge(&server)
        .put(&alias_path("#elsewhere:test.local"), &json!({"room_id": bot_room}))
        .await
        .expect_error(400, "M_EXCLUSIVE");
    bridge(&server)
        .put(&alias_path("#slack_general:test.local"), &json!({"room_id": bot_room}))
        .await
        .expect(200);
    // Rate limits: requests with the token of the appservice (rate_limited: false) are not
    // limited, alice's are.
    let carol_client = |path: &str| format!("{path}?user_id=%40slack_carol%3Atest.local");
    bridge(&server)
        .post(&carol_client(&format!("/_matrix/client/v3/join/{room}")), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &json!({"user_id": "@slack_carol:test.local"}),
        )
        .await
        .expect(200);
    bridge(&server)
        .post(&carol_client(&format!("/_matrix/client/v3/join/{room}")), &json!({}))
        .await
        .expect(200);
    for i in 0..4 {
        let path = carol_client(&format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/c{i}"));
        let sent =
            bridge(&server).put(&path, &json!({"msgtype": "m.text", "body": "hi"})).await.expect(200).clone();
        let event = alice
            .client
            .get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", sent["event_id"].as_str().unwrap()))
            .await;
        assert_eq!(event.expect(200)["sender"], "@slack_carol:test.local");
    }
    let mut statuses = Vec::new();
    for i in 0..3 {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/a{i}");
        statuses.push(alice.client.put(&path, &json!({"msgtype": "m.text", "body": "x"})).await.status);
    }
    assert!(statuses.contains(&429), "alice is rate limited: {statuses:?}");
    // The exemption goes with the appservice's token, not the user ID (as Synapse): carol
    // with her own access token is limited like anyone.
    let carol = server.client().with_token(ghost["access_token"].as_str().unwrap());
    let own = |i: usize| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/own{i}");
    carol.put(&own(0), &json!({"msgtype": "m.text", "body": "mine"})).await.expect(200);
    let limited = carol.put(&own(1), &json!({"msgtype": "m.text", "body": "mine"})).await;
    limited.expect_error(429, "M_LIMIT_EXCEEDED");
    assert!(limited.json["retry_after_ms"].is_u64(), "{}", limited.json);
    // The appservice's token still is not.
    let path = carol_client(&format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/c9"));
    bridge(&server).put(&path, &json!({"msgtype": "m.text", "body": "hi"})).await.expect(200);
    server.stop().await;
}

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn appservice_transactions_arrive_in_order_through_failures_and_restarts() {
    let Setup { mut server, appservice, _dir } = setup(json!({}), "").await;
    let alice = server.register("alice").await;
    register_ghost(&server, "slack_dave").await;
    let room = create_room(&alice, json!({"invite": ["@slack_dave:test.local"]})).await;
    let unrelated = create_room(&alice, json!({})).await;
    // The invite of a namespace user is delivered.
    wait_until(20, "the invite", || {
        appservice
            .delivered_events()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == "@slack_dave:test.local")
    })
    .await;
    bridge(&server)
        .post(&format!("/_matrix/client/v3/join/{room}?user_id=%40slack_dave%3Atest.local"), &json!({}))
        .await
        .expect(200);
    // Two failures: the same transaction comes again (2 s, then 4 s later).
    *appservice.state.fail_next.lock().unwrap() = 2;
    for i in 0..5 {
        send_text(&alice, &room, &format!("t{i}"), &format!("m{i}")).await;
    }
    send_text(&alice, &unrelated, "u0", "not for the bridge").await;
    wait_until(30, "five messages", || bodies(&appservice.delivered_events()).len() == 5).await;
    assert_eq!(bodies(&appservice.delivered_events()), ["m0", "m1", "m2", "m3", "m4"], "in order, once each");
    let attempts = appservice.attempts();
    let failed: Vec<&(String, Value, bool)> = attempts.iter().filter(|a| !a.2).collect();
    assert_eq!(failed.len(), 2);
    let retried = attempts
        .iter()
        .find(|a| a.2 && a.0 == failed[0].0)
        .expect("the failed transaction is retried under its ID");
    let ids_of = |body: &Value| -> Vec<Value> {
        body["events"].as_array().unwrap().iter().map(|e| e["event_id"].clone()).collect()
    };
    assert_eq!(ids_of(&retried.1), ids_of(&failed[0].1), "with the same events");
    let ids: Vec<i64> = attempts.iter().filter(|a| a.2).map(|a| a.0.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "accepted transactions in ID order: {ids:?}");
    // Down, messages sent, the homeserver restarted: delivered once after the restart.
    appservice.set_mode(Mode::Fail);
    let before = appservice.attempts().len();
    for i in 5..8 {
        send_text(&alice, &room, &format!("t{i}"), &format!("m{i}")).await;
    }
    wait_until(20, "a failed attempt", || appservice.attempts().len() > before).await;
    let pending_txn = appservice.attempts().last().unwrap().0.clone();
    server.halt().await;
    appservice.set_mode(Mode::Ok);
    server.resume().await;
    wait_until(30, "messages after the restart", || bodies(&appservice.delivered_events()).len() == 8).await;
    assert_eq!(bodies(&appservice.delivered_events()), ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    assert!(
        appservice.attempts().iter().any(|a| a.2 && a.0 == pending_txn),
        "the transaction in flight at the restart kept its ID"
    );
    let events = appservice.delivered_events();
    assert!(events.iter().all(|e| e["room_id"] == room.as_str()), "nothing of the unrelated room");
    assert!(
        events
            .iter()
            .all(|e| e["event_id"].is_string() && e["sender"].is_string() && e["content"].is_object())
    );
    assert_eq!(appservice.state.recorded.lock().unwrap().bad_auth, 0, "every request carried the hs_token");
    server.stop().await;
}

// A room interests the appservice while one of its users is joined: not before the join,
// not after the leave, again after a new join (the answer is kept between rounds until a
// membership changes).
#[tokio::test]
async fn appservice_room_interest_follows_its_users_joins_and_leaves() {
    let Setup { server, appservice, _dir } = setup(json!({}), "").await;
    let alice = server.register("alice").await;
    register_ghost(&server, "slack_erin").await;
    register_ghost(&server, "slack_marker").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let marker_room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let ghost = |localpart: &str| format!("%40{localpart}%3Atest.local");
    let as_ghost = |action: &str, room: &str, localpart: &str| {
        format!("/_matrix/client/v3/rooms/{room}/{action}?user_id={}", ghost(localpart))
    };
    bridge(&server).post(&as_ghost("join", &marker_room, "slack_marker"), &json!({})).await.expect(200);
    // Everything sent before a marker in the marker room has been handed over once the
    // marker arrives (transactions go in stream order).
    let mut markers = 0;
    let mut sync_up = async || {
        markers += 1;
        let body = format!("marker {markers}");
        send_text(&alice, &marker_room, &format!("k{markers}"), &body).await;
        wait_until(20, "the marker", || bodies(&appservice.delivered_events()).contains(&body)).await;
    };

    send_text(&alice, &room, "t0", "before the join").await;
    sync_up().await;
    bridge(&server).post(&as_ghost("join", &room, "slack_erin"), &json!({})).await.expect(200);
    send_text(&alice, &room, "t1", "while joined").await;
    sync_up().await;
    bridge(&server).post(&as_ghost("leave", &room, "slack_erin"), &json!({})).await.expect(200);
    send_text(&alice, &room, "t2", "after the leave").await;
    sync_up().await;
    bridge(&server).post(&as_ghost("join", &room, "slack_erin"), &json!({})).await.expect(200);
    send_text(&alice, &room, "t3", "joined again").await;
    sync_up().await;
    let delivered: Vec<String> =
        bodies(&appservice.delivered_events()).into_iter().filter(|b| !b.starts_with("marker")).collect();
    assert_eq!(delivered, ["while joined", "joined again"]);
    server.stop().await;
}

#[tokio::test]
async fn appservice_ephemeral_events_reach_appservices_that_ask() {
    let Setup { server, appservice, _dir } = setup(
        json!({}),
        "receive_ephemeral: true\nde.sorunome.msc2409.push_ephemeral: true\norg.matrix.msc3202: true\n",
    )
    .await;
    let alice = server.register("alice").await;
    let erin = register_ghost(&server, "slack_erin").await;
    let erin_device = erin["device_id"].as_str().unwrap().to_owned();
    // MSC3202: a one-time key of the ghost's device, uploaded by the appservice as that device.
    bridge(&server)
        .post(
            &format!(
                "/_matrix/client/v3/keys/upload?user_id=%40slack_erin%3Atest.local&device_id={erin_device}"
            ),
            &json!({"one_time_keys": {"curve25519:AAAAAQ": "bXkgb25lLXRpbWUga2V5"}}),
        )
        .await
        .expect(200);
    let room = create_room(&alice, json!({"invite": ["@slack_erin:test.local"]})).await;
    bridge(&server)
        .post(&format!("/_matrix/client/v3/join/{room}?user_id=%40slack_erin%3Atest.local"), &json!({}))
        .await
        .expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", urlencode(&alice.user_id)),
            &json!({"typing": true, "timeout": 10000}),
        )
        .await
        .expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", urlencode(&alice.user_id)),
            &json!({"presence": "online", "status_msg": "bridging"}),
        )
        .await
        .expect(200);
    let event_id = send_text(&alice, &room, "e1", "read me").await;
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}"), &json!({}))
        .await
        .expect(200);
    let ephemeral = || -> Vec<Value> {
        appservice
            .attempts()
            .iter()
            .filter(|a| a.2)
            .flat_map(|a| a.1["ephemeral"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    wait_until(20, "typing, presence and the receipt", || {
        let events = ephemeral();
        ["m.typing", "m.receipt", "m.presence"].iter().all(|kind| events.iter().any(|e| e["type"] == *kind))
    })
    .await;
    let events = ephemeral();
    let typing = events.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(typing["room_id"], room.as_str());
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));
    let receipt = events.iter().find(|e| e["type"] == "m.receipt").unwrap();
    assert!(receipt["content"][&event_id]["m.read"][&alice.user_id]["ts"].is_u64(), "{receipt}");
    let counted = appservice.attempts().iter().filter(|a| a.2).any(|a| {
        let counts = &a.1["org.matrix.msc3202.device_one_time_keys_count"];
        counts["@slack_erin:test.local"][&erin_device]["curve25519"] == 1
            && a.1["org.matrix.msc3202.device_one_time_key_counts"] == *counts
            && a.1["org.matrix.msc3202.device_unused_fallback_key_types"]["@slack_erin:test.local"]
                [&erin_device]
                .is_array()
    });
    assert!(counted, "MSC3202 key counts of the ghost's device: {:?}", appservice.attempts().last());
    let presence = events.iter().find(|e| e["type"] == "m.presence").unwrap();
    assert_eq!(presence["sender"], alice.user_id.as_str());
    assert_eq!(presence["content"]["presence"], "online");
    assert_eq!(presence["content"]["status_msg"], "bridging");
    let unstable =
        appservice.attempts().iter().filter(|a| a.2).any(|a| a.1["de.sorunome.msc2409.ephemeral"].is_array());
    assert!(unstable, "the unstable field too");
    server.stop().await;
}

#[tokio::test]
async fn appservice_queries_thirdparty_and_ping() {
    let Setup { server, appservice, _dir } = setup(json!({}), "protocols: [slack]\n").await;
    let alice = server.register("alice").await;
    // An unknown alias of the namespace is asked of the appservice, which creates it.
    let resolved = alice
        .client
        .get(&format!("/_matrix/client/v3/directory/room/{}", urlencode("#slack_known:test.local")))
        .await;
    assert!(resolved.expect(200)["room_id"].as_str().unwrap().starts_with('!'));
    alice
        .client
        .get(&format!("/_matrix/client/v3/directory/room/{}", urlencode("#slack_unknown:test.local")))
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice
        .client
        .get(&format!("/_matrix/client/v3/directory/room/{}", urlencode("#other:test.local")))
        .await
        .expect_error(404, "M_NOT_FOUND");
    // Joining through an alias the appservice makes on demand.
    let joined = alice
        .client
        .post(&format!("/_matrix/client/v3/join/{}", urlencode("#slack_known2:test.local")), &json!({}))
        .await;
    assert!(joined.expect(200)["room_id"].as_str().unwrap().starts_with('!'));
    // Inviting an unknown user of its namespace asks the appservice, which registers it.
    let room = create_room(&alice, json!({})).await;
    let invite = |user: &str| {
        let client = alice.client.clone();
        let path = format!("/_matrix/client/v3/rooms/{room}/invite");
        let body = json!({"user_id": user});
        async move { client.post(&path, &body).await }
    };
    invite("@slack_new_frank:test.local").await.expect(200);
    invite("@slack_never:test.local").await.expect_error(404, "M_NOT_FOUND");
    invite("@nobody:test.local").await.expect_error(404, "M_NOT_FOUND");
    let queries = appservice.state.recorded.lock().unwrap().queries.clone();
    assert_eq!(
        queries,
        [
            "#slack_known:test.local",
            "#slack_unknown:test.local",
            "#slack_known2:test.local",
            "@slack_new_frank:test.local",
            "@slack_never:test.local"
        ],
        "only its namespaces are asked, and only for what is unknown"
    );
    // The admin API names the appservice of its users.
    let admin = server.register_admin("admin").await;
    for user in ["@slack_new_frank:test.local", "@slackbot:test.local"] {
        let details = admin.client.get(&format!("/_synapse/admin/v2/users/{}", urlencode(user))).await;
        assert_eq!(details.expect(200)["appservice_id"], "slack", "{user}");
    }
    let details = admin.client.get(&format!("/_synapse/admin/v2/users/{}", urlencode(&alice.user_id))).await;
    assert_eq!(details.expect(200)["appservice_id"], Value::Null);
    // Third-party lookups.
    let protocols = alice.client.get("/_matrix/client/v3/thirdparty/protocols").await.expect(200).clone();
    assert_eq!(protocols["slack"]["instances"][0]["instance_id"], "slack|T1", "{protocols}");
    assert_eq!(protocols["slack"]["user_fields"], json!(["team", "user"]));
    alice.client.get("/_matrix/client/v3/thirdparty/protocol/slack").await.expect(200);
    server.client().get("/_matrix/client/v3/thirdparty/protocols").await.expect_error(401, "M_MISSING_TOKEN");
    alice.client.get("/_matrix/client/v3/thirdparty/protocol/irc").await.expect_error(404, "M_NOT_FOUND");
    let locations = alice
        .client
        .get("/_matrix/client/v3/thirdparty/location/slack?channel=general")
        .await
        .expect(200)
        .clone();
    assert_eq!(locations[0]["alias"], "#slack_general:test.local");
    // Ping.
    let ping = |client: TestClient, id: &str| {
        let path = format!("/_matrix/client/v1/appservice/{id}/ping");
        async move { client.post(&path, &json!({"transaction_id": "t1"})).await }
    };
    let pong = ping(bridge(&server), "slack").await.expect(200).clone();
    assert!(pong["duration_ms"].is_u64(), "{pong}");
    assert_eq!(appservice.state.recorded.lock().unwrap().pings, [json!({"transaction_id": "t1"})]);
    ping(bridge(&server), "irc").await.expect_error(403, "M_FORBIDDEN");
    ping(alice.client.clone(), "slack").await.expect_error(403, "M_FORBIDDEN");
    ping(server.client().with_token("as_token_irc"), "irc").await.expect_error(400, "M_URL_NOT_SET");
    appservice.set_mode(Mode::Fail);
    let bad = ping(bridge(&server), "slack").await;
    bad.expect_error(502, "M_BAD_STATUS");
    assert_eq!(bad.json["status"], 500);
    assert!(bad.json["body"].as_str().unwrap().contains("down"), "{}", bad.json);
    appservice.set_mode(Mode::Hang);
    ping(bridge(&server), "slack").await.expect_error(504, "M_CONNECTION_TIMEOUT");
    server.stop().await;

    // An appservice nobody listens for.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let file = registration(
        dir.path(),
        "gone",
        Some(format!("http://127.0.0.1:{port}")),
        "",
        ("as_gone", "hs_gone"),
    );
    let server = TestServer::start_with(json!({"app_service_config_files": [file]})).await;
    ping(server.client().with_token("as_gone"), "gone").await.expect_error(502, "M_CONNECTION_FAILED");
    server.stop().await;
}

#[tokio::test]
async fn appservice_requests_are_not_blocked_by_monthly_active_user_limits() {
    let Setup { server, .. } = setup(json!({"limit_usage_by_mau": true, "max_mau_value": 0}), "").await;
    register_ghost(&server, "slack_gina").await;
    let as_gina = "/_matrix/client/v3/createRoom?user_id=%40slack_gina%3Atest.local";
    bridge(&server).post(as_gina, &json!({})).await.expect(200);
    let synced =
        bridge(&server).get("/_matrix/client/v3/sync?timeout=0&user_id=%40slack_gina%3Atest.local").await;
    synced.expect(200);
    // The same user logging in for a token of their own is counted, and blocked.
    let login = json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "slack_gina"}});
    bridge(&server)
        .post("/_matrix/client/v3/login", &login)
        .await
        .expect_error(403, "M_RESOURCE_LIMIT_EXCEEDED");
    server.stop().await;
}

/// Users of an appservice's exclusive namespace get no push actions for the room's events
/// (Synapse filters them out of push evaluation), but for their own invites; other members
/// still get theirs.
#[tokio::test]
async fn appservice_exclusive_users_get_no_push_actions_but_invites() {
    let Setup { server, appservice: _appservice, _dir } = setup(json!({}), "").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    register_ghost(&server, "slack_dave").await;
    let room =
        create_room(&alice, json!({"preset": "public_chat", "invite": ["@slack_dave:test.local"]})).await;
    let dave = |path: &str| {
        format!("{path}{}user_id=%40slack_dave%3Atest.local", if path.contains('?') { '&' } else { '?' })
    };
    bridge(&server).post(&dave(&format!("/_matrix/client/v3/join/{room}")), &json!({})).await.expect(200);
    bob.client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await.expect(200);
    let message = send_text(&alice, &room, "t1", "hello @slack_dave and bob").await;

    let notified = |page: &Value| -> Vec<(String, String)> {
        page["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["event"]["type"].as_str().unwrap().to_owned(),
                    n["event"]["event_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = bob.client.get("/_matrix/client/v3/notifications").await.expect(200).clone();
        if notified(&page).iter().any(|(_, id)| *id == message) {
            break;
        }
        assert!(Instant::now() < deadline, "bob was never notified of the message: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = bridge(&server).get(&dave("/_matrix/client/v3/notifications")).await.expect(200).clone();
    let dave_notified = notified(&page);
    assert!(!dave_notified.iter().any(|(_, id)| *id == message), "the ghost got a push action: {page}");
    assert_eq!(
        dave_notified.iter().map(|(kind, _)| kind.as_str()).collect::<Vec<_>>(),
        ["m.room.member"],
        "the ghost's only notification is its invite: {page}"
    );
    server.stop().await;
}
