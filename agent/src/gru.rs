//! The RL² baseline: step tokens -> GRU -> actor + critic. The hidden state carries the
//! trial's memory; it is zeroed at trial boundaries (`reset` flags).

use crate::config::{ModelConfig, ObsSpec};
use crate::tokens::{StepInputs, TokenEncoder};
use anyhow::{ensure, Result};
use tch::{nn, Kind, Tensor};

/// Recurrent actor-critic. Parameter names: "token.*", "gru.{weight_ih, weight_hh,
/// bias_ih, bias_hh}", "actor.*", "critic.*".
#[derive(Debug)]
pub struct GruPolicy {
    /// Step-token encoder (same as the transformer's).
    pub encoder: TokenEncoder,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
    /// Action logits head `hidden -> A`.
    pub actor: nn::Linear,
    /// Value head `hidden -> 1`.
    pub critic: nn::Linear,
    hidden: i64,
    spec: ObsSpec,
}

impl GruPolicy {
    /// Builds the policy; `cfg` sizes the token encoder (tokens of width `d_model`),
    /// `hidden` is the GRU state size.
    pub fn new(path: &nn::Path, cfg: &ModelConfig, spec: &ObsSpec, hidden: usize) -> Result<Self> {
        cfg.check()?;
        ensure!(hidden > 0, "GRU hidden size must be at least 1");
        let (d, h) = (cfg.d_model as i64, hidden as i64);
        let g = path / "gru";
        let bound = 1.0 / (h as f64).sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(GruPolicy {
            encoder: TokenEncoder::new(&(path / "token"), cfg, spec)?,
            weight_ih: g.var("weight_ih", &[3 * h, d], init),
            weight_hh: g.var("weight_hh", &[3 * h, h], init),
            bias_ih: g.var("bias_ih", &[3 * h], init),
            bias_hh: g.var("bias_hh", &[3 * h], init),
            actor: nn::linear(
                path / "actor",
                h,
                spec.num_actions as i64,
                Default::default(),
            ),
            critic: nn::linear(path / "critic", h, 1, Default::default()),
            hidden: h,
            spec: spec.clone(),
        })
    }

    /// A zero hidden state `[B, hidden]` on the parameters' device and kind.
    pub fn initial_state(&self, batch: usize) -> Tensor {
        Tensor::zeros(
            [batch as i64, self.hidden],
            (self.weight_hh.kind(), self.weight_hh.device()),
        )
    }

    fn cell(&self, token: &Tensor, h: &Tensor) -> Tensor {
        token.gru_cell(
            h,
            &self.weight_ih,
            &self.weight_hh,
            Some(&self.bias_ih),
            Some(&self.bias_hh),
        )
    }

    fn check_state(&self, h: &Tensor, b: i64) -> Result<()> {
        ensure!(
            h.size() == [b, self.hidden],
            "hidden state must be [{b}, {}], got {:?}",
            self.hidden,
            h.size()
        );
        Ok(())
    }

    /// One step for every env: inputs `[B, 1]`, hidden `[B, hidden]` ->
    /// (logits `[B, A]`, value `[B]`, next hidden).
    pub fn step(&self, x: &StepInputs, h: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        x.check(&self.spec)?;
        let (b, t) = x.batch_time();
        ensure!(t == 1, "GruPolicy::step takes one step per env, got {t}");
        self.check_state(h, b)?;
        let token = self.encoder.forward(x).squeeze_dim(1); // [B, D]
        let h = self.cell(&token, h);
        let logits = h.apply(&self.actor).to_kind(Kind::Float);
        let value = h.apply(&self.critic).squeeze_dim(-1).to_kind(Kind::Float);
        Ok((logits, value, h))
    }

    /// Sequence forward: inputs `[B, T]`, initial hidden `h0: [B, hidden]`, `reset: [B, T]`
    /// bool (true = zero the hidden state before that step) -> (logits `[B, T, A]`, value
    /// `[B, T]`, final hidden).
    pub fn forward_sequence(
        &self,
        x: &StepInputs,
        h0: &Tensor,
        reset: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        x.check(&self.spec)?;
        let (b, t) = x.batch_time();
        self.check_state(h0, b)?;
        ensure!(
            reset.size() == [b, t],
            "reset must be [B, T] = [{b}, {t}], got {:?}",
            reset.size()
        );
        let tokens = self.encoder.forward(x); // [B, T, D]
        let keep = reset.logical_not().to_kind(h0.kind()).unsqueeze(-1); // [B, T, 1]
        let mut h = h0.shallow_clone();
        let mut outputs = Vec::with_capacity(t as usize);
        for i in 0..t {
            h = self.cell(&tokens.select(1, i), &(h * keep.select(1, i)));
            outputs.push(h.shallow_clone());
        }
        ensure!(!outputs.is_empty(), "forward_sequence of an empty sequence");
        let hs = Tensor::stack(&outputs, 1); // [B, T, hidden]
        let logits = hs.apply(&self.actor).to_kind(Kind::Float);
        let value = hs.apply(&self.critic).squeeze_dim(-1).to_kind(Kind::Float);
        Ok((logits, value, h))
    }
}
