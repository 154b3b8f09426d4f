-- The stripped state another server sent with an invite (`invite_room_state`) or a knock
-- (`knock_room_state`) of a local user, for a room this server is not in: what the user's
-- `/sync` shows as `invite_state` / `knock_state`. Keyed by the member event it came with.
CREATE TABLE stripped_room_state (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    -- A JSON array of stripped events (type, state_key, content, sender).
    events TEXT NOT NULL
);
