//! The admin API's users: the list with its filters, ordering and pagination, one user's
//! details, the admin flag, deactivation, joined rooms, `whois`, `username_available` and the
//! server version; every admin route refused to non-admins.

use myelin_test_support::TestServer;
use serde_json::{Value, json};

use crate::relations::join;
use crate::rooms::create_room;

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

    // Filters: name matches the localpart or the display name; admins; order and direction.
    assert_eq!(names(list("?name=zed").await.expect(200)), vec![alice.user_id.as_str()]);
    assert_eq!(names(list("?name=bo").await.expect(200)), vec![bob.user_id.as_str()]);
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
    assert!(body["creation_ts"].is_i64(), "{body}");

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
