//! The generator's randomness: a seeded ChaCha8 stream and the few draws the generator needs,
//! built from integer arithmetic only (no `ln`, no float formatting) so the same seed gives the
//! same bytes on every platform and with every libm, and no draw depends on how a library
//! version implements its distributions.

use rand::rngs::ChaCha8Rng;
use rand::{Rng as _, SeedableRng};

pub struct Rng(ChaCha8Rng);

impl Rng {
    /// `stream` separates independent sequences from one seed (data vs defects), so adding
    /// defects does not change which values the clean rows draw.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Rng(rng)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n` > 0), by multiply-shift (bias below 2⁻⁶⁰ for our `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_million / 1_000_000`.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn with the given integer weights.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// Successes before the first failure, each trial succeeding with `per_million`: a
    /// geometric count with mean p/(1−p), capped.
    pub fn geometric(&mut self, per_million: u64, cap: u64) -> u64 {
        let mut n = 0;
        while n < cap && self.chance(per_million) {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_stream_give_the_same_draws() {
        let (mut a, mut b) = (Rng::new(7, 0), Rng::new(7, 0));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let (mut a, mut c) = (Rng::new(7, 0), Rng::new(7, 1));
        assert!((0..4).any(|_| a.next_u64() != c.next_u64()));
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut r = Rng::new(1, 0);
        for _ in 0..10_000 {
            assert!((3..=6).contains(&r.range(3, 6)));
            assert!(r.weighted(&[0, 5, 0]) == 1);
            assert!(r.geometric(900_000, 30) <= 30);
        }
    }
}
