//! End-to-end tests of the `icrl` binary's config handling and `info`: bad input gets exit
//! code 2 and a message with the file, line and field; never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn icrl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_icrl"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the icrl binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("bad.ron");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `icrl check` on a config text and asserts exit code 2 with all `needles` in stderr
/// and no panic.
fn assert_rejected(text: &str, extra: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), text);
    let mut args = vec!["check", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = icrl(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for needle in needles {
        let needle = needle.replace("{file}", path.to_str().unwrap());
        assert!(err.contains(&needle), "expected `{needle}` in: {err}");
    }
}

#[test]
fn unknown_field_names_file_line_and_path() {
    assert_rejected(
        "Config(\n  name: \"x\",\n  model: (\n    layerz: 3,\n  ),\n)",
        &[],
        &["{file}:4:", "model.layerz", "layers"],
    );
}

#[test]
fn wrong_type_names_file_line_and_path() {
    assert_rejected("Config(\n  seed: \"zero\",\n)", &[], &["{file}:2:", "seed"]);
}

#[test]
fn malformed_syntax_names_file_and_line() {
    assert_rejected(
        "Config(\n  name: \"x\",\n  model: (layers: 2,\n",
        &[],
        &["{file}:"],
    );
}

#[test]
fn impossible_values_are_all_reported() {
    assert_rejected(
        "Config(model: (heads: 3), method: Relic(rollout_len: 100, updates_per_rollout: 3, lr: -1.0))",
        &[],
        &[
            "model.d_model",
            "method.updates_per_rollout",
            "method.lr",
            "invalid value",
        ],
    );
}

#[test]
fn bad_override_path_suggests_valid_names() {
    assert_rejected(
        "Config()",
        &["--set", "model.layer=3"],
        &["--set model.layer=3", "did you mean layers"],
    );
    assert_rejected(
        "Config()",
        &["--set", "model.layers=\"x\""],
        &["model.layers"],
    );
    assert_rejected("Config()", &["--set", "nonsense"], &["path.to.field=value"]);
}

#[test]
fn missing_file_is_bad_input() {
    let out = icrl(&["check", "/nonexistent/config.ron"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/config.ron"));
}

#[test]
fn bad_command_line_is_exit_code_2() {
    let out = icrl(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let out = icrl(&["info", "--device", "tpu"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn resolved_config_round_trips_through_check() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = icrl(&[
        "check",
        root.join("configs/darkroom_relic.ron").to_str().unwrap(),
        "--set",
        "model.layers=3",
        "--set",
        "model.sink=SinkToken",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let resolved = stdout(&out);
    assert!(resolved.contains("layers: 3"), "{resolved}");
    assert!(resolved.contains("SinkToken"), "{resolved}");
    // The printed config is itself a valid config that resolves to the same text.
    let path = dir.path().join("resolved.ron");
    std::fs::write(&path, &resolved).unwrap();
    let again = icrl(&["check", path.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(stdout(&again), resolved);
}

#[test]
fn info_reports_libtorch_2_11_without_ld_library_path() {
    let out = icrl(&["info", "--device", "cpu", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().expect("a JSON line");
    let info: serde_json::Value = serde_json::from_str(last).unwrap();
    let version = info["libtorch"].as_str().unwrap_or_default();
    assert!(version.starts_with("2.11."), "libtorch version: {info}");
    assert_eq!(info["tch"], "0.24.0");
    assert!(info["attention_backend_4k"].is_string());
}
