//! The transformer trunk shared by ReLIC, DPT and AD: pre-norm RMSNorm blocks with causal
//! scaled-dot-product attention (no q/k/v/o biases), a gated GELU MLP, optional attention
//! sinks, switchable positional encodings, depth dropout and a final RMSNorm.
//!
//! Shapes: B = batch (env slots), T = tokens, D = d_model, H = heads, hd = head_dim,
//! S = number of sink slots (0 or 1), C = cache capacity.

mod diagnostics;

pub use diagnostics::{attention_probabilities, LayerAttention};

use crate::cache::{KvCache, WritePlan};
use crate::config::{ModelConfig, PosEncoding, Sink, SinkInit};
use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn, Kind, Tensor};

/// The generator of the parameters that exist only in some variants (learned position
/// tables; the sink token and sink K/V start at zero and draw nothing), kept apart from
/// libtorch's global generator so that adding or removing one never shifts the others: for
/// one seed, the shared parameters of every sink and position variant are bit-identical.
///
/// Its seed is one number drawn from libtorch's global CPU generator when the trunk is built
/// (the trainer seeds that generator with the run's init seed); the draw happens in every
/// variant. Each parameter then gets its own ChaCha8 stream keyed by its name.
struct VariantInit {
    seed: u64,
}

impl VariantInit {
    fn from_global_generator() -> Self {
        let draw = Tensor::randint(i64::MAX, [1], (Kind::Int64, tch::Device::Cpu));
        VariantInit {
            seed: draw.int64_value(&[0]) as u64,
        }
    }

    /// Normal(0, `std`) values for the parameter `name` of `rows x cols`, as a CPU f32 tensor.
    fn normal(&self, name: &str, rows: usize, cols: usize, std: f32) -> Tensor {
        // FNV-1a of the name, so each parameter has its own stream.
        let key = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ key);
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal) * std)
            .collect();
        Tensor::from_slice(&values).view([rows as i64, cols as i64])
    }
}

/// Linear layer without bias (all projections of the trunk).
fn linear_no_bias(p: nn::Path, inputs: usize, outputs: usize) -> nn::Linear {
    let cfg = nn::LinearConfig {
        bias: false,
        ..Default::default()
    };
    nn::linear(p, inputs as i64, outputs as i64, cfg)
}

/// Added to the mean square in RMSNorm.
const RMS_EPS: f64 = 1e-6;

/// RMSNorm with a learned scale ("weight"), computed in fp32.
#[derive(Debug)]
pub struct RmsNorm {
    pub(crate) weight: Tensor,
}

impl RmsNorm {
    fn new(p: nn::Path, dim: usize) -> Self {
        RmsNorm {
            weight: p.ones("weight", &[dim as i64]),
        }
    }

    /// `x / rms(x) * weight` over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if let Some(y) = crate::fused_ops::rms_norm(x, &self.weight, RMS_EPS) {
            return y; // f32 on the CPU: one pass forward and backward (csrc/fused_ops.cpp)
        }
        rms_norm_composite(x, &self.weight)
    }
}

/// RMSNorm in libtorch ops (any device and dtype; statistics in f32): `x / rms(x) * weight`.
pub fn rms_norm_composite(x: &Tensor, weight: &Tensor) -> Tensor {
    let xf = x.to_kind(Kind::Float);
    let inv_rms = (xf.square().mean_dim(-1, true, Kind::Float) + RMS_EPS).rsqrt();
    (xf * inv_rms).to_kind(x.kind()) * weight.to_kind(x.kind())
}

/// Rotary position embedding for one call: cos/sin tables of the tokens' positions.
#[derive(Debug)]
pub struct Rotary {
    /// `[B, 1, T, hd/2]`.
    cos: Tensor,
    /// `[B, 1, T, hd/2]`.
    sin: Tensor,
}

impl Rotary {
    /// Tables for integer positions `[B, T]` (angles computed in f64, then cast to `kind`).
    pub fn new(positions: &Tensor, head_dim: i64, base: f64, kind: Kind) -> Self {
        let half = head_dim / 2;
        let device = positions.device();
        let i = Tensor::arange(half, (Kind::Double, device));
        let inv_freq = (i * (-2.0 * base.ln() / head_dim as f64)).exp(); // [hd/2]
        let angles = positions.to_kind(Kind::Double).unsqueeze(-1) * inv_freq; // [B, T, hd/2]
        let table = |t: Tensor| t.to_kind(kind).unsqueeze(1); // [B, 1, T, hd/2]
        Rotary {
            cos: table(angles.cos()),
            sin: table(angles.sin()),
        }
    }

    /// Rotates `x: [B, H, T, hd]` (half-split pairs: dim i pairs with dim i + hd/2).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        if let Some(y) = crate::fused_ops::rotary(x, &self.cos, &self.sin) {
            return y; // f32 on the CPU: one pass forward and backward (csrc/fused_ops.cpp)
        }
        rotary_composite(x, &self.cos, &self.sin)
    }
}

/// The rotary embedding in libtorch ops: `x: [B, H, T, hd]` rotated by angles with `cos`,
/// `sin: [B, 1, T, hd/2]` (half-split pairs: dim i pairs with dim i + hd/2).
pub fn rotary_composite(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let (x1, x2) = (x.narrow(3, 0, half), x.narrow(3, half, half));
    let rotated_1 = &x1 * cos - &x2 * sin;
    let rotated_2 = &x1 * sin + &x2 * cos;
    Tensor::cat(&[rotated_1, rotated_2], 3)
}

/// One sink key/value slot of a layer, `[H, hd]` each.
#[derive(Debug)]
pub struct SinkKv {
    /// Sink key `[H, hd]` (never rotated).
    pub k: Tensor,
    /// Sink value `[H, hd]`.
    pub v: Tensor,
}

/// Multi-head attention projections (no biases).
#[derive(Debug)]
pub struct Attention {
    pub(crate) wq: nn::Linear,
    pub(crate) wk: nn::Linear,
    pub(crate) wv: nn::Linear,
    pub(crate) wo: nn::Linear,
    /// Learned sink key `[H, hd]` (`SinkKv { k: Learned, .. }`), initialised at zero.
    pub sink_k: Option<Tensor>,
    /// Learned sink value `[H, hd]` (`SinkKv { v: Learned, .. }`), initialised at zero.
    pub sink_v: Option<Tensor>,
    heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(p: nn::Path, cfg: &ModelConfig) -> Self {
        let d = cfg.d_model;
        let (heads, head_dim) = (cfg.heads as i64, cfg.head_dim() as i64);
        let learned = |init: SinkInit, name: &str| match init {
            SinkInit::Learned => Some(p.zeros(name, &[heads, head_dim])),
            SinkInit::Zero => None,
        };
        let (sink_k, sink_v) = match cfg.sink {
            Sink::SinkKv { k, v } => (learned(k, "sink_k"), learned(v, "sink_v")),
            _ => (None, None),
        };
        Attention {
            wq: linear_no_bias(&p / "wq", d, d),
            wk: linear_no_bias(&p / "wk", d, d),
            wv: linear_no_bias(&p / "wv", d, d),
            wo: linear_no_bias(&p / "wo", d, d),
            sink_k,
            sink_v,
            heads,
            head_dim,
        }
    }

    /// `x: [B, T, D]` -> q, k, v `[B, H, T, hd]`, q and k rotated when `rotary` is given.
    fn project(&self, x: &Tensor, rotary: Option<&Rotary>) -> (Tensor, Tensor, Tensor) {
        let s = x.size();
        let split = |y: Tensor| {
            y.view([s[0], s[1], self.heads, self.head_dim])
                .transpose(1, 2)
        };
        let q = split(x.apply(&self.wq));
        let k = split(x.apply(&self.wk));
        let v = split(x.apply(&self.wv));
        match rotary {
            Some(r) => (r.apply(&q), r.apply(&k), v),
            None => (q, k, v),
        }
    }

    /// Heads `[B, H, T, hd]` -> output projection `[B, T, D]`.
    fn merge(&self, y: &Tensor) -> Tensor {
        let s = y.size();
        y.transpose(1, 2)
            .reshape([s[0], s[2], s[1] * s[3]])
            .apply(&self.wo)
    }
}

/// Causal attention over whole sequences, `q, k, v: [B, H, T, hd]` -> `[B, H, T, hd]`.
/// With a sink, a sink position is prepended to keys and values (with a zero query whose
/// output is dropped), so the plain causal mask over `T + 1` positions lets every token see
/// the sink. `mask` (block-diagonal ablation) is `[B, 1, S + T, S + T]` bool; without it
/// libtorch's causal kernels (flash / memory-efficient) are used.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sink: Option<&SinkKv>,
    mask: Option<&Tensor>,
) -> Tensor {
    let sdpa = |q: &Tensor, k: &Tensor, v: &Tensor| {
        Tensor::scaled_dot_product_attention(q, k, v, mask, 0.0, mask.is_none(), None, false)
    };
    let Some(sink) = sink else {
        return sdpa(q, k, v);
    };
    let s = q.size(); // [B, H, T, hd]
    let slot = |x: &Tensor| {
        x.view([1, s[1], 1, s[3]])
            .expand([s[0], s[1], 1, s[3]], false)
    };
    let q = Tensor::cat(&[q.zeros_like().narrow(2, 0, 1), q.shallow_clone()], 2);
    let k = Tensor::cat(&[slot(&sink.k.to_kind(k.kind())), k.shallow_clone()], 2);
    let v = Tensor::cat(&[slot(&sink.v.to_kind(v.kind())), v.shallow_clone()], 2);
    sdpa(&q, &k, &v).narrow(2, 1, s[2])
}

/// Gated MLP: `w_down(gelu(w_gate x) * w_up x)`.
#[derive(Debug)]
pub struct Mlp {
    pub(crate) w_gate: nn::Linear,
    pub(crate) w_up: nn::Linear,
    pub(crate) w_down: nn::Linear,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &ModelConfig) -> Self {
        let (d, m) = (cfg.d_model, cfg.mlp_hidden);
        Mlp {
            w_gate: linear_no_bias(&p / "w_gate", d, m),
            w_up: linear_no_bias(&p / "w_up", d, m),
            w_down: linear_no_bias(&p / "w_down", m, d),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        (x.apply(&self.w_gate).gelu("none") * x.apply(&self.w_up)).apply(&self.w_down)
    }
}

/// One pre-norm transformer block.
#[derive(Debug)]
pub struct Block {
    pub(crate) attn_norm: RmsNorm,
    /// Attention (and this layer's learned sink parameters).
    pub attn: Attention,
    pub(crate) mlp_norm: RmsNorm,
    pub(crate) mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, cfg: &ModelConfig) -> Self {
        Block {
            attn_norm: RmsNorm::new(&p / "attn_norm", cfg.d_model),
            attn: Attention::new(&p / "attn", cfg),
            mlp_norm: RmsNorm::new(&p / "mlp_norm", cfg.d_model),
            mlp: Mlp::new(&p / "mlp", cfg),
        }
    }

    /// Full causal forward: `x: [B, T, D]` -> `[B, T, D]`.
    fn forward(
        &self,
        x: &Tensor,
        rotary: Option<&Rotary>,
        sink: Option<&SinkKv>,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let (q, k, v) = self.attn.project(&self.attn_norm.forward(x), rotary);
        let x = x + self.attn.merge(&causal_attention(&q, &k, &v, sink, mask));
        &x + self.mlp.forward(&self.mlp_norm.forward(&x))
    }

    /// Cached step: new tokens `x: [B, t, D]` are written into `cache` (layer `layer`) and
    /// attend to everything the cache holds for their slot (`step.mask: [B, 1, t, S + C]`).
    fn decode(
        &self,
        x: &Tensor,
        step: &DecodeStep,
        sink: Option<&SinkKv>,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        let DecodeStep { rotary, plan, mask } = *step;
        let (q, k, v) = self.attn.project(&self.attn_norm.forward(x), rotary);
        cache.write_layer(layer, plan, sink.map(|s| (&s.k, &s.v)), &k, &v)?;
        let (keys, values) = (&cache.keys[layer], &cache.values[layer]);
        let y = Tensor::scaled_dot_product_attention(
            &q,
            keys,
            values,
            Some(mask),
            0.0,
            false,
            None,
            false,
        );
        let x = x + self.attn.merge(&y);
        Ok(&x + self.mlp.forward(&self.mlp_norm.forward(&x)))
    }

    /// The sink token through this block: it attends only to itself, so its attention
    /// output is its own value. `x: [1, 1, D]` -> (next `x`, its key and value `[H, hd]`).
    fn sink_token_step(&self, x: &Tensor) -> (Tensor, SinkKv) {
        let (_q, k, v) = self.attn.project(&self.attn_norm.forward(x), None);
        let x = x + self.attn.merge(&v);
        let x = &x + self.mlp.forward(&self.mlp_norm.forward(&x));
        let (h, d) = (self.attn.heads, self.attn.head_dim);
        (
            x,
            SinkKv {
                k: k.reshape([h, d]),
                v: v.reshape([h, d]),
            },
        )
    }
}

/// The trunk: positions, sinks, blocks, final norm. Input and output are `[B, T, D]`.
#[derive(Debug)]
pub struct Transformer {
    cfg: ModelConfig,
    /// The blocks ("layers.{i}").
    pub layers: Vec<Block>,
    pub(crate) norm: RmsNorm,
    /// `Learned`: absolute position table `[max_positions, D]` ("position").
    pub(crate) position: Option<nn::Embedding>,
    /// `EpisodeRope`: within-episode step table `[max_episode_steps, D]` ("episode_step").
    pub(crate) episode_step: Option<nn::Embedding>,
    /// `SinkToken`: the learned token `[D]` ("sink_token"), initialised at zero.
    pub sink_token: Option<Tensor>,
}

impl Transformer {
    /// Builds the trunk under `p` (e.g. `root / "trunk"`).
    ///
    /// Initialisation: the shared parameters (blocks, final norm) draw from libtorch's global
    /// generator in the same order in every variant; the learned position tables draw from
    /// their own generator (`VariantInit`), N(0, 0.02); the sink token and the sink keys and
    /// values start at zero, as in the official ReLIC code.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Result<Self> {
        cfg.check()?;
        let d = cfg.d_model as i64;
        let variant_init = VariantInit::from_global_generator();
        let table = |name: &str, rows: usize| {
            let init = nn::EmbeddingConfig {
                ws_init: nn::Init::Const(0.0),
                ..Default::default()
            };
            let mut embedding = nn::embedding(p / name, rows as i64, d, init);
            let values = variant_init.normal(name, rows, cfg.d_model, 0.02);
            tch::no_grad(|| embedding.ws.copy_(&values));
            embedding
        };
        let position =
            (cfg.positional == PosEncoding::Learned).then(|| table("position", cfg.max_positions));
        let episode_step = (cfg.positional == PosEncoding::EpisodeRope)
            .then(|| table("episode_step", cfg.max_episode_steps));
        let sink_token = (cfg.sink == Sink::SinkToken).then(|| p.zeros("sink_token", &[d]));
        Ok(Transformer {
            cfg: cfg.clone(),
            layers: (0..cfg.layers)
                .map(|i| Block::new(p / "layers" / i, cfg))
                .collect(),
            norm: RmsNorm::new(p / "norm", cfg.d_model),
            position,
            episode_step,
            sink_token,
        })
    }

    /// The configuration the trunk was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Adds position embeddings to `x: [B, T, D]` and builds the rotary tables.
    /// `index`: token index within its sequence; `episode`, `step`: from the inputs.
    fn positions(
        &self,
        x: &Tensor,
        index: &Tensor,
        episode: &Tensor,
        step: &Tensor,
    ) -> Result<(Tensor, Option<Rotary>)> {
        let (hd, base, kind) = (self.cfg.head_dim() as i64, self.cfg.rope_base, x.kind());
        Ok(match self.cfg.positional {
            PosEncoding::None => (x.shallow_clone(), None),
            PosEncoding::Learned => {
                let table = self.position.as_ref().context("no position table")?;
                (x + index.apply(table).to_kind(kind), None)
            }
            PosEncoding::Rope => (x.shallow_clone(), Some(Rotary::new(index, hd, base, kind))),
            PosEncoding::EpisodeRope => {
                let (lo, hi) = (step.min().int64_value(&[]), step.max().int64_value(&[]));
                let n = self.cfg.max_episode_steps as i64;
                ensure!(
                    lo >= 0 && hi < n,
                    "step_in_episode must lie in [0, {n}) (model.max_episode_steps), got [{lo}, {hi}]"
                );
                let table = self
                    .episode_step
                    .as_ref()
                    .context("no episode_step table")?;
                let x = x + step.apply(table).to_kind(kind);
                (x, Some(Rotary::new(episode, hd, base, kind)))
            }
        })
    }

    /// Which blocks run in one forward: all, unless training with depth dropout, in which case
    /// each block is dropped with probability `depth_dropout`, drawn from libtorch's global
    /// generator. [`Transformer::forward`] draws this itself; data-parallel replicas draw it
    /// once per minibatch and pass it to every shard's [`Transformer::forward_layers`].
    pub fn draw_layers(&self, train: bool) -> Vec<bool> {
        let n = self.layers.len();
        if !train || self.cfg.depth_dropout == 0.0 {
            return vec![true; n];
        }
        let draws = Tensor::rand([n as i64], (Kind::Float, tch::Device::Cpu));
        let draws = Vec::<f32>::try_from(draws).unwrap_or_else(|_| vec![1.0; n]);
        draws
            .iter()
            .map(|&u| f64::from(u) >= self.cfg.depth_dropout)
            .collect()
    }

    /// Each block's sink key/value slot for this call (None without a sink, or for a
    /// dropped block). The sink token is run through the kept blocks on its own.
    fn sink_slots(&self, kept: &[bool]) -> Result<Vec<Option<SinkKv>>> {
        let (h, d) = (self.cfg.heads as i64, self.cfg.head_dim() as i64);
        let mut slots = Vec::with_capacity(self.layers.len());
        match self.cfg.sink {
            Sink::None => slots.extend(self.layers.iter().map(|_| None)),
            Sink::SinkKv { .. } => {
                for (block, &keep) in self.layers.iter().zip(kept) {
                    let device = block.attn_norm.weight.device();
                    let zero = || Tensor::zeros([h, d], (Kind::Float, device));
                    let k = block
                        .attn
                        .sink_k
                        .as_ref()
                        .map_or_else(zero, |k| k.shallow_clone());
                    let v = block
                        .attn
                        .sink_v
                        .as_ref()
                        .map_or_else(zero, |v| v.shallow_clone());
                    slots.push(keep.then_some(SinkKv { k, v }));
                }
            }
            Sink::SinkToken => {
                let token = self.sink_token.as_ref().context("no sink token")?;
                let mut x = token.view([1, 1, -1]).to_kind(self.cfg.dtype.kind());
                for (block, &keep) in self.layers.iter().zip(kept) {
                    if keep {
                        let (next, kv) = block.sink_token_step(&x);
                        x = next;
                        slots.push(Some(kv));
                    } else {
                        slots.push(None);
                    }
                }
            }
        }
        Ok(slots)
    }

    /// Full causal forward over sequences from their start: `tokens: [B, T, D]`,
    /// `episode`, `step: [B, T]` i64 -> `[B, T, D]`.
    pub fn forward(
        &self,
        tokens: &Tensor,
        episode: &Tensor,
        step: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_layers(tokens, episode, step, &self.draw_layers(train))
    }

    /// [`Transformer::forward`] running only the blocks with `kept[i]` (one flag per block,
    /// from [`Transformer::draw_layers`]); draws nothing.
    pub fn forward_layers(
        &self,
        tokens: &Tensor,
        episode: &Tensor,
        step: &Tensor,
        kept: &[bool],
    ) -> Result<Tensor> {
        ensure!(
            kept.len() == self.layers.len(),
            "{} layer flags for {} blocks",
            kept.len(),
            self.layers.len()
        );
        let s = tokens.size();
        ensure!(
            s.len() == 3 && s[1] >= 1,
            "trunk input must be [B, T >= 1, D], got {s:?}"
        );
        let (b, t) = (s[0], s[1]);
        if self.cfg.positional == PosEncoding::Learned {
            let n = self.cfg.max_positions as i64;
            ensure!(
                t <= n,
                "sequence of {t} tokens exceeds model.max_positions = {n}"
            );
        }
        let index = Tensor::arange(t, (Kind::Int64, tokens.device())).expand([b, t], false);
        let x = tokens.to_kind(self.cfg.dtype.kind());
        let (mut x, rotary) = self.positions(&x, &index, episode, step)?;
        let mask = (!self.cfg.inter_episode_attention)
            .then(|| episode_mask(episode, self.cfg.sink.has_slot()));
        let sinks = self.sink_slots(kept)?;
        for ((block, keep), sink) in self.layers.iter().zip(kept).zip(&sinks) {
            if *keep {
                x = block.forward(&x, rotary.as_ref(), sink.as_ref(), mask.as_ref());
            }
        }
        Ok(self.norm.forward(&x))
    }

    /// Cached decode: appends `t >= 1` tokens per slot (`tokens: [B, t, D]`, `episode`,
    /// `step: [B, t]`) to `cache` and returns their outputs `[B, t, D]`. Runs without
    /// gradients. A chunk that would wrap a slot's ring onto itself is decoded token by
    /// token (same result, slower).
    pub fn decode(
        &self,
        tokens: &Tensor,
        episode: &Tensor,
        step: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let _no_grad = tch::no_grad_guard();
        let s = tokens.size();
        ensure!(
            s.len() == 3 && s[1] >= 1,
            "decode input must be [B, t >= 1, D], got {s:?}"
        );
        cache.check_compatible(&self.cfg, s[0])?;
        let t = s[1];
        if cache.wraps_within(t) {
            let outputs = (0..t)
                .map(|j| {
                    let one = |x: &Tensor| x.narrow(1, j, 1);
                    self.decode(&one(tokens), &one(episode), &one(step), cache)
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&outputs, 1));
        }
        if self.cfg.positional == PosEncoding::Learned {
            let longest = cache.lengths().iter().max().copied().unwrap_or(0) + t;
            let n = self.cfg.max_positions as i64;
            ensure!(
                longest <= n,
                "a slot reaches {longest} tokens, beyond model.max_positions = {n}"
            );
        }
        let plan = cache.plan(t);
        let x = tokens.to_kind(self.cfg.dtype.kind());
        let (mut x, rotary) = self.positions(&x, &plan.position, episode, step)?;
        cache.write_metadata(&plan, episode);
        let mask = cache.attention_mask(&plan, episode, self.cfg.inter_episode_attention);
        let sinks = self.sink_slots(&vec![true; self.layers.len()])?;
        let step = DecodeStep {
            rotary: rotary.as_ref(),
            plan: &plan,
            mask: &mask,
        };
        for (layer, (block, sink)) in self.layers.iter().zip(&sinks).enumerate() {
            x = block.decode(&x, &step, sink.as_ref(), cache, layer)?;
        }
        cache.advance(t);
        Ok(self.norm.forward(&x))
    }
}

/// What every block of one cached step shares: the new tokens' rotary angles, where they go
/// in the cache, and what they may attend to (`mask: [B, 1, t, S + C]`).
#[derive(Clone, Copy)]
struct DecodeStep<'a> {
    rotary: Option<&'a Rotary>,
    plan: &'a WritePlan,
    mask: &'a Tensor,
}

/// Block-diagonal causal mask `[B, 1, S + T, S + T]` bool: token i sees token j <= i of its
/// own episode; with a sink slot (S = 1) every token also sees position 0.
fn episode_mask(episode: &Tensor, sink: bool) -> Tensor {
    let t = episode.size()[1];
    let device = episode.device();
    let causal = Tensor::ones([t, t], (Kind::Bool, device)).tril(0); // [T, T]
    let same = episode.unsqueeze(2).eq_tensor(&episode.unsqueeze(1)); // [B, T, T]
    let mut mask = same.logical_and(&causal);
    if sink {
        let b = episode.size()[0];
        let first_col = Tensor::ones([b, t, 1], (Kind::Bool, device));
        mask = Tensor::cat(&[first_col, mask], 2); // [B, T, 1 + T]
        let first_row = Tensor::zeros([b, 1, t + 1], (Kind::Bool, device));
        let _ = first_row.narrow(2, 0, 1).fill_(1);
        mask = Tensor::cat(&[first_row, mask], 1); // [B, 1 + T, 1 + T]
    }
    mask.unsqueeze(1)
}
