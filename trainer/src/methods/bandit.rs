//! The classic bandit algorithms DPT is compared with (Lee et al. 2023, §5.1): empirical mean,
//! UCB (bonus c / sqrt(n), DPT: c = 1), Gaussian Thompson sampling, and LCB (offline only).
//!
//! Read top to bottom:
//!
//! 1. The choice rules ([`empirical_mean`], [`ucb`], [`lcb`], [`thompson`]) are pure functions
//!    of per-arm counts and reward sums (Thompson also of its standard-normal draws).
//! 2. [`compare`] runs them (and optionally DPT) on the held-out bandits:
//!    - offline: one fixed dataset per bandit from the training generator (DPT's Dirichlet
//!      mixture); at each dataset size n, each algorithm picks an arm from the first n pulls;
//!      suboptimality = best mean - mean of the pick;
//!    - online: each algorithm pulls for the horizon; the reward noise of pull t on bandit b is
//!      the same draw for every algorithm (common random numbers); cumulative regret uses the
//!      arm means.
//! 3. The result is written as `bandit/<step>.json` with two plots and logged.
//!
//! [`train`] is the `BanditBaselines` method: it runs the comparison without DPT.

use std::path::PathBuf;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use envs::BanditConfig;

use crate::config::Config;
use crate::config::{BanditAlgo, BanditBaselinesConfig, ContextKind, DataConfig};
use crate::data::{self, Record};
use crate::methods::TrainingMethod;
use crate::plot::{self, Series};
use crate::results::{AlgoResult, BanditReport, BANDIT_DIR};
use crate::run::checkpoint::Checkpoint;
use crate::run::logging::Logger;
use crate::run::Run;
use crate::stats::MeanCi;

fn means_of(counts: &[u32], sums: &[f64]) -> Vec<f64> {
    counts
        .iter()
        .zip(sums)
        .map(|(&n, &s)| if n > 0 { s / n as f64 } else { 0.0 })
        .collect()
}

/// Index of the largest score (lowest index on ties), over arms allowed by `allowed`.
fn best(scores: &[f64], allowed: impl Fn(usize) -> bool) -> Option<usize> {
    let mut pick: Option<usize> = None;
    for (a, &s) in scores.iter().enumerate() {
        if allowed(a) && pick.is_none_or(|p| s > scores[p]) {
            pick = Some(a);
        }
    }
    pick
}

/// Empirical mean: the arm with the highest sample mean among arms pulled at least once.
/// Online (`try_all`) every arm is pulled once first (lowest index first); offline an empty
/// dataset gives arm 0.
pub fn empirical_mean(counts: &[u32], sums: &[f64], try_all: bool) -> usize {
    if try_all {
        if let Some(a) = counts.iter().position(|&n| n == 0) {
            return a;
        }
    }
    best(&means_of(counts, sums), |a| counts[a] > 0).unwrap_or(0)
}

/// UCB: argmax mean + c / sqrt(n); an arm never pulled comes first (lowest index first).
pub fn ucb(counts: &[u32], sums: &[f64], c: f64) -> usize {
    if let Some(a) = counts.iter().position(|&n| n == 0) {
        return a;
    }
    let m = means_of(counts, sums);
    let scores: Vec<f64> = m
        .iter()
        .zip(counts)
        .map(|(mu, &n)| mu + c / (n as f64).sqrt())
        .collect();
    best(&scores, |_| true).unwrap_or(0)
}

/// LCB (offline): argmax mean - c / sqrt(n) among arms pulled at least once (arm 0 when none).
pub fn lcb(counts: &[u32], sums: &[f64], c: f64) -> usize {
    let m = means_of(counts, sums);
    let scores: Vec<f64> = m
        .iter()
        .zip(counts)
        .map(|(mu, &n)| {
            if n > 0 {
                mu - c / (n as f64).sqrt()
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    best(&scores, |a| counts[a] > 0).unwrap_or(0)
}

/// Gaussian Thompson sampling with a N(prior_mean, prior_std^2) prior on each arm's mean and
/// known noise `noise_std`: posterior precision 1/prior_std^2 + n/noise_std^2, posterior mean
/// (prior_mean/prior_std^2 + sum/noise_std^2) / precision; the arm whose draw
/// mean + z / sqrt(precision) is largest, with `z` one standard-normal draw per arm.
pub fn thompson(
    counts: &[u32],
    sums: &[f64],
    prior_mean: f64,
    prior_std: f64,
    noise_std: f64,
    z: &[f64],
) -> usize {
    let p0 = 1.0 / (prior_std * prior_std);
    let pn = 1.0 / (noise_std * noise_std).max(1e-12);
    let scores: Vec<f64> = counts
        .iter()
        .zip(sums)
        .zip(z)
        .map(|((&n, &s), &z)| {
            let precision = p0 + n as f64 * pn;
            let mean = (prior_mean * p0 + s * pn) / precision;
            mean + z / precision.sqrt()
        })
        .collect();
    best(&scores, |_| true).unwrap_or(0)
}

/// One algorithm's choice with online or offline conventions.
fn choose(
    algo: BanditAlgo,
    cfg: &BanditBaselinesConfig,
    noise_std: f64,
    counts: &[u32],
    sums: &[f64],
    online: bool,
    rng: &mut ChaCha8Rng,
) -> usize {
    match algo {
        BanditAlgo::EmpiricalMean => empirical_mean(counts, sums, online),
        BanditAlgo::Ucb => ucb(counts, sums, cfg.bonus),
        BanditAlgo::Lcb => lcb(counts, sums, cfg.bonus),
        BanditAlgo::Thompson => {
            let z: Vec<f64> = (0..counts.len()).map(|_| data::normal(rng)).collect();
            thompson(counts, sums, cfg.prior_mean, cfg.prior_std, noise_std, &z)
        }
    }
}

/// A trained in-context learner compared with the classic algorithms (DPT, whose module
/// implements this): it reads a batch of pull histories and scores the arms.
pub trait BanditLearner {
    /// The learner's row name in the report.
    fn name(&self) -> &str;
    /// Logits `[n, t + 1, arms]` on the CPU for `records` (each `t` pulls long, the query
    /// the constant state): position j scores the arms after the first j pulls.
    fn logits(&self, records: &[Record], t: usize, arms: usize) -> Result<Tensor>;
}

/// The held-out bandits and their fixed offline datasets (the training generator, one
/// record per bandit, as long as the largest offline size).
fn offline_datasets(
    env: &envs::EnvConfig,
    cfg: &BanditBaselinesConfig,
    tasks: &[envs::TaskId],
    seed: u64,
) -> Result<Vec<Record>> {
    let len = cfg.offline_sizes.iter().copied().max().unwrap_or(1);
    let data = DataConfig {
        context: ContextKind::DirichletMixture,
        samples_per_task: 1,
        context_len: len,
        ..DataConfig::default()
    };
    data::generate_in_memory(env, &data, tasks, seed)
}

fn summarise_rows(rows: &[Vec<f64>], k: usize) -> Vec<MeanCi> {
    (0..k)
        .map(|j| MeanCi::of(&rows.iter().map(|r| r[j]).collect::<Vec<_>>()))
        .collect()
}

/// Runs the comparison on the held-out bandits (see the module docs).
pub fn compare(
    bandit: &BanditConfig,
    cfg: &BanditBaselinesConfig,
    eval_tasks: &[envs::TaskId],
    seed: u64,
    step: u64,
    learner: Option<&dyn BanditLearner>,
) -> Result<BanditReport> {
    let _guard = tch::no_grad_guard();
    let env = envs::EnvConfig::Bandit(bandit.clone());
    let k = bandit.arms;
    let noise = bandit.noise_std as f64;
    let n = eval_tasks.len();
    let means: Vec<Vec<f64>> = eval_tasks
        .iter()
        .map(|&t| {
            envs::bandit::arm_means(t, k)
                .into_iter()
                .map(f64::from)
                .collect()
        })
        .collect();
    let best: Vec<f64> = means
        .iter()
        .map(|m| m.iter().cloned().fold(f64::NEG_INFINITY, f64::max))
        .collect();
    let sizes = cfg.offline_sizes.clone();
    let records = offline_datasets(&env, cfg, eval_tasks, seed)?;
    let horizon = cfg.online_steps.unwrap_or(bandit.horizon);
    let report_every = (horizon / 50).max(1);
    let online_steps: Vec<usize> = (1..=horizon)
        .filter(|t| t % report_every == 0 || *t == horizon || *t == 1)
        .collect();
    // Common random numbers: noise of pull t on bandit b.
    let noise_draws: Vec<Vec<f64>> = (0..n)
        .map(|b| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(envs::rng::mix64(seed ^ 0x0A15E ^ (b as u64) << 20));
            (0..horizon).map(|_| data::normal(&mut rng)).collect()
        })
        .collect();

    let mut algorithms = Vec::new();
    for &algo in &cfg.algorithms {
        let mut rng = ChaCha8Rng::seed_from_u64(envs::rng::mix64(seed ^ 0x7A1E ^ algo as u64));
        // Offline.
        let mut rows = Vec::with_capacity(n);
        for (b, r) in records.iter().enumerate() {
            let mut row = Vec::with_capacity(sizes.len());
            for &size in &sizes {
                let (mut counts, mut sums) = (vec![0u32; k], vec![0.0f64; k]);
                for j in 0..size.min(r.action.len()) {
                    counts[r.action[j] as usize] += 1;
                    sums[r.action[j] as usize] += r.reward[j] as f64;
                }
                let a = choose(algo, cfg, noise, &counts, &sums, false, &mut rng);
                row.push(best[b] - means[b][a]);
            }
            rows.push(row);
        }
        let offline = summarise_rows(&rows, sizes.len());
        // Online (LCB is an offline rule).
        let online = if algo == BanditAlgo::Lcb {
            None
        } else {
            let mut rows = Vec::with_capacity(n);
            for b in 0..n {
                let (mut counts, mut sums) = (vec![0u32; k], vec![0.0f64; k]);
                let mut regret = 0.0;
                let mut row = Vec::with_capacity(online_steps.len());
                for (t, z) in noise_draws[b].iter().enumerate() {
                    let a = choose(algo, cfg, noise, &counts, &sums, true, &mut rng);
                    counts[a] += 1;
                    sums[a] += means[b][a] + noise * z;
                    regret += best[b] - means[b][a];
                    if online_steps.binary_search(&(t + 1)).is_ok() {
                        row.push(regret);
                    }
                }
                rows.push(row);
            }
            Some(summarise_rows(&rows, online_steps.len()))
        };
        algorithms.push(AlgoResult {
            name: format!("{algo:?}"),
            offline_suboptimality: Some(offline),
            online_regret: online,
        });
    }

    if let Some(learner) = learner {
        // Offline: one forward over each fixed dataset; the prediction after n pulls is read
        // at position n; greedy.
        let t = records.first().map_or(0, |r| r.reward.len());
        let mut rows = vec![Vec::with_capacity(sizes.len()); n];
        for (chunk_i, chunk) in records.chunks(50).enumerate() {
            let logits = learner.logits(chunk, t, k)?;
            for &size in &sizes {
                let picks: Vec<i64> = Vec::try_from(
                    logits
                        .select(1, size.min(t) as i64)
                        .argmax(-1, false)
                        .contiguous(),
                )?;
                for (j, &a) in picks.iter().enumerate() {
                    let b = chunk_i * 50 + j;
                    rows[b].push(best[b] - means[b][a as usize]);
                }
            }
        }
        let offline = summarise_rows(&rows, sizes.len());
        // Online: the context is every pull so far (query = the constant state), actions
        // sampled at temperature 1 as DPT does online.
        let mut ctx: Vec<Record> = eval_tasks
            .iter()
            .map(|&task| Record {
                task,
                query_vec: vec![0.0],
                ..Record::default()
            })
            .collect();
        let mut regret = vec![0.0f64; n];
        let mut rows = vec![Vec::with_capacity(online_steps.len()); n];
        let mut rng = ChaCha8Rng::seed_from_u64(envs::rng::mix64(seed ^ 0xD9_7B));
        #[allow(clippy::needless_range_loop)]
        for t in 0..horizon {
            let logits = learner.logits(&ctx, t, k)?.select(1, t as i64);
            let probs: Vec<f32> =
                Vec::try_from(logits.softmax(-1, Kind::Float).contiguous().view(-1))?;
            for b in 0..n {
                let p: Vec<f64> = probs[b * k..(b + 1) * k]
                    .iter()
                    .map(|&x| x as f64)
                    .collect();
                let a = data::sample_categorical(&p, rng.random::<f64>());
                let r = &mut ctx[b];
                r.vec.push(0.0);
                r.next_vec.push(0.0);
                r.action.push(a as u8);
                r.reward
                    .push((means[b][a] + noise * noise_draws[b][t]) as f32);
                r.step.push(t as u32);
                r.flags.push(0);
                regret[b] += best[b] - means[b][a];
                if online_steps.binary_search(&(t + 1)).is_ok() {
                    rows[b].push(regret[b]);
                }
            }
        }
        algorithms.insert(
            0,
            AlgoResult {
                name: learner.name().to_string(),
                offline_suboptimality: Some(offline),
                online_regret: Some(summarise_rows(&rows, online_steps.len())),
            },
        );
    }
    Ok(BanditReport {
        step,
        bandits: n,
        arms: k,
        offline_sizes: sizes,
        online_steps,
        algorithms,
    })
}

/// Writes `bandit/<step>.json` with `offline_<step>.png` and `online_<step>.png`, logs the
/// final numbers, and returns the JSON path.
pub fn write(run: &mut Run, report: &BanditReport) -> Result<PathBuf> {
    let dir = crate::fsutil::create_subdir(&run.dir, BANDIT_DIR)?;
    let json = dir.join(format!("{:012}.json", report.step));
    crate::fsutil::write_atomic(&json, serde_json::to_string_pretty(report)?.as_bytes())?;
    let mut offline = Vec::new();
    let mut online = Vec::new();
    for a in &report.algorithms {
        if let Some(v) = &a.offline_suboptimality {
            offline.push(Series {
                label: a.name.clone(),
                points: report
                    .offline_sizes
                    .iter()
                    .zip(v)
                    .map(|(&n, m)| (n as f64, m.mean, m.ci95))
                    .collect(),
                bounds: (0.0, f64::INFINITY),
            });
            if let Some(last) = v.last() {
                run.logger.scalar(
                    &format!("eval/bandit_offline_suboptimality_{}", a.name),
                    report.step,
                    last.mean,
                )?;
            }
        }
        if let Some(v) = &a.online_regret {
            online.push(Series {
                label: a.name.clone(),
                points: report
                    .online_steps
                    .iter()
                    .zip(v)
                    .map(|(&t, m)| (t as f64, m.mean, m.ci95))
                    .collect(),
                bounds: (0.0, f64::INFINITY),
            });
            if let Some(last) = v.last() {
                run.logger.scalar(
                    &format!("eval/bandit_online_regret_{}", a.name),
                    report.step,
                    last.mean,
                )?;
            }
        }
    }
    plot::curves(
        &dir.join(format!("offline_{:012}.png", report.step)),
        "bandits, offline: suboptimality of the chosen arm",
        "dataset size",
        "suboptimality",
        &offline,
        &[],
    )?;
    plot::curves(
        &dir.join(format!("online_{:012}.png", report.step)),
        "bandits, online: cumulative regret",
        "pulls",
        "cumulative regret",
        &online,
        &[],
    )?;
    for a in &report.algorithms {
        let off = a
            .offline_suboptimality
            .as_ref()
            .and_then(|v| v.last())
            .map_or("-".to_string(), |m| {
                format!("{:.3} +- {:.3}", m.mean, m.ci95)
            });
        let on = a
            .online_regret
            .as_ref()
            .and_then(|v| v.last())
            .map_or("-".to_string(), |m| {
                format!("{:.1} +- {:.1}", m.mean, m.ci95)
            });
        eprintln!(
            "bandit {:>14}: offline suboptimality (n = {}) {off}, online regret ({} pulls) {on}",
            a.name,
            report.offline_sizes.last().copied().unwrap_or(0),
            report.online_steps.last().copied().unwrap_or(0)
        );
    }
    Ok(json)
}

fn env_bandit(run: &Run) -> Result<BanditConfig> {
    match &run.config.env {
        envs::EnvConfig::Bandit(b) => Ok(b.clone()),
        other => Err(crate::error::UsageError(format!(
            "the bandit algorithms need env: Bandit(..), got {}",
            other.name()
        ))
        .into()),
    }
}

/// Refuses offline dataset sizes longer than the bandit's horizon.
pub fn check_sizes(bandit: &BanditConfig, cfg: &BanditBaselinesConfig) -> Result<()> {
    if let Some(&n) = cfg.offline_sizes.iter().find(|&&n| n > bandit.horizon) {
        return Err(crate::error::UsageError(format!(
            "offline_sizes: {n} exceeds the bandit horizon {}",
            bandit.horizon
        ))
        .into());
    }
    Ok(())
}

/// The seed of the bandit comparison of a run seeded `run_seed` (shared by the classic
/// algorithms and DPT's comparison, so both see the same datasets and reward noise).
pub fn comparison_seed(run_seed: u64) -> u64 {
    run_seed ^ 0xBA4D
}

/// The `BanditBaselines` method: runs the comparison (no training) and saves a checkpoint
/// holding only the state, so the run folder looks like every other.
pub fn train(run: &mut Run, cfg: &BanditBaselinesConfig) -> Result<()> {
    let json = evaluate(run, cfg)?;
    eprintln!("bandit comparison: {}", json.display());
    run.save_checkpoint(
        0,
        &[],
        serde_json::json!({ "report": json.display().to_string() }),
    )?;
    run.logger.flush()?;
    Ok(())
}

/// Runs the comparison of the classic algorithms and writes it (`icrl eval` does the same).
pub fn evaluate(run: &mut Run, cfg: &BanditBaselinesConfig) -> Result<PathBuf> {
    let bandit = env_bandit(run)?;
    check_sizes(&bandit, cfg)?;
    let tasks = crate::eval::eval_tasks(&run.config.env, &run.config.eval)?;
    let report = compare(
        &bandit,
        cfg,
        &tasks,
        comparison_seed(run.config.experience_seed()),
        0,
        None,
    )?;
    write(run, &report)
}

impl TrainingMethod for BanditBaselinesConfig {
    fn train(&self, run: &mut Run) -> Result<()> {
        train(run, self)
    }

    /// Runs the comparison again under the run's own config (nothing was trained).
    fn evaluate(&self, run: &mut Run, _cfg: &Config, _ckpt: &Checkpoint) -> Result<PathBuf> {
        evaluate(run, self)
    }

    fn budget(&self, _eval_step: u64) -> (f64, &'static str) {
        (0.0, "no training")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A fixed history of 3 arms: arm 0 pulled 4 times (sum 2.0, mean 0.5), arm 1 once
    // (reward 0.7), arm 2 9 times (sum 5.4, mean 0.6).
    const COUNTS: [u32; 3] = [4, 1, 9];
    const SUMS: [f64; 3] = [2.0, 0.7, 5.4];

    #[test]
    fn ucb_and_lcb_choose_as_computed_by_hand() {
        // UCB c = 1: 0.5 + 1/2 = 1.0; 0.7 + 1 = 1.7; 0.6 + 1/3 = 0.933 -> arm 1.
        assert_eq!(ucb(&COUNTS, &SUMS, 1.0), 1);
        // c = 0.1: 0.55, 0.8, 0.633 -> arm 1; c = 0: plain means 0.5, 0.7, 0.6 -> arm 1.
        assert_eq!(ucb(&COUNTS, &SUMS, 0.0), 1);
        // LCB c = 1: 0.0, -0.3, 0.267 -> arm 2.
        assert_eq!(lcb(&COUNTS, &SUMS, 1.0), 2);
        // An unpulled arm comes first in UCB, never in LCB.
        assert_eq!(ucb(&[3, 0, 2], &[3.0, 0.0, 0.0], 1.0), 1);
        assert_eq!(lcb(&[3, 0, 2], &[3.0, 0.0, 0.0], 1.0), 0);
        // Empirical mean: arm 1 (0.7); online it first tries unpulled arms.
        assert_eq!(empirical_mean(&COUNTS, &SUMS, false), 1);
        assert_eq!(empirical_mean(&[2, 0, 1], &[0.2, 0.0, 0.9], true), 1);
        assert_eq!(empirical_mean(&[2, 0, 1], &[0.2, 0.0, 0.9], false), 2);
    }

    #[test]
    fn thompson_chooses_as_computed_by_hand() {
        // Prior N(0.5, 0.5^2) (precision 4), noise 0.3 (precision 1/0.09 = 11.11).
        // Arm 0: precision 4 + 4 * 11.11 = 48.44, mean (2 + 2.0 * 11.11) / 48.44 = 0.5;
        //        std 0.1437.
        // Arm 1: precision 15.11, mean (2 + 0.7 * 11.11) / 15.11 = 0.6471; std 0.2572.
        // Arm 2: precision 104, mean (2 + 5.4 * 11.11) / 104 = 0.5962; std 0.0981.
        // z = (0, 0, 0): arm 1 (0.647).
        assert_eq!(thompson(&COUNTS, &SUMS, 0.5, 0.5, 0.3, &[0.0, 0.0, 0.0]), 1);
        // z = (2, 0, 0): arm 0: 0.5 + 2 * 0.1437 = 0.787 > 0.647 -> arm 0.
        assert_eq!(thompson(&COUNTS, &SUMS, 0.5, 0.5, 0.3, &[2.0, 0.0, 0.0]), 0);
        // z = (0, -1, 0.6): arm 1: 0.647 - 0.257 = 0.390; arm 2: 0.596 + 0.059 = 0.655;
        // arm 0: 0.5 -> arm 2.
        assert_eq!(
            thompson(&COUNTS, &SUMS, 0.5, 0.5, 0.3, &[0.0, -1.0, 0.6]),
            2
        );
    }

    #[test]
    fn comparison_has_one_entry_per_algorithm_and_sane_regret() {
        let bandit = BanditConfig {
            horizon: 100,
            test_tasks: 20,
            ..BanditConfig::default()
        };
        let cfg = BanditBaselinesConfig {
            offline_sizes: vec![1, 10, 100],
            ..BanditBaselinesConfig::default()
        };
        let tasks: Vec<u64> = (0..20).map(|i| envs::bandit::TEST_TASK_BASE + i).collect();
        let r = compare(&bandit, &cfg, &tasks, 1, 0, None).unwrap();
        assert_eq!(r.algorithms.len(), 4);
        for a in &r.algorithms {
            let off = a.offline_suboptimality.as_ref().unwrap();
            assert_eq!(off.len(), 3);
            assert!(off.iter().all(|m| m.mean >= 0.0));
            if let Some(on) = &a.online_regret {
                assert_eq!(on.len(), r.online_steps.len());
                // Regret is non-decreasing and below the worst case.
                for w in on.windows(2) {
                    assert!(w[1].mean >= w[0].mean - 1e-12);
                }
                assert!(on.last().unwrap().mean < 100.0);
            } else {
                assert_eq!(a.name, "Lcb");
            }
        }
        // Same seed, same report.
        assert_eq!(r, compare(&bandit, &cfg, &tasks, 1, 0, None).unwrap());
    }
}
