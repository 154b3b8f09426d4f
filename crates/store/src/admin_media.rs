//! The admin API's media statistics (`/_synapse/admin/v1/statistics/users/media`): how many
//! local media each user uploaded, and how many bytes.

use crate::{Store, StoreError, Value};

/// What the statistics can be ordered by (Synapse's `order_by` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaStatsOrder {
    UserId,
    DisplayName,
    MediaLength,
    MediaCount,
}

impl MediaStatsOrder {
    pub fn parse(name: &str) -> Option<MediaStatsOrder> {
        Some(match name {
            "user_id" => MediaStatsOrder::UserId,
            "displayname" => MediaStatsOrder::DisplayName,
            "media_length" => MediaStatsOrder::MediaLength,
            "media_count" => MediaStatsOrder::MediaCount,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            MediaStatsOrder::UserId => "m.user_id",
            MediaStatsOrder::DisplayName => "dn.value",
            MediaStatsOrder::MediaLength => "media_length",
            MediaStatsOrder::MediaCount => "media_count",
        }
    }
}

/// A page request of the statistics.
#[derive(Clone, Debug)]
pub struct MediaStatsQuery {
    pub from: u64,
    pub limit: u64,
    pub from_ts: i64,
    pub until_ts: Option<i64>,
    /// Part of the user ID or of the display name.
    pub search_term: Option<String>,
    pub order: MediaStatsOrder,
    pub forwards: bool,
}

/// One user's media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserMediaStats {
    pub user_id: String,
    /// The stored profile field (a JSON value).
    pub displayname: Option<String>,
    pub media_count: i64,
    pub media_length: i64,
}

impl Store {
    /// One page of users with their media count and size, and how many users match in all.
    pub async fn user_media_stats(
        &self,
        query: &MediaStatsQuery,
    ) -> Result<(Vec<UserMediaStats>, u64), StoreError> {
        let mut params: Vec<Value> = vec![query.from_ts.into()];
        let mut conditions = vec!["m.created_ts >= $1".to_owned()];
        if let Some(until) = query.until_ts {
            params.push(until.into());
            conditions.push(format!("m.created_ts <= ${}", params.len()));
        }
        if let Some(term) = &query.search_term {
            params.push(crate::like_contains(term).into());
            let n = params.len();
            conditions.push(format!("(m.user_id LIKE ${n} ESCAPE '\\' OR dn.value LIKE ${n} ESCAPE '\\')"));
        }
        let from = format!(
            "FROM local_media m
             LEFT JOIN profile_fields dn ON dn.user_id = m.user_id AND dn.field = 'displayname'
             WHERE {} GROUP BY m.user_id, dn.value",
            conditions.join(" AND ")
        );
        let total = self
            .db
            .query_opt(&format!("SELECT COUNT(*) FROM (SELECT m.user_id {from}) grouped"), params.clone())
            .await?
            .map(|row| row.i64(0))
            .transpose()?
            .unwrap_or(0);
        let direction = if query.forwards { "ASC" } else { "DESC" };
        let nulls = if query.forwards { "NULLS LAST" } else { "NULLS FIRST" };
        params.push(i64::try_from(query.limit).unwrap_or(i64::MAX).into());
        params.push(i64::try_from(query.from).unwrap_or(i64::MAX).into());
        let n = params.len();
        let sql = format!(
            "SELECT m.user_id, dn.value, COUNT(*) AS media_count,
                    CAST(COALESCE(SUM(m.size), 0) AS BIGINT) AS media_length
             {from} ORDER BY {} {direction} {nulls}, m.user_id {direction} LIMIT ${} OFFSET ${n}",
            query.order.column(),
            n - 1
        );
        let users = self
            .db
            .query(&sql, params)
            .await?
            .iter()
            .map(|row| {
                Ok(UserMediaStats {
                    user_id: row.string(0)?,
                    displayname: row.opt_string(1)?,
                    media_count: row.i64(2)?,
                    media_length: row.i64(3)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((users, total.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_parse_as_synapse_names_them() {
        assert_eq!(MediaStatsOrder::parse("media_length"), Some(MediaStatsOrder::MediaLength));
        assert_eq!(MediaStatsOrder::parse("size"), None);
    }
}
