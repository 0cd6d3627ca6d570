//! The embedded default: one SQLite file in WAL mode, a pool of read-only connections for
//! GETs and a single writer connection, so writers queue in the process (bounded by the pool's
//! acquire timeout) instead of fighting over the file lock. Several API processes may share
//! the file; their writers then wait on each other for at most `busy_timeout`.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::rows::{
    ReviewRow, attach_photos, check_characteristics, meta_from_rows, meta_upsert_sql,
    review_from_row,
};
use super::{
    DbLimits, ListQuery, PoolStats, ProductMeta, Review, ReviewStore, SQLITE_MIGRATOR, StoreError,
};
use crate::domain::{NewReview, ProductId, Sort};

pub struct SqliteStore {
    readers: SqlitePool,
    writer: SqlitePool,
    max_readers: u32,
}

/// Connection options for a `sqlite://path`, `sqlite:path` or bare-path URL.
pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    let opts = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)?
    } else {
        SqliteConnectOptions::new().filename(url)
    };
    Ok(opts
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode is durable against process crashes; a power cut may lose the
        // last transactions but never corrupts the file.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(false)
        .pragma("cache_size", "-32768")
        .pragma("temp_store", "memory"))
}

impl SqliteStore {
    pub async fn open(url: &str, limits: &DbLimits) -> anyhow::Result<Self> {
        use anyhow::Context;
        let base = connect_options(url)
            .with_context(|| format!("invalid SQLite URL {url:?}"))?
            .busy_timeout(limits.statement_timeout);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(limits.acquire_timeout)
            .connect_with(base.clone().create_if_missing(true))
            .await
            .with_context(|| format!("cannot open SQLite database {url:?}"))?;
        SQLITE_MIGRATOR
            .run(&writer)
            .await
            .with_context(|| format!("cannot migrate SQLite database {url:?}"))?;
        let readers = SqlitePoolOptions::new()
            .max_connections(limits.max_connections.max(1))
            .acquire_timeout(limits.acquire_timeout)
            .connect_with(base.read_only(true))
            .await
            .with_context(|| format!("cannot open SQLite database {url:?} for reading"))?;
        Ok(SqliteStore {
            readers,
            writer,
            max_readers: limits.max_connections.max(1),
        })
    }

    pub(super) fn readers(&self) -> &SqlitePool {
        &self.readers
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

/// A page's photos; one statement for any page size: the ids travel as a JSON array.
pub(super) const PHOTOS_SQL: &str = "SELECT id, review_id, url FROM reviews_photos \
     WHERE review_id IN (SELECT value FROM json_each(?1)) ORDER BY review_id, id";
pub(super) const META_COUNTS_SQL: &str = "SELECT rating_1, rating_2, rating_3, rating_4, rating_5, recommend_false, recommend_true \
     FROM product_meta WHERE product_id = ?1";
pub(super) const META_CHARACTERISTICS_SQL: &str = "SELECT id, name, rating_sum, rating_count FROM characteristics WHERE product_id = ?1 ORDER BY id";

#[async_trait]
impl ReviewStore for SqliteStore {
    async fn list_reviews(&self, q: &ListQuery) -> Result<Vec<Review>, StoreError> {
        let mut conn = self.readers.acquire().await?;
        let rows: Vec<ReviewRow> = sqlx::query_as(list_sql(q.sort))
            .bind(q.product_id.get())
            .bind(q.count as i64)
            .bind(q.offset())
            .fetch_all(&mut *conn)
            .await?;
        let mut reviews: Vec<Review> = rows.into_iter().map(review_from_row).collect();
        if reviews.is_empty() {
            return Ok(reviews);
        }
        let ids = serde_json::to_string(&reviews.iter().map(|r| r.id).collect::<Vec<_>>())
            .map_err(|e| StoreError::Internal(sqlx::Error::Encode(Box::new(e))))?;
        let photos: Vec<(i64, i64, String)> = sqlx::query_as(PHOTOS_SQL)
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
        attach_photos(&mut reviews, photos);
        Ok(reviews)
    }

    async fn product_meta(&self, product_id: ProductId) -> Result<ProductMeta, StoreError> {
        let mut conn = self.readers.acquire().await?;
        let counts: Option<(i64, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(META_COUNTS_SQL)
            .bind(product_id.get())
            .fetch_optional(&mut *conn)
            .await?;
        let characteristics: Vec<(i64, String, i64, i64)> =
            sqlx::query_as(META_CHARACTERISTICS_SQL)
                .bind(product_id.get())
                .fetch_all(&mut *conn)
                .await?;
        Ok(meta_from_rows(counts, characteristics))
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
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            PoolStats {
                pool: "read",
                size: self.readers.size(),
                idle: self.readers.num_idle() as u32,
                max: self.max_readers,
            },
            PoolStats {
                pool: "write",
                size: self.writer.size(),
                idle: self.writer.num_idle() as u32,
                max: 1,
            },
        ]
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .fetch_all(&store.readers)
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
