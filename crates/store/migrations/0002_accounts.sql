-- Local accounts.
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    -- lower(user_id), for Synapse's case-insensitive lookups at login and registration.
    user_id_lower TEXT NOT NULL,
    password_hash TEXT,
    created_ts BIGINT NOT NULL,
    is_guest BOOLEAN NOT NULL DEFAULT FALSE,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    user_type TEXT,
    deactivated BOOLEAN NOT NULL DEFAULT FALSE,
    erased BOOLEAN NOT NULL DEFAULT FALSE,
    shadow_banned BOOLEAN NOT NULL DEFAULT FALSE,
    locked BOOLEAN NOT NULL DEFAULT FALSE,
    suspended BOOLEAN NOT NULL DEFAULT FALSE,
    appservice_id TEXT,
    approved BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX users_lower ON users (user_id_lower);

-- Sequence source for generated numeric localparts (guests and users without a name).
CREATE TABLE user_id_seq (
    id BIGINT PRIMARY KEY,
    next_value BIGINT NOT NULL
);
INSERT INTO user_id_seq (id, next_value) VALUES (1, 1);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    last_seen_user_agent TEXT,
    hidden BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id)
);

-- Access tokens are stored as SHA-256 hashes: a leaked table does not give access.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT,
    created_ts BIGINT NOT NULL,
    valid_until_ms BIGINT,
    refresh_token_hash TEXT,
    -- Set once the token has been used; the refresh token that preceded it is then revoked.
    used BOOLEAN NOT NULL DEFAULT FALSE,
    -- For admin "login as": the admin who created this token for another user.
    puppets_user_id TEXT
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expiry_ts BIGINT,
    ultimate_session_expiry_ts BIGINT,
    -- The refresh token issued when this one was used; this one dies when that one is used.
    next_token_hash TEXT
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expiry_ts BIGINT NOT NULL,
    used_ts BIGINT
);

-- User-interactive authentication sessions.
CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    user_id TEXT,
    created_ts BIGINT NOT NULL,
    completed TEXT NOT NULL,
    data TEXT NOT NULL
);

-- Profile fields: displayname, avatar_url and extended fields, one row per field.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    expiry_time BIGINT
);

-- Nonces handed out by GET /_synapse/admin/v1/register (shared-secret registration).
CREATE TABLE registration_nonces (
    nonce TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);

-- Per-user rate-limit overrides, managed through the admin API (0/0 = unlimited).
CREATE TABLE ratelimit_override (
    user_id TEXT PRIMARY KEY,
    messages_per_second BIGINT,
    burst_count BIGINT
);
