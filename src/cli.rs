//! The `icrl` command line. Every subcommand has `--help`; a benchmark prints its result as one
//! JSON object on its last line. Exit codes: 0 success, 1 a run failed, 2 bad input (command
//! line, config, experiment file, missing or incompatible files).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use trainer::config::{self, ConfigError};
use trainer::error::UsageError;
use trainer::info;

/// In-context reinforcement learning for embodied tasks: ReLIC, DPT and baselines.
#[derive(Parser, Debug)]
#[command(name = "icrl", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Versions, devices, threads and the attention kernel libtorch picks.
    Info {
        /// Device to inspect: auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Print JSON only.
        #[arg(long)]
        json: bool,
    },
    /// Train from a config (or continue a run with --resume).
    Train(TrainArgs),
    /// Evaluate a run's latest (or a named) checkpoint with the in-context protocol.
    Eval(EvalArgs),
    /// Generate the pretraining dataset of a DPT or AD config (cached; `icrl train` also
    /// generates it when missing); prints the dataset's path.
    Data(DataArgs),
    /// Load, override and validate a config; print the resolved config (every field).
    Check(ConfigArgs),
    /// Step one environment with given actions: a JSON transcript, PNG frames and a map.
    Env(EnvArgs),
    /// Benchmarks; each prints one JSON object on its last line.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run every (variant, seed) of an experiment file, N at a time, resumably.
    Sweep(lab::sweep::SweepArgs),
    /// Markdown table, CSV and PNG curves from run folders or sweep folders.
    Report(lab::report::ReportArgs),
}

/// A config file and its overrides.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The RON config file.
    pub config: PathBuf,
    /// Override a field: `--set path.to.field=value` (value in RON syntax); repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
}

/// `icrl train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The RON config file (not needed with --resume).
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Override a field: `--set path.to.field=value` (value in RON syntax); repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE", conflicts_with = "resume")]
    pub set: Vec<String>,
    /// Parent folder of the run folder.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// auto, cpu, cuda or cuda:N (overrides runtime.device).
    #[arg(long)]
    pub device: Option<String>,
    /// Continue the run in this folder from its latest checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    pub resume: Option<PathBuf>,
}

/// `icrl eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run folder.
    pub run_dir: PathBuf,
    /// A checkpoint file (default: the run's latest).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Episodes per trial (default: the config's eval.episodes_per_trial).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// Trials per task (default: the config's eval.trials_per_task).
    #[arg(long)]
    pub trials: Option<usize>,
    /// Task split: test, validation or train (default: the config's eval.split).
    #[arg(long)]
    pub split: Option<String>,
    /// Act greedily instead of sampling.
    #[arg(long)]
    pub greedy: bool,
    /// KV-cache window in tokens (default: the config's eval.context_window, else the trained
    /// context).
    #[arg(long)]
    pub context: Option<usize>,
    /// DPT: the offline evaluation (fixed contexts from the held-out tasks, greedy and
    /// sampled; the bandit comparison on bandits) instead of the online one.
    #[arg(long)]
    pub offline: bool,
    /// With --offline: fixed contexts per held-out task (default: the config's
    /// method.offline_contexts_per_task); the result is written as `<step>_c<N>.json`.
    #[arg(long, requires = "offline")]
    pub contexts: Option<usize>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
}

/// `icrl data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    /// The RON config file (method Dpt or Ad).
    pub config: PathBuf,
    /// Override a field: `--set path.to.field=value` (value in RON syntax); repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// The runs folder whose `datasets/` caches the file (unless `data.cache_dir` is set).
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
}

/// `icrl env`.
#[derive(Args, Debug)]
pub struct EnvArgs {
    /// Environment name (darkroom, darkroom_ad, darkroom_hard, key_to_door, bandit, one_room,
    /// house_nav).
    pub name: String,
    /// Task id (goal index, colour, house seed, ...).
    #[arg(long, default_value_t = 0)]
    pub task: u64,
    /// Seed of the episode randomness (starts, targets, noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Comma-separated actions, e.g. 0,0,2,4.
    #[arg(long, value_delimiter = ',')]
    pub actions: Vec<u32>,
    /// Write PNG frames (and a top-down map for 3D worlds) into this folder.
    #[arg(long)]
    pub frames: Option<PathBuf>,
    /// Print each split's task ids (train, validation, test; grid worlds: with their goals) as
    /// JSON instead of a transcript.
    #[arg(long)]
    pub list_tasks: bool,
}

/// `icrl bench ...`.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Env steps per second with uniformly random actions (observations written).
    Env {
        /// Environment name.
        #[arg(long, default_value = "darkroom")]
        env: String,
        /// Number of envs in the batch.
        #[arg(long, default_value_t = 256)]
        envs: usize,
        /// Worker threads (each owns a shard of the envs).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Total env steps to time.
        #[arg(long, default_value_t = 10_000_000)]
        steps: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Rollout collection: env steps per second through the sampler, and where time goes.
    Sampler {
        /// Environment name.
        #[arg(long, default_value = "darkroom")]
        env: String,
        /// Number of envs in the batch.
        #[arg(long, default_value_t = 256)]
        envs: usize,
        /// Env worker threads (0 = cores available).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Timed steps per env.
        #[arg(long, default_value_t = 20_000)]
        steps: usize,
        /// random or model (ReLIC's tiny transformer on CPU).
        #[arg(long, default_value = "random")]
        policy: String,
        /// sync or double.
        #[arg(long, default_value = "sync")]
        mode: String,
        /// Trial length (storage and KV cache size).
        #[arg(long, default_value_t = 1024)]
        rollout_len: usize,
        /// Timed rounds, sampler and bare envs alternating; the report gives each round and
        /// the medians (one timing on a shared machine can be off by 30%).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// The transformer: training tokens/s, KV-cache decode steps/s, peak memory.
    Model {
        /// Transformer blocks.
        #[arg(long, default_value_t = 2)]
        layers: usize,
        /// Width of the residual stream.
        #[arg(long, default_value_t = 64)]
        d_model: usize,
        /// Attention heads.
        #[arg(long, default_value_t = 8)]
        heads: usize,
        /// Context length (tokens) for training and the decode cache.
        #[arg(long, default_value_t = 1024)]
        context: usize,
        /// Sequences (training) / env slots (decode).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Timed training iterations.
        #[arg(long, default_value_t = 2)]
        iters: usize,
        /// Timed decode steps.
        #[arg(long, default_value_t = 64)]
        decode_steps: usize,
        /// f32 or bf16 (default: bf16 on CUDA, f32 on CPU).
        #[arg(long)]
        dtype: Option<String>,
    },
}

/// Entry point of the `icrl` binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

/// 2 for bad input, 130 for an interrupted run, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain()
        .any(|c| c.is::<trainer::run::Interrupted>() || c.is::<lab::sweep::SweepInterrupted>())
    {
        return 130;
    }
    let bad_input = e.chain().any(|c| {
        c.is::<ConfigError>()
            || c.is::<UsageError>()
            || c.is::<envs::EnvError>()
            || c.is::<trainer::run::checkpoint::CheckpointError>()
    });
    if bad_input {
        2
    } else {
        1
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info { device, json } => {
            let device = info::parse_device(&device).map_err(|e| UsageError(e.to_string()))?;
            let report = info::collect(device);
            if !json {
                if let Some(map) = report.as_object() {
                    for (key, value) in map {
                        println!("{key:>22}: {value}");
                    }
                }
            }
            print_json(&report);
            Ok(())
        }
        Command::Train(args) => {
            let mut run = match &args.resume {
                Some(dir) => trainer::run::Run::resume(dir, args.device.as_deref())?,
                None => {
                    let path = args
                        .config
                        .as_ref()
                        .expect("clap requires CONFIG without --resume");
                    let config: trainer::Config = config::load(path, &args.set)?;
                    trainer::run::Run::start(config, &args.out, args.device.as_deref())?
                }
            };
            eprintln!("run folder: {}", run.dir.display());
            trainer::train(&mut run)?;
            eprintln!("done: {}", run.dir.display());
            Ok(())
        }
        Command::Eval(args) if args.offline => {
            let path = trainer::evaluate_run_offline(
                &args.run_dir,
                args.checkpoint.as_deref(),
                args.contexts,
                args.device.as_deref(),
            )?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Data(args) => {
            let config: trainer::Config = config::load(&args.config, &args.set)?;
            let path = trainer::data::command(&config, &args.out)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Eval(args) => {
            let split = match args.split.as_deref() {
                None => None,
                Some("test") => Some(trainer::config::EvalSplit::Test),
                Some("train") => Some(trainer::config::EvalSplit::Train),
                Some("validation") => Some(trainer::config::EvalSplit::Validation),
                Some(other) => {
                    return Err(UsageError(format!(
                        "--split {other}: expected test, validation or train"
                    ))
                    .into())
                }
            };
            let path = trainer::evaluate_run(
                &args.run_dir,
                args.checkpoint.as_deref(),
                args.episodes,
                args.trials,
                split,
                args.greedy,
                args.context,
                args.device.as_deref(),
            )?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Sweep(args) => lab::sweep::command(&args),
        Command::Report(args) => lab::report::command(&args),
        Command::Check(args) => {
            let config: trainer::Config = config::load(&args.config, &args.set)?;
            print!("{}", config::to_ron_string(&config));
            println!();
            Ok(())
        }
        Command::Env(args) => {
            let config = envs::EnvConfig::from_name(&args.name)?;
            if args.list_tasks {
                let lists = envs::tools::task_lists(&config)?;
                println!("{}", serde_json::to_string_pretty(&lists)?);
                return Ok(());
            }
            let transcript = envs::tools::transcript(
                &config,
                args.task,
                args.seed,
                &args.actions,
                args.frames.as_deref(),
            )?;
            println!("{}", serde_json::to_string_pretty(&transcript)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Env {
            env,
            envs: count,
            threads,
            steps,
            seed,
        }) => {
            if count == 0 || threads == 0 || steps == 0 {
                return Err(UsageError("--envs, --threads and --steps must be >= 1".into()).into());
            }
            let config = envs::EnvConfig::from_name(&env)?;
            let result = envs::tools::bench(&config, count, threads, steps, seed)?;
            print_json(&result);
            Ok(())
        }
        Command::Bench(BenchCommand::Sampler {
            env,
            envs: count,
            threads,
            steps,
            policy,
            mode,
            rollout_len,
            repeats,
            seed,
        }) => {
            envs::EnvConfig::from_name(&env)?;
            let bad = |what: &str| UsageError(what.to_string());
            let opts = sampler::BenchSamplerOptions {
                env,
                envs: count,
                threads,
                steps,
                policy: policy
                    .parse()
                    .map_err(|_| bad("--policy: expected random or model"))?,
                mode: mode
                    .parse()
                    .map_err(|_| bad("--mode: expected sync or double"))?,
                rollout_len,
                repeats,
                seed,
                ..sampler::BenchSamplerOptions::default()
            };
            print_json(&sampler::bench_sampler(&opts)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Model {
            layers,
            d_model,
            heads,
            context,
            batch,
            device,
            iters,
            decode_steps,
            dtype,
        }) => {
            let dtype = match dtype.as_deref() {
                None => None,
                Some("f32") => Some(agent::DType::F32),
                Some("bf16") => Some(agent::DType::Bf16),
                Some(other) => {
                    return Err(UsageError(format!("--dtype {other}: expected f32 or bf16")).into())
                }
            };
            let opts = agent::BenchModelOptions {
                layers,
                d_model,
                heads,
                context,
                batch,
                device,
                dtype,
                train_iters: iters,
                decode_steps,
                ..agent::BenchModelOptions::default()
            };
            print_json(&agent::bench_model(&opts)?);
            Ok(())
        }
    }
}
