//! The loops of the direct convolutions, over raw buffers, each compiled for AVX-512, for
//! AVX2 with FMA, and without either, and picked at run time. They read f32, or bf16 where
//! the CPU has AVX512-BF16 (`vdpbf16ps`: the products of a pair of bf16 values added to an
//! f32 sum in one instruction, twice the multiply-adds of an f32 FMA); they always
//! accumulate and write f32.
//!
//! Every map the loops read is *packed*: zero-padded on every side and in blocks of 16
//! channels, `[N, ⌈C / 16⌉, Hp, Wp, 16]`, channels past `C` zero. With the padding in memory the
//! loops hold no bounds tests, and with 16 channels innermost one vector register holds the 16
//! output channels a tile accumulates (AVX-512: one register; AVX2: two).
//!
//! - [`convolve`]: a tile of up to 16 output pixels (1, 2 or 4 rows; AVX2: 6) of 16 output
//!   channels in registers; for each input channel and kernel tap, one weight
//!   vector is loaded and every pixel of the tile adds its input value times it (an FMA with
//!   a broadcast operand). The stride is a compile-time constant (1 or 2), so each pixel's
//!   input is a fixed displacement from one pointer.
//! - [`weight_gradient`]: 16 output channels × up to 16 consecutive input channels of one tap
//!   in registers; for each output pixel, one vector of the output gradient and one broadcast
//!   per input channel. Each image's sums start from zero and are added to the total, image by
//!   image in order: the result does not depend on how the work is split between threads.

use std::mem::MaybeUninit;

use half::bf16;
use rayon::prelude::*;

/// Output channels per vector: one AVX-512 register of f32.
pub(crate) const LANES: usize = 16;

/// A value of the maps and weights the loops read: f32, or bf16.
pub(crate) trait Element: Copy + Default + Send + Sync + 'static {
    /// Values of the summed axis one multiply-add instruction takes: 1 (f32 FMA) or 2
    /// (bf16 `vdpbf16ps`).
    const PAIR: usize;

    /// `value`, rounded to the nearest (ties to even) where `Self` is narrower.
    fn from_f32(value: f32) -> Self;

    /// Writes `source` as `Self` into `target`, of the same length: [`Self::from_f32`] of
    /// each, in vectors where the CPU has the instruction.
    fn write_from_f32(target: &mut [MaybeUninit<Self>], source: &[f32]);

    /// The instruction set this CPU computes in `Self` with.
    fn detect() -> Isa;

    /// # Safety
    /// As [`Isa::convolve`]'s.
    unsafe fn convolve(isa: Isa, task: &Task<Self>, out: &mut [MaybeUninit<f32>]);

    /// # Safety
    /// As [`gradient_task`]'s.
    unsafe fn gradient(isa: Isa, task: &GradientTask<Self>, sums: &mut [[f32; LANES]]);

    /// Input channels per run of the weight gradient: what fits the registers.
    fn gradient_run(isa: Isa) -> usize;

    /// Runs `rounds` times the 16 independent multiply-adds the loops' tiles make on `isa`
    /// (FMAs, or `vdpbf16ps`) on registers alone, and returns the floating-point operations
    /// done: what one thread can do at most.
    ///
    /// # Safety
    /// The CPU has `isa`.
    unsafe fn spin(isa: Isa, rounds: usize) -> f64;
}

impl Element for f32 {
    const PAIR: usize = 1;

    fn from_f32(value: f32) -> Self {
        value
    }

    fn write_from_f32(target: &mut [MaybeUninit<f32>], source: &[f32]) {
        for (t, s) in target.iter_mut().zip(source) {
            t.write(*s);
        }
    }

    fn detect() -> Isa {
        Isa::detect()
    }

    unsafe fn convolve(isa: Isa, task: &Task<f32>, out: &mut [MaybeUninit<f32>]) {
        // SAFETY: as the caller's.
        unsafe { isa.convolve(task, out) }
    }

    unsafe fn gradient(isa: Isa, task: &GradientTask<f32>, sums: &mut [[f32; LANES]]) {
        // SAFETY: as the caller's.
        unsafe { isa.gradient(task, sums) }
    }

    fn gradient_run(isa: Isa) -> usize {
        isa.gradient_run()
    }

    unsafe fn spin(isa: Isa, rounds: usize) -> f64 {
        // SAFETY: as the caller's.
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::spin_avx512(rounds) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::spin_avx2(rounds) },
            _ => spin_portable(rounds),
        }
    }
}

impl Element for bf16 {
    const PAIR: usize = 2;

    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }

    fn write_from_f32(target: &mut [MaybeUninit<bf16>], source: &[f32]) {
        assert_eq!(target.len(), source.len(), "values to write");
        #[cfg(target_arch = "x86_64")]
        if Isa::detect_bf16() == Isa::Avx512Bf16 {
            // SAFETY: detected; the lengths are equal.
            return unsafe { x86::write_bf16(target, source) };
        }
        for (t, s) in target.iter_mut().zip(source) {
            t.write(bf16::from_f32(*s));
        }
    }

    fn detect() -> Isa {
        Isa::detect_bf16()
    }

    unsafe fn convolve(isa: Isa, task: &Task<bf16>, out: &mut [MaybeUninit<f32>]) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detected; as the caller's.
            Isa::Avx512Bf16 => unsafe { x86::convolve_avx512_bf16(task, out) },
            // SAFETY: as the caller's.
            _ => unsafe { convolve_task::<PortableBf16>(task, out) },
        }
    }

    unsafe fn gradient(isa: Isa, task: &GradientTask<bf16>, sums: &mut [[f32; LANES]]) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detected; as the caller's.
            Isa::Avx512Bf16 => unsafe { x86::gradient_avx512_bf16(task, sums) },
            // SAFETY: as the caller's.
            _ => unsafe { gradient_task::<PortableBf16>(task, sums) },
        }
    }

    fn gradient_run(isa: Isa) -> usize {
        match isa {
            Isa::Avx512Bf16 => 16,
            _ => 4,
        }
    }

    unsafe fn spin(isa: Isa, rounds: usize) -> f64 {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as the caller's.
            Isa::Avx512Bf16 => unsafe { x86::spin_avx512_bf16(rounds) },
            _ => spin_portable(rounds),
        }
    }
}

/// [`Element::spin`] in plain Rust: 16 sums of 16 lanes, as the compiler vectorises them.
fn spin_portable(rounds: usize) -> f64 {
    let mut sums = [[0.0f32; LANES]; 16];
    let w = std::hint::black_box([1e-7f32; LANES]);
    for _ in 0..rounds {
        for (k, sum) in sums.iter_mut().enumerate() {
            for (s, w) in sum.iter_mut().zip(&w) {
                *s = (k as f32).mul_add(*w, *s);
            }
        }
    }
    std::hint::black_box(sums);
    (rounds * 16 * LANES * 2) as f64
}

/// The multiply-add peak of the loops in `E` on this machine, in floating-point operations
/// a second: every one of rayon's threads runs [`Element::spin`] at once for some
/// milliseconds, and their rates add up. Measured rather than derived from a clock and a
/// count of units, which vary between the CPUs mmix runs on (AMD Zen 4 runs 512-bit FMAs at
/// half the rate Intel's server cores do, and `vdpbf16ps` at its full rate).
pub(crate) fn peak_flops<E: Element>() -> f64 {
    let isa = E::detect();
    // About 30 ms a try at AVX-512's rate; the best of three, as a thread that lost its core
    // for a moment would understate it.
    (0..3)
        .map(|_| {
            let rates = rayon::broadcast(|_| {
                let started = std::time::Instant::now();
                // SAFETY: `isa` was detected on this CPU.
                let flops = unsafe { E::spin(isa, 6_000_000) };
                flops / started.elapsed().as_secs_f64()
            });
            rates.iter().sum::<f64>()
        })
        .fold(0.0, f64::max)
}

/// A packed map's dimensions: `[n, blocks, height, width, 16]`, padding included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Packed {
    pub n: usize,
    pub blocks: usize,
    pub height: usize,
    pub width: usize,
}

impl Packed {
    fn plane(&self) -> usize {
        self.height * self.width * LANES
    }

    fn image(&self) -> usize {
        self.blocks * self.plane()
    }

    pub fn len(&self) -> usize {
        self.n * self.image()
    }
}

/// How a map enters the packed layout: its `[n, c, h, w]`, channels in blocks of `block`
/// (1: plain), `(before, after)` zeros along each axis, and `dilation - 1` zeros between
/// neighbours (the input gradient of a strided convolution spreads the output gradient so).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Packing {
    pub dims: [usize; 4],
    pub block: usize,
    pub padding: [(usize, usize); 2],
    pub dilation: usize,
}

impl Packing {
    pub fn packed(&self) -> Packed {
        let [n, c, h, w] = self.dims;
        let spread = |len: usize| (len.max(1) - 1) * self.dilation + 1;
        Packed {
            n,
            blocks: c.div_ceil(LANES),
            height: self.padding[0].0 + spread(h) + self.padding[0].1,
            width: self.padding[1].0 + spread(w) + self.padding[1].1,
        }
    }
}

/// `x` (laid out as `packing` says) in the packed layout, its values as `E`.
pub(crate) fn pack<E: Element>(x: &[f32], packing: &Packing) -> Vec<E> {
    let [n, c, h, w] = packing.dims;
    let block = packing.block;
    assert!(
        block > 0 && c.is_multiple_of(block),
        "{c} channels in blocks of {block}"
    );
    assert_eq!(x.len(), n * c * h * w, "map of {:?}", packing.dims);
    let packed = packing.packed();
    let (top, left, d) = (packing.padding[0].0, packing.padding[1].0, packing.dilation);
    let source_image = c * h * w;
    if block == LANES && d == 1 && !x.is_empty() {
        // Each element written once: the borders' zeros and the rows between them.
        let mut out = Vec::<E>::with_capacity(packed.len());
        out.spare_capacity_mut()[..packed.len()]
            .par_chunks_mut(packed.plane())
            .zip(x.par_chunks(h * w * LANES))
            .for_each(|(plane, source)| {
                let zero = |run: &mut [MaybeUninit<E>]| {
                    run.iter_mut().for_each(|v| {
                        v.write(E::default());
                    })
                };
                let row = packed.width * LANES;
                let (above, rest) = plane.split_at_mut(top * row);
                zero(above);
                let (rows, below) = rest.split_at_mut(h * row);
                zero(below);
                for (target, source) in rows.chunks_mut(row).zip(source.chunks(w * LANES)) {
                    let (before, rest) = target.split_at_mut(left * LANES);
                    zero(before);
                    let (middle, after) = rest.split_at_mut(w * LANES);
                    zero(after);
                    E::write_from_f32(middle, source);
                }
            });
        // SAFETY: the planes tile the buffer (one per block of each image, as the source's
        // `h · w · 16` runs do) and each was written whole.
        unsafe { out.set_len(packed.len()) };
        return out;
    }
    let mut out = vec![E::default(); packed.len()];
    if out.is_empty() || x.is_empty() {
        return out;
    }
    out.par_chunks_mut(packed.image())
        .zip(x.par_chunks(source_image))
        .for_each(|(image, source)| {
            if block == LANES {
                // Whole 16-channel pixels, spread.
                for (plane, source) in image
                    .chunks_mut(packed.plane())
                    .zip(source.chunks(h * w * LANES))
                {
                    for (y, source) in source.chunks(w * LANES).enumerate() {
                        let target = ((top + y * d) * packed.width + left) * LANES;
                        for (x, pixel) in source.chunks(LANES).enumerate() {
                            for (t, s) in plane[target + x * d * LANES..][..LANES]
                                .iter_mut()
                                .zip(pixel)
                            {
                                *t = E::from_f32(*s);
                            }
                        }
                    }
                }
                return;
            }
            for channel in 0..c {
                let plane = &mut image[(channel / LANES) * packed.plane()..][..packed.plane()];
                let lane = channel % LANES;
                // The source's element (channel, y, x) sits at `base + y · row + x · step`.
                let (base, row, step) = (
                    (channel / block) * h * w * block + channel % block,
                    w * block,
                    block,
                );
                for y in 0..h {
                    let target = ((top + y * d) * packed.width + left) * LANES + lane;
                    let source = &source[base + y * row..];
                    for x in 0..w {
                        plane[target + x * d * LANES] = E::from_f32(source[x * step]);
                    }
                }
            }
        });
    out
}

/// The patches `kernel` reads from the plain map `x` `[n, c, h, w]` (zero where they reach
/// into `padding`), as a packed map for a 1×1 convolution: `[n, ⌈c·kh·kw / 16⌉, oh, ow, 16]`,
/// the summed axis in the lanes in the order the weights `[o, c, kh, kw]` lie in. A map of
/// few channels packed as [`pack`] does fills one lane in 16 of every vector the loops
/// multiply by; its patches fill all but the last block's tail.
pub(crate) fn pack_patches<E: Element>(
    x: &[f32],
    packing: &Packing,
    kernel: Kernel,
    [oh, ow]: [usize; 2],
) -> Vec<E> {
    let [n, c, h, w] = packing.dims;
    assert!(
        packing.block == 1 && packing.dilation == 1,
        "patches of a plain map"
    );
    assert_eq!(x.len(), n * c * h * w, "map of {:?}", packing.dims);
    let (kh, kw, s) = (kernel.height, kernel.width, kernel.stride);
    let summed = c * kh * kw;
    let packed = patches_packed(n, summed, [oh, ow]);
    let mut out = vec![E::default(); packed.len()];
    if out.is_empty() {
        return out;
    }
    let [(top, _), (left, _)] = packing.padding;
    // Output position `o` reads input `o · s + tap − pad`: the outputs whose read lies inside.
    let inside = |tap: usize, pad: usize, input: usize, outputs: usize| {
        let first = pad.saturating_sub(tap).div_ceil(s);
        let end = (input + pad).saturating_sub(tap).div_ceil(s).min(outputs);
        first..end.max(first)
    };
    out.par_chunks_mut(packed.image())
        .zip(x.par_chunks(c * h * w))
        .for_each(|(image, source)| {
            for k in 0..summed {
                let (channel, i, j) = (k / (kh * kw), k / kw % kh, k % kw);
                let plane = &mut image[(k / LANES) * packed.plane()..][..packed.plane()];
                let source = &source[channel * h * w..][..h * w];
                let columns = inside(j, left, w, ow);
                for y in inside(i, top, h, oh) {
                    let row = &source[(y * s + i - top) * w..][..w];
                    for x in columns.clone() {
                        plane[(y * ow + x) * LANES + k % LANES] =
                            E::from_f32(row[x * s + j - left]);
                    }
                }
            }
        });
    out
}

/// The packed map [`pack_patches`] makes of `n` images with `summed` values per patch.
pub(crate) fn patches_packed(n: usize, summed: usize, [oh, ow]: [usize; 2]) -> Packed {
    Packed {
        n,
        blocks: summed.div_ceil(LANES),
        height: oh,
        width: ow,
    }
}

/// Weights `[o, c, kh, kw]` packed for [`convolve`]: `[⌈o / 16⌉, ⌈c / 16⌉, kh, kw, 16 (c), 16 (o)]`,
/// zero past `o` and `c`; in bf16, `[…, kh, kw, 8 (c / 2), 16 (o), 2 (c % 2)]`, so that one
/// vector holds a pair of input channels for each of 16 outputs. With `transpose`, the
/// weights of the input gradient instead: the roles of `o` and `c` swapped and the kernel
/// turned half a turn.
pub(crate) fn pack_weights<E: Element>(
    weights: &[f32],
    dims: [usize; 4],
    transpose: bool,
) -> Vec<E> {
    let [o, c, kh, kw] = dims;
    assert_eq!(weights.len(), o * c * kh * kw, "weights of {dims:?}");
    let (outs, ins) = if transpose { (c, o) } else { (o, c) };
    let (out_blocks, in_blocks) = (outs.div_ceil(LANES), ins.div_ceil(LANES));
    let pair = E::PAIR;
    let mut packed = vec![E::default(); out_blocks * in_blocks * kh * kw * LANES * LANES];
    for out_channel in 0..outs {
        for in_channel in 0..ins {
            for i in 0..kh {
                for j in 0..kw {
                    let value = if transpose {
                        weights
                            [((in_channel * c + out_channel) * kh + kh - 1 - i) * kw + kw - 1 - j]
                    } else {
                        weights[((out_channel * c + in_channel) * kh + i) * kw + j]
                    };
                    let tap =
                        ((out_channel / LANES * in_blocks + in_channel / LANES) * kh + i) * kw + j;
                    let lane = in_channel % LANES;
                    packed[tap * LANES * LANES
                        + ((lane / pair) * LANES + out_channel % LANES) * pair
                        + lane % pair] = E::from_f32(value);
                }
            }
        }
    }
    packed
}

/// Where [`convolve`] writes its output `[n, channels, height, width]`: plain, or in blocks of
/// 16 channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Output {
    pub dims: [usize; 4],
    pub blocked: bool,
}

impl Output {
    fn groups(&self) -> usize {
        self.dims[1].div_ceil(LANES)
    }

    /// The output's slice of image `n`'s channel group `g`: `[lanes, h, w]` plain,
    /// `[h, w, 16]` blocked. Either way one contiguous run, in image and group order.
    fn group_len(&self, g: usize) -> usize {
        let [_, c, h, w] = self.dims;
        (c - g * LANES).min(LANES) * h * w
    }

    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A convolution's kernel and stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kernel {
    pub height: usize,
    pub width: usize,
    pub stride: usize,
}

/// The convolution of the packed map `x` by packed `weights` ([`pack_weights`]), written as
/// `out` says. The output's height and width follow from the packed map, the kernel and the
/// stride (1 or 2).
pub(crate) fn convolve<E: Element>(
    x: &[E],
    packed: Packed,
    weights: &[E],
    kernel: Kernel,
    out: Output,
) -> Vec<f32> {
    convolve_on(E::detect(), x, packed, weights, kernel, out)
}

/// [`convolve`] on the loops compiled for `isa` (which the CPU must have).
pub(crate) fn convolve_on<E: Element>(
    isa: Isa,
    x: &[E],
    packed: Packed,
    weights: &[E],
    kernel: Kernel,
    out: Output,
) -> Vec<f32> {
    let [n, _, oh, ow] = out.dims;
    assert_eq!(x.len(), packed.len(), "packed map of {packed:?}");
    assert_eq!(n, packed.n, "images");
    assert!(matches!(kernel.stride, 1 | 2), "stride {}", kernel.stride);
    assert!(kernel.height > 0 && kernel.width > 0, "kernel {kernel:?}");
    let reach = |o: usize, k: usize| (o.max(1) - 1) * kernel.stride + k;
    assert!(
        oh == 0
            || ow == 0
            || (reach(oh, kernel.height) <= packed.height
                && reach(ow, kernel.width) <= packed.width),
        "output {oh}×{ow} beyond the packed {packed:?} for {kernel:?}"
    );
    let groups = out.groups();
    assert_eq!(
        weights.len(),
        groups * packed.blocks * kernel.height * kernel.width * LANES * LANES,
        "packed weights"
    );
    let tasks: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..groups).map(move |g| (i, g)))
        .collect();
    let lens: Vec<usize> = tasks.iter().map(|&(_, g)| out.group_len(g)).collect();
    let mut result = Vec::<f32>::with_capacity(out.len());
    let mut chunks: Vec<&mut [MaybeUninit<f32>]> = Vec::with_capacity(tasks.len());
    let mut rest = &mut result.spare_capacity_mut()[..out.len()];
    for &len in &lens {
        let (chunk, tail) = rest.split_at_mut(len);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
        .into_par_iter()
        .zip(tasks.into_par_iter())
        .for_each(|(chunk, (image, group))| {
            let task = Task {
                x: &x[image * packed.image()..][..packed.image()],
                packed,
                weights: &weights
                    [group * packed.blocks * kernel.height * kernel.width * LANES * LANES..],
                kernel,
                rows: oh,
                cols: ow,
                lanes: (out.dims[1] - group * LANES).min(LANES),
                blocked: out.blocked,
            };
            // SAFETY: `task` reads within `x` and `weights` (their lengths checked above
            // against the packed map, the kernel's reach and the groups) and writes every
            // element of `chunk` (`lanes · rows · cols` of them) exactly once.
            unsafe { E::convolve(isa, &task, chunk) };
        });
    // SAFETY: the chunks tile the buffer and each was written whole.
    unsafe { result.set_len(out.len()) };
    result
}

/// The gradient of the weights `[o, c, kh, kw]` of a convolution of the packed map `x` (`c`
/// channels) whose output gradient `dy` is `[n, ⌈o / 16⌉, oh, ow, 16]` (lanes past `o` zero).
/// In bf16 both come with their images in pairs ([`pair_images`]): `x` is
/// `[n, blocks, height, width, 16, 2]` and `dy` `[n, ⌈o / 16⌉, oh, ow, 16, 2]`, `n` the pairs.
pub(crate) fn weight_gradient<E: Element>(
    x: &[E],
    packed: Packed,
    dy: &[E],
    dims: [usize; 4],
    kernel: Kernel,
) -> Vec<f32> {
    weight_gradient_on(E::detect(), x, packed, dy, dims, kernel)
}

/// [`weight_gradient`] on the loops compiled for `isa` (which the CPU must have).
pub(crate) fn weight_gradient_on<E: Element>(
    isa: Isa,
    x: &[E],
    packed: Packed,
    dy: &[E],
    [o, c, oh, ow]: [usize; 4],
    kernel: Kernel,
) -> Vec<f32> {
    let (kh, kw) = (kernel.height, kernel.width);
    let groups = o.div_ceil(LANES);
    let pair = E::PAIR;
    assert_eq!(x.len(), packed.len() * pair, "packed map of {packed:?}");
    assert_eq!(
        dy.len(),
        packed.n * groups * oh * ow * LANES * pair,
        "output gradient"
    );
    assert!(matches!(kernel.stride, 1 | 2), "stride {}", kernel.stride);
    assert_eq!(packed.blocks, c.div_ceil(LANES), "input channels");
    let reach = |o: usize, k: usize| (o.max(1) - 1) * kernel.stride + k;
    assert!(
        oh == 0 || ow == 0 || (reach(oh, kh) <= packed.height && reach(ow, kw) <= packed.width),
        "output {oh}×{ow} beyond the packed {packed:?}"
    );
    let run = E::gradient_run(isa);
    // A run: `run` consecutive input channels of one block at one tap.
    let runs: Vec<Run> = (0..packed.blocks)
        .flat_map(|b| (0..kh).flat_map(move |i| (0..kw).map(move |j| (b, i, j))))
        .flat_map(|(b, i, j)| (0..LANES).step_by(run).map(move |first| (b, i, j, first)))
        .collect();
    let threads = rayon::current_num_threads().max(1);
    let per_group = (4 * threads).div_ceil(groups).clamp(1, runs.len().max(1));
    let chunk = runs.len().div_ceil(per_group).max(1);
    let tasks: Vec<(usize, &[Run])> = (0..groups)
        .flat_map(|g| runs.chunks(chunk).map(move |runs| (g, runs)))
        .collect();
    let sums: Vec<Vec<[f32; LANES]>> = tasks
        .par_iter()
        .map(|&(group, runs)| {
            let mut total = vec![[0.0f32; LANES]; runs.len() * run];
            for image in 0..packed.n {
                let x = &x[image * packed.image() * pair..][..packed.image() * pair];
                let map = oh * ow * LANES * pair;
                let dy = &dy[(image * groups + group) * map..][..map];
                for (index, &(block, i, j, first)) in runs.iter().enumerate() {
                    let task = GradientTask {
                        x,
                        packed,
                        dy,
                        start: (block * packed.plane() + (i * packed.width + j) * LANES + first)
                            * pair,
                        stride: kernel.stride,
                        rows: oh,
                        cols: ow,
                    };
                    let len = run.min(LANES - first);
                    // SAFETY: the run's `len` channels at the tap, over every output
                    // pixel, lie inside the packed image (checked above: the kernel's reach
                    // fits the packed map), and `dy` holds `rows · cols` vectors.
                    unsafe { E::gradient(isa, &task, &mut total[index * run..][..len]) };
                }
            }
            total
        })
        .collect();
    let mut grad = vec![0.0f32; o * c * kh * kw];
    for (&(group, runs), sums) in tasks.iter().zip(&sums) {
        for (index, &(block, i, j, first)) in runs.iter().enumerate() {
            for offset in 0..run.min(LANES - first) {
                let in_channel = block * LANES + first + offset;
                if in_channel >= c {
                    continue;
                }
                for (lane, value) in sums[index * run + offset].iter().enumerate() {
                    let out_channel = group * LANES + lane;
                    if out_channel < o {
                        grad[((out_channel * c + in_channel) * kh + i) * kw + j] = *value;
                    }
                }
            }
        }
    }
    grad
}

/// Two images at a time, their values side by side, in bf16: `[⌈n / 2⌉, len, 2]` from the `n`
/// images of `len` values each in `values`, the second of a last, odd one's pair zero. The
/// bf16 weight gradient sums over images a pair per instruction, and reads them so.
pub(crate) fn pair_images<S: Pairable>(values: &[S], n: usize) -> Vec<bf16> {
    let len = values.len().checked_div(n).unwrap_or(0);
    assert_eq!(values.len(), n * len, "{n} images");
    let total = n.div_ceil(2) * len * 2;
    let mut paired = Vec::<bf16>::with_capacity(total);
    if len > 0 {
        paired.spare_capacity_mut()[..total]
            .par_chunks_mut(2 * len)
            .zip(values.par_chunks(2 * len))
            .for_each(|(target, source)| {
                let (first, second) = source.split_at(len.min(source.len()));
                S::interleave(first, second, target);
            });
    }
    // SAFETY: the chunks tile the buffer and `interleave` writes each whole.
    unsafe { paired.set_len(total) };
    paired
}

/// What [`pair_images`] takes: f32 (an output gradient, rounded on the way) or bf16 (a
/// packed map).
pub(crate) trait Pairable: Copy + Send + Sync {
    /// Writes `first[i]` and `second[i]` (0 where `second` is empty) in bf16 at `2i` and
    /// `2i + 1` of `target`, which holds twice `first`.
    fn interleave(first: &[Self], second: &[Self], target: &mut [MaybeUninit<bf16>]);
}

impl Pairable for f32 {
    fn interleave(first: &[f32], second: &[f32], target: &mut [MaybeUninit<bf16>]) {
        check_pairs(first.len(), second.len(), target.len());
        #[cfg(target_arch = "x86_64")]
        if Isa::detect_bf16() == Isa::Avx512Bf16 && !second.is_empty() {
            // SAFETY: detected; the lengths are checked.
            return unsafe { x86::interleave_f32(first, second, target) };
        }
        let second = |i: usize| second.get(i).copied().unwrap_or(0.0);
        for (i, pair) in target.chunks_exact_mut(2).enumerate() {
            pair[0].write(bf16::from_f32(first[i]));
            pair[1].write(bf16::from_f32(second(i)));
        }
    }
}

impl Pairable for bf16 {
    fn interleave(first: &[bf16], second: &[bf16], target: &mut [MaybeUninit<bf16>]) {
        check_pairs(first.len(), second.len(), target.len());
        #[cfg(target_arch = "x86_64")]
        if Isa::detect_bf16() == Isa::Avx512Bf16 && !second.is_empty() {
            // SAFETY: detected; the lengths are checked.
            return unsafe { x86::interleave_bf16(first, second, target) };
        }
        let second = |i: usize| second.get(i).copied().unwrap_or(bf16::ZERO);
        for (i, pair) in target.chunks_exact_mut(2).enumerate() {
            pair[0].write(first[i]);
            pair[1].write(second(i));
        }
    }
}

fn check_pairs(first: usize, second: usize, target: usize) {
    assert!(
        (second == first || second == 0) && target == 2 * first,
        "pairs of {first} and {second} values into {target}"
    );
}

/// A run of the weight gradient: the input block, the tap's row and column, and the first
/// channel of the run within the block.
type Run = (usize, usize, usize, usize);

/// One image's channel group of a convolution's output.
pub(crate) struct Task<'a, E> {
    x: &'a [E],
    packed: Packed,
    weights: &'a [E],
    kernel: Kernel,
    rows: usize,
    cols: usize,
    /// Output channels of this group (16 but in the last group of a count not a multiple).
    lanes: usize,
    blocked: bool,
}

/// One run of input channels at one tap, over one image's (or pair's) output pixels.
pub(crate) struct GradientTask<'a, E> {
    x: &'a [E],
    packed: Packed,
    dy: &'a [E],
    /// The run's first element, relative to the packed image (or pair), at output pixel
    /// (0, 0).
    start: usize,
    stride: usize,
    rows: usize,
    cols: usize,
}

/// The instruction sets the loops are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512 with its BF16 extension: the f32 loops are AVX-512's; the bf16 loops
    /// multiply pairs with `vdpbf16ps`.
    Avx512Bf16,
    Avx512,
    Avx2,
    /// Plain Rust, which the compiler vectorises as the build's target allows; in bf16, the
    /// same sums as `vdpbf16ps` computed one product at a time (for tests on any CPU).
    Portable,
}

impl Isa {
    /// The instruction set of the f32 loops here.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.on_this_cpu())
            .unwrap_or(Isa::Portable)
    }

    /// The instruction set of the bf16 loops here: `Avx512Bf16` where the CPU has it, else
    /// the portable loops (far slower: `--precision bf16` is refused on them).
    pub fn detect_bf16() -> Isa {
        if Isa::Avx512Bf16.on_this_cpu() {
            Isa::Avx512Bf16
        } else {
            Isa::Portable
        }
    }

    /// Whether this CPU runs the loops compiled for `self`.
    fn on_this_cpu(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        match self {
            Isa::Avx512Bf16 => {
                return std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16");
            }
            Isa::Avx512 => return std::arch::is_x86_feature_detected!("avx512f"),
            Isa::Avx2 => {
                return std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma");
            }
            Isa::Portable => {}
        }
        self == Isa::Portable
    }

    /// Every instruction set this CPU runs the loops with, the fastest first.
    #[cfg(test)]
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|isa| isa.on_this_cpu())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Bf16 => "avx512-bf16",
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Input channels per run of the weight gradient: what fits the registers.
    fn gradient_run(self) -> usize {
        match self {
            Isa::Avx512 | Isa::Avx512Bf16 => 16,
            Isa::Avx2 => 6,
            Isa::Portable => 4,
        }
    }

    /// # Safety
    /// As `tile`: `task`'s reads stay within its slices; `out` holds its output.
    unsafe fn convolve(self, task: &Task<f32>, out: &mut [MaybeUninit<f32>]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detected.
            Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::convolve_avx512(task, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detected.
            Isa::Avx2 => unsafe { x86::convolve_avx2(task, out) },
            // SAFETY: as the caller's.
            _ => unsafe { convolve_task::<Portable>(task, out) },
        }
    }

    /// # Safety
    /// As `gradient_run`.
    unsafe fn gradient(self, task: &GradientTask<f32>, sums: &mut [[f32; LANES]]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detected.
            Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::gradient_avx512(task, sums) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detected.
            Isa::Avx2 => unsafe { x86::gradient_avx2(task, sums) },
            // SAFETY: as the caller's.
            _ => unsafe { gradient_task::<Portable>(task, sums) },
        }
    }
}

/// The match from a tile's band of rows and its width to the loop compiled for them, over
/// the shapes an instruction set's tiles take (`band × width` up to its register budget):
/// only those are compiled.
macro_rules! tiles {
    ($v:ty, $s:ident, $task:ident, $out:ident, $row:ident, $col:ident, $band:ident, $n:ident;
     $($r:literal: [$($w:literal)*]),*) => {
        match ($band, $n) {
            // SAFETY: as the caller's.
            $($( ($r, $w) => unsafe { tile::<$v, $s, $r, $w>($task, $out, $row, $col) }, )*)*
            _ => unreachable!("a tile of {} × {}", $band, $n),
        }
    };
}

/// 16 f32 sums in registers: what a tile accumulates into.
trait Sums: Copy {
    unsafe fn zero() -> Self;
    unsafe fn load(from: *const f32) -> Self;
    unsafe fn store(self, to: *mut f32);
    unsafe fn add(self, other: Self) -> Self;
}

/// The products the loops add to their [`Sums`], on one instruction set and element.
trait Vector {
    /// The sums the products go into.
    type Sum: Sums;
    /// What the loops read: f32, or bf16.
    type Elem: Element;
    /// The non-broadcast factor of a product: 16 values (f32), or 16 pairs (bf16).
    type Operand: Copy;
    /// Output pixels a tile holds in registers.
    const MAX: usize;
    /// Output rows `row..row + band`, columns `col..col + n` of one channel group, at stride
    /// `S`: `band` 1, 2 or 4, and `band · n` at most [`Self::MAX`].
    ///
    /// # Safety
    /// As [`convolve_task`]'s.
    unsafe fn tile_of<const S: usize>(
        task: &Task<Self::Elem>,
        out: &mut [MaybeUninit<f32>],
        row: usize,
        col: usize,
        band: usize,
        n: usize,
    );
    /// The operand at `from`: `16 · PAIR` values, each lane's pair adjacent.
    unsafe fn operand(from: *const Self::Elem) -> Self::Operand;
    /// `sum + x · w` lane by lane, `x` (`PAIR` values) read from memory and broadcast; with
    /// pairs, `x₀ · w₀ + x₁ · w₁`.
    unsafe fn add_product(sum: Self::Sum, x: *const Self::Elem, w: Self::Operand) -> Self::Sum;
}

/// Plain Rust: 16 lanes in an array, which the compiler vectorises as the target allows.
#[derive(Clone, Copy)]
struct Portable([f32; LANES]);

impl Sums for Portable {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    unsafe fn load(from: *const f32) -> Self {
        // SAFETY: the caller's pointer holds 16 values.
        Portable(unsafe { std::ptr::read_unaligned(from.cast::<[f32; LANES]>()) })
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        // SAFETY: the caller's pointer takes 16 values.
        unsafe { std::ptr::write_unaligned(to.cast::<[f32; LANES]>(), self.0) }
    }
    #[inline(always)]
    unsafe fn add(mut self, other: Self) -> Self {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
        self
    }
}

impl Vector for Portable {
    type Sum = Portable;
    type Elem = f32;
    type Operand = Portable;
    const MAX: usize = 4;
    #[inline(always)]
    unsafe fn tile_of<const S: usize>(
        task: &Task<f32>,
        out: &mut [MaybeUninit<f32>],
        row: usize,
        col: usize,
        band: usize,
        n: usize,
    ) {
        tiles!(Self, S, task, out, row, col, band, n; 1: [1 2 3 4], 2: [1 2], 4: [1])
    }
    #[inline(always)]
    unsafe fn operand(from: *const f32) -> Portable {
        // SAFETY: as the caller's.
        unsafe { Portable::load(from) }
    }
    #[inline(always)]
    unsafe fn add_product(mut sum: Portable, x: *const f32, w: Portable) -> Portable {
        // SAFETY: the caller's pointer holds a value.
        let x = unsafe { *x };
        for (acc, w) in sum.0.iter_mut().zip(w.0) {
            *acc = x.mul_add(w, *acc);
        }
        sum
    }
}

/// bf16 products as `vdpbf16ps` forms them, one at a time: a product of two bf16 values is
/// exact in f32, and each is added to the sum in f32.
struct PortableBf16;

impl Vector for PortableBf16 {
    type Sum = Portable;
    type Elem = bf16;
    type Operand = [f32; 2 * LANES];
    const MAX: usize = 4;
    #[inline(always)]
    unsafe fn tile_of<const S: usize>(
        task: &Task<bf16>,
        out: &mut [MaybeUninit<f32>],
        row: usize,
        col: usize,
        band: usize,
        n: usize,
    ) {
        tiles!(Self, S, task, out, row, col, band, n; 1: [1 2 3 4], 2: [1 2], 4: [1])
    }
    #[inline(always)]
    unsafe fn operand(from: *const bf16) -> [f32; 2 * LANES] {
        // SAFETY: the caller's pointer holds 32 values.
        let values = unsafe { std::ptr::read_unaligned(from.cast::<[bf16; 2 * LANES]>()) };
        values.map(f32::from)
    }
    #[inline(always)]
    unsafe fn add_product(mut sum: Portable, x: *const bf16, w: [f32; 2 * LANES]) -> Portable {
        // SAFETY: the caller's pointer holds a pair.
        let (x0, x1) = unsafe { (f32::from(*x), f32::from(*x.add(1))) };
        for (acc, w) in sum.0.iter_mut().zip(w.chunks_exact(2)) {
            *acc = *acc + x0 * w[0] + x1 * w[1];
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    // Named, so that it wins over the glob's own `bf16` (an unstable type of the same name).
    use half::bf16;
    use std::arch::x86_64::*;

    /// 16 sums in one AVX-512 register; also the f32 loops' products.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    impl Sums for Avx512 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: only called inside functions compiled with AVX-512.
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn load(from: *const f32) -> Self {
            // SAFETY: as above; the caller's pointer holds 16 values.
            Avx512(unsafe { _mm512_loadu_ps(from) })
        }
        #[inline(always)]
        unsafe fn store(self, to: *mut f32) {
            // SAFETY: as above; the caller's pointer takes 16 values.
            unsafe { _mm512_storeu_ps(to, self.0) }
        }
        #[inline(always)]
        unsafe fn add(self, other: Self) -> Self {
            // SAFETY: only called inside functions compiled with AVX-512.
            Avx512(unsafe { _mm512_add_ps(self.0, other.0) })
        }
    }

    impl Vector for Avx512 {
        type Sum = Avx512;
        type Elem = f32;
        type Operand = Avx512;
        const MAX: usize = 16;
        #[inline(always)]
        unsafe fn tile_of<const S: usize>(
            task: &Task<f32>,
            out: &mut [MaybeUninit<f32>],
            row: usize,
            col: usize,
            band: usize,
            n: usize,
        ) {
            tiles!(Self, S, task, out, row, col, band, n;
                1: [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], 2: [1 2 3 4 5 6 7 8], 4: [1 2 3 4])
        }
        #[inline(always)]
        unsafe fn operand(from: *const f32) -> Avx512 {
            // SAFETY: as the caller's.
            unsafe { Avx512::load(from) }
        }
        #[inline(always)]
        unsafe fn add_product(sum: Avx512, x: *const f32, w: Avx512) -> Avx512 {
            // SAFETY: only called inside functions compiled with AVX-512; the caller's
            // pointer holds a value.
            Avx512(unsafe { _mm512_fmadd_ps(_mm512_set1_ps(*x), w.0, sum.0) })
        }
    }

    /// f32 sums of bf16 pairs' products, `vdpbf16ps`.
    pub(super) struct Avx512Bf16;

    impl Vector for Avx512Bf16 {
        type Sum = Avx512;
        type Elem = bf16;
        /// 32 bf16, their bits in an f32 register.
        type Operand = __m512;
        const MAX: usize = 16;
        #[inline(always)]
        unsafe fn tile_of<const S: usize>(
            task: &Task<bf16>,
            out: &mut [MaybeUninit<f32>],
            row: usize,
            col: usize,
            band: usize,
            n: usize,
        ) {
            tiles!(Self, S, task, out, row, col, band, n;
                1: [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16], 2: [1 2 3 4 5 6 7 8], 4: [1 2 3 4])
        }
        #[inline(always)]
        unsafe fn operand(from: *const bf16) -> __m512 {
            // SAFETY: only called inside functions compiled with AVX-512; the caller's
            // pointer holds 32 values.
            unsafe { _mm512_loadu_ps(from.cast()) }
        }
        /// `vdpbf16ps` with the pair broadcast from memory by the instruction itself: a
        /// separate broadcast, as the intrinsics compile to, halves its rate on AMD Zen 4
        /// (measured: 2.7 against 3.6 billion a second on one core; an f32 FMA's rate is 3.6
        /// either way).
        #[inline]
        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn add_product(sum: Avx512, x: *const bf16, w: __m512) -> Avx512 {
            let mut sum = sum.0;
            // SAFETY: the caller's pointer holds a pair, which the instruction reads as one
            // 32-bit value; it touches no other memory, stack or flags.
            unsafe {
                std::arch::asm!(
                    "vdpbf16ps {sum}, {w}, dword ptr [{x}]{{1to16}}",
                    sum = inout(zmm_reg) sum,
                    w = in(zmm_reg) w,
                    x = in(reg) x,
                    options(pure, readonly, nostack, preserves_flags),
                );
            }
            Avx512(sum)
        }
    }

    /// 16 sums in two AVX2 registers; also the f32 loops' products.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256, __m256);

    impl Sums for Avx2 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: only called inside functions compiled with AVX2 and FMA.
            unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn load(from: *const f32) -> Self {
            // SAFETY: as above; the caller's pointer holds 16 values.
            unsafe { Avx2(_mm256_loadu_ps(from), _mm256_loadu_ps(from.add(8))) }
        }
        #[inline(always)]
        unsafe fn store(self, to: *mut f32) {
            // SAFETY: as above; the caller's pointer takes 16 values.
            unsafe {
                _mm256_storeu_ps(to, self.0);
                _mm256_storeu_ps(to.add(8), self.1);
            }
        }
        #[inline(always)]
        unsafe fn add(self, other: Self) -> Self {
            // SAFETY: only called inside functions compiled with AVX2.
            unsafe {
                Avx2(
                    _mm256_add_ps(self.0, other.0),
                    _mm256_add_ps(self.1, other.1),
                )
            }
        }
    }

    impl Vector for Avx2 {
        type Sum = Avx2;
        type Elem = f32;
        type Operand = Avx2;
        const MAX: usize = 6;
        #[inline(always)]
        unsafe fn tile_of<const S: usize>(
            task: &Task<f32>,
            out: &mut [MaybeUninit<f32>],
            row: usize,
            col: usize,
            band: usize,
            n: usize,
        ) {
            tiles!(Self, S, task, out, row, col, band, n; 1: [1 2 3 4 5 6], 2: [1 2 3], 4: [1])
        }
        #[inline(always)]
        unsafe fn operand(from: *const f32) -> Avx2 {
            // SAFETY: as the caller's.
            unsafe { Avx2::load(from) }
        }
        #[inline(always)]
        unsafe fn add_product(sum: Avx2, x: *const f32, w: Avx2) -> Avx2 {
            // SAFETY: only called inside functions compiled with AVX2 and FMA; the caller's
            // pointer holds a value.
            unsafe {
                let x = _mm256_broadcast_ss(&*x);
                Avx2(
                    _mm256_fmadd_ps(x, w.0, sum.0),
                    _mm256_fmadd_ps(x, w.1, sum.1),
                )
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512F; as [`convolve_task`].
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn convolve_avx512(task: &Task<f32>, out: &mut [MaybeUninit<f32>]) {
        // SAFETY: as the caller's.
        unsafe { convolve_task::<Avx512>(task, out) }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; as [`convolve_task`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn convolve_avx2(task: &Task<f32>, out: &mut [MaybeUninit<f32>]) {
        // SAFETY: as the caller's.
        unsafe { convolve_task::<Avx2>(task, out) }
    }

    /// # Safety
    /// The CPU has AVX-512F; as [`gradient_task`].
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn gradient_avx512(task: &GradientTask<f32>, sums: &mut [[f32; LANES]]) {
        // SAFETY: as the caller's.
        unsafe { gradient_task::<Avx512>(task, sums) }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; as [`gradient_task`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gradient_avx2(task: &GradientTask<f32>, sums: &mut [[f32; LANES]]) {
        // SAFETY: as the caller's.
        unsafe { gradient_task::<Avx2>(task, sums) }
    }

    /// `source` rounded to bf16 into `target`, 16 at a time with `vcvtneps2bf16` (nearest,
    /// ties to even, as `bf16::from_f32`; values below f32's normal range become 0, as
    /// `vdpbf16ps` would read them anyway).
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; `target` is as long as `source`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn write_bf16(target: &mut [MaybeUninit<bf16>], source: &[f32]) {
        let vectors = source.len() / 16;
        for i in 0..vectors {
            // SAFETY: 16 values from `16 i` lie within both slices.
            unsafe {
                let rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(source.as_ptr().add(16 * i)));
                let bits = std::mem::transmute::<__m256bh, __m256i>(rounded);
                _mm256_storeu_si256(target.as_mut_ptr().add(16 * i).cast(), bits);
            }
        }
        for (t, s) in target[16 * vectors..]
            .iter_mut()
            .zip(&source[16 * vectors..])
        {
            t.write(bf16::from_f32(*s));
        }
    }

    /// 16 pairs `(first[i], second[i])` in bf16 as one vector of 32: each first value in the
    /// low half of a 32-bit lane, its partner in the high half.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pairs_of(first: __m256i, second: __m256i) -> __m512i {
        _mm512_or_si512(
            _mm512_cvtepu16_epi32(first),
            _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(second)),
        )
    }

    /// [`Pairable::interleave`] of f32, rounded with `vcvtneps2bf16`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; `second` is as long as `first` and `target`
    /// twice as long.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn interleave_f32(
        first: &[f32],
        second: &[f32],
        target: &mut [MaybeUninit<bf16>],
    ) {
        let vectors = first.len() / 16;
        for i in 0..vectors {
            // SAFETY: 16 values from `16 i` lie within `first` and `second`, 32 from `32 i`
            // within `target`.
            unsafe {
                let round = |values: &[f32]| {
                    let rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(values.as_ptr().add(16 * i)));
                    std::mem::transmute::<__m256bh, __m256i>(rounded)
                };
                let pairs = pairs_of(round(first), round(second));
                _mm512_storeu_si512(target.as_mut_ptr().add(32 * i).cast(), pairs);
            }
        }
        for i in 16 * vectors..first.len() {
            target[2 * i].write(bf16::from_f32(first[i]));
            target[2 * i + 1].write(bf16::from_f32(second[i]));
        }
    }

    /// [`Pairable::interleave`] of bf16.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `second` is as long as `first` and `target` twice as long.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn interleave_bf16(
        first: &[bf16],
        second: &[bf16],
        target: &mut [MaybeUninit<bf16>],
    ) {
        let vectors = first.len() / 16;
        for i in 0..vectors {
            // SAFETY: as in `interleave_f32`.
            unsafe {
                let load = |values: &[bf16]| _mm256_loadu_si256(values.as_ptr().add(16 * i).cast());
                let pairs = pairs_of(load(first), load(second));
                _mm512_storeu_si512(target.as_mut_ptr().add(32 * i).cast(), pairs);
            }
        }
        for i in 16 * vectors..first.len() {
            target[2 * i].write(first[i]);
            target[2 * i + 1].write(second[i]);
        }
    }

    /// [`Element::spin`] with AVX-512 FMAs.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn spin_avx512(rounds: usize) -> f64 {
        let mut sums = [_mm512_setzero_ps(); 16];
        let w = _mm512_set1_ps(std::hint::black_box(1e-7));
        let x: [__m512; 16] = std::array::from_fn(|k| _mm512_set1_ps(k as f32));
        for _ in 0..rounds {
            for (sum, x) in sums.iter_mut().zip(&x) {
                *sum = _mm512_fmadd_ps(*x, w, *sum);
            }
        }
        std::hint::black_box(sums);
        (rounds * 16 * 16 * 2) as f64
    }

    /// [`Element::spin`] with AVX2 FMAs: two 8-lane halves per sum, as the loops hold them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn spin_avx2(rounds: usize) -> f64 {
        let mut sums = [_mm256_setzero_ps(); 12];
        let w = _mm256_set1_ps(std::hint::black_box(1e-7));
        let x: [__m256; 12] = std::array::from_fn(|k| _mm256_set1_ps(k as f32));
        for _ in 0..rounds {
            for (sum, x) in sums.iter_mut().zip(&x) {
                *sum = _mm256_fmadd_ps(*x, w, *sum);
            }
        }
        std::hint::black_box(sums);
        (rounds * 12 * 8 * 2) as f64
    }

    /// [`Element::spin`] with `vdpbf16ps`: 16 lanes, each two products and two additions.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) fn spin_avx512_bf16(rounds: usize) -> f64 {
        let mut sums = [_mm512_setzero_ps(); 16];
        let w = _mm512_set1_ps(std::hint::black_box(1e-7));
        let x: [__m512; 16] = std::array::from_fn(|k| _mm512_set1_ps(k as f32));
        for _ in 0..rounds {
            for (sum, x) in sums.iter_mut().zip(&x) {
                // SAFETY: register operands only; `__m512bh` is 32 bf16 in the same bits.
                unsafe {
                    *sum = _mm512_dpbf16_ps(
                        *sum,
                        std::mem::transmute::<__m512, __m512bh>(*x),
                        std::mem::transmute::<__m512, __m512bh>(w),
                    );
                }
            }
        }
        std::hint::black_box(sums);
        (rounds * 16 * 16 * 4) as f64
    }

    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; as [`convolve_task`].
    #[target_feature(enable = "avx512f,avx512bf16,fma")]
    pub(super) unsafe fn convolve_avx512_bf16(task: &Task<bf16>, out: &mut [MaybeUninit<f32>]) {
        // SAFETY: as the caller's.
        unsafe { convolve_task::<Avx512Bf16>(task, out) }
    }

    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; as [`gradient_task`].
    #[target_feature(enable = "avx512f,avx512bf16,fma")]
    pub(super) unsafe fn gradient_avx512_bf16(
        task: &GradientTask<bf16>,
        sums: &mut [[f32; LANES]],
    ) {
        // SAFETY: as the caller's.
        unsafe { gradient_task::<Avx512Bf16>(task, sums) }
    }
}

/// One image's channel group, in tiles of at most `MAX` pixels: two or four rows at once
/// where a row holds at most a half or a quarter of `MAX`.
///
/// # Safety
/// `task.x` holds the packed image and `task.weights` the group's packed weights; the
/// kernel's reach over `rows × cols` outputs fits the packed map; `out` holds
/// `lanes · rows · cols` values.
#[inline(always)]
unsafe fn convolve_task<V: Vector>(task: &Task<V::Elem>, out: &mut [MaybeUninit<f32>]) {
    let max = V::MAX;
    let (rows, cols) = (task.rows, task.cols);
    // Rows at once: as many as fill the tile where a row is narrow (1, 2 or 4).
    let band = match max / cols.max(1) {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => 4,
    };
    // Tiles of even widths: a narrow last tile would load a weight vector for few pixels.
    let width = cols.div_ceil(cols.div_ceil(max));
    let mut row = 0;
    while row < rows {
        let band = if row + band <= rows { band } else { 1 };
        let mut col = 0;
        while col < cols {
            let n = width.min(cols - col);
            // SAFETY: as the caller's; the tile lies within the output.
            unsafe {
                match task.kernel.stride {
                    1 => V::tile_of::<1>(task, out, row, col, band, n),
                    _ => V::tile_of::<2>(task, out, row, col, band, n),
                }
            }
            col += n;
        }
        row += band;
    }
}

/// Output rows `row..row + R`, columns `col..col + W` of one channel group.
#[inline(always)]
unsafe fn tile<V: Vector, const S: usize, const R: usize, const W: usize>(
    task: &Task<V::Elem>,
    out: &mut [MaybeUninit<f32>],
    row: usize,
    col: usize,
) {
    let packed = task.packed;
    let (kh, kw) = (task.kernel.height, task.kernel.width);
    let row_step = S * packed.width * LANES;
    let pair = <V::Elem as Element>::PAIR;
    // SAFETY: inside the caller's instruction set.
    let mut acc = [[unsafe { V::Sum::zero() }; W]; R];
    let mut weights = task.weights.as_ptr();
    let x = task.x.as_ptr();
    for block in 0..packed.blocks {
        for i in 0..kh {
            for j in 0..kw {
                let corner =
                    block * packed.plane() + ((row * S + i) * packed.width + col * S + j) * LANES;
                for lane in (0..LANES).step_by(pair) {
                    // SAFETY: the caller's bounds: `corner + lane` and the tile's
                    // displacements stay inside the packed image, and the weights hold
                    // `blocks · kh · kw · 16 / PAIR` operands.
                    unsafe {
                        let w = V::operand(weights);
                        weights = weights.add(LANES * pair);
                        let base = x.add(corner + lane);
                        for (r, acc) in acc.iter_mut().enumerate() {
                            for (c, acc) in acc.iter_mut().enumerate() {
                                *acc =
                                    V::add_product(*acc, base.add(r * row_step + c * S * LANES), w);
                            }
                        }
                    }
                }
            }
        }
    }
    // Out of the registers first, in a loop small enough to unroll: a register array that
    // any loop left rolled would index stays in memory all along.
    let mut values = [[[0.0f32; LANES]; W]; R];
    for (values, acc) in values.iter_mut().zip(&acc) {
        for (values, acc) in values.iter_mut().zip(acc) {
            // SAFETY: `values` takes 16.
            unsafe { acc.store(values.as_mut_ptr()) };
        }
    }
    let (rows, cols, lanes) = (task.rows, task.cols, task.lanes);
    for (r, values) in values.iter().enumerate() {
        for (c, values) in values.iter().enumerate() {
            let pixel = (row + r) * cols + col + c;
            if task.blocked {
                for (o, v) in out[pixel * LANES..][..LANES].iter_mut().zip(values) {
                    o.write(*v);
                }
            } else {
                for (lane, value) in values.iter().take(lanes).enumerate() {
                    out[lane * rows * cols + pixel].write(*value);
                }
            }
        }
    }
}

/// Adds to `sums`, for `sums.len()` consecutive input channels at the task's tap, the sums of
/// the input times the output gradient over one image's output pixels.
///
/// # Safety
/// Every element read, `start + (y·S·width + x·S)·16 + k` for each output pixel `(y, x)` and
/// `k < sums.len()`, lies inside `task.x`; `task.dy` holds `rows · cols` vectors.
#[inline(always)]
unsafe fn gradient_task<V: Vector>(task: &GradientTask<V::Elem>, sums: &mut [[f32; LANES]]) {
    macro_rules! runs {
        ($($k:literal)*) => {
            match sums.len() {
                // SAFETY: as the caller's.
                $($k => unsafe { gradient_run::<V, $k>(task, sums) },)*
                n => unreachable!("a run of {n} channels"),
            }
        };
    }
    // The lengths `weight_gradient` makes: runs of 16 (AVX-512), 6 and a last 4 (AVX2), 4.
    runs!(4 6 16)
}

#[inline(always)]
#[allow(clippy::expect_used, reason = "cannot fail: a run of K channels")]
unsafe fn gradient_run<V: Vector, const K: usize>(
    task: &GradientTask<V::Elem>,
    sums: &mut [[f32; LANES]],
) {
    // SAFETY: inside the caller's instruction set.
    let mut acc = [unsafe { V::Sum::zero() }; K];
    // With pairs, every value of the packed map and of `dy` is one of two images'.
    let pair = <V::Elem as Element>::PAIR;
    let step = task.stride * LANES * pair;
    let row_step = task.stride * task.packed.width * LANES * pair;
    let mut dy = task.dy.as_ptr();
    for y in 0..task.rows {
        // SAFETY: the caller's bounds.
        let mut x = unsafe { task.x.as_ptr().add(task.start + y * row_step) };
        for _ in 0..task.cols {
            // SAFETY: the caller's bounds.
            unsafe {
                let g = V::operand(dy);
                for (k, acc) in acc.iter_mut().enumerate() {
                    *acc = V::add_product(*acc, x.add(k * pair), g);
                }
                dy = dy.add(LANES * pair);
                x = x.add(step);
            }
        }
    }
    let sums: &mut [[f32; LANES]; K] = sums.try_into().expect("a run of K channels");
    // One image's sums, started from zero, join the running totals: two levels of
    // summation keep the rounding of a long sum over many images small.
    for (sum, acc) in sums.iter_mut().zip(acc) {
        // SAFETY: `sum` holds and takes 16.
        unsafe { V::Sum::load(sum.as_ptr()).add(acc).store(sum.as_mut_ptr()) };
    }
}
