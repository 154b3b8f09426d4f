//! Reporting content (events, rooms, users) and the admin API's event reports.

use myelin_test_support::TestServer;
use serde_json::{Value, json};

use crate::relations::join;
use crate::rooms::{create_room, send_text};

#[tokio::test]
async fn event_reports_are_checked_stored_and_listed_for_admins() {
    let server = TestServer::start().await;
    let admin = server.register_admin("admin").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = create_room(
        &alice,
        json!({"preset": "public_chat", "name": "Reported room", "room_alias_name": "reported"}),
    )
    .await;
    join(&bob, &room_id).await;
    let dave = server.register("dave").await;
    join(&dave, &room_id).await;
    let offending = send_text(&bob, &room_id, "bad", "something offensive").await;
    let other = send_text(&bob, &room_id, "bad2", "something else").await;
    dave.client.post(&format!("/_matrix/client/v3/rooms/{room_id}/leave"), &json!({})).await.expect(200);
    let report_path = |event_id: &str| format!("/_matrix/client/v3/rooms/{room_id}/report/{event_id}");

    let reported =
        alice.client.post(&report_path(&offending), &json!({"reason": "offensive", "score": -100})).await;
    assert_eq!(reported.expect(200), &json!({}));
    // Reason and score are optional.
    alice.client.post(&report_path(&other), &json!({})).await.expect(200);

    // Refusals: a bad score, an unknown event, an event of another room, a non-member.
    let bad = |score: Value| json!({"reason": "x", "score": score});
    alice
        .client
        .post(&report_path(&offending), &bad(json!("high")))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    alice.client.post(&report_path(&offending), &bad(json!(50))).await.expect_error(400, "M_INVALID_PARAM");
    alice.client.post(&report_path(&offending), &bad(json!(-1.5))).await.expect_error(400, "M_INVALID_PARAM");
    alice.client.post(&report_path(&offending), &json!({"reason": 5})).await.expect_error(400, "M_BAD_JSON");
    alice
        .client
        .post(&report_path("$unknown"), &json!({"reason": "x"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    let elsewhere = create_room(&alice, json!({})).await;
    let foreign = send_text(&alice, &elsewhere, "f", "in another room").await;
    alice.client.post(&report_path(&foreign), &json!({"reason": "x"})).await.expect_error(404, "M_NOT_FOUND");
    carol
        .client
        .post(&report_path(&offending), &json!({"reason": "x"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    // Dave saw the event while he was joined, but the spec wants reporters joined now.
    let seen = dave
        .client
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{offending}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        (seen["event_id"].as_str(), seen["room_id"].as_str()),
        (Some(offending.as_str()), Some(room_id.as_str())),
        "{seen}"
    );
    dave.client
        .post(&report_path(&offending), &json!({"reason": "x"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    // Room and user reports are not event reports.
    carol
        .client
        .post(&format!("/_matrix/client/v3/rooms/{room_id}/report"), &json!({"reason": "r"}))
        .await
        .expect(200);
    carol
        .client
        .post(&format!("/_matrix/client/v3/users/{}/report", bob.user_id), &json!({"reason": "u"}))
        .await
        .expect(200);

    // The admin API: newest first by default.
    let list = admin.client.get("/_synapse/admin/v1/event_reports").await.expect(200).clone();
    assert_eq!(list["total"], 2);
    assert!(list.get("next_token").is_none());
    let reports = list["event_reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    let newest = &reports[0];
    assert_eq!(newest["event_id"], other.as_str());
    assert_eq!(newest["reason"], Value::Null);
    assert_eq!(newest["score"], Value::Null);
    let first = &reports[1];
    assert!(first["id"].is_i64() && first["received_ts"].is_i64(), "{first}");
    assert_eq!(first["room_id"], room_id.as_str());
    assert_eq!(first["name"], "Reported room");
    assert_eq!(first["canonical_alias"], "#reported:test.local");
    assert_eq!(first["event_id"], offending.as_str());
    assert_eq!(first["user_id"], alice.user_id.as_str());
    assert_eq!(first["sender"], bob.user_id.as_str());
    assert_eq!(first["reason"], "offensive");
    assert_eq!(first["score"], -100);
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "canonical_alias",
            "event_id",
            "id",
            "name",
            "reason",
            "received_ts",
            "room_id",
            "score",
            "sender",
            "user_id"
        ]
    );

    // Paging, direction and filters.
    let page = admin.client.get("/_synapse/admin/v1/event_reports?limit=1&dir=f").await.expect(200).clone();
    assert_eq!(page["event_reports"][0]["event_id"], offending.as_str());
    assert_eq!(page["next_token"], 1);
    let page2 =
        admin.client.get("/_synapse/admin/v1/event_reports?limit=1&dir=f&from=1").await.expect(200).clone();
    assert_eq!(page2["event_reports"][0]["event_id"], other.as_str());
    assert!(page2.get("next_token").is_none());
    let by_user =
        admin.client.get("/_synapse/admin/v1/event_reports?user_id=carol").await.expect(200).clone();
    assert_eq!(by_user["total"], 0);
    let by_user =
        admin.client.get("/_synapse/admin/v1/event_reports?user_id=alice").await.expect(200).clone();
    assert_eq!(by_user["total"], 2);
    let by_room = admin
        .client
        .get(&format!("/_synapse/admin/v1/event_reports?room_id={}", crate::rooms::urlencode(&room_id)))
        .await
        .expect(200)
        .clone();
    assert_eq!(by_room["total"], 2);
    let by_sender = format!("/_synapse/admin/v1/event_reports?event_sender_user_id={}", bob.user_id);
    assert_eq!(admin.client.get(&by_sender).await.expect(200)["total"], 2);
    let by_sender = format!("/_synapse/admin/v1/event_reports?event_sender_user_id={}", alice.user_id);
    assert_eq!(admin.client.get(&by_sender).await.expect(200)["total"], 0);
    let no_room =
        admin.client.get("/_synapse/admin/v1/event_reports?room_id=%21nothing").await.expect(200).clone();
    assert_eq!(no_room, json!({"event_reports": [], "total": 0}));
    admin.client.get("/_synapse/admin/v1/event_reports?from=-1").await.expect_error(400, "M_INVALID_PARAM");
    admin.client.get("/_synapse/admin/v1/event_reports?limit=-1").await.expect_error(400, "M_INVALID_PARAM");
    admin.client.get("/_synapse/admin/v1/event_reports?dir=x").await.expect_error(400, "M_INVALID_PARAM");

    // One report, with the event.
    let id = first["id"].as_i64().unwrap();
    let one = admin.client.get(&format!("/_synapse/admin/v1/event_reports/{id}")).await.expect(200).clone();
    assert_eq!(one["reason"], "offensive");
    assert_eq!(one["event_json"]["type"], "m.room.message");
    assert_eq!(one["event_json"]["content"]["body"], "something offensive");
    assert_eq!(one["event_json"]["sender"], bob.user_id.as_str());
    admin.client.get("/_synapse/admin/v1/event_reports/999999").await.expect_error(404, "M_NOT_FOUND");
    admin.client.get("/_synapse/admin/v1/event_reports/abc").await.expect_error(400, "M_INVALID_PARAM");
    admin.client.get("/_synapse/admin/v1/event_reports/-3").await.expect_error(400, "M_INVALID_PARAM");
    alice.client.get("/_synapse/admin/v1/event_reports").await.expect_error(403, "M_FORBIDDEN");
    alice
        .client
        .get(&format!("/_synapse/admin/v1/event_reports/{id}"))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn room_and_user_reports() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(&alice, json!({"preset": "private_chat"})).await;

    // Rooms: no need to be joined; the room must exist.
    let room_report = format!("/_matrix/client/v3/rooms/{room_id}/report");
    bob.client.post(&room_report, &json!({"reason": "spam room"})).await.expect(200);
    bob.client
        .post("/_matrix/client/v3/rooms/!nothing:test.local/report", &json!({"reason": "x"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    bob.client.post(&room_report, &json!({})).await.expect_error(400, "M_BAD_JSON");

    // Users: local users must exist; those of other servers cannot be checked.
    let user_report = |user: &str| format!("/_matrix/client/v3/users/{user}/report");
    bob.client.post(&user_report(&alice.user_id), &json!({"reason": "rude"})).await.expect(200);
    bob.client.post(&user_report("@remote:elsewhere.example"), &json!({"reason": ""})).await.expect(200);
    bob.client
        .post(&user_report("@ghost:test.local"), &json!({"reason": "x"}))
        .await
        .expect_error(404, "M_NOT_FOUND");
    bob.client
        .post(&user_report("not-a-user"), &json!({"reason": "x"}))
        .await
        .expect_error(400, "M_INVALID_PARAM");
    bob.client.post(&user_report(&alice.user_id), &json!({})).await.expect_error(400, "M_BAD_JSON");
    let long = "x".repeat(1001);
    bob.client
        .post(&user_report(&alice.user_id), &json!({"reason": long}))
        .await
        .expect_error(400, "M_BAD_JSON");
    server.client().post(&room_report, &json!({"reason": "x"})).await.expect_error(401, "M_MISSING_TOKEN");

    // What was kept: (room, event, target user, reporter, reason).
    let stored = server.services().store().list_reports().await.unwrap();
    type Kept = (String, Option<String>, Option<String>, String, Option<String>);
    let mut kept: Vec<Kept> =
        stored.into_iter().map(|r| (r.room_id, r.event_id, r.target_user_id, r.user_id, r.reason)).collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            (String::new(), None, Some(alice.user_id.clone()), bob.user_id.clone(), Some("rude".to_owned())),
            (
                String::new(),
                None,
                Some("@remote:elsewhere.example".to_owned()),
                bob.user_id.clone(),
                Some(String::new())
            ),
            (room_id.clone(), None, None, bob.user_id.clone(), Some("spam room".to_owned())),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn reports_are_rate_limited() {
    let server = TestServer::start_with(json!({"rc_reports": {"per_second": 0.01, "burst_count": 2}})).await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({})).await;
    let path = format!("/_matrix/client/v3/rooms/{room_id}/report");
    alice.client.post(&path, &json!({"reason": "1"})).await.expect(200);
    alice.client.post(&path, &json!({"reason": "2"})).await.expect(200);
    let limited = alice.client.post(&path, &json!({"reason": "3"})).await;
    limited.expect_error(429, "M_LIMIT_EXCEEDED");
    assert!(limited.json["retry_after_ms"].is_u64(), "{}", limited.json);
    // Every kind of report shares the limit.
    alice
        .client
        .post(&format!("/_matrix/client/v3/users/{}/report", alice.user_id), &json!({"reason": "4"}))
        .await
        .expect_error(429, "M_LIMIT_EXCEEDED");
    server.stop().await;
}
