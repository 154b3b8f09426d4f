//! [`TestServer`]: the real server, in this process, on `127.0.0.1:0`, with a fresh database
//! and a configuration written to a real `homeserver.yaml` and read by the real loader.

use std::path::PathBuf;
use std::time::Duration;

use myelin_config::DatabaseConfig;
use myelin_server::RunningServer;
use myelin_service::Services;
use serde_json::{Map, Value, json};

use crate::client::TestClient;
use crate::db::{Engine, FreshDatabase};

pub struct TestServer {
    running: Option<RunningServer>,
    pub base_url: String,
    pub server_name: String,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
    _database: FreshDatabase,
}

/// A rate limit high enough never to trigger (tests of rate limiting override it).
fn unlimited() -> Value {
    json!({"per_second": 1_000_000, "burst_count": 10_000_000})
}

/// The shared secret of every test server.
pub const REGISTRATION_SHARED_SECRET: &str = "test-shared-secret";

/// The `database` section of a `homeserver.yaml` for `config` (for tests that write their own
/// configuration, e.g. to run the `myelin` binary on a fresh database).
pub fn database_yaml(config: &DatabaseConfig) -> Value {
    match config {
        DatabaseConfig::Sqlite { path } => json!({"name": "sqlite3", "args": {"database": path}}),
        DatabaseConfig::Postgres(pg) => json!({
            "name": "psycopg2",
            "args": {
                "host": pg.host, "port": pg.port, "user": pg.user, "password": pg.password,
                "dbname": pg.dbname, "options": pg.options, "cp_min": pg.cp_min, "cp_max": pg.cp_max,
            }
        }),
    }
}

impl TestServer {
    /// A server with the default test configuration, on the engine chosen by `MYELIN_TEST_DB`.
    pub async fn start() -> TestServer {
        Self::start_with(json!({})).await
    }

    /// A server whose configuration has `overrides`' top-level keys replaced.
    pub async fn start_with(overrides: Value) -> TestServer {
        let engine = Engine::from_env();
        // `MYELIN_TEST_DB=postgres` without a database is a failure: falling back to SQLite
        // would pass the PostgreSQL run without testing PostgreSQL.
        let database = FreshDatabase::create(engine).await.unwrap_or_else(|| {
            panic!(
                "MYELIN_TEST_DB=postgres but TEST_POSTGRES_URL is not set: start one \
                 (source scripts/services.sh && start_services) or unset MYELIN_TEST_DB"
            )
        });
        let dir = tempfile::tempdir().expect("temporary directory");
        let server_name =
            overrides.get("server_name").and_then(Value::as_str).unwrap_or("test.local").to_owned();
        let mut config: Map<String, Value> = json!({
            "server_name": server_name,
            "listeners": [{
                "port": 0,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "x_forwarded": false,
                "resources": [{"names": ["client", "federation", "metrics"]}],
            }],
            "database": database_yaml(&database.config),
            "signing_key_path": dir.path().join("test.signing.key"),
            "media_store_path": dir.path().join("media"),
            "registration_shared_secret": REGISTRATION_SHARED_SECRET,
            "macaroon_secret_key": "test-macaroon-secret",
            "form_secret": "test-form-secret",
            "report_stats": false,
            "enable_metrics": true,
            "bcrypt_rounds": 4,
            "enable_registration": true,
            "enable_registration_without_verification": true,
            "rc_message": unlimited(),
            "rc_registration": unlimited(),
            "rc_registration_token_validity": unlimited(),
            "rc_login": {"address": unlimited(), "account": unlimited(), "failed_attempts": unlimited()},
            "rc_joins": {"local": unlimited(), "remote": unlimited()},
            "rc_joins_per_room": unlimited(),
            "rc_invites": {"per_room": unlimited(), "per_user": unlimited(), "per_issuer": unlimited()},
            "rc_room_creation": unlimited(),
            "rc_admin_redaction": unlimited(),
            "rc_reports": unlimited(),
            "rc_presence": {"per_user": unlimited()},
            "rc_user_directory": unlimited(),
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        if let Value::Object(overrides) = overrides {
            config.extend(overrides);
        }
        let config_path = dir.path().join("homeserver.yaml");
        // JSON is YAML: the file goes through the same loader as a real homeserver.yaml.
        std::fs::write(&config_path, serde_json::to_string_pretty(&Value::Object(config)).unwrap()).unwrap();
        let mut server = TestServer {
            running: None,
            base_url: String::new(),
            server_name,
            config_path,
            dir,
            _database: database,
        };
        server.boot().await;
        server
    }

    async fn boot(&mut self) {
        let loaded = myelin_config::load(std::slice::from_ref(&self.config_path)).expect("test config loads");
        let running = myelin_server::start(loaded.config).await.expect("server starts");
        let addr = running.tcp_addr(0).expect("listener 0 bound");
        self.base_url = format!("http://{addr}");
        self.running = Some(running);
    }

    /// Stops the server and starts it again on the same configuration and database (a new port).
    pub async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(2)).await;
        }
        self.boot().await;
    }

    /// Stops the server, keeping its configuration and database for [`TestServer::resume`].
    pub async fn halt(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(2)).await;
        }
    }

    /// Starts a halted server again (its plain listener on a new port: `base_url` changes).
    pub async fn resume(&mut self) {
        assert!(self.running.is_none(), "the server is running");
        self.boot().await;
    }

    /// The services of the running server, for test set-up and inspection.
    pub fn services(&self) -> &Services {
        &self.running.as_ref().expect("server is running").services
    }

    /// Waits (up to 30 s) until a `/sync` of `user_id` is in progress on the server: a
    /// long-poll started in the background has reached the server and is waiting.
    pub async fn wait_for_sync_of(&self, user_id: &str) {
        let user_id = ruma::UserId::parse(user_id).expect("a valid user ID");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.services().active_syncs.is_syncing(&user_id) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no sync of {user_id} reached the server in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The first TCP address listener `index` bound.
    pub fn tcp_addr(&self, index: usize) -> Option<std::net::SocketAddr> {
        self.running.as_ref()?.tcp_addr(index)
    }

    /// A client without an access token.
    pub fn client(&self) -> TestClient {
        TestClient::new(&self.base_url)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(2)).await;
        }
    }
}

/// A registered user with a logged-in client.
#[derive(Clone)]
pub struct TestUser {
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
    pub password: String,
    pub client: TestClient,
}

impl TestServer {
    /// Registers `localpart` through `/register` (dummy auth) and returns the logged-in user.
    pub async fn register(&self, localpart: &str) -> TestUser {
        let password = format!("{localpart}-password-1A!");
        let response = self
            .client()
            .post(
                "/_matrix/client/v3/register",
                &json!({"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        let body = response.expect(200).clone();
        let access_token = body["access_token"].as_str().expect("access_token").to_owned();
        TestUser {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            client: self.client().with_token(&access_token),
            access_token,
            password,
        }
    }

    /// Registers a server admin through the shared-secret admin API.
    pub async fn register_admin(&self, localpart: &str) -> TestUser {
        let password = format!("{localpart}-password-1A!");
        let body = shared_secret_body(self, localpart, &password, true, None).await;
        let response = self.client().post("/_synapse/admin/v1/register", &body).await;
        let body = response.expect(200).clone();
        let access_token = body["access_token"].as_str().expect("access_token").to_owned();
        TestUser {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            client: self.client().with_token(&access_token),
            access_token,
            password,
        }
    }
}

/// The body of a shared-secret registration with a fresh nonce and a correct MAC, computed
/// independently of the server (HMAC-SHA1 as `register_new_matrix_user` does).
pub async fn shared_secret_body(
    server: &TestServer,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> Value {
    let nonce = server.client().get("/_synapse/admin/v1/register").await.expect(200)["nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();
    let mac = shared_secret_mac(REGISTRATION_SHARED_SECRET, &nonce, username, password, admin, user_type);
    json!({"nonce": nonce, "username": username, "password": password, "admin": admin, "user_type": user_type, "mac": mac})
}

/// `register_new_matrix_user`'s MAC.
pub fn shared_secret_mac(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(username.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.update(b"\0");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    if let Some(user_type) = user_type {
        mac.update(b"\0");
        mac.update(user_type.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The bin directory of the Python tools venv (`scripts/pytools.sh`), or `None` to skip a test
/// that needs them. With `MYELIN_REQUIRE_PYTOOLS=1` (set by `scripts/test.sh`) a missing venv
/// fails the test instead.
pub fn pytools_bin() -> Option<PathBuf> {
    let dir = std::env::var_os("MYELIN_PYTOOLS").map(PathBuf::from).or_else(|| {
        let candidate = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pytools/bin");
        candidate.join("python").exists().then_some(candidate)
    });
    match dir {
        Some(dir) if dir.join("python").exists() => Some(dir),
        _ if std::env::var("MYELIN_REQUIRE_PYTOOLS").is_ok_and(|v| v == "1") => {
            panic!("MYELIN_REQUIRE_PYTOOLS=1 but the Python tools are missing (run scripts/pytools.sh)")
        }
        _ => {
            eprintln!("SKIPPED: the Python tools are not installed (run scripts/pytools.sh)");
            None
        }
    }
}
