//! Rollout sampling for `icrl` (docs/architecture.md): parallel env workers, batched policy inference,
//! multi-episode trials and pre-allocated rollout storage.
//!
//! - [`SamplerConfig`] / [`SamplerMode`]: the `sampler` section of a run config.
//! - [`RolloutStorage`]: `[B, T + 1]` token inputs and `[B, T]` outcomes of one trial per env
//!   slot, on the policy's device; [`RolloutStorage::inputs`] gives the policy's
//!   [`agent::StepInputs`] for any prefix; [`RolloutStorage::shuffle_completed_episodes`] is
//!   ReLIC's episode shuffle after a partial update.
//! - [`Policy`]: one batched inference on the newest token of some slots, with
//!   [`RandomPolicy`] and [`ModelPolicy`] (an [`agent::ActorCritic`] with its KV cache).
//! - [`Sampler`]: owns the env shards (one per worker thread), runs trials
//!   ([`Sampler::start_trials`]) and streams steps into storage ([`Sampler::collect`]), which
//!   the trainer may pause at any step count and resume after updating the policy.
//! - [`bench_sampler`]: `icrl bench sampler`.
//!
//! # Data layout
//! Column `t` of the token tensors holds what the policy sees at step `t`: the observation, the
//! previous action (`0` at an episode start, else `a + 1`), the previous reward, the episode
//! index within the trial and the step within the episode. Column `t` of the outcome tensors
//! holds what happened at step `t`: the action taken, its behaviour log-probability, the value
//! estimate, the reward and the `terminated` / `truncated` / `success` flags. After `len` steps
//! token column `len` holds the current, not yet acted-on observation.
//!
//! # Determinism
//! Env randomness is per global slot (see `envs`), and the policies here draw from per-slot
//! counter-based streams, so storage contents do not depend on the number of worker threads or
//! on the mode.
//!
//! # Faults
//! A panic or error inside an environment (in any worker thread) becomes a
//! [`SamplerError::EnvFault`] naming the environment, the slot(s), the seed and the task(s); the
//! sampler then stops all its threads and every later call reports the fault.

#![warn(missing_docs)]

mod bench;
mod config;
mod policy;
mod sampler;
mod storage;
mod worker;

pub use bench::{bench_sampler, BenchPolicy, BenchSamplerOptions};
pub use config::{PolicyInference, SamplerConfig, SamplerMode};
pub use policy::{obs_spec, ModelPolicy, Policy, PolicyOutput, RandomPolicy, SlotStreams};
pub use sampler::{CollectStats, Sampler};
pub use storage::RolloutStorage;
pub use worker::{EpisodeStats, ShardBuilder};

/// Errors of the sampler. Bad input and faults are reported through this type (wrapped in
/// `anyhow::Error` by the public functions), never by a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// An environment returned an error or panicked inside a worker.
    #[error("environment '{env}' (seed {seed}) failed in {slots} on {tasks}: {cause}")]
    EnvFault {
        /// Environment name.
        env: String,
        /// The run seed the envs were built with.
        seed: u64,
        /// The slot(s) concerned, e.g. `slot 5` or `slots 0..128` when the failing slot of a
        /// shard is unknown (a panic inside a batched step).
        slots: String,
        /// The task(s) of those slots, e.g. `task 17` or `tasks [3, 17, ...]`.
        tasks: String,
        /// What happened (the env error or the panic message), with the step column.
        cause: String,
    },
    /// The sampler stopped after an earlier fault; build a new one.
    #[error("the sampler stopped after an earlier fault: {0}")]
    Stopped(String),
    /// Bad arguments or state (wrong storage, too many steps, ...).
    #[error("{0}")]
    Invalid(String),
}

/// `Err(SamplerError::Invalid(..))` as an `anyhow::Error` unless `cond` holds.
macro_rules! ensure_invalid {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(anyhow::Error::new($crate::SamplerError::Invalid(format!($($fmt)+))));
        }
    };
}
pub(crate) use ensure_invalid;
