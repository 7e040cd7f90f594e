//! Manifold Mixup training in native Rust, on Burn.
//!
//! Data flows one way: files → [`data`] → batches → [`train`] (which draws a
//! [`mixup::MixPlan`] per batch and runs a [`models::Classifier`] with it) → [`eval`] →
//! [`report`]. [`mixup`] knows no dataset and [`models`] know no files.

pub mod bench;
pub mod data;
pub mod eval;
pub mod fsio;
pub mod kernels;
pub mod mixup;
pub mod models;
pub mod process;
pub mod report;
pub mod train;
