//! Interoperability with Synapse: one Myelin and one real Synapse (`myelin_test_support::synapse`)
//! federating over TLS on loopback, both named by IP literal. Each scenario is written once,
//! generic over the peer ([`Peer`]: Synapse or a second Myelin), and runs against both; every
//! check goes through each side's client API (and Myelin's admin API for a room's forward
//! extremities).
//!
//! Scenarios: joins, messages with their relations, kicks and bans, a stopped side catching up,
//! typing, receipts and presence, invites and knocks (one refused), and concurrent power-level
//! changes resolving to one state, media downloads and thumbnails over federation, each both
//! ways. Not here (yet): Myelin backfilling from a
//! remote server when its client paginates: the backfill scenario is the peer backfilling from
//! Myelin, so it runs against Synapse only.

use std::path::Path;
use std::time::Duration;

use myelin_test_support::federation::{federating_server, write_certificates};
use myelin_test_support::synapse::SynapseServer;
use myelin_test_support::{TestClient, TestServer, TestUser};
use serde_json::{Value, json};

use crate::federation_resident::enc;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum PeerKind {
    Synapse,
    Myelin,
}

/// The other server of a scenario.
enum Peer {
    Synapse(SynapseServer),
    Myelin(TestServer),
}

/// Myelin's sender retries quickly in tests (Synapse's config does the same on its side).
fn myelin_config() -> Value {
    json!({"myelin_federation_retry": {"min_interval_ms": 200, "max_interval_ms": 500}})
}

async fn myelin(certs: &Path) -> TestServer {
    federating_server("127.0.0.1", certs, myelin_config()).await
}

impl Peer {
    /// `synapse_config` is merged into Synapse's configuration (Myelin's defaults need none).
    async fn start(kind: PeerKind, certs: &Path, synapse_config: Value) -> Option<Peer> {
        Some(match kind {
            PeerKind::Synapse => Peer::Synapse(SynapseServer::start(certs, synapse_config).await?),
            PeerKind::Myelin => Peer::Myelin(myelin(certs).await),
        })
    }

    fn server_name(&self) -> &str {
        match self {
            Peer::Synapse(s) => &s.server_name,
            Peer::Myelin(m) => &m.server_name,
        }
    }

    fn base_url(&self) -> &str {
        match self {
            Peer::Synapse(s) => &s.base_url,
            Peer::Myelin(m) => &m.base_url,
        }
    }

    async fn register(&self, localpart: &str) -> TestUser {
        match self {
            Peer::Synapse(s) => s.register(localpart).await,
            Peer::Myelin(m) => m.register(localpart).await,
        }
    }

    async fn stop(&mut self) {
        match self {
            Peer::Synapse(s) => s.stop().await,
            Peer::Myelin(m) => m.halt().await,
        }
    }

    async fn resume(&mut self) {
        match self {
            Peer::Synapse(s) => s.resume().await,
            Peer::Myelin(m) => m.resume().await,
        }
    }
}

/// `user` speaking to the server at `base_url` (a restarted Myelin listens on a new port).
fn repoint(user: &TestUser, base_url: &str) -> TestUser {
    TestUser { client: TestClient::new(base_url).with_token(&user.access_token), ..user.clone() }
}

/// One Myelin, one peer of `kind`; `None` when the peer is Synapse and the Python tools are
/// missing (the test skips, or fails under `MYELIN_REQUIRE_PYTOOLS=1`).
async fn servers(kind: PeerKind) -> Option<(tempfile::TempDir, TestServer, Peer)> {
    servers_with(kind, json!({})).await
}

/// [`servers`], with `synapse_config` merged into Synapse's configuration.
async fn servers_with(
    kind: PeerKind,
    synapse_config: Value,
) -> Option<(tempfile::TempDir, TestServer, Peer)> {
    let certs = tempfile::tempdir().unwrap();
    write_certificates(certs.path());
    let (myelin, peer) = tokio::join!(myelin(certs.path()), Peer::start(kind, certs.path(), synapse_config));
    Some((certs, myelin, peer?))
}

async fn create_room(user: &TestUser, alias: Option<&str>) -> String {
    create_room_of_version(user, alias, None).await
}

async fn create_room_of_version(user: &TestUser, alias: Option<&str>, version: Option<&str>) -> String {
    let mut body = json!({"preset": "public_chat", "name": "Interop"});
    if let Some(version) = version {
        body["room_version"] = json!(version);
    }
    if let Some(alias) = alias {
        body["room_alias_name"] = json!(alias);
    }
    let created = user.client.post("/_matrix/client/v3/createRoom", &body).await;
    created.expect(200)["room_id"].as_str().unwrap().to_owned()
}

/// Joins `target` (a room ID or alias) through `server` (when given) and returns the room ID.
async fn join(user: &TestUser, target: &str, server: Option<&str>) -> String {
    let mut path = format!("/_matrix/client/v3/join/{}", enc(target));
    if let Some(server) = server {
        // `server_name` for Synapse, which reads it beside `via`.
        path += &format!("?via={0}&server_name={0}", enc(server));
    }
    let joined = user.client.post(&path, &json!({})).await;
    joined.expect(200)["room_id"].as_str().unwrap().to_owned()
}

async fn send(user: &TestUser, room_id: &str, event_type: &str, content: Value) -> String {
    let txn = format!("t{}", rand_txn());
    let path = format!("/_matrix/client/v3/rooms/{}/send/{event_type}/{txn}", enc(room_id));
    let sent = user.client.put(&path, &content).await;
    sent.expect(200)["event_id"].as_str().unwrap().to_owned()
}

fn rand_txn() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

async fn text(user: &TestUser, room_id: &str, body: &str) -> String {
    send(user, room_id, "m.room.message", json!({"msgtype": "m.text", "body": body})).await
}

/// The room's timeline as `user` sees it through `/messages` (newest first, up to 200 events).
async fn messages(user: &TestUser, room_id: &str) -> Vec<Value> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200", enc(room_id));
    let response = user.client.get(&path).await;
    response.expect(200)["chunk"].as_array().cloned().unwrap_or_default()
}

/// Polls `/messages` of `user` (up to a minute) until `done` holds for the chunk; returns it.
async fn wait_for_messages(
    user: &TestUser,
    room_id: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let chunk = messages(user, room_id).await;
        if done(&chunk) {
            return chunk;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never saw {what} in {room_id}; /messages: {}",
            user.user_id,
            serde_json::to_string_pretty(&chunk).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn has_event(chunk: &[Value], event_id: &str) -> bool {
    chunk.iter().any(|e| e["event_id"] == event_id)
}

/// The room's members and memberships as `user` sees them.
async fn memberships(user: &TestUser, room_id: &str) -> Vec<(String, String)> {
    let members = user.client.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(room_id))).await;
    let mut out: Vec<(String, String)> = members.expect(200)["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until `user` sees `target`'s membership in the room as `membership`.
async fn wait_for_membership(user: &TestUser, room_id: &str, target: &str, membership: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room_id), enc(target));
        let response = user.client.get(&path).await;
        if response.status == 200 && response.json["membership"] == membership {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never saw {target} as {membership}; last answer {} {}",
            user.user_id,
            response.status,
            response.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

macro_rules! both_peers {
    ($scenario:ident: $synapse:ident, $myelin:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $synapse() {
            $scenario(PeerKind::Synapse).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $myelin() {
            $scenario(PeerKind::Myelin).await
        }
    };
}

both_peers!(joins_both_ways: synapse_joins_by_id_and_alias_both_ways, myelin_joins_by_id_and_alias_both_ways);
both_peers!(events_both_ways: synapse_messages_edits_reactions_redactions_both_ways, myelin_messages_edits_reactions_redactions_both_ways);
both_peers!(kick_and_ban: synapse_kick_and_ban_across_servers, myelin_kick_and_ban_across_servers);
both_peers!(stopped_side_catches_up: synapse_stopped_side_gets_every_message_once, myelin_stopped_side_gets_every_message_once);
both_peers!(typing_receipts_presence: synapse_typing_receipts_presence_both_ways, myelin_typing_receipts_presence_both_ways);
both_peers!(invites_and_knocks: synapse_invites_and_knocks_both_ways, myelin_invites_and_knocks_both_ways);
both_peers!(concurrent_power_levels: synapse_concurrent_power_levels_converge, myelin_concurrent_power_levels_converge);
both_peers!(media_both_ways: synapse_media_downloads_and_thumbnails_both_ways, myelin_media_downloads_and_thumbnails_both_ways);

/// A room of each side, joined from the other by room ID (with the server to go through) and
/// by alias alone; both sides agree on the members.
async fn joins_both_ways(kind: PeerKind) {
    let Some((_certs, m, peer)) = servers(kind).await else { return };
    let alice = m.register("alice").await;
    let amy = m.register("amy").await;
    let bob = peer.register("bob").await;
    let bea = peer.register("bea").await;

    // Myelin's room: the peer's users join by ID and by alias.
    let room = create_room(&alice, Some("myelinroom")).await;
    assert_eq!(join(&bob, &room, Some(&m.server_name)).await, room);
    let alias = format!("#myelinroom:{}", m.server_name);
    assert_eq!(join(&bea, &alias, None).await, room);
    let mut expected = vec![
        (alice.user_id.clone(), "join".to_owned()),
        (bob.user_id.clone(), "join".to_owned()),
        (bea.user_id.clone(), "join".to_owned()),
    ];
    expected.sort();
    wait_for_membership(&alice, &room, &bea.user_id, "join").await;
    assert_eq!(memberships(&alice, &room).await, expected);
    wait_for_membership(&bob, &room, &bea.user_id, "join").await;
    assert_eq!(memberships(&bob, &room).await, expected);

    // The peer's room: Myelin's users join by ID and by alias.
    let room = create_room(&bob, Some("peerroom")).await;
    assert_eq!(join(&alice, &room, Some(peer.server_name())).await, room);
    let alias = format!("#peerroom:{}", peer.server_name());
    let resolved = amy.client.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias))).await;
    assert_eq!(resolved.expect(200)["room_id"], room.as_str());
    assert_eq!(join(&amy, &alias, None).await, room);
    let mut expected = vec![
        (bob.user_id.clone(), "join".to_owned()),
        (alice.user_id.clone(), "join".to_owned()),
        (amy.user_id.clone(), "join".to_owned()),
    ];
    expected.sort();
    wait_for_membership(&bob, &room, &amy.user_id, "join").await;
    assert_eq!(memberships(&bob, &room).await, expected);
    assert_eq!(memberships(&alice, &room).await, expected);
    // The room's name came with the join.
    let name = amy.client.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room))).await;
    assert_eq!(name.expect(200)["name"], "Interop");
}

/// Messages, an edit, a reaction and a redaction, from each side, seen by the other.
async fn events_both_ways(kind: PeerKind) {
    let Some((_certs, m, peer)) = servers(kind).await else { return };
    let alice = m.register("alice").await;
    let bob = peer.register("bob").await;
    for (creator, joiner, via) in
        [(&alice, &bob, m.server_name.clone()), (&bob, &alice, peer.server_name().to_owned())]
    {
        let room = create_room(creator, None).await;
        join(joiner, &room, Some(&via)).await;
        wait_for_membership(creator, &room, &joiner.user_id, "join").await;
        for (from, to) in [(creator, joiner), (joiner, creator)] {
            let original = text(from, &room, &format!("hello from {}", from.user_id)).await;
            let edit = send(
                from,
                &room,
                "m.room.message",
                json!({
                    "msgtype": "m.text", "body": "* edited",
                    "m.new_content": {"msgtype": "m.text", "body": "edited"},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": original},
                }),
            )
            .await;
            // A reaction needs the original on the reacting user's server.
            wait_for_messages(to, &room, "the original", |chunk| has_event(chunk, &original)).await;
            let reaction = send(
                to,
                &room,
                "m.reaction",
                json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "👍"}}),
            )
            .await;
            let doomed = text(from, &room, "to be redacted").await;
            let redacted = from
                .client
                .put(
                    &format!(
                        "/_matrix/client/v3/rooms/{}/redact/{}/r{}",
                        enc(&room),
                        enc(&doomed),
                        rand_txn()
                    ),
                    &json!({"reason": "oops"}),
                )
                .await;
            let redaction = redacted.expect(200)["event_id"].as_str().unwrap().to_owned();

            // The receiver sees the message, the edit and the redaction (and the redacted
            // event stripped); the sender sees the reaction.
            let chunk = wait_for_messages(to, &room, "the message, edit and redaction", |chunk| {
                has_event(chunk, &original) && has_event(chunk, &edit) && has_event(chunk, &redaction)
            })
            .await;
            let find = |id: &str| chunk.iter().find(|e| e["event_id"] == id).unwrap().clone();
            assert_eq!(find(&original)["content"]["body"], format!("hello from {}", from.user_id));
            assert_eq!(find(&original)["sender"], from.user_id.as_str());
            assert_eq!(find(&edit)["content"]["m.relates_to"]["rel_type"], "m.replace");
            assert_eq!(find(&edit)["content"]["m.new_content"]["body"], "edited");
            assert_eq!(find(&redaction)["type"], "m.room.redaction");
            let stripped = find(&doomed);
            assert_eq!(stripped["content"], json!({}), "{stripped}");
            assert!(stripped["unsigned"]["redacted_because"].is_object(), "{stripped}");
            let chunk =
                wait_for_messages(from, &room, "the reaction", |chunk| has_event(chunk, &reaction)).await;
            let reaction = chunk.iter().find(|e| e["event_id"] == reaction.as_str()).unwrap();
            assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍");
            assert_eq!(reaction["sender"], to.user_id.as_str());
        }
    }
}

/// Each side's room: the other side's user kicked (and rejoining), then banned (and refused).
/// The kick and the ban reach the kicked user's server, which takes them in.
async fn kick_and_ban(kind: PeerKind) {
    let Some((_certs, m, peer)) = servers(kind).await else { return };
    let alice = m.register("alice").await;
    let bob = peer.register("bob").await;
    // Myelin's room in its default version; the peer's in v12 (Synapse's default), where the
    // create event is never an auth event.
    for (admin, member, via, version) in [
        (&alice, &bob, m.server_name.clone(), None),
        (&bob, &alice, peer.server_name().to_owned(), Some("12")),
    ] {
        let room = create_room_of_version(admin, None, version).await;
        join(member, &room, Some(&via)).await;
        wait_for_membership(admin, &room, &member.user_id, "join").await;

        let kicked = admin
            .client
            .post(
                &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
                &json!({"user_id": member.user_id, "reason": "out"}),
            )
            .await;
        kicked.expect(200);
        wait_for_membership(admin, &room, &member.user_id, "leave").await;
        // The kicked user's server learns it: the user is no longer in the room.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let rooms = member.client.get("/_matrix/client/v3/joined_rooms").await;
            if !rooms.expect(200)["joined_rooms"].as_array().unwrap().iter().any(|r| r == room.as_str()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still in {room} after the kick",
                member.user_id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A kick is not a ban: the user may come back.
        join(member, &room, Some(&via)).await;
        wait_for_membership(admin, &room, &member.user_id, "join").await;

        let banned = admin
            .client
            .post(
                &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
                &json!({"user_id": member.user_id, "reason": "gone"}),
            )
            .await;
        banned.expect(200);
        wait_for_membership(admin, &room, &member.user_id, "ban").await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let rooms = member.client.get("/_matrix/client/v3/joined_rooms").await;
            if !rooms.expect(200)["joined_rooms"].as_array().unwrap().iter().any(|r| r == room.as_str()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still in {room} after the ban",
                member.user_id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A banned user cannot join again: the room's server refuses.
        let path = format!("/_matrix/client/v3/join/{}?via={1}&server_name={1}", enc(&room), enc(&via));
        member.client.post(&path, &json!({})).await.expect_error(403, "M_FORBIDDEN");
        wait_for_membership(admin, &room, &member.user_id, "ban").await;
    }
}

/// Each side stopped in turn while the other sends; after its restart, every message is there
/// exactly once.
async fn stopped_side_catches_up(kind: PeerKind) {
    let Some((_certs, mut m, mut peer)) = servers(kind).await else { return };
    let alice = m.register("alice").await;
    let bob = peer.register("bob").await;
    let room = create_room(&alice, None).await;
    join(&bob, &room, Some(&m.server_name)).await;
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;
    // One message each way first, so both sides have talked to each other.
    let hello = text(&bob, &room, "hello").await;
    wait_for_messages(&alice, &room, "hello", |c| has_event(c, &hello)).await;

    let count = |chunk: &[Value], body: &str| chunk.iter().filter(|e| e["content"]["body"] == body).count();

    // The peer is down while Myelin sends.
    peer.stop().await;
    let sent: Vec<String> = {
        let mut sent = Vec::new();
        for i in 0..5 {
            sent.push(text(&alice, &room, &format!("while the peer was down {i}")).await);
        }
        sent
    };
    peer.resume().await;
    let bob = repoint(&bob, peer.base_url());
    let chunk =
        wait_for_messages(&bob, &room, "Myelin's messages", |c| sent.iter().all(|id| has_event(c, id))).await;
    for i in 0..5 {
        assert_eq!(count(&chunk, &format!("while the peer was down {i}")), 1, "{chunk:?}");
    }

    // Myelin is down while the peer sends.
    m.halt().await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(text(&bob, &room, &format!("while Myelin was down {i}")).await);
    }
    m.resume().await;
    let alice = repoint(&alice, &m.base_url);
    // Myelin speaks first after its restart: Synapse retries a server it has backed off from
    // when that server contacts it (or on its next wake-up).
    let back = text(&alice, &room, "back").await;
    let chunk =
        wait_for_messages(&alice, &room, "the peer's messages", |c| sent.iter().all(|id| has_event(c, id)))
            .await;
    for i in 0..5 {
        assert_eq!(count(&chunk, &format!("while Myelin was down {i}")), 1, "{chunk:?}");
    }
    let chunk = wait_for_messages(&bob, &room, "back", |c| has_event(c, &back)).await;
    assert_eq!(count(&chunk, "back"), 1);
    for i in 0..5 {
        assert_eq!(count(&chunk, &format!("while Myelin was down {i}")), 1, "{chunk:?}");
        assert_eq!(count(&chunk, &format!("while the peer was down {i}")), 1, "{chunk:?}");
    }
    let chunk = messages(&alice, &room).await;
    for i in 0..5 {
        assert_eq!(count(&chunk, &format!("while the peer was down {i}")), 1, "{chunk:?}");
    }
    assert_eq!(count(&chunk, "hello"), 1);
}

/// Synapse joins a Myelin room with history and backfills it from Myelin when its client
/// paginates: every earlier message, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_backfills_history_from_myelin() {
    let Some((_certs, m, peer)) = servers(PeerKind::Synapse).await else { return };
    let alice = m.register("alice").await;
    let bob = peer.register("bob").await;
    let room = create_room(&alice, None).await;
    let bodies: Vec<String> = (0..30).map(|i| format!("history {i}")).collect();
    for body in &bodies {
        text(&alice, &room, body).await;
    }
    join(&bob, &room, Some(&m.server_name)).await;
    let chunk = wait_for_messages(&bob, &room, "the history", |c| {
        bodies.iter().all(|b| c.iter().any(|e| e["content"]["body"] == b.as_str()))
    })
    .await;
    let seen: Vec<&str> = chunk
        .iter()
        .rev()
        .filter_map(|e| e["content"]["body"].as_str())
        .filter(|b| b.starts_with("history "))
        .collect();
    assert_eq!(seen, bodies.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A `/sync` of `user` with nothing to wait for: its `next_batch`.
async fn next_batch(user: &TestUser) -> String {
    let body = user.client.get("/_matrix/client/v3/sync?set_presence=offline").await;
    body.expect(200)["next_batch"].as_str().unwrap().to_owned()
}

/// Long-polls `user`'s `/sync` from `since` (up to a minute) until `done` holds for a response;
/// returns it. `set_presence=offline`: polling does not make the user online.
async fn sync_until(user: &TestUser, since: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut since = since.to_owned();
    loop {
        let path = format!("/_matrix/client/v3/sync?timeout=1000&set_presence=offline&since={}", enc(&since));
        let body = user.client.get(&path).await.expect(200).clone();
        if done(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} never saw {what} in /sync", user.user_id);
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
}

/// The events of `kind` in a joined room's `ephemeral` section of a sync response.
fn ephemeral<'a>(body: &'a Value, room_id: &str, kind: &str) -> Vec<&'a Value> {
    let events = body["rooms"]["join"][room_id]["ephemeral"]["events"].as_array();
    events.map(|events| events.iter().filter(|e| e["type"] == kind).collect()).unwrap_or_default()
}

/// The users typing in a room, if the sync response carried its `m.typing`.
fn typing_in(body: &Value, room_id: &str) -> Option<Vec<String>> {
    let typing = ephemeral(body, room_id, "m.typing").pop()?;
    Some(
        typing["content"]["user_ids"]
            .as_array()?
            .iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect(),
    )
}

/// Whether the sync response carries `user_id`'s `m.read` receipt of `event_id` (and its time).
fn read_receipt_in(body: &Value, room_id: &str, user_id: &str, event_id: &str) -> bool {
    ephemeral(body, room_id, "m.receipt")
        .iter()
        .any(|receipt| receipt["content"][event_id]["m.read"][user_id]["ts"].is_u64())
}

/// `user_id`'s presence in a sync response's `presence` section, if there.
fn presence_in(body: &Value, user_id: &str) -> Option<Value> {
    let events = body["presence"]["events"].as_array()?;
    let event = events.iter().rev().find(|e| e["type"] == "m.presence" && e["sender"] == user_id)?;
    Some(event["content"].clone())
}

/// A user on each side types (and stops), reads the other's message and sets a presence; the
/// other sees each in `/sync`: `m.typing` and `m.receipt` in the room's `ephemeral` events, the
/// presence in `presence`. Synapse runs with presence on (the harness turns it off otherwise).
async fn typing_receipts_presence(kind: PeerKind) {
    let Some((_certs, m, peer)) = servers_with(kind, json!({"presence": {"enabled": true}})).await else {
        return;
    };
    let alice = m.register("alice").await;
    let bob = peer.register("bob").await;
    let room = create_room(&alice, None).await;
    join(&bob, &room, Some(&m.server_name)).await;
    wait_for_membership(&alice, &room, &bob.user_id, "join").await;
    wait_for_membership(&bob, &room, &bob.user_id, "join").await;

    for (from, to) in [(&alice, &bob), (&bob, &alice)] {
        // Typing, then no longer.
        let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&from.user_id));
        let since = next_batch(to).await;
        from.client.put(&typing, &json!({"typing": true, "timeout": 30000})).await.expect(200);
        let body = sync_until(to, &since, &format!("{} typing", from.user_id), |body| {
            typing_in(body, &room).is_some_and(|users| users.contains(&from.user_id))
        })
        .await;
        let since = body["next_batch"].as_str().unwrap().to_owned();
        from.client.put(&typing, &json!({"typing": false})).await.expect(200);
        sync_until(to, &since, &format!("{} stop typing", from.user_id), |body| {
            typing_in(body, &room).is_some_and(|users| !users.contains(&from.user_id))
        })
        .await;

        // A read receipt of the other side's message.
        let message = text(to, &room, &format!("read me, {}", from.user_id)).await;
        wait_for_messages(from, &room, "the message to read", |chunk| has_event(chunk, &message)).await;
        let since = next_batch(to).await;
        let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&message));
        from.client.post(&receipt, &json!({})).await.expect(200);
        sync_until(to, &since, &format!("{}'s receipt", from.user_id), |body| {
            read_receipt_in(body, &room, &from.user_id, &message)
        })
        .await;

        // A presence with a status message.
        let status_msg = format!("away from {}", from.user_id);
        let since = next_batch(to).await;
        let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&from.user_id));
        from.client
            .put(&presence, &json!({"presence": "unavailable", "status_msg": status_msg}))
            .await
            .expect(200);
        let body = sync_until(to, &since, &format!("{}'s presence", from.user_id), |body| {
            presence_in(body, &from.user_id).is_some_and(|p| p["status_msg"] == status_msg.as_str())
        })
        .await;
        assert_eq!(presence_in(&body, &from.user_id).unwrap()["presence"], "unavailable", "{body}");
        let asked = to.client.get(&presence).await;
        assert_eq!(asked.expect(200)["presence"], "unavailable");
        assert_eq!(asked.expect(200)["status_msg"], status_msg.as_str());
    }
}

/// The stripped state event of `kind` and `state_key` in a list, or `Null`.
fn stripped<'a>(events: &'a [Value], kind: &str, state_key: &str) -> &'a Value {
    events.iter().find(|e| e["type"] == kind && e["state_key"] == state_key).unwrap_or(&Value::Null)
}

/// `user` invited to or knocking on `room` (`section` is `invite` or `knock`): waits for the
/// room in that section of `/sync` from `since` and returns its stripped state.
async fn wait_for_pending(user: &TestUser, since: &str, room_id: &str, section: &str) -> Vec<Value> {
    let state_key = format!("{section}_state");
    let body = sync_until(user, since, &format!("{room_id} in rooms.{section}"), |body| {
        body["rooms"][section][room_id][&state_key]["events"].is_array()
    })
    .await;
    assert!(body["rooms"]["join"].get(room_id).is_none(), "{body}");
    body["rooms"][section][room_id][&state_key]["events"].as_array().unwrap().clone()
}

/// Each side invites the other's user into a private room: the invitee sees the invite with its
/// stripped state, accepts, and both sides have the same joined members. Then each side's
/// user knocks on a knockable room of the other side: the room's admin sees the knock and
/// lets the user in with an invite, which the user accepts; a second knock is refused with a
/// kick, after which the refused user cannot join.
async fn invites_and_knocks(kind: PeerKind) {
    let Some((_certs, m, peer)) = servers(kind).await else { return };
    let alice = m.register("alice").await;
    let amy = m.register("amy").await;
    let bob = peer.register("bob").await;
    let bea = peer.register("bea").await;
    let sides =
        [(&alice, &bob, &bea, m.server_name.clone()), (&bob, &alice, &amy, peer.server_name().to_owned())];

    for (inviter, invitee, _, _) in sides.clone() {
        let created = inviter
            .client
            .post("/_matrix/client/v3/createRoom", &json!({"preset": "private_chat", "name": "Invite only"}))
            .await;
        let room = created.expect(200)["room_id"].as_str().unwrap().to_owned();
        let since = next_batch(invitee).await;
        let invited = inviter
            .client
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
                &json!({"user_id": invitee.user_id, "reason": "come in"}),
            )
            .await;
        invited.expect(200);
        let state = wait_for_pending(invitee, &since, &room, "invite").await;
        let own = stripped(&state, "m.room.member", &invitee.user_id);
        assert_eq!(own["content"]["membership"], "invite", "{state:?}");
        assert_eq!(own["sender"], inviter.user_id.as_str(), "{state:?}");
        assert_eq!(stripped(&state, "m.room.name", "")["content"]["name"], "Invite only", "{state:?}");
        assert_eq!(stripped(&state, "m.room.join_rules", "")["content"]["join_rule"], "invite", "{state:?}");
        assert!(stripped(&state, "m.room.create", "").is_object(), "{state:?}");

        // Accepted with no server named: the invite says where the room is.
        assert_eq!(join(invitee, &room, None).await, room);
        wait_for_membership(inviter, &room, &invitee.user_id, "join").await;
        let mut expected =
            vec![(inviter.user_id.clone(), "join".to_owned()), (invitee.user_id.clone(), "join".to_owned())];
        expected.sort();
        assert_eq!(memberships(inviter, &room).await, expected);
        assert_eq!(memberships(invitee, &room).await, expected);
    }

    for (admin, knocker, refused, via) in sides {
        let created = admin
            .client
            .post(
                "/_matrix/client/v3/createRoom",
                &json!({
                    "preset": "private_chat",
                    "name": "Knock knock",
                    "room_version": "10",
                    "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
                }),
            )
            .await;
        let room = created.expect(200)["room_id"].as_str().unwrap().to_owned();
        let knock_path =
            format!("/_matrix/client/v3/knock/{}?via={1}&server_name={1}", enc(&room), enc(&via));
        for user in [knocker, refused] {
            let since = next_batch(user).await;
            let knocked = user.client.post(&knock_path, &json!({"reason": "let me in"})).await;
            assert_eq!(knocked.expect(200)["room_id"], room.as_str());
            let state = wait_for_pending(user, &since, &room, "knock").await;
            let own = stripped(&state, "m.room.member", &user.user_id);
            assert_eq!(own["content"]["membership"], "knock", "{state:?}");
            assert_eq!(stripped(&state, "m.room.name", "")["content"]["name"], "Knock knock", "{state:?}");
            assert_eq!(
                stripped(&state, "m.room.join_rules", "")["content"]["join_rule"],
                "knock",
                "{state:?}"
            );
            wait_for_membership(admin, &room, &user.user_id, "knock").await;
        }
        let knock = admin
            .client
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(&knocker.user_id)
            ))
            .await;
        assert_eq!(knock.expect(200)["reason"], "let me in");

        // Accepted: an invite, which the knocker accepts.
        let since = next_batch(knocker).await;
        let invited = admin
            .client
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
                &json!({"user_id": knocker.user_id}),
            )
            .await;
        invited.expect(200);
        let state = wait_for_pending(knocker, &since, &room, "invite").await;
        assert_eq!(stripped(&state, "m.room.member", &knocker.user_id)["content"]["membership"], "invite");
        assert_eq!(join(knocker, &room, None).await, room);
        wait_for_membership(admin, &room, &knocker.user_id, "join").await;
        wait_for_membership(knocker, &room, &knocker.user_id, "join").await;

        // Refused: the knock is kicked. The room's server keeps the refused user out. (Whether
        // the refused user's own server learns of it differs: Synapse takes a leave for a room
        // it is not in only when it rescinds an invite, so it is not asserted there.)
        let kicked = admin
            .client
            .post(
                &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
                &json!({"user_id": refused.user_id, "reason": "no"}),
            )
            .await;
        kicked.expect(200);
        wait_for_membership(admin, &room, &refused.user_id, "leave").await;
        wait_for_membership(knocker, &room, &refused.user_id, "leave").await;
        let path = format!("/_matrix/client/v3/join/{}?via={1}&server_name={1}", enc(&room), enc(&via));
        refused.client.post(&path, &json!({})).await.expect_error(403, "M_FORBIDDEN");
        let mut expected = vec![
            (admin.user_id.clone(), "join".to_owned()),
            (knocker.user_id.clone(), "join".to_owned()),
            (refused.user_id.clone(), "leave".to_owned()),
        ];
        expected.sort();
        assert_eq!(memberships(admin, &room).await, expected);
        assert_eq!(memberships(knocker, &room).await, expected);
    }
}

/// The room's current `m.room.power_levels` content as `user` sees it.
async fn power_levels(user: &TestUser, room_id: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(room_id));
    user.client.get(&path).await.expect(200).clone()
}

/// Polls both users' current power levels (up to a minute) until they agree and are one of
/// `candidates`; returns the agreed content.
async fn wait_for_same_power_levels(
    a: &TestUser,
    b: &TestUser,
    room_id: &str,
    candidates: &[Value],
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (seen_a, seen_b) = tokio::join!(power_levels(a, room_id), power_levels(b, room_id));
        if seen_a == seen_b && candidates.contains(&seen_a) {
            return seen_a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the power levels never agreed: {} sees {seen_a}, {} sees {seen_b}",
            a.user_id,
            b.user_id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `user`'s server has the event.
async fn wait_for_event(user: &TestUser, room_id: &str, event_id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room_id), enc(event_id));
    loop {
        let response = user.client.get(&path).await;
        if response.status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never got {event_id}: {} {}",
            user.user_id,
            response.status,
            response.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two users of power 100, one on each side, change the power levels at the same moment, each
/// differently (the same key to different values, and a key of their own): both servers end
/// with the same current power levels, one of the two, and keep them after a message from each
/// side merges the fork (Myelin's forward extremities show there was one). In a room of each
/// side: Myelin's in version 10 (state resolution v2), the peer's in version 12 (v2.1, its
/// creator's power implicit).
async fn concurrent_power_levels(kind: PeerKind) {
    let Some((_certs, m, peer)) = servers(kind).await else { return };
    let alice = m.register("alice").await;
    let bob = peer.register("bob").await;
    let admin = m.register_admin("root").await;
    for (creator, other, via, version) in
        [(&alice, &bob, m.server_name.clone(), "10"), (&bob, &alice, peer.server_name().to_owned(), "12")]
    {
        // Version 12 forbids the creator in `users`: its power is implicit.
        let mut users = json!({other.user_id.as_str(): 100});
        if version != "12" {
            users[creator.user_id.as_str()] = json!(100);
        }
        let created = creator
            .client
            .post(
                "/_matrix/client/v3/createRoom",
                &json!({
                    "preset": "public_chat",
                    "room_version": version,
                    "power_level_content_override": {"users": users},
                }),
            )
            .await;
        let room = created.expect(200)["room_id"].as_str().unwrap().to_owned();
        join(other, &room, Some(&via)).await;
        wait_for_membership(creator, &room, &other.user_id, "join").await;
        let before = power_levels(creator, &room).await;
        assert_eq!(before["users"][other.user_id.as_str()], 100, "{before}");
        let deadline = tokio::time::Instant::now() + WAIT;
        while power_levels(other, &room).await != before {
            assert!(tokio::time::Instant::now() < deadline, "{} never had the power levels", other.user_id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let put = |user: &TestUser, content: Value| {
            let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room));
            let client = user.client.clone();
            async move { client.put(&path, &content).await.expect(200)["event_id"].as_str().unwrap().to_owned() }
        };
        // Sent at once, the two changes nearly always fork the room (neither server has the
        // other's when it builds its own); Myelin's forward extremities tell. A round where
        // one came after the other is tried again, up to five times.
        let mut base = before;
        let mut forked = false;
        for round in 0..5u64 {
            let changed = |value: u64, marker: &str| {
                let mut content = base.clone();
                content["events_default"] = json!(value);
                content["events"][marker] = json!(value);
                content
            };
            let candidates =
                [changed(10 + round, "org.example.creator"), changed(20 + round, "org.example.other")];
            let (first, second) =
                tokio::join!(put(creator, candidates[0].clone()), put(other, candidates[1].clone()));
            for user in [creator, other] {
                wait_for_event(user, &room, &first).await;
                wait_for_event(user, &room, &second).await;
            }
            let path = format!("/_synapse/admin/v1/rooms/{}/forward_extremities", enc(&room));
            let extremities = admin.client.get(&path).await.expect(200).clone();
            let extremities: Vec<&str> = extremities["results"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["event_id"].as_str())
                .collect();
            forked = extremities.contains(&first.as_str()) && extremities.contains(&second.as_str());
            let agreed = wait_for_same_power_levels(creator, other, &room, &candidates).await;

            // A message from each side builds on both branches: nothing changes.
            let hello = text(creator, &room, "after the change").await;
            let reply = text(other, &room, "after the change too").await;
            for user in [creator, other] {
                wait_for_event(user, &room, &hello).await;
                wait_for_event(user, &room, &reply).await;
            }
            assert_eq!(wait_for_same_power_levels(creator, other, &room, &candidates).await, agreed);
            base = agreed;
            if forked {
                break;
            }
        }
        assert!(forked, "the two power-level changes never forked {room} in five rounds");
    }
}

/// A PNG of `width` x `height`.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 3 % 256) as u8, (y * 5 % 256) as u8, 40])
    });
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

/// Uploads `bytes` as `user` on the server at `base_url`; returns the media ID.
async fn upload_png(base_url: &str, user: &TestUser, bytes: Vec<u8>) -> String {
    let response = myelin_test_support::http_client()
        .post(format!("{base_url}/_matrix/media/v3/upload?filename=picture.png"))
        .bearer_auth(&user.access_token)
        .header("content-type", "image/png")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

/// `GET path` as `user` on the server at `base_url`: status, content type and body.
async fn get_bytes(base_url: &str, user: &TestUser, path: &str) -> (u16, String, Vec<u8>) {
    let response = myelin_test_support::http_client()
        .get(format!("{base_url}{path}"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, content_type, response.bytes().await.unwrap().to_vec())
}

/// Each side's user uploads an image; the other side's user downloads it and a thumbnail of it
/// through their own server (authenticated media over federation).
async fn media_both_ways(kind: PeerKind) {
    let Some((_certs, m, peer)) = servers(kind).await else { return };
    let alice = m.register("alice").await;
    let bob = peer.register("bob").await;
    let of_myelin = png(200, 150);
    let of_peer = png(240, 160);
    let myelin_media = upload_png(&m.base_url, &alice, of_myelin.clone()).await;
    let peer_media = upload_png(peer.base_url(), &bob, of_peer.clone()).await;
    for (base_url, user, origin, media_id, bytes) in [
        (peer.base_url(), &bob, m.server_name.as_str(), &myelin_media, &of_myelin),
        (m.base_url.as_str(), &alice, peer.server_name(), &peer_media, &of_peer),
    ] {
        let download = format!("/_matrix/client/v1/media/download/{origin}/{media_id}");
        let (status, content_type, body) = get_bytes(base_url, user, &download).await;
        assert_eq!(status, 200, "{origin}/{media_id} from {base_url}: {}", String::from_utf8_lossy(&body));
        assert_eq!(content_type, "image/png");
        assert_eq!(&body, bytes, "{origin}/{media_id} arrives whole");
        let thumbnail =
            format!("/_matrix/client/v1/media/thumbnail/{origin}/{media_id}?width=32&height=32&method=crop");
        let (status, content_type, body) = get_bytes(base_url, user, &thumbnail).await;
        assert_eq!(status, 200, "{thumbnail} from {base_url}: {}", String::from_utf8_lossy(&body));
        assert!(content_type.starts_with("image/"), "{content_type}");
        let image = image::load_from_memory(&body).expect("a decodable thumbnail");
        assert_eq!((image.width(), image.height()), (32, 32));
    }
}
