//! Run folders: `runs/<env>__<method>__<name>__s<seed>__<YYYYmmdd-HHMMSS>/` holding
//! `config.ron`, TensorBoard event files, `checkpoints/`, `eval/` and plots (docs/architecture.md).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::fsutil;

/// The file a run's resolved config is saved in.
pub const CONFIG_FILE: &str = "config.ron";
/// The sub-folder of a run holding its checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The sub-folder of a run holding evaluation results.
pub const EVAL_DIR: &str = "eval";

/// Keeps a name to characters that are safe in a folder name.
fn sanitize(part: &str) -> String {
    let cleaned: String = part
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "run".to_string()
    } else {
        cleaned
    }
}

/// The folder name of a run.
pub fn run_name(env: &str, method: &str, name: &str, seed: u64, timestamp: &str) -> String {
    format!(
        "{}__{}__{}__s{seed}__{timestamp}",
        sanitize(env),
        sanitize(method),
        sanitize(name)
    )
}

/// Creates a new run folder under `parent` (never reusing an existing one) with its
/// sub-folders, and writes the resolved config into it.
pub fn create(
    parent: &Path,
    env: &str,
    method: &str,
    name: &str,
    seed: u64,
    config_ron: &str,
) -> anyhow::Result<PathBuf> {
    if parent.exists() && !parent.is_dir() {
        return Err(crate::error::UsageError(format!(
            "{}: the runs folder (--out) is a file, not a folder",
            parent.display()
        ))
        .into());
    }
    std::fs::create_dir_all(parent)
        .with_context(|| format!("{}: cannot create the runs folder", parent.display()))?;
    let stamp = fsutil::utc_timestamp(std::time::SystemTime::now());
    let base = run_name(env, method, name, seed, &stamp);
    let mut dir = parent.join(&base);
    let mut n = 2;
    // create_dir (not _all) fails if the folder exists, so two runs started in the same second
    // never share a folder.
    loop {
        match std::fs::create_dir(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                dir = parent.join(format!("{base}-{n}"));
                n += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("{}: cannot create", dir.display()));
            }
        }
    }
    for sub in [CHECKPOINT_DIR, EVAL_DIR] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("{}: cannot create", dir.join(sub).display()))?;
    }
    fsutil::write_atomic(&dir.join(CONFIG_FILE), config_ron.as_bytes())?;
    Ok(dir)
}

/// The runs folder a run folder sits in (`--out`), where datasets are cached by default.
pub fn runs_dir(run_dir: &Path) -> PathBuf {
    run_dir
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_tell_env_method_name_seed_and_time() {
        assert_eq!(
            run_name("darkroom", "relic", "my run/1", 3, "20261129-023610"),
            "darkroom__relic__my-run-1__s3__20261129-023610"
        );
    }

    #[test]
    fn create_never_reuses_a_folder() {
        let parent = tempfile::tempdir().unwrap();
        let a = create(parent.path(), "e", "m", "n", 0, "(x: 1)").unwrap();
        let b = create(parent.path(), "e", "m", "n", 0, "(x: 1)").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            std::fs::read_to_string(a.join(CONFIG_FILE)).unwrap(),
            "(x: 1)"
        );
        assert!(b.join(CHECKPOINT_DIR).is_dir() && b.join(EVAL_DIR).is_dir());
    }
}
