use super::MixPlan;

/// Row-major `[labels.len(), classes]` targets: `λ·onehot(y) + (1−λ)·onehot(y[perm])`,
/// then label smoothing `(1−ε)·t + ε/classes`. Without a plan, smoothed one-hot targets.
pub fn soft_targets(
    labels: &[usize],
    plan: Option<&MixPlan>,
    classes: usize,
    smoothing: f64,
) -> Vec<f32> {
    let mut targets = vec![0f64; labels.len() * classes];
    for (i, &label) in labels.iter().enumerate() {
        let row = &mut targets[i * classes..(i + 1) * classes];
        match plan {
            Some(plan) => {
                row[label] += plan.lambda;
                row[labels[plan.permutation[i]]] += 1.0 - plan.lambda;
            }
            None => row[label] = 1.0,
        }
    }
    let uniform = smoothing / classes as f64;
    targets
        .into_iter()
        .map(|t| ((1.0 - smoothing) * t + uniform) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_match_hand_computation() {
        let plan = MixPlan {
            lambda: 0.3,
            layer: 0,
            permutation: vec![1, 0, 2],
        };
        let targets = soft_targets(&[0, 2, 2], Some(&plan), 3, 0.0);
        let expected = [
            0.3, 0.0, 0.7, // label 0 mixed with example 1 (label 2)
            0.7, 0.0, 0.3, // label 2 mixed with example 0 (label 0)
            0.0, 0.0, 1.0, // paired with itself: both terms on label 2
        ];
        for (got, want) in targets.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{targets:?}");
        }
        for row in targets.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn smoothing_keeps_rows_normalised() {
        let plan = MixPlan {
            lambda: 0.6,
            layer: 1,
            permutation: vec![1, 0],
        };
        let targets = soft_targets(&[0, 3], Some(&plan), 4, 0.1);
        assert!((targets[0] - (0.9 * 0.6 + 0.025) as f32).abs() < 1e-6);
        assert!((targets[1] - 0.025).abs() < 1e-6);
        for row in targets.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let plain = soft_targets(&[1], None, 4, 0.0);
        assert_eq!(plain, vec![0.0, 1.0, 0.0, 0.0]);
    }
}
