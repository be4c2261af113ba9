//! DPT pretraining: batches drawn by (seed, step) from the memory-mapped dataset, the
//! cross-entropy at every context position, checkpoints and the final evaluations.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Kind;

use crate::config::DptConfig;
use crate::data::{self, RecordView};
use crate::optim::{warmup_cosine, Adam};
use crate::replicas::Replicas;
use crate::run::logging::Logger;
use crate::run::{self, seeds, BadUpdateGuard, Run, Snapshot};

use super::model::{dpt_loss, new_model, DptBatch, DptNet, HostBatch};
use super::offline::offline;
use super::policy::evaluate_online;

/// Counters that make a run resumable, saved in every checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TrainState {
    /// Optimiser steps done.
    pub steps: u64,
    /// Consecutive steps with a non-finite loss.
    pub bad_updates: BadUpdateGuard,
}

/// The salt of DPT's batch seeds ([`seeds::iteration_seed`]).
const STEP_SALT: u64 = 0xD9_7000_0000;

/// What one step's forward and backward measured.
#[derive(Debug, Clone, Copy)]
pub struct DptStep {
    /// DPT's loss: the mean cross-entropy over every position of every example (non-finite:
    /// nothing was backpropagated).
    pub loss: f64,
    /// Examples whose last position's most likely action is the label.
    pub correct_last: f64,
}

/// DPT's loss on `batch` backpropagated into `model`'s gradients (zero them first), from one
/// forward, or split over data-parallel `replicas` of `model`: each shard of the batch's
/// examples backpropagates its mean loss times its share of the examples on its own copy,
/// and the summed gradients go into `model`'s (`runtime.update_replicas`; the same gradient
/// up to float summation order, one depth-dropout draw shared by every shard). When the loss
/// is not finite nothing reaches `model`'s gradients.
pub fn dpt_backward(
    model: &DptNet,
    replicas: Option<&mut Replicas<DptNet>>,
    batch: &DptBatch,
) -> Result<DptStep> {
    let kept = model.draw_layers(true);
    let shard = |model: &DptNet, part: &DptBatch, share: f64| -> Result<DptStep> {
        let logits = model.forward_layers(part, &kept)?;
        let loss = dpt_loss(&logits, &part.labels);
        let value = loss.double_value(&[]);
        if value.is_finite() {
            (loss * share).backward();
        }
        let _guard = tch::no_grad_guard();
        let last = logits.select(1, logits.size()[1] - 1).argmax(-1, false);
        let correct = last
            .eq_tensor(&part.labels)
            .to_kind(Kind::Float)
            .sum(Kind::Float)
            .double_value(&[]);
        Ok(DptStep {
            loss: share * value,
            correct_last: correct,
        })
    };
    let Some(replicas) = replicas else {
        return shard(model, batch, 1.0);
    };
    let n = batch.labels.size()[0];
    let jobs: Vec<_> = replicas
        .shards(n)
        .into_iter()
        .map(|(start, len)| (batch.rows(start, len), len as f64 / n as f64))
        .collect();
    let shards = jobs.len();
    let parts = replicas.run(jobs, |m, (part, share)| shard(m, &part, share))?;
    let loss: f64 = parts.iter().map(|p| p.loss).sum();
    if loss.is_finite() {
        replicas.add_grads_to_master(shards);
    }
    Ok(DptStep {
        loss,
        correct_last: parts.iter().map(|p| p.correct_last).sum(),
    })
}

/// Trains DPT as configured in `run.config` with `dpt`.
pub fn train(run: &mut Run, dpt: &DptConfig) -> Result<()> {
    let cfg = run.config.clone();
    let device = run.device;
    let dataset = data::ensure(&cfg.env, &dpt.data, &run::dir::runs_dir(&run.dir))?;
    // Data-parallel replicas of the step (`runtime.update_replicas`, a CPU lever): built
    // before the seed is set, so nothing the run draws depends on this setting.
    let wanted = if device == tch::Device::Cpu {
        cfg.runtime.update_replicas.min(dpt.batch_size)
    } else {
        1
    };
    let mut replicas = match wanted {
        0 | 1 => None,
        n => {
            let (vs, _) = new_model(&cfg, dpt, device)?;
            Some(Replicas::new(&vs, n, |vs: &mut VarStore| {
                DptNet::new(
                    &vs.root(),
                    &cfg.model,
                    &cfg.env,
                    dpt.data.context_len,
                    dpt.state_encoding,
                )
            })?)
        }
    };
    tch::manual_seed(cfg.init_seed() as i64);
    let (mut vs, model) = new_model(&cfg, dpt, device)?;
    if let Some(r) = replicas.as_mut() {
        r.follow(&vs)?;
    }
    let mut opt = Adam::new(&vs, 0.9, 0.999, 1e-8, dpt.weight_decay);
    let mut state = TrainState::default();
    if let Some((saved, _)) = run.restore(&mut vs, &mut opt)? {
        state = saved;
        eprintln!("resuming {} at step {}", run.dir.display(), state.steps);
    }
    let image = cfg.env.spec().image.map(|i| (i.height, i.width));
    let tokens_per_step = (dpt.batch_size * (dpt.data.context_len + 1)) as f64;
    let bar = crate::run::progress::bar(dpt.steps, "dpt", "steps");
    bar.set_position(state.steps.min(dpt.steps));
    run::install_interrupt_handler();
    let log_every = 50u64;
    let (mut loss_sum, mut acc_sum, mut n_sum) = (0.0, 0.0, 0u64);
    let mut window_start = std::time::Instant::now();
    let mut window_steps = 0u64;
    // Seconds spent drawing batches and in the optimiser step (`icrl bench train` sums them).
    let (mut batch_secs, mut step_secs) = (0.0, 0.0);

    while state.steps < dpt.steps {
        // --- one optimiser step on a batch drawn with a generator seeded by (seed, step) ---
        let t0 = std::time::Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(seeds::iteration_seed(
            cfg.init_seed(),
            STEP_SALT,
            state.steps,
        ));
        let views: Vec<RecordView<'_>> = (0..dpt.batch_size)
            .map(|_| dataset.record(rng.random_range(0..dataset.len())))
            .collect::<Result<_>>()?;
        let host = HostBatch::from_records(&views, dpt.shuffle_context.then_some(&mut rng));
        let batch = host.to_tensors(image, device);
        let t1 = std::time::Instant::now();
        let lr = warmup_cosine(
            state.steps,
            dpt.lr,
            0.01,
            dpt.warmup_steps,
            dpt.steps,
            dpt.final_lr,
        );
        opt.zero_grad();
        let step = dpt_backward(&model, replicas.as_mut(), &batch)?;
        let value = step.loss.is_finite().then(|| {
            opt.clip_grad_norm(dpt.max_grad_norm);
            opt.step(lr);
            step.loss
        });
        batch_secs += (t1 - t0).as_secs_f64();
        step_secs += t1.elapsed().as_secs_f64();
        if let Some(value) = value {
            acc_sum += step.correct_last / dpt.batch_size as f64;
            loss_sum += value;
            n_sum += 1;
        }
        state
            .bad_updates
            .record_step(value, state.steps, dpt.max_bad_updates)?;
        state.steps += 1;
        window_steps += 1;
        bar.set_position(state.steps);

        // --- logging, evaluation, checkpoints, interruption ---
        let done = state.steps >= dpt.steps;
        if state.steps % log_every == 0 || done {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            let logger = &mut run.logger;
            if n_sum > 0 && (state.steps % (4 * log_every) == 0 || done) {
                eprintln!(
                    "step {}: action_ce {:.4}, accuracy (last position) {:.3}, {:.0} tokens/s",
                    state.steps,
                    loss_sum / n_sum as f64,
                    acc_sum / n_sum as f64,
                    window_steps as f64 * tokens_per_step / secs
                );
            }
            if n_sum > 0 {
                logger.scalar("losses/action_ce", state.steps, loss_sum / n_sum as f64)?;
                logger.scalar(
                    "losses/action_accuracy_last",
                    state.steps,
                    acc_sum / n_sum as f64,
                )?;
            }
            logger.scalar("charts/learning_rate", state.steps, lr)?;
            logger.scalar(
                "charts/sps",
                state.steps,
                window_steps as f64 * dpt.batch_size as f64 / secs,
            )?;
            logger.scalar(
                "perf/tokens_per_sec",
                state.steps,
                window_steps as f64 * tokens_per_step / secs,
            )?;
            logger.scalar("perf/batch_seconds", state.steps, batch_secs)?;
            logger.scalar("perf/step_seconds", state.steps, step_secs)?;
            (loss_sum, acc_sum, n_sum, window_steps) = (0.0, 0.0, 0, 0);
            (batch_secs, step_secs) = (0.0, 0.0);
            window_start = std::time::Instant::now();
        }
        if dpt.offline_eval_every > 0 && state.steps % dpt.offline_eval_every == 0 && !done {
            offline(run, &model, dpt, state.steps)?;
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
    offline(run, &model, dpt, state.steps)?;
    let json = evaluate_online(run, &model, dpt, &cfg, state.steps)?;
    eprintln!("online evaluation: {}", json.display());
    run.logger.flush()?;
    Ok(())
}
