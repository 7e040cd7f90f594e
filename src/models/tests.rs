use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Distribution, Int, Tensor, TensorData, Tolerance};

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use super::*;
use crate::mixup::{
    Draw, Draws, Loss, MixConfig, MixMode, MixOp, MixPlan, Mixable, PointMix, mixed_loss,
    soft_targets,
};

/// Small instances of every family, so the whole suite runs in seconds on a CPU.
fn small_models() -> Vec<(ModelKind, usize)> {
    vec![
        (ModelKind::PreActResNet { depth: 18 }, 4),
        (ModelKind::PreActResNet { depth: 50 }, 2),
        (
            ModelKind::WideResNet {
                depth: 10,
                widen: 2,
            },
            4,
        ),
        (ModelKind::ResNet50, 2),
        (ModelKind::SmallCnn, 4),
        (ModelKind::Mlp, 16),
    ]
}

fn images(batch: usize, channels: usize, size: usize, device: &Device) -> Tensor<4> {
    Tensor::random(
        [batch, channels, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

#[test]
fn output_shapes_for_grey_28_and_colour_32() {
    let device = Device::flex();
    for (kind, width) in small_models() {
        for (channels, size) in [(1, 28), (3, 32)] {
            let model = ModelConfig::new(kind, channels, size, 7)
                .with_width(width)
                .init(&device)
                .unwrap();
            let logits = model.forward_mixed(images(3, channels, size, &device), None);
            assert_eq!(logits.dims(), [3, 7], "{kind} at {channels}×{size}×{size}");
        }
    }
}

fn plan(lambda: f64, layer: usize, permutation: Vec<usize>) -> MixPlan {
    MixPlan::interpolate(lambda, layer, permutation)
}

#[test]
fn lambda_one_is_exactly_the_unmixed_forward() {
    let device = Device::flex();
    for (kind, width) in small_models() {
        let model = ModelConfig::new(kind, 3, 32, 5)
            .with_width(width)
            .init(&device)
            .unwrap();
        let x = images(4, 3, 32, &device);
        let plain = model.forward_mixed(x.clone(), None).into_data();
        for layer in 0..kind.mix_points().len() {
            let mix = TensorMix::new(&plan(1.0, layer, vec![3, 2, 0, 1]), &device);
            let mixed = model.forward_mixed(x.clone(), Some(&mix)).into_data();
            mixed.assert_eq(&plain, true);
        }
    }
}

#[test]
fn lambda_zero_at_the_input_is_the_forward_of_the_permuted_batch() {
    let device = Device::flex();
    for (kind, width) in small_models() {
        let model = ModelConfig::new(kind, 1, 28, 5)
            .with_width(width)
            .init(&device)
            .unwrap();
        let x = images(4, 1, 28, &device);
        let permutation = vec![2, 0, 3, 1];
        let indices = Tensor::<1, Int>::from_data(
            TensorData::new(permutation.iter().map(|&i| i as i64).collect(), [4]),
            &device,
        );
        let expected = model
            .forward_mixed(x.clone().select(0, indices), None)
            .into_data();
        let mix = TensorMix::new(&plan(0.0, 0, permutation), &device);
        model
            .forward_mixed(x, Some(&mix))
            .into_data()
            .assert_approx_eq::<f32>(&expected, Tolerance::default());
    }
}

/// Every float parameter's id with its rank, so its gradient can be fetched with the right type.
#[derive(Default)]
struct ParamIds(Vec<(ParamId, usize)>);

impl ModuleVisitor for ParamIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // Batch-norm running statistics are visited too, but they are buffers.
        if param.val().is_require_grad() {
            self.0.push((param.id, D));
        }
    }
}

fn param_ids(model: &Classifier) -> Vec<(ParamId, usize)> {
    let mut ids = ParamIds::default();
    model.visit(&mut ids);
    ids.0
}

fn grad_norm(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<f32> {
    let norm = |t: Tensor<1>| t.abs().sum().into_scalar::<f32>();
    match rank {
        1 => grads.get::<1>(id).map(norm),
        2 => grads.get::<2>(id).map(|g| norm(g.flatten(0, 1))),
        4 => grads.get::<4>(id).map(|g| norm(g.flatten(0, 3))),
        other => panic!("unexpected parameter rank {other}"),
    }
}

fn mixed_step_grads(model: &Classifier, mix_plan: &MixPlan, device: &Device) -> GradientsParams {
    let batch = mix_plan.permutation.len();
    let mix = TensorMix::new(mix_plan, device);
    let logits = model.forward_mixed(images(batch, 3, 32, device), Some(&mix));
    let labels: Vec<usize> = (0..batch).map(|i| i % 5).collect();
    let targets = soft_targets(&labels, Some(&mix.applied().unwrap()), 5, 0.0);
    let targets = Tensor::from_data(TensorData::new(targets, [batch, 5]), device);
    GradientsParams::from_grads(mixed_loss(logits, targets, Loss::SoftCe).backward(), model)
}

#[test]
fn every_parameter_before_and_after_the_mix_point_gets_gradient() {
    let device = Device::flex().autodiff();
    for (kind, width) in small_models() {
        let model = ModelConfig::new(kind, 3, 32, 5)
            .with_width(width)
            .init(&device)
            .unwrap();
        let deepest = *kind.paper_mix_points().last().unwrap();
        let grads = mixed_step_grads(&model, &plan(0.6, deepest, vec![1, 2, 3, 0]), &device);
        let ids = param_ids(&model);
        assert!(!ids.is_empty());
        for (id, rank) in ids {
            let norm = grad_norm(&grads, id, rank)
                .unwrap_or_else(|| panic!("{kind}: parameter {id} got no gradient"));
            assert!(norm > 0.0, "{kind}: parameter {id} has a zero gradient");
        }
    }
}

/// How much of each input example's gradient comes from output row `row`.
fn input_gradient_of_row(
    model: &Classifier,
    x: Tensor<4>,
    mix: &TensorMix,
    row: usize,
) -> Vec<f32> {
    let x = x.require_grad();
    let logits = model.forward_mixed(x.clone(), Some(mix));
    let grads = logits.narrow(0, row, 1).sum().backward();
    x.grad(&grads)
        .unwrap()
        .abs()
        .sum_dims(&[1, 2, 3])
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn hidden_mix_sends_each_examples_gradient_to_itself_and_its_partner_only() {
    // The MLP has no batch norm, so examples interact only through the mix. The weights and
    // images are unseeded: at width 8 the partner's gradient was cut by dead ReLUs in 4 runs of
    // 300; at width 64, in none of 1000.
    let device = Device::flex().autodiff();
    let model = ModelConfig::new(ModelKind::Mlp, 1, 4, 3)
        .with_width(64)
        .init(&device)
        .unwrap();
    let x = images(4, 1, 4, &device);
    let mix = TensorMix::new(&plan(0.7, 1, vec![2, 3, 0, 1]), &device);
    let per_example = input_gradient_of_row(&model, x, &mix, 0);
    assert!(
        per_example[0] > 0.0 && per_example[2] > 0.0,
        "{per_example:?}"
    );
    assert_eq!(
        (per_example[1], per_example[3]),
        (0.0, 0.0),
        "{per_example:?}"
    );
}

#[test]
fn per_example_points_mix_each_example_at_its_own_point_only() {
    // The MLP has no batch norm, so examples interact only through the mixes. Pairs (0, 1)
    // mix at point 1 and (2, 3) at point 2, each example with its own λ: every row must be
    // the row of a whole-batch mix at that example's point with its λ.
    let device = Device::flex().autodiff();
    let model = ModelConfig::new(ModelKind::Mlp, 1, 4, 3)
        .with_width(64)
        .init(&device)
        .unwrap();
    let permutation = vec![1, 0, 3, 2];
    let lambdas = [0.3, 0.8, 0.6, 0.1];
    let homes = [1, 1, 2, 2];
    let at = |point: usize| {
        Draws::PerExample(
            (0..4)
                .map(|i| {
                    (homes[i] == point).then_some(Draw {
                        lambda: lambdas[i],
                        centre: None,
                    })
                })
                .collect(),
        )
    };
    let per_example = MixPlan {
        permutation: permutation.clone(),
        mixes: [1, 2]
            .map(|point| PointMix {
                point,
                op: MixOp::Interpolate,
                draws: at(point),
            })
            .to_vec(),
    };
    let x = images(4, 1, 4, &device);
    let mix = TensorMix::new(&per_example, &device);
    let logits = model.forward_mixed(x.clone(), Some(&mix)).into_data();
    assert_eq!(
        mix.applied().unwrap().target_weights,
        vec![vec![0.3, 0.8, 1.0, 1.0], vec![1.0, 1.0, 0.6, 0.1]]
    );
    let rows = logits.try_to_vec::<f32>().unwrap();
    for i in 0..4 {
        let whole = TensorMix::new(&plan(lambdas[i], homes[i], permutation.clone()), &device);
        let expected = model.forward_mixed(x.clone(), Some(&whole)).into_data();
        let expected = expected.try_to_vec::<f32>().unwrap();
        for c in 0..3 {
            let (got, want) = (rows[i * 3 + c], expected[i * 3 + c]);
            assert!((got - want).abs() < 1e-5, "row {i}: {got} vs {want}");
        }
    }
    // Gradient: row 2's output reaches x2 and its partner x3 only, through point 2 (64
    // hidden units each way keep a path open whatever the random weights).
    let mix = TensorMix::new(&per_example, &device);
    let per_input = input_gradient_of_row(&model, x, &mix, 2);
    assert!(per_input[2] > 0.0 && per_input[3] > 0.0, "{per_input:?}");
    assert_eq!((per_input[0], per_input[1]), (0.0, 0.0), "{per_input:?}");
}

#[test]
fn sgd_overfits_a_tiny_batch_with_manifold_mixing_on() {
    let device = Device::flex().autodiff();
    device.seed(0);
    // Initial weights come from the backend's process-wide RNG, which tests running in
    // parallel share: every family gets at least width 4 so it learns from any draw. After
    // 100 steps every family is below half its first loss on either convolution path, which
    // leaves the 0.8 bound a wide margin against rounding-order differences between them.
    for (kind, width) in small_models() {
        let width = width.max(4);
        let mut model = ModelConfig::new(kind, 3, 32, 4)
            .with_width(width)
            .init(&device)
            .unwrap();
        let mut optim = SgdConfig::new()
            .with_momentum(Some(
                burn::optim::momentum::MomentumConfig::new().with_dampening(0.0),
            ))
            .init();
        let config = MixConfig::new(MixMode::Manifold, 2.0, kind.paper_mix_points());
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let x = images(32, 3, 32, &device);
        let labels: Vec<usize> = (0..32).map(|i| i % 4).collect();
        let loss_at = |model: &Classifier, rng: &mut ChaCha12Rng| {
            let mix_plan = config.draw(rng, 32, 0, 1).unwrap();
            let mix = TensorMix::new(&mix_plan, &device);
            let logits = model.forward_mixed(x.clone(), Some(&mix));
            let targets = soft_targets(&labels, Some(&mix.applied().unwrap()), 4, 0.0);
            let targets = Tensor::from_data(TensorData::new(targets, [32, 4]), &device);
            mixed_loss(logits, targets, Loss::SoftCe)
        };
        let mut losses = Vec::new();
        for _ in 0..100 {
            let loss = loss_at(&model, &mut rng);
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.05, model, grads);
        }
        let first = losses[..5].iter().sum::<f32>() / 5.0;
        let last = losses[95..].iter().sum::<f32>() / 5.0;
        assert!(last < 0.8 * first, "{kind}: loss {first} → {last}");
    }
}

#[test]
fn parameter_counts_match_the_pytorch_definitions() {
    let device = Device::flex().autodiff();
    let count = |name: &str, classes: usize| {
        let model = ModelConfig::new(name.parse().unwrap(), 3, 32, classes)
            .init(&device)
            .unwrap();
        trainable_parameter_count(&model)
    };
    // PyTorch's `sum(p.numel() for p in model.parameters())` for the same definitions:
    // preactresnet18 of the paper's code and torchvision's resnet50 (ImageNet, 1000 classes).
    assert_eq!(count("preactresnet18", 10), 11_171_146);
    assert_eq!(count("resnet50", 1000), 25_557_032);
    // WRN-28-10 with biased convolutions as in the paper's code, computed from the definition:
    // stem 3→16, 12 blocks in 3 groups of 160/320/640 channels, final BN and linear.
    let conv = |i: usize, o: usize, k: usize| i * o * k * k + o;
    let bn = |c: usize| 2 * c;
    let mut expected = conv(3, 16, 3);
    let mut in_planes = 16;
    for planes in [160, 320, 640] {
        for _ in 0..4 {
            expected +=
                bn(in_planes) + conv(in_planes, planes, 3) + bn(planes) + conv(planes, planes, 3);
            if in_planes != planes {
                expected += conv(in_planes, planes, 1);
            }
            in_planes = planes;
        }
    }
    expected += bn(640) + 640 * 10 + 10;
    assert_eq!(count("wrn-28-10", 10), expected);
}

#[test]
fn model_names_parse_and_reject_clearly() {
    assert_eq!(
        "wrn-28-10".parse(),
        Ok(ModelKind::WideResNet {
            depth: 28,
            widen: 10
        })
    );
    assert_eq!(
        "PreActResNet34".parse(),
        Ok(ModelKind::PreActResNet { depth: 34 })
    );
    assert_eq!(
        "wrn-27-10".parse::<ModelKind>(),
        Err(ModelError::WrnDepth(27))
    );
    assert!(matches!(
        "vgg16".parse::<ModelKind>(),
        Err(ModelError::UnknownModel(_))
    ));
    assert!(matches!(
        "preactresnet19".parse::<ModelKind>(),
        Err(ModelError::UnknownModel(_))
    ));
    for name in ModelKind::EXAMPLES {
        let kind: ModelKind = name.parse().unwrap();
        assert_eq!(kind.to_string(), name);
        let points = kind.mix_points();
        assert!(kind.paper_mix_points().iter().all(|&p| p < points.len()));
    }
    let config = ModelConfig::new(ModelKind::Mlp, 2, 28, 10);
    assert_eq!(config.validate(), Err(ModelError::Channels(2)));
}

#[test]
fn channel_blocked_feature_maps_train_and_evaluate_like_plain_ones() {
    let device = Device::flex().autodiff();
    // Model, image size, and whether to compare the input gradient. The input gradient jumps
    // wherever a ReLU's input sits within rounding of zero: over 200 initialisations of each
    // small model, 97% of draws agree to ~2e-6 and the rest differ by 1e-3 to 2e-2, as often
    // as scaling the input by 1 + 1e-6 moves it in the plain layout alone. A channel put in the
    // wrong place shows in every draw, so the closest of three draws must agree. ResNet50's
    // input gradient flips far more often (up to 7e-2 from that nudge), so only its logits are
    // compared; the backward pieces it adds, batch norm without a ReLU in blocks among them,
    // have tests of their own (`kernels::batch_norm`).
    let kinds = [
        (ModelKind::PreActResNet { depth: 18 }, 16, true),
        (
            ModelKind::WideResNet {
                depth: 10,
                widen: 1,
            },
            16,
            true,
        ),
        (ModelKind::ResNet50, 64, false),
    ];
    for (kind, size, compare_dx) in kinds {
        let draws = if compare_dx { 3 } else { 1 };
        let mut dx_errors = Vec::new();
        for _ in 0..draws {
            let model = ModelConfig::new(kind, 3, size, 5)
                .with_width(16)
                .init(&device)
                .unwrap();
            let x = images(4, 3, size, &device);
            dx_errors.push(compare_blocked_with_plain(kind, &model, x, &device));
        }
        if compare_dx {
            let closest = dx_errors.iter().copied().fold(f64::INFINITY, f64::min);
            let all: Vec<String> = dx_errors.iter().map(|e| format!("{e:.2e}")).collect();
            assert!(
                closest < 1e-4,
                "{kind}: dx in blocks is off in every draw: {}",
                all.join(", ")
            );
        }
    }
}

/// Checks evaluation and training logits in blocks of 8 and 16 channels against the plain
/// layout, and returns how far the input gradient is off in the worse of the two.
fn compare_blocked_with_plain(
    kind: ModelKind,
    model: &Classifier,
    x: Tensor<4>,
    device: &Device,
) -> f64 {
    let mix = TensorMix::new(&plan(0.6, 2, vec![1, 2, 3, 0]), device);
    let forward = |model: &Classifier, x: Tensor<4>, mix: Option<&TensorMix>, block| match model {
        Classifier::PreActResNet(m) => m.forward_in_blocks(x, mix, block),
        Classifier::WideResNet(m) => m.forward_in_blocks(x, mix, block),
        Classifier::ResNet50(m) => m.forward_in_blocks(x, mix, block),
        _ => unreachable!("a model with blocked maps"),
    };
    // Training mode: batch statistics, mixing at a hidden layer, the input's gradient (which
    // passes through every layer).
    let train = |block: usize| {
        let x = x.clone().require_grad();
        let logits = forward(model, x.clone(), Some(&mix), block);
        let grads = logits.clone().sum().backward();
        [
            logits.inner().into_data(),
            x.grad(&grads).unwrap().into_data(),
        ]
    };
    let evaluate = |block: usize| {
        let model = model.valid();
        forward(&model, x.clone().inner(), None, block).into_data()
    };
    // Relative to the whole tensor: a channel put in the wrong place would be off by the
    // tensor's own size, while the layouts differ only in the order of batch norm's sums.
    let relative_error = |blocked: &TensorData, plain: &TensorData, what: &str| {
        assert_eq!(blocked.shape(), plain.shape(), "{kind}: {what}");
        let pairs = blocked.iter::<f32>().zip(plain.iter::<f32>());
        let (diff, norm) = pairs.fold((0.0, 0.0), |(d, n), (a, b)| {
            (d + ((a - b) as f64).powi(2), n + (b as f64).powi(2))
        });
        (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
    };
    // Evaluation first: each training forward moves the running statistics.
    let plain = evaluate(1);
    for block in [8, 16] {
        let error = relative_error(&evaluate(block), &plain, "eval logits");
        assert!(
            error < 1e-4,
            "{kind}: eval logits, blocks of {block}, off by {error:.2e}"
        );
    }
    let plain = train(1);
    let mut dx_error: f64 = 0.0;
    for block in [8, 16] {
        let [logits, dx] = train(block);
        let error = relative_error(&logits, &plain[0], "logits");
        assert!(
            error < 1e-3,
            "{kind}: logits, blocks of {block}, off by {error:.2e}"
        );
        dx_error = dx_error.max(relative_error(&dx, &plain[1], "dx"));
    }
    dx_error
}

#[test]
fn one_non_finite_value_in_any_weight_or_statistic_is_found() {
    /// Puts `value` into the `target`-th float tensor the mapper meets.
    struct Poison {
        target: usize,
        seen: usize,
        value: f32,
    }
    impl burn::module::ModuleMapper for Poison {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            self.seen += 1;
            if self.seen - 1 != self.target {
                return param;
            }
            let (id, tensor, mapper) = param.consume();
            let mut values = tensor.to_data().try_to_vec::<f32>().unwrap();
            let last = values.len() - 1;
            values[last] = self.value;
            let poisoned =
                Tensor::from_data(TensorData::new(values, tensor.dims()), &tensor.device());
            Param::from_mapped_value(id, poisoned, mapper)
        }
    }
    let device = Device::flex();
    let model = ModelConfig::new(ModelKind::SmallCnn, 1, 28, 10)
        .with_width(4)
        .init(&device)
        .unwrap();
    assert!(all_finite(&model));
    let mut count = Poison {
        target: usize::MAX,
        seen: 0,
        value: 0.0,
    };
    let model = model.map(&mut count);
    let tensors = count.seen;
    assert!(tensors > 4, "weights and batch-norm statistics");
    for target in [0, tensors / 2, tensors - 1] {
        for value in [f32::NAN, f32::INFINITY] {
            let mut poison = Poison {
                target,
                seen: 0,
                value,
            };
            let broken = model.clone().map(&mut poison);
            assert!(!all_finite(&broken), "tensor {target} holding {value}");
        }
    }
}

#[test]
fn weight_files_of_equal_models_are_equal_bytes() {
    let device = Device::flex();
    let model = ModelConfig::new(ModelKind::SmallCnn, 1, 28, 10)
        .with_width(4)
        .init(&device)
        .unwrap();
    let first = to_safetensors(&model).unwrap();
    // Each writer hashes its metadata with fresh keys: many writes meet several orders.
    for _ in 0..20 {
        assert!(to_safetensors(&model).unwrap() == first);
    }
    let header = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    let json: serde_json::Value = serde_json::from_slice(&first[8..8 + header]).unwrap();
    assert_eq!(json["__metadata__"]["producer"], "burn");
}

#[test]
fn parameters_are_counted_from_their_shapes_without_allocating_them() {
    let config = |name: &str, width: usize| {
        ModelConfig::new(name.parse().unwrap(), 3, 32, 10).with_width(width)
    };
    // The 11,171,146 trainable weights and the batch-norm running statistics (2 × 3,392).
    assert_eq!(
        config("preactresnet18", 64).parameter_floats().unwrap(),
        11_171_146 + 2 * 3_392
    );
    // 3072·100000 + 100000² + 100000·10 weights and their biases: 40 GB were they allocated.
    let wide_mlp = config("mlp", 100_000).parameter_floats().unwrap();
    assert_eq!(
        wide_mlp,
        3072 * 100_000 + 100_000 + 100_000 * 100_000 + 100_000 + 100_000 * 10 + 10
    );
    // Refused on its weights alone, before any is built.
    let bytes = config("mlp", 100_000).training_bytes(1).unwrap();
    assert!(bytes > 6 * 4 * wide_mlp, "{bytes}");
    // Every convolution's output, counted by hand: the stem (64 × 32²), stage 1 (4 × 64 × 32²),
    // and at each later stage two blocks of two convolutions plus the projection (5 maps).
    let preact = config("preactresnet18", 64);
    let by_hand = 64 * 1024 * 5 + 5 * (128 * 256 + 256 * 64 + 512 * 16);
    assert_eq!(preact.feature_floats_per_image().unwrap(), by_hand);
    // Maps grow with the pixels (this one counted at the probe's 64 px, then scaled).
    let larger = ModelConfig::new("preactresnet18".parse().unwrap(), 3, 128, 10).with_width(64);
    assert_eq!(larger.feature_floats_per_image().unwrap(), 16 * by_hand);
    // Per example: the input and every map, with what training keeps of each.
    let per_example = preact.training_bytes(2).unwrap() - preact.training_bytes(1).unwrap();
    assert_eq!(per_example, 4 * (8 * 3 * 32 * 32 + 4 * by_hand));
    let inference = preact.inference_bytes(2).unwrap() - preact.inference_bytes(1).unwrap();
    assert_eq!(inference, 4 * (4 * 3 * 32 * 32 + by_hand));
    assert!(matches!(
        config("small-cnn", MAX_WIDTH + 1).validate(),
        Err(ModelError::TooLarge { what: "width", .. })
    ));
    assert!(matches!(
        "wrn-1000000000000-1".parse::<ModelKind>(),
        Err(ModelError::TooLarge { .. })
    ));
}
