//! Pre-activation ResNets with the CIFAR stem, as in the Manifold Mixup paper's code.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::layers::{
    BatchNorm2d, BlockedModel, conv, conv2d_blocked, conv2d_to_blocks, global_avg_pool,
};
use crate::mixup::{MixPoint, Mixable, PointShape, TensorMix, mix_at};

pub(super) const MIX_POINTS: &[(&str, PointShape)] = &[
    ("input", PointShape::Map),
    ("after stage 1", PointShape::Map),
    ("after stage 2", PointShape::Map),
    ("after stage 3", PointShape::Map),
    ("after stage 4", PointShape::Map),
];

/// `bn → relu → conv3x3 → bn → relu → conv3x3`, plus the shortcut.
#[derive(Module, Debug)]
pub(crate) struct PreActBlock {
    // Fields in the order the forward pass first reads them: Burn draws a layer's initial
    // weights at that first read, and a model's parameters are also visited in this order.
    bn1: BatchNorm2d,
    shortcut: Option<Conv2d>,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
}

impl PreActBlock {
    fn new(in_planes: usize, planes: usize, stride: usize, device: &Device) -> Self {
        Self {
            bn1: BatchNorm2d::new(in_planes, device),
            conv1: conv(in_planes, planes, 3, stride, false, device),
            bn2: BatchNorm2d::new(planes, device),
            conv2: conv(planes, planes, 3, 1, false, device),
            shortcut: (stride != 1 || in_planes != planes)
                .then(|| conv(in_planes, planes, 1, stride, false, device)),
        }
    }

    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let out = self.bn1.forward_relu(x.clone());
        let shortcut = match &self.shortcut {
            Some(projection) => conv2d_blocked(projection, out.clone()),
            None => x,
        };
        let out = conv2d_blocked(&self.conv1, out);
        let out = conv2d_blocked(&self.conv2, self.bn2.forward_relu(out));
        out + shortcut
    }
}

/// `bn → relu → conv1x1 → bn → relu → conv3x3 → bn → relu → conv1x1 (×4)`, plus the shortcut.
#[derive(Module, Debug)]
pub(crate) struct PreActBottleneck {
    // In the forward pass's order, as in `PreActBlock`.
    bn1: BatchNorm2d,
    shortcut: Option<Conv2d>,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    bn3: BatchNorm2d,
    conv3: Conv2d,
}

const EXPANSION: usize = 4;

impl PreActBottleneck {
    fn new(in_planes: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let out_planes = planes * EXPANSION;
        Self {
            bn1: BatchNorm2d::new(in_planes, device),
            conv1: conv(in_planes, planes, 1, 1, false, device),
            bn2: BatchNorm2d::new(planes, device),
            conv2: conv(planes, planes, 3, stride, false, device),
            bn3: BatchNorm2d::new(planes, device),
            conv3: conv(planes, out_planes, 1, 1, false, device),
            shortcut: (stride != 1 || in_planes != out_planes)
                .then(|| conv(in_planes, out_planes, 1, stride, false, device)),
        }
    }

    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let out = self.bn1.forward_relu(x.clone());
        let shortcut = match &self.shortcut {
            Some(projection) => conv2d_blocked(projection, out.clone()),
            None => x,
        };
        let out = conv2d_blocked(&self.conv1, out);
        let out = conv2d_blocked(&self.conv2, self.bn2.forward_relu(out));
        let out = conv2d_blocked(&self.conv3, self.bn3.forward_relu(out));
        out + shortcut
    }
}

// One value per block, built once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub(crate) enum PreActUnit {
    Basic(PreActBlock),
    Bottleneck(PreActBottleneck),
}

impl PreActUnit {
    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        match self {
            PreActUnit::Basic(block) => block.forward(x),
            PreActUnit::Bottleneck(block) => block.forward(x),
        }
    }
}

/// PreActResNet-18/34/50/101/152. Mix points: 0 input, 1–4 after each stage.
#[derive(Module, Debug)]
pub struct PreActResNet {
    conv1: Conv2d,
    layer1: Vec<PreActUnit>,
    layer2: Vec<PreActUnit>,
    layer3: Vec<PreActUnit>,
    layer4: Vec<PreActUnit>,
    linear: Linear,
}

/// Blocks per stage and whether the blocks are bottlenecks, for a supported depth.
pub(crate) fn preact_layout(depth: usize) -> Option<([usize; 4], bool)> {
    Some(match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        50 => ([3, 4, 6, 3], true),
        101 => ([3, 4, 23, 3], true),
        152 => ([3, 8, 36, 3], true),
        _ => return None,
    })
}

impl PreActResNet {
    /// A pre-activation ResNet of `depth` for `in_channels`-channel images, `classes` classes and
    /// base width `width`.
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: depth is validated by the caller"
    )]
    pub fn new(
        depth: usize,
        in_channels: usize,
        classes: usize,
        width: usize,
        device: &Device,
    ) -> Self {
        let (blocks, bottleneck) = preact_layout(depth).expect("depth is validated by the caller");
        let expansion = if bottleneck { EXPANSION } else { 1 };
        let mut in_planes = width;
        let mut stage = |planes: usize, count: usize, stride: usize| {
            (0..count)
                .map(|i| {
                    let stride = if i == 0 { stride } else { 1 };
                    let unit = if bottleneck {
                        PreActUnit::Bottleneck(PreActBottleneck::new(
                            in_planes, planes, stride, device,
                        ))
                    } else {
                        PreActUnit::Basic(PreActBlock::new(in_planes, planes, stride, device))
                    };
                    in_planes = planes * expansion;
                    unit
                })
                .collect::<Vec<_>>()
        };
        let layer1 = stage(width, blocks[0], 1);
        let layer2 = stage(width * 2, blocks[1], 2);
        let layer3 = stage(width * 4, blocks[2], 2);
        let layer4 = stage(width * 8, blocks[3], 2);
        Self {
            conv1: conv(in_channels, width, 3, 1, false, device),
            layer1,
            layer2,
            layer3,
            layer4,
            linear: LinearConfig::new(width * 8 * expansion, classes).init(device),
        }
    }
}

impl BlockedModel for PreActResNet {
    fn stem(&self) -> &Conv2d {
        &self.conv1
    }

    /// Keeps the hidden maps in blocks of `block` channels (1: plain).
    fn forward_in_blocks(&self, x: Tensor<4>, mix: Option<&TensorMix>, block: usize) -> Tensor<2> {
        let run = |units: &[PreActUnit], h: Tensor<5>| units.iter().fold(h, |h, u| u.forward(h));
        let h = mix_at(mix, 0, x);
        let h = run(&self.layer1, conv2d_to_blocks(&self.conv1, h, block));
        let h = mix_at(mix, 1, h);
        let h = mix_at(mix, 2, run(&self.layer2, h));
        let h = mix_at(mix, 3, run(&self.layer3, h));
        let h = mix_at(mix, 4, run(&self.layer4, h));
        self.linear.forward(global_avg_pool(h))
    }
}

impl Mixable for PreActResNet {
    fn mix_points(&self) -> Vec<MixPoint> {
        MixPoint::list(MIX_POINTS)
    }

    fn forward_mixed(&self, images: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2> {
        self.forward(images, mix)
    }
}
