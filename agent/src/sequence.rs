//! DPT's supervised in-context learner: one token per transition,
//! `linear(concat(s, onehot(a), r, s'))`, with the query token `linear(concat(query, 0))`
//! first; action logits at every position.

use crate::config::{ModelConfig, PosEncoding};
use crate::transformer::Transformer;
use anyhow::{ensure, Result};
use tch::{nn, Kind, Tensor};

/// Transformer over (query, transition 1, ..., transition T). Parameter names:
/// "transition.*", "trunk.*", "actor.*".
#[derive(Debug)]
pub struct SequenceModel {
    /// `2 S + A + 1 -> D` transition embedding (also embeds the query).
    pub transition: nn::Linear,
    /// Transformer trunk.
    pub trunk: Transformer,
    /// Action logits head `D -> A`.
    pub actor: nn::Linear,
    state_dim: i64,
    num_actions: i64,
}

impl SequenceModel {
    /// Builds the model for states of `state_dim` and `num_actions` actions. Positional
    /// encoding must be None, Learned or Rope (contexts have no episodes).
    pub fn new(
        path: &nn::Path,
        cfg: &ModelConfig,
        state_dim: usize,
        num_actions: usize,
    ) -> Result<Self> {
        cfg.check()?;
        ensure!(
            cfg.positional != PosEncoding::EpisodeRope,
            "model.positional: EpisodeRope needs episodes; use None, Learned or Rope for DPT"
        );
        ensure!(
            state_dim > 0 && num_actions > 0,
            "DPT needs state_dim > 0 and num_actions > 0"
        );
        let (s, a, d) = (state_dim as i64, num_actions as i64, cfg.d_model as i64);
        Ok(SequenceModel {
            transition: nn::linear(path / "transition", 2 * s + a + 1, d, Default::default()),
            trunk: Transformer::new(&(path / "trunk"), cfg)?,
            actor: nn::linear(path / "actor", d, a, Default::default()),
            state_dim: s,
            num_actions: a,
        })
    }

    /// Logits `[B, T + 1, A]` (f32): position j sees the query and the first j
    /// transitions. `query: [B, S]`, `states`, `next_states: [B, T, S]` f32,
    /// `actions: [B, T]` i64 in `[0, A)`, `rewards: [B, T]` f32. T may be 0.
    pub fn forward_dpt(
        &self,
        query: &Tensor,
        states: &Tensor,
        actions: &Tensor,
        rewards: &Tensor,
        next_states: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let kept = self.trunk.draw_layers(train);
        self.forward_dpt_layers(query, states, actions, rewards, next_states, &kept)
    }

    /// [`SequenceModel::forward_dpt`] running only the trunk blocks with `kept[i]` (from
    /// [`Transformer::draw_layers`]; data-parallel replicas share one draw); draws nothing.
    pub fn forward_dpt_layers(
        &self,
        query: &Tensor,
        states: &Tensor,
        actions: &Tensor,
        rewards: &Tensor,
        next_states: &Tensor,
        kept: &[bool],
    ) -> Result<Tensor> {
        let (s, a) = (self.state_dim, self.num_actions);
        let b = query.size().first().copied().unwrap_or(0);
        let t = actions.size().get(1).copied().unwrap_or(0);
        ensure!(
            query.size() == [b, s],
            "query must be [B, {s}], got {:?}",
            query.size()
        );
        ensure!(
            actions.size() == [b, t],
            "actions must be [B, T], got {:?}",
            actions.size()
        );
        ensure!(actions.kind() == Kind::Int64, "actions must be i64");
        ensure!(
            rewards.size() == [b, t],
            "rewards must be [B, T], got {:?}",
            rewards.size()
        );
        for (name, x) in [("states", states), ("next_states", next_states)] {
            ensure!(
                x.size() == [b, t, s],
                "{name} must be [B, T, {s}] = [{b}, {t}, {s}], got {:?}",
                x.size()
            );
        }
        if b * t > 0 {
            let (lo, hi) = (
                actions.min().int64_value(&[]),
                actions.max().int64_value(&[]),
            );
            ensure!(
                lo >= 0 && hi < a,
                "actions must lie in [0, {a}), got [{lo}, {hi}]"
            );
        }
        let kind = self.trunk.config().dtype.kind();
        let f = |x: &Tensor| x.to_kind(kind);
        let onehot = actions.one_hot(a).to_kind(kind); // [B, T, A]
        let transitions = Tensor::cat(
            &[f(states), onehot, f(rewards).unsqueeze(-1), f(next_states)],
            2,
        );
        let query = Tensor::cat(
            &[
                f(query),
                Tensor::zeros([b, s + a + 1], (kind, query.device())),
            ],
            1,
        );
        let inputs = Tensor::cat(&[query.unsqueeze(1), transitions], 1); // [B, T + 1, 2S + A + 1]
        let tokens = inputs.apply(&self.transition);
        let zeros = Tensor::zeros([b, t + 1], (Kind::Int64, query.device()));
        let h = self.trunk.forward_layers(&tokens, &zeros, &zeros, kept)?;
        Ok(h.apply(&self.actor).to_kind(Kind::Float))
    }
}
