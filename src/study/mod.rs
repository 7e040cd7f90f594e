//! Studies: a grid of arms × seeds (optionally × the values of one swept option), declared in a
//! TOML file before anything runs, and the report over its finished runs — per-arm estimates
//! with 95% intervals, paired differences against a baseline, and the pre-registered
//! hypotheses tested as one family with Holm's correction and simultaneous intervals.
//!
//! [`Design::parse`] reads a study file into its cells, each a run's resolved configuration
//! and folder; training the cells is the caller's (`mmix study` runs them one by one);
//! [`write_report`] reads the finished runs back and writes the report, whose JSON form
//! [`StudyReport`] readers take back typed.

pub mod design;
pub mod family;
pub mod report;
pub mod stats;
pub mod tables;

use std::path::{Path, PathBuf};

pub use design::{Arm, Cell, Design, StudyFile, record_design, same_run};
pub use family::{Direction, TestedHypothesis};
pub use report::{StudyReport, write_report};
pub use stats::{Estimate, holm_adjusted, t_quantile};

// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The study file breaks a rule; the message names the file.
    #[error("{0}")]
    Design(String),
    #[error("cannot {action} {}: {reason}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    /// A finished run of the study could not be read back.
    #[error("{0}")]
    Run(String),
}

impl StudyError {
    pub(crate) fn io(action: &'static str, path: &Path, reason: std::io::Error) -> Self {
        StudyError::Io {
            action,
            path: path.to_path_buf(),
            reason,
        }
    }
}
