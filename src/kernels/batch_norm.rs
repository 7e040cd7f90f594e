//! Training-mode batch normalisation of `[N, C, H, W]` f32 tensors on Flex, optionally
//! followed by a ReLU in the same pass.
//!
//! Forward: per channel, the mean and the biased variance in one pass (moments about the
//! channel's first value), then one pass writing `max((x − μ) · scale + β, floor)`, with
//! `floor` 0 for the ReLU. Backward: per channel, `Σ g` and `Σ g · x̂` in one pass over `dy`
//! and `x`, where `g` is `dy` gated by the ReLU, then one pass writing
//! `dx = γ / σ · (g − mean(g) − x̂ · mean(g · x̂))`. The gate is recomputed from `x` with the
//! forward pass's own operations rather than read from a kept output, so the output can be
//! freed as soon as its consumers are done, and the backward pass reads two tensors, not three.
//! Channels are independent, so the reductions run in parallel over channels and the
//! element-wise passes over `(n, c)` planes; the loops themselves are in `lanes`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, ExtensionType, Flex, TensorMetadata,
    backend_extension,
};
use burn::tensor::module::BatchNormTrainOutput;
use burn::tensor::{Shape, Tensor, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::filled_in_parallel;
use super::lanes::{Affine, Sums, write_affine, write_gated_gradient};

/// Batch normalisation with the batch's own statistics, as `burn::tensor::module::
/// batch_norm_train` computes it (biased variance returned, statistics detached), then a ReLU
/// if `relu`; through the kernels here when `input` is f32 on Flex.
pub fn batch_norm_train(
    input: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu: bool,
) -> BatchNormTrainOutput<4> {
    if !super::on_flex_f32(&input) {
        let mut result = burn::tensor::module::batch_norm_train(input, gamma, beta, epsilon);
        if relu {
            result.output = burn::tensor::activation::relu(result.output);
        }
        return result;
    }
    let result = <Dispatch as FlexBatchNorm>::batch_norm_train_flex(
        input.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        relu,
    );
    BatchNormTrainOutput {
        output: Tensor::from_dispatch(result.output),
        mean: Tensor::from_dispatch(result.mean),
        variance: Tensor::from_dispatch(result.variance),
    }
}

#[derive(ExtensionType)]
pub struct Normalized<B: Backend> {
    pub output: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub variance: FloatTensor<B>,
}

#[backend_extension(Autodiff, Flex)]
pub trait FlexBatchNorm: Backend {
    fn batch_norm_train_flex(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> Normalized<Self>;
}

impl FlexBatchNorm for Flex {
    fn batch_norm_train_flex(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> Normalized<Self> {
        let result = forward(&x, &gamma, &beta, epsilon, relu);
        Normalized {
            output: result.output,
            mean: result.mean,
            variance: result.variance,
        }
    }
}

impl<C: CheckpointStrategy> FlexBatchNorm for Autodiff<Flex, C> {
    fn batch_norm_train_flex(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> Normalized<Self> {
        let result = forward(
            x.primitive(),
            gamma.primitive(),
            beta.primitive(),
            epsilon,
            relu,
        );
        let output = match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = BatchNormState {
                    x: x.primitive().clone(),
                    channels: result.channels,
                };
                prep.finish(state, result.output)
            }
            OpsKind::UnTracked(prep) => prep.finish(result.output),
        };
        Normalized {
            output,
            mean: Self::from_inner(result.mean),
            variance: Self::from_inner(result.variance),
        }
    }
}

#[derive(Debug)]
struct BatchNormBackward;

#[derive(Clone, Debug)]
struct BatchNormState {
    x: FlexTensor,
    channels: Vec<Channel>,
}

/// What the backward pass needs of one channel from the forward pass.
#[derive(Clone, Copy, Debug)]
struct Channel {
    /// The forward map: with a ReLU, no gradient passes where it gave 0, and recomputing
    /// where that was costs less than keeping the output.
    affine: Affine,
    gamma: f32,
    /// `1 / √(σ² + ε)`, σ² the biased variance.
    inv_std: f64,
}

impl Backward<Flex, 3> for BatchNormBackward {
    type State = BatchNormState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let output_grad = grads.consume::<Flex>(&ops.node);
        let result = backward(&ops.state, &output_grad);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, result.x);
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, result.gamma);
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, result.beta);
        }
    }
}

/// A contiguous `[N, C, H, W]` f32 tensor viewed as its `(n, c)` planes.
struct Planes<'a> {
    values: &'a [f32],
    shape: Shape,
    batch: usize,
    channels: usize,
    plane: usize,
}

impl<'a> Planes<'a> {
    /// `tensor` must be contiguous (`FlexTensor::to_contiguous`).
    fn new(tensor: &'a FlexTensor) -> Self {
        let shape = tensor.shape();
        let dims = shape.as_slice();
        let (batch, channels, plane) = (dims[0], dims[1], dims[2] * dims[3]);
        Self {
            values: tensor.as_slice::<f32>().expect("a contiguous f32 tensor"),
            shape,
            batch,
            channels,
            plane,
        }
    }

    /// Channel `c`'s values, plane by plane.
    fn channel(&self, c: usize) -> impl Iterator<Item = &'a [f32]> {
        let values = self.values;
        (0..self.batch).map(move |n| {
            let start = (n * self.channels + c) * self.plane;
            &values[start..start + self.plane]
        })
    }

    fn per_channel(&self) -> f64 {
        (self.batch * self.plane) as f64
    }

    /// A new tensor of this shape, each `(n, c)` plane written by `fill(c, start, plane)`,
    /// where `start` is the plane's offset in every tensor of this shape. `fill` must write
    /// every element of the plane it gets.
    fn map_planes(
        &self,
        fill: impl Fn(usize, usize, &mut [MaybeUninit<f32>]) + Sync,
    ) -> FlexTensor {
        // Small planes go several to a task, so that scheduling does not cost more than them.
        let plane = self.plane.max(1);
        let planes_per_task = (4096 / plane).max(1);
        let len = self.batch * self.channels * self.plane;
        let out = filled_in_parallel(len, plane * planes_per_task, |task, values| {
            for (offset, values) in values.chunks_mut(plane).enumerate() {
                let index = task * planes_per_task + offset;
                fill(index % self.channels, index * self.plane, values);
            }
        });
        FlexTensor::from_data(TensorData::new(out, self.shape.clone()))
    }

    fn plane_at(&self, start: usize) -> &'a [f32] {
        &self.values[start..start + self.plane]
    }
}

fn vector(values: Vec<f32>) -> FlexTensor {
    let len = values.len();
    FlexTensor::from_data(TensorData::new(values, [len]))
}

fn f32_values(tensor: &FlexTensor) -> Vec<f32> {
    tensor
        .to_contiguous()
        .as_slice::<f32>()
        .expect("a contiguous f32 tensor")
        .to_vec()
}

struct Forward {
    output: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    channels: Vec<Channel>,
}

fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
    relu: bool,
) -> Forward {
    let x = x.to_contiguous();
    let x = Planes::new(&x);
    let (gamma, beta) = (f32_values(gamma), f32_values(beta));
    let count = x.per_channel();
    let statistics: Vec<(f64, f64)> = (0..x.channels)
        .into_par_iter()
        .map(|c| {
            // Moments about the channel's first value, so that a large mean does not swamp
            // the variance in f32; then one more pass would not change the result.
            let shift = x.channel(c).next().map_or(0.0, |plane| plane[0]);
            let mut sums = Sums::default();
            for plane in x.channel(c) {
                sums.add_shifted_moments(plane, shift);
            }
            let (sum, squares) = sums.total();
            let offset = sum / count;
            let variance = (squares / count - offset * offset).max(0.0);
            (shift as f64 + offset, variance)
        })
        .collect();
    // (x − μ) · scale + β: centring first keeps the precision a large mean would take.
    let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
    let channels: Vec<Channel> = statistics
        .iter()
        .zip(gamma.iter().zip(&beta))
        .map(|(&(mean, variance), (&gamma, &beta))| {
            let inv_std = 1.0 / (variance + epsilon).sqrt();
            let affine = Affine {
                mean: mean as f32,
                scale: (gamma as f64 * inv_std) as f32,
                shift: beta,
                floor,
            };
            Channel {
                affine,
                gamma,
                inv_std,
            }
        })
        .collect();
    let output =
        x.map_planes(|c, start, out| write_affine(out, x.plane_at(start), channels[c].affine));
    Forward {
        output,
        mean: vector(statistics.iter().map(|s| s.0 as f32).collect()),
        variance: vector(statistics.iter().map(|s| s.1 as f32).collect()),
        channels,
    }
}

struct Gradient {
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
}

fn backward(state: &BatchNormState, output_grad: &FlexTensor) -> Gradient {
    let x = state.x.to_contiguous();
    let x = Planes::new(&x);
    let dy = output_grad.to_contiguous();
    let dy = Planes::new(&dy);
    let channels = &state.channels;
    // Per channel, with g the gradient past the ReLU (dy, or 0 where the output was 0):
    // Σ g and Σ g · x̂ = s · (Σ g · x − μ · Σ g).
    let sums: Vec<(f64, f64)> = channels
        .par_iter()
        .enumerate()
        .map(|(c, channel)| {
            let mut sums = Sums::default();
            for (dys, xs) in dy.channel(c).zip(x.channel(c)) {
                sums.add_gated_sum_and_dot(dys, xs, channel.affine);
            }
            let (sum_g, sum_g_x) = sums.total();
            let mean = channel.affine.mean as f64;
            (sum_g, channel.inv_std * (sum_g_x - mean * sum_g))
        })
        .collect();
    let count = x.per_channel();
    // dx = k · (g − mean(g) − x̂ · mean(g · x̂)), x̂ = (x − μ) · s, k = γ · s, written as
    // dx = k · g + a · (x − μ) + b with a = −k · s · mean(g · x̂), b = −k · mean(g).
    let coefficients: Vec<[f32; 3]> = channels
        .iter()
        .zip(&sums)
        .map(|(channel, &(sum_g, sum_g_xhat))| {
            let k = channel.gamma as f64 * channel.inv_std;
            let a = -k * channel.inv_std * sum_g_xhat / count;
            let b = -k * sum_g / count;
            [k as f32, a as f32, b as f32]
        })
        .collect();
    let x_grad = x.map_planes(|c, start, out| {
        let (dy, xs) = (dy.plane_at(start), x.plane_at(start));
        write_gated_gradient(out, dy, xs, channels[c].affine, coefficients[c]);
    });
    Gradient {
        x: x_grad,
        gamma: vector(sums.iter().map(|s| s.1 as f32).collect()),
        beta: vector(sums.iter().map(|s| s.0 as f32).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    fn tolerance() -> Tolerance<f32> {
        Tolerance::rel_abs(1e-4, 1e-4)
    }

    /// Burn's own batch norm, then its ReLU: what the kernels must reproduce.
    fn reference(
        x: Tensor<4>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        epsilon: f64,
        relu: bool,
    ) -> BatchNormTrainOutput<4> {
        let mut result = burn::tensor::module::batch_norm_train(x, gamma, beta, epsilon);
        if relu {
            result.output = burn::tensor::activation::relu(result.output);
        }
        result
    }

    type BatchNorm = fn(Tensor<4>, Tensor<1>, Tensor<1>, f64, bool) -> BatchNormTrainOutput<4>;

    /// Normal samples from a seeded stream of the test's own, so a failure can be replayed
    /// (the backend's generator is shared by tests running in parallel).
    fn normal<const D: usize>(
        rng: &mut ChaCha12Rng,
        dims: [usize; D],
        mean: f32,
        std: f32,
        device: &Device,
    ) -> Tensor<D> {
        let normal = rand_distr::Normal::new(mean, std).unwrap();
        let values: Vec<f32> = (0..dims.iter().product())
            .map(|_| rng.sample(normal))
            .collect();
        Tensor::from_data(TensorData::new(values, dims), device)
    }

    #[test]
    fn forward_and_gradients_match_burn_with_and_without_relu() {
        let device = Device::flex().autodiff();
        for seed in 0..10 {
            let mut rng = ChaCha12Rng::seed_from_u64(seed);
            for relu in [false, true] {
                for dims in [
                    [4, 3, 5, 5],
                    [4, 8, 1, 1],
                    [16, 2, 7, 3],
                    [8, 4, 6, 6],
                    [3, 2, 10, 10],
                ] {
                    let x = normal(&mut rng, dims, 2.0, 3.0, &device);
                    let gamma = normal(&mut rng, [dims[1]], 1.0, 0.5, &device);
                    let beta = normal(&mut rng, [dims[1]], 0.0, 0.5, &device);
                    let projection = normal(&mut rng, dims, 0.0, 1.0, &device);
                    let run = |norm: BatchNorm| {
                        let (x, gamma, beta) = (
                            x.clone().require_grad(),
                            gamma.clone().require_grad(),
                            beta.clone().require_grad(),
                        );
                        let result = norm(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu);
                        let grads = (result.output.clone() * projection.clone())
                            .sum()
                            .backward();
                        [
                            result.output.inner().into_data(),
                            result.mean.inner().into_data(),
                            result.variance.inner().into_data(),
                            x.grad(&grads).unwrap().into_data(),
                            gamma.grad(&grads).unwrap().into_data(),
                            beta.grad(&grads).unwrap().into_data(),
                        ]
                    };
                    let expected = run(reference);
                    let actual = run(batch_norm_train);
                    let names = ["output", "mean", "variance", "dx", "dgamma", "dbeta"];
                    for (name, (actual, expected)) in names.iter().zip(actual.iter().zip(&expected))
                    {
                        let case = format!("{name} of {dims:?}, relu {relu}, seed {seed}");
                        assert_eq!(actual.shape(), expected.shape(), "{case}");
                        let pairs = actual.iter::<f32>().zip(expected.iter::<f32>());
                        for (index, (a, e)) in pairs.enumerate() {
                            let bound = 1e-4 * a.abs().max(e.abs()) + 1e-4;
                            assert!((a - e).abs() <= bound, "{case}: [{index}] {a} vs {e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn without_autodiff_the_output_is_normalised_per_channel() {
        let device = Device::flex();
        let x = Tensor::<4>::random([6, 3, 4, 4], Distribution::Normal(5.0, 2.0), &device);
        let ones = Tensor::<1>::ones([3], &device);
        let result = batch_norm_train(x, ones.clone(), ones.zeros_like(), 0.0, false);
        let output = result.output.swap_dims(0, 1).reshape([3, -1]);
        let mean = output.clone().mean_dim(1).into_data();
        let variance = output.var_bias(1).into_data();
        mean.assert_approx_eq::<f32>(&TensorData::from([[0.0f32], [0.0], [0.0]]), tolerance());
        variance.assert_approx_eq::<f32>(&TensorData::from([[1.0f32], [1.0], [1.0]]), tolerance());
    }
}
