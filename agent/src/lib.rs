//! The icrl policy (DESIGN.md §4): one transformer implementation for ReLIC (PPO over
//! multi-episode trials), DPT and AD, plus the GRU policy of the RL² baseline.
//!
//! - [`ModelConfig`]: sizes, positional encoding ([`PosEncoding`]), sink variant ([`Sink`]).
//! - [`ActorCritic`]: step tokens -> [`Transformer`] -> actor and critic heads; full causal
//!   [`ActorCritic::forward`] for training and cached [`ActorCritic::decode`] for rollouts.
//! - [`KvCache`]: batched per-env ring buffers with independent resets and a sliding window.
//! - [`SequenceModel`], DPT's transition-token model.
//! - [`GruPolicy`], the RL² baseline.
//! - [`bench_model`] behind `icrl bench model`.
//!
//! Parameters live in a tch `VarStore` under names that follow the module tree
//! ("trunk.layers.0.attn.wq.weight"), so safetensors checkpoints map 1:1.

mod actor_critic;
mod bench;
mod cache;
mod config;
mod gru;
mod sequence;
mod tokens;
mod transformer;

pub use actor_critic::ActorCritic;
pub use bench::{bench_model, parse_device, BenchModelOptions};
pub use cache::KvCache;
pub use config::{DType, ModelConfig, ObsSpec, PosEncoding, Sink, SinkInit};
pub use gru::GruPolicy;
pub use sequence::SequenceModel;
pub use tokens::{ImageCnn, StepInputs, TokenEncoder};
pub use transformer::{
    causal_attention, Attention, Block, Mlp, RmsNorm, Rotary, SinkKv, Transformer,
};
