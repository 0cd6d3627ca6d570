//! The importer end to end, on a real SQLite file and — when `REVIEWS_TEST_DATABASE_URL` is set
//! — on a fresh PostgreSQL database per test: the real data sample, hand-made dirty files, and
//! repeated imports.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use reviews_api::import::{
    self, ImportFailure, ImportOptions, ImportSummary, RejectClass, RejectLimit, read_rejects,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, SqlitePool};

/// The real data sample, when this checkout sits beside it.
fn sample_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/atelier-sample");
    dir.join("reviews.csv").is_file().then_some(dir)
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// A database for one test: a SQLite file in a temp dir, or a PostgreSQL database created for
/// the test and dropped when this value drops (even when the test panics).
struct TestDb {
    url: String,
    pg_admin: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("reviews.db").display());
        TestDb {
            url,
            pg_admin: None,
            _dir: dir,
        }
    }

    /// None (with a printed reason) when no PostgreSQL is configured.
    async fn postgres(test: &str) -> Option<Self> {
        let Ok(admin_url) = std::env::var("REVIEWS_TEST_DATABASE_URL") else {
            skip(test, "REVIEWS_TEST_DATABASE_URL is not set");
            return None;
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "reviews_import_{}_{}_{}",
            std::process::id(),
            nanos,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to REVIEWS_TEST_DATABASE_URL");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Some(TestDb {
            url: url.to_string(),
            pg_admin: Some((admin_url, name)),
            _dir: tempfile::tempdir().unwrap(),
        })
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Options with verify on and any number of rejects allowed: most tests here are about
    /// which rows are loaded; the exit-code tests set their own limit.
    fn options(&self, data: &Path) -> ImportOptions {
        let mut opts = ImportOptions::new(&self.url, data);
        opts.rejects = self.dir().join("rejects.csv");
        opts.verify = true;
        opts.max_rejects = RejectLimit::ANY;
        opts
    }

    async fn connect(&self) -> Db {
        if self.pg_admin.is_some() {
            Db::Pg(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&self.url)
                    .await
                    .unwrap(),
            )
        } else {
            let path = self.url.trim_start_matches("sqlite://");
            Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect(&format!("sqlite://{path}"))
                    .await
                    .unwrap(),
            )
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.pg_admin.take() else {
            return;
        };
        // Drop runs inside the test's runtime, so clean up from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut admin).await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

enum Db {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// Runs one read query on whichever backend (SQL written to be valid on both).
macro_rules! fetch {
    ($db:expr, $ty:ty, $sql:expr) => {
        match $db {
            Db::Sqlite(p) => sqlx::query_as::<_, $ty>(AssertSqlSafe($sql))
                .fetch_all(p)
                .await
                .unwrap(),
            Db::Pg(p) => sqlx::query_as::<_, $ty>(AssertSqlSafe($sql))
                .fetch_all(p)
                .await
                .unwrap(),
        }
    };
}

impl Db {
    async fn count(&self, table: &str) -> i64 {
        fetch!(self, (i64,), format!("SELECT COUNT(*) FROM {table}"))[0].0
    }

    /// [rating_1..rating_5, recommend_false, recommend_true] of a product, if it has a row.
    async fn meta(&self, product: i64) -> Option<[i64; 7]> {
        let rows = fetch!(
            self,
            (i64, i64, i64, i64, i64, i64, i64),
            format!(
                "SELECT rating_1, rating_2, rating_3, rating_4, rating_5, recommend_false, recommend_true \
                 FROM product_meta WHERE product_id = {product}"
            )
        );
        rows.first().map(|r| [r.0, r.1, r.2, r.3, r.4, r.5, r.6])
    }

    /// (id, name, rating_sum, rating_count) of a product's characteristics, by id.
    async fn characteristics(&self, product: i64) -> Vec<(i64, String, i64, i64)> {
        fetch!(
            self,
            (i64, String, i64, i64),
            format!(
                "SELECT id, name, rating_sum, rating_count FROM characteristics WHERE product_id = {product} ORDER BY id"
            )
        )
    }

    async fn review_texts(&self, id: i64) -> (String, Option<String>) {
        let rows = fetch!(
            self,
            (String, Option<String>),
            format!("SELECT summary, response FROM reviews WHERE id = {id}")
        );
        rows.into_iter().next().expect("review present")
    }

    /// Inserts a review without an id, as the API does, and returns the id it got.
    async fn insert_review(&self) -> i64 {
        let sql = "INSERT INTO reviews (product_id, rating, date_ms, summary, body, recommend, reported, \
                   reviewer_name, reviewer_email, helpfulness) \
                   VALUES (1, 5, 0, 's', 'b', TRUE, FALSE, 'n', 'e', 0) RETURNING id"
            .to_owned();
        fetch!(self, (i64,), sql)[0].0
    }

    async fn close(self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Pg(p) => p.close().await,
        }
    }
}

fn counts(summary: &ImportSummary, file: &str) -> (u64, u64, u64) {
    let f = summary
        .file(file)
        .unwrap_or_else(|| panic!("{file} in the summary"));
    assert_eq!(
        f.read,
        f.loaded + f.rejected,
        "{file}: every row read is loaded or rejected"
    );
    (f.read, f.loaded, f.rejected)
}

// ---------------------------------------------------------------------------------------------
// The real sample

async fn sample_loads_as_the_spec_says(db: TestDb, data: &Path) {
    let summary = import::import(&db.options(data)).await.unwrap();
    assert_eq!(counts(&summary, "reviews.csv"), (19, 19, 0));
    assert_eq!(counts(&summary, "reviews_photos.csv"), (19, 12, 7));
    assert_eq!(counts(&summary, "characteristics.csv"), (20, 20, 0));
    assert_eq!(counts(&summary, "characteristic_reviews.csv"), (19, 19, 0));
    let verify = summary.verify.as_ref().unwrap();
    assert!(verify.is_ok(), "{verify}");

    // Photos 13–19 point to reviews 20–32, which are not in the sample (lines 14–20).
    let rejects = read_rejects(&db.dir().join("rejects.csv")).unwrap();
    let got: Vec<_> = rejects
        .iter()
        .map(|r| (r.file.as_str(), r.line, r.class))
        .collect();
    let want: Vec<_> = (14..=20)
        .map(|line| ("reviews_photos.csv", line, RejectClass::Orphan))
        .collect();
    assert_eq!(got, want);

    let conn = db.connect().await;
    assert_eq!(conn.count("reviews").await, 19);
    assert_eq!(conn.count("reviews_photos").await, 12);
    assert_eq!(conn.count("characteristics").await, 20);
    assert_eq!(conn.count("characteristic_reviews").await, 19);
    // GET /reviews/meta?product_id=1: ratings {"4":"1","5":"1"}, recommended {"false":"1","true":"1"}.
    assert_eq!(conn.meta(1).await, Some([0, 0, 0, 1, 1, 1, 1]));
    // Fit 4, Length 3.5 (7 / 2), Comfort 5, Quality 4.
    assert_eq!(
        conn.characteristics(1).await,
        vec![
            (1, "Fit".to_owned(), 8, 2),
            (2, "Length".to_owned(), 7, 2),
            (3, "Comfort".to_owned(), 10, 2),
            (4, "Quality".to_owned(), 8, 2)
        ]
    );
    // Product 2: ratings {"2":"1","3":"1","4":"2","5":"1"}, recommended false 2 / true 3, Quality 4.2.
    assert_eq!(conn.meta(2).await, Some([0, 1, 1, 2, 1, 2, 3]));
    assert_eq!(
        conn.characteristics(2).await,
        vec![(5, "Quality".to_owned(), 21, 5)]
    );
    // Product 3: no reviews, four characteristics nobody rated.
    assert_eq!(conn.meta(3).await, None);
    assert!(conn.characteristics(3).await.iter().all(|c| c.3 == 0));
    // Product 7 counts its reported review 14 too.
    assert_eq!(conn.meta(7).await, Some([1, 0, 0, 0, 1, 1, 1]));
    assert_eq!(conn.review_texts(5).await.1, None);
    assert_eq!(
        conn.review_texts(3).await.1.as_deref(),
        Some("Glad you're enjoying the product!")
    );
    // New reviews continue after the highest imported id.
    assert_eq!(conn.insert_review().await, 20);
    conn.close().await;
}

#[tokio::test]
async fn the_sample_loads_as_the_spec_says_on_sqlite() {
    let Some(data) = sample_dir() else {
        return skip(
            "the_sample_loads_as_the_spec_says_on_sqlite",
            "../shared/data/atelier-sample is absent",
        );
    };
    sample_loads_as_the_spec_says(TestDb::sqlite(), &data).await;
}

#[tokio::test]
async fn the_sample_loads_as_the_spec_says_on_postgres() {
    let test = "the_sample_loads_as_the_spec_says_on_postgres";
    let Some(data) = sample_dir() else {
        return skip(test, "../shared/data/atelier-sample is absent");
    };
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    sample_loads_as_the_spec_says(db, &data).await;
}

// ---------------------------------------------------------------------------------------------
// Hand-made dirty files

const DIRTY_REVIEWS: &[u8] = b"id,product_id,rating,date,summary,body,recommend,reported,reviewer_name,reviewer_email,response,helpfulness
1,1,5,1596080481467,\"ok one\",\"body one\",true,false,\"a\",\"a@x.com\",null,0
2,1,4,1596080481467,\"too few fields\",\"x\",true,false,\"a\",\"a@x.com\",null
3,1,9,1596080481467,\"rating nine\",\"x\",true,false,\"a\",\"a@x.com\",null,0
4,1,3,yesterday,\"bad date\",\"x\",true,false,\"a\",\"a@x.com\",null,0
5,1,3,1596080481467,\"caf\xE9\",\"x\",true,false,\"a\",\"a@x.com\",null,0
1,2,3,1596080481467,\"duplicate of 1\",\"x\",true,false,\"a\",\"a@x.com\",null,0
6,2,2,1596080481467,\"multi
line \"\"quoted\"\", text\",\"b\",false,true,\"n\",\"e\",\"null\",3
7,2,5,1596080481467,\"five\",\"b\",true,false,\"n\",\"e\",\"Thanks!\",1\r
8,2,5,1596080481467,\"never closed,true,false,n,e,null,1
";

const DIRTY_CHARACTERISTICS: &[u8] = b"id,product_id,name
1,1,\"Fit\"
2,2,\"quality\"
3,2,\"Colour\"
";

const DIRTY_PHOTOS: &[u8] = b"id,review_id,url
1,1,\"http://p/1\"
2,99,\"http://p/2\"
3,3,\"http://p/3\"
1,6,\"http://p/duplicate\"
";

const DIRTY_RATINGS: &[u8] = b"id,characteristic_id,review_id,value
1,1,1,4
2,2,6,5
3,1,6,3
4,3,6,3
5,2,7,0
6,2,7,4
";

fn write_dirty(dir: &Path) {
    std::fs::write(dir.join("reviews.csv"), DIRTY_REVIEWS).unwrap();
    std::fs::write(dir.join("characteristics.csv"), DIRTY_CHARACTERISTICS).unwrap();
    std::fs::write(dir.join("reviews_photos.csv"), DIRTY_PHOTOS).unwrap();
    std::fs::write(dir.join("characteristic_reviews.csv"), DIRTY_RATINGS).unwrap();
}

async fn dirty_rows_are_rejected_with_their_line_and_the_rest_is_loaded(db: TestDb) {
    let data = tempfile::tempdir().unwrap();
    write_dirty(data.path());
    let summary = import::import(&db.options(data.path())).await.unwrap();
    assert_eq!(counts(&summary, "reviews.csv"), (9, 3, 6));
    assert_eq!(counts(&summary, "characteristics.csv"), (3, 2, 1));
    assert_eq!(counts(&summary, "reviews_photos.csv"), (4, 1, 3));
    assert_eq!(counts(&summary, "characteristic_reviews.csv"), (6, 3, 3));
    assert!(summary.verify.as_ref().unwrap().is_ok());

    let rejects = read_rejects(&db.dir().join("rejects.csv")).unwrap();
    let got: Vec<_> = rejects
        .iter()
        .map(|r| (r.file.as_str(), r.line, r.class))
        .collect();
    use RejectClass::*;
    assert_eq!(
        got,
        vec![
            ("reviews.csv", 3, Columns),
            ("reviews.csv", 4, OutOfRange),
            ("reviews.csv", 5, BadDate),
            ("reviews.csv", 6, BadUtf8),
            ("reviews.csv", 7, DuplicateId),
            ("reviews.csv", 11, UnterminatedQuote),
            ("characteristics.csv", 4, BadName),
            ("reviews_photos.csv", 3, Orphan),
            ("reviews_photos.csv", 4, Orphan),
            ("reviews_photos.csv", 5, DuplicateId),
            ("characteristic_reviews.csv", 4, ProductMismatch),
            ("characteristic_reviews.csv", 5, Orphan),
            ("characteristic_reviews.csv", 6, OutOfRange),
        ]
    );
    let reasons: Vec<_> = rejects.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons[0], "expected 12 fields, found 11");
    assert_eq!(reasons[1], "rating must be 1..=5, got 9");
    assert_eq!(
        rejects[0].raw,
        "2,1,4,1596080481467,\"too few fields\",\"x\",true,false,\"a\",\"a@x.com\",null"
    );
    assert_eq!(
        rejects[3].raw,
        "5,1,3,1596080481467,\"caf\u{FFFD}\",\"x\",true,false,\"a\",\"a@x.com\",null,0"
    );

    let conn = db.connect().await;
    assert_eq!(conn.count("reviews").await, 3);
    assert_eq!(conn.count("characteristics").await, 2);
    assert_eq!(conn.count("reviews_photos").await, 1);
    assert_eq!(conn.count("characteristic_reviews").await, 3);
    // Embedded newline and doubled quotes survive; a quoted "null" is text, a bare null is NULL.
    assert_eq!(
        conn.review_texts(6).await,
        (
            "multi\nline \"quoted\", text".to_owned(),
            Some("null".to_owned())
        )
    );
    assert_eq!(conn.review_texts(1).await.1, None);
    assert_eq!(conn.review_texts(7).await.1.as_deref(), Some("Thanks!"));
    assert_eq!(conn.meta(1).await, Some([0, 0, 0, 0, 1, 0, 1]));
    assert_eq!(conn.meta(2).await, Some([0, 1, 0, 0, 1, 1, 1]));
    // A lower-case name is stored in its canonical spelling.
    assert_eq!(
        conn.characteristics(2).await,
        vec![(2, "Quality".to_owned(), 9, 2)]
    );
    assert_eq!(
        conn.characteristics(1).await,
        vec![(1, "Fit".to_owned(), 4, 1)]
    );
    conn.close().await;
}

#[tokio::test]
async fn dirty_rows_are_rejected_with_their_line_and_the_rest_is_loaded_on_sqlite() {
    dirty_rows_are_rejected_with_their_line_and_the_rest_is_loaded(TestDb::sqlite()).await;
}

#[tokio::test]
async fn dirty_rows_are_rejected_with_their_line_and_the_rest_is_loaded_on_postgres() {
    let Some(db) = TestDb::postgres(
        "dirty_rows_are_rejected_with_their_line_and_the_rest_is_loaded_on_postgres",
    )
    .await
    else {
        return;
    };
    dirty_rows_are_rejected_with_their_line_and_the_rest_is_loaded(db).await;
}

// ---------------------------------------------------------------------------------------------
// Importing again

async fn a_repeated_import_never_duplicates_rows(db: TestDb) {
    let data = tempfile::tempdir().unwrap();
    write_dirty(data.path());
    let opts = db.options(data.path());
    import::import(&opts).await.unwrap();

    let err = import::import(&opts).await.unwrap_err().to_string();
    assert!(err.contains("--replace"), "{err}");
    let conn = db.connect().await;
    assert_eq!(conn.count("reviews").await, 3);
    assert_eq!(conn.count("product_meta").await, 2);

    let mut replace = opts.clone();
    replace.replace = true;
    let summary = import::import(&replace).await.unwrap();
    assert!(summary.verify.as_ref().unwrap().is_ok());
    assert_eq!(conn.count("reviews").await, 3);
    assert_eq!(conn.count("reviews_photos").await, 1);
    assert_eq!(conn.count("characteristics").await, 2);
    assert_eq!(conn.count("characteristic_reviews").await, 3);
    assert_eq!(conn.count("product_meta").await, 2);
    assert_eq!(
        conn.characteristics(2).await,
        vec![(2, "Quality".to_owned(), 9, 2)]
    );
    assert_eq!(conn.insert_review().await, 8);
    conn.close().await;
}

#[tokio::test]
async fn a_repeated_import_never_duplicates_rows_on_sqlite() {
    a_repeated_import_never_duplicates_rows(TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_repeated_import_never_duplicates_rows_on_postgres() {
    let Some(db) = TestDb::postgres("a_repeated_import_never_duplicates_rows_on_postgres").await
    else {
        return;
    };
    a_repeated_import_never_duplicates_rows(db).await;
}

#[tokio::test]
async fn a_missing_file_or_a_wrong_header_fails_before_loading_anything() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    write_dirty(data.path());
    std::fs::remove_file(data.path().join("characteristics.csv")).unwrap();
    let err = import::import(&db.options(data.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("characteristics.csv not found"), "{err}");

    write_dirty(data.path());
    std::fs::write(
        data.path().join("reviews_photos.csv"),
        b"id,url,review_id\n1,\"u\",1\n",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        import::import(&db.options(data.path())).await.unwrap_err()
    );
    assert!(
        err.contains("header is `id,url,review_id`, expected `id,review_id,url`"),
        "{err}"
    );
}

/// The importer and the API read a database URL by one rule: another scheme is refused, with
/// the password left out of the message.
#[tokio::test]
async fn a_database_url_of_an_unknown_scheme_is_refused_before_anything_is_created() {
    let data = tempfile::tempdir().unwrap();
    write_dirty(data.path());
    let err = import::import(&ImportOptions::new(
        "mysql://app:secret@h/reviews",
        data.path(),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("unsupported database URL"), "{err}");
    assert!(!err.contains("secret"), "the password is not echoed: {err}");
}

// ---------------------------------------------------------------------------------------------
// Generated data sets

fn read_manifest(path: &Path) -> Vec<(String, u64, RejectClass)> {
    use reviews_api::import::csv::{CsvReader, Next, Record};
    let mut reader = CsvReader::new(std::fs::File::open(path).unwrap());
    let mut rec = Record::default();
    let mut rows = Vec::new();
    assert_eq!(reader.next(&mut rec).unwrap(), Next::Record, "header");
    loop {
        match reader.next(&mut rec).unwrap() {
            Next::Record => rows.push((
                rec.field(0).to_owned(),
                rec.field(1).parse().unwrap(),
                rec.field(2).parse().unwrap(),
            )),
            Next::Bad(bad) => panic!("bad manifest line {bad:?}"),
            Next::End => return rows,
        }
    }
}

async fn a_generated_set_with_defects_imports_exactly_as_its_manifest_says(db: TestDb) {
    use reviews_api::generate::{GenerateOptions, generate};
    let data = tempfile::tempdir().unwrap();
    let mut gen_opts = GenerateOptions::new(data.path(), 2_000);
    gen_opts.defects = Some(0.01);
    let generated = generate(&gen_opts).unwrap();

    let summary = import::import(&db.options(data.path())).await.unwrap();
    let verify = summary.verify.as_ref().unwrap();
    assert!(verify.is_ok(), "{verify}");
    for file in import::FILES {
        let g = generated.file(file).unwrap();
        assert_eq!(
            counts(&summary, file),
            (g.rows, g.clean, g.defects),
            "{file}"
        );
        assert!(g.defects >= 1, "{file}: at least the unterminated last row");
    }

    let mut manifest = read_manifest(generated.manifest.as_ref().unwrap());
    let mut rejects: Vec<_> = read_rejects(&db.dir().join("rejects.csv"))
        .unwrap()
        .into_iter()
        .map(|r| (r.file, r.line, r.class))
        .collect();
    manifest.sort();
    rejects.sort();
    assert_eq!(rejects, manifest);
    // Every class the generator knows was exercised.
    for class in [
        RejectClass::Columns,
        RejectClass::BadInteger,
        RejectClass::OutOfRange,
        RejectClass::BadDate,
        RejectClass::BadUtf8,
        RejectClass::DuplicateId,
        RejectClass::Orphan,
        RejectClass::UnterminatedQuote,
    ] {
        assert!(
            manifest.iter().any(|m| m.2 == class),
            "no {class} defect generated"
        );
    }

    let conn = db.connect().await;
    assert_eq!(
        conn.count("reviews").await as u64,
        generated.file("reviews.csv").unwrap().clean
    );
    assert_eq!(
        conn.count("characteristic_reviews").await as u64,
        generated.file("characteristic_reviews.csv").unwrap().clean
    );
    conn.close().await;
}

#[tokio::test]
async fn a_generated_set_with_defects_imports_exactly_as_its_manifest_says_on_sqlite() {
    a_generated_set_with_defects_imports_exactly_as_its_manifest_says(TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_generated_set_with_defects_imports_exactly_as_its_manifest_says_on_postgres() {
    let test = "a_generated_set_with_defects_imports_exactly_as_its_manifest_says_on_postgres";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    a_generated_set_with_defects_imports_exactly_as_its_manifest_says(db).await;
}

#[tokio::test]
async fn a_clean_generated_set_loads_every_row() {
    use reviews_api::generate::{GenerateOptions, generate};
    let data = tempfile::tempdir().unwrap();
    let generated = generate(&GenerateOptions::new(data.path(), 500)).unwrap();
    assert!(generated.manifest.is_none());
    let db = TestDb::sqlite();
    let mut opts = db.options(data.path());
    // The default: not one rejected row.
    opts.max_rejects = RejectLimit::default();
    let summary = import::import(&opts).await.unwrap();
    assert!(summary.verify.as_ref().unwrap().is_ok());
    for file in import::FILES {
        let g = generated.file(file).unwrap();
        assert_eq!(counts(&summary, file), (g.rows, g.rows, 0), "{file}");
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: staging tables swapped in

/// One connection to a PostgreSQL test database.
async fn pg_pool(db: &TestDb) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap()
}

/// The schema as text lines, to compare: every relation of the schema with its kind, owner,
/// privileges and options; the columns; the indexes; the constraints; the sequences and which
/// column owns each; and the migrations applied.
async fn pg_schema(pool: &PgPool) -> Vec<String> {
    const NS: &str = "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())";
    let queries = [
        format!(
            "SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' owner=' || pg_get_userbyid(c.relowner) \
             || ' acl=' || COALESCE(c.relacl::text, '-') || ' options=' || COALESCE(array_to_string(c.reloptions, ','), '-') \
             FROM pg_class c WHERE c.relnamespace = {NS}"
        ),
        "SELECT 'column ' || table_name || '.' || column_name || ' ' || ordinal_position || ' ' || data_type \
         || ' ' || is_nullable || ' default=' || COALESCE(column_default, '-') || ' identity=' || is_identity \
         || ' ' || COALESCE(identity_generation, '-') \
         FROM information_schema.columns WHERE table_schema = current_schema()"
            .to_owned(),
        "SELECT 'index ' || tablename || ' ' || indexname || ' ' || indexdef FROM pg_indexes \
         WHERE schemaname = current_schema()"
            .to_owned(),
        format!(
            "SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || contype::text || ' ' \
             || pg_get_constraintdef(oid) || ' index=' || conindid::regclass::text \
             FROM pg_constraint WHERE connamespace = {NS}"
        ),
        "SELECT 'sequence ' || sequencename || ' ' || data_type::text || ' ' || start_value || ' ' || min_value \
         || ' ' || max_value || ' ' || increment_by || ' ' || cycle || ' ' || cache_size \
         FROM pg_sequences WHERE schemaname = current_schema()"
            .to_owned(),
        format!(
            "SELECT 'identity ' || a.attrelid::regclass::text || '.' || a.attname || ' ' \
             || pg_get_serial_sequence(a.attrelid::regclass::text, a.attname) \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             WHERE c.relnamespace = {NS} AND a.attidentity <> ''"
        ),
        "SELECT 'migration ' || version || ' ' || description || ' ' || success || ' ' || encode(checksum, 'hex') \
         FROM _sqlx_migrations"
            .to_owned(),
    ];
    let mut lines = Vec::new();
    for sql in queries {
        let mut rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap();
        rows.sort();
        lines.extend(rows);
    }
    lines
}

#[tokio::test]
async fn an_import_leaves_the_schema_exactly_as_the_migrations_made_it_on_postgres() {
    let test = "an_import_leaves_the_schema_exactly_as_the_migrations_made_it_on_postgres";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    let pool = pg_pool(&db).await;
    reviews_api::store::POSTGRES_MIGRATOR
        .run(&pool)
        .await
        .unwrap();
    // What a deployment may add (a read-only grant, storage options) must survive the swap too.
    sqlx::raw_sql(
        "GRANT SELECT ON reviews, product_meta TO PUBLIC; \
         ALTER TABLE reviews SET (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.05)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let migrated = pg_schema(&pool).await;
    for table in ["reviews", "characteristics", "product_meta"] {
        assert!(
            migrated
                .iter()
                .any(|l| l.starts_with(&format!("relation {table} r"))),
            "{migrated:#?}"
        );
    }
    assert!(
        migrated
            .iter()
            .any(|l| l.starts_with("index reviews reviews_by_newest ")),
        "{migrated:#?}"
    );
    assert!(
        migrated
            .iter()
            .any(|l| l.starts_with("constraint reviews reviews_pkey p PRIMARY KEY (id)")),
        "{migrated:#?}"
    );
    assert!(
        migrated
            .iter()
            .any(|l| l.starts_with("identity reviews.id public.reviews_id_seq")),
        "{migrated:#?}"
    );

    let data = tempfile::tempdir().unwrap();
    write_dirty(data.path());
    let mut opts = db.options(data.path());
    import::import(&opts).await.unwrap();
    assert_eq!(pg_schema(&pool).await, migrated, "after an import");

    opts.replace = true;
    let summary = import::import(&opts).await.unwrap();
    assert!(summary.verify.as_ref().unwrap().is_ok());
    assert_eq!(pg_schema(&pool).await, migrated, "after a --replace import");
    // New rows still get their ids from the renamed sequences.
    let conn = db.connect().await;
    assert_eq!(conn.insert_review().await, 8);
    conn.close().await;
    pool.close().await;
}

/// Whether another session of this database (the importer) matches a `pg_stat_activity`
/// condition.
async fn importer_is(conn: &mut PgConnection, condition: &str) -> bool {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND {condition})"
    );
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Polls until the importer matches `condition` (two minutes at most).
async fn wait_for_importer(conn: &mut PgConnection, condition: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !importer_is(conn, condition).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the importer was never seen with {condition}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn readers_are_not_blocked_while_an_import_loads_on_postgres() {
    use reviews_api::generate::{GenerateOptions, generate};
    let test = "readers_are_not_blocked_while_an_import_loads_on_postgres";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    // The rows readers see meanwhile: the dirty set (3 reviews).
    let old = tempfile::tempdir().unwrap();
    write_dirty(old.path());
    import::import(&db.options(old.path())).await.unwrap();
    // A set large enough to spend a while loading.
    let data = tempfile::tempdir().unwrap();
    let generated = generate(&GenerateOptions::new(data.path(), 10_000)).unwrap();

    // A reader's open transaction on product_meta holds the import at its swap until released
    // below: whatever the timing, the import cannot have finished while the test reads.
    let mut holder = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT COUNT(*) FROM product_meta")
        .execute(&mut holder)
        .await
        .unwrap();

    let mut opts = db.options(data.path());
    opts.replace = true;
    let mut reader = PgConnection::connect(&db.url).await.unwrap();
    // A blocked read fails the test instead of hanging it.
    sqlx::raw_sql("SET statement_timeout = '2s'")
        .execute(&mut reader)
        .await
        .unwrap();
    // Waits until the importer is copying rows, then reads the live tables.
    let read_mid_load = async {
        wait_for_importer(&mut reader, "state = 'active' AND query LIKE 'COPY %'").await;
        let reviews: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reviews")
            .fetch_one(&mut reader)
            .await
            .expect("a read during the import's load answers");
        let rating_5: i64 =
            sqlx::query_scalar("SELECT rating_5 FROM product_meta WHERE product_id = 1")
                .fetch_one(&mut reader)
                .await
                .expect("a read during the import's load answers");
        (reviews, rating_5)
    };
    // The import runs concurrently with the reads, in this task.
    let mut importing = std::pin::pin!(import::import(&opts));
    let (reviews, rating_5) = tokio::select! {
        result = &mut importing => panic!(
            "the import ended before the reads: {:?}",
            result.map(|s| s.to_string())
        ),
        reads = read_mid_load => reads,
    };
    // Mid-load, the live tables answer with the old rows.
    assert_eq!((reviews, rating_5), (3, 1));

    // At the swap the import waits for the holder's lock, in short tries that give their locks
    // back: a reader of a table the import already locked gets through between them.
    let read_at_swap = async {
        wait_for_importer(
            &mut reader,
            "wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE %'",
        )
        .await;
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM reviews")
            .fetch_one(&mut reader)
            .await
            .expect("a read while the import waits to swap answers")
    };
    let reviews = tokio::select! {
        result = &mut importing => panic!(
            "the import ended before the swap: {:?}",
            result.map(|s| s.to_string())
        ),
        reviews = read_at_swap => reviews,
    };
    assert_eq!(reviews, 3);

    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    let summary = importing.await.unwrap();
    assert!(summary.verify.as_ref().unwrap().is_ok());
    let reviews: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reviews")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(reviews as u64, generated.file("reviews.csv").unwrap().rows);
    holder.close().await.unwrap();
    reader.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_import_leaves_the_previous_data_in_place_on_postgres() {
    use reviews_api::generate::{GenerateOptions, generate};
    let test = "a_failed_import_leaves_the_previous_data_in_place_on_postgres";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    let old = tempfile::tempdir().unwrap();
    write_dirty(old.path());
    import::import(&db.options(old.path())).await.unwrap();
    let pool = pg_pool(&db).await;
    // A view on reviews makes the swap's DROP TABLE fail: the import fails at its very end, after
    // every row, aggregate and index of the new set was built.
    sqlx::raw_sql("CREATE VIEW review_ids AS SELECT id FROM reviews")
        .execute(&pool)
        .await
        .unwrap();
    let schema = pg_schema(&pool).await;

    let data = tempfile::tempdir().unwrap();
    let generated = generate(&GenerateOptions::new(data.path(), 200)).unwrap();
    let mut opts = db.options(data.path());
    opts.replace = true;
    let err = format!("{:#}", import::import(&opts).await.unwrap_err());
    assert!(err.contains("swapping the imported tables in"), "{err}");
    assert!(err.contains("depend"), "{err}");

    // Everything as before: rows, aggregates, schema (no staging table left), sequences.
    assert_eq!(pg_schema(&pool).await, schema);
    let conn = db.connect().await;
    assert_eq!(conn.count("reviews").await, 3);
    assert_eq!(conn.count("reviews_photos").await, 1);
    assert_eq!(conn.count("characteristics").await, 2);
    assert_eq!(conn.count("characteristic_reviews").await, 3);
    assert_eq!(conn.count("product_meta").await, 2);
    assert_eq!(conn.meta(2).await, Some([0, 1, 0, 0, 1, 1, 1]));
    assert_eq!(
        conn.characteristics(2).await,
        vec![(2, "Quality".to_owned(), 9, 2)]
    );
    assert_eq!(conn.insert_review().await, 8);

    // Without the view the same import goes through.
    sqlx::raw_sql("DROP VIEW review_ids")
        .execute(&pool)
        .await
        .unwrap();
    let summary = import::import(&opts).await.unwrap();
    assert!(summary.verify.as_ref().unwrap().is_ok());
    assert_eq!(
        conn.count("reviews").await as u64,
        generated.file("reviews.csv").unwrap().rows
    );
    conn.close().await;
    pool.close().await;
}

// ---------------------------------------------------------------------------------------------
// Exit codes: an import that rejected rows or loaded nothing is not a success

/// The failure an import ended with (panics when it succeeded or failed otherwise).
fn failure(result: anyhow::Result<ImportSummary>) -> ImportFailure {
    match result {
        Ok(s) => panic!("the import succeeded:\n{s}"),
        Err(e) => e
            .downcast::<ImportFailure>()
            .unwrap_or_else(|e| panic!("not an ImportFailure: {e:#}")),
    }
}

/// Keeps the header and the first half of the data lines of `reviews.csv`, as a copy cut short
/// would. (A cut inside a quoted multi-line field is one more rejected row.)
fn truncate_reviews(dir: &Path) -> u64 {
    let path = dir.join("reviews.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keep = 1 + (lines.len() - 1) / 2;
    std::fs::write(&path, lines[..keep].join("\n") + "\n").unwrap();
    (lines.len() - keep) as u64
}

async fn a_truncated_reviews_file_fails_with_code_3_unless_allowed(db: TestDb) {
    use reviews_api::generate::{GenerateOptions, generate};
    // What the database holds before: the dirty set.
    let old = tempfile::tempdir().unwrap();
    write_dirty(old.path());
    import::import(&db.options(old.path())).await.unwrap();

    let data = tempfile::tempdir().unwrap();
    generate(&GenerateOptions::new(data.path(), 300)).unwrap();
    truncate_reviews(data.path());
    let mut opts = db.options(data.path());
    opts.replace = true;
    opts.max_rejects = RejectLimit::default();
    let f = failure(import::import(&opts).await);
    assert_eq!(f.exit_code(), 3, "{f}");
    let ImportFailure::TooManyRejects { rejected, read, .. } = &f else {
        panic!("{f}")
    };
    let summary = f.summary();
    assert_eq!(*rejected, summary.total().rejected);
    assert_eq!(*read, summary.total().read);
    assert!(
        summary.file("reviews_photos.csv").unwrap().rejected > 0,
        "orphans"
    );
    assert!(f.to_string().contains("--max-rejects"), "{f}");

    let conn = db.connect().await;
    if db.pg_admin.is_some() {
        // PostgreSQL: refused before the swap, so the dirty set is still there, whole.
        assert!(f.to_string().contains("left as it was"), "{f}");
        assert_eq!(conn.count("reviews").await, 3);
        assert_eq!(conn.count("characteristic_reviews").await, 3);
        assert_eq!(conn.meta(2).await, Some([0, 1, 0, 0, 1, 1, 1]));
    } else {
        // SQLite committed as it went: the accepted rows stay, aggregates built to match.
        assert!(f.to_string().contains("--replace"), "{f}");
        let loaded = summary.file("reviews.csv").unwrap().loaded as i64;
        assert_eq!(conn.count("reviews").await, loaded);
        let meta_total: i64 = fetch!(
            &conn,
            (i64,),
            "SELECT CAST(SUM(rating_1 + rating_2 + rating_3 + rating_4 + rating_5) AS BIGINT) FROM product_meta".to_owned()
        )[0]
            .0;
        assert_eq!(meta_total, loaded);
    }

    // Exactly as many rejects as allowed is a success; one fewer allowed is not.
    opts.max_rejects = RejectLimit::Rows(*rejected);
    let summary = import::import(&opts).await.unwrap();
    assert!(summary.verify.as_ref().unwrap().is_ok());
    assert_eq!(
        conn.count("reviews").await as u64,
        summary.file("reviews.csv").unwrap().loaded
    );
    opts.max_rejects = RejectLimit::Rows(*rejected - 1);
    assert_eq!(failure(import::import(&opts).await).exit_code(), 3);
    opts.max_rejects = "100%".parse().unwrap();
    import::import(&opts).await.unwrap();
    conn.close().await;
}

#[tokio::test]
async fn a_truncated_reviews_file_fails_with_code_3_unless_allowed_on_sqlite() {
    a_truncated_reviews_file_fails_with_code_3_unless_allowed(TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_truncated_reviews_file_fails_with_code_3_unless_allowed_on_postgres() {
    let test = "a_truncated_reviews_file_fails_with_code_3_unless_allowed_on_postgres";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    a_truncated_reviews_file_fails_with_code_3_unless_allowed(db).await;
}

async fn a_header_only_reviews_file_loads_nothing_and_fails_whatever_the_limit(db: TestDb) {
    let data = tempfile::tempdir().unwrap();
    write_dirty(data.path());
    use reviews_api::import::rows::{CsvRow, ReviewRow};
    let header = ReviewRow::HEADER.join(",");
    std::fs::write(data.path().join("reviews.csv"), format!("{header}\n")).unwrap();
    let opts = db.options(data.path()); // any number of rejects allowed
    let f = failure(import::import(&opts).await);
    assert_eq!(f.exit_code(), 1, "{f}");
    let ImportFailure::NothingLoaded { file, read, .. } = &f else {
        panic!("{f}")
    };
    assert_eq!((*file, *read), ("reviews_photos.csv", 4));
    assert!(f.to_string().contains("none of its 4 rows"), "{f}");
}

#[tokio::test]
async fn a_header_only_reviews_file_loads_nothing_and_fails_whatever_the_limit_on_sqlite() {
    a_header_only_reviews_file_loads_nothing_and_fails_whatever_the_limit(TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_header_only_reviews_file_loads_nothing_and_fails_whatever_the_limit_on_postgres() {
    let test = "a_header_only_reviews_file_loads_nothing_and_fails_whatever_the_limit_on_postgres";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    a_header_only_reviews_file_loads_nothing_and_fails_whatever_the_limit(db).await;
}

/// `--verify` checks what the import loaded, not what the database holds after the API wrote
/// to it: a review posted during the import (it waits on the import's lock and goes in at the
/// commit) is no MISMATCH.
#[tokio::test]
async fn verify_is_not_fooled_by_a_write_during_the_import_on_postgres() {
    use reviews_api::generate::{GenerateOptions, generate};
    let test = "verify_is_not_fooled_by_a_write_during_the_import_on_postgres";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    let old = tempfile::tempdir().unwrap();
    write_dirty(old.path());
    import::import(&db.options(old.path())).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let generated = generate(&GenerateOptions::new(data.path(), 2_000)).unwrap();
    let mut opts = db.options(data.path());
    opts.replace = true;

    let mut watcher = PgConnection::connect(&db.url).await.unwrap();
    let writer = async {
        // Once the importer is copying rows, a client writes a review, as the API would.
        wait_for_importer(&mut watcher, "state = 'active' AND query LIKE 'COPY %'").await;
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO reviews (product_id, rating, date_ms, summary, body, recommend, reported, \
             reviewer_name, reviewer_email, helpfulness) \
             VALUES (1, 5, 0, 's', 'b', TRUE, FALSE, 'n', 'e', 0) RETURNING id",
        )
        .fetch_one(&mut conn)
        .await
        .expect("the write goes in once the import commits");
        conn.close().await.unwrap();
        id
    };
    let (summary, written) = tokio::join!(import::import(&opts), writer);
    let summary = summary.expect("verify passes: it checked what the import loaded");
    assert!(summary.verify.as_ref().unwrap().is_ok());
    let reviews = generated.file("reviews.csv").unwrap().rows as i64;
    assert_eq!(
        written,
        reviews + 1,
        "the write went into the imported table"
    );
    let conn = db.connect().await;
    assert_eq!(conn.count("reviews").await, reviews + 1);
    conn.close().await;
    watcher.close().await.unwrap();
}

/// An unreadable data folder is reported as such. Only a non-root process can be refused, so
/// as root (CI) this checks nothing and says so; the message mapping itself is unit-tested in
/// `import::tests::an_unreadable_input_says_permission_denied_not_not_found`.
#[tokio::test]
async fn an_unreadable_folder_says_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    write_dirty(data.path());
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o000)).unwrap();
    let probe = std::fs::metadata(data.path().join("reviews.csv"));
    let result = if probe.is_ok() {
        skip(
            "an_unreadable_folder_says_permission_denied",
            "running as root, which no folder permission stops",
        );
        None
    } else {
        let db = TestDb::sqlite();
        Some(import::import(&db.options(data.path())).await)
    };
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some(result) = result {
        let err = format!("{:#}", result.unwrap_err());
        assert!(err.contains("permission denied"), "{err}");
        assert!(!err.contains("not found"), "{err}");
    }
}
