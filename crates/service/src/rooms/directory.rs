//! The room directory: local aliases (`/directory/room/{roomAlias}`, `/rooms/{roomId}/aliases`),
//! publication in the directory (`/directory/list/room/{roomId}`) and the published room list
//! (`/publicRooms`).
//!
//! Where the spec leaves a choice, Synapse's behaviour is followed: who may delete an alias or
//! change a room's publication, `alias_creation_rules` / `room_list_publication_rules`, the
//! canonical alias update when an alias is deleted, which published rooms are listed and in
//! what order.

use std::cmp::Reverse;

use base64::Engine as _;
use myelin_core::{ErrCode, MatrixError};
use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spaces::RoomSummary;
use super::{EventDraft, RoomHead};
use crate::auth::Requester;
use crate::{Error, Result, Services};

/// The most rooms one `/publicRooms` page returns (Synapse's cap too).
pub const MAX_PUBLIC_ROOMS_PAGE: u64 = 100;

/// A `/publicRooms` request.
#[derive(Clone, Debug, Default)]
pub struct PublicRoomsRequest {
    /// `None` or `Some(0)`: as many as allowed.
    pub limit: Option<u64>,
    pub since: Option<String>,
    /// Another server's directory; `None` or this server's name for the local one.
    pub server: Option<String>,
    pub generic_search_term: Option<String>,
    /// `None` in the list stands for rooms without a type; an empty list filters nothing.
    pub room_types: Option<Vec<Option<String>>>,
    pub include_all_networks: bool,
    pub third_party_instance_id: Option<String>,
}

/// A `/publicRooms` page.
#[derive(Clone, Debug, Default)]
pub struct PublicRoomsPage {
    pub chunk: Vec<RoomSummary>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total_room_count_estimate: u64,
}

/// A `/publicRooms` pagination token: the last room of a page (its joined members and ID) and
/// the direction to go from it.
#[derive(Serialize, Deserialize)]
struct PublicRoomsToken {
    #[serde(rename = "m")]
    joined_members: u64,
    #[serde(rename = "r")]
    room_id: String,
    #[serde(rename = "f")]
    forwards: bool,
}

impl PublicRoomsToken {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(token: &str) -> Result<PublicRoomsToken> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| MatrixError::invalid_param("Invalid pagination token").into())
    }

    /// The room list's sort key at this token.
    fn key(&self) -> (Reverse<u64>, Reverse<&str>) {
        (Reverse(self.joined_members), Reverse(self.room_id.as_str()))
    }

    fn of(room: &RoomSummary, forwards: bool) -> String {
        PublicRoomsToken {
            joined_members: room.num_joined_members,
            room_id: room.room_id.to_string(),
            forwards,
        }
        .encode()
    }
}

/// The room list's order: most joined members first, then by room ID, descending, as Synapse
/// orders it.
fn list_key(room: &RoomSummary) -> (Reverse<u64>, Reverse<&str>) {
    (Reverse(room.num_joined_members), Reverse(room.room_id.as_str()))
}

fn matches_search(room: &RoomSummary, term: &str) -> bool {
    let term = term.to_lowercase();
    [
        room.name.as_deref(),
        room.topic.as_deref(),
        room.canonical_alias.as_deref(),
        Some(room.room_id.as_str()),
    ]
    .into_iter()
    .flatten()
    .any(|field| field.to_lowercase().contains(&term))
}

fn matches_room_types(room: &RoomSummary, room_types: Option<&[Option<String>]>) -> bool {
    match room_types {
        None | Some([]) => true,
        Some(types) => types.iter().any(|wanted| wanted.as_deref() == room.room_type.as_deref()),
    }
}

/// Whether a published room is listed: it has joined members, and anyone may join, knock on or
/// read it.
fn listable(room: &RoomSummary) -> bool {
    let open = matches!(room.join_rule.as_deref(), Some("public") | Some("knock") | Some("knock_restricted"));
    room.num_joined_members > 0 && (open || room.world_readable)
}

/// One page of `rooms` (sorted by [`list_key`]) after or before a token.
fn paginate(rooms: Vec<RoomSummary>, limit: usize, since: Option<&PublicRoomsToken>) -> PublicRoomsPage {
    let Some(since) = since else {
        let more = rooms.len() > limit;
        let chunk: Vec<RoomSummary> = rooms.into_iter().take(limit).collect();
        let next_batch = if more { chunk.last().map(|last| PublicRoomsToken::of(last, true)) } else { None };
        return PublicRoomsPage { chunk, next_batch, ..Default::default() };
    };
    let bound = since.key();
    if since.forwards {
        let after: Vec<RoomSummary> = rooms.into_iter().filter(|room| list_key(room) > bound).collect();
        let more = after.len() > limit;
        let chunk: Vec<RoomSummary> = after.into_iter().take(limit).collect();
        let next_batch = if more { chunk.last().map(|last| PublicRoomsToken::of(last, true)) } else { None };
        // A forward token implies earlier rooms; past the end, paginate back from the very end.
        let prev_batch = Some(match chunk.first() {
            Some(first) => PublicRoomsToken::of(first, false),
            None => PublicRoomsToken { joined_members: 0, room_id: String::new(), forwards: false }.encode(),
        });
        PublicRoomsPage { chunk, next_batch, prev_batch, total_room_count_estimate: 0 }
    } else {
        let before: Vec<RoomSummary> = rooms.into_iter().filter(|room| list_key(room) < bound).collect();
        let more = before.len() > limit;
        let chunk: Vec<RoomSummary> = before[before.len().saturating_sub(limit)..].to_vec();
        let next_batch = chunk.last().map(|last| PublicRoomsToken::of(last, true));
        let prev_batch =
            if more { chunk.first().map(|first| PublicRoomsToken::of(first, false)) } else { None };
        PublicRoomsPage { chunk, next_batch, prev_batch, total_room_count_estimate: 0 }
    }
}

impl Services {
    /// A valid alias of this server.
    fn local_alias(&self, alias: &str) -> Result<OwnedRoomAliasId> {
        let parsed = RoomAliasId::parse(alias)
            .ok()
            .filter(|parsed| {
                alias.len() <= 255
                    && !parsed.alias().chars().any(|c| c.is_whitespace() || c.is_control() || c == ':')
            })
            .ok_or_else(|| MatrixError::invalid_param("Room alias invalid"))?;
        if parsed.server_name().as_str() != self.server_name() {
            return Err(MatrixError::invalid_param("Room alias must be local").into());
        }
        Ok(parsed)
    }

    /// Whether the requester may edit the room's directory entry or delete its aliases:
    /// server admins, and joined members with the power to send `m.room.canonical_alias`.
    async fn can_change_room_list(&self, requester: &Requester, head: &RoomHead) -> Result<bool> {
        if requester.is_admin {
            return Ok(true);
        }
        let membership = self.store.membership(head.room_id.as_str(), requester.user_id.as_str()).await?;
        if membership.as_deref() != Some("join") {
            return Ok(false);
        }
        let levels = self.power_levels(head).await?;
        Ok(levels.user_level(&requester.user_id) >= levels.event_level("m.room.canonical_alias", true))
    }

    /// `PUT /directory/room/{roomAlias}`.
    pub async fn create_room_alias(
        &self,
        requester: &Requester,
        alias: &str,
        room_id: &RoomId,
    ) -> Result<()> {
        let alias = self.local_alias(alias)?;
        self.check_alias_for_requester(requester, alias.as_str())?;
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(MatrixError::not_found(format!("Unknown room {room_id}")).into());
        }
        let user_id = requester.user_id.as_str();
        if self.config.room.require_membership_for_aliases
            && !requester.is_admin
            && self.store.membership(room_id.as_str(), user_id).await?.as_deref() != Some("join")
        {
            return Err(MatrixError::forbidden("You must be in the room to create an alias for it").into());
        }
        // The rules bind server admins too (only the membership requirement spares them).
        if !Self::directory_rules_allow(
            &self.config.room.alias_creation_rules,
            user_id,
            room_id.as_str(),
            &[alias.to_string()],
        ) {
            return Err(MatrixError::forbidden("Not allowed to create alias").into());
        }
        if !self.store.create_alias(alias.as_str(), room_id.as_str(), user_id).await? {
            // 409 with M_UNKNOWN, as the spec's example and Synapse have it.
            return Err(MatrixError::new(ErrCode::Unknown, format!("Room alias {alias} already exists"))
                .with_kind(myelin_core::ErrorKind::Conflict)
                .into());
        }
        tracing::info!(%alias, %room_id, %user_id, "created a room alias");
        Ok(())
    }

    /// `GET /directory/room/{roomAlias}`: the room and the servers that know it.
    pub async fn resolve_room_alias(&self, alias: &str) -> Result<(OwnedRoomId, Vec<String>)> {
        let alias =
            RoomAliasId::parse(alias).map_err(|_| MatrixError::invalid_param("Room alias invalid"))?;
        if alias.server_name().as_str() != self.server_name() {
            let (room_id, servers) = self.remote_room_alias(&alias).await?;
            return Ok((room_id, servers.iter().map(|s| s.to_string()).collect()));
        }
        let room_id = self
            .local_alias_room(&alias)
            .await?
            .ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
        let room_id = RoomId::parse(&room_id).map_err(Error::internal)?;
        Ok((room_id, vec![self.server_name().to_owned()]))
    }

    /// `DELETE /directory/room/{roomAlias}`: allowed for the alias's creator, server admins, and
    /// members who may send `m.room.canonical_alias`. The room's canonical alias event drops the
    /// alias afterwards, if the requester may send it (the deletion stands either way).
    pub async fn delete_room_alias(&self, requester: &Requester, alias: &str) -> Result<()> {
        let alias = self.local_alias(alias)?;
        let (room_id, creator) = self
            .store
            .get_alias(alias.as_str())
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown room alias"))?;
        let room_id = RoomId::parse(&room_id).map_err(Error::internal)?;
        let head = self.existing_room_head(&room_id).await?;
        let allowed = creator.as_deref() == Some(requester.user_id.as_str())
            || requester.is_admin
            || match &head {
                Some(head) => self.can_change_room_list(requester, head).await?,
                None => false,
            };
        if !allowed {
            return Err(MatrixError::forbidden("You don't have permission to delete the alias.").into());
        }
        if !self.store.delete_alias(alias.as_str()).await? {
            // Someone else deleted it meanwhile.
            return Err(MatrixError::not_found("Unknown room alias").into());
        }
        tracing::info!(%alias, %room_id, user_id = %requester.user_id, "deleted a room alias");
        if let Some(head) = head
            && let Err(error) = self.drop_from_canonical_alias(requester, &head, &alias).await
        {
            tracing::info!(%alias, %room_id, %error, "could not update the canonical alias event");
        }
        Ok(())
    }

    /// Sends a new `m.room.canonical_alias` without `alias`, if it names it.
    async fn drop_from_canonical_alias(
        &self,
        requester: &Requester,
        head: &RoomHead,
        alias: &RoomAliasId,
    ) -> Result<()> {
        let Some(event) = self.current_state_pdu(head, "m.room.canonical_alias", "").await? else {
            return Ok(());
        };
        let mut content = event.content_value();
        let Some(object) = content.as_object_mut() else { return Ok(()) };
        let mut changed = false;
        if object.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
            object.remove("alias");
            changed = true;
        }
        if let Some(Value::Array(alt_aliases)) = object.get_mut("alt_aliases")
            && alt_aliases.iter().any(|a| a.as_str() == Some(alias.as_str()))
        {
            alt_aliases.retain(|a| a.as_str() != Some(alias.as_str()));
            if alt_aliases.is_empty() {
                object.remove("alt_aliases");
            }
            changed = true;
        }
        if changed {
            self.send_event(
                &head.room_id,
                &requester.user_id,
                EventDraft::state("m.room.canonical_alias", "", content),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// `GET /rooms/{roomId}/aliases`: for server admins and those who may read the room.
    pub async fn room_aliases(&self, requester: &Requester, room_id: &RoomId) -> Result<Vec<String>> {
        if !requester.is_admin {
            self.readable_room(&requester.user_id, room_id).await?;
        }
        Ok(self.store.aliases_of_room(room_id.as_str()).await?)
    }

    /// `GET /directory/list/room/{roomId}`: whether the room is published.
    pub async fn room_published(&self, room_id: &RoomId) -> Result<bool> {
        let room = self
            .store
            .get_room(room_id.as_str())
            .await?
            .ok_or_else(|| MatrixError::not_found("Room not found"))?;
        Ok(room.is_public)
    }

    /// `PUT /directory/list/room/{roomId}`.
    pub async fn set_room_published(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        publish: bool,
    ) -> Result<()> {
        if publish && !self.config.room.enable_room_list_search {
            return Err(MatrixError::forbidden(
                "This user is not permitted to publish rooms to the room list",
            )
            .into());
        }
        let head = self
            .existing_room_head(room_id)
            .await?
            .ok_or_else(|| MatrixError::not_found("Room not found"))?;
        if !self.can_change_room_list(requester, &head).await? {
            return Err(MatrixError::forbidden(
                "This server requires you to be a moderator in the room to edit its room list entry",
            )
            .into());
        }
        if publish {
            let mut aliases = self.store.aliases_of_room(room_id.as_str()).await?;
            if let Some(canonical) = self.current_state_pdu(&head, "m.room.canonical_alias", "").await?
                && let Some(alias) = canonical.content_value().get("alias").and_then(Value::as_str)
            {
                aliases.push(alias.to_owned());
            }
            if !Self::directory_rules_allow(
                &self.config.room.room_list_publication_rules,
                requester.user_id.as_str(),
                room_id.as_str(),
                &aliases,
            ) {
                return Err(MatrixError::forbidden("Not allowed to publish room").into());
            }
        }
        self.store.set_room_public(room_id.as_str(), publish).await?;
        Ok(())
    }

    /// `GET /publicRooms` and `POST /publicRooms`.
    pub async fn public_rooms(&self, request: &PublicRoomsRequest) -> Result<PublicRoomsPage> {
        if let Some(server) = request.server.as_deref().filter(|s| *s != self.server_name()) {
            if ServerName::parse(server).is_err() {
                return Err(MatrixError::invalid_param(format!("Invalid server name: {server}")).into());
            }
            // Another server's directory needs federation, which is not available yet: this
            // server cannot know that server's rooms, so the list is not found. (Once
            // federation exists, an unreachable server is Synapse's `502 M_UNKNOWN`.)
            return Err(MatrixError::not_found(
                "Cannot fetch other servers' room lists: federation is not available",
            )
            .into());
        }
        if request.include_all_networks && request.third_party_instance_id.is_some() {
            return Err(
                MatrixError::unknown("Can't use include_all_networks with an explicit network").into()
            );
        }
        if !self.config.room.enable_room_list_search || request.third_party_instance_id.is_some() {
            // No application service publishes third-party network lists yet, so those are empty.
            return Ok(PublicRoomsPage::default());
        }
        let since = request.since.as_deref().map(PublicRoomsToken::decode).transpose()?;
        let limit = match request.limit {
            None | Some(0) => MAX_PUBLIC_ROOMS_PAGE,
            Some(limit) => limit.min(MAX_PUBLIC_ROOMS_PAGE),
        } as usize;
        let room_types = request.room_types.as_deref();

        let mut rooms = Vec::new();
        for room_id in self.store.public_rooms().await? {
            let Ok(room_id) = RoomId::parse(&room_id) else { continue };
            let Some(head) = self.room_head_snapshot(&room_id).await? else { continue };
            let summary = self.summarize_room(&head).await?;
            if listable(&summary) && matches_room_types(&summary, room_types) {
                rooms.push(summary);
            }
        }
        // As in Synapse, the estimate counts the room types filter but not the search term.
        let total = rooms.len() as u64;
        if let Some(term) = request.generic_search_term.as_deref().filter(|t| !t.is_empty()) {
            rooms.retain(|room| matches_search(room, term));
        }
        rooms.sort_by(|a, b| list_key(a).cmp(&list_key(b)));
        let mut page = paginate(rooms, limit, since.as_ref());
        page.total_room_count_estimate = total;
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str, members: u64) -> RoomSummary {
        RoomSummary {
            room_id: RoomId::parse(id).unwrap(),
            room_version: "10".to_owned(),
            name: None,
            topic: None,
            canonical_alias: None,
            avatar_url: None,
            num_joined_members: members,
            world_readable: false,
            guest_can_join: false,
            join_rule: Some("public".to_owned()),
            room_type: None,
            encryption: None,
            allowed_room_ids: Vec::new(),
        }
    }

    fn ids(page: &PublicRoomsPage) -> Vec<&str> {
        page.chunk.iter().map(|r| r.room_id.as_str()).collect()
    }

    fn sorted() -> Vec<RoomSummary> {
        let mut rooms =
            vec![room("!a:x", 1), room("!b:x", 3), room("!c:x", 1), room("!d:x", 2), room("!e:x", 1)];
        rooms.sort_by(|a, b| list_key(a).cmp(&list_key(b)));
        rooms
    }

    #[test]
    fn pages_go_forwards_and_back() {
        let first = paginate(sorted(), 2, None);
        assert_eq!(ids(&first), ["!b:x", "!d:x"]);
        assert!(first.prev_batch.is_none());
        let next = PublicRoomsToken::decode(first.next_batch.as_deref().unwrap()).unwrap();
        let second = paginate(sorted(), 2, Some(&next));
        assert_eq!(ids(&second), ["!e:x", "!c:x"]);
        let next = PublicRoomsToken::decode(second.next_batch.as_deref().unwrap()).unwrap();
        let third = paginate(sorted(), 2, Some(&next));
        assert_eq!(ids(&third), ["!a:x"]);
        assert!(third.next_batch.is_none());
        let back = PublicRoomsToken::decode(third.prev_batch.as_deref().unwrap()).unwrap();
        let again = paginate(sorted(), 2, Some(&back));
        assert_eq!(ids(&again), ["!e:x", "!c:x"]);
        let back = PublicRoomsToken::decode(again.prev_batch.as_deref().unwrap()).unwrap();
        let start = paginate(sorted(), 2, Some(&back));
        assert_eq!(ids(&start), ["!b:x", "!d:x"]);
        assert!(start.prev_batch.is_none());
    }

    #[test]
    fn filters() {
        let mut space = room("!s:x", 1);
        space.room_type = Some("m.space".to_owned());
        space.name = Some("Big SPACE".to_owned());
        let plain = room("!p:x", 1);
        assert!(matches_room_types(&space, Some(&[Some("m.space".to_owned())])));
        assert!(!matches_room_types(&plain, Some(&[Some("m.space".to_owned())])));
        assert!(matches_room_types(&plain, Some(&[None])));
        assert!(matches_room_types(&plain, Some(&[])));
        assert!(matches_search(&space, "space"));
        assert!(matches_search(&plain, "!P:"));
        assert!(!matches_search(&plain, "space"));
    }
}

/// Properties of `/publicRooms` tokens on arbitrary input (`PROPTEST_CASES` cases, 256 by
/// default).
#[cfg(test)]
mod prop_tests {
    use crate::util::prop_support::config;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// Any string, or the base64 of any bytes, decodes or is `M_INVALID_PARAM`.
        #[test]
        fn prop_public_rooms_token_decode_never_panics(text in any::<String>(), bytes in any::<Vec<u8>>()) {
            let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            for token in [text.as_str(), encoded.as_str()] {
                match PublicRoomsToken::decode(token) {
                    Ok(_) => {}
                    Err(Error::Matrix(error)) => prop_assert_eq!(error.code, ErrCode::InvalidParam),
                    Err(other) => prop_assert!(false, "{token:?}: {other:?}"),
                }
            }
        }

        /// Encoding then decoding gives the same token; a member count beyond `u64` is refused.
        #[test]
        fn prop_public_rooms_token_round_trips(
            joined_members in any::<u64>(),
            room_id in any::<String>(),
            forwards in any::<bool>(),
            over in (u64::MAX as u128 + 1)..=u128::MAX,
        ) {
            let token = PublicRoomsToken { joined_members, room_id: room_id.clone(), forwards };
            let decoded = PublicRoomsToken::decode(&token.encode()).unwrap();
            prop_assert_eq!(
                (decoded.joined_members, decoded.room_id, decoded.forwards),
                (joined_members, room_id, forwards)
            );
            let json = format!(r#"{{"m":{over},"r":"!a:x","f":true}}"#);
            let too_big = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
            prop_assert!(PublicRoomsToken::decode(&too_big).is_err());
        }
    }
}
