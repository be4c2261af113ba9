//! The bad-input corpus: configs, `--set` overrides, experiment files and paths that a new or an
//! adversarial user may give `icrl`. Every case must end with its exit code (2 for bad input),
//! a message that says where the problem is (file:line:column, the field path, the `--set`
//! argument or the path), a short message (never an echo of megabytes of input), and no panic
//! or signal. The test prints how many cases passed and lists every failure at once.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One invocation of the binary and what it must answer.
struct Case {
    name: String,
    args: Vec<String>,
    /// Expected exit code.
    code: i32,
    /// Texts stderr must contain (`{file}` = the case's config file).
    needles: Vec<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary with a deadline; (exit code or None for a signal, stderr).
fn run(args: &[String], deadline: Duration) -> (Option<i32>, String) {
    let spawned = Command::new(env!("CARGO_BIN_EXE_icrl"))
        .args(args)
        .current_dir(repo())
        .env("RUST_BACKTRACE", "1")
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return (None, format!("(the binary did not start: {e})")),
    };
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().unwrap_or_default();
    match status {
        Some(status) => (status.code(), text),
        None => (None, format!("(timed out after {deadline:?}) {text}")),
    }
}

/// Builds the corpus around files in `dir`.
struct Corpus {
    dir: PathBuf,
    cases: Vec<Case>,
}

impl Corpus {
    /// `icrl check` on a config text: exit 2 and every needle (`{file}` = the file).
    fn config(&mut self, name: &str, text: &str, needles: &[&str]) {
        self.config_with(name, text, &[], needles);
    }

    /// `icrl check FILE --set ...` on a config text.
    fn config_with(&mut self, name: &str, text: &str, sets: &[&str], needles: &[&str]) {
        let file = self.dir.join(format!("{}.ron", self.cases.len()));
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap().to_string();
        let mut args = vec!["check".to_string(), file.clone()];
        for set in sets {
            args.push("--set".into());
            args.push(set.to_string());
        }
        self.cases.push(Case {
            name: name.to_string(),
            args,
            code: 2,
            needles: needles.iter().map(|n| n.replace("{file}", &file)).collect(),
        });
    }

    /// `icrl check configs/darkroom_relic.ron --set ARG`.
    fn set(&mut self, name: &str, arg: &str, needles: &[&str]) {
        self.cases.push(Case {
            name: name.to_string(),
            args: vec![
                "check".into(),
                "configs/darkroom_relic.ron".into(),
                "--set".into(),
                arg.to_string(),
            ],
            code: 2,
            needles: needles.iter().map(|n| n.to_string()).collect(),
        });
    }

    /// Any command line.
    fn command(&mut self, name: &str, args: &[&str], code: i32, needles: &[&str]) {
        self.cases.push(Case {
            name: name.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            code,
            needles: needles.iter().map(|n| n.to_string()).collect(),
        });
    }

    /// An experiment file for `icrl sweep --dry-run`.
    fn experiment(&mut self, name: &str, text: &str, needles: &[&str]) {
        let file = self.dir.join(format!("{}.ron", self.cases.len()));
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap().to_string();
        let out = self.dir.join("sweeps");
        self.cases.push(Case {
            name: name.to_string(),
            args: vec![
                "sweep".into(),
                file.clone(),
                "--dry-run".into(),
                "--out".into(),
                out.to_str().unwrap().into(),
            ],
            code: 2,
            needles: needles.iter().map(|n| n.replace("{file}", &file)).collect(),
        });
    }
}

/// Every section with a field that does not exist: the file, line 2 and the field's path.
fn unknown_fields(c: &mut Corpus) {
    let sections = [
        ("top level", "Config(\n  bogus: 1,\n)", "bogus"),
        (
            "env DarkRoom",
            "Config(env: DarkRoom(\n  bogus: 1))",
            "env.bogus",
        ),
        (
            "env DarkRoomAd",
            "Config(env: DarkRoomAd(\n  bogus: 1))",
            "env.bogus",
        ),
        (
            "env DarkRoomHard",
            "Config(env: DarkRoomHard(\n  bogus: 1))",
            "env.bogus",
        ),
        (
            "env KeyToDoor",
            "Config(env: KeyToDoor(\n  bogus: 1))",
            "env.bogus",
        ),
        (
            "env Bandit",
            "Config(env: Bandit(\n  bogus: 1))",
            "env.bogus",
        ),
        (
            "env OneRoom",
            "Config(env: OneRoom(\n  bogus: 1))",
            "env.bogus",
        ),
        (
            "env HouseNav",
            "Config(env: HouseNav(\n  bogus: 1))",
            "env.bogus",
        ),
        ("model", "Config(model: (\n  bogus: 1))", "model.bogus"),
        (
            "model.sink",
            "Config(model: (sink: SinkKv(k: Zero, v: Zero,\n  bogus: Zero)))",
            "model.sink",
        ),
        (
            "method Relic",
            "Config(method: Relic(\n  bogus: 1))",
            "method.bogus",
        ),
        (
            "method Dpt",
            "Config(method: Dpt(\n  bogus: 1))",
            "method.bogus",
        ),
        (
            "method Dpt.data",
            "Config(method: Dpt(data: (\n  bogus: 1)))",
            "method.data.bogus",
        ),
        (
            "method Dpt.bandit_comparison",
            "Config(method: Dpt(bandit_comparison: (\n  bogus: 1)))",
            "method.bandit_comparison.bogus",
        ),
        (
            "method Ad",
            "Config(method: Ad(\n  bogus: 1))",
            "method.bogus",
        ),
        (
            "method Rl2",
            "Config(method: Rl2(\n  bogus: 1))",
            "method.bogus",
        ),
        (
            "method Rl2.ppo",
            "Config(method: Rl2(ppo: (\n  bogus: 1)))",
            "method.ppo.bogus",
        ),
        (
            "method PpoTask",
            "Config(method: PpoTask(\n  bogus: 1))",
            "method.bogus",
        ),
        (
            "method BanditBaselines",
            "Config(method: BanditBaselines(\n  bogus: 1))",
            "method.bogus",
        ),
        (
            "sampler",
            "Config(sampler: (\n  bogus: 1))",
            "sampler.bogus",
        ),
        ("eval", "Config(eval: (\n  bogus: 1))", "eval.bogus"),
        (
            "logging",
            "Config(logging: (\n  bogus: 1))",
            "logging.bogus",
        ),
        (
            "checkpoint",
            "Config(checkpoint: (\n  bogus: 1))",
            "checkpoint.bogus",
        ),
        (
            "runtime",
            "Config(runtime: (\n  bogus: 1))",
            "runtime.bogus",
        ),
    ];
    for (section, text, path) in sections {
        c.config(
            &format!("unknown field in {section}"),
            text,
            &["{file}:2:", path],
        );
    }
    c.config(
        "unknown env variant",
        "Config(\n  env: DarkRom())",
        &["{file}:2:", "env", "DarkRom"],
    );
    c.config(
        "unknown method variant",
        "Config(\n  method: Relik())",
        &["{file}:2:", "method", "Relik"],
    );
    c.config(
        "unknown sink variant",
        "Config(model: (\n  sink: SinkKV(k: Zero, v: Zero)))",
        &["{file}:2:", "model.sink"],
    );
}

/// Values of the wrong type: the position and the field's path.
fn wrong_types(c: &mut Corpus) {
    let cases = [
        ("string for an integer", "seed: \"zero\"", "seed"),
        ("integer for a string", "name: 5", "name"),
        (
            "float for an integer",
            "model: (layers: 2.5)",
            "model.layers",
        ),
        (
            "string for an integer in a section",
            "model: (layers: \"two\")",
            "model.layers",
        ),
        (
            "negative for unsigned",
            "sampler: (threads: -1)",
            "sampler.threads",
        ),
        (
            "integer for a bool",
            "logging: (progress: 1)",
            "logging.progress",
        ),
        (
            "string for an enum",
            "eval: (split: \"Test\")",
            "eval.split",
        ),
        (
            "string for a float",
            "method: Relic(lr: \"fast\")",
            "method.lr",
        ),
        (
            "float for an integer in a method",
            "method: Relic(num_envs: 1.5)",
            "method.num_envs",
        ),
        (
            "scalar for a list",
            "model: (cnn_channels: 16)",
            "model.cnn_channels",
        ),
        (
            "list for an option",
            "eval: (max_tasks: [1])",
            "eval.max_tasks",
        ),
        (
            "struct for a scalar",
            "checkpoint: (keep_last: (n: 3))",
            "checkpoint.keep_last",
        ),
        ("negative grid size", "env: DarkRoom(size: -3)", "env.size"),
        (
            "integer overflow",
            "seed: 123456789012345678901234567890",
            "seed",
        ),
        (
            "float for a u64 total",
            "method: Relic(total_steps: 1e6)",
            "method.total_steps",
        ),
    ];
    for (what, field, path) in cases {
        c.config(
            &format!("wrong type: {what}"),
            &format!("Config(\n  {field},\n)"),
            &["{file}:2:", path],
        );
    }
}

/// Text that is not RON, or not a config.
fn malformed(c: &mut Corpus) {
    let cases: [(&str, &str, &[&str]); 12] = [
        (
            "unclosed paren",
            "Config(\n  name: \"x\",\n  model: (layers: 2,\n",
            &["{file}:"],
        ),
        (
            "missing comma",
            "Config(\n  name: \"x\"\n  seed: 1)",
            &["{file}:3:"],
        ),
        (
            "unterminated string",
            "Config(\n  name: \"x)",
            &["{file}:2:"],
        ),
        (
            "text after the end",
            "Config()\n  Config()",
            &["{file}:2:3", "after the config's end"],
        ),
        ("empty file", "", &["{file}:1:"]),
        ("only a comment", "// nothing here\n", &["{file}:"]),
        (
            "duplicate field",
            "Config(\n  seed: 1,\n  seed: 2)",
            &["{file}:3:", "seed"],
        ),
        (
            "unterminated comment",
            "Config(/* \n  seed: 1)",
            &["{file}:"],
        ),
        ("colon missing", "Config(\n  seed 1)", &["{file}:2:"]),
        (
            "wrong struct name",
            "Konfig(\n  seed: 1)",
            &["{file}:1:", "Config"],
        ),
        ("a list at the top", "[1, 2, 3]", &["{file}:1:"]),
        (
            "byte-order mark",
            "\u{FEFF}Config(seed: 1)",
            &["{file}:1:1", "byte-order mark"],
        ),
    ];
    for (what, text, needles) in cases {
        c.config(&format!("malformed: {what}"), text, needles);
    }
    let deep = format!("{}1{}", "(".repeat(60_000), ")".repeat(60_000));
    c.config(
        "malformed: nesting 60,000 deep in a file",
        &format!("Config(\n  model: (layers: {deep}))"),
        &["{file}:2:", "model.layers"],
    );
    // Not UTF-8 at all.
    let file = c.dir.join("binary.ron");
    std::fs::write(&file, [0x43u8, 0x6f, 0xff, 0xfe, 0x00, 0x28]).unwrap();
    let path = file.to_str().unwrap().to_string();
    c.command(
        "malformed: not UTF-8",
        &["check", &path],
        2,
        &[&path, "UTF-8"],
    );
}

/// Values that parse but cannot work: the field path (and for sizes, the limit).
fn impossible(c: &mut Corpus) {
    let cases: [(&str, &str, &[&str]); 22] = [
        ("heads do not divide d_model", "model: (heads: 3)", &["model.d_model"]),
        ("zero layers", "model: (layers: 0)", &["model.layers"]),
        ("depth dropout of 1", "model: (depth_dropout: 1.0)", &["model.depth_dropout"]),
        (
            "rollout not divisible by U",
            "method: Relic(rollout_len: 100, updates_per_rollout: 3)",
            &["method.updates_per_rollout"],
        ),
        ("negative lr", "method: Relic(lr: -1.0)", &["method.lr"]),
        ("gamma above 1", "method: Relic(gamma: 2.0)", &["method.gamma"]),
        ("zero envs", "method: Relic(num_envs: 0)", &["method.num_envs"]),
        (
            "a trillion envs",
            "method: Relic(num_envs: 1000000000000, minibatches: 1)",
            &["method.num_envs", "65536"],
        ),
        (
            "a trial of 2^30 steps",
            "method: Relic(rollout_len: 1073741824, updates_per_rollout: 1)",
            &["method.rollout_len", "1048576"],
        ),
        (
            "a rollout beyond memory",
            "method: Relic(num_envs: 65536, rollout_len: 1048576, minibatches: 1, updates_per_rollout: 1)",
            &["method.rollout_len", "268435456"],
        ),
        (
            "RL2 envs beyond the limit",
            "method: Rl2(num_envs: 100000000, ppo: (minibatches: 1))",
            &["method.num_envs", "65536"],
        ),
        (
            "PPO-per-task rows overflow",
            "method: PpoTask(num_envs: 18446744073709551615, rollout_len: 18446744073709551615)",
            &["method.num_envs", "method.rollout_len"],
        ),
        (
            "DPT context beyond the limit",
            "method: Dpt(data: (context_len: 100000000))",
            &["method.data.context_len", "1048576"],
        ),
        ("zero image width", "env: OneRoom(image_width: 0)", &["env.image_width"]),
        (
            "huge image",
            "env: OneRoom(image_height: 100000, image_width: 100000)",
            &["env.image_height", "1024"],
        ),
        (
            "image rollout beyond memory",
            "env: HouseNav(image_height: 1024, image_width: 1024), method: Relic(num_envs: 4096, rollout_len: 65536, minibatches: 1)",
            &["method.rollout_len", "1 TiB"],
        ),
        ("model too wide", "model: (d_model: 1000000000, heads: 1)", &["model.d_model", "65536"]),
        ("grid size 1", "env: DarkRoom(size: 1)", &["env.size"]),
        ("keep no checkpoint", "checkpoint: (keep_last: 0)", &["checkpoint.keep_last"]),
        ("unknown device", "runtime: (device: \"tpu\")", &["runtime.device"]),
        ("empty name", "name: \"\"", &["name"]),
        ("too many sampler threads", "sampler: (threads: 100000)", &["sampler.threads", "1024"]),
    ];
    for (what, field, needles) in cases {
        let mut all = vec!["{file}", "invalid value"];
        all.extend_from_slice(needles);
        c.config(
            &format!("impossible: {what}"),
            &format!("Config({field})"),
            &all,
        );
    }
}

/// `--set` arguments that cannot apply.
fn bad_overrides(c: &mut Corpus) {
    let cases: [(&str, &str, &[&str]); 13] = [
        (
            "no `=`",
            "model.layers",
            &["--set model.layers", "path.to.field=value"],
        ),
        ("empty path", "=3", &["--set =3", "empty"]),
        (
            "empty path part",
            "model..layers=3",
            &["--set model..layers=3", "empty"],
        ),
        (
            "unknown field",
            "model.layer=3",
            &["model.layer", "did you mean layers"],
        ),
        (
            "unknown section",
            "modle.layers=3",
            &["modle", "did you mean model"],
        ),
        (
            "below a scalar",
            "model.layers.x=1",
            &["model.layers.x", "no `x`"],
        ),
        (
            "wrong type",
            "model.layers=\"two\"",
            &["--set model.layers", "model.layers"],
        ),
        (
            "float for an integer",
            "model.layers=2.5",
            &["--set model.layers", "model.layers"],
        ),
        (
            "unterminated string",
            "name=\"x",
            &["--set name", "unterminated string"],
        ),
        ("empty value", "seed=", &["--set seed=", "expected a value"]),
        (
            "unknown variant",
            "model.sink=Sinkk",
            &["--set model.sink", "model.sink"],
        ),
        (
            "impossible value",
            "method.num_envs=0",
            &["--set method.num_envs=0", "method.num_envs"],
        ),
        (
            "text after the value",
            "seed=1 2",
            &["--set seed=1 2", "after the value"],
        ),
    ];
    for (what, arg, needles) in cases {
        c.set(&format!("--set: {what}"), arg, needles);
    }
    let deep = format!("{}1{}", "(".repeat(60_000), ")".repeat(60_000));
    c.set(
        "--set: nesting 60,000 deep (used to overflow the stack)",
        &format!("model.layers={deep}"),
        &[
            "--set model.layers=((((",
            "nested more than 128",
            "characters",
        ],
    );
    // (An argument may hold at most 128 KiB.)
    let deep_list = format!("{}{}", "[".repeat(60_000), "]".repeat(60_000));
    c.set(
        "--set: 60,000 nested lists",
        &format!("model.cnn_channels={deep_list}"),
        &["--set model.cnn_channels", "nested more than 128"],
    );
}

/// Experiment files: their own errors, with the experiment file's position.
fn experiments(c: &mut Corpus) {
    let base = repo().join("configs/darkroom_relic.ron");
    let base = base.to_str().unwrap();
    let deep = format!("{}1{}", "(".repeat(60_000), ")".repeat(60_000));
    c.experiment(
        "experiment: budget value nested 60,000 deep",
        &format!(
            "Experiment(name: \"e\", base: {base:?},\n  budget: [\"model.layers={deep}\"],\n  variants: [(name: \"a\", set: [])], seeds: [0])"
        ),
        &["{file}:2:", "nested more than 128"],
    );
    c.experiment(
        "experiment: unknown field",
        &format!("Experiment(name: \"e\", base: {base:?},\n  bogus: 1)"),
        &["{file}:2:", "bogus"],
    );
    c.experiment(
        "experiment: missing base config",
        "Experiment(name: \"e\", base: \"nowhere.ron\",\n  variants: [(name: \"a\", set: [])], seeds: [0])",
        &["{file}:", "nowhere.ron", "does not exist"],
    );
    c.experiment(
        "experiment: override of a missing field",
        &format!(
            "Experiment(name: \"e\", base: {base:?},\n  variants: [(name: \"a\", set: [\"model.layerz=3\"])], seeds: [0])"
        ),
        &["{file}:2:", "model.layerz"],
    );
    c.experiment(
        "experiment: impossible value in a variant",
        &format!(
            "Experiment(name: \"e\", base: {base:?},\n  variants: [(name: \"a\", set: [\"method.num_envs=1000000000000\"])], seeds: [0])"
        ),
        &["{file}:", "method.num_envs", "65536"],
    );
    c.experiment(
        "experiment: seed listed twice",
        &format!(
            "Experiment(name: \"e\", base: {base:?},\n  variants: [(name: \"a\", set: [])], seeds: [0, 0])"
        ),
        &["{file}", "seed 0 is listed twice"],
    );
}

/// Files and folders that do not exist or are the wrong kind.
fn bad_paths(c: &mut Corpus) {
    let missing = c.dir.join("missing.ron");
    let missing = missing.to_str().unwrap().to_string();
    let folder = c.dir.join("a_folder");
    std::fs::create_dir_all(&folder).unwrap();
    let folder = folder.to_str().unwrap().to_string();
    let no_run = c.dir.join("no_such_run");
    let no_run = no_run.to_str().unwrap().to_string();
    let empty_run = c.dir.join("empty_run");
    std::fs::create_dir_all(&empty_run).unwrap();
    let empty_run = empty_run.to_str().unwrap().to_string();
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "check a missing file",
            vec!["check", &missing],
            vec![&missing],
        ),
        ("check a folder", vec!["check", &folder], vec![&folder]),
        (
            "train a missing file",
            vec!["train", &missing],
            vec![&missing],
        ),
        (
            "data from a missing file",
            vec!["data", &missing],
            vec![&missing],
        ),
        (
            "resume a missing run",
            vec!["train", "--resume", &no_run],
            vec![&no_run],
        ),
        (
            "resume a folder that is no run",
            vec!["train", "--resume", &empty_run],
            vec![&empty_run],
        ),
        ("eval a missing run", vec!["eval", &no_run], vec![&no_run]),
        (
            "eval a folder that is no run",
            vec!["eval", &empty_run],
            vec![&empty_run],
        ),
        (
            "sweep a missing experiment",
            vec!["sweep", &missing],
            vec![&missing],
        ),
        (
            "report a missing folder",
            vec!["report", &no_run],
            vec![&no_run],
        ),
        (
            "unknown env name",
            vec!["env", "darkrom", "--actions", "0"],
            vec!["darkrom", "darkroom"],
        ),
        (
            "bench an unknown env",
            vec!["bench", "env", "--env", "darkrom", "--steps", "10"],
            vec!["darkrom"],
        ),
        ("unknown subcommand", vec!["trian"], vec!["trian"]),
        (
            "unknown option",
            vec!["check", "configs/darkroom_relic.ron", "--sett", "x=1"],
            vec!["--sett"],
        ),
        ("bad device", vec!["info", "--device", "gpu7"], vec!["gpu7"]),
    ];
    for (what, args, needles) in cases {
        c.command(&format!("path: {what}"), &args, 2, &needles);
    }
}

#[test]
fn bad_input_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let mut corpus = Corpus {
        dir: dir.path().to_path_buf(),
        cases: Vec::new(),
    };
    unknown_fields(&mut corpus);
    wrong_types(&mut corpus);
    malformed(&mut corpus);
    impossible(&mut corpus);
    bad_overrides(&mut corpus);
    experiments(&mut corpus);
    bad_paths(&mut corpus);

    // Two cases at a time (each start of the binary loads libtorch).
    let verdicts: Vec<Option<String>> = std::thread::scope(|s| {
        let halves: Vec<_> = corpus
            .cases
            .chunks(corpus.cases.len().div_ceil(2))
            .map(|cases| s.spawn(move || cases.iter().map(judge).collect::<Vec<_>>()))
            .collect();
        halves
            .into_iter()
            .flat_map(|h| h.join().expect("a corpus thread"))
            .collect()
    });
    let failures: Vec<String> = verdicts.into_iter().flatten().collect();
    let total = corpus.cases.len();
    eprintln!(
        "bad-input corpus: {} of {total} cases passed",
        total - failures.len()
    );
    assert!(total >= 100, "the corpus has {total} cases");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs one case; a description of what is wrong, or None when it behaves.
fn judge(case: &Case) -> Option<String> {
    let (code, stderr) = run(&case.args, Duration::from_secs(60));
    let mut wrong = Vec::new();
    if code != Some(case.code) {
        wrong.push(format!("exit code {code:?}, expected {}", case.code));
    }
    if stderr.contains("panicked") || stderr.contains("stack backtrace") {
        wrong.push("panicked".to_string());
    }
    for needle in &case.needles {
        if !stderr.contains(needle.as_str()) {
            wrong.push(format!("no `{needle}` in the message"));
        }
    }
    // Large input is never echoed back whole.
    if stderr.len() > 4000 {
        wrong.push(format!("a {}-byte message", stderr.len()));
    }
    if wrong.is_empty() {
        return None;
    }
    let shown: String = stderr.chars().take(600).collect();
    Some(format!(
        "{}: {}\n    args: {}\n    stderr: {shown}",
        case.name,
        wrong.join("; "),
        abbreviated_args(&case.args)
    ))
}

fn abbreviated_args(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.len() > 100 {
                format!("{}...({} bytes)", &a[..60], a.len())
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
