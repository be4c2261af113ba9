//! A run folder written by an older build (tests/fixtures/old_run, see its README) still
//! evaluates and resumes with this one: its config, checkpoint (format 1, without the metadata
//! checksum) and result files are read, and a resumed run keeps the algorithm it was trained
//! with. The numbers themselves differ since issue 14 (Dark Room's tasks are now split as in
//! DPT's code, so the run trains and evaluates on other goals), so the tests compare the shape
//! of every file and the update schedule, not the values.

mod common;
use common::{check, icrl};

use std::path::{Path, PathBuf};

use icrl::trainer::run::logging::{read_events, ValueData};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old_run")
}

/// A fresh copy of the fixture's run folder (tests must not write into the repository).
fn copy_of_old_run(tmp: &Path) -> PathBuf {
    let src = fixture().join("run");
    let dst = tmp.join("run");
    std::fs::create_dir_all(dst.join("checkpoints")).unwrap();
    std::fs::copy(src.join("config.ron"), dst.join("config.ron")).unwrap();
    // The old build's checkpoint is kept as hex text (no binary run artefacts in git); its
    // bytes are written back exactly.
    let ckpt = "checkpoints/ckpt_000000000256.safetensors";
    let hex = std::fs::read_to_string(src.join(format!("{ckpt}.hex"))).unwrap();
    std::fs::write(dst.join(ckpt), from_hex(&hex)).unwrap();
    dst
}

/// The bytes of a hex dump (whitespace and line breaks ignored).
fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The scalars of the event files `files`: (tag, step, value), sorted and deduplicated.
fn scalars(files: &[PathBuf], tag: &str) -> Vec<(u64, f64)> {
    let mut out = Vec::new();
    for file in files {
        for event in read_events(file).unwrap() {
            for v in event.values {
                if let ValueData::Scalar(x) = v.data {
                    if v.tag == tag {
                        out.push((event.step as u64, f64::from(x)));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out.dedup();
    out
}

/// The structure of an evaluation JSON: its protocol fields and the shape of its returns.
fn shape(eval: &serde_json::Value) -> serde_json::Value {
    let returns = eval["returns"].as_array().unwrap();
    for trial in returns {
        for r in trial.as_array().unwrap() {
            assert!(r.as_f64().unwrap().is_finite(), "{r}");
        }
    }
    serde_json::json!({
        "step": eval["step"],
        "env": eval["env"],
        "method": eval["method"],
        "split": eval["split"],
        "tasks": eval["tasks"],
        "trials_per_task": eval["trials_per_task"],
        "episodes_per_trial": eval["episodes_per_trial"],
        "greedy": eval["greedy"],
        "curve_points": eval["curve"].as_array().unwrap().len(),
        "trials": returns.len(),
        "episodes": returns.iter().map(|t| t.as_array().unwrap().len()).collect::<Vec<_>>(),
    })
}

#[test]
fn an_old_run_folder_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_old_run(tmp.path());
    let out = icrl()
        .args(["eval", "--episodes", "5", "--trials", "3"])
        .arg(&dir)
        .output()
        .unwrap();
    check(&out);
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(path, dir.join("eval/000000000256_t3_e5.json"));
    let now = json(&path);
    let then = json(&fixture().join("eval_256_t3_e5.json"));
    assert_eq!(shape(&now), shape(&then));
}

#[test]
fn an_old_run_folder_resumes_with_its_algorithm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_of_old_run(tmp.path());
    let out = icrl()
        .args(["train", "--resume"])
        .arg(&dir)
        .output()
        .unwrap();
    check(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("continuing without the full update"),
        "{stderr}"
    );
    let ckpts: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        ckpts.contains(&"ckpt_000000000512.safetensors".to_string()),
        "{ckpts:?}"
    );
    assert_eq!(
        shape(&json(&dir.join("eval/000000000512.json"))),
        shape(&json(&fixture().join("full_run_eval_512.json")))
    );
    // The updates after the checkpoint follow the old schedule (no full update was added):
    // one loss per update, at the same env steps as in the uninterrupted old run.
    let events: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("events.out.tfevents"))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let reference = [fixture().join("full_run.tfevents")];
    for tag in ["losses/policy", "losses/value", "losses/entropy"] {
        let steps = |files: &[PathBuf]| -> Vec<u64> {
            scalars(files, tag)
                .into_iter()
                .filter(|(step, value)| *step > 256 && value.is_finite())
                .map(|(step, _)| step)
                .collect()
        };
        let full = steps(&reference);
        assert!(!full.is_empty(), "{tag}: logged after step 256");
        assert_eq!(
            steps(&events),
            full,
            "{tag}: resumed vs uninterrupted schedule"
        );
    }
}
