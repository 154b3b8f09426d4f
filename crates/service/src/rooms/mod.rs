//! Rooms and the event graph.
//!
//! # Layout
//!
//! - [`cache`]: [`Rooms`], the in-memory parts: per-room write locks and the published room
//!   heads, the parsed-event cache, cached state-group reads, stream positions, the new-event
//!   notices and the cached local member lists. [`user_rooms`]: each local user's cached
//!   memberships (what sliding sync lists on every request).
//! - [`head`]: [`RoomHead`] (what the next local event builds on), loading it from the store,
//!   and parsing stored events. Readers take [`Services::room_head_snapshot`], which never
//!   waits for a send; only the write path takes the room's send lock.
//! - [`write`]: the one write path, [`Services::send_event`], that every local event takes:
//!   build the PDU in the room version's format ([`Services::prepare_event`]), check it
//!   against the authorization rules and the server's own rules (redaction power, canonical
//!   alias targets, relations), persist it once with everything that follows from it
//!   ([`Services::commit_events`], or stage and finish for group commit), then publish it.
//! - [`power_levels`]: [`PowerLevels`], the room's power levels as the rules read them.
//! - [`admission`]: whether a user may write into rooms at all (suspension, server-wide
//!   blocking, consent), asked by every client write: sends, membership (local or through
//!   another server), createRoom, upgrades.
//! - [`send`]: client sends (`send`, `state`, `redact`): rate limits, transaction IDs and
//!   shadow bans (a random event ID, nothing sent) in front of the write path; membership
//!   applies the same in `membership_event`.
//! - [`create`]: `createRoom`. [`membership`]: join, leave, invite, kick, ban, knock, forget.
//! - [`read`]: events, context, messages, state, members, with history visibility
//!   ([`visibility`]) applied.
//! - [`relations`]: relations, threads, bundled aggregations.
//! - [`directory`]: aliases, the public room directory. [`spaces`]: hierarchy and summaries.
//! - [`upgrade`], [`reports`].
//!
//! # Invariants
//!
//! - Every local event, whoever makes it (client sends, createRoom, membership, upgrades,
//!   and federation once it sends), goes through [`Services::prepare_event`] and is persisted
//!   by [`Services::commit_events`] or [`Services::stage_events`]: there is no second way to
//!   write an event. Events received over federation take the same persist step
//!   ([`Services::receive_remote_pdu`] prepares them, see `federation::pdu`).
//! - Sends to one room are serialised by that room's send lock
//!   ([`Services::lock_room_for_write`]), so this server never forks its own rooms' DAG;
//!   sends to different rooms run in parallel. Whoever holds the lock owns the head; the head
//!   readers see is published when the lock is released, so reads never wait for a send.

pub(crate) mod admission;
pub mod cache;
pub mod create;
pub mod directory;
pub mod head;
pub mod membership;
pub mod power_levels;
pub mod read;
pub mod relations;
pub mod reports;
pub mod room_members;
pub mod send;
pub mod spaces;
pub mod ticketed;
pub mod upgrade;
pub mod user_rooms;
pub mod visibility;
pub mod write;

pub use cache::{GroupState, RoomWriteGuard, Rooms};
pub use head::{HeadState, RoomEvent, RoomHead, check_room_version};
pub use power_levels::PowerLevels;
pub use send::TxnKey;
pub use write::{EventDraft, MAX_EVENT_FIELD_BYTES, NewEventNotice};
pub(crate) use write::{NextHead, PreparedEvent};
