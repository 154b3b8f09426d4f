//! Requests built to exhaust the server: search terms with thousands of words, nonces asked
//! for in bulk, filters with thousands of entries, password guessing through
//! user-interactive auth. Each gets a clear answer (a 400, or the limiter's 429), never a 500.

use myelin_test_support::{TestServer, TestUser, shared_secret_mac};
use serde_json::{Value, json};

use crate::rooms::{create_room, send_text, urlencode};

async fn search(user: &TestUser, term: &str) -> myelin_test_support::TestResponse {
    let body = json!({"search_categories": {"room_events": {"search_term": term}}});
    user.client.post("/_matrix/client/v3/search", &body).await
}

#[tokio::test]
async fn search_terms_with_thousands_of_words_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    let wanted = send_text(&alice, &room, "1", "martians are coming").await;
    send_text(&alice, &room, "2", "martians and word7 are here").await;

    // 20,000 excluded words: refused before any query is built.
    let hostile: String = std::iter::once("martians".to_owned())
        .chain((0..20_000).map(|i| format!("-word{i}")))
        .collect::<Vec<_>>()
        .join(" ");
    let response = search(&alice, &hostile).await;
    response.expect_error(400, "M_INVALID_PARAM");
    assert!(response.json["error"].as_str().unwrap().contains("too many words"), "{}", response.json);

    // Up to the bound, excluded words work (one `NOT` over all of them).
    let allowed: String = std::iter::once("martians".to_owned())
        .chain((0..99).map(|i| format!("-word{i}")))
        .collect::<Vec<_>>()
        .join(" ");
    let found = search(&alice, &allowed).await.expect(200)["search_categories"]["room_events"].clone();
    let ids: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![wanted.as_str()]);
    server.stop().await;
}

#[tokio::test]
async fn nonces_live_in_memory_and_are_single_use() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let mut nonces = Vec::new();
    for _ in 0..20 {
        nonces.push(
            client.get("/_synapse/admin/v1/register").await.expect(200)["nonce"].as_str().unwrap().to_owned(),
        );
    }
    let body = |nonce: &str, username: &str| {
        let mac = shared_secret_mac(
            myelin_test_support::REGISTRATION_SHARED_SECRET,
            nonce,
            username,
            "pw",
            false,
            None,
        );
        json!({"nonce": nonce, "username": username, "password": "pw", "admin": false, "mac": mac})
    };
    // A nonce works once.
    client.post("/_synapse/admin/v1/register", &body(&nonces[0], "first")).await.expect(200);
    let again = client.post("/_synapse/admin/v1/register", &body(&nonces[0], "again")).await;
    again.expect_error(400, "M_UNKNOWN");
    assert_eq!(again.json["error"], "unrecognised nonce");
    // Nonces are not written anywhere: a restart forgets them.
    server.restart().await;
    let client = server.client();
    let forgotten = client.post("/_synapse/admin/v1/register", &body(&nonces[1], "second")).await;
    forgotten.expect_error(400, "M_UNKNOWN");
    assert_eq!(forgotten.json["error"], "unrecognised nonce");
    server.stop().await;
}

#[tokio::test]
async fn nonces_are_refused_when_shared_secret_registration_is_off() {
    let server = TestServer::start_with(json!({"registration_shared_secret": null})).await;
    let response = server.client().get("/_synapse/admin/v1/register").await;
    response.expect_error(400, "M_UNKNOWN");
    assert_eq!(response.json["error"], "Shared secret registration is not enabled");
    server.stop().await;
}

fn many_senders(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("@u{i}:x")).collect()
}

#[tokio::test]
async fn filters_with_too_many_entries_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&alice, json!({})).await;
    send_text(&alice, &room, "1", "martians are coming").await;
    let invalid = |response: myelin_test_support::TestResponse| {
        response.expect_error(400, "M_INVALID_PARAM");
        assert!(response.json["error"].as_str().unwrap().contains("at most 1000"), "{}", response.json);
    };

    // Uploaded, in any of its lists.
    let upload = format!("/_matrix/client/v3/user/{}/filter", urlencode(&alice.user_id));
    let senders = many_senders(20_000);
    for filter in [
        json!({"room": {"timeline": {"senders": senders}}}),
        json!({"room": {"state": {"not_senders": senders}}}),
        json!({"room": {"rooms": senders}}),
        json!({"presence": {"types": senders}}),
    ] {
        invalid(alice.client.post(&upload, &filter).await);
    }
    // Inline: in a search body, and in query strings (1,001 entries, one too many).
    let body = json!({"search_categories": {"room_events": {"search_term": "martians", "filter": {"senders": senders}}}});
    invalid(alice.client.post("/_matrix/client/v3/search", &body).await);
    let filter = json!({"room": {"timeline": {"not_senders": many_senders(1_001)}}}).to_string();
    invalid(alice.client.get(&format!("/_matrix/client/v3/sync?filter={}", urlencode(&filter))).await);
    let filter = json!({"not_senders": many_senders(1_001)}).to_string();
    let messages = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&filter={}", urlencode(&filter));
    invalid(alice.client.get(&messages).await);

    // 1,000 entries are fine, even as type patterns (which SQL combines with `OR`).
    let types: Vec<String> =
        (0..999).map(|i| format!("t{i}.*")).chain(["m.room.message".to_owned()]).collect();
    let filter = json!({"types": types, "senders": many_senders(999).into_iter().chain([alice.user_id.clone()]).collect::<Vec<_>>()});
    let messages =
        format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&filter={}", urlencode(&filter.to_string()));
    let page = alice.client.get(&messages).await.expect(200).clone();
    let bodies: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, vec!["martians are coming"]);
    alice.client.post(&upload, &json!({"room": {"timeline": filter}})).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn password_guessing_through_uia_is_limited_like_login() {
    let server = TestServer::start_with(
        json!({"rc_login": {"failed_attempts": {"per_second": 0.001, "burst_count": 2}}}),
    )
    .await;
    let user = server.register("frank").await;
    let delete = |password: &str| -> Value {
        json!({"devices": ["NOSUCHDEVICE"], "auth": {"type": "m.login.password", "password": password, "identifier": {"type": "m.id.user", "user": "frank"}}})
    };
    // Two wrong passwords: the stage fails (401 with the challenge).
    for _ in 0..2 {
        let response = user.client.post("/_matrix/client/v3/delete_devices", &delete("wrong")).await;
        assert_eq!(response.status, 401, "{}", response.json);
        assert_eq!(response.json["errcode"], "M_FORBIDDEN");
    }
    // Then the limiter answers, for any password, as `/login` does.
    for password in ["wrong", user.password.as_str()] {
        let response = user.client.post("/_matrix/client/v3/delete_devices", &delete(password)).await;
        response.expect_error(429, "M_LIMIT_EXCEEDED");
        assert!(response.json["retry_after_ms"].as_u64().unwrap() > 0);
    }
    let change = json!({"new_password": "new-pw-123", "auth": {"type": "m.login.password", "password": user.password, "identifier": {"type": "m.id.user", "user": "frank"}}});
    user.client
        .post("/_matrix/client/v3/account/password", &change)
        .await
        .expect_error(429, "M_LIMIT_EXCEEDED");
    let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"}, "password": user.password});
    server.client().post("/_matrix/client/v3/login", &login).await.expect_error(429, "M_LIMIT_EXCEEDED");
    // Another account is not limited.
    let other = server.register("gina").await;
    let mine = json!({"devices": ["NOSUCHDEVICE"], "auth": {"type": "m.login.password", "password": other.password, "identifier": {"type": "m.id.user", "user": "gina"}}});
    other.client.post("/_matrix/client/v3/delete_devices", &mine).await.expect(200);
    server.stop().await;
}
