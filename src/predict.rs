//! Classifying new images with a trained run: the network of its latest checkpoint, with the
//! image shape, normalisation and class names its `config.json` records, and the
//! temperature its final evaluation fitted on the validation split, where it has one.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::data::{DataError, ImageSet, Normalization};
use crate::eval::suite::logits;
use crate::mixup::Mixable;
use crate::models::{Classifier, ModelConfig};
use crate::train::{TrainError, checkpoint, run_dir};

/// The largest image file read: far beyond any photo.
const MAX_FILE_BYTES: u64 = 64 << 20;

// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    RunDir(#[from] run_dir::RunDirError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("{} has no checkpoint yet", dir.display())]
    NoCheckpoint { dir: PathBuf },
    #[error(
        "{} holds a run of the library model '{name}', which only the program that defines it can build (`Predictor::open_with` in the library)",
        dir.display()
    )]
    CustomModel { dir: PathBuf, name: String },
    #[error(
        "{} was trained on images padded to {size}×{size} (--pad-to); classifying new images needs the size before padding, which a run older than its record does not say",
        dir.display()
    )]
    Padded { dir: PathBuf, size: usize },
    #[error("{}: {reason}", path.display())]
    BadEvaluation { path: PathBuf, reason: String },
    /// The evaluation file could not be read; the message names it.
    #[error("{0}")]
    UnreadableEvaluation(String),
    #[error(transparent)]
    Image(#[from] DataError),
}

/// A run's network, ready to classify images: a built-in model ([`Predictor::open`]) or a
/// library user's ([`Predictor::open_with`]).
pub struct Predictor<M: Mixable = Classifier> {
    model: M,
    normalization: Normalization,
    channels: usize,
    size: usize,
    /// The side new images are read at: `size`, or for a `--pad-to` run the side before padding.
    read_size: usize,
    classes: Vec<String>,
    temperature: Option<f64>,
    device: Device,
    batch_size: usize,
}

/// One class and the probability the network gives it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Ranked {
    /// The class index.
    pub class: usize,
    /// The class name.
    pub name: String,
    /// Its probability.
    pub probability: f64,
}

impl Predictor<Classifier> {
    /// The network of the run in `dir` (its latest checkpoint), on `device`. With
    /// `calibrated`, probabilities are those of the logits divided by the temperature the
    /// run's final evaluation fitted on its validation split, where it fitted one.
    pub fn open(dir: &Path, device: &Device, calibrated: bool) -> Result<Self, PredictError> {
        let record = run_dir::read_record(dir)?;
        if let Some(name) = &record.train.custom_model {
            return Err(PredictError::CustomModel {
                dir: dir.to_path_buf(),
                name: name.clone(),
            });
        }
        let [channels, size, _] = record.dataset.image_shape;
        let classes = record.dataset.classes.len();
        let (model, width) = (record.train.model, record.train.width);
        let init = move |device: &Device| {
            ModelConfig::new(model, channels, size, classes)
                .with_width(width)
                .init(device)
                .map_err(TrainError::from)
        };
        Self::open_record(dir, record, device, calibrated, &init)
    }
}

impl<M: Mixable> Predictor<M> {
    /// [`Predictor::open`] for a model `init` builds (with the run's architecture: the latest
    /// checkpoint's weights are loaded into it).
    pub fn open_with(
        dir: &Path,
        device: &Device,
        calibrated: bool,
        init: &dyn Fn(&Device) -> Result<M, TrainError>,
    ) -> Result<Self, PredictError> {
        Self::open_record(dir, run_dir::read_record(dir)?, device, calibrated, init)
    }

    fn open_record(
        dir: &Path,
        record: run_dir::RunRecord,
        device: &Device,
        calibrated: bool,
        init: &dyn Fn(&Device) -> Result<M, TrainError>,
    ) -> Result<Self, PredictError> {
        run_dir::check_own_entries(dir)?;
        let [channels, size, _] = record.dataset.image_shape;
        let read_size = match (record.train.pad_to, record.dataset.unpadded_size) {
            (None, _) => size,
            (Some(_), Some(unpadded)) if unpadded <= size => unpadded,
            (Some(_), _) => {
                return Err(PredictError::Padded {
                    dir: dir.to_path_buf(),
                    size,
                });
            }
        };
        let folder = checkpoint::latest(&dir.join(run_dir::CHECKPOINTS))?.ok_or_else(|| {
            PredictError::NoCheckpoint {
                dir: dir.to_path_buf(),
            }
        })?;
        let model = checkpoint::load_model(&folder, init(device)?)?;
        let temperature = match calibrated {
            true => fitted_temperature(dir)?,
            false => None,
        };
        Ok(Self {
            model,
            normalization: record.dataset.normalization,
            channels,
            size,
            read_size,
            classes: record.dataset.classes,
            temperature,
            device: device.clone(),
            batch_size: record.train.eval_batch_size,
        })
    }

    /// The temperature the probabilities are computed at, if not 1.
    pub fn temperature(&self) -> Option<f64> {
        self.temperature
    }

    /// `[channels, size, size]` of the images the network takes.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.size, self.size]
    }

    /// The image file at `path` (PNG or JPEG), as the network takes it: resized to the run's
    /// image size (for a `--pad-to` run, to the size before padding, then padded as its
    /// training images were), in grey for a one-channel run.
    pub fn read_image(&self, path: &Path) -> Result<Vec<u8>, PredictError> {
        let bytes =
            crate::fsio::read_regular(path, MAX_FILE_BYTES).map_err(|e| DataError::io(path, e))?;
        let pixels = crate::data::decode_image_in(path, &bytes, self.read_size, self.channels)?;
        if self.read_size == self.size {
            return Ok(pixels);
        }
        let image = ImageSet {
            pixels,
            labels: vec![0],
            channels: self.channels,
            size: self.read_size,
        };
        Ok(image.padded(self.size)?.pixels)
    }

    /// The classes of each image (as [`Self::read_image`] gives them, one after another), the
    /// `top` most probable first.
    pub fn classify(&self, pixels: Vec<u8>, top: usize) -> Vec<Vec<Ranked>> {
        let image_len = self.channels * self.size * self.size;
        let count = pixels.len() / image_len;
        let set = ImageSet {
            pixels,
            labels: vec![0; count],
            channels: self.channels,
            size: self.size,
        };
        let logits = logits(
            &self.model,
            &set,
            &self.normalization,
            self.batch_size,
            &self.device,
        );
        let temperature = self.temperature.unwrap_or(1.0);
        logits
            .values
            .chunks_exact(self.classes.len())
            .map(|row| self.ranked(&softmax(row, temperature), top))
            .collect()
    }

    fn ranked(&self, probabilities: &[f64], top: usize) -> Vec<Ranked> {
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        // Ties go to the lower class, as the evaluation's predicted class does.
        order.sort_by(|&a, &b| {
            probabilities[b]
                .total_cmp(&probabilities[a])
                .then(a.cmp(&b))
        });
        order
            .into_iter()
            .take(top.max(1))
            .map(|class| Ranked {
                class,
                name: self.classes[class].clone(),
                probability: probabilities[class],
            })
            .collect()
    }
}

fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let scaled: Vec<f64> = logits.iter().map(|&v| v as f64 / temperature).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scaled.iter().map(|v| (v - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// The temperature of the run's `evaluation.json`, if it fitted one (it needs a validation
/// split); none where the run has no final evaluation yet.
fn fitted_temperature(dir: &Path) -> Result<Option<f64>, PredictError> {
    let path = dir.join(run_dir::EVALUATION);
    let bad = |reason: String| PredictError::BadEvaluation {
        path: path.clone(),
        reason,
    };
    let evaluation =
        crate::report::read_evaluation(dir).map_err(PredictError::UnreadableEvaluation)?;
    match evaluation.and_then(|e| e.temperature_scaled) {
        None => Ok(None),
        Some(scaled) if scaled.temperature.is_finite() && scaled.temperature > 0.0 => {
            Ok(Some(scaled.temperature))
        }
        Some(scaled) => Err(bad(format!(
            "its temperature {} is not a positive number",
            scaled.temperature
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::softmax;

    #[test]
    fn softmax_sums_to_one_and_a_higher_temperature_flattens_it() {
        let logits = [2.0_f32, -1.0, 0.5, 3.0];
        let cold = softmax(&logits, 1.0);
        let warm = softmax(&logits, 4.0);
        for p in [&cold, &warm] {
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert!(warm[3] < cold[3] && warm[1] > cold[1]);
        // exp(3 - 2) = e: the ratio of the two largest at temperature 1.
        assert!((cold[3] / cold[0] - std::f64::consts::E).abs() < 1e-9);
    }
}
