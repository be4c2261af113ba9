//! The `sampler` section of a run config.

use serde::{Deserialize, Serialize};

/// Most worker threads a config may ask for.
pub const MAX_THREADS: usize = 1024;

/// How env stepping and policy inference are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SamplerMode {
    /// Step all shards, then run one inference for the whole batch. The calling thread steps
    /// one shard itself, so `threads: 2` means the caller plus one extra thread.
    #[default]
    Sync,
    /// Two halves of the batch alternate: the workers step one half while the policy infers
    /// on the other, so env stepping overlaps inference. All shards run on worker threads.
    DoubleBuffered,
}

/// Which implementation runs the transformer policy's decode step ([`crate::ModelPolicy`]).
///
/// The default is `Libtorch`, so a config keeps producing bit-identical runs (and resumes of
/// runs made before the fused path existed stay exact). `Auto` or `Fused` make sampling on
/// the CPU several times faster (`icrl bench sampler --inference`); their log-probs and
/// values differ from libtorch's in the last bits (within 1e-5), which can change a sampled
/// action now and then, so a seed's learning curve is the same only up to seed noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PolicyInference {
    /// `Fused` where it applies (model on the CPU in f32), else `Libtorch`.
    Auto,
    /// libtorch's batched decode with its KV cache (`agent::ActorCritic::decode`).
    #[default]
    Libtorch,
    /// The fused CPU decode (`agent::FusedDecoder`): equal to libtorch within 1e-5 in f32 and
    /// several times faster for small models; an error where it does not apply.
    Fused,
}

/// Sampler settings (the `sampler` section of a run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Env worker threads (shards of the batch); 0 = the cores available to the process.
    /// Never more than the number of env slots (per half in `DoubleBuffered` mode).
    pub threads: usize,
    /// Scheduling of env stepping and inference.
    pub mode: SamplerMode,
    /// Implementation of the transformer policy's decode step. The fused path shards each
    /// act group's slots over libtorch's thread count divided by the number of act groups.
    pub inference: PolicyInference,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            threads: 0,
            mode: SamplerMode::Sync,
            inference: PolicyInference::Libtorch,
        }
    }
}

impl SamplerConfig {
    /// Every impossible value as (field path relative to this section, message); empty when
    /// the config is usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.threads > MAX_THREADS {
            errors.push((
                "threads".to_string(),
                format!(
                    "must be at most {MAX_THREADS} (0 = cores available), got {}",
                    self.threads
                ),
            ));
        }
        errors
    }

    /// The number of worker threads this config asks for: `threads`, or the cores available
    /// when it is 0 (at least 1).
    pub fn resolved_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

impl std::str::FromStr for SamplerMode {
    type Err = crate::SamplerError;

    /// `"sync"` or `"double"` (also the variant names `Sync` / `DoubleBuffered`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" | "Sync" => Ok(SamplerMode::Sync),
            "double" | "double_buffered" | "DoubleBuffered" => Ok(SamplerMode::DoubleBuffered),
            _ => Err(crate::SamplerError::Invalid(format!(
                "unknown sampler mode {s:?} (expected sync or double)"
            ))),
        }
    }
}

impl std::str::FromStr for PolicyInference {
    type Err = crate::SamplerError;

    /// `"auto"`, `"libtorch"` or `"fused"` (also the variant names).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" | "Auto" => Ok(PolicyInference::Auto),
            "libtorch" | "Libtorch" => Ok(PolicyInference::Libtorch),
            "fused" | "Fused" => Ok(PolicyInference::Fused),
            _ => Err(crate::SamplerError::Invalid(format!(
                "unknown policy inference {s:?} (expected auto, libtorch or fused)"
            ))),
        }
    }
}
