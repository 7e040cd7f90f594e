use super::*;
use crate::kernels::bf16_bound::assert_within_bf16_rounding;
use crate::kernels::conv_inputs as inputs;
use crate::kernels::layout::{from_plain, to_plain};
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, TensorData, Tolerance};

/// Sums over up to a few thousand products in f32, in another order than Burn's.
fn tolerance() -> Tolerance<f32> {
    Tolerance::rel_abs(1e-4, 5e-4)
}

/// `[batch, channels in, height, width]`, `[channels out, kernel]`, stride, padding.
type Case = ([usize; 4], [usize; 2], usize, [(usize, usize); 2]);

const fn same(pad: usize) -> [(usize, usize); 2] {
    [(pad, pad), (pad, pad)]
}

/// Plain and blocked channel counts, strides 1 and 2 over even and odd sizes, 1×1, 3×3 and
/// 7×7 kernels, lopsided padding, maps narrower than a tile and wider than two.
const CASES: [Case; 15] = [
    ([2, 3, 16, 16], [16, 3], 1, same(1)),
    ([2, 16, 8, 8], [16, 3], 1, same(1)),
    ([2, 3, 8, 8], [4, 3], 1, same(1)),
    ([3, 4, 9, 7], [5, 3], 2, same(1)),
    ([2, 6, 8, 8], [3, 1], 2, same(0)),
    ([1, 2, 5, 6], [2, 7], 1, same(3)),
    ([4, 16, 16, 16], [32, 3], 1, same(1)),
    ([2, 3, 32, 32], [16, 7], 2, same(3)),
    ([2, 16, 8, 8], [32, 1], 2, same(0)),
    ([2, 64, 4, 4], [16, 1], 1, same(0)),
    ([3, 32, 8, 8], [32, 3], 2, same(1)),
    ([2, 32, 7, 30], [48, 3], 1, [(1, 0), (2, 1)]),
    ([2, 17, 11, 5], [17, 3], 2, [(0, 2), (1, 1)]),
    // Padding of the stride: a phase would need the output gradient cropped (spread instead).
    ([2, 16, 9, 9], [16, 3], 2, same(2)),
    ([2, 16, 10, 7], [32, 4], 2, [(1, 3), (3, 0)]),
];

fn burn_conv(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: usize,
    padding: [(usize, usize); 2],
) -> Tensor<4> {
    let [(top, bottom), (left, right)] = padding;
    let options =
        ConvOptions::new_with_padding([stride, stride], [(top, bottom), (left, right)], [1, 1], 1);
    burn_conv2d(x, weight, None, options)
}

/// The route's convolution of a plain map, in `in_block` blocks on the way in and written
/// in `out`, back in the plain layout.
fn direct(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: usize,
    padding: [(usize, usize); 2],
    in_block: usize,
    out: Layout,
) -> Tensor<4> {
    let geometry = accepts(&x, weight.dims(), [stride, stride], padding, [1, 1], 1, out)
        .expect("the route takes the case");
    let output = |input| match out {
        Layout::Plain => conv2d::<5, 4>(input, weight.clone(), geometry, out),
        Layout::Blocked(_) => to_plain(conv2d::<5, 5>(input, weight.clone(), geometry, out)),
    };
    if in_block == 1 {
        return match out {
            Layout::Plain => conv2d::<4, 4>(x, weight, geometry, out),
            Layout::Blocked(_) => to_plain(conv2d::<4, 5>(x, weight, geometry, out)),
        };
    }
    output(from_plain::<5>(x, in_block))
}

#[test]
fn every_case_and_layout_matches_burn_forward_and_backward() {
    let device = Device::flex().autodiff();
    let mut blocked_both = false;
    for (x_dims, out, stride, padding) in CASES {
        let in_blocks = if x_dims[1] % LANES == 0 {
            vec![1, LANES]
        } else {
            vec![1]
        };
        let mut layouts = vec![Layout::Plain];
        if out[0] % LANES == 0 {
            layouts.push(Layout::Blocked(LANES));
        }
        let (x, weight) = inputs(&device, x_dims, out);
        let output_dims = burn_conv(x.clone(), weight.clone(), stride, padding).dims();
        // A random projection of the output, so that every output element has a gradient
        // of its own.
        let projection = Tensor::<4>::random(output_dims, Distribution::Normal(0.0, 1.0), &device);
        let run = |conv: &dyn Fn(Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let x = x.clone().detach().require_grad();
            let weight = weight.clone().detach().require_grad();
            let output = conv(x.clone(), weight.clone());
            let grads = (output.clone() * projection.clone()).sum().backward();
            [
                output.inner().into_data(),
                x.grad(&grads).expect("input gradient").into_data(),
                weight.grad(&grads).expect("weight gradient").into_data(),
            ]
        };
        let expected = run(&|x, weight| burn_conv(x, weight, stride, padding));
        for &in_block in &in_blocks {
            for &layout in &layouts {
                blocked_both |= in_block > 1 && layout != Layout::Plain;
                let actual = run(&|x, weight| direct(x, weight, stride, padding, in_block, layout));
                for (what, (actual, expected)) in ["output", "input gradient", "weight gradient"]
                    .iter()
                    .zip(actual.iter().zip(&expected))
                {
                    let case = format!(
                        "{what} of {x_dims:?} {out:?} stride {stride} {padding:?} in {in_block}s out {layout:?}"
                    );
                    assert_eq!(actual.shape(), expected.shape(), "{case}");
                    let (actual, expected) = (
                        actual.try_to_vec::<f32>().unwrap(),
                        expected.try_to_vec::<f32>().unwrap(),
                    );
                    for (index, (a, e)) in actual.iter().zip(&expected).enumerate() {
                        assert!(
                            (a - e).abs() <= 5e-4 + 1e-4 * e.abs(),
                            "{case}: element {index}: {a} against {e}"
                        );
                    }
                }
            }
        }
    }
    assert!(blocked_both, "some case runs blocked on both sides");
}

#[test]
fn without_autodiff_the_forward_pass_matches_burn() {
    let device = Device::flex();
    for (x_dims, out, stride, padding) in CASES {
        let (x, weight) = inputs(&device, x_dims, out);
        let expected = burn_conv(x.clone(), weight.clone(), stride, padding);
        let actual = direct(x, weight, stride, padding, 1, Layout::Plain);
        actual
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), tolerance());
    }
}

#[test]
fn the_same_inputs_give_the_same_bits_on_one_thread_and_on_several() {
    // In both precisions (exact resume rests on it); five images leave a bf16 pair half
    // empty, and the strided map takes the input gradient by phases.
    let device = Device::flex().autodiff();
    for (dims, stride) in [([6, 32, 12, 12], 1), ([5, 32, 12, 12], 2)] {
        let (x, weight) = inputs(&device, dims, [32, 3]);
        let output_dims = burn_conv(x.clone(), weight.clone(), stride, same(1)).dims();
        let projection = Tensor::<4>::random(output_dims, Distribution::Normal(0.0, 1.0), &device);
        for precision in [Precision::F32, Precision::Bf16] {
            let run = || {
                in_precision(
                    (&x, &weight),
                    (stride, same(1)),
                    Layout::Blocked(LANES),
                    &projection,
                    precision,
                )
            };
            let several = run();
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(run);
            assert_eq!(one, several, "{precision} {dims:?} at stride {stride}");
        }
    }
}

#[test]
fn the_route_refuses_what_its_loops_do_not_compute() {
    let x = Tensor::<4>::zeros([1, 16, 8, 8], &Device::flex());
    let take = |weight, stride, padding, dilation, groups, out| {
        accepts(&x, weight, stride, padding, dilation, groups, out).is_some()
    };
    let w = [16, 16, 3, 3];
    assert_eq!(
        take(w, [1, 1], same(1), [1, 1], 1, Layout::Plain),
        enabled()
    );
    assert_eq!(
        take(w, [2, 2], same(1), [1, 1], 1, Layout::Blocked(16)),
        enabled()
    );
    assert!(
        !take(w, [3, 3], same(1), [1, 1], 1, Layout::Plain),
        "stride 3"
    );
    assert!(
        !take(w, [1, 2], same(1), [1, 1], 1, Layout::Plain),
        "uneven strides"
    );
    assert!(
        !take(w, [1, 1], same(3), [1, 1], 1, Layout::Plain),
        "padding past the kernel"
    );
    assert!(
        !take(w, [1, 1], same(1), [2, 2], 1, Layout::Plain),
        "dilation"
    );
    assert!(
        !take(w, [1, 1], same(1), [1, 1], 2, Layout::Plain),
        "groups"
    );
    assert!(
        !take(w, [1, 1], same(1), [1, 1], 1, Layout::Blocked(8)),
        "blocks of 8"
    );
    let eights: Tensor<5> = from_plain(x.clone(), 8);
    assert!(accepts(&eights, w, [1, 1], same(1), [1, 1], 1, Layout::Plain).is_none());
}

#[test]
fn every_instruction_set_this_cpu_has_computes_what_the_portable_loops_do() {
    // Tiles of every width up to 16 columns, bands of 1, 2 and 4 rows, both strides, runs
    // of channels past a register's width; each instruction set the CPU has (AVX-512 and
    // AVX2 where present) against the portable loops.
    let values = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed) % 211) as f32 / 105.0) - 1.0)
            .collect()
    };
    let isas = loops::Isa::available();
    assert_eq!(isas.last(), Some(&loops::Isa::Portable));
    for (dims, stride) in [
        ([2, 32, 9, 29], 1),
        ([2, 32, 9, 4], 1),
        ([2, 32, 13, 11], 2),
    ] {
        let x = values(dims.iter().product(), 1);
        let weight_dims = [32, 32, 3, 3];
        let weight = values(weight_dims.iter().product(), 2);
        let packing = Packing {
            dims,
            block: 1,
            padding: same(1),
            dilation: 1,
        };
        let packed_x = loops::pack(&x, &packing);
        let weights = loops::pack_weights(&weight, weight_dims, false);
        let kernel = Kernel {
            height: 3,
            width: 3,
            stride,
        };
        let span = |len: usize| (len + 2 - 3) / stride + 1;
        let out_dims = [2, 32, span(dims[2]), span(dims[3])];
        let out = Output {
            dims: out_dims,
            blocked: true,
        };
        let run = |isa| {
            let output =
                loops::convolve_on(isa, &packed_x, packing.packed(), &weights, kernel, out);
            let grad = loops::weight_gradient_on(
                isa,
                &packed_x,
                packing.packed(),
                &output,
                [32, 32, out_dims[2], out_dims[3]],
                kernel,
            );
            [output, grad]
        };
        let portable = run(loops::Isa::Portable);
        for &isa in &isas {
            for (what, (actual, expected)) in ["output", "weight gradient"]
                .iter()
                .zip(run(isa).iter().zip(&portable))
            {
                let largest = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(largest > 0.0);
                for (a, b) in actual.iter().zip(expected) {
                    assert!(
                        (a - b).abs() <= 1e-5 * largest,
                        "{isa:?} {what} of {dims:?} at stride {stride}: {a} against {b}"
                    );
                }
            }
        }
    }
}

/// The route's convolution of a plain map `x` in `precision`, written in `out`, with its
/// output, input gradient and weight gradient under the loss `Σ output · projection`.
fn in_precision(
    (x, weight): (&Tensor<4>, &Tensor<4>),
    (stride, padding): (usize, [(usize, usize); 2]),
    out: Layout,
    projection: &Tensor<4>,
    precision: Precision,
) -> [TensorData; 3] {
    let geometry = Geometry {
        precision,
        ..accepts(x, weight.dims(), [stride, stride], padding, [1, 1], 1, out)
            .expect("the route takes the case")
    };
    let x = x.clone().detach().require_grad();
    let weight = weight.clone().detach().require_grad();
    let output = match out {
        Layout::Plain => conv2d::<4, 4>(x.clone(), weight.clone(), geometry, out),
        Layout::Blocked(_) => to_plain(conv2d::<4, 5>(x.clone(), weight.clone(), geometry, out)),
    };
    let grads = (output.clone() * projection.clone()).sum().backward();
    [
        output.inner().into_data(),
        x.grad(&grads).expect("input gradient").into_data(),
        weight.grad(&grads).expect("weight gradient").into_data(),
    ]
}

#[test]
fn bf16_convolutions_and_gradients_match_f32_to_bf16_precision() {
    // Whichever bf16 loops this CPU runs: AVX512-BF16's, or the portable ones, which form
    // the same sums. Every case: odd image counts leave a pair half empty in the weight
    // gradient, and strided cases take the input gradient by phases.
    let device = Device::flex().autodiff();
    for (x_dims, out, stride, padding) in CASES {
        let (x, weight) = inputs(&device, x_dims, out);
        let layout = if out[0] % LANES == 0 {
            Layout::Blocked(LANES)
        } else {
            Layout::Plain
        };
        let output_dims = burn_conv(x.clone(), weight.clone(), stride, padding).dims();
        let projection = Tensor::<4>::random(output_dims, Distribution::Normal(0.0, 1.0), &device);
        let run = |precision| {
            in_precision(
                (&x, &weight),
                (stride, padding),
                layout,
                &projection,
                precision,
            )
        };
        let (f32s, bf16s) = (run(Precision::F32), run(Precision::Bf16));
        assert_ne!(bf16s[0], f32s[0], "bf16 operands round");
        for (what, (bf16s, f32s)) in ["output", "input gradient", "weight gradient"]
            .iter()
            .zip(bf16s.iter().zip(&f32s))
        {
            let case = format!("{what} of {x_dims:?} {out:?} stride {stride} {padding:?}");
            assert_within_bf16_rounding(bf16s, f32s, &case);
        }
    }
}

#[test]
fn every_bf16_instruction_set_sums_the_products_of_the_rounded_operands() {
    // Against sums in f64 of the products of the operands rounded to bf16 (each product is
    // exact in f32, so only the order of the f32 sums differs): AVX512-BF16's loops where
    // the CPU has them and the portable ones everywhere; tiles of every width up to 16, both
    // strides, an odd number of images, output channels that leave a block part empty.
    let values = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed) % 211) as f32 / 105.0) - 1.0)
            .collect()
    };
    let round = |v: f32| bf16::from_f32(v).to_f32() as f64;
    let isas: Vec<loops::Isa> = loops::Isa::available()
        .into_iter()
        .filter(|isa| matches!(isa, loops::Isa::Avx512Bf16 | loops::Isa::Portable))
        .collect();
    for (dims, o, stride) in [
        ([3, 32, 9, 29], 32, 1),
        ([2, 20, 9, 4], 24, 1),
        ([3, 16, 13, 11], 16, 2),
    ] {
        let [n, c, h, w] = dims;
        let x = values(dims.iter().product(), 1);
        let weight_dims = [o, c, 3, 3];
        let weight = values(weight_dims.iter().product(), 2);
        let packing = Packing {
            dims,
            block: 1,
            padding: same(1),
            dilation: 1,
        };
        let packed = packing.packed();
        let packed_x = loops::pack::<bf16>(&x, &packing);
        let weights = loops::pack_weights::<bf16>(&weight, weight_dims, false);
        let kernel = Kernel {
            height: 3,
            width: 3,
            stride,
        };
        let span = |len: usize| (len + 2 - 3) / stride + 1;
        let (oh, ow) = (span(h), span(w));
        let dy = values(n * o * oh * ow, 3);
        // x[n][c][y][x] of the rounded input, zero in the padding.
        let input = |image: usize, channel: usize, y: usize, x_: usize| -> f64 {
            if y == 0 || x_ == 0 || y > h || x_ > w {
                return 0.0;
            }
            round(x[((image * c + channel) * h + y - 1) * w + x_ - 1])
        };
        let mut expected_output = vec![0.0f64; n * o * oh * ow];
        let mut expected_grad = vec![0.0f64; o * c * 9];
        for image in 0..n {
            for out_channel in 0..o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let at = ((image * o + out_channel) * oh + oy) * ow + ox;
                        let gradient = round(dy[at]);
                        for channel in 0..c {
                            for i in 0..3 {
                                for j in 0..3 {
                                    let tap = (out_channel * c + channel) * 9 + i * 3 + j;
                                    let value =
                                        input(image, channel, oy * stride + i, ox * stride + j);
                                    expected_output[at] += value * round(weight[tap]);
                                    expected_grad[tap] += value * gradient;
                                }
                            }
                        }
                    }
                }
            }
        }
        let blocked_dy = loops::pack::<f32>(
            &dy,
            &Packing {
                dims: [n, o, oh, ow],
                block: 1,
                padding: same(0),
                dilation: 1,
            },
        );
        let paired_dy = loops::pair_images(&blocked_dy, n);
        let paired_x = loops::pair_images(&packed_x, n);
        let paired = loops::Packed {
            n: n.div_ceil(2),
            ..packed
        };
        for &isa in &isas {
            let output = Output {
                dims: [n, o, oh, ow],
                blocked: false,
            };
            let actual_output =
                loops::convolve_on(isa, &packed_x, packed, &weights, kernel, output);
            let actual_grad = loops::weight_gradient_on(
                isa,
                &paired_x,
                paired,
                &paired_dy,
                [o, c, oh, ow],
                kernel,
            );
            for (what, actual, expected) in [
                ("output", &actual_output, &expected_output),
                ("weight gradient", &actual_grad, &expected_grad),
            ] {
                let largest = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(largest > 0.0);
                for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
                    assert!(
                        (*a as f64 - e).abs() <= 1e-5 * largest,
                        "{isa:?} {what} of {dims:?} → {o} at stride {stride}, element {index}: {a} against {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn bf16_rounding_in_vectors_is_the_scalar_rounding() {
    // Ties to even both ways, the largest f32 (which rounds to infinity), infinities, NaN, a
    // negative zero, the smallest normal, and a tail past a whole vector; on AVX512-BF16
    // `vcvtneps2bf16`, elsewhere the scalar path, against `bf16::from_f32` bit for bit.
    let mut values = vec![
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        -(1.0 + 1.0 / 256.0),
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        f32::MIN_POSITIVE,
        f32::NAN,
    ];
    values.extend((0..28).map(|i| (i as f32 * 0.618).sin() * 10f32.powi(i % 7 - 3)));
    let expected: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
    let same = |a: &bf16, b: &bf16| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    let mut written = vec![std::mem::MaybeUninit::<bf16>::uninit(); values.len()];
    <bf16 as loops::Element>::write_from_f32(&mut written, &values);
    for (index, (w, e)) in written.iter().zip(&expected).enumerate() {
        // SAFETY: `write_from_f32` wrote every element.
        let w = unsafe { w.assume_init() };
        assert!(
            same(&w, e),
            "value {index} ({}): {w} against {e}",
            values[index]
        );
    }
    // Two images and an odd third: pairs of each, the last with a zero partner.
    let images: Vec<f32> = [
        values.clone(),
        values.iter().map(|v| -v).collect(),
        values.clone(),
    ]
    .concat();
    let paired = loops::pair_images(&images, 3);
    let paired_bf16 = loops::pair_images(&expected.repeat(3), 3);
    let len = values.len();
    for (index, pair) in paired.chunks(2).enumerate() {
        let (image_pair, i) = (index / len, index % len);
        let first = bf16::from_f32(images[2 * image_pair * len + i]);
        let second = match 2 * image_pair + 1 {
            image if image < 3 => bf16::from_f32(images[image * len + i]),
            _ => bf16::ZERO,
        };
        assert!(
            same(&pair[0], &first) && same(&pair[1], &second),
            "pair {index}"
        );
        let from_bf16 = &paired_bf16[2 * index..][..2];
        assert!(same(&from_bf16[0], &expected[i]), "bf16 pair {index}");
    }
}

#[test]
fn stems_of_few_channels_are_packed_as_patches_and_the_rest_padded() {
    // The comparisons with Burn above run every case through whichever packing it takes:
    // this holds that both packings are among them.
    let problem = |[n, c, h, w]: [usize; 4], [o, k]: [usize; 2], stride, padding| {
        let geometry = Geometry {
            stride,
            padding,
            precision: Precision::F32,
        };
        Problem::new(
            &Shape::new([n, c, h, w]),
            &Shape::new([o, c, k, k]),
            geometry,
            Layout::Plain,
        )
    };
    let by_patches: Vec<bool> = CASES
        .iter()
        .map(|&(x, out, stride, padding)| problem(x, out, stride, padding).by_patches())
        .collect();
    assert!(
        by_patches[0] && by_patches[7],
        "3-channel 3×3 and 7×7 stems"
    );
    assert!(
        !by_patches[1] && !by_patches[4],
        "16 channels, and 1×1 kernels"
    );
    // Grey images, as Fashion-MNIST's: one value per tap.
    assert!(problem([1, 1, 28, 28], [16, 3], 1, same(1)).by_patches());
    // In blocks of 16, the map is packed as it lies.
    let blocked = Problem::new(
        &Shape::new([1, 1, 8, 8, 16]),
        &Shape::new([16, 16, 3, 3]),
        Geometry {
            stride: 1,
            padding: same(1),
            precision: Precision::F32,
        },
        Layout::Plain,
    );
    assert!(!blocked.by_patches());
}
