#![warn(missing_docs)]
// Panics made unreachable by construction: an error where input can cause it, else an
// `#[allow]` saying why the case cannot happen.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
//! Manifold Mixup training in native Rust, on Burn.
//!
//! Data flows one way: files → [`data`] → batches → [`train`] (which draws a
//! [`mixup::MixPlan`] per batch and runs any [`mixup::Mixable`] model with it, the built-in
//! [`models::Classifier`] or your own) → [`eval`] → [`report`]; [`predict`] classifies new
//! images with a finished run. [`mixup`] knows no dataset and [`models`] know no files.
//!
//! A model of your own becomes mixable by declaring its mix points and passing its hidden
//! state at each through [`mixup::mix_at`]; the library's loop then trains it into a run folder
//! that `mmix compare` reads, exactly as `mmix train` writes one:
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor};
//! use burn::nn::{Linear, LinearConfig};
//! use manifold_mixup::prelude::*;
//!
//! #[derive(burn::module::Module, Debug)]
//! struct Net { hidden: Linear, head: Linear }
//!
//! impl Mixable for Net {
//!     fn mix_points(&self) -> Vec<MixPoint> {
//!         MixPoint::list(&[("input", PointShape::Vector), ("hidden", PointShape::Vector)])
//!     }
//!     fn forward_mixed(&self, images: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2> {
//!         let h = mix_at(mix, 0, images.flatten::<2>(1, 3));
//!         let h = mix_at(mix, 1, burn::tensor::activation::relu(self.hidden.forward(h)));
//!         self.head.forward(h)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = TrainConfig { custom_model: Some("net".into()), mix_layers: vec![0, 1],
//!     ..TrainConfig::default().with_epochs(5) };
//! let data = prepare_data(&config)?;
//! let (device, classes) = (Device::flex(), data.dataset.classes());
//! let init = |d: &Device| Ok(Net { hidden: LinearConfig::new(784, 128).init(d),
//!                                  head: LinearConfig::new(128, classes).init(d) });
//! let run = RunDir::create(std::path::Path::new("runs/net"), &config, &data, &device)?;
//! Trainer::with_model(&config, &data, &device, &init).write_to(&run).run()?;
//! let evaluation = run.finish(&config, &data, &device, &init)?;
//! println!("test accuracy {:.2}%", 100.0 * evaluation.clean.accuracy);
//! # Ok(()) }
//! ```
//!
//! `examples/custom_model.rs` is the same with a convolutional network, and
//! [`predict::Predictor::open_with`] classifies images with such a run.
//!
//! The modules hidden from these docs (`cli`, `bench`, `fsio`, `fuzzing`, `process`) are the
//! `mmix` binary's, public so that its parsers can be tested, benchmarked and fuzzed.

/// What a library user of mmix needs most: the configuration, the loop, the run folder, the
/// trait a model implements to be mixed, and the predictor.
pub mod prelude {
    pub use crate::mixup::{MixMode, MixPoint, Mixable, PointShape, TensorMix, mix_at};
    pub use crate::predict::Predictor;
    pub use crate::train::run_dir::RunDir;
    pub use crate::train::{
        Progress, RunOutcome, RunState, TrainConfig, TrainError, Trainer, prepare_data,
    };
}

#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod cli;
mod contained;
pub mod data;
pub mod distributed;
pub mod eval;
#[doc(hidden)]
pub mod fsio;
#[doc(hidden)]
pub mod fuzzing;
pub mod kernels;
pub mod machine;
pub mod mixup;
pub mod models;
#[doc(hidden)]
pub mod parity;
pub mod predict;
#[doc(hidden)]
pub mod process;
pub mod report;
pub mod study;
pub mod train;
