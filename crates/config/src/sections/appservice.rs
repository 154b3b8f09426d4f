//! Application services: `app_service_config_files` (each a Synapse registration YAML), read and
//! checked at start-up, plus `track_appservice_user_ips`, `use_appservice_legacy_authorization`
//! and `notify_appservices_from_worker` (the one process that sends transactions).
//!
//! The checks are Synapse's (`synapse/config/appservice.py`): `id`, `as_token`, `hs_token`,
//! `sender_localpart` required strings; `url` a string or an explicit `null` (no pushes, no
//! queries); `namespaces` an object whose `users` / `aliases` / `rooms` lists hold `regex` (a
//! string) and `exclusive` (a boolean); `rate_limited` true unless it is the boolean `false`;
//! `protocols` a list of strings; ids and `as_token`s unique across files. Myelin also refuses a
//! reused `hs_token` (an appservice could not tell its transactions apart) and a regex the
//! `regex` crate cannot compile. Regexes match as Python's `re.match` does: anchored at the
//! start of the string only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::federation::MAIN_INSTANCE;
use super::invalid;
use super::registration::LooseBool;
use crate::load::{ConfigError, Origins, parse_yaml_value};

/// The appservice settings of the homeserver.
#[derive(Clone, Debug)]
pub struct AppserviceConfig {
    /// The registrations, in the order of `app_service_config_files`.
    pub appservices: Vec<Appservice>,
    pub track_appservice_user_ips: bool,
    /// Send `access_token=<hs_token>` in the query too (deprecated in the spec).
    pub use_appservice_legacy_authorization: bool,
    /// The instance that sends transactions (`notify_appservices_from_worker`; the main
    /// process without it).
    pub sender_instance: String,
    /// How long a request to an appservice may take (`myelin_appservice_http_timeout_ms`;
    /// Synapse's HTTP client default, 60 s).
    pub http_timeout: Duration,
}

impl Default for AppserviceConfig {
    fn default() -> Self {
        AppserviceConfig {
            appservices: Vec::new(),
            track_appservice_user_ips: false,
            use_appservice_legacy_authorization: false,
            sender_instance: MAIN_INSTANCE.to_owned(),
            http_timeout: Duration::from_secs(60),
        }
    }
}

/// One namespace entry: a regex and whether the appservice claims it alone.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub regex: Regex,
    pub exclusive: bool,
}

/// One application service registration.
#[derive(Clone, Debug)]
pub struct Appservice {
    pub id: String,
    /// Without a trailing slash; `None`: the appservice gets no transactions or queries.
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
    /// Whether its users (not its sender) are rate limited.
    pub rate_limited: bool,
    pub protocols: Vec<String>,
    /// `receive_ephemeral`: ephemeral events under `ephemeral`.
    pub receive_ephemeral: bool,
    /// `de.sorunome.msc2409.push_ephemeral` (or the older `push_ephemeral`): ephemeral
    /// events under `de.sorunome.msc2409.ephemeral`. Either flag also brings its users'
    /// to-device messages under `de.sorunome.msc2409.to_device` (Synapse wants
    /// `experimental_features.msc2409_to_device_messages_enabled` too; Myelin reads no
    /// `experimental_features`).
    pub unstable_ephemeral: bool,
    /// `org.matrix.msc3202`: device list and key-count extensions in transactions (Synapse
    /// wants `experimental_features.msc3202_transaction_extensions` too).
    pub msc3202: bool,
    /// `io.element.msc4190`: the appservice manages its users' devices.
    pub msc4190: bool,
    /// The file it was read from.
    pub file: PathBuf,
}

fn find_namespace<'a>(namespaces: &'a [Namespace], value: &str) -> Option<&'a Namespace> {
    namespaces.iter().find(|ns| ns.regex.is_match(value))
}

impl Appservice {
    /// `@sender_localpart:server_name`.
    pub fn sender(&self, server_name: &str) -> String {
        format!("@{}:{server_name}", self.sender_localpart)
    }

    pub fn is_user_in_namespace(&self, user_id: &str) -> bool {
        find_namespace(&self.users, user_id).is_some()
    }

    pub fn is_alias_in_namespace(&self, alias: &str) -> bool {
        find_namespace(&self.aliases, alias).is_some()
    }

    pub fn is_room_in_namespace(&self, room_id: &str) -> bool {
        find_namespace(&self.rooms, room_id).is_some()
    }

    /// Its sender, or a user of its namespace (Synapse's `is_interested_in_user`).
    pub fn is_interested_in_user(&self, user_id: &str, server_name: &str) -> bool {
        user_id == self.sender(server_name) || self.is_user_in_namespace(user_id)
    }

    /// Whether it claims the user alone (its sender, or an exclusive namespace).
    pub fn is_exclusive_user(&self, user_id: &str, server_name: &str) -> bool {
        user_id == self.sender(server_name)
            || find_namespace(&self.users, user_id).is_some_and(|ns| ns.exclusive)
    }

    pub fn is_exclusive_alias(&self, alias: &str) -> bool {
        find_namespace(&self.aliases, alias).is_some_and(|ns| ns.exclusive)
    }

    pub fn is_exclusive_room(&self, room_id: &str) -> bool {
        find_namespace(&self.rooms, room_id).is_some_and(|ns| ns.exclusive)
    }

    /// Whether it receives ephemeral events in one form or the other.
    pub fn wants_ephemeral(&self) -> bool {
        self.receive_ephemeral || self.unstable_ephemeral
    }
}

impl AppserviceConfig {
    /// The appservice whose `as_token` this is.
    pub fn by_token(&self, token: &str) -> Option<&Appservice> {
        self.appservices.iter().find(|a| a.as_token == token)
    }

    pub fn by_id(&self, id: &str) -> Option<&Appservice> {
        self.appservices.iter().find(|a| a.id == id)
    }

    /// Whether an appservice's exclusive user namespace holds the user (Synapse's
    /// `get_if_app_services_interested_in_user`: the senders are not counted).
    pub fn in_exclusive_user_namespace(&self, user_id: &str) -> bool {
        self.appservices.iter().any(|a| find_namespace(&a.users, user_id).is_some_and(|ns| ns.exclusive))
    }
}

#[derive(Default, Deserialize)]
pub(crate) struct RawAppservice {
    #[serde(default)]
    app_service_config_files: Option<Vec<PathBuf>>,
    #[serde(default)]
    track_appservice_user_ips: LooseBool,
    #[serde(default)]
    use_appservice_legacy_authorization: LooseBool,
    #[serde(default)]
    notify_appservices_from_worker: Option<String>,
    #[serde(default)]
    myelin_appservice_http_timeout_ms: Option<u64>,
}

impl RawAppservice {
    pub(crate) fn into_config(
        self,
        origins: &Origins,
        server_name: &str,
    ) -> Result<AppserviceConfig, ConfigError> {
        let mut appservices: Vec<Appservice> = Vec::new();
        for path in self.app_service_config_files.unwrap_or_default() {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(origins, "app_service_config_files", format!("cannot read {}: {e}", path.display()))
            })?;
            let value = parse_yaml_value(&text)
                .map_err(|message| ConfigError::Yaml { path: path.clone(), message })?;
            let appservice = parse_registration(&path, value, server_name)?;
            for seen in &appservices {
                let clash = if seen.id == appservice.id {
                    Some(("id", "Cannot reuse ID across application services"))
                } else if seen.as_token == appservice.as_token {
                    Some(("as_token", "Cannot reuse as_token across application services"))
                } else if seen.hs_token == appservice.hs_token {
                    Some(("hs_token", "Cannot reuse hs_token across application services"))
                } else {
                    None
                };
                if let Some((key, message)) = clash {
                    return Err(in_file(&path, key, format!("{message} (also in {})", seen.file.display())));
                }
            }
            appservices.push(appservice);
        }
        Ok(AppserviceConfig {
            appservices,
            track_appservice_user_ips: self.track_appservice_user_ips.0,
            use_appservice_legacy_authorization: self.use_appservice_legacy_authorization.0,
            sender_instance: self.notify_appservices_from_worker.unwrap_or_else(|| MAIN_INSTANCE.to_owned()),
            http_timeout: match self.myelin_appservice_http_timeout_ms {
                Some(0) => {
                    return Err(invalid(origins, "myelin_appservice_http_timeout_ms", "must be above 0"));
                }
                Some(ms) => Duration::from_millis(ms),
                None => Duration::from_secs(60),
            },
        })
    }
}

fn in_file(path: &Path, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { file: path.display().to_string(), key: key.to_owned(), message: message.into() }
}

fn flag(path: &Path, map: &serde_json::Map<String, Value>, key: &str) -> Result<bool, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(in_file(path, key, format!("expected true or false, got {other}"))),
    }
}

/// Reads one registration file's contents.
fn parse_registration(path: &Path, value: Value, server_name: &str) -> Result<Appservice, ConfigError> {
    let Value::Object(map) = value else {
        return Err(in_file(path, "", "a registration must be a mapping of keys to values"));
    };
    let string = |key: &str| -> Result<String, ConfigError> {
        match map.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(in_file(path, key, format!("must be a string, got {other}"))),
            None => Err(in_file(path, key, "required string field is missing")),
        }
    };
    let id = string("id")?;
    let as_token = string("as_token")?;
    let hs_token = string("hs_token")?;
    let sender_localpart = string("sender_localpart")?;
    if id.contains('|') {
        return Err(in_file(path, "id", "an application service ID cannot contain '|'"));
    }
    let url = match map.get("url") {
        Some(Value::String(url)) => Some(url.trim_end_matches('/').to_owned()),
        Some(Value::Null) => None,
        Some(other) => return Err(in_file(path, "url", format!("must be a string or null, got {other}"))),
        None => return Err(in_file(path, "url", "required: a string, or null for no pushes")),
    };
    let url_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '~' | '/');
    if !sender_localpart.chars().all(url_safe) {
        return Err(in_file(path, "sender_localpart", "needs characters which are not URL encoded"));
    }
    if ruma::UserId::parse(format!("@{sender_localpart}:{server_name}")).is_err() {
        return Err(in_file(path, "sender_localpart", "does not make a valid user ID"));
    }
    let Some(Value::Object(namespaces)) = map.get("namespaces") else {
        return Err(in_file(
            path,
            "namespaces",
            "required: an object of `users`, `aliases` and `rooms` lists",
        ));
    };
    let namespace = |kind: &str| -> Result<Vec<Namespace>, ConfigError> {
        let key = format!("namespaces.{kind}");
        let entries = match namespaces.get(kind) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(entries)) => entries,
            Some(other) => return Err(in_file(path, &key, format!("must be a list, got {other}"))),
        };
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let key = format!("{key}[{i}]");
                let Value::Object(entry) = entry else {
                    return Err(in_file(path, &key, format!("must be an object, got {entry}")));
                };
                let Some(Value::String(regex)) = entry.get("regex") else {
                    return Err(in_file(path, &format!("{key}.regex"), "missing, or not a string"));
                };
                let Some(Value::Bool(exclusive)) = entry.get("exclusive") else {
                    return Err(in_file(path, &format!("{key}.exclusive"), "missing, or not a boolean"));
                };
                let regex = Regex::new(&format!("^(?:{regex})")).map_err(|e| {
                    in_file(path, &format!("{key}.regex"), format!("bad regex {regex:?}: {e}"))
                })?;
                Ok(Namespace { regex, exclusive: *exclusive })
            })
            .collect()
    };
    let users = namespace("users")?;
    let aliases = namespace("aliases")?;
    let rooms = namespace("rooms")?;
    let protocols = match map.get("protocols") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| match p {
                Value::String(s) => Ok(s.clone()),
                other => Err(in_file(path, "protocols", format!("must hold strings, got {other}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(in_file(path, "protocols", format!("must be a list, got {other}"))),
    };
    Ok(Appservice {
        id,
        url,
        as_token,
        hs_token,
        sender_localpart,
        users,
        aliases,
        rooms,
        // Synapse: anything but a boolean means the default, true.
        rate_limited: !matches!(map.get("rate_limited"), Some(Value::Bool(false))),
        protocols,
        receive_ephemeral: flag(path, &map, "receive_ephemeral")?,
        unstable_ephemeral: flag(path, &map, "de.sorunome.msc2409.push_ephemeral")?
            || flag(path, &map, "push_ephemeral")?,
        msc3202: flag(path, &map, "org.matrix.msc3202")?,
        msc4190: flag(path, &map, "io.element.msc4190")?,
        file: path.to_owned(),
    })
}
