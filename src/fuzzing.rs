//! The readers of untrusted bytes, each behind one entry point that takes a fuzzer's input:
//! the AFL++ targets in `fuzz/` drive them, and `tests/fuzz_corpus.rs` replays every input
//! they saved. An entry point returns whatever the reader answered; a panic is a bug.

use std::path::Path;

use crate::cli::study;
use crate::data::{Cifar100Labels, decode_image, idx_pair, maybe_gunzip, parse_cifar};
use crate::mixup::Mixable;
use crate::models::{Classifier, ModelConfig};
use crate::train::checkpoint::{model_from_bytes, optimizer_from_bytes, state_from_bytes};
use crate::train::{TrainConfig, TrainOptions, optimizer, parse_device};

/// The IDX reader (MNIST, Fashion-MNIST): a pair of images and labels files, each raw or
/// gzip-compressed. Input: a little-endian u16 length of the images file, the images file,
/// then the labels file.
pub fn idx(data: &[u8]) {
    let Some((images, labels)) = split_u16(data) else {
        return;
    };
    let (images_path, labels_path) = (Path::new("images"), Path::new("labels"));
    let (Ok(images), Ok(labels)) = (
        maybe_gunzip(images_path, images.to_vec()),
        maybe_gunzip(labels_path, labels.to_vec()),
    ) else {
        return;
    };
    if let Ok(set) = idx_pair(images_path, &images, labels_path, &labels, 10) {
        assert_eq!(set.pixels.len(), set.len() * set.image_len());
        assert!(set.labels.iter().all(|&label| label < 10));
        let _ = set.channel_stats();
    }
}

/// The CIFAR binary reader. Input: a byte choosing CIFAR-10, CIFAR-100 fine or coarse
/// labels, then the file.
pub fn cifar(data: &[u8]) {
    let Some((&choice, bytes)) = data.split_first() else {
        return;
    };
    let (variant, classes) = match choice % 3 {
        0 => (None, 10),
        1 => (Some(Cifar100Labels::Fine), 100),
        _ => (Some(Cifar100Labels::Coarse), 20),
    };
    if let Ok(set) = parse_cifar(Path::new("batch.bin"), bytes, variant) {
        assert_eq!(set.pixels.len(), set.len() * 3 * 32 * 32);
        assert!(set.labels.iter().all(|&label| label < classes));
        let _ = set.channel_stats();
    }
}

/// The image-folder reader's decoding of one file (PNG or JPEG), resized to the run's image
/// size. Input: a byte for the size (its value modulo 64; 0 must be refused), then the file.
pub fn image(data: &[u8]) {
    let Some((&size, bytes)) = data.split_first() else {
        return;
    };
    let size = usize::from(size % 64);
    if let Ok(planar) = decode_image(Path::new("class/image.png"), bytes, size) {
        assert_eq!(planar.len(), 3 * size * size);
    }
}

/// The configuration of the checkpoint target: an mlp of width 4 and the paper's SGD.
#[allow(clippy::expect_used, reason = "cannot fail: a valid configuration")]
pub fn checkpoint_config() -> TrainConfig {
    let options = TrainOptions {
        model: Some("mlp".into()),
        width: Some(4),
        ..TrainOptions::default()
    };
    options.resolve(1).expect("a valid configuration")
}

/// A fresh model of [`checkpoint_config`] for 4×4 grey images in ten classes: small, so
/// that the target's inputs (two records of its weights) are small.
#[allow(clippy::expect_used, reason = "cannot fail: the CPU exists")]
pub fn checkpoint_model(config: &TrainConfig) -> Classifier {
    checkpoint_model_on(config, &parse_device("cpu").expect("the CPU exists"))
}

#[allow(clippy::expect_used, reason = "cannot fail: an mlp fits 4×4 images")]
fn checkpoint_model_on(config: &TrainConfig, device: &burn::tensor::Device) -> Classifier {
    ModelConfig::new(config.model, 1, 4, 10)
        .with_width(config.width)
        .init(device)
        .expect("an mlp fits 4×4 images")
}

/// A valid input of [`checkpoint`]: the model, optimizer and state of a checkpoint taken
/// mid-epoch after one SGD step, as `checkpoint::save` writes them (the target's seed).
#[allow(
    clippy::expect_used,
    reason = "cannot fail: the CPU exists; a checkpoint encodes"
)]
pub fn checkpoint_seed() -> Vec<u8> {
    use burn::optim::GradientsParams;
    use burn::tensor::Tensor;
    use rand::SeedableRng;

    use crate::eval::Metrics;
    use crate::train::checkpoint::{self, EpochRecord, PartialEpoch, RunState};

    let config = checkpoint_config();
    let device = parse_device("cpu").expect("the CPU exists").autodiff();
    let model = checkpoint_model_on(&config, &device);
    let mut optim = optimizer(&config);
    let loss = model
        .forward_mixed(Tensor::ones([2, 1, 4, 4], &device), None)
        .sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = optim.step(0.1, model, grads);
    let metrics = Metrics {
        accuracy: 0.5,
        nll: 0.7,
        ece: 0.1,
        count: 2,
    };
    let state = RunState {
        epochs_done: 1,
        rng: rand_chacha::ChaCha12Rng::seed_from_u64(0),
        history: vec![EpochRecord {
            epoch: 1,
            lr: 0.1,
            train_loss: 0.7,
            train_acc: 0.5,
            valid: Some(metrics),
            test: Some(metrics),
            teacher_valid: None,
            teacher_test: None,
            images_per_second: 100.0,
            seconds: 0.02,
        }],
        train_seconds: 0.02,
        train_images: 2,
        semi: None,
        config: None,
        partial: Some(PartialEpoch {
            order: vec![1, 0],
            next_batch: 1,
            loss_sum: 0.7,
            acc_sum: 0.5,
            seen: 1,
            seconds: 0.01,
        }),
    };
    let files = checkpoint::encode(&model, &optim, &state).expect("a checkpoint encodes");
    checkpoint_input(&files.each_ref().map(|bytes| &bytes[..]))
}

/// The [`checkpoint`] target's input holding the three files' bytes.
pub fn checkpoint_input([model, optimizer, state]: &[&[u8]; 3]) -> Vec<u8> {
    let mut input = Vec::new();
    input.extend((model.len() as u32).to_le_bytes());
    input.extend((optimizer.len() as u32).to_le_bytes());
    input.extend([*model, *optimizer, *state].concat());
    input
}

/// The three files' bytes of a [`checkpoint`] target input, if it holds them.
pub fn split_checkpoint_input(data: &[u8]) -> Option<[&[u8]; 3]> {
    let length = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let (model_len, optimizer_len) = (length(0)?, length(4)?);
    let (model, rest) = data[8..].split_at_checked(model_len)?;
    let (optimizer, state) = rest.split_at_checked(optimizer_len)?;
    Some([model, optimizer, state])
}

/// The checkpoint loader: `model.bpk`, `optimizer.bpk` and `state.json` onto `model`.
/// Input: little-endian u32 lengths of the model and optimizer records, the model record,
/// the optimizer record, then the state.
pub fn checkpoint(data: &[u8], config: &TrainConfig, model: &Classifier) {
    let Some([model_bytes, optimizer_bytes, state]) = split_checkpoint_input(data) else {
        return;
    };
    let _ = model_from_bytes(Path::new("model.bpk"), model_bytes.to_vec(), model.clone());
    let _ = optimizer_from_bytes(
        Path::new("optimizer.bpk"),
        optimizer_bytes.to_vec(),
        optimizer(config),
    );
    let _ = state_from_bytes(Path::new("state.json"), state);
}

/// The TOML configurations: a `mmix train --config` file resolved into a run's
/// configuration, or a `mmix study` file checked as the study command checks it. Input: a
/// byte choosing which (even: run, odd: study), then the text.
pub fn config(data: &[u8]) {
    let Some((&choice, bytes)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if choice % 2 == 0 {
        if let Ok(file) = TrainOptions::from_toml(text) {
            let _ = file.resolve(1);
        }
    } else {
        let _ = study::check_text(text, "study.toml");
    }
}

fn split_u16(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let length = u16::from_le_bytes(data.get(..2)?.try_into().ok()?) as usize;
    data[2..].split_at_checked(length)
}
