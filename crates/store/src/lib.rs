//! All of Myelin's SQL.
//!
//! # Layout
//!
//! - [`engine`]: the one API over SQLite (rusqlite) and PostgreSQL (tokio-postgres + deadpool),
//!   values and rows, and migrations.
//! - One module per data area (`users`, `devices`, `tokens`, `uia`, `profiles`,
//!   `registration`, `secrets`, `e2e_keys`, `cross_signing`, `device_lists`, `key_backup`, `media`, `server_keys`, `events`, `relations`, `state`, `rooms`, `to_device`), each an `impl Store` block returning domain
//!   types, never rows.
//!
//! This is the only crate that contains SQL.

pub mod admin_media;
pub mod admin_rooms;
pub mod admin_users;
pub mod appservice;
pub mod cross_signing;
pub mod dehydrated;
pub mod device_lists;
pub mod devices;
pub mod e2e_keys;
pub mod engine;
pub mod events;
pub mod federation_queue;
pub mod federation_transactions;
pub mod key_backup;
pub mod media;
pub mod monthly_active;
pub mod open_id_tokens;
pub mod profiles;
pub mod push;
pub mod registration;
pub mod relations;
pub mod remote_device_lists;
pub mod remote_media;
pub mod room_stats;
pub mod rooms;
pub mod search;
mod secrets;
pub mod server_keys;
mod sliding_sync;
pub mod state;
pub mod stripped_state;
pub mod sync;
pub mod to_device;
pub mod tokens;
pub mod uia;
pub mod users;

pub use admin_media::{MediaStatsOrder, MediaStatsQuery, UserMediaStats};
pub use admin_rooms::{AdminRoomTask, PurgeHistoryOutcome, ScheduledTaskRecord};
pub use admin_users::{
    AdminUserChanges, SentEvent, UserListEntry, UserListQuery, UserOrder, UserRedactionRecord,
    UserReportRecord, UserReportsQuery,
};
pub use cross_signing::{CrossSigningKeyRecord, CrossSigningSignatureRecord};
pub use dehydrated::DehydratedDeviceRecord;
pub use device_lists::MembershipTransition;
pub use devices::DeviceRecord;
pub use e2e_keys::{DeviceKeyCounts, DeviceKeysRecord, KeysUploadRecord, OneTimeKeyRecord};
pub use engine::{Db, Dialect, Durability, Row, Tx, Value};
pub use events::{
    CurrentStateChange, EventFilterSql, NewEvent, NewOutlier, NewRelation, PersistedEvent, RemoteBuilt,
    RemoteEvent, StateEntry, StoredEvent, TxnRecord,
};
pub use key_backup::{
    BackupKeysState, BackupKeysWrite, BackupVersionRecord, RoomKeyRecord, RoomKeysSelection,
};
pub use media::{
    DeletedMedia, LocalMediaRecord, NewLocalMedia, OldMediaQuery, ThumbnailRecord, UserMediaOrder,
};
pub use registration::RegistrationTokenRecord;
pub use remote_device_lists::RemoteDeviceList;
pub use remote_media::{DeletedRemoteMedia, RemoteMediaRecord};
pub use room_stats::{RoomListOrder, RoomListQuery, RoomStatsRecord};
pub use rooms::{MembershipChange, NewReport, RoomRecord};
pub use server_keys::{ServerKeyDocument, ServerVerifyKeyRecord};
pub use sliding_sync::{NewSlidingSyncPosition, PositionedMembership, SlidingSyncConnection};
pub use state::StateDelta;
pub use sync::{AccountDataRecord, PresenceRecord, ReceiptRecord};
pub use to_device::{NewToDeviceMessages, ToDeviceRecord};
pub use tokens::{AccessTokenRecord, NewAccessToken, NewLoginSession, NewRefreshToken, RefreshTokenRecord};
pub use uia::UiaSessionRecord;
pub use users::{NewUser, RateLimitOverride, UserRecord};

use myelin_config::DatabaseConfig;

/// Storage failures. None of them is the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("migration: {0}")]
    Migration(String),
    #[error("unexpected data in the database: {0}")]
    Decode(String),
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A batch of transactions could not be committed (every member fails with it).
    #[error("commit failed: {0}")]
    Commit(String),
    /// A statement run on a blocking thread did not finish (the thread panicked).
    #[error("blocking read: {0}")]
    Blocking(String),
}

impl StoreError {
    /// Whether a uniqueness constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => {
                error.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || error.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            StoreError::Postgres(error) => {
                error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

/// The one store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Where sliding sync connection positions are kept: on SQLite a database file of their
    /// own beside the main one (see [`sliding_sync`]), on PostgreSQL the same database.
    sliding: Db,
}

impl Store {
    /// Opens the configured database and brings its schema up to date.
    pub async fn open(config: &DatabaseConfig) -> Result<Store, StoreError> {
        let db = Db::open(config).await?;
        let sliding = match config {
            DatabaseConfig::Sqlite { path } => sliding_sync::open_sqlite_file(path).await?,
            DatabaseConfig::Postgres(_) => db.clone(),
        };
        let store = Store { db, sliding };
        store.backfill_room_stats().await?;
        Ok(store)
    }

    /// The engine underneath, for tests only (the `test-hooks` feature, which
    /// `myelin-test-support` turns on): everything else reaches data through `Store` methods.
    #[cfg(feature = "test-hooks")]
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }
}

/// A `LIKE` pattern (with `ESCAPE '\\'`) matching text that contains `text` literally.
pub(crate) fn like_contains(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// `column` lowered for a `LIKE` against a lowered pattern: as it is on SQLite, whose `LIKE`
/// ignores ASCII case already (and whose `LOWER` folds ASCII alone), so that a scan does not
/// lower every row; `LOWER(column)` on PostgreSQL.
pub(crate) fn like_lowered(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Sqlite => column.to_owned(),
        Dialect::Postgres => format!("LOWER({column})"),
    }
}

/// The total of a paged list read from its page, when the page says it: a page shorter than
/// `limit` that starts inside the matches (or at 0) ends them. `None`: count them.
pub(crate) fn total_from_page(from: u64, limit: u64, page_len: usize) -> Option<u64> {
    let page_len = page_len as u64;
    (page_len < limit && (page_len > 0 || from == 0)).then_some(from + page_len)
}

/// A `LIKE` pattern (with `ESCAPE '\\'`) matching the user IDs of a server (`%:server`).
pub(crate) fn like_users_of(server_name: &str) -> String {
    let escaped = server_name.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%:{escaped}")
}

/// `$1, $2, ..., $n`: the placeholders of an `IN (...)` list.
pub(crate) fn placeholder_list(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `(a OR b OR ...)` nested as a balanced tree, so that a long list of conditions stays
/// within SQLite's expression depth (1,000 by default; a plain chain of `OR`s is as deep as
/// it is long). `FALSE` for no condition.
pub(crate) fn any_of(conditions: &[String]) -> String {
    match conditions {
        [] => "FALSE".to_owned(),
        [one] => one.clone(),
        _ => {
            let (left, right) = conditions.split_at(conditions.len() / 2);
            format!("({} OR {})", any_of(left), any_of(right))
        }
    }
}

/// Milliseconds since the UNIX epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
