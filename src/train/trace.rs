//! A run's exact stream, written so that another implementation can replay it step for step
//! (`scripts/parity/trajectory.py`, the PyTorch twin): the data as the run saw it, the
//! initial weights, and for every optimizer step the examples, their augmentation, the mix
//! plan, the learning rate and the loss, with the weights after steps 1, 2, 5, 10, 20, 50, … and the last.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{RunData, TrainConfig, TrainError};
use crate::data::{ImageSet, Placement};
use crate::fsio::write_atomic;
use crate::mixup::MixPlan;

/// The run's configuration, the model's shape and the augmentation the twin must replay.
pub const META: &str = "trace.json";
/// The training subset and the test set as 8-bit pixels, and the normalisation.
pub const DATA: &str = "data.safetensors";
/// The weights before the first step, with PyTorch's names.
pub const INITIAL: &str = "initial.safetensors";
/// One [`StepTrace`] per line.
pub const STEPS: &str = "steps.jsonl";

/// The weights after `step`, with PyTorch's names.
pub(crate) fn after_step_file(step: usize) -> String {
    format!("after-step-{step}.safetensors")
}

/// One optimizer step as the loop took it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepTrace {
    /// Counted from 1 over the whole run.
    pub step: usize,
    /// Counted from 1.
    pub epoch: usize,
    /// The step's learning rate.
    pub lr: f64,
    /// The global batch's examples, as indices into the training subset.
    pub indices: Vec<usize>,
    /// Per example: crop offset (dy, dx) and whether it is mirrored.
    pub placements: Vec<(isize, isize, bool)>,
    /// The mixes drawn, if any.
    pub plan: Option<MixPlan>,
    /// The global batch's mean loss, before the step.
    pub loss: f64,
}

impl StepTrace {
    /// Augmentation placements as (dy, dx, flip).
    pub fn placements_of(placements: &[Placement]) -> Vec<(isize, isize, bool)> {
        placements.iter().map(|p| (p.dy, p.dx, p.flip)).collect()
    }
}

/// Writes a run's trace folder as the loop reports its start and its steps.
pub struct TraceWriter {
    dir: PathBuf,
    steps: std::io::BufWriter<std::fs::File>,
    last_step: usize,
}

impl TraceWriter {
    /// Creates `dir` (which must not exist) with the run's data and description.
    pub fn create(dir: &Path, config: &TrainConfig, data: &RunData) -> Result<Self, TrainError> {
        std::fs::create_dir(dir).map_err(|e| TrainError::io(dir, e))?;
        let meta = serde_json::json!({
            "model": config.model.to_string(),
            "width": config.width,
            "channels": data.train.channels,
            "size": data.train.size,
            "classes": data.dataset.classes(),
            "crop_padding": data.augmentation.crop_padding,
            "horizontal_flip": data.augmentation.horizontal_flip,
            "revision": crate::machine::REVISION,
            "config": config,
        });
        let text = serde_json::to_vec_pretty(&meta)
            .map_err(|e| TrainError::io(dir.join(META), std::io::Error::other(e)))?;
        write_atomic(&dir.join(META), &text).map_err(|e| TrainError::io(dir.join(META), e))?;
        let bytes = data_safetensors(data).map_err(|reason| TrainError::Checkpoint {
            path: dir.join(DATA),
            reason,
        })?;
        write_atomic(&dir.join(DATA), &bytes).map_err(|e| TrainError::io(dir.join(DATA), e))?;
        let path = dir.join(STEPS);
        let file = std::fs::File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let batches = data
            .train
            .len()
            .div_ceil(config.batch_size.min(data.train.len()));
        Ok(Self {
            dir: dir.to_path_buf(),
            steps: std::io::BufWriter::new(file),
            last_step: batches * config.epochs,
        })
    }

    /// The weights before the first step.
    pub fn start(
        &mut self,
        weights: &dyn Fn() -> Result<Vec<u8>, String>,
    ) -> Result<(), TrainError> {
        self.write_weights(INITIAL.into(), weights)
    }

    /// One step, and its weights where the trace keeps them.
    pub fn step(
        &mut self,
        trace: &StepTrace,
        weights: &dyn Fn() -> Result<Vec<u8>, String>,
    ) -> Result<(), TrainError> {
        let path = self.dir.join(STEPS);
        let line = serde_json::to_string(trace)
            .map_err(|e| TrainError::io(&path, std::io::Error::other(e)))?;
        writeln!(self.steps, "{line}").map_err(|e| TrainError::io(&path, e))?;
        if trace.step == self.last_step {
            self.steps.flush().map_err(|e| TrainError::io(&path, e))?;
        }
        if keeps_weights_after(trace.step) || trace.step == self.last_step {
            self.write_weights(after_step_file(trace.step), weights)?;
        }
        Ok(())
    }

    fn write_weights(
        &self,
        name: String,
        weights: &dyn Fn() -> Result<Vec<u8>, String>,
    ) -> Result<(), TrainError> {
        let path = self.dir.join(name);
        let bytes = weights().map_err(|reason| TrainError::Checkpoint {
            path: path.clone(),
            reason,
        })?;
        write_atomic(&path, &bytes).map_err(|e| TrainError::io(&path, e))
    }
}

/// Steps 1, 2, 5, 10, 20, 50, …: a divergence curve on a log scale.
fn keeps_weights_after(mut step: usize) -> bool {
    while step >= 10 && step.is_multiple_of(10) {
        step /= 10;
    }
    matches!(step, 1 | 2 | 5)
}

/// The run's training subset and test set as `[n, channels, size, size]` bytes and `i64`
/// labels, and the normalisation's `mean` and `std`.
fn data_safetensors(data: &RunData) -> Result<Vec<u8>, String> {
    use safetensors::{Dtype, tensor::TensorView};
    let labels = |set: &ImageSet| -> Vec<u8> {
        set.labels
            .iter()
            .flat_map(|&l| (l as i64).to_le_bytes())
            .collect()
    };
    let floats =
        |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let shape = |set: &ImageSet| vec![set.len(), set.channels, set.size, set.size];
    let (train, test) = (&data.train, &data.dataset.test);
    let owned: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
        (
            "train_images",
            Dtype::U8,
            shape(train),
            train.pixels.clone(),
        ),
        ("train_labels", Dtype::I64, vec![train.len()], labels(train)),
        ("test_images", Dtype::U8, shape(test), test.pixels.clone()),
        ("test_labels", Dtype::I64, vec![test.len()], labels(test)),
        (
            "mean",
            Dtype::F32,
            vec![data.normalization.mean.len()],
            floats(&data.normalization.mean),
        ),
        (
            "std",
            Dtype::F32,
            vec![data.normalization.std.len()],
            floats(&data.normalization.std),
        ),
    ];
    let views = owned
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.to_string(), view))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None::<HashMap<String, String>>).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn weights_are_kept_at_one_two_and_five_times_powers_of_ten() {
        let kept: Vec<usize> = (1..=1000)
            .filter(|&s| super::keeps_weights_after(s))
            .collect();
        assert_eq!(kept, [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]);
    }
}
