//! Reporting content: an event (`/rooms/{roomId}/report/{eventId}`), a room
//! (`/rooms/{roomId}/report`) or a user (`/users/{userId}/report`), kept for the admin API
//! (`/_synapse/admin/v1/event_reports`). Every report is rate-limited by `rc_reports`.

use std::collections::HashMap;

use myelin_core::{ErrCode, MatrixError};
use myelin_store::NewReport;
use myelin_store::rooms::{EventReportRecord, EventReportsQuery};
use ruma::{EventId, RoomId, UserId};
use serde_json::Value;

use crate::auth::Requester;
use crate::ratelimit::Limiter;
use crate::{Error, Result, Services};

/// The longest reason accepted for a user report (Synapse's limit).
const MAX_USER_REPORT_REASON: usize = 1000;

/// An event report as the admin API shows it: the stored report with the room's current name
/// and canonical alias.
#[derive(Clone, Debug)]
pub struct EventReport {
    pub report: EventReportRecord,
    pub room_name: Option<String>,
    pub canonical_alias: Option<String>,
}

/// One event report in full (the admin API's single-report view): with the reported event as
/// stored, when the server still has it.
pub struct EventReportDetail {
    pub summary: EventReport,
    pub event: Option<Value>,
}

impl Services {
    /// `POST /rooms/{roomId}/report/{eventId}`: the reporter must be joined to the room and
    /// able to see the event; `M_NOT_FOUND` otherwise. `score` runs from -100 (most offensive)
    /// to 0.
    pub async fn report_event(
        &self,
        requester: &Requester,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<String>,
        score: Option<i64>,
    ) -> Result<()> {
        if let Some(score) = score
            && !(-100..=0).contains(&score)
        {
            return Err(MatrixError::invalid_param("score must be an integer between -100 and 0").into());
        }
        self.ratelimit_user(Limiter::Reports, requester).await?;
        let not_found = || {
            Error::from(MatrixError::not_found(
                "Unable to report event: it does not exist or you aren't able to see it.",
            ))
        };
        match self.get_event_for_user(requester, room_id, event_id).await {
            Ok(_) => {}
            Err(Error::Matrix(error)) if matches!(error.code, ErrCode::NotFound | ErrCode::Forbidden) => {
                return Err(not_found());
            }
            Err(error) => return Err(error),
        }
        let membership = self.store.membership(room_id.as_str(), requester.user_id.as_str()).await?;
        if membership.as_deref() != Some("join") {
            return Err(not_found());
        }
        self.store
            .insert_report(&NewReport {
                room_id: room_id.to_string(),
                event_id: Some(event_id.to_string()),
                target_user_id: None,
                user_id: requester.user_id.to_string(),
                reason,
                score,
            })
            .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/report`: any room this server knows, joined or not.
    pub async fn report_room(&self, requester: &Requester, room_id: &RoomId, reason: String) -> Result<()> {
        self.ratelimit_user(Limiter::Reports, requester).await?;
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(MatrixError::not_found("Room does not exist").into());
        }
        self.store
            .insert_report(&NewReport {
                room_id: room_id.to_string(),
                user_id: requester.user_id.to_string(),
                reason: Some(reason),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// `POST /users/{userId}/report`: `M_NOT_FOUND` for a local user who does not exist; users
    /// of other servers cannot be checked and are taken as they are.
    pub async fn report_user(&self, requester: &Requester, target: &UserId, reason: String) -> Result<()> {
        self.ratelimit_user(Limiter::Reports, requester).await?;
        if reason.chars().count() > MAX_USER_REPORT_REASON {
            return Err(MatrixError::bad_json("Reason must be less than 1000 characters").into());
        }
        if target.server_name().as_str() == self.server_name()
            && self.store.get_user(target.as_str()).await?.is_none()
        {
            return Err(MatrixError::not_found("The user was not found").into());
        }
        self.store
            .insert_report(&NewReport {
                // A user report concerns no room.
                room_id: String::new(),
                target_user_id: Some(target.to_string()),
                user_id: requester.user_id.to_string(),
                reason: Some(reason),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// `GET /_synapse/admin/v1/event_reports`: a page of event reports and how many match.
    pub async fn event_reports(&self, query: &EventReportsQuery) -> Result<(Vec<EventReport>, i64)> {
        let (records, total) = self.store.event_reports(query).await?;
        let mut rooms: HashMap<String, (Option<String>, Option<String>)> = HashMap::new();
        let mut reports = Vec::with_capacity(records.len());
        for report in records {
            let (room_name, canonical_alias) = match rooms.get(&report.room_id) {
                Some(found) => found.clone(),
                None => {
                    let found = self.room_name_and_alias(&report.room_id).await?;
                    rooms.insert(report.room_id.clone(), found.clone());
                    found
                }
            };
            reports.push(EventReport { report, room_name, canonical_alias });
        }
        Ok((reports, total))
    }

    /// `GET /_synapse/admin/v1/event_reports/{reportId}`.
    pub async fn event_report(&self, id: i64) -> Result<EventReportDetail> {
        let report = self
            .store
            .event_report(id)
            .await?
            .ok_or_else(|| MatrixError::not_found("Event report not found"))?;
        // Stored event JSON that does not parse is corrupt: an internal error, not a null.
        let event =
            report.event_json.as_deref().map(serde_json::from_str).transpose().map_err(Error::internal)?;
        let (room_name, canonical_alias) = self.room_name_and_alias(&report.room_id).await?;
        Ok(EventReportDetail { summary: EventReport { report, room_name, canonical_alias }, event })
    }

    /// A room's current `m.room.name` name and `m.room.canonical_alias` alias.
    async fn room_name_and_alias(&self, room_id: &str) -> Result<(Option<String>, Option<String>)> {
        let field = async |kind: &str, field: &str| -> Result<Option<String>> {
            let Some(event_id) = self.store.current_state_event(room_id, kind, "").await? else {
                return Ok(None);
            };
            let Some(stored) = self.store.get_event(&event_id).await? else { return Ok(None) };
            // Stored event JSON that does not parse is corrupt: an internal error, not a blank.
            let json: Value = serde_json::from_str(&stored.json).map_err(Error::internal)?;
            Ok(json["content"][field].as_str().map(str::to_owned))
        };
        Ok((field("m.room.name", "name").await?, field("m.room.canonical_alias", "alias").await?))
    }
}
