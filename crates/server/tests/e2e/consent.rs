//! Privacy-policy consent (`user_consent`, Synapse's consent resource): a user who has not
//! consented is refused sends with `M_CONSENT_NOT_GIVEN` and the page to consent on; the page
//! (`GET /_matrix/consent`) renders the policy template for the user, `POST` records the
//! consent; bad MACs, unknown users, missing parameters and unknown versions; the routes do not
//! exist without `user_consent`; the consent server notice arrives once; and the
//! `m.login.terms` registration stage records consent.

use myelin_test_support::{TestServer, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

use crate::relations::join;

/// HMAC-SHA256 of the localpart keyed with the test servers' `form_secret`
/// (`test-form-secret`), computed with Python's `hmac` as Synapse does.
const ALICE_MAC: &str = "0303de33d106a542c33d36fee745c863cd6088fc8cd4515fec03d3f6437a1188";
pub(crate) const BOB_MAC: &str = "a63f28f81426fd819cc203645ebf8e47c54607a4fecc84c64e8b9e7973f2f62b";
const NOBODY_MAC: &str = "4d5a1bc32a608c745f6966b86f254964075ce8b343577574ad5d437c91f41114";
/// The MAC of the full user ID, which Synapse also accepts as `u`.
const ALICE_FULL_ID_MAC: &str = "eb4bb9879ed45a73aea4c196355a56dac7f6813e058d15cfebb02869ba567917";

const BLOCK_ERROR: &str = "To continue, review and agree to our policy at %(consent_uri)s (100%% required)";

/// A template directory with `en/1.0.html` and `en/success.html`.
pub(crate) fn templates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("en")).unwrap();
    std::fs::write(
        dir.path().join("en/1.0.html"),
        "<h1>Policy {{ version }}</h1>\
         {% if public_version %}<p>public</p>{% else %}<p>user={{ user }} mac={{ userhmac }}</p>{% endif %}\
         {% if has_consented %}<p>ALREADY AGREED</p>{% else %}<p>NOT YET</p>{% endif %}",
    )
    .unwrap();
    std::fs::write(dir.path().join("en/success.html"), "<p>Thank you for agreeing</p>").unwrap();
    dir
}

pub(crate) fn consent_config(dir: &tempfile::TempDir, extra: Value) -> Value {
    let mut consent = json!({
        "template_dir": dir.path(),
        "version": "1.0",
        "block_events_error": BLOCK_ERROR,
        "policy_name": "Our Privacy Policy",
    });
    consent.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({
        "user_consent": consent,
        "server_notices": {"system_mxid_localpart": "notices", "room_name": "Server Notices"},
    })
}

/// The path and query of a consent URI (`public_baseurl` is not the test server's address).
fn local_path(consent_uri: &str) -> String {
    let start = consent_uri.find("/_matrix/consent").expect("a consent URI");
    consent_uri[start..].to_owned()
}

async fn create_room(user: &TestUser) -> reqwest::StatusCode {
    let answer = user.client.post("/_matrix/client/v3/createRoom", &json!({})).await;
    reqwest::StatusCode::from_u16(answer.status).unwrap()
}

pub(crate) async fn post_form(
    server: &TestServer,
    path: &str,
    form: &str,
) -> myelin_test_support::TestResponse {
    // `request_raw` labels bodies as JSON; the form is sent with its own content type.
    let http = myelin_test_support::http_client();
    let response = http
        .post(format!("{}{path}", server.base_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    myelin_test_support::TestResponse { status, headers, body, json }
}

fn text(response: &myelin_test_support::TestResponse) -> String {
    String::from_utf8(response.body.clone()).unwrap()
}

#[tokio::test]
async fn a_user_is_blocked_until_they_consent_on_the_policy_page() {
    let dir = templates();
    let server = TestServer::start_with(consent_config(&dir, json!({}))).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    // Not consented: creating a room and sending are refused with the page to consent on.
    let refused = alice.client.post("/_matrix/client/v3/createRoom", &json!({})).await;
    refused.expect_error(403, "M_CONSENT_NOT_GIVEN");
    let consent_uri = refused.json["consent_uri"].as_str().unwrap().to_owned();
    assert!(consent_uri.ends_with(&format!("_matrix/consent?u=alice&h={ALICE_MAC}")), "{consent_uri}");
    assert_eq!(
        refused.json["error"],
        format!("To continue, review and agree to our policy at {consent_uri} (100% required)")
    );
    // Admins are not exempt (as Synapse).
    let admin = server.register_admin("admin").await;
    admin
        .client
        .post("/_matrix/client/v3/createRoom", &json!({}))
        .await
        .expect_error(403, "M_CONSENT_NOT_GIVEN");

    // The page shows the policy for alice, with her MAC, not yet agreed.
    let page = server.client().get(&local_path(&consent_uri)).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let html = text(&page);
    assert!(html.contains("<h1>Policy 1.0</h1>"), "{html}");
    assert!(html.contains(&format!("user=alice mac={ALICE_MAC}")), "{html}");
    assert!(html.contains("NOT YET"), "{html}");
    // Without `u` the public version renders.
    let public = server.client().get("/_matrix/consent").await;
    assert_eq!(public.status, 200);
    assert!(text(&public).contains("<p>public</p>"), "{}", text(&public));

    // Agreeing (the form's fields in the body) renders the success page.
    let agreed = post_form(&server, "/_matrix/consent", &format!("u=alice&h={ALICE_MAC}&v=1.0")).await;
    assert_eq!(agreed.status, 200, "{}", text(&agreed));
    assert_eq!(text(&agreed), "<p>Thank you for agreeing</p>");
    let again = server.client().get(&local_path(&consent_uri)).await;
    assert!(text(&again).contains("ALREADY AGREED"), "{}", text(&again));
    // The admin API shows the consent.
    let details = admin.client.get(&format!("/_synapse/admin/v2/users/{}", alice.user_id)).await;
    let details = details.expect(200);
    assert_eq!(details["consent_version"], "1.0");
    assert!(details["consent_ts"].as_i64().is_some_and(|ts| ts > 0), "{details}");

    // Now alice can create a room and send.
    let room = alice.client.post("/_matrix/client/v3/createRoom", &json!({})).await;
    let room_id = room.expect(200)["room_id"].as_str().unwrap().to_owned();
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"),
            &json!({"msgtype": "m.text", "body": "hello"}),
        )
        .await
        .expect(200);
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room_id}/invite"), &json!({"user_id": bob.user_id}))
        .await
        .expect(200);
    // Bob has not consented: he cannot join an ordinary room, but may reject the invite.
    bob.client
        .post(&format!("/_matrix/client/v3/rooms/{room_id}/join"), &json!({}))
        .await
        .expect_error(403, "M_CONSENT_NOT_GIVEN");
    bob.client.post(&format!("/_matrix/client/v3/rooms/{room_id}/leave"), &json!({})).await.expect(200);

    // A consent to another version does not count.
    let old = post_form(&server, "/_matrix/consent", &format!("u=bob&h={BOB_MAC}&v=0.9")).await;
    assert_eq!(old.status, 200);
    assert_eq!(create_room(&bob).await, reqwest::StatusCode::FORBIDDEN);
    // The full user ID works as `u` too, and the query string may carry the fields.
    let full = post_form(
        &server,
        &format!("/_matrix/consent?u=%40alice%3Atest.local&h={ALICE_FULL_ID_MAC}&v=1.0"),
        "",
    )
    .await;
    assert_eq!(full.status, 200, "{}", text(&full));

    // Bot (and support) users need no consent.
    admin
        .client
        .put(
            "/_synapse/admin/v2/users/@robot:test.local",
            &json!({"password": "robot-password-1A!", "user_type": "bot"}),
        )
        .await
        .expect(201);
    let login = server
        .client()
        .post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "robot"}, "password": "robot-password-1A!"}),
        )
        .await;
    let robot = server.client().with_token(login.expect(200)["access_token"].as_str().unwrap());
    robot.post("/_matrix/client/v3/createRoom", &json!({})).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_to_the_consent_page() {
    let dir = templates();
    let server = TestServer::start_with(consent_config(&dir, json!({}))).await;
    server.register("alice").await;
    let client = server.client();
    let wrong = "00".repeat(32);

    // A wrong MAC: 403 M_FORBIDDEN, on both methods; an upper-case MAC is not Synapse's either.
    client.get(&format!("/_matrix/consent?u=alice&h={wrong}")).await.expect_error(403, "M_FORBIDDEN");
    client.get("/_matrix/consent?u=alice&h=zz").await.expect_error(403, "M_FORBIDDEN");
    client
        .get(&format!("/_matrix/consent?u=alice&h={}", ALICE_MAC.to_uppercase()))
        .await
        .expect_error(403, "M_FORBIDDEN");
    post_form(&server, "/_matrix/consent", &format!("u=alice&h={wrong}&v=1.0"))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Bob's MAC is no good for alice.
    client
        .get("/_matrix/consent?u=alice&h=a63f28f81426fd819cc203645ebf8e47c54607a4fecc84c64e8b9e7973f2f62b")
        .await
        .expect_error(403, "M_FORBIDDEN");

    // A valid MAC of a user who does not exist: 404.
    client.get(&format!("/_matrix/consent?u=nobody&h={NOBODY_MAC}")).await.expect_error(404, "M_NOT_FOUND");
    post_form(&server, "/_matrix/consent", &format!("u=nobody&h={NOBODY_MAC}&v=1.0"))
        .await
        .expect_error(404, "M_NOT_FOUND");

    // Missing parameters: 400 M_MISSING_PARAM.
    client.get("/_matrix/consent?u=alice").await.expect_error(400, "M_MISSING_PARAM");
    post_form(&server, "/_matrix/consent", &format!("u=alice&h={ALICE_MAC}"))
        .await
        .expect_error(400, "M_MISSING_PARAM");
    post_form(&server, "/_matrix/consent", &format!("h={ALICE_MAC}&v=1.0"))
        .await
        .expect_error(400, "M_MISSING_PARAM");
    post_form(&server, "/_matrix/consent", "u=alice&v=1.0").await.expect_error(400, "M_MISSING_PARAM");

    // An unknown version, or a path out of the template directory: 404.
    client
        .get(&format!("/_matrix/consent?u=alice&h={ALICE_MAC}&v=9.9"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    client.get("/_matrix/consent?v=..%2F..%2Fetc%2Fpasswd").await.expect_error(404, "M_NOT_FOUND");
    // NUL characters are refused before they reach the store.
    post_form(&server, "/_matrix/consent", &format!("u=alice&h={ALICE_MAC}&v=1%000"))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    // A wrong method is 405.
    client
        .request(Method::PUT, "/_matrix/consent", Some(&json!({})))
        .await
        .expect_error(405, "M_UNRECOGNIZED");
    server.stop().await;
}

#[tokio::test]
async fn without_user_consent_the_routes_do_not_exist_and_sends_are_not_blocked() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let client = server.client();
    client.get(&format!("/_matrix/consent?u=alice&h={ALICE_MAC}")).await.expect_error(404, "M_UNRECOGNIZED");
    post_form(&server, "/_matrix/consent", &format!("u=alice&h={ALICE_MAC}&v=1.0"))
        .await
        .expect_error(404, "M_UNRECOGNIZED");
    assert_eq!(create_room(&alice).await, reqwest::StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn without_block_events_error_sends_are_not_blocked() {
    let dir = templates();
    let server = TestServer::start_with(json!({
        "user_consent": {"template_dir": dir.path(), "version": 2},
    }))
    .await;
    let alice = server.register("alice").await;
    assert_eq!(create_room(&alice).await, reqwest::StatusCode::OK);
    // A numeric version is read as text, as Synapse's `str()`: `2` is the version page `2.html`.
    client_get_status(&server, "/_matrix/consent?v=2", 404).await;
    server.stop().await;
}

async fn client_get_status(server: &TestServer, path: &str, status: u16) {
    let answer = server.client().get(path).await;
    assert_eq!(answer.status, status, "{}", text(&answer));
}

/// The `m.room.message` events of a room, oldest first.
async fn messages(user: &TestUser, room_id: &str) -> Vec<Value> {
    let answer =
        user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=f&limit=100")).await;
    answer.expect(200)["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_consent_notice_arrives_once_on_sync() {
    let dir = templates();
    let extra = json!({"server_notice_content": {
        "msgtype": "m.text",
        "body": "Please review the policy at %(consent_uri)s",
    }});
    let mut config = consent_config(&dir, extra);
    config["allow_guest_access"] = json!(true);
    let server = TestServer::start_with(config).await;
    let alice = server.register("alice").await;

    // Guests get no notice (`send_server_notice_to_guests` is off).
    let guest = server.client().post("/_matrix/client/v3/register?kind=guest", &json!({})).await;
    let guest = server.client().with_token(guest.expect(200)["access_token"].as_str().unwrap());
    let sync = guest.get("/_matrix/client/v3/sync?timeout=0").await;
    assert!(sync.expect(200)["rooms"]["invite"].as_object().is_none_or(|m| m.is_empty()), "{}", sync.json);

    // The first sync sends the notice: alice is invited to her notices room.
    let sync = alice.client.get("/_matrix/client/v3/sync?timeout=0").await;
    let invites = sync.expect(200)["rooms"]["invite"].as_object().cloned().unwrap_or_default();
    assert_eq!(invites.len(), 1, "{}", sync.json);
    let room_id = invites.keys().next().unwrap().clone();
    // Joining a notices room needs no consent (sending does).
    join(&alice, &room_id).await;
    for _ in 0..3 {
        alice.client.get("/_matrix/client/v3/sync?timeout=0").await.expect(200);
    }
    let notices = messages(&alice, &room_id).await;
    assert_eq!(notices.len(), 1, "one notice: {notices:?}");
    assert_eq!(notices[0]["sender"], format!("@notices:{}", server.server_name));
    assert_eq!(
        notices[0]["content"],
        json!({
            "msgtype": "m.text",
            "body": format!("Please review the policy at https://test.local/_matrix/consent?u=alice&h={ALICE_MAC}"),
        })
    );
    // The admin API shows the notice's version as sent.
    let admin = server.register_admin("admin").await;
    let details = admin.client.get(&format!("/_synapse/admin/v2/users/{}", alice.user_id)).await;
    assert_eq!(details.expect(200)["consent_server_notice_sent"], "1.0");

    // A user who consented gets no notice.
    let bob = server.register("bob").await;
    let bob_mac = "a63f28f81426fd819cc203645ebf8e47c54607a4fecc84c64e8b9e7973f2f62b";
    assert_eq!(post_form(&server, "/_matrix/consent", &format!("u=bob&h={bob_mac}&v=1.0")).await.status, 200);
    let sync = bob.client.get("/_matrix/client/v3/sync?timeout=0").await;
    assert!(sync.expect(200)["rooms"]["invite"].as_object().is_none_or(|m| m.is_empty()), "{}", sync.json);
    server.stop().await;
}

#[tokio::test]
async fn registration_requires_the_terms_stage_and_records_consent() {
    let dir = templates();
    let mut config = consent_config(&dir, json!({"require_at_registration": true}));
    config["auto_join_rooms"] = json!(["#welcome:test.local"]);
    config["autocreate_auto_join_rooms"] = json!(true);
    let server = TestServer::start_with(config).await;
    let client = server.client();
    let body = json!({"username": "carol", "password": "carol-password-1A!"});
    let first = client.post("/_matrix/client/v3/register", &body).await;
    let challenge = first.expect(401).clone();
    assert_eq!(challenge["flows"], json!([{"stages": ["m.login.terms", "m.login.dummy"]}]));
    assert_eq!(
        challenge["params"],
        json!({"m.login.terms": {"policies": {"privacy_policy": {
            "version": "1.0",
            "en": {"name": "Our Privacy Policy", "url": "https://test.local/_matrix/consent?v=1.0"},
        }}}})
    );
    let session = challenge["session"].as_str().unwrap();
    // The dummy stage alone does not complete the flow.
    let mut with_auth = body.clone();
    with_auth["auth"] = json!({"type": "m.login.dummy", "session": session});
    let second = client.post("/_matrix/client/v3/register", &with_auth).await;
    assert_eq!(second.expect(401)["completed"], json!(["m.login.dummy"]));
    with_auth["auth"] = json!({"type": "m.login.terms", "session": session});
    let done = client.post("/_matrix/client/v3/register", &with_auth).await;
    let token = done.expect(200)["access_token"].as_str().unwrap().to_owned();
    let carol = server.client().with_token(&token);
    // Having consented, she was auto-joined to the one auto-join room.
    let joined = carol.get("/_matrix/client/v3/joined_rooms").await.expect(200)["joined_rooms"].clone();
    let welcome = joined.as_array().unwrap().first().expect("auto-joined").clone();
    assert_eq!(joined.as_array().unwrap().len(), 1);
    // Consent was recorded: carol may send at once.
    carol.post("/_matrix/client/v3/createRoom", &json!({})).await.expect(200);

    // An account made without the terms stage (the admin API) is not auto-joined until it
    // consents on the page (Synapse's `post_consent_actions`).
    let admin = server.register_admin("admin").await;
    let joined = admin.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.expect(200)["joined_rooms"], json!([]));
    let admin_mac = "c7018a271856f1a30b4aedda25dba14e09234dfc1945b25417091bd5ec6460ae";
    let agreed = post_form(&server, "/_matrix/consent", &format!("u=admin&h={admin_mac}&v=1.0")).await;
    assert_eq!(agreed.status, 200, "{}", text(&agreed));
    let joined = admin.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.expect(200)["joined_rooms"], json!([welcome]));
    server.stop().await;
}

/// A sync dropped at any of its awaits still sends the consent notice once and leaves every
/// stream able to advance (the notice runs on a task of its own).
#[tokio::test]
async fn syncs_dropped_at_every_await_send_the_consent_notice_once() {
    use myelin_service::auth::ClientInfo;
    use myelin_service::sync::SyncRequest;
    use myelin_test_support::cancel::{assert_streams_settle, cancel_at_every_await};

    let dir = templates();
    let extra = json!({"server_notice_content": {"msgtype": "m.text", "body": "see %(consent_uri)s"}});
    let server = TestServer::start_with(consent_config(&dir, extra)).await;
    let alice = server.register("alice").await;
    let services = server.services().clone();
    let client_info = ClientInfo { ip: None, user_agent: None };
    let requester = services.authenticate(&alice.access_token, &client_info).await.unwrap();
    let (runs, result) =
        cancel_at_every_await(|| services.sync(&requester, SyncRequest::default()), 500).await;
    result.unwrap();
    // At least one run was dropped mid-way. (How many depends on what earlier runs left
    // cached and on whether the notice's own task finished first, so no more is asked.)
    assert!(runs >= 1, "the sync awaited something");
    assert_streams_settle(&services).await;

    // A dropped sync's notice task may still be finishing: wait for the invite.
    let mut invites = serde_json::Map::new();
    for _ in 0..50 {
        let sync = alice.client.get("/_matrix/client/v3/sync?timeout=0").await;
        invites = sync.expect(200)["rooms"]["invite"].as_object().cloned().unwrap_or_default();
        if !invites.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(invites.len(), 1, "one notices room: {invites:?}");
    let room_id = invites.keys().next().unwrap().clone();
    join(&alice, &room_id).await;
    alice.client.get("/_matrix/client/v3/sync?timeout=0").await.expect(200);
    assert_eq!(messages(&alice, &room_id).await.len(), 1);
    server.stop().await;
}
