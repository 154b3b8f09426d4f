-- Server-side key backup (issue 12): a user's backup versions and the room keys stored in them.

-- Backup versions, numbered per user from 1. A deleted version keeps its row (`deleted`) so that
-- its number is never handed out again and deleting it twice succeeds; its keys are deleted.
-- `etag` counts the changes to the version's keys.
CREATE TABLE e2e_room_keys_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

-- One backed-up megolm session per (version, room, session); `session_data` is the client's
-- encrypted JSON object.
CREATE TABLE e2e_room_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BOOLEAN NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
