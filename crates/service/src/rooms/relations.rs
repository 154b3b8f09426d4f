//! Relations, threads and bundled aggregations.
//!
//! - [`Services::relations`]: `GET /relations/{eventId}[/{relType}[/{eventType}]]`, the children
//!   of a visible event, optionally followed a few relations deep.
//! - [`Services::threads`]: `GET /rooms/{roomId}/threads`, thread roots by latest activity.
//! - [`Services::bundled_aggregations`]: `unsigned.m.relations` of every event a client
//!   receives: `m.thread` (latest event, count, participation), `m.replace` (the applicable
//!   edit, whole) and `m.reference` (the referencing event IDs). Annotations are not bundled.
//!
//! Relations are only followed within the parent's room.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use myelin_core::MatrixError;
use myelin_store::events::RelatedEventsQuery;
use ruma::{EventId, RoomId};
use serde_json::{Map, Value, json};

use super::RoomEvent;
use super::read::{make_token, parse_token};
use crate::auth::Requester;
use crate::{Result, Services};

/// How many levels of relations `recurse=true` follows (the spec asks for at least 3).
pub const RECURSION_DEPTH: u32 = 3;

/// The most event IDs bundled in an `m.reference` aggregation.
const MAX_BUNDLED_REFERENCES: i64 = 1000;

/// A `/relations` request.
#[derive(Clone, Debug, Default)]
pub struct RelationsRequest {
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: u64,
    /// `dir=f`: oldest first; otherwise newest first.
    pub forward: bool,
    pub recurse: bool,
}

/// A page of child events.
pub struct RelationsPage {
    pub events: Vec<RoomEvent>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
}

/// Which thread roots `/threads` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadsInclude {
    All,
    /// Threads whose root or a reply the requester sent.
    Participated,
}

/// A page of thread roots.
pub struct ThreadsPage {
    pub roots: Vec<RoomEvent>,
    pub next_batch: Option<String>,
}

/// A `/threads` token: `t<N>`, the threads whose latest reply is before stream position `N`.
fn parse_threads_token(token: &str) -> Result<i64> {
    token
        .strip_prefix('t')
        .and_then(crate::util::parse_position)
        .ok_or_else(|| MatrixError::invalid_param(format!("Unknown pagination token {token:?}")).into())
}

/// The relation type an event declares, if any.
fn own_rel_type(content: &Value) -> Option<String> {
    content.get("m.relates_to")?.get("rel_type")?.as_str().map(str::to_owned)
}

impl Services {
    /// `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`: the parent must be
    /// visible to the requester (`M_NOT_FOUND` otherwise); children the requester may not see
    /// are left out of the page.
    pub async fn relations(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        event_id: &EventId,
        request: &RelationsRequest,
    ) -> Result<RelationsPage> {
        let parent = self.get_event_for_user(requester, room_id, event_id).await?;
        let (head, _) = self.readable_room(&requester.user_id, room_id).await?;
        let from = request.from.as_deref().map(parse_token).transpose()?;
        let to = request.to.as_deref().map(parse_token).transpose()?;
        let limit = request.limit.clamp(1, 1000) as i64;
        // A token is the gap just after its position: backwards from `N` starts at `N` itself.
        let (from_bound, to_bound) =
            if request.forward { (from, to) } else { (from.map(|n| n + 1), to.map(|n| n + 1)) };
        let query = RelatedEventsQuery {
            room_id: room_id.as_str(),
            target: event_id.as_str(),
            rel_type: request.rel_type.as_deref(),
            event_type: request.event_type.as_deref(),
            sender: None,
            depth: if request.recurse { RECURSION_DEPTH } else { 1 },
            from: from_bound,
            to: to_bound,
            forward: request.forward,
            limit: limit + 1,
        };
        let mut stored = self.store.related_events(&query).await?;
        let more = stored.len() as i64 > limit;
        stored.truncate(limit as usize);
        let next_batch = match stored.last() {
            Some(last) if more => Some(make_token(if request.forward {
                last.stream_ordering
            } else {
                last.stream_ordering - 1
            })),
            _ => None,
        };
        let mut children = Vec::with_capacity(stored.len());
        for row in &stored {
            let child = self.parse_stored(row, &head.rules)?;
            // Edits of a redacted event would leak the content the redaction removed.
            if parent.redacted_by.is_some() {
                let relates_to = &child.pdu.content_value()["m.relates_to"];
                if relates_to["rel_type"] == "m.replace" && relates_to["event_id"] == event_id.as_str() {
                    continue;
                }
            }
            children.push(child);
        }
        let events = self.filter_visible(&requester.user_id, children).await?;
        Ok(RelationsPage { events, next_batch, prev_batch: from.map(make_token) })
    }

    /// `GET /rooms/{roomId}/threads`: thread roots the requester may see, the thread with the
    /// most recent reply first. `M_FORBIDDEN` when the room cannot be read.
    pub async fn threads(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        include: ThreadsInclude,
        from: Option<&str>,
        limit: u64,
    ) -> Result<ThreadsPage> {
        let (head, _) = self.readable_room(&requester.user_id, room_id).await?;
        let before = from.map(parse_threads_token).transpose()?;
        let limit = limit.clamp(1, 100) as i64;
        let participant = match include {
            ThreadsInclude::All => None,
            ThreadsInclude::Participated => Some(requester.user_id.as_str()),
        };
        let mut rows = self.store.thread_roots(room_id.as_str(), participant, before, limit + 1).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_batch = match rows.last() {
            Some((_, latest)) if more => Some(format!("t{latest}")),
            _ => None,
        };
        let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
        let mut by_id: HashMap<String, myelin_store::StoredEvent> =
            self.store.get_events(&ids).await?.into_iter().map(|e| (e.event_id.clone(), e)).collect();
        let mut roots = Vec::with_capacity(ids.len());
        for id in &ids {
            // A root in another room is no thread of this one.
            if let Some(stored) = by_id.remove(id)
                && stored.room_id == room_id.as_str()
            {
                roots.push(self.parse_stored(&stored, &head.rules)?);
            }
        }
        let roots = self.filter_visible(&requester.user_id, roots).await?;
        Ok(ThreadsPage { roots, next_batch })
    }

    /// The `m.relations` of an event's `unsigned`, if anything relates to it.
    pub async fn bundled_aggregations(
        &self,
        event: &RoomEvent,
        requester: Option<&Requester>,
    ) -> Result<Option<Value>> {
        let pdu = &event.pdu;
        // State events get no aggregations; nor do edits and reactions, which nothing may
        // relate to.
        if pdu.state_key.is_some() {
            return Ok(None);
        }
        let own_relation = own_rel_type(&pdu.content_value());
        if matches!(own_relation.as_deref(), Some("m.replace" | "m.annotation")) {
            return Ok(None);
        }
        let counts = self.store.bundled_relation_counts(pdu.room_id.as_str(), pdu.event_id.as_str()).await?;
        self.bundled_aggregations_given(event, requester, counts).await
    }

    /// [`Self::bundled_aggregations`] with the event's relation counts already fetched (see
    /// `Store::bundled_relation_counts_of`).
    pub(crate) async fn bundled_aggregations_given(
        &self,
        event: &RoomEvent,
        requester: Option<&Requester>,
        counts: Vec<(String, i64)>,
    ) -> Result<Option<Value>> {
        let pdu = &event.pdu;
        if pdu.state_key.is_some() {
            return Ok(None);
        }
        let own_relation = own_rel_type(&pdu.content_value());
        if matches!(own_relation.as_deref(), Some("m.replace" | "m.annotation")) {
            return Ok(None);
        }
        let room_id = pdu.room_id.as_str();
        let event_id = pdu.event_id.as_str();
        if counts.is_empty() {
            return Ok(None);
        }
        let Some((_, rules)) = self.room_rules(&pdu.room_id).await? else { return Ok(None) };
        let direct = |rel_type: &'static str| RelatedEventsQuery {
            room_id,
            target: event_id,
            rel_type: Some(rel_type),
            event_type: None,
            sender: None,
            depth: 1,
            from: None,
            to: None,
            forward: false,
            limit: 1,
        };
        let mut relations = Map::new();
        for (rel_type, count) in counts {
            match rel_type.as_str() {
                // Only an event that relates to nothing can start a thread.
                "m.thread" if own_relation.is_none() => {
                    let Some(latest) = self.store.related_events(&direct("m.thread")).await?.pop() else {
                        continue;
                    };
                    let latest = self.parse_stored(&latest, &rules)?;
                    let participated = match requester {
                        None => false,
                        Some(requester) => {
                            let user = requester.user_id.as_str();
                            pdu.sender == requester.user_id
                                || latest.pdu.sender == requester.user_id
                                || !self
                                    .store
                                    .related_events(&RelatedEventsQuery {
                                        sender: Some(user),
                                        ..direct("m.thread")
                                    })
                                    .await?
                                    .is_empty()
                        }
                    };
                    // The latest event comes with its own aggregations (its edit, references).
                    let latest_event = self.boxed_client_event(&latest, requester).await?;
                    relations.insert(
                        "m.thread".to_owned(),
                        json!({
                            "latest_event": latest_event,
                            "count": count,
                            "current_user_participated": participated,
                        }),
                    );
                }
                "m.replace" => {
                    let kind = pdu.kind.to_string();
                    let Some(edit) =
                        self.store.latest_edit(room_id, event_id, pdu.sender.as_str(), &kind).await?
                    else {
                        continue;
                    };
                    let edit = self.parse_stored(&edit, &rules)?;
                    relations
                        .insert("m.replace".to_owned(), self.boxed_client_event(&edit, requester).await?);
                }
                "m.reference" => {
                    let query = RelatedEventsQuery {
                        forward: true,
                        limit: MAX_BUNDLED_REFERENCES,
                        ..direct("m.reference")
                    };
                    let chunk: Vec<Value> = self
                        .store
                        .related_events(&query)
                        .await?
                        .iter()
                        .map(|e| json!({ "event_id": e.event_id }))
                        .collect();
                    if !chunk.is_empty() {
                        relations.insert("m.reference".to_owned(), json!({ "chunk": chunk }));
                    }
                }
                _ => {}
            }
        }
        Ok((!relations.is_empty()).then_some(Value::Object(relations)))
    }

    /// [`Services::client_event`] behind a box: bundling is recursive (a thread's latest event
    /// has its own aggregations).
    fn boxed_client_event<'a>(
        &'a self,
        event: &'a RoomEvent,
        requester: Option<&'a Requester>,
    ) -> Pin<Box<dyn Future<Output = Result<Value>> + Send + 'a>> {
        Box::pin(self.client_event(event, requester))
    }
}

/// Properties of `/threads` tokens on arbitrary input (`PROPTEST_CASES` cases, 256 by default).
#[cfg(test)]
mod prop_tests {
    use crate::util::prop_support::{config, is_invalid_param};
    use proptest::prelude::*;

    use super::parse_threads_token;

    proptest! {
        #![proptest_config(config())]

        /// Any string is a position or `M_INVALID_PARAM`.
        #[test]
        fn prop_threads_token_parse_never_panics(text in prop_oneof![any::<String>(), "t?[-+]?[0-9]{0,25}"]) {
            let parsed = parse_threads_token(&text);
            prop_assert!(parsed.is_ok() || is_invalid_param(&parsed), "{text:?}: {parsed:?}");
        }

        /// `t<N>`, as `/threads` writes its `next_batch`, gives back `N`; beyond `i64::MAX` is
        /// refused, not wrapped.
        #[test]
        fn prop_threads_token_round_trips(position in 0..=i64::MAX, over in (i64::MAX as u128 + 1)..=u128::MAX) {
            prop_assert_eq!(parse_threads_token(&format!("t{position}")).unwrap(), position);
            prop_assert!(is_invalid_param(&parse_threads_token(&format!("t{over}"))), "t{}", over);
        }

        /// A negative position is no position `/threads` ever wrote: refused.
        #[test]
        fn prop_threads_token_negative_positions_are_refused(position in i64::MIN..0) {
            prop_assert!(is_invalid_param(&parse_threads_token(&format!("t{position}"))), "t{}", position);
        }
    }
}
