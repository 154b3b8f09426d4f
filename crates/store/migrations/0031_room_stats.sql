-- One summary row per room for the admin room list and room details (Synapse's
-- `room_stats_state` and `room_stats_current` in one table): the summary state events' fields
-- and the member and state counts of the room's current state. Written by the store's
-- `room_stats` module alone, in the transaction of every change of `current_state` (count
-- deltas for member and other keys; a recomputation for summary events, new rooms, redacted
-- summary events and a remote join's state) and deleted with the room. Rows of rooms that
-- predate this migration are filled when the store opens (`Store::backfill_room_stats`).
CREATE TABLE room_stats (
    room_id TEXT PRIMARY KEY,
    name TEXT,
    canonical_alias TEXT,
    topic TEXT,
    avatar TEXT,
    join_rules TEXT,
    guest_access TEXT,
    history_visibility TEXT,
    encryption TEXT,
    room_type TEXT,
    -- The create event's sender (a remote room's `rooms` row has no creator).
    creator TEXT,
    -- `m.federate` of the create event (TRUE when absent).
    federatable BOOLEAN NOT NULL DEFAULT TRUE,
    -- Whether the room has an `m.room.tombstone`, and its `replacement_room`.
    tombstoned BOOLEAN NOT NULL DEFAULT FALSE,
    tombstone_successor TEXT,
    joined_members BIGINT NOT NULL DEFAULT 0,
    -- Joined members with an account here.
    joined_local_members BIGINT NOT NULL DEFAULT 0,
    invited_members BIGINT NOT NULL DEFAULT 0,
    banned_members BIGINT NOT NULL DEFAULT 0,
    knocked_members BIGINT NOT NULL DEFAULT 0,
    -- Entries of the current state.
    state_events BIGINT NOT NULL DEFAULT 0
);
-- The room list's orders: NULLs last ascending (first descending), then the room ID.
CREATE INDEX room_stats_name ON room_stats ((name IS NULL), name, room_id);
CREATE INDEX room_stats_canonical_alias ON room_stats ((canonical_alias IS NULL), canonical_alias, room_id);
CREATE INDEX room_stats_joined_members ON room_stats (joined_members, room_id);
CREATE INDEX room_stats_joined_local_members ON room_stats (joined_local_members, room_id);
CREATE INDEX room_stats_state_events ON room_stats (state_events, room_id);
CREATE INDEX room_stats_creator ON room_stats ((creator IS NULL), creator, room_id);

-- The admin user list's `order_by=creation_ts` (Synapse's `users_creation_ts`).
CREATE INDEX users_creation_ts ON users (created_ts);
-- The admin user list's pages by name and its count, read from the index alone (the filters
-- it applies by default: guests, locked and deactivated users, admins).
CREATE INDEX users_listing ON users (user_id, is_guest, locked, deactivated, admin);
