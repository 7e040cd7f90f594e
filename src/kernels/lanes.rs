//! The inner loops of the kernels, over slices of f32, each compiled for several vector widths
//! (AVX-512, AVX2, SSE4.2, ...) and picked at run time by `multiversion`: the crate's default
//! target is plain x86-64, whose 4-wide SSE2 the compiler would otherwise be held to.
//!
//! Sums run in [`LANES`] independent f32 accumulators (the compiler keeps one scalar sum in
//! order otherwise, which cannot be vectorised), moved into f64 every few thousand elements
//! by [`Sums`].

use std::mem::MaybeUninit;

use multiversion::multiversion;

/// One AVX-512 register of f32.
const LANES: usize = 16;

/// Elements each f32 lane takes, at most, before the lanes are added into f64: the rounding
/// of 256 f32 additions stays far below the statistics' tolerance, and widening once per
/// 4,096 elements costs nothing even where a channel's slices are 16 elements long.
const WIDEN_EVERY: usize = 256 * LANES;

/// Two running sums over slices of one channel: `[Σ a, Σ b]` for some `a` and `b` of each
/// element.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sums {
    lanes: [[f32; LANES]; 2],
    pending: usize,
    total: [f64; 2],
}

impl Sums {
    /// Adds `x − shift` and `(x − shift)²` for each `x`.
    pub fn add_shifted_moments(&mut self, xs: &[f32], shift: f32) {
        accumulate_shifted_moments(&mut self.lanes, xs, shift);
        self.counted(xs.len());
    }

    /// Adds `g` and `g · x`, `g = dy` where `affine` passes the gradient at `x`, else 0.
    pub fn add_gated_sum_and_dot(&mut self, dy: &[f32], xs: &[f32], affine: Affine) {
        accumulate_gated_sum_and_dot(&mut self.lanes, dy, xs, affine);
        self.counted(xs.len());
    }

    pub fn total(mut self) -> (f64, f64) {
        self.widen();
        (self.total[0], self.total[1])
    }

    fn counted(&mut self, elements: usize) {
        self.pending += elements;
        if self.pending >= WIDEN_EVERY {
            self.widen();
        }
    }

    fn widen(&mut self) {
        for (total, lanes) in self.total.iter_mut().zip(&mut self.lanes) {
            *total += lanes.iter().map(|&v| v as f64).sum::<f64>();
            *lanes = [0.0; LANES];
        }
        self.pending = 0;
    }
}

/// Adds `x − shift` and `(x − shift)²` into the lanes.
#[multiversion(targets = "simd")]
fn accumulate_shifted_moments(lanes: &mut [[f32; LANES]; 2], xs: &[f32], shift: f32) {
    let [mut sum, mut squares] = *lanes;
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let d = chunk[lane] - shift;
            sum[lane] += d;
            squares[lane] += d * d;
        }
    }
    for (lane, &x) in tail.iter().enumerate() {
        let d = x - shift;
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
    affine: Affine,
) {
    debug_assert_eq!(dy.len(), xs.len());
    let [mut sum, mut dot] = *lanes;
    let (dy_chunks, x_chunks) = (dy.chunks_exact(LANES), xs.chunks_exact(LANES));
    let (dy_tail, x_tail) = (dy_chunks.remainder(), x_chunks.remainder());
    for (dy, xs) in dy_chunks.zip(x_chunks) {
        for lane in 0..LANES {
            let g = if affine.passes(xs[lane]) {
                dy[lane]
            } else {
                0.0
            };
            sum[lane] += g;
            dot[lane] += g * xs[lane];
        }
    }
    for (lane, (&dy, &x)) in dy_tail.iter().zip(x_tail).enumerate() {
        let g = if affine.passes(x) { dy } else { 0.0 };
        sum[lane] += g;
        dot[lane] += g * x;
    }
    *lanes = [sum, dot];
}

/// A batch norm's per-channel affine map, `max((x − mean) · scale + shift, floor)`: `floor`
/// is 0 when a ReLU follows and −∞ otherwise. Plain multiplies and adds, no fused ones, so
/// that every target computes the same values in the forward and the backward pass (and
/// CPUs without FMA make no library call).
#[derive(Clone, Copy, Debug)]
pub struct Affine {
    pub mean: f32,
    pub scale: f32,
    pub shift: f32,
    pub floor: f32,
}

impl Affine {
    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        ((x - self.mean) * self.scale + self.shift).max(self.floor)
    }

    /// Whether the gradient passes at `x`: the output is above the floor (with a ReLU, the
    /// output is positive; without one, everywhere).
    #[inline(always)]
    fn passes(self, x: f32) -> bool {
        self.apply(x) > self.floor
    }
}

/// `out = affine(x)`.
#[multiversion(targets = "simd")]
pub fn write_affine(out: &mut [MaybeUninit<f32>], xs: &[f32], affine: Affine) {
    debug_assert_eq!(out.len(), xs.len());
    for (slot, &x) in out.iter_mut().zip(xs) {
        slot.write(affine.apply(x));
    }
}

/// `out = own · a + other · b`: two rows blended, as the mix of hidden states does.
#[multiversion(targets = "simd")]
pub fn write_blend(out: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32], own: f32, other: f32) {
    debug_assert_eq!(out.len(), a.len());
    debug_assert_eq!(out.len(), b.len());
    for (slot, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        slot.write(own * a + other * b);
    }
}

/// `out = k · g + a · (x − mean) + b`, `g` as in [`Sums::add_gated_sum_and_dot`]: a batch
/// norm's input gradient, given per-channel coefficients.
#[multiversion(targets = "simd")]
pub fn write_gated_gradient(
    out: &mut [MaybeUninit<f32>],
    dy: &[f32],
    xs: &[f32],
    affine: Affine,
    [k, a, b]: [f32; 3],
) {
    debug_assert_eq!(out.len(), dy.len());
    debug_assert_eq!(out.len(), xs.len());
    for (slot, (&dy, &x)) in out.iter_mut().zip(dy.iter().zip(xs)) {
        let g = if affine.passes(x) { dy } else { 0.0 };
        slot.write(k * g + (a * (x - affine.mean) + b));
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

    /// Lengths below, at and across the vector width, with tails.
    const LENGTHS: [usize; 6] = [0, 1, 15, 16, 33, 100];

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

    fn affine(x: f32, affine: Affine) -> f32 {
        ((x - affine.mean) * affine.scale + affine.shift).max(affine.floor)
    }

    fn shifted_moments(xs: &[f32], shift: f32) -> (f64, f64) {
        let mut sums = Sums::default();
        sums.add_shifted_moments(xs, shift);
        sums.total()
    }

    fn gated_sum_and_dot(dy: &[f32], xs: &[f32], affine: Affine) -> (f64, f64) {
        let mut sums = Sums::default();
        sums.add_gated_sum_and_dot(dy, xs, affine);
        sums.total()
    }

    #[test]
    fn sums_over_many_slices_match_a_plain_f64_loop() {
        // 300 slices of 37: tails in every slice, and several widenings on the way.
        let xs = ramp(300 * 37, 0.25);
        let mut sums = Sums::default();
        for slice in xs.chunks(37) {
            sums.add_shifted_moments(slice, -0.5);
        }
        let (sum, squares) = sums.total();
        let expected_sum: f64 = xs.iter().map(|&x| (x + 0.5) as f64).sum();
        let expected_squares: f64 = xs.iter().map(|&x| ((x + 0.5) as f64).powi(2)).sum();
        assert!((sum - expected_sum).abs() <= 1e-6 * expected_sum.abs().max(1.0));
        assert!((squares - expected_squares).abs() <= 1e-6 * expected_squares);
    }

    #[test]
    fn sums_match_a_plain_f64_loop() {
        for len in LENGTHS {
            let (x, dy) = (ramp(len, 0.5), ramp(len, -1.25));
            let (sum, squares) = shifted_moments(&x, 0.75);
            let expected_sum: f64 = x.iter().map(|&x| (x - 0.75) as f64).sum();
            let expected_squares: f64 = x.iter().map(|&x| ((x - 0.75) as f64).powi(2)).sum();
            assert!((sum - expected_sum).abs() < 1e-4, "length {len}");
            assert!((squares - expected_squares).abs() < 1e-4, "length {len}");
            for gate in [RELU, PLAIN] {
                let gated: Vec<f32> = dy
                    .iter()
                    .zip(&x)
                    .map(|(&dy, &x)| {
                        if affine(x, gate) > gate.floor {
                            dy
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let (sum, dot) = gated_sum_and_dot(&dy, &x, gate);
                let expected_sum: f64 = gated.iter().map(|&g| g as f64).sum();
                let expected_dot: f64 = gated.iter().zip(&x).map(|(&g, &x)| (g * x) as f64).sum();
                assert!((sum - expected_sum).abs() < 1e-4, "length {len}, {gate:?}");
                assert!((dot - expected_dot).abs() < 1e-4, "length {len}, {gate:?}");
            }
        }
    }

    #[test]
    fn the_relu_gate_stops_the_gradient_where_the_output_is_zero() {
        let x = ramp(100, 0.5);
        let dy = vec![1.0; 100];
        let zeros = x.iter().filter(|&&x| affine(x, RELU) == 0.0).count();
        assert!(zeros > 0 && zeros < 100, "the ramp crosses the ReLU's kink");
        let (sum, _) = gated_sum_and_dot(&dy, &x, RELU);
        assert_eq!(sum, (100 - zeros) as f64);
        let (sum, _) = gated_sum_and_dot(&dy, &x, PLAIN);
        assert_eq!(sum, 100.0);
    }

    #[test]
    fn element_wise_loops_write_every_element() {
        for len in LENGTHS {
            let (x, dy) = (ramp(len, 0.5), ramp(len, 2.0));
            for gate in [RELU, PLAIN] {
                let mut out = uninit(len);
                write_affine(&mut out, &x, gate);
                let expected: Vec<f32> = x.iter().map(|&x| affine(x, gate)).collect();
                assert_eq!(written(out), expected, "affine, length {len}, {gate:?}");
                let mut out = uninit(len);
                write_gated_gradient(&mut out, &dy, &x, gate, [1.5, -0.5, 0.25]);
                let expected = dy.iter().zip(&x).map(|(&dy, &x)| {
                    let g = if affine(x, gate) > gate.floor {
                        dy
                    } else {
                        0.0
                    };
                    1.5 * g + (-0.5 * (x - gate.mean) + 0.25)
                });
                for (actual, expected) in written(out).into_iter().zip(expected) {
                    assert_eq!(actual, expected, "gradient, length {len}, {gate:?}");
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
