//! A study's tables at one value of its sweep: per arm, every metric's mean, standard
//! deviation and 95% interval over seeds; per arm against the baseline, the paired difference
//! over the seeds both ran.

use serde::{Deserialize, Serialize};

use super::stats::Estimate;
use crate::report::{CompareRow, EvaluationColumn, evaluation_columns, run_label};

/// A metric of a run, read from its summary.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// Test accuracy after the last epoch.
    FinalTestAccuracy,
    /// Test accuracy at the epoch of best validation accuracy.
    BestValidTestAccuracy,
    /// Test NLL after the last epoch.
    TestNll,
    /// Test ECE after the last epoch.
    TestEce,
    /// A measure of the final evaluation suite.
    Evaluated(EvaluationColumn),
}

impl Metric {
    /// The metric's name in reports and study files.
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

    /// What the report multiplies values by, and the decimals it shows.
    pub fn scale(&self) -> (f64, usize) {
        match self {
            Metric::TestNll => (1.0, 4),
            Metric::Evaluated(column) => column.scale(),
            _ => (100.0, 2),
        }
    }

    /// The metric's value in a run, where it has one.
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
    /// The arm's name.
    pub name: String,
    /// The arm's own options, as written in the study file.
    pub options: String,
    /// Each seed and its run.
    pub runs: Vec<(u64, CompareRow)>,
}

/// One metric of one arm in `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricReport {
    /// The metric's name.
    pub metric: String,
    /// What the report multiplies values by (100 for percentages), and its decimals.
    pub scale: f64,
    /// Decimals shown.
    pub digits: usize,
    /// Whether higher values are better.
    pub higher_is_better: bool,
    /// Each seed's value, in the arm's seed order.
    pub values: Vec<Option<f64>>,
    /// The values' estimate over seeds.
    pub estimate: Option<Estimate>,
    /// The paired difference arm − baseline (absent for the baseline).
    pub difference: Option<Estimate>,
}

/// One arm in `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArmReport {
    /// The arm's name.
    pub arm: String,
    /// The arm's own options, as written in the study file.
    pub options: String,
    /// The run label of its first run (model and mixing).
    pub label: String,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// Every metric.
    pub metrics: Vec<MetricReport>,
}

/// The tables of one study (or one swept value of it), as `report.json` holds them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tables {
    /// The heading.
    pub title: String,
    /// The baseline arm.
    pub baseline: String,
    /// Each arm's metrics.
    pub arms: Vec<ArmReport>,
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

/// The tables' Markdown (deterministic: no timings) and their `report.json` form.
pub fn study_report(title: &str, arms: &[ArmRuns], baseline: usize) -> (String, Tables) {
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
    let tables = Tables {
        title: title.to_string(),
        baseline: base.name.clone(),
        arms: json,
    };
    (md, tables)
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
