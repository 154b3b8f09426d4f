-- Membership changes in stream order: an incremental sync asks which changed in a short
-- stretch of the stream (device-list updates), read here rather than room by room through
-- every room of the user.
CREATE INDEX membership_history_stream ON membership_history (stream_ordering);
