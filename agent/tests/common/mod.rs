//! Shared helpers of the agent tests: tiny configs, random trials, parameter scrambling.
#![allow(dead_code)]

use agent::{ModelConfig, ObsSpec, PosEncoding, Sink, SinkInit, StepInputs};
use tch::{nn, Kind, Tensor};

/// Every positional encoding.
pub const POSITIONALS: [PosEncoding; 4] = [
    PosEncoding::None,
    PosEncoding::Learned,
    PosEncoding::Rope,
    PosEncoding::EpisodeRope,
];

/// Every sink variant of ReLIC's ablation.
pub fn sinks() -> Vec<Sink> {
    use SinkInit::{Learned, Zero};
    vec![
        Sink::None,
        Sink::SinkToken,
        Sink::SinkKv {
            k: Learned,
            v: Learned,
        },
        Sink::SinkKv {
            k: Learned,
            v: Zero,
        },
        Sink::SinkKv {
            k: Zero,
            v: Learned,
        },
        Sink::SinkKv { k: Zero, v: Zero },
    ]
}

/// A tiny model: 2 layers, 2 heads, width 16, no depth dropout.
pub fn tiny(positional: PosEncoding, sink: Sink) -> ModelConfig {
    ModelConfig {
        layers: 2,
        heads: 2,
        d_model: 16,
        mlp_hidden: 32,
        positional,
        sink,
        depth_dropout: 0.0,
        max_positions: 128,
        max_episode_steps: 32,
        encoder_hidden: 16,
        cnn_channels: vec![4, 4],
        ..ModelConfig::default()
    }
}

/// 3-d vectors, 6x6 images, 4 actions.
pub fn spec() -> ObsSpec {
    ObsSpec {
        vector_dim: 3,
        image: Some((6, 6)),
        num_actions: 4,
    }
}

/// Replaces every parameter by N(0, 0.3^2) noise, so zero-initialised sinks matter.
pub fn scramble(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            let noise = Tensor::randn_like(&v) * 0.3;
            v.copy_(&noise);
        }
    });
}

/// One random trial `[1, t]` whose episodes have lengths drawn from 1..=max_episode.
pub fn trial(t: i64, max_episode: i64, spec: &ObsSpec) -> StepInputs {
    let mut episode = Vec::with_capacity(t as usize);
    let mut step = Vec::with_capacity(t as usize);
    let (mut e, mut s, mut len) = (0i64, 0i64, 1 + rand_below(max_episode));
    for _ in 0..t {
        if s == len {
            (e, s, len) = (e + 1, 0, 1 + rand_below(max_episode));
        }
        episode.push(e);
        step.push(s);
        s += 1;
    }
    let step = Tensor::from_slice(&step).view([1, t]);
    let actions = Tensor::randint_low(
        1,
        spec.num_actions as i64 + 1,
        [1, t],
        (Kind::Int64, tch::Device::Cpu),
    );
    let start = step.eq(0);
    let (h, w) = spec.image.unwrap_or((1, 1));
    StepInputs {
        vector: Tensor::randn(
            [1, t, spec.vector_dim as i64],
            (Kind::Float, tch::Device::Cpu),
        ),
        image: spec.image.map(|_| {
            Tensor::randint(
                256,
                [1, t, h as i64, w as i64, 3],
                (Kind::Uint8, tch::Device::Cpu),
            )
        }),
        prev_action: actions.masked_fill(&start, 0),
        prev_reward: Tensor::randn([1, t], (Kind::Float, tch::Device::Cpu))
            .masked_fill(&start, 0.0),
        episode_index: Tensor::from_slice(&episode).view([1, t]),
        step_in_episode: step,
    }
}

fn rand_below(n: i64) -> i64 {
    Tensor::randint(n, [1], (Kind::Int64, tch::Device::Cpu)).int64_value(&[0])
}

/// Concatenates inputs along `dim` (0 = batch, 1 = time).
pub fn cat(parts: &[&StepInputs], dim: i64) -> StepInputs {
    let c = |f: &dyn Fn(&StepInputs) -> Tensor| {
        Tensor::cat(&parts.iter().map(|p| f(p)).collect::<Vec<_>>(), dim)
    };
    StepInputs {
        vector: c(&|p| p.vector.shallow_clone()),
        image: parts[0]
            .image
            .as_ref()
            .map(|_| c(&|p| p.image.as_ref().unwrap().shallow_clone())),
        prev_action: c(&|p| p.prev_action.shallow_clone()),
        prev_reward: c(&|p| p.prev_reward.shallow_clone()),
        episode_index: c(&|p| p.episode_index.shallow_clone()),
        step_in_episode: c(&|p| p.step_in_episode.shallow_clone()),
    }
}

/// Max absolute difference.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}
