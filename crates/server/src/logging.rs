//! Logging set-up. `log_config` points at a Python-logging YAML file in Synapse's format; Myelin
//! reads the root logger's level and where its handlers write: a file (directly or through a
//! buffering handler's `target`), the console (a `StreamHandler`: standard error, or standard
//! output with `stream: ext://sys.stdout`), or both. `RUST_LOG` overrides the level.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Which standard stream a console handler writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleStream {
    Stderr,
    Stdout,
}

/// What Myelin takes from a Synapse log config.
#[derive(Debug, PartialEq)]
pub struct LogSettings {
    pub level: String,
    pub file: Option<PathBuf>,
    pub console: Option<ConsoleStream>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { level: "info".to_owned(), file: None, console: Some(ConsoleStream::Stderr) }
    }
}

/// Where one of the root logger's handlers writes, following buffering handlers to their target
/// (at most a few hops).
enum Destination {
    File(PathBuf),
    Console(ConsoleStream),
}

fn destination(handlers: Option<&Value>, name: &str) -> Option<Destination> {
    let mut handler = handlers.and_then(|h| h.get(name));
    for _ in 0..4 {
        let current = handler?;
        if let Some(filename) = current.get("filename").and_then(Value::as_str) {
            return Some(Destination::File(PathBuf::from(filename)));
        }
        if let Some(target) = current.get("target").and_then(Value::as_str) {
            handler = handlers.and_then(|h| h.get(target));
            continue;
        }
        let class = current.get("class").and_then(Value::as_str).unwrap_or_default();
        if class.ends_with("StreamHandler") {
            let stream = match current.get("stream").and_then(Value::as_str) {
                Some("ext://sys.stdout") => ConsoleStream::Stdout,
                _ => ConsoleStream::Stderr,
            };
            return Some(Destination::Console(stream));
        }
        return None;
    }
    None
}

/// Reads the parts of a Python `logging.config.dictConfig` YAML that Myelin honours.
pub fn read_log_config(path: &Path) -> anyhow::Result<LogSettings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading log_config {}", path.display()))?;
    let value = myelin_config::parse_yaml_value(&text)
        .map_err(|message| anyhow::anyhow!("parsing log_config {}: {message}", path.display()))?;
    let root = value.get("root");
    let level = root
        .and_then(|r| r.get("level"))
        .and_then(Value::as_str)
        .map(python_level)
        .unwrap_or("info")
        .to_owned();
    let handlers = value.get("handlers");
    let names: Vec<&str> = root
        .and_then(|r| r.get("handlers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut file = None;
    let mut console = None;
    for name in &names {
        match destination(handlers, name) {
            Some(Destination::File(path)) => {
                file.get_or_insert(path);
            }
            Some(Destination::Console(stream)) => {
                console.get_or_insert(stream);
            }
            None => {}
        }
    }
    if file.is_none() && console.is_none() {
        // No handler Myelin can follow: keep the logs visible rather than drop them.
        console = Some(ConsoleStream::Stderr);
    }
    Ok(LogSettings { level, file, console })
}

fn python_level(level: &str) -> &'static str {
    match level.to_ascii_uppercase().as_str() {
        "DEBUG" | "NOTSET" => "debug",
        "WARNING" | "WARN" => "warn",
        "ERROR" | "CRITICAL" | "FATAL" => "error",
        _ => "info",
    }
}

/// Installs the process's log subscriber.
pub fn init(log_config: Option<&Path>) -> anyhow::Result<()> {
    let settings = match log_config {
        Some(path) => read_log_config(path)?,
        None => LogSettings::default(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{},hyper=warn,h2=warn,rustls=warn,tokio_postgres=warn", settings.level))
    });
    let file_layer = match &settings.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_target(true)
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file)),
            )
        }
        None => None,
    };
    let stderr_layer = (settings.console == Some(ConsoleStream::Stderr)).then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });
    let stdout_layer = (settings.console == Some(ConsoleStream::Stdout)).then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(std::io::stdout)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .with(stdout_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_generated_log_config_is_understood() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.config");
        std::fs::write(
            &path,
            "version: 1\nformatters:\n  precise:\n    format: '%(asctime)s - %(message)s'\nhandlers:\n  file:\n    class: logging.handlers.TimedRotatingFileHandler\n    formatter: precise\n    filename: /var/log/synapse/homeserver.log\n  buffer:\n    class: synapse.logging.handlers.PeriodicallyFlushingMemoryHandler\n    target: file\n    capacity: 10\n  console:\n    class: logging.StreamHandler\nloggers:\n  synapse.storage.SQL:\n    level: INFO\nroot:\n  level: WARNING\n  handlers: [buffer]\ndisable_existing_loggers: false\n",
        )
        .unwrap();
        let settings = read_log_config(&path).unwrap();
        assert_eq!(
            settings,
            LogSettings {
                level: "warn".to_owned(),
                file: Some("/var/log/synapse/homeserver.log".into()),
                console: None
            }
        );
    }

    #[test]
    fn console_only_config_logs_to_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.config");
        std::fs::write(&path, "version: 1\nhandlers:\n  console:\n    class: logging.StreamHandler\nroot:\n  level: DEBUG\n  handlers: [console]\n").unwrap();
        assert_eq!(
            read_log_config(&path).unwrap(),
            LogSettings { level: "debug".to_owned(), file: None, console: Some(ConsoleStream::Stderr) }
        );
    }

    #[test]
    fn console_and_file_handlers_both_receive_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.config");
        std::fs::write(
            &path,
            "version: 1\nhandlers:\n  file:\n    class: logging.handlers.RotatingFileHandler\n    filename: /var/log/matrix-synapse/homeserver.log\n  console:\n    class: logging.StreamHandler\n    stream: ext://sys.stdout\nroot:\n  level: INFO\n  handlers: [file, console]\n",
        )
        .unwrap();
        assert_eq!(
            read_log_config(&path).unwrap(),
            LogSettings {
                level: "info".to_owned(),
                file: Some("/var/log/matrix-synapse/homeserver.log".into()),
                console: Some(ConsoleStream::Stdout)
            }
        );
    }
}
