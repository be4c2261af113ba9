//! `icrl bench model`: training throughput (forward + backward over full contexts), decode
//! throughput with the KV cache (libtorch's `decode_*` and, on the CPU in f32, the fused
//! path's `fused_decode_*` on libtorch's thread count), peak memory and the attention backend
//! libtorch picks.

use crate::cache::KvCache;
use crate::config::{DType, ModelConfig, ObsSpec, PosEncoding, Sink, SinkInit};
use crate::fused_decode::FusedDecoder;
use crate::memory_plan::ModelMemory;
use crate::replicas::Replicas;
use crate::tokens::StepInputs;
use crate::transformer::{causal_attention, SinkKv};
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
    /// Data-parallel replicas of the training step on CPU ([`Replicas`]; 1 = one forward
    /// over the batch with libtorch's threads).
    pub train_replicas: usize,
    /// Timed decode steps (one token per env each; 0 skips decoding).
    pub decode_steps: usize,
    /// Env slots when decoding (default: `batch`).
    pub decode_batch: Option<usize>,
    /// The device's dense peak in TFLOP/s for the model's dtype (e.g. 989 for an H100/H200
    /// in bf16); when given, achieved FLOP/s are also reported as a fraction of it.
    pub peak_tflops: Option<f64>,
    /// Timed repetitions of the attention micro-benchmark (0 skips it).
    pub attention_iters: usize,
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
            train_replicas: 1,
            decode_steps: 64,
            decode_batch: None,
            peak_tflops: None,
            attention_iters: 3,
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

/// Resident memory now (VmRSS) in bytes, Linux only.
fn cpu_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets VmHWM to the current resident size (Linux >= 4.0; ignored elsewhere).
fn reset_cpu_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Memory the process holds for tensors now: the CUDA allocator's live bytes, or on the CPU
/// the resident size (libtorch's CPU allocator returns large blocks to the system at once).
fn memory_now(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(i) => crate::cuda_memory::stats(i).map(|m| m.allocated),
        _ => cpu_resident_bytes(),
    }
}

/// Starts a new peak: VmHWM on the CPU, the allocator's peak on CUDA.
fn reset_peak(device: Device) {
    match device {
        Device::Cuda(i) => {
            crate::cuda_memory::reset_peak(i);
        }
        _ => reset_cpu_peak(),
    }
}

/// The peak since [`reset_peak`]: VmHWM on the CPU, the allocator's peak of live tensor bytes
/// on CUDA (`torch.cuda.max_memory_allocated`), else what nvidia-smi says the process holds.
fn peak_since_reset(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(i) => crate::cuda_memory::stats(i)
            .map(|m| m.peak_allocated)
            .or_else(cuda_used_bytes),
        _ => cpu_peak_bytes(),
    }
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
    peak_since_reset(device)
}

/// Forward FLOPs of one sequence of `t` tokens through the trunk and heads (multiply-adds
/// count 2): the projections and MLP (2 x matmul parameters per token) and causal attention
/// (QK^T and PV over the lower triangle: 2 T^2 D per layer).
pub fn forward_flops(cfg: &ModelConfig, actions: usize, t: f64) -> f64 {
    let (d, m, l) = (cfg.d_model as f64, cfg.mlp_hidden as f64, cfg.layers as f64);
    let matmul_params = l * (4.0 * d * d + 3.0 * d * m) + d * (actions as f64 + 1.0);
    2.0 * matmul_params * t + l * 2.0 * t * t * d
}

/// FLOPs of causal attention over `b` sequences of `t` tokens, `h` heads of `hd`: forward
/// `2 b h t^2 hd` (half of QK^T and PV); forward + backward 3.5 x that (the backward
/// recomputes the scores: 2.5 x forward, FlashAttention-2's count). The same convention as
/// bench/reference/sdpa_bench.py.
pub fn attention_flops(b: f64, h: f64, t: f64, hd: f64, backward: bool) -> f64 {
    let forward = 2.0 * b * h * t * t * hd;
    if backward {
        3.5 * forward
    } else {
        forward
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
    // Memory before the model exists: the measured peaks below are deltas from here.
    if device.is_cuda() {
        let _ = Tensor::zeros([1], (Kind::Float, device)); // initialise the CUDA allocator
        sync(device);
    }
    let memory_base = memory_now(device);
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

    let memory = ModelMemory::of(&cfg, &spec);
    report["memory_base_bytes"] = json!(memory_base);
    let mut train_seconds_per_iter = None;
    if opts.train_iters > 0 {
        let x = bench_inputs(b, n, &spec, device);
        // With replicas, each shard backpropagates its mean loss times its share of the batch
        // on its own copy, and the gradients are summed into the master's: the same gradient.
        let shards = match opts.train_replicas.min(opts.batch) {
            r if r > 1 && device == Device::Cpu => r,
            _ => 1,
        };
        let mut replicas = if shards > 1 {
            let build = |vs: &mut nn::VarStore| -> Result<ActorCritic> {
                let model = ActorCritic::new(&vs.root(), &cfg, &spec)?;
                if dtype == DType::Bf16 {
                    vs.set_kind(Kind::BFloat16);
                }
                Ok(model)
            };
            Some(Replicas::new(&vs, shards, build)?)
        } else {
            None
        };
        report["train_replicas"] = json!(shards);
        let loss = |model: &ActorCritic, x: &StepInputs, share: f64| -> Result<()> {
            let (logits, value) = model.forward(x, true)?;
            ((logits.mean(Kind::Float) + value.mean(Kind::Float)) * share).backward();
            Ok(())
        };
        let mut train_step = || -> Result<()> {
            match replicas.as_mut() {
                None => loss(&model, &x, 1.0)?,
                Some(r) => {
                    let jobs: Vec<_> = r
                        .shards(b)
                        .into_iter()
                        .map(|(start, len)| (x.narrow_rows(start, len), len as f64 / b as f64))
                        .collect();
                    r.run(jobs, |m, (part, share)| loss(m, &part, share))?;
                    r.add_grads_to_master(shards);
                }
            }
            for mut v in vs.trainable_variables() {
                v.zero_grad();
            }
            Ok(())
        };
        reset_peak(device);
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
        let per_iter = secs / opts.train_iters as f64;
        train_seconds_per_iter = Some(per_iter);
        report["train_seconds_per_iter"] = json!(per_iter);
        report["train_tokens_per_s"] = json!((b * n) as f64 * opts.train_iters as f64 / secs);
        let peak = peak_bytes(device);
        report["train_peak_bytes"] = json!(peak);
        // The memory plan of this step: parameters and their gradients, the inputs (92 bytes
        // a token: 16 f32 features, reward, three i64 fields), the activations kept for
        // backward and one block's backward temporaries.
        let tokens = (b * n) as f64;
        let plan = 2.0 * memory.parameter_bytes
            + 92.0 * tokens
            + memory.activations(cfg.layers, tokens)
            + memory.backward_working * tokens;
        report["plan_train_bytes"] = json!(plan.round() as u64);
        if let (Some(peak), Some(base)) = (peak, memory_base) {
            let delta = peak.saturating_sub(base);
            report["train_peak_delta_bytes"] = json!(delta);
            report["train_peak_over_plan"] = json!(delta as f64 / plan);
        }
        // Model FLOPs: forward + backward = 3 x forward (the usual MFU convention).
        let flops = 3.0 * b as f64 * forward_flops(&cfg, spec.num_actions, n as f64);
        report["train_flops_per_iter"] = json!(flops);
        report["train_tflops_per_s"] = json!(flops / per_iter / 1e12);
        if let Some(peak) = opts.peak_tflops {
            report["peak_tflops_used"] = json!(peak);
            report["train_fraction_of_peak"] = json!(flops / per_iter / 1e12 / peak);
        }
    }

    if opts.attention_iters > 0 {
        attention_benchmark(
            opts,
            &cfg,
            (b, n),
            (dtype.kind(), device),
            train_seconds_per_iter,
            &mut report,
        )
        .context("attention micro-benchmark")?;
    }

    let decode_batch = opts.decode_batch.unwrap_or(opts.batch);
    let b = decode_batch as i64;
    report["decode_batch"] = json!(decode_batch);
    if opts.decode_steps > 0 {
        let steps = opts.decode_steps as i64;
        let mut cache = KvCache::new(&cfg, decode_batch, opts.context, device)?;
        report["plan_kv_cache_bytes"] = json!((decode_batch as f64
            * (memory.kv_per_token * n as f64 + memory.kv_per_slot))
            .round() as u64);
        report["kv_cache_bytes"] = json!(cache.memory_bytes());
        // Pretend the cache holds N - steps tokens, then time `steps` single-token decodes,
        // the last one at cache length N.
        cache.fill_for_benchmark((n - steps).max(0) as usize)?;
        let x = bench_inputs(b, 1, &spec, device);
        reset_peak(device);
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
        let mut fused = FusedDecoder::new(&model, decode_batch, opts.context, threads)?;
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

/// Times the trunk's attention (`causal_attention`, with the model's sink slot) forward and
/// forward + backward on `[b, H, n, hd]` (`(b, n)` = `batch_and_len`) with tensor options
/// `(kind, device)`, and plain SDPA on the same shapes; writes
/// the rates (same FLOP convention as bench/reference/sdpa_bench.py) and the attention share
/// of the training step (layers x attention time / step time) into `report`.
fn attention_benchmark(
    opts: &BenchModelOptions,
    cfg: &ModelConfig,
    (b, n): (i64, i64),
    (kind, device): (Kind, Device),
    train_seconds_per_iter: Option<f64>,
    report: &mut serde_json::Value,
) -> Result<()> {
    let (h, hd) = (cfg.heads as i64, cfg.head_dim() as i64);
    let leaf = || Tensor::randn([b, h, n, hd], (kind, device)).set_requires_grad(true);
    let (q, k, v) = (leaf(), leaf(), leaf());
    let sink = cfg.sink.has_slot().then(|| SinkKv {
        k: Tensor::zeros([h, hd], (kind, device)),
        v: Tensor::zeros([h, hd], (kind, device)),
    });
    let time = |f: &dyn Fn()| -> f64 {
        f(); // warm-up
        sync(device);
        let start = Instant::now();
        for _ in 0..opts.attention_iters {
            f();
        }
        sync(device);
        start.elapsed().as_secs_f64() / opts.attention_iters as f64
    };
    let ours_forward = || {
        let _guard = tch::no_grad_guard();
        let _ = causal_attention(&q, &k, &v, sink.as_ref(), None);
    };
    let ours_backward = || {
        causal_attention(&q, &k, &v, sink.as_ref(), None)
            .sum(Kind::Float)
            .backward();
    };
    let plain_forward = || {
        let _guard = tch::no_grad_guard();
        let _ = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
    };
    let (bf, hf, nf, hdf) = (b as f64, h as f64, n as f64, hd as f64);
    let fwd_flops = attention_flops(bf, hf, nf, hdf, false);
    let both_flops = attention_flops(bf, hf, nf, hdf, true);
    let t_fwd = time(&ours_forward);
    let t_both = time(&ours_backward);
    let t_plain = time(&plain_forward);
    report["attention_shape"] = json!([b, h, n, hd]);
    report["attention_forward_seconds"] = json!(t_fwd);
    report["attention_forward_tflops_per_s"] = json!(fwd_flops / t_fwd / 1e12);
    report["attention_fwd_bwd_seconds"] = json!(t_both);
    report["attention_fwd_bwd_tflops_per_s"] = json!(both_flops / t_both / 1e12);
    report["sdpa_plain_forward_tflops_per_s"] = json!(fwd_flops / t_plain / 1e12);
    if let Some(step) = train_seconds_per_iter {
        report["attention_share_of_train_step"] =
            json!((cfg.layers as f64 * t_both / step).min(1.0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(batch: usize, replicas: usize) -> serde_json::Value {
        bench_model(&BenchModelOptions {
            layers: 1,
            d_model: 16,
            heads: 2,
            context: 12,
            batch,
            train_iters: 1,
            train_replicas: replicas,
            decode_steps: 0,
            attention_iters: 0,
            ..BenchModelOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn the_training_bench_runs_on_replicas_at_most_one_per_sequence() {
        for (batch, replicas, used) in [(3, 2, 2), (2, 4, 2), (1, 3, 1), (3, 1, 1)] {
            let report = tiny(batch, replicas);
            assert_eq!(report["train_replicas"], json!(used), "{report}");
            let rate = report["train_tokens_per_s"].as_f64().unwrap();
            assert!(rate.is_finite() && rate > 0.0, "{report}");
        }
    }
}
