//! Seeds derived from a run's seed. Every draw of a method is seeded from (run seed, what, when)
//! so a resumed run repeats the uninterrupted one exactly. The salts below are part of that
//! contract: changing one changes every run of the method that uses it.

/// The seed of iteration `index` (a rollout, an optimiser step) of a run seeded `run_seed`, in
/// the stream named by `salt` (each method has its own, so that methods sharing a run seed do
/// not share draws). SplitMix64-style mixing.
pub fn iteration_seed(run_seed: u64, salt: u64, index: u64) -> u64 {
    envs::rng::mix64(run_seed ^ envs::rng::mix64(index.wrapping_add(salt)))
}

/// The seed of the in-context evaluation of a run seeded `run_seed` (the same for every method,
/// every step and `icrl eval`, so evaluations at different steps see the same tasks and draws).
pub fn eval_seed(run_seed: u64) -> u64 {
    run_seed ^ 0xE7A1_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_iterations_get_distinct_seeds() {
        let a = iteration_seed(0, 1, 0);
        assert_ne!(a, iteration_seed(0, 1, 1));
        assert_ne!(a, iteration_seed(0, 2, 0));
        assert_ne!(a, iteration_seed(1, 1, 0));
        assert_eq!(a, iteration_seed(0, 1, 0));
        assert_ne!(eval_seed(3), eval_seed(4));
    }
}
