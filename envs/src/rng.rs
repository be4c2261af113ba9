//! Deterministic randomness: per-slot RNGs, task-derived RNGs, the fixed task split (numpy's
//! seed-0 shuffle) and a cheap generator for benchmarks.
//!
//! All streams are reproducible across platforms: they come from `rand_chacha::ChaCha8Rng`
//! (a portable, specified generator) seeded by the SplitMix64 finaliser of the inputs.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::numpy_random::RandomState;
use crate::TaskSplit;

/// The RNG type used for per-slot and per-task randomness.
pub type SlotRng = ChaCha8Rng;

/// The SplitMix64 output function: a bijective 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG of global slot `slot` under run seed `seed`. Independent of how slots are sharded.
pub fn slot_rng(seed: u64, slot: usize) -> SlotRng {
    SlotRng::seed_from_u64(mix64(
        mix64(seed) ^ mix64(slot as u64 ^ 0x5107_0000_0000_0000),
    ))
}

/// An RNG derived from a task id and a purpose tag (e.g. bandit arm means, house layout), so the
/// same task gives the same values everywhere.
pub fn task_rng(task: u64, tag: u64) -> SlotRng {
    SlotRng::seed_from_u64(mix64(mix64(task) ^ mix64(tag)))
}

/// The fixed split of a finite task set `0..n` (the grid worlds), DPT's rule for Dark Room
/// applied to every grid world: the ids in order, shuffled by numpy's `RandomState(0)`
/// (`np.random.RandomState(0).permutation(n)`, reproduced by [`RandomState`]); the first
/// `floor(0.8 n)` (at least 1 when `n >= 2`) are the training part, the rest [`Split::Test`].
/// The last `floor(k / 8)` (at least 1 when `k >= 2`) of the `k` training-part ids are
/// [`Split::Validation`], the others [`Split::Train`].
///
/// [`Split::Test`]: crate::Split::Test
/// [`Split::Validation`]: crate::Split::Validation
/// [`Split::Train`]: crate::Split::Train
pub fn fixed_split(n: usize) -> TaskSplit {
    let perm = RandomState::new(0).permutation(n);
    let mut part = n * 4 / 5;
    if n >= 2 {
        part = part.clamp(1, n - 1);
    }
    let mut validation = part / 8;
    if part >= 2 {
        validation = validation.max(1);
    }
    TaskSplit {
        train: perm[..part - validation].to_vec(),
        validation: perm[part - validation..part].to_vec(),
        test: perm[part..].to_vec(),
    }
}

/// A tiny xorshift64* generator for benchmark actions (not for environment randomness).
#[derive(Debug, Clone)]
pub struct FastRng(u64);

impl FastRng {
    /// A generator seeded from `seed` (never zero state).
    pub fn new(seed: u64) -> Self {
        FastRng(mix64(seed) | 1)
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform integer in `0..n` (`n > 0`; multiply-shift, negligible bias for small `n`).
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn split_sizes_and_disjoint() {
        for (n, sizes) in [
            (100, (70, 10, 20)),
            (81, (56, 8, 17)),
            (289, (203, 28, 58)),
            (6561, (4592, 656, 1313)),
            (2, (1, 0, 1)),
            (3, (1, 1, 1)),
        ] {
            let s = fixed_split(n);
            assert_eq!(
                (s.train.len(), s.validation.len(), s.test.len()),
                sizes,
                "n = {n}"
            );
            let mut all: Vec<u64> = [s.train, s.validation, s.test].concat();
            all.sort();
            assert_eq!(all, (0..n as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn split_is_numpys_permutation_in_order() {
        let s = fixed_split(100);
        let joined = [s.train, s.validation, s.test].concat();
        assert_eq!(joined, RandomState::new(0).permutation(100));
    }

    #[test]
    fn fast_rng_below_in_range_and_spread() {
        let mut r = FastRng::new(3);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            let a = r.below(5);
            assert!(a < 5);
            counts[a as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn slot_rngs_differ() {
        let a: u64 = slot_rng(1, 0).random();
        let b: u64 = slot_rng(1, 1).random();
        let c: u64 = slot_rng(2, 0).random();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, slot_rng(1, 0).random::<u64>());
    }
}
