-- Per-user experimental features the admin API turns on or off
-- (`/_synapse/admin/v1/experimental_features/{userId}`).
CREATE TABLE user_experimental_features (
    user_id TEXT NOT NULL,
    feature TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, feature)
);

-- Background redactions of a user's events (`POST /_synapse/admin/v1/user/{userId}/redact`):
-- the task's parameters, status (`scheduled`, `active`, `complete`, `failed`) and the events
-- whose redaction failed (a JSON object of event ID to error).
CREATE TABLE user_redactions (
    redact_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    admin_user_id TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    failed_redactions TEXT NOT NULL,
    error TEXT,
    created_ts BIGINT NOT NULL
);
