//! Experiment files: a set of runs named in one RON file (docs/architecture.md). An experiment has a
//! base config (or one per variant, for method comparisons), named variants that are lists of
//! `--set` overrides, seeds, and a budget (more overrides that size every run). `icrl sweep`
//! runs every (variant, seed) pair; `icrl report` turns the runs into tables and plots.
//!
//! Loading an experiment resolves every run's config exactly as `icrl train` would
//! (`config::load` with the overrides), so a variant that sets a field that does not exist, an
//! impossible value or a missing base config is reported, with every problem at once, before
//! anything runs.
//!
//! Overrides of one run are applied in this order: `name` (`<experiment>.<variant>`), the
//! experiment's budget, the variant's budget, the variant's `set`, the sweep's extra `--set`
//! arguments, then `seed`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use trainer::config::{self, Config, ConfigError};
use trainer::error::UsageError;

/// An experiment file (`experiments/*.ron`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the experiment: the default sweep folder is `sweeps/<name>/`, and every run's
    /// config is named `<name>.<variant>`. Letters, digits, `-`, `_` and `.` only.
    pub name: String,
    /// One line on what the experiment measures (shown in the report).
    #[serde(default)]
    pub description: String,
    /// Base config file, relative to the experiment file; used by every variant that does not
    /// name its own `base`.
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// `--set` overrides applied to every run before the variant's own: the training budget
    /// (steps, envs, evaluation size) that makes the experiment fit its machine.
    #[serde(default)]
    pub budget: Vec<String>,
    /// The variants, in the order reports list them.
    pub variants: Vec<Variant>,
    /// Seeds: every variant runs once per seed (`--set seed=<n>`).
    pub seeds: Vec<u64>,
    /// Paper reference numbers to draw as dashed lines in reports (a references file, relative
    /// to the experiment file; see [`crate::report::References`]).
    #[serde(default)]
    pub references: Option<PathBuf>,
    /// How reports compare the variants, fixed here before anything runs: the baseline
    /// variant, the metric and the take-off threshold.
    #[serde(default)]
    pub comparison: Option<Comparison>,
}

/// The paired comparison of an experiment's variants with its baseline (see the report's
/// docs). Written before running, so the metric cannot be chosen after seeing the results.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The variant every other is compared with, seed by seed.
    pub baseline: String,
    /// The metric: a run's mean return over episodes `episodes.0..=episodes.1` (1-based,
    /// inclusive) of its final evaluation, averaged over the evaluation's trials.
    pub episodes: (usize, usize),
    /// A run took off when its metric is above this.
    pub takeoff: f64,
}

impl Comparison {
    /// The metric of one evaluation curve (`curve[e]` = mean return in episode `e + 1`); None
    /// when the curve is shorter than the metric's last episode.
    pub fn metric(&self, curve: &[f64]) -> Option<f64> {
        let (from, to) = self.episodes;
        let span = curve.get(from.checked_sub(1)?..to)?;
        Some(span.iter().sum::<f64>() / span.len() as f64)
    }
}

/// One variant of an experiment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Short name: the run folders' prefix and the row label in reports. Letters, digits, `-`,
    /// `_` and `.` only.
    pub name: String,
    /// Base config of this variant (relative to the experiment file) instead of the
    /// experiment's `base`: method comparisons give each method its own config.
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// More budget overrides for this variant, applied after the experiment's `budget`: for
    /// method comparisons, whose methods name their budgets by different fields
    /// (`method.total_steps`, `method.steps`, ...).
    #[serde(default)]
    pub budget: Vec<String>,
    /// `--set` overrides (`path.to.field=value`, value in RON syntax) that make this variant.
    #[serde(default)]
    pub set: Vec<String>,
}

/// One (variant, seed) run of an experiment with its resolved config.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// The variant's name.
    pub variant: String,
    /// The seed.
    pub seed: u64,
    /// The base config file (resolved against the experiment file's folder).
    pub base: PathBuf,
    /// Every `--set` override, in the order `icrl train` applies them.
    pub overrides: Vec<String>,
    /// The config the run trains with.
    pub config: Config,
}

impl PlannedRun {
    /// The run's folder name inside a sweep: `<variant>__s<seed>`.
    pub fn slot(&self) -> String {
        format!("{}__s{}", self.variant, self.seed)
    }
}

/// A loaded experiment: the file's content and every run it names.
#[derive(Clone, Debug)]
pub struct LoadedExperiment {
    /// The experiment file.
    pub path: PathBuf,
    /// Its content.
    pub experiment: Experiment,
    /// Every (variant, seed) run, variants in file order, seeds in file order within a variant.
    pub runs: Vec<PlannedRun>,
    /// The references file, resolved against the experiment file's folder.
    pub references: Option<PathBuf>,
}

/// True for names safe as folder-name parts: `[A-Za-z0-9_.-]+`, not starting with `.`.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// `path` relative to `dir` unless absolute.
fn resolve(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// The line and column (1-based) where `value` appears as a RON string literal in `text`.
fn locate(text: &str, value: &str) -> Option<(usize, usize)> {
    let literal = format!("{value:?}");
    let offset = text.find(&literal)?;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, col))
}

/// The field path an override sets (`path` of `path=value`), trimmed.
fn override_path(arg: &str) -> Option<&str> {
    arg.split_once('=').map(|(p, _)| p.trim())
}

/// Reads an experiment file, checks it, and resolves the config of every (variant, seed) run
/// with `extra` overrides (the sweep's `--set` arguments) applied after each variant's.
/// Every problem is reported at once; errors are bad input (exit code 2).
pub fn load(path: &Path, extra: &[String]) -> anyhow::Result<LoadedExperiment> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    let experiment: Experiment = config::from_ron_str(&text, &origin)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));

    let mut problems: Vec<String> = Vec::new();
    let at = |needle: &str| match locate(&text, needle) {
        Some((line, col)) => format!("{origin}:{line}:{col}"),
        None => origin.clone(),
    };
    if !is_safe_name(&experiment.name) {
        problems.push(format!(
            "{}: name `{}`: use letters, digits, `-`, `_` and `.` only",
            at(&experiment.name),
            experiment.name
        ));
    }
    if experiment.variants.is_empty() {
        problems.push(format!(
            "{origin}: variants: at least one variant is needed"
        ));
    }
    if experiment.seeds.is_empty() {
        problems.push(format!("{origin}: seeds: at least one seed is needed"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for seed in &experiment.seeds {
        if !seen.insert(*seed) {
            problems.push(format!("{origin}: seeds: seed {seed} is listed twice"));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for v in &experiment.variants {
        if !is_safe_name(&v.name) {
            problems.push(format!(
                "{}: variant name `{}`: use letters, digits, `-`, `_` and `.` only",
                at(&v.name),
                v.name
            ));
        }
        if !names.insert(v.name.as_str()) {
            problems.push(format!(
                "{}: variant `{}` is defined twice",
                at(&v.name),
                v.name
            ));
        }
    }
    let all_sets = experiment
        .budget
        .iter()
        .chain(
            experiment
                .variants
                .iter()
                .flat_map(|v| v.set.iter().chain(v.budget.iter()).collect::<Vec<_>>()),
        )
        .chain(extra.iter());
    for arg in all_sets {
        if matches!(override_path(arg), Some("seed" | "name")) {
            problems.push(format!(
                "{}: `{arg}`: `seed` and `name` are set by the experiment (its `seeds` and variant names)",
                at(arg)
            ));
        }
    }

    if let Some(c) = &experiment.comparison {
        if !experiment.variants.iter().any(|v| v.name == c.baseline) {
            problems.push(format!(
                "{}: comparison.baseline `{}` is not one of the variants",
                at(&c.baseline),
                c.baseline
            ));
        }
        let (from, to) = c.episodes;
        if from == 0 || to < from {
            problems.push(format!(
                "{origin}: comparison.episodes ({from}, {to}): expected 1 <= first <= last"
            ));
        }
        if !c.takeoff.is_finite() {
            problems.push(format!(
                "{origin}: comparison.takeoff must be a finite number"
            ));
        }
    }

    let references = experiment.references.as_ref().map(|r| resolve(dir, r));
    if let Some(r) = &references {
        if !r.is_file() {
            problems.push(format!(
                "{}: references: {} does not exist",
                at(&experiment
                    .references
                    .as_ref()
                    .unwrap()
                    .display()
                    .to_string()),
                r.display()
            ));
        }
    }

    let mut runs = Vec::new();
    for v in &experiment.variants {
        let Some(base) = v.base.as_ref().or(experiment.base.as_ref()) else {
            problems.push(format!(
                "{}: variant `{}` has no base config (set `base` in the experiment or the variant)",
                at(&v.name),
                v.name
            ));
            continue;
        };
        let base_path = resolve(dir, base);
        if !base_path.is_file() {
            problems.push(format!(
                "{}: variant `{}`: base config {} does not exist",
                at(&base.display().to_string()),
                v.name,
                base_path.display()
            ));
            continue;
        }
        let mut common = vec![format!(
            "name={:?}",
            format!("{}.{}", experiment.name, v.name)
        )];
        common.extend(experiment.budget.iter().cloned());
        common.extend(v.budget.iter().cloned());
        common.extend(v.set.iter().cloned());
        common.extend(extra.iter().cloned());
        for &seed in &experiment.seeds {
            let mut overrides = common.clone();
            overrides.push(format!("seed={seed}"));
            match config::load::<Config>(&base_path, &overrides) {
                Ok(config) => runs.push(PlannedRun {
                    variant: v.name.clone(),
                    seed,
                    base: base_path.clone(),
                    overrides,
                    config,
                }),
                Err(e) => {
                    let place = match &e {
                        ConfigError::Override { arg, .. } => at(arg),
                        _ => at(&v.name),
                    };
                    problems.push(format!("{place}: variant `{}` (seed {seed}): {e}", v.name));
                    // The other seeds of this variant fail the same way.
                    break;
                }
            }
        }
    }
    // Seed-major order (every variant of the first seed, then of the next): a sweep stopped
    // part-way, or run over several sessions, has finished whole paired sets of variants, which
    // is what the paired comparison needs. The sort is stable, so variants keep their order.
    runs.sort_by_key(|r| experiment.seeds.iter().position(|&s| s == r.seed));
    if !problems.is_empty() {
        return Err(UsageError(format!(
            "{origin}: {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
        .into());
    }
    Ok(LoadedExperiment {
        path: path.to_path_buf(),
        experiment,
        runs,
        references,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(experiment: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("configs")).unwrap();
        std::fs::write(
            dir.path().join("configs/base.ron"),
            "Config(name: \"b\", method: Relic(rollout_len: 64, updates_per_rollout: 2))",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("experiments")).unwrap();
        let path = dir.path().join("experiments/e.ron");
        std::fs::write(&path, experiment).unwrap();
        (dir, path)
    }

    #[test]
    fn every_variant_and_seed_is_resolved_in_order() {
        let (_d, path) = setup(
            r#"Experiment(
    name: "abl",
    base: "../configs/base.ron",
    budget: ["method.total_steps=128"],
    variants: [
        (name: "u1", set: ["method.updates_per_rollout=1"]),
        (name: "u2"),
    ],
    seeds: [3, 4],
)"#,
        );
        let loaded = load(&path, &["eval.episodes_per_trial=2".into()]).unwrap();
        let slots: Vec<String> = loaded.runs.iter().map(PlannedRun::slot).collect();
        // Seed-major: every variant of seed 3 before any run of seed 4.
        assert_eq!(slots, ["u1__s3", "u2__s3", "u1__s4", "u2__s4"]);
        let r = &loaded.runs[2];
        assert_eq!(r.config.seed, 4);
        assert_eq!(r.config.name, "abl.u1");
        assert_eq!(r.config.eval.episodes_per_trial, 2);
        let text = config::to_ron_string(&r.config);
        assert!(text.contains("total_steps: 128"), "{text}");
        assert!(text.contains("updates_per_rollout: 1"), "{text}");
        assert_eq!(
            r.overrides.last().map(String::as_str),
            Some("seed=4"),
            "{:?}",
            r.overrides
        );
    }

    fn error_of(text: &str) -> String {
        let (_d, path) = setup(text);
        let e = load(&path, &[]).unwrap_err();
        assert!(crate::is_bad_input(&e), "{e:#}");
        format!("{e:#}")
    }

    #[test]
    fn unknown_fields_bad_overrides_and_missing_bases_are_reported() {
        let e = error_of("Experiment(\n name: \"x\",\n variantz: [],\n seeds: [0],\n)");
        assert!(e.contains("e.ron:3:") && e.contains("variantz"), "{e}");

        let e = error_of(
            "Experiment(\n name: \"x\",\n base: \"../configs/base.ron\",\n seeds: [0],\n variants: [\n  (name: \"a\", set: [\"model.sinkk=None\"]),\n  (name: \"b\", base: \"../configs/missing.ron\"),\n  (name: \"c\", set: [\"method.updates_per_rollout=3\"]),\n ],\n)",
        );
        assert!(e.contains("3 problem(s)"), "{e}");
        assert!(e.contains("e.ron:6:") && e.contains("model.sinkk"), "{e}");
        assert!(e.contains("did you mean sink"), "{e}");
        assert!(e.contains("e.ron:7:") && e.contains("missing.ron"), "{e}");
        assert!(
            e.contains("variant `c`") && e.contains("not divisible"),
            "{e}"
        );

        let e = error_of(
            "Experiment(name: \"x\", variants: [(name: \"a\"), (name: \"a\", set: [\"seed=1\"])], seeds: [])",
        );
        for needle in [
            "no base config",
            "defined twice",
            "`seed` and `name`",
            "at least one seed",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let e = error_of(
            "Experiment(name: \"a/b\", base: \"../configs/base.ron\", variants: [(name: \"x y\")], seeds: [0])",
        );
        assert!(
            e.contains("name `a/b`") && e.contains("variant name `x y`"),
            "{e}"
        );
    }

    #[test]
    fn a_comparison_must_name_a_variant_and_a_valid_episode_range() {
        let e = error_of(
            "Experiment(\n name: \"x\",\n base: \"../configs/base.ron\",\n seeds: [0],\n variants: [(name: \"a\"), (name: \"b\")],\n comparison: (baseline: \"c\", episodes: (3, 2), takeoff: 1.0),\n)",
        );
        assert!(e.contains("2 problem(s)"), "{e}");
        assert!(e.contains("comparison.baseline `c`"), "{e}");
        assert!(e.contains("comparison.episodes (3, 2)"), "{e}");
        let c = Comparison {
            baseline: "a".into(),
            episodes: (2, 3),
            takeoff: 0.0,
        };
        assert_eq!(c.metric(&[1.0, 2.0, 4.0]), Some(3.0));
        assert_eq!(c.metric(&[1.0, 2.0]), None);
    }

    #[test]
    fn string_literals_are_located() {
        assert_eq!(locate("a\n  \"x=1\"", "x=1"), Some((2, 3)));
        assert_eq!(locate("(\"y=\\\"c\\\"\")", "y=\"c\""), Some((1, 2)));
        assert_eq!(locate("abc", "z"), None);
    }
}
