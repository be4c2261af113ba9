//! KV-cache decoding equals the full causal forward, for every positional x sink variant.

mod common;

use agent::{ActorCritic, KvCache, ModelConfig, PosEncoding, Sink};
use common::*;
use tch::{nn, Device, Tensor};

const TOL: f64 = 1e-4;

fn build(cfg: &ModelConfig) -> (nn::VarStore, ActorCritic) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = ActorCritic::new(&vs.root(), cfg, &spec()).unwrap();
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
    // The block-diagonal (no inter-episode attention) ablation, with and without a sink.
    for sink in [Sink::None, Sink::SinkToken, sinks()[3]] {
        all.push((PosEncoding::EpisodeRope, sink, false));
        all.push((PosEncoding::Rope, sink, false));
    }
    all
}

/// Streams per slot: trial A of length `resets[i]`, then trial B (the slot is reset at
/// step `resets[i]`). Decoding token by token must equal the full forward of each trial.
#[test]
fn decode_equals_forward_for_every_variant_with_independent_resets() {
    tch::manual_seed(0);
    let t = 24i64;
    let resets = [0i64, 7, 16]; // slot 0 never resets (its trial B is the whole stream)
    for (pos, sink, iea) in variants() {
        let cfg = ModelConfig {
            inter_episode_attention: iea,
            ..tiny(pos, sink)
        };
        let (_vs, model) = build(&cfg);
        let mut cache = KvCache::new(&cfg, resets.len(), 64, Device::Cpu).unwrap();
        let trials: Vec<_> = resets
            .iter()
            .map(|&r| (trial(r.max(1), 5, &spec()), trial(t - r, 5, &spec())))
            .collect();
        let streams: Vec<_> = trials
            .iter()
            .zip(resets)
            .map(|((a, b), r)| {
                if r == 0 {
                    b.narrow_time(0, t)
                } else {
                    cat(&[&a.narrow_time(0, r), b], 1)
                }
            })
            .collect();
        let stream = cat(&streams.iter().collect::<Vec<_>>(), 0); // [3, t]
        let (mut logits, mut values) = (Vec::new(), Vec::new());
        for j in 0..t {
            for (slot, &r) in resets.iter().enumerate() {
                if j == r && r > 0 {
                    cache.reset_slot(slot).unwrap();
                }
            }
            let (l, v) = model.decode(&mut cache, &stream.narrow_time(j, 1)).unwrap();
            logits.push(l);
            values.push(v);
        }
        let (logits, values) = (Tensor::cat(&logits, 1), Tensor::cat(&values, 1)); // [3, t, A], [3, t]
        for (slot, ((a, b), &r)) in trials.iter().zip(&resets).enumerate() {
            let slot = slot as i64;
            let check = |x: &agent::StepInputs, from: i64, len: i64| {
                let (fl, fv) = model.forward(x, false).unwrap();
                let dl = max_diff(&fl, &logits.get(slot).narrow(0, from, len).unsqueeze(0));
                let dv = max_diff(&fv, &values.get(slot).narrow(0, from, len).unsqueeze(0));
                assert!(
                    dl <= TOL && dv <= TOL,
                    "{pos:?} {sink:?} iea={iea} slot {slot}: logits {dl}, values {dv}"
                );
            };
            if r > 0 {
                check(a, 0, r);
            }
            check(b, r, t - r);
        }
    }
}

#[test]
fn chunked_prefill_equals_token_by_token() {
    tch::manual_seed(1);
    let t = 30i64;
    for (pos, sink, iea) in variants() {
        let cfg = ModelConfig {
            inter_episode_attention: iea,
            ..tiny(pos, sink)
        };
        let (_vs, model) = build(&cfg);
        let x = cat(&[&trial(t, 6, &spec()), &trial(t, 6, &spec())], 0);
        let mut one = KvCache::new(&cfg, 2, 64, Device::Cpu).unwrap();
        let (l1, v1) = model.prefill(&mut one, &x, 1).unwrap();
        for chunk in [4, 7, 30, 100] {
            let mut cache = KvCache::new(&cfg, 2, 64, Device::Cpu).unwrap();
            let (l, v) = model.prefill(&mut cache, &x, chunk).unwrap();
            let (dl, dv) = (max_diff(&l, &l1), max_diff(&v, &v1));
            assert!(
                dl <= TOL && dv <= TOL,
                "{pos:?} {sink:?} chunk {chunk}: {dl} {dv}"
            );
            assert_eq!(cache.lengths(), &[t, t]);
        }
        // recompute = reset + prefill
        let (l, _) = model.recompute(&mut one, &x, 8).unwrap();
        assert!(max_diff(&l, &l1) <= TOL);
    }
}

/// A cache of capacity C after C + k tokens holds exactly the last C: its last output
/// equals a fresh forward over the last C tokens (one layer, so cached keys/values depend
/// on their own token only; positions None and Rope, which are translation invariant).
/// Also with chunks that wrap the ring. (An unrotated sink key against rotated queries
/// depends on absolute positions, so Rope is checked with sinks whose key is zero.)
#[test]
fn sliding_window_drops_exactly_the_oldest_tokens() {
    tch::manual_seed(2);
    let (c, k) = (8i64, 5i64);
    for pos in [PosEncoding::None, PosEncoding::Rope] {
        for sink in sinks() {
            let key_free = matches!(
                sink,
                Sink::None
                    | Sink::SinkKv {
                        k: agent::SinkInit::Zero,
                        ..
                    }
            );
            if pos == PosEncoding::Rope && !key_free {
                continue;
            }
            let cfg = ModelConfig {
                layers: 1,
                ..tiny(pos, sink)
            };
            let (_vs, model) = build(&cfg);
            let x = cat(&[&trial(c + k, 4, &spec()), &trial(c + k, 4, &spec())], 0);
            let (fresh_l, fresh_v) = model.forward(&x.narrow_time(k, c), false).unwrap();
            for chunk in [1, 3, 13] {
                let mut cache = KvCache::new(&cfg, 2, c as usize, Device::Cpu).unwrap();
                let (l, v) = model.prefill(&mut cache, &x, chunk).unwrap();
                let dl = max_diff(&l.narrow(1, c + k - 1, 1), &fresh_l.narrow(1, c - 1, 1));
                let dv = max_diff(&v.narrow(1, c + k - 1, 1), &fresh_v.narrow(1, c - 1, 1));
                assert!(
                    dl <= TOL && dv <= TOL,
                    "{pos:?} {sink:?} chunk {chunk}: {dl} {dv}"
                );
                assert_eq!(cache.held(0), c as usize);
            }
            // Before the window is full nothing is dropped.
            let mut cache = KvCache::new(&cfg, 2, c as usize, Device::Cpu).unwrap();
            let (l, _) = model.prefill(&mut cache, &x.narrow_time(0, c), 1).unwrap();
            let (full, _) = model.forward(&x.narrow_time(0, c), false).unwrap();
            assert!(max_diff(&l, &full) <= TOL);
        }
    }
}

#[test]
fn decode_rejects_bad_inputs_with_errors() {
    let cfg = tiny(PosEncoding::EpisodeRope, Sink::None);
    let (_vs, model) = build(&cfg);
    let mut cache = KvCache::new(&cfg, 2, 16, Device::Cpu).unwrap();
    let x = trial(1, 3, &spec());
    let err = model.decode(&mut cache, &x).unwrap_err().to_string();
    assert!(err.contains("slots"), "{err}");
    let mut x2 = cat(&[&x, &x], 0);
    x2.prev_action = x2.prev_action.fill(9);
    let err = model.decode(&mut cache, &x2).unwrap_err().to_string();
    assert!(err.contains("prev_action"), "{err}");
    let mut x3 = cat(&[&x, &x], 0);
    x3.step_in_episode = x3.step_in_episode.fill(99);
    let err = model.decode(&mut cache, &x3).unwrap_err().to_string();
    assert!(err.contains("max_episode_steps"), "{err}");
    let other = tiny(PosEncoding::EpisodeRope, Sink::SinkToken);
    let mut wrong = KvCache::new(&other, 2, 16, Device::Cpu).unwrap();
    assert!(model.decode(&mut wrong, &cat(&[&x, &x], 0)).is_err());
    assert!(cache.reset_slot(5).is_err());
    let learned = tiny(PosEncoding::Learned, Sink::None);
    let (_vs, model) = build(&learned);
    let mut cache = KvCache::new(&learned, 1, 512, Device::Cpu).unwrap();
    let err = model
        .prefill(&mut cache, &trial(129, 3, &spec()), 64)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_positions"), "{err}");
}
