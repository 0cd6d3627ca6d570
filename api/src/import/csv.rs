//! A streaming RFC 4180 record reader over bytes.
//!
//! Written here rather than taken from the `csv` crate because the importer needs three things
//! that crate does not give: whether each field was quoted (the bare word `null` in `response`
//! is SQL NULL, a quoted `"null"` is text), a per-record error instead of a per-file one, and
//! resynchronisation at the next line after a quoting error, so one broken row costs one row.
//!
//! Rules:
//! - Records end at `\n` or `\r\n` outside quotes; a quoted field may span lines, and the record
//!   reports the line it starts on (1-based, the header is line 1).
//! - `""` inside a quoted field is one `"`. A `"` inside an unquoted field, or anything but `,`
//!   or a line end after a closing quote, is a [`CsvErrorKind::StrayQuote`].
//! - Blank lines carry no data and are skipped; a UTF-8 byte-order mark at the start is dropped.
//! - A quoting error (stray or unterminated quote, over-long record) rejects only the first
//!   physical line of the record and parsing restarts on the next line. A well-formed record
//!   with the wrong field count or bad UTF-8 is rejected whole, unless it spans lines: then a
//!   runaway quote is the likely cause, so it too is cut at its first line.
//!
//! Memory is bounded by [`DEFAULT_MAX_RECORD_BYTES`] plus one read chunk whatever the input.

use std::fmt;
use std::io::{self, Read};

use memchr::{memchr, memchr3};

/// Bytes read from the source at a time.
const CHUNK: usize = 256 * 1024;

/// Records longer than this are rejected; no real review is anywhere near it, so hitting it
/// means a runaway quote, and bounding it keeps memory flat and resynchronisation cheap.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// Why a record could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsvErrorKind {
    /// The record has a different number of fields than the header.
    FieldCount { expected: usize, found: usize },
    /// A quoted field still open at the end of the input.
    UnterminatedQuote,
    /// A `"` inside an unquoted field, or a character other than `,` or a line end after a
    /// closing quote. `field` is 0-based.
    StrayQuote { field: usize },
    /// Field `field` (0-based) is not valid UTF-8.
    BadUtf8 { field: usize },
    /// The record is longer than the reader's limit.
    TooLong { limit: usize },
}

impl fmt::Display for CsvErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CsvErrorKind::FieldCount { expected, found } => {
                write!(f, "expected {expected} fields, found {found}")
            }
            CsvErrorKind::UnterminatedQuote => f.write_str(
                "unterminated quoted field (no closing quote before the end of the file)",
            ),
            CsvErrorKind::StrayQuote { field } => write!(
                f,
                "misplaced quote in field {} (a quote inside an unquoted field, or text after a closing quote)",
                field + 1
            ),
            CsvErrorKind::BadUtf8 { field } => write!(f, "field {} is not valid UTF-8", field + 1),
            CsvErrorKind::TooLong { limit } => {
                write!(f, "record longer than {limit} bytes (runaway quote?)")
            }
        }
    }
}

/// A record that could not be read: where it starts, why, and its raw bytes (without the line
/// terminator; only the first line when the reader resynchronised there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    pub line: u64,
    pub kind: CsvErrorKind,
    pub raw: Vec<u8>,
}

/// What [`CsvReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A record was read into the caller's [`Record`].
    Record,
    /// A record was rejected; the reader has moved past it.
    Bad(BadRecord),
    /// The input is exhausted.
    End,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    quoted: bool,
}

/// One record's fields, unescaped and known to be UTF-8, plus its raw bytes. Reused between
/// calls so reading allocates nothing in the steady state.
#[derive(Clone, Debug, Default)]
pub struct Record {
    line: u64,
    text: String,
    spans: Vec<Span>,
    raw: Vec<u8>,
}

impl Record {
    /// The 1-based line number the record starts on.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Field `i` (0-based), unescaped. Panics if `i >= len()`, like slice indexing.
    pub fn field(&self, i: usize) -> &str {
        let s = self.spans[i];
        &self.text[s.start..s.end]
    }

    /// Whether field `i` was written between double quotes.
    pub fn is_quoted(&self, i: usize) -> bool {
        self.spans[i].quoted
    }

    /// The record's bytes as they appear in the input, without the line terminator.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Every field with its quoted flag, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, bool)> {
        self.spans
            .iter()
            .map(|s| (&self.text[s.start..s.end], s.quoted))
    }
}

/// The streaming reader. See the module docs for the rules.
pub struct CsvReader<R> {
    src: R,
    buf: Vec<u8>,
    /// Start of the next record in `buf`.
    pos: usize,
    eof: bool,
    /// Line number of the byte at `pos`.
    line: u64,
    started: bool,
    expected_fields: Option<usize>,
    max_record: usize,
}

enum Scan {
    NeedMore,
    /// A complete record: `end` is where its raw bytes stop (before the terminator), `next`
    /// where the following record starts.
    Done {
        end: usize,
        next: usize,
    },
    Bad(CsvErrorKind),
}

impl<R: Read> CsvReader<R> {
    pub fn new(src: R) -> Self {
        CsvReader {
            src,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            line: 1,
            started: false,
            expected_fields: None,
            max_record: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// Sets the record-length limit (bytes, without the terminator).
    pub fn with_max_record_bytes(mut self, limit: usize) -> Self {
        self.max_record = limit.max(1);
        self
    }

    /// From now on, a record with another number of fields is a [`CsvErrorKind::FieldCount`].
    pub fn expect_fields(&mut self, n: usize) {
        self.expected_fields = Some(n);
    }

    /// Reads the next record into `rec`. I/O errors end the file; anything wrong with the
    /// bytes themselves is a [`Next::Bad`] and reading can go on.
    pub fn next(&mut self, rec: &mut Record) -> io::Result<Next> {
        if !self.started {
            self.skip_bom()?;
        }
        let mut out = std::mem::take(&mut rec.text).into_bytes();
        let result = self.next_into(rec, &mut out);
        if !matches!(result, Ok(Next::Record)) {
            // No stale fields may be read after a bad record.
            rec.spans.clear();
        }
        if rec.text.is_empty() {
            // Hand the allocation back for the next call (only empty on the paths below that
            // did not store the record's text).
            out.clear();
            rec.text = String::from_utf8(out).unwrap_or_default();
        }
        result
    }

    fn next_into(&mut self, rec: &mut Record, out: &mut Vec<u8>) -> io::Result<Next> {
        loop {
            let avail = &self.buf[self.pos..];
            if avail.is_empty() {
                if self.eof {
                    return Ok(Next::End);
                }
                self.fill()?;
                continue;
            }
            // Scan no further than the limit (plus room for `\r\n`), so whether a long record
            // is "too long" or some other error never depends on how much happened to be read.
            let view = &avail[..avail.len().min(self.max_record.saturating_add(2))];
            let at_end = self.eof && view.len() == avail.len();
            match scan(view, at_end, out, &mut rec.spans) {
                Scan::NeedMore => {
                    if view.len() >= self.max_record.saturating_add(2) {
                        let kind = CsvErrorKind::TooLong {
                            limit: self.max_record,
                        };
                        return self.bad_first_line(kind).map(Next::Bad);
                    }
                    self.fill()?;
                }
                Scan::Bad(kind) => return self.bad_first_line(kind).map(Next::Bad),
                Scan::Done { end, next } => {
                    let raw = &avail[..end];
                    let blank = end == 0 || raw == b"\r";
                    if blank && rec.spans.len() == 1 && !rec.spans[0].quoted {
                        self.advance(next);
                        continue;
                    }
                    if end > self.max_record {
                        let kind = CsvErrorKind::TooLong {
                            limit: self.max_record,
                        };
                        return self.bad_first_line(kind).map(Next::Bad);
                    }
                    let multiline = memchr(b'\n', raw).is_some();
                    if let Some(expected) = self.expected_fields
                        && rec.spans.len() != expected
                    {
                        let kind = CsvErrorKind::FieldCount {
                            expected,
                            found: rec.spans.len(),
                        };
                        if multiline {
                            return self.bad_first_line(kind).map(Next::Bad);
                        }
                        return Ok(Next::Bad(self.bad_whole(kind, end, next)));
                    }
                    if let Some(field) = bad_utf8_field(out, &rec.spans) {
                        let kind = CsvErrorKind::BadUtf8 { field };
                        if multiline {
                            return self.bad_first_line(kind).map(Next::Bad);
                        }
                        return Ok(Next::Bad(self.bad_whole(kind, end, next)));
                    }
                    rec.line = self.line;
                    rec.raw.clear();
                    rec.raw.extend_from_slice(raw);
                    match String::from_utf8(std::mem::take(out)) {
                        Ok(text) => rec.text = text,
                        // Unreachable: bad_utf8_field checked the same bytes.
                        Err(e) => {
                            *out = e.into_bytes();
                            let kind = CsvErrorKind::BadUtf8 { field: 0 };
                            return Ok(Next::Bad(self.bad_whole(kind, end, next)));
                        }
                    }
                    self.advance(next);
                    return Ok(Next::Record);
                }
            }
        }
    }

    /// Moves past `n` bytes of `buf`, counting the lines they hold.
    fn advance(&mut self, n: usize) {
        let consumed = &self.buf[self.pos..self.pos + n];
        self.line += memchr::memchr_iter(b'\n', consumed).count() as u64;
        self.pos += n;
    }

    fn bad_whole(&mut self, kind: CsvErrorKind, end: usize, next: usize) -> BadRecord {
        let bad = BadRecord {
            line: self.line,
            kind,
            raw: self.buf[self.pos..self.pos + end].to_vec(),
        };
        self.advance(next);
        bad
    }

    /// Rejects the first physical line of the current record and resumes on the next line.
    fn bad_first_line(&mut self, kind: CsvErrorKind) -> io::Result<BadRecord> {
        let line = self.line;
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(k) = memchr(b'\n', avail) {
                // Cut like the skip below, so the report does not depend on read sizes.
                let line_bytes = strip_cr(&avail[..k]);
                let raw = line_bytes[..line_bytes.len().min(self.max_record)].to_vec();
                self.pos += k + 1;
                self.line += 1;
                return Ok(BadRecord { line, kind, raw });
            }
            if self.eof {
                let line_bytes = strip_cr(avail);
                let raw = line_bytes[..line_bytes.len().min(self.max_record)].to_vec();
                self.pos = self.buf.len();
                self.line += 1;
                return Ok(BadRecord { line, kind, raw });
            }
            if avail.len() > self.max_record {
                // One enormous line: keep its head for the report and skip the rest without
                // holding it in memory.
                let raw = avail[..self.max_record].to_vec();
                self.skip_past_newline()?;
                return Ok(BadRecord { line, kind, raw });
            }
            self.fill()?;
        }
    }

    fn skip_past_newline(&mut self) -> io::Result<()> {
        loop {
            if let Some(k) = memchr(b'\n', &self.buf[self.pos..]) {
                self.pos += k + 1;
                self.line += 1;
                return Ok(());
            }
            self.pos = self.buf.len();
            if self.eof {
                self.line += 1;
                return Ok(());
            }
            self.fill()?;
        }
    }

    fn skip_bom(&mut self) -> io::Result<()> {
        while self.buf.len() - self.pos < 3 && !self.eof {
            self.fill()?;
        }
        if self.buf[self.pos..].starts_with(b"\xEF\xBB\xBF") {
            self.pos += 3;
        }
        self.started = true;
        Ok(())
    }

    /// Reads one more chunk after the unread bytes, first moving those to the front.
    fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        loop {
            match self.src.read(&mut self.buf[len..]) {
                Ok(n) => {
                    self.buf.truncate(len + n);
                    self.eof = n == 0;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The first field that is not valid UTF-8 on its own. Checking the joined bytes once is
/// cheap, but fields are concatenated in `out`, so a character split across two fields would
/// pass; hence the boundary check per field.
fn bad_utf8_field(out: &[u8], spans: &[Span]) -> Option<usize> {
    match std::str::from_utf8(out) {
        Ok(text) => spans
            .iter()
            .position(|s| !text.is_char_boundary(s.start) || !text.is_char_boundary(s.end)),
        Err(e) => {
            let at = e.valid_up_to();
            Some(
                spans
                    .iter()
                    .position(|s| s.end > at)
                    .unwrap_or(spans.len().saturating_sub(1)),
            )
        }
    }
}

/// Parses one record from the start of `buf` into `out` (unescaped field bytes, concatenated)
/// and `spans`. Returns `NeedMore` when the record may continue past `buf` and the input is
/// not at its end; the caller then refills and scans again from the record's start.
fn scan(buf: &[u8], eof: bool, out: &mut Vec<u8>, spans: &mut Vec<Span>) -> Scan {
    out.clear();
    spans.clear();
    let mut i = 0;
    loop {
        let start = out.len();
        if buf.get(i) == Some(&b'"') {
            i += 1;
            loop {
                let Some(k) = memchr(b'"', &buf[i..]) else {
                    return if eof {
                        Scan::Bad(CsvErrorKind::UnterminatedQuote)
                    } else {
                        Scan::NeedMore
                    };
                };
                out.extend_from_slice(&buf[i..i + k]);
                i += k + 1;
                let span = Span {
                    start,
                    end: out.len(),
                    quoted: true,
                };
                match buf.get(i) {
                    Some(b'"') => {
                        out.push(b'"');
                        i += 1;
                    }
                    Some(b',') => {
                        spans.push(span);
                        i += 1;
                        break;
                    }
                    Some(b'\n') => {
                        spans.push(span);
                        return Scan::Done {
                            end: i,
                            next: i + 1,
                        };
                    }
                    Some(b'\r') => match buf.get(i + 1) {
                        Some(b'\n') => {
                            spans.push(span);
                            return Scan::Done {
                                end: i,
                                next: i + 2,
                            };
                        }
                        None if !eof => return Scan::NeedMore,
                        None => {
                            spans.push(span);
                            return Scan::Done {
                                end: i,
                                next: i + 1,
                            };
                        }
                        Some(_) => {
                            return Scan::Bad(CsvErrorKind::StrayQuote { field: spans.len() });
                        }
                    },
                    None if !eof => return Scan::NeedMore,
                    None => {
                        spans.push(span);
                        return Scan::Done { end: i, next: i };
                    }
                    Some(_) => return Scan::Bad(CsvErrorKind::StrayQuote { field: spans.len() }),
                }
            }
        } else {
            match memchr3(b',', b'\n', b'"', &buf[i..]) {
                Some(k) => {
                    let j = i + k;
                    match buf[j] {
                        b',' => {
                            out.extend_from_slice(&buf[i..j]);
                            spans.push(Span {
                                start,
                                end: out.len(),
                                quoted: false,
                            });
                            i = j + 1;
                        }
                        b'\n' => {
                            let end = if j > i && buf[j - 1] == b'\r' {
                                j - 1
                            } else {
                                j
                            };
                            out.extend_from_slice(&buf[i..end]);
                            spans.push(Span {
                                start,
                                end: out.len(),
                                quoted: false,
                            });
                            return Scan::Done { end, next: j + 1 };
                        }
                        _ => return Scan::Bad(CsvErrorKind::StrayQuote { field: spans.len() }),
                    }
                }
                None if !eof => return Scan::NeedMore,
                None => {
                    let end = if buf.len() > i && buf[buf.len() - 1] == b'\r' {
                        buf.len() - 1
                    } else {
                        buf.len()
                    };
                    out.extend_from_slice(&buf[i..end]);
                    spans.push(Span {
                        start,
                        end: out.len(),
                        quoted: false,
                    });
                    return Scan::Done {
                        end,
                        next: buf.len(),
                    };
                }
            }
        }
    }
}

/// Appends `s` as a quoted RFC 4180 field (quotes doubled). Used by the rejects report and the
/// generator, so what we write is exactly what we read.
pub fn write_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut rest = s;
    while let Some(k) = memchr(b'"', rest) {
        out.extend_from_slice(&rest[..=k]);
        out.push(b'"');
        rest = &rest[k + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads everything: records as (line, [(field, quoted)]) and errors as (line, kind, raw).
    #[allow(clippy::type_complexity)]
    fn read_all(
        input: &[u8],
        expected: Option<usize>,
    ) -> (Vec<(u64, Vec<(String, bool)>)>, Vec<BadRecord>) {
        read_all_with(input, expected, DEFAULT_MAX_RECORD_BYTES)
    }

    #[allow(clippy::type_complexity)]
    fn read_all_with(
        input: &[u8],
        expected: Option<usize>,
        limit: usize,
    ) -> (Vec<(u64, Vec<(String, bool)>)>, Vec<BadRecord>) {
        let mut reader = CsvReader::new(input).with_max_record_bytes(limit);
        if let Some(n) = expected {
            reader.expect_fields(n);
        }
        let mut rec = Record::default();
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        loop {
            match reader.next(&mut rec).unwrap() {
                Next::Record => good.push((
                    rec.line(),
                    rec.fields().map(|(f, q)| (f.to_owned(), q)).collect(),
                )),
                Next::Bad(b) => bad.push(b),
                Next::End => return (good, bad),
            }
        }
    }

    fn f(s: &str, quoted: bool) -> (String, bool) {
        (s.to_owned(), quoted)
    }

    #[test]
    fn quoted_and_unquoted_fields_keep_their_quoted_flag() {
        let (good, bad) = read_all(b"1,\"null\",null\n", None);
        assert!(bad.is_empty());
        assert_eq!(
            good,
            vec![(1, vec![f("1", false), f("null", true), f("null", false)])]
        );
    }

    #[test]
    fn doubled_quotes_commas_and_newlines_inside_quotes_are_data() {
        let (good, bad) = read_all(b"a,\"say \"\"hi\"\", then\nbye\"\nnext,2\n", None);
        assert!(bad.is_empty());
        assert_eq!(
            good,
            vec![
                (1, vec![f("a", false), f("say \"hi\", then\nbye", true)]),
                (3, vec![f("next", false), f("2", false)]),
            ]
        );
    }

    #[test]
    fn crlf_line_ends_are_not_part_of_the_last_field() {
        let (good, _) = read_all(b"a,b\r\n\"c\",d\r\n", None);
        assert_eq!(
            good,
            vec![
                (1, vec![f("a", false), f("b", false)]),
                (2, vec![f("c", true), f("d", false)])
            ]
        );
    }

    #[test]
    fn a_last_record_without_a_line_end_is_read() {
        let (good, _) = read_all(b"a\nb,\"c\"", None);
        assert_eq!(
            good,
            vec![
                (1, vec![f("a", false)]),
                (2, vec![f("b", false), f("c", true)])
            ]
        );
    }

    #[test]
    fn blank_lines_are_skipped_but_counted() {
        let (good, _) = read_all(b"a\n\n\r\nb\n", None);
        assert_eq!(
            good,
            vec![(1, vec![f("a", false)]), (4, vec![f("b", false)])]
        );
    }

    #[test]
    fn a_byte_order_mark_is_dropped() {
        let (good, _) = read_all(b"\xEF\xBB\xBFid,x\n", None);
        assert_eq!(good, vec![(1, vec![f("id", false), f("x", false)])]);
    }

    #[test]
    fn wrong_field_count_rejects_the_record_and_reading_goes_on() {
        let (good, bad) = read_all(b"1,2\n1,2,3\n4,5\n", Some(2));
        assert_eq!(good.len(), 2);
        assert_eq!(
            bad,
            vec![BadRecord {
                line: 2,
                kind: CsvErrorKind::FieldCount {
                    expected: 2,
                    found: 3
                },
                raw: b"1,2,3".to_vec()
            }]
        );
    }

    #[test]
    fn an_unterminated_quote_rejects_its_first_line_and_the_rest_is_read_again() {
        let (good, bad) = read_all(b"1,2\n3,\"oops\n5,6\n", Some(2));
        assert_eq!(
            good,
            vec![
                (1, vec![f("1", false), f("2", false)]),
                (3, vec![f("5", false), f("6", false)])
            ]
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 2);
        assert_eq!(bad[0].kind, CsvErrorKind::UnterminatedQuote);
        assert_eq!(bad[0].raw, b"3,\"oops".to_vec());
    }

    #[test]
    fn a_runaway_quote_that_closes_later_costs_only_its_first_line() {
        // The quote opened on line 2 closes on line 3 and is followed by text: a stray quote.
        let (good, bad) = read_all(b"1,\"a\"\n2,\"b\n3,\"c\"\n4,\"d\"\n", Some(2));
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 2);
        assert_eq!(
            good.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            vec![1, 3, 4]
        );
    }

    #[test]
    fn a_multiline_record_with_the_wrong_field_count_is_cut_at_its_first_line() {
        let (good, bad) = read_all(b"1,\"a\n2,b\",c\n3,x\n", Some(2));
        assert_eq!(bad.len(), 2);
        assert_eq!((bad[0].line, bad[0].raw.as_slice()), (1, &b"1,\"a"[..]));
        // Line 2 is then read on its own: `b"` is a stray quote. Line 3 survives.
        assert_eq!(
            (bad[1].line, bad[1].kind),
            (2, CsvErrorKind::StrayQuote { field: 1 })
        );
        assert_eq!(good.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_is_a_stray_quote() {
        let (_, bad) = read_all(b"ab\"c,d\n", None);
        assert_eq!(bad[0].kind, CsvErrorKind::StrayQuote { field: 0 });
        let (_, bad) = read_all(b"x,\"ab\"c\n", None);
        assert_eq!(bad[0].kind, CsvErrorKind::StrayQuote { field: 1 });
    }

    #[test]
    fn bad_utf8_names_the_field_and_keeps_the_raw_bytes() {
        let (good, bad) = read_all(b"1,\"caf\xE9\"\n2,\"ok\"\n", Some(2));
        assert_eq!(good.len(), 1);
        assert_eq!(bad[0].kind, CsvErrorKind::BadUtf8 { field: 1 });
        assert_eq!(bad[0].raw, b"1,\"caf\xE9\"".to_vec());
    }

    #[test]
    fn a_character_split_across_two_fields_is_bad_utf8() {
        // 0xC3 0xA9 is `é`, but split by a comma it is two invalid halves.
        let (_, bad) = read_all(b"\xC3,\xA9\n", None);
        assert_eq!(bad[0].kind, CsvErrorKind::BadUtf8 { field: 0 });
    }

    #[test]
    fn an_overlong_record_is_rejected_without_holding_the_line() {
        let mut input = b"1,2\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.extend_from_slice(b"\n3,4\n");
        let (good, bad) = read_all_with(&input, Some(2), 100);
        assert_eq!(good.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(bad[0].kind, CsvErrorKind::TooLong { limit: 100 });
        assert_eq!(bad[0].raw.len(), 100);
    }

    #[test]
    fn records_larger_than_a_read_chunk_are_read_whole() {
        let body = "y".repeat(3 * CHUNK / 2);
        let input = format!("1,\"{body}\"\n2,x\n");
        let (good, bad) = read_all(input.as_bytes(), Some(2));
        assert!(bad.is_empty());
        assert_eq!(good[0].1[1].0.len(), body.len());
        assert_eq!(good[1].0, 2);
    }

    #[test]
    fn write_quoted_doubles_quotes() {
        let mut out = Vec::new();
        write_quoted(&mut out, b"a\"b");
        assert_eq!(out, b"\"a\"\"b\"".to_vec());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Yields its input a few bytes at a time, so records straddle every read boundary.
        struct Trickle<'a> {
            data: &'a [u8],
            step: usize,
        }

        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.step.min(buf.len()).min(self.data.len());
                buf[..n].copy_from_slice(&self.data[..n]);
                self.data = &self.data[n..];
                Ok(n)
            }
        }

        #[allow(clippy::type_complexity)]
        fn read_from(
            src: impl Read,
            expected: Option<usize>,
            limit: usize,
        ) -> (Vec<(u64, Vec<(String, bool)>)>, Vec<BadRecord>) {
            let mut reader = CsvReader::new(src).with_max_record_bytes(limit);
            if let Some(n) = expected {
                reader.expect_fields(n);
            }
            let mut rec = Record::default();
            let (mut good, mut bad) = (Vec::new(), Vec::new());
            loop {
                match reader.next(&mut rec).unwrap() {
                    Next::Record => good.push((
                        rec.line(),
                        rec.fields().map(|(f, q)| (f.to_owned(), q)).collect(),
                    )),
                    Next::Bad(b) => bad.push(b),
                    Next::End => return (good, bad),
                }
            }
        }

        fn field() -> impl Strategy<Value = (String, bool)> {
            prop_oneof![
                // Unquoted fields cannot hold a separator, quote or line end (nor start the file
                // with a byte-order mark).
                "[^,\"\r\n\u{FEFF}]{0,12}".prop_map(|s| (s, false)),
                any::<String>().prop_map(|s| (s, true)),
                "[a\",\r\n ]{0,8}".prop_map(|s| (s, true)),
            ]
        }

        fn records() -> impl Strategy<Value = Vec<Vec<(String, bool)>>> {
            // A record of one empty unquoted field is a blank line, which carries no record.
            let record = prop::collection::vec(field(), 1..6).prop_filter("blank line", |r| {
                r.len() > 1 || r[0].1 || !r[0].0.is_empty()
            });
            prop::collection::vec(record, 0..8)
        }

        /// Writes records RFC 4180 style; returns the bytes and each record's first line.
        fn write(
            records: &[Vec<(String, bool)>],
            crlf: bool,
            final_newline: bool,
        ) -> (Vec<u8>, Vec<u64>) {
            let (mut out, mut lines, mut line) = (Vec::new(), Vec::new(), 1);
            for (i, rec) in records.iter().enumerate() {
                lines.push(line);
                let start = out.len();
                for (j, (text, quoted)) in rec.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    if *quoted {
                        write_quoted(&mut out, text.as_bytes());
                    } else {
                        out.extend_from_slice(text.as_bytes());
                    }
                }
                if i + 1 < records.len() || final_newline {
                    out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
                line += out[start..].iter().filter(|&&b| b == b'\n').count() as u64;
            }
            (out, lines)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn written_records_read_back_identically(
                records in records(),
                crlf: bool,
                final_newline: bool,
                step in 1usize..9,
            ) {
                let (bytes, lines) = write(&records, crlf, final_newline);
                let expected: Vec<_> = lines.into_iter().zip(records).collect();
                let (good, bad) = read_from(bytes.as_slice(), None, DEFAULT_MAX_RECORD_BYTES);
                prop_assert!(bad.is_empty(), "{bad:?}");
                prop_assert_eq!(&good, &expected);
                // The same through tiny reads: read boundaries change nothing.
                let (good, _) = read_from(Trickle { data: &bytes, step }, None, DEFAULT_MAX_RECORD_BYTES);
                prop_assert_eq!(&good, &expected);
            }

            #[test]
            fn arbitrary_bytes_never_panic_and_always_end(
                bytes in prop::collection::vec(any::<u8>(), 0..600),
                expected in prop::option::of(1usize..5),
                limit in 1usize..300,
                step in 1usize..9,
            ) {
                let (good, bad) = read_from(bytes.as_slice(), expected, limit);
                for b in &bad {
                    prop_assert!(b.raw.len() <= bytes.len());
                }
                // Line numbers only move forward.
                let mut lines: Vec<u64> = good.iter().map(|(l, _)| *l).chain(bad.iter().map(|b| b.line)).collect();
                let n = lines.len();
                lines.sort_unstable();
                lines.dedup();
                prop_assert_eq!(lines.len(), n);
                // Read boundaries do not change the outcome.
                let (good2, bad2) = read_from(Trickle { data: &bytes, step }, expected, limit);
                prop_assert_eq!(good, good2);
                prop_assert_eq!(bad, bad2);
            }

            #[test]
            fn quote_soup_never_panics(bytes in "[a\",\r\n\u{e9}]{0,200}", expected in prop::option::of(1usize..4)) {
                let _ = read_from(bytes.as_bytes(), expected, 64);
            }
        }
    }
}
