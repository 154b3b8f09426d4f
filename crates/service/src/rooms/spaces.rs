//! Room summaries and spaces: what a room looks like from outside (the entries of
//! `/publicRooms`, `/hierarchy` and `/room_summary`), who may see that, and the space
//! hierarchy.
//!
//! # Layout
//!
//! - [`RoomSummary`] and [`Services::summarize_room`]: the public facts of a room, read from
//!   its current state.
//! - [`Services::room_previewable`]: the spec's rule for showing a room to someone who may not
//!   be in it (joined or invited, public or knockable, restricted with a qualifying membership,
//!   world-readable).
//! - [`Services::space_hierarchy`]: `/hierarchy`, a depth-first walk over `m.space.child`
//!   links in the spec's order, paginated by stateless tokens.
//! - [`Services::room_summary`], for `/room_summary`.
//!
//! Rooms of a hierarchy this server does not have are asked of the `via` servers of the
//! `m.space.child` event naming them (`federation::hierarchy`); the root must be a room here.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use myelin_core::MatrixError;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RoomHead;
use crate::auth::Requester;
use crate::{Error, Result, Services};

/// The most rooms one `/hierarchy` page returns (Synapse's cap too).
pub const MAX_HIERARCHY_PAGE: u64 = 50;

/// The public facts of a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSummary {
    pub room_id: OwnedRoomId,
    pub room_version: String,
    pub name: Option<String>,
    /// The plain-text topic.
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub num_joined_members: u64,
    pub world_readable: bool,
    pub guest_can_join: bool,
    /// `None` when the room has no `m.room.join_rules` event.
    pub join_rule: Option<String>,
    /// The `type` of `m.room.create`.
    pub room_type: Option<String>,
    /// The `algorithm` of `m.room.encryption`.
    pub encryption: Option<String>,
    /// For rooms whose join rule is restricted (in a version that supports it): the rooms
    /// whose members may join.
    pub allowed_room_ids: Vec<String>,
}

/// An `m.space.child` event of a space, as `children_state` shows it.
#[derive(Clone, Debug)]
pub struct SpaceChild {
    /// The child room ID.
    pub state_key: String,
    pub sender: String,
    pub content: Value,
    pub origin_server_ts: u64,
}

/// One room of a `/hierarchy` page.
#[derive(Clone, Debug)]
pub struct HierarchyRoom {
    pub summary: RoomSummary,
    /// The room's children, in the spec's order; empty unless the room is a space.
    pub children_state: Vec<SpaceChild>,
}

/// A `/hierarchy` request.
#[derive(Clone, Debug, Default)]
pub struct HierarchyRequest {
    pub suggested_only: bool,
    /// `None`: no limit (the walk still visits each room once).
    pub max_depth: Option<u64>,
    /// At least 1; capped at [`MAX_HIERARCHY_PAGE`].
    pub limit: Option<u64>,
    pub from: Option<String>,
}

/// A `/hierarchy` page.
#[derive(Clone, Debug)]
pub struct HierarchyPage {
    pub rooms: Vec<HierarchyRoom>,
    pub next_batch: Option<String>,
}

/// What a `/hierarchy` token carries: the request it continues and how many rooms of the walk
/// earlier pages returned. The walk is recomputed from the current state on each page, so the
/// server keeps no pagination sessions.
#[derive(Serialize, Deserialize)]
struct HierarchyToken {
    #[serde(rename = "r")]
    root: String,
    #[serde(rename = "s")]
    suggested_only: bool,
    #[serde(rename = "d")]
    max_depth: Option<u64>,
    #[serde(rename = "n")]
    returned: u64,
}

impl HierarchyToken {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(token: &str) -> Option<HierarchyToken> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn string_field(content: Option<&Value>, field: &str) -> Option<String> {
    content?.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The plain-text topic of `m.room.topic` content: the first `text/plain` representation of
/// `m.topic`, else `topic`.
fn plain_text_topic(content: &Value) -> Option<String> {
    if let Some(representations) =
        content.get("m.topic").and_then(|t| t.get("m.text")).and_then(Value::as_array)
    {
        for representation in representations {
            let mimetype = representation.get("mimetype").and_then(Value::as_str);
            if mimetype.is_none_or(|m| m == "text/plain")
                && let Some(body) = representation.get("body").and_then(Value::as_str)
            {
                return Some(body.to_owned());
            }
        }
    }
    content.get("topic").and_then(Value::as_str).map(str::to_owned)
}

/// Whether an `m.space.child` event links a child: `via` must be a non-empty list of strings
/// (a redacted link has none).
fn has_valid_via(content: &Value) -> bool {
    content
        .get("via")
        .and_then(Value::as_array)
        .is_some_and(|via| !via.is_empty() && via.iter().all(Value::is_string))
}

/// A valid `order`: at most 50 characters, each in `\x20`..=`\x7E`.
fn valid_order(content: &Value) -> Option<&str> {
    content
        .get("order")
        .and_then(Value::as_str)
        .filter(|order| order.len() <= 50 && order.bytes().all(|b| (0x20..=0x7e).contains(&b)))
}

/// The spec's order of children: those with a valid `order` first, by `order`; then by the
/// `origin_server_ts` of the `m.space.child` event; then by the child's room ID.
pub(crate) fn sort_children(children: &mut [SpaceChild]) {
    children.sort_by(|a, b| {
        let (order_a, order_b) = (valid_order(&a.content), valid_order(&b.content));
        (order_a.is_none(), order_a, a.origin_server_ts, &a.state_key).cmp(&(
            order_b.is_none(),
            order_b,
            b.origin_server_ts,
            &b.state_key,
        ))
    });
}

impl Services {
    /// The head of a room this server has, without creating in-memory state for IDs it has
    /// never seen (child links and request paths can name any room).
    pub(crate) async fn existing_room_head(&self, room_id: &RoomId) -> Result<Option<RoomHead>> {
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Ok(None);
        }
        self.room_head_snapshot(room_id).await
    }

    async fn state_content(&self, head: &RoomHead, kind: &str) -> Result<Option<Value>> {
        Ok(self.current_state_pdu(head, kind, "").await?.map(|pdu| pdu.content_value()))
    }

    /// Whether the room's join rule is one that restricts joins to members of other rooms, in
    /// a room version that supports it.
    fn is_restricted(head: &RoomHead, join_rule: Option<&str>) -> bool {
        let authorization = &head.rules.authorization;
        match join_rule {
            Some("restricted") => authorization.restricted_join_rule,
            Some("knock_restricted") => authorization.knock_restricted_join_rule,
            _ => false,
        }
    }

    /// The public facts of a room, from its current state.
    pub async fn summarize_room(&self, head: &RoomHead) -> Result<RoomSummary> {
        let create = self.state_content(head, "m.room.create").await?;
        let join_rules = self.state_content(head, "m.room.join_rules").await?;
        let name = self.state_content(head, "m.room.name").await?;
        let topic = self.state_content(head, "m.room.topic").await?;
        let canonical_alias = self.state_content(head, "m.room.canonical_alias").await?;
        let avatar = self.state_content(head, "m.room.avatar").await?;
        let history_visibility = self.state_content(head, "m.room.history_visibility").await?;
        let guest_access = self.state_content(head, "m.room.guest_access").await?;
        let encryption = self.state_content(head, "m.room.encryption").await?;
        let join_rule = join_rules.as_ref().and_then(|c| c.get("join_rule")).and_then(Value::as_str);
        let allowed_room_ids = if Self::is_restricted(head, join_rule) {
            join_rules
                .as_ref()
                .and_then(|c| c.get("allow"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|entry| entry.get("type").and_then(Value::as_str) == Some("m.room_membership"))
                .filter_map(|entry| entry.get("room_id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        } else {
            Vec::new()
        };
        let num_joined_members = self.store.count_members(head.room_id.as_str(), "join").await?;
        Ok(RoomSummary {
            room_id: head.room_id.clone(),
            room_version: head.version.as_str().to_owned(),
            name: string_field(name.as_ref(), "name"),
            topic: topic.as_ref().and_then(plain_text_topic).filter(|t| !t.is_empty()),
            canonical_alias: string_field(canonical_alias.as_ref(), "alias"),
            avatar_url: string_field(avatar.as_ref(), "url"),
            num_joined_members: u64::try_from(num_joined_members).unwrap_or(0),
            world_readable: string_field(history_visibility.as_ref(), "history_visibility").as_deref()
                == Some("world_readable"),
            guest_can_join: string_field(guest_access.as_ref(), "guest_access").as_deref()
                == Some("can_join"),
            join_rule: join_rule.map(str::to_owned),
            room_type: string_field(create.as_ref(), "type"),
            encryption: string_field(encryption.as_ref(), "algorithm"),
            allowed_room_ids,
        })
    }

    /// Whether anyone may preview the room: its join rule is `public` (or `knock` /
    /// `knock_restricted` where the room version has them), or it is world-readable.
    pub(crate) fn open_to_preview(head: &RoomHead, summary: &RoomSummary) -> bool {
        let authorization = &head.rules.authorization;
        let open_rule = match summary.join_rule.as_deref() {
            Some("public") => true,
            Some("knock") => authorization.knocking,
            Some("knock_restricted") => authorization.knock_restricted_join_rule,
            _ => false,
        };
        open_rule || summary.world_readable
    }

    /// Whether `user_id` (or, for `None`, an anonymous client) may see a room's summary: the
    /// room is open to preview, or the user is joined or invited, or the join rule is
    /// restricted and the user is joined to one of the allowed rooms.
    pub async fn room_previewable(
        &self,
        head: &RoomHead,
        summary: &RoomSummary,
        user_id: Option<&UserId>,
    ) -> Result<bool> {
        if Self::open_to_preview(head, summary) {
            return Ok(true);
        }
        let Some(user_id) = user_id else { return Ok(false) };
        let membership = self.store.membership(head.room_id.as_str(), user_id.as_str()).await?;
        if matches!(membership.as_deref(), Some("join") | Some("invite")) {
            return Ok(true);
        }
        for allowed in &summary.allowed_room_ids {
            if self.store.membership(allowed, user_id.as_str()).await?.as_deref() == Some("join") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The linked children of a space (valid `via`), in the spec's order.
    pub async fn space_children(&self, head: &RoomHead, suggested_only: bool) -> Result<Vec<SpaceChild>> {
        let ids: Vec<_> = head
            .state
            .iter()
            .filter(|((kind, _), _)| kind == "m.space.child")
            .map(|(_, id)| id.clone())
            .collect();
        let pdus = self.get_pdus(&ids, &head.rules).await?;
        let mut children: Vec<SpaceChild> = ids
            .iter()
            .filter_map(|id| pdus.get(id))
            .filter_map(|pdu| {
                let content = pdu.content_value();
                if !has_valid_via(&content) {
                    return None;
                }
                if suggested_only && content.get("suggested").and_then(Value::as_bool) != Some(true) {
                    return None;
                }
                Some(SpaceChild {
                    state_key: pdu.state_key.clone()?,
                    sender: pdu.sender.to_string(),
                    content,
                    origin_server_ts: u64::from(pdu.origin_server_ts.0),
                })
            })
            .collect();
        sort_children(&mut children);
        Ok(children)
    }

    /// The children a `/hierarchy` room shows: a space's linked children, none for a room.
    async fn hierarchy_children(
        &self,
        head: &RoomHead,
        summary: &RoomSummary,
        request: &HierarchyRequest,
    ) -> Result<Vec<SpaceChild>> {
        if summary.room_type.as_deref() == Some("m.space") {
            self.space_children(head, request.suggested_only).await
        } else {
            Ok(Vec::new())
        }
    }

    /// `GET /rooms/{roomId}/hierarchy`.
    pub async fn space_hierarchy(
        &self,
        requester: &Requester,
        root: &RoomId,
        request: &HierarchyRequest,
    ) -> Result<HierarchyPage> {
        let user_id = &requester.user_id;
        let forbidden = || -> Error {
            MatrixError::forbidden(format!(
                "User {user_id} not in room {root}, and room previews are disabled"
            ))
            .into()
        };
        let root_head = self.existing_room_head(root).await?.ok_or_else(forbidden)?;
        let root_summary = self.summarize_room(&root_head).await?;
        if !self.room_previewable(&root_head, &root_summary, Some(user_id)).await? {
            return Err(forbidden());
        }
        let limit = match request.limit {
            Some(0) => return Err(MatrixError::invalid_param("limit must be a positive integer").into()),
            Some(limit) => limit.min(MAX_HIERARCHY_PAGE),
            None => MAX_HIERARCHY_PAGE,
        } as usize;
        let already_returned = match &request.from {
            None => 0,
            Some(token) => {
                let token = HierarchyToken::decode(token)
                    .ok_or_else(|| MatrixError::invalid_param("Unknown pagination token"))?;
                if token.root != root.as_str()
                    || token.suggested_only != request.suggested_only
                    || token.max_depth != request.max_depth
                {
                    return Err(MatrixError::invalid_param(
                        "suggested_only and max_depth cannot change on paginated requests",
                    )
                    .into());
                }
                token.returned
            }
        };

        // Depth-first: the next room to visit is the last on the stack, so children are pushed
        // in reverse order.
        let mut stack: Vec<(OwnedRoomId, u64)> = vec![(root.to_owned(), 0)];
        let mut visited: HashSet<OwnedRoomId> = HashSet::new();
        // The `via` of each child seen: where to ask for a room this server does not have.
        let mut via_of: HashMap<OwnedRoomId, Vec<String>> = HashMap::new();
        let mut position: u64 = 0;
        let mut rooms = Vec::new();
        while rooms.len() < limit {
            let Some((room_id, depth)) = stack.pop() else { break };
            if !visited.insert(room_id.clone()) {
                continue;
            }
            let (summary, children_state) = if room_id == root_head.room_id {
                let children_state = self.hierarchy_children(&root_head, &root_summary, request).await?;
                (root_summary.clone(), children_state)
            } else if let Some(head) = self.existing_room_head(&room_id).await? {
                let summary = self.summarize_room(&head).await?;
                if !self.room_previewable(&head, &summary, Some(user_id)).await? {
                    continue;
                }
                let children_state = self.hierarchy_children(&head, &summary, request).await?;
                (summary, children_state)
            } else {
                // A room this server does not have: asked of its `via` servers (federation).
                let via = via_of.get(&room_id).cloned().unwrap_or_default();
                let Some(remote) = self.remote_hierarchy_room(&room_id, &via, request.suggested_only).await
                else {
                    continue;
                };
                if !self.remote_room_previewable(&remote.summary, user_id).await? {
                    continue;
                }
                (remote.summary, remote.children_state)
            };
            if request.max_depth.is_none_or(|max| depth < max) {
                for child in children_state.iter().rev() {
                    if let Ok(child_id) = RoomId::parse(&child.state_key) {
                        let via = child.content.get("via").and_then(Value::as_array);
                        let via = via.into_iter().flatten().filter_map(Value::as_str).map(str::to_owned);
                        via_of.entry(child_id.clone()).or_insert_with(|| via.collect());
                        stack.push((child_id, depth + 1));
                    }
                }
            }
            if position >= already_returned {
                rooms.push(HierarchyRoom { summary, children_state });
            }
            position += 1;
        }
        let more = stack.iter().any(|(room_id, _)| !visited.contains(room_id));
        let next_batch = more.then(|| {
            HierarchyToken {
                root: root.to_string(),
                suggested_only: request.suggested_only,
                max_depth: request.max_depth,
                returned: position,
            }
            .encode()
        });
        Ok(HierarchyPage { rooms, next_batch })
    }

    /// `GET /room_summary/{roomIdOrAlias}`: the summary and, for an authenticated requester,
    /// their membership (`leave` when they have none).
    pub async fn room_summary(
        &self,
        requester: Option<&Requester>,
        id_or_alias: &str,
    ) -> Result<(RoomSummary, Option<String>)> {
        let not_found = || -> Error { MatrixError::not_found("Room not found or is not accessible").into() };
        let room_id = self.resolve_room_or_alias(id_or_alias).await?;
        // A room this server does not know would be asked of the `via` servers over federation,
        // which is not available yet.
        let head = self.existing_room_head(&room_id).await?.ok_or_else(not_found)?;
        let summary = self.summarize_room(&head).await?;
        let user_id = requester.map(|r| r.user_id.as_ref());
        if !self.room_previewable(&head, &summary, user_id).await? {
            return Err(not_found());
        }
        let membership = match user_id {
            Some(user_id) => Some(
                self.store
                    .membership(room_id.as_str(), user_id.as_str())
                    .await?
                    .unwrap_or_else(|| "leave".to_owned()),
            ),
            None => None,
        };
        Ok((summary, membership))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn child(room: &str, ts: u64, content: Value) -> SpaceChild {
        SpaceChild { state_key: room.to_owned(), sender: "@a:x".to_owned(), content, origin_server_ts: ts }
    }

    #[test]
    fn children_are_ordered_by_order_then_timestamp_then_room_id() {
        let mut children = vec![
            child("!e:x", 1, json!({"via": ["x"]})),
            child("!d:x", 1, json!({"via": ["x"], "order": "\u{7f}bad"})),
            child("!c:x", 5, json!({"via": ["x"], "order": "b"})),
            child("!b:x", 9, json!({"via": ["x"], "order": "a"})),
            child("!a:x", 2, json!({"via": ["x"], "order": 7})),
        ];
        sort_children(&mut children);
        let ids: Vec<&str> = children.iter().map(|c| c.state_key.as_str()).collect();
        // Invalid orders (bad characters, not a string) count as no order.
        assert_eq!(ids, ["!b:x", "!c:x", "!d:x", "!e:x", "!a:x"]);
    }

    #[test]
    fn via_must_be_a_non_empty_list_of_strings() {
        assert!(has_valid_via(&json!({"via": ["x"]})));
        assert!(!has_valid_via(&json!({"via": []})));
        assert!(!has_valid_via(&json!({"via": "x"})));
        assert!(!has_valid_via(&json!({"via": ["x", 1]})));
        assert!(!has_valid_via(&json!({})));
    }

    #[test]
    fn topics_prefer_plain_text_representations() {
        let content = json!({
            "topic": "fallback",
            "m.topic": {"m.text": [{"mimetype": "text/html", "body": "<b>x</b>"}, {"body": "plain"}]}
        });
        assert_eq!(plain_text_topic(&content).as_deref(), Some("plain"));
        assert_eq!(plain_text_topic(&json!({"topic": "old"})).as_deref(), Some("old"));
        assert_eq!(plain_text_topic(&json!({})), None);
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let token =
            HierarchyToken { root: "!r:x".into(), suggested_only: true, max_depth: Some(2), returned: 7 };
        let decoded = HierarchyToken::decode(&token.encode()).expect("decodes");
        assert_eq!(
            (decoded.root.as_str(), decoded.suggested_only, decoded.max_depth, decoded.returned),
            ("!r:x", true, Some(2), 7)
        );
        assert!(HierarchyToken::decode("not a token").is_none());
    }
}

/// Properties of `/hierarchy` tokens on arbitrary input (`PROPTEST_CASES` cases, 256 by
/// default).
#[cfg(test)]
mod prop_tests {
    use crate::util::prop_support::config;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// Any string, or the base64 of any bytes, decodes or is refused, without panicking.
        #[test]
        fn prop_hierarchy_token_decode_never_panics(text in any::<String>(), bytes in any::<Vec<u8>>()) {
            let _ = HierarchyToken::decode(&text);
            let _ = HierarchyToken::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        }

        /// Encoding then decoding gives the same token; a count beyond `u64` is refused.
        #[test]
        fn prop_hierarchy_token_round_trips(
            root in any::<String>(),
            suggested_only in any::<bool>(),
            max_depth in any::<Option<u64>>(),
            returned in any::<u64>(),
            over in (u64::MAX as u128 + 1)..=u128::MAX,
        ) {
            let token = HierarchyToken { root: root.clone(), suggested_only, max_depth, returned };
            let decoded = HierarchyToken::decode(&token.encode()).unwrap();
            prop_assert_eq!(
                (decoded.root, decoded.suggested_only, decoded.max_depth, decoded.returned),
                (root, suggested_only, max_depth, returned)
            );
            let json = format!(r#"{{"r":"!a:x","s":false,"d":null,"n":{over}}}"#);
            let too_big = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
            prop_assert!(HierarchyToken::decode(&too_big).is_none());
        }
    }
}
