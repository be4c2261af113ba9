//! The DPT network ([`DptNet`]: the agent crate's sequence model for vector observations,
//! [`ImageDpt`] for images), its batches and its loss.

use anyhow::Result;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

use agent::{
    ModelConfig, ObsSpec, PosEncoding, SequenceModel, StepInputs, TokenEncoder, Transformer,
};
use envs::EnvConfig;

use crate::config::{Config, DptConfig, StateEncoding};
use crate::data::{Layout, RecordView};
use crate::run::checkpoint::{self, Checkpoint};

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

impl DptBatch {
    /// The examples in rows `start..start + len` (views).
    pub fn rows(&self, start: i64, len: i64) -> DptBatch {
        let n = |x: &Tensor| x.narrow(0, start, len);
        DptBatch {
            query: n(&self.query),
            query_img: self.query_img.as_ref().map(n),
            states: n(&self.states),
            images: self.images.as_ref().map(n),
            actions: n(&self.actions),
            rewards: n(&self.rewards),
            next_states: n(&self.next_states),
            next_images: self.next_images.as_ref().map(n),
            labels: n(&self.labels),
        }
    }
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

    fn forward_layers(&self, x: &DptBatch, kept: &[bool]) -> Result<Tensor> {
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
        let h = self.trunk.forward_layers(&tokens, &pos, &pos, kept)?;
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
        let grid = match (encoding, env.grid_rules()) {
            (StateEncoding::Raw, _) => None,
            (StateEncoding::GridOneHot, Some(rules)) => Some(rules.size),
            (StateEncoding::GridOneHot, None) => {
                let other = env;
                return Err(crate::error::UsageError(format!(
                    "method.state_encoding: GridOneHot needs a grid world, got {}",
                    other.name()
                ))
                .into());
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
        self.forward_layers(x, &self.draw_layers(train))
    }

    /// Which trunk blocks run in one forward ([`agent::Transformer::draw_layers`]).
    pub fn draw_layers(&self, train: bool) -> Vec<bool> {
        match &self.kind {
            DptKind::Vector(m) => m.trunk.draw_layers(train),
            DptKind::Image(m) => m.trunk.draw_layers(train),
        }
    }

    /// [`DptNet::forward`] running only the trunk blocks with `kept[i]`; draws nothing.
    pub fn forward_layers(&self, x: &DptBatch, kept: &[bool]) -> Result<Tensor> {
        match &self.kind {
            DptKind::Vector(m) => match self.grid {
                Some(g) => m.forward_dpt_layers(
                    &grid_one_hot(&x.query, g),
                    &grid_one_hot(&x.states, g),
                    &x.actions,
                    &x.rewards,
                    &grid_one_hot(&x.next_states, g),
                    kept,
                ),
                None => m.forward_dpt_layers(
                    &x.query,
                    &x.states,
                    &x.actions,
                    &x.rewards,
                    &x.next_states,
                    kept,
                ),
            },
            DptKind::Image(m) => m.forward_layers(x, kept),
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
pub(super) fn new_model(
    cfg: &Config,
    dpt: &DptConfig,
    device: Device,
) -> Result<(VarStore, DptNet)> {
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
    use crate::config::DataConfig;
    use crate::data;
    use rand::SeedableRng;

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
