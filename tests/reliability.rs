//! Reliability of `icrl` as a process (issue 17), each case on a run of a few seconds: stop
//! signals (SIGTERM, SIGUSR1, a double SIGINT), two jobs sharing a dataset, damaged and edited
//! checkpoints, a run folder deleted under a running job, a file-size limit during `icrl data`
//! and a thread limit under the sampler. The exit codes are the README's: 0 success, 1 a failed
//! run, 2 bad input, 130 / 143 stopped by SIGINT / SIGTERM or SIGUSR1 with a checkpoint saved.

mod common;
use common::{files_with, run_dir, text};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn icrl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_icrl"));
    c.current_dir(common::root())
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    c
}

/// A ReLIC run on Dark Room of `total_steps` env steps at a few hundred steps per second:
/// rollouts of 2 x 64 steps, a checkpoint every second update (each rollout), a one-episode
/// final evaluation on one task.
fn relic_train(out: &Path, total_steps: u64) -> Command {
    let mut c = icrl();
    c.arg("train")
        .arg("configs/darkroom_relic.ron")
        .arg("--out")
        .arg(out);
    let total = format!("method.total_steps={total_steps}");
    for set in [
        total.as_str(),
        "method.num_envs=2",
        "method.minibatches=1",
        "method.epochs=1",
        "method.rollout_len=64",
        "method.updates_per_rollout=2",
        "method.warmup_steps=64",
        "checkpoint.every_updates=2",
        "checkpoint.keep_last=3",
        "eval.every_steps=0",
        "eval.episodes_per_trial=1",
        "eval.trials_per_task=1",
        "eval.max_tasks=Some(1)",
        "model.heads=2",
        "sampler.threads=1",
        "runtime.device=\"cpu\"",
        "logging.progress=false",
    ] {
        c.arg("--set").arg(set);
    }
    c
}

/// A DPT run on Dark Room of 4 training steps on a small dataset shared through `out/datasets`.
fn dpt_train(out: &Path, seed: u64) -> Command {
    let mut c = icrl();
    c.arg("train")
        .arg("configs/darkroom_dpt.ron")
        .arg("--out")
        .arg(out);
    let seed = format!("seed={seed}");
    for set in [
        seed.as_str(),
        "method.steps=4",
        "method.batch_size=4",
        "method.warmup_steps=2",
        "method.data.samples_per_task=20",
        "method.offline_contexts_per_task=1",
        "method.offline_eval_every=0",
        "eval.episodes_per_trial=1",
        "eval.trials_per_task=1",
        "eval.max_tasks=Some(2)",
        "runtime.device=\"cpu\"",
        "logging.progress=false",
    ] {
        c.arg("--set").arg(set);
    }
    c
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// No panic, no stack overflow, no libtorch error in a message.
fn assert_no_crash(stderr: &str) {
    for bad in [
        "panicked",
        "stack backtrace",
        "stack overflow",
        "Invalid (backend, op) pair",
    ] {
        assert!(!stderr.contains(bad), "`{bad}` in: {stderr}");
    }
}

fn checkpoints(run: &Path) -> Vec<PathBuf> {
    files_with(&run.join("checkpoints"), |n| n.ends_with(".safetensors"))
}

/// Waits until the single run under `out` has a checkpoint; returns the run folder.
fn wait_for_checkpoint(out: &Path, child: &mut Child) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let dirs: Vec<PathBuf> = std::fs::read_dir(out)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        if let Some(dir) = dirs.iter().find(|d| !checkpoints(d).is_empty()) {
            return dir.clone();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before its first checkpoint");
        }
        assert!(Instant::now() < deadline, "no checkpoint within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send(child: &Child, signal: libc::c_int) {
    // SAFETY: kill on the pid of a child not yet waited for (so the pid is not reused).
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill failed");
}

/// Waits for `child` with a deadline (a hang fails the test instead of blocking it).
fn wait_with_deadline(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {}", describe(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a long run, sends `signal` once the first checkpoint exists, and returns the run
/// folder, the number of checkpoints before the signal and what the process answered.
fn stop_with(signal: libc::c_int) -> (tempfile::TempDir, PathBuf, usize, Output) {
    let out = tempfile::tempdir().unwrap();
    let mut child = relic_train(out.path(), 1_000_000)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = wait_for_checkpoint(out.path(), &mut child);
    let before = checkpoints(&dir).len();
    send(&child, signal);
    let output = wait_with_deadline(child, Duration::from_secs(120));
    (out, dir, before, output)
}

fn step_of(checkpoint: &Path) -> u64 {
    let name = checkpoint
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    name.trim_start_matches("ckpt_")
        .trim_end_matches(".safetensors")
        .parse()
        .unwrap()
}

#[test]
fn sigterm_saves_a_checkpoint_exits_143_and_the_run_resumes_to_the_end() {
    let out = tempfile::tempdir().unwrap();
    // 40 rollouts of 128 steps: the first checkpoint comes after the first rollout, long
    // before the end.
    let mut child = relic_train(out.path(), 5120)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = wait_for_checkpoint(out.path(), &mut child);
    send(&child, libc::SIGTERM);
    let stopped = wait_with_deadline(child, Duration::from_secs(120));
    let err = text(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(143), "{}", describe(&stopped));
    assert!(err.contains("checkpoint saved"), "{err}");
    assert!(err.contains("icrl train --resume"), "{err}");
    assert_no_crash(&err);
    let saved = step_of(checkpoints(&dir).last().unwrap());
    assert!(saved < 5120, "the run stopped before its end: step {saved}");
    assert!(
        files_with(&dir.join("eval"), |n| n.ends_with(".json")).is_empty(),
        "no final evaluation before the end"
    );

    let resumed = icrl()
        .args(["train", "--resume"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", describe(&resumed));
    assert!(
        text(&resumed.stderr).contains(&format!("(env step {saved})")),
        "resumed from the saved step: {}",
        text(&resumed.stderr)
    );
    assert_eq!(step_of(checkpoints(&dir).last().unwrap()), 5120);
    assert_eq!(
        files_with(&dir.join("eval"), |n| n.ends_with(".json")).len(),
        1,
        "the final evaluation"
    );
}

#[test]
fn sigusr1_stops_like_sigterm() {
    let (_out, dir, before, output) = stop_with(libc::SIGUSR1);
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{}", describe(&output));
    assert!(err.contains("stop requested"), "{err}");
    assert!(err.contains("checkpoint saved"), "{err}");
    assert_no_crash(&err);
    // The checkpoint of the stop is written on top of those before it (keep_last = 3 may
    // drop the oldest, so compare steps, not counts).
    assert!(before >= 1);
    assert!(!checkpoints(&dir).is_empty());
}

#[test]
fn a_second_sigint_quits_at_once_without_crashing() {
    // Immediately (during the first one's way to the safe point) and a little later.
    for delay_ms in [0u64, 50, 400] {
        let out = tempfile::tempdir().unwrap();
        let mut child = relic_train(out.path(), 1_000_000)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let dir = wait_for_checkpoint(out.path(), &mut child);
        send(&child, libc::SIGINT);
        std::thread::sleep(Duration::from_millis(delay_ms));
        // The process may be gone already (the first signal's checkpoint was quick); the
        // pid is not reused before the wait below.
        // SAFETY: kill on the pid of a child not yet waited for.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let output = wait_with_deadline(child, Duration::from_secs(60));
        let err = text(&output.stderr);
        // Never killed by a signal (SIGSEGV, SIGABRT): an exit code of 1 (quit before the
        // checkpoint) or 130 (the checkpoint was saved).
        let code = output.status.code();
        assert!(
            matches!(code, Some(1) | Some(130)),
            "delay {delay_ms} ms: {}",
            describe(&output)
        );
        assert_no_crash(&err);
        if code == Some(1) {
            assert!(err.contains("second stop signal"), "{err}");
        }
        // Every checkpoint left loads: a resume starts from the newest.
        assert!(!checkpoints(&dir).is_empty());
        for file in files_with(&dir.join("checkpoints"), |_| true) {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.contains(".tmp"), "a temporary file was left: {name}");
        }
    }
}

#[test]
fn two_jobs_needing_the_same_dataset_share_it() {
    let out = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..2)
        .map(|seed| {
            dpt_train(out.path(), seed)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = wait_with_deadline(child, Duration::from_secs(300));
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    }
    let datasets = out.path().join("datasets");
    let files = files_with(&datasets, |n| !n.starts_with(".") || n.contains(".tmp"));
    assert_eq!(files.len(), 1, "one dataset, no temporary file: {files:?}");
    assert!(files[0].to_string_lossy().ends_with(".icrld"));
    assert!(files_with(&datasets, |n| n.contains(".tmp")).is_empty());
    let runs = files_with(out.path(), |n| n != "datasets");
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_eq!(
            files_with(&run.join("eval"), |n| n.ends_with(".json")).len(),
            1,
            "{}",
            run.display()
        );
    }
}

/// A finished short run with three checkpoints (keep_last = 3).
fn finished_run() -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let output = relic_train(out.path(), 512).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let dir = run_dir(out.path());
    assert_eq!(checkpoints(&dir).len(), 3);
    (out, dir)
}

#[test]
fn a_damaged_latest_checkpoint_leaves_the_older_ones_usable() {
    let (_out, dir) = finished_run();
    let all = checkpoints(&dir);
    let (older, latest) = (all[1].clone(), all[2].clone());
    let mut bytes = std::fs::read(&latest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&latest, bytes).unwrap();

    // `--checkpoint` reads only the file it names.
    let eval = icrl()
        .args(["eval"])
        .arg(&dir)
        .arg("--checkpoint")
        .arg(&older)
        .args(["--episodes", "1", "--trials", "1"])
        .output()
        .unwrap();
    assert_eq!(eval.status.code(), Some(0), "{}", describe(&eval));

    // `--resume` says the latest is damaged and names the newest valid one: bad input.
    let refused = icrl()
        .args(["train", "--resume"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(err.contains("corrupt checkpoint"), "{err}");
    assert!(err.contains(&older.display().to_string()), "{err}");
    assert!(err.contains("--last-valid"), "{err}");
    assert!(
        latest.is_file(),
        "nothing is set aside without --last-valid"
    );

    // `--resume --last-valid` continues from it to the end.
    let resumed = icrl()
        .args(["train", "--resume"])
        .arg(&dir)
        .arg("--last-valid")
        .output()
        .unwrap();
    let err = text(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(0), "{}", describe(&resumed));
    assert!(
        err.contains(&format!("(env step {})", step_of(&older))),
        "{err}"
    );
    let damaged = PathBuf::from(format!("{}.damaged", latest.display()));
    assert!(damaged.is_file(), "the damaged file is set aside");
    assert_eq!(step_of(checkpoints(&dir).last().unwrap()), 512);
}

#[test]
fn an_edited_step_count_in_checkpoint_metadata_is_refused() {
    let (_out, dir) = finished_run();
    let all = checkpoints(&dir);
    let (older, latest) = (all[1].clone(), all[2].clone());
    let bytes = std::fs::read(&latest).unwrap();
    // The trainer state is JSON text inside the safetensors header: env_steps 512 -> 0
    // (padded to the same length) would make the run train all over again.
    let (from, to) = (b"env_steps\\\":512,", b"env_steps\\\":  0,");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the trainer state in the header");
    let mut edited = bytes.clone();
    edited[at..at + from.len()].copy_from_slice(to);
    std::fs::write(&latest, edited).unwrap();

    let refused = icrl()
        .args(["train", "--resume"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(err.contains("metadata checksum mismatch"), "{err}");
    assert!(err.contains(&older.display().to_string()), "{err}");
    let eval = icrl()
        .args(["eval"])
        .arg(&dir)
        .arg("--checkpoint")
        .arg(&latest)
        .output()
        .unwrap();
    assert_eq!(eval.status.code(), Some(2), "{}", describe(&eval));
    assert!(text(&eval.stderr).contains("metadata checksum mismatch"));
}

#[test]
fn a_run_folder_deleted_under_a_running_job_stops_it_without_recreating_it() {
    let out = tempfile::tempdir().unwrap();
    let mut child = relic_train(out.path(), 1_000_000)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = wait_for_checkpoint(out.path(), &mut child);
    // The run may write into the folder while it is removed: retry until it is gone.
    let mut tries = 0;
    while let Err(e) = std::fs::remove_dir_all(&dir) {
        tries += 1;
        assert!(tries < 50, "cannot remove {}: {e}", dir.display());
    }
    let output = wait_with_deadline(child, Duration::from_secs(120));
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert_no_crash(&err);
    assert!(!dir.exists(), "the run folder was recreated");
    assert!(files_with(out.path(), |_| true).is_empty());
}

/// Runs `command` under `prlimit` options (util-linux).
fn under_prlimit(limits: &[String], command: &Command) -> Command {
    let mut c = Command::new("prlimit");
    c.args(limits)
        .arg(command.get_program())
        .args(command.get_args())
        .current_dir(common::root())
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdin(Stdio::null());
    c
}

#[test]
fn a_file_size_limit_during_icrl_data_leaves_no_temporary_file() {
    let out = tempfile::tempdir().unwrap();
    let mut data = icrl();
    data.args(["data", "configs/darkroom_dpt.ron", "--out"])
        .arg(out.path())
        // ~90 MB of records against a 1 MB limit.
        .args(["--set", "method.data.samples_per_task=500"]);
    let output = under_prlimit(&["--fsize=1000000".to_string()], &data)
        .output()
        .expect("prlimit runs");
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(err.contains("File too large"), "{err}");
    assert_no_crash(&err);
    let datasets = out.path().join("datasets");
    let left = files_with(&datasets, |n| n.contains(".tmp") || n.ends_with(".icrld"));
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// Threads of every process of the current user (about what RLIMIT_NPROC counts).
fn user_threads() -> usize {
    // SAFETY: as above.
    let uid = unsafe { libc::getuid() };
    let out = Command::new("ps")
        .args(["-L", "--no-headers", "-u", &uid.to_string()])
        .output()
        .expect("ps runs");
    text(&out.stdout).lines().count()
}

#[test]
fn the_sampler_reports_a_worker_thread_that_cannot_start() {
    let mut bench = icrl();
    bench.args([
        "bench",
        "sampler",
        "--env",
        "darkroom",
        "--threads",
        "1000",
        "--envs",
        "1000",
    ]);
    // RLIMIT_NPROC counts every thread of the user and does not bind root, so as root the
    // benchmark runs as `nobody`, keeping only the right to read files (libtorch may sit
    // in root's home).
    let mut command = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
        ]);
        c.arg("prlimit").arg("--nproc=200");
        c.arg(bench.get_program()).args(bench.get_args());
        c.current_dir(common::root())
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .stdin(Stdio::null());
        c
    } else {
        under_prlimit(&[format!("--nproc={}", user_threads() + 64)], &bench)
    };
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv / prlimit start (util-linux)");
    let output = wait_with_deadline(child, Duration::from_secs(120));
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(err.contains("spawning worker thread"), "{err}");
    assert_no_crash(&err);
}

#[test]
fn deep_nesting_in_a_set_value_is_a_clear_error() {
    let deep = format!("model.layers={}1{}", "(".repeat(60_000), ")".repeat(60_000));
    let output = icrl()
        .args(["check", "configs/darkroom_relic.ron", "--set", &deep])
        .output()
        .unwrap();
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(err.contains("--set model.layers"), "{err}");
    assert!(err.contains("nested more than 128 levels"), "{err}");
    assert!(err.len() < 4000, "the value is not echoed whole");
    assert_no_crash(&err);
}
