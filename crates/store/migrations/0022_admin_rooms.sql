-- Rooms an admin blocked (`PUT /_synapse/admin/v1/rooms/{roomId}/block`, `DELETE .../rooms`
-- with `block`): no local user may join or be invited there again.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- Room deletions and history purges the admin API started, with their outcome
-- (`/_synapse/admin/v2/rooms/.../delete_status`, `/v1/purge_history_status/{id}`).
-- `kind`: `delete` or `purge_history`; `status`: `active`, `complete` or `failed`;
-- `result`: the deletion's JSON answer (kicked users, aliases, new room).
CREATE TABLE admin_room_tasks (
    task_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    room_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    result TEXT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX admin_room_tasks_room ON admin_room_tasks (room_id, kind);
