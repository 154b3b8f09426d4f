//! Device-list tracking (end-to-end encryption): telling a user's clients whose device keys to
//! fetch again (`/sync`'s `device_lists.changed`) and whom to stop tracking
//! (`device_lists.left`), and `GET /keys/changes` between two sync tokens.
//!
//! # Design
//!
//! **The stream.** `device_lists` is a persisted stream like `to_device`: a position is
//! allocated in memory ([`crate::streams::Stream::allocate`]) before the write, the write's
//! transaction records the change (`device_lists_changes`: position, user, device) or, when it
//! changed nothing, raises the high-water mark (`device_lists_stream`), so that every position
//! handed out is on disk; the position is published by
//! [`Position::finish`] only once that transaction committed. A position dropped unfinished (a
//! failed write, or a future dropped at an `.await`) is released, and the released-positions
//! worker wakes every sync. Writes that may change a device list run on a task of their own
//! (every `POST`, `PUT` and `DELETE` request does, see `api::completion`), so a client hanging up
//! does not cancel them between the commit and the publication. A position released unfinished
//! (its write failed) is published without being recorded, and may sit in a client's token: if
//! it were handed out again after a restart, that client would miss the change made at it. So
//! at start-up the stream resumes [`RESTART_MARGIN`] past the high-water mark, beyond any
//! position published before; a token beyond even that (another database's) is read as
//! position 0: everything is reported again, since too much is harmless while too little means
//! undecryptable messages.
//!
//! **What is recorded.** A new device (login, registration), a deleted device (every path goes
//! through `Store::delete_devices`, deactivation included), identity keys that differ from the
//! stored ones (`/keys/upload`), a new device display name (as Synapse does), and new
//! cross-signing keys or signatures (device `''`, the user as a whole; in the transaction that
//! stores them).
//!
//! **What a sync reports** (incremental syncs only, following Synapse's
//! `generate_sync_entry_for_device_list`): `changed` holds the users whose devices changed
//! since the token among the requester and those sharing a joined room with them now, every
//! member of a room the requester joined, and every user who joined (or was invited to, or
//! knocked on) a room the requester is in; `left` holds users who left such a room, or were in
//! a room the requester left, and share no joined room with the requester any more.
//! Membership comes from the event stream (`membership_history`), device changes from the
//! device-list stream, each between the token's position and now.
//!
//! **Remote users (federation, later).** An `m.device_list_update` from another server goes
//! into the same table with `origin` set to that server, at a position of the same stream, so
//! local syncs and `/keys/changes` report it with no change here; what is sent to other servers
//! can be read from the local rows (`origin IS NULL`) after a per-destination position.
//!
//! **Other processes (scale-out, later).** Positions are allocated in one process's memory, as
//! for every other stream. With several writers, each would take positions from a shared
//! allocator (a PostgreSQL sequence) and publish its persisted position; readers then take the
//! minimum over the writers (Synapse's multi-writer stream). A reader process learns of a new
//! position from the writer's notification and wakes its syncs with [`Services::
//! notify_device_list_change`]; the rows themselves are already in the shared database.

use std::collections::BTreeSet;

use ruma::{OwnedUserId, UserId};

use crate::streams::Position;
use crate::sync::SyncToken;
use crate::{Result, Services};

/// How far past the recorded high-water mark the stream resumes at start-up: more than the
/// positions that can have been published unrecorded (failed writes) since the last recorded one.
pub const RESTART_MARGIN: i64 = 1000;

/// The `device_lists` of a sync or of `/keys/changes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceListUpdates {
    /// Users whose device keys the client should fetch again.
    pub changed: BTreeSet<String>,
    /// Users the client shares no room with any more.
    pub left: BTreeSet<String>,
}

impl DeviceListUpdates {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

/// Memberships that make another user's devices relevant (Synapse counts invites and knocks).
fn shares(membership: Option<&str>) -> bool {
    matches!(membership, Some("join" | "invite" | "knock"))
}

fn joined(membership: Option<&str>) -> bool {
    membership == Some("join")
}

impl Services {
    /// Publishes a device-list position whose write committed, and wakes the syncs it
    /// concerns.
    /// A local user's change is queued for the other servers sharing a room with them.
    pub(crate) async fn publish_device_list_change(&self, position: Position, user_id: &UserId) {
        // The change's own position: `finish` answers the stream's current one, which is
        // behind it while an earlier change is unfinished, or past it once a later one is done.
        let stream_id = position.value();
        position.finish();
        self.notify_device_list_change(user_id).await;
        self.wake_appservices();
        self.queue_device_list_edus(user_id, stream_id).await;
    }

    /// Wakes the syncs of `user_id` and of everyone sharing a joined room with them (all syncs
    /// when those cannot be read: the change is committed already).
    pub async fn notify_device_list_change(&self, user_id: &UserId) {
        match self.store.users_sharing_rooms(user_id.as_str()).await {
            Ok(users) => {
                let users: Vec<OwnedUserId> =
                    users.iter().filter_map(|user| UserId::parse(user).ok()).collect();
                self.notifier.notify_user(user_id);
                self.notifier.notify_users(users.iter().map(|user| &**user));
            }
            Err(error) => {
                tracing::warn!(%error, %user_id, "could not read who shares a room; waking every sync");
                self.notifier.notify_everyone();
            }
        }
    }

    /// Device-list updates for `user_id` between two sync tokens (see the module's doc).
    pub(crate) async fn device_list_updates(
        &self,
        user_id: &UserId,
        since: SyncToken,
        upto: SyncToken,
    ) -> Result<DeviceListUpdates> {
        let mut updates = DeviceListUpdates::default();
        let user = user_id.as_str();
        if upto.device_lists > since.device_lists {
            updates.changed.extend(
                self.store.device_list_changes_for(user, since.device_lists, upto.device_lists).await?,
            );
        }
        if upto.events <= since.events {
            return Ok(updates);
        }
        let joined_rooms =
            self.user_memberships_cached(user_id).await?.iter().filter(|m| m.membership == "join").count();
        let mut left_candidates = BTreeSet::new();
        for transition in
            self.store.membership_transitions(user, since.events, upto.events, joined_rooms).await?
        {
            let (before, after) = (transition.before.as_deref(), transition.after.as_deref());
            if transition.user_id == user {
                if !joined(before) && joined(after) {
                    updates.changed.extend(self.store.room_members(&transition.room_id, "join").await?);
                } else if joined(before) && !joined(after) {
                    left_candidates.extend(self.store.room_members(&transition.room_id, "join").await?);
                }
            } else if !shares(before) && shares(after) {
                left_candidates.remove(&transition.user_id);
                updates.changed.insert(transition.user_id);
            } else if shares(before) && !shares(after) {
                left_candidates.insert(transition.user_id);
            }
        }
        if !left_candidates.is_empty() {
            let still_shared: BTreeSet<String> =
                self.store.users_sharing_rooms(user).await?.into_iter().collect();
            updates.left = left_candidates
                .into_iter()
                .filter(|candidate| candidate != user && !still_shared.contains(candidate))
                .collect();
        }
        Ok(updates)
    }

    /// `GET /keys/changes`: the device-list updates between two sync tokens (`to` defaults to
    /// now, and is never beyond now).
    pub async fn key_changes(
        &self,
        user_id: &UserId,
        from: &str,
        to: Option<&str>,
    ) -> Result<DeviceListUpdates> {
        let now = self.current_sync_token();
        let mut from = SyncToken::parse(from)?;
        // As in `/sync`: a device-list position from the future (another database's token, or
        // one released unrecorded before a restart) reads as "from the beginning".
        if from.device_lists > now.device_lists {
            from.device_lists = 0;
        }
        let upto = match to {
            Some(to) => {
                let to = SyncToken::parse(to)?;
                SyncToken {
                    events: to.events.min(now.events),
                    device_lists: to.device_lists.min(now.device_lists),
                    ..now
                }
            }
            None => now,
        };
        self.device_list_updates(user_id, from, upto).await
    }
}
