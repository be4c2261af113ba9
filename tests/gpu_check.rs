//! scripts/gpu_check.sh in its CPU mode (`--device cpu --tiny`), so a broken script is caught
//! without a GPU: every part runs (or is skipped with a reason) and the JSON and Markdown
//! summaries list them all. And the memory plan of one training step against the measured
//! peak on the CPU.

use std::path::{Path, PathBuf};
use std::process::Command;

const PARTS: [&str; 12] = [
    "info",
    "plan",
    "tests",
    "bench_64",
    "sdpa_64",
    "bench_128",
    "sdpa_128",
    "plan_train_64k",
    "train_64k",
    "eval_64k_on_cpu",
    "darkroom",
    "darkroom_cpu",
];

fn icrl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_icrl"))
}

/// The project's cached Python with torch (scripts/libtorch.sh), when it exists.
fn python() -> Option<PathBuf> {
    let cache = std::env::var_os("ICRL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/icrl")))?;
    let python = cache.join("torch-2.11.0/bin/python");
    python.exists().then_some(python)
}

#[test]
fn gpu_check_script_runs_every_part_on_the_cpu() {
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(root.join("scripts/gpu_check.sh"));
    cmd.arg(out.path())
        .args(["--device", "cpu", "--tiny", "--bin"])
        .arg(icrl().parent().unwrap())
        .current_dir(root);
    if let Some(python) = python() {
        cmd.env("PYTHON", python);
    }
    let status = cmd.status().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("gpu_check.json")).unwrap())
            .unwrap();
    let markdown = std::fs::read_to_string(out.path().join("gpu_check.md")).unwrap();
    let parts = json["parts"].as_array().unwrap();
    for name in PARTS {
        let part = parts
            .iter()
            .find(|p| p["part"] == *name)
            .unwrap_or_else(|| panic!("part {name} missing from {json:#}"));
        let state = part["status"].as_str().unwrap();
        assert!(
            state == "ok" || state == "skipped",
            "part {name}: {state}; log: {}",
            std::fs::read_to_string(out.path().join(format!("{name}.log"))).unwrap_or_default()
        );
        assert!(
            markdown.contains(&format!("| {name} | {state} |")),
            "{markdown}"
        );
    }
    assert!(status.success(), "{markdown}");
    assert_eq!(json["passed"], true);
    // The numbers the GPU run is read for are there in CPU mode too.
    let bench = &parts.iter().find(|p| p["part"] == "bench_128").unwrap()["result"];
    for key in [
        "train_tokens_per_s",
        "decode_env_steps_per_s",
        "train_peak_bytes",
        "plan_train_bytes",
        "attention_share_of_train_step",
        "attention_fwd_bwd_tflops_per_s",
        "train_tflops_per_s",
    ] {
        assert!(
            bench[key].as_f64().is_some_and(|x| x > 0.0),
            "{key}: {bench}"
        );
    }
    assert_eq!(bench["decode_batch"], 20);
    let derived = &json["derived"];
    assert!(!derived["train_64k_checkpoints"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(!derived["train_64k_eval_json"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// The memory plan of one training step (parameters, gradients, inputs, activations, one
/// block's backward temporaries) is within 15% of the peak measured on the CPU for ReLIC's
/// small model over 4 x 1024 tokens (the resident-set peak above the process's size before
/// the model existed, with every large allocation from mmap so that freed tensors leave the
/// resident set). 15% here rather than the 10% of larger shapes: at ~250 MB, libtorch's own
/// per-thread buffers weigh more.
#[test]
fn memory_plan_of_a_training_step_matches_the_cpu_peak() {
    let out = Command::new(icrl())
        .args([
            "bench",
            "model",
            "--layers",
            "4",
            "--d-model",
            "256",
            "--heads",
            "8",
            "--context",
            "1024",
            "--batch",
            "4",
            "--iters",
            "1",
            "--decode-steps",
            "0",
            "--attention-iters",
            "0",
            "--device",
            "cpu",
        ])
        .env("MALLOC_MMAP_THRESHOLD_", "65536")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let ratio = report["train_peak_over_plan"].as_f64().unwrap();
    assert!(
        (0.85..=1.15).contains(&ratio),
        "measured / planned = {ratio}: {report}"
    );
}
