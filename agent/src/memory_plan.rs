//! The memory model of the actor-critic, computed from its config alone (nothing is
//! allocated): parameter count, and the bytes per token that a training forward keeps for
//! the backward pass, that a no-grad forward needs at its widest point, and that the KV cache
//! holds. `trainer::memory_plan` combines these into the peak of a whole ReLIC run;
//! `icrl bench model` compares them with the measured peak. The formulas are written out in
//! docs/memory.md.
//!
//! Conventions: `e` = bytes of the model's dtype (4 for f32, 2 for bf16), D = d_model,
//! M = mlp_hidden, H = heads, L = layers, A = actions, V = vector observation size,
//! image H_i x W_i x 3 (u8) through convolutions of c_j channels at h_j x w_j.

use crate::config::{DType, ModelConfig, ObsSpec, PosEncoding, Sink, SinkInit};

/// Bytes of one element of the model's dtype.
pub fn dtype_bytes(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 4.0,
        DType::Bf16 => 2.0,
    }
}

/// What one token costs the actor-critic, in bytes (model-level, see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMemory {
    /// Trainable parameters (count).
    pub parameters: u64,
    /// Bytes of the parameters in the model's dtype.
    pub parameter_bytes: f64,
    /// Saved for backward per token by the token encoder (vector MLP, image CNN).
    pub encoder_saved: f64,
    /// Saved for backward per token by one transformer block.
    pub block_saved: f64,
    /// Saved for backward per token by the final norm, heads and rotary tables.
    pub head_saved: f64,
    /// Per token: the widest moment of one block's backward (gradient temporaries).
    pub backward_working: f64,
    /// Per token: the widest moment of a no-grad forward (encoder or one block, whichever
    /// is wider), on top of the inputs.
    pub forward_working: f64,
    /// Per token: the block inputs a checkpointed forward keeps (one `[D]` per block).
    pub checkpoint_saved: f64,
    /// KV-cache bytes per cached token (all layers, keys and values, plus its position and
    /// episode metadata).
    pub kv_per_token: f64,
    /// KV-cache bytes per slot independent of its length (the sink slot of every layer).
    pub kv_per_slot: f64,
}

/// The convolution output sizes `(channels, height, width)` of the image CNN
/// (kernel 3, stride 2, padding 1: each halves the size, rounding up).
fn cnn_shapes(cfg: &ModelConfig, (h, w): (usize, usize)) -> Vec<(f64, f64, f64)> {
    let (mut h, mut w) = (h, w);
    cfg.cnn_channels
        .iter()
        .map(|&c| {
            h = h.div_ceil(2);
            w = w.div_ceil(2);
            (c as f64, h as f64, w as f64)
        })
        .collect()
}

/// Trainable parameters of `ActorCritic::new(cfg, spec)`, counted from the config.
pub fn parameter_count(cfg: &ModelConfig, spec: &ObsSpec) -> u64 {
    let (d, m, a) = (
        cfg.d_model as u64,
        cfg.mlp_hidden as u64,
        spec.num_actions as u64,
    );
    let mut n = 0u64;
    // Token encoder.
    if spec.vector_dim > 0 {
        let (v, hid) = (spec.vector_dim as u64, cfg.encoder_hidden as u64);
        n += v * hid + hid + hid * d + d;
    }
    if let Some(hw) = spec.image {
        let mut c_in = 3u64;
        let shapes = cnn_shapes(cfg, hw);
        for &(c, _, _) in &shapes {
            let c = c as u64;
            n += c_in * c * 9 + c;
            c_in = c;
        }
        let flat = shapes
            .last()
            .map_or(3 * (hw.0 * hw.1) as u64, |&(c, h, w)| (c * h * w) as u64);
        n += flat * d + d;
    }
    n += (a + 1) * d; // previous-action embedding
    n += d + d; // previous-reward linear (1 -> D, with bias)
                // Trunk.
    let sink_params = match cfg.sink {
        Sink::SinkKv { k, v } => {
            [k, v].iter().filter(|&&s| s == SinkInit::Learned).count() as u64 * d
        }
        _ => 0,
    };
    n += cfg.layers as u64 * (4 * d * d + 3 * d * m + 2 * d + sink_params);
    n += d; // final norm
    n += match cfg.positional {
        PosEncoding::Learned => cfg.max_positions as u64 * d,
        PosEncoding::EpisodeRope => cfg.max_episode_steps as u64 * d,
        _ => 0,
    };
    if cfg.sink == Sink::SinkToken {
        n += d;
    }
    // Heads.
    n + d * a + a + d + 1
}

impl ModelMemory {
    /// The per-token costs of the actor-critic `cfg` on observations `spec`.
    pub fn of(cfg: &ModelConfig, spec: &ObsSpec) -> Self {
        let e = dtype_bytes(cfg.dtype);
        let (d, m, h) = (cfg.d_model as f64, cfg.mlp_hidden as f64, cfg.heads as f64);
        let rotary = matches!(cfg.positional, PosEncoding::Rope | PosEncoding::EpisodeRope);
        let narrow = cfg.dtype != DType::F32;

        // Encoder: fc1 keeps its (converted) input, gelu and fc2 the hidden layer; the CNN
        // keeps the scaled image (conv0's input) and every ReLU output.
        let mut encoder_saved = e; // previous reward, converted
        let mut encoder_forward = 0.0f64;
        if spec.vector_dim > 0 {
            let (v, hid) = (spec.vector_dim as f64, cfg.encoder_hidden as f64);
            encoder_saved += if narrow { e * v } else { 0.0 } + 2.0 * e * hid;
            encoder_forward = encoder_forward.max(e * v + 2.0 * e * hid);
        }
        if let Some(hw) = spec.image {
            let pixels = 3.0 * (hw.0 * hw.1) as f64;
            let shapes = cnn_shapes(cfg, hw);
            encoder_saved += e * pixels + shapes.iter().map(|(c, h, w)| e * c * h * w).sum::<f64>();
            // No grad: the converted image and its scaled copy, then each convolution's input,
            // output and ReLU output side by side.
            let mut widest = 2.0 * e * pixels;
            let mut input = e * pixels;
            for (c, h, w) in &shapes {
                let out = e * c * h * w;
                widest = widest.max(input + 2.0 * out);
                input = out;
            }
            encoder_forward = encoder_forward.max(widest);
        }

        // One block: each RMSNorm keeps its f32 input (the input itself in f32) and its
        // normalised output; rotary keeps q and k; attention keeps q, k, v, the output and the
        // log-sum-exp (f32 per head); merge keeps the output re-laid out for w_o; the gated
        // MLP keeps gate, gelu(gate), up and their product.
        let norms = 2.0 * (4.0 * d + e * d);
        let rot = if rotary { 2.0 * e * d } else { 0.0 };
        let attention = 4.0 * e * d + 4.0 * h;
        let block_saved = norms + rot + attention + e * d + 4.0 * e * m;
        let head_saved = 4.0 * d + e * d + if rotary { e * d / h } else { 0.0 };
        // Backward of a block: the incoming gradient, the gradients of gate, up and their
        // product, and dq/dk/dv with their f32 accumulation.
        let backward_working = 3.0 * e * m + 4.0 * e * d + 4.0 * d;
        // No-grad forward of a block: the residual stream, the f32 norm input and its output,
        // and three MLP-wide temporaries at the widest point.
        let block_forward = 2.0 * e * d + 4.0 * d + e * d + 3.0 * e * m;
        let forward_working = (encoder_forward + e * d).max(block_forward);

        let kv_per_token = cfg.layers as f64 * 2.0 * e * d + 16.0; // + position, episode (i64)
        let kv_per_slot = if cfg.sink.has_slot() {
            cfg.layers as f64 * 2.0 * e * d
        } else {
            0.0
        };
        let parameters = parameter_count(cfg, spec);
        ModelMemory {
            parameters,
            parameter_bytes: parameters as f64 * e,
            encoder_saved,
            block_saved,
            head_saved,
            backward_working,
            forward_working,
            checkpoint_saved: cfg.layers as f64 * e * d,
            kv_per_token,
            kv_per_slot,
        }
    }

    /// Bytes a training forward keeps for backward over `tokens` tokens, without activation
    /// checkpointing (what the trainer does), for `layers` blocks.
    pub fn activations(&self, layers: usize, tokens: f64) -> f64 {
        tokens * (self.encoder_saved + layers as f64 * self.block_saved + self.head_saved)
    }

    /// The same with per-block activation checkpointing (block inputs kept, one block's
    /// activations recomputed at a time): what checkpointing would save (not implemented in
    /// the trainer; a what-if for sizing).
    pub fn activations_checkpointed(&self, tokens: f64) -> f64 {
        tokens * (self.encoder_saved + self.checkpoint_saved + self.head_saved + self.block_saved)
    }
}
