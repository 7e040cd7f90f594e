//! Parity with a PyTorch twin of every model family, step by step.
//!
//! `tests/parity/<case>.weights.safetensors` holds mmix's initial weights under PyTorch names,
//! `<case>.case.safetensors` a batch, its soft targets and a mix plan, and
//! `<case>.golden.safetensors` what `scripts/parity/twin.py` computed in PyTorch for one
//! train-mode step: the logits, the loss and every parameter's gradient, and how far each
//! gradient moves in PyTorch itself when the input is nudged by 1e-6 (its *sensitivity*).
//! Regenerate with `scripts/parity/run.sh`.
//!
//! Why the sensitivity: a ReLU input within rounding of zero makes some gradients (batch-norm
//! biases after it, above all) jump between two valid values under perturbations of 1e-6.
//! Two correct implementations may land on either side, so each gradient's tolerance is
//! `1e-3 · max|g| + 4 · sensitivity` (and the logits' `1e-4 · max|z| + 4 · sensitivity`):
//! tight where the step is well conditioned, and as loose as PyTorch disagrees with itself
//! where it is not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use safetensors::SafeTensors;

mod common;

use manifold_mixup::mixup::{
    AppliedMix, Loss, MixPlan, Mixable, TensorMix, mixed_loss, soft_targets,
};
use manifold_mixup::models::{Classifier, ModelConfig, ModelKind, to_safetensors};

struct Spec {
    name: &'static str,
    model: &'static str,
    width: usize,
    channels: usize,
    size: usize,
    /// Mix point and λ; `None` trains unmixed.
    mix: Option<(usize, f64)>,
}

const BATCH: usize = 32;
const CLASSES: usize = 10;

/// Every family, unmixed, mixed at the input and mixed at a hidden point.
const CASES: [Spec; 10] = [
    spec("small-cnn-none", "small-cnn", 4, 1, 12, None),
    spec(
        "small-cnn-manifold-2",
        "small-cnn",
        4,
        1,
        12,
        Some((2, 0.35)),
    ),
    spec("mlp-input", "mlp", 16, 1, 8, Some((0, 0.6))),
    spec("mlp-manifold-1", "mlp", 16, 1, 8, Some((1, 0.35))),
    spec("preactresnet18-none", "preactresnet18", 4, 3, 8, None),
    spec(
        "preactresnet18-input",
        "preactresnet18",
        4,
        3,
        8,
        Some((0, 0.6)),
    ),
    spec(
        "preactresnet18-manifold-2",
        "preactresnet18",
        4,
        3,
        8,
        Some((2, 0.35)),
    ),
    spec(
        "preactresnet50-manifold-1",
        "preactresnet50",
        4,
        3,
        8,
        Some((1, 0.35)),
    ),
    spec("wrn-10-2-manifold-3", "wrn-10-2", 4, 3, 8, Some((3, 0.35))),
    spec("resnet50-manifold-3", "resnet50", 4, 3, 16, Some((3, 0.35))),
];

const fn spec(
    name: &'static str,
    model: &'static str,
    width: usize,
    channels: usize,
    size: usize,
    mix: Option<(usize, f64)>,
) -> Spec {
    Spec {
        name,
        model,
        width,
        channels,
        size,
        mix,
    }
}

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity")
}

fn model_config(spec: &Spec) -> ModelConfig {
    let kind: ModelKind = spec.model.parse().unwrap();
    ModelConfig::new(kind, spec.channels, spec.size, CLASSES).with_width(spec.width)
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

fn tensors(bytes: &[u8]) -> HashMap<String, Vec<f32>> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    file.tensors()
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
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What mmix computes for a case: logits, loss and the gradients by PyTorch name.
fn mmix_step(spec: &Spec, device: &Device) -> (Vec<f32>, f32, HashMap<String, Vec<f32>>) {
    let device = device.clone().autodiff();
    let mut model = model_config(spec).init(&device).unwrap();
    let mut store = SafetensorsStore::from_bytes(Some(read(
        &folder().join(format!("{}.weights.safetensors", spec.name)),
    )))
    .skip_enum_variants(true)
    .with_from_adapter(PyTorchToBurnAdapter);
    model.load_from(&mut store).unwrap();

    let case_bytes = read(&folder().join(format!("{}.case.safetensors", spec.name)));
    let case = tensors(&case_bytes);
    let input = Tensor::<4>::from_data(
        TensorData::new(
            case["input"].clone(),
            [BATCH, spec.channels, spec.size, spec.size],
        ),
        &device,
    );
    let targets = Tensor::<2>::from_data(
        TensorData::new(case["targets"].clone(), [BATCH, CLASSES]),
        &device,
    );
    let plan = spec.mix.map(|(layer, lambda)| {
        let permutation = case["permutation"].iter().map(|&p| p as usize).collect();
        MixPlan::interpolate(lambda, layer, permutation)
    });
    let mix = plan.as_ref().map(|p| TensorMix::new(p, &device));
    let logits = model.forward_mixed(input, mix.as_ref());
    let loss = mixed_loss(logits.clone(), targets, Loss::SoftCe);
    let loss_value = loss.clone().into_scalar::<f32>();
    let gradients = GradientsParams::from_grads(loss.backward(), &model);
    let as_parameters: Classifier = model.map(&mut GradientsAsParameters { gradients });
    let gradients = tensors(&to_safetensors(&as_parameters).unwrap());
    let logits = logits.into_data().try_into_vec::<f32>().unwrap();
    (logits, loss_value, gradients)
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn every_family_and_mode_matches_the_pytorch_twin() {
    every_case_matches_on(&Device::flex());
}

/// The same cases on a wgpu device: in CI, Mesa's software Vulkan driver (lavapipe) with
/// `MMIX_ALLOW_SOFTWARE_GPU=1`, which runs CubeCL's kernels as a GPU would be given them.
#[cfg(feature = "wgpu")]
#[test]
fn every_family_and_mode_matches_the_pytorch_twin_on_wgpu() {
    let device = manifold_mixup::train::DeviceName::Wgpu(None)
        .open()
        .unwrap_or_else(|reason| panic!("{reason}"));
    every_case_matches_on(&device);
}

fn every_case_matches_on(device: &Device) {
    for spec in &CASES {
        let golden_bytes = read(&folder().join(format!("{}.golden.safetensors", spec.name)));
        let golden = tensors(&golden_bytes);
        let (logits, loss, gradients) = mmix_step(spec, device);
        let name = spec.name;
        let scale = max_abs(&golden["logits"]);
        let sensitivity = max_abs(&golden["sensitivity.logits"]);
        let error = max_diff(&logits, &golden["logits"]);
        let tolerance = 1e-4 * scale + 4.0 * sensitivity + 1e-5;
        assert!(
            error <= tolerance,
            "{name}: logits off by {error:e} (tolerance {tolerance:e}, PyTorch's own sensitivity {sensitivity:e})"
        );
        let expected_loss = golden["loss"][0];
        assert!(
            (loss - expected_loss).abs() <= 1e-5 * expected_loss.abs() + 1e-6,
            "{name}: loss {loss} against {expected_loss}"
        );
        let mut compared = 0;
        for (key, expected) in &golden {
            let Some(parameter) = key.strip_prefix("grad.") else {
                continue;
            };
            let sensitivity = max_abs(&golden[&format!("sensitivity.{parameter}")]);
            let ours = gradients
                .get(parameter)
                .unwrap_or_else(|| panic!("{name}: mmix has no parameter {parameter}"));
            let error = max_diff(ours, expected);
            let tolerance = 1e-3 * max_abs(expected) + 4.0 * sensitivity + 1e-7;
            assert!(
                error <= tolerance,
                "{name}: gradient of {parameter} off by {error:e} (tolerance {tolerance:e}, PyTorch's own sensitivity {sensitivity:e})"
            );
            compared += 1;
        }
        let trainable = gradients.keys().filter(|k| !k.contains("running_")).count();
        assert_eq!(
            compared, trainable,
            "{name}: the twin and mmix disagree on the parameters"
        );
    }
}

/// Writes the cases' weights, batches and plans (run by `scripts/parity/run.sh`; the twin
/// then writes the golden files).
/// The same cases on Burn's generic operations (`MMIX_KERNELS=generic`), as a GPU backend
/// computes them, instead of mmix's own kernels and oneDNN.
#[test]
fn every_family_and_mode_matches_the_pytorch_twin_on_the_generic_path() {
    common::passes_on_the_generic_path("every_family_and_mode_matches_the_pytorch_twin");
}

#[test]
#[ignore]
fn write_parity_cases() {
    let device = Device::flex();
    std::fs::create_dir_all(folder()).unwrap();
    for (index, spec) in CASES.iter().enumerate() {
        let seed = 1000 + index as u64;
        device.seed(seed);
        let model = model_config(spec).init(&device).unwrap();
        std::fs::write(
            folder().join(format!("{}.weights.safetensors", spec.name)),
            to_safetensors(&model).unwrap(),
        )
        .unwrap();
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let input: Vec<f32> = (0..BATCH * spec.channels * spec.size * spec.size)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let labels: Vec<usize> = (0..BATCH).map(|_| rng.random_range(0..CLASSES)).collect();
        let mut permutation: Vec<usize> = (0..BATCH).collect();
        permutation.shuffle(&mut rng);
        let applied = spec
            .mix
            .map(|(_, lambda)| AppliedMix::uniform(lambda, permutation.clone()));
        let targets = soft_targets(&labels, applied.as_ref(), CLASSES, 0.0);
        let permutation: Vec<f32> = permutation.iter().map(|&p| p as f32).collect();
        let shapes = [
            (
                "input",
                input,
                vec![BATCH, spec.channels, spec.size, spec.size],
            ),
            ("targets", targets, vec![BATCH, CLASSES]),
            ("permutation", permutation, vec![BATCH]),
        ];
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = shapes
            .into_iter()
            .map(|(name, values, shape)| {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.to_string(), bytes, shape)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(name, data, shape)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    data,
                )
                .unwrap();
                (name.clone(), view)
            })
            .collect();
        let (layer, lambda) = spec.mix.map_or(("none".into(), "1".into()), |(l, lam)| {
            (l.to_string(), lam.to_string())
        });
        let metadata: HashMap<String, String> = [
            ("model", spec.model.to_string()),
            ("width", spec.width.to_string()),
            ("channels", spec.channels.to_string()),
            ("size", spec.size.to_string()),
            ("classes", CLASSES.to_string()),
            ("layer", layer),
            ("lambda", lambda),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let serialized = safetensors::serialize(views, Some(metadata)).unwrap();
        std::fs::write(
            folder().join(format!("{}.case.safetensors", spec.name)),
            serialized,
        )
        .unwrap();
    }
}
