//! Compatibility with third-party tools: Synapse's `register_new_matrix_user` and
//! `hash_password`, matrix-nio, and our own `myelin register-user`.

use std::path::Path;
use std::process::Command;

use myelin_test_support::{TestServer, pytools_bin};
use serde_json::{Value, json};

const MYELIN: &str = env!("CARGO_BIN_EXE_myelin");

/// Runs a command off the test's runtime thread (the server under test shares that runtime).
async fn run_command(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().expect("the command runs")).await.unwrap()
}

fn command(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

/// Logs `user` in and asks an admin-only endpoint: a server admin gets 200 and the token list.
async fn assert_admin(server: &TestServer, user: &str, password: &str) {
    let response = admin_api_as(server, user, password).await;
    assert!(response.expect(200)["registration_tokens"].is_array(), "{}", response.json);
}

/// Logs `user` in and asks an admin-only endpoint: anyone else gets 403 M_FORBIDDEN (not any
/// other failure, which would say nothing about admin rights).
async fn assert_not_admin(server: &TestServer, user: &str, password: &str) {
    admin_api_as(server, user, password).await.expect_error(403, "M_FORBIDDEN");
}

async fn admin_api_as(server: &TestServer, user: &str, password: &str) -> myelin_test_support::TestResponse {
    let login = server
        .client()
        .post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.password", "user": user, "password": password}),
        )
        .await;
    let token = login.expect(200)["access_token"].as_str().unwrap().to_owned();
    server.client().with_token(&token).get("/_synapse/admin/v1/registration_tokens").await
}

#[tokio::test]
async fn synapse_register_new_matrix_user_registers_an_admin() {
    let Some(bin) = pytools_bin() else { return };
    let server = TestServer::start().await;
    let output = run_command(command(
        bin.join("register_new_matrix_user"),
        &[
            "-c",
            server.config_path.to_str().unwrap(),
            "-u",
            "provbot",
            "-p",
            "bot-secret",
            "-a",
            &server.base_url,
        ],
    ))
    .await;
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Success!"));
    assert_admin(&server, "provbot", "bot-secret").await;

    // --no-admin, and --exists-ok on a second run.
    let output = run_command(command(
        bin.join("register_new_matrix_user"),
        &[
            "-k",
            myelin_test_support::REGISTRATION_SHARED_SECRET,
            "-u",
            "plain",
            "-p",
            "pw",
            "--no-admin",
            &server.base_url,
        ],
    ))
    .await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_not_admin(&server, "plain", "pw").await;
    let output = run_command(command(
        bin.join("register_new_matrix_user"),
        &[
            "-c",
            server.config_path.to_str().unwrap(),
            "-u",
            "plain",
            "-p",
            "pw",
            "--no-admin",
            "--exists-ok",
            &server.base_url,
        ],
    ))
    .await;
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("User already exists"));

    // A wrong secret is refused.
    let output = run_command(command(
        bin.join("register_new_matrix_user"),
        &["-k", "wrong-secret", "-u", "mallory", "-p", "pw", "-a", &server.base_url],
    ))
    .await;
    let printed =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{printed}");
    // The tool prints the status and the server's `error`.
    assert!(printed.contains("ERROR! Received 403 Forbidden"), "{printed}");
    assert!(printed.contains("HMAC incorrect"), "{printed}");
    // Nothing was registered.
    let login = json!({"type": "m.login.password", "user": "mallory", "password": "pw"});
    server.client().post("/_matrix/client/v3/login", &login).await.expect_error(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn synapse_hash_password_output_logs_in() {
    let Some(bin) = pytools_bin() else { return };
    for pepper in [None, Some("sea-salt")] {
        let config = match pepper {
            Some(pepper) => json!({"password_config": {"pepper": pepper}}),
            None => json!({}),
        };
        let server = TestServer::start_with(config).await;
        let output = run_command(command(
            bin.join("hash_password"),
            &["-c", server.config_path.to_str().unwrap(), "-p", "hunter2"],
        ))
        .await;
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        assert!(hash.starts_with("$2b$04$"), "{hash}");
        let user = server.register("imported").await;
        server.services().store().set_password_hash(&user.user_id, Some(&hash)).await.unwrap();
        let login = server
            .client()
            .post(
                "/_matrix/client/v3/login",
                &json!({"type": "m.login.password", "user": "imported", "password": "hunter2"}),
            )
            .await;
        login.expect(200);
        server.stop().await;
    }
}

#[tokio::test]
async fn matrix_nio_logs_in_and_out() {
    let Some(bin) = pytools_bin() else { return };
    let server = TestServer::start().await;
    let user = server.register("nio").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/nio_login.py");
    let server_url = server.base_url.clone();
    let user_id = user.user_id.clone();
    let password = user.password.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(bin.join("python"))
            .arg(script)
            .args([&server_url, &user_id, &password])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["user_id"], user.user_id.as_str());
    assert_eq!(report["whoami"], user.user_id.as_str());
    // nio's logout ended its session on the server.
    server
        .client()
        .with_token(report["access_token"].as_str().unwrap())
        .get("/_matrix/client/v3/account/whoami")
        .await
        .expect_error(401, "M_UNKNOWN_TOKEN");
    let devices = user.client.get("/_matrix/client/v3/devices").await.expect(200).clone();
    assert!(devices["devices"].as_array().unwrap().iter().all(|d| d["device_id"] != report["device_id"]));
    server.stop().await;
}

#[tokio::test]
async fn myelin_register_user_behaves_like_register_new_matrix_user() {
    let server = TestServer::start().await;
    let run = async |args: Vec<String>| {
        let mut command = Command::new(MYELIN);
        command.arg("register-user").args(args);
        let output = run_command(command).await;
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let config = server.config_path.to_str().unwrap().to_owned();
    let (ok, out) = run(vec![
        "-c".into(),
        config.clone(),
        "-u".into(),
        "root".into(),
        "-p".into(),
        "pw-1".into(),
        "-a".into(),
        server.base_url.clone(),
    ])
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("Success!"));
    assert_admin(&server, "root", "pw-1").await;
    let (ok, out) = run(vec![
        "-c".into(),
        config.clone(),
        "-u".into(),
        "root".into(),
        "-p".into(),
        "pw-1".into(),
        "--no-admin".into(),
        server.base_url.clone(),
    ])
    .await;
    assert!(!ok && out.contains("already taken"), "{out}");
    let (ok, out) = run(vec![
        "-k".into(),
        "wrong".into(),
        "-u".into(),
        "x".into(),
        "-p".into(),
        "y".into(),
        "--no-admin".into(),
        server.base_url.clone(),
    ])
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("registration failed: the server answered 403 Forbidden: HMAC incorrect"), "{out}");

    // Without a URL it finds the client listener in the config, and reads the secret from it.
    let port = server.base_url.rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("homeserver.yaml");
    std::fs::write(
        &yaml,
        format!(
            "server_name: test.local\nregistration_shared_secret: {}\nlisteners:\n  - port: 9\n    type: metrics\n  - port: {port}\n    type: http\n    resources: [{{names: [client]}}]\n",
            myelin_test_support::REGISTRATION_SHARED_SECRET
        ),
    )
    .unwrap();
    let (ok, out) = run(vec![
        "-c".into(),
        yaml.to_str().unwrap().into(),
        "-u".into(),
        "viaconfig".into(),
        "-p".into(),
        "pw".into(),
        "--no-admin".into(),
    ])
    .await;
    assert!(ok, "{out}");
    assert_not_admin(&server, "viaconfig", "pw").await;
    server.stop().await;
}

#[tokio::test]
async fn a_config_fresh_from_synapse_generate_config_starts_myelin() {
    let Some(bin) = pytools_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("homeserver.yaml");
    let mut generate = Command::new(bin.join("python"));
    generate
        .args(["-m", "synapse.app.homeserver", "--server-name", "synapse.test", "--config-path"])
        .arg(&config)
        .args(["--generate-config", "--report-stats=no"])
        .current_dir(dir.path());
    let output = run_command(generate).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Move the listener to a free port (8008 may be taken) and keep it on IPv4 loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("port: 8008", &format!("port: {port}"))
        .replace("    - ::1\n", "");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("stdout.log");
    let mut child = Command::new(MYELIN)
        .args(["-c", config.to_str().unwrap()])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let client = myelin_test_support::http_client();
    let mut ok = false;
    for _ in 0..300 {
        if let Ok(response) =
            client.get(format!("http://127.0.0.1:{port}/_matrix/client/versions")).send().await
            && response.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(ok, "Myelin did not serve with Synapse's config: {stderr}");
    assert!(status.success(), "{stderr}");
    // Synapse's log config sends the log to homeserver.log beside the config: it must be there
    // and hold the start-up line, or "no ERROR in it" proves nothing.
    let log_path = dir.path().join("homeserver.log");
    let logged = std::fs::read_to_string(&log_path)
        .unwrap_or_else(|error| panic!("no log at {}: {error}; stderr: {stderr}", log_path.display()));
    assert!(
        logged.contains("Myelin is running"),
        "the log holds the start-up line: {logged}\nstderr: {stderr}"
    );
    assert!(!logged.contains("ERROR") && !stderr.contains("ERROR"), "{logged}\nstderr: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_receives_messages_typing_and_receipts_in_real_time() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    let Some(bin) = pytools_bin() else { return };
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = crate::rooms::create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.client.post(&format!("/_matrix/client/v3/join/{room_id}"), &json!({})).await.expect(200);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/nio_sync.py");
    let mut child = Command::new(bin.join("python"))
        .arg(script)
        .args([&server.base_url, &alice.user_id, &alice.password, &room_id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut ready_tx = Some(ready_tx);
        let mut last = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line == "READY" {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
            } else {
                last = line;
            }
        }
        last
    });
    tokio::time::timeout(std::time::Duration::from_secs(60), ready_rx)
        .await
        .expect("nio's initial sync")
        .unwrap();
    // Bob acts while nio long-polls.
    let event_id = crate::rooms::send_text(&bob, &room_id, "live", "hello nio").await;
    bob.client
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/typing/{}", bob.user_id),
            &json!({"typing": true, "timeout": 10000}),
        )
        .await
        .expect(200);
    bob.client
        .post(&format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{event_id}"), &json!({}))
        .await
        .expect(200);
    let report = tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let report: Value = serde_json::from_str(&report).unwrap_or_else(|_| panic!("nio report: {report}"));
    assert_eq!(report["messages"][0]["body"], "hello nio");
    assert_eq!(report["messages"][0]["sender"], bob.user_id.as_str());
    assert!(
        report["typing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|users| users.as_array().unwrap().contains(&json!(bob.user_id)))
    );
    assert!(
        report["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user_id"] == bob.user_id.as_str() && r["event_id"] == event_id.as_str())
    );
    server.stop().await;
}

/// Two matrix-nio clients with end-to-end encryption (nio[e2e], vodozemac) share an encrypted room: each
/// message is stored encrypted on the server, and the other client decrypts it to the plaintext
/// that was sent (nio queries the devices, claims a one-time key, shares the Megolm session in
/// an Olm-encrypted to-device message, and the receiver finds it in its /sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_exchanges_end_to_end_encrypted_messages() {
    let Some(bin) = pytools_bin() else { return };
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/nio_e2ee.py");
    let args = [
        server.base_url.clone(),
        alice.user_id.clone(),
        alice.password.clone(),
        bob.user_id.clone(),
        bob.password.clone(),
    ];
    let output = run_command({
        let mut command = Command::new(bin.join("python"));
        command.arg(script).args(args);
        command
    })
    .await;
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("nio report: {}", String::from_utf8_lossy(&output.stdout)));
    let room_id = report["room_id"].as_str().unwrap();
    let messages = report["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{report}");
    for (message, sender) in messages.iter().zip([&alice, &bob]) {
        assert_eq!(message["sender"], sender.user_id.as_str(), "{report}");
        assert_eq!(message["received"]["body"], message["sent"], "{report}");
        assert_eq!(message["received"]["sender"], sender.user_id.as_str(), "{report}");
        assert_eq!(message["received"]["decrypted"], true, "{report}");
        // What the server holds is the Megolm ciphertext, not the message.
        let event_id = message["event_id"].as_str().unwrap();
        let stored = alice.client.get(&format!("/_matrix/client/v3/rooms/{room_id}/event/{event_id}")).await;
        let stored = stored.expect(200);
        assert_eq!(stored["type"], "m.room.encrypted", "{stored}");
        assert_eq!(stored["content"]["algorithm"], "m.megolm.v1.aes-sha2", "{stored}");
        assert!(stored["content"]["ciphertext"].is_string(), "{stored}");
        assert!(!stored.to_string().contains(message["sent"].as_str().unwrap()), "{stored}");
    }
    server.stop().await;
}
