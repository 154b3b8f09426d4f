//! Runs mxbench's throughput phases (registration, sends into one room and into many rooms,
//! joins, delivery latency, initial sync) from Rust, so that a fast server is measured rather
//! than the Python client. Prints a JSON report with, per phase, the rate, latency
//! percentiles, and the CPU used by the server process (`--pid`) and by this client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use myelin_loadgen::{Client, Meter, User, join_all, latencies, register_many, round};
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

async fn send_load(
    client: Arc<Client>,
    targets: Arc<Vec<(String, User)>>,
    total: usize,
    in_flight: usize,
    run: &str,
) -> (f64, Value) {
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
                let (room, user) =
                    &targets[if targets.len() == in_flight { worker } else { i % targets.len() }];
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
    let client = Arc::new(Client::new(&args.url));
    let mut report = json!({"tool": "myelin-loadgen", "run_id": run, "url": args.url});

    // Users (registration is bcrypt-bound: it measures the hash cost, not the server).
    let needed = args.senders.max(args.joiners + 1).max(args.rooms.min(args.senders)) + 2;
    let meter = Meter::start(args.pid);
    let users = register_many(&client, &format!("lg{run}u"), needed, args.concurrency).await;
    report["register"] = meter.stop(json!({"users": needed, "per_s": 0}));
    report["register"]["per_s"] =
        json!(round(needed as f64 / report["register"]["wall_s"].as_f64().unwrap()));
    eprintln!("registered {needed} users");

    // One room, K senders.
    let owner = users[0].clone();
    let room = client.create_room(&owner, "public_chat").await;
    for user in &users[1..args.senders] {
        client.join(user, &room).await;
    }
    let targets: Arc<Vec<(String, User)>> =
        Arc::new(users[..args.senders].iter().map(|u| (room.clone(), u.clone())).collect());
    let meter = Meter::start(args.pid);
    let (rate, lats) =
        send_load(client.clone(), targets, args.messages, args.senders, &format!("{run}a")).await;
    report["send_one_room"] = meter.stop(json!({"events": args.messages, "senders": args.senders, "events_per_s": round(rate), "latency_ms": lats}));
    eprintln!("one room: {rate:.0} events/s");

    // Many rooms, K in flight.
    let mut rooms = Vec::new();
    for i in 0..args.rooms {
        let user = users[i % args.senders].clone();
        rooms.push((client.create_room(&user, "private_chat").await, user));
    }
    let meter = Meter::start(args.pid);
    let (rate, lats) =
        send_load(client.clone(), Arc::new(rooms), args.messages, args.senders, &format!("{run}b")).await;
    report["send_many_rooms"] = meter.stop(json!({"events": args.messages, "rooms": args.rooms, "events_per_s": round(rate), "latency_ms": lats}));
    eprintln!("many rooms: {rate:.0} events/s");

    // Joins: J users join one public room, `concurrency` in flight.
    let room = client.create_room(&owner, "public_chat").await;
    let meter = Meter::start(args.pid);
    let started = Instant::now();
    let lats = join_all(&client, users[1..=args.joiners].to_vec(), &room, args.concurrency).await;
    let rate = args.joiners as f64 / started.elapsed().as_secs_f64();
    report["joins"] =
        meter.stop(json!({"joiners": args.joiners, "per_s": round(rate), "latency_ms": latencies(lats)}));
    eprintln!("joins: {rate:.0}/s");

    // Delivery: send -> another user's long-polling sync returns with it.
    let (sender, receiver) = (users[0].clone(), users[1].clone());
    let room = client.create_room(&sender, "public_chat").await;
    client.join(&receiver, &room).await;
    let filter = json!({"room": {"rooms": [room], "timeline": {"limit": 50}}, "presence": {"types": []}, "account_data": {"types": []}}).to_string();
    let mut since =
        client.sync(&receiver, None, 0, Some(&filter)).await["next_batch"].as_str().unwrap().to_owned();
    let mut lats = Vec::new();
    let meter = Meter::start(args.pid);
    for i in 0..args.delivery {
        let marker = format!("delivery {run} {i}");
        let poll = {
            let (client, receiver, since, filter) =
                (client.clone(), receiver.clone(), since.clone(), filter.clone());
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
