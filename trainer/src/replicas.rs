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
//! [`PpoMinibatch::backward`] is the serial step, [`Replicas::ppo_backward`] the data-parallel
//! one; [`Replicas::run`] and [`Replicas::add_grads_to_master`] are the machinery.

use anyhow::{anyhow, ensure, Context, Result};
use tch::{nn::VarStore, Kind, Tensor};

use agent::{ActorCritic, StepInputs};

use crate::ppo_math::{self, PpoBatch, PpoLoss, PpoLossConfig};

/// R copies of a model, each with its own variables and gradients.
pub struct Replicas<M> {
    /// The master's variables, sorted by name: what every replica copies before a minibatch,
    /// and where the summed gradients go.
    master: Vec<(String, Tensor)>,
    replicas: Vec<Replica<M>>,
}

struct Replica<M> {
    model: M,
    /// This replica's variables, in the order of [`Replicas::master`].
    vars: Vec<Tensor>,
    /// Owns `vars` (the model holds shallow copies of them).
    _store: VarStore,
}

impl<M: Send> Replicas<M> {
    /// `count` replicas of the model in `master`, each built by `build` on a fresh VarStore on
    /// the master's device (build it exactly as the master was, dtype included). Building
    /// draws initial weights from libtorch's global generator; they are overwritten before
    /// use, so build replicas before the draws that must be reproducible are seeded.
    pub fn new(
        master: &VarStore,
        count: usize,
        build: impl Fn(&mut VarStore) -> Result<M>,
    ) -> Result<Self> {
        ensure!(count >= 1, "at least one replica");
        let mut named: Vec<(String, Tensor)> = master.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut replicas = Vec::with_capacity(count);
        for _ in 0..count {
            let mut store = VarStore::new(master.device());
            let model = build(&mut store)?;
            let mine = store.variables();
            ensure!(
                mine.len() == named.len(),
                "a replica has {} variables, the master {}",
                mine.len(),
                named.len()
            );
            let vars = named
                .iter()
                .map(|(name, p)| {
                    let r = mine
                        .get(name)
                        .with_context(|| format!("a replica has no variable {name}"))?;
                    ensure!(
                        r.size() == p.size()
                            && r.kind() == p.kind()
                            && r.requires_grad() == p.requires_grad(),
                        "replica variable {name} is {:?} {:?}, the master's {:?} {:?}",
                        r.size(),
                        r.kind(),
                        p.size(),
                        p.kind()
                    );
                    Ok(r.shallow_clone())
                })
                .collect::<Result<Vec<_>>>()?;
            replicas.push(Replica {
                model,
                vars,
                _store: store,
            });
        }
        Ok(Replicas {
            master: named,
            replicas,
        })
    }

    /// Makes `master` the variables the replicas copy from and add their gradients to: a
    /// VarStore with the same variables (names, shapes, kinds) as the one they were built
    /// from. Lets a caller build the replicas before it seeds the master's initialisation, so
    /// the replicas' initial draws shift nothing the run draws later.
    pub fn follow(&mut self, master: &VarStore) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = master.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        ensure!(
            named.len() == self.master.len(),
            "the new master has {} variables, the replicas {}",
            named.len(),
            self.master.len()
        );
        for ((name, p), (old, q)) in named.iter().zip(&self.master) {
            ensure!(
                name == old && p.size() == q.size() && p.kind() == q.kind(),
                "the new master's variable {name} {:?} {:?} does not match the replicas' {old} {:?} {:?}",
                p.size(),
                p.kind(),
                q.size(),
                q.kind()
            );
        }
        self.master = named;
        Ok(())
    }

    /// The number of replicas.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Always false: there is at least one replica.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Runs `shard(replica i, jobs[i])` for every job at once, each in its own OS thread with
    /// one libtorch intra-op thread, after copying the master's values into the replicas and
    /// zeroing their gradients; returns the results in job order. At most [`Replicas::len`]
    /// jobs. The calling thread's libtorch thread count is left as it was.
    pub fn run<J: Send, T: Send>(
        &mut self,
        jobs: Vec<J>,
        shard: impl Fn(&M, J) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        ensure!(
            jobs.len() <= self.replicas.len(),
            "{} shards for {} replicas",
            jobs.len(),
            self.replicas.len()
        );
        {
            let _guard = tch::no_grad_guard();
            for replica in &mut self.replicas[..jobs.len()] {
                for ((_, p), v) in self.master.iter().zip(&mut replica.vars) {
                    v.copy_(p);
                    v.zero_grad();
                }
            }
        }
        let shard = &shard;
        let caller_threads = tch::get_num_threads();
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(jobs)
                .map(|(replica, job)| {
                    scope.spawn(move || {
                        // Per OS thread in libtorch (OpenMP): the caller's own count stays.
                        tch::set_num_threads(1);
                        shard(&replica.model, job)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a model replica's thread panicked")))
                })
                .collect()
        });
        // The workers' count is per thread, but libtorch also keeps it as the default of
        // threads that start later (the sampler's): restore the caller's.
        tch::set_num_threads(caller_threads);
        results
    }

    /// Adds the gradients of the first `used` replicas (summed in replica order) to the
    /// master's. A variable no replica got a gradient for (a block skipped by depth dropout)
    /// keeps its master gradient as it was, as after a serial backward.
    pub fn add_grads_to_master(&self, used: usize) {
        for (i, (_, p)) in self.master.iter().enumerate() {
            if !p.requires_grad() {
                continue;
            }
            let mut sum: Option<Tensor> = None;
            for replica in &self.replicas[..used] {
                let g = replica.vars[i].grad();
                if g.defined() {
                    sum = Some(match sum {
                        None => g.copy(),
                        Some(s) => s + g,
                    });
                }
            }
            if let Some(sum) = sum {
                add_to_grad(p, &sum);
            }
        }
    }
}

/// `p.grad += g`. tch cannot assign a gradient that does not exist yet; a backward of
/// `sum(p * g)` creates it with exactly `g` (its derivative is `1 * g`).
fn add_to_grad(p: &Tensor, g: &Tensor) {
    let mut grad = p.grad();
    if grad.defined() {
        let _guard = tch::no_grad_guard();
        let _ = grad.g_add_(g);
    } else {
        tch::with_grad(|| (p * g.detach()).sum(p.kind()).backward());
    }
}

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

impl Replicas<ActorCritic> {
    /// [`PpoMinibatch::backward`] split over the replicas: the same depth-dropout draw from
    /// `master` and the same advantage standardisation, then each shard of
    /// `minibatch`'s sequences backpropagates `share * loss / grad_accum`, where `share` is
    /// its part of the minibatch's steps, and the summed gradients go into the master's
    /// `.grad` when every shard's loss is finite. Returns the minibatch's loss: the
    /// share-weighted sums of the shards' (the mean over the whole minibatch up to rounding).
    pub fn ppo_backward(
        &mut self,
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
        let shards = (n as usize).min(self.len()) as i64;
        let mut jobs = Vec::with_capacity(shards as usize);
        let mut start = 0;
        for s in 0..shards {
            let len = n / shards + i64::from(s < n % shards);
            let mut part = minibatch.rows(start, len);
            part.advantages = advantages.narrow(0, start, len);
            jobs.push((part, len as f64 / n as f64));
            start += len;
        }
        let kept = &kept;
        let losses = self.run(jobs, |model, (part, share)| {
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
            self.add_grads_to_master(shards as usize);
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
}
