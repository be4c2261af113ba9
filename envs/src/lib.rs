//! Environments for `icrl` (docs/architecture.md): grid worlds, bandits and first-person 3D navigation
//! with a software renderer of our own. No torch in this crate.
//!
//! Every environment is exposed through one batched API, [`VecEnv`]: a vector of `B` slots that
//! writes observations into caller-provided buffers ([`ObsBatch`], [`StepBatch`]), takes `B`
//! actions and returns rewards with Gymnasium-style `terminated` / `truncated` flags.
//!
//! # Auto-reset rule
//! When a slot's episode terminates or is truncated during [`VecEnv::step`], the slot starts a
//! new episode on the same task at once: `StepBatch::obs` holds the first observation of the new
//! episode, `StepBatch::final_obs` the last observation of the episode that ended (for
//! bootstrapping after truncation), and `reward`, `terminated`, `truncated`, `success` describe
//! the step that ended the old episode.
//!
//! # Tasks and seeds
//! A task (goal cell, arm means, target colour, house) is named by a [`TaskId`]. Each
//! environment has a fixed, deterministic train/validation/test split ([`VecEnv::tasks`],
//! [`Split`]). Randomness that
//! belongs to a slot (random starts, random targets, reward noise) comes from a per-slot RNG
//! seeded from `(seed, global slot index)`, so a shard built with
//! [`EnvConfig::build`]`(seed, first_slot, count)` produces exactly the streams of the same slots
//! in one big vector. Right after `build`, slot `g` (global index) holds task
//! `tasks(Train)[g % len]`.
//!
//! Modules: [`grid`] (the shared grid-world engine), [`darkroom`], [`darkroom_random`],
//! [`key_to_door`],
//! [`bandit`], [`one_room`], [`house_nav`] (3D worlds), [`world`] / [`render`] / [`nav`] (their
//! geometry, renderer and shortest paths), [`house`] (procedural houses) and [`tools`]
//! (transcripts, PNG frames, benchmarks).

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

pub mod bandit;
pub mod darkroom;
pub mod darkroom_random;
pub mod grid;
pub mod house;
pub mod house_nav;
pub mod image;
pub mod key_to_door;
pub mod nav;
pub mod numpy_random;
pub mod one_room;
pub mod render;
pub mod rng;
pub mod tools;
pub mod world;

pub use bandit::BanditConfig;
pub use darkroom::{DarkRoomAdConfig, DarkRoomConfig, DarkRoomHardConfig};
pub use darkroom_random::DarkRoomRandomConfig;
pub use house_nav::HouseNavConfig;
pub use key_to_door::KeyToDoorConfig;
pub use one_room::OneRoomConfig;

/// Largest image side (height or width) an environment accepts.
pub const MAX_IMAGE_SIDE: usize = 1024;

/// Errors of this crate. Bad input is always reported through this type, never by a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    /// An environment name that is not one of [`EnvConfig::NAMES`].
    #[error("unknown environment '{name}'; valid names: {valid}")]
    UnknownEnv {
        /// The name that was asked for.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// A configuration with impossible values; each entry is `path: message`.
    #[error("invalid environment config: {}", .0.join("; "))]
    InvalidConfig(Vec<String>),
    /// An action outside `0..num_actions`.
    #[error("action {action} for slot {slot} is out of range: {env} has {num_actions} actions (0..{num_actions})")]
    ActionOutOfRange {
        /// Environment name.
        env: String,
        /// Slot (local index) whose action was bad.
        slot: usize,
        /// The bad action.
        action: u32,
        /// Number of valid actions.
        num_actions: usize,
    },
    /// The action slice does not have one entry per slot.
    #[error("got {got} actions for {expected} env slots")]
    ActionCount {
        /// Length of the slice passed.
        got: usize,
        /// Number of slots.
        expected: usize,
    },
    /// A slot index outside `0..num_envs`.
    #[error("slot {slot} out of range: this vector has {num_envs} slots")]
    SlotOutOfRange {
        /// The bad slot.
        slot: usize,
        /// Number of slots.
        num_envs: usize,
    },
    /// A task id that does not name a task of this environment.
    #[error("task {task} is not a task of {env}: {reason}")]
    InvalidTask {
        /// Environment name.
        env: String,
        /// The bad task id.
        task: TaskId,
        /// Why it is not valid.
        reason: String,
    },
    /// A grid-world state outside the grid.
    #[error("state {state} is outside the {size}x{size} grid")]
    InvalidState {
        /// The state, formatted.
        state: String,
        /// Grid side.
        size: i32,
    },
    /// An I/O or encoding error while writing files (frames, maps).
    #[error("{0}")]
    Io(String),
    /// A benchmark worker failed.
    #[error("benchmark failed: {0}")]
    Bench(String),
    /// A thread could not be started (the process or user ran out of threads or memory):
    /// a failure of the machine, not of the input.
    #[error("{0}")]
    Thread(String),
}

/// Size of an RGB image observation: `u8`, row-major, height x width x 3 (HWC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageSpec {
    /// Bytes of one image: `height * width * 3`.
    pub fn bytes(&self) -> usize {
        self.height * self.width * 3
    }
}

/// What one slot observes and how it acts; `agent` builds its encoder from this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvSpec {
    /// Environment name, e.g. `"darkroom"`.
    pub name: String,
    /// Number of discrete actions; actions are `0..num_actions`.
    pub num_actions: usize,
    /// `f32` features per step.
    pub vector_dim: usize,
    /// Names and lengths of the vector parts, in order; lengths sum to `vector_dim`.
    pub vector_segments: Vec<(String, usize)>,
    /// The RGB image, if the environment renders one.
    pub image: Option<ImageSpec>,
    /// Episode step limit (truncation).
    pub horizon: usize,
    /// Whether `StepBatch::success` is meaningful for this environment.
    pub has_success: bool,
}

impl EnvSpec {
    /// Bytes of one slot's image (0 without an image).
    pub fn image_bytes(&self) -> usize {
        self.image.map_or(0, |i| i.bytes())
    }
}

/// Observations of a batch of slots (struct of arrays).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObsBatch {
    /// `B * vector_dim` features, slot-major.
    pub vector: Vec<f32>,
    /// `B * H * W * 3` bytes, slot-major, each image HWC; empty without an image.
    pub image: Vec<u8>,
}

impl ObsBatch {
    /// Zeroed buffers for `b` slots of `spec`.
    pub fn new(spec: &EnvSpec, b: usize) -> Self {
        ObsBatch {
            vector: vec![0.0; b * spec.vector_dim],
            image: vec![0; b * spec.image_bytes()],
        }
    }

    /// Resize the buffers if (and only if) they do not fit `b` slots of `spec`.
    /// Environments call this so a wrongly sized buffer is corrected instead of indexed out of
    /// bounds; correctly sized buffers are left alone (no allocation).
    pub fn fit(&mut self, spec: &EnvSpec, b: usize) {
        let v = b * spec.vector_dim;
        if self.vector.len() != v {
            self.vector.resize(v, 0.0);
        }
        let i = b * spec.image_bytes();
        if self.image.len() != i {
            self.image.resize(i, 0);
        }
    }
}

/// Result of one [`VecEnv::step`] for a batch of slots.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepBatch {
    /// Next observation (already auto-reset where the episode ended).
    pub obs: ObsBatch,
    /// Reward of the step.
    pub reward: Vec<f32>,
    /// The episode reached a terminal state (no bootstrapping).
    pub terminated: Vec<bool>,
    /// The episode hit the horizon (bootstrap from `final_obs`).
    pub truncated: Vec<bool>,
    /// The episode ended in success (set on the step that ends it).
    pub success: Vec<bool>,
    /// For slots whose episode ended this step: the last observation before the auto-reset.
    /// Other slots' entries are unspecified.
    pub final_obs: ObsBatch,
}

impl StepBatch {
    /// Zeroed buffers for `b` slots of `spec`.
    pub fn new(spec: &EnvSpec, b: usize) -> Self {
        StepBatch {
            obs: ObsBatch::new(spec, b),
            reward: vec![0.0; b],
            terminated: vec![false; b],
            truncated: vec![false; b],
            success: vec![false; b],
            final_obs: ObsBatch::new(spec, b),
        }
    }

    /// Resize the buffers if they do not fit `b` slots of `spec` (see [`ObsBatch::fit`]).
    pub fn fit(&mut self, spec: &EnvSpec, b: usize) {
        self.obs.fit(spec, b);
        self.final_obs.fit(spec, b);
        if self.reward.len() != b {
            self.reward.resize(b, 0.0);
        }
        if self.terminated.len() != b {
            self.terminated.resize(b, false);
        }
        if self.truncated.len() != b {
            self.truncated.resize(b, false);
        }
        if self.success.len() != b {
            self.success.resize(b, false);
        }
    }
}

/// A task identifier (goal index, key/door pair, bandit id, target colour, house seed).
pub type TaskId = u64;

/// Which part of the task distribution. The three parts are disjoint (except in `one_room`,
/// whose four tasks are in every part, as in DPT).
///
/// - Finite task sets (the grid worlds): the ids are shuffled once by numpy's
///   `RandomState(0)` ([`rng::fixed_split`]); the first 80% are the *training part* (what the
///   papers train on), the last 20% are [`Split::Test`]. The last eighth of the training part
///   is [`Split::Validation`] and [`Split::Train`] is the rest: DPT's Dark Room has 70 train,
///   10 validation and 20 test goals (its 80 training goals = Train + Validation).
/// - Generated task spaces (bandit, house_nav): Train, Validation and Test are separate id
///   ranges; Validation holds as many tasks as Test.
///
/// A run trained on Train never saw a Validation task, so settings can be tuned on Validation
/// and Test is kept for final numbers. A run that trains on Train and Validation together (to
/// match a paper's training set) must say so in its config, and its Validation scores mean
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Split {
    /// Training tasks (the training part without its Validation tasks).
    Train,
    /// Held-out tasks for tuning settings: a fixed part of the training part that training
    /// on [`Split::Train`] never sees.
    Validation,
    /// Held-out tasks for final numbers.
    Test,
}

impl Split {
    /// Every split, in the order Train, Validation, Test.
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// The lower-case name (`train`, `validation`, `test`).
    pub fn name(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// The task ids of the three splits of a finite task set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSplit {
    /// [`Split::Train`].
    pub train: Vec<TaskId>,
    /// [`Split::Validation`].
    pub validation: Vec<TaskId>,
    /// [`Split::Test`].
    pub test: Vec<TaskId>,
}

impl TaskSplit {
    /// The ids of one split.
    pub fn get(&self, split: Split) -> &[TaskId] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }
}

/// A vector of environment slots stepped together. See the crate docs for the auto-reset rule.
pub trait VecEnv: Send {
    /// What each slot observes and how it acts.
    fn spec(&self) -> &EnvSpec;
    /// Number of slots in this vector (shard).
    fn num_envs(&self) -> usize;
    /// Tasks of a split (fixed, deterministic; the splits are disjoint unless the environment's
    /// docs say otherwise, see [`Split`]). For huge task spaces this is a deterministic finite
    /// list.
    fn tasks(&self, split: Split) -> Vec<TaskId>;
    /// Put slot `slot` on `task` and start a new episode there (start of a trial). Does not
    /// write observations; use [`VecEnv::observe_slot`] or [`VecEnv::reset`] for them.
    fn set_task(&mut self, slot: usize, task: TaskId) -> Result<(), EnvError>;
    /// The task slot `slot` is on.
    fn task(&self, slot: usize) -> Result<TaskId, EnvError>;
    /// Reset every slot's episode (tasks kept) and write all observations.
    fn reset(&mut self, obs: &mut ObsBatch);
    /// Write slot `slot`'s current observation into row `slot` of `obs` (a buffer for all
    /// slots), without changing any state other than render caches.
    fn observe_slot(&mut self, slot: usize, obs: &mut ObsBatch) -> Result<(), EnvError>;
    /// Step all slots. `actions.len()` must equal `num_envs()`; an out-of-range action is an
    /// error and nothing is changed or written. Slots whose episode ends are auto-reset (crate
    /// docs).
    fn step(&mut self, actions: &[u32], out: &mut StepBatch) -> Result<(), EnvError>;
    /// The oracle's optimal (or shortest-path) action for each slot's current state;
    /// `out.len()` should be `num_envs()` (extra entries are left alone).
    fn oracle_actions(&self, out: &mut [u32]);
    /// A JSON description of a slot's state (position, heading, target, ...), for transcripts.
    /// An out-of-range slot gives `{"error": ...}`.
    fn describe(&self, slot: usize) -> serde_json::Value;
}

/// Check an action batch: length and range. Shared by all environments.
pub(crate) fn check_actions(spec: &EnvSpec, n: usize, actions: &[u32]) -> Result<(), EnvError> {
    if actions.len() != n {
        return Err(EnvError::ActionCount {
            got: actions.len(),
            expected: n,
        });
    }
    let k = spec.num_actions as u32;
    if actions.iter().any(|&a| a >= k) {
        // Slow path only on error: find the first bad one for the message.
        let (slot, &action) = actions
            .iter()
            .enumerate()
            .find(|(_, &a)| a >= k)
            .unwrap_or((0, &0));
        return Err(EnvError::ActionOutOfRange {
            env: spec.name.clone(),
            slot,
            action,
            num_actions: spec.num_actions,
        });
    }
    Ok(())
}

/// Check a slot index.
pub(crate) fn check_slot(slot: usize, n: usize) -> Result<(), EnvError> {
    if slot >= n {
        Err(EnvError::SlotOutOfRange { slot, num_envs: n })
    } else {
        Ok(())
    }
}

/// Check the arguments of [`EnvConfig::build`].
pub(crate) fn check_build(count: usize, first_slot: usize) -> Result<(), EnvError> {
    if count == 0 {
        return Err(EnvError::InvalidConfig(vec![
            "build: count must be >= 1, got 0".into(),
        ]));
    }
    if first_slot.checked_add(count).is_none() {
        return Err(EnvError::InvalidConfig(vec![format!(
            "build: first_slot {first_slot} + count {count} overflows"
        )]));
    }
    Ok(())
}

/// Declares [`EnvConfig`] and its name tables from one list: each entry is a variant (with its
/// config type and doc comment), its `icrl` name, and how to get its [`EnvFamily`]. This list
/// is the one place an environment is registered (docs/extending.md).
macro_rules! env_registry {
    ($( $(#[$doc:meta])* $variant:ident($config:ty) = $name:literal, family: |$c:ident| $family:expr; )*) => {
        /// The environment to run and its parameters; every variant's fields have the published
        /// defaults.
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub enum EnvConfig {
            $( $(#[$doc])* $variant($config), )*
        }

        impl EnvConfig {
            /// Every environment name, in [`EnvConfig`] order.
            pub const NAMES: [&'static str; [$($name),*].len()] = [$($name),*];

            /// The environment's name (one of [`EnvConfig::NAMES`]).
            pub fn name(&self) -> &'static str {
                match self {
                    $( EnvConfig::$variant(_) => $name, )*
                }
            }

            /// The default configuration of a named environment; an unknown name is an error
            /// that lists the valid names.
            pub fn from_name(name: &str) -> Result<EnvConfig, EnvError> {
                match name {
                    $( $name => Ok(EnvConfig::$variant(<$config>::default())), )*
                    _ => Err(EnvError::UnknownEnv {
                        name: name.to_string(),
                        valid: Self::NAMES.join(", "),
                    }),
                }
            }

            /// The serde variant name, used as the first element of validation paths.
            fn variant(&self) -> &'static str {
                match self {
                    $( EnvConfig::$variant(_) => stringify!($variant), )*
                }
            }

            /// The environment's family: for a grid world its rules and oracle.
            pub fn family(&self) -> EnvFamily<'_> {
                match self {
                    $( EnvConfig::$variant($c) => $family, )*
                }
            }
        }
    };
}

env_registry! {
    /// DPT's Dark Room (10x10, start (0,0), reward on every goal step), `"darkroom"`.
    DarkRoom(DarkRoomConfig) = "darkroom", family: |c| EnvFamily::Grid(c.rules());
    /// AD's Dark Room (9x9, start at the centre, 20 steps), `"darkroom_ad"`.
    DarkRoomAd(DarkRoomAdConfig) = "darkroom_ad", family: |c| EnvFamily::Grid(c.rules());
    /// AD's Dark Room Hard (17x17, reward once, ends at the goal), `"darkroom_hard"`.
    DarkRoomHard(DarkRoomHardConfig) = "darkroom_hard", family: |c| EnvFamily::Grid(c.rules());
    /// AD's Dark Key-to-Door (9x9, 50 steps, key then door), `"key_to_door"`.
    KeyToDoor(KeyToDoorConfig) = "key_to_door", family: |c| EnvFamily::Grid(c.rules());
    /// DPT's Gaussian multi-armed bandit, `"bandit"`.
    Bandit(BanditConfig) = "bandit", family: |c| EnvFamily::Bandit(c);
    /// DPT's Miniworld one-room task (first-person RGB), `"one_room"`.
    OneRoom(OneRoomConfig) = "one_room", family: |c| EnvFamily::OneRoom(c);
    /// Multi-room object navigation in procedural houses (first-person RGB), `"house_nav"`.
    HouseNav(HouseNavConfig) = "house_nav", family: |c| EnvFamily::HouseNav(c);
    /// DPT's Dark Room with a random start cell every episode, `"darkroom_random"`.
    DarkRoomRandom(DarkRoomRandomConfig) = "darkroom_random", family: |c| EnvFamily::Grid(c.rules());
}

/// The families of environments: the grid worlds share one engine, whose [`grid::GridRules`]
/// hold a world's rules and its oracle, so a new grid task is a config with its rules (see
/// docs/extending.md); the others are their own engines.
pub enum EnvFamily<'a> {
    /// A grid world: its rules (dynamics, rewards, splits, oracle).
    Grid(grid::GridRules),
    /// The Gaussian bandit.
    Bandit(&'a BanditConfig),
    /// The Miniworld-style room.
    OneRoom(&'a OneRoomConfig),
    /// The procedural houses.
    HouseNav(&'a HouseNavConfig),
}

impl EnvConfig {
    /// The rules (and oracle) of a grid world; None for the other families.
    pub fn grid_rules(&self) -> Option<grid::GridRules> {
        match self.family() {
            EnvFamily::Grid(rules) => Some(rules),
            _ => None,
        }
    }

    /// All impossible values, as (field path relative to this config, message), e.g.
    /// `("DarkRoom.size", "must be >= 2, got 0")`. Empty = valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let errs = match self.family() {
            EnvFamily::Grid(rules) => rules.validate(),
            EnvFamily::Bandit(c) => c.validate(),
            EnvFamily::OneRoom(c) => c.validate(),
            EnvFamily::HouseNav(c) => c.validate(),
        };
        let v = self.variant();
        errs.into_iter()
            .map(|(field, msg)| (format!("{v}.{field}"), msg))
            .collect()
    }

    /// [`EnvConfig::validate`] as a `Result`.
    pub fn check(&self) -> Result<(), EnvError> {
        let errs = self.validate();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(EnvError::InvalidConfig(
                errs.into_iter().map(|(p, m)| format!("{p}: {m}")).collect(),
            ))
        }
    }

    /// The observation/action spec. Meaningful only for a valid config (see
    /// [`EnvConfig::validate`]); never panics.
    pub fn spec(&self) -> EnvSpec {
        match self.family() {
            EnvFamily::Grid(rules) => rules.spec(),
            EnvFamily::Bandit(c) => c.spec(),
            EnvFamily::OneRoom(c) => c.spec(),
            EnvFamily::HouseNav(c) => c.spec(),
        }
    }

    /// Build the slots `[first_slot, first_slot + count)` of a larger batch. Per-slot randomness
    /// comes from an RNG seeded from `(seed, global slot index)`, so a shard produces exactly what
    /// the same slots produce in one big vector. Errors on an invalid config or `count == 0`.
    pub fn build(
        &self,
        seed: u64,
        first_slot: usize,
        count: usize,
    ) -> Result<Box<dyn VecEnv>, EnvError> {
        self.check()?;
        check_build(count, first_slot)?;
        Ok(match self.family() {
            EnvFamily::Grid(rules) => {
                Box::new(grid::GridVecEnv::new(rules, seed, first_slot, count))
            }
            EnvFamily::Bandit(c) => Box::new(bandit::BanditVecEnv::new(
                c.clone(),
                seed,
                first_slot,
                count,
            )),
            EnvFamily::OneRoom(c) => Box::new(one_room::OneRoomVecEnv::new(
                c.clone(),
                seed,
                first_slot,
                count,
            )?),
            EnvFamily::HouseNav(c) => Box::new(house_nav::HouseNavVecEnv::new(
                c.clone(),
                seed,
                first_slot,
                count,
            )?),
        })
    }
}

/// Validation helper: push `(field, message)` when `cond` fails.
pub(crate) fn require(
    errs: &mut Vec<(String, String)>,
    cond: bool,
    field: &str,
    msg: impl FnOnce() -> String,
) {
    if !cond {
        errs.push((field.to_string(), msg()));
    }
}

/// Validation helper for image sides: `1..=MAX_IMAGE_SIDE`.
pub(crate) fn check_image_side(errs: &mut Vec<(String, String)>, field: &str, v: usize) {
    require(errs, (1..=MAX_IMAGE_SIDE).contains(&v), field, || {
        format!("must be in 1..={MAX_IMAGE_SIDE}, got {v}")
    });
}

/// Validation helper for finite floats in a closed range.
pub(crate) fn check_range_f32(
    errs: &mut Vec<(String, String)>,
    field: &str,
    v: f32,
    lo: f32,
    hi: f32,
) {
    require(errs, v.is_finite() && v >= lo && v <= hi, field, || {
        format!("must be a finite number in [{lo}, {hi}], got {v}")
    });
}
