//! Adam / AdamW over the tensors of a tch VarStore, with its state (moments, step) held as named
//! tensors so checkpoints restore it exactly; global-norm gradient clipping; and the learning-rate
//! schedule (linear warm-up then cosine decay) shared by the methods.

use tch::{nn::VarStore, Kind, Tensor};

/// Adam (decoupled weight decay when `weight_decay > 0`, i.e. AdamW).
pub struct Adam {
    /// (variable name, parameter) in a fixed (sorted) order.
    params: Vec<(String, Tensor)>,
    /// First moments, one per parameter.
    m: Vec<Tensor>,
    /// Second moments, one per parameter.
    v: Vec<Tensor>,
    /// f32 master copy of each parameter stored in a narrower type (bf16 models): the step
    /// runs on it and writes the rounded result back, so updates smaller than a bf16 ulp of
    /// the weight accumulate instead of vanishing. None for f32 (and f64) parameters.
    master: Vec<Option<Tensor>>,
    /// Optimiser steps taken.
    pub step: i64,
    /// Exponential decay of the first moment.
    pub beta1: f64,
    /// Exponential decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator for stability.
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 = plain Adam.
    pub weight_decay: f64,
}

impl Adam {
    /// An optimiser over every trainable variable of `vs`.
    pub fn new(vs: &VarStore, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        // Moments in f32 at least, whatever the parameters' type.
        let zeros = |t: &Tensor| {
            Tensor::zeros(t.size(), (wide_kind(t.kind()), t.device())).set_requires_grad(false)
        };
        let m = params.iter().map(|(_, t)| zeros(t)).collect();
        let v = params.iter().map(|(_, t)| zeros(t)).collect();
        let master = params.iter().map(|(_, t)| master_copy(t)).collect();
        Adam {
            params,
            m,
            v,
            master,
            step: 0,
            beta1,
            beta2,
            eps,
            weight_decay,
        }
    }

    /// Sets every parameter's gradient to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// The global L2 norm of all gradients.
    pub fn grad_norm(&self) -> f64 {
        let _guard = tch::no_grad_guard();
        let mut total = 0.0;
        for (_, p) in &self.params {
            let grad = p.grad();
            if grad.defined() {
                total += grad
                    .to_kind(Kind::Double)
                    .pow_tensor_scalar(2)
                    .sum(Kind::Double)
                    .double_value(&[]);
            }
        }
        total.sqrt()
    }

    /// The L2 norm of the gradients of each group of parameters, `group` naming a parameter's
    /// group from its variable name; groups in order of first appearance (names sorted).
    pub fn grad_norms_by(&self, group: impl Fn(&str) -> String) -> Vec<(String, f64)> {
        let _guard = tch::no_grad_guard();
        let mut squares: Vec<(String, f64)> = Vec::new();
        for (name, p) in &self.params {
            let grad = p.grad();
            let square = if grad.defined() {
                grad.to_kind(Kind::Double)
                    .pow_tensor_scalar(2)
                    .sum(Kind::Double)
                    .double_value(&[])
            } else {
                0.0
            };
            let g = group(name);
            match squares.iter_mut().find(|(n, _)| *n == g) {
                Some((_, total)) => *total += square,
                None => squares.push((g, square)),
            }
        }
        squares.into_iter().map(|(g, s)| (g, s.sqrt())).collect()
    }

    /// Scales gradients so their global norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.grad_norm();
        if norm.is_finite() && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            let _guard = tch::no_grad_guard();
            for (_, p) in &self.params {
                let mut grad = p.grad();
                if grad.defined() {
                    let _ = grad.g_mul_scalar_(scale);
                }
            }
        }
        norm
    }

    /// One supervised optimiser step on `loss`: when the loss is finite, backpropagate, clip
    /// the gradients to `max_grad_norm` and step at `lr`, returning the loss; when it is not,
    /// leave the weights alone and return None (the caller records a bad update).
    pub fn minimise(&mut self, loss: &Tensor, max_grad_norm: f64, lr: f64) -> Option<f64> {
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return None;
        }
        self.zero_grad();
        loss.backward();
        self.clip_grad_norm(max_grad_norm);
        self.step(lr);
        Some(value)
    }

    /// One Adam step at learning rate `lr` with the current gradients.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step as i32);
        let bias2 = 1.0 - self.beta2.powi(self.step as i32);
        for (((_, p), master), (m, v)) in self
            .params
            .iter_mut()
            .zip(self.master.iter_mut())
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            // A parameter that got no gradient (a block skipped by depth dropout) counts as a
            // zero gradient: its moments keep decaying exactly as after `zero_grad`, which is
            // what makes a resumed run (where such gradients start undefined) identical.
            let mut grad = p.grad();
            if !grad.defined() {
                grad = Tensor::zeros_like(p);
            }
            let grad = grad.to_kind(m.kind());
            // The step runs on the f32 master copy when there is one, then rounds into `p`.
            let target: &mut Tensor = match master {
                Some(w) => w,
                None => p,
            };
            if self.weight_decay > 0.0 {
                let _ = target.g_mul_scalar_(1.0 - lr * self.weight_decay);
            }
            // m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
            let _ = m
                .g_mul_scalar_(self.beta1)
                .g_add_(&(&grad * (1.0 - self.beta1)));
            let _ = v
                .g_mul_scalar_(self.beta2)
                .g_add_(&(&grad * &grad * (1.0 - self.beta2)));
            let denom = (&*v / bias2).sqrt() + self.eps;
            let update = (&*m / bias1) / denom * lr;
            let _ = target.g_sub_(&update);
            if let Some(w) = master {
                p.copy_(w);
            }
        }
    }

    /// The optimiser state as named tensors (`optim.m.<var>`, `optim.v.<var>`, `optim.step`,
    /// and `optim.master.<var>` for parameters narrower than f32), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.params.len() + 1);
        for (((name, _), master), (m, v)) in self
            .params
            .iter()
            .zip(&self.master)
            .zip(self.m.iter().zip(self.v.iter()))
        {
            out.push((format!("optim.m.{name}"), m.shallow_clone()));
            out.push((format!("optim.v.{name}"), v.shallow_clone()));
            if let Some(w) = master {
                out.push((format!("optim.master.{name}"), w.shallow_clone()));
            }
        }
        out.push(("optim.step".to_string(), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores the state written by [`Adam::state_tensors`]; every moment must be present
    /// with the parameter's shape. A master copy missing from the checkpoint (one written
    /// before master copies existed) is taken from the loaded parameter.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)]) -> anyhow::Result<()> {
        let find = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let _guard = tch::no_grad_guard();
        let mut problems = Vec::new();
        for ((name, p), (m, v)) in self
            .params
            .iter()
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            for (prefix, dst) in [("optim.m.", m), ("optim.v.", v)] {
                let key = format!("{prefix}{name}");
                match find(&key) {
                    Some(src) if src.size() == p.size() => dst.copy_(src),
                    Some(src) => problems.push(format!(
                        "tensor {key}: shape {:?} in checkpoint, {:?} in model",
                        src.size(),
                        p.size()
                    )),
                    None => problems.push(format!("tensor {key}: missing in checkpoint")),
                }
            }
        }
        for ((name, p), master) in self.params.iter().zip(self.master.iter_mut()) {
            if let Some(w) = master {
                match find(&format!("optim.master.{name}")) {
                    Some(src) if src.size() == p.size() => w.copy_(src),
                    _ => w.copy_(p),
                }
            }
        }
        match find("optim.step") {
            Some(t) => self.step = t.int64_value(&[0]),
            None => problems.push("tensor optim.step: missing in checkpoint".to_string()),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(
                "optimiser state does not match the model:\n  {}",
                problems.join("\n  ")
            )
        }
    }
}

/// The type optimiser state is kept in for parameters of `kind`: f32 for anything narrower.
fn wide_kind(kind: Kind) -> Kind {
    match kind {
        Kind::Double => Kind::Double,
        _ => Kind::Float,
    }
}

/// An f32 copy of a parameter stored in a narrower floating type (bf16, f16); None otherwise.
fn master_copy(p: &Tensor) -> Option<Tensor> {
    matches!(p.kind(), Kind::BFloat16 | Kind::Half)
        .then(|| p.detach().to_kind(Kind::Float).set_requires_grad(false))
}

/// Linear warm-up from `lr * start_factor` to `lr` over `warmup` steps, then cosine decay
/// to `final_lr` at `total` steps (constant after).
pub fn warmup_cosine(
    step: u64,
    lr: f64,
    start_factor: f64,
    warmup: u64,
    total: u64,
    final_lr: f64,
) -> f64 {
    if step < warmup {
        let frac = step as f64 / warmup as f64;
        return lr * (start_factor + (1.0 - start_factor) * frac);
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    final_lr + 0.5 * (lr - final_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn adam_matches_hand_computed_first_steps() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]));
        let mut opt = Adam::new(&vs, 0.9, 0.999, 1e-8, 0.0);
        // loss = sum(w^2) -> grad = 2w; the first Adam step moves each weight by lr*sign(g).
        let loss = (&w * &w).sum(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step(0.1);
        let got: Vec<f32> = Vec::try_from(&w).unwrap();
        assert!(
            (got[0] - 0.9).abs() < 1e-5 && (got[1] + 1.9).abs() < 1e-5,
            "{got:?}"
        );
        assert_eq!(opt.step, 1);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[3.0f32, 4.0]));
        let mut opt = Adam::new(&vs, 0.9, 0.999, 1e-8, 0.0);
        let loss = (&w * &w).sum(Kind::Float) * 0.5; // grad = w, norm 5
        loss.backward();
        let before = opt.clip_grad_norm(1.0);
        assert!((before - 5.0).abs() < 1e-5);
        assert!((opt.grad_norm() - 1.0).abs() < 1e-3);
    }

    #[test]
    fn state_round_trips_and_mismatch_is_named() {
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().var("w", &[2, 3], nn::Init::Const(1.0));
        let mut opt = Adam::new(&vs, 0.9, 0.999, 1e-8, 0.0);
        let loss = vs.variables()["w"].sum(Kind::Float);
        loss.backward();
        opt.step(0.01);
        let state = opt.state_tensors();
        let mut other = Adam::new(&vs, 0.9, 0.999, 1e-8, 0.0);
        other.load_state(&state).unwrap();
        assert_eq!(other.step, 1);
        let vs2 = VarStore::new(Device::Cpu);
        let _w = vs2.root().var("w", &[4], nn::Init::Const(1.0));
        let mut wrong = Adam::new(&vs2, 0.9, 0.999, 1e-8, 0.0);
        let err = wrong.load_state(&state).unwrap_err().to_string();
        assert!(err.contains("optim.m.w") && err.contains("[2, 3]"), "{err}");
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let f = |s| warmup_cosine(s, 1.0, 0.001, 100, 1100, 0.1);
        assert!((f(0) - 0.001).abs() < 1e-12);
        assert!((f(50) - 0.5005).abs() < 1e-9);
        assert!((f(100) - 1.0).abs() < 1e-12);
        assert!((f(600) - 0.55).abs() < 1e-9);
        assert!((f(1100) - 0.1).abs() < 1e-12);
        assert!((f(5000) - 0.1).abs() < 1e-12);
    }
}
