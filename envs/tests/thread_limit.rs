//! The environment benchmark under a real thread limit (`prlimit --nproc`): asking for more
//! threads than the process may start ends with an error naming the thread that could not
//! start, promptly, instead of a panic followed by a hang (the started threads used to wait at
//! a barrier that never filled).
//!
//! The test re-runs itself (this test binary) as a child under the limit. RLIMIT_NPROC counts
//! every process and thread of the user and is not enforced for root, so as root the child
//! runs as user `nobody` (65534) through `setpriv`; otherwise the limit is the user's current
//! count plus a few.

use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "ENVS_THREAD_LIMIT_CHILD";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Threads of every process of the current user (an approximation of what RLIMIT_NPROC counts).
fn user_threads() -> usize {
    let uid = Command::new("id").arg("-u").output().unwrap();
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    let out = Command::new("ps")
        .args(["-L", "--no-headers", "-u", &uid])
        .output()
        .expect("ps runs");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn bench_reports_a_thread_that_cannot_start() {
    if std::env::var_os(CHILD).is_some() {
        // Under the limit: 1000 threads cannot all start.
        let config = envs::EnvConfig::from_name("darkroom").unwrap();
        let start = Instant::now();
        let err = envs::tools::bench(&config, 1000, 1000, 100_000, 0)
            .expect_err("1000 threads start under a limit of 64");
        assert!(matches!(err, envs::EnvError::Thread(_)), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("cannot start benchmark thread"),
            "{message}"
        );
        assert!(message.contains("of 1000"), "{message}");
        assert!(start.elapsed() < Duration::from_secs(60));
        println!("child saw: {message}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut command = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "prlimit",
            "--nproc=64",
        ]);
        c
    } else {
        let mut c = Command::new("prlimit");
        c.arg(format!("--nproc={}", user_threads() + 48));
        c
    };
    let mut child = command
        .arg(&exe)
        .args([
            "--exact",
            "bench_reports_a_thread_that_cannot_start",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .spawn()
        .expect("setpriv / prlimit start (util-linux)");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the benchmark hung under the thread limit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the child failed: {status:?}");
}
