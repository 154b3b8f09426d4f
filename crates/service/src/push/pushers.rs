//! Pushers (`/pushers`, `/pushers/set`) and delivery to their push gateways (the
//! `/_matrix/push/v1/notify` body, including the `event_id_only` format) from the durable
//! queue that [`Services::record_push_actions`] fills.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use myelin_config::OutboundConfig;
use myelin_core::MatrixError;
use myelin_store::push::{PusherRecord, QueuedPush};
use serde_json::{Map, Value, json};

use crate::auth::Requester;
use crate::util::now_ms;
use crate::{Error, Result, Services};

/// Gateway retries: the first after a second, doubling up to an hour; given up after a day.
const INITIAL_BACKOFF_MS: i64 = 1000;
const MAX_BACKOFF_MS: i64 = 3600 * 1000;
const GIVE_UP_AFTER_MS: i64 = 24 * 3600 * 1000;

/// How many queued pushes one round of the worker takes, and how many pushers it serves at once.
const DELIVERY_BATCH: i64 = 500;
const DELIVERY_CONCURRENCY: usize = 32;

/// Push actions are kept this long (for `/notifications` and unread counts).
const PUSH_ACTIONS_LIFETIME_MS: i64 = 30 * 24 * 3600 * 1000;
const PRUNE_INTERVAL_MS: i64 = 24 * 3600 * 1000;

/// How long the worker pauses after a round that failed.
const ERROR_PAUSE: Duration = Duration::from_secs(5);

/// `set_tweak` actions as the push gateway's `tweaks` (an absent value means `true`).
fn tweaks_of(actions: &Value) -> Map<String, Value> {
    let mut tweaks = Map::new();
    for action in actions.as_array().into_iter().flatten() {
        if let Some(name) = action.get("set_tweak").and_then(Value::as_str) {
            tweaks.insert(name.to_owned(), action.get("value").cloned().unwrap_or(Value::Bool(true)));
        }
    }
    tweaks
}

/// A `/pushers/set` request.
#[derive(Clone, Debug, Default)]
pub struct PusherRequest {
    /// `None`: delete the pusher.
    pub kind: Option<String>,
    pub app_id: String,
    pub pushkey: String,
    pub app_display_name: Option<String>,
    pub device_display_name: Option<String>,
    pub profile_tag: Option<String>,
    pub lang: Option<String>,
    pub data: Option<Map<String, Value>>,
    pub append: bool,
}

/// Pushers.
impl Services {
    /// `GET /pushers`.
    pub async fn pushers(&self, requester: &Requester) -> Result<Vec<PusherRecord>> {
        Ok(self.store.pushers_of(requester.user_id.as_str()).await?)
    }

    /// `POST /pushers/set`.
    pub async fn set_pusher(&self, requester: &Requester, request: PusherRequest) -> Result<()> {
        if request.app_id.is_empty() || request.app_id.chars().count() > 64 {
            return Err(MatrixError::invalid_param("app_id must be 1 to 64 characters").into());
        }
        if request.pushkey.is_empty() || request.pushkey.len() > 512 {
            return Err(MatrixError::invalid_param("pushkey must be 1 to 512 bytes").into());
        }
        let user_id = requester.user_id.as_str();
        let Some(kind) = request.kind else {
            self.store.delete_pusher(user_id, &request.app_id, &request.pushkey).await?;
            return Ok(());
        };
        match kind.as_str() {
            "http" => {}
            "email" => {
                return Err(
                    MatrixError::invalid_param("Email pushers are not supported by this server").into()
                );
            }
            other => return Err(MatrixError::invalid_param(format!("Unknown pusher kind {other:?}")).into()),
        }
        let missing: Vec<&str> = [
            ("app_display_name", request.app_display_name.is_none()),
            ("device_display_name", request.device_display_name.is_none()),
            ("lang", request.lang.is_none()),
            ("data", request.data.is_none()),
        ]
        .into_iter()
        .filter(|(_, missing)| *missing)
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            return Err(
                MatrixError::missing_param(format!("Missing parameters: {}", missing.join(", "))).into()
            );
        }
        let data = request.data.unwrap_or_default();
        let url = data
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| MatrixError::invalid_param("'url' required in data for HTTP pusher"))?;
        let url = check_gateway_url(url)?;
        match data.get("format") {
            None => {}
            Some(Value::String(format)) if format == "event_id_only" => {}
            Some(other) => {
                return Err(MatrixError::invalid_param(format!("Unsupported pusher format {other}")).into());
            }
        }
        if self.gateway_resolves_only_to_blocked(&url).await {
            return Err(MatrixError::invalid_param(
                "The push gateway URL points to an address this server may not contact",
            )
            .into());
        }
        let pusher = PusherRecord {
            user_id: user_id.to_owned(),
            app_id: request.app_id,
            pushkey: request.pushkey,
            kind,
            app_display_name: request.app_display_name.unwrap_or_default(),
            device_display_name: request.device_display_name.unwrap_or_default(),
            profile_tag: request.profile_tag,
            lang: request.lang.unwrap_or_default(),
            data: Value::Object(data).to_string(),
            device_id: requester.device_id.clone(),
            pushkey_ts: now_ms() as i64,
        };
        self.store.upsert_pusher(&pusher, request.append).await?;
        Ok(())
    }

    /// Whether a gateway URL's host is, or resolves only to, blocked addresses. A name that
    /// does not resolve now is accepted (delivery checks again).
    async fn gateway_resolves_only_to_blocked(&self, url: &reqwest::Url) -> bool {
        let outbound = &self.config.outbound;
        match url.host() {
            Some(url::Host::Ipv4(ip)) => outbound.is_ip_blocked(ip.into()),
            Some(url::Host::Ipv6(ip)) => outbound.is_ip_blocked(ip.into()),
            Some(url::Host::Domain(domain)) => {
                let port = url.port_or_known_default().unwrap_or(443);
                match crate::outbound::resolve(outbound, domain, port).await {
                    Ok(addrs) => !addrs.is_empty() && addrs.iter().all(|a| outbound.is_ip_blocked(a.ip())),
                    Err(_) => false,
                }
            }
            None => true,
        }
    }
}

/// A gateway URL must be HTTP(S) with the path `/_matrix/push/v1/notify`.
fn check_gateway_url(url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid push gateway URL {url:?}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(MatrixError::invalid_param("The push gateway URL must be http or https").into());
    }
    if parsed.path() != "/_matrix/push/v1/notify" {
        return Err(MatrixError::invalid_param(
            "The push gateway URL must have the path /_matrix/push/v1/notify",
        )
        .into());
    }
    Ok(parsed)
}

/// The HTTP client for push gateways: timeouts, no redirects, no proxies, guarded DNS.
fn gateway_client(outbound: &OutboundConfig) -> Result<reqwest::Client> {
    crate::tls::http_client_builder()
        .map_err(Error::internal)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("Myelin/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(crate::outbound::GuardedResolver { outbound: outbound.clone() }))
        .build()
        .map_err(Error::internal)
}

/// What became of one push.
enum Delivery {
    /// The gateway took it; `rejected`: it rejected this pusher's pushkey.
    Sent { rejected: bool },
    /// Nothing to send (the event is gone, the URL is blocked or unusable): drop it.
    Dropped,
    /// Try again later.
    Failed,
}

/// Delivery to push gateways.
impl Services {
    /// The delivery worker: sends queued pushes until shutdown.
    pub(crate) async fn run_push_delivery(self) {
        let client = match gateway_client(&self.config.outbound) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the push gateway client; push delivery is off");
                return;
            }
        };
        match self.store.make_queued_pushes_due().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pending = n, "retrying pending pushes"),
            Err(error) => tracing::warn!(%error, "could not reschedule pending pushes"),
        }
        let mut last_prune = 0;
        loop {
            let round = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                round = self.deliver_due_pushes(&client) => round,
            };
            let (more, failed) = match round {
                Ok(more) => (more, false),
                Err(error) => {
                    tracing::warn!(%error, "push delivery failed");
                    (false, true)
                }
            };
            let now = now_ms() as i64;
            if now - last_prune > PRUNE_INTERVAL_MS {
                last_prune = now;
                if let Err(error) = self.store.prune_push_actions(now - PUSH_ACTIONS_LIFETIME_MS).await {
                    tracing::warn!(%error, "could not prune old push actions");
                }
            }
            if more {
                continue;
            }
            let wait = match self.store.next_push_due().await {
                Ok(Some(due)) => Duration::from_millis((due - now).clamp(0, MAX_BACKOFF_MS) as u64),
                Ok(None) => Duration::from_secs(3600),
                Err(error) => {
                    tracing::warn!(%error, "could not read the push queue");
                    ERROR_PAUSE
                }
            };
            // After a failed round (the store is unavailable), do not spin on due rows.
            let wait = if failed { wait.max(ERROR_PAUSE) } else { wait };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.push.wakeup.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends the pushes due now, pushers in parallel, each pusher's in order. Returns whether
    /// more may be due.
    async fn deliver_due_pushes(&self, client: &reqwest::Client) -> Result<bool> {
        let due = self.store.due_pushes(now_ms() as i64, DELIVERY_BATCH).await?;
        let more = due.len() as i64 == DELIVERY_BATCH;
        let mut by_pusher: Vec<Vec<QueuedPush>> = Vec::new();
        let mut index: HashMap<(String, String, String), usize> = HashMap::new();
        for push in due {
            let key = (push.user_id.clone(), push.app_id.clone(), push.pushkey.clone());
            let slot = *index.entry(key).or_insert_with(|| {
                by_pusher.push(Vec::new());
                by_pusher.len() - 1
            });
            by_pusher[slot].push(push);
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(DELIVERY_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for pushes in by_pusher {
            let services = self.clone();
            let client = client.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                if let Err(error) = services.deliver_to_pusher(&client, pushes).await {
                    tracing::warn!(%error, "push delivery to a pusher failed");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(more)
    }

    async fn deliver_to_pusher(&self, client: &reqwest::Client, pushes: Vec<QueuedPush>) -> Result<()> {
        let Some(first) = pushes.first() else { return Ok(()) };
        let Some(pusher) = self.store.get_pusher(&first.user_id, &first.app_id, &first.pushkey).await? else {
            for push in &pushes {
                self.store.delete_queued_push(push).await?;
            }
            return Ok(());
        };
        let now = now_ms() as i64;
        for push in &pushes {
            if now - push.created_ts > GIVE_UP_AFTER_MS {
                tracing::warn!(user_id = %push.user_id, app_id = %push.app_id, "giving up on a push notification");
                self.store.delete_queued_push(push).await?;
                continue;
            }
            match self.deliver_one(client, &pusher, push).await? {
                Delivery::Sent { rejected } => {
                    self.store.delete_queued_push(push).await?;
                    if rejected {
                        tracing::info!(user_id = %pusher.user_id, app_id = %pusher.app_id, "the push gateway rejected a pushkey; removing the pusher");
                        self.store.delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey).await?;
                        return Ok(());
                    }
                }
                Delivery::Dropped => self.store.delete_queued_push(push).await?,
                Delivery::Failed => {
                    let shift = push.attempts.clamp(0, 30) as u32;
                    let backoff = INITIAL_BACKOFF_MS.saturating_mul(1 << shift).min(MAX_BACKOFF_MS);
                    self.store
                        .postpone_pushes(&pusher.user_id, &pusher.app_id, &pusher.pushkey, now + backoff)
                        .await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn deliver_one(
        &self,
        client: &reqwest::Client,
        pusher: &PusherRecord,
        push: &QueuedPush,
    ) -> Result<Delivery> {
        let data: Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
        let Some(url) = data.get("url").and_then(Value::as_str).and_then(|u| check_gateway_url(u).ok())
        else {
            return Ok(Delivery::Dropped);
        };
        let literal: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.into()),
            Some(url::Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        if literal.is_some_and(|ip| self.config.outbound.is_ip_blocked(ip)) {
            tracing::warn!(app_id = %pusher.app_id, "not pushing to a gateway on a blocked address");
            return Ok(Delivery::Dropped);
        }
        let Some(body) = self.gateway_body(pusher, &data, push).await? else { return Ok(Delivery::Dropped) };
        let response = match client.post(url).json(&body).send().await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(app_id = %pusher.app_id, error = %error, "push gateway unreachable; will retry");
                return Ok(Delivery::Failed);
            }
        };
        let status = response.status();
        if !status.is_success() {
            tracing::info!(app_id = %pusher.app_id, %status, "push gateway refused a notification; will retry");
            return Ok(Delivery::Failed);
        }
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let rejected = answer
            .get("rejected")
            .and_then(Value::as_array)
            .is_some_and(|keys| keys.iter().any(|k| k.as_str() == Some(pusher.pushkey.as_str())));
        Ok(Delivery::Sent { rejected })
    }

    /// The `/_matrix/push/v1/notify` body for one push (`None`: the event is gone).
    async fn gateway_body(
        &self,
        pusher: &PusherRecord,
        data: &Map<String, Value>,
        push: &QueuedPush,
    ) -> Result<Option<Value>> {
        let Ok(event_id) = ruma::EventId::parse(&push.event_id) else { return Ok(None) };
        let Some(event) = self.get_room_event(&event_id).await? else { return Ok(None) };
        let pdu = &event.pdu;
        let actions: Value = serde_json::from_str(&push.actions).unwrap_or_else(|_| json!([]));
        let tweaks = tweaks_of(&actions);
        let kind = pdu.kind.to_string();
        let loud =
            |name: &str| tweaks.get(name).is_some_and(|v| !matches!(v, Value::Bool(false) | Value::Null));
        let prio =
            if kind == "m.room.encrypted" || loud("highlight") || loud("sound") { "high" } else { "low" };
        let unread = self.store.total_unread_notifications(&pusher.user_id).await?;
        let counts = if unread > 0 { json!({ "unread": unread }) } else { json!({}) };
        let mut device_data = data.clone();
        device_data.remove("url");
        let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
        let mut device = json!({
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "pushkey_ts": pusher.pushkey_ts / 1000,
            "data": device_data,
        });
        if !event_id_only && !tweaks.is_empty() {
            device["tweaks"] = Value::Object(tweaks);
        }
        let mut notification = json!({
            "event_id": pdu.event_id,
            "room_id": pdu.room_id,
            "prio": prio,
            "counts": counts,
            "devices": [device],
        });
        if !event_id_only {
            notification["type"] = json!(kind);
            notification["sender"] = json!(pdu.sender);
            let content = pdu.content_value();
            if content.as_object().is_some_and(|c| !c.is_empty()) {
                notification["content"] = content.clone();
            }
            if kind == "m.room.member" {
                notification["membership"] = content.get("membership").cloned().unwrap_or(Value::Null);
                notification["user_is_target"] =
                    json!(pdu.state_key.as_deref() == Some(pusher.user_id.as_str()));
            }
            let state = |kind: &'static str, state_key: String| async move {
                let id = self.store.current_state_event(pdu.room_id.as_str(), kind, &state_key).await?;
                let Some(id) = id.and_then(|id| ruma::EventId::parse(id).ok()) else { return Ok(None) };
                Ok::<_, Error>(self.get_room_event(&id).await?.map(|e| e.pdu.content_value()))
            };
            if let Some(member) = state("m.room.member", pdu.sender.to_string()).await?
                && let Some(name) =
                    member.get("displayname").and_then(Value::as_str).filter(|n| !n.is_empty())
            {
                notification["sender_display_name"] = json!(name);
            }
            if let Some(name) = state("m.room.name", String::new()).await?
                && let Some(name) = name.get("name").and_then(Value::as_str).filter(|n| !n.is_empty())
            {
                notification["room_name"] = json!(name);
            }
            if let Some(alias) = state("m.room.canonical_alias", String::new()).await?
                && let Some(alias) = alias.get("alias").and_then(Value::as_str).filter(|n| !n.is_empty())
            {
                notification["room_alias"] = json!(alias);
            }
        }
        Ok(Some(json!({ "notification": notification })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tweaks_default_to_true() {
        let tweaks = tweaks_of(
            &json!(["notify", {"set_tweak": "highlight"}, {"set_tweak": "sound", "value": "default"}]),
        );
        assert_eq!(Value::Object(tweaks), json!({"highlight": true, "sound": "default"}));
    }

    #[test]
    fn gateway_urls_need_the_notify_path() {
        assert!(check_gateway_url("https://push.example.org/_matrix/push/v1/notify").is_ok());
        for bad in ["https://push.example.org/", "ftp://x/_matrix/push/v1/notify", "not a url"] {
            assert!(check_gateway_url(bad).is_err(), "{bad}");
        }
    }
}
