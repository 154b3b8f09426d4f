//! The joining side of room federation: a local user joins (or leaves) a room through another
//! server, and aliases of other servers are resolved through theirs.
//!
//! # Remote join
//!
//! When this server has no joined member in a room (it does not know the room, or everyone
//! local left), a join goes through a server in the room: candidates are the `via` servers,
//! the alias's server, the room ID's server (v1-v11) and the sender of the user's invite; for
//! each until one works: `make_join` (offering every room version we support), the template
//! completed, hashed and signed here ([`myelin_core::remote::complete_template`]),
//! `send_join` v2, and its answer checked: every event of `state` and `auth_chain` signed by
//! the servers the room version requires (keys fetched in parallel, at most
//! [`MAX_PARALLEL_KEY_FETCHES`] at once), its content hash valid (else kept redacted), passing
//! the authorization rules against its own auth events, the create event of the version
//! `make_join` named; the join passing them against the state. Then, in one transaction: the
//! room, the state and auth chain as outliers, the state before the join as a state group and
//! as current state, and the join through the write path with that state
//! ([`Services::stage_remote_built`]). The whole join runs on a task of its own: a dropped
//! request leaves the joined room or nothing.
//!
//! # Remote leave
//!
//! A local user leaving a room where no other local user is joined leaves through a server in
//! the room (`make_leave` / `send_leave` v2); the leave is persisted here too, on the current
//! state. If no server in the room takes it, the leave is made locally.
//!
//! # Errors, as Synapse answers them
//!
//! No candidate server: `404 M_NOT_FOUND`. A server refusing with `403`: `403 M_FORBIDDEN`
//! (the join is not allowed; the other servers would say the same). A room version we do not
//! support: `400 M_UNSUPPORTED_ROOM_VERSION`; one we were not offered:
//! `400 M_INCOMPATIBLE_ROOM_VERSION`. Every candidate failing otherwise (down, `404`, `5xx`,
//! a bad answer): `502 M_UNKNOWN` naming the last failure. A remote server's error text is
//! never passed on.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use myelin_core::pdu::Pdu;
use myelin_core::remote::{
    CheckedRoomEvents, check_against_state, check_room_events, complete_template, event_id_of,
    required_signing_keys, verify_pdu,
};
use myelin_core::{ErrCode, ErrorKind, MatrixError};
use myelin_federation::FederationError;
use myelin_store::{NewEvent, NewOutlier, RemoteBuilt, StateEntry};
use ruma::serde::Base64;
use ruma::signatures::PublicKeyMap;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomAliasId, RoomId,
    ServerName, UserId,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::Requester;
use crate::ratelimit::Limiter;
use crate::rooms::admission::ClientWrite;
use crate::rooms::membership::MembershipAction;
use crate::rooms::{HeadState, PreparedEvent, RoomHead, check_room_version};
use crate::util::{now_ms, random_string};
use crate::{Error, Result, Services};

/// The most key fetches a `send_join` answer's check runs at once.
pub const MAX_PARALLEL_KEY_FETCHES: usize = 8;

/// `make_join` / `make_leave`'s answer.
#[derive(Deserialize)]
pub(super) struct MakeMembershipResponse {
    /// Absent: room version 1 (as the spec says).
    pub(super) room_version: Option<String>,
    pub(super) event: CanonicalJsonObject,
}

/// `send_join` v2's answer.
#[derive(Deserialize)]
struct SendJoinResponse {
    #[serde(default)]
    state: Vec<CanonicalJsonObject>,
    #[serde(default)]
    auth_chain: Vec<CanonicalJsonObject>,
    /// The join as the resident server signed it too (restricted joins).
    event: Option<CanonicalJsonObject>,
}

/// `/query/directory`'s answer.
#[derive(Deserialize)]
struct DirectoryResponse {
    room_id: OwnedRoomId,
    #[serde(default)]
    servers: Vec<String>,
}

/// Why one candidate server did not work out.
pub(super) enum Attempt {
    /// Try the next server.
    Failover(String),
    /// Stop: the answer holds for every server (a refusal, an unsupported version).
    Stop(Error),
}

impl From<FederationError> for Attempt {
    fn from(error: FederationError) -> Self {
        match &error {
            FederationError::Status { status: 403, errcode, destination, .. } => Attempt::Stop(
                MatrixError::forbidden(format!(
                    "{destination} refused: {}",
                    errcode.as_deref().unwrap_or("M_FORBIDDEN")
                ))
                .into(),
            ),
            FederationError::Status { status: 400, errcode: Some(code), destination, .. }
                if code == "M_INCOMPATIBLE_ROOM_VERSION" =>
            {
                Attempt::Stop(
                    MatrixError::new(
                        ErrCode::IncompatibleRoomVersion,
                        format!("{destination} says the room's version is not one this server supports"),
                    )
                    .into(),
                )
            }
            _ => Attempt::Failover(error.to_string()),
        }
    }
}

/// A path of the federation API, each segment percent-encoded.
pub(super) fn federation_path(segments: &[&str], query: &[(&str, &str)]) -> Result<String> {
    let mut url = url::Url::parse("http://federation.invalid/").map_err(Error::internal)?;
    url.path_segments_mut().map_err(|()| Error::internal("cannot build a federation path"))?.extend(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    })
}

fn string_of<'a>(json: &'a CanonicalJsonObject, key: &str) -> Option<&'a str> {
    match json.get(key) {
        Some(CanonicalJsonValue::String(value)) => Some(value),
        _ => None,
    }
}

/// Checks a `make_join` / `make_leave` template is the member event asked for.
pub(super) fn check_template(
    template: &CanonicalJsonObject,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &str,
) -> std::result::Result<(), String> {
    let membership_of = match template.get("content") {
        Some(CanonicalJsonValue::Object(content)) => string_of(content, "membership"),
        _ => None,
    };
    let fits = string_of(template, "type") == Some("m.room.member")
        && string_of(template, "state_key") == Some(user_id.as_str())
        && string_of(template, "sender") == Some(user_id.as_str())
        && string_of(template, "room_id") == Some(room_id.as_str())
        && membership_of == Some(membership);
    if fits {
        Ok(())
    } else {
        Err(format!("the {membership} template is not {user_id}'s {membership} in {room_id}"))
    }
}

/// The record of an event another server built, as the write path persists it.
pub(super) fn remote_new_event(
    pdu: &Pdu,
    state_before: Option<i64>,
    replaces_state: Option<String>,
) -> NewEvent {
    let content = pdu.content_value();
    NewEvent {
        event_id: pdu.event_id.to_string(),
        room_id: pdu.room_id.to_string(),
        stream_ordering: 0,
        depth: i64::try_from(pdu.depth).unwrap_or(i64::MAX),
        sender: pdu.sender.to_string(),
        kind: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        origin_server_ts: i64::from(pdu.origin_server_ts.get()),
        json: pdu.json_string(),
        prev_events: pdu.prev_events.iter().map(|id| id.to_string()).collect(),
        state_before,
        replaces_state,
        membership: content.get("membership").and_then(Value::as_str).map(str::to_owned),
        relation: None,
        contains_url: false,
        txn: None,
        redaction: None,
        new_room: None,
        // The resident server sends a join or leave it accepts on to the room's other servers.
        federation_destinations: Vec::new(),
        remote: None,
    }
}

pub(super) fn outlier_of(pdu: &Pdu) -> NewOutlier {
    NewOutlier {
        event_id: pdu.event_id.to_string(),
        room_id: pdu.room_id.to_string(),
        depth: i64::try_from(pdu.depth).unwrap_or(i64::MAX),
        sender: pdu.sender.to_string(),
        kind: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        origin_server_ts: i64::from(pdu.origin_server_ts.get()),
        json: pdu.json_string(),
    }
}

/// A member event's membership.
fn membership_of(pdu: &Pdu) -> Option<String> {
    (pdu.kind.to_string() == "m.room.member")
        .then(|| pdu.content_value().get("membership").and_then(Value::as_str).map(str::to_owned))
        .flatten()
}

/// A checked `send_join` answer with the join event to persist.
struct JoinAnswer {
    checked: CheckedRoomEvents,
    join: Pdu,
}

impl Services {
    /// Where a local user's join goes: `None` when this server has a joined member in the
    /// room (the join is made here), else the servers to ask, in order (`via`, the alias's
    /// servers, the room ID's server, the user's inviter's server; never this one).
    pub(crate) async fn remote_join_servers(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        alias_servers: &[OwnedServerName],
    ) -> Result<Option<Vec<OwnedServerName>>> {
        let head = self.room_head_snapshot(room_id).await?;
        let mut servers: Vec<OwnedServerName> = via.iter().chain(alias_servers).cloned().collect();
        if let Some(head) = &head {
            if !self.local_room_members_joined(head).await?.is_empty() {
                return Ok(None);
            }
            if let Some(member) = self.current_state_pdu(head, "m.room.member", user_id.as_str()).await?
                && membership_of(&member).as_deref() == Some("invite")
            {
                servers.push(member.sender.server_name().to_owned());
            }
        }
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        servers.retain(|server| server.as_str() != self.server_name() && seen.insert(server.clone()));
        Ok(Some(servers))
    }

    /// The local users joined to a room (from its current state).
    async fn local_room_members_joined(&self, head: &RoomHead) -> Result<Vec<String>> {
        Ok(self
            .store
            .room_members(head.room_id.as_str(), "join")
            .await?
            .into_iter()
            .filter(|member| {
                UserId::parse(member).is_ok_and(|user| user.server_name().as_str() == self.server_name())
            })
            .collect())
    }

    /// A local user joins a room through other servers (see the module doc). Runs on a task
    /// of its own. `false`: another local user joined the room meanwhile, so the join is to be
    /// made here.
    pub(crate) async fn remote_join(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        servers: Vec<OwnedServerName>,
        reason: Option<&str>,
    ) -> Result<bool> {
        let write = ClientWrite::Membership { action: MembershipAction::Join, room_id };
        self.admit_client_write(requester, write).await?;
        if servers.is_empty() {
            return Err(MatrixError::not_found("No known servers").into());
        }
        self.ratelimit_user(Limiter::JoinsRemote, requester).await?;
        let complexity = self.check_remote_room_complexity(requester, room_id, &servers).await?;
        let mut content = Map::new();
        let profile = self.store.get_profile(requester.user_id.as_str()).await?;
        for key in ["displayname", "avatar_url"] {
            if let Some(value) = profile.get(key).filter(|v| v.is_string()) {
                content.insert(key.to_owned(), value.clone());
            }
        }
        if let Some(reason) = reason {
            content.insert("reason".to_owned(), Value::from(reason));
        }
        let services = self.clone();
        let room_id_of_join = room_id;
        let (room_id, user_id) = (room_id.to_owned(), requester.user_id.clone());
        let joined = tokio::spawn(async move {
            services.remote_join_to_completion(&room_id, &user_id, servers, content).await
        })
        .await
        .map_err(Error::internal)??;
        if joined && complexity == super::complexity::ComplexityCheck::Unknown {
            self.check_joined_room_complexity(requester, room_id_of_join).await?;
        }
        Ok(joined)
    }

    async fn remote_join_to_completion(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        servers: Vec<OwnedServerName>,
        content: Map<String, Value>,
    ) -> Result<bool> {
        // Joins of one room (and local sends to it) wait for each other.
        let mut guard = self.lock_room_for_write(room_id).await?;
        if let Some(head) = guard.as_ref()
            && !self.local_room_members_joined(head).await?.is_empty()
        {
            // Another local user joined meanwhile: the join can be made here.
            return Ok(false);
        }
        let mut last_failure = String::from("no server answered");
        for server in &servers {
            match self.try_join_via(server, room_id, user_id, &content).await {
                Ok((version, answer)) => {
                    let staged = self.persist_remote_join(&mut guard, room_id, version, answer).await?;
                    drop(guard);
                    self.finish_staged(staged, None).await?;
                    tracing::info!(%room_id, %user_id, %server, "joined a room over federation");
                    return Ok(true);
                }
                Err(Attempt::Stop(error)) => return Err(error),
                Err(Attempt::Failover(reason)) => {
                    tracing::info!(%room_id, %server, %reason, "could not join through this server");
                    last_failure = format!("{server}: {reason}");
                }
            }
        }
        Err(MatrixError::unknown(format!("Failed to join {room_id} via any server (last: {last_failure})"))
            .with_kind(ErrorKind::BadGateway)
            .into())
    }

    /// `make_join`, the event completed and signed, `send_join`, the answer checked.
    async fn try_join_via(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        content: &Map<String, Value>,
    ) -> std::result::Result<(String, JoinAnswer), Attempt> {
        let versions: Vec<(&str, &str)> =
            myelin_core::room_version::SUPPORTED_ROOM_VERSIONS.iter().map(|v| ("ver", *v)).collect();
        let path = federation_path(
            &["_matrix", "federation", "v1", "make_join", room_id.as_str(), user_id.as_str()],
            &versions,
        )
        .map_err(Attempt::Stop)?;
        let template: MakeMembershipResponse = self.federation.client.get_json(server, &path).await?;
        let version = template.room_version.unwrap_or_else(|| "1".to_owned());
        let (_, rules) = check_room_version(&version).map_err(Attempt::Stop)?;
        let join = self.sign_member_template(template.event, &rules, room_id, user_id, "join", content)?;
        let path = federation_path(
            &["_matrix", "federation", "v2", "send_join", room_id.as_str(), join.event_id.as_str()],
            &[],
        )
        .map_err(Attempt::Stop)?;
        let answer: SendJoinResponse = self.federation.client.put_json(server, &path, &join.json()).await?;
        let answer = self
            .check_send_join_answer(&rules, room_id, &version, join, answer)
            .await
            .map_err(|reason| Attempt::Failover(format!("refused its send_join answer: {reason}")))?;
        Ok((version, answer))
    }

    /// The keys that verify `events`, fetched in parallel (this server's own from memory).
    async fn signing_keys_for(
        &self,
        events: &[&CanonicalJsonObject],
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> std::result::Result<PublicKeyMap, String> {
        // Each key is asked for once, for the oldest event it must verify.
        let mut wanted: BTreeMap<(OwnedServerName, String), i64> = BTreeMap::new();
        for event in events {
            let ts = match event.get("origin_server_ts") {
                Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
                _ => return Err("an event has no origin_server_ts".to_owned()),
            };
            for key in required_signing_keys(event, rules)? {
                let entry = wanted.entry(key).or_insert(ts);
                *entry = (*entry).min(ts);
            }
        }
        let fetched: Vec<(OwnedServerName, String, Option<String>)> = futures_util::stream::iter(wanted)
            .map(|((server, key_id), ts)| async move {
                let key = if server.as_str() == self.server_name() {
                    (key_id == self.keys.key_id()).then(|| self.keys.public_key().to_owned())
                } else {
                    match self.federation.keys.verify_key(&server, &key_id, ts).await {
                        Ok(key) => key,
                        Err(error) => {
                            tracing::warn!(%server, %key_id, %error, "could not look up a server key");
                            None
                        }
                    }
                };
                (server, key_id, key)
            })
            .buffer_unordered(MAX_PARALLEL_KEY_FETCHES)
            .collect()
            .await;
        let mut map = PublicKeyMap::new();
        for (server, key_id, key) in fetched {
            let Some(key) = key else { continue };
            let key = Base64::parse(&key).map_err(|e| format!("bad key {key_id} of {server}: {e}"))?;
            map.entry(server.to_string()).or_default().insert(key_id, key);
        }
        Ok(map)
    }

    /// Checks a `send_join` answer (see [`myelin_core::remote::check_room_events`]) and the
    /// join it returns (ours, perhaps signed by the resident server too).
    async fn check_send_join_answer(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        room_id: &RoomId,
        version: &str,
        join: Pdu,
        answer: SendJoinResponse,
    ) -> std::result::Result<JoinAnswer, String> {
        let returned_join = match answer.event {
            Some(event) => {
                if event_id_of(&event, rules)? != join.event_id {
                    return Err("the join it returned is not ours".to_owned());
                }
                Some(event)
            }
            None => None,
        };
        let all: Vec<&CanonicalJsonObject> =
            answer.state.iter().chain(&answer.auth_chain).chain(returned_join.as_ref()).collect();
        let keys = self.signing_keys_for(&all, rules).await?;
        let verify = |events: Vec<CanonicalJsonObject>| -> std::result::Result<Vec<Pdu>, String> {
            events.into_iter().map(|event| verify_pdu(event, rules, &keys)).collect()
        };
        let state = verify(answer.state)?;
        let auth_chain = verify(answer.auth_chain)?;
        let join = match returned_join {
            Some(event) => verify_pdu(event, rules, &keys)?,
            None => join,
        };
        let checked = check_room_events(rules, room_id, version, state, auth_chain)?;
        let mut events = checked.events.clone();
        events.insert(join.event_id.clone(), join.clone());
        check_against_state(rules, &join, &checked.state, &events)?;
        Ok(JoinAnswer { checked, join })
    }

    /// Persists a checked join in one transaction (see the module doc) and makes the room's
    /// head the state after it. The caller finishes the staged join once the room is released.
    async fn persist_remote_join(
        &self,
        guard: &mut crate::rooms::RoomWriteGuard<'_>,
        room_id: &RoomId,
        version: String,
        answer: JoinAnswer,
    ) -> Result<crate::rooms::write::StagedEvents> {
        let JoinAnswer { checked, join } = answer;
        let (version_id, rules) = check_room_version(&version)?;
        let mut state = HeadState::new();
        let mut entries = Vec::with_capacity(checked.state.len());
        for ((kind, state_key), event_id) in &checked.state {
            state.insert((kind.clone(), state_key.clone()), event_id.clone());
            entries.push(StateEntry {
                kind: kind.clone(),
                state_key: state_key.clone(),
                event_id: event_id.to_string(),
                membership: checked.events.get(event_id).and_then(membership_of),
            });
        }
        let outliers: Vec<NewOutlier> = checked
            .order
            .iter()
            .filter(|id| **id != join.event_id)
            .filter_map(|id| checked.events.get(id))
            .map(outlier_of)
            .collect();
        let replaces_state = join
            .state_key
            .as_ref()
            .and_then(|key| checked.state.get(&("m.room.member".to_owned(), key.clone())))
            .map(|id| id.to_string());
        let event = remote_new_event(&join, None, replaces_state);
        let mut head = RoomHead {
            room_id: room_id.to_owned(),
            version: version_id,
            rules,
            state,
            state_group: None,
            extremities: join.prev_events.clone(),
            depth: join.depth.saturating_sub(1),
        };
        let remote = RemoteBuilt { room_version: Some(version), outliers, state_before: Some(entries) };
        let prepared = PreparedEvent { pdu: Arc::new(join), event, redacted: None, next_head: None };
        let staged = self.stage_remote_built(&mut head, prepared, &remote).await?;
        **guard = Some(head);
        Ok(staged)
    }

    /// The servers a local user's leave goes through: `None` when the leave is made here (another
    /// local user is joined, or no other server has a joined member).
    pub(crate) async fn remote_leave_servers(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<Vec<OwnedServerName>>> {
        let Some(head) = self.room_head_snapshot(room_id).await? else { return Ok(None) };
        let mut servers = Vec::new();
        for member in self.store.room_members(room_id.as_str(), "join").await? {
            let Ok(member) = UserId::parse(&member) else { continue };
            if member.server_name().as_str() == self.server_name() {
                if member != user_id {
                    return Ok(None);
                }
            } else if !servers.iter().any(|s: &OwnedServerName| s == member.server_name()) {
                servers.push(member.server_name().to_owned());
            }
        }
        if let Some(member) = self.current_state_pdu(&head, "m.room.member", user_id.as_str()).await?
            && membership_of(&member).as_deref() == Some("invite")
            && member.sender.server_name().as_str() != self.server_name()
            && !servers.iter().any(|s| s == member.sender.server_name())
        {
            servers.insert(0, member.sender.server_name().to_owned());
        }
        Ok((!servers.is_empty()).then_some(servers))
    }

    /// A local user leaves through another server (see the module doc); returns the leave, or
    /// `None` when no server took it (the caller then leaves locally). Runs on a task of its
    /// own.
    pub(crate) async fn remote_leave(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        servers: Vec<OwnedServerName>,
        reason: Option<&str>,
    ) -> Result<Option<OwnedEventId>> {
        let services = self.clone();
        let (room_id, user_id, reason) = (room_id.to_owned(), user_id.to_owned(), reason.map(str::to_owned));
        tokio::spawn(async move {
            services.remote_leave_to_completion(&room_id, &user_id, servers, reason.as_deref()).await
        })
        .await
        .map_err(Error::internal)?
    }

    async fn remote_leave_to_completion(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        servers: Vec<OwnedServerName>,
        reason: Option<&str>,
    ) -> Result<Option<OwnedEventId>> {
        for server in &servers {
            let leave = match self.try_leave_via(server, room_id, user_id, reason).await {
                Ok(leave) => leave,
                Err(Attempt::Stop(error)) => return Err(error),
                Err(Attempt::Failover(reason)) => {
                    tracing::info!(%room_id, %server, %reason, "could not leave through this server");
                    continue;
                }
            };
            let mut guard = self.lock_room_for_write(room_id).await?;
            let Some(head) = guard.as_mut() else {
                return Err(MatrixError::not_found("Unknown room").into());
            };
            let replaces_state =
                head.state_event_id("m.room.member", user_id.as_str()).map(|id| id.to_string());
            let event = remote_new_event(&leave, head.state_group, replaces_state);
            let event_id = leave.event_id.clone();
            let prepared = PreparedEvent { pdu: Arc::new(leave), event, redacted: None, next_head: None };
            let staged = self.stage_remote_built(head, prepared, &RemoteBuilt::default()).await?;
            drop(guard);
            self.finish_staged(staged, None).await?;
            tracing::info!(%room_id, %user_id, %server, "left a room over federation");
            return Ok(Some(event_id));
        }
        Ok(None)
    }

    /// `make_leave`, the event completed and signed, `send_leave` v2.
    async fn try_leave_via(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
    ) -> std::result::Result<Pdu, Attempt> {
        let path = federation_path(
            &["_matrix", "federation", "v1", "make_leave", room_id.as_str(), user_id.as_str()],
            &[],
        )
        .map_err(Attempt::Stop)?;
        let template: MakeMembershipResponse = self.federation.client.get_json(server, &path).await?;
        let version = template.room_version.unwrap_or_else(|| "1".to_owned());
        let (_, rules) = check_room_version(&version).map_err(Attempt::Stop)?;
        let mut content = Map::new();
        if let Some(reason) = reason {
            content.insert("reason".to_owned(), Value::String(reason.to_owned()));
        }
        let leave = self.sign_member_template(template.event, &rules, room_id, user_id, "leave", &content)?;
        let path = federation_path(
            &["_matrix", "federation", "v2", "send_leave", room_id.as_str(), leave.event_id.as_str()],
            &[],
        )
        .map_err(Attempt::Stop)?;
        let _: Value = self.federation.client.put_json(server, &path, &leave.json()).await?;
        Ok(leave)
    }

    /// An alias of another server, through its `/query/directory`: the room and the servers
    /// that know it. `404 M_NOT_FOUND` when that server says so; `502 M_UNKNOWN` when it
    /// cannot be asked.
    pub(crate) async fn remote_room_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let path = federation_path(
            &["_matrix", "federation", "v1", "query", "directory"],
            &[("room_alias", alias.as_str())],
        )?;
        let answer: std::result::Result<DirectoryResponse, FederationError> =
            self.federation.client.get_json(alias.server_name(), &path).await;
        match answer {
            Ok(answer) => {
                let mut servers: Vec<OwnedServerName> =
                    answer.servers.iter().filter_map(|s| ServerName::parse(s).ok()).collect();
                if !servers.iter().any(|s| s == alias.server_name()) {
                    servers.insert(0, alias.server_name().to_owned());
                }
                Ok((answer.room_id, servers))
            }
            Err(FederationError::Status { status: 404, .. }) => {
                Err(MatrixError::not_found(format!("Room alias {alias} not found")).into())
            }
            Err(FederationError::Denied { destination }) => {
                Err(MatrixError::forbidden(format!("Federation denied with {destination}.")).into())
            }
            Err(error) => {
                tracing::info!(%alias, %error, "could not resolve a remote alias");
                Err(MatrixError::unknown(format!("Failed to query the directory of {}", alias.server_name()))
                    .with_kind(ErrorKind::BadGateway)
                    .into())
            }
        }
    }

    /// A room ID, or the room an alias (of this server or another) points to, with the
    /// servers the alias's server named (none for a room ID or a local alias).
    pub(crate) async fn resolve_join_target(
        &self,
        id_or_alias: &str,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        if id_or_alias.starts_with('#')
            && let Ok(alias) = RoomAliasId::parse(id_or_alias)
            && alias.server_name().as_str() != self.server_name()
        {
            return self.remote_room_alias(&alias).await;
        }
        Ok((self.resolve_room_or_alias(id_or_alias).await?, Vec::new()))
    }
}

impl Services {
    /// A `make_join` / `make_leave` / `make_knock` template checked to be the member event
    /// asked for, `content` merged into its content, completed and signed by this server.
    pub(super) fn sign_member_template(
        &self,
        mut event: CanonicalJsonObject,
        rules: &ruma::room_version_rules::RoomVersionRules,
        room_id: &RoomId,
        user_id: &UserId,
        membership: &str,
        content: &Map<String, Value>,
    ) -> Result<Pdu, Attempt> {
        check_template(&event, room_id, user_id, membership).map_err(Attempt::Failover)?;
        if let Some(CanonicalJsonValue::Object(template_content)) = event.get_mut("content") {
            for (key, value) in content {
                let value =
                    serde_json::from_value(value.clone()).map_err(|e| Attempt::Stop(Error::internal(e)))?;
                template_content.insert(key.clone(), value);
            }
        }
        complete_template(
            event,
            rules,
            self.server_name(),
            self.keys.key_pair(),
            now_ms(),
            &random_string(18),
        )
        .map_err(|reason| Attempt::Failover(format!("bad {membership} template: {reason}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_paths_encode_each_segment() {
        let path = federation_path(
            &["_matrix", "federation", "v1", "make_join", "!room:a.test", "@u/x:b.test"],
            &[("ver", "10"), ("ver", "11")],
        )
        .unwrap();
        assert_eq!(path, "/_matrix/federation/v1/make_join/!room:a.test/@u%2Fx:b.test?ver=10&ver=11");
    }

    #[test]
    fn templates_must_be_the_membership_asked_for() {
        let room = RoomId::parse("!room:a.test").unwrap();
        let user = UserId::parse("@u:b.test").unwrap();
        let template: CanonicalJsonObject = serde_json::from_value(serde_json::json!({
            "type": "m.room.member", "state_key": "@u:b.test", "sender": "@u:b.test",
            "room_id": "!room:a.test", "content": {"membership": "join"}
        }))
        .unwrap();
        assert!(check_template(&template, &room, &user, "join").is_ok());
        assert!(check_template(&template, &room, &user, "leave").is_err());
        let other = UserId::parse("@v:b.test").unwrap();
        assert!(check_template(&template, &room, &other, "join").is_err());
    }
}
