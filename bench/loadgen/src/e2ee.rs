//! The end-to-end encryption rows of the benchmark, run the same way against Synapse and Myelin:
//!
//! - `claim`: `--claimers` clients claim one-time keys concurrently from `--otk-devices` devices
//!   that each uploaded `--otks-per-device` keys; every key handed out is recorded, and the report
//!   counts keys handed out twice (must be 0) and claims that came back empty.
//! - `query`: a user shares a room with `--query-users` users who each uploaded signed device keys,
//!   then asks for all of their keys `--queries` times (`--query-concurrency` in flight).
//! - `to_device`: `--to-device-messages` messages sent one per request to `--to-device-devices`
//!   devices (`--concurrency` in flight), then every device syncs until it has all of its own;
//!   the rate counts from the first send to the last delivery.
//!
//! Prints a JSON report (rate, latency percentiles, server and client CPU per phase).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use clap::Parser;
use ed25519_dalek::{Signer, SigningKey};
use myelin_loadgen::{Client, Meter, User, join_all, latencies, q, register_many, round, run_indexed};
use serde_json::{Value, json};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// The server process, for CPU accounting.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, default_value_t = 10)]
    claimers: usize,
    #[arg(long, default_value_t = 10)]
    otk_devices: usize,
    #[arg(long, default_value_t = 200)]
    otks_per_device: usize,
    #[arg(long, default_value_t = 1000)]
    query_users: usize,
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(long, default_value_t = 4)]
    query_concurrency: usize,
    #[arg(long, default_value_t = 100)]
    to_device_devices: usize,
    #[arg(long, default_value_t = 1000)]
    to_device_messages: usize,
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    #[arg(long)]
    out: Option<String>,
}

fn b64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// Signs `object` (without `signatures` and `unsigned`) as `user_id`'s device `device_id`, the way
/// the spec's signing JSON algorithm does: canonical JSON (serde_json's default map is sorted and
/// the output compact; everything signed here is ASCII).
fn sign(object: &mut Value, key: &SigningKey, user_id: &str, device_id: &str) {
    let mut unsigned = object.clone();
    let map = unsigned.as_object_mut().unwrap();
    map.remove("signatures");
    map.remove("unsigned");
    let signature = key.sign(serde_json::to_string(&unsigned).unwrap().as_bytes());
    object["signatures"] = json!({user_id: {format!("ed25519:{device_id}"): b64(&signature.to_bytes())}});
}

fn device_keys(user: &User) -> Value {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let mut keys = json!({
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", user.device_id): b64(&rand::random::<[u8; 32]>()),
            format!("ed25519:{}", user.device_id): b64(key.verifying_key().as_bytes()),
        },
    });
    sign(&mut keys, &key, &user.user_id, &user.device_id);
    keys
}

async fn login(client: &Client, user_id: &str) -> User {
    let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": "loadgen-password"});
    let value = client.request(reqwest::Method::POST, "/_matrix/client/v3/login", None, Some(&body)).await;
    User {
        token: value["access_token"].as_str().unwrap().to_owned(),
        user_id: value["user_id"].as_str().unwrap().to_owned(),
        device_id: value["device_id"].as_str().unwrap().to_owned(),
    }
}

/// The claim phase: returns its report.
async fn claim_phase(client: &Arc<Client>, args: &Args, owner: &User, claimers: &[User]) -> Value {
    // The owner's devices: the registration device plus logins.
    let mut devices = vec![owner.clone()];
    for _ in 1..args.otk_devices {
        devices.push(login(client, &owner.user_id).await);
    }
    for device in &devices {
        let mut keys = serde_json::Map::new();
        for i in 0..args.otks_per_device {
            // Unchecked signatures: no device keys were uploaded for these devices, on either server.
            keys.insert(
                format!("signed_curve25519:AAAA{i}"),
                json!({"key": b64(&rand::random::<[u8; 32]>()), "signatures": {owner.user_id.clone(): {format!("ed25519:{}", device.device_id): b64(&[0u8; 64])}}}),
            );
        }
        let response = client.post("/_matrix/client/v3/keys/upload", device, &json!({"one_time_keys": keys})).await;
        assert_eq!(
            response["one_time_key_counts"]["signed_curve25519"].as_u64(),
            Some(args.otks_per_device as u64),
            "upload: {response}"
        );
    }

    let total = args.otk_devices * args.otks_per_device;
    let (client2, owner_id) = (client.clone(), owner.user_id.clone());
    let (devices, claimers) = (Arc::new(devices), Arc::new(claimers.to_vec()));
    let meter = Meter::start(args.pid);
    let started = Instant::now();
    let results = run_indexed(total, args.claimers, move |i| {
        let (client, owner_id, devices, claimers) =
            (client2.clone(), owner_id.clone(), devices.clone(), claimers.clone());
        async move {
            let device_id = devices[i % devices.len()].device_id.clone();
            let claimer = &claimers[i % claimers.len()];
            let body = json!({"one_time_keys": {owner_id.clone(): {device_id.clone(): "signed_curve25519"}}});
            let t0 = Instant::now();
            let response = client.post("/_matrix/client/v3/keys/claim", claimer, &body).await;
            let latency = t0.elapsed().as_secs_f64();
            let key_id = response["one_time_keys"][&owner_id][&device_id]
                .as_object()
                .and_then(|keys| keys.keys().next().cloned())
                .map(|key_id| format!("{device_id}/{key_id}"));
            (latency, key_id)
        }
    })
    .await;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let mut seen = HashSet::new();
    let (mut duplicates, mut empty) = (0, 0);
    let mut lats = Vec::new();
    for (latency, key_id) in results {
        lats.push(latency);
        match key_id {
            Some(key_id) => duplicates += usize::from(!seen.insert(key_id)),
            None => empty += 1,
        }
    }
    eprintln!("claim: {rate:.0}/s, {duplicates} duplicates, {empty} empty");
    meter.stop(json!({"claims": total, "claimers": args.claimers, "per_s": round(rate), "latency_ms": latencies(lats), "duplicates": duplicates, "empty": empty}))
}

/// The query phase: returns its report.
async fn query_phase(client: &Arc<Client>, args: &Args, querier: &User, users: &[User]) -> Value {
    let room = client.create_room(querier, "public_chat").await;
    join_all(client, users.to_vec(), &room, args.concurrency).await;
    let (client2, shared) = (client.clone(), Arc::new(users.to_vec()));
    run_indexed(users.len(), args.concurrency, move |i| {
        let (client, users) = (client2.clone(), shared.clone());
        async move {
            let user = &users[i];
            client.post("/_matrix/client/v3/keys/upload", user, &json!({"device_keys": device_keys(user)})).await;
        }
    })
    .await;

    let wanted: serde_json::Map<String, Value> =
        users.iter().map(|user| (user.user_id.clone(), json!([]))).collect();
    let body = Arc::new(json!({"device_keys": wanted}));
    // One untimed query first: it checks the answer and warms the caches of both servers alike.
    let response = client.post("/_matrix/client/v3/keys/query", querier, &body).await;
    let answered = response["device_keys"].as_object().map_or(0, |users| {
        users.values().filter(|devices| devices.as_object().is_some_and(|d| !d.is_empty())).count()
    });
    assert_eq!(answered, users.len(), "keys/query answered for {answered} of {} users", users.len());

    let (client2, querier2) = (client.clone(), querier.clone());
    let meter = Meter::start(args.pid);
    let started = Instant::now();
    let lats = run_indexed(args.queries, args.query_concurrency, move |_| {
        let (client, querier, body) = (client2.clone(), querier2.clone(), body.clone());
        async move {
            let t0 = Instant::now();
            client.post("/_matrix/client/v3/keys/query", &querier, &body).await;
            t0.elapsed().as_secs_f64()
        }
    })
    .await;
    let rate = args.queries as f64 / started.elapsed().as_secs_f64();
    eprintln!("query: {rate:.1}/s for {} users", users.len());
    meter.stop(json!({"users": users.len(), "queries": args.queries, "per_s": round(rate), "latency_ms": latencies(lats)}))
}

/// The to-device phase: returns its report.
async fn to_device_phase(client: &Arc<Client>, args: &Args, sender: &User, devices: &[User]) -> Value {
    let filter = json!({"room": {"rooms": []}, "presence": {"types": []}, "account_data": {"types": []}}).to_string();
    let mut since = Vec::new();
    for device in devices {
        let response = client.sync(device, None, 0, Some(&filter)).await;
        since.push(response["next_batch"].as_str().unwrap().to_owned());
    }
    let run: String = (0..6).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
    let (client2, sender2, targets) = (client.clone(), sender.clone(), Arc::new(devices.to_vec()));
    let meter = Meter::start(args.pid);
    let started = Instant::now();
    let send_lats = run_indexed(args.to_device_messages, args.concurrency, move |i| {
        let (client, sender, targets, run) = (client2.clone(), sender2.clone(), targets.clone(), run.clone());
        async move {
            let target = &targets[i % targets.len()];
            let body = json!({"messages": {target.user_id.clone(): {target.device_id.clone(): {"n": i}}}});
            let path = format!("/_matrix/client/v3/sendToDevice/org.example.bench/{}", q(&format!("{run}{i}")));
            let t0 = Instant::now();
            client.request(reqwest::Method::PUT, &path, Some(&sender.token), Some(&body)).await;
            t0.elapsed().as_secs_f64()
        }
    })
    .await;
    let send_wall = started.elapsed().as_secs_f64();

    let (client2, targets, filter) = (client.clone(), Arc::new(devices.to_vec()), Arc::new(filter));
    let (since, messages) = (Arc::new(since), args.to_device_messages);
    let received = run_indexed(devices.len(), args.concurrency, move |i| {
        let (client, targets, filter, since) = (client2.clone(), targets.clone(), filter.clone(), since.clone());
        async move {
            let expected = messages / targets.len() + usize::from(i < messages % targets.len());
            let mut token = since[i].clone();
            let mut got = 0;
            while got < expected {
                let response = client.sync(&targets[i], Some(&token), 5000, Some(&filter)).await;
                got += response["to_device"]["events"]
                    .as_array()
                    .map_or(0, |events| events.iter().filter(|e| e["type"] == "org.example.bench").count());
                token = response["next_batch"].as_str().unwrap().to_owned();
            }
            got
        }
    })
    .await;
    let wall = started.elapsed().as_secs_f64();
    let delivered: usize = received.iter().sum();
    let rate = delivered as f64 / wall;
    eprintln!("to-device: {rate:.0} messages/s ({delivered} delivered)");
    meter.stop(json!({"messages": args.to_device_messages, "devices": devices.len(), "delivered": delivered, "per_s": round(rate), "send_wall_s": round(send_wall), "send_latency_ms": latencies(send_lats)}))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let run: String = (0..6).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
    let client = Arc::new(Client::new(&args.url));
    let mut report = json!({"tool": "myelin-e2ee", "run_id": run, "url": args.url});

    // Users (registration is bcrypt-bound on both servers; not measured).
    let needed = args.query_users.max(args.to_device_devices).max(args.claimers) + 2;
    let users = register_many(&client, &format!("e2{run}u"), needed, args.concurrency).await;
    eprintln!("registered {needed} users");
    let (owner, querier, rest) = (&users[0], &users[1], &users[2..]);

    report["claim"] = claim_phase(&client, &args, owner, &rest[..args.claimers]).await;
    report["query"] = query_phase(&client, &args, querier, &rest[..args.query_users]).await;
    report["to_device"] = to_device_phase(&client, &args, querier, &rest[..args.to_device_devices]).await;

    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("{text}");
    if let Some(out) = args.out {
        std::fs::write(out, text).unwrap();
    }
}
