-- Privacy-policy consent (`user_consent`): the policy version each user consented to, when,
-- and the version of the last consent server notice sent to them.
ALTER TABLE users ADD COLUMN consent_version TEXT;
ALTER TABLE users ADD COLUMN consent_ts BIGINT;
ALTER TABLE users ADD COLUMN consent_server_notice_sent TEXT;
