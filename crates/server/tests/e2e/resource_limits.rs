//! Synapse's resource limits: `hs_disabled` and the monthly active user cohort
//! (`limit_usage_by_mau`, `max_mau_value`, `mau_trial_days`), refused with
//! `403 M_RESOURCE_LIMIT_EXCEEDED` naming `admin_contact` and the `limit_type`, at registration,
//! login, `/sync` and every event a client makes; the admin API's registration passes.

use myelin_test_support::server::shared_secret_body;
use myelin_test_support::{TestResponse, TestServer, TestUser};
use serde_json::json;

use crate::rooms::{create_room, urlencode};

/// Registers a plain user through the shared-secret admin API (which limits never block).
async fn admin_registered(server: &TestServer, localpart: &str) -> TestUser {
    let password = format!("{localpart}-password-1A!");
    let body = shared_secret_body(server, localpart, &password, false, None).await;
    let response = server.client().post("/_synapse/admin/v1/register", &body).await;
    let body = response.expect(200).clone();
    let access_token = body["access_token"].as_str().unwrap().to_owned();
    TestUser {
        user_id: body["user_id"].as_str().unwrap().to_owned(),
        device_id: body["device_id"].as_str().unwrap().to_owned(),
        client: server.client().with_token(&access_token),
        access_token,
        password,
    }
}

fn assert_limited(response: &TestResponse, limit_type: &str) {
    response.expect_error(403, "M_RESOURCE_LIMIT_EXCEEDED");
    assert_eq!(response.json["limit_type"], limit_type, "{}", response.json);
    assert_eq!(response.json["admin_contact"], "mailto:admin@test.local", "{}", response.json);
}

async fn register(server: &TestServer, localpart: &str) -> TestResponse {
    let body = json!({"username": localpart, "password": "Pass-word-1A!", "auth": {"type": "m.login.dummy"}});
    server.client().post("/_matrix/client/v3/register", &body).await
}

async fn login(server: &TestServer, user: &TestUser) -> TestResponse {
    let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id}, "password": user.password});
    server.client().post("/_matrix/client/v3/login", &body).await
}

#[tokio::test]
async fn a_disabled_server_refuses_users_but_not_the_admin_api() {
    let server = TestServer::start_with(json!({
        "hs_disabled": true,
        "hs_disabled_message": "Down for maintenance",
        "admin_contact": "mailto:admin@test.local",
    }))
    .await;
    let refused = register(&server, "alice").await;
    assert_limited(&refused, "hs_disabled");
    assert_eq!(refused.json["error"], "Down for maintenance");
    let bob = admin_registered(&server, "bob").await;
    assert_limited(&bob.client.get("/_matrix/client/v3/sync").await, "hs_disabled");
    assert_limited(&login(&server, &bob).await, "hs_disabled");
    let create = bob.client.post("/_matrix/client/v3/createRoom", &json!({})).await;
    assert_limited(&create, "hs_disabled");
    // Reads that make no event still work.
    bob.client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn a_full_monthly_active_cohort_refuses_users_outside_it() {
    let server = TestServer::start_with(json!({
        "limit_usage_by_mau": true,
        "max_mau_value": 2,
        "admin_contact": "mailto:admin@test.local",
    }))
    .await;
    let alice = admin_registered(&server, "alice").await;
    let bob = admin_registered(&server, "bob").await;
    let carol = admin_registered(&server, "carol").await;
    // Registration passes while the cohort has room (nobody has been seen yet).
    let dave = register(&server, "dave").await;
    dave.expect(200);
    // alice and bob are seen: the cohort is full.
    alice.client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    bob.client.get("/_matrix/client/v3/account/whoami").await.expect(200);

    assert_limited(&register(&server, "erin").await, "monthly_active_user");
    assert_limited(&carol.client.get("/_matrix/client/v3/sync").await, "monthly_active_user");
    assert_limited(&login(&server, &carol).await, "monthly_active_user");
    assert_limited(
        &carol.client.post("/_matrix/client/v3/createRoom", &json!({})).await,
        "monthly_active_user",
    );

    // Members of the cohort go on: sync, login, rooms, sends, joins.
    alice.client.get("/_matrix/client/v3/sync").await.expect(200);
    login(&server, &alice).await.expect(200);
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let send = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", urlencode(&room));
    alice.client.put(&send, &json!({"msgtype": "m.text", "body": "hi"})).await.expect(200);
    let join = format!("/_matrix/client/v3/join/{}", urlencode(&room));
    bob.client.post(&join, &json!({})).await.expect(200);
    assert_limited(&carol.client.post(&join, &json!({})).await, "monthly_active_user");
    // The admin API still registers users.
    admin_registered(&server, "frank").await;
    server.stop().await;
}

#[tokio::test]
async fn trial_users_are_outside_the_cohort_and_never_refused() {
    let server = TestServer::start_with(json!({
        "limit_usage_by_mau": true,
        "max_mau_value": 0,
        "mau_trial_days": 1,
        "admin_contact": "mailto:admin@test.local",
    }))
    .await;
    // A full cohort (of size 0) refuses registration; a trial user already registered passes.
    assert_limited(&register(&server, "alice").await, "monthly_active_user");
    let bob = admin_registered(&server, "bob").await;
    bob.client.get("/_matrix/client/v3/sync").await.expect(200);
    create_room(&bob, json!({})).await;
    server.stop().await;
}
