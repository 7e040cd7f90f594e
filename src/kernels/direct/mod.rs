//! Convolutions of our own on the Flex CPU backend: direct convolution loops in Rust (see
//! `loops`), for every build, so that a machine without oneDNN trains at a useful speed.
//! Where oneDNN is built in and on, it takes the convolutions first; this route takes what it
//! does not, and everything this route refuses stays on Burn.
//!
//! Like the oneDNN route, one bias-free 2-D convolution is routed here through Burn's
//! backend-extension mechanism, and under autodiff a hand-written backward computes the input
//! gradient (a stride-1 convolution of the padded output gradient with the kernel turned half
//! a turn and its channels swapped; at a stride above 1, one per phase of the input, with the
//! taps that reach it) and the weight gradient.
//! Feature maps come and go plain or in blocks of 16 channels; inside, each is copied once
//! into a zero-padded blocked buffer, which costs one pass over the map against the
//! convolution's `9 · C_in` multiply-adds per output value.
//!
//! In bf16 ([`Precision::Bf16`], where the CPU has AVX512-BF16) that copy, the weights' and
//! the output gradient's are rounded to bf16 as they are made, the loops multiply pairs of
//! them into f32 sums, and everything they write is f32: the oneDNN route's arithmetic.
//!
//! `MMIX_OWN_CONV=off` in the environment turns the route off at run time (Burn's
//! convolutions then), and so does `MMIX_KERNELS=generic`.

mod loops;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Shape, Tensor, TensorData};
use half::bf16;
use rayon::prelude::*;

use super::Precision;
use super::layout::{Layout, block_of};
use loops::{Element, Isa, Kernel, LANES, Output, Packed, Packing};

/// Channels per block of the feature maps this route computes on without converting them.
pub(crate) const BLOCK: usize = LANES;

/// The most values a patch may hold for the input to be packed as patches: 16 blocks, which
/// covers a 7×7 stem of three colours (147) at about 13 times the input's memory.
const MAX_PATCH: usize = 16 * LANES;

/// A convolution's stride (the same along both axes, 1 or 2) and `(before, after)` padding
/// per spatial axis, each below the kernel's size (dilation 1, one group), and the precision
/// its operands are read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub stride: usize,
    pub padding: [(usize, usize); 2],
    pub precision: Precision,
}

/// Whether the route is on for this process.
pub(crate) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        super::own_kernels()
            && !matches!(
                std::env::var("MMIX_OWN_CONV").as_deref(),
                Ok("off" | "0" | "false")
            )
    })
}

/// The instruction set the loops run with here in `precision`: `avx512`, `avx2` or
/// `portable` in f32; `avx512-bf16` or `portable` in bf16.
pub(crate) fn isa(precision: Precision) -> &'static str {
    match precision {
        Precision::F32 => Isa::detect().name(),
        Precision::Bf16 => Isa::detect_bf16().name(),
    }
}

/// The multiply-add peak of this route's loops in `precision` on this machine, in FLOP/s over
/// all threads (measured: see `loops::peak_flops`).
pub(crate) fn peak_flops(precision: Precision) -> f64 {
    match precision {
        Precision::F32 => loops::peak_flops::<f32>(),
        Precision::Bf16 => loops::peak_flops::<bf16>(),
    }
}

/// `Ok` where this CPU multiplies bf16 natively (AVX512-BF16); else why not, and `true`: the
/// portable loops compute the same sums, far more slowly.
pub(crate) fn bf16_support() -> Result<(), (String, bool)> {
    match Isa::detect_bf16() {
        Isa::Avx512Bf16 => Ok(()),
        _ => Err((
            format!(
                "this CPU has no AVX512-BF16, which mmix's own kernels compute bf16 with (they run {} here)",
                Isa::detect().name()
            ),
            true,
        )),
    }
}

/// Whether this route takes the convolution of `x` (plain, or blocked in 16s) by `weight`
/// with these settings, written in `out`: route on, f32 on Flex, one group, dilation 1, a
/// stride of 1 or 2 along both axes, padding below the kernel's size.
pub(crate) fn accepts<const D: usize>(
    x: &Tensor<D>,
    weight: [usize; 4],
    stride: [usize; 2],
    padding: [(usize, usize); 2],
    dilation: [usize; 2],
    groups: usize,
    out: Layout,
) -> Option<Geometry> {
    let [_, _, kh, kw] = weight;
    let block = block_of(&x.dims());
    let fits = enabled()
        && groups == 1
        && dilation == [1, 1]
        && stride[0] == stride[1]
        && matches!(stride[0], 1 | 2)
        && matches!(block, 1 | LANES)
        && matches!(out, Layout::Plain | Layout::Blocked(LANES))
        && padding[0].0.max(padding[0].1) < kh
        && padding[1].0.max(padding[1].1) < kw
        && super::on_flex_f32(x);
    fits.then_some(Geometry {
        stride: stride[0],
        padding,
        precision: super::precision(),
    })
}

/// The bias-free convolution of `x` (plain `[N, C, H, W]` or `[N, C / 16, H, W, 16]`) by
/// `weight` `[O, C, kH, kW]`, differentiable in both, written in `out` (rank `R`). Call it
/// only where [`accepts`] says so.
pub(crate) fn conv2d<const D: usize, const R: usize>(
    x: Tensor<D>,
    weight: Tensor<4>,
    geometry: Geometry,
    out: Layout,
) -> Tensor<R> {
    assert_eq!(R, out.rank(), "output rank");
    Tensor::from_dispatch(<Dispatch as DirectConv>::direct_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        geometry,
        out,
    ))
}

#[backend_extension(Autodiff, Flex)]
/// Convolutions on mmix's own loops, on Flex tensors.
pub(crate) trait DirectConv: Backend {
    /// The 2-D convolution of `x` by `weight` (no bias), written in layout `out`.
    fn direct_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: Geometry,
        out: Layout,
    ) -> FloatTensor<Self>;
}

impl DirectConv for Flex {
    fn direct_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        geometry: Geometry,
        out: Layout,
    ) -> FlexTensor {
        forward(&x, &weight, geometry, out).0
    }
}

impl<C: CheckpointStrategy> DirectConv for Autodiff<Flex, C> {
    fn direct_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: Geometry,
        out: Layout,
    ) -> FloatTensor<Self> {
        match ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let weight = weight.primitive().clone();
                let (output, input) = forward(x.primitive(), &weight, geometry, out);
                prep.finish((input, weight, geometry, out), output)
            }
            OpsKind::UnTracked(prep) => {
                let (output, _) = forward(x.primitive(), weight.primitive(), geometry, out);
                prep.finish(output)
            }
        }
    }
}

#[derive(Debug)]
struct ConvBackward;

/// A convolution's input as its backward pass keeps it: the packed copy the forward pass
/// made (the weight gradient reads that very copy), and the input's shape.
#[derive(Clone, Debug)]
struct SavedInput {
    packed: Arc<PackedValues>,
    shape: Shape,
}

/// A packed map's values in the precision of the convolution that made it.
#[derive(Debug)]
enum PackedValues {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
}

impl Backward<Flex, 2> for ConvBackward {
    type State = (SavedInput, FlexTensor, Geometry, Layout);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let output_grad = grads.consume::<Flex>(&ops.node);
        let (x, weight, geometry, out) = ops.state;
        let problem = Problem::new(&x.shape, &weight.shape(), geometry, out);
        let output_grad = output_grad.to_contiguous();
        let dy = f32s(&output_grad);
        if let Some(node) = node_x {
            let weight = weight.to_contiguous();
            let grad = match geometry.precision {
                Precision::F32 => problem.input_gradient::<f32>(dy, f32s(&weight)),
                Precision::Bf16 => problem.input_gradient::<bf16>(dy, f32s(&weight)),
            };
            grads.register::<Flex>(node.id, tensor(grad, x.shape.as_slice().to_vec()));
        }
        if let Some(node) = node_weight {
            let grad = match &*x.packed {
                PackedValues::F32(packed) => problem.weight_gradient(packed, dy),
                PackedValues::Bf16(packed) => problem.weight_gradient_bf16(packed, dy),
            };
            grads.register::<Flex>(node.id, tensor(grad, weight.shape().as_slice().to_vec()));
        }
    }
}

/// One convolution's sizes and layouts.
#[derive(Clone, Copy, Debug)]
struct Problem {
    /// `[n, c, h, w]` of the input, and its channel block (1 or 16).
    input: [usize; 4],
    in_block: usize,
    /// `[o, c, kh, kw]`.
    weight: [usize; 4],
    /// `[n, o, oh, ow]` of the output, and its layout.
    output: [usize; 4],
    out: Layout,
    geometry: Geometry,
}

impl Problem {
    /// The problem of convolving a map of shape `x` by weights of shape `weight`; shapes that
    /// [`accepts`] let through always make one (anything else is a caller's bug).
    #[allow(clippy::panic, reason = "cannot fail: weights of shape …")]
    fn new(x: &Shape, weight: &Shape, geometry: Geometry, out: Layout) -> Problem {
        let dims = x.as_slice();
        let in_block = block_of(dims);
        let input = [dims[0], dims[1] * in_block, dims[2], dims[3]];
        let &[o, c, kh, kw] = weight.as_slice() else {
            panic!("weights of shape {:?}", weight.as_slice())
        };
        assert_eq!(
            c, input[1],
            "weights for {c} input channels, a map of {}",
            input[1]
        );
        let [(top, bottom), (left, right)] = geometry.padding;
        let span = |len: usize, before: usize, after: usize, k: usize| {
            let padded = len + before + after;
            assert!(padded >= k, "a {k}-wide kernel over {padded} padded");
            (padded - k) / geometry.stride + 1
        };
        let output = [
            input[0],
            o,
            span(input[2], top, bottom, kh),
            span(input[3], left, right, kw),
        ];
        assert!(
            out == Layout::Plain || o.is_multiple_of(out.block()),
            "{o} channels in blocks of {}",
            out.block()
        );
        Problem {
            input,
            in_block,
            weight: [o, c, kh, kw],
            output,
            out,
            geometry,
        }
    }

    fn kernel(&self, stride: usize) -> Kernel {
        Kernel {
            height: self.weight[2],
            width: self.weight[3],
            stride,
        }
    }

    fn packing(&self) -> Packing {
        Packing {
            dims: self.input,
            block: self.in_block,
            padding: self.geometry.padding,
            dilation: 1,
        }
    }

    /// Whether the input is packed as its patches ([`loops::pack_patches`]), a 1×1
    /// convolution of fewer blocks than the kernel's taps times the input's blocks: a stem
    /// convolution of a few colour channels, which the padded map would leave 13 lanes in 16
    /// idle in (and more for a grey image).
    fn by_patches(&self) -> bool {
        let [_, c, kh, kw] = self.weight;
        let summed = c * kh * kw;
        self.in_block == 1
            && summed <= MAX_PATCH
            && summed.div_ceil(LANES) < kh * kw * c.div_ceil(LANES)
    }

    /// The packed input the forward pass and the weight gradient read, the kernel they
    /// convolve it with, and the channels it sums over.
    fn packed_input(&self) -> (Packed, Kernel, usize) {
        let [_, c, kh, kw] = self.weight;
        if self.by_patches() {
            let [n, _, oh, ow] = self.output;
            let one_by_one = Kernel {
                height: 1,
                width: 1,
                stride: 1,
            };
            let summed = c * kh * kw;
            return (
                loops::patches_packed(n, summed, [oh, ow]),
                one_by_one,
                summed,
            );
        }
        (
            self.packing().packed(),
            self.kernel(self.geometry.stride),
            c,
        )
    }

    /// The output, and the packed input.
    fn forward<E: Element>(&self, x: &[f32], weight: &[f32]) -> (Vec<f32>, Vec<E>) {
        let [_, o, oh, ow] = self.output;
        let (packed, kernel, summed) = self.packed_input();
        let packed_x = if self.by_patches() {
            let stride = self.kernel(self.geometry.stride);
            loops::pack_patches::<E>(x, &self.packing(), stride, [oh, ow])
        } else {
            loops::pack::<E>(x, &self.packing())
        };
        // `[o, c, kh, kw]` and `[o, c·kh·kw, 1, 1]` lie alike in memory.
        let dims = [o, summed, kernel.height, kernel.width];
        let weights = loops::pack_weights::<E>(weight, dims, false);
        let output = Output {
            dims: self.output,
            blocked: self.out != Layout::Plain,
        };
        let values = loops::convolve(&packed_x, packed, &weights, kernel, output);
        (values, packed_x)
    }

    /// The input gradient, in the input's layout: phase by phase where the stride is above 1
    /// (see [`Self::input_gradient_by_phases`]), else, and where a phase would need the
    /// output gradient cropped, the output gradient spread by the stride, padded by the
    /// kernel's size less the forward padding, convolved at stride 1 by the weights turned
    /// half a turn with their channels swapped.
    fn input_gradient<E: Element>(&self, dy: &[f32], weight: &[f32]) -> Vec<f32> {
        if self.geometry.stride > 1
            && let Some(phases) = self.phases()
        {
            return self.input_gradient_by_phases::<E>(dy, weight, &phases);
        }
        let [_, _, kh, kw] = self.weight;
        let [_, _, h, w] = self.input;
        let [_, _, oh, ow] = self.output;
        let s = self.geometry.stride;
        let [(top, _), (left, _)] = self.geometry.padding;
        // Before: `k − 1 − pad` (non-negative as `accepts` holds padding below the kernel);
        // after: what makes the stride-1 output `h` tall, at least `k − 1 − pad_after`.
        let (top, left) = (kh - 1 - top, kw - 1 - left);
        let bottom = h + kh - 1 - top - ((oh - 1) * s + 1);
        let right = w + kw - 1 - left - ((ow - 1) * s + 1);
        let packing = Packing {
            dims: self.output,
            block: self.out.block(),
            padding: [(top, bottom), (left, right)],
            dilation: s,
        };
        let spread = loops::pack::<E>(dy, &packing);
        let weights = loops::pack_weights::<E>(weight, self.weight, true);
        let output = Output {
            dims: self.input,
            blocked: self.in_block == LANES,
        };
        loops::convolve(&spread, packing.packed(), &weights, self.kernel(1), output)
    }

    /// Per phase `(py, px)` of a strided convolution's input, its rows' and columns' taps;
    /// `None` where one would need the output gradient cropped (padding of a stride or more).
    fn phases(&self) -> Option<Vec<(Phase, Phase)>> {
        let s = self.geometry.stride;
        let [_, _, h, w] = self.input;
        let [_, _, kh, kw] = self.weight;
        let [_, _, oh, ow] = self.output;
        let [(top, _), (left, _)] = self.geometry.padding;
        let mut phases = Vec::new();
        for py in 0..s.min(h) {
            for px in 0..s.min(w) {
                let rows = Phase::new(py, top, kh, s, h, oh)?;
                let cols = Phase::new(px, left, kw, s, w, ow)?;
                phases.push((rows, cols));
            }
        }
        Some(phases)
    }

    /// The input gradient of a strided convolution, phase by phase: the input pixels whose
    /// row and column leave remainders `(py, px)` by the stride take their gradient from the
    /// taps `i ≡ py + pad (mod stride)` (and likewise for columns) alone, a stride-1
    /// convolution of the output gradient by that part of the kernel. Spreading the output
    /// gradient with zeros would multiply by zero three times in four at stride 2.
    fn input_gradient_by_phases<E: Element>(
        &self,
        dy: &[f32],
        weight: &[f32],
        phases: &[(Phase, Phase)],
    ) -> Vec<f32> {
        let s = self.geometry.stride;
        let [n, c, h, w] = self.input;
        let [o, _, kh, kw] = self.weight;
        let blocked = self.in_block == LANES;
        let mut grad = vec![0.0f32; n * c * h * w];
        for (rows, cols) in phases {
            if rows.taps == 0 || cols.taps == 0 {
                // No tap reaches these pixels: their gradient is 0.
                continue;
            }
            let mut part = Vec::with_capacity(o * c * rows.taps * cols.taps);
            for out_channel in 0..o {
                for in_channel in 0..c {
                    for t in 0..rows.taps {
                        for u in 0..cols.taps {
                            let (i, j) = (rows.first + s * t, cols.first + s * u);
                            part.push(weight[((out_channel * c + in_channel) * kh + i) * kw + j]);
                        }
                    }
                }
            }
            let packing = Packing {
                dims: self.output,
                block: self.out.block(),
                padding: [(rows.before, rows.after), (cols.before, cols.after)],
                dilation: 1,
            };
            let packed_dy = loops::pack::<E>(dy, &packing);
            let weights = loops::pack_weights::<E>(&part, [o, c, rows.taps, cols.taps], true);
            let output = Output {
                dims: [n, c, rows.len, cols.len],
                blocked,
            };
            let kernel = Kernel {
                height: rows.taps,
                width: cols.taps,
                stride: 1,
            };
            let values = loops::convolve(&packed_dy, packing.packed(), &weights, kernel, output);
            // Into every `s`-th row and column from the phase's own, in the input's layout.
            let lanes = if blocked { LANES } else { 1 };
            let (phase_plane, plane) = (rows.len * cols.len * lanes, h * w * lanes);
            grad.par_chunks_mut(plane)
                .zip(values.par_chunks(phase_plane))
                .for_each(|(target, source)| {
                    for a in 0..rows.len {
                        for b in 0..cols.len {
                            let pixel = (s * a + rows.phase) * w + s * b + cols.phase;
                            target[pixel * lanes..][..lanes]
                                .copy_from_slice(&source[(a * cols.len + b) * lanes..][..lanes]);
                        }
                    }
                });
        }
        grad
    }

    /// The weight gradient, from the packed input.
    fn weight_gradient(&self, packed_x: &[f32], dy: &[f32]) -> Vec<f32> {
        let [_, o, oh, ow] = self.output;
        let dy = self.blocked_output_gradient(dy);
        let (packed, kernel, summed) = self.packed_input();
        loops::weight_gradient(packed_x, packed, &dy, [o, summed, oh, ow], kernel)
    }

    /// The weight gradient in bf16, from the packed input: the loops sum over two images per
    /// instruction, so the packed input and the output gradient are first laid out with their
    /// images in pairs.
    fn weight_gradient_bf16(&self, packed_x: &[bf16], dy: &[f32]) -> Vec<f32> {
        let [n, o, oh, ow] = self.output;
        let dy = self.blocked_output_gradient(dy);
        let paired_dy = loops::pair_images(&dy, n);
        let paired_x = loops::pair_images(packed_x, n);
        let (packed, kernel, summed) = self.packed_input();
        let packed = loops::Packed {
            n: n.div_ceil(2),
            ..packed
        };
        loops::weight_gradient(&paired_x, packed, &paired_dy, [o, summed, oh, ow], kernel)
    }

    /// The output gradient in blocks of 16 channels, as the weight gradient reads it: as it
    /// came where the output was blocked, else a blocked copy.
    fn blocked_output_gradient<'a>(&self, dy: &'a [f32]) -> Cow<'a, [f32]> {
        if self.out == Layout::Blocked(LANES) {
            return Cow::Borrowed(dy);
        }
        let packing = Packing {
            dims: self.output,
            block: self.out.block(),
            padding: [(0, 0), (0, 0)],
            dilation: 1,
        };
        Cow::Owned(loops::pack(dy, &packing))
    }
}

/// The convolution, and its input as the backward pass keeps it.
fn forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    geometry: Geometry,
    out: Layout,
) -> (FlexTensor, SavedInput) {
    let problem = Problem::new(&x.shape(), &weight.shape(), geometry, out);
    let (contiguous, weight) = (x.to_contiguous(), weight.to_contiguous());
    let (x_values, weight) = (f32s(&contiguous), f32s(&weight));
    let (values, packed) = match geometry.precision {
        Precision::F32 => {
            let (values, packed) = problem.forward::<f32>(x_values, weight);
            (values, PackedValues::F32(packed))
        }
        Precision::Bf16 => {
            let (values, packed) = problem.forward::<bf16>(x_values, weight);
            (values, PackedValues::Bf16(packed))
        }
    };
    let saved = SavedInput {
        packed: Arc::new(packed),
        shape: x.shape(),
    };
    (tensor(values, out.dims(problem.output)), saved)
}

/// One phase of a strided convolution's input along one axis: positions `stride · a + phase`
/// for `a < len`, reached by the taps `first + stride · t` for `t < taps`, and the output
/// gradient's padding before and after that lines up their stride-1 convolution.
#[derive(Clone, Copy, Debug)]
struct Phase {
    phase: usize,
    first: usize,
    taps: usize,
    len: usize,
    before: usize,
    after: usize,
}

impl Phase {
    /// The phase `phase` of an axis of `input` positions and `output` outputs, for a kernel
    /// of `kernel` taps at `stride` with `pad` before; `None` where it would need the output
    /// gradient cropped.
    fn new(
        phase: usize,
        pad: usize,
        kernel: usize,
        stride: usize,
        input: usize,
        output: usize,
    ) -> Option<Phase> {
        let first = (phase + pad) % stride;
        let len = (input - phase).div_ceil(stride);
        if first >= kernel {
            return Some(Phase {
                phase,
                first,
                taps: 0,
                len,
                before: 0,
                after: 0,
            });
        }
        let taps = (kernel - first).div_ceil(stride);
        // Input position `stride · a + phase` reads output `a + shift − t` by tap `t`.
        let shift = (phase + pad - first) / stride;
        let before = (taps - 1).checked_sub(shift)?;
        let after = (len + taps - 1).saturating_sub(before + output);
        Some(Phase {
            phase,
            first,
            taps,
            len,
            before,
            after,
        })
    }
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

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

#[cfg(test)]
mod tests;
