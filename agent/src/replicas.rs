//! Data-parallel model replicas for one batch's gradient.
//!
//! A batch's sequences are split into R shards; each shard runs forward and backward on its
//! own copy of the model, in its own OS thread with one libtorch intra-op thread, and the
//! shards' gradients are summed (in replica order) into the master parameters' `.grad`,
//! where the caller clips them and takes one optimiser step as usual. The models trained
//! here are tiny (ReLIC's: 2 layers, width 64), so a second libtorch intra-op thread buys
//! little on one forward while independent shards keep every core busy.
//!
//! This is the machinery ([`Replicas::run`], [`Replicas::add_grads_to_master`]); the
//! trainer's `runtime.update_replicas` uses it for ReLIC's PPO minibatches and DPT's batches
//! (`trainer::replicas`), and `icrl bench model --replicas R` for the training benchmark.

use anyhow::{anyhow, ensure, Context, Result};
use tch::nn::VarStore;
use tch::Tensor;

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

    /// How a batch of `n` rows is split: `(start, len)` of each shard, at most one shard per
    /// replica and per row, the first `n % shards` shards one row longer.
    pub fn shards(&self, n: i64) -> Vec<(i64, i64)> {
        let shards = n.clamp(1, self.replicas.len() as i64);
        let mut start = 0;
        (0..shards)
            .map(|s| {
                let len = n / shards + i64::from(s < n % shards);
                start += len;
                (start - len, len)
            })
            .collect()
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
