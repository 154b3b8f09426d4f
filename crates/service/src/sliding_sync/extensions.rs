//! The extensions: `to_device` (MSC3885), `e2ee` (MSC3884), `account_data` (MSC3959),
//! `receipts` (MSC3960) and `typing` (MSC3961), each reading through the same service
//! functions as `/sync`. The scoped ones cover the rooms of the lists they name (in their
//! ranges; unknown names ignored) and the subscriptions they name (`*`: all).

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedRoomId, OwnedUserId};

use super::connection::ConnectionState;
use super::lists::ListWindow;
use super::request::{ExtensionsConfig, Scope, SlidingSyncRequest};
use crate::auth::Requester;
use crate::device_lists::DeviceListUpdates;
use crate::filter::FilterDefinition;
use crate::sync::{AccountDataEvent, SyncToken};
use crate::to_device::ToDeviceEvent;
use crate::{Result, Services};
use myelin_store::ReceiptRecord;

#[derive(Clone, Debug, Default)]
pub struct ToDeviceExtension {
    pub next_batch: String,
    pub events: Vec<ToDeviceEvent>,
}

#[derive(Clone, Debug, Default)]
pub struct E2eeExtension {
    pub device_one_time_keys_count: BTreeMap<String, i64>,
    pub device_unused_fallback_key_types: Vec<String>,
    /// Only in an incremental answer.
    pub device_lists: Option<DeviceListUpdates>,
}

#[derive(Clone, Debug, Default)]
pub struct AccountDataExtension {
    pub global: Vec<AccountDataEvent>,
    pub rooms: BTreeMap<String, Vec<AccountDataEvent>>,
}

/// The extensions of one answer (`None`: not asked for).
#[derive(Clone, Debug, Default)]
pub struct Extensions {
    pub to_device: Option<ToDeviceExtension>,
    pub e2ee: Option<E2eeExtension>,
    pub account_data: Option<AccountDataExtension>,
    pub receipts: Option<BTreeMap<OwnedRoomId, Vec<ReceiptRecord>>>,
    pub typing: Option<BTreeMap<OwnedRoomId, Vec<OwnedUserId>>>,
}

impl Extensions {
    /// Whether there is anything worth answering a long-poll for.
    pub fn has_news(&self) -> bool {
        self.to_device.as_ref().is_some_and(|t| !t.events.is_empty())
            || self.e2ee.as_ref().is_some_and(|e| e.device_lists.as_ref().is_some_and(|d| !d.is_empty()))
            || self.account_data.as_ref().is_some_and(|a| !a.global.is_empty() || !a.rooms.is_empty())
            || self.receipts.as_ref().is_some_and(|r| !r.is_empty())
            || self.typing.as_ref().is_some_and(|t| !t.is_empty())
    }
}

/// The rooms an extension's scope covers.
fn scoped_rooms(
    scope: &Scope,
    request: &SlidingSyncRequest,
    windows: &BTreeMap<String, ListWindow>,
    subscribed: &BTreeSet<OwnedRoomId>,
) -> BTreeSet<OwnedRoomId> {
    let mut rooms = BTreeSet::new();
    for (name, window) in windows {
        if scope.lists.iter().any(|l| l == "*" || l == name) {
            rooms.extend(window.rooms.iter().cloned());
        }
    }
    for room in subscribed {
        if request.room_subscriptions.contains_key(room)
            && scope.rooms.iter().any(|r| r == "*" || r == room.as_str())
        {
            rooms.insert(room.clone());
        }
    }
    rooms
}

/// What the extensions need to know of the rest of the answer.
pub(crate) struct ExtensionContext<'a> {
    pub requester: &'a Requester,
    pub request: &'a SlidingSyncRequest,
    pub windows: &'a BTreeMap<String, ListWindow>,
    /// The subscriptions to rooms the user may see.
    pub subscribed: &'a BTreeSet<OwnedRoomId>,
    /// Rooms sent in full in this answer (their receipts and account data are sent whole).
    pub initial_rooms: &'a BTreeSet<OwnedRoomId>,
    pub previous: &'a ConnectionState,
    pub now: SyncToken,
}

impl Services {
    /// Acknowledges the to-device messages the `to_device` extension's `since` covers (as
    /// `/sync` does with its token); done once, before any long-poll.
    pub(crate) async fn ack_sliding_to_device(
        &self,
        requester: &Requester,
        config: &ExtensionsConfig,
    ) -> Result<()> {
        if let Some(to_device) = &config.to_device {
            self.ack_to_device(requester, to_device.since.unwrap_or(0)).await?;
        }
        Ok(())
    }

    pub(crate) async fn sliding_sync_extensions(&self, cx: &ExtensionContext<'_>) -> Result<Extensions> {
        let config = &cx.request.extensions;
        let user_id = &cx.requester.user_id;
        let now = cx.now;
        let mut out = Extensions::default();
        if let Some(to_device) = &config.to_device {
            let since = to_device.since.unwrap_or(0).min(now.to_device);
            let (events, next) =
                self.to_device_for_sync(cx.requester, since, now.to_device, to_device.limit).await?;
            out.to_device = Some(ToDeviceExtension { next_batch: next.to_string(), events });
        }
        if config.e2ee {
            let mut e2ee = E2eeExtension::default();
            if let Some(device_id) = &cx.requester.device_id {
                e2ee.device_one_time_keys_count =
                    self.one_time_key_counts(user_id.as_str(), device_id).await?;
                e2ee.device_unused_fallback_key_types =
                    self.unused_fallback_key_types(user_id.as_str(), device_id).await?;
            }
            if let Some(since) = cx.previous.extension("e2ee", now) {
                e2ee.device_lists = Some(self.device_list_updates(user_id, since, now).await?);
            }
            out.e2ee = Some(e2ee);
        }
        if let Some(scope) = &config.account_data {
            let rooms = scoped_rooms(scope, cx.request, cx.windows, cx.subscribed);
            let previous = cx.previous.extension("account_data", now);
            let since = previous.map_or(0, |p| p.account_data);
            let filter = FilterDefinition::default();
            let (global, mut by_room) = self
                .account_data_between(user_id, since, now.account_data, previous.is_none(), &filter)
                .await?;
            // Rooms sent in full get all their account data, not only what changed.
            if previous.is_some() && rooms.iter().any(|r| cx.initial_rooms.contains(r)) {
                let (_, all) =
                    self.account_data_between(user_id, 0, now.account_data, false, &filter).await?;
                for (room, events) in all {
                    if cx.initial_rooms.iter().any(|r| r.as_str() == room) {
                        by_room.insert(room, events);
                    }
                }
            }
            by_room.retain(|room, _| rooms.iter().any(|r| r.as_str() == room));
            out.account_data = Some(AccountDataExtension { global, rooms: by_room });
        }
        if let Some(scope) = &config.receipts {
            let previous = cx.previous.extension("receipts", now);
            let mut receipts = BTreeMap::new();
            for room in scoped_rooms(scope, cx.request, cx.windows, cx.subscribed) {
                let since = previous.filter(|_| !cx.initial_rooms.contains(&room));
                let ephemeral =
                    self.room_ephemeral(user_id, &room, since, now, &FilterDefinition::default()).await?;
                if !ephemeral.receipts.is_empty() {
                    receipts.insert(room, ephemeral.receipts);
                }
            }
            out.receipts = Some(receipts);
        }
        if let Some(scope) = &config.typing {
            let previous = cx.previous.extension("typing", now);
            let mut typing = BTreeMap::new();
            for room in scoped_rooms(scope, cx.request, cx.windows, cx.subscribed) {
                let since = previous.filter(|_| !cx.initial_rooms.contains(&room));
                let ephemeral =
                    self.room_ephemeral(user_id, &room, since, now, &FilterDefinition::default()).await?;
                if let Some(users) = ephemeral.typing {
                    typing.insert(room, users);
                }
            }
            out.typing = Some(typing);
        }
        Ok(out)
    }
}

/// Records where each extension asked for now stands; the others keep their positions.
pub(crate) fn advance_extensions(state: &mut ConnectionState, config: &ExtensionsConfig, now: SyncToken) {
    let enabled = [
        ("e2ee", config.e2ee),
        ("account_data", config.account_data.is_some()),
        ("receipts", config.receipts.is_some()),
        ("typing", config.typing.is_some()),
    ];
    for (name, on) in enabled {
        if on {
            state.extensions.insert(name.to_owned(), now.to_string());
        }
    }
}
