-- Full-text search over message bodies, room names and topics (`POST /search`): one row per
-- searchable event, keyed by its stream_ordering, with the text and its `english` tsvector
-- (GIN-indexed). `key` is the field searched (`content.body`, `content.name`,
-- `content.topic`). Filled by `search::index_event` inside the persistence transaction; a
-- redaction removes its target in the same transaction.
CREATE TABLE event_search (
    stream_ordering BIGINT PRIMARY KEY,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);

-- The join rule and history visibility of every room, mirrored from the current state: the
-- user directory shows the members of public and world-readable rooms to everyone.
CREATE TABLE user_directory_rooms (
    room_id TEXT PRIMARY KEY,
    join_rule TEXT,
    history_visibility TEXT
);

-- Events persisted before this migration. (Live indexing prefers the `text/plain`
-- representation of an `m.topic`; here the plain `topic` is used.) Characters 1-2 are reserved
-- for highlight markers and replaced by spaces; texts with NUL (which PostgreSQL text cannot
-- hold) are left out.
INSERT INTO event_search (stream_ordering, key, value, vector)
SELECT stream_ordering, 'content.' || field, value, to_tsvector('english', value)
FROM (
    SELECT stream_ordering, field, translate(json::json -> 'content' ->> field, E'\x01\x02', '  ') AS value
    FROM (
        SELECT stream_ordering, json,
               CASE type WHEN 'm.room.message' THEN 'body' WHEN 'm.room.name' THEN 'name' ELSE 'topic' END AS field
        FROM events
        WHERE redacted_by IS NULL AND NOT outlier AND position('\u0000' in json) = 0
          AND ((type = 'm.room.message' AND state_key IS NULL)
               OR (type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
    ) AS candidates
    WHERE json_typeof(json::json -> 'content' -> field) = 'string'
) AS searchable;

INSERT INTO user_directory_rooms (room_id, join_rule, history_visibility)
SELECT r.room_id,
       (SELECT e.json::json -> 'content' ->> 'join_rule' FROM current_state c JOIN events e ON e.event_id = c.event_id
        WHERE c.room_id = r.room_id AND c.type = 'm.room.join_rules' AND c.state_key = ''),
       (SELECT e.json::json -> 'content' ->> 'history_visibility' FROM current_state c JOIN events e ON e.event_id = c.event_id
        WHERE c.room_id = r.room_id AND c.type = 'm.room.history_visibility' AND c.state_key = '')
FROM rooms r;
