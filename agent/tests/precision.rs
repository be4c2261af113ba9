//! bf16 and device checks, one body per check, run on the CPU in every test run and on CUDA
//! when a device exists (skipped with a printed reason otherwise). Tolerances (relative to the
//! largest output magnitude, at least 1):
//! - decode with the KV cache == full forward: 1e-3 in f32, 5e-2 in bf16 (bf16 keeps 8 bits of
//!   mantissa: ~4e-3 per rounding, and 2 layers of attention and MLP compound a few of them);
//! - after a slot reset, decoding a new trial == a fresh cache: same tolerances;
//! - one training step's gradients on CUDA == on the CPU, in f32: 1e-3 (different kernels sum
//!   in different orders).

mod common;

use agent::{ActorCritic, DType, KvCache, ModelConfig, PosEncoding};
use common::*;
use tch::{nn, Device, Kind};

const TOL_F32: f64 = 1e-3;
const TOL_BF16: f64 = 5e-2;

fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => TOL_F32,
        DType::Bf16 => TOL_BF16,
    }
}

/// The CUDA device, or None with the reason printed.
fn cuda_or_skip(test: &str) -> Option<Device> {
    if tch::Cuda::is_available() {
        Some(Device::Cuda(0))
    } else {
        println!("{test}: skipped, no CUDA device (tch::Cuda::is_available() is false)");
        None
    }
}

fn model(device: Device, cfg: &ModelConfig) -> (nn::VarStore, ActorCritic) {
    let mut vs = nn::VarStore::new(device);
    let model = ActorCritic::new(&vs.root(), cfg, &spec()).unwrap();
    scramble(&vs);
    if cfg.dtype != DType::F32 {
        vs.set_kind(cfg.dtype.kind());
    }
    (vs, model)
}

/// Largest relative difference between the full forward and a token-by-token prefill of two
/// 40-step trials, for every sink variant.
fn decode_vs_forward(device: Device, dtype: DType) -> Vec<(String, f64)> {
    sinks()
        .into_iter()
        .map(|sink| {
            tch::manual_seed(0);
            let cfg = ModelConfig {
                dtype,
                ..tiny(PosEncoding::EpisodeRope, sink)
            };
            let (_vs, model) = model(device, &cfg);
            let x = cat(&[&trial(40, 9, &spec()), &trial(40, 9, &spec())], 0).to_device(device);
            let (full, _) = model.forward(&x, false).unwrap();
            let mut cache = KvCache::new(&cfg, 2, 64, device).unwrap();
            let (stepped, _) = model.prefill(&mut cache, &x, 1).unwrap();
            let scale = full.abs().max().double_value(&[]).max(1.0);
            (format!("{sink:?}"), max_diff(&full, &stepped) / scale)
        })
        .collect()
}

/// After a trial of 30 steps and `reset_slot`, a new trial decodes as with a fresh cache.
fn reset_equals_fresh(device: Device, dtype: DType) -> f64 {
    tch::manual_seed(1);
    let cfg = ModelConfig {
        dtype,
        ..tiny(PosEncoding::EpisodeRope, sinks()[2])
    };
    let (_vs, model) = model(device, &cfg);
    let old = trial(30, 7, &spec()).to_device(device);
    let new = trial(20, 7, &spec()).to_device(device);
    let mut used = KvCache::new(&cfg, 1, 64, device).unwrap();
    let _ = model.prefill(&mut used, &old, 4).unwrap();
    used.reset_slot(0).unwrap();
    let (a, _) = model.prefill(&mut used, &new, 1).unwrap();
    let mut fresh = KvCache::new(&cfg, 1, 64, device).unwrap();
    let (b, _) = model.prefill(&mut fresh, &new, 1).unwrap();
    max_diff(&a, &b) / b.abs().max().double_value(&[]).max(1.0)
}

fn check_decode(device: Device, dtype: DType) {
    for (sink, err) in decode_vs_forward(device, dtype) {
        println!("{device:?} {dtype:?} {sink}: decode vs forward relative error {err:.2e}");
        assert!(err < tolerance(dtype), "{sink}: relative error {err}");
    }
    let err = reset_equals_fresh(device, dtype);
    println!("{device:?} {dtype:?}: reset slot vs fresh cache relative error {err:.2e}");
    assert!(err < tolerance(dtype), "reset: relative error {err}");
}

#[test]
fn cpu_decode_equals_forward_in_bf16_for_every_sink() {
    check_decode(Device::Cpu, DType::Bf16);
}

#[test]
fn cpu_bf16_backward_gives_finite_gradients() {
    let cfg = ModelConfig {
        dtype: DType::Bf16,
        ..tiny(PosEncoding::EpisodeRope, sinks()[2])
    };
    let (vs, model) = model(Device::Cpu, &cfg);
    let (logits, value) = model.forward(&trial(64, 9, &spec()), true).unwrap();
    (logits.mean(Kind::Float) + value.mean(Kind::Float)).backward();
    let g: f64 = vs
        .trainable_variables()
        .iter()
        .map(|v| {
            v.grad()
                .to_kind(Kind::Float)
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
        })
        .sum();
    assert!(g.is_finite() && g > 0.0, "gradient norm {g}");
}

#[test]
fn cuda_decode_equals_forward_for_every_sink() {
    let Some(device) = cuda_or_skip("cuda_decode_equals_forward_for_every_sink") else {
        return;
    };
    check_decode(device, DType::F32);
    check_decode(device, DType::Bf16);
}

/// One forward + backward in f32 on the CPU and on CUDA from the same weights and inputs.
#[test]
fn cuda_training_step_matches_cpu_in_f32() {
    let Some(device) = cuda_or_skip("cuda_training_step_matches_cpu_in_f32") else {
        return;
    };
    tch::manual_seed(2);
    let cfg = ModelConfig {
        depth_dropout: 0.0,
        ..tiny(PosEncoding::EpisodeRope, sinks()[2])
    };
    let (cpu_vs, cpu_model) = model(Device::Cpu, &cfg);
    let mut gpu_vs = nn::VarStore::new(device);
    let gpu_model = ActorCritic::new(&gpu_vs.root(), &cfg, &spec()).unwrap();
    gpu_vs.copy(&cpu_vs).unwrap();
    let x = trial(128, 9, &spec());
    let step = |model: &ActorCritic, x: &agent::StepInputs| {
        let (logits, value) = model.forward(x, true).unwrap();
        let loss = logits.log_softmax(-1, Kind::Float).mean(Kind::Float)
            + value.square().mean(Kind::Float);
        loss.backward();
        loss.double_value(&[])
    };
    let (l_cpu, l_gpu) = (step(&cpu_model, &x), step(&gpu_model, &x.to_device(device)));
    assert!(
        (l_cpu - l_gpu).abs() <= TOL_F32 * l_cpu.abs().max(1.0),
        "loss {l_cpu} vs {l_gpu}"
    );
    let gpu_vars = gpu_vs.variables();
    for (name, p) in cpu_vs.variables() {
        let (a, b) = (p.grad(), gpu_vars[&name].grad().to_device(Device::Cpu));
        let scale = a.abs().max().double_value(&[]).max(1e-3);
        let err = max_diff(&a, &b) / scale;
        assert!(err < TOL_F32, "{name}: gradient relative error {err}");
    }
}

/// The memory plan counts the parameters exactly, for vector and image observations and every
/// sink and position variant.
#[test]
fn memory_plan_counts_every_parameter() {
    use agent::memory_plan::parameter_count;
    let image = agent::ObsSpec {
        vector_dim: 9,
        image: Some((20, 18)),
        num_actions: 4,
    };
    for spec in [spec(), image] {
        for sink in sinks() {
            for positional in [
                PosEncoding::None,
                PosEncoding::Learned,
                PosEncoding::EpisodeRope,
            ] {
                let cfg = tiny(positional, sink);
                let vs = nn::VarStore::new(Device::Cpu);
                let _model = ActorCritic::new(&vs.root(), &cfg, &spec).unwrap();
                let real: i64 = vs
                    .trainable_variables()
                    .iter()
                    .map(|v| v.numel() as i64)
                    .sum();
                assert_eq!(
                    parameter_count(&cfg, &spec),
                    real as u64,
                    "{sink:?} {positional:?} {spec:?}"
                );
            }
        }
    }
}
