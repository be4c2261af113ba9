//! The result types that evaluations write into a run folder and reports read back: the
//! in-context curve of the shared protocol (`eval/<step>.json`), DPT's offline evaluation
//! (`offline/<step>.json`) and the bandit comparison (`bandit/<step>.json`). Their JSON form is
//! a file format: fields are only ever added, with defaults for older files.

use serde::{Deserialize, Serialize};

use crate::config::EvalSplit;
use crate::stats::MeanCi;

/// One point of the in-context curve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CurvePoint {
    /// Episode index within the trial (1-based, as plotted).
    pub episode: usize,
    /// Return of that episode: mean over all trials, interval over tasks (trials clustered by
    /// task; `n` = tasks).
    pub ret: MeanCi,
    /// Success rate of that episode (for envs that define success).
    pub success: Option<MeanCi>,
}

/// An evaluation's result, as written to `eval/<step>.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalResult {
    /// Training step (env steps) of the evaluated policy.
    pub step: u64,
    /// Environment name.
    pub env: String,
    /// Method name.
    pub method: String,
    /// Task split evaluated.
    pub split: EvalSplit,
    /// Tasks evaluated.
    pub tasks: usize,
    /// Trials per task.
    pub trials_per_task: usize,
    /// Episodes per trial.
    pub episodes_per_trial: usize,
    /// Greedy (true) or sampled actions.
    pub greedy: bool,
    /// The in-context learning curve, one point per episode index.
    pub curve: Vec<CurvePoint>,
    /// Returns as `[trial][episode]`, trials ordered by task then trial, for reports.
    pub returns: Vec<Vec<f64>>,
    /// Empty for the config's own protocol; otherwise what differs (`greedy_t10`, ...), which
    /// also names the files and the TensorBoard section.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
}

impl EvalResult {
    /// Mean return of episodes `from..=to` (1-based, inclusive) per trial, summarised with the
    /// interval clustered by task.
    pub fn mean_over_episodes(&self, from: usize, to: usize) -> MeanCi {
        let per_trial: Vec<f64> = self
            .returns
            .iter()
            .map(|r| {
                let span = &r[from - 1..to.min(r.len())];
                span.iter().sum::<f64>() / span.len().max(1) as f64
            })
            .collect();
        crate::stats::clustered_by_task(&per_trial, self.tasks)
    }
}

/// Sub-folder of a run holding offline evaluation results.
pub const OFFLINE_DIR: &str = "offline";

/// The result of an offline evaluation, as written to `offline/<step>.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OfflineResult {
    /// Training step of the evaluated model.
    pub step: u64,
    /// Environment name.
    pub env: String,
    /// Context generator of the fixed contexts.
    pub context: String,
    /// Held-out tasks.
    pub tasks: usize,
    /// Fixed contexts (tasks x contexts per task).
    pub contexts: usize,
    /// Contexts holding at least one rewarded transition (on Dark Room: the goal is in the
    /// context; without one the model can only guess, which bounds the return).
    #[serde(default)]
    pub contexts_with_reward: usize,
    /// One-episode return acting greedily, over all contexts (interval clustered by task).
    /// A greedy DPT can only score where the context shows the goal, so this is capped by the
    /// share `contexts_with_reward / contexts`; see `greedy_with_goal`.
    pub greedy: MeanCi,
    /// One-episode return sampling from the model at temperature 1, over all contexts.
    pub sampled: MeanCi,
    /// Greedy return over the contexts holding a rewarded transition (on Dark Room: the goal
    /// is in the context), interval clustered by task. None when no context has one (and in
    /// files written before this field existed).
    #[serde(default)]
    pub greedy_with_goal: Option<MeanCi>,
    /// Sampled return over the same contexts.
    #[serde(default)]
    pub sampled_with_goal: Option<MeanCi>,
    /// Return of the transitions in each context, per episode-length of transitions
    /// (reward sum x horizon / context length): what the dataset itself scores.
    pub dataset: MeanCi,
    /// Greedy returns per context.
    pub greedy_returns: Vec<f64>,
    /// Sampled returns per context.
    pub sampled_returns: Vec<f64>,
}

/// Sub-folder of a run holding bandit comparisons.
pub const BANDIT_DIR: &str = "bandit";

/// One algorithm's results.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AlgoResult {
    /// Algorithm name.
    pub name: String,
    /// Offline suboptimality at each of the report's `offline_sizes` (None = not run offline).
    pub offline_suboptimality: Option<Vec<MeanCi>>,
    /// Online cumulative regret at each of the report's `online_steps` (None = offline only).
    pub online_regret: Option<Vec<MeanCi>>,
}

/// A bandit comparison, as written to `bandit/<step>.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BanditReport {
    /// Training step of the evaluated DPT model (0 without DPT).
    pub step: u64,
    /// Held-out bandits.
    pub bandits: usize,
    /// Arms per bandit.
    pub arms: usize,
    /// Dataset sizes of the offline comparison.
    pub offline_sizes: Vec<usize>,
    /// Pull counts at which online regret is reported.
    pub online_steps: Vec<usize>,
    /// One entry per algorithm.
    pub algorithms: Vec<AlgoResult>,
}
