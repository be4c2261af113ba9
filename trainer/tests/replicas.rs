//! Data-parallel replicas of ReLIC's PPO minibatch step and DPT's supervised step
//! (`runtime.update_replicas`): the gradient and the updates they give equal the serial ones
//! up to f32 summation order.
//!
//! Depth dropout draws from libtorch's global generator, which every test of this binary
//! shares; [`GENERATOR`] keeps their draws apart.

use std::sync::Mutex;

use agent::ActorCritic;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sampler::{RandomPolicy, RolloutStorage, Sampler};
use tch::nn::VarStore;
use tch::{Kind, Tensor};
use trainer::config::{Config, PpoConfig};
use trainer::methods::dpt::train::dpt_backward;
use trainer::methods::dpt::{DptBatch, DptNet};
use trainer::methods::relic::{ppo_update, UpdatePlan};
use trainer::optim::Adam;
use trainer::ppo_math::{Boundaries, PpoLoss, PpoLossConfig};
use trainer::replicas::{ppo_backward, PpoMinibatch, Replicas};

static GENERATOR: Mutex<()> = Mutex::new(());

const ENVS: usize = 6;
const T: usize = 40;

/// A small ReLIC model and `T` steps of random-policy experience in `ENVS` Dark Room slots.
struct Setup {
    cfg: Config,
    vs: VarStore,
    model: ActorCritic,
    storage: RolloutStorage,
}

fn build(cfg: &Config) -> impl Fn(&mut VarStore) -> anyhow::Result<ActorCritic> + '_ {
    move |vs: &mut VarStore| {
        let spec = sampler::obs_spec(&cfg.env.spec());
        ActorCritic::new(&vs.root(), &cfg.model, &spec)
    }
}

fn setup(depth_dropout: f64) -> Setup {
    let mut cfg = Config::default();
    cfg.model.heads = 2;
    cfg.model.depth_dropout = depth_dropout;
    cfg.sampler.threads = 1;
    let spec = cfg.env.spec();
    tch::manual_seed(11);
    let mut vs = VarStore::new(tch::Device::Cpu);
    let model = build(&cfg)(&mut vs).unwrap();
    let mut sampler = Sampler::new(&cfg.env, &cfg.sampler, ENVS, 3).unwrap();
    let mut storage = RolloutStorage::new(&spec, ENVS, T, tch::Device::Cpu).unwrap();
    let tasks: Vec<envs::TaskId> = (0..ENVS as envs::TaskId).collect();
    sampler.start_trials(&tasks, &mut storage).unwrap();
    let mut policy = RandomPolicy::new(spec.num_actions, ENVS, 5).unwrap();
    sampler.collect(&mut policy, &mut storage, T).unwrap();
    Setup {
        cfg,
        vs,
        model,
        storage,
    }
}

/// Every trainable variable's gradient, by name (zeros where undefined).
fn grads(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, p) in named {
        let g = p.grad();
        let g = if g.defined() {
            g.copy()
        } else {
            Tensor::zeros_like(&p)
        };
        out.push((name, g));
    }
    out
}

fn zero_grads(vs: &VarStore) {
    for (_, mut p) in vs.variables() {
        p.zero_grad();
    }
}

/// The largest `|a - b|` over all entries, relative to the largest `|a|` (over all of them).
fn max_relative_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let mut scale: f64 = 0.0;
    let mut diff: f64 = 0.0;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        scale = scale.max(ta.abs().max().double_value(&[]));
        diff = diff.max((ta - tb).abs().max().double_value(&[]));
    }
    assert!(scale > 0.0, "gradients are not all zero");
    diff / scale
}

/// The minibatch of rows `rows` with the loss on `[10, T)` and drawn advantages and targets.
fn minibatch(s: &Setup, rows: &[i64]) -> PpoMinibatch {
    let (start, seg) = (10i64, (T - 10) as i64);
    let idx = Tensor::from_slice(rows);
    let n = rows.len() as i64;
    let pick = |x: &Tensor| x.narrow(1, start, seg).index_select(0, &idx);
    let randn = || Tensor::randn([n, seg], (Kind::Float, tch::Device::Cpu));
    PpoMinibatch {
        inputs: s.storage.inputs(0, T).select_rows(&idx),
        loss_start: start,
        actions: pick(&s.storage.action).to_kind(Kind::Int64),
        old_logprob: pick(&s.storage.logprob),
        advantages: randn() * 2.0 + 0.5,
        returns: randn(),
        old_values: randn() * 0.1,
    }
}

fn loss_cfg(s: &Setup) -> PpoLossConfig {
    match &s.cfg.method {
        trainer::config::Method::Relic(ppo) => PpoLossConfig::from(ppo),
        _ => PpoLossConfig::from(&PpoConfig::default()),
    }
}

fn metrics(l: &PpoLoss) -> [f64; 6] {
    [
        l.total.double_value(&[]),
        l.policy,
        l.value,
        l.entropy,
        l.approx_kl,
        l.clipfrac,
    ]
}

#[test]
fn a_minibatch_gradient_on_replicas_equals_the_serial_gradient() {
    let _lock = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    // Depth dropout 0.5 over 2 layers: the shards must run the serial forward's draw.
    let s = setup(0.5);
    let threads = tch::get_num_threads();
    let cases = [
        (2, vec![4i64, 0, 5, 2]),
        (3, vec![1, 3, 0, 5, 2]),
        (4, vec![2, 1]),
    ];
    let mut worst: f64 = 0.0;
    for (seed, normalize) in (0..6).zip([true, false].into_iter().cycle()) {
        let cfg = PpoLossConfig {
            normalize_advantages: normalize,
            ..loss_cfg(&s)
        };
        for (replicas, rows) in &cases {
            let replicas = *replicas;
            let mb = {
                tch::manual_seed(100 + seed);
                minibatch(&s, rows)
            };
            zero_grads(&s.vs);
            tch::manual_seed(seed);
            let serial = mb.backward(&s.model, &cfg, 1.0).unwrap();
            let serial_grads = grads(&s.vs);

            let mut r = Replicas::new(&s.vs, replicas, build(&s.cfg)).unwrap();
            zero_grads(&s.vs);
            tch::manual_seed(seed);
            let split = ppo_backward(&mut r, &s.model, &mb, &cfg, 1.0).unwrap();
            let split_grads = grads(&s.vs);

            let d = max_relative_diff(&serial_grads, &split_grads);
            worst = worst.max(d);
            assert!(
                d <= 2e-6,
                "{replicas} replicas, {} rows, seed {seed}: gradients differ by {d:e} (relative)",
                rows.len()
            );
            for (a, b) in metrics(&serial).iter().zip(metrics(&split)) {
                assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
    eprintln!("largest relative gradient difference: {worst:e}");
    assert_eq!(
        tch::get_num_threads(),
        threads,
        "the caller's libtorch threads"
    );
    // libtorch's default for threads started later is the caller's too, not the replicas' 1.
    let later = std::thread::spawn(tch::get_num_threads).join().unwrap();
    assert_eq!(later, threads, "a thread started after the replicas ran");
}

#[test]
fn a_non_finite_shard_leaves_the_master_gradient_alone() {
    let _lock = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup(0.0);
    let cfg = loss_cfg(&s);
    tch::manual_seed(1);
    let mb = minibatch(&s, &[0, 1, 2, 3]);
    // Row 3 goes to the second shard only.
    let _ = mb.old_logprob.narrow(0, 3, 1).fill_(f64::NAN);
    zero_grads(&s.vs);
    let mut r = Replicas::new(&s.vs, 2, build(&s.cfg)).unwrap();
    let loss = ppo_backward(&mut r, &s.model, &mb, &cfg, 1.0).unwrap();
    assert!(!loss.total.double_value(&[]).is_finite());
    for (name, g) in grads(&s.vs) {
        assert_eq!(g.abs().max().double_value(&[]), 0.0, "{name}");
    }
}

/// Three PPO updates (two partial, one full; 2 epochs of 3 minibatches) from the same
/// parameters and data: serial vs 2 replicas.
#[test]
fn ppo_updates_on_two_replicas_match_the_serial_updates() {
    let _lock = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup(0.0);
    let ppo = PpoConfig {
        num_envs: ENVS,
        rollout_len: T,
        minibatches: 3,
        epochs: 2,
        ..PpoConfig::default()
    };
    let spec = sampler::obs_spec(&s.cfg.env.spec());
    let mut other = VarStore::new(tch::Device::Cpu);
    let other_model = ActorCritic::new(&other.root(), &s.cfg.model, &spec).unwrap();
    other.copy(&s.vs).unwrap();
    let mut replicas = Replicas::new(&other, 2, build(&s.cfg)).unwrap();
    let run = |model: &ActorCritic, vs: &VarStore, replicas: Option<&mut Replicas<ActorCritic>>| {
        let mut opt = Adam::new(vs, 0.9, 0.999, 1e-5, 0.0);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut replicas = replicas;
        for (loss_start, end) in [(0, 20), (20, 40), (0, 40)] {
            let plan = UpdatePlan {
                ppo: &ppo,
                boundaries: Boundaries::Episode,
                loss_start,
                end,
                lr: 1e-3,
                grad_norms: false,
            };
            let m = ppo_update(
                model,
                &mut opt,
                &s.storage,
                &plan,
                &mut rng,
                replicas.as_deref_mut(),
            )
            .unwrap();
            assert_eq!(m.skipped, 0);
        }
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        params
    };
    let before: Vec<(String, Tensor)> = {
        let mut p: Vec<_> =
            s.vs.variables()
                .into_iter()
                .map(|(n, t)| (n, t.detach().copy()))
                .collect();
        p.sort_by(|a, b| a.0.cmp(&b.0));
        p
    };
    let serial = run(&s.model, &s.vs, None);
    let split = run(&other_model, &other, Some(&mut replicas));
    let moved: Vec<(String, Tensor)> = serial
        .iter()
        .zip(&before)
        .map(|((n, a), (_, b))| (n.clone(), a - b))
        .collect();
    let diff = max_relative_diff(&serial, &split);
    // 18 Adam steps at lr 1e-3 move weights by ~1e-2; the replicas' rounding differences
    // (~3e-7 of the gradient) stay far below that.
    let movement = moved
        .iter()
        .map(|(_, d)| d.abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(
        movement > 1e-3,
        "the updates moved the parameters ({movement})"
    );
    eprintln!("parameters: largest relative difference {diff:e}, largest movement {movement:e}");
    assert!(
        diff <= 1e-6,
        "parameters after 3 updates differ by {diff:e} (relative to the largest weight)"
    );
}

/// A small DPT network on Dark Room and a batch of `b` random contexts of 12 transitions.
fn dpt_setup(depth_dropout: f64, b: i64) -> (Config, VarStore, DptNet, DptBatch) {
    let mut cfg = Config::default();
    cfg.model.heads = 2;
    cfg.model.d_model = 32;
    cfg.model.positional = agent::PosEncoding::None;
    cfg.model.sink = agent::Sink::None;
    cfg.model.depth_dropout = depth_dropout;
    tch::manual_seed(21);
    let mut vs = VarStore::new(tch::Device::Cpu);
    let model = dpt_build(&cfg)(&mut vs).unwrap();
    let spec = cfg.env.spec();
    let (s, a, t) = (spec.vector_dim as i64, spec.num_actions as i64, 12i64);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let cells = |shape: &[i64]| Tensor::randint(9, shape, cpu);
    let batch = DptBatch {
        query: cells(&[b, s]),
        query_img: None,
        states: cells(&[b, t, s]),
        images: None,
        actions: Tensor::randint(a, [b, t], (Kind::Int64, tch::Device::Cpu)),
        rewards: Tensor::rand([b, t], cpu).round(),
        next_states: cells(&[b, t, s]),
        next_images: None,
        labels: Tensor::randint(a, [b], (Kind::Int64, tch::Device::Cpu)),
    };
    (cfg, vs, model, batch)
}

fn dpt_build(cfg: &Config) -> impl Fn(&mut VarStore) -> anyhow::Result<DptNet> + '_ {
    move |vs: &mut VarStore| {
        DptNet::new(
            &vs.root(),
            &cfg.model,
            &cfg.env,
            12,
            trainer::config::StateEncoding::Raw,
        )
    }
}

#[test]
fn a_dpt_gradient_on_replicas_equals_the_serial_gradient() {
    let _lock = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    for (depth_dropout, b, replicas) in [(0.0, 7, 2), (0.5, 5, 3), (0.0, 2, 4)] {
        let (cfg, vs, model, batch) = dpt_setup(depth_dropout, b);
        // Built before the master exists in a real run: `follow` points them at it.
        let other = {
            let mut vs = VarStore::new(tch::Device::Cpu);
            dpt_build(&cfg)(&mut vs).unwrap();
            vs
        };
        let mut r = Replicas::new(&other, replicas, dpt_build(&cfg)).unwrap();
        r.follow(&vs).unwrap();
        for seed in 0..3 {
            zero_grads(&vs);
            tch::manual_seed(seed);
            let serial = dpt_backward(&model, None, &batch).unwrap();
            let serial_grads = grads(&vs);
            zero_grads(&vs);
            tch::manual_seed(seed);
            let split = dpt_backward(&model, Some(&mut r), &batch).unwrap();
            let d = max_relative_diff(&serial_grads, &grads(&vs));
            assert!(
                d <= 2e-6,
                "{replicas} replicas, batch {b}, depth dropout {depth_dropout}, seed {seed}: \
                 gradients differ by {d:e} (relative)"
            );
            assert!(
                (serial.loss - split.loss).abs() <= 1e-6 * serial.loss.abs(),
                "{serial:?} vs {split:?}"
            );
            assert_eq!(serial.correct_last, split.correct_last);
        }
    }
}

#[test]
fn a_non_finite_dpt_shard_leaves_the_master_gradient_alone() {
    let _lock = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let (cfg, vs, model, batch) = dpt_setup(0.0, 4);
    // Example 3 goes to the second shard only.
    let _ = batch.rewards.narrow(0, 3, 1).fill_(f64::NAN);
    let mut r = Replicas::new(&vs, 2, dpt_build(&cfg)).unwrap();
    zero_grads(&vs);
    let step = dpt_backward(&model, Some(&mut r), &batch).unwrap();
    assert!(!step.loss.is_finite());
    for (name, g) in grads(&vs) {
        assert_eq!(g.abs().max().double_value(&[]), 0.0, "{name}");
    }
}

#[test]
fn replicas_refuse_to_follow_a_different_model() {
    let (cfg, vs, _, _) = dpt_setup(0.0, 2);
    let mut r = Replicas::new(&vs, 2, dpt_build(&cfg)).unwrap();
    let mut wider = cfg.clone();
    wider.model.d_model = 64;
    let mut other = VarStore::new(tch::Device::Cpu);
    dpt_build(&wider)(&mut other).unwrap();
    let err = r.follow(&other).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
}
