//! Loading into PostgreSQL: into staging tables, swapped in at the end. The whole import is one
//! transaction (PostgreSQL's DDL is transactional), so it is atomic — nothing visible changes
//! unless everything succeeds — and readers of a live database go on reading the old rows until
//! the swap at the end, which blocks them only briefly (at most one lock try, see below).
//!
//! - [`PgTarget::prepare`] locks the live tables against writes (`SHARE ROW EXCLUSIVE`: a review
//!   posted meanwhile would vanish in the swap, so writers wait for the commit; readers are not
//!   blocked), refuses a non-empty database unless `--replace`, records the live tables' indexes,
//!   the constraints that own some of them and the identity sequences, and creates one empty
//!   staging table `import_<table>` per table (`LIKE <table>` with its defaults, identity,
//!   `CHECK` constraints, generated columns, storage and comments, but no index and no primary
//!   key yet), owned, granted and configured like the live one.
//! - [`PgTarget::write`]: one `COPY … FROM STDIN (FREEZE)` per file (text format) into its
//!   staging table, so the rows are stored frozen and all-visible and nothing rewrites them
//!   later to set hint bits. `characteristics` goes to a scratch table first.
//! - [`PgTarget::finish`]: `ANALYZE`; the aggregates (`characteristics` is written once, its
//!   `rating_sum/count` joined in from the ratings, so no `UPDATE` leaves a dead version of every
//!   row; `product_meta` is counted from the reviews); the primary keys and secondary indexes,
//!   built on the loaded tables under temporary names; the identity sequences set after the
//!   highest imported id. With `--verify`, the staging tables are checksummed here, inside the
//!   transaction (a mismatch ends the import without a swap: nothing changes). Then the swap: `ACCESS EXCLUSIVE` on the live tables (taken in short
//!   tries, so readers never queue behind the import for long and a deadlock with a reader is
//!   retried, not fatal), `DROP` them, and rename the staging tables, their indexes, constraints
//!   and sequences to the original names. Commit, then `VACUUM` the two aggregate tables.
//!
//! After an import the schema is exactly what the migrations made (same tables, columns,
//! indexes, constraints and sequences, by name and definition; `_sqlx_migrations` is not
//! touched). Anything else attached to the live tables — triggers, policies, publications — does
//! not follow them; a view or a foreign key that depends on them makes the `DROP` fail and the
//! whole import roll back.
//!
//! Rows reach `COPY` already validated: PostgreSQL aborts a whole `COPY` on one bad row.

use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow as DbRow};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use tokio::sync::mpsc::Receiver;

use super::progress::Progress;
use super::rows::{
    CHARACTERISTIC_NAMES, CharacteristicReviewRow, CharacteristicRow, CsvRow, PhotoRow, ReviewRow,
};
use super::verify::{AggregateTotals, Checksums, VerifyReport, aggregate_totals_sql};
use super::{IMPORTED_TABLES, quote_ident};
use crate::store::POSTGRES_MIGRATOR;

/// Bytes of COPY data gathered before one network write.
const COPY_CHUNK: usize = 1 << 20;

/// Where `characteristics.csv` is copied before the aggregates are joined in.
const CHARACTERISTIC_ROWS: &str = "import_characteristic_rows";

/// One try at the swap's locks waits at most this long; readers arriving meanwhile queue behind
/// it, so this is also the longest a reader waits for a try (the API's own lock timeout is 2 s).
const SWAP_LOCK_WAIT: Duration = Duration::from_millis(500);
/// Pause between tries, so queued readers get through.
const SWAP_LOCK_PAUSE: Duration = Duration::from_millis(500);
/// Tries before the last one, which waits as long as it takes.
const SWAP_LOCK_TRIES: u32 = 120;

/// How a row is written as a line of `COPY` text and read back for `--verify`.
pub trait CopyRow: CsvRow {
    fn encode(&self, out: &mut Vec<u8>);
    fn from_db(row: &DbRow) -> Result<Self, sqlx::Error>;
}

/// The staging table that becomes `table` at the swap.
fn staging_name(table: &str) -> String {
    format!("import_{table}")
}

/// The table a file is copied into.
fn load_table(table: &str) -> String {
    if table == "characteristics" {
        CHARACTERISTIC_ROWS.to_owned()
    } else {
        staging_name(table)
    }
}

/// `a, b, c`, each quoted.
fn table_list<'a>(tables: impl IntoIterator<Item = &'a str>) -> String {
    tables
        .into_iter()
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An index of a live table, built on its staging table under a temporary name and given its
/// own name back at the swap.
struct StagedIndex {
    /// The live table.
    table: String,
    /// The live index's name.
    name: String,
    /// Its name on the staging table until the swap.
    temp: String,
    build: IndexBuild,
}

enum IndexBuild {
    /// The index of a constraint (primary key, unique, exclusion): its name and
    /// `pg_get_constraintdef`, added with `ALTER TABLE … ADD CONSTRAINT`.
    Constraint { name: String, definition: String },
    /// A plain index: the `CREATE INDEX` statement for the staging table.
    Index(String),
}

/// An identity sequence of a live table and its counterpart on the staging table.
struct StagedSequence {
    /// The staging table.
    table: String,
    column: String,
    /// The live sequence's name.
    name: String,
    /// The staging table's sequence.
    temp: String,
}

pub struct PgTarget {
    pool: PgPool,
    tx: Option<Transaction<'static, Postgres>>,
    indexes: Vec<StagedIndex>,
    sequences: Vec<StagedSequence>,
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
            sequences: Vec::new(),
        })
    }

    fn tx(&mut self) -> &mut Transaction<'static, Postgres> {
        self.tx.as_mut().expect("prepare() opens the transaction")
    }

    /// Opens the import's transaction and locks the live tables against writes; refuses a
    /// non-empty database unless `replace`; creates the empty staging tables.
    pub async fn prepare(&mut self, replace: bool) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for set in [
            // Server memory for the aggregates and index builds at the end (not this process's).
            "SET LOCAL maintenance_work_mem = '256MB'",
            "SET LOCAL work_mem = '256MB'",
            // No notices (`DROP TABLE IF EXISTS` of nothing) in the log.
            "SET LOCAL client_min_messages = warning",
        ] {
            sqlx::query(set).execute(&mut *tx).await?;
        }
        // Writers wait until the commit: what they wrote to the live tables would be lost in the
        // swap. Readers are not blocked by this mode.
        let live = table_list(IMPORTED_TABLES);
        sqlx::query(AssertSqlSafe(format!(
            "LOCK TABLE {live} IN SHARE ROW EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await
        .context("locking the review tables against writes")?;
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
        if !non_empty.is_empty() && !replace {
            bail!(
                "the database already holds rows in {}; importing again would duplicate them. \
                 Use --replace to empty these tables first, or import into a new database",
                non_empty.join(", ")
            );
        }
        // With `replace` there is nothing to empty: the swap drops the live tables whole.
        self.indexes = live_indexes(&mut tx).await?;
        self.sequences.clear();
        for table in IMPORTED_TABLES {
            let staging = staging_name(table);
            let sql = format!(
                "DROP TABLE IF EXISTS {s}; \
                 CREATE TABLE {s} (LIKE {t} INCLUDING DEFAULTS INCLUDING IDENTITY \
                 INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)",
                s = quote_ident(&staging),
                t = quote_ident(table)
            );
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("creating the staging table {staging}"))?;
            copy_table_settings(&mut tx, table, &staging).await?;
            let staged = identity_sequences(&mut tx, &staging).await?;
            for (column, name) in identity_sequences(&mut tx, table).await? {
                let temp = staged
                    .iter()
                    .find(|(c, _)| *c == column)
                    .map(|(_, s)| s.clone())
                    .with_context(|| format!("{staging}.{column} has no identity sequence"))?;
                self.sequences.push(StagedSequence {
                    table: staging.clone(),
                    column,
                    name,
                    temp,
                });
            }
        }
        let sql = format!(
            "DROP TABLE IF EXISTS {r}; \
             CREATE TABLE {r} AS SELECT id, product_id, name FROM characteristics WITH NO DATA",
            r = quote_ident(CHARACTERISTIC_ROWS)
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .context("creating the staging table for characteristics")?;
        self.tx = Some(tx);
        Ok(())
    }

    /// Streams every batch received into one `COPY`; returns the rows PostgreSQL counted.
    pub async fn write<T: CopyRow>(&mut self, rx: &mut Receiver<Vec<T>>) -> anyhow::Result<u64> {
        // FREEZE: the table was created in this transaction, so its rows can be written frozen.
        let stmt = format!(
            "COPY {} ({}) FROM STDIN (FREEZE)",
            quote_ident(&load_table(T::TABLE)),
            T::COLUMNS.join(", ")
        );
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

    /// Statistics, aggregates, indexes and sequences on the staging tables; with `loaded`
    /// checksums the verify, of the staging tables inside the import's transaction; then the
    /// swap, the commit, and `VACUUM` of the aggregate tables. A verify that finds a mismatch
    /// returns its report without swapping: the transaction is rolled back when the target
    /// closes, and the database stays as it was.
    ///
    /// Verifying after the commit instead would also count whatever the API wrote in the
    /// meantime (writers wait on the import's lock and go ahead at the commit): a false
    /// MISMATCH.
    pub async fn finish(
        &mut self,
        loaded: Option<&Checksums>,
        progress: &Progress,
    ) -> anyhow::Result<Option<VerifyReport>> {
        let mut tx = self.tx.take().expect("prepare() opens the transaction");
        // The aggregate queries plan with these statistics; the swap commits them with the tables.
        let copied = [
            staging_name("reviews"),
            staging_name("reviews_photos"),
            CHARACTERISTIC_ROWS.to_owned(),
            staging_name("characteristic_reviews"),
        ];
        analyze(&mut tx, &copied).await?;
        sqlx::query(CHARACTERISTIC_AGGREGATES_SQL)
            .execute(&mut *tx)
            .await
            .context("summing characteristic ratings")?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP TABLE {}",
            quote_ident(CHARACTERISTIC_ROWS)
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(PRODUCT_META_SQL)
            .execute(&mut *tx)
            .await
            .context("counting product ratings")?;
        analyze(
            &mut tx,
            &[
                staging_name("characteristics"),
                staging_name("product_meta"),
            ],
        )
        .await?;
        for index in &self.indexes {
            let staging = quote_ident(&staging_name(&index.table));
            let temp = quote_ident(&index.temp);
            let sql = match &index.build {
                IndexBuild::Constraint { definition, .. } => {
                    format!("ALTER TABLE {staging} ADD CONSTRAINT {temp} {definition}")
                }
                IndexBuild::Index(create) => create.clone(),
            };
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("building index {} of {}", index.name, index.table))?;
        }
        for seq in &self.sequences {
            // New ids continue after the highest imported one (the first is 1 when empty). After
            // the primary keys, so MAX is an index lookup.
            let column = quote_ident(&seq.column);
            let sql = format!(
                "SELECT setval($1::regclass, GREATEST(MAX({column}), 1), MAX({column}) IS NOT NULL) FROM {}",
                quote_ident(&seq.table)
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(quote_ident(&seq.temp))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("restarting the id sequence of {}", seq.table))?;
        }
        let report = match loaded {
            Some(loaded) => {
                progress.phase("verifying");
                let (stored, totals) = staged_checksums(&mut tx).await?;
                let report = VerifyReport::compare(loaded, &stored, &totals);
                if !report.is_ok() {
                    // Not swapped, not committed: dropping `tx` rolls the import back.
                    return Ok(Some(report));
                }
                Some(report)
            }
            None => None,
        };
        self.swap(&mut tx)
            .await
            .context("swapping the imported tables in")?;
        tx.commit().await.context("committing the import")?;
        // The aggregate tables were written by INSERT: set their hint bits and visibility map now
        // rather than on the first reads.
        sqlx::raw_sql("VACUUM characteristics, product_meta")
            .execute(&self.pool)
            .await?;
        Ok(report)
    }

    /// Replaces the live tables by the staging tables, under the live names.
    async fn swap(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        lock_for_swap(conn).await?;
        let live = table_list(IMPORTED_TABLES);
        let mut sql = format!("DROP TABLE {live};\n");
        for table in IMPORTED_TABLES {
            sql += &format!(
                "ALTER TABLE {} RENAME TO {};\n",
                quote_ident(&staging_name(table)),
                quote_ident(table)
            );
        }
        for index in &self.indexes {
            sql += &match &index.build {
                IndexBuild::Constraint { name, .. } => format!(
                    "ALTER TABLE {} RENAME CONSTRAINT {} TO {};\n",
                    quote_ident(&index.table),
                    quote_ident(&index.temp),
                    quote_ident(name)
                ),
                IndexBuild::Index(_) => format!(
                    "ALTER INDEX {} RENAME TO {};\n",
                    quote_ident(&index.temp),
                    quote_ident(&index.name)
                ),
            };
        }
        for seq in &self.sequences {
            sql += &format!(
                "ALTER SEQUENCE {} RENAME TO {};\n",
                quote_ident(&seq.temp),
                quote_ident(&seq.name)
            );
        }
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    pub async fn close(self) -> anyhow::Result<()> {
        drop(self.tx);
        self.pool.close().await;
        Ok(())
    }
}

/// (table, index, `pg_get_indexdef`, owning constraint, `pg_get_constraintdef`).
type IndexRow = (String, String, String, Option<String>, Option<String>);

/// Every index of the live tables, primary keys first, with what rebuilds it on the staging
/// table.
async fn live_indexes(conn: &mut PgConnection) -> anyhow::Result<Vec<StagedIndex>> {
    let rows: Vec<IndexRow> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, pg_get_indexdef(i.oid), \
                c.conname::text, pg_get_constraintdef(c.oid) \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid \
                                  AND c.contype IN ('p', 'u', 'x') \
         WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) \
           AND t.relname::text = ANY($1::text[]) \
         ORDER BY array_position($1::text[], t.relname::text), c.oid IS NULL, i.relname",
    )
    .bind(IMPORTED_TABLES.map(str::to_owned).to_vec())
    .fetch_all(&mut *conn)
    .await
    .context("reading the index definitions")?;
    rows.into_iter()
        .enumerate()
        .map(|(n, (table, name, indexdef, constraint, definition))| {
            let temp = format!("import_index_{n}");
            let build = match (constraint, definition) {
                (Some(name), Some(definition)) => IndexBuild::Constraint { name, definition },
                _ => IndexBuild::Index(retarget_index(&indexdef, &temp, &staging_name(&table))?),
            };
            Ok(StagedIndex {
                table,
                name,
                temp,
                build,
            })
        })
        .collect()
}

/// `pg_get_indexdef`'s `CREATE [UNIQUE] INDEX name ON table USING …`, for another name and
/// table.
fn retarget_index(indexdef: &str, name: &str, table: &str) -> anyhow::Result<String> {
    let unique = if indexdef.starts_with("CREATE UNIQUE INDEX ") {
        "UNIQUE "
    } else if indexdef.starts_with("CREATE INDEX ") {
        ""
    } else {
        bail!("unexpected index definition {indexdef:?}")
    };
    let Some((_, method_on)) = indexdef.split_once(" USING ") else {
        bail!("unexpected index definition {indexdef:?}")
    };
    Ok(format!(
        "CREATE {unique}INDEX {} ON {} USING {method_on}",
        quote_ident(name),
        quote_ident(table)
    ))
}

/// (column, sequence name) of each identity column of `table`.
async fn identity_sequences(
    conn: &mut PgConnection,
    table: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT a.attname::text, s.relname::text \
         FROM pg_attribute a \
         JOIN pg_class s ON s.oid = pg_get_serial_sequence($1, a.attname::text)::regclass \
         WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
           AND a.attidentity <> '' \
         ORDER BY a.attnum",
    )
    .bind(quote_ident(table))
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("reading the identity sequences of {table}"))
}

/// Gives the staging table the live table's owner, privileges and storage options, which
/// `LIKE` does not copy.
async fn copy_table_settings(
    conn: &mut PgConnection,
    live: &str,
    staging: &str,
) -> anyhow::Result<()> {
    let (owner, mine, options): (String, bool, Option<String>) = sqlx::query_as(
        "SELECT pg_get_userbyid(relowner)::text, pg_get_userbyid(relowner) = current_user, \
                array_to_string(reloptions, ', ') \
         FROM pg_class WHERE oid = $1::regclass",
    )
    .bind(quote_ident(live))
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("reading the settings of {live}"))?;
    // The owner's own privileges are implicit; the rest are granted again.
    let grants: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT a.privilege_type, \
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                a.is_grantable \
         FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a \
         WHERE c.oid = $1::regclass AND NOT (a.grantee = c.relowner AND a.grantor = c.relowner)",
    )
    .bind(quote_ident(live))
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("reading the privileges on {live}"))?;
    let staging = quote_ident(staging);
    let mut sql = String::new();
    if !mine {
        sql += &format!("ALTER TABLE {staging} OWNER TO {};\n", quote_ident(&owner));
    }
    if let Some(options) = options {
        sql += &format!("ALTER TABLE {staging} SET ({options});\n");
    }
    for (privilege, grantee, grantable) in grants {
        let option = if grantable { " WITH GRANT OPTION" } else { "" };
        sql += &format!("GRANT {privilege} ON TABLE {staging} TO {grantee}{option};\n");
    }
    if !sql.is_empty() {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .with_context(|| {
                format!("giving {staging} the owner, privileges and options of {live}")
            })?;
    }
    Ok(())
}

async fn analyze(conn: &mut PgConnection, tables: &[String]) -> anyhow::Result<()> {
    let sql = format!("ANALYZE {}", table_list(tables.iter().map(String::as_str)));
    sqlx::query(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .context("analyzing the imported tables")?;
    Ok(())
}

/// Takes `ACCESS EXCLUSIVE` on the live tables for the swap. A try that cannot have them all
/// within [`SWAP_LOCK_WAIT`] (a reader's transaction still open), or that deadlocks with a reader,
/// gives back what it took and is repeated after [`SWAP_LOCK_PAUSE`]; after [`SWAP_LOCK_TRIES`]
/// the last try waits as long as it takes.
async fn lock_for_swap(conn: &mut PgConnection) -> anyhow::Result<()> {
    let lock = format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        table_list(IMPORTED_TABLES)
    );
    let wait = format!("SET LOCAL lock_timeout = {}", SWAP_LOCK_WAIT.as_millis());
    for attempt in 1..=SWAP_LOCK_TRIES {
        // The savepoint scopes both the try's locks and its lock_timeout.
        sqlx::raw_sql(AssertSqlSafe(format!("SAVEPOINT import_swap; {wait}")))
            .execute(&mut *conn)
            .await?;
        match sqlx::query(AssertSqlSafe(lock.clone()))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {
                sqlx::raw_sql("RELEASE SAVEPOINT import_swap; SET LOCAL lock_timeout TO DEFAULT")
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            Err(e) if is_lock_failure(&e) => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT import_swap; RELEASE SAVEPOINT import_swap")
                    .execute(&mut *conn)
                    .await?;
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(
                        attempt,
                        error = %e,
                        "the review tables are in use; retrying the swap"
                    );
                }
                tokio::time::sleep(SWAP_LOCK_PAUSE).await;
            }
            Err(e) => return Err(e).context("locking the review tables for the swap"),
        }
    }
    sqlx::query(AssertSqlSafe(lock))
        .execute(&mut *conn)
        .await
        .context("locking the review tables for the swap")?;
    Ok(())
}

/// A lock not granted in time (`lock_not_available`) or a deadlock (`deadlock_detected`).
fn is_lock_failure(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "55P03" || code == "40P01")
}

/// The characteristics with their ratings summed, written once in id order.
const CHARACTERISTIC_AGGREGATES_SQL: &str = "INSERT INTO import_characteristics \
    (id, product_id, name, rating_sum, rating_count) \
    SELECT c.id, c.product_id, c.name, COALESCE(a.s, 0), COALESCE(a.n, 0) \
    FROM import_characteristic_rows AS c LEFT JOIN \
    (SELECT characteristic_id, SUM(value) AS s, COUNT(*) AS n FROM import_characteristic_reviews GROUP BY characteristic_id) AS a \
    ON a.characteristic_id = c.id \
    ORDER BY c.id";

const PRODUCT_META_SQL: &str = "INSERT INTO import_product_meta \
    (product_id, rating_1, rating_2, rating_3, rating_4, rating_5, recommend_false, recommend_true) \
    SELECT product_id, \
    COUNT(*) FILTER (WHERE rating = 1), COUNT(*) FILTER (WHERE rating = 2), COUNT(*) FILTER (WHERE rating = 3), \
    COUNT(*) FILTER (WHERE rating = 4), COUNT(*) FILTER (WHERE rating = 5), \
    COUNT(*) FILTER (WHERE NOT recommend), COUNT(*) FILTER (WHERE recommend) \
    FROM import_reviews GROUP BY product_id ORDER BY product_id";

/// Checksums of the staging tables and the aggregate totals, read in the import's transaction.
async fn staged_checksums(conn: &mut PgConnection) -> anyhow::Result<(Checksums, AggregateTotals)> {
    let mut sums = Checksums::default();
    sum_table::<ReviewRow>(conn, &mut sums).await?;
    sum_table::<PhotoRow>(conn, &mut sums).await?;
    sum_table::<CharacteristicRow>(conn, &mut sums).await?;
    sum_table::<CharacteristicReviewRow>(conn, &mut sums).await?;
    let sql = aggregate_totals_sql(|t| quote_ident(&staging_name(t)));
    let row = sqlx::query(AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await
        .context("reading the aggregate totals of the imported tables")?;
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

/// Checksums one staging table, streamed.
async fn sum_table<T: CopyRow>(
    conn: &mut PgConnection,
    sums: &mut Checksums,
) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT {} FROM {}",
        T::COLUMNS.join(", "),
        quote_ident(&staging_name(T::TABLE))
    );
    let sum = sums.table_mut(T::TABLE);
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
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

/// One row of `COPY` text: fields separated by tabs, ended by a newline.
struct CopyLine<'a> {
    out: &'a mut Vec<u8>,
    started: bool,
}

impl<'a> CopyLine<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        CopyLine {
            out,
            started: false,
        }
    }

    /// The buffer, after the separator a next field needs.
    fn field(&mut self) -> &mut Vec<u8> {
        if self.started {
            self.out.push(b'\t');
        }
        self.started = true;
        self.out
    }

    fn int(mut self, n: i64) -> Self {
        put_int(self.field(), n);
        self
    }

    fn bool(mut self, b: bool) -> Self {
        put_bool(self.field(), b);
        self
    }

    fn text(mut self, s: &str) -> Self {
        put_text(self.field(), s);
        self
    }

    fn opt_text(mut self, s: Option<&str>) -> Self {
        put_opt_text(self.field(), s);
        self
    }

    fn end(self) {
        self.out.push(b'\n');
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
        CopyLine::new(out)
            .int(self.id)
            .int(self.product_id)
            .int(self.rating)
            .int(self.date_ms)
            .text(&self.summary)
            .text(&self.body)
            .bool(self.recommend)
            .bool(self.reported)
            .text(&self.reviewer_name)
            .text(&self.reviewer_email)
            .opt_text(self.response.as_deref())
            .int(self.helpfulness)
            .end();
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
        CopyLine::new(out)
            .int(self.id)
            .int(self.review_id)
            .text(&self.url)
            .end();
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
        CopyLine::new(out)
            .int(self.id)
            .int(self.product_id)
            .text(self.name)
            .end();
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
        CopyLine::new(out)
            .int(self.id)
            .int(self.characteristic_id)
            .int(self.review_id)
            .int(self.value)
            .end();
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
    fn an_index_definition_is_retargeted_to_the_staging_table_under_its_temporary_name() {
        let def = "CREATE INDEX reviews_by_newest ON public.reviews USING btree (product_id, date_ms DESC, id DESC) WHERE (NOT reported)";
        assert_eq!(
            retarget_index(def, "import_index_1", "import_reviews").unwrap(),
            "CREATE INDEX \"import_index_1\" ON \"import_reviews\" USING btree (product_id, date_ms DESC, id DESC) WHERE (NOT reported)"
        );
        let def = "CREATE UNIQUE INDEX u ON public.t USING btree (a)";
        assert_eq!(
            retarget_index(def, "x", "import_t").unwrap(),
            "CREATE UNIQUE INDEX \"x\" ON \"import_t\" USING btree (a)"
        );
        assert!(retarget_index("ALTER TABLE t", "x", "y").is_err());
    }

    #[test]
    fn files_are_copied_into_staging_tables_and_the_aggregates_read_them() {
        assert_eq!(load_table("reviews"), "import_reviews");
        assert_eq!(load_table("characteristics"), CHARACTERISTIC_ROWS);
        for table in ["characteristics", "characteristic_reviews"] {
            assert!(CHARACTERISTIC_AGGREGATES_SQL.contains(&staging_name(table)));
        }
        assert!(CHARACTERISTIC_AGGREGATES_SQL.contains(CHARACTERISTIC_ROWS));
        for table in ["product_meta", "reviews"] {
            assert!(PRODUCT_META_SQL.contains(&staging_name(table)));
        }
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
