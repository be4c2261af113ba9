//! Trainers, evaluation, logging and checkpoints. See docs/architecture.md.
//!
//! Layout: [`methods`] holds one module per training method; [`run`] the run folder and its
//! chores (checkpoints, logging, progress, interrupts); [`config`] the config tree; [`data`],
//! [`eval`], [`plot`] and [`stats`] the datasets, evaluation and figures the methods share;
//! [`error`] the error types at the bottom. The experiment tooling (experiment files, sweeps,
//! reports) is the `lab` crate and the command line the `icrl` binary; both depend on this
//! crate, never the reverse.
pub mod bench_train;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod info;

pub use config::Config;
pub mod data;
pub mod diagnostics;
pub mod eval;
pub mod memory_plan;
pub mod methods;
pub mod optim;
pub mod plot;
pub mod ppo_math;
pub mod replicas;
pub mod results;
pub mod run;
pub mod stats;

use std::path::{Path, PathBuf};

use anyhow::Context;

use config::EvalSplit;
use error::UsageError;
use eval::EvalOverrides;

/// Trains the method named in the run's config.
pub fn train(run: &mut run::Run) -> anyhow::Result<()> {
    let method = run.config.method.clone();
    methods::of(&method).train(run).map_err(|e| {
        // Work stopped by a signal between two checkpoints (an evaluation): say where to
        // resume, like a run stopped at a checkpoint does.
        match e.downcast::<run::signals::Stopped>() {
            Ok(stopped) => run::signals::Stopped {
                what: format!(
                    "{}; the saved checkpoints are kept; resume with: icrl train --resume {}",
                    stopped.what,
                    run.dir.display()
                ),
            }
            .into(),
            Err(e) => e,
        }
    })
}

/// `icrl eval`: evaluates a run's checkpoint (the latest, or `checkpoint_path`) with the
/// in-context protocol changed by `overrides`, writes `eval/<step>.json` and its plot, and
/// returns the JSON's path.
pub fn evaluate_run(
    run_dir: &Path,
    checkpoint_path: Option<&Path>,
    overrides: &EvalOverrides,
    device: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let (mut run, ckpt) = open_for_evaluation(run_dir, checkpoint_path, device)?;
    let mut cfg = run.config.clone();
    if overrides.split == Some(EvalSplit::Validation) && cfg.train_on_validation {
        return Err(UsageError(format!(
            "{}: --split validation: this run trained on the Validation tasks \
             (train_on_validation: true), so its Validation scores are not held out",
            run_dir.display()
        ))
        .into());
    }
    cfg.eval = overrides.apply(&run.config.eval)?;
    methods::of(&cfg.method).evaluate(&mut run, &cfg, &ckpt)
}

/// `icrl eval --offline`: DPT's offline evaluation of a run's checkpoint (fixed contexts from
/// the dataset's generator on the held-out tasks, greedy and sampled; on bandits the
/// comparison with the classic algorithms); returns the result's path.
pub fn evaluate_run_offline(
    run_dir: &Path,
    checkpoint_path: Option<&Path>,
    contexts_per_task: Option<usize>,
    device: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let (mut run, ckpt) = open_for_evaluation(run_dir, checkpoint_path, device)?;
    let method = run.config.method.clone();
    methods::of(&method).evaluate_offline(&mut run, &ckpt, contexts_per_task)
}

/// Opens a run folder for evaluation, reading only the checkpoint to evaluate: the named file
/// (a damaged latest checkpoint does not stop an older one's evaluation) or the latest.
fn open_for_evaluation(
    run_dir: &Path,
    checkpoint_path: Option<&Path>,
    device: Option<&str>,
) -> anyhow::Result<(run::Run, run::checkpoint::Checkpoint)> {
    let choice = match checkpoint_path {
        Some(file) => run::CheckpointChoice::File(file),
        None => run::CheckpointChoice::Latest,
    };
    let mut run = run::Run::resume_with(run_dir, device, choice)?;
    let ckpt = run.resume_from.take().with_context(|| {
        UsageError(format!(
            "{}: the run has no checkpoint yet",
            run_dir.display()
        ))
    })?;
    Ok((run, ckpt))
}
