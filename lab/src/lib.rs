//! Experiment tooling on top of the trainer: experiment files ([`experiment`]), resumable sweeps
//! that run `icrl train` once per (variant, seed) ([`sweep`]), and reports over run and sweep
//! folders ([`report`]). Depends on `trainer`; nothing in `trainer` depends on it.
pub mod experiment;
pub mod report;
pub mod sink_mass;
pub mod slurm;
pub mod sweep;

/// True when `e` is bad input (the `icrl` binary exits with code 2 for it): a config or
/// experiment file that does not parse or validate, or a usage error.
#[cfg(test)]
fn is_bad_input(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<trainer::config::ConfigError>() || c.is::<trainer::error::UsageError>())
}
