//! The rejects report: one CSV line per row that was not loaded, saying where it was, why, and
//! what it held, so an operator can fix the data and a test can check every row is accounted
//! for. Columns: `file,line,class,reason,raw`. `class` is a stable machine-readable word (see
//! [`RejectClass`]); `reason` is for people; `raw` is the row as read (invalid UTF-8 shown as
//! U+FFFD; a row cut at a quoting error holds only its first line).

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::csv::{CsvErrorKind, CsvReader, Next, Record, write_quoted};

/// The header of the rejects file.
pub const REJECTS_HEADER: &str = "file,line,class,reason,raw";

/// Why a row was not loaded, as a stable word for machines (the generator's defect manifest
/// uses the same words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectClass {
    /// Wrong number of fields.
    Columns,
    /// A quoted field never closed.
    UnterminatedQuote,
    /// A quote where RFC 4180 allows none.
    StrayQuote,
    /// Bytes that are not UTF-8.
    BadUtf8,
    /// Longer than the reader's record limit.
    TooLong,
    /// Not an integer (`5.5`, `abc`, empty).
    BadInteger,
    /// An integer outside its column's range (rating 9, id 0, negative helpfulness).
    OutOfRange,
    /// Not epoch milliseconds within 1970..=9999.
    BadDate,
    /// Not the bare word `true` or `false`.
    BadBoolean,
    /// A characteristic name outside Fit, Length, Comfort, Quality, Size, Width.
    BadName,
    /// Text the database cannot hold (a NUL character).
    BadText,
    /// The bare word `null` in a column that must have a value.
    NullValue,
    /// An id already loaded from an earlier line of the same file.
    DuplicateId,
    /// Refers to a review or characteristic that was not loaded.
    Orphan,
    /// A characteristic rating whose characteristic belongs to another product than its review.
    ProductMismatch,
}

impl RejectClass {
    pub const ALL: [RejectClass; 15] = [
        RejectClass::Columns,
        RejectClass::UnterminatedQuote,
        RejectClass::StrayQuote,
        RejectClass::BadUtf8,
        RejectClass::TooLong,
        RejectClass::BadInteger,
        RejectClass::OutOfRange,
        RejectClass::BadDate,
        RejectClass::BadBoolean,
        RejectClass::BadName,
        RejectClass::BadText,
        RejectClass::NullValue,
        RejectClass::DuplicateId,
        RejectClass::Orphan,
        RejectClass::ProductMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectClass::Columns => "columns",
            RejectClass::UnterminatedQuote => "unterminated_quote",
            RejectClass::StrayQuote => "stray_quote",
            RejectClass::BadUtf8 => "bad_utf8",
            RejectClass::TooLong => "too_long",
            RejectClass::BadInteger => "bad_integer",
            RejectClass::OutOfRange => "out_of_range",
            RejectClass::BadDate => "bad_date",
            RejectClass::BadBoolean => "bad_boolean",
            RejectClass::BadName => "bad_name",
            RejectClass::BadText => "bad_text",
            RejectClass::NullValue => "null_value",
            RejectClass::DuplicateId => "duplicate_id",
            RejectClass::Orphan => "orphan",
            RejectClass::ProductMismatch => "product_mismatch",
        }
    }
}

impl fmt::Display for RejectClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RejectClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RejectClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown reject class {s:?}"))
    }
}

impl From<CsvErrorKind> for RejectClass {
    fn from(kind: CsvErrorKind) -> Self {
        match kind {
            CsvErrorKind::FieldCount { .. } => RejectClass::Columns,
            CsvErrorKind::UnterminatedQuote => RejectClass::UnterminatedQuote,
            CsvErrorKind::StrayQuote { .. } => RejectClass::StrayQuote,
            CsvErrorKind::BadUtf8 { .. } => RejectClass::BadUtf8,
            CsvErrorKind::TooLong { .. } => RejectClass::TooLong,
        }
    }
}

/// A row that failed a rule: the class and a sentence naming the column and the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub class: RejectClass,
    pub reason: String,
}

impl Reject {
    pub fn new(class: RejectClass, reason: impl Into<String>) -> Self {
        Reject {
            class,
            reason: reason.into(),
        }
    }
}

/// Writes the rejects report as rows are rejected (streamed, never held in memory).
pub struct RejectsWriter {
    out: BufWriter<File>,
    path: PathBuf,
    line: Vec<u8>,
}

impl RejectsWriter {
    /// Creates (or truncates) the report and writes its header.
    pub fn create(path: &Path) -> io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "{REJECTS_HEADER}")?;
        Ok(RejectsWriter {
            out,
            path: path.to_owned(),
            line: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(
        &mut self,
        file: &str,
        line: u64,
        class: RejectClass,
        reason: &str,
        raw: &[u8],
    ) -> io::Result<()> {
        let l = &mut self.line;
        l.clear();
        l.extend_from_slice(file.as_bytes());
        l.push(b',');
        l.extend_from_slice(line.to_string().as_bytes());
        l.push(b',');
        l.extend_from_slice(class.as_str().as_bytes());
        l.push(b',');
        write_quoted(l, reason.as_bytes());
        l.push(b',');
        write_quoted(l, String::from_utf8_lossy(raw).as_bytes());
        l.push(b'\n');
        self.out.write_all(l)
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()
    }
}

/// One line of a rejects report, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectEntry {
    pub file: String,
    pub line: u64,
    pub class: RejectClass,
    pub reason: String,
    pub raw: String,
}

/// Reads a rejects report (for tests and tools that check an import).
pub fn read_rejects(path: &Path) -> anyhow::Result<Vec<RejectEntry>> {
    use anyhow::{Context, bail};
    let mut reader =
        CsvReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    reader.expect_fields(5);
    let mut rec = Record::default();
    let mut entries = Vec::new();
    let mut header = true;
    loop {
        match reader.next(&mut rec)? {
            Next::End => return Ok(entries),
            Next::Bad(bad) => bail!("{}: line {}: {}", path.display(), bad.line, bad.kind),
            Next::Record if header => header = false,
            Next::Record => entries.push(RejectEntry {
                file: rec.field(0).to_owned(),
                line: rec
                    .field(1)
                    .parse()
                    .with_context(|| format!("line {}: bad line number", rec.line()))?,
                class: rec.field(2).parse().map_err(anyhow::Error::msg)?,
                reason: rec.field(3).to_owned(),
                raw: rec.field(4).to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_parses_back_from_its_word() {
        for class in RejectClass::ALL {
            assert_eq!(class.as_str().parse::<RejectClass>(), Ok(class));
        }
    }

    #[test]
    fn a_written_report_reads_back_with_quotes_commas_and_newlines_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejects.csv");
        let mut w = RejectsWriter::create(&path).unwrap();
        w.write(
            "reviews.csv",
            7,
            RejectClass::OutOfRange,
            "rating must be 1..=5, got 9",
            b"1,\"a, \"\"b\"\"\nc\"",
        )
        .unwrap();
        w.write(
            "reviews.csv",
            9,
            RejectClass::BadUtf8,
            "field 2 is not valid UTF-8",
            b"x\xFFy",
        )
        .unwrap();
        w.finish().unwrap();
        let got = read_rejects(&path).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].line, 7);
        assert_eq!(got[0].class, RejectClass::OutOfRange);
        assert_eq!(got[0].raw, "1,\"a, \"\"b\"\"\nc\"");
        assert_eq!(got[1].raw, "x\u{FFFD}y");
    }
}
