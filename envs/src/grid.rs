//! The grid-world engine shared by Dark Room (DPT and AD versions), Dark Room Hard and Dark
//! Key-to-Door: pure transition, oracle and state-enumeration functions ([`GridRules`]) plus the
//! batched [`GridVecEnv`] that uses them.
//!
//! Rules common to all grid worlds (DPT's official Dark Room code):
//! - cells `(x, y)` with `x, y` in `0..size`; the observation is `(x, y)` as `f32` (plus
//!   `has_key` as 0/1 for Key-to-Door);
//! - actions `0: x+1`, `1: x-1`, `2: y+1`, `3: y-1`, `4: stay`, clipped at the walls;
//! - rewards are decided on the cell reached *after* the move;
//! - the oracle moves in x first, then in y, and stays on its target.

use rand::Rng;
use serde_json::json;

use crate::rng::{fixed_split, slot_rng, SlotRng};
use crate::{
    check_actions, check_slot, require, EnvError, EnvSpec, ObsBatch, Split, StepBatch, TaskId,
    TaskSplit, VecEnv,
};

/// Number of actions of every grid world.
pub const NUM_ACTIONS: usize = 5;
/// Action `x + 1`.
pub const RIGHT: u32 = 0;
/// Action `x - 1`.
pub const LEFT: u32 = 1;
/// Action `y + 1`.
pub const UP: u32 = 2;
/// Action `y - 1`.
pub const DOWN: u32 = 3;
/// Action "stay".
pub const STAY: u32 = 4;

/// Where episodes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRule {
    /// Always this cell.
    Fixed(i32, i32),
    /// The centre cell `(size / 2, size / 2)`.
    Centre,
    /// A uniformly random cell, drawn from the slot's RNG at every episode start.
    Random,
}

/// How the goal pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoalReward {
    /// Reward 1 on every step that ends on the goal; never terminal (Dark Room).
    EveryStep,
    /// Reward 1 on reaching the goal, which ends the episode (terminated, success): Dark Room
    /// Hard's "reward only once".
    OnceTerminal,
}

/// The full rules of one grid world. Built from the env configs; also the entry point of the
/// pure functions that DPT's data generator needs.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRules {
    /// Environment name (e.g. `"darkroom"`).
    pub name: &'static str,
    /// Grid side as configured (validated to `2..=max_size`).
    pub size: usize,
    /// Largest allowed `size` for this world.
    pub max_size: usize,
    /// Episode step limit.
    pub horizon: usize,
    /// Start rule.
    pub start: StartRule,
    /// Goal reward rule (ignored with `key_to_door`, which pays key then door).
    pub goal_reward: GoalReward,
    /// Key-to-Door: reward 1 for reaching the key, then 1 for reaching the door with the key,
    /// which ends the episode (terminated, success).
    pub key_to_door: bool,
}

/// A task: the goal (the door for Key-to-Door) and the key cell, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridTask {
    /// Goal (or door) cell.
    pub goal: (i32, i32),
    /// Key cell (Key-to-Door only).
    pub key: Option<(i32, i32)>,
}

/// The state of one grid world: position and whether the key is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GridState {
    /// Column.
    pub x: i32,
    /// Row.
    pub y: i32,
    /// Key held (always false without a key).
    pub has_key: bool,
}

/// One transition's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridTransition {
    /// State after the action.
    pub next: GridState,
    /// Reward of the step.
    pub reward: f32,
    /// The episode ended in a terminal (success) state.
    pub terminated: bool,
}

/// Move a cell by an action, clipped to `0..=max` (actions >= 4 stay).
#[inline(always)]
fn apply_move(x: i32, y: i32, action: u32, max: i32) -> (i32, i32) {
    match action {
        RIGHT => ((x + 1).min(max), y),
        LEFT => ((x - 1).max(0), y),
        UP => (x, (y + 1).min(max)),
        DOWN => (x, (y - 1).max(0)),
        _ => (x, y),
    }
}

/// The oracle move towards `target`: x first, then y, stay on it.
#[inline]
fn toward(x: i32, y: i32, target: (i32, i32)) -> u32 {
    if x < target.0 {
        RIGHT
    } else if x > target.0 {
        LEFT
    } else if y < target.1 {
        UP
    } else if y > target.1 {
        DOWN
    } else {
        STAY
    }
}

impl GridRules {
    /// Field errors (relative paths such as `"size"`). Empty = valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        let max = self.max_size;
        require(&mut e, (2..=max).contains(&self.size), "size", || {
            format!("must be in 2..={max}, got {}", self.size)
        });
        require(
            &mut e,
            (1..=10_000_000).contains(&self.horizon),
            "horizon",
            || format!("must be in 1..=10000000, got {}", self.horizon),
        );
        if let (StartRule::Fixed(x, y), true) = (self.start, (2..=max).contains(&self.size)) {
            let s = self.size as i64;
            require(
                &mut e,
                (0..s).contains(&(x as i64)) && (0..s).contains(&(y as i64)),
                "start",
                || format!("must be inside the {s}x{s} grid, got ({x}, {y})"),
            );
        }
        e
    }

    /// Grid side as `i32` (clamped to the allowed range, so it is safe on invalid configs).
    #[inline]
    pub fn side(&self) -> i32 {
        self.size.clamp(2, self.max_size.max(2)) as i32
    }

    /// Observation features per step: `(x, y)`, plus `has_key` for Key-to-Door.
    pub fn vector_dim(&self) -> usize {
        if self.key_to_door {
            3
        } else {
            2
        }
    }

    /// The spec of this world.
    pub fn spec(&self) -> EnvSpec {
        let mut segments = vec![("position".to_string(), 2)];
        if self.key_to_door {
            segments.push(("has_key".to_string(), 1));
        }
        EnvSpec {
            name: self.name.to_string(),
            num_actions: NUM_ACTIONS,
            vector_dim: self.vector_dim(),
            vector_segments: segments,
            image: None,
            horizon: self.horizon,
            has_success: self.key_to_door || self.goal_reward == GoalReward::OnceTerminal,
        }
    }

    /// Number of tasks: `size^2` goals, or `size^4` (key, door) pairs for Key-to-Door.
    pub fn num_tasks(&self) -> u64 {
        let c = (self.side() as u64).pow(2);
        if self.key_to_door {
            c * c
        } else {
            c
        }
    }

    /// The index of a cell: `x * size + y` (DPT's goal order: x outer, y inner).
    pub fn cell_index(&self, cell: (i32, i32)) -> u64 {
        cell.0 as u64 * self.side() as u64 + cell.1 as u64
    }

    /// The cell of an index (inverse of [`GridRules::cell_index`]).
    pub fn cell_of(&self, index: u64) -> (i32, i32) {
        let s = self.side() as u64;
        ((index / s) as i32, (index % s) as i32)
    }

    /// Decode a task id: the goal index (`x * size + y`), or `key_index * size^2 + door_index`
    /// for Key-to-Door.
    pub fn task(&self, id: TaskId) -> Result<GridTask, EnvError> {
        if id >= self.num_tasks() {
            return Err(EnvError::InvalidTask {
                env: self.name.to_string(),
                task: id,
                reason: format!("task ids are 0..{}", self.num_tasks()),
            });
        }
        if self.key_to_door {
            let c = (self.side() as u64).pow(2);
            Ok(GridTask {
                goal: self.cell_of(id % c),
                key: Some(self.cell_of(id / c)),
            })
        } else {
            Ok(GridTask {
                goal: self.cell_of(id),
                key: None,
            })
        }
    }

    /// The id of a task (inverse of [`GridRules::task`]).
    pub fn task_id(&self, task: &GridTask) -> TaskId {
        match task.key {
            Some(k) if self.key_to_door => {
                self.cell_index(k) * (self.side() as u64).pow(2) + self.cell_index(task.goal)
            }
            _ => self.cell_index(task.goal),
        }
    }

    /// The fixed task split: the task ids in order shuffled by numpy's `RandomState(0)`,
    /// the first 80% the training part (its last eighth Validation), the rest Test
    /// ([`crate::rng::fixed_split`]).
    pub fn split(&self) -> TaskSplit {
        fixed_split(self.num_tasks() as usize)
    }

    /// Whether a state lies inside the grid.
    pub fn contains(&self, s: &GridState) -> bool {
        let n = self.side();
        (0..n).contains(&s.x) && (0..n).contains(&s.y) && (self.key_to_door || !s.has_key)
    }

    /// The start state of an episode (draws from `rng` only with [`StartRule::Random`]).
    pub fn start_state(&self, rng: &mut impl Rng) -> GridState {
        let n = self.side();
        let (x, y) = match self.start {
            StartRule::Fixed(x, y) => (x.clamp(0, n - 1), y.clamp(0, n - 1)),
            StartRule::Centre => (n / 2, n / 2),
            StartRule::Random => (rng.random_range(0..n), rng.random_range(0..n)),
        };
        GridState {
            x,
            y,
            has_key: false,
        }
    }

    /// Every state: all cells (x outer, y inner), and for Key-to-Door each cell without and then
    /// with the key.
    pub fn states(&self) -> Vec<GridState> {
        let n = self.side();
        let mut v = Vec::new();
        let keys: &[bool] = if self.key_to_door {
            &[false, true]
        } else {
            &[false]
        };
        for &has_key in keys {
            for x in 0..n {
                for y in 0..n {
                    v.push(GridState { x, y, has_key });
                }
            }
        }
        v
    }

    /// A uniformly random state (uniform over [`GridRules::states`]).
    pub fn sample_state(&self, rng: &mut impl Rng) -> GridState {
        let n = self.side();
        GridState {
            x: rng.random_range(0..n),
            y: rng.random_range(0..n),
            has_key: self.key_to_door && rng.random_bool(0.5),
        }
    }

    /// Write the observation of `s` into `out` (length [`GridRules::vector_dim`]).
    #[inline]
    pub fn observe(&self, s: &GridState, out: &mut [f32]) {
        out[0] = s.x as f32;
        out[1] = s.y as f32;
        if self.key_to_door {
            out[2] = s.has_key as u8 as f32;
        }
    }

    /// Apply `action` in state `s` of `task`: the next state, the reward and whether the
    /// episode terminates. Errors on an out-of-range action or state.
    pub fn step(
        &self,
        task: &GridTask,
        s: GridState,
        action: u32,
    ) -> Result<GridTransition, EnvError> {
        if action as usize >= NUM_ACTIONS {
            return Err(EnvError::ActionOutOfRange {
                env: self.name.to_string(),
                slot: 0,
                action,
                num_actions: NUM_ACTIONS,
            });
        }
        if !self.contains(&s) {
            return Err(EnvError::InvalidState {
                state: format!("{s:?}"),
                size: self.side(),
            });
        }
        Ok(self.step_unchecked(task, s, action))
    }

    /// [`GridRules::step`] without validation (the caller guarantees a valid action and state).
    #[inline(always)]
    pub fn step_unchecked(&self, task: &GridTask, s: GridState, action: u32) -> GridTransition {
        let (x, y) = apply_move(s.x, s.y, action, self.side() - 1);
        let mut next = GridState {
            x,
            y,
            has_key: s.has_key,
        };
        let mut reward = 0.0;
        let mut terminated = false;
        if self.key_to_door {
            let key = task.key.unwrap_or(task.goal);
            if !s.has_key && (x, y) == key {
                next.has_key = true;
                reward = 1.0;
            } else if s.has_key && (x, y) == task.goal {
                reward = 1.0;
                terminated = true;
            }
        } else if (x, y) == task.goal {
            reward = 1.0;
            terminated = self.goal_reward == GoalReward::OnceTerminal;
        }
        GridTransition {
            next,
            reward,
            terminated,
        }
    }

    /// The optimal action in state `s` of `task`: towards the key while it is not held (Key-to-
    /// Door), else towards the goal; x first, then y; stay on the target.
    #[inline]
    pub fn optimal_action(&self, task: &GridTask, s: &GridState) -> u32 {
        let target = match task.key {
            Some(k) if self.key_to_door && !s.has_key => k,
            _ => task.goal,
        };
        toward(s.x, s.y, target)
    }

    /// The return of the oracle from the start state `s` over a full episode (for "optimal"
    /// reference lines).
    pub fn oracle_return(&self, task: &GridTask, mut s: GridState) -> f32 {
        let mut total = 0.0;
        for _ in 0..self.horizon {
            let a = self.optimal_action(task, &s);
            let tr = self.step_unchecked(task, s, a);
            total += tr.reward;
            s = tr.next;
            if tr.terminated {
                break;
            }
        }
        total
    }
}

/// A batch of grid-world slots (struct of arrays; no allocation per step).
pub struct GridVecEnv {
    rules: GridRules,
    spec: EnvSpec,
    first_slot: usize,
    split: TaskSplit,
    task_ids: Vec<TaskId>,
    tasks: Vec<GridTask>,
    states: Vec<GridState>,
    t: Vec<u32>,
    rngs: Vec<SlotRng>,
}

impl GridVecEnv {
    /// Build slots `[first_slot, first_slot + count)` (the config must be valid).
    pub fn new(rules: GridRules, seed: u64, first_slot: usize, count: usize) -> Self {
        let split = rules.split();
        let train = &split.train;
        let spec = rules.spec();
        let mut rngs: Vec<SlotRng> = (0..count).map(|i| slot_rng(seed, first_slot + i)).collect();
        let task_ids: Vec<TaskId> = (0..count)
            .map(|i| train[(first_slot + i) % train.len()])
            .collect();
        let tasks = task_ids
            .iter()
            .map(|&id| {
                rules.task(id).unwrap_or(GridTask {
                    goal: (0, 0),
                    key: None,
                })
            })
            .collect();
        let states = rngs.iter_mut().map(|r| rules.start_state(r)).collect();
        GridVecEnv {
            spec,
            first_slot,
            split,
            task_ids,
            tasks,
            states,
            t: vec![0; count],
            rngs,
            rules,
        }
    }

    /// The rules this vector runs.
    pub fn rules(&self) -> &GridRules {
        &self.rules
    }

    /// Global index of the first slot.
    pub fn first_slot(&self) -> usize {
        self.first_slot
    }

    /// Current state of a slot.
    pub fn state(&self, slot: usize) -> Option<GridState> {
        self.states.get(slot).copied()
    }

    fn start_episode(&mut self, i: usize) {
        self.states[i] = self.rules.start_state(&mut self.rngs[i]);
        self.t[i] = 0;
    }
}

impl VecEnv for GridVecEnv {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn num_envs(&self) -> usize {
        self.states.len()
    }

    fn tasks(&self, split: Split) -> Vec<TaskId> {
        self.split.get(split).to_vec()
    }

    fn set_task(&mut self, slot: usize, task: TaskId) -> Result<(), EnvError> {
        check_slot(slot, self.num_envs())?;
        self.tasks[slot] = self.rules.task(task)?;
        self.task_ids[slot] = task;
        self.start_episode(slot);
        Ok(())
    }

    fn task(&self, slot: usize) -> Result<TaskId, EnvError> {
        check_slot(slot, self.num_envs())?;
        Ok(self.task_ids[slot])
    }

    fn reset(&mut self, obs: &mut ObsBatch) {
        let n = self.num_envs();
        obs.fit(&self.spec, n);
        let d = self.spec.vector_dim;
        for i in 0..n {
            self.start_episode(i);
            self.rules
                .observe(&self.states[i], &mut obs.vector[i * d..(i + 1) * d]);
        }
    }

    fn observe_slot(&mut self, slot: usize, obs: &mut ObsBatch) -> Result<(), EnvError> {
        check_slot(slot, self.num_envs())?;
        obs.fit(&self.spec, self.num_envs());
        let d = self.spec.vector_dim;
        self.rules.observe(
            &self.states[slot],
            &mut obs.vector[slot * d..(slot + 1) * d],
        );
        Ok(())
    }

    fn step(&mut self, actions: &[u32], out: &mut StepBatch) -> Result<(), EnvError> {
        let n = self.num_envs();
        check_actions(&self.spec, n, actions)?;
        out.fit(&self.spec, n);
        let d = self.spec.vector_dim;
        let horizon = self.rules.horizon as u32;
        let random_start = self.rules.start == StartRule::Random;
        let key = self.rules.key_to_door;
        for (i, &action) in actions.iter().enumerate() {
            let tr = self
                .rules
                .step_unchecked(&self.tasks[i], self.states[i], action);
            let t = self.t[i] + 1;
            let truncated = !tr.terminated && t >= horizon;
            out.reward[i] = tr.reward;
            out.terminated[i] = tr.terminated;
            out.truncated[i] = truncated;
            out.success[i] = tr.terminated;
            let o = &mut out.obs.vector[i * d..(i + 1) * d];
            if tr.terminated | truncated {
                let f = &mut out.final_obs.vector[i * d..(i + 1) * d];
                f[0] = tr.next.x as f32;
                f[1] = tr.next.y as f32;
                if key {
                    f[2] = tr.next.has_key as u8 as f32;
                }
                let s = if random_start {
                    self.rules.start_state(&mut self.rngs[i])
                } else {
                    // Fixed starts need no randomness: skip the RNG in the hot path.
                    self.rules.start_state(&mut NoRng)
                };
                self.states[i] = s;
                self.t[i] = 0;
            } else {
                self.states[i] = tr.next;
                self.t[i] = t;
            }
            let s = &self.states[i];
            o[0] = s.x as f32;
            o[1] = s.y as f32;
            if key {
                o[2] = s.has_key as u8 as f32;
            }
        }
        Ok(())
    }

    fn oracle_actions(&self, out: &mut [u32]) {
        for ((o, task), s) in out.iter_mut().zip(&self.tasks).zip(&self.states) {
            *o = self.rules.optimal_action(task, s);
        }
    }

    fn describe(&self, slot: usize) -> serde_json::Value {
        if slot >= self.num_envs() {
            return json!({ "error": format!("slot {slot} out of range") });
        }
        let s = &self.states[slot];
        let task = &self.tasks[slot];
        let mut v = json!({
            "x": s.x,
            "y": s.y,
            "t": self.t[slot],
            "task": self.task_ids[slot],
            "goal": [task.goal.0, task.goal.1],
        });
        if let Some(k) = task.key {
            v["key"] = json!([k.0, k.1]);
            v["has_key"] = json!(s.has_key);
            v["door"] = json!([task.goal.0, task.goal.1]);
        }
        v
    }
}

/// An RNG that is never drawn from (fixed and centre starts take no randomness).
struct NoRng;

impl rand::RngCore for NoRng {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        dst.fill(0);
    }
}
