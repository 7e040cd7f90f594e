use std::sync::{Arc, Mutex};

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::MixupError;
use super::masks::{MapLayout, element_weights};
use super::plan::{Draws, MixOp, MixPlan, PointMix};
use super::targets::AppliedMix;
use crate::kernels;
use crate::kernels::mix::{ElementRows, OwnWeights};

/// A [`MixPlan`] placed on a device, ready to mix the hidden tensors at its mix points; or a
/// probe that records the hidden state at a mix point and changes nothing, so the same hook
/// that mixes can read any model's representations (for their spectrum).
#[derive(Clone, Debug)]
pub struct TensorMix {
    action: Action,
}

#[derive(Clone, Debug)]
enum Action {
    Mix(Arc<PlacedPlan>),
    /// The hidden state seen at `point`, one flattened row per example.
    Record {
        point: usize,
        slot: Arc<Mutex<Option<Tensor<2>>>>,
    },
}

#[derive(Debug)]
struct PlacedPlan {
    plan: MixPlan,
    partners: Tensor<1, Int>,
    /// The same permutation on the host, for the fused kernel on the CPU backend.
    permutation: Arc<[usize]>,
    /// What each mix did, by its position in the plan, as the forward pass reaches it.
    applied: Mutex<Vec<Applied>>,
}

#[derive(Clone, Debug)]
enum Applied {
    Pending,
    /// Each example's target weight: the share of itself it kept.
    Done(Vec<f64>),
    Failed(MixupError),
}

impl TensorMix {
    /// The plan's mixes as tensors on `device`.
    pub fn new(plan: &MixPlan, device: &Device) -> Self {
        let partners: Vec<i64> = plan.permutation.iter().map(|&i| i as i64).collect();
        let count = partners.len();
        Self {
            action: Action::Mix(Arc::new(PlacedPlan {
                plan: plan.clone(),
                partners: Tensor::from_data(TensorData::new(partners, [count]), device),
                permutation: plan.permutation.clone().into(),
                applied: Mutex::new(vec![Applied::Pending; plan.mixes.len()]),
            })),
        }
    }

    /// A probe that records the hidden state at `point`; read it with [`TensorMix::recorded`].
    pub fn probe(point: usize) -> Self {
        Self {
            action: Action::Record {
                point,
                slot: Arc::default(),
            },
        }
    }

    /// What a probe recorded in the last forward pass, `[batch, features]` (the features in
    /// the model's memory order, which a channel-blocked map permutes).
    pub fn recorded(&self) -> Option<Tensor<2>> {
        match &self.action {
            Action::Record { slot, .. } => slot.lock().ok()?.take(),
            Action::Mix(_) => None,
        }
    }

    /// What the forward pass mixed, for the targets; an error if it skipped a planned point
    /// or gave a box or block mix a flat state.
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: no forward pass panicked holding it"
    )]
    pub fn applied(&self) -> Result<AppliedMix, MixupError> {
        let Action::Mix(placed) = &self.action else {
            return Err(MixupError::NotMixing);
        };
        let applied = placed
            .applied
            .lock()
            .expect("no forward pass panicked holding it");
        let target_weights = applied
            .iter()
            .zip(&placed.plan.mixes)
            .map(|(applied, mix)| match applied {
                Applied::Done(weights) => Ok(weights.clone()),
                Applied::Pending => Err(MixupError::PointNotReached(mix.point)),
                Applied::Failed(error) => Err(error.clone()),
            })
            .collect::<Result<_, _>>()?;
        Ok(AppliedMix {
            permutation: placed.plan.permutation.clone(),
            target_weights,
        })
    }

    /// Mixes `hidden` when `point` is one of the plan's mix points, else returns it unchanged.
    ///
    /// Both terms stay in the autodiff graph, so each example's gradient comes from its own
    /// term and from the term of the example it was paired with.
    pub fn apply_at<const D: usize>(&self, point: usize, hidden: Tensor<D>) -> Tensor<D> {
        match &self.action {
            Action::Record { point: at, slot } => {
                if *at == point {
                    let dims = hidden.dims();
                    let features = dims[1..].iter().product::<usize>();
                    if let Ok(mut slot) = slot.lock() {
                        *slot = Some(hidden.clone().reshape([dims[0], features]));
                    }
                }
                hidden
            }
            Action::Mix(placed) => placed.apply_at(point, hidden),
        }
    }
}

impl PlacedPlan {
    #[allow(
        clippy::expect_used,
        reason = "cannot fail: no forward pass panicked holding it"
    )]
    fn apply_at<const D: usize>(&self, point: usize, hidden: Tensor<D>) -> Tensor<D> {
        let Some(index) = self.plan.mixes.iter().position(|m| m.point == point) else {
            return hidden;
        };
        let mix = &self.plan.mixes[index];
        let dims = hidden.dims();
        let outcome = if dims[0] != self.permutation.len() {
            Err(MixupError::BatchMismatch {
                point,
                rows: dims[0],
                plan: self.permutation.len(),
            })
        } else {
            weights_of(mix, &dims)
        };
        // A plan may serve several forward passes (the same batch on two routes, say): each
        // mixes alike, and the last one's record stands.
        let mut applied = self
            .applied
            .lock()
            .expect("no forward pass panicked holding it");
        match outcome {
            Ok((own, targets)) => {
                applied[index] = Applied::Done(targets);
                drop(applied);
                self.blend(hidden, &own)
            }
            Err(error) => {
                applied[index] = Applied::Failed(error);
                hidden
            }
        }
    }

    fn blend<const D: usize>(&self, hidden: Tensor<D>, own: &OwnWeights) -> Tensor<D> {
        if kernels::on_flex_f32(&hidden) {
            return kernels::mix::mix_rows(hidden, &self.permutation, own);
        }
        let device = hidden.device();
        let dims = hidden.dims();
        let others = hidden.clone().select(0, self.partners.clone());
        let weights = |values: Vec<f32>, shape: [usize; D]| {
            Tensor::<D>::from_data(TensorData::new(values, shape), &device)
        };
        let w = match own {
            OwnWeights::Uniform(lambda) => {
                return hidden.mul_scalar(*lambda) + others.mul_scalar(1.0 - *lambda);
            }
            OwnWeights::Rows(values) => {
                let mut shape = [1; D];
                shape[0] = dims[0];
                weights(values.to_vec(), shape)
            }
            OwnWeights::Elements {
                values,
                rows: ElementRows::Shared,
            } => {
                let mut shape = dims;
                shape[0] = 1;
                weights(values.to_vec(), shape)
            }
            OwnWeights::Elements {
                values,
                rows: ElementRows::PerRow(stretches),
            } => {
                let len = dims[1..].iter().product::<usize>();
                let expanded = stretches
                    .iter()
                    .flat_map(|stretch| match stretch {
                        Some(k) => values[k * len..][..len].to_vec(),
                        None => vec![1.0; len],
                    })
                    .collect();
                weights(expanded, dims)
            }
        };
        hidden * w.clone() + others * w.neg().add_scalar(1.0)
    }
}

/// The kernel's weights for `mix` on a hidden state of `dims`, and each example's target
/// weight.
fn weights_of(mix: &PointMix, dims: &[usize]) -> Result<(OwnWeights, Vec<f64>), MixupError> {
    let rows = dims[0];
    match (&mix.op, &mix.draws) {
        (MixOp::Interpolate, Draws::Shared(draw)) => {
            Ok((OwnWeights::Uniform(draw.lambda), vec![draw.lambda; rows]))
        }
        (MixOp::Interpolate, draws @ Draws::PerExample(_)) => {
            let targets: Vec<f64> = (0..rows)
                .map(|row| draws.of(row).map_or(1.0, |d| d.lambda))
                .collect();
            let own = targets.iter().map(|&t| t as f32).collect();
            Ok((OwnWeights::Rows(own), targets))
        }
        (op, draws) => {
            let layout = MapLayout::of(dims).ok_or(MixupError::FlatStateAtRuntime {
                point: mix.point,
                rank: dims.len(),
            })?;
            let weights = element_weights(op, draws, &layout, rows);
            let rows = match weights.stretches {
                None => ElementRows::Shared,
                Some(stretches) => ElementRows::PerRow(stretches.into()),
            };
            Ok((
                OwnWeights::Elements {
                    values: Arc::new(weights.values),
                    rows,
                },
                weights.targets,
            ))
        }
    }
}

/// Applies an optional mix at a mix point; what every model's forward calls between blocks.
pub fn mix_at<const D: usize>(
    mix: Option<&TensorMix>,
    point: usize,
    hidden: Tensor<D>,
) -> Tensor<D> {
    match mix {
        Some(mix) => mix.apply_at(point, hidden),
        None => hidden,
    }
}

#[cfg(test)]
mod tests;
