//! `myelin-federation-pair`: two federating homeservers on loopback for a program outside the
//! test suite (the matrix-sdk client of `scripts/sdk_federation.sh`), started exactly as the
//! interoperability tests start them: a Myelin named by IP literal (an in-process
//! [`TestServer`] from [`federating_server`]) and, beside it, a real Synapse
//! ([`SynapseServer`]) or a second Myelin, both trusting one test CA ([`TestCertificates`]).
//! Both have open registration (m.login.dummy) and no rate limits.
//!
//!     myelin-federation-pair synapse|myelin -- PROGRAM [ARG...]
//!
//! In PROGRAM's arguments `{myelin}` and `{peer}` are replaced by the client API URLs of the
//! Myelin and of the other server. The exit status is PROGRAM's; when it fails, the end of both
//! servers' logs is printed. Both servers are stopped and their directories removed on exit.
//! The database is SQLite, or PostgreSQL with `MYELIN_TEST_DB=postgres` as in the tests.

use std::path::Path;
use std::process::ExitCode;

use myelin_test_support::TestServer;
use myelin_test_support::federation::{TestCertificates, federating_server};
use myelin_test_support::synapse::SynapseServer;
use serde_json::{Value, json};

const USAGE: &str = "usage: myelin-federation-pair synapse|myelin -- PROGRAM [ARG...] \
                     ({myelin} and {peer} in the arguments are the two client API URLs)";

/// Myelin's sender retries quickly, as in the interoperability tests.
fn myelin_config() -> Value {
    json!({"myelin_federation_retry": {"min_interval_ms": 200, "max_interval_ms": 500}})
}

enum Peer {
    Synapse(SynapseServer),
    Myelin(TestServer),
}

/// The last `lines` lines of the file at `path`.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, program) = match args.as_slice() {
        [kind, dashes, program @ ..]
            if (kind == "synapse" || kind == "myelin") && dashes == "--" && !program.is_empty() =>
        {
            (kind.as_str(), program)
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };

    // Myelin's log (both Myelins, in this process) goes to a file, printed if PROGRAM fails.
    let logs = tempfile::tempdir().expect("temporary directory");
    let log_path = logs.path().join("myelin.log");
    let log_config = json!({
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": log_path}},
        "root": {"level": "INFO", "handlers": ["file"]},
    });
    let log_config_path = logs.path().join("log.yaml");
    std::fs::write(&log_config_path, log_config.to_string()).expect("write the log config");
    if let Err(e) = myelin_server::logging::init(Some(&log_config_path)) {
        eprintln!("myelin-federation-pair: {e:#}");
        return ExitCode::FAILURE;
    }

    let certs = TestCertificates::new();
    let myelin = federating_server("127.0.0.1", certs.path(), myelin_config()).await;
    let peer = match kind {
        "synapse" => {
            let open = json!({
                "enable_registration": true,
                "enable_registration_without_verification": true,
            });
            match SynapseServer::start(certs.path(), open).await {
                Some(synapse) => Peer::Synapse(synapse),
                None => {
                    eprintln!("myelin-federation-pair: Synapse needs the Python tools (scripts/pytools.sh)");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => Peer::Myelin(federating_server("127.0.0.1", certs.path(), myelin_config()).await),
    };
    let (peer_url, peer_name) = match &peer {
        Peer::Synapse(s) => (s.base_url.clone(), s.server_name.clone()),
        Peer::Myelin(m) => (m.base_url.clone(), m.server_name.clone()),
    };
    println!(
        "myelin-federation-pair: Myelin {} at {}, {kind} {peer_name} at {peer_url}",
        myelin.server_name, myelin.base_url
    );

    let substitute = |arg: &String| arg.replace("{myelin}", &myelin.base_url).replace("{peer}", &peer_url);
    let status =
        tokio::process::Command::new(&program[0]).args(program[1..].iter().map(substitute)).status().await;
    let code = match status {
        Ok(status) if status.success() => return ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("myelin-federation-pair: {} exited with {status}", program[0]);
            status.code().and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0).unwrap_or(1)
        }
        Err(e) => {
            eprintln!("myelin-federation-pair: cannot run {}: {e}", program[0]);
            1
        }
    };
    println!(
        "== Myelin's log, both Myelins (last 150 lines of {}):\n{}",
        log_path.display(),
        tail(&log_path, 150)
    );
    if let Peer::Synapse(synapse) = &peer {
        println!("{}", synapse.logs());
    }
    ExitCode::from(code)
}
