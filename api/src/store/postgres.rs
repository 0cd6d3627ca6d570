//! PostgreSQL, for production: one pool shared by reads and writes, a server-side
//! `statement_timeout` so no query holds a connection for long, and lazy connections so an
//! API process whose database is briefly down still starts answering `/healthz` and 503s.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::backend::redact;
use super::rows::{check_characteristics, meta_from_rows, meta_upsert_sql};
use super::{
    DbLimits, ListQuery, POSTGRES_MIGRATOR, Photo, PoolStats, ProductMeta, Review, ReviewStore,
    StoreError,
};
use crate::domain::{NewReview, ProductId, Sort};

pub struct PostgresStore {
    pool: PgPool,
    max: u32,
}

impl PostgresStore {
    pub async fn open(url: &str, limits: &DbLimits) -> anyhow::Result<Self> {
        use anyhow::Context;
        let ms = limits.statement_timeout.as_millis().max(1);
        let opts = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid PostgreSQL URL {}", redact(url)))?
            .application_name("reviews-api")
            .options([
                ("statement_timeout", ms.to_string()),
                ("lock_timeout", ms.to_string()),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(limits.max_connections.max(1))
            .acquire_timeout(limits.acquire_timeout)
            .connect_lazy_with(opts);
        POSTGRES_MIGRATOR
            .run(&pool)
            .await
            .with_context(|| format!("cannot migrate PostgreSQL database {}", redact(url)))?;
        Ok(PostgresStore {
            pool,
            max: limits.max_connections.max(1),
        })
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// One statement per order, the page with its photos: one round trip per request. The inner
/// select matches one partial index column for column (no Sort node); the outer one casts
/// (renamed, so ORDER BY names the stored columns, which the inner scan's order already
/// satisfies) and gathers each review's photos from `reviews_photos_by_review` as JSON text
/// (`[[id, "url"], …]` by photo id), for the page's rows only.
macro_rules! page_with_photos {
    ($order:literal) => {
        concat!(
            "SELECT r.id, r.rating::BIGINT AS rating_n, r.summary, r.recommend, r.response, r.body, \
             r.date_ms, r.reviewer_name, r.helpfulness::BIGINT AS helpfulness_n, \
             (SELECT COALESCE(json_agg(json_build_array(p.id, p.url) ORDER BY p.id)::TEXT, '[]') \
              FROM reviews_photos p WHERE p.review_id = r.id) AS photos \
             FROM (SELECT id, rating, summary, recommend, response, body, date_ms, reviewer_name, helpfulness \
             FROM reviews WHERE product_id = $1 AND NOT reported ORDER BY ",
            $order,
            " LIMIT $2 OFFSET $3) AS r ORDER BY ",
            $order
        )
    };
}

pub(super) fn list_sql(sort: Sort) -> &'static str {
    match sort {
        Sort::Newest => page_with_photos!("date_ms DESC, id DESC"),
        Sort::Helpful => page_with_photos!("helpfulness DESC, id ASC"),
        Sort::Relevant => page_with_photos!("helpfulness DESC, date_ms DESC, id DESC"),
    }
}

/// The meta counts and the characteristics (`[[id, "name", sum, count], …]` by id) in one
/// statement; the counts are NULL for a product without reviews.
pub(super) const META_SQL: &str = "SELECT m.rating_1, m.rating_2, m.rating_3, m.rating_4, m.rating_5, \
     m.recommend_false, m.recommend_true, \
     (SELECT COALESCE(json_agg(json_build_array(c.id, c.name, c.rating_sum, c.rating_count) ORDER BY c.id)::TEXT, '[]') \
      FROM characteristics c WHERE c.product_id = $1) AS characteristics \
     FROM (VALUES (1)) AS one (x) LEFT JOIN product_meta m ON m.product_id = $1";

type PageRow = (
    i64,
    i64,
    String,
    bool,
    Option<String>,
    String,
    i64,
    String,
    i64,
    String,
);

type MetaRow = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
);

/// JSON text built by the statements above; failing to read it back is a fault.
fn from_json<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(e.into()))
}

#[async_trait]
impl ReviewStore for PostgresStore {
    async fn list_reviews(&self, q: &ListQuery) -> Result<Vec<Review>, StoreError> {
        let rows: Vec<PageRow> = sqlx::query_as(list_sql(q.sort))
            .bind(q.product_id.get())
            .bind(q.count as i64)
            .bind(q.offset())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let photos: Vec<(i64, String)> = from_json(&r.9)?;
                Ok(Review {
                    id: r.0,
                    rating: r.1,
                    summary: r.2,
                    recommend: r.3,
                    response: r.4,
                    body: r.5,
                    date_ms: r.6,
                    reviewer_name: r.7,
                    helpfulness: r.8,
                    photos: photos
                        .into_iter()
                        .map(|(id, url)| Photo { id, url })
                        .collect(),
                })
            })
            .collect()
    }

    async fn product_meta(&self, product_id: ProductId) -> Result<ProductMeta, StoreError> {
        let m: MetaRow = sqlx::query_as(META_SQL)
            .bind(product_id.get())
            .fetch_one(&self.pool)
            .await?;
        let counts = match m {
            (Some(r1), Some(r2), Some(r3), Some(r4), Some(r5), Some(rf), Some(rt), _) => {
                Some((r1, r2, r3, r4, r5, rf, rt))
            }
            _ => None,
        };
        Ok(meta_from_rows(counts, from_json(&m.7)?))
    }

    async fn add_review(&self, review: &NewReview, date_ms: i64) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let product = review.product_id.get();
        // FOR UPDATE: the characteristic rows are about to have their sums bumped; locking them
        // first keeps concurrent reviews of one product from deadlocking on each other.
        let owned: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM characteristics WHERE product_id = $1 ORDER BY id FOR UPDATE",
        )
        .bind(product)
        .fetch_all(&mut *tx)
        .await?;
        check_characteristics(review, &owned)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO reviews (product_id, rating, date_ms, summary, body, recommend, reported, \
             reviewer_name, reviewer_email, response, helpfulness) \
             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $8, NULL, 0) RETURNING id",
        )
        .bind(product)
        .bind(review.rating.get() as i16)
        .bind(date_ms)
        .bind(&review.summary)
        .bind(&review.body)
        .bind(review.recommend)
        .bind(&review.name)
        .bind(&review.email)
        .fetch_one(&mut *tx)
        .await?;
        if !review.photos.is_empty() {
            sqlx::query("INSERT INTO reviews_photos (review_id, url) SELECT $1, u FROM UNNEST($2::TEXT[]) AS u")
                .bind(id)
                .bind(&review.photos)
                .execute(&mut *tx)
                .await?;
        }
        if !review.characteristics.is_empty() {
            let (chars, values): (Vec<i64>, Vec<i16>) = review
                .characteristics
                .iter()
                .map(|&(c, v)| (c, v as i16))
                .unzip();
            sqlx::query(
                "INSERT INTO characteristic_reviews (characteristic_id, review_id, value) \
                 SELECT c, $2, v FROM UNNEST($1::BIGINT[], $3::SMALLINT[]) AS t(c, v)",
            )
            .bind(&chars)
            .bind(id)
            .bind(&values)
            .execute(&mut *tx)
            .await?;
            // UPDATE … FROM changes each target row once per statement, whatever the number of
            // joined rows: the ratings are summed per id first, so the aggregate stays right
            // even if one id came twice (the domain refuses that, this does not rely on it).
            sqlx::query(
                "UPDATE characteristics AS c SET rating_sum = c.rating_sum + t.s, rating_count = c.rating_count + t.n \
                 FROM (SELECT id, SUM(v) AS s, COUNT(*) AS n FROM UNNEST($1::BIGINT[], $2::SMALLINT[]) AS u(id, v) GROUP BY id) AS t \
                 WHERE c.id = t.id",
            )
            .bind(&chars)
            .bind(&values)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(sqlx::AssertSqlSafe(meta_upsert_sql(review, "$1")))
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
             WHERE id = $1 RETURNING product_id",
        )
        .bind(review_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(product.and_then(ProductId::new))
    }

    async fn report(&self, review_id: i64) -> Result<Option<ProductId>, StoreError> {
        let product: Option<i64> = sqlx::query_scalar(
            "UPDATE reviews SET reported = TRUE WHERE id = $1 RETURNING product_id",
        )
        .bind(review_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(product.and_then(ProductId::new))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![PoolStats {
            pool: "main",
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.max,
        }]
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each order is an index scan of its partial index with no Sort node. Sequential scans
    /// are switched off so the tiny test table does not hide which index would serve the order.
    #[tokio::test]
    async fn every_sort_order_reads_its_own_index_without_sorting() {
        let Ok(admin) = std::env::var("REVIEWS_TEST_DATABASE_URL") else {
            eprintln!("skipped on PostgreSQL: set REVIEWS_TEST_DATABASE_URL to run it");
            return;
        };
        let name = format!("reviews_plan_{}", std::process::id());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap();
        for stmt in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(stmt))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        let store = PostgresStore::open(url.as_str(), &DbLimits::default())
            .await
            .unwrap();
        for (sort, index) in [
            (Sort::Newest, "reviews_by_newest"),
            (Sort::Helpful, "reviews_by_helpful"),
            (Sort::Relevant, "reviews_by_relevant"),
        ] {
            let mut tx = store.pool.begin().await.unwrap();
            sqlx::raw_sql("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
                .execute(&mut *tx)
                .await
                .unwrap();
            let sql = format!("EXPLAIN {}", list_sql(sort));
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(1_i64)
                .bind(5_i64)
                .bind(0_i64)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            assert!(plan.iter().any(|p| p.contains(index)), "{sort:?}: {plan:?}");
            assert!(
                !plan.iter().any(|p| p.contains("Sort")),
                "{sort:?} sorts: {plan:?}"
            );
        }
        store.pool.close().await;
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}
