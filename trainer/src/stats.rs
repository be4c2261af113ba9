//! Summary statistics for evaluation curves and reports: mean with a 95% confidence interval,
//! intervals clustered by task, and paired comparisons of variants over shared seeds (paired
//! t interval and test, sign count, Holm's correction, smallest detectable difference).

use serde::{Deserialize, Serialize};

/// Mean of a sample with the half-width of its 95% confidence interval (Student's t).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct MeanCi {
    /// Sample mean.
    pub mean: f64,
    /// Half-width of the 95% interval: the interval is [mean - ci95, mean + ci95]. 0 when n < 2.
    pub ci95: f64,
    /// Sample size.
    pub n: usize,
}

impl MeanCi {
    /// The summary of `values` (NaN mean for an empty sample).
    pub fn of(values: &[f64]) -> MeanCi {
        let n = values.len();
        if n == 0 {
            return MeanCi {
                mean: f64::NAN,
                ci95: 0.0,
                n,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if n < 2 {
            return MeanCi { mean, ci95: 0.0, n };
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        MeanCi {
            mean,
            ci95: t_critical_95(n - 1) * (var / n as f64).sqrt(),
            n,
        }
    }

    /// True when the two 95% intervals do not overlap.
    pub fn separated_from(&self, other: &MeanCi) -> bool {
        self.mean - self.ci95 > other.mean + other.ci95
            || other.mean - other.ci95 > self.mean + self.ci95
    }
}

/// Two-sided 95% critical value of Student's t with `df` degrees of freedom.
pub fn t_critical_95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.042 - (df - 30) as f64 * (2.042 - 2.000) / 30.0,
        61..=120 => 2.000 - (df - 60) as f64 * (2.000 - 1.980) / 60.0,
        _ => 1.960,
    }
}

/// Mean over clusters (tasks) of the per-cluster means, with a t interval over clusters.
/// Evaluation trials on the same task are not independent, so the unit of the interval is the
/// task: `n` is the number of non-empty clusters.
pub fn clustered_mean_ci(clusters: &[Vec<f64>]) -> MeanCi {
    let means: Vec<f64> = clusters
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    MeanCi::of(&means)
}

/// `ln Gamma(x)` for `x > 0` (Lanczos, g = 7, 9 terms; relative error about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + numerator / c;
            if c.abs() < TINY {
                c = TINY;
            }
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularised incomplete beta function `I_x(a, b)`, `x` in [0, 1].
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// Two-sided p-value of Student's t statistic `t` with `df > 0` degrees of freedom:
/// `P(|T| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)`.
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    incomplete_beta(df / 2.0, 0.5, df / (df + t * t)).clamp(0.0, 1.0)
}

/// The `q`-quantile (`q` in (0.5, 1)) of Student's t with `df > 0` degrees of freedom, by
/// bisection on [`t_two_sided_p`].
pub fn t_quantile(q: f64, df: f64) -> f64 {
    let target = 2.0 * (1.0 - q); // two-sided p of the quantile
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while t_two_sided_p(hi, df) > target {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_two_sided_p(mid, df) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Holm's step-down correction of `p` (family-wise error), in the input order: sort
/// ascending, multiply the i-th smallest (from 0) by `m - i`, keep the running maximum, cap at
/// 1. NaN p-values stay NaN and do not count in `m`.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = order.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// A variant's paired difference from the baseline over shared seeds (variant - baseline).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Paired {
    /// Mean difference and its 95% t interval over seeds.
    pub diff: MeanCi,
    /// Seeds where the variant is higher, lower, equal.
    pub wins: usize,
    /// Seeds where the variant is lower than the baseline.
    pub losses: usize,
    /// Seeds where both are equal.
    pub ties: usize,
    /// Two-sided p-value of the paired t test (NaN with fewer than 2 seeds or no spread).
    pub p: f64,
    /// The smallest true mean difference this many seeds would detect with probability 0.8
    /// at the 5% level (two-sided), given the spread of the differences:
    /// `(t_0.975 + t_0.80) * sd / sqrt(n)`, df = n - 1.
    pub detectable: f64,
}

impl Paired {
    /// The comparison of `variant[i]` with `baseline[i]` (the same seed at the same index).
    pub fn of(baseline: &[f64], variant: &[f64]) -> Paired {
        let diffs: Vec<f64> = baseline.iter().zip(variant).map(|(b, v)| v - b).collect();
        let diff = MeanCi::of(&diffs);
        let n = diffs.len();
        let (mut wins, mut losses, mut ties) = (0, 0, 0);
        for d in &diffs {
            match d.partial_cmp(&0.0) {
                Some(std::cmp::Ordering::Greater) => wins += 1,
                Some(std::cmp::Ordering::Less) => losses += 1,
                _ => ties += 1,
            }
        }
        let (mut p, mut detectable) = (f64::NAN, f64::NAN);
        if n >= 2 {
            let df = (n - 1) as f64;
            let sd = (diffs.iter().map(|d| (d - diff.mean).powi(2)).sum::<f64>() / df).sqrt();
            let se = sd / (n as f64).sqrt();
            if se > 0.0 {
                p = t_two_sided_p(diff.mean / se, df);
            }
            detectable = (t_quantile(0.975, df) + t_quantile(0.8, df)) * se;
        }
        Paired {
            diff,
            wins,
            losses,
            ties,
            p,
            detectable,
        }
    }
}

/// Mean of per-trial `values` (ordered by task, then trial) with the 95% interval clustered
/// by task: trials on the same task are not independent, so the interval is over the `tasks`
/// task means ([`clustered_mean_ci`]). Falls back to trials when the values do
/// not divide into `tasks` equal groups.
pub fn clustered_by_task(values: &[f64], tasks: usize) -> MeanCi {
    if tasks == 0 || values.is_empty() || !values.len().is_multiple_of(tasks) {
        return MeanCi::of(values);
    }
    let per_task = values.len() / tasks;
    let clusters: Vec<Vec<f64>> = values.chunks(per_task).map(<[f64]>::to_vec).collect();
    clustered_mean_ci(&clusters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_interval_match_hand_computation() {
        let s = MeanCi::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.n, 4);
        assert!((s.mean - 2.5).abs() < 1e-12);
        // sd = sqrt(5/3), se = sd / 2, t(3) = 3.182
        let expected = 3.182 * (5.0f64 / 3.0).sqrt() / 2.0;
        assert!((s.ci95 - expected).abs() < 1e-9);
        assert_eq!(MeanCi::of(&[7.0]).ci95, 0.0);
        assert!(MeanCi::of(&[]).mean.is_nan());
    }

    #[test]
    fn separation_needs_non_overlapping_intervals() {
        let a = MeanCi {
            mean: 10.0,
            ci95: 1.0,
            n: 5,
        };
        let b = MeanCi {
            mean: 12.5,
            ci95: 1.0,
            n: 5,
        };
        let c = MeanCi {
            mean: 11.5,
            ci95: 1.0,
            n: 5,
        };
        assert!(a.separated_from(&b) && b.separated_from(&a));
        assert!(!a.separated_from(&c));
    }

    #[test]
    fn t_p_values_and_quantiles_match_tables() {
        // Two-sided 5% critical values from t tables.
        for (t, df) in [(12.706, 1.0), (2.262, 9.0), (2.042, 30.0), (1.960, 1e7)] {
            let p = t_two_sided_p(t, df);
            assert!((p - 0.05).abs() < 2e-4, "t {t} df {df}: p {p}");
        }
        assert!((t_two_sided_p(0.0, 5.0) - 1.0).abs() < 1e-12);
        // One-sided 80% quantiles (t tables): df 9 -> 0.883, df 1 -> 1.376.
        assert!((t_quantile(0.8, 9.0) - 0.883).abs() < 1e-3);
        assert!((t_quantile(0.8, 1.0) - 1.376).abs() < 1e-3);
        assert!((t_quantile(0.975, 4.0) - 2.776).abs() < 1e-3);
        // df = 1 is the Cauchy distribution: P(|T| >= 1) = 1/2.
        assert!((t_two_sided_p(1.0, 1.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn holm_steps_down_with_running_maximum() {
        let adjusted = holm(&[0.01, 0.04, 0.03, 0.005]);
        let want = [0.03, 0.06, 0.06, 0.02];
        for (a, w) in adjusted.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{adjusted:?}");
        }
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
        assert_eq!(holm(&[0.04, 0.3]), vec![0.08, 0.3]);
        let with_nan = holm(&[f64::NAN, 0.02]);
        assert!(with_nan[0].is_nan() && (with_nan[1] - 0.02).abs() < 1e-12);
    }

    #[test]
    fn paired_difference_of_known_samples() {
        // Differences 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), se sqrt(0.5), t = 3 / sqrt(0.5).
        let base = [10.0, 20.0, 30.0, 40.0, 50.0];
        let variant = [11.0, 22.0, 33.0, 44.0, 55.0];
        let p = Paired::of(&base, &variant);
        assert_eq!((p.wins, p.losses, p.ties), (5, 0, 0));
        assert!((p.diff.mean - 3.0).abs() < 1e-12);
        assert!((p.diff.ci95 - 2.776 * 0.5f64.sqrt()).abs() < 1e-9);
        // t = 4.243 with 4 df: two-sided p = 0.01324 (t tables / scipy).
        assert!((p.p - 0.013_24).abs() < 1e-4, "{}", p.p);
        let expected = (2.776 + 0.941) * 0.5f64.sqrt();
        assert!((p.detectable - expected).abs() < 1e-2, "{}", p.detectable);
        // The pairing matters: unpaired, the same numbers would overlap completely.
        let swapped = Paired::of(&variant, &base);
        assert_eq!((swapped.wins, swapped.losses), (0, 5));
        assert!((swapped.diff.mean + 3.0).abs() < 1e-12);
        // One seed: no test, no interval.
        let one = Paired::of(&[1.0], &[2.0]);
        assert!(one.p.is_nan() && one.diff.ci95 == 0.0 && one.wins == 1);
    }

    #[test]
    fn clustered_interval_counts_tasks_not_trials() {
        // Two tasks, 50 identical trials each: 100 trials but only 2 independent units.
        let clusters = vec![vec![0.0; 50], vec![10.0; 50]];
        let c = clustered_mean_ci(&clusters);
        assert_eq!(c.n, 2);
        assert!((c.mean - 5.0).abs() < 1e-12);
        // t(1) = 12.706, sd of (0, 10) = 7.07, se = 5.
        assert!((c.ci95 - 12.706 * 5.0).abs() < 1e-6);
        let flat: Vec<f64> = clusters.concat();
        assert!(MeanCi::of(&flat).ci95 < c.ci95 / 10.0);
    }
}
