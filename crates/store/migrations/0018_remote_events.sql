-- Remote events (federation): an event refused by the authorization rules against its auth
-- events or the state before it is stored as rejected (never in the timeline, state or forward
-- extremities); one refused only by the current state is soft-failed (stored with its state,
-- not a forward extremity, never shown to clients).
ALTER TABLE events ADD COLUMN rejected_reason TEXT;
ALTER TABLE events ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT FALSE;

-- The state group of a room's current state: with forks, no longer "the state after the latest
-- event" but the resolution of the forward extremities' states.
ALTER TABLE rooms ADD COLUMN current_state_group BIGINT;
UPDATE rooms SET current_state_group = (
    SELECT e.state_after FROM events e WHERE e.room_id = rooms.room_id
    ORDER BY e.stream_ordering DESC LIMIT 1
);

-- Inbound federation transactions already processed, with the answer given: the same
-- (origin, transaction ID) is answered again from here, never processed twice.
CREATE TABLE federation_inbound_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
