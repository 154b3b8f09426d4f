//! SQLite: one writer connection (behind an async mutex, so a transaction may span awaits) and
//! a growing set of read-only connections. Statements run inline on the calling task: SQLite
//! work is microseconds, far cheaper than a hop to another thread. Reads that may take long
//! (full-text search, whose cost grows with the index) are the exception: `Db::query_slow`
//! runs them on a blocking thread with a reader connection of their own.
//!
//! Group commit: a transaction runs as a savepoint inside the writer's open batch (one SQLite
//! transaction). When more writers are queued (or the caller says more work is on its way),
//! the batch stays open and the caller waits for it to be committed by a later member; the
//! last member of a burst commits for everyone. One COMMIT (one WAL append) then covers many
//! transactions, and pages they share (index leaves, the full-text index) are written once.
//! The WAL is fsynced after the commit, outside the writer (`synchronous=NORMAL` plus our
//! own fsync): one fsync covers every commit made before it started, while the writer goes
//! on with the next batch. Nobody is acknowledged before the batch holding their transaction
//! is on disk; a failed commit fails every member.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use super::{Row, Value};
use crate::StoreError;

pub(crate) struct SqliteEngine {
    /// Tells the checkpoint thread to stop.
    stop: Arc<AtomicBool>,
    path: PathBuf,
    writer: tokio::sync::Mutex<Writer>,
    /// Tasks waiting for the writer.
    waiting: AtomicUsize,
    /// Commits made (see [`Writer::commits`]) and commits known to be on disk.
    commits: Arc<AtomicU64>,
    synced: AtomicU64,
    /// Held by whoever is fsyncing the WAL.
    syncing: tokio::sync::Mutex<Option<Arc<std::fs::File>>>,
    readers: Mutex<Vec<Connection>>,
}

/// Transactions one COMMIT may cover at most.
const MAX_BATCH: usize = 64;

/// How long a member of an open batch waits for someone else to commit it before doing it
/// itself (the member expected to follow may have been cancelled).
const BATCH_WAIT: Duration = Duration::from_millis(3);

/// The writer connection and the batch (open SQLite transaction) it may be in.
pub(crate) struct Writer {
    pub(crate) connection: Connection,
    batch: Option<Batch>,
    /// Commits made so far (shared with the fsync side).
    commits: Arc<AtomicU64>,
}

struct Batch {
    /// Transactions released into the batch so far.
    members: usize,
    outcome: Arc<tokio::sync::watch::Sender<Option<Result<u64, String>>>>,
}

/// A transaction's place in a batch that is not committed yet.
pub(crate) struct PendingCommit {
    /// The batch's commit: its sequence number, or why it failed.
    outcome: Arc<tokio::sync::watch::Sender<Option<Result<u64, String>>>>,
}

/// Counts a task among those waiting for the writer while it exists.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The writer, held by one transaction (a savepoint inside the batch). Dropped mid-way (the
/// task was cancelled), it rolls the savepoint back and leaves the batch to its members.
pub(crate) struct WriterGuard<'a> {
    guard: tokio::sync::MutexGuard<'a, Writer>,
    in_savepoint: bool,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.guard.connection
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if self.in_savepoint {
            self.in_savepoint = false;
            let _ = self.guard.rollback_savepoint();
            if self.guard.batch.as_ref().is_some_and(|b| b.members == 0) {
                let _ = self.guard.finish_batch();
            }
        }
    }
}

impl Writer {
    fn rollback_savepoint(&mut self) -> Result<(), StoreError> {
        if self.connection.is_autocommit() {
            // SQLite aborted the whole transaction (I/O error, disk full): the batch is lost.
            if let Some(batch) = self.batch.take() {
                batch.outcome.send_replace(Some(Err("the transaction was aborted".to_owned())));
            }
            return Ok(());
        }
        self.connection.execute_batch("ROLLBACK TO myelin_tx; RELEASE myelin_tx")?;
        Ok(())
    }

    /// Commits the open batch (rolls it back when it has no members) and tells its members.
    fn finish_batch(&mut self) -> Result<(), StoreError> {
        let Some(batch) = self.batch.take() else { return Ok(()) };
        if batch.members == 0 {
            let result = self.connection.execute_batch("ROLLBACK");
            batch.outcome.send_replace(Some(Ok(0)));
            return Ok(result?);
        }
        match self.connection.execute_batch("COMMIT") {
            Ok(()) => {
                let sequence = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
                batch.outcome.send_replace(Some(Ok(sequence)));
                Ok(())
            }
            Err(error) => {
                if !self.connection.is_autocommit() {
                    let _ = self.connection.execute_batch("ROLLBACK");
                }
                batch.outcome.send_replace(Some(Err(error.to_string())));
                Err(error.into())
            }
        }
    }
}

impl PendingCommit {
    /// Waits until the batch is committed (committing it if nobody else does) and its commit
    /// is on disk.
    pub(crate) async fn wait(self, engine: &SqliteEngine) -> Result<(), StoreError> {
        let sequence = self.committed(engine).await?;
        engine.sync_to(sequence).await
    }

    /// Waits until the batch is committed (committing it if nobody else does), not for its
    /// commit to reach the disk; returns the commit's sequence number.
    pub(crate) async fn committed(&self, engine: &SqliteEngine) -> Result<u64, StoreError> {
        let mut receiver = self.outcome.subscribe();
        let sequence = loop {
            if let Some(outcome) = receiver.borrow_and_update().clone() {
                break outcome.map_err(StoreError::Commit)?;
            }
            if tokio::time::timeout(BATCH_WAIT, receiver.changed()).await.is_ok() {
                continue;
            }
            // Nobody committed in time: commit the batch if it is still open.
            let mut writer = engine.writer.lock().await;
            if writer.batch.as_ref().is_some_and(|b| Arc::ptr_eq(&b.outcome, &self.outcome)) {
                writer.finish_batch()?;
            }
        };
        Ok(sequence)
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*v))),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

/// Rewrites PostgreSQL-style `$1` placeholders into SQLite's `?1`, leaving string literals alone.
pub(crate) fn rewrite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_string = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_string = !in_string;
            out.push(c);
        } else if c == '$' && !in_string && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn configure(connection: &Connection) -> Result<(), StoreError> {
    connection.busy_timeout(Duration::from_secs(30))?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    // Statement journals and sorts stay in memory instead of temporary files (a file per
    // statement journal was a third of the cost of an insert).
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // The query planner's stability guarantee: a cached statement keeps its plan, instead of
    // being prepared again whenever a new value is bound to a `LIMIT` or compared parameter.
    connection.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    connection.set_prepared_statement_cache_capacity(256);
    Ok(())
}

fn read_row(row: &rusqlite::Row<'_>, n_columns: usize) -> rusqlite::Result<Row> {
    let mut values = Vec::with_capacity(n_columns);
    for index in 0..n_columns {
        values.push(match row.get_ref(index)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Real(v),
            ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
            ValueRef::Blob(v) => Value::Blob(v.to_vec()),
        });
    }
    Ok(Row { values })
}

pub(crate) fn query(connection: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
    let sql = rewrite_placeholders(sql);
    let mut statement = connection.prepare_cached(&sql)?;
    let n_columns = statement.column_count();
    let rows = statement
        .query_map(rusqlite::params_from_iter(params.iter()), |row| read_row(row, n_columns))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn execute(connection: &Connection, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
    let sql = rewrite_placeholders(sql);
    let mut statement = connection.prepare_cached(&sql)?;
    let changed = statement.execute(rusqlite::params_from_iter(params.iter()))?;
    Ok(changed as u64)
}

/// WAL length (in pages) beyond which the checkpoint thread forces the WAL to start over.
const RESTART_FRAMES: i64 = 4096;

/// How long a RESTART checkpoint waits for readers of older snapshots to finish. Writers wait
/// while it does, so it gives up soon (and tries again at the next tick) rather than hold
/// every write back behind a long read for the connections' 30 s busy timeout.
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// How often the checkpoint thread looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// How long commits must have paused before a checkpoint starts. A commit is followed by the
/// work it wakes (long-polling syncs answered, transactions sent to appservices, pushes), and
/// a checkpoint's writes and fsync slow everything on this machine down while they run (on a
/// small virtual machine, requests taking 3x their usual CPU time): so it waits for that work
/// to be done rather than start in the middle of it.
const CHECKPOINT_QUIET: Duration = Duration::from_millis(10);

/// The longest a checkpoint waits for commits to pause, under a steady stream of them.
const CHECKPOINT_LONGEST_WAIT: Duration = Duration::from_millis(500);

/// Copies the WAL back into the database file from a thread of its own, so that requests never
/// pay for it, in a pause between commits (see [`CHECKPOINT_QUIET`]). PASSIVE checkpoints never
/// block the writer or readers; the writer restarts the WAL from its beginning once a checkpoint
/// has caught up (and `journal_size_limit` trims it). The thread stops when the engine is
/// dropped.
fn spawn_checkpointer(path: &Path, stop: Arc<AtomicBool>, commits: Arc<AtomicU64>) -> Result<(), StoreError> {
    let connection = Connection::open(path)?;
    configure(&connection)?;
    connection.busy_timeout(RESTART_WAIT)?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".to_owned())
        .spawn(move || {
            // The WAL's length and how much of it is copied back, in frames.
            let checkpoint = |mode: &str| {
                connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                    Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                })
            };
            // Commits made when the WAL was last copied back whole.
            let mut caught_up = None;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(CHECKPOINT_EVERY);
                if caught_up == Some(commits.load(Ordering::SeqCst)) {
                    continue;
                }
                let waiting_since = Instant::now();
                loop {
                    let seen = commits.load(Ordering::SeqCst);
                    std::thread::sleep(CHECKPOINT_QUIET);
                    let paused = commits.load(Ordering::SeqCst) == seen;
                    if paused
                        || waiting_since.elapsed() >= CHECKPOINT_LONGEST_WAIT
                        || stop.load(Ordering::Relaxed)
                    {
                        break;
                    }
                }
                let before = commits.load(Ordering::SeqCst);
                match checkpoint("PASSIVE") {
                    // Under steady load some reader always holds an older snapshot and the WAL
                    // is never restarted; a long WAL slows every read. RESTART waits for the
                    // readers to move on (holding new writes back meanwhile) so that the next
                    // write starts the WAL over.
                    Ok((frames, _)) if frames > RESTART_FRAMES => {
                        caught_up = None;
                        if let Err(error) = checkpoint("RESTART") {
                            tracing::debug!(%error, "WAL restart failed");
                        }
                    }
                    Ok((frames, copied)) => caught_up = (copied >= frames).then_some(before),
                    Err(error) => tracing::debug!(%error, "WAL checkpoint failed"),
                }
            }
        })
        .map_err(|e| StoreError::Open(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

impl SqliteEngine {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", parent.display())))?;
        }
        let writer = Connection::open(path)?;
        configure(&writer)?;
        // WAL lets readers proceed while the writer commits; NORMAL sync is durable against
        // process crashes, and the WAL is fsynced at checkpoints.
        let mode: String = writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open(format!("SQLite refused WAL mode (got {mode})")));
        }
        // FULL: a commit is on disk (the WAL is fsynced) before it is acknowledged. Commits are
        // grouped under load (see `Db::transaction`), so the fsync is shared.
        // NORMAL: SQLite does not fsync the WAL at each commit; `sync_to` does, outside the
        // writer, before any commit is acknowledged (see the module documentation).
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints run on a background thread, not inside a request's commit.
        writer.pragma_update(None, "wal_autocheckpoint", "0")?;
        writer.pragma_update(None, "journal_size_limit", 32 * 1024 * 1024)?;
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        spawn_checkpointer(path, stop.clone(), commits.clone())?;
        Ok(SqliteEngine {
            stop,
            path: path.to_owned(),
            writer: tokio::sync::Mutex::new(Writer {
                connection: writer,
                batch: None,
                commits: commits.clone(),
            }),
            waiting: AtomicUsize::new(0),
            commits,
            synced: AtomicU64::new(0),
            syncing: tokio::sync::Mutex::new(None),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn take_reader(&self) -> Result<Connection, StoreError> {
        if let Some(connection) = self.readers.lock().pop() {
            return Ok(connection);
        }
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        configure(&connection)?;
        Ok(connection)
    }

    fn put_reader(&self, connection: Connection) {
        let mut readers = self.readers.lock();
        if readers.len() < 16 {
            readers.push(connection);
        }
    }

    /// Commits made so far.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Runs a read-only statement on a reader connection.
    pub(crate) fn read(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let connection = self.take_reader()?;
        let result = query(&connection, sql, params);
        self.put_reader(connection);
        result
    }

    /// Returns once commit number `sequence` is on disk: fsyncs the WAL unless an fsync that
    /// started after that commit already did. Commits made while one fsync runs share the next.
    async fn sync_to(&self, sequence: u64) -> Result<(), StoreError> {
        if self.synced.load(Ordering::SeqCst) >= sequence {
            return Ok(());
        }
        let mut file = self.syncing.lock().await;
        if self.synced.load(Ordering::SeqCst) >= sequence {
            return Ok(());
        }
        let target = self.commits.load(Ordering::SeqCst);
        let wal = match &*file {
            Some(wal) => wal.clone(),
            None => {
                let mut name = self.path.clone().into_os_string();
                name.push("-wal");
                let wal = Arc::new(
                    std::fs::OpenOptions::new()
                        .read(true)
                        .open(&name)
                        .map_err(|e| StoreError::Commit(format!("cannot open the WAL: {e}")))?,
                );
                *file = Some(wal.clone());
                wal
            }
        };
        tokio::task::spawn_blocking(move || wal.sync_data())
            .await
            .map_err(|e| StoreError::Commit(format!("WAL fsync: {e}")))?
            .map_err(|e| StoreError::Commit(format!("WAL fsync: {e}")))?;
        self.synced.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    /// Takes the writer and opens a savepoint for one transaction, inside the open batch or a
    /// new one.
    pub(crate) async fn begin(&self) -> Result<WriterGuard<'_>, StoreError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = WaitingGuard(&self.waiting);
        let mut guard = self.writer.lock().await;
        drop(waiting);
        if guard.batch.is_none() {
            guard.connection.execute_batch("BEGIN IMMEDIATE")?;
            guard.batch = Some(Batch { members: 0, outcome: Arc::new(tokio::sync::watch::channel(None).0) });
        }
        if let Err(error) = guard.connection.execute_batch("SAVEPOINT myelin_tx") {
            // A batch whose transaction SQLite gave up on cannot take more work.
            if guard.connection.is_autocommit()
                && let Some(batch) = guard.batch.take()
            {
                batch.outcome.send_replace(Some(Err(error.to_string())));
            }
            return Err(error.into());
        }
        Ok(WriterGuard { guard, in_savepoint: true })
    }

    /// Ends a transaction begun with [`Self::begin`]: on success its savepoint joins the batch,
    /// which is committed now unless more work is expected (`more_coming`, or writers queued);
    /// then the caller must wait on the returned [`PendingCommit`]. On failure the savepoint
    /// is rolled back (the batch goes on without it).
    pub(crate) fn end(
        &self,
        mut writer: WriterGuard<'_>,
        success: bool,
        more_coming: bool,
    ) -> Result<Option<PendingCommit>, StoreError> {
        writer.in_savepoint = false;
        if success {
            if let Err(error) = writer.guard.connection.execute_batch("RELEASE myelin_tx") {
                let _ = writer.guard.rollback_savepoint();
                return Err(error.into());
            }
        } else {
            writer.guard.rollback_savepoint()?;
        }
        let Some(batch) = writer.guard.batch.as_mut() else {
            // SQLite aborted the batch's transaction.
            return if success {
                Err(StoreError::Commit("the transaction was aborted".to_owned()))
            } else {
                Ok(None)
            };
        };
        if success {
            batch.members += 1;
        }
        let keep_open = batch.members > 0
            && batch.members < MAX_BATCH
            && (more_coming || self.waiting.load(Ordering::SeqCst) > 0);
        let pending = success.then(|| PendingCommit { outcome: batch.outcome.clone() });
        if !keep_open {
            writer.guard.finish_batch()?;
        }
        Ok(pending)
    }
}

impl Drop for SqliteEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite_placeholders;

    #[test]
    fn placeholders_are_rewritten_outside_strings() {
        assert_eq!(
            rewrite_placeholders("SELECT a FROM t WHERE b = $1 AND c = '$2' AND d = $10"),
            "SELECT a FROM t WHERE b = ?1 AND c = '$2' AND d = ?10"
        );
    }
}
