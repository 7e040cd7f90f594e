//! Data-parallel training on several devices of one process (`--devices`), one thread per
//! device: checked here on two CPU "devices", which run the same code as two GPUs.

mod common;

use std::path::Path;

use common::{
    assert_same_outcome, data_parallel_run as train_args, kill_after_first_epoch_and_resume,
    largest_weight_difference, run, text,
};

#[test]
fn two_devices_train_the_model_one_device_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, one) = (tmp.path().join("two"), tmp.path().join("one"));
    let output = run(&train_args(
        two.to_str().unwrap(),
        &["--devices", "cpu,cpu"],
    ));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("global batch 75 = 2 ranks × 37–38"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("epoch   3/3").count(), 1, "{stdout}");
    let output = run(&train_args(
        one.to_str().unwrap(),
        &["--partner-groups", "2"],
    ));
    assert!(output.status.success(), "{}", text(&output.stderr));

    let difference = largest_weight_difference(
        &two.join("model.safetensors"),
        &one.join("model.safetensors"),
    );
    assert!(difference < 1e-5, "weights differ by {difference}");
    let config = std::fs::read_to_string(two.join("config.json")).unwrap();
    assert!(config.contains("\"partner_groups\": 2") && config.contains("\"device\": \"cpu,cpu\""));
}

#[test]
fn two_devices_train_ict_as_one_device_even_where_a_device_holds_no_labelled_row() {
    // 101 labelled images in batches of 50: the last batch's one example is the first
    // device's, and the second adds only its share of the unlabelled consistency.
    let tmp = tempfile::tempdir().unwrap();
    let (two, one) = (tmp.path().join("two"), tmp.path().join("one"));
    let semi = [
        "--semi",
        "ict",
        "--unlabeled",
        "200",
        "--unlabeled-batch-size",
        "20",
        "--consistency",
        "10",
    ];
    let args = |out: &Path, extra: &[&str]| {
        let run = train_args(out.to_str().unwrap(), &[&semi[..], extra].concat());
        common::with_values(
            run.iter().map(|s| s.to_string()).collect(),
            &[("--train-subset", "101"), ("--batch-size", "50")],
        )
    };
    for (out, extra) in [
        (&two, ["--devices", "cpu,cpu"]),
        (&one, ["--partner-groups", "2"]),
    ] {
        let output = run(&common::as_strs(&args(out, &extra)));
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    for file in ["model.safetensors", "teacher.safetensors"] {
        let difference = largest_weight_difference(&two.join(file), &one.join(file));
        assert!(difference < 1e-5, "{file}: differs by {difference}");
    }
}

#[test]
fn a_two_device_run_killed_and_resumed_equals_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    let args = |out: &Path| common::resumable_run(out, &["--devices", "cpu,cpu"]);
    let whole_args = args(&whole);
    let output = run(&common::as_strs(&whole_args));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let killed_args = args(&killed);
    kill_after_first_epoch_and_resume(&common::as_strs(&killed_args), &killed);
    assert_same_outcome(&killed, &whole, "resumed against uninterrupted");
}

#[test]
fn bad_devices_stop_with_one_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        // A GPU this build or this machine does not have.
        (&["--devices", "cpu,cuda:7"], "--device cuda:7"),
        (
            &["--devices", "cpu,cpu", "--batch-size", "1"],
            "--batch-size (1) is smaller than --partner-groups (2, by default one per rank)",
        ),
        (
            &["--devices", "cpu,cpu", "--partner-groups", "3"],
            "--partner-groups 3 does not split over 2 ranks",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["train", "--model", "mlp", "--epochs", "1", "--out", out];
        args.extend_from_slice(extra);
        let output = run(&args);
        common::assert_one_line_error(&output, expected, &format!("{extra:?}"));
        assert!(!Path::new(out).exists(), "{extra:?} wrote {out}");
    }
}

#[test]
fn an_exploding_loss_stops_every_device_at_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nan");
    // The learning rate jumps to 1e10 at the second epoch.
    let args = common::small_run(
        &out,
        &[
            "--devices",
            "cpu,cpu",
            "--schedule",
            "step:1",
            "--lr-decay",
            "1e11",
        ],
    );
    let output = run(&common::as_strs(&args));
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the training loss became") && stderr.contains("epoch 2"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoint/latest")).unwrap(),
        "epoch-0001"
    );
}

/// On a machine with two CUDA GPUs and NCCL, the GPUs sum their gradients through NCCL and
/// train the model one GPU trains on the same partner groups. Elsewhere there is nothing to
/// run, and the test says so.
#[cfg(feature = "cuda")]
#[test]
fn two_gpus_sum_their_gradients_with_nccl_and_train_the_model_one_gpu_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, one) = (tmp.path().join("two"), tmp.path().join("one"));
    let output = run(&train_args(
        two.to_str().unwrap(),
        &["--devices", "cuda:0,cuda:1"],
    ));
    let stderr = text(&output.stderr);
    if !output.status.success() && stderr.contains("--device cuda") {
        eprintln!("skipped: two CUDA GPUs are needed ({})", stderr.trim());
        return;
    }
    if stderr.contains("NCCL") {
        eprintln!("skipped: NCCL is needed ({})", stderr.trim());
        return;
    }
    assert!(output.status.success(), "{stderr}");
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("global batch 75 = 2 ranks × 37–38, gradients summed on the GPUs (NCCL)"),
        "{stdout}"
    );
    let output = run(&train_args(
        one.to_str().unwrap(),
        &["--device", "cuda:0", "--partner-groups", "2"],
    ));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let difference = largest_weight_difference(
        &two.join("model.safetensors"),
        &one.join("model.safetensors"),
    );
    // GPU kernels sum in an order of their own: a looser bound than on the CPU.
    assert!(difference < 1e-4, "weights differ by {difference}");
}
