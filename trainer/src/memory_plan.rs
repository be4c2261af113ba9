//! `icrl bench model --plan CONFIG`: the predicted peak memory of a ReLIC run, from its
//! config alone (nothing is allocated). The model's per-token costs come from
//! [`agent::memory_plan::ModelMemory`]; this module adds what the run holds around the model
//! (optimiser, rollout storage, the sampler's KV cache) and takes the widest of the moments a
//! rollout goes through (the no-grad value forward over every env's prefix, a minibatch's
//! training forward and backward, the KV-cache refresh). docs/memory.md writes the formulas
//! out.

use agent::memory_plan::{dtype_bytes, ModelMemory};
use anyhow::{bail, Result};
use serde_json::json;

use crate::config::{Config, Method};
use crate::ppo_math;

/// Tokens per chunk of the KV-cache refresh (relic.rs's `PREFILL_CHUNK`).
const PREFILL_CHUNK: f64 = 1024.0;

/// The predicted memory of one ReLIC run, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMemoryPlan {
    /// Trainable parameters (count).
    pub parameters: u64,
    /// Parameters in the model's dtype.
    pub parameter_bytes: f64,
    /// Their gradients (same dtype), kept between minibatches.
    pub gradient_bytes: f64,
    /// Adam: two f32 moments, plus an f32 master copy of bf16 parameters.
    pub optimiser_bytes: f64,
    /// Rollout storage: `num_envs x (rollout_len + 1)` observations and the per-step fields.
    pub storage_bytes: f64,
    /// The sampler's KV cache: `num_envs` slots of `rollout_len` tokens (and the sink slot).
    pub kv_cache_bytes: f64,
    /// The longest prefix an update trains on (the trial, or less with `stop_after_updates`).
    pub update_tokens: usize,
    /// The no-grad value forward over every env's prefix at its widest point.
    pub value_forward_bytes: f64,
    /// A minibatch's training step: inputs, activations kept for backward, backward
    /// temporaries, without activation checkpointing (what the trainer does).
    pub train_step_bytes: f64,
    /// The same step with per-block activation checkpointing (a what-if: not implemented).
    pub train_step_checkpointed_bytes: f64,
    /// The KV-cache refresh after a partial update: one chunk through the cache, with the
    /// attention mask and one layer's score matrix (the math kernel's worst case).
    pub refresh_bytes: f64,
    /// Everything held for the whole run (parameters, gradients, optimiser, storage, cache).
    pub resident_bytes: f64,
    /// Resident plus the widest moment.
    pub peak_bytes: f64,
    /// The same with activation checkpointing.
    pub peak_checkpointed_bytes: f64,
    /// Which moment sets the peak.
    pub peak_moment: &'static str,
}

/// The memory plan of `config` (method ReLIC), for the update prefix the run will reach.
pub fn plan(config: &Config) -> Result<RunMemoryPlan> {
    let Method::Relic(ppo) = &config.method else {
        bail!(
            "the memory plan covers ReLIC configs (method: Relic(...)), got {}",
            config.method_name()
        );
    };
    let env = config.env.spec();
    let spec = sampler::obs_spec(&env);
    let model = &config.model;
    let mem = ModelMemory::of(model, &spec);
    let e = dtype_bytes(model.dtype);
    let (b, t) = (ppo.num_envs as f64, ppo.rollout_len as f64);
    let narrow = e < 4.0;

    let parameter_bytes = mem.parameter_bytes;
    let gradient_bytes = parameter_bytes;
    let p = mem.parameters as f64;
    let optimiser_bytes = 2.0 * 4.0 * p + if narrow { 4.0 * p } else { 0.0 };

    // Storage: per token column (T + 1 of them) the vector (f32), image (u8), previous
    // action, reward, episode index and step (4 bytes each); per step (T) the action,
    // log-prob, value, reward (4 bytes each) and three flags.
    let image = spec.image.map_or(0.0, |(h, w)| 3.0 * (h * w) as f64);
    let column = 4.0 * spec.vector_dim as f64 + image + 16.0;
    let storage_bytes = b * (t + 1.0) * column + b * t * (16.0 + 3.0);
    let kv_cache_bytes = b * (mem.kv_per_token * t + mem.kv_per_slot);

    // The longest prefix an update trains on.
    let updates = ppo_math::rollout_updates(
        ppo.rollout_len,
        ppo.updates_per_rollout,
        ppo.full_updates_per_rollout,
    );
    let reached = match ppo.stop_after_updates {
        Some(n) if (n as usize) < updates.len() => &updates[..n as usize],
        _ => &updates[..],
    };
    let update_tokens = reached
        .iter()
        .map(|u| u.end)
        .max()
        .unwrap_or(ppo.rollout_len);
    let end = update_tokens as f64;

    // The update's inputs over every env (i64 copies of three integer fields, alive for the
    // whole update) and a minibatch's rows (copies of every field).
    let all_inputs = b * (end + 1.0) * 24.0;
    let per_minibatch = (ppo.num_envs / ppo.minibatches.max(1)).max(1) as f64;
    let mb_tokens = per_minibatch * end;
    let mb_inputs = mb_tokens * (4.0 * spec.vector_dim as f64 + image + 4.0 + 24.0);
    let value_forward_bytes = all_inputs + b * (end + 1.0) * mem.forward_working;
    // The loss's f32 tensors of the segment (a handful per token) are small next to these.
    let train_common = all_inputs + mb_inputs + mb_tokens * mem.backward_working;
    let train_step_bytes = train_common + mem.activations(model.layers, mb_tokens);
    let train_step_checkpointed_bytes = train_common + mem.activations_checkpointed(mb_tokens);
    // A refresh follows every reached update after which the trial goes on collecting.
    let refreshed = reached
        .windows(2)
        .filter(|w| w[1].collect > 0)
        .map(|w| w[0].end)
        .max();
    let keys = t + if model.sink.has_slot() { 1.0 } else { 0.0 };
    let refresh_bytes = refreshed.map_or(0.0, |prefix| {
        let chunk = PREFILL_CHUNK.min(prefix as f64);
        b * chunk * (keys * (1.0 + e * model.heads as f64) + mem.forward_working)
    });

    let resident_bytes =
        parameter_bytes + gradient_bytes + optimiser_bytes + storage_bytes + kv_cache_bytes;
    let moments = [
        (
            "value forward (no grad, all envs)",
            value_forward_bytes,
            value_forward_bytes,
        ),
        (
            "training minibatch",
            train_step_bytes,
            train_step_checkpointed_bytes,
        ),
        ("KV-cache refresh", refresh_bytes, refresh_bytes),
    ];
    let (peak_moment, widest, _) =
        moments
            .iter()
            .copied()
            .fold(("none", 0.0f64, 0.0), |a, m| if m.1 > a.1 { m } else { a });
    let widest_checkpointed = moments.iter().map(|m| m.2).fold(0.0f64, f64::max);
    Ok(RunMemoryPlan {
        parameters: mem.parameters,
        parameter_bytes,
        gradient_bytes,
        optimiser_bytes,
        storage_bytes,
        kv_cache_bytes,
        update_tokens,
        value_forward_bytes,
        train_step_bytes,
        train_step_checkpointed_bytes,
        refresh_bytes,
        resident_bytes,
        peak_bytes: resident_bytes + widest,
        peak_checkpointed_bytes: resident_bytes + widest_checkpointed,
        peak_moment,
    })
}

/// Parses a memory size: bytes, or a number with KiB, MiB, GiB, TiB (or KB, MB, GB, TB:
/// powers of 1000; `G` alone means GiB).
pub fn parse_size(text: &str) -> Result<f64> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?}: expected a size such as 24GiB or 80GB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => bail!(
            "{text:?}: unknown unit {other:?} (expected KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
        ),
    };
    Ok(value * scale)
}

/// The default device sizes the plan is checked against (GiB).
pub const DEVICE_SIZES_GIB: [f64; 4] = [24.0, 40.0, 80.0, 141.0];

/// The plan as JSON, with whether it fits each of `devices` (bytes).
pub fn to_json(config: &Config, plan: &RunMemoryPlan, devices: &[f64]) -> serde_json::Value {
    let gib = |x: f64| x / 1024f64.powi(3);
    let fits: Vec<serde_json::Value> = devices
        .iter()
        .map(|&d| {
            json!({
                "device_gib": gib(d),
                "fits": plan.peak_bytes <= d,
                "fits_with_checkpointing": plan.peak_checkpointed_bytes <= d,
            })
        })
        .collect();
    json!({
        "bench": "memory_plan",
        "config": config.name,
        "dtype": format!("{:?}", config.model.dtype),
        "parameters": plan.parameters,
        "parameter_bytes": plan.parameter_bytes,
        "gradient_bytes": plan.gradient_bytes,
        "optimiser_bytes": plan.optimiser_bytes,
        "storage_bytes": plan.storage_bytes,
        "kv_cache_bytes": plan.kv_cache_bytes,
        "update_tokens": plan.update_tokens,
        "value_forward_bytes": plan.value_forward_bytes,
        "train_step_bytes": plan.train_step_bytes,
        "train_step_checkpointed_bytes": plan.train_step_checkpointed_bytes,
        "refresh_bytes": plan.refresh_bytes,
        "resident_bytes": plan.resident_bytes,
        "peak_bytes": plan.peak_bytes,
        "peak_gib": gib(plan.peak_bytes),
        "peak_checkpointed_bytes": plan.peak_checkpointed_bytes,
        "peak_checkpointed_gib": gib(plan.peak_checkpointed_bytes),
        "peak_moment": plan.peak_moment,
        "devices": fits,
    })
}

/// A human-readable table of the plan (printed above the JSON line).
pub fn to_text(plan: &RunMemoryPlan, devices: &[f64]) -> String {
    let gib = |x: f64| format!("{:>10.3} GiB", x / 1024f64.powi(3));
    let mut out = String::new();
    let mut row = |name: &str, x: f64| out.push_str(&format!("{name:<46}{}\n", gib(x)));
    row("parameters", plan.parameter_bytes);
    row("gradients", plan.gradient_bytes);
    row("optimiser (Adam moments, f32 master)", plan.optimiser_bytes);
    row("rollout storage", plan.storage_bytes);
    row("KV cache (sampler)", plan.kv_cache_bytes);
    row("= resident", plan.resident_bytes);
    row(
        "value forward, no grad (transient)",
        plan.value_forward_bytes,
    );
    row("training minibatch (transient)", plan.train_step_bytes);
    row(
        "  with activation checkpointing",
        plan.train_step_checkpointed_bytes,
    );
    row("KV-cache refresh (transient)", plan.refresh_bytes);
    row("= peak", plan.peak_bytes);
    row(
        "  with activation checkpointing",
        plan.peak_checkpointed_bytes,
    );
    out.push_str(&format!(
        "peak set by: {}; update prefix {} tokens\n",
        plan.peak_moment, plan.update_tokens
    ));
    for &d in devices {
        let verdict = if plan.peak_bytes <= d {
            "fits"
        } else if plan.peak_checkpointed_bytes <= d {
            "fits only with activation checkpointing"
        } else {
            "does not fit"
        };
        out.push_str(&format!("{:>6.0} GiB: {verdict}\n", d / 1024f64.powi(3)));
    }
    out
}
