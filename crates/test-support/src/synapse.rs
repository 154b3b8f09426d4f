//! A real Synapse beside Myelin, for the interoperability tests.
//!
//! Synapse (installed into the Python tools venv by `scripts/pytools.sh`) runs as a child process
//! named `127.0.0.1:<port>`: it serves federation over TLS on that port with the test CA's
//! certificate (which carries an IP SAN for 127.0.0.1, see
//! [`write_certificates`](crate::federation::write_certificates)), trusts the test CA through
//! `federation_custom_ca_list`, may reach loopback through `ip_range_whitelist`, fetches keys
//! only from the servers themselves, has rate limits off and registers users with the shared
//! secret. An IP-literal name needs no name resolution: Synapse has no DNS override, and Myelin
//! connects to an IP literal directly (Synapse's own federation blocklist, which applies to IP
//! literals before any allowlist, is emptied). Its database is SQLite, or PostgreSQL when
//! `MYELIN_TEST_DB=postgres` and the venv has psycopg2 (a fresh database in the
//! `TEST_POSTGRES_URL` cluster). It logs to a file that is printed when a test fails, and is
//! killed when dropped.
//!
//! Without the Python tools a test skips ([`pytools_bin`]), unless `MYELIN_REQUIRE_PYTOOLS=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::federation::free_port;
use crate::{REGISTRATION_SHARED_SECRET, TestClient, TestUser, pytools_bin, shared_secret_mac};

/// A running (or stopped, see [`SynapseServer::stop`]) Synapse.
pub struct SynapseServer {
    child: Option<Child>,
    python: PathBuf,
    /// `127.0.0.1:<port>`: the port of its TLS federation listener.
    pub server_name: String,
    /// The plain-HTTP client listener, `http://127.0.0.1:<port>`.
    pub base_url: String,
    pub dir: tempfile::TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    _database: Option<crate::db::PostgresDatabase>,
}

/// A rate limit high enough never to trigger.
fn unlimited() -> Value {
    json!({"per_second": 1_000_000, "burst_count": 10_000_000})
}

fn log_config(log_path: &Path, client_port: u16) -> String {
    // Synapse's logging config is Python's dictConfig, in YAML (JSON is YAML).
    json!({
        "version": 1,
        "formatters": {"precise": {"format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}},
        "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}},
        "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise", "filters": ["context"], "filename": log_path}},
        // The client listener's access log (tests poll) stays out; federation's stays in.
        "loggers": {
            "synapse.storage.SQL": {"level": "WARNING"},
            "synapse.storage.background_updates": {"level": "WARNING"},
            "synapse.storage.prepare_database": {"level": "WARNING"},
            format!("synapse.access.http.{client_port}"): {"level": "WARNING"},
        },
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": false,
    })
    .to_string()
}

impl SynapseServer {
    /// Starts a Synapse trusting the test CA in `certs` (as written by `write_certificates`),
    /// with `overrides` merged into its configuration; `None` when the Python tools are missing
    /// and not required.
    pub async fn start(certs: &Path, overrides: Value) -> Option<SynapseServer> {
        let bin = pytools_bin()?;
        let python = bin.join("python");
        let dir = tempfile::tempdir().expect("temporary directory");
        let federation_port = free_port();
        let client_port = free_port();
        let server_name = format!("127.0.0.1:{federation_port}");
        let log_path = dir.path().join("homeserver.log");
        let log_config_path = dir.path().join("log.config");
        std::fs::write(&log_config_path, log_config(&log_path, client_port)).expect("write log config");
        let (database, postgres) = synapse_database(dir.path(), &python).await;
        let mut config = json!({
            "server_name": server_name,
            "pid_file": dir.path().join("homeserver.pid"),
            "listeners": [
                {"port": federation_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": true,
                 "x_forwarded": false, "resources": [{"names": ["federation"], "compress": false}]},
                {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": false,
                 "x_forwarded": false, "resources": [{"names": ["client"], "compress": false}]},
            ],
            "tls_certificate_path": certs.join("cert.pem"),
            "tls_private_key_path": certs.join("key.pem"),
            "federation_custom_ca_list": [certs.join("ca.pem")],
            "federation_verify_certificates": true,
            "ip_range_whitelist": ["127.0.0.1"],
            // Synapse blocks IP-literal server names in the blocklist whatever the allowlist
            // says: its federation blocklist (the legacy key) leaves loopback out.
            "federation_ip_range_blacklist": [],
            "trusted_key_servers": [],
            "suppress_key_server_warning": true,
            "database": database,
            "log_config": log_config_path,
            "media_store_path": dir.path().join("media"),
            "signing_key_path": dir.path().join("signing.key"),
            "registration_shared_secret": REGISTRATION_SHARED_SECRET,
            "macaroon_secret_key": "test-macaroon-secret",
            "form_secret": "test-form-secret",
            "report_stats": false,
            "enable_registration": false,
            "bcrypt_rounds": 4,
            "use_presence": false,
            "enable_metrics": false,
            // A stopped server is retried after a second, not ten minutes.
            "federation": {
                "destination_min_retry_interval": "1s",
                "destination_retry_multiplier": 1,
                "destination_max_retry_interval": "2s",
                "max_short_retry_delay": 500,
                "max_long_retry_delay": 1000,
                "client_timeout": "20s",
            },
            "rc_message": unlimited(),
            "rc_registration": unlimited(),
            "rc_login": {"address": unlimited(), "account": unlimited(), "failed_attempts": unlimited()},
            "rc_joins": {"local": unlimited(), "remote": unlimited()},
            "rc_joins_per_room": unlimited(),
            "rc_invites": {"per_room": unlimited(), "per_user": unlimited(), "per_issuer": unlimited()},
            "rc_admin_redaction": unlimited(),
            "rc_3pid_validation": unlimited(),
            "rc_federation": {"window_size": 1000, "sleep_limit": 10000, "sleep_delay": 1, "reject_limit": 10000, "concurrent": 100},
            "rc_key_requests": unlimited(),
        });
        if let (Some(config), Value::Object(overrides)) = (config.as_object_mut(), overrides) {
            config.extend(overrides);
        }
        let config_path = dir.path().join("homeserver.yaml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).expect("config")).expect("write");
        let mut server = SynapseServer {
            child: None,
            python,
            server_name,
            base_url: format!("http://127.0.0.1:{client_port}"),
            dir,
            config_path,
            log_path,
            _database: postgres,
        };
        write_signing_key(&server.dir.path().join("signing.key"));
        server.resume().await;
        Some(server)
    }

    /// Starts the stopped process again on the same configuration and database, and waits until
    /// it answers `/health`.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "Synapse is already running");
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log")).expect("stderr log");
        let child = Command::new(&self.python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start synapse");
        self.child = Some(child);
        let health = format!("{}/health", self.base_url);
        let client = crate::http_client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(response) = client.get(&health).send().await
                && response.status().is_success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("Synapse exited with {status} while starting:\n{}", self.logs());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Synapse did not answer /health in 120 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process (its database stays; [`SynapseServer::resume`] starts it again).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// The end of Synapse's log and its standard error.
    pub fn logs(&self) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        let log = read(&self.log_path);
        let tail: Vec<&str> = log.lines().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
        format!(
            "== Synapse {} log (last 300 lines of {}):\n{}\n== stderr:\n{}",
            self.server_name,
            self.log_path.display(),
            tail.join("\n"),
            read(&self.dir.path().join("stderr.log"))
        )
    }

    /// A client without an access token.
    pub fn client(&self) -> TestClient {
        TestClient::new(&self.base_url)
    }

    /// Registers `localpart` through the shared-secret admin API and returns the logged-in user.
    pub async fn register(&self, localpart: &str) -> TestUser {
        let password = format!("{localpart}-password-1A!");
        let nonce = self.client().get("/_synapse/admin/v1/register").await.expect(200)["nonce"]
            .as_str()
            .expect("nonce")
            .to_owned();
        let mac = shared_secret_mac(REGISTRATION_SHARED_SECRET, &nonce, localpart, &password, false, None);
        let body =
            json!({"nonce": nonce, "username": localpart, "password": password, "admin": false, "mac": mac});
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

impl Drop for SynapseServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // For a closer look (its database and whole log): MYELIN_KEEP_SYNAPSE=1.
        if std::env::var("MYELIN_KEEP_SYNAPSE").is_ok_and(|v| v == "1") {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temporary directory"));
            eprintln!("Synapse's directory kept: {}", dir.keep().display());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A signing key in Synapse's format (`ed25519 <version> <unpadded base64 seed>`), written
/// here rather than by `--generate-keys` (a second Python start per server).
fn write_signing_key(path: &Path) {
    use rand::RngExt;
    let seed: [u8; 32] = rand::rng().random();
    let seed: ruma::serde::Base64 = ruma::serde::Base64::new(seed.to_vec());
    std::fs::write(path, format!("ed25519 a_test {}\n", seed.encode())).expect("write signing key");
}

async fn run_blocking(command: &mut Command) -> std::process::Output {
    let mut command = std::mem::replace(command, Command::new("true"));
    tokio::task::spawn_blocking(move || command.output().expect("the command runs")).await.expect("join")
}

/// Synapse's `database` section: a fresh PostgreSQL database when `MYELIN_TEST_DB=postgres` (and
/// psycopg2 is installed), SQLite in `dir` otherwise.
async fn synapse_database(dir: &Path, python: &Path) -> (Value, Option<crate::db::PostgresDatabase>) {
    let sqlite = json!({"name": "sqlite3", "args": {"database": dir.join("homeserver.db")}});
    if crate::Engine::from_env() != crate::Engine::Postgres {
        return (sqlite, None);
    }
    let has_psycopg2 =
        run_blocking(Command::new(python).args(["-c", "import psycopg2"])).await.status.success();
    if !has_psycopg2 {
        // scripts/test.sh installs it: there, Synapse on SQLite would pass pass 2 untested.
        if std::env::var("MYELIN_REQUIRE_PYTOOLS").is_ok_and(|v| v == "1") {
            panic!(
                "MYELIN_TEST_DB=postgres but psycopg2 is missing from the Python tools (run scripts/pytools.sh)"
            );
        }
        eprintln!("Synapse runs on SQLite: psycopg2 is not installed in the Python tools");
        return (sqlite, None);
    }
    let Some(database) = crate::db::PostgresDatabase::create().await else { return (sqlite, None) };
    let config = &database.config;
    let section = json!({
        "name": "psycopg2",
        "allow_unsafe_locale": true,
        "args": {
            "host": config.host, "port": config.port, "user": config.user, "password": config.password,
            "dbname": database.name, "cp_min": 1, "cp_max": 5,
        }
    });
    (section, Some(database))
}
