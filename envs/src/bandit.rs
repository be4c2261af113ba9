//! DPT's Gaussian multi-armed bandit (`"bandit"`).
//!
//! A task is a vector of arm means, each drawn from U[0, 1] by an RNG derived from the task id
//! alone ([`arm_means`]), so any `u64` is a valid task. Pulling arm `a` pays
//! `mean[a] + N(0, noise_std^2)` (DPT: sigma 0.3); the noise comes from the slot's RNG. An
//! episode is `horizon` pulls (DPT: 500) and is truncated there, never terminated.
//!
//! The observation is a 1-d vector holding the constant 0.0 (DPT's dummy state), so every
//! environment has a non-empty vector part. The oracle pulls `argmax mean`.
//! Train tasks are ids `0..train_tasks`, test tasks `TEST_TASK_BASE + 0..test_tasks`,
//! validation tasks `VALIDATION_TASK_BASE + 0..test_tasks` (as many as the test tasks).

use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::rng::{slot_rng, task_rng, SlotRng};
use crate::{
    check_actions, check_range_f32, check_slot, require, EnvError, EnvSpec, ObsBatch, Split,
    StepBatch, TaskId, VecEnv,
};

/// First id of the test tasks (train ids stay below it).
pub const TEST_TASK_BASE: u64 = 1 << 40;
/// First validation task id (validation ids never collide with train or test ids).
pub const VALIDATION_TASK_BASE: u64 = 1 << 41;
/// Largest number of arms.
pub const MAX_ARMS: usize = 1024;
/// Purpose tag of the arm-mean RNG.
const MEANS_TAG: u64 = 0x00BA_4D17;

/// DPT's Gaussian bandit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BanditConfig {
    /// Number of arms; DPT: 5.
    pub arms: usize,
    /// Standard deviation of the Gaussian reward noise; DPT: 0.3.
    pub noise_std: f32,
    /// Pulls per episode; DPT: 500.
    pub horizon: usize,
    /// Number of training tasks (ids `0..train_tasks`); DPT pretrains on 100,000.
    pub train_tasks: usize,
    /// Number of test tasks (ids `TEST_TASK_BASE + 0..test_tasks`); DPT evaluates on 200.
    pub test_tasks: usize,
}

impl Default for BanditConfig {
    fn default() -> Self {
        BanditConfig {
            arms: 5,
            noise_std: 0.3,
            horizon: 500,
            train_tasks: 100_000,
            test_tasks: 200,
        }
    }
}

impl BanditConfig {
    /// Field errors (relative paths). Empty = valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        require(&mut e, (2..=MAX_ARMS).contains(&self.arms), "arms", || {
            format!("must be in 2..={MAX_ARMS}, got {}", self.arms)
        });
        check_range_f32(&mut e, "noise_std", self.noise_std, 0.0, 1e6);
        require(
            &mut e,
            (1..=10_000_000).contains(&self.horizon),
            "horizon",
            || format!("must be in 1..=10000000, got {}", self.horizon),
        );
        require(
            &mut e,
            (1..=100_000_000).contains(&self.train_tasks),
            "train_tasks",
            || format!("must be in 1..=100000000, got {}", self.train_tasks),
        );
        require(
            &mut e,
            (1..=100_000_000).contains(&self.test_tasks),
            "test_tasks",
            || format!("must be in 1..=100000000, got {}", self.test_tasks),
        );
        e
    }

    /// The spec: `arms` actions, a 1-d constant observation, no image.
    pub fn spec(&self) -> EnvSpec {
        EnvSpec {
            name: "bandit".into(),
            num_actions: self.arms,
            vector_dim: 1,
            vector_segments: vec![("constant".into(), 1)],
            image: None,
            horizon: self.horizon,
            has_success: false,
        }
    }
}

/// The arm means of a task: `arms` values in [0, 1), a pure function of `(task, arms)`.
pub fn arm_means(task: TaskId, arms: usize) -> Vec<f32> {
    let mut rng = task_rng(task, MEANS_TAG);
    (0..arms).map(|_| rng.random::<f32>()).collect()
}

/// The best arm of a set of means (lowest index on ties).
pub fn best_arm(means: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &m) in means.iter().enumerate() {
        if m > means[best] {
            best = i;
        }
    }
    best as u32
}

/// A batch of bandit slots.
pub struct BanditVecEnv {
    cfg: BanditConfig,
    spec: EnvSpec,
    task_ids: Vec<TaskId>,
    /// `n * arms` means, slot-major.
    means: Vec<f32>,
    best: Vec<u32>,
    t: Vec<u32>,
    rngs: Vec<SlotRng>,
}

impl BanditVecEnv {
    /// Build slots `[first_slot, first_slot + count)` (the config must be valid).
    pub fn new(cfg: BanditConfig, seed: u64, first_slot: usize, count: usize) -> Self {
        let spec = cfg.spec();
        let mut env = BanditVecEnv {
            spec,
            task_ids: vec![0; count],
            means: vec![0.0; count * cfg.arms],
            best: vec![0; count],
            t: vec![0; count],
            rngs: (0..count).map(|i| slot_rng(seed, first_slot + i)).collect(),
            cfg,
        };
        for i in 0..count {
            let task = ((first_slot + i) % env.cfg.train_tasks) as u64;
            env.put_task(i, task);
        }
        env
    }

    fn put_task(&mut self, slot: usize, task: TaskId) {
        let k = self.cfg.arms;
        let m = arm_means(task, k);
        self.best[slot] = best_arm(&m);
        self.means[slot * k..(slot + 1) * k].copy_from_slice(&m);
        self.task_ids[slot] = task;
        self.t[slot] = 0;
    }

    /// The arm means of a slot's task.
    pub fn means(&self, slot: usize) -> Option<&[f32]> {
        let k = self.cfg.arms;
        self.means.get(slot * k..(slot + 1) * k)
    }
}

impl VecEnv for BanditVecEnv {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn num_envs(&self) -> usize {
        self.t.len()
    }

    fn tasks(&self, split: Split) -> Vec<TaskId> {
        match split {
            Split::Train => (0..self.cfg.train_tasks as u64).collect(),
            Split::Validation => (0..self.cfg.test_tasks as u64)
                .map(|i| VALIDATION_TASK_BASE + i)
                .collect(),
            Split::Test => (0..self.cfg.test_tasks as u64)
                .map(|i| TEST_TASK_BASE + i)
                .collect(),
        }
    }

    fn set_task(&mut self, slot: usize, task: TaskId) -> Result<(), EnvError> {
        check_slot(slot, self.num_envs())?;
        self.put_task(slot, task);
        Ok(())
    }

    fn task(&self, slot: usize) -> Result<TaskId, EnvError> {
        check_slot(slot, self.num_envs())?;
        Ok(self.task_ids[slot])
    }

    fn reset(&mut self, obs: &mut ObsBatch) {
        obs.fit(&self.spec, self.num_envs());
        self.t.fill(0);
        obs.vector.fill(0.0);
    }

    fn observe_slot(&mut self, slot: usize, obs: &mut ObsBatch) -> Result<(), EnvError> {
        check_slot(slot, self.num_envs())?;
        obs.fit(&self.spec, self.num_envs());
        obs.vector[slot] = 0.0;
        Ok(())
    }

    fn step(&mut self, actions: &[u32], out: &mut StepBatch) -> Result<(), EnvError> {
        let n = self.num_envs();
        check_actions(&self.spec, n, actions)?;
        out.fit(&self.spec, n);
        let k = self.cfg.arms;
        let sigma = self.cfg.noise_std;
        let horizon = self.cfg.horizon as u32;
        for (i, &action) in actions.iter().enumerate() {
            let noise: f32 = self.rngs[i].sample(StandardNormal);
            out.reward[i] = self.means[i * k + action as usize] + sigma * noise;
            let t = self.t[i] + 1;
            let trunc = t >= horizon;
            self.t[i] = if trunc { 0 } else { t };
            out.truncated[i] = trunc;
            out.terminated[i] = false;
            out.success[i] = false;
            out.obs.vector[i] = 0.0;
            out.final_obs.vector[i] = 0.0;
        }
        Ok(())
    }

    fn oracle_actions(&self, out: &mut [u32]) {
        for (o, &b) in out.iter_mut().zip(&self.best) {
            *o = b;
        }
    }

    fn describe(&self, slot: usize) -> serde_json::Value {
        match self.means(slot) {
            Some(m) => json!({
                "t": self.t[slot],
                "task": self.task_ids[slot],
                "means": m,
                "best_arm": self.best[slot],
            }),
            None => json!({ "error": format!("slot {slot} out of range") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EnvConfig;

    #[test]
    fn reward_statistics_match_mean_and_sigma() {
        let cfg = EnvConfig::Bandit(BanditConfig {
            horizon: 500,
            ..Default::default()
        });
        let mut env = cfg.build(7, 0, 1).unwrap();
        env.set_task(0, 42).unwrap();
        let means = arm_means(42, 5);
        let spec = env.spec().clone();
        let mut out = StepBatch::new(&spec, 1);
        for arm in 0..5u32 {
            let n = 20_000;
            let mut s = 0.0f64;
            let mut s2 = 0.0f64;
            for _ in 0..n {
                env.step(&[arm], &mut out).unwrap();
                let r = out.reward[0] as f64;
                s += r;
                s2 += r * r;
            }
            let mean = s / n as f64;
            let std = (s2 / n as f64 - mean * mean).sqrt();
            // Standard error of the mean is 0.3 / sqrt(20000) = 0.0021.
            assert!(
                (mean - means[arm as usize] as f64).abs() < 0.01,
                "arm {arm}: {mean} vs {}",
                means[arm as usize]
            );
            assert!((std - 0.3).abs() < 0.01, "arm {arm}: std {std}");
        }
    }

    #[test]
    fn means_are_per_task_and_in_unit_interval() {
        let a = arm_means(1, 5);
        let b = arm_means(2, 5);
        assert_ne!(a, b);
        assert_eq!(a, arm_means(1, 5));
        for m in a.iter().chain(&b) {
            assert!((0.0..1.0).contains(m));
        }
        assert_eq!(best_arm(&[0.1, 0.9, 0.3]), 1);
    }

    #[test]
    fn truncates_at_horizon_and_oracle_is_argmax() {
        let cfg = EnvConfig::Bandit(BanditConfig {
            horizon: 3,
            ..Default::default()
        });
        let mut env = cfg.build(0, 0, 2).unwrap();
        let spec = env.spec().clone();
        let mut out = StepBatch::new(&spec, 2);
        let mut trunc = vec![];
        for _ in 0..6 {
            env.step(&[0, 4], &mut out).unwrap();
            trunc.push(out.truncated[0]);
            assert!(!out.terminated[0]);
        }
        assert_eq!(trunc, vec![false, false, true, false, false, true]);
        let mut a = [9u32; 2];
        env.oracle_actions(&mut a);
        assert_eq!(a[1], best_arm(&arm_means(1, 5)));
        assert!(env.step(&[0, 5], &mut out).is_err());
        let tr = env.tasks(Split::Train);
        let va = env.tasks(Split::Validation);
        let te = env.tasks(Split::Test);
        assert_eq!(va.len(), te.len());
        assert!(te.iter().all(|t| !tr.contains(t) && !va.contains(t)));
        assert!(va.iter().all(|t| !tr.contains(t)));
    }
}
