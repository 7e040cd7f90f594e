//! `mmix predict` against the evaluation's own path: a test image of each class, written as
//! a PNG, gets the class the run's model gives it when the evaluation reads it from the data
//! set; a corrupt file among them is named in one line and the others still print.

mod common;

use std::path::Path;

use common::{as_strs, run, small_run, text};
use manifold_mixup::eval::predicted_class;
use manifold_mixup::eval::suite::logits;
use manifold_mixup::train::{self, checkpoint, run_dir};

/// What the evaluation's path (the data set's pixels, the run's normalisation, the latest
/// checkpoint) predicts for each of `indices` of the test split: the class and its softmax
/// probability; and those images, of side `size`.
struct Expected {
    classes: Vec<usize>,
    probabilities: Vec<f64>,
    images: Vec<Vec<u8>>,
    size: usize,
}

fn evaluation_predictions(dir: &Path, indices: &[usize]) -> Expected {
    let config = run_dir::read_record(dir).unwrap().train;
    let data = train::prepare_data(&config).unwrap();
    let device = train::parse_device("cpu").unwrap();
    let folder = checkpoint::latest(&dir.join(run_dir::CHECKPOINTS))
        .unwrap()
        .unwrap();
    let model = checkpoint::load_model(
        &folder,
        train::build_model(&config, &data, &device).unwrap(),
    )
    .unwrap();
    let chosen = data.dataset.test.select(indices);
    let out = logits(&model, &chosen, &data.normalization, 64, &device);
    let classes = data.dataset.classes();
    let rows: Vec<&[f32]> = out.values.chunks(classes).collect();
    let probability = |row: &[f32]| {
        let max = row[predicted_class(row)] as f64;
        1.0 / row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>()
    };
    Expected {
        classes: rows.iter().map(|row| predicted_class(row)).collect(),
        probabilities: rows.iter().map(|row| probability(row)).collect(),
        images: (0..chosen.len())
            .map(|i| chosen.image(i).to_vec())
            .collect(),
        size: chosen.size,
    }
}

/// `mmix predict RUN IMAGE --uncalibrated --format json`'s one line.
fn predict_uncalibrated(dir: &Path, image: &Path) -> serde_json::Value {
    let output = run(&[
        "predict",
        dir.to_str().unwrap(),
        image.to_str().unwrap(),
        "--uncalibrated",
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_str(text(&output.stdout).trim()).unwrap()
}

#[test]
fn predict_agrees_with_the_evaluation_and_names_a_corrupt_file_in_one_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let trained = run(&as_strs(&small_run(&dir, &[])));
    assert!(trained.status.success(), "{}", text(&trained.stderr));

    // The first test image of each class.
    let config = run_dir::read_record(&dir).unwrap().train;
    let test = train::prepare_data(&config).unwrap().dataset.test;
    let indices: Vec<usize> = (0..10)
        .map(|class| test.labels.iter().position(|&l| l == class).unwrap())
        .collect();
    let expected = evaluation_predictions(&dir, &indices);

    let images_dir = root.path().join("images");
    std::fs::create_dir(&images_dir).unwrap();
    let side = expected.size as u32;
    for (class, pixels) in expected.images.iter().enumerate() {
        image::GrayImage::from_raw(side, side, pixels.clone())
            .unwrap()
            .save(images_dir.join(format!("class-{class}.png")))
            .unwrap();
    }
    std::fs::write(images_dir.join("corrupt.png"), b"not an image").unwrap();

    let output = run(&[
        "predict",
        dir.to_str().unwrap(),
        images_dir.to_str().unwrap(),
        "--format",
        "json",
        "--top",
        "2",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(
        errors[0].starts_with("error: ") && errors[0].contains("corrupt.png"),
        "{stderr}"
    );
    assert!(errors[1].contains("1 of 11 inputs"), "{stderr}");

    let evaluation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(run_dir::EVALUATION)).unwrap())
            .unwrap();
    let fitted = evaluation["temperature_scaled"]["temperature"]
        .as_f64()
        .expect("a run with a validation split fits a temperature");
    let stdout = text(&output.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 10, "{stdout}");
    for line in &lines {
        let file = line["file"].as_str().unwrap();
        let class: usize = file
            .rsplit_once("class-")
            .and_then(|(_, rest)| rest.strip_suffix(".png"))
            .unwrap()
            .parse()
            .unwrap();
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(
            top[0]["class"].as_u64().unwrap() as usize,
            expected.classes[class],
            "{file}: {line}"
        );
        assert!(top[0]["probability"].as_f64() >= top[1]["probability"].as_f64());
        assert_eq!(line["temperature"].as_f64(), Some(fitted));
    }

    // Uncalibrated, the probabilities are the evaluation's softmax: the same pixels, the
    // same normalisation, the same network.
    for (class, probability) in expected.probabilities.iter().enumerate() {
        let one = images_dir.join(format!("class-{class}.png"));
        let line = predict_uncalibrated(&dir, &one);
        let printed = line["top"][0]["probability"].as_f64().unwrap();
        assert!(
            (printed - probability).abs() < 1e-5,
            "class {class}: {printed} against the evaluation's {probability}"
        );
        assert!(line["temperature"].is_null());
    }

    // Text: the name of the evaluation's class comes first.
    let one = images_dir.join("class-0.png");
    let output = run(&["predict", dir.to_str().unwrap(), one.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let names = run_dir::read_record(&dir).unwrap().dataset.classes;
    let stdout = text(&output.stdout);
    let expected_line = format!("{}: {} ", one.display(), names[expected.classes[0]]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("probabilities at temperature"),
        "{stdout}"
    );
    assert!(lines[1].starts_with(&expected_line), "{stdout}");

    // A damaged evaluation.json is named once, in one line.
    let evaluation = dir.join(run_dir::EVALUATION);
    std::fs::write(&evaluation, "{").unwrap();
    let output = run(&["predict", dir.to_str().unwrap(), one.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_eq!(stderr.matches("evaluation.json").count(), 1, "{stderr}");
}

/// A `--pad-to` run reads a new image at the data set's own size and pads it as training
/// did: the unpadded test image gets the evaluation's probability for the padded one.
#[test]
fn a_padded_run_pads_new_images_as_it_padded_its_training_images() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let trained = run(&as_strs(&small_run(&dir, &["--pad-to", "32"])));
    assert!(trained.status.success(), "{}", text(&trained.stderr));
    let expected = evaluation_predictions(&dir, &[0, 1, 2]);
    assert_eq!(expected.size, 32);
    let record = run_dir::read_record(&dir).unwrap();
    assert_eq!(record.dataset.unpadded_size, Some(28));
    for (i, padded) in expected.images.iter().enumerate() {
        // The 28×28 image inside the 2-pixel border padding added.
        let unpadded: Vec<u8> = padded
            .chunks(32)
            .skip(2)
            .take(28)
            .flat_map(|row| row[2..30].to_vec())
            .collect();
        let file = root.path().join(format!("test-{i}.png"));
        image::GrayImage::from_raw(28, 28, unpadded)
            .unwrap()
            .save(&file)
            .unwrap();
        let line = predict_uncalibrated(&dir, &file);
        assert_eq!(
            line["top"][0]["class"].as_u64(),
            Some(expected.classes[i] as u64)
        );
        let printed = line["top"][0]["probability"].as_f64().unwrap();
        let probability = expected.probabilities[i];
        assert!(
            (printed - probability).abs() < 1e-5,
            "image {i}: {printed} against the evaluation's {probability}"
        );
    }
}

#[test]
fn predict_refuses_what_is_not_a_run_in_one_line() {
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("x.png");
    image::GrayImage::new(28, 28).save(&image).unwrap();
    let output = run(&[
        "predict",
        root.path().to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    common::assert_one_line_error(&output, "is not an mmix run folder", "predict on no run");
}
