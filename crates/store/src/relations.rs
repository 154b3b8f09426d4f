//! Relations between events (`m.relates_to`): related events, threads, edits, bundled
//! aggregation counts, annotations. Written with their event in `events::persist`; read here.

use std::collections::HashMap;

use crate::events::{StoredEvent, event_columns_of_e, event_from_row};
use crate::{Store, StoreError, params};

impl Store {
    /// Events relating to `target`, newest first, optionally of one relation and event type,
    /// strictly before / after `from` (stream positions).
    #[allow(clippy::too_many_arguments)]
    pub async fn relations(
        &self,
        target: &str,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        forward: bool,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut params = params![target];
        let mut sql = format!(
            "SELECT {} FROM event_relations r JOIN events e ON e.event_id = r.event_id WHERE r.relates_to_id = $1",
            event_columns_of_e()
        );
        if let Some(rel_type) = rel_type {
            params.push(rel_type.into());
            sql.push_str(&format!(" AND r.rel_type = ${}", params.len()));
        }
        if let Some(event_type) = event_type {
            params.push(event_type.into());
            sql.push_str(&format!(" AND r.type = ${}", params.len()));
        }
        if let Some(from) = from {
            params.push(from.into());
            sql.push_str(&format!(
                " AND r.stream_ordering {} ${}",
                if forward { ">" } else { "<" },
                params.len()
            ));
        }
        if let Some(to) = to {
            params.push(to.into());
            sql.push_str(&format!(
                " AND r.stream_ordering {} ${}",
                if forward { "<=" } else { ">=" },
                params.len()
            ));
        }
        params.push(limit.into());
        sql.push_str(&format!(
            " ORDER BY r.stream_ordering {} LIMIT ${}",
            if forward { "ASC" } else { "DESC" },
            params.len()
        ));
        self.db.query(&sql, params).await?.iter().map(event_from_row).collect()
    }

    /// Thread roots of a room (events with `m.thread` relations), newest activity first.
    pub async fn thread_roots(
        &self,
        room_id: &str,
        participated_by: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut params = params![room_id];
        let mut having = String::new();
        if let Some(before) = before {
            params.push(before.into());
            having = format!(" HAVING MAX(r.stream_ordering) < ${}", params.len());
        }
        let mut filter = String::new();
        if let Some(user) = participated_by {
            params.push(user.into());
            let n = params.len();
            filter = format!(
                " AND (r.relates_to_id IN (SELECT relates_to_id FROM event_relations WHERE rel_type = 'm.thread' AND sender = ${n})
                  OR r.relates_to_id IN (SELECT event_id FROM events WHERE sender = ${n} AND room_id = $1))"
            );
        }
        params.push(limit.into());
        let sql = format!(
            "SELECT r.relates_to_id, MAX(r.stream_ordering) AS latest FROM event_relations r
             WHERE r.room_id = $1 AND r.rel_type = 'm.thread'{filter}
             GROUP BY r.relates_to_id{having} ORDER BY latest DESC LIMIT ${}",
            params.len()
        );
        let rows = self.db.query(&sql, params).await?;
        rows.iter().map(|r| Ok((r.string(0)?, r.i64(1)?))).collect()
    }
}

/// Which events related to `target` to read: those in `room_id` (a relation never crosses
/// rooms), `depth` levels of relations deep (1: direct children only), optionally of one
/// relation type, event type and sender, strictly after (`forward`) or before `from`, bounded
/// by `to` (inclusive), by stream position.
#[derive(Clone, Debug)]
pub struct RelatedEventsQuery<'a> {
    pub room_id: &'a str,
    pub target: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub depth: u32,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub forward: bool,
    pub limit: i64,
}

impl Store {
    /// Events related to an event (see [`RelatedEventsQuery`]), in stream order (newest first
    /// unless `forward`).
    pub async fn related_events(
        &self,
        query: &RelatedEventsQuery<'_>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let columns = event_columns_of_e();
        let mut params = params![query.target, query.room_id];
        let mut sql = if query.depth <= 1 {
            format!(
                "SELECT {columns} FROM event_relations r JOIN events e ON e.event_id = r.event_id
                 WHERE r.relates_to_id = $1 AND r.room_id = $2"
            )
        } else {
            params.push(i64::from(query.depth).into());
            // Each event has at most one relation, so the walk is a tree; `depth` bounds it
            // even if event IDs were ever made to form a cycle.
            format!(
                "WITH RECURSIVE related(event_id, depth) AS (
                    SELECT event_id, CAST(1 AS BIGINT) FROM event_relations WHERE relates_to_id = $1 AND room_id = $2
                    UNION ALL
                    SELECT c.event_id, p.depth + 1 FROM event_relations c JOIN related p ON c.relates_to_id = p.event_id
                    WHERE c.room_id = $2 AND p.depth < $3
                 )
                 SELECT {columns} FROM event_relations r JOIN events e ON e.event_id = r.event_id
                 WHERE r.event_id IN (SELECT event_id FROM related)"
            )
        };
        if let Some(rel_type) = query.rel_type {
            params.push(rel_type.into());
            sql.push_str(&format!(" AND r.rel_type = ${}", params.len()));
        }
        if let Some(event_type) = query.event_type {
            params.push(event_type.into());
            sql.push_str(&format!(" AND r.type = ${}", params.len()));
        }
        if let Some(sender) = query.sender {
            params.push(sender.into());
            sql.push_str(&format!(" AND r.sender = ${}", params.len()));
        }
        if let Some(from) = query.from {
            params.push(from.into());
            let op = if query.forward { ">" } else { "<" };
            sql.push_str(&format!(" AND r.stream_ordering {op} ${}", params.len()));
        }
        if let Some(to) = query.to {
            params.push(to.into());
            let op = if query.forward { "<=" } else { ">=" };
            sql.push_str(&format!(" AND r.stream_ordering {op} ${}", params.len()));
        }
        params.push(query.limit.into());
        sql.push_str(&format!(
            " ORDER BY r.stream_ordering {} LIMIT ${}",
            if query.forward { "ASC" } else { "DESC" },
            params.len()
        ));
        self.db.query(&sql, params).await?.iter().map(event_from_row).collect()
    }

    /// [`Self::bundled_relation_counts`] of several events at once (events with none are left
    /// out).
    pub async fn bundled_relation_counts_of(
        &self,
        targets: &[&str],
    ) -> Result<HashMap<String, Vec<(String, i64)>>, StoreError> {
        let mut out: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for chunk in targets.chunks(200) {
            let placeholders = crate::placeholder_list(chunk.len());
            let sql = format!(
                "SELECT relates_to_id, rel_type, COUNT(*) FROM event_relations
                 WHERE relates_to_id IN ({}) AND rel_type IN ('m.thread', 'm.replace', 'm.reference')
                 GROUP BY relates_to_id, rel_type",
                placeholders
            );
            let params = chunk.iter().map(|id| crate::Value::from(*id)).collect();
            for row in self.db.query(&sql, params).await? {
                out.entry(row.string(0)?).or_default().push((row.string(1)?, row.i64(2)?));
            }
        }
        Ok(out)
    }

    /// For the relation types that are bundled with an event (`m.thread`, `m.replace`,
    /// `m.reference`): how many events of the same room relate to `target` that way.
    pub async fn bundled_relation_counts(
        &self,
        room_id: &str,
        target: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT rel_type, COUNT(*) FROM event_relations
                 WHERE relates_to_id = $1 AND room_id = $2 AND rel_type IN ('m.thread', 'm.replace', 'm.reference')
                 GROUP BY rel_type",
                params![target, room_id],
            )
            .await?;
        rows.iter().map(|r| Ok((r.string(0)?, r.i64(1)?))).collect()
    }

    /// The edit of `target` that applies: the most recent (by `origin_server_ts`, then event
    /// ID) `m.replace` of the same room, sender and event type as the original.
    pub async fn latest_edit(
        &self,
        room_id: &str,
        target: &str,
        sender: &str,
        event_type: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {} FROM event_relations r JOIN events e ON e.event_id = r.event_id
             WHERE r.relates_to_id = $1 AND r.room_id = $2 AND r.rel_type = 'm.replace' AND r.sender = $3 AND r.type = $4
             ORDER BY e.origin_server_ts DESC, e.event_id DESC LIMIT 1",
            event_columns_of_e()
        );
        self.db
            .query_opt(&sql, params![target, room_id, sender, event_type])
            .await?
            .as_ref()
            .map(event_from_row)
            .transpose()
    }
}

impl Store {
    /// Whether `sender` already annotated `target` with `key` using an event of `kind`.
    pub async fn has_annotation(
        &self,
        target: &str,
        sender: &str,
        kind: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT 1 FROM event_relations WHERE relates_to_id = $1 AND rel_type = 'm.annotation'
                 AND sender = $2 AND type = $3 AND aggregation_key = $4 LIMIT 1",
                params![target, sender, kind, key],
            )
            .await?;
        Ok(row.is_some())
    }
}
