//! The built-in policy modules of `modules`: the user restrictions module (who may create rooms
//! and invite) and the encryption filter (no encrypted rooms), on every path they guard.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::{create_room, urlencode};

fn restrictions(server_name_pattern: &str) -> Value {
    json!({"modules": [{
        "module": "synapse_user_restrictions.UserRestrictionsModule",
        "config": {
            "rules": [
                {"match": format!("@boss.*:{server_name_pattern}"), "allow": ["invite", "create_room"]},
                {"match": format!("@helper:{server_name_pattern}"), "allow": ["invite"]},
                {"match": format!("@mallory:{server_name_pattern}"), "deny": ["invite"]},
            ],
            "default_deny": ["create_room"],
        },
    }]})
}

async fn invite(user: &TestUser, room_id: &str, target: &str) -> myelin_test_support::TestResponse {
    let path = format!("/_matrix/client/v3/rooms/{}/invite", urlencode(room_id));
    user.client.post(&path, &json!({"user_id": target})).await
}

#[tokio::test]
async fn user_restrictions_decide_who_creates_rooms_and_invites() {
    let server = TestServer::start_with(restrictions(".*")).await;
    let boss = server.register("bossalice").await;
    let helper = server.register("helper").await;
    let mallory = server.register("mallory").await;
    let joe = server.register("joe").await;
    let admin = server.register_admin("admin").await;

    // create_room: the first rule that decides, then default_deny.
    let refused = joe.client.post("/_matrix/client/v3/createRoom", &json!({})).await;
    refused.expect_error(403, "M_FORBIDDEN");
    assert_eq!(refused.json["error"], "You are not permitted to create rooms");
    helper.client.post("/_matrix/client/v3/createRoom", &json!({})).await.expect_error(403, "M_FORBIDDEN");
    let joined = joe.client.get("/_matrix/client/v3/joined_rooms").await.expect(200)["joined_rooms"].clone();
    assert_eq!(joined, json!([]), "a refused createRoom leaves no room behind");
    // Server admins are exempt, as in Synapse.
    create_room(&admin, json!({})).await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = create_room(&boss, json!({"preset": "private_chat"})).await;

    // invite: allowed by a rule, denied by a rule, allowed when no rule decides.
    for user in [&helper, &mallory, &joe] {
        invite(&boss, &room, &user.user_id).await.expect(200);
        user.client
            .post(&format!("/_matrix/client/v3/join/{}", urlencode(&room)), &json!({}))
            .await
            .expect(200);
    }
    invite(&helper, &room, &admin.user_id).await.expect(200);
    let refused = invite(&mallory, &room, &carol.user_id).await;
    refused.expect_error(403, "M_FORBIDDEN");
    assert_eq!(refused.json["error"], "Invites have been disabled on this server");
    // The same rule on the state path: a member event with `invite`.
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", urlencode(&room), carol.user_id);
    mallory.client.put(&path, &json!({"membership": "invite"})).await.expect_error(403, "M_FORBIDDEN");
    boss.client.get(&path).await.expect_error(404, "M_NOT_FOUND");
    invite(&joe, &room, &dave.user_id).await.expect(200);

    // A room upgrade is a room creation: Synapse asks the module for admins too.
    let path = format!("/_matrix/client/v3/rooms/{}/upgrade", urlencode(&room));
    let power = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", urlencode(&room));
    let mut levels = boss.client.get(&power).await.expect(200).clone();
    levels["users"][joe.user_id.as_str()] = json!(100);
    boss.client.put(&power, &levels).await.expect(200);
    joe.client.post(&path, &json!({"new_version": "10"})).await.expect_error(403, "M_FORBIDDEN");
    boss.client.post(&path, &json!({"new_version": "10"})).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn the_server_notices_user_is_exempt_from_the_restrictions() {
    let mut config = restrictions(".*");
    config["modules"][0]["config"]["default_deny"] = json!(["create_room", "invite"]);
    config["block_non_admin_invites"] = json!(true);
    config["server_notices"] = json!({"system_mxid_localpart": "notices", "room_name": "Notices"});
    let server = TestServer::start_with(config).await;
    let joe = server.register("joe").await;
    let admin = server.register_admin("admin").await;
    let sent = admin
        .client
        .post(
            "/_synapse/admin/v1/send_server_notice",
            &json!({"user_id": joe.user_id, "content": {"msgtype": "m.text", "body": "hello"}}),
        )
        .await;
    sent.expect(200);
    let sync = joe.client.get("/_matrix/client/v3/sync").await.expect(200).clone();
    let invites = sync["rooms"]["invite"].as_object().map(|o| o.len()).unwrap_or(0);
    assert_eq!(invites, 1, "the notices room invite reaches joe: {sync}");
    server.stop().await;
}

fn encryption_filter() -> Value {
    json!({
        "encryption_enabled_by_default_for_room_type": "all",
        "modules": [{
            "module": "matrix_e2ee_filter.EncryptedRoomFilter",
            "config": {"deny_encryption_for_users_of": ["test.local"], "deny_encryption_for_rooms_of": ["test.local"]},
        }],
    })
}

#[tokio::test]
async fn the_encryption_filter_makes_rooms_unencrypted_and_refuses_enabling_encryption() {
    let server = TestServer::start_with(encryption_filter()).await;
    assert_eq!(server.server_name, "test.local", "the filter above names this server");
    let alice = server.register("alice").await;
    let encryption = json!({"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}});
    for version in ["10", "12"] {
        let room = create_room(&alice, json!({"room_version": version, "initial_state": [encryption]})).await;
        let state = format!("/_matrix/client/v3/rooms/{}/state/m.room.encryption/", urlencode(&room));
        alice.client.get(&state).await.expect_error(404, "M_NOT_FOUND");
        let power = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", urlencode(&room));
        let levels = alice.client.get(&power).await.expect(200).clone();
        assert_eq!(levels["events"]["m.room.encryption"], 150, "room v{version}: {levels}");
        // A creator of a v12 room has unbounded power; the filter refuses the event itself.
        let refused = alice.client.put(&state, &json!({"algorithm": "m.megolm.v1.aes-sha2"})).await;
        refused.expect_error(403, "M_FORBIDDEN");
        alice.client.get(&state).await.expect_error(404, "M_NOT_FOUND");
    }
    server.stop().await;
}

#[tokio::test]
async fn without_modules_encryption_by_default_still_applies() {
    let server = TestServer::start_with(json!({"encryption_enabled_by_default_for_room_type": "all"})).await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let state = format!("/_matrix/client/v3/rooms/{}/state/m.room.encryption/", urlencode(&room));
    let content = alice.client.get(&state).await.expect(200).clone();
    assert_eq!(content["algorithm"], "m.megolm.v1.aes-sha2");
    server.stop().await;
}
