//! A real S3-speaking server for tests: moto's server mode (`moto_server`, installed into the
//! Python tools venv by `scripts/pytools.sh`), started per test on `127.0.0.1` with a port the
//! system picks, and killed when dropped.
//!
//! Without moto a test skips with a message, unless `MYELIN_REQUIRE_S3=1` (set by
//! `scripts/test.sh`), which fails it instead.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Credentials moto accepts when it does not check them (any would do).
pub const MOTO_ACCESS_KEY_ID: &str = "testing";
pub const MOTO_SECRET_ACCESS_KEY: &str = "testing";

/// A running `moto_server`.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:<port>`, for `endpoint_url`.
    pub endpoint: String,
}

fn moto_server_binary() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("MYELIN_PYTOOLS") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pytools/bin"));
    candidates.into_iter().map(|dir| dir.join("moto_server")).find(|path| path.exists())
}

impl MotoServer {
    /// Starts moto with credentials unchecked, or returns `None` (the test skips) when moto is
    /// not installed and `MYELIN_REQUIRE_S3` is not `1`.
    pub fn start() -> Option<MotoServer> {
        MotoServer::start_with(false)
    }

    /// Starts moto checking every request's credentials against its IAM, where no user
    /// exists: every access key is refused, as a wrong one is by S3.
    pub fn start_checking_credentials() -> Option<MotoServer> {
        MotoServer::start_with(true)
    }

    fn start_with(check_credentials: bool) -> Option<MotoServer> {
        let Some(binary) = moto_server_binary() else {
            if std::env::var("MYELIN_REQUIRE_S3").is_ok_and(|v| v == "1") {
                panic!("MYELIN_REQUIRE_S3=1 but moto_server is missing (run scripts/pytools.sh)");
            }
            eprintln!("SKIPPED: moto_server is not installed (run scripts/pytools.sh)");
            return None;
        };
        let mut command = Command::new(binary);
        command
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if check_credentials {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let mut child = command.spawn().expect("start moto_server");
        let stderr = child.stderr.take().expect("moto_server's stderr");
        // Werkzeug prints " * Running on http://127.0.0.1:<port>" once it listens; the rest
        // of its output (a line per request) is drained so that it never blocks on a full pipe.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sender = Some(sender);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.split("Running on ").nth(1)
                    && let Some(sender) = sender.take()
                {
                    let _ = sender.send(url.trim().to_owned());
                }
            }
        });
        let endpoint = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(endpoint) => endpoint,
            Err(_) => {
                let _ = child.kill();
                panic!("moto_server did not start listening within 60 s");
            }
        };
        Some(MotoServer { child, endpoint })
    }

    /// Creates a bucket (moto's S3 takes unsigned requests when credentials are unchecked).
    pub async fn create_bucket(&self, name: &str) {
        let response = crate::http_client()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("create bucket request");
        assert!(response.status().is_success(), "creating bucket {name}: {}", response.status());
    }

    /// The keys in a bucket.
    pub async fn list_keys(&self, bucket: &str) -> Vec<String> {
        let response = crate::http_client()
            .get(format!("{}/{bucket}?list-type=2", self.endpoint))
            .send()
            .await
            .expect("list objects request");
        assert!(response.status().is_success(), "listing {bucket}: {}", response.status());
        let xml = response.text().await.expect("listing body");
        xml.split("<Key>").skip(1).filter_map(|rest| rest.split("</Key>").next()).map(str::to_owned).collect()
    }

    /// The `media_storage_providers` YAML value for this server's bucket (credentials
    /// unchecked), with `extra` merged into the module's `config`.
    pub fn provider_config(&self, bucket: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut config = serde_json::json!({
            "bucket": bucket,
            "region_name": "us-east-1",
            "endpoint_url": self.endpoint,
            "access_key_id": MOTO_ACCESS_KEY_ID,
            "secret_access_key": MOTO_SECRET_ACCESS_KEY,
        });
        if let (Some(config), serde_json::Value::Object(extra)) = (config.as_object_mut(), extra) {
            config.extend(extra);
        }
        serde_json::json!([{
            "module": "s3_storage_provider.S3StorageProviderBackend",
            "store_local": true,
            "store_remote": true,
            "store_synchronous": true,
            "config": config,
        }])
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
