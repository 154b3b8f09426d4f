//! `POST /user_directory/search`: who may be found (shared rooms, public and world-readable
//! rooms, or everyone with `search_all_users`), matching and ranking, limits, the
//! configuration switches, rate limits and bad input.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::create_room;

async fn find(user: &TestUser, body: Value) -> Value {
    user.client.post("/_matrix/client/v3/user_directory/search", &body).await.expect(200).clone()
}

/// The user IDs found for a term.
async fn found(user: &TestUser, term: &str) -> Vec<String> {
    let response = find(user, json!({"search_term": term})).await;
    response["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn set_profile(user: &TestUser, field: &str, value: &str) {
    user.client
        .put(&format!("/_matrix/client/v3/profile/{}/{field}", user.user_id), &json!({ field: value }))
        .await
        .expect(200);
}

async fn join(user: &TestUser, room_id: &str) {
    user.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
}

#[tokio::test]
async fn directory_shows_users_in_shared_and_public_rooms_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let erin = server.register("erin").await;
    let frank = server.register("frank").await;
    let gina = server.register("gina").await;
    set_profile(&bob, "displayname", "Bobby Tables").await;
    set_profile(&bob, "avatar_url", "mxc://test.local/bobby").await;
    // bob shares a private room with alice.
    let shared = create_room(&alice, json!({"preset": "private_chat", "invite": [bob.user_id]})).await;
    join(&bob, &shared).await;
    // carol is alone in a public room; gina alone in an invite-only but world-readable one.
    let public = create_room(&carol, json!({"preset": "public_chat"})).await;
    create_room(
        &gina,
        json!({"preset": "private_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    // dave and erin share a private room; frank is in no room.
    let private = create_room(&dave, json!({"preset": "private_chat", "invite": [erin.user_id]})).await;
    join(&erin, &private).await;
    let _ = &frank;

    let response = find(&alice, json!({"search_term": "bobby"})).await;
    assert_eq!(
        response,
        json!({"results": [{"user_id": bob.user_id, "display_name": "Bobby Tables", "avatar_url": "mxc://test.local/bobby"}], "limited": false})
    );
    for term in ["BOB", "tab", "bobby tab", "@bob:test.local", "bob:test.local", "  Bobby,  "] {
        assert_eq!(found(&alice, term).await, vec![bob.user_id.clone()], "{term}");
    }
    for term in ["obby", "ables", "bobby jones"] {
        assert!(found(&alice, term).await.is_empty(), "{term}: words match from their start, all of them");
    }
    assert_eq!(found(&alice, "carol").await, vec![carol.user_id.clone()], "public room member");
    assert_eq!(found(&alice, "gina").await, vec![gina.user_id.clone()], "world-readable room member");
    assert!(found(&alice, "dave").await.is_empty(), "private room of others");
    assert!(found(&alice, "erin").await.is_empty());
    assert!(found(&alice, "frank").await.is_empty(), "in no room");
    assert!(found(&alice, "alice").await.is_empty(), "the requester is not listed");
    assert_eq!(found(&dave, "erin").await, vec![erin.user_id.clone()]);
    assert!(found(&dave, "bob").await.is_empty());
    // When carol's room stops being public, she is no longer found by strangers.
    carol
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{public}/state/m.room.join_rules"),
            &json!({"join_rule": "invite"}),
        )
        .await
        .expect(200);
    assert!(found(&alice, "carol").await.is_empty());
    // Leaving the shared room hides bob again.
    bob.client.post(&format!("/_matrix/client/v3/rooms/{shared}/leave"), &json!({})).await.expect(200);
    assert!(found(&alice, "bob").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn names_match_case_insensitively_after_normalisation() {
    let server = TestServer::start_with(json!({"user_directory": {"search_all_users": true}})).await;
    let alice = server.register("alice").await;
    let emilie = server.register("emilie").await;
    set_profile(&emilie, "displayname", "Émilie Zoë").await;
    let wide = server.register("wide").await;
    set_profile(&wide, "displayname", "ＦＵＬＬ Width").await;
    for term in ["émi", "ÉMILIE", "zoë", "Émilie Z"] {
        assert_eq!(found(&alice, term).await, vec![emilie.user_id.clone()], "{term}");
    }
    assert!(found(&alice, "zoe").await.is_empty(), "accents are not folded (as Synapse)");
    assert_eq!(found(&alice, "full").await, vec![wide.user_id.clone()], "NFKC");
    assert_eq!(found(&alice, "ｆｕｌ").await, vec![wide.user_id.clone()]);
    server.stop().await;
}

#[tokio::test]
async fn search_all_users_finds_everyone_but_deactivated_and_locked_users() {
    let server = TestServer::start_with(json!({"user_directory": {"search_all_users": true}})).await;
    let alice = server.register("alice").await;
    let frank = server.register("frank").await;
    let locked = server.register("locky").await;
    assert_eq!(found(&alice, "frank").await, vec![frank.user_id.clone()], "no shared room needed");
    assert_eq!(found(&alice, "locky").await, vec![locked.user_id.clone()]);
    server
        .services()
        .store()
        .db()
        .execute("UPDATE users SET locked = TRUE WHERE user_id = $1", vec![locked.user_id.as_str().into()])
        .await
        .unwrap();
    assert!(found(&alice, "locky").await.is_empty(), "locked users are hidden");
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": frank.user_id}, "password": frank.password});
    frank.client.post("/_matrix/client/v3/account/deactivate", &json!({"auth": auth})).await.expect(200);
    assert!(found(&alice, "frank").await.is_empty(), "deactivated users are hidden");
    server.stop().await;

    let server = TestServer::start_with(json!({"user_directory": {"show_locked_users": true}})).await;
    let alice = server.register("alice").await;
    let locked = server.register("locky").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&locked, &room).await;
    join(&bob, &room).await;
    server
        .services()
        .store()
        .db()
        .execute("UPDATE users SET locked = TRUE WHERE user_id = $1", vec![locked.user_id.as_str().into()])
        .await
        .unwrap();
    assert_eq!(found(&alice, "locky").await, vec![locked.user_id.clone()], "show_locked_users");
    assert!(found(&alice, "frank").await.is_empty(), "without search_all_users, only room members");
    // Deactivation hides a user who shared a room.
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob.user_id}, "password": bob.password});
    assert_eq!(found(&alice, "bob").await, vec![bob.user_id.clone()]);
    bob.client.post("/_matrix/client/v3/account/deactivate", &json!({"auth": auth})).await.expect(200);
    assert!(found(&alice, "bob").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn results_are_ranked_and_limited() {
    let server = TestServer::start_with(json!({"user_directory": {"search_all_users": true}})).await;
    let searcher = server.register("searcher").await;
    let al = server.register("al").await;
    let alice = server.register("alice").await;
    let alfred = server.register("alfred").await;
    let bert = server.register("bert").await;
    set_profile(&bert, "displayname", "Albert").await;
    let ids = |v: &Value| -> Vec<String> {
        v["results"].as_array().unwrap().iter().map(|r| r["user_id"].as_str().unwrap().to_owned()).collect()
    };
    // The exact localpart first; then prefixes of localparts above prefixes of display names.
    let all = find(&searcher, json!({"search_term": "al"})).await;
    assert_eq!(
        ids(&all),
        vec![al.user_id.clone(), alfred.user_id.clone(), alice.user_id.clone(), bert.user_id.clone()]
    );
    assert_eq!(all["limited"], false);
    // An avatar counts.
    set_profile(&bert, "avatar_url", "mxc://test.local/bert").await;
    let all = find(&searcher, json!({"search_term": "al"})).await;
    assert_eq!(ids(&all)[..2], [al.user_id.clone(), bert.user_id.clone()]);
    let two = find(&searcher, json!({"search_term": "al", "limit": 2})).await;
    assert_eq!(ids(&two), vec![al.user_id.clone(), bert.user_id.clone()]);
    assert_eq!(two["limited"], true);
    let four = find(&searcher, json!({"search_term": "al", "limit": 4})).await;
    assert_eq!(four["limited"], false);
    let none = find(&searcher, json!({"search_term": "al", "limit": 0})).await;
    assert_eq!(none, json!({"results": [], "limited": true}));
    assert_eq!(find(&searcher, json!({"search_term": "al", "limit": -5})).await, none);
    // At most 50 per search.
    for i in 0..52 {
        server.register(&format!("many{i:02}")).await;
    }
    let capped = find(&searcher, json!({"search_term": "many", "limit": 500})).await;
    assert_eq!(capped["results"].as_array().unwrap().len(), 50);
    assert_eq!(capped["limited"], true);
    assert_eq!(
        find(&searcher, json!({"search_term": "many"})).await["results"].as_array().unwrap().len(),
        10
    );
    // Terms without words find nobody.
    assert_eq!(
        find(&searcher, json!({"search_term": " @:- "})).await,
        json!({"results": [], "limited": false})
    );
    server.stop().await;
}

#[tokio::test]
async fn disabled_directory_finds_nobody() {
    let server = TestServer::start_with(json!({"user_directory": {"enabled": false}})).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    assert_eq!(find(&alice, json!({"search_term": "bob"})).await, json!({"results": [], "limited": false}));
    server.stop().await;
}

#[tokio::test]
async fn directory_searches_are_rate_limited() {
    let server =
        TestServer::start_with(json!({"rc_user_directory": {"per_second": 0.001, "burst_count": 2}})).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for _ in 0..2 {
        find(&alice, json!({"search_term": "x"})).await;
    }
    let response =
        alice.client.post("/_matrix/client/v3/user_directory/search", &json!({"search_term": "x"})).await;
    response.expect_error(429, "M_LIMIT_EXCEEDED");
    assert!(response.json["retry_after_ms"].as_u64().unwrap() > 0);
    // Per user.
    find(&bob, json!({"search_term": "x"})).await;
    server.stop().await;
}

#[tokio::test]
async fn directory_rejects_bad_input() {
    let server = TestServer::start_with(json!({"allow_guest_access": true})).await;
    let alice = server.register("alice").await;
    let post = |body: Value| {
        let client = alice.client.clone();
        async move { client.post("/_matrix/client/v3/user_directory/search", &body).await }
    };
    post(json!({})).await.expect_error(400, "M_BAD_JSON");
    post(json!({"search_term": 5})).await.expect_error(400, "M_BAD_JSON");
    post(json!({"search_term": "x", "limit": "ten"})).await.expect_error(400, "M_BAD_JSON");
    let response = alice
        .client
        .request_raw(
            reqwest::Method::POST,
            "/_matrix/client/v3/user_directory/search",
            Some(b"[]".to_vec()),
            &[],
        )
        .await;
    response.expect_error(400, "M_NOT_JSON");
    server
        .client()
        .post("/_matrix/client/v3/user_directory/search", &json!({"search_term": "x"}))
        .await
        .expect_error(401, "M_MISSING_TOKEN");
    let guest =
        server.client().post("/_matrix/client/v3/register?kind=guest", &json!({})).await.expect(200).clone();
    server
        .client()
        .with_token(guest["access_token"].as_str().unwrap())
        .post("/_matrix/client/v3/user_directory/search", &json!({"search_term": "x"}))
        .await
        .expect_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    server.stop().await;
}
