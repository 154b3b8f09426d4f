//! The provisioning flow as an organisation's provisioning service runs it: a Python script
//! (`tests/python/provision.py`, plain HTTP through aiohttp) registers its bot with the shared
//! secret, lifts its rate limit, builds a Space with a public and an admin room, force-joins a
//! new user, promotes, demotes and kicks them, and deactivates them with erase, asserting every
//! answer. Run again after a restart, it reuses its cached token and finds its rooms; with the
//! cache lost, it logs the existing bot in.

use std::path::Path;
use std::process::Command;

use myelin_test_support::{REGISTRATION_SHARED_SECRET, TestServer, pytools_bin};
use serde_json::Value;

/// Runs the script for `employee`; its JSON report.
async fn provision(bin: &Path, server: &TestServer, state: &Path, employee: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/provision.py");
    let mut command = Command::new(bin.join("python"));
    command.arg(script).args([
        server.base_url.as_str(),
        server.server_name.as_str(),
        REGISTRATION_SHARED_SECRET,
        state.to_str().unwrap(),
        employee,
    ]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn the_provisioning_script_runs_and_runs_again_after_a_restart() {
    let Some(bin) = pytools_bin() else { return };
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("bot-token.json");

    let first = provision(&bin, &server, &state, "employee1").await;
    assert_eq!(first["token_source"], "register", "{first}");
    assert_eq!(first["bot"], format!("@provisioner:{}", server.server_name));
    assert_eq!(first["created"], serde_json::json!(["acme", "lobby", "admins"]), "{first}");
    let token: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

    // After a restart: the cached token, the same rooms, nothing created.
    server.restart().await;
    let second = provision(&bin, &server, &state, "employee2").await;
    assert_eq!(second["token_source"], "cache", "{second}");
    assert_eq!((&second["space"], &second["rooms"]), (&first["space"], &first["rooms"]));
    assert_eq!(second["created"], serde_json::json!([]), "{second}");
    let cached: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(cached["access_token"], token.as_str(), "the token was reused, not replaced");

    // The cache lost: the bot exists, so it logs in.
    std::fs::remove_file(&state).unwrap();
    let third = provision(&bin, &server, &state, "employee3").await;
    assert_eq!(third["token_source"], "login", "{third}");
    assert_eq!(third["space"], first["space"]);
    server.stop().await;
}
