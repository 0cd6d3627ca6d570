//! `--verify`: proves the database holds exactly what the importer loaded.
//!
//! While loading, each accepted row adds to an order-independent checksum of its table: row
//! count, sum of ids, and the wrapping sum and the xor of a 64-bit hash of the row's canonical
//! values. Afterwards every table is read back (streamed), hashed the same way and compared, so
//! a lost, duplicated or altered row shows. The aggregates are checked through totals that tie
//! them to the rows (ratings counted in `product_meta` = reviews, ratings summed in
//! `characteristics` = the `characteristic_reviews` rows).

use std::fmt;

/// An order-independent summary of one table's rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableChecksum {
    pub rows: u64,
    pub id_sum: i128,
    pub digest_sum: u64,
    pub digest_xor: u64,
}

impl TableChecksum {
    pub fn add(&mut self, id: i64, digest: u64) {
        self.rows += 1;
        self.id_sum += i128::from(id);
        self.digest_sum = self.digest_sum.wrapping_add(digest);
        self.digest_xor ^= digest;
    }
}

/// One checksum per imported table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checksums {
    pub reviews: TableChecksum,
    pub reviews_photos: TableChecksum,
    pub characteristics: TableChecksum,
    pub characteristic_reviews: TableChecksum,
}

impl Checksums {
    /// The checksum of `table` (one of the four imported tables).
    pub fn table_mut(&mut self, table: &str) -> &mut TableChecksum {
        match table {
            "reviews" => &mut self.reviews,
            "reviews_photos" => &mut self.reviews_photos,
            "characteristics" => &mut self.characteristics,
            "characteristic_reviews" => &mut self.characteristic_reviews,
            other => unreachable!("no checksum for table {other}"),
        }
    }

    fn tables(&self) -> [(&'static str, TableChecksum); 4] {
        [
            ("reviews", self.reviews),
            ("reviews_photos", self.reviews_photos),
            ("characteristics", self.characteristics),
            ("characteristic_reviews", self.characteristic_reviews),
        ]
    }
}

/// Totals read from the database that tie the aggregates to the rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregateTotals {
    pub reviews: i64,
    pub meta_ratings: i64,
    pub meta_recommends: i64,
    pub ratings: i64,
    pub rating_value_sum: i64,
    pub characteristic_rating_count: i64,
    pub characteristic_rating_sum: i64,
}

/// The SQL reading [`AggregateTotals`], valid on both backends (`CAST` because PostgreSQL sums
/// BIGINT into NUMERIC). `table` names each table to read: the live one, or on PostgreSQL its
/// staging table, read inside the import's transaction before the swap.
pub fn aggregate_totals_sql(table: impl Fn(&str) -> String) -> String {
    format!(
        "SELECT \
         (SELECT COUNT(*) FROM {reviews}), \
         (SELECT CAST(COALESCE(SUM(rating_1 + rating_2 + rating_3 + rating_4 + rating_5), 0) AS BIGINT) FROM {meta}), \
         (SELECT CAST(COALESCE(SUM(recommend_false + recommend_true), 0) AS BIGINT) FROM {meta}), \
         (SELECT COUNT(*) FROM {ratings}), \
         (SELECT CAST(COALESCE(SUM(value), 0) AS BIGINT) FROM {ratings}), \
         (SELECT CAST(COALESCE(SUM(rating_count), 0) AS BIGINT) FROM {characteristics}), \
         (SELECT CAST(COALESCE(SUM(rating_sum), 0) AS BIGINT) FROM {characteristics})",
        reviews = table("reviews"),
        meta = table("product_meta"),
        ratings = table("characteristic_reviews"),
        characteristics = table("characteristics"),
    )
}

/// One table: what was loaded against what the database holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCheck {
    pub table: &'static str,
    pub loaded: TableChecksum,
    pub stored: TableChecksum,
}

impl TableCheck {
    pub fn is_ok(&self) -> bool {
        self.loaded == self.stored
    }
}

/// The outcome of `--verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub tables: Vec<TableCheck>,
    /// Empty when every aggregate total agrees with the rows.
    pub aggregate_problems: Vec<String>,
}

impl VerifyReport {
    pub fn compare(loaded: &Checksums, stored: &Checksums, totals: &AggregateTotals) -> Self {
        let tables = loaded
            .tables()
            .into_iter()
            .zip(stored.tables())
            .map(|((table, loaded), (_, stored))| TableCheck {
                table,
                loaded,
                stored,
            })
            .collect();
        let mut problems = Vec::new();
        let t = totals;
        let mut expect = |what: &str, got: i64, want: i64| {
            if got != want {
                problems.push(format!("{what}: {got}, expected {want}"));
            }
        };
        expect("product_meta ratings counted", t.meta_ratings, t.reviews);
        expect(
            "product_meta recommends counted",
            t.meta_recommends,
            t.reviews,
        );
        expect(
            "characteristics.rating_count total",
            t.characteristic_rating_count,
            t.ratings,
        );
        expect(
            "characteristics.rating_sum total",
            t.characteristic_rating_sum,
            t.rating_value_sum,
        );
        VerifyReport {
            tables,
            aggregate_problems: problems,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.tables.iter().all(TableCheck::is_ok) && self.aggregate_problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.tables {
            if t.is_ok() {
                writeln!(
                    f,
                    "verify {:<24} ok ({} rows, checksum {:016x})",
                    t.table, t.stored.rows, t.stored.digest_sum
                )?;
            } else {
                writeln!(
                    f,
                    "verify {:<24} MISMATCH: loaded {} rows (id sum {}, checksum {:016x}/{:016x}), database holds {} rows (id sum {}, checksum {:016x}/{:016x})",
                    t.table,
                    t.loaded.rows,
                    t.loaded.id_sum,
                    t.loaded.digest_sum,
                    t.loaded.digest_xor,
                    t.stored.rows,
                    t.stored.id_sum,
                    t.stored.digest_sum,
                    t.stored.digest_xor
                )?;
            }
        }
        if self.aggregate_problems.is_empty() {
            writeln!(f, "verify {:<24} ok", "aggregates")?;
        }
        for p in &self.aggregate_problems {
            writeln!(f, "verify {:<24} MISMATCH: {p}", "aggregates")?;
        }
        write!(f, "verify: {}", if self.is_ok() { "OK" } else { "FAILED" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_do_not_depend_on_row_order() {
        let (mut a, mut b) = (TableChecksum::default(), TableChecksum::default());
        for (id, d) in [(1, 10), (2, 20), (3, 30)] {
            a.add(id, d);
        }
        for (id, d) in [(3, 30), (1, 10), (2, 20)] {
            b.add(id, d);
        }
        assert_eq!(a, b);
        b.add(3, 30);
        assert_ne!(a, b);
    }

    #[test]
    fn a_mismatched_total_fails_the_report() {
        let sums = Checksums::default();
        let totals = AggregateTotals {
            reviews: 2,
            meta_ratings: 2,
            meta_recommends: 1,
            ..Default::default()
        };
        let report = VerifyReport::compare(&sums, &sums, &totals);
        assert!(!report.is_ok());
        assert_eq!(
            report.aggregate_problems,
            vec!["product_meta recommends counted: 1, expected 2".to_owned()]
        );
    }
}
