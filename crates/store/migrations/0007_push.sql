-- Push notifications: rule sets, push actions (what notified whom), pushers and the durable
-- delivery queue to push gateways.

-- A user's whole push rule set (ruma's `Ruleset` as JSON: the server-default rules with the
-- user's `enabled` / `actions`, and the user's own rules in priority order). Users without a
-- row have the server-default rules.
CREATE TABLE push_rules (
    user_id TEXT PRIMARY KEY,
    ruleset TEXT NOT NULL,
    updated_ts BIGINT NOT NULL
);

-- One row per (user, event) whose push rules said `notify`. `thread_id` is `main` or the
-- thread root; `actions` is the matching rule's actions (JSON).
CREATE TABLE push_actions (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX push_actions_user_room ON push_actions (user_id, room_id, stream_ordering);
CREATE INDEX push_actions_user_stream ON push_actions (user_id, stream_ordering);
CREATE INDEX push_actions_ts ON push_actions (ts);

-- Pushers (`/pushers/set`); `data` is the client's JSON including `url`.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    device_id TEXT,
    pushkey_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app_key ON pushers (app_id, pushkey);

-- Notifications waiting to be sent to a pusher's gateway, retried with backoff until sent,
-- rejected or given up on. Rows survive restarts.
CREATE TABLE push_queue (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    actions TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ts BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey, event_id)
);
CREATE INDEX push_queue_due ON push_queue (next_attempt_ts);
