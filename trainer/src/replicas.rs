//! Data-parallel model replicas for one minibatch's gradient (`runtime.update_replicas`).
//!
//! The minibatch's sequences are split into R shards; each shard runs forward and backward on
//! its own copy of the model, in its own OS thread with one libtorch intra-op thread, and the
//! shards' gradients are summed into the master parameters' `.grad`, where the caller clips
//! them and takes one optimiser step as usual. The models trained here are tiny (ReLIC's: 2
//! layers, width 64), so a second libtorch intra-op thread buys little on one forward while
//! independent shards keep every core busy.
//!
//! What stays the same as the serial step (one forward over the whole minibatch): the loss
//! (each shard's mean is weighted by its share of the minibatch, so the weighted shard losses
//! sum to the minibatch's mean and their gradients to its gradient), the advantage
//! standardisation (once over the whole minibatch, before the split), depth dropout (one draw
//! per minibatch from the same generator, in the same order, run by every shard), the
//! parameters each shard starts from (the master's, copied in before every minibatch), and
//! what a non-finite loss does (nothing reaches the master). What differs is float summation
//! order only: per-shard reductions and the sum of the shard gradients, ~1e-7 relative in f32.
//!
//! [`PpoMinibatch::backward`] is the serial step, [`ppo_backward`] the data-parallel one;
//! [`Replicas`] (in the agent crate: `run`, `add_grads_to_master`) is the machinery.

use anyhow::Result;
use tch::{Kind, Tensor};

use agent::{ActorCritic, StepInputs};

use crate::ppo_math::{self, PpoBatch, PpoLoss, PpoLossConfig};

pub use agent::Replicas;

/// One PPO minibatch: whole sequences `[n, end]` of model inputs, and the loss's tensors
/// `[n, seg]` for the steps `[loss_start, loss_start + seg)` of each.
pub struct PpoMinibatch {
    /// The model's inputs from the trial's start.
    pub inputs: StepInputs,
    /// First step with a loss.
    pub loss_start: i64,
    /// Actions taken, i64.
    pub actions: Tensor,
    /// Their log-probabilities under the behaviour policy.
    pub old_logprob: Tensor,
    /// Advantages (standardised by the loss when configured).
    pub advantages: Tensor,
    /// Value targets.
    pub returns: Tensor,
    /// Values when the data was collected.
    pub old_values: Tensor,
}

impl PpoMinibatch {
    /// The serial step: a training forward over the whole minibatch (drawing depth dropout)
    /// and, when the loss is finite, the backward of `loss / grad_accum` into the model's
    /// gradients. Returns the loss.
    pub fn backward(
        &self,
        model: &ActorCritic,
        cfg: &PpoLossConfig,
        grad_accum: f64,
    ) -> Result<PpoLoss> {
        let (logits, values) = model.forward(&self.inputs, true)?;
        let loss = self.loss(cfg, &logits, &values);
        if loss.total.double_value(&[]).is_finite() {
            (&loss.total / grad_accum).backward();
        }
        Ok(loss)
    }

    /// The sequences in rows `start..start + len` (views).
    fn rows(&self, start: i64, len: i64) -> PpoMinibatch {
        let n = |x: &Tensor| x.narrow(0, start, len);
        PpoMinibatch {
            inputs: self.inputs.narrow_rows(start, len),
            loss_start: self.loss_start,
            actions: n(&self.actions),
            old_logprob: n(&self.old_logprob),
            advantages: n(&self.advantages),
            returns: n(&self.returns),
            old_values: n(&self.old_values),
        }
    }

    fn loss(&self, cfg: &PpoLossConfig, logits: &Tensor, values: &Tensor) -> PpoLoss {
        let seg = self.actions.size()[1];
        let a = logits.size()[2];
        ppo_math::ppo_loss(
            cfg,
            &PpoBatch {
                logits: &logits.narrow(1, self.loss_start, seg).reshape([-1, a]),
                actions: &self.actions.reshape(-1),
                old_logprob: &self.old_logprob.reshape(-1),
                advantages: &self.advantages.reshape(-1),
                returns: &self.returns.reshape(-1),
                old_values: &self.old_values.reshape(-1),
                values: &values.narrow(1, self.loss_start, seg).reshape(-1),
            },
        )
    }
}

/// [`PpoMinibatch::backward`] split over the replicas: the same depth-dropout draw from
/// `master` and the same advantage standardisation, then each shard of
/// `minibatch`'s sequences backpropagates `share * loss / grad_accum`, where `share` is
/// its part of the minibatch's steps, and the summed gradients go into the master's
/// `.grad` when every shard's loss is finite. Returns the minibatch's loss: the
/// share-weighted sums of the shards' (the mean over the whole minibatch up to rounding).
pub fn ppo_backward(
    replicas: &mut Replicas<ActorCritic>,
    master: &ActorCritic,
    minibatch: &PpoMinibatch,
    cfg: &PpoLossConfig,
    grad_accum: f64,
) -> Result<PpoLoss> {
    let kept = master.trunk.draw_layers(true);
    let advantages = ppo_math::normalized_advantages(cfg, &minibatch.advantages.reshape(-1))
        .view_as(&minibatch.advantages);
    let shard_cfg = PpoLossConfig {
        normalize_advantages: false,
        ..*cfg
    };
    let n = minibatch.actions.size()[0];
    let jobs: Vec<_> = replicas
        .shards(n)
        .into_iter()
        .map(|(start, len)| {
            let mut part = minibatch.rows(start, len);
            part.advantages = advantages.narrow(0, start, len);
            (part, len as f64 / n as f64)
        })
        .collect();
    let shards = jobs.len();
    let kept = &kept;
    let losses = replicas.run(jobs, |model, (part, share)| {
        let (logits, values) = model.forward_layers(&part.inputs, kept)?;
        let loss = part.loss(&shard_cfg, &logits, &values);
        let total = loss.total.double_value(&[]);
        if total.is_finite() {
            (&loss.total * share / grad_accum).backward();
        }
        Ok([
            share * total,
            share * loss.policy,
            share * loss.value,
            share * loss.entropy,
            share * loss.approx_kl,
            share * loss.clipfrac,
        ])
    })?;
    let sum = |k: usize| losses.iter().map(|l| l[k]).sum::<f64>();
    let total = sum(0);
    if losses.iter().all(|l| l[0].is_finite()) {
        replicas.add_grads_to_master(shards);
    }
    Ok(PpoLoss {
        total: Tensor::from(total).to_kind(Kind::Double),
        policy: sum(1),
        value: sum(2),
        entropy: sum(3),
        approx_kl: sum(4),
        clipfrac: sum(5),
    })
}
