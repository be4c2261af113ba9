//! DPT acting online ([`DptPolicy`]): each slot's context is built from its own transitions,
//! and the online evaluation with the shared protocol of [`crate::eval`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use sampler::{Policy, PolicyOutput, RolloutStorage, Sampler, SlotStreams};

use crate::config::{Config, DptConfig, OnlineContext};
use crate::data;
use crate::eval;
use crate::results::EvalResult;
use crate::run::Run;

use super::model::{DptNet, HostBatch};

/// Argmax of a row (lowest index on ties).
pub(super) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = j;
        }
    }
    best
}

/// Samples from softmax(`logits`) with the uniform draw `u`.
pub(super) fn sample_logits(logits: &[f32], u: f64) -> usize {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = logits.iter().map(|&x| ((x - m) as f64).exp()).collect();
    let total: f64 = w.iter().sum();
    let probs: Vec<f64> = w.iter().map(|x| x / total).collect();
    data::sample_categorical(&probs, u)
}

/// DPT acting online: each slot's context is built from its own transitions in the rollout
/// storage (which must keep next observations), per `online_context`.
pub struct DptPolicy<'a> {
    model: &'a DptNet,
    mode: OnlineContext,
    max_context: usize,
    greedy: bool,
    streams: SlotStreams,
    device: Device,
    image: Option<(usize, usize)>,
    /// Per slot: its transitions this trial, as (record-like rows) plus episode ends.
    history: Vec<SlotHistory>,
    s: usize,
    i: usize,
    num_actions: usize,
}

#[derive(Default, Clone, Debug)]
struct SlotHistory {
    vec: Vec<f32>,
    next_vec: Vec<f32>,
    img: Vec<u8>,
    next_img: Vec<u8>,
    action: Vec<i64>,
    reward: Vec<f32>,
    /// Index (exclusive) of the end of each completed episode.
    episode_ends: Vec<usize>,
}

impl SlotHistory {
    fn len(&self) -> usize {
        self.action.len()
    }
}

/// Copies column `col` of rows `rows` of a `[B, T, ...]` storage tensor to the host.
fn column<T: tch::kind::Element + Default + Clone>(
    x: &Tensor,
    col: usize,
    rows: &std::ops::Range<usize>,
) -> Result<Vec<T>> {
    let c = x
        .narrow(0, rows.start as i64, rows.len() as i64)
        .select(1, col as i64)
        .to_device(Device::Cpu)
        .to_kind(T::KIND)
        .contiguous()
        .view(-1);
    let n = c.numel();
    let mut out = vec![T::default(); n];
    c.f_copy_data(&mut out, n)?;
    Ok(out)
}

impl<'a> DptPolicy<'a> {
    /// A policy for `num_envs` slots of `cfg.env` acting as `cfg.eval` and `dpt` say (context
    /// per `online_context`, at most `data.context_len` transitions), drawing from `seed`.
    pub fn new(
        model: &'a DptNet,
        cfg: &Config,
        dpt: &DptConfig,
        num_envs: usize,
        seed: u64,
        device: Device,
    ) -> Self {
        let spec = cfg.env.spec();
        DptPolicy {
            model,
            mode: dpt.online_context,
            max_context: dpt.data.context_len,
            greedy: cfg.eval.greedy,
            streams: SlotStreams::new(seed, num_envs),
            device,
            image: spec.image.map(|i| (i.height, i.width)),
            history: vec![SlotHistory::default(); num_envs],
            s: spec.vector_dim,
            i: spec.image_bytes(),
            num_actions: spec.num_actions,
        }
    }

    /// The transitions (indices into the slot's history) forming its context now.
    fn context_range(&self, h: &SlotHistory) -> std::ops::Range<usize> {
        let range = match self.mode {
            OnlineContext::Trial => 0..h.len(),
            OnlineContext::PreviousEpisodes(k) => {
                let ends = &h.episode_ends;
                match ends.last() {
                    None => 0..0,
                    Some(&end) => {
                        let start = if ends.len() > k {
                            ends[ends.len() - 1 - k]
                        } else {
                            0
                        };
                        start..end
                    }
                }
            }
        };
        let len = range.len().min(self.max_context);
        range.end - len..range.end
    }

    /// Appends step `col` of rows `rows` from storage to the slots' histories.
    fn record(
        &mut self,
        storage: &RolloutStorage,
        col: usize,
        rows: &std::ops::Range<usize>,
    ) -> Result<()> {
        let next_vector = storage
            .next_vector
            .as_ref()
            .context("DPT online evaluation needs rollout storage with next observations")?;
        let vec: Vec<f32> = column(&storage.vector, col, rows)?;
        let next: Vec<f32> = column(next_vector, col, rows)?;
        let action: Vec<i64> = column(&storage.action, col, rows)?;
        let reward: Vec<f32> = column(&storage.reward, col, rows)?;
        let term: Vec<u8> = column(&storage.terminated, col, rows)?;
        let trunc: Vec<u8> = column(&storage.truncated, col, rows)?;
        let (img, nimg): (Vec<u8>, Vec<u8>) = match (&storage.image, &storage.next_image) {
            (Some(a), Some(b)) => (column(a, col, rows)?, column(b, col, rows)?),
            _ => (Vec::new(), Vec::new()),
        };
        let (s, i) = (self.s, self.i);
        for (k, slot) in rows.clone().enumerate() {
            let h = &mut self.history[slot];
            h.vec.extend_from_slice(&vec[k * s..(k + 1) * s]);
            h.next_vec.extend_from_slice(&next[k * s..(k + 1) * s]);
            if i > 0 {
                h.img.extend_from_slice(&img[k * i..(k + 1) * i]);
                h.next_img.extend_from_slice(&nimg[k * i..(k + 1) * i]);
            }
            h.action.push(action[k]);
            h.reward.push(reward[k]);
            if term[k] != 0 || trunc[k] != 0 {
                h.episode_ends.push(h.action.len());
            }
        }
        Ok(())
    }
}

impl Policy for DptPolicy<'_> {
    fn act(
        &mut self,
        storage: &RolloutStorage,
        t: usize,
        slots: std::ops::Range<usize>,
    ) -> Result<PolicyOutput> {
        anyhow::ensure!(
            slots.end <= self.history.len(),
            "DPT policy: slots {slots:?} outside its {} slots",
            self.history.len()
        );
        if t == 0 {
            for slot in slots.clone() {
                self.history[slot] = SlotHistory::default();
            }
        } else {
            self.record(storage, t - 1, &slots)?;
        }
        let (s, i) = (self.s, self.i);
        let ranges: Vec<std::ops::Range<usize>> = slots
            .clone()
            .map(|slot| self.context_range(&self.history[slot]))
            .collect();
        let width = ranges.iter().map(|r| r.len()).max().unwrap_or(0);
        let n = slots.len();
        // Contexts are right-padded to the longest: causal attention keeps position j of a
        // slot independent of what lies after it, so each slot reads its logits at its length.
        let mut host = HostBatch {
            b: n,
            t: width,
            query: column(&storage.vector, t, &slots)?,
            query_img: match &storage.image {
                Some(img) => column(img, t, &slots)?,
                None => Vec::new(),
            },
            states: vec![0.0; n * width * s],
            images: vec![0; n * width * i],
            actions: vec![0; n * width],
            rewards: vec![0.0; n * width],
            next_states: vec![0.0; n * width * s],
            next_images: vec![0; n * width * i],
            labels: vec![0; n],
        };
        for (k, (slot, r)) in slots.clone().zip(&ranges).enumerate() {
            let h = &self.history[slot];
            let row = k * width;
            let len = r.len();
            host.states[row * s..(row + len) * s].copy_from_slice(&h.vec[r.start * s..r.end * s]);
            host.next_states[row * s..(row + len) * s]
                .copy_from_slice(&h.next_vec[r.start * s..r.end * s]);
            host.actions[row..row + len].copy_from_slice(&h.action[r.clone()]);
            host.rewards[row..row + len].copy_from_slice(&h.reward[r.clone()]);
            if i > 0 {
                host.images[row * i..(row + len) * i]
                    .copy_from_slice(&h.img[r.start * i..r.end * i]);
                host.next_images[row * i..(row + len) * i]
                    .copy_from_slice(&h.next_img[r.start * i..r.end * i]);
            }
        }
        let batch = host.to_tensors(self.image, self.device);
        let logits = {
            let _guard = tch::no_grad_guard();
            let all = self.model.forward(&batch, false)?; // [n, width + 1, A]
            let idx =
                Tensor::from_slice(&ranges.iter().map(|r| r.len() as i64).collect::<Vec<_>>())
                    .to_device(self.device);
            let a = self.num_actions as i64;
            all.gather(
                1,
                &idx.view([n as i64, 1, 1]).expand([n as i64, 1, a], false),
                false,
            )
            .squeeze_dim(1)
            .log_softmax(-1, Kind::Float)
        };
        let logp: Vec<f32> = Vec::try_from(logits.to_device(Device::Cpu).contiguous().view(-1))?;
        let a = self.num_actions;
        let mut out = PolicyOutput::default();
        for (k, slot) in slots.enumerate() {
            let row = &logp[k * a..(k + 1) * a];
            let action = if self.greedy {
                argmax(row)
            } else {
                sample_logits(row, self.streams.uniform(slot))
            };
            out.actions.push(action as u32);
            out.logprob.push(row[action]);
            out.value.push(0.0);
        }
        Ok(out)
    }
}

/// Online evaluation with the shared protocol; writes `eval/<step>.json` and logs it.
pub fn evaluate_online(
    run: &mut Run,
    model: &DptNet,
    dpt: &DptConfig,
    cfg: &Config,
    step: u64,
) -> Result<PathBuf> {
    let result = online_result(model, dpt, cfg, step, run.device)?;
    let json = eval::publish(run, &result)?;
    let first = result.curve.first().map_or(f64::NAN, |p| p.ret.mean);
    let last = result.curve.last().map_or(f64::NAN, |p| p.ret.mean);
    eprintln!(
        "online at step {step}: return episode 1 = {first:.1}, episode {} = {last:.1}",
        result.episodes_per_trial
    );
    Ok(json)
}

/// The in-context curve of DPT acting online on the evaluation tasks.
pub fn online_result(
    model: &DptNet,
    dpt: &DptConfig,
    cfg: &Config,
    step: u64,
    device: Device,
) -> Result<EvalResult> {
    let _guard = tch::no_grad_guard();
    let tasks = eval::eval_tasks(&cfg.env, &cfg.eval)?;
    let trial_tasks: Vec<envs::TaskId> = tasks
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t, cfg.eval.trials_per_task))
        .collect();
    let spec = cfg.env.spec();
    let seed = crate::run::seeds::eval_seed(cfg.experience_seed());
    let mut sampler = Sampler::new(&cfg.env, &cfg.sampler, trial_tasks.len(), seed)?;
    let max_steps = cfg.eval.episodes_per_trial * spec.horizon;
    let mut storage =
        RolloutStorage::with_next_obs(&spec, trial_tasks.len(), max_steps, Device::Cpu)?;
    let mut policy = DptPolicy::new(model, cfg, dpt, trial_tasks.len(), seed, device);
    let results = eval::run_trials(
        &mut sampler,
        &mut policy,
        &mut storage,
        &trial_tasks,
        cfg.eval.episodes_per_trial,
        spec.horizon,
    )?;
    Ok(eval::summarise(
        &results,
        &cfg.env,
        &cfg.eval,
        tasks.len(),
        step,
        cfg.method_name(),
        spec.has_success,
    ))
}
