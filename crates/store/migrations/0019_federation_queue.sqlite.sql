-- The durable outbound federation queue (see service::federation::sender).

-- PDUs waiting for a destination, in stream order; written in the transaction that persists
-- the event. `txn_id`: the transaction the row is in flight in (kept across retries, so a
-- retried transaction is the same transaction).
CREATE TABLE federation_outbox_pdus (
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    txn_id TEXT,
    PRIMARY KEY (destination, event_id)
);
CREATE INDEX federation_outbox_pdus_order ON federation_outbox_pdus (destination, stream_ordering);

-- EDUs waiting for a destination, in queueing order. An EDU with a key replaces the queued,
-- not yet in flight EDU of the same destination, type and key (typing per room and user,
-- presence per user): only the latest is sent.
CREATE TABLE federation_outbox_edus (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    edu_key TEXT,
    content TEXT NOT NULL,
    txn_id TEXT
);
CREATE INDEX federation_outbox_edus_order ON federation_outbox_edus (destination, id);
CREATE INDEX federation_outbox_edus_key ON federation_outbox_edus (destination, edu_type, edu_key);

-- Every destination sent to: Synapse's backoff (`retry_last_ts`, `retry_interval`, `failure_ts`:
-- when the current run of failures began, NULL when it is up) and the transaction counter.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval BIGINT NOT NULL DEFAULT 0,
    failure_ts BIGINT,
    last_txn BIGINT NOT NULL DEFAULT 0,
    last_success_ts BIGINT
);

-- Which process sends to a destination right now: a lease renewed while it sends, taken over
-- once expired (a crashed holder's lease runs out).
CREATE TABLE federation_sender_leases (
    destination TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
