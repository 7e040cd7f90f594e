//! Building blocks shared by the model families.

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor, activation};

use crate::kernels::layout::{Layout, block_of, channels_of, from_plain, to_plain};
use crate::mixup::TensorMix;

/// Batch normalisation with PyTorch's semantics, which the paper's numbers rest on:
/// momentum 0.1, ε = 1e-5, and the *unbiased* batch variance in the running estimate
/// (Burn's own layer keeps the biased one). Batch statistics are used when the tensor carries
/// autodiff and the layer's parameters are trained; running statistics otherwise: after
/// `Module::valid`, and after `Module::no_grad` on the autodiff device, which is how attacks
/// take input gradients through the network in evaluation mode.
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    /// Per-channel scale γ.
    pub weight: Param<Tensor<1>>,
    /// Per-channel shift β.
    pub bias: Param<Tensor<1>>,
    /// Running mean, for evaluation.
    pub running_mean: RunningState<Tensor<1>>,
    /// Running unbiased variance, for evaluation.
    pub running_var: RunningState<Tensor<1>>,
}

const BN_MOMENTUM: f64 = 0.1;
const BN_EPSILON: f64 = 1e-5;

impl BatchNorm2d {
    /// A batch norm of `channels` channels: γ = 1, β = 0, running mean 0 and variance 1.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            weight: Initializer::Ones.init([channels], device),
            bias: Initializer::Zeros.init([channels], device),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
        }
    }

    /// Normalises a plain `[N, C, H, W]` or channel-blocked `[N, C / b, H, W, b]` map.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.normalize(input, false)
    }

    /// `relu(self.forward(input))`, in one pass where the backend allows.
    pub fn forward_relu<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.normalize(input, true)
    }

    fn normalize<const D: usize>(&self, input: Tensor<D>, relu: bool) -> Tensor<D> {
        let device = input.device();
        let dims = input.dims();
        if !(device.is_autodiff() && self.weight.val().is_require_grad()) {
            let layout = layout_of(&dims);
            let var = self.running_var.value().to_device(&device);
            let scale = self.weight.val() / var.add_scalar(BN_EPSILON).sqrt();
            let mean = self.running_mean.value().to_device(&device);
            let output = (input - per_channel(mean, layout)) * per_channel(scale, layout)
                + per_channel(self.bias.val(), layout);
            return if relu {
                activation::relu(output)
            } else {
                output
            };
        }
        let channels = channels_of(&dims);
        let per_channel_count = (dims.iter().product::<usize>() / channels) as f64;
        let result = crate::kernels::batch_norm::batch_norm_train(
            input,
            self.weight.val(),
            self.bias.val(),
            BN_EPSILON,
            relu,
        );
        let unbiased = per_channel_count / (per_channel_count - 1.0).max(1.0);
        let mean = self.running_mean.value_sync().to_device(&device);
        let var = self.running_var.value_sync().to_device(&device);
        let mean =
            mean.mul_scalar(1.0 - BN_MOMENTUM) + result.mean.detach().mul_scalar(BN_MOMENTUM);
        let var = var.mul_scalar(1.0 - BN_MOMENTUM)
            + result.variance.detach().mul_scalar(BN_MOMENTUM * unbiased);
        debug_assert_eq!(mean.dims(), [channels]);
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
        result.output
    }
}

/// The layout of a plain (rank 4) or blocked (rank 5) map's shape.
fn layout_of(dims: &[usize]) -> Layout {
    match dims.len() {
        4 => Layout::Plain,
        _ => Layout::Blocked(block_of(dims)),
    }
}

/// A per-channel vector `[C]` shaped to broadcast over maps of rank `D` in `layout`.
#[allow(clippy::panic, reason = "cannot fail: a rank-… map in …")]
fn per_channel<const D: usize>(values: Tensor<1>, layout: Layout) -> Tensor<D> {
    let dims: [usize; D] = layout
        .dims([1, values.dims()[0], 1, 1])
        .try_into()
        .unwrap_or_else(|_| panic!("a rank-{D} map in {layout:?}"));
    values.reshape(dims)
}

pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    activation::relu(x)
}

/// A square convolution with "same"-style padding `kernel / 2`.
pub fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    bias: bool,
    device: &Device,
) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(bias)
        .init(device)
}

/// The channels per block of a model's feature maps on `device`, when every channel count
/// of the model is a multiple of `channel_unit`: the block oneDNN computes in where the route
/// takes the model's convolutions and the block divides `channel_unit`, else 1 (plain maps).
pub fn feature_block(device: &Device, channel_unit: usize) -> usize {
    let block = match crate::kernels::convolution_library(device) {
        #[cfg(mmix_onednn)]
        "onednn" => crate::kernels::onednn::native_block(),
        "own" => crate::kernels::direct::BLOCK,
        _ => 1,
    };
    if channel_unit.is_multiple_of(block) {
        block
    } else {
        1
    }
}

/// A model that can keep its hidden maps channel-blocked: every channel count is a multiple
/// of its stem convolution's, so one block size fits them all.
pub trait BlockedModel {
    /// The first convolution, whose output channels every other count is a multiple of.
    fn stem(&self) -> &Conv2d;

    /// Logits for `x`, with the hidden maps in blocks of `block` channels (1: plain).
    fn forward_in_blocks(&self, x: Tensor<4>, mix: Option<&TensorMix>, block: usize) -> Tensor<2>;

    /// Logits for `x`, in the block size the device's convolutions compute in.
    fn forward(&self, x: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2> {
        let block = feature_block(&x.device(), self.stem().weight.dims()[0]);
        self.forward_in_blocks(x, mix, block)
    }
}

/// `conv`'s forward pass on a plain map; on the Flex CPU backend with the `onednn` feature,
/// through oneDNN.
pub(crate) fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    convolve(conv, x, Layout::Plain)
}

/// `conv`'s forward pass on a plain map, written in blocks of `block` channels (rank 5).
pub(crate) fn conv2d_to_blocks(conv: &Conv2d, x: Tensor<4>, block: usize) -> Tensor<5> {
    convolve(conv, x, Layout::Blocked(block))
}

/// `conv`'s forward pass on a map in blocks of channels, written in blocks of the same size.
pub(crate) fn conv2d_blocked(conv: &Conv2d, x: Tensor<5>) -> Tensor<5> {
    let block = block_of(&x.dims());
    convolve(conv, x, Layout::Blocked(block))
}

/// `conv` of a plain or blocked map `x`, written in `out` (of rank `R`).
fn convolve<const D: usize, const R: usize>(conv: &Conv2d, x: Tensor<D>, out: Layout) -> Tensor<R> {
    let output = convolve_on_a_route::<D, R>(conv, x, out);
    let [_, inputs_per_group, kh, kw] = conv.weight.dims();
    let outputs = output.shape().num_elements();
    crate::kernels::count_convolution_outputs(outputs as u64);
    crate::kernels::count_convolution_flops(2 * (outputs * inputs_per_group * kh * kw) as u64);
    output
}

fn convolve_on_a_route<const D: usize, const R: usize>(
    conv: &Conv2d,
    x: Tensor<D>,
    out: Layout,
) -> Tensor<R> {
    #[cfg(mmix_onednn)]
    if let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding
        && crate::kernels::onednn::accepts(&x, conv.dilation, conv.groups)
    {
        let geometry = crate::kernels::onednn::ConvGeometry {
            stride: conv.stride,
            padding: [(top, bottom), (left, right)],
            precision: crate::kernels::precision(),
        };
        let output = crate::kernels::onednn::conv2d(x, conv.weight.val(), geometry, out);
        return match &conv.bias {
            Some(bias) => output + per_channel(bias.val(), out),
            None => output,
        };
    }
    if let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding
        && let Some(geometry) = crate::kernels::direct::accepts(
            &x,
            conv.weight.dims(),
            conv.stride,
            [(top, bottom), (left, right)],
            conv.dilation,
            conv.groups,
            out,
        )
    {
        let output = crate::kernels::direct::conv2d(x, conv.weight.val(), geometry, out);
        return match &conv.bias {
            Some(bias) => output + per_channel(bias.val(), out),
            None => output,
        };
    }
    from_plain(conv.forward(to_plain(x)), out.block())
}

/// Global average pooling of a plain or blocked map to `[batch, channels]`.
pub(crate) fn global_avg_pool<const D: usize>(x: Tensor<D>) -> Tensor<2> {
    let dims = x.dims();
    x.mean_dim(2)
        .mean_dim(3)
        .reshape([dims[0], channels_of(&dims)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    #[test]
    fn running_variance_is_unbiased_like_pytorch() {
        let device = Device::flex().autodiff();
        let bn = BatchNorm2d::new(2, &device);
        let x = Tensor::<4>::random([3, 2, 2, 2], Distribution::Normal(1.0, 2.0), &device);
        let values = x.clone().into_data().try_to_vec::<f32>().unwrap();
        let _ = bn.forward(x);
        // Running statistics are folded in lazily; `valid` synchronises them.
        let bn = bn.valid();
        for c in 0..2 {
            let xs: Vec<f64> = (0..3)
                .flat_map(|b| (0..4).map(move |i| (b, i)))
                .map(|(b, i)| values[b * 8 + c * 4 + i] as f64)
                .collect();
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let running_mean = bn
                .running_mean
                .value()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()[c];
            let running_var = bn
                .running_var
                .value()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()[c];
            assert!((running_mean as f64 - 0.1 * mean).abs() < 1e-5);
            assert!((running_var as f64 - (0.9 + 0.1 * var)).abs() < 1e-5);
        }
    }

    #[test]
    fn evaluation_uses_running_statistics() {
        let device = Device::flex();
        let bn = BatchNorm2d::new(1, &device);
        let x = Tensor::<4>::from_floats([[[[1.0, 3.0]]]], &device);
        // Fresh running statistics are mean 0, variance 1: the output is x / sqrt(1 + ε).
        let scale = 1.0 / (1.0f32 + 1e-5).sqrt();
        bn.forward(x).into_data().assert_approx_eq::<f32>(
            &TensorData::from([[[[scale, 3.0 * scale]]]]),
            Tolerance::default(),
        );
    }

    #[test]
    fn untracked_parameters_on_the_autodiff_device_evaluate_and_pass_input_gradients() {
        // What attacks rely on: after `no_grad`, the layer uses running statistics, leaves
        // them unchanged, and the gradient still reaches the input.
        let device = Device::flex().autodiff();
        let bn = BatchNorm2d::new(1, &device).no_grad();
        let x = Tensor::<4>::from_floats([[[[1.0, 3.0]]]], &device).require_grad();
        let y = bn.forward(x.clone());
        let scale = 1.0 / (1.0f32 + 1e-5).sqrt();
        y.clone().into_data().assert_approx_eq::<f32>(
            &TensorData::from([[[[scale, 3.0 * scale]]]]),
            Tolerance::default(),
        );
        let grads = y.sum().backward();
        x.grad(&grads)
            .expect("the input has a gradient")
            .into_data()
            .assert_approx_eq::<f32>(
                &TensorData::from([[[[scale, scale]]]]),
                Tolerance::default(),
            );
        bn.running_mean
            .value()
            .into_data()
            .assert_eq(&TensorData::from([0.0f32]), true);
        // With trained parameters the same input takes the batch statistics instead.
        let trained = BatchNorm2d::new(1, &device);
        let out = trained.forward(Tensor::<4>::from_floats([[[[1.0, 3.0]]]], &device));
        out.into_data().assert_approx_eq::<f32>(
            &TensorData::from([[[[-1.0, 1.0]]]]),
            Tolerance::absolute(1e-3),
        );
    }
}
