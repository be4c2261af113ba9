//! Paired ablations start from identical weights: for one seed, every sink and position
//! variant shares its common parameters bit for bit at step 0, and the variant-only
//! parameters start as in the official ReLIC code (sink token and sink K/V at zero).

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use agent::{ActorCritic, PosEncoding, Sink, SinkInit};
use common::*;
use tch::{nn, Device, Tensor};

/// libtorch's generator is global and the tests of this file run on parallel threads: one
/// seeded build at a time.
static GLOBAL_GENERATOR: Mutex<()> = Mutex::new(());

/// The model's parameters at step 0 (name -> tensor), built after seeding libtorch with
/// `seed`, as the trainer does with the run's init seed.
fn initial_parameters(seed: i64, positional: PosEncoding, sink: Sink) -> BTreeMap<String, Tensor> {
    let _one_at_a_time = GLOBAL_GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = ActorCritic::new(&vs.root(), &tiny(positional, sink), &spec()).unwrap();
    vs.variables().into_iter().collect()
}

fn kv_learned() -> Sink {
    Sink::SinkKv {
        k: SinkInit::Learned,
        v: SinkInit::Learned,
    }
}

/// Names present in both maps whose tensors are not bit-identical, and the number shared.
fn differing_shared(
    a: &BTreeMap<String, Tensor>,
    b: &BTreeMap<String, Tensor>,
) -> (Vec<String>, usize) {
    let shared: Vec<&String> = a.keys().filter(|k| b.contains_key(*k)).collect();
    let differing = shared
        .iter()
        .filter(|k| !a[**k].equal(&b[**k]))
        .map(|k| k.to_string())
        .collect();
    (differing, shared.len())
}

#[test]
fn none_sink_token_and_kv_share_bit_identical_weights_at_step_0() {
    for seed in [0, 7] {
        for positional in POSITIONALS {
            let none = initial_parameters(seed, positional, Sink::None);
            for sink in [Sink::SinkToken, kv_learned()] {
                let other = initial_parameters(seed, positional, sink);
                let (differing, shared) = differing_shared(&none, &other);
                assert_eq!(shared, none.len(), "{sink:?} lacks a parameter of `none`");
                assert!(
                    differing.is_empty(),
                    "seed {seed}, {positional:?}, {sink:?}: {differing:?} differ from `none`"
                );
            }
        }
    }
}

#[test]
fn position_variants_share_weights_and_tables_come_from_the_seed() {
    let seed = 3;
    let none = initial_parameters(seed, PosEncoding::None, kv_learned());
    for positional in POSITIONALS {
        let other = initial_parameters(seed, positional, kv_learned());
        let (differing, _) = differing_shared(&none, &other);
        assert!(differing.is_empty(), "{positional:?}: {differing:?}");
    }
    // The learned tables are N(0, 0.02) and depend on the seed, not on the other variant-only
    // parameters.
    let a = initial_parameters(seed, PosEncoding::Learned, Sink::None);
    let b = initial_parameters(seed, PosEncoding::Learned, Sink::SinkToken);
    let c = initial_parameters(seed + 1, PosEncoding::Learned, Sink::None);
    let table = "trunk.position.weight";
    assert!(a[table].equal(&b[table]));
    assert!(!a[table].equal(&c[table]));
    let std = a[table].std(true).double_value(&[]);
    assert!((0.015..0.025).contains(&std), "std {std}");
}

#[test]
fn different_seeds_give_different_shared_weights() {
    let a = initial_parameters(0, PosEncoding::EpisodeRope, Sink::None);
    let b = initial_parameters(1, PosEncoding::EpisodeRope, Sink::None);
    let (differing, shared) = differing_shared(&a, &b);
    assert_eq!(shared, a.len());
    // Every randomly initialised parameter differs (the constant ones, norm scales and zero
    // biases, may agree).
    let random: Vec<&String> = a
        .iter()
        .filter(|(_, t)| t.std(false).double_value(&[]) > 0.0)
        .map(|(k, _)| k)
        .collect();
    assert!(random.len() >= 25, "{} random parameters", random.len());
    for k in random {
        assert!(differing.contains(k), "{k} is the same for seeds 0 and 1");
    }
}

#[test]
fn sink_parameters_start_at_zero_and_are_trainable() {
    let token = initial_parameters(0, PosEncoding::EpisodeRope, Sink::SinkToken);
    let t = &token["trunk.sink_token"];
    assert!(t.requires_grad());
    assert_eq!(t.abs().max().double_value(&[]), 0.0);
    let kv = initial_parameters(0, PosEncoding::EpisodeRope, kv_learned());
    for layer in 0..2 {
        for half in ["sink_k", "sink_v"] {
            let p = &kv[&format!("trunk.layers.{layer}.attn.{half}")];
            assert!(p.requires_grad(), "{half} must be trainable");
            assert_eq!(p.abs().max().double_value(&[]), 0.0);
        }
    }
}
