//! ReLIC: PPO with partial updates over long multi-episode trials (Elawady et al. 2024).
//!
//! Read top to bottom:
//!
//! 1. [`train`] sets up the model, the optimiser and the rollout storage, and restores them from
//!    a checkpoint when resuming.
//! 2. Each *rollout* is one trial per env slot: `rollout_len` (T) steps of many episodes on one
//!    task each. It is collected in `updates_per_rollout` (U) segments of T/U steps.
//! 3. After segment k, [`ppo_update`] trains on the whole prefix `[0, k*T/U)`: values of the
//!    prefix and the bootstrap value of the next observation come from one no-grad forward,
//!    GAE runs over the whole prefix (stopping at every episode end, as the official code does,
//!    unless `returns_across_episodes` lets returns flow across them), and the clipped PPO loss
//!    is masked to the newest segment. Behaviour log-probs are the ones recorded while acting
//!    (not recomputed).
//! 4. Between segments, completed episodes inside each env's context are optionally shuffled
//!    (the running episode stays last) and the KV cache is recomputed with the new policy, so
//!    sampling continues from the updated parameters.
//! 5. After the U partial updates, with `full_updates_per_rollout: 1` (official ReLIC), one more
//!    update over the whole trial with the loss on every step [0, T): every step is trained
//!    twice per rollout ([`ppo_math::rollout_updates`] lists a rollout's updates).
//! 6. At the trial's end everything resets: new tasks, empty contexts. Metrics, evaluation and
//!    checkpoints happen at rollout boundaries.
//! 7. Every `logging.diagnostics_every_updates` updates, right after the update, the
//!    attention diagnostics ([`diagnostics`]) look at the first few sequences of its prefix
//!    with the updated parameters and log the sink mass, entropies, sink norms, weights and the
//!    update's per-layer gradient norms; nothing of this feeds back into training.
//!
//! Randomness comes from two seeds ([`crate::config::Config::init_seed`] and
//! `experience_seed`): the initial weights and the learner's draws of rollout r (minibatch
//! order, depth dropout) from (init seed, r); the experience of rollout r (tasks, env
//! randomness, action sampling, episode shuffles) from (experience seed, r). A run resumed from
//! the checkpoint after rollout r reproduces the uninterrupted run exactly on CPU.

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use agent::ActorCritic;
use sampler::{CollectStats, ModelPolicy, RolloutStorage, Sampler};

use std::path::PathBuf;

use crate::config::{Config, PpoConfig};
use crate::diagnostics;
use crate::eval;
use crate::methods::TrainingMethod;
use crate::optim::{warmup_cosine, Adam};
use crate::ppo_math::{self, Boundaries, PpoLossConfig};
use crate::replicas::{ppo_backward, PpoMinibatch, Replicas};
use crate::run::checkpoint::{self, Checkpoint};
use crate::run::logging::{self, Logger};
use crate::run::{self, seeds, Run, Snapshot};

/// Tokens per chunk when the KV cache is refilled after an update.
const PREFILL_CHUNK: usize = 1024;

/// The counters that make a run resumable, saved in every checkpoint.
pub type TrainState = run::RolloutCounters;

/// What one PPO update measured (means over its minibatches).
#[derive(Clone, Debug, Default)]
pub struct UpdateMetrics {
    pub policy: f64,
    pub value: f64,
    pub entropy: f64,
    pub approx_kl: f64,
    pub clipfrac: f64,
    pub explained_variance: f64,
    pub grad_norm: f64,
    /// Minibatches skipped because their loss was NaN or infinite.
    pub skipped: usize,
    pub minibatches: usize,
    /// Per layer group, the gradient norm at each optimiser step before clipping (only when
    /// [`UpdatePlan::grad_norms`] asks; see [`diagnostics::parameter_group`]).
    pub layer_grad_norms: Vec<(String, Vec<f64>)>,
}

/// The salt of ReLIC's rollout seeds ([`seeds::iteration_seed`]).
const ROLLOUT_SALT: u64 = 0x9E37_79B9_7F4A_7C15;

/// The seeds of rollout `rollout`: (experience, learner). The experience seed (tasks, env
/// randomness, action sampling, episode shuffles) comes from the config's experience seed
/// only, the learner's (minibatch order, libtorch's draws such as dropout) from its init seed
/// only, so variants that share one and differ in the other are paired.
pub fn rollout_seeds(cfg: &crate::config::Config, rollout: u64) -> (u64, u64) {
    (
        seeds::iteration_seed(cfg.experience_seed(), ROLLOUT_SALT, rollout),
        seeds::iteration_seed(cfg.init_seed(), ROLLOUT_SALT, rollout),
    )
}

/// Trains ReLIC as configured in `run.config` with `ppo`.
pub fn train(run: &mut Run, ppo: &PpoConfig) -> Result<()> {
    let cfg = run.config.clone();
    let spec = cfg.env.spec();
    let device = run.device;
    tch::manual_seed(cfg.init_seed() as i64);
    let build = |vs: &mut VarStore| -> Result<ActorCritic> {
        let model = ActorCritic::new(&vs.root(), &cfg.model, &sampler::obs_spec(&spec))?;
        // A bf16 model keeps bf16 parameters; Adam keeps f32 moments and f32 master weights.
        if cfg.model.dtype != agent::DType::F32 {
            vs.set_kind(cfg.model.dtype.kind());
        }
        Ok(model)
    };
    let mut vs = VarStore::new(device);
    let model = build(&mut vs)?;
    let mut opt = Adam::new(&vs, 0.9, 0.999, ppo.adam_eps, 0.0);
    // Built after the master (their initial draws are overwritten and every rollout reseeds
    // libtorch's generator), so the master's weights do not depend on this setting.
    // At most one replica per sequence of a minibatch; a CPU lever only (on CUDA one forward
    // over the whole minibatch already fills the device).
    let sequences = (ppo.num_envs / ppo.minibatches.max(1)).max(1);
    let wanted = if device == tch::Device::Cpu {
        cfg.runtime.update_replicas
    } else {
        1
    };
    let mut replicas = match wanted.min(sequences) {
        0 | 1 => None,
        n => Some(Replicas::new(&vs, n, build)?),
    };
    let mut state = TrainState::default();
    if let Some((saved, path)) = run.restore(&mut vs, &mut opt)? {
        state = saved;
        eprintln!(
            "resuming {} from {} (env step {})",
            run.dir.display(),
            path.display(),
            state.env_steps
        );
    }
    let t_len = ppo.rollout_len;
    let b = ppo.num_envs;
    let plan =
        ppo_math::rollout_updates(t_len, ppo.updates_per_rollout, ppo.full_updates_per_rollout);
    let mut storage = RolloutStorage::new(&spec, b, t_len, device)?;
    let boundaries = if ppo.returns_across_episodes {
        Boundaries::Trial
    } else {
        Boundaries::Episode
    };
    let bar = crate::run::progress::bar(ppo.total_steps, "relic", "steps");
    bar.set_position(state.env_steps.min(ppo.total_steps));
    run::install_interrupt_handler();

    let budget_spent = |state: &TrainState| {
        state.env_steps >= ppo.total_steps
            || ppo
                .stop_after_updates
                .is_some_and(|stop| state.updates >= stop)
    };
    while !budget_spent(&state) {
        // --- one rollout: a trial of T steps in every env slot, on freshly drawn tasks ---
        let (experience_seed, learner_seed) = rollout_seeds(&cfg, state.rollouts);
        tch::manual_seed(learner_seed as i64);
        let mut experience_rng = ChaCha8Rng::seed_from_u64(experience_seed);
        let mut learner_rng = ChaCha8Rng::seed_from_u64(learner_seed);
        let mut sampler = Sampler::new(&cfg.env, &cfg.sampler, b, experience_seed)?;
        let tasks = sampler.sample_tasks_in(&cfg.training_splits(), &mut experience_rng)?;
        sampler.start_trials(&tasks, &mut storage)?;
        let mut policy = ModelPolicy::with_inference(
            &model,
            &sampler.act_groups(),
            t_len,
            experience_seed,
            cfg.sampler.inference,
        )?;
        let mut rollout_stats = CollectStats::default();
        let started = std::time::Instant::now();
        let mut update_seconds = 0.0;
        let mut refresh_seconds = 0.0;
        let first_update = state.updates;
        let mut stopped_early = false;
        let mut diagnostics_seconds = 0.0;
        for (i, planned) in plan.iter().enumerate() {
            if planned.collect > 0 {
                let stats = sampler.collect(&mut policy, &mut storage, planned.collect)?;
                state.env_steps += (b * planned.collect) as u64;
                rollout_stats.merge(&stats);
            }

            let lr = warmup_cosine(
                state.env_steps,
                ppo.lr,
                ppo.warmup_start_factor,
                ppo.warmup_steps,
                ppo.total_steps,
                ppo.final_lr,
            );
            let t0 = std::time::Instant::now();
            let diagnose =
                diagnostics::due(cfg.logging.diagnostics_every_updates, state.updates + 1);
            let update = UpdatePlan {
                ppo,
                boundaries,
                loss_start: planned.loss_start,
                end: planned.end,
                lr,
                grad_norms: diagnose,
            };
            let metrics = ppo_update(
                &model,
                &mut opt,
                &storage,
                &update,
                &mut learner_rng,
                replicas.as_mut(),
            )?;
            update_seconds += t0.elapsed().as_secs_f64();
            state.updates += 1;
            state.bad_updates.record_update(
                state.updates,
                metrics.skipped,
                metrics.minibatches,
                ppo.max_bad_updates,
            )?;
            log_update(&mut run.logger, state.env_steps, lr, &metrics)?;
            if diagnose {
                let t0 = std::time::Instant::now();
                let probe = cfg.logging.diagnostics_sequences.min(b);
                let layers = model.attention_diagnostics(&storage.inputs_rows(
                    0,
                    planned.end,
                    0..probe,
                )?)?;
                let logger = &mut run.logger;
                diagnostics::log_attention(logger, "attention", state.env_steps, &layers, true)?;
                diagnostics::log_weights(logger, state.env_steps, &vs)?;
                diagnostics::log_grad_norms(logger, state.env_steps, &metrics.layer_grad_norms)?;
                diagnostics_seconds += t0.elapsed().as_secs_f64();
            }
            if ppo
                .stop_after_updates
                .is_some_and(|stop| state.updates >= stop)
            {
                // The update budget ends the run here, inside the trial.
                stopped_early = i + 1 < plan.len();
                bar.set_position(state.env_steps.min(ppo.total_steps));
                break;
            }

            if plan.get(i + 1).is_some_and(|next| next.collect > 0) {
                // Continue the trial with the updated policy: optionally shuffle the completed
                // episodes in each context, then rebuild the KV cache over the prefix.
                if ppo.shuffle_episodes {
                    storage.shuffle_completed_episodes(&mut experience_rng)?;
                }
                let _guard = tch::no_grad_guard();
                let t0 = std::time::Instant::now();
                policy.refresh(&storage, planned.end, PREFILL_CHUNK)?;
                refresh_seconds += t0.elapsed().as_secs_f64();
            }
            bar.set_position(state.env_steps.min(ppo.total_steps));
        }
        state.rollouts += 1;
        let seconds = started.elapsed().as_secs_f64();
        log_rollout(
            &mut run.logger,
            state.env_steps,
            &rollout_stats,
            seconds,
            update_seconds,
            refresh_seconds,
        )?;
        if diagnostics_seconds > 0.0 {
            run.logger.scalar(
                "perf/diagnostics_seconds",
                state.env_steps,
                diagnostics_seconds,
            )?;
        }
        drop(policy);
        drop(sampler);

        // --- evaluation, checkpoints, interruption: all at rollout boundaries ---
        let done = budget_spent(&state);
        if stopped_early {
            eprintln!(
                "stopping after {} updates (method.stop_after_updates), inside rollout {}",
                state.updates, state.rollouts
            );
        }
        let eval_due = cfg.eval.every_steps > 0
            && state.env_steps - state.last_eval_step >= cfg.eval.every_steps;
        if eval_due || done {
            evaluate(run, &model, ppo, state.env_steps)?;
            state.last_eval_step = state.env_steps;
        }
        let snapshot = Snapshot {
            step: state.env_steps,
            model: &vs,
            optimiser: &opt,
            state: &state,
        };
        let updates_this_rollout = first_update..state.updates;
        run.checkpoint_if_due(updates_this_rollout, done, &snapshot)?;
        run.logger.flush()?;
        run.stop_if_interrupted(state.env_steps, &bar)?;
    }
    bar.finish();
    Ok(())
}

/// What one partial update trains on, and how.
#[derive(Clone, Copy, Debug)]
pub struct UpdatePlan<'a> {
    /// The method's settings (epochs, minibatches, discounting, loss weights).
    pub ppo: &'a PpoConfig,
    /// How returns flow across episode ends.
    pub boundaries: Boundaries,
    /// The loss covers `[loss_start, end)`, the newest segment.
    pub loss_start: usize,
    /// Values and GAE run over the prefix `[0, end)`.
    pub end: usize,
    /// Learning rate of this update.
    pub lr: f64,
    /// Record each layer group's gradient norm at every optimiser step
    /// ([`UpdateMetrics::layer_grad_norms`]).
    pub grad_norms: bool,
}

/// One PPO update on the prefix `[0, end)` with the loss on `[loss_start, end)`; each
/// minibatch's gradient from one forward, or split over data-parallel `replicas` of `model`
/// (`runtime.update_replicas`; the same update up to float summation order).
pub fn ppo_update(
    model: &ActorCritic,
    opt: &mut Adam,
    storage: &RolloutStorage,
    plan: &UpdatePlan<'_>,
    rng: &mut ChaCha8Rng,
    mut replicas: Option<&mut Replicas<ActorCritic>>,
) -> Result<UpdateMetrics> {
    let UpdatePlan {
        ppo,
        boundaries,
        loss_start,
        end,
        lr,
        grad_norms,
    } = *plan;
    let loss_cfg = PpoLossConfig::from(ppo);
    let b = storage.num_envs();
    let seg = (end - loss_start) as i64;

    // Values of the prefix and of the pending observation at column `end` (the bootstrap),
    // under the current policy, evaluation mode.
    let values = {
        let _guard = tch::no_grad_guard();
        let (_, v) = model.forward(&storage.inputs(0, end + 1), false)?;
        v // [B, end + 1]
    };
    let host = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous())?)
    };
    let flags = |t: &Tensor| -> Result<Vec<bool>> {
        let v: Vec<u8> = Vec::try_from(
            t.narrow(1, 0, end as i64)
                .to_kind(Kind::Uint8)
                .contiguous()
                .view(-1),
        )?;
        Ok(v.into_iter().map(|x| x != 0).collect())
    };
    let rewards = host(&storage.reward.narrow(1, 0, end as i64).reshape(-1))?;
    let values_host = host(&values.reshape(-1))?;
    let (advantages, returns) = ppo_math::gae(
        &ppo_math::Steps {
            b,
            t: end,
            rewards: &rewards,
            values: &values_host,
            terminated: &flags(&storage.terminated)?,
            truncated: &flags(&storage.truncated)?,
            final_values: None,
        },
        ppo_math::GaeParams {
            boundaries,
            gamma: ppo.gamma as f32,
            lambda: ppo.gae_lambda as f32,
        },
    );
    let device = values.device();
    let segment = |x: Vec<f32>| {
        Tensor::from_slice(&x)
            .view([b as i64, end as i64])
            .narrow(1, loss_start as i64, seg)
            .to_device(device)
    };
    let advantages = segment(advantages);
    let returns = segment(returns);
    let old_values = values.narrow(1, loss_start as i64, seg);
    let old_logprob = storage.logprob.narrow(1, loss_start as i64, seg);
    // i32 in storage; the loss gathers with i64 indices.
    let actions = storage
        .action
        .narrow(1, loss_start as i64, seg)
        .to_kind(Kind::Int64);

    let mut m = UpdateMetrics {
        explained_variance: ppo_math::explained_variance(
            &host(&old_values.reshape(-1))?,
            &host(&returns.reshape(-1))?,
        ),
        ..UpdateMetrics::default()
    };
    let inputs = storage.inputs(0, end);
    let per_minibatch = b / ppo.minibatches;
    let mut rows: Vec<i64> = (0..b as i64).collect();
    let mut accumulated = 0;
    opt.zero_grad();
    for _ in 0..ppo.epochs {
        rows.shuffle(rng);
        for chunk in rows.chunks(per_minibatch) {
            let idx = Tensor::from_slice(chunk).to_device(device);
            let pick = |x: &Tensor| x.index_select(0, &idx);
            let minibatch = PpoMinibatch {
                inputs: inputs.select_rows(&idx),
                loss_start: loss_start as i64,
                actions: pick(&actions),
                old_logprob: pick(&old_logprob),
                advantages: pick(&advantages),
                returns: pick(&returns),
                old_values: pick(&old_values),
            };
            // Train mode draws depth dropout (ReLIC's regulariser) while the rollout's log-probs
            // came from the full model: a minibatch that drops a layer has ratios far from 1
            // even at lr -> 0, which shows as approx_kl ~0.03-0.2 and clipfrac ~0.1-0.25 (Dark
            // Room, 2 layers). Set model.depth_dropout=0 to see the optimiser's own KL.
            // Gradients of `loss / grad_accum` land in the model's .grad when the loss is
            // finite, from one forward or summed over data-parallel replicas.
            let accum = ppo.grad_accum as f64;
            let loss = match replicas.as_deref_mut() {
                None => minibatch.backward(model, &loss_cfg, accum)?,
                Some(replicas) => ppo_backward(replicas, model, &minibatch, &loss_cfg, accum)?,
            };
            m.minibatches += 1;
            if !loss.total.double_value(&[]).is_finite() {
                m.skipped += 1;
                continue;
            }
            accumulated += 1;
            m.policy += loss.policy;
            m.value += loss.value;
            m.entropy += loss.entropy;
            m.approx_kl += loss.approx_kl;
            m.clipfrac += loss.clipfrac;
            if accumulated == ppo.grad_accum {
                if grad_norms {
                    let norms = opt.grad_norms_by(diagnostics::parameter_group);
                    diagnostics::push_grad_norms(&mut m.layer_grad_norms, norms);
                }
                m.grad_norm += opt.clip_grad_norm(ppo.max_grad_norm);
                opt.step(lr);
                opt.zero_grad();
                accumulated = 0;
            }
        }
    }
    if accumulated > 0 {
        if grad_norms {
            let norms = opt.grad_norms_by(diagnostics::parameter_group);
            diagnostics::push_grad_norms(&mut m.layer_grad_norms, norms);
        }
        m.grad_norm += opt.clip_grad_norm(ppo.max_grad_norm);
        opt.step(lr);
        opt.zero_grad();
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
    m.grad_norm /= (used / ppo.grad_accum as f64).ceil().max(1.0);
    Ok(m)
}

fn log_update(logger: &mut dyn Logger, step: u64, lr: f64, m: &UpdateMetrics) -> Result<()> {
    logger.scalar("charts/learning_rate", step, lr)?;
    logger.scalar("losses/policy", step, m.policy)?;
    logger.scalar("losses/value", step, m.value)?;
    logger.scalar("losses/entropy", step, m.entropy)?;
    logger.scalar("losses/approx_kl", step, m.approx_kl)?;
    logger.scalar("losses/clipfrac", step, m.clipfrac)?;
    logger.scalar("losses/explained_variance", step, m.explained_variance)?;
    logger.scalar("losses/grad_norm", step, m.grad_norm)?;
    if m.skipped > 0 {
        logger.scalar("losses/skipped_minibatches", step, m.skipped as f64)?;
    }
    Ok(())
}

fn log_rollout(
    logger: &mut dyn Logger,
    step: u64,
    s: &CollectStats,
    seconds: f64,
    update_seconds: f64,
    refresh_seconds: f64,
) -> Result<()> {
    logging::episode_charts(logger, step, &s.episodes)?;
    logger.scalar("charts/sps", step, s.env_steps as f64 / seconds.max(1e-9))?;
    logger.scalar("perf/rollout_seconds", step, seconds)?;
    logger.scalar("perf/update_seconds", step, update_seconds)?;
    logger.scalar("perf/inference_seconds", step, s.inference_seconds)?;
    logger.scalar("perf/env_seconds", step, s.env_seconds)?;
    logger.scalar("perf/collect_seconds", step, s.seconds)?;
    logger.scalar("perf/refresh_seconds", step, refresh_seconds)?;
    Ok(())
}

fn evaluate(run: &mut Run, model: &ActorCritic, ppo: &PpoConfig, step: u64) -> Result<()> {
    let cfg = &run.config;
    let evaluated = eval::evaluate_actor_critic(model, cfg, ppo.rollout_len, step)?;
    let json = evaluated.publish(run)?;
    eval::print_summary(&evaluated.result, &json);
    Ok(())
}

impl TrainingMethod for PpoConfig {
    fn train(&self, run: &mut Run) -> Result<()> {
        train(run, self)
    }

    fn evaluate(&self, run: &mut Run, cfg: &Config, ckpt: &Checkpoint) -> Result<PathBuf> {
        let mut vs = VarStore::new(run.device);
        let spec = sampler::obs_spec(&cfg.env.spec());
        let model = ActorCritic::new(&vs.root(), &cfg.model, &spec)?;
        if cfg.model.dtype != agent::DType::F32 {
            vs.set_kind(cfg.model.dtype.kind());
        }
        checkpoint::load_into_varstore(&mut vs, ckpt, "")?;
        eval::evaluate_actor_critic(&model, cfg, self.rollout_len, ckpt.meta.step)?.publish(run)
    }

    fn budget(&self, eval_step: u64) -> (f64, &'static str) {
        (eval_step as f64, "env steps")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use sampler::{Policy, RandomPolicy};

    fn tiny() -> (Config, PpoConfig) {
        let mut cfg = Config::default();
        cfg.model.heads = 2;
        cfg.model.depth_dropout = 0.0;
        cfg.sampler.threads = 1;
        let ppo = PpoConfig {
            num_envs: 4,
            rollout_len: 40,
            updates_per_rollout: 4,
            minibatches: 2,
            epochs: 1,
            ..PpoConfig::default()
        };
        (cfg, ppo)
    }

    /// The tiny model, its optimiser, a sampler and a storage with trials started on `tasks`.
    struct Fixture {
        ppo: PpoConfig,
        vs: VarStore,
        model: ActorCritic,
        opt: Adam,
        sampler: Sampler,
        storage: RolloutStorage,
    }

    fn fixture(seed: u64, tasks: &[envs::TaskId]) -> Fixture {
        let (cfg, ppo) = tiny();
        let spec = cfg.env.spec();
        let vs = VarStore::new(tch::Device::Cpu);
        let model = ActorCritic::new(&vs.root(), &cfg.model, &sampler::obs_spec(&spec)).unwrap();
        let opt = Adam::new(&vs, 0.9, 0.999, 1e-5, 0.0);
        let mut sampler = Sampler::new(&cfg.env, &cfg.sampler, ppo.num_envs, seed).unwrap();
        let mut storage =
            RolloutStorage::new(&spec, ppo.num_envs, ppo.rollout_len, tch::Device::Cpu).unwrap();
        sampler.start_trials(tasks, &mut storage).unwrap();
        Fixture {
            ppo,
            vs,
            model,
            opt,
            sampler,
            storage,
        }
    }

    #[test]
    fn the_loss_sees_only_the_newest_segment() {
        let Fixture {
            ppo,
            vs,
            model,
            mut opt,
            mut sampler,
            mut storage,
        } = fixture(1, &[0; 4]);
        let spec = tiny().0.env.spec();
        let mut policy = RandomPolicy::new(spec.num_actions, ppo.num_envs, 3).unwrap();
        sampler.collect(&mut policy, &mut storage, 20).unwrap();
        // Poison the behaviour log-probs of the older segment [0, 10): if the loss touched
        // them, it would be NaN and the update would be skipped.
        let _ = storage.logprob.narrow(1, 0, 10).fill_(f64::NAN);
        let before: Vec<f32> = Vec::try_from(vs.variables()["actor.weight"].reshape(-1)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let m = ppo_update(
            &model,
            &mut opt,
            &storage,
            &UpdatePlan {
                ppo: &ppo,
                boundaries: Boundaries::Trial,
                loss_start: 10,
                end: 20,
                lr: 1e-3,
                grad_norms: false,
            },
            &mut rng,
            None,
        )
        .unwrap();
        assert_eq!(m.skipped, 0);
        assert!(m.policy.is_finite() && m.value.is_finite());
        let after: Vec<f32> = Vec::try_from(vs.variables()["actor.weight"].reshape(-1)).unwrap();
        assert_ne!(before, after, "the update changed the parameters");
        // Poisoning the newest segment instead makes every minibatch non-finite.
        let _ = storage.logprob.narrow(1, 10, 10).fill_(f64::NAN);
        let m = ppo_update(
            &model,
            &mut opt,
            &storage,
            &UpdatePlan {
                ppo: &ppo,
                boundaries: Boundaries::Trial,
                loss_start: 10,
                end: 20,
                lr: 1e-3,
                grad_norms: false,
            },
            &mut rng,
            None,
        )
        .unwrap();
        assert_eq!(m.skipped, m.minibatches);
    }

    #[test]
    fn experience_and_learner_streams_follow_their_own_seed() {
        let (mut a, _) = tiny();
        a.seed = 5;
        let mut b = a.clone();
        b.init_seed = Some(99);
        let (ea, la) = rollout_seeds(&a, 3);
        let (eb, lb) = rollout_seeds(&b, 3);
        assert_eq!(ea, eb, "same experience seed: same tasks, envs and actions");
        assert_ne!(la, lb);
        let mut c = a.clone();
        c.experience_seed = Some(99);
        let (ec, lc) = rollout_seeds(&c, 3);
        assert_ne!(ea, ec);
        assert_eq!(
            la, lc,
            "same init seed: same minibatch order and dropout draws"
        );
        assert_ne!(
            rollout_seeds(&a, 4).0,
            ea,
            "each rollout has its own stream"
        );
        // The tasks a rollout draws depend on the experience stream only.
        let (cfg, ppo) = tiny();
        let sampler = Sampler::new(&cfg.env, &cfg.sampler, ppo.num_envs, ea).unwrap();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            sampler
                .sample_tasks_in(&cfg.training_splits(), &mut rng)
                .unwrap()
        };
        assert_eq!(draw(ea), draw(eb));
        assert_ne!(draw(ea), draw(ec));
    }

    /// The rollout's last update (the full one) puts its loss on every step [0, T): a poisoned
    /// behaviour log-prob at step 0 or at step T - 1 makes every minibatch non-finite, while the
    /// last partial update never reads step 0.
    #[test]
    fn the_full_update_puts_the_loss_on_every_step_of_the_trial() {
        let Fixture {
            ppo,
            model,
            mut opt,
            mut sampler,
            mut storage,
            ..
        } = fixture(2, &[0; 4]);
        let t_len = ppo.rollout_len;
        let plan =
            ppo_math::rollout_updates(t_len, ppo.updates_per_rollout, ppo.full_updates_per_rollout);
        assert_eq!(ppo.full_updates_per_rollout, 1, "the default");
        let (last_partial, full) = (plan[plan.len() - 2], plan[plan.len() - 1]);
        let spec = tiny().0.env.spec();
        let mut policy = RandomPolicy::new(spec.num_actions, ppo.num_envs, 3).unwrap();
        sampler.collect(&mut policy, &mut storage, t_len).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut skipped = |storage: &RolloutStorage, p: ppo_math::PlannedUpdate| {
            let update = UpdatePlan {
                ppo: &ppo,
                boundaries: Boundaries::Episode,
                loss_start: p.loss_start,
                end: p.end,
                lr: 0.0,
                grad_norms: false,
            };
            let m = ppo_update(&model, &mut opt, storage, &update, &mut rng, None).unwrap();
            (m.skipped, m.minibatches)
        };
        let clean = storage.logprob.copy();
        for poisoned in [0, t_len - 1] {
            storage.logprob.copy_(&clean);
            let _ = storage
                .logprob
                .narrow(1, poisoned as i64, 1)
                .fill_(f64::NAN);
            let (s, n) = skipped(&storage, full);
            assert_eq!(
                s, n,
                "step {poisoned} poisoned: the full update must read it"
            );
        }
        storage.logprob.copy_(&clean);
        let _ = storage.logprob.narrow(1, 0, 1).fill_(f64::NAN);
        assert_eq!(skipped(&storage, last_partial).0, 0);
    }

    #[test]
    fn refreshed_cache_matches_a_fresh_forward_after_an_update() {
        let Fixture {
            ppo,
            model,
            mut opt,
            mut sampler,
            mut storage,
            ..
        } = fixture(5, &[1, 2, 3, 4]);
        let mut policy =
            ModelPolicy::new(&model, &sampler.act_groups(), ppo.rollout_len, 5).unwrap();
        sampler.collect(&mut policy, &mut storage, 10).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        ppo_update(
            &model,
            &mut opt,
            &storage,
            &UpdatePlan {
                ppo: &ppo,
                boundaries: Boundaries::Trial,
                loss_start: 0,
                end: 10,
                lr: 1e-2,
                grad_norms: false,
            },
            &mut rng,
            None,
        )
        .unwrap();
        storage.shuffle_completed_episodes(&mut rng).unwrap();
        {
            let _guard = tch::no_grad_guard();
            policy.refresh(&storage, 10, 3).unwrap();
        }
        // The next action's value from the refreshed cache equals the value at column 10 of a
        // fresh full forward with the updated parameters.
        let out = policy.act(&storage, 10, 0..ppo.num_envs).unwrap();
        let _guard = tch::no_grad_guard();
        let (_, v) = model.forward(&storage.inputs(0, 11), false).unwrap();
        let fresh: Vec<f32> = Vec::try_from(v.select(1, 10).contiguous()).unwrap();
        for (a, b) in out.value.iter().zip(&fresh) {
            assert!((a - b).abs() < 1e-4, "{:?} vs {fresh:?}", out.value);
        }
    }

    /// PPO's ratios start at 1 only if the training forward gives the log-probs the sampler
    /// stored. Through a whole trial of partial updates (update, episode shuffle, cache
    /// refresh, next segment), a zero-lr update on each new segment must see ratio 1
    /// everywhere: approx_kl ~ 0 and no clipping.
    #[test]
    fn behaviour_log_probs_match_the_training_forward_in_every_segment() {
        let Fixture {
            ppo,
            model,
            mut opt,
            mut sampler,
            mut storage,
            ..
        } = fixture(7, &[1, 2, 3, 4]);
        let mut policy =
            ModelPolicy::new(&model, &sampler.act_groups(), ppo.rollout_len, 7).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (t_len, u) = (ppo.rollout_len, ppo.updates_per_rollout);
        let mut update = |storage: &RolloutStorage, start, end, lr, rng: &mut ChaCha8Rng| {
            ppo_update(
                &model,
                &mut opt,
                storage,
                &UpdatePlan {
                    ppo: &ppo,
                    boundaries: Boundaries::Trial,
                    loss_start: start,
                    end,
                    lr,
                    grad_norms: false,
                },
                rng,
                None,
            )
            .unwrap()
        };
        for k in 1..=u {
            let (start, end) = ppo_math::partial_update_range(k, u, t_len);
            sampler
                .collect(&mut policy, &mut storage, t_len / u)
                .unwrap();
            let check = update(&storage, start, end, 0.0, &mut rng);
            assert!(
                check.approx_kl.abs() < 1e-5 && check.clipfrac == 0.0,
                "segment {k}: approx_kl {} clipfrac {}",
                check.approx_kl,
                check.clipfrac
            );
            let real = update(&storage, start, end, 1e-2, &mut rng);
            assert!(
                real.approx_kl > 0.0,
                "segment {k}: the real update moved the policy"
            );
            if k < u {
                storage.shuffle_completed_episodes(&mut rng).unwrap();
                let _guard = tch::no_grad_guard();
                policy.refresh(&storage, end, 3).unwrap();
            }
        }
    }
}
