//! A study's pre-registered hypotheses, tested as one family: Holm-adjusted p-values and
//! simultaneous (Bonferroni) intervals.

use serde::{Deserialize, Serialize};

use super::stats::{Estimate, holm_adjusted, nan_when_null};
use super::tables::Metric;

/// Which way a declared hypothesis expects the arm to differ from the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The arm's value is expected above the baseline's.
    Higher,
    /// The arm's value is expected below the baseline's.
    Lower,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Higher => "higher",
            Direction::Lower => "lower",
        })
    }
}

/// One member of a study's pre-registered family: `arm − baseline` on `metric` (at one value
/// of the swept option, where the study sweeps one), with the seeds' paired differences.
#[derive(Clone, Debug)]
pub struct FamilyMember {
    /// The arm.
    pub arm: String,
    /// The metric.
    pub metric: Metric,
    /// The declared direction.
    pub direction: Direction,
    /// The swept option's value, shown as written (`None` without a sweep).
    pub at: Option<String>,
    /// The seeds' paired differences arm − baseline.
    pub differences: Vec<f64>,
}

/// A family member tested: its estimate, its own p-value, Holm's adjusted p-value and the
/// simultaneous (Bonferroni) interval over the family.
/// NaN (too few seeds) is written as `null` and read back as NaN.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestedHypothesis {
    /// The arm.
    pub arm: String,
    /// The metric's name.
    pub metric: String,
    /// The declared direction.
    pub direction: Direction,
    /// The swept value, where the study sweeps.
    pub at: Option<String>,
    /// What the report multiplies values by.
    pub scale: f64,
    /// Decimals shown.
    pub digits: usize,
    /// The paired differences' estimate.
    pub estimate: Option<Estimate>,
    #[serde(deserialize_with = "nan_when_null")]
    /// Its own two-sided p-value.
    pub p_value: f64,
    #[serde(deserialize_with = "nan_when_null")]
    /// Holm's adjusted p-value over the family.
    pub holm_p_value: f64,
    /// Half-width of the family-wise 95% interval: t(1 − 0.05/(2m), n − 1)·std/√n.
    #[serde(deserialize_with = "nan_when_null")]
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
            t.direction,
            t.p_value,
            t.holm_p_value,
            if t.held { "yes" } else { "no" }
        ));
    }
    md
}

#[cfg(test)]
mod family_tests {
    use super::*;
    use crate::study::tables::{find_metric, metrics_for};

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
