-- Cross-signing (issue 12): each user's master, self-signing and user-signing keys, and the
-- signatures uploaded through `/keys/signatures/upload`.

-- A user's current key of each type (`master`, `self_signing`, `user_signing`), kept as the
-- JSON object the client uploaded; `public_key` is its ed25519 public key (unpadded base64),
-- which is also the key's ID among the user's devices when it is signed.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures made after the signed key was uploaded: a device signed by its user's
-- self-signing key, a master key signed by one of its user's devices, another user's master
-- key signed by a user-signing key. The signer is `signer_user_id`'s key `signer_key_id`
-- (`ed25519:<device ID or public key>`); the target is `target_user_id`'s device or
-- cross-signing key `target_key_id` (a device ID or a public key).
CREATE TABLE e2e_cross_signing_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
-- What a replaced or deleted signing key had signed.
CREATE INDEX e2e_cross_signing_signatures_signer ON e2e_cross_signing_signatures (signer_user_id, signer_key_id);
