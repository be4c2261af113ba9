//! A run in progress: its folder, resolved config, device, logger, checkpoints and the
//! interrupt flag. Shared by every method; the methods themselves live in their own modules.
//!
//! The chores a training loop shares, so a method's module holds its algorithm: [`Run::restore`]
//! on `--resume`, [`Run::checkpoint_if_due`] and [`Run::stop_if_interrupted`] at safe points,
//! [`BadUpdateGuard`] for non-finite losses, and the seeds of [`seeds`].

pub mod bad_updates;
pub mod checkpoint;
pub mod dir;
pub mod logging;
pub mod progress;
pub mod seeds;
pub mod signals;

pub use bad_updates::BadUpdateGuard;

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use self::checkpoint::{Checkpoint, CheckpointMeta, TensorGroup};
use self::dir as run_dir;
use self::logging::{code_block, GuardedLogger, LogError, Logger, TensorBoardLogger};
use crate::config::{self, Config};
use crate::optim::Adam;

/// Installs the stop-signal handler (SIGINT, SIGTERM, SIGUSR1; see [`signals`]): the first
/// signal asks the running method to save a checkpoint at its next safe point and stop; a
/// second one quits at once without touching libtorch.
pub fn install_interrupt_handler() {
    if let Err(e) = signals::install(signals::Mode::Run) {
        eprintln!("warning: cannot handle stop signals ({e}); a signal will end the run unsaved");
    }
}

/// A run stopped by a stop signal after saving its checkpoint (exit code 130 after SIGINT,
/// 143 after SIGTERM or SIGUSR1: [`signals::exit_code`]).
#[derive(Debug, thiserror::Error)]
#[error("interrupted at env step {step}; checkpoint saved; resume with: icrl train --resume {}", dir.display())]
pub struct Interrupted {
    /// Env steps done.
    pub step: u64,
    /// The run folder.
    pub dir: PathBuf,
}

/// True once a stop signal (Ctrl-C, SIGTERM, SIGUSR1) arrived.
pub fn interrupted() -> bool {
    signals::interrupted()
}

/// The hyper-parameters a run shows in TensorBoard's HParams dashboard: `name` (a sweep's
/// variant), `seed`, `env`, `method`, and the field of every `--set path=value` override (as
/// written), except the fields that cannot change results (`runtime.*`, `logging.*`,
/// `checkpoint.*`).
pub fn hparams_of(
    config: &Config,
    overrides: &[String],
) -> Vec<(String, logging::hparams::HParamValue)> {
    use logging::hparams::HParamValue;
    let mut values = vec![
        ("name".to_string(), HParamValue::Text(config.name.clone())),
        ("seed".to_string(), HParamValue::Number(config.seed as f64)),
        (
            "env".to_string(),
            HParamValue::Text(config.env.name().into()),
        ),
        (
            "method".to_string(),
            HParamValue::Text(config.method_name().into()),
        ),
    ];
    for (path, value) in override_hparams(overrides) {
        match values.iter_mut().find(|(name, _)| *name == path) {
            Some(slot) if path != "name" && path != "seed" => slot.1 = value,
            Some(_) => {}
            None => values.push((path, value)),
        }
    }
    values
}

/// The hyper-parameters of `--set path=value` overrides, in order, without the fields that
/// cannot change results (`runtime.*`, `logging.*`, `checkpoint.*`).
pub fn override_hparams(overrides: &[String]) -> Vec<(String, logging::hparams::HParamValue)> {
    let ignored = ["runtime.", "logging.", "checkpoint."];
    overrides
        .iter()
        .filter_map(|o| o.split_once('='))
        .map(|(path, value)| (path.trim(), value))
        .filter(|(path, _)| !ignored.iter().any(|p| path.starts_with(p)))
        .map(|(path, value)| {
            (
                path.to_string(),
                logging::hparams::HParamValue::parse(value),
            )
        })
        .collect()
}

/// Keeps the algorithm a saved run was trained with when its `config.ron` predates a field
/// whose default changed the algorithm: a ReLIC run saved before `full_updates_per_rollout`
/// existed trained without the full update, so it resumes without one (the new default, 1,
/// would change the run halfway). Returns a note per field set.
pub fn keep_saved_algorithm(config: &mut Config, saved_text: &str) -> Vec<String> {
    let mut notes = Vec::new();
    if let config::Method::Relic(ppo) = &mut config.method {
        if !saved_text.contains("full_updates_per_rollout") && ppo.full_updates_per_rollout != 0 {
            ppo.full_updates_per_rollout = 0;
            notes.push(
                "saved before `full_updates_per_rollout` existed: continuing without the full \
                 update, as it was trained"
                    .to_string(),
            );
        }
    }
    notes
}

/// A logger that drops everything (when TensorBoard logging is off).
struct NullLogger;

impl Logger for NullLogger {
    fn scalar(&mut self, _: &str, _: u64, _: f64) -> Result<(), LogError> {
        Ok(())
    }
    fn histogram(&mut self, _: &str, _: u64, _: &[f64]) -> Result<(), LogError> {
        Ok(())
    }
    fn image(&mut self, _: &str, _: u64, _: &[u8], _: usize, _: usize) -> Result<(), LogError> {
        Ok(())
    }
    fn text(&mut self, _: &str, _: u64, _: &str) -> Result<(), LogError> {
        Ok(())
    }
    fn plugin(&mut self, _: &str, _: u64, _: &str, _: &[u8]) -> Result<(), LogError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), LogError> {
        Ok(())
    }
}

/// A run in progress.
pub struct Run {
    /// The run folder.
    pub dir: PathBuf,
    /// The resolved config.
    pub config: Config,
    /// The resolved config as saved in `config.ron`.
    pub config_text: String,
    /// Where the model runs.
    pub device: Device,
    /// Metrics sink, with the config's error policy applied.
    pub logger: GuardedLogger<Box<dyn Logger>>,
    /// The checkpoint to continue from (`--resume`).
    pub resume_from: Option<Checkpoint>,
}

fn resolve_device(config: &Config, device: Option<&str>) -> Result<Device> {
    let text = device.unwrap_or(&config.runtime.device);
    let device =
        crate::info::parse_device(text).map_err(|e| crate::error::UsageError(e.to_string()))?;
    if let Device::Cuda(i) = device {
        if !tch::Cuda::is_available() || i >= tch::Cuda::device_count() as usize {
            return Err(crate::error::UsageError(format!(
                "device cuda:{i} requested, but libtorch sees {} CUDA device(s)",
                tch::Cuda::device_count()
            ))
            .into());
        }
    }
    Ok(device)
}

fn set_threads(config: &Config) {
    let threads = match config.runtime.torch_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    tch::set_num_threads(threads as i32);
}

fn open_logger(dir: &Path, config: &Config) -> Result<GuardedLogger<Box<dyn Logger>>> {
    let inner: Box<dyn Logger> = if config.logging.tensorboard {
        Box::new(
            TensorBoardLogger::new(dir)
                .with_context(|| format!("{}: cannot open the TensorBoard log", dir.display()))?,
        )
    } else {
        Box::new(NullLogger)
    };
    Ok(GuardedLogger::new(inner, config.logging.on_error))
}

/// Which checkpoint a reopened run continues from.
#[derive(Debug, Clone, Copy)]
pub enum CheckpointChoice<'a> {
    /// The latest. If it is damaged, the error says so and names the newest valid one.
    Latest,
    /// The newest one that loads (`icrl train --resume DIR --last-valid`); damaged newer files
    /// are set aside as `<name>.damaged`, so that later resumes and the keep-last pruning skip
    /// them.
    NewestValid,
    /// This file and no other (`icrl eval --checkpoint FILE`).
    File(&'a Path),
}

/// Loads the checkpoint `choice` names from the run folder `dir` (None: the run has none).
fn pick_checkpoint(dir: &Path, choice: CheckpointChoice) -> Result<Option<Checkpoint>> {
    let all = match choice {
        CheckpointChoice::File(file) => return Ok(Some(checkpoint::load(file)?)),
        CheckpointChoice::Latest | CheckpointChoice::NewestValid => {
            checkpoint::list(&dir.join(run_dir::CHECKPOINT_DIR))?
        }
    };
    let Some((_, newest)) = all.last() else {
        return Ok(None);
    };
    let damage = match checkpoint::load(newest) {
        Ok(ckpt) => return Ok(Some(ckpt)),
        Err(e) => e,
    };
    // Newest first: the damaged ones, until one loads.
    let mut damaged = vec![newest.clone()];
    let mut valid = None;
    for (_, older) in all.iter().rev().skip(1) {
        match checkpoint::load(older) {
            Ok(ckpt) => {
                valid = Some(ckpt);
                break;
            }
            Err(_) => damaged.push(older.clone()),
        }
    }
    let Some(valid) = valid else {
        return Err(crate::error::UsageError(format!(
            "{damage}\n  no other checkpoint of {} loads either; start the run afresh",
            dir.display()
        ))
        .into());
    };
    if let CheckpointChoice::Latest = choice {
        return Err(crate::error::UsageError(format!(
            "{damage}\n  the newest valid checkpoint is {} (step {}): continue from it with \
             `icrl train --resume {} --last-valid` (the damaged file{} set aside), or evaluate \
             it with `icrl eval {} --checkpoint {}`",
            valid.path.display(),
            valid.meta.step,
            dir.display(),
            if damaged.len() == 1 { " is" } else { "s are" },
            dir.display(),
            valid.path.display()
        ))
        .into());
    }
    for file in &damaged {
        let mut aside = file.clone().into_os_string();
        aside.push(".damaged");
        std::fs::rename(file, &aside).with_context(|| {
            format!(
                "{}: cannot set the damaged checkpoint aside",
                file.display()
            )
        })?;
        eprintln!(
            "warning: {} is damaged; set aside as {}",
            file.display(),
            std::path::Path::new(&aside).display()
        );
    }
    eprintln!(
        "continuing from the newest valid checkpoint, {} (step {})",
        valid.path.display(),
        valid.meta.step
    );
    Ok(Some(valid))
}

impl Run {
    /// Creates a new run folder under `out` for `config` and opens its logger.
    pub fn start(config: Config, out: &Path, device: Option<&str>) -> Result<Run> {
        let device = resolve_device(&config, device)?;
        set_threads(&config);
        let config_text = config::to_ron_string(&config);
        let dir = run_dir::create(
            out,
            config.env.name(),
            config.method_name(),
            &config.name,
            config.seed,
            &config_text,
        )?;
        let mut logger = open_logger(&dir, &config)?;
        logger.text("config", 0, &code_block("ron", &config_text))?;
        Ok(Run {
            dir,
            config,
            config_text,
            device,
            logger,
            resume_from: None,
        })
    }

    /// Reopens an existing run folder to continue from its latest checkpoint (or from the
    /// start when it has none yet). The checkpoint must have been made for this config; a
    /// damaged one is an error that names the newest valid checkpoint, if any.
    pub fn resume(dir: &Path, device: Option<&str>) -> Result<Run> {
        Self::resume_with(dir, device, CheckpointChoice::Latest)
    }

    /// [`Run::resume`] from the checkpoint `choice` names.
    pub fn resume_with(dir: &Path, device: Option<&str>, choice: CheckpointChoice) -> Result<Run> {
        let path = dir.join(run_dir::CONFIG_FILE);
        let config_text =
            std::fs::read_to_string(&path).map_err(|source| config::ConfigError::Read {
                path: path.clone(),
                source,
            })?;
        let mut config: Config = config::from_ron_str(&config_text, &path.display().to_string())?;
        for note in keep_saved_algorithm(&mut config, &config_text) {
            eprintln!("note: {}: {note}", path.display());
        }
        let device = resolve_device(&config, device)?;
        set_threads(&config);
        let resume_from = pick_checkpoint(dir, choice)?;
        if let Some(ckpt) = &resume_from {
            let mut saved: Config = config::from_ron_str(
                &ckpt.meta.config,
                &format!("{} (config)", ckpt.path.display()),
            )?;
            keep_saved_algorithm(&mut saved, &ckpt.meta.config);
            let differing = config::differing_fields(&saved, &config);
            if !differing.is_empty() {
                return Err(crate::error::UsageError(format!(
                    "{} was made for another config than {}: fields {} differ",
                    ckpt.path.display(),
                    path.display(),
                    differing.join(", ")
                ))
                .into());
            }
        }
        let logger = open_logger(dir, &config)?;
        Ok(Run {
            dir: dir.to_path_buf(),
            config,
            config_text,
            device,
            logger,
            resume_from,
        })
    }

    /// Writes the HParams plugin's session start (see [`logging::hparams`]): the hyper-parameters
    /// of [`hparams_of`] for this run's config and `--set` overrides.
    pub fn log_hparams_start(&mut self, overrides: &[String]) -> Result<()> {
        let values = hparams_of(&self.config, overrides);
        logging::hparams::log_session_start(&mut self.logger, &values)?;
        self.logger.flush()?;
        Ok(())
    }

    /// Writes the HParams plugin's session end: the run finished its budget.
    pub fn log_hparams_end(&mut self) -> Result<()> {
        let status = logging::hparams::SessionStatus::Success;
        logging::hparams::log_session_end(&mut self.logger, 0, status)?;
        self.logger.flush()?;
        Ok(())
    }

    /// Saves a checkpoint (atomically, keeping the config's last K).
    pub fn save_checkpoint(
        &self,
        step: u64,
        groups: &[TensorGroup],
        state: serde_json::Value,
    ) -> Result<PathBuf> {
        // A run folder deleted under a running job stops it; recreating it would leave a
        // folder holding only a checkpoint, without the config a resume needs.
        if !self.dir.join(run_dir::CONFIG_FILE).is_file() {
            anyhow::bail!(
                "{}: the run folder (or its config.ron) disappeared; stopping without writing \
                 the checkpoint of step {step}",
                self.dir.display()
            );
        }
        let meta = CheckpointMeta::new(step, self.config_text.clone(), state);
        let path = checkpoint::save(
            &self.dir.join(run_dir::CHECKPOINT_DIR),
            groups,
            &meta,
            self.config.checkpoint.keep_last,
        )?;
        signals::note_checkpoint_saved();
        Ok(path)
    }

    /// Saves a trainer's checkpoint: the model's variables (group `""`), the optimiser's state
    /// (group `"optim."`) and the method's resumable state.
    pub fn save<S: Serialize>(&self, snapshot: &Snapshot<'_, S>) -> Result<PathBuf> {
        // The optimiser names its tensors `optim.m.<var>`, `optim.v.<var>`, `optim.step`; the
        // group prefix re-adds the `optim.` that is stripped here.
        let optim: Vec<(String, Tensor)> = snapshot
            .optimiser
            .state_tensors()
            .into_iter()
            .map(|(n, t)| (n.trim_start_matches("optim.").to_string(), t))
            .collect();
        let groups = [
            TensorGroup::from_varstore("", snapshot.model),
            TensorGroup::new("optim.", optim),
        ];
        self.save_checkpoint(
            snapshot.step,
            &groups,
            serde_json::to_value(snapshot.state)?,
        )
    }

    /// Saves `snapshot` when a checkpoint is due after this iteration, which took the update
    /// count from `updates.start` to `updates.end`: the count crossed a multiple of
    /// `checkpoint.every_updates`, the run is `done`, or Ctrl-C was pressed.
    pub fn checkpoint_if_due<S: Serialize>(
        &self,
        updates: Range<u64>,
        done: bool,
        snapshot: &Snapshot<'_, S>,
    ) -> Result<()> {
        let every = self.config.checkpoint.every_updates as u64;
        let crossed = every > 0 && updates.end / every != updates.start / every;
        if crossed || done || interrupted() {
            self.save(snapshot)?;
        }
        Ok(())
    }

    /// At a safe point after the checkpoint: when Ctrl-C was pressed, flushes the log, leaves
    /// the progress bar and stops the run with [`Interrupted`] (exit code 130) at env step (or
    /// training step) `step`.
    pub fn stop_if_interrupted(&mut self, step: u64, bar: &ProgressBar) -> Result<()> {
        if !interrupted() {
            return Ok(());
        }
        self.logger.flush()?;
        bar.abandon();
        Err(Interrupted {
            step,
            dir: self.dir.clone(),
        }
        .into())
    }

    /// On `--resume`, restores the model and the optimiser from the checkpoint and returns the
    /// method's state with the checkpoint's path; None for a fresh run.
    pub fn restore<S: DeserializeOwned>(
        &mut self,
        model: &mut VarStore,
        optimiser: &mut Adam,
    ) -> Result<Option<(S, PathBuf)>> {
        let Some(ckpt) = self.resume_from.take() else {
            return Ok(None);
        };
        checkpoint::load_into_varstore(model, &ckpt, "")?;
        optimiser
            .load_state(&ckpt.tensors)
            .with_context(|| format!("{}: optimiser state", ckpt.path.display()))?;
        let state = state_of(&ckpt)?;
        Ok(Some((state, ckpt.path)))
    }

    /// On `--resume`, the method's state saved in the checkpoint (for methods without a model
    /// to restore); None for a fresh run.
    pub fn restore_state<S: DeserializeOwned>(&mut self) -> Result<Option<S>> {
        self.resume_from.take().map(|c| state_of(&c)).transpose()
    }
}

fn state_of<S: DeserializeOwned>(ckpt: &Checkpoint) -> Result<S> {
    serde_json::from_value(ckpt.meta.state.clone())
        .with_context(|| format!("{}: trainer state", ckpt.path.display()))
}

/// The resumable counters of an on-policy method that trains in rollouts (ReLIC's PPO, RL²),
/// saved in every checkpoint.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RolloutCounters {
    /// Rollouts (trials) completed.
    pub rollouts: u64,
    /// Env steps collected, all envs together.
    pub env_steps: u64,
    /// PPO updates done (for ReLIC: partial and full).
    pub updates: u64,
    /// Consecutive updates with a non-finite loss.
    pub bad_updates: BadUpdateGuard,
    /// Env steps at the last evaluation.
    pub last_eval_step: u64,
}

/// What a trainer's checkpoint holds at `step`: the model's variables, the optimiser and the
/// method's resumable state (its counters).
pub struct Snapshot<'a, S> {
    /// Env steps (or optimiser steps, for supervised methods) done: names the checkpoint file.
    pub step: u64,
    /// The model's variables.
    pub model: &'a VarStore,
    /// The optimiser.
    pub optimiser: &'a Adam,
    /// The method's counters.
    pub state: &'a S,
}
