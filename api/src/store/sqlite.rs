//! The embedded default: one SQLite file in WAL mode, a pool of read-only connections for
//! GETs (`rusqlite`, see [`super::sqlite_readers`] for why not sqlx) and a single sqlx writer
//! connection, so writers queue in the process (bounded by the pool's acquire timeout) instead
//! of fighting over the file lock. Several API processes may share the file; their writers
//! then wait on each other for at most `busy_timeout`.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::OptionalExtension;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::rows::{check_characteristics, meta_from_rows, meta_upsert_sql};
use super::sqlite_readers::ReaderPool;
use super::{
    DbLimits, ListQuery, Photo, PoolStats, ProductMeta, Review, ReviewStore, SQLITE_MIGRATOR,
    StoreError,
};
use crate::domain::{NewReview, ProductId, Sort};

pub struct SqliteStore {
    readers: Arc<ReaderPool>,
    writer: SqlitePool,
}

/// Connection options for a `sqlite://path`, `sqlite:path` or bare-path URL: the one builder
/// the store and the importer share. WAL (readers never wait for the writer) and no foreign
/// key enforcement (the schema declares none; the importer checks parents itself). Each caller
/// adds its own durability and cache settings.
pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    let opts = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)?
    } else {
        SqliteConnectOptions::new().filename(url)
    };
    Ok(opts
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(false))
}

impl SqliteStore {
    pub async fn open(url: &str, limits: &DbLimits) -> anyhow::Result<Self> {
        use anyhow::Context;
        let opts = connect_options(url)
            .with_context(|| format!("invalid SQLite URL {url:?}"))?
            // NORMAL in WAL mode is durable against process crashes; a power cut may lose the
            // last transactions but never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "memory")
            .busy_timeout(limits.statement_timeout)
            .create_if_missing(true);
        let path = opts.get_filename().to_owned();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(limits.acquire_timeout)
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open SQLite database {url:?}"))?;
        SQLITE_MIGRATOR
            .run(&writer)
            .await
            .with_context(|| format!("cannot migrate SQLite database {url:?}"))?;
        let readers = ReaderPool::open(
            path,
            limits.max_connections.max(1),
            limits.acquire_timeout,
            limits.statement_timeout,
        )
        .with_context(|| format!("cannot open SQLite database {url:?} for reading"))?;
        Ok(SqliteStore {
            readers: Arc::new(readers),
            writer,
        })
    }

    pub(super) fn writer(&self) -> &SqlitePool {
        &self.writer
    }
}

/// One statement per order; each matches one partial index column for column.
pub(super) fn list_sql(sort: Sort) -> &'static str {
    match sort {
        Sort::Newest => {
            "SELECT id, rating, summary, recommend, response, body, date_ms, reviewer_name, helpfulness \
             FROM reviews WHERE product_id = ?1 AND reported = 0 \
             ORDER BY date_ms DESC, id DESC LIMIT ?2 OFFSET ?3"
        }
        Sort::Helpful => {
            "SELECT id, rating, summary, recommend, response, body, date_ms, reviewer_name, helpfulness \
             FROM reviews WHERE product_id = ?1 AND reported = 0 \
             ORDER BY helpfulness DESC, id ASC LIMIT ?2 OFFSET ?3"
        }
        Sort::Relevant => {
            "SELECT id, rating, summary, recommend, response, body, date_ms, reviewer_name, helpfulness \
             FROM reviews WHERE product_id = ?1 AND reported = 0 \
             ORDER BY helpfulness DESC, date_ms DESC, id DESC LIMIT ?2 OFFSET ?3"
        }
    }
}

/// One review's photos. Run once per review of a page: an indexed lookup per review costs a
/// third of what one statement for the whole page did when the ids travelled as a JSON array
/// (`json_each` and the `IN` table it builds were a third of a list request's instructions).
pub(super) const PHOTOS_SQL: &str =
    "SELECT id, url FROM reviews_photos WHERE review_id = ?1 ORDER BY id";
pub(super) const META_COUNTS_SQL: &str = "SELECT rating_1, rating_2, rating_3, rating_4, rating_5, recommend_false, recommend_true \
     FROM product_meta WHERE product_id = ?1";
pub(super) const META_CHARACTERISTICS_SQL: &str = "SELECT id, name, rating_sum, rating_count FROM characteristics WHERE product_id = ?1 ORDER BY id";

/// `GET /reviews`: the page, then its photos, on one connection in one blocking call.
fn list_page(conn: &rusqlite::Connection, q: &ListQuery) -> rusqlite::Result<Vec<Review>> {
    let mut stmt = conn.prepare_cached(list_sql(q.sort))?;
    let mut rows = stmt.query((q.product_id.get(), q.count as i64, q.offset()))?;
    let mut reviews = Vec::with_capacity(q.count.min(100) as usize);
    while let Some(row) = rows.next()? {
        reviews.push(Review {
            id: row.get(0)?,
            rating: row.get(1)?,
            summary: row.get(2)?,
            recommend: row.get(3)?,
            response: row.get(4)?,
            body: row.get(5)?,
            date_ms: row.get(6)?,
            reviewer_name: row.get(7)?,
            helpfulness: row.get(8)?,
            photos: Vec::new(),
        });
    }
    if reviews.is_empty() {
        return Ok(reviews);
    }
    let mut stmt = conn.prepare_cached(PHOTOS_SQL)?;
    for review in &mut reviews {
        let mut rows = stmt.query([review.id])?;
        while let Some(row) = rows.next()? {
            review.photos.push(Photo {
                id: row.get(0)?,
                url: row.get(1)?,
            });
        }
    }
    Ok(reviews)
}

/// `GET /reviews/meta`: the counts and the characteristics.
fn product_meta(conn: &rusqlite::Connection, product: ProductId) -> rusqlite::Result<ProductMeta> {
    let counts = conn
        .prepare_cached(META_COUNTS_SQL)?
        .query_row([product.get()], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .optional()?;
    let characteristics = conn
        .prepare_cached(META_CHARACTERISTICS_SQL)?
        .query_map([product.get()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(meta_from_rows(counts, characteristics))
}

#[async_trait]
impl ReviewStore for SqliteStore {
    async fn list_reviews(&self, q: &ListQuery) -> Result<Vec<Review>, StoreError> {
        let q = q.clone();
        self.readers.run(move |conn| list_page(conn, &q)).await
    }

    async fn product_meta(&self, product_id: ProductId) -> Result<ProductMeta, StoreError> {
        self.readers
            .run(move |conn| product_meta(conn, product_id))
            .await
    }

    async fn add_review(&self, review: &NewReview, date_ms: i64) -> Result<i64, StoreError> {
        // IMMEDIATE takes the write lock up front, so the transaction cannot fail half way on
        // a lock upgrade when another process writes to the same file.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let product = review.product_id.get();
        let owned: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM characteristics WHERE product_id = ?1")
                .bind(product)
                .fetch_all(&mut *tx)
                .await?;
        check_characteristics(review, &owned)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO reviews (product_id, rating, date_ms, summary, body, recommend, reported, \
             reviewer_name, reviewer_email, response, helpfulness) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, NULL, 0) RETURNING id",
        )
        .bind(product)
        .bind(review.rating.get() as i64)
        .bind(date_ms)
        .bind(&review.summary)
        .bind(&review.body)
        .bind(review.recommend)
        .bind(&review.name)
        .bind(&review.email)
        .fetch_one(&mut *tx)
        .await?;
        for url in &review.photos {
            sqlx::query("INSERT INTO reviews_photos (review_id, url) VALUES (?1, ?2)")
                .bind(id)
                .bind(url)
                .execute(&mut *tx)
                .await?;
        }
        for &(characteristic, value) in &review.characteristics {
            sqlx::query("INSERT INTO characteristic_reviews (characteristic_id, review_id, value) VALUES (?1, ?2, ?3)")
                .bind(characteristic)
                .bind(id)
                .bind(value as i64)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE characteristics SET rating_sum = rating_sum + ?1, rating_count = rating_count + 1 WHERE id = ?2",
            )
            .bind(value as i64)
            .bind(characteristic)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(sqlx::AssertSqlSafe(meta_upsert_sql(review, "?1")))
            .bind(product)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn mark_helpful(&self, review_id: i64) -> Result<Option<ProductId>, StoreError> {
        let product: Option<i64> = sqlx::query_scalar(
            // Saturates at MAX_HELPFULNESS; the comparison comes first so the addition can
            // never overflow the column.
            "UPDATE reviews SET helpfulness = \
             CASE WHEN helpfulness < 2147483647 THEN helpfulness + 1 ELSE helpfulness END \
             WHERE id = ?1 RETURNING product_id",
        )
        .bind(review_id)
        .fetch_optional(&self.writer)
        .await?;
        Ok(product.and_then(ProductId::new))
    }

    async fn report(&self, review_id: i64) -> Result<Option<ProductId>, StoreError> {
        let product: Option<i64> = sqlx::query_scalar(
            "UPDATE reviews SET reported = 1 WHERE id = ?1 RETURNING product_id",
        )
        .bind(review_id)
        .fetch_optional(&self.writer)
        .await?;
        Ok(product.and_then(ProductId::new))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .run(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            self.readers.stats(),
            PoolStats::sqlx("write", &self.writer, 1),
        ]
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's statements share one snapshot: a write committed between them (here by
    /// another connection, in the middle of the read) is not seen until the next request, and
    /// a read that fails leaves its connection out of the transaction for the next one.
    #[tokio::test]
    async fn a_requests_statements_read_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.db");
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::open(&url, &DbLimits::default()).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&store.writer)
            .await
            .unwrap();
        let count = |c: &rusqlite::Connection| {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        };
        let writer_path = path.clone();
        let (before, after) = store
            .readers
            .run(move |conn| {
                let before = count(conn)?;
                let other = rusqlite::Connection::open(&writer_path)?;
                other.busy_timeout(std::time::Duration::from_secs(5))?;
                other.execute("INSERT INTO t VALUES (1)", [])?;
                Ok((before, count(conn)?))
            })
            .await
            .unwrap();
        assert_eq!((before, after), (0, 0), "the insert showed up mid-request");

        let failed = store
            .readers
            .run(|conn| conn.query_row("SELECT no_such_column FROM t", [], |_| Ok(())))
            .await;
        assert!(failed.is_err());
        // Every pooled connection starts its next request in a fresh snapshot, which sees
        // the insert.
        for _ in 0..3 {
            let seen = store.readers.run(move |conn| count(conn)).await.unwrap();
            assert_eq!(seen, 1);
        }
    }

    /// Each order is read straight off its partial index: SQLite's plan names the index and
    /// needs no temporary B-tree to sort a product's rows.
    #[tokio::test]
    async fn every_sort_order_reads_its_own_index_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::open(&url, &DbLimits::default()).await.unwrap();
        for (sort, index) in [
            (Sort::Newest, "reviews_by_newest"),
            (Sort::Helpful, "reviews_by_helpful"),
            (Sort::Relevant, "reviews_by_relevant"),
        ] {
            let sql = format!("EXPLAIN QUERY PLAN {}", list_sql(sort));
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(1_i64)
                .bind(5_i64)
                .bind(0_i64)
                .fetch_all(&store.writer)
                .await
                .unwrap();
            let plan: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
            assert!(plan.iter().any(|p| p.contains(index)), "{sort:?}: {plan:?}");
            assert!(
                !plan.iter().any(|p| p.contains("TEMP B-TREE")),
                "{sort:?} sorts: {plan:?}"
            );
        }
    }
}
