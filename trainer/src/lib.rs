//! Trainers, evaluation, logging and checkpoints. See DESIGN.md §6-8.
//!
//! Layout: [`methods`] holds one module per training method; [`run`] the run folder and its
//! chores (checkpoints, logging, progress, interrupts); [`config`] the config tree; [`data`],
//! [`eval`], [`plot`] and [`stats`] the datasets, evaluation and figures the methods share;
//! [`error`] the error types at the bottom. The experiment tooling (experiment files, sweeps,
//! reports) is the `lab` crate and the command line the `icrl` binary; both depend on this
//! crate, never the reverse.
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
pub mod run;
pub mod stats;

use std::path::{Path, PathBuf};

use anyhow::Context;

use config::{EvalSplit, Method};
use error::UsageError;
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

/// `icrl eval`: evaluates a run's checkpoint with the in-context protocol (overrides from the
/// command line), writes `eval/<step>.json` and its plot, and returns the JSON's path.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_run(
    run_dir: &Path,
    checkpoint_path: Option<&Path>,
    episodes: Option<usize>,
    trials: Option<usize>,
    split: Option<EvalSplit>,
    greedy: bool,
    context: Option<usize>,
    device: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let mut run = run::Run::resume(run_dir, device)?;
    let ckpt = match checkpoint_path {
        Some(p) => checkpoint::load(p)?,
        None => run.resume_from.take().with_context(|| {
            UsageError(format!(
                "{}: the run has no checkpoint yet",
                run_dir.display()
            ))
        })?,
    };
    let mut cfg = run.config.clone();
    if let Some(e) = episodes {
        cfg.eval.episodes_per_trial = e;
    }
    if let Some(t) = trials {
        cfg.eval.trials_per_task = t;
    }
    if let Some(s) = split {
        if s == EvalSplit::Validation && cfg.train_on_validation {
            return Err(UsageError(format!(
                "{}: --split validation: this run trained on the Validation tasks \
                 (train_on_validation: true), so its Validation scores are not held out",
                run_dir.display()
            ))
            .into());
        }
        cfg.eval.split = s;
    }
    cfg.eval.greedy |= greedy;
    if context.is_some() {
        cfg.eval.context_window = context;
    }
    cfg.eval.tag = eval_tag(&run.config.eval, &cfg.eval);
    if cfg.eval.episodes_per_trial == 0 || cfg.eval.trials_per_task == 0 || context == Some(0) {
        return Err(UsageError("--episodes, --trials and --context must be >= 1".into()).into());
    }
    let spec = cfg.env.spec();
    match &cfg.method {
        Method::Relic(ppo) => {
            let mut vs = tch::nn::VarStore::new(run.device);
            let model = agent::ActorCritic::new(&vs.root(), &cfg.model, &sampler::obs_spec(&spec))?;
            checkpoint::load_into_varstore(&mut vs, &ckpt, "")?;
            let result = eval::evaluate_actor_critic(
                &model,
                &cfg.env,
                &cfg.eval,
                &cfg.sampler,
                ppo.rollout_len,
                cfg.experience_seed() ^ 0xE7A1_0000,
                ckpt.meta.step,
                cfg.method_name(),
            )?;
            let json = eval::write(&run.dir, &result)?;
            eval::log(&mut run.logger, &result, Some(&json.with_extension("png")))?;
            Ok(json)
        }
        Method::Dpt(dpt) => {
            let (_vs, model) = dpt::load_model(&cfg, dpt, &ckpt, run.device)?;
            let result = dpt::online_result(&model, dpt, &cfg, ckpt.meta.step, run.device)?;
            let json = eval::write(&run.dir, &result)?;
            eval::log(&mut run.logger, &result, Some(&json.with_extension("png")))?;
            Ok(json)
        }
        Method::BanditBaselines(c) => bandit::evaluate(&mut run, c),
        Method::Rl2(c) => rl2::evaluate_checkpoint(&mut run, &cfg, c, &ckpt),
        Method::PpoTask(c) => ppo_single_task::evaluate(&mut run, &cfg, c),
        Method::Ad(c) => ad::evaluate_checkpoint(&mut run, &cfg, c, &ckpt),
    }
}

/// What an `icrl eval` protocol changes from the config's (`greedy_t10_e40_train_ctx512`);
/// empty when nothing does, so a plain `icrl eval` reproduces the training-time file.
fn eval_tag(trained: &config::EvalConfig, now: &config::EvalConfig) -> String {
    let mut parts = Vec::new();
    if now.greedy != trained.greedy {
        parts.push(if now.greedy {
            "greedy".to_string()
        } else {
            "sampled".to_string()
        });
    }
    if now.trials_per_task != trained.trials_per_task {
        parts.push(format!("t{}", now.trials_per_task));
    }
    if now.episodes_per_trial != trained.episodes_per_trial {
        parts.push(format!("e{}", now.episodes_per_trial));
    }
    if now.split != trained.split {
        parts.push(format!("{:?}", now.split).to_lowercase());
    }
    if now.context_window != trained.context_window {
        parts.push(match now.context_window {
            Some(c) => format!("ctx{c}"),
            None => "ctxtrained".to_string(),
        });
    }
    parts.join("_")
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
    let mut run = run::Run::resume(run_dir, device)?;
    let ckpt = match checkpoint_path {
        Some(p) => checkpoint::load(p)?,
        None => run.resume_from.take().with_context(|| {
            UsageError(format!(
                "{}: the run has no checkpoint yet",
                run_dir.display()
            ))
        })?,
    };
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
