//! Database trouble: the API answers 503 with `Retry-After` quickly instead of hanging, keeps
//! answering `/healthz`, and recovers by itself once the database is back.

use std::time::{Duration, Instant};

use crate::helpers::{Backend, TestApp, valid_review};

/// Far above the configured bounds (acquire 1 s, statement 0.5 s) and far below sqlx's 30 s
/// default: proves the wait is bounded, not how fast this machine is.
const NEVER_A_HANG: Duration = Duration::from_secs(8);

fn assert_503(res: &reqwest::Response, what: &str) {
    assert_eq!(res.status(), 503, "{what}");
    assert_eq!(res.headers()["retry-after"], "1", "{what}");
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_gives_503_quickly_and_recovers() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let app = TestApp::with_config(backend, |c| {
        c.database.statement_timeout = Duration::from_millis(500).into();
    })
    .await;
    app.exec(crate::helpers::FIXTURE_SQL).await;
    assert_eq!(app.get("/reviews?product_id=10").await.status(), 200);

    let name = url::Url::parse(&app.db_url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let Backend::Postgres(admin) = &app.backend else {
        unreachable!()
    };
    let mut adm = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .unwrap();
    let cut = format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid();"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(cut))
        .execute(&mut adm)
        .await
        .unwrap();

    for path in [
        "/reviews?product_id=10",
        "/reviews/meta?product_id=10",
        "/readyz",
    ] {
        let t = Instant::now();
        let res = app.get(path).await;
        assert!(t.elapsed() < NEVER_A_HANG, "{path} took {:?}", t.elapsed());
        assert_503(&res, path);
    }
    let t = Instant::now();
    let res = app.post_json("/reviews", &valid_review()).await;
    assert!(t.elapsed() < NEVER_A_HANG);
    assert_503(&res, "POST");
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "liveness never touches the database"
    );

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
    )))
    .execute(&mut adm)
    .await
    .unwrap();
    assert_eq!(
        app.get("/reviews?product_id=10").await.status(),
        200,
        "recovers without a restart"
    );
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_gives_503_on_writes_quickly_while_reads_go_on() {
    let app = TestApp::with_config(Backend::Sqlite, |c| {
        c.database.statement_timeout = Duration::from_millis(500).into();
    })
    .await;
    app.exec(crate::helpers::FIXTURE_SQL).await;

    // Another process (here, another connection) holds the write lock, as a second API
    // process or a running import would.
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect(&app.db_url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    let t = Instant::now();
    let review = valid_review();
    let posts = (0..4).map(|_| app.post_json("/reviews", &review));
    let results = futures::future::join_all(posts).await;
    assert!(t.elapsed() < NEVER_A_HANG, "took {:?}", t.elapsed());
    for res in &results {
        assert_503(res, "POST while the file is locked");
    }
    let res = app.put("/reviews/1001/helpful").await;
    assert_503(&res, "PUT while the file is locked");
    // WAL: readers are not blocked by a writer.
    assert_eq!(app.get("/reviews?product_id=10").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);

    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(
        app.post_json("/reviews", &valid_review()).await.status(),
        201
    );
    assert_eq!(
        app.count("reviews").await,
        6,
        "exactly the one accepted review was written"
    );
    app.teardown().await;
}
