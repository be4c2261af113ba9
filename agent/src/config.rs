//! Model configuration (a RON section of the run config) and the observation spec the
//! token encoder is built from.

use serde::{Deserialize, Serialize};

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PosEncoding {
    /// No position information at all (no parameters). Required for DPT's shuffled contexts.
    None,
    /// A learned absolute embedding of the token's index within its slot's sequence,
    /// added to the token (table size `max_positions`).
    Learned,
    /// Rotary embedding of queries and keys by the token's index within its sequence.
    Rope,
    /// ReLIC: a learned embedding of the step within the episode (reset at each episode
    /// start, table size `max_episode_steps`) added to the token, plus rotary embedding of
    /// queries and keys by the episode index within the trial.
    EpisodeRope,
}

/// Initial value (and trainability) of one half of a sink key/value slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkInit {
    /// A learned parameter of shape [heads, head_dim], initialised at zero.
    Learned,
    /// Constant zeros (no parameter).
    Zero,
}

/// Attention-sink variant (ReLIC's ablation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Sink {
    /// Plain causal attention.
    None,
    /// A learned d_model token prepended to every sequence (and to every cache slot); it
    /// carries no position and its output is dropped.
    SinkToken,
    /// One extra key/value slot per layer and head, always attendable and never rotated.
    /// `SinkKv { k: Zero, v: Zero }` (K0V0) is exactly "softmax plus one".
    SinkKv {
        /// The sink key.
        k: SinkInit,
        /// The sink value.
        v: SinkInit,
    },
}

impl Sink {
    /// True when attention has one extra (sink) key/value slot in front of the tokens.
    pub fn has_slot(&self) -> bool {
        !matches!(self, Sink::None)
    }
}

/// Floating-point type of the model's activations and of its KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit float (CPU default, all tests).
    F32,
    /// bfloat16 (CUDA).
    Bf16,
}

impl DType {
    /// The libtorch kind.
    pub fn kind(&self) -> tch::Kind {
        match self {
            DType::F32 => tch::Kind::Float,
            DType::Bf16 => tch::Kind::BFloat16,
        }
    }
}

/// The transformer policy's hyper-parameters. The default is ReLIC's "tiny" model
/// (2 layers, 8 heads, width 64, MLP 256) with ReLIC's positions and sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block; must divide `d_model`.
    pub heads: usize,
    /// Width of the residual stream (token size).
    pub d_model: usize,
    /// Hidden width of the gated MLP.
    pub mlp_hidden: usize,
    /// Positional encoding.
    pub positional: PosEncoding,
    /// Attention-sink variant.
    pub sink: Sink,
    /// Probability of skipping a whole block during training (one draw per block per
    /// forward, LayerDrop-style, no rescaling). In [0, 1).
    pub depth_dropout: f64,
    /// Attend across episodes of a trial (true, ReLIC) or only within the current episode
    /// (false: block-diagonal mask per episode, the no-IEA ablation).
    pub inter_episode_attention: bool,
    /// Size of the learned absolute position table (`positional: Learned`).
    pub max_positions: usize,
    /// Size of the learned within-episode step table (`positional: EpisodeRope`).
    pub max_episode_steps: usize,
    /// Base of the rotary frequencies.
    pub rope_base: f64,
    /// Hidden width of the vector-observation MLP of the token encoder.
    pub encoder_hidden: usize,
    /// Output channels of the image CNN's convolutions (kernel 3, stride 2, ReLU each).
    pub cnn_channels: Vec<usize>,
    /// Activation and KV-cache precision. The caller converts the VarStore
    /// (`vs.set_kind(cfg.dtype.kind())`) when it wants parameters in the same type.
    pub dtype: DType,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            layers: 2,
            heads: 8,
            d_model: 64,
            mlp_hidden: 256,
            positional: PosEncoding::EpisodeRope,
            sink: Sink::SinkKv {
                k: SinkInit::Learned,
                v: SinkInit::Zero,
            },
            depth_dropout: 0.1,
            inter_episode_attention: true,
            max_positions: 4096,
            max_episode_steps: 1024,
            rope_base: 10_000.0,
            encoder_hidden: 64,
            cnn_channels: vec![16, 32, 32],
            dtype: DType::F32,
        }
    }
}

impl ModelConfig {
    /// ReLIC's "transformer_small": 4 layers, 8 heads, width 256, MLP 1024.
    pub fn relic_small() -> Self {
        ModelConfig {
            layers: 4,
            heads: 8,
            d_model: 256,
            mlp_hidden: 1024,
            ..Self::default()
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads.max(1)
    }

    /// Every impossible value as (field path, message); empty when the config is usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| errors.push((field.to_string(), message));
        for (field, value) in [
            ("layers", self.layers),
            ("heads", self.heads),
            ("d_model", self.d_model),
            ("mlp_hidden", self.mlp_hidden),
            ("encoder_hidden", self.encoder_hidden),
        ] {
            if value == 0 {
                bad(field, "must be at least 1".into());
            }
        }
        if self.heads > 0 && !self.d_model.is_multiple_of(self.heads) {
            bad(
                "d_model",
                format!(
                    "{} is not divisible by heads = {}",
                    self.d_model, self.heads
                ),
            );
        }
        let rotary = matches!(
            self.positional,
            PosEncoding::Rope | PosEncoding::EpisodeRope
        );
        if rotary
            && self.heads > 0
            && self.d_model.is_multiple_of(self.heads)
            && !self.head_dim().is_multiple_of(2)
        {
            bad(
                "heads",
                format!(
                    "rotary positions need an even head_dim, got {}",
                    self.head_dim()
                ),
            );
        }
        if !(0.0..1.0).contains(&self.depth_dropout) {
            bad(
                "depth_dropout",
                format!("{} is outside [0, 1)", self.depth_dropout),
            );
        }
        if self.positional == PosEncoding::Learned && self.max_positions == 0 {
            bad(
                "max_positions",
                "must be at least 1 with positional: Learned".into(),
            );
        }
        if self.positional == PosEncoding::EpisodeRope && self.max_episode_steps == 0 {
            bad(
                "max_episode_steps",
                "must be at least 1 with positional: EpisodeRope".into(),
            );
        }
        if rotary && !(self.rope_base.is_finite() && self.rope_base > 1.0) {
            bad(
                "rope_base",
                format!("{} must be a finite number > 1", self.rope_base),
            );
        }
        for (i, &c) in self.cnn_channels.iter().enumerate() {
            if c == 0 {
                bad(&format!("cnn_channels[{i}]"), "must be at least 1".into());
            }
        }
        errors
    }

    /// `validate` as one error listing every problem.
    pub fn check(&self) -> anyhow::Result<()> {
        let errors = self.validate();
        if errors.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = errors
            .iter()
            .map(|(f, m)| format!("model.{f}: {m}"))
            .collect();
        anyhow::bail!("invalid model config:\n  {}", lines.join("\n  "))
    }
}

/// What one environment step looks like, as far as the token encoder cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObsSpec {
    /// Length of the flat vector observation (target one-hot, gps, coordinates...); may be 0.
    pub vector_dim: usize,
    /// Image (height, width) of the RGB observation, if there is one.
    pub image: Option<(usize, usize)>,
    /// Number of discrete actions.
    pub num_actions: usize,
}

impl ObsSpec {
    /// Errors for specs no encoder can be built from.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.num_actions > 0,
            "observation spec: num_actions must be at least 1"
        );
        anyhow::ensure!(
            self.vector_dim > 0 || self.image.is_some(),
            "observation spec: needs a vector (vector_dim > 0) or an image"
        );
        if let Some((h, w)) = self.image {
            anyhow::ensure!(
                h > 0 && w > 0,
                "observation spec: image size {h}x{w} is empty"
            );
        }
        Ok(())
    }
}
