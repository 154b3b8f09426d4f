//! Logging set-up. `log_config` points at a Python-logging YAML file in Synapse's format; Myelin
//! reads the root logger's level, the levels of `loggers:` named like tracing targets
//! (`ruma_state_res`, `myelin_service::rooms`) and, when the root logger's handlers write to a
//! file (directly or through a buffering handler's `target`), that file. `RUST_LOG` overrides
//! all the levels.
//!
//! Targets in [`QUIET_TARGETS`] log at `warn` unless `RUST_LOG` or a `loggers:` entry names them:
//! ruma's state resolution logs every authorization check at INFO, which floods a busy server's
//! log (per-event detail belongs at DEBUG).

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
    /// `(target, level)` for each `loggers:` entry named like a tracing target.
    pub loggers: Vec<(String, String)>,
}

/// Targets too detailed for the default level, and the level they log at unless named.
pub const QUIET_TARGETS: &[(&str, &str)] = &[("ruma_state_res", "warn")];

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { level: "info".to_owned(), file: None, loggers: Vec::new() }
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
    Ok(LogSettings { level, file, loggers })
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
            LogSettings {
                level: "warn".to_owned(),
                file: Some("/var/log/synapse/homeserver.log".into()),
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
            LogSettings { level: "debug".to_owned(), file: None, loggers: Vec::new() }
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
