//! Listener kinds: TLS, UNIX sockets, a separate metrics listener.

use std::process::Command;

use myelin_test_support::TestServer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn tls_listeners_serve_https() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    // A throwaway CA and a certificate for 127.0.0.1 signed by it.
    let dir = certs.path();
    let ext = dir.join("leaf.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    let openssl = |args: Vec<String>| {
        let output =
            Command::new("openssl").args(&args).current_dir(dir).output().expect("openssl is installed");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    openssl(words("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=TestCA"));
    openssl(words("req -newkey rsa:2048 -nodes -keyout key.pem -out leaf.csr -subj /CN=localhost"));
    openssl(words(
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 1 -extfile leaf.ext",
    ));
    let ca = dir.join("ca.pem");
    let server = TestServer::start_with(json!({
        "tls_certificate_path": cert,
        "tls_private_key_path": key,
        "listeners": [{"port": 0, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": true, "resources": [{"names": ["client"]}]}],
    }))
    .await;
    let port = server.base_url.rsplit(':').next().unwrap().to_owned();
    let client = myelin_test_support::http_client_trusting(&std::fs::read(&ca).unwrap());
    let response =
        client.get(format!("https://127.0.0.1:{port}/_matrix/client/versions")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["versions"].is_array());
    // Plain HTTP on the TLS port gets no answer.
    assert!(
        myelin_test_support::http_client()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn unix_socket_listeners_serve_http() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("myelin.sock");
    let server = TestServer::start_with(json!({
        "listeners": [
            {"port": 0, "bind_addresses": ["127.0.0.1"], "type": "http", "resources": [{"names": ["client"]}]},
            {"path": socket, "mode": "660", "type": "http", "resources": [{"names": ["client"]}]},
        ],
    }))
    .await;
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o660);
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    stream
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"versions\""));
    server.stop().await;
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}

#[tokio::test]
async fn a_metrics_listener_serves_only_metrics() {
    let server = TestServer::start_with(json!({
        "enable_metrics": true,
        "listeners": [
            {"port": 0, "bind_addresses": ["127.0.0.1"], "type": "http", "resources": [{"names": ["client"]}]},
            {"port": 0, "bind_addresses": ["127.0.0.1"], "type": "metrics"},
        ],
    }))
    .await;
    server.client().get("/_matrix/client/versions").await.expect(200);
    let metrics_addr = server.tcp_addr(1).unwrap();
    let metrics = myelin_test_support::TestClient::new(&format!("http://{metrics_addr}"));
    let response = metrics.get("/_synapse/metrics").await;
    assert_eq!(response.status, 200);
    assert!(String::from_utf8_lossy(&response.body).contains("myelin_http_requests_total"));
    metrics.get("/_matrix/client/versions").await.expect_error(404, "M_UNRECOGNIZED");
    // The client listener does not serve metrics unless it names the resource.
    server.client().get("/_synapse/metrics").await.expect_error(404, "M_UNRECOGNIZED");
    server.stop().await;
}
