//! The access log of the `myelin` binary: route templates instead of paths that may carry
//! secrets, no query strings, hostile paths cut short, the configured request id header.

use crate::process::{MYELIN, free_port, terminate, wait_healthy};

#[tokio::test]
async fn the_access_log_shows_route_templates_not_secret_path_segments() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("homeserver.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: example.test\nlisteners:\n  - port: {port}\n    type: http\n    bind_addresses: ['127.0.0.1']\n    request_id_header: X-Request-ID\n    resources: [{{names: [client]}}]\ndatabase:\n  name: sqlite3\n  args:\n    database: {}\n",
            dir.path().join("homeserver.db").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(MYELIN)
        .args(["-c", config.to_str().unwrap()])
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("myelin starts");
    wait_healthy(port, &mut child, &log).await;

    let http = myelin_test_support::http_client();
    let base = format!("http://127.0.0.1:{port}");
    // A registration token in the path (refused for want of an access token, but logged).
    let response = http
        .get(format!("{base}/_synapse/admin/v1/registration_tokens/SeCrEtToKeN4242"))
        .header("X-Request-ID", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    // A query string may carry an access token.
    let response =
        http.get(format!("{base}/_matrix/client/versions?access_token=QuErYsEcReT")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // No route matches: the path as sent, cut short when long.
    let response = http.get(format!("{base}/_matrix/no/such/thing-UnMaTcHeD")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let long = format!("/nowhere/{}", "p".repeat(1000));
    let response = http.get(format!("{base}{long}")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    let (status, _) = terminate(&mut child);
    assert!(status.success(), "{status}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("SeCrEtToKeN4242"), "the token is not logged:\n{logged}");
    let token_line = logged
        .lines()
        .find(|line| line.contains("path=/_synapse/admin/v1/registration_tokens/{token}"))
        .unwrap_or_else(|| panic!("the route template is logged:\n{logged}"));
    assert!(token_line.contains("id=trace-me-123"), "the configured request id header: {token_line}");
    assert!(token_line.contains("method=GET") && token_line.contains("client=127.0.0.1"), "{token_line}");
    assert!(token_line.contains(" 401 "), "{token_line}");
    assert!(!logged.contains("QuErYsEcReT"), "no query strings:\n{logged}");
    assert!(logged.contains("path=/_matrix/client/versions"), "{logged}");
    assert!(logged.contains("path=/_matrix/no/such/thing-UnMaTcHeD"), "unmatched paths as sent:\n{logged}");
    assert!(logged.contains(&format!("/nowhere/{}...", "p".repeat(256 - "/nowhere/".len()))), "{logged}");
    assert!(!logged.contains(&"p".repeat(300)), "long paths are cut short");
}
