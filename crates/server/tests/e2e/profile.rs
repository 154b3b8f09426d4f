//! Profiles: display names, avatars, extended fields, and the configuration that limits them.

use myelin_test_support::TestServer;
use serde_json::json;

#[tokio::test]
async fn profiles_start_with_the_localpart_and_can_be_changed() {
    let server = TestServer::start().await;
    let user = server.register("nina").await;
    let base = format!("/_matrix/client/v3/profile/{}", user.user_id);
    assert_eq!(server.client().get(&base).await.expect(200).clone(), json!({"displayname": "nina"}));

    user.client.put(&format!("{base}/displayname"), &json!({"displayname": "Nina N."})).await.expect(200);
    user.client
        .put(&format!("{base}/avatar_url"), &json!({"avatar_url": "mxc://test.local/abc"}))
        .await
        .expect(200);
    user.client.put(&format!("{base}/m.tz"), &json!({"m.tz": "Europe/Paris"})).await.expect(200);
    user.client
        .put(&format!("{base}/org.example.pronouns"), &json!({"org.example.pronouns": ["she", "her"]}))
        .await
        .expect(200);
    let profile = server.client().get(&base).await.expect(200).clone();
    assert_eq!(profile["displayname"], "Nina N.");
    assert_eq!(profile["avatar_url"], "mxc://test.local/abc");
    assert_eq!(profile["m.tz"], "Europe/Paris");
    assert_eq!(profile["org.example.pronouns"], json!(["she", "her"]));
    assert_eq!(
        server.client().get(&format!("{base}/displayname")).await.expect(200).clone(),
        json!({"displayname": "Nina N."})
    );

    user.client.delete(&format!("{base}/org.example.pronouns")).await.expect(200);
    server.client().get(&format!("{base}/org.example.pronouns")).await.expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn profile_changes_are_validated() {
    let server = TestServer::start().await;
    let user = server.register("omar").await;
    let other = server.register("pat").await;
    let base = format!("/_matrix/client/v3/profile/{}", user.user_id);
    other
        .client
        .put(&format!("{base}/displayname"), &json!({"displayname": "hijacked"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    user.client.put(&format!("{base}/displayname"), &json!({})).await.expect_error(400, "M_MISSING_PARAM");
    user.client
        .put(&format!("{base}/displayname"), &json!({"displayname": 5}))
        .await
        .expect_error(400, "M_BAD_JSON");
    user.client
        .put(&format!("{base}/displayname"), &json!({"displayname": "x".repeat(300)}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    user.client
        .put(&format!("{base}/avatar_url"), &json!({"avatar_url": "https://evil.example/x.png"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    user.client
        .put(&format!("{base}/NotNamespaced"), &json!({"NotNamespaced": 1}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    let long_key = format!("org.{}", "k".repeat(260));
    user.client
        .put(&format!("{base}/{long_key}"), &json!({long_key.clone(): 1}))
        .await
        .expect_error(400, "M_KEY_TOO_LARGE");
    let big = "y".repeat(40 * 1024);
    user.client.put(&format!("{base}/org.example.a"), &json!({"org.example.a": big})).await.expect(200);
    user.client
        .put(&format!("{base}/org.example.b"), &json!({"org.example.b": big}))
        .await
        .expect_error(400, "M_PROFILE_TOO_LARGE");
    server
        .client()
        .get("/_matrix/client/v3/profile/@nobody:test.local")
        .await
        .expect_error(404, "M_NOT_FOUND");
    server
        .client()
        .get("/_matrix/client/v3/profile/not-a-user-id")
        .await
        .expect_error(400, "M_INVALID_PARAM");
    server
        .client()
        .put(&format!("{base}/displayname"), &json!({"displayname": "anon"}))
        .await
        .expect_error(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn profile_configuration_is_honoured() {
    let server = TestServer::start_with(json!({
        "require_auth_for_profile_requests": true,
        "enable_set_displayname": false,
        "enable_set_avatar_url": false,
    }))
    .await;
    let user = server.register("quinn").await;
    let base = format!("/_matrix/client/v3/profile/{}", user.user_id);
    server.client().get(&base).await.expect_error(401, "M_MISSING_TOKEN");
    user.client.get(&base).await.expect(200);
    user.client
        .put(&format!("{base}/displayname"), &json!({"displayname": "Q"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    user.client
        .put(&format!("{base}/avatar_url"), &json!({"avatar_url": "mxc://a/b"}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Admins may still change them.
    let admin = server.register_admin("root").await;
    admin
        .client
        .put(&format!("{base}/displayname"), &json!({"displayname": "Set by admin"}))
        .await
        .expect(200);
    assert_eq!(
        user.client.get(&format!("{base}/displayname")).await.expect(200)["displayname"],
        "Set by admin"
    );
    server.stop().await;
}
