//! The `myelin` binary as users run it: generate-config, run, SIGTERM, restart, Synapse configs,
//! hash-password.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const MYELIN: &str = env!("CARGO_BIN_EXE_myelin");

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn spawn(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(MYELIN)
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("myelin starts")
}

pub(crate) async fn wait_healthy(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://127.0.0.1:{port}/health");
    while Instant::now() < deadline {
        if let Ok(response) = myelin_test_support::http_client().get(&url).send().await
            && response.status() == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("myelin exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("myelin did not become healthy: {}", std::fs::read_to_string(log).unwrap_or_default());
}

/// Sends SIGTERM and returns the exit status and how long the exit took.
pub(crate) fn terminate(child: &mut Child) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(15) {
            child.kill().unwrap();
            panic!("myelin did not exit within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn generate(dir: &Path, port: u16) -> PathBuf {
    let config = dir.join("homeserver.yaml");
    let output = Command::new(MYELIN)
        .args(["generate-config", "--server-name", "example.test", "--config-path"])
        .arg(&config)
        .args(["--data-dir"])
        .arg(dir.join("data"))
        .args(["--report-stats", "no", "--port", &port.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    config
}

#[tokio::test]
async fn generated_config_serves_and_sigterm_stops_cleanly_and_restarts_on_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = generate(dir.path(), port);
    assert!(dir.path().join("example.test.signing.key").exists());
    let log = dir.path().join("run.log");

    let mut child = spawn(&["run", "-c", config.to_str().unwrap()], &log);
    wait_healthy(port, &mut child, &log).await;
    let versions: serde_json::Value = myelin_test_support::http_client()
        .get(format!("http://127.0.0.1:{port}/_matrix/client/versions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(versions["versions"].is_array());
    let keys: serde_json::Value = myelin_test_support::http_client()
        .get(format!("http://127.0.0.1:{port}/_matrix/key/v2/server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(dir.path().join("data/homeserver.pid").exists());

    let (status, took) = terminate(&mut child);
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(!output.contains("ERROR"), "{output}");
    assert!(!dir.path().join("data/homeserver.pid").exists(), "pid file removed on exit");

    // The default subcommand is `run`; the same data and key serve again.
    let mut child = spawn(&["-c", config.to_str().unwrap()], &log);
    wait_healthy(port, &mut child, &log).await;
    let again: serde_json::Value = myelin_test_support::http_client()
        .get(format!("http://127.0.0.1:{port}/_matrix/key/v2/server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["verify_keys"], keys["verify_keys"]);
    let (status, _) = terminate(&mut child);
    assert!(status.success(), "{status}: {}", std::fs::read_to_string(&log).unwrap_or_default());

    // generate-config never overwrites.
    let before = std::fs::read(&config).unwrap();
    generate(dir.path(), port + 1);
    assert_eq!(std::fs::read(&config).unwrap(), before);
}

#[tokio::test]
async fn a_synapse_generated_config_starts_with_warnings_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/fixtures");
    let dir_str = dir.path().to_str().unwrap();
    // The files exactly as Synapse 1.163.2 wrote them into /tmp/syngen, moved into a fresh
    // directory and port, plus a key Myelin does not support.
    let yaml = std::fs::read_to_string(fixtures.join("synapse-1.163.2-homeserver.yaml"))
        .unwrap()
        .replace("/tmp/syngen", dir_str)
        .replace("port: 8008", &format!("port: {port}"))
        .replace("    - ::1\n", "")
        + "\nopentracing:\n  enabled: false\n";
    std::fs::write(dir.path().join("homeserver.yaml"), yaml).unwrap();
    let log_config = std::fs::read_to_string(fixtures.join("synapse-1.163.2.log.config"))
        .unwrap()
        .replace("/tmp/syngen", dir_str);
    std::fs::write(dir.path().join("example.org.log.config"), log_config).unwrap();
    std::fs::write(
        dir.path().join("example.org.signing.key"),
        "ed25519 a_jxFJ y4IsZGr+kEEuquSYpzV2dkXAT6PZGr2VCYzi3VSiqy0\n",
    )
    .unwrap();

    let log = dir.path().join("stdout.log");
    let mut child = spawn(&["-c", dir.path().join("homeserver.yaml").to_str().unwrap()], &log);
    wait_healthy(port, &mut child, &log).await;
    let keys: serde_json::Value = myelin_test_support::http_client()
        .get(format!("http://127.0.0.1:{port}/_matrix/key/v2/server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(keys["verify_keys"]["ed25519:a_jxFJ"].is_object(), "Synapse's signing key is used: {keys}");
    let (status, _) = terminate(&mut child);
    assert!(status.success(), "{status}: {}", std::fs::read_to_string(&log).unwrap_or_default());

    // Synapse's log config sends logs to homeserver.log in the data directory.
    let logged = std::fs::read_to_string(dir.path().join("homeserver.log")).unwrap();
    let warnings: Vec<&str> = logged.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning for opentracing: {warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("opentracing")));
    assert!(!logged.contains("ERROR"), "{logged}");
}

#[tokio::test]
async fn one_line_start_generates_a_config_on_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("run.log");
    // The one-liner serves on 8008, which may be taken on a shared machine: generate first with
    // the same code path, then only rewrite the port.
    let mut child = spawn(&["run", "--server-name", "localhost", "--data-dir", data.to_str().unwrap()], &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("homeserver.yaml").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = terminate(&mut child);
    let text = std::fs::read_to_string(data.join("homeserver.yaml")).unwrap();
    assert!(text.contains("server_name: \"localhost\""));
    assert!(text.contains("bind_addresses: ['127.0.0.1']") && text.contains("port: 8008"));
    assert!(text.contains("name: sqlite3"));
    let port = free_port();
    std::fs::write(data.join("homeserver.yaml"), text.replace("port: 8008", &format!("port: {port}")))
        .unwrap();
    let mut child = spawn(&["run", "--server-name", "localhost", "--data-dir", data.to_str().unwrap()], &log);
    wait_healthy(port, &mut child, &log).await;
    let (status, _) = terminate(&mut child);
    assert!(status.success(), "{status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
}

#[test]
fn hash_password_reads_stdin_and_honours_rounds_and_pepper() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("homeserver.yaml");
    std::fs::write(&config, "server_name: a.test\nbcrypt_rounds: 5\npassword_config:\n  pepper: spicy\n")
        .unwrap();
    let mut child = Command::new(MYELIN)
        .args(["hash-password", "-c", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$2b$05$"), "{hash}");
    let loaded = myelin_config::load(&[config]).unwrap();
    let hasher = myelin_service::passwords::PasswordHasher::new(&loaded.config.password);
    assert!(hasher.verify_blocking("hunter2", &hash));
    assert!(!hasher.verify_blocking("hunter3", &hash));

    let output = Command::new(MYELIN).args(["hash-password", "-p", ""]).output().unwrap();
    assert!(!output.status.success());
}

/// Registers `localpart` with the shared secret of the generated config and returns its access
/// token.
async fn register_with_shared_secret(config: &Path, port: u16, localpart: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let secret = text
        .lines()
        .find_map(|line| line.strip_prefix("registration_shared_secret: "))
        .map(|value| serde_json::from_str::<String>(value).expect("a quoted secret"))
        .expect("the generated config has a registration shared secret");
    let client = myelin_test_support::TestClient::new(&format!("http://127.0.0.1:{port}"));
    let nonce =
        client.get("/_synapse/admin/v1/register").await.expect(200)["nonce"].as_str().unwrap().to_owned();
    let mac = myelin_test_support::shared_secret_mac(&secret, &nonce, localpart, "a password", false, None);
    let body = serde_json::json!({"nonce": nonce, "username": localpart, "password": "a password", "admin": false, "mac": mac});
    let registered = client.post("/_synapse/admin/v1/register", &body).await;
    registered.expect(200)["access_token"].as_str().unwrap().to_owned()
}

/// Creates a room and sends messages and state to it: every event goes through the
/// authorization rules.
async fn create_room_and_send_events(port: u16, token: &str) {
    let client = myelin_test_support::TestClient::new(&format!("http://127.0.0.1:{port}")).with_token(token);
    let created = client.post("/_matrix/client/v3/createRoom", &serde_json::json!({"name": "logs"})).await;
    let room_id = created.expect(200)["room_id"].as_str().unwrap().to_owned();
    for n in 0..3 {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/txn{n}");
        let sent = client
            .put(&path, &serde_json::json!({"msgtype": "m.text", "body": format!("message {n}")}))
            .await;
        assert!(sent.expect(200)["event_id"].is_string());
    }
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/");
    client.put(&path, &serde_json::json!({"topic": "quiet logs"})).await.expect(200);
}

/// The log lines at INFO from ruma's state resolution and authorization checks.
fn state_res_info_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.contains(" INFO ") && line.contains("ruma_state_res")).collect()
}

#[tokio::test]
async fn state_resolution_detail_stays_out_of_the_default_log_unless_a_logger_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = generate(dir.path(), port);
    let log = dir.path().join("run.log");
    let run = |log: &Path| {
        let log = std::fs::File::create(log).unwrap();
        Command::new(MYELIN)
            .args(["run", "-c", config.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("myelin starts")
    };

    // The generated config logs at INFO: requests are logged, the auth checks are not.
    let mut child = run(&log);
    wait_healthy(port, &mut child, &log).await;
    let token = register_with_shared_secret(&config, port, "alice").await;
    create_room_and_send_events(port, &token).await;
    let (status, _) = terminate(&mut child);
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {output}");
    assert!(output.lines().any(|line| line.contains(" INFO ") && line.contains("/createRoom")), "{output}");
    let noisy = state_res_info_lines(&output);
    assert!(noisy.is_empty(), "{} INFO lines from state-res, e.g. {:?}", noisy.len(), noisy.first());

    // A log config whose `loggers:` names ruma's target gets its detail.
    let log_config = dir.path().join("log.config");
    std::fs::write(
        &log_config,
        "version: 1\nhandlers:\n  console:\n    class: logging.StreamHandler\nloggers:\n  ruma_state_res:\n    level: INFO\nroot:\n  level: INFO\n  handlers: [console]\n",
    )
    .unwrap();
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str(&format!(
        "\nlog_config: {}\n",
        serde_json::to_string(log_config.to_str().unwrap()).unwrap()
    ));
    std::fs::write(&config, yaml).unwrap();
    let mut child = run(&log);
    wait_healthy(port, &mut child, &log).await;
    create_room_and_send_events(port, &token).await;
    let (status, _) = terminate(&mut child);
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {output}");
    assert!(!state_res_info_lines(&output).is_empty(), "{output}");
}
