//! Registration: UIA, username rules, tokens, guests, shared-secret registration, bad input.

use myelin_test_support::{TestServer, shared_secret_body, shared_secret_mac};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn registration_goes_through_user_interactive_auth() {
    let server = TestServer::start().await;
    let client = server.client();
    let first = client
        .post("/_matrix/client/v3/register", &json!({"username": "Alice", "password": "secret-1"}))
        .await;
    let challenge = first.expect(401).clone();
    assert_eq!(challenge["flows"], json!([{"stages": ["m.login.dummy"]}]));
    assert_eq!(challenge["completed"], json!([]));
    assert!(challenge["params"].is_object());
    assert!(challenge.get("errcode").is_none(), "the first challenge is not an error: {challenge}");
    let session = challenge["session"].as_str().unwrap().to_owned();

    let done = client
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "Alice", "password": "secret-1", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    let body = done.expect(200).clone();
    // Usernames are lowercased, as in Synapse.
    assert_eq!(body["user_id"], "@alice:test.local");
    assert_eq!(body["home_server"], "test.local");
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() > 30));
    assert!(body["device_id"].is_string());

    // A completed session cannot be replayed.
    let replay = client
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "alice2", "password": "secret-1", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    replay.expect_error(400, "M_UNKNOWN");

    // The new token works.
    let whoami = client
        .with_token(body["access_token"].as_str().unwrap())
        .get("/_matrix/client/v3/account/whoami")
        .await;
    assert_eq!(whoami.expect(200)["user_id"], "@alice:test.local");
    assert_eq!(whoami.json["is_guest"], false);
    assert_eq!(whoami.json["device_id"], body["device_id"]);
    server.stop().await;
}

#[tokio::test]
async fn password_from_the_first_request_is_kept_for_the_last() {
    let server = TestServer::start().await;
    let client = server.client();
    let session = client
        .post("/_matrix/client/v3/register", &json!({"username": "bob", "password": "kept-password"}))
        .await
        .expect(401)["session"]
        .clone();
    client
        .post(
            "/_matrix/client/v3/register",
            &json!({"auth": {"type": "m.login.dummy", "session": session}, "username": "bob"}),
        )
        .await
        .expect(200);
    let login = client
        .post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "user": "bob", "password": "kept-password"}),
        )
        .await;
    login.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn usernames_are_checked() {
    let server = TestServer::start().await;
    server.register("carol").await;
    let client = server.client();
    let register = |username: &'static str| {
        let client = client.clone();
        async move {
            client
                .post(
                    "/_matrix/client/v3/register",
                    &json!({"username": username, "password": "pw-123456", "auth": {"type": "m.login.dummy"}}),
                )
                .await
        }
    };
    register("carol").await.expect_error(400, "M_USER_IN_USE");
    register("CAROL").await.expect_error(400, "M_USER_IN_USE");
    register("has space").await.expect_error(400, "M_INVALID_USERNAME");
    register("_reserved").await.expect_error(400, "M_INVALID_USERNAME");
    register("12345").await.expect_error(400, "M_INVALID_USERNAME");
    register("colon:name").await.expect_error(400, "M_INVALID_USERNAME");
    let long: &'static str = Box::leak("x".repeat(300).into_boxed_str());
    register(long).await.expect_error(400, "M_INVALID_USERNAME");

    client.get("/_matrix/client/v3/register/available?username=dave").await.expect(200);
    assert_eq!(
        client.get("/_matrix/client/v3/register/available?username=dave").await.json,
        json!({"available": true})
    );
    client
        .get("/_matrix/client/v3/register/available?username=carol")
        .await
        .expect_error(400, "M_USER_IN_USE");
    client
        .get("/_matrix/client/v3/register/available?username=bad%20name")
        .await
        .expect_error(400, "M_INVALID_USERNAME");
    client.get("/_matrix/client/v3/register/available").await.expect_error(400, "M_INVALID_PARAM");

    // Without a username, one is generated.
    let generated = client
        .post(
            "/_matrix/client/v3/register",
            &json!({"password": "pw-123456", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert!(generated.expect(200)["user_id"].as_str().unwrap().starts_with('@'));
    server.stop().await;
}

#[tokio::test]
async fn registration_can_be_disabled() {
    let server = TestServer::start_with(json!({"enable_registration": false})).await;
    let response = server
        .client()
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "eve", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    response.expect_error(403, "M_FORBIDDEN");
    // Shared-secret registration still works.
    server.register_admin("admin").await;
    server.stop().await;
}

#[tokio::test]
async fn inhibit_login_returns_no_session() {
    let server = TestServer::start().await;
    let body = server
        .client()
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "quiet", "password": "pw-123456", "inhibit_login": true, "auth": {"type": "m.login.dummy"}}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(body["user_id"], "@quiet:test.local");
    assert!(body.get("access_token").is_none() && body.get("device_id").is_none(), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn registration_tokens_gate_registration() {
    let server = TestServer::start_with(json!({"registration_requires_token": true})).await;
    let admin = server.register_admin("admin").await;
    let client = server.client();

    let challenge =
        client.post("/_matrix/client/v3/register", &json!({"username": "u1", "password": "pw-123456"})).await;
    assert_eq!(challenge.expect(401)["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session = challenge.json["session"].clone();

    let wrong = client
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "u1", "password": "pw-123456", "auth": {"type": "m.login.registration_token", "token": "nope", "session": session}}),
        )
        .await;
    let wrong_body = wrong.expect(401).clone();
    assert_eq!(wrong_body["errcode"], "M_UNAUTHORIZED");
    assert_eq!(wrong_body["completed"], json!([]));
    // The dummy stage is not offered, so it does not count.
    let dummy = client
        .post("/_matrix/client/v3/register", &json!({"username": "u1", "password": "pw-123456", "auth": {"type": "m.login.dummy", "session": session}}))
        .await;
    assert_eq!(dummy.expect(401)["completed"], json!([]));

    let created = admin
        .client
        .post("/_synapse/admin/v1/registration_tokens/new", &json!({"token": "letmein", "uses_allowed": 1}))
        .await;
    assert_eq!(created.expect(200)["token"], "letmein");
    assert_eq!(
        client
            .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=letmein")
            .await
            .expect(200)["valid"],
        true
    );
    assert_eq!(
        client
            .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=other")
            .await
            .expect(200)["valid"],
        false
    );

    let ok = client
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "u1", "password": "pw-123456", "auth": {"type": "m.login.registration_token", "token": "letmein", "session": session}}),
        )
        .await;
    assert_eq!(ok.expect(200)["user_id"], "@u1:test.local");

    // The single use is spent.
    let again = client
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "u2", "password": "pw-123456", "auth": {"type": "m.login.registration_token", "token": "letmein"}}),
        )
        .await;
    assert_eq!(again.expect(401)["errcode"], "M_UNAUTHORIZED");
    let token = admin.client.get("/_synapse/admin/v1/registration_tokens/letmein").await.expect(200).clone();
    assert_eq!((token["completed"].as_i64(), token["pending"].as_i64()), (Some(1), Some(0)));
    assert_eq!(
        client
            .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=letmein")
            .await
            .expect(200)["valid"],
        false
    );

    // Admin API: list, update, delete; non-admins are refused.
    let list =
        admin.client.get("/_synapse/admin/v1/registration_tokens?valid=false").await.expect(200).clone();
    assert_eq!(list["registration_tokens"][0]["token"], "letmein");
    let updated = admin
        .client
        .put("/_synapse/admin/v1/registration_tokens/letmein", &json!({"uses_allowed": null}))
        .await;
    assert_eq!(updated.expect(200)["uses_allowed"], Value::Null);
    admin.client.delete("/_synapse/admin/v1/registration_tokens/letmein").await.expect(200);
    admin.client.get("/_synapse/admin/v1/registration_tokens/letmein").await.expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .post("/_synapse/admin/v1/registration_tokens/new", &json!({"token": "bad token!"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let generated =
        admin.client.post("/_synapse/admin/v1/registration_tokens/new", &json!({"length": 20})).await;
    assert_eq!(generated.expect(200)["token"].as_str().unwrap().len(), 20);
    server.stop().await;
}

#[tokio::test]
async fn guests_register_only_when_allowed() {
    let server = TestServer::start().await;
    server
        .client()
        .post("/_matrix/client/v3/register?kind=guest", &json!({}))
        .await
        .expect_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    server.stop().await;

    let server = TestServer::start_with(json!({"allow_guest_access": true})).await;
    let guest =
        server.client().post("/_matrix/client/v3/register?kind=guest", &json!({})).await.expect(200).clone();
    let localpart =
        guest["user_id"].as_str().unwrap().trim_start_matches('@').split(':').next().unwrap().to_owned();
    assert!(localpart.chars().all(|c| c.is_ascii_digit()), "guests get numeric IDs: {guest}");
    let client = server.client().with_token(guest["access_token"].as_str().unwrap());
    assert_eq!(client.get("/_matrix/client/v3/account/whoami").await.expect(200)["is_guest"], true);
    client.get("/_matrix/client/v3/devices").await.expect_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    server
        .client()
        .post("/_matrix/client/v3/register?kind=robot", &json!({}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn password_policy_refuses_weak_passwords() {
    let server = TestServer::start_with(json!({
        "password_config": {"policy": {"enabled": true, "minimum_length": 10, "require_digit": true, "require_symbol": true, "require_uppercase": true, "require_lowercase": true}}
    }))
    .await;
    let client = server.client();
    for weak in ["Sh0rt!", "NoDigitsHere!", "nosymbol123A", "NOLOWER123!", "noupper123!"] {
        client
            .post(
                "/_matrix/client/v3/register",
                &json!({"username": "weak", "password": weak, "auth": {"type": "m.login.dummy"}}),
            )
            .await
            .expect_error(400, "M_WEAK_PASSWORD");
    }
    client
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "strong", "password": "Str0ng&Long!", "auth": {"type": "m.login.dummy"}}),
        )
        .await
        .expect(200);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_matrix_errors() {
    let server = TestServer::start().await;
    let client = server.client();
    let raw = |body: &[u8]| {
        client.request_raw(Method::POST, "/_matrix/client/v3/register", Some(body.to_vec()), &[])
    };
    raw(b"{not json").await.expect_error(400, "M_NOT_JSON");
    raw(b"[1,2,3]").await.expect_error(400, "M_NOT_JSON");
    raw(b"\xff\xfe").await.expect_error(400, "M_NOT_JSON");
    raw(br#"{"username": 12}"#).await.expect_error(400, "M_BAD_JSON");
    raw(br#"{"inhibit_login": "yes"}"#).await.expect_error(400, "M_BAD_JSON");
    client
        .post("/_matrix/client/v3/login", &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "x"}, "password": 5}))
        .await
        .expect_error(400, "M_BAD_JSON");
    client.post("/_matrix/client/v3/login", &json!({"password": "x"})).await.expect_error(400, "M_BAD_JSON");
    client
        .post("/_matrix/client/v3/login", &json!({"type": "m.login.magic"}))
        .await
        .expect_error(400, "M_UNKNOWN");
    // A body larger than the limit is refused without being read to the end.
    let huge = format!("{{\"username\": \"{}\"}}", "a".repeat(14 * 1024 * 1024));
    raw(huge.as_bytes()).await.expect_error(413, "M_TOO_LARGE");
    // A session that never existed.
    client
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "x1", "password": "p", "auth": {"type": "m.login.dummy", "session": "nope"}}),
        )
        .await
        .expect_error(400, "M_UNKNOWN");
    // `auth` of the wrong shape.
    client
        .post("/_matrix/client/v3/register", &json!({"username": "x1", "password": "p", "auth": {"type": 3}}))
        .await
        .expect_error(400, "M_BAD_JSON");
    // The server still serves.
    client.get("/_matrix/client/versions").await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn uia_sessions_expire_and_are_bound_to_their_operation() {
    let server = TestServer::start().await;
    let user = server.register("frank").await;
    let session = server
        .client()
        .post("/_matrix/client/v3/register", &json!({"username": "gina", "password": "pw-123456"}))
        .await
        .expect(401)["session"]
        .as_str()
        .unwrap()
        .to_owned();
    // A registration session cannot authorise deleting a device.
    let response = user
        .client
        .post(
            "/_matrix/client/v3/delete_devices",
            &json!({"devices": [user.device_id], "auth": {"type": "m.login.password", "session": session, "password": user.password, "identifier": {"type": "m.id.user", "user": "frank"}}}),
        )
        .await;
    response.expect_error(403, "M_FORBIDDEN");

    // An expired session is unknown.
    let services = server.services();
    services.store().set_uia_session_created(&session, 0).await.unwrap();
    server
        .client()
        .post("/_matrix/client/v3/register", &json!({"username": "gina", "password": "pw-123456", "auth": {"type": "m.login.dummy", "session": session}}))
        .await
        .expect_error(400, "M_UNKNOWN");
    server.stop().await;
}

#[tokio::test]
async fn shared_secret_registration_follows_synapse() {
    let server = TestServer::start().await;
    let client = server.client();
    let nonce =
        client.get("/_synapse/admin/v1/register").await.expect(200)["nonce"].as_str().unwrap().to_owned();
    assert_eq!(nonce.len(), 128);

    // A correct MAC registers an admin.
    let body = shared_secret_body(&server, "Provisioner", "bot-password", true, Some("bot")).await;
    let registered = client.post("/_synapse/admin/v1/register", &body).await.expect(200).clone();
    assert_eq!(registered["user_id"], "@provisioner:test.local");
    let admin = client.with_token(registered["access_token"].as_str().unwrap());
    admin.get("/_synapse/admin/v1/registration_tokens").await.expect(200);

    // The nonce is single-use.
    client.post("/_synapse/admin/v1/register", &body).await.expect_error(400, "M_UNKNOWN");

    // A wrong MAC is forbidden (and spends the nonce).
    let mut wrong = shared_secret_body(&server, "mallory", "pw", true, None).await;
    wrong["mac"] = json!(shared_secret_mac(
        "not-the-secret",
        wrong["nonce"].as_str().unwrap(),
        "mallory",
        "pw",
        true,
        None
    ));
    client.post("/_synapse/admin/v1/register", &wrong).await.expect_error(403, "M_FORBIDDEN");
    // Claiming admin with a non-admin MAC is forbidden.
    let mut escalated = shared_secret_body(&server, "mallory", "pw", false, None).await;
    escalated["admin"] = json!(true);
    client.post("/_synapse/admin/v1/register", &escalated).await.expect_error(403, "M_FORBIDDEN");

    // (Expired nonces: `registration_nonces` unit tests; nonces are kept in memory.)

    // A non-admin registration is not an admin.
    let plain = shared_secret_body(&server, "plain", "pw", false, None).await;
    let plain = client.post("/_synapse/admin/v1/register", &plain).await.expect(200).clone();
    client
        .with_token(plain["access_token"].as_str().unwrap())
        .get("/_synapse/admin/v1/registration_tokens")
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Names in use are refused.
    let taken = shared_secret_body(&server, "plain", "pw", false, None).await;
    client.post("/_synapse/admin/v1/register", &taken).await.expect_error(400, "M_USER_IN_USE");
    // Missing fields.
    client.post("/_synapse/admin/v1/register", &json!({"nonce": "x"})).await.expect_error(400, "M_BAD_JSON");
    server.stop().await;
}

#[tokio::test]
async fn shared_secret_registration_is_off_without_a_secret() {
    let server = TestServer::start_with(json!({"registration_shared_secret": null})).await;
    // No nonce is handed out (Synapse hands one out, then refuses it the same way).
    let response = server.client().get("/_synapse/admin/v1/register").await;
    response.expect_error(400, "M_UNKNOWN");
    assert_eq!(response.json["error"], "Shared secret registration is not enabled");
    let body = json!({"nonce": "x", "username": "x", "password": "y", "mac": "00"});
    let response = server.client().post("/_synapse/admin/v1/register", &body).await;
    response.expect_error(400, "M_UNKNOWN");
    assert_eq!(response.json["error"], "Shared secret registration is not enabled");
    server.stop().await;
}

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let server =
        TestServer::start_with(json!({"rc_registration": {"per_second": 0.001, "burst_count": 2}})).await;
    server.register("r1").await;
    server.register("r2").await;
    let response = server
        .client()
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "r3", "password": "pw-123456", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    response.expect_error(429, "M_LIMIT_EXCEEDED");
    assert!(response.json["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    assert!(response.headers.get("retry-after").is_some());
    server.stop().await;
}
