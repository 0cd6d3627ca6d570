//! The PostgreSQL read path: a small pool of connections for the two GET statements, kept
//! apart from sqlx's pool, which stays for writes, readiness and migrations.
//!
//! Why not sqlx's pool here: sqlx 0.9 sends `Sync` and waits for the server's `ReadyForQuery`
//! each time a connection goes back to its pool (in a task spawned for it), and by default
//! again each time one is handed out. A GET is one statement, so two of its three round trips
//! to the server were these pings: API CPU (two more wake-ups, writes and reads, a spawned
//! task) and server CPU (a backend woken to answer) on every request, for no data.
//!
//! What the ping on release protects against is a connection left mid-protocol: a statement
//! that failed, or whose request was cancelled (the client went away) with rows still on
//! the wire. Here a connection goes back to the pool only after its statement ran to the
//! end (the server is then waiting for the next one, which is what the ping would have found);
//! in every other case the [`Reader`] guard drops it, which closes the session (the server
//! ends whatever it was running). A connection the server closed while it sat idle (a
//! restart, `idle_session_timeout`) fails with a connection error: the caller retries such a
//! read once on a new connection ([`retry_on_fresh`]); a read is safe to repeat.
//!
//! Why the connections are still sqlx's: a bare wire-protocol client costs about 3–5 µs less
//! API CPU per list query than sqlx (`api/examples/pg_read_cost.rs`, README issue #10), some
//! 10–18% of a list request, but sqlx's connection setup is what the URL's users rely on
//! (SCRAM, MD5 and cleartext passwords, `PGPASSWORD` and `~/.pgpass`, Unix sockets, `sslmode`,
//! `application_name`, the session options of `PostgresStore::open`). A reader of our own
//! would have to bring all of that, tested against a server that asks for a password.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::StoreError;

pub(super) struct PgReaders {
    opts: PgConnectOptions,
    /// Connections ready for a statement. One is opened when none is idle, up to `max`; none
    /// at startup, so an API process starts (and answers `/healthz`) while the database is
    /// still coming up.
    idle: Mutex<Vec<PgConnection>>,
    /// One permit per connection that may be in use: a request waits here, asynchronously
    /// and at most `acquire_timeout`, then gets 503.
    permits: Arc<Semaphore>,
    max: u32,
    acquire_timeout: Duration,
}

/// A connection lent to one read. [`Reader::release`] gives it back; dropped without that
/// (an error, a cancelled request) it closes.
pub(super) struct Reader<'a> {
    conn: Option<PgConnection>,
    pool: &'a PgReaders,
    /// Whether the connection had been idle in the pool (it may have been closed meanwhile).
    reused: bool,
    _permit: OwnedSemaphorePermit,
}

impl PgReaders {
    pub(super) fn new(opts: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        PgReaders {
            opts,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max.max(1) as usize)),
            max: max.max(1),
            acquire_timeout,
        }
    }

    /// An idle connection, or a new one when none is idle; `fresh` always opens a new one.
    pub(super) async fn get(&self, fresh: bool) -> Result<Reader<'_>, StoreError> {
        // The uncontended case takes no timer.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable("no PostgreSQL read connection came free".into())
                    })?
                    .map_err(|e| StoreError::Internal(e.into()))?
            }
        };
        let idle = if fresh { None } else { self.idle_list().pop() };
        let reused = idle.is_some();
        let conn = match idle {
            Some(conn) => conn,
            None => tokio::time::timeout(self.acquire_timeout, self.opts.connect())
                .await
                .map_err(|_| {
                    StoreError::Unavailable("connecting to PostgreSQL timed out".into())
                })??,
        };
        Ok(Reader {
            conn: Some(conn),
            pool: self,
            reused,
            _permit: permit,
        })
    }

    /// Opens connections until the pool holds `max`, one after another, each taking a permit
    /// only while it connects (so requests are never kept from one). Best effort: stops at
    /// the first failure (the database not up yet: requests then open their own, as before).
    ///
    /// Why: opening a connection forks a PostgreSQL backend and authenticates, a few
    /// milliseconds of server CPU each; left to the first requests, a cold API process opened
    /// its sixteen under the first second's load (the long-tail run's second 0 p99 was 65–71
    /// ms on PostgreSQL, every later second under 15 ms).
    pub(super) async fn fill(&self) -> Result<usize, StoreError> {
        let mut opened = 0;
        loop {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                return Ok(opened);
            };
            let open =
                self.idle_list().len() + (self.max as usize - self.permits.available_permits());
            // `open` counts this permit too: idle connections plus those in use.
            if open > self.max as usize {
                return Ok(opened);
            }
            let conn = tokio::time::timeout(self.acquire_timeout, self.opts.connect())
                .await
                .map_err(|_| {
                    StoreError::Unavailable("connecting to PostgreSQL timed out".into())
                })??;
            self.idle_list().push(conn);
            drop(permit);
            opened += 1;
        }
    }

    /// (open connections, idle connections, most connections).
    pub(super) fn stats(&self) -> super::PoolStats {
        let available = self.permits.available_permits();
        super::PoolStats::readers(self.idle_list().len(), available, self.max)
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<PgConnection>> {
        // Push and pop are whole, so a poisoned lock still guards a good list.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reader<'_> {
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        // Only `release` takes the connection, and it consumes the guard.
        self.conn
            .as_mut()
            .expect("a reader holds its connection until released")
    }

    /// Back to the pool: call only once the statement's whole result has been read.
    pub(super) fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.idle_list().push(conn);
        }
    }
}

/// Whether a failed read deserves one more try on a new connection: the connection had sat
/// idle in the pool and the failure was the connection's (gone, or ended by the server with a
/// FATAL error such as `57P01 admin_shutdown`), not the statement's.
pub(super) fn retry_on_fresh(reader: &Reader<'_>, e: &sqlx::Error) -> bool {
    use sqlx::postgres::{PgDatabaseError, PgSeverity};
    let connection_gone = match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
        _ => false,
    };
    reader.reused && connection_gone
}
