//! Defect injection (`--defects <fraction>`): extra corrupted rows at known lines, and a
//! manifest (`defects.csv`: `file,line,class`) listing each, so a test can demand that the
//! importer's rejects match it line for line.
//!
//! Each defect row is an extra row that nothing else refers to (a fresh id, no photos or
//! ratings), so rejecting it cascades to nothing: the importer must reject exactly the
//! manifest. A defect row never spans lines, and an unterminated quote — which swallows
//! whatever follows — is only ever the last row of a file. Classes use the importer's reject
//! words ([`RejectClass`]); defect randomness comes from its own stream.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::output::{CsvOut, RowBuf};
use super::rng::Rng;
use crate::import::RejectClass;

/// The manifest's file name, written beside the four CSV files.
pub const MANIFEST: &str = "defects.csv";

/// Far beyond any generated id (the full set stops below 20 million): an orphan's parent.
const MISSING_PARENT: i64 = 10_000_000_000;

pub struct Defects {
    pub rng: Rng,
    per_million: u64,
    manifest: Option<BufWriter<File>>,
    pub count: u64,
}

impl Defects {
    /// No defects at all: nothing drawn, no manifest.
    pub fn none(seed: u64) -> Self {
        Defects {
            rng: Rng::new(seed, 1),
            per_million: 0,
            manifest: None,
            count: 0,
        }
    }

    pub fn create(dir: &Path, seed: u64, per_million: u64) -> io::Result<Self> {
        let mut manifest = BufWriter::new(File::create(dir.join(MANIFEST))?);
        writeln!(manifest, "file,line,class")?;
        Ok(Defects {
            rng: Rng::new(seed, 1),
            per_million,
            manifest: Some(manifest),
            count: 0,
        })
    }

    pub fn enabled(&self) -> bool {
        self.manifest.is_some()
    }

    /// Whether a defect row follows the clean row just written.
    pub fn roll(&mut self) -> bool {
        self.per_million > 0 && self.rng.chance(self.per_million)
    }

    fn record(&mut self, file: &str, line: u64, class: RejectClass) -> io::Result<()> {
        self.count += 1;
        match &mut self.manifest {
            Some(m) => writeln!(m, "{file},{line},{class}"),
            None => Ok(()),
        }
    }

    /// Writes `row`, corrupted as `class` says, and lists it.
    pub fn write(&mut self, out: &mut CsvOut, row: &RowBuf, class: RejectClass) -> io::Result<()> {
        let line = out.defect(row)?;
        self.record(out.name, line, class)
    }

    /// Ends `out` with a row whose quoted field never closes.
    pub fn unterminated(&mut self, out: &mut CsvOut, id: i64) -> io::Result<()> {
        let fields = match out.name {
            "reviews.csv" => format!(
                "{id},1,5,1609459200000,\"This summary never closes,true,false,x,y,null,0\n"
            ),
            "reviews_photos.csv" => {
                format!("{id},1,\"https://images.unsplash.com/photo-unterminated\n")
            }
            "characteristics.csv" => format!("{id},1,\"Fit\n"),
            _ => format!("{id},1,1,\"5\n"),
        };
        let line = out.defect_raw(fields.as_bytes())?;
        self.record(out.name, line, RejectClass::UnterminatedQuote)
    }

    pub fn finish(self) -> io::Result<()> {
        match self.manifest {
            Some(mut m) => m.flush(),
            None => Ok(()),
        }
    }
}

/// Corrupts a valid review row (built with a fresh id and no line break) as one class of
/// defect; returns the class. `dup` is the id of an earlier loaded review, if any.
pub fn corrupt_review(rng: &mut Rng, row: &mut RowBuf, dup: Option<i64>) -> RejectClass {
    use RejectClass::*;
    match rng.pick(&[
        Columns,
        BadInteger,
        OutOfRange,
        BadDate,
        BadUtf8,
        DuplicateId,
    ]) {
        Columns => {
            row.drop_last();
            Columns
        }
        BadInteger => {
            row.set(11, b"7x");
            BadInteger
        }
        OutOfRange => {
            row.set(2, b"9");
            OutOfRange
        }
        BadDate => {
            row.set(3, b"2021-03-17T13:28:37Z");
            BadDate
        }
        BadUtf8 => {
            row.set(4, b"\"Caf\xE9 au lait, tr\xE8s bien\"");
            BadUtf8
        }
        _ => duplicate_or_columns(row, dup),
    }
}

/// Points the parent id in `column` at a parent that does not exist.
fn orphan(rng: &mut Rng, row: &mut RowBuf, column: usize) -> RejectClass {
    let parent = MISSING_PARENT + rng.below(1000) as i64;
    row.set(column, parent.to_string().as_bytes());
    RejectClass::Orphan
}

pub fn corrupt_photo(rng: &mut Rng, row: &mut RowBuf, dup: Option<i64>) -> RejectClass {
    use RejectClass::*;
    match rng.pick(&[Columns, BadInteger, BadUtf8, DuplicateId, Orphan]) {
        Columns => {
            row.drop_last();
            Columns
        }
        BadInteger => {
            row.set(1, b"12a");
            BadInteger
        }
        BadUtf8 => {
            row.set(2, b"\"https://images.unsplash.com/photo-\xFF\xFE\"");
            BadUtf8
        }
        Orphan => orphan(rng, row, 1),
        _ => duplicate_or_columns(row, dup),
    }
}

pub fn corrupt_characteristic(rng: &mut Rng, row: &mut RowBuf, dup: Option<i64>) -> RejectClass {
    use RejectClass::*;
    match rng.pick(&[Columns, BadInteger, BadName, DuplicateId]) {
        Columns => {
            row.drop_last();
            Columns
        }
        BadInteger => {
            row.set(1, b"x9");
            BadInteger
        }
        BadName => {
            row.set(2, b"\"Colour\"");
            BadName
        }
        _ => duplicate_or_columns(row, dup),
    }
}

pub fn corrupt_rating(rng: &mut Rng, row: &mut RowBuf, dup: Option<i64>) -> RejectClass {
    use RejectClass::*;
    match rng.pick(&[Columns, BadInteger, OutOfRange, DuplicateId, Orphan]) {
        Columns => {
            row.drop_last();
            Columns
        }
        BadInteger => {
            row.set(3, b"4.5");
            BadInteger
        }
        OutOfRange => {
            row.set(3, b"9");
            OutOfRange
        }
        Orphan => orphan(rng, row, 2),
        _ => duplicate_or_columns(row, dup),
    }
}

/// The duplicate-id defect: the row takes the id of an earlier row. The first rows of a file
/// have no earlier id to copy, so they get a wrong column count instead.
fn duplicate_or_columns(row: &mut RowBuf, dup: Option<i64>) -> RejectClass {
    match dup {
        Some(id) => {
            row.set(0, id.to_string().as_bytes());
            RejectClass::DuplicateId
        }
        None => {
            row.drop_last();
            RejectClass::Columns
        }
    }
}
