//! Pools the runs of several reports of one design (a study and its replication, which ran
//! other seeds) and tests arms against the baseline on one metric over all their seeds, as a
//! Holm-corrected family; each report alone too.
//!
//! `cargo run --release --example pool_studies -- "final test acc (%)" manifold-a2,manifold-a0.2 \
//!     studies/few-labels/report.json studies/few-labels-replication/report.json`

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use manifold_mixup::study::family::FAMILY_ALPHA;
use manifold_mixup::study::{Estimate, holm_adjusted};
use serde::Deserialize;

#[derive(Deserialize)]
struct Report {
    baseline: String,
    arms: Vec<Arm>,
}

#[derive(Deserialize)]
struct Arm {
    arm: String,
    seeds: Vec<u64>,
    metrics: Vec<Metric>,
}

#[derive(Deserialize)]
struct Metric {
    metric: String,
    scale: f64,
    values: Vec<Option<f64>>,
}

/// Each arm's values by seed.
type ValuesByArm = BTreeMap<String, BTreeMap<u64, f64>>;

/// Each arm's value of `metric` by seed, over every report; the metric's scale.
fn values_by_seed(reports: &[Report], metric: &str) -> Result<(ValuesByArm, f64)> {
    let mut by_arm = ValuesByArm::new();
    let mut scale = 1.0;
    for report in reports {
        for arm in &report.arms {
            let found = arm.metrics.iter().find(|m| m.metric == metric);
            let Some(found) = found else {
                bail!("arm '{}' has no metric '{metric}'", arm.arm);
            };
            scale = found.scale;
            let seeds = by_arm.entry(arm.arm.clone()).or_default();
            for (seed, value) in arm.seeds.iter().zip(&found.values) {
                if let Some(value) = value
                    && seeds.insert(*seed, *value).is_some()
                {
                    bail!("seed {seed} of arm '{}' is in two reports", arm.arm);
                }
            }
        }
    }
    Ok((by_arm, scale))
}

fn paired(arm: &BTreeMap<u64, f64>, baseline: &BTreeMap<u64, f64>) -> Vec<f64> {
    arm.iter()
        .filter_map(|(seed, value)| Some(value - baseline.get(seed)?))
        .collect()
}

fn family(label: &str, reports: &[Report], metric: &str, arms: &[&str]) -> Result<()> {
    let (values, scale) = values_by_seed(reports, metric)?;
    let baseline = &reports[0].baseline;
    let base = values.get(baseline).context("the baseline has no runs")?;
    let estimates: Vec<Option<Estimate>> = arms
        .iter()
        .map(|arm| {
            Ok(Estimate::of(&paired(
                values.get(*arm).context("unknown arm")?,
                base,
            )))
        })
        .collect::<Result<_>>()?;
    let p: Vec<f64> = estimates
        .iter()
        .map(|e| e.as_ref().map_or(f64::NAN, Estimate::p_value))
        .collect();
    let holm = holm_adjusted(&p);
    println!(
        "{label}: {metric}, arm − {baseline}, a family of {}",
        arms.len()
    );
    for (i, arm) in arms.iter().enumerate() {
        let Some(e) = &estimates[i] else { continue };
        let simultaneous = e.half_width_at(1.0 - FAMILY_ALPHA / arms.len() as f64);
        println!(
            "  {arm}: {:+.2} [{:+.2}, {:+.2}] over {} seeds; simultaneous [{:+.2}, {:+.2}]; p = {:.4}, Holm p = {:.4}: {}",
            e.mean * scale,
            (e.mean - e.half_width) * scale,
            (e.mean + e.half_width) * scale,
            e.n,
            (e.mean - simultaneous) * scale,
            (e.mean + simultaneous) * scale,
            p[i],
            holm[i],
            if holm[i] < FAMILY_ALPHA && e.mean > 0.0 {
                "held"
            } else {
                "not held"
            }
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect::<Result<_, _>>()
        .map_err(|arg| anyhow::anyhow!("{arg:?} is not UTF-8"))?;
    let [metric, arms, paths @ ..] = args.as_slice() else {
        bail!("usage: pool_studies METRIC ARM[,ARM...] REPORT.json...");
    };
    let arms: Vec<&str> = arms.split(',').collect();
    let reports = paths
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            serde_json::from_str(&text).with_context(|| format!("{path}: not a study report"))
        })
        .collect::<Result<Vec<Report>>>()?;
    for (path, report) in paths.iter().zip(&reports) {
        family(path, std::slice::from_ref(report), metric, &arms)?;
    }
    family("pooled", &reports, metric, &arms)
}
