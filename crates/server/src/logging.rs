//! Logging set-up. `log_config` points at a Python-logging YAML file in Synapse's format; Myelin
//! reads the root logger's level and where its handlers write: a file (directly or through a
//! buffering handler's `target`), the console (a `StreamHandler`: standard error, or standard
//! output with `stream: ext://sys.stdout`), or both; and the levels of `loggers:` named like
//! tracing targets (`ruma_state_res`, `myelin_service::rooms`). `RUST_LOG` overrides all the
//! levels.
//!
//! Targets in [`QUIET_TARGETS`] log at `warn` unless `RUST_LOG` or a `loggers:` entry names them:
//! ruma's state resolution logs every authorization check at INFO, which floods a busy server's
//! log (per-event detail belongs at DEBUG).

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
    /// `(target, level)` for each `loggers:` entry named like a tracing target.
    pub loggers: Vec<(String, String)>,
}

/// Targets too detailed for the default level, and the level they log at unless named.
pub const QUIET_TARGETS: &[(&str, &str)] = &[("ruma_state_res", "warn")];

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".to_owned(),
            file: None,
            console: Some(ConsoleStream::Stderr),
            loggers: Vec::new(),
        }
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
    // Python logger names with dots (`synapse.storage.SQL`) name nothing in Myelin.
    let is_target = |name: &str| {
        name.split("::")
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    };
    let loggers = value
        .get("loggers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(name, _)| is_target(name.as_str()))
        .filter_map(|(name, logger)| {
            let level = logger.get("level").and_then(Value::as_str)?;
            Some((name.clone(), python_level(level).to_owned()))
        })
        .collect();
    Ok(LogSettings { level, file, console, loggers })
}

/// The filter directives used when `RUST_LOG` is not set.
pub fn default_directives(settings: &LogSettings) -> String {
    let mut directives = format!("{},hyper=warn,h2=warn,rustls=warn,tokio_postgres=warn", settings.level);
    for (target, level) in QUIET_TARGETS {
        if !settings.loggers.iter().any(|(name, _)| name == target) {
            directives.push_str(&format!(",{target}={level}"));
        }
    }
    for (target, level) in &settings.loggers {
        directives.push_str(&format!(",{target}={level}"));
    }
    directives
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
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directives(&settings)));
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
                console: None,
                loggers: Vec::new(),
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
            LogSettings {
                level: "debug".to_owned(),
                file: None,
                console: Some(ConsoleStream::Stderr),
                loggers: Vec::new()
            }
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
                console: Some(ConsoleStream::Stdout),
                loggers: Vec::new(),
            }
        );
    }

    #[test]
    fn state_resolution_is_quiet_unless_a_logger_names_it() {
        let quiet = default_directives(&LogSettings::default());
        assert!(quiet.starts_with("info,"), "{quiet}");
        assert!(quiet.contains(",ruma_state_res=warn"), "{quiet}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.config");
        std::fs::write(&path, "version: 1\nloggers:\n  myelin_service::rooms:\n    level: WARNING\n  ruma_state_res:\n    level: DEBUG\n  synapse.storage.SQL:\n    level: INFO\nroot:\n  level: INFO\n").unwrap();
        let settings = read_log_config(&path).unwrap();
        assert_eq!(
            settings.loggers,
            [
                ("myelin_service::rooms".to_owned(), "warn".to_owned()),
                ("ruma_state_res".to_owned(), "debug".to_owned())
            ]
        );
        let named = default_directives(&settings);
        assert!(!named.contains("ruma_state_res=warn"), "{named}");
        assert!(named.ends_with(",myelin_service::rooms=warn,ruma_state_res=debug"), "{named}");
        // Every directive is one EnvFilter accepts.
        for directives in [quiet, named] {
            for directive in directives.split(',') {
                assert!(directive.parse::<tracing_subscriber::filter::Directive>().is_ok(), "{directive}");
            }
        }
    }
}
