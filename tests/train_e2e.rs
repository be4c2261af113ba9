//! End-to-end runs of `icrl train` / `icrl eval` on every config (shrunk to a few hundred
//! steps on CPU), checking the files a run writes; interruption and exact resume.

mod common;
use common::{check, files_with, icrl, root, run_dir};

use std::path::{Path, PathBuf};
use std::process::Command;

use icrl::trainer::run::logging::{read_events, ValueData};

/// Every scalar of a run folder's event files: (tag, step, value).
fn scalars(dir: &Path) -> Vec<(String, u64, f64)> {
    let mut out = Vec::new();
    for file in files_with(dir, |n| n.starts_with("events.out.tfevents")) {
        for event in read_events(&file).unwrap() {
            for v in event.values {
                if let ValueData::Scalar(x) = v.data {
                    out.push((v.tag, event.step as u64, f64::from(x)));
                }
            }
        }
    }
    out
}

/// Overrides that shrink a ReLIC config to a short CPU run.
fn shrink(env: &str) -> Vec<String> {
    shrink_method(env, "Relic")
}

/// The method of a config file's text (the variant name after `method:`).
fn method_of(text: &str) -> &'static str {
    ["Relic", "Dpt", "Ad", "Rl2", "PpoTask", "BanditBaselines"]
        .into_iter()
        .find(|m| text.contains(&format!("method: {m}(")))
        .unwrap_or("Relic")
}

/// Overrides that shrink a config of `method` on `env` to a run of a few seconds on CPU.
fn shrink_method(env: &str, method: &str) -> Vec<String> {
    let mut sets: Vec<&str> = match method {
        "Dpt" => vec![
            "method.steps=12",
            "method.batch_size=4",
            "method.warmup_steps=2",
            "method.data.samples_per_task=3",
            "method.data.max_tasks=Some(3)",
            "method.offline_contexts_per_task=1",
            "method.offline_eval_every=0",
        ],
        "Ad" => vec![
            "method.steps=12",
            "method.batch_size=2",
            "method.warmup_steps=2",
            "method.window=24",
            "method.data.samples_per_task=1",
            "method.data.max_tasks=Some(2)",
            "method.data.context_len=48",
            "method.data.history_len=48",
        ],
        "Rl2" => vec![
            "method.num_envs=2",
            "method.episodes_per_trial=1",
            "method.ppo.minibatches=1",
            "method.ppo.epochs=1",
            "method.total_steps=80",
            "eval.every_steps=0",
        ],
        "PpoTask" => vec![
            "method.steps_per_task=32",
            "method.num_envs=2",
            "method.rollout_len=16",
            "method.ppo.minibatches=2",
        ],
        "BanditBaselines" => vec![
            "method.offline_sizes=[1, 5, 20]",
            "method.online_steps=Some(20)",
        ],
        _ => vec![
            "method.num_envs=2",
            "method.minibatches=1",
            "method.epochs=1",
            "method.rollout_len=64",
            "method.updates_per_rollout=2",
            "method.total_steps=256",
            "method.warmup_steps=64",
        ],
    };
    sets.extend([
        "eval.episodes_per_trial=2",
        "eval.trials_per_task=1",
        "eval.max_tasks=Some(2)",
        "checkpoint.every_updates=2",
        "model.dtype=F32",
        "runtime.device=\"cpu\"",
        "logging.progress=false",
    ]);
    if env == "house_nav" {
        sets.extend([
            "env.image_height=16",
            "env.image_width=16",
            "env.horizon=20",
            "model.layers=1",
            "model.d_model=32",
            "model.mlp_hidden=64",
            "model.heads=2",
        ]);
    }
    if env == "one_room" {
        sets.push("env.horizon=20");
        if matches!(method, "Dpt" | "Ad" | "Rl2") {
            sets.extend(["env.image_height=8", "env.image_width=8"]);
        }
    }
    if env == "darkroom" && matches!(method, "Rl2" | "PpoTask" | "Ad") {
        sets.push("env.horizon=20");
    }
    if env == "bandit" {
        sets.push("env.horizon=20");
        if method == "Dpt" {
            sets.extend([
                "method.data.context_len=20",
                "method.bandit_comparison.offline_sizes=[1, 5, 20]",
            ]);
        }
    }
    sets.into_iter().map(String::from).collect()
}

#[test]
fn every_config_trains_evaluates_and_writes_its_files() {
    let configs = files_with(&root().join("configs"), |n| n.ends_with(".ron"));
    assert!(!configs.is_empty());
    for config in configs {
        let text = std::fs::read_to_string(&config).unwrap();
        let env = ["house_nav", "one_room", "darkroom", "bandit"]
            .into_iter()
            .find(|e| {
                text.contains(&match *e {
                    "house_nav" => "HouseNav(".to_string(),
                    "one_room" => "OneRoom(".to_string(),
                    "bandit" => "Bandit(".to_string(),
                    _ => "DarkRoom(".to_string(),
                })
            })
            .unwrap_or("other");
        let method = method_of(&text);
        let out = tempfile::tempdir().unwrap();
        let mut cmd = icrl();
        cmd.arg("train").arg(&config).arg("--out").arg(out.path());
        for s in shrink_method(env, method) {
            cmd.arg("--set").arg(s);
        }
        let result = cmd.output().unwrap();
        check(&result);
        let dir = run_dir(out.path());
        let name = config.display().to_string();
        assert!(dir.join("config.ron").is_file(), "{name}: config.ron");
        let ckpts = files_with(&dir.join("checkpoints"), |n| n.ends_with(".safetensors"));
        assert!(!ckpts.is_empty(), "{name}: checkpoint");
        if method == "BanditBaselines" || (method == "Dpt" && env == "bandit") {
            // The bandit comparison: JSON and two plots.
            let reports = files_with(&dir.join("bandit"), |n| n.ends_with(".json"));
            assert_eq!(reports.len(), 1, "{name}: bandit report");
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&reports[0]).unwrap()).unwrap();
            assert!(
                report["algorithms"].as_array().unwrap().len() >= 4,
                "{name}"
            );
            assert_eq!(
                files_with(&dir.join("bandit"), |n| n.ends_with(".png")).len(),
                2
            );
            if method == "BanditBaselines" {
                let result = icrl().arg("eval").arg(&dir).output().unwrap();
                check(&result);
                continue;
            }
        }
        if method == "Dpt" {
            if env != "bandit" {
                let offline = files_with(&dir.join("offline"), |n| n.ends_with(".json"));
                assert_eq!(offline.len(), 1, "{name}: offline result");
            }
            let result = icrl()
                .arg("eval")
                .arg(&dir)
                .arg("--offline")
                .output()
                .unwrap();
            check(&result);
            let path = PathBuf::from(String::from_utf8_lossy(&result.stdout).trim());
            assert!(path.is_file(), "{name}: icrl eval --offline wrote {path:?}");
            assert!(
                out.path().join("datasets").is_dir(),
                "{name}: dataset cache"
            );
        }
        let evals = files_with(&dir.join("eval"), |n| n.ends_with(".json"));
        assert_eq!(evals.len(), 1, "{name}: eval json");
        assert!(
            evals[0].with_extension("png").is_file(),
            "{name}: eval plot"
        );
        let eval: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&evals[0]).unwrap()).unwrap();
        assert_eq!(eval["curve"].as_array().unwrap().len(), 2, "{name}: curve");
        let tags: Vec<String> = scalars(&dir).into_iter().map(|s| s.0).collect();
        let expected: &[&str] = match method {
            "Dpt" | "Ad" => &["charts/sps", "losses/action_ce", "eval/return_ep01"],
            "PpoTask" => &["losses/policy", "losses/value", "eval/return_ep01"],
            _ => &[
                "charts/sps",
                "losses/policy",
                "losses/value",
                "eval/return_ep01",
            ],
        };
        for &tag in expected {
            assert!(
                tags.iter().any(|t| t == tag),
                "{name}: tag {tag} in {tags:?}"
            );
        }

        // `icrl eval` on the finished run writes another curve (more episodes, greedy) beside
        // the training-time one, which stays as it was.
        let trained_eval = std::fs::read(&evals[0]).unwrap();
        let result = icrl()
            .arg("eval")
            .arg(&dir)
            .args(["--episodes", "3", "--greedy"])
            .output()
            .unwrap();
        check(&result);
        let path = PathBuf::from(String::from_utf8_lossy(&result.stdout).trim());
        let eval: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            eval["curve"].as_array().unwrap().len(),
            3,
            "{name}: icrl eval curve"
        );
        assert_eq!(eval["greedy"], true);
        assert_eq!(
            std::fs::read(&evals[0]).unwrap(),
            trained_eval,
            "{name}: icrl eval --greedy replaced the training-time result"
        );
        let name_of = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name_of.ends_with("_greedy_e3.json") || name_of.ends_with("_e3.json"),
            "{name}: tagged file name {name_of}"
        );
        assert!(path.with_extension("png").is_file(), "{name}: tagged plot");
    }
}

#[test]
fn an_interrupted_run_resumes_exactly() {
    let sets = [
        "method.num_envs=2",
        "method.minibatches=1",
        "method.epochs=1",
        "method.rollout_len=100",
        "method.updates_per_rollout=2",
        "method.total_steps=2000",
        "checkpoint.every_updates=2",
        "eval.episodes_per_trial=1",
        "eval.max_tasks=Some(1)",
        "model.heads=2",
        "sampler.threads=1",
        "logging.progress=false",
    ];
    let config = root().join("configs/darkroom_relic.ron");
    let train = |out: &Path| {
        let mut cmd = icrl();
        cmd.arg("train").arg(&config).arg("--out").arg(out);
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        cmd
    };
    // Uninterrupted.
    let full = tempfile::tempdir().unwrap();
    check(&train(full.path()).output().unwrap());
    let reference = scalars(&run_dir(full.path()));

    // Interrupted with SIGINT once the first checkpoint exists, then resumed.
    let part = tempfile::tempdir().unwrap();
    let mut child = train(part.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let ckpt_dir = loop {
        if let Ok(mut entries) = std::fs::read_dir(part.path()) {
            if let Some(Ok(e)) = entries.next() {
                let c = e.path().join("checkpoints");
                if !files_with(&c, |n| n.ends_with(".safetensors")).is_empty() {
                    break c;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let dir = run_dir(part.path());
    if status.code() == Some(130) {
        let steps_before = files_with(&ckpt_dir, |n| n.ends_with(".safetensors")).len();
        assert!(steps_before >= 1);
        let out = icrl()
            .args(["train", "--resume"])
            .arg(&dir)
            .output()
            .unwrap();
        check(&out);
    } else {
        // The run finished before the signal arrived; the comparison below still holds.
        assert_eq!(status.code(), Some(0));
    }
    let resumed = scalars(&dir);
    let pick = |v: &[(String, u64, f64)], tag: &str| -> Vec<(u64, f64)> {
        let mut x: Vec<(u64, f64)> = v
            .iter()
            .filter(|s| s.0 == tag)
            .map(|s| (s.1, s.2))
            .collect();
        x.sort_by(|a, b| a.partial_cmp(b).unwrap());
        x.dedup();
        x
    };
    for tag in [
        "losses/policy",
        "losses/value",
        "losses/entropy",
        "charts/episodic_return",
        "eval/return_ep01",
    ] {
        let a = pick(&reference, tag);
        let b = pick(&resumed, tag);
        assert!(!a.is_empty(), "{tag} logged");
        assert_eq!(a, b, "{tag}: uninterrupted vs interrupted+resumed");
    }
}

#[test]
fn resuming_with_a_checkpoint_of_another_config_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let config = root().join("configs/darkroom_relic.ron");
    let mut cmd = icrl();
    cmd.arg("train").arg(&config).arg("--out").arg(out.path());
    for s in shrink("darkroom") {
        cmd.arg("--set").arg(s);
    }
    check(&cmd.output().unwrap());
    let dir = run_dir(out.path());
    // Edit the saved config: the checkpoint no longer matches it.
    let text = std::fs::read_to_string(dir.join("config.ron")).unwrap();
    std::fs::write(
        dir.join("config.ron"),
        text.replace("layers: 2", "layers: 3"),
    )
    .unwrap();
    let out = icrl()
        .args(["train", "--resume"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.layers"), "{err}");
}

/// The last line of stdout as JSON.
fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("no output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// `icrl bench train` on a DPT config (with data-parallel replicas) and on a ReLIC config:
/// one JSON line each, with the counts the config implies and timings that add up.
#[test]
fn bench_train_reports_dpt_tokens_and_relic_env_steps() {
    let data = tempfile::tempdir().unwrap();
    let cache = format!(
        "method.data.cache_dir=Some({:?})",
        data.path().display().to_string()
    );
    let mut dpt = icrl();
    dpt.args(["bench", "train", "--steps", "20", "--config"])
        .arg(root().join("configs/darkroom_dpt.ron"));
    for set in [
        "method.batch_size=6",
        "method.warmup_steps=2",
        "method.data.samples_per_task=3",
        "method.data.max_tasks=Some(3)",
        "runtime.torch_threads=1",
        "runtime.update_replicas=2",
        cache.as_str(),
    ] {
        dpt.args(["--set", set]);
    }
    let v = last_json(&check(&dpt.output().unwrap()));
    assert_eq!(v["method"], "dpt", "{v}");
    assert_eq!(
        (v["batch"].as_u64(), v["steps"].as_u64()),
        (Some(6), Some(20)),
        "{v}"
    );
    assert_eq!(v["tokens_per_example"].as_u64(), Some(101), "{v}");
    assert_eq!(v["update_replicas"].as_u64(), Some(2), "{v}");
    let rate = v["train_tokens_per_s"].as_f64().unwrap();
    assert!(rate.is_finite() && rate > 0.0, "{v}");
    let seconds = v["seconds"].as_f64().unwrap();
    let parts = v["batch_seconds"].as_f64().unwrap() + v["step_seconds"].as_f64().unwrap();
    assert!((parts - seconds).abs() <= 1e-9 * seconds.max(1.0), "{v}");
    assert!(
        (rate * seconds - (20 * 6 * 101) as f64).abs() < 1e-6 * rate * seconds,
        "{v}"
    );
    assert!(
        std::fs::read_dir(data.path()).unwrap().next().is_some(),
        "the dataset went to the configured cache"
    );

    let mut relic = icrl();
    relic
        .args(["bench", "train", "--steps", "200", "--config"])
        .arg(root().join("configs/darkroom_relic.ron"));
    for set in shrink("darkroom") {
        relic.args(["--set", &set]);
    }
    let v = last_json(&check(&relic.output().unwrap()));
    let rollouts = v["rollouts"].as_u64().unwrap();
    assert_eq!(rollouts, 2, "200 steps are 2 rollouts of 2 x 64: {v}");
    assert_eq!(
        v["env_steps"].as_f64(),
        Some((rollouts * 2 * 64) as f64),
        "{v}"
    );
    assert!(v["env_steps_per_s"].as_f64().unwrap() > 0.0, "{v}");
}
