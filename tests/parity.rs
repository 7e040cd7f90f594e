//! Parity with a PyTorch twin of every model family, step by step: the golden cases of
//! `tests/parity/` (see `manifold_mixup::parity`, which also runs them as `mmix parity` on a
//! GPU). Regenerate with `scripts/parity/run.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

mod common;

use manifold_mixup::mixup::{AppliedMix, soft_targets};
use manifold_mixup::models::to_safetensors;
use manifold_mixup::parity::{BATCH, CASES, CLASSES, check};

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity")
}

fn every_case_matches_on(device: &Device) {
    for case in &CASES {
        if let Err(disagreement) = check(&folder(), case, device) {
            panic!("{}: {disagreement}", case.name);
        }
    }
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

/// The same cases on Burn's generic operations (`MMIX_KERNELS=generic`), as a GPU backend
/// computes them, instead of mmix's own kernels and oneDNN.
#[test]
fn every_family_and_mode_matches_the_pytorch_twin_on_the_generic_path() {
    common::passes_on_the_generic_path("every_family_and_mode_matches_the_pytorch_twin");
}

/// `mmix parity` (what `scripts/gpu-check.sh` runs on a GPU first) passes the cases and fails,
/// naming the case, where a golden file is another case's.
#[test]
fn mmix_parity_reports_each_case_and_fails_on_a_wrong_golden_file() {
    let output = common::run(&["parity", "--cases", folder().to_str().unwrap()]);
    let stdout = common::text(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("10 of 10 golden cases match PyTorch on cpu"),
        "{stdout}"
    );

    let swapped = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(folder()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, swapped.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        folder().join("mlp-manifold-1.golden.safetensors"),
        swapped.path().join("mlp-input.golden.safetensors"),
    )
    .unwrap();
    let output = common::run(&["parity", "--cases", swapped.path().to_str().unwrap()]);
    let stdout = common::text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED mlp-input: logits off by"),
        "{stdout}"
    );
    assert!(stdout.contains("9 of 10 golden cases match"), "{stdout}");
}

/// Writes the cases' weights, batches and plans (run by `scripts/parity/run.sh`; the twin
/// then writes the golden files).
#[test]
#[ignore]
fn write_parity_cases() {
    let device = Device::flex();
    std::fs::create_dir_all(folder()).unwrap();
    for (index, spec) in CASES.iter().enumerate() {
        let seed = 1000 + index as u64;
        device.seed(seed);
        let model = spec.model_config().init(&device).unwrap();
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
