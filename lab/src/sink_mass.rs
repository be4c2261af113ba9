//! Sink-mass curves for `icrl report`: each run's `attention/sink_mass/layer{i}` scalars (the
//! training-time attention diagnostics, trainer/src/diagnostics.rs) read back from its
//! TensorBoard event files, one line per (variant, layer) against env steps, the mean over
//! the variant's runs with a 95% band over runs (`icrl report` draws `sink_mass_<env>.png`
//! and writes `sink_mass.csv`).

use std::collections::BTreeMap;
use std::path::Path;

use trainer::plot::Series;
use trainer::run::logging::{read_events, ValueData};
use trainer::stats::MeanCi;

/// The tag prefix of the per-layer sink mass (mean over heads and positions).
pub const TAG_PREFIX: &str = "attention/sink_mass/layer";

/// A run's sink mass per layer: layer -> step -> value, from every event file in `dir` (a
/// resumed run's later file wins at a step logged twice). Unreadable or damaged files are
/// skipped: the curve is a diagnostic, never a reason to drop a run from the report.
pub fn read_run(dir: &Path) -> BTreeMap<usize, BTreeMap<u64, f64>> {
    let mut layers: BTreeMap<usize, BTreeMap<u64, f64>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return layers;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents"))
        })
        .collect();
    files.sort();
    for file in files {
        let Ok(events) = read_events(&file) else {
            continue;
        };
        for event in events {
            for value in event.values {
                let (Some(layer), ValueData::Scalar(x)) =
                    (value.tag.strip_prefix(TAG_PREFIX), &value.data)
                else {
                    continue;
                };
                if let (Ok(layer), Ok(step)) = (layer.parse::<usize>(), u64::try_from(event.step)) {
                    layers.entry(layer).or_default().insert(step, f64::from(*x));
                }
            }
        }
    }
    layers
}

/// One layer's sink mass over training: at each step some run logged, the mean over the
/// runs that logged it with its 95% interval over them.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCurve {
    /// The layer.
    pub layer: usize,
    /// Runs that logged this layer at all.
    pub runs: usize,
    /// (env step, mean and interval over the runs that logged that step).
    pub points: Vec<(u64, MeanCi)>,
}

impl LayerCurve {
    /// The plot line of this layer for `variant`.
    pub fn series(&self, variant: &str) -> Series {
        Series {
            label: format!("{variant}, layer {} (n={})", self.layer, self.runs),
            points: self
                .points
                .iter()
                .map(|(step, m)| (*step as f64, m.mean, m.ci95))
                .collect(),
            bounds: (0.0, 1.0),
        }
    }
}

/// One curve per layer of a variant from its runs' [`read_run`].
pub fn layer_curves(runs: &[BTreeMap<usize, BTreeMap<u64, f64>>]) -> Vec<LayerCurve> {
    let mut layers: Vec<usize> = runs.iter().flat_map(|r| r.keys().copied()).collect();
    layers.sort_unstable();
    layers.dedup();
    layers
        .into_iter()
        .map(|layer| {
            let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for run in runs {
                for (&step, &x) in run.get(&layer).into_iter().flatten() {
                    by_step.entry(step).or_default().push(x);
                }
            }
            LayerCurve {
                layer,
                runs: runs.iter().filter(|r| r.contains_key(&layer)).count(),
                points: by_step
                    .into_iter()
                    .map(|(step, xs)| (step, MeanCi::of(&xs)))
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainer::run::logging::{Logger, TensorBoardLogger};

    #[test]
    fn sink_mass_is_read_back_per_layer_and_averaged_over_runs() {
        let write = |values: &[(u64, f64, f64)]| {
            let dir = tempfile::tempdir().unwrap();
            let mut logger = TensorBoardLogger::new(dir.path()).unwrap();
            for &(step, l0, l1) in values {
                logger
                    .scalar("attention/sink_mass/layer0", step, l0)
                    .unwrap();
                logger
                    .scalar("attention/sink_mass/layer1", step, l1)
                    .unwrap();
                logger
                    .scalar("attention/entropy/layer0", step, 9.0)
                    .unwrap();
                logger
                    .scalar("eval_attention/sink_mass/layer0", step, 9.0)
                    .unwrap();
            }
            logger.flush().unwrap();
            dir
        };
        let a = write(&[(100, 0.5, 0.25), (200, 0.75, 0.125)]);
        let b = write(&[(100, 0.25, 0.25)]);
        let (ra, rb) = (read_run(a.path()), read_run(b.path()));
        assert_eq!(
            ra.len(),
            2,
            "two layers; entropy and eval tags are not sink mass"
        );
        assert_eq!(ra[&0][&200], 0.75);
        let curves = layer_curves(&[ra, rb]);
        assert_eq!(curves.len(), 2);
        assert_eq!(curves[0].series("kv").label, "kv, layer 0 (n=2)");
        // Step 100: both runs (0.5, 0.25); step 200: run a only.
        let p = &curves[0].points;
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].0, p[0].1.mean, p[0].1.n), (100, 0.375, 2));
        assert!(p[0].1.ci95 > 0.0, "an interval over two runs");
        assert_eq!((p[1].0, p[1].1.mean, p[1].1.n), (200, 0.75, 1));
        assert_eq!(curves[1].points[1].1.mean, 0.125);
        assert!(read_run(Path::new("/nonexistent")).is_empty());
    }
}
