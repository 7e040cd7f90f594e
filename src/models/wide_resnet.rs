//! Wide ResNets WRN-d-k (Zagoruyko & Komodakis), pre-activation, as in the paper's code.

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
    ("after group 1", PointShape::Map),
    ("after group 2", PointShape::Map),
    ("after group 3", PointShape::Map),
];

/// `bn → relu → conv3x3 → bn → relu → conv3x3`, plus a 1×1 projection of the raw input
/// when the shape changes.
#[derive(Module, Debug)]
pub(crate) struct WideBasic {
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl WideBasic {
    fn new(in_planes: usize, planes: usize, stride: usize, device: &Device) -> Self {
        Self {
            bn1: BatchNorm2d::new(in_planes, device),
            conv1: conv(in_planes, planes, 3, 1, true, device),
            bn2: BatchNorm2d::new(planes, device),
            conv2: conv(planes, planes, 3, stride, true, device),
            shortcut: (stride != 1 || in_planes != planes)
                .then(|| conv(in_planes, planes, 1, stride, true, device)),
        }
    }

    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let out = conv2d_blocked(&self.conv1, self.bn1.forward_relu(x.clone()));
        let out = conv2d_blocked(&self.conv2, self.bn2.forward_relu(out));
        let shortcut = match &self.shortcut {
            Some(projection) => conv2d_blocked(projection, x),
            None => x,
        };
        out + shortcut
    }
}

/// WRN-depth-k. Mix points: 0 input, 1–3 after each group.
#[derive(Module, Debug)]
pub struct WideResNet {
    conv1: Conv2d,
    layer1: Vec<WideBasic>,
    layer2: Vec<WideBasic>,
    layer3: Vec<WideBasic>,
    bn: BatchNorm2d,
    linear: Linear,
}

impl WideResNet {
    /// `depth` must satisfy `(depth - 4) % 6 == 0`; `base` is the stem width (16 in the paper).
    pub fn new(
        depth: usize,
        widen: usize,
        in_channels: usize,
        classes: usize,
        base: usize,
        device: &Device,
    ) -> Self {
        let per_group = (depth - 4) / 6;
        let widths = [base * widen, 2 * base * widen, 4 * base * widen];
        let mut in_planes = base;
        let mut group = |planes: usize, stride: usize| {
            (0..per_group)
                .map(|i| {
                    let block =
                        WideBasic::new(in_planes, planes, if i == 0 { stride } else { 1 }, device);
                    in_planes = planes;
                    block
                })
                .collect::<Vec<_>>()
        };
        let layer1 = group(widths[0], 1);
        let layer2 = group(widths[1], 2);
        let layer3 = group(widths[2], 2);
        Self {
            conv1: conv(in_channels, base, 3, 1, true, device),
            layer1,
            layer2,
            layer3,
            bn: BatchNorm2d::new(widths[2], device),
            linear: LinearConfig::new(widths[2], classes).init(device),
        }
    }
}

impl BlockedModel for WideResNet {
    fn stem(&self) -> &Conv2d {
        &self.conv1
    }

    /// Keeps the hidden maps in blocks of `block` channels (1: plain).
    fn forward_in_blocks(&self, x: Tensor<4>, mix: Option<&TensorMix>, block: usize) -> Tensor<2> {
        let run = |blocks: &[WideBasic], h: Tensor<5>| blocks.iter().fold(h, |h, b| b.forward(h));
        let h = mix_at(mix, 0, x);
        let stem = conv2d_to_blocks(&self.conv1, h, block);
        let h = mix_at(mix, 1, run(&self.layer1, stem));
        let h = mix_at(mix, 2, run(&self.layer2, h));
        let h = mix_at(mix, 3, run(&self.layer3, h));
        let h = self.bn.forward_relu(h);
        self.linear.forward(global_avg_pool(h))
    }
}

impl Mixable for WideResNet {
    fn mix_points(&self) -> Vec<MixPoint> {
        MixPoint::list(MIX_POINTS)
    }

    fn forward_mixed(&self, images: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2> {
        self.forward(images, mix)
    }
}
