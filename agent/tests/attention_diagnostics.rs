//! The diagnostic forward with explicit attention probabilities is the model's own attention:
//! probabilities times values equal SDPA, its output equals the evaluation forward, rows sum
//! to 1, and a constructed case has the sink mass it must have.

mod common;

use agent::{
    attention_probabilities, causal_attention, ActorCritic, ModelConfig, PosEncoding, Sink,
    SinkInit, SinkKv,
};
use common::*;
use tch::{nn, Device, Kind, Tensor};

fn build(cfg: &ModelConfig) -> (nn::VarStore, ActorCritic) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = ActorCritic::new(&vs.root(), cfg, &spec()).unwrap();
    scramble(&vs);
    (vs, model)
}

/// Random q, k, v `[2, 3, t, 4]`, a sink slot, and episode ids `[2, t]` with several episodes.
fn qkv(t: i64) -> (Tensor, Tensor, Tensor, SinkKv, Tensor) {
    let r = |s: &[i64]| Tensor::randn(s, (Kind::Float, Device::Cpu));
    let episode = Tensor::arange(t, (Kind::Int64, Device::Cpu)).divide_scalar_mode(3, "floor");
    let episode = Tensor::stack(
        &[
            episode.shallow_clone(),
            episode.divide_scalar_mode(2, "floor"),
        ],
        0,
    );
    (
        r(&[2, 3, t, 4]),
        r(&[2, 3, t, 4]),
        r(&[2, 3, t, 4]),
        SinkKv {
            k: r(&[3, 4]),
            v: r(&[3, 4]),
        },
        episode,
    )
}

/// The block-diagonal mask as the transformer builds it for `inter_episode_attention: false`.
fn block_mask(episode: &Tensor, sink: bool) -> Tensor {
    let t = episode.size()[1];
    let causal = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).tril(0);
    let mut mask = episode
        .unsqueeze(2)
        .eq_tensor(&episode.unsqueeze(1))
        .logical_and(&causal);
    if sink {
        let b = episode.size()[0];
        let col = Tensor::ones([b, t, 1], (Kind::Bool, Device::Cpu));
        mask = Tensor::cat(&[col, mask], 2);
        let row = Tensor::zeros([b, 1, t + 1], (Kind::Bool, Device::Cpu));
        let _ = row.narrow(2, 0, 1).fill_(1);
        mask = Tensor::cat(&[row, mask], 1);
    }
    mask.unsqueeze(1)
}

#[test]
fn probabilities_times_values_equal_sdpa_and_rows_sum_to_one() {
    tch::manual_seed(11);
    let t = 9;
    let (q, k, v, sink, episode) = qkv(t);
    for with_sink in [false, true] {
        for episodic in [false, true] {
            let sink = with_sink.then_some(&sink);
            let mask = episodic.then(|| block_mask(&episode, with_sink));
            let p = attention_probabilities(&q, &k, sink, mask.as_ref());
            let slots = i64::from(with_sink);
            assert_eq!(p.size(), vec![2, 3, t, slots + t]);
            let rows = p.sum_dim_intlist(-1, false, Kind::Float);
            assert!(max_diff(&rows, &rows.ones_like()) < 1e-6);
            let values = match sink {
                Some(s) => Tensor::cat(
                    &[
                        s.v.view([1, 3, 1, 4]).expand([2, 3, 1, 4], false),
                        v.shallow_clone(),
                    ],
                    2,
                ),
                None => v.shallow_clone(),
            };
            let sdpa = causal_attention(&q, &k, &v, sink, mask.as_ref());
            let d = max_diff(&p.matmul(&values), &sdpa);
            assert!(d < 1e-5, "sink {with_sink} episodic {episodic}: {d}");
            // Nothing in the future gets any probability.
            let future = p.narrow(2, 0, 1).narrow(3, slots + 1, t - 1);
            assert_eq!(future.abs().max().double_value(&[]), 0.0);
        }
    }
}

/// With all-zero keys and a zero sink key (K0V0) every score is 0, so a query that sees n
/// tokens attends uniformly to n + 1 slots: sink probability 1 / (n + 1).
#[test]
fn zero_keys_give_a_uniform_sink_mass() {
    tch::manual_seed(12);
    let t = 7;
    let (q, _, _, _, _) = qkv(t);
    let zero_k = Tensor::zeros([2, 3, t, 4], (Kind::Float, Device::Cpu));
    let sink = SinkKv {
        k: Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
        v: Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
    };
    let p = attention_probabilities(&q, &zero_k, Some(&sink), None);
    for i in 0..t {
        let got = p.select(2, i).select(2, 0); // [B, H]
        let want = 1.0 / (i + 2) as f64;
        assert!(
            (got - want).abs().max().double_value(&[]) < 1e-6,
            "query {i}"
        );
    }

    // Through the whole model: zero key projections make every layer's keys zero, so each
    // layer's mean sink mass over T tokens is mean_i 1 / (i + 2), and its entropy mean_i
    // ln(i + 2), in every head.
    let cfg = tiny(
        PosEncoding::None,
        Sink::SinkKv {
            k: SinkInit::Zero,
            v: SinkInit::Zero,
        },
    );
    let (vs, model) = build(&cfg);
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if name.ends_with("attn.wk.weight") {
                let _ = var.zero_();
            }
        }
    });
    let x = trial(t, 3, &spec());
    let layers = model.attention_diagnostics(&x).unwrap();
    let n = t as f64;
    let sink_mass: f64 = (0..t).map(|i| 1.0 / (i + 2) as f64).sum::<f64>() / n;
    let entropy: f64 = (0..t).map(|i| ((i + 2) as f64).ln()).sum::<f64>() / n;
    assert_eq!(layers.len(), cfg.layers);
    for layer in &layers {
        let mass = layer.sink_mass.as_ref().expect("K0V0 has a sink");
        assert_eq!(mass.len(), cfg.heads);
        for (&m, &e) in mass.iter().zip(&layer.entropy) {
            assert!((m - sink_mass).abs() < 1e-6, "{m} vs {sink_mass}");
            assert!((e - entropy).abs() < 1e-5, "{e} vs {entropy}");
        }
        assert_eq!(layer.sink_k_norm, None, "a zero key has no norm to log");
        assert_eq!(layer.sink_v_norm, None);
    }
}

/// For every sink variant and positional encoding, the diagnostic forward's output is the
/// evaluation forward's; a model without a sink reports no sink mass.
#[test]
fn diagnostic_forward_equals_the_model_forward() {
    tch::manual_seed(13);
    for positional in POSITIONALS {
        for sink in sinks() {
            for inter_episode in [true, false] {
                let cfg = ModelConfig {
                    inter_episode_attention: inter_episode,
                    ..tiny(positional, sink)
                };
                let (_vs, model) = build(&cfg);
                let x = cat(&[&trial(20, 6, &spec()), &trial(20, 6, &spec())], 0);
                let _guard = tch::no_grad_guard();
                let tokens = model.encoder.forward(&x);
                let plain = model
                    .trunk
                    .forward(&tokens, &x.episode_index, &x.step_in_episode, false)
                    .unwrap();
                let (explicit, layers) = model
                    .trunk
                    .forward_with_attention(&tokens, &x.episode_index, &x.step_in_episode)
                    .unwrap();
                let d = max_diff(&plain, &explicit);
                assert!(d < 1e-4, "{positional:?} {sink:?} iea {inter_episode}: {d}");
                assert_eq!(layers.len(), cfg.layers);
                for layer in &layers {
                    assert_eq!(layer.entropy.len(), cfg.heads);
                    assert!(layer.entropy.iter().all(|e| e.is_finite() && *e >= 0.0));
                    match sink {
                        Sink::None => {
                            assert_eq!(layer.sink_mass, None);
                            assert_eq!(layer.sink_k_norm, None);
                        }
                        _ => {
                            let mass = layer.sink_mass.as_ref().unwrap();
                            assert!(mass.iter().all(|m| (0.0..=1.0).contains(m)));
                        }
                    }
                    if let Sink::SinkKv { k, v } = sink {
                        assert_eq!(layer.sink_k_norm.is_some(), k == SinkInit::Learned);
                        assert_eq!(layer.sink_v_norm.is_some(), v == SinkInit::Learned);
                    }
                }
            }
        }
    }
}

/// A long context is processed in query chunks (3000 tokens x 2 heads x 3001 keys is more
/// than one chunk of 2^24 probabilities): the output still equals the model's forward, and
/// the statistics are means over sequences (one sequence vs the same one twice).
#[test]
fn chunked_long_context_matches_the_forward() {
    tch::manual_seed(14);
    let cfg = tiny(PosEncoding::Rope, Sink::SinkToken);
    let (_vs, model) = build(&cfg);
    let one = trial(3000, 60, &spec());
    let two = cat(&[&one, &one], 0);
    let _guard = tch::no_grad_guard();
    let tokens = model.encoder.forward(&one);
    let plain = model
        .trunk
        .forward(&tokens, &one.episode_index, &one.step_in_episode, false)
        .unwrap();
    let (explicit, a) = model
        .trunk
        .forward_with_attention(&tokens, &one.episode_index, &one.step_in_episode)
        .unwrap();
    assert!(max_diff(&plain, &explicit) < 1e-4);
    let b = model.attention_diagnostics(&two).unwrap();
    for (la, lb) in a.iter().zip(&b) {
        let (ma, mb) = (
            la.sink_mass.as_ref().unwrap(),
            lb.sink_mass.as_ref().unwrap(),
        );
        for (x, y) in ma.iter().zip(mb) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
        for (x, y) in la.entropy.iter().zip(&lb.entropy) {
            assert!((x - y).abs() < 1e-5);
        }
        assert!(
            la.sink_k_norm.unwrap() > 0.0,
            "the sink token's key at this layer"
        );
    }
}
