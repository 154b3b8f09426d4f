-- The remote media cache (issue 14): other servers' media fetched over federation for local
-- clients, and the thumbnails made of it here. The bytes live under `media_store_path` in
-- Synapse's layout (`remote_content/{origin}/ab/cd/rest` and `remote_thumbnail/{origin}/...`,
-- named by `file_id`, an ID this server chose); these rows say what the files are.
CREATE TABLE remote_media_cache (
    media_origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    file_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    last_access_ts BIGINT NOT NULL,
    quarantined_by TEXT,
    authenticated BOOLEAN NOT NULL,
    PRIMARY KEY (media_origin, media_id)
);

CREATE INDEX remote_media_cache_last_access ON remote_media_cache (last_access_ts);

-- The thumbnails made of cached remote media.
CREATE TABLE remote_media_thumbnails (
    media_origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (media_origin, media_id, width, height, method, content_type)
);
