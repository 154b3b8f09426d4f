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

/// The shared secret of every test server.
pub const REGISTRATION_SHARED_SECRET: &str = "test-shared-secret";

fn database_yaml(config: &DatabaseConfig) -> Value {
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
        let database = match FreshDatabase::create(engine).await {
            Some(database) => database,
            // Without PostgreSQL at hand an end-to-end test still runs, on SQLite.
            None => FreshDatabase::create(Engine::Sqlite).await.expect("SQLite database"),
        };
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

    /// The services of the running server, for test set-up and inspection.
    pub fn services(&self) -> &Services {
        &self.running.as_ref().expect("server is running").services
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
