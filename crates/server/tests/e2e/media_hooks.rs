//! Avatars, retention and the admin's media hooks: `max_avatar_size` and
//! `allowed_avatar_mimetypes` on profile and member-event avatars (an Element-style flow),
//! quarantine, protection, deletion and listing through the service, and `media_retention`.

use myelin_service::media::admin::OldMediaFilter;
use myelin_service::media::{MediaId, local_content_path, local_thumbnail_dir};
use myelin_service::util::now_ms;
use myelin_test_support::{TestServer, TestUser, http_client};
use ruma::UserId;
use serde_json::{Value, json};

const UPLOAD: &str = "/_matrix/media/v3/upload";
const DOWNLOAD: &str = "/_matrix/client/v1/media/download";

/// A 1x1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00,
    0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05,
    0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42,
    0x60, 0x82,
];

/// Uploads and returns the media ID.
async fn upload(server: &TestServer, user: &TestUser, content_type: &str, bytes: Vec<u8>) -> String {
    let response = http_client()
        .post(format!("{}{UPLOAD}", server.base_url))
        .bearer_auth(&user.access_token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(response.status().as_u16(), 200);
    let json: Value = response.json().await.expect("JSON");
    let uri = json["content_uri"].as_str().expect("content_uri");
    uri.strip_prefix(&format!("mxc://{}/", server.server_name)).expect("a local mxc").to_owned()
}

/// Downloads: the status and, on an error, the `errcode`.
async fn download(server: &TestServer, user: &TestUser, media_id: &str) -> (u16, Option<String>) {
    let response = http_client()
        .get(format!("{}{DOWNLOAD}/{}/{media_id}", server.base_url, server.server_name))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("request reaches the server");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    let errcode = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|json| json["errcode"].as_str().map(str::to_owned));
    if status != 200 {
        assert!(serde_json::from_slice::<Value>(&body).is_ok_and(|json| json["error"].is_string()));
    }
    (status, errcode)
}

fn mxc(server: &TestServer, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", server.server_name)
}

fn content_file(server: &TestServer, file_id: &str) -> std::path::PathBuf {
    server.services().media_file_path(&local_content_path(&MediaId::parse(file_id).unwrap()))
}

async fn member_avatar(user: &TestUser, room_id: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{}", user.user_id);
    user.client.get(&path).await.expect(200)["avatar_url"].clone()
}

#[tokio::test]
async fn element_style_avatar_flow_and_avatar_rules() {
    let server = TestServer::start_with(json!({
        "max_avatar_size": 1000,
        "allowed_avatar_mimetypes": ["image/png", "image/jpeg"],
    }))
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = alice
        .client
        .post("/_matrix/client/v3/createRoom", &json!({ "preset": "public_chat" }))
        .await
        .expect(200)["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let room2 = alice.client.post("/_matrix/client/v3/createRoom", &json!({})).await.expect(200)["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);

    // Upload a PNG and make it the avatar: profile and member events in every room follow.
    let avatar = mxc(&server, &upload(&server, &alice, "image/png", PNG.to_vec()).await);
    let avatar_path = format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id);
    alice.client.put(&avatar_path, &json!({ "avatar_url": avatar })).await.expect(200);
    let profile = bob.client.get(&format!("/_matrix/client/v3/profile/{}", alice.user_id)).await;
    assert_eq!(profile.expect(200)["avatar_url"], avatar);
    assert_eq!(member_avatar(&alice, &room_id).await, avatar);
    assert_eq!(member_avatar(&alice, &room2).await, avatar);
    assert_eq!(member_avatar(&bob, &room_id).await, Value::Null);

    // Too large, wrong type, unknown, remote, not an mxc: 403 M_FORBIDDEN, nothing changes.
    let too_large = mxc(&server, &upload(&server, &alice, "image/png", [PNG, &[0u8; 1000]].concat()).await);
    let wrong_type = mxc(&server, &upload(&server, &alice, "text/html", b"<b>hi</b>".to_vec()).await);
    let unknown = mxc(&server, "AAAAAAAAAAAAAAAAAAAAAAAA");
    for refused in [&too_large, &wrong_type, &unknown, "mxc://elsewhere.example/abcdef", "mxc://nothing"] {
        alice
            .client
            .put(&avatar_path, &json!({ "avatar_url": refused }))
            .await
            .expect_error(403, "M_FORBIDDEN");
    }
    assert_eq!(alice.client.get(&avatar_path).await.expect(200)["avatar_url"], avatar);
    assert_eq!(member_avatar(&alice, &room_id).await, avatar);

    // A member event's own avatar follows the same rules, whichever route sends it.
    let member_path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{}", alice.user_id);
    for refused in [&too_large, &wrong_type] {
        alice
            .client
            .put(&member_path, &json!({ "membership": "join", "avatar_url": refused }))
            .await
            .expect_error(403, "M_FORBIDDEN");
    }
    alice
        .client
        .put(&member_path, &json!({ "membership": "join", "avatar_url": avatar, "displayname": "A" }))
        .await
        .expect(200);
    assert_eq!(member_avatar(&alice, &room_id).await, avatar);

    // Removing the avatar is always allowed.
    alice.client.put(&avatar_path, &json!({ "avatar_url": "" })).await.expect(200);
    server.stop().await;
}

#[tokio::test]
async fn without_avatar_rules_any_avatar_is_accepted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let avatar_path = format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id);
    for avatar in ["mxc://elsewhere.example/abcdef", &mxc(&server, "AAAAAAAAAAAAAAAAAAAAAAAA")] {
        alice.client.put(&avatar_path, &json!({ "avatar_url": avatar })).await.expect(200);
    }
    server.stop().await;
}

#[tokio::test]
async fn quarantine_protection_listing_and_deletion() {
    let server = TestServer::start().await;
    let services = server.services();
    let admin = UserId::parse(format!("@admin:{}", server.server_name)).unwrap();
    let alice = server.register("alice").await;
    let alice_id = UserId::parse(alice.user_id.as_str()).unwrap();
    let one = upload(&server, &alice, "text/plain", b"one".to_vec()).await;
    let copy = upload(&server, &alice, "text/plain", b"one".to_vec()).await;
    let two = upload(&server, &alice, "text/plain", b"two".to_vec()).await;
    let one_id = MediaId::parse(&one).unwrap();
    let two_id = MediaId::parse(&two).unwrap();

    // Quarantine takes every record of the content; downloads are then 404 M_NOT_FOUND.
    assert_eq!(services.quarantine_local_media(&one_id, &admin).await.unwrap(), 2);
    assert_eq!(download(&server, &alice, &one).await, (404, Some("M_NOT_FOUND".to_owned())));
    assert_eq!(download(&server, &alice, &copy).await, (404, Some("M_NOT_FOUND".to_owned())));
    assert_eq!(download(&server, &alice, &two).await.0, 200);
    assert!(services.unquarantine_local_media(&one_id).await.unwrap());
    assert!(!services.unquarantine_local_media(&one_id).await.unwrap());
    assert_eq!(download(&server, &alice, &one).await.0, 200);

    // Protected media is never quarantined.
    assert!(services.set_local_media_protected(&two_id, true).await.unwrap());
    assert_eq!(services.quarantine_local_media(&two_id, &admin).await.unwrap(), 0);
    assert_eq!(services.quarantine_local_media_of_user(&alice_id, &admin).await.unwrap(), 1);
    assert_eq!(download(&server, &alice, &two).await.0, 200);
    assert_eq!(download(&server, &alice, &copy).await.0, 404);
    services.unquarantine_local_media(&MediaId::parse(&copy).unwrap()).await.unwrap();
    assert!(!services.set_local_media_protected(&MediaId::parse("NOPE").unwrap(), true).await.unwrap());

    // Listed by page, oldest first.
    let (page, total) = services.list_local_media_of_user(&alice_id, 0, 2).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(page.iter().map(|m| m.media_id.as_str()).collect::<Vec<_>>(), [one.as_str(), copy.as_str()]);
    let (page, _) = services.list_local_media_of_user(&alice_id, 2, 2).await.unwrap();
    assert_eq!(page.iter().map(|m| m.media_id.as_str()).collect::<Vec<_>>(), [two.as_str()]);

    // Deleting one record of shared content keeps the file for the other.
    let file = content_file(&server, &one);
    assert!(file.exists());
    assert_eq!(
        services.delete_local_media(std::slice::from_ref(&one)).await.unwrap(),
        std::slice::from_ref(&one)
    );
    assert_eq!(download(&server, &alice, &one).await, (404, Some("M_NOT_FOUND".to_owned())));
    assert!(file.exists());
    assert_eq!(download(&server, &alice, &copy).await.0, 200);
    assert!(services.delete_local_media(std::slice::from_ref(&one)).await.unwrap().is_empty());

    // Deleting a user's media takes the rest, files included.
    let mut deleted = services.delete_local_media_of_user(&alice_id).await.unwrap();
    deleted.sort();
    let mut expected = vec![copy.clone(), two.clone()];
    expected.sort();
    assert_eq!(deleted, expected);
    assert!(!file.exists());
    assert!(!content_file(&server, &two).exists());
    assert_eq!(download(&server, &alice, &copy).await.0, 404);
    assert_eq!(services.list_local_media_of_user(&alice_id, 0, 10).await.unwrap().1, 0);
    server.stop().await;
}

#[tokio::test]
async fn delete_old_media_by_time_size_and_avatar() {
    let server = TestServer::start().await;
    let services = server.services();
    let alice = server.register("alice").await;
    let small = upload(&server, &alice, "text/plain", b"small".to_vec()).await;
    let big = upload(&server, &alice, "text/plain", vec![b'x'; 2000]).await;
    let avatar = upload(&server, &alice, "image/png", PNG.to_vec()).await;
    let avatar_path = format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id);
    alice.client.put(&avatar_path, &json!({ "avatar_url": mxc(&server, &avatar) })).await.expect(200);
    let later = now_ms() as i64 + 60_000;
    let filter = |size_gt| OldMediaFilter {
        before_ts: later,
        size_gt,
        keep_profiles: true,
        delete_quarantined: false,
        delete_protected: false,
    };
    // Nothing is older than a time before the uploads.
    let before = OldMediaFilter { before_ts: 0, ..filter(0) };
    assert!(services.delete_old_local_media(before).await.unwrap().is_empty());
    assert_eq!(services.delete_old_local_media(filter(1000)).await.unwrap(), std::slice::from_ref(&big));
    assert_eq!(services.delete_old_local_media(filter(0)).await.unwrap(), std::slice::from_ref(&small));
    // The avatar is kept unless asked otherwise.
    let all = OldMediaFilter { keep_profiles: false, ..filter(0) };
    assert_eq!(services.delete_old_local_media(all).await.unwrap(), std::slice::from_ref(&avatar));
    for media_id in [&small, &big, &avatar] {
        assert!(!content_file(&server, media_id).exists(), "{media_id}");
    }
    server.stop().await;
}

#[tokio::test]
async fn retention_purges_unread_media_and_expired_reservations() {
    const LIFETIME: i64 = 86_400_000;
    let server = TestServer::start_with(json!({
        "media_retention": { "local_media_lifetime": "1d" },
        "unused_expiration_time": "1h",
    }))
    .await;
    let services = server.services();
    let admin = UserId::parse(format!("@admin:{}", server.server_name)).unwrap();
    let alice = server.register("alice").await;
    let alice_id = UserId::parse(alice.user_id.as_str()).unwrap();
    let unread = upload(&server, &alice, "text/plain", b"unread".to_vec()).await;
    let read = upload(&server, &alice, "text/plain", b"read".to_vec()).await;
    let quarantined = upload(&server, &alice, "text/plain", b"quarantined".to_vec()).await;
    let protected = upload(&server, &alice, "text/plain", b"protected".to_vec()).await;
    services.quarantine_local_media(&MediaId::parse(&quarantined).unwrap(), &admin).await.unwrap();
    services.set_local_media_protected(&MediaId::parse(&protected).unwrap(), true).await.unwrap();
    let pending = alice.client.post("/_matrix/media/v1/create", &json!({})).await.expect(200)["content_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    // A thumbnail of the unread media goes with it.
    let thumbnails = services.media_file_path(&local_thumbnail_dir(&MediaId::parse(&unread).unwrap()));
    std::fs::create_dir_all(&thumbnails).unwrap();
    std::fs::write(thumbnails.join("32-32-image-png-crop"), b"x").unwrap();

    let record = |media_id: String| {
        let alice_id = alice_id.clone();
        async move {
            let (media, _) = services.list_local_media_of_user(&alice_id, 0, 100).await.unwrap();
            media.into_iter().find(|m| m.media_id == media_id)
        }
    };
    let unread_created = record(unread.clone()).await.unwrap().created_ts;
    // Read `read` (downloads are recorded in batches) until its access time is past the
    // other uploads' (the clock has a millisecond's resolution).
    let read_at = loop {
        assert_eq!(download(&server, &alice, &read).await.0, 200);
        services.flush_media_accesses().await.unwrap();
        let accessed = record(read.clone()).await.unwrap().last_access_ts.expect("an access time");
        if accessed > unread_created {
            break accessed;
        }
    };

    // As of `read_at + lifetime`, only `unread` has not been read within the lifetime.
    let outcome = services.apply_media_retention(read_at + LIFETIME).await.unwrap();
    assert_eq!(outcome.local_deleted, std::slice::from_ref(&unread));
    assert_eq!(outcome.pending_expired, 1, "the reservation expired an hour after /create");
    assert!(!content_file(&server, &unread).exists());
    assert!(!thumbnails.exists());
    assert_eq!(download(&server, &alice, &unread).await, (404, Some("M_NOT_FOUND".to_owned())));
    assert_eq!(download(&server, &alice, &read).await.0, 200);
    let pending_id = pending.rsplit('/').next().unwrap().to_owned();
    assert!(record(pending_id).await.is_none());

    // Later still, `read` goes too; quarantined and protected media are the admin's to delete.
    services.flush_media_accesses().await.unwrap();
    let outcome = services.apply_media_retention(now_ms() as i64 + 2 * LIFETIME).await.unwrap();
    assert_eq!(outcome.local_deleted, std::slice::from_ref(&read));
    assert!(record(quarantined).await.is_some());
    assert!(record(protected.clone()).await.is_some());
    assert_eq!(download(&server, &alice, &protected).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn quarantining_a_room_quarantines_the_local_media_its_events_refer_to() {
    let server = TestServer::start().await;
    let services = server.services();
    let admin = UserId::parse(format!("@admin:{}", server.server_name)).unwrap();
    let alice = server.register("alice").await;
    let create = json!({ "preset": "public_chat" });
    let room_id = alice.client.post("/_matrix/client/v3/createRoom", &create).await.expect(200)["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_room = alice.client.post("/_matrix/client/v3/createRoom", &create).await.expect(200)["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut next = 0u32;
    let mut media = |bytes: &[u8]| {
        next += 1;
        let bytes = [bytes, next.to_string().as_bytes()].concat();
        upload(&server, &alice, "image/png", bytes)
    };
    let image = media(PNG).await;
    let thumbnail = media(PNG).await;
    let encrypted = media(b"ciphertext").await;
    let encrypted_thumbnail = media(b"ciphertext thumbnail").await;
    let room_avatar = media(PNG).await;
    let member_avatar = media(PNG).await;
    let elsewhere = media(PNG).await;
    let untouched = media(PNG).await;

    let send = |room: String, content: Value| {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{}", rand_txn());
        let client = &alice.client;
        async move {
            client.put(&path, &content).await.expect(200);
        }
    };
    send(
        room_id.clone(),
        json!({ "msgtype": "m.image", "body": "cat.png", "url": mxc(&server, &image),
                "info": { "thumbnail_url": mxc(&server, &thumbnail) } }),
    )
    .await;
    send(
        room_id.clone(),
        json!({ "msgtype": "m.file", "body": "secret",
                "file": { "url": mxc(&server, &encrypted), "v": "v2" },
                "info": { "thumbnail_file": { "url": mxc(&server, &encrypted_thumbnail) } } }),
    )
    .await;
    // Remote, malformed and not-mxc URLs are skipped.
    send(
        room_id.clone(),
        json!({ "msgtype": "m.image", "body": "x", "url": "mxc://elsewhere.example/abcdef",
                "info": { "thumbnail_url": "https://example.org/x.png" } }),
    )
    .await;
    send(room_id.clone(), json!({ "msgtype": "m.image", "body": "x", "url": mxc(&server, "../../etc") }))
        .await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.avatar/"),
            &json!({ "url": mxc(&server, &room_avatar) }),
        )
        .await
        .expect(200);
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{}", alice.user_id),
            &json!({ "membership": "join", "avatar_url": mxc(&server, &member_avatar) }),
        )
        .await
        .expect(200);
    send(other_room.clone(), json!({ "msgtype": "m.image", "body": "y", "url": mxc(&server, &elsewhere) }))
        .await;

    let room = ruma::RoomId::parse(&room_id).unwrap();
    assert_eq!(services.quarantine_local_media_in_room(&room, &admin).await.unwrap(), 6);
    for media_id in [&image, &thumbnail, &encrypted, &encrypted_thumbnail, &room_avatar, &member_avatar] {
        assert_eq!(download(&server, &alice, media_id).await, (404, Some("M_NOT_FOUND".to_owned())));
    }
    for media_id in [&elsewhere, &untouched] {
        assert_eq!(download(&server, &alice, media_id).await.0, 200);
    }
    // A room without media quarantines nothing.
    let empty = alice.client.post("/_matrix/client/v3/createRoom", &json!({})).await.expect(200)["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let empty = ruma::RoomId::parse(&empty).unwrap();
    assert_eq!(services.quarantine_local_media_in_room(&empty, &admin).await.unwrap(), 0);
    server.stop().await;
}

fn rand_txn() -> String {
    format!("t{}", rand::random::<u64>())
}
