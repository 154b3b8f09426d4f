-- Device lists of remote users that this server tracks (federation): filled by a resync through
-- `GET /_matrix/federation/v1/user/devices/{userId}` and kept current by `m.device_list_update`
-- and `m.signing_key_update` EDUs. A user with a row here is tracked: `/keys/query` answers
-- from these rows without asking the user's server.
CREATE TABLE remote_device_list_users (
    user_id TEXT PRIMARY KEY,
    -- The user's server's device-list stream ID of the latest update applied.
    stream_id BIGINT NOT NULL,
    master_key TEXT,
    self_signing_key TEXT
);

CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    -- The device's keys as its server sent them (NULL: a device without keys).
    keys TEXT,
    PRIMARY KEY (user_id, device_id)
);
