//! The statistics of a study: intervals of a mean over seeds, paired t tests, and Holm's
//! adjustment for a family of comparisons.

use serde::Serialize;

/// The `probability` quantile of Student's t with `degrees_of_freedom`; NaN with none.
pub fn t_quantile(probability: f64, degrees_of_freedom: usize) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    match StudentsT::new(0.0, 1.0, degrees_of_freedom as f64) {
        Ok(t) if degrees_of_freedom > 0 => t.inverse_cdf(probability),
        _ => f64::NAN,
    }
}

/// The two-sided p-value of `t` under Student's t with `degrees_of_freedom`.
fn two_sided_p(t: f64, degrees_of_freedom: usize) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    match StudentsT::new(0.0, 1.0, degrees_of_freedom as f64) {
        Ok(dist) if degrees_of_freedom > 0 && t.is_finite() => {
            (2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0)
        }
        _ if t.is_infinite() => 0.0,
        _ => f64::NAN,
    }
}

/// Holm's step-down adjustment of a family's p-values (in their given order): the k-th
/// smallest becomes max over j ≤ k of min(1, (m − j + 1)·p₍ⱼ₎). It controls the family-wise
/// error rate as Bonferroni does, and rejects at least as much.
pub fn holm_adjusted(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![f64::NAN; m];
    let mut running = 0.0f64;
    for (rank, &index) in order.iter().enumerate() {
        let scaled = ((m - rank) as f64 * p_values[index]).min(1.0);
        running = running.max(scaled);
        adjusted[index] = if p_values[index].is_nan() {
            f64::NAN
        } else {
            running
        };
    }
    adjusted
}

/// A number written as `null` where it was NaN.
pub(crate) fn nan_when_null<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Mean, sample standard deviation and the half-width of the 95% t interval of the mean.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Estimate {
    /// Values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation.
    pub std: f64,
    /// `t(0.975, n−1) · std / √n`; `null` (NaN) with fewer than two values.
    #[serde(deserialize_with = "nan_when_null")]
    pub half_width: f64,
}

impl Estimate {
    /// The estimate of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Estimate> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let half_width = if n > 1 {
            t_quantile(0.975, n - 1) * std / (n as f64).sqrt()
        } else {
            f64::NAN
        };
        Some(Estimate {
            n,
            mean,
            std,
            half_width,
        })
    }

    /// The half-width of the two-sided interval of the mean at `confidence` (0.95 gives
    /// `half_width`); NaN with fewer than two values.
    pub fn half_width_at(&self, confidence: f64) -> f64 {
        if self.n < 2 {
            return f64::NAN;
        }
        let probability = 1.0 - (1.0 - confidence) / 2.0;
        t_quantile(probability, self.n - 1) * self.std / (self.n as f64).sqrt()
    }

    /// The two-sided p-value of the one-sample t test of mean 0; NaN with fewer than two
    /// values, 0 for a nonzero mean with no spread.
    pub fn p_value(&self) -> f64 {
        if self.n < 2 {
            return f64::NAN;
        }
        let t = self.mean / (self.std / (self.n as f64).sqrt());
        if self.std == 0.0 && self.mean == 0.0 {
            return 1.0;
        }
        two_sided_p(t, self.n - 1)
    }

    /// `mean ± std [low, high]` with values scaled by `scale`.
    pub fn cell(&self, scale: f64, digits: usize) -> String {
        let (mean, std) = (self.mean * scale, self.std * scale);
        if self.n < 2 {
            return format!("{mean:.digits$} (n = 1)");
        }
        let (low, high) = (
            mean - self.half_width * scale,
            mean + self.half_width * scale,
        );
        format!("{mean:.digits$} ± {std:.digits$} [{low:.digits$}, {high:.digits$}]")
    }

    /// `Δ [low, high]`, signed.
    pub fn difference_cell(&self, scale: f64, digits: usize) -> String {
        let mean = self.mean * scale;
        if self.n < 2 {
            return format!("{mean:+.digits$} (n = 1)");
        }
        let half = self.half_width * scale;
        format!(
            "{mean:+.digits$} [{:+.digits$}, {:+.digits$}]",
            mean - half,
            mean + half
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_matches_a_hand_computation() {
        // Values 1, 2, 3, 4: mean 2.5, sample std √(5/3), t(0.975, 3) = 3.182.
        let e = Estimate::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(e.n, 4);
        assert!((e.mean - 2.5).abs() < 1e-12);
        let std = (5.0f64 / 3.0).sqrt();
        assert!((e.std - std).abs() < 1e-12);
        assert!((e.half_width - 3.1824 * std / 2.0).abs() < 1e-4);
        assert_eq!(e.cell(1.0, 2), "2.50 ± 1.29 [0.45, 4.55]");
        assert_eq!(
            Estimate::of(&[-0.01, 0.03])
                .unwrap()
                .difference_cell(100.0, 1),
            "+1.0 [-24.4, +26.4]"
        );
        assert!(Estimate::of(&[]).is_none());
        assert!(Estimate::of(&[5.0]).unwrap().half_width.is_nan());
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        // Two-sided 95%: t(0.975, df) from any table of Student's t.
        for (df, expected) in [
            (1, 12.7062),
            (2, 4.3027),
            (5, 2.5706),
            (30, 2.0423),
            (100, 1.9840),
        ] {
            let t = t_quantile(0.975, df);
            assert!((t - expected).abs() < 1e-3, "df {df}: {t}");
        }
        assert!(t_quantile(0.975, 0).is_nan());
        // Bonferroni over 18 comparisons at df 2: t(1 − 0.05/36, 2) = 18.93 (scipy's t.ppf).
        assert!((t_quantile(1.0 - 0.05 / 36.0, 2) - 18.93).abs() < 0.01);
    }

    #[test]
    fn holm_and_bonferroni_match_a_hand_computation() {
        // p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005, 0.01, 0.03, 0.04 become
        // 4·0.005 = 0.02, 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 0.04) = 0.06.
        let adjusted = holm_adjusted(&[0.01, 0.04, 0.03, 0.005]);
        for (got, want) in adjusted.iter().zip([0.03, 0.06, 0.06, 0.02]) {
            assert!((got - want).abs() < 1e-12, "{adjusted:?}");
        }
        assert_eq!(holm_adjusted(&[0.9, 0.8]), vec![1.0, 1.0]);
        // Differences 1, 2, 3: mean 2, std 1, t = 2·√3 = 3.4641 at 2 df: p = 0.0742.
        let e = Estimate::of(&[1.0, 2.0, 3.0]).unwrap();
        assert!((e.p_value() - 0.07418).abs() < 1e-4, "{}", e.p_value());
        // The simultaneous 95% interval over 3 comparisons uses t(1 − 0.05/6, 2) = 7.6488.
        let bonferroni = e.half_width_at(1.0 - 0.05 / 3.0);
        assert!(
            (bonferroni - 7.6488 / 3f64.sqrt()).abs() < 1e-3,
            "{bonferroni}"
        );
        assert!((e.half_width_at(0.95) - e.half_width).abs() < 1e-12);
    }
}
