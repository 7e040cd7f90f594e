use std::sync::{Arc, Mutex};

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::MixPlan;
use crate::kernels;

/// A [`MixPlan`] placed on a device, ready to mix the hidden tensor at its mix point; or a
/// probe that records the hidden state at a mix point and changes nothing, so the same hook
/// that mixes can read any model's representations (for their spectrum).
#[derive(Clone, Debug)]
pub struct TensorMix {
    layer: usize,
    action: Action,
}

// One per batch: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Action {
    Mix {
        lambda: f64,
        partners: Tensor<1, Int>,
        /// The same permutation on the host, for the fused kernel on the CPU backend.
        permutation: Arc<[usize]>,
    },
    /// The hidden state seen at the point, one flattened row per example.
    Record(Arc<Mutex<Option<Tensor<2>>>>),
}

impl TensorMix {
    pub fn new(plan: &MixPlan, device: &Device) -> Self {
        let partners: Vec<i64> = plan.permutation.iter().map(|&i| i as i64).collect();
        let count = partners.len();
        Self {
            layer: plan.layer,
            action: Action::Mix {
                lambda: plan.lambda,
                partners: Tensor::from_data(TensorData::new(partners, [count]), device),
                permutation: plan.permutation.clone().into(),
            },
        }
    }

    /// A probe that records the hidden state at `point`; read it with [`TensorMix::recorded`].
    pub fn probe(point: usize) -> Self {
        Self {
            layer: point,
            action: Action::Record(Arc::default()),
        }
    }

    /// What a probe recorded in the last forward pass, `[batch, features]` (the features in
    /// the model's memory order, which a channel-blocked map permutes).
    pub fn recorded(&self) -> Option<Tensor<2>> {
        match &self.action {
            Action::Record(slot) => slot.lock().ok()?.take(),
            Action::Mix { .. } => None,
        }
    }

    pub fn layer(&self) -> usize {
        self.layer
    }

    /// `h ← λ·h + (1−λ)·h[perm]` when `point` is this plan's mix point, else `h` unchanged.
    ///
    /// Both terms stay in the autodiff graph, so each example's gradient comes from its own
    /// term and from the term of the example it was paired with.
    pub fn apply_at<const D: usize>(&self, point: usize, hidden: Tensor<D>) -> Tensor<D> {
        if point != self.layer {
            return hidden;
        }
        match &self.action {
            Action::Record(slot) => {
                let dims = hidden.dims();
                let rows = dims[0];
                let features = dims[1..].iter().product::<usize>();
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(hidden.clone().reshape([rows, features]));
                }
                hidden
            }
            Action::Mix {
                lambda,
                partners,
                permutation,
            } => {
                if kernels::on_flex_f32(&hidden) {
                    return kernels::mix::mix_rows(hidden, permutation, *lambda);
                }
                let mixed = hidden.clone().select(0, partners.clone());
                hidden.mul_scalar(*lambda) + mixed.mul_scalar(1.0 - *lambda)
            }
        }
    }
}

/// Applies an optional mix at a mix point; what every model's forward calls between blocks.
pub fn mix_at<const D: usize>(
    mix: Option<&TensorMix>,
    point: usize,
    hidden: Tensor<D>,
) -> Tensor<D> {
    match mix {
        Some(mix) => mix.apply_at(point, hidden),
        None => hidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    #[test]
    fn mixes_only_at_its_point_and_with_its_partners() {
        let device = Device::flex();
        let plan = MixPlan {
            lambda: 0.25,
            layer: 1,
            permutation: vec![2, 0, 1],
        };
        let mix = TensorMix::new(&plan, &device);
        let h = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], &device);
        let untouched = mix.apply_at(0, h.clone());
        untouched
            .into_data()
            .assert_eq(&h.clone().into_data(), true);
        let mixed = mix.apply_at(1, h);
        let expected = TensorData::from([
            [0.25 * 1.0 + 0.75 * 5.0, 0.25 * 2.0 + 0.75 * 6.0],
            [0.25 * 3.0 + 0.75 * 1.0, 0.25 * 4.0 + 0.75 * 2.0],
            [0.25 * 5.0 + 0.75 * 3.0, 0.25 * 6.0 + 0.75 * 4.0],
        ]);
        mixed
            .into_data()
            .assert_approx_eq::<f32>(&expected, Tolerance::default());
    }

    #[test]
    fn gradient_reaches_both_members_of_each_pair() {
        let device = Device::flex().autodiff();
        let plan = MixPlan {
            lambda: 0.7,
            layer: 0,
            permutation: vec![1, 2, 0],
        };
        let mix = TensorMix::new(&plan, &device);
        let h = Tensor::<2>::from_floats([[1.0], [2.0], [3.0]], &device).require_grad();
        // Weight each output row differently so the gradient reveals who contributed where.
        let weights = Tensor::<2>::from_floats([[1.0], [10.0], [100.0]], &device);
        let loss = (mix.apply_at(0, h.clone()) * weights).sum();
        let grads = loss.backward();
        let grad = h.grad(&grads).unwrap();
        // Row 0 feeds output 0 (λ) and output 2 (1−λ, as row 2's partner).
        let expected = TensorData::from([
            [0.7 * 1.0 + 0.3 * 100.0],
            [0.7 * 10.0 + 0.3 * 1.0],
            [0.7 * 100.0 + 0.3 * 10.0],
        ]);
        grad.into_data()
            .assert_approx_eq::<f32>(&expected, Tolerance::default());
    }
}
