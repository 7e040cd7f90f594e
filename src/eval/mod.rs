//! Evaluation: accuracy, NLL and expected calibration error computed from logits on the host;
//! and the paper's other measures: white-box attacks ([`attack`]), novel deformations
//! ([`deform`]), reliability diagrams, and the spectrum of hidden representations
//! ([`spectrum`]), run together by [`suite`].

pub mod attack;
pub mod calibration;
pub mod deform;
pub mod spectrum;
pub mod suite;

use serde::{Deserialize, Serialize};

pub use attack::{Attack, AttackTarget, robust_accuracy};
pub use calibration::{Logits, TemperatureScaled, temperature_scale};
pub use deform::Deformation;
pub use spectrum::{Spectrum, class_spectrum};
pub use suite::{EvalSuite, Evaluation, run_suite};

// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error("bad attack '{spec}': {reason}")]
    BadAttack { spec: String, reason: String },
    #[error("bad deformation '{spec}': {reason}")]
    BadDeformation { spec: String, reason: String },
    #[error("mix point {point} does not exist: this model's mix points are 0..={last}")]
    SpectrumPoint { point: usize, last: usize },
    #[error("{what} must be at least 1: a measure over no examples would be empty")]
    NoExamples { what: &'static str },
}

/// Bins of the expected calibration error, as in Guo et al. (2017).
pub const ECE_BINS: usize = 15;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
/// What a split measures.
pub struct Metrics {
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Mean negative log-likelihood of the true class.
    pub nll: f64,
    /// Expected calibration error over [`ECE_BINS`] confidence bins.
    pub ece: f64,
    /// Examples measured.
    pub count: usize,
}

/// One confidence bin of a reliability diagram; `confidence` and `accuracy` are 0 when empty.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower confidence bound of the bin.
    pub lower: f64,
    /// Upper confidence bound of the bin.
    pub upper: f64,
    /// Mean confidence of the examples in the bin.
    pub confidence: f64,
    /// Fraction of them classified correctly.
    pub accuracy: f64,
    /// Examples in the bin.
    pub count: usize,
}

/// The predicted class of one row of logits; ties go to the lower class index.
pub fn predicted_class(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(class, _)| class)
}

/// Accumulates predictions batch by batch.
#[derive(Clone, Debug)]
pub struct MetricsAccumulator {
    correct: usize,
    nll_sum: f64,
    count: usize,
    bin_confidence: [f64; ECE_BINS],
    bin_correct: [usize; ECE_BINS],
    bin_count: [usize; ECE_BINS],
}

impl Default for MetricsAccumulator {
    fn default() -> Self {
        Self {
            correct: 0,
            nll_sum: 0.0,
            count: 0,
            bin_confidence: [0.0; ECE_BINS],
            bin_correct: [0; ECE_BINS],
            bin_count: [0; ECE_BINS],
        }
    }
}

impl MetricsAccumulator {
    /// Adds a batch of row-major `logits` (`labels.len()` rows) and their labels.
    pub fn add(&mut self, logits: &[f32], labels: &[usize]) {
        let classes = logits.len() / labels.len().max(1);
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&z| (z as f64 - max).exp()).sum();
            let log_sum = max + sum.ln();
            let predicted = predicted_class(row);
            let confidence = (row[predicted] as f64 - log_sum).exp();
            let hit = predicted == label;
            self.correct += hit as usize;
            self.nll_sum += log_sum - row[label] as f64;
            self.count += 1;
            let bin = ((confidence * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
            self.bin_confidence[bin] += confidence;
            self.bin_correct[bin] += hit as usize;
            self.bin_count[bin] += 1;
        }
    }

    /// The reliability diagram's bins: mean confidence against accuracy, with counts.
    pub fn reliability(&self) -> Vec<ReliabilityBin> {
        (0..ECE_BINS)
            .map(|b| {
                let count = self.bin_count[b];
                let n = count.max(1) as f64;
                ReliabilityBin {
                    lower: b as f64 / ECE_BINS as f64,
                    upper: (b + 1) as f64 / ECE_BINS as f64,
                    confidence: self.bin_confidence[b] / n,
                    accuracy: self.bin_correct[b] as f64 / n,
                    count,
                }
            })
            .collect()
    }

    /// The accumulated sums as numbers that add up across parts of a set (counts stay exact
    /// below 2⁵³); [`MetricsAccumulator::from_sums`] reads the sum of several back.
    pub fn to_sums(&self) -> Vec<f64> {
        let mut sums = vec![self.correct as f64, self.nll_sum, self.count as f64];
        sums.extend_from_slice(&self.bin_confidence);
        sums.extend(self.bin_correct.iter().map(|&c| c as f64));
        sums.extend(self.bin_count.iter().map(|&c| c as f64));
        sums
    }

    /// The accumulator whose [`Self::to_sums`] gave `sums` (summed over ranks).
    pub fn from_sums(sums: &[f64]) -> Self {
        let bins = |k: usize| &sums[3 + k * ECE_BINS..3 + (k + 1) * ECE_BINS];
        let counts = |k: usize| std::array::from_fn(|b| bins(k)[b] as usize);
        Self {
            correct: sums[0] as usize,
            nll_sum: sums[1],
            count: sums[2] as usize,
            bin_confidence: std::array::from_fn(|b| bins(0)[b]),
            bin_correct: counts(1),
            bin_count: counts(2),
        }
    }

    /// The metrics of everything accumulated.
    pub fn finish(&self) -> Metrics {
        let n = self.count.max(1) as f64;
        let ece = (0..ECE_BINS)
            .filter(|&b| self.bin_count[b] > 0)
            .map(|b| {
                let count = self.bin_count[b] as f64;
                let gap = self.bin_correct[b] as f64 / count - self.bin_confidence[b] / count;
                gap.abs() * count / n
            })
            .sum();
        Metrics {
            accuracy: self.correct as f64 / n,
            nll: self.nll_sum / n,
            ece,
            count: self.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_nll_and_ece_match_hand_computation() {
        let mut acc = MetricsAccumulator::default();
        // Row 0: p = (0.75, 0.25), correct. Row 1: uniform over 2, label 1: argmax ties go to
        // the first class, so it is wrong with confidence 0.5.
        acc.add(&[(3f32).ln(), 0.0, 0.0, 0.0], &[0, 1]);
        let m = acc.finish();
        assert_eq!(m.count, 2);
        assert!((m.accuracy - 0.5).abs() < 1e-12);
        let nll = (-(0.75f64).ln() - (0.5f64).ln()) / 2.0;
        assert!((m.nll - nll).abs() < 1e-6, "{} vs {nll}", m.nll);
        // Bins: 0.75 → bin 11 (accuracy 1), 0.5 → bin 7 (accuracy 0).
        let ece = 0.5 * (1.0 - 0.75) + 0.5 * 0.5;
        assert!((m.ece - ece).abs() < 1e-6, "{} vs {ece}", m.ece);
        let bins = acc.reliability();
        assert_eq!(bins.len(), ECE_BINS);
        assert_eq!((bins[11].count, bins[11].accuracy), (1, 1.0));
        assert!((bins[11].confidence - 0.75).abs() < 1e-6);
        assert_eq!((bins[7].count, bins[7].accuracy), (1, 0.0));
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 2);
    }

    #[test]
    fn sums_of_parts_give_the_whole_sets_metrics() {
        let logits = [2.0f32, 0.5, -1.0, 0.3, 0.1, 0.0, 1.5, 1.4, 3.0, -2.0];
        let labels = [0, 1, 0, 1, 0];
        let mut whole = MetricsAccumulator::default();
        whole.add(&logits, &labels);
        let (mut first, mut second) =
            (MetricsAccumulator::default(), MetricsAccumulator::default());
        first.add(&logits[..4], &labels[..2]);
        second.add(&logits[4..], &labels[2..]);
        let sums: Vec<f64> = first
            .to_sums()
            .iter()
            .zip(second.to_sums())
            .map(|(a, b)| a + b)
            .collect();
        let (joined, whole) = (MetricsAccumulator::from_sums(&sums), whole);
        let (a, b) = (joined.finish(), whole.finish());
        assert_eq!((a.accuracy, a.count), (b.accuracy, b.count));
        // Float sums in another order: equal to rounding.
        assert!((a.nll - b.nll).abs() < 1e-12 && (a.ece - b.ece).abs() < 1e-12);
        let counts = |acc: &MetricsAccumulator| -> Vec<usize> {
            acc.reliability().iter().map(|bin| bin.count).collect()
        };
        assert_eq!(counts(&joined), counts(&whole));
        assert!(a.count == 5 && a.accuracy > 0.0 && a.accuracy < 1.0);
    }

    #[test]
    fn perfectly_confident_and_right_is_calibrated() {
        let mut acc = MetricsAccumulator::default();
        acc.add(&[50.0, 0.0, 0.0, 50.0], &[0, 1]);
        let m = acc.finish();
        assert_eq!(m.accuracy, 1.0);
        assert!(m.ece < 1e-6 && m.nll < 1e-6);
    }
}
