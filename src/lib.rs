//! Manifold Mixup training in native Rust, on Burn.
//!
//! Data flows one way: files → [`data`] → batches → [`train`] (which draws a
//! [`mixup::MixPlan`] per batch and runs any [`mixup::Mixable`] model with it, the built-in
//! [`models::Classifier`] or your own) → [`eval`] → [`report`]. [`mixup`] knows no dataset
//! and [`models`] know no files. [`cli`] is the `mmix`
//! command line, here so that its parsers can be tested and fuzzed.

pub mod bench;
pub mod cli;
mod contained;
pub mod data;
pub mod distributed;
pub mod eval;
pub mod fsio;
pub mod fuzzing;
pub mod kernels;
pub mod machine;
pub mod mixup;
pub mod models;
pub mod predict;
pub mod process;
pub mod report;
pub mod train;
