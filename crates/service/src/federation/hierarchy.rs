//! `GET /_matrix/federation/v1/hierarchy/{roomId}`, the resident side: a space this server is
//! in and its direct children, as the client `/hierarchy` summarises them
//! (`rooms::spaces`), unpaginated. Rooms are shown to a server that may peek or join them
//! (open to preview, the server has a member there, or the room is restricted to a room the
//! server has a member in); children it may not are listed as inaccessible, children this
//! server does not know are left out (as the spec says).

use myelin_core::MatrixError;
use ruma::{OwnedRoomId, RoomId, ServerName};

use crate::rooms::RoomHead;
use crate::rooms::spaces::{HierarchyRoom, RoomSummary, SpaceChild};
use crate::{Result, Services};

/// The federation `/hierarchy` answer.
#[derive(Clone, Debug)]
pub struct FederationHierarchy {
    /// The room asked for, with its `m.space.child` events (none unless it is a space).
    pub room: HierarchyRoom,
    /// The children the requesting server may see, summaries only.
    pub children: Vec<RoomSummary>,
    pub inaccessible_children: Vec<OwnedRoomId>,
}

impl Services {
    /// `GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=`: `404 M_NOT_FOUND` for
    /// a room this server does not have or `origin` may not see; `403` for a server the room's
    /// ACL denies.
    pub async fn federation_hierarchy(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Result<FederationHierarchy> {
        let not_found = || MatrixError::not_found("Unknown room");
        let head = self.existing_room_head(room_id).await?.ok_or_else(not_found)?;
        self.check_server_acl_in(origin, &head).await?;
        let summary = self.summarize_room(&head).await?;
        if !self.server_may_see(origin, &head, &summary).await? {
            return Err(not_found().into());
        }
        let children_state = if summary.room_type.as_deref() == Some("m.space") {
            self.space_children(&head, suggested_only).await?
        } else {
            Vec::new()
        };
        let mut children = Vec::new();
        let mut inaccessible_children = Vec::new();
        for child in &children_state {
            let Ok(child_id) = RoomId::parse(&child.state_key) else { continue };
            let Some(child_head) = self.existing_room_head(&child_id).await? else { continue };
            let child_summary = self.summarize_room(&child_head).await?;
            if self.server_may_see(origin, &child_head, &child_summary).await?
                && self.check_server_acl_in(origin, &child_head).await.is_ok()
            {
                children.push(child_summary);
            } else {
                inaccessible_children.push(child_id);
            }
        }
        Ok(FederationHierarchy {
            room: HierarchyRoom { summary, children_state },
            children,
            inaccessible_children,
        })
    }

    /// Whether a server may peek or join a room: it is open to preview, the server has a
    /// member in it, or its join rule lets in members of a room the server has a member in.
    async fn server_may_see(
        &self,
        origin: &ServerName,
        head: &RoomHead,
        summary: &RoomSummary,
    ) -> Result<bool> {
        if Self::open_to_preview(head, summary) || self.server_in_room(origin, &head.room_id).await? {
            return Ok(true);
        }
        for allowed in &summary.allowed_room_ids {
            if let Ok(allowed) = RoomId::parse(allowed)
                && self.server_in_room(origin, &allowed).await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A string field of a JSON object, when present and not empty.
fn text(json: &serde_json::Value, field: &str) -> Option<String> {
    json.get(field).and_then(serde_json::Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A room summary another server's `/hierarchy` gave (`None` when it is not one).
fn summary_of(json: &serde_json::Value) -> Option<RoomSummary> {
    let flag = |field: &str| json.get(field).and_then(serde_json::Value::as_bool).unwrap_or(false);
    Some(RoomSummary {
        room_id: OwnedRoomId::try_from(json.get("room_id")?.as_str()?).ok()?,
        room_version: text(json, "room_version").unwrap_or_default(),
        name: text(json, "name"),
        topic: text(json, "topic"),
        canonical_alias: text(json, "canonical_alias"),
        avatar_url: text(json, "avatar_url"),
        num_joined_members: json.get("num_joined_members").and_then(serde_json::Value::as_u64).unwrap_or(0),
        world_readable: flag("world_readable"),
        guest_can_join: flag("guest_can_join"),
        join_rule: text(json, "join_rule"),
        room_type: text(json, "room_type"),
        encryption: text(json, "encryption"),
        allowed_room_ids: json
            .get("allowed_room_ids")
            .and_then(serde_json::Value::as_array)
            .map(|ids| ids.iter().filter_map(serde_json::Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// An `m.space.child` event another server's `/hierarchy` gave.
fn child_of(json: &serde_json::Value) -> Option<SpaceChild> {
    if json.get("type").and_then(serde_json::Value::as_str) != Some("m.space.child") {
        return None;
    }
    let content = json.get("content").filter(|c| c.is_object())?.clone();
    if content.get("via").and_then(serde_json::Value::as_array).is_none_or(|via| via.is_empty()) {
        return None;
    }
    Some(SpaceChild {
        state_key: text(json, "state_key")?,
        sender: text(json, "sender")?,
        content,
        origin_server_ts: json.get("origin_server_ts").and_then(serde_json::Value::as_u64).unwrap_or(0),
    })
}

impl Services {
    /// A room this server does not have, for the client `/hierarchy`: asked of the `via`
    /// servers of the `m.space.child` event naming it (`GET /hierarchy/{roomId}`), the first
    /// answer kept. `None` when no server answers.
    pub(crate) async fn remote_hierarchy_room(
        &self,
        room_id: &RoomId,
        via: &[String],
        suggested_only: bool,
    ) -> Option<HierarchyRoom> {
        let path = format!(
            "/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}",
            super::pdu::path_segment(room_id.as_str())
        );
        for server in via.iter().filter(|server| server.as_str() != self.server_name()) {
            let Ok(server) = ruma::OwnedServerName::try_from(server.as_str()) else { continue };
            let answer: serde_json::Value = match self.federation.client.get_json(&server, &path).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::info!(%server, %room_id, %error, "remote /hierarchy failed");
                    continue;
                }
            };
            let Some(room) = answer.get("room") else { continue };
            let Some(summary) = summary_of(room).filter(|summary| summary.room_id == room_id) else {
                continue;
            };
            let mut children_state: Vec<SpaceChild> = room
                .get("children_state")
                .and_then(serde_json::Value::as_array)
                .map(|children| children.iter().filter_map(child_of).collect())
                .unwrap_or_default();
            crate::rooms::spaces::sort_children(&mut children_state);
            return Some(HierarchyRoom { summary, children_state });
        }
        None
    }

    /// Whether a user may see a room this server does not have, from its summary: open to
    /// preview, or restricted to a room the user is joined to here.
    pub(crate) async fn remote_room_previewable(
        &self,
        summary: &RoomSummary,
        user_id: &ruma::UserId,
    ) -> Result<bool> {
        if summary.world_readable
            || matches!(summary.join_rule.as_deref(), Some("public" | "knock" | "knock_restricted"))
        {
            return Ok(true);
        }
        for allowed in &summary.allowed_room_ids {
            if self.store.membership(allowed, user_id.as_str()).await?.as_deref() == Some("join") {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
