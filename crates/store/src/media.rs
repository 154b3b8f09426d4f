//! The media repository's records: local media (uploaded, or `/create`d and waiting for its
//! upload) and the thumbnails made of it. The bytes are files the service keeps; these rows
//! say what the files are and who may see them.

use crate::{Dialect, Row, Store, StoreError, params};

/// A local media ID and what is known of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMediaRecord {
    pub media_id: String,
    /// Who uploaded (or `/create`d) it.
    pub user_id: String,
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
    /// `None` while a `/create`d ID waits for its upload.
    pub size: Option<u64>,
    /// SHA-256 of the content, in hex.
    pub sha256: Option<String>,
    /// The media ID whose file holds the bytes (itself, or an earlier upload of the same bytes).
    pub file_id: Option<String>,
    pub created_ts: i64,
    pub last_access_ts: Option<i64>,
    pub quarantined_by: Option<String>,
    pub safe_from_quarantine: bool,
    /// Uploaded while `enable_authenticated_media` was on.
    pub authenticated: bool,
    /// Until when a `/create`d ID waits for its upload.
    pub unused_expires_at: Option<i64>,
}

impl LocalMediaRecord {
    /// Whether the content has been uploaded.
    pub fn is_uploaded(&self) -> bool {
        self.size.is_some()
    }
}

/// The content of an upload, written when its file is in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLocalMedia {
    pub media_id: String,
    pub user_id: String,
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub file_id: String,
    pub created_ts: i64,
    pub authenticated: bool,
}

/// A thumbnail of a local media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThumbnailRecord {
    pub width: u32,
    pub height: u32,
    /// `crop` or `scale`.
    pub method: String,
    pub content_type: String,
    pub size: u64,
}

const MEDIA_COLUMNS: &str = "media_id, user_id, content_type, upload_name, size, sha256, file_id, created_ts, \
     last_access_ts, quarantined_by, safe_from_quarantine, authenticated, unused_expires_at";

fn media_record(row: &Row) -> Result<LocalMediaRecord, StoreError> {
    Ok(LocalMediaRecord {
        media_id: row.string(0)?,
        user_id: row.string(1)?,
        content_type: row.opt_string(2)?,
        upload_name: row.opt_string(3)?,
        size: row.opt_i64(4)?.map(|size| size.max(0) as u64),
        sha256: row.opt_string(5)?,
        file_id: row.opt_string(6)?,
        created_ts: row.i64(7)?,
        last_access_ts: row.opt_i64(8)?,
        quarantined_by: row.opt_string(9)?,
        safe_from_quarantine: row.bool(10)?,
        authenticated: row.bool(11)?,
        unused_expires_at: row.opt_i64(12)?,
    })
}

fn size_value(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

impl Store {
    /// Records an upload whose file is in place.
    pub async fn insert_local_media(&self, media: &NewLocalMedia) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO local_media (media_id, user_id, content_type, upload_name, size, sha256, file_id,
                     created_ts, authenticated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                params![
                    &media.media_id,
                    &media.user_id,
                    media.content_type.as_deref(),
                    media.upload_name.as_deref(),
                    size_value(media.size),
                    &media.sha256,
                    &media.file_id,
                    media.created_ts,
                    media.authenticated,
                ],
            )
            .await?;
        Ok(())
    }

    /// Reserves a media ID for a later upload (`/create`), unless the user already has
    /// `max_pending` IDs waiting (created after `now - expiry` and not uploaded yet). Returns
    /// whether it was reserved. Concurrent reservations of one user are serialised (on
    /// PostgreSQL by locking the user's row, on SQLite by its single writer).
    pub async fn create_pending_media(
        &self,
        media_id: &str,
        user_id: &str,
        created_ts: i64,
        expires_at: i64,
        authenticated: bool,
        max_pending: u64,
    ) -> Result<bool, StoreError> {
        let dialect = self.dialect();
        self.db
            .transaction(async |tx| {
                if dialect == Dialect::Postgres {
                    tx.query("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE", params![user_id]).await?;
                }
                let pending = tx
                    .query_opt(
                        "SELECT COUNT(*) FROM local_media
                         WHERE user_id = $1 AND unused_expires_at IS NOT NULL AND unused_expires_at > $2",
                        params![user_id, created_ts],
                    )
                    .await?
                    .map(|row| row.i64(0))
                    .transpose()?
                    .unwrap_or(0);
                if pending.max(0) as u64 >= max_pending {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO local_media (media_id, user_id, created_ts, authenticated, unused_expires_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    params![media_id, user_id, created_ts, authenticated, expires_at],
                )
                .await?;
                Ok(true)
            })
            .await
    }

    /// Fills a reserved media ID with its uploaded content. Returns `false`, changing nothing,
    /// when the ID is unknown or already has content (the first upload wins).
    pub async fn complete_pending_media(&self, media: &NewLocalMedia) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "UPDATE local_media SET content_type = $2, upload_name = $3, size = $4, sha256 = $5,
                     file_id = $6, unused_expires_at = NULL
                 WHERE media_id = $1 AND size IS NULL",
                params![
                    &media.media_id,
                    media.content_type.as_deref(),
                    media.upload_name.as_deref(),
                    size_value(media.size),
                    &media.sha256,
                    &media.file_id,
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    /// A local media ID's record.
    pub async fn local_media(&self, media_id: &str) -> Result<Option<LocalMediaRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                &format!("SELECT {MEDIA_COLUMNS} FROM local_media WHERE media_id = $1"),
                params![media_id],
            )
            .await?;
        row.as_ref().map(media_record).transpose()
    }

    /// The local media a user uploaded or reserved, oldest first.
    pub async fn local_media_of_user(&self, user_id: &str) -> Result<Vec<LocalMediaRecord>, StoreError> {
        let rows = self
            .db
            .query(
                &format!(
                    "SELECT {MEDIA_COLUMNS} FROM local_media WHERE user_id = $1 ORDER BY created_ts, media_id"
                ),
                params![user_id],
            )
            .await?;
        rows.iter().map(media_record).collect()
    }

    /// The file holding content with this SHA-256 (hex), if any upload stored it already.
    pub async fn local_media_file_by_sha256(&self, sha256: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT file_id FROM local_media WHERE sha256 = $1 AND file_id IS NOT NULL
                 ORDER BY created_ts LIMIT 1",
                params![sha256],
            )
            .await?;
        row.map(|row| row.string(0)).transpose()
    }

    /// Records that a local media was read at `ts`.
    pub async fn touch_local_media(&self, media_id: &str, ts: i64) -> Result<(), StoreError> {
        self.db
            .execute("UPDATE local_media SET last_access_ts = $2 WHERE media_id = $1", params![media_id, ts])
            .await?;
        Ok(())
    }

    /// Forgets reserved media IDs whose upload never came before `now`; returns how many.
    pub async fn delete_expired_pending_media(&self, now: i64) -> Result<u64, StoreError> {
        self.db
            .execute(
                "DELETE FROM local_media
                 WHERE size IS NULL AND unused_expires_at IS NOT NULL AND unused_expires_at <= $1",
                params![now],
            )
            .await
    }

    /// Records a thumbnail of a local media (replacing a record of the same size, method and
    /// type).
    pub async fn insert_local_thumbnail(
        &self,
        media_id: &str,
        thumbnail: &ThumbnailRecord,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO local_media_thumbnails (media_id, width, height, method, content_type, size)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (media_id, width, height, method, content_type) DO UPDATE SET size = $6",
                params![
                    media_id,
                    thumbnail.width,
                    thumbnail.height,
                    &thumbnail.method,
                    &thumbnail.content_type,
                    size_value(thumbnail.size),
                ],
            )
            .await?;
        Ok(())
    }

    /// The thumbnails of a local media, smallest first.
    pub async fn local_thumbnails(&self, media_id: &str) -> Result<Vec<ThumbnailRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT width, height, method, content_type, size FROM local_media_thumbnails
                 WHERE media_id = $1 ORDER BY width, height, method, content_type",
                params![media_id],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ThumbnailRecord {
                    width: u32::try_from(row.i64(0)?).unwrap_or(0),
                    height: u32::try_from(row.i64(1)?).unwrap_or(0),
                    method: row.string(2)?,
                    content_type: row.string(3)?,
                    size: row.i64(4)?.max(0) as u64,
                })
            })
            .collect()
    }
}
