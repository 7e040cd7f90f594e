//! A whole short run against the PyTorch twin, step for step.
//!
//! `tests/trajectory/<variant>/` holds a 20-step run of a small CNN (batch norm, manifold
//! mixup at points 0–2, crop and flip, SGD with momentum 0.9 and weight decay 5e-3) as
//! `mmix train --trace` wrote it — `nesterov`: Nesterov momentum, cosine per epoch;
//! `momentum`: plain momentum, cosine per step, images padded to 32, a `--split-seed` subset — (`trace.json`: the configuration; `steps.jsonl`: every
//! step's examples, augmentation, mix plan and learning rate), and what
//! `scripts/parity/trajectory.py` computed when it replayed that stream in PyTorch
//! (`golden.safetensors`: the loss of every step and the final weights and running
//! statistics). Regenerate with `scripts/parity/trajectory-golden.sh`.
//!
//! Unlike tests/parity.rs (one step from fixed weights), this covers what only a run has: the
//! order of examples, augmentation, the schedule, the SGD update with momentum and weight
//! decay, and the running statistics of batch norm.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use safetensors::SafeTensors;

use manifold_mixup::train::trace::StepTrace;
use manifold_mixup::train::{self, Progress, TrainConfig};

fn folder(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/trajectory")
        .join(variant)
}

fn f32s(view: &safetensors::tensor::TensorView) -> Vec<f64> {
    match view.dtype() {
        safetensors::Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        safetensors::Dtype::F64 => view
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    }
}

fn float_tensors(bytes: &[u8]) -> HashMap<String, Vec<f64>> {
    SafeTensors::deserialize(bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .filter(|(_, view)| {
            matches!(
                view.dtype(),
                safetensors::Dtype::F32 | safetensors::Dtype::F64
            )
        })
        .map(|(name, view)| (name, f32s(&view)))
        .collect()
}

/// The committed run, trained again here: every step as traced, and the final weights.
fn train_again(folder: &Path) -> (Vec<StepTrace>, HashMap<String, Vec<f64>>) {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("trace.json")).unwrap()).unwrap();
    let config: TrainConfig = serde_json::from_value(meta["config"].clone()).unwrap();
    let data = train::prepare_data(&config).unwrap();
    let device = train::parse_device(&config.device).unwrap();
    let checkpoints = tempfile::tempdir().unwrap();
    let last_step = 20;
    let (mut steps, mut last_weights) = (Vec::new(), None);
    let mut progress = |event: Progress| {
        if let Progress::Step { trace, weights } = event {
            steps.push(trace.clone());
            if trace.step == last_step {
                last_weights = Some(weights().unwrap());
            }
        }
    };
    train::run_training(
        &config,
        &data,
        &device,
        checkpoints.path(),
        &AtomicBool::new(false),
        &mut progress,
        &mut |_, _| Ok(()),
    )
    .unwrap();
    let weights = float_tensors(&last_weights.expect("the run took its 20 steps"));
    (steps, weights)
}

#[test]
fn a_short_run_with_nesterov_momentum_takes_the_twins_steps_and_ends_at_its_weights() {
    takes_the_twins_steps(&folder("nesterov"));
}

#[test]
fn a_short_run_with_plain_momentum_and_a_per_step_schedule_takes_the_twins_steps() {
    takes_the_twins_steps(&folder("momentum"));
}

fn takes_the_twins_steps(folder: &Path) {
    let (steps, weights) = train_again(folder);

    // The same stream: if this fails, the loop draws differently, and the golden files must
    // be regenerated (and the change explained).
    let traced: Vec<StepTrace> = std::fs::read_to_string(folder.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(steps.len(), traced.len());
    for (ours, committed) in steps.iter().zip(&traced) {
        let without_loss = |s: &StepTrace| StepTrace {
            loss: 0.0,
            ..s.clone()
        };
        assert_eq!(
            without_loss(ours),
            without_loss(committed),
            "step {} draws differently from the committed stream",
            ours.step
        );
    }

    let golden_bytes = std::fs::read(folder.join("golden.safetensors")).unwrap();
    let golden = float_tensors(&golden_bytes);
    // PyTorch against itself, with every weight nudged by one ulp, moves the loss by
    // about 1e-7 over these steps; a wrong update (dampened momentum, weight decay after
    // momentum, biased running variance) moves it by 1e-4 or more.
    for (step, expected) in steps.iter().zip(&golden["losses"]) {
        let error = (step.loss - expected).abs();
        assert!(
            error <= 1e-5 * expected.abs(),
            "step {}: loss {} against the twin's {expected} (off by {error:e})",
            step.step,
            step.loss
        );
    }
    let mut compared = 0;
    for (key, expected) in &golden {
        let Some(name) = key.strip_prefix("final.") else {
            continue;
        };
        let ours = weights
            .get(name)
            .unwrap_or_else(|| panic!("mmix has no tensor {name}"));
        let norm = expected.iter().map(|v| v * v).sum::<f64>().sqrt();
        let distance = ours
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        assert!(
            distance <= 1e-4 * norm + 1e-6,
            "{name} ends {distance:e} from the twin's (its norm {norm:e})"
        );
        compared += 1;
    }
    assert_eq!(
        compared,
        weights.len(),
        "the twin and mmix hold other tensors"
    );
}
