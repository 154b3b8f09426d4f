//! The admin API's user list (`/_synapse/admin/v2/users`): filters, ordering and pagination as
//! Synapse's `get_users_paginate`, in one count and one page query.

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
            UserOrder::LastSeenTs => "ls.last_seen_ts",
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

const FROM: &str = "FROM users u
    LEFT JOIN profile_fields dn ON dn.user_id = u.user_id AND dn.field = 'displayname'
    LEFT JOIN profile_fields av ON av.user_id = u.user_id AND av.field = 'avatar_url'
    LEFT JOIN (SELECT user_id, MAX(last_seen_ts) AS last_seen_ts FROM devices GROUP BY user_id) ls
        ON ls.user_id = u.user_id";

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
            conditions.push(format!(
                "(LOWER(u.user_id) LIKE {localpart} ESCAPE '\\' OR LOWER(dn.value) LIKE {display} ESCAPE '\\')"
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
        let total = self
            .db
            .query_opt(&format!("SELECT COUNT(*) {FROM} WHERE {conditions}"), params.clone())
            .await?
            .map(|row| row.i64(0))
            .transpose()?
            .unwrap_or(0);
        let direction = if query.forwards { "ASC" } else { "DESC" };
        // NULLs sort as the engines' defaults differ: first when descending, as in PostgreSQL.
        let nulls = if query.forwards { "NULLS LAST" } else { "NULLS FIRST" };
        let limit = param(&mut params, query.limit.into());
        let offset = param(&mut params, query.from.into());
        let sql = format!(
            "SELECT u.user_id, u.user_type, u.is_guest, u.admin, u.deactivated, u.shadow_banned, dn.value,
                    av.value, u.created_ts, u.approved, u.erased, ls.last_seen_ts, u.locked
             {FROM} WHERE {conditions}
             ORDER BY {} {direction} {nulls}, u.user_id ASC LIMIT {limit} OFFSET {offset}",
            query.order.column()
        );
        let users = self
            .db
            .query(&sql, params)
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
            .collect::<Result<_, StoreError>>()?;
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
