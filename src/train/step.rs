//! One train step's mixed forward pass and loss, shared by the loop and `mmix bench`.

use burn::tensor::{Tensor, TensorData};

use crate::eval::predicted_class;
use crate::mixup::{
    Loss, Mixable, MixupError, TensorMix, mixed_forward, mixed_loss, mixed_targets, smooth,
};

/// The mixed targets' weight on each predicted class, summed over the batch: for one mix,
/// λ·[ŷ = y] + (1−λ)·[ŷ = y_partner].
pub(crate) fn mixup_hits(logits: &[f32], targets: &[f64], classes: usize) -> f64 {
    logits
        .chunks_exact(classes)
        .zip(targets.chunks_exact(classes))
        .map(|(row, target)| target[predicted_class(row)])
        .sum()
}

/// One batch's mixed forward pass and its loss, not yet differentiated: what every train step
/// computes, in the loop and in `mmix bench` alike.
pub struct BatchLoss {
    /// The loss against the (smoothed) soft targets.
    pub loss: Tensor<1>,
    /// The logits of the mixed forward pass.
    pub logits: Tensor<2>,
    /// The soft targets of the mixes the forward pass applied, before label smoothing,
    /// row-major `[batch, classes]`.
    pub targets: Vec<f64>,
}

/// The model's logits for `images` with the plan's mixes applied at its points, the soft
/// targets of what was applied, and the `loss` against them smoothed by `label_smoothing`.
pub fn batch_loss<M: Mixable>(
    model: &M,
    images: Tensor<4>,
    labels: &[usize],
    mix: Option<&TensorMix>,
    classes: usize,
    (loss, label_smoothing): (Loss, f64),
) -> Result<BatchLoss, MixupError> {
    let device = images.device();
    let (logits, applied) = mixed_forward(model, images, mix)?;
    let targets = mixed_targets(labels, applied.as_ref(), classes);
    let smoothed = Tensor::from_data(
        TensorData::new(
            smooth(&targets, classes, label_smoothing),
            [labels.len(), classes],
        ),
        &device,
    );
    Ok(BatchLoss {
        loss: mixed_loss(logits.clone(), smoothed, loss),
        logits,
        targets,
    })
}
