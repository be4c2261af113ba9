//! `icrl bench model`: training throughput (forward + backward over full contexts), decode
//! throughput with the KV cache (libtorch's `decode_*` and, on the CPU in f32, the fused
//! path's `fused_decode_*` on libtorch's thread count), peak memory and the attention backend
//! libtorch picks.

use crate::cache::KvCache;
use crate::config::{DType, ModelConfig, ObsSpec, PosEncoding, Sink, SinkInit};
use crate::fused_decode::FusedDecoder;
use crate::tokens::StepInputs;
use crate::ActorCritic;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// Options of `icrl bench model`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchModelOptions {
    /// Transformer blocks.
    pub layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Gated-MLP width (default 4 x d_model).
    pub mlp_hidden: Option<usize>,
    /// Context length N: tokens per training sequence and KV-cache length when decoding.
    pub context: usize,
    /// Sequences per training batch and env slots when decoding.
    pub batch: usize,
    /// "cpu", "cuda" or "cuda:N".
    pub device: String,
    /// Precision (default: F32 on CPU, Bf16 on CUDA).
    pub dtype: Option<DType>,
    /// Positional encoding of the benchmarked model.
    pub positional: PosEncoding,
    /// Sink variant of the benchmarked model.
    pub sink: Sink,
    /// Untimed training iterations before the timed ones.
    pub train_warmup: usize,
    /// Timed training iterations (0 skips training).
    pub train_iters: usize,
    /// Timed decode steps (one token per env each; 0 skips decoding).
    pub decode_steps: usize,
}

impl Default for BenchModelOptions {
    fn default() -> Self {
        BenchModelOptions {
            layers: 2,
            d_model: 64,
            heads: 8,
            mlp_hidden: None,
            context: 1024,
            batch: 1,
            device: "cpu".into(),
            dtype: None,
            positional: PosEncoding::EpisodeRope,
            sink: Sink::SinkKv {
                k: SinkInit::Learned,
                v: SinkInit::Zero,
            },
            train_warmup: 1,
            train_iters: 2,
            decode_steps: 64,
        }
    }
}

/// Parses "cpu", "cuda" or "cuda:N".
pub fn parse_device(name: &str) -> Result<Device> {
    let device = match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => bail!("unknown device {name:?} (expected cpu, cuda or cuda:N)"),
        },
    };
    if let Device::Cuda(i) = device {
        let n = tch::Cuda::device_count();
        ensure!(
            (i as i64) < n,
            "device {name} requested but {n} CUDA devices are available"
        );
    }
    Ok(device)
}

/// Name of libtorch's SDPA backend id (`at::_fused_sdp_choice`).
fn backend_name(id: i64) -> &'static str {
    match id {
        0 => "math",
        1 => "flash_attention",
        2 => "efficient_attention",
        3 => "cudnn_attention",
        4 => "overrideable",
        _ => "error",
    }
}

/// Process-wide peak resident memory (VmHWM) in bytes, Linux only.
fn cpu_peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets VmHWM to the current resident size (Linux >= 4.0; ignored elsewhere).
fn reset_cpu_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// GPU memory this process holds (the caching allocator keeps its peak reservation), from
/// nvidia-smi; None when it is unavailable.
fn cuda_used_bytes() -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    let me = std::process::id().to_string();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.split(',').next().map(str::trim) == Some(me.as_str()))?;
    let mib: u64 = line.split(',').nth(1)?.trim().parse().ok()?;
    Some(mib * 1024 * 1024)
}

fn peak_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cpu => cpu_peak_bytes(),
        _ => cuda_used_bytes(),
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Random trial inputs `[B, T]`: episodes of 500 steps, 7 actions, 16-d vectors.
fn bench_inputs(b: i64, t: i64, spec: &ObsSpec, device: Device) -> StepInputs {
    let step = Tensor::arange(t, (Kind::Int64, device))
        .remainder(500)
        .expand([b, t], true);
    let episode = Tensor::arange(t, (Kind::Int64, device))
        .floor_divide_scalar(500)
        .expand([b, t], true);
    StepInputs {
        vector: Tensor::randn([b, t, spec.vector_dim as i64], (Kind::Float, device)),
        image: None,
        prev_action: Tensor::randint(spec.num_actions as i64 + 1, [b, t], (Kind::Int64, device)),
        prev_reward: Tensor::randn([b, t], (Kind::Float, device)),
        episode_index: episode.contiguous(),
        step_in_episode: step.contiguous(),
    }
}

/// Runs the model benchmark; returns one JSON object.
pub fn bench_model(opts: &BenchModelOptions) -> Result<serde_json::Value> {
    let device = parse_device(&opts.device)?;
    let dtype = opts.dtype.unwrap_or(if device == Device::Cpu {
        DType::F32
    } else {
        DType::Bf16
    });
    let cfg = ModelConfig {
        layers: opts.layers,
        heads: opts.heads,
        d_model: opts.d_model,
        mlp_hidden: opts.mlp_hidden.unwrap_or(4 * opts.d_model),
        positional: opts.positional,
        sink: opts.sink,
        depth_dropout: 0.0,
        max_positions: opts.context.max(1),
        dtype,
        ..ModelConfig::default()
    };
    cfg.check()?;
    ensure!(
        opts.context > 0 && opts.batch > 0,
        "context and batch must be at least 1"
    );
    let spec = ObsSpec {
        vector_dim: 16,
        image: None,
        num_actions: 7,
    };
    let mut vs = nn::VarStore::new(device);
    let model = ActorCritic::new(&vs.root(), &cfg, &spec)?;
    if dtype == DType::Bf16 {
        vs.set_kind(Kind::BFloat16);
    }
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(|v| v.numel() as i64)
        .sum();
    let (b, n) = (opts.batch as i64, opts.context as i64);
    let mut report = json!({
        "bench": "model", "device": opts.device, "dtype": format!("{dtype:?}"),
        "layers": cfg.layers, "d_model": cfg.d_model, "heads": cfg.heads,
        "mlp_hidden": cfg.mlp_hidden, "context": n, "batch": b, "params": params,
        "positional": format!("{:?}", cfg.positional), "sink": format!("{:?}", cfg.sink),
        "threads": tch::get_num_threads(),
    });

    // Which SDPA kernel libtorch picks for the training call (causal, no mask) and for a
    // decode call (one query, boolean mask).
    let (h, hd) = (cfg.heads as i64, cfg.head_dim() as i64);
    let q = Tensor::zeros([b, h, n, hd], (dtype.kind(), device));
    let train_backend =
        Tensor::internal_fused_sdp_choice(&q, &q, &q, None::<Tensor>, 0.0, true, None, false);
    let q1 = q.narrow(2, 0, 1);
    let mask = Tensor::ones([b, 1, 1, n], (Kind::Bool, device));
    let decode_backend =
        Tensor::internal_fused_sdp_choice(&q1, &q, &q, Some(&mask), 0.0, false, None, false);
    report["attention_backend_train"] = json!(backend_name(train_backend));
    report["attention_backend_decode"] = json!(backend_name(decode_backend));
    drop((q, q1, mask));

    if opts.train_iters > 0 {
        let x = bench_inputs(b, n, &spec, device);
        let train_step = || -> Result<()> {
            let (logits, value) = model.forward(&x, true)?;
            (logits.mean(Kind::Float) + value.mean(Kind::Float)).backward();
            for mut v in vs.trainable_variables() {
                v.zero_grad();
            }
            Ok(())
        };
        reset_cpu_peak();
        for _ in 0..opts.train_warmup {
            train_step().context("training warm-up")?;
        }
        sync(device);
        let start = Instant::now();
        for _ in 0..opts.train_iters {
            train_step().context("training step")?;
        }
        sync(device);
        let secs = start.elapsed().as_secs_f64();
        report["train_seconds_per_iter"] = json!(secs / opts.train_iters as f64);
        report["train_tokens_per_s"] = json!((b * n) as f64 * opts.train_iters as f64 / secs);
        report["train_peak_bytes"] = json!(peak_bytes(device));
    }

    if opts.decode_steps > 0 {
        let steps = opts.decode_steps as i64;
        let mut cache = KvCache::new(&cfg, opts.batch, opts.context, device)?;
        report["kv_cache_bytes"] = json!(cache.memory_bytes());
        // Pretend the cache holds N - steps tokens, then time `steps` single-token decodes,
        // the last one at cache length N.
        cache.fill_for_benchmark((n - steps).max(0) as usize)?;
        let x = bench_inputs(b, 1, &spec, device);
        reset_cpu_peak();
        let _ = model.decode(&mut cache, &x)?; // warm-up
        sync(device);
        let start = Instant::now();
        for _ in 1..steps {
            let _ = model.decode(&mut cache, &x)?;
        }
        sync(device);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let timed = (steps - 1).max(1) as f64;
        report["decode_steps_per_s"] = json!(timed / secs);
        report["decode_env_steps_per_s"] = json!(timed * b as f64 / secs);
        report["decode_peak_bytes"] = json!(peak_bytes(device));
    }

    if opts.decode_steps > 0 && FusedDecoder::supports(&model) {
        // The same decode with the fused CPU path, on libtorch's thread count.
        let steps = opts.decode_steps as i64;
        let threads = tch::get_num_threads().max(1) as usize;
        let mut fused = FusedDecoder::new(&model, opts.batch, opts.context, threads)?;
        fused.fill_for_benchmark((n - steps).max(0) as usize)?;
        let x = bench_inputs(b, 1, &spec, device);
        fused.decode(&model, &x)?; // warm-up
        let start = Instant::now();
        for _ in 1..steps {
            fused.decode(&model, &x)?;
        }
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let timed = (steps - 1).max(1) as f64;
        report["fused_decode_threads"] = json!(fused.threads());
        report["fused_decode_steps_per_s"] = json!(timed / secs);
        report["fused_decode_env_steps_per_s"] = json!(timed * b as f64 / secs);
        if let Some(libtorch) = report["decode_steps_per_s"].as_f64() {
            report["fused_over_libtorch_decode"] = json!(timed / secs / libtorch);
        }
    }
    Ok(report)
}
