//! Criterion benchmarks of the tiny ReLIC policy (`ModelConfig::default()`: 2 layers, width 64,
//! 8 heads, EpisodeRope, SinkKv { k: Learned, v: Zero }; 16-d observations, 7 actions) on the
//! CPU in f32:
//!
//! - `decode/{fused,libtorch}/ctx{512,1024}_threads{1,2}`: one KV-cache decode step of 64 env
//!   slots whose caches hold `ctx - 64` tokens (the window fills during the run, as in
//!   `icrl bench model`); throughput in env steps.
//! - `train_step/ctx512_batch16`: forward over 16 trials of 512 steps, loss
//!   `mean(logits) + mean(value)`, backward, gradients zeroed; throughput in tokens.
//!
//! `cargo bench -p agent --bench policy` (`-- --quick` for a rougher run, a filter such as
//! `decode/fused` to run a part). Thread counts set libtorch's intra-op threads and the fused
//! decoder's shards alike.

use std::time::Duration;

use agent::{ActorCritic, FusedDecoder, KvCache, ModelConfig, ObsSpec, StepInputs};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tch::{nn, Device, Kind, Tensor};

const ENVS: usize = 64;

fn spec() -> ObsSpec {
    ObsSpec {
        vector_dim: 16,
        image: None,
        num_actions: 7,
    }
}

fn model_config() -> ModelConfig {
    ModelConfig {
        depth_dropout: 0.0,
        ..ModelConfig::default()
    }
}

/// Random inputs `[b, t]` in episodes of 500 steps.
fn inputs(b: i64, t: i64) -> StepInputs {
    let time = Tensor::arange(t, (Kind::Int64, Device::Cpu));
    StepInputs {
        vector: Tensor::randn([b, t, 16], (Kind::Float, Device::Cpu)),
        image: None,
        prev_action: Tensor::randint(8, [b, t], (Kind::Int64, Device::Cpu)),
        prev_reward: Tensor::randn([b, t], (Kind::Float, Device::Cpu)),
        episode_index: time
            .floor_divide_scalar(500)
            .expand([b, t], true)
            .contiguous(),
        step_in_episode: time.remainder(500).expand([b, t], true).contiguous(),
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(ENVS as u64));
    let cfg = model_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = ActorCritic::new(&vs.root(), &cfg, &spec()).expect("model");
    let x = inputs(ENVS as i64, 1);
    for context in [512usize, 1024] {
        for threads in [1usize, 2] {
            tch::set_num_threads(threads as i32);
            let id = format!("ctx{context}_threads{threads}");
            let mut fused = FusedDecoder::new(&model, ENVS, context, threads).expect("decoder");
            let mut cache = KvCache::new(&cfg, ENVS, context, Device::Cpu).expect("cache");
            group.bench_function(BenchmarkId::new("fused", &id), |b| {
                b.iter(|| {
                    if fused.lengths()[0] as usize >= context {
                        fused.fill_for_benchmark(context - 64).expect("fill");
                    }
                    let (logits, _) = fused.decode(&model, &x).expect("decode");
                    logits[0]
                })
            });
            group.bench_function(BenchmarkId::new("libtorch", &id), |b| {
                b.iter(|| {
                    if cache.lengths()[0] as usize >= context {
                        cache.fill_for_benchmark(context - 64).expect("fill");
                    }
                    model.decode(&mut cache, &x).expect("decode")
                })
            });
        }
    }
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let (batch, context) = (16i64, 512i64);
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements((batch * context) as u64));
    let cfg = model_config();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = ActorCritic::new(&vs.root(), &cfg, &spec()).expect("model");
    let x = inputs(batch, context);
    for threads in [1, 2] {
        tch::set_num_threads(threads);
        let id = format!("ctx{context}_batch{batch}_threads{threads}");
        group.bench_function(id, |b| {
            b.iter(|| {
                let (logits, value) = model.forward(&x, true).expect("forward");
                (logits.mean(Kind::Float) + value.mean(Kind::Float)).backward();
                for mut v in vs.trainable_variables() {
                    v.zero_grad();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, train_step);
criterion_main!(benches);
