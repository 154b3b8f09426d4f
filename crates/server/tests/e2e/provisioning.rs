//! The provisioning flow of an organisation's chat service, end to end (room version 11):
//! a bot registered with the shared secret builds a Space with four restricted, encrypted
//! rooms; a user joins through the Space, is promoted to 100 and demoted back to 0.

use myelin_test_support::TestServer;
use serde_json::{Value, json};

use crate::rooms::create_room;

fn path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room_id}/{rest}")
}

#[tokio::test]
async fn provisioning_flow() {
    let server = TestServer::start().await;
    let bot = server.register_admin("provisioner").await;
    let server_name = &server.server_name;

    let space = create_room(
        &bot,
        json!({
            "name": "Acme",
            "topic": "Everything Acme",
            "preset": "private_chat",
            "room_alias_name": "acme",
            "room_version": "11",
            "creation_content": {"type": "m.space"},
            "power_level_content_override": {"users": {bot.user_id.clone(): 200}},
            "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}],
        }),
    )
    .await;
    let levels = bot.client.get(&path(&space, "state/m.room.power_levels")).await.expect(200).clone();
    assert_eq!(levels["users"][&bot.user_id], 200);

    let mut rooms = Vec::new();
    for name in ["engineering", "sales", "support", "random"] {
        let room = create_room(
            &bot,
            json!({
                "name": name,
                "topic": format!("The {name} room"),
                "preset": "private_chat",
                "room_version": "11",
                "room_alias_name": format!("{name}-general"),
                "power_level_content_override": {"users": {bot.user_id.clone(): 200}},
                "initial_state": [
                    {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                    {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}},
                    {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}},
                    {"type": "m.space.parent", "state_key": space, "content": {"via": [server_name], "canonical": true}},
                ],
            }),
        )
        .await;
        bot.client
            .put(
                &path(&space, &format!("state/m.space.child/{room}")),
                &json!({"via": [server_name], "suggested": true}),
            )
            .await
            .expect(200);
        rooms.push((name, room));
    }

    // Each room is what was asked for.
    for (name, room) in &rooms {
        let alias = bot.client.get(&path(room, "state/m.room.canonical_alias")).await.expect(200).clone();
        assert_eq!(alias["alias"], format!("#{name}-general:{server_name}"));
        let encryption = bot.client.get(&path(room, "state/m.room.encryption")).await.expect(200).clone();
        assert_eq!(encryption["algorithm"], "m.megolm.v1.aes-sha2");
        let join_rules = bot.client.get(&path(room, "state/m.room.join_rules")).await.expect(200).clone();
        assert_eq!(join_rules["join_rule"], "restricted");
        assert_eq!(join_rules["allow"][0]["room_id"], space.as_str());
        let topic = bot.client.get(&path(room, "state/m.room.topic")).await.expect(200).clone();
        assert_eq!(topic["topic"], format!("The {name} room"));
        let parent =
            bot.client.get(&path(room, &format!("state/m.space.parent/{space}"))).await.expect(200).clone();
        assert_eq!(parent["canonical"], true);
        let create = bot.client.get(&path(room, "state/m.room.create")).await.expect(200).clone();
        assert_eq!(create["room_version"], "11");
    }
    let children = bot.client.get(&path(&space, "state")).await.expect(200).clone();
    let child_count = children.as_array().unwrap().iter().filter(|e| e["type"] == "m.space.child").count();
    assert_eq!(child_count, 4);

    // A user cannot join a room before joining the Space; after, they can.
    let user = server.register("employee").await;
    let (_, engineering) = &rooms[0];
    let join = |room: String| {
        let client = user.client.clone();
        async move { client.post(&format!("/_matrix/client/v3/join/{room}"), &json!({})).await }
    };
    join(engineering.clone()).await.expect_error(403, "M_FORBIDDEN");
    bot.client.post(&path(&space, "invite"), &json!({"user_id": user.user_id})).await.expect(200);
    join(space.clone()).await.expect(200);
    join(engineering.clone()).await.expect(200);
    let joined = user.client.get("/_matrix/client/v3/joined_rooms").await.expect(200).clone();
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 2);

    // The bot promotes them to 100, then demotes them back to 0.
    let mut levels =
        bot.client.get(&path(engineering, "state/m.room.power_levels")).await.expect(200).clone();
    levels["users"][&user.user_id] = json!(100);
    bot.client.put(&path(engineering, "state/m.room.power_levels"), &levels).await.expect(200);
    user.client.put(&path(engineering, "state/m.room.name"), &json!({"name": "Eng"})).await.expect(200);
    levels["users"][&user.user_id] = json!(0);
    bot.client.put(&path(engineering, "state/m.room.power_levels"), &levels).await.expect(200);
    let after: Value =
        bot.client.get(&path(engineering, "state/m.room.power_levels")).await.expect(200).clone();
    assert_eq!(after["users"][&user.user_id], 0);
    user.client
        .put(&path(engineering, "state/m.room.name"), &json!({"name": "Mine"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // A user at 100 cannot demote the bot at 200.
    let mut hostile = after.clone();
    hostile["users"][&user.user_id] = json!(100);
    bot.client.put(&path(engineering, "state/m.room.power_levels"), &hostile).await.expect(200);
    hostile["users"][&bot.user_id] = json!(0);
    user.client
        .put(&path(engineering, "state/m.room.power_levels"), &hostile)
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}
