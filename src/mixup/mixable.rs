use burn::module::Module;
use burn::tensor::Tensor;
use serde::Serialize;

use super::{AppliedMix, MixupError, OUTPUT_POINT, TensorMix, mix_at};

/// What a mix point holds, which decides the mixes it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PointShape {
    /// A feature map `[batch, channels, height, width]` (or channel-blocked
    /// `[batch, channels/b, height, width, b]`): every mix, box and block mixes included.
    Map,
    /// A flat `[batch, features]` state: interpolation only.
    Vector,
}

/// A named point between blocks where hidden states may be mixed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MixPoint {
    /// Its position among the model's points (0 is the input).
    pub index: usize,
    /// Its name in logs and reports.
    pub name: &'static str,
    /// What the hidden state there looks like.
    pub shape: PointShape,
}

impl MixPoint {
    /// Points `0, 1, …` with these names and shapes, in forward order.
    pub fn list(points: &[(&'static str, PointShape)]) -> Vec<MixPoint> {
        points
            .iter()
            .enumerate()
            .map(|(index, &(name, shape))| MixPoint { index, name, shape })
            .collect()
    }
}

/// A classifier the mixup family can train: it declares its mix points and, in its forward
/// pass, hands the hidden state at each of them to [`super::mix_at`].
///
/// Point 0 is the input. A point should sit between whole blocks, never inside a residual
/// branch, and the forward pass must visit every declared point in order, each once. The
/// logits are mixed by the training loop (output mixup), not by the model.
pub trait Mixable: Module {
    /// The mix points, index `i` at position `i`.
    fn mix_points(&self) -> Vec<MixPoint>;

    /// Logits `[batch, classes]` for `images` `[batch, channels, height, width]`, mixing the
    /// hidden state at each point through `mix_at(mix, point, h)`.
    fn forward_mixed(&self, images: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2>;
}

/// A training forward pass: `model`'s logits with `mix` applied at its points and then at
/// the logits (output mixup), and what the pass mixed, for the targets.
pub fn mixed_forward<M: Mixable>(
    model: &M,
    images: Tensor<4>,
    mix: Option<&TensorMix>,
) -> Result<(Tensor<2>, Option<AppliedMix>), MixupError> {
    let logits = mix_at(mix, OUTPUT_POINT, model.forward_mixed(images, mix));
    let applied = mix.map(TensorMix::applied).transpose()?;
    Ok((logits, applied))
}
