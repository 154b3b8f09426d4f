-- What each admin room task was asked for (JSON) and the instance running it, so that the
-- instance resumes its interrupted tasks when it starts again.
ALTER TABLE admin_room_tasks ADD COLUMN params TEXT;
ALTER TABLE admin_room_tasks ADD COLUMN instance TEXT;
