//! Application services (`app_service_config_files`), as Synapse runs them.
//!
//! - **Authentication**: an `as_token` is a [`Requester`] acting for the appservice's sender,
//!   or for the `user_id` it names when that user is its sender or in its user namespace and
//!   registered; `device_id` (or `org.matrix.msc3202.device_id`) picks one of that user's
//!   devices. Built in [`Services::authenticate_masquerading`], the one token path.
//! - **Registration and login**: `m.login.application_service` registers users of the
//!   namespace without a password and logs them in; users and aliases in an exclusive namespace
//!   are refused to everyone else (`M_EXCLUSIVE`, in `check_username` and
//!   `create_room_alias`).
//! - **Transactions**: a cursor over the room-event stream per appservice (`appservice_state`)
//!   and the transactions made from it (`appservice_txns`, migration 0028). One task per
//!   appservice, in the process `notify_appservices_from_worker` names, takes the published
//!   events after its cursor, keeps those the appservice is interested in (Synapse's
//!   `is_interested_in_event`), and in one database transaction stores them as the next
//!   transaction and moves the cursor; then it sends the oldest stored transaction until the
//!   appservice answers 200, backing off from 2 s doubling to 512 s (Synapse's recoverer), and
//!   deletes it. A retry, in this process or after a restart, sends the same ID and events.
//! - **Ephemeral data** follows the streams as events do (Synapse's
//!   `application_services_state`, migration 0030): per appservice a position in the receipt,
//!   presence, to-device and device-list streams, stored with the event position; each round
//!   reads what is new since them and, in the same database transaction that stores the
//!   transaction, moves them, so nothing is lost or sent twice across failures and restarts.
//!   With `receive_ephemeral` (or MSC2409's `de.sorunome.msc2409.push_ephemeral`): read
//!   receipts of rooms it is interested in (private ones only of its own users), presence of
//!   users it is interested in, and the typing state of those rooms, read from the in-memory
//!   typing service (not persisted, as Synapse does not: a restart forgets it); and the
//!   to-device messages of its users' devices under `de.sorunome.msc2409.to_device` (left in
//!   the devices' inboxes). Synapse gates the to-device messages and MSC3202's device lists
//!   behind `experimental_features`; Myelin reads no `experimental_features` and, as for the
//!   MSC3202 key counts, the registration's flags alone decide. With `org.matrix.msc3202`,
//!   each transaction carries the one-time key counts and unused fallback key types of the
//!   devices of its sender and of its users joined to the transaction's rooms (read per
//!   transaction, not per device), and `org.matrix.msc3202.device_lists` `{changed, left}`:
//!   users whose devices changed who are its users or share a room it is interested in
//!   (`left` stays empty, as in Synapse).
//! - **Rate limits** skip requests made with the `as_token` of an appservice registered with
//!   `rate_limited: false` (Synapse's `requester.app_service`), not its users logged in with
//!   their own tokens.
//! - **Queries**: an unknown local user an event names is asked of the appservices whose
//!   namespace holds it (`/users/{userId}`) before the event is handed over; an unknown local
//!   alias of an alias namespace is asked (`/rooms/{alias}`) before `resolve_room_alias`
//!   answers 404; `/thirdparty/*` is proxied. `POST /appservice/{id}/ping` reaches `/ping`.
//!
//! Outbound HTTP to the appservices does not go through the federation IP blocklist: they
//! usually live on localhost, and Synapse's appservice client has no blocklist either.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use myelin_config::Appservice;
use myelin_core::{ErrCode, ErrorKind, MatrixError};
use myelin_store::NewUser;
use myelin_store::appservice::{AppserviceStreams, AppserviceTxn, NewAppserviceTxn};
use parking_lot::Mutex;
use ruma::UserId;
use serde_json::{Value, json};

use crate::auth::{Requester, hash_token};
use crate::sessions::LoginSession;
use crate::{Error, Result, Services};

/// How many events one transaction holds at most (Synapse's `MAX_PERSISTENT_EVENTS_PER_TRANSACTION`).
const MAX_EVENTS_PER_TXN: i64 = 100;
/// How many receipts, and how many to-device positions, one transaction reads at most.
const MAX_EPHEMERAL_PER_TXN: i64 = 100;
/// Retries after a failed transaction: 2 s doubling up to 512 s.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(512);
/// How often a sender looks at the stream when nothing woke it.
const IDLE_POLL: Duration = Duration::from_secs(5);
const PREFIX: &str = "/_matrix/app/v1";

/// The appservices' in-memory parts: the HTTP client, the senders' wake-up and, per
/// appservice, the typing position handed over (typing is not persisted).
pub struct Appservices {
    client: reqwest::Client,
    pub wakeup: tokio::sync::Notify,
    /// A successful ping: senders backing off try again at once (as Synapse's `force_retry`).
    ping_ok: tokio::sync::Notify,
    typing_seen: Mutex<HashMap<String, i64>>,
    /// Whether one of an appservice's users is joined to a room, by (appservice, room), with
    /// the count of membership changes it was read at (`Notifier::member_changes`): valid
    /// while no local membership changed since.
    joined_interest: Mutex<HashMap<(String, String), (u64, bool)>>,
}

impl Appservices {
    pub fn new(timeout: Duration) -> Result<Appservices> {
        let client = crate::tls::http_client_builder()
            .map_err(Error::internal)?
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("Myelin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::internal)?;
        Ok(Appservices {
            client,
            wakeup: tokio::sync::Notify::new(),
            ping_ok: tokio::sync::Notify::new(),
            typing_seen: Mutex::default(),
            joined_interest: Mutex::default(),
        })
    }
}

/// Per user, per device.
type KeyCounts<T> = BTreeMap<String, BTreeMap<String, T>>;

/// Query parameters an appservice may masquerade with.
#[derive(Clone, Debug, Default)]
pub struct Masquerade {
    pub user_id: Option<String>,
    pub device_id: Option<String>,
}

/// Why an appservice request failed.
enum CallError {
    Timeout(String),
    Status(u16, String),
    Connection(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout(m) | CallError::Connection(m) => f.write_str(m),
            CallError::Status(code, _) => write!(f, "HTTP {code}"),
        }
    }
}

fn exclusive(message: &str) -> Error {
    MatrixError::new(ErrCode::Exclusive, message).into()
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20")
}

impl Services {
    fn appservice_list(&self) -> &[Appservice] {
        &self.config.appservice.appservices
    }

    /// The appservice a requester acts through, if any.
    pub fn appservice_of(&self, requester: &Requester) -> Option<&Appservice> {
        requester.appservice_id.as_deref().and_then(|id| self.config.appservice.by_id(id))
    }

    /// The requester of an `as_token` (`None`: not an appservice's token), masquerading as
    /// `user_id` / `device_id` when asked.
    pub(crate) async fn appservice_requester(
        &self,
        token: &str,
        masquerade: &Masquerade,
    ) -> Result<Option<Requester>> {
        let Some(service) = self.config.appservice.by_token(token) else { return Ok(None) };
        let sender = service.sender(self.server_name());
        let user_id = match &masquerade.user_id {
            None => sender.clone(),
            Some(user_id) if *user_id == sender => sender.clone(),
            Some(user_id) => {
                if !service.is_interested_in_user(user_id, self.server_name()) {
                    return Err(MatrixError::forbidden(format!(
                        "Application service cannot masquerade as this user ({user_id})."
                    ))
                    .into());
                }
                if self.store.get_user(user_id).await?.is_none() {
                    return Err(MatrixError::forbidden(format!(
                        "Application service has not registered this user ({user_id})"
                    ))
                    .into());
                }
                user_id.clone()
            }
        };
        let user = self.store.get_user(&user_id).await?;
        if let Some(device_id) = &masquerade.device_id
            && self.store.get_device(&user_id, device_id).await?.is_none()
        {
            return Err(MatrixError::new(
                ErrCode::Custom("M_UNKNOWN_DEVICE"),
                format!("Application service trying to use a device that doesn't exist ('{device_id}' for {user_id})"),
            )
            .into());
        }
        let parsed = UserId::parse(&user_id).map_err(|_| MatrixError::invalid_param("Invalid user_id"))?;
        Ok(Some(Requester {
            user_id: parsed,
            device_id: masquerade.device_id.clone(),
            is_guest: false,
            is_admin: user.as_ref().is_some_and(|u| u.admin),
            shadow_banned: user.as_ref().is_some_and(|u| u.shadow_banned),
            suspended: user.as_ref().is_some_and(|u| u.suspended),
            token_hash: hash_token(token),
            appservice_id: Some(service.id.clone()),
        }))
    }

    /// Creates each appservice's sender account if it does not exist yet, so that every path
    /// that reads a user finds it (Synapse keeps the sender virtual; its bridges register it
    /// anyway and accept `M_USER_IN_USE`).
    pub(crate) async fn ensure_appservice_senders(&self) -> Result<()> {
        for service in self.appservice_list() {
            let user_id = service.sender(self.server_name());
            if self.store.get_user(&user_id).await?.is_none() {
                let user = NewUser {
                    user_id: user_id.clone(),
                    appservice_id: Some(service.id.clone()),
                    displayname: Some(service.sender_localpart.clone()),
                    ..NewUser::default()
                };
                if self.store.register_user(&user, None, None).await? {
                    tracing::info!(%user_id, appservice = %service.id, "created an appservice's sender");
                }
            }
        }
        Ok(())
    }

    /// Refuses a user ID that an appservice other than `allowed` claims exclusively, and the
    /// server notices user.
    pub(crate) fn check_user_not_appservice_exclusive(
        &self,
        user_id: &str,
        allowed: Option<&str>,
    ) -> Result<()> {
        if let Some(notices) = &self.config.server_notices
            && format!("@{}:{}", notices.system_mxid_localpart, self.server_name()) == user_id
        {
            return Err(exclusive("This user ID is reserved."));
        }
        if self
            .appservice_list()
            .iter()
            .any(|s| Some(s.id.as_str()) != allowed && s.is_exclusive_user(user_id, self.server_name()))
        {
            return Err(exclusive("This user ID is reserved by an application service."));
        }
        Ok(())
    }

    /// The alias rules of `create_room_alias`: an appservice only in its alias namespace,
    /// anyone else never in an exclusive one.
    pub(crate) fn check_alias_for_requester(&self, requester: &Requester, alias: &str) -> Result<()> {
        match self.appservice_of(requester) {
            Some(service) if !service.is_alias_in_namespace(alias) => {
                Err(exclusive("This application service has not reserved this kind of alias."))
            }
            Some(_) => Ok(()),
            None if self.appservice_list().iter().any(|s| s.is_exclusive_alias(alias)) => {
                Err(exclusive("This alias is reserved by an application service."))
            }
            None => Ok(()),
        }
    }

    /// `POST /register` with `type: m.login.application_service`.
    pub async fn register_appservice_user(
        &self,
        token: &str,
        username: &str,
        device_id: Option<String>,
        initial_device_display_name: Option<&str>,
        inhibit_login: bool,
        want_refresh: bool,
    ) -> Result<(String, Option<LoginSession>)> {
        let service = self.config.appservice.by_token(token).ok_or_else(|| {
            Error::from(
                MatrixError::unknown_token("Unrecognised access token").with_extra("soft_logout", false),
            )
        })?;
        let user_id = format!("@{username}:{}", self.server_name());
        if UserId::parse(&user_id).is_err() {
            return Err(MatrixError::new(ErrCode::InvalidUsername, "Invalid user ID").into());
        }
        if !service.is_interested_in_user(&user_id, self.server_name()) {
            return Err(exclusive("Invalid user localpart for this application service."));
        }
        self.check_user_not_appservice_exclusive(&user_id, Some(&service.id))?;
        if service.msc4190 && !inhibit_login {
            return Err(MatrixError::new(
                ErrCode::Custom("M_APPSERVICE_LOGIN_UNSUPPORTED"),
                "This appservice has MSC4190 enabled, so the inhibit_login parameter must be set to true.",
            )
            .into());
        }
        let appservice_id =
            service.is_exclusive_user(&user_id, self.server_name()).then(|| service.id.clone());
        let user = NewUser {
            user_id: user_id.clone(),
            appservice_id,
            displayname: Some(username.to_owned()),
            ..NewUser::default()
        };
        if !self.store.register_user(&user, None, None).await? {
            return Err(MatrixError::new(ErrCode::UserInUse, "User ID already taken.").into());
        }
        // No `auto_join_rooms` for an appservice's users (Synapse's `appservice_register`).
        tracing::info!(%user_id, appservice = %service.id, "registered an appservice user");
        if inhibit_login {
            return Ok((user_id, None));
        }
        let session =
            self.create_login_session(&user_id, device_id, initial_device_display_name, want_refresh).await?;
        Ok((user_id, Some(session)))
    }

    /// `m.login.application_service` (MSC2778): the user, qualified, if the appservice of
    /// `token` may log in as them.
    pub(crate) async fn appservice_login_user(&self, token: Option<&str>, user: &str) -> Result<String> {
        let token = token.ok_or_else(MatrixError::missing_token)?;
        let service = self.config.appservice.by_token(token).ok_or_else(|| {
            Error::from(MatrixError::unknown_token(
                "This login method is only valid for application services",
            ))
        })?;
        if service.msc4190 {
            return Err(MatrixError::new(
                ErrCode::Custom("M_APPSERVICE_LOGIN_UNSUPPORTED"),
                "This appservice has MSC4190 enabled, so appservice login cannot be used.",
            )
            .into());
        }
        let user_id =
            if user.starts_with('@') { user.to_owned() } else { format!("@{user}:{}", self.server_name()) };
        if !service.is_interested_in_user(&user_id, self.server_name()) {
            return Err(MatrixError::forbidden("Invalid access_token").into());
        }
        match self.store.get_user(&user_id).await? {
            Some(account) if account.deactivated => {
                Err(MatrixError::new(ErrCode::UserDeactivated, "This account has been deactivated").into())
            }
            Some(_) => Ok(user_id),
            None => Err(MatrixError::forbidden("Invalid username or password").into()),
        }
    }

    /// One request to an appservice, authenticated with its `hs_token`.
    async fn call_appservice(
        &self,
        service: &Appservice,
        method: reqwest::Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> std::result::Result<Value, CallError> {
        let Some(url) = &service.url else { return Err(CallError::Connection("no URL".to_owned())) };
        let mut query = query.to_vec();
        if self.config.appservice.use_appservice_legacy_authorization {
            query.push(("access_token".to_owned(), service.hs_token.clone()));
        }
        let mut request = self
            .appservices
            .client
            .request(method, format!("{url}{path}"))
            .bearer_auth(&service.hs_token)
            .query(&query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Timeout("The request to the application service timed out".to_owned())
            } else {
                CallError::Connection(format!("The application service could not be reached: {e}"))
            }
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Timeout("The request to the application service timed out".to_owned())
            } else {
                CallError::Connection(format!("Reading the application service's answer failed: {e}"))
            }
        })?;
        if !status.is_success() {
            return Err(CallError::Status(status.as_u16(), text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: the round trip in ms.
    pub async fn ping_appservice(
        &self,
        requester: &Requester,
        appservice_id: &str,
        transaction_id: Option<&str>,
    ) -> Result<u64> {
        let Some(service) = self.appservice_of(requester) else {
            return Err(MatrixError::forbidden(
                "Only application services can use the /appservice/ping endpoint",
            )
            .into());
        };
        if service.id != appservice_id {
            return Err(MatrixError::forbidden("Mismatching application service ID in path").into());
        }
        if service.url.is_none() {
            return Err(MatrixError::new(
                ErrCode::Custom("M_URL_NOT_SET"),
                "The application service does not have a URL set",
            )
            .into());
        }
        let mut body = json!({});
        if let Some(txn) = transaction_id {
            body["transaction_id"] = json!(txn);
        }
        let start = Instant::now();
        match self
            .call_appservice(service, reqwest::Method::POST, &format!("{PREFIX}/ping"), &[], Some(&body))
            .await
        {
            Ok(_) => {
                // A reachable appservice gets its waiting transactions at once.
                self.appservices.ping_ok.notify_waiters();
                Ok(start.elapsed().as_millis() as u64)
            }
            Err(CallError::Timeout(message)) => {
                Err(MatrixError::new(ErrCode::Custom("M_CONNECTION_TIMEOUT"), message)
                    .with_kind(ErrorKind::GatewayTimeout)
                    .into())
            }
            Err(CallError::Status(status, text)) => {
                Err(MatrixError::new(ErrCode::Custom("M_BAD_STATUS"), format!("HTTP {status}"))
                    .with_extra("status", status)
                    .with_extra("body", text)
                    .with_kind(ErrorKind::BadGateway)
                    .into())
            }
            Err(CallError::Connection(message)) => {
                Err(MatrixError::new(ErrCode::Custom("M_CONNECTION_FAILED"), message)
                    .with_kind(ErrorKind::BadGateway)
                    .into())
            }
        }
    }

    /// The appservices asked about an unknown user: those with a URL whose namespace holds it.
    fn appservices_queried_for<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a Appservice> {
        self.appservice_list().iter().filter(move |s| s.url.is_some() && s.is_user_in_namespace(user_id))
    }

    /// Whether a local user exists, asking the appservices whose namespace holds an unknown
    /// one (they register it before answering 200; Synapse's `query_user_exists`).
    pub(crate) async fn query_appservice_user(&self, user_id: &str) -> Result<bool> {
        if !user_id.ends_with(&format!(":{}", self.server_name())) {
            return Ok(false);
        }
        if self.store.get_user(user_id).await?.is_some() {
            return Ok(true);
        }
        for service in self.appservices_queried_for(user_id) {
            let path = format!("{PREFIX}/users/{}", encode(user_id));
            match self.call_appservice(service, reqwest::Method::GET, &path, &[], None).await {
                Ok(_) => return Ok(true),
                Err(error) => {
                    tracing::debug!(appservice = %service.id, %user_id, %error, "user query answered no")
                }
            }
        }
        Ok(false)
    }

    /// The room of a local alias; an unknown alias of an appservice's namespace is asked of
    /// the appservice first, which may create it (Synapse's `query_room_alias_exists`).
    pub(crate) async fn local_alias_room(&self, alias: &ruma::RoomAliasId) -> Result<Option<String>> {
        if let Some((room_id, _)) = self.store.get_alias(alias.as_str()).await? {
            return Ok(Some(room_id));
        }
        if !self.query_appservice_alias(alias.as_str()).await {
            return Ok(None);
        }
        Ok(self.store.get_alias(alias.as_str()).await?.map(|(room_id, _)| room_id))
    }

    /// Asks the appservices whose namespace holds an unknown local alias whether it exists;
    /// whether one said yes (and so may have created it).
    async fn query_appservice_alias(&self, alias: &str) -> bool {
        for service in
            self.appservice_list().iter().filter(|s| s.url.is_some() && s.is_alias_in_namespace(alias))
        {
            let path = format!("{PREFIX}/rooms/{}", encode(alias));
            match self.call_appservice(service, reqwest::Method::GET, &path, &[], None).await {
                Ok(_) => return true,
                Err(error) => {
                    tracing::debug!(appservice = %service.id, %alias, %error, "alias query answered no")
                }
            }
        }
        false
    }

    /// `GET /thirdparty/protocols`: each protocol of every appservice that declares it, with
    /// its instances merged (Synapse's `get_3pe_protocols`).
    pub async fn thirdparty_protocols(&self, only: Option<&str>) -> Result<serde_json::Map<String, Value>> {
        let mut protocols: serde_json::Map<String, Value> = serde_json::Map::new();
        for service in self.appservice_list().iter().filter(|s| s.url.is_some()) {
            for protocol in &service.protocols {
                if only.is_some_and(|p| p != protocol) {
                    continue;
                }
                let path = format!("{PREFIX}/thirdparty/protocol/{}", encode(protocol));
                let Ok(Value::Object(mut info)) =
                    self.call_appservice(service, reqwest::Method::GET, &path, &[], None).await
                else {
                    continue;
                };
                let mut instances = match info.remove("instances") {
                    Some(Value::Array(instances)) => instances,
                    _ => Vec::new(),
                };
                for instance in &mut instances {
                    if let Value::Object(instance) = instance {
                        instance.insert(
                            "instance_id".to_owned(),
                            json!(format!(
                                "{}|{}",
                                service.id,
                                instance.get("network_id").and_then(Value::as_str).unwrap_or_default()
                            )),
                        );
                        instance.entry("fields").or_insert(json!({}));
                    }
                }
                match protocols.get_mut(protocol) {
                    Some(Value::Object(existing)) => {
                        if let Some(Value::Array(list)) = existing.get_mut("instances") {
                            list.extend(instances);
                        }
                    }
                    _ => {
                        info.insert("instances".to_owned(), Value::Array(instances));
                        protocols.insert(protocol.clone(), Value::Object(info));
                    }
                }
            }
        }
        Ok(protocols)
    }

    /// `GET /thirdparty/{location,user}/{protocol}`: the answers of every appservice of the
    /// protocol, concatenated. `kind` is `location` or `user`.
    pub async fn thirdparty_lookup(
        &self,
        kind: &str,
        protocol: Option<&str>,
        query: &[(String, String)],
    ) -> Result<Vec<Value>> {
        let mut results = Vec::new();
        for service in self.appservice_list().iter().filter(|s| s.url.is_some()) {
            let path = match protocol {
                Some(protocol) if service.protocols.iter().any(|p| p == protocol) => {
                    format!("{PREFIX}/thirdparty/{kind}/{}", encode(protocol))
                }
                Some(_) => continue,
                None if service.protocols.is_empty() => continue,
                None => format!("{PREFIX}/thirdparty/{kind}"),
            };
            if let Ok(Value::Array(items)) =
                self.call_appservice(service, reqwest::Method::GET, &path, query, None).await
            {
                results.extend(items.into_iter().filter(Value::is_object));
            }
        }
        Ok(results)
    }

    /// Whether the appservice wants what happens in a room: the room or one of its aliases in
    /// its namespaces, or one of its users joined.
    async fn appservice_interested_in_room(&self, service: &Appservice, room_id: &str) -> Result<bool> {
        if service.is_room_in_namespace(room_id) || self.appservice_user_joined(service, room_id).await? {
            return Ok(true);
        }
        Ok(self.store.aliases_of_room(room_id).await?.iter().any(|a| service.is_alias_in_namespace(a)))
    }

    /// Whether one of the appservice's users is joined to the room: read from the store once,
    /// then kept until a local membership changes anywhere (a room the appservice is in is
    /// asked again with every event sent to it).
    async fn appservice_user_joined(&self, service: &Appservice, room_id: &str) -> Result<bool> {
        let key = (service.id.clone(), room_id.to_owned());
        let changes_before = self.notifier.member_changes();
        if let Some(&(changes, joined)) = self.appservices.joined_interest.lock().get(&key)
            && changes == changes_before
        {
            return Ok(joined);
        }
        let local = format!(":{}", self.server_name());
        let joined = self
            .store
            .room_members(room_id, "join")
            .await?
            .iter()
            .any(|u| u.ends_with(&local) && service.is_interested_in_user(u, self.server_name()));
        let mut cache = self.appservices.joined_interest.lock();
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(key, (changes_before, joined));
        Ok(joined)
    }

    /// Wakes the appservice senders: a stream they follow (receipts, presence, typing,
    /// to-device, device lists) moved. What is new is read from the streams by each sender.
    pub(crate) fn wake_appservices(&self) {
        if !self.config.appservice.appservices.is_empty() {
            self.appservices.wakeup.notify_waiters();
        }
    }

    /// [`Self::appservice_interested_in_room`], remembered for one round in `rooms`.
    async fn appservice_interested_in_room_cached(
        &self,
        service: &Appservice,
        room_id: &str,
        rooms: &mut HashMap<String, bool>,
    ) -> Result<bool> {
        if let Some(known) = rooms.get(room_id) {
            return Ok(*known);
        }
        let interested = self.appservice_interested_in_room(service, room_id).await?;
        rooms.insert(room_id.to_owned(), interested);
        Ok(interested)
    }

    /// Whether the appservice wants to hear about a user's presence or device list: the user
    /// is its own, or is joined to a room it is interested in (Synapse's
    /// `is_interested_in_presence` and `_is_appservice_interested_in_device_lists_of_user`).
    async fn appservice_interested_in_user_rooms(
        &self,
        service: &Appservice,
        user_id: &str,
        rooms: &mut HashMap<String, bool>,
    ) -> Result<bool> {
        if service.is_interested_in_user(user_id, self.server_name()) {
            return Ok(true);
        }
        for room_id in self.store.rooms_for_user(user_id, "join").await? {
            if self.appservice_interested_in_room_cached(service, &room_id, rooms).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The read receipts after `from` (up to `upto`, at most [`MAX_EPHEMERAL_PER_TXN`]) of
    /// rooms the appservice is interested in, as one `m.receipt` per room (private receipts
    /// only of its users); and the position read up to.
    async fn appservice_receipts(
        &self,
        service: &Appservice,
        from: i64,
        upto: i64,
        rooms: &mut HashMap<String, bool>,
        out: &mut Vec<Value>,
    ) -> Result<i64> {
        if upto <= from {
            return Ok(from);
        }
        let receipts = self.store.read_receipts_in_range(from, upto, MAX_EPHEMERAL_PER_TXN).await?;
        let reached = match receipts.last() {
            Some(last) if receipts.len() as i64 == MAX_EPHEMERAL_PER_TXN => last.stream_id,
            _ => upto,
        };
        let mut by_room: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
        for receipt in receipts {
            if receipt.receipt_type == "m.read.private"
                && !service.is_interested_in_user(&receipt.user_id, self.server_name())
            {
                continue;
            }
            if !self.appservice_interested_in_room_cached(service, &receipt.room_id, rooms).await? {
                continue;
            }
            let mut data = json!({"ts": receipt.ts});
            if !receipt.thread_id.is_empty() {
                data["thread_id"] = json!(receipt.thread_id);
            }
            let content = by_room.entry(receipt.room_id).or_default();
            let by_type = content.entry(receipt.event_id).or_insert_with(|| json!({}));
            by_type[&receipt.receipt_type][&receipt.user_id] = data;
        }
        out.extend(
            by_room.into_iter().map(
                |(room_id, content)| json!({"type": "m.receipt", "room_id": room_id, "content": content}),
            ),
        );
        Ok(reached)
    }

    /// The presence changes after `from` up to `upto` of users the appservice is interested
    /// in, as `m.presence` events.
    async fn appservice_presence(
        &self,
        service: &Appservice,
        from: i64,
        upto: i64,
        rooms: &mut HashMap<String, bool>,
        out: &mut Vec<Value>,
    ) -> Result<()> {
        if upto <= from {
            return Ok(());
        }
        let now = crate::util::now_ms() as i64;
        for record in self.store.presence_since(from, upto).await? {
            if !self.appservice_interested_in_user_rooms(service, &record.user_id, rooms).await? {
                continue;
            }
            out.push(crate::presence::presence_event(&record, now));
        }
        Ok(())
    }

    /// The current typing state of the rooms the appservice is interested in whose typing
    /// changed after `from`, as `m.typing` events.
    async fn appservice_typing(
        &self,
        service: &Appservice,
        from: i64,
        rooms: &mut HashMap<String, bool>,
        out: &mut Vec<Value>,
    ) -> Result<()> {
        for (room_id, user_ids) in self.typing.changed_since(from) {
            if self.appservice_interested_in_room_cached(service, room_id.as_str(), rooms).await? {
                out.push(json!({"type": "m.typing", "room_id": room_id, "content": {"user_ids": user_ids}}));
            }
        }
        Ok(())
    }

    /// MSC2409: the to-device messages after `from` for the devices of the appservice's users
    /// (they stay in the devices' inboxes); and the position read up to.
    async fn appservice_to_device(
        &self,
        service: &Appservice,
        from: i64,
        upto: i64,
        out: &mut Vec<Value>,
    ) -> Result<i64> {
        if upto <= from {
            return Ok(from);
        }
        let (messages, reached) =
            self.store.to_device_messages_in_range(from, upto, MAX_EPHEMERAL_PER_TXN).await?;
        for (user_id, device_id, message) in messages {
            if !service.is_interested_in_user(&user_id, self.server_name()) {
                continue;
            }
            let content: Value = serde_json::from_str(&message.content).unwrap_or_else(|_| json!({}));
            out.push(json!({
                "to_user_id": user_id,
                "to_device_id": device_id,
                "type": message.kind,
                "sender": message.sender,
                "content": content,
            }));
        }
        Ok(reached)
    }

    /// MSC3202: the users whose devices changed after `from` up to `upto` that the appservice
    /// is interested in, as `{changed, left}` (`None` when there are none; `left` is never
    /// computed, as in Synapse).
    async fn appservice_device_lists(
        &self,
        service: &Appservice,
        from: i64,
        upto: i64,
        rooms: &mut HashMap<String, bool>,
    ) -> Result<Option<Value>> {
        if upto <= from {
            return Ok(None);
        }
        let mut changed = Vec::new();
        for user_id in self.store.device_list_changes_in_range(from, upto).await? {
            if self.appservice_interested_in_user_rooms(service, &user_id, rooms).await? {
                changed.push(user_id);
            }
        }
        Ok((!changed.is_empty()).then(|| json!({"changed": changed, "left": []})))
    }

    /// Whether the appservice wants a room event (Synapse's `is_interested_in_event`).
    /// `rooms` remembers, for one batch of events, the answer for each room (its aliases and
    /// members are read once per batch, not once per event).
    async fn appservice_interested_in_event(
        &self,
        service: &Appservice,
        event: &Value,
        room_id: &str,
        rooms: &mut HashMap<String, bool>,
    ) -> Result<bool> {
        let server = self.server_name();
        if event
            .get("sender")
            .and_then(Value::as_str)
            .is_some_and(|s| service.is_interested_in_user(s, server))
        {
            return Ok(true);
        }
        if event.get("type").and_then(Value::as_str) == Some("m.room.member")
            && event
                .get("state_key")
                .and_then(Value::as_str)
                .is_some_and(|s| service.is_interested_in_user(s, server))
        {
            return Ok(true);
        }
        self.appservice_interested_in_room_cached(service, room_id, rooms).await
    }

    /// Starts one transaction sender per appservice with a URL, in the process that sends them.
    pub(crate) async fn run_appservice_senders(self) {
        let config = &self.config.appservice;
        if config.sender_instance != self.config.federation.instance_name {
            tracing::debug!("this process does not send appservice transactions");
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for service in config.appservices.iter().filter(|s| s.url.is_some()) {
            tasks.spawn(self.clone().run_appservice_sender(service.id.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn run_appservice_sender(self, id: String) {
        let Some(service) = self.config.appservice.by_id(&id).cloned() else { return };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let wakeup = self.appservices.wakeup.notified();
            // Stopping mid-round is safe: a transaction sent but not yet deleted is sent again
            // under its ID after the restart, and the appservice deduplicates it.
            let round = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                round = self.appservice_round(&service) => round,
            };
            let (wait, idle) = match round {
                Ok(true) => {
                    backoff = FIRST_BACKOFF;
                    continue;
                }
                Ok(false) => {
                    backoff = FIRST_BACKOFF;
                    (IDLE_POLL, true)
                }
                Err(error) => {
                    tracing::warn!(appservice = %service.id, %error, retry_in = ?backoff, "appservice transaction failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    (wait, false)
                }
            };
            // Idle, new events wake it; backing off, only the time (or a successful ping) does.
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = wakeup, if idle => {}
                _ = self.appservices.ping_ok.notified(), if !idle => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends the oldest waiting transaction, or makes the next one from the stream. Returns
    /// whether there may be more to do at once.
    async fn appservice_round(&self, service: &Appservice) -> Result<bool> {
        if let Some(txn) = self.store.oldest_appservice_txn(&service.id).await? {
            self.send_appservice_txn(service, &txn).await?;
            self.store.delete_appservice_txn(&service.id, txn.txn_id).await?;
            return Ok(true);
        }
        let current = AppserviceStreams {
            events: self.rooms.stream.current(),
            receipts: self.streams.receipts.current(),
            presence: self.streams.presence.current(),
            to_device: self.streams.to_device.current(),
            device_lists: self.streams.device_lists.current(),
        };
        let from = self.store.appservice_positions(&service.id, current).await?;
        let events = if from.events < current.events {
            self.store.events_in_stream_range(from.events, current.events, MAX_EVENTS_PER_TXN).await?
        } else {
            Vec::new()
        };
        let new_position = events.last().map_or(from.events.max(current.events), |e| e.stream_ordering);
        let mut event_ids = Vec::new();
        let mut rooms = HashMap::new();
        for stored in &events {
            let Ok(json) = serde_json::from_str::<Value>(&stored.json) else { continue };
            if !self.appservice_interested_in_event(service, &json, &stored.room_id, &mut rooms).await? {
                continue;
            }
            // Unknown users the event names are asked of their appservices first (only users
            // of some appservice's namespace can be unknown and made on request).
            for key in ["sender", "state_key"] {
                if key == "state_key" && json.get("type").and_then(Value::as_str) != Some("m.room.member") {
                    continue;
                }
                if let Some(user) = json.get(key).and_then(Value::as_str)
                    && self.appservices_queried_for(user).next().is_some()
                {
                    self.query_appservice_user(user).await?;
                }
            }
            event_ids.push(stored.event_id.clone());
        }
        let mut reached = AppserviceStreams { events: new_position, ..current };
        let mut more = events.len() as i64 == MAX_EVENTS_PER_TXN;
        let (mut ephemeral, mut to_device, mut device_lists) = (Vec::new(), Vec::new(), None);
        let typing_position = self.streams.typing.current();
        if service.wants_ephemeral() {
            reached.receipts = self
                .appservice_receipts(service, from.receipts, current.receipts, &mut rooms, &mut ephemeral)
                .await?;
            self.appservice_presence(service, from.presence, current.presence, &mut rooms, &mut ephemeral)
                .await?;
            let typing_seen = self.appservices.typing_seen.lock().get(&service.id).copied().unwrap_or(0);
            self.appservice_typing(service, typing_seen, &mut rooms, &mut ephemeral).await?;
            reached.to_device =
                self.appservice_to_device(service, from.to_device, current.to_device, &mut to_device).await?;
            more |= reached.receipts < current.receipts || reached.to_device < current.to_device;
        }
        if service.msc3202 {
            device_lists = self
                .appservice_device_lists(service, from.device_lists, current.device_lists, &mut rooms)
                .await?;
        }
        if event_ids.is_empty() && ephemeral.is_empty() && to_device.is_empty() && device_lists.is_none() {
            if reached != from {
                self.store.create_appservice_txn(&service.id, reached, None).await?;
            }
            self.appservices.typing_seen.lock().insert(service.id.clone(), typing_position);
            return Ok(more);
        }
        let ids = serde_json::to_string(&event_ids).map_err(Error::internal)?;
        let ephemeral = Value::Array(ephemeral).to_string();
        let to_device = Value::Array(to_device).to_string();
        let device_lists = device_lists.map(|d| d.to_string());
        let txn = NewAppserviceTxn {
            event_ids: &ids,
            ephemeral: &ephemeral,
            to_device: &to_device,
            device_lists: device_lists.as_deref(),
        };
        let txn_id = self.store.create_appservice_txn(&service.id, reached, Some(txn)).await?;
        self.appservices.typing_seen.lock().insert(service.id.clone(), typing_position);
        // The new transaction, now stored, goes out at once rather than being read back by the
        // next round; failing, it is sent again from the store.
        if let Some(txn_id) = txn_id {
            let txn = AppserviceTxn { txn_id, event_ids: ids, ephemeral, to_device, device_lists };
            self.send_appservice_txn(service, &txn).await?;
            self.store.delete_appservice_txn(&service.id, txn_id).await?;
        }
        Ok(true)
    }

    /// MSC3202: the one-time key counts and unused fallback key types of every device of the
    /// appservice's sender and of its users joined to `rooms` (the rooms of a transaction),
    /// by user and device, read for all of them at once.
    async fn appservice_key_counts(
        &self,
        service: &Appservice,
        rooms: &BTreeSet<String>,
    ) -> Result<(KeyCounts<BTreeMap<String, i64>>, KeyCounts<Vec<String>>)> {
        let server = self.server_name();
        let local = format!(":{server}");
        let mut users = BTreeSet::from([service.sender(server)]);
        for room_id in rooms {
            let members = self.store.room_members(room_id, "join").await?;
            users.extend(
                members
                    .into_iter()
                    .filter(|u| u.ends_with(&local) && service.is_interested_in_user(u, server)),
            );
        }
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let (mut counts, mut fallback) = (KeyCounts::new(), KeyCounts::new());
        for device in self.store.key_counts_of_users(&users).await? {
            let mut one_time = device.one_time_keys;
            one_time.entry("signed_curve25519".to_owned()).or_insert(0);
            counts.entry(device.user_id.clone()).or_default().insert(device.device_id.clone(), one_time);
            fallback.entry(device.user_id).or_default().insert(device.device_id, device.unused_fallback_keys);
        }
        Ok((counts, fallback))
    }

    /// `PUT {url}/_matrix/app/v1/transactions/{txnId}`.
    async fn send_appservice_txn(&self, service: &Appservice, txn: &AppserviceTxn) -> Result<()> {
        let txn_id = txn.txn_id;
        let ids: Vec<String> = serde_json::from_str(&txn.event_ids).map_err(Error::internal)?;
        let ephemeral: Value = serde_json::from_str(&txn.ephemeral).map_err(Error::internal)?;
        let mut events = Vec::with_capacity(ids.len());
        for id in &ids {
            let Ok(event_id) = ruma::EventId::parse(id) else { continue };
            if let Some(event) = self.get_room_event(&event_id).await? {
                events.push(self.client_event(&event, None).await?);
            }
        }
        let mut body = json!({ "events": events });
        if service.receive_ephemeral {
            body["ephemeral"] = ephemeral.clone();
        }
        if service.wants_ephemeral() {
            body["de.sorunome.msc2409.to_device"] =
                serde_json::from_str(&txn.to_device).map_err(Error::internal)?;
        }
        if service.msc3202 {
            let rooms = events
                .iter()
                .chain(ephemeral.as_array().into_iter().flatten())
                .filter_map(|e| e.get("room_id").and_then(Value::as_str));
            let rooms: BTreeSet<String> = rooms.map(str::to_owned).collect();
            let (counts, fallback) = self.appservice_key_counts(service, &rooms).await?;
            if !counts.is_empty() {
                body["org.matrix.msc3202.device_one_time_key_counts"] = json!(counts);
                body["org.matrix.msc3202.device_one_time_keys_count"] = json!(counts);
            }
            if !fallback.is_empty() {
                body["org.matrix.msc3202.device_unused_fallback_key_types"] = json!(fallback);
            }
            if let Some(device_lists) = &txn.device_lists {
                body["org.matrix.msc3202.device_lists"] =
                    serde_json::from_str(device_lists).map_err(Error::internal)?;
            }
        }
        if service.unstable_ephemeral {
            body["de.sorunome.msc2409.ephemeral"] = ephemeral;
        }
        let path = format!("{PREFIX}/transactions/{txn_id}");
        self.call_appservice(service, reqwest::Method::PUT, &path, &[], Some(&body))
            .await
            .map(|_| ())
            .map_err(|e| Error::internal_with("appservice transaction", std::io::Error::other(e.to_string())))
    }
}
