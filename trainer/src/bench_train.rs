//! `icrl bench train --config C --steps N`: end-to-end env steps/s of a ReLIC config, with
//! where the time goes (sampling = policy inference + env stepping, PPO update, KV-cache
//! refresh after partial updates); for a DPT config, training tokens/s of `N` optimiser
//! steps, split into drawing batches and the step (forward, backward, Adam).
//!
//! The config trains for about `N` env steps (whole rollouts of `num_envs x rollout_len`) in a
//! temporary run folder, with no checkpoints, no TensorBoard files and a one-episode final
//! evaluation; the numbers are the sums of the trainer's own per-rollout `perf/*` timings,
//! so the evaluation and start-up are not counted. DPT's dataset is generated once into
//! `<temp>/icrl-bench-train-data/` and reused by later benches of the same data config.

use crate::config::Method;
use crate::run::logging::{GuardedLogger, MemoryLogger};
use crate::run::Run;
use crate::Config;
use anyhow::{ensure, Context, Result};
use serde_json::json;

/// Trains `config` (a ReLIC config) for about `steps` env steps and returns one JSON object.
pub fn bench_train(
    mut config: Config,
    steps: u64,
    device: Option<&str>,
) -> Result<serde_json::Value> {
    ensure!(steps > 0, "bench train: --steps must be at least 1");
    if matches!(config.method, Method::Dpt(_)) {
        return bench_dpt(config, steps, device);
    }
    let (num_envs, rollout_len) = match &mut config.method {
        Method::Relic(ppo) => {
            ppo.total_steps = steps;
            (ppo.num_envs, ppo.rollout_len)
        }
        _ => anyhow::bail!(
            "bench train supports ReLIC and DPT configs (method: Relic(...) or Dpt(...)), got {}",
            config.method_name()
        ),
    };
    config.eval.every_steps = 0;
    quiet(&mut config);
    let out = std::env::temp_dir().join(format!("icrl-bench-train-{}", std::process::id()));
    let result = (|| -> Result<serde_json::Value> {
        let mut run = Run::start(config.clone(), &out, device)?;
        let memory = MemoryLogger::new();
        run.logger = GuardedLogger::new(Box::new(memory.clone()), config.logging.on_error);
        crate::train(&mut run).context("bench train: training")?;
        let total = |tag: &str| -> f64 { memory.scalars(tag).iter().map(|(_, v)| v).sum() };
        let rollouts = memory.scalars("perf/rollout_seconds").len();
        let env_steps = (rollouts * num_envs * rollout_len) as f64;
        let seconds = total("perf/rollout_seconds");
        let (collect, update, refresh) = (
            total("perf/collect_seconds"),
            total("perf/update_seconds"),
            total("perf/refresh_seconds"),
        );
        let (inference, env) = (total("perf/inference_seconds"), total("perf/env_seconds"));
        let diagnostics = total("perf/diagnostics_seconds");
        let share = |x: f64| x / seconds.max(1e-12);
        Ok(json!({
            "bench": "train",
            "config": config.name,
            "method": config.method_name(),
            "num_envs": num_envs,
            "rollout_len": rollout_len,
            "rollouts": rollouts,
            "env_steps": env_steps,
            "seconds": seconds,
            "env_steps_per_s": env_steps / seconds.max(1e-12),
            "sampling_seconds": collect,
            "inference_seconds": inference,
            "env_seconds": env,
            "update_seconds": update,
            "refresh_seconds": refresh,
            "diagnostics_seconds": diagnostics,
            "sampling_share": share(collect),
            "inference_share": share(inference),
            "env_share": share(env),
            "update_share": share(update),
            "refresh_share": share(refresh),
            "diagnostics_share": share(diagnostics),
            "other_share": share(seconds - collect - update - refresh - diagnostics).max(0.0),
            "sampler_inference": format!("{:?}", config.sampler.inference),
            "torch_threads": tch::get_num_threads(),
        }))
    })();
    let _ = std::fs::remove_dir_all(&out);
    result
}

/// A benchmark run: a one-episode final evaluation, no checkpoints, no event files, no bar.
fn quiet(config: &mut Config) {
    config.eval.max_tasks = Some(1);
    config.eval.trials_per_task = 1;
    config.eval.episodes_per_trial = 1;
    config.checkpoint.every_updates = 0;
    config.logging.tensorboard = false;
    config.logging.progress = false;
}

/// `bench_train` for a DPT config: `steps` optimiser steps.
fn bench_dpt(mut config: Config, steps: u64, device: Option<&str>) -> Result<serde_json::Value> {
    let Method::Dpt(dpt) = &mut config.method else {
        anyhow::bail!("bench_dpt needs a DPT config");
    };
    dpt.steps = steps;
    dpt.offline_eval_every = 0;
    dpt.offline_contexts_per_task = 1;
    let (batch, context_len) = (dpt.batch_size, dpt.data.context_len);
    quiet(&mut config);
    // The dataset stays for the next bench; the run folder goes.
    let runs = std::env::temp_dir().join("icrl-bench-train-data");
    let mut run = Run::start(config.clone(), &runs, device)?;
    let run_dir = run.dir.clone();
    let result = (|| -> Result<serde_json::Value> {
        let memory = MemoryLogger::new();
        run.logger = GuardedLogger::new(Box::new(memory.clone()), config.logging.on_error);
        crate::train(&mut run).context("bench train: training")?;
        let total = |tag: &str| -> f64 { memory.scalars(tag).iter().map(|(_, v)| v).sum() };
        let (batch_secs, step_secs) = (total("perf/batch_seconds"), total("perf/step_seconds"));
        let seconds = batch_secs + step_secs;
        let tokens = (steps as usize * batch * (context_len + 1)) as f64;
        Ok(json!({
            "bench": "train",
            "config": config.name,
            "method": config.method_name(),
            "batch": batch,
            "tokens_per_example": context_len + 1,
            "layers": config.model.layers,
            "d_model": config.model.d_model,
            "heads": config.model.heads,
            "steps": steps,
            "seconds": seconds,
            "train_tokens_per_s": tokens / seconds.max(1e-12),
            "step_ms": 1000.0 * step_secs / steps as f64,
            "batch_seconds": batch_secs,
            "step_seconds": step_secs,
            "batch_share": batch_secs / seconds.max(1e-12),
            "step_share": step_secs / seconds.max(1e-12),
            "torch_threads": tch::get_num_threads(),
            "update_replicas": config.runtime.update_replicas,
            "dataset_dir": runs.join("datasets"),
        }))
    })();
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}
