//! Classifiers that declare their mix points.
//!
//! Every model maps `[batch, channels, height, width]` images to `[batch, classes]` logits
//! and takes an optional [`TensorMix`] that it applies at the mix point the plan names. Mix
//! points sit between whole blocks, never inside a residual branch; 0 is always the input.

pub(crate) mod layers;
mod preact_resnet;
mod resnet50;
mod small;
mod wide_resnet;

use std::fmt;
use std::str::FromStr;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_with::{DeserializeFromStr, SerializeDisplay};

pub use layers::{BatchNorm2d, BlockedModel, feature_block};
pub use preact_resnet::PreActResNet;
pub use resnet50::ResNet50;
pub use small::{Mlp, SmallCnn};
pub use wide_resnet::WideResNet;

pub use crate::mixup::MixPoint;
use crate::mixup::{Mixable, TensorMix};

// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error(
        "unknown model '{0}': expected preactresnet18|34|50|101|152, wrn-<depth>-<k>, resnet50, small-cnn or mlp"
    )]
    UnknownModel(String),
    #[error("wrn depth must be 6n+4 (e.g. 16, 22, 28, 40), got {0}")]
    WrnDepth(usize),
    #[error("{what} must be at least 1")]
    Zero { what: &'static str },
    #[error("input channels must be 1 or 3, got {0}")]
    Channels(usize),
    #[error("{what} must be at most {max} (got {value}): {why}")]
    TooLarge {
        what: &'static str,
        max: usize,
        value: usize,
        why: &'static str,
    },
    #[error("{model} needs images of at least {min}×{min} pixels, got {size}×{size}")]
    TooSmall {
        model: String,
        min: usize,
        size: usize,
    },
}

/// Bounds that keep a model's description small enough to build and count: each is far past
/// any published network (WRN-1001 is the deepest residual network trained on CIFAR).
const MAX_WRN_DEPTH: usize = 1_006;
const MAX_WRN_WIDEN: usize = 1_024;
/// The widest base width accepted; memory is what refuses most widths below it.
pub const MAX_WIDTH: usize = 1 << 20;

/// A model family and its depth, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, SerializeDisplay, DeserializeFromStr)]
pub enum ModelKind {
    /// Pre-activation ResNet (He et al. 2016), `preactresnet18` or deeper.
    PreActResNet {
        /// Layers with weights: 18, 34, 50, 101 or 152.
        depth: usize,
    },
    /// Wide ResNet (Zagoruyko and Komodakis 2016), `wrn-DEPTH-WIDEN`.
    WideResNet {
        /// Layers with weights: 6n + 4.
        depth: usize,
        /// How many times wider than the base width.
        widen: usize,
    },
    /// The torchvision ResNet-50 (bottleneck blocks), as the Chainer origin trained.
    ResNet50,
    /// Two convolutions and a linear head: a quick model for small images.
    SmallCnn,
    /// Two hidden layers on the flattened image.
    Mlp,
}

impl FromStr for ModelKind {
    type Err = ModelError;

    fn from_str(name: &str) -> Result<Self, ModelError> {
        let unknown = || ModelError::UnknownModel(name.to_string());
        let lower = name.to_ascii_lowercase();
        if let Some(depth) = lower.strip_prefix("preactresnet") {
            let depth = depth.parse().map_err(|_| unknown())?;
            preact_resnet::preact_layout(depth).ok_or_else(unknown)?;
            return Ok(ModelKind::PreActResNet { depth });
        }
        if let Some(rest) = lower.strip_prefix("wrn-") {
            let (depth, widen) = rest.split_once('-').ok_or_else(unknown)?;
            let depth: usize = depth.parse().map_err(|_| unknown())?;
            let widen: usize = widen.parse().map_err(|_| unknown())?;
            if depth < 10 || !(depth - 4).is_multiple_of(6) {
                return Err(ModelError::WrnDepth(depth));
            }
            if widen == 0 {
                return Err(ModelError::Zero {
                    what: "wrn widen factor",
                });
            }
            for (what, value, max) in [
                ("wrn depth", depth, MAX_WRN_DEPTH),
                ("wrn widen factor", widen, MAX_WRN_WIDEN),
            ] {
                if value > max {
                    return Err(ModelError::TooLarge {
                        what,
                        max,
                        value,
                        why: "deeper and wider than any published wide ResNet",
                    });
                }
            }
            return Ok(ModelKind::WideResNet { depth, widen });
        }
        match lower.as_str() {
            "resnet50" => Ok(ModelKind::ResNet50),
            "small-cnn" => Ok(ModelKind::SmallCnn),
            "mlp" => Ok(ModelKind::Mlp),
            _ => Err(unknown()),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelKind::PreActResNet { depth } => write!(f, "preactresnet{depth}"),
            ModelKind::WideResNet { depth, widen } => write!(f, "wrn-{depth}-{widen}"),
            ModelKind::ResNet50 => f.write_str("resnet50"),
            ModelKind::SmallCnn => f.write_str("small-cnn"),
            ModelKind::Mlp => f.write_str("mlp"),
        }
    }
}

impl ModelKind {
    /// Every model family the command line accepts, one representative each, for listings.
    pub const EXAMPLES: [&'static str; 9] = [
        "preactresnet18",
        "preactresnet34",
        "preactresnet50",
        "preactresnet101",
        "preactresnet152",
        "wrn-28-10",
        "resnet50",
        "small-cnn",
        "mlp",
    ];

    /// The family's mix points.
    pub fn mix_points(&self) -> Vec<MixPoint> {
        MixPoint::list(match self {
            ModelKind::PreActResNet { .. } => preact_resnet::MIX_POINTS,
            ModelKind::WideResNet { .. } => wide_resnet::MIX_POINTS,
            ModelKind::ResNet50 => resnet50::MIX_POINTS,
            ModelKind::SmallCnn => small::SMALL_CNN_MIX_POINTS,
            ModelKind::Mlp => small::MLP_MIX_POINTS,
        })
    }

    /// The eligible set the paper (or, for ResNet50, the origin's port) draws from.
    pub fn paper_mix_points(&self) -> Vec<usize> {
        match self {
            ModelKind::ResNet50 => (0..=5).collect(),
            _ => vec![0, 1, 2],
        }
    }

    /// The base width when none is given.
    pub fn default_width(&self) -> usize {
        match self {
            ModelKind::PreActResNet { .. } | ModelKind::ResNet50 => 64,
            ModelKind::WideResNet { .. } => 16,
            ModelKind::SmallCnn => 32,
            ModelKind::Mlp => 256,
        }
    }

    fn min_image_size(&self) -> usize {
        match self {
            ModelKind::SmallCnn => 8,
            _ => 1,
        }
    }
}

/// Everything needed to build a model: the family, the data's shape and the width.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The family and depth.
    pub kind: ModelKind,
    /// Channels of the input images.
    pub in_channels: usize,
    /// Height and width of the input images.
    pub image_size: usize,
    /// Classes of the head.
    pub classes: usize,
    /// The base width (channels of the first stage, or hidden units).
    pub width: usize,
}

impl ModelConfig {
    /// The family at its default width.
    pub fn new(kind: ModelKind, in_channels: usize, image_size: usize, classes: usize) -> Self {
        Self {
            kind,
            in_channels,
            image_size,
            classes,
            width: kind.default_width(),
        }
    }

    /// The same with base width `width`.
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = width;
        self
    }

    /// Checks the configuration against the family's limits and the images.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.in_channels != 1 && self.in_channels != 3 {
            return Err(ModelError::Channels(self.in_channels));
        }
        for (what, value) in [
            ("width", self.width),
            ("number of classes", self.classes),
            ("image size", self.image_size),
        ] {
            if value == 0 {
                return Err(ModelError::Zero { what });
            }
        }
        if self.width > MAX_WIDTH {
            return Err(ModelError::TooLarge {
                what: "width",
                max: MAX_WIDTH,
                value: self.width,
                why: "wider than any published network",
            });
        }
        let min = self.kind.min_image_size();
        if self.image_size < min {
            return Err(ModelError::TooSmall {
                model: self.kind.to_string(),
                min,
                size: self.image_size,
            });
        }
        Ok(())
    }

    /// The model with fresh weights on `device`.
    pub fn init(&self, device: &Device) -> Result<Classifier, ModelError> {
        self.validate()?;
        let (c, k, w) = (self.in_channels, self.classes, self.width);
        Ok(match self.kind {
            ModelKind::PreActResNet { depth } => {
                Classifier::PreActResNet(PreActResNet::new(depth, c, k, w, device))
            }
            ModelKind::WideResNet { depth, widen } => {
                Classifier::WideResNet(WideResNet::new(depth, widen, c, k, w, device))
            }
            ModelKind::ResNet50 => Classifier::ResNet50(ResNet50::new(c, k, w, device)),
            ModelKind::SmallCnn => Classifier::SmallCnn(SmallCnn::new(c, k, w, device)),
            ModelKind::Mlp => {
                let inputs = c * self.image_size * self.image_size;
                Classifier::Mlp(Mlp::new(inputs, k, w, device))
            }
        })
    }
}

impl ModelConfig {
    /// The floats the model's parameters hold, counted from their shapes: Burn builds
    /// parameters lazily, so nothing of their size is allocated.
    pub fn parameter_floats(&self) -> Result<u64, ModelError> {
        struct Count(u64);
        impl burn::module::ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                let elements = param
                    .lazy_shape()
                    .iter()
                    .fold(1u64, |n, &d| n.saturating_mul(d as u64));
                self.0 = self.0.saturating_add(elements);
            }
        }
        let mut count = Count(0);
        self.init(&Device::flex())?.visit(&mut count);
        Ok(count.0)
    }

    /// The values the model's convolutions write for one image: counted in a forward pass of
    /// one image of at most [`PROBE_SIZE`] pixels a side, and scaled by the pixels of the
    /// model's image size over the probe's (every map of a convolutional network grows with
    /// the image; the head after the global pooling does not, and is small).
    pub fn feature_floats_per_image(&self) -> Result<u64, ModelError> {
        self.validate()?;
        let probe = self
            .image_size
            .min(PROBE_SIZE)
            .max(self.kind.min_image_size());
        let config = ModelConfig {
            image_size: probe,
            ..self.clone()
        };
        let device = Device::flex();
        let model = config.init(&device)?;
        let image = Tensor::<4>::zeros([1, self.in_channels, probe, probe], &device);
        crate::kernels::take_convolution_outputs();
        let _ = crate::mixup::Mixable::forward_mixed(&model, image, None);
        let counted = crate::kernels::take_convolution_outputs() as f64;
        let scale = (self.image_size as f64 / probe as f64).powi(2);
        Ok((counted * scale).ceil() as u64)
    }

    /// What the memory estimates of this model read, measured once: its parameters and
    /// (where they fit at all) a probe forward pass's feature maps.
    pub fn memory_estimate(&self) -> Result<MemoryEstimate, ModelError> {
        let parameters = self.parameter_floats()?;
        // The probe's forward pass builds the weights: not where training's copies of them
        // alone would not fit (the estimate is then refused whatever the maps add).
        let fits = parameters.saturating_mul(PARAMETER_COPIES * 4) < crate::machine::memory_bytes();
        let features = match fits {
            true => Some(self.feature_floats_per_image()?),
            false => None,
        };
        let input = (self.image_size as u64)
            .saturating_pow(2)
            .saturating_mul(self.in_channels as u64);
        Ok(MemoryEstimate {
            parameters,
            features,
            input,
        })
    }

    /// [`MemoryEstimate::training_bytes`] of this model.
    pub fn training_bytes(&self, batch: usize) -> Result<u64, ModelError> {
        Ok(self.memory_estimate()?.training_bytes(batch))
    }

    /// [`MemoryEstimate::inference_bytes`] of this model.
    pub fn inference_bytes(&self, batch: usize) -> Result<u64, ModelError> {
        Ok(self.memory_estimate()?.inference_bytes(batch))
    }
}

/// A model's sizes, as its memory estimates read them.
#[derive(Clone, Copy, Debug)]
pub struct MemoryEstimate {
    parameters: u64,
    /// Feature-map values per image; `None` where the weights alone exceed the memory.
    features: Option<u64>,
    input: u64,
}

impl MemoryEstimate {
    /// An upper bound on the bytes of memory a training process of this model takes at
    /// `batch` examples a step: the parameters with their gradients, momentum and packed
    /// copies, and per example the input and every convolution's output, each with what the
    /// backward pass keeps of it and the gradients it makes (factors measured against peak
    /// resident memory: `the_memory_estimate_bounds_the_measured_peak_from_above` in the
    /// tests, and the figures in BENCHMARKS.md).
    pub fn training_bytes(&self, batch: usize) -> u64 {
        self.bytes_at(batch, PARAMETER_COPIES, INPUT_COPIES, FEATURE_COPIES)
    }

    /// An upper bound on the bytes of memory a process evaluating this model takes at
    /// `batch` examples a forward pass: without autodiff, each map is freed once read, so
    /// all of them together bound what is alive at once.
    pub fn inference_bytes(&self, batch: usize) -> u64 {
        self.bytes_at(batch, 2, 4, 1)
    }

    fn bytes_at(
        &self,
        batch: usize,
        parameter_copies: u64,
        input_copies: u64,
        feature_copies: u64,
    ) -> u64 {
        let parameters = self
            .parameters
            .saturating_mul(parameter_copies)
            .saturating_mul(4)
            .saturating_add(PROCESS_BYTES);
        let Some(features) = self.features else {
            return parameters;
        };
        let per_example = self
            .input
            .saturating_mul(input_copies)
            .saturating_add(features.saturating_mul(feature_copies));
        per_example
            .saturating_mul(batch as u64)
            .saturating_mul(4)
            .saturating_add(parameters)
    }
}

/// The largest image side [`ModelConfig::feature_floats_per_image`] runs a forward pass at.
const PROBE_SIZE: usize = 64;
/// Copies of each parameter a training process holds (calibrated, see
/// [`ModelConfig::training_bytes`]).
const PARAMETER_COPIES: u64 = 6;
/// Copies of each input value.
const INPUT_COPIES: u64 = 8;
/// Copies of each convolution output value.
const FEATURE_COPIES: u64 = 4;
/// The process without its tensors: code, the runtime, thread stacks, the embedded data.
const PROCESS_BYTES: u64 = 128 << 20;

/// Any of the supported models, so the training loop runs whichever one the user names.
// One value per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Classifier {
    /// A pre-activation ResNet.
    PreActResNet(PreActResNet),
    /// A wide ResNet.
    WideResNet(WideResNet),
    /// The torchvision ResNet-50.
    ResNet50(ResNet50),
    /// The small CNN.
    SmallCnn(SmallCnn),
    /// The MLP.
    Mlp(Mlp),
}

impl Mixable for Classifier {
    fn mix_points(&self) -> Vec<MixPoint> {
        match self {
            Classifier::PreActResNet(m) => m.mix_points(),
            Classifier::WideResNet(m) => m.mix_points(),
            Classifier::ResNet50(m) => m.mix_points(),
            Classifier::SmallCnn(m) => m.mix_points(),
            Classifier::Mlp(m) => m.mix_points(),
        }
    }

    fn forward_mixed(&self, images: Tensor<4>, mix: Option<&TensorMix>) -> Tensor<2> {
        match self {
            Classifier::PreActResNet(m) => m.forward_mixed(images, mix),
            Classifier::WideResNet(m) => m.forward_mixed(images, mix),
            Classifier::ResNet50(m) => m.forward_mixed(images, mix),
            Classifier::SmallCnn(m) => m.forward_mixed(images, mix),
            Classifier::Mlp(m) => m.forward_mixed(images, mix),
        }
    }
}

/// Counts trainable parameters the way PyTorch's `sum(p.numel() for p in m.parameters())`
/// does: batch-norm running statistics are buffers, not parameters. The model must live on an
/// autodiff device, where only trainable tensors require gradients.
pub fn trainable_parameter_count<M: Module>(model: &M) -> usize {
    struct Trainable(usize);
    impl burn::module::ModuleVisitor for Trainable {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if param.val().is_require_grad() {
                self.0 += param.lazy_shape().num_elements();
            }
        }
    }
    let mut count = Trainable(0);
    model.visit(&mut count);
    count.0
}

/// `model` with every parameter's initial value drawn, in the model's (visiting) order: Burn
/// draws a layer's weights from the device's generator the first time they are read.
pub fn initialize_lazy_parameters<M: Module>(model: M) -> M {
    struct Read;
    impl burn::module::ModuleVisitor for Read {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Read);
    model
}

/// Whether every weight and batch-norm statistic of `model` is a finite number.
pub fn all_finite<M: Module>(model: &M) -> bool {
    struct Finite(bool);
    impl burn::module::ModuleVisitor for Finite {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if self.0 {
                self.0 = param.val().is_finite().all().into_scalar::<bool>();
            }
        }
    }
    let mut finite = Finite(true);
    // `valid` folds pending batch-norm running-statistic updates in.
    model.valid().visit(&mut finite);
    finite.0
}

/// The model's weights and batch-norm buffers as safetensors bytes, under PyTorch-style names
/// (`layer1.0.bn1.weight`, `linear.weight` as `[out, in]`), so they open from Python.
pub fn to_safetensors<M: Module>(model: &M) -> Result<Vec<u8>, String> {
    use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
    let mut store = SafetensorsStore::from_bytes(None)
        .skip_enum_variants(true)
        .with_to_adapter(BurnToPyTorchAdapter);
    model
        .valid()
        .save_into(&mut store)
        .map_err(|e| e.to_string())?;
    let mut bytes = store.get_bytes().map_err(|e| e.to_string())?;
    sort_safetensors_header(&mut bytes)?;
    Ok(bytes)
}

/// Rewrites a safetensors file's JSON header with its keys in sorted order, in place. The
/// writer emits its metadata map in hash order, which changes from process to process, so
/// two runs with equal weights would otherwise differ in bytes and a checksum could not
/// tell they agree. The header keeps its length, so no offset moves.
fn sort_safetensors_header(bytes: &mut [u8]) -> Result<(), String> {
    use std::collections::BTreeMap;
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: a string and a JSON value read from JSON serialise"
    )]
    fn write_sorted(value: &serde_json::Value, out: &mut Vec<u8>) {
        match value {
            serde_json::Value::Object(map) => {
                let ordered: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
                out.push(b'{');
                for (i, (key, item)) in ordered.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(key).expect("a string serialises"));
                    out.push(b':');
                    write_sorted(item, out);
                }
                out.push(b'}');
            }
            other => out.extend(serde_json::to_vec(other).expect("a JSON value serialises")),
        }
    }
    let malformed = || "the safetensors writer produced a malformed header".to_string();
    let length = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(|b| u64::from_le_bytes(b) as usize)
        .ok_or_else(malformed)?;
    let header = bytes.get_mut(8..8 + length).ok_or_else(malformed)?;
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|_| malformed())?;
    let mut canonical = Vec::with_capacity(length);
    write_sorted(&value, &mut canonical);
    if canonical.len() > length {
        return Err(malformed());
    }
    // The format pads its header with spaces to keep the data aligned.
    canonical.resize(length, b' ');
    header.copy_from_slice(&canonical);
    Ok(())
}

#[cfg(test)]
mod tests;
