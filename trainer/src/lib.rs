//! Trainers, evaluation, logging, checkpoints and the `icrl` command line. See DESIGN.md §6-8.
pub mod cli;
pub mod config;
pub mod fsutil;
pub mod info;
pub mod progress;
pub mod run_dir;

pub use config::Config;
pub mod checkpoint;
pub mod eval;
pub mod experiment;
pub mod logging;
pub mod optim;
pub mod plot;
pub mod ppo_math;
pub mod relic;
pub mod report;
pub mod run;
pub mod stats;
pub mod sweep;

use std::path::{Path, PathBuf};

use anyhow::Context;

use config::{EvalSplit, Method};

/// Trains the method named in the run's config.
pub fn train(run: &mut run::Run) -> anyhow::Result<()> {
    match run.config.method.clone() {
        Method::Relic(ppo) => relic::train(run, &ppo),
    }
}

/// `icrl eval`: evaluates a run's checkpoint with the in-context protocol (overrides from the
/// command line), writes `eval/<step>.json` and its plot, and returns the JSON's path.
pub fn evaluate_run(
    run_dir: &Path,
    checkpoint_path: Option<&Path>,
    episodes: Option<usize>,
    trials: Option<usize>,
    split: Option<EvalSplit>,
    greedy: bool,
    device: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let mut run = run::Run::resume(run_dir, device)?;
    let ckpt = match checkpoint_path {
        Some(p) => checkpoint::load(p)?,
        None => run.resume_from.take().with_context(|| {
            cli::UsageError(format!(
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
        cfg.eval.split = s;
    }
    cfg.eval.greedy |= greedy;
    if cfg.eval.episodes_per_trial == 0 || cfg.eval.trials_per_task == 0 {
        return Err(cli::UsageError("--episodes and --trials must be >= 1".into()).into());
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
                cfg.seed ^ 0xE7A1_0000,
                ckpt.meta.step,
                cfg.method_name(),
            )?;
            let json = eval::write(&run.dir, &result)?;
            eval::log(&mut run.logger, &result, Some(&json.with_extension("png")))?;
            Ok(json)
        }
    }
}
