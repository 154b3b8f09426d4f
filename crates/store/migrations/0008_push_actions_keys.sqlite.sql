-- Push actions are written for every notified member of every message, so each index costs
-- on the send path. One key serves inserts, duplicate checks and per-room unread counts
-- (user, room, position); a second index serves /notifications (user, position). The table
-- is keyed by it directly (no rowid), and pruning by age scans (it runs once a day).
CREATE TABLE push_actions_keyed (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, stream_ordering)
) WITHOUT ROWID;
INSERT INTO push_actions_keyed (user_id, event_id, room_id, stream_ordering, thread_id, actions, highlight, ts)
    SELECT user_id, event_id, room_id, stream_ordering, thread_id, actions, highlight, ts FROM push_actions;
DROP TABLE push_actions;
ALTER TABLE push_actions_keyed RENAME TO push_actions;
CREATE INDEX push_actions_user_stream ON push_actions (user_id, stream_ordering);
