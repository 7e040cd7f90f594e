//! The evaluation suite run on a finished model: clean metrics with the reliability diagram,
//! attacks, deformations and the representation spectrum, each from its own seeded stream so
//! every run of a comparison meets the same perturbations.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::{
    Attack, AttackTarget, Deformation, Logits, Metrics, MetricsAccumulator, ReliabilityBin,
    Spectrum, TemperatureScaled, class_spectrum, robust_accuracy, temperature_scale,
};
use crate::data::{Batch, ImageSet, Normalization, make_batch};
use crate::mixup::Mixable;

/// What to measure beyond clean accuracy; empty lists measure nothing more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EvalSuite {
    /// Attacks measured on the test split.
    pub attacks: Vec<Attack>,
    /// Attack only the first this many test examples (PGD costs a backward pass per step).
    pub attack_examples: Option<usize>,
    /// Deformations measured on the test split.
    pub deformations: Vec<Deformation>,
    /// The mix point whose class-conditional spectrum is measured.
    pub spectrum_at: Option<usize>,
    /// Test examples whose features the spectrum is computed from.
    pub spectrum_examples: usize,
    /// Seeds PGD's random starts and the deformation draws, the same for every run.
    pub seed: u64,
}

impl Default for EvalSuite {
    fn default() -> Self {
        Self {
            attacks: Vec::new(),
            attack_examples: None,
            deformations: Vec::new(),
            spectrum_at: None,
            spectrum_examples: 200,
            seed: 0,
        }
    }
}

impl EvalSuite {
    /// Checks the spectrum's mix point against a model with points `0..=last_point`.
    pub fn validate(&self, last_point: usize) -> Result<(), super::EvalError> {
        if self.attack_examples == Some(0) {
            return Err(super::EvalError::NoExamples {
                what: "--attack-examples",
            });
        }
        if self.spectrum_examples == 0 && self.spectrum_at.is_some() {
            return Err(super::EvalError::NoExamples {
                what: "spectrum-examples",
            });
        }
        match self.spectrum_at {
            Some(point) if point > last_point => Err(super::EvalError::SpectrumPoint {
                point,
                last: last_point,
            }),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// Accuracy under one attack.
pub struct AttackResult {
    /// The attack.
    pub attack: Attack,
    /// Its radius ε.
    pub epsilon: f64,
    /// Test examples attacked.
    pub examples: usize,
    /// Classified right both clean and attacked.
    pub accuracy: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// Metrics under one deformation.
pub struct DeformationResult {
    /// The deformation.
    pub deformation: Deformation,
    /// The deformation in words.
    pub description: String,
    /// The test split's metrics under it.
    pub metrics: Metrics,
}

/// Everything the suite measured on one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Epochs of training behind the evaluated weights.
    pub epoch: usize,
    /// What was measured.
    pub suite: EvalSuite,
    /// The test split's metrics.
    pub clean: Metrics,
    /// The test split's reliability diagram.
    pub reliability: Vec<ReliabilityBin>,
    /// Each attack's result.
    pub attacks: Vec<AttackResult>,
    /// Each deformation's result.
    pub deformations: Vec<DeformationResult>,
    /// The spectrum, where asked for.
    pub spectrum: Option<Spectrum>,
    /// The test split at the temperature fitted on the validation split, where the run has one.
    #[serde(default)]
    pub temperature_scaled: Option<TemperatureScaled>,
    /// Seconds the suite took.
    pub seconds: f64,
}

/// Moves the batch's pixels into a tensor, leaving its labels behind.
pub fn images_tensor(batch: &mut Batch, device: &Device) -> Tensor<4> {
    let shape = [batch.len(), batch.channels, batch.size, batch.size];
    let pixels = std::mem::take(&mut batch.images);
    Tensor::from_data(TensorData::new(pixels, shape), device)
}

/// Metrics of `model` (in evaluation mode) over `set`, with their reliability bins.
pub fn accumulate<M: Mixable>(
    model: &M,
    set: &ImageSet,
    normalization: &Normalization,
    batch_size: usize,
    device: &Device,
) -> MetricsAccumulator {
    logits(model, set, normalization, batch_size, device).accumulated()
}

/// [`accumulate`] over the examples `indices` of `set` alone.
pub(crate) fn accumulate_rows<M: Mixable>(
    model: &M,
    set: &ImageSet,
    indices: &[usize],
    normalization: &Normalization,
    batch_size: usize,
    device: &Device,
) -> MetricsAccumulator {
    logits_of_rows(model, set, indices, normalization, batch_size, device).accumulated()
}

/// `model`'s logits (in evaluation mode) on a whole split, with its labels.
pub fn logits<M: Mixable>(
    model: &M,
    set: &ImageSet,
    normalization: &Normalization,
    batch_size: usize,
    device: &Device,
) -> Logits {
    let indices: Vec<usize> = (0..set.len()).collect();
    logits_of_rows(model, set, &indices, normalization, batch_size, device)
}

/// [`logits`] of the examples `indices` of `set` alone.
#[allow(clippy::expect_used, reason = "cannot fail: logits are f32")]
fn logits_of_rows<M: Mixable>(
    model: &M,
    set: &ImageSet,
    indices: &[usize],
    normalization: &Normalization,
    batch_size: usize,
    device: &Device,
) -> Logits {
    let model = model.valid();
    let mut all = Logits::default();
    for chunk in indices.chunks(batch_size.max(1)) {
        let mut batch = make_batch::<ChaCha12Rng>(set, chunk, normalization, None);
        let logits = model.forward_mixed(images_tensor(&mut batch, device), None);
        all.values.extend(
            logits
                .into_data()
                .try_into_vec::<f32>()
                .expect("logits are f32"),
        );
        all.labels.extend(batch.labels);
    }
    all
}

/// Streams of the suite's seed: one per attack and per deformation, by position.
const ATTACK_STREAM: u64 = 100;
const DEFORMATION_STREAM: u64 = 200;

fn stream(seed: u64, stream: u64) -> ChaCha12Rng {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The fewest validation images a temperature is fitted on.
pub const MIN_CALIBRATION_IMAGES: usize = 100;

/// Runs `suite` on `model` over the test `set`; `epoch` labels the weights evaluated. With a
/// validation split (`calibrate_on`), a temperature fitted on it scales the test logits too.
#[allow(clippy::too_many_arguments)]
pub fn run_suite<M: Mixable + 'static>(
    model: &M,
    set: &ImageSet,
    normalization: &Normalization,
    suite: &EvalSuite,
    epoch: usize,
    batch_size: usize,
    device: &Device,
    calibrate_on: Option<&ImageSet>,
) -> Evaluation {
    let started = Instant::now();
    let test_logits = logits(model, set, normalization, batch_size, device);
    let clean = test_logits.accumulated();
    // A temperature fitted on a handful of images is noise (on 1-2 of them it ranged from
    // 0.08 to 100 and made the test NLL worse): below the floor, none is fitted.
    let temperature_scaled = calibrate_on
        .filter(|valid| valid.len() >= MIN_CALIBRATION_IMAGES)
        .map(|valid| {
            let valid = logits(model, valid, normalization, batch_size, device);
            temperature_scale(&valid, &test_logits)
        });
    let attacked_set = match suite.attack_examples {
        Some(n) if n < set.len() => set.select(&(0..n).collect::<Vec<_>>()),
        _ => set.clone(),
    };
    let attacks = if suite.attacks.is_empty() {
        Vec::new()
    } else {
        let target = AttackTarget::new(model, normalization, device);
        suite
            .attacks
            .iter()
            .enumerate()
            .map(|(i, &attack)| AttackResult {
                attack,
                epsilon: attack.epsilon(),
                examples: attacked_set.len(),
                accuracy: robust_accuracy(
                    &target,
                    &attacked_set,
                    attack,
                    batch_size,
                    &mut stream(suite.seed, ATTACK_STREAM + i as u64),
                ),
            })
            .collect()
    };
    let deformations = suite
        .deformations
        .iter()
        .enumerate()
        .map(|(i, &deformation)| {
            let mut rng = stream(suite.seed, DEFORMATION_STREAM + i as u64);
            let deformed = deformation.apply(set, &mut rng);
            DeformationResult {
                deformation,
                description: deformation.describe(),
                metrics: accumulate(model, &deformed, normalization, batch_size, device).finish(),
            }
        })
        .collect();
    let spectrum = suite.spectrum_at.map(|point| {
        class_spectrum(
            model,
            set,
            normalization,
            point,
            suite.spectrum_examples,
            batch_size,
            device,
        )
    });
    Evaluation {
        epoch,
        suite: suite.clone(),
        clean: clean.finish(),
        reliability: clean.reliability(),
        attacks,
        deformations,
        spectrum,
        temperature_scaled,
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelConfig, ModelKind};

    fn images(count: usize) -> ImageSet {
        ImageSet {
            pixels: (0..count * 16).map(|i| (i * 37 % 251) as u8).collect(),
            labels: (0..count).map(|i| i % 3).collect(),
            channels: 1,
            size: 4,
        }
    }

    #[test]
    fn a_temperature_is_fitted_only_on_enough_validation_images() {
        let device = Device::flex();
        let model = ModelConfig::new(ModelKind::Mlp, 1, 4, 3)
            .with_width(8)
            .init(&device)
            .unwrap();
        let normalization = Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        };
        let fitted_on = |valid: &ImageSet| {
            let suite = EvalSuite::default();
            run_suite(
                &model,
                &images(20),
                &normalization,
                &suite,
                1,
                50,
                &device,
                Some(valid),
            )
            .temperature_scaled
        };
        assert!(fitted_on(&images(2)).is_none());
        assert!(fitted_on(&images(MIN_CALIBRATION_IMAGES - 1)).is_none());
        assert!(fitted_on(&images(MIN_CALIBRATION_IMAGES)).is_some());
    }
}
