//! Algorithm Distillation (Laskin et al. 2022): a causal transformer trained to predict the
//! next action of a source RL algorithm from multi-episode windows of its learning histories,
//! then run online, where it improves in context.
//!
//! Read top to bottom:
//!
//! 1. The source algorithm is tabular Q-learning over hashed observations (our choice for the
//!    grid worlds and one_room: cheap, and its histories visibly improve within a few dozen
//!    episodes), with epsilon decaying linearly over the history. [`crate::data`] records
//!    `samples_per_task` whole histories of `context_len` steps per training task (one record
//!    per history, so one record = one task).
//! 2. [`train`] draws `batch_size` windows of `window` consecutive steps, each inside one
//!    history ([`sample_windows`]): a window never crosses a task boundary. Tokens are the
//!    agent crate's step tokens (observation, previous action and reward, 0 at episode
//!    starts; episode index relative to the window, step within the episode), the model the
//!    transformer [`ActorCritic`] (its value head unused), the loss the cross-entropy of the
//!    source's action at every position.
//! 3. Evaluation is the shared protocol ([`crate::eval::evaluate_actor_critic`]): the KV cache
//!    holds the last `window` steps (a sliding window), so the model always sees a context
//!    like the ones it was trained on.

use std::path::PathBuf;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use agent::{ActorCritic, StepInputs};

use crate::config::{AdConfig, Config};
use crate::data::{self, Dataset, RecordView, FLAG_START};
use crate::eval;
use crate::methods::TrainingMethod;
use crate::optim::{warmup_cosine, Adam};
use crate::run::checkpoint::{self, Checkpoint};
use crate::run::logging::Logger;
use crate::run::{self, seeds, BadUpdateGuard, Run, Snapshot};

/// Counters that make a run resumable, saved in every checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TrainState {
    /// Optimiser steps done.
    pub steps: u64,
    /// Consecutive steps with a non-finite loss.
    pub bad_updates: BadUpdateGuard,
}

/// `batch` windows as (record, first step): the record uniform, the start uniform over the
/// positions where `window` steps fit inside that record's history.
pub fn sample_windows(
    rng: &mut ChaCha8Rng,
    records: usize,
    history_len: usize,
    window: usize,
    batch: usize,
) -> Vec<(usize, usize)> {
    (0..batch)
        .map(|_| {
            let r = rng.random_range(0..records);
            let o = rng.random_range(0..=history_len - window);
            (r, o)
        })
        .collect()
}

/// Step tokens and targets of windows `[o, o + window)` of records (one history each).
pub fn window_batch(
    views: &[(RecordView<'_>, usize)],
    window: usize,
    image: Option<(usize, usize)>,
    device: Device,
) -> (StepInputs, Tensor) {
    let b = views.len();
    let l = views
        .first()
        .map(|(v, _)| v.layout())
        .unwrap_or(data::Layout { s: 0, i: 0, t: 0 });
    let (s, i, w) = (l.s, l.i, window);
    let mut vector = vec![0.0f32; b * w * s];
    let mut img = vec![0u8; b * w * i];
    let mut prev_action = vec![0i64; b * w];
    let mut prev_reward = vec![0.0f32; b * w];
    let mut episode = vec![0i64; b * w];
    let mut step = vec![0i64; b * w];
    let mut target = vec![0i64; b * w];
    let mut rewards = vec![0.0f32; l.t];
    for (k, (v, o)) in views.iter().enumerate() {
        let o = *o;
        v.vec(o..o + w, &mut vector[k * w * s..(k + 1) * w * s]);
        if i > 0 {
            img[k * w * i..(k + 1) * w * i].copy_from_slice(v.img(o..o + w));
        }
        v.reward(0..l.t, &mut rewards);
        let (acts, flags) = (v.actions(), v.flags());
        let mut ep = 0i64;
        for j in 0..w {
            let t = o + j;
            let row = k * w + j;
            let start = flags[t] & FLAG_START != 0;
            if start && j > 0 {
                ep += 1;
            }
            if !start && t > 0 {
                prev_action[row] = acts[t - 1] as i64 + 1;
                prev_reward[row] = rewards[t - 1];
            }
            episode[row] = ep;
            step[row] = v.step(t) as i64;
            target[row] = acts[t] as i64;
        }
    }
    let (bb, ww) = (b as i64, w as i64);
    let inputs = StepInputs {
        vector: Tensor::from_slice(&vector)
            .view([bb, ww, s as i64])
            .to_device(device),
        image: image.map(|(h, wd)| {
            Tensor::from_slice(&img)
                .view([bb, ww, h as i64, wd as i64, 3])
                .to_device(device)
        }),
        prev_action: Tensor::from_slice(&prev_action)
            .view([bb, ww])
            .to_device(device),
        prev_reward: Tensor::from_slice(&prev_reward)
            .view([bb, ww])
            .to_device(device),
        episode_index: Tensor::from_slice(&episode)
            .view([bb, ww])
            .to_device(device),
        step_in_episode: Tensor::from_slice(&step).view([bb, ww]).to_device(device),
    };
    (
        inputs,
        Tensor::from_slice(&target).view([bb, ww]).to_device(device),
    )
}

/// The salt of AD's batch seeds ([`seeds::iteration_seed`]).
const STEP_SALT: u64 = 0x0AD0_0000_0000;

fn build(cfg: &Config, device: Device) -> Result<(VarStore, ActorCritic)> {
    let vs = VarStore::new(device);
    let model = ActorCritic::new(&vs.root(), &cfg.model, &sampler::obs_spec(&cfg.env.spec()))?;
    Ok((vs, model))
}

/// Trains AD as configured in `run.config` with `ad`.
pub fn train(run: &mut Run, ad: &AdConfig) -> Result<()> {
    let cfg = run.config.clone();
    let device = run.device;
    let dataset: Dataset = data::ensure(&cfg.env, &ad.data, &crate::run::dir::runs_dir(&run.dir))?;
    tch::manual_seed(cfg.init_seed() as i64);
    let (mut vs, model) = build(&cfg, device)?;
    let mut opt = Adam::new(&vs, 0.9, 0.99, 1e-8, ad.weight_decay);
    let mut state = TrainState::default();
    if let Some((saved, _)) = run.restore(&mut vs, &mut opt)? {
        state = saved;
        eprintln!("resuming {} at step {}", run.dir.display(), state.steps);
    }
    let image = cfg.env.spec().image.map(|i| (i.height, i.width));
    let tokens_per_step = (ad.batch_size * ad.window) as f64;
    let bar = crate::run::progress::bar(ad.steps, "ad", "steps");
    bar.set_position(state.steps.min(ad.steps));
    run::install_interrupt_handler();
    let log_every = 50u64;
    let (mut loss_sum, mut n_sum, mut window_steps) = (0.0, 0u64, 0u64);
    let mut window_start = std::time::Instant::now();
    while state.steps < ad.steps {
        let mut rng = ChaCha8Rng::seed_from_u64(seeds::iteration_seed(
            cfg.init_seed(),
            STEP_SALT,
            state.steps,
        ));
        let picks = sample_windows(
            &mut rng,
            dataset.len(),
            ad.data.context_len,
            ad.window,
            ad.batch_size,
        );
        let views = picks
            .iter()
            .map(|&(r, o)| Ok((dataset.record(r)?, o)))
            .collect::<Result<Vec<_>>>()?;
        let (inputs, targets) = window_batch(&views, ad.window, image, device);
        let (logits, _) = model.forward(&inputs, true)?;
        let a = logits.size()[2];
        let loss = logits
            .reshape([-1, a])
            .cross_entropy_for_logits(&targets.reshape([-1]));
        let lr = warmup_cosine(
            state.steps,
            ad.lr,
            0.01,
            ad.warmup_steps,
            ad.steps,
            ad.final_lr,
        );
        let value = opt.minimise(&loss, ad.max_grad_norm, lr);
        if let Some(value) = value {
            loss_sum += value;
            n_sum += 1;
        }
        state
            .bad_updates
            .record_step(value, state.steps, ad.max_bad_updates)?;
        state.steps += 1;
        window_steps += 1;
        bar.set_position(state.steps);
        let done = state.steps >= ad.steps;
        if state.steps % log_every == 0 || done {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            if n_sum > 0 {
                run.logger
                    .scalar("losses/action_ce", state.steps, loss_sum / n_sum as f64)?;
                if state.steps % (4 * log_every) == 0 || done {
                    eprintln!(
                        "step {}: action_ce {:.4}, {:.0} tokens/s",
                        state.steps,
                        loss_sum / n_sum as f64,
                        window_steps as f64 * tokens_per_step / secs
                    );
                }
            }
            run.logger.scalar("charts/learning_rate", state.steps, lr)?;
            run.logger.scalar(
                "charts/sps",
                state.steps,
                window_steps as f64 * ad.batch_size as f64 / secs,
            )?;
            run.logger.scalar(
                "perf/tokens_per_sec",
                state.steps,
                window_steps as f64 * tokens_per_step / secs,
            )?;
            (loss_sum, n_sum, window_steps) = (0.0, 0, 0);
            window_start = std::time::Instant::now();
        }
        let snapshot = Snapshot {
            step: state.steps,
            model: &vs,
            optimiser: &opt,
            state: &state,
        };
        run.checkpoint_if_due(state.steps - 1..state.steps, done, &snapshot)?;
        run.stop_if_interrupted(state.steps, &bar)?;
    }
    bar.finish_and_clear();
    let json = evaluate(run, &model, ad, &cfg, state.steps)?;
    eprintln!("online evaluation: {}", json.display());
    run.logger.flush()?;
    Ok(())
}

fn evaluate(
    run: &mut Run,
    model: &ActorCritic,
    ad: &AdConfig,
    cfg: &Config,
    step: u64,
) -> Result<PathBuf> {
    let evaluated = eval::evaluate_actor_critic(model, cfg, ad.window, step)?;
    let json = evaluated.publish(run)?;
    let result = evaluated.result;
    let first = result.curve.first().map_or(f64::NAN, |p| p.ret.mean);
    let last = result.curve.last().map_or(f64::NAN, |p| p.ret.mean);
    eprintln!(
        "online at step {step}: return episode 1 = {first:.1}, episode {} = {last:.1}",
        result.episodes_per_trial
    );
    Ok(json)
}

/// `icrl eval` of an AD checkpoint: the shared protocol with `cfg.eval`.
pub fn evaluate_checkpoint(
    run: &mut Run,
    cfg: &Config,
    ad: &AdConfig,
    ckpt: &Checkpoint,
) -> Result<PathBuf> {
    let (mut vs, model) = build(cfg, run.device)?;
    checkpoint::load_into_varstore(&mut vs, ckpt, "")?;
    evaluate(run, &model, ad, cfg, ckpt.meta.step)
}

impl TrainingMethod for AdConfig {
    fn train(&self, run: &mut Run) -> Result<()> {
        train(run, self)
    }

    fn evaluate(&self, run: &mut Run, cfg: &Config, ckpt: &Checkpoint) -> Result<PathBuf> {
        evaluate_checkpoint(run, cfg, self, ckpt)
    }

    fn budget(&self, eval_step: u64) -> (f64, &'static str) {
        (eval_step as f64, "optimiser steps")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ContextKind, DataConfig};

    #[test]
    fn windows_never_cross_task_boundaries() {
        let env = envs::EnvConfig::DarkRoom(envs::DarkRoomConfig {
            size: 10,
            horizon: 10,
        });
        let data = DataConfig {
            context: ContextKind::LearningHistory,
            max_tasks: Some(4),
            samples_per_task: 2,
            context_len: 50,
            history_len: 50,
            ..DataConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let ds = data::ensure(&env, &data, dir.path()).unwrap();
        assert_eq!(ds.len(), 8);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let window = 23;
        let picks = sample_windows(&mut rng, ds.len(), 50, window, 500);
        let mut seen_end = false;
        for &(r, o) in &picks {
            assert!(
                o + window <= 50,
                "window {o}..{} leaves history {r}",
                o + window
            );
            seen_end |= o + window == 50;
        }
        assert!(seen_end, "the last window position is reachable");
        // The batch holds exactly the record's steps o..o+window: every observation and
        // every target action comes from that one history (one task).
        let views: Vec<_> = picks[..20]
            .iter()
            .map(|&(r, o)| (ds.record(r).unwrap(), o))
            .collect();
        let (inputs, targets) = window_batch(&views, window, None, Device::Cpu);
        let vector: Vec<f32> = Vec::try_from(inputs.vector.reshape(-1)).unwrap();
        let targets: Vec<i64> = Vec::try_from(targets.reshape(-1)).unwrap();
        let episodes: Vec<i64> = Vec::try_from(inputs.episode_index.reshape(-1)).unwrap();
        let prev: Vec<i64> = Vec::try_from(inputs.prev_action.reshape(-1)).unwrap();
        for (k, (v, o)) in views.iter().enumerate() {
            let rec = v.to_record();
            for j in 0..window {
                let row = k * window + j;
                assert_eq!(
                    &vector[2 * row..2 * row + 2],
                    &rec.vec[2 * (o + j)..2 * (o + j) + 2]
                );
                assert_eq!(targets[row], rec.action[o + j] as i64);
                let start = rec.flags[o + j] & FLAG_START != 0;
                if start {
                    assert_eq!(prev[row], 0);
                } else {
                    assert_eq!(prev[row], rec.action[o + j - 1] as i64 + 1);
                }
            }
            // Episode indices count episode starts inside the window from 0.
            assert_eq!(episodes[k * window], 0);
            let starts = (1..window)
                .filter(|&j| rec.flags[o + j] & FLAG_START != 0)
                .count();
            assert_eq!(episodes[(k + 1) * window - 1], starts as i64);
            // Histories of 10-step episodes: a start every 10 steps.
            assert!((0..50).step_by(10).all(|t| rec.flags[t] & FLAG_START != 0));
        }
    }
}
