//! SQLite: one writer connection (behind an async mutex, so a transaction may span awaits) and
//! a growing set of read-only connections. Statements run inline on the calling task: SQLite
//! work is microseconds, far cheaper than a hop to another thread.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use super::{Row, Value};
use crate::StoreError;

pub(crate) struct SqliteEngine {
    path: PathBuf,
    writer: tokio::sync::Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
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
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(SqliteEngine {
            path: path.to_owned(),
            writer: tokio::sync::Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn take_reader(&self) -> Result<Connection, StoreError> {
        if let Some(connection) = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
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
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < 16 {
            readers.push(connection);
        }
    }

    /// Runs a read-only statement on a reader connection.
    pub(crate) fn read(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let connection = self.take_reader()?;
        let result = query(&connection, sql, params);
        self.put_reader(connection);
        result
    }

    pub(crate) async fn writer(&self) -> tokio::sync::MutexGuard<'_, Connection> {
        self.writer.lock().await
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
