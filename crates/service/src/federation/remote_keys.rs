//! End-to-end keys of remote users for local clients: `/keys/query` and `/keys/claim` ask each
//! remote server once (`/user/keys/query`, `/user/keys/claim`), all servers at once, within the
//! client's `timeout`; a server that does not answer in time (or fails) is in `failures`.
//! Device lists this server tracks for a remote user (see `remote_device_lists`) answer
//! `/keys/query` without asking.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use crate::e2e_keys::{KeysClaimResult, KeysQueryResult, QueriedDeviceKeys};
use crate::{Result, Services};

/// The `timeout` of a key request when the client gives none (Synapse's default, 10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Users grouped by their server.
fn by_server<T: Clone>(
    requested: &BTreeMap<OwnedUserId, T>,
) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> {
    let mut grouped: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user_id, value) in requested {
        grouped.entry(user_id.server_name().to_owned()).or_default().insert(user_id.clone(), value.clone());
    }
    grouped
}

/// Whether a key object claims to belong to `user_id` (and `device_id`, when given).
fn belongs_to(object: &Map<String, Value>, user_id: &OwnedUserId, device_id: Option<&str>) -> bool {
    object.get("user_id").and_then(Value::as_str) == Some(user_id.as_str())
        && device_id
            .is_none_or(|device_id| object.get("device_id").and_then(Value::as_str) == Some(device_id))
}

impl Services {
    /// Adds the keys of remote users (`requested` holds only remote users) to `result`, their
    /// master keys with the signatures `requester` (when given) made of them here.
    pub(crate) async fn query_remote_keys(
        &self,
        requester: Option<&UserId>,
        requested: &BTreeMap<OwnedUserId, Vec<String>>,
        timeout: Duration,
        result: &mut KeysQueryResult,
    ) -> Result<()> {
        let mut to_ask: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<String>>> = BTreeMap::new();
        for (server, users) in by_server(requested) {
            for (user_id, device_ids) in users {
                if let Some(cached) = self.cached_remote_keys(&user_id, &device_ids).await? {
                    result.device_keys.insert(user_id.clone(), cached.devices);
                    if let Some(master) = cached.master_key {
                        result.cross_signing.master_keys.insert(user_id.clone(), master);
                    }
                    if let Some(self_signing) = cached.self_signing_key {
                        result.cross_signing.self_signing_keys.insert(user_id.clone(), self_signing);
                    }
                } else {
                    to_ask.entry(server.clone()).or_default().insert(user_id, device_ids);
                }
            }
        }
        let answers = self
            .ask_servers(
                "/_matrix/federation/v1/user/keys/query",
                "device_keys",
                to_ask,
                timeout,
                &mut result.failures,
            )
            .await;
        for (users, answer) in answers {
            // Only what the server says of the users asked for, under their own IDs.
            for user_id in users.keys() {
                let devices = answer.get("device_keys").and_then(|keys| keys.get(user_id.as_str()));
                let mut queried = BTreeMap::new();
                for (device_id, keys) in devices.and_then(Value::as_object).into_iter().flatten() {
                    let Some(mut keys) = keys.as_object().cloned() else { continue };
                    if !belongs_to(&keys, user_id, Some(device_id)) {
                        continue;
                    }
                    let display_name = keys.remove("unsigned").and_then(|unsigned| {
                        unsigned.get("device_display_name").and_then(Value::as_str).map(str::to_owned)
                    });
                    queried.insert(device_id.clone(), QueriedDeviceKeys { keys, display_name });
                }
                result.device_keys.insert(user_id.clone(), queried);
                for (field, into) in [
                    ("master_keys", &mut result.cross_signing.master_keys),
                    ("self_signing_keys", &mut result.cross_signing.self_signing_keys),
                ] {
                    let key = answer
                        .get(field)
                        .and_then(|keys| keys.get(user_id.as_str()))
                        .and_then(Value::as_object);
                    if let Some(key) = key.filter(|key| belongs_to(key, user_id, None)) {
                        into.insert(user_id.clone(), key.clone());
                    }
                }
            }
        }
        if let Some(requester) = requester {
            self.add_signatures_of_remote_master_keys(requester, &mut result.cross_signing.master_keys)
                .await?;
        }
        Ok(())
    }

    /// A remote user's master key, from the tracked device list or else from their server
    /// (within [`DEFAULT_TIMEOUT`]); `None` when they have none or their server did not answer.
    pub(crate) async fn remote_master_key(&self, user_id: &UserId) -> Result<Option<Map<String, Value>>> {
        let requested = BTreeMap::from([(user_id.to_owned(), Vec::new())]);
        let mut result = KeysQueryResult::default();
        self.query_remote_keys(None, &requested, DEFAULT_TIMEOUT, &mut result).await?;
        Ok(result.cross_signing.master_keys.remove(user_id))
    }

    /// Claims one-time keys of remote users' devices (`claims` holds only remote users) into
    /// `result`.
    pub(crate) async fn claim_remote_keys(
        &self,
        claims: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
        timeout: Duration,
        result: &mut KeysClaimResult,
    ) {
        let answers = self
            .ask_servers(
                "/_matrix/federation/v1/user/keys/claim",
                "one_time_keys",
                by_server(claims),
                timeout,
                &mut result.failures,
            )
            .await;
        for (users, answer) in answers {
            for (user_id, devices) in &users {
                let claimed = answer.get("one_time_keys").and_then(|keys| keys.get(user_id.as_str()));
                for device_id in devices.keys() {
                    let Some(keys) = claimed.and_then(|c| c.get(device_id)).and_then(Value::as_object) else {
                        continue;
                    };
                    let keys: BTreeMap<String, Value> =
                        keys.iter().map(|(id, key)| (id.clone(), key.clone())).collect();
                    if !keys.is_empty() {
                        result
                            .one_time_keys
                            .entry(user_id.clone())
                            .or_default()
                            .insert(device_id.clone(), keys);
                    }
                }
            }
        }
    }

    /// Posts `{field: users}` to `path` on every server at once, within `timeout`; a server
    /// that fails or does not answer in time is logged and named in `failures`. The answers
    /// come back beside the users asked for.
    async fn ask_servers<T: serde::Serialize>(
        &self,
        path: &str,
        field: &str,
        users_by_server: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>>,
        timeout: Duration,
        failures: &mut BTreeSet<String>,
    ) -> Vec<(BTreeMap<OwnedUserId, T>, Value)> {
        let requests = users_by_server.into_iter().map(|(server, users)| async move {
            let body = json!({ field: users });
            let answer = tokio::time::timeout(
                timeout,
                self.federation.client.post_json::<_, Value>(&server, path, &body),
            )
            .await;
            (server, users, answer)
        });
        let mut answered = Vec::new();
        for (server, users, answer) in futures_util::future::join_all(requests).await {
            match answer {
                Ok(Ok(answer)) => answered.push((users, answer)),
                Ok(Err(error)) => {
                    tracing::info!(%server, %error, path, "a remote key request failed");
                    failures.insert(server.to_string());
                }
                Err(_) => {
                    tracing::info!(%server, path, "a remote key request timed out");
                    failures.insert(server.to_string());
                }
            }
        }
        answered
    }
}
