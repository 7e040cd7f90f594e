/// What one mixed forward pass did, as the targets need it: the partners, and for each mix
/// in forward order each example's target weight (the share of itself it kept: λ, or the
/// area a box or block mix left it).
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedMix {
    /// Each example's partner.
    pub permutation: Vec<usize>,
    /// Per mix, in forward order, each example's target weight.
    pub target_weights: Vec<Vec<f64>>,
}

impl AppliedMix {
    /// One mix with the same weight `lambda` for every example.
    pub fn uniform(lambda: f64, permutation: Vec<usize>) -> Self {
        let weights = vec![lambda; permutation.len()];
        Self {
            permutation,
            target_weights: vec![weights],
        }
    }
}

/// Row-major `[labels.len(), classes]` targets of the mixed examples, unsmoothed.
///
/// Each mix takes `t[i] ← w_i·t[i] + (1−w_i)·t[perm[i]]` from the targets before it, as the
/// hidden states are mixed from the states before it: with one mix this is the paper's
/// `λ·onehot(y) + (1−λ)·onehot(y[perm])`, and with mixes at several points (per-example mix
/// points) an example whose partner was mixed earlier inherits the partner's mixed target.
pub fn mixed_targets(labels: &[usize], applied: Option<&AppliedMix>, classes: usize) -> Vec<f64> {
    let mut targets = vec![0f64; labels.len() * classes];
    for (row, &label) in targets.chunks_exact_mut(classes).zip(labels) {
        row[label] = 1.0;
    }
    match applied {
        Some(applied) => mix_rows(targets, applied, classes),
        None => targets,
    }
}

/// Row-major `rows` of `width` values mixed as the examples were: each mix takes
/// `r[i] ← w_i·r[i] + (1−w_i)·r[perm[i]]` from the rows before it. One-hot rows give
/// [`mixed_targets`]; a teacher's logits give Interpolation Consistency's mixed targets.
pub fn mix_rows(mut rows: Vec<f64>, applied: &AppliedMix, width: usize) -> Vec<f64> {
    for weights in &applied.target_weights {
        let before = rows.clone();
        for (i, row) in rows.chunks_exact_mut(width).enumerate() {
            let (w, partner) = (weights[i], applied.permutation[i]);
            let own = &before[i * width..][..width];
            let theirs = &before[partner * width..][..width];
            for ((r, &a), &b) in row.iter_mut().zip(own).zip(theirs) {
                *r = w * a + (1.0 - w) * b;
            }
        }
    }
    rows
}

/// [`mixed_targets`] with label smoothing `(1−ε)·t + ε/classes`, as the loss takes them.
pub fn soft_targets(
    labels: &[usize],
    applied: Option<&AppliedMix>,
    classes: usize,
    smoothing: f64,
) -> Vec<f32> {
    smooth(&mixed_targets(labels, applied, classes), classes, smoothing)
}

/// Label smoothing `(1−ε)·t + ε/classes` of row-major targets, in the loss's f32.
pub fn smooth(targets: &[f64], classes: usize, smoothing: f64) -> Vec<f32> {
    let uniform = smoothing / classes as f64;
    targets
        .iter()
        .map(|t| ((1.0 - smoothing) * t + uniform) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_match_hand_computation() {
        let applied = AppliedMix::uniform(0.3, vec![1, 0, 2]);
        let targets = soft_targets(&[0, 2, 2], Some(&applied), 3, 0.0);
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
        let applied = AppliedMix::uniform(0.6, vec![1, 0]);
        let targets = soft_targets(&[0, 1], Some(&applied), 4, 0.1);
        for row in targets.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|&t| t >= 0.1 / 4.0 - 1e-7));
        }
        let plain = soft_targets(&[2], None, 4, 0.0);
        assert_eq!(plain, vec![0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn a_later_mix_inherits_its_partners_earlier_mix() {
        // Example 0 mixes with 1 at the first point (w 0.25); then example 2 mixes with 0 at
        // the second (w 0.5), receiving 0's mixed target.
        let applied = AppliedMix {
            permutation: vec![1, 2, 0],
            target_weights: vec![vec![0.25, 1.0, 1.0], vec![1.0, 1.0, 0.5]],
        };
        let targets = mixed_targets(&[0, 1, 2], Some(&applied), 3);
        let expected = [
            0.25, 0.75, 0.0, // first point
            0.0, 1.0, 0.0, // never mixed
            0.125, 0.375, 0.5, // half its own, half of example 0's mixed target
        ];
        for (got, want) in targets.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{targets:?}");
        }
    }
}
