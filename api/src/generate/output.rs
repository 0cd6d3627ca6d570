//! Writing the generated CSV files in the data set's exact format (text quoted with `""`
//! escapes, bare numbers, bare `true`/`false`, bare `null`), one row at a time through a
//! buffered writer, keeping the line number each row starts on so defects can be listed by
//! line.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::import::csv::write_quoted;

/// One row being built: each field already encoded as it will appear in the file, so a defect
/// can replace or remove a field afterwards.
#[derive(Debug, Default)]
pub struct RowBuf {
    fields: Vec<Vec<u8>>,
    len: usize,
}

impl RowBuf {
    pub fn clear(&mut self) {
        self.len = 0;
    }

    fn next_field(&mut self) -> &mut Vec<u8> {
        if self.len == self.fields.len() {
            self.fields.push(Vec::new());
        }
        let f = &mut self.fields[self.len];
        self.len += 1;
        f.clear();
        f
    }

    pub fn int(&mut self, n: i64) -> &mut Self {
        let f = self.next_field();
        // Writing into a Vec cannot fail.
        let _ = write!(f, "{n}");
        self
    }

    pub fn quoted(&mut self, s: &[u8]) -> &mut Self {
        write_quoted(self.next_field(), s);
        self
    }

    /// A field written as is (numbers, `true`/`false`, `null`, or deliberate garbage).
    pub fn bare(&mut self, s: &[u8]) -> &mut Self {
        self.next_field().extend_from_slice(s);
        self
    }

    pub fn boolean(&mut self, b: bool) -> &mut Self {
        self.bare(if b { b"true" } else { b"false" })
    }

    /// Replaces field `i` with `bytes`, written as is.
    pub fn set(&mut self, i: usize, bytes: &[u8]) {
        let f = &mut self.fields[i];
        f.clear();
        f.extend_from_slice(bytes);
    }

    pub fn drop_last(&mut self) {
        self.len = self.len.saturating_sub(1);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for (i, f) in self.fields[..self.len].iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(f);
        }
        out.push(b'\n');
    }
}

/// Rows written to one file, and how the importer should take them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileCounts {
    /// Data rows (records) written, header excluded.
    pub rows: u64,
    /// Rows the importer must load.
    pub clean: u64,
    /// Rows the importer must reject (listed in the manifest).
    pub defects: u64,
    pub bytes: u64,
}

/// One output file with its line counter.
pub struct CsvOut {
    pub name: &'static str,
    out: BufWriter<File>,
    /// Line number the next row starts on.
    next_line: u64,
    line: Vec<u8>,
    pub counts: FileCounts,
    /// Id of the last clean row: what a duplicate-id defect copies.
    pub last_clean_id: Option<i64>,
}

impl CsvOut {
    pub fn create(dir: &Path, name: &'static str, header: &[&str]) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(dir.join(name))?);
        let header = format!("{}\n", header.join(","));
        out.write_all(header.as_bytes())?;
        Ok(CsvOut {
            name,
            out,
            next_line: 2,
            line: Vec::new(),
            counts: FileCounts {
                bytes: header.len() as u64,
                ..Default::default()
            },
            last_clean_id: None,
        })
    }

    /// Writes a clean row with id `id`.
    pub fn clean(&mut self, row: &RowBuf, id: i64) -> io::Result<()> {
        self.write(row)?;
        self.counts.clean += 1;
        self.last_clean_id = Some(id);
        Ok(())
    }

    /// Writes a defective row; returns the line it starts on.
    pub fn defect(&mut self, row: &RowBuf) -> io::Result<u64> {
        let line = self.write(row)?;
        self.counts.defects += 1;
        Ok(line)
    }

    /// Writes raw bytes as a defective last row (an unterminated quote swallows the rest of
    /// the file, so nothing may follow it); returns its line.
    pub fn defect_raw(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let line = self.next_line;
        self.out.write_all(bytes)?;
        self.next_line += memchr::memchr_iter(b'\n', bytes).count() as u64;
        self.counts.rows += 1;
        self.counts.defects += 1;
        self.counts.bytes += bytes.len() as u64;
        Ok(line)
    }

    fn write(&mut self, row: &RowBuf) -> io::Result<u64> {
        self.line.clear();
        row.encode(&mut self.line);
        let line = self.next_line;
        self.out.write_all(&self.line)?;
        self.next_line += memchr::memchr_iter(b'\n', &self.line).count() as u64;
        self.counts.rows += 1;
        self.counts.bytes += self.line.len() as u64;
        Ok(line)
    }

    pub fn finish(mut self) -> io::Result<FileCounts> {
        self.out.flush()?;
        Ok(self.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_encoded_in_the_data_set_format() {
        let mut row = RowBuf::default();
        row.int(5)
            .quoted(b"say \"hi\", ok")
            .boolean(true)
            .bare(b"null");
        let mut out = Vec::new();
        row.encode(&mut out);
        assert_eq!(out, b"5,\"say \"\"hi\"\", ok\",true,null\n".to_vec());
        row.drop_last();
        row.set(0, b"x");
        out.clear();
        row.encode(&mut out);
        assert_eq!(out, b"x,\"say \"\"hi\"\", ok\",true\n".to_vec());
    }

    #[test]
    fn line_numbers_count_newlines_inside_quoted_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = CsvOut::create(dir.path(), "t.csv", &["a", "b"]).unwrap();
        let mut row = RowBuf::default();
        row.int(1).quoted(b"two\nlines");
        out.clean(&row, 1).unwrap();
        row.clear();
        row.int(2).quoted(b"x");
        assert_eq!(out.defect(&row).unwrap(), 4);
    }
}
