//! Fresh databases for tests.

use std::str::FromStr;

use myelin_config::{DatabaseConfig, PostgresConfig};
use rand::RngExt;
use rand::distr::Alphanumeric;

/// A database engine under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The engine end-to-end tests use: `MYELIN_TEST_DB=postgres`, or SQLite by default.
    pub fn from_env() -> Engine {
        match std::env::var("MYELIN_TEST_DB").as_deref() {
            Ok("postgres") | Ok("postgresql") => Engine::Postgres,
            _ => Engine::Sqlite,
        }
    }
}

/// A database that exists for one test; dropped with it (the SQLite file with its directory,
/// the PostgreSQL schema with the throwaway cluster).
pub struct FreshDatabase {
    pub config: DatabaseConfig,
    _dir: Option<tempfile::TempDir>,
}

/// Parses `TEST_POSTGRES_URL`: a `postgres://` / `postgresql://` URL or the libpq key=value
/// form (`host=/tmp/sock port=5432 user=postgres dbname=myelin_test`). Unset or empty: `None`.
/// A value that does not parse is a failure, never a silent skip.
fn postgres_base() -> Option<PostgresConfig> {
    let url = std::env::var("TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())?;
    Some(parse_postgres_url(&url).unwrap_or_else(|error| panic!("TEST_POSTGRES_URL does not parse: {error}")))
}

/// A connection string (URL or key=value) as a pool configuration for the test database.
fn parse_postgres_url(url: &str) -> Result<PostgresConfig, tokio_postgres::Error> {
    let parsed = tokio_postgres::Config::from_str(url)?;
    let host = parsed.get_hosts().first().map(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => name.clone(),
        tokio_postgres::config::Host::Unix(path) => path.to_string_lossy().into_owned(),
    });
    Ok(PostgresConfig {
        host,
        port: parsed.get_ports().first().copied(),
        user: parsed.get_user().map(str::to_owned),
        password: parsed.get_password().map(|p| String::from_utf8_lossy(p).into_owned()),
        dbname: parsed.get_dbname().map(str::to_owned),
        cp_min: 1,
        cp_max: 8,
        ..PostgresConfig::default()
    })
}

/// Whether PostgreSQL tests must run (set by `scripts/test.sh`): then a missing
/// `TEST_POSTGRES_URL` is a failure, not a skip.
fn postgres_required() -> bool {
    std::env::var("MYELIN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

impl FreshDatabase {
    /// A fresh database on `engine`, or `None` (with a message) when PostgreSQL is not
    /// available and not required.
    pub async fn create(engine: Engine) -> Option<FreshDatabase> {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let path = dir.path().join("homeserver.db");
                Some(FreshDatabase { config: DatabaseConfig::Sqlite { path }, _dir: Some(dir) })
            }
            Engine::Postgres => {
                let Some(mut config) = postgres_base() else {
                    if postgres_required() {
                        panic!("MYELIN_REQUIRE_POSTGRES=1 but TEST_POSTGRES_URL is not set");
                    }
                    eprintln!("SKIPPED: PostgreSQL test without TEST_POSTGRES_URL (run scripts/test.sh)");
                    return None;
                };
                let schema = format!(
                    "t_{}",
                    rand::rng()
                        .sample_iter(&Alphanumeric)
                        .take(16)
                        .map(|c| char::from(c).to_ascii_lowercase())
                        .collect::<String>()
                );
                create_schema(&config, &schema).await;
                config.options = Some(format!("-c search_path={schema}"));
                Some(FreshDatabase { config: DatabaseConfig::Postgres(config), _dir: None })
            }
        }
    }
}

/// A fresh PostgreSQL database (not a schema) in the `TEST_POSTGRES_URL` cluster, for a process
/// that wants a database of its own (Synapse): C collation from `template0`. Removed with the
/// throwaway cluster.
pub struct PostgresDatabase {
    /// The cluster's connection settings (its `dbname` is the one `TEST_POSTGRES_URL` names).
    pub config: PostgresConfig,
    /// The new database's name.
    pub name: String,
}

impl PostgresDatabase {
    /// A new database, or `None` (with a message) when PostgreSQL is not available and not
    /// required.
    pub async fn create() -> Option<PostgresDatabase> {
        let Some(config) = postgres_base() else {
            if postgres_required() {
                panic!("MYELIN_REQUIRE_POSTGRES=1 but TEST_POSTGRES_URL is not set");
            }
            eprintln!("SKIPPED: PostgreSQL database without TEST_POSTGRES_URL (run scripts/test.sh)");
            return None;
        };
        let name = format!(
            "d_{}",
            rand::rng()
                .sample_iter(&Alphanumeric)
                .take(16)
                .map(|c| char::from(c).to_ascii_lowercase())
                .collect::<String>()
        );
        execute(
            &config,
            &format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"),
        )
        .await;
        Some(PostgresDatabase { config, name })
    }
}

async fn create_schema(config: &PostgresConfig, schema: &str) {
    execute(config, &format!("CREATE SCHEMA {schema}")).await
}

async fn execute(config: &PostgresConfig, statement: &str) {
    let mut pg = tokio_postgres::Config::new();
    pg.host(config.host.as_deref().unwrap_or("localhost"));
    if let Some(port) = config.port {
        pg.port(port);
    }
    pg.user(config.user.as_deref().unwrap_or("postgres"));
    if let Some(password) = &config.password {
        pg.password(password);
    }
    pg.dbname(config.dbname.as_deref().unwrap_or("postgres"));
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await.expect("connect to TEST_POSTGRES_URL");
    let task = tokio::spawn(connection);
    client.batch_execute(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    drop(client);
    let _ = task.await;
}

/// Runs one async store test body on SQLite and on PostgreSQL, as two tests.
///
/// ```ignore
/// store_test!(secrets_are_created_once, |store| async move { ... });
/// ```
#[macro_export]
macro_rules! store_test {
    ($name:ident, |$store:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($store: myelin_store::Store) {
                $body.await
            }

            async fn on(engine: $crate::Engine) {
                let Some(database) = $crate::FreshDatabase::create(engine).await else { return };
                let store = myelin_store::Store::open(&database.config).await.expect("open store");
                run(store).await;
                drop(database);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                on($crate::Engine::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                on($crate::Engine::Postgres).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::parse_postgres_url;

    #[test]
    fn test_postgres_url_parses_in_both_forms() {
        let url = parse_postgres_url("postgres://alice:s3cret@db.example:5433/myelin_test").unwrap();
        assert_eq!(url.host.as_deref(), Some("db.example"));
        assert_eq!(url.port, Some(5433));
        assert_eq!(url.user.as_deref(), Some("alice"));
        assert_eq!(url.password.as_deref(), Some("s3cret"));
        assert_eq!(url.dbname.as_deref(), Some("myelin_test"));

        let socket = parse_postgres_url("postgresql://postgres@%2Ftmp%2Fsock:6000/t").unwrap();
        assert_eq!(socket.host.as_deref(), Some("/tmp/sock"));
        assert_eq!(socket.port, Some(6000));

        let pairs =
            parse_postgres_url("host=/tmp/myelin-svc/sock port=25432 user=postgres dbname=myelin_test")
                .unwrap();
        assert_eq!(pairs.host.as_deref(), Some("/tmp/myelin-svc/sock"));
        assert_eq!(pairs.port, Some(25432));
        assert_eq!(pairs.user.as_deref(), Some("postgres"));
        assert_eq!(pairs.password, None);
        assert_eq!(pairs.dbname.as_deref(), Some("myelin_test"));
    }

    #[test]
    fn a_malformed_test_postgres_url_is_an_error() {
        assert!(parse_postgres_url("postgres://host:notaport/db").is_err());
        assert!(parse_postgres_url("host=/tmp port=").is_err());
    }
}
