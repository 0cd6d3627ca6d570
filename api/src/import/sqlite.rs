//! Loading into SQLite: one connection with bulk-load pragmas (WAL, `synchronous=OFF`, a 64 MiB
//! page cache), multi-row `INSERT … VALUES` statements of up to 256 rows (prepared once by
//! sqlx's statement cache and reused) inside transactions of about 50,000 rows, secondary
//! indexes dropped before and rebuilt after, then the aggregates and `ANALYZE`.
//!
//! Not atomic as a whole (one transaction of 31M rows would put the whole database through the
//! WAL at once): an interrupted import leaves a partly loaded database, which the next import
//! refuses until `--replace`. Because the indexes were dropped meanwhile, the index DDL is
//! taken from the database and completed from a scratch in-memory database migrated by the same
//! migrator, so a rerun puts back any index an interrupted run removed.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::TryStreamExt;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteRow as DbRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use tokio::sync::mpsc::Receiver;

use super::rows::{
    CHARACTERISTIC_NAMES, CharacteristicReviewRow, CharacteristicRow, CsvRow, PhotoRow, ReviewRow,
};
use super::verify::{AggregateTotals, Checksums, aggregate_totals_sql};
use super::{IMPORTED_TABLES, quote_ident};
use crate::store::SQLITE_MIGRATOR;

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

/// Rows per `INSERT` statement. Measured on a generated 3.1M-row set (debug build, 2 shared
/// cores): one row per statement loads ~49k rows/s, 64..=1000 rows all ~250–320k rows/s
/// (within noise of each other), so 256 it is. SQLite allows 32,766 parameters.
const ROWS_PER_STATEMENT: usize = 256;
/// Rows per transaction.
const ROWS_PER_TRANSACTION: u64 = 50_000;

/// How a row binds into an `INSERT` and is read back for `--verify`.
pub trait SqliteRow: CsvRow {
    fn bind(self, q: Query<'_>) -> Query<'_>;
    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error>;
}

pub struct SqliteTarget {
    conn: SqliteConnection,
    /// (name, CREATE INDEX statement) to rebuild after loading.
    indexes: Vec<(String, String)>,
}

impl SqliteTarget {
    /// Opens (creating the file if missing) and migrates.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let opts = crate::store::sqlite_connect_options(url)
            .with_context(|| format!("bad SQLite URL {url:?}"))?
            .create_if_missing(true)
            // A crash mid-import needs a rerun with --replace anyway, so durability of each
            // intermediate commit buys nothing; finish() turns syncing back on.
            .synchronous(SqliteSynchronous::Off)
            .pragma("cache_size", "-65536")
            .busy_timeout(Duration::from_secs(30));
        let mut conn = opts
            .connect()
            .await
            .with_context(|| format!("opening SQLite database {url}"))?;
        SQLITE_MIGRATOR
            .run(&mut conn)
            .await
            .context("migrating the SQLite database")?;
        Ok(SqliteTarget {
            conn,
            indexes: Vec::new(),
        })
    }

    /// Refuses a non-empty database unless `replace`, which empties it; drops the secondary
    /// indexes.
    pub async fn prepare(&mut self, replace: bool) -> anyhow::Result<()> {
        let mut non_empty = Vec::new();
        for table in IMPORTED_TABLES {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quote_ident(table));
            let any: bool = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut self.conn)
                .await?;
            if any {
                non_empty.push(table);
            }
        }
        if !non_empty.is_empty() {
            if !replace {
                bail!(
                    "the database already holds rows in {}; importing again would duplicate them. \
                     Use --replace to empty these tables first, or import into a new database",
                    non_empty.join(", ")
                );
            }
            let mut tx = self.conn.begin().await?;
            for table in IMPORTED_TABLES {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", quote_ident(table))))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }

        let present = secondary_indexes(&mut self.conn).await?;
        let mut wanted = present.clone();
        for (name, sql) in migrated_indexes().await? {
            if !wanted.iter().any(|(n, _)| *n == name) {
                wanted.push((name, sql));
            }
        }
        for (name, _) in &present {
            sqlx::query(AssertSqlSafe(format!("DROP INDEX {}", quote_ident(name))))
                .execute(&mut self.conn)
                .await?;
        }
        self.indexes = wanted;
        Ok(())
    }

    /// Inserts every batch received until the channel closes; returns the rows written.
    pub async fn write<T: SqliteRow>(&mut self, rx: &mut Receiver<Vec<T>>) -> anyhow::Result<u64> {
        let per_statement = ROWS_PER_STATEMENT.min(32_766 / T::COLUMNS.len());
        let full: Arc<str> = insert_sql::<T>(per_statement).into();
        let mut written = 0;
        loop {
            let mut tx = self.conn.begin().await?;
            let mut in_tx = 0;
            let mut closed = false;
            while in_tx < ROWS_PER_TRANSACTION {
                let Some(batch) = rx.recv().await else {
                    closed = true;
                    break;
                };
                let mut left = batch.len();
                let mut rows = batch.into_iter();
                while left > 0 {
                    let n = left.min(per_statement);
                    let mut q = if n == per_statement {
                        sqlx::query(AssertSqlSafe(full.clone()))
                    } else {
                        sqlx::query(AssertSqlSafe(insert_sql::<T>(n)))
                    };
                    for row in rows.by_ref().take(n) {
                        q = row.bind(q);
                    }
                    q.execute(&mut *tx)
                        .await
                        .with_context(|| format!("inserting into {}", T::TABLE))?;
                    left -= n;
                    in_tx += n as u64;
                }
            }
            tx.commit().await?;
            written += in_tx;
            if closed {
                return Ok(written);
            }
        }
    }

    /// Builds the aggregates, rebuilds the indexes, analyses, and checkpoints the WAL.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        // From here on the result must survive a power cut: NORMAL makes the final checkpoint
        // sync the database file (OFF never syncs).
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut self.conn)
            .await?;
        let mut tx = self.conn.begin().await?;
        sqlx::query(CHARACTERISTIC_AGGREGATES_SQL)
            .execute(&mut *tx)
            .await
            .context("summing characteristic ratings")?;
        sqlx::query(PRODUCT_META_SQL)
            .execute(&mut *tx)
            .await
            .context("counting product ratings")?;
        tx.commit().await?;
        for (name, sql) in &self.indexes {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(&mut self.conn)
                .await
                .with_context(|| format!("creating index {name}"))?;
        }
        sqlx::query("ANALYZE").execute(&mut self.conn).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Reads every imported table back and checksums it.
    pub async fn checksums(&mut self) -> anyhow::Result<(Checksums, AggregateTotals)> {
        let mut sums = Checksums::default();
        sum_table::<ReviewRow>(&mut self.conn, &mut sums).await?;
        sum_table::<PhotoRow>(&mut self.conn, &mut sums).await?;
        sum_table::<CharacteristicRow>(&mut self.conn, &mut sums).await?;
        sum_table::<CharacteristicReviewRow>(&mut self.conn, &mut sums).await?;
        let row = sqlx::query(AssertSqlSafe(aggregate_totals_sql(quote_ident)))
            .fetch_one(&mut self.conn)
            .await?;
        let totals = AggregateTotals {
            reviews: row.try_get(0)?,
            meta_ratings: row.try_get(1)?,
            meta_recommends: row.try_get(2)?,
            ratings: row.try_get(3)?,
            rating_value_sum: row.try_get(4)?,
            characteristic_rating_count: row.try_get(5)?,
            characteristic_rating_sum: row.try_get(6)?,
        };
        Ok((sums, totals))
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.conn.close().await?;
        Ok(())
    }
}

const CHARACTERISTIC_AGGREGATES_SQL: &str = "UPDATE characteristics \
    SET rating_sum = a.s, rating_count = a.c \
    FROM (SELECT characteristic_id, SUM(value) AS s, COUNT(*) AS c FROM characteristic_reviews GROUP BY characteristic_id) AS a \
    WHERE characteristics.id = a.characteristic_id";

const PRODUCT_META_SQL: &str = "INSERT INTO product_meta \
    (product_id, rating_1, rating_2, rating_3, rating_4, rating_5, recommend_false, recommend_true) \
    SELECT product_id, SUM(rating = 1), SUM(rating = 2), SUM(rating = 3), SUM(rating = 4), SUM(rating = 5), \
    SUM(recommend = 0), SUM(recommend = 1) \
    FROM reviews GROUP BY product_id";

fn insert_sql<T: CsvRow>(rows: usize) -> String {
    let cols = T::COLUMNS.len();
    let mut one = String::from("(");
    for i in 0..cols {
        one.push_str(if i == 0 { "?" } else { ",?" });
    }
    one.push(')');
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        T::TABLE,
        T::COLUMNS.join(", ")
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&one);
    }
    sql
}

/// The `CREATE INDEX` statements of the imported tables (SQLite's automatic indexes have no
/// SQL and are left alone).
async fn secondary_indexes(conn: &mut SqliteConnection) -> anyhow::Result<Vec<(String, String)>> {
    let mut indexes = Vec::new();
    for table in IMPORTED_TABLES {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        indexes.extend(rows);
    }
    Ok(indexes)
}

/// The indexes the migrations create, read from a scratch in-memory database.
async fn migrated_indexes() -> anyhow::Result<Vec<(String, String)>> {
    let mut scratch = SqliteConnectOptions::from_str("sqlite::memory:")?
        .connect()
        .await?;
    SQLITE_MIGRATOR.run(&mut scratch).await?;
    let indexes = secondary_indexes(&mut scratch).await?;
    scratch.close().await?;
    Ok(indexes)
}

async fn sum_table<T: SqliteRow>(
    conn: &mut SqliteConnection,
    sums: &mut Checksums,
) -> anyhow::Result<()> {
    let sql = format!("SELECT {} FROM {}", T::COLUMNS.join(", "), T::TABLE);
    let sum = sums.table_mut(T::TABLE);
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        let row = T::from_db(&row)?;
        sum.add(row.id(), row.digest());
    }
    Ok(())
}

impl SqliteRow for ReviewRow {
    fn bind(self, q: Query<'_>) -> Query<'_> {
        q.bind(self.id)
            .bind(self.product_id)
            .bind(self.rating)
            .bind(self.date_ms)
            .bind(self.summary)
            .bind(self.body)
            .bind(self.recommend)
            .bind(self.reported)
            .bind(self.reviewer_name)
            .bind(self.reviewer_email)
            .bind(self.response)
            .bind(self.helpfulness)
    }

    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(ReviewRow {
            id: row.try_get(0)?,
            product_id: row.try_get(1)?,
            rating: row.try_get(2)?,
            date_ms: row.try_get(3)?,
            summary: row.try_get(4)?,
            body: row.try_get(5)?,
            recommend: row.try_get::<i64, _>(6)? != 0,
            reported: row.try_get::<i64, _>(7)? != 0,
            reviewer_name: row.try_get(8)?,
            reviewer_email: row.try_get(9)?,
            response: row.try_get(10)?,
            helpfulness: row.try_get(11)?,
        })
    }
}

impl SqliteRow for PhotoRow {
    fn bind(self, q: Query<'_>) -> Query<'_> {
        q.bind(self.id).bind(self.review_id).bind(self.url)
    }

    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(PhotoRow {
            id: row.try_get(0)?,
            review_id: row.try_get(1)?,
            url: row.try_get(2)?,
        })
    }
}

impl SqliteRow for CharacteristicRow {
    fn bind(self, q: Query<'_>) -> Query<'_> {
        q.bind(self.id).bind(self.product_id).bind(self.name)
    }

    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error> {
        let name: String = row.try_get(2)?;
        Ok(CharacteristicRow {
            id: row.try_get(0)?,
            product_id: row.try_get(1)?,
            // An unknown name cannot be a loaded one: a marker that fails the checksum.
            name: CHARACTERISTIC_NAMES
                .into_iter()
                .find(|n| *n == name)
                .unwrap_or("?"),
        })
    }
}

impl SqliteRow for CharacteristicReviewRow {
    fn bind(self, q: Query<'_>) -> Query<'_> {
        q.bind(self.id)
            .bind(self.characteristic_id)
            .bind(self.review_id)
            .bind(self.value)
    }

    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(CharacteristicReviewRow {
            id: row.try_get(0)?,
            characteristic_id: row.try_get(1)?,
            review_id: row.try_get(2)?,
            value: row.try_get(3)?,
        })
    }
}
