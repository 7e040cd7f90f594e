//! A study's report: per arm, every metric's mean, standard deviation and 95% interval over
//! seeds; per arm against the baseline, the paired difference over the seeds both ran.

use serde::Serialize;

use super::compare::{EvaluationColumn, evaluation_columns};
use super::{CompareRow, run_label};

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
fn nan_when_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Mean, sample standard deviation and the half-width of the 95% t interval of the mean.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Estimate {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    /// `t(0.975, n−1) · std / √n`; `null` (NaN) with fewer than two values.
    #[serde(deserialize_with = "nan_when_null")]
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
                | Metric::Evaluated(
                    EvaluationColumn::EffectiveDirections(_)
                        | EvaluationColumn::ScaledNll
                        | EvaluationColumn::ScaledEce
                )
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

/// Which way a declared hypothesis expects the arm to differ from the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Higher,
    Lower,
}

/// One member of a study's pre-registered family: `arm − baseline` on `metric` (at one value
/// of the swept option, where the study sweeps one), with the seeds' paired differences.
#[derive(Clone, Debug)]
pub struct FamilyMember {
    pub arm: String,
    pub metric: Metric,
    pub direction: Direction,
    /// The swept option's value, shown as written (`None` without a sweep).
    pub at: Option<String>,
    pub differences: Vec<f64>,
}

/// A family member tested: its estimate, its own p-value, Holm's adjusted p-value and the
/// simultaneous (Bonferroni) interval over the family.
#[derive(Clone, Debug, Serialize)]
pub struct TestedHypothesis {
    pub arm: String,
    pub metric: String,
    pub direction: Direction,
    pub at: Option<String>,
    pub scale: f64,
    pub digits: usize,
    pub estimate: Option<Estimate>,
    pub p_value: f64,
    pub holm_p_value: f64,
    /// Half-width of the family-wise 95% interval: t(1 − 0.05/(2m), n − 1)·std/√n.
    pub simultaneous_half_width: f64,
    /// Holm's adjusted p-value is below 0.05 and the difference lies the declared way.
    pub held: bool,
}

/// The family-wise error rate the corrected family is held to.
pub const FAMILY_ALPHA: f64 = 0.05;

/// Tests a pre-registered family with Holm's adjustment and Bonferroni intervals.
pub fn test_family(members: &[FamilyMember]) -> Vec<TestedHypothesis> {
    let m = members.len().max(1);
    let estimates: Vec<Option<Estimate>> = members
        .iter()
        .map(|h| Estimate::of(&h.differences))
        .collect();
    let p_values: Vec<f64> = estimates
        .iter()
        .map(|e| e.as_ref().map_or(f64::NAN, Estimate::p_value))
        .collect();
    let holm = holm_adjusted(&p_values);
    members
        .iter()
        .zip(estimates)
        .zip(p_values.iter().zip(&holm))
        .map(|((member, estimate), (&p_value, &holm_p_value))| {
            let (scale, digits) = member.metric.scale();
            let simultaneous_half_width = estimate
                .as_ref()
                .map_or(f64::NAN, |e| e.half_width_at(1.0 - FAMILY_ALPHA / m as f64));
            let right_way = estimate.as_ref().is_some_and(|e| match member.direction {
                Direction::Higher => e.mean > 0.0,
                Direction::Lower => e.mean < 0.0,
            });
            TestedHypothesis {
                arm: member.arm.clone(),
                metric: member.metric.name(),
                direction: member.direction,
                at: member.at.clone(),
                scale,
                digits,
                estimate,
                p_value,
                holm_p_value,
                simultaneous_half_width,
                held: right_way && holm_p_value < FAMILY_ALPHA,
            }
        })
        .collect()
}

/// The family's table in Markdown.
pub fn family_markdown(baseline: &str, tested: &[TestedHypothesis]) -> String {
    let mut md = format!(
        "## Pre-registered hypotheses ({} in the family, Holm-adjusted, family-wise α = {FAMILY_ALPHA})\n\n\
         Declared in the study file before its runs. Each: arm − `{baseline}`, paired by seed. \
         The simultaneous interval is Bonferroni's over the whole family; a hypothesis holds \
         when its Holm-adjusted p-value is below {FAMILY_ALPHA} and the difference lies the declared way. \
         Every other comparison in this report is exploratory.\n\n\
         | arm | metric | at | expected | difference [95% interval] | simultaneous interval | p | Holm p | held |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        tested.len()
    );
    for t in tested {
        let (scale, digits) = (t.scale, t.digits);
        let (difference, simultaneous) = match &t.estimate {
            Some(e) if e.n >= 2 => {
                let mean = e.mean * scale;
                let half = t.simultaneous_half_width * scale;
                (
                    e.difference_cell(scale, digits),
                    format!("[{:+.digits$}, {:+.digits$}]", mean - half, mean + half),
                )
            }
            Some(e) => (e.difference_cell(scale, digits), "–".into()),
            None => ("–".into(), "–".into()),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {difference} | {simultaneous} | {:.4} | {:.4} | {} |\n",
            t.arm,
            t.metric,
            t.at.as_deref().unwrap_or("–"),
            match t.direction {
                Direction::Higher => "higher",
                Direction::Lower => "lower",
            },
            t.p_value,
            t.holm_p_value,
            if t.held { "yes" } else { "no" }
        ));
    }
    md
}

/// The metric a study file names: a report's metric name, with or without its unit.
pub fn find_metric(name: &str, known: &[Metric]) -> Option<Metric> {
    let wanted = name.trim().to_lowercase();
    known
        .iter()
        .find(|metric| {
            let full = metric.name().to_lowercase();
            full == wanted || full.split(" (").next() == Some(wanted.as_str())
        })
        .cloned()
}

/// Every metric a study with `suite` reports.
pub fn metrics_for(suite: &crate::eval::EvalSuite) -> Vec<Metric> {
    let mut metrics = vec![
        Metric::FinalTestAccuracy,
        Metric::BestValidTestAccuracy,
        Metric::TestNll,
        Metric::TestEce,
        Metric::Evaluated(EvaluationColumn::ScaledNll),
        Metric::Evaluated(EvaluationColumn::ScaledEce),
    ];
    metrics.extend(
        suite
            .attacks
            .iter()
            .map(|a| Metric::Evaluated(EvaluationColumn::Attack(a.to_string()))),
    );
    metrics.extend(
        suite
            .deformations
            .iter()
            .map(|d| Metric::Evaluated(EvaluationColumn::Deformation(d.to_string()))),
    );
    metrics.extend(
        suite
            .spectrum_at
            .map(|p| Metric::Evaluated(EvaluationColumn::EffectiveDirections(p))),
    );
    metrics
}

/// Paired differences `arm − baseline` of `metric` over the seeds both ran.
pub fn paired_differences(arm: &ArmRuns, baseline: &ArmRuns, metric: &Metric) -> Vec<f64> {
    paired(arm, baseline, metric)
}

#[cfg(test)]
mod family_tests {
    use super::*;

    #[test]
    fn a_family_is_held_to_holm_and_reports_bonferroni_intervals() {
        let member = |differences: Vec<f64>, direction| FamilyMember {
            arm: "a".into(),
            metric: Metric::FinalTestAccuracy,
            direction,
            at: None,
            differences,
        };
        let tested = test_family(&[
            member(vec![0.010, 0.011, 0.012, 0.010, 0.011], Direction::Higher),
            member(vec![0.010, 0.011, 0.012, 0.010, 0.011], Direction::Lower),
            member(vec![0.01, -0.01, 0.02, -0.02, 0.0], Direction::Higher),
        ]);
        assert!(tested[0].held, "{tested:?}");
        assert!(!tested[1].held, "a difference the other way holds nothing");
        assert!(!tested[2].held);
        assert!(tested[0].holm_p_value >= tested[0].p_value);
        let e = tested[0].estimate.as_ref().unwrap();
        assert!(tested[0].simultaneous_half_width > e.half_width);
        let md = family_markdown("none", &tested);
        assert!(
            md.contains("3 in the family") && md.contains("| yes |"),
            "{md}"
        );
        let known = metrics_for(&crate::eval::EvalSuite::default());
        assert_eq!(
            find_metric("final test acc", &known),
            Some(Metric::FinalTestAccuracy)
        );
        assert_eq!(find_metric("test NLL", &known), Some(Metric::TestNll));
        assert_eq!(find_metric("fgsm:0.03 acc", &known), None);
    }
}

/// A study's `report.json` as the demo and other readers take it back.
#[derive(Debug, serde::Deserialize)]
pub struct Findings {
    pub title: String,
    pub arms: Vec<ArmFindings>,
    #[serde(default)]
    pub primary: Vec<DeclaredFinding>,
}

#[derive(Debug, serde::Deserialize)]
pub struct ArmFindings {
    pub arm: String,
    pub seeds: Vec<u64>,
    pub metrics: Vec<MetricFindings>,
}

#[derive(Debug, serde::Deserialize)]
pub struct MetricFindings {
    pub metric: String,
    pub scale: f64,
    pub digits: usize,
    pub higher_is_better: bool,
    pub difference: Option<Estimate>,
}

/// A tested hypothesis read back (NaN is written as `null`).
#[derive(Debug, serde::Deserialize)]
pub struct DeclaredFinding {
    pub arm: String,
    pub metric: String,
    pub direction: String,
    pub at: Option<String>,
    pub scale: f64,
    pub digits: usize,
    pub estimate: Option<Estimate>,
    pub holm_p_value: Option<f64>,
    pub simultaneous_half_width: Option<f64>,
    pub held: bool,
}
