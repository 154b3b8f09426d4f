-- Full-text search over message bodies, room names and topics (`POST /search`): one row per
-- searchable event, whose rowid is the event's stream_ordering. `key` is the field searched
-- (`content.body`, `content.name`, `content.topic`). Filled by `search::index_event` inside the
-- persistence transaction; a redaction removes its target in the same transaction. The
-- porter stemmer makes "martians" match "martian", as PostgreSQL's `english` configuration does.
CREATE VIRTUAL TABLE event_search USING fts5(
    value,
    key UNINDEXED,
    tokenize = 'porter unicode61'
);

-- The join rule and history visibility of every room, mirrored from the current state: the
-- user directory shows the members of public and world-readable rooms to everyone.
CREATE TABLE user_directory_rooms (
    room_id TEXT PRIMARY KEY,
    join_rule TEXT,
    history_visibility TEXT
);

-- Events persisted before this migration. (Live indexing prefers the `text/plain`
-- representation of an `m.topic`; here the plain `topic` is used.) Characters 0-2 are reserved
-- for highlight markers and replaced by spaces.
INSERT INTO event_search (rowid, value, key)
SELECT stream_ordering,
       replace(replace(replace(json_extract(json, '$.content.' || field), char(0), ' '), char(1), ' '), char(2), ' '),
       'content.' || field
FROM (
    SELECT stream_ordering, json, CASE type WHEN 'm.room.message' THEN 'body' WHEN 'm.room.name' THEN 'name' ELSE 'topic' END AS field
    FROM events
    WHERE redacted_by IS NULL AND NOT outlier
      AND ((type = 'm.room.message' AND state_key IS NULL)
           OR (type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
) AS searchable
WHERE json_type(json, '$.content.' || field) = 'text';

INSERT INTO user_directory_rooms (room_id, join_rule, history_visibility)
SELECT r.room_id,
       (SELECT json_extract(e.json, '$.content.join_rule') FROM current_state c JOIN events e ON e.event_id = c.event_id
        WHERE c.room_id = r.room_id AND c.type = 'm.room.join_rules' AND c.state_key = ''),
       (SELECT json_extract(e.json, '$.content.history_visibility') FROM current_state c JOIN events e ON e.event_id = c.event_id
        WHERE c.room_id = r.room_id AND c.type = 'm.room.history_visibility' AND c.state_key = '')
FROM rooms r;
