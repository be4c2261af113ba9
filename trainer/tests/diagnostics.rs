//! Sink and attention diagnostics during a ReLIC run (trainer/src/diagnostics.rs). One test
//! function in its own binary: trainings seed libtorch's global generator, so two of them
//! must not run side by side in one process.

use agent::{Sink, SinkInit};
use trainer::config::{Config, Method, PpoConfig};
use trainer::run::checkpoint::{self, Checkpoint};
use trainer::run::logging::{GuardedLogger, MemoryLogger};
use trainer::run::Run;

/// Trains a tiny ReLIC config for 3 rollouts of 5 updates (4 partial + the full one) with
/// diagnostics every `every` updates into a MemoryLogger; returns it and the final checkpoint.
fn train_tiny(sink: Sink, every: usize) -> (MemoryLogger, Checkpoint) {
    let mut cfg = Config::default();
    cfg.model.heads = 2;
    cfg.model.depth_dropout = 0.0;
    cfg.model.sink = sink;
    cfg.sampler.threads = 1;
    let ppo = PpoConfig {
        num_envs: 4,
        rollout_len: 40,
        updates_per_rollout: 4,
        minibatches: 2,
        epochs: 1,
        total_steps: 3 * 4 * 40,
        ..PpoConfig::default()
    };
    cfg.method = Method::Relic(ppo);
    cfg.eval.every_steps = 0;
    cfg.eval.max_tasks = Some(2);
    cfg.eval.trials_per_task = 1;
    cfg.eval.episodes_per_trial = 1;
    cfg.logging.progress = false;
    cfg.logging.diagnostics_every_updates = every;
    cfg.logging.diagnostics_sequences = 2;
    cfg.checkpoint.every_updates = 0;
    let out = tempfile::tempdir().unwrap();
    let mut run = Run::start(cfg.clone(), out.path(), Some("cpu")).unwrap();
    let memory = MemoryLogger::new();
    run.logger = GuardedLogger::new(Box::new(memory.clone()), cfg.logging.on_error);
    trainer::train(&mut run).unwrap();
    let dir = run.dir.join(trainer::run::dir::CHECKPOINT_DIR);
    let latest = checkpoint::latest(&dir).unwrap().unwrap();
    (memory, checkpoint::load(&latest).unwrap())
}

/// Diagnostics read the model and its gradients but never change them: the same seed with
/// diagnostics every 2 updates and with none gives the same losses and bit-identical final
/// parameters. The tags appear at every second update, the evaluation logs its own attention
/// section, and a model without a sink logs the entropy but no sink tag.
#[test]
fn diagnostics_leave_training_unchanged_and_log_on_schedule() {
    let kv = Sink::SinkKv {
        k: SinkInit::Learned,
        v: SinkInit::Learned,
    };
    let (on, on_ckpt) = train_tiny(kv, 2);
    let (off, off_ckpt) = train_tiny(kv, 0);
    for tag in ["losses/policy", "losses/value", "losses/grad_norm"] {
        assert_eq!(on.scalars(tag), off.scalars(tag), "{tag}");
    }
    assert_eq!(on_ckpt.tensors.len(), off_ckpt.tensors.len());
    for ((name, a), (_, b)) in on_ckpt.tensors.iter().zip(&off_ckpt.tensors) {
        assert!(a.equal(b), "{name} differs with diagnostics on");
    }

    let update_steps: Vec<u64> = on.scalars("losses/policy").iter().map(|s| s.0).collect();
    assert_eq!(update_steps.len(), 15, "5 updates per rollout, 3 rollouts");
    let every_second: Vec<u64> = update_steps.iter().skip(1).step_by(2).copied().collect();
    for layer in 0..2 {
        for tag in [
            format!("attention/sink_mass/layer{layer}"),
            format!("attention/entropy/layer{layer}"),
            format!("sink/k_norm/layer{layer}"),
            format!("sink/v_norm/layer{layer}"),
        ] {
            let steps: Vec<u64> = on.scalars(&tag).iter().map(|s| s.0).collect();
            assert_eq!(steps, every_second, "{tag}");
        }
        let per_head = on.histograms(&format!("attention/sink_mass_per_head/layer{layer}"));
        assert_eq!(per_head.len(), 7);
        assert!(per_head.iter().all(|(_, heads)| heads.len() == 2));
        assert_eq!(on.histograms(&format!("weights/layer{layer}")).len(), 7);
        // 1 epoch x 2 minibatches: 2 optimiser steps per update.
        let grads = on.histograms(&format!("grad_norm/layer{layer}"));
        assert_eq!(grads.len(), 7);
        assert!(grads
            .iter()
            .all(|(_, g)| g.len() == 2 && g.iter().all(|x| *x > 0.0)));
    }
    assert_eq!(on.histograms("weights/embed").len(), 7);
    assert_eq!(on.histograms("grad_norm/head").len(), 7);
    // The sink K/V start at zero; training moves them.
    assert!(on.scalars("sink/k_norm/layer0").iter().all(|s| s.1 > 0.0));
    let eval_mass = on.scalars("eval_attention/sink_mass/layer1");
    assert_eq!(eval_mass.len(), 1, "one final evaluation");
    assert!((0.0..=1.0).contains(&eval_mass[0].1));
    assert_eq!(on.scalars("perf/diagnostics_seconds").len(), 3);
    assert!(
        off.tags()
            .iter()
            .all(|t| !t.contains("attention") && !t.starts_with("weights/")),
        "diagnostics off logs none of them"
    );

    let (none, _) = train_tiny(Sink::None, 5);
    let tags = none.tags();
    assert!(tags.iter().all(|t| !t.contains("sink")), "{tags:?}");
    assert_eq!(none.scalars("attention/entropy/layer0").len(), 3);
    assert_eq!(none.scalars("eval_attention/entropy/layer1").len(), 1);
}
