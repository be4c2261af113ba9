//! Env shards and the worker threads that own them.
//!
//! A [`Shard`] is a contiguous block of env slots (one `VecEnv`) with its per-slot trial
//! bookkeeping. Stepping a shard writes its rows of the step's columns straight into the
//! storage memory ([`RawStorage`]); shards own disjoint rows, so workers never contend.

use crate::policy::{uniform_logprob, PolicyOutput, SlotStreams};
use crate::storage::RawStorage;
use crate::SamplerError;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use envs::{EnvError, EnvSpec, ObsBatch, StepBatch, TaskId, VecEnv};
use std::any::Any;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One episode that ended during [`crate::Sampler::collect`].
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeStats {
    /// Env slot (row of the storage).
    pub slot: usize,
    /// The slot's task.
    pub task: TaskId,
    /// Episode index within the trial (0 = first).
    pub episode_index: usize,
    /// Undiscounted return.
    pub ret: f64,
    /// Steps in the episode.
    pub length: usize,
    /// The episode ended in success (meaningful when the env spec's `has_success`).
    pub success: bool,
    /// The episode ended by termination (else by truncation).
    pub terminated: bool,
    /// Storage column of the episode's last step.
    pub end_step: usize,
}

/// Builds the env slots `[first, first + count)` of the batch (see `envs::EnvConfig::build`).
pub type ShardBuilder =
    dyn Fn(usize, usize) -> Result<Box<dyn VecEnv>, EnvError> + Send + Sync + 'static;

/// What a shard reports after a command.
#[derive(Debug, Default)]
pub(crate) struct ShardReport {
    /// Episodes that ended during the command.
    pub episodes: Vec<EpisodeStats>,
    /// Seconds inside `VecEnv::step` (or set_task / observe).
    pub env_secs: f64,
    /// Seconds writing storage and bookkeeping.
    pub write_secs: f64,
    /// After a local run: each shard's first slot and its random streams' new state.
    pub streams: Vec<(usize, SlotStreams)>,
}

/// How long a waiting thread spins (then yields) before it blocks. Blocking and waking a
/// thread costs tens of microseconds on a VM (an inter-processor interrupt), far more than
/// one env step of a whole shard, so the per-step handoffs between the calling thread and the
/// workers spin briefly instead.
pub(crate) const SPIN: Duration = Duration::from_micros(100);

/// Receives from `rx`, spinning (then yielding) for up to `spin` before blocking for up to
/// `block` more.
pub(crate) fn recv_spin<T>(
    rx: &Receiver<T>,
    spin: Duration,
    block: Duration,
) -> Result<T, RecvTimeoutError> {
    let start = Instant::now();
    let mut round = 0u32;
    loop {
        match rx.try_recv() {
            Ok(x) => return Ok(x),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        round += 1;
        if round < 64 {
            for _ in 0..(1u32 << (round / 8)) {
                std::hint::spin_loop();
            }
        } else if start.elapsed() < spin {
            std::thread::yield_now();
        } else {
            return rx.recv_timeout(block);
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// A compact list of tasks: all of them up to 8, else the first 8 and a count.
fn task_list(tasks: &[TaskId]) -> String {
    if tasks.len() <= 8 {
        format!("{tasks:?}")
    } else {
        format!("{:?} and {} more", &tasks[..8], tasks.len() - 8)
    }
}

/// A block of env slots `[first, first + n)` with its trial bookkeeping.
pub(crate) struct Shard {
    env: Box<dyn VecEnv>,
    first: usize,
    n: usize,
    seed: u64,
    name: String,
    vdim: usize,
    img: usize,
    batch: StepBatch,
    obs: ObsBatch,
    /// Episode index within the trial, per local slot.
    episode: Vec<i32>,
    /// Step within the current episode, per local slot.
    step: Vec<i32>,
    /// Return of the current episode so far, per local slot.
    ret: Vec<f64>,
    /// Task per local slot (as set by the last start).
    tasks: Vec<TaskId>,
    /// Set once the env panicked or failed: the shard is not used again.
    failed: bool,
}

impl Shard {
    /// Wraps a built env holding global slots `[first, first + env.num_envs())`.
    pub(crate) fn new(env: Box<dyn VecEnv>, first: usize, seed: u64) -> Shard {
        let spec = env.spec().clone();
        let n = env.num_envs();
        let tasks = (0..n).map(|i| env.task(i).unwrap_or(0)).collect();
        Shard {
            first,
            n,
            seed,
            name: spec.name.clone(),
            vdim: spec.vector_dim,
            img: spec.image_bytes(),
            batch: StepBatch::new(&spec, n),
            obs: ObsBatch::new(&spec, n),
            episode: vec![0; n],
            step: vec![0; n],
            ret: vec![0.0; n],
            tasks,
            failed: false,
            env,
        }
    }

    /// The env's spec.
    pub(crate) fn spec(&self) -> &EnvSpec {
        self.env.spec()
    }

    /// The env's task list of a split.
    pub(crate) fn env_tasks(&self, split: envs::Split) -> Vec<TaskId> {
        self.env.tasks(split)
    }

    /// The global slots of this shard.
    pub(crate) fn slots(&self) -> std::ops::Range<usize> {
        self.first..self.first + self.n
    }

    /// A fault of this shard: local slot `slot` when known, else the whole shard.
    fn fault(&self, slot: Option<usize>, cause: String) -> SamplerError {
        let (slots, tasks) = match slot.filter(|&s| s < self.n) {
            Some(s) => (
                format!("slot {}", self.first + s),
                format!("task {}", self.tasks[s]),
            ),
            None if self.n == 1 => (
                format!("slot {}", self.first),
                format!("task {}", self.tasks[0]),
            ),
            None => (
                format!("slots {}..{}", self.first, self.first + self.n),
                format!("tasks {}", task_list(&self.tasks)),
            ),
        };
        SamplerError::EnvFault {
            env: self.name.clone(),
            seed: self.seed,
            slots,
            tasks,
            cause,
        }
    }

    /// An env error as a fault, naming the slot when the error does.
    fn env_fault(&self, e: &EnvError, during: &str) -> SamplerError {
        let slot = match e {
            EnvError::ActionOutOfRange { slot, .. } => Some(*slot),
            EnvError::SlotOutOfRange { slot, .. } => Some(*slot),
            _ => None,
        };
        self.fault(slot, format!("{during}: {e}"))
    }

    /// Runs `f` on this shard, turning a panic into a fault (and marking the shard failed).
    pub(crate) fn guarded<T>(
        &mut self,
        during: &str,
        f: impl FnOnce(&mut Shard) -> Result<T, SamplerError>,
    ) -> Result<T, SamplerError> {
        if self.failed {
            return Err(SamplerError::Stopped(format!(
                "env shard {}..{} failed earlier",
                self.first,
                self.first + self.n
            )));
        }
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(Ok(x)) => Ok(x),
            Ok(Err(e)) => {
                if matches!(e, SamplerError::EnvFault { .. }) {
                    self.failed = true;
                }
                Err(e)
            }
            Err(payload) => {
                self.failed = true;
                Err(self.fault(
                    None,
                    format!("panicked {during}: {}", panic_message(payload.as_ref())),
                ))
            }
        }
    }

    /// Checks the env's buffers have the sizes the spec promises.
    fn check_obs(&self, obs: &ObsBatch, what: &str) -> Result<(), SamplerError> {
        if obs.vector.len() != self.n * self.vdim || obs.image.len() != self.n * self.img {
            return Err(self.fault(
                None,
                format!(
                    "{what}: the env wrote {} floats and {} image bytes for {} slots, expected {} and {}",
                    obs.vector.len(),
                    obs.image.len(),
                    self.n,
                    self.n * self.vdim,
                    self.n * self.img
                ),
            ));
        }
        Ok(())
    }

    /// Starts a trial: puts every slot on its task (`tasks` is indexed by global slot), starts
    /// a new episode and writes token column `col` of its rows (prev action/reward 0, episode 0,
    /// step 0).
    pub(crate) fn start(
        &mut self,
        tasks: &[TaskId],
        target: &RawStorage,
        col: usize,
    ) -> Result<ShardReport, SamplerError> {
        let t0 = Instant::now();
        let Some(mine) = tasks.get(self.first..self.first + self.n) else {
            return Err(SamplerError::Invalid(format!(
                "start: {} tasks for a batch that has slot {}",
                tasks.len(),
                self.first + self.n - 1
            )));
        };
        for (i, &task) in mine.iter().enumerate() {
            if let Err(e) = self.env.set_task(i, task) {
                return Err(SamplerError::Invalid(format!(
                    "environment '{}' (seed {}) rejected task {task} for slot {}: {e}",
                    self.name,
                    self.seed,
                    self.first + i
                )));
            }
            self.tasks[i] = task;
        }
        for i in 0..self.n {
            if let Err(e) = self.env.observe_slot(i, &mut self.obs) {
                return Err(self.env_fault(&e, "observing the first observation"));
            }
        }
        self.check_obs(&self.obs, "observe")?;
        let t1 = Instant::now();
        self.episode.iter_mut().for_each(|x| *x = 0);
        self.step.iter_mut().for_each(|x| *x = 0);
        self.ret.iter_mut().for_each(|x| *x = 0.0);
        let rows = self.slots();
        // SAFETY: this shard owns `rows`; the sampler keeps the memory alive (see RawField).
        let Some(tok) = (unsafe { TokenColumn::of(target, &rows, col) }) else {
            return Err(SamplerError::Invalid(format!(
                "storage does not fit rows {rows:?}, token column {col}"
            )));
        };
        tok.vector.copy_from_slice(&self.obs.vector);
        if let Some(img) = tok.image {
            img.copy_from_slice(&self.obs.image);
        }
        tok.prev_action.fill(0);
        tok.prev_reward.fill(0.0);
        tok.episode_index.fill(0);
        tok.step_in_episode.fill(0);
        Ok(ShardReport {
            episodes: Vec::new(),
            env_secs: (t1 - t0).as_secs_f64(),
            write_secs: t1.elapsed().as_secs_f64(),
            streams: Vec::new(),
        })
    }

    /// `steps` steps from column `col0` with uniformly random actions drawn from `streams`
    /// (this shard's slots, indexed from 0), each step written to `target` as it is taken.
    pub(crate) fn run_local(
        &mut self,
        steps: usize,
        col0: usize,
        num_actions: u32,
        streams: &mut SlotStreams,
        target: &RawStorage,
    ) -> Result<ShardReport, SamplerError> {
        let mut actions = vec![0; self.n];
        let lv = LogprobValue::Constant {
            logprob: uniform_logprob(num_actions),
            value: 0.0,
        };
        let mut total = ShardReport::default();
        let mut draws = streams.draws();
        for s in 0..steps {
            draws.fill_below(&mut actions, num_actions);
            let c = col0 + s;
            let r = self.step_with(&actions, lv, target, c, c + 1, c)?;
            total.env_secs += r.env_secs;
            total.write_secs += r.write_secs;
            total.episodes.extend(r.episodes);
        }
        Ok(total)
    }

    /// One step of every slot: actions (and log-probs, values) from `out` starting at index
    /// `off`; outcomes go to outcome column `out_col`, the next token to token column
    /// `tok_col` of `target`, written in place (each is one contiguous block of the
    /// time-major storage); `step_col` is the storage column of this step (for episode
    /// records).
    pub(crate) fn step(
        &mut self,
        out: &PolicyOutput,
        off: usize,
        target: &RawStorage,
        out_col: usize,
        tok_col: usize,
        step_col: usize,
    ) -> Result<ShardReport, SamplerError> {
        let n = self.n;
        let (Some(actions), Some(logprob), Some(value)) = (
            out.actions.get(off..off + n),
            out.logprob.get(off..off + n),
            out.value.get(off..off + n),
        ) else {
            return Err(SamplerError::Invalid(format!(
                "policy output too short for slots {:?}",
                self.slots()
            )));
        };
        let lv = LogprobValue::PerSlot { logprob, value };
        self.step_with(actions, lv, target, out_col, tok_col, step_col)
    }

    /// [`Shard::step`] with this shard's `actions` (one per slot) and their log-probs and
    /// values `lv`.
    fn step_with(
        &mut self,
        actions: &[u32],
        lv: LogprobValue<'_>,
        target: &RawStorage,
        out_col: usize,
        tok_col: usize,
        step_col: usize,
    ) -> Result<ShardReport, SamplerError> {
        let n = self.n;
        if actions.len() != n {
            return Err(SamplerError::Invalid(format!(
                "{} actions for slots {:?}",
                actions.len(),
                self.slots()
            )));
        }
        let t0 = Instant::now();
        if let Err(e) = self.env.step(actions, &mut self.batch) {
            return Err(self.env_fault(&e, &format!("step at column {step_col}")));
        }
        let t1 = Instant::now();
        let b = &self.batch;
        if b.reward.len() != n
            || b.terminated.len() != n
            || b.truncated.len() != n
            || b.success.len() != n
        {
            return Err(self.fault(
                None,
                "step: the env wrote outcome buffers of the wrong size".into(),
            ));
        }
        self.check_obs(&b.obs, "step")?;
        let next_obs = target.next_vector.is_some();
        if next_obs {
            self.check_obs(&b.final_obs, "step (final observation)")?;
        }
        let rows = self.slots();
        // SAFETY: this shard owns `rows`; the sampler keeps the memory alive (see RawField).
        let (Some(tok), Some(mut outc)) =
            (unsafe { TokenColumn::of(target, &rows, tok_col) }, unsafe {
                OutcomeColumn::of(target, &rows, out_col)
            })
        else {
            return Err(SamplerError::Invalid(format!(
                "storage does not fit rows {rows:?}, columns {out_col}/{tok_col}"
            )));
        };
        let b = &self.batch;
        let (v, img) = (self.vdim, self.img);
        // Field by field (vectorisable copies), then the per-slot bookkeeping.
        tok.vector.copy_from_slice(&b.obs.vector);
        if let Some(dst) = tok.image {
            dst.copy_from_slice(&b.obs.image);
        }
        lv.write(outc.logprob, outc.value);
        outc.reward.copy_from_slice(&b.reward);
        for (d, &a) in outc.action.iter_mut().zip(actions) {
            *d = a as i32;
        }
        for (d, &x) in outc.terminated.iter_mut().zip(&b.terminated) {
            *d = x as u8;
        }
        for (d, &x) in outc.truncated.iter_mut().zip(&b.truncated) {
            *d = x as u8;
        }
        for (d, &x) in outc.success.iter_mut().zip(&b.success) {
            *d = x as u8;
        }
        if let Some(dst) = outc.next_vector.as_deref_mut() {
            dst.copy_from_slice(&b.obs.vector);
        }
        if let Some(dst) = outc.next_image.as_deref_mut() {
            dst.copy_from_slice(&b.obs.image);
        }
        // Returns so far; episode ends are rare, so they get their own pass.
        let mut any_done = false;
        for (((ret, &r), &te), &tr) in self
            .ret
            .iter_mut()
            .zip(&b.reward)
            .zip(&b.terminated)
            .zip(&b.truncated)
        {
            *ret += r as f64;
            any_done |= te | tr;
        }
        let mut episodes = Vec::new();
        if any_done {
            for i in 0..n {
                if !(b.terminated[i] | b.truncated[i]) {
                    continue;
                }
                if next_obs {
                    // The observation the step led to, before the auto-reset replaced it.
                    if let Some(dst) = outc.next_vector_slot(i, v) {
                        dst.copy_from_slice(&b.final_obs.vector[i * v..(i + 1) * v]);
                    }
                    if let Some(dst) = outc.next_image_slot(i, img) {
                        dst.copy_from_slice(&b.final_obs.image[i * img..(i + 1) * img]);
                    }
                }
                episodes.push(EpisodeStats {
                    slot: self.first + i,
                    task: self.tasks[i],
                    episode_index: self.episode[i] as usize,
                    ret: self.ret[i],
                    length: self.step[i] as usize + 1,
                    success: b.success[i],
                    end_step: step_col,
                    terminated: b.terminated[i],
                });
                self.ret[i] = 0.0;
            }
        }
        // The next token: a new episode starts with prev action/reward 0. Branch-free on
        // slices of one length, so the loop vectorises (`keep` is 1 unless the episode ended).
        let (te, tr, rew, acts) = (
            &b.terminated[..n],
            &b.truncated[..n],
            &b.reward[..n],
            &actions[..n],
        );
        let (pa, pr) = (&mut tok.prev_action[..n], &mut tok.prev_reward[..n]);
        let (ep_out, st_out) = (&mut tok.episode_index[..n], &mut tok.step_in_episode[..n]);
        let (ep, st) = (&mut self.episode[..n], &mut self.step[..n]);
        for i in 0..n {
            let keep = i32::from(!(te[i] | tr[i]));
            let mask = keep.wrapping_neg() as u32;
            pa[i] = keep * (acts[i] as i32).wrapping_add(1);
            pr[i] = f32::from_bits(rew[i].to_bits() & mask);
            ep[i] += 1 - keep;
            st[i] = st[i].wrapping_add(1) * keep;
            ep_out[i] = ep[i];
            st_out[i] = st[i];
        }
        Ok(ShardReport {
            episodes,
            env_secs: (t1 - t0).as_secs_f64(),
            write_secs: t1.elapsed().as_secs_f64(),
            streams: Vec::new(),
        })
    }
}

/// The behaviour log-probabilities and values of one step of a shard's slots.
#[derive(Debug, Clone, Copy)]
enum LogprobValue<'a> {
    /// One per slot.
    PerSlot {
        logprob: &'a [f32],
        value: &'a [f32],
    },
    /// The same for every slot and step (the uniform random policy of [`Shard::run_local`]).
    Constant { logprob: f32, value: f32 },
}

impl LogprobValue<'_> {
    /// Writes them to a shard's rows of an outcome column (slices of the shard's length).
    fn write(self, logprob: &mut [f32], value: &mut [f32]) {
        match self {
            LogprobValue::PerSlot {
                logprob: l,
                value: v,
            } => {
                logprob.copy_from_slice(l);
                value.copy_from_slice(v);
            }
            LogprobValue::Constant {
                logprob: l,
                value: v,
            } => {
                fill_if_changed(logprob, l);
                fill_if_changed(value, v);
            }
        }
    }
}

/// Sets every element of `dst` to `x` unless all of them already hold exactly `x` (same
/// bits). Storage reused for trial after trial of the random policy then costs a read of
/// these columns instead of a write (no dirty cache lines to write back).
fn fill_if_changed(dst: &mut [f32], x: f32) {
    let bits = x.to_bits();
    // Branch-free over the whole slice, so it vectorises.
    let differ = dst.iter().fold(0u32, |acc, d| acc | (d.to_bits() ^ bits));
    if differ != 0 {
        dst.fill(x);
    }
}

/// One token column of a shard's rows, borrowed from the storage memory.
struct TokenColumn<'a> {
    vector: &'a mut [f32],
    image: Option<&'a mut [u8]>,
    prev_action: &'a mut [i32],
    prev_reward: &'a mut [f32],
    episode_index: &'a mut [i32],
    step_in_episode: &'a mut [i32],
}

impl TokenColumn<'_> {
    /// # Safety
    /// As [`crate::storage::RawField::column`]: the caller owns `rows` and the memory lives.
    unsafe fn of<'a>(
        t: &'a RawStorage,
        rows: &Range<usize>,
        col: usize,
    ) -> Option<TokenColumn<'a>> {
        Some(TokenColumn {
            vector: t.vector.column(rows, col)?,
            image: match &t.image {
                Some(f) => Some(f.column(rows, col)?),
                None => None,
            },
            prev_action: t.prev_action.column(rows, col)?,
            prev_reward: t.prev_reward.column(rows, col)?,
            episode_index: t.episode_index.column(rows, col)?,
            step_in_episode: t.step_in_episode.column(rows, col)?,
        })
    }
}

/// One outcome column of a shard's rows, borrowed from the storage memory.
struct OutcomeColumn<'a> {
    action: &'a mut [i32],
    logprob: &'a mut [f32],
    value: &'a mut [f32],
    reward: &'a mut [f32],
    terminated: &'a mut [u8],
    truncated: &'a mut [u8],
    success: &'a mut [u8],
    next_vector: Option<&'a mut [f32]>,
    next_image: Option<&'a mut [u8]>,
}

impl OutcomeColumn<'_> {
    /// # Safety
    /// As [`crate::storage::RawField::column`]: the caller owns `rows` and the memory lives.
    unsafe fn of<'a>(
        t: &'a RawStorage,
        rows: &Range<usize>,
        col: usize,
    ) -> Option<OutcomeColumn<'a>> {
        Some(OutcomeColumn {
            action: t.action.column(rows, col)?,
            logprob: t.logprob.column(rows, col)?,
            value: t.value.column(rows, col)?,
            reward: t.reward.column(rows, col)?,
            terminated: t.terminated.column(rows, col)?,
            truncated: t.truncated.column(rows, col)?,
            success: t.success.column(rows, col)?,
            next_vector: match &t.next_vector {
                Some(f) => Some(f.column(rows, col)?),
                None => None,
            },
            next_image: match &t.next_image {
                Some(f) => Some(f.column(rows, col)?),
                None => None,
            },
        })
    }

    /// Slot `i`'s `v` elements of the next-observation vector.
    fn next_vector_slot(&mut self, i: usize, v: usize) -> Option<&mut [f32]> {
        self.next_vector.as_deref_mut()?.get_mut(i * v..(i + 1) * v)
    }

    /// Slot `i`'s `img` bytes of the next-observation image.
    fn next_image_slot(&mut self, i: usize, img: usize) -> Option<&mut [u8]> {
        self.next_image
            .as_deref_mut()?
            .get_mut(i * img..(i + 1) * img)
    }
}

/// A command to a worker thread.
pub(crate) enum Cmd {
    /// Start a trial in all of the worker's shards ([`Shard::start`]).
    Start {
        tasks: Arc<Vec<TaskId>>,
        target: RawStorage,
        col: usize,
    },
    /// Step the worker's shard of act group `group` ([`Shard::step`]); `out` covers the group,
    /// whose first slot is `group_start`.
    Step {
        group: usize,
        out: Arc<PolicyOutput>,
        group_start: usize,
        target: RawStorage,
        out_col: usize,
        tok_col: usize,
        step_col: usize,
    },
    /// Run `steps` steps from column `col0` on all of the worker's shards with uniformly
    /// random actions from `streams` (one per shard, in shard order) ([`Shard::run_local`]).
    RunLocal {
        steps: usize,
        col0: usize,
        num_actions: u32,
        streams: Vec<SlotStreams>,
        target: RawStorage,
    },
}

/// Which kind of command a reply answers (its "lane"): a step of act group `g`, or a start.
pub(crate) const START_LANE: usize = 2;

/// A worker's answer to one command.
pub(crate) struct Reply {
    pub worker: usize,
    pub lane: usize,
    pub result: Result<ShardReport, SamplerError>,
}

/// Runs one command on a worker's shards (`shards[g]` = its shard of act group `g`).
pub(crate) fn run_cmd(
    shards: &mut [Shard],
    cmd: Cmd,
) -> (usize, Result<ShardReport, SamplerError>) {
    match cmd {
        Cmd::Start { tasks, target, col } => {
            let mut total = ShardReport::default();
            for shard in shards.iter_mut() {
                match shard.guarded("starting a trial", |s| s.start(&tasks, &target, col)) {
                    Ok(r) => {
                        total.env_secs += r.env_secs;
                        total.write_secs += r.write_secs;
                    }
                    Err(e) => return (START_LANE, Err(e)),
                }
            }
            (START_LANE, Ok(total))
        }
        Cmd::RunLocal {
            steps,
            col0,
            num_actions,
            streams,
            target,
        } => {
            let mut total = ShardReport::default();
            for (shard, mut st) in shards.iter_mut().zip(streams) {
                let r = shard.guarded(&format!("running steps {col0}..{}", col0 + steps), |s| {
                    s.run_local(steps, col0, num_actions, &mut st, &target)
                });
                match r {
                    Ok(r) => {
                        total.env_secs += r.env_secs;
                        total.write_secs += r.write_secs;
                        total.episodes.extend(r.episodes);
                        total.streams.push((shard.first, st));
                    }
                    Err(e) => return (START_LANE, Err(e)),
                }
            }
            (START_LANE, Ok(total))
        }
        Cmd::Step {
            group,
            out,
            group_start,
            target,
            out_col,
            tok_col,
            step_col,
        } => {
            let Some(shard) = shards.get_mut(group) else {
                return (
                    group,
                    Err(SamplerError::Invalid(format!(
                        "worker has no shard for group {group}"
                    ))),
                );
            };
            let off = shard.first.saturating_sub(group_start);
            let r = shard.guarded(&format!("stepping at column {step_col}"), |s| {
                s.step(&out, off, &target, out_col, tok_col, step_col)
            });
            (group, r)
        }
    }
}

/// The body of a worker thread: build the shards `plan` (global `(first, count)` per act
/// group), report them on `ready`, then serve commands until the command channel closes.
pub(crate) fn worker_main(
    worker: usize,
    plan: Vec<(usize, usize)>,
    seed: u64,
    build: Arc<ShardBuilder>,
    ready: Sender<(usize, Result<Vec<EnvSpec>, SamplerError>)>,
    cmds: Receiver<Cmd>,
    replies: Sender<Reply>,
) {
    let mut shards = Vec::with_capacity(plan.len());
    for &(first, count) in &plan {
        match build_shard(build.as_ref(), first, count, seed) {
            Ok(s) => shards.push(s),
            Err(e) => {
                let _ = ready.send((worker, Err(e)));
                return;
            }
        }
    }
    let specs = shards.iter().map(|s| s.spec().clone()).collect();
    if ready.send((worker, Ok(specs))).is_err() {
        return;
    }
    drop(ready);
    loop {
        let cmd = match recv_spin(&cmds, SPIN, Duration::from_secs(3600)) {
            Ok(cmd) => cmd,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let (lane, result) = run_cmd(&mut shards, cmd);
        if replies
            .send(Reply {
                worker,
                lane,
                result,
            })
            .is_err()
        {
            break;
        }
    }
}

/// Builds one shard, turning an error or a panic of the builder into a fault.
pub(crate) fn build_shard(
    build: &ShardBuilder,
    first: usize,
    count: usize,
    seed: u64,
) -> Result<Shard, SamplerError> {
    let fail = |cause: String| SamplerError::EnvFault {
        env: "(building)".into(),
        seed,
        slots: format!("slots {first}..{}", first + count),
        tasks: "tasks (not set yet)".into(),
        cause,
    };
    match catch_unwind(AssertUnwindSafe(|| build(first, count))) {
        Ok(Ok(env)) => {
            if env.num_envs() != count {
                return Err(fail(format!(
                    "the builder made {} slots, expected {count}",
                    env.num_envs()
                )));
            }
            Ok(Shard::new(env, first, seed))
        }
        Ok(Err(e)) => Err(fail(format!("building the envs: {e}"))),
        Err(p) => Err(fail(format!(
            "panicked while building: {}",
            panic_message(p.as_ref())
        ))),
    }
}
