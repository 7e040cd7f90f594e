//! Interpolation Consistency Training (ICT: Verma, Lamb, Kannala, Bengio and Lopez-Paz, IJCAI
//! 2019, arXiv 1903.03825) on unlabelled images: the student's prediction at a mix of two
//! images should be the same mix of a teacher's predictions. Mixed at the input this is ICT;
//! at a drawn hidden point it is ICT's hidden-space version, as Manifold Mixup mixes.
//!
//! The targets are the teacher's logits mixed as the student's inputs were ([`super::mix_rows`]
//! with the mix the student's forward pass applied), as the reference code mixes them; the
//! loss compares the softmax of both.

use burn::tensor::{Tensor, TensorData, activation};

use super::{Mixable, MixupError, TensorMix, mix_rows, mixed_forward};

/// The consistency weight's ramp-up at `epoch` (fractional: epochs done plus the share of the
/// current one) over `length` epochs: `exp(−5·(1 − epoch/length)²)` up to `length`, then 1 —
/// the sigmoid-shaped ramp of Laine and Aila that ICT and the mean teacher use. A length of 0
/// is no ramp.
pub fn sigmoid_rampup(epoch: f64, length: f64) -> f64 {
    if length <= 0.0 {
        return 1.0;
    }
    let phase = 1.0 - epoch.clamp(0.0, length) / length;
    (-5.0 * phase * phase).exp()
}

/// The mean over examples and classes of `(softmax(student) − softmax(target))²`: ICT's
/// `softmax_mse_loss` (a sum over both, divided by the classes) divided by the batch.
/// `target_logits` are constants: nothing flows back through them to the teacher.
pub fn consistency_loss(student_logits: Tensor<2>, target_logits: Tensor<2>) -> Tensor<1> {
    let difference =
        activation::softmax(student_logits, 1) - activation::softmax(target_logits.detach(), 1);
    (difference.clone() * difference).mean()
}

/// ICT's consistency term on one batch of unlabelled `images` (on the student's autodiff
/// device): the student's forward pass mixes them by `mix` (none: clean), and its softmax is
/// compared with that of `teacher_logits` (the teacher's for the clean images, row by row)
/// mixed with the same weights and partners.
pub fn interpolation_consistency<M: Mixable>(
    student: &M,
    images: Tensor<4>,
    teacher_logits: Vec<f64>,
    mix: Option<&TensorMix>,
) -> Result<Tensor<1>, MixupError> {
    let rows = images.dims()[0];
    let classes = teacher_logits.len() / rows.max(1);
    let (student_logits, applied) = mixed_forward(student, images, mix)?;
    let targets = match &applied {
        Some(applied) => mix_rows(teacher_logits, applied, classes),
        None => teacher_logits,
    };
    let targets = Tensor::<2>::from_data(
        TensorData::new(
            targets.into_iter().map(|t| t as f32).collect::<Vec<_>>(),
            [rows, classes],
        ),
        &student_logits.device(),
    );
    Ok(consistency_loss(student_logits, targets))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::mixup::{AppliedMix, mix_rows};

    #[test]
    fn the_ramp_rises_as_the_reference_computes_it_and_stays_at_one() {
        // exp(−5·(1 − t/L)²) at t = 0, L/4, L/2, L and past L, for L = 100.
        let expected = [
            (0.0, (-5.0f64).exp()),
            (25.0, (-5.0 * 0.75f64 * 0.75).exp()),
            (50.0, (-1.25f64).exp()),
            (100.0, 1.0),
            (130.0, 1.0),
        ];
        for (epoch, value) in expected {
            assert!(
                (sigmoid_rampup(epoch, 100.0) - value).abs() < 1e-15,
                "{epoch}"
            );
        }
        assert!((sigmoid_rampup(0.0, 100.0) - 0.006_737_946_999_085_467).abs() < 1e-15);
        assert_eq!(sigmoid_rampup(0.0, 0.0), 1.0);
        let ramp: Vec<f64> = (0..=10).map(|e| sigmoid_rampup(e as f64, 10.0)).collect();
        assert!(ramp.windows(2).all(|w| w[0] < w[1]), "{ramp:?}");
    }

    #[test]
    fn the_loss_is_the_mean_squared_difference_of_the_softmaxes() {
        let device = Device::flex();
        let student = [0.5f32, -1.0, 2.0, 0.0, 0.3, 0.3];
        let target = [1.0f32, 0.0, 0.0, -2.0, 1.0, 0.5];
        let softmax = |row: &[f32]| {
            let exps: Vec<f64> = row.iter().map(|&z| (z as f64).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.into_iter().map(|e| e / sum).collect::<Vec<_>>()
        };
        let mut expected = 0.0;
        for (s, t) in student.chunks(3).zip(target.chunks(3)) {
            for (a, b) in softmax(s).iter().zip(softmax(t)) {
                expected += (a - b).powi(2);
            }
        }
        expected /= 6.0;
        let tensor =
            |v: [f32; 6]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [2, 3]), &device);
        let loss = consistency_loss(tensor(student), tensor(target)).into_scalar::<f32>();
        assert!(
            (loss as f64 - expected).abs() < 1e-7,
            "{loss} vs {expected}"
        );
    }

    #[test]
    fn only_the_student_receives_a_gradient() {
        let device = Device::flex().autodiff();
        let student = Tensor::<2>::from_data(
            TensorData::new(vec![0.5f32, -1.0, 2.0, 0.0], [2, 2]),
            &device,
        )
        .require_grad();
        let teacher = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 0.0, -2.0], [2, 2]),
            &device,
        )
        .require_grad();
        let grads = consistency_loss(student.clone(), teacher.clone()).backward();
        let student_grad = student.grad(&grads).expect("the student's logits get one");
        assert!(student_grad.abs().sum().into_scalar::<f32>() > 0.0);
        assert!(
            teacher.grad(&grads).is_none(),
            "a gradient reached the teacher"
        );
    }

    #[test]
    fn targets_are_the_teachers_logits_mixed_as_the_inputs_were() {
        let logits = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mixed = mix_rows(logits, &AppliedMix::uniform(0.25, vec![1, 2, 0]), 2);
        assert_eq!(mixed, vec![2.5, 3.5, 4.5, 5.5, 2.0, 3.0]);
    }
}
