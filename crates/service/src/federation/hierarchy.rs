//! `GET /_matrix/federation/v1/hierarchy/{roomId}`, the resident side: a space this server is
//! in and its direct children, as the client `/hierarchy` summarises them
//! (`rooms::spaces`), unpaginated. Rooms are shown to a server that may peek or join them
//! (open to preview, the server has a member there, or the room is restricted to a room the
//! server has a member in); children it may not are listed as inaccessible, children this
//! server does not know are left out (as the spec says).

use myelin_core::MatrixError;
use ruma::{OwnedRoomId, RoomId, ServerName};

use crate::rooms::RoomHead;
use crate::rooms::spaces::{HierarchyRoom, RoomSummary};
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
