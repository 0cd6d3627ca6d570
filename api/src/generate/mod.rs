//! The data-set generator (`reviews generate`): writes the four Atelier CSV files in the exact
//! format of `spec/data-format.md`, shaped like the full set, deterministic for a seed (the same
//! seed and version give byte-identical files), streamed so any size runs in constant memory.
//!
//! Shape, per product 1..=N in order (ids follow product order in every file):
//! - 3–6 characteristics (mean ≈ 3.35, as the full set's 3.35M for 1M products), names in a
//!   clothing (Fit, Length, Comfort, Quality, …) or shoe (Size, Width, Comfort, Quality, …)
//!   order.
//! - Reviews skewed like the real set: 30% of products have none, 0.2% have 100–500, the rest
//!   a geometric count (mean ≈ 7.4), for ≈ 5.77 reviews per product overall.
//! - Every review rates every characteristic of its product (≈ 19.3M ratings at full size).
//! - 24% of reviews have 1–5 photos (mostly 1–2): ≈ 0.48 photos per review, matching the full
//!   set's 2.74M photos for 5.77M reviews (the brief's "about half the reviews" would have made
//!   three times as many). 2% of multi-photo reviews list their last two photos out of id order,
//!   as the real file does.
//! - Ratings skewed high, recommend following the rating, 1% reported, 8% with a seller
//!   response (otherwise the bare `null`), helpfulness geometric (mean ≈ 4, at most 40), dates
//!   in 2020–2021 in epoch milliseconds, summaries ≤ 60 characters, bodies 50..=1000 with the
//!   odd quote, comma and rare line break.
//!
//! `--defects` adds corrupted rows and a manifest (see [`defects`]).

pub mod defects;
pub mod output;
pub mod rng;
pub mod text;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use self::defects::{Defects, MANIFEST};
use self::output::{CsvOut, FileCounts, RowBuf};
use self::rng::Rng;
use crate::import::progress::group;
use crate::import::rows::{
    CharacteristicReviewRow, CharacteristicRow, CsvRow, PhotoRow, ReviewRow,
};

/// Products in the full set.
pub const FULL_SET_PRODUCTS: u64 = 1_000_011;
/// The default seed, fixed so `reviews generate` is reproducible out of the box.
pub const DEFAULT_SEED: u64 = 20_210_317;

/// First and last generated date: 2020-01-01T00:00:00.000Z ..= 2021-12-31T23:59:59.999Z.
const FIRST_DATE_MS: u64 = 1_577_836_800_000;
const LAST_DATE_MS: u64 = 1_640_995_199_999;

const CLOTHING: [&str; 6] = ["Fit", "Length", "Comfort", "Quality", "Size", "Width"];
const SHOES: [&str; 6] = ["Size", "Width", "Comfort", "Quality", "Fit", "Length"];

/// `reviews generate`: write a synthetic data set in the Atelier CSV format.
#[derive(Clone, Debug, clap::Args)]
pub struct GenerateArgs {
    /// Folder to write reviews.csv, reviews_photos.csv, characteristics.csv and
    /// characteristic_reviews.csv into (created if missing; existing files are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of products (the full set has 1,000,011).
    #[arg(long, default_value_t = FULL_SET_PRODUCTS)]
    pub products: u64,
    /// Seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Add about this share (0..=0.5) of corrupted rows, listed in defects.csv
    /// (file,line,class) beside the data.
    #[arg(long)]
    pub defects: Option<f64>,
}

/// What [`generate`] needs.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub out: PathBuf,
    pub products: u64,
    pub seed: u64,
    /// Share of extra corrupted rows, `None` or 0 for a clean set.
    pub defects: Option<f64>,
}

impl GenerateOptions {
    pub fn new(out: impl Into<PathBuf>, products: u64) -> Self {
        GenerateOptions {
            out: out.into(),
            products,
            seed: DEFAULT_SEED,
            defects: None,
        }
    }
}

impl From<GenerateArgs> for GenerateOptions {
    fn from(a: GenerateArgs) -> Self {
        GenerateOptions {
            out: a.out,
            products: a.products,
            seed: a.seed,
            defects: a.defects,
        }
    }
}

/// One written file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    pub file: &'static str,
    pub counts: FileCounts,
}

/// What [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct GenerateSummary {
    pub products: u64,
    /// In import order: reviews, characteristics, photos, characteristic ratings.
    pub files: Vec<GeneratedFile>,
    /// The defects manifest, when defects were asked for.
    pub manifest: Option<PathBuf>,
    pub elapsed: Duration,
}

impl GenerateSummary {
    pub fn file(&self, name: &str) -> Option<&FileCounts> {
        self.files
            .iter()
            .find(|f| f.file == name)
            .map(|f| &f.counts)
    }
}

impl fmt::Display for GenerateSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<28} {:>12} {:>12} {:>10} {:>10}",
            "file", "rows", "clean", "defects", "MiB"
        )?;
        for g in &self.files {
            let c = &g.counts;
            writeln!(
                f,
                "{:<28} {:>12} {:>12} {:>10} {:>10.1}",
                g.file,
                group(c.rows),
                group(c.clean),
                group(c.defects),
                c.bytes as f64 / (1024.0 * 1024.0)
            )?;
        }
        let rows: u64 = self.files.iter().map(|g| g.counts.rows).sum();
        write!(
            f,
            "{} products, {} rows in {:.1} s",
            group(self.products),
            group(rows),
            self.elapsed.as_secs_f64()
        )?;
        if let Some(m) = &self.manifest {
            write!(f, "; defects listed in {}", m.display())?;
        }
        Ok(())
    }
}

/// `reviews generate`: generates and prints what was written.
pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let summary = generate(&GenerateOptions::from(args))?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// One review's values (the generator's own, so text buffers are reused).
#[derive(Default)]
struct Review {
    id: i64,
    product_id: i64,
    rating: i64,
    date_ms: i64,
    summary: String,
    body: String,
    recommend: bool,
    reported: bool,
    name: String,
    email: String,
    response: Option<&'static str>,
    helpfulness: i64,
}

impl Review {
    fn fill(&mut self, rng: &mut Rng, id: i64, product_id: i64, allow_newline: bool) {
        self.id = id;
        self.product_id = product_id;
        self.rating = 1 + rng.weighted(&[8, 10, 20, 30, 32]) as i64;
        self.date_ms = rng.range(FIRST_DATE_MS, LAST_DATE_MS) as i64;
        text::summary(rng, &mut self.summary);
        text::body(rng, &mut self.body, allow_newline);
        self.recommend =
            rng.chance([100_000, 300_000, 600_000, 850_000, 950_000][self.rating as usize - 1]);
        self.reported = rng.chance(10_000);
        text::reviewer_name(rng, &mut self.name);
        text::email(rng, &mut self.email);
        self.response = rng.chance(80_000).then(|| text::response(rng));
        self.helpfulness = rng.geometric(800_000, 40) as i64;
    }

    fn encode(&self, row: &mut RowBuf) {
        row.clear();
        row.int(self.id)
            .int(self.product_id)
            .int(self.rating)
            .int(self.date_ms)
            .quoted(self.summary.as_bytes())
            .quoted(self.body.as_bytes())
            .boolean(self.recommend)
            .boolean(self.reported)
            .quoted(self.name.as_bytes())
            .quoted(self.email.as_bytes());
        match self.response {
            Some(r) => row.quoted(r.as_bytes()),
            None => row.bare(b"null"),
        };
        row.int(self.helpfulness);
    }
}

/// Reviews of one product: none (30%), many (0.2%: 100..=500), else 1 + geometric (mean 7.4).
fn review_count(rng: &mut Rng) -> u64 {
    match rng.weighted(&[300_000, 2_000, 698_000]) {
        0 => 0,
        1 => rng.range(100, 500),
        _ => 1 + rng.geometric(864_865, 2_000),
    }
}

/// The open output files, in import order.
struct Outputs {
    reviews: CsvOut,
    characteristics: CsvOut,
    photos: CsvOut,
    ratings: CsvOut,
}

/// Next id of each table (ids are consumed by defect rows too).
#[derive(Default)]
struct Ids {
    review: i64,
    characteristic: i64,
    photo: i64,
    rating: i64,
}

fn next(id: &mut i64) -> i64 {
    *id += 1;
    *id
}

/// Writes the data set described in the module docs.
pub fn generate(opts: &GenerateOptions) -> anyhow::Result<GenerateSummary> {
    let started = Instant::now();
    if opts.products == 0 {
        bail!("--products must be at least 1");
    }
    let per_million = match opts.defects {
        None => 0,
        Some(f) if (0.0..=0.5).contains(&f) => (f * 1_000_000.0).round() as u64,
        Some(f) => bail!("--defects must be a fraction between 0 and 0.5, got {f}"),
    };
    let dir = &opts.out;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let manifest = dir.join(MANIFEST);
    let defects = if per_million > 0 {
        Defects::create(dir, opts.seed, per_million)
            .with_context(|| format!("creating {}", manifest.display()))?
    } else {
        // A manifest left by an earlier run would describe other files.
        if manifest.exists() {
            std::fs::remove_file(&manifest)
                .with_context(|| format!("removing the stale {}", manifest.display()))?;
        }
        Defects::none(opts.seed)
    };
    let files = write_set(dir, opts, defects)
        .with_context(|| format!("writing the data set into {}", dir.display()))?;
    Ok(GenerateSummary {
        products: opts.products,
        files,
        manifest: (per_million > 0).then_some(manifest),
        elapsed: started.elapsed(),
    })
}

fn write_set(
    dir: &Path,
    opts: &GenerateOptions,
    mut defects: Defects,
) -> std::io::Result<Vec<GeneratedFile>> {
    let mut out = Outputs {
        reviews: CsvOut::create(dir, ReviewRow::FILE, ReviewRow::HEADER)?,
        characteristics: CsvOut::create(dir, CharacteristicRow::FILE, CharacteristicRow::HEADER)?,
        photos: CsvOut::create(dir, PhotoRow::FILE, PhotoRow::HEADER)?,
        ratings: CsvOut::create(
            dir,
            CharacteristicReviewRow::FILE,
            CharacteristicReviewRow::HEADER,
        )?,
    };
    let mut rng = Rng::new(opts.seed, 0);
    let mut ids = Ids::default();
    let (mut review, mut spare) = (Review::default(), Review::default());
    let mut row = RowBuf::default();
    let mut characteristics: Vec<(i64, &str)> = Vec::with_capacity(6);
    let mut photos: Vec<(i64, String)> = Vec::with_capacity(5);
    let mut progress = crate::import::progress::Progress::new(std::io::IsTerminal::is_terminal(
        &std::io::stderr(),
    ));
    progress.start_file("products");

    for product in 1..=opts.products as i64 {
        characteristics.clear();
        let n = 3 + rng.weighted(&[70, 25, 4, 1]);
        let order = if rng.chance(500_000) {
            &CLOTHING
        } else {
            &SHOES
        };
        for &name in &order[..n] {
            let id = next(&mut ids.characteristic);
            row.clear();
            row.int(id).int(product).quoted(name.as_bytes());
            out.characteristics.clean(&row, id)?;
            characteristics.push((id, name));
            if defects.roll() {
                row.clear();
                row.int(next(&mut ids.characteristic))
                    .int(product)
                    .quoted(name.as_bytes());
                let class = defects::corrupt_characteristic(
                    &mut defects.rng,
                    &mut row,
                    out.characteristics.last_clean_id,
                );
                defects.write(&mut out.characteristics, &row, class)?;
            }
        }

        for _ in 0..review_count(&mut rng) {
            let review_id = next(&mut ids.review);
            review.fill(&mut rng, review_id, product, true);
            review.encode(&mut row);
            out.reviews.clean(&row, review_id)?;
            if defects.roll() {
                spare.fill(&mut defects.rng, next(&mut ids.review), product, false);
                spare.encode(&mut row);
                let class =
                    defects::corrupt_review(&mut defects.rng, &mut row, out.reviews.last_clean_id);
                defects.write(&mut out.reviews, &row, class)?;
            }

            if rng.chance(240_000) {
                photos.clear();
                for _ in 0..1 + rng.weighted(&[45, 25, 15, 10, 5]) {
                    let mut url = String::new();
                    text::photo_url(&mut rng, &mut url);
                    photos.push((next(&mut ids.photo), url));
                }
                // The real file is not sorted by id either.
                if photos.len() >= 2 && rng.chance(20_000) {
                    let n = photos.len();
                    photos.swap(n - 2, n - 1);
                }
                for (id, url) in &photos {
                    row.clear();
                    row.int(*id).int(review_id).quoted(url.as_bytes());
                    out.photos.clean(&row, *id)?;
                    if defects.roll() {
                        row.clear();
                        row.int(next(&mut ids.photo))
                            .int(review_id)
                            .quoted(url.as_bytes());
                        let class = defects::corrupt_photo(
                            &mut defects.rng,
                            &mut row,
                            out.photos.last_clean_id,
                        );
                        defects.write(&mut out.photos, &row, class)?;
                    }
                }
            }

            for &(characteristic_id, _) in &characteristics {
                let id = next(&mut ids.rating);
                // Ratings follow the review's stars, give or take one.
                let value = (review.rating + rng.weighted(&[20, 60, 20]) as i64 - 1).clamp(1, 5);
                row.clear();
                row.int(id).int(characteristic_id).int(review_id).int(value);
                out.ratings.clean(&row, id)?;
                if defects.roll() {
                    row.clear();
                    row.int(next(&mut ids.rating))
                        .int(characteristic_id)
                        .int(review_id)
                        .int(value);
                    let class = defects::corrupt_rating(
                        &mut defects.rng,
                        &mut row,
                        out.ratings.last_clean_id,
                    );
                    defects.write(&mut out.ratings, &row, class)?;
                }
            }
        }
        if product % 4096 == 0 {
            progress.rows(product as u64);
        }
    }
    progress.finish_file(opts.products);

    if defects.enabled() {
        defects.unterminated(&mut out.reviews, next(&mut ids.review))?;
        defects.unterminated(&mut out.characteristics, next(&mut ids.characteristic))?;
        defects.unterminated(&mut out.photos, next(&mut ids.photo))?;
        defects.unterminated(&mut out.ratings, next(&mut ids.rating))?;
    }
    defects.finish()?;
    Ok(vec![
        GeneratedFile {
            file: ReviewRow::FILE,
            counts: out.reviews.finish()?,
        },
        GeneratedFile {
            file: CharacteristicRow::FILE,
            counts: out.characteristics.finish()?,
        },
        GeneratedFile {
            file: PhotoRow::FILE,
            counts: out.photos.finish()?,
        },
        GeneratedFile {
            file: CharacteristicReviewRow::FILE,
            counts: out.ratings.finish()?,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, file: &str) -> Vec<u8> {
        std::fs::read(dir.join(file)).unwrap()
    }

    #[test]
    fn the_same_seed_writes_the_same_bytes_and_another_seed_does_not() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let mut opts = GenerateOptions::new(a.path(), 300);
        opts.defects = Some(0.02);
        generate(&opts).unwrap();
        opts.out = b.path().to_owned();
        generate(&opts).unwrap();
        opts.out = c.path().to_owned();
        opts.seed += 1;
        generate(&opts).unwrap();
        for file in [
            "reviews.csv",
            "reviews_photos.csv",
            "characteristics.csv",
            "characteristic_reviews.csv",
            MANIFEST,
        ] {
            assert_eq!(read(a.path(), file), read(b.path(), file), "{file}");
            assert_ne!(read(a.path(), file), read(c.path(), file), "{file}");
        }
    }

    #[test]
    fn the_shape_is_close_to_the_full_set() {
        let dir = tempfile::tempdir().unwrap();
        let s = generate(&GenerateOptions::new(dir.path(), 20_000)).unwrap();
        let per_product = |f: &str| s.file(f).unwrap().rows as f64 / 20_000.0;
        let reviews = per_product("reviews.csv");
        assert!(
            (5.0..6.6).contains(&reviews),
            "{reviews} reviews per product"
        );
        let characteristics = per_product("characteristics.csv");
        assert!(
            (3.2..3.5).contains(&characteristics),
            "{characteristics} characteristics per product"
        );
        let photos = per_product("reviews_photos.csv") / reviews;
        assert!((0.4..0.56).contains(&photos), "{photos} photos per review");
        assert!(!dir.path().join(MANIFEST).exists());
        assert_eq!(s.file("reviews.csv").unwrap().defects, 0);
    }

    #[test]
    fn the_header_and_first_rows_follow_the_data_format() {
        let dir = tempfile::tempdir().unwrap();
        generate(&GenerateOptions::new(dir.path(), 50)).unwrap();
        let reviews = String::from_utf8(read(dir.path(), "reviews.csv")).unwrap();
        let mut lines = reviews.lines();
        assert_eq!(
            lines.next(),
            Some(
                "id,product_id,rating,date,summary,body,recommend,reported,reviewer_name,reviewer_email,response,helpfulness"
            )
        );
        let first = lines.next().unwrap();
        assert!(first.starts_with("1,"), "{first}");
        assert!(first.contains(",\""), "{first}");
        let characteristics = String::from_utf8(read(dir.path(), "characteristics.csv")).unwrap();
        assert!(
            characteristics.starts_with("id,product_id,name\n1,1,\""),
            "{characteristics}"
        );
    }

    #[test]
    fn out_of_range_defect_shares_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GenerateOptions::new(dir.path(), 10);
        opts.defects = Some(0.9);
        assert!(generate(&opts).is_err());
        opts.defects = Some(-0.1);
        assert!(generate(&opts).is_err());
    }
}
