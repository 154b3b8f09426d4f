//! The device-list stream (end-to-end encryption): which users' devices or keys changed at
//! which position, and the membership changes that start or stop two users sharing a room.
//!
//! A change is written inside the transaction of the write that makes it (a new device, a
//! deleted one, new identity keys, a new display name), with the position the service
//! allocated for it, so a change is recorded exactly when its cause is. A write that was handed
//! a position and changed nothing raises the stream's high-water mark (`device_lists_stream`)
//! instead, so that a position once published is never handed out again after a restart. (Old
//! changes may be pruned later: the pruning raises the mark to the newest pruned position.)

use crate::{Store, StoreError, Tx, params};

/// A user's membership in a room at both ends of a range of the event stream (`None`: no
/// membership at all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipTransition {
    pub room_id: String,
    pub user_id: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Raises the high-water mark to `stream_id` (inside the transaction of a write handed it).
pub(crate) async fn advance_device_list_stream(tx: &mut Tx<'_>, stream_id: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE device_lists_stream SET position = $1 WHERE id = 1 AND position < $1",
        params![stream_id],
    )
    .await?;
    Ok(())
}

/// Records that `user_id`'s device `device_id` ('' for the user's keys as a whole) changed at
/// `stream_id`. The row itself marks the position as used (`max_device_list_position` reads
/// both), so the hot paths (login, registration) never contend for the high-water row.
pub(crate) async fn record_device_list_change(
    tx: &mut Tx<'_>,
    stream_id: i64,
    user_id: &str,
    device_id: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO device_lists_changes (stream_id, user_id, device_id) VALUES ($1, $2, $3)
         ON CONFLICT (stream_id, user_id, device_id) DO NOTHING",
        params![stream_id, user_id, device_id],
    )
    .await?;
    Ok(())
}

impl Store {
    /// The highest device-list position ever recorded.
    pub async fn max_device_list_position(&self) -> Result<i64, StoreError> {
        let row =
            self.db.query_opt("SELECT position FROM device_lists_stream WHERE id = 1", params![]).await?;
        let recorded = row.map(|r| r.i64(0)).transpose()?.unwrap_or(0);
        let row = self
            .db
            .query_opt("SELECT COALESCE(MAX(stream_id), 0) FROM device_lists_changes", params![])
            .await?;
        let changes = row.map(|r| r.i64(0)).transpose()?.unwrap_or(0);
        Ok(recorded.max(changes))
    }

    /// Records a change of `user_id`'s devices or keys that no other write carries (e.g. new
    /// cross-signing keys): `device_id` '' for the user as a whole.
    pub async fn add_device_list_change(
        &self,
        stream_id: i64,
        user_id: &str,
        device_id: &str,
    ) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| record_device_list_change(tx, stream_id, user_id, device_id).await)
            .await
    }

    /// Every user whose devices or keys changed after position `since` up to `upto` (the
    /// appservices' device-list stream, MSC3202).
    pub async fn device_list_changes_in_range(
        &self,
        since: i64,
        upto: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT DISTINCT user_id FROM device_lists_changes WHERE stream_id > $1 AND stream_id <= $2
                 ORDER BY user_id",
                params![since, upto],
            )
            .await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    /// Users whose devices changed after position `since` up to `upto`, among `user_id` and
    /// the users sharing a joined room with them now.
    pub async fn device_list_changes_for(
        &self,
        user_id: &str,
        since: i64,
        upto: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT DISTINCT c.user_id FROM device_lists_changes c
                 WHERE c.stream_id > $2 AND c.stream_id <= $3 AND (c.user_id = $1 OR EXISTS (
                     SELECT 1 FROM current_state x JOIN current_state y ON x.room_id = y.room_id
                     WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'
                     AND y.type = 'm.room.member' AND y.state_key = c.user_id AND y.membership = 'join'))
                 ORDER BY c.user_id",
                params![user_id, since, upto],
            )
            .await?;
        rows.iter().map(|r| r.string(0)).collect()
    }

    /// Membership transitions after event position `since` up to `upto` of the user in every
    /// room, and of every user in the rooms the user is joined to now: for each (room, user)
    /// whose membership changed in the range, the membership at `since` and at `upto`.
    ///
    /// `joined_rooms` (how many rooms the user is joined to) picks how the other members'
    /// changes are found: from the changes in the range when it is shorter than that, room by
    /// room otherwise.
    pub async fn membership_transitions(
        &self,
        user_id: &str,
        since: i64,
        upto: i64,
        joined_rooms: usize,
    ) -> Result<Vec<MembershipTransition>, StoreError> {
        let in_joined_rooms = if crate::sync::range_is_shorter(since, upto, joined_rooms) {
            "SELECT m.room_id, m.user_id FROM membership_history m
             WHERE m.stream_ordering > $2 AND m.stream_ordering <= $3 AND EXISTS (
                 SELECT 1 FROM current_state s WHERE s.room_id = m.room_id
                 AND s.type = 'm.room.member' AND s.state_key = $1 AND s.membership = 'join')"
        } else {
            "SELECT m.room_id, m.user_id FROM membership_history m
             JOIN current_state s ON s.room_id = m.room_id
             WHERE s.type = 'm.room.member' AND s.state_key = $1 AND s.membership = 'join'
             AND m.stream_ordering > $2 AND m.stream_ordering <= $3"
        };
        let rows = self
            .db
            .query(
                &format!(
                    "SELECT h.room_id, h.user_id,
                     (SELECT b.membership FROM membership_history b
                      WHERE b.room_id = h.room_id AND b.user_id = h.user_id AND b.stream_ordering <= $2
                      ORDER BY b.stream_ordering DESC LIMIT 1),
                     (SELECT a.membership FROM membership_history a
                      WHERE a.room_id = h.room_id AND a.user_id = h.user_id AND a.stream_ordering <= $3
                      ORDER BY a.stream_ordering DESC LIMIT 1)
                 FROM (
                     SELECT room_id, user_id FROM membership_history
                     WHERE user_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3
                     UNION
                     {in_joined_rooms}
                 ) h
                 ORDER BY h.room_id, h.user_id"
                ),
                params![user_id, since, upto],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(MembershipTransition {
                    room_id: r.string(0)?,
                    user_id: r.string(1)?,
                    before: r.opt_string(2)?,
                    after: r.opt_string(3)?,
                })
            })
            .collect()
    }
}
