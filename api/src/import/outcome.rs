//! Whether an import succeeded, and the exit code that says so. An import that rejected rows, or
//! loaded nothing from a file that had rows, did not do what its operator meant (a `reviews.csv`
//! cut in half turns most photos and ratings into orphans), so it must not exit 0 like a clean
//! one. The codes, also in `reviews import --help` and the README:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every row loaded, or the rejects are within `--max-rejects` |
//! | 1 | the import failed (unreadable input, wrong header, database error), or a file that has rows had none loaded |
//! | 2 | bad command line (clap's own code) |
//! | 3 | more rows rejected than `--max-rejects` allows |
//! | 4 | `--verify` found the database does not hold what was loaded |
//!
//! On PostgreSQL codes 1, 3 and 4 leave the database as it was (the import is one transaction,
//! and the checks run before its swap and commit). SQLite commits as it goes: there the rows
//! accepted stay loaded, with their aggregates and indexes built so the database is consistent,
//! and the next import needs `--replace`.

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;

use super::{FileSummary, ImportSummary};

/// How many rejected rows an import tolerates: `--max-rejects 100` (rows), `--max-rejects 0.5%`
/// or `--max-rejects 0.005` (a share of the rows read). The default is `0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RejectLimit {
    Rows(u64),
    /// A share of the rows read, 0.0..=1.0.
    Share(f64),
}

impl Default for RejectLimit {
    fn default() -> Self {
        RejectLimit::Rows(0)
    }
}

impl RejectLimit {
    /// Any number of rejects (`--max-rejects 100%`).
    pub const ANY: RejectLimit = RejectLimit::Share(1.0);

    pub fn allows(self, rejected: u64, read: u64) -> bool {
        match self {
            RejectLimit::Rows(n) => rejected <= n,
            RejectLimit::Share(share) => rejected as f64 <= share * read as f64,
        }
    }
}

impl FromStr for RejectLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?}: expected a row count (100), a percentage (0.5%) or a fraction (0.005)")
        };
        let share = |v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(RejectLimit::Share(v))
            } else {
                Err(format!("{s:?}: a share must be from 0 to 100%"))
            }
        };
        let s = s.trim();
        if let Some(percent) = s.strip_suffix('%') {
            let v: f64 = percent.trim().parse().map_err(|_| bad())?;
            share(v / 100.0)
        } else if s.contains('.') {
            share(s.parse().map_err(|_| bad())?)
        } else {
            s.parse().map(RejectLimit::Rows).map_err(|_| bad())
        }
    }
}

impl fmt::Display for RejectLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectLimit::Rows(n) => write!(f, "{n} rows"),
            RejectLimit::Share(s) => write!(f, "{}% of the rows read", s * 100.0),
        }
    }
}

/// Why an import that ran to the end is not a success. Carries the summary, which the CLI still
/// prints.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    #[error(
        "{file}: none of its {read} rows could be loaded (see the rejects file); nothing was imported{kept}",
        kept = kept_note(summary)
    )]
    NothingLoaded {
        file: &'static str,
        read: u64,
        summary: Box<ImportSummary>,
    },
    #[error(
        "{rejected} of {read} rows were rejected, more than --max-rejects allows ({limit}); see the rejects file{kept}",
        kept = kept_note(summary)
    )]
    TooManyRejects {
        rejected: u64,
        read: u64,
        limit: RejectLimit,
        summary: Box<ImportSummary>,
    },
    #[error(
        "verify failed: the database does not hold exactly what was loaded{kept}",
        kept = kept_note(summary)
    )]
    VerifyFailed { summary: Box<ImportSummary> },
}

/// What happened to the database: nothing on PostgreSQL, the accepted rows on SQLite.
fn kept_note(summary: &ImportSummary) -> &'static str {
    if summary.backend == "postgres" {
        " (the database was left as it was)"
    } else {
        " (SQLite keeps the rows accepted; import again with --replace)"
    }
}

impl ImportFailure {
    pub fn exit_code(&self) -> u8 {
        match self {
            ImportFailure::NothingLoaded { .. } => 1,
            ImportFailure::TooManyRejects { .. } => 3,
            ImportFailure::VerifyFailed { .. } => 4,
        }
    }

    pub fn summary(&self) -> &ImportSummary {
        match self {
            ImportFailure::NothingLoaded { summary, .. }
            | ImportFailure::TooManyRejects { summary, .. }
            | ImportFailure::VerifyFailed { summary } => summary,
        }
    }

    pub fn exit(&self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}

/// Why the loaded files are not an import to keep.
#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    NothingLoaded { file: &'static str, read: u64 },
    TooManyRejects { rejected: u64, read: u64 },
}

/// Judges the loaded files before anything is committed: a file that had rows but loaded none
/// (checked first: it is the stronger signal), then the rejects limit.
pub(super) fn judge(files: &[FileSummary], limit: RejectLimit) -> Result<(), Refusal> {
    if let Some(f) = files.iter().find(|f| f.read > 0 && f.loaded == 0) {
        return Err(Refusal::NothingLoaded {
            file: f.file,
            read: f.read,
        });
    }
    let rejected: u64 = files.iter().map(|f| f.rejected).sum();
    let read: u64 = files.iter().map(|f| f.read).sum();
    if limit.allows(rejected, read) {
        Ok(())
    } else {
        Err(Refusal::TooManyRejects { rejected, read })
    }
}

impl Refusal {
    pub(super) fn into_failure(self, limit: RejectLimit, summary: ImportSummary) -> ImportFailure {
        let summary = Box::new(summary);
        match self {
            Refusal::NothingLoaded { file, read } => ImportFailure::NothingLoaded {
                file,
                read,
                summary,
            },
            Refusal::TooManyRejects { rejected, read } => ImportFailure::TooManyRejects {
                rejected,
                read,
                limit,
                summary,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(file: &'static str, read: u64, loaded: u64) -> FileSummary {
        FileSummary {
            file,
            read,
            loaded,
            rejected: read - loaded,
        }
    }

    #[test]
    fn limits_parse_as_rows_percentages_or_fractions() {
        assert_eq!("0".parse(), Ok(RejectLimit::Rows(0)));
        assert_eq!("250".parse(), Ok(RejectLimit::Rows(250)));
        assert_eq!("0.5%".parse(), Ok(RejectLimit::Share(0.005)));
        assert_eq!("100%".parse(), Ok(RejectLimit::ANY));
        assert_eq!("0.01".parse(), Ok(RejectLimit::Share(0.01)));
        for bad in ["", "-1", "abc", "150%", "1.5", "%"] {
            assert!(bad.parse::<RejectLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn by_default_one_rejected_row_fails_the_import() {
        let files = [
            file("reviews.csv", 10, 10),
            file("reviews_photos.csv", 5, 4),
        ];
        assert_eq!(
            judge(&files, RejectLimit::default()),
            Err(Refusal::TooManyRejects {
                rejected: 1,
                read: 15
            })
        );
        assert_eq!(judge(&files, RejectLimit::Rows(1)), Ok(()));
        assert_eq!(judge(&files, "10%".parse().unwrap()), Ok(()));
        assert!(judge(&files, "5%".parse().unwrap()).is_err());
    }

    #[test]
    fn a_file_with_rows_of_which_none_loaded_fails_whatever_the_limit() {
        // A header-only reviews.csv: every photo is an orphan.
        let files = [file("reviews.csv", 0, 0), file("reviews_photos.csv", 5, 0)];
        assert_eq!(
            judge(&files, RejectLimit::ANY),
            Err(Refusal::NothingLoaded {
                file: "reviews_photos.csv",
                read: 5
            })
        );
        // An empty set is not an error: there was nothing to load.
        let empty = [file("reviews.csv", 0, 0), file("reviews_photos.csv", 0, 0)];
        assert_eq!(judge(&empty, RejectLimit::default()), Ok(()));
    }
}
