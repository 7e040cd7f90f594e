//! Training-mode batch normalisation of f32 tensors on Flex, optionally followed by a ReLU in
//! the same pass. The tensor is plain `[N, C, H, W]` or channel-blocked `[N, C / b, H, W, b]`
//! (channels in blocks of `b` innermost, oneDNN's `nChw16c` / `nChw8c` with `b` 16 / 8).
//!
//! Forward: per channel, the mean and the biased variance in one pass (moments about the
//! channel's first value), then one pass writing `max((x − μ) · scale + β, floor)`, with
//! `floor` 0 for the ReLU. Backward: per channel, `Σ g` and `Σ g · x̂` in one pass over `dy`
//! and `x`, where `g` is `dy` gated by the ReLU, then one pass writing
//! `dx = γ / σ · (g − mean(g) − x̂ · mean(g · x̂))`. The gate is recomputed from `x` with the
//! forward pass's own operations rather than read from a kept output, so the output can be
//! freed as soon as its consumers are done, and the backward pass reads two tensors, not three.
//!
//! Both layouts are walked as runs: the contiguous values of one image and one block of
//! channels (a plane when `b = 1`), whose element `i` belongs to channel `i % b` of the block.
//! Blocks are independent, so the reductions run in parallel over blocks and the element-wise
//! passes over runs; the loops themselves are in `lanes`.

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
use super::lanes::{
    Affine, LANES, LaneAffine, LaneGradient, Sums, per_lane, write_affine, write_gated_gradient,
};
use super::layout::{block_of, from_plain, to_plain};

/// Batch normalisation with the batch's own statistics, as `burn::tensor::module::
/// batch_norm_train` computes it (biased variance returned, statistics detached), then a ReLU
/// if `relu`; through the kernels here when `input` is f32 on Flex. `input` is `[N, C, H, W]`
/// or channel-blocked `[N, C / b, H, W, b]` with `b` dividing 16.
pub(crate) fn batch_norm_train<const D: usize>(
    input: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu: bool,
) -> BatchNormTrainOutput<D> {
    assert!(D == 4 || D == 5, "batch norm of a rank-{D} tensor");
    if !super::on_flex_f32(&input) {
        let block = block_of(&input.dims());
        let result = burn::tensor::module::batch_norm_train(to_plain(input), gamma, beta, epsilon);
        let output = if relu {
            burn::tensor::activation::relu(result.output)
        } else {
            result.output
        };
        return BatchNormTrainOutput {
            output: from_plain(output, block),
            mean: result.mean,
            variance: result.variance,
        };
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
/// A training-mode batch norm's output and the batch statistics it used.
pub(crate) struct Normalized<B: Backend> {
    /// The normalised, scaled and shifted input.
    pub output: FloatTensor<B>,
    /// Per-channel batch mean.
    pub mean: FloatTensor<B>,
    /// Per-channel biased batch variance.
    pub variance: FloatTensor<B>,
}

#[backend_extension(Autodiff, Flex)]
/// Training-mode batch norm in one pass over channel-blocked or plain maps.
pub(crate) trait FlexBatchNorm: Backend {
    /// Normalises `input` by its batch statistics, then scales by `weight` and shifts by `bias`.
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

/// A contiguous f32 tensor, plain or channel-blocked, viewed as its runs: the values of one
/// image and one block of channels, `(n, block)` in memory order.
struct Runs<'a> {
    values: &'a [f32],
    shape: Shape,
    batch: usize,
    blocks: usize,
    /// Channels per block, `b`; 1 for the plain layout.
    block: usize,
    run: usize,
}

impl<'a> Runs<'a> {
    /// `tensor` must be contiguous (`FlexTensor::to_contiguous`).
    #[allow(
        clippy::expect_used,
        clippy::panic,
        reason = "cannot fail: batch norm of a tensor of shape …; a contiguous f32 tensor"
    )]
    fn new(tensor: &'a FlexTensor) -> Self {
        let shape = tensor.shape();
        let (batch, blocks, block, run) = match *shape.as_slice() {
            [n, c, h, w] => (n, c, 1, h * w),
            [n, blocks, h, w, b] => (n, blocks, b, h * w * b),
            ref dims => panic!("batch norm of a tensor of shape {dims:?}"),
        };
        assert!(
            LANES.is_multiple_of(block),
            "channel blocks of {block} do not divide {LANES} lanes"
        );
        Self {
            values: tensor.as_slice::<f32>().expect("a contiguous f32 tensor"),
            shape,
            batch,
            blocks,
            block,
            run,
        }
    }

    fn channels(&self) -> usize {
        self.blocks * self.block
    }

    /// The run of image `n` and block `g`.
    fn run(&self, n: usize, g: usize) -> &'a [f32] {
        self.run_at((n * self.blocks + g) * self.run)
    }

    /// Per channel, two sums over all its values: `add(sums, n, g)` adds those of the run of
    /// image `n` and block `g`. Blocks are split across images too, so that a map of one
    /// block (16 channels at AVX-512's block size) still keeps every thread busy. The split
    /// is fixed ([`SUM_TASKS`]), never the thread count: the order of the additions, and so
    /// every rounding, is the same on any machine, which exact resume relies on.
    fn channel_sums(&self, add: impl Fn(&mut Sums, usize, usize) + Sync) -> Vec<(f64, f64)> {
        let splits = SUM_TASKS.div_ceil(self.blocks).clamp(1, self.batch.max(1));
        let images_per_split = self.batch.div_ceil(splits);
        let partial: Vec<Vec<(f64, f64)>> = (0..self.blocks * splits)
            .into_par_iter()
            .map(|task| {
                let (g, split) = (task / splits, task % splits);
                let first = split * images_per_split;
                let mut sums = Sums::default();
                for n in first..(first + images_per_split).min(self.batch) {
                    add(&mut sums, n, g);
                }
                sums.per_channel(self.block)
            })
            .collect();
        let mut totals = vec![(0.0, 0.0); self.channels()];
        for (task, block_sums) in partial.iter().enumerate() {
            let block = &mut totals[task / splits * self.block..][..self.block];
            for (total, sums) in block.iter_mut().zip(block_sums) {
                total.0 += sums.0;
                total.1 += sums.1;
            }
        }
        totals
    }

    fn per_channel(&self) -> f64 {
        (self.batch * self.run / self.block) as f64
    }

    /// A new tensor of this shape, each run written by `fill(g, start, run)`, where `g` is
    /// the run's block of channels and `start` its offset in every tensor of this shape.
    /// `fill` must write every element of the run it gets.
    fn map_runs(&self, fill: impl Fn(usize, usize, &mut [MaybeUninit<f32>]) + Sync) -> FlexTensor {
        // Short runs go several to a task, so that scheduling does not cost more than them.
        let run = self.run.max(1);
        let runs_per_task = (4096 / run).max(1);
        let len = self.batch * self.blocks * self.run;
        let out = filled_in_parallel(len, run * runs_per_task, |task, values| {
            for (offset, values) in values.chunks_mut(run).enumerate() {
                let index = task * runs_per_task + offset;
                fill(index % self.blocks, index * self.run, values);
            }
        });
        FlexTensor::from_data(TensorData::new(out, self.shape.clone()))
    }

    fn run_at(&self, start: usize) -> &'a [f32] {
        &self.values[start..start + self.run]
    }
}

/// Tasks a map's channel sums are split into: enough to keep 16 threads busy.
const SUM_TASKS: usize = 32;

fn vector(values: Vec<f32>) -> FlexTensor {
    let len = values.len();
    FlexTensor::from_data(TensorData::new(values, [len]))
}

#[allow(clippy::expect_used, reason = "cannot fail: a contiguous f32 tensor")]
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
    let x = Runs::new(&x);
    let (gamma, beta) = (f32_values(gamma), f32_values(beta));
    let count = x.per_channel();
    let block = x.block;
    // Moments about each channel's first value, so that a large mean does not swamp the
    // variance in f32; then one more pass would not change the result.
    let shifts: Vec<[f32; LANES]> = (0..x.blocks)
        .map(|g| match x.batch * x.run {
            0 => [0.0; LANES],
            _ => per_lane(block, |c| x.run(0, g)[c]),
        })
        .collect();
    let sums = x.channel_sums(|sums, n, g| sums.add_shifted_moments(x.run(n, g), &shifts[g]));
    let statistics: Vec<(f64, f64)> = sums
        .iter()
        .enumerate()
        .map(|(c, &(sum, squares))| {
            let shift = shifts[c / block][c % block];
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
    assert_eq!(channels.len(), x.channels(), "one γ and one β per channel");
    let maps = lane_affines(&channels, block);
    let output = x.map_runs(|g, start, out| write_affine(out, x.run_at(start), &maps[g]));
    Forward {
        output,
        mean: vector(statistics.iter().map(|s| s.0 as f32).collect()),
        variance: vector(statistics.iter().map(|s| s.1 as f32).collect()),
        channels,
    }
}

/// Each block's affine maps, lane by lane.
fn lane_affines(channels: &[Channel], block: usize) -> Vec<LaneAffine> {
    let maps: Vec<Affine> = channels.iter().map(|channel| channel.affine).collect();
    maps.chunks(block).map(LaneAffine::new).collect()
}

struct Gradient {
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
}

fn backward(state: &BatchNormState, output_grad: &FlexTensor) -> Gradient {
    let x = state.x.to_contiguous();
    let x = Runs::new(&x);
    let dy = output_grad.to_contiguous();
    let dy = Runs::new(&dy);
    let channels = &state.channels;
    let block = x.block;
    let maps = lane_affines(channels, block);
    // Per channel, with g the gradient past the ReLU (dy, or 0 where the output was 0):
    // Σ g and Σ g · x̂ = s · (Σ g · x − μ · Σ g).
    let sums: Vec<(f64, f64)> = x
        .channel_sums(|sums, n, g| sums.add_gated_sum_and_dot(dy.run(n, g), x.run(n, g), &maps[g]))
        .into_iter()
        .zip(channels)
        .map(|((sum_g, sum_g_x), channel)| {
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
    let gradients: Vec<LaneGradient> = coefficients
        .chunks(block)
        .zip(&maps)
        .map(|(block, &affine)| {
            let [k, a, b] = [0, 1, 2].map(|j| per_lane(block.len(), |c| block[c][j]));
            LaneGradient { affine, k, a, b }
        })
        .collect();
    let x_grad = x.map_runs(|g, start, out| {
        write_gated_gradient(out, dy.run_at(start), x.run_at(start), &gradients[g]);
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

    /// Burn's own batch norm (ε = 1e-5), then its ReLU: what the kernels must reproduce.
    fn reference(
        x: Tensor<4>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        relu: bool,
    ) -> BatchNormTrainOutput<4> {
        let mut result = burn::tensor::module::batch_norm_train(x, gamma, beta, 1e-5);
        if relu {
            result.output = burn::tensor::activation::relu(result.output);
        }
        result
    }

    /// A batch norm's inputs, and a projection of its output whose sum the gradients are of
    /// (so that every output element gets its own gradient).
    struct Inputs {
        x: Tensor<4>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        projection: Tensor<4>,
    }

    impl Inputs {
        /// `x` normal with `(mean, std)`, γ around 1, β around 0.
        fn normal(
            rng: &mut ChaCha12Rng,
            dims: [usize; 4],
            (mean, std): (f32, f32),
            device: &Device,
        ) -> Self {
            Self {
                x: normal(rng, dims, mean, std, device),
                gamma: normal(rng, [dims[1]], 1.0, 0.5, device),
                beta: normal(rng, [dims[1]], 0.0, 0.5, device),
                projection: normal(rng, dims, 0.0, 1.0, device),
            }
        }

        /// Output, mean, variance, and the gradients of x, γ and β, of `norm` on these inputs.
        fn results(
            &self,
            norm: impl Fn(Tensor<4>, Tensor<1>, Tensor<1>) -> BatchNormTrainOutput<4>,
        ) -> [TensorData; 6] {
            let x = self.x.clone().require_grad();
            let gamma = self.gamma.clone().require_grad();
            let beta = self.beta.clone().require_grad();
            let result = norm(x.clone(), gamma.clone(), beta.clone());
            let grads = (result.output.clone() * self.projection.clone())
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
        }
    }

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

    /// Output, mean, variance and the three gradients of two batch norms agree element by
    /// element within 1e-4, relative and absolute.
    fn assert_results_close(actual: &[TensorData; 6], expected: &[TensorData; 6], case: &str) {
        let names = ["output", "mean", "variance", "dx", "dgamma", "dbeta"];
        for (name, (actual, expected)) in names.iter().zip(actual.iter().zip(expected)) {
            assert_eq!(actual.shape(), expected.shape(), "{name} of {case}");
            let pairs = actual.iter::<f32>().zip(expected.iter::<f32>());
            for (index, (a, e)) in pairs.enumerate() {
                let bound = 1e-4 * a.abs().max(e.abs()) + 1e-4;
                assert!(
                    (a - e).abs() <= bound,
                    "{name} of {case}: [{index}] {a} vs {e}"
                );
            }
        }
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
                    let inputs = Inputs::normal(&mut rng, dims, (2.0, 3.0), &device);
                    let ours = inputs
                        .results(|x, gamma, beta| batch_norm_train(x, gamma, beta, 1e-5, relu));
                    let burn = inputs.results(|x, gamma, beta| reference(x, gamma, beta, relu));
                    let case = format!("{dims:?}, relu {relu}, seed {seed}");
                    assert_results_close(&ours, &burn, &case);
                }
            }
        }
    }

    #[test]
    fn channel_blocked_maps_normalise_like_plain_ones() {
        let device = Device::flex().autodiff();
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        // Blocks of every size that divides the lanes; runs shorter and longer than them.
        for (dims, block) in [
            ([3, 16, 5, 5], 16),
            ([2, 32, 4, 4], 16),
            ([4, 16, 3, 3], 8),
            ([2, 8, 1, 1], 4),
            ([5, 6, 2, 3], 2),
            ([2, 4, 7, 7], 1),
        ] {
            for relu in [false, true] {
                let inputs = Inputs::normal(&mut rng, dims, (1.0, 2.0), &device);
                let blocked = inputs.results(|x, gamma, beta| {
                    let input: Tensor<5> = from_plain(x, block);
                    let result = batch_norm_train(input, gamma, beta, 1e-5, relu);
                    BatchNormTrainOutput {
                        output: to_plain(result.output),
                        mean: result.mean,
                        variance: result.variance,
                    }
                });
                let plain =
                    inputs.results(|x, gamma, beta| batch_norm_train(x, gamma, beta, 1e-5, relu));
                let case = format!("{dims:?} in blocks of {block}, relu {relu}");
                assert_results_close(&blocked, &plain, &case);
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
