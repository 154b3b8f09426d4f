//! What an admin types, through the `myelin` binary: Synapse's `--generate-config` spelling,
//! `--port`/`--bind` on a first start, `register-user` without -c, `hash-password` with a partial
//! file, worker configurations refused, error messages, logging to console and file at once.

use std::path::Path;
use std::process::{Child, Command, Output};

use crate::process::{MYELIN, free_port, terminate, wait_healthy};

fn myelin_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(MYELIN).args(args).current_dir(dir).output().expect("myelin runs")
}

fn spawn_in(dir: &Path, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(MYELIN)
        .args(args)
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("myelin starts")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn synapse_spelling_of_generate_config_writes_a_config_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("homeserver.yaml");
    let output = myelin_in(
        dir.path(),
        &[
            "-c",
            config.to_str().unwrap(),
            "--generate-config",
            "--server-name",
            "example.test",
            "--report-stats=no",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("A config file has been generated"), "{}", text(&output));
    assert!(dir.path().join("example.test.signing.key").exists());
    let loaded = myelin_config::load(std::slice::from_ref(&config)).unwrap();
    assert_eq!(loaded.config.server.server_name, "example.test");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    // Synapse's short -H, and a second run that keeps the existing file.
    let before = std::fs::read(&config).unwrap();
    let output = myelin_in(
        dir.path(),
        &["--config-path", config.to_str().unwrap(), "--generate-config", "-H", "example.test"],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("already exists"), "{}", text(&output));
    assert_eq!(std::fs::read(&config).unwrap(), before);
    // Without a server name there is nothing to generate.
    let output =
        myelin_in(dir.path(), &["-c", dir.path().join("other.yaml").to_str().unwrap(), "--generate-config"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("--generate-config needs --server-name"), "{}", text(&output));
}

#[tokio::test]
async fn first_start_takes_port_and_bind_and_register_user_finds_the_default_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let port_arg = port.to_string();
    let log = dir.path().join("run.log");
    // `myelin-data` relative to the working directory, as a newcomer following README.md has it.
    let mut child = spawn_in(
        dir.path(),
        &["run", "--server-name", "localhost", "--port", &port_arg, "--bind", "127.0.0.1"],
        &log,
    );
    wait_healthy(port, &mut child, &log).await;
    let generated = std::fs::read_to_string(dir.path().join("myelin-data/homeserver.yaml")).unwrap();
    assert!(generated.contains(&format!("port: {port}")), "{generated}");
    assert!(generated.contains("bind_addresses: ['127.0.0.1']"), "{generated}");

    // The first admin, with neither -c nor -k: the configuration `run` generated is found.
    let output = myelin_in(dir.path(), &["register-user", "-u", "admin", "-p", "pw-admin-1", "-a"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("Success!"), "{}", text(&output));
    // A refusal is one error line, not prefixes stacked on the server's answer.
    let output = myelin_in(dir.path(), &["register-user", "-u", "admin", "-p", "pw-admin-1", "-a"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: registration failed: the server answered 400 Bad Request: "),
        "{stderr}"
    );
    assert!(!stderr.contains("ERROR"), "{stderr}");
    let (status, _) = terminate(&mut child);
    assert!(status.success(), "{status}: {}", std::fs::read_to_string(&log).unwrap_or_default());

    // Once the configuration exists, a --port it does not have is refused, not ignored.
    let other = free_port().to_string();
    let output = myelin_in(dir.path(), &["run", "--server-name", "localhost", "--port", &other]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains(&format!("--port {other} only applies when the configuration is generated"))
    );
    // Elsewhere, register-user says where it looked.
    let elsewhere = tempfile::tempdir().unwrap();
    let output = myelin_in(elsewhere.path(), &["register-user", "-u", "bob", "-p", "pw", "--no-admin"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: no configuration found: give -c homeserver.yaml"), "{stderr}");
}

#[test]
fn hash_password_accepts_a_file_with_only_password_settings() {
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("password.yaml");
    std::fs::write(&partial, "bcrypt_rounds: 5\npassword_config:\n  pepper: spicy\n").unwrap();
    let output = myelin_in(dir.path(), &["hash-password", "-c", partial.to_str().unwrap(), "-p", "hunter2"]);
    assert!(output.status.success(), "{}", text(&output));
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$2b$05$"), "{hash}");
    let password = myelin_config::load_password_config(&[partial]).unwrap();
    let hasher = myelin_service::passwords::PasswordHasher::new(&password);
    assert!(hasher.verify_blocking("hunter2", &hash));
}

#[test]
fn a_synapse_worker_configuration_is_refused_before_binding_anything() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let main = dir.path().join("homeserver.yaml");
    std::fs::write(
        &main,
        format!(
            "server_name: example.test\nlisteners:\n  - port: {port}\n    type: http\n    bind_addresses: ['127.0.0.1']\n    resources: [{{names: [client]}}]\ndatabase:\n  name: sqlite3\n  args:\n    database: {}\n",
            dir.path().join("homeserver.db").display()
        ),
    )
    .unwrap();
    let worker = dir.path().join("worker.yaml");
    std::fs::write(
        &worker,
        "worker_app: synapse.app.generic_worker\nworker_name: generic-0\nworker_listeners:\n  - type: http\n    port: 18111\n    resources: [{names: [client]}]\n",
    )
    .unwrap();
    let output = myelin_in(dir.path(), &["-c", main.to_str().unwrap(), "-c", worker.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("this is a Synapse worker configuration; Myelin does not run workers yet"),
        "{stderr}"
    );
    assert!(stderr.contains("worker.yaml"), "{stderr}");
    assert!(!dir.path().join("homeserver.db").exists(), "nothing was started");
}

#[tokio::test]
async fn a_log_config_with_console_and_file_handlers_logs_to_both() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log_file = dir.path().join("homeserver.log");
    std::fs::write(
        dir.path().join("log.yaml"),
        format!(
            "version: 1\nformatters:\n  precise:\n    format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'\nhandlers:\n  file:\n    class: logging.handlers.TimedRotatingFileHandler\n    formatter: precise\n    filename: {}\n    when: midnight\n  console:\n    class: logging.StreamHandler\n    formatter: precise\nroot:\n  level: INFO\n  handlers: [file, console]\ndisable_existing_loggers: false\n",
            log_file.display()
        ),
    )
    .unwrap();
    let config = dir.path().join("homeserver.yaml");
    std::fs::write(
        &config,
        format!(
            "server_name: example.test\nlog_config: {}\nlisteners:\n  - port: {port}\n    type: http\n    bind_addresses: ['127.0.0.1']\n    resources: [{{names: [client]}}]\ndatabase:\n  name: sqlite3\n  args:\n    database: {}\n",
            dir.path().join("log.yaml").display(),
            dir.path().join("homeserver.db").display()
        ),
    )
    .unwrap();
    let console = dir.path().join("console.log");
    let mut child = spawn_in(dir.path(), &["-c", config.to_str().unwrap()], &console);
    wait_healthy(port, &mut child, &console).await;
    let (status, _) = terminate(&mut child);
    assert!(status.success(), "{status}");
    let on_console = std::fs::read_to_string(&console).unwrap();
    let in_file = std::fs::read_to_string(&log_file).unwrap();
    for output in [&on_console, &in_file] {
        assert!(output.contains("Myelin is running") && output.contains("stopped"), "{output}");
    }
}
