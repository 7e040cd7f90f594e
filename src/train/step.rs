//! One train step's mixed forward pass and loss, shared by the loop and `mmix bench`.

use burn::tensor::{Tensor, TensorData};

use crate::eval::predicted_class;
use crate::mixup::{
    Loss, MixLoss, Mixable, MixupError, TensorMix, mixed_forward, mixed_loss, mixed_targets, smooth,
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
    /// The logits the step is scored on: the mixed forward pass's, or under RegMixup the
    /// clean pass's.
    pub logits: Tensor<2>,
    /// Their soft targets, before label smoothing, row-major `[batch, classes]`.
    pub targets: Vec<f64>,
}

/// What a step minimises: the loss on soft targets, their smoothing, and how a mixed batch's
/// loss is formed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objective {
    /// The loss against the soft targets.
    pub loss: Loss,
    /// Label smoothing ε.
    pub label_smoothing: f64,
    /// Replace the clean loss, or add to it (RegMixup).
    pub mix_loss: MixLoss,
    /// RegMixup's weight of the mixed copy's loss.
    pub mix_weight: f64,
}

impl Default for Objective {
    /// Soft cross-entropy on the mixed targets alone, unsmoothed.
    fn default() -> Self {
        Self {
            loss: Loss::SoftCe,
            label_smoothing: 0.0,
            mix_loss: MixLoss::Replace,
            mix_weight: 1.0,
        }
    }
}

/// The model's logits for `images` with the plan's mixes applied at its points, the soft
/// targets of what was applied, and the loss against them smoothed as `objective` says.
/// Under RegMixup a batch with a mix also goes through the model unmixed first: the loss is
/// the clean pass's plus `mix_weight` times the mixed pass's, and the step is scored on the
/// clean pass. (Each pass normalises its own batch; the running statistics see both, as
/// they see the concatenated batch of the reference code.)
pub fn batch_loss<M: Mixable>(
    model: &M,
    images: Tensor<4>,
    labels: &[usize],
    mix: Option<&TensorMix>,
    classes: usize,
    objective: Objective,
) -> Result<BatchLoss, MixupError> {
    let device = images.device();
    let loss_against = |logits: Tensor<2>, targets: &[f64]| {
        let smoothed = Tensor::from_data(
            TensorData::new(
                smooth(targets, classes, objective.label_smoothing),
                [labels.len(), classes],
            ),
            &device,
        );
        mixed_loss(logits, smoothed, objective.loss)
    };
    let clean = match (objective.mix_loss, mix) {
        (MixLoss::Regmixup, Some(_)) => {
            let (logits, _) = mixed_forward(model, images.clone(), None)?;
            let targets = mixed_targets(labels, None, classes);
            Some(BatchLoss {
                loss: loss_against(logits.clone(), &targets),
                logits,
                targets,
            })
        }
        _ => None,
    };
    let (logits, applied) = mixed_forward(model, images, mix)?;
    let targets = mixed_targets(labels, applied.as_ref(), classes);
    let loss = loss_against(logits.clone(), &targets);
    Ok(match clean {
        Some(clean) => BatchLoss {
            loss: clean.loss + loss.mul_scalar(objective.mix_weight),
            ..clean
        },
        None => BatchLoss {
            loss,
            logits,
            targets,
        },
    })
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::optim::GradientsParams;
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;
    use crate::mixup::{MixPlan, OUTPUT_POINT, interpolation_consistency};
    use crate::models::{Classifier, ModelConfig, ModelKind};

    /// A small CNN with batch norm (so each pass's statistics matter) and a batch of 6.
    fn model_and_batch(device: &Device) -> (Classifier, Tensor<4>, Vec<usize>) {
        device.seed(7);
        let model = ModelConfig::new(ModelKind::SmallCnn, 1, 8, 3)
            .with_width(4)
            .init(device)
            .unwrap();
        let images = Tensor::random([6, 1, 8, 8], Distribution::Normal(0.0, 1.0), device);
        (model, images, vec![0, 1, 2, 0, 1, 2])
    }

    fn loss_of(
        model: &Classifier,
        images: &Tensor<4>,
        labels: &[usize],
        mix: Option<&TensorMix>,
        objective: Objective,
    ) -> BatchLoss {
        batch_loss(model, images.clone(), labels, mix, 3, objective).unwrap()
    }

    fn gradients(model: &Classifier, loss: Tensor<1>) -> Vec<Vec<f32>> {
        let grads = GradientsParams::from_grads(loss.backward(), model);
        let mut all = Vec::new();
        model.visit(&mut GradientValues {
            grads: &grads,
            all: &mut all,
        });
        all
    }

    struct GradientValues<'a> {
        grads: &'a GradientsParams,
        all: &'a mut Vec<Vec<f32>>,
    }

    impl burn::module::ModuleVisitor for GradientValues<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                self.all.push(grad.into_data().try_to_vec::<f32>().unwrap());
            }
        }
    }

    #[test]
    fn regmixup_is_the_clean_loss_plus_the_weighted_mixed_loss_scored_on_the_clean_pass() {
        let device = Device::flex().autodiff();
        let (model, images, labels) = model_and_batch(&device);
        let mix = TensorMix::new(
            &MixPlan::interpolate(0.3, 1, vec![3, 4, 5, 0, 1, 2]),
            &device,
        );
        let replace = Objective::default();
        let regmixup = Objective {
            mix_loss: MixLoss::Regmixup,
            mix_weight: 0.5,
            ..replace
        };
        let clean = loss_of(&model, &images, &labels, None, replace);
        let mixed = loss_of(&model, &images, &labels, Some(&mix), replace);
        let both = loss_of(&model, &images, &labels, Some(&mix), regmixup);
        let scalar = |t: &Tensor<1>| t.clone().into_scalar::<f32>();
        let expected = scalar(&clean.loss) + 0.5 * scalar(&mixed.loss);
        assert!(
            (scalar(&both.loss) - expected).abs() < 1e-5 * expected,
            "{} vs {expected}",
            scalar(&both.loss)
        );
        assert_eq!(both.targets, clean.targets, "scored on the clean targets");
        assert_eq!(both.logits.into_data(), clean.logits.into_data());
        // Without a drawn mix there is no mixed copy: the clean loss alone.
        let unmixed = loss_of(&model, &images, &labels, None, regmixup);
        assert_eq!(scalar(&unmixed.loss), scalar(&clean.loss));
    }

    #[test]
    fn regmixup_of_weight_zero_has_exactly_the_clean_gradients() {
        let device = Device::flex().autodiff();
        let (model, images, labels) = model_and_batch(&device);
        let mix = TensorMix::new(
            &MixPlan::interpolate(0.3, 2, vec![5, 4, 3, 2, 1, 0]),
            &device,
        );
        let clean = loss_of(&model, &images, &labels, None, Objective::default());
        let weightless = Objective {
            mix_loss: MixLoss::Regmixup,
            mix_weight: 0.0,
            ..Objective::default()
        };
        let with_copy = loss_of(&model, &images, &labels, Some(&mix), weightless);
        let clean_grads = gradients(&model, clean.loss);
        let copy_grads = gradients(&model, with_copy.loss);
        assert!(!clean_grads.is_empty());
        assert_eq!(clean_grads, copy_grads);
        // A weight that is not zero moves them.
        let weighted = Objective {
            mix_weight: 1.0,
            ..weightless
        };
        let weighted = loss_of(&model, &images, &labels, Some(&mix), weighted);
        assert_ne!(clean_grads, gradients(&model, weighted.loss));
    }

    /// ICT's targets are the teacher's logits mixed with the student's λ and partners: a
    /// student that is its own teacher agrees with them exactly where only its logits are mixed,
    /// and not where its input is.
    #[test]
    fn a_student_that_is_its_own_teacher_is_consistent_where_only_its_logits_are_mixed() {
        let device = Device::flex().autodiff();
        let (model, images, _) = model_and_batch(&device);
        let own: Vec<f64> = model
            .forward_mixed(images.clone(), None)
            .into_data()
            .iter::<f64>()
            .collect();
        let consistency = |teacher: &[f64], mix: Option<MixPlan>| {
            let mix = mix.map(|plan| TensorMix::new(&plan, &device));
            interpolation_consistency(&model, images.clone(), teacher.to_vec(), mix.as_ref())
                .unwrap()
                .into_scalar::<f32>()
        };
        let partners = vec![3, 4, 5, 0, 1, 2];
        let at = |point| Some(MixPlan::interpolate(0.3, point, partners.clone()));
        assert!(consistency(&own, None) < 1e-12);
        let at_output = consistency(&own, at(OUTPUT_POINT));
        assert!(at_output < 1e-12, "{at_output}");
        let at_input = consistency(&own, at(0));
        assert!(at_input > 1e-6, "{at_input}");
        // The other partners' logits as targets: inconsistent at the output point too.
        let reversed: Vec<f64> = own.chunks(3).rev().flatten().copied().collect();
        let elsewhere = consistency(&reversed, at(OUTPUT_POINT));
        assert!(elsewhere > 1e-6, "{elsewhere}");
    }
}
