//! Which product id each request asks for: incrementing (`seq:1..100000`, wraps), uniform at
//! random (`uniform:1..1000011`) or Zipf-skewed towards a few hot products
//! (`zipf:1..1000011:s=1.1`). Ranges are inclusive.
//!
//! The original service found random ids far slower than incrementing ones (cache and index
//! locality), so the pattern is part of every report, and a seed makes the sequence repeat
//! exactly between runs.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};

use crate::units::deserialize_from_str;

/// How ids are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IdPattern {
    /// `lo, lo+1, …, hi, lo, …` in order.
    Seq { lo: u64, hi: u64 },
    /// Each id equally likely.
    Uniform { lo: u64, hi: u64 },
    /// Id `lo + r − 1` with probability ∝ `1 / r^s`: `lo` is the hottest product.
    Zipf { lo: u64, hi: u64, s: f64 },
}

impl IdPattern {
    pub fn range(&self) -> (u64, u64) {
        match *self {
            IdPattern::Seq { lo, hi }
            | IdPattern::Uniform { lo, hi }
            | IdPattern::Zipf { lo, hi, .. } => (lo, hi),
        }
    }
}

impl Default for IdPattern {
    fn default() -> Self {
        IdPattern::Seq { lo: 1, hi: 100_000 }
    }
}

impl FromStr for IdPattern {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let err = |why: &str| {
            format!(
                "invalid id pattern {text:?}: {why} (expected seq:1..100000, uniform:1..1000011 or zipf:1..1000011:s=1.1)"
            )
        };
        let mut parts = text.trim().split(':');
        let kind = parts.next().unwrap_or_default();
        let range = parts.next().ok_or_else(|| err("no range"))?;
        let (lo, hi) = range
            .split_once("..")
            .ok_or_else(|| err("the range needs '..'"))?;
        let hi = hi.strip_prefix('=').unwrap_or(hi);
        let lo: u64 = lo
            .parse()
            .map_err(|_| err("the range start is not an integer"))?;
        let hi: u64 = hi
            .parse()
            .map_err(|_| err("the range end is not an integer"))?;
        if lo > hi {
            return Err(err("the range start is above its end"));
        }
        let pattern = match kind {
            "seq" => IdPattern::Seq { lo, hi },
            "uniform" => IdPattern::Uniform { lo, hi },
            "zipf" => {
                let s = match parts.next() {
                    None => 1.0,
                    Some(p) => p
                        .strip_prefix("s=")
                        .and_then(|v| v.parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| err("the exponent must be s=<positive number>"))?,
                };
                IdPattern::Zipf { lo, hi, s }
            }
            _ => return Err(err("unknown kind")),
        };
        if parts.next().is_some() {
            return Err(err("unexpected text after the pattern"));
        }
        Ok(pattern)
    }
}

impl fmt::Display for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IdPattern::Seq { lo, hi } => write!(f, "seq:{lo}..{hi}"),
            IdPattern::Uniform { lo, hi } => write!(f, "uniform:{lo}..{hi}"),
            IdPattern::Zipf { lo, hi, s } => write!(f, "zipf:{lo}..{hi}:s={s}"),
        }
    }
}
deserialize_from_str!(IdPattern);

/// Draws ids for one run. Its own random stream (stream 1 of the seed), so changing the endpoint
/// mix or the review bodies does not change which ids are asked for.
#[derive(Debug, Clone)]
pub struct IdGen {
    pattern: IdPattern,
    rng: ChaCha8Rng,
    next_seq: u64,
    zipf: Option<Zipf<f64>>,
}

impl IdGen {
    pub fn new(pattern: IdPattern, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(1);
        let zipf = match pattern {
            IdPattern::Zipf { lo, hi, s } => {
                // Parsing guarantees n ≥ 1 and s > 0, the only inputs Zipf::new refuses.
                Some(Zipf::new((hi - lo + 1) as f64, s).expect("validated zipf parameters"))
            }
            _ => None,
        };
        IdGen {
            pattern,
            rng,
            next_seq: pattern.range().0,
            zipf,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        match self.pattern {
            IdPattern::Seq { lo, hi } => {
                let id = self.next_seq;
                self.next_seq = if id >= hi { lo } else { id + 1 };
                id
            }
            IdPattern::Uniform { lo, hi } => self.rng.random_range(lo..=hi),
            IdPattern::Zipf { lo, hi, .. } => {
                let rank = self.zipf.as_ref().map_or(1.0, |z| z.sample(&mut self.rng)) as u64;
                (lo + rank.saturating_sub(1)).min(hi)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seq_increments_and_wraps() {
        let mut g = IdGen::new("seq:1..3".parse().unwrap(), 7);
        let ids: Vec<u64> = (0..7).map(|_| g.next_id()).collect();
        assert_eq!(ids, [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn the_same_seed_repeats_the_same_ids() {
        for p in ["uniform:1..1000011", "zipf:1..1000011:s=1.1"] {
            let pattern: IdPattern = p.parse().unwrap();
            let a: Vec<u64> = {
                let mut g = IdGen::new(pattern, 42);
                (0..1000).map(|_| g.next_id()).collect()
            };
            let mut g = IdGen::new(pattern, 42);
            let b: Vec<u64> = (0..1000).map(|_| g.next_id()).collect();
            let mut g = IdGen::new(pattern, 43);
            let c: Vec<u64> = (0..1000).map(|_| g.next_id()).collect();
            assert_eq!(a, b, "{p}");
            assert_ne!(a, c, "{p}");
        }
    }

    #[test]
    fn uniform_covers_its_range_evenly() {
        let mut g = IdGen::new("uniform:11..20".parse().unwrap(), 1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            let id = g.next_id();
            assert!((11..=20).contains(&id));
            counts[(id - 11) as usize] += 1;
        }
        // Each bucket expects 10,000; 5 standard deviations is about ±475.
        assert!(
            counts.iter().all(|&c| (9_500..=10_500).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn zipf_makes_the_first_ids_hot() {
        let mut g = IdGen::new("zipf:1..1000011:s=1.1".parse().unwrap(), 1);
        let n = 100_000;
        let ids: Vec<u64> = (0..n).map(|_| g.next_id()).collect();
        assert!(ids.iter().all(|id| (1..=1_000_011).contains(id)));
        let ones = ids.iter().filter(|&&id| id == 1).count() as f64 / n as f64;
        let twos = ids.iter().filter(|&&id| id == 2).count() as f64 / n as f64;
        let top_100 = ids.iter().filter(|&&id| id <= 100).count() as f64 / n as f64;
        // P(1) = 1/H(n, 1.1) ≈ 0.124 for a million products; P(2)/P(1) = 2^-1.1 ≈ 0.47.
        assert!((0.10..0.15).contains(&ones), "{ones}");
        assert!((0.40..0.55).contains(&(twos / ones)), "{}", twos / ones);
        // Expected ≈ 0.53; a uniform draw would put 0.01% of requests on the first 100 products.
        assert!(top_100 > 0.4, "{top_100}");
    }

    #[test]
    fn patterns_reject_bad_ranges() {
        for bad in [
            "seq:5..1",
            "seq:1",
            "zipf:1..10:s=0",
            "zipf:1..10:q=1",
            "rand:1..10",
            "seq:a..b",
        ] {
            assert!(bad.parse::<IdPattern>().is_err(), "{bad}");
        }
        assert_eq!(
            "seq:1..=10".parse::<IdPattern>().unwrap(),
            IdPattern::Seq { lo: 1, hi: 10 }
        );
    }

    proptest! {
        #[test]
        fn patterns_print_as_they_parse(lo in 1u64..1000, span in 0u64..1_000_000, kind in 0..3, s in 0.1f64..4.0) {
            let hi = lo + span;
            let p = match kind {
                0 => IdPattern::Seq { lo, hi },
                1 => IdPattern::Uniform { lo, hi },
                _ => IdPattern::Zipf { lo, hi, s },
            };
            prop_assert_eq!(p.to_string().parse::<IdPattern>().unwrap(), p);
        }

        #[test]
        fn ids_stay_in_range(lo in 1u64..1000, span in 0u64..1000, kind in 0..3, seed in any::<u64>()) {
            let hi = lo + span;
            let p = match kind {
                0 => IdPattern::Seq { lo, hi },
                1 => IdPattern::Uniform { lo, hi },
                _ => IdPattern::Zipf { lo, hi, s: 1.1 },
            };
            let mut g = IdGen::new(p, seed);
            for _ in 0..100 {
                let id = g.next_id();
                prop_assert!((lo..=hi).contains(&id));
            }
        }
    }
}
