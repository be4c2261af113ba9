//! numpy's legacy `np.random.RandomState(seed)`, only as far as `shuffle` and `permutation`,
//! reproduced bit for bit so that task splits defined by Python code (DPT's Dark Room goals)
//! are the same here.
//!
//! What numpy does (numpy 1.17+ `RandomState`, unchanged since; checked against numpy 2.4):
//! - `RandomState(seed)` with an integer `seed` in `[0, 2^32)` seeds MT19937 with the
//!   reference `init_genrand`: `key[0] = seed`,
//!   `key[i] = 1812433253 * (key[i-1] ^ (key[i-1] >> 30)) + i (mod 2^32)`, and marks the state
//!   as exhausted, so the first draw regenerates all 624 words.
//! - `next_uint32` is the reference `genrand_int32` (regeneration with the twist, then
//!   tempering).
//! - `shuffle(x)` walks `i` from `n - 1` down to `1`, draws `j = random_interval(i)` and swaps
//!   rows `i` and `j` (for a 2-D array the rows move as a whole; `permutation(n)` is `shuffle`
//!   of `arange(n)`, so both give the same order).
//! - `random_interval(max)` is bounded masked rejection: `mask` = the smallest `2^k - 1 >= max`;
//!   draw `next_uint32() & mask` until the value is `<= max` (for `max < 2^32`; larger bounds
//!   draw 64-bit words, which no split here needs, so they are refused).

/// Number of 32-bit words of MT19937's state.
const N: usize = 624;
/// MT19937's middle word offset.
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// numpy's legacy `RandomState` generator (MT19937), for `shuffle` / `permutation`.
#[derive(Clone, Debug)]
pub struct RandomState {
    key: [u32; N],
    pos: usize,
}

impl RandomState {
    /// `np.random.RandomState(seed)` for an integer seed (numpy accepts `0..2^32`).
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        key[0] = seed;
        for i in 1..N {
            let prev = key[i - 1];
            key[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        RandomState { key, pos: N }
    }

    /// Regenerates the 624 state words (the reference twist).
    fn generate(&mut self) {
        let twist = |upper: u32, lower: u32, far: u32| {
            let y = (upper & UPPER_MASK) | (lower & LOWER_MASK);
            far ^ (y >> 1) ^ if y & 1 == 1 { MATRIX_A } else { 0 }
        };
        for i in 0..N {
            let far = self.key[(i + M) % N];
            self.key[i] = twist(self.key[i], self.key[(i + 1) % N], far);
        }
        self.pos = 0;
    }

    /// The next 32-bit output (`genrand_int32`: state word, then tempering).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in `[0, max]` by masked rejection (numpy's `random_interval`).
    /// `max` must be below `2^32` (numpy then uses 32-bit draws; see the module docs).
    pub fn random_interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let value = self.next_u32() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// `RandomState.shuffle(x)` of a sequence of rows (a 1-D array's items or a 2-D array's
    /// rows): in place, the same order numpy produces. Panics only for more than `2^32` rows.
    pub fn shuffle<T>(&mut self, rows: &mut [T]) {
        assert!(
            rows.len() as u64 <= 1 << 32,
            "shuffle of more than 2^32 rows needs numpy's 64-bit draws, which are not reproduced"
        );
        for i in (1..rows.len()).rev() {
            let j = self.random_interval(i as u32) as usize;
            rows.swap(i, j);
        }
    }

    /// `RandomState.permutation(n)`: `0..n` shuffled.
    pub fn permutation(&mut self, n: usize) -> Vec<u64> {
        let mut v: Vec<u64> = (0..n as u64).collect();
        self.shuffle(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outputs_match_numpy() {
        // python -c "import numpy as np; print(np.random.RandomState(0).randint(0, 2**32,
        //   size=3, dtype=np.uint64).tolist())"   (a full 32-bit range returns raw words)
        let mut r = RandomState::new(0);
        let got: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(got, vec![2357136044, 2546248239, 3071714933]);
        // The reference mt19937ar output for init_genrand(5489), the C++ std::mt19937 default:
        // its 10000th output is 4123659995.
        let mut r = RandomState::new(5489);
        let last = (0..10_000).map(|_| r.next_u32()).last().unwrap();
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn permutation_matches_numpy() {
        // python -c "import numpy as np; print(np.random.RandomState(0).permutation(100).tolist())"
        let want: Vec<u64> = vec![
            26, 86, 2, 55, 75, 93, 16, 73, 54, 95, 53, 92, 78, 13, 7, 30, 22, 24, 33, 8, 43, 62, 3,
            71, 45, 48, 6, 99, 82, 76, 60, 80, 90, 68, 51, 27, 18, 56, 63, 74, 1, 61, 42, 41, 4,
            15, 17, 40, 38, 5, 91, 59, 0, 34, 28, 50, 11, 35, 23, 52, 10, 31, 66, 57, 79, 85, 32,
            84, 14, 89, 19, 29, 49, 97, 98, 69, 20, 94, 72, 77, 25, 37, 81, 46, 39, 65, 58, 12, 88,
            70, 87, 36, 21, 83, 9, 96, 67, 64, 47, 44,
        ];
        assert_eq!(RandomState::new(0).permutation(100), want);
        // Larger masks and another seed:
        // python -c "import numpy as np; print(np.random.RandomState(0).permutation(6561)[-5:]
        //   .tolist(), np.random.RandomState(123456789).permutation(1000)[:8].tolist())"
        let p = RandomState::new(0).permutation(6561);
        assert_eq!(&p[6556..], &[4931, 3264, 1653, 2607, 2732]);
        let p = RandomState::new(123_456_789).permutation(1000);
        assert_eq!(&p[..8], &[947, 863, 731, 526, 692, 674, 230, 551]);
    }

    #[test]
    fn shuffle_of_rows_moves_whole_rows() {
        // DPT's goal array: numpy shuffles a 2-D array's rows with the same draws as
        // permutation(n), so row k ends where index k does.
        let mut rows: Vec<[i32; 2]> = (0..10).flat_map(|x| (0..10).map(move |y| [x, y])).collect();
        RandomState::new(0).shuffle(&mut rows);
        let perm = RandomState::new(0).permutation(100);
        for (row, &k) in rows.iter().zip(&perm) {
            assert_eq!(*row, [(k / 10) as i32, (k % 10) as i32]);
        }
    }

    #[test]
    fn random_interval_stays_in_range_and_rejects() {
        let mut r = RandomState::new(7);
        for max in [0u32, 1, 2, 5, 99, 1000, u32::MAX] {
            for _ in 0..200 {
                assert!(r.random_interval(max) <= max);
            }
        }
        // max = 4 (mask 7) rejects draws 5..=7, so it consumes more words than max = 3.
        let (mut a, mut b) = (RandomState::new(1), RandomState::new(1));
        for _ in 0..100 {
            a.random_interval(4);
            b.random_interval(3);
        }
        assert!(a.pos > b.pos || a.key != b.key);
    }
}
