CREATE TABLE state_groups (
    id BIGSERIAL PRIMARY KEY,
    room_id TEXT NOT NULL,
    parent_id BIGINT,
    base_id BIGINT,
    depth BIGINT NOT NULL
);

CREATE TABLE event_reports (
    id BIGSERIAL PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT,
    target_user_id TEXT,
    user_id TEXT NOT NULL,
    reason TEXT,
    score BIGINT
);
