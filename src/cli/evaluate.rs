//! The evaluation suite on a run's latest weights: what `mmix train` does when it finishes,
//! `mmix eval` does on demand and `mmix study` does for every run of its grid.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use burn::tensor::Device;

use crate::eval::{EvalSuite, Evaluation, run_suite};
use crate::fsio::write_atomic;
use crate::report::EVALUATION_FILE;
use crate::train::{self, RunData, TrainConfig, checkpoint};

/// Runs `suite` on the test split with the run's latest weights and writes `evaluation.json`.
pub fn final_evaluation(
    dir: &Path,
    config: &TrainConfig,
    data: &RunData,
    suite: &EvalSuite,
    device: &Device,
) -> Result<Evaluation> {
    suite
        .validate(config.model.mix_points().len() - 1)
        .map_err(|e| anyhow!(e))?;
    let folder = checkpoint::latest(&dir.join("checkpoint"))?
        .ok_or_else(|| anyhow!("{} has no checkpoint yet", dir.display()))?;
    let state = checkpoint::load_state(&folder)?;
    let model = checkpoint::load_model(&folder, train::build_model(config, data, device)?)?;
    let evaluation = run_suite(
        &model,
        &data.dataset.test,
        &data.normalization,
        suite,
        state.epochs_done,
        config.eval_batch_size,
        device,
        data.valid.as_ref(),
    );
    let path = dir.join(EVALUATION_FILE);
    let bytes = serde_json::to_vec_pretty(&evaluation)?;
    write_atomic(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(evaluation)
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
