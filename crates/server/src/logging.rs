//! Logging set-up. `log_config` points at a Python-logging YAML file in Synapse's format; Myelin
//! reads the root logger's level and, when the root logger's handlers write to a file (directly
//! or through a buffering handler's `target`), that file. `RUST_LOG` overrides the level.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use tracing_subscriber::EnvFilter;

/// What Myelin takes from a Synapse log config.
#[derive(Debug, PartialEq)]
pub struct LogSettings {
    pub level: String,
    pub file: Option<PathBuf>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { level: "info".to_owned(), file: None }
    }
}

/// Reads the parts of a Python `logging.config.dictConfig` YAML that Myelin honours.
pub fn read_log_config(path: &Path) -> anyhow::Result<LogSettings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading log_config {}", path.display()))?;
    let value: Value =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing log_config {}", path.display()))?;
    let root = value.get("root");
    let level = root
        .and_then(|r| r.get("level"))
        .and_then(Value::as_str)
        .map(python_level)
        .unwrap_or("info")
        .to_owned();
    let handlers = value.get("handlers");
    let mut file = None;
    for name in root.and_then(|r| r.get("handlers")).and_then(Value::as_array).into_iter().flatten() {
        let mut handler = name.as_str().and_then(|n| handlers.and_then(|h| h.get(n)));
        // Follow buffering handlers to their target, at most a few hops.
        for _ in 0..4 {
            let Some(current) = handler else { break };
            if let Some(filename) = current.get("filename").and_then(Value::as_str) {
                file = Some(PathBuf::from(filename));
                break;
            }
            handler =
                current.get("target").and_then(Value::as_str).and_then(|t| handlers.and_then(|h| h.get(t)));
        }
        if file.is_some() {
            break;
        }
    }
    Ok(LogSettings { level, file })
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    match settings.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).try_init()
        }
        None => builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).try_init(),
    }
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
            LogSettings { level: "warn".to_owned(), file: Some("/var/log/synapse/homeserver.log".into()) }
        );
    }

    #[test]
    fn console_only_config_logs_to_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.config");
        std::fs::write(&path, "version: 1\nhandlers:\n  console:\n    class: logging.StreamHandler\nroot:\n  level: DEBUG\n  handlers: [console]\n").unwrap();
        assert_eq!(read_log_config(&path).unwrap(), LogSettings { level: "debug".to_owned(), file: None });
    }
}
