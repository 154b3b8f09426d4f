//! Federation media (issue 14): two real Myelins, A (whose users upload) and B (whose users
//! read A's media). Inbound: `/_matrix/federation/v1/media/download|thumbnail/{mediaId}`
//! answers `multipart/mixed`, signed requests only, quarantined media not served. Outbound:
//! B's client routes fetch A's media over federation, cache it (served again with A stopped),
//! thumbnail it, refuse what is over `max_upload_size`, honour `allow_remote=false` and
//! `federation_domain_whitelist`; B's admin quarantines and purges its cache.

use std::io::Cursor;

use crate::media::Reply;
use image::{ImageFormat, RgbImage};
use myelin_service::media::{MediaId, RemoteOrigin, remote_content_path};
use myelin_test_support::federation::{federating_server, signed_header, write_certificates};
use myelin_test_support::{TestServer, TestUser, http_client};
use serde_json::{Value, json};

async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::of(request).await
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> Reply {
    let mut request = http_client().get(format!("{}{path}", server.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

async fn upload(
    server: &TestServer,
    user: &TestUser,
    content_type: &str,
    name: &str,
    bytes: Vec<u8>,
) -> String {
    let response = send(
        http_client()
            .post(format!("{}/_matrix/media/v3/upload?filename={name}", server.base_url))
            .bearer_auth(&user.access_token)
            .header("content-type", content_type)
            .body(bytes),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.json());
    let uri = response.json()["content_uri"].as_str().unwrap().to_owned();
    uri.rsplit('/').next().unwrap().to_owned()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
    bytes
}

async fn two_servers(b_config: Value) -> (tempfile::TempDir, TestServer, TestServer) {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let a = federating_server(
        "a.test",
        certs.path(),
        json!({"thumbnail_sizes": [{"width": 32, "height": 32, "method": "scale"}]}),
    )
    .await;
    let b = federating_server("b.test", certs.path(), b_config).await;
    (certs, a, b)
}

fn download_path(server: &TestServer, media_id: &str) -> String {
    format!("/_matrix/client/v1/media/download/{}/{media_id}", server.server_name)
}

#[tokio::test]
async fn remote_media_is_fetched_once_cached_and_served_with_the_origin_stopped() {
    let (_certs, a, b) = two_servers(json!({})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let content = b"hello from a.test, ".repeat(500);
    let media_id = upload(&a, &alice, "text/plain", "greeting.txt", content.clone()).await;

    // Concurrent first requests share one download.
    let path = download_path(&a, &media_id);
    let (first, second) =
        tokio::join!(get(&b, &path, Some(&bob.access_token)), get(&b, &path, Some(&bob.access_token)));
    for reply in [&first, &second] {
        assert_eq!(reply.status, 200, "{}", reply.json());
        assert_eq!(reply.body, content);
        assert_eq!(reply.header("content-type"), "text/plain; charset=UTF-8");
        assert_eq!(reply.header("content-disposition"), "inline; filename=greeting.txt");
        assert_eq!(reply.header("content-length"), content.len().to_string());
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
    }
    assert_eq!(b.services().remote_media_fetched(), 1, "one download for concurrent requests");

    // Cached in Synapse's layout, with its record.
    let record = b.services().store().remote_media(&a.server_name, &media_id).await.unwrap().expect("cached");
    assert_eq!(record.size, content.len() as u64);
    assert_eq!(record.upload_name.as_deref(), Some("greeting.txt"));
    let file = b.services().media_file_path(&remote_content_path(
        &RemoteOrigin::parse(&a.server_name).unwrap(),
        &MediaId::parse(&record.file_id).unwrap(),
    ));
    assert!(file.starts_with(b.services().media_store_root().join("remote_content").join(&a.server_name)));
    assert_eq!(std::fs::read(&file).unwrap(), content);

    // A name in the path names the download.
    let named = get(&b, &format!("{path}/other%20name.txt"), Some(&bob.access_token)).await;
    assert_eq!(named.status, 200);
    assert_eq!(named.header("content-disposition"), "inline; filename*=utf-8''other%20name.txt");

    // Authentication is required on the client route.
    get(&b, &path, None).await.expect_error(401, "M_MISSING_TOKEN");

    // With A gone, the cache answers.
    let a_name = a.server_name.clone();
    a.stop().await;
    let cached = get(&b, &path, Some(&bob.access_token)).await;
    assert_eq!(cached.status, 200, "{}", cached.json());
    assert_eq!(cached.body, content);
    assert_eq!(b.services().remote_media_fetched(), 1);
    // Uncached media of a stopped server: a bad gateway.
    get(
        &b,
        &format!("/_matrix/client/v1/media/download/{a_name}/NotCachedAnywhere"),
        Some(&bob.access_token),
    )
    .await
    .expect_error(502, "M_UNKNOWN");
}

#[tokio::test]
async fn remote_thumbnails_are_made_from_the_cached_copy() {
    let (_certs, a, b) =
        two_servers(json!({"thumbnail_sizes": [{"width": 32, "height": 32, "method": "scale"}]})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let media_id = upload(&a, &alice, "image/png", "pic.png", png(320, 240)).await;
    let path = format!(
        "/_matrix/client/v1/media/thumbnail/{}/{media_id}?width=32&height=32&method=scale",
        a.server_name
    );
    let reply = get(&b, &path, Some(&bob.access_token)).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(reply.header("content-type"), "image/png");
    let thumbnail = image::load_from_memory(&reply.body).expect("a decodable thumbnail");
    assert_eq!((thumbnail.width(), thumbnail.height()), (32, 24));
    // Made by B of its cached copy, recorded under the remote media.
    let stored = b.services().store().remote_thumbnails(&a.server_name, &media_id).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(b.services().store().remote_media(&a.server_name, &media_id).await.unwrap().is_some());
    // The full media, fetched for it, is served too.
    let full = get(&b, &download_path(&a, &media_id), Some(&bob.access_token)).await;
    assert_eq!(full.status, 200);
    assert_eq!(image::load_from_memory(&full.body).unwrap().width(), 320);
    assert_eq!(b.services().remote_media_fetched(), 1);
    // A's own federation thumbnail endpoint, signed by B: multipart with the thumbnail.
    let fed_path =
        format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=32&height=32&method=scale");
    let reply = signed_get(&b, &a, &fed_path).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let (json_part, file_part, file_headers) = multipart_parts(&reply);
    assert_eq!(json_part, json!({}));
    assert!(file_headers.to_ascii_lowercase().contains("content-type: image/png"), "{file_headers}");
    assert_eq!(image::load_from_memory(&file_part).unwrap().width(), 32);
}

/// `GET path` on `to`, signed as `from`.
async fn signed_get(from: &TestServer, to: &TestServer, path: &str) -> Reply {
    let authorization = signed_header(from, &to.server_name, "GET", path, b"");
    send(http_client().get(format!("{}{path}", to.base_url)).header("Authorization", authorization)).await
}

/// The JSON part, the file part's bytes and headers of a `multipart/mixed` answer.
fn multipart_parts(reply: &Reply) -> (Value, Vec<u8>, String) {
    let content_type = reply.header("content-type");
    let boundary = content_type.strip_prefix("multipart/mixed; boundary=").expect("multipart/mixed");
    let delimiter = format!("--{boundary}");
    let body = &reply.body;
    let find = |from: usize, needle: &[u8]| {
        body[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from).expect("delimiter")
    };
    let first = find(0, delimiter.as_bytes()) + delimiter.len();
    let second = find(first, delimiter.as_bytes());
    let json_part = &body[first..second];
    let json_start = find(first, b"\r\n\r\n") + 4;
    assert!(json_start < second);
    let json: Value =
        serde_json::from_slice(json_part[json_start - first..].trim_ascii()).expect("JSON part");
    let file_start = second + delimiter.len();
    let headers_end = find(file_start, b"\r\n\r\n");
    let headers = String::from_utf8_lossy(&body[file_start..headers_end]).into_owned();
    let closing = format!("\r\n--{boundary}--");
    let file_end = find(headers_end + 4, closing.as_bytes());
    (json, body[headers_end + 4..file_end].to_vec(), headers)
}

#[tokio::test]
async fn federation_media_is_signed_local_and_not_quarantined() {
    let (_certs, a, b) = two_servers(json!({})).await;
    let admin = a.register_admin("admin").await;
    let bob = b.register("bob").await;
    let content = b"secret bytes".to_vec();
    let media_id = upload(&a, &admin, "application/pdf", "doc.pdf", content.clone()).await;
    let fed_path = format!("/_matrix/federation/v1/media/download/{media_id}");

    // No signature: 401.
    get(&a, &fed_path, None).await.expect_error(401, "M_UNAUTHORIZED");
    // Signed by B: the JSON part, then the file with its type and name.
    let reply = signed_get(&b, &a, &fed_path).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-length"), reply.body.len().to_string());
    let (json_part, file, headers) = multipart_parts(&reply);
    assert_eq!(json_part, json!({}));
    assert_eq!(file, content);
    let headers = headers.to_ascii_lowercase();
    assert!(headers.contains("content-type: application/pdf"), "{headers}");
    assert!(headers.contains("content-disposition: attachment; filename=doc.pdf"), "{headers}");
    // Unknown media and a bad ID.
    signed_get(&b, &a, "/_matrix/federation/v1/media/download/NoSuchMedia")
        .await
        .expect_error(404, "M_NOT_FOUND");
    signed_get(&b, &a, "/_matrix/federation/v1/media/download/bad%24id")
        .await
        .expect_error(400, "M_INVALID_PARAM");

    // Quarantined on A: neither served over federation nor fetchable by B.
    let quarantine = format!("/_synapse/admin/v1/media/quarantine/{}/{media_id}", a.server_name);
    admin.client.post(&quarantine, &json!({})).await.expect(200);
    signed_get(&b, &a, &fed_path).await.expect_error(404, "M_NOT_FOUND");
    get(&b, &download_path(&a, &media_id), Some(&bob.access_token)).await.expect_error(404, "M_NOT_FOUND");
    assert!(b.services().store().remote_media(&a.server_name, &media_id).await.unwrap().is_none());
}

#[tokio::test]
async fn remote_fetches_follow_the_query_the_size_limit_and_the_whitelist() {
    let (_certs, a, b) = two_servers(json!({"max_upload_size": "1K"})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let small = upload(&a, &alice, "text/plain", "small.txt", b"small".to_vec()).await;
    let large = upload(&a, &alice, "application/octet-stream", "large.bin", vec![7u8; 4096]).await;

    // allow_remote=false: not fetched.
    get(&b, &format!("{}?allow_remote=false", download_path(&a, &small)), Some(&bob.access_token))
        .await
        .expect_error(404, "M_NOT_FOUND");
    get(&b, &format!("{}?allow_remote=maybe", download_path(&a, &small)), Some(&bob.access_token))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    assert_eq!(b.services().remote_media_fetched(), 0);
    // Unknown on A: 404 from B too.
    get(&b, &download_path(&a, "NoSuchMediaOnA"), Some(&bob.access_token))
        .await
        .expect_error(404, "M_NOT_FOUND");
    // A bad server name.
    get(&b, "/_matrix/client/v1/media/download/..%2Fx/abc", Some(&bob.access_token))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    // Over B's max_upload_size: 502 M_TOO_LARGE, nothing cached.
    get(&b, &download_path(&a, &large), Some(&bob.access_token)).await.expect_error(502, "M_TOO_LARGE");
    assert!(b.services().store().remote_media(&a.server_name, &large).await.unwrap().is_none());
    let tmp = b.services().media_store_root().join("tmp");
    let leftovers = std::fs::read_dir(&tmp).map(|dir| dir.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "the refused download left no temporary file");
    // Within it: served.
    let reply = get(&b, &download_path(&a, &small), Some(&bob.access_token)).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(reply.body, b"small");
    // allow_remote=false refuses even cached media, as Synapse.
    get(&b, &format!("{}?allow_remote=false", download_path(&a, &small)), Some(&bob.access_token))
        .await
        .expect_error(404, "M_NOT_FOUND");

    // A server that federation_domain_whitelist leaves out: 403, nothing asked.
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let c =
        federating_server("c.test", certs.path(), json!({"federation_domain_whitelist": ["b.test"]})).await;
    let carol = c.register("carol").await;
    get(&c, &download_path(&a, &small), Some(&carol.access_token)).await.expect_error(403, "M_FORBIDDEN");
    assert_eq!(c.services().remote_media_fetched(), 0);
}

#[tokio::test]
async fn legacy_routes_fetch_remote_media_only_with_authenticated_media_off() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let off = json!({"enable_authenticated_media": false});
    let a = federating_server("a.test", certs.path(), off.clone()).await;
    let b = federating_server("b.test", certs.path(), off).await;
    let c = federating_server("c.test", certs.path(), json!({})).await;
    let alice = a.register("alice").await;
    let media_id = upload(&a, &alice, "text/plain", "legacy.txt", b"legacy bytes".to_vec()).await;
    let legacy = format!("/_matrix/media/v3/download/{}/{media_id}", a.server_name);
    let reply = get(&b, &legacy, None).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(reply.body, b"legacy bytes");
    assert_eq!(reply.header("content-disposition"), "inline; filename=legacy.txt");
    // With authenticated media on (C), the legacy route fetches nothing.
    get(&c, &legacy, None).await.expect_error(404, "M_NOT_FOUND");
    assert_eq!(c.services().remote_media_fetched(), 0);
}

#[tokio::test]
async fn admins_quarantine_and_purge_cached_remote_media() {
    let (_certs, a, b) = two_servers(json!({})).await;
    let alice = a.register("alice").await;
    let admin = b.register_admin("admin").await;
    let bob = b.register("bob").await;
    let kept = upload(&a, &alice, "text/plain", "kept.txt", b"kept".to_vec()).await;
    let purged = upload(&a, &alice, "text/plain", "purged.txt", b"purged".to_vec()).await;
    for media_id in [&kept, &purged] {
        assert_eq!(get(&b, &download_path(&a, media_id), Some(&bob.access_token)).await.status, 200);
    }
    // Quarantine of B's cached copy.
    let quarantine = format!("/_synapse/admin/v1/media/quarantine/{}/{kept}", a.server_name);
    admin.client.post(&quarantine, &json!({})).await.expect(200);
    get(&b, &download_path(&a, &kept), Some(&bob.access_token)).await.expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .post(&format!("/_synapse/admin/v1/media/quarantine/{}/NotCached", a.server_name), &json!({}))
        .await
        .expect_error(404, "M_NOT_FOUND");

    // The purge: what was not read since before_ts goes (quarantined media stays).
    let record = b.services().store().remote_media(&a.server_name, &purged).await.unwrap().unwrap();
    let file = b.services().media_file_path(&remote_content_path(
        &RemoteOrigin::parse(&a.server_name).unwrap(),
        &MediaId::parse(&record.file_id).unwrap(),
    ));
    assert!(file.exists());
    admin
        .client
        .post("/_synapse/admin/v1/purge_media_cache", &json!({}))
        .await
        .expect_error(400, "M_MISSING_PARAM");
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 60_000;
    let reply = admin
        .client
        .post(&format!("/_synapse/admin/v1/purge_media_cache?before_ts={before}"), &json!({}))
        .await;
    assert_eq!(reply.expect(200), &json!({"deleted": 1}));
    assert!(!file.exists(), "the purged file is deleted");
    assert!(b.services().store().remote_media(&a.server_name, &purged).await.unwrap().is_none());
    assert!(b.services().store().remote_media(&a.server_name, &kept).await.unwrap().is_some());
    bob.client
        .post(&format!("/_synapse/admin/v1/purge_media_cache?before_ts={before}"), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Fetched again on the next request.
    let again = get(&b, &download_path(&a, &purged), Some(&bob.access_token)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, b"purged");
    assert_eq!(b.services().remote_media_fetched(), 3);
}

#[tokio::test]
async fn servers_without_the_federation_media_endpoint_are_asked_on_the_legacy_route() {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    // The peer answers `404 M_UNRECOGNIZED` to the federation media endpoint.
    let peer = myelin_test_support::federation_peer::FederationPeer::start("a.test", certs.path()).await;
    let b = federating_server("b.test", certs.path(), json!({})).await;
    let bob = b.register("bob").await;
    peer.serve_legacy_media("OldServerMedia", "text/plain", b"from an older server".to_vec());
    let path =
        format!("/_matrix/client/v1/media/download/{}/OldServerMedia?timeout_ms=1500", peer.server_name);
    let reply = get(&b, &path, Some(&bob.access_token)).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert_eq!(reply.body, b"from an older server");
    assert_eq!(reply.header("content-disposition"), "inline; filename=legacy.bin");
    let requests = peer.legacy_media_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].contains("allow_remote=false"), "{requests:?}");
    assert!(requests[0].contains("timeout_ms=1500"), "{requests:?}");
    // Unknown there too: 404.
    let path = format!("/_matrix/client/v1/media/download/{}/Missing", peer.server_name);
    get(&b, &path, Some(&bob.access_token)).await.expect_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn remote_media_lifetime_deletes_cached_media_not_read_recently() {
    let (_certs, a, b) = two_servers(json!({"media_retention": {"remote_media_lifetime": "1d"}})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let media_id = upload(&a, &alice, "text/plain", "old.txt", b"old news".to_vec()).await;
    assert_eq!(get(&b, &download_path(&a, &media_id), Some(&bob.access_token)).await.status, 200);
    let services = b.services();
    let fetched_at =
        services.store().remote_media(&a.server_name, &media_id).await.unwrap().unwrap().last_access_ts;
    // A read from the cache moves its last-access time (written in a batch).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(get(&b, &download_path(&a, &media_id), Some(&bob.access_token)).await.status, 200);
    services.flush_media_accesses().await.unwrap();
    let read_at =
        services.store().remote_media(&a.server_name, &media_id).await.unwrap().unwrap().last_access_ts;
    assert!(read_at > fetched_at, "{read_at} > {fetched_at}");
    const DAY: i64 = 24 * 3600 * 1000;
    // Read within the lifetime: kept.
    let outcome = services.apply_media_retention(read_at + DAY - 1).await.unwrap();
    assert_eq!(outcome.remote_deleted, 0);
    // Not read for longer: deleted, and fetched again on the next request.
    let outcome = services.apply_media_retention(read_at + DAY + 1).await.unwrap();
    assert_eq!(outcome.remote_deleted, 1);
    assert!(services.store().remote_media(&a.server_name, &media_id).await.unwrap().is_none());
    let again = get(&b, &download_path(&a, &media_id), Some(&bob.access_token)).await;
    assert_eq!(again.body, b"old news");
    assert_eq!(services.remote_media_fetched(), 2);
}

#[tokio::test]
async fn a_remote_avatar_is_checked_against_the_cached_copy() {
    let (_certs, a, b) =
        two_servers(json!({"allowed_avatar_mimetypes": ["image/png"], "max_avatar_size": "10K"})).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let picture = upload(&a, &alice, "image/png", "me.png", png(16, 16)).await;
    let text = upload(&a, &alice, "text/plain", "me.txt", b"not a picture".to_vec()).await;
    let avatar_path = format!("/_matrix/client/v3/profile/{}/avatar_url", bob.user_id);
    let mxc = |media_id: &str| format!("mxc://{}/{media_id}", a.server_name);
    // Not cached yet: refused, as Synapse refuses it.
    bob.client
        .put(&avatar_path, &json!({"avatar_url": mxc(&picture)}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    // Once fetched, its type and size decide.
    for media_id in [&picture, &text] {
        assert_eq!(get(&b, &download_path(&a, media_id), Some(&bob.access_token)).await.status, 200);
    }
    bob.client.put(&avatar_path, &json!({"avatar_url": mxc(&picture)})).await.expect(200);
    bob.client.put(&avatar_path, &json!({"avatar_url": mxc(&text)})).await.expect_error(403, "M_FORBIDDEN");
}
