//! Fused single-token decode for small policies on the CPU: [`FusedDecoder`].
//!
//! libtorch spends most of a tiny model's decode step in per-operator overhead (about 40
//! operators per layer, each dispatched, allocated and threaded on its own) and in attention
//! over the whole cache capacity behind a mask. This path does one step of
//! [`ActorCritic::decode`] for a batch of env slots in plain Rust:
//!
//! - host copies of the parameters (refreshed from the libtorch tensors with
//!   [`FusedDecoder::refresh_weights`] after every update), laid out for row-times-matrix
//!   products (`W^T`, the q/k/v and gate/up projections concatenated);
//! - its own KV cache: per slot, layer and head, keys and values in blocks of 16 ring entries,
//!   `[C / 16][hd][16]`, so one head's scores and its weighted sum of values read one
//!   contiguous stream over the *filled* blocks only (a ring of `C` entries; token `p` of a
//!   slot lives in entry `p % C`, as in [`KvCache`]); no mask is built, nothing is allocated
//!   per step. (The `[hd][C]` layout this replaced read `hd` streams 4 KiB apart at `C` =
//!   1024 and wrote a token across a page per dimension; the blocks decode 1.42-1.48x faster.)
//! - one pass per layer over the batch (weights stay in cache), the projections in register
//!   tiles of 4 slots x 64 outputs with AVX-512; softmax and GELU use vectorisable polynomial
//!   `exp` / `erf` (relative error ~1e-7);
//! - the batch split into contiguous shards of slots, one per thread (slots are independent
//!   in a decode step), on its own rayon pool;
//! - kernels compiled three times (AVX-512, AVX2, baseline) and picked at run time.
//!
//! The result equals the libtorch decode within 1e-5 in f32 for every positional encoding,
//! sink variant and attention mode, across slot resets and window slides (tests in
//! `agent/tests/fused_decode.rs`). After a policy update the caller either resets the slots
//! or rebuilds a libtorch [`KvCache`] (chunked prefill is faster in libtorch) and loads it with
//! [`FusedDecoder::load_cache`].

use crate::actor_critic::ActorCritic;
use crate::cache::KvCache;
use crate::config::{DType, ModelConfig, PosEncoding, Sink};
use crate::tokens::StepInputs;
use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

/// Sizes and switches the kernels need.
#[derive(Debug, Clone, Copy)]
struct Dims {
    d: usize,
    heads: usize,
    hd: usize,
    mlp: usize,
    actions: usize,
    vector: usize,
    encoder_hidden: usize,
    capacity: usize,
    /// Blocks of `BLOCK` entries that hold `capacity` (the last one padded).
    blocks: usize,
    positional: PosEncoding,
    sink: bool,
    inter_episode: bool,
    /// Which kernels run (the attention loops use AVX-512 intrinsics where available).
    isa: Isa,
}

impl Dims {
    fn rotary(&self) -> bool {
        matches!(
            self.positional,
            PosEncoding::Rope | PosEncoding::EpisodeRope
        )
    }
}

/// One block's parameters, `W^T` layouts (`[in][out]`, row-major).
#[derive(Debug, Default)]
struct LayerWeights {
    attn_norm: Vec<f32>,
    /// `[D][3D]`: q | k | v.
    wqkv: Vec<f32>,
    /// `[D][D]`.
    wo: Vec<f32>,
    mlp_norm: Vec<f32>,
    /// `[D][2M]`: gate | up.
    w_gate_up: Vec<f32>,
    /// `[M][D]`.
    w_down: Vec<f32>,
    /// `[H * hd]` sink key (never rotated); empty without a sink slot.
    sink_k: Vec<f32>,
    /// `[H * hd]` sink value; empty without a sink slot.
    sink_v: Vec<f32>,
}

/// The token encoder's vector MLP: fc1^T `[V][E]`, b1 `[E]`, fc2^T `[E][D]`, b2 `[D]`.
type VectorMlp = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

/// Host copy of the whole policy.
#[derive(Debug, Default)]
struct Weights {
    /// Vector MLP (None without vector observations).
    vector_mlp: Option<VectorMlp>,
    /// `[(A + 1)][D]`.
    prev_action: Vec<f32>,
    /// `[D]` weight and bias of the previous-reward linear.
    reward_w: Vec<f32>,
    reward_b: Vec<f32>,
    layers: Vec<LayerWeights>,
    norm: Vec<f32>,
    /// `[max_positions][D]` (`Learned`) or empty.
    position: Vec<f32>,
    /// `[max_episode_steps][D]` (`EpisodeRope`) or empty.
    episode_step: Vec<f32>,
    /// `[D][A]`.
    actor: Vec<f32>,
    actor_b: Vec<f32>,
    /// `[D]`.
    critic: Vec<f32>,
    critic_b: f32,
    /// Rotary frequencies `[hd / 2]`, as `Rotary::new` computes them (f64).
    inv_freq: Vec<f64>,
}

/// One env slot's cache: per layer keys and values `[H][C / BLOCK][hd][BLOCK]` (see
/// [`kv_index`]), episodes per ring entry.
#[derive(Debug, Clone)]
struct SlotCache {
    keys: Vec<f32>,
    values: Vec<f32>,
    episode: Vec<i64>,
    /// Tokens appended since the slot's reset (may exceed the capacity).
    length: i64,
}

/// Per-thread work buffers, sized for the largest shard.
#[derive(Debug, Default)]
struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    gate_up: Vec<f32>,
    hidden: Vec<f32>,
    enc: Vec<f32>,
    scores: Vec<f32>,
    /// `[hd][BLOCK]` partial sums of the attention's weighted values.
    acc: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The step's inputs on the host, one entry (or row) per slot.
#[derive(Debug, Default)]
struct HostInputs {
    /// `[B][D]` tokens from libtorch's encoder (image observations); empty otherwise.
    tokens: Vec<f32>,
    vector: Vec<f32>,
    prev_action: Vec<i64>,
    prev_reward: Vec<f32>,
    episode: Vec<i64>,
    step: Vec<i64>,
}

/// Which compiled variant of the kernels runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    }
}

/// Single-token decode of an [`ActorCritic`] for `batch` env slots on the CPU, with its own KV
/// cache of `capacity` tokens per slot (a sliding window beyond it). See the module docs.
pub struct FusedDecoder {
    cfg: ModelConfig,
    dims: Dims,
    weights: Weights,
    slots: Vec<SlotCache>,
    scratch: Vec<Scratch>,
    inputs: HostInputs,
    logits: Vec<f32>,
    values: Vec<f32>,
    /// Slots per shard (the last shard may be shorter).
    shard: usize,
    pool: Option<rayon::ThreadPool>,
    isa: Isa,
}

impl std::fmt::Debug for FusedDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedDecoder")
            .field("batch", &self.slots.len())
            .field("capacity", &self.dims.capacity)
            .field("threads", &self.threads())
            .field("isa", &self.isa)
            .finish()
    }
}

/// A tensor's values as a host `Vec<f32>` (any device, kind and layout), without autograd.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    let t = t
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?;
    let n = t.numel();
    let mut v = vec![0f32; n];
    t.f_copy_data(&mut v, n)?;
    Ok(v)
}

/// Copies a tensor's values into `dst` (resized), converting to `T`.
fn copy_into<T: tch::kind::Element + Default + Clone>(t: &Tensor, dst: &mut Vec<T>) -> Result<()> {
    let t = t.f_to_kind(T::KIND)?.f_contiguous()?;
    let n = t.numel();
    dst.resize(n, T::default());
    t.f_copy_data(dst, n)?;
    Ok(())
}

/// `W [out, in]` -> `W^T` as `[in][out]` row-major.
fn transposed(ws: &[&Tensor]) -> Result<Vec<f32>> {
    let refs: Vec<Tensor> = ws.iter().map(|w| w.shallow_clone()).collect();
    host(&Tensor::f_cat(&refs, 0)?.f_tr()?)
}

impl FusedDecoder {
    /// True when this path can run `model`: parameters on the CPU in f32.
    pub fn supports(model: &ActorCritic) -> bool {
        model.actor.ws.device() == Device::Cpu && model.config().dtype == DType::F32
    }

    /// A decoder for `batch` slots of `capacity` tokens each, running its shards on
    /// `threads` threads (1 = the calling thread only).
    pub fn new(model: &ActorCritic, batch: usize, capacity: usize, threads: usize) -> Result<Self> {
        ensure!(
            Self::supports(model),
            "fused decode needs the model on the CPU in f32 (model.dtype: F32)"
        );
        ensure!(batch > 0, "fused decode: batch must be at least 1");
        ensure!(capacity > 0, "fused decode: capacity must be at least 1");
        let cfg = model.config().clone();
        let spec = model.spec();
        let dims = Dims {
            d: cfg.d_model,
            heads: cfg.heads,
            hd: cfg.head_dim(),
            mlp: cfg.mlp_hidden,
            actions: spec.num_actions,
            vector: spec.vector_dim,
            encoder_hidden: cfg.encoder_hidden,
            capacity,
            blocks: capacity.div_ceil(BLOCK),
            positional: cfg.positional,
            sink: cfg.sink.has_slot(),
            inter_episode: cfg.inter_episode_attention,
            isa: Isa::detect(),
        };
        let threads = threads.clamp(1, batch);
        let shard = batch.div_ceil(threads);
        let kv = cfg.layers * dims.d * dims.blocks * BLOCK;
        let slots = vec![
            SlotCache {
                keys: vec![0.0; kv],
                values: vec![0.0; kv],
                episode: vec![0; capacity],
                length: 0,
            };
            batch
        ];
        let scratch = (0..threads)
            .map(|_| Scratch {
                x: vec![0.0; shard * dims.d],
                xn: vec![0.0; shard * dims.d],
                qkv: vec![0.0; shard * 3 * dims.d],
                att: vec![0.0; shard * dims.d],
                gate_up: vec![0.0; shard * 2 * dims.mlp],
                hidden: vec![0.0; shard * dims.mlp],
                enc: vec![0.0; shard * dims.encoder_hidden],
                scores: vec![0.0; dims.blocks * BLOCK],
                acc: vec![0.0; dims.hd * BLOCK],
                cos: vec![0.0; shard * dims.hd / 2],
                sin: vec![0.0; shard * dims.hd / 2],
            })
            .collect();
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("fused-decode-{i}"))
                    .build()
                    .context("fused decode: building its thread pool")?,
            )
        } else {
            None
        };
        let mut decoder = FusedDecoder {
            cfg,
            dims,
            weights: Weights::default(),
            slots,
            scratch,
            inputs: HostInputs::default(),
            logits: vec![0.0; batch * dims.actions],
            values: vec![0.0; batch],
            shard,
            pool,
            isa: dims.isa,
        };
        decoder.refresh_weights(model)?;
        Ok(decoder)
    }

    /// Number of slots.
    pub fn batch(&self) -> usize {
        self.slots.len()
    }

    /// Tokens a slot holds before its window slides.
    pub fn capacity(&self) -> usize {
        self.dims.capacity
    }

    /// Threads the shards run on.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// Tokens appended to each slot since its reset.
    pub fn lengths(&self) -> Vec<i64> {
        self.slots.iter().map(|s| s.length).collect()
    }

    /// Copies the current parameters of `model` (after every update). The model must have
    /// the configuration and spec this decoder was built for.
    pub fn refresh_weights(&mut self, model: &ActorCritic) -> Result<()> {
        ensure!(
            model.config() == &self.cfg
                && model.spec().num_actions == self.dims.actions
                && model.spec().vector_dim == self.dims.vector,
            "fused decode: the model's configuration differs from the one the decoder was built for"
        );
        let _no_grad = tch::no_grad_guard();
        let dims = self.dims;
        let enc = &model.encoder;
        let vector_mlp = match &enc.vector {
            Some((fc1, fc2)) => {
                let bias = |l: &tch::nn::Linear| -> Result<Vec<f32>> {
                    host(l.bs.as_ref().context("vector MLP without bias")?)
                };
                Some((
                    transposed(&[&fc1.ws])?,
                    bias(fc1)?,
                    transposed(&[&fc2.ws])?,
                    bias(fc2)?,
                ))
            }
            None => None,
        };
        let trunk = &model.trunk;
        let mut layers = Vec::with_capacity(trunk.layers.len());
        for block in &trunk.layers {
            let a = &block.attn;
            let m = &block.mlp;
            let (sink_k, sink_v) = match self.cfg.sink {
                Sink::SinkKv { .. } => {
                    let zero = || vec![0.0; dims.d];
                    (
                        a.sink_k
                            .as_ref()
                            .map(host)
                            .transpose()?
                            .unwrap_or_else(zero),
                        a.sink_v
                            .as_ref()
                            .map(host)
                            .transpose()?
                            .unwrap_or_else(zero),
                    )
                }
                // SinkToken: filled below from the sink token's pass through the blocks.
                _ => (Vec::new(), Vec::new()),
            };
            layers.push(LayerWeights {
                attn_norm: host(&block.attn_norm.weight)?,
                wqkv: transposed(&[&a.wq.ws, &a.wk.ws, &a.wv.ws])?,
                wo: transposed(&[&a.wo.ws])?,
                mlp_norm: host(&block.mlp_norm.weight)?,
                w_gate_up: transposed(&[&m.w_gate.ws, &m.w_up.ws])?,
                w_down: transposed(&[&m.w_down.ws])?,
                sink_k,
                sink_v,
            });
        }
        let table = |e: &Option<tch::nn::Embedding>| -> Result<Vec<f32>> {
            e.as_ref().map_or(Ok(Vec::new()), |e| host(&e.ws))
        };
        let half = dims.hd / 2;
        let base = self.cfg.rope_base;
        let inv_freq = (0..half)
            .map(|i| (i as f64 * (-2.0 * base.ln() / dims.hd as f64)).exp())
            .collect();
        let critic_b = host(model.critic.bs.as_ref().context("critic without bias")?)?;
        let mut weights = Weights {
            vector_mlp,
            prev_action: host(&enc.prev_action.ws)?,
            reward_w: host(&enc.prev_reward.ws)?,
            reward_b: host(
                enc.prev_reward
                    .bs
                    .as_ref()
                    .context("reward linear without bias")?,
            )?,
            layers,
            norm: host(&trunk.norm.weight)?,
            position: table(&trunk.position)?,
            episode_step: table(&trunk.episode_step)?,
            actor: transposed(&[&model.actor.ws])?,
            actor_b: host(model.actor.bs.as_ref().context("actor without bias")?)?,
            critic: host(&model.critic.ws)?,
            critic_b: critic_b.first().copied().unwrap_or(0.0),
            inv_freq,
        };
        if self.cfg.sink == Sink::SinkToken {
            let token = host(trunk.sink_token.as_ref().context("no sink token")?)?;
            sink_token_slots(&mut weights, &dims, token);
        }
        self.weights = weights;
        Ok(())
    }

    /// Empties one slot (a trial boundary); the other slots are untouched.
    pub fn reset_slot(&mut self, slot: usize) -> Result<()> {
        let n = self.slots.len();
        let s = self
            .slots
            .get_mut(slot)
            .with_context(|| format!("fused decode: slot {slot} out of range (batch {n})"))?;
        s.length = 0;
        Ok(())
    }

    /// Empties every slot.
    pub fn reset_all(&mut self) {
        self.slots.iter_mut().for_each(|s| s.length = 0);
    }

    /// Benchmark helper: marks every slot as holding `len` tokens of episode 0 without
    /// computing them (keys and values keep whatever they hold).
    pub fn fill_for_benchmark(&mut self, len: usize) -> Result<()> {
        ensure!(
            len <= self.dims.capacity,
            "fill {len} exceeds capacity {}",
            self.dims.capacity
        );
        for s in &mut self.slots {
            s.length = len as i64;
            s.episode.fill(0);
        }
        Ok(())
    }

    /// Takes over the contents of a libtorch cache of the same batch and capacity (e.g.
    /// after [`ActorCritic::prefill`] with the updated parameters): keys, values, episodes
    /// and lengths. The sink slot comes from the weights, as in the libtorch decode.
    pub fn load_cache(&mut self, cache: &KvCache) -> Result<()> {
        let (b, c) = (self.slots.len(), self.dims.capacity);
        ensure!(
            cache.batch() == b && cache.capacity() == c,
            "fused decode: cache of {} slots x {} tokens, decoder has {b} x {c}",
            cache.batch(),
            cache.capacity()
        );
        cache.check_compatible(&self.cfg, b as i64)?;
        let _no_grad = tch::no_grad_guard();
        let s = cache.sink_slots();
        let (heads, hd, per_head) = (self.dims.heads, self.dims.hd, self.dims.blocks * BLOCK);
        let per_layer = heads * hd * per_head;
        for (layer, (k, v)) in cache.keys.iter().zip(&cache.values).enumerate() {
            // [B, H, S + C, hd] -> the ring entries [B][H][C][hd] -> per head `kv_index`.
            let (k, v) = (
                host(&k.narrow(2, s, c as i64))?,
                host(&v.narrow(2, s, c as i64))?,
            );
            for (i, slot) in self.slots.iter_mut().enumerate() {
                let dst = layer * per_layer..(layer + 1) * per_layer;
                let (keys, vals) = (&mut slot.keys[dst.clone()], &mut slot.values[dst]);
                for h in 0..heads {
                    let src = (i * heads + h) * c * hd;
                    for entry in 0..c {
                        for j in 0..hd {
                            let at = h * hd * per_head + kv_index(entry, j, hd);
                            keys[at] = k[src + entry * hd + j];
                            vals[at] = v[src + entry * hd + j];
                        }
                    }
                }
            }
        }
        let mut episodes = Vec::<i64>::new();
        copy_into(cache.entry_episode(), &mut episodes)?;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            slot.episode.copy_from_slice(&episodes[i * c..(i + 1) * c]);
            slot.length = cache.lengths()[i];
        }
        Ok(())
    }

    /// One decode step for every slot: `x` holds one step per slot (`[B, 1]` inputs, as for
    /// [`ActorCritic::decode`]). Returns logits `[B][A]` (row-major) and values `[B]`.
    pub fn decode(&mut self, model: &ActorCritic, x: &StepInputs) -> Result<(&[f32], &[f32])> {
        let (b, t) = x.batch_time();
        ensure!(
            b as usize == self.slots.len() && t == 1,
            "fused decode: inputs must be [{}, 1], got [{b}, {t}]",
            self.slots.len()
        );
        x.check(model.spec())?;
        let inputs = &mut self.inputs;
        copy_into(&x.prev_action, &mut inputs.prev_action)?;
        copy_into(&x.prev_reward, &mut inputs.prev_reward)?;
        copy_into(&x.episode_index, &mut inputs.episode)?;
        copy_into(&x.step_in_episode, &mut inputs.step)?;
        if x.image.is_some() {
            // The image CNN stays in libtorch; the rest of the token is part of its output.
            let _no_grad = tch::no_grad_guard();
            copy_into(&model.encoder.forward(x), &mut inputs.tokens)?;
        } else {
            inputs.tokens.clear();
            copy_into(&x.vector, &mut inputs.vector)?;
        }
        self.check_positions()?;
        self.run();
        Ok((&self.logits, &self.values))
    }

    /// Errors for positions outside the model's tables (as the libtorch decode does).
    fn check_positions(&self) -> Result<()> {
        match self.dims.positional {
            PosEncoding::Learned => {
                let n = self.cfg.max_positions as i64;
                if let Some(s) = self.slots.iter().find(|s| s.length + 1 > n) {
                    anyhow::bail!(
                        "a slot reaches {} tokens, beyond model.max_positions = {n}",
                        s.length + 1
                    );
                }
            }
            PosEncoding::EpisodeRope => {
                let n = self.cfg.max_episode_steps as i64;
                if let Some(&s) = self.inputs.step.iter().find(|&&s| s < 0 || s >= n) {
                    anyhow::bail!(
                        "step_in_episode must lie in [0, {n}) (model.max_episode_steps), got {s}"
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs the step over all shards (in parallel when there is a pool).
    fn run(&mut self) {
        let (w, dims, inputs, isa, shard) = (
            &self.weights,
            &self.dims,
            &self.inputs,
            self.isa,
            self.shard,
        );
        let a = dims.actions;
        let work = |i: usize,
                    slots: &mut [SlotCache],
                    scratch: &mut Scratch,
                    logits: &mut [f32],
                    values: &mut [f32]| {
            let shard = Shard {
                first: i * shard,
                slots,
                scratch,
                logits,
                values,
            };
            decode_shard_dispatch(isa, w, dims, inputs, shard);
        };
        match &self.pool {
            None => work(
                0,
                &mut self.slots,
                &mut self.scratch[0],
                &mut self.logits,
                &mut self.values,
            ),
            Some(pool) => {
                let (slots, scratch, logits, values) = (
                    &mut self.slots,
                    &mut self.scratch,
                    &mut self.logits,
                    &mut self.values,
                );
                pool.install(|| {
                    slots
                        .par_chunks_mut(shard)
                        .zip(scratch.par_iter_mut())
                        .zip(logits.par_chunks_mut(shard * a))
                        .zip(values.par_chunks_mut(shard))
                        .enumerate()
                        .for_each(|(i, (((s, sc), l), v))| work(i, s, sc, l, v));
                });
            }
        }
    }
}

/// One thread's part of a step: slots `first..first + slots.len()` of the batch.
struct Shard<'a> {
    first: usize,
    slots: &'a mut [SlotCache],
    scratch: &'a mut Scratch,
    logits: &'a mut [f32],
    values: &'a mut [f32],
}

fn decode_shard_dispatch(isa: Isa, w: &Weights, dims: &Dims, inputs: &HostInputs, s: Shard<'_>) {
    match isa {
        // SAFETY: `Isa::detect` chose these variants only where the CPU has the features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { decode_shard_avx512(w, dims, inputs, s) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { decode_shard_avx2(w, dims, inputs, s) },
        _ => decode_shard(w, dims, inputs, s),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
unsafe fn decode_shard_avx512(w: &Weights, dims: &Dims, inputs: &HostInputs, s: Shard<'_>) {
    decode_shard(w, dims, inputs, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn decode_shard_avx2(w: &Weights, dims: &Dims, inputs: &HostInputs, s: Shard<'_>) {
    decode_shard(w, dims, inputs, s)
}

/// The decode step of one shard: tokens, positions, every block, final norm and heads.
#[inline(always)]
fn decode_shard(w: &Weights, dims: &Dims, inputs: &HostInputs, s: Shard<'_>) {
    let Shard {
        first,
        slots,
        scratch: sc,
        logits,
        values,
    } = s;
    let rows = slots.len();
    if rows == 0 {
        return;
    }
    let (d, hd, m, cap) = (dims.d, dims.hd, dims.mlp, dims.capacity);
    let half = hd / 2;
    let x = &mut sc.x[..rows * d];

    // Tokens: libtorch's (image observations) or the encoder here.
    if inputs.tokens.is_empty() {
        for (r, xr) in x.chunks_exact_mut(d).enumerate() {
            let row = first + r;
            let a = inputs.prev_action[row] as usize;
            let reward = inputs.prev_reward[row];
            let emb = &w.prev_action[a * d..(a + 1) * d];
            for (((y, &e), &rw), &rb) in xr.iter_mut().zip(emb).zip(&w.reward_w).zip(&w.reward_b) {
                *y = e + (reward * rw + rb);
            }
        }
        if let Some((fc1, b1, fc2, b2)) = &w.vector_mlp {
            let (v, e) = (dims.vector, dims.encoder_hidden);
            let obs = &inputs.vector[first * v..(first + rows) * v];
            let enc = &mut sc.enc[..rows * e];
            matmul(obs, fc1, enc, v, e, false);
            for hr in enc.chunks_exact_mut(e) {
                for (h, &b) in hr.iter_mut().zip(b1) {
                    *h = gelu(*h + b);
                }
            }
            // Bias first, so the sum is token + (fc2 h + b2) up to rounding.
            let fc2_out = &mut sc.xn[..rows * d];
            matmul(enc, fc2, fc2_out, e, d, false);
            for (xr, yr) in x.chunks_exact_mut(d).zip(fc2_out.chunks_exact(d)) {
                for ((xv, &y), &b) in xr.iter_mut().zip(yr).zip(b2) {
                    *xv += y + b;
                }
            }
        }
    } else {
        x.copy_from_slice(&inputs.tokens[first * d..(first + rows) * d]);
    }

    // Positions: embeddings added, rotary angles, the new token's ring entry.
    for (r, (xr, slot)) in x.chunks_exact_mut(d).zip(slots.iter()).enumerate() {
        let row = first + r;
        let table_row = match dims.positional {
            PosEncoding::Learned => Some(&w.position[slot.length as usize * d..][..d]),
            PosEncoding::EpisodeRope => Some(&w.episode_step[inputs.step[row] as usize * d..][..d]),
            _ => None,
        };
        if let Some(p) = table_row {
            xr.iter_mut().zip(p).for_each(|(y, &p)| *y += p);
        }
        let angle_pos = match dims.positional {
            PosEncoding::Rope => slot.length as f64,
            PosEncoding::EpisodeRope => inputs.episode[row] as f64,
            _ => continue,
        };
        for i in 0..half {
            let angle = angle_pos * w.inv_freq[i];
            sc.cos[r * half + i] = angle.cos() as f32;
            sc.sin[r * half + i] = angle.sin() as f32;
        }
    }

    let scale = 1.0 / (hd as f32).sqrt();
    for (l, lw) in w.layers.iter().enumerate() {
        let xn = &mut sc.xn[..rows * d];
        rms_norm_rows(x, &lw.attn_norm, xn, d);
        let qkv = &mut sc.qkv[..rows * 3 * d];
        matmul_isa(dims.isa, xn, &lw.wqkv, qkv, d, 3 * d, false);
        let att = &mut sc.att[..rows * d];
        for (r, slot) in slots.iter_mut().enumerate() {
            let row = first + r;
            let (q, kv) = qkv[r * 3 * d..(r + 1) * 3 * d].split_at_mut(d);
            let (k, v) = kv.split_at_mut(d);
            if dims.rotary() {
                let (cos, sin) = (&sc.cos[r * half..][..half], &sc.sin[r * half..][..half]);
                rotate(q, cos, sin, hd);
                rotate(k, cos, sin, hd);
            }
            let entry = (slot.length % cap as i64) as usize;
            let filled = ((slot.length + 1) as usize).min(cap);
            slot.episode[entry] = inputs.episode[row];
            let per_head = hd * dims.blocks * BLOCK;
            let layer = l * d * dims.blocks * BLOCK..(l + 1) * d * dims.blocks * BLOCK;
            let (keys, vals) = (&mut slot.keys[layer.clone()], &mut slot.values[layer]);
            for h in 0..dims.heads {
                for j in 0..hd {
                    let at = h * per_head + kv_index(entry, j, hd);
                    keys[at] = k[h * hd + j];
                    vals[at] = v[h * hd + j];
                }
            }
            let own_episode =
                (!dims.inter_episode).then(|| (&slot.episode[..filled], inputs.episode[row]));
            for h in 0..dims.heads {
                let heads = h * hd..(h + 1) * hd;
                let sink = dims
                    .sink
                    .then(|| (&lw.sink_k[heads.clone()], &lw.sink_v[heads.clone()]));
                let head = HeadKv {
                    keys: &keys[h * per_head..(h + 1) * per_head],
                    values: &vals[h * per_head..(h + 1) * per_head],
                    filled,
                    own_episode,
                    sink,
                };
                attend(
                    &q[heads.clone()],
                    &head,
                    scale,
                    &mut sc.scores,
                    &mut sc.acc,
                    &mut att[r * d + h * hd..r * d + (h + 1) * hd],
                    dims.isa,
                );
            }
        }
        matmul_isa(dims.isa, att, &lw.wo, x, d, d, true);
        rms_norm_rows(x, &lw.mlp_norm, xn, d);
        let gate_up = &mut sc.gate_up[..rows * 2 * m];
        matmul_isa(dims.isa, xn, &lw.w_gate_up, gate_up, d, 2 * m, false);
        let hidden = &mut sc.hidden[..rows * m];
        for (hr, gu) in hidden.chunks_exact_mut(m).zip(gate_up.chunks_exact(2 * m)) {
            let (g, u) = gu.split_at(m);
            for ((h, &g), &u) in hr.iter_mut().zip(g).zip(u) {
                *h = gelu(g) * u;
            }
        }
        matmul_isa(dims.isa, hidden, &lw.w_down, x, m, d, true);
    }

    let xn = &mut sc.xn[..rows * d];
    rms_norm_rows(x, &w.norm, xn, d);
    let a = dims.actions;
    matmul(xn, &w.actor, logits, d, a, false);
    for lr in logits.chunks_exact_mut(a) {
        lr.iter_mut().zip(&w.actor_b).for_each(|(y, &b)| *y += b);
    }
    for (v, xr) in values.iter_mut().zip(xn.chunks_exact(d)) {
        *v = dot(xr, &w.critic) + w.critic_b;
    }
    slots.iter_mut().for_each(|s| s.length += 1);
}

/// Entries per block of the attention loops: one 512-bit vector of f32.
const BLOCK: usize = 16;

/// Where entry `c`, dimension `j` of one head's keys (or values) lives in its
/// `[C / BLOCK][hd][BLOCK]` buffer: blocks of `BLOCK` consecutive entries, each block a
/// contiguous `hd x BLOCK` tile, so the attention loops read one stream.
#[inline(always)]
fn kv_index(c: usize, j: usize, hd: usize) -> usize {
    (c / BLOCK) * hd * BLOCK + j * BLOCK + c % BLOCK
}

/// One head's view of a slot's KV cache for one decode step.
#[derive(Clone, Copy)]
struct HeadKv<'a> {
    /// Keys `[C / BLOCK][hd][BLOCK]` ([`kv_index`]).
    keys: &'a [f32],
    /// Values, laid out as the keys.
    values: &'a [f32],
    /// Entries in use (the token being decoded included).
    filled: usize,
    /// With episode-local attention: each entry's episode and the query's episode.
    own_episode: Option<(&'a [i64], i64)>,
    /// The sink slot's key and value `[hd]`, if the model has one.
    sink: Option<(&'a [f32], &'a [f32])>,
}

/// Attention of one head of one token: `q [hd]` over the `filled` ring entries of the head's
/// cache plus the sink slot; writes `out [hd]`. `scores` is scratch of at least `filled`
/// rounded up to `BLOCK`, `acc` of `hd * BLOCK` floats. Scores and the weighted sum of
/// values run over whole blocks with all `hd` dimensions accumulated in registers, so each
/// key and value is loaded once and each score stored once; the entries of the last block
/// beyond `filled` (stale or zero, always finite) get weight 0.
#[inline(always)]
fn attend(
    q: &[f32],
    head: &HeadKv,
    scale: f32,
    scores: &mut [f32],
    acc: &mut [f32],
    out: &mut [f32],
    isa: Isa,
) {
    let HeadKv {
        keys,
        values,
        filled,
        own_episode,
        sink,
    } = *head;
    let hd = q.len();
    let blocks = filled.div_ceil(BLOCK);
    let scores = &mut scores[..blocks * BLOCK];
    if !simd_scores(isa, q, keys, scale, scores) {
        for (s_out, kb) in scores
            .chunks_exact_mut(BLOCK)
            .zip(keys.chunks_exact(hd * BLOCK))
        {
            let mut s = [0f32; BLOCK];
            for (&qj, k) in q.iter().zip(kb.chunks_exact(BLOCK)) {
                for (sl, &kl) in s.iter_mut().zip(k) {
                    *sl += qj * kl;
                }
            }
            for (o, &sl) in s_out.iter_mut().zip(&s) {
                *o = sl * scale;
            }
        }
    }
    let (live, padding) = scores.split_at_mut(filled);
    padding.fill(0.0);
    if let Some((episodes, own)) = own_episode {
        for (s, &e) in live.iter_mut().zip(episodes) {
            if e != own {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    let sink_score = sink.map(|(k, _)| dot(q, k) * scale);
    let mut max = max_of(live);
    if let Some(s) = sink_score {
        max = max.max(s);
    }
    for s in live.iter_mut() {
        *s = exp_approx(*s - max);
    }
    if let Some((episodes, own)) = own_episode {
        for (s, &e) in live.iter_mut().zip(episodes) {
            if e != own {
                *s = 0.0;
            }
        }
    }
    let mut total = sum_of(live);
    let sink_weight = sink_score.map(|s| exp_approx(s - max));
    if let Some(p) = sink_weight {
        total += p;
    }
    let acc = &mut acc[..hd * BLOCK];
    acc.fill(0.0);
    if !simd_weighted_values(isa, scores, values, acc) {
        for (p, vb) in scores
            .chunks_exact(BLOCK)
            .zip(values.chunks_exact(hd * BLOCK))
        {
            for (a, v) in acc.chunks_exact_mut(BLOCK).zip(vb.chunks_exact(BLOCK)) {
                for ((al, &pl), &vl) in a.iter_mut().zip(p).zip(v) {
                    *al += pl * vl;
                }
            }
        }
    }
    let inv = 1.0 / total;
    for (j, (o, a)) in out.iter_mut().zip(acc.chunks_exact(BLOCK)).enumerate() {
        let mut sum: f32 = a.iter().sum();
        if let (Some(p), Some((_, v))) = (sink_weight, sink) {
            sum += p * v[j];
        }
        *o = sum * inv;
    }
}

/// Scores of whole blocks with AVX-512 intrinsics: `scores[c] = scale * sum_j q[j] *
/// keys[kv_index(c, j, hd)]` for `c < scores.len()` (a multiple of `BLOCK`). False (nothing
/// done) without AVX-512.
#[inline(always)]
fn simd_scores(isa: Isa, q: &[f32], keys: &[f32], scale: f32, scores: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        assert!(scores.len().is_multiple_of(BLOCK) && scores.len() * q.len() <= keys.len());
        // SAFETY: AVX-512 is present (Isa::Avx512 is chosen only then); block b reads
        // keys[b * hd * BLOCK .. (b + 1) * hd * BLOCK] and writes scores[b * BLOCK .. + BLOCK]
        // for b < scores.len() / BLOCK, within the lengths checked above.
        unsafe { avx512::scores(q, keys, scale, scores) };
        return true;
    }
    let _ = (isa, q, keys, scale, scores);
    false
}

/// `acc[j][l] += sum over blocks b of p[b * BLOCK + l] * values[kv_index(b * BLOCK + l, j,
/// hd)]` over the blocks of `p` (its length a multiple of `BLOCK`), with AVX-512 intrinsics.
/// False (nothing done) without it.
#[inline(always)]
fn simd_weighted_values(isa: Isa, p: &[f32], values: &[f32], acc: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        let hd = acc.len() / BLOCK;
        assert!(
            acc.len().is_multiple_of(BLOCK)
                && p.len().is_multiple_of(BLOCK)
                && p.len() * hd <= values.len()
        );
        // SAFETY: AVX-512 is present; block b reads p[b * BLOCK .. + BLOCK] and
        // values[b * hd * BLOCK .. (b + 1) * hd * BLOCK] for b < p.len() / BLOCK, and
        // acc[j * BLOCK .. + BLOCK] for j < hd, within the lengths checked above.
        unsafe { avx512::weighted_values(p, values, acc) };
        return true;
    }
    let _ = (isa, p, values, acc);
    false
}

/// The two attention loops with explicit AVX-512 (LLVM does not vectorise their
/// fixed-width blocks reliably).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// See `simd_scores`. Safety: AVX-512F present; bounds as checked there.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores(q: &[f32], keys: &[f32], scale: f32, scores: &mut [f32]) {
        let hd = q.len();
        let out = scores.as_mut_ptr();
        let scale = _mm512_set1_ps(scale);
        for b in 0..scores.len() / BLOCK {
            let kb = keys.as_ptr().add(b * hd * BLOCK);
            let mut s = _mm512_setzero_ps();
            for (j, &qj) in q.iter().enumerate() {
                let kj = _mm512_loadu_ps(kb.add(j * BLOCK));
                s = _mm512_fmadd_ps(_mm512_set1_ps(qj), kj, s);
            }
            _mm512_storeu_ps(out.add(b * BLOCK), _mm512_mul_ps(s, scale));
        }
    }

    /// See `simd_weighted_values`. Safety: AVX-512F present; bounds as checked there.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_values(p: &[f32], values: &[f32], acc: &mut [f32]) {
        const GROUP: usize = 8; // accumulators held in registers at once
        let hd = acc.len() / BLOCK;
        let (v, a) = (values.as_ptr(), acc.as_mut_ptr());
        let mut j0 = 0;
        while j0 < hd {
            let n = GROUP.min(hd - j0);
            let mut sums = [_mm512_setzero_ps(); GROUP];
            for b in 0..p.len() / BLOCK {
                let pv = _mm512_loadu_ps(p.as_ptr().add(b * BLOCK));
                let vb = v.add(b * hd * BLOCK);
                for (g, sum) in sums.iter_mut().enumerate().take(n) {
                    let vj = _mm512_loadu_ps(vb.add((j0 + g) * BLOCK));
                    *sum = _mm512_fmadd_ps(pv, vj, *sum);
                }
            }
            for (g, sum) in sums.iter().enumerate().take(n) {
                let dst = a.add((j0 + g) * BLOCK);
                _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), *sum));
            }
            j0 += GROUP;
        }
    }

    /// See `matmul_isa`: `out[r][c..c + 64] (+)= sum_i x[r][i] * wt[i][c..c + 64]` for rows
    /// `r < rows` in groups of `R` (`rows` a multiple of `R`) and columns `c < tile_cols` (a
    /// multiple of 64), accumulating each output over `i` in order with fused multiply-adds, so
    /// an output's value does not depend on `R`. Safety: AVX-512F present; bounds as checked
    /// in `matmul_isa`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matmul_tiles<const R: usize>(
        x: &[f32],
        wt: &[f32],
        out: &mut [f32],
        inp: usize,
        outp: usize,
        rows: usize,
        tile_cols: usize,
        accumulate: bool,
    ) {
        let (xp, wp, op) = (x.as_ptr(), wt.as_ptr(), out.as_mut_ptr());
        for r in (0..rows).step_by(R) {
            for c in (0..tile_cols).step_by(64) {
                let mut acc = [[_mm512_setzero_ps(); 4]; R]; // [row][16 columns]
                if accumulate {
                    for (rr, row) in acc.iter_mut().enumerate() {
                        for (v, a) in row.iter_mut().enumerate() {
                            *a = _mm512_loadu_ps(op.add((r + rr) * outp + c + 16 * v));
                        }
                    }
                }
                for i in 0..inp {
                    let w = wp.add(i * outp + c);
                    let wv = [
                        _mm512_loadu_ps(w),
                        _mm512_loadu_ps(w.add(16)),
                        _mm512_loadu_ps(w.add(32)),
                        _mm512_loadu_ps(w.add(48)),
                    ];
                    for (rr, row) in acc.iter_mut().enumerate() {
                        let xb = _mm512_set1_ps(*xp.add((r + rr) * inp + i));
                        for (a, &wv) in row.iter_mut().zip(&wv) {
                            *a = _mm512_fmadd_ps(xb, wv, *a);
                        }
                    }
                }
                for (rr, row) in acc.iter().enumerate() {
                    for (v, a) in row.iter().enumerate() {
                        _mm512_storeu_ps(op.add((r + rr) * outp + c + 16 * v), *a);
                    }
                }
            }
        }
    }
}

/// The sink token through every block on its own (it attends only to itself): each block's
/// key and value of it become that block's sink slot, as in the libtorch path.
fn sink_token_slots(w: &mut Weights, dims: &Dims, mut x: Vec<f32>) {
    let d = dims.d;
    let mut xn = vec![0.0; d];
    let mut qkv = vec![0.0; 3 * d];
    let mut gate_up = vec![0.0; 2 * dims.mlp];
    let mut hidden = vec![0.0; dims.mlp];
    for lw in &mut w.layers {
        rms_norm_rows(&x, &lw.attn_norm, &mut xn, d);
        matmul(&xn, &lw.wqkv, &mut qkv, d, 3 * d, false);
        lw.sink_k = qkv[d..2 * d].to_vec();
        lw.sink_v = qkv[2 * d..].to_vec();
        matmul(&lw.sink_v, &lw.wo, &mut x, d, d, true);
        rms_norm_rows(&x, &lw.mlp_norm, &mut xn, d);
        matmul(&xn, &lw.w_gate_up, &mut gate_up, d, 2 * dims.mlp, false);
        for (i, h) in hidden.iter_mut().enumerate() {
            *h = gelu(gate_up[i]) * gate_up[dims.mlp + i];
        }
        matmul(&hidden, &lw.w_down, &mut x, dims.mlp, d, true);
    }
}

/// Rotates each head of `x` (half-split pairs: dim i with dim i + hd/2) by the angles whose
/// cos and sin are `cos`, `sin` (`[hd / 2]`).
#[inline(always)]
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], hd: usize) {
    let half = hd / 2;
    for head in x.chunks_exact_mut(hd) {
        let (x1, x2) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * cos[i] - b * sin[i];
            x2[i] = a * sin[i] + b * cos[i];
        }
    }
}

/// `out[r] = x[r] / rms(x[r]) * weight` for each row of width `d`.
#[inline(always)]
fn rms_norm_rows(x: &[f32], weight: &[f32], out: &mut [f32], d: usize) {
    for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean_square = dot(xr, xr) / d as f32;
        let inv = 1.0 / (mean_square + 1e-6).sqrt();
        for ((y, &v), &g) in yr.iter_mut().zip(xr).zip(weight) {
            *y = v * inv * g;
        }
    }
}

/// Lanes of the vectorised reductions (independent partial sums).
const LANES: usize = 16;

/// `sum_i a[i] * b[i]` over the shorter length, in `LANES` partial sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn sum_of(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
fn max_of(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(x[l]);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// [`matmul`] with register-tiled AVX-512 kernels where the CPU has them: tiles of 4 rows x 64
/// columns kept in 16 registers over the whole input dimension, so each weight vector is
/// loaded once per 4 rows and each output once per tile (the plain loop loads and stores the
/// output row for every input element). Rows outside whole tiles take a one-row kernel with the
/// same arithmetic (so results do not depend on how the batch is sharded over threads), columns
/// outside whole tiles the plain loop. Each output is the same sum over inputs in the same
/// order, with fused multiply-adds in the tiles.
#[inline(always)]
fn matmul_isa(
    isa: Isa,
    x: &[f32],
    wt: &[f32],
    out: &mut [f32],
    inp: usize,
    outp: usize,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        let rows = x.len() / inp;
        assert!(x.len() == rows * inp && out.len() >= rows * outp && wt.len() >= inp * outp);
        let (tile_rows, tile_cols) = (rows / 4 * 4, outp / 64 * 64);
        let rest = &x[tile_rows * inp..];
        // SAFETY: AVX-512 is present (Isa::Avx512 is chosen only then); the kernels read
        // x[r * inp + i] for r < rows, i < inp, wt[i * outp + c..+64] for c + 64 <=
        // tile_cols <= outp, and write out[r * outp + c..+64] likewise, all within the lengths
        // checked above.
        unsafe {
            avx512::matmul_tiles::<4>(x, wt, out, inp, outp, tile_rows, tile_cols, accumulate);
            let out_rest = &mut out[tile_rows * outp..];
            let n = rows - tile_rows;
            avx512::matmul_tiles::<1>(rest, wt, out_rest, inp, outp, n, tile_cols, accumulate);
        }
        // Columns beyond the whole 64-column tiles, for every row.
        if tile_cols < outp {
            for r in 0..rows {
                let (xr, y) = (&x[r * inp..][..inp], &mut out[r * outp..][..outp]);
                if !accumulate {
                    y[tile_cols..].fill(0.0);
                }
                for (i, &xv) in xr.iter().enumerate() {
                    let w = &wt[i * outp + tile_cols..(i + 1) * outp];
                    for (yv, &wv) in y[tile_cols..].iter_mut().zip(w) {
                        *yv += xv * wv;
                    }
                }
            }
        }
        return;
    }
    let _ = isa;
    matmul(x, wt, out, inp, outp, accumulate);
}

/// `out (+)= x W^T` row by row: `x: [rows][inp]`, `wt: [inp][outp]`, `out: [rows][outp]`.
/// Each output row is accumulated as `sum_i x[i] * wt[i]` (a row of `wt` per step, a
/// vectorised loop over the outputs; the row stays in L1).
#[inline(always)]
fn matmul(x: &[f32], wt: &[f32], out: &mut [f32], inp: usize, outp: usize, accumulate: bool) {
    for (xr, y) in x.chunks_exact(inp).zip(out.chunks_exact_mut(outp)) {
        if !accumulate {
            y.fill(0.0);
        }
        for (&xv, w) in xr.iter().zip(wt.chunks_exact(outp)) {
            for (yv, &wv) in y.iter_mut().zip(w) {
                *yv += xv * wv;
            }
        }
    }
}

/// `e^x` in f32 without branches (vectorisable): Cody-Waite range reduction by ln 2 and a
/// degree-6 polynomial (Cephes' `expf` coefficients), relative error about 2e-7. Inputs
/// below -87 give about 1e-38 instead of a subnormal (only softmax weights use it, where
/// such a weight is negligible); `-inf` is clamped the same way.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let rounded = x * LOG2E + ROUND;
    let n = rounded - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, 0.5 in f32
    let y = p * r * r + r + 1.0;
    // 2^n from the bits of `rounded` (ROUND's plus n, as |n| < 2^22), not from `n as i32`:
    // Rust's saturating float-to-int cast does not vectorise.
    let biased = rounded
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    let scale = f32::from_bits(biased << 23);
    y * scale
}

/// The exact (erf) GELU, `x / 2 (1 + erf(x / sqrt 2))`, with erf from Abramowitz & Stegun
/// 7.1.26 (absolute error below 1.5e-7), vectorisable.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    let erf_abs = 1.0 - poly * exp_approx(-z * z);
    let erf = erf_abs.copysign(x);
    0.5 * x * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_close_to_exp() {
        let mut worst = 0f64;
        for i in -8700..=0 {
            let x = i as f32 * 0.01;
            let (got, want) = (exp_approx(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert!(exp_approx(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn gelu_is_close_to_the_erf_gelu() {
        let mut worst = 0f64;
        // |x| <= 4.2 keeps the f64 Taylor series of erf accurate (|z| < 3).
        for i in -420..=420 {
            let x = i as f32 * 0.01;
            let xf = x as f64;
            let want = 0.5 * xf * (1.0 + erf_f64(xf / std::f64::consts::SQRT_2));
            worst = worst.max((gelu(x) as f64 - want).abs());
        }
        assert!(worst < 2e-6, "absolute error {worst}");
    }

    /// erf by its Taylor series (accurate to ~1e-12 for |z| <= 3).
    fn erf_f64(z: f64) -> f64 {
        let (mut term, mut sum, mut k) = (z, z, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) && k < 400.0 {
            k += 1.0;
            term *= -z * z / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn tiled_matmul_matches_naive_with_leftover_rows_and_columns() {
        // 9 rows (two 4-row tiles + 1), 200 columns (three 64-column tiles + 8).
        let (rows, inp, outp) = (9, 37, 200);
        let x: Vec<f32> = (0..rows * inp).map(|i| (i as f32 * 0.37).sin()).collect();
        let wt: Vec<f32> = (0..inp * outp).map(|i| (i as f32 * 0.11).cos()).collect();
        for accumulate in [false, true] {
            let mut out: Vec<f32> = (0..rows * outp).map(|i| (i as f32 * 0.05).cos()).collect();
            let start = out.clone();
            matmul_isa(Isa::detect(), &x, &wt, &mut out, inp, outp, accumulate);
            for r in 0..rows {
                for o in 0..outp {
                    let base = if accumulate { start[r * outp + o] } else { 0.0 };
                    let want: f32 = base
                        + (0..inp)
                            .map(|i| x[r * inp + i] * wt[i * outp + o])
                            .sum::<f32>();
                    let got = out[r * outp + o];
                    assert!(
                        (got - want).abs() < 1e-4,
                        "row {r} col {o}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn matmul_matches_naive_with_ragged_tiles() {
        let (rows, inp, outp) = (7, 5, 70);
        let x: Vec<f32> = (0..rows * inp).map(|i| (i as f32 * 0.37).sin()).collect();
        let wt: Vec<f32> = (0..inp * outp).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![1.0; rows * outp];
        matmul(&x, &wt, &mut out, inp, outp, true);
        for r in 0..rows {
            for o in 0..outp {
                let want: f32 = 1.0
                    + (0..inp)
                        .map(|i| x[r * inp + i] * wt[i * outp + o])
                        .sum::<f32>();
                assert!((out[r * outp + o] - want).abs() < 1e-5, "row {r} col {o}");
            }
        }
    }
}
