//! `encryption_enabled_by_default_for_room_type` (Synapse's option: `all` / `invite` / `off`)
//! applied by createRoom: which presets get an `m.room.encryption` state event.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::create_room;

const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// The room's `m.room.encryption` content, or `None` when it has none (404 M_NOT_FOUND).
async fn encryption(user: &TestUser, room_id: &str) -> Option<Value> {
    let response =
        user.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.encryption/")).await;
    if response.status == 404 {
        response.expect_error(404, "M_NOT_FOUND");
        return None;
    }
    Some(response.expect(200).clone())
}

/// How many `m.room.encryption` events the room's timeline holds.
async fn encryption_events(user: &TestUser, room_id: &str) -> usize {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=f&limit=50");
    let messages = user.client.get(&path).await.expect(200).clone();
    messages["chunk"].as_array().unwrap().iter().filter(|event| event["type"] == "m.room.encryption").count()
}

/// Whether a room created with `body` is encrypted, checking the event's content when it is.
async fn encrypted(user: &TestUser, body: Value) -> bool {
    let room_id = create_room(user, body).await;
    match encryption(user, &room_id).await {
        Some(content) => {
            assert_eq!(content, json!({ "algorithm": MEGOLM }));
            assert_eq!(encryption_events(user, &room_id).await, 1);
            true
        }
        None => {
            assert_eq!(encryption_events(user, &room_id).await, 0);
            false
        }
    }
}

/// Which of the creation requests (private_chat, trusted_private_chat, public_chat, no preset,
/// no preset with public visibility) get encrypted rooms on a server with `setting`.
async fn encrypted_rooms(setting: Option<Value>) -> (TestServer, TestUser, [bool; 5]) {
    let overrides = match setting {
        Some(value) => json!({ "encryption_enabled_by_default_for_room_type": value }),
        None => json!({}),
    };
    let server = TestServer::start_with(overrides).await;
    let alice = server.register("alice").await;
    let result = [
        encrypted(&alice, json!({ "preset": "private_chat" })).await,
        encrypted(&alice, json!({ "preset": "trusted_private_chat" })).await,
        encrypted(&alice, json!({ "preset": "public_chat" })).await,
        encrypted(&alice, json!({})).await,
        encrypted(&alice, json!({ "visibility": "public" })).await,
    ];
    (server, alice, result)
}

/// An `m.room.encryption` in the request's `initial_state` is kept as given, and no second one
/// is added.
async fn initial_state_encryption_is_kept(user: &TestUser, preset: &str) {
    let content = json!({ "algorithm": MEGOLM, "rotation_period_ms": 3_600_000, "rotation_period_msgs": 50 });
    let room_id = create_room(
        user,
        json!({
            "preset": preset,
            "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": content }],
        }),
    )
    .await;
    assert_eq!(encryption(user, &room_id).await, Some(content));
    assert_eq!(encryption_events(user, &room_id).await, 1);
}

#[tokio::test]
async fn encryption_by_default_off_encrypts_no_room() {
    for setting in [None, Some(json!("off")), Some(json!(false))] {
        let (_server, alice, result) = encrypted_rooms(setting.clone()).await;
        assert_eq!(result, [false; 5], "setting {setting:?}");
        initial_state_encryption_is_kept(&alice, "public_chat").await;
    }
}

#[tokio::test]
async fn encryption_by_default_invite_encrypts_private_rooms() {
    let (_server, alice, result) = encrypted_rooms(Some(json!("invite"))).await;
    assert_eq!(result, [true, true, false, true, false]);
    initial_state_encryption_is_kept(&alice, "private_chat").await;
}

#[tokio::test]
async fn encryption_by_default_all_encrypts_every_room() {
    let (_server, alice, result) = encrypted_rooms(Some(json!("all"))).await;
    assert_eq!(result, [true; 5]);
    initial_state_encryption_is_kept(&alice, "public_chat").await;
}

/// As Synapse: when the preset's `default_power_level_content_override` would not let the
/// creator send `m.room.encryption`, an encrypted room is refused up front (403 M_FORBIDDEN),
/// and nothing is created.
#[tokio::test]
async fn an_override_that_forbids_encryption_refuses_encrypted_rooms() {
    let server = TestServer::start_with(json!({
        "encryption_enabled_by_default_for_room_type": "invite",
        "default_power_level_content_override": {
            "private_chat": { "events": { "m.room.encryption": 150, "m.room.power_levels": 100 } },
        },
    }))
    .await;
    let alice = server.register("alice").await;
    let response =
        alice.client.post("/_matrix/client/v3/createRoom", &json!({ "preset": "private_chat" })).await;
    response.expect_error(403, "M_FORBIDDEN");
    let joined = alice.client.get("/_matrix/client/v3/joined_rooms").await.expect(200).clone();
    assert_eq!(joined["joined_rooms"], json!([]));
    // Not encrypted by default (public_chat under `invite`), but asked for in initial_state.
    let initial = json!({
        "preset": "private_chat",
        "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": MEGOLM } }],
    });
    alice.client.post("/_matrix/client/v3/createRoom", &initial).await.expect_error(403, "M_FORBIDDEN");
    // Other presets are not affected.
    assert!(!encrypted(&alice, json!({ "preset": "public_chat" })).await);
}
