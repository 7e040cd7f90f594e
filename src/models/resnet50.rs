//! The origin's ResNet50: ImageNet stem and post-activation bottlenecks (stride on the first
//! 1×1 convolution, as in the Caffe/Chainer definition), with its six mix points.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::layers::{
    BatchNorm2d, BlockedModel, conv, conv2d, conv2d_blocked, global_avg_pool, relu,
};
use crate::kernels::layout::from_plain;
use crate::mixup::{MixPoint, Mixable, PointShape, TensorMix, mix_at};

pub(super) const MIX_POINTS: &[(&str, PointShape)] = &[
    ("input", PointShape::Map),
    ("after stem and pool", PointShape::Map),
    ("after stage 1", PointShape::Map),
    ("after stage 2", PointShape::Map),
    ("after stage 3", PointShape::Map),
    ("after stage 4", PointShape::Map),
];

#[derive(Module, Debug)]
pub(crate) struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    downsample: Option<Downsample>,
}

/// The projection shortcut: 1×1 convolution then batch norm.
#[derive(Module, Debug)]
pub(crate) struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl Bottleneck {
    fn new(in_planes: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let out = planes * 4;
        Self {
            conv1: conv(in_planes, planes, 1, stride, false, device),
            bn1: BatchNorm2d::new(planes, device),
            conv2: conv(planes, planes, 3, 1, false, device),
            bn2: BatchNorm2d::new(planes, device),
            conv3: conv(planes, out, 1, 1, false, device),
            bn3: BatchNorm2d::new(out, device),
            downsample: (stride != 1 || in_planes != out).then(|| Downsample {
                conv: conv(in_planes, out, 1, stride, false, device),
                bn: BatchNorm2d::new(out, device),
            }),
        }
    }

    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let h = self
            .bn1
            .forward_relu(conv2d_blocked(&self.conv1, x.clone()));
        let h = self.bn2.forward_relu(conv2d_blocked(&self.conv2, h));
        let h = self.bn3.forward(conv2d_blocked(&self.conv3, h));
        let shortcut = match &self.downsample {
            Some(down) => down.bn.forward(conv2d_blocked(&down.conv, x)),
            None => x,
        };
        relu(h + shortcut)
    }
}

/// Mix points: 0 input, 1 after stem and pool, 2–5 after each of the four stages.
#[derive(Module, Debug)]
pub struct ResNet50 {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    pool: MaxPool2d,
    layer1: Vec<Bottleneck>,
    layer2: Vec<Bottleneck>,
    layer3: Vec<Bottleneck>,
    layer4: Vec<Bottleneck>,
    fc: Linear,
}

impl ResNet50 {
    /// `width` is the first stage's bottleneck width (64 in the original network).
    pub fn new(in_channels: usize, classes: usize, width: usize, device: &Device) -> Self {
        let mut in_planes = width;
        let mut stage = |planes: usize, count: usize, stride: usize| {
            (0..count)
                .map(|i| {
                    let block =
                        Bottleneck::new(in_planes, planes, if i == 0 { stride } else { 1 }, device);
                    in_planes = planes * 4;
                    block
                })
                .collect::<Vec<_>>()
        };
        let layer1 = stage(width, 3, 1);
        let layer2 = stage(width * 2, 4, 2);
        let layer3 = stage(width * 4, 6, 2);
        let layer4 = stage(width * 8, 3, 2);
        Self {
            conv1: conv(in_channels, width, 7, 2, false, device),
            bn1: BatchNorm2d::new(width, device),
            pool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            fc: LinearConfig::new(width * 8 * 4, classes).init(device),
        }
    }
}

impl BlockedModel for ResNet50 {
    fn stem(&self) -> &Conv2d {
        &self.conv1
    }

    /// Keeps the stages' maps in blocks of `block` channels (1: plain). The stem and
    /// its max pool (which takes only plain maps) stay plain; one conversion follows them.
    fn forward_in_blocks(&self, x: Tensor<4>, mix: Option<&TensorMix>, block: usize) -> Tensor<2> {
        let run = |blocks: &[Bottleneck], h: Tensor<5>| blocks.iter().fold(h, |h, b| b.forward(h));
        let h = mix_at(mix, 0, x);
        let h = self
            .pool
            .forward(self.bn1.forward_relu(conv2d(&self.conv1, h)));
        let h = mix_at(mix, 1, from_plain::<5>(h, block));
        let h = mix_at(mix, 2, run(&self.layer1, h));
        let h = mix_at(mix, 3, run(&self.layer2, h));
        let h = mix_at(mix, 4, run(&self.layer3, h));
        let h = mix_at(mix, 5, run(&self.layer4, h));
        self.fc.forward(global_avg_pool(h))
    }
}

impl Mixable for ResNet50 {
    fn mix_points(&self) -> Vec<MixPoint> {
        MixPoint::list(MIX_POINTS)
    }

    fn forward_mixed(&self, images: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2> {
        self.forward(images, mix)
    }
}
