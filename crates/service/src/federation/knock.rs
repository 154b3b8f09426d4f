//! Knocks over federation, both sides, and the leaves that answer a knock or rescind an invite
//! of a local user in a room this server is not in.
//!
//! # Resident side
//!
//! `make_knock` builds the knock on the room's head like `make_join` (the origin must support
//! the room's version, `400 M_INCOMPATIBLE_ROOM_VERSION`; the version must have knocking,
//! 7 and later, else `403`; the join rule must be `knock` or `knock_restricted`, which the
//! authorization rules check, `403`). `send_knock` takes the signed knock through the one
//! write path for remote events and answers `knock_room_state`: the room's stripped state.
//!
//! # Knocking side
//!
//! A local user knocking on a room where no local user is joined knocks through a server in
//! it (`via`, the alias's servers, the room ID's server): `make_knock` (offering every version
//! we support), the template completed and signed here, `send_knock`; the knock is then
//! persisted with the `knock_room_state` ([`Services::store_remote_membership`]), so that
//! `/sync` lists the room under `rooms.knock` with `knock_state`. A room admin accepts by
//! inviting the knocker (an invite over federation) or denies by a leave.
//!
//! # Out-of-band leaves
//!
//! The leave that denies a knock (or rescinds an invite) is sent to the knocker's server with
//! the room's other events, but that server is in no position to authorise it: it holds only
//! its user's knock or invite. As Synapse does for a rescinded invite, such a leave is taken
//! when the local user's current membership is that knock or invite, the leave names it among
//! its auth events, and (for an invite) its sender is the inviter; its signatures are checked
//! like any PDU's. It is persisted like the knock or invite was.

use myelin_core::pdu::Pdu;
use myelin_core::{ErrCode, ErrorKind, MatrixError};
use ruma::{EventId, OwnedServerName, RoomId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::invite::parse_stripped_state;
use super::join::{Attempt, MakeMembershipResponse, federation_path};
use super::membership::MembershipTemplate;
use super::pdu::{CheckedPdu, PduOutcome};
use crate::auth::Requester;
use crate::ratelimit::Limiter;
use crate::rooms::admission::ClientWrite;
use crate::rooms::check_room_version;
use crate::rooms::membership::MembershipAction;
use crate::sync::StrippedStateEvent;
use crate::{Error, Result, Services};

/// `send_knock`'s answer.
#[derive(Deserialize)]
struct SendKnockResponse {
    #[serde(default)]
    knock_room_state: Vec<Value>,
}

/// A knock sent and accepted by a server in the room.
struct KnockAnswer {
    version: String,
    knock: Pdu,
    stripped: Vec<StrippedStateEvent>,
}

impl Services {
    /// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}` (see the module doc).
    pub async fn make_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        supported_versions: &[String],
    ) -> Result<MembershipTemplate> {
        self.check_server_acl(origin, room_id).await?;
        let Some((version, rules)) = self.room_rules(room_id).await? else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        if !supported_versions.iter().any(|v| v == version.as_str()) {
            return Err(MatrixError::new(
                ErrCode::IncompatibleRoomVersion,
                format!(
                    "Your homeserver does not support the features required to knock on this room (version {version})"
                ),
            )
            .with_extra("room_version", version.as_str())
            .into());
        }
        if !rules.authorization.knocking {
            return Err(MatrixError::forbidden("This room version does not support knocking").into());
        }
        self.membership_template(origin, room_id, user_id, "knock").await
    }

    /// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`: the knock through the write
    /// path; returns the room's stripped state.
    pub async fn send_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        event: &Value,
    ) -> Result<Vec<Value>> {
        self.check_server_acl(origin, room_id).await?;
        let Some((_, rules)) = self.room_rules(room_id).await? else {
            return Err(MatrixError::not_found("Unknown room").into());
        };
        if !rules.authorization.knocking {
            return Err(MatrixError::forbidden("This room version does not support knocking").into());
        }
        self.receive_membership(origin, room_id, event_id, event, "knock").await?;
        let head = self.known_room(room_id).await?;
        self.prejoin_state(&head, None).await
    }

    /// A local user knocks through other servers (see the module doc). Runs on a task of its
    /// own.
    pub(crate) async fn remote_knock(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        servers: Vec<OwnedServerName>,
        reason: Option<&str>,
    ) -> Result<()> {
        let write = ClientWrite::Membership { action: MembershipAction::Knock, room_id };
        self.admit_client_write(requester, write).await?;
        if servers.is_empty() {
            return Err(MatrixError::not_found("No known servers").into());
        }
        self.ratelimit_user(Limiter::JoinsRemote, requester).await?;
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
        let (room_id, user_id) = (room_id.to_owned(), requester.user_id.clone());
        tokio::spawn(async move {
            let mut last_failure = String::from("no server answered");
            for server in &servers {
                match services.try_knock_via(server, &room_id, &user_id, &content).await {
                    Ok(KnockAnswer { version, knock, stripped }) => {
                        services.store_remote_membership(&room_id, &version, knock, Some(&stripped)).await?;
                        tracing::info!(%room_id, %user_id, %server, "knocked on a room over federation");
                        return Ok(());
                    }
                    Err(Attempt::Stop(error)) => return Err(error),
                    Err(Attempt::Failover(reason)) => {
                        tracing::info!(%room_id, %server, %reason, "could not knock through this server");
                        last_failure = format!("{server}: {reason}");
                    }
                }
            }
            Err(MatrixError::unknown(format!(
                "Failed to knock on {room_id} via any server (last: {last_failure})"
            ))
            .with_kind(ErrorKind::BadGateway)
            .into())
        })
        .await
        .map_err(Error::internal)?
    }

    /// `make_knock`, the event completed and signed, `send_knock`.
    async fn try_knock_via(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        content: &Map<String, Value>,
    ) -> std::result::Result<KnockAnswer, Attempt> {
        let versions: Vec<(&str, &str)> =
            myelin_core::room_version::SUPPORTED_ROOM_VERSIONS.iter().map(|v| ("ver", *v)).collect();
        let path = federation_path(
            &["_matrix", "federation", "v1", "make_knock", room_id.as_str(), user_id.as_str()],
            &versions,
        )
        .map_err(Attempt::Stop)?;
        let template: MakeMembershipResponse = self.federation.client.get_json(server, &path).await?;
        let version = template.room_version.unwrap_or_else(|| "1".to_owned());
        let (_, rules) = check_room_version(&version).map_err(Attempt::Stop)?;
        if !rules.authorization.knocking {
            return Err(Attempt::Stop(
                MatrixError::forbidden("This room version does not support knocking").into(),
            ));
        }
        let knock = self.sign_member_template(template.event, &rules, room_id, user_id, "knock", content)?;
        let path = federation_path(
            &["_matrix", "federation", "v1", "send_knock", room_id.as_str(), knock.event_id.as_str()],
            &[],
        )
        .map_err(Attempt::Stop)?;
        let answer: SendKnockResponse = self.federation.client.put_json(server, &path, &knock.json()).await?;
        let stripped = parse_stripped_state(room_id, &answer.knock_room_state)
            .map_err(|error| Attempt::Failover(format!("bad knock_room_state: {error}")))?;
        Ok(KnockAnswer { version, knock, stripped })
    }

    /// A PDU from a server with no member in the room: taken only as an out-of-band leave
    /// (see the module doc), else refused as before (`403`).
    pub(crate) async fn receive_out_of_band_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        json: &Value,
    ) -> Result<PduOutcome> {
        let refused = || -> Error { MatrixError::forbidden("The origin has no member in the room").into() };
        let field = |name: &str| json.get(name).and_then(Value::as_str);
        let membership = json.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str);
        let Some(target) = field("state_key").and_then(|key| UserId::parse(key).ok()) else {
            return Err(refused());
        };
        if field("type") != Some("m.room.member")
            || membership != Some("leave")
            || target.server_name().as_str() != self.server_name()
            || field("sender") == Some(target.as_str())
        {
            return Err(refused());
        }
        let Some((version, rules)) = self.room_rules(room_id).await? else { return Err(refused()) };
        if self.server_in_room(self.own_server_name()?, room_id).await? {
            return Err(refused());
        }
        let head = self.known_room(room_id).await?;
        let Some(current) = self.current_state_pdu(&head, "m.room.member", target.as_str()).await? else {
            return Err(refused());
        };
        let current_membership =
            current.content_value().get("membership").and_then(Value::as_str).map(str::to_owned);
        let CheckedPdu { pdu } = self.check_remote_pdu(room_id, &rules, json).await?;
        if self.store.get_event(pdu.event_id.as_str()).await?.is_some() {
            return Ok(PduOutcome::AlreadyKnown(pdu.event_id));
        }
        let fits = pdu.sender.server_name() == origin
            && pdu.auth_events.contains(&current.event_id)
            && match current_membership.as_deref() {
                Some("invite") => pdu.sender == current.sender,
                Some("knock") => true,
                _ => false,
            };
        if !fits {
            return Err(refused());
        }
        let event_id = pdu.event_id.clone();
        self.store_remote_membership(room_id, version.as_str(), pdu, None).await?;
        tracing::info!(%room_id, %target, %origin, "took an out-of-band leave of a local user");
        Ok(PduOutcome::Accepted(event_id))
    }
}
