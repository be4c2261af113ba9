//! Pre-allocated rollout storage: one trial of `T` steps for each of `B` env slots.

use crate::ensure_invalid;
use agent::StepInputs;
use anyhow::{Context, Result};
use envs::{EnvSpec, ImageSpec, TaskId};
use rand::seq::SliceRandom;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// Pre-allocated rollout storage on the policy's device for `B` env slots and a trial of `T`
/// steps.
///
/// Token inputs (what the policy sees at step `t`: the observation, the previous action
/// (`0` = episode start, else `a + 1`), the previous reward, the episode index within the trial,
/// the step within the episode) have `T + 1` columns: column [`len`](Self::len) holds the
/// current, not yet acted-on observation, so the trainer can compute the bootstrap value and
/// refresh caches. Outcomes have `T` columns. Columns past `len` (tokens) or `len - 1`
/// (outcomes) hold stale data from an earlier trial.
///
/// Every tensor has the shape `[B, T(+1), ...]` but is a transposed view of time-major memory
/// `[T(+1), B, ...]`: one step of all slots is one contiguous block, which is what the sampler
/// writes every step (readers see ordinary strided tensors; `contiguous()` where needed).
///
/// The sampler writes rows of these tensors in place (from worker threads, through their
/// memory when the storage is on the CPU), so while [`crate::Sampler::collect`] runs nobody
/// else may touch them; replacing a field by a tensor of another shape, kind or layout makes
/// the next `collect` fail with an error.
#[derive(Debug)]
pub struct RolloutStorage {
    /// `[B, T + 1, V]` f32 vector observation.
    pub vector: Tensor,
    /// `[B, T + 1, H, W, 3]` u8 RGB observation, when the environment renders one.
    pub image: Option<Tensor>,
    /// `[B, T + 1]` i32: 0 at an episode start, else the previous action + 1.
    pub prev_action: Tensor,
    /// `[B, T + 1]` f32: the previous reward (0 at an episode start).
    pub prev_reward: Tensor,
    /// `[B, T + 1]` i32: episode index within the trial (0, 1, ...).
    pub episode_index: Tensor,
    /// `[B, T + 1]` i32: step within the episode (0 at its start).
    pub step_in_episode: Tensor,
    /// `[B, T]` i32: the action taken at each step (convert to i64 for `gather` /
    /// `index_select`-style indexing).
    pub action: Tensor,
    /// `[B, T]` f32: the behaviour policy's log-probability of that action.
    pub logprob: Tensor,
    /// `[B, T]` f32: the behaviour policy's value estimate of the step's token.
    pub value: Tensor,
    /// `[B, T]` f32: the reward of the step.
    pub reward: Tensor,
    /// `[B, T]` bool: the step reached a terminal state (no bootstrapping).
    pub terminated: Tensor,
    /// `[B, T]` bool: the step hit the episode's horizon (bootstrap from the next observation).
    pub truncated: Tensor,
    /// `[B, T]` bool: the episode ended in success at this step.
    pub success: Tensor,
    /// `[B, T, V]` f32, only with [`RolloutStorage::with_next_obs`]: the observation each step
    /// led to, before any auto-reset. It equals the next token's observation unless the
    /// episode ended at that step; then it is the episode's last observation (what a value
    /// bootstrap after truncation needs).
    pub next_vector: Option<Tensor>,
    /// `[B, T, H, W, 3]` u8, only with [`RolloutStorage::with_next_obs`] and an image: as
    /// [`next_vector`](Self::next_vector) for the image.
    pub next_image: Option<Tensor>,
    /// Steps with outcomes so far (`0..=T`).
    pub len: usize,
    /// The task of each slot in the current trial (set by [`crate::Sampler::start_trials`]).
    pub tasks: Vec<TaskId>,
    num_envs: usize,
    rollout_len: usize,
    vector_dim: usize,
    image_spec: Option<ImageSpec>,
    device: Device,
    /// The trial this storage holds: stamped by the sampler at `start_trials`, checked by
    /// `collect` (0 = never started).
    pub(crate) trial: u64,
}

/// Asks the kernel to back a large, not yet touched CPU tensor with transparent huge pages
/// (fewer TLB misses when the trainer reads whole env rows across the time-major memory).
/// Purely advisory.
fn advise_huge_pages(x: &Tensor) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = x.numel() * x.kind().elt_size_in_bytes();
        if bytes < 2 * HUGE {
            return;
        }
        let start = x.data_ptr() as usize;
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        let end = (start + bytes) & !(HUGE - 1);
        if end > aligned {
            // SAFETY: madvise(MADV_HUGEPAGE) only changes how the kernel backs pages of this
            // range, which lies inside the tensor's allocation; it never changes contents.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = x;
}

/// Checked product of dimensions as an i64 element count.
fn elements(dims: &[usize]) -> Option<i64> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| i64::try_from(n).ok())
}

impl RolloutStorage {
    /// Zeroed storage for `num_envs` slots of `spec` and trials of `rollout_len` steps on
    /// `device`. Errors on zero sizes, sizes that overflow, or a failed allocation.
    pub fn new(
        spec: &EnvSpec,
        num_envs: usize,
        rollout_len: usize,
        device: Device,
    ) -> Result<Self> {
        Self::build(spec, num_envs, rollout_len, device, false)
    }

    /// As [`RolloutStorage::new`], plus [`next_vector`](Self::next_vector) /
    /// [`next_image`](Self::next_image): the observation every step led to before any
    /// auto-reset (for value bootstraps after truncation). Costs one more observation per step.
    pub fn with_next_obs(
        spec: &EnvSpec,
        num_envs: usize,
        rollout_len: usize,
        device: Device,
    ) -> Result<Self> {
        Self::build(spec, num_envs, rollout_len, device, true)
    }

    fn build(
        spec: &EnvSpec,
        num_envs: usize,
        rollout_len: usize,
        device: Device,
        next_obs: bool,
    ) -> Result<Self> {
        ensure_invalid!(
            num_envs >= 1,
            "rollout storage: num_envs must be at least 1"
        );
        ensure_invalid!(
            rollout_len >= 1,
            "rollout storage: rollout_len must be at least 1"
        );
        // The integer fields are i32: actions + 1, episode indices and steps must fit.
        ensure_invalid!(
            rollout_len < i32::MAX as usize && spec.num_actions < i32::MAX as usize,
            "rollout storage: rollout_len {rollout_len} and num_actions {} must be below 2^31 - 1",
            spec.num_actions
        );
        let (b, t) = (num_envs, rollout_len);
        let t1 = t.saturating_add(1);
        let v = spec.vector_dim;
        let hw = spec.image.map(|i| (i.height, i.width));
        // Every tensor's element count must fit in i64 (and in memory, which libtorch checks).
        let mut shapes = vec![vec![b, t1, v], vec![b, t1]];
        if let Some((h, w)) = hw {
            shapes.push(vec![b, t1, h, w, 3]);
        }
        for s in &shapes {
            ensure_invalid!(
                elements(s).is_some(),
                "rollout storage: shape {s:?} is too large"
            );
        }
        let dims = |s: &[usize]| s.iter().map(|&d| d as i64).collect::<Vec<i64>>();
        // `[B, C, ...]` as a view of zeroed time-major memory `[C, B, ...]`.
        let zeros = |s: &[usize], kind: Kind| -> Result<Tensor> {
            let mut time_major = s.to_vec();
            time_major.swap(0, 1);
            let mut x = Tensor::f_empty(dims(&time_major), (kind, device)).with_context(|| {
                format!("rollout storage: allocating {kind:?} {s:?} on {device:?}")
            })?;
            if device == Device::Cpu {
                advise_huge_pages(&x);
            }
            let _ = x.f_zero_()?;
            Ok(x.f_transpose(0, 1)?)
        };
        let image = match hw {
            Some((h, w)) => Some(zeros(&[b, t1, h, w, 3], Kind::Uint8)?),
            None => None,
        };
        let (next_vector, next_image) = if next_obs {
            let img = match hw {
                Some((h, w)) => Some(zeros(&[b, t, h, w, 3], Kind::Uint8)?),
                None => None,
            };
            (Some(zeros(&[b, t, v], Kind::Float)?), img)
        } else {
            (None, None)
        };
        Ok(RolloutStorage {
            vector: zeros(&[b, t1, v], Kind::Float)?,
            image,
            prev_action: zeros(&[b, t1], Kind::Int)?,
            prev_reward: zeros(&[b, t1], Kind::Float)?,
            episode_index: zeros(&[b, t1], Kind::Int)?,
            step_in_episode: zeros(&[b, t1], Kind::Int)?,
            action: zeros(&[b, t], Kind::Int)?,
            logprob: zeros(&[b, t], Kind::Float)?,
            value: zeros(&[b, t], Kind::Float)?,
            reward: zeros(&[b, t], Kind::Float)?,
            terminated: zeros(&[b, t], Kind::Bool)?,
            truncated: zeros(&[b, t], Kind::Bool)?,
            success: zeros(&[b, t], Kind::Bool)?,
            next_vector,
            next_image,
            len: 0,
            tasks: Vec::new(),
            num_envs,
            rollout_len,
            vector_dim: v,
            image_spec: spec.image,
            device,
            trial: 0,
        })
    }

    /// Number of env slots `B`.
    pub fn num_envs(&self) -> usize {
        self.num_envs
    }

    /// Steps per trial `T`.
    pub fn rollout_len(&self) -> usize {
        self.rollout_len
    }

    /// The device the tensors were allocated on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Length of the vector observation `V`.
    pub fn vector_dim(&self) -> usize {
        self.vector_dim
    }

    /// The image size, if observations carry an image.
    pub fn image_spec(&self) -> Option<ImageSpec> {
        self.image_spec
    }

    /// Whether [`next_vector`](Self::next_vector) (and `next_image`) are kept.
    pub fn has_next_obs(&self) -> bool {
        self.next_vector.is_some()
    }

    /// [`agent::StepInputs`] for token columns `[start, end)` of every slot: views of the
    /// observations and previous rewards, i64 copies of the i32 integer fields (what the agent
    /// expects). `end` is clamped to `T + 1` and `start` to `end`, so a bad range gives fewer (possibly
    /// zero) columns instead of a panic; use [`RolloutStorage::inputs_rows`] for a strict check.
    pub fn inputs(&self, start: usize, end: usize) -> StepInputs {
        let end = end.min(self.rollout_len + 1);
        let start = start.min(end);
        self.view(start, end, 0..self.num_envs)
    }

    /// [`agent::StepInputs`] for token columns `[start, end)` of env rows `rows` (as
    /// [`RolloutStorage::inputs`]: views, integer fields as i64 copies). Errors unless `start <= end <= T + 1` and `rows` lies in `0..B`.
    pub fn inputs_rows(&self, start: usize, end: usize, rows: Range<usize>) -> Result<StepInputs> {
        ensure_invalid!(
            start <= end && end <= self.rollout_len + 1,
            "rollout storage: token columns {start}..{end} outside 0..{}",
            self.rollout_len + 1
        );
        ensure_invalid!(
            rows.start <= rows.end && rows.end <= self.num_envs,
            "rollout storage: rows {rows:?} outside 0..{}",
            self.num_envs
        );
        Ok(self.view(start, end, rows))
    }

    /// Columns `[start, end)` and rows `rows` (integer fields widened to i64); the caller
    /// guarantees the ranges.
    fn view(&self, start: usize, end: usize, rows: Range<usize>) -> StepInputs {
        let (s, n) = (start as i64, (end - start) as i64);
        let (r0, nr) = (rows.start as i64, (rows.end - rows.start) as i64);
        let all_rows = rows.start == 0 && rows.end == self.num_envs;
        let v = |x: &Tensor| {
            let x = x.narrow(1, s, n);
            if all_rows {
                x
            } else {
                x.narrow(0, r0, nr)
            }
        };
        let int = |x: &Tensor| v(x).to_kind(Kind::Int64);
        StepInputs {
            vector: v(&self.vector),
            image: self.image.as_ref().map(v),
            prev_action: int(&self.prev_action),
            prev_reward: v(&self.prev_reward),
            episode_index: int(&self.episode_index),
            step_in_episode: int(&self.step_in_episode),
        }
    }

    /// The token tensors (`T + 1` columns), in a fixed order.
    pub(crate) fn token_fields(&self) -> Vec<&Tensor> {
        let mut f = vec![&self.vector];
        f.extend(self.image.as_ref());
        f.extend([
            &self.prev_action,
            &self.prev_reward,
            &self.episode_index,
            &self.step_in_episode,
        ]);
        f
    }

    /// The outcome tensors (`T` columns), in a fixed order.
    pub(crate) fn outcome_fields(&self) -> Vec<&Tensor> {
        let mut f = vec![
            &self.action,
            &self.logprob,
            &self.value,
            &self.reward,
            &self.terminated,
            &self.truncated,
            &self.success,
        ];
        f.extend(self.next_vector.as_ref());
        f.extend(self.next_image.as_ref());
        f
    }

    /// ReLIC's episode shuffle after a partial update: for each env, permute its completed
    /// episodes (whole blocks of columns, all token and outcome fields) inside
    /// `[0, start of its running episode)`, keep the running episode last, and renumber
    /// `episode_index` of the completed episodes `0..n` in their new order (the running
    /// episode keeps index `n`). `rng` decides the permutations, rows in order `0..B`.
    ///
    /// The first token of every episode has `prev_action = 0` and `prev_reward = 0`, so the
    /// blocks are self-contained; `step_in_episode` moves with its block. Errors only if the
    /// tensors were replaced by ones of another shape.
    pub fn shuffle_completed_episodes<R: rand::Rng + ?Sized>(&mut self, rng: &mut R) -> Result<()> {
        let (b, len) = (self.num_envs, self.len);
        ensure_invalid!(
            len <= self.rollout_len,
            "rollout storage: len {len} exceeds rollout_len {}",
            self.rollout_len
        );
        let cols = len + 1;
        let ep = self
            .episode_index
            .f_narrow(1, 0, cols as i64)
            .and_then(|x| x.f_to_device(Device::Cpu))
            .and_then(|x| x.f_to_kind(Kind::Int))
            .and_then(|x| x.f_contiguous())
            .context("rollout storage: reading episode_index")?;
        let mut ep_host = vec![0i32; b * cols];
        ep.f_copy_data(&mut ep_host, b * cols)
            .context("rollout storage: reading episode_index")?;
        for row in 0..b {
            let e = &ep_host[row * cols..(row + 1) * cols];
            // Start of the running episode (the one of the current token, column len).
            let running = e[len];
            let mut start = len;
            while start > 0 && e[start - 1] == running {
                start -= 1;
            }
            // Completed episodes: maximal blocks of equal episode index in [0, start).
            let mut blocks: Vec<Range<usize>> = Vec::new();
            let mut s = 0;
            for c in 1..=start {
                if c == start || e[c] != e[s] {
                    if c > s {
                        blocks.push(s..c);
                    }
                    s = c;
                }
            }
            if blocks.is_empty() {
                continue;
            }
            blocks.shuffle(rng);
            let mut perm = Vec::with_capacity(start);
            let mut new_ep = Vec::with_capacity(start);
            for (k, blk) in blocks.iter().enumerate() {
                perm.extend(blk.clone().map(|c| c as i64));
                new_ep.extend(std::iter::repeat_n(k as i32, blk.len()));
            }
            self.permute_row(row, &perm, &new_ep)
                .with_context(|| format!("rollout storage: shuffling episodes of row {row}"))?;
        }
        Ok(())
    }

    /// Rewrites columns `[0, perm.len())` of row `row` of every field: new column `j` takes old
    /// column `perm[j]`; `episode_index` gets `new_ep`.
    fn permute_row(&mut self, row: usize, perm: &[i64], new_ep: &[i32]) -> Result<()> {
        let n = perm.len() as i64;
        let idx = Tensor::from_slice(perm).f_to_device(self.device)?;
        for field in self.token_fields().into_iter().chain(self.outcome_fields()) {
            let r = field.f_get(row as i64)?;
            let src = r.f_narrow(0, 0, n)?.f_index_select(0, &idx)?;
            r.f_narrow(0, 0, n)?.f_copy_(&src)?;
        }
        let ep = Tensor::from_slice(new_ep).f_to_device(self.device)?;
        self.episode_index
            .f_get(row as i64)?
            .f_narrow(0, 0, n)?
            .f_copy_(&ep)?;
        Ok(())
    }

    /// Copies token column `src_col` (and outcome column `src_out`, when given) of rows `rows`
    /// of `self` (a staging buffer) to token column `dst_col` (outcome column `dst_out`) of the
    /// same rows of `dst`.
    pub(crate) fn copy_columns_to(
        &self,
        dst: &RolloutStorage,
        rows: Range<usize>,
        src_col: usize,
        dst_col: usize,
        out_cols: Option<(usize, usize)>,
    ) -> Result<()> {
        let (r0, nr) = (rows.start as i64, (rows.end - rows.start) as i64);
        let copy = |s: &Tensor, d: &Tensor, sc: usize, dc: usize| -> Result<()> {
            let src = s.f_narrow(0, r0, nr)?.f_narrow(1, sc as i64, 1)?;
            d.f_narrow(0, r0, nr)?
                .f_narrow(1, dc as i64, 1)?
                .f_copy_(&src)?;
            Ok(())
        };
        for (s, d) in self.token_fields().into_iter().zip(dst.token_fields()) {
            copy(s, d, src_col, dst_col)?;
        }
        if let Some((so, dout)) = out_cols {
            for (s, d) in self.outcome_fields().into_iter().zip(dst.outcome_fields()) {
                copy(s, d, so, dout)?;
            }
        }
        Ok(())
    }

    /// A raw, bounds-described view of the tensors' memory for the workers. Errors unless the
    /// storage is on the CPU and every tensor still has its original shape, kind and
    /// time-major layout. `&mut self` because the workers write through it.
    pub(crate) fn raw(&mut self) -> Result<RawStorage> {
        ensure_invalid!(
            self.device == Device::Cpu,
            "rollout storage: raw access needs CPU storage"
        );
        let (b, t) = (self.num_envs, self.rollout_len);
        let v = self.vector_dim;
        let img = self.image_spec.map_or(0, |i| i.bytes());
        let tok = t + 1;
        Ok(RawStorage {
            vector: RawField::new(&self.vector, "vector", Kind::Float, b, tok, v)?,
            image: match &self.image {
                Some(x) => Some(RawField::new(x, "image", Kind::Uint8, b, tok, img)?),
                None => None,
            },
            prev_action: RawField::new(&self.prev_action, "prev_action", Kind::Int, b, tok, 1)?,
            prev_reward: RawField::new(&self.prev_reward, "prev_reward", Kind::Float, b, tok, 1)?,
            episode_index: RawField::new(
                &self.episode_index,
                "episode_index",
                Kind::Int,
                b,
                tok,
                1,
            )?,
            step_in_episode: RawField::new(
                &self.step_in_episode,
                "step_in_episode",
                Kind::Int,
                b,
                tok,
                1,
            )?,
            action: RawField::new(&self.action, "action", Kind::Int, b, t, 1)?,
            logprob: RawField::new(&self.logprob, "logprob", Kind::Float, b, t, 1)?,
            value: RawField::new(&self.value, "value", Kind::Float, b, t, 1)?,
            reward: RawField::new(&self.reward, "reward", Kind::Float, b, t, 1)?,
            terminated: RawField::new(&self.terminated, "terminated", Kind::Bool, b, t, 1)?,
            truncated: RawField::new(&self.truncated, "truncated", Kind::Bool, b, t, 1)?,
            success: RawField::new(&self.success, "success", Kind::Bool, b, t, 1)?,
            next_vector: match &self.next_vector {
                Some(x) => Some(RawField::new(x, "next_vector", Kind::Float, b, t, v)?),
                None => None,
            },
            next_image: match &self.next_image {
                Some(x) => Some(RawField::new(x, "next_image", Kind::Uint8, b, t, img)?),
                None => None,
            },
        })
    }
}

/// One field of the storage as raw memory: `rows x cols` entries of `inner` elements each,
/// laid out time-major: entry `(row, col)` starts at element `(col * rows + row) * inner`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawField<T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
    inner: usize,
}

// SAFETY: a RawField is only a description of memory owned by a tensor of the storage. The
// sampler hands it to workers only while it holds `&mut RolloutStorage` (so the tensors stay
// alive and untouched), gives every worker disjoint rows, and waits for all of them before it
// returns.
unsafe impl<T> Send for RawField<T> {}
unsafe impl<T> Sync for RawField<T> {}

/// Element types the storage holds, with their libtorch kinds.
pub(crate) trait RawElement: Copy {}
impl RawElement for f32 {}
impl RawElement for i32 {}
impl RawElement for u8 {}

impl<T: RawElement> RawField<T> {
    /// Validates `x` (CPU, `kind`, shape `[rows, cols, inner...]`, time-major strides) and
    /// takes its data pointer.
    fn new(
        x: &Tensor,
        name: &str,
        kind: Kind,
        rows: usize,
        cols: usize,
        inner: usize,
    ) -> Result<Self> {
        ensure_invalid!(
            x.device() == Device::Cpu,
            "rollout storage: {name} is on {:?}, expected the CPU",
            x.device()
        );
        ensure_invalid!(
            x.kind() == kind && kind.elt_size_in_bytes() == std::mem::size_of::<T>(),
            "rollout storage: {name} has kind {:?}, expected {kind:?}",
            x.kind()
        );
        let size = x.size();
        let lead_ok = size.len() >= 2 && size[0] == rows as i64 && size[1] == cols as i64;
        let numel = elements(&[rows, cols, inner]);
        ensure_invalid!(
            lead_ok && numel == Some(x.numel() as i64),
            "rollout storage: {name} has shape {size:?}, expected [{rows}, {cols}, ..] with {inner} elements per entry"
        );
        // Strides of the transposed view of contiguous `[cols, rows, inner...]` memory.
        let mut expected: Vec<i64> = vec![0; size.len()];
        let mut step = 1i64;
        for d in (2..size.len()).rev() {
            expected[d] = step;
            step *= size[d];
        }
        expected[0] = step;
        expected[1] = step * rows as i64;
        ensure_invalid!(
            x.stride() == expected || rows * cols * inner == 0,
            "rollout storage: {name} has strides {:?}, expected the time-major layout {expected:?}",
            x.stride()
        );
        let ptr = x.data_ptr() as *mut T;
        ensure_invalid!(
            !ptr.is_null() || rows * cols * inner == 0,
            "rollout storage: {name} has no data"
        );
        Ok(RawField {
            ptr,
            rows,
            cols,
            inner,
        })
    }

    /// True when rows `rows`, column `col` and entries of `inner` elements lie inside.
    pub(crate) fn fits(&self, rows: &Range<usize>, col: usize, inner: usize) -> bool {
        rows.start <= rows.end && rows.end <= self.rows && col < self.cols && inner == self.inner
    }

    /// The entries of rows `rows` in column `col`: one contiguous slice of
    /// `rows.len() * inner` elements (the layout is time-major), or `None` when they do not
    /// lie inside.
    ///
    /// # Safety
    /// No other thread may access these entries while the slice lives, and the memory
    /// described by this field must still be alive (the sampler guarantees both, see
    /// [`RawField`]).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn column(&self, rows: &Range<usize>, col: usize) -> Option<&mut [T]> {
        if !self.fits(rows, col, self.inner) {
            return None;
        }
        let inner = self.inner;
        let start = (col * self.rows + rows.start) * inner;
        Some(std::slice::from_raw_parts_mut(
            self.ptr.add(start),
            (rows.end - rows.start) * inner,
        ))
    }
}

/// Raw views of every field of a CPU [`RolloutStorage`] (see [`RawField`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawStorage {
    pub vector: RawField<f32>,
    pub image: Option<RawField<u8>>,
    pub prev_action: RawField<i32>,
    pub prev_reward: RawField<f32>,
    pub episode_index: RawField<i32>,
    pub step_in_episode: RawField<i32>,
    pub action: RawField<i32>,
    pub logprob: RawField<f32>,
    pub value: RawField<f32>,
    pub reward: RawField<f32>,
    pub terminated: RawField<u8>,
    pub truncated: RawField<u8>,
    pub success: RawField<u8>,
    pub next_vector: Option<RawField<f32>>,
    pub next_image: Option<RawField<u8>>,
}
