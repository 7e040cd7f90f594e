//! The mixup family: what to mix (a [`MixPlan`] drawn once per batch from a [`MixConfig`]),
//! how to mix a hidden tensor ([`TensorMix`]: interpolation, CutMix boxes, PatchUp blocks),
//! what the mixed example should be classified as ([`soft_targets`] and the losses), and the
//! trait a model implements to be mixed ([`Mixable`]).
//!
//! This module knows nothing of datasets or files: the caller owns the RNG and the model
//! decides where its mix points are. (Its option types derive clap's `ValueEnum` and serde's
//! traits, so that the command line and saved configurations name them as it does.)

mod consistency;
mod loss;
mod masks;
mod mixable;
mod mixing;
mod plan;
mod schedule;
mod targets;

pub use consistency::{consistency_loss, interpolation_consistency, sigmoid_rampup};
pub use loss::{Loss, MixLoss, mixed_loss};
pub use masks::{CutBox, ElementWeights, MapLayout, element_weights, patch_mask};
pub use mixable::{MixPoint, Mixable, PointShape, mixed_forward};
pub use mixing::{TensorMix, mix_at};
pub use plan::{
    Draw, Draws, MixConfig, MixMode, MixOp, MixPlan, MixupError, OUTPUT_POINT, PatchUpConfig,
    PatchUpKind, PointMix, Switch, group_rows, sample_lambda,
};
pub use schedule::AlphaSchedule;
pub use targets::{AppliedMix, mix_rows, mixed_targets, smooth, soft_targets};
