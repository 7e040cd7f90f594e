//! The inner loops of the kernels, over slices of f32, each compiled for several vector widths
//! (AVX-512, AVX2, SSE4.2, ...) and picked at run time by `multiversion`: the crate's default
//! target is plain x86-64, whose 4-wide SSE2 the compiler would otherwise be held to.
//!
//! Every loop walks its slice in chunks of [`LANES`] elements, and lane `l` of each chunk (and of
//! the tail) has parameters of its own. A batch norm's slice is a run of a channel-blocked
//! tensor: in blocks of `b` channels (`b` dividing [`LANES`]), lane `l` holds channel `l % b`
//! of the block, and with `b = 1` (plain NCHW, a run is one channel's plane) every lane holds
//! the same channel. So one set of loops serves both layouts, with no shuffles.
//!
//! Sums run in [`LANES`] independent f32 accumulators (the compiler keeps one scalar sum in
//! order otherwise, which cannot be vectorised), moved into f64 every few thousand elements
//! by [`Sums`].

use std::mem::MaybeUninit;

use multiversion::{inherit_target, multiversion};

/// One AVX-512 register of f32.
pub(crate) const LANES: usize = 16;

/// Elements each f32 lane takes, at most, before the lanes are added into f64: the rounding
/// of 256 f32 additions stays far below the statistics' tolerance, and widening once per
/// 4,096 elements costs nothing even where a channel's slices are 16 elements long.
const WIDEN_EVERY: usize = 256 * LANES;

/// One value per lane, for a block of `block` channels: lane `l` gets `value(l % block)`,
/// channel `l % block`'s.
pub(crate) fn per_lane<T>(block: usize, value: impl Fn(usize) -> T) -> [T; LANES] {
    debug_assert!(block > 0 && LANES.is_multiple_of(block));
    std::array::from_fn(|lane| value(lane % block))
}

/// Two running sums per lane over runs of one block of channels: `[Σ a, Σ b]` for some `a`
/// and `b` of each element.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sums {
    lanes: [[f32; LANES]; 2],
    pending: usize,
    total: [[f64; LANES]; 2],
}

impl Sums {
    /// Adds `x − shift` and `(x − shift)²` for each `x`, `shift` per lane.
    pub fn add_shifted_moments(&mut self, xs: &[f32], shift: &[f32; LANES]) {
        accumulate_shifted_moments(&mut self.lanes, xs, shift);
        self.counted(xs.len());
    }

    /// Adds `g` and `g · x`, `g = dy` where `affine` passes the gradient at `x`, else 0.
    pub fn add_gated_sum_and_dot(&mut self, dy: &[f32], xs: &[f32], affine: &LaneAffine) {
        accumulate_gated_sum_and_dot(&mut self.lanes, dy, xs, affine);
        self.counted(xs.len());
    }

    /// The two sums of each of a block's `block` channels (lanes `l`, `l + block`, ... added).
    pub fn per_channel(mut self, block: usize) -> Vec<(f64, f64)> {
        self.widen();
        let mut channels = vec![(0.0, 0.0); block];
        for lane in 0..LANES {
            let channel = &mut channels[lane % block];
            channel.0 += self.total[0][lane];
            channel.1 += self.total[1][lane];
        }
        channels
    }

    fn counted(&mut self, elements: usize) {
        self.pending += elements;
        if self.pending >= WIDEN_EVERY {
            self.widen();
        }
    }

    fn widen(&mut self) {
        for (total, lanes) in self.total.iter_mut().zip(&mut self.lanes) {
            for (total, lane) in total.iter_mut().zip(lanes.iter_mut()) {
                *total += *lane as f64;
                *lane = 0.0;
            }
        }
        self.pending = 0;
    }
}

/// Adds `x − shift` and `(x − shift)²` into the lanes.
#[multiversion(targets = "simd")]
fn accumulate_shifted_moments(lanes: &mut [[f32; LANES]; 2], xs: &[f32], shift: &[f32; LANES]) {
    let [mut sum, mut squares] = *lanes;
    let shift = *shift;
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let d = chunk[lane] - shift[lane];
            sum[lane] += d;
            squares[lane] += d * d;
        }
    }
    for (lane, &x) in tail.iter().enumerate() {
        let d = x - shift[lane];
        sum[lane] += d;
        squares[lane] += d * d;
    }
    *lanes = [sum, squares];
}

/// Adds `g` and `g · x` into the lanes, `g` as in [`Sums::add_gated_sum_and_dot`].
#[multiversion(targets = "simd")]
fn accumulate_gated_sum_and_dot(
    lanes: &mut [[f32; LANES]; 2],
    dy: &[f32],
    xs: &[f32],
    affine: &LaneAffine,
) {
    debug_assert_eq!(dy.len(), xs.len());
    let [mut sum, mut dot] = *lanes;
    let affine = *affine;
    let (dy_chunks, x_chunks) = (dy.chunks_exact(LANES), xs.chunks_exact(LANES));
    let (dy_tail, x_tail) = (dy_chunks.remainder(), x_chunks.remainder());
    for (dy, xs) in dy_chunks.zip(x_chunks) {
        for lane in 0..LANES {
            let g = if affine.passes(lane, xs[lane]) {
                dy[lane]
            } else {
                0.0
            };
            sum[lane] += g;
            dot[lane] += g * xs[lane];
        }
    }
    for (lane, (&dy, &x)) in dy_tail.iter().zip(x_tail).enumerate() {
        let g = if affine.passes(lane, x) { dy } else { 0.0 };
        sum[lane] += g;
        dot[lane] += g * x;
    }
    *lanes = [sum, dot];
}

/// A batch norm's affine map for one channel, `max((x − mean) · scale + shift, floor)`:
/// `floor` is 0 when a ReLU follows and −∞ otherwise.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Affine {
    pub mean: f32,
    pub scale: f32,
    pub shift: f32,
    pub floor: f32,
}

/// The affine maps of a block of channels, one per lane ([`per_lane`]). Plain multiplies and
/// adds, no fused ones, so that every target computes the same values in the forward and the
/// backward pass (and CPUs without FMA make no library call).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LaneAffine {
    mean: [f32; LANES],
    scale: [f32; LANES],
    shift: [f32; LANES],
    floor: [f32; LANES],
}

impl LaneAffine {
    pub fn new(block: &[Affine]) -> Self {
        Self {
            mean: per_lane(block.len(), |c| block[c].mean),
            scale: per_lane(block.len(), |c| block[c].scale),
            shift: per_lane(block.len(), |c| block[c].shift),
            floor: per_lane(block.len(), |c| block[c].floor),
        }
    }

    #[inline(always)]
    fn apply(&self, lane: usize, x: f32) -> f32 {
        ((x - self.mean[lane]) * self.scale[lane] + self.shift[lane]).max(self.floor[lane])
    }

    /// Whether the gradient passes at `x`: the output is above the floor (with a ReLU, the
    /// output is positive; without one, everywhere).
    #[inline(always)]
    fn passes(&self, lane: usize, x: f32) -> bool {
        self.apply(lane, x) > self.floor[lane]
    }
}

/// `out = affine(x)`.
#[multiversion(targets = "simd")]
pub(crate) fn write_affine(out: &mut [MaybeUninit<f32>], xs: &[f32], affine: &LaneAffine) {
    debug_assert_eq!(out.len(), xs.len());
    #[inherit_target]
    #[inline(never)]
    #[allow(clippy::expect_used, reason = "cannot fail: a whole chunk")]
    fn chunk(out: &mut [MaybeUninit<f32>], xs: &[f32], affine: &LaneAffine) {
        let xs: &[f32; LANES] = xs.try_into().expect("a whole chunk");
        store(
            out,
            std::array::from_fn(|lane| affine.apply(lane, xs[lane])),
        );
    }
    let mut out_chunks = out.chunks_exact_mut(LANES);
    let x_chunks = xs.chunks_exact(LANES);
    let x_tail = x_chunks.remainder();
    for (out, xs) in (&mut out_chunks).zip(x_chunks) {
        chunk(out, xs, affine);
    }
    for (lane, (slot, &x)) in out_chunks
        .into_remainder()
        .iter_mut()
        .zip(x_tail)
        .enumerate()
    {
        slot.write(affine.apply(lane, x));
    }
}

/// Writes a whole chunk at once. The element-wise loops compute each chunk in a function of
/// its own, kept out of line: inlined, the compiler vectorises across chunks instead of along
/// them (one lane of each of 16 chunks per register, with gathers and scatters).
#[inline(always)]
#[allow(clippy::expect_used, reason = "cannot fail: a whole chunk")]
fn store(out: &mut [MaybeUninit<f32>], values: [f32; LANES]) {
    let out: &mut [MaybeUninit<f32>; LANES] = out.try_into().expect("a whole chunk");
    *out = values.map(MaybeUninit::new);
}

/// `out = own · a + other · b`: two rows blended, as the mix of hidden states does.
#[multiversion(targets = "simd")]
pub(crate) fn write_blend(
    out: &mut [MaybeUninit<f32>],
    a: &[f32],
    b: &[f32],
    own: f32,
    other: f32,
) {
    debug_assert_eq!(out.len(), a.len());
    debug_assert_eq!(out.len(), b.len());
    for (slot, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        slot.write(own * a + other * b);
    }
}

/// `out = own ⊙ a + (1 − partner_own) ⊙ b`: two rows blended with a weight per element, as
/// box and block mixes do (`partner_own` is `own` in the forward pass, the partner's weights
/// in the backward one).
#[multiversion(targets = "simd")]
pub(crate) fn write_weighted_blend(
    out: &mut [MaybeUninit<f32>],
    a: &[f32],
    b: &[f32],
    own: &[f32],
    partner_own: &[f32],
) {
    debug_assert!([a.len(), b.len(), own.len(), partner_own.len()] == [out.len(); 4]);
    for (((slot, (&a, &b)), &w), &v) in out
        .iter_mut()
        .zip(a.iter().zip(b))
        .zip(own)
        .zip(partner_own)
    {
        slot.write(w * a + (1.0 - v) * b);
    }
}

/// `out = a + (1 − partner_own) ⊙ b`: a row that keeps itself, with the share of a row that
/// took from it coming back (the backward pass of a box or block mix).
#[multiversion(targets = "simd")]
pub(crate) fn write_plus_complement(
    out: &mut [MaybeUninit<f32>],
    a: &[f32],
    b: &[f32],
    partner_own: &[f32],
) {
    debug_assert!([a.len(), b.len(), partner_own.len()] == [out.len(); 3]);
    for ((slot, (&a, &b)), &v) in out.iter_mut().zip(a.iter().zip(b)).zip(partner_own) {
        slot.write(a + (1.0 - v) * b);
    }
}

/// `out = own ⊙ a`.
#[multiversion(targets = "simd")]
pub(crate) fn write_scaled(out: &mut [MaybeUninit<f32>], a: &[f32], own: &[f32]) {
    debug_assert!([a.len(), own.len()] == [out.len(); 2]);
    for ((slot, &a), &w) in out.iter_mut().zip(a).zip(own) {
        slot.write(w * a);
    }
}

/// `out = a`.
pub(crate) fn write_copy(out: &mut [MaybeUninit<f32>], a: &[f32]) {
    debug_assert_eq!(out.len(), a.len());
    for (slot, &a) in out.iter_mut().zip(a) {
        slot.write(a);
    }
}

/// A batch norm's input gradient `dx = k · g + a · (x − mean) + b`, `g` as in
/// [`Sums::add_gated_sum_and_dot`], given each lane's coefficients `[k, a, b]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LaneGradient {
    pub affine: LaneAffine,
    pub k: [f32; LANES],
    pub a: [f32; LANES],
    pub b: [f32; LANES],
}

impl LaneGradient {
    #[inline(always)]
    fn apply(&self, lane: usize, dy: f32, x: f32) -> f32 {
        let g = if self.affine.passes(lane, x) { dy } else { 0.0 };
        self.k[lane] * g + (self.a[lane] * (x - self.affine.mean[lane]) + self.b[lane])
    }
}

/// `out = gradient(dy, x)`.
#[multiversion(targets = "simd")]
pub(crate) fn write_gated_gradient(
    out: &mut [MaybeUninit<f32>],
    dy: &[f32],
    xs: &[f32],
    gradient: &LaneGradient,
) {
    debug_assert_eq!(out.len(), dy.len());
    debug_assert_eq!(out.len(), xs.len());
    #[inherit_target]
    #[inline(never)]
    #[allow(clippy::expect_used, reason = "cannot fail: a whole chunk")]
    fn chunk(out: &mut [MaybeUninit<f32>], dy: &[f32], xs: &[f32], gradient: &LaneGradient) {
        let dy: &[f32; LANES] = dy.try_into().expect("a whole chunk");
        let xs: &[f32; LANES] = xs.try_into().expect("a whole chunk");
        store(
            out,
            std::array::from_fn(|lane| gradient.apply(lane, dy[lane], xs[lane])),
        );
    }
    let mut out_chunks = out.chunks_exact_mut(LANES);
    let (dy_chunks, x_chunks) = (dy.chunks_exact(LANES), xs.chunks_exact(LANES));
    let (dy_tail, x_tail) = (dy_chunks.remainder(), x_chunks.remainder());
    for (out, (dy, xs)) in (&mut out_chunks).zip(dy_chunks.zip(x_chunks)) {
        chunk(out, dy, xs, gradient);
    }
    let tail = out_chunks
        .into_remainder()
        .iter_mut()
        .zip(dy_tail.iter().zip(x_tail));
    for (lane, (slot, (&dy, &x))) in tail.enumerate() {
        slot.write(gradient.apply(lane, dy, x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uninit(len: usize) -> Vec<MaybeUninit<f32>> {
        vec![MaybeUninit::uninit(); len]
    }

    fn written(out: Vec<MaybeUninit<f32>>) -> Vec<f32> {
        out.into_iter()
            .map(|v| unsafe { v.assume_init() })
            .collect()
    }

    /// Lengths below, at and across the vector width, with tails; all multiples of 4, so
    /// that they are runs of a block of 4 channels too.
    const LENGTHS: [usize; 6] = [0, 4, 12, 16, 36, 100];

    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
            .collect()
    }

    const RELU: Affine = Affine {
        mean: 0.25,
        scale: 2.0,
        shift: -1.0,
        floor: 0.0,
    };

    const PLAIN: Affine = Affine {
        floor: f32::NEG_INFINITY,
        ..RELU
    };

    /// Four channels of different maps, two of them with a ReLU: a block of 4.
    const BLOCK: [Affine; 4] = [
        RELU,
        PLAIN,
        Affine {
            mean: -1.0,
            scale: 0.5,
            shift: 0.5,
            floor: 0.0,
        },
        Affine {
            mean: 2.0,
            scale: -1.5,
            shift: 0.0,
            floor: f32::NEG_INFINITY,
        },
    ];

    /// The cases: every element of a slice in one channel, and a block of four channels.
    fn blocks() -> [&'static [Affine]; 3] {
        [&BLOCK[..1], &BLOCK[1..2], &BLOCK]
    }

    fn affine(x: f32, affine: Affine) -> f32 {
        ((x - affine.mean) * affine.scale + affine.shift).max(affine.floor)
    }

    /// Element `i` of a run of `block` channels belongs to channel `i % block.len()`.
    fn channel_of(block: &[Affine], i: usize) -> Affine {
        block[i % block.len()]
    }

    #[test]
    fn sums_over_many_slices_match_a_plain_f64_loop() {
        // 300 slices of 37: tails in every slice, and several widenings on the way.
        let xs = ramp(300 * 37, 0.25);
        let mut sums = Sums::default();
        for slice in xs.chunks(37) {
            sums.add_shifted_moments(slice, &[-0.5; LANES]);
        }
        let [(sum, squares)] = sums.per_channel(1)[..] else {
            panic!("one channel")
        };
        let expected_sum: f64 = xs.iter().map(|&x| (x + 0.5) as f64).sum();
        let expected_squares: f64 = xs.iter().map(|&x| ((x + 0.5) as f64).powi(2)).sum();
        assert!((sum - expected_sum).abs() <= 1e-6 * expected_sum.abs().max(1.0));
        assert!((squares - expected_squares).abs() <= 1e-6 * expected_squares);
    }

    #[test]
    fn sums_match_a_plain_f64_loop_per_channel() {
        for len in LENGTHS {
            let (x, dy) = (ramp(len, 0.5), ramp(len, -1.25));
            for block in blocks() {
                let b = block.len();
                let shifts: Vec<f32> = (0..b).map(|c| 0.75 - c as f32).collect();
                let mut sums = Sums::default();
                sums.add_shifted_moments(&x, &per_lane(b, |c| shifts[c]));
                let mut gated = Sums::default();
                gated.add_gated_sum_and_dot(&dy, &x, &LaneAffine::new(block));
                let (moments, gated) = (sums.per_channel(b), gated.per_channel(b));
                for c in 0..b {
                    let channel = || x.iter().zip(&dy).skip(c).step_by(b);
                    let expected_sum: f64 = channel().map(|(&x, _)| (x - shifts[c]) as f64).sum();
                    let expected_squares: f64 = channel()
                        .map(|(&x, _)| ((x - shifts[c]) as f64).powi(2))
                        .sum();
                    let case = format!("length {len}, channel {c} of {b}");
                    assert!((moments[c].0 - expected_sum).abs() < 1e-4, "{case}");
                    assert!((moments[c].1 - expected_squares).abs() < 1e-4, "{case}");
                    let map = block[c];
                    let g = |(&x, &dy): (&f32, &f32)| {
                        if affine(x, map) > map.floor { dy } else { 0.0 }
                    };
                    let expected_sum: f64 = channel().map(|p| g(p) as f64).sum();
                    let expected_dot: f64 = channel().map(|p| (g(p) * p.0) as f64).sum();
                    assert!((gated[c].0 - expected_sum).abs() < 1e-4, "{case}");
                    assert!((gated[c].1 - expected_dot).abs() < 1e-4, "{case}");
                }
            }
        }
    }

    #[test]
    fn the_relu_gate_stops_the_gradient_where_the_output_is_zero() {
        let x = ramp(100, 0.5);
        let dy = vec![1.0; 100];
        let zeros = x.iter().filter(|&&x| affine(x, RELU) == 0.0).count();
        assert!(zeros > 0 && zeros < 100, "the ramp crosses the ReLU's kink");
        let gated_sum = |map: Affine| {
            let mut sums = Sums::default();
            sums.add_gated_sum_and_dot(&dy, &x, &LaneAffine::new(&[map]));
            sums.per_channel(1)[0].0
        };
        assert_eq!(gated_sum(RELU), (100 - zeros) as f64);
        assert_eq!(gated_sum(PLAIN), 100.0);
    }

    #[test]
    fn element_wise_loops_write_every_element_with_its_channels_map() {
        for len in LENGTHS {
            let (x, dy) = (ramp(len, 0.5), ramp(len, 2.0));
            for block in blocks() {
                let lanes = LaneAffine::new(block);
                let mut out = uninit(len);
                write_affine(&mut out, &x, &lanes);
                let expected: Vec<f32> = (0..len)
                    .map(|i| affine(x[i], channel_of(block, i)))
                    .collect();
                assert_eq!(written(out), expected, "affine, length {len}, {block:?}");
                let coefficients: Vec<[f32; 3]> = (0..block.len())
                    .map(|c| [1.5 + c as f32, -0.5, 0.25 * c as f32])
                    .collect();
                let [k, a, b] =
                    [0, 1, 2].map(|j| per_lane(coefficients.len(), |c| coefficients[c][j]));
                let gradient = LaneGradient {
                    affine: lanes,
                    k,
                    a,
                    b,
                };
                let mut out = uninit(len);
                write_gated_gradient(&mut out, &dy, &x, &gradient);
                let expected = (0..len).map(|i| {
                    let (map, [k, a, b]) = (channel_of(block, i), coefficients[i % block.len()]);
                    let g = if affine(x[i], map) > map.floor {
                        dy[i]
                    } else {
                        0.0
                    };
                    k * g + (a * (x[i] - map.mean) + b)
                });
                for (actual, expected) in written(out).into_iter().zip(expected) {
                    assert_eq!(actual, expected, "gradient, length {len}, {block:?}");
                }
            }
            let mut out = uninit(len);
            write_blend(&mut out, &x, &dy, 0.3, 0.7);
            let expected: Vec<f32> = x
                .iter()
                .zip(&dy)
                .map(|(&a, &b)| 0.3 * a + 0.7 * b)
                .collect();
            assert_eq!(written(out), expected, "blend, length {len}");
        }
    }
}
