//! Spawning the API in-process on port 0 against a fresh database, and the fixture every
//! conformance test starts from (written by the project, so it needs no outside data).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use reviews_api::config::ApiConfig;
use reviews_api::server::{RunningApi, start};

/// Which database a test runs on.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// The admin URL of a PostgreSQL server; each test creates its own database there.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL when the suite is given a server, else `None` (and a note on stderr).
    pub fn postgres() -> Option<Backend> {
        match std::env::var("REVIEWS_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ => {
                eprintln!(
                    "skipped on PostgreSQL: set REVIEWS_TEST_DATABASE_URL=postgres://… to run it"
                );
                None
            }
        }
    }
}

/// A running API with its own database, and a client for it.
pub struct TestApp {
    pub base: String,
    pub metrics_base: String,
    pub client: reqwest::Client,
    pub db_url: String,
    pub backend: Backend,
    running: Option<RunningApi>,
    pg_db: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A database URL of a fresh, empty database on the backend.
pub async fn fresh_database(
    backend: &Backend,
    dir: &tempfile::TempDir,
) -> (String, Option<(String, String)>) {
    match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("reviews.db").display()),
            None,
        ),
        Backend::Postgres(admin) => {
            let name = format!(
                "reviews_test_{}_{}_{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed),
                rand_suffix()
            );
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
                .await
                .expect("connect to REVIEWS_TEST_DATABASE_URL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let mut url = url::Url::parse(admin).expect("REVIEWS_TEST_DATABASE_URL is a URL");
            url.set_path(&name);
            (url.to_string(), Some((admin.clone(), name)))
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// Drops a test database (forcibly: a stopped server may leave idle connections behind).
pub async fn drop_database(admin: &str, name: &str) {
    if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(admin).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

impl TestApp {
    /// Starts the API on an empty database.
    pub async fn empty(backend: Backend) -> TestApp {
        Self::with_config(backend, |_| {}).await
    }

    /// Starts the API on a database holding the fixture.
    pub async fn with_fixture(backend: Backend) -> TestApp {
        let app = Self::empty(backend).await;
        app.exec(FIXTURE_SQL).await;
        if matches!(app.backend, Backend::Postgres(_)) {
            app.exec(FIXTURE_SQL_PG_SEQUENCES).await;
        }
        app
    }

    pub async fn with_config(backend: Backend, tweak: impl FnOnce(&mut ApiConfig)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db_url, pg_db) = fresh_database(&backend, &dir).await;
        let mut config = ApiConfig::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
        config.database.url = db_url.clone();
        config.database.max_connections = 4;
        tweak(&mut config);
        let running = start(&config).await.expect("API starts");
        TestApp {
            base: format!("http://{}", running.addr),
            metrics_base: format!("http://{}", running.metrics_addr),
            client: reqwest::Client::new(),
            db_url,
            backend,
            running: Some(running),
            pg_db,
            _dir: dir,
        }
    }

    /// The public listener's address, for raw TCP clients.
    pub fn addr(&self) -> SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("the base URL is an address")
    }

    /// The running server, to stop it by hand (`teardown` then only drops the database).
    pub fn take_server(&mut self) -> RunningApi {
        self.running.take().expect("the server is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// GET, expecting 200, returning the body text.
    pub async fn get_text(&self, path: &str) -> String {
        let res = self.get(path).await;
        assert_eq!(res.status(), 200, "GET {path}");
        res.text().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.get_text(path).await).unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn put(&self, path: &str) -> reqwest::Response {
        self.client.put(self.url(path)).send().await.expect("PUT")
    }

    /// Runs SQL directly on the test's database (the fixture, fault injection).
    pub async fn exec(&self, sql: &str) {
        if self.db_url.starts_with("postgres") {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&self.db_url)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await
                .unwrap();
        } else {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.db_url)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }

    /// Counts rows of a table, straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        if self.db_url.starts_with("postgres") {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&self.db_url)
                .await
                .unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut c)
                .await
                .unwrap()
        } else {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.db_url)
                .await
                .unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }

    /// Rows of integers (every column cast to BIGINT by the SQL), straight from the database.
    pub async fn i64_rows(&self, sql: &str) -> Vec<Vec<i64>> {
        use sqlx::Row;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.db_url.starts_with("postgres") {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&self.db_url)
                .await
                .unwrap();
            let rows = sqlx::query(sql).fetch_all(&mut c).await.unwrap();
            rows.iter()
                .map(|r| (0..r.len()).map(|i| r.try_get(i).unwrap()).collect())
                .collect()
        } else {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.db_url)
                .await
                .unwrap();
            let rows = sqlx::query(sql).fetch_all(&mut c).await.unwrap();
            rows.iter()
                .map(|r| (0..r.len()).map(|i| r.try_get(i).unwrap()).collect())
                .collect()
        }
    }

    /// Recomputes every maintained aggregate from the rows and asserts they agree: per product
    /// the rating and recommend counts (`product_meta`), per characteristic the sum and count of
    /// its ratings (`characteristics.rating_sum/rating_count`).
    pub async fn assert_aggregates_match_rows(&self) {
        let from_rows = self
            .i64_rows(
                "SELECT product_id, \
                   CAST(SUM(CASE WHEN rating = 1 THEN 1 ELSE 0 END) AS BIGINT), \
                   CAST(SUM(CASE WHEN rating = 2 THEN 1 ELSE 0 END) AS BIGINT), \
                   CAST(SUM(CASE WHEN rating = 3 THEN 1 ELSE 0 END) AS BIGINT), \
                   CAST(SUM(CASE WHEN rating = 4 THEN 1 ELSE 0 END) AS BIGINT), \
                   CAST(SUM(CASE WHEN rating = 5 THEN 1 ELSE 0 END) AS BIGINT), \
                   CAST(SUM(CASE WHEN recommend THEN 0 ELSE 1 END) AS BIGINT), \
                   CAST(SUM(CASE WHEN recommend THEN 1 ELSE 0 END) AS BIGINT) \
                 FROM reviews GROUP BY product_id ORDER BY product_id",
            )
            .await;
        let maintained = self
            .i64_rows(
                "SELECT product_id, rating_1, rating_2, rating_3, rating_4, rating_5, \
                   recommend_false, recommend_true \
                 FROM product_meta ORDER BY product_id",
            )
            .await;
        assert_eq!(maintained, from_rows, "product_meta against the reviews");
        let characteristics = self
            .i64_rows(
                "SELECT c.id, c.rating_sum, c.rating_count, \
                   CAST(COALESCE(SUM(cr.value), 0) AS BIGINT), CAST(COUNT(cr.id) AS BIGINT) \
                 FROM characteristics c LEFT JOIN characteristic_reviews cr ON cr.characteristic_id = c.id \
                 GROUP BY c.id, c.rating_sum, c.rating_count ORDER BY c.id",
            )
            .await;
        for row in &characteristics {
            assert_eq!(
                (row[1], row[2]),
                (row[3], row[4]),
                "characteristic {}: maintained (sum, count) against its ratings",
                row[0]
            );
        }
    }

    /// Stops the server and drops a PostgreSQL test database.
    pub async fn teardown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        if let Some((admin, name)) = self.pg_db.take() {
            drop_database(&admin, &name).await;
        }
    }
}

/// The folder of the real data sample, if this checkout has it beside it.
pub fn sample_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/atelier-sample");
    if dir.join("reviews.csv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: the real data sample is not at {} (it sits beside the repository in CI)",
            dir.display()
        );
        None
    }
}

/// A product-10 world written for these tests (texts our own), chosen so every order differs:
/// - 1001 ★5 Jan 2021 helpful 3, two photos inserted out of id order, recommend
/// - 1002 ★3 Feb 2021 helpful 3, has a response, not recommended
/// - 1003 ★4 Dec 2020 helpful 10, recommend
/// - 1004 ★1 reported (hidden from lists, counted in meta), helpful 50, not recommended
/// - 1005 ★2 Feb 2021 (same instant as 1002) helpful 0, recommend
///
/// Characteristics: 101 Fit rated 5,3,4,1 (13/4), 102 Comfort rated 4,4,3 (11/3);
/// product 11 has characteristic 111 Quality that nobody rated; product 12 has nothing.
/// Aggregates are built by SQL from the rows, as the importer does.
pub const FIXTURE_SQL: &str = r#"
INSERT INTO reviews (id, product_id, rating, date_ms, summary, body, recommend, reported, reviewer_name, reviewer_email, response, helpfulness) VALUES
 (1001, 10, 5, 1609459200000, 'Sturdy and bright', 'I have worn these every day for a month and they still look new, which surprised me.', true, false, 'anna', 'anna@example.com', NULL, 3),
 (1002, 10, 3, 1612137600123, 'Fine, "runs small"', 'Good material, but order a size up; mine pinched at the toes after an hour or two.', false, false, 'ben', 'ben@example.com', 'Thanks, we''ll update the size chart!', 3),
 (1003, 10, 4, 1606780800000, 'Comfortable', 'Comfortable from the first wear, no breaking in needed, and the colour matches the photos.', true, false, 'cleo', 'cleo@example.com', NULL, 10),
 (1004, 10, 1, 1614556800000, 'spam spam', 'Buy followers at my site, the best deals, click now, really the best deals anywhere.', false, true, 'spammer', 'spam@example.com', NULL, 50),
 (1005, 10, 2, 1612137600123, 'Meh', 'They are okay I guess, nothing special, the stitching came loose after two weeks.', true, false, 'dee', 'dee@example.com', NULL, 0);
INSERT INTO reviews_photos (id, review_id, url) VALUES
 (9002, 1001, 'https://images.example.com/b.jpg?w=975&q=80'),
 (9001, 1001, 'https://images.example.com/a.jpg');
INSERT INTO characteristics (id, product_id, name) VALUES
 (101, 10, 'Fit'), (102, 10, 'Comfort'), (111, 11, 'Quality');
INSERT INTO characteristic_reviews (id, characteristic_id, review_id, value) VALUES
 (1, 101, 1001, 5), (2, 101, 1002, 3), (3, 101, 1003, 4), (4, 101, 1004, 1),
 (5, 102, 1001, 4), (6, 102, 1002, 4), (7, 102, 1003, 3);
UPDATE characteristics SET
 rating_sum = (SELECT COALESCE(SUM(value), 0) FROM characteristic_reviews cr WHERE cr.characteristic_id = characteristics.id),
 rating_count = (SELECT COUNT(*) FROM characteristic_reviews cr WHERE cr.characteristic_id = characteristics.id);
INSERT INTO product_meta (product_id, rating_1, rating_2, rating_3, rating_4, rating_5, recommend_false, recommend_true)
 SELECT product_id,
   SUM(CASE WHEN rating = 1 THEN 1 ELSE 0 END), SUM(CASE WHEN rating = 2 THEN 1 ELSE 0 END),
   SUM(CASE WHEN rating = 3 THEN 1 ELSE 0 END), SUM(CASE WHEN rating = 4 THEN 1 ELSE 0 END),
   SUM(CASE WHEN rating = 5 THEN 1 ELSE 0 END),
   SUM(CASE WHEN recommend THEN 0 ELSE 1 END), SUM(CASE WHEN recommend THEN 1 ELSE 0 END)
 FROM reviews GROUP BY product_id;
"#;

/// Sequences must continue after explicit ids on PostgreSQL (the importer does the same).
pub const FIXTURE_SQL_PG_SEQUENCES: &str = "
SELECT setval(pg_get_serial_sequence('reviews', 'id'), (SELECT MAX(id) FROM reviews));
SELECT setval(pg_get_serial_sequence('reviews_photos', 'id'), (SELECT MAX(id) FROM reviews_photos));
SELECT setval(pg_get_serial_sequence('characteristic_reviews', 'id'), (SELECT MAX(id) FROM characteristic_reviews));
";

/// A review body the contract accepts, for product 10.
pub fn valid_review() -> serde_json::Value {
    serde_json::json!({
        "product_id": 10,
        "rating": 4,
        "summary": "Solid pair",
        "body": "Held up well on a week of hiking; the laces are the only weak spot so far.",
        "recommend": true,
        "name": "erin",
        "email": "erin@example.com",
        "photos": ["https://images.example.com/erin1.jpg", "https://images.example.com/erin2.jpg"],
        "characteristics": {"101": 5, "102": 2}
    })
}

/// Runs each named case (an `async fn(Backend)`) as a test on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = $crate::helpers::Backend::postgres() {
                        super::$case(b).await
                    }
                }
            )*
        }
    };
}
