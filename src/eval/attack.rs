//! White-box attacks on a classifier through Burn's autodiff on the input: FGSM and PGD.
//!
//! ε and the step size are in pixel units of the [0, 1] image; the normalisation the model
//! was trained with happens inside the attacked function, so an attack is comparable across
//! runs whatever their statistics. Adversarial images stay in the ε-ball (L∞) around the clean
//! image and in the valid pixel box [0, 1].

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use rand::Rng;
use rand::distr::Distribution;
use serde_with::{DeserializeFromStr, SerializeDisplay};

use super::{EvalError, predicted_class};
use crate::data::{ImageSet, Normalization};
use crate::mixup::Mixable;

/// An attack as named on the command line: `fgsm:EPS` or `pgd:EPS:STEPS[:STEP_SIZE]`.
#[derive(Clone, Copy, Debug, PartialEq, SerializeDisplay, DeserializeFromStr)]
pub enum Attack {
    /// One step of size ε along the sign of the input gradient (Goodfellow et al. 2015).
    Fgsm {
        /// The step, and the radius of the ball.
        epsilon: f64,
    },
    /// `steps` signed-gradient steps of `step_size` from a uniform random start in the ε-ball,
    /// each projected back onto the ball and the pixel box (Madry et al. 2018).
    Pgd {
        /// The radius of the ball.
        epsilon: f64,
        /// Steps taken.
        steps: usize,
        /// The length of each step.
        step_size: f64,
    },
}

impl Attack {
    /// The radius ε of the attack's ball (in pixel units, pixels in [0, 1]).
    pub fn epsilon(&self) -> f64 {
        match *self {
            Attack::Fgsm { epsilon } | Attack::Pgd { epsilon, .. } => epsilon,
        }
    }
}

/// Madry et al.'s rule: 2.5·ε/k lets k steps reach the ball's edge from anywhere in it.
fn default_step_size(epsilon: f64, steps: usize) -> f64 {
    2.5 * epsilon / steps as f64
}

/// The most PGD steps an attack takes: published evaluations use 7 to 100, and every step
/// is a forward and a backward pass over the attacked examples.
const MAX_PGD_STEPS: usize = 1000;

impl FromStr for Attack {
    type Err = EvalError;

    fn from_str(text: &str) -> Result<Self, EvalError> {
        let bad = |reason: &str| EvalError::BadAttack {
            spec: text.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = text.split(':').collect();
        let number = |s: &str, what: &str| -> Result<f64, EvalError> {
            let value: f64 = s
                .trim()
                .parse()
                .map_err(|_| bad(&format!("{what} '{s}' is not a number")))?;
            if !(value.is_finite() && value >= 0.0) {
                return Err(bad(&format!("{what} must be a finite number ≥ 0")));
            }
            Ok(value)
        };
        // Pixels lie in [0, 1]: a larger ε would let the attack replace the image.
        let epsilon = |s: &str| -> Result<f64, EvalError> {
            let value = number(s, "ε")?;
            if value > 1.0 {
                return Err(bad("ε must be in [0, 1] (pixel units)"));
            }
            Ok(value)
        };
        match parts.as_slice() {
            ["fgsm", eps] => Ok(Attack::Fgsm {
                epsilon: epsilon(eps)?,
            }),
            ["pgd", eps, steps, rest @ ..] if rest.len() <= 1 => {
                let epsilon = epsilon(eps)?;
                let steps: usize = steps
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&s| (1..=MAX_PGD_STEPS).contains(&s))
                    .ok_or_else(|| {
                        bad(&format!(
                            "the step count must be an integer from 1 to {MAX_PGD_STEPS}"
                        ))
                    })?;
                let step_size = match rest {
                    [size] => number(size, "step size")?,
                    _ => default_step_size(epsilon, steps),
                };
                Ok(Attack::Pgd {
                    epsilon,
                    steps,
                    step_size,
                })
            }
            _ => Err(bad(
                "expected fgsm:EPS or pgd:EPS:STEPS[:STEP_SIZE], ε in [0, 1] pixel units",
            )),
        }
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attack::Fgsm { epsilon } => write!(f, "fgsm:{epsilon}"),
            Attack::Pgd {
                epsilon,
                steps,
                step_size,
            } if *step_size == default_step_size(*epsilon, *steps) => {
                write!(f, "pgd:{epsilon}:{steps}")
            }
            Attack::Pgd {
                epsilon,
                steps,
                step_size,
            } => write!(f, "pgd:{epsilon}:{steps}:{step_size}"),
        }
    }
}

/// A forward pass from normalised images to logits.
type Logits = Box<dyn Fn(Tensor<4>) -> Tensor<2>>;

/// A model prepared for attacks: an evaluation copy for predictions, and a copy on the
/// autodiff device with its parameters untracked, so its batch norms still use their running
/// statistics (evaluation mode) while gradients reach the input.
pub struct AttackTarget {
    plain: Logits,
    tracked: Logits,
    device: Device,
    mean: Tensor<4>,
    inv_std: Tensor<4>,
}

impl AttackTarget {
    /// `device` is the evaluation (non-autodiff) device.
    pub fn new<M: Mixable + 'static>(
        model: &M,
        normalization: &Normalization,
        device: &Device,
    ) -> Self {
        let plain = model.valid();
        let tracked = plain.clone().train().no_grad();
        Self::from_forward(
            Box::new(move |x| plain.forward_mixed(x, None)),
            Box::new(move |x| tracked.forward_mixed(x, None)),
            normalization,
            device,
        )
    }

    /// Any classifier given as two forward passes: one for predictions and one the input
    /// gradient can flow through (on `device.autodiff()`).
    pub fn from_forward(
        plain: Logits,
        tracked: Logits,
        normalization: &Normalization,
        device: &Device,
    ) -> Self {
        let channels = normalization.mean.len();
        let per_channel = |values: Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(values, [channels]), device)
                .reshape([1, channels, 1, 1])
        };
        Self {
            plain,
            tracked,
            mean: per_channel(normalization.mean.clone()),
            inv_std: per_channel(normalization.std.iter().map(|s| 1.0 / s).collect()),
            device: device.clone(),
        }
    }

    fn normalize(&self, pixels: Tensor<4>) -> Tensor<4> {
        (pixels - self.mean.clone()) * self.inv_std.clone()
    }

    /// Evaluation-mode logits of images in [0, 1] pixel units.
    pub fn logits(&self, pixels: Tensor<4>) -> Tensor<2> {
        (self.plain)(self.normalize(pixels))
    }

    /// The sign of the gradient of the summed cross-entropy with respect to the pixels.
    fn gradient_sign(&self, pixels: Tensor<4>, labels: &Tensor<1, Int>) -> Tensor<4> {
        let dims = pixels.dims();
        let pixels = pixels.autodiff().require_grad();
        let logits = (self.tracked)(self.normalize(pixels.clone()));
        let log_probs = activation::log_softmax(logits, 1);
        let loss = log_probs
            .gather(1, labels.clone().autodiff().unsqueeze_dim(1))
            .sum()
            .neg();
        let grads = loss.backward();
        pixels
            .grad(&grads)
            .map(|g| g.sign())
            .unwrap_or_else(|| Tensor::zeros(dims, &self.device))
    }

    /// The adversarial version of `clean` (pixels in [0, 1]) under `attack`; PGD's random start
    /// is drawn from `rng`.
    #[allow(clippy::expect_used, reason = "cannot fail: a finite ε ≥ 0")]
    pub fn perturb<R: Rng + ?Sized>(
        &self,
        clean: Tensor<4>,
        labels: &[usize],
        attack: Attack,
        rng: &mut R,
    ) -> Tensor<4> {
        let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let count = labels.len();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [count]), &self.device);
        match attack {
            Attack::Fgsm { epsilon } => {
                let step = self.gradient_sign(clean.clone(), &labels);
                (clean + step.mul_scalar(epsilon)).clamp(0.0, 1.0)
            }
            Attack::Pgd {
                epsilon,
                steps,
                step_size,
            } => {
                let low = clean.clone().sub_scalar(epsilon).clamp_min(0.0);
                let high = clean.clone().add_scalar(epsilon).clamp_max(1.0);
                let project = |x: Tensor<4>| x.max_pair(low.clone()).min_pair(high.clone());
                let dims = clean.dims();
                let noise: Vec<f32> = if epsilon > 0.0 {
                    let uniform = rand::distr::Uniform::new_inclusive(-epsilon, epsilon)
                        .expect("a finite ε ≥ 0");
                    (0..clean.shape().num_elements())
                        .map(|_| uniform.sample(rng) as f32)
                        .collect()
                } else {
                    vec![0.0; clean.shape().num_elements()]
                };
                let noise = Tensor::from_data(TensorData::new(noise, dims), &self.device);
                let mut x = project(clean + noise);
                for _ in 0..steps {
                    let step = self.gradient_sign(x.clone(), &labels);
                    x = project(x + step.mul_scalar(step_size));
                }
                x
            }
        }
    }
}

/// The images of `indices` as `[n, c, h, w]` pixels in [0, 1].
pub(crate) fn pixel_batch(set: &ImageSet, indices: &[usize], device: &Device) -> Tensor<4> {
    let mut values = Vec::with_capacity(indices.len() * set.image_len());
    for &i in indices {
        values.extend(set.image(i).iter().map(|&p| p as f32 / 255.0));
    }
    Tensor::from_data(
        TensorData::new(values, [indices.len(), set.channels, set.size, set.size]),
        device,
    )
}

/// Accuracy under `attack` over `set`: an example counts only if it is classified right both
/// clean and attacked, so robust accuracy never exceeds clean accuracy.
pub fn robust_accuracy<R: Rng + ?Sized>(
    target: &AttackTarget,
    set: &ImageSet,
    attack: Attack,
    batch_size: usize,
    rng: &mut R,
) -> f64 {
    let indices: Vec<usize> = (0..set.len()).collect();
    let mut robust = 0usize;
    for chunk in indices.chunks(batch_size.max(1)) {
        let labels: Vec<usize> = chunk.iter().map(|&i| set.labels[i]).collect();
        let clean = pixel_batch(set, chunk, &target.device);
        let clean_right = correct(target.logits(clean.clone()), &labels);
        let attacked = target.perturb(clean, &labels, attack, rng);
        let attacked_right = correct(target.logits(attacked), &labels);
        robust += clean_right
            .iter()
            .zip(&attacked_right)
            .filter(|(a, b)| **a && **b)
            .count();
    }
    robust as f64 / set.len().max(1) as f64
}

#[allow(clippy::expect_used, reason = "cannot fail: logits are f32")]
fn correct(logits: Tensor<2>, labels: &[usize]) -> Vec<bool> {
    let values = logits
        .into_data()
        .try_into_vec::<f32>()
        .expect("logits are f32");
    let classes = values.len() / labels.len().max(1);
    values
        .chunks_exact(classes)
        .zip(labels)
        .map(|(row, &label)| predicted_class(row) == label)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelConfig;
    use rand::SeedableRng;
    use rand_chacha::ChaCha12Rng;

    const SIZE: usize = 4;
    const CLASSES: usize = 3;

    fn identity_normalization() -> Normalization {
        Normalization {
            mean: vec![0.0],
            std: vec![1.0],
        }
    }

    /// Logits `W·x` of a one-channel `SIZE`² image: a linear model.
    fn linear_target(weights: &[f32], device: &Device) -> AttackTarget {
        let make = |device: Device| {
            let w = Tensor::<2>::from_data(
                TensorData::new(weights.to_vec(), [CLASSES, SIZE * SIZE]),
                &device,
            );
            Box::new(move |x: Tensor<4>| {
                let n = x.dims()[0];
                x.reshape([n, SIZE * SIZE]).matmul(w.clone().transpose())
            }) as Logits
        };
        AttackTarget::from_forward(
            make(device.clone()),
            make(device.clone().autodiff()),
            &identity_normalization(),
            device,
        )
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn fgsm_moves_a_linear_models_logits_as_the_gradient_sign_predicts() {
        let device = Device::flex();
        let mut rng = ChaCha12Rng::seed_from_u64(5);
        let weights: Vec<f32> = (0..CLASSES * SIZE * SIZE)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let target = linear_target(&weights, &device);
        let x: Vec<f32> = (0..2 * SIZE * SIZE)
            .map(|_| rng.random_range(0.3..0.7))
            .collect();
        let labels = [0usize, 2];
        let clean = Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 1, SIZE, SIZE]), &device);
        let epsilon = 0.05;
        let attacked = target.perturb(clean.clone(), &labels, Attack::Fgsm { epsilon }, &mut rng);
        let (before, after) = (
            values(target.logits(clean)),
            values(target.logits(attacked)),
        );
        for (row, &label) in labels.iter().enumerate() {
            // ∂(−log p_y)/∂x = Wᵀ(p − e_y) for a linear model.
            let z = &before[row * CLASSES..(row + 1) * CLASSES];
            let max = z.iter().copied().fold(f32::MIN, f32::max);
            let total: f32 = z.iter().map(|v| (v - max).exp()).sum();
            let p: Vec<f32> = z.iter().map(|v| (v - max).exp() / total).collect();
            let sign: Vec<f32> = (0..SIZE * SIZE)
                .map(|j| {
                    let g: f32 = (0..CLASSES)
                        .map(|k| weights[k * SIZE * SIZE + j] * (p[k] - (k == label) as u8 as f32))
                        .sum();
                    g.signum()
                })
                .collect();
            for k in 0..CLASSES {
                let predicted: f32 = (0..SIZE * SIZE)
                    .map(|j| weights[k * SIZE * SIZE + j] * epsilon as f32 * sign[j])
                    .sum();
                let moved = after[row * CLASSES + k] - before[row * CLASSES + k];
                assert!(
                    (moved - predicted).abs() < 1e-4,
                    "row {row} class {k}: {moved} vs {predicted}"
                );
            }
        }
    }

    #[test]
    fn pgd_stays_in_the_epsilon_ball_and_the_pixel_box() {
        let device = Device::flex();
        let mut rng = ChaCha12Rng::seed_from_u64(9);
        let weights: Vec<f32> = (0..CLASSES * SIZE * SIZE)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let target = linear_target(&weights, &device);
        // Pixels at and near both ends of the box, where projection onto it matters.
        let x: Vec<f32> = (0..4 * SIZE * SIZE)
            .map(|i| [0.0, 1.0, 0.02, 0.97, 0.5][i % 5])
            .collect();
        let clean = Tensor::<4>::from_data(TensorData::new(x.clone(), [4, 1, SIZE, SIZE]), &device);
        let epsilon = 0.1;
        let attack = "pgd:0.1:5:0.07".parse().unwrap();
        let attacked = values(target.perturb(clean, &[0, 1, 2, 0], attack, &mut rng));
        let mut moved = 0.0f32;
        for (a, c) in attacked.iter().zip(&x) {
            assert!((0.0..=1.0).contains(a), "{a} outside [0, 1]");
            assert!(
                (a - c).abs() <= epsilon as f32 + 1e-6,
                "{a} is further than ε from {c}"
            );
            moved = moved.max((a - c).abs());
        }
        assert!(moved > 0.05, "the attack did not move the images ({moved})");
    }

    #[test]
    fn attacked_accuracy_never_exceeds_clean_and_epsilon_zero_is_clean() {
        let device = Device::flex();
        let model = ModelConfig::new("small-cnn".parse().unwrap(), 1, 12, 10)
            .with_width(4)
            .init(&device)
            .unwrap();
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        let set = ImageSet {
            pixels: (0..40 * 144).map(|_| rng.random()).collect(),
            labels: (0..40).map(|i| i % 10).collect(),
            channels: 1,
            size: 12,
        };
        let normalization = Normalization {
            mean: vec![0.5],
            std: vec![0.3],
        };
        let target = AttackTarget::new(&model, &normalization, &device);
        let clean = crate::eval::suite::accumulate(&model, &set, &normalization, 16, &device)
            .finish()
            .accuracy;
        let zero = robust_accuracy(&target, &set, Attack::Fgsm { epsilon: 0.0 }, 16, &mut rng);
        assert_eq!(zero, clean);
        for attack in ["fgsm:0.05", "pgd:0.05:3"] {
            let attacked = robust_accuracy(&target, &set, attack.parse().unwrap(), 16, &mut rng);
            assert!(attacked <= clean, "{attack}: {attacked} > {clean}");
        }
    }

    #[test]
    fn attack_specs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "fgsm:0.03".parse::<Attack>().unwrap(),
            Attack::Fgsm { epsilon: 0.03 }
        );
        let pgd: Attack = "pgd:0.1:10".parse().unwrap();
        assert_eq!(
            pgd,
            Attack::Pgd {
                epsilon: 0.1,
                steps: 10,
                step_size: 0.025
            }
        );
        assert_eq!(pgd.to_string(), "pgd:0.1:10");
        assert_eq!(pgd.to_string().parse::<Attack>().unwrap(), pgd);
        let explicit: Attack = "pgd:0.03:7:0.01".parse().unwrap();
        assert_eq!(explicit.to_string(), "pgd:0.03:7:0.01");
        for bad in [
            "fgsm",
            "fgsm:-0.1",
            "fgsm:2",
            "pgd:1.5:3",
            "pgd:0.1",
            "pgd:0.1:0",
            "pgd:0.1:1001",
            "pgd:0.1:18446744073709551615",
            "cw:0.1",
            "fgsm:nan",
        ] {
            let error = bad.parse::<Attack>().unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
    }
}
