//! The CSV importer (`reviews import`): loads the four Atelier CSV files into SQLite or
//! PostgreSQL and says what it did with every row, loaded or rejected with its line and reason.
//!
//! Pipeline, per file in parent-first order (reviews, characteristics, then photos and
//! characteristic ratings): a blocking parser thread reads records ([`csv`]), types and
//! validates them ([`rows`]), checks them against what was loaded before ([`parents`]), writes
//! rejects as it goes ([`rejects`]) and sends batches over a bounded channel to the database
//! writer ([`sqlite`] or [`postgres`]), so parsing and writing overlap and memory stays flat.
//! After the last file the writer builds the aggregates the API reads (`product_meta`,
//! `characteristics.rating_sum/count`), builds the indexes (SQLite rebuilds the secondary indexes
//! it dropped before loading; PostgreSQL loads into index-less staging tables and builds all
//! their indexes then), restarts the id sequences (PostgreSQL) and runs `ANALYZE`; PostgreSQL
//! then swaps the staging tables in for the live ones.
//!
//! Decisions:
//! - **Importing again.** A database that already holds review data is refused, naming the
//!   tables; `--replace` empties those tables first. A repeated import therefore never
//!   duplicates rows. On PostgreSQL the whole import, staging tables and swap included, is one
//!   transaction: nothing changes unless it all succeeds, and readers of a live database keep
//!   reading the old rows meanwhile, blocked only for the swap at the end (writers wait for the
//!   commit; see [`postgres`]). On SQLite an interrupted import leaves a partial load, and the
//!   next run needs `--replace`.
//! - **Rejects** go to `--rejects` (default `rejects.csv` in the current directory, because the
//!   data folder may be read-only), as CSV `file,line,class,reason,raw`; the file is written
//!   even when empty.
//! - **Success is all rows.** Rejected rows fail the import (exit code 3) unless
//!   `--max-rejects` allows them, and a file that has rows but loaded none fails it whatever the
//!   limit; on PostgreSQL either leaves the database untouched. See `outcome.rs` for the exit
//!   codes.
//! - **`--verify`** compares what was loaded with what the database holds. On PostgreSQL it
//!   reads the staging tables inside the import's transaction, before the swap, so writes the
//!   API makes once the import commits cannot show as a mismatch, and a mismatch changes nothing.
//! - **Memory**: the parent-id maps take about 50 MiB on a full-size set (see [`parents`]);
//!   batches in flight, the reader's buffer and SQLite's 64 MiB cache bound the rest. Measured
//!   peak RSS for 31.3M generated rows (release build): 203 MiB on SQLite, 62 MiB on PostgreSQL
//!   (limit: 512 MiB).

pub mod csv;
mod outcome;
pub mod parents;
pub mod postgres;
pub mod progress;
pub mod rejects;
pub mod rows;
pub mod sqlite;
pub mod verify;

use std::fmt;
use std::fs::File;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc::{self, Receiver};

use self::csv::{CsvReader, Next, Record};
use self::parents::{Admit, Loaded};
use self::postgres::{CopyRow, PgTarget};
use self::progress::{Progress, group};
use self::rows::{CharacteristicReviewRow, CharacteristicRow, CsvRow, PhotoRow, ReviewRow};
use self::sqlite::{SqliteRow, SqliteTarget};
use self::verify::{Checksums, VerifyReport};
use crate::store::Backend;

pub use self::outcome::{ImportFailure, RejectLimit};
pub use self::rejects::{Reject, RejectClass, RejectEntry, read_rejects};

/// The four input files, in load order.
pub const FILES: [&str; 4] = [
    ReviewRow::FILE,
    CharacteristicRow::FILE,
    PhotoRow::FILE,
    CharacteristicReviewRow::FILE,
];

/// Every table the importer fills (the emptiness check and `--replace` cover all of them).
const IMPORTED_TABLES: [&str; 5] = [
    "reviews",
    "reviews_photos",
    "characteristics",
    "characteristic_reviews",
    "product_meta",
];

/// Rows per batch sent from the parser to the writer.
const BATCH_ROWS: usize = 4096;
/// Batches in flight between parser and writer.
const BATCHES_IN_FLIGHT: usize = 4;

/// The exit codes, for `reviews import --help` (see [`outcome`]).
const EXIT_CODES: &str = "\
Exit codes:
  0  every row loaded, or the rejected rows are within --max-rejects
  1  the import failed (missing or unreadable input, wrong header, database error),
     or a file that has rows had none of them loaded
  2  bad command line
  3  more rows rejected than --max-rejects allows
  4  --verify found the database does not hold what was loaded
On PostgreSQL, codes 1, 3 and 4 leave the database as it was. SQLite commits as it goes:
the accepted rows stay loaded and the next import needs --replace.";

/// `reviews import`: load the Atelier CSV files into the database.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct ImportArgs {
    /// Database to fill: `postgres://…` or `postgresql://…` for PostgreSQL; `sqlite://path`,
    /// `sqlite:path` or a bare file path for SQLite (created if missing).
    #[arg(
        long,
        env = "REVIEWS_DATABASE_URL",
        default_value = "sqlite://reviews.db"
    )]
    pub database_url: String,
    /// Folder holding reviews.csv, reviews_photos.csv, characteristics.csv and
    /// characteristic_reviews.csv.
    #[arg(long)]
    pub dir: PathBuf,
    /// Where to write the rows that were not loaded (CSV: file,line,class,reason,raw). Defaults
    /// to the current directory because the data folder may be read-only.
    #[arg(long, default_value = "rejects.csv")]
    pub rejects: PathBuf,
    /// Empty the review tables first. Without it, a database that already holds reviews is
    /// refused, so a repeated import can never duplicate rows.
    #[arg(long)]
    pub replace: bool,
    /// Read every table back and compare checksums with what was loaded; exit 4 on a mismatch.
    /// PostgreSQL verifies the imported tables before they replace the live ones, so a
    /// mismatch changes nothing there.
    #[arg(long)]
    pub verify: bool,
    /// How many rejected rows still count as success: a row count (100), a percentage of the
    /// rows read (0.5%) or a fraction (0.005). Beyond it the import fails with exit code 3.
    #[arg(long, default_value = "0", value_name = "N|P%")]
    pub max_rejects: RejectLimit,
    /// No progress line (it is shown only when stderr is a terminal anyway).
    #[arg(long, short)]
    pub quiet: bool,
}

/// What [`import`] needs; [`ImportArgs`] without the CLI concerns.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub database_url: String,
    pub dir: PathBuf,
    pub rejects: PathBuf,
    pub replace: bool,
    pub verify: bool,
    /// Rejected rows still counted as success.
    pub max_rejects: RejectLimit,
    /// Draw a progress line on stderr.
    pub progress: bool,
}

impl ImportOptions {
    /// Options with the CLI's defaults: rejects to `rejects.csv`, no replace, no verify, no
    /// rejected row allowed, no progress.
    pub fn new(database_url: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        ImportOptions {
            database_url: database_url.into(),
            dir: dir.into(),
            rejects: PathBuf::from("rejects.csv"),
            replace: false,
            verify: false,
            max_rejects: RejectLimit::default(),
            progress: false,
        }
    }
}

impl From<ImportArgs> for ImportOptions {
    fn from(args: ImportArgs) -> Self {
        ImportOptions {
            database_url: args.database_url,
            dir: args.dir,
            rejects: args.rejects,
            replace: args.replace,
            verify: args.verify,
            max_rejects: args.max_rejects,
            progress: !args.quiet && std::io::stderr().is_terminal(),
        }
    }
}

/// Rows of one file: read = loaded + rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub file: &'static str,
    pub read: u64,
    pub loaded: u64,
    pub rejected: u64,
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct ImportSummary {
    /// `"sqlite"` or `"postgres"`.
    pub backend: &'static str,
    /// One per input file, in load order.
    pub files: Vec<FileSummary>,
    pub rejects: PathBuf,
    /// Time spent reading and writing rows.
    pub load_time: Duration,
    /// Aggregates, sequences, index builds and statistics after the rows.
    pub finish_time: Duration,
    /// Whole import, including verify.
    pub total_time: Duration,
    /// Heap held by the parent-id maps at the end (the importer's main memory use).
    pub parent_map_bytes: usize,
    pub verify: Option<VerifyReport>,
}

impl ImportSummary {
    pub fn file(&self, name: &str) -> Option<&FileSummary> {
        self.files.iter().find(|f| f.file == name)
    }

    pub fn total(&self) -> FileSummary {
        self.files.iter().fold(
            FileSummary {
                file: "total",
                ..Default::default()
            },
            |mut t, f| {
                t.read += f.read;
                t.loaded += f.loaded;
                t.rejected += f.rejected;
                t
            },
        )
    }

    /// Rows read per second of loading.
    pub fn rows_per_second(&self) -> f64 {
        self.total().read as f64 / self.load_time.as_secs_f64().max(1e-6)
    }
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<28} {:>12} {:>12} {:>12}",
            "file", "read", "loaded", "rejected"
        )?;
        for s in self.files.iter().chain(std::iter::once(&self.total())) {
            writeln!(
                f,
                "{:<28} {:>12} {:>12} {:>12}",
                s.file,
                group(s.read),
                group(s.loaded),
                group(s.rejected)
            )?;
        }
        writeln!(
            f,
            "{}: rows loaded in {:.2} s ({} rows/s), aggregates and indexes {:.2} s, total {:.2} s; parent-id maps {:.1} MiB",
            self.backend,
            self.load_time.as_secs_f64(),
            group(self.rows_per_second() as u64),
            self.finish_time.as_secs_f64(),
            self.total_time.as_secs_f64(),
            self.parent_map_bytes as f64 / (1024.0 * 1024.0)
        )?;
        write!(f, "rejects: {}", self.rejects.display())?;
        if let Some(v) = &self.verify {
            write!(f, "\n{v}")?;
        }
        Ok(())
    }
}

/// `reviews import`: runs the import on a runtime of its own and prints the summary; an
/// import that ran but did not succeed (rejects, nothing loaded, a failed verify) prints it
/// too and exits with its code.
pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(args))
}

async fn run_async(args: ImportArgs) -> anyhow::Result<ExitCode> {
    match import(&ImportOptions::from(args)).await {
        Ok(summary) => {
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast::<ImportFailure>() {
            Ok(failure) => {
                println!("{}", failure.summary());
                eprintln!("error: {failure}");
                Ok(failure.exit())
            }
            Err(e) => Err(e),
        },
    }
}

/// Imports the four files of `opts.dir` into `opts.database_url`. See the module docs. An
/// import that ran to the end but did not succeed is an [`ImportFailure`] (downcast the error),
/// which carries its summary.
pub async fn import(opts: &ImportOptions) -> anyhow::Result<ImportSummary> {
    let started = Instant::now();
    check_input_dir(&opts.dir)?;
    // Headers first, so a wrong file fails the import before the database is touched.
    check_header::<ReviewRow>(&opts.dir)?;
    check_header::<CharacteristicRow>(&opts.dir)?;
    check_header::<PhotoRow>(&opts.dir)?;
    check_header::<CharacteristicReviewRow>(&opts.dir)?;
    let mut target = Target::open(&opts.database_url).await?;
    target.prepare(opts.replace).await?;

    let rejects = rejects::RejectsWriter::create(&opts.rejects)
        .with_context(|| format!("creating the rejects file {}", opts.rejects.display()))?;
    let st = ParseState {
        loaded: Loaded::default(),
        rejects,
        checksums: opts.verify.then(Checksums::default),
        progress: Progress::new(opts.progress),
    };
    let load_started = Instant::now();
    let (st, reviews) = load_file::<ReviewRow>(&mut target, &opts.dir, st).await?;
    let (st, characteristics) = load_file::<CharacteristicRow>(&mut target, &opts.dir, st).await?;
    let (st, photos) = load_file::<PhotoRow>(&mut target, &opts.dir, st).await?;
    let (st, ratings) = load_file::<CharacteristicReviewRow>(&mut target, &opts.dir, st).await?;
    let files = vec![reviews, characteristics, photos, ratings];
    let load_time = load_started.elapsed();
    let parent_map_bytes = st.loaded.heap_bytes();
    st.rejects
        .finish()
        .with_context(|| format!("writing {}", opts.rejects.display()))?;
    let summary = |files, finish_time, verify| ImportSummary {
        backend: target_name(&opts.database_url),
        files,
        rejects: opts.rejects.clone(),
        load_time,
        finish_time,
        total_time: started.elapsed(),
        parent_map_bytes,
        verify,
    };

    // Judged before anything is committed: on PostgreSQL a refused import changes nothing.
    if let Err(refusal) = outcome::judge(&files, opts.max_rejects) {
        let finish_started = Instant::now();
        target.abandon().await?;
        let summary = summary(files, finish_started.elapsed(), None);
        return Err(refusal.into_failure(opts.max_rejects, summary).into());
    }

    st.progress
        .phase("building aggregates, indexes and statistics");
    let finish_started = Instant::now();
    let verify = target.finish(st.checksums.as_ref(), &st.progress).await?;
    let finish_time = finish_started.elapsed();
    target.close().await?;
    let summary = summary(files, finish_time, verify);
    if summary.verify.as_ref().is_some_and(|v| !v.is_ok()) {
        return Err(ImportFailure::VerifyFailed {
            summary: Box::new(summary),
        }
        .into());
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "import committed"
    );
    Ok(summary)
}

/// The data folder and its four files must exist and be readable. An unreadable one is said to
/// be so: `Path::is_file` answers false for both, and "not found" sent operators looking for a
/// file that was there.
fn check_input_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{} is not a folder", dir.display()),
        Err(e) => bail!("{}", describe_input_error(dir, &e)),
    }
    for file in FILES {
        let path = dir.join(file);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => bail!("{} is not a file", path.display()),
            Err(e) => bail!("{}", describe_input_error(&path, &e)),
        }
    }
    Ok(())
}

/// What went wrong reaching an input path, in words that send the operator the right way.
fn describe_input_error(path: &Path, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => format!(
            "{} not found (the data folder must hold {})",
            path.display(),
            FILES.join(", ")
        ),
        io::ErrorKind::PermissionDenied => format!(
            "{}: permission denied (this process, uid {}, may not read it or search its folder)",
            path.display(),
            current_uid()
        ),
        _ => format!("{}: {e}", path.display()),
    }
}

/// The effective user id, for the permission message (read from /proc, so no libc call).
fn current_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}

fn target_name(url: &str) -> &'static str {
    Backend::parse(url).map_or("sqlite", Backend::name)
}

/// `"name"` with embedded quotes doubled: an SQL identifier on both backends.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A row type the whole pipeline can carry.
trait Loadable: CsvRow + Admit + SqliteRow + CopyRow {}
impl<T: CsvRow + Admit + SqliteRow + CopyRow> Loadable for T {}

enum Target {
    Sqlite(SqliteTarget),
    Postgres(PgTarget),
}

impl Target {
    async fn open(url: &str) -> anyhow::Result<Self> {
        Ok(match Backend::parse(url)? {
            Backend::Postgres => Target::Postgres(PgTarget::open(url).await?),
            Backend::Sqlite => Target::Sqlite(SqliteTarget::open(url).await?),
        })
    }

    async fn prepare(&mut self, replace: bool) -> anyhow::Result<()> {
        match self {
            Target::Sqlite(t) => t.prepare(replace).await,
            Target::Postgres(t) => t.prepare(replace).await,
        }
    }

    async fn write<T: Loadable>(&mut self, rx: &mut Receiver<Vec<T>>) -> anyhow::Result<u64> {
        match self {
            Target::Sqlite(t) => t.write(rx).await,
            Target::Postgres(t) => t.write(rx).await,
        }
    }

    /// Aggregates, indexes and statistics; with `loaded` checksums, the verify. PostgreSQL
    /// verifies its staging tables before the swap and does not commit on a mismatch.
    async fn finish(
        &mut self,
        loaded: Option<&Checksums>,
        progress: &Progress,
    ) -> anyhow::Result<Option<VerifyReport>> {
        match self {
            Target::Sqlite(t) => {
                t.finish().await?;
                let Some(loaded) = loaded else {
                    return Ok(None);
                };
                progress.phase("verifying");
                let (stored, totals) = t.checksums().await?;
                Ok(Some(VerifyReport::compare(loaded, &stored, &totals)))
            }
            Target::Postgres(t) => t.finish(loaded, progress).await,
        }
    }

    /// Ends an import that is not to be kept: PostgreSQL rolls it back; SQLite, which committed
    /// the rows as it went, builds the aggregates and indexes so the database stays consistent.
    async fn abandon(self) -> anyhow::Result<()> {
        match self {
            Target::Sqlite(mut t) => {
                t.finish().await?;
                t.close().await
            }
            Target::Postgres(t) => t.close().await,
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        match self {
            Target::Sqlite(t) => t.close().await,
            Target::Postgres(t) => t.close().await,
        }
    }
}

/// What the parser thread owns; moved into it for each file and handed back.
struct ParseState {
    loaded: Loaded,
    rejects: rejects::RejectsWriter,
    checksums: Option<Checksums>,
    progress: Progress,
}

/// Loads one file: the parser runs on a blocking thread while this task writes its batches.
async fn load_file<T: Loadable>(
    target: &mut Target,
    dir: &Path,
    st: ParseState,
) -> anyhow::Result<(ParseState, FileSummary)> {
    let path = dir.join(T::FILE);
    let (tx, mut rx) = mpsc::channel::<Vec<T>>(BATCHES_IN_FLIGHT);
    let parser = tokio::task::spawn_blocking(move || parse_file::<T>(&path, st, tx));
    let written = target.write::<T>(&mut rx).await;
    // A failed writer stops the parser at its next send.
    drop(rx);
    let parsed = parser.await.context("the CSV parser thread panicked")?;
    // The writer's error is the cause when both failed: the parser then only saw the channel
    // close.
    let written = written?;
    let (st, summary) = parsed?;
    if written != summary.loaded {
        bail!(
            "{}: {} rows accepted but the database took {written}",
            T::FILE,
            summary.loaded
        );
    }
    tracing::info!(
        file = T::FILE,
        read = summary.read,
        loaded = summary.loaded,
        rejected = summary.rejected,
        "file imported"
    );
    Ok((st, summary))
}

/// Reads, validates and admits every row of one file; sends accepted rows to the writer and
/// reports the others.
fn parse_file<T: Loadable>(
    path: &Path,
    mut st: ParseState,
    tx: mpsc::Sender<Vec<T>>,
) -> anyhow::Result<(ParseState, FileSummary)> {
    let mut reader = open_checked::<T>(path)?;
    let mut rec = Record::default();

    let mut summary = FileSummary {
        file: T::FILE,
        ..Default::default()
    };
    st.progress.start_file(T::FILE);
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    loop {
        let next = reader
            .next(&mut rec)
            .with_context(|| format!("reading {}", path.display()))?;
        let outcome = match next {
            Next::End => break,
            Next::Bad(bad) => Err((
                bad.line,
                Reject::new(bad.kind.into(), bad.kind.to_string()),
                bad.raw,
            )),
            Next::Record => {
                match T::parse(&rec).and_then(|row| row.admit(&mut st.loaded).map(|()| row)) {
                    Ok(row) => Ok(row),
                    Err(reject) => Err((rec.line(), reject, rec.raw().to_vec())),
                }
            }
        };
        summary.read += 1;
        match outcome {
            Ok(row) => {
                if let Some(sums) = &mut st.checksums {
                    sums.table_mut(T::TABLE).add(row.id(), row.digest());
                }
                summary.loaded += 1;
                batch.push(row);
                if batch.len() == BATCH_ROWS {
                    send(&tx, &mut batch)?;
                    st.progress.rows(summary.read);
                }
            }
            Err((line, reject, raw)) => {
                summary.rejected += 1;
                st.rejects
                    .write(T::FILE, line, reject.class, &reject.reason, &raw)
                    .with_context(|| format!("writing {}", st.rejects.path().display()))?;
            }
        }
    }
    if !batch.is_empty() {
        send(&tx, &mut batch)?;
    }
    st.progress.finish_file(summary.read);
    Ok((st, summary))
}

/// Opens a file and reads its header, which must be exactly `T::HEADER`; the reader is left at
/// the first data row, expecting the header's field count.
fn open_checked<T: CsvRow>(path: &Path) -> anyhow::Result<CsvReader<File>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = CsvReader::new(file);
    let mut rec = Record::default();
    match reader
        .next(&mut rec)
        .with_context(|| format!("reading {}", path.display()))?
    {
        Next::Record => {
            let header: Vec<&str> = rec.fields().map(|(f, _)| f).collect();
            if header != T::HEADER {
                bail!(
                    "{}: the header is `{}`, expected `{}`",
                    path.display(),
                    header.join(","),
                    T::HEADER.join(",")
                );
            }
        }
        Next::Bad(bad) => bail!("{}: unreadable header: {}", path.display(), bad.kind),
        Next::End => bail!("{} is empty (not even a header)", path.display()),
    }
    reader.expect_fields(T::HEADER.len());
    Ok(reader)
}

fn check_header<T: CsvRow>(dir: &Path) -> anyhow::Result<()> {
    open_checked::<T>(&dir.join(T::FILE)).map(drop)
}

fn send<T>(tx: &mpsc::Sender<Vec<T>>, batch: &mut Vec<T>) -> anyhow::Result<()> {
    let full = std::mem::replace(batch, Vec::with_capacity(BATCH_ROWS));
    tx.blocking_send(full)
        .map_err(|_| anyhow::anyhow!("the database writer stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_input_says_permission_denied_not_not_found() {
        let path = Path::new("/data/reviews.csv");
        let denied = describe_input_error(path, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(denied.contains("permission denied"), "{denied}");
        assert!(!denied.contains("not found"), "{denied}");
        let missing = describe_input_error(path, &io::Error::from(io::ErrorKind::NotFound));
        assert!(
            missing.starts_with("/data/reviews.csv not found"),
            "{missing}"
        );
    }

    #[test]
    fn identifiers_are_quoted_with_doubled_quotes() {
        assert_eq!(quote_ident("reviews"), "\"reviews\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
