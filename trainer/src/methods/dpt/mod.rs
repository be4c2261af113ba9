//! DPT, the Decision-Pretrained Transformer (Lee et al. 2023): supervised pretraining to
//! predict the optimal action of a query state from an in-context dataset of transitions.
//!
//! Read top to bottom:
//!
//! 1. [`train`] makes sure the dataset exists ([`crate::data::ensure`]: generated into the
//!    cache on the first run, memory-mapped after), builds the model and AdamW, and restores
//!    both from a checkpoint when resuming.
//! 2. Each step draws `batch_size` records with a generator seeded by (seed, step), shuffles
//!    the order of each context's transitions (the (s, a, r, s') tuples stay intact) when
//!    configured, and minimises the cross-entropy against the query's optimal action at every
//!    position: position j sees the query and the first j transitions ([`dpt_loss`]).
//! 3. Offline evaluation ([`offline`]): fixed contexts from the dataset's generator on the
//!    held-out tasks; the model acts for one episode with the current observation as its
//!    query, greedily and sampled. On bandits the offline and online comparison with the
//!    classic algorithms runs instead ([`crate::methods::bandit`]).
//! 4. Online evaluation ([`evaluate_online`]) follows the shared protocol of [`crate::eval`]:
//!    trials of several episodes on the held-out tasks; the model's own transitions become its
//!    context (the last k episodes, or the whole trial so far), actions sampled at
//!    temperature 1.
//!
//! The model is the agent crate's [`SequenceModel`] (one token per transition,
//! `linear(concat(s, onehot(a), r, s'))`, the query token first) for vector observations. For
//! image observations ([`ImageDpt`]) each transition token is the sum of two step encoders of
//! the agent crate (CNN + vector MLP): one for (s, a, r), one for s'; the query token is the
//! first encoder with "no action".

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

use agent::{
    ModelConfig, ObsSpec, PosEncoding, SequenceModel, StepInputs, TokenEncoder, Transformer,
};
use envs::{EnvConfig, ObsBatch, StepBatch};
use sampler::{Policy, PolicyOutput, RolloutStorage, Sampler, SlotStreams};

use crate::config::{Config, DataConfig, DptConfig, OnlineContext, StateEncoding};
use crate::data::{self, Layout, Record, RecordView};
use crate::eval::{self, EvalResult};
use crate::optim::{warmup_cosine, Adam};
use crate::run::checkpoint::{self, Checkpoint, TensorGroup};
use crate::run::logging::Logger;
use crate::run::{self, Run};
use crate::stats::MeanCi;

/// Sub-folder of a run holding offline evaluation results.
pub const OFFLINE_DIR: &str = "offline";

/// Counters that make a run resumable, saved in every checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TrainState {
    /// Optimiser steps done.
    pub steps: u64,
    /// Consecutive steps with a non-finite loss.
    pub bad_updates: u64,
}

/// A batch of DPT examples as tensors.
#[derive(Debug)]
pub struct DptBatch {
    /// `[B, S]` f32 query observations.
    pub query: Tensor,
    /// `[B, H, W, 3]` u8 query images (image envs).
    pub query_img: Option<Tensor>,
    /// `[B, T, S]` f32.
    pub states: Tensor,
    /// `[B, T, H, W, 3]` u8.
    pub images: Option<Tensor>,
    /// `[B, T]` i64.
    pub actions: Tensor,
    /// `[B, T]` f32.
    pub rewards: Tensor,
    /// `[B, T, S]` f32.
    pub next_states: Tensor,
    /// `[B, T, H, W, 3]` u8.
    pub next_images: Option<Tensor>,
    /// `[B]` i64 optimal actions of the queries.
    pub labels: Tensor,
}

/// Host-side buffers of a batch (filled from records, then turned into tensors).
#[derive(Default, Debug, Clone)]
pub struct HostBatch {
    /// Examples.
    pub b: usize,
    /// Transitions per example.
    pub t: usize,
    /// `[B, S]`.
    pub query: Vec<f32>,
    /// `[B, I]`.
    pub query_img: Vec<u8>,
    /// `[B, T, S]`.
    pub states: Vec<f32>,
    /// `[B, T, I]`.
    pub images: Vec<u8>,
    /// `[B, T]`.
    pub actions: Vec<i64>,
    /// `[B, T]`.
    pub rewards: Vec<f32>,
    /// `[B, T, S]`.
    pub next_states: Vec<f32>,
    /// `[B, T, I]`.
    pub next_images: Vec<u8>,
    /// `[B]`.
    pub labels: Vec<i64>,
}

impl HostBatch {
    /// Fills the batch from records, each context's transitions permuted by `rng` when given
    /// (one permutation per record, applied to every field of a transition together).
    pub fn from_records(records: &[RecordView<'_>], mut rng: Option<&mut ChaCha8Rng>) -> HostBatch {
        let l = records
            .first()
            .map_or(Layout { s: 0, i: 0, t: 0 }, |r| r.layout());
        let (b, t, s, i) = (records.len(), l.t, l.s, l.i);
        let mut h = HostBatch {
            b,
            t,
            query: vec![0.0; b * s],
            query_img: vec![0; b * i],
            states: vec![0.0; b * t * s],
            images: vec![0; b * t * i],
            actions: vec![0; b * t],
            rewards: vec![0.0; b * t],
            next_states: vec![0.0; b * t * s],
            next_images: vec![0; b * t * i],
            labels: vec![0; b],
        };
        let mut vec = vec![0.0f32; t * s];
        let mut next = vec![0.0f32; t * s];
        let mut rew = vec![0.0f32; t];
        let mut order: Vec<usize> = (0..t).collect();
        for (k, r) in records.iter().enumerate() {
            r.query_vec(&mut h.query[k * s..(k + 1) * s]);
            h.query_img[k * i..(k + 1) * i].copy_from_slice(r.query_img());
            h.labels[k] = r.label() as i64;
            r.vec(0..t, &mut vec);
            r.next_vec(0..t, &mut next);
            r.reward(0..t, &mut rew);
            let acts = r.actions();
            let (img, nimg) = (r.img(0..t), r.next_img(0..t));
            for (j, o) in order.iter_mut().enumerate() {
                *o = j;
            }
            if let Some(rng) = rng.as_deref_mut() {
                order.shuffle(rng);
            }
            for (dst, &src) in order.iter().enumerate() {
                let row = k * t + dst;
                h.states[row * s..(row + 1) * s].copy_from_slice(&vec[src * s..(src + 1) * s]);
                h.next_states[row * s..(row + 1) * s]
                    .copy_from_slice(&next[src * s..(src + 1) * s]);
                h.rewards[row] = rew[src];
                h.actions[row] = acts[src] as i64;
                h.images[row * i..(row + 1) * i].copy_from_slice(&img[src * i..(src + 1) * i]);
                h.next_images[row * i..(row + 1) * i]
                    .copy_from_slice(&nimg[src * i..(src + 1) * i]);
            }
        }
        h
    }

    /// The batch as tensors on `device`; `image` = (height, width) for image envs.
    pub fn to_tensors(&self, image: Option<(usize, usize)>, device: Device) -> DptBatch {
        let (b, t) = (self.b as i64, self.t as i64);
        let s = self.query.len().checked_div(self.b).unwrap_or(0) as i64;
        let f = |v: &[f32], shape: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
        let img = |v: &[u8], lead: &[i64]| {
            image.map(|(hh, ww)| {
                let mut shape = lead.to_vec();
                shape.extend([hh as i64, ww as i64, 3]);
                Tensor::from_slice(v)
                    .view(shape.as_slice())
                    .to_device(device)
            })
        };
        DptBatch {
            query: f(&self.query, &[b, s]),
            query_img: img(&self.query_img, &[b]),
            states: f(&self.states, &[b, t, s]),
            images: img(&self.images, &[b, t]),
            actions: Tensor::from_slice(&self.actions)
                .view([b, t])
                .to_device(device),
            rewards: f(&self.rewards, &[b, t]),
            next_states: f(&self.next_states, &[b, t, s]),
            next_images: img(&self.next_images, &[b, t]),
            labels: Tensor::from_slice(&self.labels).to_device(device),
        }
    }
}

/// DPT for image observations: transition token = enc_s(s, a, r) + enc_next(s'), query token
/// = enc_s(query, no action, 0); the agent crate's trunk and an action head.
#[derive(Debug)]
pub struct ImageDpt {
    state: TokenEncoder,
    next: TokenEncoder,
    trunk: Transformer,
    actor: nn::Linear,
}

impl ImageDpt {
    fn new(p: &nn::Path, cfg: &ModelConfig, spec: &ObsSpec) -> Result<Self> {
        Ok(ImageDpt {
            state: TokenEncoder::new(&(p / "state"), cfg, spec)?,
            next: TokenEncoder::new(&(p / "next"), cfg, spec)?,
            trunk: Transformer::new(&(p / "trunk"), cfg)?,
            actor: nn::linear(
                p / "actor",
                cfg.d_model as i64,
                spec.num_actions as i64,
                Default::default(),
            ),
        })
    }

    fn forward(&self, x: &DptBatch, train: bool) -> Result<Tensor> {
        let b = x.query.size()[0];
        let t = x.actions.size()[1];
        let device = x.query.device();
        let zeros_i = |n: i64| Tensor::zeros([b, n], (Kind::Int64, device));
        let zeros_f = |n: i64| Tensor::zeros([b, n], (Kind::Float, device));
        let query = StepInputs {
            vector: x.query.unsqueeze(1),
            image: x.query_img.as_ref().map(|q| q.unsqueeze(1)),
            prev_action: zeros_i(1),
            prev_reward: zeros_f(1),
            episode_index: zeros_i(1),
            step_in_episode: zeros_i(1),
        };
        let mut tokens = vec![self.state.forward(&query)];
        if t > 0 {
            let s = StepInputs {
                vector: x.states.shallow_clone(),
                image: x.images.as_ref().map(|v| v.shallow_clone()),
                prev_action: &x.actions + 1,
                prev_reward: x.rewards.shallow_clone(),
                episode_index: zeros_i(t),
                step_in_episode: zeros_i(t),
            };
            let n = StepInputs {
                vector: x.next_states.shallow_clone(),
                image: x.next_images.as_ref().map(|v| v.shallow_clone()),
                prev_action: zeros_i(t),
                prev_reward: zeros_f(t),
                episode_index: zeros_i(t),
                step_in_episode: zeros_i(t),
            };
            tokens.push(self.state.forward(&s) + self.next.forward(&n));
        }
        let tokens = Tensor::cat(&tokens, 1);
        let pos = zeros_i(t + 1);
        let h = self.trunk.forward(&tokens, &pos, &pos, train)?;
        Ok(h.apply(&self.actor).to_kind(Kind::Float))
    }
}

/// The two network families.
#[derive(Debug)]
enum DptKind {
    /// Vector observations.
    Vector(Box<SequenceModel>),
    /// Image (+ vector) observations.
    Image(Box<ImageDpt>),
}

/// The DPT network: [`SequenceModel`] for vector observations, [`ImageDpt`] for images;
/// optionally with grid-world coordinates encoded one-hot per axis ([`StateEncoding`]).
#[derive(Debug)]
pub struct DptNet {
    kind: DptKind,
    /// Grid side when states `(x, y, rest..)` are one-hot encoded per axis.
    grid: Option<i64>,
}

/// One-hot encodes the first two features (grid coordinates) of `x: [.., S]` per axis:
/// `[.., 2 size + S - 2]`.
fn grid_one_hot(x: &Tensor, size: i64) -> Tensor {
    let s = x.size();
    let d = s[s.len() - 1];
    let axis = |i: i64| {
        x.narrow(-1, i, 1)
            .squeeze_dim(-1)
            .round()
            .clamp(0.0, (size - 1) as f64)
            .to_kind(Kind::Int64)
            .one_hot(size)
            .to_kind(Kind::Float)
    };
    let mut parts = vec![axis(0), axis(1)];
    if d > 2 {
        parts.push(x.narrow(-1, 2, d - 2).to_kind(Kind::Float));
    }
    Tensor::cat(&parts, -1)
}

impl DptNet {
    /// Builds the network for `env` under `p`. Positional encoding must be None or Learned
    /// (with room for `context_len + 1` tokens).
    pub fn new(
        p: &nn::Path,
        cfg: &ModelConfig,
        env: &EnvConfig,
        context_len: usize,
        encoding: StateEncoding,
    ) -> Result<Self> {
        let grid = match (encoding, env) {
            (StateEncoding::Raw, _) => None,
            (StateEncoding::GridOneHot, EnvConfig::DarkRoom(c)) => Some(c.size),
            (StateEncoding::GridOneHot, EnvConfig::DarkRoomAd(c)) => Some(c.size),
            (StateEncoding::GridOneHot, EnvConfig::DarkRoomHard(c)) => Some(c.size),
            (StateEncoding::GridOneHot, EnvConfig::KeyToDoor(c)) => Some(c.size),
            (StateEncoding::GridOneHot, other) => {
                return Err(crate::error::UsageError(format!(
                    "method.state_encoding: GridOneHot needs a grid world, got {}",
                    other.name()
                ))
                .into())
            }
        };
        let kind = Self::build(p, cfg, env, context_len, grid)?;
        Ok(DptNet {
            kind,
            grid: grid.map(|g| g as i64),
        })
    }

    fn build(
        p: &nn::Path,
        cfg: &ModelConfig,
        env: &EnvConfig,
        context_len: usize,
        grid: Option<usize>,
    ) -> Result<DptKind> {
        anyhow::ensure!(
            matches!(
                cfg.positional,
                PosEncoding::None | PosEncoding::Learned | PosEncoding::Rope
            ),
            "model.positional: DPT contexts have no episodes; use None, Learned or Rope, got {:?}",
            cfg.positional
        );
        if cfg.positional == PosEncoding::Learned {
            anyhow::ensure!(
                cfg.max_positions > context_len,
                "model.max_positions = {} must exceed the context length {context_len} (the query takes one position)",
                cfg.max_positions
            );
        }
        let spec = env.spec();
        if spec.image.is_some() {
            Ok(DptKind::Image(Box::new(ImageDpt::new(
                p,
                cfg,
                &sampler::obs_spec(&spec),
            )?)))
        } else {
            let state_dim = match grid {
                Some(size) => 2 * size + spec.vector_dim.saturating_sub(2),
                None => spec.vector_dim,
            };
            Ok(DptKind::Vector(Box::new(SequenceModel::new(
                p,
                cfg,
                state_dim,
                spec.num_actions,
            )?)))
        }
    }

    /// Logits `[B, T + 1, A]`: position j sees the query and the first j transitions.
    pub fn forward(&self, x: &DptBatch, train: bool) -> Result<Tensor> {
        match &self.kind {
            DptKind::Vector(m) => match self.grid {
                Some(g) => m.forward_dpt(
                    &grid_one_hot(&x.query, g),
                    &grid_one_hot(&x.states, g),
                    &x.actions,
                    &x.rewards,
                    &grid_one_hot(&x.next_states, g),
                    train,
                ),
                None => m.forward_dpt(
                    &x.query,
                    &x.states,
                    &x.actions,
                    &x.rewards,
                    &x.next_states,
                    train,
                ),
            },
            DptKind::Image(m) => m.forward(x, train),
        }
    }
}

/// Cross-entropy against the query's label at every position: logits `[B, T + 1, A]`, labels
/// `[B]` -> mean over all `B (T + 1)` predictions.
pub fn dpt_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    let s = logits.size();
    let (b, n, a) = (s[0], s[1], s[2]);
    let targets = labels.unsqueeze(1).expand([b, n], false).reshape([-1]);
    logits.reshape([-1, a]).cross_entropy_for_logits(&targets)
}

fn step_seed(seed: u64, step: u64) -> u64 {
    envs::rng::mix64(seed ^ envs::rng::mix64(step.wrapping_add(0xD9_7000_0000)))
}

/// The folder datasets are cached in by default: the run folder's parent (`--out`).
pub fn runs_dir(run_dir: &Path) -> PathBuf {
    run_dir
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Trains DPT as configured in `run.config` with `dpt`.
pub fn train(run: &mut Run, dpt: &DptConfig) -> Result<()> {
    let cfg = run.config.clone();
    let device = run.device;
    let dataset = data::ensure(&cfg.env, &dpt.data, &runs_dir(&run.dir))?;
    tch::manual_seed(cfg.init_seed() as i64);
    let (mut vs, model) = new_model(&cfg, dpt, device)?;
    let mut opt = Adam::new(&vs, 0.9, 0.999, 1e-8, dpt.weight_decay);
    let mut state = TrainState::default();
    if let Some(ckpt) = run.resume_from.take() {
        checkpoint::load_into_varstore(&mut vs, &ckpt, "")?;
        opt.load_state(&ckpt.tensors)
            .with_context(|| format!("{}: optimiser state", ckpt.path.display()))?;
        state = serde_json::from_value(ckpt.meta.state.clone())
            .with_context(|| format!("{}: trainer state", ckpt.path.display()))?;
        eprintln!("resuming {} at step {}", run.dir.display(), state.steps);
    }
    let image = cfg.env.spec().image.map(|i| (i.height, i.width));
    let tokens_per_step = (dpt.batch_size * (dpt.data.context_len + 1)) as f64;
    let bar = crate::run::progress::bar(dpt.steps, "dpt", "steps");
    bar.set_position(state.steps.min(dpt.steps));
    run::install_interrupt_handler();
    let log_every = 50u64;
    let (mut loss_sum, mut acc_sum, mut n_sum) = (0.0, 0.0, 0u64);
    let mut window_start = std::time::Instant::now();
    let mut window_steps = 0u64;

    while state.steps < dpt.steps {
        // --- one optimiser step on a batch drawn with a generator seeded by (seed, step) ---
        let mut rng = ChaCha8Rng::seed_from_u64(step_seed(cfg.init_seed(), state.steps));
        let views: Vec<RecordView<'_>> = (0..dpt.batch_size)
            .map(|_| dataset.record(rng.random_range(0..dataset.len())))
            .collect::<Result<_>>()?;
        let host = HostBatch::from_records(&views, dpt.shuffle_context.then_some(&mut rng));
        let batch = host.to_tensors(image, device);
        let logits = model.forward(&batch, true)?;
        let loss = dpt_loss(&logits, &batch.labels);
        let value = loss.double_value(&[]);
        let lr = warmup_cosine(
            state.steps,
            dpt.lr,
            0.01,
            dpt.warmup_steps,
            dpt.steps,
            dpt.final_lr,
        );
        if value.is_finite() {
            opt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(dpt.max_grad_norm);
            opt.step(lr);
            state.bad_updates = 0;
            let _guard = tch::no_grad_guard();
            let last = logits
                .select(1, dpt.data.context_len as i64)
                .argmax(-1, false);
            acc_sum += last
                .eq_tensor(&batch.labels)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
            loss_sum += value;
            n_sum += 1;
        } else {
            state.bad_updates += 1;
            eprintln!(
                "warning: step {}: non-finite loss, update skipped",
                state.steps
            );
            anyhow::ensure!(
                state.bad_updates < dpt.max_bad_updates as u64,
                "stopping: {} consecutive steps with non-finite losses (max_bad_updates = {})",
                state.bad_updates,
                dpt.max_bad_updates
            );
        }
        state.steps += 1;
        window_steps += 1;
        bar.set_position(state.steps);

        // --- logging, evaluation, checkpoints, interruption ---
        let done = state.steps >= dpt.steps;
        if state.steps % log_every == 0 || done {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            let logger = &mut run.logger;
            if n_sum > 0 && (state.steps % (4 * log_every) == 0 || done) {
                eprintln!(
                    "step {}: action_ce {:.4}, accuracy (last position) {:.3}, {:.0} tokens/s",
                    state.steps,
                    loss_sum / n_sum as f64,
                    acc_sum / n_sum as f64,
                    window_steps as f64 * tokens_per_step / secs
                );
            }
            if n_sum > 0 {
                logger.scalar("losses/action_ce", state.steps, loss_sum / n_sum as f64)?;
                logger.scalar(
                    "losses/action_accuracy_last",
                    state.steps,
                    acc_sum / n_sum as f64,
                )?;
            }
            logger.scalar("charts/learning_rate", state.steps, lr)?;
            logger.scalar(
                "charts/sps",
                state.steps,
                window_steps as f64 * dpt.batch_size as f64 / secs,
            )?;
            logger.scalar(
                "perf/tokens_per_sec",
                state.steps,
                window_steps as f64 * tokens_per_step / secs,
            )?;
            (loss_sum, acc_sum, n_sum, window_steps) = (0.0, 0.0, 0, 0);
            window_start = std::time::Instant::now();
        }
        if dpt.offline_eval_every > 0 && state.steps % dpt.offline_eval_every == 0 && !done {
            offline(run, &model, dpt, state.steps)?;
        }
        let every = cfg.checkpoint.every_updates as u64;
        if (every > 0 && state.steps % every == 0) || done || run::interrupted() {
            save(run, &vs, &opt, &state)?;
        }
        if run::interrupted() {
            run.logger.flush()?;
            bar.abandon();
            return Err(run::Interrupted {
                step: state.steps,
                dir: run.dir.clone(),
            }
            .into());
        }
    }
    bar.finish_and_clear();
    offline(run, &model, dpt, state.steps)?;
    let json = evaluate_online(run, &model, dpt, &cfg, state.steps)?;
    eprintln!("online evaluation: {}", json.display());
    run.logger.flush()?;
    Ok(())
}

fn save(run: &Run, vs: &VarStore, opt: &Adam, state: &TrainState) -> Result<()> {
    let optim: Vec<(String, Tensor)> = opt
        .state_tensors()
        .into_iter()
        .map(|(n, t)| (n.trim_start_matches("optim.").to_string(), t))
        .collect();
    let groups = [
        TensorGroup::from_varstore("", vs),
        TensorGroup::new("optim.", optim),
    ];
    run.save_checkpoint(state.steps, &groups, serde_json::to_value(state)?)?;
    Ok(())
}

/// Argmax of a row (lowest index on ties).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = j;
        }
    }
    best
}

/// Samples from softmax(`logits`) with the uniform draw `u`.
fn sample_logits(logits: &[f32], u: f64) -> usize {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = logits.iter().map(|&x| ((x - m) as f64).exp()).collect();
    let total: f64 = w.iter().sum();
    let probs: Vec<f64> = w.iter().map(|x| x / total).collect();
    data::sample_categorical(&probs, u)
}

/// The result of an offline evaluation, as written to `offline/<step>.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OfflineResult {
    /// Training step of the evaluated model.
    pub step: u64,
    /// Environment name.
    pub env: String,
    /// Context generator of the fixed contexts.
    pub context: String,
    /// Held-out tasks.
    pub tasks: usize,
    /// Fixed contexts (tasks x contexts per task).
    pub contexts: usize,
    /// Contexts holding at least one rewarded transition (on Dark Room: the goal is in the
    /// context; without one the model can only guess, which bounds the return).
    #[serde(default)]
    pub contexts_with_reward: usize,
    /// One-episode return acting greedily, over all contexts (interval clustered by task).
    /// A greedy DPT can only score where the context shows the goal, so this is capped by the
    /// share `contexts_with_reward / contexts`; see `greedy_with_goal`.
    pub greedy: MeanCi,
    /// One-episode return sampling from the model at temperature 1, over all contexts.
    pub sampled: MeanCi,
    /// Greedy return over the contexts holding a rewarded transition (on Dark Room: the goal
    /// is in the context), interval clustered by task. None when no context has one (and in
    /// files written before this field existed).
    #[serde(default)]
    pub greedy_with_goal: Option<MeanCi>,
    /// Sampled return over the same contexts.
    #[serde(default)]
    pub sampled_with_goal: Option<MeanCi>,
    /// Return of the transitions in each context, per episode-length of transitions
    /// (reward sum x horizon / context length): what the dataset itself scores.
    pub dataset: MeanCi,
    /// Greedy returns per context.
    pub greedy_returns: Vec<f64>,
    /// Sampled returns per context.
    pub sampled_returns: Vec<f64>,
}

/// Fixed offline contexts from the held-out tasks: the data section's generator with
/// `offline_contexts_per_task` records per task.
pub fn offline_contexts(cfg: &Config, dpt: &DptConfig) -> Result<Vec<Record>> {
    let tasks = eval::eval_tasks(&cfg.env, &cfg.eval)?;
    let data = DataConfig {
        samples_per_task: dpt.offline_contexts_per_task,
        windows_per_history: dpt
            .data
            .windows_per_history
            .min(dpt.offline_contexts_per_task),
        ..dpt.data.clone()
    };
    data::generate_in_memory(
        &cfg.env,
        &data,
        &tasks,
        envs::rng::mix64(cfg.experience_seed() ^ 0x0FF1_1E00),
    )
}

/// One episode per fixed context on its task, the current observation as the query.
pub fn offline_returns(
    model: &DptNet,
    env: &EnvConfig,
    records: &[Record],
    greedy: bool,
    seed: u64,
    device: Device,
) -> Result<Vec<f64>> {
    let _guard = tch::no_grad_guard();
    let n = records.len();
    anyhow::ensure!(n > 0, "offline evaluation without contexts");
    let spec = env.spec();
    let layout = Layout {
        s: spec.vector_dim,
        i: spec.image_bytes(),
        t: records[0].reward.len(),
    };
    let mut bytes = Vec::with_capacity(n * layout.bytes());
    for r in records {
        r.encode(&layout, &mut bytes)?;
    }
    let views: Vec<RecordView<'_>> = bytes
        .chunks_exact(layout.bytes())
        .map(|c| RecordView::new(c, layout))
        .collect();
    let mut host = HostBatch::from_records(&views, None);
    let image = spec.image.map(|i| (i.height, i.width));
    let mut venv = env.build(seed, 0, n)?;
    for (slot, r) in records.iter().enumerate() {
        venv.set_task(slot, r.task)?;
    }
    let mut obs = ObsBatch::new(&spec, n);
    venv.reset(&mut obs);
    let mut step = StepBatch::new(&spec, n);
    let mut streams = SlotStreams::new(seed, n);
    let mut returns = vec![0.0f64; n];
    let mut finished = vec![false; n];
    let mut actions = vec![0u32; n];
    let (s, i, t) = (layout.s, layout.i, layout.t as i64);
    for _ in 0..spec.horizon {
        host.query.copy_from_slice(&obs.vector[..n * s]);
        host.query_img.copy_from_slice(&obs.image[..n * i]);
        let batch = host.to_tensors(image, device);
        let logits = model.forward(&batch, false)?.select(1, t).contiguous();
        let logits: Vec<f32> = Vec::try_from(logits.to_device(Device::Cpu).view(-1))?;
        let a = spec.num_actions;
        for (slot, act) in actions.iter_mut().enumerate() {
            let row = &logits[slot * a..(slot + 1) * a];
            *act = if greedy {
                argmax(row)
            } else {
                sample_logits(row, streams.uniform(slot))
            } as u32;
        }
        venv.step(&actions, &mut step)?;
        for slot in 0..n {
            if !finished[slot] {
                returns[slot] += step.reward[slot] as f64;
                finished[slot] = step.terminated[slot] || step.truncated[slot];
            }
        }
        std::mem::swap(&mut obs, &mut step.obs);
        if finished.iter().all(|&f| f) {
            break;
        }
    }
    Ok(returns)
}

/// `values[i]` over the contexts with `keep[i]`, clustered by the contexts' tasks (contexts of
/// one task are not independent): the mean over tasks of each task's mean over its kept
/// contexts, with the interval over tasks. None when no context is kept.
pub fn by_task(records: &[Record], values: &[f64], keep: &[bool]) -> Option<MeanCi> {
    let mut clusters: Vec<(envs::TaskId, Vec<f64>)> = Vec::new();
    for ((r, &v), _) in records.iter().zip(values).zip(keep).filter(|(_, &k)| k) {
        match clusters.iter_mut().find(|c| c.0 == r.task) {
            Some(c) => c.1.push(v),
            None => clusters.push((r.task, vec![v])),
        }
    }
    if clusters.is_empty() {
        return None;
    }
    let clusters: Vec<Vec<f64>> = clusters.into_iter().map(|c| c.1).collect();
    Some(crate::stats::clustered_mean_ci(&clusters))
}

/// Offline evaluation at `step`: writes `offline/<step>.json` (or, on bandits, the comparison
/// with the classic algorithms) and logs `eval/offline_return_{greedy,sampled}` and
/// `eval/offline_return_greedy_goal_in_context`.
pub fn offline(run: &mut Run, model: &DptNet, dpt: &DptConfig, step: u64) -> Result<PathBuf> {
    let cfg = run.config.clone();
    if let EnvConfig::Bandit(bandit) = &cfg.env {
        let path = crate::methods::bandit::compare_with_dpt(run, model, bandit, dpt, step)?;
        return Ok(path);
    }
    let records = offline_contexts(&cfg, dpt)?;
    let seed = envs::rng::mix64(cfg.experience_seed() ^ 0x0FF1_1E01);
    let greedy = offline_returns(model, &cfg.env, &records, true, seed, run.device)?;
    let sampled = offline_returns(model, &cfg.env, &records, false, seed, run.device)?;
    let horizon = cfg.env.spec().horizon as f64;
    let dataset: Vec<f64> = records
        .iter()
        .map(|r| r.reward.iter().map(|&x| x as f64).sum::<f64>() * horizon / r.reward.len() as f64)
        .collect();
    let tasks = eval::eval_tasks(&cfg.env, &cfg.eval)?.len();
    let with_goal: Vec<bool> = records
        .iter()
        .map(|r| r.reward.iter().any(|&x| x > 0.0))
        .collect();
    let all = vec![true; records.len()];
    let result = OfflineResult {
        step,
        env: cfg.env.name().to_string(),
        context: format!("{:?}", dpt.data.context),
        tasks,
        contexts: records.len(),
        contexts_with_reward: records
            .iter()
            .filter(|r| r.reward.iter().any(|&x| x > 0.0))
            .count(),
        greedy: by_task(&records, &greedy, &all).unwrap_or(MeanCi::of(&greedy)),
        sampled: by_task(&records, &sampled, &all).unwrap_or(MeanCi::of(&sampled)),
        greedy_with_goal: by_task(&records, &greedy, &with_goal),
        sampled_with_goal: by_task(&records, &sampled, &with_goal),
        dataset: MeanCi::of(&dataset),
        greedy_returns: greedy,
        sampled_returns: sampled,
    };
    let dir = run.dir.join(OFFLINE_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    // The configured evaluation is `<step>.json`; another number of contexts per task
    // (`icrl eval --offline --contexts N`) is written beside it as `<step>_c<N>.json`.
    let name = if matches!(&run.config.method, crate::config::Method::Dpt(c) if c == dpt) {
        format!("{step:012}.json")
    } else {
        format!("{step:012}_c{}.json", dpt.offline_contexts_per_task)
    };
    let path = dir.join(name);
    crate::fsutil::write_atomic(&path, serde_json::to_string_pretty(&result)?.as_bytes())?;
    run.logger
        .scalar("eval/offline_return_greedy", step, result.greedy.mean)?;
    run.logger
        .scalar("eval/offline_return_sampled", step, result.sampled.mean)?;
    if let Some(m) = result.greedy_with_goal {
        run.logger
            .scalar("eval/offline_return_greedy_goal_in_context", step, m.mean)?;
    }
    if let Some(m) = result.greedy_with_goal {
        eprintln!(
            "offline at step {step}: greedy over the {} contexts that contain the goal: {:.1} +- {:.1}",
            result.contexts_with_reward, m.mean, m.ci95
        );
    }
    eprintln!(
        "offline at step {step}: greedy {:.1} +- {:.1}, sampled {:.1} +- {:.1} over {} contexts ({} with a reward; dataset {:.1})",
        result.greedy.mean,
        result.greedy.ci95,
        result.sampled.mean,
        result.sampled.ci95,
        result.contexts,
        result.contexts_with_reward,
        result.dataset.mean
    );
    Ok(path)
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
    /// A policy for `num_envs` slots of `env`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &'a DptNet,
        env: &EnvConfig,
        mode: OnlineContext,
        max_context: usize,
        num_envs: usize,
        greedy: bool,
        seed: u64,
        device: Device,
    ) -> Self {
        let spec = env.spec();
        DptPolicy {
            model,
            mode,
            max_context,
            greedy,
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
    let json = eval::write(&run.dir, &result)?;
    eval::log(&mut run.logger, &result, Some(&json.with_extension("png")))?;
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
    let seed = cfg.experience_seed() ^ 0xE7A1_0000;
    let mut sampler = Sampler::new(&cfg.env, &cfg.sampler, trial_tasks.len(), seed)?;
    let max_steps = cfg.eval.episodes_per_trial * spec.horizon;
    let mut storage =
        RolloutStorage::with_next_obs(&spec, trial_tasks.len(), max_steps, Device::Cpu)?;
    let mut policy = DptPolicy::new(
        model,
        &cfg.env,
        dpt.online_context,
        dpt.data.context_len,
        trial_tasks.len(),
        cfg.eval.greedy,
        seed,
        device,
    );
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

/// Loads a DPT checkpoint into a fresh model.
pub fn load_model(
    cfg: &Config,
    dpt: &DptConfig,
    ckpt: &Checkpoint,
    device: Device,
) -> Result<(VarStore, DptNet)> {
    let (mut vs, model) = new_model(cfg, dpt, device)?;
    checkpoint::load_into_varstore(&mut vs, ckpt, "")?;
    Ok((vs, model))
}

/// A freshly initialised DPT model for `cfg` on `device`, with its variables.
fn new_model(cfg: &Config, dpt: &DptConfig, device: Device) -> Result<(VarStore, DptNet)> {
    let vs = VarStore::new(device);
    let model = DptNet::new(
        &vs.root(),
        &cfg.model,
        &cfg.env,
        dpt.data.context_len,
        dpt.state_encoding,
    )?;
    Ok((vs, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_scores_over_contexts_with_the_goal_are_clustered_by_task() {
        let record = |task: u64, rewarded: bool| Record {
            task,
            reward: vec![if rewarded { 1.0 } else { 0.0 }],
            ..Record::default()
        };
        // Task 1: contexts scoring 90 (goal seen) and 0 (not); task 2: 60 (seen), 30 (seen).
        let records = [
            record(1, true),
            record(1, false),
            record(2, true),
            record(2, true),
        ];
        let values = [90.0, 0.0, 60.0, 30.0];
        let keep: Vec<bool> = records.iter().map(|r| r.reward[0] > 0.0).collect();
        let all = by_task(&records, &values, &[true; 4]).unwrap();
        assert_eq!(all.n, 2);
        assert!((all.mean - 45.0).abs() < 1e-12); // task means 45 and 45
        let seen = by_task(&records, &values, &keep).unwrap();
        assert_eq!(seen.n, 2);
        assert!((seen.mean - 67.5).abs() < 1e-12); // task means 90 and 45
        assert!(by_task(&records, &values, &[false; 4]).is_none());
    }

    #[test]
    fn loss_is_the_cross_entropy_at_every_position() {
        // B = 1, T + 1 = 2 positions, A = 2, label 1.
        // Position 0: logits (0, 0) -> -ln(1/2) = ln 2.
        // Position 1: logits (0, ln 3) -> p(1) = 3/4 -> -ln(3/4).
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 3f32.ln()]).view([1, 2, 2]);
        let labels = Tensor::from_slice(&[1i64]);
        let got = dpt_loss(&logits, &labels).double_value(&[]);
        let want = (2f64.ln() + (4.0f64 / 3.0).ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Two examples with different labels: the mean over all 2 x 2 predictions.
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 3f32.ln(), 0.0, 0.0, 0.0, 3f32.ln()])
            .view([2, 2, 2]);
        let labels = Tensor::from_slice(&[1i64, 0]);
        let got = dpt_loss(&logits, &labels).double_value(&[]);
        let want = (2.0 * 2f64.ln() + (4.0f64 / 3.0).ln() + 4f64.ln()) / 4.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn grid_coordinates_are_one_hot_per_axis() {
        let x = Tensor::from_slice(&[2.0f32, 3.0, 1.0, 0.0, 0.0, 0.0]).view([2, 3]);
        let got: Vec<f32> = Vec::try_from(grid_one_hot(&x, 4).reshape(-1)).unwrap();
        let want = [
            0., 0., 1., 0., 0., 0., 0., 1., 1., // (2, 3), key 1
            1., 0., 0., 0., 1., 0., 0., 0., 0., // (0, 0), key 0
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn shuffled_contexts_keep_transitions_intact() {
        let env = EnvConfig::from_name("darkroom").unwrap();
        let data = DataConfig {
            samples_per_task: 3,
            max_tasks: Some(2),
            context_len: 40,
            ..DataConfig::default()
        };
        let records = data::generate_in_memory(&env, &data, &[0, 1], 5).unwrap();
        let l = Layout { s: 2, i: 0, t: 40 };
        let mut bytes = Vec::new();
        for r in &records {
            r.encode(&l, &mut bytes).unwrap();
        }
        let views: Vec<RecordView<'_>> = bytes
            .chunks_exact(l.bytes())
            .map(|c| RecordView::new(c, l))
            .collect();
        let plain = HostBatch::from_records(&views, None);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let shuffled = HostBatch::from_records(&views, Some(&mut rng));
        let tuples = |h: &HostBatch, k: usize| -> Vec<(i64, i64, i64, i64, i64, i64)> {
            let mut v: Vec<_> = (0..40)
                .map(|j| {
                    let r = k * 40 + j;
                    (
                        h.states[2 * r] as i64,
                        h.states[2 * r + 1] as i64,
                        h.actions[r],
                        h.rewards[r] as i64,
                        h.next_states[2 * r] as i64,
                        h.next_states[2 * r + 1] as i64,
                    )
                })
                .collect();
            v.sort();
            v
        };
        let mut moved = false;
        for (k, record) in records.iter().enumerate() {
            assert_eq!(
                tuples(&plain, k),
                tuples(&shuffled, k),
                "record {k}: same multiset of tuples"
            );
            moved |= plain.actions[k * 40..(k + 1) * 40] != shuffled.actions[k * 40..(k + 1) * 40];
            // Each shuffled tuple is a real transition of the dynamics.
            let goal = envs::darkroom::goal_of(record.task).unwrap();
            for j in 0..40 {
                let r = k * 40 + j;
                let s = (
                    shuffled.states[2 * r] as i32,
                    shuffled.states[2 * r + 1] as i32,
                );
                let (next, rew) =
                    envs::darkroom::step(goal, s, shuffled.actions[r] as u32).unwrap();
                assert_eq!(
                    (
                        shuffled.next_states[2 * r] as i32,
                        shuffled.next_states[2 * r + 1] as i32
                    ),
                    next
                );
                assert_eq!(shuffled.rewards[r], rew);
            }
            assert_eq!(plain.labels[k], shuffled.labels[k]);
            assert_eq!(
                plain.query[2 * k..2 * k + 2],
                shuffled.query[2 * k..2 * k + 2]
            );
        }
        assert!(moved, "the order changed");
    }

    #[test]
    fn right_padding_does_not_change_earlier_positions() {
        let env = EnvConfig::from_name("darkroom").unwrap();
        let cfg = ModelConfig {
            layers: 1,
            heads: 2,
            d_model: 16,
            mlp_hidden: 32,
            positional: PosEncoding::None,
            sink: agent::Sink::None,
            depth_dropout: 0.0,
            ..ModelConfig::default()
        };
        let vs = VarStore::new(Device::Cpu);
        let model = DptNet::new(&vs.root(), &cfg, &env, 10, StateEncoding::Raw).unwrap();
        let data = DataConfig {
            samples_per_task: 1,
            context_len: 10,
            ..DataConfig::default()
        };
        let recs = data::generate_in_memory(&env, &data, &[3], 1).unwrap();
        let l = Layout { s: 2, i: 0, t: 10 };
        let mut bytes = Vec::new();
        recs[0].encode(&l, &mut bytes).unwrap();
        let view = RecordView::new(&bytes, l);
        let full = HostBatch::from_records(&[view], None).to_tensors(None, Device::Cpu);
        let _g = tch::no_grad_guard();
        let a = model.forward(&full, false).unwrap();
        // Zero out (pad) transitions 6..10: positions 0..=6 must not change.
        let mut host = HostBatch::from_records(&[view], None);
        for j in 6..10 {
            host.states[2 * j] = 0.0;
            host.actions[j] = 0;
            host.rewards[j] = 0.0;
        }
        let b = model
            .forward(&host.to_tensors(None, Device::Cpu), false)
            .unwrap();
        let diff = (a.narrow(1, 0, 7) - b.narrow(1, 0, 7))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
    }
}
