//! `icrl sweep EXPERIMENT.ron`: every (variant, seed) run of an experiment as its own run
//! folder under one sweep folder, up to `--jobs` at a time, as child processes of this binary.
//!
//! Layout of a sweep folder (default `sweeps/<experiment name>/`):
//!
//! ```text
//! manifest.json            the plan: variants in order, every run's base config and overrides
//! experiment.ron           a copy of the experiment file
//! <variant>__s<seed>/      one slot per run
//!     log.txt              the child's stdout and stderr, every attempt appended
//!     status.json          state (done / failed / interrupted / running) and every attempt
//!     <run folder>/        what `icrl train --out <slot>` wrote (config.ron, eval/, ...)
//! ```
//!
//! Resuming: a slot whose status is `done` is skipped; a slot with a run folder is continued
//! with `icrl train --resume <run folder>` (from its latest checkpoint); other slots start
//! afresh. A failed run does not stop the others; the sweep's exit code is 1 when a run failed
//! and the summary names its log. A stop signal (Ctrl-C / SIGINT, SIGTERM, SIGUSR1) is
//! forwarded once to every running child (each saves a checkpoint and stops), no new run
//! starts, and the sweep exits with 130 (SIGINT) or 143 (SIGTERM, SIGUSR1); a second signal is
//! forwarded too, and the children quit at once.
//!
//! Threads: with `--jobs N > 1` every child gets `runtime.torch_threads` and `sampler.threads`
//! of at most `cores / N` (a config's smaller value is kept), and `runtime.update_replicas` is
//! lowered to `cores / N` when above it, so the children share the cores.
//! A resumed run keeps the threads it was started with (they are part of its `config.ron`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::experiment::{self, LoadedExperiment, PlannedRun};
use crate::slurm::SlurmOptions;
use trainer::config::{self, Config};
use trainer::error::UsageError;
use trainer::fsutil;

/// The sweep's plan file.
pub const MANIFEST_FILE: &str = "manifest.json";
/// A slot's state file.
pub const STATUS_FILE: &str = "status.json";
/// A slot's log of the child's stdout and stderr.
pub const LOG_FILE: &str = "log.txt";

/// Where the runs of a sweep execute.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Launcher {
    /// Child processes on this machine, `--jobs` at a time.
    #[default]
    Local,
    /// One Slurm job array, one array task per (variant, seed); see [`crate::slurm`].
    Slurm,
}

/// Options of `icrl sweep`.
#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    /// Runs at a time (>= 1).
    pub jobs: usize,
    /// The sweep folder (default `sweeps/<experiment name>`).
    pub out: Option<PathBuf>,
    /// Extra `--set` overrides for every run (after the variant's).
    pub extra: Vec<String>,
    /// Print the plan and what would run; start nothing and write nothing.
    pub dry_run: bool,
    /// The `icrl` binary the children run (default: this process's executable).
    pub exe: Option<PathBuf>,
    /// Local child processes or a Slurm job array.
    pub launcher: Launcher,
    /// Slurm resources (only with [`Launcher::Slurm`]).
    pub slurm: SlurmOptions,
    /// Run only this slot (an index into the manifest's runs): what one Slurm array task does.
    pub slot_index: Option<usize>,
    /// Run only these variants (empty: all); the manifest still lists every run, so a later
    /// sweep without the filter runs the rest.
    pub only_variants: Vec<String>,
}

/// `icrl sweep` on the command line.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// The experiment file (RON).
    #[arg(required_unless_present = "status")]
    pub experiment: Option<PathBuf>,
    /// Runs at a time; each gets cores / N threads for libtorch and for env workers.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// The sweep folder (default: sweeps/<experiment name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a field of every run: `--set path.to.field=value`; repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Check the experiment and print what would run (for Slurm: the batch script); start
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the runs execute: local child processes, or one Slurm job array.
    #[arg(long, value_enum, default_value_t = Launcher::Local)]
    pub launcher: Launcher,
    /// Slurm options (with --launcher slurm).
    #[command(flatten)]
    pub slurm: SlurmOptions,
    /// Show the state of every run of a sweep folder (whichever launcher ran it) and exit.
    #[arg(long, value_name = "SWEEP_DIR", conflicts_with_all = ["experiment", "dry_run"])]
    pub status: Option<PathBuf>,
    /// Run only the slot with this index in the manifest (used by Slurm array tasks).
    #[arg(long, hide = true)]
    pub slot_index: Option<usize>,
    /// Run only these variants (comma-separated names from the experiment file), e.g. the
    /// contrasts that must reach 10 seeds first; the other runs stay in the plan for a later
    /// sweep without this option.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub variants: Vec<String>,
}

/// Runs `icrl sweep` from its command-line arguments.
pub fn command(args: &SweepArgs) -> Result<()> {
    if let Some(dir) = &args.status {
        return print_status(dir);
    }
    if args.launcher == Launcher::Local {
        let given = args.slurm.given();
        if !given.is_empty() {
            return Err(UsageError(format!(
                "{} only apply to --launcher slurm (the local launcher runs child processes \
                 here; use --jobs to run several at a time)",
                given.join(", ")
            ))
            .into());
        }
    }
    let options = SweepOptions {
        jobs: args.jobs,
        out: args.out.clone(),
        extra: args.set.clone(),
        dry_run: args.dry_run,
        exe: None,
        launcher: args.launcher,
        slurm: args.slurm.clone(),
        slot_index: args.slot_index,
        only_variants: args.variants.clone(),
    };
    let experiment = args
        .experiment
        .as_ref()
        .expect("clap requires EXPERIMENT without --status");
    sweep(experiment, &options).map(|_| ())
}

/// `icrl sweep --status DIR`: one line per run with its state and attempts.
pub fn print_status(dir: &Path) -> Result<()> {
    if !dir.join(MANIFEST_FILE).exists() {
        return Err(UsageError(format!(
            "{}: not a sweep folder (it has no {MANIFEST_FILE})",
            dir.display()
        ))
        .into());
    }
    let manifest = read_manifest(dir)?;
    let jobs = crate::slurm::read_jobs(dir)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sweep {} in {}", manifest.name, dir.display());
    for job in &jobs {
        let _ = writeln!(
            out,
            "slurm job array {} submitted {} UTC: tasks {:?}",
            job.job_id, job.submitted, job.tasks
        );
    }
    let _ = writeln!(
        out,
        "{:<5} {:<28} {:<12} {:>8} {:>10}  last attempt",
        "index", "slot", "state", "attempts", "wall"
    );
    let mut counts = std::collections::BTreeMap::new();
    for (i, run) in manifest.runs.iter().enumerate() {
        let slot = dir.join(&run.slot);
        let status = SlotStatus::read(&slot)?;
        let state = format!("{:?}", status.state).to_lowercase();
        *counts.entry(state.clone()).or_insert(0usize) += 1;
        let last = status.attempts.last().map_or(String::new(), |a| {
            let how = match (a.exit_code, a.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "running".into(),
            };
            let resumed = if a.args.iter().any(|x| x == "--resume") {
                ", resumed"
            } else {
                ""
            };
            format!("{} UTC, {how}{resumed}", a.started)
        });
        let _ = writeln!(
            out,
            "{i:<5} {:<28} {state:<12} {:>8} {:>10}  {last}",
            run.slot,
            status.attempts.len(),
            human_seconds(status.wall_seconds())
        );
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let _ = writeln!(
        out,
        "{} run(s): {}",
        manifest.runs.len(),
        summary.join(", ")
    );
    Ok(())
}

/// `manifest.json`: what a sweep folder holds, for resuming and for `icrl report`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The experiment's name.
    pub name: String,
    /// The experiment's description.
    pub description: String,
    /// The experiment file the sweep was started from.
    pub experiment: PathBuf,
    /// The paper references file named by the experiment (absolute), if any.
    pub references: Option<PathBuf>,
    /// Variant names in the experiment's order.
    pub variants: Vec<String>,
    /// Every run of the sweep.
    pub runs: Vec<ManifestRun>,
    /// The experiment's paired comparison (baseline, metric, take-off), if it names one.
    #[serde(default)]
    pub comparison: Option<crate::experiment::Comparison>,
}

/// One run in a manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ManifestRun {
    /// The variant.
    pub variant: String,
    /// The seed.
    pub seed: u64,
    /// The slot folder's name inside the sweep folder.
    pub slot: String,
    /// The base config file (absolute).
    pub base: PathBuf,
    /// The experiment's overrides of this run (without the sweep's thread split).
    pub overrides: Vec<String>,
}

/// State of one slot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Not started yet.
    #[default]
    Pending,
    /// A child is (or was, if the sweep died) training it.
    Running,
    /// Trained to the end (exit code 0): skipped by later sweeps.
    Done,
    /// The child failed; a later sweep retries it (resuming from its checkpoint).
    Failed,
    /// Stopped by Ctrl-C after saving a checkpoint; a later sweep resumes it.
    Interrupted,
}

/// One child process that trained a slot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Attempt {
    /// UTC start time, `YYYYmmdd-HHMMSS`.
    pub started: String,
    /// Wall-clock seconds the child ran.
    pub seconds: f64,
    /// Its exit code (None when killed by a signal or still running).
    pub exit_code: Option<i32>,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// The command's arguments (after the binary).
    pub args: Vec<String>,
}

/// `status.json` of a slot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SlotStatus {
    /// Current state.
    pub state: SlotState,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
}

impl SlotStatus {
    /// Wall-clock seconds of all attempts together.
    pub fn wall_seconds(&self) -> f64 {
        self.attempts.iter().map(|a| a.seconds).sum()
    }

    /// Reads a slot's status (a missing file is a pending slot).
    pub fn read(slot: &Path) -> Result<SlotStatus> {
        let path = slot.join(STATUS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: not a sweep slot status", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SlotStatus::default()),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
        }
    }

    fn write(&self, slot: &Path) -> Result<()> {
        fsutil::write_atomic(
            &slot.join(STATUS_FILE),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }
}

/// Reads a sweep folder's manifest.
pub fn read_manifest(sweep_dir: &Path) -> Result<Manifest> {
    fsutil::read_json(&sweep_dir.join(MANIFEST_FILE), "a sweep manifest")
}

/// The run folder inside a sweep slot (the newest subfolder with a `config.ron`), if any.
pub fn run_dir_in_slot(slot: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(slot)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(trainer::run::dir::CONFIG_FILE).is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Runs that failed (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{} of {total} run(s) failed: {}", failed.len(), failed.join(", "))]
pub struct SweepFailed {
    /// `slot (log: path)` of each failed run.
    pub failed: Vec<String>,
    /// Runs in the sweep.
    pub total: usize,
}

/// The sweep was stopped by a stop signal (exit code 130 after SIGINT, 143 after SIGTERM or
/// SIGUSR1).
#[derive(Debug, thiserror::Error)]
#[error("sweep interrupted; running runs saved checkpoints; continue with: {command}")]
pub struct SweepInterrupted {
    /// The `icrl sweep` command that continues the sweep.
    pub command: String,
}

fn install_handler() {
    if let Err(e) = trainer::run::signals::install(trainer::run::signals::Mode::Count) {
        eprintln!("warning: cannot handle stop signals ({e}); a signal will kill the sweep");
    }
}

/// The thread overrides that split the cores between `jobs` children.
fn thread_overrides(config: &Config, jobs: usize) -> Vec<String> {
    if jobs <= 1 {
        return Vec::new();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_job = (cores / jobs).max(1);
    let pick = |configured: usize| {
        if configured == 0 {
            per_job
        } else {
            configured.min(per_job)
        }
    };
    let mut overrides = vec![
        format!(
            "runtime.torch_threads={}",
            pick(config.runtime.torch_threads)
        ),
        format!("sampler.threads={}", pick(config.sampler.threads)),
    ];
    // Each update replica is a thread of its own: no more than the job's share either.
    if config.runtime.update_replicas > per_job {
        overrides.push(format!("runtime.update_replicas={per_job}"));
    }
    overrides
}

/// Copies the fields [`thread_overrides`] may set from `from` into `config`, so that two configs
/// compare equal when only `--jobs` split them differently.
fn take_thread_split(config: &mut Config, from: &Config) {
    config.runtime.torch_threads = from.runtime.torch_threads;
    config.sampler.threads = from.sampler.threads;
    config.runtime.update_replicas = from.runtime.update_replicas;
}

/// One slot to run.
struct Job {
    run: PlannedRun,
    slot: PathBuf,
    /// The full `icrl train` arguments of a fresh start (overrides + thread split).
    fresh_args: Vec<String>,
}

impl Job {
    /// The arguments of the next attempt: resume when a run folder exists, else a fresh start.
    fn args(&self) -> Vec<String> {
        match run_dir_in_slot(&self.slot) {
            Some(dir) => vec!["train".into(), "--resume".into(), dir.display().to_string()],
            None => self.fresh_args.clone(),
        }
    }
}

struct Running {
    job: usize,
    child: Child,
    started: Instant,
    attempt: Attempt,
}

/// What a sweep did, for its summary.
#[derive(Debug, Default)]
pub struct SweepSummary {
    /// Runs in the sweep.
    pub total: usize,
    /// Finished before this sweep started (skipped).
    pub skipped: Vec<String>,
    /// Finished by this sweep.
    pub done: Vec<String>,
    /// (slot, what happened, log path).
    pub failed: Vec<(String, String, PathBuf)>,
    /// Stopped by Ctrl-C.
    pub interrupted: Vec<String>,
    /// Not started (after Ctrl-C).
    pub not_started: Vec<String>,
}

fn describe(status: &ExitStatus) -> (Option<i32>, Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => (Some(c), None, format!("exit code {c}")),
        (None, Some(s)) => (None, Some(s), format!("killed by signal {s}")),
        _ => (None, None, "ended".to_string()),
    }
}

/// The last `n` non-empty lines of a file.
fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn spawn(exe: &Path, job: &Job, attempt_no: usize) -> Result<(Child, Attempt)> {
    std::fs::create_dir_all(&job.slot)
        .with_context(|| format!("{}: cannot create", job.slot.display()))?;
    let args = job.args();
    let log_path = job.slot.join(LOG_FILE);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("{}: cannot open", log_path.display()))?;
    let started = fsutil::utc_timestamp(std::time::SystemTime::now());
    let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    writeln!(
        log,
        "==== icrl sweep: attempt {attempt_no} at {started} UTC: {} {}",
        exe.display(),
        quoted.join(" ")
    )
    .with_context(|| format!("{}: cannot write", log_path.display()))?;
    let err_log = log
        .try_clone()
        .with_context(|| format!("{}: cannot open", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: a Ctrl-C on the terminal reaches only the sweep, which
        // forwards exactly one SIGINT per Ctrl-C (two would make a child quit unsaved).
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            // If the sweep dies, the child gets SIGINT: it saves a checkpoint and stops.
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                Ok(())
            });
        }
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    Ok((
        child,
        Attempt {
            started,
            seconds: 0.0,
            exit_code: None,
            signal: None,
            args,
        },
    ))
}

/// Quotes an argument for a shell command line shown to people.
fn shell_quote(arg: &str) -> String {
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn send_signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) with a pid of our own child (not yet reaped: try_wait has not returned
    // its status, so the pid cannot have been reused).
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Checks a previous manifest in the sweep folder against the new plan: a slot whose base or
/// overrides changed would mix two configs under one name.
fn check_previous(dir: &Path, manifest: &Manifest) -> Result<()> {
    if !dir.join(MANIFEST_FILE).exists() {
        return Ok(());
    }
    let old = read_manifest(dir)?;
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let mut changed = Vec::new();
    for run in &manifest.runs {
        if let Some(prev) = old.runs.iter().find(|r| r.slot == run.slot) {
            let started = dir.join(&run.slot).exists();
            if started
                && (prev.overrides != run.overrides
                    || canonical(&prev.base) != canonical(&run.base))
            {
                changed.push(run.slot.clone());
            }
        }
    }
    let any_started = old.runs.iter().any(|r| dir.join(&r.slot).exists());
    if any_started && old.comparison.is_some() && old.comparison != manifest.comparison {
        return Err(UsageError(format!(
            "{}: the experiment's comparison (baseline, metric, take-off) was fixed as {:?} when its runs started; {} now says {:?}. Change it back, or sweep into another --out folder",
            dir.display(),
            old.comparison,
            manifest.experiment.display(),
            manifest.comparison
        ))
        .into());
    }
    if !changed.is_empty() {
        return Err(UsageError(format!(
            "{}: the runs {} were started with another base config or other overrides (see its {MANIFEST_FILE}) than {} and the --set arguments now give; use the same ones, another --out folder, or delete those slots",
            dir.display(),
            changed.join(", "),
            manifest.experiment.display()
        ))
        .into());
    }
    Ok(())
}

/// Checks every started slot's saved `config.ron` against the config the experiment now gives
/// it. The manifest only records the base file's path and the overrides, so an edit of the base
/// file's content (or of a default in code) between two invocations would otherwise mix two
/// configs under one variant name. The thread split ([`thread_overrides`]) may differ: it
/// depends on `--jobs`, not on the experiment.
fn check_started_configs(dir: &Path, loaded: &LoadedExperiment) -> Result<()> {
    let mut changed = Vec::new();
    for run in &loaded.runs {
        let Some(run_dir) = run_dir_in_slot(&dir.join(run.slot())) else {
            continue;
        };
        let path = run_dir.join(trainer::run::dir::CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read the run's config", path.display()))?;
        let mut saved: Config = config::from_ron_str(&text, &path.display().to_string())?;
        trainer::run::keep_saved_algorithm(&mut saved, &text);
        take_thread_split(&mut saved, &run.config);
        let fields = config::differing_fields(&saved, &run.config);
        if !fields.is_empty() {
            changed.push(format!("{} ({})", run.slot(), fields.join(", ")));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    Err(UsageError(format!(
        "{}: the config these runs were started with differs from the one the experiment now gives them (was the base config file or a default edited?): {}. Restore it, sweep into another --out folder, or delete those slots",
        dir.display(),
        changed.join("; ")
    ))
    .into())
}

fn plan(loaded: &LoadedExperiment, options: &SweepOptions, dir: &Path) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for run in &loaded.runs {
        let threads = thread_overrides(&run.config, options.jobs);
        let mut overrides = run.overrides.clone();
        overrides.extend(threads.iter().cloned());
        if !threads.is_empty() {
            // The split must be a valid config too.
            config::load::<Config>(&run.base, &overrides)?;
        }
        let slot = dir.join(run.slot());
        let mut fresh_args = vec!["train".to_string(), run.base.display().to_string()];
        for o in &overrides {
            fresh_args.push("--set".into());
            fresh_args.push(o.clone());
        }
        fresh_args.push("--out".into());
        fresh_args.push(slot.display().to_string());
        jobs.push(Job {
            run: run.clone(),
            slot,
            fresh_args,
        });
    }
    Ok(jobs)
}

/// The scalar tags that TensorBoard's HParams dashboard shows as a sweep's metric columns.
pub const HPARAMS_METRICS: [&str; 2] = ["eval/return_first_episode", "eval/return_last_episode"];

/// Writes the HParams plugin's experiment summary into the sweep folder: one column per
/// hyper-parameter that any run sets (name, seed, env, method and every overridden field, as
/// each run's own session summary lists them) and the final evaluation metrics.
fn write_hparams_experiment(dir: &Path, manifest: &Manifest) -> Result<()> {
    use trainer::run::logging::hparams::{log_experiment, HParamValue};
    let mut columns: Vec<(String, HParamValue)> = vec![
        ("name".into(), HParamValue::Text(String::new())),
        ("seed".into(), HParamValue::Number(0.0)),
        ("env".into(), HParamValue::Text(String::new())),
        ("method".into(), HParamValue::Text(String::new())),
    ];
    for run in &manifest.runs {
        for (path, value) in trainer::run::override_hparams(&run.overrides) {
            if !columns.iter().any(|(name, _)| *name == path) {
                columns.push((path, value));
            }
        }
    }
    let mut logger = trainer::run::logging::TensorBoardLogger::new(dir)
        .with_context(|| format!("{}: cannot write the HParams summary", dir.display()))?;
    log_experiment(&mut logger, &manifest.name, &columns, &HPARAMS_METRICS)?;
    trainer::run::logging::Logger::flush(&mut logger)?;
    Ok(())
}

/// `icrl sweep`: loads and checks the experiment, then runs what is not finished yet.
pub fn sweep(experiment_path: &Path, options: &SweepOptions) -> Result<SweepSummary> {
    if options.jobs == 0 {
        return Err(UsageError("--jobs must be at least 1".into()).into());
    }
    let loaded = experiment::load(experiment_path, &options.extra)?;
    let exp = &loaded.experiment;
    let dir = options
        .out
        .clone()
        .unwrap_or_else(|| Path::new("sweeps").join(&exp.name));
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let manifest = Manifest {
        name: exp.name.clone(),
        description: exp.description.clone(),
        experiment: canonical(experiment_path),
        references: loaded.references.as_deref().map(canonical),
        variants: exp.variants.iter().map(|v| v.name.clone()).collect(),
        comparison: exp.comparison.clone(),
        runs: loaded
            .runs
            .iter()
            .map(|r| ManifestRun {
                variant: r.variant.clone(),
                seed: r.seed,
                slot: r.slot(),
                base: canonical(&r.base),
                overrides: r.overrides.clone(),
            })
            .collect(),
    };
    check_previous(&dir, &manifest)?;
    check_started_configs(&dir, &loaded)?;
    let jobs = plan(&loaded, options, &dir)?;
    let exe = match &options.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe().context("cannot find the icrl binary to run")?,
    };

    let mut summary = SweepSummary {
        total: jobs.len(),
        ..SweepSummary::default()
    };
    if let Some(index) = options.slot_index {
        if index >= jobs.len() {
            return Err(UsageError(format!(
                "--slot-index {index}: the sweep has {} run(s) (0 to {})",
                jobs.len(),
                jobs.len().saturating_sub(1)
            ))
            .into());
        }
    }
    let sbatch = match options.launcher {
        Launcher::Slurm if !options.dry_run => Some(crate::slurm::preflight(&options.slurm)?),
        _ => None,
    };
    if let Some(unknown) = options
        .only_variants
        .iter()
        .find(|name| !manifest.variants.contains(name))
    {
        return Err(UsageError(format!(
            "--variants {unknown}: {} has no such variant (it has {})",
            experiment_path.display(),
            manifest.variants.join(", ")
        ))
        .into());
    }
    let mut pending = std::collections::VecDeque::new();
    for (i, job) in jobs.iter().enumerate() {
        if options.slot_index.is_some_and(|only| only != i) {
            continue;
        }
        if !options.only_variants.is_empty() && !options.only_variants.contains(&job.run.variant) {
            continue;
        }
        let status = SlotStatus::read(&job.slot)?;
        if status.state == SlotState::Done {
            summary.skipped.push(job.run.slot());
        } else {
            pending.push_back(i);
        }
    }

    if options.dry_run {
        // Written with write! (not println!) so a closed pipe (`| head`) is not a panic.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "sweep {} -> {}: {} run(s), {} finished, {} to run, {} at a time",
            exp.name,
            dir.display(),
            jobs.len(),
            summary.skipped.len(),
            pending.len(),
            options.jobs
        );
        for job in &jobs {
            let state = if summary.skipped.contains(&job.run.slot()) {
                "done (skipped)".to_string()
            } else if !options.only_variants.is_empty()
                && !options.only_variants.contains(&job.run.variant)
            {
                "not selected".to_string()
            } else if run_dir_in_slot(&job.slot).is_some() {
                "resume".to_string()
            } else {
                "start".to_string()
            };
            let args: Vec<String> = job.args().iter().map(|a| shell_quote(a)).collect();
            let _ = writeln!(
                out,
                "{:<28} {state:<15} icrl {}",
                job.run.slot(),
                args.join(" ")
            );
        }
        if options.launcher == Launcher::Slurm {
            let tasks: Vec<usize> = pending.iter().copied().collect();
            let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            let script = crate::slurm::batch_script(&crate::slurm::Submission {
                dir: &absolute(&dir),
                name: &exp.name,
                exe: &absolute(&exe),
                experiment: &absolute(experiment_path),
                extra: &options.extra,
                tasks: &tasks,
                options: &options.slurm,
            });
            let _ = writeln!(out, "\nthe Slurm batch script:\n{script}");
        }
        return Ok(summary);
    }

    if options.slot_index.is_none() {
        // A Slurm array task finds these written by the submission.
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        fsutil::write_atomic(
            &dir.join(MANIFEST_FILE),
            serde_json::to_string_pretty(&manifest)?.as_bytes(),
        )?;
        if let Ok(text) = std::fs::read(experiment_path) {
            fsutil::write_atomic(&dir.join("experiment.ron"), &text)?;
        }
        write_hparams_experiment(&dir, &manifest)?;
    }
    if let Some(sbatch) = sbatch {
        if pending.is_empty() {
            eprintln!(
                "sweep {}: all {} run(s) in {} are finished; nothing to submit",
                exp.name,
                jobs.len(),
                dir.display()
            );
            return Ok(summary);
        }
        let tasks: Vec<usize> = pending.iter().copied().collect();
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        crate::slurm::submit(
            &sbatch,
            &crate::slurm::Submission {
                dir: &absolute(&dir),
                name: &exp.name,
                exe: &absolute(&exe),
                experiment: &absolute(experiment_path),
                extra: &options.extra,
                tasks: &tasks,
                options: &options.slurm,
            },
        )?;
        return Ok(summary);
    }

    install_handler();
    let total = jobs.len() as u64;
    let bar = trainer::run::progress::bar(total, &format!("sweep {}", exp.name), "runs");
    bar.set_position(summary.skipped.len() as u64);
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    say(format!(
        "sweep {}: {} run(s) in {}{}, {} already finished, {} at a time",
        exp.name,
        jobs.len(),
        dir.display(),
        if options.only_variants.is_empty() {
            String::new()
        } else {
            format!(
                " ({} selected by --variants {})",
                summary.skipped.len() + pending.len(),
                options.only_variants.join(",")
            )
        },
        summary.skipped.len(),
        options.jobs
    ));
    let sweep_started = Instant::now();
    let mut running: Vec<Running> = Vec::new();
    // Signals received and forwarded so far, per kind (SIGINT, SIGTERM, SIGUSR1).
    let mut forwarded_each = [0usize; 3];
    let mut forwarded = 0;
    let mut finished = summary.skipped.len();
    loop {
        // Each signal the sweep receives goes once to every running child: the first asks
        // them to save a checkpoint and stop, a second one to quit at once.
        let received = trainer::run::signals::received();
        for (k, &signal) in trainer::run::signals::SIGNALS.iter().enumerate() {
            while forwarded_each[k] < received[k] {
                forwarded_each[k] += 1;
                forwarded += 1;
                say(format!(
                    "{}: asking {} running run(s) to {}",
                    trainer::run::signals::name(signal),
                    running.len(),
                    if forwarded > 1 {
                        "quit now"
                    } else {
                        "save a checkpoint and stop"
                    }
                ));
                for r in &running {
                    send_signal(&r.child, signal);
                }
            }
        }
        while forwarded == 0 && running.len() < options.jobs {
            let Some(i) = pending.pop_front() else { break };
            let job = &jobs[i];
            let mut status = SlotStatus::read(&job.slot)?;
            let attempt_no = status.attempts.len() + 1;
            match spawn(&exe, job, attempt_no) {
                Ok((child, attempt)) => {
                    let resumed = attempt.args.iter().any(|a| a == "--resume");
                    status.state = SlotState::Running;
                    status.attempts.push(attempt.clone());
                    status.write(&job.slot)?;
                    say(format!(
                        "{} {} (log: {})",
                        if resumed { "resume" } else { "start " },
                        job.run.slot(),
                        job.slot.join(LOG_FILE).display()
                    ));
                    running.push(Running {
                        job: i,
                        child,
                        started: Instant::now(),
                        attempt,
                    });
                }
                Err(e) => {
                    let log = job.slot.join(LOG_FILE);
                    say(format!("failed to start {}: {e:#}", job.run.slot()));
                    summary.failed.push((job.run.slot(), format!("{e:#}"), log));
                    finished += 1;
                    bar.set_position(finished as u64);
                }
            }
        }
        if running.is_empty() {
            break;
        }
        let mut k = 0;
        while k < running.len() {
            let exited = running[k]
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", jobs[running[k].job].run.slot()))?;
            let Some(exit) = exited else {
                k += 1;
                continue;
            };
            let r = running.swap_remove(k);
            let job = &jobs[r.job];
            let slot = job.run.slot();
            let seconds = r.started.elapsed().as_secs_f64();
            let (code, signal, what) = describe(&exit);
            let mut status = SlotStatus::read(&job.slot)?;
            let mut attempt = r.attempt;
            attempt.seconds = seconds;
            attempt.exit_code = code;
            attempt.signal = signal;
            if let Some(last) = status.attempts.last_mut() {
                *last = attempt;
            } else {
                status.attempts.push(attempt);
            }
            // 130 / 143: the child saved a checkpoint after a stop signal (ours or one sent to
            // it directly); after two forwarded signals it may have quit at once (exit code 1)
            // and continues from its last checkpoint as well.
            let by_interrupt = matches!(code, Some(130 | 143))
                || (forwarded > 1 && code == Some(trainer::run::signals::QUIT_NOW_EXIT_CODE))
                || (forwarded > 0
                    && signal.is_some_and(|s| trainer::run::signals::SIGNALS.contains(&s)));
            status.state = if code == Some(0) {
                summary.done.push(slot.clone());
                finished += 1;
                say(format!(
                    "[{finished}/{total}] done   {slot} in {}",
                    human_seconds(seconds)
                ));
                SlotState::Done
            } else if by_interrupt {
                summary.interrupted.push(slot.clone());
                say(format!(
                    "interrupted {slot} ({what}; resumes from its last checkpoint)"
                ));
                SlotState::Interrupted
            } else {
                let log = job.slot.join(LOG_FILE);
                finished += 1;
                say(format!(
                    "[{finished}/{total}] FAILED {slot}: {what}; log: {}",
                    log.display()
                ));
                summary.failed.push((slot.clone(), what, log));
                SlotState::Failed
            };
            status.write(&job.slot)?;
            bar.set_position(finished as u64);
        }
        let names: Vec<String> = running
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    jobs[r.job].run.slot(),
                    human_seconds(r.started.elapsed().as_secs_f64())
                )
            })
            .collect();
        bar.set_message(format!("sweep {}: {}", exp.name, names.join(", ")));
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish_and_clear();
    if forwarded > 0 {
        summary.not_started = pending.iter().map(|&i| jobs[i].run.slot()).collect();
    }
    print_summary(
        &exp.name,
        &dir,
        &summary,
        sweep_started.elapsed().as_secs_f64(),
    );
    if forwarded > 0 || !summary.interrupted.is_empty() {
        let mut command = format!(
            "icrl sweep {} --out {} --jobs {}",
            shell_quote(&experiment_path.display().to_string()),
            shell_quote(&dir.display().to_string()),
            options.jobs
        );
        for o in &options.extra {
            command.push_str(&format!(" --set {}", shell_quote(o)));
        }
        return Err(SweepInterrupted { command }.into());
    }
    if !summary.failed.is_empty() {
        return Err(SweepFailed {
            failed: summary
                .failed
                .iter()
                .map(|(slot, _, log)| format!("{slot} (log: {})", log.display()))
                .collect(),
            total: summary.total,
        }
        .into());
    }
    Ok(summary)
}

/// `1h02m03s`, `4m05s`, `6.1s`.
pub fn human_seconds(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let total = s.round() as u64;
    let (h, m, sec) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h{m:02}m{sec:02}s")
    } else {
        format!("{m}m{sec:02}s")
    }
}

fn print_summary(name: &str, dir: &Path, s: &SweepSummary, seconds: f64) {
    eprintln!(
        "sweep {name}: {} run(s): {} finished now, {} finished before (skipped), {} failed, {} interrupted, {} not started; {} wall",
        s.total,
        s.done.len(),
        s.skipped.len(),
        s.failed.len(),
        s.interrupted.len(),
        s.not_started.len(),
        human_seconds(seconds)
    );
    for (slot, what, log) in &s.failed {
        eprintln!("  FAILED {slot}: {what}; log: {}", log.display());
        for line in tail(log, 3) {
            eprintln!("    | {line}");
        }
    }
    if !s.interrupted.is_empty() || !s.not_started.is_empty() {
        eprintln!("  run the same `icrl sweep` command again to continue");
    }
    eprintln!("  sweep folder: {}", dir.display());
    eprintln!("  report: icrl report {}", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_different_thread_split_is_not_a_config_change() {
        let mut planned = Config::default();
        planned.runtime.update_replicas = 4;
        let mut saved = planned.clone();
        saved.runtime.torch_threads = 1;
        saved.sampler.threads = 1;
        saved.runtime.update_replicas = 1;
        assert_eq!(config::differing_fields(&saved, &planned).len(), 3);
        take_thread_split(&mut saved, &planned);
        assert!(config::differing_fields(&saved, &planned).is_empty());
    }

    #[test]
    fn threads_are_split_between_jobs() {
        let mut config = Config::default();
        assert!(thread_overrides(&config, 1).is_empty());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_job = (cores / 64).max(1);
        assert_eq!(
            thread_overrides(&config, 64),
            [
                format!("runtime.torch_threads={per_job}"),
                format!("sampler.threads={per_job}")
            ]
        );
        config.runtime.torch_threads = 1;
        assert_eq!(thread_overrides(&config, 2)[0], "runtime.torch_threads=1");
        // Update replicas are threads too: capped at the job's share, untouched below it.
        config.runtime.update_replicas = 2 * cores;
        let overrides = thread_overrides(&config, 2);
        let share = (cores / 2).max(1);
        assert_eq!(
            overrides.last().unwrap(),
            &format!("runtime.update_replicas={share}")
        );
        config.runtime.update_replicas = 1;
        assert_eq!(thread_overrides(&config, 2).len(), 2);
    }

    #[test]
    fn slot_status_round_trips_and_sums_attempts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SlotStatus::read(dir.path()).unwrap(), SlotStatus::default());
        let attempt = |s: f64| Attempt {
            started: "20260101-000000".into(),
            seconds: s,
            exit_code: Some(0),
            signal: None,
            args: vec!["train".into()],
        };
        let status = SlotStatus {
            state: SlotState::Done,
            attempts: vec![attempt(1.5), attempt(2.0)],
        };
        status.write(dir.path()).unwrap();
        let back = SlotStatus::read(dir.path()).unwrap();
        assert_eq!(back, status);
        assert!((back.wall_seconds() - 3.5).abs() < 1e-12);
        let text = std::fs::read_to_string(dir.path().join(STATUS_FILE)).unwrap();
        assert!(text.contains("\"done\""), "{text}");
    }

    #[test]
    fn helpers_format_durations_and_quote_arguments() {
        assert_eq!(human_seconds(6.14), "6.1s");
        assert_eq!(human_seconds(245.0), "4m05s");
        assert_eq!(human_seconds(3723.0), "1h02m03s");
        assert_eq!(shell_quote("method.lr=1e-3"), "method.lr=1e-3");
        assert_eq!(
            shell_quote("model.sink=SinkKv(k: Zero)"),
            "'model.sink=SinkKv(k: Zero)'"
        );
        assert_eq!(shell_quote("name=\"a\""), "'name=\"a\"'");
    }
}
