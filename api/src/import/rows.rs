//! Typed rows of the four files, parsed from CSV records and checked against the rules of
//! `spec/data-format.md` before anything reaches a database (PostgreSQL aborts a whole `COPY` on
//! one bad row, so nothing may be left for the database to find).
//!
//! Decisions the spec leaves open:
//! - Quoting matters only for `response`: a bare `null` there is SQL NULL, a quoted `"null"` is
//!   text. Numbers and booleans are accepted quoted or not; a bare `null` in any other column
//!   is rejected (`null_value`), since every other column is NOT NULL.
//! - Integers are ASCII digits with an optional leading `-` (no `+`, spaces or decimals);
//!   ranges: ids and `product_id` ≥ 1, `rating`/`value` 1..=5, `helpfulness` 0..=2³¹−1
//!   (PostgreSQL INTEGER), `date` 0..=253402300799999 (1970 to the end of year 9999, so every
//!   date formats as a 4-digit-year ISO string).
//! - Characteristic names are matched without regard to case and stored in the canonical
//!   spelling (`fit` → `Fit`), so the API's keys stay one of the six names.
//! - Text containing U+0000 is rejected (`bad_text`): PostgreSQL TEXT cannot hold it, and both
//!   backends must load the same rows.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::csv::Record;
use super::rejects::{Reject, RejectClass};

/// The characteristic names of the data set, in their canonical spelling.
pub const CHARACTERISTIC_NAMES: [&str; 6] =
    ["Fit", "Length", "Comfort", "Quality", "Size", "Width"];

/// Latest accepted date: 9999-12-31T23:59:59.999Z in epoch milliseconds.
pub const MAX_DATE_MS: i64 = 253_402_300_799_999;

/// What every file's row type provides to the loader.
pub trait CsvRow: Hash + Sized + Send + 'static {
    /// File name inside the data folder.
    const FILE: &'static str;
    /// Database table.
    const TABLE: &'static str;
    /// Exact header of the file.
    const HEADER: &'static [&'static str];
    /// Database columns, in the order rows are bound or copied.
    const COLUMNS: &'static [&'static str];

    /// Parses and validates one record (whose field count the reader already checked).
    fn parse(rec: &Record) -> Result<Self, Reject>;

    fn id(&self) -> i64;

    /// An order-independent checksum contribution of the loaded values (for `--verify`).
    fn digest(&self) -> u64 {
        // SipHash with fixed keys: the same within a process run, which is all verify needs
        // (both sides are hashed by the same process).
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReviewRow {
    pub id: i64,
    pub product_id: i64,
    pub rating: i64,
    pub date_ms: i64,
    pub summary: String,
    pub body: String,
    pub recommend: bool,
    pub reported: bool,
    pub reviewer_name: String,
    pub reviewer_email: String,
    pub response: Option<String>,
    pub helpfulness: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PhotoRow {
    pub id: i64,
    pub review_id: i64,
    pub url: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CharacteristicRow {
    pub id: i64,
    pub product_id: i64,
    /// One of [`CHARACTERISTIC_NAMES`].
    pub name: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CharacteristicReviewRow {
    pub id: i64,
    pub characteristic_id: i64,
    pub review_id: i64,
    pub value: i64,
}

impl CsvRow for ReviewRow {
    const FILE: &'static str = "reviews.csv";
    const TABLE: &'static str = "reviews";
    const HEADER: &'static [&'static str] = &[
        "id",
        "product_id",
        "rating",
        "date",
        "summary",
        "body",
        "recommend",
        "reported",
        "reviewer_name",
        "reviewer_email",
        "response",
        "helpfulness",
    ];
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "product_id",
        "rating",
        "date_ms",
        "summary",
        "body",
        "recommend",
        "reported",
        "reviewer_name",
        "reviewer_email",
        "response",
        "helpfulness",
    ];

    fn parse(rec: &Record) -> Result<Self, Reject> {
        let f = Fields::new(rec, Self::HEADER);
        Ok(ReviewRow {
            id: f.id(0)?,
            product_id: f.id(1)?,
            rating: f.int_in(2, 1, 5)?,
            date_ms: f.date(3)?,
            summary: f.text(4)?,
            body: f.text(5)?,
            recommend: f.boolean(6)?,
            reported: f.boolean(7)?,
            reviewer_name: f.text(8)?,
            reviewer_email: f.text(9)?,
            response: f.nullable_text(10)?,
            helpfulness: f.int_in(11, 0, i32::MAX as i64)?,
        })
    }

    fn id(&self) -> i64 {
        self.id
    }
}

impl CsvRow for PhotoRow {
    const FILE: &'static str = "reviews_photos.csv";
    const TABLE: &'static str = "reviews_photos";
    const HEADER: &'static [&'static str] = &["id", "review_id", "url"];
    const COLUMNS: &'static [&'static str] = &["id", "review_id", "url"];

    fn parse(rec: &Record) -> Result<Self, Reject> {
        let f = Fields::new(rec, Self::HEADER);
        Ok(PhotoRow {
            id: f.id(0)?,
            review_id: f.id(1)?,
            url: f.text(2)?,
        })
    }

    fn id(&self) -> i64 {
        self.id
    }
}

impl CsvRow for CharacteristicRow {
    const FILE: &'static str = "characteristics.csv";
    const TABLE: &'static str = "characteristics";
    const HEADER: &'static [&'static str] = &["id", "product_id", "name"];
    const COLUMNS: &'static [&'static str] = &["id", "product_id", "name"];

    fn parse(rec: &Record) -> Result<Self, Reject> {
        let f = Fields::new(rec, Self::HEADER);
        Ok(CharacteristicRow {
            id: f.id(0)?,
            product_id: f.id(1)?,
            name: f.name(2)?,
        })
    }

    fn id(&self) -> i64 {
        self.id
    }
}

impl CsvRow for CharacteristicReviewRow {
    const FILE: &'static str = "characteristic_reviews.csv";
    const TABLE: &'static str = "characteristic_reviews";
    const HEADER: &'static [&'static str] = &["id", "characteristic_id", "review_id", "value"];
    const COLUMNS: &'static [&'static str] = &["id", "characteristic_id", "review_id", "value"];

    fn parse(rec: &Record) -> Result<Self, Reject> {
        let f = Fields::new(rec, Self::HEADER);
        Ok(CharacteristicReviewRow {
            id: f.id(0)?,
            characteristic_id: f.id(1)?,
            review_id: f.id(2)?,
            value: f.int_in(3, 1, 5)?,
        })
    }

    fn id(&self) -> i64 {
        self.id
    }
}

/// Field access that names the column in every rejection.
struct Fields<'a> {
    rec: &'a Record,
    header: &'static [&'static str],
}

impl<'a> Fields<'a> {
    fn new(rec: &'a Record, header: &'static [&'static str]) -> Self {
        Fields { rec, header }
    }

    fn raw(&self, i: usize) -> &str {
        self.rec.field(i)
    }

    fn is_bare_null(&self, i: usize) -> bool {
        !self.rec.is_quoted(i) && self.raw(i) == "null"
    }

    fn null_check(&self, i: usize) -> Result<(), Reject> {
        if self.is_bare_null(i) {
            return Err(Reject::new(
                RejectClass::NullValue,
                format!("{} is null (only response may be null)", self.header[i]),
            ));
        }
        Ok(())
    }

    fn integer(&self, i: usize) -> Result<i64, Reject> {
        self.null_check(i)?;
        let s = self.raw(i);
        parse_integer(s).map_err(|class| {
            let what = if class == RejectClass::BadInteger {
                "is not an integer"
            } else {
                "is out of range"
            };
            Reject::new(class, format!("{} {what}: {}", self.header[i], shorten(s)))
        })
    }

    fn int_in(&self, i: usize, min: i64, max: i64) -> Result<i64, Reject> {
        let n = self.integer(i)?;
        if n < min || n > max {
            let range = if max == i32::MAX as i64 {
                format!("≥ {min}")
            } else {
                format!("{min}..={max}")
            };
            return Err(Reject::new(
                RejectClass::OutOfRange,
                format!("{} must be {range}, got {n}", self.header[i]),
            ));
        }
        Ok(n)
    }

    fn id(&self, i: usize) -> Result<i64, Reject> {
        self.int_in(i, 1, i64::MAX)
    }

    fn date(&self, i: usize) -> Result<i64, Reject> {
        self.null_check(i)?;
        let s = self.raw(i);
        match parse_integer(s) {
            Ok(ms) if (0..=MAX_DATE_MS).contains(&ms) => Ok(ms),
            Ok(ms) => Err(Reject::new(
                RejectClass::BadDate,
                format!(
                    "{} out of range (epoch milliseconds from 1970 to 9999): {ms}",
                    self.header[i]
                ),
            )),
            Err(_) => Err(Reject::new(
                RejectClass::BadDate,
                format!(
                    "{} is not epoch milliseconds: {}",
                    self.header[i],
                    shorten(s)
                ),
            )),
        }
    }

    fn boolean(&self, i: usize) -> Result<bool, Reject> {
        match self.raw(i) {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(Reject::new(
                RejectClass::BadBoolean,
                format!(
                    "{} must be true or false, got {}",
                    self.header[i],
                    shorten(other)
                ),
            )),
        }
    }

    fn text(&self, i: usize) -> Result<String, Reject> {
        self.null_check(i)?;
        self.checked_text(i)
    }

    fn nullable_text(&self, i: usize) -> Result<Option<String>, Reject> {
        if self.is_bare_null(i) {
            return Ok(None);
        }
        self.checked_text(i).map(Some)
    }

    fn checked_text(&self, i: usize) -> Result<String, Reject> {
        let s = self.raw(i);
        if s.contains('\0') {
            return Err(Reject::new(
                RejectClass::BadText,
                format!("{} contains a NUL character", self.header[i]),
            ));
        }
        Ok(s.to_owned())
    }

    fn name(&self, i: usize) -> Result<&'static str, Reject> {
        self.null_check(i)?;
        let s = self.raw(i);
        CHARACTERISTIC_NAMES
            .into_iter()
            .find(|n| n.eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Reject::new(
                    RejectClass::BadName,
                    format!(
                        "{} must be one of {}, got {}",
                        self.header[i],
                        CHARACTERISTIC_NAMES.join(", "),
                        shorten(s)
                    ),
                )
            })
    }
}

/// `-?[0-9]+` within i64; `BadInteger` for other text, `OutOfRange` for overflow.
fn parse_integer(s: &str) -> Result<i64, RejectClass> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RejectClass::BadInteger);
    }
    s.parse::<i64>().map_err(|_| RejectClass::OutOfRange)
}

/// A value quoted in a reason, cut so one absurd field cannot bloat the report.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::csv::{CsvReader, Next};

    fn record(line: &str) -> Record {
        let mut reader = CsvReader::new(line.as_bytes());
        let mut rec = Record::default();
        assert_eq!(reader.next(&mut rec).unwrap(), Next::Record);
        rec
    }

    const GOOD_REVIEW: &str = "5,2,3,1615987717620,\"I'm enjoying wearing these shades\",\"Comfortable and practical.\",true,false,\"shortandsweeet\",\"first.last@gmail.com\",null,5";

    fn review_with(col: usize, value: &str) -> Result<ReviewRow, Reject> {
        let mut fields: Vec<String> = record(GOOD_REVIEW)
            .fields()
            .map(|(f, q)| if q { format!("\"{f}\"") } else { f.to_owned() })
            .collect();
        fields[col] = value.to_owned();
        ReviewRow::parse(&record(&fields.join(",")))
    }

    #[test]
    fn a_sample_review_parses_with_a_null_response() {
        let r = ReviewRow::parse(&record(GOOD_REVIEW)).unwrap();
        assert_eq!(
            (r.id, r.product_id, r.rating, r.date_ms),
            (5, 2, 3, 1615987717620)
        );
        assert_eq!(r.summary, "I'm enjoying wearing these shades");
        assert!(r.recommend && !r.reported);
        assert_eq!(r.response, None);
        assert_eq!(r.helpfulness, 5);
    }

    #[test]
    fn a_quoted_null_response_is_literal_text() {
        assert_eq!(
            review_with(10, "\"null\"").unwrap().response.as_deref(),
            Some("null")
        );
    }

    #[test]
    fn a_bare_null_outside_response_is_rejected() {
        assert_eq!(
            review_with(4, "null").unwrap_err().class,
            RejectClass::NullValue
        );
        assert_eq!(review_with(4, "\"null\"").unwrap().summary, "null");
    }

    #[test]
    fn ratings_outside_one_to_five_are_out_of_range() {
        let e = review_with(2, "9").unwrap_err();
        assert_eq!(e.class, RejectClass::OutOfRange);
        assert_eq!(e.reason, "rating must be 1..=5, got 9");
        assert_eq!(
            review_with(2, "0").unwrap_err().class,
            RejectClass::OutOfRange
        );
    }

    #[test]
    fn non_integers_are_bad_integers() {
        for bad in ["5.5", "abc", "", " 5", "+5", "-"] {
            assert_eq!(
                review_with(2, bad).unwrap_err().class,
                RejectClass::BadInteger,
                "{bad:?}"
            );
        }
        assert_eq!(
            review_with(0, "99999999999999999999").unwrap_err().class,
            RejectClass::OutOfRange
        );
    }

    #[test]
    fn ids_and_product_ids_must_be_positive() {
        assert_eq!(
            review_with(0, "0").unwrap_err().class,
            RejectClass::OutOfRange
        );
        assert_eq!(
            review_with(1, "-3").unwrap_err().class,
            RejectClass::OutOfRange
        );
    }

    #[test]
    fn negative_helpfulness_is_out_of_range() {
        assert_eq!(
            review_with(11, "-1").unwrap_err().class,
            RejectClass::OutOfRange
        );
        assert_eq!(
            review_with(11, "2147483648").unwrap_err().class,
            RejectClass::OutOfRange
        );
        assert_eq!(review_with(11, "0").unwrap().helpfulness, 0);
    }

    #[test]
    fn dates_must_be_epoch_milliseconds_between_1970_and_9999() {
        assert_eq!(
            review_with(3, "2021-03-17").unwrap_err().class,
            RejectClass::BadDate
        );
        assert_eq!(
            review_with(3, "-1").unwrap_err().class,
            RejectClass::BadDate
        );
        assert_eq!(
            review_with(3, "253402300800000").unwrap_err().class,
            RejectClass::BadDate
        );
        assert_eq!(review_with(3, "0").unwrap().date_ms, 0);
        assert_eq!(
            review_with(3, "253402300799999").unwrap().date_ms,
            MAX_DATE_MS
        );
    }

    #[test]
    fn booleans_are_the_words_true_and_false() {
        assert_eq!(
            review_with(6, "yes").unwrap_err().class,
            RejectClass::BadBoolean
        );
        assert_eq!(
            review_with(7, "TRUE").unwrap_err().class,
            RejectClass::BadBoolean
        );
        assert!(review_with(7, "true").unwrap().reported);
    }

    #[test]
    fn text_with_a_nul_character_is_rejected() {
        assert_eq!(
            review_with(5, "\"a\0b\"").unwrap_err().class,
            RejectClass::BadText
        );
    }

    #[test]
    fn characteristic_names_match_without_case_and_are_stored_canonically() {
        let c = CharacteristicRow::parse(&record("1,1,\"fIT\"")).unwrap();
        assert_eq!(c.name, "Fit");
        let e = CharacteristicRow::parse(&record("1,1,\"Colour\"")).unwrap_err();
        assert_eq!(e.class, RejectClass::BadName);
    }

    #[test]
    fn characteristic_values_must_be_one_to_five() {
        assert_eq!(
            CharacteristicReviewRow::parse(&record("1,1,1,6"))
                .unwrap_err()
                .class,
            RejectClass::OutOfRange
        );
        assert_eq!(
            CharacteristicReviewRow::parse(&record("1,1,1,5"))
                .unwrap()
                .value,
            5
        );
    }

    #[test]
    fn quoted_numbers_are_accepted() {
        assert_eq!(
            PhotoRow::parse(&record("\"3\",\"9\",\"u\""))
                .unwrap()
                .review_id,
            9
        );
    }
}
