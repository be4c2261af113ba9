//! PPO from scratch on each held-out task: the "how fast does plain RL learn this task"
//! reference of DPT's paper (PPO, 100K steps on Dark Room). A small MLP on the current
//! observation (image observations average-pooled to a few pixels), no memory across tasks or
//! episodes.
//!
//! Read top to bottom:
//!
//! 1. [`train`] runs, for every held-out task and trial, a fresh learner ([`learn_task`]) with
//!    `num_envs` envs on that task, and records each env's episode returns in order.
//! 2. [`learn_task`] is CleanRL-style PPO: rollouts of `rollout_len` steps, GAE with episode
//!    boundaries (truncation bootstraps from the critic's value of the final observation), then
//!    `epochs` passes of the clipped loss over shuffled minibatches of steps.
//! 3. The curve has the shared protocol's form ([`crate::results::EvalResult`]): point k is the
//!    return of the k-th episode while learning, averaged over envs and then summarised over
//!    (task, trial). It runs at least `steps_per_task` steps and until every env finished
//!    `eval.episodes_per_trial` episodes.
//!
//! A checkpoint after each (task, trial) holds the finished curves, so a resumed run skips them.

use std::path::PathBuf;

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

use envs::{EnvConfig, EnvSpec, ObsBatch, StepBatch, TaskId};
use sampler::SlotStreams;

use crate::config::{Config, PpoTaskConfig};
use crate::eval;
use crate::methods::TrainingMethod;
use crate::optim::Adam;
use crate::ppo_math::{self, Boundaries, PpoLossConfig};
use crate::run::checkpoint::Checkpoint;
use crate::run::logging::Logger;
use crate::run::{self, Run};

/// Finished (task, trial) curves, saved in every checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TrainState {
    /// Per finished (task, trial), in order: the mean return of each episode index.
    pub curves: Vec<Vec<f64>>,
    /// PPO updates done over all tasks (the logging step).
    pub updates: u64,
}

/// Features of the observations of all slots: the vector part, plus the image average-pooled
/// to `pool x pool` and scaled to [0, 1].
fn features(obs: &ObsBatch, spec: &EnvSpec, pool: usize, n: usize, device: Device) -> Tensor {
    let v = Tensor::from_slice(&obs.vector[..n * spec.vector_dim])
        .view([n as i64, spec.vector_dim as i64]);
    let x = match (spec.image, pool) {
        (Some(img), p) if p > 0 => {
            let i = Tensor::from_slice(&obs.image[..n * img.bytes()])
                .view([n as i64, img.height as i64, img.width as i64, 3])
                .permute([0, 3, 1, 2])
                .to_kind(Kind::Float)
                / 255.0;
            let pooled = i.adaptive_avg_pool2d([p as i64, p as i64]).flatten(1, -1);
            Tensor::cat(&[v, pooled], 1)
        }
        _ => v,
    };
    x.to_device(device)
}

fn feature_dim(spec: &EnvSpec, pool: usize) -> usize {
    spec.vector_dim
        + if spec.image.is_some() {
            3 * pool * pool
        } else {
            0
        }
}

fn mlp(p: nn::Path, input: usize, hidden: usize, out: usize) -> nn::Sequential {
    let (i, h) = (input as i64, hidden as i64);
    nn::seq()
        .add(nn::linear(&p / "fc1", i, h, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&p / "fc2", h, h, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&p / "out", h, out as i64, Default::default()))
}

/// The two seeds of one learner.
#[derive(Debug, Clone, Copy)]
pub struct LearnerSeeds {
    /// Seeds the weights and the minibatch order.
    pub init: u64,
    /// Seeds the envs and the actions.
    pub experience: u64,
}

/// The seeds of the learner of (`task`, `trial`): each of the run's two seeds mixed with the
/// task and the trial.
fn learner_seeds(cfg: &Config, task: TaskId, trial: usize) -> LearnerSeeds {
    let mix = |seed: u64| envs::rng::mix64(seed ^ envs::rng::mix64(task) ^ (trial as u64) << 32);
    LearnerSeeds {
        init: mix(cfg.init_seed()),
        experience: mix(cfg.experience_seed()),
    }
}

/// Learns one task from scratch; returns each env's episode returns in order.
pub fn learn_task(
    env: &EnvConfig,
    c: &PpoTaskConfig,
    task: TaskId,
    min_episodes: usize,
    seeds: LearnerSeeds,
    device: Device,
    mut on_update: impl FnMut(f64, f64, f64) -> Result<()>,
) -> Result<Vec<Vec<f64>>> {
    let LearnerSeeds {
        init: init_seed,
        experience: experience_seed,
    } = seeds;
    let spec = env.spec();
    let n = c.num_envs;
    let t_len = c.rollout_len;
    tch::manual_seed(init_seed as i64);
    let vs = VarStore::new(device);
    let f = feature_dim(&spec, c.image_pool);
    let actor = mlp(vs.root() / "actor", f, c.hidden, spec.num_actions);
    let critic = mlp(vs.root() / "critic", f, c.hidden, 1);
    let mut opt = Adam::new(&vs, 0.9, 0.999, c.ppo.adam_eps, 0.0);
    let loss_cfg = PpoLossConfig::from(&c.ppo);
    let mut venv = env.build(experience_seed, 0, n)?;
    for slot in 0..n {
        venv.set_task(slot, task)?;
    }
    let mut obs = ObsBatch::new(&spec, n);
    venv.reset(&mut obs);
    let mut out = StepBatch::new(&spec, n);
    let mut streams = SlotStreams::new(experience_seed, n);
    let mut rng = ChaCha8Rng::seed_from_u64(init_seed);
    let mut running = vec![0.0f64; n];
    let mut finished: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut steps = 0u64;
    let a_n = spec.num_actions;
    while steps < c.steps_per_task || finished.iter().any(|f| f.len() < min_episodes) {
        // --- rollout: T steps of every env, stored time-major ---
        let mut feats = Vec::with_capacity(t_len);
        let (mut actions, mut logps, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rewards, mut term, mut trunc) = (Vec::new(), Vec::new(), Vec::new());
        let mut final_values = vec![0.0f32; t_len * n];
        for t in 0..t_len {
            let x = features(&obs, &spec, c.image_pool, n, device);
            let (logp, v) = {
                let _g = tch::no_grad_guard();
                (
                    actor.forward(&x).log_softmax(-1, Kind::Float),
                    critic.forward(&x).squeeze_dim(-1),
                )
            };
            let logp_h: Vec<f32> =
                Vec::try_from(logp.to_device(Device::Cpu).contiguous().view(-1))?;
            let v_h: Vec<f32> = Vec::try_from(v.to_device(Device::Cpu).contiguous())?;
            let mut acts = vec![0u32; n];
            for (slot, a) in acts.iter_mut().enumerate() {
                let row = &logp_h[slot * a_n..(slot + 1) * a_n];
                let p: Vec<f64> = row.iter().map(|&x| (x as f64).exp()).collect();
                *a = crate::data::sample_categorical(&p, streams.uniform(slot)) as u32;
                logps.push(row[*a as usize]);
            }
            venv.step(&acts, &mut out)?;
            let ended: Vec<usize> = (0..n)
                .filter(|&s| out.truncated[s] && !out.terminated[s])
                .collect();
            if !ended.is_empty() {
                let fx = features(&out.final_obs, &spec, c.image_pool, n, device);
                let _g = tch::no_grad_guard();
                let fv: Vec<f32> = Vec::try_from(
                    critic
                        .forward(&fx)
                        .squeeze_dim(-1)
                        .to_device(Device::Cpu)
                        .contiguous(),
                )?;
                for s in ended {
                    final_values[t * n + s] = fv[s];
                }
            }
            for slot in 0..n {
                running[slot] += out.reward[slot] as f64;
                if out.terminated[slot] || out.truncated[slot] {
                    finished[slot].push(running[slot]);
                    running[slot] = 0.0;
                }
            }
            feats.push(x);
            actions.extend(acts.iter().map(|&a| a as i64));
            values.extend(v_h);
            rewards.extend(out.reward.iter().copied());
            term.extend(out.terminated.iter().copied());
            trunc.extend(out.truncated.iter().copied());
            std::mem::swap(&mut obs, &mut out.obs);
        }
        steps += (t_len * n) as u64;
        let bootstrap: Vec<f32> = {
            let _g = tch::no_grad_guard();
            let x = features(&obs, &spec, c.image_pool, n, device);
            Vec::try_from(
                critic
                    .forward(&x)
                    .squeeze_dim(-1)
                    .to_device(Device::Cpu)
                    .contiguous(),
            )?
        };
        // --- GAE over [env][time] ---
        let env_major = |v: &[f32]| -> Vec<f32> {
            (0..n)
                .flat_map(|s| (0..t_len).map(move |t| v[t * n + s]))
                .collect()
        };
        let env_major_b = |v: &[bool]| -> Vec<bool> {
            (0..n)
                .flat_map(|s| (0..t_len).map(move |t| v[t * n + s]))
                .collect()
        };
        let mut vals = Vec::with_capacity(n * (t_len + 1));
        for s in 0..n {
            vals.extend((0..t_len).map(|t| values[t * n + s]));
            vals.push(bootstrap[s]);
        }
        let (adv, ret) = ppo_math::gae(
            &ppo_math::Steps {
                b: n,
                t: t_len,
                rewards: &env_major(&rewards),
                values: &vals,
                terminated: &env_major_b(&term),
                truncated: &env_major_b(&trunc),
                final_values: Some(&env_major(&final_values)),
            },
            ppo_math::GaeParams {
                boundaries: Boundaries::Episode,
                gamma: c.ppo.gamma as f32,
                lambda: c.ppo.gae_lambda as f32,
            },
        );
        // Back to time-major rows matching `feats`.
        let time_major = |v: &[f32]| -> Vec<f32> {
            (0..t_len)
                .flat_map(|t| (0..n).map(move |s| v[s * t_len + t]))
                .collect()
        };
        let x_all = Tensor::cat(&feats, 0);
        let tm = |v: Vec<f32>| Tensor::from_slice(&v).to_device(device);
        let (adv, ret) = (tm(time_major(&adv)), tm(time_major(&ret)));
        let old_logp = tm(logps);
        let old_v = tm(values);
        let acts = Tensor::from_slice(&actions).to_device(device);
        // --- PPO epochs over shuffled minibatches of steps ---
        let rows = t_len * n;
        let per = (rows / c.ppo.minibatches).max(1);
        let mut idx: Vec<i64> = (0..rows as i64).collect();
        let (mut pl, mut vl, mut ent, mut k) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..c.ppo.epochs {
            idx.shuffle(&mut rng);
            for chunk in idx.chunks(per) {
                let i = Tensor::from_slice(chunk).to_device(device);
                let x = x_all.index_select(0, &i);
                let loss = ppo_math::ppo_loss(
                    &loss_cfg,
                    &ppo_math::PpoBatch {
                        logits: &actor.forward(&x),
                        actions: &acts.index_select(0, &i),
                        old_logprob: &old_logp.index_select(0, &i),
                        advantages: &adv.index_select(0, &i),
                        returns: &ret.index_select(0, &i),
                        old_values: &old_v.index_select(0, &i),
                        values: &critic.forward(&x).squeeze_dim(-1),
                    },
                );
                if !loss.total.double_value(&[]).is_finite() {
                    continue;
                }
                opt.zero_grad();
                loss.total.backward();
                opt.clip_grad_norm(c.ppo.max_grad_norm);
                opt.step(c.ppo.lr);
                pl += loss.policy;
                vl += loss.value;
                ent += loss.entropy;
                k += 1.0;
            }
        }
        let k: f64 = if k > 0.0 { k } else { 1.0 };
        on_update(pl / k, vl / k, ent / k)?;
        anyhow::ensure!(
            steps < c.steps_per_task.saturating_mul(100).max(10_000_000),
            "PPO on task {task}: episodes do not end (no episode finished in {steps} steps)"
        );
    }
    Ok(finished)
}

/// The curve of one learner: the mean over envs of each episode index's return.
fn mean_curve(per_env: &[Vec<f64>], episodes: usize) -> Vec<f64> {
    (0..episodes)
        .map(|e| per_env.iter().map(|r| r[e]).sum::<f64>() / per_env.len() as f64)
        .collect()
}

/// Runs the baseline on every evaluation task and trial; writes and logs the curve.
pub fn train(run: &mut Run, c: &PpoTaskConfig) -> Result<()> {
    let cfg = run.config.clone();
    let mut state = TrainState::default();
    if let Some(saved) = run.restore_state()? {
        state = saved;
        eprintln!(
            "resuming {}: {} learners done",
            run.dir.display(),
            state.curves.len()
        );
    }
    let jobs = jobs(&cfg)?;
    let bar = crate::run::progress::bar(jobs.len() as u64, "ppo per task", "learners");
    bar.set_position(state.curves.len() as u64);
    run::install_interrupt_handler();
    for (k, &(task, trial)) in jobs.iter().enumerate().skip(state.curves.len()) {
        let seeds = learner_seeds(&cfg, task, trial);
        let logger = &mut run.logger;
        let updates = &mut state.updates;
        let per_env = learn_task(
            &cfg.env,
            c,
            task,
            cfg.eval.episodes_per_trial,
            seeds,
            run.device,
            |p, v, e| {
                *updates += 1;
                logger.scalar("losses/policy", *updates, p)?;
                logger.scalar("losses/value", *updates, v)?;
                logger.scalar("losses/entropy", *updates, e)?;
                Ok(())
            },
        )?;
        let curve = mean_curve(&per_env, cfg.eval.episodes_per_trial);
        if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
            run.logger
                .scalar("charts/return_first_episode", k as u64, *first)?;
            run.logger
                .scalar("charts/return_last_episode", k as u64, *last)?;
        }
        state.curves.push(curve);
        run.save_checkpoint(
            state.curves.len() as u64,
            &[],
            serde_json::to_value(&state)?,
        )?;
        bar.set_position(state.curves.len() as u64);
        run.logger.flush()?;
        if state.curves.len() < jobs.len() {
            run.stop_if_interrupted(state.curves.len() as u64, &bar)?;
        }
    }
    bar.finish_and_clear();
    let json = write_result(run, &cfg, &state.curves)?;
    eprintln!("PPO per task: {}", json.display());
    Ok(())
}

/// (task, trial) pairs in order.
fn jobs(cfg: &Config) -> Result<Vec<(TaskId, usize)>> {
    let tasks = eval::eval_tasks(&cfg.env, &cfg.eval)?;
    Ok(tasks
        .iter()
        .flat_map(|&t| (0..cfg.eval.trials_per_task).map(move |k| (t, k)))
        .collect())
}

fn write_result(run: &mut Run, cfg: &Config, curves: &[Vec<f64>]) -> Result<PathBuf> {
    let results: Vec<Vec<(f64, bool)>> = curves
        .iter()
        .map(|c| c.iter().map(|&r| (r, false)).collect())
        .collect();
    let tasks = eval::eval_tasks(&cfg.env, &cfg.eval)?.len();
    let result = eval::summarise(
        &results,
        &cfg.env,
        &cfg.eval,
        tasks,
        0,
        cfg.method_name(),
        false,
    );
    let json = eval::publish(run, &result)?;
    let first = result.curve.first().map_or(f64::NAN, |p| p.ret.mean);
    let last = result.curve.last().map_or(f64::NAN, |p| p.ret.mean);
    eprintln!(
        "PPO from scratch: return episode 1 = {first:.1}, episode {} = {last:.1}",
        result.episodes_per_trial
    );
    Ok(json)
}

/// `icrl eval` of the baseline: learns every evaluation task again with `cfg.eval`.
pub fn evaluate(run: &mut Run, cfg: &Config, c: &PpoTaskConfig) -> Result<PathBuf> {
    let mut curves = Vec::new();
    for (task, trial) in jobs(cfg)? {
        let seeds = learner_seeds(cfg, task, trial);
        let per_env = learn_task(
            &cfg.env,
            c,
            task,
            cfg.eval.episodes_per_trial,
            seeds,
            run.device,
            |_, _, _| Ok(()),
        )?;
        curves.push(mean_curve(&per_env, cfg.eval.episodes_per_trial));
    }
    write_result(run, cfg, &curves)
}

impl TrainingMethod for PpoTaskConfig {
    fn train(&self, run: &mut Run) -> Result<()> {
        train(run, self)
    }

    /// Learns every evaluation task again (the baseline has no model to load).
    fn evaluate(&self, run: &mut Run, cfg: &Config, _ckpt: &Checkpoint) -> Result<PathBuf> {
        evaluate(run, cfg, self)
    }

    fn budget(&self, _eval_step: u64) -> (f64, &'static str) {
        (self.steps_per_task as f64, "env steps per task")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learner_records_enough_episodes_per_env() {
        let env = EnvConfig::DarkRoom(envs::DarkRoomConfig {
            size: 4,
            horizon: 10,
        });
        let c = PpoTaskConfig {
            steps_per_task: 50,
            num_envs: 3,
            rollout_len: 16,
            hidden: 8,
            ..PpoTaskConfig::default()
        };
        let seeds = LearnerSeeds {
            init: 1,
            experience: 1,
        };
        let per_env = learn_task(&env, &c, 5, 7, seeds, Device::Cpu, |_, _, _| Ok(())).unwrap();
        assert_eq!(per_env.len(), 3);
        for r in &per_env {
            assert!(r.len() >= 7, "{r:?}");
            assert!(r.iter().all(|&x| (0.0..=10.0).contains(&x)));
        }
        assert_eq!(mean_curve(&per_env, 7).len(), 7);
    }
}
