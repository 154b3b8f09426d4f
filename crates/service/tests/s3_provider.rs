//! The S3 storage provider against a real S3-speaking server (moto's server mode, started by
//! each test; skipped when moto is not installed unless `MYELIN_REQUIRE_S3=1`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use myelin_config::{
    ChecksumWhen, MediaStorageConfig, MediaStorageProvider, S3ProviderConfig, Secret, StorageBackend,
};
use myelin_service::s3_provider::{MediaOrigin, MediaStorageProviders, PART_SIZE, S3Error, S3Provider};
use myelin_test_support::moto::{MOTO_ACCESS_KEY_ID, MOTO_SECRET_ACCESS_KEY, MotoServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BUCKET: &str = "media";

fn config(endpoint: &str, prefix: &str) -> S3ProviderConfig {
    S3ProviderConfig {
        bucket: BUCKET.to_owned(),
        prefix: prefix.to_owned(),
        region_name: Some("us-east-1".to_owned()),
        endpoint_url: Some(endpoint.parse().unwrap()),
        access_key_id: Some(MOTO_ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(Secret::new(MOTO_SECRET_ACCESS_KEY)),
        session_token: None,
        sse_customer_key: None,
        storage_class: "STANDARD".to_owned(),
        threadpool_size: 4,
        request_checksum_calculation: ChecksumWhen::WhenRequired,
        response_checksum_validation: ChecksumWhen::WhenRequired,
    }
}

/// Deterministic, non-repeating test content.
fn content(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

async fn moto_with_bucket() -> Option<MotoServer> {
    let moto = MotoServer::start()?;
    moto.create_bucket(BUCKET).await;
    Some(moto)
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(read) => read.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn stored_files_fetch_back_byte_identical_small_and_multipart() {
    let Some(moto) = moto_with_bucket().await else { return };
    let provider = S3Provider::new(&config(&moto.endpoint, "")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // One PUT; then a multipart upload of three parts, the last a short one.
    for (name, len) in [("small", 100_000), ("large", 2 * PART_SIZE + 12_345)] {
        let data = content(len);
        let local = dir.path().join(name);
        std::fs::write(&local, &data).unwrap();
        let rel_path = format!("local_content/ab/cd/{name}");
        provider.store_file(&rel_path, &local).await.unwrap();

        let dest = dir.path().join("fetched").join(name);
        assert!(provider.fetch_to_file(&rel_path, &dest).await.unwrap());
        let fetched = std::fs::read(&dest).unwrap();
        assert_eq!(fetched.len(), data.len(), "{name}");
        assert!(fetched == data, "{name}: the fetched bytes differ");
    }
    let mut keys = moto.list_keys(BUCKET).await;
    keys.sort();
    assert_eq!(keys, ["local_content/ab/cd/large", "local_content/ab/cd/small"]);
    // Only the two fetched files, no temporary files, are left beside them.
    let mut fetched = entries(&dir.path().join("fetched"));
    fetched.sort();
    assert_eq!(fetched, ["large", "small"]);
}

#[tokio::test]
async fn a_missing_object_is_false_and_creates_nothing() {
    let Some(moto) = moto_with_bucket().await else { return };
    let provider = S3Provider::new(&config(&moto.endpoint, "")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("local_content/ab/cd/missing");
    assert!(!provider.fetch_to_file("local_content/ab/cd/missing", &dest).await.unwrap());
    assert!(!dest.exists());
    assert!(entries(&dir.path().join("local_content/ab/cd")).is_empty());
}

#[tokio::test]
async fn the_prefix_is_prepended_to_the_object_key() {
    let Some(moto) = moto_with_bucket().await else { return };
    let provider = S3Provider::new(&config(&moto.endpoint, "some/prefix/")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("file");
    std::fs::write(&local, b"prefixed").unwrap();
    provider.store_file("local_content/ab/cd/efgh", &local).await.unwrap();
    assert_eq!(moto.list_keys(BUCKET).await, ["some/prefix/local_content/ab/cd/efgh"]);
    // The object is found through the same prefix, and not without it.
    let dest = dir.path().join("back");
    assert!(provider.fetch_to_file("local_content/ab/cd/efgh", &dest).await.unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), b"prefixed");
    let unprefixed = S3Provider::new(&config(&moto.endpoint, "")).unwrap();
    assert!(!unprefixed.fetch_to_file("local_content/ab/cd/efgh", &dir.path().join("no")).await.unwrap());

    // As in the module, the prefix is prepended verbatim: without a trailing slash it runs
    // into the path.
    let glued = S3Provider::new(&config(&moto.endpoint, "pre")).unwrap();
    assert_eq!(glued.object_key("local_content/x"), "prelocal_content/x");
}

#[tokio::test]
async fn bad_credentials_are_a_clear_error() {
    let Some(moto) = MotoServer::start_checking_credentials() else { return };
    let provider = S3Provider::new(&config(&moto.endpoint, "")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("file");
    std::fs::write(&local, b"data").unwrap();

    let error = provider.store_file("local_content/ab/cd/efgh", &local).await.unwrap_err();
    assert!(matches!(error, S3Error::Credentials { operation: "upload", .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(message.contains("local_content/ab/cd/efgh") && message.contains("\"media\""), "{message}");
    // S3's own code for an unknown key id comes through.
    assert!(message.contains("InvalidAccessKeyId"), "{message}");

    // A download with bad credentials is an error, not "no such object".
    let dest = dir.path().join("dest");
    let error = provider.fetch_to_file("local_content/ab/cd/efgh", &dest).await.unwrap_err();
    assert!(matches!(error, S3Error::Credentials { operation: "download", .. }), "{error:?}");
    assert!(!dest.exists());
}

#[tokio::test]
async fn paths_that_cannot_name_an_object_are_refused() {
    let Some(moto) = moto_with_bucket().await else { return };
    let provider = S3Provider::new(&config(&moto.endpoint, "")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for bad in ["local_content/../../etc/passwd", "local_content//x"] {
        let error = provider.fetch_to_file(bad, &dir.path().join("x")).await.unwrap_err();
        assert!(matches!(error, S3Error::InvalidPath { .. }), "{bad}: {error:?}");
    }
}

/// A TCP proxy in front of `upstream` that passes each response on only up to `limit` bytes
/// and then closes the connection, as a network failure mid-download would.
async fn truncating_proxy(upstream: String, limit: usize) -> String {
    proxy(upstream, limit, Arc::default()).await
}

/// A TCP proxy in front of `upstream` that copies every request it passes on into `requests`
/// and passes each connection's responses on only up to `limit` bytes.
async fn proxy(upstream: String, limit: usize, requests: Arc<Mutex<Vec<u8>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let recorded = requests.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let requests = tokio::spawn(async move {
                    let mut buffer = vec![0u8; 16 * 1024];
                    while let Ok(n) = client_read.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        recorded.lock().unwrap().extend_from_slice(&buffer[..n]);
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut passed = 0;
                let mut buffer = vec![0u8; 16 * 1024];
                while passed < limit {
                    let Ok(n) = server_read.read(&mut buffer).await else { break };
                    if n == 0 {
                        break;
                    }
                    let n = n.min(limit - passed);
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                    passed += n;
                }
                requests.abort();
                let _ = client_write.shutdown().await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_download_interrupted_mid_stream_leaves_no_file() {
    let Some(moto) = moto_with_bucket().await else { return };
    let provider = S3Provider::new(&config(&moto.endpoint, "")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("file");
    std::fs::write(&local, content(1024 * 1024)).unwrap();
    provider.store_file("local_content/ab/cd/efgh", &local).await.unwrap();

    // Headers and the first part of the body get through, then every connection drops
    // (including the retries that resume the download).
    let proxy = truncating_proxy(moto.endpoint.clone(), 64 * 1024).await;
    let interrupted = S3Provider::new(&config(&proxy, "")).unwrap();
    let dest_dir = dir.path().join("local_content/ab/cd");
    let dest = dest_dir.join("efgh");
    let error = interrupted.fetch_to_file("local_content/ab/cd/efgh", &dest).await.unwrap_err();
    assert!(matches!(error, S3Error::Request { operation: "download", .. }), "{error:?}");
    assert!(!dest.exists(), "a partial download was left at the destination");
    assert!(entries(&dest_dir).is_empty(), "left behind: {:?}", entries(&dest_dir));

    // The same download through a healthy connection completes.
    assert!(provider.fetch_to_file("local_content/ab/cd/efgh", &dest).await.unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), content(1024 * 1024));
}

#[tokio::test]
async fn deleting_removes_the_object_and_a_missing_one_is_fine() {
    let Some(moto) = moto_with_bucket().await else { return };
    let provider = S3Provider::new(&config(&moto.endpoint, "p/")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("file");
    std::fs::write(&local, b"bye").unwrap();
    provider.store_file("local_content/ab/cd/efgh", &local).await.unwrap();
    provider.delete("local_content/ab/cd/efgh").await.unwrap();
    assert!(moto.list_keys(BUCKET).await.is_empty());
    provider.delete("local_content/ab/cd/efgh").await.unwrap();
}

#[tokio::test]
async fn providers_follow_store_local_store_remote_and_fetch_on_a_local_miss() {
    let Some(moto) = moto_with_bucket().await else { return };
    let entry = |store_local: bool, store_remote: bool, prefix: &str| MediaStorageProvider {
        store_local,
        store_remote,
        store_synchronous: true,
        backend: StorageBackend::S3(config(&moto.endpoint, prefix)),
    };
    let providers = MediaStorageProviders::new(&MediaStorageConfig {
        providers: vec![entry(true, false, "local-only/"), entry(false, true, "remote-only/")],
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("file");
    std::fs::write(&local, b"mirrored").unwrap();
    providers.store_file("local_content/ab/cd/efgh", &local, MediaOrigin::Local).await.unwrap();
    providers.store_file("remote_content/x/ab/cd/ij", &local, MediaOrigin::Remote).await.unwrap();
    let mut keys = moto.list_keys(BUCKET).await;
    keys.sort();
    assert_eq!(keys, ["local-only/local_content/ab/cd/efgh", "remote-only/remote_content/x/ab/cd/ij"]);

    // The second provider has what the first does not.
    let dest = dir.path().join("store/remote_content/x/ab/cd/ij");
    assert!(providers.fetch_to_file("remote_content/x/ab/cd/ij", &dest).await.unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), b"mirrored");
    assert!(!providers.fetch_to_file("local_content/no/ne/x", &dir.path().join("none")).await.unwrap());

    // Deleting reaches every provider.
    providers.delete("remote_content/x/ab/cd/ij").await.unwrap();
    assert_eq!(moto.list_keys(BUCKET).await, ["local-only/local_content/ab/cd/efgh"]);
}

#[tokio::test]
async fn a_customer_key_encrypts_uploads_and_is_sent_with_downloads() {
    let Some(moto) = moto_with_bucket().await else { return };
    let with_key_at = |endpoint: &str| S3ProviderConfig {
        sse_customer_key: Some(Secret::new("0123456789abcdef0123456789abcdef")),
        ..config(endpoint, "")
    };
    let provider = S3Provider::new(&with_key_at(&moto.endpoint)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("file");
    std::fs::write(&local, b"secret media").unwrap();
    provider.store_file("local_content/ab/cd/efgh", &local).await.unwrap();
    let dest = dir.path().join("back");
    assert!(provider.fetch_to_file("local_content/ab/cd/efgh", &dest).await.unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), b"secret media");

    // moto does not insist on the key when reading back, so the requests themselves are
    // checked: the upload and the download each carry the key, base64-encoded as S3 takes it.
    let requests = Arc::new(Mutex::new(Vec::new()));
    let proxied = proxy(moto.endpoint.clone(), usize::MAX, requests.clone()).await;
    let provider = S3Provider::new(&with_key_at(&proxied)).unwrap();
    provider.store_file("local_content/ab/cd/ijkl", &local).await.unwrap();
    assert!(provider.fetch_to_file("local_content/ab/cd/ijkl", &dir.path().join("again")).await.unwrap());
    let sent = String::from_utf8_lossy(&requests.lock().unwrap()).to_ascii_lowercase();
    let key_header =
        "x-amz-server-side-encryption-customer-key: mdeymzq1njc4owfiy2rlzjaxmjm0nty3odlhymnkzwy=";
    assert_eq!(sent.matches(key_header).count(), 2, "{sent}");
    assert_eq!(sent.matches("x-amz-server-side-encryption-customer-algorithm: aes256").count(), 2);
    // No session token was configured, so none is sent (not even an empty one).
    assert!(!sent.contains("x-amz-security-token"), "{sent}");
}

#[tokio::test]
async fn a_session_token_goes_with_its_keys() {
    let Some(moto) = moto_with_bucket().await else { return };
    let requests = Arc::new(Mutex::new(Vec::new()));
    let proxied = proxy(moto.endpoint.clone(), usize::MAX, requests.clone()).await;
    let provider = S3Provider::new(&S3ProviderConfig {
        session_token: Some(Secret::new("session-token-123")),
        ..config(&proxied, "")
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("file");
    std::fs::write(&local, b"data").unwrap();
    provider.store_file("local_content/ab/cd/efgh", &local).await.unwrap();
    let sent = String::from_utf8_lossy(&requests.lock().unwrap()).to_ascii_lowercase();
    assert!(sent.contains("x-amz-security-token: session-token-123"), "{sent}");
}
