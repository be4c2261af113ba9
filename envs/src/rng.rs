//! Deterministic randomness: per-slot RNGs, task-derived RNGs, a fixed seeded shuffle and a
//! cheap generator for benchmarks.
//!
//! All streams are reproducible across platforms: they come from `rand_chacha::ChaCha8Rng`
//! (a portable, specified generator) seeded by the SplitMix64 finaliser of the inputs.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

/// A fixed permutation of `0..n` (Fisher-Yates driven by ChaCha8 seeded with `seed`).
///
/// This is *our* fixed shuffle: it does not reproduce numpy's `permutation` under seed 0 (which
/// DPT's code uses), but it is fixed forever, so train/test splits never change.
pub fn seeded_permutation(n: usize, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n as u64).collect();
    let mut rng = SlotRng::seed_from_u64(seed);
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}

/// Split `0..n` by [`seeded_permutation`] with seed 0: the first `floor(0.8 n)` (at least 1 when
/// `n >= 2`) are train, the rest test. Returns (train, test); disjoint and covering `0..n`.
pub fn split_80_20(n: usize) -> (Vec<u64>, Vec<u64>) {
    let perm = seeded_permutation(n, 0);
    let mut k = n * 4 / 5;
    if n >= 2 {
        k = k.clamp(1, n - 1);
    }
    let test = perm[k..].to_vec();
    let mut train = perm;
    train.truncate(k);
    (train, test)
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

    #[test]
    fn permutation_is_a_permutation_and_fixed() {
        let p = seeded_permutation(100, 0);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<u64>>());
        assert_eq!(p, seeded_permutation(100, 0));
        assert_ne!(p, seeded_permutation(100, 1));
        assert_ne!(p, (0..100).collect::<Vec<u64>>());
    }

    #[test]
    fn split_sizes() {
        let (tr, te) = split_80_20(100);
        assert_eq!((tr.len(), te.len()), (80, 20));
        let (tr, te) = split_80_20(81);
        assert_eq!((tr.len(), te.len()), (64, 17));
        let (tr, te) = split_80_20(2);
        assert_eq!((tr.len(), te.len()), (1, 1));
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
