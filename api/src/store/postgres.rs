//! PostgreSQL, for production: the two GET statements on a pool of their own (see
//! [`super::pg_readers`] for why not sqlx's), writes, readiness and migrations on sqlx's pool,
//! a server-side `statement_timeout` so no query holds a connection for long, and lazy
//! connections so an API process whose database is briefly down still starts answering
//! `/healthz` and 503s.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::backend::redact;
use super::pg_readers::{PgReaders, retry_on_fresh};
use super::rows::{check_characteristics, meta_from_rows, meta_upsert_sql};
use super::{
    DbLimits, ListQuery, POSTGRES_MIGRATOR, Photo, PoolStats, ProductMeta, Review, ReviewStore,
    StoreError,
};
use crate::domain::{NewReview, ProductId, Sort};

pub struct PostgresStore {
    readers: PgReaders,
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
        // The list statement's generic plan is the one right plan (its index, see the
        // query-plan test), but PostgreSQL's `auto` mode compares its estimate (LIMIT $2 and
        // product_id = $1 unknown) with the custom plans' and keeps re-planning on every
        // execution: on the full data set 0.19 ms of planning for 0.07 ms of execution, most
        // of the server's CPU per request. Reads only: writes keep `auto`.
        let read_opts = opts
            .clone()
            .options([("plan_cache_mode", "force_generic_plan")]);
        let readers = PgReaders::new(
            read_opts,
            limits.max_connections.max(1),
            limits.acquire_timeout,
        );
        let pool = PgPoolOptions::new()
            .max_connections(limits.max_connections.max(1))
            .acquire_timeout(limits.acquire_timeout)
            .connect_lazy_with(opts);
        POSTGRES_MIGRATOR
            .run(&pool)
            .await
            .with_context(|| format!("cannot migrate PostgreSQL database {}", redact(url)))?;
        Ok(PostgresStore {
            readers,
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
/// satisfies) and gathers each review's photos from `reviews_photos_by_review` as two arrays
/// in photo id order, ids and urls (both NULL for a review without photos), for the page's
/// rows only. Arrays rather than JSON text: they arrive in binary, so neither side builds or
/// parses JSON for them (the API parsed `[[id, "url"], …]` with serde_json per row).
macro_rules! page_with_photos {
    ($order:literal) => {
        concat!(
            "SELECT r.id, r.rating::BIGINT AS rating_n, r.summary, r.recommend, r.response, r.body, \
             r.date_ms, r.reviewer_name, r.helpfulness::BIGINT AS helpfulness_n, \
             ph.ids, ph.urls \
             FROM (SELECT id, rating, summary, recommend, response, body, date_ms, reviewer_name, helpfulness \
             FROM reviews WHERE product_id = $1 AND NOT reported ORDER BY ",
            $order,
            " LIMIT $2 OFFSET $3) AS r \
             CROSS JOIN LATERAL (SELECT array_agg(p.id ORDER BY p.id) AS ids, array_agg(p.url ORDER BY p.id) AS urls \
             FROM reviews_photos p WHERE p.review_id = r.id) AS ph ORDER BY ",
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

/// A row of [`list_sql`], column by column in its order.
///
/// Unchecked reads: `try_get` compares each column's PostgreSQL type with the Rust one on
/// every row (with the tuple decoding it was about 4,000 instructions of a 70,000-instruction
/// list request, callgrind), for types that are fixed by the statement text and the schema.
/// Unchecked, a wrong type could decode into a wrong value instead of failing, so the test
/// `the_list_statements_return_what_is_read_unchecked` holds every order's columns to the
/// types read here.
fn review_from_row(row: &PgRow) -> Result<Review, StoreError> {
    let id: i64 = row.try_get_unchecked(0)?;
    let ids: Option<Vec<i64>> = row.try_get_unchecked(9)?;
    let urls: Option<Vec<String>> = row.try_get_unchecked(10)?;
    let (ids, urls) = (ids.unwrap_or_default(), urls.unwrap_or_default());
    if ids.len() != urls.len() {
        // Both arrays aggregate the same rows; anything else is a fault.
        return Err(StoreError::Internal(
            format!("review {id}: {} photo ids, {} urls", ids.len(), urls.len()).into(),
        ));
    }
    Ok(Review {
        id,
        rating: row.try_get_unchecked(1)?,
        summary: row.try_get_unchecked(2)?,
        recommend: row.try_get_unchecked(3)?,
        response: row.try_get_unchecked(4)?,
        body: row.try_get_unchecked(5)?,
        date_ms: row.try_get_unchecked(6)?,
        reviewer_name: row.try_get_unchecked(7)?,
        helpfulness: row.try_get_unchecked(8)?,
        photos: ids
            .into_iter()
            .zip(urls)
            .map(|(id, url)| Photo { id, url })
            .collect(),
    })
}

/// JSON text built by [`META_SQL`]; failing to read it back is a fault.
fn from_json<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(e.into()))
}

#[async_trait]
impl ReviewStore for PostgresStore {
    async fn list_reviews(&self, q: &ListQuery) -> Result<Vec<Review>, StoreError> {
        let mut fresh = false;
        let rows: Vec<PgRow> = loop {
            let mut reader = self.readers.get(fresh).await?;
            let read = sqlx::query(list_sql(q.sort))
                .bind(q.product_id.get())
                .bind(q.count as i64)
                .bind(q.offset())
                .fetch_all(reader.conn())
                .await;
            match read {
                Ok(rows) => {
                    reader.release();
                    break rows;
                }
                Err(e) if !fresh && retry_on_fresh(&reader, &e) => fresh = true,
                Err(e) => return Err(e.into()),
            }
        };
        rows.iter().map(review_from_row).collect()
    }

    async fn product_meta(&self, product_id: ProductId) -> Result<ProductMeta, StoreError> {
        let mut fresh = false;
        let m: MetaRow = loop {
            let mut reader = self.readers.get(fresh).await?;
            let read = sqlx::query_as(META_SQL)
                .bind(product_id.get())
                .fetch_one(reader.conn())
                .await;
            match read {
                Ok(row) => {
                    reader.release();
                    break row;
                }
                Err(e) if !fresh && retry_on_fresh(&reader, &e) => fresh = true,
                Err(e) => return Err(e.into()),
            }
        };
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

    async fn warm(&self) {
        match self.readers.fill().await {
            Ok(opened) => tracing::debug!(opened, "PostgreSQL read connections opened"),
            Err(e) => {
                tracing::info!(error = %e, "PostgreSQL read connections left to the first requests")
            }
        }
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            self.readers.stats(),
            PoolStats::sqlx("main", &self.pool, self.max),
        ]
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::SqlSafeStr;

    use super::*;

    /// A store on a new database of its own, with an admin connection to drop it afterwards;
    /// `None` (the test skips) without `REVIEWS_TEST_DATABASE_URL`.
    async fn fresh_store(tag: &str) -> Option<(PostgresStore, sqlx::PgConnection, String)> {
        let Ok(admin) = std::env::var("REVIEWS_TEST_DATABASE_URL") else {
            eprintln!("skipped on PostgreSQL: set REVIEWS_TEST_DATABASE_URL to run it");
            return None;
        };
        let name = format!("reviews_{tag}_{}", std::process::id());
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
        Some((store, conn, name))
    }

    async fn drop_database(mut conn: sqlx::PgConnection, name: &str) {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }

    /// A pooled read connection that the server ended while it sat idle (a restart, an
    /// administrator, `idle_session_timeout`) costs no request: the read is tried once more on
    /// a new connection.
    #[tokio::test]
    async fn a_read_survives_the_server_ending_its_idle_connection() {
        let Some((store, mut conn, name)) = fresh_store("reconnect").await else {
            return;
        };
        let product = ProductId::new(1).unwrap();
        let q = ListQuery {
            product_id: product,
            sort: Sort::Relevant,
            page: 1,
            count: 5,
        };
        assert!(store.list_reviews(&q).await.unwrap().is_empty());
        assert_eq!(store.pool_stats()[0].idle, 1, "{:?}", store.pool_stats());
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(!ended.is_empty());
        assert!(store.list_reviews(&q).await.unwrap().is_empty());
        assert_eq!(
            store.product_meta(product).await.unwrap(),
            ProductMeta::default()
        );
        store.pool.close().await;
        drop(store);
        drop_database(conn, &name).await;
    }

    /// A read whose request is dropped while its statement is in flight (the client went away)
    /// closes its connection instead of returning it to the pool mid-protocol, where the next
    /// read on it would first wait out the abandoned statement (up to `statement_timeout`).
    #[tokio::test]
    async fn a_read_cancelled_mid_statement_does_not_return_its_connection() {
        let Some((store, conn, name)) = fresh_store("cancel").await else {
            return;
        };
        sqlx::query(
            "INSERT INTO reviews (product_id, rating, date_ms, summary, body, recommend, \
             reviewer_name, reviewer_email) VALUES (1, 5, 0, 'first', 'body', TRUE, 'n', 'e')",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let q = |product| ListQuery {
            product_id: ProductId::new(product).unwrap(),
            sort: Sort::Newest,
            page: 1,
            count: 5,
        };
        assert_eq!(store.list_reviews(&q(1)).await.unwrap().len(), 1);
        assert_eq!(store.pool_stats()[0].idle, 1, "{:?}", store.pool_stats());

        // The table locked, the next read waits on the server with its statement sent.
        let mut lock = store.pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE reviews IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *lock)
            .await
            .unwrap();
        let cancelled =
            tokio::time::timeout(Duration::from_millis(300), store.list_reviews(&q(1))).await;
        assert!(cancelled.is_err(), "the read should still be waiting");
        let stats = &store.pool_stats()[0];
        assert_eq!((stats.idle, stats.size), (0, 0), "{stats:?}");
        lock.rollback().await.unwrap();

        // Reads go on, on a new connection, and answer for their own product.
        assert!(store.list_reviews(&q(2)).await.unwrap().is_empty());
        assert_eq!(store.list_reviews(&q(1)).await.unwrap().len(), 1);
        store.pool.close().await;
        drop(store);
        drop_database(conn, &name).await;
    }

    /// A starting server opens its read connections ahead of the first requests: all of them,
    /// once, never more than the pool's `max` (a second warm-up, or one racing requests,
    /// opens none beyond it), and the PostgreSQL server sees exactly that many sessions.
    #[tokio::test]
    async fn warming_opens_every_read_connection_and_no_more() {
        let Some((store, mut conn, name)) = fresh_store("warm").await else {
            return;
        };
        let max = DbLimits::default().max_connections;
        let q = ListQuery {
            product_id: ProductId::new(1).unwrap(),
            sort: Sort::Newest,
            page: 1,
            count: 5,
        };
        let (_, read) = tokio::join!(store.warm(), store.list_reviews(&q));
        assert!(read.unwrap().is_empty());
        let stats = &store.pool_stats()[0];
        assert_eq!(
            (stats.size, stats.idle, stats.max),
            (max, max, max),
            "{stats:?}"
        );
        store.warm().await;
        assert_eq!(store.pool_stats()[0].size, max);
        let sessions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'reviews-api'",
        )
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        // The read connections, plus whatever the write pool kept from the migrations.
        let writers = store.pool_stats()[1].size as i64;
        assert_eq!(sessions, max as i64 + writers);
        store.pool.close().await;
        drop(store);
        drop_database(conn, &name).await;
    }

    /// [`review_from_row`] reads without type checks: each order's columns must be, in order,
    /// the types it decodes.
    #[tokio::test]
    async fn the_list_statements_return_what_is_read_unchecked() {
        let Some((store, conn, name)) = fresh_store("columns").await else {
            return;
        };
        let expected = [
            "INT8", "INT8", "TEXT", "BOOL", "TEXT", "TEXT", "INT8", "TEXT", "INT8", "INT8[]",
            "TEXT[]",
        ];
        for sort in [Sort::Newest, Sort::Helpful, Sort::Relevant] {
            let described = sqlx::Executor::describe(&store.pool, list_sql(sort).into_sql_str())
                .await
                .unwrap();
            let types: Vec<String> = described
                .columns()
                .iter()
                .map(|c| sqlx::TypeInfo::name(sqlx::Column::type_info(c)).to_owned())
                .collect();
            assert_eq!(types, expected, "{sort:?}");
        }
        store.pool.close().await;
        drop_database(conn, &name).await;
    }

    /// Each order is an index scan of its partial index with no Sort node, both as a plan for
    /// the bound values and as the generic plan the read connections are made to use
    /// (`plan_cache_mode`). Sequential scans are switched off so the tiny test table does not
    /// hide which index would serve the order.
    #[tokio::test]
    async fn every_sort_order_reads_its_own_index_without_sorting() {
        let Some((store, conn, name)) = fresh_store("plan").await else {
            return;
        };
        let orders = [
            (Sort::Newest, "reviews_by_newest"),
            (Sort::Helpful, "reviews_by_helpful"),
            (Sort::Relevant, "reviews_by_relevant"),
        ];
        for mode in ["force_custom_plan", "force_generic_plan"] {
            for (sort, index) in orders {
                let mut tx = store.pool.begin().await.unwrap();
                let set = format!(
                    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
                     SET LOCAL plan_cache_mode = {mode}"
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                // A named prepared statement: `EXPLAIN` of a statement with bound parameters
                // plans it for those values whatever `plan_cache_mode` says.
                let prepare = format!(
                    "PREPARE plan_probe (BIGINT, BIGINT, BIGINT) AS {}",
                    list_sql(sort)
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(prepare))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE plan_probe (1, 5, 0)")
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
                sqlx::raw_sql("DEALLOCATE plan_probe")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                assert!(
                    plan.iter().any(|p| p.contains(index)),
                    "{mode} {sort:?}: {plan:?}"
                );
                assert!(
                    !plan.iter().any(|p| p.contains("Sort")),
                    "{mode} {sort:?} sorts: {plan:?}"
                );
                assert_eq!(
                    plan.iter().any(|p| p.contains("$1")),
                    mode == "force_generic_plan",
                    "{mode}: {plan:?}"
                );
            }
        }
        store.pool.close().await;
        drop_database(conn, &name).await;
    }
}
