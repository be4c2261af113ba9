//! The batched KV cache: one slot per env, each a ring buffer of the last `capacity` tokens.
//!
//! Layout per layer: keys and values `[B, H, S + C, hd]`, where `S = 1` when the model has a
//! sink slot (entry 0, rewritten on every decode call from the current parameters) and `C`
//! is the capacity. Token `p` of a slot (its index since the slot's reset) lives in ring
//! entry `S + p % C`. Keys are stored already rotated, so a token keeps its position after
//! the window slides. Per ring entry the cache also stores the token's position (-1 = empty)
//! and its episode index, from which every decode call builds its attention mask.

use crate::config::ModelConfig;
use anyhow::{bail, ensure, Result};
use tch::{Device, Kind, Tensor};

/// Batched key/value cache for `Transformer::decode`.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: keys `[B, H, S + C, hd]` (entry 0 = sink slot when S = 1).
    pub(crate) keys: Vec<Tensor>,
    /// Per layer: values `[B, H, S + C, hd]`.
    pub(crate) values: Vec<Tensor>,
    /// `[B, C]` i64: position (index since reset) of the token in each ring entry; -1 = empty.
    entry_position: Tensor,
    /// `[B, C]` i64: episode index of the token in each ring entry.
    entry_episode: Tensor,
    /// Tokens appended to each slot since its reset (may exceed the capacity).
    lengths: Vec<i64>,
    capacity: i64,
    sink_slots: i64,
    heads: i64,
    head_dim: i64,
    kind: Kind,
}

/// Where the `t` new tokens of one decode call go.
pub(crate) struct WritePlan {
    /// `[B, t]` i64: each new token's position (index since its slot's reset).
    pub position: Tensor,
    /// `[B * t]` i64: slot of each new token (slot-major).
    pub slot: Tensor,
    /// `[B * t]` i64: ring entry of each new token, sink offset not included.
    pub entry: Tensor,
}

impl KvCache {
    /// An empty cache for `batch` slots of `capacity` tokens each, for models built from
    /// `cfg`, in `cfg.dtype` on `device`.
    pub fn new(cfg: &ModelConfig, batch: usize, capacity: usize, device: Device) -> Result<Self> {
        cfg.check()?;
        ensure!(batch > 0, "KV cache: batch must be at least 1");
        ensure!(capacity > 0, "KV cache: capacity must be at least 1");
        let (b, c) = (batch as i64, capacity as i64);
        let (heads, head_dim) = (cfg.heads as i64, cfg.head_dim() as i64);
        let sink_slots = i64::from(cfg.sink.has_slot());
        let kind = cfg.dtype.kind();
        let shape = [b, heads, sink_slots + c, head_dim];
        let zeros = || Tensor::zeros(shape, (kind, device));
        Ok(KvCache {
            keys: (0..cfg.layers).map(|_| zeros()).collect(),
            values: (0..cfg.layers).map(|_| zeros()).collect(),
            entry_position: Tensor::full([b, c], -1, (Kind::Int64, device)),
            entry_episode: Tensor::zeros([b, c], (Kind::Int64, device)),
            lengths: vec![0; batch],
            capacity: c,
            sink_slots,
            heads,
            head_dim,
            kind,
        })
    }

    /// Number of slots (envs).
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }

    /// Tokens a slot can hold before it slides.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Tokens appended to each slot since its reset (may exceed the capacity).
    pub fn lengths(&self) -> &[i64] {
        &self.lengths
    }

    /// Tokens a slot currently holds: `min(appended since reset, capacity)`.
    pub fn held(&self, slot: usize) -> usize {
        self.lengths
            .get(slot)
            .map_or(0, |&n| n.min(self.capacity) as usize)
    }

    /// `[B, C]` i64: episode index of the token in each ring entry (meaningful where the
    /// entry holds a token of the slot's current window).
    pub(crate) fn entry_episode(&self) -> &Tensor {
        &self.entry_episode
    }

    /// Whether entry 0 of every layer's keys and values is the sink slot.
    pub(crate) fn sink_slots(&self) -> i64 {
        self.sink_slots
    }

    /// The device the cache lives on.
    pub fn device(&self) -> Device {
        self.entry_position.device()
    }

    /// Bytes held by keys and values.
    pub fn memory_bytes(&self) -> usize {
        let per = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        self.keys.iter().chain(&self.values).map(per).sum()
    }

    /// Empties one slot (a trial boundary); the other slots are untouched.
    pub fn reset_slot(&mut self, slot: usize) -> Result<()> {
        ensure!(
            slot < self.batch(),
            "KV cache: slot {slot} out of range (batch {})",
            self.batch()
        );
        self.lengths[slot] = 0;
        let _ = self.entry_position.get(slot as i64).fill_(-1);
        Ok(())
    }

    /// Empties every slot.
    pub fn reset_all(&mut self) {
        self.lengths.iter_mut().for_each(|n| *n = 0);
        let _ = self.entry_position.fill_(-1);
    }

    /// Errors unless the cache was built for a model of this shape and these inputs.
    pub(crate) fn check_compatible(&self, cfg: &ModelConfig, batch: i64) -> Result<()> {
        let expected = (cfg.layers, cfg.heads as i64, cfg.head_dim() as i64);
        let found = (self.keys.len(), self.heads, self.head_dim);
        ensure!(
            expected == found,
            "KV cache built for (layers, heads, head_dim) = {found:?}, model has {expected:?}"
        );
        ensure!(
            self.sink_slots == i64::from(cfg.sink.has_slot()),
            "KV cache built for another sink variant than the model's {:?}",
            cfg.sink
        );
        ensure!(
            batch == self.batch() as i64,
            "KV cache has {} slots, inputs have batch {batch}",
            self.batch()
        );
        Ok(())
    }

    /// True when appending `t` tokens per slot overwrites an entry that an earlier token
    /// of the same call still needs (the ring wraps inside the chunk).
    pub(crate) fn wraps_within(&self, t: i64) -> bool {
        t > 1 && self.lengths.iter().any(|&n| n + t > self.capacity)
    }

    /// Positions and ring entries of `t` new tokens per slot.
    pub(crate) fn plan(&self, t: i64) -> WritePlan {
        let device = self.device();
        let lengths = Tensor::from_slice(&self.lengths).to(device); // [B]
        let offsets = Tensor::arange(t, (Kind::Int64, device)); // [t]
        let position = lengths.unsqueeze(1) + offsets.unsqueeze(0); // [B, t]
        let b = self.batch() as i64;
        let slot = Tensor::arange(b, (Kind::Int64, device)).repeat_interleave_self_int(t, 0, None);
        let entry = position.remainder(self.capacity).reshape([b * t]);
        WritePlan {
            position,
            slot,
            entry,
        }
    }

    /// Records positions and episodes of the new tokens (before the layers run).
    pub(crate) fn write_metadata(&mut self, plan: &WritePlan, episode: &Tensor) {
        let idx = [
            Some(plan.slot.shallow_clone()),
            Some(plan.entry.shallow_clone()),
        ];
        let n = plan.slot.size()[0];
        let _ = self
            .entry_position
            .index_put_(&idx, &plan.position.reshape([n]), false);
        let _ = self
            .entry_episode
            .index_put_(&idx, &episode.reshape([n]), false);
    }

    /// `[B, 1, t, S + C]` bool: which cache entries each new token attends to (after
    /// `write_metadata`): the sink slot always; tokens of its slot in the window
    /// `(p - C, p]`; and, without inter-episode attention, only those of its own episode.
    pub(crate) fn attention_mask(
        &self,
        plan: &WritePlan,
        episode: &Tensor,
        inter_episode: bool,
    ) -> Tensor {
        let entry_pos = self.entry_position.unsqueeze(1); // [B, 1, C]
        let query_pos = plan.position.unsqueeze(2); // [B, t, 1]
        let mut mask = entry_pos
            .ge(0)
            .logical_and(&entry_pos.le_tensor(&query_pos))
            .logical_and(&entry_pos.gt_tensor(&(&query_pos - self.capacity))); // [B, t, C]
        if !inter_episode {
            let same = self
                .entry_episode
                .unsqueeze(1)
                .eq_tensor(&episode.unsqueeze(2));
            mask = mask.logical_and(&same);
        }
        if self.sink_slots > 0 {
            let size = mask.size();
            let sink = Tensor::ones([size[0], size[1], 1], (Kind::Bool, mask.device()));
            mask = Tensor::cat(&[sink, mask], 2);
        }
        mask.unsqueeze(1)
    }

    /// Writes one layer's sink slot and the new tokens' keys/values `[B, H, t, hd]`.
    pub(crate) fn write_layer(
        &mut self,
        layer: usize,
        plan: &WritePlan,
        sink: Option<(&Tensor, &Tensor)>,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<()> {
        let (keys, values) = (&mut self.keys[layer], &mut self.values[layer]);
        if let Some((sink_k, sink_v)) = sink {
            if self.sink_slots == 0 {
                bail!("KV cache has no sink slot");
            }
            // sink_k, sink_v: [H, hd] -> entry 0 of every slot.
            let shape = [1, self.heads, 1, self.head_dim];
            keys.narrow(2, 0, 1)
                .copy_(&sink_k.reshape(shape).to_kind(self.kind));
            values
                .narrow(2, 0, 1)
                .copy_(&sink_v.reshape(shape).to_kind(self.kind));
        }
        // [B, H, t, hd] -> [B * t, H, hd], slot-major like plan.slot / plan.entry.
        let flat = |x: &Tensor| {
            let s = x.size(); // [B, H, t, hd]
            x.permute([0, 2, 1, 3])
                .reshape([s[0] * s[2], s[1], s[3]])
                .to_kind(self.kind)
        };
        let idx = [
            Some(plan.slot.shallow_clone()),
            None,
            Some(&plan.entry + self.sink_slots),
        ];
        let _ = keys.index_put_(&idx, &flat(k), false);
        let _ = values.index_put_(&idx, &flat(v), false);
        Ok(())
    }

    /// Counts `t` new tokens in every slot (after all layers were written).
    pub(crate) fn advance(&mut self, t: i64) {
        self.lengths.iter_mut().for_each(|n| *n += t);
    }

    /// Benchmark helper: marks every slot as holding `len` tokens (positions `0..len`,
    /// episode 0) without computing them; keys/values keep whatever they hold.
    pub fn fill_for_benchmark(&mut self, len: usize) -> Result<()> {
        ensure!(
            len <= self.capacity as usize,
            "fill {len} exceeds capacity {}",
            self.capacity
        );
        let len = len as i64;
        let device = self.device();
        let _ = self.entry_position.fill_(-1);
        let positions = Tensor::arange(len, (Kind::Int64, device)).unsqueeze(0);
        self.entry_position.narrow(1, 0, len).copy_(&positions);
        let _ = self.entry_episode.fill_(0);
        self.lengths.iter_mut().for_each(|n| *n = len);
        Ok(())
    }
}
