//! How the ranks of a run share its work. One rank (the usual case) trains, evaluates and
//! writes alone. Several (a data-parallel launch: `--devices`, `mpirun`) each train on their
//! share of every global batch, sum their gradients, average their batch-norm statistics
//! after each epoch, split the evaluation sets, and leave every file to rank 0.

use std::ops::Range;
use std::path::Path;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;

use super::TrainError;
use super::checkpoint::{self, CheckpointFiles};
use crate::data::{ImageSet, Normalization};
use crate::distributed::{Collective, sync};
use crate::eval::{Metrics, MetricsAccumulator};
use crate::mixup::Mixable;

pub(crate) enum Ranks {
    One,
    Several(&'static dyn Collective),
}

impl Ranks {
    /// The ranks the calling thread trains with.
    pub(crate) fn of_this_thread() -> Self {
        let world = crate::distributed::world();
        match world.size() {
            1 => Ranks::One,
            _ => Ranks::Several(world),
        }
    }

    pub(crate) fn count(&self) -> usize {
        match self {
            Ranks::One => 1,
            Ranks::Several(world) => world.size(),
        }
    }

    /// Whether this is rank 0, which reports progress and writes the run's files.
    pub(crate) fn leader(&self) -> bool {
        match self {
            Ranks::One => true,
            Ranks::Several(world) => world.rank() == 0,
        }
    }

    /// The rows of a global batch of `batch` that this rank trains on.
    pub(crate) fn rows(&self, batch: usize) -> Range<usize> {
        match self {
            Ranks::One => 0..batch,
            Ranks::Several(world) => crate::distributed::shard(batch, world.size(), world.rank()),
        }
    }

    /// `values` summed over the ranks.
    pub(crate) fn sum<const N: usize>(&self, mut values: [f64; N]) -> [f64; N] {
        if let Ranks::Several(world) = self {
            world.sum_f64(&mut values);
        }
        values
    }

    /// Rank 0's initial model on every rank.
    pub(crate) fn share_initial_model<M: Module>(&self, model: M) -> Result<M, TrainError> {
        match self {
            Ranks::One => Ok(model),
            Ranks::Several(world) => sync::broadcast_model(*world, model)
                .map_err(|reason| TrainError::Config(format!("rank 0's initial model: {reason}"))),
        }
    }

    /// The gradient of the whole global batch of `global_rows`, from this rank's gradient of
    /// its `rows`.
    pub(crate) fn sum_gradients<M: Module>(
        &self,
        model: &M,
        grads: GradientsParams,
        (rows, global_rows): (usize, usize),
        device: &Device,
    ) -> GradientsParams {
        match self {
            Ranks::One => grads,
            Ranks::Several(world) => {
                sync::all_reduce_gradients(*world, model, grads, rows, global_rows, device)
            }
        }
    }

    /// The model with every rank's batch-norm running statistics averaged, as evaluation and
    /// checkpoints read them.
    pub(crate) fn average_statistics<M: Module>(&self, model: M) -> M {
        match self {
            Ranks::One => model,
            Ranks::Several(world) => sync::average_running_statistics(*world, model),
        }
    }

    /// Checks, at an epoch's end, that every rank still holds the same weights.
    pub(crate) fn check_in_step<M: Module>(&self, model: &M) -> Result<(), TrainError> {
        match self {
            Ranks::One => Ok(()),
            Ranks::Several(world) => sync::check_in_step(*world, model).map_err(TrainError::Config),
        }
    }

    /// Runs `write` (a checkpoint, the reports) on rank 0 alone, and has every rank return its
    /// outcome: a disk error on rank 0 stops all ranks with its message.
    pub(crate) fn on_leader(
        &self,
        write: impl FnOnce() -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        match self {
            Ranks::One => write(),
            Ranks::Several(world) => {
                let outcome = if world.rank() == 0 { write() } else { Ok(()) };
                Ok(crate::distributed::agree(*world, outcome)?)
            }
        }
    }

    /// The newest checkpoint in `dir`, read by rank 0 and sent to every rank (ranks need not
    /// share rank 0's disk); `None` for a fresh run.
    pub(crate) fn latest_checkpoint(
        &self,
        dir: &Path,
    ) -> Result<Option<CheckpointFiles>, TrainError> {
        let read =
            || checkpoint::latest(dir).and_then(|f| f.as_deref().map(checkpoint::read).transpose());
        let world = match self {
            Ranks::One => return read(),
            Ranks::Several(world) => *world,
        };
        let found = match world.rank() {
            0 => read(),
            _ => Ok(None),
        };
        let found = crate::distributed::agree(world, found)?;
        let bytes = found
            .as_ref()
            .map(CheckpointFiles::to_bytes)
            .unwrap_or_default();
        let bytes = crate::distributed::from_rank_zero(world, bytes);
        if bytes.is_empty() {
            return Ok(None);
        }
        CheckpointFiles::from_bytes(&bytes)
            .map(Some)
            .ok_or_else(|| TrainError::Config("rank 0's checkpoint arrived damaged".into()))
    }

    /// [`super::evaluate`] of the whole set on every rank; several ranks each evaluate a
    /// share and add up their sums.
    pub(crate) fn evaluate<M: Mixable>(
        &self,
        model: &M,
        set: &ImageSet,
        normalization: &Normalization,
        batch_size: usize,
        device: &Device,
    ) -> Metrics {
        let world = match self {
            Ranks::One => return super::evaluate(model, set, normalization, batch_size, device),
            Ranks::Several(world) => *world,
        };
        let indices: Vec<usize> = self.rows(set.len()).collect();
        let part = crate::eval::suite::accumulate_rows(
            model,
            set,
            &indices,
            normalization,
            batch_size,
            device,
        );
        let mut sums = part.to_sums();
        world.sum_f64(&mut sums);
        MetricsAccumulator::from_sums(&sums).finish()
    }
}
