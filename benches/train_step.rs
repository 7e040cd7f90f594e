//! `cargo bench`: the train step of PreActResNet-18 (CIFAR layout) at widths 64 and 16,
//! without mixing and with each mode of the family (per batch, and per example), plus the
//! data pipeline; one JSON line each. Absolute
//! times drift on shared machines: compare the ratios within one run.

use burn::tensor::Device;
use manifold_mixup::bench::{MIX_FAMILY, StepBenchConfig, bench_data, bench_step};
use manifold_mixup::data::{DatasetName, LoadOptions, Normalization, load};
use manifold_mixup::models::ModelKind;

fn main() {
    manifold_mixup::process::configure();
    let device = Device::flex();
    for width in [16, 64] {
        for (mix, per_example) in MIX_FAMILY {
            let config = StepBenchConfig {
                model: ModelKind::PreActResNet { depth: 18 },
                width,
                batch: 128,
                mix,
                per_example,
                mix_loss: Default::default(),
                channels: 3,
                image_size: 32,
                classes: 10,
                steps: 5,
                warmup: 1,
                precision: Default::default(),
                semi: None,
            };
            let result = bench_step(&config, &device, "cpu").expect("a valid model");
            println!("{}", serde_json::to_string(&result).expect("serialisable"));
        }
    }
    let data = load(DatasetName::FashionMnistMini, &LoadOptions::default()).expect("embedded data");
    let (mean, std) = data.train.channel_stats();
    let pipeline = bench_data(
        &data.train,
        &Normalization { mean, std },
        &data.default_augmentation(),
        128,
        200,
        "fashion-mnist-mini",
    );
    println!(
        "{}",
        serde_json::to_string(&pipeline).expect("serialisable")
    );
}
