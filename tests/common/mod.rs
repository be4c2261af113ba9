//! What the binary's integration tests share: the `icrl` command, success checks, and finding
//! a run's files. Each test file includes it with `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (configs/, scripts/, tests/fixtures/).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `icrl` binary under test, finding libtorch through its rpath only (the variable a
/// user's shell may set is removed).
pub fn icrl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_icrl"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// Stdout or stderr as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that the command succeeded (printing its exit code and output otherwise) and
/// returns its stdout.
pub fn check(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The only run folder under `out` (besides the dataset cache `datasets/`).
pub fn run_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("datasets"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// The files in `dir` whose name satisfies `pred`, sorted (none for a missing folder).
pub fn files_with(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| pred(&p.file_name().unwrap().to_string_lossy()));
    v.sort();
    v
}

/// `--set` overrides that shrink configs/darkroom_relic.ron to a run of seconds: 2 envs,
/// rollouts of 64 steps with 2 partial updates, one epoch of one minibatch, 256 env steps, a
/// 2-episode evaluation on 2 tasks.
pub const TINY_RELIC: [&str; 11] = [
    "method.num_envs=2",
    "method.minibatches=1",
    "method.epochs=1",
    "method.rollout_len=64",
    "method.updates_per_rollout=2",
    "method.total_steps=256",
    "method.warmup_steps=64",
    "eval.episodes_per_trial=2",
    "eval.trials_per_task=1",
    "eval.max_tasks=Some(2)",
    "logging.progress=false",
];
