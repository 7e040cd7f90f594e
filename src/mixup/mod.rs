//! Manifold Mixup: what to mix (a [`MixPlan`] drawn once per batch), how to mix a hidden
//! tensor ([`TensorMix`]), and what the mixed example should be classified as
//! ([`soft_targets`] and the losses).
//!
//! This module knows nothing of datasets, files or the command line: the caller owns the RNG
//! and the model decides where its mix points are.

mod loss;
mod mixing;
mod plan;
mod targets;

pub use loss::{Loss, mixed_loss};
pub use mixing::{TensorMix, mix_at};
pub use plan::{MixConfig, MixMode, MixPlan, MixupError, sample_lambda};
pub use targets::soft_targets;
