//! The admin API's media routes: quarantine (one media, a room's, a user's) and release,
//! protection, information, deletion (one, by age and size, a user's), listings (a room's, a
//! user's), the remote cache purge and the per-user statistics; every route refused to
//! non-admins, malformed and unknown IDs refused clearly.

use myelin_test_support::{TestServer, TestUser, http_client};
use serde_json::{Value, json};

use crate::rooms::create_room;

const UPLOAD: &str = "/_matrix/media/v3/upload";
const DOWNLOAD: &str = "/_matrix/client/v1/media/download";

pub(crate) async fn upload(server: &TestServer, user: &TestUser, bytes: &[u8]) -> String {
    let response = http_client()
        .post(format!("{}{UPLOAD}?filename=a.txt", server.base_url))
        .bearer_auth(&user.access_token)
        .header("content-type", "text/plain")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(response.status().as_u16(), 200);
    let json: Value = response.json().await.expect("JSON");
    let uri = json["content_uri"].as_str().expect("content_uri");
    uri.strip_prefix(&format!("mxc://{}/", server.server_name)).expect("a local mxc").to_owned()
}

async fn download_status(server: &TestServer, user: &TestUser, media_id: &str) -> u16 {
    http_client()
        .get(format!("{}{DOWNLOAD}/{}/{media_id}", server.base_url, server.server_name))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("request reaches the server")
        .status()
        .as_u16()
}

#[tokio::test]
async fn quarantined_media_is_not_downloadable_until_released() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let hs = server.server_name.clone();
    let one = upload(&server, &alice, b"one").await;
    let two = upload(&server, &alice, b"two").await;
    let three = upload(&server, &alice, b"three").await;
    assert_eq!(download_status(&server, &alice, &one).await, 200);

    // One media.
    let path = format!("/_synapse/admin/v1/media/quarantine/{hs}/{one}");
    alice.client.post(&path, &json!({})).await.expect_error(403, "M_FORBIDDEN");
    assert_eq!(admin.client.post(&path, &json!({})).await.expect(200), &json!({}));
    assert_eq!(download_status(&server, &alice, &one).await, 404);
    let info = admin.client.get(&format!("/_synapse/admin/v1/media/{hs}/{one}")).await;
    let info = info.expect(200)["media_info"].clone();
    assert_eq!(info["quarantined_by"], admin.user_id.as_str());
    assert_eq!(info["media_id"], one.as_str());
    assert_eq!(info["media_length"], 3);
    assert_eq!(info["media_type"], "text/plain");
    assert_eq!(info["upload_name"], "a.txt");
    assert_eq!(info["user_id"], alice.user_id.as_str());
    assert!(info["created_ts"].is_i64() && info["safe_from_quarantine"] == false, "{info}");
    admin
        .client
        .post(&format!("/_synapse/admin/v1/media/unquarantine/{hs}/{one}"), &json!({}))
        .await
        .expect(200);
    assert_eq!(download_status(&server, &alice, &one).await, 200);

    // Protected media is not quarantined.
    admin.client.post(&format!("/_synapse/admin/v1/media/protect/{two}"), &json!({})).await.expect(200);
    admin
        .client
        .post(&format!("/_synapse/admin/v1/media/quarantine/{hs}/{two}"), &json!({}))
        .await
        .expect(200);
    assert_eq!(download_status(&server, &alice, &two).await, 200);
    admin.client.post(&format!("/_synapse/admin/v1/media/unprotect/{two}"), &json!({})).await.expect(200);

    // A user's media.
    let by_user = admin
        .client
        .post(&format!("/_synapse/admin/v1/user/{}/media/quarantine", alice.user_id), &json!({}))
        .await;
    assert_eq!(by_user.expect(200)["num_quarantined"], 3);
    for media in [&one, &two, &three] {
        assert_eq!(download_status(&server, &alice, media).await, 404);
    }
    for media in [&one, &two, &three] {
        admin
            .client
            .post(&format!("/_synapse/admin/v1/media/unquarantine/{hs}/{media}"), &json!({}))
            .await
            .expect(200);
    }

    // A room's media.
    let room = create_room(&alice, json!({})).await;
    alice
        .client
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
            &json!({"msgtype": "m.file", "body": "f", "url": format!("mxc://{hs}/{three}")}),
        )
        .await
        .expect(200);
    let listed = admin.client.get(&format!("/_synapse/admin/v1/room/{room}/media")).await;
    assert_eq!(listed.expect(200), &json!({"local": [format!("mxc://{hs}/{three}")], "remote": []}));
    let by_room =
        admin.client.post(&format!("/_synapse/admin/v1/room/{room}/media/quarantine"), &json!({})).await;
    assert_eq!(by_room.expect(200)["num_quarantined"], 1);
    assert_eq!(download_status(&server, &alice, &three).await, 404);
    assert_eq!(download_status(&server, &alice, &one).await, 200);

    // Bad input.
    admin
        .client
        .post(&format!("/_synapse/admin/v1/media/quarantine/{hs}/bad%20id"), &json!({}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    admin
        .client
        .post(&format!("/_synapse/admin/v1/media/quarantine/{hs}/unknown"), &json!({}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .post("/_synapse/admin/v1/media/quarantine/other.example/abc", &json!({}))
        .await
        // Another server's media is quarantined in the remote media cache: not cached here.
        .expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .post("/_synapse/admin/v1/media/protect/unknown", &json!({}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .get(&format!("/_synapse/admin/v1/media/{hs}/unknown"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .post("/_synapse/admin/v1/room/not-a-room/media/quarantine", &json!({}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    admin
        .client
        .get(&format!("/_synapse/admin/v1/room/!unknown:{hs}/media"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    alice.client.get(&format!("/_synapse/admin/v1/room/{room}/media")).await.expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .post(&format!("/_synapse/admin/v1/media/protect/{one}"), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn admins_list_and_delete_media_by_user_id_and_age() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let hs = server.server_name.clone();
    let mut alice_media = Vec::new();
    for body in [&b"first"[..], b"second", b"third"] {
        alice_media.push(upload(&server, &alice, body).await);
    }
    let bobs = upload(&server, &bob, b"bob's own bytes").await;
    let media_of = |user: &str, query: &str| format!("/_synapse/admin/v1/users/{user}/media{query}");

    // Listing, with pages and both directions.
    let list = admin.client.get(&media_of(&alice.user_id, "")).await;
    let list = list.expect(200);
    assert_eq!(list["total"], 3);
    let ids: Vec<&str> =
        list["media"].as_array().unwrap().iter().map(|m| m["media_id"].as_str().unwrap()).collect();
    assert_eq!(ids, alice_media.iter().map(String::as_str).collect::<Vec<_>>());
    for field in ["media_id", "media_type", "upload_name"] {
        assert!(list["media"][0][field].is_string(), "{field}: {list}");
    }
    for field in ["media_length", "created_ts"] {
        assert!(list["media"][0][field].is_i64(), "{field}: {list}");
    }
    assert!(list["media"][0]["safe_from_quarantine"].is_boolean());
    let page = admin.client.get(&media_of(&alice.user_id, "?limit=2")).await;
    assert_eq!(page.expect(200)["next_token"], 2);
    let newest = admin.client.get(&media_of(&alice.user_id, "?dir=b&limit=1")).await;
    assert_eq!(newest.expect(200)["media"][0]["media_id"], alice_media[2].as_str());
    for query in ["?from=-1", "?limit=x", "?order_by=bogus", "?dir=up"] {
        admin.client.get(&media_of(&alice.user_id, query)).await.expect_error(400, "M_INVALID_PARAM");
    }
    admin.client.get(&media_of(&format!("@nobody:{hs}"), "")).await.expect_error(404, "M_NOT_FOUND");
    admin.client.get(&media_of("nobody", "")).await.expect_error(400, "M_INVALID_PARAM");
    bob.client.get(&media_of(&alice.user_id, "")).await.expect_error(403, "M_FORBIDDEN");

    // Statistics per user.
    let stats =
        admin.client.get("/_synapse/admin/v1/statistics/users/media?order_by=media_count&dir=b").await;
    let stats = stats.expect(200);
    assert_eq!(stats["total"], 2);
    assert_eq!(stats["users"][0]["user_id"], alice.user_id.as_str());
    assert_eq!(stats["users"][0]["media_count"], 3);
    assert_eq!(stats["users"][0]["media_length"], 5 + 6 + 5);
    assert_eq!(stats["users"][0]["displayname"], "alice");
    let search = admin.client.get("/_synapse/admin/v1/statistics/users/media?search_term=bob").await;
    assert_eq!(search.expect(200)["users"][0]["media_count"], 1);
    for query in ["?order_by=size", "?from=-2", "?dir=x", "?search_term=", "?from_ts=10&until_ts=5"] {
        let path = format!("/_synapse/admin/v1/statistics/users/media{query}");
        admin.client.get(&path).await.expect_error(400, "M_INVALID_PARAM");
    }
    bob.client.get("/_synapse/admin/v1/statistics/users/media").await.expect_error(403, "M_FORBIDDEN");

    // Delete one.
    let one = admin.client.delete(&format!("/_synapse/admin/v1/media/{hs}/{}", alice_media[0])).await;
    assert_eq!(one.expect(200), &json!({"deleted_media": [alice_media[0]], "total": 1}));
    assert_eq!(download_status(&server, &alice, &alice_media[0]).await, 404);
    admin
        .client
        .delete(&format!("/_synapse/admin/v1/media/{hs}/{}", alice_media[0]))
        .await
        .expect_error(404, "M_NOT_FOUND");
    admin
        .client
        .delete("/_synapse/admin/v1/media/elsewhere.example/abc")
        .await
        .expect_error(400, "M_INVALID_PARAM");

    // Delete by age and size: bob's (15 bytes) only is larger than 10.
    let future = myelin_service::util::now_ms() + 60_000;
    let by_age = admin
        .client
        .post(&format!("/_synapse/admin/v1/media/delete?before_ts={future}&size_gt=10"), &json!({}))
        .await;
    assert_eq!(by_age.expect(200), &json!({"deleted_media": [bobs], "total": 1}));
    assert_eq!(download_status(&server, &bob, &bobs).await, 404);
    for query in ["", "?before_ts=-1", "?before_ts=1000", "?before_ts=abc"] {
        let response =
            admin.client.post(&format!("/_synapse/admin/v1/media/delete{query}"), &json!({})).await;
        assert_eq!(response.status, 400, "{query}: {:?}", response.json);
    }
    alice
        .client
        .post(&format!("/_synapse/admin/v1/media/delete?before_ts={future}"), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");

    // Delete a user's.
    let all = admin.client.delete(&media_of(&alice.user_id, "")).await;
    let all = all.expect(200);
    assert_eq!(all["total"], 2);
    assert_eq!(admin.client.get(&media_of(&alice.user_id, "")).await.expect(200)["total"], 0);

    // The remote media cache: nothing is cached here.
    let purge = admin
        .client
        .post(&format!("/_synapse/admin/v1/purge_media_cache?before_ts={future}"), &json!({}))
        .await;
    assert_eq!(purge.expect(200), &json!({"deleted": 0}));
    admin
        .client
        .post("/_synapse/admin/v1/purge_media_cache", &json!({}))
        .await
        .expect_error(400, "M_MISSING_PARAM");
    bob.client
        .post(&format!("/_synapse/admin/v1/purge_media_cache?before_ts={future}"), &json!({}))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}
