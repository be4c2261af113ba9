//! ReLIC's policy: step tokens -> transformer trunk -> categorical actor + scalar critic.
//! AD uses the same model and ignores the value.

use crate::cache::KvCache;
use crate::config::{ModelConfig, ObsSpec};
use crate::tokens::{StepInputs, TokenEncoder};
use crate::transformer::{LayerAttention, Transformer};
use anyhow::{ensure, Result};
use tch::{nn, Kind, Tensor};

/// Transformer actor-critic over whole trials. Parameter names: "token.*", "trunk.*",
/// "actor.*", "critic.*" under the path it was built on.
#[derive(Debug)]
pub struct ActorCritic {
    /// Step-token encoder.
    pub encoder: TokenEncoder,
    /// Transformer trunk.
    pub trunk: Transformer,
    /// Action logits head `D -> A`.
    pub actor: nn::Linear,
    /// Value head `D -> 1`.
    pub critic: nn::Linear,
    spec: ObsSpec,
}

impl ActorCritic {
    /// Builds the model under `path`. With `cfg.dtype = Bf16`, convert the VarStore
    /// afterwards (`vs.set_kind(Kind::BFloat16)`).
    pub fn new(path: &nn::Path, cfg: &ModelConfig, spec: &ObsSpec) -> Result<Self> {
        cfg.check()?;
        let d = cfg.d_model as i64;
        Ok(ActorCritic {
            encoder: TokenEncoder::new(&(path / "token"), cfg, spec)?,
            trunk: Transformer::new(&(path / "trunk"), cfg)?,
            actor: nn::linear(
                path / "actor",
                d,
                spec.num_actions as i64,
                Default::default(),
            ),
            critic: nn::linear(path / "critic", d, 1, Default::default()),
            spec: spec.clone(),
        })
    }

    /// The observation spec the model was built for.
    pub fn spec(&self) -> &ObsSpec {
        &self.spec
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        self.trunk.config()
    }

    /// Trunk output `[B, T, D]` -> (logits `[B, T, A]`, value `[B, T]`), both f32.
    fn heads(&self, h: &Tensor) -> (Tensor, Tensor) {
        let logits = h.apply(&self.actor).to_kind(Kind::Float);
        let value = h.apply(&self.critic).squeeze_dim(-1).to_kind(Kind::Float);
        (logits, value)
    }

    /// Errors unless the inputs fit the spec and the parameters are in `cfg.dtype`.
    fn check(&self, x: &StepInputs) -> Result<()> {
        let (want, have) = (self.config().dtype.kind(), self.actor.ws.kind());
        ensure!(
            want == have,
            "model.dtype is {want:?} but the parameters are {have:?}; call vs.set_kind({want:?})"
        );
        x.check(&self.spec)
    }

    /// Full causal forward over whole trials from their start (inputs `[B, T]`):
    /// (logits `[B, T, A]`, value `[B, T]`). `train` enables depth dropout.
    pub fn forward(&self, x: &StepInputs, train: bool) -> Result<(Tensor, Tensor)> {
        self.forward_layers(x, &self.trunk.draw_layers(train))
    }

    /// [`ActorCritic::forward`] with the trunk's blocks chosen by `kept` (one flag per block,
    /// from [`Transformer::draw_layers`]) instead of drawn: data-parallel replicas run one
    /// draw of depth dropout on every shard of a minibatch.
    pub fn forward_layers(&self, x: &StepInputs, kept: &[bool]) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let tokens = self.encoder.forward(x);
        let h = self
            .trunk
            .forward_layers(&tokens, &x.episode_index, &x.step_in_episode, kept)?;
        Ok(self.heads(&h))
    }

    /// Attention statistics of every layer (`[layers]`, each per head) over whole trials
    /// from their start (inputs `[B, T]`, a small probe such as a few env sequences), from
    /// an evaluation-mode forward with explicit attention probabilities. No gradients, no
    /// random draws: training is unchanged by calling it.
    pub fn attention_diagnostics(&self, x: &StepInputs) -> Result<Vec<LayerAttention>> {
        let _no_grad = tch::no_grad_guard();
        self.check(x)?;
        let tokens = self.encoder.forward(x);
        let (_, layers) =
            self.trunk
                .forward_with_attention(&tokens, &x.episode_index, &x.step_in_episode)?;
        Ok(layers)
    }

    /// Appends `t >= 1` steps per slot (inputs `[B, t]`) to `cache` and returns their
    /// (logits `[B, t, A]`, value `[B, t]`). No gradients. Chunked prefill = decode with
    /// `t = chunk`.
    pub fn decode(&self, cache: &mut KvCache, x: &StepInputs) -> Result<(Tensor, Tensor)> {
        let _no_grad = tch::no_grad_guard();
        self.check(x)?;
        let tokens = self.encoder.forward(x);
        let h = self
            .trunk
            .decode(&tokens, &x.episode_index, &x.step_in_episode, cache)?;
        Ok(self.heads(&h))
    }

    /// Appends a long prefix `[B, T]` in chunks of `chunk` steps; returns (logits
    /// `[B, T, A]`, value `[B, T]`) of all of it.
    pub fn prefill(
        &self,
        cache: &mut KvCache,
        x: &StepInputs,
        chunk: usize,
    ) -> Result<(Tensor, Tensor)> {
        ensure!(chunk > 0, "prefill chunk must be at least 1");
        let (_, t) = x.batch_time();
        let (mut logits, mut values) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < t {
            let len = (chunk as i64).min(t - start);
            let (l, v) = self.decode(cache, &x.narrow_time(start, len))?;
            logits.push(l);
            values.push(v);
            start += len;
        }
        ensure!(!logits.is_empty(), "prefill of an empty sequence");
        Ok((Tensor::cat(&logits, 1), Tensor::cat(&values, 1)))
    }

    /// After a policy update: empties every slot and prefills the whole prefix `[B, T]`
    /// with the current parameters; returns its (logits, values).
    pub fn recompute(
        &self,
        cache: &mut KvCache,
        x: &StepInputs,
        chunk: usize,
    ) -> Result<(Tensor, Tensor)> {
        cache.reset_all();
        self.prefill(cache, x, chunk)
    }
}
