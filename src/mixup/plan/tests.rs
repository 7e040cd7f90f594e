use super::*;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::mixup::PointShape::{Map, Vector};

fn manifold(points: Vec<usize>, weights: Vec<f64>) -> MixConfig {
    MixConfig {
        layer_weights: weights,
        ..MixConfig::new(MixMode::Manifold, 2.0, points)
    }
}

/// Five map points, as a PreActResNet has, and a flat sixth.
fn model_points() -> Vec<MixPoint> {
    MixPoint::list(&[
        ("input", Map),
        ("a", Map),
        ("b", Map),
        ("c", Map),
        ("d", Map),
        ("flat", Vector),
    ])
}

fn draw(config: &MixConfig, rng: &mut ChaCha12Rng, batch: usize) -> Option<MixPlan> {
    config.draw(rng, batch, 0, 1)
}

fn single(plan: &MixPlan) -> (f64, usize) {
    assert_eq!(plan.mixes.len(), 1);
    let mix = &plan.mixes[0];
    match &mix.draws {
        Draws::Shared(draw) => (draw.lambda, mix.point),
        Draws::PerExample(_) => panic!("a batch draw"),
    }
}

#[test]
fn beta_moments_match_theory() {
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let n = 200_000;
    for alpha in [0.2, 1.0, 2.0] {
        let draws: Vec<f64> = (0..n).map(|_| sample_lambda(&mut rng, alpha)).collect();
        assert!(draws.iter().all(|l| (0.0..=1.0).contains(l)));
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n as f64;
        let expected_var = 1.0 / (4.0 * (2.0 * alpha + 1.0));
        // Standard error of the mean is sqrt(var / n) < 0.0011; 0.005 is > 4σ.
        assert!((mean - 0.5).abs() < 0.005, "alpha {alpha}: mean {mean}");
        assert!(
            (var - expected_var).abs() / expected_var < 0.02,
            "alpha {alpha}: variance {var} vs {expected_var}"
        );
    }
}

#[test]
fn non_positive_alpha_never_mixes() {
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    for alpha in [0.0, -1.0] {
        assert_eq!(sample_lambda(&mut rng, alpha), 1.0);
    }
}

#[test]
fn layer_draws_follow_their_weights() {
    let config = manifold(vec![0, 2, 3], vec![1.0, 2.0, 5.0]);
    config.validate(&model_points(), 1).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(3);
    let n = 80_000;
    let mut counts = [0usize; 5];
    for _ in 0..n {
        counts[single(&draw(&config, &mut rng, 4).unwrap()).1] += 1;
    }
    assert_eq!(counts[1] + counts[4], 0, "only eligible points are drawn");
    for (point, weight) in [(0, 1.0), (2, 2.0), (3, 5.0)] {
        let p = weight / 8.0;
        let expected = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        let got = counts[point] as f64;
        assert!(
            (got - expected).abs() < 4.0 * sigma,
            "point {point}: {got} draws, expected {expected} ± {sigma}"
        );
    }
}

#[test]
fn per_example_points_follow_their_weights_and_cover_the_batch() {
    let config = MixConfig {
        per_example: true,
        ..manifold(vec![0, 2, 3], vec![1.0, 2.0, 5.0])
    };
    let mut rng = ChaCha12Rng::seed_from_u64(13);
    let (batch, plans) = (64, 1_000);
    let mut counts = [0f64; 5];
    for _ in 0..plans {
        let plan = draw(&config, &mut rng, batch).unwrap();
        let points = plan.points();
        assert!(points.windows(2).all(|w| w[0] < w[1]), "forward order");
        for row in 0..batch {
            let homes: Vec<usize> = plan
                .mixes
                .iter()
                .filter(|m| m.draws.of(row).is_some())
                .map(|m| m.point)
                .collect();
            assert_eq!(homes.len(), 1, "each example is mixed at exactly one point");
            counts[homes[0]] += 1.0;
        }
    }
    let n = (batch * plans) as f64;
    for (point, weight) in [(0, 1.0), (2, 2.0), (3, 5.0)] {
        let p: f64 = weight / 8.0;
        let sigma = (n * p * (1.0 - p)).sqrt();
        assert!((counts[point] - n * p).abs() < 4.0 * sigma, "{counts:?}");
    }
}

#[test]
fn uniform_layer_draws_pass_chi_square() {
    let config = manifold(vec![0, 1, 2], vec![]);
    let mut rng = ChaCha12Rng::seed_from_u64(11);
    let n = 30_000;
    let mut counts = [0f64; 3];
    for _ in 0..n {
        counts[single(&draw(&config, &mut rng, 2).unwrap()).1] += 1.0;
    }
    let expected = n as f64 / 3.0;
    let chi2: f64 = counts
        .iter()
        .map(|c| (c - expected).powi(2) / expected)
        .sum();
    // 99.9th percentile of chi-square with 2 degrees of freedom.
    assert!(chi2 < 13.82, "chi-square {chi2} for counts {counts:?}");
}

#[test]
fn permutations_are_permutations_for_any_batch_size() {
    let config = manifold(vec![0, 1], vec![]);
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    for batch in [1, 2, 3, 7, 128] {
        let plan = draw(&config, &mut rng, batch).unwrap();
        let mut sorted = plan.permutation.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..batch).collect::<Vec<_>>());
    }
}

#[test]
fn permutation_is_uniform_over_positions() {
    let config = manifold(vec![0], vec![]);
    let mut rng = ChaCha12Rng::seed_from_u64(9);
    let n = 30_000;
    let mut first_partner = [0f64; 3];
    for _ in 0..n {
        first_partner[draw(&config, &mut rng, 3).unwrap().permutation[0]] += 1.0;
    }
    let expected = n as f64 / 3.0;
    let chi2: f64 = first_partner
        .iter()
        .map(|c| (c - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < 13.82, "chi-square {chi2}");
}

#[test]
fn same_seed_same_plans() {
    let config = MixConfig {
        per_example: true,
        apply_prob: 0.7,
        switch: Some(Switch {
            mode: MixMode::Patchup,
            prob: 0.5,
            alpha: 1.0,
        }),
        ..manifold(vec![0, 1, 2], vec![])
    };
    let plans = |seed| {
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        (0..20)
            .map(|_| draw(&config, &mut rng, 9))
            .collect::<Vec<_>>()
    };
    assert_eq!(plans(42), plans(42));
    assert_ne!(plans(42), plans(43));
}

#[test]
fn the_batch_draw_order_is_lambda_then_point_then_permutation() {
    // Runs saved before the mixup family existed resume into the same plans.
    let config = manifold(vec![0, 1, 2], vec![]);
    let mut rng = ChaCha12Rng::seed_from_u64(21);
    let plan = draw(&config, &mut rng, 6).unwrap();
    let mut by_hand = ChaCha12Rng::seed_from_u64(21);
    let lambda = sample_lambda(&mut by_hand, 2.0);
    let point = [0, 1, 2][by_hand.random_range(0..3)];
    let mut permutation: Vec<usize> = (0..6).collect();
    permutation.shuffle(&mut by_hand);
    assert_eq!(plan, MixPlan::interpolate(lambda, point, permutation));
}

#[test]
fn modes_choose_their_points_and_operations() {
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    let mut config = manifold(vec![2], vec![]);
    assert_eq!(single(&draw(&config, &mut rng, 4).unwrap()).1, 2);
    for (mode, point) in [
        (MixMode::Input, 0),
        (MixMode::Cutmix, 0),
        (MixMode::Output, OUTPUT_POINT),
        (MixMode::Patchup, 2),
    ] {
        config.mode = mode;
        let plan = draw(&config, &mut rng, 4).unwrap();
        assert_eq!(single(&plan).1, point, "{mode}");
        let op = plan.mixes[0].op;
        match mode {
            MixMode::Cutmix => {
                assert_eq!(op, MixOp::CutMix);
                let centre = plan.mixes[0].draws.of(0).unwrap().centre.unwrap();
                assert!((0.0..1.0).contains(&centre.0) && (0.0..1.0).contains(&centre.1));
            }
            MixMode::Patchup => assert!(matches!(op, MixOp::PatchUp { .. })),
            _ => assert_eq!(op, MixOp::Interpolate),
        }
    }
    config.mode = MixMode::None;
    assert!(draw(&config, &mut rng, 4).is_none());
}

#[test]
fn apply_probability_zero_draws_nothing_and_others_mix_their_share() {
    let config = |p| MixConfig {
        apply_prob: p,
        ..manifold(vec![0, 1], vec![])
    };
    let mut rng = ChaCha12Rng::seed_from_u64(17);
    let before = rng.clone();
    for _ in 0..100 {
        assert!(draw(&config(0.0), &mut rng, 8).is_none());
    }
    assert_eq!(
        rng, before,
        "probability 0 leaves the stream as a run without mixing"
    );
    let n = 20_000;
    let mixed = (0..n)
        .filter(|_| draw(&config(0.3), &mut rng, 2).is_some())
        .count() as f64;
    let sigma = (n as f64 * 0.3 * 0.7).sqrt();
    assert!((mixed - 0.3 * n as f64).abs() < 4.0 * sigma, "{mixed}");
}

#[test]
fn the_switch_uses_its_mode_and_alpha_on_its_share_of_batches() {
    let config = MixConfig {
        switch: Some(Switch {
            mode: MixMode::Cutmix,
            prob: 0.25,
            alpha: 0.0,
        }),
        ..manifold(vec![1, 2], vec![])
    };
    let mut rng = ChaCha12Rng::seed_from_u64(19);
    let n = 20_000;
    let mut switched = 0.0;
    for _ in 0..n {
        let plan = draw(&config, &mut rng, 4).unwrap();
        let (lambda, point) = single(&plan);
        if plan.mixes[0].op == MixOp::CutMix {
            switched += 1.0;
            assert_eq!(
                (lambda, point),
                (1.0, 0),
                "the switch's own α (0) and point"
            );
        } else {
            assert!(point == 1 || point == 2);
        }
    }
    let sigma = (n as f64 * 0.25 * 0.75).sqrt();
    assert!(
        (switched - 0.25 * n as f64).abs() < 4.0 * sigma,
        "{switched}"
    );
}

#[test]
fn the_schedule_turns_mixing_off_and_scales_alpha() {
    let off = MixConfig {
        schedule: AlphaSchedule::OffLast { epochs: 2 },
        ..manifold(vec![1], vec![])
    };
    let mut rng = ChaCha12Rng::seed_from_u64(23);
    assert!(off.draw(&mut rng, 4, 2, 5).is_some());
    let before = rng.clone();
    assert!(off.draw(&mut rng, 4, 3, 5).is_none());
    assert!(off.draw(&mut rng, 4, 4, 5).is_none());
    assert_eq!(rng, before);
    // A ramp's first epoch draws from Beta(α/E, α/E): λ piles up near 0 and 1.
    let ramp = MixConfig {
        schedule: AlphaSchedule::Ramp { epochs: 20 },
        ..manifold(vec![1], vec![])
    };
    let mut extreme = |epoch| {
        (0..4_000)
            .filter(|_| {
                let (lambda, _) = single(&ramp.draw(&mut rng, 2, epoch, 20).unwrap());
                !(0.05..0.95).contains(&lambda)
            })
            .count()
    };
    let (first, last) = (extreme(0), extreme(19));
    assert!(first > 2 * last, "first epoch {first}, last {last}");
}

#[test]
fn validation_names_the_problem() {
    let points = model_points();
    let last = points.len() - 1;
    assert_eq!(
        manifold(vec![0, 7], vec![]).validate(&points, 1),
        Err(MixupError::UnknownMixPoint { point: 7, last })
    );
    assert_eq!(
        manifold(vec![], vec![]).validate(&points, 1),
        Err(MixupError::NoMixPoints)
    );
    assert_eq!(
        manifold(vec![0, 1], vec![1.0]).validate(&points, 1),
        Err(MixupError::WeightCount {
            weights: 1,
            points: 2
        })
    );
    assert_eq!(
        manifold(vec![0, 1], vec![0.0, 0.0]).validate(&points, 1),
        Err(MixupError::BadWeights)
    );
    // Each finite, their sum not: drawing a point would fail in the first epoch.
    assert_eq!(
        manifold(vec![0, 1], vec![1e308, 1e308]).validate(&points, 1),
        Err(MixupError::BadWeights)
    );
    let mut config = manifold(vec![0], vec![]);
    for alpha in [f64::NAN, f64::INFINITY, -1.0] {
        config.alpha = alpha;
        assert!(matches!(
            config.validate(&points, 1),
            Err(MixupError::BadAlpha(_))
        ));
    }
    config.alpha = 0.0;
    assert_eq!(config.validate(&points, 1), Ok(()));
}

#[test]
fn new_options_are_validated() {
    let points = model_points();
    let patchup = |mix_points| MixConfig::new(MixMode::Patchup, 2.0, mix_points);
    assert!(matches!(
        patchup(vec![1, 5]).validate(&points, 1),
        Err(MixupError::NotAMap { point: 5, .. })
    ));
    assert_eq!(patchup(vec![1, 4]).validate(&points, 1), Ok(()));
    let flat_input = MixPoint::list(&[("input", Vector), ("hidden", Vector)]);
    assert!(matches!(
        MixConfig::new(MixMode::Cutmix, 1.0, vec![]).validate(&flat_input, 1),
        Err(MixupError::NotAMap { point: 0, .. })
    ));
    for p in [-0.1, 1.5, f64::NAN] {
        let config = MixConfig {
            apply_prob: p,
            ..manifold(vec![1], vec![])
        };
        assert!(matches!(
            config.validate(&points, 1),
            Err(MixupError::BadProbability { .. })
        ));
    }
    let switch = |mode, prob| MixConfig {
        switch: Some(Switch {
            mode,
            prob,
            alpha: 1.0,
        }),
        ..manifold(vec![1], vec![])
    };
    assert!(switch(MixMode::Cutmix, 0.5).validate(&points, 1).is_ok());
    for bad in [
        switch(MixMode::None, 0.5),
        switch(MixMode::Manifold, 0.5),
        switch(MixMode::Cutmix, 2.0),
    ] {
        assert!(bad.validate(&points, 1).is_err(), "{bad:?}");
    }
    let scheduled = |schedule| MixConfig {
        schedule,
        ..manifold(vec![1], vec![])
    };
    assert!(
        scheduled(AlphaSchedule::Ramp { epochs: 10 })
            .validate(&points, 10)
            .is_ok()
    );
    assert!(matches!(
        scheduled(AlphaSchedule::OffLast { epochs: 11 }).validate(&points, 10),
        Err(MixupError::ScheduleTooLong { .. })
    ));
    for block in [0, 4] {
        let mut config = patchup(vec![1]);
        config.patchup.block = block;
        assert_eq!(
            config.validate(&points, 1),
            Err(MixupError::BadBlock(block))
        );
    }
    let none = MixConfig {
        per_example: true,
        ..MixConfig::new(MixMode::None, 0.0, vec![])
    };
    assert_eq!(
        none.validate(&points, 1),
        Err(MixupError::PerExampleWithoutMixing)
    );
}
