//! The HTTP client and measuring helpers shared by the load generator (`myelin-loadgen`, the
//! throughput phases run beside mxbench) and the scale benchmark (`myelin-scale`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(Clone)]
pub struct User {
    pub token: String,
    pub user_id: String,
    pub device_id: String,
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

pub fn q(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    pub fn new(url: &str) -> Client {
        Client {
            http: reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap(),
            base: url.trim_end_matches('/').to_owned(),
        }
    }

    pub async fn get(&self, path: &str, user: &User) -> Value {
        self.request(reqwest::Method::GET, path, Some(&user.token), None).await
    }

    pub async fn post(&self, path: &str, user: &User, body: &Value) -> Value {
        self.request(reqwest::Method::POST, path, Some(&user.token), Some(body)).await
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Value {
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

    pub async fn register(&self, localpart: &str) -> User {
        let body =
            json!({"username": localpart, "password": "loadgen-password", "auth": {"type": "m.login.dummy"}});
        let value =
            self.request(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(&body)).await;
        User {
            token: value["access_token"].as_str().unwrap().to_owned(),
            user_id: value["user_id"].as_str().unwrap().to_owned(),
            device_id: value["device_id"].as_str().unwrap_or_default().to_owned(),
        }
    }

    pub async fn create_room(&self, user: &User, preset: &str) -> String {
        let value = self
            .request(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&user.token),
                Some(&json!({"preset": preset})),
            )
            .await;
        value["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn join(&self, user: &User, room_id: &str) {
        self.request(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", q(room_id)),
            Some(&user.token),
            Some(&json!({})),
        )
        .await;
    }

    pub async fn send(&self, user: &User, room_id: &str, txn: &str, body: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", q(room_id), q(txn));
        let value = self
            .request(
                reqwest::Method::PUT,
                &path,
                Some(&user.token),
                Some(&json!({"msgtype": "m.text", "body": body})),
            )
            .await;
        value["event_id"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        timeout_ms: u64,
        filter: Option<&str>,
    ) -> Value {
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
pub fn process_cpu(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    round(kib / 1024.0)
}

pub fn own_cpu() -> f64 {
    process_cpu(Some(std::process::id()))
}

pub struct Meter {
    started: Instant,
    server: f64,
    client: f64,
    pid: Option<u32>,
}

impl Meter {
    pub fn start(pid: Option<u32>) -> Meter {
        Meter { started: Instant::now(), server: process_cpu(pid), client: own_cpu(), pid }
    }

    pub fn started_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn stop(&self, mut out: Value) -> Value {
        let wall = self.started.elapsed().as_secs_f64();
        out["wall_s"] = json!(round(wall));
        out["server_cpu_cores"] = json!(round((process_cpu(self.pid) - self.server) / wall));
        out["client_cpu_cores"] = json!(round((own_cpu() - self.client) / wall));
        out
    }
}

pub fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn latencies(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return json!({"count": 0});
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        values[((p / 100.0 * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1] * 1000.0
    };
    json!({"count": values.len(), "p50": round(pct(50.0)), "p90": round(pct(90.0)), "p99": round(pct(99.0)), "max": round(pct(100.0))})
}

/// Runs `job(i)` for every `i` below `count`, `in_flight` at a time; the results in index order.
pub async fn run_indexed<T, F, Fut>(count: usize, in_flight: usize, job: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (job, next) = (job.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break done;
                }
                done.push((i, job(i).await));
            }
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await.unwrap());
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Registers `count` users named `{prefix}{i}`, `in_flight` at a time.
pub async fn register_many(client: &Arc<Client>, prefix: &str, count: usize, in_flight: usize) -> Vec<User> {
    let (client, prefix) = (client.clone(), prefix.to_owned());
    run_indexed(count, in_flight, move |i| {
        let (client, name) = (client.clone(), format!("{prefix}{i}"));
        async move { client.register(&name).await }
    })
    .await
}

/// Joins each user to `room`, `in_flight` at a time; each join's latency in seconds.
pub async fn join_all(client: &Arc<Client>, users: Vec<User>, room: &str, in_flight: usize) -> Vec<f64> {
    let (client, users, room) = (client.clone(), Arc::new(users), room.to_owned());
    run_indexed(users.len(), in_flight, move |i| {
        let (client, users, room) = (client.clone(), users.clone(), room.clone());
        async move {
            let t0 = Instant::now();
            client.join(&users[i], &room).await;
            t0.elapsed().as_secs_f64()
        }
    })
    .await
}
