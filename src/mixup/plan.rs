use rand::Rng;
use rand::distr::weighted::WeightedIndex;
use rand::seq::SliceRandom;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

/// Where mixing happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MixMode {
    /// Plain training on one-hot targets.
    None,
    /// Mixup of the inputs (mix point 0 only).
    Input,
    /// Manifold Mixup: a mix point drawn per batch from an eligible set.
    Manifold,
}

impl std::fmt::Display for MixMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MixMode::None => "none",
            MixMode::Input => "input",
            MixMode::Manifold => "manifold",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MixupError {
    #[error("alpha must be a finite number ≥ 0 (0 turns mixing off), got {0}")]
    BadAlpha(f64),
    #[error("the eligible mix points are empty")]
    NoMixPoints,
    #[error("mix point {point} does not exist: this model's mix points are 0..={last}")]
    UnknownMixPoint { point: usize, last: usize },
    #[error("{weights} layer weights were given for {points} mix points")]
    WeightCount { weights: usize, points: usize },
    #[error("layer weights must be finite, non-negative and not all zero")]
    BadWeights,
}

/// The technique's parameters, resolved against one model's mix points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixConfig {
    pub mode: MixMode,
    /// λ ~ Beta(α, α); α = 0 means λ = 1 (no mixing), as in the paper's code. A negative α
    /// is refused rather than read as 0: it is a typo more often than a choice.
    pub alpha: f64,
    /// Eligible mix points for [`MixMode::Manifold`] (0 is the input).
    pub mix_points: Vec<usize>,
    /// Relative weights for drawing the mix point; uniform when empty.
    pub layer_weights: Vec<f64>,
}

impl MixConfig {
    /// Checks the configuration against a model with mix points `0..=last_point`.
    pub fn validate(&self, last_point: usize) -> Result<(), MixupError> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(MixupError::BadAlpha(self.alpha));
        }
        if self.mode != MixMode::Manifold {
            return Ok(());
        }
        if self.mix_points.is_empty() {
            return Err(MixupError::NoMixPoints);
        }
        if let Some(&point) = self.mix_points.iter().find(|&&p| p > last_point) {
            return Err(MixupError::UnknownMixPoint {
                point,
                last: last_point,
            });
        }
        if !self.layer_weights.is_empty() {
            if self.layer_weights.len() != self.mix_points.len() {
                return Err(MixupError::WeightCount {
                    weights: self.layer_weights.len(),
                    points: self.mix_points.len(),
                });
            }
            let valid = self
                .layer_weights
                .iter()
                .all(|w| w.is_finite() && *w >= 0.0);
            if !valid || self.layer_weights.iter().sum::<f64>() <= 0.0 {
                return Err(MixupError::BadWeights);
            }
        }
        Ok(())
    }

    /// Draws the choices for one batch, or `None` when this configuration never mixes.
    ///
    /// The draw order (λ, then layer, then permutation) is part of the reproducibility
    /// contract: the same RNG state always yields the same plan.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R, batch_size: usize) -> Option<MixPlan> {
        let layer = match self.mode {
            MixMode::None => return None,
            MixMode::Input => {
                let lambda = sample_lambda(rng, self.alpha);
                (lambda, 0)
            }
            MixMode::Manifold => {
                let lambda = sample_lambda(rng, self.alpha);
                let index = if self.layer_weights.is_empty() {
                    rng.random_range(0..self.mix_points.len())
                } else {
                    WeightedIndex::new(&self.layer_weights)
                        .expect("weights are validated")
                        .sample(rng)
                };
                (lambda, self.mix_points[index])
            }
        };
        let (lambda, layer) = layer;
        let mut permutation: Vec<usize> = (0..batch_size).collect();
        permutation.shuffle(rng);
        Some(MixPlan {
            lambda,
            layer,
            permutation,
        })
    }
}

/// λ ~ Beta(α, α), or exactly 1 when α ≤ 0.
pub fn sample_lambda<R: Rng + ?Sized>(rng: &mut R, alpha: f64) -> f64 {
    if alpha <= 0.0 {
        return 1.0;
    }
    Beta::new(alpha, alpha)
        .expect("a positive finite alpha is a valid Beta parameter")
        .sample(rng)
}

/// Everything random about one mixed batch, as plain values: a step is reproducible from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixPlan {
    /// Weight of each example itself; its partner gets `1 - lambda`.
    pub lambda: f64,
    /// The mix point (0 = input).
    pub layer: usize,
    /// `permutation[i]` is the partner of example `i`.
    pub permutation: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha12Rng;

    fn manifold(points: Vec<usize>, weights: Vec<f64>) -> MixConfig {
        MixConfig {
            mode: MixMode::Manifold,
            alpha: 2.0,
            mix_points: points,
            layer_weights: weights,
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
        config.validate(4).unwrap();
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let n = 80_000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[config.draw(&mut rng, 4).unwrap().layer] += 1;
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
    fn uniform_layer_draws_pass_chi_square() {
        let config = manifold(vec![0, 1, 2], vec![]);
        let mut rng = ChaCha12Rng::seed_from_u64(11);
        let n = 30_000;
        let mut counts = [0f64; 3];
        for _ in 0..n {
            counts[config.draw(&mut rng, 2).unwrap().layer] += 1.0;
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
            let plan = config.draw(&mut rng, batch).unwrap();
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
            first_partner[config.draw(&mut rng, 3).unwrap().permutation[0]] += 1.0;
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
        let config = manifold(vec![0, 1, 2], vec![]);
        let plans = |seed| {
            let mut rng = ChaCha12Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| config.draw(&mut rng, 9))
                .collect::<Vec<_>>()
        };
        assert_eq!(plans(42), plans(42));
        assert_ne!(plans(42), plans(43));
    }

    #[test]
    fn modes_choose_their_layers() {
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        let mut config = manifold(vec![2], vec![]);
        assert_eq!(config.draw(&mut rng, 4).unwrap().layer, 2);
        config.mode = MixMode::Input;
        assert_eq!(config.draw(&mut rng, 4).unwrap().layer, 0);
        config.mode = MixMode::None;
        assert!(config.draw(&mut rng, 4).is_none());
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(
            manifold(vec![0, 7], vec![]).validate(4),
            Err(MixupError::UnknownMixPoint { point: 7, last: 4 })
        );
        assert_eq!(
            manifold(vec![], vec![]).validate(4),
            Err(MixupError::NoMixPoints)
        );
        assert_eq!(
            manifold(vec![0, 1], vec![1.0]).validate(4),
            Err(MixupError::WeightCount {
                weights: 1,
                points: 2
            })
        );
        assert_eq!(
            manifold(vec![0, 1], vec![0.0, 0.0]).validate(4),
            Err(MixupError::BadWeights)
        );
        let mut config = manifold(vec![0], vec![]);
        for alpha in [f64::NAN, f64::INFINITY, -1.0] {
            config.alpha = alpha;
            assert!(matches!(config.validate(4), Err(MixupError::BadAlpha(_))));
        }
        config.alpha = 0.0;
        assert_eq!(config.validate(4), Ok(()));
    }
}
