//! One env step = one token: `vector_mlp(vector) + image_cnn(image) + embed(prev_action)
//! + linear(prev_reward)`, each term of width d_model.

use crate::config::{ModelConfig, ObsSpec};
use anyhow::{ensure, Result};
use tch::{nn, Kind, Tensor};

/// The inputs of env steps, leading dims `[B, T]`.
#[derive(Debug)]
pub struct StepInputs {
    /// `[B, T, V]` f32 vector observation (V = `ObsSpec::vector_dim`, may be 0).
    pub vector: Tensor,
    /// `[B, T, H, W, 3]` u8 RGB observation, when the spec has an image.
    pub image: Option<Tensor>,
    /// `[B, T]` i64: 0 at an episode start, else previous action + 1.
    pub prev_action: Tensor,
    /// `[B, T]` f32: previous reward (0 at an episode start).
    pub prev_reward: Tensor,
    /// `[B, T]` i64: episode number within the trial (0, 1, ...).
    pub episode_index: Tensor,
    /// `[B, T]` i64: step within the current episode (0 at its start).
    pub step_in_episode: Tensor,
}

impl StepInputs {
    /// `(B, T)` of these inputs.
    pub fn batch_time(&self) -> (i64, i64) {
        let s = self.prev_action.size();
        (
            s.first().copied().unwrap_or(0),
            s.get(1).copied().unwrap_or(0),
        )
    }

    /// The same inputs on `device`.
    pub fn to_device(&self, device: tch::Device) -> StepInputs {
        let d = |x: &Tensor| x.to_device(device);
        StepInputs {
            vector: d(&self.vector),
            image: self.image.as_ref().map(d),
            prev_action: d(&self.prev_action),
            prev_reward: d(&self.prev_reward),
            episode_index: d(&self.episode_index),
            step_in_episode: d(&self.step_in_episode),
        }
    }

    /// Tokens `start..start + len` of every sequence (a view, no copy).
    pub fn narrow_time(&self, start: i64, len: i64) -> StepInputs {
        let n = |x: &Tensor| x.narrow(1, start, len);
        StepInputs {
            vector: n(&self.vector),
            image: self.image.as_ref().map(n),
            prev_action: n(&self.prev_action),
            prev_reward: n(&self.prev_reward),
            episode_index: n(&self.episode_index),
            step_in_episode: n(&self.step_in_episode),
        }
    }

    /// Sequences `start..start + len` of the batch (a view, no copy).
    pub fn narrow_rows(&self, start: i64, len: i64) -> StepInputs {
        let n = |x: &Tensor| x.narrow(0, start, len);
        StepInputs {
            vector: n(&self.vector),
            image: self.image.as_ref().map(n),
            prev_action: n(&self.prev_action),
            prev_reward: n(&self.prev_reward),
            episode_index: n(&self.episode_index),
            step_in_episode: n(&self.step_in_episode),
        }
    }

    /// Sequences `rows` of the batch (`rows: [b]` i64 indices).
    pub fn select_rows(&self, rows: &Tensor) -> StepInputs {
        let s = |x: &Tensor| x.index_select(0, rows);
        StepInputs {
            vector: s(&self.vector),
            image: self.image.as_ref().map(s),
            prev_action: s(&self.prev_action),
            prev_reward: s(&self.prev_reward),
            episode_index: s(&self.episode_index),
            step_in_episode: s(&self.step_in_episode),
        }
    }

    /// Errors (with the offending shape or value) unless these inputs fit `spec`.
    pub fn check(&self, spec: &ObsSpec) -> Result<()> {
        let (b, t) = self.batch_time();
        let a = self.prev_action.size();
        ensure!(a.len() == 2, "prev_action must be [B, T], got {a:?}");
        ensure!(
            self.prev_action.kind() == Kind::Int64,
            "prev_action must be i64"
        );
        for (name, x) in [
            ("prev_reward", &self.prev_reward),
            ("episode_index", &self.episode_index),
            ("step_in_episode", &self.step_in_episode),
        ] {
            ensure!(
                x.size() == [b, t],
                "{name} must be [B, T] = [{b}, {t}], got {:?}",
                x.size()
            );
        }
        for (name, x) in [
            ("episode_index", &self.episode_index),
            ("step_in_episode", &self.step_in_episode),
        ] {
            ensure!(
                x.kind() == Kind::Int64,
                "{name} must be i64, got {:?}",
                x.kind()
            );
        }
        let v = spec.vector_dim as i64;
        ensure!(
            self.vector.size() == [b, t, v],
            "vector must be [B, T, V] = [{b}, {t}, {v}], got {:?}",
            self.vector.size()
        );
        match (&self.image, spec.image) {
            (Some(img), Some((h, w))) => {
                let want = [b, t, h as i64, w as i64, 3];
                ensure!(
                    img.size() == want,
                    "image must be {want:?}, got {:?}",
                    img.size()
                );
                ensure!(
                    img.kind() == Kind::Uint8,
                    "image must be u8, got {:?}",
                    img.kind()
                );
            }
            (None, None) => {}
            (Some(_), None) => anyhow::bail!("inputs carry an image but the spec has none"),
            (None, Some(_)) => anyhow::bail!("the spec has an image but the inputs carry none"),
        }
        if b * t > 0 {
            let (lo, hi) = (
                self.prev_action.min().int64_value(&[]),
                self.prev_action.max().int64_value(&[]),
            );
            let n = spec.num_actions as i64;
            ensure!(
                lo >= 0 && hi <= n,
                "prev_action must lie in [0, {n}] (0 = episode start), got [{lo}, {hi}]"
            );
        }
        Ok(())
    }
}

/// Small CNN over RGB frames: conv(k3, s2, pad 1) + ReLU per entry of `cnn_channels`,
/// then flatten and a linear layer to d_model.
#[derive(Debug)]
pub struct ImageCnn {
    convs: Vec<nn::Conv2D>,
    proj: nn::Linear,
}

impl ImageCnn {
    fn new(p: nn::Path, cfg: &ModelConfig, (height, width): (usize, usize)) -> Self {
        let conv_cfg = nn::ConvConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        let (mut c, mut h, mut w) = (3i64, height as i64, width as i64);
        let mut convs = Vec::new();
        for (i, &out) in cfg.cnn_channels.iter().enumerate() {
            convs.push(nn::conv2d(
                &p / format!("conv{i}"),
                c,
                out as i64,
                3,
                conv_cfg,
            ));
            (c, h, w) = (out as i64, (h + 1) / 2, (w + 1) / 2); // ceil(h / 2) with k3 s2 p1
        }
        let proj = nn::linear(
            &p / "proj",
            c * h * w,
            cfg.d_model as i64,
            Default::default(),
        );
        ImageCnn { convs, proj }
    }

    /// `[B, T, H, W, 3]` u8 -> `[B, T, D]`.
    fn forward(&self, image: &Tensor, kind: Kind) -> Tensor {
        let s = image.size();
        let mut x = image
            .reshape([s[0] * s[1], s[2], s[3], 3])
            .permute([0, 3, 1, 2])
            .to_kind(kind)
            / 255.0;
        for conv in &self.convs {
            x = x.apply(conv).relu();
        }
        x.flatten(1, -1).apply(&self.proj).view([s[0], s[1], -1])
    }
}

/// Step-token encoder (ReLIC tokens; also used by the GRU policy).
#[derive(Debug)]
pub struct TokenEncoder {
    /// Vector MLP `V -> encoder_hidden -> D` ("vector.fc1", "vector.fc2"); None when V = 0.
    pub(crate) vector: Option<(nn::Linear, nn::Linear)>,
    /// Image CNN ("image.*"), when the spec has an image.
    pub(crate) image: Option<ImageCnn>,
    /// Embedding of the previous action, `num_actions + 1` ids ("prev_action").
    pub(crate) prev_action: nn::Embedding,
    /// Linear `1 -> D` of the previous reward ("prev_reward").
    pub(crate) prev_reward: nn::Linear,
    kind: Kind,
}

impl TokenEncoder {
    /// Builds the encoder under `p` (e.g. `root / "token"`).
    pub fn new(p: &nn::Path, cfg: &ModelConfig, spec: &ObsSpec) -> Result<Self> {
        spec.check()?;
        let (d, hidden) = (cfg.d_model as i64, cfg.encoder_hidden as i64);
        let vector = (spec.vector_dim > 0).then(|| {
            let fc1 = nn::linear(
                p / "vector" / "fc1",
                spec.vector_dim as i64,
                hidden,
                Default::default(),
            );
            let fc2 = nn::linear(p / "vector" / "fc2", hidden, d, Default::default());
            (fc1, fc2)
        });
        let image = spec.image.map(|hw| ImageCnn::new(p / "image", cfg, hw));
        let emb_cfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.,
                stdev: 0.02,
            },
            ..Default::default()
        };
        Ok(TokenEncoder {
            vector,
            image,
            prev_action: nn::embedding(p / "prev_action", spec.num_actions as i64 + 1, d, emb_cfg),
            prev_reward: nn::linear(p / "prev_reward", 1, d, Default::default()),
            kind: cfg.dtype.kind(),
        })
    }

    /// Tokens `[B, T, D]` for (already checked) inputs.
    pub fn forward(&self, x: &StepInputs) -> Tensor {
        let reward = x.prev_reward.to_kind(self.kind).unsqueeze(-1); // [B, T, 1]
        let mut token = x.prev_action.apply(&self.prev_action).to_kind(self.kind)
            + reward.apply(&self.prev_reward);
        if let Some((fc1, fc2)) = &self.vector {
            token += x
                .vector
                .to_kind(self.kind)
                .apply(fc1)
                .gelu("none")
                .apply(fc2);
        }
        if let (Some(cnn), Some(img)) = (&self.image, &x.image) {
            token += cnn.forward(img, self.kind);
        }
        token
    }
}
