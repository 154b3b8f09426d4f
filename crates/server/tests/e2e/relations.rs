//! Relations: `/relations` pagination and filters, `/threads`, and the bundled aggregations in
//! `unsigned.m.relations`.

use myelin_test_support::{TestServer, TestUser};
use serde_json::{Value, json};

use crate::rooms::{create_room, send_text};

/// Sends an event of any type; returns its ID.
pub async fn send(user: &TestUser, room_id: &str, kind: &str, content: Value) -> String {
    let txn = format!("txn{}", next_txn());
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/{kind}/{txn}");
    user.client.put(&path, &content).await.expect(200)["event_id"].as_str().expect("event_id").to_owned()
}

/// A transaction ID never used before in this test process.
fn next_txn() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn thread_reply(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": {"event_id": root}},
    })
}

fn edit(target: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    })
}

fn reference(target: &str) -> Value {
    json!({"msgtype": "m.text", "body": "see above", "m.relates_to": {"rel_type": "m.reference", "event_id": target}})
}

fn reaction(target: &str, key: &str) -> Value {
    json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}})
}

pub async fn join(user: &TestUser, room_id: &str) {
    user.client.post(&format!("/_matrix/client/v3/rooms/{room_id}/join"), &json!({})).await.expect(200);
}

fn ids(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .expect("chunk is a list")
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn get(user: &TestUser, path: &str) -> Value {
    user.client.get(path).await.expect(200).clone()
}

#[tokio::test]
async fn relations_paginate_both_ways_and_filter_by_type() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({})).await;
    let root = send_text(&alice, &room_id, "root", "root").await;
    let t1 = send(&alice, &room_id, "m.room.message", thread_reply(&root, "one")).await;
    let a1 = send(&alice, &room_id, "m.reaction", reaction(&root, "👍")).await;
    let t2 = send(&alice, &room_id, "m.room.message", thread_reply(&root, "two")).await;
    // Unrelated traffic is not a child.
    send_text(&alice, &room_id, "other", "unrelated").await;
    let base = format!("/_matrix/client/v1/rooms/{room_id}/relations/{root}");

    let all = get(&alice, &base).await;
    assert_eq!(ids(&all["chunk"]), [t2.as_str(), a1.as_str(), t1.as_str()], "newest first by default");
    assert!(all.get("next_batch").is_none() && all.get("prev_batch").is_none(), "{all}");
    assert!(all.get("recursion_depth").is_none(), "only when recurse is given");
    assert_eq!(all["chunk"][0]["content"]["body"], "two");
    assert_eq!(all["chunk"][0]["room_id"], room_id.as_str());

    // Backwards in pages of two.
    let page1 = get(&alice, &format!("{base}?limit=2")).await;
    assert_eq!(ids(&page1["chunk"]), [t2.as_str(), a1.as_str()]);
    let next = page1["next_batch"].as_str().expect("more to come").to_owned();
    let page2 = get(&alice, &format!("{base}?limit=2&from={next}")).await;
    assert_eq!(ids(&page2["chunk"]), [t1.as_str()]);
    assert!(page2.get("next_batch").is_none(), "the end: {page2}");
    assert_eq!(page2["prev_batch"], next.as_str(), "prev_batch is the from token");

    // Forwards, one at a time.
    let forward1 = get(&alice, &format!("{base}?dir=f&limit=1")).await;
    assert_eq!(ids(&forward1["chunk"]), [t1.as_str()]);
    let next = forward1["next_batch"].as_str().unwrap().to_owned();
    let forward2 = get(&alice, &format!("{base}?dir=f&limit=1&from={next}")).await;
    assert_eq!(ids(&forward2["chunk"]), [a1.as_str()]);
    let everything_forward = get(&alice, &format!("{base}?dir=f")).await;
    assert_eq!(ids(&everything_forward["chunk"]), [t1.as_str(), a1.as_str(), t2.as_str()]);

    // `to` stops the page: backwards from the newest down to the first page's end.
    let first = get(&alice, &format!("{base}?limit=1")).await;
    let end_of_first = first["next_batch"].as_str().unwrap().to_owned();
    let bounded = get(&alice, &format!("{base}?to={end_of_first}")).await;
    assert_eq!(ids(&bounded["chunk"]), [t2.as_str()]);

    // By relation type, then also by event type.
    assert_eq!(ids(&get(&alice, &format!("{base}/m.thread")).await["chunk"]), [t2.as_str(), t1.as_str()]);
    assert_eq!(
        ids(&get(&alice, &format!("{base}/m.thread/m.room.message")).await["chunk"]),
        [t2.as_str(), t1.as_str()]
    );
    assert_eq!(ids(&get(&alice, &format!("{base}/m.annotation/m.reaction")).await["chunk"]), [a1.as_str()]);
    assert!(ids(&get(&alice, &format!("{base}/m.thread/m.reaction")).await["chunk"]).is_empty());
    assert!(ids(&get(&alice, &format!("{base}/m.replace")).await["chunk"]).is_empty());

    // Errors.
    let unknown = format!("/_matrix/client/v1/rooms/{room_id}/relations/$nothing-here");
    alice.client.get(&unknown).await.expect_error(404, "M_NOT_FOUND");
    alice.client.get(&format!("{base}?dir=sideways")).await.expect_error(400, "M_INVALID_PARAM");
    alice.client.get(&format!("{base}?from=garbage")).await.expect_error(400, "M_INVALID_PARAM");
    alice.client.get(&format!("{base}?limit=-1")).await.expect_error(400, "M_INVALID_PARAM");
    alice.client.get(&format!("{base}?recurse=maybe")).await.expect_error(400, "M_INVALID_PARAM");
    server.client().get(&base).await.expect_error(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn relations_hide_what_the_requester_cannot_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = create_room(
        &alice,
        json!({
            "preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}],
        }),
    )
    .await;
    // Before bob joins: the parent is invisible to him, so the whole request is 404.
    let early = send_text(&alice, &room_id, "early", "before bob").await;
    join(&bob, &room_id).await;
    send(&alice, &room_id, "m.room.message", reference(&early)).await;
    let early_path = format!("/_matrix/client/v1/rooms/{room_id}/relations/{early}");
    bob.client.get(&early_path).await.expect_error(404, "M_NOT_FOUND");
    assert_eq!(get(&alice, &early_path).await["chunk"].as_array().unwrap().len(), 1);

    // While joined bob sees the parent and the children sent then, not those after he left.
    let root = send_text(&alice, &room_id, "root", "while bob is here").await;
    let seen = send(&alice, &room_id, "m.room.message", reference(&root)).await;
    bob.client.post(&format!("/_matrix/client/v3/rooms/{room_id}/leave"), &json!({})).await.expect(200);
    let unseen = send(&alice, &room_id, "m.room.message", reference(&root)).await;
    let path = format!("/_matrix/client/v1/rooms/{room_id}/relations/{root}");
    assert_eq!(ids(&get(&bob, &path).await["chunk"]), [seen.as_str()]);
    assert_eq!(ids(&get(&alice, &path).await["chunk"]), [unseen.as_str(), seen.as_str()]);

    // A stranger to a private room gets 404, not 403.
    let carol = server.register("carol").await;
    let private = create_room(&alice, json!({"preset": "private_chat"})).await;
    let secret = send_text(&alice, &private, "s", "secret").await;
    carol
        .client
        .get(&format!("/_matrix/client/v1/rooms/{private}/relations/{secret}"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    // The parent must be in the room named in the path.
    alice
        .client
        .get(&format!("/_matrix/client/v1/rooms/{room_id}/relations/{secret}"))
        .await
        .expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn relations_recurse_three_levels_deep() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = create_room(&alice, json!({})).await;
    let root = send_text(&alice, &room_id, "root", "root").await;
    let level1 = send(&alice, &room_id, "m.room.message", reference(&root)).await;
    let level2 = send(&alice, &room_id, "m.room.message", reference(&level1)).await;
    let level3 = send(&alice, &room_id, "m.room.message", reference(&level2)).await;
    let level4 = send(&alice, &room_id, "m.room.message", reference(&level3)).await;
    let base = format!("/_matrix/client/v1/rooms/{room_id}/relations/{root}");

    let direct = get(&alice, &base).await;
    assert_eq!(ids(&direct["chunk"]), [level1.as_str()]);
    let recursive = get(&alice, &format!("{base}?recurse=true")).await;
    assert_eq!(ids(&recursive["chunk"]), [level3.as_str(), level2.as_str(), level1.as_str()]);
    assert!(!ids(&recursive["chunk"]).contains(&level4), "three levels, no more");
    assert_eq!(recursive["recursion_depth"], 3);
    let not_recursive = get(&alice, &format!("{base}?recurse=false")).await;
    assert_eq!(ids(&not_recursive["chunk"]), [level1.as_str()]);
    assert_eq!(not_recursive["recursion_depth"], 1);
    // Filters apply to every level; pagination works through the recursion too.
    let filtered =
        get(&alice, &format!("{base}/m.reference/m.room.message?recurse=true&dir=f&limit=2")).await;
    assert_eq!(ids(&filtered["chunk"]), [level1.as_str(), level2.as_str()]);
    let next = filtered["next_batch"].as_str().unwrap();
    let rest = get(&alice, &format!("{base}/m.reference?recurse=true&dir=f&from={next}")).await;
    assert_eq!(ids(&rest["chunk"]), [level3.as_str()]);
    assert!(ids(&get(&alice, &format!("{base}/m.thread?recurse=true")).await["chunk"]).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bundled_aggregations_carry_threads_edits_and_references() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;
    join(&carol, &room_id).await;
    let root = send_text(&alice, &room_id, "root", "original").await;
    send(&bob, &room_id, "m.room.message", thread_reply(&root, "bob in thread")).await;
    let latest_reply = send(&alice, &room_id, "m.room.message", thread_reply(&root, "alice in thread")).await;
    let reply_edit =
        send(&alice, &room_id, "m.room.message", edit(&latest_reply, "alice in thread, edited")).await;
    send(&alice, &room_id, "m.room.message", edit(&root, "first edit")).await;
    let last_edit = send(&alice, &room_id, "m.room.message", edit(&root, "second edit")).await;
    // Only the original sender's edits apply.
    send(&bob, &room_id, "m.room.message", edit(&root, "bob's edit")).await;
    let reference_id = send(&carol, &room_id, "m.room.message", reference(&root)).await;
    send(&carol, &room_id, "m.reaction", reaction(&root, "👍")).await;

    let event_path = format!("/_matrix/client/v3/rooms/{room_id}/event/{root}");
    let event = get(&alice, &event_path).await;
    assert_eq!(event["content"]["body"], "original", "edits are bundled, not applied");
    let relations = &event["unsigned"]["m.relations"];
    let keys: Vec<&String> = relations.as_object().expect("m.relations").keys().collect();
    assert_eq!(keys.len(), 3, "thread, edit, reference; annotations are not bundled: {relations}");

    let thread = &relations["m.thread"];
    assert_eq!(thread["count"], 2);
    assert_eq!(thread["current_user_participated"], true);
    let latest = &thread["latest_event"];
    assert_eq!(latest["event_id"], latest_reply.as_str());
    assert_eq!(latest["sender"], alice.user_id.as_str());
    assert_eq!(latest["content"]["body"], "alice in thread");
    assert_eq!(latest["unsigned"]["m.relations"]["m.replace"]["event_id"], reply_edit.as_str());
    assert_eq!(
        latest["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"],
        "alice in thread, edited"
    );

    let replace = &relations["m.replace"];
    assert_eq!(replace["event_id"], last_edit.as_str(), "the latest edit by the original sender");
    assert_eq!(replace["sender"], alice.user_id.as_str());
    assert_eq!(replace["content"]["m.new_content"]["body"], "second edit");
    assert!(replace["unsigned"].get("m.relations").is_none(), "an edit has no aggregations");
    assert_eq!(relations["m.reference"], json!({"chunk": [{"event_id": reference_id}]}));

    // Participation is per requester: bob replied, carol did not.
    let for_bob = get(&bob, &event_path).await;
    assert_eq!(for_bob["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], true);
    let for_carol = get(&carol, &event_path).await;
    assert_eq!(for_carol["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], false);

    // The same bundle in /messages; events with nothing related carry none.
    let messages = get(&alice, &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50")).await;
    let chunk = messages["chunk"].as_array().unwrap();
    let in_timeline = chunk.iter().find(|e| e["event_id"] == root.as_str()).expect("root in /messages");
    assert_eq!(in_timeline["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    let reference_event = chunk.iter().find(|e| e["event_id"] == reference_id.as_str()).unwrap();
    assert!(reference_event["unsigned"].get("m.relations").is_none());

    // State events get no aggregations, whatever relates to them.
    let name_id = alice
        .client
        .put(&format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name"), &json!({"name": "Room"}))
        .await
        .expect(200)["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    send(&alice, &room_id, "m.room.message", reference(&name_id)).await;
    let name = get(&alice, &format!("/_matrix/client/v3/rooms/{room_id}/event/{name_id}")).await;
    assert!(name["unsigned"].get("m.relations").is_none(), "{name}");
    server.stop().await;
}

#[tokio::test]
async fn threads_list_by_latest_activity() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room_id).await;
    join(&carol, &room_id).await;
    let a = send_text(&alice, &room_id, "a", "thread A").await;
    let b = send_text(&alice, &room_id, "b", "thread B").await;
    let c = send_text(&bob, &room_id, "c", "thread C").await;
    send_text(&alice, &room_id, "plain", "not a thread").await;
    send(&bob, &room_id, "m.room.message", thread_reply(&a, "bob on A")).await;
    send(&alice, &room_id, "m.room.message", thread_reply(&b, "alice on B")).await;
    send(&bob, &room_id, "m.room.message", thread_reply(&c, "bob on C")).await;
    let latest_on_a = send(&alice, &room_id, "m.room.message", thread_reply(&a, "alice on A")).await;
    let base = format!("/_matrix/client/v1/rooms/{room_id}/threads");

    let all = get(&carol, &base).await;
    assert_eq!(ids(&all["chunk"]), [a.as_str(), c.as_str(), b.as_str()], "newest activity first");
    assert!(all.get("next_batch").is_none());
    let first = &all["chunk"][0];
    assert_eq!(first["content"]["body"], "thread A");
    assert_eq!(first["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    assert_eq!(
        first["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        latest_on_a.as_str()
    );
    assert_eq!(first["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], false);
    assert_eq!(ids(&get(&carol, &format!("{base}?include=all")).await["chunk"]), ids(&all["chunk"]));

    let page1 = get(&carol, &format!("{base}?limit=2")).await;
    assert_eq!(ids(&page1["chunk"]), [a.as_str(), c.as_str()]);
    let next = page1["next_batch"].as_str().expect("a next page").to_owned();
    let page2 = get(&carol, &format!("{base}?limit=2&from={next}")).await;
    assert_eq!(ids(&page2["chunk"]), [b.as_str()]);
    assert!(page2.get("next_batch").is_none());

    // Participation: the root's sender or anyone who replied.
    assert_eq!(
        ids(&get(&bob, &format!("{base}?include=participated")).await["chunk"]),
        [a.as_str(), c.as_str()]
    );
    assert_eq!(
        ids(&get(&alice, &format!("{base}?include=participated")).await["chunk"]),
        [a.as_str(), b.as_str()]
    );
    assert!(ids(&get(&carol, &format!("{base}?include=participated")).await["chunk"]).is_empty());

    // Errors.
    carol.client.get(&format!("{base}?include=mine")).await.expect_error(400, "M_INVALID_PARAM");
    carol.client.get(&format!("{base}?from=s12")).await.expect_error(400, "M_INVALID_PARAM");
    carol.client.get(&format!("{base}?limit=0")).await.expect_error(400, "M_INVALID_PARAM");
    let dave = server.register("dave").await;
    let private = create_room(&alice, json!({"preset": "private_chat"})).await;
    dave.client
        .get(&format!("/_matrix/client/v1/rooms/{private}/threads"))
        .await
        .expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn relations_are_checked_when_sent() {
    let server = myelin_test_support::TestServer::start().await;
    let alice = server.register("alice").await;
    let room = crate::rooms::create_room(&alice, serde_json::json!({})).await;
    let other = crate::rooms::create_room(&alice, serde_json::json!({})).await;
    let target = crate::rooms::send_text(&alice, &room, "t", "react to me").await;
    let send = |room: String, txn: &'static str, content: serde_json::Value, kind: &'static str| {
        let client = alice.client.clone();
        async move { client.put(&format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"), &content).await }
    };
    let reaction =
        serde_json::json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "👍"}});
    send(room.clone(), "r1", reaction.clone(), "m.reaction").await.expect(200);
    send(room.clone(), "r2", reaction.clone(), "m.reaction")
        .await
        .expect_error(400, "M_DUPLICATE_ANNOTATION");
    // Retrying the same transaction is not a duplicate.
    send(room.clone(), "r1", reaction, "m.reaction").await.expect(200);
    let elsewhere = serde_json::json!({"body": "x", "msgtype": "m.text", "m.relates_to": {"rel_type": "m.thread", "event_id": target}});
    send(other, "x1", elsewhere, "m.room.message").await.expect_error(400, "M_UNKNOWN");
    let reply = serde_json::json!({"body": "in thread", "msgtype": "m.text", "m.relates_to": {"rel_type": "m.thread", "event_id": target}});
    let reply_id = send(room.clone(), "x2", reply, "m.room.message").await.expect(200)["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let nested = serde_json::json!({"body": "thread off a reply", "msgtype": "m.text", "m.relates_to": {"rel_type": "m.thread", "event_id": reply_id}});
    send(room, "x3", nested, "m.room.message").await.expect_error(400, "M_UNKNOWN");
    server.stop().await;
}
