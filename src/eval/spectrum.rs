//! How many directions the class-conditional hidden representations spread over (Section 3 of
//! the paper: Manifold Mixup flattens them). At one mix point, for each class, the singular
//! values of its test examples' centred representations; summarised by the effective number
//! of directions (participation ratio) and how many directions carry 90% of the variance.

use burn::tensor::{Device, Tensor, TensorData};
use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use super::suite::images_tensor;
use crate::data::{ImageSet, Normalization, make_batch};
use crate::mixup::Mixable;
use crate::mixup::TensorMix;

/// Singular values kept per class in reports (normalised by the largest).
pub(crate) const KEPT_VALUES: usize = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// The singular values of a mix point's features over test examples.
pub struct Spectrum {
    /// The mix point measured.
    pub point: usize,
    /// Examples per class the spectrum was computed on (the first ones of each class).
    pub examples_per_class: usize,
    /// Features per example at that point.
    pub features: usize,
    /// Mean over classes of `(Σσ²)² / Σσ⁴`: the number of equally strong directions that
    /// would hold the same variance.
    pub effective_directions: f64,
    /// Mean over classes of the number of leading directions that hold 90% of the variance.
    pub directions_90: f64,
    /// Mean over classes of σ_i / σ_1, for the first `KEPT_VALUES` directions.
    pub normalized_values: Vec<f64>,
}

/// Descending singular values of `rows` (`n × d`, row-major) after subtracting their mean.
#[allow(clippy::expect_used, reason = "cannot fail: a float matrix")]
pub(crate) fn centred_singular_values(
    rows: &[f32],
    n: usize,
    d: usize,
    device: &Device,
) -> Vec<f64> {
    if n < 2 || d == 0 {
        return Vec::new();
    }
    let h = Tensor::<2>::from_data(TensorData::new(rows.to_vec(), [n, d]), device);
    let h = h.clone() - h.mean_dim(0);
    // The smaller Gram matrix has the same non-zero eigenvalues σ².
    let gram = if n <= d {
        h.clone().matmul(h.transpose())
    } else {
        h.clone().transpose().matmul(h)
    };
    let m = n.min(d);
    let values: Vec<f64> = gram
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("a float matrix");
    let eigen = SymmetricEigen::new(DMatrix::from_row_slice(m, m, &values));
    let mut sigma: Vec<f64> = eigen
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .collect();
    sigma.sort_by(|a, b| b.total_cmp(a));
    sigma
}

/// `(Σσ²)² / Σσ⁴` and the count of leading directions holding 90% of Σσ².
pub(crate) fn spread(sigma: &[f64]) -> (f64, usize) {
    let variances: Vec<f64> = sigma.iter().map(|s| s * s).collect();
    let total: f64 = variances.iter().sum();
    let squares: f64 = variances.iter().map(|v| v * v).sum();
    if total <= 0.0 {
        return (0.0, 0);
    }
    let mut cumulative = 0.0;
    let count = variances
        .iter()
        .take_while(|&&v| {
            let below = cumulative < 0.9 * total;
            cumulative += v;
            below
        })
        .count();
    (total * total / squares, count)
}

/// The spectrum of the representations at mix point `point` of `model` (evaluation mode) over
/// the first `per_class` examples of each class of `set`.
#[allow(
    clippy::expect_used,
    reason = "cannot fail: every model passes each mix point; hidden states are f32"
)]
pub fn class_spectrum<M: Mixable>(
    model: &M,
    set: &ImageSet,
    normalization: &Normalization,
    point: usize,
    per_class: usize,
    batch_size: usize,
    device: &Device,
) -> Spectrum {
    let model = model.valid();
    let classes = set.labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut chosen: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (index, &label) in set.labels.iter().enumerate() {
        if chosen[label].len() < per_class {
            chosen[label].push(index);
        }
    }
    let probe = TensorMix::probe(point);
    let mut rows: Vec<Vec<f32>> = vec![Vec::new(); classes];
    let mut features = 0;
    for (class, members) in chosen.iter().enumerate() {
        for chunk in members.chunks(batch_size.max(1)) {
            let mut batch = make_batch::<rand_chacha::ChaCha12Rng>(set, chunk, normalization, None);
            let _ = model.forward_mixed(images_tensor(&mut batch, device), Some(&probe));
            let hidden = probe.recorded().expect("every model passes each mix point");
            features = hidden.dims()[1];
            let values = hidden
                .into_data()
                .try_into_vec::<f32>()
                .expect("hidden states are f32");
            rows[class].extend(values);
        }
    }
    let mut effective = Vec::new();
    let mut directions = Vec::new();
    let mut normalized = vec![0.0; KEPT_VALUES];
    let mut counted = 0usize;
    for (class, members) in chosen.iter().enumerate() {
        let sigma = centred_singular_values(&rows[class], members.len(), features, device);
        let Some(&largest) = sigma.first().filter(|&&s| s > 0.0) else {
            continue;
        };
        let (ratio, count) = spread(&sigma);
        effective.push(ratio);
        directions.push(count as f64);
        for (slot, s) in normalized.iter_mut().zip(&sigma) {
            *slot += s / largest;
        }
        counted += 1;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    normalized
        .iter_mut()
        .for_each(|v| *v /= counted.max(1) as f64);
    Spectrum {
        point,
        examples_per_class: per_class,
        features,
        effective_directions: mean(&effective),
        directions_90: mean(&directions),
        normalized_values: normalized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singular_values_of_a_known_matrix() {
        let device = Device::flex();
        // Rows spread along two orthogonal directions with scales 3 and 1, around a mean that
        // centring must remove.
        let rows = [
            [3.0, 0.0, 0.0],
            [-3.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, -1.0, 0.0],
        ];
        let flat: Vec<f32> = rows
            .iter()
            .flat_map(|r| r.iter().map(|v| v + 5.0))
            .collect();
        let sigma = centred_singular_values(&flat, 4, 3, &device);
        assert!((sigma[0] - 18f64.sqrt()).abs() < 1e-4, "{sigma:?}");
        assert!((sigma[1] - 2f64.sqrt()).abs() < 1e-4, "{sigma:?}");
        assert!(sigma[2].abs() < 1e-3, "{sigma:?}");
        // Variances 18 and 2: (20)² / (324 + 4) effective directions; one holds 90%.
        let (ratio, count) = spread(&sigma);
        assert!((ratio - 400.0 / 328.0).abs() < 1e-3, "{ratio}");
        assert_eq!(count, 1);
        assert_eq!(spread(&[1.0, 1.0, 1.0, 1.0]), (4.0, 4));
    }
}
