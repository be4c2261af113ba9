//! DPT, the Decision-Pretrained Transformer (Lee et al. 2023): supervised pretraining to
//! predict the optimal action of a query state from an in-context dataset of transitions.
//!
//! The files: [`model`] (the network, its batches and its loss), [`mod@train`] (pretraining),
//! [`mod@offline`] and [`policy`] (the two evaluations). In order:
//!
//! 1. [`train()`] makes sure the dataset exists ([`crate::data::ensure`]: generated into the
//!    cache on the first run, memory-mapped after), builds the model and AdamW, and restores
//!    both from a checkpoint when resuming.
//! 2. Each step draws `batch_size` records with a generator seeded by (seed, step), shuffles
//!    the order of each context's transitions (the (s, a, r, s') tuples stay intact) when
//!    configured, and minimises the cross-entropy against the query's optimal action at every
//!    position: position j sees the query and the first j transitions ([`dpt_loss`]).
//! 3. Offline evaluation ([`offline()`]): fixed contexts from the dataset's generator on the
//!    held-out tasks; the model acts for one episode with the current observation as its
//!    query, greedily and sampled. On bandits the offline and online comparison with the
//!    classic algorithms runs instead ([`crate::methods::bandit`]).
//! 4. Online evaluation ([`evaluate_online`]) follows the shared protocol of [`crate::eval`]:
//!    trials of several episodes on the held-out tasks; the model's own transitions become its
//!    context (the last k episodes, or the whole trial so far), actions sampled at
//!    temperature 1.
//!
//! The model is the agent crate's [`agent::SequenceModel`] (one token per transition,
//! `linear(concat(s, onehot(a), r, s'))`, the query token first) for vector observations. For
//! image observations ([`ImageDpt`]) each transition token is the sum of two step encoders of
//! the agent crate (CNN + vector MLP): one for (s, a, r), one for s'; the query token is the
//! first encoder with "no action".

pub mod model;
pub mod offline;
pub mod policy;
pub mod train;

pub use model::{dpt_loss, load_model, DptBatch, DptNet, HostBatch, ImageDpt};
pub use offline::{offline, offline_contexts, offline_returns};
pub use policy::{evaluate_online, online_result, DptPolicy};
pub use train::{train, TrainState};

use std::path::PathBuf;

use anyhow::Result;

use crate::config::{Config, DptConfig};
use crate::error::UsageError;
use crate::eval;
use crate::methods::TrainingMethod;
use crate::run::checkpoint::Checkpoint;
use crate::run::Run;

impl TrainingMethod for DptConfig {
    fn train(&self, run: &mut Run) -> Result<()> {
        train(run, self)
    }

    fn evaluate(&self, run: &mut Run, cfg: &Config, ckpt: &Checkpoint) -> Result<PathBuf> {
        let (_vs, model) = load_model(cfg, self, ckpt, run.device)?;
        let result = online_result(&model, self, cfg, ckpt.meta.step, run.device)?;
        eval::publish(run, &result)
    }

    fn evaluate_offline(
        &self,
        run: &mut Run,
        ckpt: &Checkpoint,
        contexts_per_task: Option<usize>,
    ) -> Result<PathBuf> {
        let cfg = run.config.clone();
        let (_vs, model) = load_model(&cfg, self, ckpt, run.device)?;
        let mut dpt = self.clone();
        if let Some(n) = contexts_per_task {
            if n == 0 {
                return Err(UsageError("--contexts must be >= 1".into()).into());
            }
            dpt.offline_contexts_per_task = n;
        }
        offline(run, &model, &dpt, ckpt.meta.step)
    }

    fn budget(&self, eval_step: u64) -> (f64, &'static str) {
        (eval_step as f64, "optimiser steps")
    }
}
