//! Runs mxbench's throughput phases (registration, sends into one room and into many rooms,
//! joins, delivery latency, initial sync) from Rust, so that a fast server is measured rather
//! than the Python client. Prints a JSON report with, per phase, the rate, latency
//! percentiles, and the CPU used by the server process (`--pid`) and by this client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// The server process, for CPU accounting.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, default_value_t = 20000)]
    messages: usize,
    #[arg(long, default_value_t = 10)]
    senders: usize,
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    #[arg(long, default_value_t = 199)]
    joiners: usize,
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    #[arg(long, default_value_t = 200)]
    delivery: usize,
    #[arg(long)]
    out: Option<String>,
}

#[derive(Clone)]
struct User {
    token: String,
}

struct Client {
    http: reqwest::Client,
    base: String,
}

fn q(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    async fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Value {
        for attempt in 0..50 {
            let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            if status == 429 {
                let wait = value["retry_after_ms"].as_u64().unwrap_or(100);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            if status == 401 && path.ends_with("/register") {
                return value;
            }
            assert!(status == 200, "{method} {path} (attempt {attempt}): {status} {value}");
            return value;
        }
        panic!("{path}: still rate limited");
    }

    async fn register(&self, localpart: &str) -> User {
        let body = json!({"username": localpart, "password": "loadgen-password", "auth": {"type": "m.login.dummy"}});
        let value = self.request(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(&body)).await;
        User { token: value["access_token"].as_str().unwrap().to_owned() }
    }

    async fn create_room(&self, user: &User, preset: &str) -> String {
        let value = self
            .request(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&user.token), Some(&json!({"preset": preset})))
            .await;
        value["room_id"].as_str().unwrap().to_owned()
    }

    async fn join(&self, user: &User, room_id: &str) {
        self.request(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{}", q(room_id)), Some(&user.token), Some(&json!({})))
            .await;
    }

    async fn send(&self, user: &User, room_id: &str, txn: &str, body: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", q(room_id), q(txn));
        let value =
            self.request(reqwest::Method::PUT, &path, Some(&user.token), Some(&json!({"msgtype": "m.text", "body": body}))).await;
        value["event_id"].as_str().unwrap_or_default().to_owned()
    }

    async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64, filter: Option<&str>) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={}", q(since)));
        }
        if let Some(filter) = filter {
            path.push_str(&format!("&filter={}", q(filter)));
        }
        self.request(reqwest::Method::GET, &path, Some(&user.token), None).await
    }
}

/// CPU seconds of a process tree's root (user + system).
fn process_cpu(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn own_cpu() -> f64 {
    process_cpu(Some(std::process::id()))
}

struct Meter {
    started: Instant,
    server: f64,
    client: f64,
    pid: Option<u32>,
}

impl Meter {
    fn start(pid: Option<u32>) -> Meter {
        Meter { started: Instant::now(), server: process_cpu(pid), client: own_cpu(), pid }
    }

    fn stop(&self, mut out: Value) -> Value {
        let wall = self.started.elapsed().as_secs_f64();
        out["wall_s"] = json!(round(wall));
        out["server_cpu_cores"] = json!(round((process_cpu(self.pid) - self.server) / wall));
        out["client_cpu_cores"] = json!(round((own_cpu() - self.client) / wall));
        out
    }
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn latencies(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return json!({"count": 0});
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| values[((p / 100.0 * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1] * 1000.0;
    json!({"count": values.len(), "p50": round(pct(50.0)), "p90": round(pct(90.0)), "p99": round(pct(99.0)), "max": round(pct(100.0))})
}

async fn send_load(client: Arc<Client>, targets: Arc<Vec<(String, User)>>, total: usize, in_flight: usize, run: &str) -> (f64, Value) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for worker in 0..in_flight {
        let (client, targets, next) = (client.clone(), targets.clone(), next.clone());
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break lats;
                }
                let (room, user) = &targets[if targets.len() == in_flight { worker } else { i % targets.len() }];
                let t0 = Instant::now();
                client.send(user, room, &format!("{run}-{i}"), &format!("loadgen message {i}")).await;
                lats.push(t0.elapsed().as_secs_f64());
            }
        }));
    }
    let mut lats = Vec::new();
    for task in tasks {
        lats.extend(task.await.unwrap());
    }
    (total as f64 / started.elapsed().as_secs_f64(), latencies(lats))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let run: String = (0..6).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
    let client = Arc::new(Client {
        http: reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap(),
        base: args.url.trim_end_matches('/').to_owned(),
    });
    let mut report = json!({"tool": "myelin-loadgen", "run_id": run, "url": args.url});

    // Users (registration is bcrypt-bound: it measures the hash cost, not the server).
    let needed = args.senders.max(args.joiners + 1).max(args.rooms.min(args.senders)) + 2;
    let meter = Meter::start(args.pid);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, run) = (client.clone(), next.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut users = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= needed {
                    break users;
                }
                users.push((i, client.register(&format!("lg{run}u{i}")).await));
            }
        }));
    }
    let mut users: Vec<(usize, User)> = Vec::new();
    for task in tasks {
        users.extend(task.await.unwrap());
    }
    users.sort_by_key(|(i, _)| *i);
    let users: Vec<User> = users.into_iter().map(|(_, u)| u).collect();
    report["register"] = meter.stop(json!({"users": needed, "per_s": 0}));
    report["register"]["per_s"] = json!(round(needed as f64 / report["register"]["wall_s"].as_f64().unwrap()));
    eprintln!("registered {needed} users");

    // One room, K senders.
    let owner = users[0].clone();
    let room = client.create_room(&owner, "public_chat").await;
    for user in &users[1..args.senders] {
        client.join(user, &room).await;
    }
    let targets: Arc<Vec<(String, User)>> = Arc::new(users[..args.senders].iter().map(|u| (room.clone(), u.clone())).collect());
    let meter = Meter::start(args.pid);
    let (rate, lats) = send_load(client.clone(), targets, args.messages, args.senders, &format!("{run}a")).await;
    report["send_one_room"] = meter.stop(json!({"events": args.messages, "senders": args.senders, "events_per_s": round(rate), "latency_ms": lats}));
    eprintln!("one room: {rate:.0} events/s");

    // Many rooms, K in flight.
    let mut rooms = Vec::new();
    for i in 0..args.rooms {
        let user = users[i % args.senders].clone();
        rooms.push((client.create_room(&user, "private_chat").await, user));
    }
    let meter = Meter::start(args.pid);
    let (rate, lats) = send_load(client.clone(), Arc::new(rooms), args.messages, args.senders, &format!("{run}b")).await;
    report["send_many_rooms"] = meter.stop(json!({"events": args.messages, "rooms": args.rooms, "events_per_s": round(rate), "latency_ms": lats}));
    eprintln!("many rooms: {rate:.0} events/s");

    // Joins: J users join one public room, `concurrency` in flight.
    let room = client.create_room(&owner, "public_chat").await;
    let joiners: Arc<Vec<User>> = Arc::new(users[1..=args.joiners].to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(args.pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, joiners, next, room) = (client.clone(), joiners.clone(), next.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= joiners.len() {
                    break lats;
                }
                let t0 = Instant::now();
                client.join(&joiners[i], &room).await;
                lats.push(t0.elapsed().as_secs_f64());
            }
        }));
    }
    let mut lats = Vec::new();
    for task in tasks {
        lats.extend(task.await.unwrap());
    }
    let rate = args.joiners as f64 / started.elapsed().as_secs_f64();
    report["joins"] = meter.stop(json!({"joiners": args.joiners, "per_s": round(rate), "latency_ms": latencies(lats)}));
    eprintln!("joins: {rate:.0}/s");

    // Delivery: send -> another user's long-polling sync returns with it.
    let (sender, receiver) = (users[0].clone(), users[1].clone());
    let room = client.create_room(&sender, "public_chat").await;
    client.join(&receiver, &room).await;
    let filter = json!({"room": {"rooms": [room], "timeline": {"limit": 50}}, "presence": {"types": []}, "account_data": {"types": []}}).to_string();
    let mut since = client.sync(&receiver, None, 0, Some(&filter)).await["next_batch"].as_str().unwrap().to_owned();
    let mut lats = Vec::new();
    let meter = Meter::start(args.pid);
    for i in 0..args.delivery {
        let marker = format!("delivery {run} {i}");
        let poll = {
            let (client, receiver, since, filter) = (client.clone(), receiver.clone(), since.clone(), filter.clone());
            tokio::spawn(async move { client.sync(&receiver, Some(&since), 30000, Some(&filter)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        client.send(&sender, &room, &format!("{run}d{i}"), &marker).await;
        let mut response = poll.await.unwrap();
        loop {
            since = response["next_batch"].as_str().unwrap().to_owned();
            let found = response["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == marker.as_str()));
            if found {
                break;
            }
            response = client.sync(&receiver, Some(&since), 30000, Some(&filter)).await;
        }
        lats.push(t0.elapsed().as_secs_f64());
    }
    report["delivery"] = meter.stop(json!({"messages": args.delivery, "latency_ms": latencies(lats)}));
    eprintln!("delivery: {}", report["delivery"]["latency_ms"]);

    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("{text}");
    if let Some(out) = args.out {
        std::fs::write(out, text).unwrap();
    }
}
