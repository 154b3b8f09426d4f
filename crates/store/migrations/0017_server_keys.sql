-- Remote servers' signing keys, fetched from `/_matrix/key/v2/server` or a notary.
-- `server_key_documents` keeps the latest verified key document of each server as it was
-- signed (a notary serves it again with its own signature added); `server_verify_keys` keeps
-- every key ever seen, so a key a server retired still verifies its old events:
-- `valid_until_ts` for a key from `verify_keys`, `expired_ts` once a document lists it in
-- `old_verify_keys`.
CREATE TABLE server_key_documents (
    server_name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);

CREATE TABLE server_verify_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    PRIMARY KEY (server_name, key_id)
);
