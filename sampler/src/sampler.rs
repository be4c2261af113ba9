//! The sampler: env shards on worker threads, batched inference, trials, streaming into
//! storage.

use crate::config::{SamplerConfig, SamplerMode};
use crate::ensure_invalid;
use crate::policy::{Policy, PolicyOutput, SlotStreams};
use crate::storage::{RawStorage, RolloutStorage};
use crate::worker::{
    build_shard, panic_message, recv_spin, worker_main, Cmd, EpisodeStats, Reply, Shard,
    ShardReport, SPIN, START_LANE,
};
use crate::SamplerError;
use anyhow::Result;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use envs::{EnvConfig, EnvSpec, Split, TaskId};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::worker::ShardBuilder;

/// What one [`Sampler::collect`] call did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectStats {
    /// Steps per slot.
    pub steps: usize,
    /// Env steps in total (`steps * B`).
    pub env_steps: usize,
    /// Episodes that ended, ordered by (end step, slot).
    pub episodes: Vec<EpisodeStats>,
    /// Wall-clock seconds of the call.
    pub seconds: f64,
    /// Seconds the calling thread spent in `Policy::act` (inference, including the policy's
    /// own host/device transfers).
    pub inference_seconds: f64,
    /// Seconds the calling thread spent stepping its own shard or waiting for the workers to
    /// step theirs (includes their storage writes; in `DoubleBuffered` mode only the part not
    /// hidden behind inference).
    pub env_seconds: f64,
    /// Seconds the calling thread spent copying staged columns to device storage (0 for CPU
    /// storage, which the workers write directly).
    pub transfer_seconds: f64,
    /// Seconds inside `VecEnv::step`, summed over shards.
    pub shard_env_seconds: f64,
    /// Seconds writing storage and bookkeeping, summed over shards.
    pub shard_write_seconds: f64,
}

impl CollectStats {
    /// Env steps per second of wall-clock time.
    pub fn steps_per_sec(&self) -> f64 {
        self.env_steps as f64 / self.seconds.max(1e-12)
    }

    /// Adds another call's numbers to these.
    pub fn merge(&mut self, other: &CollectStats) {
        self.steps += other.steps;
        self.env_steps += other.env_steps;
        self.episodes.extend(other.episodes.iter().cloned());
        self.seconds += other.seconds;
        self.inference_seconds += other.inference_seconds;
        self.env_seconds += other.env_seconds;
        self.transfer_seconds += other.transfer_seconds;
        self.shard_env_seconds += other.shard_env_seconds;
        self.shard_write_seconds += other.shard_write_seconds;
    }

    fn add_report(&mut self, r: ShardReport) -> Vec<(usize, SlotStreams)> {
        self.shard_env_seconds += r.env_secs;
        self.shard_write_seconds += r.write_secs;
        self.episodes.extend(r.episodes);
        r.streams
    }
}

/// A worker thread and its command channel.
struct Worker {
    tx: Option<Sender<Cmd>>,
    handle: Option<JoinHandle<()>>,
    /// Commands sent and not answered yet, per lane (act group 0, 1, start).
    inflight: [usize; 3],
}

/// Source of unique trial stamps (storage <-> sampler consistency).
static NEXT_TRIAL: AtomicU64 = AtomicU64::new(1);

/// Where the workers write, and the column mapping from staging to storage.
struct Target {
    raw: RawStorage,
    /// Staged: outcome column 0 and token column 1 of a `T = 1` staging storage.
    staged: bool,
}

/// Parallel rollout workers streaming multi-episode trials into [`RolloutStorage`].
///
/// The batch of `B` env slots is split into shards (one `VecEnv` each, built with
/// `EnvConfig::build(seed, first_slot, count)` on its worker thread). In `Sync` mode the
/// calling thread steps shard 0 itself and `threads - 1` threads step the others; in
/// `DoubleBuffered` mode the batch has two act groups (halves), each split over all `threads`
/// worker threads, and the policy infers on one half while the workers step the other.
pub struct Sampler {
    spec: EnvSpec,
    seed: u64,
    num_envs: usize,
    mode: SamplerMode,
    groups: Vec<Range<usize>>,
    inline: Option<Shard>,
    workers: Vec<Worker>,
    replies: Receiver<Reply>,
    /// Task lists of Train, Validation, Test (in [`Split::ALL`] order).
    tasks: [Vec<TaskId>; 3],
    /// Next column to act on (= storage.len of the current trial).
    col: usize,
    trial: u64,
    /// CPU staging columns for device storage (`T = 1`), built on first use.
    staging: Option<RolloutStorage>,
    /// The fault that stopped the sampler.
    fault: Option<SamplerError>,
    /// An aborted collect left halves at different columns: start_trials must run first.
    needs_restart: bool,
    /// Route CPU storage through the staging columns too (tests of the device path).
    force_staging: bool,
    /// Each worker's shards (one per act group).
    worker_shards: Vec<Vec<Range<usize>>>,
    /// Random streams handed back by workers after a local run.
    returned_streams: Vec<(usize, SlotStreams)>,
}

/// Act groups, the inline shard's slots (Sync mode) and each worker's shards (one per group).
type Layout = (
    Vec<Range<usize>>,
    Option<Range<usize>>,
    Vec<Vec<Range<usize>>>,
);

/// Splits `range` into `k` contiguous parts whose sizes differ by at most one.
fn split_range(range: Range<usize>, k: usize) -> Vec<Range<usize>> {
    let n = range.len();
    let k = k.clamp(1, n.max(1));
    let mut out = Vec::with_capacity(k);
    let mut start = range.start;
    for i in 0..k {
        let len = n / k + usize::from(i < n % k);
        out.push(start..start + len);
        start += len;
    }
    out
}

impl Sampler {
    /// A sampler for `num_envs` slots of `env`, seeded by `seed`: shards built with
    /// [`EnvConfig::build`]`(seed, first_slot, count)` per worker thread.
    pub fn new(env: &EnvConfig, cfg: &SamplerConfig, num_envs: usize, seed: u64) -> Result<Self> {
        let errs = env.validate();
        ensure_invalid!(
            errs.is_empty(),
            "invalid environment config: {}",
            errs.iter()
                .map(|(p, m)| format!("{p}: {m}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let env = env.clone();
        let name = env.name();
        let build: Arc<ShardBuilder> = Arc::new(move |first, count| env.build(seed, first, count));
        Self::with_builder(build, cfg, num_envs, seed)
            .map_err(|e| e.context(format!("starting the sampler for '{name}'")))
    }

    /// A sampler whose shards come from `build(first_slot, count)` (custom or test
    /// environments); every shard must have the same spec.
    pub fn with_builder(
        build: Arc<ShardBuilder>,
        cfg: &SamplerConfig,
        num_envs: usize,
        seed: u64,
    ) -> Result<Self> {
        let errs = cfg.validate();
        ensure_invalid!(
            errs.is_empty(),
            "invalid sampler config: {}",
            errs.iter()
                .map(|(p, m)| format!("sampler.{p}: {m}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        ensure_invalid!(num_envs >= 1, "the sampler needs at least 1 env slot");
        let threads = cfg.resolved_threads();
        let (groups, inline_range, plans): Layout = match cfg.mode {
            SamplerMode::Sync => {
                let shards = split_range(0..num_envs, threads);
                let plans = shards[1..].iter().map(|r| vec![r.clone()]).collect();
                (
                    vec![Range {
                        start: 0,
                        end: num_envs,
                    }],
                    Some(shards[0].clone()),
                    plans,
                )
            }
            SamplerMode::DoubleBuffered => {
                ensure_invalid!(
                    num_envs >= 2,
                    "DoubleBuffered mode needs at least 2 env slots (two halves), got {num_envs}"
                );
                let half = num_envs / 2;
                let (h0, h1) = (0..half, half..num_envs);
                let k = threads.min(half);
                let (s0, s1) = (split_range(h0.clone(), k), split_range(h1.clone(), k));
                let plans = s0.into_iter().zip(s1).map(|(a, b)| vec![a, b]).collect();
                (vec![h0, h1], None, plans)
            }
        };

        let (reply_tx, replies) = crossbeam_channel::unbounded::<Reply>();
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let mut workers = Vec::with_capacity(plans.len());
        let mut spawn_error = None;
        for (w, plan) in plans.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded::<Cmd>();
            let plan: Vec<(usize, usize)> = plan.iter().map(|r| (r.start, r.len())).collect();
            let (build, ready, replies) = (build.clone(), ready_tx.clone(), reply_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("sampler-{w}"))
                .spawn(move || worker_main(w, plan, seed, build, ready, rx, replies));
            match spawned {
                Ok(handle) => workers.push(Worker {
                    tx: Some(tx),
                    handle: Some(handle),
                    inflight: [0; 3],
                }),
                Err(e) => {
                    spawn_error = Some(format!("spawning worker thread {w}: {e}"));
                    break;
                }
            }
        }
        drop((ready_tx, reply_tx));
        let mut sampler = Sampler {
            spec: EnvSpec {
                name: String::new(),
                num_actions: 0,
                vector_dim: 0,
                vector_segments: Vec::new(),
                image: None,
                horizon: 0,
                has_success: false,
            },
            seed,
            num_envs,
            mode: cfg.mode,
            groups,
            inline: None,
            workers,
            replies,
            tasks: Default::default(),
            col: 0,
            trial: 0,
            staging: None,
            fault: None,
            needs_restart: true,
            force_staging: false,
            worker_shards: plans,
            returned_streams: Vec::new(),
        };
        if let Some(e) = spawn_error {
            sampler.shutdown();
            return Err(anyhow::Error::new(SamplerError::Invalid(e)));
        }
        // The inline shard is built here while the workers build theirs.
        let mut specs: Vec<EnvSpec> = Vec::new();
        let mut first_error: Option<SamplerError> = None;
        let mut tasks = None;
        if let Some(r) = inline_range {
            match build_shard(build.as_ref(), r.start, r.len(), seed) {
                Ok(shard) => {
                    specs.push(shard.spec().clone());
                    sampler.inline = Some(shard);
                }
                Err(e) => first_error = Some(e),
            }
        }
        for _ in 0..sampler.workers.len() {
            match ready_rx.recv() {
                Ok((_, Ok(s))) => specs.extend(s),
                Ok((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(SamplerError::Invalid(
                        "a worker thread exited while building its envs".into(),
                    ));
                    break;
                }
            }
        }
        if first_error.is_none() {
            // Task lists come from a separate single-slot env (cheap; never stepped).
            match build_shard(build.as_ref(), 0, 1, seed) {
                Ok(s) => tasks = Some(Split::ALL.map(|split| s.env_tasks(split))),
                Err(e) => first_error = Some(e),
            }
        }
        if let Some(e) = first_error {
            sampler.shutdown();
            return Err(anyhow::Error::new(e));
        }
        let spec = specs[0].clone();
        if let Some(other) = specs.iter().find(|s| **s != spec) {
            sampler.shutdown();
            return Err(anyhow::Error::new(SamplerError::Invalid(format!(
                "env shards disagree on their spec: {spec:?} vs {other:?}"
            ))));
        }
        if spec.num_actions == 0 || spec.num_actions > u32::MAX as usize {
            sampler.shutdown();
            return Err(anyhow::Error::new(SamplerError::Invalid(format!(
                "env '{}' has {} actions",
                spec.name, spec.num_actions
            ))));
        }
        sampler.spec = spec;
        if let Some(tasks) = tasks {
            sampler.tasks = tasks;
        }
        Ok(sampler)
    }

    /// What each slot observes and how it acts.
    pub fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    /// Number of env slots `B`.
    pub fn num_envs(&self) -> usize {
        self.num_envs
    }

    /// The scheduling mode.
    pub fn mode(&self) -> SamplerMode {
        self.mode
    }

    /// The seed the envs were built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Worker threads besides the calling thread (`Sync`: shards - 1; `DoubleBuffered`: all).
    pub fn worker_threads(&self) -> usize {
        self.workers.len()
    }

    /// Worker threads still running (0 after a fault or [`Sampler::shutdown`]).
    pub fn alive_threads(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.handle.as_ref().is_some_and(|h| !h.is_finished()))
            .count()
    }

    /// The env rows `Policy::act` is called with: `[0..B]` in `Sync` mode, the two halves in
    /// `DoubleBuffered` mode. A policy with per-group state (e.g. [`crate::ModelPolicy`]'s
    /// caches) is built from these.
    pub fn act_groups(&self) -> Vec<Range<usize>> {
        self.groups.clone()
    }

    /// The task list of a split (fixed, from the environment).
    pub fn tasks(&self, split: Split) -> &[TaskId] {
        let [train, validation, test] = &self.tasks;
        match split {
            Split::Train => train,
            Split::Validation => validation,
            Split::Test => test,
        }
    }

    /// Draws one task per slot uniformly (with replacement) from `split`, slots in order.
    pub fn sample_tasks<R: rand::Rng + ?Sized>(
        &self,
        split: Split,
        rng: &mut R,
    ) -> Result<Vec<TaskId>> {
        self.sample_tasks_in(&[split], rng)
    }

    /// Draws one task per slot uniformly (with replacement) from the tasks of `splits` together
    /// (e.g. Train and Validation, the papers' whole training part), slots in order. With one
    /// split it draws exactly what [`Sampler::sample_tasks`] draws.
    pub fn sample_tasks_in<R: rand::Rng + ?Sized>(
        &self,
        splits: &[Split],
        rng: &mut R,
    ) -> Result<Vec<TaskId>> {
        let tasks: Vec<TaskId> = splits
            .iter()
            .flat_map(|&s| self.tasks(s).iter().copied())
            .collect();
        ensure_invalid!(
            !tasks.is_empty(),
            "environment '{}' has no {splits:?} tasks",
            self.spec.name
        );
        Ok((0..self.num_envs)
            .map(|_| tasks[rng.random_range(0..tasks.len())])
            .collect())
    }

    /// Test hook: write CPU storage through the staging columns used for device storage, so
    /// the device path is exercised without a GPU. Takes effect at the next `start_trials`.
    #[doc(hidden)]
    pub fn force_staging(&mut self, on: bool) {
        self.force_staging = on;
    }

    /// The fault that stopped the sampler, if any.
    pub fn fault(&self) -> Option<&SamplerError> {
        self.fault.as_ref()
    }

    fn check_alive(&self) -> Result<()> {
        match &self.fault {
            Some(SamplerError::Stopped(s)) => {
                Err(anyhow::Error::new(SamplerError::Stopped(s.clone())))
            }
            Some(f) => Err(anyhow::Error::new(SamplerError::Stopped(f.to_string()))),
            None => Ok(()),
        }
    }

    /// Checks that `storage` was made for this sampler's batch and spec.
    fn check_storage(&self, storage: &RolloutStorage) -> Result<()> {
        ensure_invalid!(
            storage.num_envs() == self.num_envs,
            "storage has {} env rows, the sampler {} slots",
            storage.num_envs(),
            self.num_envs
        );
        ensure_invalid!(
            storage.vector_dim() == self.spec.vector_dim && storage.image_spec() == self.spec.image,
            "storage was made for observations (vector {}, image {:?}), the env has (vector {}, image {:?})",
            storage.vector_dim(),
            storage.image_spec(),
            self.spec.vector_dim,
            self.spec.image
        );
        Ok(())
    }

    /// Where workers write for `storage`: its own memory on the CPU, else CPU staging columns.
    fn target(&mut self, storage: &mut RolloutStorage) -> Result<Target> {
        if storage.device() == tch::Device::Cpu && !self.force_staging {
            return Ok(Target {
                raw: storage.raw()?,
                staged: false,
            });
        }
        let fits = self
            .staging
            .as_ref()
            .is_some_and(|s| s.has_next_obs() == storage.has_next_obs());
        if !fits {
            let cpu = tch::Device::Cpu;
            self.staging = Some(if storage.has_next_obs() {
                RolloutStorage::with_next_obs(&self.spec, self.num_envs, 1, cpu)?
            } else {
                RolloutStorage::new(&self.spec, self.num_envs, 1, cpu)?
            });
        }
        let staging = self.staging.as_mut().ok_or_else(|| {
            anyhow::Error::new(SamplerError::Invalid("no staging storage".into()))
        })?;
        Ok(Target {
            raw: staging.raw()?,
            staged: true,
        })
    }

    /// Start a new trial in every slot on the given tasks (one per slot): set tasks, start new
    /// episodes, clear storage (`len = 0`), write token column 0.
    pub fn start_trials(&mut self, tasks: &[TaskId], storage: &mut RolloutStorage) -> Result<()> {
        self.check_alive()?;
        self.check_storage(storage)?;
        ensure_invalid!(
            tasks.len() == self.num_envs,
            "start_trials: got {} tasks for {} env slots",
            tasks.len(),
            self.num_envs
        );
        self.needs_restart = true;
        storage.trial = 0;
        let target = self.target(storage)?;
        let tasks_arc = Arc::new(tasks.to_vec());
        for w in 0..self.workers.len() {
            self.send(
                w,
                START_LANE,
                Cmd::Start {
                    tasks: tasks_arc.clone(),
                    target: target.raw,
                    col: 0,
                },
            );
        }
        let mut first_error = None;
        if let Some(shard) = self.inline.as_mut() {
            if let Err(e) = shard.guarded("starting a trial", |s| s.start(tasks, &target.raw, 0)) {
                first_error = Some(e);
            }
        }
        let mut sink = CollectStats::default();
        if let Err(e) = self.wait_lane(START_LANE, &mut sink) {
            first_error.get_or_insert(e);
        }
        if let Some(e) = first_error {
            return Err(self.fail(e));
        }
        if target.staged {
            if let Some(staging) = &self.staging {
                staging.copy_columns_to(storage, 0..self.num_envs, 0, 0, None)?;
            }
        }
        let stamp = NEXT_TRIAL.fetch_add(1, Ordering::Relaxed);
        self.trial = stamp;
        self.col = 0;
        self.needs_restart = false;
        storage.trial = stamp;
        storage.len = 0;
        storage.tasks = tasks.to_vec();
        Ok(())
    }

    /// Run `steps` more steps (`storage.len + steps <= T`): act on column `len`, step the envs
    /// in parallel, write outcomes at `len` and the next token at `len + 1`. Can be called
    /// again after the trainer paused to update the policy and refresh its cache: nothing is
    /// lost or repeated.
    ///
    /// On an env fault the sampler stops its threads and returns the fault. If the policy
    /// fails, `Sync` mode stops cleanly at the step boundary (`storage.len` counts the steps
    /// done, and collect may be called again); in `DoubleBuffered` mode the halves may be one
    /// step apart, so the trial must be restarted with [`Sampler::start_trials`].
    pub fn collect(
        &mut self,
        policy: &mut dyn Policy,
        storage: &mut RolloutStorage,
        steps: usize,
    ) -> Result<CollectStats> {
        let started = Instant::now();
        self.check_alive()?;
        self.check_storage(storage)?;
        ensure_invalid!(
            !self.needs_restart && self.trial != 0,
            "collect: no trial is running; call start_trials first"
        );
        ensure_invalid!(
            storage.trial == self.trial && storage.len == self.col,
            "collect: this storage does not hold the sampler's current trial (storage len {}, sampler at step {}); call start_trials",
            storage.len,
            self.col
        );
        ensure_invalid!(
            storage.len + steps <= storage.rollout_len(),
            "collect: {steps} steps from step {} exceed the rollout length {}",
            storage.len,
            storage.rollout_len()
        );
        let mut stats = CollectStats::default();
        if steps > 0 {
            let target = self.target(storage)?;
            let local = !target.staged
                && policy.uniform_streams().is_some_and(|(k, st)| {
                    k as usize == self.spec.num_actions && st.len() == self.num_envs
                });
            let result = if local {
                self.run_local(policy, storage, &target, steps, &mut stats)
            } else {
                match self.mode {
                    SamplerMode::Sync => self.run_sync(policy, storage, &target, steps, &mut stats),
                    SamplerMode::DoubleBuffered => {
                        self.run_double(policy, storage, &target, steps, &mut stats)
                    }
                }
            };
            // Whatever happened, no command may still be in flight when we return.
            let drained = self.drain(&mut stats);
            if let Err(e) = result.and(drained) {
                return Err(self.fail(e));
            }
        }
        stats.steps = steps;
        stats.env_steps = steps * self.num_envs;
        stats.episodes.sort_by_key(|e| (e.end_step, e.slot));
        stats.seconds = started.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Calls the policy for act group `g` at column `t`, checking its output.
    fn act(
        &self,
        policy: &mut dyn Policy,
        storage: &RolloutStorage,
        g: usize,
        t: usize,
        stats: &mut CollectStats,
    ) -> Result<Arc<PolicyOutput>, SamplerError> {
        let rows = self.groups[g].clone();
        let t0 = Instant::now();
        let out = catch_unwind(AssertUnwindSafe(|| policy.act(storage, t, rows.clone())));
        stats.inference_seconds += t0.elapsed().as_secs_f64();
        let out = match out {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                return Err(SamplerError::Invalid(format!(
                    "policy failed at step {t} for slots {rows:?}: {e:#}"
                )))
            }
            Err(p) => {
                return Err(SamplerError::Invalid(format!(
                    "policy panicked at step {t} for slots {rows:?}: {}",
                    panic_message(p.as_ref())
                )))
            }
        };
        let n = rows.len();
        if out.actions.len() != n || out.logprob.len() != n || out.value.len() != n {
            return Err(SamplerError::Invalid(format!(
                "policy returned {} actions, {} log-probs and {} values for {n} slots {rows:?}",
                out.actions.len(),
                out.logprob.len(),
                out.value.len()
            )));
        }
        let k = self.spec.num_actions as u32;
        if let Some(i) = out.actions.iter().position(|&a| a >= k) {
            return Err(SamplerError::Invalid(format!(
                "policy chose action {} for slot {} at step {t}; '{}' has actions 0..{k}",
                out.actions[i],
                rows.start + i,
                self.spec.name
            )));
        }
        Ok(Arc::new(out))
    }

    /// Sends a step of act group `g` at column `c` to every worker (and, in `Sync` mode,
    /// steps the inline shard).
    fn dispatch(
        &mut self,
        g: usize,
        c: usize,
        out: &Arc<PolicyOutput>,
        target: &Target,
        stats: &mut CollectStats,
    ) -> Result<(), SamplerError> {
        let (out_col, tok_col) = if target.staged { (0, 1) } else { (c, c + 1) };
        let group_start = self.groups[g].start;
        for w in 0..self.workers.len() {
            self.send(
                w,
                g,
                Cmd::Step {
                    group: g,
                    out: out.clone(),
                    group_start,
                    target: target.raw,
                    out_col,
                    tok_col,
                    step_col: c,
                },
            );
        }
        if let Some(shard) = self.inline.as_mut() {
            let off = shard.slots().start - group_start;
            let r = shard.guarded(&format!("stepping at column {c}"), |s| {
                s.step(out, off, &target.raw, out_col, tok_col, c)
            })?;
            let _ = stats.add_report(r);
        }
        Ok(())
    }

    /// After act group `g` finished its step at column `c`: copy staged columns to storage.
    fn copy_staged(
        &self,
        g: usize,
        c: usize,
        storage: &RolloutStorage,
        target: &Target,
        stats: &mut CollectStats,
    ) -> Result<(), SamplerError> {
        if !target.staged {
            return Ok(());
        }
        let t0 = Instant::now();
        if let Some(staging) = &self.staging {
            staging
                .copy_columns_to(storage, self.groups[g].clone(), 1, c + 1, Some((0, c)))
                .map_err(|e| {
                    SamplerError::Invalid(format!("copying step {c} to device storage: {e:#}"))
                })?;
        }
        stats.transfer_seconds += t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// Every shard runs all `steps` on its own, drawing uniform actions from the policy's
    /// per-slot streams (see [`Policy::uniform_streams`]): no per-step synchronisation.
    fn run_local(
        &mut self,
        policy: &mut dyn Policy,
        storage: &mut RolloutStorage,
        target: &Target,
        steps: usize,
        stats: &mut CollectStats,
    ) -> Result<(), SamplerError> {
        let Some((k, streams)) = policy.uniform_streams() else {
            return Err(SamplerError::Invalid(
                "policy has no uniform streams".into(),
            ));
        };
        let c0 = self.col;
        self.needs_restart = true;
        self.returned_streams.clear();
        let t0 = Instant::now();
        for w in 0..self.workers.len() {
            let parts = self.worker_shards[w]
                .iter()
                .map(|r| streams.extract(r.clone()))
                .collect();
            self.send(
                w,
                START_LANE,
                Cmd::RunLocal {
                    steps,
                    col0: c0,
                    num_actions: k,
                    streams: parts,
                    target: target.raw,
                },
            );
        }
        let mut first = None;
        if let Some(shard) = self.inline.as_mut() {
            let range = shard.slots();
            let mut part = streams.extract(range.clone());
            let r = shard.guarded(&format!("running steps {c0}..{}", c0 + steps), |s| {
                s.run_local(steps, c0, k, &mut part, &target.raw)
            });
            match r {
                Ok(r) => {
                    let _ = stats.add_report(r);
                    streams.absorb(range.start, &part);
                }
                Err(e) => first = Some(e),
            }
        }
        let waited = self.wait_lane(START_LANE, stats);
        stats.env_seconds += t0.elapsed().as_secs_f64();
        for (start, part) in self.returned_streams.drain(..) {
            streams.absorb(start, &part);
        }
        if let Some(e) = first {
            return Err(e);
        }
        waited?;
        self.col = c0 + steps;
        storage.len = self.col;
        self.needs_restart = false;
        Ok(())
    }

    fn run_sync(
        &mut self,
        policy: &mut dyn Policy,
        storage: &mut RolloutStorage,
        target: &Target,
        steps: usize,
        stats: &mut CollectStats,
    ) -> Result<(), SamplerError> {
        for _ in 0..steps {
            let c = self.col;
            let out = self.act(policy, storage, 0, c, stats)?;
            let t0 = Instant::now();
            let stepped = self.dispatch(0, c, &out, target, stats);
            let waited = self.wait_lane(0, stats);
            stats.env_seconds += t0.elapsed().as_secs_f64();
            stepped?;
            waited?;
            self.copy_staged(0, c, storage, target, stats)?;
            self.col = c + 1;
            storage.len = self.col;
        }
        Ok(())
    }

    fn run_double(
        &mut self,
        policy: &mut dyn Policy,
        storage: &mut RolloutStorage,
        target: &Target,
        steps: usize,
        stats: &mut CollectStats,
    ) -> Result<(), SamplerError> {
        // From here until both halves are at the same column again, an error leaves them
        // apart: the trial must be restarted.
        self.needs_restart = true;
        let c0 = self.col;
        let out0 = self.act(policy, storage, 0, c0, stats)?;
        self.dispatch(0, c0, &out0, target, stats)?;
        for k in 0..steps {
            let c = c0 + k;
            // Infer on half 1 while the workers step half 0.
            let out1 = self.act(policy, storage, 1, c, stats)?;
            self.dispatch(1, c, &out1, target, stats)?;
            let t0 = Instant::now();
            let waited = self.wait_lane(0, stats);
            stats.env_seconds += t0.elapsed().as_secs_f64();
            waited?;
            self.copy_staged(0, c, storage, target, stats)?;
            if k + 1 < steps {
                // Infer on half 0's next token while the workers step half 1.
                let out0 = self.act(policy, storage, 0, c + 1, stats)?;
                self.dispatch(0, c + 1, &out0, target, stats)?;
            }
            let t0 = Instant::now();
            let waited = self.wait_lane(1, stats);
            stats.env_seconds += t0.elapsed().as_secs_f64();
            waited?;
            self.copy_staged(1, c, storage, target, stats)?;
            self.col = c + 1;
            storage.len = self.col;
        }
        self.needs_restart = false;
        Ok(())
    }

    /// Sends `cmd` to worker `w` on `lane`. A closed channel is noticed by `wait_lane`.
    fn send(&mut self, w: usize, lane: usize, cmd: Cmd) {
        let worker = &mut self.workers[w];
        if let Some(tx) = &worker.tx {
            if tx.send(cmd).is_ok() {
                worker.inflight[lane] += 1;
            }
        }
    }

    /// Waits until no command of `lane` is in flight; returns the first error among the
    /// replies. Notices a worker thread that died without answering.
    fn wait_lane(&mut self, lane: usize, stats: &mut CollectStats) -> Result<(), SamplerError> {
        let mut first_error = None;
        while self.workers.iter().any(|w| w.inflight[lane] > 0) {
            match recv_spin(&self.replies, SPIN, Duration::from_millis(50)) {
                Ok(reply) => {
                    if let Some(w) = self.workers.get_mut(reply.worker) {
                        w.inflight[reply.lane] = w.inflight[reply.lane].saturating_sub(1);
                    }
                    match reply.result {
                        Ok(r) => self.returned_streams.extend(stats.add_report(r)),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    // A worker whose thread ended can never answer: count its commands lost.
                    for (i, w) in self.workers.iter_mut().enumerate() {
                        let dead = w.handle.as_ref().is_none_or(|h| h.is_finished());
                        if dead && w.inflight.iter().any(|&n| n > 0) {
                            w.inflight = [0; 3];
                            first_error.get_or_insert(SamplerError::EnvFault {
                                env: self.spec.name.clone(),
                                seed: self.seed,
                                slots: format!("worker thread {i}"),
                                tasks: "its tasks".into(),
                                cause: "the worker thread exited without answering".into(),
                            });
                        }
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for every command in flight, on all lanes.
    fn drain(&mut self, stats: &mut CollectStats) -> Result<(), SamplerError> {
        let mut first = None;
        for lane in 0..3 {
            if let Err(e) = self.wait_lane(lane, stats) {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Records an error: an env fault stops the sampler (threads joined), anything else
    /// leaves it usable.
    fn fail(&mut self, e: SamplerError) -> anyhow::Error {
        if matches!(e, SamplerError::EnvFault { .. }) {
            self.fault = Some(e.clone());
            self.shutdown();
        }
        anyhow::Error::new(e)
    }

    /// Stops and joins every worker thread (also done on drop). Later calls error.
    pub fn shutdown(&mut self) {
        for w in &mut self.workers {
            w.tx = None;
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
            w.inflight = [0; 3];
        }
        if self.fault.is_none() {
            self.fault = Some(SamplerError::Stopped("the sampler was shut down".into()));
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.shutdown();
    }
}
