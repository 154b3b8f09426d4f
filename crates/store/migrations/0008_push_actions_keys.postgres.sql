-- Push actions are written for every notified member of every message, so each index costs
-- on the send path. One key serves inserts, duplicate checks and per-room unread counts
-- (user, room, position); a second index serves /notifications (user, position); pruning by
-- age scans (it runs once a day).
ALTER TABLE push_actions DROP CONSTRAINT push_actions_pkey;
ALTER TABLE push_actions ADD PRIMARY KEY (user_id, room_id, stream_ordering);
DROP INDEX push_actions_user_room;
DROP INDEX push_actions_ts;
