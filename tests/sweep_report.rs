//! `icrl sweep` and `icrl report` end to end: experiment files are checked before anything
//! runs (exit code 2), every file in experiments/ resolves, and a tiny sweep (2 variants x 2
//! seeds on CPU) is interrupted, resumed without rerunning finished runs, and reported with
//! numbers that match the runs' evaluation JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use icrl::lab::experiment;
use icrl::lab::report::References;

fn icrl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_icrl"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn base() -> String {
    root()
        .join("configs/darkroom_relic.ron")
        .display()
        .to_string()
}

/// Runs `icrl sweep` on an experiment text; asserts exit code 2, no panic, every needle in
/// stderr, and that nothing was written.
fn assert_rejected(experiment: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exp.ron");
    std::fs::write(&path, experiment).unwrap();
    let out_dir = dir.path().join("sweep");
    let out = icrl()
        .arg("sweep")
        .arg(&path)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    for needle in needles {
        let needle = needle.replace("{file}", path.to_str().unwrap());
        assert!(all.contains(&needle), "expected `{needle}` in: {all}");
    }
    assert!(!out_dir.exists(), "nothing may run or be written");
}

#[test]
fn bad_experiments_are_reported_before_anything_runs() {
    // Unknown field of the experiment file: file:line:col and the field.
    assert_rejected(
        &format!(
            "Experiment(\n  name: \"x\",\n  base: {:?},\n  seedz: [0],\n  variants: [],\n)",
            base()
        ),
        &["{file}:4:", "seedz"],
    );
    // A variant that sets a field that does not exist: the line of the override, the path, a
    // suggestion.
    assert_rejected(
        &format!(
            "Experiment(\n  name: \"x\",\n  base: {:?},\n  seeds: [0, 1, 2],\n  variants: [\n    (name: \"ok\"),\n    (name: \"bad\", set: [\"model.sinks=None\"]),\n  ],\n)",
            base()
        ),
        &["{file}:7:", "variant `bad`", "model.sinks", "did you mean sink"],
    );
    // A missing base config.
    assert_rejected(
        "Experiment(\n  name: \"x\",\n  base: \"no/such/config.ron\",\n  seeds: [0],\n  variants: [(name: \"a\")],\n)",
        &["{file}:3:", "no/such/config.ron", "does not exist"],
    );
    // An impossible value, found by validating the resolved config.
    assert_rejected(
        &format!(
            "Experiment(name: \"x\", base: {:?}, seeds: [0], budget: [\"method.updates_per_rollout=3\"], variants: [(name: \"a\")])",
            base()
        ),
        &["method.updates_per_rollout", "not divisible"],
    );
}

#[test]
fn every_experiment_file_parses_and_resolves() {
    let dir = root().join("experiments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    files.sort();
    let mut experiments = 0;
    for path in files {
        let content = std::fs::read_to_string(&path).unwrap();
        if content.contains("References(") {
            let refs = References::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(!refs.lines.is_empty(), "{}", path.display());
            continue;
        }
        let loaded = experiment::load(&path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        let exp = &loaded.experiment;
        assert!(exp.seeds.len() >= 3, "{}: at least 3 seeds", path.display());
        assert!(
            exp.variants
                .iter()
                .all(|v| !exp.budget.is_empty() || !v.budget.is_empty()),
            "{}: a budget that fits the machine",
            path.display()
        );
        assert_eq!(loaded.runs.len(), exp.seeds.len() * exp.variants.len());
        // The file names its own sweep folder.
        assert_eq!(
            path.file_stem().unwrap().to_string_lossy(),
            exp.name,
            "{}",
            path.display()
        );
        experiments += 1;
    }
    assert!(experiments >= 2, "experiments/ has the ablations");

    // `icrl sweep --dry-run` prints the plan and starts nothing.
    let out = icrl()
        .arg("sweep")
        .arg(root().join("experiments/sink_ablation.ron"))
        .args(["--dry-run", "--jobs", "2", "--out"])
        .arg(tempfile::tempdir().unwrap().path().join("s"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("60 run(s)"), "{stdout}"); // 6 variants x 10 seeds
    assert!(stdout.contains("k0v0__s2"), "{stdout}");
    assert!(stdout.contains("runtime.torch_threads="), "{stdout}");
}

/// The tiny experiment: 2 variants x 2 seeds, a few hundred steps each on CPU.
fn tiny_experiment(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.ron");
    let text = format!(
        r#"Experiment(
    name: "tiny",
    base: {:?},
    budget: [
        "method.num_envs=2", "method.minibatches=1", "method.epochs=1",
        "method.rollout_len=100", "method.updates_per_rollout=2",
        "method.total_steps=1200", "method.warmup_steps=64",
        "checkpoint.every_updates=2", "eval.episodes_per_trial=3",
        "eval.max_tasks=Some(3)", "model.heads=2", "runtime.device=\"cpu\"",
        "logging.progress=false",
    ],
    variants: [
        (name: "nosink", set: ["model.sink=None"]),
        (name: "u1", set: ["method.updates_per_rollout=1"]),
    ],
    seeds: [0, 1],
    references: {:?},
)"#,
        base(),
        root()
            .join("experiments/references.ron")
            .display()
            .to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn status_state(slot: &Path) -> Option<String> {
    let text = std::fs::read_to_string(slot.join("status.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["state"].as_str().map(str::to_string)
}

fn attempts(slot: &Path) -> usize {
    let log = std::fs::read_to_string(slot.join("log.txt")).unwrap_or_default();
    log.matches("==== icrl sweep: attempt").count()
}

/// The one run folder of a slot and its eval JSON.
fn eval_of(slot: &Path) -> (PathBuf, serde_json::Value) {
    let run = std::fs::read_dir(slot)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("config.ron").is_file())
        .unwrap();
    let mut evals: Vec<PathBuf> = std::fs::read_dir(run.join("eval"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    evals.sort();
    let path = evals.pop().unwrap();
    let v = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (path, v)
}

fn csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split(',').map(str::to_string))
                .collect()
        })
        .collect()
}

fn num(row: &BTreeMap<String, String>, key: &str) -> f64 {
    row[key]
        .parse()
        .unwrap_or_else(|e| panic!("{key} = {:?}: {e}", row[key]))
}

#[test]
fn a_tiny_sweep_is_interrupted_resumed_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tiny_experiment(tmp.path());
    let sweep_dir = tmp.path().join("sweep");
    let sweep = || {
        let mut c = icrl();
        c.arg("sweep")
            .arg(&exp)
            .args(["--jobs", "1", "--out"])
            .arg(&sweep_dir);
        c
    };
    let slots: Vec<PathBuf> = ["nosink__s0", "nosink__s1", "u1__s0", "u1__s1"]
        .iter()
        .map(|s| sweep_dir.join(s))
        .collect();

    // Start, and interrupt (SIGINT to the sweep only) once the first run has finished.
    let mut child = sweep()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while status_state(&slots[0]).as_deref() != Some("done") {
        assert!(Instant::now() < deadline, "no run finished within 300 s");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the sweep ended before the first run finished: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert!(!all.contains("panicked"), "{all}");
    let interrupted = out.status.code() == Some(130);
    if interrupted {
        assert!(all.contains("continue with: icrl sweep"), "{all}");
        // The run that was going is interrupted (not failed); later ones never started.
        let states: Vec<Option<String>> = slots.iter().map(|s| status_state(s)).collect();
        assert_eq!(states[0].as_deref(), Some("done"), "{states:?}");
        assert!(
            states
                .iter()
                .all(|s| s.as_deref() != Some("failed") && s.as_deref() != Some("running")),
            "{states:?}\n{all}"
        );
        assert!(!slots[3].exists(), "the last run never started");
    } else {
        // Every run finished before the signal was handled.
        assert_eq!(out.status.code(), Some(0), "{all}");
    }
    let (first_eval, _) = eval_of(&slots[0]);
    let first_modified = std::fs::metadata(&first_eval).unwrap().modified().unwrap();
    // (interrupted, had a run folder to resume)
    let partial: Vec<(bool, bool)> = slots
        .iter()
        .map(|s| {
            (
                status_state(s).as_deref() == Some("interrupted"),
                std::fs::read_dir(s).is_ok_and(|d| {
                    d.filter_map(Result::ok)
                        .any(|e| e.path().join("config.ron").is_file())
                }),
            )
        })
        .collect();

    // Resume: the finished run is skipped, the interrupted one continues from its checkpoint.
    let out = sweep().output().unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for (slot, &(was_interrupted, had_run)) in slots.iter().zip(&partial) {
        assert_eq!(status_state(slot).as_deref(), Some("done"), "{all}");
        let log = std::fs::read_to_string(slot.join("log.txt")).unwrap();
        if was_interrupted {
            assert_eq!(attempts(slot), 2, "{log}");
            assert_eq!(log.contains("--resume"), had_run, "{log}");
        } else {
            assert_eq!(attempts(slot), 1, "{}: {log}", slot.display());
        }
    }
    assert!(
        all.contains("1 finished before") || !interrupted,
        "the finished run is skipped: {all}"
    );
    let (again, _) = eval_of(&slots[0]);
    assert_eq!(again, first_eval);
    assert_eq!(
        std::fs::metadata(&again).unwrap().modified().unwrap(),
        first_modified,
        "the finished run was not rerun"
    );

    // A third sweep has nothing to do.
    let out = sweep().output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(slots.iter().all(|s| attempts(s) <= 2));

    // Report.
    let report_dir = tmp.path().join("report");
    let out = icrl()
        .arg("report")
        .arg(&sweep_dir)
        .arg("--out")
        .arg(&report_dir)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(md.contains("| nosink | 2 (0, 1) | seeds (n=2) |"), "{md}");
    assert!(md.contains("| u1 | 2 (0, 1) | seeds (n=2) |"), "{md}");
    assert!(
        md.contains("![in-context return on darkroom](return_darkroom.png)"),
        "{md}"
    );
    assert!(md.contains("Paper reference numbers (not ours)"), "{md}");
    assert!(report_dir.join("return_darkroom_vs_paper.png").is_file());
    let png = report_dir.join("return_darkroom.png");
    let (_, h, w) = icrl::trainer::plot::read_png_rgb(&png).unwrap();
    assert_eq!((h, w), (560, 900));

    // Per run: the numbers are the eval JSON's.
    let runs = csv(&report_dir.join("runs.csv"));
    assert_eq!(runs.len(), 4);
    let mut per_variant: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (slot, row) in slots.iter().zip(&runs) {
        let (path, eval) = eval_of(slot);
        assert_eq!(row["eval_json"], path.display().to_string());
        let curve = eval["curve"].as_array().unwrap();
        let first = curve[0]["ret"]["mean"].as_f64().unwrap();
        let last = curve[curve.len() - 1]["ret"]["mean"].as_f64().unwrap();
        assert!((num(row, "first_return") - first).abs() < 1e-9);
        assert!((num(row, "last_return") - last).abs() < 1e-9);
        assert_eq!(num(row, "trained"), eval["step"].as_f64().unwrap());
        assert_eq!(row["trained_unit"], "env steps");
        assert_eq!(num(row, "trained"), 1200.0);
        assert_eq!(row["state"], "done");
        per_variant
            .entry(row["variant"].clone())
            .or_default()
            .push((first, last));
    }
    // The by-seed table pairs the variants' runs of each seed, from the same eval JSON.
    let (nosink, u1) = (&per_variant["nosink"], &per_variant["u1"]);
    for (seed, (a, b)) in nosink.iter().zip(u1).enumerate() {
        let line = format!("| {seed} | {:.2} | {:.2} |", a.1, b.1);
        assert!(md.contains(&line), "`{line}` in {md}");
    }
    // Per variant: mean over seeds of the runs' values; the interval is Student's t over seeds.
    let table = csv(&report_dir.join("report.csv"));
    assert_eq!(table.len(), 2);
    for row in &table {
        let values = &per_variant[&row["variant"]];
        let firsts: Vec<f64> = values.iter().map(|v| v.0).collect();
        let lasts: Vec<f64> = values.iter().map(|v| v.1).collect();
        let impr: Vec<f64> = values.iter().map(|v| v.1 - v.0).collect();
        for (key, xs) in [("first", &firsts), ("last", &lasts), ("improvement", &impr)] {
            let s = icrl::trainer::stats::MeanCi::of(xs);
            assert!(
                (num(row, &format!("{key}_mean")) - s.mean).abs() < 1e-9,
                "{key}"
            );
            assert!(
                (num(row, &format!("{key}_ci95")) - s.ci95).abs() < 1e-9,
                "{key}"
            );
        }
        assert_eq!(row["ci_over"], "seeds");
        assert_eq!(row["runs"], "2");
        assert!(num(row, "wall_seconds_mean") > 0.0);
    }
    let curves = csv(&report_dir.join("curves.csv"));
    assert_eq!(curves.len(), 2 * 3, "3 episodes per variant");
    // Sink mass from the attention diagnostics (every 5 updates by default): only `u1` has a
    // sink (K0V0, 2 updates per rollout, 12 updates: diagnostics at updates 5 and 10), for
    // each of the 2 layers at 2 steps, averaged over both seeds.
    assert!(
        md.contains("](sink_mass_darkroom.png)"),
        "the sink-mass plot in {md}"
    );
    let sink = csv(&report_dir.join("sink_mass.csv"));
    assert_eq!(sink.len(), 2 * 2, "{sink:?}");
    for row in &sink {
        assert_eq!(row["variant"], "u1", "nosink logs no sink mass");
        assert_eq!(row["runs"], "2");
        assert!((0.0..=1.0).contains(&num(row, "mean")));
    }
    let (_, h, w) =
        icrl::trainer::plot::read_png_rgb(&report_dir.join("sink_mass_darkroom.png")).unwrap();
    assert_eq!((h, w), (560, 900));
}

#[test]
fn report_of_plain_run_folders_groups_by_config_name_and_rejects_empty_input() {
    let tmp = tempfile::tempdir().unwrap();
    let out = icrl().arg("report").arg(tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // One run trained outside a sweep: grouped by its config name, CI over its trials.
    let runs = tmp.path().join("runs");
    let mut train = icrl();
    train.arg("train").arg(base()).arg("--out").arg(&runs);
    for s in [
        "name=\"solo\"",
        "method.num_envs=2",
        "method.minibatches=1",
        "method.epochs=1",
        "method.rollout_len=64",
        "method.updates_per_rollout=2",
        "method.total_steps=128",
        "eval.episodes_per_trial=2",
        "eval.max_tasks=Some(3)",
        "runtime.device=\"cpu\"",
        "logging.progress=false",
    ] {
        train.arg("--set").arg(s);
    }
    let out = train.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report_dir = tmp.path().join("r");
    let out = icrl()
        .arg("report")
        .arg(&runs)
        .arg("--out")
        .arg(&report_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let table = csv(&report_dir.join("report.csv"));
    assert_eq!(table.len(), 1);
    assert_eq!(table[0]["variant"], "solo");
    assert_eq!(table[0]["ci_over"], "trials");
    assert!(
        num(&table[0], "wall_seconds_mean") >= 0.0,
        "from the event files"
    );
    assert!(report_dir.join("return_darkroom.png").is_file());
}

/// The launcher's bad input, without a cluster: exit code 2, a message naming what to fix, and
/// nothing written to the sweep folder.
#[test]
fn bad_launcher_options_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let experiment = tiny_experiment(dir.path());
    let out_dir = dir.path().join("sweep");
    let run = |args: &[&str], path: Option<&str>| {
        let mut cmd = icrl();
        cmd.arg("sweep").arg(&experiment).arg("--out").arg(&out_dir);
        cmd.args(args);
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        cmd.output().unwrap()
    };
    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (
            &["--launcher", "pbs"],
            None,
            "invalid value 'pbs' for '--launcher",
        ),
        (
            &["--partition", "gpu", "--time", "1:00:00"],
            None,
            "--partition, --time only apply to --launcher slurm",
        ),
        // No sbatch on the PATH (an empty folder).
        (
            &["--launcher", "slurm"],
            Some(dir.path().to_str().unwrap()),
            "`sbatch` is not on the PATH",
        ),
        (
            &["--launcher", "slurm", "--cpus-per-task", "0"],
            None,
            "--cpus-per-task must be at least 1",
        ),
    ];
    for (args, path, needle) in cases {
        let out = run(args, path);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(!all.contains("panicked"), "{all}");
        assert!(
            all.contains(needle),
            "{args:?}: expected `{needle}` in {all}"
        );
        assert!(!out_dir.exists(), "{args:?} wrote {}", out_dir.display());
    }
    // --status on a folder that is not a sweep.
    let out = icrl()
        .args(["sweep", "--status"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not a sweep folder"), "{}", text(&out));
}

/// Editing the base config file's content between two invocations of a sweep is refused
/// (exit code 2, the slot and the changed field named, nothing started), since the manifest
/// only records the base file's path; restoring the file lets the sweep go on.
#[test]
fn a_sweep_refuses_to_continue_after_its_base_config_changed() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.ron");
    let original = std::fs::read_to_string(root().join("configs/darkroom_relic.ron")).unwrap();
    std::fs::write(&base, &original).unwrap();
    let experiment = dir.path().join("one.ron");
    std::fs::write(
        &experiment,
        r#"Experiment(
    name: "one",
    base: "base.ron",
    budget: [
        "method.num_envs=2", "method.minibatches=1", "method.epochs=1",
        "method.rollout_len=100", "method.updates_per_rollout=2",
        "method.total_steps=200", "method.warmup_steps=64",
        "eval.episodes_per_trial=2", "eval.max_tasks=Some(2)", "eval.trials_per_task=1",
        "runtime.device=\"cpu\"", "logging.progress=false",
    ],
    variants: [(name: "base", set: [])],
    seeds: [0],
)"#,
    )
    .unwrap();
    let sweep_dir = dir.path().join("sweep");
    let sweep = || {
        icrl()
            .arg("sweep")
            .arg(&experiment)
            .arg("--out")
            .arg(&sweep_dir)
            .output()
            .unwrap()
    };
    let out = sweep();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = std::fs::read_to_string(sweep_dir.join("base__s0/status.json")).unwrap();

    std::fs::write(&base, original.replace("d_model: 64", "d_model: 32")).unwrap();
    let out = sweep();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    assert!(all.contains("base__s0 (model.d_model)"), "{all}");
    assert_eq!(
        std::fs::read_to_string(sweep_dir.join("base__s0/status.json")).unwrap(),
        status,
        "a refused sweep touched the slot"
    );

    std::fs::write(&base, &original).unwrap();
    let out = sweep();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("skipped") || text(&out).contains("finished"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_sweep_can_run_a_subset_of_its_variants_first() {
    let dir = tempfile::tempdir().unwrap();
    let experiment = dir.path().join("two.ron");
    std::fs::write(
        &experiment,
        format!(
            r#"Experiment(
    name: "two",
    base: {:?},
    budget: [
        "method.num_envs=2", "method.minibatches=1", "method.epochs=1",
        "method.rollout_len=100", "method.updates_per_rollout=2",
        "method.total_steps=200", "method.warmup_steps=64",
        "eval.episodes_per_trial=2", "eval.max_tasks=Some(2)", "eval.trials_per_task=1",
        "runtime.device=\"cpu\"", "logging.progress=false",
    ],
    variants: [(name: "kv", set: []), (name: "none", set: ["model.sink=None"])],
    seeds: [0, 1],
)"#,
            base()
        ),
    )
    .unwrap();
    let sweep_dir = dir.path().join("sweep");
    let sweep = |extra: &[&str]| {
        icrl()
            .arg("sweep")
            .arg(&experiment)
            .arg("--out")
            .arg(&sweep_dir)
            .args(extra)
            .output()
            .unwrap()
    };

    let out = sweep(&["--variants", "none,sinks"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("--variants sinks") && all.contains("kv, none"),
        "{all}"
    );
    assert!(
        !sweep_dir.exists(),
        "a refused sweep wrote {}",
        sweep_dir.display()
    );

    let out = sweep(&["--variants", "none", "--dry-run"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(all.matches("not selected").count(), 2, "{all}");

    let out = sweep(&["--variants", "none"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for seed in [0, 1] {
        let none = sweep_dir.join(format!("none__s{seed}"));
        let kv = sweep_dir.join(format!("kv__s{seed}"));
        assert_eq!(status_state(&none).as_deref(), Some("done"));
        assert_eq!(status_state(&kv), None, "{} ran", kv.display());
    }

    // The manifest kept every run: the same sweep without the filter runs the rest.
    let out = sweep(&[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("2 already finished"), "{all}");
    for seed in [0, 1] {
        let kv = sweep_dir.join(format!("kv__s{seed}"));
        assert_eq!(status_state(&kv).as_deref(), Some("done"));
    }
}
