//! Post-hoc calibration: one temperature T fitted on the validation split by NLL (Guo et al.,
//! 2017), then the test split's NLL and ECE at logits / T. Mixing can leave a model looking
//! calibrated before scaling and less calibratable after it (Wang et al., CVPR 2023): both
//! are reported, never one for the other.

use serde::{Deserialize, Serialize};

use super::{Metrics, MetricsAccumulator};

/// A split's logits (row-major) and labels.
#[derive(Clone, Debug, Default)]
pub struct Logits {
    /// Logits, `[examples, classes]` row-major.
    pub values: Vec<f32>,
    /// The class of each example.
    pub labels: Vec<usize>,
}

impl Logits {
    /// The metrics of these logits, with their reliability bins.
    pub fn accumulated(&self) -> MetricsAccumulator {
        let mut accumulator = MetricsAccumulator::default();
        accumulator.add(&self.values, &self.labels);
        accumulator
    }

    /// The metrics of `logits / temperature`.
    pub fn metrics_at(&self, temperature: f64) -> Metrics {
        let mut accumulator = MetricsAccumulator::default();
        accumulator.add(&self.scaled(temperature), &self.labels);
        accumulator.finish()
    }

    fn scaled(&self, temperature: f64) -> Vec<f32> {
        let inverse = (1.0 / temperature) as f32;
        self.values.iter().map(|z| z * inverse).collect()
    }

    /// The mean NLL of `logits / temperature`, in f64 throughout.
    fn nll_at(&self, temperature: f64) -> f64 {
        self.metrics_at(temperature).nll
    }
}

/// The temperature fitted on the validation split, and what it does to the test split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemperatureScaled {
    /// The fitted temperature T: logits are divided by it.
    pub temperature: f64,
    /// Validation NLL before scaling.
    pub valid_nll_before: f64,
    /// Validation NLL at T.
    pub valid_nll_after: f64,
    /// The test split at logits / T (accuracy is unchanged: the order of logits is).
    pub test: Metrics,
}

/// The bounds searched: a hundredfold sharper or flatter is beyond any trained network.
const LOWEST: f64 = 0.01;
const HIGHEST: f64 = 100.0;

/// The temperature minimising `valid`'s NLL. The NLL is convex in the inverse temperature,
/// so a golden-section search over it (on a log scale) finds the one minimum.
pub fn fit_temperature(valid: &Logits) -> f64 {
    let golden = (5f64.sqrt() - 1.0) / 2.0;
    let nll = |log_inverse: f64| valid.nll_at((-log_inverse).exp());
    let (mut low, mut high) = ((1.0 / HIGHEST).ln(), (1.0 / LOWEST).ln());
    let mut a = high - golden * (high - low);
    let mut b = low + golden * (high - low);
    let (mut fa, mut fb) = (nll(a), nll(b));
    for _ in 0..60 {
        if fa <= fb {
            high = b;
            (b, fb) = (a, fa);
            a = high - golden * (high - low);
            fa = nll(a);
        } else {
            low = a;
            (a, fa) = (b, fb);
            b = low + golden * (high - low);
            fb = nll(b);
        }
    }
    (-(low + high) / 2.0).exp()
}

/// Fits T on `valid` and measures `test` with it.
pub fn temperature_scale(valid: &Logits, test: &Logits) -> TemperatureScaled {
    let temperature = fit_temperature(valid);
    TemperatureScaled {
        temperature,
        valid_nll_before: valid.nll_at(1.0),
        valid_nll_after: valid.nll_at(temperature),
        test: test.metrics_at(temperature),
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    use super::*;

    /// Logits of a calibrated model times `sharpness`: labels are drawn from the softmax of
    /// the unscaled logits, so T = `sharpness` restores calibration.
    fn sampled(sharpness: f32, rows: usize, rng: &mut ChaCha12Rng) -> Logits {
        let classes = 5;
        let mut logits = Logits::default();
        for _ in 0..rows {
            let row: Vec<f32> = (0..classes).map(|_| rng.random_range(-2.0..2.0)).collect();
            let total: f32 = row.iter().map(|z| z.exp()).sum();
            let mut u = rng.random_range(0.0..total);
            let label = row
                .iter()
                .position(|z| {
                    u -= z.exp();
                    u <= 0.0
                })
                .unwrap_or(classes - 1);
            logits.values.extend(row.iter().map(|z| z * sharpness));
            logits.labels.push(label);
        }
        logits
    }

    #[test]
    fn an_over_confident_model_is_fitted_a_temperature_above_one_that_lowers_its_nll() {
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        let valid = sampled(4.0, 4000, &mut rng);
        let test = sampled(4.0, 4000, &mut rng);
        let scaled = temperature_scale(&valid, &test);
        assert!(
            (scaled.temperature - 4.0).abs() < 0.4,
            "{}",
            scaled.temperature
        );
        assert!(scaled.valid_nll_after < scaled.valid_nll_before);
        let before = test.metrics_at(1.0);
        assert!(scaled.test.nll < before.nll, "{scaled:?} {before:?}");
        assert!(scaled.test.ece < before.ece);
        assert_eq!(scaled.test.accuracy, before.accuracy);
        // An under-confident one is sharpened.
        let flat = sampled(0.5, 4000, &mut rng);
        assert!(fit_temperature(&flat) < 1.0);
    }
}
