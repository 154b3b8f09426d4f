//! `myelin generate-config`: a commented `homeserver.yaml` with fresh secrets, and a signing key
//! in Synapse's key file format. Existing files are never overwritten.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use myelin_service::keys::write_new_key_file;
use myelin_service::util::random_string;

/// What to generate.
pub struct GenerateOptions {
    pub server_name: String,
    pub config_path: PathBuf,
    /// Where the database, media and pid file go (default: the config file's directory).
    pub data_dir: Option<PathBuf>,
    pub report_stats: bool,
    pub port: u16,
    /// The listener's addresses (default: 127.0.0.1 only).
    pub bind_addresses: Vec<String>,
}

/// What was written.
#[derive(Debug, PartialEq)]
pub struct Generated {
    pub wrote_config: bool,
    pub wrote_signing_key: bool,
    pub signing_key_path: PathBuf,
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() { Ok(path.to_owned()) } else { Ok(std::env::current_dir()?.join(path)) }
}

/// Quotes a string for YAML (double-quoted scalar).
fn yaml_string(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The listener's `bind_addresses` as a YAML flow sequence of single-quoted strings.
fn bind_addresses(addresses: &[String]) -> String {
    let addresses: Vec<String> = if addresses.is_empty() {
        vec!["'127.0.0.1'".to_owned()]
    } else {
        addresses.iter().map(|a| format!("'{}'", a.replace('\'', "''"))).collect()
    };
    format!("[{}]", addresses.join(", "))
}

pub fn homeserver_yaml(options: &GenerateOptions, config_dir: &Path, data_dir: &Path) -> String {
    let server_name = &options.server_name;
    let data = |name: &str| yaml_string(&data_dir.join(name).display().to_string());
    let signing_key_path =
        yaml_string(&config_dir.join(format!("{server_name}.signing.key")).display().to_string());
    format!(
        r#"# Configuration file for Myelin, in Synapse's homeserver.yaml format.
#
# Myelin reads Synapse's option names, so most of Synapse's configuration documentation applies:
# https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html
# Options Myelin does not support yet are reported (once each) at start-up and otherwise ignored.
#
# Further files can be layered on top: `myelin run -c homeserver.yaml -c conf.d/` reads every
# `*.yaml` file in conf.d/ in name order; a later file's top-level key replaces an earlier one.

# The public name of this server: the part after the colon in user IDs (@alice:{server_name}).
# It cannot be changed later.
server_name: {server_name_quoted}

# Where clients should reach this server; setting it also serves /.well-known/matrix/client.
#public_baseurl: https://matrix.example.com/

pid_file: {pid_file}

listeners:
  # Plain HTTP for a reverse proxy (nginx, Apache, Caddy) on the same machine. Add "::1" to
  # bind_addresses for IPv6.
  - port: {port}
    tls: false
    type: http
    x_forwarded: true
    bind_addresses: {bind_addresses}
    resources:
      - names: [client, federation]
        compress: false

# The database. SQLite needs no set-up; for PostgreSQL use:
#database:
#  name: psycopg2
#  args:
#    user: myelin
#    password: secret
#    dbname: myelin
#    host: localhost        # or a UNIX socket directory such as /var/run/postgresql
#    cp_min: 5
#    cp_max: 10
database:
  name: sqlite3
  args:
    database: {database}

# Logs go to standard error unless a Synapse-style log config is given:
#log_config: "/etc/myelin/log.config"

# Uploaded media and its thumbnails (Synapse's layout, so a Synapse media store can be copied in):
media_store_path: {media}
#max_upload_size: 50M

# Shared secret for `myelin register-user` and Synapse's `register_new_matrix_user`.
registration_shared_secret: {registration_shared_secret}
macaroon_secret_key: {macaroon_secret_key}
form_secret: {form_secret}

# Myelin never phones home; this is accepted for compatibility.
report_stats: {report_stats}

signing_key_path: {signing_key_path}

trusted_key_servers:
  - server_name: "matrix.org"
"#,
        server_name_quoted = yaml_string(server_name),
        pid_file = data("homeserver.pid"),
        port = options.port,
        bind_addresses = bind_addresses(&options.bind_addresses),
        database = data("homeserver.db"),
        media = data("media_store"),
        registration_shared_secret = yaml_string(&random_string(50)),
        macaroon_secret_key = yaml_string(&random_string(50)),
        form_secret = yaml_string(&random_string(50)),
        report_stats = options.report_stats,
        signing_key_path = signing_key_path,
    )
}

/// Writes the config file (unless it exists) and the signing key (unless it exists).
pub fn generate(options: &GenerateOptions) -> anyhow::Result<Generated> {
    if ruma::ServerName::parse(&options.server_name).is_err() {
        bail!("{:?} is not a valid server name", options.server_name);
    }
    let config_path = absolute(&options.config_path)?;
    let config_dir = config_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let data_dir = match &options.data_dir {
        Some(dir) => absolute(dir)?,
        None => config_dir.clone(),
    };
    std::fs::create_dir_all(&config_dir).with_context(|| format!("creating {}", config_dir.display()))?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let signing_key_path = config_dir.join(format!("{}.signing.key", options.server_name));

    let wrote_config = if config_path.exists() {
        false
    } else {
        use std::io::Write as _;
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let mut file =
            open.open(&config_path).with_context(|| format!("creating {}", config_path.display()))?;
        file.write_all(homeserver_yaml(options, &config_dir, &data_dir).as_bytes())?;
        true
    };
    let wrote_signing_key = if signing_key_path.exists() {
        false
    } else {
        write_new_key_file(&signing_key_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        true
    };
    Ok(Generated { wrote_config, wrote_signing_key, signing_key_path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> GenerateOptions {
        GenerateOptions {
            server_name: "example.org".to_owned(),
            config_path: dir.join("homeserver.yaml"),
            data_dir: Some(dir.join("data")),
            report_stats: false,
            port: 8008,
            bind_addresses: Vec::new(),
        }
    }

    #[test]
    fn generated_config_loads_without_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let generated = generate(&options(dir.path())).unwrap();
        assert!(generated.wrote_config && generated.wrote_signing_key);
        let loaded = myelin_config::load(&[dir.path().join("homeserver.yaml")]).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let config = loaded.config;
        assert_eq!(config.server.server_name, "example.org");
        assert_eq!(config.keys.signing_key_path, generated.signing_key_path);
        assert_eq!(config.keys.registration_shared_secret.as_ref().map(String::len), Some(50));
        assert!(
            matches!(config.database, myelin_config::DatabaseConfig::Sqlite { ref path } if path.starts_with(dir.path().join("data")))
        );
        // Media goes beside the database, not into the working directory.
        assert_eq!(config.media.media_store_path, dir.path().join("data").join("media_store"));
        let key = std::fs::read_to_string(&generated.signing_key_path).unwrap();
        assert!(myelin_service::keys::parse_key_file(&key).is_ok());
    }

    #[test]
    fn existing_files_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        generate(&options(dir.path())).unwrap();
        let config_before = std::fs::read(dir.path().join("homeserver.yaml")).unwrap();
        let key_before = std::fs::read(dir.path().join("example.org.signing.key")).unwrap();
        let again = generate(&options(dir.path())).unwrap();
        assert!(!again.wrote_config && !again.wrote_signing_key);
        assert_eq!(std::fs::read(dir.path().join("homeserver.yaml")).unwrap(), config_before);
        assert_eq!(std::fs::read(dir.path().join("example.org.signing.key")).unwrap(), key_before);
    }

    #[test]
    fn secrets_differ_between_runs() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        generate(&options(a.path())).unwrap();
        generate(&options(b.path())).unwrap();
        let secret = |dir: &Path| {
            myelin_config::load(&[dir.join("homeserver.yaml")])
                .unwrap()
                .config
                .keys
                .macaroon_secret_key
                .unwrap()
        };
        assert_ne!(secret(a.path()), secret(b.path()));
    }
}
