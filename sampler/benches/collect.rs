//! Criterion benchmark of `Sampler::collect`: 64 steps of darkroom at 256 env slots with
//! `RandomPolicy` into `RolloutStorage` (CPU), sync mode, 1 and 2 worker threads. Starting
//! trials is not timed. Throughput is in env steps (64 * 256 per iteration).
//!
//! `cargo bench -p sampler` (add `-- --quick` for a faster, rougher run); reports go to
//! `target/criterion/collect/`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use envs::{EnvConfig, Split};
use rand::SeedableRng;
use sampler::{RandomPolicy, RolloutStorage, Sampler, SamplerConfig, SamplerMode};

/// Env slots.
const ENVS: usize = 256;
/// Steps per slot in one timed `collect`.
const STEPS: usize = 64;
/// Trial length (storage size); darkroom_relic's rollout length.
const ROLLOUT_LEN: usize = 512;
const SEED: u64 = 0;

fn collect(c: &mut Criterion) {
    let mut group = c.benchmark_group("collect");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements((STEPS * ENVS) as u64));
    let env = EnvConfig::from_name("darkroom").expect("known env");
    for threads in [1usize, 2] {
        let cfg = SamplerConfig {
            threads,
            mode: SamplerMode::Sync,
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::new(&env, &cfg, ENVS, SEED).expect("sampler");
        let spec = sampler.spec().clone();
        let mut storage =
            RolloutStorage::new(&spec, ENVS, ROLLOUT_LEN, tch::Device::Cpu).expect("storage");
        let mut policy = RandomPolicy::new(spec.num_actions, ENVS, SEED).expect("policy");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
        let mut started = false;
        let id = BenchmarkId::new("darkroom_256", format!("threads_{threads}"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    // A new trial whenever storage is full (untimed), as in `icrl bench sampler`.
                    if !started || storage.len + STEPS > storage.rollout_len() {
                        let tasks = sampler.sample_tasks(Split::Train, &mut rng).expect("tasks");
                        sampler
                            .start_trials(&tasks, &mut storage)
                            .expect("start_trials");
                        started = true;
                    }
                    let t0 = Instant::now();
                    sampler
                        .collect(&mut policy, &mut storage, STEPS)
                        .expect("collect");
                    timed += t0.elapsed();
                }
                timed
            })
        });
        sampler.shutdown();
    }
    group.finish();
}

criterion_group!(benches, collect);
criterion_main!(benches);
