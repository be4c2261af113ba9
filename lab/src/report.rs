//! `icrl report DIR... [--out DIR]`: turns run folders (or sweep folders, or folders of runs)
//! into a markdown table, CSV files and PNG plots of the in-context learning curves.
//!
//! Runs are grouped by variant: the variant named in a sweep's manifest, else the run's config
//! `name` — for runs outside a sweep only when their configs agree but for the seed (and
//! logging, checkpointing, runtime); a run of another recipe under the same name gets its own
//! group, `name (env)` or `name (env) #k`. Each run contributes its latest evaluation
//! (`eval/<step>.json`, highest step).
//!
//! # Statistics
//!
//! For a group of k >= 2 runs (seeds), every number is the mean over the runs of that run's
//! value, with the 95% confidence interval over runs (Student's t, k - 1 degrees of freedom):
//! seeds are the independent repetitions of a training run, so this is the interval that
//! compares methods. A run's value is the mean over its evaluation trials (e.g. the return in
//! episode 1 averaged over all test tasks and trials). For a group of a single run, the
//! interval is over that run's evaluation trials instead, clustered by task (the unit is the
//! task's mean over its trials: trials on one task are not independent); the `CI over` column
//! says which.
//!
//! # Paired comparison
//!
//! When the experiment names a [`Comparison`] (a baseline variant, a metric fixed before
//! running and a take-off threshold) and variants share seeds, the report adds each variant's
//! paired difference from the baseline over the seeds both ran: the mean difference with its
//! t interval, the sign count (seeds better / worse / equal), the paired t test's p-value and
//! its Holm-corrected value over all contrasts, the smallest difference the seeds could have
//! detected (80% power, 5% level), and every variant's share of seeds that took off (metric
//! above the threshold).
//!
//! - *episode 1* / *episode E*: return in the first / last episode of the evaluation trials
//!   (E = the episodes per trial; if runs of a group differ, the smallest E of the group);
//! - *improvement*: episode E minus episode 1, per run (per trial for a single run);
//! - *success*: success rate in episode E (envs that define success);
//! - *training*: the training step of the evaluated model, mean over runs, in the unit its
//!   method counts: env steps (ReLIC, RL²), optimiser steps (DPT, AD), env steps on each
//!   evaluated task (PPO from scratch);
//! - *offline return* (DPT): the latest `offline/<step>.json`, greedy actions on the fixed
//!   held-out contexts; over seeds, or over the contexts for a single run (clustered by task).
//!   Reported twice: over all contexts, and over the contexts that contain the goal with their
//!   share (a greedy DPT cannot score without seeing the goal, so the first is capped by it);
//! - *wall time*: per run, the wall-clock seconds of the sweep's child processes (all
//!   attempts), or for runs outside a sweep the span of the run's TensorBoard events (first to
//!   last event, per event file, summed over files); mean over runs.
//!
//! Runs with a bandit comparison (`bandit/<step>.json`) get their own section and
//! `bandit.csv`: every algorithm's offline suboptimality and online cumulative regret.
//!
//! Paper numbers come from a references file of ours ([`References`]); they are drawn as
//! dashed lines, labelled as the paper's, and listed in their own section, never in our rows.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::experiment::Comparison;
use crate::sweep;
use trainer::config::{self, Config};
use trainer::error::UsageError;
use trainer::eval;
use trainer::plot::{self, Reference, Series};
use trainer::results::{BanditReport, EvalResult, OfflineResult, BANDIT_DIR, OFFLINE_DIR};
use trainer::stats::{holm, MeanCi, Paired};

/// A references file (e.g. `experiments/references.ron`): published numbers to draw as
/// labelled dashed lines, never mixed into the report's rows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct References {
    /// The reference lines.
    pub lines: Vec<ReferenceLine>,
}

/// One published number.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReferenceLine {
    /// Environment name as in eval results (`darkroom`, `one_room`, ...); the line is drawn on
    /// that environment's plot only.
    pub env: String,
    /// Which plot: `Return` or `Success`.
    pub metric: Metric,
    /// Legend label; should say it is the paper's number and what it measures.
    pub label: String,
    /// The value.
    pub value: f64,
    /// Where it comes from (paper, figure or table).
    pub source: String,
}

/// The quantity of a plot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Episode return.
    Return,
    /// Success rate.
    Success,
}

impl References {
    /// Reads a references file (errors with file:line:col, exit code 2).
    pub fn load(path: &Path) -> Result<References> {
        let text = std::fs::read_to_string(path).map_err(|source| config::ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(config::from_ron_str(&text, &path.display().to_string())?)
    }
}

/// `icrl report` on the command line.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Run folders, sweep folders, or folders holding run folders (e.g. runs/).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Output folder (default: <DIR>/report for one DIR, else ./report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Paper reference numbers to draw as dashed lines (default: the file a sweep's
    /// experiment names, e.g. experiments/references.ron).
    #[arg(long)]
    pub references: Option<PathBuf>,
}

/// Runs `icrl report` from its command-line arguments; prints the files written.
pub fn command(args: &ReportArgs) -> Result<()> {
    let mut command = String::from("icrl report");
    for d in &args.dirs {
        let _ = write!(command, " {}", d.display());
    }
    if let Some(o) = &args.out {
        let _ = write!(command, " --out {}", o.display());
    }
    if let Some(r) = &args.references {
        let _ = write!(command, " --references {}", r.display());
    }
    let written = report(&ReportOptions {
        inputs: args.dirs.clone(),
        out: args.out.clone(),
        references: args.references.clone(),
        command,
    })?;
    eprint!("{}", table(&written.rows));
    let mut out = std::io::stdout().lock();
    for f in &written.files {
        let _ = writeln!(out, "{}", f.display());
    }
    Ok(())
}

/// Options of `icrl report`.
#[derive(Clone, Debug, Default)]
pub struct ReportOptions {
    /// Run folders, sweep folders or folders of run folders.
    pub inputs: Vec<PathBuf>,
    /// Output folder (default: `<input>/report` for one input, else `report`).
    pub out: Option<PathBuf>,
    /// References file (default: the one a sweep's experiment names).
    pub references: Option<PathBuf>,
    /// The command line, quoted in the report.
    pub command: String,
}

/// One run's contribution to a report.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// The group (variant) it belongs to.
    pub group: String,
    /// The run folder.
    pub dir: PathBuf,
    /// Its resolved config (`config.ron`).
    pub config: Config,
    /// The evaluation file used.
    pub eval_path: PathBuf,
    /// Its content.
    pub eval: EvalResult,
    /// Wall-clock seconds of training (sweep attempts, else TensorBoard event times).
    pub wall_seconds: Option<f64>,
    /// The sweep slot's state (`done`, `running`, `interrupted`, ...) for runs of a sweep.
    pub state: Option<String>,
    /// The latest offline evaluation (`offline/<step>.json`, DPT), if any.
    pub offline: Option<(PathBuf, OfflineResult)>,
    /// The latest bandit comparison (`bandit/<step>.json`), if any.
    pub bandit: Option<(PathBuf, BanditReport)>,
}

/// One group (variant) of runs.
#[derive(Clone, Debug)]
pub struct Group {
    /// The variant's name.
    pub name: String,
    /// Its runs, by seed.
    pub runs: Vec<RunRecord>,
    /// The sweep's base config and overrides of this variant (seed excluded), when known.
    pub recipe: Option<(PathBuf, Vec<String>)>,
}

/// A group's summary row.
#[derive(Clone, Debug)]
pub struct Row {
    /// Variant.
    pub variant: String,
    /// Environment.
    pub env: String,
    /// Method.
    pub method: String,
    /// Seeds of the runs.
    pub seeds: Vec<u64>,
    /// "seeds" (k >= 2 runs) or "trials" (one run).
    pub ci_over: &'static str,
    /// Episodes per trial used (E).
    pub episodes: usize,
    /// Return in episode 1.
    pub first: MeanCi,
    /// Return in episode E.
    pub last: MeanCi,
    /// Episode E minus episode 1.
    pub improvement: MeanCi,
    /// Success in episode E, where defined.
    pub success_last: Option<MeanCi>,
    /// Training step of the evaluated models (mean over runs), in `trained_unit`.
    pub trained: f64,
    /// What `trained` counts (see [`trained`]).
    pub trained_unit: &'static str,
    /// Offline return with greedy actions (DPT), when every run of the group has one.
    pub offline_greedy: Option<MeanCi>,
    /// Offline greedy return over the contexts that contain the goal, and those contexts'
    /// share of all contexts (mean over runs), when every run has it.
    pub offline_greedy_with_goal: Option<(MeanCi, f64)>,
    /// Wall seconds per run (mean over the runs that have it).
    pub wall_seconds: Option<f64>,
    /// In-context curve: (episode, return, success).
    pub curve: Vec<(usize, MeanCi, Option<MeanCi>)>,
    /// Config fields (other than `seed`) that differ between the group's runs.
    pub differing: Vec<String>,
}

/// A run folder that could not be used, and why.
#[derive(Clone, Debug)]
pub struct LeftOut {
    /// The folder.
    pub dir: PathBuf,
    /// Why.
    pub why: String,
}

/// Wall seconds of a run from its TensorBoard event files (first to last event per file).
fn wall_from_events(dir: &Path) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let is_events = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents"));
        if !is_events {
            continue;
        }
        let Ok(events) = trainer::run::logging::read_events(&path) else {
            continue;
        };
        let times = events.iter().map(|e| e.wall_time).filter(|t| t.is_finite());
        let (lo, hi) = times.fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        if hi >= lo {
            total += hi - lo;
            any = true;
        }
    }
    any.then_some(total)
}

/// Reads one run folder; `Err` holds why it is left out.
fn read_run(
    dir: &Path,
    group: Option<&str>,
    wall: Option<f64>,
    state: Option<String>,
) -> Result<RunRecord, String> {
    let config_path = dir.join(trainer::run::dir::CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
    let config: Config = config::from_ron_str(&text, &config_path.display().to_string())
        .map_err(|e| e.to_string())?;
    let evals = eval::list(dir).map_err(|e| format!("{e:#}"))?;
    let eval_path = evals
        .last()
        .cloned()
        .ok_or_else(|| "no evaluation yet (eval/*.json)".to_string())?;
    let result = eval::read(&eval_path).map_err(|e| format!("{e:#}"))?;
    if result.curve.is_empty() || result.returns.is_empty() {
        return Err(format!("{}: empty evaluation", eval_path.display()));
    }
    let offline = latest_json::<OfflineResult>(dir, OFFLINE_DIR, "an offline evaluation")?;
    let bandit = latest_json::<BanditReport>(dir, BANDIT_DIR, "a bandit comparison")?;
    Ok(RunRecord {
        group: group.map_or_else(|| config.name.clone(), str::to_string),
        dir: dir.to_path_buf(),
        config,
        eval_path,
        eval: result,
        wall_seconds: wall.or_else(|| wall_from_events(dir)),
        state,
        offline,
        bandit,
    })
}

/// The highest-step `<step>.json` in `dir/sub` with its path, if there is one.
fn latest_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    sub: &str,
    what: &str,
) -> Result<Option<(PathBuf, T)>, String> {
    let Some(path) = eval::list_steps(&dir.join(sub)).pop() else {
        return Ok(None);
    };
    let value = trainer::fsutil::read_json(&path, what).map_err(|e| format!("{e:#}"))?;
    Ok(Some((path, value)))
}

/// A run's training budget: the step of its evaluated model in the unit its method counts.
/// PPO from scratch trains on each evaluated task, so its budget is the config's steps per task.
pub fn trained(r: &RunRecord) -> (f64, &'static str) {
    trainer::methods::of(&r.config.method).budget(r.eval.step)
}

/// What was collected from the inputs.
struct Collected {
    groups: Vec<Group>,
    /// The comparison named by the (single) sweep's experiment.
    comparison: Option<Comparison>,
    left_out: Vec<LeftOut>,
    references: Option<PathBuf>,
    title: String,
    description: String,
}

fn collect(inputs: &[PathBuf]) -> Result<Collected> {
    if inputs.is_empty() {
        return Err(UsageError("name at least one run or sweep folder".into()).into());
    }
    // Expand the inputs into sweeps and plain run folders.
    let mut sweeps: Vec<PathBuf> = Vec::new();
    let mut runs: Vec<PathBuf> = Vec::new();
    for input in inputs {
        if input.join(sweep::MANIFEST_FILE).is_file() {
            sweeps.push(input.clone());
        } else if input.join(trainer::run::dir::CONFIG_FILE).is_file() {
            runs.push(input.clone());
        } else if input.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("{}: cannot read", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            children.sort();
            let before = sweeps.len() + runs.len();
            for c in children {
                if c.join(sweep::MANIFEST_FILE).is_file() {
                    sweeps.push(c);
                } else if c.join(trainer::run::dir::CONFIG_FILE).is_file() {
                    runs.push(c);
                }
            }
            if sweeps.len() + runs.len() == before {
                return Err(UsageError(format!(
                    "{}: no run folders (with config.ron) or sweep folders (with {}) in it",
                    input.display(),
                    sweep::MANIFEST_FILE
                ))
                .into());
            }
        } else {
            return Err(UsageError(format!(
                "{}: not a run folder, a sweep folder or a folder of runs",
                input.display()
            ))
            .into());
        }
    }

    let mut groups: Vec<Group> = Vec::new();
    let mut left_out = Vec::new();
    let mut references = None;
    let mut seen = std::collections::HashSet::new();
    let mut add =
        |groups: &mut Vec<Group>, record: RunRecord, recipe: Option<(PathBuf, Vec<String>)>| {
            let key = record
                .dir
                .canonicalize()
                .unwrap_or_else(|_| record.dir.clone());
            if !seen.insert(key) {
                return;
            }
            let mut record = record;
            if recipe.is_none() {
                // A run outside a sweep joins the group of its config name only as another seed
                // of the same config; otherwise it gets a group of its own.
                record.group = free_run_group(groups, &record);
            }
            match groups.iter_mut().find(|g| g.name == record.group) {
                Some(g) => g.runs.push(record),
                None => groups.push(Group {
                    name: record.group.clone(),
                    runs: vec![record],
                    recipe,
                }),
            }
        };
    let several_sweeps = sweeps.len() > 1;
    let mut comparison = None;
    let mut titles = Vec::new();
    let mut description = String::new();
    for dir in &sweeps {
        let manifest = sweep::read_manifest(dir)?;
        titles.push(manifest.name.clone());
        if !several_sweeps {
            comparison = manifest.comparison.clone();
        }
        if description.is_empty() {
            description = manifest.description.clone();
        }
        if references.is_none() {
            references = manifest.references.clone();
        }
        for run in &manifest.runs {
            let slot = dir.join(&run.slot);
            let group = if several_sweeps {
                format!("{}.{}", manifest.name, run.variant)
            } else {
                run.variant.clone()
            };
            let Some(run_dir) = sweep::run_dir_in_slot(&slot) else {
                left_out.push(LeftOut {
                    dir: slot,
                    why: "not started yet".into(),
                });
                continue;
            };
            let status = sweep::SlotStatus::read(&slot).ok();
            let wall = status
                .as_ref()
                .filter(|s| !s.attempts.is_empty())
                .map(sweep::SlotStatus::wall_seconds);
            let state = status.map(|s| {
                serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            });
            let recipe_overrides: Vec<String> = run
                .overrides
                .iter()
                .filter(|o| !o.starts_with("seed="))
                .cloned()
                .collect();
            match read_run(&run_dir, Some(&group), wall, state) {
                Ok(record) => add(
                    &mut groups,
                    record,
                    Some((run.base.clone(), recipe_overrides)),
                ),
                Err(why) => left_out.push(LeftOut { dir: run_dir, why }),
            }
        }
    }
    for dir in &runs {
        match read_run(dir, None, None, None) {
            Ok(record) => add(&mut groups, record, None),
            Err(why) => left_out.push(LeftOut {
                dir: dir.clone(),
                why,
            }),
        }
    }
    for g in &mut groups {
        g.runs.sort_by_key(|r| (r.config.seed, r.dir.clone()));
    }
    let title = if titles.is_empty() {
        "icrl report".to_string()
    } else {
        titles.join(" + ")
    };
    Ok(Collected {
        groups,
        comparison,
        left_out,
        references,
        title,
        description,
    })
}

/// Whether two runs are seeds of one recipe: equal configs but for the seed and the fields
/// that cannot change a result (logging, checkpointing, runtime threads and device).
fn same_recipe(a: &Config, b: &Config) -> bool {
    let neutral = |c: &Config| {
        let mut c = c.clone();
        c.seed = 0;
        c.logging = Default::default();
        c.checkpoint = Default::default();
        c.runtime = Default::default();
        c
    };
    config::differing_fields(&neutral(a), &neutral(b)).is_empty()
}

/// The group of a run outside a sweep: its config name, else `name (env)`, else
/// `name (env) #k`, whichever first is free or holds seeds of the same recipe.
fn free_run_group(groups: &[Group], record: &RunRecord) -> String {
    let name = &record.config.name;
    let mut candidates = std::iter::once(name.clone())
        .chain(std::iter::once(format!("{name} ({})", record.eval.env)))
        .chain((2..).map(|k| format!("{name} ({}) #{k}", record.eval.env)));
    candidates
        .find(
            |candidate| match groups.iter().find(|g| &g.name == candidate) {
                None => true,
                Some(g) => g.recipe.is_none() && same_recipe(&g.runs[0].config, &record.config),
            },
        )
        .unwrap_or_else(|| name.clone())
}

/// Mean over a run's trials of the return in episode `e` (0-based).
fn run_return(r: &RunRecord, e: usize) -> f64 {
    r.eval.curve[e].ret.mean
}

/// The summary row of a group (see the module docs for the statistics).
pub fn summarise(group: &Group) -> Row {
    let runs = &group.runs;
    let episodes = runs.iter().map(|r| r.eval.curve.len()).min().unwrap_or(0);
    let last = episodes.saturating_sub(1);
    let has_success = runs.iter().all(|r| r.eval.curve[last].success.is_some());
    let (first_ci, last_ci, impr_ci, succ_ci, curve, ci_over);
    if runs.len() >= 2 {
        ci_over = "seeds";
        let over =
            |f: &dyn Fn(&RunRecord) -> f64| MeanCi::of(&runs.iter().map(f).collect::<Vec<_>>());
        first_ci = over(&|r| run_return(r, 0));
        last_ci = over(&|r| run_return(r, last));
        impr_ci = over(&|r| run_return(r, last) - run_return(r, 0));
        succ_ci =
            has_success.then(|| over(&|r| r.eval.curve[last].success.map_or(f64::NAN, |s| s.mean)));
        curve = (0..episodes)
            .map(|e| {
                let ret = over(&|r| run_return(r, e));
                let succ = runs
                    .iter()
                    .all(|r| r.eval.curve[e].success.is_some())
                    .then(|| over(&|r| r.eval.curve[e].success.map_or(f64::NAN, |s| s.mean)));
                (e + 1, ret, succ)
            })
            .collect();
    } else {
        ci_over = "trials";
        let r = &runs[0];
        // Intervals over the run's evaluation trials, clustered by task.
        let trials = |f: &dyn Fn(&[f64]) -> f64| {
            eval::clustered_by_task(
                &r.eval.returns.iter().map(|t| f(t)).collect::<Vec<_>>(),
                r.eval.tasks,
            )
        };
        first_ci = trials(&|t| t[0]);
        last_ci = trials(&|t| t[last]);
        impr_ci = trials(&|t| t[last] - t[0]);
        succ_ci = r.eval.curve[last].success;
        curve = r.eval.curve[..episodes]
            .iter()
            .map(|p| (p.episode, p.ret, p.success))
            .collect();
    }
    let offline_greedy = match runs
        .iter()
        .map(|r| r.offline.as_ref())
        .collect::<Option<Vec<_>>>()
    {
        Some(o) if o.len() >= 2 => Some(MeanCi::of(
            &o.iter().map(|(_, x)| x.greedy.mean).collect::<Vec<_>>(),
        )),
        Some(o) => o.first().map(|(_, x)| x.greedy),
        None => None,
    };
    let offline_greedy_with_goal = runs
        .iter()
        .map(|r| {
            let (_, o) = r.offline.as_ref()?;
            let share = o.contexts_with_reward as f64 / o.contexts.max(1) as f64;
            o.greedy_with_goal.map(|m| (m, share))
        })
        .collect::<Option<Vec<_>>>()
        .filter(|v| !v.is_empty())
        .map(|v| {
            let share = v.iter().map(|x| x.1).sum::<f64>() / v.len() as f64;
            let m = if v.len() >= 2 {
                MeanCi::of(&v.iter().map(|x| x.0.mean).collect::<Vec<_>>())
            } else {
                v[0].0
            };
            (m, share)
        });
    let walls: Vec<f64> = runs.iter().filter_map(|r| r.wall_seconds).collect();
    let mut differing = Vec::new();
    for r in &runs[1..] {
        let mut a = runs[0].config.clone();
        let mut b = r.config.clone();
        a.seed = 0;
        b.seed = 0;
        for f in config::differing_fields(&a, &b) {
            if !differing.contains(&f) {
                differing.push(f);
            }
        }
    }
    Row {
        variant: group.name.clone(),
        env: runs[0].eval.env.clone(),
        method: runs[0].eval.method.clone(),
        seeds: runs.iter().map(|r| r.config.seed).collect(),
        ci_over,
        episodes,
        first: first_ci,
        last: last_ci,
        improvement: impr_ci,
        success_last: succ_ci,
        trained: runs.iter().map(|r| trained(r).0).sum::<f64>() / runs.len() as f64,
        trained_unit: trained(&runs[0]).1,
        offline_greedy,
        offline_greedy_with_goal,
        wall_seconds: (!walls.is_empty()).then(|| walls.iter().sum::<f64>() / walls.len() as f64),
        curve,
        differing,
    }
}

fn pm(m: &MeanCi) -> String {
    if m.mean.is_nan() {
        "n/a".into()
    } else {
        format!("{:.2} ± {:.2}", m.mean, m.ci95)
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt_num(x: Option<f64>) -> String {
    x.map_or(String::new(), |v| v.to_string())
}

/// The files a report wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// The output folder.
    pub dir: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// The summary rows.
    pub rows: Vec<Row>,
}

fn write_file(path: &Path, text: &str, files: &mut Vec<PathBuf>) -> Result<()> {
    trainer::fsutil::write_atomic(path, text.as_bytes())?;
    files.push(path.to_path_buf());
    Ok(())
}

/// Folder-safe form of an env name for plot file names.
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `icrl report`: collects the runs, writes `report.md`, `report.csv`, `curves.csv`,
/// `runs.csv` and one plot per environment (and per metric).
pub fn report(options: &ReportOptions) -> Result<Written> {
    let collected = collect(&options.inputs)?;
    if collected.groups.is_empty() {
        let mut why = String::new();
        for l in &collected.left_out {
            let _ = write!(why, "\n  {}: {}", l.dir.display(), l.why);
        }
        return Err(UsageError(format!("no run with an evaluation to report{why}")).into());
    }
    let out = match &options.out {
        Some(o) => o.clone(),
        None if options.inputs.len() == 1 => options.inputs[0].join("report"),
        None => PathBuf::from("report"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let references_path = options.references.clone().or(collected.references.clone());
    let rows: Vec<Row> = collected.groups.iter().map(summarise).collect();
    // Only the lines of environments in the report.
    let references: Vec<ReferenceLine> = match &references_path {
        Some(p) => References::load(p)?
            .lines
            .into_iter()
            .filter(|l| rows.iter().any(|r| r.env == l.env))
            .collect(),
        None => Vec::new(),
    };
    let mut files = Vec::new();

    // Plots: one per environment and metric, one line per variant.
    let mut envs: Vec<String> = Vec::new();
    for r in &rows {
        if !envs.contains(&r.env) {
            envs.push(r.env.clone());
        }
    }
    let mut plots: Vec<(String, PathBuf)> = Vec::new();
    for env in &envs {
        let env_rows: Vec<&Row> = rows.iter().filter(|r| &r.env == env).collect();
        for metric in [Metric::Return, Metric::Success] {
            let series: Vec<Series> = env_rows
                .iter()
                .filter(|r| metric == Metric::Return || r.curve.iter().all(|c| c.2.is_some()))
                .map(|r| Series {
                    label: format!(
                        "{} (n={} {})",
                        r.variant,
                        if r.ci_over == "seeds" {
                            r.seeds.len()
                        } else {
                            r.first.n
                        },
                        r.ci_over
                    ),
                    points: r
                        .curve
                        .iter()
                        .map(|(e, ret, succ)| {
                            let m = if metric == Metric::Return {
                                *ret
                            } else {
                                succ.unwrap_or(*ret)
                            };
                            (*e as f64, m.mean, m.ci95)
                        })
                        .collect(),
                    bounds: match metric {
                        Metric::Return => plot::UNBOUNDED,
                        Metric::Success => (0.0, 1.0),
                    },
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            let refs: Vec<Reference> = references
                .iter()
                .filter(|l| &l.env == env && l.metric == metric)
                .map(|l| Reference {
                    label: l.label.clone(),
                    y: l.value,
                })
                .collect();
            let what = match metric {
                Metric::Return => "return",
                Metric::Success => "success",
            };
            // Our curves on their own scale; the paper's numbers (often far above a small
            // run's) on a second plot, so they never flatten the comparison.
            let mut versions = vec![(format!("{what}_{}.png", file_part(env)), Vec::new())];
            if !refs.is_empty() {
                versions.push((format!("{what}_{}_vs_paper.png", file_part(env)), refs));
            }
            for (file, refs) in versions {
                let path = out.join(&file);
                let with = if refs.is_empty() {
                    ""
                } else {
                    ", with the papers' numbers (dashed)"
                };
                plot::curves(
                    &path,
                    &format!("{}: in-context {what} on {env} (95% CI)", collected.title),
                    "episode in trial",
                    what,
                    &series,
                    &refs,
                )?;
                files.push(path);
                plots.push((
                    format!("in-context {what} on {env}{with}"),
                    PathBuf::from(file),
                ));
            }
        }
    }

    // Sink mass per layer against env steps, from the runs' TensorBoard events (ReLIC runs
    // with diagnostics on); one plot per environment, one line per (variant, layer).
    let mut sink_csv = String::from("variant,layer,step,runs,mean,ci95\n");
    for env in &envs {
        let mut series = Vec::new();
        for (g, _) in collected
            .groups
            .iter()
            .zip(&rows)
            .filter(|(_, r)| &r.env == env)
        {
            let runs: Vec<_> = g
                .runs
                .iter()
                .map(|r| crate::sink_mass::read_run(&r.dir))
                .collect();
            for curve in crate::sink_mass::layer_curves(&runs) {
                for (step, m) in &curve.points {
                    let _ = writeln!(
                        sink_csv,
                        "{},{},{step},{},{},{}",
                        csv_field(&g.name),
                        curve.layer,
                        m.n,
                        m.mean,
                        m.ci95
                    );
                }
                series.push(curve.series(&g.name));
            }
        }
        if series.is_empty() {
            continue;
        }
        let file = format!("sink_mass_{}.png", file_part(env));
        plot::curves(
            &out.join(&file),
            &format!(
                "{}: attention on the sink per layer on {env}",
                collected.title
            ),
            "env steps",
            "sink mass (mean over heads and positions)",
            &series,
            &[],
        )?;
        files.push(out.join(&file));
        plots.push((
            format!("attention on the sink per layer during training on {env}"),
            PathBuf::from(file),
        ));
    }
    if sink_csv.lines().count() > 1 {
        write_file(&out.join("sink_mass.csv"), &sink_csv, &mut files)?;
    }

    // CSV: the table, the curves and every run.
    let mut csv = String::from(
        "variant,env,method,runs,seeds,ci_over,episodes,first_mean,first_ci95,last_mean,last_ci95,improvement_mean,improvement_ci95,success_last_mean,success_last_ci95,trained_mean,trained_unit,offline_greedy_mean,offline_greedy_ci95,wall_seconds_mean\n",
    );
    for r in &rows {
        let seeds: Vec<String> = r.seeds.iter().map(u64::to_string).collect();
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.variant),
            csv_field(&r.env),
            csv_field(&r.method),
            r.seeds.len(),
            seeds.join(" "),
            r.ci_over,
            r.episodes,
            r.first.mean,
            r.first.ci95,
            r.last.mean,
            r.last.ci95,
            r.improvement.mean,
            r.improvement.ci95,
            opt_num(r.success_last.map(|s| s.mean)),
            opt_num(r.success_last.map(|s| s.ci95)),
            r.trained,
            r.trained_unit,
            opt_num(r.offline_greedy.map(|s| s.mean)),
            opt_num(r.offline_greedy.map(|s| s.ci95)),
            opt_num(r.wall_seconds),
        );
    }
    write_file(&out.join("report.csv"), &csv, &mut files)?;
    let mut curves = String::from(
        "variant,episode,n,ci_over,return_mean,return_ci95,success_mean,success_ci95\n",
    );
    for r in &rows {
        for (e, ret, succ) in &r.curve {
            let _ = writeln!(
                curves,
                "{},{e},{},{},{},{},{},{}",
                csv_field(&r.variant),
                ret.n,
                r.ci_over,
                ret.mean,
                ret.ci95,
                opt_num(succ.map(|s| s.mean)),
                opt_num(succ.map(|s| s.ci95)),
            );
        }
    }
    write_file(&out.join("curves.csv"), &curves, &mut files)?;
    let mut runs_csv = String::from(
        "variant,seed,run_dir,eval_json,trained,trained_unit,episodes,trials,first_return,last_return,success_last,offline_greedy,offline_json,wall_seconds,state\n",
    );
    for g in &collected.groups {
        for r in &g.runs {
            let last = r.eval.curve.len() - 1;
            let (steps, unit) = trained(r);
            let _ = writeln!(
                runs_csv,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&g.name),
                r.config.seed,
                csv_field(&r.dir.display().to_string()),
                csv_field(&r.eval_path.display().to_string()),
                steps,
                unit,
                r.eval.curve.len(),
                r.eval.returns.len(),
                r.eval.curve[0].ret.mean,
                r.eval.curve[last].ret.mean,
                opt_num(r.eval.curve[last].success.map(|s| s.mean)),
                opt_num(r.offline.as_ref().map(|(_, o)| o.greedy.mean)),
                csv_field(
                    &r.offline
                        .as_ref()
                        .map_or(String::new(), |(p, _)| p.display().to_string())
                ),
                opt_num(r.wall_seconds),
                r.state.as_deref().unwrap_or(""),
            );
        }
    }
    write_file(&out.join("runs.csv"), &runs_csv, &mut files)?;
    let (bandit_md, bandit_csv) = bandit_tables(&collected.groups);
    if !bandit_csv.is_empty() {
        write_file(&out.join("bandit.csv"), &bandit_csv, &mut files)?;
    }

    let mut md = markdown(
        &collected,
        &rows,
        &plots,
        &references,
        references_path.as_deref(),
        options,
    );
    if let Some(c) = &collected.comparison {
        if let Some(paired) = paired_rows(&collected.groups, c) {
            md.push_str(&paired_markdown(&paired, c));
            write_file(&out.join("paired.csv"), &paired_csv(&paired), &mut files)?;
        }
    }
    md.push_str(&bandit_md);
    write_file(&out.join("report.md"), &md, &mut files)?;
    Ok(Written {
        dir: out,
        files,
        rows,
    })
}

/// The markdown table of the summary rows. Method and env get columns when the rows mix
/// them; the offline return, when a row has one.
pub fn table(rows: &[Row]) -> String {
    let mixed = rows
        .iter()
        .any(|r| (&r.method, &r.env) != (&rows[0].method, &rows[0].env));
    let offline = rows.iter().any(|r| r.offline_greedy.is_some());
    let mut head = vec!["variant"];
    if mixed {
        head.extend(["method", "env"]);
    }
    head.extend([
        "runs (seeds)",
        "CI over",
        "episode 1 return",
        "last episode return",
        "improvement",
        "success (last episode)",
    ]);
    if offline {
        head.push("offline return (greedy)");
        head.push("offline, goal in context (share)");
    }
    head.extend(["training", "wall time / run"]);
    let mut md = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for r in rows {
        let seeds: Vec<String> = r.seeds.iter().map(u64::to_string).collect();
        let mut cells = vec![r.variant.clone()];
        if mixed {
            cells.extend([r.method.clone(), r.env.clone()]);
        }
        cells.extend([
            format!("{} ({})", r.seeds.len(), seeds.join(", ")),
            format!("{} (n={})", r.ci_over, r.first.n),
            pm(&r.first),
            format!("{} (ep {})", pm(&r.last), r.episodes),
            pm(&r.improvement),
            r.success_last.as_ref().map_or("—".into(), pm),
        ]);
        if offline {
            cells.push(r.offline_greedy.as_ref().map_or("—".into(), pm));
            cells.push(
                r.offline_greedy_with_goal
                    .as_ref()
                    .map_or("—".into(), |(m, share)| {
                        format!("{} ({:.0}%)", pm(m), 100.0 * share)
                    }),
            );
        }
        cells.extend([
            format!("{} {}", thousands(r.trained), r.trained_unit),
            r.wall_seconds.map_or("—".into(), sweep::human_seconds),
        ]);
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    md
}

/// The bandit comparisons of the runs that have one: a markdown section (per run, every
/// algorithm's offline suboptimality at each dataset size and its online regret at the last
/// pull) and the CSV of every number; both empty when no run has one.
fn bandit_tables(groups: &[Group]) -> (String, String) {
    let mut md = String::new();
    let mut csv = String::new();
    for g in groups {
        for r in &g.runs {
            let Some((path, b)) = &r.bandit else { continue };
            if csv.is_empty() {
                csv.push_str("variant,seed,bandit_json,algorithm,kind,x,mean,ci95,n\n");
                md.push_str(
                    "\n## Bandits\n\nOffline: suboptimality of the arm each algorithm picks from a \
                     fixed dataset of n pulls (best arm's mean minus the picked arm's). Online: \
                     cumulative regret after t pulls. Mean ± 95% CI over the held-out bandits; \
                     lower is better.\n",
                );
            }
            let last_t = b.online_steps.last().copied().unwrap_or(0);
            let _ = writeln!(
                md,
                "\n`{}` seed {} (`{}`): {} bandits, {} arms.\n",
                g.name,
                r.config.seed,
                path.display(),
                b.bandits,
                b.arms
            );
            let mut head = vec!["algorithm".to_string()];
            head.extend(b.offline_sizes.iter().map(|n| format!("offline n={n}")));
            head.push(format!("online regret t={last_t}"));
            let _ = writeln!(
                md,
                "| {} |\n|{}",
                head.join(" | "),
                "---|".repeat(head.len())
            );
            for a in &b.algorithms {
                let mut cells = vec![a.name.clone()];
                for k in 0..b.offline_sizes.len() {
                    let v = a.offline_suboptimality.as_ref().and_then(|o| o.get(k));
                    cells.push(v.map_or("—".into(), |m| format!("{:.3} ± {:.3}", m.mean, m.ci95)));
                }
                let online = a.online_regret.as_ref().and_then(|o| o.last());
                cells.push(online.map_or("—".into(), pm));
                let _ = writeln!(md, "| {} |", cells.join(" | "));
                let series = [
                    (
                        "offline_suboptimality",
                        &b.offline_sizes,
                        &a.offline_suboptimality,
                    ),
                    ("online_regret", &b.online_steps, &a.online_regret),
                ];
                for (kind, xs, values) in series {
                    for (x, m) in xs.iter().zip(values.iter().flatten()) {
                        let _ = writeln!(
                            csv,
                            "{},{},{},{},{kind},{x},{},{},{}",
                            csv_field(&g.name),
                            r.config.seed,
                            csv_field(&path.display().to_string()),
                            csv_field(&a.name),
                            m.mean,
                            m.ci95,
                            m.n
                        );
                    }
                }
            }
        }
    }
    (md, csv)
}

/// `1234567.0` as `1,234,567` (rounded to an integer).
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < -0.5 {
        out.insert(0, '-');
    }
    out
}

fn markdown(
    c: &Collected,
    rows: &[Row],
    plots: &[(String, PathBuf)],
    references: &[ReferenceLine],
    references_path: Option<&Path>,
    options: &ReportOptions,
) -> String {
    let mut md = format!("# {}\n\n", c.title);
    if !c.description.is_empty() {
        let _ = writeln!(md, "{}\n", c.description);
    }
    let runs: usize = c.groups.iter().map(|g| g.runs.len()).sum();
    let _ = writeln!(
        md,
        "Written by `{}` from {runs} run(s) in {} group(s). Each run contributes its latest \
         evaluation (`eval/<step>.json`). Values are mean ± 95% CI half-width: over seeds \
         (each seed's value is the mean over its evaluation trials) when a variant has several \
         runs, else over the single run's evaluation trials (column *CI over*). Improvement = \
         last episode minus episode 1. Wall time: the sweep's child processes (all attempts), \
         else the span of the run's TensorBoard events.\n",
        options.command,
        c.groups.len()
    );
    md.push_str("## Results\n\n");
    md.push_str(&table(rows));
    md.push('\n');
    for r in rows.iter().filter(|r| !r.differing.is_empty()) {
        let _ = writeln!(
            md,
            "Note: the runs of `{}` differ in more than the seed: {}.\n",
            r.variant,
            r.differing.join(", ")
        );
    }
    for (title, file) in plots {
        let _ = writeln!(md, "![{title}]({})\n", file.display());
    }
    if let Some(t) = by_seed(&c.groups, rows) {
        md.push_str(&t);
    }
    if !references.is_empty() {
        let _ = writeln!(
            md,
            "## Paper reference numbers (not ours)\n\nDrawn as dashed lines in the plots; from `{}`. Published numbers under the papers' own training budgets, never results of these runs.\n\n| env | metric | label | value | source |\n|---|---|---|---|---|",
            references_path.map_or(String::new(), |p| p.display().to_string())
        );
        for l in references {
            let _ = writeln!(
                md,
                "| {} | {:?} | {} | {} | {} |",
                l.env, l.metric, l.label, l.value, l.source
            );
        }
        md.push('\n');
    }
    md.push_str("## Runs\n\n| variant | seed | state | training | episode 1 | last episode | wall time | run folder | evaluation |\n|---|---|---|---|---|---|---|---|---|\n");
    for g in &c.groups {
        for r in &g.runs {
            let last = r.eval.curve.len() - 1;
            let (steps, unit) = trained(r);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} {unit} | {:.2} | {:.2} | {} | `{}` | `{}` |",
                g.name,
                r.config.seed,
                r.state.as_deref().unwrap_or("—"),
                thousands(steps),
                r.eval.curve[0].ret.mean,
                r.eval.curve[last].ret.mean,
                r.wall_seconds.map_or("—".into(), sweep::human_seconds),
                r.dir.display(),
                r.eval_path.display()
            );
        }
    }
    md.push('\n');
    md.push_str("## Configs\n\nEvery run's resolved config is `config.ron` in its run folder.\n\n");
    let recipes: Vec<(&str, &PathBuf, &Vec<String>)> = c
        .groups
        .iter()
        .filter_map(|g| g.recipe.as_ref().map(|(b, o)| (g.name.as_str(), b, o)))
        .collect();
    // Overrides every variant shares (the budget, mostly) are listed once.
    let common: Vec<&String> = match recipes.first() {
        Some((_, _, first)) if recipes.len() > 1 => first
            .iter()
            .filter(|o| recipes.iter().all(|(_, _, os)| os.contains(o)))
            .collect(),
        _ => Vec::new(),
    };
    if !common.is_empty() {
        md.push_str("Overrides of every variant:");
        for o in &common {
            let _ = write!(md, " `--set {o}`");
        }
        md.push_str("\n\n");
    }
    for (name, base, overrides) in &recipes {
        let _ = write!(md, "- `{name}`: `{}`", base.display());
        for o in overrides.iter().filter(|o| !common.contains(o)) {
            let _ = write!(md, " `--set {o}`");
        }
        md.push('\n');
    }
    if !c.left_out.is_empty() {
        md.push_str("\n## Left out\n\n");
        for l in &c.left_out {
            let _ = writeln!(md, "- `{}`: {}", l.dir.display(), l.why);
        }
    }
    md
}

/// The last-episode return of every run, a row per seed and a column per variant, when at
/// least two variants share a seed. Runs with the same seed draw the same training tasks (and,
/// for the same architecture, the same initial weights), so a row pairs them: with 3 seeds the
/// per-seed order often says more than intervals over seeds. `rows[i]` summarises `groups[i]`.
fn by_seed(groups: &[Group], rows: &[Row]) -> Option<String> {
    let mut seeds: Vec<u64> = groups
        .iter()
        .flat_map(|g| g.runs.iter().map(|r| r.config.seed))
        .collect();
    seeds.sort_unstable();
    seeds.dedup();
    let shared = seeds.iter().any(|&s| {
        groups
            .iter()
            .filter(|g| g.runs.iter().any(|r| r.config.seed == s))
            .count()
            >= 2
    });
    if !shared {
        return None;
    }
    let mut md = String::from(
        "## Last-episode return by seed\n\nEach run's mean over its evaluation trials, in the \
         episode the table above calls last. Runs with the same seed draw the same training \
         tasks, so a row compares the variants on equal terms.\n\n| seed |",
    );
    for g in groups {
        let _ = write!(md, " {} |", g.name);
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(groups.len()));
    md.push('\n');
    for seed in seeds {
        let _ = write!(md, "| {seed} |");
        for (g, row) in groups.iter().zip(rows) {
            // Every run of a group has at least the row's E episodes (E is their minimum).
            let cell = g
                .runs
                .iter()
                .find(|r| r.config.seed == seed)
                .map_or("—".to_string(), |r| {
                    format!("{:.2}", r.eval.curve[row.episodes - 1].ret.mean)
                });
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    md.push('\n');
    Some(md)
}

/// One variant's line of the paired comparison with the baseline.
#[derive(Clone, Debug)]
pub struct PairedRow {
    /// The variant.
    pub variant: String,
    /// Whether it is the baseline.
    pub baseline: bool,
    /// The metric over the variant's runs (mean, interval over seeds).
    pub metric: MeanCi,
    /// Runs whose metric is above the take-off threshold, and runs.
    pub took_off: (usize, usize),
    /// Seeds both this variant and the baseline ran.
    pub paired_seeds: Vec<u64>,
    /// The paired difference from the baseline over `paired_seeds` (None for the baseline).
    pub paired: Option<Paired>,
    /// `paired.p` corrected by Holm's method over every contrast (NaN when not tested).
    pub p_holm: f64,
}

/// The paired comparison of every group with the baseline group, on the comparison's metric
/// (runs whose evaluation is shorter than the metric's episodes are left out). None when the
/// baseline has no runs or no other variant shares a seed with it.
pub fn paired_rows(groups: &[Group], c: &Comparison) -> Option<Vec<PairedRow>> {
    let metric_by_seed = |g: &Group| -> Vec<(u64, f64)> {
        g.runs
            .iter()
            .filter_map(|r| {
                let curve: Vec<f64> = r.eval.curve.iter().map(|p| p.ret.mean).collect();
                c.metric(&curve).map(|m| (r.config.seed, m))
            })
            .collect()
    };
    let base = groups.iter().find(|g| g.name == c.baseline)?;
    let base_values = metric_by_seed(base);
    let mut rows: Vec<PairedRow> = groups
        .iter()
        .map(|g| {
            let values = metric_by_seed(g);
            let metrics: Vec<f64> = values.iter().map(|v| v.1).collect();
            let is_base = g.name == c.baseline;
            let pairs: Vec<(u64, f64, f64)> = values
                .iter()
                .filter_map(|&(seed, v)| {
                    let b = base_values.iter().find(|b| b.0 == seed)?;
                    Some((seed, b.1, v))
                })
                .collect();
            let paired = (!is_base && !pairs.is_empty()).then(|| {
                let b: Vec<f64> = pairs.iter().map(|p| p.1).collect();
                let v: Vec<f64> = pairs.iter().map(|p| p.2).collect();
                Paired::of(&b, &v)
            });
            PairedRow {
                variant: g.name.clone(),
                baseline: is_base,
                metric: MeanCi::of(&metrics),
                took_off: (
                    metrics.iter().filter(|&&m| m > c.takeoff).count(),
                    metrics.len(),
                ),
                paired_seeds: pairs.iter().map(|p| p.0).collect(),
                paired,
                p_holm: f64::NAN,
            }
        })
        .collect();
    if !rows.iter().any(|r| r.paired.is_some()) {
        return None;
    }
    let p: Vec<f64> = rows
        .iter()
        .map(|r| r.paired.map_or(f64::NAN, |x| x.p))
        .collect();
    for (row, adjusted) in rows.iter_mut().zip(holm(&p)) {
        row.p_holm = adjusted;
    }
    Some(rows)
}

/// What a contrast resolved: an interval that excludes 0 (said to hold only for this
/// contrast alone when Holm's correction over all contrasts, `p_holm`, leaves p at or above
/// 0.05), or the smallest difference the seeds could have detected.
fn verdict(p: &Paired, p_holm: f64) -> String {
    if p.diff.n < 2 {
        "one seed: no interval".to_string()
    } else if p.diff.mean.abs() > p.diff.ci95 && p_holm < 0.05 {
        "interval excludes 0".to_string()
    } else if p.diff.mean.abs() > p.diff.ci95 {
        format!(
            "interval excludes 0 for this contrast alone; not after Holm's correction (p = {p_holm:.3})"
        )
    } else if p.detectable.is_finite() {
        format!(
            "not resolved: these seeds detect differences of at least {:.2}",
            p.detectable
        )
    } else {
        "not resolved".to_string()
    }
}

fn paired_markdown(rows: &[PairedRow], c: &Comparison) -> String {
    let (from, to) = c.episodes;
    let mut md = format!(
        "## Paired comparison with `{}`

Metric (fixed in the experiment file before running): a run's mean return over episodes {from}-{to} of its final evaluation. A run took off when its metric is above {}. Differences are variant minus baseline over the seeds both ran: mean with its 95% t interval over seeds, the sign count (seeds better / worse / equal), the paired t test's two-sided p-value and its Holm correction over the {} contrasts, and the smallest difference these seeds detect with 80% power at the 5% level.

| variant | metric | took off | seeds paired | difference | better / worse / equal | p | p (Holm) | resolved? |
|---|---|---|---|---|---|---|---|---|
",
        c.baseline,
        c.takeoff,
        rows.iter().filter(|r| r.paired.is_some()).count()
    );
    let num = |x: f64| {
        if x.is_nan() {
            "n/a".to_string()
        } else {
            format!("{x:.3}")
        }
    };
    for r in rows {
        let share = format!("{} / {}", r.took_off.0, r.took_off.1);
        match &r.paired {
            None => {
                let _ = writeln!(
                    md,
                    "| {} (baseline) | {} | {share} | — | — | — | — | — | — |",
                    r.variant,
                    pm(&r.metric)
                );
            }
            Some(p) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {share} | {} | {} | {} / {} / {} | {} | {} | {} |",
                    r.variant,
                    pm(&r.metric),
                    r.paired_seeds.len(),
                    pm(&p.diff),
                    p.wins,
                    p.losses,
                    p.ties,
                    num(p.p),
                    num(r.p_holm),
                    verdict(p, r.p_holm)
                );
            }
        }
    }
    md.push('\n');
    md
}

fn paired_csv(rows: &[PairedRow]) -> String {
    let mut csv = String::from(
        "variant,baseline,metric_mean,metric_ci95,took_off,runs,seeds_paired,diff_mean,diff_ci95,better,worse,equal,p,p_holm,detectable\n",
    );
    for r in rows {
        let p = r.paired;
        let f = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.variant),
            r.baseline,
            r.metric.mean,
            r.metric.ci95,
            r.took_off.0,
            r.took_off.1,
            r.paired_seeds.len(),
            f(p.map(|p| p.diff.mean)),
            f(p.map(|p| p.diff.ci95)),
            f(p.map(|p| p.wins as f64)),
            f(p.map(|p| p.losses as f64)),
            f(p.map(|p| p.ties as f64)),
            f(p.map(|p| p.p)),
            f(p.map(|_| r.p_holm)),
            f(p.map(|p| p.detectable)),
        );
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainer::config::{EvalConfig, Method};

    fn record(group: &str, seed: u64, returns: Vec<Vec<f64>>) -> RunRecord {
        let env = envs::EnvConfig::from_name("darkroom").unwrap();
        let cfg = EvalConfig {
            episodes_per_trial: returns[0].len(),
            ..EvalConfig::default()
        };
        let results: Vec<Vec<(f64, bool)>> = returns
            .iter()
            .map(|t| t.iter().map(|&r| (r, r > 1.0)).collect())
            .collect();
        let eval = eval::summarise(&results, &env, &cfg, results.len(), 100, "relic", false);
        let config = Config {
            seed,
            ..Config::default()
        };
        RunRecord {
            group: group.into(),
            dir: PathBuf::from(format!("/r/{group}{seed}")),
            config,
            eval_path: PathBuf::from("e.json"),
            eval,
            wall_seconds: Some(10.0 + seed as f64),
            state: None,
            offline: None,
            bandit: None,
        }
    }

    /// Synthetic sweep: 10 seeds; `better` beats the baseline by 5 on every seed (+-0.1),
    /// `same` differs by +-0.5 alternately (mean 0). The answers are known.
    #[test]
    fn paired_comparison_of_synthetic_variants() {
        let group = |name: &str, offset: &dyn Fn(u64) -> f64| Group {
            name: name.into(),
            runs: (0..10u64)
                .map(|s| {
                    let m = 10.0 + s as f64 + offset(s);
                    record(name, s, vec![vec![0.0, m, m]])
                })
                .collect(),
            recipe: None,
        };
        let sign = |s: u64| if s.is_multiple_of(2) { 1.0 } else { -1.0 };
        let groups = vec![
            group("base", &|_| 0.0),
            group("better", &|s| 5.0 + 0.1 * sign(s)),
            group("same", &|s| 0.5 * sign(s)),
        ];
        let c = Comparison {
            baseline: "base".into(),
            episodes: (2, 3),
            takeoff: 12.0,
        };
        let rows = paired_rows(&groups, &c).unwrap();
        let [base, better, same] = [&rows[0], &rows[1], &rows[2]];
        assert!(base.baseline && base.paired.is_none());
        // Seeds 3..=9 have metric 13..19 > 12.
        assert_eq!(base.took_off, (7, 10));
        assert_eq!(better.took_off, (10, 10));
        assert!((base.metric.mean - 14.5).abs() < 1e-9);
        let b = better.paired.unwrap();
        assert_eq!(better.paired_seeds.len(), 10);
        assert!((b.diff.mean - 5.0).abs() < 1e-9);
        assert_eq!((b.wins, b.losses, b.ties), (10, 0, 0));
        assert!(b.p < 1e-10 && b.diff.mean - b.diff.ci95 > 4.8);
        let n = same.paired.unwrap();
        assert!(n.diff.mean.abs() < 1e-9);
        assert_eq!((n.wins, n.losses), (5, 5));
        assert!((n.p - 1.0).abs() < 1e-9);
        // Holm over two contrasts: the smaller p doubles, the larger stays capped at 1.
        assert!((better.p_holm - 2.0 * b.p).abs() < 1e-15);
        assert!((same.p_holm - 1.0).abs() < 1e-9);
        assert_eq!(verdict(&b, better.p_holm), "interval excludes 0");
        // The same interval with a family-wise p above 0.05 is not claimed as resolved.
        assert!(verdict(&b, 0.08).contains("not after Holm's correction (p = 0.08"));
        assert!(
            verdict(&n, 1.0).starts_with("not resolved"),
            "{}",
            verdict(&n, 1.0)
        );
        // sd of +-0.5 over 10 seeds = 0.527; detectable = (2.262 + 0.883) x 0.527 / sqrt(10).
        assert!((n.detectable - 3.145 * 0.527 / 10f64.sqrt()).abs() < 0.01);
        let md = paired_markdown(&rows, &c);
        assert!(md.contains("| base (baseline) |") && md.contains("| better |"));
        assert_eq!(paired_csv(&rows).lines().count(), 4);
        // A baseline that did not run, or no shared seeds: no comparison.
        let other = Comparison {
            baseline: "missing".into(),
            ..c.clone()
        };
        assert!(paired_rows(&groups, &other).is_none());
        assert!(paired_rows(&groups[..1], &c).is_none());
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(3_506_176.0), "3,506,176");
        assert_eq!(thousands(-12345.0), "-12,345");
        assert_eq!(thousands(f64::NAN), "n/a");
    }

    fn offline(greedy: f64) -> OfflineResult {
        let m = |mean| MeanCi {
            mean,
            ci95: 1.0,
            n: 10,
        };
        OfflineResult {
            step: 100,
            env: "darkroom".into(),
            context: "Uniform".into(),
            tasks: 2,
            contexts: 10,
            contexts_with_reward: 5,
            greedy: m(greedy),
            sampled: m(greedy - 1.0),
            greedy_with_goal: Some(m(2.0 * greedy)),
            sampled_with_goal: Some(m(2.0 * greedy - 1.0)),
            dataset: m(1.0),
            greedy_returns: vec![],
            sampled_returns: vec![],
        }
    }

    #[test]
    fn table_shows_units_offline_returns_and_mixed_methods() {
        let mut dpt = record("dpt", 0, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        dpt.config.method = Method::Dpt(Default::default());
        dpt.offline = Some((PathBuf::from("o.json"), offline(40.0)));
        let mut dpt1 = record("dpt", 1, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        dpt1.config.method = Method::Dpt(Default::default());
        dpt1.offline = Some((PathBuf::from("o.json"), offline(50.0)));
        dpt.eval.method = "dpt".into();
        dpt1.eval.method = "dpt".into();
        let relic = record("relic", 0, vec![vec![1.0, 5.0], vec![3.0, 7.0]]);
        let groups = [
            Group {
                name: "dpt".into(),
                runs: vec![dpt, dpt1],
                recipe: None,
            },
            Group {
                name: "relic".into(),
                runs: vec![relic],
                recipe: None,
            },
        ];
        let rows: Vec<Row> = groups.iter().map(summarise).collect();
        // Over the two seeds' greedy means: 45 with Student's t interval over 2 values.
        let o = rows[0].offline_greedy.unwrap();
        assert!((o.mean - 45.0).abs() < 1e-12);
        assert!((o.ci95 - MeanCi::of(&[40.0, 50.0]).ci95).abs() < 1e-12);
        assert_eq!(rows[0].trained_unit, "optimiser steps");
        assert_eq!(rows[1].trained_unit, "env steps");
        assert!(rows[1].offline_greedy.is_none());
        let md = table(&rows);
        let head = md.lines().next().unwrap();
        assert!(
            head.starts_with("| variant | method | env | runs (seeds)"),
            "{md}"
        );
        assert!(head.contains("offline return (greedy)"), "{md}");
        // Over the contexts with the goal (half of them): 80 and 100 -> 90, share 50%.
        let (g, share) = rows[0].offline_greedy_with_goal.unwrap();
        assert!((g.mean - 90.0).abs() < 1e-12 && (share - 0.5).abs() < 1e-12);
        assert!(head.contains("offline, goal in context (share)"), "{md}");
        assert!(md.contains("90.00 ± "), "{md}");
        assert!(md.contains("(50%)"), "{md}");
        assert!(md.contains("| 100 optimiser steps |"), "{md}");
        assert!(md.contains("| relic | relic | darkroom |"), "{md}");
        // One method, no offline results: the narrow table.
        let md = table(&rows[1..]);
        assert!(md.starts_with("| variant | runs (seeds) |"), "{md}");
        assert!(!md.contains("offline"), "{md}");
    }

    #[test]
    fn bandit_section_lists_every_algorithm_and_number() {
        let m = |mean| MeanCi {
            mean,
            ci95: 0.5,
            n: 200,
        };
        let mut run = record("dpt", 0, vec![vec![1.0]]);
        run.bandit = Some((
            PathBuf::from("b.json"),
            BanditReport {
                step: 10,
                bandits: 200,
                arms: 5,
                offline_sizes: vec![1, 10],
                online_steps: vec![1, 50],
                algorithms: vec![
                    trainer::results::AlgoResult {
                        name: "DPT".into(),
                        offline_suboptimality: Some(vec![m(0.3), m(0.1)]),
                        online_regret: Some(vec![m(0.4), m(7.0)]),
                    },
                    trainer::results::AlgoResult {
                        name: "LCB".into(),
                        offline_suboptimality: Some(vec![m(0.35), m(0.2)]),
                        online_regret: None,
                    },
                ],
            },
        ));
        let groups = [Group {
            name: "dpt".into(),
            runs: vec![run],
            recipe: None,
        }];
        let (md, csv) = bandit_tables(&groups);
        assert!(
            md.contains("| algorithm | offline n=1 | offline n=10 | online regret t=50 |"),
            "{md}"
        );
        assert!(
            md.contains("| DPT | 0.300 ± 0.500 | 0.100 ± 0.500 | 7.00 ± 0.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| LCB | 0.350 ± 0.500 | 0.200 ± 0.500 | — |"),
            "{md}"
        );
        // 2 + 2 DPT numbers, 2 LCB numbers, and the header.
        assert_eq!(csv.lines().count(), 7, "{csv}");
        assert!(
            csv.contains("dpt,0,b.json,DPT,online_regret,50,7,0.5,200"),
            "{csv}"
        );
        let none = [Group {
            name: "x".into(),
            runs: vec![record("x", 0, vec![vec![1.0]])],
            recipe: None,
        }];
        assert_eq!(bandit_tables(&none), (String::new(), String::new()));
    }

    #[test]
    fn runs_outside_a_sweep_pool_only_seeds_of_one_recipe() {
        let first = record("x", 0, vec![vec![1.0, 2.0]]);
        let name = first.config.name.clone();
        let groups = vec![Group {
            name: name.clone(),
            runs: vec![first],
            recipe: None,
        }];
        // Another seed of the same config (logging aside) joins the group.
        let mut seed1 = record("x", 1, vec![vec![1.0, 2.0]]);
        seed1.config.logging.progress = !seed1.config.logging.progress;
        assert_eq!(free_run_group(&groups, &seed1), name);
        // Another recipe under the same name gets its own group, named by env, then numbered.
        let mut other = record("x", 0, vec![vec![1.0, 2.0]]);
        other.config.eval.trials_per_task += 1;
        let own = free_run_group(&groups, &other);
        assert_eq!(own, format!("{name} (darkroom)"));
        let mut more = groups.clone();
        more.push(Group {
            name: own,
            runs: vec![other.clone()],
            recipe: None,
        });
        let mut third = other.clone();
        third.config.eval.trials_per_task += 1;
        assert_eq!(
            free_run_group(&more, &third),
            format!("{name} (darkroom) #2")
        );
        assert_eq!(free_run_group(&more, &other), format!("{name} (darkroom)"));
    }

    #[test]
    fn several_seeds_give_intervals_over_seeds() {
        let g = Group {
            name: "a".into(),
            runs: vec![
                record("a", 0, vec![vec![1.0, 3.0], vec![3.0, 5.0]]),
                record("a", 1, vec![vec![2.0, 8.0], vec![4.0, 10.0]]),
            ],
            recipe: None,
        };
        let row = summarise(&g);
        assert_eq!(row.ci_over, "seeds");
        // Per-seed episode-1 means: 2 and 3.
        assert_eq!(row.first, MeanCi::of(&[2.0, 3.0]));
        // Per-seed last means: 4 and 9; improvements 2 and 6.
        assert_eq!(row.last, MeanCi::of(&[4.0, 9.0]));
        assert_eq!(row.improvement, MeanCi::of(&[2.0, 6.0]));
        assert_eq!(row.curve.len(), 2);
        assert_eq!(row.curve[1].1, MeanCi::of(&[4.0, 9.0]));
        assert!((row.wall_seconds.unwrap() - 10.5).abs() < 1e-12);
        assert!(row.differing.is_empty());
        let md = table(&[row]);
        assert!(md.contains("| a | 2 (0, 1) | seeds (n=2) | 2.50 ±"), "{md}");
    }

    #[test]
    fn by_seed_pairs_the_variants_runs_of_each_seed() {
        let groups = vec![
            Group {
                name: "a".into(),
                runs: vec![
                    record("a", 0, vec![vec![1.0, 3.0], vec![3.0, 5.0]]),
                    record("a", 1, vec![vec![2.0, 8.0]]),
                ],
                recipe: None,
            },
            Group {
                name: "b".into(),
                runs: vec![
                    record("b", 0, vec![vec![0.0, 20.0, 30.0]]),
                    record("b", 2, vec![vec![1.0, 7.0, 9.0]]),
                ],
                recipe: None,
            },
        ];
        let rows: Vec<Row> = groups.iter().map(summarise).collect();
        let md = by_seed(&groups, &rows).unwrap();
        assert!(md.contains("| seed | a | b |"), "{md}");
        // a's last episode is its 2nd (mean of 3 and 5); b's its 3rd.
        assert!(md.contains("| 0 | 4.00 | 30.00 |"), "{md}");
        assert!(md.contains("| 1 | 8.00 | — |"), "{md}");
        assert!(md.contains("| 2 | — | 9.00 |"), "{md}");
        // No seed in common, or a single variant: no table.
        assert!(by_seed(&groups[..1], &rows[..1]).is_none());
        let apart = vec![groups[0].clone(), {
            let mut g = groups[1].clone();
            g.runs.remove(0);
            g
        }];
        assert!(by_seed(&apart, &rows).is_none());
    }

    #[test]
    fn one_run_gives_intervals_over_trials() {
        let g = Group {
            name: "b".into(),
            runs: vec![record("b", 0, vec![vec![1.0, 3.0], vec![3.0, 7.0]])],
            recipe: None,
        };
        let row = summarise(&g);
        assert_eq!(row.ci_over, "trials");
        assert_eq!(row.first, MeanCi::of(&[1.0, 3.0]));
        assert_eq!(row.improvement, MeanCi::of(&[2.0, 4.0]));
    }

    #[test]
    fn references_parse_and_reject_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.ron");
        std::fs::write(
            &p,
            "References(lines: [(env: \"darkroom\", metric: Return, label: \"paper\", value: 3.0, source: \"s\")])",
        )
        .unwrap();
        assert_eq!(References::load(&p).unwrap().lines[0].value, 3.0);
        std::fs::write(&p, "References(lines: [], extra: 1)").unwrap();
        let e = References::load(&p).unwrap_err();
        assert!(crate::is_bad_input(&e));
        assert!(format!("{e:#}").contains("r.ron:1:"), "{e:#}");
    }
}
