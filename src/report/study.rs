//! A study's report: per arm, every metric's mean, standard deviation and 95% interval over
//! seeds; per arm against the baseline, the paired difference over the seeds both ran.

use serde::Serialize;

use super::compare::{EvaluationColumn, evaluation_columns};
use super::{CompareRow, run_label};

/// Two-sided 97.5% quantiles of Student's t for 1–30 degrees of freedom (any table of the
/// t distribution); beyond 30 the normal quantile's 1.96 is within 2% of the exact value.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

fn t_quantile(degrees_of_freedom: usize) -> f64 {
    match degrees_of_freedom {
        0 => f64::NAN,
        d if d <= T_975.len() => T_975[d - 1],
        _ => 1.96,
    }
}

/// Mean, sample standard deviation and the half-width of the 95% t interval of the mean.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    /// `t(0.975, n−1) · std / √n`; `null` (NaN) with fewer than two values.
    pub half_width: f64,
}

impl Estimate {
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
            t_quantile(n - 1) * std / (n as f64).sqrt()
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

/// A metric of a run, read from its summary.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    FinalTestAccuracy,
    BestValidTestAccuracy,
    TestNll,
    TestEce,
    Evaluated(EvaluationColumn),
}

impl Metric {
    pub fn name(&self) -> String {
        match self {
            Metric::FinalTestAccuracy => "final test acc (%)".into(),
            Metric::BestValidTestAccuracy => "best-valid test acc (%)".into(),
            Metric::TestNll => "test NLL".into(),
            Metric::TestEce => "test ECE (%)".into(),
            Metric::Evaluated(column) => column.header(),
        }
    }

    /// Whether a larger value is better (for reading the differences).
    /// The paper reads fewer effective directions as a flatter, better representation.
    pub fn higher_is_better(&self) -> bool {
        !matches!(
            self,
            Metric::TestNll
                | Metric::TestEce
                | Metric::Evaluated(EvaluationColumn::EffectiveDirections(_))
        )
    }

    pub fn scale(&self) -> (f64, usize) {
        match self {
            Metric::TestNll => (1.0, 4),
            Metric::Evaluated(column) => column.scale(),
            _ => (100.0, 2),
        }
    }

    pub fn value(&self, row: &CompareRow) -> Option<f64> {
        let summary = &row.summary;
        match self {
            Metric::FinalTestAccuracy => summary.final_metrics.as_ref().map(|f| f.test_acc),
            Metric::BestValidTestAccuracy => summary.best_valid.as_ref().map(|b| b.test_acc),
            Metric::TestNll => summary.final_metrics.as_ref().map(|f| f.test_nll),
            Metric::TestEce => summary.final_metrics.as_ref().map(|f| f.test_ece),
            Metric::Evaluated(column) => summary.evaluation.as_ref().and_then(|e| column.value(e)),
        }
    }
}

/// The runs of one arm, by seed.
pub struct ArmRuns {
    pub name: String,
    /// The arm's own options, as written in the study file.
    pub options: String,
    pub runs: Vec<(u64, CompareRow)>,
}

#[derive(Serialize)]
struct MetricReport {
    metric: String,
    /// What the report multiplies values by (100 for percentages), and whether higher is better.
    scale: f64,
    digits: usize,
    higher_is_better: bool,
    values: Vec<Option<f64>>,
    estimate: Option<Estimate>,
    difference: Option<Estimate>,
}

#[derive(Serialize)]
struct ArmReport {
    arm: String,
    options: String,
    label: String,
    seeds: Vec<u64>,
    metrics: Vec<MetricReport>,
}

/// Every metric any run has, in table order.
fn metrics_of(arms: &[ArmRuns]) -> Vec<Metric> {
    let rows = || arms.iter().flat_map(|a| a.runs.iter().map(|(_, r)| r));
    let mut metrics = vec![Metric::FinalTestAccuracy];
    if rows().any(|r| r.summary.best_valid.is_some()) {
        metrics.push(Metric::BestValidTestAccuracy);
    }
    metrics.extend([Metric::TestNll, Metric::TestEce]);
    let columns = evaluation_columns(rows().filter_map(|r| r.summary.evaluation.as_ref()));
    metrics.extend(columns.into_iter().map(Metric::Evaluated));
    metrics
}

/// Differences `arm − baseline` over the seeds both have a value for.
fn paired(arm: &ArmRuns, baseline: &ArmRuns, metric: &Metric) -> Vec<f64> {
    arm.runs
        .iter()
        .filter_map(|(seed, row)| {
            let base = baseline.runs.iter().find(|(s, _)| s == seed)?;
            Some(metric.value(row)? - metric.value(&base.1)?)
        })
        .collect()
}

/// The report's Markdown (deterministic: no timings) and its JSON.
pub fn study_report(title: &str, arms: &[ArmRuns], baseline: usize) -> (String, String) {
    let metrics = metrics_of(arms);
    let mut md = format!("# {title}\n\n");
    md.push_str(
        "Each cell: mean ± standard deviation over seeds [95% t interval of the mean]. \
         Differences are paired by seed: arm − baseline, with their own 95% t interval; \
         an interval that excludes 0 is a difference these seeds resolve.\n\n",
    );
    md.push_str("## Arms\n\n| arm | options | run | seeds |\n|---|---|---|---|\n");
    for arm in arms {
        let seeds: Vec<String> = arm.runs.iter().map(|(s, _)| s.to_string()).collect();
        let label = arm
            .runs
            .first()
            .map(|(_, r)| run_label(&r.config))
            .unwrap_or_default();
        md.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            arm.name,
            arm.options,
            label,
            seeds.join(", ")
        ));
    }
    md.push_str("\n## Metrics\n\n| metric |");
    for arm in arms {
        md.push_str(&format!(" {} |", arm.name));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(arms.len()));
    md.push('\n');
    for metric in &metrics {
        let (scale, digits) = metric.scale();
        md.push_str(&format!("| {} |", metric.name()));
        for arm in arms {
            let values: Vec<f64> = arm
                .runs
                .iter()
                .filter_map(|(_, r)| metric.value(r))
                .collect();
            let cell = Estimate::of(&values).map_or("–".into(), |e| e.cell(scale, digits));
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    let base = &arms[baseline];
    md.push_str(&format!(
        "\n## Paired differences against `{}`\n\n| metric (better when) |",
        base.name
    ));
    let others: Vec<&ArmRuns> = arms
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != baseline)
        .map(|(_, a)| a)
        .collect();
    for arm in &others {
        md.push_str(&format!(" {} − {} |", arm.name, base.name));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(others.len()));
    md.push('\n');
    for metric in &metrics {
        let (scale, digits) = metric.scale();
        let direction = if metric.higher_is_better() {
            "higher"
        } else {
            "lower"
        };
        md.push_str(&format!("| {} ({direction}) |", metric.name()));
        for arm in &others {
            let cell = Estimate::of(&paired(arm, base, metric))
                .map_or("–".into(), |e| e.difference_cell(scale, digits));
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    let json: Vec<ArmReport> = arms
        .iter()
        .enumerate()
        .map(|(i, arm)| ArmReport {
            arm: arm.name.clone(),
            options: arm.options.clone(),
            label: arm
                .runs
                .first()
                .map(|(_, r)| run_label(&r.config))
                .unwrap_or_default(),
            seeds: arm.runs.iter().map(|(s, _)| *s).collect(),
            metrics: metrics
                .iter()
                .map(|metric| {
                    let values: Vec<Option<f64>> =
                        arm.runs.iter().map(|(_, r)| metric.value(r)).collect();
                    let present: Vec<f64> = values.iter().flatten().copied().collect();
                    MetricReport {
                        metric: metric.name(),
                        scale: metric.scale().0,
                        digits: metric.scale().1,
                        higher_is_better: metric.higher_is_better(),
                        estimate: Estimate::of(&present),
                        difference: (i != baseline)
                            .then(|| Estimate::of(&paired(arm, base, metric)))
                            .flatten(),
                        values,
                    }
                })
                .collect(),
        })
        .collect();
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "title": title,
        "baseline": base.name,
        "arms": json,
    }))
    .expect("the report serialises");
    (md, json)
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
        assert!((e.half_width - 3.182 * std / 2.0).abs() < 1e-12);
        assert_eq!(e.cell(1.0, 2), "2.50 ± 1.29 [0.45, 4.55]");
        assert_eq!(
            Estimate::of(&[-0.01, 0.03])
                .unwrap()
                .difference_cell(100.0, 1),
            "+1.0 [-24.4, +26.4]"
        );
        assert!(Estimate::of(&[]).is_none());
        assert!(Estimate::of(&[5.0]).unwrap().half_width.is_nan());
        assert_eq!(t_quantile(100), 1.96);
    }
}
