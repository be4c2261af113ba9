//! Sinks, positions, masks, checkpoints, configs, DPT and GRU models.

mod common;

use agent::{
    causal_attention, ActorCritic, GruPolicy, ModelConfig, PosEncoding, SequenceModel, Sink,
    SinkInit, SinkKv,
};
use common::*;
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn build(cfg: &ModelConfig) -> (nn::VarStore, ActorCritic) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = ActorCritic::new(&vs.root(), cfg, &spec()).unwrap();
    scramble(&vs);
    (vs, model)
}

/// K0V0 is softmax plus one: weights exp(s_j) / (1 + sum_j exp(s_j)), no value for the sink.
#[test]
fn k0v0_attention_is_softmax_plus_one() {
    tch::manual_seed(3);
    let (h, t, d) = (2i64, 4i64, 8i64);
    let q = Tensor::randn([1, h, t, d], (Kind::Float, Device::Cpu));
    let k = Tensor::randn([1, h, t, d], (Kind::Float, Device::Cpu));
    let v = Tensor::randn([1, h, t, d], (Kind::Float, Device::Cpu));
    let zero = || Tensor::zeros([h, d], (Kind::Float, Device::Cpu));
    let sink = SinkKv {
        k: zero(),
        v: zero(),
    };
    let got = causal_attention(&q, &k, &v, Some(&sink), None);
    let out = Tensor::zeros([1, h, t, d], (Kind::Float, Device::Cpu));
    for head in 0..h {
        for i in 0..t {
            let qi = q.get(0).get(head).get(i);
            let mut denom = 1.0; // exp(q . 0) for the sink
            let mut numer = Tensor::zeros([d], (Kind::Float, Device::Cpu));
            for j in 0..=i {
                let score = (&qi * k.get(0).get(head).get(j))
                    .sum(Kind::Float)
                    .double_value(&[])
                    / (d as f64).sqrt();
                denom += score.exp();
                numer += v.get(0).get(head).get(j) * score.exp();
            }
            out.get(0).get(head).get(i).copy_(&(numer / denom));
        }
    }
    assert!(max_diff(&got, &out) < 1e-5, "{}", max_diff(&got, &out));
    // Without a sink, plain causal softmax: the first token attends only to itself.
    let plain = causal_attention(&q, &k, &v, None, None);
    assert!(max_diff(&plain.narrow(2, 0, 1), &v.narrow(2, 0, 1)) < 1e-6);
}

/// The SinkToken model equals the no-sink model (same weights) with the learned token
/// inserted in front of the sequence by hand and its output dropped.
#[test]
fn sink_token_equals_token_inserted_by_hand() {
    tch::manual_seed(4);
    let (vs1, with_token) = build(&tiny(PosEncoding::None, Sink::SinkToken));
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let plain =
        ActorCritic::new(&vs2.root(), &tiny(PosEncoding::None, Sink::None), &spec()).unwrap();
    vs2.copy(&vs1).unwrap();
    let x = trial(12, 4, &spec());
    let tokens = with_token.encoder.forward(&x);
    let out1 = with_token
        .trunk
        .forward(&tokens, &x.episode_index, &x.step_in_episode, false)
        .unwrap();
    let token = with_token
        .trunk
        .sink_token
        .as_ref()
        .unwrap()
        .view([1, 1, -1]);
    let inserted = Tensor::cat(&[token, tokens], 1);
    let zeros = Tensor::zeros([1, 13], (Kind::Int64, Device::Cpu));
    let out2 = plain
        .trunk
        .forward(&inserted, &zeros, &zeros, false)
        .unwrap()
        .narrow(1, 1, 12);
    assert!(max_diff(&out1, &out2) < 1e-5, "{}", max_diff(&out1, &out2));
}

#[test]
fn gradients_reach_learned_sink_parameters() {
    tch::manual_seed(5);
    for sink in [
        Sink::SinkToken,
        Sink::SinkKv {
            k: SinkInit::Learned,
            v: SinkInit::Learned,
        },
    ] {
        let (vs, model) = build(&tiny(PosEncoding::EpisodeRope, sink));
        let (logits, value) = model.forward(&trial(10, 4, &spec()), true).unwrap();
        (logits.square().sum(Kind::Float) + value.sum(Kind::Float)).backward();
        let names: Vec<_> = vs
            .variables()
            .into_keys()
            .filter(|n| n.contains("sink"))
            .collect();
        assert_eq!(
            names.len(),
            if sink == Sink::SinkToken { 1 } else { 4 },
            "{names:?}"
        );
        for (name, v) in vs.variables() {
            if name.contains("sink") {
                let g = v.grad().abs().sum(Kind::Float).double_value(&[]);
                assert!(g > 0.0, "no gradient reaches {name}");
            }
        }
    }
    // Zero sinks are constants, not parameters.
    let (vs, _) = build(&tiny(
        PosEncoding::None,
        Sink::SinkKv {
            k: SinkInit::Zero,
            v: SinkInit::Zero,
        },
    ));
    assert!(!vs.variables().keys().any(|n| n.contains("sink")));
}

#[test]
fn position_parameters_exist_only_where_configured() {
    for pos in POSITIONALS {
        let (vs, _) = build(&tiny(pos, Sink::None));
        let names: Vec<String> = vs.variables().into_keys().collect();
        let has = |s: &str| names.iter().any(|n| n.contains(s));
        assert_eq!(
            has("trunk.position"),
            pos == PosEncoding::Learned,
            "{pos:?}"
        );
        assert_eq!(
            has("trunk.episode_step"),
            pos == PosEncoding::EpisodeRope,
            "{pos:?}"
        );
    }
}

/// With no positions, one layer is a set function of the earlier context.
#[test]
fn one_layer_without_positions_is_permutation_invariant() {
    tch::manual_seed(6);
    for sink in sinks() {
        let cfg = ModelConfig {
            layers: 1,
            ..tiny(PosEncoding::None, sink)
        };
        let (_vs, model) = build(&cfg);
        let x = trial(16, 5, &spec());
        let perm = Tensor::randperm(15, (Kind::Int64, Device::Cpu));
        let order = Tensor::cat(&[perm, Tensor::from_slice(&[15i64])], 0);
        let shuffled = agent::StepInputs {
            vector: x.vector.index_select(1, &order),
            image: x.image.as_ref().map(|i| i.index_select(1, &order)),
            prev_action: x.prev_action.index_select(1, &order),
            prev_reward: x.prev_reward.index_select(1, &order),
            episode_index: x.episode_index.index_select(1, &order),
            step_in_episode: x.step_in_episode.index_select(1, &order),
        };
        let (l1, v1) = model.forward(&x, false).unwrap();
        let (l2, v2) = model.forward(&shuffled, false).unwrap();
        assert!(
            max_diff(&l1.narrow(1, 15, 1), &l2.narrow(1, 15, 1)) < 1e-5,
            "{sink:?}"
        );
        assert!(
            max_diff(&v1.narrow(1, 15, 1), &v2.narrow(1, 15, 1)) < 1e-5,
            "{sink:?}"
        );
    }
}

/// Without inter-episode attention, a trial's forward equals forwards of each episode on
/// its own (positions that only depend on the episode: None, Rope (relative), EpisodeRope).
#[test]
fn block_diagonal_mask_matches_per_episode_forwards() {
    tch::manual_seed(7);
    for pos in [
        PosEncoding::None,
        PosEncoding::Rope,
        PosEncoding::EpisodeRope,
    ] {
        for sink in [
            Sink::None,
            Sink::SinkToken,
            Sink::SinkKv {
                k: SinkInit::Zero,
                v: SinkInit::Learned,
            },
        ] {
            let cfg = ModelConfig {
                inter_episode_attention: false,
                ..tiny(pos, sink)
            };
            if pos == PosEncoding::Rope && sink == Sink::SinkToken {
                continue; // an unrotated sink key against rotated queries is not translation invariant
            }
            let (_vs, model) = build(&cfg);
            let x = trial(20, 6, &spec());
            let (logits, values) = model.forward(&x, false).unwrap();
            let episodes = Vec::<i64>::try_from(x.episode_index.get(0)).unwrap();
            let mut start = 0usize;
            while start < episodes.len() {
                let end = episodes
                    .iter()
                    .rposition(|&e| e == episodes[start])
                    .unwrap()
                    + 1;
                let len = (end - start) as i64;
                let (l, v) = model
                    .forward(&x.narrow_time(start as i64, len), false)
                    .unwrap();
                let dl = max_diff(&l, &logits.narrow(1, start as i64, len));
                let dv = max_diff(&v, &values.narrow(1, start as i64, len));
                assert!(
                    dl <= TOL && dv <= TOL,
                    "{pos:?} {sink:?} episode at {start}: {dl} {dv}"
                );
                start = end;
            }
        }
    }
}

#[test]
fn save_load_round_trip_gives_identical_outputs() {
    tch::manual_seed(8);
    let cfg = tiny(
        PosEncoding::EpisodeRope,
        Sink::SinkKv {
            k: SinkInit::Learned,
            v: SinkInit::Zero,
        },
    );
    let (vs, model) = build(&cfg);
    let names: Vec<String> = vs.variables().into_keys().collect();
    for expected in [
        "trunk.layers.0.attn.wq.weight",
        "trunk.layers.1.attn.sink_k",
        "trunk.norm.weight",
        "actor.weight",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    vs.save(&path).unwrap();
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let model2 = ActorCritic::new(&vs2.root(), &cfg, &spec()).unwrap();
    scramble(&vs2);
    vs2.load(&path).unwrap();
    let x = trial(9, 4, &spec());
    let (l1, v1) = model.forward(&x, false).unwrap();
    let (l2, v2) = model2.forward(&x, false).unwrap();
    assert_eq!(max_diff(&l1, &l2), 0.0);
    assert_eq!(max_diff(&v1, &v2), 0.0);
}

#[test]
fn depth_dropout_only_in_training() {
    tch::manual_seed(9);
    let cfg = ModelConfig {
        depth_dropout: 0.5,
        layers: 4,
        ..tiny(PosEncoding::Rope, Sink::None)
    };
    let (_vs, model) = build(&cfg);
    let x = trial(8, 4, &spec());
    let (eval1, _) = model.forward(&x, false).unwrap();
    let (eval2, _) = model.forward(&x, false).unwrap();
    assert_eq!(max_diff(&eval1, &eval2), 0.0);
    let differs = (0..20).any(|_| max_diff(&model.forward(&x, true).unwrap().0, &eval1) > 1e-6);
    assert!(
        differs,
        "depth dropout never dropped a layer in 20 training forwards"
    );
}

#[test]
fn config_validation_and_ron() {
    assert!(ModelConfig::default().validate().is_empty());
    assert!(ModelConfig::relic_small().validate().is_empty());
    let bad = ModelConfig {
        d_model: 30,
        heads: 4,
        layers: 0,
        depth_dropout: 1.0,
        ..ModelConfig::default()
    };
    let fields: Vec<String> = bad.validate().into_iter().map(|(f, _)| f).collect();
    for f in ["d_model", "layers", "depth_dropout"] {
        assert!(fields.iter().any(|x| x == f), "{f} missing in {fields:?}");
    }
    let odd = ModelConfig {
        d_model: 24,
        heads: 8,
        positional: PosEncoding::Rope,
        ..ModelConfig::default()
    };
    assert!(odd.validate().iter().any(|(f, _)| f == "heads"));
    assert!(ActorCritic::new(&nn::VarStore::new(Device::Cpu).root(), &bad, &spec()).is_err());

    let text = ron::to_string(&ModelConfig::default()).unwrap();
    let back: ModelConfig = ron::from_str(&text).unwrap();
    assert_eq!(back, ModelConfig::default());
    let parsed: ModelConfig =
        ron::from_str("(layers: 4, positional: None, sink: SinkKv(k: Zero, v: Zero))").unwrap();
    assert_eq!(parsed.layers, 4);
    assert_eq!(
        parsed.sink,
        Sink::SinkKv {
            k: SinkInit::Zero,
            v: SinkInit::Zero
        }
    );
    assert!(ron::from_str::<ModelConfig>("(layerz: 4)").is_err());
}

#[test]
fn dpt_model_is_causal_over_transitions() {
    tch::manual_seed(10);
    for pos in [PosEncoding::None, PosEncoding::Learned] {
        let cfg = tiny(pos, Sink::None);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = SequenceModel::new(&vs.root(), &cfg, 2, 5).unwrap();
        let (b, t) = (3i64, 10i64);
        let f = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let (query, states, rewards, next) = (f(&[b, 2]), f(&[b, t, 2]), f(&[b, t]), f(&[b, t, 2]));
        let actions = Tensor::randint(5, [b, t], (Kind::Int64, Device::Cpu));
        let logits = model
            .forward_dpt(&query, &states, &actions, &rewards, &next, false)
            .unwrap();
        assert_eq!(logits.size(), [b, t + 1, 5]);
        // Changing transition 6 (0-based) leaves positions 0..=6 alone (they see 0..6).
        let rewards2 = rewards.copy();
        let _ = rewards2.narrow(1, 6, 1).fill_(5.0);
        let logits2 = model
            .forward_dpt(&query, &states, &actions, &rewards2, &next, false)
            .unwrap();
        assert!(max_diff(&logits.narrow(1, 0, 7), &logits2.narrow(1, 0, 7)) < 1e-6);
        assert!(max_diff(&logits.narrow(1, 7, 4), &logits2.narrow(1, 7, 4)) > 1e-4);
        // Empty context: just the query.
        let empty = Tensor::zeros([b, 0, 2], (Kind::Float, Device::Cpu));
        let none = Tensor::zeros([b, 0], (Kind::Int64, Device::Cpu));
        let r0 = Tensor::zeros([b, 0], (Kind::Float, Device::Cpu));
        let l0 = model
            .forward_dpt(&query, &empty, &none, &r0, &empty, false)
            .unwrap();
        assert!(max_diff(&l0, &logits.narrow(1, 0, 1)) < 1e-5);
        // Bad actions are errors, not panics.
        assert!(model
            .forward_dpt(&query, &states, &actions.fill(7), &rewards, &next, false)
            .is_err());
    }
    let vs = nn::VarStore::new(Device::Cpu);
    assert!(SequenceModel::new(
        &vs.root(),
        &tiny(PosEncoding::EpisodeRope, Sink::None),
        2,
        5
    )
    .is_err());
}

#[test]
fn gru_sequence_equals_steps_with_resets() {
    tch::manual_seed(11);
    let cfg = tiny(PosEncoding::None, Sink::None);
    let vs = nn::VarStore::new(Device::Cpu);
    let policy = GruPolicy::new(&vs.root(), &cfg, &spec(), 12).unwrap();
    let x = cat(&[&trial(9, 4, &spec()), &trial(9, 4, &spec())], 0);
    let reset = Tensor::zeros([2, 9], (Kind::Bool, Device::Cpu));
    let _ = reset.get(0).get(4).fill_(1);
    let _ = reset.get(1).get(0).fill_(1);
    let h0 = Tensor::randn([2, 12], (Kind::Float, Device::Cpu));
    let (logits, values, h_end) = policy.forward_sequence(&x, &h0, &reset).unwrap();
    assert_eq!(logits.size(), [2, 9, 4]);
    let mut h = h0;
    for t in 0..9 {
        let keep = reset.narrow(1, t, 1).logical_not().to_kind(Kind::Float);
        let (l, v, next) = policy.step(&x.narrow_time(t, 1), &(h * keep)).unwrap();
        assert!(max_diff(&l, &logits.select(1, t)) < 1e-5);
        assert!(max_diff(&v, &values.select(1, t)) < 1e-5);
        h = next;
    }
    assert!(max_diff(&h, &h_end) < 1e-6);
    assert!(policy.step(&x, &policy.initial_state(2)).is_err()); // T = 9 is not one step
}
