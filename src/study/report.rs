//! A study's report from its finished runs: the tables at each swept value, the gain along
//! the sweep, the declared family tested, the provenance of every run, and the plots; written
//! as `report.md` and `report.json` ([`StudyReport`], which readers such as the demo take
//! back).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StudyError;
use super::design::{Arm, Cell, Design, GAIN_PLOT, StudyFile, Sweep, value_text};
use super::family::{FamilyMember, TestedHypothesis, family_markdown, test_family};
use super::stats::Estimate;
use super::tables::{
    ArmReport, ArmRuns, Metric, Tables, find_metric, metrics_for, paired_differences, study_report,
};
use crate::fsio::write_atomic;
use crate::report::{self, CompareRow};
use crate::train::TrainConfig;

/// The report in Markdown.
pub const REPORT_MD: &str = "report.md";
/// The report in JSON ([`StudyReport`]).
pub const REPORT_JSON: &str = "report.json";

/// A study's `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyReport {
    /// The study's title.
    pub title: String,
    /// The baseline arm.
    pub baseline: String,
    /// Each arm's tables, where the study sweeps nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<ArmReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The swept option, where the study sweeps one.
    pub sweep: Option<SweepAxis>,
    /// The tables at each swept value, in the sweep's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<LevelReport>,
    /// The declared hypotheses, tested as one family.
    #[serde(default)]
    pub primary: Vec<TestedHypothesis>,
    /// Absent in reports older than the record.
    #[serde(default)]
    pub provenance: Option<StudyProvenance>,
}

impl StudyReport {
    /// The report as `report.json` holds it (keys sorted, so that reruns compare as text).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(&serde_json::to_value(self)?)
    }
}

/// The option a study sweeps, and its values as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepAxis {
    /// The option.
    pub option: String,
    /// Its values as written.
    pub values: Vec<String>,
}

/// The tables at one swept value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LevelReport {
    /// The swept value.
    pub value: String,
    #[serde(flatten)]
    /// The tables at it.
    pub tables: Tables,
}

/// What produced a study's runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyProvenance {
    /// The `mmix` arguments that wrote the report.
    pub command: String,
    /// The study file's `[train]` table, as written.
    pub shared: toml::Table,
    /// How many combinations of code revision and machine made the runs.
    pub code_and_machines: usize,
    /// Each run's configuration and provenance.
    pub runs: Vec<RunProvenance>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
/// What made one run of a study.
pub struct RunProvenance {
    /// The run folder.
    #[serde(serialize_with = "crate::fsio::serialize_path")]
    pub run: PathBuf,
    /// Its seed.
    pub seed: u64,
    /// Its configuration.
    pub configuration: TrainConfig,
    /// Absent in runs older than the record.
    pub provenance: Option<crate::machine::Provenance>,
}

/// The runs of each arm at one value of the swept option (every run without a sweep).
fn arms_at(arms: &[Arm], rows: &[(&Cell, CompareRow)], level: Option<usize>) -> Vec<ArmRuns> {
    let mut grouped: Vec<ArmRuns> = arms
        .iter()
        .map(|a| ArmRuns {
            name: a.name.clone(),
            options: a.options.clone(),
            runs: Vec::new(),
        })
        .collect();
    for (cell, row) in rows.iter().filter(|(cell, _)| cell.level == level) {
        grouped[cell.arm].runs.push((cell.seed, row.clone()));
    }
    for arm in &mut grouped {
        arm.runs.sort_by_key(|(seed, _)| *seed);
    }
    grouped
}

/// Writes the study's `report.md`, `report.json` and plots into `out` from the finished runs
/// of `cells` (`partial_of`: the grid's size, where not all have finished); returns the
/// Markdown. `command` is the command line that asked for the report, as it records it.
pub fn write_report(
    out: &Path,
    design: &Design,
    cells: &[&Cell],
    partial_of: Option<usize>,
    command: &str,
) -> Result<String, StudyError> {
    let (file, arms, baseline) = (&design.file, &design.arms[..], design.baseline);
    let rows = cells
        .iter()
        .map(|&cell| Ok((cell, report::load_run(&cell.dir).map_err(StudyError::Run)?)))
        .collect::<Result<Vec<_>, StudyError>>()?;
    let mut title = file.title.clone().unwrap_or_else(|| "Study".into());
    if let Some(total) = partial_of {
        title.push_str(&format!(
            " (partial: {} of {total} runs finished)",
            cells.len()
        ));
    }
    let levels: Vec<Option<usize>> = match &file.sweep {
        Some(sweep) => (0..sweep.values.len()).map(Some).collect(),
        None => vec![None],
    };
    let level_name = |level: Option<usize>| match (&file.sweep, level) {
        (Some(sweep), Some(level)) => Some(value_text(&sweep.values[level])),
        _ => None,
    };
    let mut json = StudyReport {
        title: title.clone(),
        baseline: arms[baseline].name.clone(),
        arms: Vec::new(),
        sweep: None,
        levels: Vec::new(),
        primary: Vec::new(),
        provenance: None,
    };
    let mut md = match &file.sweep {
        None => {
            let (md, tables) = study_report(&title, &arms_at(arms, &rows, None), baseline);
            json.arms = tables.arms;
            md
        }
        Some(sweep) => {
            let (md, levels, axis) = sweep_sections(&title, sweep, arms, &rows, baseline);
            (json.levels, json.sweep) = (levels, Some(axis));
            md
        }
    };
    if let Some(sweep) = &file.sweep {
        let (gain_md, gains) = gains_along_sweep(arms, &rows, baseline, &levels, &level_name);
        md.push_str(&gain_md);
        let labels: Vec<String> = levels
            .iter()
            .map(|&l| level_name(l).unwrap_or_default())
            .collect();
        let path = out.join(GAIN_PLOT);
        report::plot_gain(&path, &sweep.option, &labels, "final test acc (pp)", &gains)
            .map_err(|e| StudyError::io("write", &path, e))?;
    }
    let tested = primary_family(design, &rows, &levels, &level_name);
    if !tested.is_empty() {
        md.push_str(&format!(
            "\n{}",
            family_markdown(&arms[baseline].name, &tested)
        ));
    } else {
        md.push_str(
            "\nThe study file declares no primary hypotheses: every comparison above is exploratory, \
             with 95% intervals per comparison and no correction for multiplicity.\n",
        );
    }
    json.primary = tested;
    let all_runs: Vec<ArmRuns> = levels
        .iter()
        .flat_map(|&level| {
            arms_at(arms, &rows, level).into_iter().map(move |mut arm| {
                if let Some(name) = level_name(level) {
                    arm.name = format!("{} @ {name}", arm.name);
                }
                arm
            })
        })
        .filter(|arm| !arm.runs.is_empty())
        .collect();
    let (provenance_md, provenance) = provenance(file, &rows, command);
    md.push_str(&provenance_md);
    json.provenance = Some(provenance);
    md.push_str(&wall_times(&all_runs));
    match file.sweep {
        None => md.push_str(
            "\nPlots: `accuracy.png` (test accuracy per epoch, mean over seeds), `reliability.png` \
             (pooled over seeds), `spectrum.png` (mean over seeds), when measured.\n",
        ),
        Some(_) => md.push_str(&format!(
            "\nPlot: `{GAIN_PLOT}` (each arm's paired gain in final test accuracy over the baseline, with its 95% interval, at each value).\n"
        )),
    }
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        write_atomic(&path, bytes).map_err(|e| StudyError::io("write", &path, e))
    };
    write(REPORT_MD, md.as_bytes())?;
    let text = json
        .to_json()
        .map_err(|e| StudyError::io("write", &out.join(REPORT_JSON), std::io::Error::other(e)))?;
    write(REPORT_JSON, text.as_bytes())?;
    if file.sweep.is_none() {
        plot_arms(out, &arms_at(arms, &rows, None))?;
    }
    Ok(md)
}

/// A study with a sweep: one report per swept value (each a heading down), their tables, and
/// the axis.
fn sweep_sections(
    title: &str,
    sweep: &Sweep,
    arms: &[Arm],
    rows: &[(&Cell, CompareRow)],
    baseline: usize,
) -> (String, Vec<LevelReport>, SweepAxis) {
    let mut md = format!("# {title}\n\nOne report per value of `{}`.\n", sweep.option);
    let mut levels = Vec::new();
    for (level, value) in sweep.values.iter().enumerate() {
        let companions: Vec<String> = sweep
            .with
            .iter()
            .filter_map(|(key, values)| {
                let value = values.as_array()?.get(level)?;
                Some(format!(", {key} = {}", value_text(value)))
            })
            .collect();
        let heading = format!(
            "{} = {}{}",
            sweep.option,
            value_text(value),
            companions.concat()
        );
        let (part, tables) = study_report(&heading, &arms_at(arms, rows, Some(level)), baseline);
        // Each value's report sits one heading level down.
        md.push_str(&format!("\n#{}", part.replace("\n## ", "\n### ")));
        levels.push(LevelReport {
            value: value_text(value),
            tables,
        });
    }
    let axis = SweepAxis {
        option: sweep.option.clone(),
        values: sweep.values.iter().map(value_text).collect(),
    };
    (md, levels, axis)
}

/// The paired gain in final test accuracy of every arm over the baseline at each swept value:
/// a Markdown table, and the series of the plot.
fn gains_along_sweep(
    arms: &[Arm],
    rows: &[(&Cell, CompareRow)],
    baseline: usize,
    levels: &[Option<usize>],
    level_name: &dyn Fn(Option<usize>) -> Option<String>,
) -> (String, Vec<report::GainSeries>) {
    let metric = Metric::FinalTestAccuracy;
    let (scale, digits) = metric.scale();
    let others: Vec<usize> = (0..arms.len()).filter(|&i| i != baseline).collect();
    let mut md = format!(
        "\n## Gain along the sweep: final test acc, arm − {} (pp) [95% interval per cell, exploratory]\n\n| value |",
        arms[baseline].name
    );
    for &i in &others {
        md.push_str(&format!(" {} |", arms[i].name));
    }
    md.push_str(&format!("\n|---|{}\n", "---|".repeat(others.len())));
    let mut series: Vec<report::GainSeries> = others
        .iter()
        .map(|&i| (arms[i].name.clone(), Vec::new()))
        .collect();
    for (position, &level) in levels.iter().enumerate() {
        let grouped = arms_at(arms, rows, level);
        md.push_str(&format!("| {} |", level_name(level).unwrap_or_default()));
        for (k, &i) in others.iter().enumerate() {
            let differences = paired_differences(&grouped[i], &grouped[baseline], &metric);
            let estimate = Estimate::of(&differences);
            let cell = estimate
                .as_ref()
                .map_or("–".into(), |e| e.difference_cell(scale, digits));
            md.push_str(&format!(" {cell} |"));
            if let Some(e) = estimate {
                let (mean, half) = (e.mean * scale, e.half_width * scale);
                series[k]
                    .1
                    .push((position as f64, mean, mean - half, mean + half));
            }
        }
        md.push('\n');
    }
    (md, series)
}

/// The study's declared hypotheses, each at each of its swept values, tested as one family.
fn primary_family(
    design: &Design,
    rows: &[(&Cell, CompareRow)],
    levels: &[Option<usize>],
    level_name: &dyn Fn(Option<usize>) -> Option<String>,
) -> Vec<TestedHypothesis> {
    let (file, arms, baseline) = (&design.file, &design.arms, design.baseline);
    let known = metrics_for(&file.evaluate);
    let mut members = Vec::new();
    for hypothesis in &file.primary {
        let (Some(arm), Some(metric)) = (
            arms.iter().position(|a| a.name == hypothesis.arm),
            find_metric(&hypothesis.metric, &known),
        ) else {
            continue; // refused when the file was read
        };
        for &level in levels {
            let wanted = match (&hypothesis.at, &file.sweep, level) {
                (Some(at), Some(sweep), Some(level)) => at.contains(&sweep.values[level]),
                _ => true,
            };
            if !wanted {
                continue;
            }
            let grouped = arms_at(arms, rows, level);
            members.push(FamilyMember {
                arm: hypothesis.arm.clone(),
                metric: metric.clone(),
                direction: hypothesis.direction,
                at: level_name(level),
                differences: paired_differences(&grouped[arm], &grouped[baseline], &metric),
            });
        }
    }
    test_family(&members)
}

/// What produced the runs: the shared configuration, each arm's resolved options, the command,
/// and the code revisions and machines of the runs, flagged where they differ.
fn provenance(
    file: &StudyFile,
    rows: &[(&Cell, CompareRow)],
    command: &str,
) -> (String, StudyProvenance) {
    let mut md = String::from("\n## Provenance\n\n");
    md.push_str(&format!("Report written by `mmix {command}`.\n\n"));
    let shared = toml::to_string(&file.train).unwrap_or_default();
    md.push_str(&format!(
        "Shared options (`[train]`, as written; every other option takes its default):\n\n```toml\n{shared}```\n\n"
    ));
    let mut machines: Vec<(String, Vec<String>)> = Vec::new();
    for (cell, row) in rows {
        let key = match &row.provenance {
            Some(p) => format!(
                "revision `{}`, {}, {} threads, convolutions {}, {}",
                p.revision, p.cpu, p.threads, p.convolutions, p.precision
            ),
            None => "not recorded (a run older than the record)".into(),
        };
        let run = cell
            .dir
            .components()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        match machines.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(run),
            None => machines.push((key, vec![run])),
        }
    }
    if machines.len() > 1 {
        md.push_str(&format!(
            "**The runs were made by {} different combinations of code and machine:**\n\n",
            machines.len()
        ));
    }
    md.push_str("| code and machine | runs |\n|---|---|\n");
    for (key, runs) in &machines {
        md.push_str(&format!(
            "| {key} | {} ({}) |\n",
            runs.len(),
            runs.join(", ")
        ));
    }
    let provenance = StudyProvenance {
        command: command.to_string(),
        shared: file.train.clone(),
        code_and_machines: machines.len(),
        runs: rows
            .iter()
            .map(|(cell, row)| RunProvenance {
                run: cell.dir.clone(),
                seed: cell.seed,
                configuration: row.config.clone(),
                provenance: row.provenance.clone(),
            })
            .collect(),
    };
    (md, provenance)
}

fn wall_times(arms: &[ArmRuns]) -> String {
    let mut md = String::from(
        "\n## Wall times\n\n| arm | training with per-epoch evaluation (s, mean per run) | final evaluation suite (s, mean per run) | all runs (min) |\n|---|---|---|---|\n",
    );
    for arm in arms {
        let train: Vec<f64> = arm
            .runs
            .iter()
            .map(|(_, r)| r.history.iter().map(|h| h.seconds).sum())
            .collect();
        let suite: Vec<f64> = arm
            .runs
            .iter()
            .filter_map(|(_, r)| r.summary.evaluation.as_ref().map(|e| e.seconds))
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let total = (train.iter().sum::<f64>() + suite.iter().sum::<f64>()) / 60.0;
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.1} |\n",
            arm.name,
            mean(&train),
            mean(&suite),
            total
        ));
    }
    md
}

/// Mean test-accuracy curve, pooled reliability and mean spectrum per arm.
fn plot_arms(out: &Path, arms: &[ArmRuns]) -> Result<(), StudyError> {
    let curves: Vec<(String, Vec<crate::train::EpochRecord>)> = arms
        .iter()
        .map(|arm| {
            let rows: Vec<&CompareRow> = arm.runs.iter().map(|(_, r)| r).collect();
            (arm.name.clone(), mean_history(&rows))
        })
        .collect();
    let path = out.join("accuracy.png");
    report::plot_overlay(&path, &curves).map_err(|e| StudyError::io("write", &path, e))?;
    let evaluations = |arm: &ArmRuns| {
        arm.runs
            .iter()
            .filter_map(|(_, r)| r.summary.evaluation.clone())
            .collect::<Vec<_>>()
    };
    let reliability: Vec<(String, Vec<crate::eval::ReliabilityBin>)> = arms
        .iter()
        .filter_map(|arm| {
            let evaluations = evaluations(arm);
            pooled_bins(&evaluations).map(|bins| (arm.name.clone(), bins))
        })
        .collect();
    if !reliability.is_empty() {
        let path = out.join("reliability.png");
        report::plot_reliability(&path, &reliability)
            .map_err(|e| StudyError::io("write", &path, e))?;
    }
    let spectra: Vec<(String, usize, Vec<f64>)> = arms
        .iter()
        .filter_map(|arm| {
            let spectra: Vec<_> = evaluations(arm)
                .into_iter()
                .filter_map(|e| e.spectrum)
                .collect();
            let first = spectra.first()?;
            let mut mean = vec![0.0; first.normalized_values.len()];
            for s in &spectra {
                for (m, v) in mean.iter_mut().zip(&s.normalized_values) {
                    *m += v / spectra.len() as f64;
                }
            }
            Some((arm.name.clone(), first.point, mean))
        })
        .collect();
    if let Some((_, point, _)) = spectra.first() {
        let path = out.join("spectrum.png");
        let named: Vec<(String, Vec<f64>)> = spectra
            .iter()
            .map(|(n, _, v)| (n.clone(), v.clone()))
            .collect();
        report::plot_spectrum(&path, *point, &named)
            .map_err(|e| StudyError::io("write", &path, e))?;
    }
    Ok(())
}

/// The epoch records of several runs averaged epoch by epoch, on the epochs all of them
/// measured (test accuracy is what is drawn).
fn mean_history(rows: &[&CompareRow]) -> Vec<crate::train::EpochRecord> {
    let shortest = rows.iter().map(|r| r.history.len()).min().unwrap_or(0);
    (0..shortest)
        .filter_map(|e| {
            let mut record = rows[0].history[e].clone();
            let accuracies: Option<Vec<f64>> = rows
                .iter()
                .map(|r| r.history[e].test.map(|t| t.accuracy))
                .collect();
            let mean = accuracies?.iter().sum::<f64>() / rows.len() as f64;
            record.test.as_mut()?.accuracy = mean;
            Some(record)
        })
        .collect()
}

/// Reliability bins summed over runs: count-weighted confidence and accuracy.
fn pooled_bins(
    evaluations: &[crate::eval::Evaluation],
) -> Option<Vec<crate::eval::ReliabilityBin>> {
    let mut pooled = evaluations.first()?.reliability.clone();
    for bin in &mut pooled {
        bin.count = 0;
        bin.confidence = 0.0;
        bin.accuracy = 0.0;
    }
    for evaluation in evaluations {
        for (p, b) in pooled.iter_mut().zip(&evaluation.reliability) {
            p.confidence += b.confidence * b.count as f64;
            p.accuracy += b.accuracy * b.count as f64;
            p.count += b.count;
        }
    }
    for bin in &mut pooled {
        let n = bin.count.max(1) as f64;
        bin.confidence /= n;
        bin.accuracy /= n;
    }
    Some(pooled)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::StudyReport;

    /// Every report the repository ships reads back typed, and writes out as the same JSON:
    /// nothing a report holds is lost on the way through [`StudyReport`].
    #[test]
    fn the_shipped_reports_read_back_typed_and_round_trip() {
        let studies = Path::new(env!("CARGO_MANIFEST_DIR")).join("studies");
        let mut read = 0;
        for entry in std::fs::read_dir(&studies).unwrap() {
            let path = entry.unwrap().path().join(super::REPORT_JSON);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let report: StudyReport =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                !report.arms.is_empty() || !report.levels.is_empty(),
                "{}",
                path.display()
            );
            let mut original: serde_json::Value = serde_json::from_str(&text).unwrap();
            rename_configuration_keys(&mut original);
            let mut again: serde_json::Value =
                serde_json::from_str(&report.to_json().unwrap()).unwrap();
            // Reports older than the declared family and the provenance record lack them.
            for key in ["primary", "provenance"] {
                let empty = again[key].is_null() || again[key] == serde_json::json!([]);
                if original.get(key).is_none() && empty {
                    again.as_object_mut().unwrap().remove(key);
                }
            }
            assert_eq!(original, again, "{}", path.display());
            read += 1;
        }
        assert!(read >= 5, "only {read} reports found");
    }

    /// Older runs saved the learning-rate decay as `gamma` (PatchUp's probability has that
    /// name too) and CIFAR-100's coarse labels under a longer name; a run's configuration
    /// reads them under their new names.
    fn rename_configuration_keys(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if map.contains_key("lr") {
                    for (old, new) in [
                        ("gamma", "lr_decay"),
                        ("cifar100_labels_coarse", "cifar100_coarse"),
                    ] {
                        if let Some(v) = map.remove(old) {
                            map.insert(new.to_string(), v);
                        }
                    }
                }
                map.values_mut().for_each(rename_configuration_keys);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(rename_configuration_keys),
            _ => {}
        }
    }
}
