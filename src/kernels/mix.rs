//! The mix of hidden states, `out[i] = λ·h[i] + (1−λ)·h[perm[i]]` over the rows (first
//! dimension) of an f32 tensor on Flex, in one pass. Its gradient is the same operation with
//! the inverse permutation, `dh[j] = λ·g[j] + (1−λ)·g[perm⁻¹[j]]`: a gather again, never a
//! scatter, so the backward pass is one pass too. Burn's composition (select, two scalings,
//! an add; scatter-add, two scalings, an add backward) makes eight.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, TensorData};

use super::filled_in_parallel;
use super::lanes::write_blend;

/// `λ·h + (1−λ)·h[partners]` along dimension 0, differentiable in `h`. `h` must be f32 on
/// Flex ([`super::on_flex_f32`]) and `partners` a permutation of its rows.
pub fn mix_rows<const D: usize>(h: Tensor<D>, partners: &Arc<[usize]>, lambda: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FlexMix>::mix_rows_flex(
        h.into_dispatch(),
        partners.clone(),
        lambda,
    ))
}

#[backend_extension(Autodiff, Flex)]
pub trait FlexMix: Backend {
    fn mix_rows_flex(
        h: FloatTensor<Self>,
        partners: Arc<[usize]>,
        lambda: f64,
    ) -> FloatTensor<Self>;
}

impl FlexMix for Flex {
    fn mix_rows_flex(h: FlexTensor, partners: Arc<[usize]>, lambda: f64) -> FlexTensor {
        mix(&h, &partners, lambda)
    }
}

impl<C: CheckpointStrategy> FlexMix for Autodiff<Flex, C> {
    fn mix_rows_flex(
        h: FloatTensor<Self>,
        partners: Arc<[usize]>,
        lambda: f64,
    ) -> FloatTensor<Self> {
        match MixBackward
            .prepare::<C>([h.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = mix(h.primitive(), &partners, lambda);
                prep.finish((inverse(&partners), lambda), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(mix(h.primitive(), &partners, lambda)),
        }
    }
}

#[derive(Debug)]
struct MixBackward;

impl Backward<Flex, 1> for MixBackward {
    /// The inverse permutation and λ.
    type State = (Vec<usize>, f64);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let output_grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            let (inverse, lambda) = ops.state;
            grads.register::<Flex>(node.id, mix(&output_grad, &inverse, lambda));
        }
    }
}

fn inverse(permutation: &[usize]) -> Vec<usize> {
    let mut inverse = vec![0; permutation.len()];
    for (i, &p) in permutation.iter().enumerate() {
        inverse[p] = i;
    }
    inverse
}

fn mix(h: &FlexTensor, partners: &[usize], lambda: f64) -> FlexTensor {
    let shape = h.shape();
    let h = h.to_contiguous();
    let values = h.as_slice::<f32>().expect("a contiguous f32 tensor");
    let rows = shape.as_slice()[0];
    assert_eq!(partners.len(), rows, "one partner per row");
    let row = values.len() / rows.max(1);
    let (own, other) = (lambda as f32, (1.0 - lambda) as f32);
    let out = filled_in_parallel(values.len(), row.max(1), |index, out| {
        let mine = &values[index * row..][..row];
        let partner = &values[partners[index] * row..][..row];
        write_blend(out, mine, partner, own, other);
    });
    FlexTensor::from_data(TensorData::new(out, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Int, Tolerance};

    fn composed<const D: usize>(h: Tensor<D>, partners: &[usize], lambda: f64) -> Tensor<D> {
        let indices: Vec<i64> = partners.iter().map(|&p| p as i64).collect();
        let indices =
            Tensor::<1, Int>::from_data(TensorData::new(indices, [partners.len()]), &h.device());
        let others = h.clone().select(0, indices);
        h.mul_scalar(lambda) + others.mul_scalar(1.0 - lambda)
    }

    #[test]
    fn forward_and_gradient_match_burns_composition() {
        let device = Device::flex().autodiff();
        let partners: Arc<[usize]> = vec![3, 0, 4, 1, 2].into();
        let h = Tensor::<4>::random([5, 3, 4, 2], Distribution::Normal(0.0, 1.0), &device);
        let projection = Tensor::<4>::random([5, 3, 4, 2], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let h = h.clone().require_grad();
            let out = if fused {
                mix_rows(h.clone(), &partners, 0.3)
            } else {
                composed(h.clone(), &partners, 0.3)
            };
            let grads = (out.clone() * projection.clone()).sum().backward();
            (out.inner().into_data(), h.grad(&grads).unwrap().into_data())
        };
        let ((out, grad), (expected_out, expected_grad)) = (run(true), run(false));
        out.assert_approx_eq::<f32>(&expected_out, Tolerance::default());
        grad.assert_approx_eq::<f32>(&expected_grad, Tolerance::default());
    }

    #[test]
    fn inverse_undoes_the_permutation() {
        let permutation = [2, 0, 3, 1];
        let inverse = inverse(&permutation);
        for (i, &p) in permutation.iter().enumerate() {
            assert_eq!(inverse[p], i);
        }
    }
}
