//! The SQLite read path: a small pool of read-only `rusqlite` connections, each request's
//! statements run in one blocking call.
//!
//! Why not sqlx here: sqlx's SQLite driver gives every connection its own worker thread and
//! sends each statement (and each fetched batch) to it over a channel, so a page of reviews
//! with its photos cost several thread hand-offs; under load the API's profile was mostly
//! `futex` waits and task switches, with SQLite's own work a few percent. Here a request takes
//! one hop onto tokio's blocking pool, runs its statements back to back on a connection that
//! thread owns for the moment, and returns the rows. `rusqlite` links the same bundled
//! `libsqlite3-sys` as sqlx (Cargo allows one crate linking `sqlite3` in a build), so both
//! speak to the file through one SQLite library. sqlx keeps the writes and the migrations.
//!
//! Readers and the writer coexist through WAL: readers never block the writer and see the last
//! committed transaction; `busy_timeout` covers the moments a reader must wait (WAL recovery
//! after a crash, a checkpoint restarting the log).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::StoreError;

pub(super) struct ReaderPool {
    path: PathBuf,
    /// Connections not in use. A connection is opened the first time no idle one is left, up
    /// to `max`.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may be in use, so a request waits here (asynchronously,
    /// up to `acquire_timeout`) rather than on a blocking thread.
    permits: Arc<Semaphore>,
    max: u32,
    acquire_timeout: Duration,
    busy_timeout: Duration,
}

impl ReaderPool {
    /// Opens one connection at once, so a file that cannot be read fails at startup.
    pub(super) fn open(
        path: PathBuf,
        max: u32,
        acquire_timeout: Duration,
        busy_timeout: Duration,
    ) -> Result<Self, rusqlite::Error> {
        let pool = ReaderPool {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max.max(1) as usize)),
            max: max.max(1),
            acquire_timeout,
            busy_timeout,
        };
        let first = pool.connect()?;
        pool.idle_list().push(first);
        Ok(pool)
    }

    /// Runs `read` on a pooled connection. With a connection free it runs right here, on the
    /// runtime's worker: a page read from a file in the page cache takes tens of microseconds,
    /// less than the hop to tokio's blocking pool and back, which the profile showed at 10–21%
    /// of a request's CPU. With none free the request waits (asynchronously, at most the
    /// acquire timeout, then `Unavailable`: 503) and runs on the blocking pool, so a burst
    /// never holds more workers than there are connections.
    pub(super) async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if let Ok(_permit) = self.permits.clone().try_acquire_owned() {
            let conn = match self.idle_list().pop() {
                Some(conn) => conn,
                None => self.connect()?,
            };
            let result = in_one_snapshot(&conn, read);
            self.idle_list().push(conn);
            return result.map_err(StoreError::from);
        }
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| StoreError::Unavailable("no SQLite reader came free in time".into()))?
                .map_err(|e| StoreError::Internal(e.into()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = match pool.idle_list().pop() {
                Some(conn) => conn,
                None => pool.connect()?,
            };
            let result = in_one_snapshot(&conn, read);
            // Statements are reset when dropped, so the connection is clean even after an
            // error; a broken file fails the next request the same way, not silently.
            pool.idle_list().push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(e.into()))?
        .map_err(StoreError::from)
    }

    /// (open connections, idle connections, most connections).
    pub(super) fn stats(&self) -> super::PoolStats {
        let available = self.permits.available_permits();
        super::PoolStats::readers(self.idle_list().len(), available, self.max)
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding the lock cannot leave the list half-changed (push and pop
        // are whole), so a poisoned lock is still a good list.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connect(&self) -> Result<Connection, rusqlite::Error> {
        // NO_MUTEX: a connection is only ever used by the one thread that took it from the
        // pool, so SQLite's per-connection mutex would be pure cost.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        // The bundled SQLite is built with STAT4, and the importer's ANALYZE fills
        // sqlite_stat4: then every new `product_id` bound to a cached statement made SQLite
        // re-prepare it (parse and plan again, 15% of the API's CPU on a list page) in case
        // the value's histogram picked a better plan. Each statement here has one right plan,
        // its index (the query-plan tests hold it), so the planner may not look at values.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // Pages read through a memory map rather than `pread` into SQLite's page cache: a
        // random product's page is then a page-table hit in the OS cache instead of a syscall
        // and a copy (those were most of a list page's SQLite time in the profile). The map
        // is address space, not memory; 16 GiB covers the full data set several times over.
        conn.execute_batch(
            "PRAGMA cache_size = -32768; PRAGMA temp_store = memory; PRAGMA mmap_size = 17179869184;",
        )?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }
}

/// Runs `read` in one read transaction. In autocommit mode every statement is a transaction
/// of its own: a list page (the page, then each review's photos) took and released SQLite's
/// file lock up to six times, each an `fcntl` pair and an `fstat` (7% of the API's CPU under
/// list load in `perf`), and could read its photos from a later snapshot than its page. The
/// connection is back in autocommit mode afterwards whatever `read` returned, so a pooled
/// connection never pins an old snapshot (which would also hold back WAL checkpoints).
fn in_one_snapshot<T>(
    conn: &Connection,
    read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = read(conn);
    let end = conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]));
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    let value = result?;
    end?;
    Ok(value)
}

impl From<rusqlite::Error> for StoreError {
    /// SQLITE_BUSY and SQLITE_LOCKED (the file locked for longer than `busy_timeout`) and a
    /// file that cannot be opened are worth a retry; anything else is a fault.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen) => {
                StoreError::Unavailable(e.into())
            }
            _ => StoreError::Internal(e.into()),
        }
    }
}
