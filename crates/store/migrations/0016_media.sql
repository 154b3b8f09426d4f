-- The media repository (issue 13): local media and their thumbnails. The bytes live in files
-- under `media_store_path` (Synapse's layout); these rows say what the files are.

-- One row per local media ID. A `/create`d ID waiting for its upload has no `size`, `sha256`
-- or `file_id` yet, and `unused_expires_at` says until when it waits. `file_id` names the
-- media ID whose file (`local_content/...`) holds the bytes: identical content is stored once,
-- so a second upload of the same bytes points at the first one's file. `authenticated` says
-- whether the media was uploaded while `enable_authenticated_media` was on (then the legacy
-- unauthenticated download routes do not serve it).
CREATE TABLE local_media (
    media_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    sha256 TEXT,
    file_id TEXT,
    created_ts BIGINT NOT NULL,
    last_access_ts BIGINT,
    quarantined_by TEXT,
    safe_from_quarantine BOOLEAN NOT NULL DEFAULT FALSE,
    authenticated BOOLEAN NOT NULL,
    unused_expires_at BIGINT
);

CREATE INDEX local_media_sha256 ON local_media (sha256);
CREATE INDEX local_media_user ON local_media (user_id, created_ts);
CREATE INDEX local_media_pending ON local_media (user_id, unused_expires_at)
    WHERE unused_expires_at IS NOT NULL;

-- The thumbnails made of local media, one file each under `local_thumbnails/...`.
CREATE TABLE local_media_thumbnails (
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (media_id, width, height, method, content_type)
);
