//! Sink and attention diagnostics of the transformer policies, logged every
//! `logging.diagnostics_every_updates` updates during training and at every evaluation.
//!
//! - Attention ([`log_attention`]), from [`agent::ActorCritic::attention_diagnostics`] on a
//!   small probe (the first `logging.diagnostics_sequences` env sequences of the update's
//!   prefix; at evaluation, as many trials spread over the evaluated tasks): per layer the sink
//!   mass and the entropy, as a mean over heads (scalar) and per head (histogram), and the
//!   norms of the sink key and value.
//! - Weights ([`log_weights`]): a histogram of every parameter value of each layer group.
//! - Gradient norms ([`log_grad_norms`]): for each layer group, the L2 norm of its gradient
//!   at every optimiser step of the update (before clipping), as a histogram.
//!
//! A layer group is `layer{i}` (transformer block i with its sink parameters), `embed` (token
//! encoder, position tables, sink token) or `head` (final norm, actor and critic); see
//! [`parameter_group`]. The tags are listed in README.md.
//!
//! The probe runs without gradients and draws no random numbers, and the gradient norms only
//! read the gradients, so a run with diagnostics on trains exactly as one with them off.

use agent::LayerAttention;
use anyhow::Result;
use tch::nn::VarStore;
use tch::Kind;

use crate::run::logging::Logger;

/// The layer group a parameter belongs to, from its VarStore name: `layer{i}` for
/// `trunk.layers.{i}.*`, `head` for the final norm and the heads, `embed` for the rest (token
/// encoder, position tables, sink token).
pub fn parameter_group(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("trunk.layers.") {
        if let Some(index) = rest.split('.').next() {
            return format!("layer{index}");
        }
    }
    let head = ["trunk.norm.", "actor.", "critic."];
    if head.iter().any(|p| name.starts_with(p)) {
        "head".to_string()
    } else {
        "embed".to_string()
    }
}

/// Whether update number `update` (counted from 1) takes diagnostics under `every` (0 = never).
pub fn due(every: usize, update: u64) -> bool {
    every > 0 && update.is_multiple_of(every as u64)
}

/// Logs one probe's attention statistics under `section` (`attention` during training,
/// `eval_attention` at evaluation): `{section}/sink_mass/layer{i}` and
/// `{section}/entropy/layer{i}` (means over heads), `{section}/sink_mass_per_head/layer{i}` and
/// `{section}/entropy_per_head/layer{i}` (histograms over heads), and, when `sink_norms`,
/// `sink/k_norm/layer{i}` and `sink/v_norm/layer{i}` for the halves of the sink that are not
/// the constant zero. A model without a sink logs no sink tags.
pub fn log_attention(
    logger: &mut dyn Logger,
    section: &str,
    step: u64,
    layers: &[LayerAttention],
    sink_norms: bool,
) -> Result<()> {
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
    for (i, layer) in layers.iter().enumerate() {
        if let Some(mass) = &layer.sink_mass {
            logger.scalar(&format!("{section}/sink_mass/layer{i}"), step, mean(mass))?;
            logger.histogram(
                &format!("{section}/sink_mass_per_head/layer{i}"),
                step,
                mass,
            )?;
        }
        logger.scalar(
            &format!("{section}/entropy/layer{i}"),
            step,
            mean(&layer.entropy),
        )?;
        logger.histogram(
            &format!("{section}/entropy_per_head/layer{i}"),
            step,
            &layer.entropy,
        )?;
        if sink_norms {
            if let Some(k) = layer.sink_k_norm {
                logger.scalar(&format!("sink/k_norm/layer{i}"), step, k)?;
            }
            if let Some(v) = layer.sink_v_norm {
                logger.scalar(&format!("sink/v_norm/layer{i}"), step, v)?;
            }
        }
    }
    Ok(())
}

/// Logs `weights/{group}`: a histogram of every parameter value of each layer group.
pub fn log_weights(logger: &mut dyn Logger, step: u64, vs: &VarStore) -> Result<()> {
    let mut groups: Vec<(String, Vec<f64>)> = Vec::new();
    let mut variables: Vec<_> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tensor) in variables {
        let values = Vec::<f64>::try_from(tensor.to_kind(Kind::Double).reshape(-1))?;
        let group = parameter_group(&name);
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, all)) => all.extend(values),
            None => groups.push((group, values)),
        }
    }
    for (group, values) in groups {
        logger.histogram(&format!("weights/{group}"), step, &values)?;
    }
    Ok(())
}

/// Logs `grad_norm/{group}`: a histogram of the group's gradient norm over the optimiser
/// steps of one update (`norms`: per group, one norm per step).
pub fn log_grad_norms(
    logger: &mut dyn Logger,
    step: u64,
    norms: &[(String, Vec<f64>)],
) -> Result<()> {
    for (group, values) in norms {
        logger.histogram(&format!("grad_norm/{group}"), step, values)?;
    }
    Ok(())
}

/// Appends one optimiser step's per-group gradient norms to `into` (per group, one norm per
/// step), from (group, norm) pairs.
pub fn push_grad_norms(into: &mut Vec<(String, Vec<f64>)>, step: Vec<(String, f64)>) {
    for (group, norm) in step {
        match into.iter_mut().find(|(g, _)| *g == group) {
            Some((_, all)) => all.push(norm),
            None => into.push((group, vec![norm])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::logging::{MemoryLogger, RecordData};

    #[test]
    fn parameters_fall_into_layer_groups() {
        assert_eq!(parameter_group("trunk.layers.0.attn.wq.weight"), "layer0");
        assert_eq!(parameter_group("trunk.layers.12.attn.sink_k"), "layer12");
        assert_eq!(parameter_group("trunk.norm.weight"), "head");
        assert_eq!(parameter_group("actor.weight"), "head");
        assert_eq!(parameter_group("trunk.sink_token"), "embed");
        assert_eq!(parameter_group("token.vector.0.weight"), "embed");
    }

    #[test]
    fn the_schedule_counts_updates() {
        let due_updates: Vec<u64> = (1..=12).filter(|&u| due(5, u)).collect();
        assert_eq!(due_updates, vec![5, 10]);
        assert!(!(1..100).any(|u| due(0, u)), "0 is off");
    }

    #[test]
    fn a_model_without_a_sink_logs_no_sink_tags() {
        let layer = |sink: Option<Vec<f64>>| LayerAttention {
            sink_mass: sink,
            entropy: vec![0.5, 1.5],
            sink_k_norm: None,
            sink_v_norm: Some(2.0),
        };
        let memory = MemoryLogger::new();
        let mut logger = memory.clone();
        log_attention(&mut logger, "attention", 7, &[layer(None)], true).unwrap();
        let tags = memory.tags();
        assert!(tags.iter().all(|t| !t.contains("sink_mass")), "{tags:?}");
        assert_eq!(memory.scalars("attention/entropy/layer0"), vec![(7, 1.0)]);

        let memory = MemoryLogger::new();
        let mut logger = memory.clone();
        log_attention(
            &mut logger,
            "eval_attention",
            9,
            &[layer(Some(vec![0.2, 0.4]))],
            false,
        )
        .unwrap();
        let mass = memory.scalars("eval_attention/sink_mass/layer0");
        assert_eq!(mass.len(), 1);
        assert!((mass[0].1 - 0.3).abs() < 1e-12);
        let per_head: Vec<_> = memory
            .records()
            .into_iter()
            .filter(|r| r.tag == "eval_attention/sink_mass_per_head/layer0")
            .map(|r| r.data)
            .collect();
        assert_eq!(per_head, vec![RecordData::Histogram(vec![0.2, 0.4])]);
        assert!(
            memory.tags().iter().all(|t| !t.starts_with("sink/")),
            "norms only when asked"
        );
    }
}
