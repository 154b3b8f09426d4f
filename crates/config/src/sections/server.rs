//! `server_name`, `public_baseurl`, `pid_file`, `listeners` and the well-known keys.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::invalid;
use crate::load::{ConfigError, Origins};
use crate::units::DurationMs;

#[derive(Deserialize)]
pub(crate) struct RawServer {
    server_name: Option<String>,
    public_baseurl: Option<String>,
    pid_file: Option<PathBuf>,
    #[serde(default)]
    listeners: Vec<ListenerConfig>,
    #[serde(default)]
    serve_server_wellknown: bool,
    #[serde(default)]
    extra_well_known_client_content: Map<String, Value>,
    default_room_version: Option<String>,
    tls_certificate_path: Option<PathBuf>,
    tls_private_key_path: Option<PathBuf>,
}

/// The server's identity and its HTTP listeners.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub server_name: String,
    /// Always ends with `/`. Defaults to `https://<server_name>/`.
    pub public_baseurl: String,
    /// Whether `public_baseurl` was set explicitly, which (as in Synapse) turns on
    /// `/.well-known/matrix/client`.
    pub serve_client_wellknown: bool,
    pub pid_file: Option<PathBuf>,
    pub listeners: Vec<ListenerConfig>,
    pub serve_server_wellknown: bool,
    pub extra_well_known_client_content: Map<String, Value>,
    pub default_room_version: String,
    /// PEM certificate chain and key for listeners with `tls: true`.
    pub tls_certificate_path: Option<PathBuf>,
    pub tls_private_key_path: Option<PathBuf>,
}

/// One entry of `listeners`.
#[derive(Clone, Debug, Deserialize)]
pub struct ListenerConfig {
    pub port: Option<u16>,
    /// A UNIX socket path instead of a TCP port.
    pub path: Option<PathBuf>,
    /// Permissions of the UNIX socket, as an octal string or number (default 0o666).
    #[serde(default)]
    pub mode: Option<Value>,
    #[serde(default)]
    pub bind_addresses: Vec<String>,
    /// Synapse's older single-address form.
    #[serde(default)]
    pub bind_address: Option<String>,
    #[serde(rename = "type")]
    pub kind: ListenerType,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub x_forwarded: bool,
    #[serde(default)]
    pub request_id_header: Option<String>,
    #[serde(default)]
    pub resources: Vec<ListenerResource>,
    /// Myelin-specific (Synapse's listeners have no such key): how long a client has to send a
    /// request's head (request line and headers) over HTTP/1. The timer starts as soon as the
    /// connection waits for a request, so it also closes an idle keep-alive HTTP/1 connection.
    /// A client that misses it is disconnected without a response. Default `60s` (Twisted, under
    /// Synapse, drops a connection after 60 s without data).
    #[serde(default = "default_connection_timeout")]
    pub header_read_timeout: DurationMs,
    /// Myelin-specific: how long a request body may go without sending any data. A stalled body
    /// is answered `408 M_UNKNOWN` and the connection is closed. Default `60s`.
    #[serde(default = "default_connection_timeout")]
    pub body_read_timeout: DurationMs,
    /// Myelin-specific: how long a connection may stay open with no request in flight and no
    /// response being written (an idle keep-alive or HTTP/2 connection, or one that never sends
    /// a request) before it is closed. Default `60s`.
    #[serde(default = "default_connection_timeout")]
    pub idle_timeout: DurationMs,
    /// Myelin-specific: how many connections this listener serves at once. Further connections
    /// are not accepted: they wait in the kernel's listen backlog (or are refused by the kernel
    /// when that is full) until a served connection closes. Default 4096.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_connection_timeout() -> DurationMs {
    DurationMs(60_000)
}

fn default_max_connections() -> usize {
    4096
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerType {
    Http,
    Metrics,
    Manhole,
    Replication,
}

/// One entry of a listener's `resources`.
#[derive(Clone, Debug, Deserialize)]
pub struct ListenerResource {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub compress: bool,
}

/// Resource names Synapse knows; the ones Myelin serves are listed in `SERVED_RESOURCES`.
const KNOWN_RESOURCES: &[&str] = &[
    "client",
    "consent",
    "federation",
    "keys",
    "media",
    "metrics",
    "openid",
    "replication",
    "static",
    "health",
    "webclient",
];

/// Resource names Myelin serves today.
pub const SERVED_RESOURCES: &[&str] =
    &["client", "consent", "federation", "keys", "media", "metrics", "health", "openid"];

impl ListenerConfig {
    /// Whether any of this listener's resources has the given name.
    pub fn has_resource(&self, name: &str) -> bool {
        self.resources.iter().any(|r| r.names.iter().any(|n| n == name))
    }

    /// The addresses to bind, with Synapse's default of every address.
    pub fn addresses(&self) -> Vec<String> {
        if !self.bind_addresses.is_empty() {
            self.bind_addresses.clone()
        } else if let Some(address) = &self.bind_address {
            vec![address.clone()]
        } else {
            vec!["::".to_owned(), "0.0.0.0".to_owned()]
        }
    }

    /// The UNIX socket mode (octal), default 0o666.
    pub fn socket_mode(&self) -> Option<u32> {
        match &self.mode {
            None => Some(0o666),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Some(Value::String(s)) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
            Some(_) => None,
        }
    }
}

impl RawServer {
    pub(crate) fn into_config(self, origins: &Origins) -> Result<ServerConfig, ConfigError> {
        let server_name =
            self.server_name.ok_or_else(|| invalid(origins, "server_name", "`server_name` must be set"))?;
        if ruma::ServerName::parse(&server_name).is_err() {
            return Err(invalid(
                origins,
                "server_name",
                format!("{server_name:?} is not a valid server name (a host name with an optional port)"),
            ));
        }
        let serve_client_wellknown = self.public_baseurl.is_some();
        let mut public_baseurl = self.public_baseurl.unwrap_or_else(|| format!("https://{server_name}/"));
        if url::Url::parse(&public_baseurl).is_err() {
            return Err(invalid(origins, "public_baseurl", "must be an absolute http(s) URL"));
        }
        if !public_baseurl.ends_with('/') {
            public_baseurl.push('/');
        }
        Ok(ServerConfig {
            server_name,
            public_baseurl,
            serve_client_wellknown,
            pid_file: self.pid_file,
            listeners: self.listeners,
            serve_server_wellknown: self.serve_server_wellknown,
            extra_well_known_client_content: self.extra_well_known_client_content,
            default_room_version: self.default_room_version.unwrap_or_else(|| "11".to_owned()),
            tls_certificate_path: self.tls_certificate_path,
            tls_private_key_path: self.tls_private_key_path,
        })
    }
}

impl ServerConfig {
    pub(crate) fn validate(&self, origins: &Origins, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        for (index, listener) in self.listeners.iter().enumerate() {
            let key = format!("listeners[{index}]");
            match (listener.port, &listener.path) {
                (Some(_), Some(_)) => {
                    return Err(invalid(origins, &key, "give either `port` or `path`, not both"));
                }
                (None, None) => {
                    return Err(invalid(origins, &key, "a listener needs a `port` or a `path`"));
                }
                _ => {}
            }
            if listener.path.is_some() && listener.socket_mode().is_none() {
                return Err(invalid(
                    origins,
                    &format!("{key}.mode"),
                    "must be an octal mode such as \"666\"",
                ));
            }
            for (name, timeout) in [
                ("header_read_timeout", listener.header_read_timeout),
                ("body_read_timeout", listener.body_read_timeout),
                ("idle_timeout", listener.idle_timeout),
            ] {
                if timeout.0 == 0 {
                    return Err(invalid(origins, &format!("{key}.{name}"), "must be a positive duration"));
                }
            }
            if listener.max_connections == 0 {
                return Err(invalid(origins, &format!("{key}.max_connections"), "must be at least 1"));
            }
            match listener.kind {
                ListenerType::Http | ListenerType::Metrics => {}
                other => warnings.push(format!(
                    "{}: `{key}` has type {other:?}, which Myelin does not serve; it will not be started",
                    origins.file_of("listeners")
                )),
            }
            for resource in &listener.resources {
                for name in &resource.names {
                    if !KNOWN_RESOURCES.contains(&name.as_str()) {
                        return Err(invalid(
                            origins,
                            &format!("{key}.resources"),
                            format!("unknown resource name {name:?}"),
                        ));
                    }
                    if !SERVED_RESOURCES.contains(&name.as_str()) {
                        warnings.push(format!(
                            "{}: `{key}` resource {name:?} is not served by Myelin yet",
                            origins.file_of("listeners")
                        ));
                    }
                }
            }
        }
        if self.listeners.iter().any(|l| l.tls)
            && (self.tls_certificate_path.is_none() || self.tls_private_key_path.is_none())
        {
            return Err(invalid(
                origins,
                "tls_certificate_path",
                "a listener has `tls: true`, so `tls_certificate_path` and `tls_private_key_path` must be set",
            ));
        }
        if self.listeners.is_empty() {
            warnings.push("no `listeners` are configured: the server will not accept connections".to_owned());
        }
        Ok(())
    }
}
