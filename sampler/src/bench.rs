//! `icrl bench sampler`: env steps/s of the full sampling loop (policy, envs, storage) and,
//! for comparison in the same run, `icrl bench env` (`envs::tools::bench`) at the same env
//! count and threads (random actions, no policy, no storage). The two alternate for
//! `repeats` rounds; steps/s and the ratio are the medians of the rounds.

use crate::config::{PolicyInference, SamplerConfig, SamplerMode};
use crate::policy::{obs_spec, ModelPolicy, Policy, RandomPolicy};
use crate::sampler::{CollectStats, Sampler};
use crate::storage::RolloutStorage;
use crate::{ensure_invalid, SamplerError};
use agent::{ActorCritic, ModelConfig};
use anyhow::{Context, Result};
use envs::{EnvConfig, Split};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Instant;

/// Which policy acts in the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BenchPolicy {
    /// [`RandomPolicy`]: measures the sampler's own overhead.
    #[default]
    Random,
    /// ReLIC's tiny transformer (`agent::ModelConfig::default()`) on the CPU with its KV cache.
    Model,
}

impl std::str::FromStr for BenchPolicy {
    type Err = SamplerError;

    /// `"random"` or `"model"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" | "Random" => Ok(BenchPolicy::Random),
            "model" | "Model" => Ok(BenchPolicy::Model),
            _ => Err(SamplerError::Invalid(format!(
                "unknown bench policy {s:?} (expected random or model)"
            ))),
        }
    }
}

/// Options of `icrl bench sampler`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchSamplerOptions {
    /// Environment name (one of `envs::EnvConfig::NAMES`), default config.
    pub env: String,
    /// Env slots `B`.
    pub envs: usize,
    /// Env worker threads (0 = cores available).
    pub threads: usize,
    /// Timed steps per slot (env steps in total: `steps * envs`).
    pub steps: usize,
    /// Untimed steps per slot before timing.
    pub warmup_steps: usize,
    /// The acting policy.
    pub policy: BenchPolicy,
    /// Sync or double-buffered sampling.
    pub mode: SamplerMode,
    /// Decode path of the model policy (`Auto`: fused on the CPU in f32).
    pub inference: PolicyInference,
    /// Trial length `T` (the storage and KV cache size); a new trial starts every `T` steps.
    pub rollout_len: usize,
    /// Seed of envs, tasks and policy.
    pub seed: u64,
    /// Also time the bare envs (same slots and threads) for comparison.
    pub compare_env: bool,
    /// Timed repetitions, each of `steps` steps per slot (and, with `compare_env`, one bare-env
    /// timing right after it). On a shared or virtual machine one timing can be off by 30%
    /// either way; the report gives every repetition and their medians.
    pub repeats: usize,
}

impl Default for BenchSamplerOptions {
    fn default() -> Self {
        BenchSamplerOptions {
            env: "darkroom".into(),
            envs: 256,
            threads: 0,
            steps: 20_000,
            warmup_steps: 200,
            policy: BenchPolicy::Random,
            mode: SamplerMode::Sync,
            inference: PolicyInference::Auto,
            rollout_len: 1024,
            seed: 0,
            compare_env: true,
            repeats: 5,
        }
    }
}

/// Runs `steps` steps per slot (starting new trials whenever storage is full).
fn run_steps(
    sampler: &mut Sampler,
    policy: &mut dyn Policy,
    storage: &mut RolloutStorage,
    rng: &mut rand_chacha::ChaCha8Rng,
    steps: usize,
    total: &mut CollectStats,
) -> Result<()> {
    let mut done = 0;
    while done < steps {
        if storage.trial == 0 || storage.len == storage.rollout_len() {
            let tasks = sampler.sample_tasks(Split::Train, rng)?;
            let t0 = Instant::now();
            sampler.start_trials(&tasks, storage)?;
            total.seconds += t0.elapsed().as_secs_f64();
        }
        let n = (storage.rollout_len() - storage.len).min(steps - done);
        let s = sampler.collect(policy, storage, n)?;
        total.merge(&s);
        done += n;
    }
    Ok(())
}

/// The median of `xs` (mean of the middle two for an even count; NaN when empty).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs the sampler benchmark; returns one JSON object (env steps/s and where the time goes).
pub fn bench_sampler(opts: &BenchSamplerOptions) -> Result<serde_json::Value> {
    ensure_invalid!(opts.envs >= 1, "bench sampler: --envs must be at least 1");
    ensure_invalid!(opts.steps >= 1, "bench sampler: --steps must be at least 1");
    ensure_invalid!(
        opts.repeats >= 1,
        "bench sampler: --repeats must be at least 1"
    );
    ensure_invalid!(
        opts.rollout_len >= 1,
        "bench sampler: rollout_len must be at least 1"
    );
    let env = EnvConfig::from_name(&opts.env)?;
    let cfg = SamplerConfig {
        threads: opts.threads,
        mode: opts.mode,
        ..SamplerConfig::default()
    };
    let threads = cfg.resolved_threads();
    let mut sampler = Sampler::new(&env, &cfg, opts.envs, opts.seed)?;
    let spec = sampler.spec().clone();
    let mut storage = RolloutStorage::new(&spec, opts.envs, opts.rollout_len, tch::Device::Cpu)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);

    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let (model_cfg, model) = match opts.policy {
        BenchPolicy::Random => (None, None),
        BenchPolicy::Model => {
            let mc = ModelConfig::default();
            let m = ActorCritic::new(&vs.root(), &mc, &obs_spec(&spec))
                .context("building the model")?;
            (Some(mc), Some(m))
        }
    };
    let mut inference = "none";
    let mut policy: Box<dyn Policy + '_> = match &model {
        None => Box::new(RandomPolicy::new(spec.num_actions, opts.envs, opts.seed)?),
        Some(m) => {
            let p = ModelPolicy::with_inference(
                m,
                &sampler.act_groups(),
                opts.rollout_len,
                opts.seed,
                opts.inference,
            )?;
            inference = if p.is_fused() { "fused" } else { "libtorch" };
            Box::new(p)
        }
    };

    let mut warm = CollectStats::default();
    run_steps(
        &mut sampler,
        policy.as_mut(),
        &mut storage,
        &mut rng,
        opts.warmup_steps,
        &mut warm,
    )?;
    // Sampler and bare envs alternate, so slow phases of the machine hit both alike.
    let mut total = CollectStats::default();
    let (mut wall, mut runs, mut env_runs) = (0.0, Vec::new(), Vec::new());
    for _ in 0..opts.repeats {
        let mut this = CollectStats::default();
        let t0 = Instant::now();
        run_steps(
            &mut sampler,
            policy.as_mut(),
            &mut storage,
            &mut rng,
            opts.steps,
            &mut this,
        )?;
        let secs = t0.elapsed().as_secs_f64();
        wall += secs;
        runs.push(this.env_steps as f64 / secs.max(1e-12));
        total.merge(&this);
        if opts.compare_env {
            // `icrl bench env` at the same env count and threads.
            let r = envs::tools::bench(
                &env,
                opts.envs,
                threads.min(opts.envs),
                opts.steps * opts.envs,
                opts.seed,
            )?;
            env_runs.push(r["steps_per_sec"].as_f64().unwrap_or(0.0));
        }
    }
    drop(policy);
    sampler.shutdown();

    let sps = median(&runs);
    let share = |x: f64| x / wall.max(1e-12);
    let mut report = json!({
        "bench": "sampler",
        "env": opts.env,
        "envs": opts.envs,
        "threads": threads,
        "mode": match opts.mode { SamplerMode::Sync => "sync", SamplerMode::DoubleBuffered => "double" },
        "policy": match opts.policy { BenchPolicy::Random => "random", BenchPolicy::Model => "model" },
        "steps": opts.steps,
        "repeats": opts.repeats,
        "steps_per_sec_runs": runs,
        "rollout_len": opts.rollout_len,
        "env_steps": total.env_steps,
        "seconds": wall,
        "steps_per_sec": sps,
        "inference_seconds": total.inference_seconds,
        "env_seconds": total.env_seconds,
        "transfer_seconds": total.transfer_seconds,
        "inference_share": share(total.inference_seconds),
        "env_share": share(total.env_seconds),
        "transfer_share": share(total.transfer_seconds),
        "other_share": share(wall - total.inference_seconds - total.env_seconds - total.transfer_seconds).max(0.0),
        "shard_env_seconds": total.shard_env_seconds,
        "shard_write_seconds": total.shard_write_seconds,
        "episodes": total.episodes.len(),
        "torch_threads": tch::get_num_threads(),
        "inference": inference,
    });
    if let Some(mc) = model_cfg {
        report["model"] = json!({"layers": mc.layers, "d_model": mc.d_model, "heads": mc.heads, "mlp_hidden": mc.mlp_hidden});
    }
    if opts.compare_env {
        let ratios: Vec<f64> = runs
            .iter()
            .zip(&env_runs)
            .map(|(s, e)| s / e.max(1e-12))
            .collect();
        report["env_only_steps_per_sec"] = json!(median(&env_runs));
        report["env_only_steps_per_sec_runs"] = json!(env_runs);
        report["ratio_to_env_only"] = json!(median(&ratios));
        report["ratio_to_env_only_runs"] = json!(ratios);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
