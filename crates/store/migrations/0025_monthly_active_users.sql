-- The monthly active user cohort (`limit_usage_by_mau`, `mau_stats_only`): each local user
-- seen in the last 30 days, with when; rows older than that are out of the cohort.
CREATE TABLE monthly_active_users (
    user_id TEXT PRIMARY KEY,
    timestamp BIGINT NOT NULL
);
CREATE INDEX monthly_active_users_timestamp ON monthly_active_users (timestamp);
