//! Storage: the `ReviewStore` trait the HTTP layer talks to, with a SQLite implementation
//! (the embedded default) and a PostgreSQL one (selected by a `postgres://` URL), and the
//! embedded migrations of each.

mod backend;
mod pg_readers;
mod postgres;
mod rows;
mod sqlite;
mod sqlite_readers;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{FieldError, NewReview, ProductId, Sort};

pub use backend::{Backend, UnsupportedUrl, redact};
pub use postgres::PostgresStore;
pub use sqlite::{SqliteStore, connect_options as sqlite_connect_options};

/// The SQL behind the two read routes on each backend, exactly as the stores run it, so the
/// query-plan benchmark (`api/examples/query_plans.rs`) measures what the API executes.
pub mod statements {
    pub use super::{ReadStatement, StatementParams};
    use super::{postgres as pg, read_statement_set, sqlite as lite};
    use crate::domain::Sort;

    /// The statements behind `GET /reviews` and `GET /reviews/meta` on PostgreSQL: one per
    /// request, the page with its photos and the meta counts with the characteristics.
    pub fn postgres() -> Vec<ReadStatement> {
        let list = |name, sort| ReadStatement {
            name,
            sql: pg::list_sql(sort),
            params: StatementParams::ProductPage,
        };
        vec![
            list("list relevant, with photos", Sort::Relevant),
            list("list newest, with photos", Sort::Newest),
            list("list helpful, with photos", Sort::Helpful),
            ReadStatement {
                name: "meta",
                sql: pg::META_SQL,
                params: StatementParams::Product,
            },
        ]
    }

    /// The same on SQLite.
    pub fn sqlite() -> Vec<ReadStatement> {
        read_statement_set(
            lite::list_sql,
            lite::PHOTOS_SQL,
            lite::META_COUNTS_SQL,
            lite::META_CHARACTERISTICS_SQL,
        )
    }
}

/// What a [`ReadStatement`] binds, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementParams {
    /// product id, page size, offset.
    ProductPage,
    /// The review ids of a page (an array, PostgreSQL).
    ReviewIds,
    /// One review id (SQLite runs its photos statement per review of a page).
    ReviewId,
    /// product id.
    Product,
}

/// One statement a read route runs.
#[derive(Clone, Copy, Debug)]
pub struct ReadStatement {
    /// e.g. `list newest`, `list photos`, `meta counts`.
    pub name: &'static str,
    pub sql: &'static str,
    pub params: StatementParams,
}

/// The SQLite set: the three list orders, the page's photos, and the two meta lookups.
fn read_statement_set(
    list_sql: fn(Sort) -> &'static str,
    photos: &'static str,
    meta_counts: &'static str,
    meta_characteristics: &'static str,
) -> Vec<ReadStatement> {
    let list = |name, sort| ReadStatement {
        name,
        sql: list_sql(sort),
        params: StatementParams::ProductPage,
    };
    vec![
        list("list relevant", Sort::Relevant),
        list("list newest", Sort::Newest),
        list("list helpful", Sort::Helpful),
        ReadStatement {
            name: "list photos (per review)",
            sql: photos,
            params: StatementParams::ReviewId,
        },
        ReadStatement {
            name: "meta counts",
            sql: meta_counts,
            params: StatementParams::Product,
        },
        ReadStatement {
            name: "meta characteristics",
            sql: meta_characteristics,
            params: StatementParams::Product,
        },
    ]
}

/// SQLite schema migrations, embedded in the binary and run at startup (and by the importer).
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
/// PostgreSQL schema migrations, embedded in the binary and run at startup (and by the importer).
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The largest helpfulness a review can reach: the column is a 32-bit `INTEGER` on PostgreSQL
/// (SQLite's `INTEGER` is wider, but both backends must answer alike, and the importer refuses
/// more). `PUT …/helpful` on a review already there leaves it there and still answers 204: a
/// vote is a request to count, not a transaction a client can act on failing, and 2³¹−1 votes
/// can only come from seeded or abusive data. Without the cap PostgreSQL failed with "integer
/// out of range" (500) and SQLite turned the value into a float that later reads failed on.
pub const MAX_HELPFULNESS: i64 = i32::MAX as i64;
// The helpful statements of both stores spell the number out.
const _: () = assert!(MAX_HELPFULNESS == 2_147_483_647);

/// One page of a product's visible reviews.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub product_id: ProductId,
    pub sort: Sort,
    /// 1-based page number.
    pub page: u64,
    pub count: u32,
}

impl ListQuery {
    /// Rows to skip; saturates rather than overflowing for absurd page numbers, which then
    /// simply read past the end.
    pub fn offset(&self) -> i64 {
        (self.page.saturating_sub(1))
            .saturating_mul(self.count as u64)
            .min(i64::MAX as u64) as i64
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub id: i64,
    pub rating: i64,
    pub summary: String,
    pub recommend: bool,
    pub response: Option<String>,
    pub body: String,
    pub date_ms: i64,
    pub reviewer_name: String,
    pub helpfulness: i64,
    pub photos: Vec<Photo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Photo {
    pub id: i64,
    pub url: String,
}

/// The stored aggregates behind `GET /reviews/meta`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProductMeta {
    /// Count of reviews per rating 1..=5 (index 0 is rating 1).
    pub ratings: [i64; 5],
    pub recommend_false: i64,
    pub recommend_true: i64,
    /// Ordered by characteristic id.
    pub characteristics: Vec<CharacteristicMeta>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharacteristicMeta {
    pub id: i64,
    pub name: String,
    pub rating_sum: i64,
    pub rating_count: i64,
}

/// A connection pool's occupancy, for the metrics page.
#[derive(Clone, Debug)]
pub struct PoolStats {
    pub pool: &'static str,
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

impl PoolStats {
    /// A reader pool's (`pg_readers`, `sqlite_readers`): `idle` connections waiting, and
    /// `available` of its `max` permits not taken.
    fn readers(idle: usize, available: usize, max: u32) -> PoolStats {
        let idle = idle as u32;
        let in_use = max.saturating_sub(available as u32);
        PoolStats {
            pool: "read",
            size: idle + in_use,
            idle,
            max,
        }
    }

    /// An sqlx pool's.
    fn sqlx<DB: sqlx::Database>(pool: &'static str, p: &sqlx::Pool<DB>, max: u32) -> PoolStats {
        PoolStats {
            pool,
            size: p.size(),
            idle: p.num_idle() as u32,
            max,
        }
    }
}

/// The cause of a database error, whichever driver raised it (sqlx, or rusqlite on the SQLite
/// read path): logged, never shown to clients.
pub type DbCause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, or no connection came free in time. The client may
    /// retry shortly: the HTTP layer answers 503 with `Retry-After`.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] DbCause),
    /// The request named something that does not fit the data (a characteristic of another
    /// product). Checked inside the write transaction, so nothing was written.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    #[error("database error: {0}")]
    Internal(#[source] DbCause),
}

impl From<sqlx::Error> for StoreError {
    /// Sorts sqlx errors into "try again soon" (pool timeout, connection trouble, a locked
    /// SQLite file, a PostgreSQL statement or lock timeout) and genuine faults.
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let transient = match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => true,
            E::Database(db) => {
                if let Some(sqlite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes: the file
                    // is locked by another writer for longer than busy_timeout.
                    let code: i32 = sqlx::error::DatabaseError::code(sqlite)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    matches!(code & 0xff, 5 | 6)
                } else if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    // FATAL ends the session: the server refused or dropped the connection
                    // (database not accepting connections, shutting down, too many clients).
                    matches!(
                        pg.severity(),
                        sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic
                    ) || pg_transient(pg.code())
                } else {
                    pg_transient(db.code().as_deref().unwrap_or(""))
                }
            }
            _ => false,
        };
        if transient {
            StoreError::Unavailable(e.into())
        } else {
            StoreError::Internal(e.into())
        }
    }
}

/// PostgreSQL SQLSTATEs worth a retry: 57014 query_canceled (statement_timeout), 55P03
/// lock_not_available, 53300 too many connections, 57P0x shutdown or cannot connect now,
/// 08xxx connection exceptions, 40001/40P01 serialization failure and deadlock.
fn pg_transient(code: &str) -> bool {
    matches!(code, "57014" | "55P03" | "53300" | "40001" | "40P01")
        || code.starts_with("57P")
        || code.starts_with("08")
}

/// What the HTTP layer needs from a database. Implementations keep the meta aggregates in step
/// with every write, inside the write's transaction.
#[async_trait]
pub trait ReviewStore: Send + Sync + 'static {
    /// One page of the product's reviews that are not reported, in `sort` order, each with its
    /// photos ordered by photo id.
    async fn list_reviews(&self, q: &ListQuery) -> Result<Vec<Review>, StoreError>;

    /// The product's stored aggregates; all zero and no characteristics for an unknown product.
    async fn product_meta(&self, product_id: ProductId) -> Result<ProductMeta, StoreError>;

    /// Writes the review, its photos, its characteristic ratings and the aggregates in one
    /// transaction. Returns the new review id.
    async fn add_review(&self, review: &NewReview, date_ms: i64) -> Result<i64, StoreError>;

    /// helpfulness += 1, saturating at [`MAX_HELPFULNESS`]. Returns the review's product, or
    /// `None` for an unknown review.
    async fn mark_helpful(&self, review_id: i64) -> Result<Option<ProductId>, StoreError>;

    /// Marks the review reported (hidden from lists, never deleted). Returns the review's
    /// product, or `None` for an unknown review.
    async fn report(&self, review_id: i64) -> Result<Option<ProductId>, StoreError>;

    /// A cheap round trip to the database, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    fn pool_stats(&self) -> Vec<PoolStats>;

    /// Opens the read connections ahead of the first requests, in the background of a
    /// starting server; best effort (a database not up yet is left to the requests).
    async fn warm(&self) {}

    /// Which backend this is, for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// How long to wait on the database before answering 503.
#[derive(Clone, Debug)]
pub struct DbLimits {
    pub max_connections: u32,
    /// How long a request waits for a pooled connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout`; on SQLite the lock wait (`busy_timeout`).
    pub statement_timeout: Duration,
}

impl Default for DbLimits {
    fn default() -> Self {
        DbLimits {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(2),
        }
    }
}

/// Opens the database a URL names (see [`Backend::parse`]), runs its migrations, and returns
/// it as a store.
pub async fn open(url: &str, limits: &DbLimits) -> anyhow::Result<std::sync::Arc<dyn ReviewStore>> {
    Ok(match Backend::parse(url)? {
        Backend::Postgres => std::sync::Arc::new(PostgresStore::open(url, limits).await?),
        Backend::Sqlite => std::sync::Arc::new(SqliteStore::open(url, limits).await?),
    })
}

/// Whether the database a URL names holds any review (false for a new, empty database).
/// Runs the migrations first, so it also prepares a new file.
pub async fn has_reviews(url: &str) -> anyhow::Result<bool> {
    let limits = DbLimits::default();
    const SQL: &str = "SELECT id FROM reviews LIMIT 1";
    let found: Option<i64> = match Backend::parse(url)? {
        Backend::Postgres => {
            let store = PostgresStore::open(url, &limits).await?;
            sqlx::query_scalar(SQL).fetch_optional(store.pool()).await?
        }
        Backend::Sqlite => {
            let store = SqliteStore::open(url, &limits).await?;
            sqlx::query_scalar(SQL)
                .fetch_optional(store.writer())
                .await?
        }
    };
    Ok(found.is_some())
}

/// The aggregate column (`rating_1` … `rating_5`) that counts reviews of `rating` (1..=5;
/// ratings are validated before a write, the clamp only keeps the index in range).
fn rating_column(rating: u8) -> &'static str {
    ["rating_1", "rating_2", "rating_3", "rating_4", "rating_5"][(rating.clamp(1, 5) - 1) as usize]
}
