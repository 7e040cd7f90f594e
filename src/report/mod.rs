//! What a run leaves behind for people: `metrics.csv`, `summary.json`, `curves.png`, and the
//! comparison of several runs.

mod compare;
mod plot;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use compare::{CompareRow, EvaluationColumn, compare_table, evaluation_columns, load_run};
pub use plot::{
    GainSeries, plot_curves, plot_gain, plot_overlay, plot_reliability, plot_spectrum, write_png,
};

use crate::eval::{Evaluation, Metrics};
use crate::train::{EpochRecord, RunState, TrainConfig};

/// The header of `metrics.csv`.
pub const METRICS_HEADER: &str = "epoch,lr,train_loss,train_acc,valid_acc,valid_nll,valid_ece,test_acc,test_nll,test_ece,images_per_second,seconds";

/// `metrics.csv`: one row per epoch. Valid columns are empty without a validation split, and
/// valid and test columns on the epochs `--eval-every` skips.
pub fn metrics_csv(history: &[EpochRecord]) -> String {
    // A semi-supervised run's mean teacher gets columns of its own, after the student's.
    let teacher = history.iter().any(|r| r.teacher_test.is_some());
    let mut out = String::from(METRICS_HEADER);
    if teacher {
        out.push_str(TEACHER_HEADER);
    }
    out.push('\n');
    let columns = |metrics: &Option<Metrics>| match metrics {
        Some(m) => format!("{:.6},{:.6},{:.6}", m.accuracy, m.nll, m.ece),
        None => ",,".into(),
    };
    for r in history {
        out.push_str(&format!(
            "{},{:.6e},{:.6},{:.6},{},{},{:.1},{:.2}",
            r.epoch,
            r.lr,
            r.train_loss,
            r.train_acc,
            columns(&r.valid),
            columns(&r.test),
            r.images_per_second,
            r.seconds
        ));
        if teacher {
            out.push_str(&format!(
                ",{},{}",
                columns(&r.teacher_valid),
                columns(&r.teacher_test)
            ));
        }
        out.push('\n');
    }
    out
}

/// The columns `metrics.csv` adds for a semi-supervised run's mean teacher.
pub const TEACHER_HEADER: &str = ",teacher_valid_acc,teacher_valid_nll,teacher_valid_ece,teacher_test_acc,teacher_test_nll,teacher_test_ece";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// The last epoch's test metrics.
pub struct FinalMetrics {
    /// Test accuracy.
    pub test_acc: f64,
    /// Test NLL.
    pub test_nll: f64,
    /// Test ECE.
    pub test_ece: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// The epoch of the best validation accuracy, and its test accuracy.
pub struct BestValid {
    /// That epoch (from 1).
    pub epoch: usize,
    /// Its validation accuracy.
    pub valid_acc: f64,
    /// Its test accuracy.
    pub test_acc: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A run's `summary.json`: what it is and how it ended.
pub struct Summary {
    /// The model's name.
    pub model: String,
    /// The data set's name.
    pub dataset: String,
    /// The mixing mode.
    pub mix: String,
    /// Its α.
    pub alpha: f64,
    /// The run's seed.
    pub seed: u64,
    /// Epochs asked for.
    pub epochs: usize,
    /// Epochs done.
    pub epochs_done: usize,
    /// Whether all were done.
    pub completed: bool,
    /// A semi-supervised run's mean teacher on the test split after the last measured epoch;
    /// `final` and the evaluation are the student's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_final: Option<FinalMetrics>,
    #[serde(rename = "final")]
    /// The last epoch's test metrics, where measured.
    pub final_metrics: Option<FinalMetrics>,
    /// The epoch chosen on the validation split (first best), and its test accuracy.
    pub best_valid: Option<BestValid>,
    /// Seconds spent training (not evaluating).
    pub train_seconds: f64,
    /// Training throughput over the run.
    pub train_images_per_second: f64,
    /// The evaluation suite's results on the final weights (`evaluation.json`), once measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
}

/// Where a run keeps its evaluation suite's results.
pub const EVALUATION_FILE: &str = crate::train::run_dir::EVALUATION;

/// The run's `evaluation.json`, if it has one.
pub fn read_evaluation(dir: &Path) -> Result<Option<Evaluation>, String> {
    let path = dir.join(EVALUATION_FILE);
    match crate::fsio::read_regular_text(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: damaged ({e})", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The summary of a run's progress, with `evaluation` when it measured the latest weights.
pub fn summary(config: &TrainConfig, state: &RunState, evaluation: Option<&Evaluation>) -> Summary {
    // The last epoch is always measured; an interrupted run reports its last measured one.
    let last = state.history.iter().rev().find_map(|r| r.test);
    let best_valid = state
        .history
        .iter()
        .filter_map(|r| Some((r, r.valid?, r.test?)))
        .fold(
            None::<(&EpochRecord, Metrics, Metrics)>,
            |best, (r, v, t)| match best {
                Some((_, b, _)) if b.accuracy >= v.accuracy => best,
                _ => Some((r, v, t)),
            },
        )
        .map(|(r, v, t)| BestValid {
            epoch: r.epoch,
            valid_acc: v.accuracy,
            test_acc: t.accuracy,
        });
    Summary {
        model: config.model_name(),
        dataset: config.dataset.to_string(),
        mix: config.mix.to_string(),
        alpha: config.alpha,
        seed: config.seed,
        epochs: config.epochs,
        epochs_done: state.epochs_done,
        completed: state.epochs_done == config.epochs,
        final_metrics: last.map(|test| FinalMetrics {
            test_acc: test.accuracy,
            test_nll: test.nll,
            test_ece: test.ece,
        }),
        best_valid,
        teacher_final: state
            .history
            .iter()
            .rev()
            .find_map(|r| r.teacher_test)
            .map(|test| FinalMetrics {
                test_acc: test.accuracy,
                test_nll: test.nll,
                test_ece: test.ece,
            }),
        train_seconds: state.train_seconds,
        train_images_per_second: state.train_images as f64 / state.train_seconds.max(1e-9),
        evaluation: evaluation.filter(|e| e.epoch == state.epochs_done).cloned(),
    }
}

/// The run's name in plots and tables.
pub fn run_label(config: &TrainConfig) -> String {
    format!("{} {}", config.model_name(), config.mix_label())
}

/// Writes `metrics.csv`, `summary.json` and `curves.png` for the run in `dir`, and
/// `reliability.png` (and `spectrum.png`) once the evaluation suite has measured the weights.
pub fn write_run_reports(
    dir: &Path,
    config: &TrainConfig,
    state: &RunState,
    evaluation: Option<&Evaluation>,
) -> Result<(), WriteError> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |reason| WriteError { path, reason }
    };
    let metrics = dir.join("metrics.csv");
    crate::fsio::write_atomic(&metrics, metrics_csv(&state.history).as_bytes())
        .map_err(at(&metrics))?;
    let summary = summary(config, state, evaluation);
    let summary_path = dir.join("summary.json");
    let bytes = serde_json::to_vec_pretty(&summary)
        .map_err(|e| at(&summary_path)(std::io::Error::other(e)))?;
    crate::fsio::write_atomic(&summary_path, &bytes).map_err(at(&summary_path))?;
    let title = format!("{} on {}", run_label(config), config.dataset);
    let curves = dir.join("curves.png");
    plot_curves(&curves, &title, &state.history).map_err(at(&curves))?;
    if let Some(evaluation) = &summary.evaluation {
        let label = format!("{title}, seed {}", config.seed);
        let reliability = dir.join("reliability.png");
        plot_reliability(
            &reliability,
            &[(label.clone(), evaluation.reliability.clone())],
        )
        .map_err(at(&reliability))?;
        if let Some(spectrum) = &evaluation.spectrum {
            let path = dir.join("spectrum.png");
            plot_spectrum(
                &path,
                spectrum.point,
                &[(label, spectrum.normalized_values.clone())],
            )
            .map_err(at(&path))?;
        }
    }
    Ok(())
}

/// A report that could not be written, and the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be written.
    pub reason: std::io::Error,
}
