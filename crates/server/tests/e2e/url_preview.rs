//! URL previews without SSRF: a test origin on `127.0.0.2` (whitelisted) serves pages, an
//! image, a redirect to loopback and endless bodies; a second one on `127.0.0.1` (blocked)
//! counts the requests that should never reach it. Names resolve through
//! `myelin_dns_overrides`, never through real DNS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::rooms::urlencode;

/// A 20x10 RGB PNG.
const PNG: &[u8] = &[
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 20, 0, 0, 0, 10, 8, 2, 0, 0, 0,
    59, 55, 233, 177, 0, 0, 0, 21, 73, 68, 65, 84, 120, 156, 99, 248, 207, 192, 64, 54, 34, 95, 231, 168,
    230, 17, 163, 25, 0, 49, 68, 199, 57, 116, 218, 139, 17, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

const PAGE: &str = r#"<!doctype html><html><head>
<meta charset="utf-8">
<title>Not the og:title</title>
<meta property="og:title" content="The allowed page">
<meta property="og:description" content="A page the test origin serves">
<meta property="og:image" content="/image.png">
</head><body><p>Hello</p></body></html>"#;

/// A small HTTP/1.1 origin: answers by path and counts requests per path (query included).
#[derive(Clone)]
struct Origin {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Origin {
    async fn start(ip: &str, redirect_to: Option<SocketAddr>) -> Origin {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind the test origin");
        let origin = Origin { addr: listener.local_addr().unwrap(), hits: Arc::default() };
        let serving = origin.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(stream, redirect_to));
            }
        });
        origin
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }

    async fn serve(self, mut stream: TcpStream, redirect_to: Option<SocketAddr>) {
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let text = String::from_utf8_lossy(&request);
        let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
        *self.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        let route = path.split('?').next().unwrap_or_default();
        let respond = |status: &str, headers: &str, body: &[u8]| {
            let mut response = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                body.len()
            )
            .into_bytes();
            response.extend_from_slice(body);
            response
        };
        let response = match route {
            "/page" => respond("200 OK", "Content-Type: text/html; charset=utf-8\r\n", PAGE.as_bytes()),
            "/image.png" => respond("200 OK", "Content-Type: image/png\r\n", PNG),
            "/redirect" => {
                let target = redirect_to.map(|a| format!("http://{a}/")).unwrap_or_default();
                respond("302 Found", &format!("Location: {target}\r\n"), b"")
            }
            "/relative-redirect" => respond("301 Moved Permanently", "Location: /page\r\n", b""),
            "/text" => respond("200 OK", "Content-Type: text/plain\r\n", b"plain text"),
            "/missing" => respond("404 Not Found", "Content-Type: text/html\r\n", b"gone"),
            "/declared-large" => {
                // Declares a body far over the limit; only the headers are sent.
                let headers =
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1073741824\r\n\r\n";
                let _ = stream.write_all(headers.as_bytes()).await;
                let _ = stream.write_all(b"<html>").await;
                return;
            }
            "/endless" => {
                // A chunked body that never ends: the fetcher must stop reading it.
                let headers =
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(headers.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("4000\r\n{}\r\n", "a".repeat(0x4000));
                while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                return;
            }
            _ => respond("200 OK", "Content-Type: text/html\r\n", b"<html><title>Loopback</title></html>"),
        };
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
    }
}

/// The test world: Myelin with previews on, the allowed origin and the loopback one.
struct World {
    server: TestServer,
    allowed: Origin,
    loopback: Origin,
    user: TestUser,
}

async fn world() -> World {
    let loopback = Origin::start("127.0.0.1", None).await;
    let allowed = Origin::start("127.0.0.2", Some(loopback.addr)).await;
    let server = TestServer::start_with(json!({
        "url_preview_enabled": true,
        "url_preview_ip_range_blacklist": [
            "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
            "192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
            "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "::1/128", "fe80::/10", "fc00::/7",
            "2001:db8::/32", "ff00::/8", "fec0::/10",
        ],
        "url_preview_ip_range_whitelist": ["127.0.0.2"],
        "url_preview_url_blacklist": [{"path": "/forbidden*"}],
        "myelin_dns_overrides": {
            "allowed.test": ["127.0.0.2"],
            "private.test": ["10.0.0.1"],
            "loopback.test": ["127.0.0.1"],
            "v6.test": ["::1"],
        },
        "max_spider_size": "64K",
    }))
    .await;
    let user = server.register("previewer").await;
    World { server, allowed, loopback, user }
}

impl World {
    fn allowed_url(&self, path: &str) -> String {
        format!("http://allowed.test:{}{path}", self.allowed.addr.port())
    }

    async fn preview(&self, url: &str) -> myelin_test_support::TestResponse {
        self.user.client.get(&format!("/_matrix/client/v1/media/preview_url?url={}", urlencode(url))).await
    }
}

#[tokio::test]
async fn the_allowed_origin_is_previewed_with_its_open_graph_data() {
    let world = world().await;
    let response = world.preview(&world.allowed_url("/page")).await;
    let og = response.expect(200);
    assert_eq!(og["og:title"], "The allowed page");
    assert_eq!(og["og:description"], "A page the test origin serves");
    assert_eq!(world.allowed.hits("/page"), 1);
    // The relative og:image was fetched through the same guard and stored as local media.
    assert_eq!(world.allowed.hits("/image.png"), 1);
    assert_image(&world, og).await;

    // A relative redirect within the allowed origin is followed.
    let og = world.preview(&world.allowed_url("/relative-redirect")).await.expect(200).clone();
    assert_eq!(og["og:title"], "The allowed page");

    // The legacy route answers the same.
    let legacy = world
        .user
        .client
        .get(&format!("/_matrix/media/v3/preview_url?url={}", urlencode(&world.allowed_url("/page"))))
        .await;
    assert_eq!(legacy.expect(200)["og:title"], "The allowed page");
}

/// The preview's image is the test PNG, stored as local media that can be downloaded.
async fn assert_image(world: &World, og: &Value) {
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(og["og:image:width"], 20);
    assert_eq!(og["og:image:height"], 10);
    assert_eq!(og["matrix:image:size"], PNG.len());
    let mxc = og["og:image"].as_str().expect("og:image");
    let rest = mxc.strip_prefix("mxc://").expect("an mxc URI");
    let download = world.user.client.get(&format!("/_matrix/client/v1/media/download/{rest}")).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.body, PNG, "the stored image is the origin's");
}

#[tokio::test]
async fn a_direct_image_url_is_previewed_as_stored_media() {
    let world = world().await;
    let og = world.preview(&world.allowed_url("/image.png")).await.expect(200).clone();
    assert_image(&world, &og).await;
}

#[tokio::test]
async fn a_preview_is_fetched_once_and_shared_between_users_and_concurrent_requests() {
    let world = world().await;
    let url = world.allowed_url("/page?shared");
    world.preview(&url).await.expect(200);
    let other = world.server.register("other").await;
    let again =
        other.client.get(&format!("/_matrix/client/v1/media/preview_url?url={}", urlencode(&url))).await;
    assert_eq!(again.expect(200)["og:title"], "The allowed page");
    assert_eq!(world.allowed.hits("/page?shared"), 1, "the second request is served from the cache");

    let url = world.allowed_url("/page?concurrent");
    let (a, b, c) = tokio::join!(world.preview(&url), world.preview(&url), world.preview(&url));
    for response in [a, b, c] {
        assert_eq!(response.expect(200)["og:title"], "The allowed page");
    }
    assert_eq!(world.allowed.hits("/page?concurrent"), 1, "concurrent requests share one fetch");
}

#[tokio::test]
async fn loopback_private_and_mapped_addresses_are_refused() {
    let world = world().await;
    let port = world.loopback.addr.port();
    for literal in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::ffff:7f00:1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0.0.0.0:{port}/"),
    ] {
        let response = world.preview(&literal).await;
        response.expect_error(403, "M_UNKNOWN");
        assert_eq!(response.json["error"], "IP address blocked", "{literal}");
    }
    for name in ["private.test", "loopback.test", "v6.test"] {
        let response = world.preview(&format!("http://{name}:{port}/")).await;
        response.expect_error(502, "M_UNKNOWN");
        assert!(response.json["error"].as_str().unwrap().contains("DNS"), "{name}: {}", response.json);
    }
    assert_eq!(world.loopback.total_hits(), 0, "nothing reached the loopback origin");
}

#[tokio::test]
async fn a_redirect_from_the_allowed_origin_to_loopback_is_refused() {
    let world = world().await;
    let response = world.preview(&world.allowed_url("/redirect")).await;
    response.expect_error(403, "M_UNKNOWN");
    assert_eq!(world.allowed.hits("/redirect"), 1);
    assert_eq!(world.loopback.total_hits(), 0, "the redirect was not followed");
}

#[tokio::test]
async fn userinfo_other_schemes_and_bad_urls_are_refused() {
    let world = world().await;
    let port = world.allowed.addr.port();
    for url in [
        format!("http://user:secret@allowed.test:{port}/page"),
        format!("http://user@allowed.test:{port}/page"),
        format!("ftp://allowed.test:{port}/page"),
        "file:///etc/passwd".to_owned(),
        "gopher://allowed.test/".to_owned(),
        "not a url".to_owned(),
        "http://".to_owned(),
    ] {
        world.preview(&url).await.expect_error(400, "M_INVALID_PARAM");
    }
    world.user.client.get("/_matrix/client/v1/media/preview_url").await.expect_error(400, "M_MISSING_PARAM");
    world
        .user
        .client
        .get("/_matrix/client/v1/media/preview_url?url=x&ts=yesterday")
        .await
        .expect_error(400, "M_INVALID_PARAM");
    // `url_preview_url_blacklist`.
    let response = world.preview(&world.allowed_url("/forbidden/page")).await;
    response.expect_error(403, "M_UNKNOWN");
    assert_eq!(world.allowed.total_hits(), 0, "no refused URL was fetched");
}

#[tokio::test]
async fn oversized_bodies_are_cut_off_not_buffered() {
    let world = world().await;
    // An endless chunked body: the fetch stops at `max_spider_size` instead of reading forever.
    world.preview(&world.allowed_url("/endless")).await.expect_error(502, "M_TOO_LARGE");
    // A declared length over the limit is refused before the body is read.
    world.preview(&world.allowed_url("/declared-large")).await.expect_error(502, "M_TOO_LARGE");
    // Upstream errors and content that cannot be previewed are bad gateways.
    world.preview(&world.allowed_url("/missing")).await.expect_error(502, "M_UNKNOWN");
    world.preview(&world.allowed_url("/text")).await.expect_error(502, "M_UNKNOWN");
    // The server keeps serving.
    assert_eq!(world.preview(&world.allowed_url("/page")).await.expect(200)["og:title"], "The allowed page");
}

#[tokio::test]
async fn previews_need_an_access_token() {
    let world = world().await;
    let anonymous = world.server.client();
    let query = format!("?url={}", urlencode(&world.allowed_url("/page")));
    for path in ["/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"] {
        anonymous.get(&format!("{path}{query}")).await.expect_error(401, "M_MISSING_TOKEN");
    }
    assert_eq!(world.allowed.total_hits(), 0);
}

#[tokio::test]
async fn previews_are_not_there_when_disabled() {
    let server = TestServer::start().await;
    let user = server.register("nopreview").await;
    for path in ["/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"] {
        let response = user.client.get(&format!("{path}?url=http%3A%2F%2Fexample.org%2F")).await;
        response.expect_error(404, "M_UNRECOGNIZED");
    }
}
