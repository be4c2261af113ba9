//! The `icrl` command line. Every subcommand has `--help`; a benchmark prints its result as one
//! JSON object on its last line. Exit codes: 0 success, 1 a run failed (an I/O error during
//! a run included), 2 bad input (command line, config, experiment file, missing or
//! incompatible files), 130 / 143 stopped by SIGINT / SIGTERM or SIGUSR1 after saving a
//! checkpoint.

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
    /// With --resume: when the latest checkpoint is damaged, continue from the newest valid
    /// one (the damaged files are set aside as `*.damaged`).
    #[arg(long, requires = "resume")]
    pub last_valid: bool,
}

/// `icrl eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run folder.
    pub run_dir: PathBuf,
    /// A checkpoint file (default: the run's latest); only this file is read.
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
    /// house_nav, darkroom_random).
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
        /// Decode path of the model policy: auto, libtorch or fused.
        #[arg(long, default_value = "auto")]
        inference: String,
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
        /// Data-parallel replicas for the training step on CPU (as `runtime.update_replicas`):
        /// the batch split into this many shards, each on its own model copy in its own thread
        /// with one libtorch thread, gradients summed into the master.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Timed decode steps.
        #[arg(long, default_value_t = 64)]
        decode_steps: usize,
        /// f32 or bf16 (default: bf16 on CUDA, f32 on CPU).
        #[arg(long)]
        dtype: Option<String>,
        /// Env slots when decoding (default: --batch).
        #[arg(long)]
        decode_batch: Option<usize>,
        /// The device's dense peak in TFLOP/s for the dtype (e.g. 989 for an H100/H200 in
        /// bf16): achieved FLOP/s are then also given as a fraction of it.
        #[arg(long)]
        peak_tflops: Option<f64>,
        /// Timed repetitions of the attention micro-benchmark (0 skips it).
        #[arg(long, default_value_t = 3)]
        attention_iters: usize,
        /// Print the predicted peak memory of this ReLIC run config instead of benchmarking
        /// (nothing is allocated): parameters, optimiser, storage, KV cache, activations with
        /// and without checkpointing, and whether it fits each --device-memory.
        #[arg(long, value_name = "CONFIG")]
        plan: Option<PathBuf>,
        /// With --plan: override a config field (repeatable).
        #[arg(long = "set", value_name = "PATH=VALUE", requires = "plan")]
        set: Vec<String>,
        /// With --plan: device sizes to check, e.g. 24GiB,40GiB (default 24, 40, 80, 141 GiB).
        #[arg(long, value_delimiter = ',', requires = "plan")]
        device_memory: Vec<String>,
        /// fused (the default: one-pass CPU kernels, e.g. RMSNorm, see agent::fused_ops) or
        /// composite (libtorch's ops only), to measure the two side by side.
        #[arg(long, default_value = "fused")]
        kernels: String,
    },
    /// End-to-end env steps/s of a ReLIC config, split into sampling (inference, env), PPO
    /// update and KV-cache refresh (no checkpoints, a one-episode final evaluation); for a
    /// DPT config, training tokens/s split into drawing batches and the optimiser step.
    Train {
        /// The run config (RON).
        #[arg(long)]
        config: PathBuf,
        /// Env steps to train (rounded up to whole rollouts of num_envs x rollout_len); for
        /// DPT, optimiser steps.
        #[arg(long, default_value_t = 65_536)]
        steps: u64,
        /// Override a config field, e.g. --set sampler.inference=Libtorch (repeatable).
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
        /// cpu, cuda or cuda:N (default: the config's runtime device).
        #[arg(long)]
        device: Option<String>,
        /// fused (the default: one-pass CPU kernels, e.g. RMSNorm, see agent::fused_ops) or
        /// composite (libtorch's ops only), to measure the two side by side.
        #[arg(long, default_value = "fused")]
        kernels: String,
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

/// The exit code of an error: 130 / 143 for work stopped by SIGINT / SIGTERM or SIGUSR1 (a
/// run saved its checkpoint first), 2 for bad input, 1 otherwise (a run failed).
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| {
        c.is::<trainer::run::Interrupted>()
            || c.is::<trainer::run::signals::Stopped>()
            || c.is::<lab::sweep::SweepInterrupted>()
    }) {
        return trainer::run::signals::exit_code();
    }
    use trainer::run::checkpoint::CheckpointError;
    // Damaged or unfitting input files are bad input; a failing disk, a thread that cannot
    // start or a libtorch error during a run is a failed run.
    let bad_input = e.chain().any(|c| {
        c.is::<ConfigError>()
            || c.is::<UsageError>()
            || c.downcast_ref::<envs::EnvError>()
                .is_some_and(|e| !matches!(e, envs::EnvError::Thread(_) | envs::EnvError::Io(_)))
            || c.downcast_ref::<CheckpointError>().is_some_and(|e| {
                matches!(
                    e,
                    CheckpointError::Corrupt { .. } | CheckpointError::Incompatible { .. }
                )
            })
    });
    if bad_input {
        2
    } else {
        1
    }
}

/// Runs a model or training bench with `--kernels fused|composite` and prints its JSON line,
/// tagged with the kernels it ran.
fn bench_with_kernels(
    kernels: String,
    bench: impl FnOnce() -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<()> {
    match kernels.as_str() {
        "fused" => agent::fused_ops::set_enabled(true),
        "composite" => agent::fused_ops::set_enabled(false),
        other => {
            return Err(
                UsageError(format!("--kernels {other}: expected fused or composite")).into(),
            )
        }
    }
    let mut result = bench()?;
    result["kernels"] = kernels.into();
    print_json(&result);
    Ok(())
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
            // From here on a stop signal ends the run at its next safe point, checkpointed.
            trainer::run::install_interrupt_handler();
            let mut run = match &args.resume {
                Some(dir) => {
                    let choice = if args.last_valid {
                        trainer::run::CheckpointChoice::NewestValid
                    } else {
                        trainer::run::CheckpointChoice::Latest
                    };
                    trainer::run::Run::resume_with(dir, args.device.as_deref(), choice)?
                }
                None => {
                    let path = args
                        .config
                        .as_ref()
                        .expect("clap requires CONFIG without --resume");
                    let config: trainer::Config = config::load(path, &args.set)?;
                    let mut run =
                        trainer::run::Run::start(config, &args.out, args.device.as_deref())?;
                    run.log_hparams_start(&args.set)?;
                    run
                }
            };
            eprintln!("run folder: {}", run.dir.display());
            trainer::train(&mut run)?;
            run.log_hparams_end()?;
            // Peak memory of the run as one JSON line (stderr): the CUDA allocator's peak on a
            // GPU (with the `cuda` feature), the resident-set peak on the CPU.
            eprintln!(
                "{}",
                serde_json::json!(trainer::info::peak_memory(run.device))
            );
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
            trainer::run::install_interrupt_handler();
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
            let overrides = trainer::eval::EvalOverrides {
                episodes: args.episodes,
                trials: args.trials,
                split,
                greedy: args.greedy,
                context: args.context,
            };
            let path = trainer::evaluate_run(
                &args.run_dir,
                args.checkpoint.as_deref(),
                &overrides,
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
            inference,
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
                inference: inference
                    .parse()
                    .map_err(|_| bad("--inference: expected auto, libtorch or fused"))?,
                rollout_len,
                repeats,
                seed,
                ..sampler::BenchSamplerOptions::default()
            };
            print_json(&sampler::bench_sampler(&opts)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Train {
            config: path,
            steps,
            set,
            device,
            kernels,
        }) => {
            let config: trainer::Config = config::load(&path, &set)?;
            bench_with_kernels(kernels, || {
                trainer::bench_train::bench_train(config, steps, device.as_deref())
            })
        }
        Command::Bench(BenchCommand::Model {
            layers,
            d_model,
            heads,
            context,
            batch,
            device,
            iters,
            replicas,
            decode_steps,
            dtype,
            decode_batch,
            peak_tflops,
            attention_iters,
            plan,
            set,
            device_memory,
            kernels,
        }) => {
            if let Some(path) = plan {
                let config: trainer::Config = config::load(&path, &set)?;
                let devices = if device_memory.is_empty() {
                    trainer::memory_plan::DEVICE_SIZES_GIB
                        .iter()
                        .map(|g| g * 1024f64.powi(3))
                        .collect()
                } else {
                    device_memory
                        .iter()
                        .map(|d| trainer::memory_plan::parse_size(d))
                        .collect::<anyhow::Result<Vec<f64>>>()
                        .map_err(|e| UsageError(format!("--device-memory: {e}")))?
                };
                let plan = trainer::memory_plan::plan(&config)
                    .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
                print!("{}", trainer::memory_plan::to_text(&plan, &devices));
                print_json(&trainer::memory_plan::to_json(&config, &plan, &devices));
                return Ok(());
            }
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
                train_replicas: replicas,
                decode_steps,
                decode_batch,
                peak_tflops,
                attention_iters,
                ..agent::BenchModelOptions::default()
            };
            bench_with_kernels(kernels, || agent::bench_model(&opts))
        }
    }
}
