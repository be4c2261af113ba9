//! DPT's offline evaluation: fixed contexts from the dataset's generator on the held-out
//! tasks, one episode per context with the current observation as the query; on bandits the
//! comparison with the classic algorithms ([`crate::methods::bandit`]).

use std::path::PathBuf;

use anyhow::Result;
use tch::{Device, Tensor};

use envs::{BanditConfig, EnvConfig, ObsBatch, StepBatch};
use sampler::SlotStreams;

use crate::config::{Config, DataConfig, DptConfig};
use crate::data::{self, Layout, Record, RecordView};
use crate::eval;
use crate::methods::bandit::{self, BanditLearner};
use crate::results::{OfflineResult, OFFLINE_DIR};
use crate::run::logging::Logger;
use crate::run::Run;
use crate::stats::MeanCi;

use super::model::{DptNet, HostBatch};
use super::policy::{argmax, sample_logits};

/// Fixed offline contexts from the held-out tasks: the data section's generator with
/// `offline_contexts_per_task` records per task.
pub fn offline_contexts(cfg: &Config, dpt: &DptConfig) -> Result<Vec<Record>> {
    let tasks = eval::eval_tasks(&cfg.env, &cfg.eval)?;
    let data = DataConfig {
        samples_per_task: dpt.offline_contexts_per_task,
        windows_per_history: dpt
            .data
            .windows_per_history
            .min(dpt.offline_contexts_per_task),
        ..dpt.data.clone()
    };
    data::generate_in_memory(
        &cfg.env,
        &data,
        &tasks,
        envs::rng::mix64(cfg.experience_seed() ^ 0x0FF1_1E00),
    )
}

/// One episode per fixed context on its task, the current observation as the query.
pub fn offline_returns(
    model: &DptNet,
    env: &EnvConfig,
    records: &[Record],
    greedy: bool,
    seed: u64,
    device: Device,
) -> Result<Vec<f64>> {
    let _guard = tch::no_grad_guard();
    let n = records.len();
    anyhow::ensure!(n > 0, "offline evaluation without contexts");
    let spec = env.spec();
    let layout = Layout {
        s: spec.vector_dim,
        i: spec.image_bytes(),
        t: records[0].reward.len(),
    };
    let mut bytes = Vec::with_capacity(n * layout.bytes());
    for r in records {
        r.encode(&layout, &mut bytes)?;
    }
    let views: Vec<RecordView<'_>> = bytes
        .chunks_exact(layout.bytes())
        .map(|c| RecordView::new(c, layout))
        .collect();
    let mut host = HostBatch::from_records(&views, None);
    let image = spec.image.map(|i| (i.height, i.width));
    let mut venv = env.build(seed, 0, n)?;
    for (slot, r) in records.iter().enumerate() {
        venv.set_task(slot, r.task)?;
    }
    let mut obs = ObsBatch::new(&spec, n);
    venv.reset(&mut obs);
    let mut step = StepBatch::new(&spec, n);
    let mut streams = SlotStreams::new(seed, n);
    let mut returns = vec![0.0f64; n];
    let mut finished = vec![false; n];
    let mut actions = vec![0u32; n];
    let (s, i, t) = (layout.s, layout.i, layout.t as i64);
    for _ in 0..spec.horizon {
        crate::eval::stop_if_signalled()?;
        host.query.copy_from_slice(&obs.vector[..n * s]);
        host.query_img.copy_from_slice(&obs.image[..n * i]);
        let batch = host.to_tensors(image, device);
        let logits = model.forward(&batch, false)?.select(1, t).contiguous();
        let logits: Vec<f32> = Vec::try_from(logits.to_device(Device::Cpu).view(-1))?;
        let a = spec.num_actions;
        for (slot, act) in actions.iter_mut().enumerate() {
            let row = &logits[slot * a..(slot + 1) * a];
            *act = if greedy {
                argmax(row)
            } else {
                sample_logits(row, streams.uniform(slot))
            } as u32;
        }
        venv.step(&actions, &mut step)?;
        for slot in 0..n {
            if !finished[slot] {
                returns[slot] += step.reward[slot] as f64;
                finished[slot] = step.terminated[slot] || step.truncated[slot];
            }
        }
        std::mem::swap(&mut obs, &mut step.obs);
        if finished.iter().all(|&f| f) {
            break;
        }
    }
    Ok(returns)
}

/// `values[i]` over the contexts with `keep[i]`, clustered by the contexts' tasks (contexts of
/// one task are not independent): the mean over tasks of each task's mean over its kept
/// contexts, with the interval over tasks. None when no context is kept.
pub fn by_task(records: &[Record], values: &[f64], keep: &[bool]) -> Option<MeanCi> {
    let mut clusters: Vec<(envs::TaskId, Vec<f64>)> = Vec::new();
    for ((r, &v), _) in records.iter().zip(values).zip(keep).filter(|(_, &k)| k) {
        match clusters.iter_mut().find(|c| c.0 == r.task) {
            Some(c) => c.1.push(v),
            None => clusters.push((r.task, vec![v])),
        }
    }
    if clusters.is_empty() {
        return None;
    }
    let clusters: Vec<Vec<f64>> = clusters.into_iter().map(|c| c.1).collect();
    Some(crate::stats::clustered_mean_ci(&clusters))
}

/// Offline evaluation at `step`: writes `offline/<step>.json` (or, on bandits, the comparison
/// with the classic algorithms) and logs `eval/offline_return_{greedy,sampled}` and
/// `eval/offline_return_greedy_goal_in_context`.
pub fn offline(run: &mut Run, model: &DptNet, dpt: &DptConfig, step: u64) -> Result<PathBuf> {
    let cfg = run.config.clone();
    if let EnvConfig::Bandit(bandit) = &cfg.env {
        let path = compare_with_dpt(run, model, bandit, dpt, step)?;
        return Ok(path);
    }
    let records = offline_contexts(&cfg, dpt)?;
    let seed = envs::rng::mix64(cfg.experience_seed() ^ 0x0FF1_1E01);
    let greedy = offline_returns(model, &cfg.env, &records, true, seed, run.device)?;
    let sampled = offline_returns(model, &cfg.env, &records, false, seed, run.device)?;
    let horizon = cfg.env.spec().horizon as f64;
    let dataset: Vec<f64> = records
        .iter()
        .map(|r| r.reward.iter().map(|&x| x as f64).sum::<f64>() * horizon / r.reward.len() as f64)
        .collect();
    let tasks = eval::eval_tasks(&cfg.env, &cfg.eval)?.len();
    let with_goal: Vec<bool> = records
        .iter()
        .map(|r| r.reward.iter().any(|&x| x > 0.0))
        .collect();
    let all = vec![true; records.len()];
    let result = OfflineResult {
        step,
        env: cfg.env.name().to_string(),
        context: format!("{:?}", dpt.data.context),
        tasks,
        contexts: records.len(),
        contexts_with_reward: records
            .iter()
            .filter(|r| r.reward.iter().any(|&x| x > 0.0))
            .count(),
        greedy: by_task(&records, &greedy, &all).unwrap_or(MeanCi::of(&greedy)),
        sampled: by_task(&records, &sampled, &all).unwrap_or(MeanCi::of(&sampled)),
        greedy_with_goal: by_task(&records, &greedy, &with_goal),
        sampled_with_goal: by_task(&records, &sampled, &with_goal),
        dataset: MeanCi::of(&dataset),
        greedy_returns: greedy,
        sampled_returns: sampled,
    };
    let dir = crate::fsutil::create_subdir(&run.dir, OFFLINE_DIR)?;
    // The configured evaluation is `<step>.json`; another number of contexts per task
    // (`icrl eval --offline --contexts N`) is written beside it as `<step>_c<N>.json`.
    let name = if matches!(&run.config.method, crate::config::Method::Dpt(c) if c == dpt) {
        format!("{step:012}.json")
    } else {
        format!("{step:012}_c{}.json", dpt.offline_contexts_per_task)
    };
    let path = dir.join(name);
    crate::fsutil::write_atomic(&path, serde_json::to_string_pretty(&result)?.as_bytes())?;
    run.logger
        .scalar("eval/offline_return_greedy", step, result.greedy.mean)?;
    run.logger
        .scalar("eval/offline_return_sampled", step, result.sampled.mean)?;
    if let Some(m) = result.greedy_with_goal {
        run.logger
            .scalar("eval/offline_return_greedy_goal_in_context", step, m.mean)?;
        eprintln!(
            "offline at step {step}: greedy over the {} contexts that contain the goal: {:.1} +- {:.1}",
            result.contexts_with_reward, m.mean, m.ci95
        );
    }
    eprintln!(
        "offline at step {step}: greedy {:.1} +- {:.1}, sampled {:.1} +- {:.1} over {} contexts ({} with a reward; dataset {:.1})",
        result.greedy.mean,
        result.greedy.ci95,
        result.sampled.mean,
        result.sampled.ci95,
        result.contexts,
        result.contexts_with_reward,
        result.dataset.mean
    );
    Ok(path)
}

/// DPT as a bandit learner, for the comparison with the classic algorithms.
struct DptLearner<'a> {
    /// The trained model.
    model: &'a DptNet,
    /// Its device.
    device: Device,
}

impl BanditLearner for DptLearner<'_> {
    fn name(&self) -> &str {
        "DPT"
    }

    /// DPT's logits for a batch of contexts `[n, T + 1, A]` (vector model).
    fn logits(&self, records: &[Record], t: usize, arms: usize) -> Result<Tensor> {
        let l = Layout { s: 1, i: 0, t };
        let mut bytes = Vec::with_capacity(records.len() * l.bytes());
        for r in records {
            anyhow::ensure!(r.reward.len() == t, "context length mismatch");
            r.encode(&l, &mut bytes)?;
        }
        let views: Vec<RecordView<'_>> = bytes
            .chunks_exact(l.bytes())
            .map(|c| RecordView::new(c, l))
            .collect();
        let batch = HostBatch::from_records(&views, None).to_tensors(None, self.device);
        let logits = self.model.forward(&batch, false)?;
        anyhow::ensure!(
            logits.size()[2] == arms as i64,
            "the model has {} actions, the bandit {arms} arms",
            logits.size()[2]
        );
        Ok(logits.to_device(Device::Cpu))
    }
}

/// The comparison of a trained DPT model with the classic bandit algorithms (DPT's offline
/// evaluation on bandits).
fn compare_with_dpt(
    run: &mut Run,
    model: &DptNet,
    bandit: &BanditConfig,
    dpt: &DptConfig,
    step: u64,
) -> Result<PathBuf> {
    let mut cmp = dpt.bandit_comparison.clone();
    bandit::check_sizes(bandit, &cmp)?;
    // DPT reads at most `context_len` pulls.
    cmp.offline_sizes.retain(|&n| n <= dpt.data.context_len);
    if cmp.offline_sizes.is_empty() {
        cmp.offline_sizes.push(dpt.data.context_len);
    }
    let online = cmp
        .online_steps
        .unwrap_or(bandit.horizon)
        .min(dpt.data.context_len);
    cmp.online_steps = Some(online);
    let tasks = crate::eval::eval_tasks(&run.config.env, &run.config.eval)?;
    let learner = DptLearner {
        model,
        device: run.device,
    };
    let report = bandit::compare(
        bandit,
        &cmp,
        &tasks,
        bandit::comparison_seed(run.config.experience_seed()),
        step,
        Some(&learner),
    )?;
    bandit::write(run, &report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_scores_over_contexts_with_the_goal_are_clustered_by_task() {
        let record = |task: u64, rewarded: bool| Record {
            task,
            reward: vec![if rewarded { 1.0 } else { 0.0 }],
            ..Record::default()
        };
        // Task 1: contexts scoring 90 (goal seen) and 0 (not); task 2: 60 (seen), 30 (seen).
        let records = [
            record(1, true),
            record(1, false),
            record(2, true),
            record(2, true),
        ];
        let values = [90.0, 0.0, 60.0, 30.0];
        let keep: Vec<bool> = records.iter().map(|r| r.reward[0] > 0.0).collect();
        let all = by_task(&records, &values, &[true; 4]).unwrap();
        assert_eq!(all.n, 2);
        assert!((all.mean - 45.0).abs() < 1e-12); // task means 45 and 45
        let seen = by_task(&records, &values, &keep).unwrap();
        assert_eq!(seen.n, 2);
        assert!((seen.mean - 67.5).abs() < 1e-12); // task means 90 and 45
        assert!(by_task(&records, &values, &[false; 4]).is_none());
    }
}
