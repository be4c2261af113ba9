//! Attention diagnostics: a separate no-grad forward of the trunk that materialises every
//! layer's attention probabilities (the training and sampling paths stay on SDPA, which never
//! shows them) and reduces them to a few numbers per head.
//!
//! The diagnostic forward is the same model: its attention is `softmax(q k^T / sqrt(hd))`
//! over the sink slot and the visible tokens, multiplied by the values, and its output equals
//! [`Transformer::forward`] in evaluation mode (tested). Queries are processed in chunks so
//! that the probabilities of a long context never sit in memory at once.

use super::{SinkKv, Transformer};
use crate::config::{Sink, SinkInit};
use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// Attention statistics of one layer over a probe batch (means over the probe's sequences
/// and query positions).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerAttention {
    /// `[H]`: each head's mean attention probability on the sink slot. `None` for a model
    /// without a sink.
    pub sink_mass: Option<Vec<f64>>,
    /// `[H]`: each head's mean attention entropy in nats (over the sink and the visible
    /// tokens; a query that sees n keys has at most ln n).
    pub entropy: Vec<f64>,
    /// L2 norm of the layer's sink key `[H, hd]`, when it is not the constant zero (learned
    /// `SinkKv` key, or the sink token's key at this layer).
    pub sink_k_norm: Option<f64>,
    /// L2 norm of the layer's sink value `[H, hd]`, when it is not the constant zero.
    pub sink_v_norm: Option<f64>,
}

/// Most attention-probability elements held at once (`B * H * chunk * (S + T)`, f32): 64 MiB.
const MAX_PROBABILITY_ELEMENTS: i64 = 1 << 24;

/// Attention probabilities of `q: [B, H, T, hd]` over the sink slot (when `sink` is given) and
/// the keys `k: [B, H, T, hd]`: `[B, H, T, S + T]`, column 0 the sink when S = 1, in f32.
/// `mask` is the block-diagonal mask of [`causal_attention`](super::causal_attention)
/// (`[B, 1, S + T, S + T]` bool); without it the plain causal mask applies. Each row sums
/// to 1, and multiplying by the values (sink value first) gives `causal_attention`.
pub fn attention_probabilities(
    q: &Tensor,
    k: &Tensor,
    sink: Option<&SinkKv>,
    mask: Option<&Tensor>,
) -> Tensor {
    let t = q.size()[2];
    let keys = with_sink_slot(k, sink.map(|s| &s.k));
    probabilities(q, &keys, 0, t, sink.is_some(), mask)
}

/// `x: [B, H, T, hd]` with the slot `[H, hd]` prepended along T, in f32.
fn with_sink_slot(x: &Tensor, slot: Option<&Tensor>) -> Tensor {
    let x = x.to_kind(Kind::Float);
    let Some(slot) = slot else {
        return x;
    };
    let s = x.size();
    let slot = slot
        .to_kind(Kind::Float)
        .view([1, s[1], 1, s[3]])
        .expand([s[0], s[1], 1, s[3]], false);
    Tensor::cat(&[slot, x], 2)
}

/// Probabilities of the queries `start..start + len` of `q: [B, H, T, hd]` over `keys:
/// [B, H, S + T, hd]` (f32): `[B, H, len, S + T]`.
fn probabilities(
    q: &Tensor,
    keys: &Tensor,
    start: i64,
    len: i64,
    has_sink: bool,
    mask: Option<&Tensor>,
) -> Tensor {
    let slots = i64::from(has_sink);
    let n_keys = keys.size()[2];
    let device = q.device();
    let q = q.narrow(2, start, len).to_kind(Kind::Float);
    let scale = 1.0 / (q.size()[3] as f64).sqrt();
    let scores = q.matmul(&keys.transpose(2, 3)) * scale; // [B, H, len, S + T]
    let visible = match mask {
        // The rows of these queries (the mask's first row is the sink's own query).
        Some(m) => m.narrow(2, slots + start, len), // [B, 1, len, S + T]
        None => {
            let query = Tensor::arange_start(start, start + len, (Kind::Int64, device));
            let key = Tensor::arange(n_keys, (Kind::Int64, device)) - slots;
            let causal = key.unsqueeze(0).le_tensor(&query.unsqueeze(1)); // [len, S + T]
            causal.view([1, 1, len, n_keys])
        }
    };
    scores
        .masked_fill(&visible.logical_not(), f64::NEG_INFINITY)
        .softmax(-1, Kind::Float)
}

/// Per-head sums over the probe of (sink probability, entropy) for `p: [B, H, len, S + T]`.
fn head_sums(p: &Tensor, has_sink: bool) -> (Option<Tensor>, Tensor) {
    let sum_over_queries = |x: Tensor| x.sum_dim_intlist([0, 2].as_slice(), false, Kind::Double);
    // p ln p is 0 where p is 0 (masked keys).
    let entropy = -(p * p.clamp_min(1e-30).log()).sum_dim_intlist(-1, false, Kind::Float);
    let sink = has_sink.then(|| sum_over_queries(p.select(3, 0)));
    (sink, sum_over_queries(entropy))
}

fn to_vec(x: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(x.to_kind(Kind::Double).contiguous())?)
}

impl Transformer {
    /// The evaluation-mode forward ([`Transformer::forward`] with `train = false`, inputs
    /// `tokens: [B, T, D]`, `episode`, `step: [B, T]`) with explicit attention, returning its
    /// output `[B, T, D]` and every layer's [`LayerAttention`]. Runs without gradients and
    /// draws no random numbers, so calling it leaves training unchanged.
    pub fn forward_with_attention(
        &self,
        tokens: &Tensor,
        episode: &Tensor,
        step: &Tensor,
    ) -> Result<(Tensor, Vec<LayerAttention>)> {
        let _no_grad = tch::no_grad_guard();
        let s = tokens.size();
        ensure!(
            s.len() == 3 && s[1] >= 1,
            "trunk input must be [B, T >= 1, D], got {s:?}"
        );
        let (b, t) = (s[0], s[1]);
        let cfg = self.config();
        let index = Tensor::arange(t, (Kind::Int64, tokens.device())).expand([b, t], false);
        let x = tokens.to_kind(cfg.dtype.kind());
        let (mut x, rotary) = self.positions(&x, &index, episode, step)?;
        let has_sink = cfg.sink.has_slot();
        let mask = (!cfg.inter_episode_attention).then(|| super::episode_mask(episode, has_sink));
        let sinks = self.sink_slots(&vec![true; self.layers.len()])?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (block, sink) in self.layers.iter().zip(&sinks) {
            let (q, k, v) = block
                .attn
                .project(&block.attn_norm.forward(&x), rotary.as_ref());
            let (y, stats) = self.explicit_attention(&q, &k, &v, sink.as_ref(), mask.as_ref())?;
            let x_attn = &x + block.attn.merge(&y.to_kind(x.kind()));
            x = &x_attn + block.mlp.forward(&block.mlp_norm.forward(&x_attn));
            layers.push(stats);
        }
        Ok((self.norm.forward(&x), layers))
    }

    /// One layer's attention output `[B, H, T, hd]` (f32) and statistics, the queries taken in
    /// chunks that keep the probabilities under [`MAX_PROBABILITY_ELEMENTS`].
    fn explicit_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        sink: Option<&SinkKv>,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, LayerAttention)> {
        let s = q.size(); // [B, H, T, hd]
        let (b, h, t) = (s[0], s[1], s[2]);
        let has_sink = sink.is_some();
        let keys = with_sink_slot(k, sink.map(|s| &s.k)); // [B, H, S + T, hd]
        let values = with_sink_slot(v, sink.map(|s| &s.v));
        let per_query = b * h * keys.size()[2];
        let chunk = (MAX_PROBABILITY_ELEMENTS / per_query.max(1)).clamp(1, t);
        let (mut outputs, mut sink_sum, mut entropy_sum) = (Vec::new(), None, None);
        let add =
            |total: Option<Tensor>, x: Tensor| Some(total.map_or(x.shallow_clone(), |t| t + x));
        let mut start = 0;
        while start < t {
            let len = chunk.min(t - start);
            let p = probabilities(q, &keys, start, len, has_sink, mask);
            outputs.push(p.matmul(&values));
            let (sink_part, entropy_part) = head_sums(&p, has_sink);
            if let Some(part) = sink_part {
                sink_sum = add(sink_sum, part);
            }
            entropy_sum = add(entropy_sum, entropy_part);
            start += len;
        }
        let queries = (b * t) as f64;
        let sink_mass = match sink_sum {
            Some(sum) => Some(to_vec(&(sum / queries))?),
            None => None,
        };
        let entropy = match entropy_sum {
            Some(sum) => to_vec(&(sum / queries))?,
            None => vec![0.0; h as usize],
        };
        let (k_norm, v_norm) = self.sink_norms(sink);
        Ok((
            Tensor::cat(&outputs, 2),
            LayerAttention {
                sink_mass,
                entropy,
                sink_k_norm: k_norm,
                sink_v_norm: v_norm,
            },
        ))
    }

    /// Norms of the sink key and value slot, for the halves that are not the constant zero.
    fn sink_norms(&self, sink: Option<&SinkKv>) -> (Option<f64>, Option<f64>) {
        let Some(sink) = sink else {
            return (None, None);
        };
        let norm = |x: &Tensor| x.to_kind(Kind::Double).norm().double_value(&[]);
        let (k_varies, v_varies) = match self.config().sink {
            Sink::None => (false, false),
            Sink::SinkToken => (true, true),
            Sink::SinkKv { k, v } => (k == SinkInit::Learned, v == SinkInit::Learned),
        };
        (
            k_varies.then(|| norm(&sink.k)),
            v_varies.then(|| norm(&sink.v)),
        )
    }
}
