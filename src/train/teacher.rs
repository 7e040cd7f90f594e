//! The mean teacher of Interpolation Consistency Training: an exponential moving average of
//! the student's weights, held off the autodiff graph, so no gradient can reach it.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// A moving average of a student model, updated after each of its optimizer steps.
///
/// Every float tensor of the module is averaged, parameters and batch-norm running statistics
/// alike, and the teacher predicts in evaluation mode (timm's `ModelEma`). ICT's reference code
/// averages the parameters only and runs the teacher in training mode, so that its batch norm
/// normalises each batch by the batch's own statistics; here a teacher's prediction for an
/// image does not depend on the other images of its batch, and its statistics are the
/// student's, averaged.
#[derive(Clone, Debug)]
pub struct MeanTeacher<M> {
    model: M,
    decay: f64,
    updates: u64,
}

impl<M: Module> MeanTeacher<M> {
    /// A teacher that starts as a copy of `student`, averaging with `decay` (ICT: 0.999).
    pub fn new(student: &M, decay: f64) -> Self {
        Self::resume(student.valid(), decay, 0)
    }

    /// A teacher of `model`'s weights after `updates` updates.
    pub fn resume(model: M, decay: f64, updates: u64) -> Self {
        Self {
            model: model.valid(),
            decay,
            updates,
        }
    }

    /// The teacher's model, on the device without autodiff.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Updates made so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The weight the teacher keeps at its next update: `min(1 − 1/(t + 1), decay)` at update
    /// `t` (from 1), the mean teacher's rule that takes the true mean of the weights seen
    /// until the moving average is the better estimate.
    pub fn next_keep(&self) -> f64 {
        let step = (self.updates + 1) as f64;
        (1.0 - 1.0 / (step + 1.0)).min(self.decay)
    }

    /// `teacher ← keep·teacher + (1 − keep)·student`, tensor by tensor.
    pub fn update(&mut self, student: &M) {
        let keep = self.next_keep();
        let mut values = StudentValues(Vec::new());
        student.valid().visit(&mut values);
        let mut average = Average {
            student: values.0.into_iter(),
            keep,
        };
        self.model = self.model.clone().map(&mut average);
        self.updates += 1;
    }
}

/// The student's tensors, flattened, in the module's order.
struct StudentValues(Vec<Tensor<1>>);

impl ModuleVisitor for StudentValues {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().flatten(0, D - 1));
    }
}

struct Average<I> {
    student: I,
    keep: f64,
}

impl<I: Iterator<Item = Tensor<1>>> ModuleMapper for Average<I> {
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: a teacher has the student's structure"
    )]
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let student = self
            .student
            .next()
            .expect("a teacher has the student's structure");
        let keep = self.keep;
        param.map(|teacher| {
            let shape = teacher.shape();
            teacher.mul_scalar(keep) + student.reshape(shape).mul_scalar(1.0 - keep)
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;
    use crate::models::{Classifier, ModelConfig, ModelKind};

    /// A small CNN of `seed`'s weights whose batch-norm running statistics have seen one
    /// training pass, so that they differ between students as the weights do.
    fn model(seed: u64, device: &Device) -> Classifier {
        device.seed(seed);
        let model = crate::models::initialize_lazy_parameters(
            ModelConfig::new(ModelKind::SmallCnn, 1, 8, 3)
                .with_width(4)
                .init(device)
                .unwrap(),
        );
        let images = Tensor::<4>::random([4, 1, 8, 8], Distribution::Normal(0.0, 1.0), device);
        let _ = crate::mixup::Mixable::forward_mixed(&model, images, None);
        model
    }

    /// Every float tensor of the module (parameters and running statistics), flattened.
    fn values(model: &Classifier) -> Vec<Vec<f32>> {
        struct All(Vec<Vec<f32>>);
        impl ModuleVisitor for All {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0
                    .push(param.val().into_data().try_to_vec::<f32>().unwrap());
            }
        }
        let mut all = All(Vec::new());
        model.valid().visit(&mut all);
        all.0
    }

    #[test]
    fn the_teacher_after_k_updates_is_the_hand_computed_average() {
        let device = Device::flex().autodiff();
        let students: Vec<Classifier> = (0..4).map(|seed| model(seed, &device)).collect();
        let decay = 0.6;
        let mut teacher = MeanTeacher::new(&students[0], decay);
        // Keeps at updates 1, 2, 3: min(1/2, 0.6), min(2/3, 0.6), min(3/4, 0.6).
        let keeps = [0.5, 0.6, 0.6];
        let mut expected = values(&students[0]);
        for (student, keep) in students[1..].iter().zip(keeps) {
            assert!((teacher.next_keep() - keep).abs() < 1e-12);
            teacher.update(student);
            for (average, now) in expected.iter_mut().zip(values(student)) {
                for (a, s) in average.iter_mut().zip(now) {
                    *a = (keep * *a as f64 + (1.0 - keep) * s as f64) as f32;
                }
            }
        }
        assert_eq!(teacher.updates(), 3);
        let got = values(teacher.model());
        assert_eq!(got.len(), expected.len());
        for (tensor, (g, e)) in got.iter().zip(&expected).enumerate() {
            for (a, b) in g.iter().zip(e) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "tensor {tensor}: {a} vs {b}"
                );
            }
        }
        // The tensors compared include the batch-norm running statistics (Burn visits a
        // running state as a float tensor), which each student's training pass set apart.
    }

    #[test]
    fn the_teacher_lives_off_the_autodiff_graph() {
        let device = Device::flex().autodiff();
        let student = model(1, &device);
        let mut teacher = MeanTeacher::new(&student, 0.999);
        teacher.update(&student);
        let images = Tensor::<4>::random([2, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let logits = crate::mixup::Mixable::forward_mixed(teacher.model(), images.inner(), None);
        assert!(!logits.device().is_autodiff());
        assert!(!logits.is_require_grad());
    }
}
