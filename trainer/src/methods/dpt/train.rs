//! DPT pretraining: batches drawn by (seed, step) from the memory-mapped dataset, the
//! cross-entropy at every context position, checkpoints and the final evaluations.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Kind;

use crate::config::DptConfig;
use crate::data::{self, RecordView};
use crate::optim::{warmup_cosine, Adam};
use crate::run::logging::Logger;
use crate::run::{self, seeds, BadUpdateGuard, Run, Snapshot};

use super::model::{dpt_loss, new_model, HostBatch};
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

/// Trains DPT as configured in `run.config` with `dpt`.
pub fn train(run: &mut Run, dpt: &DptConfig) -> Result<()> {
    let cfg = run.config.clone();
    let device = run.device;
    let dataset = data::ensure(&cfg.env, &dpt.data, &run::dir::runs_dir(&run.dir))?;
    tch::manual_seed(cfg.init_seed() as i64);
    let (mut vs, model) = new_model(&cfg, dpt, device)?;
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

    while state.steps < dpt.steps {
        // --- one optimiser step on a batch drawn with a generator seeded by (seed, step) ---
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
        let logits = model.forward(&batch, true)?;
        let loss = dpt_loss(&logits, &batch.labels);
        let lr = warmup_cosine(
            state.steps,
            dpt.lr,
            0.01,
            dpt.warmup_steps,
            dpt.steps,
            dpt.final_lr,
        );
        let value = opt.minimise(&loss, dpt.max_grad_norm, lr);
        if let Some(value) = value {
            let _guard = tch::no_grad_guard();
            let last = logits
                .select(1, dpt.data.context_len as i64)
                .argmax(-1, false);
            acc_sum += last
                .eq_tensor(&batch.labels)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
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
            (loss_sum, acc_sum, n_sum, window_steps) = (0.0, 0.0, 0, 0);
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
