//! Login, logout, refresh and login tokens, devices, password changes, deactivation.

use std::time::{Duration, Instant};

use myelin_test_support::{TestServer, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

async fn login(server: &TestServer, body: Value) -> myelin_test_support::TestResponse {
    server.client().post("/_matrix/client/v3/login", &body).await
}

fn password_login(user: &str, password: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})
}

#[tokio::test]
async fn password_login_by_user_id_localpart_or_legacy_field() {
    let server = TestServer::start().await;
    let user = server.register("alice").await;
    let flows = server.client().get("/_matrix/client/v3/login").await.expect(200).clone();
    let types: Vec<&str> =
        flows["flows"].as_array().unwrap().iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"m.login.password") && types.contains(&"m.login.token"), "{flows}");

    let by_id = login(&server, password_login("@alice:test.local", &user.password)).await.expect(200).clone();
    assert_eq!(by_id["user_id"], "@alice:test.local");
    assert!(by_id["access_token"].is_string() && by_id["device_id"].is_string());
    login(&server, password_login("alice", &user.password)).await.expect(200);
    login(&server, password_login("ALICE", &user.password)).await.expect(200);
    login(&server, json!({"type": "m.login.password", "user": "alice", "password": user.password}))
        .await
        .expect(200);

    login(&server, password_login("alice", "wrong")).await.expect_error(403, "M_FORBIDDEN");
    login(&server, password_login("nobody", "wrong")).await.expect_error(403, "M_FORBIDDEN");
    login(&server, json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": "x"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn device_ids_are_reused_and_named() {
    let server = TestServer::start().await;
    let user = server.register("bob").await;
    let mut body = password_login("bob", &user.password);
    body["device_id"] = json!("MYPHONE");
    body["initial_device_display_name"] = json!("Bob's phone");
    let first = login(&server, body.clone()).await.expect(200).clone();
    assert_eq!(first["device_id"], "MYPHONE");
    let second = login(&server, body).await.expect(200).clone();
    assert_eq!(second["device_id"], "MYPHONE");
    let client = server.client().with_token(second["access_token"].as_str().unwrap());
    let devices = client.get("/_matrix/client/v3/devices").await.expect(200).clone();
    let devices = devices["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "the registration device and MYPHONE: {devices:?}");
    let phone = devices.iter().find(|d| d["device_id"] == "MYPHONE").unwrap();
    assert_eq!(phone["display_name"], "Bob's phone");
    server.stop().await;
}

#[tokio::test]
async fn logout_invalidates_the_token_and_logout_all_every_token() {
    let server = TestServer::start().await;
    let user = server.register("carol").await;
    let other = login(&server, password_login("carol", &user.password)).await.expect(200).clone();
    let other_client = server.client().with_token(other["access_token"].as_str().unwrap());

    user.client.post("/_matrix/client/v3/logout", &json!({})).await.expect(200);
    let gone = user.client.get("/_matrix/client/v3/account/whoami").await;
    gone.expect_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(gone.json["soft_logout"], false);
    other_client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    // The logged-out device is gone.
    let devices = other_client.get("/_matrix/client/v3/devices").await.expect(200).clone();
    assert!(devices["devices"].as_array().unwrap().iter().all(|d| d["device_id"] != user.device_id.as_str()));

    let third = login(&server, password_login("carol", &user.password)).await.expect(200).clone();
    other_client.post("/_matrix/client/v3/logout/all", &json!({})).await.expect(200);
    other_client.get("/_matrix/client/v3/account/whoami").await.expect_error(401, "M_UNKNOWN_TOKEN");
    server
        .client()
        .with_token(third["access_token"].as_str().unwrap())
        .get("/_matrix/client/v3/account/whoami")
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn missing_and_unknown_tokens() {
    let server = TestServer::start().await;
    let user = server.register("dave").await;
    server.client().get("/_matrix/client/v3/account/whoami").await.expect_error(401, "M_MISSING_TOKEN");
    server
        .client()
        .with_token("garbage")
        .get("/_matrix/client/v3/account/whoami")
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    // The deprecated query parameter still works.
    let path = format!("/_matrix/client/v3/account/whoami?access_token={}", user.access_token);
    assert_eq!(server.client().get(&path).await.expect(200)["user_id"], "@dave:test.local");
    server.stop().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_expired_tokens_soft_logout() {
    // A lifetime no step of the rotation below can outlast: expiry is tested on its own after.
    let server = TestServer::start_with(json!({"refreshable_access_token_lifetime": "1h"})).await;
    let user = server.register("erin").await;
    let mut body = password_login("erin", &user.password);
    body["refresh_token"] = json!(true);
    let session = login(&server, body).await.expect(200).clone();
    let expires_in = session["expires_in_ms"].as_u64().unwrap();
    assert!(expires_in > 3_500_000 && expires_in <= 3_600_000, "{session}");
    let refresh_1 = session["refresh_token"].as_str().unwrap().to_owned();

    let refreshed = server
        .client()
        .post("/_matrix/client/v3/refresh", &json!({"refresh_token": refresh_1}))
        .await
        .expect(200)
        .clone();
    let access_2 = refreshed["access_token"].as_str().unwrap().to_owned();
    let refresh_2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh_1, refresh_2);
    // Until the new pair is used, the old refresh token still works (and replaces the pair).
    let again = server
        .client()
        .post("/_matrix/client/v3/refresh", &json!({"refresh_token": refresh_1}))
        .await
        .expect(200)
        .clone();
    let access_3 = again["access_token"].as_str().unwrap().to_owned();
    // That replaced pair is void.
    server
        .client()
        .with_token(&access_2)
        .get("/_matrix/client/v3/account/whoami")
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    server
        .client()
        .post("/_matrix/client/v3/refresh", &json!({"refresh_token": refresh_2}))
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    // Using the newest access token revokes the old refresh token.
    server.client().with_token(&access_3).get("/_matrix/client/v3/account/whoami").await.expect(200);
    server
        .client()
        .post("/_matrix/client/v3/refresh", &json!({"refresh_token": refresh_1}))
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");

    server
        .client()
        .post("/_matrix/client/v3/refresh", &json!({"refresh_token": "nonsense"}))
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    server.stop().await;

    // Expiry: a short lifetime, waited out.
    let server = TestServer::start_with(json!({"refreshable_access_token_lifetime": "1s"})).await;
    let user = server.register("erin").await;
    let mut body = password_login("erin", &user.password);
    body["refresh_token"] = json!(true);
    let session = login(&server, body).await.expect(200).clone();
    let logged_in = Instant::now();
    let expires_in = session["expires_in_ms"].as_u64().unwrap();
    assert!(expires_in > 0 && expires_in <= 1000, "{session}");
    let access = session["access_token"].as_str().unwrap().to_owned();
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    // The lifetime elapsing is the thing tested: this sleep waits it out (counted from the
    // login's answer, after the server set the expiry).
    tokio::time::sleep_until((logged_in + Duration::from_millis(1050)).into()).await;
    let expired = server.client().with_token(&access).get("/_matrix/client/v3/account/whoami").await;
    expired.expect_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.json["soft_logout"], true);
    // Without a refresh token, tokens do not expire.
    user.client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    // The refresh token outlives its access token: it still gets a fresh pair.
    let refreshed = server
        .client()
        .post("/_matrix/client/v3/refresh", &json!({"refresh_token": refresh}))
        .await
        .expect(200)
        .clone();
    assert!(refreshed["access_token"].is_string() && refreshed["refresh_token"].is_string(), "{refreshed}");
    server.stop().await;
}

#[tokio::test]
async fn login_tokens_are_short_lived_and_single_use() {
    let server = TestServer::start().await;
    let user = server.register("fay").await;
    // Off by default.
    user.client
        .post("/_matrix/client/v1/login/get_token", &json!({}))
        .await
        .expect_error(404, "M_UNRECOGNIZED");
    server.stop().await;

    let server = TestServer::start_with(json!({"login_via_existing_session": {"enabled": true, "require_ui_auth": true, "token_timeout": "1m"}})).await;
    let user = server.register("fay").await;
    let challenge =
        user.client.post("/_matrix/client/v1/login/get_token", &json!({})).await.expect(401).clone();
    assert_eq!(challenge["flows"], json!([{"stages": ["m.login.password"]}]));
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id}, "password": user.password, "session": challenge["session"]});
    let token = user
        .client
        .post("/_matrix/client/v1/login/get_token", &json!({"auth": auth}))
        .await
        .expect(200)
        .clone();
    assert!(token["expires_in_ms"].as_u64().unwrap() <= 60_000);
    let login_token = token["login_token"].as_str().unwrap();
    let logged_in =
        login(&server, json!({"type": "m.login.token", "token": login_token})).await.expect(200).clone();
    assert_eq!(logged_in["user_id"], user.user_id.as_str());
    login(&server, json!({"type": "m.login.token", "token": login_token}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    login(&server, json!({"type": "m.login.token", "token": "made-up"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

fn password_auth(user: &TestUser, session: Option<&Value>) -> Value {
    let mut auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id}, "password": user.password});
    if let Some(session) = session {
        auth["session"] = session.clone();
    }
    auth
}

#[tokio::test]
async fn devices_can_be_listed_renamed_and_deleted_with_uia() {
    let server = TestServer::start().await;
    let user = server.register("gus").await;
    let second = login(&server, password_login("gus", &user.password)).await.expect(200).clone();
    let second_device = second["device_id"].as_str().unwrap().to_owned();
    let second_client = server.client().with_token(second["access_token"].as_str().unwrap());

    let path = format!("/_matrix/client/v3/devices/{second_device}");
    user.client.put(&path, &json!({"display_name": "Laptop"})).await.expect(200);
    assert_eq!(user.client.get(&path).await.expect(200)["display_name"], "Laptop");
    user.client.put(&path, &json!({"display_name": "x".repeat(101)})).await.expect_error(413, "M_TOO_LARGE");
    user.client.get("/_matrix/client/v3/devices/NOSUCHDEVICE").await.expect_error(404, "M_NOT_FOUND");
    user.client
        .put("/_matrix/client/v3/devices/NOSUCHDEVICE", &json!({"display_name": "x"}))
        .await
        .expect_error(404, "M_NOT_FOUND");

    // Deleting needs the password.
    let challenge = user.client.request(Method::DELETE, &path, Some(&json!({}))).await.expect(401).clone();
    let mut bad = password_auth(&user, Some(&challenge["session"]));
    bad["password"] = json!("wrong");
    let failed =
        user.client.request(Method::DELETE, &path, Some(&json!({"auth": bad}))).await.expect(401).clone();
    assert_eq!(failed["errcode"], "M_FORBIDDEN");
    second_client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    user.client
        .request(
            Method::DELETE,
            &path,
            Some(&json!({"auth": password_auth(&user, Some(&challenge["session"]))})),
        )
        .await
        .expect(200);
    second_client.get("/_matrix/client/v3/account/whoami").await.expect_error(401, "M_UNKNOWN_TOKEN");
    user.client.get(&path).await.expect_error(404, "M_NOT_FOUND");

    // Bulk deletion, in one request with the password.
    let third = login(&server, password_login("gus", &user.password)).await.expect(200).clone();
    let third_device = third["device_id"].as_str().unwrap();
    user.client
        .post(
            "/_matrix/client/v3/delete_devices",
            &json!({"devices": [third_device, "UNKNOWN"], "auth": password_auth(&user, None)}),
        )
        .await
        .expect(200);
    let devices = user.client.get("/_matrix/client/v3/devices").await.expect(200).clone();
    let ids: Vec<&str> =
        devices["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![user.device_id.as_str()]);
    server.stop().await;
}

async fn last_seen_ip(client: &myelin_test_support::TestClient, device_id: &str) -> Value {
    for _ in 0..100 {
        let device = client.get(&format!("/_matrix/client/v3/devices/{device_id}")).await.expect(200).clone();
        if !device["last_seen_ip"].is_null() {
            assert!(device["last_seen_ts"].as_u64().is_some());
            return device["last_seen_ip"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("last_seen_ip was never recorded");
}

#[tokio::test]
async fn last_seen_ip_honours_x_forwarded_only_when_configured() {
    let server = TestServer::start().await;
    let user = server.register("hal").await;
    let response = user
        .client
        .request_raw(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(last_seen_ip(&user.client, &user.device_id).await, "127.0.0.1");
    server.stop().await;

    let server = TestServer::start_with(json!({"listeners": [{
        "port": 0, "bind_addresses": ["127.0.0.1"], "type": "http", "x_forwarded": true,
        "resources": [{"names": ["client", "federation"]}],
    }]}))
    .await;
    let user = server.register("hal").await;
    let client = user.client.clone();
    let response = client
        .request_raw(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
            &[("x-forwarded-for", "203.0.113.9, 10.0.0.1")],
        )
        .await;
    assert_eq!(response.status, 200);
    // The registration request itself recorded 127.0.0.1 first; wait for the forwarded address.
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = user.client.get(&format!("/_matrix/client/v3/devices/{}", user.device_id)).await.json["last_seen_ip"].clone();
        if seen == "203.0.113.9" {
            break;
        }
        client
            .request_raw(
                Method::GET,
                "/_matrix/client/v3/account/whoami",
                None,
                &[("x-forwarded-for", "203.0.113.9")],
            )
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, "203.0.113.9");
    server.stop().await;
}

#[tokio::test]
async fn password_change_needs_the_old_password_and_logs_out_other_devices() {
    let server = TestServer::start().await;
    let user = server.register("ivy").await;
    let other = login(&server, password_login("ivy", &user.password)).await.expect(200).clone();
    let other_client = server.client().with_token(other["access_token"].as_str().unwrap());

    let challenge = user
        .client
        .post("/_matrix/client/v3/account/password", &json!({"new_password": "n3w-Password"}))
        .await;
    assert_eq!(challenge.expect(401)["flows"], json!([{"stages": ["m.login.password"]}]));
    let mut wrong = password_auth(&user, Some(&challenge.json["session"]));
    wrong["password"] = json!("not-it");
    let failed = user
        .client
        .post("/_matrix/client/v3/account/password", &json!({"new_password": "n3w-Password", "auth": wrong}))
        .await;
    assert_eq!(failed.expect(401)["errcode"], "M_FORBIDDEN");
    user.client
        .post("/_matrix/client/v3/account/password", &json!({"new_password": "n3w-Password", "auth": password_auth(&user, Some(&challenge.json["session"]))}))
        .await
        .expect(200);
    // This device stays, the other is logged out.
    user.client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    other_client.get("/_matrix/client/v3/account/whoami").await.expect_error(401, "M_UNKNOWN_TOKEN");
    login(&server, password_login("ivy", &user.password)).await.expect_error(403, "M_FORBIDDEN");
    login(&server, password_login("ivy", "n3w-Password")).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn deactivation_revokes_everything() {
    let server = TestServer::start().await;
    let user = server.register("jay").await;
    user.client
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", user.user_id),
            &json!({"displayname": "Jay"}),
        )
        .await
        .expect(200);
    let challenge =
        user.client.post("/_matrix/client/v3/account/deactivate", &json!({})).await.expect(401).clone();
    let done = user
        .client
        .post(
            "/_matrix/client/v3/account/deactivate",
            &json!({"auth": password_auth(&user, Some(&challenge["session"])), "erase": true}),
        )
        .await;
    assert_eq!(done.expect(200)["id_server_unbind_result"], "no-support");
    user.client.get("/_matrix/client/v3/account/whoami").await.expect_error(401, "M_UNKNOWN_TOKEN");
    login(&server, password_login("jay", &user.password)).await.expect_error(403, "M_FORBIDDEN");
    let profile = server
        .client()
        .get(&format!("/_matrix/client/v3/profile/{}", user.user_id))
        .await
        .expect(200)
        .clone();
    assert!(profile.get("displayname").is_none(), "{profile}");
    // The name stays taken.
    server
        .client()
        .post(
            "/_matrix/client/v3/register",
            &json!({"username": "jay", "password": "pw-123456", "auth": {"type": "m.login.dummy"}}),
        )
        .await
        .expect_error(400, "M_USER_IN_USE");
    server.stop().await;
}

#[tokio::test]
async fn deactivated_users_are_told_so_at_login() {
    let server = TestServer::start().await;
    let user = server.register("kim").await;
    // Keep the password hash (as an admin deactivation without erasure in Synapse would) to
    // reach the deactivated check.
    server
        .services()
        .store()
        .db()
        .execute("UPDATE users SET deactivated = TRUE WHERE user_id = $1", vec![user.user_id.as_str().into()])
        .await
        .unwrap();
    login(&server, password_login("kim", &user.password)).await.expect_error(403, "M_USER_DEACTIVATED");
    server.stop().await;
}

#[tokio::test]
async fn synapse_password_hashes_log_in() {
    // Hashes produced by Synapse 1.163.2's `hash_password -p hunter2` with bcrypt_rounds 4.
    const PLAIN: &str = "$2b$04$9LkSX7C2AfwVUxi9tX/lCeBWyIFATrmTr6r21Z1LUwrKTT5pWda1i";
    const PEPPERED: &str = "$2b$04$C4kCvfqd4n4Yna20qa5ByeAbaKUHII8TBJ8XY1GPPPxYkmQJ3wKNe";
    for (config, hash) in [(json!({}), PLAIN), (json!({"password_config": {"pepper": "p3pp3r"}}), PEPPERED)] {
        let server = TestServer::start_with(config).await;
        let user = server.register("imported").await;
        server.services().store().set_password_hash(&user.user_id, Some(hash)).await.unwrap();
        login(&server, password_login("imported", "hunter2")).await.expect(200);
        login(&server, password_login("imported", "hunter3")).await.expect_error(403, "M_FORBIDDEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn login_is_rate_limited() {
    let server = TestServer::start_with(json!({"rc_login": {"address": {"per_second": 0.001, "burst_count": 3}, "failed_attempts": {"per_second": 0.001, "burst_count": 1}}})).await;
    let user = server.register("lee").await;
    // One failed attempt is allowed; the next attempt for that account is limited.
    login(&server, password_login("lee", "wrong")).await.expect_error(403, "M_FORBIDDEN");
    let limited = login(&server, password_login("lee", &user.password)).await;
    limited.expect_error(429, "M_LIMIT_EXCEEDED");
    assert!(limited.json["retry_after_ms"].as_u64().unwrap() > 0);
    // The address limit: a burst of three attempts from one address, then no more.
    login(&server, password_login("other", "x")).await.expect_error(403, "M_FORBIDDEN");
    login(&server, password_login("other", "x")).await.expect_error(429, "M_LIMIT_EXCEEDED");
    server.stop().await;
}

#[tokio::test]
async fn capabilities_reflect_configuration() {
    let server = TestServer::start_with(
        json!({"enable_set_displayname": false, "password_config": {"enabled": false}}),
    )
    .await;
    let admin = server.register_admin("root").await;
    let caps = admin.client.get("/_matrix/client/v3/capabilities").await.expect(200).clone();
    let caps = &caps["capabilities"];
    assert_eq!(caps["m.change_password"]["enabled"], false);
    assert_eq!(caps["m.set_displayname"]["enabled"], false);
    assert_eq!(caps["m.set_avatar_url"]["enabled"], true);
    assert_eq!(caps["m.3pid_changes"]["enabled"], false);
    assert_eq!(caps["m.profile_fields"]["disallowed"], json!(["displayname"]));
    // Password login is off with password_config.enabled: false.
    let flows = server.client().get("/_matrix/client/v3/login").await.expect(200).clone();
    assert!(flows["flows"].as_array().unwrap().iter().all(|f| f["type"] != "m.login.password"));
    login(&server, password_login("root", &admin.password)).await.expect_error(400, "M_UNKNOWN");
    server.client().get("/_matrix/client/v3/capabilities").await.expect_error(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn ratelimit_overrides_are_managed_by_admins() {
    let server = TestServer::start().await;
    let admin = server.register_admin("root").await;
    let user = server.register("mia").await;
    let path = format!("/_synapse/admin/v1/users/{}/override_ratelimit", user.user_id);
    assert_eq!(admin.client.get(&path).await.expect(200).clone(), json!({}));
    let set = admin
        .client
        .post(&path, &json!({"messages_per_second": 0, "burst_count": 0}))
        .await
        .expect(200)
        .clone();
    assert_eq!(set, json!({"messages_per_second": 0, "burst_count": 0}));
    assert_eq!(admin.client.get(&path).await.expect(200).clone(), set);
    admin.client.post(&path, &json!({"messages_per_second": -1})).await.expect_error(400, "M_INVALID_PARAM");
    admin.client.delete(&path).await.expect(200);
    assert_eq!(admin.client.get(&path).await.expect(200).clone(), json!({}));
    user.client.get(&path).await.expect_error(403, "M_FORBIDDEN");
    admin.client.get("/_synapse/admin/v1/users/@ghost:test.local/override_ratelimit").await.expect(200);
    admin
        .client
        .post("/_synapse/admin/v1/users/@ghost:test.local/override_ratelimit", &json!({}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn stale_devices_are_deleted() {
    let mut server = TestServer::start_with(json!({"delete_stale_devices_after": "1d"})).await;
    let user = server.register("olga").await;
    let old = login(&server, password_login("olga", &user.password)).await.expect(200).clone();
    let old_device = old["device_id"].as_str().unwrap().to_owned();
    server
        .services()
        .store()
        .db()
        .execute(
            "UPDATE devices SET last_seen_ts = 0, created_ts = 0 WHERE device_id = $1",
            vec![old_device.as_str().into()],
        )
        .await
        .unwrap();
    // Housekeeping runs at start-up.
    server.restart().await;
    let user_client = server.client().with_token(&user.access_token);
    let mut ids = Vec::new();
    for _ in 0..100 {
        let devices = user_client.get("/_matrix/client/v3/devices").await.expect(200).clone();
        ids = devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device_id"].as_str().unwrap().to_owned())
            .collect();
        if !ids.contains(&old_device) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ids, vec![user.device_id.clone()]);
    server
        .client()
        .with_token(old["access_token"].as_str().unwrap())
        .get("/_matrix/client/v3/account/whoami")
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    server.stop().await;
}
