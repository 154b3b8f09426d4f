-- Application services' ephemeral streams, as Synapse's `application_services_state`
-- `read_receipt_stream_id` / `presence_stream_id` / `to_device_stream_id` /
-- `device_list_stream_id`: per appservice, the position handed over to transactions so far in
-- the receipt, presence, to-device and device-list streams (NULL: not started yet; the first
-- round starts it at the stream's current position). A transaction stores the to-device
-- messages (MSC2409) and device-list summary (MSC3202) it carries, so that a retry sends the
-- same body.
ALTER TABLE appservice_state ADD COLUMN receipt_position BIGINT;
ALTER TABLE appservice_state ADD COLUMN presence_position BIGINT;
ALTER TABLE appservice_state ADD COLUMN to_device_position BIGINT;
ALTER TABLE appservice_state ADD COLUMN device_list_position BIGINT;
ALTER TABLE appservice_txns ADD COLUMN to_device TEXT NOT NULL DEFAULT '[]';
ALTER TABLE appservice_txns ADD COLUMN device_lists TEXT;
-- The appservices read these streams across every room and device, by position.
CREATE INDEX receipts_stream ON receipts (stream_id);
CREATE INDEX to_device_inbox_stream ON to_device_inbox (stream_id);
