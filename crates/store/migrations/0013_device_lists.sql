-- Device-list tracking (end-to-end encryption): the device-list stream. A row says that a user's
-- devices (or keys) changed at a stream position, so that everyone sharing a room with them
-- refetches their keys. One position may carry several rows (several devices deleted at once).
CREATE TABLE device_lists_changes (
    stream_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    -- The device that changed; '' when the change is not about one device (cross-signing keys).
    device_id TEXT NOT NULL,
    -- NULL for a change of a local user; for a remote user's update (federation, later), the
    -- server it came from.
    origin TEXT,
    PRIMARY KEY (stream_id, user_id, device_id)
);
CREATE INDEX device_lists_changes_user ON device_lists_changes (user_id, stream_id);

-- The highest device-list position handed to a write that changed nothing (or, later, the newest
-- pruned change), so that the stream never moves back after a restart (sync tokens hold
-- positions on it): the stream resumes after this and every recorded change.
CREATE TABLE device_lists_stream (
    id INTEGER PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO device_lists_stream (id, position) VALUES (1, 0);

-- Membership changes of a room between two positions (who started or stopped sharing a room
-- with a syncing user) without walking the room's whole history.
CREATE INDEX membership_history_room_stream ON membership_history (room_id, stream_ordering);
