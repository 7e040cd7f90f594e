//! What a report rests on: the code and machine of every run, a design declared before its
//! runs and never edited after, hypotheses corrected for multiplicity, a swept option, and
//! evaluation every N epochs that still resumes exactly.

use std::path::Path;
use std::process::Stdio;

mod common;
use common::{
    as_strs, assert_one_line_error, assert_same_outcome, kill_after_first_epoch, mmix, run,
    snapshot, text,
};

/// A study of two arms on 100 embedded images, swept over two widths, two seeds, with its
/// hypotheses declared.
fn tiny_study(primary: &str, sweep: &str) -> String {
    format!(
        "title = \"tiny\"\nseeds = [1, 2]\nbaseline = \"none\"\n{primary}\n[train]\nmodel = \"small-cnn\"\nepochs = 1\ntrain-subset = 100\n{sweep}\n[[arm]]\nname = \"none\"\nmix = \"none\"\n[[arm]]\nname = \"manifold\"\nmix = \"manifold\"\n"
    )
}

const PRIMARY: &str = "primary = [{ arm = \"manifold\", metric = \"final test acc\", direction = \"higher\", at = [4] }, { arm = \"manifold\", metric = \"test NLL\", direction = \"lower\" }]";
const SWEEP: &str =
    "[sweep]\noption = \"width\"\nvalues = [2, 4]\nwith = { batch-size = [50, 25] }";

#[test]
fn a_swept_study_reports_its_declared_family_and_the_code_behind_its_runs() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("tiny.toml");
    std::fs::write(&file, tiny_study(PRIMARY, SWEEP)).unwrap();
    let output = run(&["study", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = root.path().join("tiny");
    assert!(
        out.join("runs/manifold/width-4/seed-2/config.json")
            .is_file()
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // Two hypotheses: one at width 4, one at both widths.
    assert!(
        md.contains("Pre-registered hypotheses (3 in the family"),
        "{md}"
    );
    assert!(md.contains("## Gain along the sweep"), "{md}");
    assert!(
        md.contains("## width = 2, batch-size = 50")
            && md.contains("## width = 4, batch-size = 25"),
        "{md}"
    );
    assert!(
        md.contains("## Provenance") && md.contains("revision `"),
        "{md}"
    );
    assert!(out.join("gain.png").is_file());
    let config = std::fs::read_to_string(out.join("runs/none/width-4/seed-1/config.json")).unwrap();
    assert!(config.contains("\"batch_size\": 25"), "{config}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["primary"].as_array().unwrap().len(), 3);
    let holm = json["primary"][0]["holm_p_value"].as_f64().unwrap();
    assert!(holm >= json["primary"][0]["p_value"].as_f64().unwrap());
    assert_eq!(json["provenance"]["runs"].as_array().unwrap().len(), 8);

    // The design may not change once its runs began; under a new name it may.
    std::fs::write(
        &file,
        tiny_study(PRIMARY, SWEEP).replace("epochs = 1", "epochs = 2"),
    )
    .unwrap();
    let before = snapshot(&out);
    let output = run(&["study", file.to_str().unwrap()]);
    assert_one_line_error(
        &output,
        "has changed since its runs began",
        "an edited study",
    );
    assert_eq!(snapshot(&out), before);
}

#[test]
fn a_config_json_names_the_code_that_made_the_run() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let output = run(&[
        "train",
        "--model",
        "small-cnn",
        "--width",
        "2",
        "--epochs",
        "1",
        "--train-subset",
        "100",
        "--batch-size",
        "50",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let provenance = &config["provenance"];
    let revision = provenance["revision"].as_str().unwrap();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| {
            o.status.success() && Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").exists()
        });
    match head {
        Some(head) => {
            let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
            assert_eq!(revision.trim_end_matches("+dirty"), head);
        }
        None => assert_eq!(revision, "unknown"),
    }
    assert!(provenance["threads"].as_u64().unwrap() >= 1);
    assert!(!provenance["cpu"].as_str().unwrap().is_empty());
    let convolutions = provenance["convolutions"].as_str().unwrap();
    assert!(
        convolutions.starts_with("onednn (") || convolutions.starts_with("own ("),
        "{convolutions}"
    );
    assert_eq!(provenance["precision"], "f32");
}

#[test]
fn evaluating_every_third_epoch_measures_epochs_3_6_and_7_and_resumes_exactly() {
    let root = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--model",
            "small-cnn",
            "--width",
            "4",
            "--epochs",
            "7",
            "--train-subset",
            "600",
            "--valid-split",
            "100",
            "--batch-size",
            "50",
            "--seed",
            "3",
            "--eval-every",
            "3",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    };
    let reference = root.path().join("reference");
    let output = run(&as_strs(&args(&reference)));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let metrics = std::fs::read_to_string(reference.join("metrics.csv")).unwrap();
    let evaluated: Vec<&str> = metrics
        .lines()
        .skip(1)
        .filter(|row| !row.split(',').nth(7).unwrap().is_empty())
        .map(|row| row.split(',').next().unwrap())
        .collect();
    assert_eq!(evaluated, ["3", "6", "7"], "{metrics}");
    // Validation follows the test split's schedule.
    let validated = metrics
        .lines()
        .skip(1)
        .filter(|row| !row.split(',').nth(4).unwrap().is_empty());
    assert_eq!(validated.count(), 3);

    // With a validation split, a temperature is fitted on it and the test split measured at it.
    let evaluation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.join("evaluation.json")).unwrap())
            .unwrap();
    let scaled = &evaluation["temperature_scaled"];
    assert!(
        scaled["temperature"].as_f64().unwrap() > 0.0,
        "{evaluation}"
    );
    assert!(
        scaled["valid_nll_after"].as_f64().unwrap()
            <= scaled["valid_nll_before"].as_f64().unwrap() + 1e-9
    );
    let compare = run(&[
        "compare",
        reference.to_str().unwrap(),
        "--plot",
        root.path().join("c.png").to_str().unwrap(),
    ]);
    assert!(
        text(&compare.stdout).contains("test ECE at fitted T (%)"),
        "{}",
        text(&compare.stdout)
    );

    // Evaluation draws nothing from the run's stream and changes no weight: measuring every
    // epoch ends in the same weights.
    let every_epoch = root.path().join("every-epoch");
    let mut every = args(&every_epoch);
    let at = every.iter().position(|a| a == "--eval-every").unwrap();
    every[at + 1] = "1".into();
    let output = run(&as_strs(&every));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        std::fs::read(every_epoch.join("model.safetensors")).unwrap()
            == std::fs::read(reference.join("model.safetensors")).unwrap(),
        "evaluating every epoch changed the weights"
    );

    let killed = root.path().join("killed");
    let child = mmix()
        .args(args(&killed))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    kill_after_first_epoch(child, &killed);
    let resumed = run(&["train", "--resume", killed.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_same_outcome(&killed, &reference, "--eval-every 3, killed after epoch 1");
}

#[test]
fn bad_hypotheses_sweeps_and_schedules_are_one_line_and_write_nothing() {
    let root = tempfile::tempdir().unwrap();
    let cases = [
        (
            tiny_study(
                &PRIMARY.replace(
                    "arm = \"manifold\", metric = \"final",
                    "arm = \"cutmix\", metric = \"final",
                ),
                SWEEP,
            ),
            "names the arm 'cutmix'",
        ),
        (
            tiny_study(&PRIMARY.replace("test NLL", "test F1"), SWEEP),
            "names the metric 'test F1'",
        ),
        (
            tiny_study(PRIMARY, &SWEEP.replace("\"width\"", "\"depth\"")),
            "unknown field `depth`",
        ),
        (
            tiny_study(PRIMARY, &SWEEP.replace("[2, 4]", "[2, 8]")),
            "`at` lists 4",
        ),
        (
            tiny_study(PRIMARY, ""),
            "sets `at`, but the study sweeps nothing",
        ),
        (
            tiny_study(PRIMARY, &SWEEP.replace("[50, 25]", "[50]")),
            "must list one value per swept value (2)",
        ),
        (
            tiny_study(&PRIMARY.replace("at = [4]", "at = []"), SWEEP),
            "sets `at = []`, which declares it nowhere",
        ),
        (
            // The same comparison in the other direction: twice in the family.
            tiny_study(
                &PRIMARY.replace(
                    "direction = \"lower\" }]",
                    "direction = \"lower\" }, { arm = \"manifold\", metric = \"Final Test Acc\", direction = \"lower\", at = [4, 2] }]",
                ),
                SWEEP,
            ),
            "primary hypothesis 1 already does",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = root.path().join(format!("case-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let output = run(&["study", file.to_str().unwrap()]);
        assert_one_line_error(&output, expected, &format!("case {i}"));
        assert!(
            !root.path().join(format!("case-{i}")).exists(),
            "case {i} wrote its folder"
        );
    }
    let out = root.path().join("run");
    let output = run(&["train", "--eval-every", "0", "--out", out.to_str().unwrap()]);
    assert_one_line_error(&output, "--eval-every must be at least 1", "--eval-every 0");
    assert!(!out.exists());
}
