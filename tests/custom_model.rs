//! A model defined outside the crate (the `custom_model` example's) is mixed at the points it
//! declares and trained, checkpointed and resumed by the library's loop into a run folder
//! that `mmix compare` and the library's predictor read.

mod common;
#[path = "../examples/custom_model.rs"]
mod example;

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData, Tolerance};
use example::{TinyNet, train_tiny_net};
use manifold_mixup::mixup::{MixPlan, Mixable, MixupError, TensorMix};

fn batch(device: &Device) -> Tensor<4> {
    Tensor::random([4, 1, 8, 8], Distribution::Normal(0.0, 1.0), device)
}

#[test]
fn an_outside_model_is_mixed_at_each_point_it_declares_and_nowhere_else() {
    let device = Device::flex();
    let model = TinyNet::new(1, 3, &device);
    let x = batch(&device);
    let plain = model.forward_mixed(x.clone(), None).into_data();
    let permutation = vec![1, 2, 3, 0];
    let points = model.mix_points();
    assert_eq!(points.len(), 4);
    for point in &points {
        let identity = TensorMix::new(
            &MixPlan::interpolate(1.0, point.index, permutation.clone()),
            &device,
        );
        model
            .forward_mixed(x.clone(), Some(&identity))
            .into_data()
            .assert_eq(&plain, true);
        let half = TensorMix::new(
            &MixPlan::interpolate(0.5, point.index, permutation.clone()),
            &device,
        );
        let mixed = model.forward_mixed(x.clone(), Some(&half)).into_data();
        assert_ne!(mixed, plain, "point {} ({}) mixes", point.index, point.name);
        assert_eq!(half.applied().unwrap().target_weights, vec![vec![0.5; 4]]);
    }
    // λ = 0 at the input is the forward pass of the partners.
    let indices = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 0], [4]), &device);
    let partners = model
        .forward_mixed(x.clone().select(0, indices), None)
        .into_data();
    let swap = TensorMix::new(&MixPlan::interpolate(0.0, 0, permutation.clone()), &device);
    model
        .forward_mixed(x.clone(), Some(&swap))
        .into_data()
        .assert_approx_eq::<f32>(&partners, Tolerance::default());
    // A point the model never reaches is reported, not silently ignored.
    let nowhere = TensorMix::new(&MixPlan::interpolate(0.5, 9, permutation), &device);
    model
        .forward_mixed(x, Some(&nowhere))
        .into_data()
        .assert_eq(&plain, true);
    assert_eq!(nowhere.applied(), Err(MixupError::PointNotReached(9)));
}

#[test]
fn the_example_trains_checkpoints_reports_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let first = train_tiny_net(dir.path(), 1, 200).unwrap();
    assert_eq!(first.epochs_done, 1);
    let summary = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    assert!(summary.contains("\"model\": \"tiny-net\""), "{summary}");
    assert!(dir.path().join("checkpoint").join("latest").exists());
    let resumed = train_tiny_net(dir.path(), 2, 200).unwrap();
    assert_eq!(resumed.epochs_done, 2);
    let (kept, before) = (&resumed.history[0], &first.history[0]);
    assert_eq!(
        (kept.train_loss, kept.test),
        (before.train_loss, before.test),
        "the first epoch is kept"
    );
    assert!(resumed.history.iter().all(|r| r.train_loss.is_finite()));
}

#[test]
fn a_run_folder_written_by_the_library_is_read_by_compare_and_predict() {
    use manifold_mixup::eval::suite::logits;
    use manifold_mixup::predict::Predictor;
    use manifold_mixup::train::{self, checkpoint, run_dir};

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tiny");
    train_tiny_net(&dir, 1, 300).unwrap();
    for entry in [
        run_dir::CONFIG,
        run_dir::WEIGHTS,
        run_dir::EVALUATION,
        run_dir::METRICS,
    ] {
        assert!(dir.join(entry).is_file(), "{entry} is missing");
    }

    let plot = root.path().join("compare.png");
    let compared = common::run(&[
        "compare",
        dir.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let stdout = common::text(&compared.stdout);
    assert!(
        compared.status.success(),
        "{}",
        common::text(&compared.stderr)
    );
    assert!(stdout.contains("tiny"), "{stdout}");

    // The binary cannot build the library's model, and says so in one line.
    let image = root.path().join("first.png");
    let config = example::tiny_net_config(1, 300);
    let data = train::prepare_data(&config).unwrap();
    let test = &data.dataset.test;
    image::GrayImage::from_raw(28, 28, test.image(0).to_vec())
        .unwrap()
        .save(&image)
        .unwrap();
    let refused = common::run(&["predict", dir.to_str().unwrap(), image.to_str().unwrap()]);
    common::assert_one_line_error(&refused, "Predictor::open_with", "predict on tiny-net");
    let refused = common::run(&["eval", dir.to_str().unwrap()]);
    common::assert_one_line_error(&refused, "evaluate_latest", "eval on tiny-net");

    // The library's predictor gives the image the evaluation's softmax.
    let device = Device::flex();
    let (channels, classes) = (data.train.channels, data.dataset.classes());
    let init = |device: &Device| Ok(TinyNet::new(channels, classes, device));
    let predictor = Predictor::open_with(&dir, &device, false, &init).unwrap();
    let ranked = predictor.classify(predictor.read_image(&image).unwrap(), classes);
    assert_eq!(ranked.len(), 1);
    let folder = checkpoint::latest(&dir.join(run_dir::CHECKPOINTS))
        .unwrap()
        .unwrap();
    let model = checkpoint::load_model(&folder, init(&device).unwrap()).unwrap();
    let row = logits(&model, &test.select(&[0]), &data.normalization, 1, &device).values;
    let total: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
    for class in &ranked[0] {
        let expected = (row[class.class] as f64).exp() / total;
        assert!(
            (class.probability - expected).abs() < 1e-5,
            "{}: {} against {expected}",
            class.name,
            class.probability
        );
    }
}
