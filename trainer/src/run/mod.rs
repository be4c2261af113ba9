//! A run in progress: its folder, resolved config, device, logger, checkpoints and the
//! interrupt flag. Shared by every method; the methods themselves live in their own modules.

pub mod checkpoint;
pub mod dir;
pub mod logging;
pub mod progress;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use tch::Device;

use self::checkpoint::{Checkpoint, CheckpointMeta, TensorGroup};
use self::dir as run_dir;
use self::logging::{code_block, GuardedLogger, LogError, Logger, TensorBoardLogger};
use crate::config::{self, Config};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Installs a Ctrl-C handler (once per process): the first Ctrl-C asks the running method to
/// save a checkpoint at its next safe point and stop; a second one exits at once.
pub fn install_interrupt_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
                INTERRUPTED.store(true, Ordering::SeqCst);
                eprintln!("\ninterrupted: saving a checkpoint at the next safe point (Ctrl-C again to quit now)");
            } else {
                eprintln!("\ninterrupted twice: quitting without a checkpoint");
                std::process::exit(130);
            }
        });
    });
}

/// A run stopped by Ctrl-C after saving its checkpoint (exit code 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted at env step {step}; checkpoint saved; resume with: icrl train --resume {}", dir.display())]
pub struct Interrupted {
    /// Env steps done.
    pub step: u64,
    /// The run folder.
    pub dir: PathBuf,
}

/// True once Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
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
    /// start when it has none yet). The checkpoint must have been made for this config.
    pub fn resume(dir: &Path, device: Option<&str>) -> Result<Run> {
        let path = dir.join(run_dir::CONFIG_FILE);
        let config_text =
            std::fs::read_to_string(&path).map_err(|source| config::ConfigError::Read {
                path: path.clone(),
                source,
            })?;
        let config: Config = config::from_ron_str(&config_text, &path.display().to_string())?;
        let device = resolve_device(&config, device)?;
        set_threads(&config);
        let ckpt_dir = dir.join(run_dir::CHECKPOINT_DIR);
        let resume_from = match checkpoint::latest(&ckpt_dir)? {
            Some(p) => Some(checkpoint::load(&p)?),
            None => None,
        };
        if let Some(ckpt) = &resume_from {
            let saved: Config = config::from_ron_str(
                &ckpt.meta.config,
                &format!("{} (config)", ckpt.path.display()),
            )?;
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

    /// Saves a checkpoint (atomically, keeping the config's last K).
    pub fn save_checkpoint(
        &self,
        step: u64,
        groups: &[TensorGroup],
        state: serde_json::Value,
    ) -> Result<PathBuf> {
        let meta = CheckpointMeta::new(step, self.config_text.clone(), state);
        Ok(checkpoint::save(
            &self.dir.join(run_dir::CHECKPOINT_DIR),
            groups,
            &meta,
            self.config.checkpoint.keep_last,
        )?)
    }
}
