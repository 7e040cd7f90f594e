//! Training: the run's configuration, the loop, checkpoints and exact resume.

pub mod checkpoint;
mod config;
mod device;
mod options;
mod ranks;
pub mod run_dir;
mod semi;
mod setup;
mod step;
mod teacher;
pub mod trace;
mod trainer;

use std::path::PathBuf;

pub use checkpoint::{EpochRecord, RunState};
pub use config::{ConfigError, Schedule, TrainConfig, default_alpha};
#[cfg(feature = "cuda")]
pub use device::nccl_loads;
pub use device::{DeviceName, Devices, parse_device};
pub use options::TrainOptions;
pub use semi::{SemiConfig, SemiMethod, SemiState, UnlabeledPool, unlabeled_mix};
pub use setup::{RunData, build_model, check_run, evaluate, optimizer, prepare_data};
pub use step::{BatchLoss, Objective, batch_loss};
pub use teacher::MeanTeacher;
pub use trainer::{Progress, RunOutcome, Trainer};

// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Mixup(#[from] crate::mixup::MixupError),
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error("{0}")]
    Config(String),
    // The reason is in the message, not a `source`: printed as a chain it would show twice.
    #[error("{}: {reason}", path.display())]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    #[error("the training loss became {loss} at epoch {epoch}, batch {batch} (try a lower --lr)")]
    NonFinite {
        epoch: usize,
        batch: usize,
        loss: f64,
    },
    #[error("the {what} became non-finite at epoch {epoch} (try a lower --lr)")]
    Diverged { epoch: usize, what: &'static str },
    #[error(transparent)]
    RunDir(#[from] run_dir::RunDirError),
    #[error(transparent)]
    Memory(#[from] crate::machine::MemoryError),
    #[error(transparent)]
    Distributed(#[from] crate::distributed::DistributedError),
    /// What another data-parallel rank failed with, reported here too.
    #[error("rank {rank}: {message}")]
    OtherRank { rank: usize, message: String },
}

impl From<crate::distributed::Failure<TrainError>> for TrainError {
    fn from(failure: crate::distributed::Failure<TrainError>) -> Self {
        match failure {
            crate::distributed::Failure::Here(error) => error,
            crate::distributed::Failure::OnRank { rank, message } => {
                TrainError::OtherRank { rank, message }
            }
        }
    }
}

impl TrainError {
    /// A failed read or write of `path`.
    pub fn io(path: impl Into<PathBuf>, reason: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            reason,
        }
    }
}
