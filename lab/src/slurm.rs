//! `icrl sweep EXPERIMENT --launcher slurm`: the sweep as one Slurm job array.
//!
//! Every array task is one (variant, seed) slot of the sweep, and runs
//! `icrl sweep EXPERIMENT --out DIR --slot-index I`: the local launcher restricted to that slot.
//! So a task writes the same sweep folder layout (`manifest.json`, and per slot `status.json`,
//! `log.txt`, the run folder) and follows the same rules: a finished slot is skipped, a slot
//! with a run folder resumes from its latest checkpoint. The submission itself writes
//! `slurm/submit.sh` (the batch script) and, once `sbatch` accepted it, appends the job to
//! `slurm/jobs.json`; task output goes to `slurm/<job>_<task>.out`.
//!
//! Preemption: the batch script `exec`s `icrl`, so the signal Slurm sends before it kills a job
//! (SIGTERM on preemption or `scancel --signal=TERM --batch`; `--signal=B:TERM@120` before the
//! time limit) reaches the task's sweep, which asks its run to save a checkpoint and stop. The
//! job is submitted with `--requeue`: a requeued task (preemption, `scontrol requeue`) or a new
//! submission resumes the run from its checkpoint; finished runs are never rerun.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use trainer::error::UsageError;
use trainer::fsutil;

/// The folder of a sweep that holds the Slurm batch script, job records and task output.
pub const SLURM_DIR: &str = "slurm";
/// The batch script submitted last.
pub const SUBMIT_SCRIPT: &str = "submit.sh";
/// Every accepted submission, in order.
pub const JOBS_FILE: &str = "jobs.json";

/// Slurm resources and options of `icrl sweep --launcher slurm` (each maps to one `sbatch`
/// option; None leaves it to the cluster's defaults).
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct SlurmOptions {
    /// Slurm partition (`sbatch --partition`).
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,
    /// Time limit of each array task (`sbatch --time`, e.g. 2:00:00).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// CPUs per array task (`sbatch --cpus-per-task`).
    #[arg(long, value_name = "N")]
    pub cpus_per_task: Option<u32>,
    /// GPUs per array task (`sbatch --gpus-per-task`).
    #[arg(long, value_name = "N")]
    pub gpus_per_task: Option<u32>,
    /// Memory per array task (`sbatch --mem`, e.g. 8G).
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// Account to charge (`sbatch --account`).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// Quality of service (`sbatch --qos`).
    #[arg(long, value_name = "NAME")]
    pub qos: Option<String>,
    /// Array tasks running at once (`--array=...%N`).
    #[arg(long, value_name = "N")]
    pub max_running: Option<u32>,
    /// Any other `sbatch` option, passed as written (`--sbatch-arg=--constraint=a100`);
    /// repeatable.
    #[arg(long = "sbatch-arg", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
}

impl SlurmOptions {
    /// The options given, as `--flag` names (to reject them with the local launcher).
    pub fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let flags = [
            (self.partition.is_some(), "--partition"),
            (self.time.is_some(), "--time"),
            (self.cpus_per_task.is_some(), "--cpus-per-task"),
            (self.gpus_per_task.is_some(), "--gpus-per-task"),
            (self.mem.is_some(), "--mem"),
            (self.account.is_some(), "--account"),
            (self.qos.is_some(), "--qos"),
            (self.max_running.is_some(), "--max-running"),
            (!self.sbatch_args.is_empty(), "--sbatch-arg"),
        ];
        for (set, name) in flags {
            if set {
                v.push(name);
            }
        }
        v
    }

    /// Checks values that `sbatch` would reject only after the submission was prepared.
    fn check(&self) -> Result<()> {
        let bad = |what: String| -> Result<()> { Err(UsageError(what).into()) };
        if self.cpus_per_task == Some(0) {
            return bad("--cpus-per-task must be at least 1".into());
        }
        if self.max_running == Some(0) {
            return bad("--max-running must be at least 1".into());
        }
        for (name, value) in [
            ("--partition", &self.partition),
            ("--time", &self.time),
            ("--mem", &self.mem),
            ("--account", &self.account),
            ("--qos", &self.qos),
        ] {
            if let Some(v) = value {
                if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '\'') {
                    return bad(format!(
                        "{name} {v:?}: expected a non-empty value without spaces or quotes"
                    ));
                }
            }
        }
        for a in &self.sbatch_args {
            if !a.starts_with("--") || a.contains('\n') {
                return bad(format!(
                    "--sbatch-arg {a:?}: expected one long sbatch option such as --constraint=a100"
                ));
            }
        }
        Ok(())
    }
}

/// One accepted submission (an entry of `slurm/jobs.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SubmittedJob {
    /// The Slurm job id of the array.
    pub job_id: String,
    /// UTC submission time, `YYYYmmdd-HHMMSS`.
    pub submitted: String,
    /// The array task ids (indices into the manifest's runs) it covers.
    pub tasks: Vec<usize>,
}

/// Reads a sweep's `slurm/jobs.json` (empty when it has none).
pub fn read_jobs(sweep_dir: &Path) -> Result<Vec<SubmittedJob>> {
    let path = sweep_dir.join(SLURM_DIR).join(JOBS_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    fsutil::read_json(&path, "the sweep's Slurm job list")
}

/// What the batch script runs and with which resources.
pub struct Submission<'a> {
    /// The sweep folder (absolute).
    pub dir: &'a Path,
    /// The experiment's name (the job name is `icrl-<name>`).
    pub name: &'a str,
    /// The `icrl` binary (absolute).
    pub exe: &'a Path,
    /// The experiment file (absolute).
    pub experiment: &'a Path,
    /// The sweep's extra `--set` overrides.
    pub extra: &'a [String],
    /// The slots to run: indices into the manifest's runs.
    pub tasks: &'a [usize],
    /// Resources and options.
    pub options: &'a SlurmOptions,
}

/// Single-quotes a word for bash.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// The batch script of a submission.
pub fn batch_script(s: &Submission<'_>) -> String {
    let o = s.options;
    let out = s.dir.join(SLURM_DIR);
    let mut array: Vec<String> = s.tasks.iter().map(|t| t.to_string()).collect();
    if array.is_empty() {
        array.push("0".into());
    }
    let mut array = array.join(",");
    if let Some(n) = o.max_running {
        array.push_str(&format!("%{n}"));
    }
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# Written by `icrl sweep --launcher slurm` for {}", s.name),
        format!("#SBATCH --job-name=icrl-{}", s.name),
        format!("#SBATCH --array={array}"),
        format!("#SBATCH --output={}/%A_%a.out", out.display()),
        "#SBATCH --open-mode=append".into(),
        // Requeued on preemption or `scontrol requeue`; the task then resumes its checkpoint.
        "#SBATCH --requeue".into(),
        // SIGTERM to the task's sweep (the batch shell is replaced by it) two minutes before
        // the time limit: the run saves a checkpoint and stops.
        "#SBATCH --signal=B:TERM@120".into(),
        "#SBATCH --ntasks=1".into(),
    ];
    let opt = |name: &str, v: &Option<String>| v.as_ref().map(|v| format!("#SBATCH --{name}={v}"));
    lines.extend(opt("partition", &o.partition));
    lines.extend(opt("time", &o.time));
    lines.extend(opt("mem", &o.mem));
    lines.extend(opt("account", &o.account));
    lines.extend(opt("qos", &o.qos));
    if let Some(n) = o.cpus_per_task {
        lines.push(format!("#SBATCH --cpus-per-task={n}"));
    }
    if let Some(n) = o.gpus_per_task {
        lines.push(format!("#SBATCH --gpus-per-task={n}"));
    }
    for a in &o.sbatch_args {
        lines.push(format!("#SBATCH {a}"));
    }
    let mut command = vec![
        "exec".to_string(),
        quote(&s.exe.display().to_string()),
        "sweep".into(),
        quote(&s.experiment.display().to_string()),
        "--out".into(),
        quote(&s.dir.display().to_string()),
        "--slot-index".into(),
        "\"$SLURM_ARRAY_TASK_ID\"".into(),
    ];
    for e in s.extra {
        command.push("--set".into());
        command.push(quote(e));
    }
    lines.push(String::new());
    lines.push(
        "echo \"== icrl sweep task $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID on $(hostname) \
         at $(date -u +%Y%m%d-%H%M%S), restart ${SLURM_RESTART_COUNT:-0}\""
            .into(),
    );
    lines.push(command.join(" "));
    lines.join("\n") + "\n"
}

/// Finds `sbatch` on the PATH.
fn find_sbatch() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("sbatch"))
        .find(|p| p.is_file())
}

/// A submission that Slurm rejected (exit code 1: the input was fine, the cluster said no).
#[derive(Debug, thiserror::Error)]
#[error("sbatch rejected the job array ({status}): {stderr}\nthe batch script is {script}; nothing was queued and no run state was changed")]
pub struct Rejected {
    status: String,
    stderr: String,
    script: String,
}

/// Checks the options and that `sbatch` exists (before anything is written).
pub fn preflight(options: &SlurmOptions) -> Result<PathBuf> {
    options.check()?;
    find_sbatch().ok_or_else(|| {
        UsageError(
            "--launcher slurm: `sbatch` is not on the PATH; run the sweep on a Slurm login node \
             (or load its module), or use the default --launcher local"
                .into(),
        )
        .into()
    })
}

/// Writes the batch script and submits it with `sbatch --parsable`; records the job in
/// `slurm/jobs.json` only once Slurm accepted it. Returns the job id.
pub fn submit(sbatch: &Path, s: &Submission<'_>) -> Result<String> {
    let dir = s.dir.join(SLURM_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let script = dir.join(SUBMIT_SCRIPT);
    fsutil::write_atomic(&script, batch_script(s).as_bytes())?;
    let out = Command::new(sbatch)
        .arg("--parsable")
        .arg(&script)
        .output()
        .with_context(|| format!("cannot run {}", sbatch.display()))?;
    if !out.status.success() {
        return Err(Rejected {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            script: script.display().to_string(),
        }
        .into());
    }
    // `--parsable` prints `jobid[;cluster]`.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let job_id = stdout
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(anyhow::anyhow!(
            "sbatch printed no job id (stdout: {stdout:?}); check `squeue` before resubmitting"
        ));
    }
    let mut jobs = read_jobs(s.dir)?;
    jobs.push(SubmittedJob {
        job_id: job_id.clone(),
        submitted: fsutil::utc_timestamp(std::time::SystemTime::now()),
        tasks: s.tasks.to_vec(),
    });
    fsutil::write_atomic(
        &dir.join(JOBS_FILE),
        serde_json::to_string_pretty(&jobs)?.as_bytes(),
    )?;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "submitted Slurm job array {job_id} ({} task(s)) for sweep {} in {}\n\
         watch it with: icrl sweep --status {}   (task output: {}/{job_id}_<task>.out)",
        s.tasks.len(),
        s.name,
        s.dir.display(),
        s.dir.display(),
        dir.display()
    );
    Ok(job_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_script_runs_one_slot_per_array_task_with_the_options() {
        let options = SlurmOptions {
            partition: Some("gpu".into()),
            time: Some("1:00:00".into()),
            cpus_per_task: Some(4),
            gpus_per_task: Some(1),
            max_running: Some(2),
            sbatch_args: vec!["--constraint=h100".into()],
            ..SlurmOptions::default()
        };
        let extra = vec!["method.total_steps=100".to_string(), "name=\"it's\"".into()];
        let script = batch_script(&Submission {
            dir: Path::new("/s/sweep"),
            name: "abl",
            exe: Path::new("/bin/icrl"),
            experiment: Path::new("/e/abl.ron"),
            extra: &extra,
            tasks: &[0, 2, 3],
            options: &options,
        });
        for line in [
            "#SBATCH --array=0,2,3%2",
            "#SBATCH --job-name=icrl-abl",
            "#SBATCH --requeue",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=1:00:00",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --constraint=h100",
            "#SBATCH --output=/s/sweep/slurm/%A_%a.out",
        ] {
            assert!(script.lines().any(|l| l == line), "{line} in\n{script}");
        }
        let last = script.lines().last().unwrap();
        assert_eq!(
            last,
            "exec '/bin/icrl' sweep '/e/abl.ron' --out '/s/sweep' --slot-index \"$SLURM_ARRAY_TASK_ID\" \
             --set 'method.total_steps=100' --set 'name=\"it'\\''s\"'"
        );
    }

    #[test]
    fn bad_options_are_usage_errors() {
        let bad = [
            SlurmOptions {
                cpus_per_task: Some(0),
                ..Default::default()
            },
            SlurmOptions {
                partition: Some("a b".into()),
                ..Default::default()
            },
            SlurmOptions {
                sbatch_args: vec!["constraint=x".into()],
                ..Default::default()
            },
        ];
        for o in bad {
            let e = o.check().unwrap_err();
            assert!(e.is::<UsageError>(), "{e}");
        }
        assert_eq!(
            SlurmOptions {
                time: Some("1:00".into()),
                ..Default::default()
            }
            .given(),
            ["--time"]
        );
    }
}
