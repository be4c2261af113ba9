//! The fused CPU decode equals libtorch's decode and full forward within 1e-5 (f32) for every
//! positional encoding x sink variant x attention mode, across independent slot resets,
//! window slides, cache hand-over after a prefill, weight refreshes and thread counts.

mod common;

use agent::{
    ActorCritic, FusedDecoder, KvCache, ModelConfig, ObsSpec, PosEncoding, Sink, SinkInit,
    StepInputs,
};
use common::*;
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-5;

/// Vector observations only (the token encoder runs in Rust).
fn vector_spec() -> ObsSpec {
    ObsSpec {
        vector_dim: 3,
        image: None,
        num_actions: 4,
    }
}

fn build(cfg: &ModelConfig, spec: &ObsSpec) -> (nn::VarStore, ActorCritic) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = ActorCritic::new(&vs.root(), cfg, spec).unwrap();
    scramble(&vs);
    (vs, model)
}

fn variants() -> Vec<(PosEncoding, Sink, bool)> {
    let mut all = Vec::new();
    for pos in POSITIONALS {
        for sink in sinks() {
            all.push((pos, sink, true));
        }
    }
    for sink in [Sink::None, Sink::SinkToken, sinks()[3]] {
        all.push((PosEncoding::EpisodeRope, sink, false));
        all.push((PosEncoding::Rope, sink, false));
    }
    all
}

/// `[3, t]` streams: slot i starts a new trial at step `resets[i]` (0 = never).
fn streams(t: i64, resets: &[i64], spec: &ObsSpec) -> StepInputs {
    let parts: Vec<StepInputs> = resets
        .iter()
        .map(|&r| {
            if r == 0 {
                trial(t, 5, spec)
            } else {
                cat(&[&trial(r, 5, spec), &trial(t - r, 5, spec)], 1)
            }
        })
        .collect();
    cat(&parts.iter().collect::<Vec<_>>(), 0)
}

fn host_tensors(logits: &[f32], values: &[f32], b: i64) -> (Tensor, Tensor) {
    (
        Tensor::from_slice(logits).view([b, 1, -1]),
        Tensor::from_slice(values).view([b, 1]),
    )
}

/// Decodes `x` token by token with both paths (resetting slot i at step `resets[i]`) and
/// returns the largest difference of logits and values over all steps.
fn compare_decodes(
    model: &ActorCritic,
    cfg: &ModelConfig,
    x: &StepInputs,
    resets: &[i64],
    capacity: usize,
    threads: usize,
) -> f64 {
    let (b, t) = x.batch_time();
    let mut cache = KvCache::new(cfg, b as usize, capacity, Device::Cpu).unwrap();
    let mut fused = FusedDecoder::new(model, b as usize, capacity, threads).unwrap();
    let mut worst = 0f64;
    for j in 0..t {
        for (slot, &r) in resets.iter().enumerate() {
            if j == r && r > 0 {
                cache.reset_slot(slot).unwrap();
                fused.reset_slot(slot).unwrap();
            }
        }
        let step = x.narrow_time(j, 1);
        let (l, v) = model.decode(&mut cache, &step).unwrap();
        let (fl, fv) = fused.decode(model, &step).unwrap();
        let (fl, fv) = host_tensors(fl, fv, b);
        worst = worst.max(max_diff(&l, &fl)).max(max_diff(&v, &fv));
    }
    assert_eq!(fused.lengths(), cache.lengths());
    worst
}

#[test]
fn fused_decode_equals_libtorch_decode_for_every_variant_with_resets_and_slides() {
    tch::manual_seed(10);
    let t = 24;
    let resets = [0i64, 7, 16];
    for spec in [vector_spec(), spec()] {
        for (pos, sink, iea) in variants() {
            let cfg = ModelConfig {
                inter_episode_attention: iea,
                ..tiny(pos, sink)
            };
            let (_vs, model) = build(&cfg, &spec);
            let x = streams(t, &resets, &spec);
            // 64: nothing slides; 10 and 3: the window slides many times.
            for capacity in [64, 10, 3] {
                let d = compare_decodes(&model, &cfg, &x, &resets, capacity, 1);
                assert!(
                    d <= TOL,
                    "{pos:?} {sink:?} iea={iea} image={} capacity {capacity}: {d}",
                    spec.image.is_some()
                );
            }
        }
    }
}

/// The cache holds blocks of 16 entries with a head's dimensions in groups of 8 registers:
/// head widths of a partial group (4), one and a half groups (12) and two groups (16), with
/// trials longer than one block and windows that end inside a block (40, 21).
#[test]
fn fused_decode_handles_head_widths_and_partial_blocks() {
    tch::manual_seed(13);
    let t = 48;
    let resets = [0i64, 19, 33];
    let spec = vector_spec();
    for hd in [4, 12, 16] {
        for (pos, sink) in [
            (
                PosEncoding::Rope,
                Sink::SinkKv {
                    k: SinkInit::Zero,
                    v: SinkInit::Learned,
                },
            ),
            (PosEncoding::EpisodeRope, Sink::None),
        ] {
            let cfg = ModelConfig {
                d_model: 2 * hd,
                inter_episode_attention: false,
                ..tiny(pos, sink)
            };
            let (_vs, model) = build(&cfg, &spec);
            let x = streams(t, &resets, &spec);
            for capacity in [64, 40, 21] {
                let d = compare_decodes(&model, &cfg, &x, &resets, capacity, 1);
                assert!(
                    d <= TOL,
                    "head width {hd}, {pos:?} {sink:?}, capacity {capacity}: {d}"
                );
            }
        }
    }
}

/// Without slides the fused steps equal the full causal forward of each slot's trial.
#[test]
fn fused_decode_equals_full_forward() {
    tch::manual_seed(11);
    let t = 20;
    for (pos, sink, iea) in variants() {
        let cfg = ModelConfig {
            inter_episode_attention: iea,
            ..tiny(pos, sink)
        };
        let spec = vector_spec();
        let (_vs, model) = build(&cfg, &spec);
        let x = cat(&[&trial(t, 6, &spec), &trial(t, 6, &spec)], 0);
        let (fl, fv) = model.forward(&x, false).unwrap();
        let mut fused = FusedDecoder::new(&model, 2, t as usize, 1).unwrap();
        let (mut logits, mut values) = (Vec::new(), Vec::new());
        for j in 0..t {
            let (l, v) = fused.decode(&model, &x.narrow_time(j, 1)).unwrap();
            let (l, v) = host_tensors(l, v, 2);
            logits.push(l);
            values.push(v);
        }
        let dl = max_diff(&fl, &Tensor::cat(&logits, 1));
        let dv = max_diff(&fv, &Tensor::cat(&values, 1));
        assert!(
            dl <= TOL && dv <= TOL,
            "{pos:?} {sink:?} iea={iea}: logits {dl}, values {dv}"
        );
    }
}

/// After an update: refresh the weights, prefill a libtorch cache with the new parameters,
/// hand it over, and keep decoding (also past the capacity): equal to libtorch throughout.
#[test]
fn refresh_and_cache_hand_over_continue_like_libtorch() {
    tch::manual_seed(12);
    let (t, prefix, capacity) = (30i64, 17i64, 20usize);
    for (pos, sink, iea) in variants() {
        let cfg = ModelConfig {
            inter_episode_attention: iea,
            ..tiny(pos, sink)
        };
        let spec = vector_spec();
        let (vs, model) = build(&cfg, &spec);
        let x = cat(&[&trial(t, 6, &spec), &trial(t, 6, &spec)], 0);
        let mut fused = FusedDecoder::new(&model, 2, capacity, 2).unwrap();
        for j in 0..5 {
            fused.decode(&model, &x.narrow_time(j, 1)).unwrap();
        }
        scramble(&vs); // "the update"
        fused.refresh_weights(&model).unwrap();
        let mut cache = KvCache::new(&cfg, 2, capacity, Device::Cpu).unwrap();
        let _ = model
            .recompute(&mut cache, &x.narrow_time(0, prefix), 4)
            .unwrap();
        fused.load_cache(&cache).unwrap();
        for j in prefix..t {
            let step = x.narrow_time(j, 1);
            let (l, v) = model.decode(&mut cache, &step).unwrap();
            let (fl, fv) = fused.decode(&model, &step).unwrap();
            let (fl, fv) = host_tensors(fl, fv, 2);
            let d = max_diff(&l, &fl).max(max_diff(&v, &fv));
            assert!(d <= TOL, "{pos:?} {sink:?} iea={iea} step {j}: {d}");
        }
    }
}

/// Sharding the batch over threads changes nothing, bit for bit.
#[test]
fn threads_give_identical_outputs() {
    tch::manual_seed(13);
    let cfg = tiny(PosEncoding::EpisodeRope, sinks()[3]);
    let spec = vector_spec();
    let (_vs, model) = build(&cfg, &spec);
    let x = cat(
        &(0..7)
            .map(|_| trial(12, 5, &spec))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>(),
        0,
    );
    let mut one = FusedDecoder::new(&model, 7, 8, 1).unwrap();
    let mut three = FusedDecoder::new(&model, 7, 8, 3).unwrap();
    assert_eq!(three.threads(), 3);
    for j in 0..12 {
        let step = x.narrow_time(j, 1);
        let (l1, v1) = one.decode(&model, &step).unwrap();
        let (l1, v1) = (l1.to_vec(), v1.to_vec());
        let (l3, v3) = three.decode(&model, &step).unwrap();
        assert_eq!(l1, l3, "step {j}");
        assert_eq!(v1, v3, "step {j}");
    }
}

#[test]
fn fused_decode_rejects_bad_inputs_with_errors() {
    tch::manual_seed(14);
    let spec = vector_spec();
    let cfg = ModelConfig {
        max_positions: 4,
        ..tiny(PosEncoding::Learned, Sink::None)
    };
    let (_vs, model) = build(&cfg, &spec);
    let mut fused = FusedDecoder::new(&model, 2, 16, 1).unwrap();
    let x = cat(&[&trial(6, 6, &spec), &trial(6, 6, &spec)], 0);
    // Wrong batch and more than one token per slot.
    let e = fused.decode(&model, &x.narrow_time(0, 2)).unwrap_err();
    assert!(format!("{e:#}").contains("[2, 1]"), "{e:#}");
    let one = cat(&[&trial(1, 6, &spec)], 0);
    assert!(fused.decode(&model, &one).is_err());
    // Positions beyond the learned table.
    for j in 0..4 {
        fused.decode(&model, &x.narrow_time(j, 1)).unwrap();
    }
    let e = fused.decode(&model, &x.narrow_time(4, 1)).unwrap_err();
    assert!(format!("{e:#}").contains("max_positions"), "{e:#}");
    assert!(fused.reset_slot(2).is_err());
    // A model in bf16 (or on another device) is refused.
    let bf16 = ModelConfig {
        dtype: agent::DType::Bf16,
        ..cfg.clone()
    };
    let mut vs = nn::VarStore::new(Device::Cpu);
    let m16 = ActorCritic::new(&vs.root(), &bf16, &spec).unwrap();
    vs.set_kind(Kind::BFloat16);
    assert!(!FusedDecoder::supports(&m16));
    assert!(FusedDecoder::new(&m16, 2, 8, 1).is_err());
}
