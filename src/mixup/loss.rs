use burn::tensor::{Tensor, activation};
use serde::{Deserialize, Serialize};

/// The training loss on (possibly mixed, possibly smoothed) soft targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Cross-entropy against soft targets: `−Σ t·log softmax(z)`, averaged over the batch.
    SoftCe,
    /// Binary cross-entropy on softmax outputs, averaged over all entries, as in the paper's code.
    BceSoftmax,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loss::SoftCe => "soft-ce",
            Loss::BceSoftmax => "bce-softmax",
        })
    }
}

/// How a mixed batch's loss is formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MixLoss {
    /// The mixed batch's loss alone, as mixup, Manifold Mixup and CutMix are published.
    #[default]
    Replace,
    /// RegMixup (Pinto et al., NeurIPS 2022): the clean batch's loss plus a weight times the
    /// loss of a mixed copy, a regulariser beside the clean objective rather than instead of it.
    Regmixup,
}

impl MixLoss {
    /// The forward graphs a step holds at once per example: RegMixup keeps the clean batch's
    /// and the mixed copy's.
    pub fn graphs(self) -> usize {
        match self {
            MixLoss::Replace => 1,
            MixLoss::Regmixup => 2,
        }
    }
}

impl std::fmt::Display for MixLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MixLoss::Replace => "replace",
            MixLoss::Regmixup => "regmixup",
        })
    }
}

/// Mean loss of `logits` `[batch, classes]` against soft `targets` of the same shape.
pub fn mixed_loss(logits: Tensor<2>, targets: Tensor<2>, loss: Loss) -> Tensor<1> {
    match loss {
        Loss::SoftCe => {
            let log_probs = activation::log_softmax(logits, 1);
            (targets * log_probs).sum_dim(1).mean().neg()
        }
        Loss::BceSoftmax => {
            // PyTorch's BCELoss clamps each log term at −100 so saturated outputs stay finite.
            let probs = activation::softmax(logits, 1);
            let log_p = probs.clone().log().clamp_min(-100.0);
            let log_not_p = probs.neg().add_scalar(1.0).log().clamp_min(-100.0);
            let not_targets = targets.clone().neg().add_scalar(1.0);
            (targets * log_p + not_targets * log_not_p).mean().neg()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mixup::{AppliedMix, soft_targets};
    use burn::tensor::{Device, TensorData};

    fn tensor(values: Vec<f32>, rows: usize, device: &Device) -> Tensor<2> {
        let cols = values.len() / rows;
        Tensor::from_data(TensorData::new(values, [rows, cols]), device)
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    #[test]
    fn soft_ce_is_the_lambda_weighted_sum_of_the_two_ces() {
        let device = Device::flex();
        let logits = vec![0.2, -1.0, 2.0, 0.5, 0.1, -0.3, 1.5, 1.5, 0.0];
        let labels = [2, 0, 1];
        let plan = AppliedMix::uniform(0.35, vec![2, 0, 1]);
        let partner_labels: Vec<usize> = plan.permutation.iter().map(|&j| labels[j]).collect();
        let loss_of = |targets: Vec<f32>| {
            scalar(mixed_loss(
                tensor(logits.clone(), 3, &device),
                tensor(targets, 3, &device),
                Loss::SoftCe,
            ))
        };
        let mixed = loss_of(soft_targets(&labels, Some(&plan), 3, 0.0));
        let own = loss_of(soft_targets(&labels, None, 3, 0.0));
        let partner = loss_of(soft_targets(&partner_labels, None, 3, 0.0));
        let expected = 0.35 * own + 0.65 * partner;
        assert!((mixed - expected).abs() < 1e-5, "{mixed} vs {expected}");
    }

    #[test]
    fn soft_ce_on_one_hot_matches_hand_computation() {
        let device = Device::flex();
        let z = [1.0f32, 2.0, 3.0];
        let log_sum = z.iter().map(|v| v.exp()).sum::<f32>().ln();
        let loss = scalar(mixed_loss(
            tensor(z.to_vec(), 1, &device),
            tensor(vec![0.0, 1.0, 0.0], 1, &device),
            Loss::SoftCe,
        ));
        assert!((loss - (log_sum - 2.0)).abs() < 1e-5);
    }

    #[test]
    fn bce_softmax_matches_hand_computation() {
        let device = Device::flex();
        let z = [0.0f32, (3.0f32).ln()];
        let (p0, p1) = (0.25f32, 0.75f32);
        let t = [0.4f32, 0.6];
        let expected = -((t[0] * p0.ln() + (1.0 - t[0]) * (1.0 - p0).ln())
            + (t[1] * p1.ln() + (1.0 - t[1]) * (1.0 - p1).ln()))
            / 2.0;
        let loss = scalar(mixed_loss(
            tensor(z.to_vec(), 1, &device),
            tensor(t.to_vec(), 1, &device),
            Loss::BceSoftmax,
        ));
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    }
}
