//! Restart in the middle of end-to-end encryption: the `myelin` binary, run as a child process,
//! is killed with SIGKILL (no graceful shutdown, nothing flushed on the way out) right after
//! answering, and started again on the same database. Everything it acknowledged survives:
//! device keys, one-time keys (a claimed one stays claimed), the fallback key, to-device messages
//! not yet delivered or not yet acknowledged, the key backup, and the dehydrated device with
//! its inbox.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Child;

use myelin_test_support::{Engine, FreshDatabase, TestClient, database_yaml};
use serde_json::{Value, json};

use crate::dehydrated::{DEHYDRATED, DeviceKey};
use crate::process::{free_port, spawn, wait_healthy};

const SERVER_NAME: &str = "restart.test";
const TYPE: &str = "org.example.restart";
const BACKUP_VERSION: &str = "/_matrix/client/v3/room_keys/version";

/// Writes a `homeserver.yaml` for the binary on `database`, listening on `port`.
fn write_config(dir: &Path, database: &FreshDatabase, port: u16) -> std::path::PathBuf {
    let unlimited = json!({"per_second": 1_000_000, "burst_count": 10_000_000});
    let config = json!({
        "server_name": SERVER_NAME,
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "x_forwarded": false,
            "resources": [{"names": ["client"]}],
        }],
        "database": database_yaml(&database.config),
        "signing_key_path": dir.join("signing.key"),
        "media_store_path": dir.join("media"),
        "macaroon_secret_key": "restart-macaroon-secret",
        "form_secret": "restart-form-secret",
        "report_stats": false,
        "bcrypt_rounds": 4,
        "enable_registration": true,
        "enable_registration_without_verification": true,
        "rc_message": unlimited,
        "rc_registration": unlimited,
        "rc_login": {"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
    });
    let path = dir.join("homeserver.yaml");
    // JSON is YAML.
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

/// The child process; killed if the test fails before it does.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary on `database`, on a fresh port, once it answers `/health`.
async fn start(dir: &Path, database: &FreshDatabase) -> (Server, TestClient) {
    let port = free_port();
    let config = write_config(dir, database, port);
    let log = dir.join(format!("myelin-{port}.log"));
    let mut child = spawn(&["run", "-c", config.to_str().unwrap()], &log);
    wait_healthy(port, &mut child, &log).await;
    (Server(child), TestClient::new(&format!("http://127.0.0.1:{port}")))
}

/// SIGKILL, and the proof that it was that signal which ended the process.
fn kill_9(Server(child): &mut Server) {
    child.kill().expect("SIGKILL sent"); // `Child::kill` is SIGKILL on Unix.
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the server died of SIGKILL, not of anything else: {status}");
}

struct User {
    user_id: String,
    device_id: String,
    token: String,
}

impl User {
    fn client(&self, anonymous: &TestClient) -> TestClient {
        anonymous.with_token(&self.token)
    }
}

async fn register(client: &TestClient, localpart: &str) -> User {
    let body = json!({
        "username": localpart,
        "password": format!("{localpart}-password-1A!"),
        "auth": {"type": "m.login.dummy"},
    });
    let response = client.post("/_matrix/client/v3/register", &body).await.expect(200).clone();
    User {
        user_id: response["user_id"].as_str().unwrap().to_owned(),
        device_id: response["device_id"].as_str().unwrap().to_owned(),
        token: response["access_token"].as_str().unwrap().to_owned(),
    }
}

async fn send(from: &TestClient, to: &User, device_id: &str, n: i64) {
    let path = format!("/_matrix/client/v3/sendToDevice/{TYPE}/restart-{n}");
    let body = json!({ "messages": { &to.user_id: { device_id: { "n": n } } } });
    from.put(&path, &body).await.expect(200);
}

/// The `n` of each to-device event (of `TYPE`, from `sender`) in `events`.
fn numbers(events: &Value, sender: &User) -> Vec<i64> {
    events
        .as_array()
        .expect("events is an array")
        .iter()
        .map(|event| {
            assert_eq!(event["type"], TYPE, "{event}");
            assert_eq!(event["sender"], sender.user_id.as_str(), "{event}");
            event["content"]["n"].as_i64().expect("content.n")
        })
        .collect()
}

async fn sync(client: &TestClient, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
        None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
    };
    client.get(&path).await.expect(200).clone()
}

async fn claim(client: &TestClient, user: &User, device_id: &str) -> Value {
    let body = json!({ "one_time_keys": { &user.user_id: { device_id: "signed_curve25519" } } });
    let response = client.post("/_matrix/client/v3/keys/claim", &body).await.expect(200).clone();
    response["one_time_keys"][&user.user_id][device_id].clone()
}

async fn query(client: &TestClient, user: &User) -> Value {
    let body = json!({ "device_keys": { &user.user_id: [] } });
    client.post("/_matrix/client/v3/keys/query", &body).await.expect(200)["device_keys"][&user.user_id]
        .clone()
}

#[tokio::test]
async fn keys_backups_and_undelivered_to_device_messages_survive_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let Some(database) = FreshDatabase::create(Engine::from_env()).await else {
        panic!(
            "MYELIN_TEST_DB=postgres needs TEST_POSTGRES_URL (source scripts/services.sh && start_services)"
        )
    };
    let (mut server, anonymous) = start(dir.path(), &database).await;
    let alice = register(&anonymous, "alice").await;
    let bob = register(&anonymous, "bob").await;
    let (alice_client, bob_client) = (alice.client(&anonymous), bob.client(&anonymous));

    // Alice's device keys, three one-time keys and a fallback key; bob claims the first key.
    let key = DeviceKey::new(&alice.user_id, &alice.device_id);
    let upload = json!({
        "device_keys": key.device_keys(),
        "one_time_keys": {
            "signed_curve25519:AAAA1": key.one_time_key("otk-1"),
            "signed_curve25519:AAAA2": key.one_time_key("otk-2"),
            "signed_curve25519:AAAA3": key.one_time_key("otk-3"),
        },
        "fallback_keys": { "signed_curve25519:FALLBACK": key.fallback_key("fallback") },
    });
    let counts = alice_client.post("/_matrix/client/v3/keys/upload", &upload).await.expect(200).clone();
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 3);
    assert_eq!(claim(&bob_client, &alice, &alice.device_id).await["signed_curve25519:AAAA1"]["key"], "otk-1");
    let keys_before = query(&bob_client, &alice).await[&alice.device_id].clone();
    assert_eq!(keys_before["keys"][format!("ed25519:{}", alice.device_id)], key.public_key());

    // To-device: 1 and 2 delivered by a sync whose token is not acknowledged yet, 3 and 4 never
    // delivered.
    send(&bob_client, &alice, &alice.device_id, 1).await;
    send(&bob_client, &alice, &alice.device_id, 2).await;
    let first = sync(&alice_client, None).await;
    assert_eq!(numbers(&first["to_device"]["events"], &bob), vec![1, 2]);
    let token = first["next_batch"].as_str().unwrap().to_owned();
    send(&bob_client, &alice, &alice.device_id, 3).await;
    send(&bob_client, &alice, &alice.device_id, 4).await;

    // A dehydrated device with a message waiting for it.
    let dehydrated = DeviceKey::new(&alice.user_id, "DEHYDRATED");
    let put = json!({
        "device_id": "DEHYDRATED",
        "device_data": { "algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "pickle" },
        "device_keys": dehydrated.device_keys_with(json!({ "dehydrated": true })),
        "one_time_keys": { "signed_curve25519:D1": dehydrated.one_time_key("d-1") },
    });
    alice_client.put(DEHYDRATED, &put).await.expect(200);
    send(&bob_client, &alice, "DEHYDRATED", 5).await;

    // A key backup version with one session in it.
    let version_body = json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "backup-key"}});
    let version = alice_client.post(BACKUP_VERSION, &version_body).await.expect(200)["version"].clone();
    let version = version.as_str().unwrap().to_owned();
    let session = json!({
        "first_message_index": 1,
        "forwarded_count": 0,
        "is_verified": true,
        "session_data": {"ephemeral": "e", "ciphertext": "c", "mac": "m"},
    });
    let path = format!("/_matrix/client/v3/room_keys/keys/!room:{SERVER_NAME}/session-1?version={version}");
    let stored = alice_client.put(&path, &session).await.expect(200).clone();
    assert_eq!(stored["count"], 1);
    let backup_before = alice_client.get(BACKUP_VERSION).await.expect(200).clone();

    kill_9(&mut server);
    let (mut server, anonymous) = start(dir.path(), &database).await;
    let (alice_client, bob_client) = (alice.client(&anonymous), bob.client(&anonymous));

    // The keys: identical identity keys, the claimed key stays claimed, then the fallback.
    let keys_after = query(&bob_client, &alice).await;
    assert_eq!(keys_after[&alice.device_id], keys_before);
    assert_eq!(keys_after["DEHYDRATED"]["keys"]["ed25519:DEHYDRATED"], dehydrated.public_key());
    let counts = alice_client.post("/_matrix/client/v3/keys/upload", &json!({})).await.expect(200).clone();
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 2);
    assert_eq!(claim(&bob_client, &alice, &alice.device_id).await["signed_curve25519:AAAA2"]["key"], "otk-2");
    assert_eq!(claim(&bob_client, &alice, &alice.device_id).await["signed_curve25519:AAAA3"]["key"], "otk-3");
    let fallback = claim(&bob_client, &alice, &alice.device_id).await;
    assert_eq!(fallback["signed_curve25519:FALLBACK"]["key"], "fallback", "{fallback}");

    // The to-device messages: a sync from the old token acknowledges 1 and 2 and delivers 3, 4.
    let second = sync(&alice_client, Some(&token)).await;
    assert_eq!(numbers(&second["to_device"]["events"], &bob), vec![3, 4]);
    let third = sync(&alice_client, Some(second["next_batch"].as_str().unwrap())).await;
    assert_eq!(numbers(&third["to_device"]["events"], &bob), Vec::<i64>::new());

    // The key backup: the same version, etag and count, and the session.
    assert_eq!(alice_client.get(BACKUP_VERSION).await.expect(200).clone(), backup_before);
    assert_eq!(alice_client.get(&path).await.expect(200).clone(), session);

    // The dehydrated device, its keys and its message.
    assert_eq!(alice_client.get(DEHYDRATED).await.expect(200)["device_data"]["device_pickle"], "pickle");
    assert_eq!(claim(&bob_client, &alice, "DEHYDRATED").await["signed_curve25519:D1"]["key"], "d-1");
    let events = format!("{DEHYDRATED}/DEHYDRATED/events");
    let page = alice_client.post(&events, &json!({})).await.expect(200).clone();
    assert_eq!(numbers(&page["events"], &bob), vec![5]);

    // Positions did not move back: a message sent now comes after everything before.
    send(&bob_client, &alice, &alice.device_id, 6).await;
    let fourth = sync(&alice_client, Some(third["next_batch"].as_str().unwrap())).await;
    assert_eq!(numbers(&fourth["to_device"]["events"], &bob), vec![6]);

    kill_9(&mut server);
}
