//! RL² (Duan et al. 2016): a recurrent policy trained with PPO over trials. The memory of the
//! trial lives in the GRU's hidden state, carried across the episodes of a trial and zeroed
//! when a new trial (task) starts.
//!
//! Read top to bottom:
//!
//! 1. [`train`] builds the [`GruPolicy`] (the agent crate's token encoder + GRU + actor/critic)
//!    and Adam, restored from a checkpoint when resuming.
//! 2. Each rollout is one trial per env slot: `episodes_per_trial * horizon` steps on a freshly
//!    drawn training task, collected by the shared [`Sampler`] with [`GruActor`] acting (hidden
//!    state per slot, zeroed at the trial's first step).
//! 3. [`ppo_update`]: values of the whole trial from one no-grad sequence forward, GAE over the
//!    trial (returns flow across episode ends, the trial is the RL episode; the trial's end is
//!    terminal), then `epochs` passes of the clipped PPO loss ([`crate::ppo_math`]) over
//!    minibatches of whole env sequences, each re-run through the GRU from the trial's start
//!    (backpropagation through the whole trial).
//! 4. Evaluation uses the shared protocol ([`crate::eval::run_trials`]) with the same actor.
//!
//! Every random draw of rollout r is seeded from (seed, r), so a resumed run reproduces the
//! uninterrupted one on CPU.

use std::path::PathBuf;

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use agent::GruPolicy;
use sampler::{CollectStats, Policy, PolicyOutput, RolloutStorage, Sampler, SlotStreams};

use crate::config::{Config, Rl2Config};
use crate::eval;
use crate::methods::TrainingMethod;
use crate::optim::Adam;
use crate::ppo_math::{self, Boundaries, PpoLossConfig};
use crate::results::EvalResult;
use crate::run::checkpoint::{self, Checkpoint};
use crate::run::logging::{self, Logger};
use crate::run::{self, seeds, Run, Snapshot};

/// The counters that make a run resumable, saved in every checkpoint.
pub type TrainState = run::RolloutCounters;

/// The salt of RL²'s rollout seeds ([`seeds::iteration_seed`]).
const ROLLOUT_SALT: u64 = 0x0052_4C32_0000;

/// The GRU policy acting through the sampler: one hidden state per env slot, zeroed at a
/// trial's first step; actions sampled from per-slot streams (or greedy).
pub struct GruActor<'a> {
    model: &'a GruPolicy,
    hidden: Tensor,
    streams: SlotStreams,
    greedy: bool,
    device: Device,
}

impl<'a> GruActor<'a> {
    /// An actor for `num_envs` slots.
    pub fn new(model: &'a GruPolicy, num_envs: usize, seed: u64, greedy: bool) -> Self {
        let hidden = model.initial_state(num_envs);
        GruActor {
            device: hidden.device(),
            model,
            hidden,
            streams: SlotStreams::new(seed, num_envs),
            greedy,
        }
    }
}

impl Policy for GruActor<'_> {
    fn act(
        &mut self,
        storage: &RolloutStorage,
        t: usize,
        slots: std::ops::Range<usize>,
    ) -> Result<PolicyOutput> {
        let _guard = tch::no_grad_guard();
        let (start, len) = (slots.start as i64, slots.len() as i64);
        anyhow::ensure!(
            slots.end as i64 <= self.hidden.size()[0],
            "RL² actor: slots {slots:?} outside its {} slots",
            self.hidden.size()[0]
        );
        let x = storage
            .inputs_rows(t, t + 1, slots.clone())?
            .to_device(self.device);
        let h = if t == 0 {
            self.model.initial_state(slots.len())
        } else {
            self.hidden.narrow(0, start, len)
        };
        let (logits, value, h) = self.model.step(&x, &h)?;
        self.hidden.narrow(0, start, len).copy_(&h);
        let logp: Vec<f32> = Vec::try_from(
            logits
                .log_softmax(-1, Kind::Float)
                .to_device(Device::Cpu)
                .contiguous()
                .view(-1),
        )?;
        let values: Vec<f32> = Vec::try_from(value.to_device(Device::Cpu).contiguous())?;
        let a = logits.size()[1] as usize;
        let mut out = PolicyOutput {
            value: values,
            ..PolicyOutput::default()
        };
        for (k, slot) in slots.enumerate() {
            let row = &logp[k * a..(k + 1) * a];
            let action = if self.greedy {
                let mut best = 0;
                for (j, &x) in row.iter().enumerate() {
                    if x > row[best] {
                        best = j;
                    }
                }
                best
            } else {
                let p: Vec<f64> = row.iter().map(|&x| (x as f64).exp()).collect();
                crate::data::sample_categorical(&p, self.streams.uniform(slot))
            };
            out.actions.push(action as u32);
            out.logprob.push(row[action]);
        }
        Ok(out)
    }
}

fn build(cfg: &Config, c: &Rl2Config, device: Device) -> Result<(VarStore, GruPolicy)> {
    let vs = VarStore::new(device);
    let spec = sampler::obs_spec(&cfg.env.spec());
    let model = GruPolicy::new(&vs.root(), &cfg.model, &spec, c.hidden)?;
    Ok((vs, model))
}

/// Trial length in steps.
fn trial_len(cfg: &Config, c: &Rl2Config) -> usize {
    c.episodes_per_trial * cfg.env.spec().horizon
}

/// Trains RL² as configured in `run.config` with `c`.
pub fn train(run: &mut Run, c: &Rl2Config) -> Result<()> {
    let cfg = run.config.clone();
    let spec = cfg.env.spec();
    let device = run.device;
    tch::manual_seed(cfg.init_seed() as i64);
    let (mut vs, model) = build(&cfg, c, device)?;
    let mut opt = Adam::new(&vs, 0.9, 0.999, c.ppo.adam_eps, 0.0);
    let mut state = TrainState::default();
    if let Some((saved, _)) = run.restore(&mut vs, &mut opt)? {
        state = saved;
        eprintln!(
            "resuming {} at env step {}",
            run.dir.display(),
            state.env_steps
        );
    }
    let t_len = trial_len(&cfg, c);
    let b = c.num_envs;
    let mut storage = RolloutStorage::new(&spec, b, t_len, device)?;
    let bar = crate::run::progress::bar(c.total_steps, "rl2", "steps");
    bar.set_position(state.env_steps.min(c.total_steps));
    run::install_interrupt_handler();

    while state.env_steps < c.total_steps {
        // --- one rollout: a trial of `episodes_per_trial` episodes per slot ---
        // Experience (tasks, envs, actions) from the experience seed; minibatch order and
        // libtorch's draws from the init seed.
        let experience_seed =
            seeds::iteration_seed(cfg.experience_seed(), ROLLOUT_SALT, state.rollouts);
        let learner_seed = seeds::iteration_seed(cfg.init_seed(), ROLLOUT_SALT, state.rollouts);
        tch::manual_seed(learner_seed as i64);
        let mut experience_rng = ChaCha8Rng::seed_from_u64(experience_seed);
        let mut rng = ChaCha8Rng::seed_from_u64(learner_seed);
        let started = std::time::Instant::now();
        let stats = {
            let mut sampler = Sampler::new(&cfg.env, &cfg.sampler, b, experience_seed)?;
            let tasks = sampler.sample_tasks_in(&cfg.training_splits(), &mut experience_rng)?;
            sampler.start_trials(&tasks, &mut storage)?;
            let mut actor = GruActor::new(&model, b, experience_seed, false);
            sampler.collect(&mut actor, &mut storage, t_len)?
        };
        state.env_steps += (b * t_len) as u64;
        let collect_seconds = started.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        let m = ppo_update(&model, &mut opt, &storage, c, &mut rng)?;
        state.updates += 1;
        state.rollouts += 1;
        state.bad_updates.record_update(
            state.updates,
            m.skipped,
            m.minibatches,
            c.max_bad_updates,
        )?;
        log(
            run,
            state.env_steps,
            &stats,
            &m,
            collect_seconds,
            t0.elapsed().as_secs_f64(),
        )?;
        bar.set_position(state.env_steps.min(c.total_steps));

        // --- evaluation, checkpoints, interruption: at rollout boundaries ---
        let done = state.env_steps >= c.total_steps;
        let eval_due = cfg.eval.every_steps > 0
            && state.env_steps - state.last_eval_step >= cfg.eval.every_steps;
        if eval_due || done {
            evaluate(run, &model, c, &cfg, state.env_steps)?;
            state.last_eval_step = state.env_steps;
        }
        let snapshot = Snapshot {
            step: state.env_steps,
            model: &vs,
            optimiser: &opt,
            state: &state,
        };
        run.checkpoint_if_due(state.updates - 1..state.updates, done, &snapshot)?;
        run.logger.flush()?;
        run.stop_if_interrupted(state.env_steps, &bar)?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// What one PPO update measured (means over its minibatches).
#[derive(Clone, Debug, Default)]
pub struct UpdateMetrics {
    /// Clipped surrogate loss.
    pub policy: f64,
    /// Value loss.
    pub value: f64,
    /// Entropy.
    pub entropy: f64,
    /// Approximate KL.
    pub approx_kl: f64,
    /// Clipped fraction.
    pub clipfrac: f64,
    /// Explained variance of the values before the update.
    pub explained_variance: f64,
    /// Minibatches skipped for a non-finite loss.
    pub skipped: usize,
    /// Minibatches run.
    pub minibatches: usize,
}

/// One PPO update over whole trials (see the module docs).
pub fn ppo_update(
    model: &GruPolicy,
    opt: &mut Adam,
    storage: &RolloutStorage,
    c: &Rl2Config,
    rng: &mut ChaCha8Rng,
) -> Result<UpdateMetrics> {
    let b = storage.num_envs();
    let t = storage.len;
    let device = storage.device();
    let inputs = storage.inputs(0, t);
    let no_reset = Tensor::zeros([b as i64, t as i64], (Kind::Bool, device));
    let values = {
        let _guard = tch::no_grad_guard();
        let (_, v, _) = model.forward_sequence(&inputs, &model.initial_state(b), &no_reset)?;
        v // [B, T]
    };
    // The trial ends after T steps: nothing follows, so the bootstrap value is 0.
    let padded = Tensor::cat(
        &[
            values.shallow_clone(),
            Tensor::zeros([b as i64, 1], (Kind::Float, device)),
        ],
        1,
    );
    let host = |x: &Tensor| -> Result<Vec<f32>> {
        Ok(Vec::<f32>::try_from(
            x.to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
                .view(-1),
        )?)
    };
    let flags = |x: &Tensor| -> Result<Vec<bool>> {
        let v: Vec<u8> = Vec::try_from(
            x.narrow(1, 0, t as i64)
                .to_device(Device::Cpu)
                .to_kind(Kind::Uint8)
                .contiguous()
                .view(-1),
        )?;
        Ok(v.into_iter().map(|x| x != 0).collect())
    };
    let rewards = host(&storage.reward.narrow(1, 0, t as i64))?;
    let (adv, ret) = ppo_math::gae(
        &ppo_math::Steps {
            b,
            t,
            rewards: &rewards,
            values: &host(&padded)?,
            terminated: &flags(&storage.terminated)?,
            truncated: &flags(&storage.truncated)?,
            final_values: None,
        },
        ppo_math::GaeParams {
            boundaries: Boundaries::Trial,
            gamma: c.ppo.gamma as f32,
            lambda: c.ppo.gae_lambda as f32,
        },
    );
    let to_t = |x: Vec<f32>| {
        Tensor::from_slice(&x)
            .view([b as i64, t as i64])
            .to_device(device)
    };
    let (advantages, returns) = (to_t(adv), to_t(ret));
    let old_logprob = storage.logprob.narrow(1, 0, t as i64);
    // i32 in storage; the loss gathers with i64 indices.
    let actions = storage.action.narrow(1, 0, t as i64).to_kind(Kind::Int64);
    let loss_cfg = PpoLossConfig::from(&c.ppo);
    let mut m = UpdateMetrics {
        explained_variance: ppo_math::explained_variance(&host(&values)?, &host(&returns)?),
        ..UpdateMetrics::default()
    };
    let per = (b / c.ppo.minibatches).max(1);
    let mut rows: Vec<i64> = (0..b as i64).collect();
    for _ in 0..c.ppo.epochs {
        rows.shuffle(rng);
        for chunk in rows.chunks(per) {
            let idx = Tensor::from_slice(chunk).to_device(device);
            let pick = |x: &Tensor| x.index_select(0, &idx);
            let (logits, v, _) = model.forward_sequence(
                &inputs.select_rows(&idx),
                &model.initial_state(chunk.len()),
                &pick(&no_reset),
            )?;
            let a = logits.size()[2];
            let loss = ppo_math::ppo_loss(
                &loss_cfg,
                &ppo_math::PpoBatch {
                    logits: &logits.reshape([-1, a]),
                    actions: &pick(&actions).reshape(-1),
                    old_logprob: &pick(&old_logprob).reshape(-1),
                    advantages: &pick(&advantages).reshape(-1),
                    returns: &pick(&returns).reshape(-1),
                    old_values: &pick(&values).reshape(-1),
                    values: &v.reshape(-1),
                },
            );
            m.minibatches += 1;
            if !loss.total.double_value(&[]).is_finite() {
                m.skipped += 1;
                continue;
            }
            opt.zero_grad();
            loss.total.backward();
            opt.clip_grad_norm(c.ppo.max_grad_norm);
            opt.step(c.ppo.lr);
            m.policy += loss.policy;
            m.value += loss.value;
            m.entropy += loss.entropy;
            m.approx_kl += loss.approx_kl;
            m.clipfrac += loss.clipfrac;
        }
    }
    let used = (m.minibatches - m.skipped).max(1) as f64;
    for x in [
        &mut m.policy,
        &mut m.value,
        &mut m.entropy,
        &mut m.approx_kl,
        &mut m.clipfrac,
    ] {
        *x /= used;
    }
    Ok(m)
}

fn log(
    run: &mut Run,
    step: u64,
    s: &CollectStats,
    m: &UpdateMetrics,
    collect_seconds: f64,
    update_seconds: f64,
) -> Result<()> {
    let l = &mut run.logger;
    l.scalar("losses/policy", step, m.policy)?;
    l.scalar("losses/value", step, m.value)?;
    l.scalar("losses/entropy", step, m.entropy)?;
    l.scalar("losses/approx_kl", step, m.approx_kl)?;
    l.scalar("losses/clipfrac", step, m.clipfrac)?;
    l.scalar("losses/explained_variance", step, m.explained_variance)?;
    logging::episode_charts(l, step, &s.episodes)?;
    l.scalar(
        "charts/sps",
        step,
        s.env_steps as f64 / (collect_seconds + update_seconds).max(1e-9),
    )?;
    l.scalar("perf/rollout_seconds", step, collect_seconds)?;
    l.scalar("perf/update_seconds", step, update_seconds)?;
    Ok(())
}

/// The in-context curve of the GRU policy with the shared protocol.
pub fn eval_result(model: &GruPolicy, cfg: &Config, step: u64) -> Result<EvalResult> {
    let _guard = tch::no_grad_guard();
    let tasks = eval::eval_tasks(&cfg.env, &cfg.eval)?;
    let trial_tasks: Vec<envs::TaskId> = tasks
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t, cfg.eval.trials_per_task))
        .collect();
    let spec = cfg.env.spec();
    let seed = seeds::eval_seed(cfg.experience_seed());
    let mut sampler = Sampler::new(&cfg.env, &cfg.sampler, trial_tasks.len(), seed)?;
    let max_steps = cfg.eval.episodes_per_trial * spec.horizon;
    let device = model.initial_state(1).device();
    let mut storage = RolloutStorage::new(&spec, trial_tasks.len(), max_steps, device)?;
    let mut actor = GruActor::new(model, trial_tasks.len(), seed, cfg.eval.greedy);
    let results = eval::run_trials(
        &mut sampler,
        &mut actor,
        &mut storage,
        &trial_tasks,
        cfg.eval.episodes_per_trial,
        spec.horizon,
    )?;
    Ok(eval::summarise(
        &results,
        &cfg.env,
        &cfg.eval,
        tasks.len(),
        step,
        cfg.method_name(),
        spec.has_success,
    ))
}

fn evaluate(
    run: &mut Run,
    model: &GruPolicy,
    _c: &Rl2Config,
    cfg: &Config,
    step: u64,
) -> Result<PathBuf> {
    let result = eval_result(model, cfg, step)?;
    let json = eval::publish(run, &result)?;
    eval::print_summary(&result, &json);
    Ok(json)
}

/// `icrl eval` of an RL² checkpoint: the shared protocol with `cfg.eval`.
pub fn evaluate_checkpoint(
    run: &mut Run,
    cfg: &Config,
    c: &Rl2Config,
    ckpt: &Checkpoint,
) -> Result<PathBuf> {
    let (mut vs, model) = build(cfg, c, run.device)?;
    checkpoint::load_into_varstore(&mut vs, ckpt, "")?;
    let result = eval_result(&model, cfg, ckpt.meta.step)?;
    let json = eval::publish(run, &result)?;
    Ok(json)
}

impl TrainingMethod for Rl2Config {
    fn train(&self, run: &mut Run) -> Result<()> {
        train(run, self)
    }

    fn evaluate(&self, run: &mut Run, cfg: &Config, ckpt: &Checkpoint) -> Result<PathBuf> {
        evaluate_checkpoint(run, cfg, self, ckpt)
    }

    fn budget(&self, eval_step: u64) -> (f64, &'static str) {
        (eval_step as f64, "env steps")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_state_is_carried_across_episodes_and_reset_between_trials() {
        let mut cfg = Config {
            env: envs::EnvConfig::DarkRoom(envs::DarkRoomConfig {
                size: 10,
                horizon: 5,
            }),
            ..Config::default()
        };
        cfg.model.d_model = 16;
        cfg.model.heads = 2;
        cfg.sampler.threads = 1;
        let c = Rl2Config {
            hidden: 8,
            num_envs: 2,
            episodes_per_trial: 2,
            ..Rl2Config::default()
        };
        let (_vs, model) = build(&cfg, &c, Device::Cpu).unwrap();
        let spec = cfg.env.spec();
        let mut storage = RolloutStorage::new(&spec, 2, 10, Device::Cpu).unwrap();
        let mut sampler = Sampler::new(&cfg.env, &cfg.sampler, 2, 3).unwrap();
        sampler.start_trials(&[1, 1], &mut storage).unwrap();
        let mut actor = GruActor::new(&model, 2, 3, false);
        sampler.collect(&mut actor, &mut storage, 10).unwrap();
        // The actor's values equal a sequence forward over the whole trial without resets
        // (so the hidden state crossed the episode boundary at step 5).
        let _g = tch::no_grad_guard();
        let reset = Tensor::zeros([2, 10], (Kind::Bool, Device::Cpu));
        let (_, v, _) = model
            .forward_sequence(&storage.inputs(0, 10), &model.initial_state(2), &reset)
            .unwrap();
        let diff = (v - &storage.value.narrow(1, 0, 10))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        // A new trial starts from a zero state: the first value equals a fresh forward.
        sampler.start_trials(&[2, 2], &mut storage).unwrap();
        sampler.collect(&mut actor, &mut storage, 1).unwrap();
        let (_, v, _) = model
            .forward_sequence(
                &storage.inputs(0, 1),
                &model.initial_state(2),
                &reset.narrow(1, 0, 1),
            )
            .unwrap();
        let diff = (v - &storage.value.narrow(1, 0, 1))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
    }
}
