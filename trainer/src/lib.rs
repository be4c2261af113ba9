//! Trainers, evaluation, logging and checkpoints. See DESIGN.md §6-8.
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
pub mod eval;
pub mod methods;
pub mod optim;
pub mod plot;
pub mod ppo_math;
pub mod results;
pub mod run;
pub mod stats;

use std::path::{Path, PathBuf};

use anyhow::Context;

use config::{EvalSplit, Method};
use error::UsageError;
use eval::EvalOverrides;
use methods::{ad, bandit, dpt, ppo_single_task, relic, rl2};
use run::checkpoint;

/// Trains the method named in the run's config.
pub fn train(run: &mut run::Run) -> anyhow::Result<()> {
    match run.config.method.clone() {
        Method::Relic(ppo) => relic::train(run, &ppo),
        Method::Dpt(c) => dpt::train(run, &c),
        Method::BanditBaselines(c) => bandit::train(run, &c),
        Method::Rl2(c) => rl2::train(run, &c),
        Method::PpoTask(c) => ppo_single_task::train(run, &c),
        Method::Ad(c) => ad::train(run, &c),
    }
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
    let spec = cfg.env.spec();
    match &cfg.method {
        Method::Relic(ppo) => {
            let mut vs = tch::nn::VarStore::new(run.device);
            let model = agent::ActorCritic::new(&vs.root(), &cfg.model, &sampler::obs_spec(&spec))?;
            checkpoint::load_into_varstore(&mut vs, &ckpt, "")?;
            let result =
                eval::evaluate_actor_critic(&model, &cfg, ppo.rollout_len, ckpt.meta.step)?;
            let json = eval::publish(&mut run, &result)?;
            Ok(json)
        }
        Method::Dpt(dpt) => {
            let (_vs, model) = dpt::load_model(&cfg, dpt, &ckpt, run.device)?;
            let result = dpt::online_result(&model, dpt, &cfg, ckpt.meta.step, run.device)?;
            let json = eval::publish(&mut run, &result)?;
            Ok(json)
        }
        Method::BanditBaselines(c) => bandit::evaluate(&mut run, c),
        Method::Rl2(c) => rl2::evaluate_checkpoint(&mut run, &cfg, c, &ckpt),
        Method::PpoTask(c) => ppo_single_task::evaluate(&mut run, &cfg, c),
        Method::Ad(c) => ad::evaluate_checkpoint(&mut run, &cfg, c, &ckpt),
    }
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
    let cfg = run.config.clone();
    match &cfg.method {
        Method::Dpt(dpt) => {
            let (_vs, model) = dpt::load_model(&cfg, dpt, &ckpt, run.device)?;
            let mut dpt = dpt.clone();
            if let Some(n) = contexts_per_task {
                if n == 0 {
                    return Err(UsageError("--contexts must be >= 1".into()).into());
                }
                dpt.offline_contexts_per_task = n;
            }
            dpt::offline(&mut run, &model, &dpt, ckpt.meta.step)
        }
        _ => Err(UsageError(format!(
            "--offline evaluates DPT runs; {} is a {} run",
            run_dir.display(),
            cfg.method_name()
        ))
        .into()),
    }
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
