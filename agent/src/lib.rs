//! The icrl policy (docs/architecture.md): one transformer implementation for ReLIC (PPO over
//! multi-episode trials), DPT and AD, plus the GRU policy of the RL² baseline.
//!
//! - [`ModelConfig`]: sizes, positional encoding ([`PosEncoding`]), sink variant ([`Sink`]).
//! - [`ActorCritic`]: step tokens -> [`Transformer`] -> actor and critic heads; full causal
//!   [`ActorCritic::forward`] for training and cached [`ActorCritic::decode`] for rollouts.
//! - [`ActorCritic::attention_diagnostics`] / [`Transformer::forward_with_attention`]: a
//!   no-grad forward with explicit attention probabilities, reduced per layer and head to the
//!   sink mass and the entropy ([`LayerAttention`]), for logging.
//! - [`KvCache`]: batched per-env ring buffers with independent resets and a sliding window.
//! - [`SequenceModel`], DPT's transition-token model.
//! - [`GruPolicy`], the RL² baseline.
//! - [`FusedDecoder`]: the fused CPU decode step of an [`ActorCritic`] for small models
//!   (equal to [`ActorCritic::decode`] within 1e-5), with its own KV cache.
//! - [`bench_model`] behind `icrl bench model`.
//!
//! A rollout with the cache (one token per env per step; a slot is reset at its trial's
//! boundary; after a policy update the prefix is recomputed in chunks):
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use agent::{ActorCritic, KvCache, ModelConfig, ObsSpec, StepInputs};
//! use tch::{nn, Device, Kind, Tensor};
//! let cfg = ModelConfig::default();
//! let spec = ObsSpec { vector_dim: 2, image: None, num_actions: 5 };
//! let vs = nn::VarStore::new(Device::Cpu);
//! let policy = ActorCritic::new(&vs.root(), &cfg, &spec)?;
//! let mut cache = KvCache::new(&cfg, 4, 4096, Device::Cpu)?;
//! let zeros = |kind| Tensor::zeros([4, 1], (kind, Device::Cpu));
//! let step = StepInputs {
//!     vector: Tensor::zeros([4, 1, 2], (Kind::Float, Device::Cpu)),
//!     image: None,
//!     prev_action: zeros(Kind::Int64),
//!     prev_reward: zeros(Kind::Float),
//!     episode_index: zeros(Kind::Int64),
//!     step_in_episode: zeros(Kind::Int64),
//! };
//! let (logits, value) = policy.decode(&mut cache, &step)?; // [4, 1, 5], [4, 1]
//! cache.reset_slot(2)?; // env 2 starts a new trial
//! # Ok(()) }
//! ```
//!
//! Parameters live in a tch `VarStore` under names that follow the module tree
//! ("trunk.layers.0.attn.wq.weight"), so safetensors checkpoints map 1:1.

mod actor_critic;
mod bench;
mod cache;
mod config;
pub mod cuda_memory;
mod fused_decode;
pub mod fused_ops;
mod gru;
pub mod memory_plan;
pub mod replicas;
mod sequence;
mod tokens;
mod transformer;

pub use actor_critic::ActorCritic;
pub use bench::{bench_model, parse_device, BenchModelOptions};
pub use cache::KvCache;
pub use config::{DType, ModelConfig, ObsSpec, PosEncoding, Sink, SinkInit};
pub use fused_decode::FusedDecoder;
pub use gru::GruPolicy;
pub use replicas::Replicas;
pub use sequence::SequenceModel;
pub use tokens::{ImageCnn, StepInputs, TokenEncoder};
pub use transformer::{
    attention_probabilities, causal_attention, rms_norm_composite, rotary_composite, Attention,
    Block, LayerAttention, Mlp, RmsNorm, Rotary, SinkKv, Transformer,
};
