//! TensorBoard as a user starts it: `scripts/tensorboard.sh` (what `make tensorboard` runs) on a
//! folder holding a short training run, queried over HTTP on 127.0.0.1 like the browser does.

mod common;
use common::{check, root, run_dir, TINY_RELIC};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Trains the default ReLIC config for 256 steps into `out` and returns the run folder's name.
fn short_run(out: &Path) -> String {
    let config = root().join("configs/darkroom_relic.ron");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_icrl"));
    cmd.arg("train").arg(&config).arg("--out").arg(out);
    for set in TINY_RELIC {
        cmd.arg("--set").arg(set);
    }
    check(&cmd.output().unwrap());
    let run = run_dir(out);
    run.file_name().unwrap().to_string_lossy().into_owned()
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port; the body of a 200 answer, None while the server is not up.
fn get(port: u16, path: &str) -> Option<String> {
    request(port, "GET", path, None)
}

/// One HTTP/1.0 request (a JSON body for POST); the body of a 200 answer, else None.
fn request(port: u16, method: &str, path: &str, json: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let body = json.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// Polls `GET path` until `ready` accepts the parsed body (TensorBoard loads event files lazily).
fn wait_for(
    port: u16,
    path: &str,
    server: &mut Child,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for_request(port, path, None, server, ready)
}

/// Polls a GET (or, with a body, POST) request until `ready` accepts the parsed answer.
fn wait_for_request(
    port: u16,
    path: &str,
    post: Option<&str>,
    server: &mut Child,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(status) = server.try_wait().unwrap() {
            panic!("tensorboard exited early with {status}");
        }
        let method = if post.is_some() { "POST" } else { "GET" };
        if let Some(body) = request(port, method, path, post) {
            let value: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"));
            if ready(&value) {
                return value;
            }
            last = Some(value);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{path} never became ready; last answer: {last:?}");
}

/// Stops the server's process group when the test ends, whatever its outcome.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Starts `scripts/tensorboard.sh LOGDIR PORT` in its own process group.
fn start_tensorboard(logdir: &Path, port: u16) -> Server {
    let child = Command::new(root().join("scripts/tensorboard.sh"))
        .arg(logdir)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    Server(child)
}

#[test]
fn tensorboard_serves_a_training_runs_scalars_over_http() {
    let out = tempfile::tempdir().unwrap();
    let run = short_run(out.path());
    let port = free_port();
    let mut server = start_tensorboard(out.path(), port);
    let mut stdout = server.0.stdout.take().unwrap();

    let runs = wait_for(port, "/data/runs", &mut server.0, |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(runs, serde_json::json!([run]), "runs list");

    let tags = wait_for(port, "/data/plugin/scalars/tags", &mut server.0, |v| {
        v.get(&run).is_some_and(|t| {
            let tags: Vec<&String> = t.as_object().unwrap().keys().collect();
            tags.iter().any(|k| k.starts_with("charts/"))
                && tags.iter().any(|k| k.starts_with("losses/"))
        })
    });
    let run_tags = tags[&run].as_object().unwrap();
    for tag in ["charts/learning_rate", "losses/policy", "losses/value"] {
        assert!(run_tags.contains_key(tag), "{tag} missing: {run_tags:?}");
    }

    // One tag's data points come back with the steps the run logged.
    let points = get(
        port,
        &format!("/data/plugin/scalars/scalars?run={run}&tag=losses/policy"),
    )
    .expect("scalars endpoint");
    let points: serde_json::Value = serde_json::from_str(&points).unwrap();
    let points = points.as_array().unwrap();
    assert!(!points.is_empty());
    for p in points {
        // [wall_time, step, value]
        let step = p[1].as_u64().unwrap();
        assert!(step > 0 && step <= 256, "step {step}");
        assert!(p[2].as_f64().unwrap().is_finite());
    }

    // The script printed the URL a user opens.
    drop(server);
    let mut printed = String::new();
    stdout.read_to_string(&mut printed).unwrap();
    assert!(
        printed.contains(&format!("http://127.0.0.1:{port}/")),
        "printed: {printed}"
    );
}

/// A sweep of 2 variants x 1 seed, a few hundred steps each; returns the sweep folder.
fn tiny_sweep(dir: &Path) -> PathBuf {
    let experiment = dir.join("hp.ron");
    let base = root().join("configs/darkroom_relic.ron");
    std::fs::write(
        &experiment,
        format!(
            r#"Experiment(
    name: "hp",
    base: {base:?},
    budget: [
        "method.num_envs=2", "method.minibatches=1", "method.epochs=1",
        "method.rollout_len=64", "method.updates_per_rollout=2",
        "method.total_steps=256", "method.warmup_steps=64",
        "eval.episodes_per_trial=2", "eval.trials_per_task=1", "eval.max_tasks=Some(2)",
        "runtime.device=\"cpu\"", "logging.progress=false",
    ],
    variants: [
        (name: "kv", set: []),
        (name: "nosink", set: ["model.sink=None"]),
    ],
    seeds: [0],
)"#
        ),
    )
    .unwrap();
    let sweep = dir.join("sweep");
    let result = Command::new(env!("CARGO_BIN_EXE_icrl"))
        .arg("sweep")
        .arg(&experiment)
        .arg("--out")
        .arg(&sweep)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    sweep
}

/// TensorBoard's HParams plugin (its own HTTP API, as the dashboard calls it) lists a sweep's
/// variants with their settings and final metrics.
#[test]
fn hparams_dashboard_compares_the_variants_of_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = tiny_sweep(dir.path());
    let port = free_port();
    let mut server = start_tensorboard(&sweep, port);

    let experiment = wait_for_request(
        port,
        "/data/plugin/hparams/experiment",
        Some(r#"{"experimentName": ""}"#),
        &mut server.0,
        |v| v["hparamInfos"].as_array().is_some_and(|a| !a.is_empty()),
    );
    let names: Vec<&str> = experiment["hparamInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    for name in ["name", "seed", "env", "method", "model.sink"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("runtime.") || n.starts_with("logging.")),
        "{names:?}"
    );
    let metrics: Vec<&str> = experiment["metricInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"]["tag"].as_str().unwrap())
        .collect();
    assert_eq!(
        metrics,
        ["eval/return_first_episode", "eval/return_last_episode"]
    );

    let request = r#"{"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN",
        "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"], "colParams": [],
        "startIndex": 0, "sliceSize": 100}"#;
    let groups = wait_for_request(
        port,
        "/data/plugin/hparams/session_groups",
        Some(request),
        &mut server.0,
        |v| {
            v["sessionGroups"].as_array().is_some_and(|g| {
                g.len() == 2
                    && g.iter()
                        .all(|g| g["metricValues"].as_array().unwrap().len() == 2)
            })
        },
    );
    let mut variants = Vec::new();
    for group in groups["sessionGroups"].as_array().unwrap() {
        let hparams = &group["hparams"];
        variants.push(hparams["name"].as_str().unwrap().to_string());
        assert_eq!(hparams["seed"].as_f64(), Some(0.0));
        assert_eq!(hparams["method.total_steps"].as_f64(), Some(256.0));
        let sink = hparams["model.sink"].as_str();
        match hparams["name"].as_str().unwrap() {
            "hp.nosink" => assert_eq!(sink, Some("None")),
            _ => assert_eq!(sink, None, "the kv variant overrides no sink"),
        }
        let sessions = group["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0]["status"], "STATUS_SUCCESS");
        for m in group["metricValues"].as_array().unwrap() {
            assert_eq!(m["trainingStep"].as_u64(), Some(256));
            assert!(m["value"].as_f64().unwrap().is_finite());
        }
    }
    variants.sort();
    // A sweep names its runs `<experiment>.<variant>`.
    assert_eq!(variants, ["hp.kv", "hp.nosink"]);
}
