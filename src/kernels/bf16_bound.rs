//! The bound a convolution computed from bf16 operands with f32 sums keeps to its f32
//! result, which both CPU routes' bf16 tests hold their kernels to.

use burn::tensor::TensorData;

/// How far `actual` is from `expected`, relative to the size of `expected`: the RMS of the
/// difference over the RMS of `expected`, and the largest difference over the largest value.
pub(crate) fn relative_errors(actual: &TensorData, expected: &TensorData) -> (f64, f64) {
    let (a, e) = (
        actual.try_to_vec::<f32>().unwrap(),
        expected.try_to_vec::<f32>().unwrap(),
    );
    assert_eq!(a.len(), e.len());
    let rms = |v: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x * x, n + 1));
        (sum / n.max(1) as f64).sqrt()
    };
    let difference = rms(&mut a.iter().zip(&e).map(|(x, y)| (x - y) as f64));
    let size = rms(&mut e.iter().map(|&y| y as f64));
    let largest_difference = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let largest = e.iter().map(|y| y.abs()).fold(0.0, f32::max);
    (
        difference / size.max(f64::MIN_POSITIVE),
        (largest_difference / largest.max(f32::MIN_POSITIVE)) as f64,
    )
}

/// bf16 keeps 8 significant bits, so rounding moves an operand by up to 2⁻⁸ of itself,
/// 2⁻⁸/√3 ≈ 0.23% on average. With f32 accumulation, a sum of products of two rounded operands
/// errs by about √2 of that, 0.32% of its RMS, whatever the reduction length (measured on an
/// AVX512-BF16 CPU: 0.23-0.27% of each tensor's RMS, output and both gradients). A bf16
/// accumulation instead rounds every partial sum: over this test's 144 products it errs by
/// about √(144/2)·0.23% ≈ 2% of the RMS. The bound sits between the two.
const BF16_RMS_BOUND: f64 = 2.5 / 256.0;
const BF16_LARGEST_BOUND: f64 = 16.0 / 256.0;

pub(crate) fn assert_within_bf16_rounding(actual: &TensorData, expected: &TensorData, what: &str) {
    let (rms, largest) = relative_errors(actual, expected);
    assert!(
        rms <= BF16_RMS_BOUND && largest <= BF16_LARGEST_BOUND,
        "{what}: bf16 − f32 is {:.3}% of the RMS (bound {:.2}%) and {:.3}% of the largest value (bound {:.2}%)",
        rms * 100.0,
        BF16_RMS_BOUND * 100.0,
        largest * 100.0,
        BF16_LARGEST_BOUND * 100.0
    );
}

/// The bound holds for operands rounded to bf16 and fails for a bf16 accumulation, on any CPU
/// (simulated in software, where the bf16 test itself needs a CPU with bf16).
#[test]
fn the_bf16_bound_admits_rounded_operands_and_refuses_a_bf16_accumulation() {
    let bf16 =
        |x: f32| f32::from_bits((x.to_bits() + 0x7fff + ((x.to_bits() >> 16) & 1)) & 0xffff_0000);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut normal = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        ((rng >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    };
    let (outputs, terms) = (2048, 144);
    let (mut exact, mut rounded_operands, mut bf16_sums) = (vec![], vec![], vec![]);
    for _ in 0..outputs {
        let pairs: Vec<(f32, f32)> = (0..terms).map(|_| (normal(), normal())).collect();
        exact.push(pairs.iter().map(|(a, b)| a * b).sum::<f32>());
        rounded_operands.push(pairs.iter().map(|(a, b)| bf16(*a) * bf16(*b)).sum::<f32>());
        bf16_sums.push(
            pairs
                .iter()
                .fold(0.0f32, |s, (a, b)| bf16(s + bf16(*a) * bf16(*b))),
        );
    }
    let data = |v: Vec<f32>| TensorData::new(v, [outputs]);
    let (exact, rounded, summed) = (data(exact), data(rounded_operands), data(bf16_sums));
    assert_within_bf16_rounding(&rounded, &exact, "operands rounded to bf16");
    let (rms, _) = relative_errors(&summed, &exact);
    assert!(
        rms > BF16_RMS_BOUND,
        "a bf16 accumulation errs by only {rms}"
    );
}
