-- To-device messages: one durable inbox per device, ordered by the to-device stream.
CREATE TABLE to_device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id)
);

-- Transaction IDs of sendToDevice requests, per sending device: a retried request sends nothing new.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- The highest to-device position ever handed out, so that the stream never moves back after
-- every inbox is emptied (sync tokens hold positions on it).
CREATE TABLE to_device_stream (
    id INTEGER PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO to_device_stream (id, position) VALUES (1, 0);
