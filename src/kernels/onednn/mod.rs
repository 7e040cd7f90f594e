//! Convolutions on oneDNN for the Flex CPU backend (cargo feature `onednn`).
//!
//! Burn's backend-extension mechanism routes one operation, a bias-free 2-D convolution, to
//! oneDNN for Flex tensors: the forward pass, and under autodiff a hand-written backward that
//! computes the input gradient and the weight gradient with oneDNN too. Everything else (and
//! every other backend) stays on Burn. If oneDNN rejects a call, the operation falls back to
//! Flex's own convolution, with one warning per process.
//!
//! Activations come and go plain (`[N, C, H, W]`) or channel-blocked (`[N, C / b, H, W, b]`,
//! see [`super::layout`]); in the block size oneDNN computes in (`native_block`) they cross
//! without a conversion. Otherwise, under autodiff, the forward pass keeps oneDNN's converted
//! copy of its input (`Input::Saved`) rather than the input itself, where the weight gradient
//! wants that layout: converting the input once serves both passes.
//!
//! `MMIX_ONEDNN=off` in the environment turns the route off at run time, so both paths can be
//! timed from one build.

mod ffi;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock};

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Shape, Tensor, TensorData};

use super::Precision;
use super::layout::{Layout, block_of};
use ffi::{ConvShape, SavedSource, Source};

/// Stride and `(begin, end)` padding per spatial axis (dilation 1 and one group), and the
/// arithmetic, which the backward pass keeps from its forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding (before, after) along height and width.
    pub padding: [(usize, usize); 2],
    /// Arithmetic of the convolution.
    pub precision: Precision,
}

impl ConvGeometry {
    fn options(self) -> ConvOptions<2> {
        ConvOptions::new_with_padding(self.stride, self.padding, [1, 1], 1)
    }

    /// The bridge's description of this convolution of `x`, plain or blocked, giving an
    /// output in blocks of `out_block` channels, or why there is none. Every buffer length
    /// the bridge is given follows from it: a channel count that is not a multiple of its
    /// block would have oneDNN pad it and write past the buffer, so it is refused here.
    fn shape(self, x: &Shape, weight: &Shape, out_block: usize) -> Result<ConvShape, String> {
        let x = x.as_slice();
        let (in_block, in_channels) = match *x {
            [_, channels, _, _] => (1, channels),
            [_, blocks, _, _, block] => (block, blocks * block),
            _ => return Err(format!("a feature map of shape {x:?}")),
        };
        let [batch, in_height, in_width] = [x[0], x[2], x[3]];
        let &[out_channels, weight_in, kernel_height, kernel_width] = weight.as_slice() else {
            return Err(format!("weights of shape {:?}", weight.as_slice()));
        };
        for (what, block) in [("input", in_block), ("output", out_block)] {
            if ![1, 8, 16].contains(&block) {
                return Err(format!("{what} channel blocks of {block} (1, 8 or 16)"));
            }
        }
        if weight_in != in_channels {
            return Err(format!(
                "weights for {weight_in} input channels, given a map of {in_channels}"
            ));
        }
        if !out_channels.is_multiple_of(out_block) {
            return Err(format!(
                "{out_channels} output channels do not fill blocks of {out_block}"
            ));
        }
        let [(pad_top, pad_bottom), (pad_left, pad_right)] = self.padding;
        let out_len = |input: usize, kernel: usize, (begin, end): (usize, usize), stride: usize| {
            let padded = input.checked_add(begin)?.checked_add(end)?;
            (stride > 0 && kernel > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
        };
        let (Some(out_height), Some(out_width)) = (
            out_len(in_height, kernel_height, self.padding[0], self.stride[0]),
            out_len(in_width, kernel_width, self.padding[1], self.stride[1]),
        ) else {
            return Err(format!(
                "a {kernel_height}×{kernel_width} kernel at stride {:?} and padding {:?} over {in_height}×{in_width}",
                self.stride, self.padding
            ));
        };
        let to_i64 = |v: usize| i64::try_from(v).map_err(|_| "a dimension beyond 64 bits");
        let shape = ConvShape {
            batch: to_i64(batch)?,
            in_channels: to_i64(in_channels)?,
            in_height: to_i64(in_height)?,
            in_width: to_i64(in_width)?,
            out_channels: to_i64(out_channels)?,
            kernel_height: to_i64(kernel_height)?,
            kernel_width: to_i64(kernel_width)?,
            out_height: to_i64(out_height)?,
            out_width: to_i64(out_width)?,
            stride_height: to_i64(self.stride[0])?,
            stride_width: to_i64(self.stride[1])?,
            pad_top: to_i64(pad_top)?,
            pad_left: to_i64(pad_left)?,
            pad_bottom: to_i64(pad_bottom)?,
            pad_right: to_i64(pad_right)?,
            in_block: to_i64(in_block)?,
            out_block: to_i64(out_block)?,
            bf16: i64::from(self.precision == Precision::Bf16),
        };
        shape.lengths().ok_or("a buffer larger than memory")?;
        Ok(shape)
    }

    /// [`Self::shape`] of a convolution about to run: a refused shape is a caller's bug that
    /// no computation could answer, and stops here, before any buffer is touched.
    #[allow(clippy::panic, reason = "cannot fail: oneDNN convolution refused: …")]
    fn checked_shape(self, x: &Shape, weight: &Shape, out_block: usize) -> ConvShape {
        self.shape(x, weight, out_block)
            .unwrap_or_else(|reason| panic!("oneDNN convolution refused: {reason}"))
    }
}

/// The output's `[N, C, H, W]`.
fn out_dims(shape: &ConvShape) -> [usize; 4] {
    [
        shape.batch,
        shape.out_channels,
        shape.out_height,
        shape.out_width,
    ]
    .map(|d| d as usize)
}

fn dims4(shape: &Shape) -> [usize; 4] {
    let dims = shape.as_slice();
    [dims[0], dims[1], dims[2], dims[3]]
}

/// Whether the route is on for this process (`MMIX_ONEDNN=off` or `0` turns it off, and so
/// does `MMIX_KERNELS=generic`).
pub(crate) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        super::own_kernels()
            && !matches!(
                std::env::var("MMIX_ONEDNN").as_deref(),
                Ok("off" | "0" | "false")
            )
    })
}

/// Whether oneDNN can take this convolution: route on, f32 tensors on Flex, dilation 1, no groups.
pub fn accepts<const D: usize>(x: &Tensor<D>, dilation: [usize; 2], groups: usize) -> bool {
    enabled() && dilation == [1, 1] && groups == 1 && super::on_flex_f32(x)
}

/// The precision of the convolutions this thread starts on the route ([`super::precision`]).
pub fn precision() -> Precision {
    super::precision()
}

/// The instruction set oneDNN dispatches to on this CPU, as oneDNN names it.
pub(crate) fn isa() -> &'static str {
    static ISA: OnceLock<String> = OnceLock::new();
    ISA.get_or_init(ffi::isa)
}

/// How oneDNN computes bf16 convolutions here: `Ok` with its implementation's name where the
/// CPU has bf16 instructions (AVX512-BF16 or AMX); `Err` with the reason and whether an
/// implementation exists at all (a slow one can be forced; none cannot).
pub(crate) fn bf16_support() -> Result<String, (String, bool)> {
    // Creating the probe's primitive asks every implementation; once per process is enough.
    static IMPLEMENTATION: OnceLock<String> = OnceLock::new();
    let implementation = IMPLEMENTATION
        .get_or_init(|| ffi::implementation(true))
        .clone();
    if implementation.is_empty() {
        return Err((
            format!(
                "this oneDNN has no bf16 convolution for this CPU ({})",
                isa()
            ),
            false,
        ));
    }
    let native = matches!(isa(), "avx512_core_bf16" | "avx512_core_amx")
        && !implementation.starts_with("ref");
    if native {
        Ok(implementation)
    } else {
        Err((
            format!(
                "oneDNN dispatches to {} here, without bf16 instructions (AVX512-BF16 or AMX); bf16 convolutions would run on {implementation}",
                isa()
            ),
            true,
        ))
    }
}

/// Channels per block of the layout oneDNN computes convolutions in on this CPU (16 with
/// AVX-512, 8 with AVX2), or 1 when it computes in none: feature maps kept in it cross
/// without conversions. Probed once per process.
pub(crate) fn native_block() -> usize {
    static BLOCK: OnceLock<usize> = OnceLock::new();
    *BLOCK.get_or_init(ffi::native_block)
}

/// A bias-free 2-D convolution of the feature map `x` (plain `[N, C, H, W]` or blocked
/// `[N, C / b, H, W, b]` with `b` 8 or 16) with `weight` `[O, C, kH, kW]` on oneDNN,
/// differentiable in both, written in `out` layout (of rank `R`: 4 plain, 5 blocked). Call it
/// only where [`accepts`] says so.
pub(crate) fn conv2d<const D: usize, const R: usize>(
    x: Tensor<D>,
    weight: Tensor<4>,
    geometry: ConvGeometry,
    out: Layout,
) -> Tensor<R> {
    assert_eq!(R, out.rank(), "output rank");
    Tensor::from_dispatch(<Dispatch as OneDnnConv>::onednn_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        geometry,
        out,
    ))
}

#[backend_extension(Autodiff, Flex)]
/// Convolutions through oneDNN, on Flex tensors.
pub(crate) trait OneDnnConv: Backend {
    /// The 2-D convolution of `x` by `weight` (no bias), with `geometry`'s stride and padding,
    /// written in layout `out`.
    fn onednn_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: ConvGeometry,
        out: Layout,
    ) -> FloatTensor<Self>;
}

impl OneDnnConv for Flex {
    fn onednn_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        geometry: ConvGeometry,
        out: Layout,
    ) -> FlexTensor {
        forward(x, weight, geometry, out, false).0
    }
}

impl<C: CheckpointStrategy> OneDnnConv for Autodiff<Flex, C> {
    fn onednn_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: ConvGeometry,
        out: Layout,
    ) -> FloatTensor<Self> {
        match ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let weight = weight.primitive().clone();
                let (output, input) =
                    forward(x.primitive().clone(), weight.clone(), geometry, out, true);
                prep.finish((input, weight, geometry, out), output)
            }
            OpsKind::UnTracked(prep) => {
                let x = x.into_primitive();
                prep.finish(forward(x, weight.into_primitive(), geometry, out, false).0)
            }
        }
    }
}

#[derive(Debug)]
struct ConvBackward;

/// A convolution's input as its backward pass keeps it: the tensor, or only oneDNN's copy of
/// it (the forward pass made that copy anyway, and keeping it saves converting it again).
#[derive(Clone, Debug)]
enum Input {
    Tensor(FlexTensor),
    Saved {
        copy: Arc<SavedSource>,
        shape: Shape,
    },
}

impl Input {
    fn shape(&self) -> Shape {
        match self {
            Input::Tensor(x) => x.shape(),
            Input::Saved { shape, .. } => shape.clone(),
        }
    }
}

impl Backward<Flex, 2> for ConvBackward {
    type State = (Input, FlexTensor, ConvGeometry, Layout);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let output_grad = grads.consume::<Flex>(&ops.node);
        let (input, weight, geometry, out) = ops.state;
        let want = [node_x.is_some(), node_weight.is_some()];
        let [x_grad, weight_grad] = gradients(input, weight, output_grad, geometry, out, want);
        if let (Some(node), Some(grad)) = (node_x, x_grad) {
            grads.register::<Flex>(node.id, grad);
        }
        if let (Some(node), Some(grad)) = (node_weight, weight_grad) {
            grads.register::<Flex>(node.id, grad);
        }
    }
}

/// The convolution, and with `keep_input` its input as the backward pass will keep it.
fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    geometry: ConvGeometry,
    out: Layout,
    keep_input: bool,
) -> (FlexTensor, Input) {
    let shape = geometry.checked_shape(&x.shape(), &weight.shape(), out.block());
    let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
    match ffi::forward(&shape, f32s(&x), f32s(&weight), keep_input) {
        Ok((values, saved)) => {
            let input = match saved {
                Some(copy) => Input::Saved {
                    copy: Arc::new(copy),
                    shape: x.shape(),
                },
                None => Input::Tensor(x),
            };
            (tensor(values, out.dims(out_dims(&shape))), input)
        }
        Err(message) => {
            fell_back(&message);
            let plain = Flex::conv2d(to_plain(x.clone()), weight, None, geometry.options());
            let output = Flex::float_reshape(
                from_plain(plain, out.block()),
                out.dims(out_dims(&shape)).into(),
            );
            (output, Input::Tensor(x))
        }
    }
}

/// The gradients of the input and of the weights, each where `want` asks for it.
#[allow(
    clippy::panic,
    reason = "cannot fail: …; then, recovering the input: …"
)]
fn gradients(
    input: Input,
    weight: FlexTensor,
    output_grad: FlexTensor,
    geometry: ConvGeometry,
    out: Layout,
    want: [bool; 2],
) -> [Option<FlexTensor>; 2] {
    let x_shape = input.shape();
    let shape = geometry.checked_shape(&x_shape, &weight.shape(), out.block());
    let weight = weight.to_contiguous();
    let output_grad = output_grad.to_contiguous();
    let plain_input;
    let source = match &input {
        Input::Tensor(x) => {
            plain_input = x.to_contiguous();
            Source::Plain(f32s(&plain_input))
        }
        Input::Saved { copy, .. } => Source::Saved(copy),
    };
    let result = ffi::backward(&shape, source, f32s(&weight), f32s(&output_grad), want);
    match result {
        Ok(grads) => [
            grads
                .input
                .map(|values| tensor(values, x_shape.as_slice().to_vec())),
            grads
                .weights
                .map(|values| tensor(values, dims4(&weight.shape()).to_vec())),
        ],
        Err(message) => {
            fell_back(&message);
            let x = match input {
                Input::Tensor(x) => x,
                Input::Saved {
                    copy,
                    shape: x_dims,
                } => match copy.to_user(&shape) {
                    Ok(values) => tensor(values, x_dims.as_slice().to_vec()),
                    // The bridge can neither compute nor return the input: no gradient can
                    // be computed, and training cannot go on correctly.
                    Err(second) => panic!("{message}; then, recovering the input: {second}"),
                },
            };
            let in_block = block_of(x_shape.as_slice());
            let (x, output_grad) = (to_plain(x), to_plain(output_grad));
            let options = geometry.options();
            [
                want[0].then(|| {
                    let plain = Flex::conv2d_x_backward(
                        x.clone(),
                        weight.clone(),
                        output_grad.clone(),
                        options.clone(),
                    );
                    // A map in blocks of one channel is rank 5 too.
                    Flex::float_reshape(from_plain(plain, in_block), x_shape.clone())
                }),
                want[1].then(|| Flex::conv2d_weight_backward(x, weight, output_grad, options)),
            ]
        }
    }
}

/// A plain or blocked Flex tensor in the plain layout, for Flex's own convolutions.
#[allow(clippy::panic, reason = "cannot fail: a feature map of shape …")]
fn to_plain(x: FlexTensor) -> FlexTensor {
    match *x.shape().as_slice() {
        [_, _, _, _] => x,
        [n, blocks, h, w, block] => {
            let channels_outside = Flex::float_permute(x, &[0, 1, 4, 2, 3]);
            Flex::float_reshape(channels_outside, Shape::from([n, blocks * block, h, w]))
        }
        ref dims => panic!("a feature map of shape {dims:?}"),
    }
}

/// A plain Flex tensor in blocks of `block` channels (rank 5), or itself when `block` is 1.
fn from_plain(x: FlexTensor, block: usize) -> FlexTensor {
    if block == 1 {
        return x;
    }
    let [n, c, h, w] = dims4(&x.shape());
    let split = Flex::float_reshape(x, Shape::from([n, c / block, block, h, w]));
    let blocked = Flex::float_permute(split, &[0, 1, 3, 4, 2]);
    Flex::float_reshape(blocked, Shape::from([n, c / block, h, w, block]))
}

#[allow(
    clippy::expect_used,
    reason = "cannot fail: contiguous f32 tensor (checked by `accepts`)"
)]
fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("contiguous f32 tensor (checked by `accepts`)")
}

static FALLBACKS: AtomicUsize = AtomicUsize::new(0);

/// How many oneDNN calls failed and fell back to Flex in this process.
#[cfg(test)]
pub(crate) fn fallbacks() -> usize {
    FALLBACKS.load(Ordering::Relaxed)
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Counts a failed oneDNN call and warns about the first.
fn fell_back(message: &str) {
    FALLBACKS.fetch_add(1, Ordering::Relaxed);
    static WARNING: Once = Once::new();
    WARNING.call_once(|| {
        eprintln!("warning: {message}; convolutions fall back to Burn's Flex kernels")
    });
}

#[cfg(test)]
mod tests;
