//! `database`: SQLite (`name: sqlite3`) or PostgreSQL (`name: psycopg2`), in Synapse's shape.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::{absolute, invalid};
use crate::load::{ConfigError, Origins};

#[derive(Deserialize)]
pub(crate) struct RawDatabaseSection {
    database: Option<RawDatabase>,
}

#[derive(Deserialize)]
struct RawDatabase {
    name: String,
    #[serde(default)]
    args: RawArgs,
    /// Accepted for compatibility; Myelin does not recycle connections by transaction count.
    #[serde(default)]
    #[allow(dead_code)]
    txn_limit: Option<u64>,
    /// Accepted for compatibility; Myelin does not check the database locale.
    #[serde(default)]
    #[allow(dead_code)]
    allow_unsafe_locale: Option<bool>,
}

#[derive(Default, Deserialize)]
struct RawArgs {
    database: Option<String>,
    dbname: Option<String>,
    user: Option<String>,
    password: Option<String>,
    host: Option<String>,
    port: Option<Value>,
    cp_min: Option<usize>,
    cp_max: Option<usize>,
    sslmode: Option<String>,
    application_name: Option<String>,
    options: Option<String>,
    /// SQLite only in Synapse's shape; harmless elsewhere.
    #[allow(dead_code)]
    check_same_thread: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    keepalives: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    keepalives_idle: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    keepalives_interval: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    keepalives_count: Option<Value>,
}

/// Where the data lives.
#[derive(Clone, Debug)]
pub enum DatabaseConfig {
    Sqlite { path: PathBuf },
    Postgres(PostgresConfig),
}

/// psycopg2-style connection arguments.
#[derive(Clone, Debug, Default)]
pub struct PostgresConfig {
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    /// A host name, an IP address, or a UNIX socket directory (starting with `/`).
    pub host: Option<String>,
    pub port: Option<u16>,
    pub cp_min: usize,
    pub cp_max: usize,
    pub application_name: Option<String>,
    /// libpq `options`, e.g. `-c search_path=myschema`.
    pub options: Option<String>,
}

impl RawDatabaseSection {
    pub(crate) fn into_config(self, origins: &Origins) -> Result<DatabaseConfig, ConfigError> {
        let Some(raw) = self.database else {
            return Ok(DatabaseConfig::Sqlite { path: absolute(&PathBuf::from("homeserver.db")) });
        };
        match raw.name.as_str() {
            "sqlite3" => {
                let database = raw.args.database.unwrap_or_else(|| "homeserver.db".to_owned());
                if database == ":memory:" {
                    return Err(invalid(
                        origins,
                        "database.args.database",
                        "an in-memory SQLite database is not supported; give a file path",
                    ));
                }
                Ok(DatabaseConfig::Sqlite { path: absolute(&PathBuf::from(database)) })
            }
            "psycopg2" | "psycopg" | "postgres" | "postgresql" => {
                let args = raw.args;
                if args.database.is_some() && args.dbname.is_some() {
                    return Err(invalid(
                        origins,
                        "database.args",
                        "give either `database` or `dbname`, not both",
                    ));
                }
                let port = match &args.port {
                    None => None,
                    Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                    Some(Value::String(s)) => s.parse().ok(),
                    Some(_) => None,
                };
                if args.port.is_some() && port.is_none() {
                    return Err(invalid(origins, "database.args.port", "must be a port number"));
                }
                if let Some(mode) = &args.sslmode
                    && !matches!(mode.as_str(), "disable" | "allow" | "prefer")
                {
                    return Err(invalid(
                        origins,
                        "database.args.sslmode",
                        format!(
                            "sslmode {mode:?} is not supported by Myelin yet (use disable or prefer, or a local socket)"
                        ),
                    ));
                }
                let cp_min = args.cp_min.unwrap_or(5);
                let cp_max = args.cp_max.unwrap_or(10).max(1);
                if cp_min > cp_max {
                    return Err(invalid(origins, "database.args.cp_min", "cp_min is larger than cp_max"));
                }
                Ok(DatabaseConfig::Postgres(PostgresConfig {
                    user: args.user,
                    password: args.password,
                    dbname: args.database.or(args.dbname),
                    host: args.host,
                    port,
                    cp_min,
                    cp_max,
                    application_name: args.application_name,
                    options: args.options,
                }))
            }
            other => Err(invalid(
                origins,
                "database.name",
                format!("unknown database engine {other:?}: use sqlite3 or psycopg2"),
            )),
        }
    }
}
