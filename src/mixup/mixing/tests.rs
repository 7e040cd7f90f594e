use super::*;
use crate::mixup::plan::{Draw, PatchUpConfig, PatchUpKind};
use burn::tensor::Tolerance;

fn rows(values: &[f32], row: usize) -> Vec<Vec<f32>> {
    values.chunks(row).map(<[f32]>::to_vec).collect()
}

#[test]
fn mixes_only_at_its_point_and_with_its_partners() {
    let device = Device::flex();
    let mix = TensorMix::new(&MixPlan::interpolate(0.25, 1, vec![2, 0, 1]), &device);
    let h = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], &device);
    let untouched = mix.apply_at(0, h.clone());
    untouched
        .into_data()
        .assert_eq(&h.clone().into_data(), true);
    let mixed = mix.apply_at(1, h);
    let expected = TensorData::from([
        [0.25 * 1.0 + 0.75 * 5.0, 0.25 * 2.0 + 0.75 * 6.0],
        [0.25 * 3.0 + 0.75 * 1.0, 0.25 * 4.0 + 0.75 * 2.0],
        [0.25 * 5.0 + 0.75 * 3.0, 0.25 * 6.0 + 0.75 * 4.0],
    ]);
    mixed
        .into_data()
        .assert_approx_eq::<f32>(&expected, Tolerance::default());
    assert_eq!(mix.applied().unwrap().target_weights, vec![vec![0.25; 3]]);
}

#[test]
fn gradient_reaches_both_members_of_each_pair() {
    let device = Device::flex().autodiff();
    let mix = TensorMix::new(&MixPlan::interpolate(0.7, 0, vec![1, 2, 0]), &device);
    let h = Tensor::<2>::from_floats([[1.0], [2.0], [3.0]], &device).require_grad();
    // Weight each output row differently so the gradient reveals who contributed where.
    let weights = Tensor::<2>::from_floats([[1.0], [10.0], [100.0]], &device);
    let loss = (mix.apply_at(0, h.clone()) * weights).sum();
    let grads = loss.backward();
    let grad = h.grad(&grads).unwrap();
    // Row 0 feeds output 0 (λ) and output 2 (1−λ, as row 2's partner).
    let expected = TensorData::from([
        [0.7 * 1.0 + 0.3 * 100.0],
        [0.7 * 10.0 + 0.3 * 1.0],
        [0.7 * 100.0 + 0.3 * 10.0],
    ]);
    grad.into_data()
        .assert_approx_eq::<f32>(&expected, Tolerance::default());
}

/// A map whose every element says which example it came from: example `i` holds `i + 1`.
fn labelled_map(batch: usize, dims: [usize; 3], device: &Device) -> Tensor<4> {
    let per = dims.iter().product::<usize>();
    let values: Vec<f32> = (0..batch * per).map(|k| (k / per + 1) as f32).collect();
    Tensor::from_data(
        TensorData::new(values, [batch, dims[0], dims[1], dims[2]]),
        device,
    )
}

fn plan_with(op: MixOp, draws: Draws, point: usize, permutation: Vec<usize>) -> MixPlan {
    MixPlan {
        permutation,
        mixes: vec![PointMix { point, op, draws }],
    }
}

#[test]
fn cutmix_keeps_the_corrected_lambda_of_each_image_and_targets_sum_to_one() {
    let device = Device::flex();
    let permutation = vec![1, 2, 3, 0];
    for (lambda, centre) in [(0.6, (0.5, 0.5)), (0.2, (0.05, 0.9)), (0.95, (0.3, 0.3))] {
        let draw = Draw {
            lambda,
            centre: Some(centre),
        };
        let plan = plan_with(MixOp::CutMix, Draws::Shared(draw), 0, permutation.clone());
        let mix = TensorMix::new(&plan, &device);
        let out = mix.apply_at(0, labelled_map(4, [3, 12, 10], &device));
        let values = out.into_data().try_to_vec::<f32>().unwrap();
        let applied = mix.applied().unwrap();
        let kept = applied.target_weights[0][0];
        let cut = crate::mixup::CutBox::new(lambda, centre, 12, 10);
        assert!((kept - (1.0 - cut.area() as f64 / 120.0)).abs() < 1e-12);
        for (i, row) in rows(&values, 360).iter().enumerate() {
            let own = row.iter().filter(|&&v| v == (i + 1) as f32).count();
            let partner = row
                .iter()
                .filter(|&&v| v == (permutation[i] + 1) as f32)
                .count();
            assert_eq!(own + partner, 360, "only the pair's values");
            assert!((own as f64 / 360.0 - kept).abs() < 1e-12, "λ {lambda}");
        }
        let targets = crate::mixup::soft_targets(&[0, 1, 2, 3], Some(&applied), 4, 0.0);
        for (i, row) in targets.chunks(4).enumerate() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!((row[i] as f64 - kept).abs() < 1e-6);
        }
    }
}

#[test]
fn patchup_target_weights_equal_the_masks_area() {
    let device = Device::flex();
    let permutation = vec![2, 0, 1];
    for kind in [PatchUpKind::Hard, PatchUpKind::Soft] {
        let op = MixOp::PatchUp {
            config: PatchUpConfig {
                block: 3,
                gamma: 0.5,
                kind,
            },
            seed: 77,
            first_row: 0,
        };
        let lambda = 0.25;
        let draws = Draws::PerExample(vec![
            Some(Draw {
                lambda,
                centre: None,
            });
            3
        ]);
        let mix = TensorMix::new(&plan_with(op, draws, 2, permutation.clone()), &device);
        let out = mix.apply_at(2, labelled_map(3, [4, 8, 8], &device));
        let values = out.into_data().try_to_vec::<f32>().unwrap();
        let weights = mix.applied().unwrap().target_weights.remove(0);
        let mut areas = Vec::new();
        for (i, row) in rows(&values, 256).iter().enumerate() {
            let (own, partner) = ((i + 1) as f32, (permutation[i] + 1) as f32);
            let changed = row.iter().filter(|&&v| v != own).count() as f64 / 256.0;
            areas.push(changed);
            let inside = match kind {
                PatchUpKind::Hard => partner,
                PatchUpKind::Soft => lambda as f32 * own + (1.0 - lambda as f32) * partner,
            };
            assert!(row.iter().all(|&v| v == own || (v - inside).abs() < 1e-6));
            let expected = match kind {
                PatchUpKind::Hard => 1.0 - changed,
                PatchUpKind::Soft => 1.0 - changed * (1.0 - lambda),
            };
            assert!((weights[i] - expected).abs() < 1e-12, "{kind}: {weights:?}");
        }
        assert!(areas.iter().all(|&a| a > 0.0 && a < 1.0), "{areas:?}");
        assert!(
            areas[0] != areas[1] || areas[1] != areas[2],
            "a mask per example"
        );
    }
}

#[test]
fn box_mixes_on_blocked_maps_match_plain_ones() {
    let device = Device::flex();
    let draw = Draw {
        lambda: 0.5,
        centre: Some((0.4, 0.6)),
    };
    let plan = plan_with(MixOp::CutMix, Draws::Shared(draw), 0, vec![1, 0]);
    let plain = Tensor::<4>::random(
        [2, 8, 5, 6],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let mixed = TensorMix::new(&plan, &device).apply_at(0, plain.clone());
    // [batch, 8, h, w] → [batch, 2 blocks, h, w, 4 lanes].
    let to_blocks = |t: Tensor<4>| t.reshape([2, 2, 4, 5, 6]).permute([0, 1, 3, 4, 2]);
    let blocked_mixed = TensorMix::new(&plan, &device).apply_at(0, to_blocks(plain));
    blocked_mixed
        .into_data()
        .assert_approx_eq::<f32>(&to_blocks(mixed).into_data(), Tolerance::default());
}

#[test]
fn a_box_mix_on_a_flat_state_or_a_skipped_point_is_an_error_not_a_panic() {
    let device = Device::flex();
    let draw = Draw {
        lambda: 0.5,
        centre: Some((0.5, 0.5)),
    };
    let plan = plan_with(MixOp::CutMix, Draws::Shared(draw), 1, vec![1, 0]);
    let mix = TensorMix::new(&plan, &device);
    assert!(matches!(mix.applied(), Err(MixupError::PointNotReached(1))));
    let flat = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
    let out = mix.apply_at(1, flat.clone());
    out.into_data().assert_eq(&flat.into_data(), true);
    assert!(matches!(
        mix.applied(),
        Err(MixupError::FlatStateAtRuntime { point: 1, rank: 2 })
    ));
}
