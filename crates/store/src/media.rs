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

/// Which old local media [`Store::old_local_media`] lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldMediaQuery {
    /// Last read (or, never read, uploaded) before this time (ms).
    pub before_ts: i64,
    /// Larger than this many bytes.
    pub size_gt: u64,
    pub include_quarantined: bool,
    /// Include media protected from quarantine.
    pub include_protected: bool,
    /// Keep media used as a local user's profile avatar: the `mxc://{server}/` prefix.
    pub keep_avatars_with_prefix: Option<String>,
}

/// A deleted local media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedMedia {
    pub media_id: String,
    /// The file (named by its media ID) to delete with it: `None` when the media had no file
    /// (a pending upload) or another record still names its file.
    pub file_id: Option<String>,
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

/// A thumbnail row: `width, height, method, content_type, size`.
pub(crate) fn thumbnail_record(row: &Row) -> Result<ThumbnailRecord, StoreError> {
    Ok(ThumbnailRecord {
        width: u32::try_from(row.i64(0)?).unwrap_or(0),
        height: u32::try_from(row.i64(1)?).unwrap_or(0),
        method: row.string(2)?,
        content_type: row.string(3)?,
        size: row.i64(4)?.max(0) as u64,
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

    /// Records that these local media were read at `ts`, in one transaction (the batched
    /// accesses of downloads). An access time never moves backwards.
    pub async fn touch_local_media_batch(&self, media_ids: &[String], ts: i64) -> Result<(), StoreError> {
        if media_ids.is_empty() {
            return Ok(());
        }
        self.db
            .transaction(async |tx| {
                for media_id in media_ids {
                    tx.execute(
                        "UPDATE local_media SET last_access_ts = $2
                         WHERE media_id = $1 AND (last_access_ts IS NULL OR last_access_ts < $2)",
                        params![media_id, ts],
                    )
                    .await?;
                }
                Ok(())
            })
            .await
    }

    /// A page of the local media a user uploaded or reserved, oldest first: at most `limit`
    /// from position `from`, and how many there are in all.
    pub async fn local_media_of_user_page(
        &self,
        user_id: &str,
        from: u64,
        limit: u64,
    ) -> Result<(Vec<LocalMediaRecord>, u64), StoreError> {
        self.local_media_of_user_sorted(user_id, UserMediaOrder::CreatedTs, false, from, limit).await
    }

    /// A page of the local media a user uploaded or reserved, sorted by `order` (descending if
    /// `backwards`, the media ID breaking ties the same way): at most `limit` from position
    /// `from`, and how many there are in all.
    pub async fn local_media_of_user_sorted(
        &self,
        user_id: &str,
        order: UserMediaOrder,
        backwards: bool,
        from: u64,
        limit: u64,
    ) -> Result<(Vec<LocalMediaRecord>, u64), StoreError> {
        let dir = if backwards { "DESC" } else { "ASC" };
        let column = order.column();
        let rows = self
            .db
            .query(
                &format!(
                    "SELECT {MEDIA_COLUMNS} FROM local_media WHERE user_id = $1
                     ORDER BY {column} {dir}, media_id {dir} LIMIT $2 OFFSET $3"
                ),
                params![user_id, size_value(limit), size_value(from)],
            )
            .await?;
        let media = rows.iter().map(media_record).collect::<Result<Vec<_>, _>>()?;
        let total = self
            .db
            .query_opt("SELECT COUNT(*) FROM local_media WHERE user_id = $1", params![user_id])
            .await?
            .map(|row| row.i64(0))
            .transpose()?
            .unwrap_or(0);
        Ok((media, total.max(0) as u64))
    }

    /// Quarantines one local media and every other record of the same content (`by` is the
    /// admin's user ID), or releases the one media (`None`). Protected media
    /// (`safe_from_quarantine`) is never quarantined. Returns how many rows changed.
    pub async fn set_local_media_quarantine(
        &self,
        media_id: &str,
        by: Option<&str>,
    ) -> Result<u64, StoreError> {
        match by {
            Some(by) => {
                self.db
                    .execute(
                        "UPDATE local_media SET quarantined_by = $2
                         WHERE NOT safe_from_quarantine AND (media_id = $1 OR sha256 IN
                             (SELECT sha256 FROM local_media WHERE media_id = $1 AND sha256 IS NOT NULL))",
                        params![media_id, by],
                    )
                    .await
            }
            None => {
                self.db
                    .execute(
                        "UPDATE local_media SET quarantined_by = NULL
                         WHERE media_id = $1 AND quarantined_by IS NOT NULL",
                        params![media_id],
                    )
                    .await
            }
        }
    }

    /// Quarantines every local media of a user except protected media; returns how many.
    pub async fn quarantine_local_media_of_user(&self, user_id: &str, by: &str) -> Result<u64, StoreError> {
        self.db
            .execute(
                "UPDATE local_media SET quarantined_by = $2
                 WHERE user_id = $1 AND NOT safe_from_quarantine AND quarantined_by IS NULL",
                params![user_id, by],
            )
            .await
    }

    /// Protects a local media from quarantine (and from retention purges), or lifts that.
    /// Returns whether the media exists.
    pub async fn set_local_media_protected(
        &self,
        media_id: &str,
        protected: bool,
    ) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "UPDATE local_media SET safe_from_quarantine = $2 WHERE media_id = $1",
                params![media_id, protected],
            )
            .await?;
        Ok(changed == 1)
    }

    /// Uploaded local media last read (or, never read, uploaded) before `before_ts` and larger
    /// than `size_gt` bytes, oldest first, at most `limit` (Synapse's `get_local_media_ids`).
    pub async fn old_local_media(
        &self,
        query: &OldMediaQuery,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut sql = String::from(
            "SELECT media_id FROM local_media
             WHERE size IS NOT NULL AND COALESCE(last_access_ts, created_ts) < $1 AND size > $2",
        );
        if !query.include_quarantined {
            sql.push_str(" AND quarantined_by IS NULL");
        }
        if !query.include_protected {
            sql.push_str(" AND NOT safe_from_quarantine");
        }
        let mut params = params![query.before_ts, size_value(query.size_gt), size_value(limit)];
        if let Some(prefix) = &query.keep_avatars_with_prefix {
            // Profile values are JSON: an avatar is `"mxc://server/media_id"`, quotes included.
            sql.push_str(
                " AND NOT EXISTS (SELECT 1 FROM profile_fields
                     WHERE field = 'avatar_url' AND value = $4 || local_media.media_id || '\"')",
            );
            params.push(format!("\"{prefix}").into());
        }
        sql.push_str(" ORDER BY COALESCE(last_access_ts, created_ts), media_id LIMIT $3");
        let rows = self.db.query(&sql, params).await?;
        rows.iter().map(|row| row.string(0)).collect()
    }

    /// Deletes local media records and their thumbnails' records, in one transaction. Returns,
    /// for each media that existed, its ID and the file to delete: its `file_id` when no
    /// remaining record names that file any more (identical content is stored once).
    pub async fn delete_local_media(&self, media_ids: &[String]) -> Result<Vec<DeletedMedia>, StoreError> {
        self.db
            .transaction(async |tx| {
                let mut deleted = Vec::new();
                for media_id in media_ids {
                    let Some(row) = tx
                        .query_opt("SELECT file_id FROM local_media WHERE media_id = $1", params![media_id])
                        .await?
                    else {
                        continue;
                    };
                    let file_id = row.opt_string(0)?;
                    tx.execute("DELETE FROM local_media WHERE media_id = $1", params![media_id]).await?;
                    tx.execute("DELETE FROM local_media_thumbnails WHERE media_id = $1", params![media_id])
                        .await?;
                    deleted.push(DeletedMedia { media_id: media_id.clone(), file_id });
                }
                // A file goes only when no record still names it, and is named once.
                let mut seen = std::collections::HashSet::new();
                for media in &mut deleted {
                    if let Some(file_id) = &media.file_id {
                        let named = !seen.insert(file_id.clone())
                            || tx
                                .query_opt(
                                    "SELECT 1 FROM local_media WHERE file_id = $1 LIMIT 1",
                                    params![file_id.as_str()],
                                )
                                .await?
                                .is_some();
                        if named {
                            media.file_id = None;
                        }
                    }
                }
                Ok(deleted)
            })
            .await
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
        rows.iter().map(thumbnail_record).collect()
    }

    /// A page of a room's events in stream order: those after stream position `after`, at
    /// most `limit`, as (stream position, event JSON).
    pub async fn room_event_json_page(
        &self,
        room_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT stream_ordering, json FROM events
                 WHERE room_id = $1 AND stream_ordering > $2 ORDER BY stream_ordering LIMIT $3",
                params![room_id, after, limit],
            )
            .await?;
        rows.iter().map(|row| Ok((row.i64(0)?, row.string(1)?))).collect()
    }
}

/// The columns a user's media list may be sorted by (Synapse's `order_by` of
/// `/_synapse/admin/v1/users/{userId}/media`, which synapse-admin sends on a column click).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserMediaOrder {
    MediaId,
    UploadName,
    CreatedTs,
    LastAccessTs,
    MediaLength,
    MediaType,
    QuarantinedBy,
    SafeFromQuarantine,
}

impl UserMediaOrder {
    /// The order named by an `order_by` value, if it is one.
    pub fn parse(name: &str) -> Option<UserMediaOrder> {
        Some(match name {
            "media_id" => UserMediaOrder::MediaId,
            "upload_name" => UserMediaOrder::UploadName,
            "created_ts" => UserMediaOrder::CreatedTs,
            "last_access_ts" => UserMediaOrder::LastAccessTs,
            "media_length" => UserMediaOrder::MediaLength,
            "media_type" => UserMediaOrder::MediaType,
            "quarantined_by" => UserMediaOrder::QuarantinedBy,
            "safe_from_quarantine" => UserMediaOrder::SafeFromQuarantine,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            UserMediaOrder::MediaId => "media_id",
            UserMediaOrder::UploadName => "upload_name",
            UserMediaOrder::CreatedTs => "created_ts",
            UserMediaOrder::LastAccessTs => "last_access_ts",
            UserMediaOrder::MediaLength => "size",
            UserMediaOrder::MediaType => "content_type",
            UserMediaOrder::QuarantinedBy => "quarantined_by",
            UserMediaOrder::SafeFromQuarantine => "safe_from_quarantine",
        }
    }
}
