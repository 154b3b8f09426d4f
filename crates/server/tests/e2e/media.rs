//! The content repository over HTTP: uploads (plain, streamed, asynchronous), downloads on the
//! authenticated and legacy routes with their safe-serving headers and ranges, and bad input
//! (too large, truncated, someone else's media ID, `../`), checked against
//! authed-content-repo.yaml and content-repo.yaml.

use std::path::{Path, PathBuf};

use myelin_service::media::UploadMetadata;
use myelin_test_support::cancel::cancel_at_every_await;
use myelin_test_support::{TestServer, TestUser, http_client};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPLOAD: &str = "/_matrix/media/v3/upload";
const CREATE: &str = "/_matrix/media/v1/create";
const DOWNLOAD: &str = "/_matrix/client/v1/media/download";
const LEGACY_DOWNLOAD: &str = "/_matrix/media/v3/download";

/// A response as the media tests read it (also used by `media_thumbnails` and `federation_media`).
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// Sends `request` and keeps its status, headers and body.
    pub(crate) async fn of(request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body").to_vec();
        Reply { status, headers, body }
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    #[track_caller]
    pub(crate) fn expect_error(&self, status: u16, errcode: &str) {
        let json = self.json();
        assert_eq!(self.status, status, "{json}");
        assert_eq!(json["errcode"], errcode, "{json}");
        assert!(json["error"].is_string(), "{json}");
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let mut request = http_client().request(method, format!("{}{path}", server.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    Reply::of(request).await
}

async fn upload(
    server: &TestServer,
    user: &TestUser,
    content_type: &str,
    name: &str,
    bytes: Vec<u8>,
) -> Reply {
    send(
        server,
        reqwest::Method::POST,
        &format!("{UPLOAD}?filename={name}"),
        Some(&user.access_token),
        &[("content-type", content_type)],
        Some(bytes),
    )
    .await
}

/// Uploads and returns the media ID from the `mxc://` URI.
async fn upload_ok(
    server: &TestServer,
    user: &TestUser,
    content_type: &str,
    name: &str,
    bytes: Vec<u8>,
) -> String {
    let reply = upload(server, user, content_type, name, bytes).await;
    let json = reply.json();
    assert_eq!(reply.status, 200, "{json}");
    let uri = json["content_uri"].as_str().expect("content_uri");
    let media_id =
        uri.strip_prefix(&format!("mxc://{}/", server.server_name)).expect("an mxc URI of this server");
    assert!(media_id.bytes().all(|b| b.is_ascii_alphanumeric()), "{media_id}");
    media_id.to_owned()
}

async fn download(server: &TestServer, user: &TestUser, media_id: &str, headers: &[(&str, &str)]) -> Reply {
    let path = format!("{DOWNLOAD}/{}/{media_id}", server.server_name);
    send(server, reqwest::Method::GET, &path, Some(&user.access_token), headers, None).await
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn media_dir(server: &TestServer) -> PathBuf {
    server.services().config.media.media_store_path.clone()
}

/// A few MB of bytes that are not all alike.
fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed).collect()
}

#[tokio::test]
async fn uploads_download_byte_identical_in_synapse_layout() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let small = b"hello, media".to_vec();
    let media_id = upload_ok(&server, &alice, "text/plain", "hello.txt", small.clone()).await;
    let reply = download(&server, &alice, &media_id, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, small);
    assert_eq!(reply.header("content-type"), "text/plain; charset=UTF-8");
    assert_eq!(reply.header("content-disposition"), "inline; filename=hello.txt");
    // The file is where Synapse keeps it.
    let expected = media_dir(&server)
        .join("local_content")
        .join(&media_id[0..2])
        .join(&media_id[2..4])
        .join(&media_id[4..]);
    assert_eq!(std::fs::read(&expected).unwrap(), small);

    // A few MB, streamed both ways.
    let large = patterned(5 * 1024 * 1024 + 123, 7);
    let media_id = upload_ok(&server, &alice, "application/octet-stream", "big.bin", large.clone()).await;
    let reply = download(&server, &alice, &media_id, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), large.len().to_string());
    assert!(reply.body == large, "the download is byte-identical");
    // The name in the path replaces the uploaded one.
    let path = format!("{DOWNLOAD}/{}/{media_id}/other%20name.bin", server.server_name);
    let reply = send(&server, reqwest::Method::GET, &path, Some(&alice.access_token), &[], None).await;
    assert_eq!(reply.header("content-disposition"), "attachment; filename*=utf-8''other%20name.bin");

    // `/config` on both routes.
    let config = alice.client.get("/_matrix/client/v1/media/config").await.expect(200).clone();
    assert_eq!(config, json!({"m.upload.size": 50 * 1024 * 1024}));
    let config = alice.client.get("/_matrix/media/v3/config").await.expect(200).clone();
    assert_eq!(config["m.upload.size"], 50 * 1024 * 1024);
    // Nothing is left in the temporary directory.
    assert!(files_under(&media_dir(&server).join("tmp")).is_empty());
}

#[tokio::test]
async fn identical_content_is_stored_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bytes = patterned(100_000, 3);
    let first = upload_ok(&server, &alice, "image/png", "a.png", bytes.clone()).await;
    let second = upload_ok(&server, &bob, "application/pdf", "b.pdf", bytes.clone()).await;
    assert_ne!(first, second);
    assert_eq!(files_under(&media_dir(&server).join("local_content")).len(), 1, "one file for both");
    // Each keeps its own type and name.
    let reply = download(&server, &bob, &second, &[]).await;
    assert_eq!(reply.body, bytes);
    assert_eq!(reply.header("content-type"), "application/pdf");
    assert_eq!(reply.header("content-disposition"), "attachment; filename=b.pdf");
    assert_eq!(download(&server, &alice, &first, &[]).await.header("content-type"), "image/png");
    // Other content gets its own file.
    upload_ok(&server, &alice, "image/png", "c.png", patterned(100_000, 4)).await;
    assert_eq!(files_under(&media_dir(&server).join("local_content")).len(), 2);
}

/// Sends `head` then `body` over a raw connection, optionally closing the write half early,
/// and returns the status line and the rest of the response.
async fn raw_exchange(server: &TestServer, head: &str, body: &[u8], close_early: bool) -> String {
    let addr = server.tcp_addr(0).expect("a TCP listener");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may refuse before reading everything: a failed write is fine.
    let _ = stream.write_all(body).await;
    if close_early {
        stream.shutdown().await.unwrap();
    }
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
        }
        if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn too_large_uploads_are_refused_by_length_and_by_stream() {
    let server = TestServer::start_with(json!({"max_upload_size": "1K"})).await;
    let alice = server.register("alice").await;
    let config = alice.client.get("/_matrix/client/v1/media/config").await.expect(200).clone();
    assert_eq!(config["m.upload.size"], 1024);

    // Exactly the limit is fine; one byte more is refused by Content-Length.
    upload_ok(&server, &alice, "application/octet-stream", "ok", vec![1; 1024]).await;
    upload(&server, &alice, "application/octet-stream", "big", vec![1; 1025])
        .await
        .expect_error(413, "M_TOO_LARGE");

    // A chunked body has no Content-Length: it is refused once it passes the limit.
    let chunk = vec![b'x'; 600];
    let mut body = Vec::new();
    for _ in 0..3 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: text/plain\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        alice.access_token
    );
    let response = raw_exchange(&server, &head, &body, false).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("\"M_TOO_LARGE\""), "{response}");
    // Only the upload within the limit is stored; nothing is left half-written.
    assert_eq!(files_under(&media_dir(&server).join("local_content")).len(), 1);
    assert!(files_under(&media_dir(&server).join("tmp")).is_empty());
}

#[tokio::test]
async fn a_truncated_upload_stores_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    // 500 of the 1000 bytes announced arrive, then the client stops sending.
    let head = format!(
        "POST {UPLOAD}?filename=cut.bin HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n",
        alice.access_token
    );
    let response = raw_exchange(&server, &head, &[7u8; 500], true).await;
    // The handler answers only after dropping the upload (which deletes its file), so once
    // the answer is here there is no file, no temporary file and no record.
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("\"M_UNKNOWN\""), "{response}");
    // A later request on a new connection is served, and nothing was stored.
    let media_id = upload_ok(&server, &alice, "text/plain", "after.txt", b"after".to_vec()).await;
    let records = server.services().store().local_media_of_user(&alice.user_id).await.unwrap();
    assert_eq!(records.iter().map(|r| r.media_id.clone()).collect::<Vec<_>>(), vec![media_id]);
    assert_eq!(files_under(&media_dir(&server).join("local_content")).len(), 1);
    assert!(files_under(&media_dir(&server).join("tmp")).is_empty());
}

#[tokio::test]
async fn asynchronous_uploads_belong_to_their_creator_and_are_written_once() {
    let server = TestServer::start_with(json!({"max_pending_media_uploads": 2})).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let created = alice.client.post(CREATE, &json!({})).await.expect(200).clone();
    let uri = created["content_uri"].as_str().unwrap();
    let media_id = uri.strip_prefix(&format!("mxc://{}/", server.server_name)).unwrap().to_owned();
    assert!(created["unused_expires_at"].as_u64().unwrap() > 1_700_000_000_000, "{created}");
    let put_path = format!("{UPLOAD}/{}/{media_id}?filename=later.txt", server.server_name);

    // Not uploaded yet: a download waits `timeout_ms`, then 504.
    let path = format!("{DOWNLOAD}/{}/{media_id}?timeout_ms=50", server.server_name);
    send(&server, reqwest::Method::GET, &path, Some(&alice.access_token), &[], None)
        .await
        .expect_error(504, "M_NOT_YET_UPLOADED");

    // Someone else's ID: 403; an unknown one: 404; a bad one: 400.
    let put = |path: String, token: String, body: &'static [u8]| {
        let server = &server;
        async move {
            send(
                server,
                reqwest::Method::PUT,
                &path,
                Some(&token),
                &[("content-type", "text/plain")],
                Some(body.to_vec()),
            )
            .await
        }
    };
    put(put_path.clone(), bob.access_token.clone(), b"bob's").await.expect_error(403, "M_FORBIDDEN");
    let unknown = format!("{UPLOAD}/{}/NoSuchMediaIdAtAll", server.server_name);
    put(unknown, alice.access_token.clone(), b"x").await.expect_error(404, "M_NOT_FOUND");
    let remote = format!("{UPLOAD}/elsewhere.example/{media_id}");
    put(remote, alice.access_token.clone(), b"x").await.expect_error(404, "M_NOT_FOUND");

    // A download waiting for the upload gets it as soon as it arrives.
    let waiting = {
        let path = format!("{DOWNLOAD}/{}/{media_id}?timeout_ms=30000", server.server_name);
        let token = alice.access_token.clone();
        let base = server.base_url.clone();
        tokio::spawn(async move {
            let response =
                http_client().get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
            (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
        })
    };
    let reply = put(put_path.clone(), alice.access_token.clone(), b"the content").await;
    assert_eq!((reply.status, reply.json()), (200, json!({})));
    assert_eq!(waiting.await.unwrap(), (200, b"the content".to_vec()));
    // A second upload to the same ID: 409.
    put(put_path, alice.access_token.clone(), b"again").await.expect_error(409, "M_CANNOT_OVERWRITE_MEDIA");
    let reply = download(&server, &alice, &media_id, &[]).await;
    assert_eq!(reply.body, b"the content");
    assert_eq!(reply.header("content-disposition"), "inline; filename=later.txt");

    // At most two IDs wait at once.
    alice.client.post(CREATE, &json!({})).await.expect(200);
    alice.client.post(CREATE, &json!({})).await.expect(200);
    alice.client.post(CREATE, &json!({})).await.expect_error(429, "M_LIMIT_EXCEEDED");
    bob.client.post(CREATE, &json!({})).await.expect(200);
}

#[tokio::test]
async fn media_ids_never_name_paths_outside_the_store() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    upload_ok(&server, &alice, "text/plain", "x", b"x".to_vec()).await;
    for media_id in ["..%2F..%2Fhomeserver.yaml", "..", "a.b", "%2Fetc%2Fpasswd", "abc%00def"] {
        let reply = download(&server, &alice, media_id, &[]).await;
        assert!(reply.status == 400 || reply.status == 404, "{media_id}: {}", reply.status);
        let json = reply.json();
        // (`..` alone is resolved by the client's URL parser: then no route matches.)
        let errcode = json["errcode"].as_str().unwrap_or("");
        assert!(["M_INVALID_PARAM", "M_NOT_FOUND", "M_UNRECOGNIZED"].contains(&errcode), "{json}");
        let path = format!("{UPLOAD}/{}/{media_id}", server.server_name);
        let reply =
            send(&server, reqwest::Method::PUT, &path, Some(&alice.access_token), &[], Some(b"x".to_vec()))
                .await;
        assert!(reply.status == 400 || reply.status == 404, "{media_id}: {}", reply.status);
    }
    // A path whose `..` segments reach past the media ID is no route at all.
    let path = format!("{DOWNLOAD}/{}/../../../homeserver.yaml", server.server_name);
    let reply = send(&server, reqwest::Method::GET, &path, Some(&alice.access_token), &[], None).await;
    assert_ne!(reply.status, 200);
    // Short unknown IDs are simply not found.
    download(&server, &alice, "ab", &[]).await.expect_error(404, "M_NOT_FOUND");
    // Remote media of a server that cannot be reached: 502, as Synapse answers (fetching is
    // `federation_media`'s).
    let path = format!("{DOWNLOAD}/elsewhere.example/SomeRemoteMediaId");
    send(&server, reqwest::Method::GET, &path, Some(&alice.access_token), &[], None)
        .await
        .expect_error(502, "M_UNKNOWN");
}

#[tokio::test]
async fn uploaded_html_is_served_as_a_sandboxed_attachment_with_ranges() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let html = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    let media_id = upload_ok(&server, &alice, "text/html", "page.html", html.clone()).await;
    let reply = download(&server, &alice, &media_id, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, html);
    assert_eq!(reply.header("content-disposition"), "attachment; filename=page.html");
    assert_eq!(
        reply.header("content-security-policy"),
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
    );
    assert_eq!(reply.header("x-content-type-options"), "nosniff");
    assert_eq!(reply.header("cross-origin-resource-policy"), "cross-origin");
    let svg = upload_ok(&server, &alice, "image/svg+xml", "x.svg", b"<svg/>".to_vec()).await;
    assert!(
        download(&server, &alice, &svg, &[]).await.header("content-disposition").starts_with("attachment")
    );

    // Ranges.
    let reply = download(&server, &alice, &media_id, &[("range", "bytes=6-13")]).await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, &html[6..=13]);
    assert_eq!(reply.header("content-range"), format!("bytes 6-13/{}", html.len()));
    assert_eq!(reply.header("content-security-policy").split(';').next(), Some("sandbox"));
    let reply = download(&server, &alice, &media_id, &[("range", "bytes=-4")]).await;
    assert_eq!((reply.status, reply.body.as_slice()), (206, &html[html.len() - 4..]));
    let reply = download(&server, &alice, &media_id, &[("range", "bytes=1000-")]).await;
    assert_eq!(reply.status, 416);
    assert_eq!(reply.header("content-range"), format!("bytes */{}", html.len()));
    // A range on a large file reads only that part.
    let large = patterned(3 * 1024 * 1024, 9);
    let large_id = upload_ok(&server, &alice, "video/mp4", "v.mp4", large.clone()).await;
    let reply = download(&server, &alice, &large_id, &[("range", "bytes=2000000-2000099")]).await;
    assert_eq!((reply.status, reply.body.as_slice()), (206, &large[2_000_000..2_000_100]));
}

#[tokio::test]
async fn authenticated_routes_need_a_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let media_id = upload_ok(&server, &alice, "text/plain", "x", b"x".to_vec()).await;
    let anonymous = server.client();
    for path in [
        format!("{DOWNLOAD}/{}/{media_id}", server.server_name),
        format!("{DOWNLOAD}/{}/{media_id}/x.txt", server.server_name),
        "/_matrix/client/v1/media/config".to_owned(),
        "/_matrix/media/v3/config".to_owned(),
    ] {
        anonymous.get(&path).await.expect_error(401, "M_MISSING_TOKEN");
    }
    anonymous.post(CREATE, &json!({})).await.expect_error(401, "M_MISSING_TOKEN");
    let reply = send(
        &server,
        reqwest::Method::POST,
        UPLOAD,
        None,
        &[("content-type", "text/plain")],
        Some(b"x".to_vec()),
    )
    .await;
    reply.expect_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn legacy_downloads_serve_only_media_from_before_authenticated_media() {
    let mut server = TestServer::start_with(json!({"enable_authenticated_media": false})).await;
    let alice = server.register("alice").await;
    let old = upload_ok(&server, &alice, "text/plain", "old.txt", b"old".to_vec()).await;
    let server_name = server.server_name.clone();
    let legacy = |media_id: &str| format!("{LEGACY_DOWNLOAD}/{server_name}/{media_id}");
    let reply = send(&server, reqwest::Method::GET, &legacy(&old), None, &[], None).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, b"old".as_slice()));
    assert_eq!(reply.header("x-content-type-options"), "nosniff");

    // Authenticated media turned on: old media stays on the legacy route, new media does not.
    let config = std::fs::read_to_string(&server.config_path).unwrap();
    let mut config: Value = serde_json::from_str(&config).unwrap();
    config["enable_authenticated_media"] = json!(true);
    std::fs::write(&server.config_path, serde_json::to_string(&config).unwrap()).unwrap();
    server.restart().await;
    let token = alice.access_token.clone();
    let reply = send(&server, reqwest::Method::GET, &legacy(&old), None, &[], None).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, b"old".as_slice()));
    let legacy_named = format!("{}/renamed.txt", legacy(&old));
    let reply = send(&server, reqwest::Method::GET, &legacy_named, None, &[], None).await;
    assert_eq!(reply.header("content-disposition"), "inline; filename=renamed.txt");

    let reply = send(
        &server,
        reqwest::Method::POST,
        &format!("{UPLOAD}?filename=new.txt"),
        Some(&token),
        &[("content-type", "text/plain")],
        Some(b"new".to_vec()),
    )
    .await;
    let uri = reply.json()["content_uri"].as_str().unwrap().to_owned();
    let new = uri.rsplit('/').next().unwrap().to_owned();
    send(&server, reqwest::Method::GET, &legacy(&new), None, &[], None)
        .await
        .expect_error(404, "M_NOT_FOUND");
    // Both are served on the authenticated route.
    for media_id in [&old, &new] {
        let path = format!("{DOWNLOAD}/{}/{media_id}", server.server_name);
        assert_eq!(send(&server, reqwest::Method::GET, &path, Some(&token), &[], None).await.status, 200);
    }
}

#[tokio::test]
async fn media_creation_is_rate_limited() {
    let server =
        TestServer::start_with(json!({"rc_media_create": {"per_second": 0.001, "burst_count": 2}})).await;
    let alice = server.register("alice").await;
    upload_ok(&server, &alice, "text/plain", "1", b"1".to_vec()).await;
    alice.client.post(CREATE, &json!({})).await.expect(200);
    let reply = upload(&server, &alice, "text/plain", "3", b"3".to_vec()).await;
    reply.expect_error(429, "M_LIMIT_EXCEEDED");
    assert!(reply.json()["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    alice.client.post(CREATE, &json!({})).await.expect_error(429, "M_LIMIT_EXCEEDED");
    // Another user has their own bucket.
    let bob = server.register("bob").await;
    upload_ok(&server, &bob, "text/plain", "b", b"b".to_vec()).await;
}

#[tokio::test]
async fn an_upload_dropped_at_any_await_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let services = server.services().clone();
    let user_id = ruma::UserId::parse(alice.user_id.as_str()).unwrap();
    let bytes = patterned(200_000, 5);
    let metadata = UploadMetadata { content_type: Some("image/png".to_owned()), upload_name: None };
    let (cancelled, media_id) = cancel_at_every_await(
        || {
            let (services, user_id, metadata, bytes) =
                (services.clone(), user_id.clone(), metadata.clone(), bytes.clone());
            async move { services.store_media_bytes(&user_id, metadata, &bytes).await }
        },
        10_000,
    )
    .await;
    assert!(cancelled >= 1, "the upload was dropped at least once before it completed");
    let media_id = media_id.unwrap();
    // An attempt dropped once its bytes were in finishes on its own task; wait for those.
    services.wait_for_finishing_uploads().await;
    // Each dropped attempt left nothing or a whole media: every record has its file, every file
    // its record, and nothing temporary is left. (The content is the same each time, so one
    // file holds it.)
    let records = server.services().store().local_media_of_user(&alice.user_id).await.unwrap();
    assert!(records.iter().any(|r| r.media_id == media_id.as_str()));
    let files = files_under(&media_dir(&server).join("local_content"));
    assert_eq!(files.len(), 1, "{files:?}");
    for record in &records {
        assert!(record.is_uploaded(), "{record:?}");
        let file_id = record.file_id.as_deref().unwrap();
        let path = media_dir(&server)
            .join("local_content")
            .join(&file_id[0..2])
            .join(&file_id[2..4])
            .join(&file_id[4..]);
        assert_eq!(files[0], path, "{record:?}");
    }
    assert!(files_under(&media_dir(&server).join("tmp")).is_empty());
    let reply = download(&server, &alice, media_id.as_str(), &[]).await;
    assert_eq!(reply.body, bytes);
}
