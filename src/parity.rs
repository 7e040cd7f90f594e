//! The PyTorch golden cases (`tests/parity/`) on any device: one train-mode step of every model
//! family, unmixed and mixed, whose logits, loss and every gradient must match what
//! `scripts/parity/twin.py` computed in PyTorch. `tests/parity.rs` runs them on the CPU (both
//! kernel routes) and on wgpu; `mmix parity --device cuda` runs them on a GPU, the first thing
//! a new device must show.
//!
//! Each case is three files: `<case>.weights.safetensors` (mmix's initial weights under
//! PyTorch names), `<case>.case.safetensors` (a batch, its soft targets and a permutation) and
//! `<case>.golden.safetensors` (PyTorch's logits, loss and gradients, and how far each moves in
//! PyTorch itself when the input is nudged by 1e-6: its *sensitivity*).
//!
//! Why the sensitivity: a ReLU input within rounding of zero makes some gradients (batch-norm
//! biases after it, above all) jump between two valid values under perturbations of 1e-6.
//! Two correct implementations may land on either side, so each gradient's tolerance is
//! `1e-3 · max|g| + 4 · sensitivity` (and the logits' `1e-4 · max|z| + 4 · sensitivity`):
//! tight where the step is well conditioned, and as loose as PyTorch disagrees with itself
//! where it is not.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::SafeTensors;

use crate::mixup::{Loss, MixPlan, Mixable, TensorMix, mixed_loss};
use crate::models::{Classifier, ModelConfig, ModelKind, to_safetensors};

/// One golden case: a model, its input shape, and how its batch is mixed.
pub struct Case {
    /// The files' stem in the cases' folder.
    pub name: &'static str,
    /// The model, as `--model` names it.
    pub model: &'static str,
    /// Its width.
    pub width: usize,
    /// Input channels.
    pub channels: usize,
    /// Input height and width.
    pub size: usize,
    /// Mix point and λ; `None` trains unmixed.
    pub mix: Option<(usize, f64)>,
}

/// Examples per case's batch.
pub const BATCH: usize = 32;
/// Classes of every case.
pub const CLASSES: usize = 10;

const fn case(
    name: &'static str,
    model: &'static str,
    width: usize,
    channels: usize,
    size: usize,
    mix: Option<(usize, f64)>,
) -> Case {
    Case {
        name,
        model,
        width,
        channels,
        size,
        mix,
    }
}

/// Every family, unmixed, mixed at the input and mixed at a hidden point.
pub const CASES: [Case; 10] = [
    case("small-cnn-none", "small-cnn", 4, 1, 12, None),
    case(
        "small-cnn-manifold-2",
        "small-cnn",
        4,
        1,
        12,
        Some((2, 0.35)),
    ),
    case("mlp-input", "mlp", 16, 1, 8, Some((0, 0.6))),
    case("mlp-manifold-1", "mlp", 16, 1, 8, Some((1, 0.35))),
    case("preactresnet18-none", "preactresnet18", 4, 3, 8, None),
    case(
        "preactresnet18-input",
        "preactresnet18",
        4,
        3,
        8,
        Some((0, 0.6)),
    ),
    case(
        "preactresnet18-manifold-2",
        "preactresnet18",
        4,
        3,
        8,
        Some((2, 0.35)),
    ),
    case(
        "preactresnet50-manifold-1",
        "preactresnet50",
        4,
        3,
        8,
        Some((1, 0.35)),
    ),
    case("wrn-10-2-manifold-3", "wrn-10-2", 4, 3, 8, Some((3, 0.35))),
    case("resnet50-manifold-3", "resnet50", 4, 3, 16, Some((3, 0.35))),
];

impl Case {
    /// The case's model configuration.
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: the cases name known models"
    )]
    pub fn model_config(&self) -> ModelConfig {
        let kind: ModelKind = self.model.parse().expect("the cases name known models");
        ModelConfig::new(kind, self.channels, self.size, CLASSES).with_width(self.width)
    }
}

/// How closely a case matched: each figure is the largest error and its tolerance.
#[derive(Debug)]
pub struct Agreement {
    /// The logits' error and tolerance.
    pub logits: (f32, f32),
    /// mmix's loss and PyTorch's.
    pub loss: (f32, f32),
    /// Parameters whose gradients were compared.
    pub gradients: usize,
    /// The gradient nearest its tolerance: its name, error and tolerance.
    pub closest_gradient: (String, f32, f32),
}

/// The f32 tensors of a safetensors file, by name.
pub fn tensors(bytes: &[u8]) -> Result<HashMap<String, Vec<f32>>, String> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    Ok(file
        .tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == safetensors::Dtype::F32)
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect())
}

fn read_tensors(path: &Path) -> Result<HashMap<String, Vec<f32>>, String> {
    let bytes = crate::fsio::read_regular(path, crate::fsio::data_file_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tensors(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn named<'a>(tensors: &'a HashMap<String, Vec<f32>>, name: &str) -> Result<&'a [f32], String> {
    tensors
        .get(name)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("no tensor '{name}'"))
}

/// Replaces every trainable parameter by its gradient, so the gradients export under the
/// parameters' own (PyTorch) names.
struct GradientsAsParameters {
    gradients: GradientsParams,
}

impl ModuleMapper for GradientsAsParameters {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        match self.gradients.remove::<D>(id) {
            Some(gradient) => Param::initialized(id, gradient),
            None => param,
        }
    }
}

/// Logits, loss and gradients by PyTorch name.
type Step = (Vec<f32>, f32, HashMap<String, Vec<f32>>);

/// What mmix computes for `case` on `device`.
fn step(folder: &Path, case: &Case, device: &Device) -> Result<Step, String> {
    let device = device.clone().autodiff();
    let mut model = case
        .model_config()
        .init(&device)
        .map_err(|e| e.to_string())?;
    let weights = folder.join(format!("{}.weights.safetensors", case.name));
    let bytes = crate::fsio::read_regular(&weights, crate::fsio::data_file_bytes())
        .map_err(|e| format!("{}: {e}", weights.display()))?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .skip_enum_variants(true)
        .with_from_adapter(PyTorchToBurnAdapter);
    model
        .load_from(&mut store)
        .map_err(|e| format!("{}: {e}", weights.display()))?;

    let data = read_tensors(&folder.join(format!("{}.case.safetensors", case.name)))?;
    let input = Tensor::<4>::from_data(
        TensorData::new(
            named(&data, "input")?.to_vec(),
            [BATCH, case.channels, case.size, case.size],
        ),
        &device,
    );
    let targets = Tensor::<2>::from_data(
        TensorData::new(named(&data, "targets")?.to_vec(), [BATCH, CLASSES]),
        &device,
    );
    let plan = match case.mix {
        Some((layer, lambda)) => {
            let permutation = named(&data, "permutation")?
                .iter()
                .map(|&p| p as usize)
                .collect();
            Some(MixPlan::interpolate(lambda, layer, permutation))
        }
        None => None,
    };
    let mix = plan.as_ref().map(|p| TensorMix::new(p, &device));
    let logits = model.forward_mixed(input, mix.as_ref());
    let loss = mixed_loss(logits.clone(), targets, Loss::SoftCe);
    let loss_value = loss.clone().into_scalar::<f32>();
    let gradients = GradientsParams::from_grads(loss.backward(), &model);
    let as_parameters: Classifier = model.map(&mut GradientsAsParameters { gradients });
    let gradients = tensors(&to_safetensors(&as_parameters).map_err(|e| e.to_string())?)?;
    let logits = logits
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    Ok((logits, loss_value, gradients))
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> Result<f32, String> {
    if a.len() != b.len() {
        return Err(format!("{} values against {}", a.len(), b.len()));
    }
    Ok(a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs())))
}

/// Runs `case` (its files in `folder`) on `device` and compares it with PyTorch's golden
/// step; `Err` says what disagrees, or which file could not be read.
pub fn check(folder: &Path, case: &Case, device: &Device) -> Result<Agreement, String> {
    let name = case.name;
    let golden = read_tensors(&folder.join(format!("{name}.golden.safetensors")))?;
    let (logits, loss, gradients) = step(folder, case, device)?;
    let sensitivity = |of: &str| named(&golden, &format!("sensitivity.{of}")).map(max_abs);

    let expected_logits = named(&golden, "logits")?;
    let error = max_diff(&logits, expected_logits)?;
    let tolerance = 1e-4 * max_abs(expected_logits) + 4.0 * sensitivity("logits")? + 1e-5;
    if error > tolerance {
        return Err(format!(
            "logits off by {error:e} (tolerance {tolerance:e}, PyTorch's own sensitivity {:e})",
            sensitivity("logits")?
        ));
    }
    let agreement_logits = (error, tolerance);

    let expected_loss = named(&golden, "loss")?[0];
    if (loss - expected_loss).abs() > 1e-5 * expected_loss.abs() + 1e-6 {
        return Err(format!("loss {loss} against {expected_loss}"));
    }

    let mut compared = 0;
    let mut closest = (String::new(), 0.0, 1.0);
    for (key, expected) in &golden {
        let Some(parameter) = key.strip_prefix("grad.") else {
            continue;
        };
        let ours = gradients
            .get(parameter)
            .ok_or_else(|| format!("mmix has no parameter {parameter}"))?;
        let error = max_diff(ours, expected)?;
        let tolerance = 1e-3 * max_abs(expected) + 4.0 * sensitivity(parameter)? + 1e-7;
        if error > tolerance {
            return Err(format!(
                "gradient of {parameter} off by {error:e} (tolerance {tolerance:e}, PyTorch's own sensitivity {:e})",
                sensitivity(parameter)?
            ));
        }
        if error / tolerance > closest.1 / closest.2 {
            closest = (parameter.to_string(), error, tolerance);
        }
        compared += 1;
    }
    let trainable = gradients.keys().filter(|k| !k.contains("running_")).count();
    if compared != trainable {
        return Err(format!(
            "the twin has {compared} gradients and mmix {trainable} parameters"
        ));
    }
    Ok(Agreement {
        logits: agreement_logits,
        loss: (loss, expected_loss),
        gradients: compared,
        closest_gradient: closest,
    })
}
