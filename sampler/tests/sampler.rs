//! Acceptance tests of the sampler: determinism across threads and modes, trial and episode
//! bookkeeping across auto-resets, pause/resume, faults, the episode shuffle.

use anyhow::Result;
use envs::{EnvConfig, EnvError, ObsBatch, Split, StepBatch, TaskId, VecEnv};
use rand::SeedableRng;
use sampler::{
    Policy, PolicyOutput, RandomPolicy, RolloutStorage, Sampler, SamplerConfig, SamplerMode,
    ShardBuilder,
};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Every field of a storage, as host vectors (columns `[0, len]` / `[0, len)`).
#[derive(Debug, PartialEq)]
struct Snapshot {
    len: usize,
    fields: Vec<(String, Vec<f64>)>,
}

fn host(x: &Tensor) -> Vec<f64> {
    let x = x.to_kind(Kind::Double).contiguous().flatten(0, -1);
    let n = x.numel();
    let mut v = vec![0f64; n];
    x.copy_data(&mut v, n);
    v
}

fn snapshot(s: &RolloutStorage) -> Snapshot {
    let tok = (s.len + 1) as i64;
    let out = s.len as i64;
    let mut fields = vec![];
    let mut push =
        |name: &str, x: &Tensor, n: i64| fields.push((name.to_string(), host(&x.narrow(1, 0, n))));
    push("vector", &s.vector, tok);
    if let Some(i) = &s.image {
        push("image", i, tok);
    }
    push("prev_action", &s.prev_action, tok);
    push("prev_reward", &s.prev_reward, tok);
    push("episode_index", &s.episode_index, tok);
    push("step_in_episode", &s.step_in_episode, tok);
    push("action", &s.action, out);
    push("logprob", &s.logprob, out);
    push("value", &s.value, out);
    push("reward", &s.reward, out);
    push("terminated", &s.terminated, out);
    push("truncated", &s.truncated, out);
    push("success", &s.success, out);
    if let Some(x) = &s.next_vector {
        push("next_vector", x, out);
    }
    Snapshot { len: s.len, fields }
}

fn tasks_for(sampler: &Sampler, seed: u64) -> Vec<TaskId> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    sampler.sample_tasks(Split::Train, &mut rng).unwrap()
}

/// A random policy seen only through `act` (no worker-side fast path, lands every step).
struct StepByStep(RandomPolicy);

impl Policy for StepByStep {
    fn act(
        &mut self,
        storage: &RolloutStorage,
        t: usize,
        slots: Range<usize>,
    ) -> Result<PolicyOutput> {
        self.0.act(storage, t, slots)
    }
}

/// How the sampler under test runs.
#[derive(Debug, Clone, Copy)]
struct Setup {
    threads: usize,
    mode: SamplerMode,
    /// Force the staging buffers.
    staged: bool,
    /// Let the random policy act on the worker threads (its fast path); false: through
    /// `act` only ([`StepByStep`]).
    local: bool,
}

impl Setup {
    fn new(threads: usize, mode: SamplerMode) -> Self {
        Setup {
            threads,
            mode,
            staged: false,
            local: false,
        }
    }
}

/// Runs `chunks` collects with a random policy and returns the storage and all episodes.
fn run(
    env: &EnvConfig,
    setup: Setup,
    b: usize,
    t: usize,
    chunks: &[usize],
) -> (Snapshot, Vec<sampler::EpisodeStats>) {
    let Setup {
        threads,
        mode,
        staged,
        local,
    } = setup;
    let cfg = SamplerConfig {
        threads,
        mode,
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::new(env, &cfg, b, 7).unwrap();
    sampler.force_staging(staged);
    let mut storage = RolloutStorage::with_next_obs(sampler.spec(), b, t, Device::Cpu).unwrap();
    let mut random = RandomPolicy::new(sampler.spec().num_actions, b, 11).unwrap();
    let mut stepwise = StepByStep(random.clone());
    let policy: &mut dyn Policy = if local { &mut random } else { &mut stepwise };
    let tasks = tasks_for(&sampler, 3);
    sampler.start_trials(&tasks, &mut storage).unwrap();
    let mut episodes = vec![];
    for &n in chunks {
        let stats = sampler.collect(policy, &mut storage, n).unwrap();
        assert_eq!(stats.steps, n);
        assert_eq!(stats.env_steps, n * b);
        episodes.extend(stats.episodes);
    }
    (snapshot(&storage), episodes)
}

#[test]
fn storage_identical_for_threads_and_modes() {
    for name in ["darkroom", "key_to_door"] {
        let env = EnvConfig::from_name(name).unwrap();
        let chunks = [37, 100, 113];
        let reference = run(&env, Setup::new(1, SamplerMode::Sync), 12, 250, &chunks);
        assert_eq!(reference.0.len, 250);
        assert!(!reference.1.is_empty());
        for threads in [1, 2, 4] {
            for mode in [SamplerMode::Sync, SamplerMode::DoubleBuffered] {
                for (staged, local) in [(false, false), (true, false), (false, true)] {
                    let setup = Setup {
                        staged,
                        local,
                        ..Setup::new(threads, mode)
                    };
                    let got = run(&env, setup, 12, 250, &chunks);
                    assert!(
                        got == reference,
                        "{name}: threads {threads}, {mode:?}, staged {staged}, local {local} differ"
                    );
                }
            }
        }
        // One collect of everything gives the same as three.
        assert!(
            run(
                &env,
                Setup {
                    local: true,
                    ..Setup::new(2, SamplerMode::Sync)
                },
                12,
                250,
                &[250]
            ) == reference
        );
        assert!(run(&env, Setup::new(2, SamplerMode::Sync), 12, 250, &[250]) == reference);
    }
}

/// Checks the token/outcome invariants of every row and returns per row the episode
/// boundaries (columns where an episode ended).
fn check_invariants(s: &RolloutStorage, horizon: usize) -> Vec<Vec<usize>> {
    let b = s.num_envs();
    let (tok, out) = (s.len + 1, s.len);
    let pa = host(&s.prev_action.narrow(1, 0, tok as i64));
    let pr = host(&s.prev_reward.narrow(1, 0, tok as i64));
    let ep = host(&s.episode_index.narrow(1, 0, tok as i64));
    let st = host(&s.step_in_episode.narrow(1, 0, tok as i64));
    let a = host(&s.action.narrow(1, 0, out as i64));
    let r = host(&s.reward.narrow(1, 0, out as i64));
    let term = host(&s.terminated.narrow(1, 0, out as i64));
    let trunc = host(&s.truncated.narrow(1, 0, out as i64));
    let mut ends = vec![];
    for row in 0..b {
        let (p, o) = (row * tok, row * out);
        assert_eq!(
            (pa[p], pr[p], ep[p], st[p]),
            (0.0, 0.0, 0.0, 0.0),
            "row {row} column 0"
        );
        let mut row_ends = vec![];
        for c in 0..out {
            let done = term[o + c] != 0.0 || trunc[o + c] != 0.0;
            assert!(!(term[o + c] != 0.0 && trunc[o + c] != 0.0));
            let n = p + c + 1;
            if done {
                row_ends.push(c);
                assert_eq!(
                    (pa[n], pr[n], st[n]),
                    (0.0, 0.0, 0.0),
                    "row {row} after the end at {c}"
                );
                assert_eq!(ep[n], ep[p + c] + 1.0);
            } else {
                assert_eq!(pa[n], a[o + c] + 1.0, "row {row} col {c}");
                assert_eq!(pr[n], r[o + c]);
                assert_eq!(st[n], st[p + c] + 1.0);
                assert_eq!(ep[n], ep[p + c]);
            }
            assert!((st[p + c] as usize) < horizon);
            // Truncation exactly at the horizon.
            assert_eq!(
                trunc[o + c] != 0.0,
                st[p + c] as usize == horizon - 1 && term[o + c] == 0.0
            );
        }
        ends.push(row_ends);
    }
    ends
}

#[test]
fn episode_indices_across_auto_resets() {
    // Dark Room: truncation every 100 steps, never terminal.
    let env = EnvConfig::from_name("darkroom").unwrap();
    let mut sampler = Sampler::new(
        &env,
        &SamplerConfig {
            threads: 2,
            mode: SamplerMode::Sync,
            ..SamplerConfig::default()
        },
        6,
        1,
    )
    .unwrap();
    let mut storage = RolloutStorage::new(sampler.spec(), 6, 350, Device::Cpu).unwrap();
    let mut policy = RandomPolicy::new(5, 6, 2).unwrap();
    let tasks = tasks_for(&sampler, 1);
    sampler.start_trials(&tasks, &mut storage).unwrap();
    let stats = sampler.collect(&mut policy, &mut storage, 350).unwrap();
    let ends = check_invariants(&storage, 100);
    for row in &ends {
        assert_eq!(row, &vec![99, 199, 299]);
    }
    assert_eq!(stats.episodes.len(), 18);
    for e in &stats.episodes {
        assert_eq!(e.length, 100);
        assert!(!e.terminated);
        assert_eq!(e.end_step, 100 * e.episode_index + 99);
        assert_eq!(e.task, tasks[e.slot]);
        // The return is the sum of the episode's rewards in storage.
        let r = host(&storage.reward.get(e.slot as i64).narrow(
            0,
            (e.end_step + 1 - e.length) as i64,
            e.length as i64,
        ));
        assert!((r.iter().sum::<f64>() - e.ret).abs() < 1e-9);
    }
    let ep = host(&storage.episode_index.narrow(1, 350, 1));
    assert!(ep.iter().all(|&x| x == 3.0));

    // Key-to-Door: terminates at the door (with the key); horizon 50.
    let env = EnvConfig::from_name("key_to_door").unwrap();
    let b = 64;
    let mut sampler = Sampler::new(
        &env,
        &SamplerConfig {
            threads: 2,
            mode: SamplerMode::DoubleBuffered,
            ..SamplerConfig::default()
        },
        b,
        5,
    )
    .unwrap();
    let mut storage = RolloutStorage::new(sampler.spec(), b, 400, Device::Cpu).unwrap();
    let mut policy = RandomPolicy::new(5, b, 9).unwrap();
    let tasks = tasks_for(&sampler, 2);
    sampler.start_trials(&tasks, &mut storage).unwrap();
    let stats = sampler.collect(&mut policy, &mut storage, 400).unwrap();
    let ends = check_invariants(&storage, 50);
    let terminated: Vec<_> = stats.episodes.iter().filter(|e| e.terminated).collect();
    assert!(!terminated.is_empty(), "random play never reached the door");
    for e in &terminated {
        assert!(e.success && e.length < 50 || e.length == 50);
        assert!((e.ret - 2.0).abs() < 1e-9, "key + door pay 1 each: {e:?}");
    }
    let n_ends: usize = ends.iter().map(|r| r.len()).sum();
    assert_eq!(n_ends, stats.episodes.len());
}

/// A deterministic policy that reads the newest token from storage: action from the
/// observation and the step counters.
struct ObsPolicy {
    salt: i64,
}

impl Policy for ObsPolicy {
    fn act(
        &mut self,
        storage: &RolloutStorage,
        t: usize,
        slots: Range<usize>,
    ) -> Result<PolicyOutput> {
        let x = storage.inputs_rows(t, t + 1, slots.clone())?;
        let v = host(&x.vector);
        let st = host(&x.step_in_episode);
        let ep = host(&x.episode_index);
        let d = storage.vector_dim();
        let actions: Vec<u32> = (0..slots.len())
            .map(|i| {
                let s: f64 = v[i * d..(i + 1) * d].iter().sum::<f64>()
                    + 3.0 * st[i]
                    + 7.0 * ep[i]
                    + (slots.start + i) as f64;
                ((s as i64 + self.salt).rem_euclid(5)) as u32
            })
            .collect();
        Ok(PolicyOutput {
            logprob: actions.iter().map(|&a| -(a as f32)).collect(),
            value: actions.iter().map(|&a| a as f32 * 0.5).collect(),
            actions,
        })
    }
}

#[test]
fn pause_and_resume_lose_and_repeat_nothing() {
    let env = EnvConfig::from_name("key_to_door").unwrap();
    for mode in [SamplerMode::Sync, SamplerMode::DoubleBuffered] {
        let cfg = SamplerConfig {
            threads: 2,
            mode,
            ..SamplerConfig::default()
        };
        let go = |chunks: &[usize], switch_at: Option<usize>| {
            let mut sampler = Sampler::new(&env, &cfg, 8, 4).unwrap();
            let mut storage = RolloutStorage::new(sampler.spec(), 8, 100, Device::Cpu).unwrap();
            let tasks = tasks_for(&sampler, 4);
            sampler.start_trials(&tasks, &mut storage).unwrap();
            let mut p1 = ObsPolicy { salt: 0 };
            let mut p2 = ObsPolicy { salt: 1 };
            let mut done = 0;
            for &n in chunks {
                let policy: &mut dyn Policy = if switch_at.is_some_and(|s| done >= s) {
                    &mut p2
                } else {
                    &mut p1
                };
                sampler.collect(policy, &mut storage, n).unwrap();
                done += n;
                assert_eq!(storage.len, done);
            }
            snapshot(&storage)
        };
        // collect(37) + collect(63) == collect(100).
        assert!(go(&[37, 63], None) == go(&[100], None), "{mode:?}");
        // A policy change at step 37 (the trainer's update) continues from where it paused.
        assert!(
            go(&[37, 63], Some(37)) == go(&[37, 1, 62], Some(37)),
            "{mode:?}"
        );
        assert!(go(&[37, 63], Some(37)) != go(&[100], None));
    }
}

#[test]
fn model_policy_runs_and_refresh_matches_incremental_decoding() {
    use agent::{ActorCritic, ModelConfig};
    let env = EnvConfig::from_name("darkroom").unwrap();
    for mode in [SamplerMode::Sync, SamplerMode::DoubleBuffered] {
        let cfg = SamplerConfig {
            threads: 2,
            mode,
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::new(&env, &cfg, 6, 3).unwrap();
        let spec = sampler.spec().clone();
        tch::manual_seed(0);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let mc = ModelConfig {
            depth_dropout: 0.0,
            ..ModelConfig::default()
        };
        let model = ActorCritic::new(&vs.root(), &mc, &sampler::obs_spec(&spec)).unwrap();
        let tasks = tasks_for(&sampler, 5);
        let go = |sampler: &mut Sampler, pause: bool| {
            let mut storage = RolloutStorage::new(&spec, 6, 120, Device::Cpu).unwrap();
            let mut policy =
                sampler::ModelPolicy::new(&model, &sampler.act_groups(), 120, 9).unwrap();
            policy.set_greedy(true);
            sampler.start_trials(&tasks, &mut storage).unwrap();
            if pause {
                sampler.collect(&mut policy, &mut storage, 45).unwrap();
                let values = policy.refresh(&storage, 45, 16).unwrap();
                // The refreshed values of the prefix equal the ones recorded while acting.
                let recorded = storage.value.narrow(1, 0, 45);
                let groups = sampler.act_groups();
                for (g, v) in groups.iter().zip(&values) {
                    let r = recorded.narrow(0, g.start as i64, g.len() as i64);
                    let diff = (v - r).abs().max().double_value(&[]);
                    assert!(diff < 1e-4, "refresh values differ by {diff}");
                }
                sampler.collect(&mut policy, &mut storage, 75).unwrap();
            } else {
                sampler.collect(&mut policy, &mut storage, 120).unwrap();
            }
            storage
        };
        let a = go(&mut sampler, false);
        let b = go(&mut sampler, true);
        check_invariants(&a, 100);
        let lp = host(&a.logprob);
        assert!(lp.iter().all(|&x| x <= 0.0 && x.is_finite()));
        let same = host(&a.action) == host(&b.action);
        assert!(
            same,
            "{mode:?}: greedy actions differ after a pause + refresh"
        );
        let dv = (&a.value - &b.value).abs().max().double_value(&[]);
        assert!(dv < 1e-4, "{mode:?}: values differ by {dv}");
    }
}

/// The fused decode path acts like the libtorch one: the same greedy actions, values and
/// log-probabilities within 1e-5, across a pause with refresh (cache hand-over) and in both
/// modes; also with a context reset at every episode start.
#[test]
fn fused_and_libtorch_policies_act_alike() {
    use agent::{ActorCritic, ModelConfig};
    use sampler::{ModelPolicy, PolicyInference};
    let env = EnvConfig::from_name("darkroom").unwrap();
    tch::manual_seed(4);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mc = ModelConfig {
        depth_dropout: 0.0,
        ..ModelConfig::default()
    };
    let spec = env.spec();
    let model = ActorCritic::new(&vs.root(), &mc, &sampler::obs_spec(&spec)).unwrap();
    for mode in [SamplerMode::Sync, SamplerMode::DoubleBuffered] {
        for reset_each_episode in [false, true] {
            let run = |inference: PolicyInference| {
                let cfg = SamplerConfig {
                    threads: 2,
                    mode,
                    inference,
                };
                let mut sampler = Sampler::new(&env, &cfg, 6, 3).unwrap();
                let mut storage = RolloutStorage::new(&spec, 6, 150, Device::Cpu).unwrap();
                // Capacity 64 < 150: the windows slide.
                let mut policy = ModelPolicy::with_inference(
                    &model,
                    &sampler.act_groups(),
                    64,
                    9,
                    cfg.inference,
                )
                .unwrap();
                assert_eq!(policy.is_fused(), inference == PolicyInference::Fused);
                policy.set_greedy(true);
                policy.set_reset_each_episode(reset_each_episode);
                sampler
                    .start_trials(&tasks_for(&sampler, 5), &mut storage)
                    .unwrap();
                sampler.collect(&mut policy, &mut storage, 70).unwrap();
                if !reset_each_episode {
                    policy.refresh(&storage, 70, 16).unwrap();
                }
                sampler.collect(&mut policy, &mut storage, 80).unwrap();
                storage
            };
            let (fused, libtorch) = (run(PolicyInference::Fused), run(PolicyInference::Libtorch));
            assert_eq!(
                host(&fused.action),
                host(&libtorch.action),
                "{mode:?} reset_each_episode={reset_each_episode}: actions differ"
            );
            for (name, a, b) in [
                ("value", &fused.value, &libtorch.value),
                ("logprob", &fused.logprob, &libtorch.logprob),
            ] {
                let d = (a - b).abs().max().double_value(&[]);
                assert!(
                    d <= 1e-5,
                    "{mode:?} reset_each_episode={reset_each_episode}: {name} differs by {d}"
                );
            }
        }
    }
}

#[test]
fn model_policy_sampling_is_independent_of_the_mode() {
    use agent::{ActorCritic, ModelConfig};
    let env = EnvConfig::from_name("darkroom").unwrap();
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mc = ModelConfig {
        depth_dropout: 0.0,
        ..ModelConfig::default()
    };
    let spec = env.spec();
    let model = ActorCritic::new(&vs.root(), &mc, &sampler::obs_spec(&spec)).unwrap();
    let mut results = vec![];
    for (threads, mode) in [(1, SamplerMode::Sync), (2, SamplerMode::DoubleBuffered)] {
        let mut sampler = Sampler::new(
            &env,
            &SamplerConfig {
                threads,
                mode,
                ..SamplerConfig::default()
            },
            4,
            3,
        )
        .unwrap();
        let mut storage = RolloutStorage::new(&spec, 4, 60, Device::Cpu).unwrap();
        let mut policy = sampler::ModelPolicy::new(&model, &sampler.act_groups(), 60, 9).unwrap();
        let tasks = tasks_for(&sampler, 5);
        sampler.start_trials(&tasks, &mut storage).unwrap();
        sampler.collect(&mut policy, &mut storage, 60).unwrap();
        results.push((host(&storage.action), storage.value.shallow_clone()));
    }
    assert_eq!(
        results[0].0, results[1].0,
        "sampled actions depend on the batch split"
    );
    let dv = (&results[0].1 - &results[1].1)
        .abs()
        .max()
        .double_value(&[]);
    assert!(dv < 1e-4);
}

/// A Dark Room shard that panics (or errors) when stepping slot `slot` at step `at`.
struct Failing {
    inner: Box<dyn VecEnv>,
    first: usize,
    slot: usize,
    at: usize,
    steps: usize,
    panic: bool,
}

impl VecEnv for Failing {
    fn spec(&self) -> &envs::EnvSpec {
        self.inner.spec()
    }
    fn num_envs(&self) -> usize {
        self.inner.num_envs()
    }
    fn tasks(&self, split: Split) -> Vec<TaskId> {
        self.inner.tasks(split)
    }
    fn set_task(&mut self, slot: usize, task: TaskId) -> Result<(), EnvError> {
        self.inner.set_task(slot, task)
    }
    fn task(&self, slot: usize) -> Result<TaskId, EnvError> {
        self.inner.task(slot)
    }
    fn reset(&mut self, obs: &mut ObsBatch) {
        self.inner.reset(obs)
    }
    fn observe_slot(&mut self, slot: usize, obs: &mut ObsBatch) -> Result<(), EnvError> {
        self.inner.observe_slot(slot, obs)
    }
    fn step(&mut self, actions: &[u32], out: &mut StepBatch) -> Result<(), EnvError> {
        self.steps += 1;
        let mine = (self.first..self.first + self.num_envs()).contains(&self.slot);
        if mine && self.steps > self.at {
            if self.panic {
                panic!("injected failure in slot {}", self.slot);
            }
            return Err(EnvError::ActionOutOfRange {
                env: "darkroom".into(),
                slot: self.slot - self.first,
                action: 99,
                num_actions: 5,
            });
        }
        self.inner.step(actions, out)
    }
    fn oracle_actions(&self, out: &mut [u32]) {
        self.inner.oracle_actions(out)
    }
    fn describe(&self, slot: usize) -> serde_json::Value {
        self.inner.describe(slot)
    }
}

#[test]
fn env_faults_become_errors_and_stop_the_threads() {
    let dark = EnvConfig::from_name("darkroom").unwrap();
    for (threads, mode, slot) in [
        (2, SamplerMode::Sync, 0),
        (2, SamplerMode::Sync, 7),
        (4, SamplerMode::Sync, 11),
        (2, SamplerMode::DoubleBuffered, 3),
        (4, SamplerMode::DoubleBuffered, 9),
    ] {
        for panic in [true, false] {
            let dark = dark.clone();
            let build: Arc<ShardBuilder> = Arc::new(move |first, count| {
                let inner = dark.build(42, first, count)?;
                Ok(Box::new(Failing {
                    inner,
                    first,
                    slot,
                    at: 20,
                    steps: 0,
                    panic,
                }) as Box<dyn VecEnv>)
            });
            let mut sampler = Sampler::with_builder(
                build,
                &SamplerConfig {
                    threads,
                    mode,
                    ..SamplerConfig::default()
                },
                12,
                42,
            )
            .unwrap();
            assert_eq!(sampler.alive_threads(), sampler.worker_threads());
            let mut storage = RolloutStorage::new(sampler.spec(), 12, 100, Device::Cpu).unwrap();
            let mut policy = RandomPolicy::new(5, 12, 0).unwrap();
            let tasks = vec![17; 12];
            sampler.start_trials(&tasks, &mut storage).unwrap();
            let t0 = Instant::now();
            let err = sampler.collect(&mut policy, &mut storage, 100).unwrap_err();
            let elapsed = t0.elapsed();
            assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
            let msg = format!("{err:#}");
            assert!(
                msg.contains("darkroom") && msg.contains("seed 42") && msg.contains("17"),
                "{msg}"
            );
            if panic {
                assert!(
                    msg.contains("injected failure") && msg.contains("panicked"),
                    "{msg}"
                );
            } else {
                assert!(
                    msg.contains(&format!("slot {slot}")) && msg.contains("task 17"),
                    "{msg}"
                );
            }
            assert!(matches!(
                err.downcast_ref::<sampler::SamplerError>(),
                Some(sampler::SamplerError::EnvFault { .. })
            ));
            assert_eq!(sampler.alive_threads(), 0, "threads left running");
            // Every later call reports the fault instead of hanging.
            let again = sampler.collect(&mut policy, &mut storage, 1).unwrap_err();
            assert!(format!("{again}").contains("stopped"), "{again}");
            assert!(sampler.start_trials(&tasks, &mut storage).is_err());
        }
    }
}

#[test]
fn builder_panics_and_policy_errors_are_reported() {
    let build: Arc<ShardBuilder> = Arc::new(|first, _count| {
        if first > 0 {
            panic!("cannot build");
        }
        EnvConfig::from_name("darkroom")
            .unwrap()
            .build(0, first, _count)
    });
    let err = Sampler::with_builder(
        build,
        &SamplerConfig {
            threads: 2,
            mode: SamplerMode::Sync,
            ..SamplerConfig::default()
        },
        4,
        0,
    )
    .err()
    .unwrap();
    assert!(format!("{err:#}").contains("cannot build"));

    struct Bad(usize);
    impl Policy for Bad {
        fn act(
            &mut self,
            _: &RolloutStorage,
            t: usize,
            slots: Range<usize>,
        ) -> Result<PolicyOutput> {
            if t == 5 && self.0 == 1 {
                anyhow::bail!("policy broke");
            }
            Ok(PolicyOutput {
                actions: vec![self.0 as u32; slots.len()],
                logprob: vec![0.0; slots.len()],
                value: vec![0.0; slots.len()],
            })
        }
    }
    let env = EnvConfig::from_name("darkroom").unwrap();
    let mut sampler = Sampler::new(
        &env,
        &SamplerConfig {
            threads: 2,
            mode: SamplerMode::Sync,
            ..SamplerConfig::default()
        },
        4,
        0,
    )
    .unwrap();
    let mut storage = RolloutStorage::new(sampler.spec(), 4, 10, Device::Cpu).unwrap();
    let tasks = tasks_for(&sampler, 0);
    sampler.start_trials(&tasks, &mut storage).unwrap();
    let err = sampler.collect(&mut Bad(1), &mut storage, 10).unwrap_err();
    assert!(format!("{err:#}").contains("policy broke"));
    // Sync mode stops cleanly at the step boundary: 5 steps landed, and collecting resumes.
    assert_eq!(storage.len, 5);
    check_invariants(&storage, 100);
    let err = sampler.collect(&mut Bad(9), &mut storage, 1).unwrap_err();
    assert!(format!("{err:#}").contains("action 9"), "{err:#}");
    assert_eq!(sampler.alive_threads(), 1);
    // Bad arguments are errors, never panics.
    assert!(sampler.collect(&mut Bad(1), &mut storage, 6).is_err());
    assert!(sampler.start_trials(&tasks[..3], &mut storage).is_err());
    let mut other = RolloutStorage::new(sampler.spec(), 5, 10, Device::Cpu).unwrap();
    assert!(sampler.start_trials(&[0; 5], &mut other).is_err());
    let mut fresh = RolloutStorage::new(sampler.spec(), 4, 10, Device::Cpu).unwrap();
    assert!(
        sampler.collect(&mut Bad(1), &mut fresh, 1).is_err(),
        "a storage that was never started"
    );
    assert!(
        sampler.start_trials(&[999_999; 4], &mut storage).is_err(),
        "an invalid task"
    );
    assert!(
        sampler.collect(&mut Bad(1), &mut storage, 1).is_err(),
        "the trial was not restarted"
    );
    sampler.start_trials(&tasks, &mut storage).unwrap();
    sampler.collect(&mut Bad(2), &mut storage, 3).unwrap();
    assert!(RolloutStorage::new(sampler.spec(), 0, 10, Device::Cpu).is_err());
    assert!(RolloutStorage::new(sampler.spec(), 1, usize::MAX / 2, Device::Cpu).is_err());
    assert!(Sampler::new(
        &env,
        &SamplerConfig {
            threads: 2,
            mode: SamplerMode::DoubleBuffered,
            ..SamplerConfig::default()
        },
        1,
        0
    )
    .is_err());
}

#[test]
fn shuffle_keeps_tuples_and_renumbers_episodes() {
    let env = EnvConfig::from_name("key_to_door").unwrap();
    let b = 16;
    let mut sampler = Sampler::new(
        &env,
        &SamplerConfig {
            threads: 2,
            mode: SamplerMode::Sync,
            ..SamplerConfig::default()
        },
        b,
        8,
    )
    .unwrap();
    let mut storage = RolloutStorage::with_next_obs(sampler.spec(), b, 300, Device::Cpu).unwrap();
    let mut policy = RandomPolicy::new(5, b, 8).unwrap();
    let tasks = tasks_for(&sampler, 8);
    sampler.start_trials(&tasks, &mut storage).unwrap();
    sampler.collect(&mut policy, &mut storage, 237).unwrap();
    let before = snapshot(&storage);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    storage.shuffle_completed_episodes(&mut rng).unwrap();
    let after = snapshot(&storage);
    check_invariants(&storage, 50);

    let len = storage.len;
    let (tok, out) = (len + 1, len);
    let field =
        |s: &Snapshot, name: &str| s.fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
    // Per column the tuple of every field except episode_index.
    let tuple = |s: &Snapshot, row: usize, c: usize| -> Vec<i64> {
        let mut t = vec![];
        for (name, v) in &s.fields {
            if name == "episode_index" {
                continue;
            }
            let is_tok = ["vector", "prev_action", "prev_reward", "step_in_episode"]
                .contains(&name.as_str());
            let (cols, width) = if is_tok {
                (tok, v.len() / (b * tok))
            } else {
                (out, v.len() / (b * out))
            };
            if !is_tok && c >= out {
                continue;
            }
            for k in 0..width {
                t.push((v[(row * cols + c) * width + k] * 1e6).round() as i64);
            }
        }
        t
    };
    let ep_before = field(&before, "episode_index");
    let ep_after = field(&after, "episode_index");
    let mut moved = 0;
    for row in 0..b {
        let e = &ep_before[row * tok..(row + 1) * tok];
        let running = e[len];
        let start = (0..=len).find(|&c| e[c] == running).unwrap();
        // The running episode and the current token stay in place.
        for c in start..=len {
            assert_eq!(tuple(&before, row, c), tuple(&after, row, c));
            assert_eq!(ep_after[row * tok + c], running);
        }
        // Completed episodes: same multiset of tuples, new indices 0..n in order, contiguous.
        let mut a: Vec<_> = (0..start).map(|c| tuple(&before, row, c)).collect();
        let mut z: Vec<_> = (0..start).map(|c| tuple(&after, row, c)).collect();
        if a != z {
            moved += 1;
        }
        a.sort();
        z.sort();
        assert_eq!(a, z, "row {row}: tuples changed");
        let ea = &ep_after[row * tok..row * tok + start];
        assert!(ea.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1.0));
        if start > 0 {
            assert_eq!(ea[0], 0.0);
            assert_eq!(ea[start - 1] + 1.0, running);
        }
        // Whole blocks moved: every block starts at step 0 and counts up.
        let st = field(&after, "step_in_episode");
        for c in 0..start {
            let s = st[row * tok + c];
            if c == 0 || ea[c] != ea[c - 1] {
                assert_eq!(s, 0.0);
            } else {
                assert_eq!(s, st[row * tok + c - 1] + 1.0);
            }
        }
    }
    assert!(moved > 0, "no row was shuffled");
    // Collecting continues after a shuffle.
    sampler.collect(&mut policy, &mut storage, 63).unwrap();
    check_invariants(&storage, 50);
}

#[test]
fn config_parses_validates_and_rejects_unknown_fields() {
    let c: SamplerConfig = ron::from_str("(threads: 3, mode: DoubleBuffered)").unwrap();
    assert_eq!(
        c,
        SamplerConfig {
            threads: 3,
            mode: SamplerMode::DoubleBuffered,
            ..SamplerConfig::default()
        }
    );
    let d: SamplerConfig = ron::from_str("()").unwrap();
    assert_eq!(d, SamplerConfig::default());
    assert!(ron::from_str::<SamplerConfig>("(threads: 1, speed: 2)").is_err());
    let bad = SamplerConfig {
        threads: 100_000,
        mode: SamplerMode::Sync,
        ..SamplerConfig::default()
    };
    assert_eq!(bad.validate()[0].0, "threads");
    assert!(Sampler::new(&EnvConfig::from_name("darkroom").unwrap(), &bad, 4, 0).is_err());
    assert!("double".parse::<SamplerMode>().is_ok() && "x".parse::<SamplerMode>().is_err());
}

#[test]
fn bench_reports_json() {
    let opts = sampler::BenchSamplerOptions {
        envs: 8,
        threads: 2,
        steps: 300,
        rollout_len: 128,
        ..Default::default()
    };
    let r = sampler::bench_sampler(&opts).unwrap();
    assert!(r["steps_per_sec"].as_f64().unwrap() > 0.0);
    assert!(r["env_only_steps_per_sec"].as_f64().unwrap() > 0.0);
    // One timing per repeat; the reported ratio is the median of the per-repeat ratios.
    let ratios: Vec<f64> = r["ratio_to_env_only_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(ratios.len(), opts.repeats);
    assert_eq!(
        r["steps_per_sec_runs"].as_array().unwrap().len(),
        opts.repeats
    );
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(
        r["ratio_to_env_only"].as_f64().unwrap(),
        sorted[sorted.len() / 2]
    );
    let opts = sampler::BenchSamplerOptions {
        envs: 4,
        threads: 1,
        steps: 40,
        warmup_steps: 2,
        rollout_len: 32,
        policy: sampler::BenchPolicy::Model,
        mode: SamplerMode::DoubleBuffered,
        compare_env: false,
        repeats: 1,
        ..Default::default()
    };
    let r = sampler::bench_sampler(&opts).unwrap();
    assert!(r["inference_share"].as_f64().unwrap() > 0.0, "{r}");
}
