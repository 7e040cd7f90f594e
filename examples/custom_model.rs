//! A network from outside mmix's model list, trained with Manifold Mixup by mmix's own loop
//! into a run folder like `mmix train`'s (configuration, checkpoints, weights, reports and the
//! final evaluation): `cargo run --release --example custom_model [-- EPOCHS]` (10 by default:
//! about 70% test accuracy from 2,000 Fashion-MNIST images in seconds). `mmix compare` reads
//! the folder; `Predictor::open_with` classifies images with it.
//!
//! A model becomes mixable by declaring its mix points and handing its hidden state at each
//! of them to `mix_at` in its forward pass; everything else is the library's.

use std::path::Path;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use manifold_mixup::data::{DatasetName, SplitConfig};
use manifold_mixup::mixup::{MixMode, MixPoint, Mixable, PointShape, TensorMix, mix_at};
use manifold_mixup::train::run_dir::RunDir;
use manifold_mixup::train::{self, RunState, Schedule, TrainConfig, Trainer};

/// Two 3×3 convolutions, each followed by a 2×2 max-pool, a global average pool and a linear
/// head.
#[derive(Module, Debug)]
pub struct TinyNet {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    head: Linear,
}

impl TinyNet {
    pub fn new(channels: usize, classes: usize, device: &Device) -> Self {
        let conv = |from, to| {
            Conv2dConfig::new([from, to], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            conv1: conv(channels, 16),
            conv2: conv(16, 32),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            head: LinearConfig::new(32, classes).init(device),
        }
    }
}

impl Mixable for TinyNet {
    fn mix_points(&self) -> Vec<MixPoint> {
        MixPoint::list(&[
            ("input", PointShape::Map),
            ("after conv1 and pool", PointShape::Map),
            ("after conv2 and pool", PointShape::Map),
            ("pooled", PointShape::Vector),
        ])
    }

    fn forward_mixed(&self, images: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2> {
        let h = mix_at(mix, 0, images);
        let h = mix_at(mix, 1, self.pool.forward(relu(self.conv1.forward(h))));
        let h = mix_at(mix, 2, self.pool.forward(relu(self.conv2.forward(h))));
        let pooled = h.mean_dim(3).mean_dim(2).flatten::<2>(1, 3);
        self.head.forward(mix_at(mix, 3, pooled))
    }
}

/// The configuration [`train_tiny_net`] trains under: Manifold Mixup at TinyNet's four points
/// on `train_subset` images of the embedded Fashion-MNIST subset, 100 of them held out for
/// validation (which fits the final evaluation's temperature).
pub fn tiny_net_config(epochs: usize, train_subset: usize) -> TrainConfig {
    TrainConfig {
        dataset: DatasetName::FashionMnistMini,
        custom_model: Some("tiny-net".into()),
        mix_layers: vec![0, 1, 2, 3],
        batch_size: 32,
        schedule: Schedule::Cosine,
        split: SplitConfig {
            valid_split: 100,
            train_subset: Some(train_subset),
            labels_per_class: None,
        },
        ..TrainConfig::default()
            .with_mix(MixMode::Manifold)
            .with_epochs(epochs)
    }
}

/// Trains [`TinyNet`] into the run folder `dir` (continuing the run there, if any) and
/// evaluates it at the end.
pub fn train_tiny_net(dir: &Path, epochs: usize, train_subset: usize) -> Result<RunState> {
    train_tiny_net_under(dir, &tiny_net_config(epochs, train_subset))
}

/// Trains [`TinyNet`] under `config` into the run folder `dir`, as [`train_tiny_net`] does.
pub fn train_tiny_net_under(dir: &Path, config: &TrainConfig) -> Result<RunState> {
    let config = config.clone();
    let data = train::prepare_data(&config)?;
    let (channels, classes) = (data.train.channels, data.dataset.classes());
    let device = Device::flex();
    let run = RunDir::create_or_open(dir, &config, &data, &device)
        .with_context(|| format!("cannot use {} as a run folder", dir.display()))?;
    let init = |device: &Device| Ok(TinyNet::new(channels, classes, device));
    let state = Trainer::with_model(&config, &data, &device, init)
        .write_to(&run)
        .run()?
        .state();
    run.finish(&config, &data, &device, &init)?;
    Ok(state)
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let epochs = match std::env::args_os().nth(1) {
        Some(text) => text
            .to_string_lossy()
            .parse()
            .context("the argument is a number of epochs")?,
        None => 10,
    };
    let dir = Path::new("runs/custom-model");
    let state = train_tiny_net(dir, epochs, 2_000)?;
    for record in &state.history {
        let test = record
            .test
            .map(|t| format!(", test acc {:.2}%", 100.0 * t.accuracy))
            .unwrap_or_default();
        println!(
            "epoch {}: train loss {:.4}{test}",
            record.epoch, record.train_loss
        );
    }
    println!("reports and checkpoint in {}", dir.display());
    Ok(())
}
