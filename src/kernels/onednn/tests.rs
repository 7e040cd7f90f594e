use super::*;
use crate::kernels::bf16_bound::assert_within_bf16_rounding;
use crate::kernels::conv_inputs as inputs;
use crate::kernels::layout::Layout;
use burn::tensor::{Device, Distribution, TensorData, Tolerance};

/// Relative tolerance for sums over up to a few thousand products in f32, computed in a
/// different order by the two libraries.
fn tolerance() -> Tolerance<f32> {
    Tolerance::rel_abs(1e-4, 5e-4)
}

fn burn_conv(x: Tensor<4>, weight: Tensor<4>, geometry: ConvGeometry) -> Tensor<4> {
    burn::tensor::module::conv2d(x, weight, None, geometry.options())
}

/// `[batch, channels in, height, width]`, `[channels out, kernel]`, geometry.
const CASES: [([usize; 4], [usize; 2], ConvGeometry); 11] = [
    ([2, 3, 16, 16], [16, 3], geometry(1, 1)),
    ([2, 16, 8, 8], [16, 3], geometry(1, 1)),
    ([2, 3, 8, 8], [4, 3], geometry(1, 1)),
    ([3, 4, 9, 7], [5, 3], geometry(2, 1)),
    ([2, 6, 8, 8], [3, 1], geometry(2, 0)),
    ([1, 2, 5, 6], [2, 7], geometry(1, 3)),
    ([4, 16, 16, 16], [32, 3], geometry(1, 1)),
    ([2, 3, 32, 32], [4, 7], geometry(2, 3)),
    ([2, 16, 8, 8], [32, 1], geometry(2, 0)),
    ([2, 64, 4, 4], [16, 1], geometry(1, 0)),
    ([3, 32, 8, 8], [32, 3], geometry(2, 1)),
];

const fn geometry(stride: usize, pad: usize) -> ConvGeometry {
    ConvGeometry {
        stride: [stride, stride],
        padding: [(pad, pad), (pad, pad)],
        precision: Precision::F32,
    }
}

#[test]
fn forward_matches_burn_without_autodiff() {
    let device = Device::flex();
    for (x_dims, out, geometry) in CASES {
        let (x, weight) = inputs(&device, x_dims, out);
        let expected = burn_conv(x.clone(), weight.clone(), geometry);
        let actual = conv2d(x, weight, geometry, Layout::Plain);
        assert_eq!(actual.dims(), expected.dims(), "{x_dims:?} {geometry:?}");
        actual
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), tolerance());
    }
    assert_eq!(fallbacks(), 0, "oneDNN itself computed every case");
}

#[test]
fn forward_and_gradients_match_burn_under_autodiff() {
    let device = Device::flex().autodiff();
    for (x_dims, out, geometry) in CASES {
        let (x, weight) = inputs(&device, x_dims, out);
        // A random projection of the output, so every output element gets its own gradient.
        let output_dims = burn_conv(x.clone(), weight.clone(), geometry).dims();
        let projection = Tensor::<4>::random(output_dims, Distribution::Normal(0.0, 1.0), &device);

        let run = |conv: fn(Tensor<4>, Tensor<4>, ConvGeometry) -> Tensor<4>| {
            let x = x.clone().detach().require_grad();
            let weight = weight.clone().detach().require_grad();
            let output = conv(x.clone(), weight.clone(), geometry);
            let grads = (output.clone() * projection.clone()).sum().backward();
            (
                output.inner(),
                x.grad(&grads).expect("input gradient"),
                weight.grad(&grads).expect("weight gradient"),
            )
        };
        let (expected_out, expected_dx, expected_dw) = run(burn_conv);
        let (out, dx, dw) = run(|x, weight, geometry| conv2d(x, weight, geometry, Layout::Plain));
        out.into_data()
            .assert_approx_eq::<f32>(&expected_out.into_data(), tolerance());
        dx.into_data()
            .assert_approx_eq::<f32>(&expected_dx.into_data(), tolerance());
        dw.into_data()
            .assert_approx_eq::<f32>(&expected_dw.into_data(), tolerance());
    }
    assert_eq!(fallbacks(), 0, "oneDNN itself computed every case");
}

#[test]
fn blocked_maps_convolve_like_plain_ones() {
    use crate::kernels::layout::{from_plain, to_plain};
    let device = Device::flex().autodiff();
    let mut blocked_somewhere = false;
    for block in [8, 16] {
        for (x_dims, out, geometry) in CASES {
            // Each side in blocks where its channels allow, else plain (as a model's stem).
            let in_block = if x_dims[1] % block == 0 { block } else { 1 };
            let out_layout = if out[0] % block == 0 {
                Layout::Blocked(block)
            } else {
                Layout::Plain
            };
            blocked_somewhere |= in_block > 1 && out_layout != Layout::Plain;
            let (x, weight) = inputs(&device, x_dims, out);
            let output_dims = burn_conv(x.clone(), weight.clone(), geometry).dims();
            let projection =
                Tensor::<4>::random(output_dims, Distribution::Normal(0.0, 1.0), &device);
            let run = |blocked: bool| {
                let x = x.clone().detach().require_grad();
                let weight = weight.clone().detach().require_grad();
                let output = if blocked {
                    let input: Tensor<5> = from_plain(x.clone(), in_block);
                    match out_layout {
                        Layout::Plain => {
                            conv2d::<5, 4>(input, weight.clone(), geometry, out_layout)
                        }
                        Layout::Blocked(_) => {
                            to_plain(conv2d::<5, 5>(input, weight.clone(), geometry, out_layout))
                        }
                    }
                } else {
                    burn_conv(x.clone(), weight.clone(), geometry)
                };
                let grads = (output.clone() * projection.clone()).sum().backward();
                [
                    output.inner().into_data(),
                    x.grad(&grads).expect("input gradient").into_data(),
                    weight.grad(&grads).expect("weight gradient").into_data(),
                ]
            };
            for (actual, expected) in run(true).iter().zip(&run(false)) {
                actual.assert_approx_eq::<f32>(expected, tolerance());
            }
        }
    }
    assert!(blocked_somewhere, "some case is blocked on both sides");
    assert_eq!(fallbacks(), 0, "oneDNN itself computed every case");
}

#[test]
fn the_native_block_is_a_blocked_layout_or_none() {
    assert!([1, 8, 16].contains(&native_block()), "{}", native_block());
}

#[test]
fn gradient_flows_to_an_earlier_layer_through_the_onednn_convolution() {
    let device = Device::flex().autodiff();
    let (x, weight) = inputs(&device, [2, 3, 6, 6], [4, 3]);
    let scale = Tensor::<4>::ones([1, 3, 1, 1], &device).require_grad();
    let output: Tensor<4> = conv2d(x * scale.clone(), weight, geometry(1, 1), Layout::Plain);
    let grads = output.sum().backward();
    let grad = scale.grad(&grads).expect("gradient reaches the scale");
    assert!(grad.abs().sum().into_scalar::<f32>() > 0.0);
}

#[test]
fn the_route_takes_only_plain_f32_flex_convolutions() {
    let x = Tensor::<4>::zeros([1, 1, 4, 4], &Device::flex());
    assert_eq!(accepts(&x, [1, 1], 1), enabled());
    assert!(!accepts(&x, [2, 2], 1));
    assert!(!accepts(&x, [1, 1], 2));
    let autodiff = Tensor::<4>::zeros([1, 1, 4, 4], &Device::flex().autodiff());
    assert_eq!(accepts(&autodiff, [1, 1], 1), enabled());
}

#[test]
fn one_shape_computed_on_several_threads_at_once_stays_correct() {
    // The shape's primitives are shared; each run must bring its own scratch memory.
    let device = Device::flex().autodiff();
    let geometry = geometry(1, 1);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..5 {
                    let (x, weight) = inputs(&device, [8, 16, 12, 12], [16, 3]);
                    let weight = weight.require_grad();
                    let output: Tensor<4> =
                        conv2d(x.clone(), weight.clone(), geometry, Layout::Plain);
                    let grad = weight.grad(&output.sum().backward()).unwrap();
                    let reference = weight.clone().detach().require_grad();
                    let expected_output = burn_conv(x, reference.clone(), geometry);
                    let expected = reference.grad(&expected_output.sum().backward()).unwrap();
                    grad.into_data()
                        .assert_approx_eq::<f32>(&expected.into_data(), tolerance());
                }
            });
        }
    });
    assert_eq!(fallbacks(), 0);
}

/// A Flex tensor of `dims` with values from a fixed pattern in [−1, 1].
fn patterned(dims: [usize; 4], stride: usize) -> FlexTensor {
    let len = dims.iter().product();
    let values: Vec<f32> = (0..len)
        .map(|i| ((i * stride) % 17) as f32 / 8.0 - 1.0)
        .collect();
    FlexTensor::from_data(TensorData::new(values, dims))
}

#[test]
fn a_saved_input_gives_the_gradients_the_input_itself_gives() {
    let mut saved_somewhere = false;
    for (x_dims, [out_channels, kernel], geometry) in CASES {
        let x = patterned(x_dims, 5);
        let weight = patterned([out_channels, x_dims[1], kernel, kernel], 3);
        let (output, input) = forward(x.clone(), weight.clone(), geometry, Layout::Plain, true);
        let Input::Saved { copy, .. } = &input else {
            continue;
        };
        saved_somewhere = true;
        let shape = geometry.shape(&x.shape(), &weight.shape(), 1).unwrap();
        assert_eq!(copy.to_user(&shape).unwrap(), f32s(&x), "{x_dims:?}");
        let output_grad = patterned(dims4(&output.shape()), 7);
        let from_saved = gradients(
            input,
            weight.clone(),
            output_grad.clone(),
            geometry,
            Layout::Plain,
            [true; 2],
        );
        let from_tensor = gradients(
            Input::Tensor(x),
            weight,
            output_grad,
            geometry,
            Layout::Plain,
            [true; 2],
        );
        for (saved, plain) in from_saved.into_iter().zip(from_tensor) {
            let (saved, plain) = (saved.unwrap(), plain.unwrap());
            assert_eq!(f32s(&saved), f32s(&plain), "{x_dims:?} {geometry:?}");
        }
    }
    assert!(saved_somewhere, "oneDNN converts the input of some case");
    assert_eq!(fallbacks(), 0);
}

#[test]
fn channel_counts_that_do_not_fill_their_blocks_are_refused_before_the_bridge() {
    let weight = Shape::from([8, 16, 3, 3]);
    let plain = Shape::from([2, 16, 8, 8]);
    let refused = geometry(1, 1).shape(&plain, &weight, 16).unwrap_err();
    assert!(refused.contains("do not fill blocks of 16"), "{refused}");
    assert!(geometry(1, 1).shape(&plain, &weight, 8).is_ok());
    let mismatched = geometry(1, 1)
        .shape(&Shape::from([2, 4, 8, 8]), &weight, 1)
        .unwrap_err();
    assert!(mismatched.contains("16 input channels"), "{mismatched}");
    let too_small = geometry(1, 0)
        .shape(&Shape::from([2, 16, 2, 2]), &weight, 1)
        .unwrap_err();
    assert!(too_small.contains("3×3 kernel"), "{too_small}");
}

#[test]
fn the_bridge_refuses_a_buffer_its_layout_would_overrun() {
    // A shape that skipped `ConvGeometry::shape`'s checks: 8 output channels written in
    // blocks of 16 need twice the buffer the caller has.
    let mut shape = geometry(1, 1)
        .shape(&Shape::from([2, 16, 8, 8]), &Shape::from([8, 16, 3, 3]), 8)
        .unwrap();
    shape.out_block = 16;
    let x = patterned([2, 16, 8, 8], 5);
    let weight = patterned([8, 16, 3, 3], 3);
    let refused = ffi::forward(&shape, f32s(&x), f32s(&weight), false).unwrap_err();
    assert!(
        refused.contains("the output buffer holds 1024 floats"),
        "{refused}"
    );
    let output_grad = vec![0.0; 2 * 8 * 8 * 8];
    let refused = ffi::backward(
        &shape,
        ffi::Source::Plain(f32s(&x)),
        f32s(&weight),
        &output_grad,
        [true; 2],
    )
    .err()
    .expect("the backward pass is refused too");
    assert!(refused.contains("buffer holds"), "{refused}");
}

#[test]
#[should_panic(expected = "oneDNN convolution refused")]
fn a_model_asked_for_blocks_its_channels_do_not_fill_stops_before_writing() {
    use crate::models::{BlockedModel, PreActResNet};
    if !enabled() {
        panic!("oneDNN convolution refused: the route is off, so nothing could be written");
    }
    let device = Device::flex();
    let model = PreActResNet::new(18, 3, 10, 8, &device);
    let x = Tensor::<4>::zeros([2, 3, 8, 8], &device);
    let _ = model.forward_in_blocks(x, None, 16);
}

#[test]
fn bf16_convolutions_and_gradients_match_f32_to_bf16_precision() {
    if ffi::implementation(true).is_empty() {
        eprintln!(
            "note: this oneDNN has no bf16 convolution on this CPU ({}); skipped",
            isa()
        );
        return;
    }
    let device = Device::flex().autodiff();
    let (x, weight) = inputs(&device, [4, 16, 8, 8], [16, 3]);
    let run = |precision| {
        let geometry = ConvGeometry {
            precision,
            ..geometry(1, 1)
        };
        let (x, weight) = (x.clone().require_grad(), weight.clone().require_grad());
        let output: Tensor<4> = conv2d(x.clone(), weight.clone(), geometry, Layout::Plain);
        let grads = (output.clone() * output.clone()).sum().backward();
        let grads = [x.grad(&grads).unwrap(), weight.grad(&grads).unwrap()];
        (output.into_data(), grads.map(|g| g.into_data()))
    };
    let (output_f32, grads_f32) = run(Precision::F32);
    let (output_bf16, grads_bf16) = run(Precision::Bf16);
    assert_ne!(output_bf16, output_f32, "bf16 operands round");
    assert_within_bf16_rounding(&output_bf16, &output_f32, "output");
    for ((bf16, f32), what) in grads_bf16
        .iter()
        .zip(&grads_f32)
        .zip(["input gradient", "weight gradient"])
    {
        assert_within_bf16_rounding(bf16, f32, what);
    }
    assert_eq!(fallbacks(), 0);
}
