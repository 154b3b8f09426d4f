-- Rooms and their event graph.
CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    -- Published in the public room directory.
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

-- Every event, persisted once. `json` is the PDU as signed (redacted in place when redacted).
CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    -- Position in the server-wide event stream (what sync tokens count).
    stream_ordering BIGINT NOT NULL UNIQUE,
    depth BIGINT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    origin_server_ts BIGINT NOT NULL,
    -- The state group before and after this event.
    state_before BIGINT,
    state_after BIGINT,
    -- For state events: the event this one replaced in the room state.
    replaces_state TEXT,
    json TEXT NOT NULL,
    redacted_by TEXT,
    contains_url BOOLEAN NOT NULL DEFAULT FALSE,
    outlier BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
CREATE INDEX events_room_type ON events (room_id, type, stream_ordering);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- The room state now, one row per (type, state_key); `membership` for m.room.member rows.
CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_member ON current_state (state_key, type, membership);

-- Every membership change, in stream order (joins and leaves between two sync tokens).
CREATE TABLE membership_history (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    membership TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX membership_history_user ON membership_history (user_id, stream_ordering);
CREATE INDEX membership_history_room_user ON membership_history (room_id, user_id, stream_ordering);

CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- Idempotent sends: (user, device, scope, transaction ID) -> event, where the scope names the
-- endpoint (room, and event type or redacted event) as the request path does.
CREATE TABLE event_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
CREATE INDEX event_txns_event ON event_txns (event_id);

CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    aggregation_key TEXT,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX event_relations_target ON event_relations (relates_to_id, rel_type, stream_ordering);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- State groups: the state after an event, stored as a delta against `base_id`, an ancestor
-- at depth `depth & (depth - 1)` along the group's branch (NULL: the delta is the whole
-- state). Reading any state takes O(log n) groups; storage grows as O(n log n) in the number
-- of state changes, not with state size times events.
CREATE TABLE state_group_entries (
    group_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    -- NULL: the key is absent from this state (only after state resolution).
    event_id TEXT,
    PRIMARY KEY (group_id, type, state_key)
);
