//! The foundation: routing, errors, CORS, well-known, keys, health, metrics.

use std::collections::BTreeMap;

use myelin_test_support::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn versions_answer_json_with_cors_headers() {
    let server = TestServer::start().await;
    let response = server.client().get("/_matrix/client/versions").await;
    let body = response.expect(200);
    let versions = body["versions"].as_array().expect("versions is an array");
    assert!(versions.iter().all(Value::is_string));
    assert!(versions.contains(&json!("v1.19")));
    assert!(body["unstable_features"].is_object());
    assert_eq!(response.headers["access-control-allow-origin"], "*");
    assert!(response.headers["access-control-allow-methods"].to_str().unwrap().contains("PUT"));
    assert!(response.headers["access-control-allow-headers"].to_str().unwrap().contains("Authorization"));
    assert!(response.headers["content-type"].to_str().unwrap().starts_with("application/json"));
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_are_unrecognized() {
    let server = TestServer::start().await;
    let client = server.client();
    client.get("/_matrix/client/v3/no/such/endpoint").await.expect_error(404, "M_UNRECOGNIZED");
    client.get("/").await.expect_error(404, "M_UNRECOGNIZED");
    client.post("/_matrix/client/versions", &json!({})).await.expect_error(405, "M_UNRECOGNIZED");
    client.delete("/_matrix/key/v2/server").await.expect_error(405, "M_UNRECOGNIZED");
    // Unknown routes carry CORS headers too.
    let response = client.get("/_matrix/nothing").await;
    assert_eq!(response.headers["access-control-allow-origin"], "*");
    server.stop().await;
}

/// A huge body is refused without being read into memory: the request declares 1 GiB but sends
/// a few bytes, and the answer comes at once (a server waiting for the body, or reading it,
/// would not answer before the client gave up).
#[tokio::test]
async fn a_declared_huge_body_is_refused_before_it_arrives() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let addr = server.tcp_addr(0).unwrap();
    for (path, status, errcode) in [
        // A known route: the declared length alone is over the limit.
        ("/_matrix/client/v3/register", 413, "M_TOO_LARGE"),
        // An unknown route: no body is read at all; the route is unknown.
        ("/_matrix/client/v3/nothing", 404, "M_UNRECOGNIZED"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"a\": 1",
            1u64 << 30
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (got, body) = crate::http_limits::read_response(&mut stream).await;
        assert_eq!((got, body["errcode"].as_str()), (status, Some(errcode)), "{path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn options_requests_get_cors_preflight_answers() {
    let server = TestServer::start().await;
    let response = server
        .client()
        .request_raw(
            Method::OPTIONS,
            "/_matrix/client/v3/login",
            None,
            &[("origin", "https://app.element.io"), ("access-control-request-method", "POST")],
        )
        .await;
    // As Synapse: 204, no body.
    assert_eq!(response.status, 204, "{response:?}");
    assert!(response.body.is_empty(), "{response:?}");
    assert_eq!(response.headers["access-control-allow-origin"], "*");
    assert!(response.headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    server.stop().await;
}

#[tokio::test]
async fn server_keys_are_signed_with_the_published_key() {
    let server = TestServer::start().await;
    let response = server.client().get("/_matrix/key/v2/server").await;
    let document = response.expect(200).clone();
    assert_eq!(document["server_name"], server.server_name);
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(document["valid_until_ts"].as_u64().unwrap() > now_ms);
    assert!(document["old_verify_keys"].is_object());
    let verify_keys = document["verify_keys"].as_object().unwrap();
    assert_eq!(verify_keys.len(), 1);
    let (key_id, key) = verify_keys.iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"));

    // Verify with ruma's independent implementation, using only what the response publishes.
    let mut key_set = BTreeMap::new();
    key_set.insert(key_id.clone(), ruma::serde::Base64::parse(key["key"].as_str().unwrap()).unwrap());
    let mut key_map = BTreeMap::new();
    key_map.insert(server.server_name.clone(), key_set);
    let object: ruma::CanonicalJsonObject = serde_json::from_value(document.clone()).unwrap();
    ruma::signatures::verify_json(&key_map, &object).expect("the signature verifies");

    // A tampered document does not.
    let mut tampered = document.clone();
    tampered["valid_until_ts"] = json!(1);
    let object: ruma::CanonicalJsonObject = serde_json::from_value(tampered).unwrap();
    assert!(ruma::signatures::verify_json(&key_map, &object).is_err());

    // The key survives a restart (it is read from the signing key file).
    let mut server = server;
    server.restart().await;
    let again = server.client().get("/_matrix/key/v2/server").await;
    assert_eq!(again.expect(200)["verify_keys"], document["verify_keys"]);
    server.stop().await;
}

#[tokio::test]
async fn federation_version_names_the_server() {
    let server = TestServer::start().await;
    let body = server.client().get("/_matrix/federation/v1/version").await.expect(200).clone();
    assert_eq!(body["server"]["name"], "Myelin");
    assert!(body["server"]["version"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn well_known_follows_configuration() {
    let server = TestServer::start().await;
    server.client().get("/.well-known/matrix/client").await.expect_error(404, "M_NOT_FOUND");
    server.client().get("/.well-known/matrix/server").await.expect_error(404, "M_NOT_FOUND");
    server.stop().await;

    let server = TestServer::start_with(json!({
        "server_name": "example.org",
        "public_baseurl": "https://matrix.example.org",
        "serve_server_wellknown": true,
        "extra_well_known_client_content": {"org.example.custom": {"x": 1}, "m.homeserver": {"base_url": "ignored"}},
    }))
    .await;
    let client = server.client().get("/.well-known/matrix/client").await.expect(200).clone();
    assert_eq!(client["m.homeserver"]["base_url"], "https://matrix.example.org/");
    assert_eq!(client["org.example.custom"]["x"], 1);
    let federation = server.client().get("/.well-known/matrix/server").await.expect(200).clone();
    assert_eq!(federation, json!({"m.server": "example.org:443"}));
    server.stop().await;
}

#[tokio::test]
async fn health_and_metrics() {
    let server = TestServer::start().await;
    let health = server.client().get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, b"OK");
    server.client().get("/_matrix/client/versions").await.expect(200);
    server.client().get("/_matrix/client/versions").await.expect(200);
    let metrics = server.client().get("/_synapse/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("myelin_http_requests_total{")
                && l.contains("route=\"/_matrix/client/versions\"")
                && l.contains("code=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter for /versions in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{line}");
    assert!(text.contains("myelin_http_request_duration_seconds_bucket"));
    let rss_line = text.lines().find(|l| l.starts_with("process_resident_memory_bytes ")).expect("RSS gauge");
    let rss: f64 = rss_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(rss > 1_000_000.0, "{rss_line}");
    assert!(text.lines().any(|l| l.starts_with("process_cpu_seconds_total")));
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_not_served_without_enable_metrics() {
    let server = TestServer::start_with(json!({"enable_metrics": false})).await;
    server.client().get("/_synapse/metrics").await.expect_error(404, "M_UNRECOGNIZED");
    server.stop().await;
}
