//! The admin API's rooms (`/_synapse/admin/v1/rooms...`, `/v2/rooms`, `/v1/join`): the room
//! list with Synapse's orders and search, one room's details, members and state, blocking,
//! force-joins, and deleting a room. Every membership change goes through the one membership
//! path (`rooms::membership`); deleting a room makes each local member leave on their own
//! behalf (an admin need not be in the room, nor outrank anyone), then purges the room's rows
//! table by table (`Store::purge_room`), each step its own transaction, so it is idempotent.
//! Purging a room's history (`/v1/purge_history`) removes the events before a point in one
//! transaction (`Store::purge_history`) on a task recorded like deletions.

use std::cmp::Ordering;

use myelin_core::{ErrCode, MatrixError};
use myelin_store::{AdminRoomTask, PurgeHistoryOutcome, RoomStatsRecord};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::auth::Requester;
use crate::rooms::RoomHead;
use crate::rooms::create::CreateRoomRequest;
use crate::rooms::head::RoomEvent;
use crate::rooms::membership::{MembershipAction, MembershipChange};
use crate::rooms::power_levels::room_creators;
use crate::rooms::write::EventDraft;
use crate::{Result, Services};

/// The room list's orders and request, defined with the query that runs them.
pub use myelin_store::{RoomListOrder as RoomOrder, RoomListQuery};

/// One room as the room list and the room details show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdminRoomSummary {
    pub room_id: String,
    pub name: Option<String>,
    pub canonical_alias: Option<String>,
    pub joined_members: i64,
    pub joined_local_members: i64,
    pub version: String,
    pub creator: Option<String>,
    pub encryption: Option<String>,
    pub federatable: bool,
    pub public: bool,
    pub join_rules: Option<String>,
    pub guest_access: Option<String>,
    pub history_visibility: Option<String>,
    pub state_events: i64,
    pub avatar: Option<String>,
    pub topic: Option<String>,
    pub room_type: Option<String>,
    /// The tombstone's `replacement_room`, `Some(None)` for a tombstone without one.
    pub tombstone: Option<Option<String>>,
}

/// `GET /_synapse/admin/v1/rooms/{roomId}`.
#[derive(Clone, Debug)]
pub struct AdminRoomDetails {
    pub summary: AdminRoomSummary,
    pub joined_local_devices: i64,
    pub forgotten: bool,
}

/// What deleting a room asks for (`DELETE /_synapse/admin/v1|v2/rooms/{roomId}`).
#[derive(Clone, Debug, Default)]
pub struct DeleteRoomRequest {
    pub new_room_user_id: Option<OwnedUserId>,
    pub room_name: Option<String>,
    pub message: Option<String>,
    pub block: bool,
    pub purge: bool,
    pub force_purge: bool,
}

/// What deleting a room did (Synapse's `ShutdownRoomResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRoomOutcome {
    pub kicked_users: Vec<String>,
    pub failed_to_kick_users: Vec<String>,
    pub local_aliases: Vec<String>,
    pub new_room_id: Option<String>,
}

impl DeleteRoomOutcome {
    fn to_json(&self) -> Value {
        json!({
            "kicked_users": self.kicked_users,
            "failed_to_kick_users": self.failed_to_kick_users,
            "local_aliases": self.local_aliases,
            "new_room_id": self.new_room_id,
        })
    }

    fn from_json(text: &str) -> DeleteRoomOutcome {
        let value: Value = serde_json::from_str(text).unwrap_or_default();
        let list = |key: &str| -> Vec<String> {
            value[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        DeleteRoomOutcome {
            kicked_users: list("kicked_users"),
            failed_to_kick_users: list("failed_to_kick_users"),
            local_aliases: list("local_aliases"),
            new_room_id: value["new_room_id"].as_str().map(str::to_owned),
        }
    }
}

/// A deletion's status (`delete_status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRoomStatus {
    pub delete_id: String,
    pub room_id: String,
    /// `active`, `complete` or `failed` (Synapse also says `scheduled`, `shutting_down`,
    /// `purging`; a task here is `active` from its start to its end).
    pub status: String,
    pub error: Option<String>,
    pub outcome: DeleteRoomOutcome,
}

impl From<AdminRoomTask> for DeleteRoomStatus {
    fn from(task: AdminRoomTask) -> DeleteRoomStatus {
        DeleteRoomStatus {
            outcome: task.result.as_deref().map(DeleteRoomOutcome::from_json).unwrap_or_default(),
            delete_id: task.task_id,
            room_id: task.room_id,
            status: task.status,
            error: task.error,
        }
    }
}

const DELETE_TASK: &str = "delete";
const PURGE_HISTORY_TASK: &str = "purge_history";

/// Where a history purge stops (`POST /_synapse/admin/v1/purge_history`).
#[derive(Clone, Debug)]
pub enum PurgePoint {
    /// `purge_up_to_event_id` (or the event in the path): the events before it go.
    Event(OwnedEventId),
    /// `purge_up_to_ts`: the events before the room's event at this time go.
    Timestamp(i64),
}

/// A history purge request.
#[derive(Clone, Debug)]
pub struct PurgeHistoryRequest {
    pub up_to: PurgePoint,
    /// Whether local users' events go too (they are kept, out of the timeline, otherwise).
    pub delete_local_events: bool,
}

/// A recorded deletion's requester and request (the inverse of `begin_delete_task`'s params).
fn parse_delete_params(params: &Value) -> Option<(OwnedUserId, DeleteRoomRequest)> {
    let requester = UserId::parse(params["requester"].as_str()?).ok()?;
    let new_room_user_id = match params["new_room_user_id"].as_str() {
        Some(user) => Some(UserId::parse(user).ok()?),
        None => None,
    };
    let text = |key: &str| params[key].as_str().map(str::to_owned);
    let flag = |key: &str| params[key].as_bool().unwrap_or(false);
    Some((
        requester,
        DeleteRoomRequest {
            new_room_user_id,
            room_name: text("room_name"),
            message: text("message"),
            block: flag("block"),
            purge: flag("purge"),
            force_purge: flag("force_purge"),
        },
    ))
}

/// A failed purge's error as its status shows it: a Matrix error's message, else `internal
/// error` (the details are in the log).
fn purge_error_text(error: &crate::Error) -> String {
    match error {
        crate::Error::Matrix(error) => error.message.clone(),
        _ => "internal error".to_owned(),
    }
}

const DEFAULT_NEW_ROOM_NAME: &str = "Content Violation Notification";
const DEFAULT_MESSAGE: &str =
    "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.";

fn summary_of(room: RoomStatsRecord) -> AdminRoomSummary {
    AdminRoomSummary {
        room_id: room.room_id,
        name: room.name,
        canonical_alias: room.canonical_alias,
        joined_members: room.joined_members,
        joined_local_members: room.joined_local_members,
        version: room.room_version,
        creator: room.creator,
        encryption: room.encryption,
        federatable: room.federatable,
        public: room.is_public,
        join_rules: room.join_rules,
        guest_access: room.guest_access,
        history_visibility: room.history_visibility,
        state_events: room.state_events,
        avatar: room.avatar,
        topic: room.topic,
        room_type: room.room_type,
        tombstone: room.tombstone,
    }
}

/// Orders two optional values as PostgreSQL does: ascending puts `None` last.
fn by_option<T: Ord>(a: &Option<T>, b: &Option<T>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// A power level as old rooms may hold it: an integer, or a string of one.
fn level_value(level: &Value) -> Option<i64> {
    match level {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn unknown_room() -> crate::Error {
    MatrixError::not_found("Room not found").into()
}

impl Services {
    /// `GET /_synapse/admin/v1/rooms`: one page of rooms and how many match in all (one
    /// indexed query over the rooms' summary rows).
    pub async fn admin_list_rooms(&self, query: &RoomListQuery) -> Result<(Vec<AdminRoomSummary>, u64)> {
        let (rooms, total) = self.store.list_rooms(query).await?;
        Ok((rooms.into_iter().map(summary_of).collect(), total))
    }

    /// A room ID this server has a `rooms` row for, `404 M_NOT_FOUND` otherwise.
    async fn admin_known_room(&self, room_id: &RoomId) -> Result<RoomStatsRecord> {
        self.store.room_stats(room_id.as_str()).await?.ok_or_else(unknown_room)
    }

    /// `GET /_synapse/admin/v1/rooms/{roomId}`.
    pub async fn admin_room_details(&self, room_id: &RoomId) -> Result<AdminRoomDetails> {
        let summary = summary_of(self.admin_known_room(room_id).await?);
        let local_members: Vec<String> = self
            .store
            .room_members(room_id.as_str(), "join")
            .await?
            .into_iter()
            .filter(|user| user.rsplit_once(':').is_some_and(|(_, server)| server == self.server_name()))
            .collect();
        let joined_local_devices = self.store.count_devices_of_users(&local_members).await?;
        let forgotten = self.store.room_forgotten_by_all(self.server_name(), room_id.as_str()).await?;
        Ok(AdminRoomDetails { summary, joined_local_devices, forgotten })
    }

    /// `GET /_synapse/admin/v1/rooms/{roomId}/members`: the joined members.
    pub async fn admin_room_members(&self, room_id: &RoomId) -> Result<Vec<String>> {
        self.admin_known_room(room_id).await?;
        Ok(self.store.room_members(room_id.as_str(), "join").await?)
    }

    /// `GET /_synapse/admin/v1/rooms/{roomId}/state`: the current state (of one type if
    /// asked), in the client format.
    pub async fn admin_room_state(&self, room_id: &RoomId, kind: Option<&str>) -> Result<Vec<Value>> {
        self.admin_known_room(room_id).await?;
        let head = self.known_room(room_id).await?;
        let ids: Vec<String> = self
            .store
            .current_state(room_id.as_str())
            .await?
            .into_iter()
            .filter(|((event_type, _), _)| kind.is_none_or(|kind| kind == event_type))
            .map(|(_, event_id)| event_id)
            .collect();
        let mut events: Vec<RoomEvent> = self.events_by_ids(&head, ids).await?;
        events.sort_by_key(|event| event.stream_ordering);
        let mut state = Vec::with_capacity(events.len());
        for event in &events {
            state.push(self.client_event(event, None).await?);
        }
        Ok(state)
    }

    /// `GET /_synapse/admin/v1/rooms/{roomId}/forward_extremities`: `(event ID, depth,
    /// origin_server_ts, state group)` of each.
    pub async fn admin_forward_extremities(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<(String, i64, i64, Option<i64>)>> {
        self.admin_known_room(room_id).await?;
        Ok(self.store.forward_extremities_of(room_id.as_str()).await?)
    }

    /// Refuses joins, invites and knocks to a blocked room (as Synapse, admins too).
    pub(crate) async fn check_room_not_blocked(&self, room_id: &RoomId) -> Result<()> {
        if self.store.room_blocked_by(room_id.as_str()).await?.is_some() {
            return Err(MatrixError::forbidden("This room has been blocked on this server").into());
        }
        Ok(())
    }

    /// `GET /_synapse/admin/v1/rooms/{roomId}/block`: whether it is blocked, and by whom.
    /// Unknown rooms may be asked about (and blocked), as in Synapse.
    pub async fn admin_room_blocked(&self, room_id: &RoomId) -> Result<Option<String>> {
        Ok(self.store.room_blocked_by(room_id.as_str()).await?)
    }

    /// `PUT /_synapse/admin/v1/rooms/{roomId}/block`.
    pub async fn admin_block_room(&self, requester: &Requester, room_id: &RoomId, block: bool) -> Result<()> {
        self.store.set_room_blocked(room_id.as_str(), requester.user_id.as_str(), block).await?;
        tracing::info!(admin_user = %requester.user_id, %room_id, block, "admin changed a room's block");
        Ok(())
    }

    /// `POST /_synapse/admin/v1/join/{roomIdOrAlias}`: makes a local user join a room through
    /// the one membership path. A room that is not public needs an invite: the admin sends it
    /// when joined there (otherwise `403`, as Synapse).
    pub async fn admin_force_join(
        &self,
        requester: &Requester,
        user_id: &UserId,
        id_or_alias: &str,
    ) -> Result<OwnedRoomId> {
        if user_id.server_name().as_str() != self.server_name() {
            return Err(MatrixError::bad_json("This endpoint can only be used with local users").into());
        }
        if self.store.get_user(user_id.as_str()).await?.is_none() {
            return Err(MatrixError::not_found("User not found").into());
        }
        let (room_id, head) = self.admin_resolve_room(id_or_alias).await?;
        self.check_room_not_blocked(&room_id).await?;
        let join_rule = self.join_rule_of(&head).await?;
        let membership = self.store.membership(room_id.as_str(), user_id.as_str()).await?;
        if join_rule.as_deref() != Some("public") && !matches!(membership.as_deref(), Some("join" | "invite"))
        {
            let admin_in_room = self.store.membership(room_id.as_str(), requester.user_id.as_str()).await?;
            if admin_in_room.as_deref() != Some("join") {
                return Err(MatrixError::forbidden(format!(
                    "{} not in room {room_id}, and room is not public",
                    requester.user_id
                ))
                .into());
            }
            let mut invite = MembershipChange::new(user_id, MembershipAction::Invite, None);
            invite.ratelimit = false;
            self.update_membership(requester, &room_id, invite).await?;
        }
        let mut join = MembershipChange::new(user_id, MembershipAction::Join, None);
        join.ratelimit = false;
        self.update_membership(&Requester::acting_as(user_id), &room_id, join).await?;
        tracing::info!(admin_user = %requester.user_id, %user_id, %room_id, "admin force-joined a user");
        Ok(room_id)
    }

    /// A room ID or local alias (`400 M_INVALID_PARAM` when neither) of a room this server
    /// knows (`404 M_NOT_FOUND` otherwise), with its head.
    async fn admin_resolve_room(&self, id_or_alias: &str) -> Result<(OwnedRoomId, RoomHead)> {
        let room_id = self.resolve_room_or_alias(id_or_alias).await?;
        let head = self.known_room(&room_id).await.map_err(|_| {
            crate::Error::from(MatrixError::not_found(format!("Room {room_id} is not known to this server")))
        })?;
        Ok((room_id, head))
    }

    async fn join_rule_of(&self, head: &RoomHead) -> Result<Option<String>> {
        Ok(self
            .current_state_pdu(head, "m.room.join_rules", "")
            .await?
            .and_then(|pdu| pdu.content_value().get("join_rule").and_then(Value::as_str).map(str::to_owned)))
    }

    /// `POST /_synapse/admin/v1/rooms/{roomIdOrAlias}/make_room_admin` (Synapse's
    /// `MakeRoomAdminRestServlet`): the joined local user with the most power in the room (v12
    /// creators first; the create event's sender when there are no power levels) gives
    /// `target` their own level (100 when they have none listed) through the one write path,
    /// then, unless `target` is joined, invited or the room is public, invites them through the
    /// one membership path. Synapse's errors: `400 M_UNKNOWN` when no local user can do it.
    pub async fn admin_make_room_admin(
        &self,
        requester: &Requester,
        id_or_alias: &str,
        target: Option<&UserId>,
    ) -> Result<()> {
        let target = target.unwrap_or(&requester.user_id).to_owned();
        let is_local = |user: &UserId| user.server_name().as_str() == self.server_name();
        if is_local(&target) && self.store.get_user(target.as_str()).await?.is_none() {
            return Err(MatrixError::not_found("User not found").into());
        }
        let (room_id, head) = self.admin_resolve_room(id_or_alias).await?;
        let no_admin = || crate::Error::from(MatrixError::unknown("No local admin user in room"));
        let create = self
            .current_state_pdu(&head, "m.room.create", "")
            .await?
            .ok_or_else(|| crate::Error::internal(format!("room {room_id} has no create event")))?;
        let levels = self.current_state_pdu(&head, "m.room.power_levels", "").await?;
        let (mut content, granter) = match &levels {
            Some(levels) => {
                let Value::Object(content) = levels.content_value() else {
                    return Err(crate::Error::internal(format!(
                        "power levels of {room_id} are not an object"
                    )));
                };
                let mut listed: Vec<(i64, OwnedUserId)> = content
                    .get("users")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(user, level)| Some((level_value(level)?, UserId::parse(user).ok()?)))
                    .filter(|(_, user)| is_local(user))
                    .collect();
                listed.sort_by_key(|(level, _)| *level);
                let mut candidates: Vec<OwnedUserId> = listed.into_iter().map(|(_, user)| user).collect();
                if head.rules.authorization.explicitly_privilege_room_creators {
                    candidates
                        .extend(room_creators(&head.rules, &create)?.into_iter().filter(|u| is_local(u)));
                }
                let mut granter = None;
                for user in candidates.iter().rev() {
                    if self.store.membership(room_id.as_str(), user.as_str()).await?.as_deref()
                        == Some("join")
                    {
                        granter = Some(user.clone());
                        break;
                    }
                }
                (content, granter.ok_or_else(no_admin)?)
            }
            None if is_local(&create.sender) => (Map::new(), create.sender.clone()),
            None => return Err(no_admin()),
        };
        let mut users = content.get("users").and_then(Value::as_object).cloned().unwrap_or_default();
        let level = users.get(granter.as_str()).cloned().unwrap_or_else(|| json!(100));
        users.insert(target.to_string(), level);
        content.insert("users".to_owned(), Value::Object(users));
        let draft = EventDraft::state("m.room.power_levels", "", Value::Object(content));
        match self.send_event(&room_id, &granter, draft, None).await {
            Ok(_) => {}
            Err(crate::Error::Matrix(error)) if error.code == ErrCode::Forbidden => {
                return Err(MatrixError::unknown(
                    "No local admin user in room with power to update power levels.",
                )
                .into());
            }
            Err(error) => return Err(error),
        }
        tracing::info!(admin_user = %requester.user_id, %room_id, user_id = %target, granted_by = %granter, "admin made a user room admin");
        let membership = self.store.membership(room_id.as_str(), target.as_str()).await?;
        if matches!(membership.as_deref(), Some("join" | "invite"))
            || self.join_rule_of(&head).await?.as_deref() == Some("public")
        {
            return Ok(());
        }
        let mut invite = MembershipChange::new(&target, MembershipAction::Invite, None);
        invite.ratelimit = false;
        self.update_membership(&Requester::acting_as(&granter), &room_id, invite).await?;
        Ok(())
    }

    /// Starts deleting a room (`DELETE /_synapse/admin/v2/rooms/{roomId}`): the work runs on a
    /// task of its own, its status in `delete_status`. A deletion already running for the room
    /// is `400` (one check-and-insert transaction decides, so two requests at once start one).
    pub async fn admin_start_delete_room(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        request: DeleteRoomRequest,
    ) -> Result<String> {
        self.check_delete_request(room_id, &request).await?;
        let delete_id = crate::util::random_string(16);
        self.begin_delete_task(&delete_id, requester, room_id, &request).await?;
        let services = self.clone();
        let (requester, room_id) = (requester.clone(), room_id.to_owned());
        let task_id = delete_id.clone();
        tokio::spawn(async move {
            services.run_delete_task(&task_id, &requester, &room_id, request).await;
        });
        Ok(delete_id)
    }

    /// `DELETE /_synapse/admin/v1/rooms/{roomId}`: deletes the room before answering.
    pub async fn admin_delete_room(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        request: DeleteRoomRequest,
    ) -> Result<DeleteRoomOutcome> {
        self.check_delete_request(room_id, &request).await?;
        let delete_id = crate::util::random_string(16);
        self.begin_delete_task(&delete_id, requester, room_id, &request).await?;
        match self.run_delete_task(&delete_id, requester, room_id, request).await {
            Some(outcome) => Ok(outcome),
            None => {
                let task = self.store.admin_room_task(&delete_id).await?;
                let error = task.and_then(|task| task.error).unwrap_or_default();
                Err(crate::Error::internal(format!("deleting {room_id} failed: {error}")))
            }
        }
    }

    async fn check_delete_request(&self, room_id: &RoomId, request: &DeleteRoomRequest) -> Result<()> {
        if let Some(user) = &request.new_room_user_id {
            if user.server_name().as_str() != self.server_name() {
                return Err(MatrixError::bad_json("User must be our own").into());
            }
            if self.store.get_user(user.as_str()).await?.is_none() {
                return Err(MatrixError::not_found("new_room_user_id not found").into());
            }
        }
        // An unknown room may still be blocked (Synapse blocks rooms before they are known).
        if !request.block && self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(unknown_room());
        }
        Ok(())
    }

    async fn begin_delete_task(
        &self,
        delete_id: &str,
        requester: &Requester,
        room_id: &RoomId,
        request: &DeleteRoomRequest,
    ) -> Result<()> {
        let params = json!({
            "requester": requester.user_id,
            "new_room_user_id": request.new_room_user_id,
            "room_name": request.room_name,
            "message": request.message,
            "block": request.block,
            "purge": request.purge,
            "force_purge": request.force_purge,
        })
        .to_string();
        let instance = &self.config.federation.instance_name;
        if !self
            .store
            .start_admin_room_task(delete_id, DELETE_TASK, room_id.as_str(), true, &params, instance)
            .await?
        {
            return Err(
                MatrixError::bad_json(format!("History purge already in progress for {room_id}")).into()
            );
        }
        Ok(())
    }

    /// Runs a deletion and records its end; `None` when it failed (the error is recorded).
    async fn run_delete_task(
        &self,
        delete_id: &str,
        requester: &Requester,
        room_id: &RoomId,
        request: DeleteRoomRequest,
    ) -> Option<DeleteRoomOutcome> {
        let result = self.delete_room(requester, room_id, &request).await;
        let recorded = match &result {
            Ok(outcome) => {
                let json = outcome.to_json().to_string();
                self.store.finish_admin_room_task(delete_id, Ok(Some(&json))).await
            }
            Err(error) => {
                tracing::warn!(%room_id, error = %error, "deleting a room failed");
                self.store.finish_admin_room_task(delete_id, Err(&error.to_string())).await
            }
        };
        if let Err(error) = recorded {
            tracing::error!(%room_id, %error, "recording the end of a room deletion failed");
        }
        result.ok()
    }

    /// The deletion itself: block, replacement room, every local member out (through the one
    /// membership path, on their own behalf), aliases moved or removed, the room out of the
    /// directory, then the purge.
    async fn delete_room(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        request: &DeleteRoomRequest,
    ) -> Result<DeleteRoomOutcome> {
        tracing::info!(admin_user = %requester.user_id, %room_id, block = request.block, purge = request.purge, "admin deletes a room");
        if request.block {
            self.store.set_room_blocked(room_id.as_str(), requester.user_id.as_str(), true).await?;
        }
        let mut outcome = DeleteRoomOutcome::default();
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Ok(outcome);
        }
        let new_room = match &request.new_room_user_id {
            Some(owner) => Some(self.create_replacement_room(owner, request).await?),
            None => None,
        };
        outcome.new_room_id = new_room.as_ref().map(|room| room.to_string());
        let mut locals = Vec::new();
        for membership in ["join", "invite", "knock"] {
            for user in self.store.room_members(room_id.as_str(), membership).await? {
                if let Ok(user) = UserId::parse(&user)
                    && user.server_name().as_str() == self.server_name()
                {
                    locals.push((user, membership));
                }
            }
        }
        for (user, membership) in locals {
            let mut leave = MembershipChange::new(&user, MembershipAction::Leave, None);
            leave.ratelimit = false;
            if let Err(error) = self.update_membership(&Requester::acting_as(&user), room_id, leave).await {
                tracing::warn!(%room_id, user_id = %user, error = %error, "could not remove a user from a deleted room");
                outcome.failed_to_kick_users.push(user.to_string());
                continue;
            }
            self.forget_room_for(&user, room_id).await?;
            if membership == "join"
                && let Some(new_room) = &new_room
            {
                let mut join = MembershipChange::new(&user, MembershipAction::Join, None);
                join.ratelimit = false;
                if let Err(error) = self.update_membership(&Requester::acting_as(&user), new_room, join).await
                {
                    tracing::warn!(room_id = %new_room, user_id = %user, error = %error, "could not move a user to the replacement room");
                }
            }
            outcome.kicked_users.push(user.to_string());
        }
        outcome.local_aliases = self.store.aliases_of_room(room_id.as_str()).await?;
        match &new_room {
            Some(new_room) => {
                self.store.move_aliases(room_id.as_str(), new_room.as_str()).await?;
            }
            None => {
                for alias in &outcome.local_aliases {
                    self.store.delete_alias(alias).await?;
                }
            }
        }
        self.store.set_room_public(room_id.as_str(), false).await?;
        if request.purge {
            self.purge_room(room_id, request.force_purge).await?;
        }
        Ok(outcome)
    }

    async fn create_replacement_room(
        &self,
        owner: &UserId,
        request: &DeleteRoomRequest,
    ) -> Result<OwnedRoomId> {
        let owner = Requester::acting_as(owner);
        let room = self
            .create_room(
                &owner,
                CreateRoomRequest {
                    preset: Some("public_chat".to_owned()),
                    name: Some(request.room_name.clone().unwrap_or_else(|| DEFAULT_NEW_ROOM_NAME.to_owned())),
                    power_level_content_override: json!({ "users_default": -10 }).as_object().cloned(),
                    ..CreateRoomRequest::default()
                },
            )
            .await?;
        let message = request.message.clone().unwrap_or_else(|| DEFAULT_MESSAGE.to_owned());
        self.send_event(
            &room,
            &owner.user_id,
            EventDraft::message("m.room.message", json!({"msgtype": "m.text", "body": message})),
            None,
        )
        .await?;
        Ok(room)
    }

    /// Removes a room from the database under its send lock (no send can interleave), then
    /// forgets its cached head. Without `force`, refuses while local users are still joined.
    async fn purge_room(&self, room_id: &RoomId, force: bool) -> Result<()> {
        let mut guard = self.rooms.lock_for_write(room_id).await;
        if !force {
            let still_joined =
                self.store.room_members(room_id.as_str(), "join").await?.iter().any(|user| {
                    user.rsplit_once(':').is_some_and(|(_, server)| server == self.server_name())
                });
            if still_joined {
                return Err(
                    MatrixError::bad_json(format!("Users are still joined to this room: {room_id}")).into()
                );
            }
        }
        let events = self.store.purge_room(room_id.as_str()).await?;
        // No head: the room is gone for the senders waiting on its lock and for readers.
        *guard = None;
        self.rooms.forget_room_facts(room_id);
        self.rooms.forget_all_memberships();
        drop(guard);
        tracing::info!(%room_id, events, "purged a room");
        Ok(())
    }

    /// `POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`: checks the request and
    /// where the purge stops (the depth of the event, or of the room's event at the
    /// timestamp, as Synapse finds them), records the task and runs it on a task of its own;
    /// answers its ID (`purge_history_status`). Purges of one room may be asked for while
    /// one runs: they run one after the other under the room's send lock.
    pub async fn admin_start_purge_history(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        request: PurgeHistoryRequest,
    ) -> Result<String> {
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(unknown_room());
        }
        let depth = match &request.up_to {
            PurgePoint::Event(event_id) => {
                let (event_room, depth) = self
                    .store
                    .event_room_and_depth(event_id.as_str())
                    .await?
                    .ok_or_else(|| MatrixError::not_found(format!("Could not find event {event_id}")))?;
                if event_room != room_id.as_str() {
                    return Err(MatrixError::unknown("Event is for wrong room.").into());
                }
                depth
            }
            PurgePoint::Timestamp(ts) => self
                .store
                .purge_depth_at_ts(room_id.as_str(), *ts)
                .await?
                .ok_or_else(|| MatrixError::not_found("there is no event to be purged"))?,
        };
        let purge_id = crate::util::random_string(16);
        let params = json!({"depth": depth, "delete_local_events": request.delete_local_events}).to_string();
        let instance = &self.config.federation.instance_name;
        self.store
            .start_admin_room_task(&purge_id, PURGE_HISTORY_TASK, room_id.as_str(), false, &params, instance)
            .await?;
        tracing::info!(admin_user = %requester.user_id, %room_id, depth, purge_id, delete_local_events = request.delete_local_events, "admin purges a room's history");
        let services = self.clone();
        let (room_id, task_id) = (room_id.to_owned(), purge_id.clone());
        tokio::spawn(async move {
            services.run_purge_task(&task_id, &room_id, depth, request.delete_local_events).await;
        });
        Ok(purge_id)
    }

    /// Runs a history purge and records its end.
    async fn run_purge_task(&self, task_id: &str, room_id: &RoomId, depth: i64, delete_local_events: bool) {
        let result = self.purge_history(room_id, depth, delete_local_events).await;
        let recorded = match &result {
            Ok(()) => self.store.finish_admin_room_task(task_id, Ok(None)).await,
            Err(error) => {
                tracing::warn!(%room_id, purge_id = task_id, %error, "purging a room's history failed");
                self.store.finish_admin_room_task(task_id, Err(&purge_error_text(error))).await
            }
        };
        if let Err(error) = recorded {
            tracing::error!(%room_id, %error, "recording the end of a history purge failed");
        }
    }

    /// The purge itself, under the room's send lock (no event is built on what it removes);
    /// the head is loaded again after it, since forward extremities may have gone with it.
    async fn purge_history(&self, room_id: &RoomId, depth: i64, delete_local_events: bool) -> Result<()> {
        let mut guard = self.lock_room_for_write(room_id).await?;
        if guard.is_none() {
            return Err(unknown_room());
        }
        let keep_local_of = (!delete_local_events).then(|| self.server_name());
        let outcome = self.store.purge_history(room_id.as_str(), depth, keep_local_of).await;
        // Reloaded whatever happened: a failed transaction changed nothing, but a reload is cheap.
        *guard = self.load_head(room_id).await?;
        self.rooms.forget_room_facts(room_id);
        drop(guard);
        match outcome? {
            PurgeHistoryOutcome::Purged { deleted, kept } => {
                tracing::info!(%room_id, depth, deleted, kept, "purged a room's history");
                Ok(())
            }
            PurgeHistoryOutcome::BeyondExtremities => {
                Err(MatrixError::unknown("topological_ordering is greater than forward extremities").into())
            }
        }
    }

    /// `GET /_synapse/admin/v1/purge_history_status/{purgeId}`: `active`, `complete` or
    /// `failed` (with its error).
    pub async fn admin_purge_history_status(&self, purge_id: &str) -> Result<(String, Option<String>)> {
        match self.store.admin_room_task(purge_id).await? {
            Some(task) if task.kind == PURGE_HISTORY_TASK => Ok((task.status, task.error)),
            _ => Err(MatrixError::not_found(format!("purge id '{purge_id}' not found")).into()),
        }
    }

    /// Room deletions and history purges a previous run of this instance left active died
    /// with it: each runs again from the start, on a task of its own (both are idempotent: a
    /// deletion finds the members already gone and the rows already purged; a purge finds
    /// nothing left before its point). A task whose parameters were not recorded (from before
    /// they were) is marked failed, so that it can be asked for again.
    pub(crate) async fn resume_interrupted_admin_room_tasks(&self) {
        let instance = &self.config.federation.instance_name;
        let tasks = match self.store.interrupted_admin_room_tasks(instance).await {
            Ok(tasks) => tasks,
            Err(error) => {
                tracing::warn!(%error, "could not list the room deletions and history purges a restart interrupted");
                return;
            }
        };
        for (task, params) in tasks {
            let params: Option<Value> = params.as_deref().and_then(|p| serde_json::from_str(p).ok());
            let room_id = RoomId::parse(&task.room_id).ok();
            let services = self.clone();
            let delete = params.as_ref().filter(|_| task.kind == DELETE_TASK).and_then(parse_delete_params);
            match (task.kind.as_str(), params, room_id) {
                (DELETE_TASK, Some(_), Some(room_id)) if delete.is_some() => {
                    let Some((admin, request)) = delete else { continue };
                    tracing::info!(%room_id, delete_id = task.task_id, "resuming a room deletion a restart interrupted");
                    tokio::spawn(async move {
                        let requester = Requester::acting_as(&admin);
                        services.run_delete_task(&task.task_id, &requester, &room_id, request).await;
                    });
                }
                (PURGE_HISTORY_TASK, Some(params), Some(room_id)) if params["depth"].is_i64() => {
                    let depth = params["depth"].as_i64().unwrap_or_default();
                    let delete_local_events = params["delete_local_events"].as_bool().unwrap_or(false);
                    tracing::info!(%room_id, purge_id = task.task_id, "resuming a history purge a restart interrupted");
                    tokio::spawn(async move {
                        services.run_purge_task(&task.task_id, &room_id, depth, delete_local_events).await;
                    });
                }
                _ => {
                    if let Err(error) = self
                        .store
                        .finish_admin_room_task(&task.task_id, Err("interrupted by a restart"))
                        .await
                    {
                        tracing::warn!(%error, "could not mark an interrupted room task failed");
                    }
                }
            }
        }
    }

    /// The deletions of a room, oldest first (`GET /_synapse/admin/v2/rooms/{roomId}/delete_status`);
    /// `404` when there is none.
    pub async fn admin_delete_statuses(&self, room_id: &RoomId) -> Result<Vec<DeleteRoomStatus>> {
        let tasks = self.store.admin_room_tasks(room_id.as_str(), DELETE_TASK).await?;
        if tasks.is_empty() {
            return Err(
                MatrixError::not_found(format!("No delete task for room_id '{room_id}' found")).into()
            );
        }
        Ok(tasks.into_iter().map(DeleteRoomStatus::from).collect())
    }

    /// One deletion (`GET /_synapse/admin/v2/rooms/delete_status/{deleteId}`).
    pub async fn admin_delete_status(&self, delete_id: &str) -> Result<DeleteRoomStatus> {
        match self.store.admin_room_task(delete_id).await? {
            Some(task) if task.kind == DELETE_TASK => Ok(task.into()),
            _ => Err(MatrixError::not_found("delete id '{delete_id}' not found").into()),
        }
    }

    /// `GET /_synapse/admin/v1/statistics/database/rooms`: the ten largest rooms by the bytes
    /// of their events.
    pub async fn admin_database_room_stats(&self) -> Result<Vec<(String, i64)>> {
        Ok(self.store.event_bytes_per_room(10).await?)
    }
}

/// What the federation destination list can be ordered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationOrder {
    Destination,
    RetryLastTs,
    RetryInterval,
    FailureTs,
    LastSuccessfulStreamOrdering,
}

impl DestinationOrder {
    pub fn parse(name: &str) -> Option<DestinationOrder> {
        Some(match name {
            "destination" => DestinationOrder::Destination,
            "retry_last_ts" => DestinationOrder::RetryLastTs,
            "retry_interval" => DestinationOrder::RetryInterval,
            "failure_ts" => DestinationOrder::FailureTs,
            "last_successful_stream_ordering" => DestinationOrder::LastSuccessfulStreamOrdering,
            _ => return None,
        })
    }
}

/// A page of federation destinations.
#[derive(Clone, Debug)]
pub struct DestinationQuery {
    pub from: u64,
    pub limit: u64,
    pub order: DestinationOrder,
    pub forwards: bool,
    /// Part of the destination's name.
    pub search: Option<String>,
}

pub use myelin_store::federation_queue::DestinationRecord;

impl Services {
    /// `GET /_synapse/admin/v1/federation/destinations`: a page and the total.
    pub async fn admin_destinations(
        &self,
        query: &DestinationQuery,
    ) -> Result<(Vec<DestinationRecord>, u64)> {
        let mut all = self.store.federation_destinations().await?;
        if let Some(search) = &query.search {
            all.retain(|d| d.destination.contains(search.as_str()));
        }
        all.sort_by(|a, b| {
            let ordering = match query.order {
                DestinationOrder::Destination => Ordering::Equal,
                DestinationOrder::RetryLastTs => a.retry_last_ts.cmp(&b.retry_last_ts),
                DestinationOrder::RetryInterval => a.retry_interval.cmp(&b.retry_interval),
                DestinationOrder::FailureTs => by_option(&a.failure_ts, &b.failure_ts),
                // Not tracked here (always `null`), so the name decides.
                DestinationOrder::LastSuccessfulStreamOrdering => Ordering::Equal,
            }
            .then_with(|| a.destination.cmp(&b.destination));
            if query.forwards { ordering } else { ordering.reverse() }
        });
        let total = all.len() as u64;
        let page = all
            .into_iter()
            .skip(usize::try_from(query.from).unwrap_or(usize::MAX))
            .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
            .collect();
        Ok((page, total))
    }

    /// One destination, `404` when never sent to.
    pub async fn admin_destination(&self, destination: &str) -> Result<DestinationRecord> {
        self.store
            .federation_destination(destination)
            .await?
            .ok_or_else(|| MatrixError::not_found("Unknown destination").into())
    }

    /// The rooms shared with a destination: `(room ID, latest stream position)`.
    pub async fn admin_destination_rooms(&self, destination: &str) -> Result<Vec<(String, i64)>> {
        self.admin_destination(destination).await?;
        Ok(self.store.rooms_shared_with_server(destination).await?)
    }

    /// `POST .../destinations/{destination}/reset_connection`: forgets the backoff and wakes
    /// the sender, so queued work goes out now.
    pub async fn admin_reset_destination(&self, requester: &Requester, destination: &str) -> Result<()> {
        if !self.store.reset_federation_destination(destination).await? {
            return Err(MatrixError::not_found("Unknown destination").into());
        }
        self.wake_federation_sender();
        tracing::info!(admin_user = %requester.user_id, destination, "admin reset a federation destination");
        Ok(())
    }
}

/// What `GET /_synapse/admin/v1/scheduled_tasks` filters on; `None` or empty lists match all.
#[derive(Clone, Debug, Default)]
pub struct ScheduledTaskQuery {
    pub actions: Vec<String>,
    pub resource_id: Option<String>,
    pub statuses: Vec<String>,
    pub max_timestamp: Option<i64>,
}

/// Synapse's task statuses, the values `status` / `job_status` may take.
pub const TASK_STATUSES: &[&str] = &["scheduled", "active", "complete", "cancelled", "failed"];

impl Services {
    /// The admin API's background tasks in Synapse's scheduled-task shape.
    pub async fn admin_scheduled_tasks(
        &self,
        query: &ScheduledTaskQuery,
    ) -> Result<Vec<myelin_store::ScheduledTaskRecord>> {
        let mut tasks = self.store.scheduled_tasks(query.resource_id.as_deref(), query.max_timestamp).await?;
        tasks.retain(|task| {
            (query.actions.is_empty() || query.actions.iter().any(|a| a == task.action))
                && (query.statuses.is_empty() || query.statuses.contains(&task.status))
        });
        Ok(tasks)
    }
}
