//! Media with an S3 storage provider (Synapse's `s3_storage_provider` module shape) against
//! moto's S3 server: uploads are mirrored before the answer (`store_synchronous`), and a file
//! missing from the local store is fetched back from the bucket and served.

use myelin_test_support::moto::MotoServer;
use myelin_test_support::{TestServer, TestUser, http_client};
use serde_json::{Value, json};

const BUCKET: &str = "media";
const PREFIX: &str = "hs/";

async fn server_with_s3(moto: &MotoServer, bucket: &str) -> TestServer {
    TestServer::start_with(json!({
        "media_storage_providers": moto.provider_config(bucket, json!({"prefix": PREFIX})),
    }))
    .await
}

async fn upload(server: &TestServer, user: &TestUser, bytes: Vec<u8>) -> (u16, Value) {
    let response = http_client()
        .post(format!("{}/_matrix/media/v3/upload?filename=file.bin", server.base_url))
        .bearer_auth(&user.access_token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn download(server: &TestServer, user: &TestUser, media_id: &str) -> (u16, Vec<u8>) {
    let response = http_client()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}/{media_id}",
            server.base_url, server.server_name
        ))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

fn media_id_of(server: &TestServer, reply: &Value) -> String {
    let uri = reply["content_uri"].as_str().expect("content_uri");
    uri.strip_prefix(&format!("mxc://{}/", server.server_name)).expect("a local mxc URI").to_owned()
}

fn rel_path(media_id: &str) -> String {
    format!("local_content/{}/{}/{}", &media_id[0..2], &media_id[2..4], &media_id[4..])
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect()
}

#[tokio::test]
async fn uploads_are_mirrored_to_s3_and_served_from_it_after_a_local_miss() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket(BUCKET).await;
    let server = server_with_s3(&moto, BUCKET).await;
    let alice = server.register("alice").await;

    // Multipart-sized (over 8 MiB) and small.
    for len in [9 * 1024 * 1024 + 17, 1000] {
        let bytes = patterned(len);
        let (status, reply) = upload(&server, &alice, bytes.clone()).await;
        assert_eq!(status, 200, "{reply}");
        let media_id = media_id_of(&server, &reply);
        let rel_path = rel_path(&media_id);
        // Mirrored before the answer, under the prefix and Synapse's relative path.
        assert!(moto.list_keys(BUCKET).await.contains(&format!("{PREFIX}{rel_path}")));

        let local = server.services().config.media.media_store_path.join(&rel_path);
        std::fs::remove_file(&local).unwrap();
        let (status, body) = download(&server, &alice, &media_id).await;
        assert_eq!(status, 200);
        assert!(body == bytes, "the download from S3 is byte-identical ({len} bytes)");
        // The file is back in the local store.
        assert!(std::fs::read(&local).unwrap() == bytes);
    }
}

#[tokio::test]
async fn media_missing_locally_and_in_s3_is_not_found() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket(BUCKET).await;
    let server = server_with_s3(&moto, BUCKET).await;
    let alice = server.register("alice").await;
    let (status, reply) = upload(&server, &alice, b"gone".to_vec()).await;
    assert_eq!(status, 200, "{reply}");
    let media_id = media_id_of(&server, &reply);
    let rel_path = rel_path(&media_id);
    std::fs::remove_file(server.services().config.media.media_store_path.join(&rel_path)).unwrap();
    let providers = &server.services().storage_providers;
    providers.delete(&rel_path).await.unwrap();

    let response = http_client()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}/{media_id}",
            server.base_url, server.server_name
        ))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["errcode"], "M_NOT_FOUND", "{json}");
}

#[tokio::test]
async fn a_failed_synchronous_mirror_fails_the_upload_and_keeps_nothing() {
    let Some(moto) = MotoServer::start() else { return };
    // No bucket: every upload to S3 fails.
    let server = server_with_s3(&moto, "no-such-bucket").await;
    let alice = server.register("alice").await;
    let (status, reply) = upload(&server, &alice, b"not mirrored".to_vec()).await;
    assert_eq!(status, 500, "{reply}");
    assert_eq!(reply["errcode"], "M_UNKNOWN", "{reply}");
    let local_content = server.services().config.media.media_store_path.join("local_content");
    let leftover: Vec<_> = walk(&local_content);
    assert!(leftover.is_empty(), "{leftover:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
