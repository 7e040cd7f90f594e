//! Training on a real wgpu device (`--features wgpu`). Where no GPU exists, CI runs these on
//! Mesa's software Vulkan driver (lavapipe), which mmix refuses unless
//! `MMIX_ALLOW_SOFTWARE_GPU=1`: slow, but a device with its own memory, its own kernels (CubeCL's,
//! compiled to SPIR-V) and its own launches — the path a GPU user takes.
#![cfg(feature = "wgpu")]

use std::path::Path;

mod common;

use common::{
    as_strs, assert_one_line_error, assert_same_outcome, kill_after_first_epoch_and_resume, mmix,
    run, text,
};

/// A tiny run with manifold mixing: an MLP on 400 embedded images, 12 epochs of 8 batches
/// (after the first, whose kernels compile, about 0.5 s each on lavapipe: seconds to be
/// killed in before the end).
fn tiny_run(out: &Path) -> Vec<String> {
    [
        "train",
        "--device",
        "wgpu",
        "--model",
        "mlp",
        "--width",
        "16",
        "--mix",
        "manifold",
        "--epochs",
        "12",
        "--train-subset",
        "400",
        "--batch-size",
        "50",
        "--seed",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_run_killed_and_resumed_on_wgpu_equals_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    let uninterrupted = run(&as_strs(&tiny_run(&whole)));
    assert!(
        uninterrupted.status.success(),
        "{}",
        text(&uninterrupted.stderr)
    );
    assert!(text(&uninterrupted.stdout).contains("device wgpu"));
    kill_after_first_epoch_and_resume(&as_strs(&tiny_run(&killed)), &killed);
    // Measured on lavapipe: the same bytes, as on the CPU.
    assert_same_outcome(&killed, &whole, "killed after epoch 1 and resumed on wgpu");
}

#[test]
fn a_software_adapter_is_refused_in_one_line_without_the_opt_in() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("refused");
    let output = mmix()
        .args(tiny_run(&out))
        .env_remove("MMIX_ALLOW_SOFTWARE_GPU")
        // Mesa's window-system layer otherwise prints its own line about it.
        .env("XDG_RUNTIME_DIR", tmp.path())
        .output()
        .unwrap();
    if output.status.success() {
        // A hardware adapter: nothing to refuse.
        return;
    }
    assert_one_line_error(
        &output,
        "MMIX_ALLOW_SOFTWARE_GPU=1 takes it anyway",
        "wgpu on a software adapter",
    );
    assert!(!out.exists(), "the refused run wrote {}", out.display());
}
