//! The mix of hidden states, `out[i] = w_i ⊙ h[i] + (1 − w_i) ⊙ h[perm[i]]` over the rows (first
//! dimension) of an f32 tensor on Flex, in one pass; `w_i` is one λ for the batch, one per
//! row, or one per element (box and block mixes). Its gradient is
//! `dh[j] = w_j ⊙ g[j] + (1 − w_{perm⁻¹[j]}) ⊙ g[perm⁻¹[j]]`: a gather again, never a scatter,
//! so the backward pass is one pass too. Burn's composition (select, two scalings, an add;
//! scatter-add, two scalings, an add backward) makes eight.

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
use super::lanes::{
    write_blend, write_copy, write_plus_complement, write_scaled, write_weighted_blend,
};

/// How much of its own row each output row keeps; its partner gives the rest.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OwnWeights {
    /// One λ for every row.
    Uniform(f64),
    /// One weight per row.
    Rows(Arc<[f32]>),
    /// One weight per element of a row, in stretches of one row's length.
    Elements {
        /// The weights, row after row.
        values: Arc<Vec<f32>>,
        /// Which rows have weights of their own.
        rows: ElementRows,
    },
}

/// Which stretch of an [`OwnWeights::Elements`]' values each row uses.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ElementRows {
    /// The first, for every row.
    Shared,
    /// The row's own stretch, or `None` where the row keeps itself (weight 1 everywhere): rows
    /// mixed at another point cost a copy, not a blend, and no weights.
    PerRow(Arc<[Option<usize>]>),
}

/// One row's weights.
enum RowWeight<'a> {
    /// The row's own weight and its partner's, each rounded once from f64 where given so.
    Scalar(f32, f32),
    Elements(&'a [f32]),
    /// Weight 1 everywhere.
    Keep,
}

impl OwnWeights {
    fn row(&self, index: usize, row_len: usize) -> RowWeight<'_> {
        match self {
            OwnWeights::Uniform(w) => RowWeight::Scalar(*w as f32, (1.0 - *w) as f32),
            OwnWeights::Rows(w) => RowWeight::Scalar(w[index], 1.0 - w[index]),
            OwnWeights::Elements { values, rows } => {
                let stretch = match rows {
                    ElementRows::Shared => Some(0),
                    ElementRows::PerRow(stretches) => stretches[index],
                };
                match stretch {
                    Some(k) => RowWeight::Elements(&values[k * row_len..][..row_len]),
                    None => RowWeight::Keep,
                }
            }
        }
    }

    /// Whether the weights fit `rows` rows of `row_len` elements.
    pub fn fits(&self, rows: usize, row_len: usize) -> bool {
        match self {
            OwnWeights::Uniform(_) => true,
            OwnWeights::Rows(w) => w.len() == rows,
            OwnWeights::Elements {
                values,
                rows: ElementRows::Shared,
            } => values.len() == row_len,
            OwnWeights::Elements {
                values,
                rows: ElementRows::PerRow(stretches),
            } => {
                stretches.len() == rows
                    && stretches
                        .iter()
                        .flatten()
                        .all(|&k| (k + 1) * row_len <= values.len())
            }
        }
    }
}

/// `w ⊙ h + (1−w) ⊙ h[partners]` along dimension 0, differentiable in `h`. `h` must be f32 on
/// Flex ([`super::on_flex_f32`]), `partners` a permutation of its rows and `own` fit them.
pub(crate) fn mix_rows<const D: usize>(
    h: Tensor<D>,
    partners: &Arc<[usize]>,
    own: &OwnWeights,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FlexMix>::mix_rows_flex(
        h.into_dispatch(),
        partners.clone(),
        own.clone(),
    ))
}

#[backend_extension(Autodiff, Flex)]
/// Mixing of rows with weights in one pass, on Flex tensors.
pub(crate) trait FlexMix: Backend {
    /// `own ⊙ h + (1 − own) ⊙ h[partners]`, row by row.
    fn mix_rows_flex(
        h: FloatTensor<Self>,
        partners: Arc<[usize]>,
        own: OwnWeights,
    ) -> FloatTensor<Self>;
}

impl FlexMix for Flex {
    fn mix_rows_flex(h: FlexTensor, partners: Arc<[usize]>, own: OwnWeights) -> FlexTensor {
        mix(&h, &partners, &own, Direction::Forward)
    }
}

impl<C: CheckpointStrategy> FlexMix for Autodiff<Flex, C> {
    fn mix_rows_flex(
        h: FloatTensor<Self>,
        partners: Arc<[usize]>,
        own: OwnWeights,
    ) -> FloatTensor<Self> {
        match MixBackward
            .prepare::<C>([h.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = mix(h.primitive(), &partners, &own, Direction::Forward);
                prep.finish((inverse(&partners), own), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(mix(h.primitive(), &partners, &own, Direction::Forward))
            }
        }
    }
}

#[derive(Debug)]
struct MixBackward;

impl Backward<Flex, 1> for MixBackward {
    /// The inverse permutation and the weights.
    type State = (Vec<usize>, OwnWeights);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let output_grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            let (inverse, own) = ops.state;
            let grad = mix(&output_grad, &inverse, &own, Direction::Backward);
            grads.register::<Flex>(node.id, grad);
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

/// Whose weights the partner's term takes: in the forward pass row `i`'s own complement;
/// in the backward pass (`partners` inverted) the complement of the row that took from it.
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Forward,
    Backward,
}

#[allow(clippy::expect_used, reason = "cannot fail: a contiguous f32 tensor")]
fn mix(h: &FlexTensor, partners: &[usize], own: &OwnWeights, direction: Direction) -> FlexTensor {
    let shape = h.shape();
    let h = h.to_contiguous();
    let values = h.as_slice::<f32>().expect("a contiguous f32 tensor");
    let rows = shape.as_slice()[0];
    assert_eq!(partners.len(), rows, "one partner per row");
    let row = values.len() / rows.max(1);
    assert!(own.fits(rows, row), "mix weights fit the rows");
    let out = filled_in_parallel(values.len(), row.max(1), |index, out| {
        let partner = partners[index];
        let mine = &values[index * row..][..row];
        let theirs = &values[partner * row..][..row];
        let weight_row = match direction {
            Direction::Forward => index,
            Direction::Backward => partner,
        };
        match (own.row(index, row), own.row(weight_row, row)) {
            (RowWeight::Scalar(a, _), RowWeight::Scalar(_, b)) => {
                write_blend(out, mine, theirs, a, b)
            }
            (RowWeight::Elements(a), RowWeight::Elements(b)) => {
                write_weighted_blend(out, mine, theirs, a, b)
            }
            (RowWeight::Keep, RowWeight::Keep) => write_copy(out, mine),
            (RowWeight::Keep, RowWeight::Elements(b)) => {
                write_plus_complement(out, mine, theirs, b)
            }
            (RowWeight::Elements(a), RowWeight::Keep) => write_scaled(out, mine, a),
            _ => unreachable!("a row's weights and its partner's are of one kind"),
        }
    });
    FlexTensor::from_data(TensorData::new(out, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Int, Tolerance};

    /// Burn's own operations: `h ⊙ w + h[partners] ⊙ (1 − w)`, `w` broadcast from `w_shape`.
    fn composed<const D: usize>(
        h: Tensor<D>,
        partners: &[usize],
        w: Vec<f32>,
        w_shape: [usize; D],
    ) -> Tensor<D> {
        let indices: Vec<i64> = partners.iter().map(|&p| p as i64).collect();
        let indices =
            Tensor::<1, Int>::from_data(TensorData::new(indices, [partners.len()]), &h.device());
        let w = Tensor::<D>::from_data(TensorData::new(w, w_shape), &h.device());
        let others = h.clone().select(0, indices);
        h * w.clone() + others * w.neg().add_scalar(1.0)
    }

    #[test]
    fn forward_and_gradient_match_burns_composition() {
        let device = Device::flex().autodiff();
        let partners: Arc<[usize]> = vec![3, 0, 4, 1, 2].into();
        let dims = [5, 3, 4, 2];
        let h = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let projection = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let row: Vec<f32> = (0..24).map(|i| (i % 5) as f32 / 4.0).collect();
        let per_row: Vec<f32> = (0..120).map(|i| ((i * 7) % 11) as f32 / 10.0).collect();
        // Rows 1 and 3 keep themselves; rows 0, 2 and 4 take stretches 2, 0 and 1.
        let stretches: Vec<Option<usize>> = vec![Some(2), None, Some(0), None, Some(1)];
        let sparse: Vec<f32> = per_row[..72].to_vec();
        let expanded: Vec<f32> = stretches
            .iter()
            .flat_map(|s| match s {
                Some(k) => sparse[k * 24..(k + 1) * 24].to_vec(),
                None => vec![1.0; 24],
            })
            .collect();
        let cases = [
            (OwnWeights::Uniform(0.3), vec![0.3], [1, 1, 1, 1]),
            (
                OwnWeights::Rows(vec![0.1, 1.0, 0.5, 0.0, 0.9].into()),
                vec![0.1, 1.0, 0.5, 0.0, 0.9],
                [5, 1, 1, 1],
            ),
            (
                OwnWeights::Elements {
                    values: Arc::new(row.clone()),
                    rows: ElementRows::Shared,
                },
                row,
                [1, 3, 4, 2],
            ),
            (
                OwnWeights::Elements {
                    values: Arc::new(per_row.clone()),
                    rows: ElementRows::PerRow((0..5).map(Some).collect()),
                },
                per_row,
                dims,
            ),
            (
                OwnWeights::Elements {
                    values: Arc::new(sparse),
                    rows: ElementRows::PerRow(stretches.into()),
                },
                expanded,
                dims,
            ),
        ];
        for (own, w, w_shape) in cases {
            let run = |fused: bool| {
                let h = h.clone().require_grad();
                let out = if fused {
                    mix_rows(h.clone(), &partners, &own)
                } else {
                    composed(h.clone(), &partners, w.clone(), w_shape)
                };
                let grads = (out.clone() * projection.clone()).sum().backward();
                (out.inner().into_data(), h.grad(&grads).unwrap().into_data())
            };
            let ((out, grad), (expected_out, expected_grad)) = (run(true), run(false));
            out.assert_approx_eq::<f32>(&expected_out, Tolerance::default());
            grad.assert_approx_eq::<f32>(&expected_grad, Tolerance::default());
        }
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
