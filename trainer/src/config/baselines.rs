//! The config sections of the baselines (docs/architecture.md): DPT, Algorithm Distillation, RL², PPO
//! from scratch per task, and the classic bandit algorithms, plus the `data` section shared by
//! the two supervised methods (DPT, AD). Defaults follow docs/references.md where it gives a value.

use serde::{Deserialize, Serialize};

use super::load::Validate;

/// Collects `(field, message)` problems of a section.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn at_least(&mut self, field: &str, value: u64, min: u64) {
        if value < min {
            self.0
                .push((field.into(), format!("must be at least {min}, got {value}")));
        }
    }
    fn positive(&mut self, field: &str, value: f64) {
        if !(value.is_finite() && value > 0.0) {
            self.0.push((
                field.into(),
                format!("must be a finite number > 0, got {value}"),
            ));
        }
    }
    fn non_negative(&mut self, field: &str, value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            self.0.push((
                field.into(),
                format!("must be a finite number >= 0, got {value}"),
            ));
        }
    }
    fn unit(&mut self, field: &str, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.0
                .push((field.into(), format!("must be in [0, 1], got {value}")));
        }
    }
    fn push(&mut self, field: &str, message: String) {
        self.0.push((field.into(), message));
    }
    fn nest(&mut self, section: &str, inner: Vec<(String, String)>) {
        self.0.extend(super::load::prefixed(section, inner));
    }
}

/// How the in-context datasets of DPT (and AD's learning histories) are collected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextKind {
    /// DPT's "uniform" contexts (grid worlds only): every transition starts in a uniformly
    /// random state with a uniformly random action; next state and reward from the dynamics.
    Uniform,
    /// Consecutive steps of a uniformly random policy from the start of a trial (episodes
    /// auto-reset inside the context). Works on every environment.
    RandomWalk,
    /// Windows of learning histories of tabular Q-learning over hashed observations (the
    /// source algorithm of AD; also usable as DPT contexts). Works on every environment.
    LearningHistory,
    /// DPT's bandit contexts (bandit only): arm probabilities (1 - w) Dirichlet(1) +
    /// w onehot(random arm) with w drawn from {0, 0.1, ..., 1}, pulls i.i.d. from them.
    DirichletMixture,
}

/// Dataset generation (`icrl data`). The file is cached under `cache_dir` by a hash of this
/// section (without `cache_dir`) and the env section, so `icrl train` generates it only once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// How contexts are collected.
    pub context: ContextKind,
    /// Use at most this many tasks of the train split, the first ones (None = all).
    pub max_tasks: Option<usize>,
    /// Records per training task (DPT Dark Room: 1000 contexts per goal, 80K in all).
    pub samples_per_task: usize,
    /// Transitions per record: the context length of DPT (Dark Room 100, bandit 500), or the
    /// length of each stored learning history for AD.
    pub context_len: usize,
    /// `LearningHistory` only: steps of each source learning history; each record is a window
    /// of `context_len` consecutive steps of it (the whole history when equal).
    pub history_len: usize,
    /// `LearningHistory` only: records cut from each source history (random windows).
    pub windows_per_history: usize,
    /// Q-learning source: step size of the tabular update.
    pub q_lr: f64,
    /// Q-learning source: discount factor.
    pub q_gamma: f64,
    /// Q-learning source: exploration rate at the start of a history (decays linearly).
    pub q_epsilon_start: f64,
    /// Q-learning source: exploration rate at the end of a history.
    pub q_epsilon_end: f64,
    /// Seed of the generator (its own, so runs of different seeds share one dataset).
    pub seed: u64,
    /// Folder of the dataset cache; None = `datasets/` inside the runs folder (`--out`).
    pub cache_dir: Option<String>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            context: ContextKind::Uniform,
            max_tasks: None,
            samples_per_task: 1000,
            context_len: 100,
            history_len: 2000,
            windows_per_history: 1,
            q_lr: 0.5,
            q_gamma: 0.9,
            q_epsilon_start: 1.0,
            q_epsilon_end: 0.05,
            seed: 0,
            cache_dir: None,
        }
    }
}

impl Validate for DataConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.at_least("samples_per_task", self.samples_per_task as u64, 1);
        p.at_least("context_len", self.context_len as u64, 1);
        p.at_least("windows_per_history", self.windows_per_history as u64, 1);
        if self.max_tasks == Some(0) {
            p.push("max_tasks", "must be at least 1 when set".into());
        }
        if self.context == ContextKind::LearningHistory && self.history_len < self.context_len {
            p.push(
                "history_len",
                format!(
                    "must be >= context_len = {} with LearningHistory, got {}",
                    self.context_len, self.history_len
                ),
            );
        }
        p.positive("q_lr", self.q_lr);
        p.unit("q_lr", self.q_lr);
        p.unit("q_gamma", self.q_gamma);
        p.unit("q_epsilon_start", self.q_epsilon_start);
        p.unit("q_epsilon_end", self.q_epsilon_end);
        p.0
    }
}

/// What DPT sees as its context during online evaluation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnlineContext {
    /// The transitions of the last k completed episodes of the trial (DPT Dark Room: k = 1;
    /// the first episode runs with an empty context).
    PreviousEpisodes(usize),
    /// Every transition of the trial so far, current episode included (DPT bandits), the
    /// newest `context_len` of them.
    Trial,
}

/// How DPT feeds observation vectors to its transition tokens.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateEncoding {
    /// The env's observation vector as is (DPT: raw `(x, y)` on Dark Room).
    Raw,
    /// Grid worlds: the coordinates `(x, y)` one-hot per axis (2 x size features; further
    /// features, such as Key-to-Door's key flag, kept). A transition whose reward reveals the
    /// goal then carries the goal's cell as a pattern that attention can copy without
    /// blurring its coordinates.
    GridOneHot,
}

/// DPT (Lee et al. 2023): supervised pretraining to predict the optimal action of a query
/// state from an in-context dataset; cross-entropy at every context position.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DptConfig {
    /// The pretraining dataset.
    pub data: DataConfig,
    /// Optimiser steps.
    pub steps: u64,
    /// Contexts per optimiser step (official code: 64; paper: 128).
    pub batch_size: usize,
    /// Peak learning rate of AdamW (Dark Room: 1e-3; bandit, Miniworld: 1e-4).
    pub lr: f64,
    /// Decoupled weight decay of AdamW (DPT: 1e-4).
    pub weight_decay: f64,
    /// Linear warm-up of the learning rate over this many steps (from 1% of `lr`).
    pub warmup_steps: u64,
    /// Learning rate reached by cosine decay at `steps` (= `lr` for a constant rate, as DPT).
    pub final_lr: f64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// How observation vectors enter the transition tokens.
    pub state_encoding: StateEncoding,
    /// Shuffle the order of each context's transitions in every batch (the (s, a, r, s')
    /// tuples stay intact). DPT's contexts are unordered sets.
    pub shuffle_context: bool,
    /// What the model sees as its context during online evaluation.
    pub online_context: OnlineContext,
    /// Offline evaluation: fixed contexts per held-out task (Dark Room: 5 x 20 goals = 100).
    pub offline_contexts_per_task: usize,
    /// Run the offline evaluation every this many optimiser steps (0 = only at the end).
    pub offline_eval_every: u64,
    /// Stop with an error after this many consecutive steps with a non-finite loss.
    pub max_bad_updates: usize,
    /// Bandit envs only: the classic algorithms DPT is compared with at the end of training
    /// (same held-out bandits, same offline datasets, same reward noise).
    pub bandit_comparison: BanditBaselinesConfig,
}

impl Default for DptConfig {
    fn default() -> Self {
        DptConfig {
            data: DataConfig::default(),
            steps: 20_000,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 1e-4,
            warmup_steps: 0,
            final_lr: 1e-3,
            max_grad_norm: 1.0,
            state_encoding: StateEncoding::Raw,
            shuffle_context: true,
            online_context: OnlineContext::PreviousEpisodes(1),
            offline_contexts_per_task: 5,
            offline_eval_every: 0,
            max_bad_updates: 5,
            bandit_comparison: BanditBaselinesConfig::default(),
        }
    }
}

/// The supervised optimiser settings DPT and AD share, for their common checks.
struct SupervisedSettings {
    steps: u64,
    batch: usize,
    lr: f64,
    final_lr: f64,
    wd: f64,
    clip: f64,
    bad: usize,
}

/// Shared checks of the supervised optimiser settings.
fn check_supervised(p: &mut Problems, s: SupervisedSettings) {
    let SupervisedSettings {
        steps,
        batch,
        lr,
        final_lr,
        wd,
        clip,
        bad,
    } = s;
    p.at_least("steps", steps, 1);
    p.at_least("batch_size", batch as u64, 1);
    p.positive("lr", lr);
    if !(final_lr.is_finite() && final_lr >= 0.0 && final_lr <= lr) {
        p.push("final_lr", format!("must be in [0, lr], got {final_lr}"));
    }
    p.non_negative("weight_decay", wd);
    p.positive("max_grad_norm", clip);
    p.at_least("max_bad_updates", bad as u64, 1);
}

impl Validate for DptConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.nest("data", self.data.validate());
        check_supervised(
            &mut p,
            SupervisedSettings {
                steps: self.steps,
                batch: self.batch_size,
                lr: self.lr,
                final_lr: self.final_lr,
                wd: self.weight_decay,
                clip: self.max_grad_norm,
                bad: self.max_bad_updates,
            },
        );
        p.at_least(
            "offline_contexts_per_task",
            self.offline_contexts_per_task as u64,
            1,
        );
        p.nest("bandit_comparison", self.bandit_comparison.validate());
        if self.online_context == OnlineContext::PreviousEpisodes(0) {
            p.push(
                "online_context",
                "PreviousEpisodes needs at least 1 episode".into(),
            );
        }
        p.0
    }
}

/// Algorithm Distillation (Laskin et al. 2022): a causal transformer trained to predict the
/// next action over multi-episode windows of learning histories.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdConfig {
    /// The learning histories (`context: LearningHistory`; `context_len` = steps per stored
    /// history).
    pub data: DataConfig,
    /// Steps per training window (AD: 2-4 episodes); windows never cross histories (tasks).
    /// Also the sliding context of the KV cache in evaluation.
    pub window: usize,
    /// Optimiser steps.
    pub steps: u64,
    /// Windows per optimiser step (AD: 128).
    pub batch_size: usize,
    /// Peak learning rate (AD: 3e-4).
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Linear warm-up of the learning rate (from 1% of `lr`).
    pub warmup_steps: u64,
    /// Learning rate reached by cosine decay at `steps` (AD: 2e-6).
    pub final_lr: f64,
    /// Global gradient-norm clip (AD: 1).
    pub max_grad_norm: f64,
    /// Stop with an error after this many consecutive steps with a non-finite loss.
    pub max_bad_updates: usize,
}

impl Default for AdConfig {
    fn default() -> Self {
        AdConfig {
            data: DataConfig {
                context: ContextKind::LearningHistory,
                samples_per_task: 4,
                context_len: 2000,
                history_len: 2000,
                ..DataConfig::default()
            },
            window: 400,
            steps: 5000,
            batch_size: 32,
            lr: 3e-4,
            weight_decay: 0.0,
            warmup_steps: 200,
            final_lr: 2e-6,
            max_grad_norm: 1.0,
            max_bad_updates: 5,
        }
    }
}

impl Validate for AdConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.nest("data", self.data.validate());
        check_supervised(
            &mut p,
            SupervisedSettings {
                steps: self.steps,
                batch: self.batch_size,
                lr: self.lr,
                final_lr: self.final_lr,
                wd: self.weight_decay,
                clip: self.max_grad_norm,
                bad: self.max_bad_updates,
            },
        );
        p.at_least("window", self.window as u64, 1);
        if self.data.context != ContextKind::LearningHistory {
            p.push(
                "data.context",
                format!(
                    "AD learns from LearningHistory data, got {:?}",
                    self.data.context
                ),
            );
        }
        if self.window > self.data.context_len {
            p.push(
                "window",
                format!(
                    "must be <= data.context_len = {} (windows never leave a history), got {}",
                    self.data.context_len, self.window
                ),
            );
        }
        p.0
    }
}

/// PPO hyper-parameters shared by RL² and the single-task PPO baseline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PpoCore {
    /// Passes over each rollout.
    pub epochs: usize,
    /// Minibatches per epoch (whole env sequences).
    pub minibatches: usize,
    /// Ratio clip range.
    pub clip: f64,
    /// Weight of the value loss.
    pub value_coef: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Normalise advantages per minibatch.
    pub normalize_advantages: bool,
    /// Discount factor.
    pub gamma: f64,
    /// GAE lambda.
    pub gae_lambda: f64,
    /// Adam learning rate (constant).
    pub lr: f64,
    /// Adam epsilon.
    pub adam_eps: f64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
}

impl Default for PpoCore {
    fn default() -> Self {
        PpoCore {
            epochs: 4,
            minibatches: 4,
            clip: 0.2,
            value_coef: 0.5,
            entropy_coef: 0.01,
            normalize_advantages: true,
            gamma: 0.99,
            gae_lambda: 0.95,
            lr: 3e-4,
            adam_eps: 1e-5,
            max_grad_norm: 0.5,
        }
    }
}

impl Validate for PpoCore {
    fn validate(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.at_least("epochs", self.epochs as u64, 1);
        p.at_least("minibatches", self.minibatches as u64, 1);
        p.positive("clip", self.clip);
        p.non_negative("value_coef", self.value_coef);
        p.non_negative("entropy_coef", self.entropy_coef);
        p.unit("gamma", self.gamma);
        p.unit("gae_lambda", self.gae_lambda);
        p.positive("lr", self.lr);
        p.positive("adam_eps", self.adam_eps);
        p.positive("max_grad_norm", self.max_grad_norm);
        p.0
    }
}

/// RL² (Duan et al. 2016): a GRU policy trained with PPO over trials of several episodes on
/// one task; the hidden state carries across the episodes of a trial and is zeroed between
/// trials. The token encoder is sized by the `model` section (`d_model`, `encoder_hidden`,
/// `cnn_channels`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Rl2Config {
    /// Total environment steps (all envs together).
    pub total_steps: u64,
    /// Parallel environments (one trial each per rollout).
    pub num_envs: usize,
    /// Episodes per trial (DPT's RL² baseline: 4); a rollout is one trial of
    /// `episodes_per_trial * horizon` steps per env.
    pub episodes_per_trial: usize,
    /// GRU hidden size.
    pub hidden: usize,
    /// The PPO settings.
    pub ppo: PpoCore,
    /// Stop with an error after this many consecutive updates with a non-finite loss.
    pub max_bad_updates: usize,
}

impl Default for Rl2Config {
    fn default() -> Self {
        Rl2Config {
            total_steps: 1_000_000,
            num_envs: 16,
            episodes_per_trial: 4,
            hidden: 128,
            ppo: PpoCore::default(),
            max_bad_updates: 5,
        }
    }
}

impl Validate for Rl2Config {
    fn validate(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.at_least("total_steps", self.total_steps, 1);
        p.at_least("num_envs", self.num_envs as u64, 1);
        p.at_least("episodes_per_trial", self.episodes_per_trial as u64, 1);
        p.at_least("hidden", self.hidden as u64, 1);
        p.at_least("max_bad_updates", self.max_bad_updates as u64, 1);
        p.nest("ppo", self.ppo.validate());
        if self.ppo.minibatches > 0 && !self.num_envs.is_multiple_of(self.ppo.minibatches) {
            p.push(
                "ppo.minibatches",
                format!(
                    "num_envs = {} is not divisible by minibatches = {}",
                    self.num_envs, self.ppo.minibatches
                ),
            );
        }
        p.0
    }
}

/// PPO from scratch on each held-out task (a small MLP on the current observation, no memory
/// across tasks): the "how fast does plain RL learn this task" reference. Its curve is the
/// mean return of the k-th round of episodes while learning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PpoTaskConfig {
    /// Env steps of learning per task (DPT's PPO baseline: 100K on Dark Room).
    pub steps_per_task: u64,
    /// Parallel envs on the task.
    pub num_envs: usize,
    /// Steps per env between updates.
    pub rollout_len: usize,
    /// Hidden width of the two-layer tanh MLP (actor and critic each).
    pub hidden: usize,
    /// Image observations are average-pooled to this side before the MLP (0 = no images).
    pub image_pool: usize,
    /// The PPO settings.
    pub ppo: PpoCore,
}

impl Default for PpoTaskConfig {
    fn default() -> Self {
        PpoTaskConfig {
            steps_per_task: 100_000,
            num_envs: 8,
            rollout_len: 256,
            hidden: 64,
            image_pool: 8,
            ppo: PpoCore::default(),
        }
    }
}

impl Validate for PpoTaskConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.at_least("steps_per_task", self.steps_per_task, 1);
        p.at_least("num_envs", self.num_envs as u64, 1);
        p.at_least("rollout_len", self.rollout_len as u64, 1);
        p.at_least("hidden", self.hidden as u64, 1);
        p.nest("ppo", self.ppo.validate());
        let rows = self.num_envs.saturating_mul(self.rollout_len);
        if self.ppo.minibatches > rows {
            p.push(
                "ppo.minibatches",
                format!("must be at most num_envs * rollout_len = {rows}"),
            );
        }
        p.0
    }
}

/// A classic bandit algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanditAlgo {
    /// Pull the arm with the highest empirical mean (each arm once first, online).
    EmpiricalMean,
    /// Upper confidence bound: mean + c / sqrt(n) (DPT: c = 1).
    Ucb,
    /// Gaussian Thompson sampling with a N(prior_mean, prior_std^2) prior and known noise.
    Thompson,
    /// Lower confidence bound (offline only): mean - c / sqrt(n).
    Lcb,
}

/// The classic bandit algorithms, run on the held-out bandits: offline (pick an arm from a
/// fixed Dirichlet-mixture dataset) and online (cumulative regret over the horizon).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BanditBaselinesConfig {
    /// Algorithms to run (LCB is offline only).
    pub algorithms: Vec<BanditAlgo>,
    /// Coefficient c of the confidence bonus c / sqrt(n) of UCB and LCB (DPT: 1).
    pub bonus: f64,
    /// Prior mean of each arm for Thompson sampling (arm means are U[0, 1]).
    pub prior_mean: f64,
    /// Prior standard deviation for Thompson sampling.
    pub prior_std: f64,
    /// Offline: dataset sizes at which suboptimality is reported (each <= the horizon).
    pub offline_sizes: Vec<usize>,
    /// Online: pulls per bandit (None = the env's horizon).
    pub online_steps: Option<usize>,
}

impl Default for BanditBaselinesConfig {
    fn default() -> Self {
        BanditBaselinesConfig {
            algorithms: vec![
                BanditAlgo::EmpiricalMean,
                BanditAlgo::Ucb,
                BanditAlgo::Thompson,
                BanditAlgo::Lcb,
            ],
            bonus: 1.0,
            prior_mean: 0.5,
            prior_std: 0.5,
            offline_sizes: vec![1, 5, 10, 20, 50, 100, 200, 500],
            online_steps: None,
        }
    }
}

impl Validate for BanditBaselinesConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.non_negative("bonus", self.bonus);
        if !self.prior_mean.is_finite() {
            p.push("prior_mean", "must be finite".into());
        }
        p.positive("prior_std", self.prior_std);
        if self.offline_sizes.is_empty() || self.offline_sizes.contains(&0) {
            p.push(
                "offline_sizes",
                "must be a non-empty list of sizes >= 1".into(),
            );
        }
        if self.online_steps == Some(0) {
            p.push("online_steps", "must be at least 1 when set".into());
        }
        p.0
    }
}
