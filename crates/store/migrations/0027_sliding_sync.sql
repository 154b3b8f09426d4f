-- Sliding sync (MSC4186) connections: per (user, device, conn_id) the positions handed out
-- (the one a request came with and the one it answered with), each with the connection state
-- as of it: what every room was last sent with and where each extension stands (JSON).
CREATE TABLE sliding_sync_positions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, pos)
);
CREATE INDEX sliding_sync_positions_device ON sliding_sync_positions (user_id, device_id, created_ts);
