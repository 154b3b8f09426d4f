//! Unread counts for `/sync` and the `/notifications` list.

use std::collections::{BTreeMap, HashMap};

use myelin_core::MatrixError;
use ruma::RoomId;
use ruma::UserId;
use ruma::room_version_rules::RoomVersionRules;
use serde_json::{Value, json};

use super::MAIN_THREAD;
use crate::auth::Requester;
use crate::filter::FilterDefinition;
use crate::{Result, Services};

/// A notification listed by `/notifications`.
#[derive(Clone, Debug)]
pub struct Notification {
    pub room_id: String,
    /// The event in the client format.
    pub event: Value,
    pub actions: Value,
    pub read: bool,
    pub ts: i64,
}

/// A page of `/notifications`.
#[derive(Clone, Debug, Default)]
pub struct NotificationsPage {
    pub notifications: Vec<Notification>,
    pub next_token: Option<String>,
}

/// A joined room's unread notifications for `/sync`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    pub notifications: u64,
    pub highlights: u64,
    /// Per thread root: (notifications, highlights); empty unless the client asked for them.
    pub threads: BTreeMap<String, (u64, u64)>,
}

/// Unread counts and `/notifications`.
impl Services {
    /// A joined room's unread counts and, when the client asked for them
    /// (`unread_thread_notifications`), the per-thread counts; otherwise thread notifications
    /// count in the room's totals.
    pub async fn unread_counts(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        filter: &FilterDefinition,
    ) -> Result<UnreadCounts> {
        let per_thread = filter.room.timeline.unread_thread_notifications;
        let floor = self.store.unread_floor(room_id.as_str(), user_id.as_str()).await?;
        let unread = self.store.unread_push_actions(user_id.as_str(), room_id.as_str(), floor).await?;
        let mut counts = UnreadCounts::default();
        for thread in unread {
            if per_thread && thread.thread_id != MAIN_THREAD {
                counts.threads.insert(thread.thread_id, (thread.notifications, thread.highlights));
            } else {
                counts.notifications += thread.notifications;
                counts.highlights += thread.highlights;
            }
        }
        Ok(counts)
    }

    /// `GET /notifications`.
    pub async fn notifications(
        &self,
        requester: &Requester,
        from: Option<&str>,
        limit: Option<u64>,
        only: Option<&str>,
    ) -> Result<NotificationsPage> {
        let before = from
            .map(|token| {
                crate::util::parse_position(token)
                    .ok_or_else(|| MatrixError::invalid_param(format!("Invalid from token {token:?}")))
            })
            .transpose()?;
        let limit = limit.unwrap_or(50).clamp(1, 1000) as i64;
        let only_highlight = only.is_some_and(|o| o.contains("highlight"));
        let records = self
            .store
            .push_actions_for_user(requester.user_id.as_str(), before, limit, only_highlight)
            .await?;
        let ids: Vec<String> = records.iter().map(|r| r.event_id.clone()).collect();
        let stored: HashMap<String, myelin_store::StoredEvent> =
            self.store.get_events(&ids).await?.into_iter().map(|e| (e.event_id.clone(), e)).collect();
        let mut rules_by_room: HashMap<String, Option<RoomVersionRules>> = HashMap::new();
        let mut page = NotificationsPage::default();
        for record in &records {
            let Some(stored) = stored.get(&record.event_id) else { continue };
            if !rules_by_room.contains_key(&record.room_id) {
                let rules = match RoomId::parse(&record.room_id) {
                    Ok(room_id) => self.room_rules(&room_id).await?.map(|(_, rules)| rules),
                    Err(_) => None,
                };
                rules_by_room.insert(record.room_id.clone(), rules);
            }
            let Some(Some(rules)) = rules_by_room.get(&record.room_id) else { continue };
            let event = self.parse_stored(stored, rules)?;
            page.notifications.push(Notification {
                room_id: record.room_id.clone(),
                event: self.client_event(&event, Some(requester)).await?,
                actions: serde_json::from_str(&record.actions).unwrap_or_else(|_| json!([])),
                read: record.read,
                ts: record.ts,
            });
        }
        if records.len() as i64 == limit {
            page.next_token = records.last().map(|r| r.stream_ordering.to_string());
        }
        Ok(page)
    }
}
