//! Interpolation Consistency Training of a network from outside mmix's model list, through
//! the library: 20 labelled Fashion-MNIST images per class and 2,000 unlabelled ones, the
//! unlabelled pairs mixed at TinyNet's hidden points (ICT's hidden-space version), with a mean
//! teacher. `cargo run --release --example semi_supervised [-- EPOCHS]` (20 by default,
//! under a minute on 2 cores) writes `runs/semi-supervised` and prints, per epoch, the test
//! accuracy of the student and of its teacher.

#[path = "custom_model.rs"]
mod custom_model;

use std::path::Path;

use anyhow::{Context, Result};
use custom_model::{tiny_net_config, train_tiny_net_under};
use manifold_mixup::data::SplitConfig;
use manifold_mixup::mixup::MixMode;
use manifold_mixup::train::{SemiConfig, SemiMethod, UnlabeledPool};

fn main() -> Result<()> {
    let epochs: usize = match std::env::args_os().nth(1) {
        Some(text) => text
            .to_string_lossy()
            .parse()
            .context("the argument is a number of epochs")?,
        None => 20,
    };
    let mut config = tiny_net_config(epochs, 1);
    config.split = SplitConfig {
        valid_split: 100,
        train_subset: None,
        labels_per_class: Some(20),
    };
    config.semi = Some(SemiConfig {
        method: SemiMethod::Ict,
        unlabeled: UnlabeledPool::Count(2_000),
        mix: MixMode::Manifold,
        alpha: 1.0,
        consistency: 10.0,
        rampup_epochs: epochs as f64 / 4.0,
        ema_decay: 0.99,
        batch_size: 64,
    });
    config.validate()?;
    let dir = Path::new("runs/semi-supervised");
    let state = train_tiny_net_under(dir, &config)?;
    for record in &state.history {
        let accuracy = |m: Option<manifold_mixup::eval::Metrics>| {
            m.map_or("–".into(), |m| format!("{:.2}%", 100.0 * m.accuracy))
        };
        println!(
            "epoch {:>2}: student test acc {}, teacher {}",
            record.epoch,
            accuracy(record.test),
            accuracy(record.teacher_test)
        );
    }
    println!("run folder: {}", dir.display());
    Ok(())
}
