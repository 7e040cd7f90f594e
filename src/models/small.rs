//! Small models for the quick demo and fast tests.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::layers::{BatchNorm2d, conv, conv2d, global_avg_pool, relu};
use crate::mixup::{MixPoint, Mixable, PointShape, TensorMix, mix_at};

pub(super) const SMALL_CNN_MIX_POINTS: &[(&str, PointShape)] = &[
    ("input", PointShape::Map),
    ("after block 1", PointShape::Map),
    ("after block 2", PointShape::Map),
    ("after block 3", PointShape::Map),
];

/// The input is mixed as an image, before it is flattened, so box mixes apply to it.
pub(super) const MLP_MIX_POINTS: &[(&str, PointShape)] = &[
    ("input", PointShape::Map),
    ("after hidden 1", PointShape::Vector),
    ("after hidden 2", PointShape::Vector),
];

#[derive(Module, Debug)]
pub(crate) struct ConvBlock {
    conv: Conv2d,
    bn: BatchNorm2d,
    pool: MaxPool2d,
}

impl ConvBlock {
    fn new(in_channels: usize, out_channels: usize, device: &Device) -> Self {
        Self {
            conv: conv(in_channels, out_channels, 3, 1, false, device),
            bn: BatchNorm2d::new(out_channels, device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool
            .forward(self.bn.forward_relu(conv2d(&self.conv, x)))
    }
}

/// Three conv–BN–ReLU–pool blocks (w, 2w, 4w), global average pool, linear head.
/// Mix points: 0 input, 1–3 after each block.
#[derive(Module, Debug)]
pub struct SmallCnn {
    block1: ConvBlock,
    block2: ConvBlock,
    block3: ConvBlock,
    linear: Linear,
}

impl SmallCnn {
    /// The network for `in_channels`-channel images, `classes` classes and base width `width`.
    pub fn new(in_channels: usize, classes: usize, width: usize, device: &Device) -> Self {
        Self {
            block1: ConvBlock::new(in_channels, width, device),
            block2: ConvBlock::new(width, width * 2, device),
            block3: ConvBlock::new(width * 2, width * 4, device),
            linear: LinearConfig::new(width * 4, classes).init(device),
        }
    }
}

impl Mixable for SmallCnn {
    fn mix_points(&self) -> Vec<MixPoint> {
        MixPoint::list(SMALL_CNN_MIX_POINTS)
    }

    fn forward_mixed(&self, x: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2> {
        let h = mix_at(mix, 0, x);
        let h = mix_at(mix, 1, self.block1.forward(h));
        let h = mix_at(mix, 2, self.block2.forward(h));
        let h = mix_at(mix, 3, self.block3.forward(h));
        self.linear.forward(global_avg_pool(h))
    }
}

/// Flatten, two hidden ReLU layers of `width`, linear head. Mix points: 0 input, 1–2 after
/// each hidden layer.
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    head: Linear,
}

impl Mlp {
    /// The network for `inputs` pixels, `classes` classes and hidden width `width`.
    pub fn new(inputs: usize, classes: usize, width: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(inputs, width).init(device),
            fc2: LinearConfig::new(width, width).init(device),
            head: LinearConfig::new(width, classes).init(device),
        }
    }
}

impl Mixable for Mlp {
    fn mix_points(&self) -> Vec<MixPoint> {
        MixPoint::list(MLP_MIX_POINTS)
    }

    fn forward_mixed(&self, x: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2> {
        let h = mix_at(mix, 0, x).flatten::<2>(1, 3);
        let h = mix_at(mix, 1, relu(self.fc1.forward(h)));
        let h = mix_at(mix, 2, relu(self.fc2.forward(h)));
        self.head.forward(h)
    }
}
