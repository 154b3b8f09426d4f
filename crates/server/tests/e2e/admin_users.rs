//! The admin API's users: the list with its filters, ordering and pagination, one user's
//! details, the admin flag, deactivation, joined rooms, `whois`, `username_available` and the
//! server version, password resets, logging in as a user, memberships, account data, shadow
//! bans, suspensions, experimental features, redacting a user's events, user and event
//! reports; every admin route refused to non-admins.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::relations::join;
use crate::rooms::{create_room, send_text};

fn names(body: &Value) -> Vec<&str> {
    body["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn admins_list_users_with_filters_order_and_pages() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            &json!({"displayname": "Zed Alice"}),
        )
        .await
        .expect(200);
    let list = |query: &str| {
        let client = admin.client.clone();
        let path = format!("/_synapse/admin/v2/users{query}");
        async move { client.get(&path).await }
    };

    let all = list("").await;
    let body = all.expect(200);
    assert_eq!(body["total"], 4, "{body}");
    assert_eq!(names(body), vec![admin.user_id.as_str(), &alice.user_id, &bob.user_id, &carol.user_id]);
    assert!(body.get("next_token").is_none(), "one page holds everything: {body}");
    let first = &body["users"][1];
    for (field, kind) in [
        ("name", "string"),
        ("is_guest", "bool"),
        ("admin", "bool"),
        ("deactivated", "bool"),
        ("shadow_banned", "bool"),
        ("erased", "bool"),
        ("locked", "bool"),
        ("creation_ts", "number"),
        ("displayname", "string"),
    ] {
        let ok = match kind {
            "string" => first[field].is_string(),
            "bool" => first[field].is_boolean(),
            _ => first[field].is_i64(),
        };
        assert!(ok, "{field} should be a {kind}: {first}");
    }
    assert_eq!(body["users"][0]["admin"], true);

    // Pages: `next_token` until the end.
    let page = list("?limit=2").await;
    let page = page.expect(200);
    assert_eq!(names(page).len(), 2);
    assert_eq!(page["next_token"], "2");
    let rest = list("?from=2&limit=2").await;
    assert_eq!(names(rest.expect(200)), vec![bob.user_id.as_str(), &carol.user_id]);
    assert!(rest.expect(200).get("next_token").is_none());
    // A page in the middle carries each user's own fields (read for the page's users alone).
    let middle = list("?order_by=name&from=1&limit=2").await;
    let middle = middle.expect(200);
    assert_eq!(names(middle), vec![alice.user_id.as_str(), &bob.user_id]);
    assert_eq!(middle["users"][0]["displayname"], "Zed Alice", "{middle}");
    assert_eq!(middle["users"][1]["name"], bob.user_id.as_str());
    assert_eq!(middle["total"], 4);

    // Filters: name matches the localpart or the display name; admins; order and direction.
    assert_eq!(names(list("?name=zed").await.expect(200)), vec![alice.user_id.as_str()]);
    assert_eq!(names(list("?name=bo").await.expect(200)), vec![bob.user_id.as_str()]);
    // Case-insensitive on both, and the total of a short page is its length (a page past the
    // matches still counts them).
    let upper = list("?name=ZED%20A").await;
    assert_eq!(names(upper.expect(200)), vec![alice.user_id.as_str()]);
    assert_eq!(upper.expect(200)["total"], 1);
    assert_eq!(names(list("?name=BO").await.expect(200)), vec![bob.user_id.as_str()]);
    let past = list("?name=o&from=5").await;
    assert!(names(past.expect(200)).is_empty());
    assert_eq!(past.expect(200)["total"], 2, "bob and carol: {}", past.json);
    assert_eq!(names(list("?user_id=car").await.expect(200)), vec![carol.user_id.as_str()]);
    assert_eq!(names(list("?admins=true").await.expect(200)), vec![admin.user_id.as_str()]);
    assert_eq!(list("?admins=false").await.expect(200)["total"], 3);
    assert_eq!(
        names(list("?dir=b").await.expect(200)),
        vec![carol.user_id.as_str(), &bob.user_id, &alice.user_id, &admin.user_id]
    );
    let admins_first = list("?order_by=admin&dir=b").await;
    assert_eq!(
        names(admins_first.expect(200)),
        vec![admin.user_id.as_str(), &alice.user_id, &bob.user_id, &carol.user_id],
        "admins first, then by ID"
    );
    let admins_last = list("?order_by=admin&dir=f").await;
    assert_eq!(names(admins_last.expect(200))[3], admin.user_id);

    // Deactivated users: left out of v2 unless asked for; v3 filters both ways.
    admin
        .client
        .post(&format!("/_synapse/admin/v1/deactivate/{}", carol.user_id), &json!({}))
        .await
        .expect(200);
    assert_eq!(list("").await.expect(200)["total"], 3);
    assert_eq!(list("?deactivated=true").await.expect(200)["total"], 4);
    let v3 = admin.client.get("/_synapse/admin/v3/users?deactivated=true").await;
    assert_eq!(names(v3.expect(200)), vec![carol.user_id.as_str()]);
    assert_eq!(admin.client.get("/_synapse/admin/v3/users").await.expect(200)["total"], 4);

    // Bad parameters.
    for query in ["?from=-1", "?limit=-5", "?limit=many", "?order_by=password", "?dir=up", "?guests=yes"] {
        list(query).await.expect_error(400, "M_INVALID_PARAM");
    }
    // Not an admin.
    bob.client.get("/_synapse/admin/v2/users").await.expect_error(403, "M_FORBIDDEN");
    server.client().get("/_synapse/admin/v2/users").await.expect_error(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn admins_read_one_user_and_change_the_admin_flag() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let details = admin.client.get(&format!("/_synapse/admin/v2/users/{}", alice.user_id)).await;
    let body = details.expect(200);
    assert_eq!(body["name"], alice.user_id.as_str());
    assert_eq!(body["admin"], false);
    assert_eq!(body["deactivated"], false);
    assert!(body["threepids"].is_array() && body["external_ids"].is_array(), "{body}");
    // Seconds in the details (as Synapse answers), milliseconds in the list.
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let created = body["creation_ts"].as_i64().expect("creation_ts");
    assert!((now_s - 60..=now_s + 60).contains(&created), "seconds: {body}");
    let list =
        admin.client.get(&format!("/_synapse/admin/v2/users?name={}", "alice")).await.expect(200).clone();
    let listed =
        list["users"].as_array().unwrap().iter().find(|u| u["name"] == alice.user_id.as_str()).cloned();
    let listed_ms = listed.expect("alice listed")["creation_ts"].as_i64().expect("creation_ts");
    assert_eq!(listed_ms / 1000, created, "milliseconds in the list: {list}");

    let unknown = format!("@nobody:{}", server.server_name);
    admin.client.get(&format!("/_synapse/admin/v2/users/{unknown}")).await.expect_error(404, "M_NOT_FOUND");
    admin.client.get("/_synapse/admin/v2/users/not-a-user-id").await.expect_error(400, "M_INVALID_PARAM");
    admin
        .client
        .get("/_synapse/admin/v2/users/@someone:elsewhere.example")
        .await
        .expect_error(400, "M_INVALID_PARAM");

    let flag = |user: &str| format!("/_synapse/admin/v1/users/{user}/admin");
    assert_eq!(admin.client.get(&flag(&alice.user_id)).await.expect(200), &json!({"admin": false}));
    // Alice is no admin: she can do nothing with the flag.
    alice.client.put(&flag(&alice.user_id), &json!({"admin": true})).await.expect_error(403, "M_FORBIDDEN");
    admin.client.put(&flag(&alice.user_id), &json!({"admin": true})).await.expect(200);
    assert_eq!(admin.client.get(&flag(&alice.user_id)).await.expect(200), &json!({"admin": true}));
    // Her existing token now carries admin rights.
    alice.client.get("/_synapse/admin/v2/users").await.expect(200);
    // Nobody demotes themself; a missing or mistyped flag is refused.
    admin.client.put(&flag(&admin.user_id), &json!({"admin": false})).await.expect_error(400, "M_BAD_JSON");
    admin.client.put(&flag(&alice.user_id), &json!({"admin": "yes"})).await.expect_error(400, "M_BAD_JSON");
    admin.client.put(&flag(&alice.user_id), &json!({})).await.expect_error(400, "M_BAD_JSON");
    admin.client.put(&flag(&alice.user_id), &json!({"admin": false})).await.expect(200);
    alice.client.get("/_synapse/admin/v2/users").await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn a_deactivated_user_is_logged_out_leaves_rooms_and_cannot_log_in() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;
    let rooms = admin.client.get(&format!("/_synapse/admin/v1/users/{}/joined_rooms", bob.user_id)).await;
    assert_eq!(rooms.expect(200), &json!({"total": 1, "joined_rooms": [room_id]}));

    bob.client
        .post(&format!("/_synapse/admin/v1/deactivate/{}", alice.user_id), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    let deactivated = admin
        .client
        .post(&format!("/_synapse/admin/v1/deactivate/{}", bob.user_id), &json!({"erase": true}))
        .await;
    assert_eq!(deactivated.expect(200), &json!({"id_server_unbind_result": "success"}));
    // Logged out, out of the room, unable to log in again; deactivating again is harmless.
    bob.client.get("/_matrix/client/v3/account/whoami").await.expect_error(401, "M_UNKNOWN_TOKEN");
    let rooms = admin.client.get(&format!("/_synapse/admin/v1/users/{}/joined_rooms", bob.user_id)).await;
    assert_eq!(rooms.expect(200), &json!({"total": 0, "joined_rooms": []}));
    let login = server
        .client()
        .post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob.user_id}, "password": bob.password}),
        )
        .await;
    // Deactivation removed the password (Synapse answers the same for a wrong password then).
    login.expect_error(403, "M_FORBIDDEN");
    let details = admin.client.get(&format!("/_synapse/admin/v2/users/{}", bob.user_id)).await;
    assert_eq!(details.expect(200)["deactivated"], true);
    assert_eq!(details.expect(200)["erased"], true);
    admin
        .client
        .post(&format!("/_synapse/admin/v1/deactivate/{}", bob.user_id), &json!({}))
        .await
        .expect(200);
    let unknown = format!("@nobody:{}", server.server_name);
    admin
        .client
        .post(&format!("/_synapse/admin/v1/deactivate/{unknown}"), &json!({}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .post(&format!("/_synapse/admin/v1/deactivate/{}", alice.user_id), &json!({"erase": "no"}))
        .await
        .expect_error(400, "M_BAD_JSON");
    server.stop().await;
}

#[tokio::test]
async fn an_erased_users_messages_are_pruned_for_those_who_joined_later() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;
    send_text(&bob, &room_id, "t1", "my secret").await;
    send_text(&alice, &room_id, "t2", "alice speaks").await;
    let carol = server.register("carol").await;
    join(&carol, &room_id).await;
    // Shared history: carol sees bob's message while he is not erased...
    assert_eq!(message_bodies(&carol, &room_id).await, ["my secret", "alice speaks"]);

    let erase = json!({"erase": true});
    admin.client.post(&format!("/_synapse/admin/v1/deactivate/{}", bob.user_id), &erase).await.expect(200);
    // ...and only its pruned form once he is (as Synapse); alice, joined when he sent it,
    // still sees it, and other senders' messages are untouched.
    assert_eq!(message_bodies(&carol, &room_id).await, ["", "alice speaks"]);
    assert_eq!(message_bodies(&alice, &room_id).await, ["my secret", "alice speaks"]);
    let messages =
        carol.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50")).await;
    let pruned = messages.expect(200)["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "m.room.message" && event["sender"] == bob.user_id.as_str())
        .cloned()
        .expect("bob's message is still listed");
    assert_eq!(pruned["content"], json!({}), "{pruned}");
    // A deactivation without erase prunes nothing.
    let dave = server.register("dave").await;
    join(&dave, &room_id).await;
    send_text(&dave, &room_id, "t3", "dave was here").await;
    admin
        .client
        .post(&format!("/_synapse/admin/v1/deactivate/{}", dave.user_id), &json!({}))
        .await
        .expect(200);
    let erin = server.register("erin").await;
    join(&erin, &room_id).await;
    assert_eq!(message_bodies(&erin, &room_id).await, ["", "alice speaks", "dave was here"]);
    server.stop().await;
}

#[tokio::test]
async fn whois_username_available_and_server_version() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // Alice's device has been seen (her registration and this request).
    alice.client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    let whois = admin.client.get(&format!("/_synapse/admin/v1/whois/{}", alice.user_id)).await;
    let body = whois.expect(200);
    assert_eq!(body["user_id"], alice.user_id.as_str());
    let sessions = &body["devices"][&alice.device_id]["sessions"];
    assert!(sessions.is_array(), "{body}");
    // Users may ask about themselves, not about others.
    alice.client.get(&format!("/_synapse/admin/v1/whois/{}", alice.user_id)).await.expect(200);
    bob.client
        .get(&format!("/_synapse/admin/v1/whois/{}", alice.user_id))
        .await
        .expect_error(403, "M_FORBIDDEN");

    let available = |name: &str| format!("/_synapse/admin/v1/username_available?username={name}");
    assert_eq!(admin.client.get(&available("newcomer")).await.expect(200), &json!({"available": true}));
    admin.client.get(&available("alice")).await.expect_error(400, "M_USER_IN_USE");
    admin.client.get(&available("Not%20Valid")).await.expect_error(400, "M_INVALID_USERNAME");
    alice.client.get(&available("newcomer")).await.expect_error(403, "M_FORBIDDEN");

    let version = server.client().get("/_synapse/admin/v1/server_version").await;
    assert!(version.expect(200)["server_version"].is_string());
    server.stop().await;
}

async fn password_login(
    server: &TestServer,
    user_id: &str,
    password: &str,
) -> myelin_test_support::TestResponse {
    server
        .client()
        .post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": password}),
        )
        .await
}

#[tokio::test]
async fn admins_create_and_modify_users_with_put() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let bot_id = format!("@provisioner-bot:{}", server.server_name);
    let path = format!("/_synapse/admin/v2/users/{bot_id}");

    // Created: 201 with the details; the password logs in; the display name is set.
    let created = admin
        .client
        .put(&path, &json!({"password": "bot-secret-1", "displayname": "Provisioning bot", "user_type": "bot", "admin": false}))
        .await;
    let body = created.expect(201);
    assert_eq!(body["name"], bot_id.as_str());
    assert_eq!(body["displayname"], "Provisioning bot");
    assert_eq!(body["user_type"], "bot");
    assert_eq!(body["admin"], false);
    let login = password_login(&server, &bot_id, "bot-secret-1").await;
    let bot_token = login.expect(200)["access_token"].as_str().unwrap().to_owned();
    let bot = server.client().with_token(&bot_token);
    bot.get("/_matrix/client/v3/account/whoami").await.expect(200);

    // Modified: 200; the profile changes where clients read it; a new password logs the bot's
    // devices out unless told otherwise.
    let changed = admin.client.put(&path, &json!({"displayname": "Renamed bot", "admin": true})).await;
    assert_eq!(changed.expect(200)["displayname"], "Renamed bot");
    assert_eq!(changed.expect(200)["admin"], true);
    let profile = server.client().get(&format!("/_matrix/client/v3/profile/{bot_id}/displayname")).await;
    assert_eq!(profile.expect(200)["displayname"], "Renamed bot");
    admin.client.put(&path, &json!({"password": "bot-secret-2", "logout_devices": false})).await.expect(200);
    bot.get("/_matrix/client/v3/account/whoami").await.expect(200);
    admin.client.put(&path, &json!({"password": "bot-secret-3"})).await.expect(200);
    bot.get("/_matrix/client/v3/account/whoami").await.expect_error(401, "M_UNKNOWN_TOKEN");
    password_login(&server, &bot_id, "bot-secret-2").await.expect_error(403, "M_FORBIDDEN");
    password_login(&server, &bot_id, "bot-secret-3").await.expect(200);

    // Deactivated through PUT, then active again with a new password.
    let gone = admin.client.put(&path, &json!({"deactivated": true})).await;
    assert_eq!(gone.expect(200)["deactivated"], true);
    password_login(&server, &bot_id, "bot-secret-3").await.expect_error(403, "M_FORBIDDEN");
    let back = admin.client.put(&path, &json!({"deactivated": false, "password": "bot-secret-4"})).await;
    assert_eq!(back.expect(200)["deactivated"], false);
    password_login(&server, &bot_id, "bot-secret-4").await.expect(200);

    // Bad input, and nothing for non-admins.
    for body in [
        json!({"admin": "yes"}),
        json!({"deactivated": 1}),
        json!({"logout_devices": "no"}),
        json!({"password": 12345}),
        json!({"user_type": "robot"}),
        json!({"deactivated": true, "locked": true}),
        json!({"threepids": "me@example.org"}),
    ] {
        admin.client.put(&path, &body).await.expect_error(400, "M_BAD_JSON");
    }
    admin
        .client
        .put(&path, &json!({"threepids": [{"medium": "email", "address": "bot@example.org"}]}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    admin
        .client
        .put("/_synapse/admin/v2/users/@someone:elsewhere.example", &json!({"password": "x"}))
        .await
        .expect_error(400, "M_BAD_JSON");
    admin
        .client
        .put(&format!("/_synapse/admin/v2/users/@Not%20Valid:{}", server.server_name), &json!({}))
        .await
        .expect_error(400, "M_INVALID_USERNAME");
    let plain = server.register("plain").await;
    plain.client.put(&path, &json!({"admin": true})).await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn admins_list_rename_and_delete_a_users_devices_and_read_pushers() {
    // The pusher's gateway is on loopback.
    let server = TestServer::start_with(json!({"ip_range_whitelist": ["127.0.0.1"]})).await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let second = password_login(&server, &alice.user_id, &alice.password).await;
    let second_device = second.expect(200)["device_id"].as_str().unwrap().to_owned();
    let devices_path = format!("/_synapse/admin/v2/users/{}/devices", alice.user_id);

    let listed = admin.client.get(&devices_path).await;
    let body = listed.expect(200);
    assert_eq!(body["total"], 2, "{body}");
    let ids: Vec<&str> =
        body["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&alice.device_id.as_str()) && ids.contains(&second_device.as_str()), "{body}");
    assert_eq!(body["devices"][0]["user_id"], alice.user_id.as_str());

    // Her pusher, as the admin API shows it.
    let pusher = json!({"kind": "http", "app_id": "org.example.app", "app_display_name": "Example",
        "device_display_name": "Phone", "pushkey": "key-1", "lang": "en",
        "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify", "format": "event_id_only"}});
    alice.client.post("/_matrix/client/v3/pushers/set", &pusher).await.expect(200);
    let pushers = admin.client.get(&format!("/_synapse/admin/v1/users/{}/pushers", alice.user_id)).await;
    let body = pushers.expect(200);
    assert_eq!(body["total"], 1, "{body}");
    assert_eq!(body["pushers"][0]["pushkey"], "key-1");
    assert_eq!(body["pushers"][0]["app_display_name"], "Example");
    assert_eq!(body["pushers"][0]["data"]["url"], "http://127.0.0.1:9/_matrix/push/v1/notify");

    let one = format!("{devices_path}/{}", alice.device_id);
    admin.client.put(&one, &json!({"display_name": "Alice's laptop"})).await.expect(200);
    assert_eq!(admin.client.get(&one).await.expect(200)["display_name"], "Alice's laptop");
    let mine = alice.client.get(&format!("/_matrix/client/v3/devices/{}", alice.device_id)).await;
    assert_eq!(mine.expect(200)["display_name"], "Alice's laptop");
    admin.client.get(&format!("{devices_path}/NOSUCHDEVICE")).await.expect_error(404, "M_NOT_FOUND");

    // Deleting logs the device out; unknown IDs in a batch are ignored.
    admin
        .client
        .post(
            &format!("/_synapse/admin/v2/users/{}/delete_devices", alice.user_id),
            &json!({"devices": [second_device, "NOSUCHDEVICE"]}),
        )
        .await
        .expect(200);
    admin.client.delete(&one).await.expect(200);
    alice.client.get("/_matrix/client/v3/account/whoami").await.expect_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(admin.client.get(&devices_path).await.expect(200)["total"], 0);

    // Unknown users; not an admin.
    let unknown = format!("@nobody:{}", server.server_name);
    admin
        .client
        .get(&format!("/_synapse/admin/v2/users/{unknown}/devices"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .get(&format!("/_synapse/admin/v1/users/{unknown}/pushers"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    let bob = server.register("bob").await;
    bob.client.get(&devices_path).await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

/// Every route of this slice for `user_id`, with a body that would be accepted.
fn user_routes(user_id: &str) -> Vec<(&'static str, String, Value)> {
    vec![
        (
            "POST",
            format!("/_synapse/admin/v1/reset_password/{user_id}"),
            json!({"new_password": "New-password-1"}),
        ),
        ("POST", format!("/_synapse/admin/v1/users/{user_id}/login"), json!({})),
        ("GET", format!("/_synapse/admin/v1/users/{user_id}/memberships"), Value::Null),
        ("GET", format!("/_synapse/admin/v1/users/{user_id}/accountdata"), Value::Null),
        ("POST", format!("/_synapse/admin/v1/users/{user_id}/shadow_ban"), json!({})),
        ("DELETE", format!("/_synapse/admin/v1/users/{user_id}/shadow_ban"), Value::Null),
        ("PUT", format!("/_synapse/admin/v1/suspend/{user_id}"), json!({"suspend": false})),
        ("GET", format!("/_synapse/admin/v1/experimental_features/{user_id}"), Value::Null),
        (
            "PUT",
            format!("/_synapse/admin/v1/experimental_features/{user_id}"),
            json!({"features": {"msc3575": true}}),
        ),
        ("POST", format!("/_synapse/admin/v1/user/{user_id}/redact"), json!({"rooms": []})),
    ]
}

async fn call(user: &TestUser, method: &str, path: &str, body: &Value) -> myelin_test_support::TestResponse {
    match method {
        "GET" => user.client.get(path).await,
        "DELETE" => user.client.delete(path).await,
        "PUT" => user.client.put(path, body).await,
        _ => user.client.post(path, body).await,
    }
}

#[tokio::test]
async fn new_user_routes_refuse_non_admins_unknown_users_and_malformed_ids() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let unknown = format!("@nobody:{}", server.server_name);
    for (method, path, body) in user_routes(&admin.user_id) {
        call(&alice, method, &path, &body).await.expect_error(403, "M_FORBIDDEN");
    }
    for (method, path, body) in user_routes(&unknown) {
        if path.ends_with("/redact") {
            continue; // Synapse starts a redaction of nothing for an unknown user.
        }
        call(&admin, method, &path, &body).await.expect_error(404, "M_NOT_FOUND");
    }
    for (method, path, body) in user_routes("not-a-user-id") {
        call(&admin, method, &path, &body).await.expect_error(400, "M_INVALID_PARAM");
    }
    for (method, path, body) in [
        ("GET", "/_synapse/admin/v1/user/redact_status/abc".to_owned(), Value::Null),
        ("GET", "/_synapse/admin/v1/user_reports".to_owned(), Value::Null),
        ("DELETE", "/_synapse/admin/v1/user_reports/1".to_owned(), Value::Null),
        ("DELETE", "/_synapse/admin/v1/event_reports/1".to_owned(), Value::Null),
    ] {
        call(&alice, method, &path, &body).await.expect_error(403, "M_FORBIDDEN");
    }
    server.stop().await;
}

#[tokio::test]
async fn admins_reset_passwords_under_the_policy_and_log_devices_out() {
    let server = TestServer::start_with(
        json!({"password_config": {"policy": {"enabled": true, "minimum_length": 10}}}),
    )
    .await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let path = format!("/_synapse/admin/v1/reset_password/{}", alice.user_id);

    admin.client.post(&path, &json!({"new_password": "short"})).await.expect_error(400, "M_WEAK_PASSWORD");
    admin.client.post(&path, &json!({})).await.expect_error(400, "M_MISSING_PARAM");
    admin.client.post(&path, &json!({"new_password": 12})).await.expect_error(400, "M_BAD_JSON");
    admin
        .client
        .post(&path, &json!({"new_password": "long-enough-1", "logout_devices": "no"}))
        .await
        .expect_error(400, "M_BAD_JSON");
    // Nothing changed so far.
    password_login(&server, &alice.user_id, &alice.password).await.expect(200);

    // Without logging out: her token still works, only the new password logs in.
    let kept =
        admin.client.post(&path, &json!({"new_password": "long-enough-1", "logout_devices": false})).await;
    assert_eq!(kept.expect(200), &json!({}));
    alice.client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    password_login(&server, &alice.user_id, &alice.password).await.expect_error(403, "M_FORBIDDEN");
    password_login(&server, &alice.user_id, "long-enough-1").await.expect(200);

    // By default every device is logged out.
    admin.client.post(&path, &json!({"new_password": "long-enough-2"})).await.expect(200);
    alice.client.get("/_matrix/client/v3/account/whoami").await.expect_error(401, "M_UNKNOWN_TOKEN");
    let devices = admin.client.get(&format!("/_synapse/admin/v2/users/{}/devices", alice.user_id)).await;
    assert_eq!(devices.expect(200)["total"], 0);
    password_login(&server, &alice.user_id, "long-enough-1").await.expect_error(403, "M_FORBIDDEN");
    password_login(&server, &alice.user_id, "long-enough-2").await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn a_login_as_user_token_acts_as_the_user_on_no_device() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let path = format!("/_synapse/admin/v1/users/{}/login", alice.user_id);

    let answer = admin.client.post(&path, &json!({})).await;
    let body = answer.expect(200);
    assert_eq!(body.as_object().unwrap().len(), 1, "only the token: {body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let puppet = server.client().with_token(&token);
    let whoami = puppet.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(whoami.expect(200)["user_id"], alice.user_id.as_str());
    assert!(whoami.expect(200).get("device_id").is_none(), "no device: {}", whoami.json);
    // It acts as her: a room it creates is hers.
    let created = puppet.post("/_matrix/client/v3/createRoom", &json!({})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    let joined = admin.client.get(&format!("/_synapse/admin/v1/users/{}/joined_rooms", alice.user_id)).await;
    assert_eq!(joined.expect(200)["joined_rooms"], json!([room_id]));
    // Her own device list does not show it.
    let devices = alice.client.get("/_matrix/client/v3/devices").await;
    let devices = devices.expect(200)["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["device_id"], alice.device_id.as_str());

    // A token valid until a moment already past is refused.
    let expired = admin.client.post(&path, &json!({"valid_until_ms": 1})).await;
    let expired = expired.expect(200)["access_token"].as_str().unwrap().to_owned();
    server
        .client()
        .with_token(&expired)
        .get("/_matrix/client/v3/account/whoami")
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    admin.client.post(&path, &json!({"valid_until_ms": "soon"})).await.expect_error(400, "M_INVALID_PARAM");
    // Not as oneself.
    admin
        .client
        .post(&format!("/_synapse/admin/v1/users/{}/login", admin.user_id), &json!({}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn admins_read_a_users_memberships_and_account_data() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let joined = create_room(&alice, json!({})).await;
    let invited = create_room(&bob, json!({"invite": [alice.user_id]})).await;
    let memberships =
        admin.client.get(&format!("/_synapse/admin/v1/users/{}/memberships", alice.user_id)).await;
    let mut expected = serde_json::Map::new();
    expected.insert(joined.clone(), json!("join"));
    expected.insert(invited.clone(), json!("invite"));
    assert_eq!(memberships.expect(200), &json!({"memberships": expected}));

    alice
        .client
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/org.example.settings", alice.user_id),
            &json!({"theme": "dark"}),
        )
        .await
        .expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/user/{}/rooms/{joined}/tags/u.work", alice.user_id),
            &json!({"order": 0.5}),
        )
        .await
        .expect(200);
    let data = admin.client.get(&format!("/_synapse/admin/v1/users/{}/accountdata", alice.user_id)).await;
    let body = data.expect(200);
    assert_eq!(body["account_data"]["global"]["org.example.settings"], json!({"theme": "dark"}), "{body}");
    assert_eq!(
        body["account_data"]["rooms"][&joined]["m.tag"],
        json!({"tags": {"u.work": {"order": 0.5}}}),
        "{body}"
    );
    server.stop().await;
}

/// The bodies of the messages `user` reads in a room, oldest first.
async fn message_bodies(user: &TestUser, room_id: &str) -> Vec<String> {
    let messages =
        user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50")).await;
    let mut bodies: Vec<String> = messages.expect(200)["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| event["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect();
    bodies.reverse();
    bodies
}

#[tokio::test]
async fn a_shadow_banned_users_messages_invites_and_rooms_reach_nobody() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = create_room(&bob, json!({"preset": "public_chat"})).await;
    join(&alice, &room_id).await;
    let ban = format!("/_synapse/admin/v1/users/{}/shadow_ban", alice.user_id);
    assert_eq!(admin.client.post(&ban, &json!({})).await.expect(200), &json!({}));
    let details = admin.client.get(&format!("/_synapse/admin/v2/users/{}", alice.user_id)).await;
    assert_eq!(details.expect(200)["shadow_banned"], true);

    // Her message looks sent: an event ID she cannot tell from a real one.
    let fake = send_text(&alice, &room_id, "t1", "spam").await;
    assert!(fake.starts_with('$') && fake.len() > 40, "{fake}");
    assert!(message_bodies(&bob, &room_id).await.is_empty(), "bob sees nothing");
    bob.client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{fake}"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    let state = alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/"), &json!({"topic": "spam"}))
        .await;
    assert!(state.expect(200)["event_id"].is_string());
    let topic = bob.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/")).await;
    assert_eq!(topic.status, 404, "no topic was set: {}", topic.json);

    // Her invite looks sent; carol is invited nowhere. A room she creates has no invitees.
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room_id}/invite"), &json!({"user_id": carol.user_id}))
        .await
        .expect(200);
    let created =
        alice.client.post("/_matrix/client/v3/createRoom", &json!({"invite": [carol.user_id]})).await;
    assert!(created.expect(200)["room_id"].is_string());
    let carols = admin.client.get(&format!("/_synapse/admin/v1/users/{}/memberships", carol.user_id)).await;
    assert_eq!(carols.expect(200), &json!({"memberships": {}}));
    // Her new display name stays out of the room; her typing is accepted and shown to nobody.
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            &json!({"displayname": "Spammer"}),
        )
        .await
        .expect(200);
    let member = bob
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{}", alice.user_id))
        .await;
    assert_ne!(member.expect(200)["displayname"], "Spammer");
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/typing/{}", alice.user_id),
            &json!({"typing": true, "timeout": 30000}),
        )
        .await
        .expect(200);
    let sync = bob.client.get("/_matrix/client/v3/sync?timeout=0").await;
    let ephemeral = &sync.expect(200)["rooms"]["join"][&room_id]["ephemeral"]["events"];
    let typing: Vec<&Value> = ephemeral
        .as_array()
        .map(|events| events.iter().filter(|e| e["type"] == "m.typing").collect())
        .unwrap_or_default();
    assert!(
        typing.iter().all(|e| e["content"]["user_ids"].as_array().is_none_or(|ids| ids.is_empty())),
        "nobody sees her typing: {ephemeral}"
    );

    // Lifted: her messages arrive again.
    assert_eq!(admin.client.delete(&ban).await.expect(200), &json!({}));
    send_text(&alice, &room_id, "t2", "hello").await;
    assert_eq!(message_bodies(&bob, &room_id).await, vec!["hello".to_owned()]);
    admin
        .client
        .post("/_synapse/admin/v1/users/@someone:elsewhere.example/shadow_ban", &json!({}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn a_suspended_user_cannot_send_join_or_invite_until_unsuspended() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&bob, json!({"preset": "public_chat"})).await;
    let other_room = create_room(&bob, json!({"preset": "public_chat"})).await;
    join(&alice, &room_id).await;
    let own = send_text(&alice, &room_id, "before", "before").await;
    let path = format!("/_synapse/admin/v1/suspend/{}", alice.user_id);

    let suspended = admin.client.put(&path, &json!({"suspend": true})).await;
    let mut expected = serde_json::Map::new();
    expected.insert(format!("user_{}_suspended", alice.user_id), json!(true));
    assert_eq!(suspended.expect(200), &Value::Object(expected));
    let details = admin.client.get(&format!("/_synapse/admin/v2/users/{}", alice.user_id)).await;
    assert_eq!(details.expect(200)["suspended"], true);

    let send = alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"),
            &json!({"msgtype": "m.text", "body": "x"}),
        )
        .await;
    send.expect_error(403, "M_USER_SUSPENDED");
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{other_room}/join"), &json!({}))
        .await
        .expect_error(403, "M_USER_SUSPENDED");
    let carol = server.register("carol").await;
    alice
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room_id}/invite"), &json!({"user_id": carol.user_id}))
        .await
        .expect_error(403, "M_USER_SUSPENDED");
    alice
        .client
        .post("/_matrix/client/v3/createRoom", &json!({}))
        .await
        .expect_error(403, "M_USER_SUSPENDED");
    // She may still redact her own events, but not others'.
    let bobs = send_text(&bob, &room_id, "bob1", "bob's").await;
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/redact/{bobs}/r1"), &json!({}))
        .await
        .expect_error(403, "M_USER_SUSPENDED");
    alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/redact/{own}/r2"), &json!({}))
        .await
        .expect(200);
    // Nor change her profile (any field); she may leave.
    let displayname = format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id);
    alice.client.put(&displayname, &json!({"displayname": "A"})).await.expect_error(403, "M_USER_SUSPENDED");
    let tz = format!("/_matrix/client/v3/profile/{}/m.tz", alice.user_id);
    alice.client.put(&tz, &json!({"m.tz": "Europe/Paris"})).await.expect_error(403, "M_USER_SUSPENDED");
    alice.client.delete(&displayname).await.expect_error(403, "M_USER_SUSPENDED");
    alice.client.post(&format!("/_matrix/client/v3/rooms/{room_id}/leave"), &json!({})).await.expect(200);

    admin.client.put(&path, &json!({"suspend": "yes"})).await.expect_error(400, "M_BAD_JSON");
    admin.client.put(&path, &json!({})).await.expect_error(400, "M_BAD_JSON");
    admin.client.put(&path, &json!({"suspend": false})).await.expect(200);
    alice.client.put(&displayname, &json!({"displayname": "A"})).await.expect(200);
    join(&alice, &room_id).await;
    send_text(&alice, &room_id, "after", "after").await;
    join(&alice, &other_room).await;
    server.stop().await;
}

#[tokio::test]
async fn admins_turn_experimental_features_on_and_off_per_user() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let path = format!("/_synapse/admin/v1/experimental_features/{}", alice.user_id);
    let features = admin.client.get(&path).await;
    assert_eq!(
        features.expect(200),
        &json!({"features": {"msc3881": false, "msc3575": false, "msc4222": false}})
    );
    admin.client.put(&path, &json!({"features": {"msc3575": true, "msc4222": true}})).await.expect(200);
    admin.client.put(&path, &json!({"features": {"msc4222": false}})).await.expect(200);
    let features = admin.client.get(&path).await;
    assert_eq!(
        features.expect(200),
        &json!({"features": {"msc3881": false, "msc3575": true, "msc4222": false}})
    );
    // Unknown features change nothing; no features, or the wrong types, are refused.
    admin
        .client
        .put(&path, &json!({"features": {"msc3881": true, "msc9999": true}}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    assert_eq!(admin.client.get(&path).await.expect(200)["features"]["msc3881"], false);
    admin.client.put(&path, &json!({})).await.expect_error(400, "M_INVALID_PARAM");
    admin.client.put(&path, &json!({"features": {"msc3881": "on"}})).await.expect_error(400, "M_BAD_JSON");
    admin.client.put(&path, &json!({"features": ["msc3881"]})).await.expect_error(400, "M_BAD_JSON");
    server.stop().await;
}

/// Polls a redaction's status until it is no longer scheduled or active.
async fn finished_redaction(admin: &TestUser, redact_id: &str) -> Value {
    let path = format!("/_synapse/admin/v1/user/redact_status/{redact_id}");
    for _ in 0..500 {
        let status = admin.client.get(&path).await.expect(200).clone();
        if status["status"] != "scheduled" && status["status"] != "active" {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the redaction {redact_id} did not finish");
}

#[tokio::test]
async fn admins_redact_a_users_events_in_the_background() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;
    send_text(&bob, &room_id, "b1", "first").await;
    send_text(&bob, &room_id, "b2", "second").await;
    send_text(&alice, &room_id, "a1", "alice's").await;

    let started = admin
        .client
        .post(
            &format!("/_synapse/admin/v1/user/{}/redact", bob.user_id),
            &json!({"rooms": [], "reason": "spam"}),
        )
        .await;
    let redact_id = started.expect(200)["redact_id"].as_str().unwrap().to_owned();
    let status = finished_redaction(&admin, &redact_id).await;
    assert_eq!(status, json!({"status": "complete", "failed_redactions": {}}));
    // Bob's messages are redacted (no body left); Alice's stays.
    assert_eq!(
        message_bodies(&alice, &room_id).await,
        vec!["".to_owned(), "".to_owned(), "alice's".to_owned()]
    );

    let redact = format!("/_synapse/admin/v1/user/{}/redact", bob.user_id);
    admin.client.post(&redact, &json!({"rooms": [], "limit": 0})).await.expect_error(400, "M_INVALID_PARAM");
    admin.client.post(&redact, &json!({"rooms": ["not a room"]})).await.expect_error(400, "M_INVALID_PARAM");
    admin.client.post(&redact, &json!({})).await.expect_error(400, "M_BAD_JSON");
    admin.client.post(&redact, &json!({"rooms": [], "limit": "all"})).await.expect_error(400, "M_BAD_JSON");
    admin
        .client
        .get("/_synapse/admin/v1/user/redact_status/no-such-task")
        .await
        .expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn admins_list_and_delete_user_and_event_reports() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for reason in ["spam", "abuse"] {
        bob.client
            .post(&format!("/_matrix/client/v3/users/{}/report", alice.user_id), &json!({"reason": reason}))
            .await
            .expect(200);
    }
    let listed = admin.client.get("/_synapse/admin/v1/user_reports").await;
    let body = listed.expect(200);
    assert_eq!(body["total"], 2, "{body}");
    let newest = &body["user_reports"][0];
    assert_eq!(newest["reason"], "abuse", "newest first: {body}");
    assert_eq!(newest["target_user_id"], alice.user_id.as_str());
    assert_eq!(newest["user_id"], bob.user_id.as_str());
    assert!(newest["id"].is_i64() && newest["received_ts"].is_i64(), "{newest}");
    let page = admin.client.get("/_synapse/admin/v1/user_reports?limit=1&dir=f").await;
    assert_eq!(page.expect(200)["user_reports"][0]["reason"], "spam");
    assert_eq!(page.expect(200)["next_token"], 1);
    let filtered =
        admin.client.get(&format!("/_synapse/admin/v1/user_reports?target_user_id={}", bob.user_id)).await;
    assert_eq!(filtered.expect(200)["total"], 0);
    for query in ["?from=-1", "?limit=-1", "?dir=x"] {
        admin
            .client
            .get(&format!("/_synapse/admin/v1/user_reports{query}"))
            .await
            .expect_error(400, "M_INVALID_PARAM");
    }
    let id = newest["id"].as_i64().unwrap();
    admin.client.delete(&format!("/_synapse/admin/v1/user_reports/{id}")).await.expect(200);
    admin
        .client
        .delete(&format!("/_synapse/admin/v1/user_reports/{id}"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    assert_eq!(admin.client.get("/_synapse/admin/v1/user_reports").await.expect(200)["total"], 1);

    // Event reports are deleted the same way (and a user report's ID is not an event report's).
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;
    let event_id = send_text(&alice, &room_id, "a1", "rude").await;
    bob.client
        .post(&format!("/_matrix/client/v3/rooms/{room_id}/report/{event_id}"), &json!({"reason": "rude"}))
        .await
        .expect(200);
    let reports = admin.client.get("/_synapse/admin/v1/event_reports").await;
    let report_id = reports.expect(200)["event_reports"][0]["id"].as_i64().unwrap();
    let user_report = admin.client.get("/_synapse/admin/v1/user_reports").await.expect(200)["user_reports"]
        [0]["id"]
        .as_i64()
        .unwrap();
    admin
        .client
        .delete(&format!("/_synapse/admin/v1/event_reports/{user_report}"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    assert_eq!(
        admin.client.delete(&format!("/_synapse/admin/v1/event_reports/{report_id}")).await.expect(200),
        &json!({})
    );
    admin
        .client
        .get(&format!("/_synapse/admin/v1/event_reports/{report_id}"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    admin.client.delete("/_synapse/admin/v1/event_reports/abc").await.expect_error(400, "M_INVALID_PARAM");
    admin.client.delete("/_synapse/admin/v1/event_reports/-3").await.expect_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn a_refused_put_of_a_user_changes_nothing() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let path = format!("/_synapse/admin/v2/users/{}", alice.user_id);
    admin.client.put(&path, &json!({"displayname": "Alice"})).await.expect(200);

    // The display name is fine, the avatar is not: neither is set.
    admin
        .client
        .put(
            &path,
            &json!({"displayname": "Mallory", "avatar_url": "https://example.org/a.png", "admin": true}),
        )
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let details = admin.client.get(&path).await;
    assert_eq!(details.expect(200)["displayname"], "Alice");
    assert_eq!(details.expect(200)["admin"], false);
    // Demoting oneself is refused after the other changes were checked: none is made.
    let own = format!("/_synapse/admin/v2/users/{}", admin.user_id);
    admin
        .client
        .put(&own, &json!({"displayname": "Renamed admin", "password": "Another-pass-1", "admin": false}))
        .await
        .expect_error(400, "M_BAD_JSON");
    let details = admin.client.get(&own).await;
    assert_eq!(details.expect(200)["displayname"], "admin");
    assert_eq!(details.expect(200)["admin"], true);
    password_login(&server, &admin.user_id, &admin.password).await.expect(200);
    admin.client.get("/_matrix/client/v3/account/whoami").await.expect(200);
    server.stop().await;
}
