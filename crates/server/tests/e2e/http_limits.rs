//! What one client can hold on a listener: metric label sets bounded whatever the method and
//! path, header / body / idle timeouts, and the per-listener connection limit. Spoken over raw
//! TCP, since well-behaved HTTP clients cannot misbehave on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use myelin_test_support::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The generous upper bound for anything the server should do promptly.
const LONG: Duration = Duration::from_secs(30);

/// A server whose only listener has `limits` added to the test listener's settings.
async fn server_with_listener(limits: Value) -> TestServer {
    let mut listener = json!({
        "port": 0,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "resources": [{"names": ["client", "metrics"]}],
    });
    if let (Some(listener), Value::Object(limits)) = (listener.as_object_mut(), limits) {
        listener.extend(limits);
    }
    TestServer::start_with(json!({"listeners": [listener]})).await
}

/// Reads until the server closes the connection (a reset counts as closed), returning what it
/// sent first.
pub(crate) async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let read = tokio::time::timeout(LONG, stream.read(&mut chunk))
            .await
            .expect("the server closes the connection in time");
        match read {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Splits a raw response into its status and JSON body (empty when it has none).
pub(crate) fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status =
        text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("a response: {text:?}"));
    let body = find(raw, b"\r\n\r\n").map(|end| &raw[end + 4..]).unwrap_or_default();
    (status, serde_json::from_slice(body).unwrap_or(Value::Null))
}

/// Reads one response with a `Content-Length` body from a connection that stays open.
pub(crate) async fn read_response(stream: &mut TcpStream) -> (u16, Value) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(&received, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or_else(|| panic!("a Content-Length: {head}"));
            if received.len() >= end + 4 + length {
                return parse_response(&received[..end + 4 + length]);
            }
        }
        let n = tokio::time::timeout(LONG, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("the connection stays open");
        assert!(
            n > 0,
            "the server closed the connection mid-response: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..n]);
    }
}

const VERSIONS: &[u8] = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// The label sets of one metric family in the text exposition format.
fn label_sets(metrics: &str, family: &str) -> Vec<BTreeMap<String, String>> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.strip_prefix(family))
        .filter_map(|rest| rest.strip_prefix('{'))
        .map(parse_labels)
        .collect()
}

/// Parses `name="value",...}` (values escaped with backslashes) into a map.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || name.starts_with('}') {
            return labels;
        }
        assert_eq!(chars.next(), Some('"'), "a quoted value after {name}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_owned(), value);
        if chars.next() != Some(',') {
            return labels;
        }
    }
}

#[tokio::test]
async fn metric_labels_stay_bounded_whatever_the_method_and_path() {
    let server = TestServer::start().await;
    let addr = server.tcp_addr(0).unwrap();
    for i in 0..30 {
        let method = match i % 3 {
            0 => format!("M{i}{}", "X".repeat(200_000)),
            1 => format!("GARBAGE{i}"),
            _ => "GET".to_owned(),
        };
        let path = if i % 2 == 0 {
            format!("/nowhere/{i}/{}", "p".repeat(1000))
        } else {
            "/_matrix/client/versions".to_owned()
        };
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, body) = parse_response(&read_until_closed(&mut stream).await);
        match (method.as_str(), i % 2) {
            ("GET", 1) => assert_eq!(status, 200, "{body}"),
            (_, 0) => assert_eq!((status, &body["errcode"]), (404, &json!("M_UNRECOGNIZED"))),
            _ => assert_eq!((status, &body["errcode"]), (405, &json!("M_UNRECOGNIZED"))),
        }
    }

    let response = server.client().get("/_synapse/metrics").await;
    assert_eq!(response.status, 200);
    let metrics = String::from_utf8(response.body).unwrap();
    let requests = label_sets(&metrics, "myelin_http_requests_total");
    let durations = label_sets(&metrics, "myelin_http_request_duration_seconds_count");
    assert!(!requests.is_empty() && !durations.is_empty(), "{metrics}");
    let known = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "other"];
    let mut methods = BTreeSet::new();
    let mut routes = BTreeSet::new();
    for labels in requests.iter().chain(&durations) {
        methods.insert(labels["method"].clone());
        routes.insert(labels["route"].clone());
    }
    assert!(methods.iter().all(|m| known.contains(&m.as_str())), "{methods:?}");
    assert!(methods.contains("other"), "made-up methods count as `other`: {methods:?}");
    assert!(
        routes.iter().all(|r| r == "unmatched" || r.starts_with("/_matrix/") || r.starts_with("/_synapse/")),
        "routes are templates: {routes:?}"
    );
    // 30 requests of 20 distinct methods and 16 distinct paths fall into a handful of series:
    // GET / other on `unmatched` (404) and on `/versions` (200 / 405).
    assert!(requests.len() <= 4, "{requests:?}");
    assert!(durations.len() <= 4, "{durations:?}");
    assert!(metrics.lines().all(|line| line.len() < 1000), "no label carries a request's text");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_stalls_in_its_headers_is_closed() {
    let server = server_with_listener(json!({"header_read_timeout": 300, "idle_timeout": "1h"})).await;
    let addr = server.tcp_addr(0).unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: loc").await.unwrap();
    let received = read_until_closed(&mut stream).await;
    assert!(received.is_empty(), "closed without an answer: {:?}", String::from_utf8_lossy(&received));
    // Complete requests are still served, on new connections and kept-alive ones.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(VERSIONS).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    stream.write_all(VERSIONS).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408_and_the_connection_closed() {
    let server = server_with_listener(
        json!({"body_read_timeout": 300, "header_read_timeout": "1h", "idle_timeout": "1h"}),
    )
    .await;
    let addr = server.tcp_addr(0).unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /_matrix/client/v3/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\": ",
        )
        .await
        .unwrap();
    let (status, body) = parse_response(&read_until_closed(&mut stream).await);
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    assert!(body["error"].is_string());
    // A body that arrives in time is read as usual.
    server
        .client()
        .request_raw(reqwest::Method::POST, "/_matrix/client/v3/register", Some(b"{not json".to_vec()), &[])
        .await
        .expect_error(400, "M_NOT_JSON");
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = server_with_listener(json!({"idle_timeout": 300, "header_read_timeout": "1h"})).await;
    let addr = server.tcp_addr(0).unwrap();
    // A kept-alive HTTP/1 connection after its response.
    let mut kept_alive = TcpStream::connect(addr).await.unwrap();
    kept_alive.write_all(VERSIONS).await.unwrap();
    assert_eq!(read_response(&mut kept_alive).await.0, 200);
    assert!(read_until_closed(&mut kept_alive).await.is_empty());
    // A connection that never sends a byte (the server cannot even tell HTTP/1 from HTTP/2).
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(read_until_closed(&mut silent).await.is_empty());
    // An HTTP/2 connection (prior knowledge) that sends its preface and settings, then nothing.
    let mut http2 = TcpStream::connect(addr).await.unwrap();
    http2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let received = read_until_closed(&mut http2).await;
    // The server's frames end with a GOAWAY (type 7) before it closes.
    assert!(received.windows(4).any(|w| w[3] == 7 && w[..3] == [0, 0, 8]), "{received:?}");
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    let server = server_with_listener(
        json!({"max_connections": 2, "idle_timeout": "1h", "header_read_timeout": "1h"}),
    )
    .await;
    let addr = server.tcp_addr(0).unwrap();
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    for stream in [&mut first, &mut second] {
        stream.write_all(VERSIONS).await.unwrap();
        assert_eq!(read_response(stream).await.0, 200);
    }
    // The kernel completes the third connection, but the server does not take it up.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(VERSIONS).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await.is_err(),
        "the third connection is not served while two are open"
    );
    drop(first);
    assert_eq!(read_response(&mut third).await.0, 200, "served once a slot is free");
    drop(second);
    drop(third);
    server.client().get("/_matrix/client/versions").await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_it_ends() {
    let server = TestServer::start().await;
    let addr = server.tcp_addr(0).unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /_matrix/client/v3/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // One byte more than the JSON body limit (Synapse's 200 * 64 KiB), in chunks, without the
    // final chunk: a server that read bodies to their end before judging them would never
    // answer.
    let limit = 200 * 65536;
    let chunk = vec![b' '; 1 << 20];
    let mut sent = 0;
    while sent <= limit {
        let size = chunk.len().min(limit + 1 - sent);
        stream.write_all(format!("{size:x}\r\n").as_bytes()).await.unwrap();
        stream.write_all(&chunk[..size]).await.unwrap();
        sent += size;
        // Nothing after the byte over the limit, so that the server has read all it was sent.
        if sent <= limit {
            stream.write_all(b"\r\n").await.unwrap();
        }
    }
    let (status, body) = parse_response(&read_until_closed(&mut stream).await);
    assert_eq!((status, &body["errcode"]), (413, &json!("M_TOO_LARGE")), "{body}");
    server.stop().await;
}
