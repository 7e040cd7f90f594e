//! Semi-supervised training (Interpolation Consistency Training), driven through the `mmix`
//! binary: what it leaves unchanged, exact resume with its teacher and unlabelled stream, and
//! bad input.

mod common;
use common::{
    as_strs, assert_same_outcome, kill_after_first_epoch_and_resume, resumable_run, run, small_run,
    text, with_values,
};

#[test]
fn ict_of_consistency_zero_trains_the_supervised_runs_weights_bit_for_bit() {
    // The unlabelled stream draws from its own random stream, so the labelled batches, their
    // augmentation and mixes are the supervised run's; the MLP has no batch norm, whose
    // running statistics would also see the unlabelled images.
    let root = tempfile::tempdir().unwrap();
    let supervised = root.path().join("supervised");
    let weightless = root.path().join("weightless");
    let ict = ["--semi", "ict", "--unlabeled", "400", "--consistency", "0"];
    for (out, extra) in [(&supervised, &[][..]), (&weightless, &ict[..])] {
        let args = with_values(small_run(out, extra), &[("--model", "mlp")]);
        let output = run(&as_strs(&args));
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    assert_same_outcome(
        &weightless,
        &supervised,
        "ICT of weight 0 against supervised",
    );
    // A weight that is not zero trains other weights.
    let weighted = root.path().join("weighted");
    let args = with_values(
        small_run(&weighted, &ict),
        &[("--model", "mlp"), ("--consistency", "10")],
    );
    assert!(run(&as_strs(&args)).status.success());
    let bytes = |dir: &std::path::Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(bytes(&weighted) != bytes(&supervised));
}

#[test]
fn an_ict_run_killed_and_resumed_equals_the_uninterrupted_one() {
    let root = tempfile::tempdir().unwrap();
    let extra = [
        "--semi",
        "ict",
        "--semi-mix",
        "manifold",
        "--unlabeled",
        "1000",
        "--unlabeled-batch-size",
        "30",
        "--consistency",
        "5",
        "--ema-decay",
        "0.99",
    ];
    let whole = root.path().join("whole");
    let output = run(&as_strs(&resumable_run(&whole, &extra)));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let resumed = root.path().join("resumed");
    kill_after_first_epoch_and_resume(&as_strs(&resumable_run(&resumed, &extra)), &resumed);
    assert_same_outcome(&resumed, &whole, "ICT killed after epoch 1 and resumed");
    let teacher = |dir: &std::path::Path| std::fs::read(dir.join("teacher.safetensors")).unwrap();
    assert!(teacher(&resumed) == teacher(&whole), "the teachers differ");
    let metrics = std::fs::read_to_string(whole.join("metrics.csv")).unwrap();
    assert!(
        metrics
            .lines()
            .next()
            .unwrap()
            .ends_with("teacher_test_ece"),
        "{metrics}"
    );
    let summary = std::fs::read_to_string(whole.join("summary.json")).unwrap();
    assert!(summary.contains("\"teacher_final\""), "{summary}");
}

#[test]
fn bad_semi_supervised_options_give_one_line_and_write_nothing() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let out_arg = out.display().to_string();
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty = empty.to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["--semi", "ict"], "--semi needs --unlabeled"),
        (&["--unlabeled", "rest"], "--unlabeled needs --semi"),
        (
            &["--semi", "ict", "--unlabeled", "rest"],
            "--unlabeled rest: the labelled split keeps every training image",
        ),
        (
            &[
                "--semi",
                "ict",
                "--labels-per-class",
                "10",
                "--unlabeled",
                "999999",
            ],
            "--unlabeled 999999 is more than the",
        ),
        (
            &["--semi", "ict", "--unlabeled", "rest", "--ema-decay", "1"],
            "--ema-decay must be in [0, 1), got 1",
        ),
        (&["--unlabeled-dir", empty], "--unlabeled-dir needs --semi"),
        (
            &[
                "--semi",
                "ict",
                "--unlabeled",
                "9",
                "--unlabeled-dir",
                empty,
            ],
            "--unlabeled-dir replaces --unlabeled",
        ),
        (
            &["--semi", "ict", "--unlabeled-dir", empty],
            "no PNG or JPEG images in it",
        ),
    ];
    let mut problems = Vec::new();
    for (extra, expected) in cases {
        let mut args = vec!["train", "--epochs", "1", "--out", &out_arg];
        args.extend(extra.iter());
        let output = run(&args);
        problems.extend(common::one_line_error_problem(
            &output,
            expected,
            &format!("{extra:?}"),
        ));
        if out.exists() {
            problems.push(format!("{extra:?} wrote {}", out.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_unlabelled_folder_of_any_image_sizes_feeds_ict() {
    let root = tempfile::tempdir().unwrap();
    let pool = root.path().join("pool");
    std::fs::create_dir(&pool).unwrap();
    // Colour images of other sizes: read as the data set's grey 28×28.
    for i in 0..30u8 {
        let side = 20 + u32::from(i % 3) * 8;
        image::RgbImage::from_pixel(side, side, image::Rgb([i * 8, 100, 255 - i * 8]))
            .save(pool.join(format!("{i:02}.png")))
            .unwrap();
    }
    let out = root.path().join("run");
    let pool_arg = pool.to_str().unwrap();
    let extra = ["--semi", "ict", "--unlabeled-dir", pool_arg];
    let args = with_values(
        small_run(&out, &extra),
        &[("--model", "mlp"), ("--epochs", "1")],
    );
    let output = run(&as_strs(&args));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("+ 30 unlabelled"),
        "{}",
        text(&output.stdout)
    );
    // The folder is saved with the run, for a resume to read again.
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(
        config.contains(&format!(r#""dir": "{pool_arg}""#)),
        "{config}"
    );
}
