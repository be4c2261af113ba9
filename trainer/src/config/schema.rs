//! The run config: the file schema of every `icrl train` run. Sections belonging to other
//! crates (environment, model) are their crates' config types; defaults live in code.

use serde::{Deserialize, Serialize};

use agent::ModelConfig;
use envs::EnvConfig;
use sampler::SamplerConfig;

use super::load::Validate;

/// One run: what to train, on what, how to evaluate, log and checkpoint it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Short name of the experiment; part of the run folder's name.
    pub name: String,
    /// Master seed. The init seed and the experience seed are equal to it unless set
    /// ([`Config::init_seed`], [`Config::experience_seed`]): runs that set neither reproduce
    /// the runs made before the two were split.
    pub seed: u64,
    /// Seed of the model's initial weights and of the learner's own randomness (optimiser,
    /// minibatch order, depth-dropout draws). None = `seed`. Two runs with the same init seed
    /// start from identical shared weights, whatever their sink or position variant
    /// (variant-only parameters come from their own generator, agent/src/transformer.rs).
    pub init_seed: Option<u64>,
    /// Seed of the experience: the tasks drawn for trials, the environments' own randomness
    /// (random starts, noise), action sampling and episode shuffles. None = `seed`.
    pub experience_seed: Option<u64>,
    /// Train on the Validation tasks as well as on Train (the papers' whole training part, e.g.
    /// DPT's 80 Dark Room goals). false (the default): Validation stays unseen, so it can be
    /// used to tune settings. A run with true must not be evaluated on Validation (refused).
    /// Relic and Rl2 only (DPT's and AD's datasets are generated from Train).
    pub train_on_validation: bool,
    /// The environment and its task distribution.
    pub env: EnvConfig,
    /// The policy network.
    pub model: ModelConfig,
    /// The training method and its hyper-parameters.
    pub method: Method,
    /// Env worker threads and scheduling of rollout collection.
    pub sampler: SamplerConfig,
    /// In-context evaluation (one protocol for every method).
    pub eval: EvalConfig,
    /// TensorBoard and console output.
    pub logging: LoggingConfig,
    /// Checkpoint schedule and retention.
    pub checkpoint: CheckpointConfig,
    /// Device and threads.
    pub runtime: RuntimeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default".to_string(),
            seed: 0,
            init_seed: None,
            experience_seed: None,
            train_on_validation: false,
            env: EnvConfig::from_name("darkroom").expect("darkroom is a known env"),
            model: ModelConfig::default(),
            method: Method::Relic(PpoConfig::default()),
            sampler: SamplerConfig::default(),
            eval: EvalConfig::default(),
            logging: LoggingConfig::default(),
            checkpoint: CheckpointConfig::default(),
            runtime: RuntimeConfig::default(),
        }
    }
}

impl Config {
    /// The seed of the initial weights and of the learner's randomness (`init_seed`, else
    /// `seed`).
    pub fn init_seed(&self) -> u64 {
        self.init_seed.unwrap_or(self.seed)
    }

    /// The seed of the experience: tasks, env randomness, action sampling (`experience_seed`,
    /// else `seed`).
    pub fn experience_seed(&self) -> u64 {
        self.experience_seed.unwrap_or(self.seed)
    }

    /// The task splits training draws from: Train, and Validation with
    /// `train_on_validation`.
    pub fn training_splits(&self) -> Vec<envs::Split> {
        if self.train_on_validation {
            vec![envs::Split::Train, envs::Split::Validation]
        } else {
            vec![envs::Split::Train]
        }
    }

    /// Short method name for run folders and reports.
    pub fn method_name(&self) -> &'static str {
        match &self.method {
            Method::Relic(_) => "relic",
            Method::Dpt(_) => "dpt",
            Method::Ad(_) => "ad",
            Method::Rl2(_) => "rl2",
            Method::PpoTask(_) => "ppo",
            Method::BanditBaselines(_) => "bandit_baselines",
        }
    }
}

/// The training method.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub enum Method {
    /// ReLIC: PPO over multi-episode trials with partial updates.
    Relic(PpoConfig),
    /// DPT: supervised pretraining on in-context datasets (trainer/src/methods/dpt/).
    Dpt(super::baselines::DptConfig),
    /// Algorithm Distillation on learning histories (trainer/src/methods/ad.rs).
    Ad(super::baselines::AdConfig),
    /// RL²: a GRU policy trained with PPO over trials (trainer/src/methods/rl2.rs).
    Rl2(super::baselines::Rl2Config),
    /// PPO from scratch on each held-out task (trainer/src/methods/ppo_single_task.rs).
    PpoTask(super::baselines::PpoTaskConfig),
    /// Classic bandit algorithms on the held-out bandits (trainer/src/methods/bandit.rs).
    BanditBaselines(super::baselines::BanditBaselinesConfig),
}

/// PPO over long multi-episode trials with partial updates (ReLIC). Defaults follow ReLIC's
/// Dark Room setting where docs/references.md gives one, else its official PPO config.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Total environment steps to train for (all envs together).
    pub total_steps: u64,
    /// Parallel environments (one trial each per rollout).
    pub num_envs: usize,
    /// Steps per env in one rollout = the trial length T (many episodes on one task).
    pub rollout_len: usize,
    /// PPO updates inside one rollout (U): update k trains on steps [0, k*T/U) with the loss
    /// on the newest T/U steps. 1 = no partial updates.
    pub updates_per_rollout: usize,
    /// After a partial update, shuffle each env's completed episodes inside its context (the
    /// running episode stays last) before the cache is recomputed.
    pub shuffle_episodes: bool,
    /// One more update after the `updates_per_rollout` partial ones, over the whole trial with
    /// the loss on every step [0, T) (official ReLIC: `full_updates_per_rollout: 1`, so every
    /// token is trained twice per rollout). 0 or 1. With `updates_per_rollout: 1` it is a second
    /// update over the same trial.
    pub full_updates_per_rollout: usize,
    /// Let returns flow across episode ends inside a trial. false (official ReLIC: GAE masks =
    /// not done, and Dark Room signals done at its horizon): each episode is its own RL episode,
    /// advantages stop at every episode end (terminations and truncations alike). true: the
    /// trial is the RL episode, so exploring in an early episode is credited with the reward of
    /// later ones (an ablation variant). The single-episode baseline uses false with
    /// `model.inter_episode_attention: false`.
    pub returns_across_episodes: bool,
    /// Passes over the collected data per update.
    pub epochs: usize,
    /// Minibatches per epoch; each is a set of whole env sequences.
    pub minibatches: usize,
    /// Minibatches whose gradients are summed before one optimiser step.
    pub grad_accum: usize,
    /// Clipping range of the probability ratio.
    pub clip: f64,
    /// Clip the value update to this range around the old value (None = unclipped).
    pub value_clip: Option<f64>,
    /// Weight of the value loss.
    pub value_coef: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Normalise advantages per minibatch (ReLIC does not).
    pub normalize_advantages: bool,
    /// Discount factor.
    pub gamma: f64,
    /// GAE lambda.
    pub gae_lambda: f64,
    /// Peak learning rate of Adam.
    pub lr: f64,
    /// Adam epsilon.
    pub adam_eps: f64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Linear warm-up length in env steps, from `lr * warmup_start_factor` to `lr`.
    pub warmup_steps: u64,
    /// Learning-rate factor at step 0 of the warm-up.
    pub warmup_start_factor: f64,
    /// Learning rate at the end of the cosine decay (reached at `total_steps`).
    pub final_lr: f64,
    /// Stop with an error after this many consecutive updates with a NaN/inf loss.
    pub max_bad_updates: usize,
    /// End the run after this many PPO updates (partial and full, counted over the whole run),
    /// even inside a trial: the trial is cut there, and the run evaluates, checkpoints and
    /// finishes as if `total_steps` were reached. For smoke tests and device checks of
    /// long-trial configs (`scripts/gpu_check.sh` trains a few partial updates of one
    /// 65,536-step trial). None: train to `total_steps`.
    pub stop_after_updates: Option<u64>,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            total_steps: 2_000_000,
            num_envs: 16,
            rollout_len: 512,
            updates_per_rollout: 4,
            shuffle_episodes: true,
            full_updates_per_rollout: 1,
            returns_across_episodes: false,
            epochs: 4,
            minibatches: 4,
            grad_accum: 1,
            clip: 0.2,
            value_clip: None,
            value_coef: 0.5,
            entropy_coef: 0.01,
            normalize_advantages: false,
            gamma: 0.99,
            gae_lambda: 0.95,
            lr: 2e-4,
            adam_eps: 1e-5,
            max_grad_norm: 0.2,
            warmup_steps: 100_000,
            warmup_start_factor: 1e-3,
            final_lr: 1e-5,
            max_bad_updates: 5,
            stop_after_updates: None,
        }
    }
}

impl Validate for PpoConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |field: &str, message: String| out.push((field.to_string(), message));
        for (field, value) in [
            ("num_envs", self.num_envs),
            ("rollout_len", self.rollout_len),
            ("updates_per_rollout", self.updates_per_rollout),
            ("epochs", self.epochs),
            ("minibatches", self.minibatches),
            ("grad_accum", self.grad_accum),
            ("max_bad_updates", self.max_bad_updates),
        ] {
            if value == 0 {
                bad(field, "must be at least 1".into());
            }
        }
        if self.total_steps == 0 {
            bad("total_steps", "must be at least 1".into());
        }
        if self.stop_after_updates == Some(0) {
            bad("stop_after_updates", "must be at least 1 (or None)".into());
        }
        if self.full_updates_per_rollout > 1 {
            bad(
                "full_updates_per_rollout",
                format!("must be 0 or 1, got {}", self.full_updates_per_rollout),
            );
        }
        if self.updates_per_rollout > 0
            && !self.rollout_len.is_multiple_of(self.updates_per_rollout)
        {
            bad(
                "updates_per_rollout",
                format!(
                    "rollout_len = {} is not divisible by updates_per_rollout = {}",
                    self.rollout_len, self.updates_per_rollout
                ),
            );
        }
        if self.minibatches > 0
            && self.num_envs > 0
            && !self.num_envs.is_multiple_of(self.minibatches)
        {
            bad(
                "minibatches",
                format!(
                    "num_envs = {} is not divisible by minibatches = {} (minibatches are whole env sequences)",
                    self.num_envs, self.minibatches
                ),
            );
        }
        for (field, value) in [
            ("lr", self.lr),
            ("adam_eps", self.adam_eps),
            ("clip", self.clip),
        ] {
            if !(value.is_finite() && value > 0.0) {
                bad(field, format!("must be > 0, got {value}"));
            }
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            bad(
                "max_grad_norm",
                format!("must be > 0, got {}", self.max_grad_norm),
            );
        }
        if !(self.final_lr.is_finite() && self.final_lr >= 0.0 && self.final_lr <= self.lr) {
            bad(
                "final_lr",
                format!("must be in [0, lr], got {}", self.final_lr),
            );
        }
        if !(self.warmup_start_factor > 0.0 && self.warmup_start_factor <= 1.0) {
            bad(
                "warmup_start_factor",
                format!("must be in (0, 1], got {}", self.warmup_start_factor),
            );
        }
        for (field, value) in [("gamma", self.gamma), ("gae_lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&value) {
                bad(field, format!("must be in [0, 1], got {value}"));
            }
        }
        for (field, value) in [
            ("value_coef", self.value_coef),
            ("entropy_coef", self.entropy_coef),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                bad(field, format!("must be >= 0, got {value}"));
            }
        }
        if let Some(v) = self.value_clip {
            if !(v.is_finite() && v > 0.0) {
                bad("value_clip", format!("must be > 0 when set, got {v}"));
            }
        }
        out
    }
}

/// Which tasks evaluation runs on (the env's splits, see `envs::Split`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalSplit {
    /// The held-out tasks for final numbers. Never tune settings on them.
    Test,
    /// The training tasks.
    Train,
    /// The held-out tasks for tuning: a fixed part of the training part that a run trains on
    /// only with `train_on_validation: true` (then evaluating on them is refused).
    Validation,
}

impl EvalSplit {
    /// The env's split.
    pub fn split(self) -> envs::Split {
        match self {
            EvalSplit::Test => envs::Split::Test,
            EvalSplit::Train => envs::Split::Train,
            EvalSplit::Validation => envs::Split::Validation,
        }
    }
}

/// In-context evaluation: N trials per task, E episodes per trial, context carried across
/// episodes; the result is return (and success) per episode index with 95% intervals.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate every this many env steps of training (0 = only at the end).
    pub every_steps: u64,
    /// Task split to evaluate on.
    pub split: EvalSplit,
    /// At most this many tasks of the split (None = all).
    pub max_tasks: Option<usize>,
    /// Trials per task.
    pub trials_per_task: usize,
    /// Episodes per trial (the length of the in-context curve).
    pub episodes_per_trial: usize,
    /// Act greedily (argmax) instead of sampling.
    pub greedy: bool,
    /// Tokens the policy's KV cache holds during evaluation (None = the trained context, the
    /// trial length). A trial running past it slides the window: the oldest tokens drop out.
    pub context_window: Option<usize>,
    /// Runtime only (never in a config file): names an evaluation that departs from the
    /// config's protocol (`icrl eval --greedy`, `--trials`, ...), so that its files
    /// (`eval/<step>_<tag>.json`) sit beside the training-time ones instead of replacing them.
    #[serde(skip)]
    pub tag: String,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every_steps: 0,
            split: EvalSplit::Test,
            max_tasks: None,
            trials_per_task: 1,
            episodes_per_trial: 10,
            greedy: false,
            context_window: None,
            tag: String::new(),
        }
    }
}

impl Validate for EvalConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.trials_per_task == 0 {
            out.push(("trials_per_task".into(), "must be at least 1".into()));
        }
        if self.episodes_per_trial == 0 {
            out.push(("episodes_per_trial".into(), "must be at least 1".into()));
        }
        if self.context_window == Some(0) {
            out.push((
                "context_window".into(),
                "must be at least 1 when set".into(),
            ));
        }
        if self.max_tasks == Some(0) {
            out.push(("max_tasks".into(), "must be at least 1 when set".into()));
        }
        out
    }
}

/// TensorBoard and console output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Write TensorBoard event files into the run folder.
    pub tensorboard: bool,
    /// What to do when writing logs fails.
    pub on_error: LogPolicy,
    /// Log rendered frames (image envs) every this many updates (0 = never).
    pub frames_every_updates: usize,
    /// Show a progress bar (only ever drawn on a terminal).
    pub progress: bool,
    /// Log sink and attention diagnostics, weight histograms and per-layer gradient norms
    /// every this many ReLIC updates, and attention diagnostics at every evaluation of a
    /// transformer policy (ReLIC, AD); 0 = never. The attention statistics come from an extra
    /// no-grad forward with explicit attention probabilities over `diagnostics_sequences`
    /// sequences; training is bit-identical with them on or off. Cost on
    /// `configs/darkroom_relic.ron` (2-core CPU, every 5 updates = once per rollout, at the full
    /// update): 0.4-0.6% of the training time (README, "Attention diagnostics").
    pub diagnostics_every_updates: usize,
    /// Sequences (env slots at training time, trials spread over the tasks at evaluation) the
    /// attention diagnostics look at; each whole from its start up to the update's prefix.
    pub diagnostics_sequences: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            tensorboard: true,
            on_error: LogPolicy::Stop,
            frames_every_updates: 0,
            progress: true,
            diagnostics_every_updates: 5,
            diagnostics_sequences: 4,
        }
    }
}

/// Checkpoint schedule and retention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Save at the first rollout boundary after every this many updates (0 = only at the end
    /// and on interruption). Checkpoints are taken between rollouts, where a resumed run
    /// continues exactly.
    pub every_updates: usize,
    /// Keep the last K checkpoints.
    pub keep_last: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_updates: 20,
            keep_last: 3,
        }
    }
}

impl Validate for LoggingConfig {
    fn validate(&self) -> Vec<(String, String)> {
        if self.diagnostics_every_updates > 0 && self.diagnostics_sequences == 0 {
            vec![(
                "diagnostics_sequences".into(),
                "must be at least 1 while diagnostics_every_updates > 0".into(),
            )]
        } else {
            Vec::new()
        }
    }
}

impl Validate for CheckpointConfig {
    fn validate(&self) -> Vec<(String, String)> {
        if self.keep_last == 0 {
            vec![("keep_last".into(), "must be at least 1".into())]
        } else {
            Vec::new()
        }
    }
}

/// What a run does when logging hits an I/O error (disk full, log folder removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum LogPolicy {
    /// Return the error, so the trainer can stop cleanly (after saving a checkpoint if it
    /// can). The default: a run without its logs is usually worthless.
    #[default]
    Stop,
    /// Print one warning to stderr and keep training without logging.
    Continue,
}

/// Device and threads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// `auto` (CUDA if available), `cpu`, `cuda` or `cuda:N`; `--device` overrides it.
    pub device: String,
    /// libtorch intra-op threads (0 = the cores available to the process).
    pub torch_threads: usize,
    /// Data-parallel model replicas for ReLIC's PPO minibatches and DPT's batches: each
    /// minibatch's sequences are split into this many shards, each run forward and backward on
    /// its own copy of the model in its own OS thread with one libtorch intra-op thread, and
    /// the summed gradients make one optimiser step ([`crate::replicas`]). 0 or 1 = serial
    /// (one forward over the whole minibatch with `torch_threads`). Same update up to float
    /// summation order; worth it on CPU for tiny models, where a second intra-op thread helps
    /// little. At most one replica per sequence of a minibatch (ReLIC: `num_envs /
    /// minibatches`; DPT: `batch_size`), and none on CUDA (the step runs serially there);
    /// other methods need 1.
    pub update_replicas: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            device: "auto".to_string(),
            torch_threads: 0,
            update_replicas: 1,
        }
    }
}

impl Validate for RuntimeConfig {
    fn validate(&self) -> Vec<(String, String)> {
        match crate::info::parse_device(&self.device) {
            Ok(_) => Vec::new(),
            Err(e) => vec![("device".into(), e.to_string())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_experience_seeds_default_to_seed_and_can_be_set_apart() {
        let mut cfg = Config {
            seed: 7,
            ..Config::default()
        };
        assert_eq!((cfg.init_seed(), cfg.experience_seed()), (7, 7));
        cfg.init_seed = Some(3);
        assert_eq!((cfg.init_seed(), cfg.experience_seed()), (3, 7));
        cfg.experience_seed = Some(11);
        assert_eq!((cfg.init_seed(), cfg.experience_seed()), (3, 11));
    }

    #[test]
    fn ppo_defaults_follow_the_official_recipe_and_full_updates_are_0_or_1() {
        let ppo = PpoConfig::default();
        assert_eq!(ppo.full_updates_per_rollout, 1);
        assert!(!ppo.returns_across_episodes);
        assert!(ppo.validate().is_empty());
        let two = PpoConfig {
            full_updates_per_rollout: 2,
            ..PpoConfig::default()
        };
        let problems = two.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "full_updates_per_rollout");
    }

    #[test]
    fn validation_scores_are_refused_for_a_run_that_trains_on_validation() {
        let mut cfg = Config::default();
        cfg.eval.split = EvalSplit::Validation;
        assert!(cfg.validate().is_empty());
        assert_eq!(cfg.training_splits(), vec![envs::Split::Train]);
        cfg.train_on_validation = true;
        assert_eq!(
            cfg.training_splits(),
            vec![envs::Split::Train, envs::Split::Validation]
        );
        let problems = cfg.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "eval.split");
        cfg.eval.split = EvalSplit::Test;
        assert!(cfg.validate().is_empty());
    }
}
