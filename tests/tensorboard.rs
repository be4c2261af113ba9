//! TensorBoard as a user starts it: `scripts/tensorboard.sh` (what `make tensorboard` runs) on a
//! folder holding a short training run, queried over HTTP on 127.0.0.1 like the browser does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Trains the default ReLIC config for 256 steps into `out` and returns the run folder's name.
fn short_run(out: &Path) -> String {
    let config = root().join("configs/darkroom_relic.ron");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_icrl"));
    cmd.arg("train").arg(&config).arg("--out").arg(out);
    for set in [
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
    ] {
        cmd.arg("--set").arg(set);
    }
    let result = cmd.output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let dirs: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
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
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then_some(())
        .or_else(|| head.starts_with("HTTP/1.1 200").then_some(()))?;
    Some(body.to_string())
}

/// Polls `path` until `ready` accepts the parsed body (TensorBoard loads event files lazily).
fn wait_for(
    port: u16,
    path: &str,
    server: &mut Child,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(status) = server.try_wait().unwrap() {
            panic!("tensorboard exited early with {status}");
        }
        if let Some(body) = get(port, path) {
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

#[test]
fn tensorboard_serves_a_training_runs_scalars_over_http() {
    let out = tempfile::tempdir().unwrap();
    let run = short_run(out.path());
    let port = free_port();
    let child = Command::new(root().join("scripts/tensorboard.sh"))
        .arg(out.path())
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut server = Server(child);
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
