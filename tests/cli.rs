//! The `mmix` binary driven as a user drives it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{
    as_strs, assert_one_line_error, kill_after_first_epoch_and_resume, metrics_without_timing,
    mmix, one_line_error_problem, run, small_run, text, wait_for,
};

#[test]
fn two_epoch_runs_write_every_output_for_each_mix_mode() {
    let root = tempfile::tempdir().unwrap();
    for mix in ["none", "input", "manifold"] {
        let out = root.path().join(mix);
        let output = run(&as_strs(&small_run(&out, &["--mix", mix])));
        assert!(output.status.success(), "{mix}: {}", text(&output.stderr));
        let stdout = text(&output.stdout);
        assert!(
            stdout.contains("epoch   2/2") && stdout.contains("final: test_acc"),
            "{stdout}"
        );
        // The start line says how the convolutions run.
        let route = match std::env::var("MMIX_ONEDNN").as_deref() {
            Ok("off") => ", convolutions on mmix's own kernels (",
            _ if cfg!(mmix_onednn) => ", convolutions on oneDNN (",
            _ => ", convolutions on mmix's own kernels (",
        };
        assert!(stdout.lines().next().unwrap().contains(route), "{stdout}");

        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["train"]["mix"], mix);
        assert_eq!(config["dataset"]["train_examples"], 600);
        assert_eq!(
            config["dataset"]["normalization"]["mean"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert!(config["crate_version"].is_string());

        let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "{csv}");
        assert!(lines[0].starts_with("epoch,lr,train_loss,train_acc,valid_acc"));
        for row in &lines[1..] {
            let fields: Vec<&str> = row.split(',').collect();
            assert_eq!(fields.len(), 12, "{row}");
            assert!(
                fields
                    .iter()
                    .all(|f| f.parse::<f64>().is_ok_and(f64::is_finite)),
                "{row}"
            );
        }

        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        for key in [
            "model",
            "dataset",
            "mix",
            "alpha",
            "seed",
            "epochs",
            "train_seconds",
            "train_images_per_second",
        ] {
            assert!(!summary[key].is_null(), "summary.json lacks {key}");
        }
        let test_acc = summary["final"]["test_acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&test_acc));
        let best = &summary["best_valid"];
        assert!(
            best["epoch"].as_u64().unwrap() >= 1
                && best["valid_acc"].is_f64()
                && best["test_acc"].is_f64()
        );

        let png = std::fs::read(out.join("curves.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let weights = std::fs::read(out.join("model.safetensors")).unwrap();
        let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&weights[8..8 + header_len]).unwrap();
        assert!(
            header.contains("\"block1.conv.weight\"") && header.contains("\"linear.weight\""),
            "{header}"
        );
        let log = std::fs::read_to_string(out.join("train.log")).unwrap();
        assert!(log.contains("epoch   2/2"));
        let latest = std::fs::read_to_string(out.join("checkpoint/latest")).unwrap();
        assert_eq!(latest, "epoch-0002");
        for file in ["model.bpk", "optimizer.bpk", "state.json"] {
            assert!(out.join("checkpoint/epoch-0002").join(file).is_file());
        }

        let eval = run(&["eval", out.to_str().unwrap()]);
        assert!(eval.status.success(), "{}", text(&eval.stderr));
        let metrics: serde_json::Value = serde_json::from_str(&text(&eval.stdout)).unwrap();
        assert!((metrics["accuracy"].as_f64().unwrap() - test_acc).abs() < 1e-9);
    }
    let plot = root.path().join("compare.png");
    let compare = run(&[
        "compare",
        root.path().join("none").to_str().unwrap(),
        root.path().join("manifold").to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(compare.status.success(), "{}", text(&compare.stderr));
    let table = text(&compare.stdout);
    assert!(
        table.contains("| small-cnn | none |") && table.contains("| small-cnn | manifold | 2 |"),
        "{table}"
    );
    assert!(plot.is_file());
}

/// Sends SIGINT, as Ctrl-C in a terminal does.
fn interrupt(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn resumable_args(out: &Path) -> Vec<String> {
    let mut args = small_run(out, &[]);
    for (flag, value) in [("--epochs", "3"), ("--train-subset", "1500")] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.into();
    }
    args
}

fn reference_run(root: &Path) -> PathBuf {
    let reference = root.join("reference");
    let output = run(&as_strs(&resumable_args(&reference)));
    assert!(output.status.success(), "{}", text(&output.stderr));
    reference
}

#[test]
fn sigkill_then_resume_gives_the_uninterrupted_metrics() {
    let root = tempfile::tempdir().unwrap();
    let reference = reference_run(root.path());
    let killed = root.path().join("killed");
    kill_after_first_epoch_and_resume(&as_strs(&resumable_args(&killed)), &killed);
    assert_eq!(
        metrics_without_timing(&killed),
        metrics_without_timing(&reference)
    );

    // A damaged checkpoint is named in one line, and the run's files stay as they were.
    let latest = std::fs::read_to_string(killed.join("checkpoint/latest")).unwrap();
    let weights = killed
        .join("checkpoint")
        .join(latest.trim())
        .join("model.bpk");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..100]).unwrap();
    let metrics = std::fs::read_to_string(killed.join("metrics.csv")).unwrap();
    for args in [
        vec!["train", "--resume", killed.to_str().unwrap()],
        vec!["eval", killed.to_str().unwrap()],
    ] {
        let output = run(&args);
        assert_one_line_error(
            &output,
            "model.bpk: damaged or unreadable",
            &format!("{args:?}"),
        );
    }
    assert_eq!(
        std::fs::read_to_string(killed.join("metrics.csv")).unwrap(),
        metrics
    );
}

#[test]
fn sigint_checkpoints_mid_epoch_exits_130_and_resumes_exactly() {
    let root = tempfile::tempdir().unwrap();
    let reference = reference_run(root.path());
    let stopped = root.path().join("stopped");
    let child = mmix()
        .args(as_strs(&resumable_args(&stopped)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run is training (its config is written), then interrupt it.
    wait_for(
        &stopped.join("config.json"),
        |_| true,
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("--resume"));
    assert!(stopped.join("checkpoint/latest").is_file());
    let resumed = run(&["train", "--resume", stopped.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(
        metrics_without_timing(&stopped),
        metrics_without_timing(&reference)
    );
}

#[test]
fn exploding_loss_stops_with_a_message_and_keeps_the_last_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("nan");
    // The learning rate jumps to 1e10 at the second epoch.
    let output = run(&as_strs(&small_run(
        &out,
        &["--schedule", "step:1", "--lr-decay", "1e11", "--lr", "0.1"],
    )));
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the training loss became") && stderr.contains("epoch 2"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoint/latest")).unwrap(),
        "epoch-0001"
    );
}

/// Every bad flag or file: non-zero exit, one line on stderr naming the problem, no panic.
#[test]
fn bad_input_gives_one_clear_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let bad_idx = dir.join("bad-idx");
    std::fs::create_dir_all(&bad_idx).unwrap();
    std::fs::write(
        bad_idx.join("train-images-idx3-ubyte"),
        b"\x00\x00\x08\x03garbage",
    )
    .unwrap();
    std::fs::write(
        bad_idx.join("train-labels-idx1-ubyte"),
        b"\x00\x00\x08\x01\x00\x00\x00\x01\x00",
    )
    .unwrap();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "learning-rate = 0.1\n").unwrap();
    let existing = dir.join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::write(existing.join("config.json"), "{}").unwrap();
    let out = dir.join("out").display().to_string();
    let lopsided = dir.join("lopsided");
    for (split, class) in [("train", "cat"), ("train", "dog"), ("test", "cat")] {
        let folder = lopsided.join(split).join(class);
        std::fs::create_dir_all(&folder).unwrap();
        image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]))
            .save(folder.join("0.png"))
            .unwrap();
    }
    let folder_run = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["train", "--dataset", "folder", "--data-dir"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(lopsided.display().to_string());
        args.extend(["--out".to_string(), out.clone()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    // What resolution alone refuses is unit tested case by case (src/train/options.rs); the
    // cases here need the binary: its flag names, files, folders, data and parsing.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            folder_run(&["--image-size", "0"]),
            "--image-size must be at least 1",
        ),
        (folder_run(&[]), "no folder for class 'dog'"),
        (
            vec!["train".into(), "--cifar100-coarse".into()],
            "--cifar100-coarse applies to --dataset cifar100",
        ),
        (
            vec!["train".into(), "--model".into(), "vgg16".into()],
            "unknown model 'vgg16'",
        ),
        (
            vec!["train".into(), "--dataset".into(), "imagenet".into()],
            "unknown dataset 'imagenet'",
        ),
        (
            vec!["train".into(), "--epochs".into(), "0".into()],
            "--epochs must be at least 1",
        ),
        (
            vec!["train".into(), "--alpha".into(), "-1".into()],
            "alpha must be a finite number ≥ 0",
        ),
        (
            vec!["train".into(), "--schedule".into(), "linear".into()],
            "--schedule 'linear' is not a schedule",
        ),
        (
            vec![
                "train".into(),
                "--valid-split".into(),
                "6000".into(),
                "--out".into(),
                out.clone(),
            ],
            "--valid-split 6000 leaves no training data",
        ),
        (
            vec![
                "train".into(),
                "--dataset".into(),
                "cifar10".into(),
                "--data-dir".into(),
                "/nonexistent/cifar".into(),
            ],
            "/nonexistent/cifar",
        ),
        (
            vec![
                "train".into(),
                "--dataset".into(),
                "mnist".into(),
                "--data-dir".into(),
                bad_idx.display().to_string(),
                "--out".into(),
                out.clone(),
            ],
            "truncated",
        ),
        (
            vec![
                "train".into(),
                "--config".into(),
                bad_toml.display().to_string(),
            ],
            "unknown field `learning-rate`",
        ),
        (
            vec![
                "train".into(),
                "--config".into(),
                "/nonexistent.toml".into(),
            ],
            "cannot read --config /nonexistent.toml",
        ),
        (
            vec![
                "train".into(),
                "--out".into(),
                existing.display().to_string(),
            ],
            "already holds a run",
        ),
        (
            vec![
                "train".into(),
                "--resume".into(),
                dir.join("nothing").display().to_string(),
            ],
            "is not an mmix run folder",
        ),
        (
            vec![
                "train".into(),
                "--resume".into(),
                existing.display().to_string(),
                "--lr".into(),
                "0.5".into(),
            ],
            "only --device may be given",
        ),
        (
            vec!["train".into(), "--device".into(), "tpu".into()],
            "invalid value 'tpu' for '--device",
        ),
        (
            vec!["eval".into(), dir.display().to_string()],
            "is not an mmix run folder",
        ),
        (
            vec!["compare".into(), dir.display().to_string()],
            "config.json",
        ),
        (
            vec![
                "data".into(),
                "inspect".into(),
                "--dataset".into(),
                "mnist".into(),
                "--data-dir".into(),
                bad_idx.display().to_string(),
            ],
            "train-images-idx3-ubyte",
        ),
        (
            vec!["bench".into(), "--model".into(), "nope".into()],
            "unknown model 'nope'",
        ),
        (
            vec![
                "bench".into(),
                "--semi".into(),
                "ict".into(),
                "--semi-mix".into(),
                "cutmix".into(),
            ],
            "--semi-mix must be input or manifold, not cutmix",
        ),
        (
            vec![
                "bench".into(),
                "--semi".into(),
                "ict".into(),
                "--unlabeled-batch-size".into(),
                "0".into(),
            ],
            "--unlabeled-batch-size must be at least 1",
        ),
        (
            vec!["train".into(), "--epochs".into(), "many".into()],
            "invalid value 'many' for '--epochs",
        ),
        (
            vec!["train".into(), "--mix".into(), "blend".into()],
            "invalid value 'blend' for '--mix",
        ),
        (
            vec!["frobnicate".into()],
            "unrecognized subcommand 'frobnicate'",
        ),
        (
            vec!["train".into(), "--attack".into(), "cw:0.1".into()],
            "bad attack 'cw:0.1'",
        ),
        (
            vec!["train".into(), "--attack".into(), "fgsm:-0.1".into()],
            "ε must be a finite number ≥ 0",
        ),
        (
            vec![
                "eval".into(),
                existing.display().to_string(),
                "--attack".into(),
                "pgd:0.1".into(),
            ],
            "bad attack 'pgd:0.1'",
        ),
        (
            vec!["train".into(), "--deform".into(), "spin:10".into()],
            "bad deformation 'spin:10'",
        ),
        (
            vec![
                "study".into(),
                dir.join("missing.toml").display().to_string(),
            ],
            "cannot read study file",
        ),
    ];
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|(args, expected)| {
            let output = run(&as_strs(args));
            one_line_error_problem(&output, expected, &format!("{args:?}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Study files that cannot run: each is refused in one line before anything is written.
    let studies = [
        (
            "empty-seeds",
            "seeds = []\n[[arm]]\nname = \"a\"\n",
            "the grid is empty",
        ),
        ("no-arms", "seeds = [1]\n", "the grid is empty"),
        (
            "unknown-flag",
            "seeds = [1]\n[[arm]]\nname = \"a\"\nlearnrate = 0.1\n",
            "arm 'a': unknown field `learnrate`",
        ),
        (
            "seed-in-arm",
            "seeds = [1]\n[[arm]]\nname = \"a\"\nseed = 3\n",
            "may not set `seed`",
        ),
        (
            "bad-attack",
            "seeds = [1]\n[evaluate]\nattacks = [\"fgsm\"]\n[[arm]]\nname = \"a\"\n",
            "bad attack 'fgsm'",
        ),
        (
            "flat-patchup",
            "seeds = [1]\n[[arm]]\nname = \"a\"\n[[arm]]\nname = \"b\"\nmodel = \"mlp\"\nmix = \"patchup\"\nmix-layers = [2]\n",
            "arm 'b': patchup cuts regions from a feature map, but mix point 2",
        ),
        (
            "bad-baseline",
            "seeds = [1]\nbaseline = \"b\"\n[[arm]]\nname = \"a\"\n",
            "baseline 'b' is not an arm's name",
        ),
    ];
    let mut problems = Vec::new();
    for (name, body, expected) in studies {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, body).unwrap();
        let output = run(&["study", file.to_str().unwrap()]);
        problems.extend(one_line_error_problem(&output, expected, name));
        if dir.join(name).exists() {
            problems.push(format!("{name}: the study left a folder"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // bf16 convolutions need oneDNN or the own kernels, which these turn off.
    let output = mmix()
        .env("MMIX_ONEDNN", "off")
        .env("MMIX_OWN_CONV", "off")
        .args(["train", "--precision", "bf16", "--out", &out])
        .output()
        .unwrap();
    assert_one_line_error(
        &output,
        "--precision bf16 needs the convolutions on oneDNN or on mmix's own kernels",
        "bf16 on Burn's convolutions",
    );
    assert!(
        !dir.join("out").join("config.json").exists(),
        "no run folder is left by a failed start"
    );
    assert_eq!(
        std::fs::read_to_string(existing.join("config.json")).unwrap(),
        "{}"
    );
}

#[test]
fn data_inspect_and_models_describe_what_the_model_sees() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("inspect");
    let output = run(&[
        "data",
        "inspect",
        "--augment",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("| 9 | ankle boot | 600 | 100 |"),
        "{stdout}"
    );
    assert!(stdout.contains("1 × 28 × 28"));
    assert_eq!(
        &std::fs::read(out.join("samples.png")).unwrap()[..4],
        b"\x89PNG"
    );
    let models = text(&run(&["models"]).stdout);
    assert!(
        models.contains("| resnet50 | 0 input, 1 after stem and pool"),
        "{models}"
    );
}

#[test]
fn config_file_is_read_and_flags_win() {
    let root = tempfile::tempdir().unwrap();
    let toml = root.path().join("run.toml");
    std::fs::write(&toml, "mix = \"input\"\nalpha = 0.4\nepochs = 1\nwidth = 4\nmodel = \"small-cnn\"\ntrain-subset = 200\nbatch-size = 50\n").unwrap();
    let out = root.path().join("run");
    let output = run(&[
        "train",
        "--config",
        toml.to_str().unwrap(),
        "--alpha",
        "0.3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["train"]["mix"], "input");
    assert_eq!(config["train"]["alpha"], 0.3);
    assert_eq!(config["train"]["epochs"], 1);
}

#[test]
fn a_run_measures_attacks_deformations_calibration_and_spectrum_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let extra = [
        "--attack",
        "fgsm:0.1",
        "--deform",
        "rotate:20",
        "--spectrum-at",
        "2",
        "--attack-examples",
        "200",
    ];
    let output = run(&as_strs(&small_run(&out, &extra)));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("evaluation of epoch 2"),
        "{}",
        text(&output.stdout)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let evaluation = &summary["evaluation"];
    let clean = evaluation["clean"]["accuracy"].as_f64().unwrap();
    assert_eq!(summary["final"]["test_acc"].as_f64().unwrap(), clean);
    assert_eq!(evaluation["attacks"][0]["attack"], "fgsm:0.1");
    assert_eq!(evaluation["attacks"][0]["examples"], 200);
    assert_eq!(
        evaluation["deformations"][0]["description"],
        "rotation U(−20°, 20°)"
    );
    assert_eq!(evaluation["spectrum"]["point"], 2);
    assert_eq!(evaluation["reliability"].as_array().unwrap().len(), 15);
    for file in ["evaluation.json", "reliability.png", "spectrum.png"] {
        assert!(out.join(file).is_file(), "{file} is missing");
    }

    // `mmix eval` measures what it is asked on the same weights and records it with the run.
    let output = run(&["eval", out.to_str().unwrap(), "--attack", "pgd:0.1:3"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed: serde_json::Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
    assert_eq!(printed["accuracy"].as_f64().unwrap(), clean);
    let attacked = &printed["evaluation"]["attacks"][0];
    assert_eq!(attacked["attack"], "pgd:0.1:3");
    assert!(attacked["accuracy"].as_f64().unwrap() <= clean);
    let output = run(&[
        "compare",
        out.to_str().unwrap(),
        "--plot",
        root.path().join("c.png").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("pgd:0.1:3 acc (%)"),
        "{}",
        text(&output.stdout)
    );
    assert!(root.path().join("c-reliability.png").is_file());
}

const TINY_STUDY: &str = r#"
title = "tiny"
seeds = [1, 2]

[train]
model = "small-cnn"
width = 4
epochs = 2
train-subset = 300
valid-split = 100
batch-size = 50

[evaluate]
attacks = ["fgsm:0.05", "pgd:0.05:2"]
attack-examples = 100
deformations = ["rotate:10"]
spectrum-at = 2
spectrum-examples = 20

[[arm]]
name = "none"
mix = "none"

[[arm]]
name = "manifold"
mix = "manifold"
alpha = 2.0
"#;

/// `report.md` up to its wall times, which no two studies share, without the command that
/// wrote it (which names the study's folder).
fn report_without_times(dir: &Path) -> String {
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let report = report.split("## Wall times").next().unwrap();
    report
        .lines()
        .filter(|line| !line.starts_with("Report written by"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_study_killed_and_restarted_reports_like_an_uninterrupted_one() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("tiny.toml");
    std::fs::write(&file, TINY_STUDY).unwrap();
    let reference = root.path().join("reference");
    let output = run(&[
        "study",
        file.to_str().unwrap(),
        "--out",
        reference.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = report_without_times(&reference);
    assert!(report.contains("| fgsm:0.05 acc (%) |"), "{report}");
    assert!(report.contains("manifold − none"), "{report}");

    // Killed inside the second run, then again during an evaluation or a later run.
    let killed = root.path().join("killed");
    let study = [
        "study",
        file.to_str().unwrap(),
        "--out",
        killed.to_str().unwrap(),
    ];
    for marker in [
        "runs/manifold/seed-1/checkpoint/latest",
        "runs/none/seed-2/config.json",
    ] {
        let mut child = mmix().args(study).stdout(Stdio::null()).spawn().unwrap();
        wait_for(&killed.join(marker), |_| true, Duration::from_secs(120));
        child.kill().unwrap();
        child.wait().unwrap();
        if marker.contains("manifold") {
            // What has finished can be reported on meanwhile, without training anything.
            let mut partial = study.to_vec();
            partial.push("--report-only");
            let output = run(&partial);
            assert!(output.status.success(), "{}", text(&output.stderr));
            let report = std::fs::read_to_string(killed.join("report.md")).unwrap();
            assert!(
                report.contains("(partial: 1 of 4 runs finished)"),
                "{report}"
            );
            assert!(!killed.join("runs/manifold/seed-1/evaluation.json").exists());
        }
    }
    let output = run(&study);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("done already"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(report_without_times(&killed), report);
    // Every figure the same; only the provenance names the folders and the command.
    let figures = |dir: &Path| {
        let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json.as_object_mut().unwrap().remove("provenance");
        json
    };
    assert_eq!(figures(&killed), figures(&reference));
}

#[test]
fn every_train_flag_has_a_help_line_and_unmixed_runs_name_no_alpha() {
    let output = run(&["train", "--help"]);
    let help = text(&output.stdout);
    let lines: Vec<&str> = help.lines().collect();
    let mut flags = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("--") && !line.contains("--help") {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            assert!(!next.is_empty(), "{line} has no help line");
            flags += 1;
        }
    }
    assert!(flags >= 30, "only {flags} flags in:\n{help}");

    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("none");
    let mut args = small_run(&out, &["--mix", "none"]);
    let at = args.iter().position(|a| a == "--epochs").unwrap();
    args[at + 1] = "1".into();
    let output = run(&as_strs(&args));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let start = text(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        start.contains("no mixing") && !start.contains('α'),
        "{start}"
    );
}

#[test]
fn cifar100_coarse_flag_trains_on_the_20_superclasses() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("cifar100");
    std::fs::create_dir_all(&data).unwrap();
    let records = |count: usize| -> Vec<u8> {
        (0..count)
            .flat_map(|i| {
                let mut record = vec![(i % 20) as u8, (i * 7 % 100) as u8];
                record.extend(std::iter::repeat_n(i as u8, 3072));
                record
            })
            .collect()
    };
    std::fs::write(data.join("train.bin"), records(40)).unwrap();
    std::fs::write(data.join("test.bin"), records(20)).unwrap();
    let out = root.path().join("run");
    let output = run(&[
        "train",
        "--dataset",
        "cifar100",
        "--data-dir",
        data.to_str().unwrap(),
        "--cifar100-coarse",
        "--model",
        "mlp",
        "--width",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "20",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["train"]["cifar100_coarse"], true);
    assert_eq!(config["dataset"]["classes"].as_array().unwrap().len(), 20);
}

/// The demo trains twice in one process: Ctrl-C in the second run checkpoints it too.
#[test]
fn ctrl_c_in_the_demos_second_run_checkpoints_it() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("demo");
    let child = mmix()
        .args(["demo", "--epochs", "3", "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = out.join("manifold-a2");
    wait_for(
        &second.join("config.json"),
        |_| true,
        Duration::from_secs(240),
    );
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    assert!(
        second.join("checkpoint/latest").is_file(),
        "{}",
        text(&output.stderr)
    );
    let resumed = run(&["train", "--resume", second.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
}

/// One step per epoch: the step that breaks the model is the epoch's last, after the loss
/// checked before it was finite. Nothing of that epoch may be saved.
#[test]
fn a_model_broken_by_an_epochs_last_step_is_never_checkpointed() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("last-step");
    let args = [
        "train",
        "--model",
        "small-cnn",
        "--width",
        "8",
        "--train-subset",
        "50",
        "--batch-size",
        "50",
        "--epochs",
        "2",
        "--schedule",
        "step:1",
        "--lr-decay",
        "1e31",
        "--out",
        out.to_str().unwrap(),
    ];
    let output = run(&args);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("became non-finite at epoch 2") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoint/latest")).unwrap(),
        "epoch-0001"
    );
    assert_eq!(
        metrics_without_timing(&out).len(),
        2,
        "a header and epoch 1"
    );
    let plot = root.path().join("compare.png");
    for args in [
        vec![
            "compare",
            out.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
        vec!["eval", out.to_str().unwrap()],
    ] {
        let output = run(&args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

/// A run killed on one thread and resumed on eight ends with the weights, byte for byte,
/// of an uninterrupted run on eight: no reduction's order depends on the thread count.
#[test]
fn resume_on_another_thread_count_is_bit_exact() {
    let root = tempfile::tempdir().unwrap();
    let reference = root.path().join("eight-threads");
    let output = mmix()
        .env("RAYON_NUM_THREADS", "8")
        .args(as_strs(&small_run(&reference, &[])))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let moved = root.path().join("one-then-eight");
    let mut child = mmix()
        .env("RAYON_NUM_THREADS", "1")
        .args(as_strs(&small_run(&moved, &[])))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        &moved.join("checkpoint/latest"),
        |s| s == "epoch-0001",
        Duration::from_secs(120),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = mmix()
        .env("RAYON_NUM_THREADS", "8")
        .args(["train", "--resume", moved.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(
        metrics_without_timing(&moved),
        metrics_without_timing(&reference)
    );
    assert!(
        std::fs::read(moved.join("model.safetensors")).unwrap()
            == std::fs::read(reference.join("model.safetensors")).unwrap(),
        "the weight files differ"
    );
}

#[test]
fn resume_refuses_a_config_json_edited_since_the_run_trained() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let done = run(&as_strs(&small_run(&out, &[])));
    assert!(done.status.success(), "{}", text(&done.stderr));
    let path = out.join("config.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let resume = || run(&["train", "--resume", out.to_str().unwrap()]);
    // Another seed would continue on another subset while config.json claimed the new one.
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    edited["train"]["seed"] = serde_json::json!(6);
    std::fs::write(&path, edited.to_string()).unwrap();
    assert_one_line_error(&resume(), "(seed differs)", "a resume under another seed");
    let mut unknown: serde_json::Value = serde_json::from_str(&original).unwrap();
    unknown["train"]["sede"] = serde_json::json!(5);
    std::fs::write(&path, unknown.to_string()).unwrap();
    assert_one_line_error(&resume(), "unknown field `sede`", "an unknown key");
    // As it was, the run resumes (finished: it evaluates again).
    std::fs::write(&path, &original).unwrap();
    let again = resume();
    assert!(again.status.success(), "{}", text(&again.stderr));
}

#[test]
fn a_second_process_on_a_run_or_a_study_is_refused_and_the_first_finishes_unharmed() {
    let root = tempfile::tempdir().unwrap();
    // Long enough (a few seconds) that the second process starts while the first trains.
    let args = |out: &Path| {
        let mut args = small_run(out, &[]);
        for (flag, value) in [("--epochs", "8"), ("--train-subset", "3000")] {
            let at = args.iter().position(|a| a == flag).unwrap();
            args[at + 1] = value.into();
        }
        args
    };
    let alone = root.path().join("alone");
    let output = run(&as_strs(&args(&alone)));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let busy = root.path().join("busy");
    let first = mmix()
        .args(as_strs(&args(&busy)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&busy.join("config.json"), |_| true, Duration::from_secs(60));
    let dir = busy.to_str().unwrap();
    for second in [
        vec!["train", "--resume", dir],
        vec!["eval", dir],
        as_strs(&small_run(&busy, &[])),
    ] {
        let refused = run(&second);
        let expected = match second[1] {
            "--model" => "already holds a run",
            _ => "is in use by another mmix process (PID",
        };
        assert_one_line_error(&refused, expected, &second.join(" "));
    }
    let output = first.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        metrics_without_timing(&busy),
        metrics_without_timing(&alone)
    );
    // No line twice (the folders' names differ, so the lines are counted, not compared).
    let lines = |dir: &Path| {
        std::fs::read_to_string(dir.join("train.log"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines(&busy), lines(&alone));
    assert_eq!(
        std::fs::read(busy.join("model.safetensors")).unwrap(),
        std::fs::read(alone.join("model.safetensors")).unwrap()
    );

    let file = root.path().join("tiny.toml");
    std::fs::write(&file, TINY_STUDY).unwrap();
    let out = root.path().join("study");
    let study = [
        "study",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let mut first = mmix().args(study).stdout(Stdio::null()).spawn().unwrap();
    wait_for(
        &out.join("runs/none/seed-1/config.json"),
        |_| true,
        Duration::from_secs(120),
    );
    assert_one_line_error(
        &run(&study),
        "is in use by another mmix process (PID",
        "a second process on the study",
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn the_memory_estimate_bounds_the_measured_peak_from_above() {
    for args in [
        &[
            "--model",
            "preactresnet18",
            "--width",
            "16",
            "--batch-size",
            "32",
        ][..],
        &[
            "--model",
            "small-cnn",
            "--channels",
            "1",
            "--image-size",
            "28",
        ],
        &[
            "--model",
            "resnet50",
            "--width",
            "16",
            "--batch-size",
            "4",
            "--image-size",
            "64",
        ],
        &[
            "--model",
            "wrn-16-2",
            "--batch-size",
            "16",
            "--mix-loss",
            "regmixup",
        ],
        &[
            "--model",
            "preactresnet18",
            "--width",
            "8",
            "--batch-size",
            "2",
            "--image-size",
            "256",
        ],
    ] {
        let mut command = vec!["bench", "--steps", "1", "--warmup", "1"];
        command.extend_from_slice(args);
        let output = run(&command);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        let stdout = text(&output.stdout);
        let result: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let (peak, estimate) = (
            result["peak_rss_mb"].as_f64().unwrap(),
            result["estimated_peak_mb"].as_f64().unwrap(),
        );
        assert!(
            peak > 0.0 && estimate >= peak,
            "{args:?}: peak {peak} MB, estimate {estimate} MB"
        );
    }
    // What a bound from below let through, to reach 20 GB before it was killed.
    let refused = run(&[
        "bench",
        "--model",
        "wrn-28-10",
        "--batch-size",
        "8",
        "--image-size",
        "4096",
        "--steps",
        "1",
    ]);
    assert_one_line_error(
        &refused,
        "of memory (an estimate from above)",
        "a 4096-pixel wrn-28-10",
    );
}

#[test]
fn compare_counts_a_copied_run_once_and_names_weights_that_are_not_a_file() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let done = run(&as_strs(&small_run(&out, &[])));
    assert!(done.status.success(), "{}", text(&done.stderr));
    let copy = root.path().join("copy");
    let copied = Command::new("cp")
        .args(["-r", out.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copied.success());
    let plot = root.path().join("c.png");
    let compare = |dirs: &[&Path]| {
        let mut args = vec!["compare"];
        args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
        args.extend(["--plot", plot.to_str().unwrap()]);
        run(&args)
    };
    assert_one_line_error(&compare(&[&out, &copy]), "each run counts once", "a copy");
    let weights = copy.join("checkpoint/epoch-0002/model.bpk");
    std::fs::remove_file(&weights).unwrap();
    let made = Command::new("mkfifo").arg(&weights).status().unwrap();
    assert!(made.success());
    assert_one_line_error(&compare(&[&copy]), "model.bpk", "a FIFO for weights");
}

#[test]
fn an_interrupt_during_the_final_evaluation_stops_it_and_keeps_the_trained_run() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    // A final evaluation of minutes: a thousand PGD steps over the test split.
    let mut args = small_run(&out, &["--attack", "pgd:0.1:1000"]);
    let at = args.iter().position(|a| a == "--epochs").unwrap();
    args[at + 1] = "1".into();
    let child = mmix()
        .args(as_strs(&args))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The epoch's reports are written before the final evaluation begins.
    wait_for(&out.join("summary.json"), |_| true, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let interrupted = std::time::Instant::now();
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert!(
        interrupted.elapsed() < Duration::from_secs(20),
        "{:?} after the interrupt",
        interrupted.elapsed()
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("mmix eval"), "{stderr}");
    assert!(!out.join("evaluation.json").exists());
    assert!(out.join("checkpoint/epoch-0001").is_dir());
}
