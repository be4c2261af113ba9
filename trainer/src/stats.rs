//! Summary statistics for evaluation curves and reports: mean with a 95% confidence interval.

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
}
