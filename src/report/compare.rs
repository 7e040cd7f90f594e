//! `mmix compare`: a Markdown table over runs, with mean ± std over runs that differ only in
//! their seed.

use std::path::Path;

use crate::eval::Evaluation;
use crate::train::{EpochRecord, TrainConfig};

use super::{Summary, summary};

/// One run as read back from its folder.
#[derive(Clone)]
pub struct CompareRow {
    /// The run folder.
    pub dir: String,
    /// Its configuration.
    pub config: TrainConfig,
    /// Its summary.
    pub summary: Summary,
    /// Its epochs.
    pub history: Vec<EpochRecord>,
    /// Which code and machine made the run (absent in runs older than the record).
    pub provenance: Option<crate::machine::Provenance>,
}

/// Reads a run folder's `config.json` and its latest checkpoint state.
pub fn load_run(dir: &Path) -> Result<CompareRow, String> {
    let config_path = dir.join("config.json");
    let text = crate::fsio::read_regular_text(&config_path).map_err(|e| {
        format!(
            "{}: {e} (is this an mmix run folder?)",
            config_path.display()
        )
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config: TrainConfig = serde_json::from_value(value["train"].clone())
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let checkpoint_dir = dir.join("checkpoint");
    let folder = crate::train::checkpoint::latest(&checkpoint_dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: the run has no finished epoch yet", dir.display()))?;
    let state = crate::train::checkpoint::load_state(&folder).map_err(|e| e.to_string())?;
    // The weights are not decoded here, but they must be there as a file of their own.
    let weights = folder.join("model.bpk");
    match std::fs::symlink_metadata(&weights) {
        Ok(metadata) if metadata.is_file() && metadata.len() > 0 => {}
        Ok(_) => {
            return Err(format!(
                "{}: not a checkpoint's weights (empty, or not a regular file)",
                weights.display()
            ));
        }
        Err(e) => return Err(format!("{}: {e}", weights.display())),
    }
    let evaluation = super::read_evaluation(dir)?;
    Ok(CompareRow {
        provenance: serde_json::from_value(value["provenance"].clone()).ok(),
        dir: dir.display().to_string(),
        summary: summary(&config, &state, evaluation.as_ref()),
        history: state.history,
        config,
    })
}

/// The measures of the evaluation suite found in any of `rows`, in first-seen order: a column
/// name and how to read it from one run's evaluation (as a fraction, or a count).
pub fn evaluation_columns<'a>(
    evaluations: impl Iterator<Item = &'a Evaluation>,
) -> Vec<EvaluationColumn> {
    let mut columns: Vec<EvaluationColumn> = Vec::new();
    let mut add = |column: EvaluationColumn| {
        if !columns.contains(&column) {
            columns.push(column);
        }
    };
    for evaluation in evaluations {
        for attack in &evaluation.attacks {
            add(EvaluationColumn::Attack(attack.attack.to_string()));
        }
        for deformation in &evaluation.deformations {
            add(EvaluationColumn::Deformation(
                deformation.deformation.to_string(),
            ));
        }
        if let Some(spectrum) = &evaluation.spectrum {
            add(EvaluationColumn::EffectiveDirections(spectrum.point));
        }
        if evaluation.temperature_scaled.is_some() {
            add(EvaluationColumn::ScaledNll);
            add(EvaluationColumn::ScaledEce);
        }
    }
    columns
}

/// One measure of the evaluation suite, as a table column.
#[derive(Clone, Debug, PartialEq)]
pub enum EvaluationColumn {
    /// Accuracy under an attack, by name.
    Attack(String),
    /// Accuracy under a deformation, by name.
    Deformation(String),
    /// Effective directions at a mix point.
    EffectiveDirections(usize),
    /// The test split's NLL and ECE at the temperature fitted on the validation split.
    ScaledNll,
    /// The test split's ECE at that temperature.
    ScaledEce,
}

impl EvaluationColumn {
    /// The column's heading.
    pub fn header(&self) -> String {
        match self {
            EvaluationColumn::Attack(spec) => format!("{spec} acc (%)"),
            EvaluationColumn::Deformation(spec) => format!("{spec} acc (%)"),
            EvaluationColumn::EffectiveDirections(point) => {
                format!("effective directions at point {point}")
            }
            EvaluationColumn::ScaledNll => "test NLL at fitted T".into(),
            EvaluationColumn::ScaledEce => "test ECE at fitted T (%)".into(),
        }
    }

    /// The value for one run, and the factor it is shown with (100 for percentages).
    pub fn value(&self, evaluation: &Evaluation) -> Option<f64> {
        match self {
            EvaluationColumn::Attack(spec) => evaluation
                .attacks
                .iter()
                .find(|a| &a.attack.to_string() == spec)
                .map(|a| a.accuracy),
            EvaluationColumn::Deformation(spec) => evaluation
                .deformations
                .iter()
                .find(|d| &d.deformation.to_string() == spec)
                .map(|d| d.metrics.accuracy),
            EvaluationColumn::EffectiveDirections(point) => evaluation
                .spectrum
                .as_ref()
                .filter(|s| s.point == *point)
                .map(|s| s.effective_directions),
            EvaluationColumn::ScaledNll => {
                evaluation.temperature_scaled.as_ref().map(|s| s.test.nll)
            }
            EvaluationColumn::ScaledEce => {
                evaluation.temperature_scaled.as_ref().map(|s| s.test.ece)
            }
        }
    }

    /// What the report multiplies the column's values by, and the decimals it shows.
    pub fn scale(&self) -> (f64, usize) {
        match self {
            EvaluationColumn::EffectiveDirections(_) => (1.0, 2),
            EvaluationColumn::ScaledNll => (1.0, 4),
            _ => (100.0, 2),
        }
    }
}

fn cell(values: &[f64], scale: f64, digits: usize) -> String {
    let Some(crate::study::Estimate { mean, std, .. }) = crate::study::Estimate::of(values) else {
        return "–".into();
    };
    if values.len() == 1 {
        format!("{:.*}", digits, mean * scale)
    } else {
        format!("{:.*} ± {:.*}", digits, mean * scale, digits, std * scale)
    }
}

/// The data a run trained on, as a table names it: the data set, and its folder for folders.
fn data_label(config: &TrainConfig) -> String {
    match &config.data_dir {
        Some(dir) => format!("{} ({})", config.dataset, crate::fsio::path_text(dir)),
        None => config.dataset.to_string(),
    }
}

/// Groups runs whose configurations differ only in the seed, in first-seen order.
pub fn compare_table(rows: &[CompareRow]) -> String {
    let mut groups: Vec<(TrainConfig, Vec<&CompareRow>)> = Vec::new();
    for row in rows {
        let mut key = row.config.clone();
        key.seed = 0;
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(row),
            None => groups.push((key, vec![row])),
        }
    }
    let columns = evaluation_columns(rows.iter().filter_map(|r| r.summary.evaluation.as_ref()));
    // Runs on different data would otherwise share a label.
    let data = |config: &TrainConfig| (config.dataset, config.data_dir.clone());
    let mixed_data = groups.iter().any(|(k, _)| data(k) != data(&groups[0].0));
    let mut out = String::from(
        "| model | mix | α | runs | final test acc (%) | test NLL | test ECE (%) | best-valid test acc (%) |",
    );
    for column in &columns {
        out.push_str(&format!(" {} |", column.header()));
    }
    out.push_str(" epochs | train time (s) |\n");
    out.push_str(&"|---".repeat(10 + columns.len()));
    out.push_str("|\n");
    for (config, members) in groups {
        let finals: Vec<_> = members
            .iter()
            .filter_map(|r| r.summary.final_metrics.clone())
            .collect();
        let pick =
            |f: &dyn Fn(&super::FinalMetrics) -> f64| finals.iter().map(f).collect::<Vec<_>>();
        let best: Vec<f64> = members
            .iter()
            .filter_map(|r| r.summary.best_valid.as_ref().map(|b| b.test_acc))
            .collect();
        let times: Vec<f64> = members.iter().map(|r| r.summary.train_seconds).collect();
        let epochs: Vec<String> = members
            .iter()
            .map(|r| r.summary.epochs_done.to_string())
            .collect();
        let mut epochs_cell = epochs.clone();
        epochs_cell.dedup();
        let evaluated: Vec<String> = columns
            .iter()
            .map(|column| {
                let values: Vec<f64> = members
                    .iter()
                    .filter_map(|r| r.summary.evaluation.as_ref())
                    .filter_map(|e| column.value(e))
                    .collect();
                let (scale, digits) = column.scale();
                format!(" {} |", cell(&values, scale, digits))
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |{} {} | {} |\n",
            match mixed_data {
                true => format!("{} on {}", config.model_name(), data_label(&config)),
                false => config.model_name(),
            },
            config.mix_variant(),
            if config.mix == crate::mixup::MixMode::None {
                "–".to_string()
            } else {
                config.alpha.to_string()
            },
            members.len(),
            cell(&pick(&|f| f.test_acc), 100.0, 2),
            cell(&pick(&|f| f.test_nll), 1.0, 4),
            cell(&pick(&|f| f.test_ece), 100.0, 2),
            cell(&best, 100.0, 2),
            evaluated.concat(),
            epochs_cell.join("/"),
            cell(&times, 1.0, 0),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Metrics;
    use crate::mixup::MixMode;
    use crate::train::{RunState, Schedule};

    fn config(mix: MixMode, seed: u64) -> TrainConfig {
        TrainConfig {
            width: 8,
            mix,
            alpha: 2.0,
            epochs: 1,
            batch_size: 10,
            schedule: Schedule::Cosine,
            seed,
            eval_batch_size: 100,
            ..TrainConfig::default()
        }
    }

    fn row(mix: MixMode, seed: u64, test_acc: f64) -> CompareRow {
        let metrics = Metrics {
            accuracy: test_acc,
            nll: 0.5,
            ece: 0.02,
            count: 100,
        };
        let history = vec![EpochRecord {
            epoch: 1,
            lr: 0.1,
            train_loss: 1.0,
            train_acc: 0.5,
            valid: None,
            test: Some(metrics),
            teacher_valid: None,
            teacher_test: None,
            images_per_second: 100.0,
            seconds: 10.0,
        }];
        let config = config(mix, seed);
        let state = RunState {
            epochs_done: 1,
            rng: rand::SeedableRng::seed_from_u64(0),
            history: history.clone(),
            train_seconds: 10.0,
            train_images: 1000,
            partial: None,
            semi: None,
            config: None,
        };
        CompareRow {
            provenance: None,
            dir: format!("run-{seed}"),
            summary: summary(&config, &state, None),
            history,
            config,
        }
    }

    #[test]
    fn runs_on_different_data_say_which_in_their_label() {
        let same = compare_table(&[row(MixMode::None, 1, 0.7), row(MixMode::Manifold, 1, 0.8)]);
        assert!(!same.contains(" on "), "{same}");
        let mut other = row(MixMode::None, 1, 0.7);
        other.config.dataset = crate::data::DatasetName::Cifar10;
        let mixed = compare_table(&[row(MixMode::None, 1, 0.7), other]);
        let labels: Vec<&str> = mixed
            .lines()
            .skip(2)
            .map(|line| line.split('|').nth(1).unwrap_or_default().trim())
            .collect();
        assert_eq!(labels.len(), 2, "{mixed}");
        assert_ne!(labels[0], labels[1], "{mixed}");
        assert!(labels[1].ends_with("on cifar10"), "{mixed}");
    }

    #[test]
    fn runs_differing_only_in_seed_are_pooled_as_mean_and_std() {
        let rows = vec![
            row(MixMode::Manifold, 1, 0.80),
            row(MixMode::None, 1, 0.70),
            row(MixMode::Manifold, 2, 0.90),
        ];
        let table = compare_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        // Sample standard deviation of 80 and 90 is 7.07.
        assert!(
            lines[2].contains("| manifold | 2 | 2 | 85.00 ± 7.07 |"),
            "{table}"
        );
        assert!(lines[3].contains("| none | – | 1 | 70.00 |"), "{table}");
    }
}
