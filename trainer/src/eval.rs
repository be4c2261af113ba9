//! In-context evaluation, one protocol for every method: on the tasks of a split, N trials per
//! task, E episodes per trial, context carried across episodes (a sliding window past the
//! trained context). The result is the in-context learning curve: mean return (and success)
//! per episode index with 95% confidence intervals, written as `eval/<step>.json`, logged to
//! TensorBoard and plotted as `eval/<step>.png`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use agent::{ActorCritic, LayerAttention};
use envs::EnvConfig;
use sampler::{ModelPolicy, Policy, RolloutStorage, Sampler};

use crate::config::{Config, EvalConfig, EvalSplit};
use crate::error::UsageError;
use crate::plot::{self, Series};
use crate::results::{CurvePoint, EvalResult};
use crate::run::logging::Logger;
use crate::run::{seeds, Run};

/// The tasks evaluation runs on.
pub fn eval_tasks(env: &EnvConfig, cfg: &EvalConfig) -> Result<Vec<envs::TaskId>> {
    let probe = env.build(0, 0, 1)?;
    let split = cfg.split.split();
    let mut tasks = probe.tasks(split);
    if let Some(max) = cfg.max_tasks {
        tasks.truncate(max);
    }
    anyhow::ensure!(
        !tasks.is_empty(),
        "environment {} has no {:?} tasks",
        env.name(),
        cfg.split
    );
    Ok(tasks)
}

/// Runs trials until every slot has finished `episodes` episodes; returns `[slot][episode]`
/// (return, success). `policy` acts; `horizon` bounds an episode's length.
pub fn run_trials(
    sampler: &mut Sampler,
    policy: &mut dyn Policy,
    storage: &mut RolloutStorage,
    tasks: &[envs::TaskId],
    episodes: usize,
    chunk: usize,
) -> Result<Vec<Vec<(f64, bool)>>> {
    let slots = tasks.len();
    let mut results: Vec<Vec<(f64, bool)>> = vec![Vec::new(); slots];
    sampler.start_trials(tasks, storage)?;
    while results.iter().any(|r| r.len() < episodes) {
        stop_if_signalled()?;
        let room = storage.rollout_len() - storage.len;
        anyhow::ensure!(
            room > 0,
            "evaluation: trials did not finish {episodes} episodes within {} steps",
            storage.rollout_len()
        );
        let stats = sampler.collect(policy, storage, chunk.min(room))?;
        for ep in stats.episodes {
            if results[ep.slot].len() < episodes {
                results[ep.slot].push((ep.ret, ep.success));
            }
        }
    }
    Ok(results)
}

/// Abandons an evaluation once a stop signal arrived (only a training run installs the
/// handler): a final evaluation can take minutes, longer than a scheduler waits between
/// SIGTERM and SIGKILL. Nothing of the evaluation is written; the run's last checkpoint stays,
/// and `icrl train --resume` evaluates again from it.
pub fn stop_if_signalled() -> Result<()> {
    if crate::run::interrupted() {
        return Err(crate::run::signals::Stopped {
            what: "the evaluation was abandoned (nothing of it written)".into(),
        }
        .into());
    }
    Ok(())
}

/// An actor-critic's evaluation: the in-context curve and, with diagnostics on
/// (`logging.diagnostics_every_updates > 0`), the attention statistics of a few of its trials
/// (empty otherwise).
pub struct ActorCriticEval {
    /// The in-context curve.
    pub result: EvalResult,
    /// Per layer, from `logging.diagnostics_sequences` trials spread over the tasks, over
    /// their first `min(trial length, context window)` tokens (the context the policy saw
    /// in full).
    pub attention: Vec<LayerAttention>,
}

impl ActorCriticEval {
    /// Writes and logs the curve ([`publish`]) and logs the attention statistics under
    /// `<section>_attention/` (`eval_attention/` for the config's protocol); returns the JSON's
    /// path.
    pub fn publish(&self, run: &mut Run) -> Result<PathBuf> {
        let json = publish(run, &self.result)?;
        let section = format!("{}_attention", section(&self.result));
        crate::diagnostics::log_attention(
            &mut run.logger,
            &section,
            self.result.step,
            &self.attention,
            false,
        )?;
        Ok(json)
    }
}

/// The line a training run prints after an evaluation: the first and last episode's mean
/// return and the JSON written.
pub fn print_summary(result: &EvalResult, json: &Path) {
    let first = result.curve.first().map_or(f64::NAN, |p| p.ret.mean);
    let last = result.curve.last().map_or(f64::NAN, |p| p.ret.mean);
    eprintln!(
        "eval at step {}: return episode 1 = {first:.1}, episode {} = {last:.1} ({})",
        result.step,
        result.episodes_per_trial,
        json.display()
    );
}

/// Evaluates an actor-critic transformer trained under `run_cfg` with its protocol
/// (`run_cfg.eval`) at training step `step`; `context` is the trained context length (the KV
/// cache slides past it).
pub fn evaluate_actor_critic(
    model: &ActorCritic,
    run_cfg: &Config,
    context: usize,
    step: u64,
) -> Result<ActorCriticEval> {
    let (env, cfg, sampler_cfg) = (&run_cfg.env, &run_cfg.eval, &run_cfg.sampler);
    let (seed, method) = (
        seeds::eval_seed(run_cfg.experience_seed()),
        run_cfg.method_name(),
    );
    let _guard = tch::no_grad_guard();
    let tasks = eval_tasks(env, cfg)?;
    let trial_tasks: Vec<envs::TaskId> = tasks
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t, cfg.trials_per_task))
        .collect();
    let spec = env.spec();
    let max_steps = cfg.episodes_per_trial * spec.horizon;
    let mut sampler = Sampler::new(env, sampler_cfg, trial_tasks.len(), seed)?;
    let device = model.actor.ws.device();
    let mut storage = RolloutStorage::new(&spec, trial_tasks.len(), max_steps, device)?;
    let window = cfg.context_window.unwrap_or(context).max(1);
    let mut policy = ModelPolicy::with_inference(
        model,
        &sampler.act_groups(),
        window,
        seed,
        sampler_cfg.inference,
    )?;
    policy.set_greedy(cfg.greedy);
    let results = run_trials(
        &mut sampler,
        &mut policy,
        &mut storage,
        &trial_tasks,
        cfg.episodes_per_trial,
        spec.horizon,
    )?;
    let logging = &run_cfg.logging;
    let attention = if logging.diagnostics_every_updates > 0 && storage.len > 0 {
        // Trials spread over the tasks, each from its start over the context it saw whole.
        let (slots, probe) = (trial_tasks.len(), logging.diagnostics_sequences.max(1));
        let rows: Vec<i64> = (0..probe.min(slots))
            .map(|i| (i * slots / probe.min(slots)) as i64)
            .collect();
        let rows = tch::Tensor::from_slice(&rows).to_device(device);
        let inputs = storage.inputs(0, storage.len.min(window));
        model.attention_diagnostics(&inputs.select_rows(&rows))?
    } else {
        Vec::new()
    };
    Ok(ActorCriticEval {
        result: summarise(
            &results,
            env,
            cfg,
            tasks.len(),
            step,
            method,
            spec.has_success,
        ),
        attention,
    })
}

/// Turns per-slot episode outcomes into the curve.
pub use crate::stats::clustered_by_task;

/// The curve of `results` (`[trial][episode]` as (return, success), trials ordered by task
/// then trial): per episode, the mean over trials with its interval clustered by task
/// ([`clustered_by_task`]).
pub fn summarise(
    results: &[Vec<(f64, bool)>],
    env: &EnvConfig,
    cfg: &EvalConfig,
    tasks: usize,
    step: u64,
    method: &str,
    has_success: bool,
) -> EvalResult {
    let curve = (0..cfg.episodes_per_trial)
        .map(|e| {
            let rets: Vec<f64> = results.iter().map(|r| r[e].0).collect();
            let succ: Vec<f64> = results
                .iter()
                .map(|r| f64::from(u8::from(r[e].1)))
                .collect();
            CurvePoint {
                episode: e + 1,
                ret: clustered_by_task(&rets, tasks),
                success: has_success.then(|| clustered_by_task(&succ, tasks)),
            }
        })
        .collect();
    EvalResult {
        step,
        env: env.name().to_string(),
        method: method.to_string(),
        split: cfg.split,
        tasks,
        trials_per_task: cfg.trials_per_task,
        episodes_per_trial: cfg.episodes_per_trial,
        greedy: cfg.greedy,
        curve,
        returns: results
            .iter()
            .map(|r| r.iter().map(|x| x.0).collect())
            .collect(),
        tag: cfg.tag.clone(),
    }
}

/// File stem of a result: `<step>` for the config's protocol, `<step>_<tag>` otherwise.
fn file_stem(result: &EvalResult) -> String {
    if result.tag.is_empty() {
        format!("{:012}", result.step)
    } else {
        format!("{:012}_{}", result.step, result.tag)
    }
}

/// Writes `eval/<step>.json` and `eval/<step>.png` under `run_dir` (`<step>_<tag>.*` for an
/// evaluation off the config's protocol); returns the JSON path.
pub fn write(run_dir: &Path, result: &EvalResult) -> Result<PathBuf> {
    let dir = crate::fsutil::create_subdir(run_dir, crate::run::dir::EVAL_DIR)?;
    let stem = file_stem(result);
    let json = dir.join(format!("{stem}.json"));
    crate::fsutil::write_atomic(&json, serde_json::to_string_pretty(result)?.as_bytes())?;
    let label = if result.tag.is_empty() {
        format!("{} (step {})", result.method, result.step)
    } else {
        format!("{} (step {}, {})", result.method, result.step, result.tag)
    };
    let series = vec![Series::from_curve(&label, &result.curve)];
    let png = dir.join(format!("{stem}.png"));
    plot::curves(
        &png,
        &format!("{} on {}: in-context return", result.method, result.env),
        "episode in trial",
        "return",
        &series,
        &[],
    )?;
    Ok(json)
}

/// Logs the curve: `eval/return_ep<k>` (and `eval/success_ep<k>`) at the training step, the
/// first and last episode's return, and the plot as an image. A tagged result logs under
/// `eval_<tag>/` so that it never mixes with the training-time curve.
pub fn log(logger: &mut dyn Logger, result: &EvalResult, png: Option<&Path>) -> Result<()> {
    let step = result.step;
    let section = section(result);
    for p in &result.curve {
        logger.scalar(
            &format!("{section}/return_ep{:02}", p.episode),
            step,
            p.ret.mean,
        )?;
        if let Some(s) = p.success {
            logger.scalar(
                &format!("{section}/success_ep{:02}", p.episode),
                step,
                s.mean,
            )?;
        }
    }
    if let (Some(first), Some(last)) = (result.curve.first(), result.curve.last()) {
        logger.scalar(
            &format!("{section}/return_first_episode"),
            step,
            first.ret.mean,
        )?;
        logger.scalar(
            &format!("{section}/return_last_episode"),
            step,
            last.ret.mean,
        )?;
    }
    if let Some(png) = png {
        if let Ok((rgb, h, w)) = plot::read_png_rgb(png) {
            logger.image(&format!("{section}/curve"), step, &rgb, h, w)?;
        }
    }
    Ok(())
}

/// The TensorBoard section of a result: `eval`, or `eval_<tag>` off the config's protocol.
pub fn section(result: &EvalResult) -> String {
    if result.tag.is_empty() {
        "eval".to_string()
    } else {
        format!("eval_{}", result.tag)
    }
}

/// Writes `result` into the run folder (`eval/<step>.json` and its plot) and logs it with the
/// plot as an image; returns the JSON's path.
pub fn publish(run: &mut Run, result: &EvalResult) -> Result<PathBuf> {
    let json = write(&run.dir, result)?;
    log(&mut run.logger, result, Some(&json.with_extension("png")))?;
    Ok(json)
}

/// The evaluation JSON files of a run made with the config's own protocol (`<step>.json`,
/// not the tagged ones of `icrl eval` with overrides), sorted by step.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_steps(&run_dir.join(crate::run::dir::EVAL_DIR)))
}

/// The `<step>.json` files of `dir` (file stem all digits), sorted by step; none if `dir`
/// does not exist. Also used for `offline/` and `bandit/`.
pub fn list_steps(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter(|p| {
                p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Reads one evaluation JSON file.
pub fn read(path: &Path) -> Result<EvalResult> {
    crate::fsutil::read_json(path, "an evaluation result")
}

/// What `icrl eval` changes from a run's evaluation protocol (None and false keep the config's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalOverrides {
    /// Episodes per trial.
    pub episodes: Option<usize>,
    /// Trials per task.
    pub trials: Option<usize>,
    /// Task split.
    pub split: Option<EvalSplit>,
    /// Act greedily.
    pub greedy: bool,
    /// KV-cache window in tokens.
    pub context: Option<usize>,
}

impl EvalOverrides {
    /// The protocol `trained` with these changes, tagged with what differs (so its files sit
    /// beside the training-time ones); a usage error for zero episodes, trials or context.
    pub fn apply(&self, trained: &EvalConfig) -> Result<EvalConfig> {
        let mut now = trained.clone();
        if let Some(e) = self.episodes {
            now.episodes_per_trial = e;
        }
        if let Some(t) = self.trials {
            now.trials_per_task = t;
        }
        if let Some(s) = self.split {
            now.split = s;
        }
        now.greedy |= self.greedy;
        if self.context.is_some() {
            now.context_window = self.context;
        }
        now.tag = eval_tag(trained, &now);
        if now.episodes_per_trial == 0 || now.trials_per_task == 0 || self.context == Some(0) {
            return Err(
                UsageError("--episodes, --trials and --context must be >= 1".into()).into(),
            );
        }
        Ok(now)
    }
}

/// What an `icrl eval` protocol changes from the config's (`greedy_t10_e40_train_ctx512`);
/// empty when nothing does, so a plain `icrl eval` reproduces the training-time file.
fn eval_tag(trained: &EvalConfig, now: &EvalConfig) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_one_point_per_episode_with_intervals() {
        let env = EnvConfig::from_name("darkroom").unwrap();
        let cfg = EvalConfig {
            episodes_per_trial: 3,
            ..EvalConfig::default()
        };
        let results = vec![
            vec![(1.0, false), (10.0, true), (20.0, true)],
            vec![(3.0, false), (12.0, true), (22.0, false)],
        ];
        let r = summarise(&results, &env, &cfg, 2, 100, "relic", true);
        assert_eq!(r.curve.len(), 3);
        assert_eq!(r.curve[0].episode, 1);
        assert!((r.curve[0].ret.mean - 2.0).abs() < 1e-12);
        assert!((r.curve[1].success.unwrap().mean - 1.0).abs() < 1e-12);
        assert!((r.curve[2].success.unwrap().mean - 0.5).abs() < 1e-12);
        // Mean of episodes 2..3 per trial: 15 and 17.
        let later = r.mean_over_episodes(2, 3);
        assert!((later.mean - 16.0).abs() < 1e-12);
        assert_eq!(later.n, 2);
    }

    #[test]
    fn intervals_are_clustered_by_task() {
        let env = EnvConfig::from_name("darkroom").unwrap();
        let cfg = EvalConfig {
            episodes_per_trial: 1,
            trials_per_task: 3,
            ..EvalConfig::default()
        };
        // Task A's three trials score 0, task B's 10: six trials, two independent tasks.
        let results: Vec<Vec<(f64, bool)>> = [0.0, 0.0, 0.0, 10.0, 10.0, 10.0]
            .iter()
            .map(|&r| vec![(r, false)])
            .collect();
        let r = summarise(&results, &env, &cfg, 2, 100, "relic", false);
        let ret = r.curve[0].ret;
        assert_eq!(ret.n, 2);
        assert!((ret.mean - 5.0).abs() < 1e-12);
        // t(1) x se of the task means (0, 10) = 12.706 x 5; over trials it would be 2.571 x 2.24.
        assert!((ret.ci95 - 12.706 * 5.0).abs() < 1e-6, "{}", ret.ci95);
        assert_eq!(r.mean_over_episodes(1, 1).n, 2);
    }
}
