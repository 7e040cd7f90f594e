use std::ops::Range;

use rand::Rng;
use rand::distr::weighted::WeightedIndex;
use rand::seq::SliceRandom;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use super::mixable::{MixPoint, PointShape};
use super::schedule::AlphaSchedule;

/// How examples are mixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MixMode {
    /// Plain training on one-hot targets.
    None,
    /// Mixup of the inputs (mix point 0 only).
    Input,
    /// Manifold Mixup: a mix point drawn per batch from an eligible set.
    Manifold,
    /// CutMix: a box of the partner's image pasted in, λ corrected to the kept area.
    Cutmix,
    /// PatchUp: blocks of a hidden feature map at a drawn mix point swapped with (hard) or
    /// interpolated towards (soft) the partner's.
    Patchup,
    /// Mixup of the logits, after the model's last layer.
    Output,
}

impl std::fmt::Display for MixMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MixMode::None => "none",
            MixMode::Input => "input",
            MixMode::Manifold => "manifold",
            MixMode::Cutmix => "cutmix",
            MixMode::Patchup => "patchup",
            MixMode::Output => "output",
        })
    }
}

impl MixMode {
    /// Whether the mode draws its mix point from the eligible set.
    pub fn draws_points(self) -> bool {
        matches!(self, MixMode::Manifold | MixMode::Patchup)
    }

    /// Whether the mode cuts regions out of a feature map, so needs one at its points.
    pub fn needs_map(self) -> bool {
        matches!(self, MixMode::Cutmix | MixMode::Patchup)
    }
}

/// PatchUp's two ways of combining the chosen blocks with the partner's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PatchUpKind {
    /// The blocks are interpolated: `λ·h + (1−λ)·h[perm]` inside them.
    #[default]
    Soft,
    /// The blocks are replaced by the partner's.
    Hard,
}

impl std::fmt::Display for PatchUpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PatchUpKind::Soft => "soft",
            PatchUpKind::Hard => "hard",
        })
    }
}

/// PatchUp's mask parameters (Faramarzi et al. 2020; defaults of their code).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchUpConfig {
    /// Side of the square blocks, odd.
    pub block: usize,
    /// Probability that a feature is altered (before the blocks' overlap is corrected for).
    pub gamma: f64,
    /// Which PatchUp: hard (swap blocks) or soft (interpolate inside them).
    pub kind: PatchUpKind,
}

impl Default for PatchUpConfig {
    fn default() -> Self {
        Self {
            block: 7,
            gamma: 0.9,
            kind: PatchUpKind::Soft,
        }
    }
}

/// A second mode used instead of the first on a drawn share of the batches, as timm's
/// mixup ↔ cutmix switch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    /// The second mode.
    pub mode: MixMode,
    /// Probability that a batch uses `mode`.
    pub prob: f64,
    /// Beta(α, α) parameter of `mode`.
    pub alpha: f64,
}

// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum MixupError {
    #[error("alpha must be a finite number ≥ 0 (0 turns mixing off), got {0}")]
    BadAlpha(f64),
    #[error("the eligible mix points are empty")]
    NoMixPoints,
    #[error("mix point {point} does not exist: this model's mix points are 0..={last}")]
    UnknownMixPoint { point: usize, last: usize },
    #[error("{weights} layer weights were given for {points} mix points")]
    WeightCount { weights: usize, points: usize },
    #[error("layer weights must be finite, non-negative, not all zero, and sum to a finite number")]
    BadWeights,
    #[error("the {what} must be in [0, 1], got {value}")]
    BadProbability { what: &'static str, value: f64 },
    #[error(
        "{mode} cuts regions from a feature map, but mix point {point} ('{name}') holds a flat vector"
    )]
    NotAMap {
        mode: MixMode,
        point: usize,
        name: &'static str,
    },
    #[error("{0}")]
    BadSwitch(String),
    #[error("the alpha schedule '{schedule}' reaches past the run's {epochs} epochs")]
    ScheduleTooLong {
        schedule: AlphaSchedule,
        epochs: usize,
    },
    #[error("the PatchUp block size must be odd and at least 1, got {0}")]
    BadBlock(usize),
    #[error("per-example mixing needs a mixing mode, not none")]
    PerExampleWithoutMixing,
    #[error("the model's forward pass never reached mix point {0}, which it declares")]
    PointNotReached(usize),
    #[error("mix point {point} saw {rows} examples where the batch has {plan}")]
    BatchMismatch {
        point: usize,
        rows: usize,
        plan: usize,
    },
    #[error(
        "mix point {point} holds a rank-{rank} state, but a box or block mix needs a feature map (rank 4, or 5 channel-blocked); declare it PointShape::Vector"
    )]
    FlatStateAtRuntime { point: usize, rank: usize },
    #[error("a probe mixes nothing")]
    NotMixing,
    #[error("partners need at least one group, got 0")]
    NoPartnerGroups,
}

/// The technique's parameters, resolved against one model's mix points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixConfig {
    /// The mixing mode.
    pub mode: MixMode,
    /// λ ~ Beta(α, α); α = 0 means λ = 1 (no mixing), as in the paper's code. A negative α
    /// is refused rather than read as 0: it is a typo more often than a choice.
    pub alpha: f64,
    /// Eligible mix points for the modes that draw one (0 is the input).
    pub mix_points: Vec<usize>,
    /// Relative weights for drawing the mix point; uniform when empty.
    pub layer_weights: Vec<f64>,
    /// A λ (and for manifold and patchup a mix point, for cutmix a box, for patchup a mask)
    /// per example instead of per batch.
    pub per_example: bool,
    /// Probability that a batch is mixed at all.
    pub apply_prob: f64,
    /// A second mode for a drawn share of the batches.
    pub switch: Option<Switch>,
    /// How α changes over the epochs.
    pub schedule: AlphaSchedule,
    /// PatchUp's mask parameters.
    pub patchup: PatchUpConfig,
    /// Partners are drawn within each of this many contiguous, nearly equal groups of the
    /// batch ([`group_rows`]), never across two: data-parallel ranks each hold whole groups
    /// and mix only what they hold. 1 is the whole batch.
    pub partner_groups: usize,
}

impl MixConfig {
    /// The configuration of `mode` with the defaults of everything else: λ and mix point
    /// per batch, every batch mixed, a constant α.
    pub fn new(mode: MixMode, alpha: f64, mix_points: Vec<usize>) -> Self {
        Self {
            mode,
            alpha,
            mix_points,
            layer_weights: Vec::new(),
            per_example: false,
            apply_prob: 1.0,
            switch: None,
            schedule: AlphaSchedule::Constant,
            patchup: PatchUpConfig::default(),
            partner_groups: 1,
        }
    }

    /// Checks the configuration against a model's mix points and a run of `epochs`.
    pub fn validate(&self, points: &[MixPoint], epochs: usize) -> Result<(), MixupError> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(MixupError::BadAlpha(self.alpha));
        }
        let probability = |what, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(MixupError::BadProbability { what, value })
            }
        };
        probability("apply probability", self.apply_prob)?;
        if self.partner_groups == 0 {
            return Err(MixupError::NoPartnerGroups);
        }
        if self.mode == MixMode::None {
            if self.per_example {
                return Err(MixupError::PerExampleWithoutMixing);
            }
            if self.switch.is_some() {
                return Err(MixupError::BadSwitch(
                    "a switch needs a mixing mode to switch from, not none".into(),
                ));
            }
        }
        self.validate_mode(self.mode, points)?;
        if let Some(switch) = &self.switch {
            probability("switch probability", switch.prob)?;
            if !(switch.alpha.is_finite() && switch.alpha >= 0.0) {
                return Err(MixupError::BadAlpha(switch.alpha));
            }
            if switch.mode == MixMode::None || switch.mode == self.mode {
                return Err(MixupError::BadSwitch(format!(
                    "the switch must be to a mixing mode other than {}, got {}",
                    self.mode, switch.mode
                )));
            }
            self.validate_mode(switch.mode, points)?;
        }
        if self.schedule.last_epoch_named() > epochs {
            return Err(MixupError::ScheduleTooLong {
                schedule: self.schedule,
                epochs,
            });
        }
        Ok(())
    }

    fn validate_mode(&self, mode: MixMode, points: &[MixPoint]) -> Result<(), MixupError> {
        let last = points.len().saturating_sub(1);
        let shape_of = |point: usize| {
            points
                .get(point)
                .ok_or(MixupError::UnknownMixPoint { point, last })
        };
        let require_map = |point: usize| {
            let declared = shape_of(point)?;
            if declared.shape == PointShape::Vector {
                return Err(MixupError::NotAMap {
                    mode,
                    point,
                    name: declared.name,
                });
            }
            Ok(())
        };
        match mode {
            MixMode::None | MixMode::Input | MixMode::Output => Ok(()),
            MixMode::Cutmix => require_map(0),
            MixMode::Manifold | MixMode::Patchup => {
                if self.mix_points.is_empty() {
                    return Err(MixupError::NoMixPoints);
                }
                for &point in &self.mix_points {
                    match mode.needs_map() {
                        true => require_map(point)?,
                        false => shape_of(point).map(drop)?,
                    }
                }
                if mode == MixMode::Patchup {
                    let PatchUpConfig { block, gamma, .. } = self.patchup;
                    if block.is_multiple_of(2) {
                        return Err(MixupError::BadBlock(block));
                    }
                    if !(0.0..=1.0).contains(&gamma) {
                        return Err(MixupError::BadProbability {
                            what: "PatchUp feature probability",
                            value: gamma,
                        });
                    }
                }
                self.validate_weights()
            }
        }
    }

    fn validate_weights(&self) -> Result<(), MixupError> {
        if self.layer_weights.is_empty() {
            return Ok(());
        }
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
        // Each weight finite is not enough: `WeightedIndex` sums them, and 1e308 + 1e308 is not.
        let sum = self.layer_weights.iter().sum::<f64>();
        if !(valid && sum.is_finite() && sum > 0.0) {
            return Err(MixupError::BadWeights);
        }
        Ok(())
    }

    /// Draws the choices for one batch of (0-based) `epoch` of `epochs`, or `None` when the
    /// batch is not mixed.
    ///
    /// The draw order is part of the reproducibility contract: the same RNG state always
    /// yields the same plan. Without the newer options it is λ, then the mix point, then the
    /// permutation, as it always was; a certain event (probability 0 or 1) draws nothing, so
    /// a run with an apply probability of 0 draws exactly what a run without mixing does.
    pub fn draw<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        batch_size: usize,
        epoch: usize,
        epochs: usize,
    ) -> Option<MixPlan> {
        if self.mode == MixMode::None {
            return None;
        }
        let scale = self.schedule.scale(epoch, epochs)?;
        if !happens(rng, self.apply_prob) {
            return None;
        }
        let (mode, alpha) = match &self.switch {
            Some(switch) if happens(rng, switch.prob) => (switch.mode, switch.alpha),
            _ => (self.mode, self.alpha),
        };
        Some(self.draw_mode(rng, mode, alpha * scale, batch_size))
    }

    fn draw_mode<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        mode: MixMode,
        alpha: f64,
        batch_size: usize,
    ) -> MixPlan {
        let draws = if self.per_example { batch_size } else { 1 };
        let lambdas: Vec<f64> = (0..draws).map(|_| sample_lambda(rng, alpha)).collect();
        let points: Vec<usize> = match mode {
            MixMode::Manifold | MixMode::Patchup => {
                (0..draws).map(|_| self.draw_point(rng)).collect()
            }
            MixMode::Output => vec![OUTPUT_POINT; draws],
            _ => vec![0; draws],
        };
        let centres: Vec<Option<(f64, f64)>> = (0..draws)
            .map(|_| (mode == MixMode::Cutmix).then(|| (rng.random(), rng.random())))
            .collect();
        let op = match mode {
            MixMode::Patchup => MixOp::PatchUp {
                config: self.patchup,
                seed: rng.random(),
                first_row: 0,
            },
            MixMode::Cutmix => MixOp::CutMix,
            _ => MixOp::Interpolate,
        };
        // One group shuffles exactly as a whole batch always did.
        let mut permutation: Vec<usize> = Vec::with_capacity(batch_size);
        for group in 0..self.partner_groups {
            let start = permutation.len();
            permutation.extend(group_rows(batch_size, self.partner_groups, group));
            permutation[start..].shuffle(rng);
        }
        let draw = |i: usize| Draw {
            lambda: lambdas[i],
            centre: centres[i],
        };
        let mixes = if self.per_example {
            let mut distinct = points.clone();
            distinct.sort_unstable();
            distinct.dedup();
            distinct
                .into_iter()
                .map(|point| PointMix {
                    point,
                    op,
                    draws: Draws::PerExample(
                        (0..batch_size)
                            .map(|i| (points[i] == point).then(|| draw(i)))
                            .collect(),
                    ),
                })
                .collect()
        } else {
            vec![PointMix {
                point: points[0],
                op,
                draws: Draws::Shared(draw(0)),
            }]
        };
        MixPlan { permutation, mixes }
    }

    #[allow(clippy::expect_used, reason = "cannot fail: weights are validated")]
    fn draw_point<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let index = if self.layer_weights.is_empty() {
            rng.random_range(0..self.mix_points.len())
        } else {
            WeightedIndex::new(&self.layer_weights)
                .expect("weights are validated")
                .sample(rng)
        };
        self.mix_points[index]
    }
}

/// Whether an event of probability `p` happens; certain events draw nothing.
fn happens<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    if p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rng.random::<f64>() < p
    }
}

/// λ ~ Beta(α, α), or exactly 1 when α ≤ 0.
#[allow(
    clippy::expect_used,
    reason = "cannot fail: a positive finite alpha is a valid Beta parameter"
)]
pub fn sample_lambda<R: Rng + ?Sized>(rng: &mut R, alpha: f64) -> f64 {
    if alpha <= 0.0 {
        return 1.0;
    }
    Beta::new(alpha, alpha)
        .expect("a positive finite alpha is a valid Beta parameter")
        .sample(rng)
}

/// The mix point of the logits, after every point a model declares (output mixup).
pub const OUTPUT_POINT: usize = usize::MAX;

/// What is done to the hidden state at a mix point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum MixOp {
    /// `h ← λ·h + (1−λ)·h[perm]`.
    Interpolate,
    /// A box of the partner's map pasted in; the box's area is `1−λ` before clipping.
    CutMix,
    /// Blocks of the map taken from the partner, from a mask generated with `seed` once the
    /// map's shape is known.
    PatchUp {
        /// The mask's parameters.
        config: PatchUpConfig,
        /// The seed of the masks' stream.
        seed: u64,
        /// The batch row of this plan's first row: each example's mask comes from the
        /// stream of its row in the whole batch, wherever the batch was cut.
        #[serde(default)]
        first_row: usize,
    },
}

/// The random values of one mix: λ and, for CutMix, the box's centre as fractions of the
/// map's height and width.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Draw {
    /// The share the example keeps of itself.
    pub lambda: f64,
    /// CutMix's box centre (row, column), as fractions.
    pub centre: Option<(f64, f64)>,
}

/// One draw for the whole batch, or one per example (`None` where the example is mixed at
/// another point).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Draws {
    /// One draw for every example.
    Shared(Draw),
    /// One draw per example mixed here.
    PerExample(Vec<Option<Draw>>),
}

impl Draws {
    /// The draw of example `row`, if it is mixed here.
    pub fn of(&self, row: usize) -> Option<&Draw> {
        match self {
            Draws::Shared(draw) => Some(draw),
            Draws::PerExample(draws) => draws.get(row).and_then(Option::as_ref),
        }
    }
}

/// The mix at one point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointMix {
    /// The mix point (0 = input, [`OUTPUT_POINT`] = logits).
    pub point: usize,
    /// How the mix combines an example with its partner.
    pub op: MixOp,
    /// Its random values.
    pub draws: Draws,
}

/// Everything random about one mixed batch, as plain values: a step is reproducible from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixPlan {
    /// `permutation[i]` is the partner of example `i`.
    pub permutation: Vec<usize>,
    /// The mixes in forward order, at most one per point.
    pub mixes: Vec<PointMix>,
}

impl MixPlan {
    /// Mixup with one λ at one point: `h ← λ·h + (1−λ)·h[permutation]`.
    pub fn interpolate(lambda: f64, point: usize, permutation: Vec<usize>) -> Self {
        Self {
            permutation,
            mixes: vec![PointMix {
                point,
                op: MixOp::Interpolate,
                draws: Draws::Shared(Draw {
                    lambda,
                    centre: None,
                }),
            }],
        }
    }

    /// The points where something is mixed, in forward order.
    pub fn points(&self) -> Vec<usize> {
        self.mixes.iter().map(|m| m.point).collect()
    }

    /// The plan of the batch's `rows` alone, renumbered from 0: what a data-parallel rank
    /// holding those rows applies. `rows` must be a union of whole partner groups, so every
    /// partner is among them; `None` if one is not.
    pub fn rows(&self, rows: Range<usize>) -> Option<MixPlan> {
        let permutation = self.permutation.get(rows.clone())?;
        if permutation.iter().any(|partner| !rows.contains(partner)) {
            return None;
        }
        let mixes = self
            .mixes
            .iter()
            .map(|mix| PointMix {
                point: mix.point,
                op: match mix.op {
                    MixOp::PatchUp {
                        config,
                        seed,
                        first_row,
                    } => MixOp::PatchUp {
                        config,
                        seed,
                        first_row: first_row + rows.start,
                    },
                    op => op,
                },
                draws: match &mix.draws {
                    Draws::Shared(draw) => Draws::Shared(*draw),
                    Draws::PerExample(draws) => Draws::PerExample(draws[rows.clone()].to_vec()),
                },
            })
            .collect();
        Some(MixPlan {
            permutation: permutation.iter().map(|p| p - rows.start).collect(),
            mixes,
        })
    }
}

/// The rows of group `group` of `groups` contiguous groups of a batch of `batch`: group g
/// starts at ⌊g·batch/groups⌋, so sizes differ by at most one, and when `groups` is a
/// multiple of `parts`, part r of `parts` is exactly groups r·k … (r+1)·k − 1 (k = groups/parts).
pub fn group_rows(batch: usize, groups: usize, group: usize) -> Range<usize> {
    let start = |g: usize| g * batch / groups.max(1);
    start(group)..start(group + 1)
}

#[cfg(test)]
mod tests;
