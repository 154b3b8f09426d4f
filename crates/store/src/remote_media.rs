//! The remote media cache's records: other servers' media fetched for local clients, and the
//! thumbnails made of it here. The files are the service's; these rows say what they are.

use crate::media::ThumbnailRecord;
use crate::{Row, Store, StoreError, params};

/// A cached remote media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteMediaRecord {
    /// The server the media belongs to.
    pub media_origin: String,
    pub media_id: String,
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
    pub size: u64,
    /// SHA-256 of the content, in hex.
    pub sha256: String,
    /// The ID this server chose for the file (`remote_content/{origin}/ab/cd/rest`).
    pub file_id: String,
    pub created_ts: i64,
    pub last_access_ts: i64,
    pub quarantined_by: Option<String>,
    /// Fetched while `enable_authenticated_media` was on.
    pub authenticated: bool,
}

/// A cached remote media that was deleted: its origin and file, to remove from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedRemoteMedia {
    pub media_origin: String,
    pub media_id: String,
    pub file_id: String,
}

const COLUMNS: &str = "media_origin, media_id, content_type, upload_name, size, sha256, file_id, created_ts, \
     last_access_ts, quarantined_by, authenticated";

fn record(row: &Row) -> Result<RemoteMediaRecord, StoreError> {
    Ok(RemoteMediaRecord {
        media_origin: row.string(0)?,
        media_id: row.string(1)?,
        content_type: row.opt_string(2)?,
        upload_name: row.opt_string(3)?,
        size: row.i64(4)?.max(0) as u64,
        sha256: row.string(5)?,
        file_id: row.string(6)?,
        created_ts: row.i64(7)?,
        last_access_ts: row.i64(8)?,
        quarantined_by: row.opt_string(9)?,
        authenticated: row.bool(10)?,
    })
}

fn size_value(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

impl Store {
    /// A cached remote media, if this server holds it.
    pub async fn remote_media(
        &self,
        origin: &str,
        media_id: &str,
    ) -> Result<Option<RemoteMediaRecord>, StoreError> {
        self.db
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM remote_media_cache WHERE media_origin = $1 AND media_id = $2"
                ),
                params![origin, media_id],
            )
            .await?
            .map(|row| record(&row))
            .transpose()
    }

    /// Records a remote media whose file is in place. `false` when a record of it exists
    /// already (another download won): the caller removes its own file.
    pub async fn insert_remote_media(&self, media: &RemoteMediaRecord) -> Result<bool, StoreError> {
        let inserted = self
            .db
            .execute(
                "INSERT INTO remote_media_cache (media_origin, media_id, content_type, upload_name, size, sha256,
                     file_id, created_ts, last_access_ts, quarantined_by, authenticated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (media_origin, media_id) DO NOTHING",
                params![
                    &media.media_origin,
                    &media.media_id,
                    media.content_type.as_deref(),
                    media.upload_name.as_deref(),
                    size_value(media.size),
                    &media.sha256,
                    &media.file_id,
                    media.created_ts,
                    media.last_access_ts,
                    media.quarantined_by.as_deref(),
                    media.authenticated,
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    /// Sets the last-access time of cached remote media, `(origin, media ID)` each, in one
    /// transaction.
    pub async fn touch_remote_media_batch(
        &self,
        media: &[(String, String)],
        ts: i64,
    ) -> Result<(), StoreError> {
        if media.is_empty() {
            return Ok(());
        }
        self.db
            .transaction(async |tx| {
                for (origin, media_id) in media {
                    tx.execute(
                        "UPDATE remote_media_cache SET last_access_ts = $3
                         WHERE media_origin = $1 AND media_id = $2 AND last_access_ts < $3",
                        params![origin, media_id, ts],
                    )
                    .await?;
                }
                Ok(())
            })
            .await
    }

    /// Quarantines a cached remote media (`by` the admin's user ID) or releases it (`None`).
    /// Returns how many rows changed.
    pub async fn set_remote_media_quarantine(
        &self,
        origin: &str,
        media_id: &str,
        by: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.db
            .execute(
                "UPDATE remote_media_cache SET quarantined_by = $3 WHERE media_origin = $1 AND media_id = $2",
                params![origin, media_id, by],
            )
            .await
    }

    /// Deletes the records (and their thumbnails' records) of the cached remote media not read
    /// since `before_ts`, quarantined media excepted (Synapse's `purge_media_cache`), in one
    /// transaction. Returns what was deleted, so that its files go.
    pub async fn delete_old_remote_media(
        &self,
        before_ts: i64,
    ) -> Result<Vec<DeletedRemoteMedia>, StoreError> {
        self.db
            .transaction(async |tx| {
                let rows = tx
                    .query(
                        "DELETE FROM remote_media_cache WHERE last_access_ts < $1 AND quarantined_by IS NULL
                         RETURNING media_origin, media_id, file_id",
                        params![before_ts],
                    )
                    .await?;
                let mut deleted = Vec::with_capacity(rows.len());
                for row in &rows {
                    let media = DeletedRemoteMedia {
                        media_origin: row.string(0)?,
                        media_id: row.string(1)?,
                        file_id: row.string(2)?,
                    };
                    tx.execute(
                        "DELETE FROM remote_media_thumbnails WHERE media_origin = $1 AND media_id = $2",
                        params![&media.media_origin, &media.media_id],
                    )
                    .await?;
                    deleted.push(media);
                }
                Ok(deleted)
            })
            .await
    }

    /// Records a thumbnail of a cached remote media (replacing one of the same size, method
    /// and type).
    pub async fn insert_remote_thumbnail(
        &self,
        origin: &str,
        media_id: &str,
        thumbnail: &ThumbnailRecord,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO remote_media_thumbnails
                     (media_origin, media_id, width, height, method, content_type, size)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (media_origin, media_id, width, height, method, content_type) DO UPDATE SET size = $7",
                params![
                    origin,
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

    /// The thumbnails of a cached remote media, smallest first.
    pub async fn remote_thumbnails(
        &self,
        origin: &str,
        media_id: &str,
    ) -> Result<Vec<ThumbnailRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT width, height, method, content_type, size FROM remote_media_thumbnails
                 WHERE media_origin = $1 AND media_id = $2 ORDER BY width, height, method, content_type",
                params![origin, media_id],
            )
            .await?;
        rows.iter().map(crate::media::thumbnail_record).collect()
    }
}
