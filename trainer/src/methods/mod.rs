//! The training methods, one module each: the algorithm read top to bottom, with the run's
//! chores (folder, checkpoints, logging, interrupts, seeds) borrowed from [`crate::run`].
//!
//! A method is its config type (a variant of [`crate::config::Method`]) implementing
//! [`TrainingMethod`]; [`of`] is the registry, one line per method. docs/extending.md walks
//! through adding one.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::{Config, Method};
use crate::error::UsageError;
use crate::run::checkpoint::Checkpoint;
use crate::run::Run;

pub mod ad;
pub mod bandit;
pub mod dpt;
pub mod ppo_single_task;
pub mod relic;
pub mod rl2;

/// What the trainer, `icrl eval` and the reports need from a method.
pub trait TrainingMethod {
    /// Trains `run` to its budget (continuing from `run.resume_from` on `--resume`).
    fn train(&self, run: &mut Run) -> Result<()>;

    /// `icrl eval`: the in-context evaluation of `ckpt` under `cfg` (the run's config with the
    /// command line's changes to `cfg.eval`); writes and logs the result, returns its file.
    fn evaluate(&self, run: &mut Run, cfg: &Config, ckpt: &Checkpoint) -> Result<PathBuf>;

    /// `icrl eval --offline` (`contexts_per_task` from `--contexts`); only DPT has one.
    fn evaluate_offline(
        &self,
        run: &mut Run,
        _ckpt: &Checkpoint,
        _contexts_per_task: Option<usize>,
    ) -> Result<PathBuf> {
        Err(UsageError(format!(
            "--offline evaluates DPT runs; {} is a {} run",
            run.dir.display(),
            run.config.method_name()
        ))
        .into())
    }

    /// The training budget a report shows for a run evaluated at step `eval_step`: the amount
    /// and its unit (env steps, optimiser steps, ...).
    fn budget(&self, eval_step: u64) -> (f64, &'static str);
}

/// The registry: the method a config names.
pub fn of(method: &Method) -> &dyn TrainingMethod {
    match method {
        Method::Relic(c) => c,
        Method::Dpt(c) => c,
        Method::Ad(c) => c,
        Method::Rl2(c) => c,
        Method::PpoTask(c) => c,
        Method::BanditBaselines(c) => c,
    }
}
