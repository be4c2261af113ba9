//! Criterion benchmark of one batched `VecEnv::step` (256 slots, uniformly random actions,
//! observations written into the `StepBatch` as in training) for darkroom, one_room and
//! house_nav (64x64 RGB). Throughput is in env steps (256 per iteration).
//!
//! `cargo bench -p envs` (add `-- --quick` for a faster, rougher run); reports go to
//! `target/criterion/env_step/`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use envs::rng::FastRng;
use envs::{EnvConfig, ObsBatch, Split, StepBatch};

/// Env slots stepped together.
const ENVS: usize = 256;
/// Action batches drawn before timing (cycled through while timing).
const ACTION_BATCHES: usize = 64;
const SEED: u64 = 0;

fn config(name: &str) -> EnvConfig {
    let mut cfg = EnvConfig::from_name(name).expect("known env");
    match &mut cfg {
        EnvConfig::OneRoom(c) => (c.image_height, c.image_width) = (64, 64),
        EnvConfig::HouseNav(c) => (c.image_height, c.image_width) = (64, 64),
        _ => {}
    }
    cfg
}

fn env_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("env_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(ENVS as u64));
    for name in ["darkroom", "one_room", "house_nav"] {
        let cfg = config(name);
        let mut env = cfg.build(SEED, 0, ENVS).expect("build");
        let spec = env.spec().clone();
        // Put every slot on a training task and start its episode, as the sampler does.
        let tasks = env.tasks(Split::Train);
        for slot in 0..ENVS {
            env.set_task(slot, tasks[slot % tasks.len()])
                .expect("set_task");
        }
        let mut obs = ObsBatch::new(&spec, ENVS);
        env.reset(&mut obs);
        let mut out = StepBatch::new(&spec, ENVS);
        let mut rng = FastRng::new(SEED);
        let k = spec.num_actions as u32;
        let actions: Vec<Vec<u32>> = (0..ACTION_BATCHES)
            .map(|_| (0..ENVS).map(|_| rng.below(k)).collect())
            .collect();
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % ACTION_BATCHES;
                env.step(&actions[next], &mut out).expect("step");
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, env_step);
criterion_main!(benches);
