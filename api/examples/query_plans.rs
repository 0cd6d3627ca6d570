//! The SQL time of the read routes on a loaded database: for the product with the most reviews
//! and for one with none, each statement `GET /reviews` and `GET /reviews/meta` run (the exact
//! text the stores execute), with its plan and its timing.
//!
//! - PostgreSQL: `EXPLAIN (ANALYZE, BUFFERS)`, the plan of the last run and the median of the
//!   server-side `Execution Time` over `--runs` runs, plus the median round trip through sqlx.
//! - SQLite has no `EXPLAIN ANALYZE`: `EXPLAIN QUERY PLAN`, and the median round trip through
//!   sqlx (which adds sqlx's hop to its SQLite worker thread, tens of microseconds).
//!
//! ```sh
//! cargo run --release -p reviews-api --example query_plans -- sqlite://target/bench-api/bench-1000011.db
//! cargo run --release -p reviews-api --example query_plans -- postgres://postgres@127.0.0.1/reviews_bench_1000011
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reviews_api::store::statements::{self, ReadStatement, StatementParams};
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Row};

/// The first review page, as the API asks for it by default.
const PAGE: i64 = 5;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: query_plans DATABASE_URL [RUNS]")?;
    let runs: usize = args.next().map_or(Ok(200), |r| r.parse())?;
    sqlx::any::install_default_drivers();
    let postgres = url.starts_with("postgres");
    let url = if postgres || url.starts_with("sqlite:") {
        url
    } else {
        format!("sqlite://{url}")
    };
    let mut conn = AnyConnection::connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;

    let busiest: (i64, i64) = sqlx::query_as(
        "SELECT product_id, rating_1 + rating_2 + rating_3 + rating_4 + rating_5 AS n \
         FROM product_meta ORDER BY n DESC, product_id LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .context("reading product_meta (is the database imported?)")?;
    let mut empty = 1i64;
    let exists = if postgres {
        "SELECT 1 FROM product_meta WHERE product_id = $1"
    } else {
        "SELECT 1 FROM product_meta WHERE product_id = ?1"
    };
    while sqlx::query(exists)
        .bind(empty)
        .fetch_optional(&mut conn)
        .await?
        .is_some()
    {
        empty += 1;
    }
    let stmts = if postgres {
        statements::postgres()
    } else {
        statements::sqlite()
    };
    println!(
        "{} — {runs} runs per statement, medians",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    for (what, product) in [
        (
            format!("product {} ({} reviews)", busiest.0, busiest.1),
            busiest.0,
        ),
        (format!("product {empty} (no reviews)"), empty),
    ] {
        println!("\n## {what}");
        let ids: Vec<i64> = sqlx::query(AssertSqlSafe(stmts[0].sql))
            .bind(product)
            .bind(PAGE)
            .bind(0i64)
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        for s in &stmts {
            measure(&mut conn, postgres, s, product, &ids, runs).await?;
        }
    }
    Ok(())
}

/// Binds a statement's parameters for `product` (and its first page's review ids).
fn bind<'q>(
    s: &ReadStatement,
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    product: i64,
    ids: &[i64],
    postgres: bool,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    match s.params {
        StatementParams::ProductPage => q.bind(product).bind(PAGE).bind(0i64),
        StatementParams::Product => q.bind(product),
        // The Any driver has no arrays: PostgreSQL gets the ids as an array literal (cast by
        // the `= ANY($1)` context), SQLite as the JSON array its statement expects.
        StatementParams::ReviewIds if postgres => q.bind(format!(
            "{{{}}}",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        )),
        StatementParams::ReviewIds => q.bind(serde_json::to_string(ids).unwrap_or_default()),
        StatementParams::ReviewId => q.bind(ids.first().copied().unwrap_or(0)),
    }
}

async fn measure(
    conn: &mut AnyConnection,
    postgres: bool,
    s: &ReadStatement,
    product: i64,
    ids: &[i64],
    runs: usize,
) -> anyhow::Result<()> {
    let sql = if postgres && s.params == StatementParams::ReviewIds {
        // Typed for the Any driver's text parameter; the plan is the same as for a bigint[].
        s.sql.replace("ANY($1)", "ANY($1::bigint[])")
    } else {
        s.sql.to_owned()
    };
    let explain = if postgres {
        format!("EXPLAIN (ANALYZE, BUFFERS) {sql}")
    } else {
        format!("EXPLAIN QUERY PLAN {sql}")
    };
    let mut round_trips = Vec::with_capacity(runs);
    let mut executions = Vec::with_capacity(runs);
    let mut plan = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let rows = bind(
            s,
            sqlx::query(AssertSqlSafe(sql.clone())),
            product,
            ids,
            postgres,
        )
        .fetch_all(&mut *conn)
        .await
        .with_context(|| format!("running {}", s.name))?;
        round_trips.push(started.elapsed());
        std::hint::black_box(rows.len());
        if postgres {
            plan = explain_lines(conn, &explain, s, product, ids, postgres).await?;
            let exec = plan
                .iter()
                .find_map(|l| l.strip_prefix("Execution Time: "))
                .and_then(|t| t.trim_end_matches(" ms").parse::<f64>().ok())
                .context("no Execution Time in EXPLAIN ANALYZE")?;
            executions.push(Duration::from_secs_f64(exec / 1000.0));
        }
    }
    if !postgres {
        plan = explain_lines(conn, &explain, s, product, ids, postgres).await?;
    }
    let sql_time = if postgres {
        format!("SQL {:.3} ms, ", ms(median(&mut executions)))
    } else {
        String::new()
    };
    println!(
        "- {}: {sql_time}round trip {:.3} ms",
        s.name,
        ms(median(&mut round_trips))
    );
    for line in plan {
        println!("      {line}");
    }
    Ok(())
}

async fn explain_lines(
    conn: &mut AnyConnection,
    explain: &str,
    s: &ReadStatement,
    product: i64,
    ids: &[i64],
    postgres: bool,
) -> anyhow::Result<Vec<String>> {
    let rows = bind(
        s,
        sqlx::query(AssertSqlSafe(explain.to_owned())),
        product,
        ids,
        postgres,
    )
    .fetch_all(&mut *conn)
    .await?;
    // PostgreSQL: one text column; SQLite: (id, parent, notused, detail).
    let col = if postgres { 0 } else { 3 };
    let lines = rows
        .iter()
        .map(|r| r.try_get::<String, _>(col))
        .collect::<Result<Vec<_>, _>>()?;
    if lines.is_empty() {
        bail!("no plan for {}", s.name);
    }
    Ok(lines)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
