//! The evaluation suite on a run's latest weights: what `mmix train` does when it finishes,
//! `mmix eval` does on demand and `mmix study` does for every run of its grid.

use std::path::Path;

use anyhow::Result;
use burn::tensor::Device;

use crate::eval::{EvalSuite, Evaluation};
use crate::train::{self, RunData, TrainConfig};

/// Runs `suite` on the test split with the run's latest weights and writes `evaluation.json`.
pub fn final_evaluation(
    dir: &Path,
    config: &TrainConfig,
    data: &RunData,
    suite: &EvalSuite,
    device: &Device,
) -> Result<Evaluation> {
    let init = |device: &Device| train::build_model(config, data, device);
    Ok(train::run_dir::evaluate_latest(
        dir, config, data, suite, device, &init,
    )?)
}

/// One line: the clean metrics and every measure the suite took.
pub fn describe(evaluation: &Evaluation) -> String {
    let clean = &evaluation.clean;
    let mut line = format!(
        "evaluation of epoch {}: test_acc {:.2}% test_nll {:.4} test_ece {:.2}%",
        evaluation.epoch,
        clean.accuracy * 100.0,
        clean.nll,
        clean.ece * 100.0
    );
    if let Some(scaled) = &evaluation.temperature_scaled {
        line.push_str(&format!(
            "; at temperature {:.3} (fitted on valid): test_nll {:.4} test_ece {:.2}%",
            scaled.temperature,
            scaled.test.nll,
            scaled.test.ece * 100.0
        ));
    }
    for attack in &evaluation.attacks {
        line.push_str(&format!(
            "; {} acc {:.2}%",
            attack.attack,
            attack.accuracy * 100.0
        ));
    }
    for deformation in &evaluation.deformations {
        line.push_str(&format!(
            "; {} acc {:.2}%",
            deformation.description,
            deformation.metrics.accuracy * 100.0
        ));
    }
    if let Some(spectrum) = &evaluation.spectrum {
        line.push_str(&format!(
            "; {:.2} effective directions at mix point {} (90% of variance in {:.1})",
            spectrum.effective_directions, spectrum.point, spectrum.directions_90
        ));
    }
    line.push_str(&format!(" ({:.0}s)", evaluation.seconds));
    line
}
