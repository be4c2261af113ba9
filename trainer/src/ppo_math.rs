//! The numeric core of PPO, shared by ReLIC, RL² and the single-task PPO baseline:
//! generalised advantage estimation over trials and the clipped PPO loss.

use tch::{Kind, Tensor};

use crate::config::{PpoConfig, PpoCore};

/// How returns flow across episode boundaries inside a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundaries {
    /// The trial is the RL episode (in-context RL, RL²): returns flow across episode ends,
    /// so exploring early in a trial pays off in later episodes.
    Trial,
    /// Each episode is its own RL episode: a terminated step has no future; a truncated step
    /// bootstraps from the value of its final observation when known (`final_values`), else
    /// it is treated as terminal (the usual approximation).
    Episode,
}

/// `B` sequences of `T` steps, the input of [`gae`]; every slice is row-major.
pub struct Steps<'a> {
    /// Sequences (B).
    pub b: usize,
    /// Steps per sequence (T).
    pub t: usize,
    /// `[B][T]`.
    pub rewards: &'a [f32],
    /// `[B][T + 1]`; column `T` is the bootstrap value of the observation after the last step
    /// (the trial continues past the collected prefix).
    pub values: &'a [f32],
    /// `[B][T]`.
    pub terminated: &'a [bool],
    /// `[B][T]`.
    pub truncated: &'a [bool],
    /// `[B][T]`: the value of the last observation of an episode that was truncated at that
    /// step (only read with [`Boundaries::Episode`]).
    pub final_values: Option<&'a [f32]>,
}

/// The discounting of [`gae`].
#[derive(Clone, Copy, Debug)]
pub struct GaeParams {
    /// How returns flow across episode ends.
    pub boundaries: Boundaries,
    /// Discount factor.
    pub gamma: f32,
    /// GAE's lambda.
    pub lambda: f32,
}

/// Generalised advantage estimation over `steps`. Returns `(advantages, returns)`, each
/// `[B][T]`, with returns = advantages + values.
pub fn gae(steps: &Steps<'_>, params: GaeParams) -> (Vec<f32>, Vec<f32>) {
    let Steps {
        b,
        t,
        rewards,
        values,
        terminated,
        truncated,
        final_values,
    } = *steps;
    let GaeParams {
        boundaries,
        gamma,
        lambda,
    } = params;
    assert_eq!(rewards.len(), b * t, "rewards must be [B, T]");
    assert_eq!(values.len(), b * (t + 1), "values must be [B, T + 1]");
    assert_eq!(terminated.len(), b * t);
    assert_eq!(truncated.len(), b * t);
    let mut advantages = vec![0.0f32; b * t];
    let mut returns = vec![0.0f32; b * t];
    for env in 0..b {
        let row = env * t;
        let vrow = env * (t + 1);
        let mut next_advantage = 0.0f32;
        for step in (0..t).rev() {
            let i = row + step;
            let value = values[vrow + step];
            let next_value = values[vrow + step + 1];
            let (delta, carry) = match boundaries {
                Boundaries::Trial => (rewards[i] + gamma * next_value - value, true),
                Boundaries::Episode if terminated[i] => (rewards[i] - value, false),
                Boundaries::Episode if truncated[i] => {
                    let bootstrap = final_values.map_or(0.0, |f| f[i]);
                    (rewards[i] + gamma * bootstrap - value, false)
                }
                Boundaries::Episode => (rewards[i] + gamma * next_value - value, true),
            };
            let advantage = if carry {
                delta + gamma * lambda * next_advantage
            } else {
                delta
            };
            advantages[i] = advantage;
            returns[i] = advantage + value;
            next_advantage = advantage;
        }
    }
    (advantages, returns)
}

/// The PPO loss terms of one minibatch, all over the same `N` selected steps.
pub struct PpoLoss {
    /// policy + value_coef * value - entropy_coef * entropy (to minimise).
    pub total: Tensor,
    /// Clipped surrogate loss (to minimise).
    pub policy: f64,
    /// Value loss 0.5 * (V - R)^2, clipped when configured.
    pub value: f64,
    /// Mean entropy of the new policy.
    pub entropy: f64,
    /// Approximate KL(old || new), the (ratio - 1) - log ratio estimator.
    pub approx_kl: f64,
    /// Fraction of steps whose ratio was clipped.
    pub clipfrac: f64,
}

/// Hyper-parameters of the PPO loss.
#[derive(Clone, Copy, Debug)]
pub struct PpoLossConfig {
    /// Ratio clip range.
    pub clip: f64,
    /// Value clip range around the old value (None = unclipped).
    pub value_clip: Option<f64>,
    /// Weight of the value loss.
    pub value_coef: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Normalise advantages over the minibatch.
    pub normalize_advantages: bool,
}

impl From<&PpoConfig> for PpoLossConfig {
    fn from(ppo: &PpoConfig) -> Self {
        PpoLossConfig {
            clip: ppo.clip,
            value_clip: ppo.value_clip,
            value_coef: ppo.value_coef,
            entropy_coef: ppo.entropy_coef,
            normalize_advantages: ppo.normalize_advantages,
        }
    }
}

/// The baselines' PPO settings have no value clipping.
impl From<&PpoCore> for PpoLossConfig {
    fn from(ppo: &PpoCore) -> Self {
        PpoLossConfig {
            clip: ppo.clip,
            value_clip: None,
            value_coef: ppo.value_coef,
            entropy_coef: ppo.entropy_coef,
            normalize_advantages: ppo.normalize_advantages,
        }
    }
}

/// One minibatch of [`ppo_loss`] (the tensors are named as in the PPO paper's objective):
/// `logits` `[N, A]`, `actions` `[N]` i64, the rest `[N]` f32.
pub struct PpoBatch<'a> {
    /// The new policy's logits.
    pub logits: &'a Tensor,
    /// The actions taken.
    pub actions: &'a Tensor,
    /// Their log-probabilities under the behaviour policy.
    pub old_logprob: &'a Tensor,
    /// Advantages.
    pub advantages: &'a Tensor,
    /// Returns (value targets).
    pub returns: &'a Tensor,
    /// Values when the data was collected (for value clipping).
    pub old_values: &'a Tensor,
    /// The new values.
    pub values: &'a Tensor,
}

/// The clipped PPO loss of one minibatch.
pub fn ppo_loss(cfg: &PpoLossConfig, batch: &PpoBatch<'_>) -> PpoLoss {
    let PpoBatch {
        logits,
        actions,
        old_logprob,
        advantages,
        returns,
        old_values,
        values,
    } = *batch;
    let log_probs = logits.log_softmax(-1, Kind::Float);
    let new_logprob = log_probs
        .gather(-1, &actions.unsqueeze(-1), false)
        .squeeze_dim(-1);
    let entropy = -(log_probs.exp() * &log_probs).sum_dim_intlist(-1, false, Kind::Float);
    let log_ratio = &new_logprob - old_logprob;
    let ratio = log_ratio.exp();
    let advantages = normalized_advantages(cfg, advantages);
    let surrogate = &ratio * &advantages;
    let clipped = ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip) * &advantages;
    let policy_loss = -surrogate.minimum(&clipped).mean(Kind::Float);
    let value_loss = match cfg.value_clip {
        None => (values - returns).square().mean(Kind::Float) * 0.5,
        Some(c) => {
            let clipped_values = old_values + (values - old_values).clamp(-c, c);
            let unclipped = (values - returns).square();
            let clipped = (clipped_values - returns).square();
            unclipped.maximum(&clipped).mean(Kind::Float) * 0.5
        }
    };
    let entropy_mean = entropy.mean(Kind::Float);
    let total = &policy_loss + &value_loss * cfg.value_coef - &entropy_mean * cfg.entropy_coef;
    let _guard = tch::no_grad_guard();
    let approx_kl = ((&ratio - 1.0) - &log_ratio)
        .mean(Kind::Float)
        .double_value(&[]);
    let clipfrac = (&ratio - 1.0)
        .abs()
        .gt(cfg.clip)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    PpoLoss {
        policy: policy_loss.double_value(&[]),
        value: value_loss.double_value(&[]),
        entropy: entropy_mean.double_value(&[]),
        approx_kl,
        clipfrac,
        total,
    }
}

/// The minibatch's advantages as the loss uses them: standardised over the whole minibatch
/// when `cfg.normalize_advantages` (and it holds more than one), else as they are.
/// Data-parallel shards ([`crate::replicas`]) standardise once over the whole minibatch with
/// this and run [`ppo_loss`] on their part without normalising again.
pub fn normalized_advantages(cfg: &PpoLossConfig, advantages: &Tensor) -> Tensor {
    if cfg.normalize_advantages && advantages.numel() > 1 {
        (advantages - advantages.mean(Kind::Float)) / (advantages.std(true) + 1e-8)
    } else {
        advantages.shallow_clone()
    }
}

/// The steps a partial update trains on: update `k` (1-based) of `u` over a rollout of
/// `rollout_len` steps runs the model on `[0, k * rollout_len / u)` and puts the loss on the
/// newest segment `[(k - 1) * rollout_len / u, k * rollout_len / u)`.
pub fn partial_update_range(k: usize, u: usize, rollout_len: usize) -> (usize, usize) {
    let segment = rollout_len / u;
    ((k - 1) * segment, k * segment)
}

/// One PPO update of a rollout: collect `collect` more steps per env slot, then run the model
/// on `[0, end)` with the loss on `[loss_start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedUpdate {
    /// Env steps per slot to collect before this update (0 for the full update).
    pub collect: usize,
    /// First step with a loss.
    pub loss_start: usize,
    /// End of the prefix the model runs on (and of the loss).
    pub end: usize,
}

/// Every update of one rollout of `rollout_len` steps, in order: `u` partial updates (update k
/// collects `rollout_len / u` steps and puts the loss on them, [`partial_update_range`]), then
/// `full` (0 or 1) full updates over the whole trial with the loss on every step
/// `[0, rollout_len)` and nothing new collected (official ReLIC's `full_updates_per_rollout`).
pub fn rollout_updates(rollout_len: usize, u: usize, full: usize) -> Vec<PlannedUpdate> {
    let partial = (1..=u).map(|k| {
        let (loss_start, end) = partial_update_range(k, u, rollout_len);
        PlannedUpdate {
            collect: end - loss_start,
            loss_start,
            end,
        }
    });
    let whole = (0..full).map(|_| PlannedUpdate {
        collect: 0,
        loss_start: 0,
        end: rollout_len,
    });
    partial.chain(whole).collect()
}

/// Explained variance 1 - Var(R - V) / Var(R): 1 is a perfect critic, 0 no better than a constant.
pub fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let n = values.len().max(1) as f64;
    let mean = |x: &mut dyn Iterator<Item = f64>| x.sum::<f64>() / n;
    let ret_mean = mean(&mut returns.iter().map(|&r| r as f64));
    let var_ret = mean(&mut returns.iter().map(|&r| (r as f64 - ret_mean).powi(2)));
    let diff: Vec<f64> = returns
        .iter()
        .zip(values)
        .map(|(&r, &v)| (r - v) as f64)
        .collect();
    let diff_mean = mean(&mut diff.iter().copied());
    let var_diff = mean(&mut diff.iter().map(|d| (d - diff_mean).powi(2)));
    if var_ret <= 1e-12 {
        f64::NAN
    } else {
        1.0 - var_diff / var_ret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn gae_over_a_trial_flows_across_episode_ends() {
        // One env, 3 steps, an episode ends (truncated) after step 1.
        let rewards = [1.0, 0.0, 2.0];
        let values = [0.5, 0.4, 0.3, 0.2];
        let terminated = [false; 3];
        let truncated = [false, true, false];
        let (g, l) = (0.9f32, 0.8f32);
        let (adv, ret) = gae(
            &Steps {
                b: 1,
                t: 3,
                rewards: &rewards,
                values: &values,
                terminated: &terminated,
                truncated: &truncated,
                final_values: None,
            },
            GaeParams {
                boundaries: Boundaries::Trial,
                gamma: g,
                lambda: l,
            },
        );
        // Hand computation, from the back.
        let d2 = 2.0 + g * 0.2 - 0.3;
        let d1 = 0.0 + g * 0.3 - 0.4;
        let d0 = 1.0 + g * 0.4 - 0.5;
        let a2 = d2;
        let a1 = d1 + g * l * a2;
        let a0 = d0 + g * l * a1;
        close(&adv, &[a0, a1, a2]);
        close(&ret, &[a0 + 0.5, a1 + 0.4, a2 + 0.3]);
    }

    #[test]
    fn gae_per_episode_respects_terminated_and_truncated() {
        // Two envs, 3 steps each. Env 0 terminates at step 0; env 1 is truncated at step 1
        // with a known final-observation value 1.5.
        let rewards = [1.0, 0.5, 0.0, 0.0, 1.0, 1.0];
        let values = [0.2, 0.1, 0.3, 0.7, 0.4, 0.6, 0.5, 0.9];
        let terminated = [true, false, false, false, false, false];
        let truncated = [false, false, false, false, true, false];
        let final_values = [0.0, 0.0, 0.0, 0.0, 1.5, 0.0];
        let (g, l) = (0.9f32, 0.5f32);
        let (adv, _) = gae(
            &Steps {
                b: 2,
                t: 3,
                rewards: &rewards,
                values: &values,
                terminated: &terminated,
                truncated: &truncated,
                final_values: Some(&final_values),
            },
            GaeParams {
                boundaries: Boundaries::Episode,
                gamma: g,
                lambda: l,
            },
        );
        // Env 0: steps 1..2 bootstrap normally; step 0 is terminal.
        let e0_d2 = 0.0 + g * 0.7 - 0.3;
        let e0_d1 = 0.5 + g * 0.3 - 0.1;
        let e0_a1 = e0_d1 + g * l * e0_d2;
        let e0_a0 = 1.0 - 0.2;
        // Env 1 (values 0.4, 0.6, 0.5, bootstrap 0.9): step 1 truncated -> r + g * 1.5 - V.
        let e1_a2 = 1.0 + g * 0.9 - 0.5;
        let e1_a1 = 1.0 + g * 1.5 - 0.6;
        let e1_a0 = (0.0 + g * 0.6 - 0.4) + g * l * e1_a1;
        close(&adv, &[e0_a0, e0_a1, e0_d2, e1_a0, e1_a1, e1_a2]);
        // Without final values a truncation is treated as terminal.
        let (adv, _) = gae(
            &Steps {
                b: 2,
                t: 3,
                rewards: &rewards,
                values: &values,
                terminated: &terminated,
                truncated: &truncated,
                final_values: None,
            },
            GaeParams {
                boundaries: Boundaries::Episode,
                gamma: g,
                lambda: l,
            },
        );
        assert!((adv[4] - (1.0 - 0.6)).abs() < 1e-6);
    }

    #[test]
    fn ppo_loss_matches_hand_computation() {
        let cfg = PpoLossConfig {
            clip: 0.2,
            value_clip: None,
            value_coef: 0.5,
            entropy_coef: 0.01,
            normalize_advantages: false,
        };
        // Two steps, two actions. New policy probabilities: step 0 (0.5, 0.5), step 1 (e/(1+e), 1/(1+e)).
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 0.0]).view([2, 2]);
        let actions = Tensor::from_slice(&[0i64, 0]);
        let p1 = (1.0f64).exp() / (1.0 + (1.0f64).exp());
        // Old probabilities of the taken actions: 0.25 (ratio 2, clipped to 1.2) and p1 (ratio 1).
        let old_logprob = Tensor::from_slice(&[(0.25f32).ln(), p1.ln() as f32]);
        let advantages = Tensor::from_slice(&[1.0f32, -2.0]);
        let returns = Tensor::from_slice(&[1.0f32, 0.0]);
        let values = Tensor::from_slice(&[0.5f32, 1.0]);
        let loss = ppo_loss(
            &cfg,
            &PpoBatch {
                logits: &logits,
                actions: &actions,
                old_logprob: &old_logprob,
                advantages: &advantages,
                returns: &returns,
                old_values: &values,
                values: &values,
            },
        );
        // Surrogates: min(2 * 1, 1.2 * 1) = 1.2; min(1 * -2, 1 * -2) = -2 -> policy = -(1.2 - 2) / 2 = 0.4.
        assert!((loss.policy - 0.4).abs() < 1e-5, "{}", loss.policy);
        // Value: 0.5 * mean((0.5 - 1)^2, (1 - 0)^2) = 0.5 * 0.625.
        assert!((loss.value - 0.3125).abs() < 1e-6);
        let h0 = (2.0f64).ln();
        let h1 = -(p1 * p1.ln() + (1.0 - p1) * (1.0 - p1).ln());
        assert!((loss.entropy - (h0 + h1) / 2.0).abs() < 1e-5);
        let total = 0.4 + 0.5 * 0.3125 - 0.01 * (h0 + h1) / 2.0;
        assert!((loss.total.double_value(&[]) - total).abs() < 1e-5);
        assert!((loss.clipfrac - 0.5).abs() < 1e-9);
        // approx_kl = mean((r - 1) - ln r) = ((2 - 1) - ln 2) / 2.
        assert!((loss.approx_kl - (1.0 - (2.0f64).ln()) / 2.0).abs() < 1e-5);
    }

    #[test]
    fn clipped_value_loss_takes_the_pessimistic_term() {
        let cfg = PpoLossConfig {
            clip: 0.2,
            value_clip: Some(0.1),
            value_coef: 1.0,
            entropy_coef: 0.0,
            normalize_advantages: false,
        };
        let logits = Tensor::zeros([1, 2], (Kind::Float, tch::Device::Cpu));
        let actions = Tensor::from_slice(&[0i64]);
        let old_logprob = Tensor::from_slice(&[(0.5f32).ln()]);
        let zero = Tensor::from_slice(&[0.0f32]);
        // Old value 0, new value 1, return 1: unclipped error 0, clipped (0.1) error 0.81.
        let loss = ppo_loss(
            &cfg,
            &PpoBatch {
                logits: &logits,
                actions: &actions,
                old_logprob: &old_logprob,
                advantages: &zero,
                returns: &Tensor::from_slice(&[1.0f32]),
                old_values: &zero,
                values: &Tensor::from_slice(&[1.0f32]),
            },
        );
        assert!((loss.value - 0.5 * 0.81).abs() < 1e-6, "{}", loss.value);
    }

    #[test]
    fn partial_update_ranges_tile_the_rollout() {
        let ranges: Vec<_> = (1..=4).map(|k| partial_update_range(k, 4, 512)).collect();
        assert_eq!(ranges, vec![(0, 128), (128, 256), (256, 384), (384, 512)]);
        assert_eq!(partial_update_range(1, 1, 512), (0, 512));
    }

    #[test]
    fn the_full_update_comes_last_and_its_loss_covers_the_whole_trial() {
        let plan = rollout_updates(512, 4, 1);
        assert_eq!(plan.len(), 5);
        let collected: usize = plan.iter().map(|p| p.collect).sum();
        assert_eq!(collected, 512);
        for (k, p) in plan[..4].iter().enumerate() {
            assert_eq!((p.loss_start, p.end), partial_update_range(k + 1, 4, 512));
        }
        let last = plan[4];
        assert_eq!((last.collect, last.loss_start, last.end), (0, 0, 512));
        // Without it, the last update's loss is the newest segment only.
        let plan = rollout_updates(512, 4, 0);
        assert_eq!(plan.len(), 4);
        assert_eq!((plan[3].loss_start, plan[3].end), (384, 512));
        // U = 1 with the full update trains the whole trial twice.
        let plan = rollout_updates(64, 1, 1);
        assert_eq!(
            plan.iter()
                .map(|p| (p.collect, p.loss_start, p.end))
                .collect::<Vec<_>>(),
            vec![(64, 0, 64), (0, 0, 64)]
        );
    }

    #[test]
    fn explained_variance_of_perfect_and_constant_critics() {
        let returns = [1.0, 2.0, 3.0];
        assert!((explained_variance(&returns, &returns) - 1.0).abs() < 1e-12);
        assert!(explained_variance(&[2.0, 2.0, 2.0], &returns).abs() < 1e-12);
    }
}
