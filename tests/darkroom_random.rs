//! The grid task added by following docs/extending.md, end to end through the binary:
//! `icrl env` steps it, a short `icrl train` of the ReLIC config runs on it (with its
//! evaluation), and `icrl report` tabulates the run.

mod common;
use common::{check, icrl, root, run_dir, TINY_RELIC};

#[test]
fn icrl_env_steps_darkroom_random() {
    let out = check(
        &icrl()
            .args(["env", "darkroom_random", "--task", "37", "--seed", "3"])
            .args(["--actions", "0,0,2"])
            .output()
            .unwrap(),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = v.to_string();
    assert!(text.contains("darkroom_random"), "{text}");
    // Another seed starts elsewhere: the transcripts differ.
    let other = check(
        &icrl()
            .args(["env", "darkroom_random", "--task", "37", "--seed", "4"])
            .args(["--actions", "0,0,2"])
            .output()
            .unwrap(),
    );
    assert_ne!(out, other);
}

#[test]
fn relic_trains_evaluates_and_reports_on_darkroom_random() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = icrl();
    cmd.arg("train")
        .arg(root().join("configs/darkroom_relic.ron"))
        .arg("--out")
        .arg(tmp.path().join("runs"));
    let extra = [
        "env=DarkRoomRandom()",
        "model.dtype=F32",
        "runtime.device=\"cpu\"",
    ];
    for s in TINY_RELIC.iter().chain(&extra) {
        cmd.arg("--set").arg(s);
    }
    check(&cmd.output().unwrap());
    let run = run_dir(&tmp.path().join("runs"));
    let name = run.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("darkroom_random__relic__"), "{name}");
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/000000000256.json")).unwrap())
            .unwrap();
    assert_eq!(eval["env"], "darkroom_random");
    assert_eq!(eval["curve"].as_array().unwrap().len(), 2);
    let report = tmp.path().join("report");
    check(
        &icrl()
            .arg("report")
            .arg(tmp.path().join("runs"))
            .arg("--out")
            .arg(&report)
            .output()
            .unwrap(),
    );
    let table = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(table.contains("darkroom_random"), "{table}");
}
