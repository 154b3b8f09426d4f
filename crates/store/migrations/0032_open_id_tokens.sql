-- OpenID tokens users hand to third parties (`/user/{userId}/openid/request_token`), which ask
-- `/_matrix/federation/v1/openid/userinfo` who a token belongs to: kept here so that they
-- outlive a restart and any process sharing the database answers for them. Synapse's table
-- name and columns, except that the token is stored as its SHA-256 (hex), as access tokens are.
CREATE TABLE open_id_tokens (
    token TEXT PRIMARY KEY,
    ts_valid_until_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL
);
CREATE INDEX open_id_tokens_ts_valid_until_ms ON open_id_tokens (ts_valid_until_ms);
