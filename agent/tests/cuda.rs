//! CUDA checks (`cargo test -p agent --release --features cuda -- --include-ignored`):
//! decode == forward on the GPU in fp32 and bf16, and the 64k benchmark of ReLIC's small
//! model in bf16.
#![cfg(feature = "cuda")]

mod common;

use agent::{
    bench_model, ActorCritic, BenchModelOptions, DType, KvCache, ModelConfig, PosEncoding, Sink,
    SinkInit,
};
use common::*;
use tch::{nn, Device, Kind};

fn decode_vs_forward(dtype: DType) -> f64 {
    let device = Device::Cuda(0);
    let sink = Sink::SinkKv {
        k: SinkInit::Learned,
        v: SinkInit::Zero,
    };
    let cfg = ModelConfig {
        dtype,
        ..tiny(PosEncoding::EpisodeRope, sink)
    };
    let mut vs = nn::VarStore::new(device);
    let model = ActorCritic::new(&vs.root(), &cfg, &spec()).unwrap();
    scramble(&vs);
    vs.set_kind(dtype.kind());
    let x = cat(&[&trial(40, 9, &spec()), &trial(40, 9, &spec())], 0).to_device(device);
    let (full, _) = model.forward(&x, false).unwrap();
    let mut cache = KvCache::new(&cfg, 2, 64, device).unwrap();
    let (stepped, _) = model.prefill(&mut cache, &x, 1).unwrap();
    let scale = full.abs().max().double_value(&[]).max(1.0);
    max_diff(&full, &stepped) / scale
}

#[test]
fn cuda_decode_equals_forward_fp32() {
    tch::manual_seed(0);
    let err = decode_vs_forward(DType::F32);
    assert!(err < 1e-3, "relative error {err}");
}

#[test]
fn cuda_decode_equals_forward_bf16() {
    tch::manual_seed(0);
    let err = decode_vs_forward(DType::Bf16);
    assert!(err < 5e-2, "relative error {err}");
}

#[test]
fn cuda_backward_in_bf16() {
    let device = Device::Cuda(0);
    let cfg = ModelConfig {
        dtype: DType::Bf16,
        ..ModelConfig::relic_small()
    };
    let mut vs = nn::VarStore::new(device);
    let model = ActorCritic::new(&vs.root(), &cfg, &spec()).unwrap();
    vs.set_kind(Kind::BFloat16);
    let x = trial(4096, 500, &spec()).to_device(device);
    let (logits, value) = model.forward(&x, true).unwrap();
    (logits.mean(Kind::Float) + value.mean(Kind::Float)).backward();
    let g: f64 = vs
        .trainable_variables()
        .iter()
        .map(|v| v.grad().abs().sum(Kind::Float).double_value(&[]))
        .sum();
    assert!(g.is_finite() && g > 0.0);
}

/// ReLIC small (4 layers, 8 heads, width 256) at 64k context in bf16.
#[test]
#[ignore = "benchmark; run by hand on a GPU machine"]
fn cuda_bench_relic_small_64k() {
    let opts = BenchModelOptions {
        layers: 4,
        d_model: 256,
        heads: 8,
        context: 65_536,
        batch: 1,
        device: "cuda".into(),
        train_warmup: 1,
        train_iters: 3,
        decode_steps: 256,
        ..BenchModelOptions::default()
    };
    println!("{}", bench_model(&opts).unwrap());
    let decode = BenchModelOptions {
        batch: 16,
        train_iters: 0,
        ..opts
    };
    println!("{}", bench_model(&decode).unwrap());
}
