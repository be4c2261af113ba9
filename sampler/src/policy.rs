//! What acts: the [`Policy`] trait, a uniform [`RandomPolicy`] and the transformer
//! [`ModelPolicy`].

use crate::config::PolicyInference;
use crate::ensure_invalid;
use crate::storage::RolloutStorage;
use agent::{ActorCritic, FusedDecoder, KvCache, ObsSpec};
use anyhow::{Context, Result};
use envs::rng::mix64;
use envs::EnvSpec;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// The actions, behaviour log-probabilities and values a policy produced for some env rows,
/// in row order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyOutput {
    /// Action of each row, in `0..num_actions`.
    pub actions: Vec<u32>,
    /// Log-probability of that action under the behaviour policy.
    pub logprob: Vec<f32>,
    /// Value estimate of the row's current token.
    pub value: Vec<f32>,
}

/// What acts: one batched inference on the newest token of some slots.
pub trait Policy {
    /// Act for env rows `slots` at token column `t` of `storage` (their newest token). Returns
    /// actions, behaviour log-probs and values for those rows, in row order. The policy decides
    /// itself when to clear a slot's context (`t == 0`: new trial; or, for the single-episode
    /// baseline, `step_in_episode == 0`).
    ///
    /// The sampler calls it with the ranges of [`crate::Sampler::act_groups`], columns in
    /// increasing order, each column once per group. In `DoubleBuffered` mode worker threads
    /// write the *other* group's rows while this runs, so an implementation must read only rows
    /// `slots` of `storage`.
    fn act(
        &mut self,
        storage: &RolloutStorage,
        t: usize,
        slots: Range<usize>,
    ) -> Result<PolicyOutput>;

    /// For a policy that draws each slot's action uniformly from that slot's own stream and
    /// reads nothing else (e.g. [`RandomPolicy`]): its number of actions and its streams
    /// (log-prob `-ln(num_actions)`, value 0). The sampler then lets every worker draw its own
    /// slots' actions and run all requested steps without per-step synchronisation; the data
    /// is identical to calling `act` step by step. Default: `None` (use `act`).
    fn uniform_streams(&mut self) -> Option<(u32, &mut SlotStreams)> {
        None
    }
}

/// The step between consecutive positions of a stream.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The next 64 bits of the stream with key `key` (counter `c`, advanced): `mix64` of its
/// position `key + c * GOLDEN`.
#[inline]
fn advance(key: u64, c: &mut u64) -> u64 {
    *c = c.wrapping_add(1);
    mix64(key.wrapping_add(c.wrapping_mul(GOLDEN)))
}

/// A uniform integer in `0..n` from 64 random bits (multiply-shift of the high 32 bits).
#[inline]
fn scaled_below(bits: u64, n: u32) -> u32 {
    (((bits >> 32) * n as u64) >> 32) as u32
}

/// The log-probability of each action under the uniform random policy over `n` actions.
pub(crate) fn uniform_logprob(n: u32) -> f32 {
    -(n.max(1) as f32).ln()
}

/// Per-slot random streams (SplitMix64 keyed by `(seed, slot)`), so draws for a slot do not
/// depend on how the batch is split into calls. The counters are the whole state: save them
/// with [`SlotStreams::counters`] and restore them for an exact resume.
#[derive(Debug, Clone)]
pub struct SlotStreams {
    keys: Vec<u64>,
    counters: Vec<u64>,
}

impl SlotStreams {
    /// Streams for `num_slots` slots under `seed`.
    pub fn new(seed: u64, num_slots: usize) -> Self {
        let base = mix64(seed ^ 0x5A3D_1E57_0000_0000);
        SlotStreams {
            keys: (0..num_slots as u64)
                .map(|s| mix64(base ^ mix64(s)))
                .collect(),
            counters: vec![0; num_slots],
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no slots.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Next 64 random bits of `slot`'s stream (`slot < len()`, else 0).
    #[inline]
    pub fn next_u64(&mut self, slot: usize) -> u64 {
        match (self.keys.get(slot), self.counters.get_mut(slot)) {
            (Some(&k), Some(c)) => advance(k, c),
            _ => 0,
        }
    }

    /// A uniform float in `[0, 1)` from `slot`'s stream.
    #[inline]
    pub fn uniform(&mut self, slot: usize) -> f64 {
        (self.next_u64(slot) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` (`n > 0`) from `slot`'s stream (multiply-shift).
    #[inline]
    pub fn below(&mut self, slot: usize, n: u32) -> u32 {
        scaled_below(self.next_u64(slot), n)
    }

    /// `out[i]` = a uniform integer in `0..n` (`n > 0`) from slot `i`'s stream, for slots
    /// `0..out.len()` (as [`SlotStreams::below`] slot by slot; slots past `len()` get 0).
    pub fn fill_below(&mut self, out: &mut [u32], n: u32) {
        self.draws().fill_below(out, n);
    }

    /// Draws for every slot, step after step: each [`UniformDraws::fill_below`] gives and
    /// advances exactly what [`SlotStreams::below`] would for each slot, but tracks each
    /// stream's position by an addition instead of a multiplication per draw.
    pub(crate) fn draws(&mut self) -> UniformDraws<'_> {
        let pos = self
            .keys
            .iter()
            .zip(&self.counters)
            .map(|(&k, &c)| k.wrapping_add(c.wrapping_mul(GOLDEN)))
            .collect();
        UniformDraws { streams: self, pos }
    }

    /// The streams of slots `range` (re-indexed from 0), for a worker that owns them.
    pub(crate) fn extract(&self, range: Range<usize>) -> SlotStreams {
        let r = range.start.min(self.len())..range.end.min(self.len());
        SlotStreams {
            keys: self.keys[r.clone()].to_vec(),
            counters: self.counters[r].to_vec(),
        }
    }

    /// Takes back the state of slots `range.start..` from `part` (see [`SlotStreams::extract`]).
    pub(crate) fn absorb(&mut self, start: usize, part: &SlotStreams) {
        for (i, &c) in part.counters.iter().enumerate() {
            if let Some(d) = self.counters.get_mut(start + i) {
                *d = c;
            }
        }
    }

    /// Draws taken so far per slot (the streams' state).
    pub fn counters(&self) -> &[u64] {
        &self.counters
    }

    /// Restores the state saved by [`SlotStreams::counters`]; errors on a length mismatch.
    pub fn set_counters(&mut self, counters: &[u64]) -> Result<()> {
        ensure_invalid!(
            counters.len() == self.counters.len(),
            "slot streams: got {} counters for {} slots",
            counters.len(),
            self.counters.len()
        );
        self.counters.copy_from_slice(counters);
        Ok(())
    }
}

/// Step-after-step draws from [`SlotStreams`] (see [`SlotStreams::draws`]); the streams'
/// counters advance with every draw.
pub(crate) struct UniformDraws<'a> {
    streams: &'a mut SlotStreams,
    /// Each stream's position `key + counter * GOLDEN`.
    pos: Vec<u64>,
}

impl UniformDraws<'_> {
    /// As [`SlotStreams::fill_below`].
    pub(crate) fn fill_below(&mut self, out: &mut [u32], n: u32) {
        let slots = out
            .iter_mut()
            .zip(&mut self.pos)
            .zip(&mut self.streams.counters);
        for ((o, p), c) in slots {
            *c = c.wrapping_add(1);
            *p = p.wrapping_add(GOLDEN);
            *o = scaled_below(mix64(*p), n);
        }
        let filled = self.pos.len().min(out.len());
        out[filled..].iter_mut().for_each(|o| *o = 0);
    }
}

/// The token encoder's view of an environment spec.
pub fn obs_spec(spec: &EnvSpec) -> ObsSpec {
    ObsSpec {
        vector_dim: spec.vector_dim,
        image: spec.image.map(|i| (i.height, i.width)),
        num_actions: spec.num_actions,
    }
}

/// Uniformly random actions from per-slot streams; log-prob `-ln(num_actions)`, value 0.
#[derive(Debug, Clone)]
pub struct RandomPolicy {
    num_actions: u32,
    streams: SlotStreams,
}

impl RandomPolicy {
    /// A random policy over `num_actions` actions for `num_envs` slots, seeded by `seed`.
    pub fn new(num_actions: usize, num_envs: usize, seed: u64) -> Result<Self> {
        ensure_invalid!(
            num_actions >= 1 && num_actions <= u32::MAX as usize,
            "random policy: num_actions must be in 1..=2^32-1, got {num_actions}"
        );
        Ok(RandomPolicy {
            num_actions: num_actions as u32,
            streams: SlotStreams::new(seed, num_envs),
        })
    }

    /// The per-slot random streams (for saving and restoring their state).
    pub fn streams_mut(&mut self) -> &mut SlotStreams {
        &mut self.streams
    }
}

impl Policy for RandomPolicy {
    fn act(
        &mut self,
        _storage: &RolloutStorage,
        _t: usize,
        slots: Range<usize>,
    ) -> Result<PolicyOutput> {
        ensure_invalid!(
            slots.start <= slots.end && slots.end <= self.streams.len(),
            "random policy: slots {slots:?} outside 0..{}",
            self.streams.len()
        );
        let n = self.num_actions;
        let actions = slots.clone().map(|s| self.streams.below(s, n)).collect();
        let k = slots.len();
        Ok(PolicyOutput {
            actions,
            logprob: vec![uniform_logprob(n); k],
            value: vec![0.0; k],
        })
    }

    fn uniform_streams(&mut self) -> Option<(u32, &mut SlotStreams)> {
        Some((self.num_actions, &mut self.streams))
    }
}

/// An [`agent::ActorCritic`] acting through its KV cache: one cache per act group (the whole
/// batch in `Sync` mode, one per half in `DoubleBuffered` mode, see
/// [`crate::Sampler::act_groups`]), so no cache is ever sliced. Actions are sampled from the
/// categorical with per-slot streams (or taken greedily).
///
/// The decode step runs in libtorch or, for a model on the CPU in f32, in the fused CPU path
/// ([`agent::FusedDecoder`], one per act group, equal to libtorch within 1e-5): see
/// [`PolicyInference`]. The fused path copies the parameters at every trial start (column 0)
/// and in [`ModelPolicy::refresh`].
///
/// After a policy update call [`ModelPolicy::refresh`]. (With the libtorch path only, a custom
/// refresh may instead reset the caches and prefill them with [`ActorCritic::prefill`] from
/// `storage.inputs_rows(0, t, group)`.)
#[derive(Debug)]
pub struct ModelPolicy<'a> {
    model: &'a ActorCritic,
    caches: Vec<(Range<usize>, KvCache)>,
    streams: SlotStreams,
    greedy: bool,
    reset_each_episode: bool,
    device: Device,
    num_actions: usize,
    /// One fused decoder per act group (same order as `caches`) when the fused path runs.
    fused: Vec<FusedDecoder>,
    /// Log-probabilities of the fused path's last step `[rows][A]` (reused buffer).
    logp: Vec<f32>,
}

impl<'a> ModelPolicy<'a> {
    /// A policy for the env rows of `groups` (disjoint, non-empty ranges; usually
    /// [`crate::Sampler::act_groups`]) with caches of `capacity` tokens per slot (the trial
    /// length for no sliding window) on the model's device; sampling streams seeded by `seed`.
    /// The decode path is libtorch's ([`PolicyInference::Libtorch`], the config default).
    pub fn new(
        model: &'a ActorCritic,
        groups: &[Range<usize>],
        capacity: usize,
        seed: u64,
    ) -> Result<Self> {
        Self::with_inference(model, groups, capacity, seed, PolicyInference::Libtorch)
    }

    /// As [`ModelPolicy::new`], with the decode path chosen by `inference`. The fused path
    /// shards each group over `tch::get_num_threads() / groups.len()` threads (at least 1).
    pub fn with_inference(
        model: &'a ActorCritic,
        groups: &[Range<usize>],
        capacity: usize,
        seed: u64,
        inference: PolicyInference,
    ) -> Result<Self> {
        ensure_invalid!(!groups.is_empty(), "model policy: no act groups");
        let mut sorted: Vec<Range<usize>> = groups.to_vec();
        sorted.sort_by_key(|r| r.start);
        for (i, g) in sorted.iter().enumerate() {
            ensure_invalid!(g.start < g.end, "model policy: empty act group {g:?}");
            if i > 0 {
                ensure_invalid!(
                    sorted[i - 1].end <= g.start,
                    "model policy: act groups {:?} and {g:?} overlap",
                    sorted[i - 1]
                );
            }
        }
        let device = model.actor.ws.device();
        let cfg = model.config();
        let mut caches = Vec::with_capacity(groups.len());
        for g in groups {
            caches.push((g.clone(), KvCache::new(cfg, g.len(), capacity, device)?));
        }
        let num_envs = sorted.last().map_or(0, |g| g.end);
        let fused_path = match inference {
            PolicyInference::Auto => FusedDecoder::supports(model),
            PolicyInference::Libtorch => false,
            PolicyInference::Fused => {
                ensure_invalid!(
                    FusedDecoder::supports(model),
                    "model policy: inference Fused needs the model on the CPU in f32"
                );
                true
            }
        };
        let mut fused = Vec::new();
        if fused_path {
            let threads = (tch::get_num_threads().max(1) as usize / groups.len()).max(1);
            for g in groups {
                fused.push(FusedDecoder::new(model, g.len(), capacity, threads)?);
            }
        }
        Ok(ModelPolicy {
            model,
            caches,
            streams: SlotStreams::new(seed, num_envs),
            greedy: false,
            reset_each_episode: false,
            device,
            num_actions: model.spec().num_actions,
            fused,
            logp: Vec::new(),
        })
    }

    /// Take the most likely action instead of sampling.
    pub fn set_greedy(&mut self, greedy: bool) {
        self.greedy = greedy;
    }

    /// Clear a slot's context at every episode start (the single-episode baseline) instead
    /// of only at the trial start. (An alternative with the same attention pattern is a model
    /// with `inter_episode_attention: false`.)
    pub fn set_reset_each_episode(&mut self, reset: bool) {
        self.reset_each_episode = reset;
    }

    /// The model.
    pub fn model(&self) -> &'a ActorCritic {
        self.model
    }

    /// True when the decode step runs in the fused CPU path.
    pub fn is_fused(&self) -> bool {
        !self.fused.is_empty()
    }

    /// The libtorch caches with the env rows each serves (with the fused path they hold the
    /// prefix of the last [`ModelPolicy::refresh`] only).
    pub fn caches(&self) -> &[(Range<usize>, KvCache)] {
        &self.caches
    }

    /// The caches with the env rows each serves, mutably (for a custom refresh).
    pub fn caches_mut(&mut self) -> &mut [(Range<usize>, KvCache)] {
        &mut self.caches
    }

    /// The per-slot sampling streams (for saving and restoring their state).
    pub fn streams_mut(&mut self) -> &mut SlotStreams {
        &mut self.streams
    }

    /// After a policy update: empty every cache and prefill it with token columns `[0, t)` of
    /// its rows (in chunks of `chunk` tokens), so that the next `act` at column `t` continues
    /// from the new parameters. Returns per group the values `[rows, t]` of the prefix (empty
    /// when `t == 0`). Not available with `reset_each_episode`.
    pub fn refresh(
        &mut self,
        storage: &RolloutStorage,
        t: usize,
        chunk: usize,
    ) -> Result<Vec<Tensor>> {
        ensure_invalid!(
            !self.reset_each_episode,
            "model policy: refresh is not available with reset_each_episode; use a model with inter_episode_attention: false instead"
        );
        let mut values = Vec::with_capacity(self.caches.len());
        for (g, (rows, cache)) in self.caches.iter_mut().enumerate() {
            cache.reset_all();
            if let Some(fused) = self.fused.get_mut(g) {
                fused.refresh_weights(self.model)?;
                fused.reset_all();
            }
            if t == 0 {
                values.push(Tensor::zeros(
                    [rows.len() as i64, 0],
                    (Kind::Float, self.device),
                ));
                continue;
            }
            let x = storage
                .inputs_rows(0, t, rows.clone())?
                .to_device(self.device);
            let (_, v) = self
                .model
                .prefill(cache, &x, chunk)
                .with_context(|| format!("model policy: refreshing the cache of rows {rows:?}"))?;
            if let Some(fused) = self.fused.get_mut(g) {
                // libtorch's chunked prefill, handed over to the fused decoder.
                fused.load_cache(cache)?;
            }
            values.push(v);
        }
        Ok(values)
    }
}

/// A tensor's values as a host `Vec<T>` (any device, any layout).
pub(crate) fn to_host<T: tch::kind::Element + Default + Clone>(x: &Tensor) -> Result<Vec<T>> {
    let x = x
        .f_to_device(Device::Cpu)?
        .f_to_kind(T::KIND)?
        .f_contiguous()?;
    let n = x.numel();
    let mut out = vec![T::default(); n];
    x.f_copy_data(&mut out, n)?;
    Ok(out)
}

impl Policy for ModelPolicy<'_> {
    fn act(
        &mut self,
        storage: &RolloutStorage,
        t: usize,
        slots: Range<usize>,
    ) -> Result<PolicyOutput> {
        let Some(g) = self.caches.iter().position(|(r, _)| *r == slots) else {
            let groups: Vec<_> = self.caches.iter().map(|(r, _)| r.clone()).collect();
            return Err(anyhow::Error::new(crate::SamplerError::Invalid(format!(
                "model policy: slots {slots:?} are not one of its act groups {groups:?}"
            ))));
        };
        ensure_invalid!(
            slots.end <= storage.num_envs(),
            "model policy: slots {slots:?} outside the storage's {} rows",
            storage.num_envs()
        );
        let x = storage
            .inputs_rows(t, t + 1, slots.clone())?
            .to_device(self.device);
        let (logp, value) = match self.fused.get_mut(g) {
            Some(fused) => {
                if t == 0 {
                    fused.refresh_weights(self.model)?;
                    fused.reset_all();
                } else if self.reset_each_episode {
                    let steps: Vec<i64> = to_host(&x.step_in_episode)?;
                    for (i, &s) in steps.iter().enumerate() {
                        if s == 0 {
                            fused.reset_slot(i)?;
                        }
                    }
                }
                let (logits, value) = fused.decode(self.model, &x)?;
                log_softmax_rows(logits, self.num_actions, &mut self.logp);
                (std::mem::take(&mut self.logp), value.to_vec())
            }
            None => {
                let cache = &mut self.caches[g].1;
                if t == 0 {
                    cache.reset_all();
                } else if self.reset_each_episode {
                    let steps: Vec<i64> = to_host(&x.step_in_episode)?;
                    for (i, &s) in steps.iter().enumerate() {
                        if s == 0 {
                            cache.reset_slot(i)?;
                        }
                    }
                }
                let (logits, value) = self.model.decode(cache, &x)?;
                let logp: Vec<f32> = to_host(&logits.f_log_softmax(-1, Kind::Float)?)?;
                (logp, to_host::<f32>(&value)?)
            }
        };
        let a = self.num_actions;
        let n = slots.len();
        ensure_invalid!(
            logp.len() == n * a && value.len() == n,
            "model policy: expected {n}x{a} logits and {n} values, got {} and {}",
            logp.len(),
            value.len()
        );
        let mut out = PolicyOutput {
            actions: Vec::with_capacity(n),
            logprob: Vec::with_capacity(n),
            value,
        };
        for (i, slot) in slots.enumerate() {
            let row = &logp[i * a..(i + 1) * a];
            ensure_invalid!(
                row.iter().all(|x| !x.is_nan()),
                "model policy: NaN action log-probabilities for slot {slot} at column {t}"
            );
            let action = if self.greedy {
                let mut best = 0;
                for (j, &x) in row.iter().enumerate() {
                    if x > row[best] {
                        best = j;
                    }
                }
                best
            } else {
                let u = self.streams.uniform(slot);
                let mut acc = 0.0f64;
                let mut pick = None;
                let mut last_possible = 0;
                for (j, &x) in row.iter().enumerate() {
                    let p = (x as f64).exp();
                    if p > 0.0 {
                        last_possible = j;
                    }
                    acc += p;
                    if u < acc {
                        pick = Some(j);
                        break;
                    }
                }
                // Rounding can leave the total just below u: take the last possible action.
                pick.unwrap_or(last_possible)
            };
            out.actions.push(action as u32);
            out.logprob.push(row[action]);
        }
        if self.is_fused() {
            self.logp = logp; // keep the buffer for the next step
        }
        Ok(out)
    }
}

/// `out` = log-softmax of each row of `logits` (`[rows][a]`), as libtorch computes it in f32:
/// `x - max - ln(sum(exp(x - max)))`.
fn log_softmax_rows(logits: &[f32], a: usize, out: &mut Vec<f32>) {
    out.clear();
    for row in logits.chunks_exact(a.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
        out.extend(row.iter().map(|&x| x - max - log_sum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_match_fill_below_and_below() {
        let mut a = SlotStreams::new(5, 9);
        a.set_counters(&[0, 1, 2, 3, u64::MAX - 2, 7, 8, 1 << 40, 11])
            .unwrap();
        let (mut b, mut c) = (a.clone(), a.clone());
        // Two buffers longer than the streams: slots past them get 0.
        let (mut x, mut y) = (vec![9u32; 11], vec![9u32; 11]);
        {
            let mut draws = b.draws();
            for step in 0..20 {
                a.fill_below(&mut x, 7);
                draws.fill_below(&mut y, 7);
                assert_eq!(x, y, "step {step}");
                let z: Vec<u32> = (0..9).map(|slot| c.below(slot, 7)).collect();
                assert_eq!(&x[..9], &z[..], "step {step}");
                assert_eq!(&x[9..], &[0, 0]);
            }
        }
        assert_eq!(a.counters(), b.counters());
        assert_eq!(a.counters(), c.counters());
    }
}
