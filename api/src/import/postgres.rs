//! Loading into PostgreSQL: the whole import is one transaction (PostgreSQL's DDL is
//! transactional), so it is atomic: the emptiness check or `TRUNCATE`, dropping the secondary
//! indexes, one `COPY … FROM STDIN` (text format) per file, the aggregates, the identity
//! sequences and the rebuilt indexes all commit together or not at all. Readers of a live
//! database are blocked meanwhile by the `DROP INDEX` locks, so import with the API stopped or
//! into a fresh database. `ANALYZE` (and a `VACUUM` of `characteristics`, whose aggregate update
//! left a dead version of every row) run after the commit, as they must.
//!
//! Rows reach `COPY` already validated: PostgreSQL aborts a whole `COPY` on one bad row.

use std::io::Write;
use std::str::FromStr;

use anyhow::{Context, bail};
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow as DbRow};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use tokio::sync::mpsc::Receiver;

use super::rows::{
    CHARACTERISTIC_NAMES, CharacteristicReviewRow, CharacteristicRow, CsvRow, PhotoRow, ReviewRow,
};
use super::verify::{AGGREGATE_TOTALS_SQL, AggregateTotals, Checksums};
use super::{IMPORTED_TABLES, quote_ident};
use crate::store::POSTGRES_MIGRATOR;

/// Bytes of COPY data gathered before one network write.
const COPY_CHUNK: usize = 1 << 20;

/// How a row is written as a line of `COPY` text and read back for `--verify`.
pub trait CopyRow: CsvRow {
    fn encode(&self, out: &mut Vec<u8>);
    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error>;
}

pub struct PgTarget {
    pool: PgPool,
    tx: Option<Transaction<'static, Postgres>>,
    /// (qualified name, CREATE INDEX statement) to rebuild after loading.
    indexes: Vec<(String, String)>,
}

impl PgTarget {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let opts = PgConnectOptions::from_str(url).context("bad PostgreSQL URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .context("connecting to PostgreSQL")?;
        POSTGRES_MIGRATOR
            .run(&pool)
            .await
            .context("migrating the PostgreSQL database")?;
        Ok(PgTarget {
            pool,
            tx: None,
            indexes: Vec::new(),
        })
    }

    fn tx(&mut self) -> &mut Transaction<'static, Postgres> {
        self.tx.as_mut().expect("prepare() opens the transaction")
    }

    /// Opens the import's transaction; refuses a non-empty database unless `replace`, which
    /// truncates; drops the secondary indexes.
    pub async fn prepare(&mut self, replace: bool) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        // Server memory for the index builds at the end (not this process's).
        sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
            .execute(&mut *tx)
            .await?;
        let mut non_empty = Vec::new();
        for table in IMPORTED_TABLES {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quote_ident(table));
            let any: bool = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut *tx)
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
            let tables: Vec<String> = IMPORTED_TABLES.iter().map(|t| quote_ident(t)).collect();
            sqlx::query(AssertSqlSafe(format!("TRUNCATE {}", tables.join(", "))))
                .execute(&mut *tx)
                .await?;
        }
        // Every index of the tables that no constraint owns (primary keys stay: they cost little
        // on ascending ids and guard against duplicates).
        self.indexes = sqlx::query_as(
            "SELECT quote_ident(i.schemaname) || '.' || quote_ident(i.indexname), i.indexdef \
             FROM pg_indexes i \
             WHERE i.schemaname = current_schema() AND i.tablename = ANY($1) \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
                               WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass) \
             ORDER BY i.tablename, i.indexname",
        )
        .bind(IMPORTED_TABLES.iter().map(|t| t.to_string()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        for (name, _) in &self.indexes {
            sqlx::query(AssertSqlSafe(format!("DROP INDEX {name}")))
                .execute(&mut *tx)
                .await?;
        }
        self.tx = Some(tx);
        Ok(())
    }

    /// Streams every batch received into one `COPY`; returns the rows PostgreSQL counted.
    pub async fn write<T: CopyRow>(&mut self, rx: &mut Receiver<Vec<T>>) -> anyhow::Result<u64> {
        let stmt = format!("COPY {} ({}) FROM STDIN", T::TABLE, T::COLUMNS.join(", "));
        let mut copy = self
            .tx()
            .copy_in_raw(&stmt)
            .await
            .with_context(|| format!("starting {stmt}"))?;
        let mut buf = Vec::with_capacity(COPY_CHUNK + 64 * 1024);
        while let Some(batch) = rx.recv().await {
            for row in &batch {
                row.encode(&mut buf);
            }
            if buf.len() >= COPY_CHUNK {
                copy.send(buf.as_slice()).await?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            copy.send(buf.as_slice()).await?;
        }
        let rows = copy
            .finish()
            .await
            .with_context(|| format!("copying into {}", T::TABLE))?;
        Ok(rows)
    }

    /// Aggregates, sequences and indexes, then commit; then `ANALYZE`.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        let mut tx = self.tx.take().expect("prepare() opens the transaction");
        sqlx::query(CHARACTERISTIC_AGGREGATES_SQL)
            .execute(&mut *tx)
            .await
            .context("summing characteristic ratings")?;
        sqlx::query(PRODUCT_META_SQL)
            .execute(&mut *tx)
            .await
            .context("counting product ratings")?;
        for table in [
            "reviews",
            "reviews_photos",
            "characteristics",
            "characteristic_reviews",
        ] {
            // New ids continue after the highest imported one (the first is 1 when empty).
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}"
            );
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("restarting the id sequence of {table}"))?;
        }
        for (name, sql) in &self.indexes {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("creating index {name}"))?;
        }
        tx.commit().await.context("committing the import")?;
        sqlx::raw_sql("VACUUM (ANALYZE) characteristics")
            .execute(&self.pool)
            .await?;
        sqlx::raw_sql("ANALYZE reviews, reviews_photos, characteristic_reviews, product_meta")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn checksums(&mut self) -> anyhow::Result<(Checksums, AggregateTotals)> {
        let mut sums = Checksums::default();
        sum_table::<ReviewRow>(&self.pool, &mut sums).await?;
        sum_table::<PhotoRow>(&self.pool, &mut sums).await?;
        sum_table::<CharacteristicRow>(&self.pool, &mut sums).await?;
        sum_table::<CharacteristicReviewRow>(&self.pool, &mut sums).await?;
        let row = sqlx::query(AGGREGATE_TOTALS_SQL)
            .fetch_one(&self.pool)
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
        drop(self.tx);
        self.pool.close().await;
        Ok(())
    }
}

const CHARACTERISTIC_AGGREGATES_SQL: &str = "UPDATE characteristics \
    SET rating_sum = a.s, rating_count = a.c \
    FROM (SELECT characteristic_id, SUM(value) AS s, COUNT(*) AS c FROM characteristic_reviews GROUP BY characteristic_id) AS a \
    WHERE characteristics.id = a.characteristic_id";

const PRODUCT_META_SQL: &str = "INSERT INTO product_meta \
    (product_id, rating_1, rating_2, rating_3, rating_4, rating_5, recommend_false, recommend_true) \
    SELECT product_id, \
    COUNT(*) FILTER (WHERE rating = 1), COUNT(*) FILTER (WHERE rating = 2), COUNT(*) FILTER (WHERE rating = 3), \
    COUNT(*) FILTER (WHERE rating = 4), COUNT(*) FILTER (WHERE rating = 5), \
    COUNT(*) FILTER (WHERE NOT recommend), COUNT(*) FILTER (WHERE recommend) \
    FROM reviews GROUP BY product_id";

async fn sum_table<T: CopyRow>(pool: &PgPool, sums: &mut Checksums) -> anyhow::Result<()> {
    let sql = format!("SELECT {} FROM {}", T::COLUMNS.join(", "), T::TABLE);
    let sum = sums.table_mut(T::TABLE);
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let row = T::from_db(&row)?;
        sum.add(row.id(), row.digest());
    }
    Ok(())
}

// COPY text format: columns separated by tabs, rows by newlines, `\N` for NULL, and a backslash
// escaping backslash, tab, newline and carriage return inside values.

fn put_int(out: &mut Vec<u8>, n: i64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

fn put_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { b't' } else { b'f' });
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Fast path: almost no value holds a character that needs escaping.
    if memchr::memchr3(b'\\', b'\t', b'\n', bytes).is_none()
        && memchr::memchr(b'\r', bytes).is_none()
    {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn put_opt_text(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_text(out, s),
        None => out.extend_from_slice(b"\\N"),
    }
}

impl CopyRow for ReviewRow {
    fn encode(&self, out: &mut Vec<u8>) {
        put_int(out, self.id);
        out.push(b'\t');
        put_int(out, self.product_id);
        out.push(b'\t');
        put_int(out, self.rating);
        out.push(b'\t');
        put_int(out, self.date_ms);
        out.push(b'\t');
        put_text(out, &self.summary);
        out.push(b'\t');
        put_text(out, &self.body);
        out.push(b'\t');
        put_bool(out, self.recommend);
        out.push(b'\t');
        put_bool(out, self.reported);
        out.push(b'\t');
        put_text(out, &self.reviewer_name);
        out.push(b'\t');
        put_text(out, &self.reviewer_email);
        out.push(b'\t');
        put_opt_text(out, self.response.as_deref());
        out.push(b'\t');
        put_int(out, self.helpfulness);
        out.push(b'\n');
    }

    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(ReviewRow {
            id: row.try_get(0)?,
            product_id: row.try_get(1)?,
            rating: row.try_get::<i16, _>(2)?.into(),
            date_ms: row.try_get(3)?,
            summary: row.try_get(4)?,
            body: row.try_get(5)?,
            recommend: row.try_get(6)?,
            reported: row.try_get(7)?,
            reviewer_name: row.try_get(8)?,
            reviewer_email: row.try_get(9)?,
            response: row.try_get(10)?,
            helpfulness: row.try_get::<i32, _>(11)?.into(),
        })
    }
}

impl CopyRow for PhotoRow {
    fn encode(&self, out: &mut Vec<u8>) {
        put_int(out, self.id);
        out.push(b'\t');
        put_int(out, self.review_id);
        out.push(b'\t');
        put_text(out, &self.url);
        out.push(b'\n');
    }

    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(PhotoRow {
            id: row.try_get(0)?,
            review_id: row.try_get(1)?,
            url: row.try_get(2)?,
        })
    }
}

impl CopyRow for CharacteristicRow {
    fn encode(&self, out: &mut Vec<u8>) {
        put_int(out, self.id);
        out.push(b'\t');
        put_int(out, self.product_id);
        out.push(b'\t');
        put_text(out, self.name);
        out.push(b'\n');
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

impl CopyRow for CharacteristicReviewRow {
    fn encode(&self, out: &mut Vec<u8>) {
        put_int(out, self.id);
        out.push(b'\t');
        put_int(out, self.characteristic_id);
        out.push(b'\t');
        put_int(out, self.review_id);
        out.push(b'\t');
        put_int(out, self.value);
        out.push(b'\n');
    }

    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(CharacteristicReviewRow {
            id: row.try_get(0)?,
            characteristic_id: row.try_get(1)?,
            review_id: row.try_get(2)?,
            value: row.try_get::<i16, _>(3)?.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_backslash_tab_newline_and_carriage_return() {
        let mut out = Vec::new();
        put_text(&mut out, "a\\b\tc\nd\re\"f,g");
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re\"f,g".to_vec());
    }

    #[test]
    fn a_null_response_is_copied_as_backslash_n_and_the_text_null_is_not() {
        let mut out = Vec::new();
        put_opt_text(&mut out, None);
        out.push(b'|');
        put_opt_text(&mut out, Some("null"));
        out.push(b'|');
        put_opt_text(&mut out, Some("\\N"));
        assert_eq!(out, b"\\N|null|\\\\N".to_vec());
    }

    #[test]
    fn a_review_is_one_tab_separated_line() {
        let row = ReviewRow {
            id: 1,
            product_id: 2,
            rating: 5,
            date_ms: 1596080481467,
            summary: "Great!".into(),
            body: "line one\nline two".into(),
            recommend: true,
            reported: false,
            reviewer_name: "funtime".into(),
            reviewer_email: "first.last@gmail.com".into(),
            response: None,
            helpfulness: 8,
        };
        let mut out = Vec::new();
        row.encode(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1\t2\t5\t1596080481467\tGreat!\tline one\\nline two\tt\tf\tfuntime\tfirst.last@gmail.com\t\\N\t8\n"
        );
    }
}
