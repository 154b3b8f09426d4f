//! The admin API's user list (`/_synapse/admin/v2/users`): filters, ordering and pagination as
//! Synapse's `get_users_paginate`: a count, the page's user IDs, then the page's fields.

use crate::{Store, StoreError, Value, params};

/// What the user list can be ordered by (Synapse's `order_by` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserOrder {
    Name,
    DisplayName,
    Guest,
    Admin,
    Deactivated,
    UserType,
    AvatarUrl,
    ShadowBanned,
    CreationTs,
    LastSeenTs,
    Locked,
}

impl UserOrder {
    /// Synapse's name for the order (`order_by`), or `None` for an unknown one.
    pub fn parse(name: &str) -> Option<UserOrder> {
        Some(match name {
            "name" => UserOrder::Name,
            "displayname" => UserOrder::DisplayName,
            "is_guest" => UserOrder::Guest,
            "admin" => UserOrder::Admin,
            "deactivated" => UserOrder::Deactivated,
            "user_type" => UserOrder::UserType,
            "avatar_url" => UserOrder::AvatarUrl,
            "shadow_banned" => UserOrder::ShadowBanned,
            "creation_ts" => UserOrder::CreationTs,
            "last_seen_ts" => UserOrder::LastSeenTs,
            "locked" => UserOrder::Locked,
            _ => return None,
        })
    }

    /// Whether the column is never NULL (no NULLS clause then, so that SQLite can order by
    /// an index).
    fn not_null(self) -> bool {
        !matches!(
            self,
            UserOrder::DisplayName | UserOrder::UserType | UserOrder::AvatarUrl | UserOrder::LastSeenTs
        )
    }

    fn column(self) -> &'static str {
        match self {
            UserOrder::Name => "u.user_id",
            UserOrder::DisplayName => "dn.value",
            UserOrder::Guest => "u.is_guest",
            UserOrder::Admin => "u.admin",
            UserOrder::Deactivated => "u.deactivated",
            UserOrder::UserType => "u.user_type",
            UserOrder::AvatarUrl => "av.value",
            UserOrder::ShadowBanned => "u.shadow_banned",
            UserOrder::CreationTs => "u.created_ts",
            UserOrder::LastSeenTs => LAST_SEEN,
            UserOrder::Locked => "u.locked",
        }
    }
}

/// The filters of a user list page.
#[derive(Clone, Debug)]
pub struct UserListQuery {
    pub from: i64,
    pub limit: i64,
    /// Part of the user ID.
    pub user_id: Option<String>,
    /// Part of the localpart or of the display name (case-insensitive); wins over `user_id`.
    pub name: Option<String>,
    /// Include guests.
    pub guests: bool,
    /// Only deactivated (`Some(true)`) or only active (`Some(false)`) users.
    pub deactivated: Option<bool>,
    /// Only admins (`Some(true)`) or only non-admins.
    pub admins: Option<bool>,
    /// Include locked users.
    pub locked: bool,
    /// User types to leave out (`""` for users without a type).
    pub not_user_types: Vec<String>,
    pub order: UserOrder,
    pub forwards: bool,
}

/// One user of the list, with Synapse's fields.
#[derive(Clone, Debug, PartialEq)]
pub struct UserListEntry {
    pub user_id: String,
    pub user_type: Option<String>,
    pub is_guest: bool,
    pub admin: bool,
    pub deactivated: bool,
    pub shadow_banned: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub creation_ts: i64,
    pub approved: bool,
    pub erased: bool,
    pub last_seen_ts: Option<i64>,
    pub locked: bool,
}

/// The user's latest use of any of its devices (by the `devices` key, for one user at a time).
const LAST_SEEN: &str = "(SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id)";

const DISPLAYNAME_JOIN: &str =
    "LEFT JOIN profile_fields dn ON dn.user_id = u.user_id AND dn.field = 'displayname'";
const AVATAR_JOIN: &str = "LEFT JOIN profile_fields av ON av.user_id = u.user_id AND av.field = 'avatar_url'";

/// A profile field as stored (a JSON value) read as a string, if it is one.
fn json_string(text: Option<String>) -> Option<String> {
    text.and_then(|text| match serde_json::from_str(&text) {
        Ok(serde_json::Value::String(value)) => Some(value),
        _ => None,
    })
}

impl Store {
    /// One page of local users and how many match the filters in all.
    pub async fn list_users(&self, query: &UserListQuery) -> Result<(Vec<UserListEntry>, i64), StoreError> {
        let mut conditions = vec!["TRUE".to_owned()];
        let mut params: Vec<Value> = Vec::new();
        let param = |params: &mut Vec<Value>, value: Value| {
            params.push(value);
            format!("${}", params.len())
        };
        if let Some(name) = query.name.as_deref().filter(|n| !n.is_empty()) {
            let lower = name.to_lowercase();
            let localpart = param(&mut params, format!("@{}:%", crate::like_contains(&lower)).into());
            let display = param(&mut params, crate::like_contains(&lower).into());
            let user_id = crate::like_lowered(self.db.dialect(), "u.user_id");
            let value = crate::like_lowered(self.db.dialect(), "p.value");
            conditions.push(format!(
                // The display names matched by one pass over them, not a lookup per user.
                "({user_id} LIKE {localpart} ESCAPE '\\' OR u.user_id IN (SELECT p.user_id FROM profile_fields p
                    WHERE p.field = 'displayname' AND {value} LIKE {display} ESCAPE '\\'))"
            ));
        } else if let Some(user_id) = query.user_id.as_deref().filter(|u| !u.is_empty()) {
            let pattern = param(&mut params, crate::like_contains(user_id).into());
            conditions.push(format!("u.user_id LIKE {pattern} ESCAPE '\\'"));
        }
        if !query.guests {
            conditions.push("NOT u.is_guest".to_owned());
        }
        match query.deactivated {
            Some(true) => conditions.push("u.deactivated".to_owned()),
            Some(false) => conditions.push("NOT u.deactivated".to_owned()),
            None => {}
        }
        if !query.locked {
            conditions.push("NOT u.locked".to_owned());
        }
        match query.admins {
            Some(true) => conditions.push("u.admin".to_owned()),
            Some(false) => conditions.push("NOT u.admin".to_owned()),
            None => {}
        }
        for user_type in &query.not_user_types {
            if user_type.is_empty() {
                conditions.push("u.user_type IS NOT NULL".to_owned());
            } else {
                let value = param(&mut params, user_type.as_str().into());
                conditions.push(format!("(u.user_type IS NULL OR u.user_type <> {value})"));
            }
        }
        let conditions = conditions.join(" AND ");
        // The count reads `users` alone and the page's user IDs join only what the order reads
        // (with 100,000 users, every join costs a lookup per user passed over); the page's
        // fields are read for its users alone.
        let order_join = match query.order {
            UserOrder::DisplayName => DISPLAYNAME_JOIN,
            UserOrder::AvatarUrl => AVATAR_JOIN,
            _ => "",
        };
        let count_params = params.clone();
        let direction = if query.forwards { "ASC" } else { "DESC" };
        // NULLs sort as the engines' defaults differ: first when descending, as in PostgreSQL.
        let nulls = match (query.order.not_null(), query.forwards) {
            (true, _) => "",
            (false, true) => "NULLS LAST",
            (false, false) => "NULLS FIRST",
        };
        let limit = param(&mut params, query.limit.into());
        let offset = param(&mut params, query.from.into());
        let page: Vec<String> = self
            .db
            .query(
                &format!(
                    "SELECT u.user_id FROM users u {order_join} WHERE {conditions}
                     ORDER BY {} {direction} {nulls}, u.user_id ASC LIMIT {limit} OFFSET {offset}",
                    query.order.column()
                ),
                params,
            )
            .await?
            .iter()
            .map(|row| row.string(0))
            .collect::<Result<_, StoreError>>()?;
        // The count (a second pass over every user for a search) only when the page does not
        // give the total.
        let from = u64::try_from(query.from).unwrap_or(0);
        let limit = u64::try_from(query.limit).unwrap_or(0);
        let total = match crate::total_from_page(from, limit, page.len()) {
            Some(total) => i64::try_from(total).unwrap_or(i64::MAX),
            None => self
                .db
                .query_opt(&format!("SELECT COUNT(*) FROM users u WHERE {conditions}"), count_params)
                .await?
                .map(|row| row.i64(0))
                .transpose()?
                .unwrap_or(0),
        };
        if page.is_empty() {
            return Ok((Vec::new(), total));
        }
        let ids: Vec<Value> = page.iter().map(|user| Value::from(user.as_str())).collect();
        let placeholders = (1..=ids.len()).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
        let mut found: std::collections::HashMap<String, UserListEntry> = self
            .db
            .query(
                &format!(
                    "SELECT u.user_id, u.user_type, u.is_guest, u.admin, u.deactivated, u.shadow_banned, dn.value,
                            av.value, u.created_ts, u.approved, u.erased, {LAST_SEEN}, u.locked
                     FROM users u {DISPLAYNAME_JOIN} {AVATAR_JOIN} WHERE u.user_id IN ({placeholders})"
                ),
                ids,
            )
            .await?
            .iter()
            .map(|row| {
                Ok(UserListEntry {
                    user_id: row.string(0)?,
                    user_type: row.opt_string(1)?,
                    is_guest: row.bool(2)?,
                    admin: row.bool(3)?,
                    deactivated: row.bool(4)?,
                    shadow_banned: row.bool(5)?,
                    displayname: json_string(row.opt_string(6)?),
                    avatar_url: json_string(row.opt_string(7)?),
                    creation_ts: row.i64(8)?,
                    approved: row.bool(9)?,
                    erased: row.bool(10)?,
                    last_seen_ts: row.opt_i64(11)?,
                    locked: row.bool(12)?,
                })
            })
            .map(|entry: Result<UserListEntry, StoreError>| entry.map(|entry| (entry.user_id.clone(), entry)))
            .collect::<Result<_, StoreError>>()?;
        // In the page's order (a user deleted between the two reads drops out).
        let users = page.iter().filter_map(|user| found.remove(user)).collect();
        Ok((users, total))
    }
}

impl Store {
    /// Locks or unlocks an account (a locked user's requests are refused with `M_USER_LOCKED`).
    pub async fn set_user_locked(&self, user_id: &str, locked: bool) -> Result<(), StoreError> {
        self.db.execute("UPDATE users SET locked = $2 WHERE user_id = $1", params![user_id, locked]).await?;
        Ok(())
    }

    /// Sets or clears an account's type (`bot`, `support`).
    pub async fn set_user_type(&self, user_id: &str, user_type: Option<&str>) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE users SET user_type = $2 WHERE user_id = $1",
                params![user_id, user_type.map(str::to_owned)],
            )
            .await?;
        Ok(())
    }

    /// Makes a deactivated account active again (without a password until one is set).
    pub async fn reactivate_user(&self, user_id: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE users SET deactivated = FALSE, erased = FALSE WHERE user_id = $1",
                params![user_id],
            )
            .await?;
        Ok(())
    }
}

/// A background redaction of a user's events, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct UserRedactionRecord {
    pub redact_id: String,
    pub user_id: String,
    pub admin_user_id: String,
    /// The task's parameters (rooms, reason, limit, time bounds) as JSON.
    pub params: String,
    /// `scheduled`, `active`, `complete` or `failed`.
    pub status: String,
    /// A JSON object: event ID to why its redaction failed.
    pub failed_redactions: String,
    pub error: Option<String>,
}

/// One event a user sent, as the user-redaction task reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct SentEvent {
    pub event_id: String,
    pub kind: String,
    pub json: String,
}

/// One user report (`POST /users/{userId}/report`).
#[derive(Clone, Debug, PartialEq)]
pub struct UserReportRecord {
    pub id: i64,
    pub received_ts: i64,
    pub target_user_id: String,
    /// The reporter.
    pub user_id: String,
    pub reason: Option<String>,
}

/// A page of user reports: `user_id` and `target_user_id` match substrings (as Synapse).
#[derive(Clone, Debug, Default)]
pub struct UserReportsQuery {
    pub from: i64,
    pub limit: i64,
    pub forward: bool,
    pub user_id: Option<String>,
    pub target_user_id: Option<String>,
}

impl Store {
    /// Shadow-bans a user or lifts the ban.
    pub async fn set_shadow_banned(&self, user_id: &str, shadow_banned: bool) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE users SET shadow_banned = $2 WHERE user_id = $1",
                params![user_id, shadow_banned],
            )
            .await?;
        Ok(())
    }

    /// Suspends a user (MSC3823) or lifts the suspension.
    pub async fn set_suspended(&self, user_id: &str, suspended: bool) -> Result<(), StoreError> {
        self.db
            .execute("UPDATE users SET suspended = $2 WHERE user_id = $1", params![user_id, suspended])
            .await?;
        Ok(())
    }

    /// The experimental features turned on for a user.
    pub async fn enabled_features(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT feature FROM user_experimental_features WHERE user_id = $1 AND enabled ORDER BY feature",
                params![user_id],
            )
            .await?;
        rows.iter().map(|row| row.string(0)).collect()
    }

    /// Turns experimental features on or off for a user, all in one transaction.
    pub async fn set_features(&self, user_id: &str, features: &[(String, bool)]) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                for (feature, enabled) in features {
                    tx.execute(
                        "INSERT INTO user_experimental_features (user_id, feature, enabled) VALUES ($1, $2, $3)
                         ON CONFLICT (user_id, feature) DO UPDATE SET enabled = $3",
                        params![user_id, feature.as_str(), *enabled],
                    )
                    .await?;
                }
                Ok(())
            })
            .await
    }

    /// Records a new user-redaction task (status `scheduled`).
    pub async fn insert_user_redaction(
        &self,
        redact_id: &str,
        user_id: &str,
        admin_user_id: &str,
        params_json: &str,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO user_redactions (redact_id, user_id, admin_user_id, params, status, failed_redactions, created_ts)
                 VALUES ($1, $2, $3, $4, 'scheduled', '{}', $5)",
                params![redact_id, user_id, admin_user_id, params_json, crate::now_ms()],
            )
            .await?;
        Ok(())
    }

    /// Updates a user-redaction task's status, failures and error.
    pub async fn update_user_redaction(
        &self,
        redact_id: &str,
        status: &str,
        failed_redactions: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE user_redactions SET status = $2, failed_redactions = $3, error = $4 WHERE redact_id = $1",
                params![redact_id, status, failed_redactions, error],
            )
            .await?;
        Ok(())
    }

    pub async fn get_user_redaction(
        &self,
        redact_id: &str,
    ) -> Result<Option<UserRedactionRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT redact_id, user_id, admin_user_id, params, status, failed_redactions, error
                 FROM user_redactions WHERE redact_id = $1",
                params![redact_id],
            )
            .await?;
        row.map(|row| {
            Ok(UserRedactionRecord {
                redact_id: row.string(0)?,
                user_id: row.string(1)?,
                admin_user_id: row.string(2)?,
                params: row.string(3)?,
                status: row.string(4)?,
                failed_redactions: row.string(5)?,
                error: row.opt_string(6)?,
            })
        })
        .transpose()
    }

    /// Redaction tasks a restart interrupted (`scheduled` or `active`).
    pub async fn unfinished_user_redactions(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT redact_id FROM user_redactions WHERE status IN ('scheduled', 'active') ORDER BY created_ts",
                params![],
            )
            .await?;
        rows.iter().map(|row| row.string(0)).collect()
    }

    /// The newest `limit` events of `kinds` that `sender` sent in a room and that are not
    /// redacted yet, sent before `before_ts` and after `after_ts` when given (Synapse's
    /// `get_events_sent_by_user_in_room`).
    pub async fn events_sent_by_user_in_room(
        &self,
        sender: &str,
        room_id: &str,
        kinds: &[&str],
        before_ts: Option<i64>,
        after_ts: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SentEvent>, StoreError> {
        let mut params: Vec<Value> = vec![sender.into(), room_id.into()];
        let mut kind_params = Vec::new();
        for kind in kinds {
            params.push((*kind).into());
            kind_params.push(format!("${}", params.len()));
        }
        let mut sql = format!(
            "SELECT event_id, type, json FROM events
             WHERE sender = $1 AND room_id = $2 AND NOT outlier AND redacted_by IS NULL AND type IN ({})",
            kind_params.join(", ")
        );
        if let Some(before_ts) = before_ts {
            params.push(before_ts.into());
            sql.push_str(&format!(" AND origin_server_ts < ${}", params.len()));
        }
        if let Some(after_ts) = after_ts {
            params.push(after_ts.into());
            sql.push_str(&format!(" AND origin_server_ts > ${}", params.len()));
        }
        params.push(limit.into());
        sql.push_str(&format!(" ORDER BY stream_ordering DESC LIMIT ${}", params.len()));
        let rows = self.db.query(&sql, params).await?;
        rows.iter()
            .map(|row| Ok(SentEvent { event_id: row.string(0)?, kind: row.string(1)?, json: row.string(2)? }))
            .collect()
    }

    /// A page of user reports and how many match the filters in all.
    pub async fn user_reports(
        &self,
        query: &UserReportsQuery,
    ) -> Result<(Vec<UserReportRecord>, i64), StoreError> {
        let mut conditions = String::from("target_user_id IS NOT NULL AND event_id IS NULL");
        let mut params: Vec<Value> = Vec::new();
        if let Some(user_id) = &query.user_id {
            params.push(crate::like_contains(user_id).into());
            conditions.push_str(&format!(" AND user_id LIKE ${} ESCAPE '\\'", params.len()));
        }
        if let Some(target) = &query.target_user_id {
            params.push(crate::like_contains(target).into());
            conditions.push_str(&format!(" AND target_user_id LIKE ${} ESCAPE '\\'", params.len()));
        }
        let total = self
            .db
            .query_opt(&format!("SELECT COUNT(*) FROM event_reports WHERE {conditions}"), params.clone())
            .await?
            .map(|row| row.i64(0))
            .transpose()?
            .unwrap_or(0);
        let direction = if query.forward { "ASC" } else { "DESC" };
        params.push(query.limit.into());
        let limit = params.len();
        params.push(query.from.into());
        let offset = params.len();
        let rows = self
            .db
            .query(
                &format!(
                    "SELECT id, received_ts, target_user_id, user_id, reason FROM event_reports
                     WHERE {conditions} ORDER BY received_ts {direction}, id {direction} LIMIT ${limit} OFFSET ${offset}"
                ),
                params,
            )
            .await?;
        let reports = rows
            .iter()
            .map(|row| {
                Ok(UserReportRecord {
                    id: row.i64(0)?,
                    received_ts: row.i64(1)?,
                    target_user_id: row.string(2)?,
                    user_id: row.string(3)?,
                    reason: row.opt_string(4)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((reports, total))
    }

    /// Deletes an event report (`user_report: false`) or a user report; whether it existed.
    pub async fn delete_report(&self, id: i64, user_report: bool) -> Result<bool, StoreError> {
        let kind = if user_report {
            "target_user_id IS NOT NULL AND event_id IS NULL"
        } else {
            "event_id IS NOT NULL"
        };
        let deleted = self
            .db
            .execute(&format!("DELETE FROM event_reports WHERE id = $1 AND {kind}"), params![id])
            .await?;
        Ok(deleted > 0)
    }
}

/// The account changes of one `PUT /_synapse/admin/v2/users/{userId}`, written together.
#[derive(Clone, Debug, Default)]
pub struct AdminUserChanges {
    /// Profile fields to set (a JSON value) or, with `None`, to remove.
    pub profile: Vec<(String, Option<serde_json::Value>)>,
    pub password_hash: Option<String>,
    pub admin: Option<bool>,
    pub locked: Option<bool>,
    /// `Some(None)`: clear the type.
    pub user_type: Option<Option<String>>,
    /// Make a deactivated account active again.
    pub reactivate: bool,
}

impl Store {
    /// Applies an admin's changes to an account in one transaction: all of them or none.
    pub async fn apply_admin_user_changes(
        &self,
        user_id: &str,
        changes: &AdminUserChanges,
    ) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                for (field, value) in &changes.profile {
                    match value {
                        Some(value) => {
                            tx.execute(
                                "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
                                 ON CONFLICT (user_id, field) DO UPDATE SET value = $3",
                                params![user_id, field.as_str(), value.to_string()],
                            )
                            .await?
                        }
                        None => {
                            tx.execute(
                                "DELETE FROM profile_fields WHERE user_id = $1 AND field = $2",
                                params![user_id, field.as_str()],
                            )
                            .await?
                        }
                    };
                }
                if let Some(hash) = &changes.password_hash {
                    tx.execute(
                        "UPDATE users SET password_hash = $2 WHERE user_id = $1",
                        params![user_id, hash.as_str()],
                    )
                    .await?;
                }
                if let Some(admin) = changes.admin {
                    tx.execute("UPDATE users SET admin = $2 WHERE user_id = $1", params![user_id, admin])
                        .await?;
                }
                if let Some(locked) = changes.locked {
                    tx.execute("UPDATE users SET locked = $2 WHERE user_id = $1", params![user_id, locked])
                        .await?;
                }
                if let Some(user_type) = &changes.user_type {
                    tx.execute(
                        "UPDATE users SET user_type = $2 WHERE user_id = $1",
                        params![user_id, user_type.clone()],
                    )
                    .await?;
                }
                if changes.reactivate {
                    tx.execute(
                        "UPDATE users SET deactivated = FALSE, erased = FALSE WHERE user_id = $1",
                        params![user_id],
                    )
                    .await?;
                }
                Ok(())
            })
            .await
    }
}
