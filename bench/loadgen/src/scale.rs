//! The scale benchmark of Myelin alone (`bench/scale.sh` drives it): one phase per
//! invocation, each printing a JSON report with latency percentiles and the server's RSS
//! (`--pid`) before and after. The phases:
//!
//! - `setup`: registers the owner of the big room and creates it (the room is then filled by
//!   the `seed_room` example while the server is stopped).
//! - `big-room`: `/messages` paging back from the end and from the middle, `/context`,
//!   initial `/sync` with a timeline limit, incremental `/sync` after a send.
//! - `many-rooms`: one user creates N rooms; initial and incremental `/sync`.
//! - `big-members`: N users join one room; sends into it (push rules run for every member),
//!   `/members`, `/joined_members`, compared with sends into a room of one.
//! - `state-changes`: N state changes in the big-members room (the script measures the
//!   database before and after).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::{Parser, Subcommand};
use myelin_loadgen::{Client, Meter, User, join_all, latencies, q, register_many, round, rss_mib};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// The server process, for CPU and RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Where the phase's report (or the setup's state) is written.
    #[arg(long)]
    out: String,
    /// Requests per measured operation.
    #[arg(long, default_value_t = 50)]
    reps: usize,
    #[command(subcommand)]
    phase: Phase,
}

#[derive(Subcommand)]
enum Phase {
    Setup,
    BigRoom {
        /// The state file written by `setup`.
        #[arg(long)]
        state: String,
        /// An event in the middle of the room (printed by `seed_room`).
        #[arg(long)]
        middle: String,
    },
    ManyRooms {
        #[arg(long, default_value_t = 1000)]
        rooms: usize,
    },
    BigMembers {
        #[arg(long, default_value_t = 10000)]
        members: usize,
        /// Where the room and its owner are written, for `state-changes`.
        #[arg(long)]
        state_out: String,
    },
    StateChanges {
        #[arg(long)]
        state: String,
        #[arg(long, default_value_t = 1000)]
        changes: usize,
    },
}

const CONCURRENCY: usize = 10;

fn user_of(state: &Value) -> User {
    User {
        token: state["token"].as_str().unwrap().to_owned(),
        user_id: state["user_id"].as_str().unwrap().to_owned(),
        device_id: state["device_id"].as_str().unwrap_or_default().to_owned(),
    }
}

fn read_state(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("state file")).expect("state JSON")
}

async fn timed<F: Future<Output = Value>>(f: F) -> (f64, Value) {
    let t0 = Instant::now();
    let value = f.await;
    (t0.elapsed().as_secs_f64(), value)
}

fn run_id() -> String {
    (0..6).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect()
}

/// Pages back through a room `pages` times from `from`, 100 events a page.
async fn page_back(client: &Client, user: &User, room: &str, mut from: String, pages: usize) -> Value {
    let mut lats = Vec::new();
    let mut events = 0;
    for _ in 0..pages {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100&from={}", q(room), q(&from));
        let (t, page) = timed(client.get(&path, user)).await;
        lats.push(t);
        events += page["chunk"].as_array().map_or(0, Vec::len);
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    json!({"pages": lats.len(), "events": events, "latency_ms": latencies(lats)})
}

async fn big_room(client: &Client, pid: Option<u32>, reps: usize, state: &Value, middle: &str) -> Value {
    let user = user_of(state);
    let room = state["room_id"].as_str().unwrap();
    let mut report = json!({"rss_mib_idle": rss_mib(pid)});

    // The newest events: the `prev_batch` of an initial sync is the end of the room.
    let filter = json!({"room": {"timeline": {"limit": 20}}, "presence": {"types": []}}).to_string();
    let mut lats = Vec::new();
    let mut sync = Value::Null;
    let meter = Meter::start(pid);
    for _ in 0..reps.min(20) {
        let (t, value) = timed(client.sync(&user, None, 0, Some(&filter))).await;
        lats.push(t);
        sync = value;
    }
    report["initial_sync_timeline_20"] = meter.stop(json!({"latency_ms": latencies(lats)}));
    let timeline = &sync["rooms"]["join"][room]["timeline"];
    assert_eq!(timeline["events"].as_array().map_or(0, Vec::len), 20, "initial sync timeline: {timeline}");
    let end = timeline["prev_batch"].as_str().expect("prev_batch").to_owned();
    let mut since = sync["next_batch"].as_str().unwrap().to_owned();

    let meter = Meter::start(pid);
    report["messages_from_end"] = meter.stop(page_back(client, &user, room, end, reps).await);

    let context = client
        .get(&format!("/_matrix/client/v3/rooms/{}/context/{}?limit=0", q(room), q(middle)), &user)
        .await;
    let start = context["start"].as_str().expect("context start").to_owned();
    let meter = Meter::start(pid);
    report["messages_from_middle"] = meter.stop(page_back(client, &user, room, start, reps).await);

    // /context around events spread over the room's history (each a cold read).
    let mut lats = Vec::new();
    let meter = Meter::start(pid);
    let mut anchors = vec![middle.to_owned()];
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10&from={}", q(room), q(&since));
    if let Some(chunk) = client.get(&path, &user).await["chunk"].as_array() {
        anchors.extend(chunk.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
    }
    for i in 0..reps {
        let anchor = &anchors[i % anchors.len()];
        let path = format!("/_matrix/client/v3/rooms/{}/context/{}?limit=10", q(room), q(anchor));
        let (t, value) = timed(client.get(&path, &user)).await;
        assert!(value["event"]["event_id"].is_string(), "context: {value}");
        lats.push(t);
    }
    report["context_limit_10"] = meter.stop(json!({"latency_ms": latencies(lats)}));

    // Incremental sync after each send.
    let run = run_id();
    let mut lats = Vec::new();
    let meter = Meter::start(pid);
    for i in 0..reps {
        client.send(&user, room, &format!("{run}-{i}"), &format!("incremental {i}")).await;
        let (t, value) = timed(client.sync(&user, Some(&since), 0, Some(&filter))).await;
        lats.push(t);
        since = value["next_batch"].as_str().unwrap().to_owned();
    }
    report["incremental_sync_after_send"] = meter.stop(json!({"latency_ms": latencies(lats)}));
    report["rss_mib_after"] = json!(rss_mib(pid));
    report
}

async fn many_rooms(client: &Arc<Client>, pid: Option<u32>, reps: usize, rooms: usize) -> Value {
    let mut report = json!({"rss_mib_idle": rss_mib(pid), "rooms": rooms});
    let user = client.register(&format!("many{}", run_id())).await;
    let next = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(pid);
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, next, user) = (client.clone(), next.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < rooms {
                let room = client.create_room(&user, "private_chat").await;
                client.send(&user, &room, "first", "hello").await;
                ids.push(room);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    let wall = meter.started_secs();
    report["create_rooms"] = meter.stop(json!({"per_s": round(rooms as f64 / wall)}));

    let filter =
        json!({"room": {"timeline": {"limit": 10}, "state": {"lazy_load_members": true}}}).to_string();
    let mut lats = Vec::new();
    let mut since = String::new();
    let meter = Meter::start(pid);
    for _ in 0..reps.min(10) {
        let (t, value) = timed(client.sync(&user, None, 0, Some(&filter))).await;
        let joined = value["rooms"]["join"].as_object().map_or(0, |m| m.len());
        assert_eq!(joined, rooms, "initial sync returned {joined} rooms");
        lats.push(t);
        since = value["next_batch"].as_str().unwrap().to_owned();
    }
    report["initial_sync"] = meter.stop(json!({"latency_ms": latencies(lats)}));

    let run = run_id();
    let mut lats = Vec::new();
    let meter = Meter::start(pid);
    for i in 0..reps {
        let room = &ids[(i * 37) % ids.len()];
        client.send(&user, room, &format!("{run}-{i}"), &format!("incremental {i}")).await;
        let (t, value) = timed(client.sync(&user, Some(&since), 0, Some(&filter))).await;
        assert!(value["rooms"]["join"][room].is_object(), "incremental sync without {room}");
        lats.push(t);
        since = value["next_batch"].as_str().unwrap().to_owned();
    }
    report["incremental_sync_after_send"] = meter.stop(json!({"latency_ms": latencies(lats)}));
    report["rss_mib_after"] = json!(rss_mib(pid));
    report
}

async fn sends(client: &Client, user: &User, room: &str, count: usize) -> Value {
    let run = run_id();
    let mut lats = Vec::new();
    for i in 0..count {
        let t0 = Instant::now();
        client.send(user, room, &format!("{run}-{i}"), &format!("to everyone {i}")).await;
        lats.push(t0.elapsed().as_secs_f64());
    }
    latencies(lats)
}

async fn big_members(
    client: &Arc<Client>,
    pid: Option<u32>,
    reps: usize,
    members: usize,
    state_out: &str,
) -> Value {
    let mut report = json!({"rss_mib_idle": rss_mib(pid), "members": members});
    let run = run_id();
    let owner = client.register(&format!("owner{run}")).await;
    let meter = Meter::start(pid);
    let users = register_many(client, &format!("m{run}u"), members - 1, CONCURRENCY).await;
    report["register"] = meter.stop(json!({"users": members - 1}));
    let room = client.create_room(&owner, "public_chat").await;

    // Joins, timed per tenth of the room's growth.
    let meter = Meter::start(pid);
    let lats: Vec<(usize, f64)> =
        join_all(client, users.clone(), &room, CONCURRENCY).await.into_iter().enumerate().collect();
    let wall = meter.started_secs();
    let tenth = (users.len() / 10).max(1);
    let first: Vec<f64> = lats.iter().filter(|(i, _)| *i < tenth).map(|(_, t)| *t).collect();
    let last: Vec<f64> = lats.iter().filter(|(i, _)| *i >= users.len() - tenth).map(|(_, t)| *t).collect();
    report["joins"] = meter.stop(json!({
        "per_s": round(users.len() as f64 / wall),
        "first_tenth_latency_ms": latencies(first),
        "last_tenth_latency_ms": latencies(last),
    }));
    report["rss_mib_after_joins"] = json!(rss_mib(pid));

    // Sends into the big room (every member is evaluated against its push rules) and into a
    // room of one, one at a time.
    let meter = Meter::start(pid);
    report["send_big_room"] = meter.stop(json!({"latency_ms": sends(client, &owner, &room, reps).await}));
    let alone = client.create_room(&owner, "private_chat").await;
    let meter = Meter::start(pid);
    report["send_room_of_one"] = meter.stop(json!({"latency_ms": sends(client, &owner, &alone, reps).await}));
    let big = report["send_big_room"]["latency_ms"]["p50"].as_f64().unwrap_or(0.0);
    let small = report["send_room_of_one"]["latency_ms"]["p50"].as_f64().unwrap_or(0.0);
    report["push_cost_per_member_us"] = json!(round((big - small).max(0.0) * 1000.0 / members as f64));

    for (name, path) in [("members_endpoint", "members"), ("joined_members_endpoint", "joined_members")] {
        let mut lats = Vec::new();
        let meter = Meter::start(pid);
        for _ in 0..reps.min(20) {
            let (t, value) =
                timed(client.get(&format!("/_matrix/client/v3/rooms/{}/{path}", q(&room)), &owner)).await;
            let count = match name {
                "members_endpoint" => value["chunk"].as_array().map_or(0, Vec::len),
                _ => value["joined"].as_object().map_or(0, |m| m.len()),
            };
            assert_eq!(count, members, "{path} returned {count} members");
            lats.push(t);
        }
        report[name] = meter.stop(json!({"latency_ms": latencies(lats)}));
    }

    // A member's initial sync (members lazily loaded, as Element asks).
    let filter =
        json!({"room": {"timeline": {"limit": 20}, "state": {"lazy_load_members": true}}}).to_string();
    let mut lats = Vec::new();
    let meter = Meter::start(pid);
    for i in 0..reps.min(20) {
        let (t, _) = timed(client.sync(&users[i % users.len()], None, 0, Some(&filter))).await;
        lats.push(t);
    }
    report["member_initial_sync_lazy"] = meter.stop(json!({"latency_ms": latencies(lats)}));
    report["rss_mib_after"] = json!(rss_mib(pid));
    let state = json!({"token": owner.token, "user_id": owner.user_id, "room_id": room});
    std::fs::write(state_out, state.to_string()).unwrap();
    report
}

async fn state_changes(client: &Client, pid: Option<u32>, state: &Value, changes: usize) -> Value {
    let user = user_of(state);
    let room = state["room_id"].as_str().unwrap();
    let mut lats = Vec::new();
    let meter = Meter::start(pid);
    for i in 0..changes {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", q(room));
        let body = json!({"topic": format!("topic number {i}")});
        let (t, _) = timed(client.request(reqwest::Method::PUT, &path, Some(&user.token), Some(&body))).await;
        lats.push(t);
    }
    meter.stop(json!({"changes": changes, "latency_ms": latencies(lats), "rss_mib_after": rss_mib(pid)}))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = Arc::new(Client::new(&args.url));
    let report = match &args.phase {
        Phase::Setup => {
            let user = client.register(&format!("big{}", run_id())).await;
            let room = client.create_room(&user, "public_chat").await;
            json!({"token": user.token, "user_id": user.user_id, "room_id": room, "rss_mib_idle": rss_mib(args.pid)})
        }
        Phase::BigRoom { state, middle } => {
            big_room(&client, args.pid, args.reps, &read_state(state), middle).await
        }
        Phase::ManyRooms { rooms } => many_rooms(&client, args.pid, args.reps, *rooms).await,
        Phase::BigMembers { members, state_out } => {
            big_members(&client, args.pid, args.reps, *members, state_out).await
        }
        Phase::StateChanges { state, changes } => {
            state_changes(&client, args.pid, &read_state(state), *changes).await
        }
    };
    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("{text}");
    std::fs::write(&args.out, text).unwrap();
}
