//! The engine layer, run on SQLite and PostgreSQL with the same bodies.

use myelin_store::{Dialect, StoreError, Value, params};
use myelin_test_support::{Engine, FreshDatabase, store_test};

/// The schema as the engine describes it: every table's columns and every index.
async fn schema_of(store: &myelin_store::Store) -> Vec<String> {
    let sql = match store.dialect() {
        Dialect::Sqlite => "SELECT type || ' ' || name || ' ' || COALESCE(sql, '') FROM sqlite_master ORDER BY type, name",
        Dialect::Postgres => {
            "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
               FROM information_schema.columns WHERE table_schema = current_schema()
             UNION ALL
             SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = current_schema()
             ORDER BY 1"
        }
    };
    store.db().query(sql, params![]).await.unwrap().iter().map(|row| row.string(0).unwrap()).collect()
}

async fn applied_migrations(store: &myelin_store::Store) -> Vec<(i64, String, i64)> {
    let rows = store
        .db()
        .query("SELECT version, name, applied_ts FROM schema_migrations ORDER BY version", params![])
        .await
        .unwrap();
    rows.iter().map(|r| (r.i64(0).unwrap(), r.string(1).unwrap(), r.i64(2).unwrap())).collect()
}

/// Opening a database runs the migrations; opening it again runs them again and changes
/// nothing: the same versions (applied once, at the same time), the same schema, the same data.
async fn migrations_are_idempotent_on(engine: Engine) {
    let Some(database) = FreshDatabase::create(engine).await else { return };
    let store = myelin_store::Store::open(&database.config).await.expect("open store");
    let migrations = applied_migrations(&store).await;
    assert!(!migrations.is_empty());
    assert_eq!((migrations[0].0, migrations[0].1.as_str()), (1, "init"));
    let versions: Vec<i64> = migrations.iter().map(|m| m.0).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    let schema = schema_of(&store).await;
    assert!(schema.len() > 10, "{schema:?}");
    store.get_or_create_secret("kept", || "across re-runs".to_owned()).await.unwrap();
    drop(store);

    let store = myelin_store::Store::open(&database.config).await.expect("open the store again");
    assert_eq!(applied_migrations(&store).await, migrations, "no migration ran twice");
    assert_eq!(schema_of(&store).await, schema);
    assert_eq!(store.get_or_create_secret("kept", || "replaced".to_owned()).await.unwrap(), "across re-runs");
    drop(store);
    drop(database);
}

mod migrations_are_recorded_and_idempotent {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        migrations_are_idempotent_on(Engine::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        migrations_are_idempotent_on(Engine::Postgres).await
    }
}

store_test!(values_round_trip, |store| async move {
    let db = store.db();
    db.execute(
        "CREATE TABLE roundtrip (i BIGINT, t TEXT, b BOOLEAN, n TEXT, bytes BYTEA_OR_BLOB)"
            .replace("BYTEA_OR_BLOB", if db.dialect() == Dialect::Postgres { "BYTEA" } else { "BLOB" })
            .as_str(),
        params![],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO roundtrip (i, t, b, n, bytes) VALUES ($1, $2, $3, $4, $5)",
        params![i64::MAX, "héllo 'quoted' $1", true, None::<String>, vec![0u8, 159, 255]],
    )
    .await
    .unwrap();
    let row = db.query_opt("SELECT i, t, b, n, bytes FROM roundtrip", params![]).await.unwrap().unwrap();
    assert_eq!(row.i64(0).unwrap(), i64::MAX);
    assert_eq!(row.string(1).unwrap(), "héllo 'quoted' $1");
    assert!(row.bool(2).unwrap());
    assert_eq!(row.opt_string(3).unwrap(), None);
    assert_eq!(row.opt_bytes(4).unwrap(), Some(vec![0u8, 159, 255]));
    // Reading a NULL as a required value is an error, not a panic.
    assert!(matches!(row.string(3), Err(StoreError::Decode(_))));
    assert!(matches!(row.i64(9), Err(StoreError::Decode(_))));
});

store_test!(transactions_commit_or_roll_back_as_a_whole, |store| async move {
    let db = store.db();
    db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL)", params![]).await.unwrap();
    db.transaction(async |tx| {
        tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", params!["a", 1]).await?;
        tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", params!["b", 2]).await?;
        Ok(())
    })
    .await
    .unwrap();
    let failed: Result<(), StoreError> = db
        .transaction(async |tx| {
            tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", params!["c", 3]).await?;
            // A duplicate key fails the whole transaction: "c" must not land either.
            tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", params!["a", 4]).await?;
            Ok(())
        })
        .await;
    let error = failed.unwrap_err();
    assert!(error.is_unique_violation(), "{error}");
    let rows = db.query("SELECT k, v FROM kv ORDER BY k", params![]).await.unwrap();
    let keys: Vec<String> = rows.iter().map(|r| r.string(0).unwrap()).collect();
    assert_eq!(keys, ["a", "b"]);
    // Reads inside a transaction see its own writes.
    let seen = db
        .transaction(async |tx| {
            tx.execute("UPDATE kv SET v = v + 10 WHERE k = $1", params!["a"]).await?;
            let row = tx.query_opt("SELECT v FROM kv WHERE k = $1", params!["a"]).await?.unwrap();
            row.i64(0)
        })
        .await
        .unwrap();
    assert_eq!(seen, 11);
});

store_test!(concurrent_transactions_do_not_lose_updates, |store| async move {
    let db = store.db().clone();
    db.execute("CREATE TABLE counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)", params![]).await.unwrap();
    db.execute("INSERT INTO counter (id, n) VALUES (1, 0)", params![]).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                db.execute("UPDATE counter SET n = n + 1 WHERE id = 1", params![]).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let row = db.query_opt("SELECT n FROM counter WHERE id = 1", params![]).await.unwrap().unwrap();
    assert_eq!(row.i64(0).unwrap(), 200);
});

store_test!(secrets_are_created_once, |store| async move {
    let first = store.get_or_create_secret("macaroon", || "first".to_owned()).await.unwrap();
    let second = store.get_or_create_secret("macaroon", || "second".to_owned()).await.unwrap();
    assert_eq!(first, "first");
    assert_eq!(second, "first");
});

store_test!(bad_sql_is_an_error_not_a_panic, |store| async move {
    let error = store.db().query("SELECT * FROM no_such_table", params![]).await.unwrap_err();
    assert!(!error.is_unique_violation());
    let value = Value::from(Some(3i64));
    assert_eq!(value, Value::Int(3));
});

#[tokio::test]
async fn reopening_a_database_keeps_its_data_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let config = myelin_config::DatabaseConfig::Sqlite { path: dir.path().join("db.sqlite") };
    let store = myelin_store::Store::open(&config).await.unwrap();
    store.get_or_create_secret("k", || "v".to_owned()).await.unwrap();
    drop(store);
    let store = myelin_store::Store::open(&config).await.unwrap();
    assert_eq!(store.get_or_create_secret("k", || "other".to_owned()).await.unwrap(), "v");
}

store_test!(concurrent_transactions_share_commits_and_fail_alone, |store| async move {
    let db = store.db();
    db.execute("CREATE TABLE gc (k BIGINT PRIMARY KEY, v BIGINT NOT NULL)", params![]).await.unwrap();
    // Many writers at once: on SQLite they are grouped into shared commits. Every successful
    // one is visible to readers once it returns; the ones that fail (duplicate keys) leave no
    // trace and do not take the others down with them.
    let commits_before = db.sqlite_commits();
    // A first transaction holds the writer until all 200 have started and queued behind it
    // (on SQLite), so that they are waiting at once however the tasks are scheduled.
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let holder = {
        let (db, started) = (db.clone(), started.clone());
        tokio::spawn(async move {
            db.transaction(async |tx| {
                tx.execute("INSERT INTO gc (k, v) VALUES (1000, 0)", params![]).await?;
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
                while started.load(std::sync::atomic::Ordering::SeqCst) < 200 {
                    assert!(tokio::time::Instant::now() < deadline, "the writers never started");
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Ok(())
            })
            .await
        })
    };
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let db = db.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            db.transaction(async |tx| {
                tx.execute("INSERT INTO gc (k, v) VALUES ($1, $2)", params![i, i]).await?;
                if i % 10 == 3 {
                    // Fails the transaction after it wrote something.
                    tx.execute("INSERT INTO gc (k, v) VALUES ($1, $2)", params![i, i]).await?;
                }
                Ok(())
            })
            .await?;
            let seen = db.query_opt("SELECT v FROM gc WHERE k = $1", params![i]).await?;
            assert!(seen.is_some(), "a committed transaction is visible once acknowledged");
            Ok::<_, StoreError>(())
        }));
    }
    holder.await.unwrap().unwrap();
    let mut failed = 0;
    for task in tasks {
        if task.await.unwrap().is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 20);
    let count = db.query_opt("SELECT COUNT(*) FROM gc", params![]).await.unwrap().unwrap().i64(0).unwrap();
    assert_eq!(count, 181);
    let stray = db.query("SELECT k FROM gc WHERE k % 10 = 3", params![]).await.unwrap();
    assert!(stray.is_empty());
    // On SQLite, the 181 transactions that committed shared COMMITs (usually 3: at most 64
    // transactions go in one; fewer under load, but never one each). PostgreSQL commits each
    // one and shares WAL flushes itself: nothing to count there.
    if let (Some(before), Some(after)) = (commits_before, db.sqlite_commits()) {
        let commits = after - before;
        assert!((3..181).contains(&commits), "181 transactions in {commits} commits");
    }
});

store_test!(batched_transactions_wait_for_their_commit, |store| async move {
    let db = store.db();
    db.execute("CREATE TABLE gcb (k BIGINT PRIMARY KEY)", params![]).await.unwrap();
    // `more_coming` keeps the batch open for a follower; the follower's plain transaction
    // commits both.
    let before = db.sqlite_commits();
    let (_, first) = db
        .transaction_batched(true, async |tx| tx.execute("INSERT INTO gcb (k) VALUES (1)", params![]).await)
        .await
        .unwrap();
    db.transaction(async |tx| tx.execute("INSERT INTO gcb (k) VALUES (2)", params![]).await).await.unwrap();
    first.wait().await.unwrap();
    // On SQLite both went out in one COMMIT.
    let shared = db.sqlite_commits();
    if let (Some(before), Some(shared)) = (before, shared) {
        assert_eq!(shared - before, 1, "the two transactions shared one commit");
    }
    // Nobody follows: the member commits the batch itself after a short wait.
    let (_, lone) = db
        .transaction_batched(true, async |tx| tx.execute("INSERT INTO gcb (k) VALUES (3)", params![]).await)
        .await
        .unwrap();
    lone.wait().await.unwrap();
    if let (Some(shared), Some(after)) = (shared, db.sqlite_commits()) {
        assert_eq!(after - shared, 1, "the lone member committed by itself");
    }
    let count = db.query_opt("SELECT COUNT(*) FROM gcb", params![]).await.unwrap().unwrap().i64(0).unwrap();
    assert_eq!(count, 3);
});

store_test!(a_cancelled_transaction_leaves_the_writer_usable, |store| async move {
    let db = store.db();
    db.execute("CREATE TABLE gcc (k BIGINT PRIMARY KEY)", params![]).await.unwrap();
    // The task is dropped in the middle of its transaction (a client that went away).
    let cancelled = db.transaction(async |tx| {
        tx.execute("INSERT INTO gcc (k) VALUES (1)", params![]).await?;
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        Ok(())
    });
    assert!(tokio::time::timeout(std::time::Duration::from_millis(50), cancelled).await.is_err());
    db.transaction(async |tx| tx.execute("INSERT INTO gcc (k) VALUES (2)", params![]).await).await.unwrap();
    let keys = db.query("SELECT k FROM gcc ORDER BY k", params![]).await.unwrap();
    assert_eq!(keys.iter().map(|r| r.i64(0).unwrap()).collect::<Vec<_>>(), vec![2]);
});

store_test!(an_abandoned_batched_transaction_is_still_committed, |store| async move {
    let db = store.db();
    db.execute("CREATE TABLE gcd (k BIGINT PRIMARY KEY)", params![]).await.unwrap();
    // `more_coming` keeps the batch open for a follower that never comes, and the member's
    // waiter is dropped (its task was cancelled): the batch must not stay open for ever.
    let (_, abandoned) = db
        .transaction_batched(true, async |tx| tx.execute("INSERT INTO gcd (k) VALUES (1)", params![]).await)
        .await
        .unwrap();
    drop(abandoned);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let count =
            db.query_opt("SELECT COUNT(*) FROM gcd", params![]).await.unwrap().unwrap().i64(0).unwrap();
        if count == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the abandoned batch was never committed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
});

store_test!(unsynced_transactions_are_committed_at_once_or_rolled_back, |store| async move {
    let db = store.db();
    db.execute("CREATE TABLE gcu (k BIGINT PRIMARY KEY)", params![]).await.unwrap();
    // A batch kept open for a follower: the unsynced transaction joins it and returns only
    // once it is committed, so that readers see both rows at once.
    let (_, open) = db
        .transaction_batched(true, async |tx| tx.execute("INSERT INTO gcu (k) VALUES (1)", params![]).await)
        .await
        .unwrap();
    db.transaction_unsynced(async |tx| tx.execute("INSERT INTO gcu (k) VALUES (2)", params![]).await)
        .await
        .unwrap();
    let keys = db.query("SELECT k FROM gcu ORDER BY k", params![]).await.unwrap();
    assert_eq!(keys.iter().map(|r| r.i64(0).unwrap()).collect::<Vec<_>>(), vec![1, 2]);
    open.wait().await.unwrap();
    // A body that fails leaves nothing behind, and the writer usable.
    let failed = db
        .transaction_unsynced(async |tx| {
            tx.execute("INSERT INTO gcu (k) VALUES (3)", params![]).await?;
            Err::<(), _>(StoreError::Commit("refused".to_owned()))
        })
        .await;
    assert!(failed.is_err());
    db.transaction_unsynced(async |tx| tx.execute("INSERT INTO gcu (k) VALUES (4)", params![]).await)
        .await
        .unwrap();
    let keys = db.query("SELECT k FROM gcu ORDER BY k", params![]).await.unwrap();
    assert_eq!(keys.iter().map(|r| r.i64(0).unwrap()).collect::<Vec<_>>(), vec![1, 2, 4]);
});

/// A store on a SQLite file of its own, with a table `filler` of blobs: the file's directory
/// (removed when dropped), the file, the store.
async fn sqlite_store_with_filler() -> (tempfile::TempDir, std::path::PathBuf, myelin_store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let config = myelin_config::DatabaseConfig::Sqlite { path: path.clone() };
    let store = myelin_store::Store::open(&config).await.unwrap();
    store.db().execute("CREATE TABLE filler (x BLOB)", vec![]).await.unwrap();
    (dir, path, store)
}

// A long read does not hold writes back: once the WAL is long, the checkpoint thread's RESTART
// waits for readers of older snapshots and blocks writers meanwhile; it gives up soon instead
// of waiting out the connections' 30 s busy timeout. (Liveness, not speed: the bound is far
// above the 20 ms the checkpoint waits and far below 30 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_a_reader_holds_an_old_snapshot_of_a_long_wal() {
    let (_dir, path, store) = sqlite_store_with_filler().await;
    let db = store.db();
    let write = async |n: usize| {
        for _ in 0..n {
            db.execute("INSERT INTO filler (x) VALUES (zeroblob(4000))", vec![]).await.unwrap();
        }
    };
    write(10).await;
    // A reader on its own connection keeps its snapshot while the WAL grows past the length
    // that makes the checkpoint thread restart it.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader.query_row("SELECT COUNT(*) FROM filler", [], |row| row.get(0)).unwrap();
    write(4500).await;
    // The checkpoint thread runs every 100 ms: writes go on through several of its tries.
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        tokio::time::timeout(std::time::Duration::from_secs(10), write(1))
            .await
            .expect("a write waited behind the checkpoint");
    }
    reader.execute_batch("COMMIT").unwrap();
}

// The checkpoint thread waits for a pause in commits before it copies the WAL back, but a
// steady stream of commits (never 10 ms apart) does not put it off for good: the database file
// itself, which only a checkpoint writes in WAL mode, grows while the writes go on. (Liveness:
// it waits at most half a second for a pause; the bound here is six times that.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_commits_does_not_put_checkpoints_off_for_good() {
    let (_dir, path, store) = sqlite_store_with_filler().await;
    let db = store.db();
    // Settled: the table is in the database file.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let size = || std::fs::metadata(&path).unwrap().len();
    let start = size();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while size() == start {
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint in 3 s of steady commits");
        db.execute("INSERT INTO filler (x) VALUES (zeroblob(4000))", vec![]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
